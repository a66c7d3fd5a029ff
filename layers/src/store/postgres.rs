//! [`LayerStore`] on PostgreSQL/PostGIS: the store any number of DataHub replicas share.
//!
//! What lives in the database (schema `datahub`): each layer's current version and
//! deleted flag (`layers`), each kept version's record (`versions.meta`, JSONB, with a
//! stamp that changes on every edit), and the version's files (`blobs`: the FlatGeobuf
//! that replicas serve and a joined table's source, in 4 MiB parts). Each kept
//! version's features are also a PostGIS table in `datahub_data` (typed columns,
//! EPSG:4326 geometry, GiST index, loaded with COPY), and the current version of every
//! public layer is a view in `datahub_public` that a read-only role (`datahub_reader`)
//! may select: what QGIS and other SQL clients connect to.
//!
//! What lives on each replica: its data folder, laid out like the file store's, is a
//! *materialized copy* of the database ([`PgStore::sync`]); every read goes to it, so a
//! replica keeps serving what it has loaded while the database is away. The FlatGeobuf
//! is kept in the database byte for byte rather than rebuilt from the rows: every
//! replica serves the same file (same spatial order, same ids), and a replica starts by
//! copying files instead of re-encoding a million features.
//!
//! Writes go to the database first, in a transaction under a per-layer advisory lock
//! (the record lock), then announce themselves (`NOTIFY datahub_changes`); the writer
//! installs its own result locally at once and the other replicas copy it when told
//! (or at their periodic refresh, if a notification was lost). An ingest holds a
//! session-level advisory lock on the layer for its whole length, so two replicas
//! never ingest the same layer at once; a replica that dies loses its connection and
//! with it the lock, and its half-written parts are removed by [`PgStore::clean_stale`].

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    fsync_dir, validate_id, write_atomically, FsStore, LayerMeta, LayerStore, RecordEdit, Staging,
    StoredVersion, DRAFT_FILE, OWNER_LOCK, SOURCE_DIR,
};
use crate::fgb::{FgbView, FieldType, RawValue};
use crate::pg::{db_err, ident, lock_key, Client, Db, CHANNEL};
use crate::{Error, Result};

/// Parts of a stored file (a row each): small enough for one message, large enough
/// that a 1 GB layer is 250 rows.
const PART: usize = 4 << 20;

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS datahub;
CREATE SCHEMA IF NOT EXISTS datahub_data;
CREATE SCHEMA IF NOT EXISTS datahub_public;
CREATE SEQUENCE IF NOT EXISTS datahub.stamps;
CREATE TABLE IF NOT EXISTS datahub.hub (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO datahub.hub (key, value)
    VALUES ('id', md5(random()::text || clock_timestamp()::text)) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS datahub.layers (
    id text PRIMARY KEY,
    current integer,
    hidden boolean NOT NULL DEFAULT false
);
-- The highest version number ever given: a discarded draft's number is never reused
-- (replicas and caches know versions by number).
ALTER TABLE datahub.layers ADD COLUMN IF NOT EXISTS last_version integer NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS datahub.versions (
    layer text NOT NULL REFERENCES datahub.layers(id),
    version integer NOT NULL,
    meta jsonb NOT NULL,
    stamp bigint NOT NULL,
    features_table text NOT NULL,
    blob text NOT NULL,
    PRIMARY KEY (layer, version)
);
CREATE TABLE IF NOT EXISTS datahub.blobs (
    blob text NOT NULL,
    name text NOT NULL,
    part integer NOT NULL,
    bytes bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blob, name, part)
);
-- The byte size of each stored file, checked by the replicas that copy it.
ALTER TABLE datahub.versions ADD COLUMN IF NOT EXISTS sizes jsonb;
-- FlatGeobuf parts barely compress: stored out of line without trying (pglz on
-- 4 MiB values doubled the time of storing a version). Only when not yet so: the
-- ALTER takes a lock that would wait behind every download in progress.
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'datahub.blobs'::regclass
             AND attname = 'bytes' AND attstorage <> 'e') THEN
    ALTER TABLE datahub.blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;
  END IF;
END $$;
"#;

/// The read-only role SQL users (QGIS) are given: it sees `datahub_public` only.
pub const READER_ROLE: &str = "datahub_reader";

/// Creates the schema if it is missing (idempotent; replicas starting together wait
/// for each other on an advisory lock).
pub fn ensure_schema(db: &Db) -> Result<()> {
    db.run(|mut c| async move {
        let tx = c.transaction().await.map_err(db_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("datahub:schema")],
        )
        .await
        .map_err(db_err)?;
        let has_postgis = tx
            .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'postgis'", &[])
            .await
            .map_err(db_err)?
            .is_some();
        if !has_postgis {
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS postgis")
                .await
                .map_err(|e| {
                    Error::bad(format!(
                        "PostGIS is not installed in this database and this user may not \
                         install it ({}); as the database owner run: CREATE EXTENSION postgis;",
                        e.as_db_error().map(|d| d.message()).unwrap_or("refused")
                    ))
                })?;
        }
        tx.batch_execute(SCHEMA).await.map_err(db_err)?;
        let has_role = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&READER_ROLE])
            .await
            .map_err(db_err)?
            .is_some();
        if !has_role {
            // Creating roles needs CREATEROLE: without it the views still exist and
            // the DBA creates the role (README, "Deployment").
            tx.batch_execute("SAVEPOINT role").await.map_err(db_err)?;
            if tx
                .batch_execute(&format!("CREATE ROLE {READER_ROLE} NOLOGIN"))
                .await
                .is_err()
            {
                tracing::warn!(
                    "cannot create role {READER_ROLE}: ask the DBA (README, Deployment)"
                );
                tx.batch_execute("ROLLBACK TO SAVEPOINT role")
                    .await
                    .map_err(db_err)?;
            }
        }
        tx.batch_execute(&format!(
            "DO $$ BEGIN
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                 GRANT USAGE ON SCHEMA datahub_public TO {READER_ROLE};
               END IF;
             END $$"
        ))
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    })
}

/// The layer store on PostgreSQL, with this replica's materialized copy.
pub struct PgStore {
    db: Arc<Db>,
    local: FsStore,
    keep_versions: usize,
    /// One materialization at a time (the refresh loop, a notification, a write).
    sync_lock: Mutex<()>,
}

/// A version as the database lists it.
#[derive(Debug, Clone)]
struct Row {
    layer: String,
    version: u32,
    stamp: i64,
    blob: String,
    /// `{"layer.fgb": bytes, …}` (absent for versions stored before it was kept).
    sizes: Option<String>,
    /// The version is the layer's draft.
    draft: bool,
}

/// The stamp of the record a local copy was made from.
const STAMP_FILE: &str = ".stamp";

