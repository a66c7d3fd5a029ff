//! Ingest cases built at test time with independent tools (ogr2ogr writes the files):
//! Mexican CRSs at Monterrey, DBF encodings, CSV variants, every kind of bad input, and
//! atomic publishing (a failed or killed ingest leaves the previous version served).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// Points and a polygon around Monterrey's centre, with Spanish names.
fn monterrey_geojson(dir: &Path) -> (PathBuf, Vec<(f64, f64)>) {
    let names = [
        "Parque Fundidora",
        "Niños Héroes",
        "Macroplaza",
        "Cerro de la Silla",
        "Río Santa Catarina",
        "Colonia Obispado",
    ];
    let mut feats = Vec::new();
    let mut pts = Vec::new();
    for i in 0..60 {
        let lon = -100.45 + 0.005 * (i % 10) as f64 + 0.000123 * i as f64;
        let lat = 25.60 + 0.004 * (i / 10) as f64 + 0.000077 * i as f64;
        pts.push((lon, lat));
        feats.push(
            json!({"type": "Feature", "properties": {"nombre": names[i % names.len()], "n": i},
            "geometry": {"type": "Point", "coordinates": [lon, lat]}}),
        );
    }
    let p = dir.join("parques.geojson");
    fs::write(
        &p,
        serde_json::to_vec(&json!({"type": "FeatureCollection", "features": feats})).unwrap(),
    )
    .unwrap();
    (p, pts)
}

#[test]
fn mexican_crss_round_trip_at_monterrey() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, pts) = monterrey_geojson(tmp.path());
    for (code, fmt) in [
        ("6372", "zip"),
        ("6369", "gpkg"),
        ("4487", "shp"),
        ("32614", "gpkg"),
        ("4267", "shp"),
    ] {
        let dir = tmp.path().join(format!("c{code}"));
        fs::create_dir_all(&dir).unwrap();
        let srs = format!("EPSG:{code}");
        let input = match fmt {
            "gpkg" => {
                let p = dir.join("parques.gpkg");
                ogr2ogr(&[
                    "-f",
                    "GPKG",
                    p.to_str().unwrap(),
                    src.to_str().unwrap(),
                    "-t_srs",
                    &srs,
                ]);
                p
            }
            _ => {
                let shp = dir.join("shp");
                fs::create_dir_all(&shp).unwrap();
                ogr2ogr(&[
                    "-f",
                    "ESRI Shapefile",
                    shp.join("parques.shp").to_str().unwrap(),
                    src.to_str().unwrap(),
                    "-t_srs",
                    &srs,
                    "-lco",
                    "ENCODING=CP1252",
                ]);
                if fmt == "zip" {
                    let z = dir.join("parques.zip");
                    zip_dir(&shp, &z, "entrega/datos/");
                    z
                } else {
                    shp.join("parques.shp")
                }
            }
        };
        let data = tmp.path().join(format!("data{code}"));
        let m = ingest_ok(&data, &input, "parques", &["--title", "Parques"]);
        assert_eq!(m["feature_count"], 60, "{code}");
        assert_eq!(
            m["source_crs"]["epsg"].as_u64(),
            Some(code.parse().unwrap()),
            "{code}: {}",
            m["source_crs"]
        );
        let feats = stored_features(&data, "parques");
        for (i, f) in feats.iter().enumerate() {
            let c = &f["geometry"]["coordinates"];
            let (x, y) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
            let (lon, lat) = pts[i];
            // NAD27 -> WGS 84 is not a pure round trip of one operation; others are.
            let tol = if code == "4267" { 1e-5 } else { 1e-7 };
            assert!(
                (x - lon).abs() < tol && (y - lat).abs() < tol,
                "EPSG:{code} feature {i}: ({x},{y}) vs ({lon},{lat})"
            );
        }
        let names: Vec<&str> = feats
            .iter()
            .map(|f| f["properties"]["nombre"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"Niños Héroes") && names.contains(&"Río Santa Catarina"),
            "{code}: {names:?}"
        );
    }
}

