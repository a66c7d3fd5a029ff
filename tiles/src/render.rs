//! One MVT layer of one tile, from features in lon/lat.
//!
//! Steps per feature: to tile coordinates (y down) → clip to the tile grown by the
//! buffer (real polygon/line clipping, `geo` BooleanOps) → simplify in tile units →
//! quantize to integers → drop repeated points, degenerate rings and what collapsed
//! below one unit → MVT winding (exterior positive area in y-down coordinates, i.e.
//! clockwise on screen). At the layer's maxzoom nothing is dropped: a feature that
//! collapsed is kept as a one-unit point/line/square at its position.
//!
//! Size cap: when the encoded layer would exceed `max_bytes`, features are thinned in a
//! deterministic, documented order: points by a grid that doubles its cell size until the
//! layer fits (keeping the lowest id in each cell: a spatially even subset); lines and
//! polygons by size, largest kept first (length or area in tile units, ties by id).

use geo::{
    BooleanOps, BoundingRect, Coord, Geometry, LineString, MultiLineString, MultiPolygon, Polygon,
    Rect, Simplify,
};

use crate::grid::{TileId, TileTransform};
use crate::mvt::{Commands, GeomType, LayerBuilder, MvtValue};

#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Tile extent in units (MVT default 4096).
    pub extent: u32,
    /// Buffer around the tile, in units.
    pub buffer: u32,
    /// Douglas–Peucker tolerance in tile units.
    pub tolerance: f64,
    /// Cap on the encoded layer size in bytes.
    pub max_bytes: usize,
    /// True at (or beyond) the layer's maxzoom: never drop a feature.
    pub at_maxzoom: bool,
    /// Features are in world units (normalised Web Mercator, y down; see
    /// [`crate::grid::lonlat_to_world`]) rather than lon/lat.
    pub world_coords: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            extent: 4096,
            buffer: 64,
            tolerance: 1.0,
            max_bytes: 500_000,
            at_maxzoom: false,
            world_coords: false,
        }
    }
}

/// A feature handed to the renderer.
pub struct TileFeature {
    pub id: u64,
    /// Lon/lat (EPSG:4326).
    pub geometry: Geometry<f64>,
    /// (field name, value); nulls are simply absent. Names are shared (`Arc`): a tile
    /// may hold tens of thousands of features with the same few keys.
    pub props: Vec<(std::sync::Arc<str>, MvtValue)>,
}

/// What one layer came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    pub features: usize,
    /// Dropped to honour the size cap.
    pub dropped_for_size: usize,
    /// Dropped because they collapsed below one unit (never at maxzoom).
    pub collapsed: usize,
}

struct Encoded {
    id: u64,
    gtype: GeomType,
    cmds: Vec<u32>,
    props: Vec<(std::sync::Arc<str>, MvtValue)>,
    /// Point position (for grid thinning) or length/area (for size ordering).
    anchor: (i32, i32),
    weight: f64,
    approx_bytes: usize,
}

