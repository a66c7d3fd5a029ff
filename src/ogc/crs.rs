//! OGC API – Features Part 2 (CRS by reference): the coordinate reference systems
//! DataHub serves, how their URIs are parsed, and reprojection of output geometries
//! and of `bbox-crs` boxes from/to the stored lon/lat (CRS84).
//!
//! Axis order follows each CRS's authority definition, as Part 2 requires: EPSG:4326
//! is latitude, longitude and EPSG:6372 northing, easting. PROJ is used in its
//! "visualisation" order (longitude/easting first) and the axes are swapped here, so
//! there is one place where order is decided.

use geo::Geometry;
use layers::crs::for_each_coord_mut;
use proj::Proj;

use crate::features::BadParam;

pub const CRS84: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";

/// One output CRS.
#[derive(Debug, PartialEq, Eq)]
pub struct OutputCrs {
    pub uri: &'static str,
    /// EPSG code; `None` for CRS84 (the storage CRS, no transformation).
    pub epsg: Option<u32>,
    /// The authority's first axis is latitude/northing: swap PROJ's output.
    pub north_first: bool,
    pub title: &'static str,
}

/// The CRSs every collection is offered in (first: the default and storage CRS).
pub static SUPPORTED: [OutputCrs; 6] = [
    OutputCrs {
        uri: CRS84,
        epsg: None,
        north_first: false,
        title: "WGS 84 longitude, latitude (CRS84)",
    },
    OutputCrs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/4326",
        epsg: Some(4326),
        north_first: true,
        title: "WGS 84 latitude, longitude (EPSG:4326)",
    },
    OutputCrs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/3857",
        epsg: Some(3857),
        north_first: false,
        title: "WGS 84 / Pseudo-Mercator (EPSG:3857)",
    },
    OutputCrs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/6372",
        epsg: Some(6372),
        north_first: true,
        title: "Mexico ITRF2008 / LCC, northing, easting (EPSG:6372)",
    },
    OutputCrs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/6369",
        epsg: Some(6369),
        north_first: false,
        title: "Mexico ITRF2008 / UTM zone 14N (EPSG:6369)",
    },
    OutputCrs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/32614",
        epsg: Some(32614),
        north_first: false,
        title: "WGS 84 / UTM zone 14N (EPSG:32614)",
    },
];

pub fn crs84() -> &'static OutputCrs {
    &SUPPORTED[0]
}