/// Removes the .cpg and zeroes the DBF's LDID: a DBF that declares no encoding.
fn strip_encoding(shp_dir: &Path, stem: &str) {
    let _ = fs::remove_file(shp_dir.join(format!("{stem}.cpg")));
    let dbf = shp_dir.join(format!("{stem}.dbf"));
    let mut b = fs::read(&dbf).unwrap();
    b[29] = 0;
    fs::write(&dbf, b).unwrap();
}

#[test]
fn undeclared_dbf_encoding_cp1252_or_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = monterrey_geojson(tmp.path());
    for enc in ["CP1252", "UTF-8"] {
        let shp = tmp.path().join(enc);
        fs::create_dir_all(&shp).unwrap();
        ogr2ogr(&[
            "-f",
            "ESRI Shapefile",
            shp.join("p.shp").to_str().unwrap(),
            src.to_str().unwrap(),
            "-t_srs",
            "EPSG:6372",
            "-lco",
            &format!("ENCODING={enc}"),
        ]);
        strip_encoding(&shp, "p");
        let data = tmp.path().join(format!("d{enc}"));
        let m = ingest_ok(&data, &shp.join("p.shp"), "p", &[]);
        let names: Vec<String> = stored_features(&data, "p")
            .iter()
            .map(|f| f["properties"]["nombre"].as_str().unwrap().to_string())
            .collect();
        assert!(
            names.contains(&"Niños Héroes".to_string()),
            "{enc}: {names:?}"
        );
        let notes = m["report"]["notes"].to_string();
        assert_eq!(notes.contains("CP1252"), enc == "CP1252", "{enc}: {notes}");
    }
}

#[test]
fn csv_variants_spanish_columns_semicolons_cp1252() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = tmp.path().join("escuelas.csv");
    let text = "nombre;longitud;latitud;alumnos;activa\nEscuela Benito Juárez;-100.3101;25.6701;340;true\nSecundaria Técnica 5;-100.2902;25.6803;512;false\n";
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(text);
    fs::write(&csv, &bytes).unwrap();
    let m = ingest_ok(&data, &csv, "escuelas", &[]);
    assert_eq!(m["feature_count"], 2);
    assert!(m["report"]["notes"].to_string().contains("CP1252"));
    let feats = stored_features(&data, "escuelas");
    assert_eq!(feats[0]["properties"]["nombre"], "Escuela Benito Juárez");
    assert_eq!(
        feats[0]["geometry"]["coordinates"],
        json!([-100.3101, 25.6701])
    );
    let types = schema_types(&m);
    assert!(
        types.contains(&"alumnos:int".to_string()) && types.contains(&"activa:bool".to_string()),
        "{types:?}"
    );
    assert!(
        !types.iter().any(|t| t.starts_with("longitud")),
        "{types:?}"
    );
}

#[test]
fn csv_bad_coordinates_name_the_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = tmp.path().join("r.csv");
    fs::write(
        &csv,
        "id,lon,lat\n1,-100.31,25.67\n2,abc,25.6\n3,-100.2,\n4,-100.3,25.7\n",
    )
    .unwrap();
    let err = ingest_err(&data, &csv, "r", &[]);
    assert!(
        err.contains("2 row(s)") && err.contains("lines 3, 4") && err.contains("--skip-invalid"),
        "{err}"
    );
    let m = ingest_ok(&data, &csv, "r", &["--skip-invalid"]);
    assert_eq!(m["feature_count"], 2);
    assert_eq!(m["report"]["problems"]["bad_coordinates"]["count"], 2);
    let csv = tmp.path().join("nocoords.csv");
    fs::write(&csv, "nombre,colonia\nA,Centro\n").unwrap();
    let err = ingest_err(&data, &csv, "n", &[]);
    assert!(err.contains("longitud") && err.contains("WKT"), "{err}");
}

