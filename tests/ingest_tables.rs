//! Ministry tables as they really arrive: coordinates under any name, one column with
//! both values, DMS, `;` Latin-1 files with decimal commas; spreadsheets written by
//! office software (readxl's Excel files: title rows, notes, several sheets) and by
//! openpyxl (merged cells, numbers as text, date serials, totals); tables placed by a
//! key joined to a zone layer (Mexican states by name, INEGI composite keys); and the
//! errors that name the fix. Values are compared with independent readers (Python's
//! csv, openpyxl, GDAL).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn xy(f: &Value) -> (f64, f64) {
    let c = &f["geometry"]["coordinates"];
    (c[0].as_f64().unwrap(), c[1].as_f64().unwrap())
}

/// readxl's spreadsheets (Debian r-cran-readxl), fetched by `make test`.
fn sheets() -> PathBuf {
    let p = std::env::var_os("DATAHUB_TEST_SHEETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.sheets"));
    assert!(
        p.join("deaths.xlsx").exists(),
        "readxl spreadsheets not found at {} (run `make test`, which fetches them)",
        p.display()
    );
    p
}

fn py(script: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn coordinates_under_any_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "centroides.csv",
            b"municipio,centroid_lon,centroid_lat\nMonterrey,-100.3161,25.6866\nApodaca,-100.1886,25.7817\n",
            &[],
        ),
        (
            "dec.csv",
            b"NOMBRE,LONGITUD_DEC,LATITUD\nMonterrey,-100.3161,25.6866\nApodaca,-100.1886,25.7817\n",
            &[],
        ),
        (
            "coordxy.csv",
            b"nombre,coord_x,coord_y\nMonterrey,-100.3161,25.6866\nApodaca,-100.1886,25.7817\n",
            &[],
        ),
        (
            "explicit.csv",
            b"nombre,pos_a,pos_b\nMonterrey,-100.3161,25.6866\nApodaca,-100.1886,25.7817\n",
            &["--lon", "pos_a", "--lat", "pos_b"],
        ),
        (
            "dms.csv",
            "nombre,lat,lon\nMonterrey,25°41'11.76\"N,100°18'57.96\"W\nApodaca,25°46'54.12\"N,100°11'18.96\"O\n".as_bytes(),
            &[],
        ),
    ];
    for (name, text, extra) in cases {
        let src = tmp.path().join(name);
        fs::write(&src, text).unwrap();
        let layer = name.trim_end_matches(".csv");
        let m = ingest_ok(&data, &src, layer, extra);
        assert_eq!(m["feature_count"], 2, "{name}");
        let f = stored_features(&data, layer);
        let (x, y) = xy(&f[0]);
        assert!(
            (x + 100.3161).abs() < 1e-4 && (y - 25.6866).abs() < 1e-4,
            "{name}: {x} {y}"
        );
        let (x, y) = xy(&f[1]);
        assert!(
            (x + 100.1886).abs() < 1e-4 && (y - 25.7817).abs() < 1e-4,
            "{name}: {x} {y}"
        );
        // The coordinate columns are the geometry, not attributes.
        assert_eq!(
            m["schema"].as_array().unwrap().len(),
            1,
            "{name}: {}",
            m["schema"]
        );
    }

    // `;`-separated Latin-1 with one `coordenadas` column copied from a web map, and
    // decimal commas in the amounts.
    let text = "escuela;coordenadas;presupuesto\nNiños Héroes;25.686600, -100.316100;1234,50\nJosé Martí;25.781700, -100.188600;99,9\n";
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(text);
    let src = tmp.path().join("escuelas.csv");
    fs::write(&src, &bytes).unwrap();
    let m = ingest_ok(&data, &src, "escuelas", &[]);
    assert_eq!(m["feature_count"], 2);
    let notes = m["report"]["notes"].to_string();
    assert!(
        notes.contains("CP1252") && notes.contains("separator ';'"),
        "{notes}"
    );
    let f = stored_features(&data, "escuelas");
    assert_eq!(f[0]["properties"]["escuela"], "Niños Héroes");
    assert_eq!(f[0]["properties"]["presupuesto"], 1234.5);
    assert_eq!(xy(&f[0]), (-100.3161, 25.6866));
    // The same column in lon lat order is told from the values.
    let src = tmp.path().join("lonlat.csv");
    fs::write(
        &src,
        "n,ubicacion\nA,-100.3161 25.6866\nB,-100.1886 25.7817\n",
    )
    .unwrap();
    ingest_ok(&data, &src, "lonlat", &[]);
    assert_eq!(
        xy(&stored_features(&data, "lonlat")[1]),
        (-100.1886, 25.7817)
    );

    // Ambiguous: two possible pairs are listed with sample values; never guessed.
    let src = tmp.path().join("dos.csv");
    fs::write(
        &src,
        "n,lon,lat,x_utm,y_utm\nA,-100.3161,25.6866,368000,2841000\n",
    )
    .unwrap();
    let err = ingest_err(&data, &src, "dos", &[]);
    assert!(
        err.contains("more than one")
            && err.contains("--lon lon --lat lat")
            && err.contains("x_utm")
            && err.contains("'368000'"),
        "{err}"
    );
    // With the projected pair named and its CRS the UTM metres land in Monterrey.
    let m = ingest_ok(
        &data,
        &src,
        "dos",
        &["--x", "x_utm", "--y", "y_utm", "--crs", "EPSG:32614"],
    );
    let b = m["bbox"].as_array().unwrap();
    assert!((b[0].as_f64().unwrap() + 100.32).abs() < 0.05, "{b:?}");
    // A pair whose order the values cannot tell (both within ±90, neither in Nuevo León).
    let src = tmp.path().join("orden.csv");
    fs::write(&src, "n,coordenadas\nA,\"10.5, 20.5\"\n").unwrap();
    let err = ingest_err(&data, &src, "orden", &[]);
    assert!(err.contains("--coord-order"), "{err}");
    // Mixed formats in one column.
    let src = tmp.path().join("mezcla.csv");
    fs::write(
        &src,
        "n,lat,lon\nA,25°41'11\"N,-100.3161\nB,25.78,-100.18\n",
    )
    .unwrap();
    let err = ingest_err(&data, &src, "mezcla", &[]);
    assert!(err.contains("mixes degrees-minutes-seconds"), "{err}");
    // A long preamble: the header on row 41, named with --header-row; a row that
    // does not exist is refused with the table's rows.
    let src = tmp.path().join("preambulo.csv");
    let mut text: String = (1..=40)
        .map(|i| format!("Nota {i} del sistema de origen\n"))
        .collect();
    text.push_str("nombre,lon,lat\nMonterrey,-100.3161,25.6866\n");
    fs::write(&src, text).unwrap();
    let m = ingest_ok(&data, &src, "preambulo", &["--header-row", "41"]);
    assert_eq!(m["feature_count"], 1);
    let err = ingest_err(&data, &src, "preambulo", &["--header-row", "50"]);
    assert!(
        err.contains("--header-row 50") && err.contains("1..42"),
        "{err}"
    );
    let err = ingest_err(&data, &src, "preambulo", &["--header-row", "20000"]);
    assert!(err.contains("within the first 10000 rows"), "{err}");
    // A named column that does not exist.
    let err = ingest_err(&data, &src, "mezcla", &["--lon", "lng", "--lat", "lat"]);
    assert!(
        err.contains("'lng' is not a column") && err.contains("lon"),
        "{err}"
    );
}