impl PgStore {
    /// Opens the store: `db` shared, `local` this replica's data folder.
    pub fn open(db: Arc<Db>, local: impl Into<PathBuf>, keep_versions: usize) -> Result<Self> {
        ensure_schema(&db)?;
        let local = local.into();
        claim_folder(&db, &local)?;
        let store = PgStore {
            db,
            local: FsStore::open(local, keep_versions)?,
            keep_versions: keep_versions.max(1),
            sync_lock: Mutex::new(()),
        };
        Ok(store)
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Brings the local copy to the database's state: new versions copied, edited
    /// records rewritten, dropped versions and layers removed, `CURRENT` and the
    /// deleted flag followed. Returns the layers whose local copy changed.
    pub fn sync(&self) -> Result<Vec<String>> {
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (layers, rows) = self.db.run(|mut c| async move {
            // One snapshot for both lists: a publish between two reads would show a
            // current version whose row the other read no longer has.
            let c = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db_err)?;
            let layers = c
                .query("SELECT id, current, hidden FROM datahub.layers", &[])
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, Option<i32>>(1),
                        r.get::<_, bool>(2),
                    )
                })
                .collect::<Vec<_>>();
            let rows = c
                .query(
                    "SELECT layer, version, stamp, blob, sizes::text, meta ? 'draft' FROM datahub.versions ORDER BY layer, version",
                    &[],
                )
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|r| Row {
                    layer: r.get(0),
                    version: r.get::<_, i32>(1).max(0) as u32,
                    stamp: r.get(2),
                    blob: r.get(3),
                    sizes: r.get::<_, Option<String>>(4),
                    draft: r.get::<_, Option<bool>>(5).unwrap_or(false),
                })
                .collect::<Vec<_>>();
            c.commit().await.map_err(db_err)?;
            Ok((layers, rows))
        })?;
        let mut changed = Vec::new();
        let root = self.local.root().join("layers");
        for (id, current, hidden) in &layers {
            if validate_id(id).is_err() {
                continue;
            }
            let dir = root.join(id);
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let mut touched = false;
            let wanted: Vec<&Row> = rows.iter().filter(|r| &r.layer == id).collect();
            // The current version first: it is what will be served.
            let mut order = wanted.clone();
            order.sort_by_key(|r| Some(r.version as i32) != *current);
            for r in order {
                let vdir = dir.join(format!("v{}", r.version));
                if !vdir.join("meta.json").exists() {
                    self.materialize(r, &dir)?;
                    touched = true;
                } else if local_stamp(&vdir) != Some(r.stamp) {
                    self.copy_record(r, &vdir)?;
                    touched = true;
                }
            }
            // Versions the database no longer keeps.
            for n in self.local.version_numbers(id)? {
                if !wanted.iter().any(|r| r.version == n) {
                    let p = dir.join(format!("v{n}"));
                    let _ = fs::remove_dir_all(&p);
                    touched = true;
                }
            }
            let want_current = current.map(|c| c.max(0) as u32);
            if self.local.current_number(id).ok().flatten() != want_current {
                match want_current {
                    Some(n) => write_atomically(&dir, "CURRENT", format!("{n}\n").as_bytes())?,
                    None => {
                        let _ = fs::remove_file(dir.join("CURRENT"));
                    }
                }
                touched = true;
            }
            let want_draft = wanted.iter().filter(|r| r.draft).map(|r| r.version).max();
            if self.local.draft_number(id).ok().flatten() != want_draft {
                match want_draft {
                    Some(n) => write_atomically(&dir, DRAFT_FILE, format!("{n}\n").as_bytes())?,
                    None => {
                        let _ = fs::remove_file(dir.join(DRAFT_FILE));
                    }
                }
                touched = true;
            }
            let hidden_file = dir.join("HIDDEN");
            if *hidden != hidden_file.exists() {
                if *hidden {
                    File::create(&hidden_file).map_err(|e| Error::io(&hidden_file, e))?;
                } else {
                    let _ = fs::remove_file(&hidden_file);
                }
                touched = true;
            }
            if touched {
                changed.push(id.clone());
            }
        }
        // Layers the database does not have (a local folder of another database).
        if let Ok(entries) = fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if validate_id(&name).is_ok() && !layers.iter().any(|(id, _, _)| *id == name) {
                    let _ = fs::remove_dir_all(e.path());
                    changed.push(name);
                }
            }
        }
        Ok(changed)
    }

    /// Copies one version's files and record from the database into `layer_dir`.
    fn materialize(&self, r: &Row, layer_dir: &Path) -> Result<()> {
        let tmp = self.local.tmp_dir().join(format!(
            "sync-{}-v{}.{}",
            r.layer,
            r.version,
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let owner = super::hold_dir(&tmp)?;
        let result = (|| {
            let blob = r.blob.clone();
            let names: Vec<String> = self.db.run(move |c| async move {
                Ok(c.query(
                    "SELECT DISTINCT name FROM datahub.blobs WHERE blob = $1",
                    &[&blob],
                )
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|row| row.get(0))
                .collect())
            })?;
            for name in names {
                let Some(rel) = safe_relative(&name) else {
                    return Err(Error::Corrupt(format!("stored file name '{name}'")));
                };
                let path = tmp.join(rel);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                self.download(&r.blob, &name, &path)?;
                let want = r
                    .sizes
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                    .and_then(|v| v[&name].as_u64());
                let got = fs::metadata(&path).map(|m| m.len()).ok();
                if want.is_some() && want != got {
                    return Err(Error::Corrupt(format!(
                        "{} v{}: {name} has {} bytes in the database, {} expected",
                        r.layer,
                        r.version,
                        got.unwrap_or(0),
                        want.unwrap_or(0)
                    )));
                }
            }
            self.copy_record(r, &tmp)?;
            let _ = fs::remove_file(tmp.join(OWNER_LOCK));
            fsync_dir(&tmp)?;
            let target = layer_dir.join(format!("v{}", r.version));
            let _ = fs::remove_dir_all(&target);
            fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
            fsync_dir(layer_dir)
        })();
        drop(owner);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        tracing::info!(layer = %r.layer, version = r.version, "copied from the database");
        result
    }

    /// Streams one stored file to `path`, part by part.
    fn download(&self, blob: &str, name: &str, path: &Path) -> Result<()> {
        let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
        let (blob, name) = (blob.to_string(), name.to_string());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        // Parts are written here while the next one is read.
        let reader = {
            let db = self.db.clone();
            std::thread::spawn(move || {
                db.run(move |c| async move {
                    use futures_util::TryStreamExt;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&blob, &name];
                    let rows = c
                        .query_raw(
                            "SELECT bytes FROM datahub.blobs WHERE blob = $1 AND name = $2 ORDER BY part",
                            params,
                        )
                        .await
                        .map_err(db_err)?;
                    futures_util::pin_mut!(rows);
                    while let Some(row) = rows.try_next().await.map_err(db_err)? {
                        if tx.send(row.get::<_, Vec<u8>>(0)).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
            })
        };
        let mut written = Ok(());
        while let Some(part) = rx.blocking_recv() {
            if written.is_ok() {
                written = f.write_all(&part).map_err(|e| Error::io(path, e));
            }
        }
        reader
            .join()
            .map_err(|_| Error::Internal("database reader panicked".into()))??;
        written?;
        f.sync_all().map_err(|e| Error::io(path, e))
    }

    /// Writes a version's record (and its stamp) from the database into `vdir`.
    fn copy_record(&self, r: &Row, vdir: &Path) -> Result<()> {
        let (layer, version) = (r.layer.clone(), r.version as i32);
        let (meta, stamp): (String, i64) = self.db.run(move |c| async move {
            let row = c
                .query_one(
                    "SELECT meta::text, stamp FROM datahub.versions WHERE layer = $1 AND version = $2",
                    &[&layer, &version],
                )
                .await
                .map_err(db_err)?;
            Ok((row.get(0), row.get(1)))
        })?;
        let pretty = serde_json::from_str::<serde_json::Value>(&meta)
            .and_then(|v| serde_json::to_vec_pretty(&v))
            .map_err(|e| Error::Corrupt(format!("record of {} v{}: {e}", r.layer, r.version)))?;
        write_atomically(vdir, "meta.json", &pretty)?;
        write_atomically(vdir, STAMP_FILE, stamp.to_string().as_bytes())
    }

    /// Stores the files of a staged version under the blob id `blob`; returns their
    /// sizes (`{"layer.fgb": bytes, …}`), which replicas check after copying.
    fn upload(&self, dir: &Path, blob: &str) -> Result<String> {
        let mut sizes = serde_json::Map::new();
        let blob = blob.to_string();
        let mut files = vec![("layer.fgb".to_string(), dir.join("layer.fgb"))];
        let src = dir.join(SOURCE_DIR);
        if let Ok(entries) = fs::read_dir(&src) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    files.push((
                        format!("{SOURCE_DIR}/{}", e.file_name().to_string_lossy()),
                        e.path(),
                    ));
                }
            }
        }
        for (name, path) in files {
            let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            sizes.insert(name.clone(), serde_json::json!(len));
            let mut part = 0i32;
            loop {
                let mut buf = Vec::with_capacity(PART);
                (&mut f)
                    .take(PART as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| Error::io(&path, e))?;
                if buf.is_empty() && part > 0 {
                    break;
                }
                let last = buf.len() < PART;
                let (b, n) = (blob.clone(), name.clone());
                self.db.run(move |c| async move {
                    c.execute(
                        "INSERT INTO datahub.blobs (blob, name, part, bytes) VALUES ($1, $2, $3, $4)",
                        &[&b, &n, &part, &buf],
                    )
                    .await
                    .map_err(db_err)
                })?;
                part += 1;
                if last {
                    break;
                }
            }
        }
        Ok(serde_json::Value::Object(sizes).to_string())
    }

    /// Loads the features of a staged version into a new PostGIS table (named after
    /// the blob until published) with COPY; its GiST index built after the load.
    fn load_features(&self, fgb: &Path, meta: &LayerMeta, table: &str) -> Result<()> {
        let file = File::open(fgb).map_err(|e| Error::io(fgb, e))?;
        // SAFETY: the staged file is private to this ingest and not modified while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(fgb, e))?;
        let view = FgbView::open(mmap)?;
        let columns = column_names(&meta.schema);
        let mut ddl = format!(
            "CREATE TABLE datahub_data.{} (fid bigint NOT NULL",
            ident(table)
        );
        for (f, name) in meta.schema.iter().zip(&columns) {
            ddl.push_str(&format!(", {} {}", ident(name), pg_type(f.ftype)));
        }
        ddl.push_str(", geom geometry(Geometry, 4326))");
        let copy = format!(
            "COPY datahub_data.{} ({}) FROM STDIN (FORMAT binary)",
            ident(table),
            std::iter::once("fid".to_string())
                .chain(columns.iter().map(|c| ident(c)))
                .chain(std::iter::once("geom".to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        // Set when the rows could not all be produced: the loader then drops its COPY
        // (aborted by the server) instead of finishing it with part of the rows.
        let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abort_seen = aborted.clone();
        let index = format!(
            // Both indexes built once the rows are in: a sorted build, not a million
            // inserts into a growing B-tree.
            "ALTER TABLE datahub_data.{t} ADD PRIMARY KEY (fid);
             CREATE INDEX ON datahub_data.{t} USING gist (geom); ANALYZE datahub_data.{t}",
            t = ident(table)
        );
        let db = self.db.clone();
        let loader = std::thread::spawn(move || {
            db.run(move |c| async move {
                use futures_util::SinkExt;
                c.batch_execute(&ddl).await.map_err(db_err)?;
                let sink = c.copy_in::<_, bytes::Bytes>(&copy).await.map_err(db_err)?;
                futures_util::pin_mut!(sink);
                while let Some(chunk) = rx.recv().await {
                    sink.send(chunk).await.map_err(db_err)?;
                }
                if abort_seen.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Error::Internal("the features could not be read".into()));
                }
                sink.as_mut().finish().await.map_err(db_err)?;
                let t0 = std::time::Instant::now();
                c.batch_execute(&index).await.map_err(db_err)?;
                tracing::info!(ms = t0.elapsed().as_millis() as u64, "spatial index built");
                Ok(())
            })
        });
        let types: Vec<FieldType> = meta.schema.iter().map(|f| f.ftype).collect();
        let fields = i16::try_from(types.len() + 2)
            .map_err(|_| Error::bad("too many columns for PostgreSQL (1,600 at most)"))?;
        // COPY's binary format: no text to parse on either side (measured: a third
        // less time than hex EWKB in text COPY for 1 M points).
        let mut produced = (|| -> Result<()> {
            let mut buf = Vec::with_capacity(1 << 20);
            buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            let mut scratch = Vec::with_capacity(256);
            let mut cells: Vec<Option<std::ops::Range<usize>>> = vec![None; types.len()];
            let mut leaves = view.leaves()?;
            leaves.sort_by_key(|l| l.offset);
            for leaf in leaves {
                let fid = view.fid(leaf.offset)?;
                scratch.clear();
                for c in cells.iter_mut() {
                    *c = None;
                }
                let mut bad = None;
                view.for_each_value(leaf.offset, |i, v| {
                    let (Some(slot), Some(t)) = (cells.get_mut(i), types.get(i)) else {
                        return;
                    };
                    let start = scratch.len();
                    match binary_value(*t, v, &mut scratch) {
                        Ok(()) => *slot = Some(start..scratch.len()),
                        Err(e) => {
                            scratch.truncate(start);
                            bad.get_or_insert(format!("feature {fid}, column {}: {e}", i + 1));
                        }
                    }
                })?;
                if let Some(e) = bad {
                    return Err(Error::Internal(format!("cannot store in PostGIS: {e}")));
                }
                buf.extend_from_slice(&fields.to_be_bytes());
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&fid.to_be_bytes());
                for c in &cells {
                    match c {
                        // Length and value, as binary_value wrote them.
                        Some(r) => buf.extend_from_slice(&scratch[r.clone()]),
                        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
                match view.geometry(leaf.offset)? {
                    Some(g) => {
                        use geozero::ToWkb;
                        let wkb = g
                            .to_ewkb(geozero::CoordDimensions::xy(), Some(4326))
                            .map_err(|e| Error::Internal(format!("WKB: {e}")))?;
                        buf.extend_from_slice(&(wkb.len() as i32).to_be_bytes());
                        buf.extend_from_slice(&wkb);
                    }
                    None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                }
                if buf.len() >= 1 << 20 {
                    let chunk = bytes::Bytes::from(std::mem::take(&mut buf));
                    if tx.blocking_send(chunk).is_err() {
                        // The loader failed: its error is the one to report.
                        return Ok(());
                    }
                }
            }
            buf.extend_from_slice(&(-1i16).to_be_bytes());
            let _ = tx.blocking_send(bytes::Bytes::from(buf));
            Ok(())
        })();
        if produced.is_err() {
            aborted.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(tx);
        let loaded = loader
            .join()
            .map_err(|_| Error::Internal("database loader panicked".into()))?;
        if produced.is_ok() {
            produced = loaded;
        }
        produced
    }

    /// Runs `f` on the record of `id` v`version` inside a transaction holding the
    /// layer's record lock; stores the result with a new stamp and announces it.
    fn change_record(
        &self,
        id: &str,
        version: Option<u32>,
        f: &mut dyn FnMut(&mut LayerMeta) -> Result<()>,
    ) -> Result<(LayerMeta, LayerMeta)> {
        validate_id(id)?;
        let mut t = self.db.begin()?;
        let lid = id.to_string();
        let wanted = version.map(|v| v as i32);
        let current: Option<(i32, String)> = t.step(move |c| async move {
            let r = async {
                lock_record(&c, &lid).await?;
                let row = c
                    .query_opt(
                        "SELECT v.version, v.meta::text FROM datahub.versions v
                         JOIN datahub.layers l ON l.id = v.layer
                         WHERE v.layer = $1 AND v.version = coalesce($2, l.current)",
                        &[&lid, &wanted],
                    )
                    .await
                    .map_err(db_err)?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            }
            .await;
            (c, r)
        })?;
        let Some((n, text)) = current else {
            return Err(match version {
                Some(v) => Error::bad(format!("layer '{id}' has no kept version {v}")),
                None => Error::UnknownLayer(id.to_string()),
            });
        };
        let before: LayerMeta = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("record of {id} v{n}: {e}")))?;
        let mut after = before.clone();
        f(&mut after)?;
        let json = serde_json::to_string(&after).map_err(|e| Error::Internal(e.to_string()))?;
        let lid = id.to_string();
        t.step(move |c| async move {
            let r = async {
                c.execute(
                    "UPDATE datahub.versions SET meta = ($3::text)::jsonb,
                       stamp = nextval('datahub.stamps') WHERE layer = $1 AND version = $2",
                    &[&lid, &n, &json],
                )
                .await
                .map_err(db_err)?;
                refresh_view(&c, &lid).await?;
                announce(&c, &lid).await
            }
            .await;
            (c, r)
        })?;
        t.commit()?;
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "cannot bring the layers up to date after an edit");
        }
        Ok((before, after))
    }

    fn set_hidden(&self, id: &str, hidden: bool) -> Result<()> {
        validate_id(id)?;
        let lid = id.to_string();
        let found = self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            lock_record(&tx, &lid).await?;
            let row = tx
                .query_opt(
                    "SELECT hidden FROM datahub.layers WHERE id = $1 AND current IS NOT NULL",
                    &[&lid],
                )
                .await
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            let was: bool = row.get(0);
            if was != hidden {
                tx.execute(
                    "UPDATE datahub.layers SET hidden = $2 WHERE id = $1",
                    &[&lid, &hidden],
                )
                .await
                .map_err(db_err)?;
                refresh_view(&tx, &lid).await?;
                announce(&tx, &lid).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(Some(was))
        })?;
        match found {
            None => Err(Error::UnknownLayer(id.to_string())),
            Some(was) if was == hidden => Err(if hidden {
                Error::UnknownLayer(id.to_string())
            } else {
                Error::bad(format!("layer '{id}' is not deleted"))
            }),
            Some(_) => {
                if let Err(e) = self.sync() {
                    tracing::warn!(error = %e, "cannot bring the layers up to date after a delete");
                }
                Ok(())
            }
        }
    }

    /// Moves a published staging into the local copy as `v<n>` (under the sync lock:
    /// a refresh running at the same moment never sees half of it or removes it).
    fn install(&self, mut staging: Staging, meta: &LayerMeta, n: u32, stamp: i64) -> Result<()> {
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let layer_dir = self.local.layer_dir(staging.id());
        fs::create_dir_all(&layer_dir).map_err(|e| Error::io(&layer_dir, e))?;
        let pretty = serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomically(&staging.dir, "meta.json", &pretty)?;
        write_atomically(&staging.dir, STAMP_FILE, stamp.to_string().as_bytes())?;
        let _ = fs::remove_file(staging.dir.join(OWNER_LOCK));
        let target = layer_dir.join(format!("v{n}"));
        let _ = fs::remove_dir_all(&target);
        fs::rename(&staging.dir, &target).map_err(|e| Error::io(&target, e))?;
        staging.published = true;
        fsync_dir(&layer_dir)?;
        // CURRENT (or DRAFT) follows at once, so this process serves what it just
        // published even before the next refresh.
        let pointer = if meta.draft.is_some() {
            DRAFT_FILE
        } else {
            "CURRENT"
        };
        write_atomically(&layer_dir, pointer, format!("{n}\n").as_bytes())
    }

    /// Publishes (`go_live`: who approved it, the draft number reviewed) or discards
    /// (None) the layer's draft, in a transaction holding the record lock.
    fn with_draft(&self, id: &str, go_live: Option<(&str, Option<u32>)>) -> Result<LayerMeta> {
        validate_id(id)?;
        let mut t = self.db.begin()?;
        let lid = id.to_string();
        let (draft, current): (Option<String>, Option<String>) = t.step(move |c| async move {
            let r = async {
                lock_record(&c, &lid).await?;
                let d = c
                    .query_opt(
                        "SELECT meta::text FROM datahub.versions WHERE layer = $1 AND meta ? 'draft'
                         ORDER BY version DESC LIMIT 1",
                        &[&lid],
                    )
                    .await
                    .map_err(db_err)?
                    .map(|r| r.get::<_, String>(0));
                let cur = current_record(&c, &lid).await?;
                Ok((d, cur))
            }
            .await;
            (c, r)
        })?;
        let parse = |t: &str| -> Result<LayerMeta> {
            serde_json::from_str(t).map_err(|e| Error::Corrupt(format!("record of {id}: {e}")))
        };
        let Some(draft) = draft.as_deref().map(parse).transpose()? else {
            return Err(Error::bad(format!("layer '{id}' has no draft")));
        };
        let current = current.as_deref().map(parse).transpose()?;
        let n = draft.version as i32;
        let lid = id.to_string();
        let keep = self.keep_versions as i64;
        let result = match go_live {
            Some((by, expected)) => {
                super::check_draft_base(id, &draft, current.as_ref())?;
                if expected.is_some_and(|e| e != draft.version) {
                    return Err(super::changed_draft(id, draft.version));
                }
                let mut m = draft.clone();
                if let (Some(base), Some(cur)) = (
                    draft.draft.as_ref().and_then(|d| d.base_record.as_ref()),
                    current.as_ref(),
                ) {
                    super::merge_record(&mut m, base, cur)?;
                }
                super::went_live(&mut m, by);
                let json = serde_json::to_string(&m).map_err(|e| Error::Internal(e.to_string()))?;
                t.step(move |c| async move {
                    let r = async {
                        c.execute(
                            "UPDATE datahub.versions SET meta = ($3::text)::jsonb,
                               stamp = nextval('datahub.stamps') WHERE layer = $1 AND version = $2",
                            &[&lid, &n, &json],
                        )
                        .await
                        .map_err(db_err)?;
                        c.execute(
                            "UPDATE datahub.layers SET current = $2 WHERE id = $1",
                            &[&lid, &n],
                        )
                        .await
                        .map_err(db_err)?;
                        refresh_view(&c, &lid).await?;
                        retain(&c, &lid, keep).await?;
                        announce(&c, &lid).await
                    }
                    .await;
                    (c, r)
                })?;
                m
            }
            None => {
                t.step(move |c| async move {
                    let r = async {
                        drop_versions(&c, &lid, &[n]).await?;
                        announce(&c, &lid).await
                    }
                    .await;
                    (c, r)
                })?;
                draft
            }
        };
        t.commit()?;
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "cannot bring the layers up to date after a draft change");
        }
        Ok(result)
    }

    /// Removes the parts of a publish that did not happen (best effort: what is left
    /// is removed by [`PgStore::clean_stale`] later).
    fn discard(&self, blob: &str, staged: &str) {
        let (b, t) = (blob.to_string(), staged.to_string());
        let r = self.db.run(move |c| async move {
            c.execute("DELETE FROM datahub.blobs WHERE blob = $1", &[&b])
                .await
                .map_err(db_err)?;
            c.batch_execute(&format!("DROP TABLE IF EXISTS datahub_data.{}", ident(&t)))
                .await
                .map_err(db_err)
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "parts of a failed publish left for the cleanup");
        }
    }

    /// Imports a version of another store as version `n` of `id`, unchanged (its
    /// number, record and files): `datahub migrate`. Returns false when the database
    /// already has it (a migration run again goes on where it stopped).
    pub fn import_version(&self, v: &StoredVersion, current: bool) -> Result<bool> {
        let id = v.meta.id.clone();
        validate_id(&id)?;
        let n = v.meta.version as i32;
        let lid = id.clone();
        let exists = self.db.run(move |c| async move {
            Ok(c.query_opt(
                "SELECT 1 FROM datahub.versions WHERE layer = $1 AND version = $2",
                &[&lid, &n],
            )
            .await
            .map_err(db_err)?
            .is_some())
        })?;
        if !exists {
            let dir = v
                .fgb_path
                .parent()
                .ok_or_else(|| Error::Internal("version without a folder".into()))?;
            let blob = format!("{}_{}", unix_now(), random_hex(8)?);
            let sizes = self.upload(dir, &blob)?;
            let staged = format!("_s_{blob}");
            self.load_features(&v.fgb_path, &v.meta, &staged)?;
            let table = features_table(&id, v.meta.version);
            let json =
                serde_json::to_string(&v.meta).map_err(|e| Error::Internal(e.to_string()))?;
            let lid = id.clone();
            self.db.run(move |mut c| async move {
                let tx = c.transaction().await.map_err(db_err)?;
                lock_record(&tx, &lid).await?;
                tx.execute(
                    "INSERT INTO datahub.layers (id) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&lid],
                )
                .await
                .map_err(db_err)?;
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS datahub_data.{t}; ALTER TABLE datahub_data.{s} RENAME TO {t}",
                    s = ident(&staged),
                    t = ident(&table)
                ))
                .await
                .map_err(db_err)?;
                tx.execute(
                    "INSERT INTO datahub.versions (layer, version, meta, stamp, features_table, blob, sizes)
                     VALUES ($1, $2, ($3::text)::jsonb, nextval('datahub.stamps'), $4, $5, ($6::text)::jsonb)",
                    &[&lid, &n, &json, &table, &blob, &sizes],
                )
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            })?;
        }
        if current {
            let (lid, hidden) = (id.clone(), self.local_hidden_hint(v));
            self.db.run(move |mut c| async move {
                let tx = c.transaction().await.map_err(db_err)?;
                lock_record(&tx, &lid).await?;
                // Only a layer the database has not moved past: a migration run again
                // after going live never rolls a layer back or undeletes it.
                tx.execute(
                    "UPDATE datahub.layers SET current = $2, hidden = $3
                     WHERE id = $1 AND (current IS NULL OR current < $2)",
                    &[&lid, &n, &hidden],
                )
                .await
                .map_err(db_err)?;
                refresh_view(&tx, &lid).await?;
                announce(&tx, &lid).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            })?;
        }
        Ok(!exists)
    }

    /// Numbers up to `last` count as given for `id` (a files hub's discarded drafts):
    /// the database never gives them again.
    pub fn reserve_numbers(&self, id: &str, last: u32) -> Result<()> {
        validate_id(id)?;
        let (lid, last) = (id.to_string(), last as i32);
        self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO datahub.layers (id, last_version) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET last_version = greatest(datahub.layers.last_version, $2)",
                &[&lid, &last],
            )
            .await
            .map_err(db_err)
            .map(|_| ())
        })
    }

    /// Whether the folder a migrated version comes from marks its layer deleted.
    fn local_hidden_hint(&self, v: &StoredVersion) -> bool {
        v.fgb_path
            .parent()
            .and_then(Path::parent)
            .is_some_and(|layer_dir| layer_dir.join("HIDDEN").exists())
    }

    /// Features stored for `id` v`n` in PostGIS (for checks after a migration).
    pub fn feature_rows(&self, id: &str, n: u32) -> Result<i64> {
        let table = features_table(id, n);
        self.db.run(move |c| async move {
            let row = c
                .query_one(
                    &format!("SELECT count(*) FROM datahub_data.{}", ident(&table)),
                    &[],
                )
                .await
                .map_err(db_err)?;
            Ok(row.get(0))
        })
    }
}

