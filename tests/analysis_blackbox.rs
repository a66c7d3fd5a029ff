//! Neighbourhood analysis against the real binary on a real port, checked with
//! computations we did not write: SpatiaLite (`ST_Within`, `ST_Intersects`,
//! `ST_Intersection`, geodesic `ST_Length`/`ST_Area`) through GDAL's SQLite dialect,
//! and brute force over every feature with `geo` in the test.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use common::*;
use geo::{BoundingRect, Centroid, Contains, Distance, Intersects};
use serde_json::{json, Value};

fn geom(v: &Value) -> geo::Geometry<f64> {
    let g = geojson::Geometry::from_json_value(v.clone()).unwrap();
    geo::Geometry::try_from(g).unwrap()
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Rows of an `ogrinfo -sql` answer: field name -> value text, per feature.
fn sqlite(sql: &str, ds: &Path) -> Vec<BTreeMap<String, String>> {
    let o = Command::new("ogrinfo")
        .args(["-ro", "-q", "-dialect", "SQLite", "-sql", sql])
        .arg(ds)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut rows = Vec::new();
    let mut cur: Option<BTreeMap<String, String>> = None;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if line.starts_with("OGRFeature(") {
            if let Some(r) = cur.take() {
                rows.push(r);
            }
            cur = Some(BTreeMap::new());
        } else if let (Some(r), Some((k, v))) = (cur.as_mut(), line.trim().split_once(" = ")) {
            let name = k.split(" (").next().unwrap().to_string();
            r.insert(name, v.to_string());
        }
    }
    rows.extend(cur);
    rows
}

/// Places of GeoNames (perf/rg_cities1000.csv) as (lon, lat, name) where `keep` says.
fn places(keep: impl Fn(&[&str]) -> bool) -> Vec<(f64, f64, String)> {
    let text = std::fs::read_to_string(testdata().join("perf/rg_cities1000.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c.len() == 6 && keep(&c)).then(|| {
                (
                    c[1].parse().unwrap(),
                    c[0].parse().unwrap(),
                    c[2].replace('"', ""),
                )
            })
        })
        .collect()
}

/// Writes points as CSV (lon, lat, nombre, peso) and ingests them.
fn ingest_points(data: &Path, dir: &Path, layer: &str, pts: &[(f64, f64, String)]) {
    let mut s = String::from("lon,lat,nombre,peso\n");
    for (i, (x, y, n)) in pts.iter().enumerate() {
        // `{}` prints the shortest text that reads back as the same double.
        writeln!(s, "{x},{y},\"{n}\",{}", (i * 37) % 101).unwrap();
    }
    let p = dir.join(format!("{layer}.csv"));
    std::fs::write(&p, s).unwrap();
    ingest_ok(data, &p, layer, &[]);
}

/// Zones as (id, geometry) from the items endpoint.
fn zones_of(server: &Server, layer: &str) -> Vec<(i64, geo::Geometry<f64>)> {
    all_pages(server, &format!("/collections/{layer}/items?limit=1000"))
        .iter()
        .map(|f| (f["id"].as_i64().unwrap(), geom(&f["geometry"])))
        .collect()
}

