//! Zone layers prepared for analysis: each polygon's edges bucketed into horizontal
//! bands for fast, exact point location, its geodesic area, its name, and an R-tree
//! over the zones' boxes.
//!
//! Point location is exact (robust orientation predicates, no epsilon), so a point on
//! a border shared by two colonias is found *on* both borders, never inside one by
//! rounding luck; the aggregation then applies the documented rule
//! ([`Zones::assign_point`]).

use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{Coord, GeodesicArea, MultiPolygon};
use layers::fgb::FieldType;
use layers::index::LoadedLayer;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};
use serde_json::Value;

/// Where a point lies relative to a polygon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Inside,
    Boundary,
    Outside,
}

/// A polygon prepared for point location: edges with the lower end first, bucketed by
/// the horizontal bands of the bbox they span.
pub struct Prepared {
    edges: Vec<(Coord<f64>, Coord<f64>)>,
    bands: Vec<Vec<u32>>,
    y0: f64,
    /// Bands per degree of latitude.
    scale: f64,
}

impl Prepared {
    /// Heap bytes held (for the cache's byte bound).
    pub fn approx_bytes(&self) -> usize {
        self.edges.len() * std::mem::size_of::<(Coord<f64>, Coord<f64>)>()
            + self.bands.iter().map(|b| 24 + b.len() * 4).sum::<usize>()
    }

    pub fn new(mp: &MultiPolygon<f64>) -> Prepared {
        let mut edges = Vec::new();
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for poly in mp {
            for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                for seg in ring.lines() {
                    let (a, b) = (seg.start, seg.end);
                    if a == b {
                        continue;
                    }
                    // One orientation per segment, whichever ring it comes from: the
                    // neighbour that shares it computes exactly the same predicates.
                    let (lo, hi) = if (a.y, a.x) <= (b.y, b.x) {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    y0 = y0.min(lo.y);
                    y1 = y1.max(hi.y);
                    edges.push((lo, hi));
                }
            }
        }
        let nb = (edges.len() / 4).clamp(1, 256);
        let h = y1 - y0;
        let scale = if h > 0.0 { nb as f64 / h } else { 0.0 };
        let mut bands = vec![Vec::new(); nb];
        let band = |y: f64| (((y - y0) * scale).floor().max(0.0) as usize).min(nb - 1);
        for (i, (lo, hi)) in edges.iter().enumerate() {
            for b in bands.iter_mut().take(band(hi.y) + 1).skip(band(lo.y)) {
                b.push(i as u32);
            }
        }
        Prepared {
            edges,
            bands,
            y0,
            scale,
        }
    }

    /// Exact crossing-number test with on-edge detection.
    pub fn locate(&self, p: Coord<f64>) -> Location {
        if self.bands.is_empty() {
            return Location::Outside;
        }
        let nb = self.bands.len();
        let b = (((p.y - self.y0) * self.scale).floor().max(0.0) as usize).min(nb - 1);
        let mut inside = false;
        for &i in &self.bands[b] {
            let (lo, hi) = self.edges[i as usize];
            if p.y < lo.y || p.y > hi.y {
                continue;
            }
            if lo.y == hi.y {
                if p.x >= lo.x.min(hi.x) && p.x <= lo.x.max(hi.x) {
                    return Location::Boundary;
                }
                continue;
            }
            match RobustKernel::orient2d(lo, hi, p) {
                Orientation::Collinear if p.x >= lo.x.min(hi.x) && p.x <= lo.x.max(hi.x) => {
                    return Location::Boundary;
                }
                // The edge crosses the ray to +x when p is left of the upward edge;
                // half-open in y so a vertex is crossed once.
                Orientation::CounterClockwise if p.y < hi.y => inside = !inside,
                _ => {}
            }
        }
        if inside {
            Location::Inside
        } else {
            Location::Outside
        }
    }
}

