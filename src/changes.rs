//! Change over time, as the HTTP API and `datahub diff` show it: which two versions
//! to compare (numbers, or `since` a version or a date), kept versions loaded and
//! diffs computed once for all the pages a client reads, the summary and GeoJSON
//! documents of a diff, and one feature's history across the kept versions.
//! The comparison itself is `layers::diff`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use layers::diff::{self, ChangeKind, Diff, IdentityKind};
use layers::index::LoadedLayer;
use layers::store::{LayerMeta, LayerStore};
use layers::{Error, Result};
use serde_json::{json, Value};

/// Loaded versions and computed diffs kept for the next request (a client pages
/// through a diff; the map and /publicar ask for the same one).
#[derive(Default)]
pub struct Changes {
    versions: Mutex<VecDeque<Arc<LoadedLayer>>>,
    diffs: Mutex<VecDeque<Arc<Computed>>>,
}

/// How many loaded versions and diffs are kept (each holds an mmap and an id list).
const KEEP_VERSIONS: usize = 6;
const KEEP_DIFFS: usize = 8;
/// And the diffs together in at most this much memory (a diff against nothing of a
/// 1 M-feature layer holds over 100 MB): the oldest go first, a bigger one is not
/// kept.
const DIFF_CACHE_BYTES: usize = 256 << 20;

/// A diff with the versions it points into.
pub struct Computed {
    pub layer: String,
    /// None: compared against nothing (the layer did not exist yet).
    pub old: Option<Arc<LoadedLayer>>,
    pub new: Arc<LoadedLayer>,
    pub key: Vec<String>,
    pub diff: Diff,
}

impl Computed {
    pub fn from(&self) -> u32 {
        self.old.as_ref().map_or(0, |o| o.meta.version)
    }
    pub fn to(&self) -> u32 {
        self.new.meta.version
    }
}

impl Changes {
    /// Version `n` of `id`: `current` when it is that version, else a kept version
    /// read from the store (410 when retention dropped it).
    pub fn version(
        &self,
        store: &dyn LayerStore,
        current: Option<&Arc<LoadedLayer>>,
        id: &str,
        n: u32,
    ) -> Result<Arc<LoadedLayer>> {
        if let Some(c) = current.filter(|c| c.meta.version == n && c.meta.id == id) {
            return Ok(c.clone());
        }
        {
            let mut kept = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            // Only while its record is the one it was loaded with (a draft that went
            // live has a new one).
            if let Some(i) = kept.iter().position(|l| {
                l.meta.id == id
                    && l.meta.version == n
                    && store.record_stamp(id, n) == l.record_stamp()
            }) {
                let l = kept
                    .remove(i)
                    .ok_or_else(|| Error::Internal("cache".into()))?;
                kept.push_back(l.clone());
                return Ok(l);
            }
        }
        let all = store.versions(id)?;
        let Some(v) = all.iter().find(|v| v.meta.version == n) else {
            // Only published versions are named: a draft's number is its ministry's.
            let kept: Vec<u32> = all
                .iter()
                .filter(|v| v.meta.draft.is_none())
                .map(|v| v.meta.version)
                .collect();
            return Err(not_kept(id, n, &kept));
        };
        let l = Arc::new(LoadedLayer::load_for_scan(v)?.0);
        let mut kept = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        kept.push_back(l.clone());
        while kept.len() > KEEP_VERSIONS {
            kept.pop_front();
        }
        Ok(l)
    }

    /// The diff of `id` from version `from` (0: nothing) to `to`, computed once.
    pub fn diff(
        &self,
        store: &dyn LayerStore,
        current: Option<&Arc<LoadedLayer>>,
        id: &str,
        from: u32,
        to: u32,
        key: &[String],
    ) -> Result<Arc<Computed>> {
        // Against nothing every feature is added, whatever the key.
        let key = if from == 0 { &[][..] } else { key };
        {
            let mut cache = self.diffs.lock().unwrap_or_else(|p| p.into_inner());
            let fresh =
                |l: &LoadedLayer| store.record_stamp(id, l.meta.version) == l.record_stamp();
            if let Some(i) = cache.iter().position(|c| {
                c.layer == id
                    && c.from() == from
                    && c.to() == to
                    && c.key == key
                    && fresh(&c.new)
                    && c.old.as_deref().is_none_or(fresh)
            }) {
                let c = cache
                    .remove(i)
                    .ok_or_else(|| Error::Internal("cache".into()))?;
                cache.push_back(c.clone());
                return Ok(c);
            }
        }
        let new = self.version(store, current, id, to)?;
        let old = match from {
            0 => None,
            n => Some(self.version(store, current, id, n)?),
        };
        let t0 = std::time::Instant::now();
        // Stopped with the request (budget spent, client gone), on every thread.
        let d = diff::diff_until(old.as_deref(), &new, key, &crate::limits::stopper())?;
        tracing::debug!(layer = %id, from, to, changes = d.changes.len(), ms = t0.elapsed().as_millis() as u64, "diff computed");
        let c = Arc::new(Computed {
            layer: id.to_string(),
            old,
            new,
            key: key.to_vec(),
            diff: d,
        });
        let mut cache = self.diffs.lock().unwrap_or_else(|p| p.into_inner());
        keep_bounded(
            &mut cache,
            c.clone(),
            |c| c.diff.heap_bytes(),
            KEEP_DIFFS,
            DIFF_CACHE_BYTES,
        );
        Ok(c)
    }
}

