//! The data-quality diagnosis against defects injected at test time into real files
//! (GeoNames places of the Monterrey area, Natural Earth countries): each check finds
//! exactly what was injected, nothing in the clean original; CRS hints for projected
//! metres and swapped columns; the reports over HTTP and the CLI.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// (clave, nombre, municipio, fecha, valor, lon, lat) of the GeoNames places in the
/// default expected area (the Monterrey metropolitan area) that name their municipio.
type Row = (i64, String, String, String, String, f64, f64);

fn base() -> Vec<Row> {
    let text = std::fs::read_to_string(testdata().join("perf/rg_cities1000.csv")).unwrap();
    let mut rows = Vec::new();
    for l in text.lines().skip(1) {
        let c: Vec<&str> = l.split(',').collect();
        let (lat, lon): (f64, f64) = (c[0].parse().unwrap(), c[1].parse().unwrap());
        if c[5] == "MX"
            && !c[4].is_empty()
            && (-100.70..=-99.85).contains(&lon)
            && (25.35..=26.10).contains(&lat)
        {
            let i = rows.len() as i64;
            rows.push((
                i + 1,
                c[2].to_string(),
                c[4].to_string(),
                format!("2024-{:02}-{:02}", 1 + i % 12, 1 + (i * 7) % 28),
                (100 + (i * 37) % 50).to_string(),
                lon,
                lat,
            ));
        }
    }
    assert!(rows.len() >= 30, "{}", rows.len());
    rows
}

fn write_csv(path: &Path, rows: &[Row]) {
    let mut s = String::from("clave,nombre,municipio,fecha,valor,lon,lat\n");
    for (k, n, m, f, v, x, y) in rows {
        writeln!(s, "{k},{n},{m},{f},{v},{x},{y}").unwrap();
    }
    std::fs::write(path, s).unwrap();
}

fn diagnosis(summary: &Value) -> Value {
    summary["diagnosis"].clone()
}

/// code (+ field) -> check.
fn checks(d: &Value) -> BTreeMap<String, Value> {
    d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let key = match c["field"].as_str() {
                Some(f) => format!("{}:{f}", c["code"].as_str().unwrap()),
                None => c["code"].as_str().unwrap().to_string(),
            };
            (key, c.clone())
        })
        .collect()
}

