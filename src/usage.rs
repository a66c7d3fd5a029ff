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
}

struct Inner {
    file: File,
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
                dirty: false,
                today: (u64::MAX, String::new()),
            }),
        }
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

    /// Writes the counts if they changed (temp file + rename: never half a file).
    pub fn flush(&self) -> std::io::Result<()> {
        let bytes = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
