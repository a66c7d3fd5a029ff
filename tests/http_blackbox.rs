//! The real binary on a real port: the user story end to end, bbox queries
//! against a brute-force scan, paging, errors, live pick-up of new versions, shutdown.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// parques.zip: 400 points in and around Monterrey, EPSG:6372, CP1252 DBF.
fn parques_zip(dir: &Path) -> std::path::PathBuf {
    let names = [
        "Parque Fundidora",
        "Niños Héroes",
        "Plaza Zaragoza",
        "Parque España",
        "Alameda Mariano Escobedo",
    ];
    let mut feats = Vec::new();
    for i in 0..400 {
        let lon = -100.55 + 0.45 * ((i * 37 % 400) as f64 / 400.0);
        let lat = 25.50 + 0.40 * ((i * 91 % 400) as f64 / 400.0);
        feats.push(json!({"type": "Feature", "properties": {"nombre": format!("{} {i}", names[i % names.len()]), "superficie": i as f64 * 10.5},
            "geometry": {"type": "Point", "coordinates": [lon, lat]}}));
    }
    let src = dir.join("parques.geojson");
    fs::write(
        &src,
        serde_json::to_vec(&json!({"type": "FeatureCollection", "features": feats})).unwrap(),
    )
    .unwrap();
    let shp = dir.join("shp");
    fs::create_dir_all(&shp).unwrap();
    ogr2ogr(&[
        "-f",
        "ESRI Shapefile",
        shp.join("parques.shp").to_str().unwrap(),
        src.to_str().unwrap(),
        "-t_srs",
        "EPSG:6372",
        "-lco",
        "ENCODING=CP1252",
    ]);
    let z = dir.join("parques.zip");
    zip_dir(&shp, &z, "");
    z
}

fn ids_of(fc: &[Value]) -> BTreeSet<i64> {
    fc.iter().map(|f| f["id"].as_i64().unwrap()).collect()
}

fn intersects(e: [f64; 4], b: [f64; 4]) -> bool {
    e[0] <= b[2] && e[2] >= b[0] && e[1] <= b[3] && e[3] >= b[1]
}

