//! Catalogue, access control, uploads and open-data feeds, black-box: a real
//! `datahub serve` on a free port, tokens made with the CLI, real files from the shared
//! test data uploaded over HTTP (multipart), DCAT output checked with the official
//! DCAT-US 1.1 JSON Schema and parsed as RDF (tests/dcat_check.py, Python venv).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::{multipart, Client};
use serde_json::{json, Value};

const A: &str = "obras-publicas";
const B: &str = "seguridad";

struct Who {
    name: &'static str,
    token: Option<String>,
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn get(base: &str, who: &Who, path: &str) -> (u16, String) {
    let mut rq = client().get(format!("{base}{path}"));
    if let Some(t) = &who.token {
        rq = rq.bearer_auth(t);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    (s, String::from_utf8_lossy(&r.bytes().unwrap()).into_owned())
}

fn send(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = client().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json::<Value>().unwrap_or(Value::Null))
}

fn upload(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    file: &Path,
    meta: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut form = multipart::Form::new().file("file", file).unwrap();
    if let Some(m) = meta {
        form = form.text("metadata", m.to_string());
    }
    let mut rq = client()
        .request(method, format!("{base}{path}"))
        .multipart(form);
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (s, r.json::<Value>().unwrap_or(Value::Null), loc)
}

/// Polls a job until it finishes; returns its last document.
fn wait_job(base: &str, token: &str, location: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (s, v) = send(base, Some(token), reqwest::Method::GET, location, None);
        assert_eq!(s, 200, "{location}: {v}");
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

fn setup_ministries(data: &Path) {
    ensure_ministry(data, A);
    ensure_ministry(data, B);
}

fn ingest_as(data: &Path, src: &Path, id: &str, access: &str, title: &str, keywords: &str) {
    let o = run(
        data,
        &[
            "ingest",
            src.to_str().unwrap(),
            "--layer",
            id,
            "--ministry",
            A,
            "--access",
            access,
            "--title",
            title,
            "--keywords",
            keywords,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Every surface × {anonymous, A viewer, A editor, B editor, admin} × {public,
/// internal, restricted layer of A}: exact statuses, and nothing of a layer leaks into
/// a response its caller may not see.
#[test]
fn access_matrix_on_every_surface() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    setup_ministries(&data);
    let points = vector("spdata/cycle_hire.geojson");
    let polys = vector("sf/nc.gpkg");
    // Distinct words per layer, so a leak of any of them is visible in any body.
    ingest_as(
        &data,
        &polys,
        "capa-publica",
        "public",
        "Condados abiertos",
        "abierto",
    );
    ingest_as(
        &data,
        &points,
        "capa-interna",
        "internal",
        "Estaciones internas",
        "interno",
    );
    ingest_as(
        &data,
        &points,
        "capa-secreta",
        "restricted",
        "Zzsecreto Reservado",
        "clasificado",
    );
    let av = token(&data, &["--ministry", A, "--role", "viewer"]);
    let ae = token(&data, &["--ministry", A, "--role", "editor"]);
    let be = token(&data, &["--ministry", B, "--role", "editor"]);
    let admin = token(&data, &["--role", "admin"]);
    let server = Server::start(&data);
    let base = server.base.clone();
    let whos = [
        Who {
            name: "anonymous",
            token: None,
        },
        Who {
            name: "A viewer",
            token: Some(av.clone()),
        },
        Who {
            name: "A editor",
            token: Some(ae.clone()),
        },
        Who {
            name: "B editor",
            token: Some(be.clone()),
        },
        Who {
            name: "admin",
            token: Some(admin.clone()),
        },
    ];
    // (layer, title, keyword) and who may see it, in the order of `whos`.
    let layers = [
        (
            "capa-publica",
            "Condados abiertos",
            [true, true, true, true, true],
        ),
        (
            "capa-interna",
            "Estaciones internas",
            [false, true, true, true, true],
        ),
        (
            "capa-secreta",
            "Zzsecreto Reservado",
            [false, true, true, false, true],
        ),
    ];
    let mut checked = 0;
    for (id, title, sees) in layers {
        let per_layer = [
            format!("/collections/{id}"),
            format!("/collections/{id}?f=html"),
            format!("/collections/{id}/queryables"),
            format!("/collections/{id}/items?limit=2"),
            format!("/collections/{id}/items/1"),
            format!("/collections/{id}/items?f=csv"),
            format!("/collections/{id}/items?f=geojson"),
            format!("/tiles/{id}/0/0/0.mvt"),
            format!("/tiles/capa-publica,{id}/0/0/0.mvt"),
            format!("/tiles/{id}.json"),
            format!("/tiles/capa-publica,{id}.json"),
            format!("/api/layers/{id}"),
            format!("/api/layers/{id}/versions"),
            format!("/api/layers/{id}/quality"),
            format!("/api/layers/{id}/quality?version=1"),
            format!("/api/analysis/aggregate?zones=capa-publica&layer={id}&stat=count"),
            format!("/api/analysis/nearest?layer={id}&lon=-0.1&lat=51.5&k=1"),
        ];
        for (who, sees) in whos.iter().zip(sees) {
            for path in &per_layer {
                // A composite with the public layer and itself is the same layer twice.
                if id == "capa-publica" && path.contains("capa-publica,capa-publica") {
                    continue;
                }
                let (s, body) = get(&base, who, path);
                let want = if sees { 200 } else { 404 };
                assert_eq!(s, want, "{} GET {path}: {body}", who.name);
                if !sees {
                    assert!(!body.contains(title), "{} {path} leaks the title", who.name);
                }
                checked += 1;
            }
        }
    }
    // Lists and feeds: the invisible layers' ids and titles appear nowhere.
    let lists = [
        "/collections",
        "/collections?f=html",
        "/api",
        "/api/catalog",
        "/api/catalog?q=zzsecreto",
        "/api/catalog?keyword=clasificado",
        "/api/catalog?q=estaciones",
        "/api/layers",
        "/api/ministries",
        "/api/quality",
        "/api/quality?f=csv",
        "/api/usage",
        "/api/analysis",
        "/catalog/data.json",
        "/catalog/dcat.jsonld",
        "/health",
    ];
    for (w, who) in whos.iter().enumerate() {
        for path in lists {
            let (s, body) = get(&base, who, path);
            assert_eq!(s, 200, "{} GET {path}: {body}", who.name);
            for (id, title, sees) in layers {
                let feed = path.starts_with("/catalog/");
                // The open-data feeds hold public layers only, whoever asks.
                let visible = if feed { id == "capa-publica" } else { sees[w] };
                if !visible {
                    assert!(
                        !body.contains(id) && !body.contains(title),
                        "{} GET {path} leaks {id}",
                        who.name
                    );
                } else if path == "/collections" || path == "/api/layers" || feed {
                    assert!(body.contains(id), "{} GET {path} misses {id}", who.name);
                }
            }
            checked += 1;
        }
    }
    // Writes: PATCH (edit), restore; 401 anonymous, 404 when invisible, 403 when
    // visible but not allowed, 200 for A's editor and the admin.
    for (id, _, sees) in layers {
        for (w, who) in whos.iter().enumerate() {
            let allowed = matches!(who.name, "A editor" | "admin");
            let want = match (who.token.is_some(), sees[w], allowed) {
                (false, _, _) => 401,
                (true, false, _) => 404,
                (true, true, false) => 403,
                (true, true, true) => 200,
            };
            let (s, v) = send(
                &base,
                who.token.as_deref(),
                reqwest::Method::PATCH,
                &format!("/api/layers/{id}"),
                Some(json!({"description": format!("editada por {}", who.name)})),
            );
            assert_eq!(s, want, "{} PATCH {id}: {v}", who.name);
            let (s, v) = send(
                &base,
                who.token.as_deref(),
                reqwest::Method::POST,
                &format!("/api/layers/{id}/versions/1/restore"),
                None,
            );
            assert_eq!(s, want, "{} restore {id}: {v}", who.name);
            let (s, v) = send(
                &base,
                who.token.as_deref(),
                reqwest::Method::PUT,
                &format!("/api/layers/{id}/data"),
                None,
            );
            // Not multipart at all: refused before (401/403/404) or as a bad request.
            let want_put = if want == 200 { 400 } else { want };
            assert_eq!(s, want_put, "{} PUT {id}: {v}", who.name);
            checked += 3;
        }
    }
    // Audit: admins only.
    for (who, want) in whos.iter().zip([401, 403, 403, 403, 200]) {
        let (s, body) = get(&base, who, "/api/audit");
        assert_eq!(s, want, "{} GET /api/audit: {body}", who.name);
    }
    let (_, audit) = send(
        &base,
        Some(&admin),
        reqwest::Method::GET,
        "/api/audit?limit=1000",
        None,
    );
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "layer.upload",
        "layer.access",
        "layer.edit",
        "layer.restore",
        "token.create",
        "ministry.add",
    ] {
        assert!(actions.contains(&a), "audit lacks {a}: {actions:?}");
    }
    // A bad token is a 401 (not a silent anonymous), and repeated failures are limited.
    let bad = Who {
        name: "bad",
        token: Some("dh_000000000000_nope".into()),
    };
    let (s, _) = get(&base, &bad, "/collections");
    assert_eq!(s, 401);
    let mut last = 0;
    for _ in 0..12 {
        last = get(&base, &bad, "/collections").0;
    }
    assert_eq!(last, 429, "failed attempts are rate-limited");
    // A revoked token stops working (revoked before its first use: nothing cached).
    let victim = token(
        &data,
        &["--ministry", A, "--role", "viewer", "--label", "victim"],
    );
    let list = stdout(&run(&data, &["token", "list", "--json"]));
    let tokens: Value = serde_json::from_str(&list).unwrap();
    let vid = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "victim")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!list.contains(&victim[16..]), "token list shows no secrets");
    assert!(run(&data, &["token", "revoke", &vid]).status.success());
    let r = client()
        .get(format!("{base}/collections/capa-interna"))
        .bearer_auth(&victim)
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .unwrap();
    // Rate limiting is per address; this request comes from the same loopback peer.
    assert!(matches!(r.status().as_u16(), 401 | 429), "{}", r.status());
    eprintln!("access matrix: {checked} checks");
}

/// Upload a real Shapefile, a failing upload, a new version, rollback, delete and
/// undelete, the size limit, concurrent uploads; job reports and audit entries.
#[test]
fn upload_flow_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    setup_ministries(&data);
    let ae = token(&data, &["--ministry", A, "--role", "editor"]);
    let be = token(&data, &["--ministry", B, "--role", "editor"]);
    let av = token(&data, &["--ministry", A, "--role", "viewer"]);
    let admin = token(&data, &["--role", "admin"]);
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "max_upload_mb = 4\n").unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let base = server.base.clone();
    let shp = vector("fiona/coutwildrnp.zip");
    let meta = json!({"id": "silvestres", "title": "Áreas silvestres", "keywords": ["naturaleza", "áreas"],
        "contact_email": "sig@obras.example.mx", "note": "primera carga"});

