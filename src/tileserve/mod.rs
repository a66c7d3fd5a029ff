//! Vector tiles for loaded layers: turns a layer version into `tiles::render` input,
//! assembles single and composite tiles, and caches them by bytes.
//!
//! Cache keys hold each layer's version, so a tile of an old version can never be
//! served after a new one is loaded; [`TileService::invalidate`] also evicts them at
//! once to free the memory. Rendering is blocking: callers run it on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use layers::fgb::{FieldType, RawValue};
use layers::index::LoadedLayer;
use serde::Deserialize;
use serde_json::{json, Value};
use tiles::grid::TileId;
use tiles::mvt::MvtValue;
use tiles::points::INDEX_MAX_ZOOM;

mod points;
use points::PointTiles;
use tiles::render::{render_layer, RenderOptions, TileFeature};

/// Per-layer tile options (`[tiles.layers.<id>]` in the settings file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerTileOptions {
    pub maxzoom: Option<u8>,
    pub buffer: Option<u32>,
    pub tolerance: Option<f64>,
    /// Only these attributes go into tiles (all when absent).
    pub fields: Option<Vec<String>>,
}

/// Tile settings (`[tiles]` in the settings file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TileSettings {
    pub extent: u32,
    pub buffer: u32,
    pub tolerance: f64,
    pub max_bytes: usize,
    pub maxzoom: u8,
    pub cache_mb: u64,
    pub cache_control: String,
    pub attribution: String,
    pub layers: BTreeMap<String, LayerTileOptions>,
}

impl Default for TileSettings {
    fn default() -> Self {
        TileSettings {
            extent: 4096,
            buffer: 64,
            tolerance: 1.0,
            max_bytes: 500_000,
            maxzoom: 16,
            cache_mb: 256,
            cache_control: "public, max-age=60".into(),
            attribution: "Municipio de Monterrey".into(),
            layers: BTreeMap::new(),
        }
    }
}

/// A rendered tile, kept gzipped only (every map client asks for gzip; the rare one
/// that does not gets it inflated, see [`TileBody::raw`]): half the cache's memory and
/// half the fresh pages a cold render touches. `Bytes`, so serving a cached tile
/// shares the buffer instead of copying it.
pub struct TileBody {
    pub gzip: bytes::Bytes,
    /// Uncompressed size (0 = no feature in the tile).
    pub raw_len: usize,
    pub dropped: usize,
    pub etag: String,
}

impl TileBody {
    pub fn is_empty(&self) -> bool {
        self.raw_len == 0
    }

    /// The tile uncompressed.
    pub fn raw(&self) -> layers::Result<Vec<u8>> {
        let mut out = vec![0u8; self.raw_len];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(&self.gzip, &mut out)
            .map_err(|e| layers::Error::Internal(format!("gunzip of a cached tile: {e}")))?;
        out.truncate(n);
        Ok(out)
    }
}

/// Per-thread buffers of tile rendering, reused from tile to tile: a dense tile's
/// buffers are hundreds of KB, and fresh ones cost page faults and zeroing (a tenth of
/// a cold point grid's time).
#[derive(Default)]
pub(crate) struct Scratch {
    /// The tile being assembled.
    tile: Vec<u8>,
    /// gzip output (sized for the worst case, copied out exact).
    gzip: Vec<u8>,
    /// A point layer's features being encoded.
    features: Vec<u8>,
    /// (offset, id, key, slot) of a point tile's points.
    reads: Vec<(u64, i64, u64, u32)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());

    /// A compressor per blocking thread: its state is ~0.5 MB, not worth rebuilding
    /// per tile.
    static GZIP: std::cell::RefCell<libdeflater::Compressor> = std::cell::RefCell::new(
        // Level 1 (libdeflate's "fastest" is 0: stored, uncompressed).
        libdeflater::Compressor::new(
            libdeflater::CompressionLvl::new(1).unwrap_or_else(|_| libdeflater::CompressionLvl::default()),
        ),
    );
}

