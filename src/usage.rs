//! How each layer is used: requests per layer and day, by kind (tile, items, download,
//! analysis) and audience (anonymous or a ministry), so the quality report can say
//! which data are used and which are not.
//!
//! Counted by a middleware from the request path after a successful response (the
//! handlers stay unaware of it); kept in memory and written to `usage.json` in the data
//! folder (atomically, when changed) by the server's refresh loop and at shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// day (YYYY-MM-DD) → layer → kind → audience → requests.
type Counts = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>>;

#[derive(Default, Serialize, Deserialize)]
struct File {
    days: Counts,
}

/// One layer's totals: by kind, by audience, all, last day used.
type Totals = (BTreeMap<String, u64>, BTreeMap<String, u64>, u64, String);

pub struct Usage {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// With several replicas: where the counts of all of them are added up.
    shared: Option<Arc<dyn SharedUsage>>,
}

/// One count: day, layer, kind, audience, requests.
pub type Row = (String, String, String, String, i64);

/// Usage counts kept in a database shared by replicas (PostgreSQL): each replica adds
/// what it counted since its last flush and reads back everyone's totals.
pub trait SharedUsage: Send + Sync {
    /// Adds these counts, and forgets days before `oldest`.
    fn add_usage(&self, rows: Vec<Row>, oldest: &str) -> layers::Result<()>;
    /// Every count from `since` on.
    fn usage_since(&self, since: &str) -> layers::Result<Vec<Row>>;
}

struct Inner {
    file: File,
    /// Counted since the last flush to the shared store (unused without one).
    pending: Counts,
    /// Whether the shared store's whole history was read once (then only recent days).
    read_back: bool,
    dirty: bool,
    /// Today as (days since the epoch, YYYY-MM-DD): formatted once a day, not per
    /// request (every tile request is counted).
    today: (u64, String),
}

/// Days of counts kept in `usage.json`.
pub const KEEP_DAYS: i64 = 400;

pub const KINDS: [&str; 4] = ["tile", "items", "download", "analysis"];

/// Before authentication exists every request is anonymous; the catalogue issue's
/// tokens will name the ministry.
pub const ANONYMOUS: &str = "anonymous";

impl Usage {
    /// Loads `usage.json` from the data folder (missing or unreadable: start empty).
    pub fn open(data: &Path) -> Usage {
        let path = data.join("usage.json");
        let file = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Usage {
            path,
            inner: Mutex::new(Inner {
                file,
                pending: Counts::new(),
                read_back: false,
                dirty: false,
                today: (u64::MAX, String::new()),
            }),
            shared: None,
        }
    }

    /// Counts added up across replicas in `shared` (flushed there by the refresh loop).
    pub fn with_shared(mut self, shared: Arc<dyn SharedUsage>) -> Usage {
        self.shared = Some(shared);
        self
    }

    pub fn record(&self, layer: &str, kind: &str, audience: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.today.0 != now {
            g.today = (now, chrono::Utc::now().format("%Y-%m-%d").to_string());
        }
        g.dirty = true;
        if self.shared.is_some() {
            let Inner { pending, today, .. } = &mut *g;
            bump(pending, &today.1, layer, kind, audience);
        }
        let Inner { file, today, .. } = &mut *g;
        // The usual case, an existing counter: found without allocating.
        if let Some(n) = file
            .days
            .get_mut(&today.1)
            .and_then(|l| l.get_mut(layer))
            .and_then(|k| k.get_mut(kind))
            .and_then(|a| a.get_mut(audience))
        {
            *n += 1;
            return;
        }
        *file
            .days
            .entry(today.1.clone())
            .or_default()
            .entry(layer.to_string())
            .or_default()
            .entry(kind.to_string())
            .or_default()
            .entry(audience.to_string())
            .or_default() += 1;
    }

