//! Point layers' tile index: which points a tile draws, decided without geometry
//! decoding, trigonometry or hashing.
//!
//! Every point is keyed once per layer version by the Morton (Z-order) code of its
//! position on a 2^32 × 2^32 grid over the Web Mercator world (units of about 1 cm at
//! the equator). Sorted by that key, the points of any tile of zoom ≤ 20 are one
//! contiguous run (the tile's code is the key's top bits), its buffer a few short
//! runs, and the points sharing one tile unit (1/4096 of a tile) at any zoom are
//! consecutive — so generalisation ("one point per unit, the lowest id-order position
//! wins", the same rule as the R-tree path) is a linear pass with no hash set.
//!
//! Units nest (a unit at z−1 is 2×2 units at z), so the size cap's thinning is the
//! same rule at a lower zoom — a spatially even subset — and one pass over a tile's
//! sorted keys counts how many points every zoom's rule would keep.

use crate::grid::{lonlat_to_world, TileId};

/// The finest zoom the index resolves: a unit at z20 is 4,096 grid cells, so the
/// positions it gives are exact to well under one unit up to here. Finer tiles take
/// the geometry path.
pub const INDEX_MAX_ZOOM: u8 = 20;

/// Bits per axis of the grid (zoom 20 + 12 bits of 4,096 units per tile).
const GRID_BITS: u32 = 32;

/// (Morton key on the 2^32 grid, id-order position).
type Keyed = (u64, u32);

/// A point a tile draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// Its place (see [`tile_coords`]).
    pub key: u64,
    /// Its id-order position.
    pub pos: u32,
    /// Its index in key order (see [`PointIndex::positions`]): callers keep per-point
    /// data in that order to read it sequentially.
    pub slot: u32,
}

pub struct PointIndex {
    /// Every point, sorted by (key, position).
    base: Vec<Keyed>,
    /// `split[i]`: bits per axis that `base[i]`'s key shares with `base[i - 1]`'s (32:
    /// the same key; `split[0]` = 0). Counting a tile's units at every zoom reads these
    /// bytes instead of the 16-byte items.
    split: Vec<u8>,
}

/// Which points a tile draws.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Sorted by key.
    pub points: Vec<Picked>,
    /// How many the tile would draw without the count cap (after generalisation).
    pub distinct: usize,
    /// The zoom whose units generalised `points` (the tile's own, or lower when the cap
    /// thinned them).
    pub level: u8,
}

/// A tile's buffered area on the grid: key ranges (sorted, disjoint) and the exact box.
struct Area {
    ranges: Vec<Range>,
    /// [min x, min y, max x, max y] on the grid, inclusive.
    bbox: [i64; 4],
}

impl PointIndex {
    /// `points`: (id-order position, lon, lat). Points outside Web Mercator's latitude
    /// range are clamped to its edge.
    pub fn build(points: impl IntoIterator<Item = (u32, f64, f64)>) -> PointIndex {
        let scale = (1u64 << GRID_BITS) as f64;
        let max = (u32::MAX) as f64;
        let mut base: Vec<Keyed> = points
            .into_iter()
            .map(|(pos, lon, lat)| {
                let (x, y) = lonlat_to_world(lon, lat);
                let gx = (x * scale).floor().clamp(0.0, max) as u32;
                let gy = (y * scale).floor().clamp(0.0, max) as u32;
                (morton(gx, gy), pos)
            })
            .collect();
        base.sort_unstable();
        let split = std::iter::once(0)
            .chain(base.windows(2).map(|w| common_bits(w[0].0, w[1].0)))
            .collect();
        PointIndex { base, split }
    }

    pub fn len(&self) -> usize {
        self.base.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    /// The points' id-order positions in key order (slot order).
    pub fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.base.iter().map(|b| b.1)
    }