#[test]
fn swapped_columns_are_diagnosed_not_stored_in_the_pacific() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("invertido.csv");
    let mut text = String::from("id,lon,lat\n");
    for i in 0..2478 {
        // Swapped: the lon column holds latitudes.
        text.push_str(&format!(
            "{i},{:.5},{:.5}\n",
            25.6 + (i % 50) as f64 * 0.004,
            -100.4 + (i / 50) as f64 * 0.004
        ));
    }
    fs::write(&src, text).unwrap();
    let started = std::time::Instant::now();
    let err = ingest_err(&data, &src, "invertido", &[]);
    // PROJ objects are made once per thread: seconds, not minutes (it took 132 s).
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert!(err.contains("swapped_lat_lon: 2478"), "{err}");
}

#[test]
fn office_spreadsheets_title_rows_notes_and_sheets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = sheets();
    // Two sheets with data: the error lists them.
    let err = ingest_err(&data, &s.join("deaths.xlsx"), "muertes", &[]);
    assert!(
        err.contains("arts") && err.contains("other") && err.contains("--source-layer"),
        "{err}"
    );
    let err = ingest_err(
        &data,
        &s.join("deaths.xlsx"),
        "muertes",
        &["--source-layer", "poetas"],
    );
    assert!(
        err.contains("sheet 'poetas' not found") && err.contains("arts, other"),
        "{err}"
    );
    // Four title rows above the header are skipped: the header is found on row 5.
    for f in ["deaths.xlsx", "deaths.xls"] {
        let err = ingest_err(&data, &s.join(f), "muertes", &["--source-layer", "arts"]);
        assert!(
            err.contains(
                "its columns are: Name, Profession, Age, Has kids, Date of birth, Date of death"
            ),
            "{f}: {err}"
        );
    }
    // A sheet with lat/long: the same features as GDAL's XLSX driver reads (its
    // longitudes beyond 180° are refused, row by row).
    for f in ["datasets.xlsx", "datasets.xls"] {
        let m = ingest_ok(
            &data,
            &s.join(f),
            "sismos",
            &["--source-layer", "quakes", "--skip-invalid"],
        );
        let gdal = ogr_geojson(&s.join(f).to_string_lossy(), Some("quakes"), false, &[]);
        let rows = gdal["features"].as_array().unwrap();
        let valid: Vec<&Value> = rows
            .iter()
            .filter(|r| r["properties"]["long"].as_f64().unwrap() <= 180.0)
            .collect();
        assert_eq!(m["report"]["features_read"], rows.len(), "{f}");
        assert_eq!(m["feature_count"], valid.len(), "{f}");
        let ours = stored_features(&data, "sismos");
        for (a, b) in ours.iter().zip(&valid) {
            assert_eq!(xy(a).0, b["properties"]["long"].as_f64().unwrap(), "{f}");
            assert_eq!(xy(a).1, b["properties"]["lat"].as_f64().unwrap(), "{f}");
            assert_eq!(a["properties"]["mag"], b["properties"]["mag"], "{f}");
        }
    }
}