/// Points as (id, lon, lat, peso) from the items endpoint.
fn points_of(server: &Server, layer: &str) -> Vec<(i64, f64, f64, i64)> {
    all_pages(server, &format!("/collections/{layer}/items?limit=10000"))
        .iter()
        .map(|f| {
            let c = &f["geometry"]["coordinates"];
            (
                f["id"].as_i64().unwrap(),
                c[0].as_f64().unwrap(),
                c[1].as_f64().unwrap(),
                f["properties"]["peso"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn rows_by_id(v: &Value) -> BTreeMap<i64, Value> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r.clone()))
        .collect()
}

/// The 32 states of Mexico (libpysal; empty .prj, lon/lat values) and Mexico's
/// GeoNames places plus points placed exactly on the states' vertices (shared borders).
fn mexico(dir: &Path) -> (std::path::PathBuf, Vec<(f64, f64, String)>) {
    let data = dir.join("data");
    ingest_ok(
        &data,
        &vector("libpysal/mexico/mexicojoin.shp"),
        "estados",
        &["--crs", "EPSG:4326"],
    );
    let mut pts = places(|c| c[5] == "MX");
    // A few Texan places: outside every zone.
    pts.extend(
        places(|c| c[5] == "US" && c[3] == "Texas")
            .into_iter()
            .take(100),
    );
    let zones = {
        let server = Server::start(&data);
        zones_of(&server, "estados")
    };
    for (id, g) in &zones {
        if let geo::Geometry::MultiPolygon(mp) = g {
            for (k, c) in mp.0[0].exterior().coords().enumerate().step_by(41) {
                pts.push((c.x, c.y, format!("vertice {id}.{k}")));
            }
        } else if let geo::Geometry::Polygon(p) = g {
            for (k, c) in p.exterior().coords().enumerate().step_by(41) {
                pts.push((c.x, c.y, format!("vertice {id}.{k}")));
            }
        }
    }
    ingest_points(&data, dir, "lugares", &pts);
    (data, pts)
}

#[test]
fn counts_and_sums_match_brute_force_and_spatialite() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = mexico(tmp.path());
    let server = Server::start(&data);
    let zones = zones_of(&server, "estados");
    let points = points_of(&server, "lugares");
    assert!(points.len() > 2000, "{}", points.len());

    // Brute force: interiors first; a point on borders only goes to the first zone.
    let mut want: BTreeMap<i64, (u64, i64, i64, i64)> = zones
        .iter()
        .map(|(id, _)| (*id, (0, 0, i64::MAX, i64::MIN)))
        .collect();
    let mut on_shared_border = 0;
    let mut outside = 0;
    for &(_, x, y, peso) in &points {
        let p = geo::Point::new(x, y);
        let near: Vec<&(i64, geo::Geometry<f64>)> = zones
            .iter()
            .filter(|(_, g)| g.bounding_rect().unwrap().intersects(&p))
            .collect();
        let inside: Vec<i64> = near
            .iter()
            .filter(|(_, g)| g.contains(&p))
            .map(|(id, _)| *id)
            .collect();
        let touching: Vec<i64> = near
            .iter()
            .filter(|(_, g)| g.intersects(&p))
            .map(|(id, _)| *id)
            .collect();
        if touching.len() > 1 && inside.is_empty() {
            on_shared_border += 1;
        }
        let chosen = if inside.is_empty() {
            touching.iter().min().copied().into_iter().collect()
        } else {
            inside
        };
        if chosen.is_empty() {
            outside += 1;
        }
        for id in chosen {
            let w = want.get_mut(&id).unwrap();
            w.0 += 1;
            w.1 += peso;
            w.2 = w.2.min(peso);
            w.3 = w.3.max(peso);
        }
    }
    assert!(on_shared_border >= 20, "border points: {on_shared_border}");
    assert!(outside >= 50, "outside: {outside}");

    let (s, got) = server.get(
        "/api/analysis/aggregate?zones=estados&layer=lugares&stat=count,sum:peso,mean:peso&stat=min:peso&stat=max:peso,density",
    );
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["zones"]["name_field"], "NAME");
    let got = rows_by_id(&got);
    assert_eq!(got.len(), zones.len());
    for (id, (n, sum, min, max)) in &want {
        let r = &got[id];
        assert_eq!(r["count"].as_u64().unwrap(), *n, "zone {id}: {r}");
        assert_eq!(r["sum:peso"].as_i64().unwrap(), *sum, "zone {id}");
        if *n > 0 {
            assert_eq!(r["min:peso"].as_i64().unwrap(), *min, "zone {id}");
            assert_eq!(r["max:peso"].as_i64().unwrap(), *max, "zone {id}");
            let mean = *sum as f64 / *n as f64;
            assert!(
                (r["mean:peso"].as_f64().unwrap() - mean).abs() < 1e-6,
                "zone {id}"
            );
        } else {
            assert!(r["mean:peso"].is_null());
        }
        let density = *n as f64 / r["area_km2"].as_f64().unwrap();
        assert!((r["density"].as_f64().unwrap() - density).abs() < 1e-6 * density.max(1.0));
    }

    // SpatiaLite, the same rule in SQL; and its geodesic areas.
    let zf = current_fgb(&data, "estados");
    let pf = current_fgb(&data, "lugares");
    let pts = format!("\"{}\".\"lugares\"", pf.display());
    let sql = format!(
        "SELECT zid, COUNT(*) AS n, SUM(peso) AS s FROM (\
           SELECT z.\"__datahub_fid\" AS zid, p.peso AS peso FROM estados z JOIN {pts} p \
             ON MbrIntersects(p.GEOMETRY, z.GEOMETRY) AND ST_Within(p.GEOMETRY, z.GEOMETRY) \
           UNION ALL \
           SELECT MIN(z.\"__datahub_fid\") AS zid, p.peso AS peso FROM estados z JOIN {pts} p \
             ON MbrIntersects(p.GEOMETRY, z.GEOMETRY) AND ST_Intersects(p.GEOMETRY, z.GEOMETRY) \
             WHERE NOT EXISTS (SELECT 1 FROM estados z2 WHERE MbrIntersects(p.GEOMETRY, z2.GEOMETRY) AND ST_Within(p.GEOMETRY, z2.GEOMETRY)) \
             GROUP BY p.\"__datahub_fid\") GROUP BY zid"
    );
    let reference = sqlite(&sql, &zf);
    assert!(!reference.is_empty());
    let mut seen = 0;
    for r in reference {
        let id: i64 = r["zid"].parse().unwrap();
        assert_eq!(
            got[&id]["count"].as_u64().unwrap(),
            r["n"].parse::<u64>().unwrap(),
            "zone {id}"
        );
        assert_eq!(
            got[&id]["sum:peso"].as_i64().unwrap(),
            r["s"].parse::<i64>().unwrap(),
            "zone {id}"
        );
        seen += 1;
    }
    assert_eq!(seen, want.values().filter(|w| w.0 > 0).count());
    for r in sqlite(
        "SELECT \"__datahub_fid\" AS id, ST_Area(GEOMETRY, 1) / 1e6 AS km2 FROM estados",
        &zf,
    ) {
        let id: i64 = r["id"].parse().unwrap();
        let km2: f64 = r["km2"].parse().unwrap();
        let ours = got[&id]["area_km2"].as_f64().unwrap();
        assert!(
            (ours - km2).abs() / km2 < 0.005,
            "zone {id}: {ours} vs {km2}"
        );
    }

    // A filter narrows the layer exactly as /items does.
    let (s, f) = server.get(&format!(
        "/api/analysis/aggregate?zones=estados&layer=lugares&filter={}",
        q("peso < 10")
    ));
    assert_eq!(s, 200, "{f}");
    let mut want_f: BTreeMap<i64, u64> = BTreeMap::new();
    for &(_, x, y, peso) in &points {
        if peso >= 10 {
            continue;
        }
        let p = geo::Point::new(x, y);
        let inside: Vec<i64> = zones
            .iter()
            .filter(|(_, g)| g.contains(&p))
            .map(|(i, _)| *i)
            .collect();
        let chosen: Vec<i64> = if inside.is_empty() {
            zones
                .iter()
                .filter(|(_, g)| g.intersects(&p))
                .map(|(i, _)| *i)
                .min()
                .into_iter()
                .collect()
        } else {
            inside
        };
        for id in chosen {
            *want_f.entry(id).or_default() += 1;
        }
    }
    for (id, r) in rows_by_id(&f) {
        assert_eq!(
            r["count"].as_u64().unwrap(),
            want_f.get(&id).copied().unwrap_or(0),
            "zone {id}"
        );
    }
}