/// The file in a replica's data folder naming the database hub it is a copy of.
const REPLICA_MARK: &str = "REPLICA_OF";

/// Makes sure `local` is this database's copy before anything in it is replaced: a
/// folder holding another hub's layers (a files hub not yet migrated, or a copy of
/// another database) is refused, never overwritten.
fn claim_folder(db: &Db, local: &Path) -> Result<()> {
    let hub: String = db.run(|c| async move {
        Ok(
            c.query_one("SELECT value FROM datahub.hub WHERE key = 'id'", &[])
                .await
                .map_err(db_err)?
                .get(0),
        )
    })?;
    let mark = local.join(REPLICA_MARK);
    match fs::read_to_string(&mark) {
        Ok(s) if s.trim() == hub => return Ok(()),
        Ok(_) => {
            return Err(Error::bad(format!(
            "the data folder {} is the copy of another database; give this replica an empty folder",
            local.display()
        )))
        }
        Err(_) => {}
    }
    let has_layers = fs::read_dir(local.join("layers"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_layers {
        return Err(Error::bad(format!(
            "the data folder {} holds the layers of a DataHub without database: bring them over \
             with `datahub --data {} migrate --to <database>`, and give each replica an empty folder",
            local.display(),
            local.display()
        )));
    }
    fs::create_dir_all(local).map_err(|e| Error::io(local, e))?;
    write_atomically(local, REPLICA_MARK, format!("{hub}\n").as_bytes())
}

/// Takes the layer's record lock until the transaction ends. Any lock wait in it
/// (this one, a SQL client holding the public view) gives up after 10 s: a stuck
/// client must not stall every writer of the layer.
async fn lock_record(c: &impl deadpool_postgres::GenericClient, id: &str) -> Result<()> {
    c.batch_execute("SET LOCAL lock_timeout = '10s'")
        .await
        .map_err(db_err)?;
    c.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&format!("record:{id}"))],
    )
    .await
    .map_err(db_err)
    .map(|_| ())
}

