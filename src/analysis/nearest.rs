//! Nearest features to a place, in geodesic metres, and each zone's coverage by a
//! layer within a distance ("which colonias lack a park within 1 km").
//!
//! The R-tree is in lon/lat, where degrees are not metres, so a search is a box that
//! provably holds every point within `r` metres (from the ellipsoid's smallest
//! meridian and parallel degree lengths), the exact geodesic distance decides inside
//! it, and `r` grows until `k` features are within it.

use geo::{Centroid, ClosestPoint, Coord, Distance, MapCoords, Point};
use layers::index::LoadedLayer;
use rayon::prelude::*;

use super::zones::{Location, Zones};
use super::{allowed, Allowed};

/// Half the Earth's circumference: no two points are farther apart.
const MAX_DISTANCE_M: f64 = 20_040_000.0;

/// A feature near the query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub pos: u32,
    pub distance_m: f64,
}

/// Lon/lat boxes (split at the antimeridian) that hold every point within `r` metres
/// of (lon, lat). Conservative: along a meridian a degree is at least 110,574 m, along
/// a parallel at latitude φ at least 111,319·cos φ m (the bounds use slightly smaller
/// figures), and a path shorter than `r` never leaves the latitude band.
pub fn search_boxes(lon: f64, lat: f64, r: f64) -> Vec<[f64; 4]> {
    let dlat = r / 110_000.0;
    let (s, n) = (lat - dlat, lat + dlat);
    let full = |s: f64, n: f64| vec![[-180.0, s.max(-90.0), 180.0, n.min(90.0)]];
    if s <= -89.9 || n >= 89.9 {
        return full(s, n);
    }
    let maxabs = s.abs().max(n.abs()).to_radians();
    let dlon = r / (111_000.0 * maxabs.cos());
    if dlon >= 180.0 {
        return full(s, n);
    }
    let (w, e) = (lon - dlon, lon + dlon);
    if w < -180.0 {
        vec![[-180.0, s, e, n], [w + 360.0, s, 180.0, n]]
    } else if e > 180.0 {
        vec![[w, s, 180.0, n], [-180.0, s, e - 360.0, n]]
    } else {
        vec![[w, s, e, n]]
    }
}

/// Geodesic metres from `q` to the feature at `pos` (0 inside a polygon). Points are
/// exact; for lines and polygons the closest point is found in a local equirectangular
/// frame around `q` and its geodesic distance taken (within a fraction of a percent at
/// city scale).
fn distance_to(
    layer: &LoadedLayer,
    pos: u32,
    bbox: [f64; 4],
    q: Point<f64>,
) -> layers::Result<f64> {
    if bbox[0] == bbox[2] && bbox[1] == bbox[3] {
        return Ok(geo::Geodesic.distance(q, Point::new(bbox[0], bbox[1])));
    }
    let Some((_, offset)) = layer.at(pos) else {
        return Ok(f64::INFINITY);
    };
    let Some(g) = layer.geometry(offset)? else {
        return Ok(f64::INFINITY);
    };
    let k = q.y().to_radians().cos().max(1e-6);
    let local = g.map_coords(|c| Coord {
        x: (c.x - q.x()) * k,
        y: c.y - q.y(),
    });
    let c = match local.closest_point(&Point::new(0.0, 0.0)) {
        geo::Closest::Intersection(_) => return Ok(0.0),
        geo::Closest::SinglePoint(p) => p,
        geo::Closest::Indeterminate => return Ok(f64::INFINITY),
    };
    Ok(geo::Geodesic.distance(q, Point::new(c.x() / k + q.x(), c.y() + q.y())))
}

/// The `k` features nearest to (lon, lat), nearest first (ties by id order), at most
/// `max_m` metres away when given.
pub fn nearest(
    layer: &LoadedLayer,
    lon: f64,
    lat: f64,
    k: usize,
    max_m: Option<f64>,
    allow: &Allowed,
) -> layers::Result<Vec<Hit>> {
    let q = Point::new(lon, lat);
    let cap = max_m.unwrap_or(MAX_DISTANCE_M).min(MAX_DISTANCE_M);
    if layer.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    // First radius: the one that would hold ~2k features if they were spread evenly
    // over the layer's extent.
    let mut r = match layer.meta.bbox {
        Some(b) => {
            let w = (b[2] - b[0]) * 111_320.0 * lat.to_radians().cos().abs().max(0.01);
            let h = (b[3] - b[1]) * 110_574.0;
            let density = layer.len() as f64 / (w * h).max(1.0);
            (2.0 * k as f64 / (std::f64::consts::PI * density)).sqrt()
        }
        None => 1000.0,
    }
    .clamp(25.0, MAX_DISTANCE_M)
    .min(cap);
    loop {
        let mut found = Vec::new();
        for b in search_boxes(lon, lat, r) {
            for (pos, e) in layer.query_bbox_iter(b) {
                if !allowed(allow, pos) {
                    continue;
                }
                let d = distance_to(layer, pos, e, q)?;
                if d <= r {
                    found.push(Hit { pos, distance_m: d });
                }
            }
        }
        if found.len() >= k || r >= cap {
            found.sort_by(|a, b| {
                a.distance_m
                    .total_cmp(&b.distance_m)
                    .then(a.pos.cmp(&b.pos))
            });
            found.dedup_by_key(|h| h.pos);
            found.truncate(k);
            return Ok(found);
        }
        r = (r * 3.0).min(cap);
    }
}