/// Parses a CRS parameter: the OGC URI (as advertised), its `[EPSG:n]` safe CURIE
/// form, or the short `EPSG:n` / `CRS84` spelling people type.
pub fn parse(param: &str, v: &str) -> Result<&'static OutputCrs, BadParam> {
    let t = v.trim().trim_start_matches('[').trim_end_matches(']');
    let found = SUPPORTED.iter().find(|c| {
        c.uri == t
            || c.uri.replace("http://", "https://") == t
            || match c.epsg {
                Some(code) => {
                    t.eq_ignore_ascii_case(&format!("EPSG:{code}"))
                        || t.eq_ignore_ascii_case(&format!("EPSG::{code}"))
                }
                None => t.eq_ignore_ascii_case("CRS84") || t.eq_ignore_ascii_case("OGC:CRS84"),
            }
    });
    found.ok_or_else(|| {
        BadParam(format!(
            "{param} '{v}' is not supported; use one of: {}",
            SUPPORTED
                .iter()
                .map(|c| c.uri)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Moves geometries between the stored lon/lat and one output CRS. Holds a PROJ
/// object, which is not `Send`: build one per request, on the thread that uses it.
pub struct Reproject {
    crs: &'static OutputCrs,
    fwd: Option<Proj>,
    inv: Option<Proj>,
}

impl Reproject {
    pub fn new(crs: &'static OutputCrs) -> Result<Self, String> {
        let (fwd, inv) = match crs.epsg {
            // EPSG:4326 is the stored datum: only the axes change.
            None | Some(4326) => (None, None),
            Some(code) => {
                let to = format!("EPSG:{code}");
                let fwd = Proj::new_known_crs("EPSG:4326", &to, None)
                    .map_err(|e| format!("PROJ cannot transform to {to}: {e}"))?;
                let inv = Proj::new_known_crs(&to, "EPSG:4326", None)
                    .map_err(|e| format!("PROJ cannot transform from {to}: {e}"))?;
                (Some(fwd), Some(inv))
            }
        };
        Ok(Reproject { crs, fwd, inv })
    }

    pub fn is_identity(&self) -> bool {
        self.crs.epsg.is_none()
    }

    /// Lon/lat to the output CRS, in its axis order.
    pub fn point(&self, lon: f64, lat: f64) -> Result<(f64, f64), String> {
        let (x, y) = match &self.fwd {
            Some(p) => p
                .convert((lon, lat))
                .map_err(|e| format!("({lon}, {lat}) cannot be transformed: {e}"))?,
            None => (lon, lat),
        };
        Ok(if self.crs.north_first { (y, x) } else { (x, y) })
    }

    /// Transforms a stored geometry to the output CRS in place.
    pub fn geometry(&self, g: &mut Geometry<f64>) -> Result<(), String> {
        if self.is_identity() {
            return Ok(());
        }
        let mut err = None;
        for_each_coord_mut(g, &mut |c| {
            if err.is_some() {
                return;
            }
            match self.point(c.x, c.y) {
                Ok((x, y)) => {
                    c.x = x;
                    c.y = y;
                }
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Writes the stored feature at `offset` as GeoJSON in this CRS (the stored
    /// lon/lat as is when this is CRS84).
    pub fn write_feature(
        &self,
        layer: &layers::index::LoadedLayer,
        offset: u64,
        out: &mut Vec<u8>,
    ) -> layers::Result<()> {
        if self.is_identity() {
            return layer.write_geojson(offset, out);
        }
        let mut map = |g: &mut Geometry<f64>| self.geometry(g);
        layer.write_geojson_with(offset, out, Some(&mut map))
    }

    /// A geometry given in this CRS (its axis order) in lon/lat (filter literals
    /// with `filter-crs`).
    pub fn geometry_to_lonlat(&self, g: &mut Geometry<f64>) -> Result<(), String> {
        let mut err = None;
        for_each_coord_mut(g, &mut |c| {
            if err.is_some() {
                return;
            }
            let (x, y) = if self.crs.north_first {
                (c.y, c.x)
            } else {
                (c.x, c.y)
            };
            match &self.inv {
                None => {
                    c.x = x;
                    c.y = y;
                }
                Some(inv) => match inv.convert((x, y)) {
                    Ok((lon, lat)) if lon.is_finite() && lat.is_finite() => {
                        c.x = lon;
                        c.y = lat;
                    }
                    _ => err = Some(format!("({x}, {y}) has no longitude/latitude")),
                },
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// A box given in this CRS (its axis order) as the lon/lat box that covers it:
    /// the edges are sampled, since a projected rectangle is curved in lon/lat.
    pub fn bbox_to_lonlat(&self, b: [f64; 4]) -> Result<[f64; 4], String> {
        let (x0, y0, x1, y1) = if self.crs.north_first {
            (b[1], b[0], b[3], b[2])
        } else {
            (b[0], b[1], b[2], b[3])
        };
        let Some(inv) = &self.inv else {
            return Ok([x0, y0, x1, y1]);
        };
        let mut out = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        const STEPS: usize = 20;
        for i in 0..=STEPS {
            let t = i as f64 / STEPS as f64;
            for (x, y) in [
                (x0 + (x1 - x0) * t, y0),
                (x0 + (x1 - x0) * t, y1),
                (x0, y0 + (y1 - y0) * t),
                (x1, y0 + (y1 - y0) * t),
            ] {
                let (lon, lat) = inv
                    .convert((x, y))
                    .map_err(|e| format!("({x}, {y}) has no longitude/latitude: {e}"))?;
                if !lon.is_finite() || !lat.is_finite() {
                    return Err(format!("({x}, {y}) has no longitude/latitude"));
                }
                out = [
                    out[0].min(lon),
                    out[1].min(lat),
                    out[2].max(lon),
                    out[3].max(lat),
                ];
            }
        }
        Ok([
            out[0].max(-180.0),
            out[1].max(-90.0),
            out[2].min(180.0),
            out[3].min(90.0),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_order_table_matches_the_epsg_definitions() {
        // The `north_first` flags are checked against GDAL's reading of the EPSG
        // database, so the table cannot silently disagree with the authority.
        for c in SUPPORTED.iter().filter_map(|c| c.epsg.map(|e| (c, e))) {
            let (crs, code) = c;
            let srs = gdal::spatial_ref::SpatialRef::from_epsg(code).unwrap();
            let key = if srs.is_geographic() {
                "GEOGCS"
            } else {
                "PROJCS"
            };
            let first = srs.axis_orientation(key, 0).unwrap();
            let north = first == gdal_sys::OGRAxisOrientation::OAO_North;
            assert_eq!(crs.north_first, north, "EPSG:{code}");
        }
    }

    #[test]
    fn parses_uris_curies_and_short_forms() {
        for v in [
            "http://www.opengis.net/def/crs/EPSG/0/4326",
            "[EPSG:4326]",
            "EPSG:4326",
            "epsg:4326",
        ] {
            assert_eq!(parse("crs", v).unwrap().epsg, Some(4326), "{v}");
        }
        assert_eq!(parse("crs", CRS84).unwrap().epsg, None);
        assert_eq!(parse("crs", "CRS84").unwrap().epsg, None);
        let e = parse("bbox-crs", "EPSG:2154").unwrap_err();
        assert!(
            e.0.contains("bbox-crs 'EPSG:2154' is not supported"),
            "{}",
            e.0
        );
    }

    #[test]
    fn epsg4326_is_lat_lon_and_6372_northing_first() {
        let r = Reproject::new(parse("crs", "EPSG:4326").unwrap()).unwrap();
        assert_eq!(r.point(-100.31, 25.67).unwrap(), (25.67, -100.31));
        let r = Reproject::new(parse("crs", "EPSG:6372").unwrap()).unwrap();
        let (n, e) = r.point(-100.31, 25.67).unwrap();
        assert!((1_000_000.0..2_500_000.0).contains(&n), "northing {n}");
        assert!((2_000_000.0..3_000_000.0).contains(&e), "easting {e}");
        // The box round-trips: a box around that point contains it.
        let b = r
            .bbox_to_lonlat([n - 1000.0, e - 1000.0, n + 1000.0, e + 1000.0])
            .unwrap();
        assert!(b[0] < -100.31 && -100.31 < b[2] && b[1] < 25.67 && 25.67 < b[3]);
        let r = Reproject::new(parse("crs", "EPSG:4326").unwrap()).unwrap();
        assert_eq!(
            r.bbox_to_lonlat([25.0, -101.0, 26.0, -100.0]).unwrap(),
            [-101.0, 25.0, -100.0, 26.0]
        );
    }
}
