#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

//! Vector tiles from the real server, decoded by two independent decoders (GDAL's MVT
//! driver and @mapbox/vector-tile in Node) and checked against brute force.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Web Mercator tile bounds in lon/lat, grown by `buffer`/4096 of the tile.
fn tile_bounds(z: u32, x: u32, y: u32, buffer: f64) -> [f64; 4] {
    let n = f64::from(1u32 << z);
    let pad = buffer / 4096.0;
    let lon = |xx: f64| xx / n * 360.0 - 180.0;
    let lat = |yy: f64| {
        (std::f64::consts::PI * (1.0 - 2.0 * yy / n))
            .sinh()
            .atan()
            .to_degrees()
    };
    [
        lon(f64::from(x) - pad),
        lat(f64::from(y) + 1.0 + pad),
        lon(f64::from(x) + 1.0 + pad),
        lat(f64::from(y) - pad),
    ]
}

fn tile_of(z: u32, lon: f64, lat: f64) -> (u32, u32) {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let r = lat.to_radians();
    let y =
        ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor() as u32;
    (x, y)
}

/// Lon/lat to global tile units at zoom z (4096 per tile, y down).
fn units(z: u32, lon: f64, lat: f64) -> (f64, f64) {
    let n = f64::from(1u32 << z) * 4096.0;
    let x = (lon + 180.0) / 360.0 * n;
    let y = (1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * n;
    (x, y)
}

/// Distance (tile units) from a point to the nearest segment of a GeoJSON geometry.
fn distance_units(z: u32, p: (f64, f64), g: &Value) -> f64 {
    fn rings(v: &Value, out: &mut Vec<Vec<(f64, f64)>>) {
        match v {
            Value::Array(a) if !a.is_empty() && a[0].is_array() && a[0][0].is_number() => out.push(
                a.iter()
                    .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
                    .collect(),
            ),
            Value::Array(a) => a.iter().for_each(|x| rings(x, out)),
            _ => {}
        }
    }
    let mut rs = Vec::new();
    rings(&g["coordinates"], &mut rs);
    let p = units(z, p.0, p.1);
    let mut best = f64::MAX;
    for r in rs {
        let r: Vec<(f64, f64)> = r.into_iter().map(|(x, y)| units(z, x, y)).collect();
        for w in r.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = dx * dx + dy * dy;
            let t = if len2 == 0.0 {
                0.0
            } else {
                (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
            };
            let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
            best = best.min(((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt());
        }
    }
    best
}

struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

fn fetch(server: &Server, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let client = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    let mut req = client.get(format!("{}{path}", server.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    Fetched {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().unwrap().to_vec(),
    }
}

/// GDAL's MVT driver's view of one layer of a tile, in lon/lat.
fn gdal_decode(dir: &Path, bytes: &[u8], z: u32, x: u32, y: u32, layer: &str) -> Value {
    let f = dir.join(format!("g-{z}-{x}-{y}.mvt"));
    fs::write(&f, bytes).unwrap();
    let oo = [format!("X={x}"), format!("Y={y}"), format!("Z={z}")];
    // CLIP=NO: GDAL would otherwise cut the buffer we deliberately include.
    ogr_geojson(
        &f.to_string_lossy(),
        Some(layer),
        true,
        &[
            "-oo", &oo[0], "-oo", &oo[1], "-oo", &oo[2], "-oo", "CLIP=NO",
        ],
    )
}

/// Features of the stored layer whose geometry intersects `b` (GDAL's spatial filter).
fn brute_force(data: &Path, layer: &str, b: [f64; 4]) -> BTreeMap<i64, Value> {
    let spat = b.map(|v| v.to_string());
    let v = ogr_geojson(
        &current_fgb(data, layer).to_string_lossy(),
        None,
        false,
        &["-spat", &spat[0], &spat[1], &spat[2], &spat[3]],
    );
    v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["properties"]["__datahub_fid"].as_i64().unwrap(),
                f.clone(),
            )
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = run(&data, &["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    (tmp, data)
}

#[test]
fn tiles_match_brute_force_in_two_decoders() {
    let (tmp, data) = setup();
    let server = Server::start(&data);
    let mut checked = 0;
    for z in [11u32, 12, 13, 14] {
        let (cx, cy) = tile_of(z, -100.31, 25.69);
        for (x, y) in [(cx, cy), (cx + 1, cy), (cx, cy + 1)] {
            for layer in ["colonias", "reportes", "red-pluvial"] {
                let t = fetch(&server, &format!("/tiles/{layer}/{z}/{x}/{y}.mvt"), &[]);
                let want = brute_force(&data, layer, tile_bounds(z, x, y, 64.0));
                if want.is_empty() {
                    assert_eq!(t.status, 204, "{layer} {z}/{x}/{y}");
                    continue;
                }
                assert_eq!(t.status, 200, "{layer} {z}/{x}/{y}");
                assert_eq!(
                    t.headers["content-type"],
                    "application/vnd.mapbox-vector-tile"
                );
                let node = node_decode(tmp.path(), &t.body, z, x, y);
                let nl = &node[layer];
                assert_eq!(nl["version"], 2);
                assert_eq!(nl["extent"], 4096);
                let feats = nl["features"].as_array().unwrap();
                let ids: BTreeSet<i64> = feats.iter().map(|f| f["id"].as_i64().unwrap()).collect();
                assert_eq!(
                    ids,
                    want.keys().copied().collect::<BTreeSet<_>>(),
                    "{layer} {z}/{x}/{y}"
                );
                // One tile unit, in degrees of longitude (latitude units are smaller here).
                let unit = 360.0 / f64::from(1u32 << z) / 4096.0;
                for f in feats {
                    let src = &want[&f["id"].as_i64().unwrap()];
                    // Attributes round-trip with their types.
                    for (k, v) in src["properties"].as_object().unwrap() {
                        if k == "__datahub_fid" || v.is_null() {
                            continue;
                        }
                        let got = &f["properties"][k];
                        match v {
                            Value::Number(n) if n.is_f64() => assert!(
                                (got.as_f64().unwrap() - n.as_f64().unwrap()).abs() < 1e-9,
                                "{k}: {got} vs {v}"
                            ),
                            // GDAL reads FlatGeobuf dates as datetimes ("…T00:00:00").
                            Value::String(sv) if sv.ends_with("T00:00:00") => {
                                assert_eq!(
                                    got.as_str().unwrap(),
                                    sv.trim_end_matches("T00:00:00"),
                                    "{layer} {k}"
                                )
                            }
                            _ => assert_eq!(got, v, "{layer} {k}"),
                        }
                    }
                    if layer == "reportes" {
                        let (a, b) = (coords(&f["geometry"])[0], coords(&src["geometry"])[0]);
                        assert!(
                            (a.0 - b.0).abs() <= unit && (a.1 - b.1).abs() <= unit,
                            "{a:?} vs {b:?}"
                        );
                    }
                    if layer != "reportes" {
                        // Every vertex lies within one pixel (16 of 4096 units) of the
                        // source geometry: clipping adds points on its edges, simplification
                        // keeps source vertices.
                        for (lon, lat) in coords(&f["geometry"]) {
                            let (ux, uy) = units(z, lon, lat);
                            let (lx, ly) = (ux - f64::from(x) * 4096.0, uy - f64::from(y) * 4096.0);
                            let on_clip_edge =
                                |v: f64| (v + 64.0).abs() <= 1.0 || (v - 4160.0).abs() <= 1.0;
                            if on_clip_edge(lx) || on_clip_edge(ly) {
                                continue; // a vertex the clipping made
                            }
                            let d = distance_units(z, (lon, lat), &src["geometry"]);
                            assert!(d <= 16.0, "{layer} {z}/{x}/{y}: vertex {d} units off");
                        }
                    }
                    if layer == "colonias" {
                        // MVT winding: each polygon's first ring has positive area (y down).
                        let raw = f["raw"].as_array().unwrap();
                        let ring = raw[0].as_array().unwrap();
                        let mut s = 0i64;
                        for i in 0..ring.len() {
                            let (p, q) = (&ring[i], &ring[(i + 1) % ring.len()]);
                            s += p[0].as_i64().unwrap() * q[1].as_i64().unwrap()
                                - q[0].as_i64().unwrap() * p[1].as_i64().unwrap();
                        }
                        assert!(s > 0, "exterior ring must be clockwise on screen");
                    }
                }
                // GDAL agrees on the features and their ids.
                let g = gdal_decode(tmp.path(), &t.body, z, x, y, layer);
                let gf = g["features"].as_array().unwrap();
                assert_eq!(gf.len(), feats.len(), "GDAL {layer} {z}/{x}/{y}");
                if layer == "reportes" {
                    let tipos: BTreeSet<&str> = gf
                        .iter()
                        .map(|f| f["properties"]["tipo"].as_str().unwrap())
                        .collect();
                    assert!(!tipos.is_empty());
                    assert!(gf.iter().all(|f| f["properties"]["atendido"].is_boolean()
                        || f["properties"]["atendido"].is_number()));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} non-empty tiles checked");
}

#[test]
fn polygons_are_valid_for_gdal() {
    let (tmp, data) = setup();
    let server = Server::start(&data);
    for z in [10u32, 12, 14] {
        let (x, y) = tile_of(z, -100.30, 25.70);
        let t = fetch(&server, &format!("/tiles/colonias/{z}/{x}/{y}.mvt"), &[]);
        assert_eq!(t.status, 200);
        let f = tmp.path().join(format!("v{z}.mvt"));
        fs::write(&f, &t.body).unwrap();
        let o = Command::new("ogrinfo")
            .args([
                "-ro",
                "-q",
                "-dialect",
                "SQLite",
                "-sql",
                "SELECT COUNT(*) AS n, SUM(ST_IsValid(geometry)) AS valid FROM colonias",
            ])
            .arg(&f)
            .args([
                "-oo",
                &format!("X={x}"),
                "-oo",
                &format!("Y={y}"),
                "-oo",
                &format!("Z={z}"),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let n: Vec<i64> = text
            .lines()
            .filter_map(|l| l.split('=').nth(1))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(n.len(), 2, "{text} {}", String::from_utf8_lossy(&o.stderr));
        assert!(
            n[0] > 0 && n[0] == n[1],
            "z{z}: {} of {} polygons valid",
            n[1],
            n[0]
        );
    }
}

#[test]
fn composite_tilejson_headers_and_errors() {
    let (tmp, data) = setup();
    let server = Server::start(&data);
    let (x, y) = tile_of(12, -100.31, 25.69);
    let t = fetch(
        &server,
        &format!("/tiles/colonias,reportes,red-pluvial/12/{x}/{y}.mvt"),
        &[],
    );
    assert_eq!(t.status, 200);
    let node = node_decode(tmp.path(), &t.body, 12, x, y);
    let names: BTreeSet<&str> = node
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["colonias", "reportes", "red-pluvial"])
    );
    // gzip, ETag, 304.
    let gz = fetch(
        &server,
        &format!("/tiles/reportes/12/{x}/{y}.mvt"),
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut raw).unwrap();
    let plain = fetch(&server, &format!("/tiles/reportes/12/{x}/{y}.mvt"), &[]);
    assert_eq!(raw, plain.body);
    assert!(plain.headers.get("content-encoding").is_none());
    // Accept-Encoding read per RFC 9110: q=0 refuses gzip, `*` takes it.
    for (accept, gzipped) in [
        ("gzip;q=0, identity", false),
        ("br, *;q=0", false),
        ("deflate, *", true),
        ("GZIP;q=0.5", true),
    ] {
        let t = fetch(
            &server,
            &format!("/tiles/reportes/12/{x}/{y}.mvt"),
            &[("accept-encoding", accept)],
        );
        assert_eq!(t.status, 200, "{accept}");
        assert_eq!(
            t.headers.get("content-encoding").is_some(),
            gzipped,
            "{accept}"
        );
        assert_eq!(
            if gzipped { &gz.body } else { &plain.body },
            &t.body,
            "{accept}"
        );
    }
    let etag = plain.headers["etag"].to_str().unwrap().to_string();
    assert!(plain.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let again = fetch(
        &server,
        &format!("/tiles/reportes/12/{x}/{y}.mvt"),
        &[("if-none-match", &etag)],
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // Empty tile: 204.
    assert_eq!(
        fetch(&server, "/tiles/reportes/12/0/0.mvt", &[]).status,
        204
    );
    // TileJSON 3.0.0 with forwarded host/proto.
    let tj = fetch(
        &server,
        "/tiles/colonias,reportes.json",
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "datos.monterrey.gob.mx"),
        ],
    );
    assert_eq!(tj.status, 200);
    let tj: Value = serde_json::from_slice(&tj.body).unwrap();
    assert_eq!(tj["tilejson"], "3.0.0");
    assert_eq!(
        tj["tiles"][0],
        "https://datos.monterrey.gob.mx/tiles/colonias,reportes/{z}/{x}/{y}.mvt"
    );
    assert_eq!(tj["minzoom"], 0);
    assert!(tj["maxzoom"].as_u64().unwrap() >= 14);
    let b: Vec<f64> = floats(&tj["bounds"]);
    assert!(
        (b[0] + 100.42).abs() < 0.01 && (b[3] - 25.78).abs() < 0.01,
        "{b:?}"
    );
    let c = tj["center"].as_array().unwrap();
    assert!(b[0] < c[0].as_f64().unwrap() && c[0].as_f64().unwrap() < b[2]);
    let vl = tj["vector_layers"].as_array().unwrap();
    assert_eq!(vl.len(), 2);
    assert_eq!(vl[1]["id"], "reportes");
    assert_eq!(vl[1]["fields"]["atendido"], "Boolean");
    assert_eq!(vl[1]["fields"]["folio"], "Number");
    assert_eq!(vl[1]["fields"]["tipo"], "String");
    assert!(
        tj["attribution"].is_string() && tj["name"].is_string() && tj["description"].is_string()
    );
    // Bad requests.
    for (path, status) in [
        ("/tiles/reportes/23/0/0.mvt", 400),
        ("/tiles/reportes/3/8/0.mvt", 400),
        ("/tiles/reportes/3/0/9.mvt", 400),
        ("/tiles/reportes/a/0/0.mvt", 400),
        ("/tiles/reportes/3/-1/0.mvt", 400),
        ("/tiles/nope/3/0/0.mvt", 404),
        ("/tiles/reportes,nope/3/0/0.mvt", 404),
        ("/tiles/nope.json", 404),
        ("/tiles/reportes/3/0/0.png", 404),
    ] {
        let r = fetch(&server, path, &[]);
        assert_eq!(r.status, status, "{path}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(!v["description"].as_str().unwrap().is_empty(), "{path}");
    }
}

fn points_csv(path: &Path, n: usize, lon0: f64, lat0: f64, step: f64) {
    let mut s = String::from("lon,lat,n\n");
    let side = (n as f64).sqrt().ceil() as usize;
    for i in 0..n {
        s.push_str(&format!(
            "{:.7},{:.7},{i}\n",
            lon0 + step * (i % side) as f64,
            lat0 + step * (i / side) as f64
        ));
    }
    fs::write(path, s).unwrap();
}

#[test]
fn new_version_invalidates_cached_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = tmp.path().join("a.csv");
    points_csv(&a, 100, -100.32, 25.66, 0.0005);
    ingest_ok(&data, &a, "capa", &[]);
    let server = Server::start(&data);
    let (x, y) = tile_of(12, -100.32, 25.66);
    let path = format!("/tiles/capa/12/{x}/{y}.mvt");
    let t1 = fetch(&server, &path, &[]);
    assert_eq!(
        node_decode(tmp.path(), &t1.body, 12, x, y)["capa"]["features"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let b = tmp.path().join("b.csv");
    points_csv(&b, 9, -100.32, 25.66, 0.0005);
    ingest_ok(&data, &b, "capa", &[]);
    let t0 = std::time::Instant::now();
    loop {
        let t2 = fetch(&server, &path, &[]);
        let n = node_decode(tmp.path(), &t2.body, 12, x, y)["capa"]["features"]
            .as_array()
            .unwrap()
            .len();
        if n == 9 {
            assert_ne!(t2.headers["etag"], t1.headers["etag"]);
            break;
        }
        assert_eq!(n, 100);
        assert!(
            t0.elapsed().as_secs() < 15,
            "new version never reached the tiles"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn size_cap_thins_with_honest_header() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = tmp.path().join("dense.csv");
    // 120k points 2 m apart: distinct tile units at z14, far over a 200 KB cap.
    points_csv(&csv, 120_000, -100.3199, 25.6601, 0.00002);
    ingest_ok(&data, &csv, "densa", &[]);
    let cfg = tmp.path().join("datahub.toml");
    fs::write(&cfg, "[tiles]\nmax_bytes = 200000\n").unwrap();
    let mut child = bin_for(&data)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "serve",
            "--addr",
            "127.0.0.1:0",
        ])
        .env("DATAHUB_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let server = Server {
        child,
        base: line.trim().trim_start_matches("listening on ").to_string(),
    };
    let (x, y) = tile_of(14, -100.3199, 25.6601);
    let t = fetch(&server, &format!("/tiles/densa/14/{x}/{y}.mvt"), &[]);
    assert_eq!(t.status, 200);
    assert!(t.body.len() <= 200_000, "tile is {} bytes", t.body.len());
    let dropped: usize = t.headers["x-tile-dropped-features"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let node = node_decode(tmp.path(), &t.body, 14, x, y);
    let kept = node["densa"]["features"].as_array().unwrap().len();
    let want = brute_force(&data, "densa", tile_bounds(14, x, y, 64.0)).len();
    assert_eq!(kept + dropped, want, "kept {kept} + dropped {dropped}");
    assert!(kept > 1000, "kept only {kept}");
    // Evenly spread: every quarter of the tile keeps points.
    let mut quads = [0usize; 4];
    for f in node["densa"]["features"].as_array().unwrap() {
        let p = &f["raw"][0][0];
        let q = usize::from(p[0].as_i64().unwrap() >= 2048)
            + 2 * usize::from(p[1].as_i64().unwrap() >= 2048);
        quads[q] += 1;
    }
    let with_data: Vec<usize> = quads.iter().copied().filter(|n| *n > 0).collect();
    assert!(
        with_data.iter().all(|n| *n * 4 > kept / with_data.len()),
        "{quads:?}"
    );
    // A z0 tile of the same layer is small and fast.
    let t0 = std::time::Instant::now();
    let z0 = fetch(&server, "/tiles/densa/0/0/0.mvt", &[]);
    assert_eq!(z0.status, 200);
    assert!(z0.body.len() <= 200_000);
    assert!(t0.elapsed().as_secs() < 5);
}
