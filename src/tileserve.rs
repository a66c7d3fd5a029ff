//! Vector tiles for loaded layers: turns a layer version into `tiles::render` input,
//! assembles single and composite tiles, and caches them by bytes.
//!
//! Cache keys hold each layer's version, so a tile of an old version can never be
//! served after a new one is loaded; [`TileService::invalidate`] also evicts them at
//! once to free the memory. Rendering is blocking: callers run it on the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use layers::fgb::{FieldType, RawValue};
use layers::index::LoadedLayer;
use serde::Deserialize;
use serde_json::{json, Value};
use tiles::grid::{lonlat_to_world, TileId};
use tiles::mvt::{Fnv, MvtValue};
use tiles::render::{render_layer, PointLevel, RenderOptions, TileFeature, LEVEL_MAX_ZOOM};

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

/// A rendered tile (empty `raw` = no feature in it). `Bytes`, so serving a cached
/// tile shares the buffer instead of copying it.
pub struct TileBody {
    pub raw: bytes::Bytes,
    pub gzip: bytes::Bytes,
    pub dropped: usize,
    pub etag: String,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct TileKey {
    layers: Vec<(String, u32)>,
    tile: (u8, u32, u32),
    /// What is drawn when it is not the layers' own features (an analysis choropleth).
    variant: Option<Arc<str>>,
}

type LevelKey = (String, u32, u8);
/// Point positions in world units by id-order position (see `TileService::world`).
type World = Arc<Vec<(f64, f64)>>;
type WorldCells = HashMap<(String, u32), Arc<OnceLock<World>>>;

pub struct TileService {
    pub settings: TileSettings,
    cache: moka::sync::Cache<TileKey, Arc<TileBody>>,
    /// Generalised point sets per (layer, version, zoom), built on first use.
    levels: Mutex<HashMap<LevelKey, Arc<OnceLock<Arc<PointLevel>>>>>,
    /// Point layers' positions projected once per (layer, version): Web Mercator's
    /// log/tan per point per tile was a third of dense point tiles' time.
    worlds: Mutex<WorldCells>,
}

impl TileService {
    pub fn new(settings: TileSettings) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.cache_mb.saturating_mul(1 << 20))
            .weigher(|_k: &TileKey, v: &Arc<TileBody>| {
                u32::try_from(v.raw.len() + v.gzip.len() + 128).unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build();
        TileService {
            settings,
            cache,
            levels: Mutex::new(HashMap::new()),
            worlds: Mutex::new(HashMap::new()),
        }
    }

    /// The layer's anchors in world units, indexed by id-order position.
    fn world(&self, layer: &LoadedLayer) -> World {
        let cell = {
            let mut map = self.worlds.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((layer.meta.id.clone(), layer.meta.version))
                .or_default()
                .clone()
        };
        cell.get_or_init(|| {
            let mut w = vec![(0.0, 0.0); layer.len()];
            for (pos, lon, lat) in layer.anchors() {
                if let Some(slot) = w.get_mut(pos as usize) {
                    *slot = lonlat_to_world(lon, lat);
                }
            }
            Arc::new(w)
        })
        .clone()
    }

    /// The layer's generalised points at zoom `z`: the finest level (one sort of
    /// every point) is built once, and each coarser one in one pass over the nearest
    /// finer level already built.
    fn point_level(&self, layer: &LoadedLayer, z: u8) -> Arc<PointLevel> {
        let z = z.min(LEVEL_MAX_ZOOM);
        let key = |z: u8| (layer.meta.id.clone(), layer.meta.version, z);
        let cell = {
            let mut map = self.levels.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key(z)).or_default().clone()
        };
        // Built outside the map's lock: other layers and zooms are not held up.
        if let Some(l) = cell.get() {
            return l.clone();
        }
        cell.get_or_init(|| {
            if z == LEVEL_MAX_ZOOM {
                let w = self.world(layer);
                let pts: Vec<(u32, f64, f64)> = (0u32..)
                    .zip(w.iter())
                    .map(|(p, &(x, y))| (p, x, y))
                    .collect();
                return Arc::new(PointLevel::build(z, &pts));
            }
            let finer = {
                let map = self.levels.lock().unwrap_or_else(|p| p.into_inner());
                (z + 1..=LEVEL_MAX_ZOOM)
                    .find_map(|f| map.get(&key(f)).and_then(|c| c.get().cloned()))
            };
            let finer = finer.unwrap_or_else(|| self.point_level(layer, LEVEL_MAX_ZOOM));
            Arc::new(finer.coarsen(z))
        })
        .clone()
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
            world_coords: false,
        }
    }

    /// Evicts cached tiles of these layers (and composites that include them).
    pub fn invalidate(&self, ids: &[String]) {
        {
            let mut map = self.levels.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|k, _| !ids.contains(&k.0));
            let mut map = self.worlds.lock().unwrap_or_else(|p| p.into_inner());
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
        if let Some(hit) = self.cache.get(&key) {
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
        self.store(key, raw, dropped)
    }

    /// A cached tile, without rendering (cheap: callers may try it on the executor).
    pub fn cached(&self, layers: &[Arc<LoadedLayer>], tile: TileId) -> Option<Arc<TileBody>> {
        self.cache.get(&Self::key(layers, tile))
    }

    /// The tile of these layers (one MVT layer each, in the given order).
    pub fn tile(&self, layers: &[Arc<LoadedLayer>], tile: TileId) -> layers::Result<Arc<TileBody>> {
        let key = Self::key(layers, tile);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let mut raw = Vec::new();
        let mut dropped = 0;
        for l in layers {
            dropped += self.render_one(l, tile, &mut raw)?;
        }
        self.store(key, raw, dropped)
    }

    /// Compresses a rendered tile, tags it and caches it under `key`.
    fn store(&self, key: TileKey, raw: Vec<u8>, dropped: usize) -> layers::Result<Arc<TileBody>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let gzip = gz
            .write_all(&raw)
            .and_then(|_| gz.finish())
            .map_err(|e| layers::Error::Internal(format!("gzip: {e}")))?;
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
        let body = Arc::new(TileBody {
            raw: raw.into(),
            gzip: gzip.into(),
            dropped,
            etag: format!("\"{tag}-{z}-{x}-{y}\""),
        });
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
        let mut opts = self.render_options(&layer.meta.id, tile);
        let b = tile.bounds_lonlat(opts.buffer, opts.extent);
        // Tiles outside the layer's bounds never touch the index.
        let Some(lb) = layer.meta.bbox else {
            return Ok(0);
        };
        if lb[0] > b[2] || lb[2] < b[0] || lb[1] > b[3] || lb[3] < b[1] {
            return Ok(0);
        }
        let points_only = layer.meta.geometry_types.iter().all(|t| t == "Point");
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
        let mut pre_dropped = 0;
        let mut feats;
        if points_only && !opts.at_maxzoom {
            opts.world_coords = true;
            let wb = tile.bounds_world(opts.buffer, opts.extent);
            // Generalised points (lowest id per tile unit), decided before decoding;
            // when even those exceed what the cap can hold (~12 bytes per point at the
            // least), lower zoom levels are the cap's grid thinning.
            // A tile with few candidates is generalised on its own; a dense one
            // (low zoom over many points) uses the layer's cached levels.
            const DIRECT_MAX: usize = 200_000;
            let mut direct = Vec::new();
            let mut dense = false;
            for (pos, e) in layer.query_bbox_iter(b) {
                if direct.len() == DIRECT_MAX {
                    dense = true;
                    break;
                }
                // From the leaf in hand rather than `world` (a random read per point).
                let (x, y) = lonlat_to_world(e[0], e[1]);
                direct.push((pos, x, y));
            }
            let max_count = (s.max_bytes / 16).max(1);
            let mut z = tile.z;
            let mut cand;
            let distinct;
            if dense {
                cand = self.point_level(layer, z).query(tile, wb);
                distinct = cand.len();
                while cand.len() > max_count && z > 0 {
                    z -= 1;
                    cand = self.point_level(layer, z).query(tile, wb);
                }
            } else {
                // One point per tile unit, the lowest position winning: sort by
                // position (the order features are read in anyway) and mark units.
                direct.sort_unstable_by_key(|c| c.0);
                let side = (s.extent + 2 * opts.buffer) as usize;
                let n = f64::from(s.extent) * f64::from(1u32 << tile.z);
                let mut seen: HashSet<u32, BuildHasherDefault<Fnv>> =
                    HashSet::with_capacity_and_hasher(direct.len(), Default::default());
                direct.retain(|&(_, x, y)| {
                    let ux = ((x - wb[0]) * n).floor();
                    let uy = ((y - wb[1]) * n).floor();
                    if !(0.0..side as f64).contains(&ux) || !(0.0..side as f64).contains(&uy) {
                        return false;
                    }
                    seen.insert(uy as u32 * side as u32 + ux as u32)
                });
                distinct = direct.len();
                cand = direct;
                if cand.len() > max_count {
                    let mut level = PointLevel::build(z, &cand);
                    while level.len() > max_count && z > 0 {
                        z -= 1;
                        level = level.coarsen(z);
                    }
                    cand = level.points();
                }
            }
            pre_dropped = distinct - cand.len();
            // Read in file order: the file is in Hilbert order, so a tile's features
            // sit close together there, while their ids are scattered (the renderer
            // writes them in id order).
            let mut reads: Vec<(u64, i64, f64, f64)> = cand
                .into_iter()
                .filter_map(|(pos, x, y)| layer.at(pos).map(|(fid, off)| (off, fid, x, y)))
                .collect();
            reads.sort_unstable_by_key(|r| r.0);
            feats = Vec::with_capacity(reads.len());
            for (offset, fid, x, y) in reads {
                // The position is known: only the attributes are read.
                let mut props = Vec::with_capacity(fields.len());
                layer.for_each_value(offset, |i, v| {
                    if let Some(Some((name, t))) = fields.get(i) {
                        if let Some(mv) = raw_mvt_value(v, *t) {
                            props.push((name.clone(), mv));
                        }
                    }
                })?;
                feats.push(TileFeature {
                    id: u64::try_from(fid).unwrap_or(0),
                    geometry: geo::Geometry::Point(geo::Point::new(x, y)),
                    props,
                });
            }
        } else {
            let keep = layer.query_bbox(b);
            feats = Vec::with_capacity(keep.len());
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
        }
        let stats = render_layer(&layer.meta.id, tile, feats, &opts, buf);
        Ok(pre_dropped + stats.map_or(0, |s| s.dropped_for_size))
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