/// North Carolina's 100 counties (NAD27) as zones; lines through its GeoNames places;
/// overlapping squares around some of them.
#[test]
fn lengths_and_area_shares_match_spatialite() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("sf/nc.gpkg"), "nc", &[]);
    let mut nc = places(|c| c[5] == "US" && c[3] == "North Carolina");
    assert!(nc.len() > 200);
    nc.sort_by(|a, b| a.0.total_cmp(&b.0));
    let lines: Vec<Value> = nc
        .chunks(8)
        .enumerate()
        .map(|(i, c)| {
            json!({"type": "Feature", "properties": {"tramo": i},
                   "geometry": {"type": "LineString", "coordinates": c.iter().map(|p| [p.0, p.1]).collect::<Vec<_>>()}})
        })
        .collect();
    let squares: Vec<Value> = nc
        .iter()
        .step_by(7)
        .enumerate()
        .map(|(i, p)| {
            let (x, y, d) = (p.0, p.1, 0.06);
            json!({"type": "Feature", "properties": {"n": i},
                   "geometry": {"type": "Polygon", "coordinates": [[[x - d, y - d], [x + d, y - d], [x + d, y + d], [x - d, y + d], [x - d, y - d]]]}})
        })
        .collect();
    // A mixed layer (one line, one polygon): `length` counts the line only.
    let mixed = vec![lines[3].clone(), squares[3].clone()];
    let line_only = vec![lines[3].clone()];
    for (name, feats) in [
        ("tramos", lines),
        ("cuadros", squares),
        ("mixto", mixed),
        ("linea", line_only),
    ] {
        let p = tmp.path().join(format!("{name}.geojson"));
        std::fs::write(
            &p,
            json!({"type": "FeatureCollection", "features": feats}).to_string(),
        )
        .unwrap();
        ingest_ok(&data, &p, name, &[]);
    }
    let server = Server::start(&data);
    let zf = current_fgb(&data, "nc");

    let (s, len) = server.get("/api/analysis/aggregate?zones=nc&layer=tramos&stat=length,count");
    assert_eq!(s, 200, "{len}");
    let len = rows_by_id(&len);
    let sql = format!(
        "SELECT z.\"__datahub_fid\" AS id, SUM(ST_Length(ST_Intersection(z.GEOMETRY, l.GEOMETRY), 1)) AS m \
         FROM nc z JOIN \"{}\".\"tramos\" l ON ST_Intersects(z.GEOMETRY, l.GEOMETRY) GROUP BY 1",
        current_fgb(&data, "tramos").display()
    );
    let mut checked = 0;
    let mut reference: BTreeMap<i64, f64> = BTreeMap::new();
    for r in sqlite(&sql, &zf) {
        reference.insert(r["id"].parse().unwrap(), r["m"].parse().unwrap_or(0.0));
    }
    for (id, r) in &len {
        let ours = r["length"].as_f64().unwrap();
        let theirs = reference.get(id).copied().unwrap_or(0.0);
        assert!(
            (ours - theirs).abs() <= 0.005 * theirs.max(ours) + 0.01,
            "county {id}: {ours} m vs SpatiaLite {theirs} m"
        );
        if theirs > 1000.0 {
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");

    let total = |layer: &str| -> f64 {
        let (_, v) = server.get(&format!(
            "/api/analysis/aggregate?zones=nc&layer={layer}&stat=length"
        ));
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["length"].as_f64().unwrap())
            .sum()
    };
    let (m, l) = (total("mixto"), total("linea"));
    assert!(l > 1000.0 && (m - l).abs() < 1e-6, "mixed {m} vs line {l}");

    let (s, share) =
        server.get("/api/analysis/aggregate?zones=nc&layer=cuadros&stat=area_share,count");
    assert_eq!(s, 200, "{share}");
    let share = rows_by_id(&share);
    let sql = format!(
        "SELECT z.\"__datahub_fid\" AS id, ST_Area(ST_Intersection(z.GEOMETRY, u.g), 1) / ST_Area(z.GEOMETRY, 1) AS s \
         FROM nc z, (SELECT ST_Union(GEOMETRY) AS g FROM \"{}\".\"cuadros\") u",
        current_fgb(&data, "cuadros").display()
    );
    let mut partial = 0;
    for r in sqlite(&sql, &zf) {
        let id: i64 = r["id"].parse().unwrap();
        let theirs: f64 = r["s"].parse().unwrap_or(0.0);
        let ours = share[&id]["area_share"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 0.005 * theirs + 1e-6,
            "county {id}: share {ours} vs SpatiaLite {theirs}"
        );
        if theirs > 0.01 && theirs < 0.99 {
            partial += 1;
        }
    }
    assert!(partial > 30, "{partial}");
}