/// Renders one MVT layer named `name` and appends it to `tile_buf`.
/// Returns `None` (nothing appended) when no feature falls in the tile.
pub fn render_layer(
    name: &str,
    tile: TileId,
    features: Vec<TileFeature>,
    opts: &RenderOptions,
    tile_buf: &mut Vec<u8>,
) -> Option<LayerStats> {
    let tr = TileTransform::new(tile, opts.extent);
    let lo = -f64::from(opts.buffer);
    let hi = f64::from(opts.extent + opts.buffer);
    let clip = Rect::new(Coord { x: lo, y: lo }, Coord { x: hi, y: hi });
    let mut stats = LayerStats::default();
    let mut enc = Vec::with_capacity(features.len());
    for f in features {
        let mut g = f.geometry;
        to_tile(&mut g, &tr, opts.world_coords);
        match encode_geometry(&g, &clip, opts) {
            Some((gtype, cmds, anchor, weight)) => {
                let approx = cmds.len() * 2 + f.props.len() * 4 + 8;
                enc.push(Encoded {
                    id: f.id,
                    gtype,
                    cmds,
                    props: f.props,
                    anchor,
                    weight,
                    approx_bytes: approx,
                })
            }
            None => {
                // Outside the buffered tile, or collapsed (and not at maxzoom).
                if !is_outside(&g, &clip) {
                    stats.collapsed += 1;
                }
            }
        }
    }
    if enc.is_empty() {
        return None;
    }
    let total = enc.len();
    // The per-feature size is an estimate (the key/value tables are shared): thin,
    // encode, and thin harder while the real layer is over the cap.
    let mut target = opts.max_bytes;
    let layer_bytes = loop {
        thin_to_cap(&mut enc, target);
        enc.sort_by_key(|e| e.id);
        let mut layer = LayerBuilder::new(name, opts.extent);
        for e in &enc {
            layer.add(
                e.id,
                e.gtype,
                &e.cmds,
                e.props.iter().map(|(k, v)| (&**k, v)),
            );
        }
        let mut bytes = Vec::new();
        layer.finish(&mut bytes);
        if bytes.len() <= opts.max_bytes || enc.len() <= 1 {
            break bytes;
        }
        let ratio = opts.max_bytes as f64 / bytes.len() as f64;
        target = ((target as f64) * ratio * 0.95) as usize;
    };
    stats.features = enc.len();
    stats.dropped_for_size = total - enc.len();
    tile_buf.extend_from_slice(&layer_bytes);
    Some(stats)
}

fn is_outside(g: &Geometry<f64>, clip: &Rect<f64>) -> bool {
    match g.bounding_rect() {
        Some(r) => {
            r.max().x < clip.min().x
                || r.min().x > clip.max().x
                || r.max().y < clip.min().y
                || r.min().y > clip.max().y
        }
        None => true,
    }
}

fn to_tile(g: &mut Geometry<f64>, tr: &TileTransform, world: bool) {
    use geo::MapCoordsInPlace;
    g.map_coords_in_place(|c| {
        let (x, y) = if world {
            tr.apply_world(c.x, c.y)
        } else {
            tr.apply(c.x, c.y)
        };
        Coord { x, y }
    });
}

fn q(c: Coord<f64>) -> (i32, i32) {
    (c.x.round() as i32, c.y.round() as i32)
}

