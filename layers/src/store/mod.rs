//! Layer versions on disk: each version a FlatGeobuf file plus `meta.json`, published
//! atomically, with retention of old versions.
//!
//! Layout under the data dir:
//!
//! ```text
//! layers/<id>/v<n>/layer.fgb      the features (EPSG:4326, packed R-tree)
//! layers/<id>/v<n>/meta.json      LayerMeta: catalogue record + ingest report
//! layers/<id>/CURRENT             "<n>": the served version
//! locks/<id>.lock                 flock held by the one ingest of <id> at a time
//! locks/<id>.record.lock          flock held briefly by whoever writes the record or
//!                                 publishes (CLI and server alike)
//! tmp/<id>.<pid>.<nanos>/         staging of an ingest in progress (with its
//!                                 `.owner.lock`, held while the ingest lives)
//! ```
//!
//! Two locks per layer, both `flock`s that hold across processes: the ingest lock
//! keeps two ingests of a layer apart for as long as they run; the record lock is
//! taken for the short moments a record is read-modified-written or a version is
//! published, so a `datahub layer set` in a shell, the server's PATCH and an
//! ingest's publish never overwrite each other's edits (each re-reads the record
//! under it), and an edit never waits for a long ingest.
//!
//! Publishing writes everything into a staging dir, fsyncs, renames the dir to
//! `v<n>` and then atomically replaces `CURRENT`: a reader sees version n or n+1,
//! never half of one. A failed ingest drops its staging dir; one killed outright leaves
//! it behind, and [`FsStore::clean_stale`] removes it at the next start or ingest.
//!
//! Two backends behind the [`LayerStore`] trait, each in its own file: [`FsStore`]
//! here (the embedded default: a data folder), and [`postgres::PgStore`] (PostgreSQL +
//! PostGIS shared by several replicas, each keeping a copy laid out as above).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::crs::SourceCrs;
use crate::fgb::Field;
use crate::quality::IngestReport;
use crate::{Error, Result};

pub mod postgres;

/// Catalogue record of one layer version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerMeta {
    pub id: String,
    pub version: u32,
    pub title: String,
    pub ministry: String,
    #[serde(default)]
    pub description: String,
    /// The rest of the catalogue record: it belongs to the layer, so a new version
    /// carries it over unless the ingest changes it (`datahub layer set` edits it).
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    #[serde(default = "default_license")]
    pub license: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    /// ISO 8601 repeating interval or duration, e.g. `R/P1M` (monthly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<String>,
    #[serde(default = "default_language")]
    pub language: String,
    /// Temporal coverage as an ISO 8601 interval, e.g. `2020-01-01/2026-06-30`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<String>,
    /// Who may see the layer. Versions stored before access levels existed read as
    /// `internal`: nothing becomes public without someone deciding it.
    #[serde(default)]
    pub access: Access,
    /// Who published this version (a token's label, `cli:<user>`, `demo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
    /// The publisher's note on this version ("corrección de límites", "restored v3").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Demo layers are generated, not real city data; said so wherever they are shown.
    #[serde(default)]
    pub synthetic: bool,
    pub source_file: String,
    pub source_sha256: String,
    /// GDAL driver that read the source (e.g. "ESRI Shapefile").
    pub source_format: String,
    pub source_layer: String,
    pub source_crs: SourceCrs,
    pub feature_count: u64,
    /// [minx, miny, maxx, maxy] in lon/lat; None for an empty layer.
    pub bbox: Option<[f64; 4]>,
    /// Geometry types present, e.g. ["Polygon", "MultiPolygon"].
    pub geometry_types: Vec<String>,
    pub schema: Vec<Field>,
    /// Name of the source field used as feature id, if any.
    #[serde(default)]
    pub id_field: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub duration_ms: u64,
    pub report: IngestReport,
    /// The data-quality diagnosis (absent in versions stored before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<crate::diagnose::Diagnosis>,
    /// How a table was read and placed (tables joined by key): with the source kept
    /// beside the version, the layer is rebuilt when its zone layer changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<crate::table::TableOptions>,
    /// Set while the version is a draft: stored, diagnosed and diffed, seen only by
    /// its ministry, not served to anyone else until published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<DraftInfo>,
    /// Who published this version from a draft (approval), when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// What a draft was made against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DraftInfo {
    /// The version that was current when the draft was stored (None: a new layer).
    pub base: Option<u32>,
    /// The uploader (audit actor), who may not approve it when approval is required.
    pub by: String,
    /// The catalogue record of the base version when the draft was made: edits made
    /// to the layer's record while the draft waited (an access change) are kept when
    /// it is published (see [`merge_record`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_record: Option<serde_json::Value>,
}

/// The fields of a version's record that belong to the layer (carried from version to
/// version, edited by `datahub layer set` / PATCH).
const RECORD_FIELDS: [&str; 12] = [
    "title",
    "ministry",
    "description",
    "keywords",
    "theme",
    "license",
    "contact_name",
    "contact_email",
    "update_frequency",
    "language",
    "temporal",
    "access",
];