/// `raw` gzipped (an exact-size buffer: it goes into the cache as is).
fn gzip(raw: &[u8]) -> layers::Result<Vec<u8>> {
    GZIP.with(|c| {
        let mut c = c.borrow_mut();
        let mut out = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().gzip));
        out.resize(c.gzip_compress_bound(raw.len()), 0);
        let done = c
            .gzip_compress(raw, &mut out)
            .map_err(|e| layers::Error::Internal(format!("gzip: {e}")))
            .and_then(|n| {
                out.get(..n)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| layers::Error::Internal("gzip: bad length".into()))
            });
        SCRATCH.with(|s| s.borrow_mut().gzip = out);
        done
    })
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct TileKey {
    layers: Vec<(String, u32)>,
    tile: (u8, u32, u32),
    /// What is drawn when it is not the layers' own features (an analysis choropleth).
    variant: Option<Arc<str>>,
}

type PointCells = HashMap<(String, u32), Arc<OnceLock<Arc<PointTiles>>>>;

pub struct TileService {
    pub settings: TileSettings,
    cache: moka::sync::Cache<TileKey, Arc<TileBody>>,
    /// Cache hits and misses, for `/metrics`.
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    /// Point layers' tile indexes per (layer, version): built once (on load, see
    /// [`TileService::prepare`], or by the first tile), then every point tile is a few
    /// binary searches and a scan — no R-tree walk, projection or hashing per point.
    points: Mutex<PointCells>,
    /// Renders at once, one per core: more only interleave on the same cores, each on
    /// its own blocking thread with its own allocator heap of fresh pages.
    pub renders: tokio::sync::Semaphore,
    /// The loaded version of each layer whose tiles may be cached: what a new version
    /// is compared with to keep the tiles no change touches.
    shown: Mutex<HashMap<String, Arc<LoadedLayer>>>,
    /// Tiles kept across new versions (no change in their area), rendered again at
    /// once for the new version (a change in their area), and dropped.
    pub carried: std::sync::atomic::AtomicU64,
    pub rerendered: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

/// At most this many cached tiles a change touches are rendered again as soon as the
/// new version is loaded (the ones a map was showing); beyond, they are dropped and
/// rendered when asked for.
const RERENDER_MAX: usize = 256;

/// A new version whose changes cover more than this share of its features (or
/// 50,000 features) drops all its tiles: checking each cached tile would cost more
/// than rendering again the ones asked for.
const CARRY_MAX_SHARE: f64 = 0.2;
const CARRY_MAX_CHANGES: usize = 50_000;

impl TileService {
    pub fn new(settings: TileSettings) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.cache_mb.saturating_mul(1 << 20))
            .weigher(|_k: &TileKey, v: &Arc<TileBody>| {
                u32::try_from(v.gzip.len() + v.etag.len() + 128).unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build();
        TileService {
            settings,
            cache,
            hits: Default::default(),
            misses: Default::default(),
            points: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashMap::new()),
            carried: Default::default(),
            rerendered: Default::default(),
            dropped: Default::default(),
            renders: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
        }
    }

    /// The tile index of a point layer (built on first use).
    fn point_index(&self, layer: &LoadedLayer) -> Arc<PointTiles> {
        let cell = {
            let mut map = self.points.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((layer.meta.id.clone(), layer.meta.version))
                .or_default()
                .clone()
        };
        // Built outside the map's lock: other layers are not held up.
        cell.get_or_init(|| Arc::new(PointTiles::build(layer)))
            .clone()
    }

    /// Builds the point layers' tile indexes ahead of their first tile (blocking:
    /// about 0.3 s per million points). Called when versions are loaded.
    pub fn prepare(&self, layers: &[Arc<LoadedLayer>]) {
        {
            let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            for l in layers {
                shown.insert(l.meta.id.clone(), l.clone());
            }
        }
        for l in layers {
            if is_point_layer(l) {
                let _ = self.point_index(l);
            }
        }
    }

    pub fn maxzoom(&self, id: &str) -> u8 {
        self.settings
            .layers
            .get(id)
            .and_then(|o| o.maxzoom)
            .unwrap_or(self.settings.maxzoom)
    }

