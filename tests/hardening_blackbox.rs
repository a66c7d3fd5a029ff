//! Black-box tests of what a hostile or unlucky caller could do to a running server
//! (issue 16): CPU exhaustion through filters, budgets and disconnects, CSRF, lockout,
//! CRS inputs that fetch URLs, races between processes, unbounded resources, and a
//! binary that carries its own map. Each test failed on the main before the fixes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A point layer of `n` features with a text column `tipo` (200 distinct values).
fn big_points(dir: &Path, n: usize) -> std::path::PathBuf {
    let p = dir.join("puntos.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    writeln!(f, "id,tipo,lon,lat").unwrap();
    for i in 0..n {
        let lon = -100.5 + (i % 1000) as f64 * 0.0004;
        let lat = 25.5 + (i / 1000) as f64 * 0.0004;
        writeln!(f, "{i},tipo_{:03},{lon:.5},{lat:.5}", i % 200).unwrap();
    }
    f.flush().unwrap();
    p
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Point 1: eight anonymous LIKE requests with thousands of wildcards answer in
/// seconds; tiles and items of another layer stay fast meanwhile; a filter that
/// runs past its budget is stopped with a 503 naming the setting; a client that
/// goes away stops its query.
#[test]
fn expensive_filters_are_linear_bounded_and_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = big_points(tmp.path(), 200_000);
    ingest_ok(&data, &csv, "puntos", &[]);
    ingest_ok(&data, &vector("sf/nc.gpkg"), "nc", &[]);
    let config = tmp.path().join("datahub.toml");
    std::fs::write(&config, "[limits]\nquery_budget_s = 2\n").unwrap();
    let log = tmp.path().join("server.log");
    let server = Server::start_logged(&data, &["--config", config.to_str().unwrap()], Some(&log));
    let base = server.base.clone();

    let pattern = format!("{}x", "%".repeat(4000));
    let filter = url_encode(&format!("tipo LIKE '{pattern}'"));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{base}/collections/puntos/items?limit=10&filter={filter}");
            std::thread::spawn(move || {
                let r = client(Duration::from_secs(60)).get(url).send().unwrap();
                (r.status().as_u16(), r.text().unwrap())
            })
        })
        .collect();
    // Meanwhile another layer's tiles and items answer quickly.
    std::thread::sleep(Duration::from_millis(100));
    for path in [
        "/tiles/nc/5/8/12.mvt".to_string(),
        "/collections/nc/items?limit=5".to_string(),
    ] {
        let t = Instant::now();
        let r = client(Duration::from_secs(30))
            .get(format!("{base}{path}"))
            .send()
            .unwrap();
        assert!(
            r.status().is_success() || r.status().as_u16() == 204,
            "{path}: {}",
            r.status()
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path} took {:?} while the filters ran",
            t.elapsed()
        );
    }
    for h in handles {
        let (s, body) = h.join().unwrap();
        // Answered (no match ends in x), or refused as busy with the setting named.
        assert!(
            s == 200 && body.contains("\"numberMatched\":0")
                || s == 503 && body.contains("heavy_queries"),
            "{s}: {body}"
        );
    }
    let all = t0.elapsed();
    assert!(all < Duration::from_secs(5), "8 LIKE requests took {all:?}");

    // A filter that scans long (a 3,000-value IN list on 200,000 features) runs past
    // the 2 s budget: 503 naming the setting, well before the client gives up.
    let list: Vec<String> = (0..3000).map(|i| format!("'v{i}'")).collect();
    let slow = url_encode(&format!("tipo IN ({})", list.join(",")));
    let t = Instant::now();
    let r = client(Duration::from_secs(60))
        .get(format!("{base}/collections/puntos/items?filter={slow}"))
        .send()
        .unwrap();
    let s = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("query_budget_s"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A client that gives up: its query is stopped (logged), not left running.
    let e = client(Duration::from_millis(300))
        .get(format!(
            "{base}/collections/puntos/items?filter={slow}&f=csv"
        ))
        .send();
    assert!(e.is_err(), "the query was expected to outlast 300 ms");
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("client went away") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no cancellation logged: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the server is still fine.
    let (s, _) = server.get("/collections/puntos/items?limit=1");
    assert_eq!(s, 200);
}

#[allow(dead_code)]
fn json(r: reqwest::blocking::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json::<Value>().unwrap_or(Value::Null))
}