#[test]
fn nearest_and_coverage_match_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(
        &data,
        &vector("libpysal/mexico/mexicojoin.shp"),
        "estados",
        &["--crs", "EPSG:4326"],
    );
    ingest_points(&data, tmp.path(), "lugares", &places(|c| c[5] == "MX"));
    // A 0.02° square in Monterrey with one point at its centre: the uncovered share
    // is 1 − πr²/area, whatever our sampling does.
    let sq = json!({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"nombre": "Cuadro"},
        "geometry": {"type": "Polygon", "coordinates": [[[-100.33, 25.66], [-100.31, 25.66], [-100.31, 25.68], [-100.33, 25.68], [-100.33, 25.66]]]}}]});
    std::fs::write(tmp.path().join("cuadro.geojson"), sq.to_string()).unwrap();
    ingest_ok(&data, &tmp.path().join("cuadro.geojson"), "cuadro", &[]);
    ingest_points(
        &data,
        tmp.path(),
        "centro",
        &[(-100.32, 25.67, "centro".into())],
    );
    let server = Server::start(&data);
    let points = points_of(&server, "lugares");
    let dist = |x: f64, y: f64| -> Vec<(f64, i64)> {
        let mut d: Vec<(f64, i64)> = points
            .iter()
            .map(|&(id, px, py, _)| {
                (
                    geo::Geodesic.distance(geo::Point::new(x, y), geo::Point::new(px, py)),
                    id,
                )
            })
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d
    };
    let mut queries: Vec<(f64, f64)> = (0..12)
        .map(|i| (-116.0 + 2.7 * i as f64, 16.0 + 1.3 * i as f64))
        .collect();
    queries.push((points[17].1, points[17].2)); // on a place: distance 0
    queries.push((-100.3161, 25.6866)); // Monterrey
    for (x, y) in queries {
        let (s, got) = server.get(&format!(
            "/api/analysis/nearest?layer=lugares&lon={x}&lat={y}&k=5"
        ));
        assert_eq!(s, 200, "{got}");
        let want = dist(x, y);
        let feats = got["features"].as_array().unwrap();
        assert_eq!(feats.len(), 5);
        for (f, (d, id)) in feats.iter().zip(&want) {
            assert_eq!(f["id"].as_i64().unwrap(), *id, "near {x},{y}");
            assert!((f["properties"]["distance_m"].as_f64().unwrap() - d).abs() < 0.01);
        }
        // Within a radius: every place closer than 40 km, nearest first, at most k.
        let (_, got) = server.get(&format!(
            "/api/analysis/nearest?layer=lugares&lon={x}&lat={y}&k=100&max_km=40"
        ));
        let n = want.iter().filter(|(d, _)| *d <= 40_000.0).count().min(100);
        assert_eq!(got["features"].as_array().unwrap().len(), n, "near {x},{y}");
    }

    // Coverage: the distance from each state's centroid equals the brute-force minimum.
    let (s, cov) = server.get("/api/analysis/coverage?zones=estados&layer=lugares&within_m=20000");
    assert_eq!(s, 200, "{cov}");
    let cov = rows_by_id(&cov);
    for (id, g) in zones_of(&server, "estados") {
        let c = g.centroid().unwrap();
        let d = dist(c.x(), c.y())[0].0;
        let r = &cov[&id];
        assert!(
            (r["centroid_distance_m"].as_f64().unwrap() - d).abs() < 0.01,
            "state {id}"
        );
        assert_eq!(r["centroid_uncovered"].as_bool().unwrap(), d > 20_000.0);
        let u = r["uncovered_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&u));
        assert!(r["samples"].as_u64().unwrap() > 900, "{r}");
    }
    for (within, expect) in [(500.0f64, None), (300.0, None), (3000.0, Some(0.0))] {
        let (s, c) = server.get(&format!(
            "/api/analysis/coverage?zones=cuadro&layer=centro&within_m={within}"
        ));
        assert_eq!(s, 200, "{c}");
        let r = &c["rows"][0];
        let area = r["area_km2"].as_f64().unwrap() * 1e6;
        let expect = expect.unwrap_or(1.0 - std::f64::consts::PI * within * within / area);
        let got = r["uncovered_share"].as_f64().unwrap();
        assert!(
            (got - expect).abs() < 0.02,
            "within {within}: {got} vs {expect}"
        );
    }
}

