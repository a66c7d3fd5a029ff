//! OGC API – Features against the real binary on a real port, checked with clients
//! and references we did not write: GDAL's OAPIF driver (listing, bbox, paging
//! copies), GDAL's reprojection for the `crs` outputs, and brute-force filtering of
//! the whole collection for `datetime` and property filters.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn demo_server(data: &Path) -> Server {
    let o = run(data, &["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    Server::start(data)
}

/// The demo layers plus 100 North Carolina counties in NAD27 (a real layer with many
/// attributes), served.
fn demo_and_nc(dir: &Path) -> (std::path::PathBuf, Server) {
    let data = dir.join("data");
    let o = run(&data, &["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    ingest_ok(&data, &vector("sf/nc.gpkg"), "nc", &[]);
    let server = Server::start(&data);
    (data, server)
}

fn get_raw(server: &Server, path: &str, accept: Option<&str>) -> reqwest::blocking::Response {
    let c = reqwest::blocking::Client::new();
    let mut r = c.get(format!("{}{path}", server.base));
    if let Some(a) = accept {
        r = r.header("Accept", a);
    }
    r.send().unwrap()
}

fn ogr(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ids(fc: &[Value]) -> BTreeSet<i64> {
    fc.iter().map(|f| f["id"].as_i64().unwrap()).collect()
}

#[test]
fn gdal_oapif_lists_filters_and_copies_through_paging() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, server) = demo_and_nc(tmp.path());
    let url = format!("OAPIF:{}", server.base);

    // Every collection is listed by GDAL.
    let listing = ogr(&["ogrinfo", "-ro", "-so", "-q", &url]);
    for id in ["colonias", "nc", "red-pluvial", "reportes"] {
        assert!(listing.contains(&format!(": {id} ")), "{id} in {listing}");
    }

    // bbox through GDAL's client equals GDAL's own spatial filter on the source,
    // converted to lon/lat first (geometry intersects the box, not its envelope).
    let sources = data.join("demo-sources");
    let cases = [
        (
            "nc",
            [-80.0, 35.0, -78.5, 36.0],
            vector("sf/nc.gpkg").display().to_string(),
        ),
        (
            "colonias",
            [-100.33, 25.66, -100.30, 25.69],
            format!(
                "/vsizip/{}/colonias/colonias.shp",
                sources.join("colonias.zip").display()
            ),
        ),
        (
            "red-pluvial",
            [-100.3, 25.6, -100.2, 25.7],
            sources.join("red-pluvial.gpkg").display().to_string(),
        ),
    ];
    for (layer, b, src) in cases {
        let lonlat = tmp.path().join(format!("{layer}-4326.geojson"));
        ogr2ogr(&[
            "-f",
            "GeoJSON",
            lonlat.to_str().unwrap(),
            &src,
            "-t_srs",
            "EPSG:4326",
        ]);
        let spat: Vec<String> = b.iter().map(|x| x.to_string()).collect();
        let spat: Vec<&str> = spat.iter().map(String::as_str).collect();
        let want = ogr_geojson(
            lonlat.to_str().unwrap(),
            None,
            false,
            &["-spat", spat[0], spat[1], spat[2], spat[3]],
        )["features"]
            .as_array()
            .unwrap()
            .len();
        assert!(want > 0, "{layer}: empty case");
        let mut args = vec!["ogrinfo", "-ro", "-q", &url, layer, "-spat"];
        args.extend(&spat);
        let got = ogr(&args).matches("OGRFeature(").count();
        assert_eq!(got, want, "{layer} {b:?}");
    }

    // ogr2ogr copies a whole collection through paging (17 per page: 6 pages) and
    // the attributes equal the source's.
    let copy = tmp.path().join("nc-copy.gpkg");
    ogr2ogr(&[
        "-f",
        "GPKG",
        copy.to_str().unwrap(),
        &url,
        "nc",
        "-oo",
        "PAGE_SIZE=17",
    ]);
    let copied = ogr_geojson(copy.to_str().unwrap(), None, false, &[]);
    let source = ogr_geojson(vector("sf/nc.gpkg").to_str().unwrap(), None, true, &[]);
    let key = |f: &Value| f["properties"]["FIPS"].as_str().unwrap().to_string();
    let mut a: Vec<&Value> = copied["features"].as_array().unwrap().iter().collect();
    let mut b: Vec<&Value> = source["features"].as_array().unwrap().iter().collect();
    assert_eq!(a.len(), 100);
    assert_eq!(a.len(), b.len());
    a.sort_by_key(|f| key(f));
    b.sort_by_key(|f| key(f));
    for (x, y) in a.iter().zip(&b) {
        for k in ["NAME", "FIPS", "AREA", "BIR74", "SID79", "NWBIR79"] {
            assert_eq!(x["properties"][k], y["properties"][k], "{k} of {}", key(x));
        }
        let (p, q) = (coords(&x["geometry"]), coords(&y["geometry"]));
        assert_eq!(p.len(), q.len(), "vertices of {}", key(x));
    }
}

#[test]
fn crs_outputs_follow_the_authority_axis_order() {
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let base = "/collections/reportes/items?limit=50";
    let (_, lonlat) = server.get(base);
    let lonlat = lonlat["features"].as_array().unwrap().clone();
    assert_eq!(lonlat.len(), 50);

    // EPSG:4326 is latitude first.
    let r = get_raw(&server, &format!("{base}&crs=EPSG:4326"), None);
    assert_eq!(
        r.headers()["content-crs"],
        "<http://www.opengis.net/def/crs/EPSG/0/4326>"
    );
    let latlon: Value = r.json().unwrap();
    for (a, b) in lonlat.iter().zip(latlon["features"].as_array().unwrap()) {
        let (p, q) = (coords(&a["geometry"])[0], coords(&b["geometry"])[0]);
        assert_eq!((p.1, p.0), q);
    }
    let r = get_raw(&server, base, None);
    assert_eq!(
        r.headers()["content-crs"],
        "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    );

    // Projected outputs equal GDAL's transformation of the CRS84 features; EPSG:6372
    // comes northing first (its EPSG axis order), GDAL's GeoJSON easting first.
    let src = tmp.path().join("lonlat.geojson");
    std::fs::write(
        &src,
        serde_json::to_vec(&serde_json::json!({"type": "FeatureCollection", "features": lonlat}))
            .unwrap(),
    )
    .unwrap();
    for (code, north_first) in [(32614, false), (6369, false), (3857, false), (6372, true)] {
        let reference = ogr_geojson(
            src.to_str().unwrap(),
            None,
            false,
            &["-s_srs", "EPSG:4326", "-t_srs", &format!("EPSG:{code}")],
        );
        let (s, ours) = server.get(&format!(
            "{base}&crs=http://www.opengis.net/def/crs/EPSG/0/{code}"
        ));
        assert_eq!(s, 200);
        let ours = ours["features"].as_array().unwrap();
        for (a, b) in ours.iter().zip(reference["features"].as_array().unwrap()) {
            let p = coords(&a["geometry"])[0];
            let p = if north_first { (p.1, p.0) } else { p };
            let q = coords(&b["geometry"])[0];
            assert!(
                (p.0 - q.0).abs() < 0.01 && (p.1 - q.1).abs() < 0.01,
                "EPSG:{code}: {p:?} vs GDAL {q:?}"
            );
        }
    }

    // bbox-crs: the same box in lat/lon order selects the same features; a UTM box
    // selects exactly the features whose UTM coordinates fall in it.
    let b = [-100.35, 25.65, -100.25, 25.72];
    let crs84 = ids(&all_pages(
        &server,
        &format!(
            "/collections/reportes/items?bbox={},{},{},{}",
            b[0], b[1], b[2], b[3]
        ),
    ));
    let swapped = ids(&all_pages(
        &server,
        &format!(
            "/collections/reportes/items?bbox={},{},{},{}&bbox-crs=EPSG:4326",
            b[1], b[0], b[3], b[2]
        ),
    ));
    assert!(!crs84.is_empty());
    assert_eq!(crs84, swapped);
    let utm = all_pages(
        &server,
        "/collections/reportes/items?crs=EPSG:32614&limit=1000",
    );
    let ubox = [362_000.0, 2_838_000.0, 372_000.0, 2_846_000.0];
    let want: BTreeSet<i64> = utm
        .iter()
        .filter(|f| {
            let (x, y) = coords(&f["geometry"])[0];
            ubox[0] <= x && x <= ubox[2] && ubox[1] <= y && y <= ubox[3]
        })
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(!want.is_empty(), "the UTM box holds some reports");
    let got = ids(&all_pages(
        &server,
        &format!(
            "/collections/reportes/items?bbox={},{},{},{}&bbox-crs=EPSG:32614",
            ubox[0], ubox[1], ubox[2], ubox[3]
        ),
    ));
    assert_eq!(got, want);

    // One feature in another CRS; unsupported CRSs are a 400 that lists the choices.
    let (s, f) = server.get("/collections/colonias/items/3?crs=EPSG:6372");
    assert_eq!(s, 200);
    let (n, e) = coords(&f["geometry"])[0];
    assert!(
        n > 1_000_000.0 && n < 2_500_000.0 && e > 2_000_000.0,
        "{n} {e}"
    );
    for path in [
        "/collections/reportes/items?crs=EPSG:2154",
        "/collections/reportes/items?bbox-crs=EPSG:9999&bbox=1,2,3,4",
        "/collections/reportes/items/1?crs=urn:nada",
    ] {
        let (s, e) = server.get(path);
        assert_eq!(s, 400, "{path}");
        assert!(
            e["description"].as_str().unwrap().contains("EPSG/0/32614"),
            "{path}: {e}"
        );
    }
    // The collection advertises its CRSs.
    let (_, c) = server.get("/collections/reportes");
    let crs: Vec<&str> = c["crs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(crs.len(), 6);
    assert_eq!(
        c["storageCrs"],
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    );
}

#[test]
fn filters_datetime_and_paging_match_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let all = all_pages(&server, "/collections/reportes/items?limit=10000");
    assert_eq!(all.len(), 600);
    let day = |f: &Value| f["properties"]["fecha"].as_str().unwrap_or("").to_string();

    // Property equality and a closed date interval, paged 13 at a time.
    let want: BTreeSet<i64> = all
        .iter()
        .filter(|f| f["properties"]["tipo"] == "Bache")
        .filter(|f| ("2025-03-01".."2025-07-01").contains(&day(f).as_str()))
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(want.len() > 13, "{}", want.len());
    let path = "/collections/reportes/items?tipo=Bache&datetime=2025-03-01/2025-06-30&limit=13";
    let got = all_pages(&server, path);
    assert_eq!(ids(&got), want);
    assert_eq!(got.len(), want.len(), "no duplicates across pages");

    // Every link carries every parameter; prev of the second page is the first.
    let r = get_raw(&server, &format!("{path}&offset=13"), None);
    let link_header = r.headers()["link"].to_str().unwrap().to_string();
    assert!(link_header.contains("rel=\"next\"") && link_header.contains("rel=\"prev\""));
    let page2: Value = r.json().unwrap();
    let prev = page2["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "prev")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_string();
    for p in [
        "tipo=Bache",
        "datetime=2025-03-01%2F2025-06-30",
        "limit=13",
        "offset=0",
    ] {
        assert!(prev.contains(p), "{p} in {prev}");
    }
    let first: Value = reqwest::blocking::get(&prev).unwrap().json().unwrap();
    let (_, direct) = server.get(path);
    assert_eq!(first["features"], direct["features"]);

    // Open intervals and instants.
    for (dt, keep) in [
        (
            "2025-11-01/..",
            Box::new(|d: &str| d >= "2025-11-01") as Box<dyn Fn(&str) -> bool>,
        ),
        (
            "../2025-01-31",
            Box::new(|d: &str| !d.is_empty() && d <= "2025-01-31"),
        ),
        ("2025-07-10", Box::new(|d: &str| d == "2025-07-10")),
        (
            "2025-07-10T12:00:00Z",
            Box::new(|d: &str| d == "2025-07-10"),
        ),
    ] {
        let want: BTreeSet<i64> = all
            .iter()
            .filter(|f| keep(&day(f)))
            .map(|f| f["id"].as_i64().unwrap())
            .collect();
        let got = ids(&all_pages(
            &server,
            &format!("/collections/reportes/items?datetime={dt}&limit=500"),
        ));
        assert_eq!(got, want, "datetime={dt}");
    }
    // A numeric and a boolean queryable.
    let folio = all[17]["properties"]["folio"].as_i64().unwrap();
    let got = all_pages(
        &server,
        &format!("/collections/reportes/items?folio={folio}"),
    );
    assert_eq!(ids(&got), BTreeSet::from([all[17]["id"].as_i64().unwrap()]));
    let attended = all
        .iter()
        .filter(|f| f["properties"]["atendido"] == true)
        .count();
    assert_eq!(
        all_pages(
            &server,
            "/collections/reportes/items?atendido=true&limit=1000"
        )
        .len(),
        attended
    );

    // Bad parameters: 400s that name the parameter.
    for (path, needle) in [
        (
            "/collections/reportes/items?colour=red",
            "unknown query parameter 'colour'",
        ),
        ("/collections/reportes/items?limit=0", "limit"),
        ("/collections/reportes/items?limit=10001", "limit"),
        ("/collections/reportes/items?folio=abc", "folio"),
        ("/collections/reportes/items?datetime=ayer", "datetime"),
        ("/collections/colonias/items?datetime=2025-01-01", "no date"),
        (
            "/collections/reportes/items?filter=folio>>1",
            "at character 7",
        ),
        (
            "/collections/reportes/items?filter=foli%20>%201",
            "'foli' is not a queryable",
        ),
        ("/collections/reportes/items?f=xml", "f must be"),
        (
            "/collections?bbox=1,2,3,4",
            "unknown query parameter 'bbox'",
        ),
    ] {
        let (s, e) = server.get(path);
        assert_eq!(s, 400, "{path}");
        assert!(
            e["description"].as_str().unwrap().contains(needle),
            "{path}: {e}"
        );
    }
}

#[test]
fn landing_conformance_openapi_queryables_and_html() {
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let (s, landing) = server.get("/");
    assert_eq!(s, 200);
    let rels: BTreeSet<&str> = landing["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    for rel in [
        "self",
        "alternate",
        "service-desc",
        "service-doc",
        "conformance",
        "data",
    ] {
        assert!(rels.contains(rel), "{rel}");
    }
    let (_, conf) = server.get("/conformance");
    let classes = conf["conformsTo"].as_array().unwrap();
    assert!(classes.contains(&"http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs".into()));

    // OpenAPI: its media type, one items path per collection with its queryables.
    let r = get_raw(&server, "/api", None);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oai.openapi+json;version=3.0"
    );
    let api: Value = r.json().unwrap();
    assert_eq!(api["openapi"], "3.0.3");
    let params: Vec<String> = api["paths"]["/collections/reportes/items"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["name"].as_str().map(String::from).unwrap_or_else(|| {
                p["$ref"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .into()
            })
        })
        .collect();
    for p in [
        "bbox", "crs", "bbox-crs", "datetime", "limit", "tipo", "fecha",
    ] {
        assert!(params.iter().any(|x| x == p), "{p} in {params:?}");
    }
    // Every $ref resolves.
    let text = api.to_string();
    for r in text.split("\"$ref\":\"#/").skip(1) {
        let path = &r[..r.find('"').unwrap()];
        let mut v = &api;
        for part in path.split('/') {
            v = &v[part];
        }
        assert!(!v.is_null(), "dangling $ref #/{path}");
    }
    let r = get_raw(&server, "/api.html", None);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().unwrap().contains("/collections/reportes/items"));

    // Queryables: JSON Schema with the stored types.
    let r = get_raw(&server, "/collections/reportes/queryables", None);
    assert_eq!(r.headers()["content-type"], "application/schema+json");
    let q: Value = r.json().unwrap();
    assert_eq!(q["type"], "object");
    assert_eq!(q["properties"]["folio"]["type"], "integer");
    assert_eq!(q["properties"]["fecha"]["format"], "date");
    assert_eq!(q["properties"]["atendido"]["type"], "boolean");
    assert_eq!(q["properties"]["geometry"]["format"], "geometry-point");

    // Temporal extent from the date property; none for a layer without dates.
    let (_, c) = server.get("/collections/reportes");
    let t = c["extent"]["temporal"]["interval"][0].as_array().unwrap();
    assert!(t[0].as_str().unwrap().starts_with("2025-01"), "{t:?}");
    let (_, c) = server.get("/collections/colonias");
    assert!(c["extent"].get("temporal").is_none());
    assert_eq!(c["itemType"], "feature");

    // HTML for a browser (Accept) and by f=html; JSON for API clients.
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for (path, needle) in [
        ("/", "Monterrey DataHub"),
        ("/collections", "Colonias"),
        ("/collections/colonias", "Queryables"),
        ("/collections/colonias/items?limit=5", "new maplibregl.Map"),
        ("/collections/colonias/items/3", "nombre"),
        ("/conformance", "ogcapi-features-1"),
    ] {
        let r = get_raw(&server, path, Some(browser));
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let body = r.text().unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(body.starts_with("<!DOCTYPE html>"));
    }
    // A forged forwarded host cannot inject markup into links or pages.
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/?f=html", server.base))
        .header("X-Forwarded-Host", "evil\"><script>alert(1)</script>")
        .send()
        .unwrap();
    let body = r.text().unwrap();
    assert!(
        !body.contains("<script>alert") && !body.contains("evil"),
        "{body}"
    );
    // MapLibre is served by DataHub itself (compiled in, started outside the
    // repository), and only it.
    let r = get_raw(&server, "/web/maplibre/maplibre-gl.js", None);
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(r.bytes().unwrap().len() > 100_000);
    assert_eq!(
        get_raw(&server, "/web/maplibre/maplibre-gl.css", None).status(),
        200
    );
    assert_eq!(
        get_raw(&server, "/web/maplibre/../../package.json", None).status(),
        404
    );
    // Projected output has no map (the preview is lon/lat).
    let body = get_raw(
        &server,
        "/collections/colonias/items?f=html&crs=EPSG:32614",
        None,
    )
    .text()
    .unwrap();
    assert!(!body.contains("maplibregl") && body.contains("<table>"));
    let r = get_raw(&server, "/collections/colonias/items?f=html", None);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = get_raw(
        &server,
        "/collections/colonias/items",
        Some("application/geo+json"),
    );
    assert_eq!(r.headers()["content-type"], "application/geo+json");
    let r = get_raw(&server, "/collections/colonias/items?f=json", Some(browser));
    assert_eq!(r.headers()["content-type"], "application/geo+json");
}

#[test]
fn downloads_reopen_in_gdal_and_equal_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, server) = demo_and_nc(tmp.path());
    let source = ogr_geojson(vector("sf/nc.gpkg").to_str().unwrap(), None, true, &[]);
    let by_fips = |fc: &Value| -> std::collections::BTreeMap<String, Value> {
        fc["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["properties"]["FIPS"].as_str().unwrap().to_string(),
                    f.clone(),
                )
            })
            .collect()
    };
    let want = by_fips(&source);
    // The collection links every download.
    let (_, c) = server.get("/collections/nc");
    let enclosures = c["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "enclosure")
        .count();
    assert_eq!(enclosures, 7);

    for (f, file, ctype) in [
        ("geojson", "nc.geojson", "application/geo+json"),
        ("fgb", "nc.fgb", "application/flatgeobuf"),
        ("csv", "nc.csv", "text/csv; charset=utf-8"),
        ("gpkg", "nc.gpkg", "application/geopackage+sqlite3"),
        ("shp", "nc.zip", "application/zip"),
        ("kml", "nc.kml", "application/vnd.google-earth.kml+xml"),
    ] {
        let r = get_raw(&server, &format!("/collections/nc/items?f={f}"), None);
        assert_eq!(r.status(), 200, "{f}");
        assert_eq!(r.headers()["content-type"], ctype);
        assert_eq!(
            r.headers()["content-disposition"],
            format!("attachment; filename=\"{file}\"").as_str()
        );
        let path = tmp.path().join(file);
        std::fs::write(&path, r.bytes().unwrap()).unwrap();
        let open = if f == "shp" {
            format!("/vsizip/{}/nc.shp", path.display())
        } else {
            path.display().to_string()
        };
        let got = by_fips(&ogr_geojson(&open, None, f != "csv", &[]));
        assert_eq!(got.len(), 100, "{f}");
        for (k, w) in &want {
            let g = &got[k];
            // KML and CSV carry attributes as text.
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for field in ["NAME", "BIR74", "SID79"] {
                let mut a = &g["properties"][field];
                if f == "kml" && a.is_null() {
                    // GDAL's KML writer makes a NAME field the Placemark's <name>.
                    a = &g["properties"]["Name"];
                }
                let b = &w["properties"][field];
                if f == "kml" || f == "csv" {
                    assert_eq!(
                        text(a).trim_end_matches(".0"),
                        text(b).trim_end_matches(".0"),
                        "{f} {k} {field}"
                    );
                } else {
                    assert_eq!(a, b, "{f} {k} {field}");
                }
            }
            if f != "csv" {
                // Same vertices and extent (ring orientation follows RFC 7946, so the
                // order may be reversed from the source's).
                let (p, q) = (coords(&g["geometry"]), coords(&w["geometry"]));
                assert_eq!(p.len(), q.len(), "{f} {k}");
                let (a, b) = (
                    envelope(&g["geometry"]).unwrap(),
                    envelope(&w["geometry"]).unwrap(),
                );
                let err = (0..4).map(|i| (a[i] - b[i]).abs()).fold(0.0, f64::max);
                assert!(err < 1e-6, "{f} {k}: {err}");
            }
        }
    }
    // Excel: the attributes and a point inside each county, read back by GDAL's XLSX
    // driver.
    let r = get_raw(&server, "/collections/nc/items?f=xlsx", None);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let path = tmp.path().join("nc.xlsx");
    std::fs::write(&path, r.bytes().unwrap()).unwrap();
    let rows = ogr_geojson(&path.display().to_string(), None, false, &[]);
    let rows = rows["features"].as_array().unwrap();
    assert_eq!(rows.len(), 100);
    for row in rows {
        let p = &row["properties"];
        let w = &want[p["FIPS"].as_str().unwrap()];
        for field in ["NAME", "BIR74", "SID79"] {
            let (a, b) = (&p[field], &w["properties"][field]);
            match (a.as_f64(), b.as_f64()) {
                // GDAL's XLSX reader types whole numbers as integers.
                (Some(x), Some(y)) => assert_eq!(x, y, "xlsx {field}"),
                _ => assert_eq!(a, b, "xlsx {field}"),
            }
        }
        let (x, y) = (
            p["longitud"].as_f64().unwrap(),
            p["latitud"].as_f64().unwrap(),
        );
        let b = envelope(&w["geometry"]).unwrap();
        assert!(
            x > b[0] && x < b[2] && y > b[1] && y < b[3],
            "xlsx point {x} {y} outside {b:?}"
        );
    }
    // A projected output CRS names the point columns x/y, in metres.
    let r = get_raw(
        &server,
        "/collections/nc/items?f=xlsx&crs=http://www.opengis.net/def/crs/EPSG/0/3857",
        None,
    );
    assert_eq!(r.status(), 200);
    std::fs::write(&path, r.bytes().unwrap()).unwrap();
    let rows = ogr_geojson(&path.display().to_string(), None, false, &[]);
    let x = rows["features"][0]["properties"]["x"].as_f64().unwrap();
    assert!(x < -8_000_000.0, "{x}");

    // The shapefile says its encoding; accents survive (demo colonias).
    let r = get_raw(&server, "/collections/colonias/items?f=shp", None);
    let z = tmp.path().join("colonias.zip");
    std::fs::write(&z, r.bytes().unwrap()).unwrap();
    let listing = Command::new("unzip").arg("-l").arg(&z).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("colonias.cpg"));
    let names = ogr_geojson(
        &format!("/vsizip/{}/colonias.shp", z.display()),
        None,
        false,
        &[],
    );
    assert!(names["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["properties"]["nombre"] == "Tecnológico"));

    // A filtered download holds the query's result; a projected one is in its CRS.
    let (_, page) = server.get("/collections/nc/items?bbox=-80,35,-78.5,36&limit=1");
    let r = get_raw(
        &server,
        "/collections/nc/items?bbox=-80,35,-78.5,36&f=gpkg",
        None,
    );
    let p = tmp.path().join("filtered.gpkg");
    std::fs::write(&p, r.bytes().unwrap()).unwrap();
    let filtered = ogr_geojson(p.to_str().unwrap(), None, false, &[]);
    assert_eq!(
        filtered["features"].as_array().unwrap().len() as u64,
        page["numberMatched"].as_u64().unwrap()
    );
    let r = get_raw(
        &server,
        "/collections/reportes/items?f=fgb&crs=EPSG:32614",
        None,
    );
    assert_eq!(
        r.headers()["content-crs"],
        "<http://www.opengis.net/def/crs/EPSG/0/32614>"
    );
    let p = tmp.path().join("utm.fgb");
    std::fs::write(&p, r.bytes().unwrap()).unwrap();
    let info = ogr(&["ogrinfo", "-ro", "-so", "-al", p.to_str().unwrap()]);
    assert!(
        info.contains("UTM zone 14N") && info.contains("Feature Count: 600"),
        "{info}"
    );
    let (s, e) = server.get("/collections/reportes/items?f=kml&crs=EPSG:32614");
    assert_eq!(s, 400);
    assert!(e["description"].as_str().unwrap().contains("KML"));
    // Nothing left behind in the scratch folder.
    let left: Vec<_> = std::fs::read_dir(data.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// OWSLib's Features client (Python venv made by `make test` from
/// tests/requirements.txt).
#[test]
fn owslib_features_client() {
    let python = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let b = [-100.35, 25.65, -100.25, 25.72];
    let o = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/owslib_client.py"))
        .arg(&server.base)
        .arg("reportes")
        .arg(format!("{},{},{},{}", b[0], b[1], b[2], b[3]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        seen["collections"],
        serde_json::json!(["colonias", "red-pluvial", "reportes"])
    );
    assert_eq!(seen["title"], "Reportes ciudadanos (sintético)");
    assert!(seen["conformance"]
        .as_array()
        .unwrap()
        .contains(&"http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core".into()));
    assert!(seen["queryables"]
        .as_array()
        .unwrap()
        .contains(&"tipo".into()));
    // bbox through OWSLib's paging = the brute-force set over all features.
    let all = all_pages(&server, "/collections/reportes/items?limit=1000");
    let want: BTreeSet<i64> = all
        .iter()
        .filter(|f| {
            let (x, y) = coords(&f["geometry"])[0];
            b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3]
        })
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    let got: Vec<i64> = seen["bbox_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "no duplicates or gaps across pages");
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!(seen["bbox_matched"].as_u64().unwrap() as usize, want.len());
    let all_ids: Vec<i64> = seen["all_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(all_ids, (1..=600).collect::<Vec<i64>>());
}

fn fold(s: &str) -> String {
    s.to_lowercase()
        .replace('á', "a")
        .replace('é', "e")
        .replace('í', "i")
        .replace('ó', "o")
        .replace('ú', "u")
        .replace('ñ', "n")
}

/// Point in polygon (ray casting) for the brute-force side of the tests.
fn inside(p: (f64, f64), ring: &[(f64, f64)]) -> bool {
    let mut c = false;
    for i in 0..ring.len() {
        let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            c = !c;
        }
    }
    c
}

#[test]
fn cql2_filters_match_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = demo_server(&data);
    let all = all_pages(&server, "/collections/reportes/items?limit=10000");
    let p = |f: &Value, k: &str| f["properties"][k].clone();
    let q = |s: &str| form_urlencoded_encode(s);
    let tri = [(-100.40, 25.62), (-100.20, 25.65), (-100.30, 25.76)];
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let cases: Vec<(&str, Option<&str>, Pred)> = vec![
        (
            "tipo = 'Bache' AND atendido = true",
            Some(r#"{"op":"and","args":[{"op":"=","args":[{"property":"tipo"},"Bache"]},{"op":"=","args":[{"property":"atendido"},true]}]}"#),
            Box::new(move |f| p(f, "tipo") == "Bache" && p(f, "atendido") == true),
        ),
        (
            "tipo IN ('Bache', 'Basura') AND NOT atendido = true",
            None,
            Box::new(move |f| {
                (p(f, "tipo") == "Bache" || p(f, "tipo") == "Basura") && p(f, "atendido") == false
            }),
        ),
        (
            "folio BETWEEN 50100 AND 50199",
            Some(r#"{"op":"between","args":[{"property":"folio"},50100,50199]}"#),
            Box::new(move |f| (50100..=50199).contains(&p(f, "folio").as_i64().unwrap())),
        ),
        (
            "descripcion LIKE '%sin ilumina_i_n'",
            None,
            Box::new(move |f| p(f, "descripcion").as_str().unwrap_or("").ends_with("sin iluminación")),
        ),
        (
            "fecha >= DATE('2025-06-01') AND fecha < DATE('2025-07-01')",
            None,
            Box::new(move |f| {
                let d = p(f, "fecha");
                let d = d.as_str().unwrap_or("");
                ("2025-06-01".."2025-07-01").contains(&d)
            }),
        ),
        (
            "S_INTERSECTS(geometry, BBOX(-100.35, 25.65, -100.25, 25.72))",
            Some(r#"{"op":"s_intersects","args":[{"property":"geometry"},{"bbox":[-100.35,25.65,-100.25,25.72]}]}"#),
            Box::new(move |f| {
                let (x, y) = coords(&f["geometry"])[0];
                (-100.35..=-100.25).contains(&x) && (25.65..=25.72).contains(&y)
            }),
        ),
        (
            "S_INTERSECTS(geometry, POLYGON((-100.40 25.62, -100.20 25.65, -100.30 25.76, -100.40 25.62))) OR tipo = 'Fuga de agua'",
            None,
            Box::new(move |f| inside(coords(&f["geometry"])[0], &tri) || p(f, "tipo") == "Fuga de agua"),
        ),
    ];
    for (text, json, pred) in cases {
        let want: BTreeSet<i64> = all
            .iter()
            .filter(|f| pred(f))
            .map(|f| f["id"].as_i64().unwrap())
            .collect();
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{text}: {} of {}",
            want.len(),
            all.len()
        );
        let got = all_pages(
            &server,
            &format!("/collections/reportes/items?limit=9&filter={}", q(text)),
        );
        assert_eq!(ids(&got), want, "{text}");
        assert_eq!(got.len(), want.len(), "{text}: pages overlap");
        if let Some(j) = json {
            let got = all_pages(
                &server,
                &format!(
                    "/collections/reportes/items?limit=50&filter-lang=cql2-json&filter={}",
                    q(j)
                ),
            );
            assert_eq!(ids(&got), want, "{j}");
        }
        // Combined with bbox and datetime.
        let b = [-100.38, 25.62, -100.22, 25.74];
        let want2: BTreeSet<i64> = all
            .iter()
            .filter(|f| pred(f))
            .filter(|f| {
                let (x, y) = coords(&f["geometry"])[0];
                b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3]
            })
            .filter(|f| p(f, "fecha").as_str().is_some_and(|d| d >= "2025-04-01"))
            .map(|f| f["id"].as_i64().unwrap())
            .collect();
        let got = all_pages(
            &server,
            &format!(
                "/collections/reportes/items?limit=5&bbox={},{},{},{}&datetime=2025-04-01/..&filter={}",
                b[0], b[1], b[2], b[3], q(text)
            ),
        );
        assert_eq!(ids(&got), want2, "{text} + bbox + datetime");
    }

    // Accent- and case-insensitive search over the colonias' names.
    let colonias = all_pages(&server, "/collections/colonias/items?limit=1000");
    let want: BTreeSet<i64> = colonias
        .iter()
        .filter(|f| fold(f["properties"]["nombre"].as_str().unwrap()).contains("nino"))
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(!want.is_empty());
    let got = all_pages(
        &server,
        &format!(
            "/collections/colonias/items?filter={}",
            q("ACCENTI(CASEI(nombre)) LIKE ACCENTI(CASEI('%NIÑO%'))")
        ),
    );
    assert_eq!(ids(&got), want);

    // Polygons and lines against SpatiaLite's ST_Intersects through GDAL's SQLite
    // dialect on the stored layer.
    for (layer, wkt) in [
        (
            "colonias",
            "POLYGON((-100.34 25.66, -100.29 25.66, -100.31 25.70, -100.34 25.66))",
        ),
        ("red-pluvial", "LINESTRING(-100.40 25.60, -100.20 25.75)"),
    ] {
        let fgb = current_fgb(&data, layer);
        let sql = format!(
            "SELECT \"__datahub_fid\" FROM \"{layer}\" WHERE ST_Intersects(GEOMETRY, ST_GeomFromText('{wkt}', 4326))"
        );
        let out = ogr(&[
            "ogrinfo",
            "-ro",
            "-q",
            "-dialect",
            "SQLite",
            "-sql",
            &sql,
            fgb.to_str().unwrap(),
        ]);
        let want: BTreeSet<i64> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("__datahub_fid (Integer64) = "))
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(!want.is_empty(), "{layer}: {out}");
        let got = all_pages(
            &server,
            &format!(
                "/collections/{layer}/items?filter={}",
                q(&format!("S_INTERSECTS(geometry, {wkt})"))
            ),
        );
        assert_eq!(ids(&got), want, "{layer}");
    }

    // filter-crs: a UTM box as a filter literal equals the same box as bbox-crs.
    let ubox = "BBOX(362000, 2838000, 372000, 2846000)";
    let a = ids(&all_pages(
        &server,
        &format!(
            "/collections/reportes/items?filter-crs=EPSG:32614&filter={}",
            q(&format!("S_INTERSECTS(geometry, {ubox})"))
        ),
    ));
    let b = ids(&all_pages(
        &server,
        "/collections/reportes/items?bbox-crs=EPSG:32614&bbox=362000,2838000,372000,2846000",
    ));
    assert!(!a.is_empty());
    assert_eq!(a, b);

    // Conformance declares CQL2; malformed filters are 400s with the position.
    let (_, conf) = server.get("/conformance");
    assert!(conf["conformsTo"]
        .as_array()
        .unwrap()
        .contains(&"http://www.opengis.net/spec/cql2/1.0/conf/cql2-text".into()));
    let (s, e) = server.get(&format!(
        "/collections/reportes/items?filter={}",
        q("tipo = 'Bache' AND")
    ));
    assert_eq!(s, 400);
    assert!(
        e["description"]
            .as_str()
            .unwrap()
            .contains("at character 19"),
        "{e}"
    );
}

fn form_urlencoded_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The OpenAPI document passes an independent OpenAPI 3.0 validator
/// (openapi-spec-validator, in the test venv); browsers on other origins may read
/// features and tiles (CORS).
#[test]
fn openapi_validates_and_cors_allows_browsers() {
    let python = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let api = get_raw(&server, "/api", None).bytes().unwrap();
    let doc = tmp.path().join("api.json");
    std::fs::write(&doc, &api).unwrap();
    let o = Command::new(&python)
        .args([
            "-c",
            "import json,sys; from openapi_spec_validator import validate; \
             from openapi_spec_validator.validation.validators import OpenAPIV30SpecValidator; \
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV30SpecValidator); print('valid')",
        ])
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("valid"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let c = reqwest::blocking::Client::new();
    let r = c
        .get(format!(
            "{}/collections/reportes/items?limit=1",
            server.base
        ))
        .header("Origin", "https://portal.monterrey.gob.mx")
        .send()
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("link") && exposed.contains("content-crs"),
        "{exposed}"
    );
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/tiles/reportes/12/906/1745.mvt", server.base),
        )
        .header("Origin", "https://portal.monterrey.gob.mx")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

/// The HTML pages' MapLibre previews in a real browser (Debian's Chromium through
/// playwright-core, both installed by `make test`): every feature of the page drawn,
/// no console errors, no failed requests (MapLibre comes from DataHub, not a CDN).
#[test]
fn html_previews_draw_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let server = demo_server(&tmp.path().join("data"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser-check.js");
    let o = Command::new("node")
        .arg(&script)
        .arg(&server.base)
        .args([
            "/collections/colonias/items?limit=20&f=html",
            "/collections/red-pluvial/items?f=html",
            "/collections/reportes/items/5?f=html",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "browser check failed (chromium and tests/node_modules come from `make test`): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    // Features are told apart by their properties (GeoJSON ids are not feature-state ids).
    assert_eq!(
        r["drawn"]["/collections/colonias/items?limit=20&f=html"], 20,
        "{r}"
    );
    assert_eq!(
        r["drawn"]["/collections/red-pluvial/items?f=html"], 40,
        "{r}"
    );
    assert_eq!(r["drawn"]["/collections/reportes/items/5?f=html"], 1, "{r}");
}
