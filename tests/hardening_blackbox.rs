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

/// Tests that measure time, and tests that load the machine (wrk, 300k-point
/// uploads), never run at the same time (`cargo test` runs two tests at once, and
/// CI has two cores).
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner())
}

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
    let _exclusive = exclusive();
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
    // A client claiming HTTPS without a trusted proxy's word gets the plain cookie.
    let (_, _, h) = send(
        &base,
        reqwest::Method::POST,
        "/api/session",
        &[("x-forwarded-proto", "https".into())],
        Some(serde_json::json!({"token": admin})),
    );
    assert!(h["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("datahub_session="));
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
    // Over HTTPS (the proxy says so) the cookie is a __Host- cookie, and a plain
    // one (which a sibling site could have set for the whole domain) is ignored.
    let https = ("x-forwarded-proto", "https".to_string());
    let (s, v, h) = send(
        &server.base,
        reqwest::Method::POST,
        "/api/session",
        std::slice::from_ref(&https),
        Some(serde_json::json!({"token": admin})),
    );
    assert_eq!(s, 200, "{v}");
    let set_secure = h["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_secure.starts_with("__Host-datahub_session=ds_")
            && set_secure.contains("; Secure")
            && set_secure.contains("Path=/")
            && !set_secure.contains("Domain"),
        "{set_secure}"
    );
    let value = set_secure
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let whoami = |cookie: String| {
        send(
            &server.base,
            reqwest::Method::GET,
            "/api/session",
            &[https.clone(), ("cookie", cookie)],
            None,
        )
        .1["signed_in"]
            .clone()
    };
    assert_eq!(whoami(format!("__Host-datahub_session={value}")), true);
    assert_eq!(whoami(format!("datahub_session={value}")), false);
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

fn put_file(base: &str, token: &str, path: &str, file: &Path, meta: Option<Value>) -> (u16, Value) {
    send_file(reqwest::Method::PUT, base, token, path, file, meta)
}

fn send_file(
    method: reqwest::Method,
    base: &str,
    token: &str,
    path: &str,
    file: &Path,
    meta: Option<Value>,
) -> (u16, Value) {
    let mut form = reqwest::blocking::multipart::Form::new()
        .file("file", file)
        .unwrap();
    if let Some(m) = meta {
        form = form.text("metadata", m.to_string());
    }
    let r = client(Duration::from_secs(120))
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    json(r)
}

/// The job's document now.
fn job_doc(base: &str, token: &str, job: &Value) -> Value {
    let id = job["id"].as_str().unwrap();
    let (s, v, _) = send(
        base,
        reqwest::Method::GET,
        &format!("/api/jobs/{id}"),
        &[("authorization", format!("Bearer {token}"))],
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

/// Polls a job until it finishes; returns its last document.
fn wait_job(base: &str, token: &str, job: &Value) -> Value {
    let t0 = Instant::now();
    loop {
        let v = job_doc(base, token, job);
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls a queued job until it runs (it then holds its layer's queue).
fn wait_running(base: &str, token: &str, job: &Value) {
    let t0 = Instant::now();
    loop {
        let v = job_doc(base, token, job);
        if v["state"] == "running" {
            return;
        }
        assert_eq!(v["state"], "queued", "{v}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn current_meta(data: &Path, layer: &str) -> (std::path::PathBuf, Value) {
    let dir = data.join("layers").join(layer);
    let n = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let p = dir.join(format!("v{}", n.trim())).join("meta.json");
    let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    (p, v)
}

/// Point 5: a queued upload does not undo a ministry transfer made meanwhile; the
/// CLI's `layer set` and the server's PATCH never lose each other's edits; an
/// anonymous quality request writes nothing; one corrupt record does not stop the
/// others (reported in /health); stale scratch folders are found by their lock.
#[test]
fn races_between_processes_and_requests() {
    let _exclusive = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ensure_ministry(&data, "obras");
    ensure_ministry(&data, "urbano");
    let nc = vector("sf/nc.gpkg");
    ingest_ok(&data, &nc, "parques", &[]);
    let o = run(
        &data,
        &[
            "ingest",
            nc.to_str().unwrap(),
            "--layer",
            "parques",
            "--ministry",
            "obras",
            "--access",
            "public",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let admin = token(&data, &["--role", "admin"]);
    let editor = token(&data, &["--ministry", "obras", "--role", "editor"]);
    let server = Server::start(&data);
    let base = server.base.clone();

    // An admin moves the layer to 'urbano' with a long upload; an editor of 'obras'
    // queues a new version meanwhile: it must not move the layer back.
    let big = big_points(tmp.path(), 300_000);
    let (s, j1) = put_file(
        &base,
        &admin,
        "/api/layers/parques/data",
        &big,
        Some(serde_json::json!({"ministry": "urbano"})),
    );
    assert_eq!(s, 202, "{j1}");
    // Once it runs (it holds the layer's queue), the editor's upload comes.
    wait_running(&base, &admin, &j1);
    let (s, j2) = put_file(&base, &editor, "/api/layers/parques/data", &nc, None);
    assert_eq!(
        s, 202,
        "the editor's upload was expected while the first ran: {j2}"
    );
    let r1 = wait_job(&base, &admin, &j1);
    assert_eq!(r1["state"], "succeeded", "{r1}");
    let r2 = wait_job(&base, &admin, &j2);
    assert_eq!(r2["state"], "failed", "{r2}");
    assert!(
        r2["error"]
            .as_str()
            .unwrap()
            .contains("now belongs to 'urbano'"),
        "{r2}"
    );
    assert_eq!(current_meta(&data, "parques").1["ministry"], "urbano");

    // A token revoked while its upload waits publishes nothing.
    let urbano = token(&data, &["--ministry", "urbano", "--role", "editor"]);
    let (s, ja) = put_file(&base, &admin, "/api/layers/parques/data", &big, None);
    assert_eq!(s, 202, "{ja}");
    wait_running(&base, &admin, &ja);
    let (s, jb) = put_file(&base, &urbano, "/api/layers/parques/data", &nc, None);
    assert_eq!(s, 202, "{jb}");
    let urbano_id = urbano.split('_').nth(1).unwrap();
    let o = run(&data, &["token", "revoke", urbano_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(wait_job(&base, &admin, &ja)["state"], "succeeded");
    let rb = wait_job(&base, &admin, &jb);
    assert_eq!(rb["state"], "failed", "{rb}");
    assert!(rb["error"].as_str().unwrap().contains("revoked"), "{rb}");

    // The queue of one layer is bounded.
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let (s, v) = put_file(&base, &admin, "/api/layers/parques/data", &big, None);
        match s {
            202 => accepted.push(v),
            503 => {
                refused = Some(v);
                break;
            }
            other => panic!("{other}: {v}"),
        }
    }
    let refused = refused.expect("six uploads of one layer were all queued");
    assert!(
        refused.to_string().contains("queued_jobs_per_layer"),
        "{refused}"
    );
    for j in &accepted {
        assert_eq!(wait_job(&base, &admin, j)["state"], "succeeded");
    }

    // The CLI and the server edit the same record at the same time: each keeps the
    // other's change.
    let d2 = data.clone();
    let cli = std::thread::spawn(move || {
        for i in 0..8 {
            let o = run(
                &d2,
                &["layer", "set", "parques", "--title", &format!("T{i}")],
            );
            assert!(o.status.success(), "{}", stderr(&o));
        }
    });
    for i in 0..8 {
        let (s, v, _) = send(
            &base,
            reqwest::Method::PATCH,
            "/api/layers/parques",
            &[("authorization", format!("Bearer {admin}"))],
            Some(serde_json::json!({"keywords": [format!("k{i}")]})),
        );
        assert_eq!(s, 200, "{v}");
    }
    cli.join().unwrap();
    let (_, m) = current_meta(&data, "parques");
    assert_eq!(
        (m["title"].clone(), m["keywords"].clone()),
        (Value::from("T7"), serde_json::json!(["k7"])),
        "an edit was lost"
    );

    // A version without a stored diagnosis: an anonymous quality request computes
    // one and writes nothing.
    let oldest = std::fs::read_dir(data.join("layers/parques"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix('v')?
                .parse::<u32>()
                .ok()
        })
        .min()
        .unwrap();
    let v1 = data.join(format!("layers/parques/v{oldest}/meta.json"));
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&v1).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("diagnosis");
    std::fs::write(&v1, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let before = (
        std::fs::read(&v1).unwrap(),
        std::fs::metadata(&v1).unwrap().modified().unwrap(),
    );
    let (s, q) = server.get(&format!("/api/layers/parques/quality?version={oldest}"));
    assert_eq!(s, 200, "{q}");
    assert!(q.to_string().contains("grade"), "{q}");
    let after = (
        std::fs::read(&v1).unwrap(),
        std::fs::metadata(&v1).unwrap().modified().unwrap(),
    );
    assert!(before == after, "an anonymous GET rewrote meta.json");

    // One corrupt record: the others are served, new layers still appear, /health
    // says which (to an admin).
    ingest_ok(&data, &nc, "otra", &[]);
    let (p, _) = current_meta(&data, "parques");
    std::fs::write(&p, "{ not json").unwrap();
    ingest_ok(&data, &nc, "nueva", &[]);
    let t0 = Instant::now();
    loop {
        let (s, _) = server.get("/collections/nueva");
        if s == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "new layer never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get("/collections/otra").0, 200);
    let (_, h) = server.get("/health");
    assert_eq!(
        (h["status"].clone(), h["unreadable_layers"].clone()),
        (Value::from("degraded"), Value::from(1)),
        "{h}"
    );
    assert!(h.get("problems").is_none(), "{h}");
    let (_, h, _) = send(
        &base,
        reqwest::Method::GET,
        "/health",
        &[("authorization", format!("Bearer {admin}"))],
        None,
    );
    assert_eq!(h["problems"][0]["layer"], "parques", "{h}");
    drop(server);

    // Scratch folders: one whose owner is gone (its lock free) is removed by the
    // next command, one whose owner lives is kept, whatever PIDs their names hold.
    use fs2::FileExt;
    let dead = data.join("tmp/parques.1.123");
    let live = data.join("tmp/upload.1.456");
    for d in [&dead, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("part"), "x").unwrap();
    }
    std::fs::File::create(dead.join(".owner.lock")).unwrap();
    let held = std::fs::File::create(live.join(".owner.lock")).unwrap();
    held.lock_exclusive().unwrap();
    let o = run(&data, &["ministry", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dead.exists(), "a stale folder was kept");
    assert!(live.exists(), "a live folder was removed");
    drop(held);
}

/// Point 6: downloads written to disk keep the data folder's free space (GeoJSON,
/// streamed, still works); usage is counted under the real layer id only.
#[test]
fn downloads_and_usage_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("sf/nc.gpkg"), "nc", &[]);
    let config = tmp.path().join("datahub.toml");
    // More free space than any test machine has.
    std::fs::write(&config, "[limits]\nmin_free_disk_mb = 1000000000\n").unwrap();
    let server = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let (s, v) = server.get("/collections/nc/items?f=gpkg");
    assert_eq!(s, 503, "{v}");
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("min_free_disk_mb"),
        "{v}"
    );
    let r = client(Duration::from_secs(30))
        .get(format!("{}/collections/nc/items?f=geojson", server.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["features"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    // Nothing left in tmp/ by the refused download.
    let left: Vec<_> = std::fs::read_dir(data.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // The same layer under percent-encoded names, and names that are no layer.
    for path in [
        "/collections/nc/items?limit=1",
        "/collections/%6Ec/items?limit=1",
        "/collections/%6E%63/items?limit=1",
        "/tiles/%6Ec/5/8/12.mvt",
        "/collections/zz%20top/items",
    ] {
        client(Duration::from_secs(30))
            .get(format!("{}{path}", server.base))
            .send()
            .unwrap();
    }
    let t0 = Instant::now();
    let usage = loop {
        if let Ok(text) = std::fs::read_to_string(data.join("usage.json")) {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v.to_string().contains("\"nc\"") {
                break v;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "usage.json never written"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (_, layers) in usage["days"].as_object().unwrap() {
        let keys: Vec<&String> = layers.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["nc"], "{usage}");
        assert_eq!(layers["nc"]["items"]["anonymous"], 3, "{usage}");
        assert_eq!(layers["nc"]["tile"]["anonymous"], 1, "{usage}");
    }
}

/// Point 7: the binary, started outside the repository, serves the pinned MapLibre
/// build it carries (byte for byte the checksummed file; gzipped on request).
#[test]
fn the_binary_carries_its_map() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &vector("sf/nc.gpkg"), "nc", &[]);
    let server = Server::start(&data);
    let pinned = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("web/maplibre-gl.sha256"),
    )
    .unwrap();
    for line in pinned.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let url = format!("{}/web/maplibre/{name}", server.base);
        let r = client(Duration::from_secs(30)).get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{name}");
        let raw = r.bytes().unwrap();
        let got: String = sha2::Sha256::digest(&raw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, sum, "{name}");
        let r = client(Duration::from_secs(30))
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        let gz = r.bytes().unwrap();
        assert!(
            gz.len() < raw.len() / 2,
            "{name}: {} of {}",
            gz.len(),
            raw.len()
        );
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert!(plain == raw, "{name}: gzip differs");
    }
    // The map page refers to it.
    let page = client(Duration::from_secs(30))
        .get(format!("{}/", server.base))
        .header("accept", "text/html")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("/web/maplibre/maplibre-gl.js"), "{page}");
}

/// Runs `wrk` on `urls` (a file of paths) for `secs`; returns (requests, errors),
/// errors being socket errors and non-2xx/3xx answers.
fn wrk(base: &str, urls: &Path, secs: u32) -> std::process::Child {
    std::process::Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{secs}s"), "-s"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/list.lua"))
        .arg(base)
        .env("URL_LIST", urls)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (Debian package wrk, installed by make deps)")
}

fn wrk_result(child: std::process::Child) -> (u64, String) {
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (requests, text)
}

/// Load while re-uploading: wrk on items and tiles of a layer while 4 new versions
/// of it are uploaded and published one after another: every request answers.
#[test]
fn load_while_reuploading() {
    let _exclusive = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let csv = big_points(tmp.path(), 50_000);
    ingest_ok(&data, &csv, "puntos", &[]);
    let admin = token(&data, &["--role", "admin"]);
    let server = Server::start(&data);
    let base = server.base.clone();
    let items = tmp.path().join("items.txt");
    let mut lines = String::new();
    for i in 0..50 {
        let x = -100.5 + (i % 10) as f64 * 0.03;
        let y = 25.5 + (i / 10) as f64 * 0.003;
        lines.push_str(&format!(
            "/collections/puntos/items?bbox={x},{y},{},{}&limit=100\n",
            x + 0.05,
            y + 0.01
        ));
        lines.push_str("/collections/puntos/items?limit=50&offset=1000\n");
    }
    std::fs::write(&items, lines).unwrap();
    let tiles = tmp.path().join("tiles.txt");
    let mut lines = String::new();
    for z in 8..=12u32 {
        let n = 2f64.powi(z as i32);
        let x = ((-100.4 + 180.0) / 360.0 * n) as u32;
        let lat = 25.52f64.to_radians();
        let y =
            ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n) as u32;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            lines.push_str(&format!(
                "/tiles/puntos/{z}/{}/{}.mvt\n",
                x + dx,
                y.saturating_sub(dy)
            ));
        }
    }
    std::fs::write(&tiles, lines).unwrap();

    let w_items = wrk(&base, &items, 12);
    let w_tiles = wrk(&base, &tiles, 12);
    let t0 = Instant::now();
    let mut versions = Vec::new();
    for _ in 0..4 {
        let (s, j) = put_file(&base, &admin, "/api/layers/puntos/data", &csv, None);
        assert_eq!(s, 202, "{j}");
        let r = wait_job(&base, &admin, &j);
        assert_eq!(r["state"], "succeeded", "{r}");
        versions.push(r["result"]["version"].clone());
    }
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "the uploads outlasted the load"
    );
    assert_eq!(versions, [2, 3, 4, 5].map(Value::from));
    for (what, w) in [("items", w_items), ("tiles", w_tiles)] {
        let (n, text) = wrk_result(w);
        assert!(n > 100, "{what}: only {n} requests: {text}");
        assert!(
            !text.contains("Non-2xx") && !text.contains("Socket errors"),
            "{what}: errors under load while re-uploading:\n{text}"
        );
    }
}

/// Downloads being sent are bounded in number: a client that requests a large
/// GeoJSON and reads nothing holds one slot (and is cut off after a minute), the
/// next download waits, then gets a 503 naming the setting; pages still answer; the
/// slot is freed when that client goes away.
#[test]
fn stalled_downloads_are_bounded() {
    let _exclusive = exclusive();
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest_ok(&data, &big_points(tmp.path(), 200_000), "puntos", &[]);
    let config = tmp.path().join("datahub.toml");
    std::fs::write(&config, "[limits]\nstreams = 1\nqueue_wait_s = 1\n").unwrap();
    let server = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "GET /collections/puntos/items?f=geojson HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (s, v) = server.get("/collections/puntos/items?f=geojson&limit=5");
    assert_eq!(s, 503, "{v}");
    assert!(
        v["description"].as_str().unwrap().contains("streams"),
        "{v}"
    );
    let (s, _) = server.get("/collections/puntos/items?limit=5");
    assert_eq!(s, 200);
    drop(stalled);
    let t0 = Instant::now();
    loop {
        let r = client(Duration::from_secs(30))
            .get(format!(
                "{}/collections/puntos/items?f=geojson&limit=5",
                server.base
            ))
            .send()
            .unwrap();
        if r.status().as_u16() == 200 {
            assert_eq!(
                r.json::<Value>().unwrap()["features"]
                    .as_array()
                    .unwrap()
                    .len(),
                5
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Uploads are bounded in total, not only per layer, and ingested a few at a time:
/// with one ingest slot and two queue places, the second upload waits "queued"
/// while the first runs, a third is refused naming the setting, both finish.
#[test]
fn uploads_are_bounded_in_total() {
    let _exclusive = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ensure_ministry(&data, "pruebas");
    let editor = token(&data, &["--ministry", "pruebas", "--role", "editor"]);
    let big = big_points(tmp.path(), 300_000);
    let config = tmp.path().join("datahub.toml");
    std::fs::write(&config, "[limits]\ningests = 1\nqueued_jobs = 2\n").unwrap();
    let server = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let base = server.base.clone();
    let post = |id: &str| {
        send_file(
            reqwest::Method::POST,
            &base,
            &editor,
            "/api/layers",
            &big,
            Some(serde_json::json!({"id": id, "access": "public"})),
        )
    };
    let (s, j1) = post("uno");
    assert_eq!(s, 202, "{j1}");
    let (s, j2) = post("dos");
    assert_eq!(s, 202, "{j2}");
    let (s, v) = post("tres");
    assert_eq!(s, 503, "{v}");
    assert!(v.to_string().contains("queued_jobs"), "{v}");
    // While one runs, the other waits for the ingest slot.
    let state = |j: &Value| {
        job_doc(&base, &editor, j)["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let t0 = Instant::now();
    loop {
        // Without the slot both would run at once and this never holds.
        let (a, b) = (state(&j1), state(&j2));
        if (a == "running" && b == "queued") || (a == "queued" && b == "running") {
            // And it keeps waiting while the other runs (not just not started yet).
            std::thread::sleep(Duration::from_millis(300));
            let (a2, b2) = (state(&j1), state(&j2));
            if (a2 == a) && (b2 == b) {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{a} {b}");
        std::thread::sleep(Duration::from_millis(5));
    }
    for j in [&j1, &j2] {
        assert_eq!(wait_job(&base, &editor, j)["state"], "succeeded");
    }
}
