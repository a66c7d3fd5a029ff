//! Helpers shared by the black-box tests: where the real test data is, running the
//! real `datahub` binary, and independent reference output from GDAL's `ogr2ogr`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub mod pg;

/// The real data of ../shared/data (or the same files fetched by `make test`).
/// Never skipped: a missing folder is a failure with instructions.
pub fn testdata() -> PathBuf {
    let p = std::env::var_os("DATAHUB_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        p.join("vector").is_dir(),
        "test data not found at {} (set DATAHUB_TEST_DATA, or run `make test`, which fetches it)",
        p.display()
    );
    p
}

pub fn vector(rel: &str) -> PathBuf {
    testdata().join("vector").join(rel)
}

/// The test venv's Python (OWSLib, jsonschema, rdflib, openpyxl), made by `make test`.
pub fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(p.exists(), "`make test` creates tests/.venv");
    p
}

/// The features of a layer's current version as GDAL reads our FlatGeobuf, in id order.
pub fn stored_features(data: &Path, layer: &str) -> Vec<Value> {
    let v = ogr_geojson(
        &current_fgb(data, layer).to_string_lossy(),
        None,
        false,
        &[],
    );
    let mut f = v["features"].as_array().expect("features").clone();
    f.sort_by_key(|f| f["properties"]["__datahub_fid"].as_i64().expect("fid"));
    f
}

/// A stored schema as "name:type" strings, from an ingest's `--json` summary.
pub fn schema_types(meta: &Value) -> Vec<String> {
    meta["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["name"].as_str().expect("name"),
                f["type"].as_str().expect("type")
            )
        })
        .collect()
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_datahub"))
}

/// `datahub --data DATA`, on the suite's backend: the data folder alone, or with
/// `DATAHUB_TEST_PG` a PostgreSQL database of its own with DATA as the local copy.
pub fn bin_for(data: &Path) -> Command {
    let mut c = bin();
    c.arg("--data").arg(data);
    match pg::database_for(data) {
        Some(url) => c.env("DATAHUB_DATABASE", url),
        None => c.env_remove("DATAHUB_DATABASE"),
    };
    c
}