/// The record of the layer's current version (None: no published version).
async fn current_record(
    c: &impl deadpool_postgres::GenericClient,
    id: &str,
) -> Result<Option<String>> {
    Ok(c.query_opt(
        "SELECT v.meta::text FROM datahub.layers l
         JOIN datahub.versions v ON v.layer = l.id AND v.version = l.current
         WHERE l.id = $1",
        &[&id],
    )
    .await
    .map_err(db_err)?
    .map(|r| r.get::<_, String>(0)))
}

/// Retention: the newest `keep` published versions; never the current one, never
/// the draft.
async fn retain(c: &impl deadpool_postgres::GenericClient, id: &str, keep: i64) -> Result<()> {
    let old: Vec<i32> = c
        .query(
            "SELECT version FROM datahub.versions v
             WHERE layer = $1 AND NOT (meta ? 'draft')
             ORDER BY version DESC OFFSET $2",
            &[&id, &keep],
        )
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let current: Option<i32> = c
        .query_opt("SELECT current FROM datahub.layers WHERE id = $1", &[&id])
        .await
        .map_err(db_err)?
        .and_then(|r| r.get(0));
    let old: Vec<i32> = old.into_iter().filter(|v| Some(*v) != current).collect();
    drop_versions(c, id, &old).await
}