/// The layer's record fields of `m`, as a JSON object.
pub fn record_fields(m: &LayerMeta) -> serde_json::Value {
    let all = serde_json::to_value(m).unwrap_or_default();
    RECORD_FIELDS
        .iter()
        .map(|k| (k.to_string(), all.get(*k).cloned().unwrap_or_default()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Three-way merge of the record as a draft goes live: a field edited on the served
/// version since the draft was made (`current` differs from `base`) takes the edit;
/// the others keep the draft's (the upload's own changes).
pub(crate) fn merge_record(
    draft: &mut LayerMeta,
    base: &serde_json::Value,
    current: &LayerMeta,
) -> Result<()> {
    let now = record_fields(current);
    let mut out = serde_json::to_value(&*draft).map_err(|e| Error::Internal(e.to_string()))?;
    for k in RECORD_FIELDS {
        if now.get(k) != base.get(k) {
            out[k] = now.get(k).cloned().unwrap_or_default();
        }
    }
    *draft = serde_json::from_value(out).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(())
}

impl LayerMeta {
    /// Brings the diagnosis's metadata checks in line with the record (after an edit
    /// or when the record was taken from another version).
    pub fn refresh_diagnosis_metadata(&mut self) {
        let record = self.clone();
        if let Some(d) = &mut self.diagnosis {
            d.refresh_metadata(&record);
        }
    }

    /// Copies the catalogue record (what belongs to the layer, not to a version's data).
    pub fn copy_record_to(&self, to: &mut LayerMeta) {
        to.title = self.title.clone();
        to.ministry = self.ministry.clone();
        to.description = self.description.clone();
        to.keywords = self.keywords.clone();
        to.theme = self.theme.clone();
        to.license = self.license.clone();
        to.contact_name = self.contact_name.clone();
        to.contact_email = self.contact_email.clone();
        to.update_frequency = self.update_frequency.clone();
        to.language = self.language.clone();
        to.temporal = self.temporal.clone();
        to.access = self.access;
    }
}

/// Access level of a layer: who may see it (features, tiles, metadata, existence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Everyone, anonymous visitors and the open-data feeds included.
    Public,
    /// Every ministry of the city (any valid token).
    #[default]
    Internal,
    /// The owning ministry only (and city-wide admins).
    Restricted,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Public, Access::Internal, Access::Restricted];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Internal => "internal",
            Access::Restricted => "restricted",
        }
    }

    pub fn label_es(self) -> &'static str {
        match self {
            Access::Public => "público",
            Access::Internal => "interno",
            Access::Restricted => "restringido",
        }
    }

    /// Accepts the English and the Spanish names.
    pub fn parse(s: &str) -> Result<Access> {
        match s.trim().to_lowercase().as_str() {
            "public" | "publico" | "público" => Ok(Access::Public),
            "internal" | "interno" => Ok(Access::Internal),
            "restricted" | "restringido" => Ok(Access::Restricted),
            other => Err(Error::bad(format!(
                "unknown access level '{other}': use public (open data), internal (every ministry) or restricted (the owning ministry only)"
            ))),
        }
    }
}

/// The licence a layer gets unless its ministry says otherwise.
pub const DEFAULT_LICENSE: &str = "Términos de Libre Uso MX";

fn default_license() -> String {
    DEFAULT_LICENSE.into()
}

fn default_language() -> String {
    "es-MX".into()
}

/// Changes to a layer's catalogue record; `None` keeps a field, an empty text clears
/// it (the licence goes back to the default).
#[derive(Debug, Clone, Default)]
pub struct RecordEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub theme: Option<String>,
    pub license: Option<String>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
    pub update_frequency: Option<String>,
    pub language: Option<String>,
    pub temporal: Option<String>,
    pub access: Option<Access>,
}

/// Days in an ISO 8601 duration (`P1M`, `P1Y2M`, `P2W`, `PT12H`), optionally as a
/// repeating interval (`R/P1M`, `R12/P1M`); months count 30.44 days, years 365.25.
pub fn frequency_days(s: &str) -> Option<f64> {
    let d = match s.strip_prefix('R') {
        Some(rest) => rest.split_once('/')?.1,
        None => s,
    };
    let d = d.strip_prefix('P')?;
    let (date, time) = match d.split_once('T') {
        Some((a, b)) => (a, Some(b)),
        None => (d, None),
    };
    let mut days = 0.0;
    let mut any = false;
    let mut eat = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut u = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                // Units in their order, each at most once.
                let k = units[u..].iter().position(|(n, _)| *n == c)? + u;
                days += num.parse::<f64>().ok()? * units[k].1;
                num.clear();
                u = k + 1;
                any = true;
            }
        }
        num.is_empty().then_some(())
    };
    eat(date, &[('Y', 365.25), ('M', 30.44), ('W', 7.0), ('D', 1.0)])?;
    if let Some(t) = time {
        eat(
            t,
            &[('H', 1.0 / 24.0), ('M', 1.0 / 1440.0), ('S', 1.0 / 86400.0)],
        )?;
    }
    (any && days > 0.0).then_some(days)
}

/// `YYYY-MM-DD/YYYY-MM-DD` (or full RFC 3339 times), start not after end.
fn valid_interval(s: &str) -> bool {
    let date = |x: &str| {
        chrono::NaiveDate::parse_from_str(x, "%Y-%m-%d")
            .ok()
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(x)
                    .ok()
                    .map(|d| d.date_naive())
            })
    };
    match s.split_once('/') {
        Some((a, b)) => matches!((date(a), date(b)), (Some(a), Some(b)) if a <= b),
        None => false,
    }
}

