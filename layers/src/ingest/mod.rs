//! Ingest: a source file becomes a published layer version.
//!
//! Steps: [`source::locate`] (unpack archives safely, find datasets) →
//! [`source::choose`] (the one layer to read) → [`source::source_crs`] → a streaming
//! pipeline → [`crate::store::LayerStore::publish`].
//!
//! The pipeline uses every core: this thread reads features with GDAL (GDAL objects are
//! not `Send`, so they stay here) and sends batches of WKB + attributes to workers that
//! parse, transform with PROJ and validate/repair; a writer thread puts the results back
//! in source order and streams them into the FlatGeobuf file. Memory stays bounded by
//! the channel capacity, not by the source size.

pub mod archive;
pub mod source;
mod tabular;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use gdal::vector::{FieldValue, LayerAccess, OGRFieldType};
use geo::CoordsIter;
use geozero::ToGeo;
use sha2::{Digest, Sha256};

pub use archive::Limits;

use crate::crs::{SourceCrs, ToStorage};
use crate::fgb::{Encoded, FeatureEncoder, Field, FieldType, LayerWriter, Value2};
use crate::quality::{normalize, IngestReport, Kind, Outcome};
use crate::store::{LayerMeta, LayerStore};
use crate::{Error, Result};

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub source: PathBuf,
    pub layer_id: String,
    pub title: Option<String>,
    pub ministry: String,
    pub description: String,
    pub synthetic: bool,
    /// `--crs`: the source CRS when the source lacks it (or to override it).
    pub crs: Option<String>,
    /// `--source-layer`: which layer of a multi-layer source.
    pub source_layer: Option<String>,
    /// `--id-field`: an integer attribute with unique values to use as feature id.
    pub id_field: Option<String>,
    /// Store the good rows of a CSV with bad coordinates instead of failing.
    pub skip_invalid: bool,
    pub limits: Limits,
    /// Expected area and grade thresholds of the diagnosis computed before publishing.
    pub diagnose: crate::diagnose::DiagnoseConfig,
    /// Catalogue record changes (the rest is carried over from the current version).
    pub record: crate::store::RecordEdit,
    /// Who publishes (stored in the version's record).
    pub uploaded_by: Option<String>,
    /// The publisher's note on this version.
    pub note: Option<String>,
    /// How to read a table (CSV, spreadsheet): header row, coordinate columns, join.
    pub table: crate::table::TableOptions,
    /// `ministry` was asked for (the CLI's `--ministry`, an admin's transfer in an
    /// upload's metadata), not just the layer's ministry when the upload was queued:
    /// only then does the new version move the layer.
    pub ministry_explicit: bool,
    /// The ministry the publisher was authorised for: when the layer belongs to
    /// another one at publish time (moved meanwhile), nothing is published.
    pub expect_ministry: Option<String>,
    /// Store the version as the layer's draft, uploaded by this actor: not served
    /// until published.
    pub draft: Option<String>,
}

impl IngestRequest {
    /// A request with the defaults: title = id, no description, CRS from the source,
    /// the only layer of the source, sequential ids, default archive limits.
    pub fn new(source: impl Into<PathBuf>, layer_id: &str, ministry: &str) -> Self {
        IngestRequest {
            source: source.into(),
            layer_id: layer_id.to_string(),
            title: None,
            ministry: ministry.to_string(),
            description: String::new(),
            synthetic: false,
            crs: None,
            source_layer: None,
            id_field: None,
            skip_invalid: false,
            limits: Limits::default(),
            diagnose: Default::default(),
            record: Default::default(),
            uploaded_by: None,
            note: None,
            table: Default::default(),
            ministry_explicit: true,
            expect_ministry: None,
            draft: None,
        }
    }
}

/// Progress of a running ingest, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub read: u64,
    pub total: Option<u64>,
}

/// The result of a successful ingest.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub meta: LayerMeta,
}

const BATCH: usize = 1024;

/// The reader of a pipeline: pushes raw features, stops when the flag is set.
type ReadFn<'a> = dyn FnMut(&mut Batches<'_>, &AtomicBool) -> Result<()> + 'a;

/// Raw features on their way to the workers, in numbered batches of [`BATCH`];
/// counts them and reports progress after each batch.
struct Batches<'a> {
    tx: Sender<(u64, Vec<Raw>)>,
    count: &'a AtomicU64,
    total: Option<u64>,
    progress: &'a (dyn Fn(Progress) + Sync),
    batch: Vec<Raw>,
    no: u64,
}

impl Batches<'_> {
    /// Adds one feature; false when the writer has stopped (its error is reported).
    fn push(&mut self, raw: Raw) -> bool {
        self.batch.push(raw);
        if self.batch.len() < BATCH {
            return true;
        }
        let ok = self.send();
        self.report();
        ok
    }

    fn send(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.count
            .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let ok = self.tx.send((self.no, full)).is_ok();
        self.no += 1;
        ok
    }

    fn report(&self) {
        (self.progress)(Progress {
            read: self.count.load(Ordering::Relaxed),
            total: self.total,
        });
    }

    /// Sends the last batch and reports the final count; closes the channel.
    fn finish(mut self) {
        self.send();
        self.report();
    }
}

struct Raw {
    fid_hint: i64,
    /// CSV line / source row, for messages.
    row: i64,
    wkb: Option<Vec<u8>>,
    /// A geometry built here (table rows), used instead of `wkb`.
    geom: Option<geo::Geometry<f64>>,
    /// A table row whose key matched no zone of a join.
    unplaced: bool,
    /// A row of a dataset without geometry (`--no-geometry`): stored as attributes.
    no_geometry: bool,
    notes: Vec<(Kind, String)>,
    values: Vec<Value2>,
}