/// Adds `item` as the newest, then drops the oldest until at most `max_items` are
/// kept in at most `max_bytes`; an item bigger than `max_bytes` alone is not kept.
fn keep_bounded<T>(
    cache: &mut VecDeque<T>,
    item: T,
    bytes: impl Fn(&T) -> usize,
    max_items: usize,
    max_bytes: usize,
) {
    if bytes(&item) > max_bytes {
        return;
    }
    cache.push_back(item);
    let mut total: usize = cache.iter().map(&bytes).sum();
    while cache.len() > max_items || total > max_bytes {
        match cache.pop_front() {
            Some(old) => total -= bytes(&old),
            None => break,
        }
    }
}

fn not_kept(id: &str, n: u32, kept: &[u32]) -> Error {
    let list = kept
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Error::Gone(format!(
        "version {n} of '{id}' is not kept (versions kept: {list}); compare kept versions, \
         or download the layer whole and follow its changes from the current version"
    ))
}

/// The published versions of a layer (drafts left out), oldest first.
pub fn published(store: &dyn LayerStore, id: &str) -> Result<Vec<LayerMeta>> {
    Ok(store
        .versions(id)?
        .into_iter()
        .map(|v| v.meta)
        .filter(|m| m.draft.is_none())
        .collect())
}

/// The version `since` names: a number, or the version that was current at a date
/// or instant (`2026-11-01`, `2026-11-01T08:00:00Z`); 0 when the layer did not exist
/// yet then (everything is new since).
pub fn resolve_since(id: &str, versions: &[LayerMeta], since: &str) -> Result<u32> {
    let since = since.trim();
    if let Ok(n) = since.parse::<u32>() {
        return Ok(n);
    }
    let t = parse_instant(since).ok_or_else(|| {
        Error::bad(format!(
            "since='{since}' is neither a version number nor a date (2026-11-01) or an RFC 3339 \
             instant (2026-11-01T08:00:00Z)"
        ))
    })?;
    let at = |m: &LayerMeta| parse_instant(&m.created_at);
    if let Some(m) = versions
        .iter()
        .filter(|m| at(m).is_some_and(|c| c <= t))
        .max_by_key(|m| m.version)
    {
        return Ok(m.version);
    }
    // Before every kept version: if the first version is kept, the layer did not
    // exist then and everything is new; otherwise that state is gone.
    if versions.first().is_some_and(|m| m.version == 1) {
        return Ok(0);
    }
    Err(Error::Gone(format!(
        "'{id}' had a version at {since} that is no longer kept (the oldest kept is from {}); \
         download the layer whole and follow its changes from the current version",
        versions.first().map_or("—", |m| m.created_at.as_str())
    )))
}

fn parse_instant(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    // A bare date means its end: "since 2026-11-01" compares with the state at the
    // close of that day, in Monterrey's offset (UTC−6, no daylight saving since 2022).
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let end = d.and_hms_opt(23, 59, 59)?;
    Some(chrono::DateTime::from_naive_utc_and_offset(
        end + chrono::Duration::hours(6),
        chrono::Utc,
    ))
}

/// The summary of a diff (counts, schema, identity) with links to its GeoJSON.
pub fn summary(c: &Computed, base: &str) -> Value {
    let d = &c.diff;
    let ver = |m: Option<&LayerMeta>| {
        m.map(|m| {
            json!({
                "version": m.version,
                "created_at": m.created_at,
                "uploaded_by": m.uploaded_by,
                "note": m.note,
                "feature_count": m.feature_count,
                "draft": m.draft.is_some(),
            })
        })
    };
    let q = query(c);
    let url = format!("{base}/collections/{}/changes", c.layer);
    json!({
        "layer": c.layer,
        "from": ver(c.old.as_ref().map(|o| &o.meta)),
        "to": ver(Some(&c.new.meta)),
        "identity": d.identity,
        "schema": d.schema,
        "counts": d.counts(),
        "attributes": d.attribute_counts().into_iter().map(|(name, n)| json!({"name": name, "changed": n})).collect::<Vec<_>>(),
        "bbox": d.bbox(),
        "links": [
            {"rel": "self", "type": "application/json", "href": format!("{url}?{q}&f=json")},
            {"rel": "alternate", "type": "application/geo+json", "title": "the changed features", "href": format!("{url}?{q}&f=geojson")},
            {"rel": "collection", "type": "application/json", "href": format!("{base}/collections/{}", c.layer)},
        ],
    })
}