    /// How layer `id` is rendered at `tile`: the settings with its per-layer options.
    fn render_options(&self, id: &str, tile: TileId) -> RenderOptions {
        let s = &self.settings;
        let lo = s.layers.get(id).cloned().unwrap_or_default();
        RenderOptions {
            extent: s.extent,
            buffer: lo.buffer.unwrap_or(s.buffer),
            tolerance: lo.tolerance.unwrap_or(s.tolerance),
            max_bytes: s.max_bytes,
            at_maxzoom: tile.z >= self.maxzoom(id),
        }
    }

    /// New versions of `changed` are loaded in `registry`: evicts their tiles and builds
    /// their point indexes now (blocking), not on the first tile someone asks for.
    ///
    /// A layer's tiles that no change touches are kept: the new version is compared
    /// with the one whose tiles are cached, feature by feature (stored bytes, by id),
    /// and a cached tile is carried over to the new version when none of the changed
    /// features' bboxes (before and after) meets the tile with its buffer. A tile
    /// draws only the features in that area, in id order, so it would be rendered
    /// byte for byte the same. Any other change (schema, many features) drops all.
    pub fn reloaded(&self, changed: &[String], registry: &layers::index::Registry) {
        if changed.is_empty() {
            return;
        }
        let mut drop_all = Vec::new();
        let mut again = Vec::new();
        for id in changed {
            let old = self
                .shown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned();
            match (old, registry.get(id)) {
                (Some(old), Some(new)) if old.meta.version != new.meta.version => {
                    let t0 = std::time::Instant::now();
                    match self.carry_over(&old, &new) {
                        Ok(Some((kept, dropped, dirty))) => {
                            use std::sync::atomic::Ordering::Relaxed;
                            self.carried.fetch_add(kept, Relaxed);
                            tracing::info!(layer = %id, from = old.meta.version, to = new.meta.version,
                                kept, touched = dropped, ms = t0.elapsed().as_millis() as u64,
                                "tiles no change touches kept");
                            again.push((new.clone(), dirty, dropped));
                        }
                        Ok(None) => drop_all.push(id.clone()),
                        Err(e) => {
                            tracing::warn!(layer = %id, error = %e, "cannot compare versions: all tiles dropped");
                            drop_all.push(id.clone());
                        }
                    }
                }
                // The same version (its record was edited): tiles do not depend on the
                // record. Also what a second refresh racing the first one sees.
                (Some(old), Some(new)) if old.meta.version == new.meta.version => {}
                _ => drop_all.push(id.clone()),
            }
        }
        self.invalidate(&drop_all);
        {
            let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            for id in changed {
                shown.remove(id);
            }
        }
        let loaded: Vec<_> = changed.iter().filter_map(|id| registry.get(id)).collect();
        self.prepare(&loaded);
        // Point indexes of versions no longer served (the previous version, a
        // discarded or published draft) go: each is tens of MB for a large layer.
        {
            let keep = |id: &str, v: u32| {
                registry.get(id).is_some_and(|l| l.meta.version == v)
                    || registry.draft(id).is_some_and(|l| l.meta.version == v)
            };
            let mut map = self.points.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|(id, v), _| keep(id, *v));
        }
        // The tiles a change touched, rendered now for the new version: a one-feature
        // edit costs a handful of renders here instead of misses on the map.
        use std::sync::atomic::Ordering::Relaxed;
        for (layer, dirty, touched) in again {
            let t0 = std::time::Instant::now();
            let mut done = 0u64;
            for tile in dirty.into_iter().take(RERENDER_MAX) {
                let one = [layer.clone()];
                let key = Self::key(&one, tile);
                match self.render_keyed(&key, &one, tile) {
                    Ok(body) => {
                        self.cache.insert(key, body);
                        done += 1;
                    }
                    Err(e) => {
                        tracing::warn!(layer = %layer.meta.id, error = %e, "tile not rendered again")
                    }
                }
            }
            self.rerendered.fetch_add(done, Relaxed);
            self.dropped.fetch_add(touched - done, Relaxed);
            tracing::info!(layer = %layer.meta.id, rendered = done, ms = t0.elapsed().as_millis() as u64,
                "tiles a change touched rendered again");
        }
    }

    /// Moves the cached tiles of `old` that no change touches to `new`'s key and drops
    /// the rest; None when everything must go. Returns (kept, dropped, the dropped
    /// tiles of this layer alone: the ones worth rendering again).
    fn carry_over(
        &self,
        old: &LoadedLayer,
        new: &LoadedLayer,
    ) -> layers::Result<Option<(u64, u64, Vec<TileId>)>> {
        if old.meta.schema != new.meta.schema
            || is_point_layer(old) != is_point_layer(new)
            || old.meta.id != new.meta.id
        {
            return Ok(None);
        }
        if is_point_layer(new) {
            // A point tile reads its uncoded fields in file order, which follows a
            // Hilbert curve over the layer's extent; and which fields are coded depends
            // on the whole layer. Either changing reorders unchanged points' features.
            if old.meta.bbox != new.meta.bbox
                || self.point_index(old).layout() != self.point_index(new).layout()
            {
                return Ok(None);
            }
        }
        let limit = CARRY_MAX_CHANGES
            .min((new.len().max(old.len()) as f64 * CARRY_MAX_SHARE) as usize + 10);
        let Some(boxes) = changed_boxes(old, new, limit)? else {
            return Ok(None);
        };
        let touched = rstar::RTree::bulk_load(
            boxes
                .into_iter()
                .map(|b| rstar::primitives::Rectangle::from_corners([b[0], b[1]], [b[2], b[3]]))
                .collect(),
        );
        let id = old.meta.id.clone();
        let (from, to) = (old.meta.version, new.meta.version);
        self.cache.run_pending_tasks();
        let (mut kept, mut dropped) = (0u64, 0u64);
        let mut moved = Vec::new();
        let mut dirty = Vec::new();
        for (k, v) in self.cache.iter() {
            if !k.layers.iter().any(|(l, n)| *l == id && *n == from) {
                continue;
            }
            // A choropleth's colours come from every feature: never carried.
            if k.variant.is_some() {
                dropped += 1;
                continue;
            }
            let (z, x, y) = k.tile;
            let opts = self.render_options(&id, TileId { z, x, y });
            // One pixel more than the buffer: rounding at the edge never decides.
            let b = TileId { z, x, y }.bounds_lonlat(opts.buffer + 16, opts.extent);
            let env = rstar::AABB::from_corners([b[0], b[1]], [b[2], b[3]]);
            if touched
                .locate_in_envelope_intersecting(&env)
                .next()
                .is_some()
            {
                dropped += 1;
                if k.layers.len() == 1 {
                    dirty.push(TileId { z, x, y });
                }
                continue;
            }
            let mut key = (*k).clone();
            for l in key.layers.iter_mut() {
                if l.0 == id && l.1 == from {
                    l.1 = to;
                }
            }
            moved.push((key, v));
            kept += 1;
        }
        for (k, v) in moved {
            self.cache.insert(k, v);
        }
        let ids = vec![id];
        self.invalidate_versions(&ids, from);
        // Low zooms first: they cover the most of a map.
        dirty.sort_by_key(|t| t.z);
        Ok(Some((kept, dropped, dirty)))
    }

    /// Evicts the cached tiles of version `n` of these layers.
    fn invalidate_versions(&self, ids: &[String], n: u32) {
        let ids = ids.to_vec();
        let _ = self.cache.invalidate_entries_if(move |k, _| {
            k.layers.iter().any(|(id, v)| *v == n && ids.contains(id))
        });
    }

    /// Evicts cached tiles of these layers (and composites that include them).
    pub fn invalidate(&self, ids: &[String]) {
        {
            let mut map = self.points.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|k, _| !ids.contains(&k.0));
        }
        let ids = ids.to_vec();
        let _ = self
            .cache
            .invalidate_entries_if(move |k, _| k.layers.iter().any(|(id, _)| ids.contains(id)));
    }

    fn key(layers: &[Arc<LoadedLayer>], tile: TileId) -> TileKey {
        TileKey {
            layers: layers
                .iter()
                .map(|l| (l.meta.id.clone(), l.meta.version))
                .collect(),
            tile: (tile.z, tile.x, tile.y),
            variant: None,
        }
    }

    /// A tile of `zones`' polygons under the MVT layer `name`, with the attributes
    /// `props` gives each zone (by id-order position) instead of the zones' own:
    /// the analysis choropleths. `variant` names what `props` computes (it is part of
    /// the cache key and ETag); `also` are the other layers it depends on, so a new
    /// version of any of them evicts the tile.
    pub fn zone_tile(
        &self,
        zones: &LoadedLayer,
        also: &[&LoadedLayer],
        name: &str,
        variant: &str,
        tile: TileId,
        props: impl Fn(u32) -> Vec<(Arc<str>, MvtValue)>,
    ) -> layers::Result<Arc<TileBody>> {
        let key = TileKey {
            layers: std::iter::once(zones)
                .chain(also.iter().copied())
                .map(|l| (l.meta.id.clone(), l.meta.version))
                .collect(),
            tile: (tile.z, tile.x, tile.y),
            variant: Some(Arc::from(variant)),
        };
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }
        let opts = self.render_options(&zones.meta.id, tile);
        let b = tile.bounds_lonlat(opts.buffer, opts.extent);
        let mut feats = Vec::new();
        for pos in zones.query_bbox(b) {
            let Some((fid, offset)) = zones.at(pos) else {
                continue;
            };
            let Some(geometry) = zones.geometry(offset)? else {
                continue;
            };
            feats.push(TileFeature {
                id: u64::try_from(fid).unwrap_or(0),
                geometry,
                props: props(pos),
            });
        }
        let mut raw = Vec::new();
        let dropped =
            render_layer(name, tile, feats, &opts, &mut raw).map_or(0, |s| s.dropped_for_size);
        self.store(key, &raw, dropped)
    }

    /// A cached tile, without rendering (cheap: callers may try it on the executor).
    pub fn cached(&self, layers: &[Arc<LoadedLayer>], tile: TileId) -> Option<Arc<TileBody>> {
        let hit = self.cache.get(&Self::key(layers, tile));
        if hit.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        hit
    }

    /// The cache, counted: hit or miss.
    fn lookup(&self, key: &TileKey) -> Option<Arc<TileBody>> {
        use std::sync::atomic::Ordering::Relaxed;
        let hit = self.cache.get(key);
        if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .fetch_add(1, Relaxed);
        hit
    }

    /// Hits, misses, cached tiles and their bytes (for `/metrics`).
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        // moka counts lazily: settle what is pending so the figures are current.
        self.cache.run_pending_tasks();
        (
            self.hits.load(Relaxed),
            self.misses.load(Relaxed),
            self.cache.entry_count(),
            self.cache.weighted_size(),
        )
    }

    /// The tile of these layers (one MVT layer each, in the given order).
    pub fn tile(&self, layers: &[Arc<LoadedLayer>], tile: TileId) -> layers::Result<Arc<TileBody>> {
        let key = Self::key(layers, tile);
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }
        let body = self.render_keyed(&key, layers, tile)?;
        self.cache.insert(key, body.clone());
        Ok(body)
    }

    /// [`TileService::tile`] without the cache: rendered and gzipped now.
    pub fn render(
        &self,
        layers: &[Arc<LoadedLayer>],
        tile: TileId,
    ) -> layers::Result<Arc<TileBody>> {
        self.render_keyed(&Self::key(layers, tile), layers, tile)
    }

    fn render_keyed(
        &self,
        key: &TileKey,
        layers: &[Arc<LoadedLayer>],
        tile: TileId,
    ) -> layers::Result<Arc<TileBody>> {
        let mut raw = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().tile));
        raw.clear();
        let mut dropped = 0;
        let mut rendered = Ok(());
        for l in layers {
            match self.render_one(l, tile, &mut raw) {
                Ok(d) => dropped += d,
                Err(e) => {
                    rendered = Err(e);
                    break;
                }
            }
        }
        let body = rendered.and_then(|()| body(key, &raw, dropped));
        SCRATCH.with(|s| s.borrow_mut().tile = raw);
        body
    }

    /// Compresses a rendered tile, tags it and caches it under `key`.
    fn store(&self, key: TileKey, raw: &[u8], dropped: usize) -> layers::Result<Arc<TileBody>> {
        let body = body(&key, raw, dropped)?;
        self.cache.insert(key, body.clone());
        Ok(body)
    }

    /// Renders one layer into `buf`; returns how many features the size cap dropped.
    fn render_one(
        &self,
        layer: &LoadedLayer,
        tile: TileId,
        buf: &mut Vec<u8>,
    ) -> layers::Result<usize> {
        let s = &self.settings;
        let lo = s.layers.get(&layer.meta.id).cloned().unwrap_or_default();
        let opts = self.render_options(&layer.meta.id, tile);
        let b = tile.bounds_lonlat(opts.buffer, opts.extent);
        // Tiles outside the layer's bounds never touch the index.
        let Some(lb) = layer.meta.bbox else {
            return Ok(0);
        };
        if lb[0] > b[2] || lb[2] < b[0] || lb[1] > b[3] || lb[3] < b[1] {
            return Ok(0);
        }
        let wanted = lo.fields.as_ref();
        // Per schema field: its shared name and type, or None when not in tiles.
        let fields: Vec<Option<(Arc<str>, FieldType)>> = layer
            .meta
            .schema
            .iter()
            .map(|f| {
                let included = wanted.is_none_or(|w| w.iter().any(|n| n == &f.name));
                included.then(|| (Arc::from(f.name.as_str()), f.ftype))
            })
            .collect();
        if is_point_layer(layer) && tile.z <= INDEX_MAX_ZOOM {
            return self.render_points(layer, tile, &opts, &fields, buf);
        }
        let keep = layer.query_bbox(b);
        let mut feats = Vec::with_capacity(keep.len());
        for pos in keep {
            let Some((fid, offset)) = layer.at(pos) else {
                continue;
            };
            let (Some(geometry), values) = layer.geometry_and_properties(offset)? else {
                continue;
            };
            feats.push(TileFeature {
                id: u64::try_from(fid).unwrap_or(0),
                geometry,
                props: tile_props(values, &fields),
            });
        }
        let stats = render_layer(&layer.meta.id, tile, feats, &opts, buf);
        Ok(stats.map_or(0, |s| s.dropped_for_size))
    }

    /// A point layer's tile from its [`tiles::points::PointIndex`]: the points are chosen from their
    /// keys (one per tile unit; at maxzoom all; under the size cap, one per unit of a
    /// lower zoom), then only their attributes are read, in file order, and written
    /// straight into the MVT layer. Returns how many the size cap dropped.
    fn render_points(
        &self,
        layer: &LoadedLayer,
        tile: TileId,
        opts: &RenderOptions,
        fields: &[Option<(Arc<str>, FieldType)>],
        buf: &mut Vec<u8>,
    ) -> layers::Result<usize> {
        let pt = self.point_index(layer);
        // Bytes a point feature takes: id, type, a one-point geometry and its tags
        // (a key and a value index each, a byte or two).
        let included = fields.iter().flatten().count();
        let per_point = 16 + 3 * included;
        let max_count = (opts.max_bytes / per_point).max(1);
        let sel = pt
            .index
            .select(tile, opts.extent, opts.buffer, max_count, opts.at_maxzoom);
        if sel.points.is_empty() {
            return Ok(0);
        }
        // Taken out while encoding (the tile buffer already is: `buf`), put back after.
        let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let done = points::encode(&pt, layer, sel, tile, opts, fields, &mut scratch, buf);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let tile = std::mem::take(&mut s.tile);
            *s = scratch;
            s.tile = tile;
        });
        done
    }

    /// TileJSON 3.0.0 for one or more layers.
    pub fn tilejson(&self, layers: &[Arc<LoadedLayer>], ids: &str, base: &str) -> Value {
        let mut bounds = [
            180.0f64,
            85.051_128_779_806_59,
            -180.0,
            -85.051_128_779_806_59,
        ];
        let mut any = false;
        let mut vector_layers = Vec::new();
        let mut maxzoom = 0u8;
        for l in layers {
            if let Some(b) = l.meta.bbox {
                any = true;
                bounds = [
                    bounds[0].min(b[0]),
                    bounds[1].min(b[1]),
                    bounds[2].max(b[2]),
                    bounds[3].max(b[3]),
                ];
            }
            let mz = self.maxzoom(&l.meta.id);
            maxzoom = maxzoom.max(mz);
            let wanted = self
                .settings
                .layers
                .get(&l.meta.id)
                .and_then(|o| o.fields.clone());
            let fields: serde_json::Map<String, Value> = l
                .meta
                .schema
                .iter()
                .filter(|f| wanted.as_ref().is_none_or(|w| w.contains(&f.name)))
                .map(|f| {
                    let t = match f.ftype {
                        FieldType::Bool => "Boolean",
                        FieldType::Int | FieldType::Long | FieldType::Float => "Number",
                        _ => "String",
                    };
                    (f.name.clone(), Value::from(t))
                })
                .collect();
            vector_layers.push(json!({
                "id": l.meta.id, "description": l.meta.title, "fields": fields,
                "minzoom": 0, "maxzoom": mz,
            }));
        }
        if !any {
            bounds = [-180.0, -85.051_128_779_806_59, 180.0, 85.051_128_779_806_59];
        }
        let bounds = [
            bounds[0].max(-180.0),
            bounds[1].max(-85.051_128_779_806_59),
            bounds[2].min(180.0),
            bounds[3].min(85.051_128_779_806_59),
        ];
        let (w, h) = (bounds[2] - bounds[0], bounds[3] - bounds[1]);
        let zoom = (0..=maxzoom)
            .rev()
            .find(|z| {
                let span = 360.0 / f64::from(1u32 << z);
                w <= span * 2.0 && h <= span * 1.5
            })
            .unwrap_or(0);
        let names: Vec<&str> = layers.iter().map(|l| l.meta.title.as_str()).collect();
        let desc: Vec<&str> = layers
            .iter()
            .map(|l| l.meta.description.as_str())
            .filter(|d| !d.is_empty())
            .collect();
        json!({
            "tilejson": "3.0.0",
            "name": names.join(", "),
            "description": desc.join(" "),
            "attribution": self.settings.attribution,
            "scheme": "xyz",
            "tiles": [format!("{base}/tiles/{ids}/{{z}}/{{x}}/{{y}}.mvt")],
            "minzoom": 0,
            "maxzoom": maxzoom,
            "bounds": bounds,
            "center": [(bounds[0] + bounds[2]) / 2.0, (bounds[1] + bounds[3]) / 2.0, zoom],
            "vector_layers": vector_layers,
        })
    }
}

