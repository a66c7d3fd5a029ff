//! Every format and CRS case of ../shared/data ingested by the real binary, each checked
//! for count, recorded CRS and coordinates against `ogr2ogr -t_srs EPSG:4326`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use serde_json::Value;

const TOL: f64 = 1e-7;

/// Ingests and compares; returns the ingest summary.
fn check(src: &str, layer: &str, extra: &[&str], src_layer: Option<&str>, oo: &[&str]) -> Value {
    let data = tempfile::tempdir().unwrap();
    let meta = ingest_ok(data.path(), &vector(src), layer, extra);
    let path = vector(src).to_string_lossy().into_owned();
    let ogr_path = if path.ends_with(".zip") && !path.ends_with(".gdb.zip") {
        format!("/vsizip/{path}")
    } else {
        path
    };
    let repaired = meta["report"]["features_repaired"].as_u64().unwrap() as usize;
    let examples: Vec<i64> = meta["report"]["problems"]["invalid_geometry_repaired"]["examples"]
        .as_array()
        .map(|a| a.iter().map(|e| e["feature"].as_i64().unwrap()).collect())
        .unwrap_or_default();
    assert!(
        repaired <= examples.len(),
        "{src}: too many repairs to compare: {repaired}"
    );
    let mut oo: Vec<&str> = oo.to_vec();
    if meta["source_crs"]["how"] != "source" && meta["source_crs"]["how"] != "identified" {
        // The source declares no CRS: tell ogr2ogr what DataHub was told.
        oo.extend(["-s_srs", "EPSG:4326"]);
    }
    let cmp = compare_with_ogr2ogr(data.path(), layer, &ogr_path, src_layer, &oo, &examples);
    let stored = meta["report"]["features_stored"].as_u64().unwrap() as usize;
    assert_eq!(cmp.stored_features, stored, "{src}: {cmp:?}");
    assert!(
        cmp.max_error_deg <= TOL,
        "{src}: max error {} deg",
        cmp.max_error_deg
    );
    assert!(
        cmp.changed <= repaired,
        "{src}: {} changed but {} repaired",
        cmp.changed,
        repaired
    );
    // The data dir holds the published version and nothing in staging.
    assert_eq!(
        std::fs::read_dir(data.path().join("tmp")).unwrap().count(),
        0
    );
    meta
}

fn epsg(meta: &Value) -> Option<u64> {
    meta["source_crs"]["epsg"].as_u64()
}

#[test]
fn geojson_points() {
    let m = check("spdata/cycle_hire.geojson", "cycle", &[], None, &[]);
    assert_eq!(m["feature_count"], 742);
    assert_eq!(epsg(&m), Some(4326));
    assert_eq!(m["geometry_types"], serde_json::json!(["Point"]));
}

#[test]
fn geopackage_multipolygons() {
    let m = check("spdata/world.gpkg", "world", &[], None, &[]);
    assert_eq!(m["feature_count"], 177);
    let names: Vec<&str> = m["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"name_long") && names.contains(&"pop"),
        "{names:?}"
    );
}

