//! Published layer versions loaded for serving: a memory-mapped FlatGeobuf file and a
//! bulk-loaded `rstar` R-tree over its features' bboxes, swapped in atomically.
//!
//! [`Registry`] holds the loaded version of every layer behind an `ArcSwap`: readers
//! take a snapshot without locking and keep using it even while a newer version is
//! being loaded or swapped in, so they never block and never see half a layer.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use arc_swap::ArcSwap;
use memmap2::Mmap;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};

use crate::fgb::FgbView;
use crate::store::{LayerMeta, LayerStore, StoredVersion};
use crate::{Error, Result};

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// One layer version ready for queries.
pub struct LoadedLayer {
    pub meta: LayerMeta,
    view: FgbView<Mmap>,
    tree: RTree<Entry>,
    /// (feature id, byte offset), sorted by id: the order every listing uses, so
    /// paging is stable and follows the source.
    by_fid: Vec<(i64, u64)>,
    /// When its record was written: a rewritten record (`datahub layer set`) is
    /// picked up by the next refresh.
    meta_mtime: Option<std::time::SystemTime>,
}

impl LoadedLayer {
    pub fn load(v: &StoredVersion) -> Result<Self> {
        Ok(Self::load_inner(v, true)?.0)
    }

    /// For one pass over every feature (the diagnosis): no R-tree (`query_bbox` finds
    /// nothing), and each feature's bbox by id-order position instead.
    pub fn load_for_scan(v: &StoredVersion) -> Result<(Self, Vec<[f64; 4]>)> {
        Self::load_inner(v, false)
    }

