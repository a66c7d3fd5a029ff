//! Throwaway PostgreSQL 15 + PostGIS 3 clusters for the tests (Debian's packages): a
//! temporary folder, a free port, the unprivileged `postgres` user when the tests run
//! as root (PostgreSQL refuses to run as root); stopped when dropped.
//!
//! With `DATAHUB_TEST_PG=postgres://postgres@127.0.0.1:PORT` (set by
//! `tests/pg-suites.sh`), every data folder a test uses gets its own database on that
//! cluster and every `datahub` the helpers start uses the PostgreSQL backend: the
//! black-box suites run unchanged against it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL server program as the user that may run it.
fn as_pg(program: &str, args: &[&str]) -> std::process::Output {
    let line = std::iter::once(format!("{PGBIN}/{program}"))
        .chain(
            args.iter()
                .map(|a| format!("'{}'", a.replace('\'', "'\\''"))),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = if is_root() {
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", &line]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &line]);
        c
    };
    cmd.stdin(Stdio::null())
        .output()
        .expect("run a PostgreSQL program")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct PgCluster {
    _dir: tempfile::TempDir,
    pgdata: PathBuf,
    pub port: u16,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        assert!(
            Path::new(PGBIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed: apt-get install postgresql-15 postgresql-15-postgis-3 (make test does it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("datahub-pg")
            .tempdir()
            .expect("tempdir");
        let pgdata = dir.path().join("pg");
        std::fs::create_dir(&pgdata).expect("pgdata");
        if is_root() {
            // The postgres user must reach and own its folder.
            Command::new("chmod")
                .args(["755", &dir.path().to_string_lossy()])
                .status()
                .expect("chmod");
            Command::new("chown")
                .args(["postgres", &pgdata.to_string_lossy()])
                .status()
                .expect("chown");
        }
        let p = pgdata.to_string_lossy().into_owned();
        let o = as_pg(
            "initdb",
            &["-D", &p, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let c = PgCluster {
            _dir: dir,
            pgdata,
            port: free_port(),
        };
        c.start_server();
        c
    }

    fn start_server(&self) {
        let p = self.pgdata.to_string_lossy().into_owned();
        let log = self.pgdata.join("log").to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {p} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port
        );
        let o = as_pg(
            "pg_ctl",
            &["-D", &p, "-l", &log, "-w", "-o", &opts, "start"],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(self.pgdata.join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast: connections are cut) and starts it again after `pause`.
    pub fn stop(&self) {
        let p = self.pgdata.to_string_lossy().into_owned();
        as_pg("pg_ctl", &["-D", &p, "-m", "fast", "-w", "stop"]);
    }

    pub fn start_again(&self) {
        self.start_server();
    }

    /// The server's address, without a database.
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// A new database (with PostGIS available) and its URL.
    pub fn database(&self, name: &str) -> String {
        create_database(&self.base(), name);
        format!("{}/{name}", self.base())
    }

    /// Runs SQL as the superuser in `db`; returns psql's unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql(&format!("{}/{db}", self.base()), sql)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let p = self.pgdata.to_string_lossy().into_owned();
        as_pg("pg_ctl", &["-D", &p, "-m", "immediate", "-w", "stop"]);
    }
}

pub fn psql(url: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn create_database(base: &str, name: &str) {
    let o = Command::new("psql")
        .args([
            &format!("{base}/postgres"),
            "-XAtq",
            "-c",
            &format!("CREATE DATABASE \"{name}\""),
        ])
        .output()
        .expect("psql");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || err.contains("already exists"),
        "create database: {err}"
    );
}

/// The database a data folder uses when the suites run on PostgreSQL
/// (`DATAHUB_TEST_PG`), created on first use; None on the file backend.
pub fn database_for(data: &Path) -> Option<String> {
    static MADE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let base = std::env::var("DATAHUB_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())?;
    // One database per data folder: a stable name from its path.
    let key = std::fs::canonicalize(data)
        .or_else(|_| {
            std::fs::create_dir_all(data)?;
            std::fs::canonicalize(data)
        })
        .unwrap_or_else(|_| data.to_path_buf());
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.to_string_lossy().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let name = format!("t_{h:016x}");
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let set = made.get_or_insert_with(HashSet::new);
    if set.insert(name.clone()) {
        create_database(&base, &name);
    }
    Some(format!("{base}/{name}"))
}