impl RecordEdit {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.keywords.is_none()
            && self.theme.is_none()
            && self.license.is_none()
            && self.contact_name.is_none()
            && self.contact_email.is_none()
            && self.update_frequency.is_none()
            && self.language.is_none()
            && self.temporal.is_none()
            && self.access.is_none()
    }

    /// Checks the values a person typed, with what a right one looks like.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = self.contact_email.as_deref().filter(|e| !e.is_empty()) {
            let ok = e.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty()
                    && host.contains('.')
                    && !host.starts_with('.')
                    && !host.ends_with('.')
            }) && !e.contains(char::is_whitespace);
            if !ok {
                return Err(Error::bad(format!(
                    "contact email '{e}' is not an address like nombre@monterrey.gob.mx"
                )));
            }
        }
        if let Some(f) = self.update_frequency.as_deref().filter(|f| !f.is_empty()) {
            if frequency_days(f).is_none() {
                return Err(Error::bad(format!(
                    "update frequency '{f}' is not an ISO 8601 duration: use R/P1D (daily), R/P1W (weekly), R/P1M (monthly), R/P3M (quarterly) or R/P1Y (yearly)"
                )));
            }
        }
        if let Some(t) = self.temporal.as_deref().filter(|t| !t.is_empty()) {
            if !valid_interval(t) {
                return Err(Error::bad(format!(
                    "temporal coverage '{t}' is not an ISO 8601 interval of dates: use start/end, e.g. 2020-01-01/2026-06-30"
                )));
            }
        }
        if let Some(l) = self.language.as_deref().filter(|l| !l.is_empty()) {
            let ok = l.split('-').enumerate().all(|(i, p)| {
                (if i == 0 { 2..=3 } else { 2..=8 }).contains(&p.len())
                    && p.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !ok {
                return Err(Error::bad(format!(
                    "language '{l}' is not a language tag (BCP 47) such as es-MX or en"
                )));
            }
        }
        if let Some(t) = &self.title {
            if t.trim().is_empty() {
                return Err(Error::bad("the title cannot be empty"));
            }
        }
        Ok(())
    }

    /// Applies the changes.
    pub fn apply(&self, m: &mut LayerMeta) {
        let opt = |v: &Option<String>, slot: &mut Option<String>| {
            if let Some(v) = v {
                let v = v.trim();
                *slot = (!v.is_empty()).then(|| v.to_string());
            }
        };
        if let Some(t) = &self.title {
            m.title = t.trim().to_string();
        }
        if let Some(d) = &self.description {
            m.description = d.trim().to_string();
        }
        if let Some(k) = &self.keywords {
            m.keywords = k
                .iter()
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
        }
        opt(&self.theme, &mut m.theme);
        if let Some(l) = &self.license {
            m.license = if l.trim().is_empty() {
                DEFAULT_LICENSE.into()
            } else {
                l.trim().to_string()
            };
        }
        opt(&self.contact_name, &mut m.contact_name);
        opt(&self.contact_email, &mut m.contact_email);
        opt(&self.update_frequency, &mut m.update_frequency);
        opt(&self.temporal, &mut m.temporal);
        if let Some(a) = self.access {
            m.access = a;
        }
        if let Some(l) = &self.language {
            m.language = if l.trim().is_empty() {
                default_language()
            } else {
                l.trim().to_string()
            };
        }
    }
}

/// A stored version: its record and where its features are.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub meta: LayerMeta,
    pub fgb_path: PathBuf,
}

/// Where layer versions live. The filesystem store is the one backend today; the trait
/// is the seam for a PostGIS backend: the registry, the HTTP handlers and the command
/// line hold an `Arc<dyn LayerStore>` and call nothing else.
pub trait LayerStore: Send + Sync {
    /// Ids of all layers with a published version.
    fn layer_ids(&self) -> Result<Vec<String>>;
    /// The served version of a layer.
    fn current(&self, id: &str) -> Result<Option<StoredVersion>>;
    /// All kept versions of a layer, oldest first.
    fn versions(&self, id: &str) -> Result<Vec<StoredVersion>>;
    /// Whether the layer was deleted (hidden, recoverable).
    fn is_hidden(&self, id: &str) -> bool;
    /// Start writing a new version: takes the layer's ingest lock.
    fn begin(&self, id: &str) -> Result<Staging>;
    /// Publish a staged version atomically; returns its number.
    fn publish(&self, staging: Staging, meta: LayerMeta) -> Result<u32> {
        self.publish_with(staging, meta, &mut |_, _| Ok(()))
    }
    /// Publishes under the layer's record lock; `refresh` sees the record as it is
    /// at that moment (the current version's, if any) and may update `meta` from it,
    /// or refuse the publish (an error: nothing is published).
    fn publish_with(
        &self,
        staging: Staging,
        meta: LayerMeta,
        refresh: &mut dyn FnMut(&mut LayerMeta, Option<&LayerMeta>) -> Result<()>,
    ) -> Result<u32>;
    /// Replaces the diagnosis stored with a published version (a recomputation); the
    /// features are never touched.
    fn set_diagnosis(&self, id: &str, version: u32, d: crate::diagnose::Diagnosis) -> Result<()>;