/// Quantized line without repeated points.
fn quantize(l: &LineString<f64>) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = Vec::with_capacity(l.0.len());
    for c in &l.0 {
        let p = q(*c);
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// Twice the signed area, y down: positive = clockwise on screen = MVT exterior.
fn area2(ring: &[(i32, i32)]) -> i64 {
    let n = ring.len();
    let mut s = 0i64;
    for i in 0..n {
        let (x1, y1) = ring[i];
        let (x2, y2) = ring[(i + 1) % n];
        s += i64::from(x1) * i64::from(y2) - i64::from(x2) * i64::from(y1);
    }
    s
}

type GeomOut = (GeomType, Vec<u32>, (i32, i32), f64);

fn encode_geometry(g: &Geometry<f64>, clip: &Rect<f64>, opts: &RenderOptions) -> Option<GeomOut> {
    match g {
        // One point: one small allocation (dense point tiles hold tens of thousands).
        Geometry::Point(p) => {
            let c = p.0;
            let inside = clip.min().x <= c.x
                && c.x <= clip.max().x
                && clip.min().y <= c.y
                && c.y <= clip.max().y;
            if !inside {
                return None;
            }
            let (x, y) = q(c);
            let cmds = vec![
                9, // MoveTo, count 1
                crate::mvt::zigzag(i64::from(x)) as u32,
                crate::mvt::zigzag(i64::from(y)) as u32,
            ];
            Some((GeomType::Point, cmds, (x, y), 0.0))
        }
        Geometry::MultiPoint(_) => {
            let pts: Vec<(i32, i32)> = match g {
                Geometry::MultiPoint(mp) => mp.0.iter().map(|p| p.0).collect(),
                _ => Vec::new(),
            }
            .into_iter()
            .filter(|c| {
                clip.min().x <= c.x
                    && c.x <= clip.max().x
                    && clip.min().y <= c.y
                    && c.y <= clip.max().y
            })
            .map(q)
            .collect();
            let first = *pts.first()?;
            let mut c = Commands::default();
            c.points(&pts);
            Some((GeomType::Point, c.ints, first, 0.0))
        }
        Geometry::Line(_) | Geometry::LineString(_) | Geometry::MultiLineString(_) => {
            let lines: Vec<LineString<f64>> = match g {
                Geometry::Line(l) => vec![LineString::from(vec![l.start, l.end])],
                Geometry::LineString(l) => vec![l.clone()],
                Geometry::MultiLineString(ml) => ml.0.clone(),
                _ => Vec::new(),
            };
            encode_lines(MultiLineString(lines), clip, opts)
        }
        Geometry::Polygon(_)
        | Geometry::MultiPolygon(_)
        | Geometry::Rect(_)
        | Geometry::Triangle(_) => {
            let mp = match g {
                Geometry::Polygon(p) => MultiPolygon(vec![p.clone()]),
                Geometry::MultiPolygon(mp) => mp.clone(),
                Geometry::Rect(r) => MultiPolygon(vec![r.to_polygon()]),
                Geometry::Triangle(t) => MultiPolygon(vec![t.to_polygon()]),
                _ => MultiPolygon(Vec::new()),
            };
            encode_polygons(mp, clip, opts)
        }
        Geometry::GeometryCollection(gc) => {
            // MVT has no collections: the first part that survives stands for it.
            gc.0.iter().find_map(|p| encode_geometry(p, clip, opts))
        }
    }
}

fn inside(r: &Rect<f64>, clip: &Rect<f64>) -> bool {
    r.min().x >= clip.min().x
        && r.max().x <= clip.max().x
        && r.min().y >= clip.min().y
        && r.max().y <= clip.max().y
}

fn encode_lines(
    ml: MultiLineString<f64>,
    clip: &Rect<f64>,
    opts: &RenderOptions,
) -> Option<GeomOut> {
    let bbox = ml.bounding_rect()?;
    let clipped = if inside(&bbox, clip) {
        ml
    } else {
        let poly = clip.to_polygon();
        // geo's boolean ops can panic on degenerate input; an unclipped line is still
        // a correct (if larger) tile, clients clip to the tile anyway.
        std::panic::catch_unwind(|| poly.clip(&ml, false)).unwrap_or(ml)
    };
    let mut c = Commands::default();
    let mut weight = 0.0;
    let mut anchor = None;
    for l in &clipped.0 {
        let s = l.simplify(opts.tolerance);
        let pts = quantize(&s);
        if pts.len() >= 2 {
            anchor.get_or_insert(pts[0]);
            weight += pts
                .windows(2)
                .map(|w| f64::from((w[1].0 - w[0].0).abs() + (w[1].1 - w[0].1).abs()))
                .sum::<f64>();
            c.line(&pts);
        }
    }
    if c.ints.is_empty() {
        if !opts.at_maxzoom {
            return None;
        }
        // Never drop at maxzoom: a one-unit line where it collapsed.
        let p = clipped.0.first().and_then(|l| l.0.first()).map(|c| q(*c))?;
        c.line(&[p, (p.0 + 1, p.1)]);
        return Some((GeomType::LineString, c.ints, p, 1.0));
    }
    Some((
        GeomType::LineString,
        c.ints,
        anchor.unwrap_or((0, 0)),
        weight,
    ))
}

fn encode_polygons(
    mp: MultiPolygon<f64>,
    clip: &Rect<f64>,
    opts: &RenderOptions,
) -> Option<GeomOut> {
    let bbox = mp.bounding_rect()?;
    let clipped = if inside(&bbox, clip) {
        mp
    } else {
        let poly = clip.to_polygon();
        std::panic::catch_unwind(|| mp.intersection(&MultiPolygon(vec![poly]))).unwrap_or(mp)
    };
    let mut c = Commands::default();
    let mut weight = 0.0;
    let mut anchor = None;
    for p in &clipped.0 {
        let s: Polygon<f64> = p.simplify(opts.tolerance);
        let mut ext = quantize(s.exterior());
        if ext.len() > 1 && ext.first() == ext.last() {
            ext.pop();
        }
        if ext.len() < 3 {
            continue;
        }
        let a = area2(&ext);
        if a == 0 {
            continue;
        }
        if a < 0 {
            ext.reverse();
        }
        anchor.get_or_insert(ext[0]);
        weight += a.unsigned_abs() as f64 / 2.0;
        c.ring(&ext);
        for hole in s.interiors() {
            let mut h = quantize(hole);
            if h.len() > 1 && h.first() == h.last() {
                h.pop();
            }
            if h.len() < 3 {
                continue;
            }
            let ha = area2(&h);
            if ha == 0 {
                continue;
            }
            if ha > 0 {
                h.reverse();
            }
            c.ring(&h);
        }
    }
    if c.ints.is_empty() {
        if !opts.at_maxzoom {
            return None;
        }
        // Never drop at maxzoom: a one-unit square where it collapsed.
        let p = clipped
            .0
            .first()
            .and_then(|p| p.exterior().0.first())
            .map(|c| q(*c))?;
        c.ring(&[p, (p.0 + 1, p.1), (p.0 + 1, p.1 + 1), (p.0, p.1 + 1)]);
        return Some((GeomType::Polygon, c.ints, p, 1.0));
    }
    Some((GeomType::Polygon, c.ints, anchor.unwrap_or((0, 0)), weight))
}

/// Thins `enc` in place until its estimated size fits `max_bytes`; returns how many
/// features were dropped.
fn thin_to_cap(enc: &mut Vec<Encoded>, max_bytes: usize) -> usize {
    let total: usize = enc.iter().map(|e| e.approx_bytes).sum();
    if total <= max_bytes {
        return 0;
    }
    let before = enc.len();
    let points = enc.iter().all(|e| e.gtype == GeomType::Point);
    if points {
        enc.sort_by_key(|e| e.id);
        let mut cell = 2i32;
        loop {
            let mut seen = std::collections::HashSet::new();
            let kept: Vec<bool> = enc
                .iter()
                .map(|e| seen.insert((e.anchor.0.div_euclid(cell), e.anchor.1.div_euclid(cell))))
                .collect();
            let size: usize = enc
                .iter()
                .zip(&kept)
                .filter(|(_, k)| **k)
                .map(|(e, _)| e.approx_bytes)
                .sum();
            if size <= max_bytes || cell > 1 << 16 {
                let mut it = kept.into_iter();
                enc.retain(|_| it.next().unwrap_or(false));
                break;
            }
            cell *= 2;
        }
    } else {
        enc.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.id.cmp(&b.id)));
        let mut size = 0usize;
        let mut keep = 0usize;
        for e in enc.iter() {
            if size + e.approx_bytes > max_bytes {
                break;
            }
            size += e.approx_bytes;
            keep += 1;
        }
        enc.truncate(keep.max(1));
    }
    before - enc.len()
}