/// One zone (a feature of the zone layer).
pub struct Zone {
    /// Position in the zone layer's id order.
    pub pos: u32,
    pub fid: i64,
    pub name: Option<String>,
    pub geom: MultiPolygon<f64>,
    pub bbox: [f64; 4],
    /// Geodesic area on the WGS 84 ellipsoid (Karney), km².
    pub area_km2: f64,
    pub prepared: Prepared,
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// A polygon layer ready to aggregate by.
pub struct Zones {
    pub layer_id: String,
    pub version: u32,
    pub name_field: Option<String>,
    /// In id order.
    pub zones: Vec<Zone>,
    tree: RTree<Entry>,
}

impl Zones {
    /// Heap bytes held, roughly (for the cache's byte bound).
    pub fn approx_bytes(&self) -> usize {
        use geo::CoordsIter;
        self.zones
            .iter()
            .map(|z| {
                std::mem::size_of::<Zone>()
                    + z.name.as_ref().map_or(0, String::len)
                    + z.geom.coords_count() * 16
                    + z.prepared.approx_bytes()
            })
            .sum::<usize>()
            + self.zones.len() * 48
    }
}

/// Field names tried, in order, for a zone's display name (case-insensitive).
const NAME_FIELDS: &[&str] = &[
    "nombre",
    "name",
    "nom_col",
    "colonia",
    "nom_colonia",
    "nomgeo",
    "nom_mun",
    "nom_ent",
    "municipio",
    "label",
    "titulo",
];

/// The field that names zones: the requested one, a conventional name, else the first
/// text field.
pub fn name_field(layer: &LoadedLayer, wanted: Option<&str>) -> Result<Option<String>, String> {
    let schema = &layer.meta.schema;
    if let Some(w) = wanted {
        return schema
            .iter()
            .find(|f| f.name == w)
            .map(|f| Some(f.name.clone()))
            .ok_or_else(|| {
                format!(
                    "zone layer '{}' has no field '{w}'; its fields: {}",
                    layer.meta.id,
                    schema
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
    }
    for n in NAME_FIELDS {
        if let Some(f) = schema
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(n) && f.ftype == FieldType::String)
        {
            return Ok(Some(f.name.clone()));
        }
    }
    Ok(schema
        .iter()
        .find(|f| f.ftype == FieldType::String)
        .map(|f| f.name.clone()))
}

/// Whether every geometry of the layer is a (multi)polygon.
pub fn is_polygonal(layer: &LoadedLayer) -> bool {
    !layer.meta.geometry_types.is_empty()
        && layer
            .meta
            .geometry_types
            .iter()
            .all(|t| t == "Polygon" || t == "MultiPolygon")
}

impl Zones {
    /// Decodes and prepares every zone. Errors are user errors (a layer that is not
    /// polygons, an unknown name field).
    pub fn load(layer: &LoadedLayer, name_field: Option<String>) -> layers::Result<Zones> {
        if !is_polygonal(layer) {
            return Err(layers::Error::bad(format!(
                "zone layer '{}' holds {}, not polygons: zones must be a polygon layer (colonias, AGEBs, municipios)",
                layer.meta.id,
                layer.meta.geometry_types.join(", ")
            )));
        }
        let name_idx = name_field
            .as_ref()
            .and_then(|n| layer.meta.schema.iter().position(|f| &f.name == n));
        let mut zones = Vec::with_capacity(layer.len());
        for pos in 0..layer.len() as u32 {
            let Some((fid, offset)) = layer.at(pos) else {
                continue;
            };
            let (Some(g), props) = layer.geometry_and_properties(offset)? else {
                continue;
            };
            let geom = match g {
                geo::Geometry::Polygon(p) => MultiPolygon(vec![p]),
                geo::Geometry::MultiPolygon(mp) => mp,
                _ => continue,
            };
            let name = name_idx.and_then(|ni| {
                props.iter().find(|(i, _)| *i == ni).map(|(_, v)| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            });
            let Some(r) = geo::BoundingRect::bounding_rect(&geom) else {
                continue;
            };
            let bbox = [r.min().x, r.min().y, r.max().x, r.max().y];
            let area_km2 = geom.geodesic_area_unsigned() / 1e6;
            let prepared = Prepared::new(&geom);
            zones.push(Zone {
                pos,
                fid,
                name,
                geom,
                bbox,
                area_km2,
                prepared,
            });
        }
        let tree = RTree::bulk_load(
            zones
                .iter()
                .enumerate()
                .map(|(i, z)| {
                    GeomWithData::new(
                        Rectangle::from_corners([z.bbox[0], z.bbox[1]], [z.bbox[2], z.bbox[3]]),
                        i as u32,
                    )
                })
                .collect(),
        );
        Ok(Zones {
            layer_id: layer.meta.id.clone(),
            version: layer.meta.version,
            name_field,
            zones,
            tree,
        })
    }

    /// Indexes (into `zones`) of the zones whose box intersects `bbox`, ascending.
    pub fn candidates(&self, bbox: [f64; 4]) -> Vec<u32> {
        let env = AABB::from_corners([bbox[0], bbox[1]], [bbox[2], bbox[3]]);
        let mut v: Vec<u32> = self
            .tree
            .locate_in_envelope_intersecting(&env)
            .map(|e| e.data)
            .collect();
        v.sort_unstable();
        v
    }

    /// The zones a point counts in, pushed to `out` (indexes into `zones`).
    ///
    /// The rule: a point counts in every zone whose interior holds it (zones may
    /// overlap); a point in no interior but on the border of one or more zones counts
    /// once, in the one of them that comes first in id order. So on a partition
    /// (colonias) every point that touches a zone is counted exactly once, and the
    /// totals equal an `ST_Intersects` count of distinct points.
    pub fn assign_point(&self, p: Coord<f64>, out: &mut Vec<u32>) {
        let start = out.len();
        let mut border: Option<u32> = None;
        for e in self.tree.locate_all_at_point(&[p.x, p.y]) {
            let zi = e.data;
            match self.zones[zi as usize].prepared.locate(p) {
                Location::Inside => out.push(zi),
                Location::Boundary => {
                    if border.is_none_or(|b| zi < b) {
                        border = Some(zi);
                    }
                }
                Location::Outside => {}
            }
        }
        if out.len() == start {
            if let Some(b) = border {
                out.push(b);
            }
        }
    }

    pub fn find_fid(&self, fid: i64) -> Option<usize> {
        self.zones.binary_search_by_key(&fid, |z| z.fid).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    fn square(x0: f64, y0: f64, s: f64) -> MultiPolygon<f64> {
        MultiPolygon(vec![polygon![
            (x: x0, y: y0), (x: x0 + s, y: y0), (x: x0 + s, y: y0 + s), (x: x0, y: y0 + s), (x: x0, y: y0)
        ]])
    }

    #[test]
    fn locate_inside_outside_boundary() {
        let p = Prepared::new(&square(0.0, 0.0, 1.0));
        let c = |x, y| Coord { x, y };
        assert_eq!(p.locate(c(0.5, 0.5)), Location::Inside);
        assert_eq!(p.locate(c(1.5, 0.5)), Location::Outside);
        assert_eq!(p.locate(c(-0.1, 0.5)), Location::Outside);
        assert_eq!(p.locate(c(1.0, 0.5)), Location::Boundary);
        assert_eq!(p.locate(c(0.0, 0.5)), Location::Boundary);
        assert_eq!(p.locate(c(0.5, 1.0)), Location::Boundary);
        assert_eq!(p.locate(c(0.5, 0.0)), Location::Boundary);
        assert_eq!(p.locate(c(0.0, 0.0)), Location::Boundary);
        assert_eq!(p.locate(c(1.0, 1.0)), Location::Boundary);
        // Level with a vertex, outside: the half-open rule crosses it once (not twice).
        let tri = MultiPolygon(vec![polygon![
            (x: 0.0, y: 0.0), (x: 2.0, y: 1.0), (x: 0.0, y: 2.0), (x: 0.0, y: 0.0)
        ]]);
        let t = Prepared::new(&tri);
        assert_eq!(t.locate(c(-1.0, 1.0)), Location::Outside);
        assert_eq!(t.locate(c(1.0, 1.0)), Location::Inside);
        assert_eq!(t.locate(c(2.0, 1.0)), Location::Boundary);
        assert_eq!(t.locate(c(3.0, 1.0)), Location::Outside);
    }

    #[test]
    fn holes_and_many_bands() {
        // A ring with many vertices (several bands) and a hole.
        let n = 200;
        let circle = |r: f64| -> geo::LineString<f64> {
            (0..=n)
                .map(|i| {
                    let a = std::f64::consts::TAU * (i % n) as f64 / n as f64;
                    Coord {
                        x: r * a.cos(),
                        y: r * a.sin(),
                    }
                })
                .collect()
        };
        let poly = geo::Polygon::new(circle(10.0), vec![circle(3.0)]);
        let p = Prepared::new(&MultiPolygon(vec![poly.clone()]));
        use geo::{Contains, Intersects};
        let mut k = 7u64;
        for _ in 0..5000 {
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
            let x = ((k >> 11) as f64 / (1u64 << 53) as f64) * 24.0 - 12.0;
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
            let y = ((k >> 11) as f64 / (1u64 << 53) as f64) * 24.0 - 12.0;
            let pt = geo::Point::new(x, y);
            let expect = if poly.contains(&pt) {
                Location::Inside
            } else if poly.intersects(&pt) {
                Location::Boundary
            } else {
                Location::Outside
            };
            assert_eq!(p.locate(pt.0), expect, "{x} {y}");
        }
    }
}