    // What the server and the command line need besides reading and publishing:
    // every caller goes through this trait, so a second backend (PostGIS) only has
    // to implement it.

    /// The local folder of this DataHub (its catalogue database, usage counts).
    fn data_dir(&self) -> &Path;
    /// Local scratch space (uploads being received, unpacked archives, download
    /// files), cleaned of what dead processes left by [`LayerStore::clean_stale`].
    fn scratch_dir(&self) -> PathBuf;
    /// Removes scratch left by processes that died; returns how many entries.
    fn clean_stale(&self) -> Result<usize>;
    /// The number of the served version, without reading its record.
    fn current_number(&self, id: &str) -> Result<Option<u32>>;
    /// When the record of a version was last written: a changed stamp means a
    /// changed record (catalogue edits, recomputed diagnoses).
    fn record_stamp(&self, id: &str, version: u32) -> Option<std::time::SystemTime>;
    /// Rewrites the record of a published version under the layer's record lock.
    fn rewrite_record(
        &self,
        id: &str,
        version: u32,
        f: &mut dyn FnMut(&mut LayerMeta),
    ) -> Result<LayerMeta>;
    /// A catalogue edit of the served version's record; the record before and after.
    fn edit_record(&self, id: &str, edit: &RecordEdit) -> Result<(LayerMeta, LayerMeta)>;
    /// Hides a layer (a delete that erases nothing).
    fn hide(&self, id: &str) -> Result<()>;
    /// Brings a hidden layer back.
    fn unhide(&self, id: &str) -> Result<()>;
    /// Layers hidden by a delete.
    fn hidden_ids(&self) -> Result<Vec<String>>;
    /// Publishes kept version `n` again as a new version; its record.
    fn restore(&self, id: &str, n: u32, by: &str) -> Result<LayerMeta>;
    /// The layer's draft (a version stored but not served), if it has one.
    fn draft(&self, id: &str) -> Result<Option<StoredVersion>>;
    /// Layers that have a draft (a new layer may have nothing else).
    fn draft_ids(&self) -> Result<Vec<String>>;
    /// The highest version number ever given to the layer (kept or not: a discarded
    /// draft's number is never given again); 0 for none.
    fn last_number(&self, id: &str) -> Result<u32> {
        Ok(self
            .versions(id)?
            .iter()
            .map(|v| v.meta.version)
            .max()
            .unwrap_or(0))
    }
    /// Makes the draft the served version; 409 when the version it was made on is no
    /// longer the current one, or when the draft is not version `expected` (another
    /// draft replaced the one reviewed). `by` approved it. Its record.
    fn publish_draft(&self, id: &str, by: &str, expected: Option<u32>) -> Result<LayerMeta>;
    /// Removes the draft; its record.
    fn discard_draft(&self, id: &str) -> Result<LayerMeta>;
    /// Brings what this process reads up to date with a shared backend (a replica's
    /// copy of the database); nothing to do for the file store.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Where the layers are kept, for `/health` and logs.
    fn describe_backend(&self) -> String {
        format!("files {}", self.data_dir().display())
    }
}

/// The folder of a version that keeps its source table (joined layers only).
pub const SOURCE_DIR: &str = "source";

/// The source table kept with a version, if any.
pub fn kept_source(v: &StoredVersion) -> Option<PathBuf> {
    let dir = v.fgb_path.parent()?.join(SOURCE_DIR);
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
}

/// Layer ids appear in URLs and paths: lowercase ASCII letters, digits, `-` and `_`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::bad(format!(
            "invalid layer id '{id}': use 1-64 lowercase letters, digits, '-' or '_', \
             starting with a letter or digit (e.g. parques, red-agua_2024)"
        )))
    }
}

/// A version being written: a private dir under `tmp/` and the layer's lock.
/// Dropping it without publishing removes the dir.
pub struct Staging {
    pub dir: PathBuf,
    id: String,
    _lock: File,
    /// The dir's owner lock (see [`hold_dir`]).
    _owner: File,
    published: bool,
    /// What else a backend holds while the version is written (the PostgreSQL
    /// store's advisory lock), released with the staging.
    guard: Option<Box<dyn Send>>,
}

/// The file in a scratch folder under `tmp/` whose lock says its owner is alive.
pub const OWNER_LOCK: &str = ".owner.lock";

/// Marks `dir` (a scratch folder just created under `tmp/`) as in use for as long
/// as the returned file stays open: [`FsStore::clean_stale`] removes only folders
/// whose owner lock nobody holds. A lock, not a process id, because in a container
/// every server is PID 1 and a killed one's folders would look alive forever.
pub fn hold_dir(dir: &Path) -> Result<File> {
    // Locked under a private name, then renamed: a cleaner never sees the lock file
    // unlocked (a folder without one is left alone while young).
    let tmp = dir.join(format!("{OWNER_LOCK}.{}", std::process::id()));
    let p = dir.join(OWNER_LOCK);
    let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.try_lock_exclusive().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
    Ok(f)
}

impl Staging {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn fgb_path(&self) -> PathBuf {
        self.dir.join("layer.fgb")
    }

    /// Makes the staged features durable (before a publish takes any lock).
    fn sync_features(&self) -> Result<()> {
        let fgb = self.fgb_path();
        File::open(&fgb)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&fgb, e))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The file naming a layer's draft version (beside `CURRENT`).