    /// Writes the counts if they changed (temp file + rename: never half a file); with
    /// a shared store, adds this replica's new counts there and reads everyone's back.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Some(shared) = &self.shared {
            self.flush_shared(shared.as_ref())?;
        }
        let bytes = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            // With a shared store, the file is this replica's copy of everyone's
            // counts (what the command line's reports read), written when they moved.
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            // Days older than the retention go (reports look back 30 days, the
            // daily view a year).
            let oldest = (chrono::Utc::now() - chrono::Duration::days(KEEP_DAYS))
                .format("%Y-%m-%d")
                .to_string();
            g.file.days = g.file.days.split_off(&oldest);
            serde_json::to_vec(&g.file).map_err(std::io::Error::other)?
        };
        // Unique per process: a CLI command never shares the server's temp name.
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }

    fn flush_shared(&self, shared: &dyn SharedUsage) -> std::io::Result<()> {
        let oldest = (chrono::Utc::now() - chrono::Duration::days(KEEP_DAYS))
            .format("%Y-%m-%d")
            .to_string();
        let pending =
            std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).pending);
        let rows = flatten(&pending);
        if let Err(e) = shared.add_usage(rows, &oldest) {
            // Kept for the next flush (the database may be back by then).
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            for (day, layer, kind, aud, n) in flatten(&pending) {
                add(&mut g.pending, &day, &layer, &kind, &aud, n.max(0) as u64);
            }
            return Err(std::io::Error::other(e.to_string()));
        }
        // Everything once; then only the days other replicas can still be adding to
        // (today, and yesterday around midnight): this runs every refresh.
        let since = if self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read_back
        {
            (chrono::Utc::now() - chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string()
        } else {
            oldest.clone()
        };
        let recent = shared
            .usage_since(&since)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut days = Counts::new();
        // What was counted here meanwhile is not in the database yet: added on top.
        for (day, layer, kind, aud, n) in recent.into_iter().chain(flatten(&g.pending)) {
            add(&mut days, &day, &layer, &kind, &aud, n.max(0) as u64);
        }
        let mut kept = std::mem::take(&mut g.file.days).split_off(&oldest);
        let before = kept.split_off(&since);
        if before != days || !g.read_back {
            g.dirty = true;
        }
        kept.extend(days);
        g.file.days = kept;
        g.read_back = true;
        Ok(())
    }

    /// Per layer, the totals of the last `days` days (today included): by kind, by
    /// audience, and the last day it was used.
    pub fn summary(&self, days: u32) -> BTreeMap<String, Value> {
        let since = (chrono::Utc::now() - chrono::Duration::days(i64::from(days.max(1)) - 1))
            .format("%Y-%m-%d")
            .to_string();
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, Totals> = BTreeMap::new();
        for (day, layers) in g.file.days.range(since..) {
            for (layer, kinds) in layers {
                let e = out.entry(layer.clone()).or_default();
                for (kind, aud) in kinds {
                    for (a, n) in aud {
                        *e.0.entry(kind.clone()).or_default() += n;
                        *e.1.entry(a.clone()).or_default() += n;
                        e.2 += n;
                    }
                }
                e.3 = day.clone();
            }
        }
        out.into_iter()
            .map(|(l, (k, a, total, last))| {
                (l, json!({"days": days, "total": total, "by_kind": k, "by_audience": a, "last_used": last}))
            })
            .collect()
    }

    /// Day-by-day counts of the last `days` days.
    pub fn daily(&self, days: u32) -> Value {
        let since = (chrono::Utc::now() - chrono::Duration::days(i64::from(days.max(1)) - 1))
            .format("%Y-%m-%d")
            .to_string();
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let sel: Counts = g
            .file
            .days
            .range(since..)
            .map(|(d, v)| (d.clone(), v.clone()))
            .collect();
        json!(sel)
    }
}

fn bump(c: &mut Counts, day: &str, layer: &str, kind: &str, audience: &str) {
    add(c, day, layer, kind, audience, 1);
}