/// Removes versions of a layer: their features table, files and record.
async fn drop_versions(
    c: &impl deadpool_postgres::GenericClient,
    id: &str,
    versions: &[i32],
) -> Result<()> {
    for v in versions {
        let Some(r) = c
            .query_opt(
                "SELECT features_table, blob FROM datahub.versions WHERE layer = $1 AND version = $2",
                &[&id, v],
            )
            .await
            .map_err(db_err)?
        else {
            continue;
        };
        let (t, b): (String, String) = (r.get(0), r.get(1));
        c.batch_execute(&format!("DROP TABLE IF EXISTS datahub_data.{}", ident(&t)))
            .await
            .map_err(db_err)?;
        c.execute("DELETE FROM datahub.blobs WHERE blob = $1", &[&b])
            .await
            .map_err(db_err)?;
        c.execute(
            "DELETE FROM datahub.versions WHERE layer = $1 AND version = $2",
            &[&id, v],
        )
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// Recreates the public view of `id`: present when its current version is public and
/// the layer is not deleted, absent otherwise.
async fn refresh_view(c: &impl deadpool_postgres::GenericClient, id: &str) -> Result<()> {
    let row = c
        .query_opt(
            "SELECT v.features_table, v.meta->>'access', l.hidden FROM datahub.layers l
             JOIN datahub.versions v ON v.layer = l.id AND v.version = l.current WHERE l.id = $1",
            &[&id],
        )
        .await
        .map_err(db_err)?;
    let view = format!("datahub_public.{}", ident(id));
    let mut sql = format!("DROP VIEW IF EXISTS {view};");
    if let Some(r) = row {
        let (table, access, hidden): (String, Option<String>, bool) =
            (r.get(0), r.get(1), r.get(2));
        if access.as_deref() == Some("public") && !hidden {
            sql.push_str(&format!(
                "CREATE VIEW {view} AS SELECT * FROM datahub_data.{};
                 DO $$ BEGIN
                   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                     GRANT SELECT ON {view} TO {READER_ROLE};
                   END IF;
                 END $$;",
                ident(&table)
            ));
        }
    }
    c.batch_execute(&sql).await.map_err(db_err)
}

async fn announce(c: &impl deadpool_postgres::GenericClient, id: &str) -> Result<()> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("layer:{id}")],
    )
    .await
    .map_err(db_err)
    .map(|_| ())
}