fn query(c: &Computed) -> String {
    let mut q = format!("from={}&to={}", c.from(), c.to());
    if !c.key.is_empty() {
        q.push_str("&key=");
        q.push_str(
            &percent_encoding::utf8_percent_encode(
                &c.key.join(","),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string(),
        );
    }
    q
}

/// Which changes a page holds.
pub struct Page<'a> {
    pub kinds: &'a [ChangeKind],
    pub offset: usize,
    pub limit: usize,
}

/// One page of a diff as a GeoJSON FeatureCollection: each feature as it is in the
/// new version (removed ones as they were), tagged `datahub_change` (added, removed,
/// modified) and, when modified, `datahub_changed` (what changed) and a `before`
/// member with the old geometry and properties.
pub fn geojson_page(c: &Computed, page: &Page<'_>, base: &str) -> Result<Value> {
    let d = &c.diff;
    let wanted = |k: ChangeKind| page.kinds.is_empty() || page.kinds.contains(&k);
    let matched = d.changes.iter().filter(|ch| wanted(ch.kind)).count();
    let mut features = Vec::new();
    for ch in d
        .changes
        .iter()
        .filter(|ch| wanted(ch.kind))
        .skip(page.offset)
        .take(page.limit)
    {
        let mut f = match (ch.kind, &c.old, ch.old, ch.new) {
            (ChangeKind::Removed, Some(old), Some((_, off)), _) => old.feature_json(off)?,
            (_, _, _, Some((_, off))) => c.new.feature_json(off)?,
            _ => continue,
        };
        f["properties"]["datahub_change"] = json!(ch.kind.as_str());
        if ch.kind == ChangeKind::Modified {
            let mut what: Vec<String> = Vec::new();
            if ch.geometry {
                what.push("geometry".into());
            }
            what.extend(ch.attributes.iter().cloned());
            f["properties"]["datahub_changed"] = json!(what.join(","));
            if let (Some(old), Some((_, off))) = (&c.old, ch.old) {
                let b = old.feature_json(off)?;
                f["before"] = json!({"geometry": b["geometry"], "properties": b["properties"]});
            }
            f["changed"] = json!(what);
        }
        features.push(f);
    }
    let url = format!("{base}/collections/{}/changes", c.layer);
    let kinds = page
        .kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let kq = if kinds.is_empty() {
        String::new()
    } else {
        format!("&change={kinds}")
    };
    let q = query(c);
    let mut links = vec![json!({"rel": "self", "type": "application/geo+json",
        "href": format!("{url}?{q}{kq}&f=geojson&offset={}&limit={}", page.offset, page.limit)})];
    if page.offset + features.len() < matched {
        links.push(json!({"rel": "next", "type": "application/geo+json",
            "href": format!("{url}?{q}{kq}&f=geojson&offset={}&limit={}", page.offset.saturating_add(page.limit), page.limit)}));
    }
    links.push(
        json!({"rel": "describedby", "type": "application/json", "title": "summary of the changes",
        "href": format!("{url}?{q}&f=json")}),
    );
    Ok(json!({
        "type": "FeatureCollection",
        "from": c.from(),
        "to": c.to(),
        "identity": d.identity.kind,
        "numberMatched": matched,
        "numberReturned": features.len(),
        "timeStamp": crate::catalog::now(),
        "features": features,
        "links": links,
    }))
}