    /// The points `tile` (zoom <= [`INDEX_MAX_ZOOM`]) draws, with its buffer of
    /// `buffer` units of `extent`: one per unit at the tile's zoom (every point when
    /// `keep_all`, at the layer's maxzoom), or, when that is more than `max_count`,
    /// one per unit of the highest lower zoom that leaves at most `max_count`.
    ///
    /// Two passes over the points in the tile and no allocation but the result: the
    /// first counts, for every zoom at once, how many units the tile's points fill
    /// (sorted by key, two neighbours share a unit down to the zoom their keys' common
    /// prefix reaches), the second keeps one point per unit of the chosen zoom.
    pub fn select(
        &self,
        tile: TileId,
        extent: u32,
        buffer: u32,
        max_count: usize,
        keep_all: bool,
    ) -> Selection {
        let z = tile.z.min(INDEX_MAX_ZOOM);
        let area = Area::of(tile, extent, buffer);
        let max_count = max_count.max(1);
        // shared[b]: neighbours whose keys share exactly b bits per axis (32: equal).
        let mut shared = [0usize; GRID_BITS as usize + 1];
        let mut total = 0usize;
        let mut prev: Option<u64> = None;
        let mut from = 0;
        for r in &area.ranges {
            let (start, end) = r.within(&self.base, from);
            from = end;
            let run = self.base.get(start..end).unwrap_or(&[]);
            if r.inside {
                let (Some(first), Some(last)) = (run.first(), run.last()) else {
                    continue;
                };
                if let Some(p) = prev {
                    shared[usize::from(common_bits(p, first.0))] += 1;
                }
                for &b in self.split.get(start + 1..end).unwrap_or(&[]) {
                    shared[usize::from(b)] += 1;
                }
                total += run.len();
                prev = Some(last.0);
            } else {
                for &(k, _) in run {
                    if area.contains(k) {
                        if let Some(p) = prev {
                            shared[usize::from(common_bits(p, k))] += 1;
                        }
                        prev = Some(k);
                        total += 1;
                    }
                }
            }
        }
        // Units at zoom l have l + 12 bits per axis: neighbours sharing fewer start a
        // new one.
        let units = |l: u8| -> usize {
            if total == 0 {
                return 0;
            }
            1 + shared[..usize::from(l) + 12].iter().sum::<usize>()
        };
        let distinct = if keep_all { total } else { units(z) };
        let keep_every = keep_all && total <= max_count;
        let mut level = z;
        while !keep_every && units(level) > max_count && level > 0 {
            level -= 1;
        }
        let mut points = Vec::with_capacity(if keep_every { total } else { units(level) });
        if keep_every {
            area.for_each(&self.base, |key, pos, slot| {
                points.push(Picked { key, pos, slot })
            });
        } else {
            let shift = unit_shift(level);
            let mut unit = u64::MAX;
            area.for_each(&self.base, |key, pos, slot| match points.last_mut() {
                Some(last) if key >> shift == unit => {
                    if pos < last.pos {
                        *last = Picked { key, pos, slot };
                    }
                }
                _ => {
                    points.push(Picked { key, pos, slot });
                    unit = key >> shift;
                }
            });
        }
        Selection {
            points,
            distinct,
            level,
        }
    }

    /// `sel` thinned to the units of the next lower zoom (nothing when already at 0).
    pub fn thin(&self, sel: &Selection) -> Selection {
        let level = sel.level.saturating_sub(1);
        Selection {
            points: coarsen(&sel.points, level),
            distinct: sel.distinct,
            level,
        }
    }
}

impl Area {
    fn of(tile: TileId, extent: u32, buffer: u32) -> Area {
        let z = u32::from(tile.z.min(INDEX_MAX_ZOOM));
        let span = 1i64 << (GRID_BITS - z);
        let (x0, y0) = (i64::from(tile.x) * span, i64::from(tile.y) * span);
        let b = (i128::from(buffer) * i128::from(span) / i128::from(extent.max(1))) as i64;
        let world = 1i64 << GRID_BITS;
        let bbox = [
            (x0 - b).max(0),
            (y0 - b).max(0),
            (x0 + span + b).min(world - 1),
            (y0 + span + b).min(world - 1),
        ];
        let mut ranges = vec![Range::of(z, tile.x, tile.y, &bbox)];
        if buffer > 0 {
            // The buffer as a ring of sub-tiles at least `buffer` units wide: at the
            // default 64 of 4,096, the 260 tiles of zoom z+6 around the tile.
            let mut k = 0u32;
            while z + k < GRID_BITS && u64::from(extent) >> (k + 1) >= u64::from(buffer) {
                k += 1;
            }
            let zs = z + k;
            let n = 1i64 << zs;
            let (sx0, sy0) = (i64::from(tile.x) << k, i64::from(tile.y) << k);
            let (sx1, sy1) = (sx0 + (1 << k), sy0 + (1 << k));
            for cy in sy0 - 1..=sy1 {
                for cx in sx0 - 1..=sx1 {
                    let inside = (sx0..sx1).contains(&cx) && (sy0..sy1).contains(&cy);
                    if inside || !(0..n).contains(&cx) || !(0..n).contains(&cy) {
                        continue;
                    }
                    ranges.push(Range::of(zs, cx as u32, cy as u32, &bbox));
                }
            }
        }
        ranges.sort_unstable();
        Area { ranges, bbox }
    }