#[test]
fn user_story_parques_in_epsg6372() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let z = parques_zip(tmp.path());
    ensure_ministry(&data, "desarrollo-urbano");
    let o = run(
        &data,
        &[
            "ingest",
            z.to_str().unwrap(),
            "--layer",
            "parques",
            "--ministry",
            "desarrollo-urbano",
            "--title",
            "Parques",
            "--access",
            "public",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stdout(&o);
    for needle in [
        "read 400 / stored 400 / repaired 0 / rejected 0",
        "EPSG:6372",
        "bbox lon/lat",
        "time",
    ] {
        assert!(
            summary.contains(needle),
            "summary lacks '{needle}':\n{summary}"
        );
    }
    let server = Server::start(&data);
    let r = reqwest::blocking::get(format!(
        "{}/collections/parques/items?bbox=-100.4,25.6,-100.2,25.8&limit=100",
        server.base
    ))
    .unwrap();
    assert_eq!(r.headers()["content-type"], "application/geo+json");
    let v: Value = r.json().unwrap();
    assert!(v.get("crs").is_none());
    let got = v["features"].as_array().unwrap();
    // Reference: ogr2ogr's own reprojection and spatial filter on the source.
    let reference = ogr_geojson(
        &format!("/vsizip/{}", z.display()),
        None,
        true,
        &[
            "-spat",
            "-100.4",
            "25.6",
            "-100.2",
            "25.8",
            "-spat_srs",
            "EPSG:4326",
        ],
    );
    let want = reference["features"].as_array().unwrap();
    assert!(want.len() > 20 && want.len() <= 100, "{}", want.len());
    assert_eq!(v["numberMatched"].as_u64().unwrap() as usize, want.len());
    assert_eq!(got.len(), want.len());
    let key = |f: &Value| f["properties"]["nombre"].as_str().unwrap().to_string();
    let mut want_by_name = std::collections::HashMap::new();
    for f in want {
        want_by_name.insert(key(f), f["geometry"]["coordinates"].clone());
    }
    for f in got {
        let name = key(f);
        let w = want_by_name
            .get(&name)
            .unwrap_or_else(|| panic!("unexpected feature {name}"));
        let c = &f["geometry"]["coordinates"];
        for k in 0..2 {
            assert!(
                (c[k].as_f64().unwrap() - w[k].as_f64().unwrap()).abs() < 1e-7,
                "{name}: {c} vs {w}"
            );
        }
    }
    assert!(
        got.iter().any(|f| key(f).starts_with("Niños Héroes")),
        "accents lost"
    );
}

#[test]
fn bbox_queries_match_brute_force_and_paging_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = run(&data, &["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    ingest_ok(&data, &vector("spdata/cycle_hire.geojson"), "bicis", &[]);
    ingest_ok(
        &data,
        &vector("geopandas/naturalearth_lowres/naturalearth_lowres.shp"),
        "paises",
        &[],
    );
    let server = Server::start(&data);
    let (s, h) = server.get("/health");
    assert_eq!((s, h["layers"].as_u64()), (200, Some(5)));
    let (_, cols) = server.get("/collections");
    let ids: BTreeSet<String> = cols["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["bicis", "colonias", "paises", "red-pluvial", "reportes"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let (_, c) = server.get("/collections/colonias");
    assert_eq!(c["ministry"], "desarrollo-urbano");
    assert_eq!(c["synthetic"], true);
    assert_eq!(c["count"], 48);

    let cases: [(&str, [f64; 4]); 6] = [
        ("colonias", [-100.4, 25.6, -100.2, 25.8]),
        ("colonias", [-100.33, 25.66, -100.30, 25.69]),
        ("reportes", [-100.35, 25.65, -100.25, 25.72]),
        ("red-pluvial", [-100.3, 25.6, -100.2, 25.7]),
        ("bicis", [-0.2, 51.49, -0.1, 51.52]),
        ("paises", [-120.0, 10.0, -80.0, 35.0]),
    ];
    for (layer, b) in cases {
        // GDAL's spatial filter is the reference: geometry intersects the box (not
        // merely its bounding box).
        let spat: Vec<String> = b.iter().map(|x| x.to_string()).collect();
        let stored = ogr_geojson(
            &current_fgb(&data, layer).to_string_lossy(),
            None,
            false,
            &["-spat", &spat[0], &spat[1], &spat[2], &spat[3]],
        );
        let want: BTreeSet<i64> = stored["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["properties"]["__datahub_fid"].as_i64().unwrap())
            .collect();
        // Envelope-only matching would return more for some of these cases.
        let by_envelope = ogr_geojson(
            &current_fgb(&data, layer).to_string_lossy(),
            None,
            false,
            &[],
        )["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| envelope(&f["geometry"]).is_some_and(|e| intersects(e, b)))
            .count();
        assert!(by_envelope >= want.len());
        assert!(!want.is_empty(), "{layer}: empty case");
        let got = all_pages(
            &server,
            &format!(
                "/collections/{layer}/items?bbox={},{},{},{}&limit=7",
                b[0], b[1], b[2], b[3]
            ),
        );
        let ids: Vec<i64> = got.iter().map(|f| f["id"].as_i64().unwrap()).collect();
        let set: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "{layer}: duplicates across pages");
        assert_eq!(set, want, "{layer} {b:?}");
        // Pages come in id order.
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        for f in &got {
            assert!(f["properties"].get("__datahub_fid").is_none());
            for (x, y) in coords(&f["geometry"]) {
                assert!((-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y));
            }
        }
    }
    // A box crossing the antimeridian (west > east) is the union of its two halves.
    let across = ids_of(&all_pages(
        &server,
        "/collections/paises/items?bbox=177,-20,-177,-15",
    ));
    let mut halves = ids_of(&all_pages(
        &server,
        "/collections/paises/items?bbox=177,-20,180,-15",
    ));
    halves.extend(ids_of(&all_pages(
        &server,
        "/collections/paises/items?bbox=-180,-20,-177,-15",
    )));
    assert!(!across.is_empty());
    assert_eq!(across, halves);
    // The whole layer without bbox, through paging.
    assert_eq!(
        all_pages(&server, "/collections/reportes/items?limit=250").len(),
        600
    );
    let (s, f) = server.get("/collections/colonias/items/5");
    assert_eq!(s, 200);
    assert_eq!(f["id"], 5);
    assert!(f["properties"]["nombre"].is_string());
    let names: Vec<String> = all_pages(&server, "/collections/colonias/items")
        .iter()
        .map(|f| f["properties"]["nombre"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "Tecnológico") && names.iter().any(|n| n == "Niño Artillero"),
        "{names:?}"
    );
}

#[test]
fn errors_are_4xx_with_explanations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("spdata/cycle_hire.geojson"), "bicis", &[]);
    let server = Server::start(&data);
    let cases = [
        ("/collections/nope/items", 404, "does not exist"),
        ("/collections/nope", 404, "does not exist"),
        ("/collections/bicis/items/999999", 404, "does not exist"),
        ("/collections/bicis/items?bbox=a,b,c,d", 400, "numbers"),
        ("/collections/bicis/items?bbox=1,2,3", 400, "4 numbers"),
        (
            "/collections/bicis/items?bbox=-200,0,0,1",
            400,
            "longitudes",
        ),
        ("/collections/bicis/items?limit=0", 400, "limit"),
        ("/collections/bicis/items?limit=10001", 400, "limit"),
        ("/collections/bicis/items?offset=-3", 400, "offset"),
        (
            "/collections/bicis/items?colour=red",
            400,
            "unknown query parameter 'colour'",
        ),
        ("/no/such/path", 404, "no such endpoint"),
    ];
    for (path, status, needle) in cases {
        let (s, body) = server.get(path);
        assert_eq!(s, status, "{path}: {body}");
        assert!(
            body["description"].as_str().unwrap_or("").contains(needle),
            "{path}: {body}"
        );
    }
    // limit=10000 is allowed; offset past the end returns an empty page.
    let (s, v) = server.get("/collections/bicis/items?limit=10000");
    assert_eq!((s, v["numberReturned"].as_u64()), (200, Some(742)));
    let (_, v) = server.get("/collections/bicis/items?offset=5000");
    assert_eq!(
        (v["numberReturned"].as_u64(), v["numberMatched"].as_u64()),
        (Some(0), Some(742))
    );
}

#[test]
fn new_versions_are_served_without_restart_and_sigterm_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("spdata/cycle_hire.geojson"), "capa", &[]);
    let mut server = Server::start(&data);
    let (_, c) = server.get("/collections/capa");
    assert_eq!(
        (c["count"].as_u64(), c["version"].as_u64()),
        (Some(742), Some(1))
    );
    // Another process publishes version 2 while the server runs.
    ingest_ok(&data, &vector("fiona/grenada.geojson"), "capa", &[]);
    let t0 = std::time::Instant::now();
    loop {
        let (_, c) = server.get("/collections/capa");
        if c["version"] == 2 {
            assert_eq!(c["count"], 1);
            break;
        }
        assert!(t0.elapsed().as_secs() < 15, "version 2 never served: {c}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, v) = server.get("/collections/capa/items");
    assert_eq!(v["numberMatched"], 1);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown must exit 0");
}