/// Every kept, published version in which feature `fid` changed (appeared,
/// changed, disappeared), oldest first, with the feature as it was then.
pub fn history(
    changes: &Changes,
    store: &dyn LayerStore,
    current: &Arc<LoadedLayer>,
    fid: i64,
    may_see: &dyn Fn(&LayerMeta) -> bool,
) -> Result<Option<Value>> {
    let id = current.meta.id.clone();
    let identity = diff::choose_identity(Some(current), current, &[])?;
    if identity.kind != IdentityKind::IdField {
        return Err(Error::Conflict(format!(
            "'{id}' has no stable feature id: its features are numbered by their position \
             in each upload, so one feature cannot be followed across versions; publish the \
             layer with --id-field (an integer column with unique values) to get histories"
        )));
    }
    // Versions the caller may not see (restricted then, say) are left out as a
    // whole: the history goes on from the next one it may see.
    let metas: Vec<LayerMeta> = published(store, &id)?
        .into_iter()
        .filter(|m| may_see(m))
        .collect();
    let mut out = Vec::new();
    let mut prev: Option<(Arc<LoadedLayer>, u64)> = None;
    let mut seen = false;
    let mut prev_version: Option<u32> = None;
    for m in &metas {
        // Versions published with another id field number features differently.
        if m.id_field != current.meta.id_field {
            prev = None;
            continue;
        }
        let l = changes.version(store, Some(current), &id, m.version)?;
        let here = l.find(fid);
        let entry = |change: &str, geometry: bool, attrs: Vec<String>, f: Option<Value>| {
            json!({
                "version": m.version,
                "created_at": m.created_at,
                "uploaded_by": m.uploaded_by,
                "note": m.note,
                "change": change,
                "geometry_changed": geometry,
                "attributes": attrs,
                "feature": f,
            })
        };
        match (&prev, here) {
            (None, Some(off)) => {
                // In the oldest kept version (not the first one): it was there already,
                // added in a version no longer kept.
                let first_kept = out.is_empty() && prev_version.is_none() && m.version != 1;
                let what = if first_kept { "present" } else { "added" };
                out.push(entry(what, false, Vec::new(), Some(l.feature_json(off)?)));
                seen = true;
            }
            (Some((pl, poff)), Some(off)) => {
                let (g, a) = diff::compare(pl, *poff, &l, off)?;
                if g || !a.is_empty() {
                    out.push(entry("modified", g, a, Some(l.feature_json(off)?)));
                }
            }
            (Some(_), None) => out.push(entry("removed", false, Vec::new(), None)),
            (None, None) => {}
        }
        prev = here.map(|off| (l.clone(), off));
        prev_version = Some(m.version);
    }
    if !seen {
        return Ok(None);
    }
    Ok(Some(json!({
        "layer": id,
        "id": fid,
        "identity": identity,
        "versions_kept": metas.iter().map(|m| m.version).collect::<Vec<_>>(),
        "history": out,
    })))
}

/// Parses `change=added,modified`.
pub fn parse_kinds(v: &str) -> std::result::Result<Vec<ChangeKind>, String> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            ChangeKind::parse(s.trim())
                .ok_or_else(|| format!("change='{s}' is not one of: added, removed, modified"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: u32, at: &str) -> LayerMeta {
        serde_json::from_value(json!({
            "id": "x", "version": v, "title": "x", "ministry": "m",
            "source_file": "", "source_sha256": "", "source_format": "", "source_layer": "",
            "source_crs": {"epsg": 4326, "name": "WGS 84", "wkt": "", "how": "source"},
            "feature_count": 0, "bbox": null, "geometry_types": [], "schema": [],
            "created_at": at, "duration_ms": 0,
            "report": {"features_read": 0, "features_stored": 0, "features_rejected": 0,
                       "features_repaired": 0, "problems": {}, "notes": []}
        }))
        .unwrap()
    }

    #[test]
    fn the_diff_cache_is_bounded_in_items_and_bytes() {
        let mut c = VecDeque::new();
        let size = |x: &usize| *x;
        for x in [10, 20, 30] {
            keep_bounded(&mut c, x, size, 8, 100);
        }
        assert_eq!(c, [10, 20, 30]);
        keep_bounded(&mut c, 50, size, 8, 100);
        assert_eq!(c, [20, 30, 50], "oldest dropped until within 100 bytes");
        keep_bounded(&mut c, 60, size, 8, 100);
        assert_eq!(c, [60], "as many as it takes");
        keep_bounded(&mut c, 101, size, 8, 100);
        assert_eq!(c, [60], "too big alone: not kept, nothing dropped");
        for x in [1, 1, 1] {
            keep_bounded(&mut c, x, size, 3, 100);
        }
        assert_eq!(c, [1, 1, 1], "at most 3 items");
    }

    #[test]
    fn since_finds_the_version_current_then() {
        let vs = vec![
            meta(1, "2026-10-01T10:00:00Z"),
            meta(2, "2026-10-20T10:00:00Z"),
            meta(3, "2026-11-05T10:00:00Z"),
        ];
        assert_eq!(resolve_since("x", &vs, "2").unwrap(), 2);
        assert_eq!(resolve_since("x", &vs, "2026-11-01").unwrap(), 2);
        assert_eq!(resolve_since("x", &vs, "2026-11-05T10:00:00Z").unwrap(), 3);
        assert_eq!(resolve_since("x", &vs, "2026-09-01").unwrap(), 0);
        assert!(resolve_since("x", &vs, "ayer").is_err());
        // The first version no longer kept: that state is gone (410).
        let e = resolve_since("x", &vs[1..], "2026-10-02").unwrap_err();
        assert!(matches!(e, Error::Gone(_)), "{e}");
        assert_eq!(parse_kinds("added, removed").unwrap().len(), 2);
        assert!(parse_kinds("moved").is_err());
    }
}