pub const DRAFT_FILE: &str = "DRAFT";
/// The highest version number the layer has given (never reused).
const LAST_FILE: &str = "LAST";

/// A draft may go live only on the version it was made on: otherwise publishing it
/// would silently undo the version published meanwhile.
pub(crate) fn check_draft_base(
    id: &str,
    draft: &LayerMeta,
    current: Option<&LayerMeta>,
) -> Result<()> {
    let base = draft.draft.as_ref().and_then(|d| d.base);
    let now = current.map(|c| c.version);
    if base == now {
        return Ok(());
    }
    let made_on = base.map_or("before the layer had any version".to_string(), |b| {
        format!("on version {b}")
    });
    let replaced = current.map_or("the layer has no published version now".to_string(), |c| {
        format!(
            "version {} is current now (published {} by {})",
            c.version,
            c.created_at,
            c.uploaded_by.as_deref().unwrap_or("?")
        )
    });
    Err(Error::Conflict(format!(
        "the draft of '{id}' (version {}) was made {made_on}, but {replaced}: publishing it \
         would undo that version. Upload the draft's file again (it becomes a new draft \
         compared with the current version), or discard this draft",
        draft.version
    )))
}

/// The draft reviewed was replaced by another before it could be published.
pub(crate) fn changed_draft(id: &str, n: u32) -> Error {
    Error::Conflict(format!(
        "the draft of '{id}' is now version {n}, not the one reviewed: another upload replaced \
         it; review the new draft before publishing it"
    ))
}

/// A draft's record as it goes live: no longer a draft, approved by `by`, dated now
/// (a version's date is when it began to be served: `since=<date>` relies on it).
pub(crate) fn went_live(m: &mut LayerMeta, by: &str) {
    m.draft = None;
    m.approved_by = Some(by.to_string());
    m.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
}