/// An INEGI-style workbook written by openpyxl: a merged title row, the header, rows
/// with CVE_ENT/CVE_MUN as numbers, a code typed as text with its zero, numbers
/// stored as text, Excel dates, a totals row and a source note, an empty trailing
/// column; then joined to a municipalities layer by its CVEGEO.
#[test]
fn spreadsheet_joined_to_municipalities_by_inegi_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The zone layer: 51 generated municipalities of Nuevo León (CVEGEO "19001"…).
    let names = [
        "Abasolo",
        "Agualeguas",
        "Los Aldamas",
        "Allende",
        "Anáhuac",
        "Apodaca",
    ];
    // Monterrey (19039) is moved east by `shift` degrees.
    let municipios = |path: &Path, shift: f64| {
        let mut feats = Vec::new();
        for i in 1..=51 {
            let (mut x, y) = (-100.9 + (i % 10) as f64 * 0.1, 25.2 + (i / 10) as f64 * 0.1);
            if i == 39 {
                x += shift;
            }
            let nom = match i {
                21 => "General Escobedo".to_string(),
                39 => "Monterrey".to_string(),
                46 => "San Nicolás de los Garza".to_string(),
                i if i <= 6 => names[i - 1].to_string(),
                i => format!("Municipio {i}"),
            };
            feats.push(format!(
                r#"{{"type":"Feature","properties":{{"CVEGEO":"19{i:03}","NOMGEO":"{nom}"}},"geometry":{{"type":"Polygon","coordinates":[[[{x},{y}],[{},{y}],[{},{}],[{x},{}],[{x},{y}]]]}}}}"#,
                x + 0.1,
                x + 0.1,
                y + 0.1,
                y + 0.1
            ));
        }
        fs::write(
            path,
            format!(
                r#"{{"type":"FeatureCollection","features":[{}]}}"#,
                feats.join(",")
            ),
        )
        .unwrap();
    };
    let zones = tmp.path().join("municipios.geojson");
    municipios(&zones, 0.0);
    ingest_ok(&data, &zones, "municipios", &[]);

    let xlsx = tmp.path().join("poblacion_2020.xlsx");
    py(
        r#"
import sys, datetime, openpyxl
wb = openpyxl.Workbook(); ws = wb.active; ws.title = "Poblacion"
ws["A1"] = "Población por municipio, Nuevo León 2020"; ws.merge_cells("A1:F1")
ws.append(["CVE_ENT", "CVE_MUN", "NOM_MUN", "POBTOT", "FECHA_CORTE", "VIVIENDAS", "ZONA"])
rows = [(19, 39, "Monterrey", 1142994), (19, 21, "Gral. Escobedo", 481213),
        (19, 46, "SAN NICOLAS DE LOS GARZA", "412199"), (19, 6, "Apodaca", 656464),
        (19, 99, "Inexistente", 5)]
for e, m, n, p in rows:
    ws.append([e, m, n, p, datetime.date(2020, 3, 15), "N/D" if m == 6 else 100, None])
ws["G3"] = "Metropolitana"; ws.merge_cells("G3:G6"); ws["G7"] = "Rural"
ws.append(["Total", None, None, 2693075, None, None])
ws.append(["Fuente: INEGI, Censo de Población y Vivienda 2020."])
ws.column_dimensions["H"].width = 20; ws["H1"] = None
wb.save(sys.argv[1])
"#,
        &[xlsx.to_str().unwrap()],
    );
    let m = ingest_ok(
        &data,
        &xlsx,
        "poblacion",
        &["--join", "municipios:CVEGEO", "--key", "CVE_ENT+CVE_MUN"],
    );
    let j = &m["report"]["join"];
    assert_eq!(j["rows"], 5, "{j}");
    assert_eq!(j["matched"], 4, "{j}");
    assert_eq!(j["unmatched"], 1, "{j}");
    assert_eq!(j["unmatched_rows"][0]["key"], "19+99", "{j}");
    assert_eq!(j["zones_without_row"], 47, "{j}");
    let notes = m["report"]["notes"].to_string();
    assert!(
        notes.contains("totals row") && notes.contains("note row") && notes.contains("Fuente"),
        "{notes}"
    );
    assert!(notes.contains("header found on row 2"), "{notes}");
    assert!(
        notes.contains("'POBTOT': 1 number(s) stored as text"),
        "{notes}"
    );
    let types = schema_types(&m);
    assert!(
        types.contains(&"POBTOT:int".into())
            && types.contains(&"FECHA_CORTE:date".into())
            && types.contains(&"VIVIENDAS:int".into()),
        "{types:?}"
    );
    // Each feature is its municipality's polygon with the row's values.
    let zone_geo = ogr_geojson(&zones.to_string_lossy(), None, false, &[]);
    let by_code: std::collections::HashMap<String, Value> = zone_geo["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["properties"]["CVEGEO"].as_str().unwrap().to_string(),
                f["geometry"].clone(),
            )
        })
        .collect();
    let f = stored_features(&data, "poblacion");
    assert_eq!(f.len(), 4);
    let mty = f
        .iter()
        .find(|f| f["properties"]["NOM_MUN"] == "Monterrey")
        .unwrap();
    assert_eq!(mty["properties"]["POBTOT"], 1142994);
    assert_eq!(mty["properties"]["CVEGEO"], "19039");
    // GDAL reads the stored date back as a datetime at midnight.
    assert!(mty["properties"]["FECHA_CORTE"]
        .as_str()
        .unwrap()
        .starts_with("2020-03-15"));
    assert_eq!(envelope(&mty["geometry"]), envelope(&by_code["19039"]));
    let apo = f
        .iter()
        .find(|f| f["properties"]["NOM_MUN"] == "Apodaca")
        .unwrap();
    assert_eq!(apo["properties"]["VIVIENDAS"], Value::Null);
    // A value merged over four rows is on each of them.
    assert_eq!(apo["properties"]["ZONA"], "Metropolitana");
    assert_eq!(mty["properties"]["ZONA"], "Metropolitana");
    assert!(
        notes.contains("3 cells of merged regions filled"),
        "{notes}"
    );
    // The diagnosis flags CVE_MUN stored as a number (39 for "039").
    let d = m["diagnosis"]["checks"].to_string();
    assert!(
        d.contains("attributes.code_as_number") && d.contains("CVE_MUN"),
        "{d}"
    );

    // The same table joined by municipality name: abbreviations, case and accents.
    let m = ingest_ok(
        &data,
        &xlsx,
        "poblacion-nombres",
        &[
            "--join",
            "municipios:NOMGEO",
            "--key",
            "NOM_MUN",
            "--as",
            "points",
        ],
    );
    let j = &m["report"]["join"];
    assert_eq!(
        (j["matched"].as_u64(), j["matched_by"].as_str()),
        (Some(4), Some("name")),
        "{j}"
    );
    assert_eq!(m["geometry_types"][0], "Point");

    // Errors name the fix; nothing is published.
    let err = ingest_err(&data, &xlsx, "p2", &["--join", "municipios:CLAVE"]);
    assert!(
        err.contains("'CLAVE' is not a field") && err.contains("CVEGEO, NOMGEO"),
        "{err}"
    );
    let err = ingest_err(
        &data,
        &xlsx,
        "p2",
        &["--join", "municipios:CVEGEO", "--key", "CVE_LOC"],
    );
    assert!(
        err.contains("'CVE_LOC' is not a column") && err.contains("CVE_MUN"),
        "{err}"
    );
    let err = ingest_err(&data, &xlsx, "p2", &["--join", "colonias:NOMBRE"]);
    assert!(
        err.contains("zone layer 'colonias' does not exist"),
        "{err}"
    );
    let err = ingest_err(
        &data,
        &xlsx,
        "p2",
        &["--join", "municipios:CVEGEO", "--key", "VIVIENDAS"],
    );
    assert!(err.contains("matched no row"), "{err}");
    assert!(!data.join("layers/p2").exists());

    // A new version of the municipalities (Monterrey's polygon moved): both joined
    // layers follow it as new versions that say why.
    let zones2 = tmp.path().join("municipios2.geojson");
    municipios(&zones2, 0.01);
    let o = run(
        &data,
        &[
            "ingest",
            zones2.to_str().unwrap(),
            "--layer",
            "municipios",
            "--ministry",
            "pruebas",
        ],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("rejoined     layer poblacion version 2"),
        "{out}"
    );
    assert!(
        out.contains("rejoined     layer poblacion-nombres version 2"),
        "{out}"
    );
    let v: Value =
        serde_json::from_slice(&run(&data, &["versions", "poblacion", "--json"]).stdout).unwrap();
    let last = &v.as_array().unwrap()[1];
    assert_eq!(
        last["note"],
        "joined again: zone layer municipios has version 2 (was 1)"
    );
    assert_eq!(last["report"]["join"]["zone_version"], 2);
    assert_eq!(last["report"]["join"]["matched"], 4);
    let mty2 = stored_features(&data, "poblacion")
        .into_iter()
        .find(|f| f["properties"]["NOM_MUN"] == "Monterrey")
        .unwrap();
    let new_zone = ogr_geojson(&zones2.to_string_lossy(), None, false, &[]);
    let new_mty = new_zone["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["properties"]["CVEGEO"] == "19039")
        .unwrap();
    assert_eq!(envelope(&mty2["geometry"]), envelope(&new_mty["geometry"]));
    assert_ne!(envelope(&mty2["geometry"]), envelope(&by_code["19039"]));
    // A version of another layer rebuilds nothing; the joined layers stay at v2.
    let o = run(
        &data,
        &[
            "ingest",
            xlsx.to_str().unwrap(),
            "--layer",
            "otra",
            "--ministry",
            "pruebas",
            "--join",
            "municipios:CVEGEO",
            "--key",
            "CVE_ENT+CVE_MUN",
        ],
    );
    assert!(
        o.status.success() && !stdout(&o).contains("rejoined"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        fs::read_to_string(data.join("layers/poblacion/CURRENT"))
            .unwrap()
            .trim(),
        "2"
    );
    // Restoring the first municipalities is a new zone version: Monterrey is back.
    let o = run(&data, &["layer", "restore", "municipios", "1"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("rejoined     layer poblacion version 3"),
        "{out}"
    );
    let mty3 = stored_features(&data, "poblacion")
        .into_iter()
        .find(|f| f["properties"]["NOM_MUN"] == "Monterrey")
        .unwrap();
    assert_eq!(envelope(&mty3["geometry"]), envelope(&by_code["19039"]));
}

/// libpysal's Mexican states: the table's names differ from the shapefile's in five
/// places ("Baja California" vs "Baja California Norte"); the report shows them with
/// the closest names, and a crosswalk resolves them.
#[test]
fn mexican_states_joined_by_name_with_report_and_crosswalk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(
        &data,
        &vector("libpysal/mexico/mexicojoin.shp"),
        "estados",
        &["--crs", "EPSG:4326"],
    );
    let csv = vector("libpysal/mexico/mexico.csv");
    let m = ingest_ok(&data, &csv, "pib-estatal", &["--join", "estados:NAME"]);
    let j = &m["report"]["join"];
    assert_eq!(
        (j["rows"].as_u64(), j["matched"].as_u64()),
        (Some(32), Some(27)),
        "{j}"
    );
    let unmatched: Vec<(String, Vec<String>)> = j["unmatched_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["key"].as_str().unwrap().to_string(),
                u["closest"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    // The diagnosis says why five rows were left out.
    let checks = m["diagnosis"]["checks"].to_string();
    assert!(checks.contains("not_joined: 5"), "{checks}");
    let keys: Vec<&str> = unmatched.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Baja California",
            "Coahuila",
            "Michoacan",
            "Quertaro",
            "Veracruz"
        ],
        "{j}"
    );
    for (k, closest) in &unmatched {
        let want = match k.as_str() {
            "Baja California" => "Baja California Norte",
            "Coahuila" => "Coahuila De Zaragoza",
            "Michoacan" => "Michoacan de Ocampo",
            "Quertaro" => "Queretaro de Arteaga",
            _ => "Veracruz-Llave",
        };
        assert!(closest.iter().any(|c| c == want), "{k}: {closest:?}");
    }
    // Values equal the table's for every matched key (read by Python's csv module).
    let table = py(
        "import csv,sys,json; print(json.dumps({r['State']: float(r['pcgdp1940']) for r in csv.DictReader(open(sys.argv[1]))}))",
        &[csv.to_str().unwrap()],
    );
    let table: serde_json::Map<String, Value> = serde_json::from_str(&table).unwrap();
    let f = stored_features(&data, "pib-estatal");
    assert_eq!(f.len(), 27);
    for feat in &f {
        let st = feat["properties"]["State"].as_str().unwrap();
        assert_eq!(
            feat["properties"]["pcgdp1940"].as_f64(),
            table[st].as_f64(),
            "{st}"
        );
        assert_eq!(
            feat["properties"]["NAME"]
                .as_str()
                .map(layers::text::name_key),
            Some(layers::text::name_key(st))
        );
    }
    // A crosswalk file for the five.
    let cw = tmp.path().join("cruce.csv");
    fs::write(
        &cw,
        "tabla,capa\nBaja California,Baja California Norte\nCoahuila,Coahuila De Zaragoza\nMichoacan,Michoacan de Ocampo\nQuertaro,Queretaro de Arteaga\nVeracruz,Veracruz-Llave\n",
    )
    .unwrap();
    let m = ingest_ok(
        &data,
        &csv,
        "pib-estatal",
        &[
            "--join",
            "estados:NAME",
            "--crosswalk",
            cw.to_str().unwrap(),
        ],
    );
    let j = &m["report"]["join"];
    assert_eq!(
        (j["matched"].as_u64(), j["crosswalk_used"].as_u64()),
        (Some(32), Some(5)),
        "{j}"
    );
    assert_eq!(m["version"], 2);
}

/// Hostile or broken spreadsheets get a clear error and leave nothing behind.
#[test]
fn broken_and_hostile_spreadsheets_are_refused() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let junk = tmp.path().join("junk.xlsx");
    fs::write(&junk, b"not a spreadsheet at all").unwrap();
    let err = ingest_err(&data, &junk, "junk", &[]);
    assert!(err.contains("not a readable spreadsheet"), "{err}");
    // A workbook whose sheet part inflates 200 MiB of zeros from a few hundred KiB.
    let bomb = tmp.path().join("bomba.xlsx");
    let mut z = zip::ZipWriter::new(fs::File::create(&bomb).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    z.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap();
    // Refused by its ratio (deflate's best is about 1030:1, the limit 1000:1) or, with
    // the limit set to 50 MiB here, by its declared size: never inflated.
    let cfg = tmp.path().join("c.toml");
    fs::write(&cfg, "max_unzipped_mb = 50\n").unwrap();
    let err = ingest_err(&data, &bomb, "bomba", &["--config", cfg.to_str().unwrap()]);
    assert!(
        err.contains("zip bomb") || err.contains("more than the 50 MiB a spreadsheet may take"),
        "{err}"
    );
    // An Excel file saved with a .csv name.
    let disguised = tmp.path().join("datos.csv");
    fs::copy(sheets().join("deaths.xlsx"), &disguised).unwrap();
    let err = ingest_err(&data, &disguised, "datos", &[]);
    assert!(
        err.contains("is a spreadsheet") && err.contains(".xlsx"),
        "{err}"
    );
    // A crosswalk file that is not there.
    let err = ingest_err(
        &data,
        &vector("libpysal/mexico/mexico.csv"),
        "x",
        &[
            "--join",
            "estados:NAME",
            "--crosswalk",
            "/no/such/cruce.csv",
        ],
    );
    assert!(err.contains("--crosswalk /no/such/cruce.csv"), "{err}");
    assert!(
        !data.join("layers").exists() || fs::read_dir(data.join("layers")).unwrap().count() == 0
    );
    assert_eq!(
        fs::read_dir(data.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

/// A dataset with no place (a budget): stored with `--no-geometry`, diagnosed on its
/// attributes only, served as OGC API items with `"geometry": null`, downloadable as
/// CSV, Excel, GeoPackage, FlatGeobuf and GeoJSON (a Shapefile is refused), absent from
/// bbox queries and tiles, and in the open-data feeds without a spatial extent.
#[test]
fn budget_without_geometry_is_catalogued_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("presupuesto.csv");
    fs::write(
        &src,
        "partida;concepto;monto_2025;fecha_corte\n1000;Servicios personales;1200000,50;31/01/2025\n2000;Materiales y suministros;350000;31/01/2025\n3000;Servicios generales;890000,25;28/02/2025\n",
    )
    .unwrap();
    let err = ingest_err(&data, &src, "presupuesto", &[]);
    assert!(err.contains("--no-geometry"), "{err}");
    let m = ingest_ok(
        &data,
        &src,
        "presupuesto",
        &[
            "--no-geometry",
            "--access",
            "public",
            "--title",
            "Presupuesto de egresos 2025",
        ],
    );
    assert_eq!(m["feature_count"], 3);
    assert_eq!(m["geometry_types"], serde_json::json!([]));
    assert!(m["bbox"].is_null(), "{}", m["bbox"]);
    assert!(
        schema_types(&m).contains(&"monto_2025:float".to_string()),
        "{:?}",
        schema_types(&m)
    );
    let checks = m["diagnosis"]["checks"].to_string();
    assert!(
        !checks.contains("location.") && !checks.contains("geometry."),
        "{checks}"
    );
    // --no-geometry with coordinates is refused.
    let pts = tmp.path().join("pts.csv");
    fs::write(&pts, "n,lon,lat\nA,-100.3,25.6\n").unwrap();
    let err = ingest_err(&data, &pts, "pts", &["--no-geometry"]);
    assert!(
        err.contains("--no-geometry stores a table without a place"),
        "{err}"
    );

    let server = Server::start(&data);
    let (s, v) = server.get("/collections/presupuesto/items");
    assert_eq!(s, 200);
    assert_eq!(v["numberMatched"], 3);
    let feats = v["features"].as_array().unwrap();
    assert!(feats.iter().all(|f| f["geometry"].is_null()), "{v}");
    assert_eq!(feats[0]["properties"]["monto_2025"], 1200000.5);
    assert_eq!(feats[2]["properties"]["fecha_corte"], "2025-02-28");
    let (_, v) = server.get("/collections/presupuesto/items?bbox=-1,-1,1,1");
    assert_eq!(v["numberMatched"], 0, "{v}");
    let (_, c) = server.get("/collections/presupuesto");
    assert!(c["extent"].get("spatial").is_none(), "{c}");
    let http = reqwest::blocking::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.base)).send().unwrap();
    assert_eq!(get("/tiles/presupuesto/0/0/0.mvt").status(), 204);
    for (f, file) in [
        ("csv", "p.csv"),
        ("xlsx", "p.xlsx"),
        ("gpkg", "p.gpkg"),
        ("geojson", "p.geojson"),
    ] {
        let r = get(&format!("/collections/presupuesto/items?f={f}"));
        assert_eq!(r.status(), 200, "{f}");
        let path = tmp.path().join(file);
        fs::write(&path, r.bytes().unwrap()).unwrap();
        let back = ogr_geojson(&path.to_string_lossy(), None, false, &[]);
        let rows = back["features"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{f}: {back}");
        assert!(rows.iter().all(|r| r["geometry"].is_null()), "{f}");
        assert_eq!(
            rows[1]["properties"]["concepto"], "Materiales y suministros",
            "{f}"
        );
    }
    let csv = fs::read_to_string(tmp.path().join("p.csv")).unwrap();
    assert!(csv.starts_with("partida,concepto"), "{csv}");
    for f in ["shp", "fgb"] {
        let r = get(&format!("/collections/presupuesto/items?f={f}"));
        assert_eq!(r.status(), 400, "{f}");
        assert!(r.text().unwrap().contains("has no geometry"), "{f}");
    }
    // Nor are they offered.
    let offered = c["links"].to_string();
    assert!(
        offered.contains("f=xlsx") && !offered.contains("f=shp") && !offered.contains("f=fgb"),
        "{offered}"
    );
    let (_, feed) = server.get("/catalog/data.json");
    let ds = feed["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["title"] == "Presupuesto de egresos 2025")
        .unwrap();
    assert!(ds.get("spatial").is_none(), "{ds}");
    let (_, hits) = server.get("/api/catalog?q=presupuesto");
    assert!(hits.to_string().contains("presupuesto"), "{hits}");
}