pub fn run(data: &Path, args: &[&str]) -> Output {
    bin_for(data)
        .args(args)
        .env("DATAHUB_LOG", "warn")
        .output()
        .expect("run datahub")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Registers a ministry in the data folder's catalogue (once; later calls do nothing).
pub fn ensure_ministry(data: &Path, slug: &str) {
    let marker = data.join(format!(".test-ministry-{slug}"));
    if marker.exists() {
        return;
    }
    let o = run(data, &["ministry", "add", slug, "--name", slug]);
    assert!(
        o.status.success() || stderr(&o).contains("already exists"),
        "ministry add: {}",
        stderr(&o)
    );
    std::fs::write(marker, "").expect("marker");
}

/// A new token's secret: `datahub token create ARGS...`.
pub fn token(data: &Path, args: &[&str]) -> String {
    let mut a = vec!["token", "create"];
    a.extend_from_slice(args);
    let o = run(data, &a);
    assert!(o.status.success(), "token create: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// `datahub ingest SOURCE --layer ID --ministry pruebas EXTRA...`; public unless
/// EXTRA gives `--access` (the black-box tests read layers anonymously).
fn ingest(data: &Path, source: &Path, layer: &str, extra: &[&str]) -> Output {
    ensure_ministry(data, "pruebas");
    let src = source.to_string_lossy().into_owned();
    let mut args = vec![
        "ingest",
        src.as_str(),
        "--layer",
        layer,
        "--ministry",
        "pruebas",
    ];
    if !extra.contains(&"--access") {
        args.extend_from_slice(&["--access", "public"]);
    }
    args.extend_from_slice(extra);
    run(data, &args)
}

/// An ingest that must succeed; returns its `--json` summary.
pub fn ingest_ok(data: &Path, source: &Path, layer: &str, extra: &[&str]) -> Value {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let o = ingest(data, source, layer, &extra);
    assert!(
        o.status.success(),
        "ingest of {} failed: {}",
        source.display(),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).expect("ingest --json output")
}

/// Runs an ingest expected to fail with a user error (exit code 2); returns stderr.
pub fn ingest_err(data: &Path, source: &Path, layer: &str, extra: &[&str]) -> String {
    let o = ingest(data, source, layer, extra);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected a user error for {}; stdout {} stderr {}",
        source.display(),
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// Runs GDAL's `ogr2ogr` (an independent writer of test inputs); panics on failure.
pub fn ogr2ogr(args: &[&str]) {
    let o = Command::new("ogr2ogr")
        .args(args)
        .output()
        .expect("ogr2ogr");
    assert!(
        o.status.success(),
        "ogr2ogr {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Zips every file of `dir` into `zip_path`, names prefixed by `prefix`.
pub fn zip_dir(dir: &Path, zip_path: &Path, prefix: &str) {
    use std::io::Write;
    let f = std::fs::File::create(zip_path).expect("create zip");
    let mut z = zip::ZipWriter::new(f);
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("dir entry").path();
        z.start_file(
            format!("{prefix}{}", p.file_name().expect("name").to_string_lossy()),
            zip::write::SimpleFileOptions::default(),
        )
        .expect("zip entry");
        z.write_all(&std::fs::read(&p).expect("read"))
            .expect("zip write");
    }
    z.finish().expect("zip finish");
}

/// The stored FlatGeobuf of the current version of `layer`.
pub fn current_fgb(data: &Path, layer: &str) -> PathBuf {
    let cur =
        std::fs::read_to_string(data.join("layers").join(layer).join("CURRENT")).expect("CURRENT");
    data.join("layers")
        .join(layer)
        .join(format!("v{}", cur.trim()))
        .join("layer.fgb")
}

/// `ogr2ogr -f GeoJSON` of a dataset, optionally reprojected to EPSG:4326.
pub fn ogr_geojson(src: &str, layer: Option<&str>, to_4326: bool, extra: &[&str]) -> Value {
    let mut cmd = Command::new("ogr2ogr");
    cmd.args([
        "-f",
        "GeoJSON",
        "/vsistdout/",
        "-lco",
        "RFC7946=NO",
        "-lco",
        "COORDINATE_PRECISION=15",
    ]);
    if to_4326 {
        cmd.args(["-t_srs", "EPSG:4326"]);
    }
    cmd.args(extra).arg(src);
    if let Some(l) = layer {
        cmd.arg(l);
    }
    let o = cmd.output().expect("ogr2ogr (gdal-bin) must be installed");
    assert!(
        o.status.success(),
        "ogr2ogr {src}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("ogr2ogr GeoJSON")
}

/// All (x, y) of a GeoJSON geometry, Z ignored.
pub fn coords(g: &Value) -> Vec<(f64, f64)> {
    fn walk(v: &Value, out: &mut Vec<(f64, f64)>) {
        match v {
            Value::Array(a) if a.len() >= 2 && a[0].is_number() => out.push((
                a[0].as_f64().unwrap_or(f64::NAN),
                a[1].as_f64().unwrap_or(f64::NAN),
            )),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if g["type"] == "GeometryCollection" {
        for p in g["geometries"].as_array().into_iter().flatten() {
            walk(&p["coordinates"], &mut out);
        }
    } else {
        walk(&g["coordinates"], &mut out);
    }
    out
}

pub fn envelope(g: &Value) -> Option<[f64; 4]> {
    let c = coords(g);
    if c.is_empty() {
        return None;
    }
    let mut e = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for (x, y) in c {
        e[0] = e[0].min(x);
        e[1] = e[1].min(y);
        e[2] = e[2].max(x);
        e[3] = e[3].max(y);
    }
    Some(e)
}

/// Result of comparing our stored layer with ogr2ogr's reprojection of the source.
#[derive(Debug)]
pub struct Comparison {
    pub source_features: usize,
    pub stored_features: usize,
    /// Features whose vertices differ (repaired geometries).
    pub changed: usize,
    pub max_error_deg: f64,
}

/// Compares every coordinate of every stored feature with `ogr2ogr -t_srs EPSG:4326`
/// of the same source (feature i of the source is DataHub id i+1). Vertices are compared
/// as sorted sets, since ring orientation is normalised on ingest.
/// Features in `repaired` (ids from the ingest report) are only counted, not compared:
/// MakeValid moves vertices by design.
pub fn compare_with_ogr2ogr(
    data: &Path,
    layer: &str,
    src: &str,
    src_layer: Option<&str>,
    extra: &[&str],
    repaired: &[i64],
) -> Comparison {
    let theirs = ogr_geojson(src, src_layer, true, extra);
    let ours = ogr_geojson(
        &current_fgb(data, layer).to_string_lossy(),
        None,
        false,
        &[],
    );
    let tf = theirs["features"].as_array().expect("features");
    let of = ours["features"].as_array().expect("features");
    let mut by_id = std::collections::HashMap::new();
    for f in of {
        let id = f["properties"]["__datahub_fid"]
            .as_i64()
            .expect("stored id");
        by_id.insert(id, f);
    }
    let mut cmp = Comparison {
        source_features: tf.len(),
        stored_features: of.len(),
        changed: 0,
        max_error_deg: 0.0,
    };
    for (i, t) in tf.iter().enumerate() {
        let Some(o) = by_id.get(&(i as i64 + 1)) else {
            assert!(
                coords(&t["geometry"]).is_empty(),
                "source feature {} with geometry not stored",
                i + 1
            );
            continue;
        };
        let mut a = coords(&t["geometry"]);
        let mut b = coords(&o["geometry"]);
        let key = |p: &(f64, f64)| (p.0, p.1);
        a.sort_by(|p, q| key(p).partial_cmp(&key(q)).expect("finite"));
        b.sort_by(|p, q| key(p).partial_cmp(&key(q)).expect("finite"));
        if a.len() != b.len() || repaired.contains(&(i as i64 + 1)) {
            cmp.changed += 1;
            continue;
        }
        for (p, q) in a.iter().zip(&b) {
            let err = (p.0 - q.0).abs().max((p.1 - q.1).abs());
            cmp.max_error_deg = cmp.max_error_deg.max(err);
        }
    }
    cmp
}

/// Follows `next` links from `path`; returns every feature.
pub fn all_pages(server: &Server, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = format!("{}{path}", server.base);
    let mut matched = None;
    loop {
        let r = reqwest::blocking::get(&url).unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], "application/geo+json");
        let v: Value = r.json().unwrap();
        assert_eq!(
            v["numberReturned"].as_u64().unwrap() as usize,
            v["features"].as_array().unwrap().len()
        );
        matched.get_or_insert(v["numberMatched"].as_u64().unwrap());
        out.extend(v["features"].as_array().unwrap().iter().cloned());
        match v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
        {
            Some(l) => url = l["href"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(Some(out.len() as u64), matched, "{path}");
    out
}

/// A running `datahub serve` on a free port; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// With global options before `serve` (e.g. `--config file.toml`).
    pub fn start_with(data: &Path, global: &[&str]) -> Server {
        Server::start_logged(data, global, None)
    }

    /// Logging at `info` into `log` (for tests that read what the server did).
    pub fn start_logged(data: &Path, global: &[&str], log: Option<&Path>) -> Server {
        let mut cmd = bin_for(data);
        // Not the repository: the binary must carry everything it serves (the map's
        // MapLibre included), wherever it is started.
        cmd.current_dir(std::env::temp_dir())
            .args(global)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).expect("log file");
                cmd.env("DATAHUB_LOG", "info").stderr(Stdio::from(f));
            }
            None => {
                cmd.env("DATAHUB_LOG", "warn").stderr(Stdio::inherit());
            }
        }
        let mut child = cmd.spawn().expect("spawn datahub serve");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read address");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        Server { child, base }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::blocking::get(format!("{}{path}", self.base)).expect("GET");
        let status = r.status().as_u16();
        let body = r.json::<Value>().unwrap_or(Value::Null);
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// @mapbox/vector-tile's view of a tile: layer name -> features (lon/lat GeoJSON).
pub fn node_decode(dir: &Path, bytes: &[u8], z: u32, x: u32, y: u32) -> Value {
    let f = dir.join(format!("t-{z}-{x}-{y}.mvt"));
    std::fs::write(&f, bytes).expect("write tile");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mvt-decode.js");
    let o = Command::new("node")
        .arg(script)
        .arg(&f)
        .args([z.to_string(), x.to_string(), y.to_string()])
        .output()
        .expect("node");
    assert!(
        o.status.success(),
        "node decoder: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("decoder JSON")
}

/// A JSON array of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}