fn examples(c: &Value) -> Vec<i64> {
    c["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn ingest_err_text(data: &Path, src: &Path, layer: &str) -> String {
    ingest_err(data, src, layer, &[])
}

#[test]
fn injected_point_defects_are_found_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rows = base();
    let n = rows.len();

    // The clean original: usable; only the catalogue record's gaps.
    let clean = tmp.path().join("limpio.csv");
    write_csv(&clean, &rows);
    let s = ingest_ok(
        &data,
        &clean,
        "limpio",
        &["--title", "Lugares", "--description", "GeoNames"],
    );
    let d = diagnosis(&s);
    assert_eq!(d["grade"], "usable", "{d}");
    for code in checks(&d).keys() {
        assert!(
            code.starts_with("metadata."),
            "clean original flagged: {code}"
        );
    }

    // Defects, each of a different kind, in one file.
    let mut bad = rows.clone();
    for (i, k) in (101..=103).enumerate() {
        bad.push((
            k,
            format!("Sin ubicar {i}"),
            "Monterrey".into(),
            "2024-03-01".into(),
            "120".into(),
            0.0,
            0.0,
        ));
    }
    for r in rows.iter().take(4) {
        bad.push(r.clone()); // exact duplicates (same clave too)
    }
    for (j, r) in rows.iter().skip(4).take(3).enumerate() {
        let mut r = r.clone();
        r.0 = 201 + j as i64; // the same record under a new clave
        bad.push(r);
    }
    for r in bad.iter_mut().skip(10).take(6) {
        // 2024-MM-DD -> DD/MM/2024
        let (y, m, d) = (&r.3[0..4], &r.3[5..7], &r.3[8..10]);
        r.3 = format!("{d}/{m}/{y}");
    }
    for r in bad.iter_mut().skip(20).take(2) {
        r.4 = "-9999".into();
    }
    let mut respelled = Vec::new();
    // Rows 0–6 were copied as duplicates above: respell others.
    let juarez: Vec<usize> = (7..n).filter(|&i| bad[i].2 == "Juarez").collect();
    assert!(juarez.len() >= 3);
    for &i in juarez.iter().take(2) {
        bad[i].2 = "JUAREZ".into();
        respelled.push(bad[i].0);
    }
    let apodaca = (7..n).find(|&i| bad[i].2 == "Apodaca").unwrap();
    bad[apodaca].2 = "Apod.".into();
    respelled.push(bad[apodaca].0);
    let mut unnamed = Vec::new();
    for r in bad.iter_mut().skip(25).take(8) {
        r.1 = String::new();
        unnamed.push(r.0);
    }
    let src = tmp.path().join("defectos.csv");
    write_csv(&src, &bad);
    let s = ingest_ok(
        &data,
        &src,
        "defectos",
        &["--title", "Defectos", "--description", "d"],
    );
    let d = diagnosis(&s);
    let c = checks(&d);
    // Feature ids are the source rows (1-based) here: CSV rows keep their order.
    let zero_ids: Vec<i64> = ((n + 1) as i64..=(n + 3) as i64).collect();
    assert_eq!(c["location.zero_zero"]["count"], 3, "{d}");
    assert_eq!(examples(&c["location.zero_zero"]), zero_ids);
    assert_eq!(c["location.outside_region"]["count"], 3);
    assert_eq!(c["duplicates.exact"]["count"], 4);
    assert_eq!(
        examples(&c["duplicates.exact"]),
        ((n + 4) as i64..=(n + 7) as i64).collect::<Vec<_>>()
    );
    assert_eq!(c["duplicates.same_record"]["count"], 3);
    assert_eq!(
        examples(&c["duplicates.same_record"]),
        ((n + 8) as i64..=(n + 10) as i64).collect::<Vec<_>>()
    );
    assert_eq!(c["attributes.non_unique_id:clave"]["count"], 4);
    assert_eq!(c["attributes.mixed_date_formats:fecha"]["count"], 6);
    assert!(c["attributes.mixed_date_formats:fecha"]["message_es"]
        .as_str()
        .unwrap()
        .contains("DD/MM/AAAA: 6"));
    assert_eq!(c["attributes.out_of_range:valor"]["count"], 2);
    assert_eq!(examples(&c["attributes.out_of_range:valor"]), vec![21, 22]);
    let sp = &c["attributes.inconsistent_spelling:municipio"];
    assert_eq!(sp["count"], 3, "{sp}");
    let msg = sp["message_es"].as_str().unwrap();
    assert!(
        msg.contains("«Juarez» / «JUAREZ»") && msg.contains("«Apodaca» / «Apod.»"),
        "{msg}"
    );
    let inc = &c["attributes.incomplete"];
    assert!(
        inc["message_es"].as_str().unwrap().contains("nombre 1"),
        "{inc}"
    ); // 8 of ~56: 1x %
       // Nothing that was not injected.
    let injected = [
        "location.zero_zero",
        "location.outside_region",
        "duplicates.exact",
        "duplicates.same_record",
        "attributes.non_unique_id:clave",
        "attributes.mixed_date_formats:fecha",
        "attributes.out_of_range:valor",
        "attributes.inconsistent_spelling:municipio",
        "attributes.incomplete",
        // Two date formats in one column: no longer a date column, so also this.
        "attributes.dates_as_text:fecha",
    ];
    for code in c.keys() {
        assert!(
            code.starts_with("metadata.") || injected.contains(&code.as_str()),
            "unexpected {code}: {}",
            c[code]
        );
    }
    assert_ne!(d["grade"], "usable");

    // Swapped columns and projected metres in some rows: rejected, with the cause.
    let to_utm = proj::Proj::new_known_crs("EPSG:4326", "EPSG:32614", None).unwrap();
    let mut mixed = rows.clone();
    for r in mixed.iter_mut().take(5) {
        std::mem::swap(&mut r.5, &mut r.6);
    }
    for r in mixed.iter_mut().skip(5).take(4) {
        let (x, y) = to_utm.convert((r.5, r.6)).unwrap();
        (r.5, r.6) = (x, y);
    }
    let src = tmp.path().join("mezcla.csv");
    write_csv(&src, &mixed);
    let s = ingest_ok(&data, &src, "mezcla", &["--skip-invalid"]);
    let c = checks(&diagnosis(&s));
    assert_eq!(c["location.swapped_lat_lon"]["count"], 5, "{c:?}");
    assert_eq!(c["location.projected_as_degrees"]["count"], 4);
    assert!(c["location.projected_as_degrees"]["fix"]
        .as_str()
        .unwrap()
        .contains("--crs EPSG:32614"));
    assert_eq!(c["geometry.rejected"]["count"], 9);

    // A whole file swapped, or in UTM 14N / EPSG:6372 metres without saying so: the
    // ingest error names the fix.
    let mut swapped = rows.clone();
    swapped
        .iter_mut()
        .for_each(|r| std::mem::swap(&mut r.5, &mut r.6));
    let src = tmp.path().join("invertido.csv");
    write_csv(&src, &swapped);
    let e = ingest_err_text(&data, &src, "invertido");
    assert!(e.contains("swap the longitude and latitude columns"), "{e}");
    let mut utm = rows.clone();
    utm.iter_mut().for_each(|r| {
        let (x, y) = to_utm.convert((r.5, r.6)).unwrap();
        (r.5, r.6) = (x, y);
    });
    let src = tmp.path().join("utm.csv");
    write_csv(&src, &utm);
    let e = ingest_err_text(&data, &src, "utm");
    assert!(e.contains("--crs EPSG:32614"), "{e}");
    for (code, name) in [("6372", "lcc"), ("32614", "utm14")] {
        let dir = tmp.path().join(format!("shp-{name}"));
        ogr2ogr(&[
            "-f",
            "ESRI Shapefile",
            dir.to_str().unwrap(),
            clean.to_str().unwrap(),
            "-oo",
            "X_POSSIBLE_NAMES=lon",
            "-oo",
            "Y_POSSIBLE_NAMES=lat",
            "-s_srs",
            "EPSG:4326",
            "-t_srs",
            &format!("EPSG:{code}"),
            "-nln",
            "lugares",
        ]);
        std::fs::remove_file(dir.join("lugares.prj")).unwrap();
        let e = ingest_err_text(&data, &dir.join("lugares.shp"), name);
        assert!(e.contains(&format!("--crs EPSG:{code}")), "{code}: {e}");
    }

    // A layer that is mostly duplicates is not usable, whatever else it gets right.
    let mut doubled = rows.clone();
    doubled.extend(rows.iter().cloned());
    let src = tmp.path().join("doble.csv");
    write_csv(&src, &doubled);
    let d = diagnosis(&ingest_ok(
        &data,
        &src,
        "doble",
        &["--title", "Doble", "--description", "d"],
    ));
    assert_eq!(d["grade"], "not_usable", "{d}");
    assert!(d["reasons"]
        .as_array()
        .unwrap()
        .contains(&json!("duplicates.exact")));

    // The reports: HTTP (JSON, HTML, city-wide JSON/CSV), usage, and the CLI.
    let server = Server::start(&data);
    let (s, q) = server.get("/api/layers/defectos/quality");
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["grade"], d_grade(&data, "defectos"));
    let html = reqwest::blocking::get(format!(
        "{}/api/layers/defectos/quality?f=html",
        server.base
    ))
    .unwrap()
    .text()
    .unwrap();
    assert!(
        html.contains("duplicados exactos") && html.contains("location.zero_zero"),
        "{html}"
    );
    let (_, city) = server.get("/api/quality");
    assert_eq!(city["totals"]["layers"], 4);
    assert_eq!(city["totals"]["usable"], 1);
    assert_eq!(
        city["totals"]["not_usable"].as_u64().unwrap()
            + city["totals"]["usable_with_caveats"].as_u64().unwrap(),
        3
    );
    let m = &city["ministries"][0];
    assert_eq!(m["ministry"], "pruebas");
    assert!(
        m["summary_es"]
            .as_str()
            .unwrap()
            .starts_with("pruebas: 4 capas, 1 utilizables"),
        "{m}"
    );
    let csv = reqwest::blocking::get(format!("{}/api/quality?f=csv", server.base))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("pruebas,limpio,Lugares,1,") && l.contains(",usable,")),
        "{csv}"
    );
    for p in [
        "/tiles/limpio/10/230/438.mvt",
        "/collections/limpio/items?limit=3",
        "/collections/limpio/items?f=csv",
        "/collections/limpio/items/1",
    ] {
        let r = reqwest::blocking::get(format!("{}{p}", server.base)).unwrap();
        assert!(r.status().as_u16() < 400, "{p}");
    }
    let (_, q) = server.get("/api/layers/limpio/quality");
    assert_eq!(q["usage"]["total"], 4, "{q}");
    assert_eq!(
        q["usage"]["by_kind"],
        json!({"download": 1, "items": 2, "tile": 1})
    );
    let (_, city) = server.get("/api/quality");
    let limpio = city["ministries"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "limpio")
        .unwrap()
        .clone();
    assert_eq!(limpio["use_30d"], 4);
    for (path, status) in [
        ("/api/layers/nada/quality", 404),
        ("/api/layers/limpio/quality?version=9", 404),
        ("/api/layers/limpio/quality?x=1", 400),
        ("/api/quality?f=xml", 400),
        ("/api/usage?days=0", 400),
    ] {
        assert_eq!(server.get(path).0, status, "{path}");
    }
    // Counts reach usage.json (written by the refresh loop).
    let mut saved = Value::Null;
    for _ in 0..40 {
        if let Ok(b) = std::fs::read(data.join("usage.json")) {
            saved = serde_json::from_slice(&b).unwrap();
            if saved.to_string().contains("download") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(saved.to_string().contains("\"limpio\""), "{saved}");
    drop(server);
    let o = run(&data, &["diagnose", "defectos", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cli: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(cli["score"], q_score(&data, "defectos"));
    let o = run(&data, &["diagnose", "defectos"]);
    assert!(
        stdout(&o).contains("[ERROR] location.zero_zero"),
        "{}",
        stdout(&o)
    );
}

fn stored(data: &Path, layer: &str) -> Value {
    let o = run(data, &["versions", layer, "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    v.as_array().unwrap().last().unwrap()["diagnosis"].clone()
}

fn d_grade(data: &Path, layer: &str) -> Value {
    stored(data, layer)["grade"].clone()
}

fn q_score(data: &Path, layer: &str) -> Value {
    stored(data, layer)["score"].clone()
}

/// Natural Earth's countries with a bow-tie, a spike and a mis-decoded name injected;
/// the expected area set to the whole world in a settings file.
#[test]
fn injected_polygon_defects_and_mojibake() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("datahub.toml");
    std::fs::write(
        &cfg,
        "[quality]\narea = { name = \"Mundo\", bbox = [-180, -90, 180, 90] }\nregion = { name = \"Mundo\", bbox = [-180, -90, 180, 90] }\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let src = vector("geopandas/naturalearth_lowres/naturalearth_lowres.shp");
    let mut fc = ogr_geojson(src.to_str().unwrap(), None, false, &[]);
    let original = tmp.path().join("original.geojson");
    std::fs::write(&original, fc.to_string()).unwrap();
    let clean = diagnosis(&ingest_ok(&data, &original, "paises", &["--config", c]));
    let base = checks(&clean);
    for code in [
        "attributes.mojibake:name",
        "location.outside_region",
        "location.outside_area",
    ] {
        assert!(!base.contains_key(code), "clean original has {code}");
    }
    let count = |k: &BTreeMap<String, Value>, code: &str| {
        k.get(code).map_or(0, |c| c["count"].as_u64().unwrap())
    };
    let base_ex = |code: &str| base.get(code).map(examples).unwrap_or_default();

    let feats = fc["features"].as_array_mut().unwrap();
    let find = |feats: &Vec<Value>, name: &str| {
        feats
            .iter()
            .position(|f| f["properties"]["name"] == name)
            .unwrap()
    };
    // A bow-tie replaces Uruguay's outline.
    let uy = find(feats, "Uruguay");
    feats[uy]["geometry"] = json!({"type": "Polygon", "coordinates": [[[-58.0, -34.0], [-54.0, -31.0], [-54.0, -34.0], [-58.0, -31.0], [-58.0, -34.0]]]});
    // A spike on Chad's outline: a sliver half an edge long and 0.5% of it wide, pointing
    // out of the country from its longest edge.
    let td = find(feats, "Chad");
    {
        let g = &mut feats[td]["geometry"];
        let ring = if g["type"] == "Polygon" {
            g["coordinates"][0].as_array_mut().unwrap()
        } else {
            g["coordinates"][0][0].as_array_mut().unwrap()
        };
        let pt = |v: &Value| (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
        let area2: f64 = ring
            .windows(2)
            .map(|w| {
                let (a, b) = (pt(&w[0]), pt(&w[1]));
                a.0 * b.1 - b.0 * a.1
            })
            .sum();
        let i = (0..ring.len() - 1)
            .max_by(|&i, &j| {
                let l = |k: usize| {
                    let (a, b) = (pt(&ring[k]), pt(&ring[k + 1]));
                    (b.0 - a.0).hypot(b.1 - a.1)
                };
                l(i).total_cmp(&l(j))
            })
            .unwrap();
        let (a, b) = (pt(&ring[i]), pt(&ring[i + 1]));
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        // Outward: right of the edge for a counter-clockwise exterior, left otherwise.
        let (nx, ny) = if area2 > 0.0 { (dy, -dx) } else { (-dy, dx) };
        let p1 = (a.0 + 0.300 * dx, a.1 + 0.300 * dy);
        let p2 = (a.0 + 0.305 * dx, a.1 + 0.305 * dy);
        let apex = (a.0 + 0.3025 * dx + 0.5 * nx, a.1 + 0.3025 * dy + 0.5 * ny);
        for (k, p) in [p1, apex, p2].iter().enumerate() {
            ring.insert(i + 1 + k, json!([p.0, p.1]));
        }
    }
    // Côte d'Ivoire's name as UTF-8 read as Latin-1.
    let ci = find(feats, "Côte d'Ivoire");
    let broken: String = "Côte d'Ivoire".bytes().map(char::from).collect();
    feats[ci]["properties"]["name"] = json!(broken);
    let path = tmp.path().join("paises.geojson");
    std::fs::write(&path, fc.to_string()).unwrap();
    let d = diagnosis(&ingest_ok(&data, &path, "paises", &["--config", c]));
    let k = checks(&d);
    // GeoJSON keeps the source order, so ids are positions + 1.
    let id = |i: usize| (i + 1) as i64;
    assert_eq!(
        count(&k, "geometry.invalid_repaired"),
        count(&base, "geometry.invalid_repaired") + 1,
        "{d}"
    );
    let mut want = base_ex("geometry.invalid_repaired");
    want.push(id(uy));
    want.sort_unstable();
    let mut got = examples(&k["geometry.invalid_repaired"]);
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(
        count(&k, "geometry.spikes"),
        count(&base, "geometry.spikes") + 1,
        "{d}"
    );
    assert!(examples(&k["geometry.spikes"]).contains(&id(td)));
    assert!(!base_ex("geometry.spikes").contains(&id(td)));
    assert_eq!(k["attributes.mojibake:name"]["count"], 1);
    assert_eq!(examples(&k["attributes.mojibake:name"]), vec![id(ci)]);

    // The everyday cause: a Shapefile written in UTF-8 whose .cpg says Latin-1.
    let dir = tmp.path().join("utf8-shp");
    ogr2ogr(&[
        "-f",
        "ESRI Shapefile",
        dir.to_str().unwrap(),
        src.to_str().unwrap(),
        "-lco",
        "ENCODING=UTF-8",
        "-nln",
        "paises",
    ]);
    std::fs::write(dir.join("paises.cpg"), "ISO-8859-1").unwrap();
    let d = diagnosis(&ingest_ok(
        &data,
        &dir.join("paises.shp"),
        "cpg",
        &["--config", c],
    ));
    let k = checks(&d);
    assert_eq!(k["attributes.mojibake:name"]["count"], 1, "{d}");
    assert_eq!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["code"] == "attributes.mojibake")
            .count(),
        1
    );
}

/// The catalogue record's fields decide the metadata checks; they carry over to new
/// versions; `layer set` edits them; a layer older than its declared frequency is
/// stale when the report is read.
#[test]
fn catalogue_record_drives_metadata_checks_and_staleness() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("lugares.csv");
    write_csv(&src, &base());
    let full = [
        "--title",
        "Lugares del área metropolitana",
        "--description",
        "Localidades de GeoNames",
        "--contact-name",
        "Ana López",
        "--contact-email",
        "ana.lopez@monterrey.gob.mx",
        "--update-frequency",
        "R/P1W",
        "--keywords",
        "localidades,geonames",
        "--theme",
        "territorio",
    ];
    let s = ingest_ok(&data, &src, "lugares", &full);
    let d = diagnosis(&s);
    assert_eq!(d["grade"], "usable", "{d}");
    assert_eq!(d["score"], 100, "{d}");
    assert_eq!(s["license"], "Términos de Libre Uso MX");
    assert_eq!(s["keywords"], json!(["localidades", "geonames"]));

    // A new version without the flags keeps the record.
    let s = ingest_ok(&data, &src, "lugares", &[]);
    assert_eq!(s["version"], 2);
    assert_eq!(s["contact_email"], "ana.lopez@monterrey.gob.mx");
    assert_eq!(s["title"], "Lugares del área metropolitana");
    assert!(checks(&diagnosis(&s))
        .keys()
        .all(|k| !k.starts_with("metadata.")));

    // Without a contact: flagged; `layer set` fixes it and the stored diagnosis follows.
    let s = ingest_ok(
        &data,
        &src,
        "otra",
        &[
            "--title",
            "Otra",
            "--description",
            "d",
            "--update-frequency",
            "R/P1M",
        ],
    );
    assert!(checks(&diagnosis(&s)).contains_key("metadata.contact"));
    let o = run(
        &data,
        &[
            "layer",
            "set",
            "otra",
            "--contact-name",
            "Luis",
            "--contact-email",
            "luis@monterrey.gob.mx",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&data, &["diagnose", "otra", "--json"]);
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!checks(&d).contains_key("metadata.contact"), "{d}");
    assert_eq!(d["score"], 100);
    for (args, says) in [
        (
            vec![
                "layer",
                "set",
                "otra",
                "--contact-email",
                "luis at monterrey",
            ],
            "not an address",
        ),
        (
            vec!["layer", "set", "otra", "--update-frequency", "mensual"],
            "ISO 8601",
        ),
        (vec!["layer", "set", "otra"], "nothing to change"),
        (
            vec!["layer", "set", "nada", "--theme", "x"],
            "does not exist",
        ),
    ] {
        let o = run(&data, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let e = ingest_err(&data, &src, "mala", &["--contact-email", "x@y"]);
    assert!(e.contains("not an address"), "{e}");

    // Published 30 days ago with a weekly frequency: stale, in the CLI and over HTTP.
    let meta_path = data.join("layers/lugares/v2/meta.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    m["created_at"] = json!(old);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let o = run(&data, &["diagnose", "lugares", "--json"]);
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let st = &checks(&d)["metadata.stale"];
    assert!(
        st["message_en"].as_str().unwrap().contains("30 days old"),
        "{st}"
    );
    assert!(d["score"].as_u64().unwrap() < 100);
    let server = Server::start(&data);
    let (_, q) = server.get("/api/layers/lugares/quality");
    assert!(
        checks(&q["diagnosis"]).contains_key("metadata.stale"),
        "{q}"
    );
    let (_, c) = server.get("/collections/lugares");
    assert_eq!(c["keywords"], json!(["localidades", "geonames"]));
    assert_eq!(c["license"], "Términos de Libre Uso MX");
    // A record edited while the server runs shows without a restart.
    let o = run(
        &data,
        &[
            "layer",
            "set",
            "lugares",
            "--title",
            "Localidades",
            "--license",
            "CC BY 4.0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut seen = Value::Null;
    for _ in 0..40 {
        let (_, c) = server.get("/collections/lugares");
        if c["title"] == "Localidades" {
            seen = c;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(seen["license"], "CC BY 4.0", "{seen}");
}
