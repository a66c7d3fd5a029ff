//! Change over time, black-box: a real `datahub serve` and the CLI on real layers
//! with known edits. Diffs are checked against an independent comparison (GDAL reads
//! the two versions' GeoPackage downloads, Python compares them: tests/diff_check.py);
//! drafts against the access matrix on every surface; webhooks against a receiver on
//! a local port that verifies signatures (Python's hmac), fails on purpose and records
//! the order; the tiles kept across a one-feature change against a fresh render.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::{multipart, Client};
use serde_json::{json, Value};

const A: &str = "obras-publicas";
const B: &str = "seguridad";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn call(base: &str, token: Option<&str>, method: reqwest::Method, path: &str) -> (u16, Value) {
    let mut rq = client().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json::<Value>().unwrap_or(Value::Null))
}

fn get(base: &str, token: Option<&str>, path: &str) -> (u16, Value) {
    call(base, token, reqwest::Method::GET, path)
}

fn get_bytes(base: &str, token: Option<&str>, path: &str) -> (u16, Vec<u8>) {
    let mut rq = client().get(format!("{base}{path}"));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    let r = rq.send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Uploads `file` with `meta` and waits for the job; returns its final document.
fn upload(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    file: &Path,
    meta: Value,
) -> Value {
    let form = multipart::Form::new()
        .file("file", file)
        .unwrap()
        .text("metadata", meta.to_string());
    let r = client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "upload to {path}");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let t0 = Instant::now();
    loop {
        let (s, v) = get(base, Some(token), &loc);
        assert_eq!(s, 200, "{v}");
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job never finished: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `cond` holds (at most `secs`).
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn python(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff_check.py");
    let o = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diff_check.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn save_download(base: &str, path: &str, to: &Path) {
    let (s, body) = get_bytes(base, None, path);
    assert_eq!(s, 200, "{path}");
    std::fs::write(to, body).unwrap();
}

/// The server's diff as the independent script's structure.
fn server_view(base: &str, path: &str, id_field: &str) -> Value {
    let mut feats = Vec::new();
    let mut url = format!("{base}{path}");
    loop {
        let r = client().get(&url).send().unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], "application/geo+json");
        let v: Value = r.json().unwrap();
        feats.extend(v["features"].as_array().unwrap().iter().cloned());
        match v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
        {
            Some(l) => url = l["href"].as_str().unwrap().to_string(),
            None => {
                assert_eq!(v["numberMatched"].as_u64().unwrap() as usize, feats.len());
                break;
            }
        }
    }
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut modified = serde_json::Map::new();
    for f in &feats {
        let id = f["properties"][id_field].as_f64().unwrap() as i64;
        match f["properties"]["datahub_change"].as_str().unwrap() {
            "added" => added.push(id),
            "removed" => removed.push(id),
            "modified" => {
                let changed: Vec<String> = f["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect();
                let attrs: Vec<&String> = changed.iter().filter(|c| *c != "geometry").collect();
                modified.insert(
                    id.to_string(),
                    json!({"geometry": changed.iter().any(|c| c == "geometry"), "attributes": attrs}),
                );
                // `before` holds the old state (checked against the old download by
                // the caller through the counts; here: present and different).
                assert!(f["before"]["properties"].is_object(), "{f}");
            }
            other => panic!("unknown change {other}"),
        }
    }
    added.sort();
    removed.sort();
    json!({"added": added, "removed": removed, "modified": modified})
}

#[test]
fn diffs_match_an_independent_comparison_on_real_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(&data);
    let base = srv.base.clone();
    // Polygons (North Carolina counties, NAD27 GeoPackage) and points (London bike
    // docks, GeoJSON): each published, edited by the script, published again.
    let cases = [
        (
            "condados",
            vector("sf/nc.gpkg"),
            "CRESS_ID",
            "NAME",
            "NOMBRE",
        ),
        (
            "bicis",
            vector("spdata/cycle_hire.geojson"),
            "id",
            "area",
            "zona",
        ),
    ];
    for (layer, src, id_field, from, to) in cases {
        let v1 = tmp.path().join(format!("{layer}-1.geojson"));
        ogr2ogr(&[
            "-f",
            "GeoJSON",
            "-t_srs",
            "EPSG:4326",
            "-lco",
            "COORDINATE_PRECISION=9",
            v1.to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
        let v2 = tmp.path().join(format!("{layer}-2.geojson"));
        let edits = python(&[
            "edit",
            v1.to_str().unwrap(),
            v2.to_str().unwrap(),
            id_field,
            from,
            to,
        ]);
        ingest_ok(&data, &v1, layer, &["--id-field", id_field]);
        wait_for(20, "v1 served", || {
            get(&base, None, &format!("/collections/{layer}")).0 == 200
        });
        let d1 = tmp.path().join(format!("{layer}-1.gpkg"));
        save_download(&base, &format!("/collections/{layer}/items?f=gpkg"), &d1);
        ingest_ok(&data, &v2, layer, &["--id-field", id_field]);
        wait_for(20, "v2 served", || {
            get(
                &base,
                None,
                &format!("/collections/{layer}/changes?since=1"),
            )
            .1["to"]["version"]
                == 2
        });
        let d2 = tmp.path().join(format!("{layer}-2.gpkg"));
        save_download(&base, &format!("/collections/{layer}/items?f=gpkg"), &d2);

        let want = python(&[
            "compare",
            d1.to_str().unwrap(),
            d2.to_str().unwrap(),
            id_field,
        ]);
        let got = server_view(
            &base,
            &format!("/collections/{layer}/changes?from=1&to=2&f=geojson&limit=3"),
            id_field,
        );
        assert_eq!(got["added"], want["added"], "{layer} added");
        assert_eq!(got["removed"], want["removed"], "{layer} removed");
        assert_eq!(got["modified"], want["modified"], "{layer} modified");
        // And the edits the script made are what both found.
        assert_eq!(
            want["added"].as_array().unwrap().len(),
            edits["inserted"].as_array().unwrap().len()
        );
        assert_eq!(want["removed"].as_array().unwrap().len(), 2);
        assert_eq!(want["modified"].as_object().unwrap().len(), 7, "{want}");

        let (s, sum) = get(
            &base,
            None,
            &format!("/collections/{layer}/changes?from=1&to=2"),
        );
        assert_eq!(s, 200, "{sum}");
        assert_eq!(sum["identity"]["kind"], "id_field");
        assert_eq!(
            sum["schema"]["renamed"],
            json!([{"from": from, "to": to}]),
            "{layer}: {sum}"
        );
        assert_eq!(want["renamed"], json!([[from, to]]));
        assert_eq!(sum["counts"]["added"], 2);
        assert_eq!(sum["counts"]["removed"], 2);
        assert_eq!(sum["counts"]["modified"], 7);
        assert_eq!(sum["counts"]["geometry_changed"], 3);
        assert_eq!(sum["counts"]["attributes_changed"], 4);
        let n1 = sum["from"]["feature_count"].as_u64().unwrap();
        assert_eq!(sum["counts"]["unchanged"].as_u64().unwrap(), n1 - 2 - 7);

        // The command line says the same.
        let o = run(&data, &["diff", layer, "1", "2", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(cli["counts"], sum["counts"]);

        // Without the id field the same edit is matched by content: each modified
        // feature is a removal and an addition, and the summary says why.
        let (s, c) = get(
            &base,
            None,
            &format!("/collections/{layer}/changes?from=1&to=2&key={id_field}"),
        );
        assert_eq!(s, 200);
        assert_eq!(
            c["counts"], sum["counts"],
            "an asked key equal to the id field"
        );
    }
    // Content identity: a layer published without --id-field.
    let v1 = tmp.path().join("condados-1.geojson");
    let v2 = tmp.path().join("condados-2.geojson");
    ingest_ok(&data, &v1, "sin-id", &[]);
    ingest_ok(&data, &v2, "sin-id", &[]);
    wait_for(20, "sin-id v2", || {
        get(&base, None, "/collections/sin-id/changes?since=1").1["to"]["version"] == 2
    });
    let (_, c) = get(&base, None, "/collections/sin-id/changes?from=1&to=2");
    assert_eq!(c["identity"]["kind"], "content");
    assert!(
        c["identity"]["note"]
            .as_str()
            .unwrap()
            .contains("removed and added"),
        "{c}"
    );
    assert_eq!(c["counts"]["added"], 2 + 7);
    assert_eq!(c["counts"]["removed"], 2 + 7);
    assert_eq!(c["counts"]["modified"], 0);
    assert_eq!(
        c["schema"]["renamed"][0]["to"], "NOMBRE",
        "renames found without ids too: {c}"
    );
    // With a key asked for, modifications again.
    let (_, k) = get(
        &base,
        None,
        "/collections/sin-id/changes?from=1&to=2&key=CRESS_ID",
    );
    assert_eq!(k["counts"]["modified"], 7, "{k}");
    // A feature's history needs a stable id.
    let (s, h) = get(&base, None, "/collections/sin-id/items/1/history");
    assert_eq!(s, 409, "{h}");
    assert!(h["description"].as_str().unwrap().contains("--id-field"));

    // History of an edited county: added in v1, modified (FIPS) in v2.
    let edited = python(&[
        "compare",
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "CRESS_ID",
    ]);
    let (fid, what) = edited["modified"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["geometry"] == false)
        .unwrap();
    let (s, h) = get(
        &base,
        None,
        &format!("/collections/condados/items/{fid}/history"),
    );
    assert_eq!(s, 200, "{h}");
    let hist = h["history"].as_array().unwrap();
    assert_eq!(hist.len(), 2, "{h}");
    assert_eq!(hist[0]["change"], "added");
    assert_eq!(hist[1]["change"], "modified");
    assert_eq!(hist[1]["attributes"], what["attributes"]);
    let removed_id = edited["removed"][0].as_i64().unwrap();
    let (_, h) = get(
        &base,
        None,
        &format!("/collections/condados/items/{removed_id}/history"),
    );
    assert_eq!(h["history"][1]["change"], "removed", "{h}");
    assert_eq!(
        get(&base, None, "/collections/condados/items/999999/history").0,
        404
    );

    // Bad input: clear 4xx.
    for (q, status, says) in [
        ("from=9&to=2", 410, "not kept"),
        ("from=abc", 400, "version number"),
        ("from=1&since=1", 400, "not both"),
        ("", 400, "from="),
        ("since=ayer", 400, "neither a version number nor a date"),
        ("from=1&f=xml", 400, "f=geojson"),
        ("from=1&f=geojson&limit=0", 200, ""),
        ("from=1&f=geojson&limit=100000", 400, "limit"),
        ("from=1&change=moved", 400, "added, removed, modified"),
        ("from=1&key=nope", 400, "not a column"),
        ("from=1&key=NOMBRE", 400, "not a column"),
        ("from=1&bbox=1,2,3,4", 400, "unknown query parameter"),
    ] {
        let (s, v) = get(&base, None, &format!("/collections/condados/changes?{q}"));
        assert_eq!(s, status, "{q}: {v}");
        if !says.is_empty() {
            assert!(
                v["description"].as_str().unwrap().contains(says),
                "{q}: {v}"
            );
        }
    }
    // since= a date before the layer existed: everything is new.
    let (_, v) = get(
        &base,
        None,
        "/collections/condados/changes?since=2001-01-01",
    );
    assert_eq!(v["from"], Value::Null);
    assert_eq!(
        v["counts"]["added"].as_u64().unwrap(),
        v["to"]["feature_count"].as_u64().unwrap()
    );
    // Only one kind, paged: the next link carries explicit versions.
    let (_, p) = get(
        &base,
        None,
        "/collections/condados/changes?since=1&f=geojson&change=added,removed&limit=1",
    );
    assert_eq!(p["numberMatched"], 4);
    let next = p["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap();
    assert!(
        next["href"].as_str().unwrap().contains("from=1&to=2"),
        "{next}"
    );
}

#[test]
fn drafts_are_their_ministrys_until_published() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ensure_ministry(&data, A);
    ensure_ministry(&data, B);
    let a_ed = token(
        &data,
        &["--ministry", A, "--role", "editor", "--label", "ana"],
    );
    let a_ed2 = token(
        &data,
        &["--ministry", A, "--role", "editor", "--label", "beto"],
    );
    let a_view = token(&data, &["--ministry", A, "--role", "viewer"]);
    let a_adm = token(&data, &["--ministry", A, "--role", "admin"]);
    let b_adm = token(&data, &["--ministry", B, "--role", "admin"]);
    let city = token(&data, &["--role", "admin"]);
    let srv = Server::start(&data);
    let base = srv.base.clone();

    let v1 = tmp.path().join("v1.geojson");
    ogr2ogr(&[
        "-f",
        "GeoJSON",
        v1.to_str().unwrap(),
        vector("spdata/cycle_hire.geojson").to_str().unwrap(),
    ]);
    let v2 = tmp.path().join("v2.geojson");
    python(&[
        "edit",
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "id",
        "area",
        "zona",
    ]);
    let first = upload(
        &base,
        &a_ed,
        reqwest::Method::POST,
        "/api/layers",
        &v1,
        json!({"id": "obras", "title": "Obras", "access": "public", "id_field": "id"}),
    );
    assert_eq!(first["state"], "succeeded", "{first}");
    let job = upload(
        &base,
        &a_ed,
        reqwest::Method::PUT,
        "/api/layers/obras/data",
        &v2,
        json!({"draft": true, "id_field": "id", "note": "obras de noviembre"}),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["draft"]["base"], 1, "{job}");
    let n = job["result"]["version"].as_u64().unwrap();
    assert_eq!(n, 2);

    // Every surface of the draft: its ministry and the city-wide admin see it; the
    // other ministry and anonymous callers get what a missing layer gets.
    let surfaces = [
        "/collections/obras@draft".to_string(),
        "/collections/obras@draft/items?limit=2".into(),
        "/collections/obras@draft/items/3".into(),
        "/collections/obras@draft/queryables".into(),
        "/tiles/obras@draft.json".into(),
        "/api/layers/obras@draft/quality".into(),
        "/collections/obras@draft/changes".into(),
        "/collections/obras/changes?from=1&to=2".into(),
        "/api/layers/obras/draft".into(),
        format!("/api/layers/obras/quality?version={n}"),
    ];
    for s in &surfaces {
        for (who, tok, ok) in [
            ("ministry editor", Some(&a_ed), true),
            ("ministry viewer", Some(&a_view), true),
            ("ministry admin", Some(&a_adm), true),
            ("city admin", Some(&city), true),
            ("other ministry", Some(&b_adm), false),
            ("anonymous", None, false),
        ] {
            let (status, body) = get(&base, tok.map(|t| t.as_str()), s);
            if ok {
                assert_eq!(status, 200, "{who} {s}: {body}");
            } else {
                assert_eq!(status, 404, "{who} {s}: {body}");
            }
        }
    }
    // Nothing of the draft in an error either: an unknown key answers like a
    // missing version, not with the draft's columns.
    for q in [
        "from=1&to=2&key=nope",
        "from=2&to=1",
        "from=1&to=2&f=geojson",
    ] {
        let (s, v) = get(&base, None, &format!("/collections/obras/changes?{q}"));
        assert_eq!(s, 404, "{q}: {v}");
    }
    let (s, v) = get(&base, None, "/collections/obras/changes?from=9");
    assert_eq!(s, 410);
    assert!(
        !v.to_string().contains('2'),
        "the draft's number is not listed: {v}"
    );
    // A draft tile: drawn for the ministry, nothing for others.
    let tile = "/tiles/obras@draft/12/2046/1361.mvt";
    assert_eq!(get_bytes(&base, Some(&a_view), tile).0, 200);
    assert_eq!(get_bytes(&base, None, tile).0, 404);
    // The public keeps the published version everywhere, feeds included.
    let (_, items) = get(&base, None, "/collections/obras/items?limit=1");
    assert_eq!(items["numberMatched"], 742);
    for (path, needle) in [
        ("/collections", "@draft"),
        ("/catalog/data.json", "@draft"),
        ("/api/catalog", "@draft"),
    ] {
        let (s, body) = get_bytes(&base, Some(&city), path);
        assert_eq!(s, 200);
        assert!(
            !String::from_utf8_lossy(&body).contains(needle),
            "{path} lists the draft"
        );
    }
    let (_, vs) = get(&base, None, "/api/layers/obras/versions");
    assert!(
        !vs.to_string().contains("\"draft\":true"),
        "anonymous sees the draft in {vs}"
    );
    let (_, vs) = get(&base, Some(&a_view), "/api/layers/obras/versions");
    assert!(vs.to_string().contains("\"draft\":true"), "{vs}");
    // The review page's data: diagnosis, what it changes, whether one may publish.
    let (_, d) = get(&base, Some(&a_ed), "/api/layers/obras/draft");
    assert_eq!(d["changes"]["counts"]["modified"], 7, "{d}");
    assert_eq!(d["changes"]["schema"]["renamed"][0]["to"], "zona");
    assert!(d["quality"]["grade"].is_string(), "{d}");
    assert_eq!(d["may_publish"], true);

    // Approval: the ministry requires it; the uploader cannot publish, an editor
    // who is not an admin cannot either, another ministry's admin cannot see it.
    let o = run(&data, &["ministry", "set", A, "--require-approval", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (s, v) = call(
        &base,
        Some(&a_ed),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
    );
    assert_eq!(s, 403, "{v}");
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("someone other than"),
        "{v}"
    );
    let (s, v) = call(
        &base,
        Some(&a_ed2),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
    );
    assert_eq!(s, 403, "{v}");
    let (s, _) = call(
        &base,
        Some(&b_adm),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
    );
    assert_eq!(s, 404);
    let (s, v) = call(
        &base,
        Some(&a_adm),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert!(v["approved_by"].as_str().unwrap().contains("admin"), "{v}");
    wait_for(10, "v2 served", || {
        get(&base, None, "/collections/obras/items?limit=1").1["numberMatched"] == 742
    });
    let (_, c) = get(&base, None, "/collections/obras/changes?since=1");
    assert_eq!(c["to"]["version"], 2);
    assert_eq!(get(&base, Some(&a_ed), "/api/layers/obras/draft").0, 404);
    // With approval required, even an upload without "draft" is one.
    let job = upload(
        &base,
        &a_ed,
        reqwest::Method::PUT,
        "/api/layers/obras/data",
        &v1,
        json!({"id_field": "id"}),
    );
    assert!(job["result"]["draft"].is_object(), "{job}");

    // A draft whose base was replaced: 409 saying what to do; discard works.
    run(
        &data,
        &["ministry", "set", A, "--require-approval", "false"],
    );
    let job = upload(
        &base,
        &a_ed,
        reqwest::Method::PUT,
        "/api/layers/obras/data",
        &v2,
        json!({"id_field": "id"}),
    );
    assert!(job["result"]["draft"].is_null(), "{job}");
    let (s, v) = call(
        &base,
        Some(&a_adm),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
    );
    assert_eq!(s, 409, "{v}");
    let msg = v["description"].as_str().unwrap();
    assert!(
        msg.contains("made on version 2") && msg.contains("discard"),
        "{msg}"
    );
    let (_, d) = get(&base, Some(&a_ed), "/api/layers/obras/draft");
    assert_eq!(d["may_publish"], false, "{d}");
    // Anonymous callers cannot see the draft: answered as if there were none.
    let (s, _) = call(
        &base,
        None,
        reqwest::Method::DELETE,
        "/api/layers/obras/draft",
    );
    assert_eq!(s, 404);
    let (s, _) = call(
        &base,
        Some(&a_view),
        reqwest::Method::DELETE,
        "/api/layers/obras/draft",
    );
    assert_eq!(s, 403);
    let (s, v) = call(
        &base,
        Some(&a_ed),
        reqwest::Method::DELETE,
        "/api/layers/obras/draft",
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        get(&base, Some(&a_ed), "/collections/obras@draft/items").0,
        404
    );

    // All of it in the audit log.
    let (_, audit) = get(&base, Some(&city), "/api/audit?layer=obras&limit=50");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "layer.draft",
        "layer.publish",
        "layer.discard",
        "layer.upload",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // The command line: a draft, published by someone else.
    let o = run(
        &data,
        &[
            "ingest",
            v1.to_str().unwrap(),
            "--layer",
            "obras",
            "--ministry",
            A,
            "--id-field",
            "id",
            "--draft",
        ],
    );
    assert!(stdout(&o).contains("stored as a draft"), "{}", stderr(&o));
    let o = run(&data, &["layer", "publish", "obras"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&data, &["layer", "discard", "obras"]);
    assert!(!o.status.success() && stderr(&o).contains("has no draft"));
    // A discarded draft's number is never given again (caches and replicas know
    // versions by number).
    let draft = |o: &std::process::Output| -> u32 {
        let s = stdout(o);
        s.split("version ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let args = [
        "ingest",
        v1.to_str().unwrap(),
        "--layer",
        "obras",
        "--ministry",
        A,
        "--id-field",
        "id",
        "--draft",
    ];
    let first = draft(&run(&data, &args));
    assert!(run(&data, &["layer", "discard", "obras"]).status.success());
    assert_eq!(draft(&run(&data, &args)), first + 1);
}

/// A request a receiver got: (headers, body, the status it answered).
type Request = (Vec<(String, String)>, String, u16);

/// A receiver on a free local port: answers each request with the next status of
/// `plan` (then 200), records (headers, body) of each request in order.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

fn receiver(plan: Vec<u16>) -> Receiver {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/datahub", l.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut plan = plan.into_iter();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0;
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let t = line.trim_end();
                if t.is_empty() {
                    break;
                }
                let (k, v) = t.split_once(':').unwrap();
                let (k, v) = (k.trim().to_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap();
                }
                headers.push((k, v));
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let status = plan.next().unwrap_or(200);
            s2.lock()
                .unwrap()
                .push((headers, String::from_utf8(body).unwrap(), status));
            write!(
                c,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
        }
    });
    Receiver { url, seen }
}

/// Python's hmac over the body: the signature as a receiver would check it.
fn python_hmac(secret: &str, body: &str) -> String {
    let o = Command::new("python3")
        .args(["-c", "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn webhooks_are_signed_retried_in_order_and_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ensure_ministry(&data, A);
    ensure_ministry(&data, B);
    ensure_ministry(&data, "pruebas");
    let city = token(&data, &["--role", "admin"]);
    let b_adm = token(&data, &["--ministry", B, "--role", "admin"]);
    let a_ed = token(&data, &["--ministry", A, "--role", "editor"]);
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[webhooks]\nretry_base_s = 1\nmax_attempts = 3\ntimeout_s = 2\nkeep_deliveries = 2\npublic_url = \"http://datahub.test\"\n").unwrap();
    let srv = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let base = srv.base.clone();
    let src = vector("spdata/cycle_hire.geojson");
    // Published with the same settings file: the notifications' links use its
    // public_url.
    let ingest = |layer: &str, access: &str, note: &str| {
        let o = run(
            &data,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "ingest",
                src.to_str().unwrap(),
                "--layer",
                layer,
                "--ministry",
                "pruebas",
                "--id-field",
                "id",
                "--access",
                access,
                "--note",
                note,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    ingest("parques", "internal", "v1");
    // A restricted layer of "pruebas": B's subscription must never hear of it.
    ingest("secreto", "restricted", "v1");
    wait_for(20, "layers", || {
        get(&base, Some(&city), "/collections/secreto").0 == 200
    });

    let rx = receiver(vec![500, 503]);
    let rx_b = receiver(vec![]);
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/x", down.local_addr().unwrap());
    drop(down);
    let post = |tok: &str, body: Value| {
        let r = client()
            .post(format!("{base}/api/subscriptions"))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(
        post(&a_ed, json!({"url": rx.url})).0,
        403,
        "editors may not subscribe"
    );
    let (s, v) = post(&city, json!({"url": "https://x.example/h"}));
    assert_eq!(s, 400, "{v}");
    // Not the cloud metadata service.
    let (s, v) = post(
        &city,
        json!({"url": "http://169.254.169.254/latest/meta-data"}),
    );
    assert_eq!(s, 400, "{v}");
    let (s, sub) = post(&city, json!({"url": rx.url, "layer": "parques"}));
    assert_eq!(s, 201, "{sub}");
    let secret = sub["secret"].as_str().unwrap().to_string();
    let (s, bsub) = post(&b_adm, json!({"url": rx_b.url, "ministry": "pruebas"}));
    assert_eq!(s, 201, "{bsub}");
    let (s, dsub) = post(&city, json!({"url": dead, "layer": "parques"}));
    assert_eq!(s, 201, "{dsub}");
    let (_, list) = get(&base, Some(&b_adm), "/api/subscriptions");
    assert_eq!(
        list["subscriptions"].as_array().unwrap().len(),
        1,
        "B sees only its own: {list}"
    );
    assert!(
        !list.to_string().contains(&secret),
        "secrets are never listed"
    );

    // Two publishes: v2 and v3 of parques, one of secreto; none waits for receivers.
    let t0 = Instant::now();
    ingest("parques", "internal", "v2");
    ingest("secreto", "restricted", "v2");
    ingest("parques", "internal", "v3");
    assert!(t0.elapsed() < Duration::from_secs(30));

    // The city's subscription: 500, 503, then v2 delivered, then v3 (in order).
    let sid = sub["id"].as_str().unwrap().to_string();
    wait_for(60, "both versions delivered", || {
        let (_, d) = get(
            &base,
            Some(&city),
            &format!("/api/subscriptions/{sid}/deliveries"),
        );
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["state"] == "delivered")
            .count()
            == 2
    });
    let (_, log) = get(
        &base,
        Some(&city),
        &format!("/api/subscriptions/{sid}/deliveries"),
    );
    let dl = log["deliveries"].as_array().unwrap();
    assert_eq!(dl[1]["version"], 2, "{log}");
    assert_eq!(dl[1]["attempts"], 3, "two failures, then success: {log}");
    assert_eq!(dl[0]["version"], 3);
    assert_eq!(dl[0]["attempts"], 1);
    let seen = rx.seen.lock().unwrap().clone();
    let to_city: Vec<&Request> = seen
        .iter()
        .filter(|(_, b, _)| b.contains(&format!("\"subscription\":\"{sid}\"")))
        .collect();
    let order: Vec<(u64, u16)> = to_city
        .iter()
        .map(|(_, b, st)| {
            (
                serde_json::from_str::<Value>(b).unwrap()["version"]
                    .as_u64()
                    .unwrap(),
                *st,
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![(2, 500), (2, 503), (2, 200), (3, 200)],
        "in order, retried"
    );
    for (h, body, _) in &to_city {
        let sig = h
            .iter()
            .find(|(k, _)| k == "x-datahub-signature-256")
            .unwrap()
            .1
            .clone();
        assert_eq!(
            sig,
            format!("sha256={}", python_hmac(&secret, body)),
            "signature"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"], "layer.published");
        assert_eq!(v["layer"], "parques");
        let changes = v["links"][0]["href"].as_str().unwrap();
        assert!(
            changes.starts_with("http://datahub.test/collections/parques/changes?from="),
            "{changes}"
        );
        // What a receiver then fetches: only the changes since its version.
        let path = changes.strip_prefix("http://datahub.test").unwrap();
        assert_eq!(
            get(&base, None, path).0,
            404,
            "parques is internal: anonymous cannot read it"
        );
        assert_eq!(get(&base, Some(&city), path).0, 200);
    }
    // B's subscription heard of parques (internal: every ministry sees it) but
    // never of secreto (restricted to A).
    let bid = bsub["id"].as_str().unwrap();
    wait_for(30, "B's deliveries", || {
        let (_, d) = get(
            &base,
            Some(&b_adm),
            &format!("/api/subscriptions/{bid}/deliveries"),
        );
        d["deliveries"].as_array().unwrap().len() == 2
    });
    let (_, d) = get(
        &base,
        Some(&b_adm),
        &format!("/api/subscriptions/{bid}/deliveries"),
    );
    let layers: BTreeSet<&str> = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, BTreeSet::from(["parques"]), "{d}");
    assert_eq!(
        get(
            &base,
            Some(&b_adm),
            &format!("/api/subscriptions/{sid}/deliveries")
        )
        .0,
        404
    );

    // The unreachable receiver: three attempts each, then given up and the
    // subscription marked failing; the publishes were not held up.
    let did = dsub["id"].as_str().unwrap();
    wait_for(60, "dead receiver given up", || {
        let (_, d) = get(
            &base,
            Some(&city),
            &format!("/api/subscriptions/{did}/deliveries"),
        );
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "failed")
            && d["subscription"]["failing"] == true
    });
    let (_, d) = get(
        &base,
        Some(&city),
        &format!("/api/subscriptions/{did}/deliveries"),
    );
    assert_eq!(d["deliveries"][0]["attempts"], 3);
    assert!(
        d["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{d}"
    );
    assert!(
        d["subscription"]["last_error"]
            .as_str()
            .unwrap()
            .contains("changes?since="),
        "{d}"
    );
    // The log is bounded (`keep_deliveries = 2` here): after v4 the city's holds v4
    // and v3, v2 forgotten.
    ingest("parques", "internal", "v4");
    let log_of = |id: &str| {
        get(
            &base,
            Some(&city),
            &format!("/api/subscriptions/{id}/deliveries"),
        )
        .1
    };
    wait_for(30, "v4 delivered and the log cut to 2", || {
        let l = log_of(&sid);
        l["deliveries"][0]["state"] == "delivered"
            && l["deliveries"][0]["version"] == 4
            && l["deliveries"].as_array().unwrap().len() == 2
    });
    let versions: Vec<u64> = log_of(&sid)["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![4, 3], "bounded log");

    // Removed: gone with its log.
    let (s, _) = call(
        &base,
        Some(&city),
        reqwest::Method::DELETE,
        &format!("/api/subscriptions/{did}"),
    );
    assert_eq!(s, 200);
    assert_eq!(
        get(
            &base,
            Some(&city),
            &format!("/api/subscriptions/{did}/deliveries")
        )
        .0,
        404
    );
}

/// Tile coordinates of a lon/lat at zoom z.
fn tile_of(lon: f64, lat: f64, z: u32) -> (u32, u32) {
    let n = 2f64.powi(z as i32);
    let x = ((lon + 180.0) / 360.0 * n) as u32;
    let y = ((1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * n) as u32;
    (x, y)
}

fn metric(base: &str, name: &str) -> f64 {
    let (_, body) = get_bytes(base, None, "/metrics");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .map(|v| v.parse().unwrap())
        })
        .unwrap()
}

#[test]
fn a_small_change_keeps_the_other_tiles_and_they_equal_a_fresh_render() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // 40,000 points over Monterrey with an id, a category and a number.
    let csv = |path: &Path, moved: bool| {
        let mut s = String::from("id,lon,lat,tipo,valor\n");
        for i in 0..40_000u32 {
            let (mut lon, lat) = (
                -100.45 + (i % 200) as f64 * 0.0012,
                25.58 + (i / 200) as f64 * 0.0011,
            );
            if moved && i == 12_345 {
                lon += 0.0004;
            }
            s.push_str(&format!("{i},{lon:.6},{lat:.6},t{},{}\n", i % 7, i % 1000));
        }
        std::fs::write(path, s).unwrap();
    };
    let (c1, c2) = (tmp.path().join("p1.csv"), tmp.path().join("p2.csv"));
    csv(&c1, false);
    csv(&c2, true);
    ingest_ok(&data, &c1, "puntos", &["--id-field", "id"]);
    let srv = Server::start(&data);
    let base = srv.base.clone();
    let mut grid = Vec::new();
    for z in 10..=15u32 {
        let (x0, y1) = tile_of(-100.46, 25.57, z);
        let (x1, y0) = tile_of(-100.20, 25.81, z);
        for x in x0..=x1 {
            for y in y0..=y1 {
                grid.push((z, x, y));
            }
        }
    }
    assert!(grid.len() > 300, "{}", grid.len());
    let fetch = |base: &str| -> Vec<Vec<u8>> {
        grid.iter()
            .map(|(z, x, y)| {
                let (s, b) = get_bytes(base, None, &format!("/tiles/puntos/{z}/{x}/{y}.mvt"));
                assert!(s == 200 || s == 204, "{z}/{x}/{y}: {s}");
                b
            })
            .collect()
    };
    let before = fetch(&base);
    ingest_ok(&data, &c2, "puntos", &["--id-field", "id"]);
    wait_for(20, "v2 loaded", || {
        get(&base, None, "/collections/puntos/changes?since=1").1["to"]["version"] == 2
    });
    let hits0 = metric(&base, "datahub_tile_cache_hits_total");
    let after = fetch(&base);
    let hits = metric(&base, "datahub_tile_cache_hits_total") - hits0;
    // The moved point's tiles were rendered again when v2 was loaded, the others
    // carried over: every tile of the grid comes from the cache.
    assert_eq!(
        hits,
        grid.len() as f64,
        "tiles rendered on request after a one-point change"
    );
    let carried = metric(&base, "datahub_tile_cache_carried_total");
    let again = metric(&base, "datahub_tile_cache_rerendered_total");
    assert!(
        (6.0..=24.0).contains(&again),
        "{again} tiles rendered again for one point"
    );
    assert_eq!(carried + again, grid.len() as f64);
    // The moved point's tiles did change.
    assert!(
        before.iter().zip(&after).any(|(a, b)| a != b),
        "no tile changed"
    );
    // A second server on the same data renders every tile afresh: byte for byte
    // what the first one served from its cache.
    let fresh = Server::start(&data);
    let again = fetch(&fresh.base);
    for (i, (a, b)) in after.iter().zip(&again).enumerate() {
        assert!(
            a == b,
            "tile {:?} served from the cache differs from a fresh render",
            grid[i]
        );
    }
}