    fn load_inner(v: &StoredVersion, with_tree: bool) -> Result<(Self, Vec<[f64; 4]>)> {
        let file = File::open(&v.fgb_path).map_err(|e| Error::io(&v.fgb_path, e))?;
        // SAFETY: published version files are never modified in place (new versions are
        // new files, old ones are only deleted), so the mapping cannot change under us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&v.fgb_path, e))?;
        let view = FgbView::open(mmap)?;
        let leaves = view.leaves()?;
        let n = leaves.len();
        // Reading the ids touches every feature: split it over the cores.
        let threads = std::thread::available_parallelism()
            .map_or(2, |t| t.get())
            .clamp(1, 8);
        let chunk = n.div_ceil(threads).max(1);
        let fids: Vec<i64> = std::thread::scope(|s| {
            let parts: Vec<_> = leaves
                .chunks(chunk)
                .map(|part| {
                    let view = &view;
                    s.spawn(move || {
                        part.iter()
                            .map(|l| view.fid(l.offset))
                            .collect::<Result<Vec<i64>>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(n);
            for p in parts {
                all.extend(
                    p.join()
                        .map_err(|_| Error::Internal("index loader panicked".into()))??,
                );
            }
            Ok::<_, Error>(all)
        })?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| fids[i as usize]);
        let mut pos = vec![0u32; n];
        for (rank, &i) in order.iter().enumerate() {
            pos[i as usize] = rank as u32;
        }
        let by_fid: Vec<(i64, u64)> = order
            .iter()
            .map(|&i| (fids[i as usize], leaves[i as usize].offset))
            .collect();
        // A dataset without geometry (a table with no place) is never found by bbox:
        // its rows' index boxes are placeholders at the origin.
        let spatial = !v.meta.geometry_types.is_empty();
        let (tree, boxes) = if with_tree && !spatial {
            (RTree::new(), Vec::new())
        } else if with_tree {
            let entries: Vec<Entry> = leaves
                .iter()
                .zip(&pos)
                .map(|(l, &p)| {
                    GeomWithData::new(
                        Rectangle::from_corners([l.bbox[0], l.bbox[1]], [l.bbox[2], l.bbox[3]]),
                        p,
                    )
                })
                .collect();
            (RTree::bulk_load(entries), Vec::new())
        } else {
            let mut boxes = vec![[0.0; 4]; n];
            for (l, &p) in leaves.iter().zip(&pos) {
                boxes[p as usize] = l.bbox;
            }
            (RTree::new(), boxes)
        };
        Ok((
            LoadedLayer {
                meta: v.meta.clone(),
                view,
                tree,
                by_fid,
                meta_mtime: v
                    .fgb_path
                    .parent()
                    .and_then(|d| std::fs::metadata(d.join("meta.json")).ok())
                    .and_then(|m| m.modified().ok()),
            },
            boxes,
        ))
    }

    pub fn len(&self) -> usize {
        self.by_fid.len()
    }

    /// When the record this was loaded with was written (see
    /// [`LayerStore::record_stamp`]): a loaded version whose record was rewritten
    /// since (a draft published, an edit) is stale.
    pub fn record_stamp(&self) -> Option<std::time::SystemTime> {
        self.meta_mtime
    }

    pub fn is_empty(&self) -> bool {
        self.by_fid.is_empty()
    }

    /// Positions (in id order) of the features whose bbox intersects `bbox`
    /// ([minx, miny, maxx, maxy], lon/lat).
    pub fn query_bbox(&self, bbox: [f64; 4]) -> Vec<u32> {
        let env = AABB::from_corners([bbox[0], bbox[1]], [bbox[2], bbox[3]]);
        let mut hits: Vec<u32> = self
            .tree
            .locate_in_envelope_intersecting(&env)
            .map(|e| e.data)
            .collect();
        hits.sort_unstable();
        hits
    }

    /// Lazily: (position, bbox) of the features whose bbox intersects `bbox`, so a
    /// caller can stop early.
    pub fn query_bbox_iter(&self, bbox: [f64; 4]) -> impl Iterator<Item = (u32, [f64; 4])> + '_ {
        let env = AABB::from_corners([bbox[0], bbox[1]], [bbox[2], bbox[3]]);
        self.tree.locate_in_envelope_intersecting(&env).map(|e| {
            let (lo, hi) = (e.geom().lower(), e.geom().upper());
            (e.data, [lo[0], lo[1], hi[0], hi[1]])
        })
    }

    /// Every feature's position in id order and the lower-left corner of its bbox
    /// (the point itself, for point layers).
    pub fn anchors(&self) -> Vec<(u32, f64, f64)> {
        self.tree
            .iter()
            .map(|e| {
                let lo = e.geom().lower();
                (e.data, lo[0], lo[1])
            })
            .collect()
    }

    /// The feature at position `pos` of the id order: (id, offset).
    pub fn at(&self, pos: u32) -> Option<(i64, u64)> {
        self.by_fid.get(pos as usize).copied()
    }

    /// Offset of the feature with DataHub id `fid`.
    pub fn find(&self, fid: i64) -> Option<u64> {
        self.by_fid
            .binary_search_by_key(&fid, |(f, _)| *f)
            .ok()
            .map(|i| self.by_fid[i].1)
    }

    /// Every feature as (id, offset), sorted by id.
    pub fn ids(&self) -> &[(i64, u64)] {
        &self.by_fid
    }

    /// The stored bytes of the feature at `offset` (see [`FgbView::feature_bytes`]).
    pub fn feature_bytes(&self, offset: u64) -> Result<&[u8]> {
        self.view.feature_bytes(offset)
    }

    /// See [`FgbView::geometry_digest`].
    pub fn geometry_digest(&self, offset: u64, h: &mut impl std::hash::Hasher) -> Result<()> {
        self.view.geometry_digest(offset, h)
    }

    pub fn write_geojson(&self, offset: u64, out: &mut Vec<u8>) -> Result<()> {
        self.view.write_geojson(offset, out)
    }

    /// The feature at `offset` as a GeoJSON value (to add members before sending).
    pub fn feature_json(&self, offset: u64) -> Result<serde_json::Value> {
        let mut buf = Vec::new();
        self.write_geojson(offset, &mut buf)?;
        serde_json::from_slice(&buf).map_err(|e| Error::Internal(format!("feature JSON: {e}")))
    }

    /// [`LoadedLayer::write_geojson`] with the geometry mapped first (another CRS).
    pub fn write_geojson_with(
        &self,
        offset: u64,
        out: &mut Vec<u8>,
        map: Option<&mut crate::fgb::GeometryMap<'_>>,
    ) -> Result<()> {
        self.view.write_geojson_with(offset, out, map)
    }

    /// The geometry of the feature at `offset` (its properties not decoded).
    pub fn geometry(&self, offset: u64) -> Result<Option<geo::Geometry<f64>>> {
        self.view.geometry(offset)
    }

    /// Geometry and properties (by schema index) of the feature at `offset`.
    pub fn geometry_and_properties(&self, offset: u64) -> Result<crate::fgb::Decoded> {
        self.view.geometry_and_properties(offset)
    }

    /// Each property (by schema index) of the feature at `offset`, without decoding
    /// its geometry.
    pub fn for_each_value<'s>(
        &'s self,
        offset: u64,
        f: impl FnMut(usize, crate::fgb::RawValue<'s>),
    ) -> Result<()> {
        self.view.for_each_value(offset, f)
    }
}

/// The loaded current version of every layer.
pub struct Registry {
    store: Arc<dyn LayerStore>,
    layers: ArcSwap<HashMap<String, Arc<LoadedLayer>>>,
    /// Layers whose current version could not be read at the last refresh (a
    /// corrupt `meta.json`, a broken `CURRENT`), with why; the others are served.
    problems: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Whether the last refresh could reach the shared store (always, for files).
    in_sync: std::sync::atomic::AtomicBool,
    /// Each layer's draft, if it has one (served as `<id>@draft` to its ministry).
    drafts: ArcSwap<HashMap<String, Arc<LoadedLayer>>>,
}

/// How a layer's draft is named where a layer id goes (`parques@draft`): `@` is never
/// part of a layer id, so the name cannot be another layer's.
pub const DRAFT_SUFFIX: &str = "@draft";

impl Registry {
    pub fn new(store: Arc<dyn LayerStore>) -> Self {
        Registry {
            store,
            layers: ArcSwap::from_pointee(HashMap::new()),
            problems: Default::default(),
            in_sync: std::sync::atomic::AtomicBool::new(true),
            drafts: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Layers that could not be loaded at the last refresh, with the reason.
    pub fn problems(&self) -> std::collections::BTreeMap<String, String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the last refresh brought the layers up to date with the store.
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store the layers are read from (and published to).
    pub fn store(&self) -> &dyn LayerStore {
        self.store.as_ref()
    }

    /// The store, shared (for work handed to other threads).
    pub fn shared_store(&self) -> Arc<dyn LayerStore> {
        self.store.clone()
    }

    /// A consistent snapshot of all loaded layers.
    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<LoadedLayer>>> {
        self.layers.load_full()
    }

    /// A layer's current version, or its draft when `id` is `<layer>@draft`.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedLayer>> {
        match id.strip_suffix(DRAFT_SUFFIX) {
            Some(layer) => self.drafts.load().get(layer).cloned(),
            None => self.layers.load().get(id).cloned(),
        }
    }

    /// The layer's draft, if it has one.
    pub fn draft(&self, id: &str) -> Option<Arc<LoadedLayer>> {
        self.drafts.load().get(id).cloned()
    }

    /// Loads drafts that changed and forgets those that were published or discarded.
    fn refresh_drafts(&self) -> Result<()> {
        let old = self.drafts.load_full();
        let mut next = HashMap::new();
        for id in self.store.draft_ids()? {
            let loaded = (|| -> Result<Option<Arc<LoadedLayer>>> {
                let Some(v) = self.store.draft(&id)? else {
                    return Ok(None);
                };
                if let Some(l) = old.get(&id) {
                    if l.meta.version == v.meta.version
                        && self.store.record_stamp(&id, l.meta.version) == l.meta_mtime
                    {
                        return Ok(Some(l.clone()));
                    }
                }
                Ok(Some(Arc::new(LoadedLayer::load(&v)?)))
            })();
            match loaded {
                Ok(Some(l)) => {
                    next.insert(id, l);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(layer = %id, error = %e, "cannot load the draft"),
            }
        }
        let same = next.len() == old.len()
            && next
                .iter()
                .all(|(k, v)| old.get(k).is_some_and(|o| Arc::ptr_eq(o, v)));
        if !same {
            self.drafts.store(Arc::new(next));
        }
        Ok(())
    }

    /// Loads every layer whose current version changed (published by this or another
    /// process) and drops layers that disappeared. Blocking: call from a blocking task.
    /// Returns the ids that were (re)loaded.
    pub fn refresh(&self) -> Result<Vec<String>> {
        // A shared backend first brings this process's copy up to date; when it
        // cannot (the database is away) what is here keeps being served.
        let synced = self.store.sync();
        if let Err(e) = &synced {
            tracing::warn!(error = %e, "cannot bring the layers up to date; serving what is loaded");
        }
        self.in_sync
            .store(synced.is_ok(), std::sync::atomic::Ordering::Relaxed);
        let old = self.layers.load_full();
        let mut next = HashMap::new();
        let mut changed = Vec::new();
        let mut problems = std::collections::BTreeMap::new();
        for id in self.store.layer_ids()? {
            // One unreadable layer is skipped (its last good version, if any, stays
            // served) and reported; it never stops the refresh of the others.
            let loaded = (|| -> Result<Option<Arc<LoadedLayer>>> {
                let current = self.store.current_number(&id)?;
                if let Some(l) = old.get(&id) {
                    if Some(l.meta.version) == current
                        && self.store.record_stamp(&id, l.meta.version) == l.meta_mtime
                    {
                        return Ok(Some(l.clone()));
                    }
                }
                let Some(v) = self.store.current(&id)? else {
                    return Ok(None);
                };
                let l = LoadedLayer::load(&v)?;
                tracing::info!(layer = %id, version = l.meta.version, features = l.len(), "layer loaded");
                changed.push(id.clone());
                Ok(Some(Arc::new(l)))
            })();
            match loaded {
                Ok(Some(l)) => {
                    next.insert(id, l);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(layer = %id, error = %e, "cannot load layer version: skipped");
                    if let Some(l) = old.get(&id) {
                        next.insert(id.clone(), l.clone());
                    }
                    problems.insert(id, e.to_string());
                }
            }
        }
        if let Err(e) = self.refresh_drafts() {
            tracing::warn!(error = %e, "cannot list the drafts");
        }
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        if !changed.is_empty() || next.len() != old.len() {
            self.layers.store(Arc::new(next));
        }
        Ok(changed)
    }
}