    // Not allowed: anonymous 401, viewer 403, another ministry 403.
    let (s, _, _) = upload(
        &base,
        None,
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(meta.clone()),
    );
    assert_eq!(s, 401);
    let (s, _, _) = upload(
        &base,
        Some(&av),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(meta.clone()),
    );
    assert_eq!(s, 403);
    let mut other = meta.clone();
    other["ministry"] = json!(A);
    let (s, v, _) = upload(
        &base,
        Some(&be),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(other),
    );
    assert_eq!(s, 403, "{v}");
    // Bad metadata: unknown key, unknown ministry (with a suggestion), bad access level.
    let (s, v, _) = upload(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(json!({"id": "x", "titel": "x"})),
    );
    assert_eq!(s, 400);
    assert!(v["description"].as_str().unwrap().contains("titel"), "{v}");
    let (s, v, _) = upload(
        &base,
        Some(&admin),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(json!({"id": "x", "ministry": "obras-publica"})),
    );
    assert_eq!(s, 400);
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("did you mean 'obras-publicas'"),
        "{v}"
    );
    let (s, v, _) = upload(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(json!({"id": "x", "access": "secreto"})),
    );
    assert_eq!(s, 400, "{v}");

    // The real upload: 202 + Location, a job with progress and the ingest report.
    let (s, v, loc) = upload(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(meta.clone()),
    );
    assert_eq!(s, 202, "{v}");
    let loc = loc.expect("Location");
    assert!(loc.starts_with("/api/jobs/"));
    let done = wait_job(&base, &ae, &loc);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"]["features_read"], 67);
    assert_eq!(done["result"]["features_stored"], 67);
    assert_eq!(done["result"]["version"], 1);
    assert!(done["result"]["quality"]["grade"].is_string());
    // Another ministry and anonymous callers do not see A's job.
    assert_eq!(
        send(&base, Some(&be), reqwest::Method::GET, &loc, None).0,
        404
    );
    assert_eq!(send(&base, None, reqwest::Method::GET, &loc, None).0, 404);
    // Internal by default: anonymous does not see it, a ministry token does.
    assert_eq!(
        send(
            &base,
            None,
            reqwest::Method::GET,
            "/collections/silvestres",
            None
        )
        .0,
        404
    );
    let (s, rec) = send(
        &base,
        Some(&be),
        reqwest::Method::GET,
        "/api/layers/silvestres",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(rec["access"], "internal");
    assert_eq!(rec["title"], "Áreas silvestres");
    assert_eq!(rec["ministry"]["slug"], A);
    assert!(rec["metadata_quality"]["points"].as_u64().unwrap() > 0);
    // Same id again: 409.
    let (s, _, _) = upload(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers",
        &shp,
        Some(meta.clone()),
    );
    assert_eq!(s, 409);

    let count = |tok: &str| -> u64 {
        let (s, v) = send(
            &base,
            Some(tok),
            reqwest::Method::GET,
            "/collections/silvestres/items?limit=1",
            None,
        );
        assert_eq!(s, 200, "{v}");
        v["numberMatched"].as_u64().unwrap()
    };
    // A failing upload (a corrupt zip): the job says why, v1 stays served, nothing left.
    let bad = tmp.path().join("roto.zip");
    std::fs::write(&bad, b"PK\x03\x04 this is not really a zip archive").unwrap();
    let (s, _, loc) = upload(
        &base,
        Some(&ae),
        reqwest::Method::PUT,
        "/api/layers/silvestres/data",
        &bad,
        None,
    );
    assert_eq!(s, 202);
    let failed = wait_job(&base, &ae, &loc.unwrap());
    assert_eq!(failed["state"], "failed");
    let reason = failed["error"].as_str().unwrap();
    assert!(
        reason.contains("zip") && reason.contains("previous version"),
        "{reason}"
    );
    assert_eq!(count(&ae), 67);
    let leftovers: Vec<_> = std::fs::read_dir(data.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    // Size limit: 413 with a message, nothing left behind.
    let big = tmp.path().join("grande.geojson");
    std::fs::write(&big, vec![b' '; (4 << 20) + (200 << 10)]).unwrap();
    let (s, v, _) = upload(
        &base,
        Some(&ae),
        reqwest::Method::PUT,
        "/api/layers/silvestres/data",
        &big,
        None,
    );
    assert_eq!(s, 413, "{v}");
    assert!(v["description"].as_str().unwrap().contains("4 MiB"), "{v}");
    assert!(std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .next()
        .is_none());

    // New version from another format, made public by its metadata.
    let pts = vector("spdata/cycle_hire.geojson");
    let (s, _, loc) = upload(
        &base,
        Some(&ae),
        reqwest::Method::PUT,
        "/api/layers/silvestres/data",
        &pts,
        Some(json!({"access": "public", "note": "estaciones"})),
    );
    assert_eq!(s, 202);
    let v2 = wait_job(&base, &ae, &loc.unwrap());
    assert_eq!(v2["state"], "succeeded", "{v2}");
    assert_eq!(v2["result"]["version"], 2);
    let n2 = count(&ae);
    assert_ne!(n2, 67);
    assert_eq!(
        send(
            &base,
            None,
            reqwest::Method::GET,
            "/collections/silvestres",
            None
        )
        .0,
        200
    );
    // The record was carried over; history says who and what.
    let (_, rec) = send(
        &base,
        None,
        reqwest::Method::GET,
        "/api/layers/silvestres",
        None,
    );
    assert_eq!(rec["title"], "Áreas silvestres");
    let (_, hist) = send(
        &base,
        None,
        reqwest::Method::GET,
        "/api/layers/silvestres/versions",
        None,
    );
    let hv = hist["versions"].as_array().unwrap();
    assert_eq!(hv.len(), 2);
    assert_eq!(hv[0]["version"], 2);
    assert_eq!(hv[0]["note"], "estaciones");
    assert_eq!(hv[1]["note"], "primera carga");
    assert_eq!(hv[1]["source_file"], "coutwildrnp.zip");
    assert!(hv[1]["uploaded_by"].as_str().unwrap().starts_with("token:"));

    // Rollback: v1 published again as v3.
    let (s, r) = send(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers/silvestres/versions/1/restore",
        None,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["version"], 3);
    assert_eq!(count(&ae), 67);
    let (s, _) = send(
        &base,
        Some(&ae),
        reqwest::Method::POST,
        "/api/layers/silvestres/versions/9/restore",
        None,
    );
    assert_eq!(s, 400);

    // Concurrent uploads: two layers in parallel, two versions of one layer in turn.
    let handles: Vec<_> = [
        ("paralela-1", "POST"),
        ("paralela-2", "POST"),
        ("silvestres", "PUT"),
        ("silvestres", "PUT"),
    ]
    .into_iter()
    .map(|(id, m)| {
        let (base, ae, pts) = (base.clone(), ae.clone(), pts.clone());
        std::thread::spawn(move || {
            let (method, path, meta) = if m == "POST" {
                (
                    reqwest::Method::POST,
                    "/api/layers".to_string(),
                    Some(json!({"id": id})),
                )
            } else {
                (reqwest::Method::PUT, format!("/api/layers/{id}/data"), None)
            };
            let (s, v, loc) = upload(&base, Some(&ae), method, &path, &pts, meta);
            assert_eq!(s, 202, "{v}");
            wait_job(&base, &ae, &loc.unwrap())
        })
    })
    .collect();
    let results: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results {
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    let mut versions: Vec<u64> = results[2..]
        .iter()
        .map(|r| r["result"]["version"].as_u64().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, [4, 5], "same-layer uploads are serialized");

    // Delete hides (404 for everyone, admin included), admin lists and undeletes.
    let (s, _) = send(
        &base,
        Some(&be),
        reqwest::Method::DELETE,
        "/api/layers/silvestres",
        None,
    );
    assert_eq!(s, 403);
    let (s, _) = send(
        &base,
        Some(&ae),
        reqwest::Method::DELETE,
        "/api/layers/silvestres",
        None,
    );
    assert_eq!(s, 204);
    for tok in [None, Some(admin.as_str())] {
        assert_eq!(
            send(
                &base,
                tok,
                reqwest::Method::GET,
                "/collections/silvestres",
                None
            )
            .0,
            404
        );
    }
    let (s, del) = send(
        &base,
        Some(&admin),
        reqwest::Method::GET,
        "/api/layers?deleted=true",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(del["layers"][0]["id"], "silvestres");
    assert_eq!(
        send(
            &base,
            Some(&ae),
            reqwest::Method::POST,
            "/api/layers/silvestres/undelete",
            None
        )
        .0,
        403
    );
    assert_eq!(
        send(
            &base,
            Some(&admin),
            reqwest::Method::POST,
            "/api/layers/silvestres/undelete",
            None
        )
        .0,
        200
    );
    assert_eq!(
        send(
            &base,
            None,
            reqwest::Method::GET,
            "/collections/silvestres",
            None
        )
        .0,
        200
    );
    assert!(
        data.join("layers/silvestres/v1/layer.fgb").exists(),
        "nothing erased"
    );

    // The audit log has every step, with who and from where.
    let (_, audit) = send(
        &base,
        Some(&admin),
        reqwest::Method::GET,
        "/api/audit?layer=silvestres&limit=1000",
        None,
    );
    let mut actions: BTreeMap<String, usize> = BTreeMap::new();
    for e in audit["entries"].as_array().unwrap() {
        *actions
            .entry(e["action"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert!(e["actor"].as_str().unwrap().starts_with("token:"), "{e}");
        assert_eq!(e["remote"], "127.0.0.1", "{e}");
    }
    assert_eq!(actions.get("layer.upload"), Some(&4), "{actions:?}");
    assert_eq!(actions.get("layer.upload_failed"), Some(&1), "{actions:?}");
    assert_eq!(actions.get("layer.restore"), Some(&1), "{actions:?}");
    assert_eq!(actions.get("layer.delete"), Some(&1), "{actions:?}");
    assert_eq!(actions.get("layer.undelete"), Some(&1), "{actions:?}");
    assert_eq!(
        actions.get("layer.access"),
        Some(&2),
        "internal at creation, then public: {actions:?}"
    );
    // A ministry admin sees its ministry's entries only.
    let a_admin = token(&data, &["--ministry", B, "--role", "admin"]);
    let (s, mine) = send(
        &base,
        Some(&a_admin),
        reqwest::Method::GET,
        "/api/audit?limit=1000",
        None,
    );
    assert_eq!(s, 200);
    assert!(
        mine["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["ministry"] == B),
        "{mine}"
    );
}

/// Search (accents, ranking, filters, access) and both open-data feeds checked by the
/// official DCAT-US 1.1 schema and an RDF parser.
#[test]
fn search_and_open_data_feeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["demo"]).status.success());
    setup_ministries(&data);
    let pts = vector("spdata/cycle_hire.geojson");
    let o = run(
        &data,
        &[
            "ingest",
            pts.to_str().unwrap(),
            "--layer",
            "juegos",
            "--ministry",
            A,
            "--access",
            "public",
            "--title",
            "Juegos para Niños",
            "--keywords",
            "recreación,parques",
            "--theme",
            "recreación",
            "--temporal",
            "2020-01-01/2026-06-30",
            "--update-frequency",
            "R/P1M",
            "--contact-email",
            "parques@obras.example.mx",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &data,
        &[
            "ingest",
            pts.to_str().unwrap(),
            "--layer",
            "guarderias",
            "--ministry",
            B,
            "--title",
            "Guarderías",
            "--description",
            "Estancias para niños pequeños",
            "--keywords",
            "niños",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The CLI refuses an unknown ministry and suggests the closest.
    let o = run(
        &data,
        &[
            "ingest",
            pts.to_str().unwrap(),
            "--layer",
            "z",
            "--ministry",
            "seguridd",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean 'seguridad'"),
        "{}",
        stderr(&o)
    );
    let tok = token(&data, &["--ministry", A, "--role", "viewer"]);
    let server = Server::start(&data);
    let base = &server.base;
    let ids = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    // "ninos" finds "Niños" (title) and "niños" (description, keyword), for whoever may see them.
    let (s, v) = send(
        base,
        None,
        reqwest::Method::GET,
        "/api/catalog?q=ninos",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(ids(&v), ["juegos"]);
    let (_, v) = send(
        base,
        Some(&tok),
        reqwest::Method::GET,
        "/api/catalog?q=NIÑOS",
        None,
    );
    assert_eq!(
        ids(&v),
        ["juegos", "guarderias"],
        "title hit ranks first: {v}"
    );
    let (_, v) = send(
        base,
        Some(&tok),
        reqwest::Method::GET,
        "/api/catalog?q=recreacion&theme=Recreación",
        None,
    );
    assert_eq!(ids(&v), ["juegos"]);
    let (_, v) = send(
        base,
        Some(&tok),
        reqwest::Method::GET,
        &format!("/api/catalog?ministry={B}"),
        None,
    );
    assert_eq!(ids(&v), ["guarderias"]);
    let (_, v) = send(
        base,
        Some(&tok),
        reqwest::Method::GET,
        "/api/catalog?access=internal",
        None,
    );
    assert_eq!(ids(&v), ["guarderias"]);
    // bbox intersects the extent: London's bikes, not Monterrey's colonias.
    let (_, v) = send(
        base,
        None,
        reqwest::Method::GET,
        "/api/catalog?bbox=-0.3,51.4,0.0,51.6",
        None,
    );
    assert_eq!(ids(&v), ["juegos"]);
    let (_, v) = send(
        base,
        None,
        reqwest::Method::GET,
        "/api/catalog?q=colonias",
        None,
    );
    assert_eq!(ids(&v), ["colonias"]);
    let (_, v) = send(
        base,
        None,
        reqwest::Method::GET,
        "/api/catalog?q=pluvial%20red",
        None,
    );
    assert_eq!(ids(&v), ["red-pluvial"]);
    for bad in [
        "/api/catalog?bbox=1,2,3",
        "/api/catalog?access=secreto",
        "/api/catalog?limit=x",
        "/api/catalog?qq=1",
    ] {
        let (s, v) = send(base, None, reqwest::Method::GET, bad, None);
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["description"].as_str().unwrap().len() > 10);
    }
    // The record's metadata quality (EU MQA dimensions, 405 points).
    let (_, rec) = send(base, None, reqwest::Method::GET, "/api/layers/juegos", None);
    let mqa = &rec["metadata_quality"];
    assert_eq!(mqa["max"], 405);
    let dims: u64 = [
        "findability",
        "accessibility",
        "interoperability",
        "reusability",
        "contextuality",
    ]
    .iter()
    .map(|d| mqa["dimensions"][d]["points"].as_u64().unwrap())
    .sum();
    assert_eq!(mqa["points"].as_u64().unwrap(), dims);
    assert_eq!(mqa["dimensions"]["findability"]["points"], 100, "{mqa}");
    assert!(
        matches!(mqa["band"].as_str().unwrap(), "good" | "excellent"),
        "{mqa}"
    );
    let (_, colonias) = send(
        base,
        None,
        reqwest::Method::GET,
        "/api/layers/colonias",
        None,
    );
    assert!(colonias["metadata_quality"]["points"].as_u64() < mqa["points"].as_u64());

    // The feeds: public layers only; DCAT-US 1.1 schema + rules; DCAT-AP 3 as RDF.
    let dj = client()
        .get(format!("{base}/catalog/data.json"))
        .send()
        .unwrap();
    assert_eq!(dj.headers()["content-type"], "application/json");
    let dj = dj.text().unwrap();
    let ld = client()
        .get(format!("{base}/catalog/dcat.jsonld"))
        .send()
        .unwrap();
    assert_eq!(ld.headers()["content-type"], "application/ld+json");
    let ld = ld.text().unwrap();
    let v: Value = serde_json::from_str(&dj).unwrap();
    let titles: Vec<&str> = v["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 4, "{titles:?}");
    assert!(!dj.contains("Guarderías") && !ld.contains("Guarderías"));
    let juegos = v["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["title"] == "Juegos para Niños")
        .unwrap();
    assert_eq!(juegos["temporal"], "2020-01-01/2026-06-30");
    assert_eq!(juegos["accrualPeriodicity"], "R/P1M");
    assert_eq!(
        juegos["contactPoint"]["hasEmail"],
        "mailto:parques@obras.example.mx"
    );
    assert_eq!(juegos["license"], "https://www.datos.gob.mx/libreusomx");
    // Every downloadURL answers with its mediaType.
    for d in juegos["distribution"].as_array().unwrap() {
        if let Some(u) = d["downloadURL"].as_str() {
            let r = client().get(u).send().unwrap();
            assert_eq!(r.status(), 200, "{u}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(
                ct.starts_with(d["mediaType"].as_str().unwrap()),
                "{u}: {ct}"
            );
        } else {
            let u = d["accessURL"].as_str().unwrap();
            assert_eq!(client().get(u).send().unwrap().status(), 200, "{u}");
        }
    }
    let (f1, f2) = (tmp.path().join("data.json"), tmp.path().join("dcat.jsonld"));
    std::fs::write(&f1, &dj).unwrap();
    std::fs::write(&f2, &ld).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = std::process::Command::new(venv_python())
        .arg(root.join("tests/dcat_check.py"))
        .args([&f1, &f2])
        .arg("4")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("datasets=4"), "{out}");
    // The checker is not a rubber stamp: a broken feed fails.
    let mut broken = v.clone();
    broken["dataset"][0]["distribution"][0]
        .as_object_mut()
        .unwrap()
        .remove("mediaType");
    broken["dataset"][1]["contactPoint"]["hasEmail"] = json!("nadie");
    std::fs::write(&f1, broken.to_string()).unwrap();
    let o = std::process::Command::new(venv_python())
        .arg(root.join("tests/dcat_check.py"))
        .args([&f1, &f2])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("mediaType") && out.contains("hasEmail"),
        "{out}"
    );
}

/// Tables over the upload API: join options in the metadata, the zone layer must be
/// one the uploader may see, bad options are 400s and bad columns fail the job with
/// the reason; nothing is published by a refused or failed upload.
#[test]
fn table_uploads_with_join_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    setup_ministries(&data);
    let ae = token(&data, &["--ministry", A, "--role", "editor"]);
    let be = token(&data, &["--ministry", B, "--role", "editor"]);
    // The zones are restricted to ministry A.
    let o = run(
        &data,
        &[
            "ingest",
            vector("libpysal/mexico/mexicojoin.shp").to_str().unwrap(),
            "--layer",
            "estados",
            "--ministry",
            A,
            "--access",
            "restricted",
            "--crs",
            "EPSG:4326",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let server = Server::start(&data);
    let base = server.base.clone();
    let csv = vector("libpysal/mexico/mexico.csv");
    let post = |token: &str, meta: Value| {
        upload(
            &base,
            Some(token),
            reqwest::Method::POST,
            "/api/layers",
            &csv,
            Some(meta),
        )
    };

    // Another ministry cannot borrow A's restricted polygons.
    let (s, v, _) = post(
        &be,
        json!({"id": "pib-b", "ministry": B, "join": "estados:NAME"}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string()
            .contains("zone layer 'estados' does not exist (or you may not see it)"),
        "{v}"
    );
    // Options that need a join, a bad `as`, a malformed join.
    for (meta, want) in [
        (json!({"id": "pib", "key": "State"}), "go with join"),
        (
            json!({"id": "pib", "join": "estados:NAME", "as": "circulos"}),
            "\\\"points\\\" or \\\"polygons\\\"",
        ),
        (
            json!({"id": "pib", "join": "estadosNAME"}),
            "ZONE_LAYER:ZONE_FIELD",
        ),
        (
            json!({"id": "pib", "join": {"layer": "estados"}}),
            "metadata is not valid",
        ),
    ] {
        let (s, v, _) = post(&ae, meta.clone());
        assert_eq!(s, 400, "{meta}: {v}");
        assert!(v.to_string().contains(want), "{meta}: {v}");
    }
    // The metadata part is bounded (a huge crosswalk): refused, nothing read further.
    let huge: serde_json::Map<String, Value> = (0..30_000)
        .map(|i| {
            (
                format!("nombre de colonia escrito a mano {i}"),
                json!(format!("Colonia oficial {i}")),
            )
        })
        .collect();
    let (s, v, _) = post(
        &ae,
        json!({"id": "pib-z", "join": "estados:NAME", "crosswalk": huge}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string()
            .contains("metadata part is larger than 64 KiB"),
        "{v}"
    );
    // A zone field or coordinate column that does not exist fails the job with why.
    for (id, meta, want) in [
        (
            "pib-x",
            json!({"join": "estados:NOMBRE"}),
            "'NOMBRE' is not a field of zone layer 'estados'",
        ),
        (
            "pib-y",
            json!({"lon": "longitud", "lat": "latitud"}),
            "'longitud' is not a column",
        ),
    ] {
        let mut meta = meta;
        meta["id"] = json!(id);
        let (s, v, loc) = post(&ae, meta);
        assert_eq!(s, 202, "{v}");
        let job = wait_job(&base, &ae, &loc.unwrap());
        assert_eq!(job["state"], "failed", "{job}");
        assert!(job["error"].to_string().contains(want), "{job}");
        assert!(!data.join("layers").join(id).join("CURRENT").exists());
    }
    // The join with a crosswalk in the metadata: every state placed.
    let (s, v, loc) = post(
        &ae,
        json!({"id": "pib", "title": "PIB per cápita", "join": {"layer": "estados", "field": "NAME"}, "key": ["State"],
               "crosswalk": {"Baja California": "Baja California Norte", "Coahuila": "Coahuila De Zaragoza",
                             "Michoacan": "Michoacan de Ocampo", "Quertaro": "Queretaro de Arteaga", "Veracruz": "Veracruz-Llave"}}),
    );
    assert_eq!(s, 202, "{v}");
    let job = wait_job(&base, &ae, &loc.unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    let j = &job["result"]["join"];
    assert_eq!(
        (j["matched"].as_u64(), j["crosswalk_used"].as_u64()),
        (Some(32), Some(5)),
        "{job}"
    );
    let (s, _) = send(
        &base,
        Some(&ae),
        reqwest::Method::GET,
        "/collections/pib/items?limit=1",
        None,
    );
    assert_eq!(s, 200);
    // A new version of the zones uploaded over the API: the joined table follows it.
    let gj = tmp.path().join("estados.geojson");
    ogr2ogr(&[
        "-f",
        "GeoJSON",
        gj.to_str().unwrap(),
        vector("libpysal/mexico/mexicojoin.shp").to_str().unwrap(),
        "-a_srs",
        "EPSG:4326",
    ]);
    let (s, v, loc) = upload(
        &base,
        Some(&ae),
        reqwest::Method::PUT,
        "/api/layers/estados/data",
        &gj,
        None,
    );
    assert_eq!(s, 202, "{v}");
    let job = wait_job(&base, &ae, &loc.unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["rejoined"],
        json!([{"layer": "pib", "version": 2}]),
        "{job}"
    );
    let (s, v) = send(
        &base,
        Some(&ae),
        reqwest::Method::GET,
        "/api/layers/pib/versions",
        None,
    );
    assert_eq!(s, 200);
    assert!(
        v.to_string()
            .contains("joined again: zone layer estados has version 2 (was 1)"),
        "{v}"
    );
}
