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
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            extent: 4096,
            buffer: 64,
            tolerance: 1.0,
            max_bytes: 500_000,
            at_maxzoom: false,
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
        to_tile(&mut g, &tr);
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

fn to_tile(g: &mut Geometry<f64>, tr: &TileTransform) {
    use geo::MapCoordsInPlace;
    g.map_coords_in_place(|c| {
        let (x, y) = tr.apply(c.x, c.y);
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
}