/// A rendered tile gzipped and tagged (ETag from the layers' versions, the variant and
/// z/x/y).
fn body(key: &TileKey, raw: &[u8], dropped: usize) -> layers::Result<Arc<TileBody>> {
    let gzip = if raw.is_empty() {
        Vec::new()
    } else {
        gzip(raw)?
    };
    let mut tag: String = key
        .layers
        .iter()
        .map(|(id, v)| format!("{id}.{v}"))
        .collect::<Vec<_>>()
        .join("+");
    if let Some(v) = &key.variant {
        // FNV-1a of what the variant draws: short, stable across restarts.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in v.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        tag.push_str(&format!("-{h:016x}"));
    }
    let (z, x, y) = key.tile;
    Ok(Arc::new(TileBody {
        raw_len: raw.len(),
        gzip: gzip.into(),
        dropped,
        etag: format!("\"{tag}-{z}-{x}-{y}\""),
    }))
}

/// The bboxes (before and after) of every feature that differs between two versions
/// of a layer, matched by id; None when more than `limit` differ.
fn changed_boxes(
    old: &LoadedLayer,
    new: &LoadedLayer,
    limit: usize,
) -> layers::Result<Option<Vec<[f64; 4]>>> {
    use geo::BoundingRect;
    let bbox = |l: &LoadedLayer, off: u64| -> layers::Result<Option<[f64; 4]>> {
        Ok(l.geometry(off)?
            .and_then(|g| g.bounding_rect())
            .map(|r| [r.min().x, r.min().y, r.max().x, r.max().y]))
    };
    let (a, b) = (old.ids(), new.ids());
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let mut changed = 0usize;
    while i < a.len() || j < b.len() {
        let (o, n) = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                j += 1;
                if old.feature_bytes(x.1)? == new.feature_bytes(y.1)? {
                    continue;
                }
                (Some(x.1), Some(y.1))
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                i += 1;
                (Some(x.1), None)
            }
            (Some(x), None) => {
                i += 1;
                (Some(x.1), None)
            }
            (_, Some(y)) => {
                j += 1;
                (None, Some(y.1))
            }
            (None, None) => break,
        };
        changed += 1;
        if changed > limit {
            return Ok(None);
        }
        if let Some(off) = o {
            out.extend(bbox(old, off)?);
        }
        if let Some(off) = n {
            out.extend(bbox(new, off)?);
        }
    }
    Ok(Some(out))
}