#[test]
fn csv_with_wkt_column() {
    let oo = [
        "-oo",
        "GEOM_POSSIBLE_NAMES=wkt,geom,geometry,the_geom,geometria,geometría",
        "-oo",
        "KEEP_GEOM_COLUMNS=NO",
        "-oo",
        "AUTODETECT_TYPE=YES",
    ];
    let m = check("spdata/world_wkt.csv", "world-wkt", &[], None, &oo);
    assert_eq!(m["feature_count"], 177);
    assert_eq!(epsg(&m), Some(4326));
    let types: Vec<(String, String)> = m["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(types.contains(&("pop".into(), "int".into())), "{types:?}");
    assert!(
        types.contains(&("lifeExp".into(), "float".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("name_long".into(), "string".into())),
        "{types:?}"
    );
    assert!(
        !types.iter().any(|(n, _)| n == "WKT"),
        "geometry column kept as attribute: {types:?}"
    );
}

#[test]
fn esri_prj_without_epsg_code() {
    let m = check("spdata/NY8_utm18.shp", "ny8", &[], None, &[]);
    assert_eq!(m["feature_count"], 281);
    assert!(
        m["source_crs"]["name"].as_str().unwrap().contains("18N"),
        "{}",
        m["source_crs"]
    );
}

#[test]
fn nad27_datum_shift() {
    let m = check("spdata/boston_tracts.shp", "boston", &[], None, &[]);
    assert_eq!(m["feature_count"], 506);
    assert_eq!(epsg(&m), Some(4267));
    let m = check("sf/nc.gpkg", "nc", &[], None, &[]);
    assert_eq!(m["feature_count"], 100);
    assert_eq!(epsg(&m), Some(4267));
}

#[test]
fn missing_prj_is_refused_then_accepted_with_crs() {
    let data = tempfile::tempdir().unwrap();
    let err = ingest_err(data.path(), &vector("spdata/baltim.shp"), "baltim", &[]);
    assert!(err.contains("no .prj") && err.contains("--crs"), "{err}");
    // baltim's X/Y are in an unknown projected system: declaring lon/lat is caught too.
    let err = ingest_err(
        data.path(),
        &vector("spdata/baltim.shp"),
        "baltim",
        &["--crs", "EPSG:4326"],
    );
    assert!(err.contains("not a longitude/latitude"), "{err}");
    assert!(!data.path().join("layers/baltim").exists());
    // With a projected CRS the numbers are accepted (and land somewhere on Earth).
    let m = ingest_ok(
        data.path(),
        &vector("spdata/baltim.shp"),
        "baltim",
        &["--crs", "EPSG:32618"],
    );
    assert_eq!(m["feature_count"], 211);
    assert_eq!(m["source_crs"]["epsg"], 32618);
    let data = tempfile::tempdir().unwrap();
    assert!(!data.path().join("layers/baltim").exists());
}

#[test]
fn empty_prj_with_spanish_names() {
    let data = tempfile::tempdir().unwrap();
    let err = ingest_err(
        data.path(),
        &vector("libpysal/mexico/mexicojoin.shp"),
        "mexico",
        &[],
    );
    assert!(err.contains("empty .prj") && err.contains("--crs"), "{err}");
    let m = check(
        "libpysal/mexico/mexicojoin.shp",
        "mexico",
        &["--crs", "EPSG:4326"],
        None,
        &[],
    );
    assert_eq!(m["feature_count"], 32);
    assert_eq!(m["source_crs"]["how"], "--crs");
}

#[test]
fn zipped_shapefile_in_us_feet() {
    let m = check("geopandas/nybb_16a.zip", "nybb", &[], None, &[]);
    assert_eq!(m["feature_count"], 5);
    assert_eq!(epsg(&m), Some(2263));
    let b = m["bbox"].as_array().unwrap();
    assert!((b[0].as_f64().unwrap() + 74.26).abs() < 0.01, "{b:?}");
}

#[test]
fn natural_earth_basics() {
    let m = check(
        "geopandas/naturalearth_lowres/naturalearth_lowres.shp",
        "ne-lowres",
        &[],
        None,
        &[],
    );
    assert_eq!(m["feature_count"], 177);
    let m = check(
        "geopandas/naturalearth_cities/naturalearth_cities.shp",
        "ne-cities",
        &[],
        None,
        &[],
    );
    assert_eq!(m["feature_count"], 243);
}

#[test]
fn arizona_state_plane_feet_without_code() {
    for (f, n) in [("crimes", 287), ("schools", 8), ("streets", 293)] {
        let m = check(&format!("libpysal/geodanet/{f}.shp"), f, &[], None, &[]);
        assert_eq!(m["feature_count"], n, "{f}");
    }
}

#[test]
fn national_grids() {
    let m = check("libpysal/tokyo/tokyomet262.shp", "tokyo", &[], None, &[]);
    assert_eq!(m["feature_count"], 262);
    let m = check("rgdal/scot_BNG.shp", "scot", &[], None, &[]);
    assert_eq!(m["feature_count"], 56);
    assert_eq!(epsg(&m), Some(27700));
    let m = check(
        "rgdal/kiritimati_primary_roads.shp",
        "kiritimati",
        &[],
        None,
        &[],
    );
    assert_eq!(m["feature_count"], 35);
    let m = check("rgdal/cities.shp", "cities", &[], None, &[]);
    assert_eq!(m["feature_count"], 606);
    let m = check("sf/buildings.gpkg", "buildings", &[], None, &[]);
    assert_eq!(m["feature_count"], 158);
}

#[test]
fn multi_layer_gpkg_needs_source_layer() {
    let data = tempfile::tempdir().unwrap();
    let err = ingest_err(data.path(), &vector("momepy/bubenec.gpkg"), "bubenec", &[]);
    for l in [
        "tessellation",
        "buildings",
        "streets",
        "plots",
        "--source-layer",
    ] {
        assert!(err.contains(l), "{err}");
    }
    let m = check(
        "momepy/bubenec.gpkg",
        "bubenec-streets",
        &["--source-layer", "streets"],
        Some("streets"),
        &[],
    );
    assert_eq!(m["feature_count"], 35);
    assert_eq!(epsg(&m), Some(3857));
    let m = check(
        "momepy/bubenec.gpkg",
        "bubenec-buildings",
        &["--source-layer", "buildings"],
        Some("buildings"),
        &[],
    );
    assert_eq!(m["feature_count"], 144);
}

#[test]
fn zipped_shapefile_and_geojson_from_fiona() {
    let m = check("fiona/coutwildrnp.zip", "coutwildrnp", &[], None, &[]);
    assert_eq!(m["feature_count"], 67);
    let m = check("fiona/grenada.geojson", "grenada", &[], None, &[]);
    assert_eq!(m["feature_count"], 1);
}

#[test]
fn file_geodatabase_layers() {
    let data = tempfile::tempdir().unwrap();
    let err = ingest_err(
        data.path(),
        &vector("fiona/testopenfilegdb.gdb.zip"),
        "gdb",
        &[],
    );
    assert!(
        err.contains("multipolygon") && err.contains("--source-layer"),
        "{err}"
    );
    let src = vector("fiona/testopenfilegdb.gdb.zip")
        .to_string_lossy()
        .into_owned();
    for l in ["point", "multipolygon", "linestring25D", "polygon25D"] {
        let m = check(
            "fiona/testopenfilegdb.gdb.zip",
            &l.to_lowercase(),
            &["--source-layer", l],
            Some(l),
            &[],
        );
        assert!(m["feature_count"].as_u64().unwrap() > 0, "{l}");
        if l.ends_with("25D") {
            assert!(
                m["report"]["problems"]["z_dropped"]["count"]
                    .as_u64()
                    .unwrap()
                    > 0,
                "{l}: {}",
                m["report"]
            );
        }
    }
    let _ = src;
    // Null and empty geometries are counted and rejected, not stored.
    // A layer with only null geometries has nothing to serve on a map: refused, saying why.
    let err = ingest_err(
        data.path(),
        &vector("fiona/testopenfilegdb.gdb.zip"),
        "nulls",
        &["--source-layer", "null_polygon"],
    );
    assert!(
        err.contains("no feature could be stored") && err.contains("empty_geometry"),
        "{err}"
    );
}

#[test]
fn kml_folders_are_layers() {
    let data = tempfile::tempdir().unwrap();
    let err = ingest_err(data.path(), &vector("kml/two_layers.kml"), "kml", &[]);
    assert!(
        err.contains("Bingo") && err.contains("--source-layer"),
        "{err}"
    );
    let m = check(
        "kml/two_layers.kml",
        "bingo",
        &["--source-layer", "#Bingo"],
        Some("#Bingo"),
        &[],
    );
    assert!(m["feature_count"].as_u64().unwrap() > 0);
    let m = check("kml/using_the_cdata_element.kml", "cdata", &[], None, &[]);
    assert_eq!(m["feature_count"], 1);
}
