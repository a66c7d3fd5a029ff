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

fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut rq = client(Duration::from_secs(30)).request(method, format!("{base}{path}"));
    for (k, v) in headers {
        rq = rq.header(*k, v);
    }
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, r.json::<Value>().unwrap_or(Value::Null), h)
}

fn audit_failures(base: &str, admin: &str) -> Vec<Value> {
    let (s, v, _) = send(
        base,
        reqwest::Method::GET,
        "/api/audit?action=auth.failed&limit=10000",
        &[("authorization", format!("Bearer {admin}"))],
        None,
    );
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

/// Points 2 and 3: the cookie holds a session id that signing out ends on the
/// server; cookie-authenticated changes from another origin are refused (CSRF);
/// eleven bad tokens from one address do not lock out a valid token; failures are
/// audited boundedly; `X-Forwarded-For` is believed only from trusted proxies.
#[test]
fn sessions_csrf_lockout_and_forwarded_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let nc = vector("sf/nc.gpkg");
    ingest_ok(&data, &nc, "nc", &[]);
    ingest_ok(&data, &nc, "nc", &["--note", "second"]);
    let admin = token(&data, &["--role", "admin"]);
    let server = Server::start(&data);
    let base = server.base.clone();
    let host = base.trim_start_matches("http://").to_string();

    // Sign in: the cookie is a session id, not the token.
    let (s, v, h) = send(
        &base,
        reqwest::Method::POST,
        "/api/session",
        &[("origin", base.clone())],
        Some(serde_json::json!({"token": admin})),
    );
    assert_eq!(s, 200, "{v}");
    let set = h["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("datahub_session=ds_"), "{set}");
    assert!(!set.contains(&admin), "the cookie holds the token: {set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    // Over HTTPS (behind a proxy) the cookie is a __Host- cookie.
    let (_, _, h) = send(
        &base,
        reqwest::Method::POST,
        "/api/session",
        &[("x-forwarded-proto", "https".into())],
        Some(serde_json::json!({"token": admin})),
    );
    let set_secure = h["set-cookie"].to_str().unwrap();
    assert!(
        set_secure.starts_with("__Host-datahub_session=ds_")
            && set_secure.contains("; Secure")
            && set_secure.contains("Path=/")
            && !set_secure.contains("Domain"),
        "{set_secure}"
    );

    // CSRF: the same restore with the cookie from another site of the city, or
    // with no origin at all, is refused; from the DataHub's own page it works.
    let restore = "/api/layers/nc/versions/1/restore";
    for headers in [
        vec![("origin", "https://portal.example.gob.mx".to_string())],
        vec![("sec-fetch-site", "same-site".to_string())],
        vec![
            ("sec-fetch-site", "cross-site".to_string()),
            ("origin", base.clone()),
        ],
        vec![],
    ] {
        let mut hs = headers.clone();
        hs.push(("cookie", cookie.clone()));
        let (s, v, _) = send(&base, reqwest::Method::POST, restore, &hs, None);
        assert_eq!(s, 403, "{headers:?}: {v}");
        assert!(
            v["description"].as_str().unwrap().contains("own pages"),
            "{v}"
        );
    }
    let (s, v, _) = send(
        &base,
        reqwest::Method::POST,
        restore,
        &[
            ("cookie", cookie.clone()),
            ("origin", format!("http://{host}")),
        ],
        None,
    );
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/session",
        &[("cookie", cookie.clone())],
        None,
    );
    assert_eq!((s, v["signed_in"].clone()), (200, Value::Bool(true)), "{v}");
    // Signing out ends the session on the server: the old cookie no longer works.
    let (s, _, _) = send(
        &base,
        reqwest::Method::DELETE,
        "/api/session",
        &[("cookie", cookie.clone()), ("origin", base.clone())],
        None,
    );
    assert_eq!(s, 204);
    let (s, v, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/session",
        &[("cookie", cookie.clone())],
        None,
    );
    assert_eq!(s, 401, "{v}");
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("session has ended"),
        "{v}"
    );

    // Lockout: 13 bad tokens from this address (one with attacker text as its id),
    // then a valid token never seen before still works at once.
    for i in 0..13 {
        let bad = if i == 0 {
            "dh_<img src=x>_bad".to_string()
        } else {
            format!("dh_{i:012x}_bad")
        };
        let (s, _, _) = send(
            &base,
            reqwest::Method::GET,
            "/api/session",
            &[
                ("authorization", format!("Bearer {bad}")),
                ("x-forwarded-for", "6.6.6.6".into()),
            ],
            None,
        );
        assert!(s == 401 || s == 429, "{s}");
        if i >= 11 {
            assert_eq!(s, 429);
        }
    }
    let fresh = token(&data, &["--ministry", "pruebas", "--role", "viewer"]);
    let (s, v, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/session",
        &[("authorization", format!("Bearer {fresh}"))],
        None,
    );
    assert_eq!(
        s, 200,
        "a valid token was refused after others' failures: {v}"
    );
    // The audit log holds at most 10 failures of this address, with the real
    // address (the forwarded header came from an untrusted peer) and no attacker text.
    let failures = audit_failures(&base, &admin);
    assert!(
        (1..=10).contains(&failures.len()),
        "{} failures audited",
        failures.len()
    );
    for f in &failures {
        assert_eq!(f["remote"], "127.0.0.1", "{f}");
        assert!(!f.to_string().contains("img"), "{f}");
    }
    drop(server);

    // Behind a configured proxy, its X-Forwarded-For is believed.
    let config = tmp.path().join("proxy.toml");
    std::fs::write(&config, "[limits]\ntrusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    let server = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let (s, _, _) = send(
        &server.base,
        reqwest::Method::GET,
        "/api/session",
        &[
            ("authorization", "Bearer dh_0123456789ab_bad".to_string()),
            ("x-forwarded-for", "203.0.113.7, 127.0.0.1".into()),
        ],
        None,
    );
    assert_eq!(s, 401);
    let failures = audit_failures(&server.base, &admin);
    assert!(
        failures.iter().any(|f| f["remote"] == "203.0.113.7"),
        "{failures:?}"
    );
}