/// Point generalisation for one zoom level: of the points that fall on the same tile
/// unit at zoom `z` (global grid of 4096 units per tile), only the lowest id is drawn.
/// Levels nest (a unit at z-1 is 2x2 units at z), so the size cap's grid thinning at
/// zoom z is simply the level of a lower zoom. Built once per layer version and zoom,
/// it lets a z0 tile of a million points touch only the few points it shows.
pub struct PointLevel {
    z: u8,
    /// (key, id-order position, world x, world y), sorted by key: the Morton (Z-order)
    /// code of the point's tile unit. Every tile of every zoom <= z is then one
    /// contiguous run (found by binary search), and a coarser level is one pass over
    /// a finer one: a unit at z-1 is a run of up to four units at z.
    items: Vec<(u64, u32, f64, f64)>,
}

/// The finest level: zoom 20 (units under 4 cm; 2 x 32 bits fill the Morton key).
/// Finer tiles reuse it.
pub const LEVEL_MAX_ZOOM: u8 = 20;

impl PointLevel {
    /// `points`: (id-order position, world x, world y), see
    /// [`crate::grid::lonlat_to_world`]. The only step that sorts: coarser levels
    /// then come from [`PointLevel::coarsen`] in linear time.
    pub fn build(z: u8, points: &[(u32, f64, f64)]) -> PointLevel {
        let z = z.min(LEVEL_MAX_ZOOM);
        let units = 1u64 << (z + 12);
        let n = units as f64;
        let max = (units - 1) as f64;
        // (key, position, index into `points`).
        let mut keyed: Vec<(u64, u32, u32)> = Vec::with_capacity(points.len());
        for (i, &(pos, x, y)) in (0u32..).zip(points) {
            let gx = (x * n).floor().clamp(0.0, max) as u32;
            let gy = (y * n).floor().clamp(0.0, max) as u32;
            keyed.push((morton(gx, gy), pos, i));
        }
        keyed.sort_unstable();
        // Sorted by (key, position): the first of each key has the lowest position.
        keyed.dedup_by_key(|k| k.0);
        let items = keyed
            .into_iter()
            .filter_map(|(k, pos, i)| {
                let &(_, x, y) = points.get(i as usize)?;
                Some((k, pos, x, y))
            })
            .collect();
        PointLevel { z, items }
    }

