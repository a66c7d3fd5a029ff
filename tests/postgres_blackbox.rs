//! The PostgreSQL backend with several replicas, black-box: each test starts its own
//! throwaway PostgreSQL 15 + PostGIS 3 cluster (tests/common/pg.rs), real `datahub
//! serve` processes on free ports and, for the two-replica test, nginx in front of
//! them. What a city's IT team would see: publishes and revocations reach every
//! replica within 2 s, a replica killed mid-upload loses nothing, a database restart
//! does not stop reads, a replica started while the database is down waits for it, a
//! migrated hub is the same feature by feature, and QGIS-style clients see the public
//! layers through a read-only role with GDAL's PostgreSQL driver; a draft made on one
//! replica is reviewed and published on the other, and each version is notified once.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::{psql, PgCluster};
use common::*;
use reqwest::blocking::{multipart, Client};
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// `datahub --data DATA --database URL ARGS…`, which must succeed; its stdout.
fn cli(data: &Path, url: &str, args: &[&str]) -> String {
    let o = bin()
        .arg("--data")
        .arg(data)
        .args(["--database", url])
        .args(args)
        .env("DATAHUB_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "datahub {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn replica(data: &Path, url: &str) -> Server {
    Server::start_with(data, &["--database", url])
}

fn send(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = client().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json::<Value>().unwrap_or(Value::Null))
}

fn get(base: &str, path: &str) -> (u16, Value) {
    send(base, None, reqwest::Method::GET, path, None)
}

/// Uploads `file` (POST a new layer, PUT a new version); the job's location.
fn upload(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    file: &Path,
    meta: Option<Value>,
) -> String {
    let mut form = multipart::Form::new().file("file", file).unwrap();
    if let Some(m) = meta {
        form = form.text("metadata", m.to_string());
    }
    let r = client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    let s = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().unwrap_or_default();
    assert_eq!(s, 202, "{path}: {body}");
    loc.expect("job location")
}

fn job(base: &str, token: &str, location: &str) -> Value {
    let (s, v) = send(base, Some(token), reqwest::Method::GET, location, None);
    assert_eq!(s, 200, "{location}: {v}");
    v
}

fn wait_job(base: &str, token: &str, location: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = job(base, token, location);
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job never finished: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn points_csv(path: &Path, n: usize, tag: &str) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,tag,lon,lat").unwrap();
    for i in 0..n {
        let lon = -100.5 + (i % 1000) as f64 * 0.0004;
        let lat = 25.5 + (i / 1000) as f64 * 0.0004;
        writeln!(f, "{i},{tag},{lon:.5},{lat:.5}").unwrap();
    }
    f.flush().unwrap();
}

fn matched(base: &str, layer: &str) -> Option<u64> {
    let (s, v) = get(base, &format!("/collections/{layer}/items?limit=1"));
    (s == 200).then(|| v["numberMatched"].as_u64()).flatten()
}

/// nginx in front of the replicas (round robin), on a free port; stopped on drop.
struct Nginx {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("    server {};\n", u.trim_start_matches("http://")))
            .collect();
        let d = dir.path().display();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let conf = format!(
            "{user}master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               client_max_body_size 2g;\n\
               upstream datahub {{\n{servers}    keepalive 16;\n  }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://datahub;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 proxy_request_buffering off;\n      proxy_read_timeout 300s;\n    }}\n  }}\n}}\n",
            user = if root { "user root;\n" } else { "" },
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .args(["-p", &d.to_string(), "-c", &conf_path.to_string_lossy()])
            // One process (no master): killing it on drop leaves no worker behind
            // holding the test's output open.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light; make test does it)");
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while client().get(format!("{base}/health/live")).send().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            base,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes through one replica reach the other within 2 s (20 in a row, also
/// through nginx); a token revoked anywhere is refused everywhere at once; a record
/// edit and a delete are followed; the public layers are PostGIS views a read-only
/// role sees with GDAL's PostgreSQL driver (as QGIS does), and nothing else.
#[test]
fn replicas_share_publishes_revocations_and_sql_views() {
    let pg = PgCluster::start();
    let url = pg.database("hub");
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(&da, &url, &["demo"]);
    let admin = cli(&da, &url, &["token", "create", "--role", "admin"])
        .trim()
        .to_string();
    let editor = cli(
        &da,
        &url,
        &[
            "token",
            "create",
            "--ministry",
            "obras-publicas",
            "--role",
            "editor",
        ],
    )
    .trim()
    .to_string();
    let a = replica(&da, &url);
    let b = replica(&db, &url);
    let proxy = Nginx::start(&[&a.base, &b.base]);

    // B was started with an empty folder: it serves the demo copied from the database.
    assert_eq!(matched(&b.base, "colonias"), Some(48));

    // A new layer and 19 new versions through A; each visible on B within 2 s.
    let csv = tmp.path().join("obras.csv");
    let mut lags = Vec::new();
    for i in 1..=20usize {
        points_csv(&csv, 10 * i, &format!("v{i}"));
        let loc = if i == 1 {
            upload(
                &a.base,
                &editor,
                reqwest::Method::POST,
                "/api/layers",
                &csv,
                Some(json!({"id": "obras", "access": "public", "title": "Obras"})),
            )
        } else {
            upload(
                &a.base,
                &editor,
                reqwest::Method::PUT,
                "/api/layers/obras/data",
                &csv,
                None,
            )
        };
        let done = wait_job(&a.base, &editor, &loc);
        assert_eq!(done["state"], "succeeded", "{done}");
        let t0 = Instant::now();
        while matched(&b.base, "obras") != Some(10 * i as u64) {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "version {i} not on replica B after 2 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        lags.push(t0.elapsed());
        // The job is known to both replicas (its record is in the database).
        assert_eq!(job(&b.base, &editor, &loc)["state"], "succeeded");
    }
    lags.sort();
    eprintln!(
        "publish → visible on the other replica: p50 {:?}, max {:?}",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // Retention as on one machine: 5 kept versions, in PostGIS too.
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM datahub.versions WHERE layer = 'obras'"
        )
        .trim(),
        "5"
    );
    // Through nginx: every answer is the newest version, whichever replica gave it.
    for _ in 0..20 {
        assert_eq!(matched(&proxy.base, "obras"), Some(200));
    }
    let (s, _) = get(&proxy.base, "/tiles/obras/10/226/436.mvt");
    assert_eq!(s, 200);
    let (s, v) = get(&proxy.base, "/health/ready");
    assert_eq!((s, v["database"].as_str()), (200, Some("ok")), "{v}");

    // Usage counted on both replicas is added up in the database (the tile through
    // nginx above, and three on each replica).
    for base in [&a.base, &b.base] {
        for _ in 0..3 {
            assert_eq!(get(base, "/tiles/obras/10/226/436.mvt").0, 200);
        }
    }
    let t0 = Instant::now();
    loop {
        let (_, u) = get(&a.base, "/api/usage?days=1");
        if u["by_layer"]["obras"]["by_kind"]["tile"].as_u64() == Some(7) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "usage not added up: {u}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Metrics: what an operator scrapes from each replica.
    let text = client()
        .get(format!("{}/metrics", b.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "datahub_http_requests_total{class=\"tiles\",code=\"200\"}",
        "datahub_tile_cache_hits_total",
        "datahub_db_up 1",
        "datahub_db_pool_connections",
        "datahub_refresh_age_seconds",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }

    // A record edit on B is on A at once.
    let (s, v) = send(
        &b.base,
        Some(&editor),
        reqwest::Method::PATCH,
        "/api/layers/obras",
        Some(json!({"title": "Obras en curso"})),
    );
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    while get(&a.base, "/collections/obras").1["title"] != "Obras en curso" {
        assert!(t0.elapsed() < Duration::from_secs(2), "edit not on A");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Revoked on A's command line: B refuses it at once (no 15 s cache).
    let audit = |base: &str| {
        send(
            base,
            Some(&editor),
            reqwest::Method::GET,
            "/api/jobs/none",
            None,
        )
        .0
    };
    assert_eq!(audit(&b.base), 404, "the editor's token works on B");
    let id = editor.split('_').nth(1).unwrap();
    cli(&da, &url, &["token", "revoke", id]);
    let t0 = Instant::now();
    while audit(&b.base) != 401 {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "revocation not on B within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(audit(&proxy.base), 401);

    // A delete on B hides the layer on A.
    let (s, v) = send(
        &b.base,
        Some(&admin),
        reqwest::Method::DELETE,
        "/api/layers/reportes",
        None,
    );
    assert!(s == 200 || s == 204, "{s} {v}");
    let t0 = Instant::now();
    while get(&a.base, "/collections/reportes").0 != 404 {
        assert!(t0.elapsed() < Duration::from_secs(2), "delete not on A");
        std::thread::sleep(Duration::from_millis(10));
    }

    // SQL users: a login role in datahub_reader sees the public layers' current
    // versions as views (with their GiST index underneath), and nothing else.
    psql(
        &url,
        "CREATE ROLE analista LOGIN PASSWORD 'x' IN ROLE datahub_reader",
    );
    let conn = format!(
        "PG:host=127.0.0.1 port={} dbname=hub user=analista password=x schemas=datahub_public",
        pg.port
    );
    let o = Command::new("ogrinfo")
        .args(["-ro", "-q", &conn])
        .output()
        .unwrap();
    let listing = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(listing.contains("colonias"), "{listing}");
    assert!(listing.contains("obras"), "{listing}");
    assert!(
        !listing.contains("reportes"),
        "a deleted layer is not a view: {listing}"
    );
    let o = Command::new("ogrinfo")
        .args(["-ro", "-so", &conn, "obras"])
        .output()
        .unwrap();
    let summary = stdout(&o);
    assert!(summary.contains("Feature Count: 200"), "{summary}");
    assert!(summary.contains("EPSG\",4326"), "{summary}");
    // A bbox query through the driver finds the right features.
    let o = Command::new("ogrinfo")
        .args([
            "-ro",
            "-q",
            "-spat",
            "-100.5001",
            "25.4999",
            "-100.4995",
            "25.5001",
            &conn,
            "obras",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o).matches("OGRFeature").count(),
        2,
        "{}",
        stdout(&o)
    );
    let plan = psql(
        &url,
        "SET enable_seqscan = off; EXPLAIN SELECT * FROM datahub_public.obras WHERE geom && ST_MakeEnvelope(-100.5, 25.5, -100.4, 25.6, 4326)",
    );
    assert!(
        plan.contains("Index"),
        "the view uses the GiST index: {plan}"
    );
    let denied = Command::new("psql")
        .args([
            &format!("postgres://analista:x@127.0.0.1:{}/hub", pg.port),
            "-XAtc",
            "SELECT count(*) FROM datahub.tokens",
        ])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("permission denied"),
        "{}",
        stderr(&denied)
    );
    drop(proxy);
}

/// A replica killed (SIGKILL) in the middle of an upload: the job is reported failed
/// by the other replica, which keeps serving the previous version, nothing of the
/// new one is visible, and the layer can be uploaded again at once. Then the database
/// restarts under a serving replica: reads go on, writes answer 503 saying why, and
/// everything recovers without restarting DataHub. A replica started while the
/// database is down waits and says so.
#[test]
fn killed_replica_database_restart_and_waiting_start() {
    let pg = PgCluster::start();
    let url = pg.database("hub");
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(
        &da,
        &url,
        &["ministry", "add", "obras-publicas", "--name", "Obras"],
    );
    let editor = cli(
        &da,
        &url,
        &[
            "token",
            "create",
            "--ministry",
            "obras-publicas",
            "--role",
            "editor",
        ],
    )
    .trim()
    .to_string();
    let small = tmp.path().join("small.csv");
    points_csv(&small, 100, "v1");
    let mut a = replica(&da, &url);
    let b = replica(&db, &url);
    let loc = upload(
        &b.base,
        &editor,
        reqwest::Method::POST,
        "/api/layers",
        &small,
        Some(json!({"id": "grande", "access": "public"})),
    );
    assert_eq!(wait_job(&b.base, &editor, &loc)["state"], "succeeded");

    let big = tmp.path().join("big.csv");
    points_csv(&big, 400_000, "v2");
    let loc = upload(
        &a.base,
        &editor,
        reqwest::Method::PUT,
        "/api/layers/grande/data",
        &big,
        None,
    );
    let t0 = Instant::now();
    while job(&a.base, &editor, &loc)["state"] != "running" {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // B reports the job failed (its replica's lease is gone) and serves version 1.
    let t0 = Instant::now();
    loop {
        let v = job(&b.base, &editor, &loc);
        if v["state"] == "failed" {
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("upload the file again"),
                "{v}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(matched(&b.base, "grande"), Some(100));
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(version::text, ',') FROM datahub.versions WHERE layer = 'grande'"
        )
        .trim(),
        "1"
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM datahub_public.grande").trim(),
        "100"
    );
    // The dead replica's ingest lock went with its connection: upload again now.
    let loc = upload(
        &b.base,
        &editor,
        reqwest::Method::PUT,
        "/api/layers/grande/data",
        &small,
        None,
    );
    let v = wait_job(&b.base, &editor, &loc);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["version"], 2, "{v}");

    // The database restarts under B.
    pg.stop();
    for path in [
        "/collections/grande/items?limit=5",
        "/tiles/grande/10/226/436.mvt",
        "/collections",
    ] {
        assert_eq!(
            get(&b.base, path).0,
            200,
            "{path} while the database is down"
        );
    }
    let (s, v) = get(&b.base, "/health/ready");
    assert_eq!(
        (s, v["database"].as_str()),
        (503, Some("unreachable")),
        "{v}"
    );
    assert_eq!(get(&b.base, "/health/live").0, 200);
    let (s, v) = send(
        &b.base,
        Some(&editor),
        reqwest::Method::PATCH,
        "/api/layers/grande",
        Some(json!({"title": "Grande"})),
    );
    // The token was verified before (cached) or cannot be: either way no write.
    assert_eq!(s, 503, "{v}");
    assert!(
        v["description"].as_str().unwrap().contains("database"),
        "{v}"
    );
    pg.start_again();
    let t0 = Instant::now();
    loop {
        let (s, v) = send(
            &b.base,
            Some(&editor),
            reqwest::Method::PATCH,
            "/api/layers/grande",
            Some(json!({"title": "Grande"})),
        );
        if s == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no recovery: {s} {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(&b.base, "/health/ready").0, 200);
    assert_eq!(get(&b.base, "/collections/grande").1["title"], "Grande");

    // A replica started while the database is down waits, says so, then serves.
    pg.stop();
    let dc = tmp.path().join("c");
    let mut c = bin()
        .arg("--data")
        .arg(&dc)
        .args(["--database", &url, "serve", "--addr", "127.0.0.1:0"])
        .env("DATAHUB_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = c.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let said = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the replica says it waits");
    assert!(said.contains("waiting for the database"), "{said}");
    pg.start_again();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert_eq!(matched(&base, "grande"), Some(100));
    let _ = c.kill();
    let _ = c.wait();
}

fn ogr_features(src: &str, extra: &[&str]) -> Vec<Value> {
    let o = Command::new("ogr2ogr")
        .args(["-f", "GeoJSON", "/vsistdout/", src])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "ogr2ogr {src}: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["features"].as_array().unwrap().clone()
}

/// `datahub migrate`: every version of a files-and-SQLite hub (new versions, a
/// restore, a deleted layer, tokens, the audit log, drafts, webhooks, approval rules)
/// is in PostgreSQL afterwards, feature by feature (PostGIS rows read with GDAL against
/// the folder's FlatGeobuf), a second run copies nothing, and a replica on the database
/// accepts the old tokens, keeps the approval rule, numbering and subscriptions.
#[test]
fn migrate_demo_hub_every_version_feature_by_feature() {
    let pg = PgCluster::start();
    let url = pg.database("migrated");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hub");
    // The files backend, whatever the suite's backend is.
    let files = |args: &[&str]| {
        let o = bin()
            .arg("--data")
            .arg(&data)
            .args(args)
            .env_remove("DATAHUB_DATABASE")
            .env("DATAHUB_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    files(&["demo"]);
    let admin = files(&["token", "create", "--role", "admin"])
        .trim()
        .to_string();
    let src: PathBuf = std::fs::read_dir(data.join("demo-sources"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("reportes"))
        .expect("demo source of reportes");
    files(&[
        "ingest",
        &src.to_string_lossy(),
        "--layer",
        "reportes",
        "--ministry",
        "servicios-publicos",
        "--note",
        "segunda",
    ]);
    files(&["layer", "restore", "reportes", "1"]);
    files(&["layer", "delete", "red-pluvial"]);

    // Change over time goes along: a subscription and its delivery log (v4 notified
    // by a files server), a discarded draft's number (v5), a new layer that is only
    // a draft, and a ministry that requires approval.
    let steward = files(&[
        "token",
        "create",
        "--ministry",
        "servicios-publicos",
        "--role",
        "admin",
    ])
    .trim()
    .to_string();
    let (hook, seen) = webhook_receiver();
    let sub_id = {
        let s = Server::start(&data);
        let (st, sub) = send(
            &s.base,
            Some(&admin),
            reqwest::Method::POST,
            "/api/subscriptions",
            Some(json!({"url": hook, "layer": "reportes"})),
        );
        assert_eq!(st, 201, "{sub}");
        let loc = upload(
            &s.base,
            &admin,
            reqwest::Method::PUT,
            "/api/layers/reportes/data",
            &src,
            None,
        );
        let j = wait_job(&s.base, &admin, &loc);
        assert_eq!(j["result"]["version"], 4, "{j}");
        let id = sub["id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        while !seen.lock().unwrap().contains(&(id.clone(), 4)) {
            assert!(t0.elapsed() < Duration::from_secs(30), "v4 not notified");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Recorded as delivered before the server stops.
        let log = format!("/api/subscriptions/{id}/deliveries");
        while send(&s.base, Some(&admin), reqwest::Method::GET, &log, None).1["deliveries"][0]
            ["state"]
            != "delivered"
        {
            assert!(t0.elapsed() < Duration::from_secs(30), "v4 not recorded");
            std::thread::sleep(Duration::from_millis(100));
        }
        id
    };
    let src_s = src.to_string_lossy().to_string();
    let ingest_draft = |layer: &str| {
        files(&[
            "ingest",
            &src_s,
            "--layer",
            layer,
            "--ministry",
            "servicios-publicos",
            "--draft",
        ])
    };
    ingest_draft("reportes");
    files(&["layer", "discard", "reportes"]);
    ingest_draft("baches");
    files(&[
        "ministry",
        "set",
        "servicios-publicos",
        "--require-approval",
        "true",
    ]);

    let out = files(&["migrate", "--to", &url]);
    assert!(out.contains("checked"), "{out}");
    assert!(out.contains("reportes v4 (current) copied"), "{out}");
    assert!(out.contains("baches v1 (draft) copied"), "{out}");
    assert!(out.contains("webhook subscriptions 1 (+1)"), "{out}");
    let again = files(&["migrate", "--to", &url]);
    assert!(again.contains("(0 copied now)"), "{again}");
    assert!(again.contains("webhook subscriptions 1 (+0)"), "{again}");

    let mut compared = 0;
    for layer in ["colonias", "reportes", "red-pluvial", "baches"] {
        for entry in std::fs::read_dir(data.join("layers").join(layer))
            .unwrap()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(n) = name.strip_prefix('v') else {
                continue;
            };
            let fgb = entry.path().join("layer.fgb");
            let mut want: Vec<Value> = ogr_features(&fgb.to_string_lossy(), &[]);
            let table = format!("datahub_data.\"{layer}_v{n}\"");
            let mut got = ogr_features(
                &format!(
                    "PG:host=127.0.0.1 port={} dbname=migrated user=postgres",
                    pg.port
                ),
                &["-sql", &format!("SELECT * FROM {table}")],
            );
            assert_eq!(want.len(), got.len(), "{layer} v{n}");
            let key = |f: &Value, k: &str| f["properties"][k].as_i64().unwrap();
            want.sort_by_key(|f| key(f, "__datahub_fid"));
            got.sort_by_key(|f| key(f, "fid"));
            for (w, g) in want.iter().zip(&got) {
                let mut wp = w["properties"].as_object().unwrap().clone();
                let mut gp = g["properties"].as_object().unwrap().clone();
                assert_eq!(wp.remove("__datahub_fid"), gp.remove("fid"), "{layer} v{n}");
                // A FlatGeobuf date is a DateTime column to GDAL ("…T00:00:00"); in
                // PostGIS it is a `date`, as QGIS should see it.
                for (k, v) in wp.iter_mut() {
                    if let (Some(w), Some(g)) = (v.as_str(), gp.get(k).and_then(Value::as_str)) {
                        if w.strip_suffix("T00:00:00") == Some(g) {
                            *v = json!(g);
                        }
                    }
                }
                assert_eq!(wp, gp, "{layer} v{n}");
                let (wc, gc) = (coords(&w["geometry"]), coords(&g["geometry"]));
                assert_eq!(wc.len(), gc.len());
                for (p, q) in wc.iter().zip(&gc) {
                    assert!(
                        (p.0 - q.0).abs() < 1e-9 && (p.1 - q.1).abs() < 1e-9,
                        "{layer} v{n}"
                    );
                }
            }
            compared += 1;
        }
    }
    assert_eq!(
        compared, 7,
        "colonias v1, reportes v1–v4, red-pluvial v1, baches v1"
    );

    // A replica on the migrated database: same layers, the deleted one hidden, the
    // old admin token valid, the audit log carried over.
    let r = replica(&tmp.path().join("replica"), &url);
    assert_eq!(matched(&r.base, "reportes"), Some(600));
    assert_eq!(get(&r.base, "/collections/red-pluvial").0, 404);
    let (s, v) = send(
        &r.base,
        Some(&admin),
        reqwest::Method::GET,
        "/api/audit?limit=100",
        None,
    );
    assert_eq!(s, 200, "{v}");
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .or_else(|| v.as_array())
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "layer.restore",
        "layer.delete",
        "token.create",
        "layer.upload",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let (s, v) = send(
        &r.base,
        Some(&admin),
        reqwest::Method::GET,
        "/api/layers/reportes/versions",
        None,
    );
    assert_eq!(s, 200, "{v}");

    // The draft-only layer: its ministry sees the draft, nobody else sees a layer.
    let (s, v) = send(
        &r.base,
        Some(&steward),
        reqwest::Method::GET,
        "/api/layers/baches/draft",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(get(&r.base, "/collections/baches").0, 404);
    // The subscription and its log came along.
    let (s, v) = send(
        &r.base,
        Some(&admin),
        reqwest::Method::GET,
        &format!("/api/subscriptions/{sub_id}/deliveries"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deliveries"][0]["version"], 4, "{v}");
    assert_eq!(v["deliveries"][0]["state"], "delivered", "{v}");
    // Approval is still required: the next upload is a draft, numbered after the
    // discarded v5; the uploader may not publish it, the ministry's admin may, and
    // the subscriber hears of v6.
    let loc = upload(
        &r.base,
        &admin,
        reqwest::Method::PUT,
        "/api/layers/reportes/data",
        &src,
        None,
    );
    let j = wait_job(&r.base, &admin, &loc);
    assert_eq!(j["result"]["version"], 6, "{j}");
    assert!(j["result"]["draft"].is_object(), "{j}");
    let (s, v) = send(
        &r.base,
        Some(&admin),
        reqwest::Method::POST,
        "/api/layers/reportes/draft/publish",
        None,
    );
    assert_eq!(s, 403, "{v}");
    let (s, v) = send(
        &r.base,
        Some(&steward),
        reqwest::Method::POST,
        "/api/layers/reportes/draft/publish",
        None,
    );
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    while !seen.lock().unwrap().contains(&(sub_id.clone(), 6)) {
        assert!(t0.elapsed() < Duration::from_secs(30), "v6 not notified");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (subscription, version) of each notification a receiver got, in arrival order.
type Notified = Arc<Mutex<Vec<(String, u64)>>>;

/// A receiver on a free local port and what it got.
fn webhook_receiver() -> (String, Notified) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let seen: Notified = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let (mut line, mut len) = (String::new(), 0usize);
            loop {
                line.clear();
                std::io::BufRead::read_line(&mut r, &mut line).unwrap();
                let t = line.trim_end().to_lowercase();
                if t.is_empty() {
                    break;
                }
                if let Some(v) = t.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            s2.lock().unwrap().push((
                v["subscription"].as_str().unwrap().to_string(),
                v["version"].as_u64().unwrap(),
            ));
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

#[test]
fn drafts_and_notifications_across_replicas() {
    let pg = PgCluster::start();
    let url = pg.database("hub");
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(
        &da,
        &url,
        &["ministry", "add", "obras-publicas", "--name", "Obras"],
    );
    let tok = |role: &str| {
        cli(
            &da,
            &url,
            &[
                "token",
                "create",
                "--ministry",
                "obras-publicas",
                "--role",
                role,
            ],
        )
        .trim()
        .to_string()
    };
    let (editor, admin) = (tok("editor"), tok("admin"));
    let a = replica(&da, &url);
    let b = replica(&db, &url);
    let csv = tmp.path().join("obras.csv");
    points_csv(&csv, 100, "v1");
    let loc = upload(
        &a.base,
        &editor,
        reqwest::Method::POST,
        "/api/layers",
        &csv,
        Some(json!({"id": "obras", "access": "public", "title": "Obras", "id_field": "id"})),
    );
    assert_eq!(wait_job(&a.base, &editor, &loc)["state"], "succeeded");
    // Subscribed through B; both replicas run a sender.
    let (hook, seen) = webhook_receiver();
    let (s, sub) = send(
        &b.base,
        Some(&admin),
        reqwest::Method::POST,
        "/api/subscriptions",
        Some(json!({"url": hook, "layer": "obras"})),
    );
    assert_eq!(s, 201, "{sub}");

    // A draft through A: on B its ministry sees it, the public keeps v1.
    points_csv(&csv, 150, "v2");
    let loc = upload(
        &a.base,
        &editor,
        reqwest::Method::PUT,
        "/api/layers/obras/data",
        &csv,
        Some(json!({"draft": true, "id_field": "id"})),
    );
    assert_eq!(
        wait_job(&a.base, &editor, &loc)["result"]["draft"]["base"],
        1
    );
    let t0 = Instant::now();
    loop {
        let (s, v) = send(
            &b.base,
            Some(&editor),
            reqwest::Method::GET,
            "/api/layers/obras/draft",
            None,
        );
        if s == 200 {
            assert_eq!(v["changes"]["counts"]["added"], 50, "{v}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "draft not on B: {s} {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&b.base, "/collections/obras@draft/items").0, 404);
    assert_eq!(matched(&b.base, "obras"), Some(100));
    assert_eq!(
        psql(&url, "SELECT count(*) FROM datahub_public.obras").trim(),
        "100"
    );
    // Published through B: A serves it, the public view follows.
    let (s, v) = send(
        &b.base,
        Some(&admin),
        reqwest::Method::POST,
        "/api/layers/obras/draft/publish",
        None,
    );
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    while matched(&a.base, "obras") != Some(150) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "published draft not on A"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        psql(&url, "SELECT count(*) FROM datahub_public.obras").trim(),
        "150"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM datahub.versions WHERE meta ? 'draft'"
        )
        .trim(),
        "0"
    );
    // One more version through A; each version notified once, in order, although
    // two replicas send.
    points_csv(&csv, 160, "v3");
    let loc = upload(
        &a.base,
        &editor,
        reqwest::Method::PUT,
        "/api/layers/obras/data",
        &csv,
        Some(json!({"id_field": "id"})),
    );
    assert_eq!(wait_job(&a.base, &editor, &loc)["state"], "succeeded");
    let t0 = Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "notifications: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let sid = sub["id"].as_str().unwrap().to_string();
    assert_eq!(*seen.lock().unwrap(), vec![(sid.clone(), 2), (sid, 3)]);
}