/// Point 4: a CRS given as a URL (or a file name, or a PROJ string) is refused with
/// what is accepted, and the process connects nowhere; EPSG and WKT still work.
#[test]
fn crs_inputs_never_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = tmp.path().join("utm.csv");
    std::fs::write(&csv, "id,x,y\n1,370000,2840000\n2,371000,2841000\n").unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    for bad in [
        format!("http://127.0.0.1:{port}/crs"),
        "/etc/passwd".to_string(),
        "+init=epsg:32614".to_string(),
    ] {
        let e = ingest_err(&data, &csv, "utm", &["--x", "x", "--y", "y", "--crs", &bad]);
        assert!(
            e.contains("not an EPSG code, a WKT or PROJJSON"),
            "{bad}: {e}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        l.accept().is_err(),
        "the CLI connected to the URL given as --crs"
    );
    let wkt = "PROJCS[\"WGS 84 / UTM zone 14N\",GEOGCS[\"WGS 84\",DATUM[\"WGS_1984\",SPHEROID[\"WGS 84\",6378137,298.257223563]],PRIMEM[\"Greenwich\",0],UNIT[\"degree\",0.0174532925199433]],PROJECTION[\"Transverse_Mercator\"],PARAMETER[\"latitude_of_origin\",0],PARAMETER[\"central_meridian\",-99],PARAMETER[\"scale_factor\",0.9996],PARAMETER[\"false_easting\",500000],PARAMETER[\"false_northing\",0],UNIT[\"metre\",1]]";
    let v = ingest_ok(&data, &csv, "utm", &["--x", "x", "--y", "y", "--crs", wkt]);
    assert_eq!(v["feature_count"], 2, "{v}");
    let v = ingest_ok(
        &data,
        &csv,
        "utm",
        &["--x", "x", "--y", "y", "--crs", "EPSG:32614"],
    );
    assert_eq!(v["feature_count"], 2, "{v}");
}