/// Only points (not multipoints): their tiles come from a [`tiles::points::PointIndex`].
fn is_point_layer(layer: &LoadedLayer) -> bool {
    !layer.meta.geometry_types.is_empty() && layer.meta.geometry_types.iter().all(|t| t == "Point")
}

/// A feature's attributes for a tile: the included fields, nulls left out.
fn tile_props(
    values: Vec<(usize, Value)>,
    fields: &[Option<(Arc<str>, FieldType)>],
) -> Vec<(Arc<str>, MvtValue)> {
    let mut props = Vec::with_capacity(values.len());
    for (i, v) in values {
        if let Some(Some((name, t))) = fields.get(i) {
            if let Some(mv) = mvt_value(v, *t) {
                props.push((name.clone(), mv));
            }
        }
    }
    props
}

/// [`mvt_value`] for a value read straight from the file.
fn raw_mvt_value(v: RawValue<'_>, t: FieldType) -> Option<MvtValue> {
    Some(match v {
        RawValue::Bool(b) => MvtValue::Bool(b),
        RawValue::F64(x) => MvtValue::Double(x),
        RawValue::I64(n) if t == FieldType::Float => MvtValue::Double(n as f64),
        RawValue::U64(n) if t == FieldType::Float => MvtValue::Double(n as f64),
        RawValue::I64(n) => match u64::try_from(n) {
            Ok(u) => MvtValue::Uint(u),
            Err(_) => MvtValue::Sint(n),
        },
        RawValue::U64(n) => MvtValue::Uint(n),
        RawValue::Str(s) => MvtValue::String(String::from_utf8_lossy(s).into_owned()),
    })
}

/// The MVT type of a stored value: integers as uint (>= 0) or sint (< 0), reals as
/// double, dates as strings.
fn mvt_value(v: Value, t: FieldType) -> Option<MvtValue> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(MvtValue::Bool(b)),
        Value::Number(n) => {
            if t == FieldType::Float {
                return n.as_f64().map(MvtValue::Double);
            }
            if let Some(u) = n.as_u64() {
                Some(MvtValue::Uint(u))
            } else if let Some(i) = n.as_i64() {
                Some(MvtValue::Sint(i))
            } else {
                n.as_f64().map(MvtValue::Double)
            }
        }
        Value::String(s) => Some(MvtValue::String(s)),
        other => Some(MvtValue::String(other.to_string())),
    }
}
