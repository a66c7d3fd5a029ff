//! What was wrong with a source's features, what was repaired and what was rejected.
//!
//! [`normalize`] makes one geometry storable (RFC 7946 ring orientation, validity repair
//! through GEOS MakeValid when it is safe), and [`IngestReport`] counts every problem
//! with a few example feature ids, so a ministry can find and fix them at the source.
//! The report is stored in each version's `meta.json`.

use std::collections::BTreeMap;

use geo::orient::{Direction, Orient};
use geo::{Geometry, Validation};
use serde::{Deserialize, Serialize};

/// How many example features are kept per problem kind.
pub const MAX_EXAMPLES: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    pub count: u64,
    /// What this problem means, in words a GIS analyst acts on.
    pub description: String,
    /// Up to [`MAX_EXAMPLES`] (feature id in the source, detail).
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub feature: i64,
    pub detail: String,
}

/// Counts of one ingest, stored with the version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IngestReport {
    pub features_read: u64,
    pub features_stored: u64,
    pub features_repaired: u64,
    pub features_rejected: u64,
    /// Problems by kind (see [`Kind`]).
    pub problems: BTreeMap<String, Problem>,
    /// Notes about the whole source (encoding fallback, CRS identification).
    pub notes: Vec<String>,
    /// What a key join matched (tables placed by key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<crate::table::join::JoinReport>,
}

/// The kinds of problem a feature can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EmptyGeometry,
    ZDropped,
    MDropped,
    CurveLinearized,
    InvalidRepaired,
    InvalidKept,
    TransformFailed,
    BadCoordinates,
    BadAttribute,
    /// A rejected feature whose coordinates are lat/lon in the wrong order.
    SwappedLatLon,
    /// A rejected feature whose "degrees" fit a projected CRS.
    ProjectedAsDegrees,
    /// A table row whose key matches no zone of the join; not stored.
    NotJoined,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::EmptyGeometry => "empty_geometry",
            Kind::ZDropped => "z_dropped",
            Kind::MDropped => "m_dropped",
            Kind::CurveLinearized => "curve_linearized",
            Kind::InvalidRepaired => "invalid_geometry_repaired",
            Kind::InvalidKept => "invalid_geometry_kept",
            Kind::TransformFailed => "transform_failed",
            Kind::BadCoordinates => "bad_coordinates",
            Kind::BadAttribute => "bad_attribute",
            Kind::SwappedLatLon => "swapped_lat_lon",
            Kind::ProjectedAsDegrees => "projected_as_degrees",
            Kind::NotJoined => "not_joined",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Kind::EmptyGeometry => "feature has no geometry (null or empty); rejected",
            Kind::ZDropped => "Z values dropped: layers are stored in 2D",
            Kind::MDropped => "M (measure) values dropped: layers are stored in 2D",
            Kind::CurveLinearized => "curved geometry converted to straight segments",
            Kind::InvalidRepaired => {
                "invalid geometry (self-intersection, bad ring, ...) repaired with MakeValid"
            }
            Kind::InvalidKept => {
                "invalid geometry that could not be repaired safely; stored as is and flagged"
            }
            Kind::TransformFailed => "coordinates could not be transformed to EPSG:4326; rejected",
            Kind::BadCoordinates => "coordinates missing or not numbers; rejected",
            Kind::BadAttribute => "attribute value could not be read; stored as null",
            Kind::SwappedLatLon => {
                "rejected feature whose longitude and latitude are swapped (swapped back it is in the expected region)"
            }
            Kind::ProjectedAsDegrees => {
                "rejected feature whose coordinates are metres of a projected CRS, not degrees"
            }
            Kind::NotJoined => {
                "table row whose key matches no zone of the join; not stored (see the join report)"
            }
        }
    }

    /// Does this problem make the feature rejected (not stored)?
    pub fn rejects(self) -> bool {
        matches!(
            self,
            Kind::EmptyGeometry | Kind::TransformFailed | Kind::BadCoordinates | Kind::NotJoined
        )
    }
}

impl IngestReport {
    pub fn add(&mut self, kind: Kind, feature: i64, detail: impl Into<String>) {
        let p = self
            .problems
            .entry(kind.code().to_string())
            .or_insert_with(|| Problem {
                description: kind.description().to_string(),
                ..Default::default()
            });
        p.count += 1;
        if p.examples.len() < MAX_EXAMPLES {
            p.examples.push(Example {
                feature,
                detail: detail.into(),
            });
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.problems.get(kind.code()).map_or(0, |p| p.count)
    }
}

/// What [`normalize`] did to one geometry.
pub enum Outcome {
    /// Valid as read (orientation fixed at most).
    Clean(Geometry<f64>),
    /// Was invalid, repaired by MakeValid.
    Repaired(Geometry<f64>, String),
    /// Invalid and not safely repairable: stored as is, flagged.
    Kept(Geometry<f64>, String),
}

/// Orients rings per RFC 7946 (exterior counter-clockwise) and repairs invalid
/// geometries when the repair keeps the geometry's dimension (a polygon stays areal).
pub fn normalize(geom: Geometry<f64>) -> Outcome {
    let geom = orient(geom);
    let detail = match dimension(&geom) {
        // geo's polygon validation is quadratic in the ring size (seconds for a 70k-vertex
        // borough outline); GEOS's is O(n log n), so polygons are checked there first
        // and geo only explains the ones GEOS finds invalid.
        Some(2) => {
            if geos_is_valid(&geom) {
                return Outcome::Clean(geom);
            }
            geom.check_validation()
                .err()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "invalid polygon (GEOS)".into())
        }
        _ => match geom.check_validation() {
            Ok(()) => return Outcome::Clean(geom),
            Err(p) => p.to_string(),
        },
    };
    match make_valid(&geom) {
        Some(fixed) => Outcome::Repaired(orient(fixed), detail),
        None => Outcome::Kept(geom, detail),
    }
}