    fn contains(&self, k: u64) -> bool {
        let (gx, gy) = unmorton(k);
        let (gx, gy) = (i64::from(gx), i64::from(gy));
        self.bbox[0] <= gx && gx <= self.bbox[2] && self.bbox[1] <= gy && gy <= self.bbox[3]
    }

    /// Visits the items of `items` (sorted by key) inside the buffered tile, in key
    /// order: (key, position, index in `items`).
    fn for_each(&self, items: &[Keyed], mut f: impl FnMut(u64, u32, u32)) {
        let mut from = 0;
        for r in &self.ranges {
            let (start, end) = r.within(items, from);
            from = end;
            let run = items
                .get(start..end)
                .unwrap_or(&[])
                .iter()
                .zip(start as u32..);
            if r.inside {
                // The whole range is in the box: no per-point test (the tile itself
                // and, at power-of-two buffers, every sub-tile of its ring).
                for (&(k, pos), slot) in run {
                    f(k, pos, slot);
                }
            } else {
                for (&(k, pos), slot) in run {
                    if self.contains(k) {
                        f(k, pos, slot);
                    }
                }
            }
        }
    }
}

/// The keys of one tile of the area, and whether all of the tile is in its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    lo: u64,
    hi: u64,
    inside: bool,
}

impl Range {
    fn of(z: u32, x: u32, y: u32, bbox: &[i64; 4]) -> Range {
        let (lo, hi) = tile_range(z, x, y);
        let span = 1i64 << (GRID_BITS - z);
        let (x0, y0) = (i64::from(x) * span, i64::from(y) * span);
        let inside =
            bbox[0] <= x0 && x0 + span - 1 <= bbox[2] && bbox[1] <= y0 && y0 + span - 1 <= bbox[3];
        Range { lo, hi, inside }
    }

    /// The indexes [start, end) of `items` (sorted by key) in this range, searching
    /// from index `from` on (ranges are visited in order).
    fn within(&self, items: &[Keyed], from: usize) -> (usize, usize) {
        let rest = items.get(from..).unwrap_or(&[]);
        let start = rest.partition_point(|i| i.0 < self.lo);
        let len = rest[start..].partition_point(|i| i.0 <= self.hi);
        (from + start, from + start + len)
    }
}

/// Bits per axis two keys share from the top (32: equal keys).
fn common_bits(a: u64, b: u64) -> u8 {
    ((a ^ b).leading_zeros() / 2) as u8
}

/// The keys of tile (z, x, y), inclusive.
fn tile_range(z: u32, x: u32, y: u32) -> (u64, u64) {
    if z == 0 {
        return (0, u64::MAX);
    }
    let shift = 2 * (GRID_BITS - z.min(GRID_BITS));
    let lo = morton(x, y) << shift;
    (lo, lo | ((1u64 << shift) - 1))
}

/// One item per unit at zoom `z` of `items` (sorted by key): the lowest position,
/// keeping its key (its exact place).
fn coarsen(items: &[Picked], z: u8) -> Vec<Picked> {
    let shift = unit_shift(z);
    let mut out: Vec<Picked> = Vec::with_capacity(items.len());
    let mut unit = u64::MAX;
    for &p in items {
        let u = p.key >> shift;
        match out.last_mut() {
            Some(last) if u == unit => {
                if p.pos < last.pos {
                    *last = p;
                }
            }
            _ => {
                out.push(p);
                unit = u;
            }
        }
    }
    out
}

/// Keys shifted right by this give the unit at zoom `z` (12 + z bits per axis).
fn unit_shift(z: u8) -> u32 {
    2 * (GRID_BITS - 12 - u32::from(z.min(INDEX_MAX_ZOOM)))
}