/// Whether any feature is within `within_m` metres of `q`.
fn any_within(
    layer: &LoadedLayer,
    q: Point<f64>,
    within_m: f64,
    allow: &Allowed,
) -> layers::Result<bool> {
    for b in search_boxes(q.x(), q.y(), within_m) {
        for (pos, e) in layer.query_bbox_iter(b) {
            if allowed(allow, pos) && distance_to(layer, pos, e, q)? <= within_m {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Samples per zone for the area estimate of coverage.
pub const SAMPLES_PER_ZONE: f64 = 1024.0;

/// One zone's coverage.
#[derive(Debug, Clone)]
pub struct CoverageRow {
    pub fid: i64,
    pub name: Option<String>,
    pub area_km2: f64,
    /// Share of the zone's area farther than the distance from every feature.
    pub uncovered_share: f64,
    pub samples: usize,
    /// Geodesic metres from the zone's centroid to the nearest feature.
    pub centroid_distance_m: Option<f64>,
}

/// Per zone: the share of its area farther than `within_m` from every feature of the
/// layer, estimated on a regular lattice of about [`SAMPLES_PER_ZONE`] points (cell
/// centres, equal spacing in metres, those inside or on the zone), and the distance
/// from its centroid to the nearest feature.
pub fn coverage(
    zones: &Zones,
    layer: &LoadedLayer,
    within_m: f64,
    allow: &Allowed,
) -> layers::Result<Vec<CoverageRow>> {
    let budget = crate::limits::current();
    zones
        .zones
        .par_iter()
        .map(|z| {
            crate::limits::within_opt(budget.clone(), crate::limits::check)?;
            let [x0, y0, x1, y1] = z.bbox;
            let lat_c = (y0 + y1) / 2.0;
            let spacing = (z.area_km2 * 1e6 / SAMPLES_PER_ZONE).sqrt().max(1.0);
            let dy = spacing / 110_574.0;
            let dx = spacing / (111_320.0 * lat_c.to_radians().cos().max(1e-6));
            let (nx, ny) = (
                ((x1 - x0) / dx).ceil() as usize,
                ((y1 - y0) / dy).ceil() as usize,
            );
            let mut samples = 0usize;
            let mut uncovered = 0usize;
            for j in 0..ny.max(1) {
                for i in 0..nx.max(1) {
                    let p = Coord {
                        x: x0 + (i as f64 + 0.5) * dx,
                        y: y0 + (j as f64 + 0.5) * dy,
                    };
                    if z.prepared.locate(p) == Location::Outside {
                        continue;
                    }
                    samples += 1;
                    if !any_within(layer, p.into(), within_m, allow)? {
                        uncovered += 1;
                    }
                }
            }
            let centroid = z.geom.centroid();
            let centroid_distance_m = match centroid {
                Some(c) => nearest(layer, c.x(), c.y(), 1, None, allow)?
                    .first()
                    .map(|h| h.distance_m),
                None => None,
            };
            // A zone too small for the lattice: its centroid decides.
            let uncovered_share = if samples == 0 {
                f64::from(u8::from(centroid_distance_m.is_none_or(|d| d > within_m)))
            } else {
                uncovered as f64 / samples as f64
            };
            Ok(CoverageRow {
                fid: z.fid,
                name: z.name.clone(),
                area_km2: z.area_km2,
                uncovered_share,
                samples,
                centroid_distance_m,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_hold_the_circle() {
        // Points exactly r metres away in many directions are inside the boxes.
        for &(lon, lat) in &[
            (-100.3, 25.67),
            (179.99, 10.0),
            (-179.99, -60.0),
            (0.0, 85.0),
        ] {
            for &r in &[10.0, 1000.0, 250_000.0] {
                let boxes = search_boxes(lon, lat, r);
                for az in (0..360).step_by(15) {
                    use geo::Destination;
                    let p = geo::Geodesic.destination(Point::new(lon, lat), az as f64, r * 0.999);
                    let mut x = p.x();
                    if x > 180.0 {
                        x -= 360.0;
                    }
                    if x < -180.0 {
                        x += 360.0;
                    }
                    assert!(
                        boxes
                            .iter()
                            .any(|b| x >= b[0] && x <= b[2] && p.y() >= b[1] && p.y() <= b[3]),
                        "{lon},{lat} r={r} az={az}: {x},{} not in {boxes:?}",
                        p.y()
                    );
                }
            }
        }
    }
}