fn orient(geom: Geometry<f64>) -> Geometry<f64> {
    match geom {
        Geometry::Polygon(p) => Geometry::Polygon(p.orient(Direction::Default)),
        Geometry::MultiPolygon(p) => Geometry::MultiPolygon(p.orient(Direction::Default)),
        Geometry::GeometryCollection(gc) => {
            Geometry::GeometryCollection(gc.into_iter().map(orient).collect())
        }
        other => other,
    }
}

fn dimension(g: &Geometry<f64>) -> Option<u8> {
    match g {
        Geometry::Point(_) | Geometry::MultiPoint(_) => Some(0),
        Geometry::Line(_) | Geometry::LineString(_) | Geometry::MultiLineString(_) => Some(1),
        Geometry::Polygon(_)
        | Geometry::MultiPolygon(_)
        | Geometry::Rect(_)
        | Geometry::Triangle(_) => Some(2),
        Geometry::GeometryCollection(_) => None,
    }
}

fn geos_is_valid(geom: &Geometry<f64>) -> bool {
    use gdal::vector::ToGdal;
    geom.to_gdal().map(|g| g.is_valid()).unwrap_or(false)
}

/// GEOS MakeValid (through GDAL) in STRUCTURE mode; only parts of the input's dimension
/// are kept, and the result must itself be valid and non-empty.
fn make_valid(geom: &Geometry<f64>) -> Option<Geometry<f64>> {
    use gdal::vector::ToGdal;
    let dim = dimension(geom)?;
    let g = geom.to_gdal().ok()?;
    let mut opts = gdal::cpl::CslStringList::new();
    opts.set_name_value("METHOD", "STRUCTURE").ok()?;
    let fixed = g.make_valid(&opts).ok()?.to_geo().ok()?;
    let same_dim = keep_dimension(fixed, dim)?;
    if geos_is_valid(&same_dim) {
        Some(same_dim)
    } else {
        None
    }
}

fn keep_dimension(g: Geometry<f64>, dim: u8) -> Option<Geometry<f64>> {
    match g {
        Geometry::GeometryCollection(gc) => {
            let parts: Vec<Geometry<f64>> = gc
                .into_iter()
                .filter_map(|p| keep_dimension(p, dim))
                .collect();
            match dim {
                2 => {
                    let mut polys = Vec::new();
                    for p in parts {
                        match p {
                            Geometry::Polygon(p) => polys.push(p),
                            Geometry::MultiPolygon(mp) => polys.extend(mp.0),
                            _ => {}
                        }
                    }
                    match polys.len() {
                        0 => None,
                        1 => polys.pop().map(Geometry::Polygon),
                        _ => Some(Geometry::MultiPolygon(geo::MultiPolygon(polys))),
                    }
                }
                1 => {
                    let mut lines = Vec::new();
                    for p in parts {
                        match p {
                            Geometry::LineString(l) => lines.push(l),
                            Geometry::MultiLineString(ml) => lines.extend(ml.0),
                            _ => {}
                        }
                    }
                    match lines.len() {
                        0 => None,
                        1 => lines.pop().map(Geometry::LineString),
                        _ => Some(Geometry::MultiLineString(geo::MultiLineString(lines))),
                    }
                }
                _ => None,
            }
        }
        other if dimension(&other) == Some(dim) => Some(other),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{polygon, Winding};

    #[test]
    fn bowtie_is_repaired_into_two_triangles() {
        let bowtie = polygon![(x: 0., y: 0.), (x: 2., y: 2.), (x: 2., y: 0.), (x: 0., y: 2.), (x: 0., y: 0.)];
        match normalize(Geometry::Polygon(bowtie)) {
            Outcome::Repaired(Geometry::MultiPolygon(mp), detail) => {
                assert_eq!(mp.0.len(), 2);
                assert!(!detail.is_empty());
            }
            _ => panic!("expected a repaired multipolygon"),
        }
    }

    #[test]
    fn clockwise_exterior_is_reoriented() {
        let cw = polygon![(x: 0., y: 0.), (x: 0., y: 1.), (x: 1., y: 1.), (x: 1., y: 0.), (x: 0., y: 0.)];
        let Outcome::Clean(Geometry::Polygon(p)) = normalize(Geometry::Polygon(cw)) else {
            panic!("expected clean")
        };
        assert!(p.exterior().is_ccw());
    }

    #[test]
    fn report_keeps_bounded_examples() {
        let mut r = IngestReport::default();
        for i in 0..100 {
            r.add(Kind::EmptyGeometry, i, "null");
        }
        assert_eq!(r.count(Kind::EmptyGeometry), 100);
        assert_eq!(r.problems["empty_geometry"].examples.len(), MAX_EXAMPLES);
    }
}