/// Restore for any backend: kept version `n` published again as a new version (its
/// files linked into a staging, the layer's current record kept).
pub(crate) fn restore_in(store: &dyn LayerStore, id: &str, n: u32, by: &str) -> Result<LayerMeta> {
    let staging = store.begin(id)?;
    if store.current(id)?.is_none() {
        return Err(Error::UnknownLayer(id.to_string()));
    }
    let kept = store.versions(id)?;
    let Some(old) = kept
        .iter()
        .find(|v| v.meta.version == n && v.meta.draft.is_none())
        .cloned()
    else {
        return Err(Error::bad(format!(
            "layer '{id}' has no kept version {n}; kept versions: {}",
            kept.iter()
                .map(|k| k.meta.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let target = staging.fgb_path();
    fs::hard_link(&old.fgb_path, &target)
        .or_else(|_| fs::copy(&old.fgb_path, &target).map(|_| ()))
        .map_err(|e| Error::io(&target, e))?;
    if let Some(src) = kept_source(&old) {
        // A joined table keeps its source, so the restored version can follow its
        // zone layer too.
        let to = staging.dir.join(SOURCE_DIR);
        fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        if let Some(name) = src.file_name() {
            let t = to.join(name);
            fs::hard_link(&src, &t)
                .or_else(|_| fs::copy(&src, &t).map(|_| ()))
                .map_err(|e| Error::io(&t, e))?;
        }
    }
    let mut meta = old.meta;
    meta.uploaded_by = Some(by.to_string());
    meta.note = Some(format!("restored from version {n}"));
    meta.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The record is the layer's current one, read under the record lock.
    let mut published = meta.clone();
    let v = store.publish_with(staging, meta, &mut |m, cur| {
        if let Some(cur) = cur {
            cur.copy_record_to(m);
        }
        m.refresh_diagnosis_metadata();
        published = m.clone();
        Ok(())
    })?;
    published.version = v;
    Ok(published)
}

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// How many versions of each layer to keep (the current one included).
    pub keep_versions: usize,
}

impl FsStore {
    pub fn open(root: impl Into<PathBuf>, keep_versions: usize) -> Result<Self> {
        let root = root.into();
        for d in ["layers", "locks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        Ok(FsStore {
            root,
            keep_versions: keep_versions.max(1),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// When the record of a version was last written (published or rewritten).
    pub fn meta_mtime(&self, id: &str, version: u32) -> Option<std::time::SystemTime> {
        fs::metadata(
            self.layer_dir(id)
                .join(format!("v{version}"))
                .join("meta.json"),
        )
        .and_then(|m| m.modified())
        .ok()
    }

    /// Rewrites the record of a published version in place (atomically): catalogue
    /// edits and recomputed diagnoses. The features are never touched. The record is
    /// read and written under the layer's record lock.
    pub fn rewrite_meta(
        &self,
        id: &str,
        version: u32,
        f: impl FnOnce(&mut LayerMeta),
    ) -> Result<LayerMeta> {
        let _lock = self.lock_record(id)?;
        self.rewrite_meta_locked(id, version, f)
    }

    fn rewrite_meta_locked(
        &self,
        id: &str,
        version: u32,
        f: impl FnOnce(&mut LayerMeta),
    ) -> Result<LayerMeta> {
        let mut v = self.read_version(id, version)?;
        f(&mut v.meta);
        let dir = self.layer_dir(id).join(format!("v{version}"));
        let json =
            serde_json::to_vec_pretty(&v.meta).map_err(|e| Error::Internal(e.to_string()))?;
        // Readers see the old record or the new one, never half of either.
        write_atomically(&dir, "meta.json", &json)?;
        Ok(v.meta)
    }

    /// The layer's record lock (see the module doc): waits up to 30 s, since
    /// whoever holds it holds it for a moment.
    pub fn lock_record(&self, id: &str) -> Result<File> {
        validate_id(id)?;
        let p = self.root.join("locks").join(format!("{id}.record.lock"));
        let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
        let t0 = std::time::Instant::now();
        while f.try_lock_exclusive().is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(Error::Busy(id.to_string()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(f)
    }

    /// Hides a layer (a delete that erases nothing): it is no longer listed or served,
    /// and its versions stay on disk until [`FsStore::unhide`].
    pub fn hide(&self, id: &str) -> Result<()> {
        let _lock = self.lock_record(id)?;
        if self.current_number(id)?.is_none() {
            return Err(Error::UnknownLayer(id.to_string()));
        }
        let p = self.layer_dir(id).join("HIDDEN");
        File::create(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&p, e))?;
        fsync_dir(&self.layer_dir(id))
    }

    /// Brings a hidden layer back as it was.
    pub fn unhide(&self, id: &str) -> Result<()> {
        let _lock = self.lock_record(id)?;
        if !self.is_hidden(id) {
            return Err(Error::bad(format!("layer '{id}' is not deleted")));
        }
        let p = self.layer_dir(id).join("HIDDEN");
        fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        fsync_dir(&self.layer_dir(id))
    }

    /// Layers hidden by a delete, for admins who may restore them.
    pub fn hidden_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("layers");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
        {
            if let Some(name) = entry.file_name().to_str() {
                if validate_id(name).is_ok() && self.is_hidden(name) {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Publishes kept version `n` again as a new version (history stays linear: a
    /// rollback is one more version, recorded like an upload). The features are
    /// hard-linked, not copied (versions are immutable); the catalogue record is the
    /// layer's current one.
    pub fn restore(&self, id: &str, n: u32, by: &str) -> Result<LayerMeta> {
        restore_in(self, id, n, by)
    }

    /// Applies a catalogue edit to the served version's record (the diagnosis's
    /// metadata checks follow it); returns the record before and after.
    pub fn edit_record(&self, id: &str, edit: &RecordEdit) -> Result<(LayerMeta, LayerMeta)> {
        // Read and written under one lock: an edit made meanwhile elsewhere (the
        // CLI, another request, a publish) is the base of this one, never lost.
        let _lock = self.lock_record(id)?;
        let before = self
            .current(id)?
            .ok_or_else(|| Error::UnknownLayer(id.to_string()))?
            .meta;
        let after = self.rewrite_meta_locked(id, before.version, |m| {
            edit.apply(m);
            m.refresh_diagnosis_metadata();
        })?;
        Ok((before, after))
    }

    /// Scratch space for an ingest (unpacked archives, transcoded CSVs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
    }

    /// Removes what killed processes left under `tmp/`: folders whose owner lock
    /// ([`hold_dir`]) nobody holds; a folder without one (being created right now, or
    /// left by an older DataHub) and loose files only when older than an hour.
    pub fn clean_stale(&self) -> Result<usize> {
        let tmp = self.tmp_dir();
        let mut removed = 0;
        let entries = fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let old = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600))
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let (stale, _held) = if is_dir {
                match File::open(path.join(OWNER_LOCK)) {
                    // Taken: nobody holds it. Kept locked while the folder goes.
                    Ok(f) => match f.try_lock_exclusive() {
                        Ok(()) => (true, Some(f)),
                        Err(_) => (false, None),
                    },
                    Err(_) => (old(&path), None),
                }
            } else {
                (old(&path), None)
            };
            if stale {
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn version_numbers(&self, id: &str) -> Result<Vec<u32>> {
        let dir = self.layer_dir(id);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix('v'))
                .and_then(|s| s.parse().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn read_version(&self, id: &str, n: u32) -> Result<StoredVersion> {
        let dir = self.layer_dir(id).join(format!("v{n}"));
        let meta_path = dir.join("meta.json");
        let text = fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: LayerMeta = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", meta_path.display())))?;
        Ok(StoredVersion {
            meta,
            fgb_path: dir.join("layer.fgb"),
        })
    }

    /// The version number `DRAFT` points at.
    pub fn draft_number(&self, id: &str) -> Result<Option<u32>> {
        self.pointer(id, DRAFT_FILE)
    }

    /// The version number a pointer file (`CURRENT`, `DRAFT`) of the layer holds.
    fn pointer(&self, id: &str, name: &str) -> Result<Option<u32>> {
        let p = self.layer_dir(id).join(name);
        match fs::read_to_string(&p) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::Corrupt(format!("{}: not a version number", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Retention: the newest `keep_versions` published versions; never the current
    /// one, never the draft.
    fn retain(&self, id: &str) -> Result<()> {
        let draft = self.draft_number(id)?;
        let current = self.current_number(id)?;
        let all: Vec<u32> = self
            .version_numbers(id)?
            .into_iter()
            .filter(|n| Some(*n) != draft)
            .collect();
        if all.len() > self.keep_versions {
            for old in &all[..all.len() - self.keep_versions] {
                if Some(*old) == current {
                    continue;
                }
                let p = self.layer_dir(id).join(format!("v{old}"));
                if let Err(e) = fs::remove_dir_all(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove old version");
                }
            }
        }
        Ok(())
    }

    /// The version number `CURRENT` points at.
    pub fn current_number(&self, id: &str) -> Result<Option<u32>> {
        self.pointer(id, "CURRENT")
    }
}

/// Replaces `dir/name` with `bytes` through a temporary file of this process and
/// moment (never a name another writer shares), fsynced, renamed, dir fsynced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|_| fs::rename(&tmp, dir.join(name))) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl LayerStore for FsStore {
    fn data_dir(&self) -> &Path {
        &self.root
    }

    fn scratch_dir(&self) -> PathBuf {
        FsStore::tmp_dir(self)
    }

    fn clean_stale(&self) -> Result<usize> {
        FsStore::clean_stale(self)
    }

    fn current_number(&self, id: &str) -> Result<Option<u32>> {
        FsStore::current_number(self, id)
    }

    fn record_stamp(&self, id: &str, version: u32) -> Option<std::time::SystemTime> {
        self.meta_mtime(id, version)
    }

    fn rewrite_record(
        &self,
        id: &str,
        version: u32,
        f: &mut dyn FnMut(&mut LayerMeta),
    ) -> Result<LayerMeta> {
        self.rewrite_meta(id, version, f)
    }

    fn edit_record(&self, id: &str, edit: &RecordEdit) -> Result<(LayerMeta, LayerMeta)> {
        FsStore::edit_record(self, id, edit)
    }

    fn hide(&self, id: &str) -> Result<()> {
        FsStore::hide(self, id)
    }

    fn unhide(&self, id: &str) -> Result<()> {
        FsStore::unhide(self, id)
    }

    fn hidden_ids(&self) -> Result<Vec<String>> {
        FsStore::hidden_ids(self)
    }

    fn restore(&self, id: &str, n: u32, by: &str) -> Result<LayerMeta> {
        FsStore::restore(self, id, n, by)
    }

    fn layer_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("layers");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
        {
            if let Some(name) = entry.file_name().to_str() {
                // A broken CURRENT still names a layer (its readers report why).
                if validate_id(name).is_ok()
                    && !matches!(self.current_number(name), Ok(None))
                    && !self.is_hidden(name)
                {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn current(&self, id: &str) -> Result<Option<StoredVersion>> {
        validate_id(id)?;
        match self.current_number(id)? {
            Some(n) => self.read_version(id, n).map(Some),
            None => Ok(None),
        }
    }

    fn versions(&self, id: &str) -> Result<Vec<StoredVersion>> {
        validate_id(id)?;
        let current = self.current_number(id)?;
        let draft = self.draft_number(id)?;
        self.version_numbers(id)?
            .into_iter()
            // A version dir newer than CURRENT is one whose publish was interrupted
            // between the two renames: complete, but never served (unless it is the
            // draft).
            .filter(|n| current.is_some_and(|c| *n <= c) || Some(*n) == draft)
            .map(|n| self.read_version(id, n))
            .collect()
    }

    fn set_diagnosis(&self, id: &str, version: u32, d: crate::diagnose::Diagnosis) -> Result<()> {
        self.rewrite_meta(id, version, |m| m.diagnosis = Some(d))
            .map(|_| ())
    }

    fn is_hidden(&self, id: &str) -> bool {
        self.layer_dir(id).join("HIDDEN").exists()
    }

    fn begin(&self, id: &str) -> Result<Staging> {
        validate_id(id)?;
        let lock_path = self.root.join("locks").join(format!("{id}.lock"));
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        // Retry briefly: a child process forked by another thread may hold a copy of a
        // just-released lock descriptor until it execs.
        let mut tries = 0;
        while lock.try_lock_exclusive().is_err() {
            tries += 1;
            if tries > 20 {
                return Err(Error::Busy(id.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = self
            .tmp_dir()
            .join(format!("{id}.{}.{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let owner = hold_dir(&dir)?;
        Ok(Staging {
            dir,
            id: id.to_string(),
            _lock: lock,
            _owner: owner,
            published: false,
            guard: None,
        })
    }

    fn publish_with(
        &self,
        mut staging: Staging,
        mut meta: LayerMeta,
        refresh: &mut dyn FnMut(&mut LayerMeta, Option<&LayerMeta>) -> Result<()>,
    ) -> Result<u32> {
        let id = staging.id.clone();
        // The features are made durable before the record lock is taken: it is held
        // only for the record and the renames, a moment even for a huge layer.
        staging.sync_features()?;
        let record = self.lock_record(&id)?;
        // The record as it is now (an edit may have come while the data were read).
        let current = self.current(&id)?.map(|v| v.meta);
        refresh(&mut meta, current.as_ref())?;
        // A draft is made on the version current now (checked when it is published).
        if let Some(d) = meta.draft.as_mut() {
            d.base = current.as_ref().map(|c| c.version);
        }
        let layer_dir = self.layer_dir(&id);
        fs::create_dir_all(&layer_dir).map_err(|e| Error::io(&layer_dir, e))?;
        // Never a number given before (a discarded draft's): caches, replicas and
        // clients know versions by number.
        let n = LayerStore::last_number(self, &id)? + 1;
        meta.version = n;
        let meta_path = staging.dir.join("meta.json");
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        let mut f = File::create(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&meta_path, e))?;
        // The owner lock stays held (its file is open) but leaves the folder, which
        // becomes the version.
        let owner = staging.dir.join(OWNER_LOCK);
        fs::remove_file(&owner).map_err(|e| Error::io(&owner, e))?;
        fsync_dir(&staging.dir)?;

        let target = layer_dir.join(format!("v{n}"));
        fs::rename(&staging.dir, &target).map_err(|e| Error::io(&target, e))?;
        staging.published = true;
        fsync_dir(&layer_dir)?;

        write_atomically(&layer_dir, LAST_FILE, format!("{n}\n").as_bytes())?;
        if meta.draft.is_some() {
            // One draft per layer: a new one replaces the one before.
            let before = self.draft_number(&id)?;
            write_atomically(&layer_dir, DRAFT_FILE, format!("{n}\n").as_bytes())?;
            if let Some(b) = before.filter(|b| *b != n) {
                let _ = fs::remove_dir_all(layer_dir.join(format!("v{b}")));
            }
        } else {
            write_atomically(&layer_dir, "CURRENT", format!("{n}\n").as_bytes())?;
        }
        drop(record);
        // Published: retention's own trouble is logged, not reported as a failed publish.
        if let Err(e) = self.retain(&id) {
            tracing::warn!(layer = %id, error = %e, "old versions not removed");
        }
        Ok(n)
    }

    fn draft(&self, id: &str) -> Result<Option<StoredVersion>> {
        validate_id(id)?;
        match self.draft_number(id)? {
            Some(n) => self.read_version(id, n).map(Some),
            None => Ok(None),
        }
    }

    fn last_number(&self, id: &str) -> Result<u32> {
        validate_id(id)?;
        Ok(self
            .version_numbers(id)?
            .last()
            .copied()
            .unwrap_or(0)
            .max(self.pointer(id, LAST_FILE)?.unwrap_or(0)))
    }

    fn draft_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("layers");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
        {
            if let Some(name) = entry.file_name().to_str() {
                if validate_id(name).is_ok() && entry.path().join(DRAFT_FILE).exists() {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn publish_draft(&self, id: &str, by: &str, expected: Option<u32>) -> Result<LayerMeta> {
        let record = self.lock_record(id)?;
        let n = self
            .draft_number(id)?
            .ok_or_else(|| Error::bad(format!("layer '{id}' has no draft")))?;
        let draft = self.read_version(id, n)?.meta;
        check_draft_base(id, &draft, self.current(id)?.map(|v| v.meta).as_ref())?;
        if expected.is_some_and(|e| e != n) {
            return Err(changed_draft(id, n));
        }
        let layer_dir = self.layer_dir(id);
        let current = self.current(id)?.map(|v| v.meta);
        let base = draft.draft.as_ref().and_then(|d| d.base_record.clone());
        let mut merged = draft.clone();
        if let (Some(base), Some(cur)) = (&base, &current) {
            merge_record(&mut merged, base, cur)?;
        }
        let m = self.rewrite_meta_locked(id, n, |m| {
            *m = merged;
            went_live(m, by);
        })?;
        write_atomically(&layer_dir, "CURRENT", format!("{n}\n").as_bytes())?;
        let _ = fs::remove_file(layer_dir.join(DRAFT_FILE));
        fsync_dir(&layer_dir)?;
        drop(record);
        if let Err(e) = self.retain(id) {
            tracing::warn!(layer = %id, error = %e, "old versions not removed");
        }
        Ok(m)
    }

    fn discard_draft(&self, id: &str) -> Result<LayerMeta> {
        let _record = self.lock_record(id)?;
        let n = self
            .draft_number(id)?
            .ok_or_else(|| Error::bad(format!("layer '{id}' has no draft")))?;
        let m = self.read_version(id, n)?.meta;
        let layer_dir = self.layer_dir(id);
        // The pointer first: a crash in between leaves a folder no one serves.
        let f = layer_dir.join(DRAFT_FILE);
        fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
        fsync_dir(&layer_dir)?;
        let _ = fs::remove_dir_all(layer_dir.join(format!("v{n}")));
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_parse() {
        assert_eq!(frequency_days("R/P1D"), Some(1.0));
        assert_eq!(frequency_days("R/P1W"), Some(7.0));
        assert_eq!(frequency_days("P1M"), Some(30.44));
        assert_eq!(frequency_days("R12/P1Y"), Some(365.25));
        assert_eq!(frequency_days("R/PT12H"), Some(0.5));
        for bad in ["", "monthly", "R/P", "P1X", "PM1", "P1D1Y", "R/1M"] {
            assert_eq!(frequency_days(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("parques").is_ok());
        assert!(validate_id("red-agua_2024").is_ok());
        for bad in ["", "../x", "Parques", "a b", "-x", "colonias/centro"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failed_staging_leaves_nothing_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), 3).unwrap();
        let s = store.begin("parques").unwrap();
        assert!(s.dir.exists());
        assert!(matches!(store.begin("parques"), Err(Error::Busy(_))));
        let d = s.dir.clone();
        drop(s);
        assert!(!d.exists());
        assert!(store.begin("parques").is_ok());
        assert!(store.layer_ids().unwrap().is_empty());
    }
}