struct Done {
    row: i64,
    fid_hint: i64,
    /// The feature id; None when `--id-field` is empty for this feature.
    fid: Option<i64>,
    /// The stored feature, encoded by the worker; None when rejected.
    encoded: Option<Encoded>,
    gtype: &'static str,
    notes: Vec<(Kind, String)>,
    repaired: bool,
}

/// Runs one ingest to completion (blocking). `progress` is called every batch.
pub fn ingest(
    store: &dyn LayerStore,
    req: &IngestRequest,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<IngestSummary> {
    let started = Instant::now();
    crate::store::validate_id(&req.layer_id)?;
    if req.ministry.trim().is_empty() {
        return Err(Error::bad(
            "--ministry is required (e.g. desarrollo-urbano)",
        ));
    }
    req.record.validate()?;
    if store.is_hidden(&req.layer_id) {
        return Err(Error::bad(format!(
            "layer '{}' was deleted; an admin can bring it back (datahub layer undelete {0}) before new versions are uploaded",
            req.layer_id
        )));
    }
    let staging = store.begin(&req.layer_id)?;
    // The catalogue record belongs to the layer: a new version starts from the last.
    let previous = store.current(&req.layer_id)?.map(|v| v.meta);
    // Unpacked archives live inside the staging dir, so they go with it on any failure.
    let work = staging.dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;

    let sha = sha256_file(&req.source)?;
    let cands = source::locate(&req.source, &work, req.limits)?;
    let mut report = IngestReport::default();
    let fgb_path = staging.fgb_path();
    let mut kept = false;
    let (written, source_format, source_layer, crs, schema, hint, join) =
        if let Some(cand) = source::table_candidate(&cands, req.source_layer.as_deref())? {
            // CSV and spreadsheets: read by the table reader, placed by coordinates or
            // by a key join.
            let p = tabular::prepare(store, &cand, req)?;
            if req.table.join.is_some() {
                // Kept with the version: the layer is rebuilt from it when the zone
                // layer gets a new version (rejoin_dependents).
                let dir = staging.dir.join(crate::store::SOURCE_DIR);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let name = cand.path.file_name().unwrap_or_default();
                let to = dir.join(name);
                std::fs::copy(&cand.path, &to).map_err(|e| Error::io(&to, e))?;
                kept = true;
            }
            report.notes.extend(p.notes.iter().cloned());
            let id_index = id_field_index(&p.schema, req.id_field.as_deref())?;
            let mut join = None;
            let sink = Sink {
                fgb_path: &fgb_path,
                rows: Some(tabular::row_word(&p.table)),
                total: Some(p.table.data_rows),
                progress,
            };
            let written = pipeline(req, &p.schema, &p.crs, id_index, sink, &mut |out, stop| {
                join = tabular::read_rows(&p, &req.table, out, stop)?;
                Ok(())
            })?;
            let layer_name = p.table.name.clone();
            (
                written,
                p.table.format.to_string(),
                layer_name,
                p.crs.clone(),
                p.schema.clone(),
                None,
                join,
            )
        } else {
            let unpack_root = work.join("unpacked");
            let opened = source::choose(cands, req.source_layer.as_deref(), &unpack_root)?;
            report.notes.extend(opened.candidate.notes.iter().cloned());
            let crs = source::source_crs(
                &opened,
                req.crs.as_deref(),
                &mut report.notes,
                &req.diagnose.region,
            )?;
            if crs.how == "identified" {
                report.notes.push(format!(
                    "the source's CRS has no EPSG code; identified as {}",
                    crs.label()
                ));
            }
            let driver = opened.dataset.driver().short_name();
            let mut layer = opened.dataset.layer(opened.layer_index)?;
            let (schema, source_index, skipped) = read_schema(&layer)?;
            for name in skipped {
                report.notes.push(format!(
                    "binary field '{name}' is not kept (binary data is not served)"
                ));
            }
            let id_index = id_field_index(&schema, req.id_field.as_deref())?;
            let sink = Sink {
                fgb_path: &fgb_path,
                rows: None,
                total: layer.try_feature_count(),
                progress,
            };
            let written = pipeline(req, &schema, &crs, id_index, sink, &mut |out, stop| {
                read_features(&mut layer, &schema, &source_index, out, stop)
            })?;
            let hint = source::crs_hint(&opened, &req.diagnose.region);
            drop(opened.dataset);
            (written, driver, opened.layer_name, crs, schema, hint, None)
        };
    let (outcome, read) = written;
    let WriterResult {
        report: wr,
        stored,
        bbox,
        types,
        bad_rows,
    } = outcome;
    report.features_read = read;
    report.features_stored = stored;
    report.features_repaired = wr.features_repaired;
    report.features_rejected = wr.features_rejected;
    report.problems = wr.problems;
    if let Some(j) = &join {
        if j.matched == 0 {
            return Err(Error::bad(format!(
                "the join matched no row: {}. Check --key and the zone field, or give a \
                 --crosswalk for names that differ",
                j.lines().join("; ")
            )));
        }
    }
    report.join = join;
    if !bad_rows.is_empty() && !req.skip_invalid {
        let shown: Vec<String> = bad_rows.iter().take(10).map(|r| r.to_string()).collect();
        return Err(Error::bad(format!(
            "{} row(s) have missing or unreadable coordinates (file lines {}{}); fix them, or \
             pass --skip-invalid to store the other rows",
            bad_rows.len(),
            shown.join(", "),
            if bad_rows.len() > 10 { ", ..." } else { "" }
        )));
    }
    if stored == 0 && report.features_read > 0 {
        let why = report
            .problems
            .iter()
            .map(|(k, p)| match p.examples.first() {
                Some(e) if !e.detail.is_empty() => {
                    format!("{k}: {}, e.g. feature {}: {}", p.count, e.feature, e.detail)
                }
                _ => format!("{k}: {}", p.count),
            })
            .collect::<Vec<_>>()
            .join("; ");
        // Tables: the rows' own diagnosis names the fix.
        let hint = hint.or_else(|| {
            if report.problems.contains_key(Kind::SwappedLatLon.code()) {
                return Some("the coordinates look like latitude/longitude swapped: swap the longitude and latitude columns (or name them with --lon/--lat) / las columnas de longitud y latitud parecen intercambiadas".to_string());
            }
            let p = report.problems.get(Kind::ProjectedAsDegrees.code())?;
            let detail = &p.examples.first()?.detail;
            let code = detail.split("EPSG:").nth(1)?.split(' ').next()?;
            Some(format!(
                "the coordinates are not degrees; read as EPSG:{code} they fall in {}: try --crs EPSG:{code} / las coordenadas no son grados; pruebe --crs EPSG:{code}",
                req.diagnose.region.name
            ))
        });
        let hint = hint.map(|h| format!(". Hint: {h}")).unwrap_or_default();
        return Err(Error::bad(format!(
            "no feature could be stored ({why}){hint}"
        )));
    }

    let meta = LayerMeta {
        id: req.layer_id.clone(),
        version: 0,
        title: req
            .title
            .clone()
            .or_else(|| previous.as_ref().map(|p| p.title.clone()))
            .unwrap_or_else(|| req.layer_id.clone()),
        ministry: req.ministry.clone(),
        description: if req.description.is_empty() {
            previous
                .as_ref()
                .map(|p| p.description.clone())
                .unwrap_or_default()
        } else {
            req.description.clone()
        },
        keywords: previous
            .as_ref()
            .map(|p| p.keywords.clone())
            .unwrap_or_default(),
        theme: previous.as_ref().and_then(|p| p.theme.clone()),
        license: previous
            .as_ref()
            .map(|p| p.license.clone())
            .unwrap_or_else(|| crate::store::DEFAULT_LICENSE.into()),
        contact_name: previous.as_ref().and_then(|p| p.contact_name.clone()),
        contact_email: previous.as_ref().and_then(|p| p.contact_email.clone()),
        update_frequency: previous.as_ref().and_then(|p| p.update_frequency.clone()),
        language: previous
            .as_ref()
            .map(|p| p.language.clone())
            .unwrap_or_else(|| "es-MX".into()),
        temporal: previous.as_ref().and_then(|p| p.temporal.clone()),
        access: previous.as_ref().map(|p| p.access).unwrap_or_default(),
        uploaded_by: req.uploaded_by.clone(),
        note: req.note.clone(),
        synthetic: req.synthetic,
        source_file: req
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_sha256: sha,
        source_format,
        source_layer,
        source_crs: crs,
        feature_count: stored,
        bbox,
        geometry_types: types.into_iter().collect(),
        schema,
        id_field: req.id_field.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
        report,
        diagnosis: None,
        table: kept.then(|| req.table.clone()),
        draft: req.draft.clone().map(|by| crate::store::DraftInfo {
            base: None,
            by,
            base_record: None,
        }),
        approved_by: None,
    };
    let _ = std::fs::remove_dir_all(&work);
    // The diagnosis reads the written file, as a served version would be read, and
    // goes into the version's record before it is published.
    let mut meta = meta;
    req.record.apply(&mut meta);
    let diagnosing = Instant::now();
    let (staged, boxes) = crate::index::LoadedLayer::load_for_scan(&crate::store::StoredVersion {
        meta: meta.clone(),
        fgb_path: fgb_path.clone(),
    })?;
    let mut d = crate::diagnose::diagnose_with(&staged, Some(&boxes), &req.diagnose)?;
    drop(staged);
    // Its whole cost to the ingest, loading the written file included.
    d.duration_ms = diagnosing.elapsed().as_millis() as u64;
    meta.diagnosis = Some(d);
    meta.duration_ms = started.elapsed().as_millis() as u64;
    // The record is taken again from the current version at the moment of
    // publishing (under the record lock): an edit or a ministry transfer made while
    // this ingest ran (or was queued) is kept, with this ingest's own changes on top.
    let mut published = meta.clone();
    let version = store.publish_with(staging, meta, &mut |m, current| {
        // A draft is made on the version current now.
        if let Some(d) = m.draft.as_mut() {
            d.base = current.map(|c| c.version);
            d.base_record = current.map(crate::store::record_fields);
        }
        if let (Some(cur), Some(expected)) = (current, &req.expect_ministry) {
            if &cur.ministry != expected {
                return Err(Error::bad(format!(
                    "layer '{}' was moved to '{}' while this upload ran; it was not \
                     published: send it again if it still belongs there",
                    req.layer_id, cur.ministry
                )));
            }
        }
        if let Some(cur) = current {
            let ministry = m.ministry.clone();
            cur.copy_record_to(m);
            if req.ministry_explicit {
                m.ministry = ministry;
            }
            if let Some(t) = &req.title {
                m.title = t.clone();
            }
            if !req.description.is_empty() {
                m.description = req.description.clone();
            }
            req.record.apply(m);
            m.refresh_diagnosis_metadata();
        }
        published = m.clone();
        Ok(())
    })?;
    Ok(IngestSummary {
        meta: LayerMeta {
            version,
            ..published
        },
    })
}

/// A layer rebuilt because its zone layer changed.
#[derive(Debug)]
pub struct Rejoined {
    pub layer: String,
    pub result: Result<IngestSummary>,
}

/// Rebuilds every table joined to `zone` whose current version was joined to an
/// older version of it, from the source kept with that version and the same options
/// (`base` gives the limits and the diagnosis settings). Each becomes a new version
/// whose note says why. A failure leaves that layer's current version served.
pub fn rejoin_dependents(
    store: &dyn LayerStore,
    zone: &str,
    base: &IngestRequest,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Rejoined>> {
    let Some(zone_v) = store.current(zone)?.map(|v| v.meta.version) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in store.layer_ids()? {
        if id == zone || store.is_hidden(&id) {
            continue;
        }
        // One unreadable layer does not stop the others from following their zones.
        let Some(cur) = store.current(&id).unwrap_or_else(|e| {
            tracing::warn!(layer = %id, error = %e, "unreadable layer: not checked for a rejoin");
            None
        }) else {
            continue;
        };
        let m = &cur.meta;
        let Some(table) = m
            .table
            .as_ref()
            .filter(|t| t.join.as_ref().is_some_and(|j| j.layer == zone))
        else {
            continue;
        };
        if m.report
            .join
            .as_ref()
            .is_some_and(|j| j.zone_version == zone_v)
        {
            continue;
        }
        let Some(source) = crate::store::kept_source(&cur) else {
            tracing::warn!(layer = %id, "joined layer without its kept source: not rebuilt");
            continue;
        };
        let req = IngestRequest {
            source,
            layer_id: id.clone(),
            title: None,
            ministry: m.ministry.clone(),
            description: String::new(),
            synthetic: m.synthetic,
            crs: None,
            // A CSV's "layer" is its file name; a sheet is named by it.
            source_layer: (m.source_format != "CSV").then(|| m.source_layer.clone()),
            id_field: m.id_field.clone(),
            skip_invalid: false,
            limits: base.limits,
            diagnose: base.diagnose.clone(),
            record: Default::default(),
            uploaded_by: base.uploaded_by.clone(),
            note: Some(format!(
                "joined again: zone layer {zone} has version {zone_v} (was {})",
                m.report
                    .join
                    .as_ref()
                    .map_or("?".to_string(), |j| j.zone_version.to_string())
            )),
            table: table.clone(),
            // A rebuild keeps the layer where it is at publish time.
            ministry_explicit: false,
            expect_ministry: None,
            draft: None,
        };
        out.push(Rejoined {
            layer: id.clone(),
            result: ingest(store, &req, progress),
        });
    }
    Ok(out)
}

/// The schema index of `--id-field`, checked to be an integer field.
fn id_field_index(schema: &[Field], id_field: Option<&str>) -> Result<Option<usize>> {
    let Some(name) = id_field else {
        return Ok(None);
    };
    let i = schema.iter().position(|f| f.name == name).ok_or_else(|| {
        Error::bad(format!(
            "--id-field '{name}' is not a field of the source; fields: {}",
            crate::table::name_list(schema.iter().map(|f| f.name.as_str()))
        ))
    })?;
    if !matches!(schema[i].ftype, FieldType::Int | FieldType::Long) {
        return Err(Error::bad(format!(
            "--id-field '{}' must be an integer field (it is {:?})",
            schema[i].name, schema[i].ftype
        )));
    }
    Ok(Some(i))
}

/// Where a pipeline writes and how it reports.
struct Sink<'a> {
    fgb_path: &'a Path,
    /// "file line" / "sheet row" for tables (rows are named in messages), None for
    /// GDAL sources.
    rows: Option<&'static str>,
    total: Option<u64>,
    progress: &'a (dyn Fn(Progress) + Sync),
}

/// Runs the reader on this thread, workers (parse, transform, validate, encode) on
/// every core and the writer on its own thread; returns what the writer wrote and
/// how many features were read.
fn pipeline(
    req: &IngestRequest,
    schema: &[Field],
    crs: &SourceCrs,
    id_index: Option<usize>,
    sink: Sink<'_>,
    read: &mut ReadFn<'_>,
) -> Result<(WriterResult, u64)> {
    let Sink {
        fgb_path,
        rows,
        total,
        progress,
    } = sink;
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    let (raw_tx, raw_rx) = bounded::<(u64, Vec<Raw>)>(workers * 2);
    let (done_tx, done_rx) = bounded::<(u64, Vec<Done>)>(workers * 2);
    let stop = Arc::new(AtomicBool::new(false));
    let read_count = AtomicU64::new(0);
    let layer_name = req.layer_id.clone();
    let written = std::thread::scope(|scope| -> Result<WriterResult> {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let rx = raw_rx.clone();
            let tx = done_tx.clone();
            let crs = crs.clone();
            let stop = stop.clone();
            let region = &req.diagnose.region;
            handles.push(scope.spawn(move || worker(rx, tx, &crs, id_index, &stop, region)));
        }
        drop(done_tx);
        let stop_w = stop.clone();
        let layer_name = &layer_name;
        let writer = scope.spawn(move || {
            let r = write_all(
                done_rx,
                layer_name,
                schema,
                fgb_path,
                id_index.is_some(),
                rows,
            );
            if r.is_err() {
                stop_w.store(true, Ordering::Relaxed);
            }
            r
        });
        let mut out = Batches {
            tx: raw_tx,
            count: &read_count,
            total,
            progress,
            batch: Vec::with_capacity(BATCH),
            no: 0,
        };
        let read_result = read(&mut out, &stop);
        out.finish();
        for h in handles {
            h.join()
                .map_err(|_| Error::Internal("ingest worker panicked".into()))??;
        }
        let written = writer
            .join()
            .map_err(|_| Error::Internal("ingest writer panicked".into()))?;
        // The writer's error is the cause when the reader stopped because of it.
        let written = written?;
        read_result?;
        Ok(written)
    })?;
    Ok((written, read_count.load(Ordering::Relaxed)))
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut h = Sha256::new();
    if p.is_dir() {
        // A .gdb folder: hash its files in name order.
        let mut files: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            h.update(
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            hash_into(&f, &mut h)?;
        }
    } else {
        hash_into(p, &mut h)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_into(p: &Path, h: &mut Sha256) -> Result<()> {
    let mut f =
        File::open(p).map_err(|e| Error::bad(format!("cannot read {}: {e}", p.display())))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// The attribute schema, and for each kept field its index in the source layer.
/// Binary fields are not kept (their names are returned for the report).
fn read_schema(layer: &gdal::vector::Layer) -> Result<(Vec<Field>, Vec<usize>, Vec<String>)> {
    let mut schema = Vec::new();
    let mut skipped = Vec::new();
    let mut source_index = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, f) in layer.defn().fields().enumerate() {
        // SAFETY: the defn pointer is valid while the layer lives; index < field count.
        let subtype = unsafe {
            let fd = gdal_sys::OGR_FD_GetFieldDefn(layer.defn().c_defn(), i as i32);
            gdal_sys::OGR_Fld_GetSubType(fd)
        };
        let is_bool = subtype == gdal_sys::OGRFieldSubType::OFSTBoolean;
        if matches!(
            f.field_type(),
            OGRFieldType::OFTBinary | OGRFieldType::OFTWideString | OGRFieldType::OFTWideStringList
        ) {
            skipped.push(f.name());
            continue;
        }
        let ftype = match f.field_type() {
            OGRFieldType::OFTInteger if is_bool => FieldType::Bool,
            OGRFieldType::OFTInteger => FieldType::Int,
            OGRFieldType::OFTInteger64 => FieldType::Long,
            OGRFieldType::OFTReal => FieldType::Float,
            OGRFieldType::OFTDate => FieldType::Date,
            OGRFieldType::OFTDateTime => FieldType::Datetime,
            _ => FieldType::String,
        };
        let mut name = f.name();
        if name == crate::fgb::FID_COLUMN || !seen.insert(name.clone()) {
            name = format!("{name}_{i}");
        }
        schema.push(Field { name, ftype });
        source_index.push(i);
    }
    Ok((schema, source_index, skipped))
}

fn read_features(
    layer: &mut gdal::vector::Layer,
    schema: &[Field],
    source_index: &[usize],
    out: &mut Batches<'_>,
    stop: &AtomicBool,
) -> Result<()> {
    for (i, feature) in layer.features().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = i as i64 + 1;
        let mut notes = Vec::new();
        let wkb = match feature.geometry() {
            Some(g) if !g.is_empty() => Some(geometry_wkb(g, &mut notes)?),
            _ => None,
        };
        let mut values = Vec::with_capacity(schema.len());
        for (i, f) in schema.iter().enumerate() {
            let v = match feature.field(source_index[i]) {
                Ok(v) => to_value(v, f.ftype),
                Err(e) => {
                    notes.push((Kind::BadAttribute, format!("{}: {e}", f.name)));
                    Value2::Null
                }
            };
            values.push(v);
        }
        let raw = Raw {
            fid_hint: n,
            row: n,
            wkb,
            geom: None,
            unplaced: false,
            no_geometry: false,
            notes,
            values,
        };
        if !out.push(raw) {
            return Ok(()); // the writer failed; its error is reported
        }
    }
    Ok(())
}

/// 2D linear WKB of a GDAL geometry, noting what had to change.
fn geometry_wkb(g: &gdal::vector::Geometry, notes: &mut Vec<(Kind, String)>) -> Result<Vec<u8>> {
    let t = g.geometry_type();
    let has_z = gdal::vector::geometry_type_has_z(t);
    let has_m = gdal::vector::geometry_type_has_m(t);
    // SAFETY: plain queries/copies on a valid geometry handle owned by the feature.
    let nonlinear = unsafe { gdal_sys::OGR_GT_IsNonLinear(t) != 0 };
    if !has_z && !has_m && !nonlinear {
        return Ok(g.wkb()?);
    }
    if has_z {
        notes.push((Kind::ZDropped, String::new()));
    }
    if has_m {
        notes.push((Kind::MDropped, String::new()));
    }
    let raw = unsafe {
        if nonlinear {
            notes.push((Kind::CurveLinearized, g.geometry_name()));
            gdal_sys::OGR_G_GetLinearGeometry(g.c_geometry(), 0.0, std::ptr::null_mut())
        } else {
            gdal_sys::OGR_G_Clone(g.c_geometry())
        }
    };
    if raw.is_null() {
        return Err(Error::Gdal("cannot copy a geometry".into()));
    }
    unsafe {
        gdal_sys::OGR_G_FlattenTo2D(raw);
        let size = gdal_sys::OGR_G_WkbSize(raw);
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        let rc =
            gdal_sys::OGR_G_ExportToWkb(raw, gdal_sys::OGRwkbByteOrder::wkbNDR, buf.as_mut_ptr());
        gdal_sys::OGR_G_DestroyGeometry(raw);
        if rc != gdal_sys::OGRErr::OGRERR_NONE {
            return Err(Error::Gdal("cannot export a geometry as WKB".into()));
        }
        Ok(buf)
    }
}

fn to_value(v: Option<FieldValue>, t: FieldType) -> Value2 {
    let Some(v) = v else { return Value2::Null };
    match (t, v) {
        (FieldType::Bool, FieldValue::IntegerValue(n)) => Value2::Bool(n != 0),
        (FieldType::Int, FieldValue::IntegerValue(n)) => Value2::Int(n),
        (FieldType::Long, FieldValue::Integer64Value(n)) => Value2::Long(n),
        (FieldType::Long, FieldValue::IntegerValue(n)) => Value2::Long(n.into()),
        (FieldType::Float, FieldValue::RealValue(x)) => Value2::Float(x),
        (FieldType::Date, FieldValue::DateValue(d)) => {
            Value2::Text(d.format("%Y-%m-%d").to_string())
        }
        (FieldType::Date, FieldValue::DateTimeValue(d)) => {
            Value2::Text(d.format("%Y-%m-%d").to_string())
        }
        (FieldType::Datetime, FieldValue::DateTimeValue(d)) => {
            Value2::Text(d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        (_, FieldValue::StringValue(s)) => Value2::Text(s),
        (_, FieldValue::IntegerValue(n)) => Value2::Text(n.to_string()),
        (_, FieldValue::Integer64Value(n)) => Value2::Text(n.to_string()),
        (_, FieldValue::RealValue(x)) => Value2::Text(x.to_string()),
        (_, FieldValue::StringListValue(l)) => {
            Value2::Text(serde_json::to_string(&l).unwrap_or_default())
        }
        (_, FieldValue::IntegerListValue(l)) => {
            Value2::Text(serde_json::to_string(&l).unwrap_or_default())
        }
        (_, FieldValue::Integer64ListValue(l)) => {
            Value2::Text(serde_json::to_string(&l).unwrap_or_default())
        }
        (_, FieldValue::RealListValue(l)) => {
            Value2::Text(serde_json::to_string(&l).unwrap_or_default())
        }
        (_, FieldValue::DateValue(d)) => Value2::Text(d.to_string()),
        (_, FieldValue::DateTimeValue(d)) => Value2::Text(d.to_rfc3339()),
    }
}

fn worker(
    rx: Receiver<(u64, Vec<Raw>)>,
    tx: Sender<(u64, Vec<Done>)>,
    crs: &SourceCrs,
    id_index: Option<usize>,
    stop: &AtomicBool,
    region: &crate::diagnose::Area,
) -> Result<()> {
    let to_storage = ToStorage::new(crs)?;
    let lonlat_source = crs.is_storage_crs();
    let mut encoder = FeatureEncoder::default();
    for (no, batch) in rx {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            out.push(process(
                r,
                &to_storage,
                id_index,
                &mut encoder,
                lonlat_source.then_some(region),
            )?);
        }
        if tx.send((no, out)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Parse, transform, validate/repair and encode one feature.
fn process(
    raw: Raw,
    to_storage: &ToStorage,
    id_index: Option<usize>,
    encoder: &mut FeatureEncoder,
    region: Option<&crate::diagnose::Area>,
) -> Result<Done> {
    let mut done = Done {
        row: raw.row,
        fid_hint: raw.fid_hint,
        fid: None,
        encoded: None,
        gtype: "",
        notes: raw.notes,
        repaired: false,
    };
    if raw.no_geometry {
        done.fid = feature_id(raw.fid_hint, &raw.values, id_index);
        if let Some(fid) = done.fid {
            done.encoded = Some(encoder.encode(fid, None, &raw.values)?);
        }
        return Ok(done);
    }
    let parsed = match (raw.geom, raw.wkb) {
        (Some(g), _) => Ok(g),
        (None, Some(wkb)) => geozero::wkb::Wkb(wkb).to_geo(),
        (None, None) => {
            if raw.unplaced {
                done.notes.push((Kind::NotJoined, String::new()));
            } else if !done.notes.iter().any(|(k, _)| *k == Kind::BadCoordinates) {
                done.notes.push((Kind::EmptyGeometry, String::new()));
            }
            return Ok(done);
        }
    };
    let mut geom = match parsed {
        Ok(g) if g.coords_count() > 0 => g,
        Ok(_) => {
            done.notes.push((Kind::EmptyGeometry, String::new()));
            return Ok(done);
        }
        Err(e) => {
            done.notes.push((Kind::BadCoordinates, e.to_string()));
            return Ok(done);
        }
    };
    if let Err(e) = to_storage.apply(&mut geom) {
        done.notes.push((Kind::TransformFailed, e));
        // Said to be lon/lat but not: why, when the coordinates tell (swapped columns,
        // or metres of a projected CRS), so the diagnosis can name the fix.
        if let (Some(region), Some(c)) = (region, geom.coords_iter().next()) {
            let inside = |x: f64, y: f64| {
                x >= region.bbox[0]
                    && x <= region.bbox[2]
                    && y >= region.bbox[1]
                    && y <= region.bbox[3]
            };
            if inside(c.y, c.x) {
                done.notes
                    .push((Kind::SwappedLatLon, format!("({}, {})", c.x, c.y)));
            } else if let Some((code, name)) =
                crate::diagnose::crs_candidates(c.x, c.y, region).first()
            {
                done.notes.push((
                    Kind::ProjectedAsDegrees,
                    format!("({}, {}) fits EPSG:{code} ({name})", c.x, c.y),
                ));
            }
        }
        return Ok(done);
    }
    let geom = match normalize(geom) {
        Outcome::Clean(g) => g,
        Outcome::Repaired(g, why) => {
            done.notes.push((Kind::InvalidRepaired, why));
            done.repaired = true;
            g
        }
        Outcome::Kept(g, why) => {
            done.notes.push((Kind::InvalidKept, why));
            g
        }
    };
    done.fid = feature_id(raw.fid_hint, &raw.values, id_index);
    done.gtype = geometry_type_name(&geom);
    if let Some(fid) = done.fid {
        done.encoded = Some(encoder.encode(fid, Some(&geom), &raw.values)?);
    }
    Ok(done)
}

/// The feature id: the source position, or the `--id-field` value (None when empty).
fn feature_id(fid_hint: i64, values: &[Value2], id_index: Option<usize>) -> Option<i64> {
    match id_index {
        None => Some(fid_hint),
        Some(i) => match values.get(i) {
            Some(Value2::Int(n)) => Some(i64::from(*n)),
            Some(Value2::Long(n)) => Some(*n),
            _ => None,
        },
    }
}

struct WriterResult {
    report: IngestReport,
    stored: u64,
    bbox: Option<[f64; 4]>,
    types: BTreeSet<String>,
    /// CSV file lines whose coordinates were missing or unreadable.
    bad_rows: Vec<i64>,
}

fn geometry_type_name(g: &geo::Geometry<f64>) -> &'static str {
    match g {
        geo::Geometry::Point(_) => "Point",
        geo::Geometry::Line(_) | geo::Geometry::LineString(_) => "LineString",
        geo::Geometry::Polygon(_) | geo::Geometry::Rect(_) | geo::Geometry::Triangle(_) => {
            "Polygon"
        }
        geo::Geometry::MultiPoint(_) => "MultiPoint",
        geo::Geometry::MultiLineString(_) => "MultiLineString",
        geo::Geometry::MultiPolygon(_) => "MultiPolygon",
        geo::Geometry::GeometryCollection(_) => "GeometryCollection",
    }
}

fn write_all(
    rx: Receiver<(u64, Vec<Done>)>,
    name: &str,
    schema: &[Field],
    path: &Path,
    id_field: bool,
    rows: Option<&'static str>,
) -> Result<WriterResult> {
    let mut writer = LayerWriter::new(name, schema, &path.with_extension("features.tmp"))?;
    let mut res = WriterResult {
        report: IngestReport::default(),
        stored: 0,
        bbox: None,
        types: BTreeSet::new(),
        bad_rows: Vec::new(),
    };
    let mut pending: BTreeMap<u64, Vec<Done>> = BTreeMap::new();
    let mut next = 0u64;
    let mut ids: HashMap<i64, i64> = HashMap::new();
    for (no, batch) in rx {
        pending.insert(no, batch);
        while let Some(batch) = pending.remove(&next) {
            next += 1;
            for d in batch {
                write_one(&mut writer, &mut res, d, id_field, rows, &mut ids)?;
            }
        }
    }
    if !pending.is_empty() {
        return Err(Error::Internal("ingest pipeline lost a batch".into()));
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writer.finish(&mut out)?;
    out.into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io(path, e))?;
    Ok(res)
}

fn write_one(
    writer: &mut LayerWriter,
    res: &mut WriterResult,
    d: Done,
    id_field: bool,
    rows: Option<&'static str>,
    ids: &mut HashMap<i64, i64>,
) -> Result<()> {
    let mut rejected = false;
    for (kind, detail) in &d.notes {
        let kind = if rows.is_some() && *kind == Kind::EmptyGeometry {
            Kind::BadCoordinates
        } else {
            *kind
        };
        let detail = match rows {
            Some(word) if detail.is_empty() => format!("{word} {}", d.row),
            _ => detail.clone(),
        };
        res.report.add(kind, d.fid_hint, detail);
        if kind.rejects() {
            rejected = true;
            if rows.is_some() && kind == Kind::BadCoordinates {
                res.bad_rows.push(d.row);
            }
        }
    }
    if rejected {
        res.report.features_rejected += 1;
        return Ok(());
    }
    let (Some(fid), Some(enc)) = (d.fid, d.encoded) else {
        let what = if id_field {
            "the --id-field value is empty"
        } else {
            "no geometry"
        };
        return Err(Error::bad(format!(
            "source feature {} cannot be stored: {what}; every feature needs an id",
            d.fid_hint
        )));
    };
    if id_field {
        if let Some(first) = ids.insert(fid, d.fid_hint) {
            return Err(Error::bad(format!(
                "--id-field is not unique: value {fid} in source features {first} and {}",
                d.fid_hint
            )));
        }
    }
    if d.repaired {
        res.report.features_repaired += 1;
    }
    if enc.has_geometry {
        let b = res
            .bbox
            .get_or_insert([f64::MAX, f64::MAX, f64::MIN, f64::MIN]);
        b[0] = b[0].min(enc.bbox[0]);
        b[1] = b[1].min(enc.bbox[1]);
        b[2] = b[2].max(enc.bbox[2]);
        b[3] = b[3].max(enc.bbox[3]);
        res.types.insert(d.gtype.to_string());
    }
    writer.add(&enc)?;
    res.stored += 1;
    Ok(())
}

/// GDAL and PROJ never reach the network from this process: the data are local
/// files, and a URL in a hostile file (a .prj, a CRS, a reference inside a document)
/// must not make the server connect anywhere. PROJ's grid downloads are switched off
/// (`OSRSetPROJEnableNetwork`, and `PROJ_NETWORK=OFF` for the `proj` crate's own
/// contexts); every HTTP fetch GDAL makes (`CPLHTTPFetch`: CRS URLs, GeoJSON `crs`
/// links, …) goes to a process-wide callback that refuses it, whatever thread asks;
/// and GDAL's curl-based readers (`/vsicurl/`) are sent to a proxy that does not exist.
fn network_off() {
    // Before any thread starts (called first thing in main).
    std::env::set_var("PROJ_NETWORK", "OFF");
    // SAFETY: plain setters of process-wide flags; the callback is a `extern "C"`
    // function that only allocates GDAL's result struct through GDAL's allocator.
    unsafe {
        gdal_sys::OSRSetPROJEnableNetwork(0);
        // The global one (every thread), not `CPLHTTPPushFetchCallback`, which
        // applies to the calling thread only: ingests run on other threads.
        CPLHTTPSetFetchCallback(Some(refuse_http), std::ptr::null_mut());
    }
    for (k, v) in [
        // Port 9 (discard) of this host: a refused connection, never a remote one.
        ("GDAL_HTTP_PROXY", "127.0.0.1:9"),
        ("GDAL_HTTPS_PROXY", "127.0.0.1:9"),
        ("GDAL_HTTP_TIMEOUT", "1"),
    ] {
        if let Err(e) = gdal::config::set_config_option(k, v) {
            tracing::warn!(key = k, error = %e, "cannot set GDAL option");
        }
    }
}

type FetchCallback = unsafe extern "C" fn(
    url: *const std::ffi::c_char,
    options: *const *const std::ffi::c_char,
    progress: *mut std::ffi::c_void,
    progress_arg: *mut std::ffi::c_void,
    write: *mut std::ffi::c_void,
    write_arg: *mut std::ffi::c_void,
    user: *mut std::ffi::c_void,
) -> *mut std::ffi::c_void;

extern "C" {
    /// cpl_http.h (GDAL >= 3.2), not in gdal-sys's bindings.
    fn CPLHTTPSetFetchCallback(func: Option<FetchCallback>, user: *mut std::ffi::c_void);
}

/// cpl_http.h's `CPLHTTPResult` (unchanged since GDAL 2).
#[repr(C)]
struct CplHttpResult {
    n_status: std::ffi::c_int,
    content_type: *mut std::ffi::c_char,
    err_buf: *mut std::ffi::c_char,
    data_len: std::ffi::c_int,
    data_alloc: std::ffi::c_int,
    data: *mut u8,
    headers: *mut *mut std::ffi::c_char,
    mime_part_count: std::ffi::c_int,
    mime_parts: *mut std::ffi::c_void,
}

/// GDAL's HTTP fetch, refused: a result with a non-zero status and an error text,
/// allocated with GDAL's allocator because the caller frees it with
/// `CPLHTTPDestroyResult`.
unsafe extern "C" fn refuse_http(
    url: *const std::ffi::c_char,
    _options: *const *const std::ffi::c_char,
    _progress: *mut std::ffi::c_void,
    _progress_arg: *mut std::ffi::c_void,
    _write: *mut std::ffi::c_void,
    _write_arg: *mut std::ffi::c_void,
    _user: *mut std::ffi::c_void,
) -> *mut std::ffi::c_void {
    let url = if url.is_null() {
        String::new()
    } else {
        std::ffi::CStr::from_ptr(url).to_string_lossy().into_owned()
    };
    tracing::warn!(
        url,
        "GDAL tried to fetch a URL: refused (no network access)"
    );
    let r = gdal_sys::CPLCalloc(1, std::mem::size_of::<CplHttpResult>()) as *mut CplHttpResult;
    if !r.is_null() {
        (*r).n_status = 1;
        (*r).err_buf = gdal_sys::CPLStrdup(c"network access is disabled in DataHub".as_ptr());
    }
    r as *mut std::ffi::c_void
}

/// Process-wide GDAL settings; call once at start-up.
pub fn init_gdal() {
    // GDAL's own messages go to our log instead of raw stderr; the errors that matter
    // come back to us as `Result`s with context.
    gdal::config::set_error_handler(|class, code, msg| {
        tracing::debug!(?class, code, msg, "GDAL");
    });
    network_off();
    for (k, v) in [
        // GeoJSON is read feature by feature; one feature (one JSON object) larger
        // than this many MB is refused instead of filling memory (GDAL's default,
        // written out so nobody mistakes it for the file size limit).
        ("OGR_GEOJSON_MAX_OBJ_SIZE", "200"),
        // Never rebuild a missing .shx silently: a broken Shapefile is reported.
        ("SHAPE_RESTORE_SHX", "NO"),
        // No network access from inside GDAL (see `network_off`).
        ("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", ".none"),
    ] {
        if let Err(e) = gdal::config::set_config_option(k, v) {
            tracing::warn!(key = k, error = %e, "cannot set GDAL option");
        }
    }
}