fn local_stamp(vdir: &Path) -> Option<i64> {
    fs::read_to_string(vdir.join(STAMP_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// `source/x.csv` → a relative path with no way out of the version folder.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| p.to_path_buf())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom(&mut b)?;
    Ok(hex::encode(b))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    // /dev/urandom: the crate has no randomness dependency and needs only names.
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io("/dev/urandom", e))
}

/// The PostGIS table of a version: `<id>_v<n>`, shortened with a hash when that would
/// pass PostgreSQL's 63-byte identifiers.
pub fn features_table(id: &str, n: u32) -> String {
    let t = format!("{id}_v{n}");
    if t.len() <= 63 {
        t
    } else {
        // `~` cannot be in a layer id: a shortened name never equals another
        // layer's own `<id>_v<n>`.
        let h = format!("{:016x}", lock_key(id));
        format!("{}~{}_v{n}", &id[..30], &h[..8])
    }
}

/// Column names of the PostGIS table, one per schema field: the field's own name
/// unless it is too long for PostgreSQL, clashes with `fid`/`geom` or with another
/// field once shortened (then `campo_<k>`).
pub fn column_names(schema: &[crate::fgb::Field]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    seen.insert("fid".to_string());
    seen.insert("geom".to_string());
    schema
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let n = if f.name.len() <= 63 && !f.name.is_empty() && !f.name.contains('\0') {
                f.name.clone()
            } else {
                format!("campo_{}", k + 1)
            };
            let mut n = n;
            let mut extra = 1;
            while seen.contains(&n) {
                // `campo_k` may itself be a field's name: count on until free.
                n = if extra == 1 {
                    format!("campo_{}", k + 1)
                } else {
                    format!("campo_{}_{extra}", k + 1)
                };
                extra += 1;
            }
            seen.insert(n.clone());
            n
        })
        .collect()
}

fn pg_type(t: FieldType) -> &'static str {
    match t {
        FieldType::Bool => "boolean",
        FieldType::Int => "integer",
        FieldType::Long => "bigint",
        FieldType::Float => "double precision",
        FieldType::String => "text",
        FieldType::Date => "date",
        FieldType::Datetime => "timestamp",
    }
}

/// One value in COPY's binary format (its 4-byte length, then PostgreSQL's binary
/// representation of the column's type), appended to `out`.
fn binary_value(
    t: FieldType,
    v: RawValue<'_>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let int = |v: RawValue<'_>| -> std::result::Result<i64, String> {
        match v {
            RawValue::I64(n) => Ok(n),
            RawValue::U64(n) => i64::try_from(n).map_err(|_| format!("{n} is too large")),
            RawValue::Bool(b) => Ok(i64::from(b)),
            RawValue::F64(x) if x.fract() == 0.0 && x.abs() < 9.2e18 => Ok(x as i64),
            RawValue::F64(x) => Err(format!("{x} is not an integer")),
            RawValue::Str(s) => String::from_utf8_lossy(s)
                .trim()
                .parse()
                .map_err(|_| format!("'{}' is not an integer", String::from_utf8_lossy(s))),
        }
    };
    let text = |v: RawValue<'_>| -> String {
        match v {
            RawValue::Str(s) => String::from_utf8_lossy(s).replace('\0', ""),
            RawValue::Bool(b) => b.to_string(),
            RawValue::I64(n) => n.to_string(),
            RawValue::U64(n) => n.to_string(),
            RawValue::F64(x) => x.to_string(),
        }
    };
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    // PostgreSQL's dates count from 2000-01-01.
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).ok_or("epoch")?;
    match t {
        FieldType::Bool => put(&[u8::from(match v {
            RawValue::Bool(b) => b,
            other => int(other)? != 0,
        })]),
        FieldType::Int => {
            let n = i32::try_from(int(v)?).map_err(|_| "out of the integer range".to_string())?;
            put(&n.to_be_bytes())
        }
        FieldType::Long => put(&int(v)?.to_be_bytes()),
        FieldType::Float => {
            let x = match v {
                RawValue::F64(x) => x,
                RawValue::I64(n) => n as f64,
                RawValue::U64(n) => n as f64,
                RawValue::Bool(b) => f64::from(u8::from(b)),
                RawValue::Str(s) => String::from_utf8_lossy(s)
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{}' is not a number", String::from_utf8_lossy(s)))?,
            };
            put(&x.to_bits().to_be_bytes())
        }
        FieldType::String => put(text(v).as_bytes()),
        FieldType::Date => {
            let s = text(v);
            let d = chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(&s), "%Y-%m-%d")
                .map_err(|_| format!("'{s}' is not a date"))?;
            let days = i32::try_from((d - epoch).num_days()).map_err(|_| "date out of range")?;
            put(&days.to_be_bytes())
        }
        FieldType::Datetime => {
            let s = text(v);
            let dt = chrono::DateTime::parse_from_rfc3339(&s)
                .map(|d| d.naive_utc())
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f"))
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f"))
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                })
                .map_err(|_| format!("'{s}' is not a date and time"))?;
            let micros = (dt - epoch.and_hms_opt(0, 0, 0).unwrap_or_default())
                .num_microseconds()
                .ok_or("time out of range")?;
            put(&micros.to_be_bytes())
        }
    }
    Ok(())
}