fn add(c: &mut Counts, day: &str, layer: &str, kind: &str, audience: &str, n: u64) {
    *c.entry(day.to_string())
        .or_default()
        .entry(layer.to_string())
        .or_default()
        .entry(kind.to_string())
        .or_default()
        .entry(audience.to_string())
        .or_default() += n;
}

fn flatten(c: &Counts) -> Vec<Row> {
    let mut out = Vec::new();
    for (day, layers) in c {
        for (layer, kinds) in layers {
            for (kind, auds) in kinds {
                for (aud, n) in auds {
                    out.push((
                        day.clone(),
                        layer.clone(),
                        kind.clone(),
                        aud.clone(),
                        *n as i64,
                    ));
                }
            }
        }
    }
    out
}

/// Which layers a request path uses, and how.
pub fn classify(path: &str, query: Option<&str>) -> Vec<(String, &'static str)> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let q = || -> Vec<(String, String)> {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    match seg.as_slice() {
        ["tiles", ids, _z, _x, _y] => ids.split(',').map(|id| (id.to_string(), "tile")).collect(),
        ["collections", id, "items"] => {
            let download = q()
                .iter()
                .any(|(k, v)| k == "f" && crate::download::DownloadFormat::parse(v).is_some());
            vec![(id.to_string(), if download { "download" } else { "items" })]
        }
        ["collections", id, "items", _] => vec![(id.to_string(), "items")],
        ["api", "analysis", "tiles", zones, layer, ..] => vec![
            (zones.to_string(), "analysis"),
            (layer.to_string(), "analysis"),
        ],
        ["api", "analysis", _] => q()
            .into_iter()
            .filter(|(k, _)| k == "zones" || k == "layer")
            .map(|(_, v)| (v, "analysis"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The middleware: counts successful requests (and 304s) against the layers they use,
/// under each layer's id as loaded (a percent-encoded or unknown name in the path is
/// never a new key: the counts cannot be grown by inventing paths).
pub async fn track(
    State((usage, registry)): State<(Arc<Usage>, Arc<layers::index::Registry>)>,
    req: Request,
    next: Next,
) -> Response {
    let uses = classify(req.uri().path(), req.uri().query());
    let resp = next.run(req).await;
    let s = resp.status().as_u16();
    if !uses.is_empty() && (s < 400) {
        for (layer, kind) in uses {
            let id = percent_encoding::percent_decode_str(&layer).decode_utf8_lossy();
            if let Some(l) = registry.get(&id) {
                usage.record(&l.meta.id, kind, ANONYMOUS);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(
            classify("/tiles/a,b/3/1/2.mvt", None),
            vec![("a".into(), "tile"), ("b".into(), "tile")]
        );
        assert_eq!(classify("/tiles/a.json", None), vec![]);
        assert_eq!(
            classify("/collections/a/items", Some("limit=5")),
            vec![("a".into(), "items")]
        );
        assert_eq!(
            classify("/collections/a/items", Some("f=gpkg")),
            vec![("a".into(), "download")]
        );
        assert_eq!(
            classify("/collections/a/items/7", None),
            vec![("a".into(), "items")]
        );
        assert_eq!(
            classify(
                "/api/analysis/aggregate",
                Some("zones=z&layer=l&stat=count")
            ),
            vec![("z".into(), "analysis"), ("l".into(), "analysis")]
        );
        assert_eq!(classify("/collections/a", None), vec![]);
    }

    #[test]
    fn counts_persist() {
        let dir = tempfile::tempdir().unwrap();
        let u = Usage::open(dir.path());
        u.record("a", "tile", ANONYMOUS);
        u.record("a", "tile", ANONYMOUS);
        u.record("a", "download", ANONYMOUS);
        u.flush().unwrap();
        let again = Usage::open(dir.path());
        let s = again.summary(30);
        assert_eq!(s["a"]["total"], 3);
        assert_eq!(s["a"]["by_kind"]["tile"], 2);
        assert_eq!(s["a"]["by_audience"]["anonymous"], 3);
    }
}