#[test]
fn kmz_is_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let kmz = tmp.path().join("tour.kmz");
    let f = fs::File::create(&kmz).unwrap();
    let mut z = zip::ZipWriter::new(f);
    z.start_file("doc.kml", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(&fs::read(vector("kml/using_the_cdata_element.kml")).unwrap())
        .unwrap();
    z.finish().unwrap();
    let m = ingest_ok(&tmp.path().join("data"), &kmz, "tour", &[]);
    assert_eq!(m["feature_count"], 1);
}

fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, bytes) in entries {
        z.start_file(
            *name,
            zip::write::SimpleFileOptions::default().large_file(bytes.len() > 1 << 30),
        )
        .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn bad_inputs_get_clear_errors_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let t = tmp.path();
    let check = |src: PathBuf, extra: &[&str], needle: &str| {
        let err = ingest_err(&data, &src, "capa", extra);
        assert!(
            err.contains(needle),
            "{}: expected '{needle}' in: {err}",
            src.display()
        );
        assert!(!data.join("layers/capa").exists(), "{}", src.display());
        assert_eq!(
            fs::read_dir(data.join("tmp")).unwrap().count(),
            0,
            "staging left behind by {}",
            src.display()
        );
    };
    fs::write(t.join("notas.txt"), "hola").unwrap();
    check(t.join("notas.txt"), &[], "not a supported geodata file");
    fs::write(t.join("roto.geojson"), "{\"type\": \"FeatureColl").unwrap();
    check(t.join("roto.geojson"), &[], "cannot be read as GEOJSON");
    fs::write(t.join("roto.zip"), b"PK\x03\x04 this is not really a zip").unwrap();
    check(t.join("roto.zip"), &[], "not a readable zip archive");
    make_zip(
        &t.join("evil.zip"),
        &[("../../evil.shp", b"x"), ("ok.txt", b"y")],
    );
    check(t.join("evil.zip"), &[], "path traversal");
    let zeros = vec![0u8; 64 << 20];
    make_zip(&t.join("bomb.zip"), &[("a.csv", &zeros)]);
    check(t.join("bomb.zip"), &[], "zip bomb");
    make_zip(&t.join("nada.zip"), &[("leeme.txt", b"nada")]);
    check(t.join("nada.zip"), &[], "contains no geodata file");
    // Shapefile parts missing.
    let cities = vector("geopandas/naturalearth_cities");
    for (skip, needle) in [
        ("shx", ".shx file is missing"),
        ("dbf", ".dbf file (attributes) is missing"),
    ] {
        let d = t.join(format!("sin-{skip}"));
        fs::create_dir_all(&d).unwrap();
        for e in fs::read_dir(&cities).unwrap() {
            let p = e.unwrap().path();
            if p.extension().unwrap() != skip {
                fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            }
        }
        check(d.join("naturalearth_cities.shp"), &[], needle);
    }
    check(
        vector("spdata/cycle_hire.geojson"),
        &["--crs", "EPSG:999999"],
        "unknown CRS",
    );
    check(
        vector("spdata/cycle_hire.geojson"),
        &["--id-field", "nope"],
        "is not a field",
    );
    check(
        vector("spdata/cycle_hire.geojson"),
        &["--source-layer", "nope"],
        "not found",
    );
    check(t.join("no-existe.shp"), &[], "cannot read");
    let err = ingest_err(
        &data,
        &vector("spdata/cycle_hire.geojson"),
        "Capa Mala",
        &[],
    );
    assert!(err.contains("invalid layer id"), "{err}");
}