#[test]
fn choropleth_tiles_legend_profile_cli_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = run(&data, &["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let server = Server::start(&data);
    let (s, agg) =
        server.get("/api/analysis/aggregate?zones=colonias&layer=reportes&stat=count,sum:folio");
    assert_eq!(s, 200, "{agg}");
    let rows = rows_by_id(&agg);
    assert_eq!(rows.len(), 48);
    assert_eq!(
        rows.values()
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>(),
        600
    );

    // CSV and GeoJSON carry the same numbers; the CLI prints the same CSV.
    let csv = reqwest::blocking::get(format!(
        "{}/api/analysis/aggregate?zones=colonias&layer=reportes&stat=count,sum:folio&f=csv",
        server.base
    ))
    .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().unwrap();
    assert!(
        csv.starts_with("id,name,area_km2,count,sum:folio\r\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 49);
    let o = run(
        &data,
        &[
            "aggregate",
            "--zones",
            "colonias",
            "--layer",
            "reportes",
            "--stat",
            "count",
            "--stat",
            "sum:folio",
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), csv);
    let (_, gj) =
        server.get("/api/analysis/aggregate?zones=colonias&layer=reportes&stat=count&f=geojson");
    for f in gj["features"].as_array().unwrap() {
        let id = f["id"].as_i64().unwrap();
        assert_eq!(f["properties"]["count"], rows[&id]["count"]);
        assert_eq!(f["geometry"]["type"], "MultiPolygon");
    }

    // Legend: classes cover every zone, ascending; the tiles draw the same values.
    for method in ["quantile", "equal", "jenks"] {
        let (s, leg) = server.get(&format!(
            "/api/analysis/legend?zones=colonias&layer=reportes&stat=count&classes=4&method={method}"
        ));
        assert_eq!(s, 200, "{leg}");
        let b: Vec<f64> = floats(&leg["breaks"]);
        assert!(
            b.windows(2).all(|w| w[0] < w[1]) && b.len() <= 4 && !b.is_empty(),
            "{leg}"
        );
        let total: u64 = leg["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 48, "{method}");
    }
    let (_, leg) =
        server.get("/api/analysis/legend?zones=colonias&layer=reportes&stat=count&classes=5");
    let breaks: Vec<f64> = floats(&leg["breaks"]);
    let tj_url = leg["tilejson"].as_str().unwrap().to_string();
    let tj: Value = reqwest::blocking::get(&tj_url).unwrap().json().unwrap();
    assert_eq!(tj["tilejson"], "3.0.0");
    assert_eq!(tj["vector_layers"][0]["id"], "colonias_analysis");
    let template = tj["tiles"][0].as_str().unwrap().to_string();
    assert!(
        template.contains("/api/analysis/tiles/colonias/reportes/count/{z}/{x}/{y}.mvt"),
        "{template}"
    );
    // Monterrey fits in one z8 tile.
    let (z, lon, lat) = (8u32, -100.3f64, 25.7f64);
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n) as u32;
    let y = ((1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * n) as u32;
    let url = template
        .replace("{z}", &z.to_string())
        .replace("{x}", &x.to_string())
        .replace("{y}", &y.to_string());
    let r = reqwest::blocking::get(&url).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.mapbox-vector-tile"
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let decoded = node_decode(tmp.path(), &r.bytes().unwrap(), z, x, y);
    let feats = decoded["colonias_analysis"]["features"].as_array().unwrap();
    assert_eq!(feats.len(), 48);
    for f in feats {
        let id = f["id"].as_i64().unwrap();
        let v = f["properties"]["value"].as_f64().unwrap();
        assert_eq!(v, rows[&id]["count"].as_f64().unwrap());
        let class = f["properties"]["class"].as_u64().unwrap() as usize;
        assert!(
            v <= breaks[class] && (class == 0 || v > breaks[class - 1]),
            "{v} in class {class} of {breaks:?}"
        );
        assert_eq!(f["properties"]["name"], rows[&id]["name"]);
    }
    let again = reqwest::blocking::Client::new()
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);

    // Profile of one colonia: each layer's numbers equal that layer's aggregate.
    let (_, lines) =
        server.get("/api/analysis/aggregate?zones=colonias&layer=red-pluvial&stat=length,count");
    let lines = rows_by_id(&lines);
    let zone = *rows.keys().next().unwrap();
    let (s, prof) = server.get(&format!("/api/analysis/profile?zones=colonias&zone={zone}"));
    assert_eq!(s, 200, "{prof}");
    let mut seen = BTreeMap::new();
    for m in prof["ministries"].as_array().unwrap() {
        for l in m["layers"].as_array().unwrap() {
            seen.insert(l["layer"].as_str().unwrap().to_string(), l.clone());
        }
    }
    assert_eq!(seen["reportes"]["count"], rows[&zone]["count"]);
    assert_eq!(seen["red-pluvial"]["count"], lines[&zone]["count"]);
    assert_eq!(seen["red-pluvial"]["length_m"], lines[&zone]["length"]);
    assert!(!seen.contains_key("colonias"));

    // Coverage against a buffer computed by SpatiaLite in UTM 14N metres: the share of
    // each colonia outside the union of 300 m buffers around every report.
    let (s, cov) = server.get("/api/analysis/coverage?zones=colonias&layer=reportes&within_m=300");
    assert_eq!(s, 200, "{cov}");
    let cov = rows_by_id(&cov);
    let sql = format!(
        "SELECT z.\"__datahub_fid\" AS id, \
           1.0 - ST_Area(ST_Intersection(ST_Transform(z.GEOMETRY, 32614), b.g)) / ST_Area(ST_Transform(z.GEOMETRY, 32614)) AS u \
         FROM colonias z, (SELECT ST_Buffer(ST_Transform(ST_Collect(GEOMETRY), 32614), 300, 64) AS g FROM \"{}\".\"reportes\") b",
        current_fgb(&data, "reportes").display()
    );
    let mut diffs = Vec::new();
    for r in sqlite(&sql, &current_fgb(&data, "colonias")) {
        let id: i64 = r["id"].parse().unwrap();
        let theirs: f64 = r["u"].parse().unwrap();
        let ours = cov[&id]["uncovered_share"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 0.03,
            "colonia {id}: {ours} vs SpatiaLite {theirs}"
        );
        diffs.push((ours - theirs).abs());
    }
    assert_eq!(diffs.len(), 48);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    eprintln!(
        "coverage vs SpatiaLite buffers: mean abs difference {mean:.4}, max {:.4}",
        diffs.iter().copied().fold(0.0, f64::max)
    );
    assert!(mean < 0.01, "mean difference {mean}");

    // Bad requests say what is wrong.
    for (path, status, says) in [
        (
            "/api/analysis/aggregate?zones=reportes&layer=reportes",
            400,
            "not polygons",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&stat=sum:tipo",
            400,
            "not a number",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&stat=sum:nada",
            400,
            "no field 'nada'",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&stat=mediana",
            400,
            "unknown stat",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&stat=length",
            400,
            "needs a line layer",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=nada",
            404,
            "does not exist",
        ),
        (
            "/api/analysis/aggregate?layer=reportes",
            400,
            "'zones' is required",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&x=1",
            400,
            "unknown query parameter 'x'",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&f=xml",
            400,
            "unknown format",
        ),
        (
            "/api/analysis/aggregate?zones=colonias&layer=reportes&filter=tipo%3D",
            400,
            "filter error",
        ),
        (
            "/api/analysis/nearest?layer=reportes&lon=-100.3&lat=95",
            400,
            "'lat'",
        ),
        (
            "/api/analysis/nearest?layer=reportes&lon=-100.3&lat=25.7&k=0",
            400,
            "'k'",
        ),
        (
            "/api/analysis/nearest?layer=reportes&lat=25.7",
            400,
            "'lon' is required",
        ),
        (
            "/api/analysis/coverage?zones=colonias&layer=reportes&within_m=-5",
            400,
            "within_m",
        ),
        (
            "/api/analysis/profile?zones=colonias&zone=abc",
            400,
            "feature id",
        ),
        (
            "/api/analysis/profile?zones=colonias&zone=999999",
            404,
            "zone 999999",
        ),
        (
            "/api/analysis/legend?zones=colonias&layer=reportes&classes=20",
            400,
            "classes",
        ),
        (
            "/api/analysis/legend?zones=colonias&layer=reportes&method=magic",
            400,
            "quantile",
        ),
        (
            "/api/analysis/tiles/colonias/reportes/count/3/9/1.mvt",
            400,
            "outside",
        ),
    ] {
        let (s, body) = server.get(path);
        assert_eq!(s, status, "{path}: {body}");
        let d = body["description"].as_str().unwrap_or("");
        assert!(d.contains(says), "{path}: {d}");
    }

    // A new version of the layer replaces the cached result (no restart).
    let v1 = agg["layer"]["version"].as_u64().unwrap();
    let src = tmp.path().join("pocos.csv");
    std::fs::write(
        &src,
        "folio,longitud,latitud\n1,-100.3,25.7\n2,-100.31,25.71\n3,-100.2,25.65\n",
    )
    .unwrap();
    ingest_ok(&data, &src, "reportes", &["--title", "Reportes"]);
    let mut fresh = Value::Null;
    for _ in 0..50 {
        let (_, a) = server.get("/api/analysis/aggregate?zones=colonias&layer=reportes&stat=count");
        if a["layer"]["version"].as_u64() != Some(v1) {
            fresh = a;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(fresh["layer"]["version"].as_u64(), Some(v1 + 1), "{fresh}");
    assert_eq!(
        rows_by_id(&fresh)
            .values()
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
}