/// `key`'s position in tile units of `tile` (zoom <= [`INDEX_MAX_ZOOM`]) with
/// `extent` units, y down, rounded: the grid cell's centre, to the nearest unit.
pub fn tile_coords(key: u64, tile: TileId, extent: u32) -> (i32, i32) {
    let (gx, gy) = unmorton(key);
    let scale = f64::from(extent) * f64::from(1u32 << tile.z.min(INDEX_MAX_ZOOM))
        / (1u64 << GRID_BITS) as f64;
    let e = f64::from(extent);
    let tx = (f64::from(gx) + 0.5) * scale - f64::from(tile.x) * e;
    let ty = (f64::from(gy) + 0.5) * scale - f64::from(tile.y) * e;
    (tx.round() as i32, ty.round() as i32)
}

/// Interleaves the bits of x and y (x in the even bits): the Z-order curve.
pub fn morton(x: u32, y: u32) -> u64 {
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

/// The inverse of [`morton`].
pub fn unmorton(k: u64) -> (u32, u32) {
    fn squash(mut v: u64) -> u32 {
        v &= 0x5555_5555_5555_5555;
        v = (v | (v >> 1)) & 0x3333_3333_3333_3333;
        v = (v | (v >> 2)) & 0x0f0f_0f0f_0f0f_0f0f;
        v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
        v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
        v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
        v as u32
    }
    (squash(k), squash(k >> 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::TileTransform;
    use std::collections::BTreeMap;

    /// 40,000 points over Monterrey, some stacked on the same spot.
    fn city() -> Vec<(u32, f64, f64)> {
        (0..40_000u32)
            .map(|i| {
                let j = i % 30_000;
                let lon = -100.42 + 0.24 * f64::from((j * 7919) % 1000) / 1000.0;
                let lat = 25.62 + 0.16 * f64::from((j * 104_729) % 997) / 997.0;
                (i, lon, lat)
            })
            .collect()
    }

    /// The rule, brute force: points inside the buffered tile (exact tile units),
    /// one per unit of zoom `level` (the lowest position).
    fn brute(pts: &[(u32, f64, f64)], tile: TileId, buffer: u32, level: u8) -> Vec<u32> {
        let tr = TileTransform::new(tile, 4096);
        let (lo, hi) = (-f64::from(buffer), 4096.0 + f64::from(buffer));
        let mut best: BTreeMap<(i64, i64), u32> = BTreeMap::new();
        for &(pos, lon, lat) in pts {
            let (wx, wy) = lonlat_to_world(lon, lat);
            let (tx, ty) = tr.apply_world(wx, wy);
            if !(lo..=hi).contains(&tx) || !(lo..=hi).contains(&ty) {
                continue;
            }
            let n = 4096.0 * f64::from(1u32 << level);
            let unit = ((wx * n).floor() as i64, (wy * n).floor() as i64);
            let e = best.entry(unit).or_insert(pos);
            *e = (*e).min(pos);
        }
        let mut v: Vec<u32> = best.into_values().collect();
        v.sort_unstable();
        v
    }

    fn positions(sel: &Selection) -> Vec<u32> {
        let mut v: Vec<u32> = sel.points.iter().map(|p| p.pos).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn morton_round_trips() {
        assert_eq!(morton(1, 0), 1);
        assert_eq!(morton(0, 1), 2);
        assert_eq!(morton(u32::MAX, u32::MAX), u64::MAX);
        for (x, y) in [(0, 0), (5, 9), (u32::MAX, 7), (123_456_789, 987_654_321)] {
            assert_eq!(unmorton(morton(x, y)), (x, y));
        }
        // A tile's keys share its code as their top bits.
        let (lo, hi) = tile_range(12, 906, 1745);
        assert_eq!(lo >> 40, morton(906, 1745));
        assert_eq!(hi >> 40, morton(906, 1745));
        assert_eq!(tile_range(0, 0, 0), (0, u64::MAX));
    }

    #[test]
    fn selection_equals_the_brute_force_rule() {
        let pts = city();
        let idx = PointIndex::build(pts.iter().copied());
        for (z, x, y) in [
            (12, 906, 1745),
            (14, 3626, 6982),
            (16, 14_505, 27_928),
            (10, 226, 436),
        ] {
            let t = TileId::new(z, x, y).expect("tile");
            let sel = idx.select(t, 4096, 64, usize::MAX, false);
            assert_eq!(sel.level, z as u8);
            let want = brute(&pts, t, 64, z as u8);
            assert!(!want.is_empty(), "{z}/{x}/{y} has points");
            assert_eq!(positions(&sel), want, "{z}/{x}/{y}");
            assert_eq!(sel.distinct, want.len());
            // Without a buffer: only the tile itself.
            let sel = idx.select(t, 4096, 0, usize::MAX, false);
            assert_eq!(positions(&sel), brute(&pts, t, 0, z as u8));
        }
    }

    #[test]
    fn keep_all_keeps_stacked_points() {
        let pts = city();
        let idx = PointIndex::build(pts.iter().copied());
        let t = TileId::new(12, 906, 1745).expect("tile");
        let all = idx.select(t, 4096, 64, usize::MAX, true);
        let one_per_unit = idx.select(t, 4096, 64, usize::MAX, false);
        assert!(all.points.len() > one_per_unit.points.len());
        let tr = TileTransform::new(t, 4096);
        let inside = pts
            .iter()
            .filter(|p| {
                let (wx, wy) = lonlat_to_world(p.1, p.2);
                let (tx, ty) = tr.apply_world(wx, wy);
                (-64.0..=4160.0).contains(&tx) && (-64.0..=4160.0).contains(&ty)
            })
            .count();
        assert_eq!(all.points.len(), inside);
    }

    #[test]
    fn cap_thins_by_lower_zooms() {
        let pts = city();
        let idx = PointIndex::build(pts.iter().copied());
        for (z, x, y) in [(9, 113, 218), (12, 906, 1745)] {
            let t = TileId::new(z, x, y).expect("tile");
            let full = idx.select(t, 4096, 64, usize::MAX, false);
            for cap in [50, 500, full.points.len() / 2] {
                let sel = idx.select(t, 4096, 64, cap, false);
                assert!(sel.points.len() <= cap, "{z}: {} > {cap}", sel.points.len());
                assert!(sel.level < z as u8);
                assert_eq!(sel.distinct, full.distinct);
                // A spatially even subset: the rule at the lower zoom, exactly, and
                // the highest zoom that fits.
                assert_eq!(
                    positions(&sel),
                    brute(&pts, t, 64, sel.level),
                    "{z} cap {cap}"
                );
                assert!(brute(&pts, t, 64, sel.level + 1).len() > cap);
                let thinner = idx.thin(&sel);
                assert_eq!(positions(&thinner), brute(&pts, t, 64, sel.level - 1));
            }
            // At maxzoom the cap first keeps one point per unit.
            let all = idx.select(t, 4096, 64, usize::MAX, true);
            let capped = idx.select(t, 4096, 64, all.points.len() - 1, true);
            assert_eq!(capped.distinct, all.points.len());
            assert!(capped.points.len() < all.points.len());
        }
        let z0 = idx.select(TileId::new(0, 0, 0).expect("tile"), 4096, 64, 100, false);
        assert!(!z0.points.is_empty() && z0.points.len() <= 100);
    }

    #[test]
    fn coordinates_match_the_projection() {
        let pts = city();
        let idx = PointIndex::build(pts.iter().copied());
        let t = TileId::new(14, 3626, 6982).expect("tile");
        let tr = TileTransform::new(t, 4096);
        let by_pos: BTreeMap<u32, (f64, f64)> = pts.iter().map(|p| (p.0, (p.1, p.2))).collect();
        let sel = idx.select(t, 4096, 64, usize::MAX, true);
        assert!(!sel.points.is_empty());
        let slots: Vec<u32> = idx.positions().collect();
        for Picked { key, pos, slot } in sel.points {
            assert_eq!(slots[slot as usize], pos);
            let (lon, lat) = by_pos[&pos];
            let (wx, wy) = lonlat_to_world(lon, lat);
            let (fx, fy) = tr.apply_world(wx, wy);
            let (x, y) = tile_coords(key, t, 4096);
            assert!((f64::from(x) - fx).abs() <= 0.51 && (f64::from(y) - fy).abs() <= 0.51);
        }
    }
}