    /// This level generalised to zoom `z` (<= this level's): of each run of points
    /// that share a unit at `z`, the lowest position. Equal to building it from all
    /// points, because levels nest.
    pub fn coarsen(&self, z: u8) -> PointLevel {
        let z = z.min(self.z);
        let shift = 2 * u32::from(self.z - z);
        let mut items: Vec<(u64, u32, f64, f64)> = Vec::new();
        for &(k, pos, x, y) in &self.items {
            let k = k >> shift;
            match items.last_mut() {
                Some(last) if last.0 == k => {
                    if pos < last.1 {
                        *last = (k, pos, x, y);
                    }
                }
                _ => items.push((k, pos, x, y)),
            }
        }
        PointLevel { z, items }
    }

    pub fn zoom(&self) -> u8 {
        self.z
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All of this level's points: (id-order position, world x, world y).
    pub fn points(&self) -> Vec<(u32, f64, f64)> {
        self.items.iter().map(|i| (i.1, i.2, i.3)).collect()
    }

    /// This level's points inside `bbox` (world units: min x, min y, max x, max y)
    /// around `tile` (of zoom >= the level's): (id-order position, world x, world y).
    pub fn query(&self, tile: TileId, bbox: [f64; 4]) -> Vec<(u32, f64, f64)> {
        let shift = tile.z.saturating_sub(self.z);
        let (tx, ty) = (i64::from(tile.x >> shift), i64::from(tile.y >> shift));
        let tiles = 1i64 << self.z;
        let mut out = Vec::new();
        for dx in -1..=1 {
            for dy in -1..=1 {
                let (x, y) = (tx + dx, ty + dy);
                if !(0..tiles).contains(&x) || !(0..tiles).contains(&y) {
                    continue;
                }
                // A tile's units share its Morton code as their top bits.
                let lo = morton(x as u32, y as u32) << 24;
                let hi = lo + (1 << 24);
                let start = self.items.partition_point(|i| i.0 < lo);
                for i in self.items[start..].iter().take_while(|i| i.0 < hi) {
                    if bbox[0] <= i.2 && i.2 <= bbox[2] && bbox[1] <= i.3 && i.3 <= bbox[3] {
                        out.push((i.1, i.2, i.3));
                    }
                }
            }
        }
        out
    }
}

/// Interleaves the bits of x and y (x in the even bits): the Z-order curve.
fn morton(x: u32, y: u32) -> u64 {
    fn spread(v: u32) -> u64 {
        let mut v = u64::from(v);
        v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
        v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
        v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    }
    spread(x) | (spread(y) << 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{point, polygon};

    fn tile() -> TileId {
        TileId::new(12, 906, 1745).unwrap()
    }

    #[test]
    fn polygon_is_clipped_and_wound_for_mvt() {
        let b = tile().bounds_lonlat(0, 4096);
        // A square much larger than the tile, counter-clockwise in lon/lat.
        let big = polygon![(x: b[0] - 1.0, y: b[1] - 1.0), (x: b[2] + 1.0, y: b[1] - 1.0), (x: b[2] + 1.0, y: b[3] + 1.0), (x: b[0] - 1.0, y: b[3] + 1.0)];
        let mut buf = Vec::new();
        let f = TileFeature {
            id: 7,
            geometry: Geometry::Polygon(big),
            props: vec![],
        };
        let s = render_layer("l", tile(), vec![f], &RenderOptions::default(), &mut buf).unwrap();
        assert_eq!(s.features, 1);
        // The clipped square is the buffered tile: MoveTo + 3 LineTo + ClosePath.
        assert!(!buf.is_empty());
    }

    #[test]
    fn outside_points_are_dropped_and_cap_thins() {
        let b = tile().bounds_lonlat(0, 4096);
        let mut feats = Vec::new();
        for i in 0..20_000u64 {
            let lon = b[0] + (b[2] - b[0]) * ((i % 200) as f64 / 200.0);
            let lat = b[1] + (b[3] - b[1]) * ((i / 200) as f64 / 100.0);
            feats.push(TileFeature {
                id: i,
                geometry: Geometry::Point(point!(x: lon, y: lat)),
                props: vec![("n".into(), MvtValue::Uint(i))],
            });
        }
        feats.push(TileFeature {
            id: 99_999,
            geometry: Geometry::Point(point!(x: b[0] - 1.0, y: b[1])),
            props: vec![],
        });
        let opts = RenderOptions {
            max_bytes: 50_000,
            ..Default::default()
        };
        let mut buf = Vec::new();
        let s = render_layer("l", tile(), feats, &opts, &mut buf).unwrap();
        assert!(
            s.dropped_for_size > 0 && s.features + s.dropped_for_size == 20_000,
            "{s:?}"
        );
        assert!(buf.len() <= 60_000, "{}", buf.len());
    }

    #[test]
    fn morton_codes() {
        assert_eq!(morton(1, 0), 1);
        assert_eq!(morton(0, 1), 2);
        assert_eq!(morton(3, 3), 15);
        assert_eq!(morton(u32::MAX, u32::MAX), u64::MAX);
        // A unit's code starts with its tile's code (12 bits of unit per axis).
        assert_eq!(morton(5 * 4096 + 17, 9 * 4096 + 4000) >> 24, morton(5, 9));
    }

    #[test]
    fn point_levels_nest_and_keep_lowest_ids() {
        let pts: Vec<(u32, f64, f64)> = (0..10_000u32)
            .map(|i| {
                let (x, y) = crate::grid::lonlat_to_world(
                    -100.42 + 0.24 * f64::from(i % 100) / 100.0,
                    25.62 + 0.16 * f64::from(i / 100) / 100.0,
                );
                (i, x, y)
            })
            .collect();
        let fine = PointLevel::build(5, &pts);
        let coarse = fine.coarsen(4);
        let direct = PointLevel::build(4, &pts);
        assert_eq!(
            PointLevel::build(4, &fine.points()).points().len(),
            coarse.len()
        );
        // From the finest level down to zoom 2, in one pass each.
        let top = PointLevel::build(20, &pts);
        let mut a: Vec<u32> = top.coarsen(2).points().iter().map(|p| p.0).collect();
        let mut b: Vec<u32> = PointLevel::build(2, &pts)
            .points()
            .iter()
            .map(|p| p.0)
            .collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        let mut a: Vec<u32> = coarse.points().iter().map(|p| p.0).collect();
        let mut b: Vec<u32> = direct.points().iter().map(|p| p.0).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(
            a, b,
            "building from the finer level must equal building from all points"
        );
        assert!(coarse.len() < fine.len() && fine.len() <= pts.len());
        let t = TileId::new(5, 7, 13).unwrap();
        let b = t.bounds_world(64, 4096);
        let q = fine.query(t, b);
        assert_eq!(q.len(), fine.len(), "the whole city is in this tile");
        // A coarser level queried with the finer tile finds its parent's points.
        assert_eq!(coarse.query(t, b).len(), coarse.len());
        // A small tile: exactly the level's points inside its buffered bounds.
        let fine = PointLevel::build(12, &pts);
        let t = TileId::new(12, 906, 1745).unwrap();
        let b = t.bounds_world(64, 4096);
        let mut got: Vec<u32> = fine.query(t, b).iter().map(|p| p.0).collect();
        got.sort_unstable();
        let mut want: Vec<u32> = fine
            .points()
            .into_iter()
            .filter(|p| b[0] <= p.1 && p.1 <= b[2] && b[1] <= p.2 && p.2 <= b[3])
            .map(|p| p.0)
            .collect();
        want.sort_unstable();
        assert!(!want.is_empty() && want.len() < fine.len());
        assert_eq!(got, want);
    }
}