impl LayerStore for PgStore {
    fn layer_ids(&self) -> Result<Vec<String>> {
        self.local.layer_ids()
    }

    fn current(&self, id: &str) -> Result<Option<StoredVersion>> {
        self.local.current(id)
    }

    fn versions(&self, id: &str) -> Result<Vec<StoredVersion>> {
        self.local.versions(id)
    }

    fn is_hidden(&self, id: &str) -> bool {
        self.local.is_hidden(id)
    }

    fn begin(&self, id: &str) -> Result<Staging> {
        validate_id(id)?;
        // The ingest lock across replicas: a session-level advisory lock on a
        // connection held for the whole ingest (released at the end, or by the
        // database when this process dies).
        let key = lock_key(&format!("ingest:{id}"));
        let mut held = None;
        for _ in 0..20 {
            let got = self.db.run(move |c| async move {
                let row = c
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .map_err(db_err)?;
                Ok(if row.get::<_, bool>(0) { Some(c) } else { None })
            })?;
            if let Some(c) = got {
                held = Some(c);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(client) = held else {
            return Err(Error::Busy(id.to_string()));
        };
        let guard = IngestLock {
            db: self.db.clone(),
            client: Some(client),
            key,
        };
        let mut staging = self.local.begin(id)?;
        staging.guard = Some(Box::new(guard));
        Ok(staging)
    }

    fn publish_with(
        &self,
        staging: Staging,
        mut meta: LayerMeta,
        refresh: &mut dyn FnMut(&mut LayerMeta, Option<&LayerMeta>) -> Result<()>,
    ) -> Result<u32> {
        let id = staging.id.clone();
        staging.sync_features()?;
        let fgb = staging.fgb_path();
        // The bulk of the work happens before the record lock: files and features
        // under a staging name, found and removed by clean_stale if we die.
        // Files and features go in at the same time, on two connections.
        let t0 = std::time::Instant::now();
        let blob = format!("{}_{}", unix_now(), random_hex(8)?);
        let staged = format!("_s_{blob}");
        let (uploaded, loaded) = std::thread::scope(|s| {
            let up = s.spawn(|| self.upload(&staging.dir, &blob).map(|z| (z, t0.elapsed())));
            let loaded = self.load_features(&fgb, &meta, &staged);
            let uploaded = up
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("upload thread panicked".into())));
            (uploaded, loaded)
        });
        let stored = uploaded.and_then(|u| loaded.map(|_| u));
        let (sizes, t_upload) = match stored {
            Ok(x) => x,
            Err(e) => {
                self.discard(&blob, &staged);
                return Err(e);
            }
        };
        tracing::info!(
            layer = %id,
            files_ms = t_upload.as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "version stored in the database"
        );

        let record = (|| -> Result<(u32, i64)> {
            let mut t = self.db.begin()?;
            let lid = id.clone();
            let (current, next): (Option<String>, i32) = t.step(move |c| async move {
                let r = async {
                    // A SQL client holding the public view must not stall every writer of
                    // the layer: its DROP waits 10 s at most, then the publish fails (503).
                    lock_record(&c, &lid).await?;
                    c.execute(
                        "INSERT INTO datahub.layers (id) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&lid],
                    )
                    .await
                    .map_err(db_err)?;
                    let cur = current_record(&c, &lid).await?;
                    let next: i32 = c
                        .query_one(
                            "SELECT greatest(coalesce(max(version), 0),
                                (SELECT last_version FROM datahub.layers WHERE id = $1)) + 1
                         FROM datahub.versions WHERE layer = $1",
                            &[&lid],
                        )
                        .await
                        .map_err(db_err)?
                        .get(0);
                    Ok((cur, next))
                }
                .await;
                (c, r)
            })?;
            let current: Option<LayerMeta> = match current {
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .map_err(|e| Error::Corrupt(format!("record of {id}: {e}")))?,
                ),
                None => None,
            };
            refresh(&mut meta, current.as_ref())?;
            if let Some(d) = meta.draft.as_mut() {
                d.base = current.as_ref().map(|c| c.version);
            }
            let is_draft = meta.draft.is_some();
            let n = next.max(1) as u32;
            meta.version = n;
            let json = serde_json::to_string(&meta).map_err(|e| Error::Internal(e.to_string()))?;
            let table = features_table(&id, n);
            let keep = self.keep_versions as i64;
            let lid = id.clone();
            let (tb, bl, staged, sizes) =
                (table.clone(), blob.clone(), staged.clone(), sizes.clone());
            let stamp: i64 = t.step(move |c| async move {
            let r = async {
                c.batch_execute(&format!(
                    "DROP TABLE IF EXISTS datahub_data.{t}; ALTER TABLE datahub_data.{s} RENAME TO {t}",
                    s = ident(&staged),
                    t = ident(&tb)
                ))
                .await
                .map_err(db_err)?;
                c.execute(
                    "UPDATE datahub.layers SET last_version = greatest(last_version, $2) WHERE id = $1",
                    &[&lid, &next],
                )
                .await
                .map_err(db_err)?;
                let stamp: i64 = c
                    .query_one(
                        "INSERT INTO datahub.versions (layer, version, meta, stamp, features_table, blob, sizes)
                         VALUES ($1, $2, ($3::text)::jsonb, nextval('datahub.stamps'), $4, $5, ($6::text)::jsonb)
                         RETURNING stamp",
                        &[&lid, &next, &json, &tb, &bl, &sizes],
                    )
                    .await
                    .map_err(db_err)?
                    .get(0);
                if is_draft {
                    // One draft per layer: a new one replaces the one before.
                    let before: Vec<i32> = c
                        .query(
                            "SELECT version FROM datahub.versions
                             WHERE layer = $1 AND meta ? 'draft' AND version <> $2",
                            &[&lid, &next],
                        )
                        .await
                        .map_err(db_err)?
                        .into_iter()
                        .map(|r| r.get(0))
                        .collect();
                    drop_versions(&c, &lid, &before).await?;
                } else {
                    c.execute(
                        "UPDATE datahub.layers SET current = $2 WHERE id = $1",
                        &[&lid, &next],
                    )
                    .await
                    .map_err(db_err)?;
                    refresh_view(&c, &lid).await?;
                }
                retain(&c, &lid, keep).await?;
                announce(&c, &lid).await?;
                Ok(stamp)
            }
            .await;
            (c, r)
        })?;
            t.commit()?;
            Ok((n, stamp))
        })();
        let (n, stamp) = match record {
            Ok(x) => x,
            Err(e) => {
                // Rolled back: nothing of it is visible; its parts go now.
                self.discard(&blob, &staged);
                return Err(e);
            }
        };

        // The version is live from here on: a failure to install it locally is
        // logged, not reported (an upload reported failed would be sent again and
        // published twice); the next refresh copies it from the database.
        // Installed locally at once (the files are already here); the other replicas
        // copy it when notified.
        if let Err(e) = self.install(staging, &meta, n, stamp) {
            tracing::warn!(layer = %id, version = n, error = %e, "published version not installed locally; it is copied at the next refresh");
        }
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "cannot bring the layers up to date after a publish");
        }
        Ok(n)
    }

    fn set_diagnosis(&self, id: &str, version: u32, d: crate::diagnose::Diagnosis) -> Result<()> {
        let mut d = Some(d);
        self.change_record(id, Some(version), &mut |m| {
            m.diagnosis = d.take();
            Ok(())
        })
        .map(|_| ())
    }

    fn data_dir(&self) -> &Path {
        self.local.root()
    }

    fn scratch_dir(&self) -> PathBuf {
        self.local.tmp_dir()
    }

    fn clean_stale(&self) -> Result<usize> {
        let mut n = self.local.clean_stale()?;
        // Parts of publishes that never finished (their process died): blobs no
        // version refers to and staged tables, both older than an hour.
        // Six hours: far longer than any COPY, so a publish in progress on another
        // replica never loses its staged table.
        let cutoff = unix_now().saturating_sub(6 * 3600);
        n += self.db.run(move |c| async move {
            let removed = c
                .execute(
                    "DELETE FROM datahub.blobs WHERE blob IN (
                       SELECT b.blob FROM datahub.blobs b GROUP BY b.blob
                       HAVING max(b.created_at) < now() - interval '6 hours'
                          AND NOT EXISTS (SELECT 1 FROM datahub.versions v WHERE v.blob = b.blob))",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let staged = c
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'datahub_data'
                     AND tablename LIKE '\\_s\\_%'",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let mut dropped = 0;
            for r in staged {
                let t: String = r.get(0);
                let born = t
                    .strip_prefix("_s_")
                    .and_then(|s| s.split('_').next())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                if born < cutoff {
                    c.batch_execute(&format!("DROP TABLE IF EXISTS datahub_data.{}", ident(&t)))
                        .await
                        .map_err(db_err)?;
                    dropped += 1;
                }
            }
            Ok(removed as usize + dropped)
        })?;
        Ok(n)
    }

    fn current_number(&self, id: &str) -> Result<Option<u32>> {
        self.local.current_number(id)
    }

    fn record_stamp(&self, id: &str, version: u32) -> Option<std::time::SystemTime> {
        self.local.meta_mtime(id, version)
    }

    fn rewrite_record(
        &self,
        id: &str,
        version: u32,
        f: &mut dyn FnMut(&mut LayerMeta),
    ) -> Result<LayerMeta> {
        self.change_record(id, Some(version), &mut |m| {
            f(m);
            Ok(())
        })
        .map(|(_, after)| after)
    }

    fn edit_record(&self, id: &str, edit: &RecordEdit) -> Result<(LayerMeta, LayerMeta)> {
        self.change_record(id, None, &mut |m| {
            edit.apply(m);
            m.refresh_diagnosis_metadata();
            Ok(())
        })
    }

    fn hide(&self, id: &str) -> Result<()> {
        self.set_hidden(id, true)
    }

    fn unhide(&self, id: &str) -> Result<()> {
        self.set_hidden(id, false)
    }

    fn hidden_ids(&self) -> Result<Vec<String>> {
        self.local.hidden_ids()
    }

    fn restore(&self, id: &str, n: u32, by: &str) -> Result<LayerMeta> {
        super::restore_in(self, id, n, by)
    }

    fn draft(&self, id: &str) -> Result<Option<StoredVersion>> {
        self.local.draft(id)
    }

    fn draft_ids(&self) -> Result<Vec<String>> {
        self.local.draft_ids()
    }

    fn last_number(&self, id: &str) -> Result<u32> {
        validate_id(id)?;
        let lid = id.to_string();
        // As a publish numbers: kept versions and the numbers given before.
        let n: i32 = self.db.run(move |c| async move {
            Ok(c.query_one(
                "SELECT greatest(coalesce(max(version), 0),
                    coalesce((SELECT last_version FROM datahub.layers WHERE id = $1), 0))
                 FROM datahub.versions WHERE layer = $1",
                &[&lid],
            )
            .await
            .map_err(db_err)?
            .get(0))
        })?;
        Ok(n.max(0) as u32)
    }

    fn publish_draft(&self, id: &str, by: &str, expected: Option<u32>) -> Result<LayerMeta> {
        self.with_draft(id, Some((by, expected)))
    }

    fn discard_draft(&self, id: &str) -> Result<LayerMeta> {
        self.with_draft(id, None)
    }

    fn sync(&self) -> Result<()> {
        PgStore::sync(self).map(|_| ())
    }

    fn describe_backend(&self) -> String {
        format!("postgresql {}", self.db.describe())
    }
}