#[test]
fn unzipped_size_cap_counts_real_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("datahub.toml");
    fs::write(&cfg, "max_unzipped_mb = 1\n").unwrap();
    // Incompressible-ish text: the ratio check does not fire, the size cap does.
    let mut text = String::from("lon,lat\n");
    let mut x: u64 = 7;
    while text.len() < 3 << 20 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        text.push_str(&format!(
            "-100.{:06},25.{:06}\n",
            x % 1_000_000,
            (x >> 20) % 1_000_000
        ));
    }
    let z = tmp.path().join("big.zip");
    make_zip(&z, &[("big.csv", text.as_bytes())]);
    let data = tmp.path().join("data");
    let err = ingest_err(&data, &z, "big", &["--config", cfg.to_str().unwrap()]);
    assert!(err.contains("more than the limit"), "{err}");
    let o = run(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "ingest",
            z.to_str().unwrap(),
            "--layer",
            "big",
            "--ministry",
            "pruebas",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    // Unknown config keys are refused, not ignored.
    fs::write(&cfg, "max_unzip_mb = 1\n").unwrap();
    let o = run(&data, &["--config", cfg.to_str().unwrap(), "layers"]);
    assert!(
        !o.status.success() && stderr(&o).contains("unknown field"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn id_field_gives_stable_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = tmp.path().join("r.csv");
    fs::write(&csv, "folio,lon,lat\n900,-100.31,25.67\n7,-100.30,25.68\n").unwrap();
    ingest_ok(&data, &csv, "r", &["--id-field", "folio"]);
    let ids: Vec<i64> = stored_features(&data, "r")
        .iter()
        .map(|f| f["properties"]["__datahub_fid"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![7, 900]);
    fs::write(
        &csv,
        "folio,lon,lat\n900,-100.31,25.67\n900,-100.30,25.68\n",
    )
    .unwrap();
    let err = ingest_err(&data, &csv, "r", &["--id-field", "folio"]);
    assert!(err.contains("not unique") && err.contains("900"), "{err}");
}

#[test]
fn versions_retention_and_failed_reingest_keeps_current() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let good = vector("spdata/cycle_hire.geojson");
    for _ in 0..4 {
        ingest_ok(&data, &good, "bicis", &["--keep-versions", "3"]);
    }
    let o = run(&data, &["versions", "bicis", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let nums: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![2, 3, 4]);
    // A failing re-ingest: version 4 stays current, nothing left in staging.
    let bad = tmp.path().join("bad.csv");
    fs::write(&bad, "lon,lat\nx,y\n").unwrap();
    ingest_err(&data, &bad, "bicis", &[]);
    assert_eq!(
        fs::read_to_string(data.join("layers/bicis/CURRENT"))
            .unwrap()
            .trim(),
        "4"
    );
    assert_eq!(fs::read_dir(data.join("tmp")).unwrap().count(), 0);
    let o = run(&data, &["layers", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["version"], 4);
    assert_eq!(v[0]["feature_count"], 742);
}

#[test]
fn killed_ingest_leaves_previous_version_and_is_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("spdata/cycle_hire.geojson"), "capa", &[]);
    // A large generated CSV so the ingest is still running when it is killed.
    let big = tmp.path().join("big.csv");
    let mut f = std::io::BufWriter::new(fs::File::create(&big).unwrap());
    writeln!(f, "lon,lat,nombre").unwrap();
    for i in 0..1_500_000u64 {
        writeln!(
            f,
            "{:.6},{:.6},punto {i}",
            -100.45 + (i % 1000) as f64 * 0.0003,
            25.6 + (i / 1000) as f64 * 0.0001
        )
        .unwrap();
    }
    drop(f);
    let mut child = bin_for(&data)
        .args([
            "ingest",
            big.to_str().unwrap(),
            "--layer",
            "capa",
            "--ministry",
            "pruebas",
        ])
        .env("DATAHUB_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until its staging dir exists, then kill it outright.
    let t0 = std::time::Instant::now();
    while fs::read_dir(data.join("tmp")).unwrap().count() == 0 {
        assert!(t0.elapsed().as_secs() < 30, "ingest never started staging");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        fs::read_to_string(data.join("layers/capa/CURRENT"))
            .unwrap()
            .trim(),
        "1"
    );
    // The next command cleans what the killed process left.
    let o = run(&data, &["layers", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["feature_count"], 742);
    assert_eq!(fs::read_dir(data.join("tmp")).unwrap().count(), 0);
}
