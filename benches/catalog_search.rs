//! Catalogue search over 10,000 generated layer records (Spanish titles, keywords,
//! descriptions and field names over 8 ministries): per-query latency, p50 and p99,
//! for the query shapes the map's search box and the API send. `cargo bench --bench
//! catalog_search` (in `make bench`).

use std::time::Instant;

use datahub::catalog::search::{search, Entry, Query};
use layers::store::{Access, LayerMeta};

const WORDS: [&str; 24] = [
    "parques",
    "niños",
    "escuelas",
    "alumbrado",
    "baches",
    "drenaje",
    "pluvial",
    "colonias",
    "árboles",
    "banquetas",
    "semáforos",
    "rutas",
    "camiones",
    "hospitales",
    "guarderías",
    "inundación",
    "riesgo",
    "predios",
    "licencias",
    "obras",
    "vialidades",
    "ciclovías",
    "contenedores",
    "mercados",
];
const MINISTRIES: [&str; 8] = [
    "desarrollo-urbano",
    "obras-publicas",
    "servicios-publicos",
    "seguridad",
    "medio-ambiente",
    "movilidad",
    "proteccion-civil",
    "desarrollo-social",
];

fn record(i: usize) -> LayerMeta {
    let w = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
    let mut m: LayerMeta = serde_json::from_value(serde_json::json!({
        "id": format!("capa-{i}"), "version": 1,
        "title": format!("{} y {} {}", w(0), w(1), i),
        "ministry": MINISTRIES[i % MINISTRIES.len()],
        "description": format!("Inventario de {} en {} de Monterrey, actualizado por la secretaría ({})", w(2), w(3), w(4)),
        "keywords": [w(5), w(6)],
        "theme": w(7),
        "source_file": "", "source_sha256": "", "source_format": "", "source_layer": "",
        "source_crs": {"epsg": 4326, "name": "WGS 84", "wkt": "", "how": "source"},
        "feature_count": 10,
        "bbox": [-100.5 + (i % 50) as f64 * 0.01, 25.5, -100.4 + (i % 50) as f64 * 0.01, 25.6],
        "geometry_types": ["Point"],
        "schema": [{"name": "nombre", "type": "string"}, {"name": format!("{}_id", w(8)), "type": "long"}],
        "created_at": "2026-01-01T00:00:00Z", "duration_ms": 0,
        "report": {"features_read": 0, "features_stored": 0, "features_repaired": 0, "features_rejected": 0, "problems": {}, "notes": []}
    }))
    .expect("record");
    m.access = [Access::Public, Access::Internal, Access::Restricted][i % 3];
    m
}

fn main() {
    let n = 10_000;
    let t0 = Instant::now();
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry::new(&record(i), "Secretaría de Obras Públicas"))
        .collect();
    println!(
        "catalog search: {n} records indexed in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let queries: Vec<(&str, Query)> = vec![
        (
            "one word with accents (\"ninos\")",
            Query {
                q: Some("ninos".into()),
                ..Default::default()
            },
        ),
        (
            "two words (\"parques arboles\")",
            Query {
                q: Some("parques arboles".into()),
                ..Default::default()
            },
        ),
        (
            "prefix (\"inund\")",
            Query {
                q: Some("inund".into()),
                ..Default::default()
            },
        ),
        (
            "word + ministry + bbox",
            Query {
                q: Some("parques".into()),
                ministry: Some("obras-publicas".into()),
                bbox: Some([-100.45, 25.5, -100.3, 25.7]),
                ..Default::default()
            },
        ),
        (
            "keyword filter only",
            Query {
                keyword: Some("ciclovías".into()),
                ..Default::default()
            },
        ),
        (
            "no match (\"zzz\")",
            Query {
                q: Some("zzz".into()),
                ..Default::default()
            },
        ),
    ];
    for (label, q) in &queries {
        let mut times = Vec::new();
        let mut hits = 0;
        for _ in 0..300 {
            let t = Instant::now();
            // An anonymous caller: public records only, as the open-data portal asks.
            let r = search(&entries, q, |e| e.access == Access::Public);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            hits = r.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  {label:<38} {hits:>5} hits  p50 {:.2} ms  p99 {:.2} ms",
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    }
}