/// The advisory lock an ingest holds; released on drop (or by the database when the
/// connection dies with its process).
struct IngestLock {
    db: Arc<Db>,
    client: Option<Client>,
    key: i64,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let key = self.key;
            let r = self.db.block(async move {
                c.execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .await
                    .map_err(db_err)
                    .map(|_| ())
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot release an ingest lock (the connection will)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(t: FieldType, v: RawValue<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        binary_value(t, v, &mut out).unwrap();
        out
    }

    #[test]
    fn binary_copy_values() {
        assert_eq!(
            enc(FieldType::Int, RawValue::I64(-2)),
            [0, 0, 0, 4, 255, 255, 255, 254]
        );
        assert_eq!(enc(FieldType::Bool, RawValue::Bool(true)), [0, 0, 0, 1, 1]);
        assert_eq!(
            enc(FieldType::Date, RawValue::Str(b"2000-01-02")),
            [0, 0, 0, 4, 0, 0, 0, 1]
        );
        // 2000-01-01T00:00:01Z is one million microseconds after PostgreSQL's epoch.
        assert_eq!(
            enc(FieldType::Datetime, RawValue::Str(b"2000-01-01T00:00:01Z")),
            [0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]
        );
        assert_eq!(
            enc(FieldType::String, RawValue::Str("Peña\0".as_bytes())),
            [&[0u8, 0, 0, 5][..], "Peña".as_bytes()].concat()
        );
        let mut out = Vec::new();
        assert!(binary_value(FieldType::Int, RawValue::I64(1 << 40), &mut out).is_err());
        assert!(binary_value(FieldType::Date, RawValue::Str(b"15/03/2024"), &mut out).is_err());
    }

    #[test]
    fn names_fit_postgresql() {
        assert_eq!(features_table("parques", 3), "parques_v3");
        let long = "a".repeat(64);
        assert!(features_table(&long, 12).len() <= 63);
        assert_ne!(features_table(&long, 1), features_table(&"a".repeat(63), 1));
        assert!(validate_id(features_table(&long, 1).trim_end_matches("_v1")).is_err());
        let fields = |names: &[&str]| -> Vec<crate::fgb::Field> {
            names
                .iter()
                .map(|n| crate::fgb::Field {
                    name: n.to_string(),
                    ftype: FieldType::String,
                })
                .collect()
        };
        let long_name = "n".repeat(64);
        let cols = column_names(&fields(&["campo_2", &long_name, "fid", "geom"]));
        let unique: std::collections::HashSet<_> = cols.iter().collect();
        assert_eq!(unique.len(), 4, "{cols:?}");
        assert_eq!(
            safe_relative("source/x.csv"),
            Some(PathBuf::from("source/x.csv"))
        );
        assert_eq!(safe_relative("../x"), None);
        assert_eq!(safe_relative("/etc/passwd"), None);
    }
}
