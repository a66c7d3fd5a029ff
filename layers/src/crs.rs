//! The only code that calls PROJ: what CRS a source is in, and how to get it to storage.
//!
//! Storage is EPSG:4326 in lon/lat order (RFC 7946 / OGC CRS84 axis order). GDAL hands
//! vector coordinates in "traditional GIS order" (x = easting/longitude), and
//! `Proj::new_known_crs` normalises both ends for visualisation, so the axis order of
//! EPSG:4326 (lat/lon) or EPSG:6372 (northing first) never leaks into our numbers.

use gdal::spatial_ref::SpatialRef;
use geo::{Coord, Geometry, LineString};
use proj::Proj;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The forms of CRS text a user may give.
#[derive(Debug, PartialEq, Eq)]
pub enum UserCrs {
    Epsg(u32),
    Wkt,
    ProjJson,
}

/// WKT 1 and WKT 2 top-level keywords.
const WKT_KEYWORDS: &[&str] = &[
    "GEOGCS",
    "PROJCS",
    "GEOCCS",
    "COMPD_CS",
    "VERT_CS",
    "LOCAL_CS",
    "FITTED_CS",
    "GEOGCRS",
    "GEODCRS",
    "GEODETICCRS",
    "GEOGRAPHICCRS",
    "PROJCRS",
    "PROJECTEDCRS",
    "VERTCRS",
    "VERTICALCRS",
    "COMPOUNDCRS",
    "BOUNDCRS",
    "ENGCRS",
    "ENGINEERINGCRS",
    "DERIVEDPROJCRS",
];

/// What kind of CRS text `def` is, or `None` when it is none of the accepted ones.
pub fn user_crs(def: &str) -> Option<UserCrs> {
    let d = def.trim();
    let code = |s: &str| s.parse::<u32>().ok().filter(|c| (1..=999_999).contains(c));
    if let Some(c) = code(d) {
        return Some(UserCrs::Epsg(c));
    }
    let upper = d.to_ascii_uppercase();
    for prefix in [
        "EPSG:",
        "URN:OGC:DEF:CRS:EPSG::",
        "HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/",
        "HTTPS://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/",
    ] {
        if let Some(rest) = upper.strip_prefix(prefix) {
            return code(rest).map(UserCrs::Epsg);
        }
    }
    if d.starts_with('{') && d.ends_with('}') {
        return Some(UserCrs::ProjJson);
    }
    let keyword: String = upper
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let rest = upper[keyword.len()..].trim_start();
    (WKT_KEYWORDS.contains(&keyword.as_str()) && (rest.starts_with('[') || rest.starts_with('(')))
        .then_some(UserCrs::Wkt)
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The CRS a source was identified as, recorded with every layer version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceCrs {
    /// EPSG code when the source has one (or PROJ/GDAL identify it unambiguously).
    pub epsg: Option<u32>,
    /// Human name, e.g. "Mexico ITRF2008 / LCC".
    pub name: String,
    /// Full definition (WKT); used when there is no EPSG code.
    pub wkt: String,
    /// How it was found: "source", "identified" (from a WKT without code) or "--crs".
    pub how: String,
}

impl SourceCrs {
    /// The storage CRS itself.
    pub fn wgs84() -> Result<Self> {
        Self::from_user("EPSG:4326")
    }

    /// Short label for summaries: "EPSG:6372 (Mexico ITRF2008 / LCC)".
    pub fn label(&self) -> String {
        match self.epsg {
            Some(code) => format!("EPSG:{code} ({})", self.name),
            None => format!("{} (no EPSG code)", self.name),
        }
    }

    /// A CRS given by the user with `--crs` or an upload's metadata: an EPSG code
    /// (`EPSG:6372`, `6372`, or its OGC URN/URI), a WKT (1 or 2) or PROJJSON text.
    /// Nothing else: GDAL's general user-input parser also follows URLs and opens
    /// files and PROJ `+init=` catalogues, which a hostile upload could point
    /// anywhere.
    pub fn from_user(def: &str) -> Result<Self> {
        let def = def.trim();
        let srs = match user_crs(def) {
            Some(UserCrs::Epsg(code)) => SpatialRef::from_epsg(code).ok(),
            Some(UserCrs::Wkt) => SpatialRef::from_wkt(def).ok(),
            Some(UserCrs::ProjJson) => SpatialRef::from_definition(def).ok(),
            None => {
                return Err(Error::bad(format!(
                    "the CRS '{}' is not an EPSG code, a WKT or PROJJSON: give an EPSG code \
                     such as EPSG:6372 (INEGI Lambert), EPSG:32614 (UTM 14N) or EPSG:4326, \
                     or the CRS's WKT text (URLs, file names and PROJ strings are not accepted)",
                    shorten(def)
                )))
            }
        };
        let srs = srs.ok_or_else(|| {
            Error::bad(format!(
                "unknown CRS '{}': give an EPSG code such as EPSG:6372 (INEGI Lambert), \
                 EPSG:32614 (UTM 14N) or EPSG:4326",
                shorten(def)
            ))
        })?;
        let mut crs = Self::from_srs(srs, "--crs")?;
        crs.how = "--crs".into();
        Ok(crs)
    }

    /// The CRS GDAL read from the source; a code is looked up when the WKT has none
    /// (ESRI .prj files never carry one).
    pub fn from_srs(mut srs: SpatialRef, how: &str) -> Result<Self> {
        let name = srs.name().unwrap_or_else(|| "unnamed CRS".into());
        let wkt = srs
            .to_wkt()
            .map_err(|e| Error::bad(format!("the CRS of the source cannot be read: {e}")))?;
        let code = |s: &SpatialRef| -> Option<u32> {
            match s.auth_name().as_deref() {
                Some("EPSG") => s.auth_code().ok().and_then(|c| u32::try_from(c).ok()),
                _ => None,
            }
        };
        let mut epsg = code(&srs);
        let mut how = how.to_string();
        if epsg.is_none() && srs.auto_identify_epsg().is_ok() {
            epsg = code(&srs);
            if epsg.is_some() {
                how = "identified".into();
            }
        }
        // Check PROJ can build it at all, so a broken definition fails here with a
        // message about the CRS rather than later with one about a coordinate.
        Proj::new_known_crs(&Self::proj_def(epsg, &wkt), "EPSG:4326", None).map_err(|e| {
            Error::bad(format!(
                "the CRS of the source ({name}) is not usable by PROJ: {e}; \
                 give the right one with --crs EPSG:n"
            ))
        })?;
        Ok(SourceCrs {
            epsg,
            name,
            wkt,
            how,
        })
    }

    fn proj_def(epsg: Option<u32>, wkt: &str) -> String {
        match epsg {
            Some(code) => format!("EPSG:{code}"),
            None => wkt.to_string(),
        }
    }

    /// True when coordinates are already lon/lat WGS 84 and need no transform.
    pub fn is_storage_crs(&self) -> bool {
        self.epsg == Some(4326)
    }
}

/// Transforms geometries from a source CRS to EPSG:4326 lon/lat.
///
/// `Proj` is not `Send`: build one per thread from the (plain data) [`SourceCrs`].
pub struct ToStorage {
    proj: Option<Proj>,
}

impl ToStorage {
    pub fn new(src: &SourceCrs) -> Result<Self> {
        if src.is_storage_crs() {
            return Ok(ToStorage { proj: None });
        }
        let def = SourceCrs::proj_def(src.epsg, &src.wkt);
        let proj = Proj::new_known_crs(&def, "EPSG:4326", None).map_err(|e| {
            Error::Proj(format!(
                "cannot transform {} to EPSG:4326: {e}",
                src.label()
            ))
        })?;
        Ok(ToStorage { proj: Some(proj) })
    }

    /// Transform in place; fails when any coordinate cannot be transformed (outside
    /// the CRS's domain) or comes out non-finite.
    pub fn apply(&self, geom: &mut Geometry<f64>) -> std::result::Result<(), String> {
        let Some(proj) = &self.proj else {
            return check_lonlat(geom);
        };
        let mut failure = None;
        for_each_coord_mut(geom, &mut |c| {
            if failure.is_some() {
                return;
            }
            match proj.convert((c.x, c.y)) {
                Ok((x, y)) if x.is_finite() && y.is_finite() => {
                    c.x = x;
                    c.y = y;
                }
                Ok(_) => failure = Some(format!("coordinate ({}, {}) has no lon/lat", c.x, c.y)),
                Err(e) => {
                    failure = Some(format!(
                        "coordinate ({}, {}) cannot be transformed: {e}",
                        c.x, c.y
                    ))
                }
            }
        });
        if let Some(f) = failure {
            return Err(f);
        }
        check_lonlat(geom)
    }
}

/// Visits every coordinate mutably. (geo's `try_map_coords_in_place` recurses into
/// geometry collections generically and hits the compiler's recursion limit.)
pub fn for_each_coord_mut(g: &mut Geometry<f64>, f: &mut dyn FnMut(&mut Coord<f64>)) {
    fn line(l: &mut LineString<f64>, f: &mut dyn FnMut(&mut Coord<f64>)) {
        l.0.iter_mut().for_each(f);
    }
    match g {
        Geometry::Point(p) => f(&mut p.0),
        Geometry::Line(l) => {
            f(&mut l.start);
            f(&mut l.end);
        }
        Geometry::LineString(l) => line(l, f),
        Geometry::Polygon(p) => {
            p.exterior_mut(|l| line(l, f));
            p.interiors_mut(|ls| ls.iter_mut().for_each(|l| line(l, f)));
        }
        Geometry::MultiPoint(mp) => mp.0.iter_mut().for_each(|p| f(&mut p.0)),
        Geometry::MultiLineString(ml) => ml.0.iter_mut().for_each(|l| line(l, f)),
        Geometry::MultiPolygon(mp) => mp.0.iter_mut().for_each(|p| {
            p.exterior_mut(|l| line(l, f));
            p.interiors_mut(|ls| ls.iter_mut().for_each(|l| line(l, f)));
        }),
        Geometry::GeometryCollection(gc) => gc.0.iter_mut().for_each(|g| for_each_coord_mut(g, f)),
        Geometry::Rect(r) => {
            let (mut a, mut b) = (r.min(), r.max());
            f(&mut a);
            f(&mut b);
            *r = geo::Rect::new(a, b);
        }
        Geometry::Triangle(t) => {
            let (mut a, mut b, mut c) = (t.v1(), t.v2(), t.v3());
            f(&mut a);
            f(&mut b);
            f(&mut c);
            *t = geo::Triangle::new(a, b, c);
        }
    }
}

/// Coordinates that claim to be lon/lat must be inside [-180,180] x [-90,90]: a file of
/// metres labelled as degrees would otherwise be stored as nonsense. Overshoots below
/// a micro-degree (180.00000000000006 from a reprojection round trip) are clamped.
fn check_lonlat(geom: &mut Geometry<f64>) -> std::result::Result<(), String> {
    const SLACK: f64 = 1e-6;
    let mut bad = None;
    for_each_coord_mut(geom, &mut |c| {
        let ok = c.x.is_finite()
            && c.y.is_finite()
            && c.x.abs() <= 180.0 + SLACK
            && c.y.abs() <= 90.0 + SLACK;
        if ok {
            c.x = c.x.clamp(-180.0, 180.0);
            c.y = c.y.clamp(-90.0, 90.0);
        } else if bad.is_none() {
            bad = Some((c.x, c.y));
        }
    });
    match bad {
        None => Ok(()),
        Some((x, y)) => Err(format!(
            "coordinate ({x}, {y}) is not a longitude/latitude: is the source CRS right?"
        )),
    }
}

/// Transforms lon/lat (EPSG:4326 storage) to another CRS, in that CRS's
/// easting/northing (or lon/lat) order. Used by tests and by output in other CRSs.
pub struct FromStorage {
    proj: Proj,
}

impl FromStorage {
    pub fn new(target: &str) -> Result<Self> {
        let proj = Proj::new_known_crs("EPSG:4326", target, None)
            .map_err(|e| Error::bad(format!("unknown or unsupported CRS '{target}': {e}")))?;
        Ok(FromStorage { proj })
    }

    pub fn point(&self, lon: f64, lat: f64) -> Result<(f64, f64)> {
        self.proj
            .convert((lon, lat))
            .map_err(|e| Error::Proj(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_epsg_wkt_and_projjson_are_accepted() {
        assert_eq!(user_crs("EPSG:6372"), Some(UserCrs::Epsg(6372)));
        assert_eq!(user_crs(" 32614 "), Some(UserCrs::Epsg(32614)));
        assert_eq!(user_crs("epsg:4326"), Some(UserCrs::Epsg(4326)));
        assert_eq!(
            user_crs("urn:ogc:def:crs:EPSG::6372"),
            Some(UserCrs::Epsg(6372))
        );
        assert_eq!(
            user_crs("http://www.opengis.net/def/crs/EPSG/0/6372"),
            Some(UserCrs::Epsg(6372))
        );
        assert_eq!(user_crs("GEOGCS[\"WGS 84\",DATUM[…]]"), Some(UserCrs::Wkt));
        assert_eq!(
            user_crs("PROJCRS[\"x\",BASEGEOGCRS[…]]"),
            Some(UserCrs::Wkt)
        );
        assert_eq!(
            user_crs("{\"type\": \"GeographicCRS\"}"),
            Some(UserCrs::ProjJson)
        );
        for bad in [
            "http://127.0.0.1:9/crs",
            "https://example.com/epsg/6372",
            "/etc/passwd",
            "+proj=longlat +init=/etc/passwd",
            "file:///tmp/x.prj",
            "EPSG:abc",
            "EPSG:0",
            "GEOGCS",
            "WGS84",
        ] {
            assert_eq!(user_crs(bad), None, "{bad}");
            let e = SourceCrs::from_user(bad).unwrap_err().to_string();
            assert!(e.contains("not an EPSG code"), "{bad}: {e}");
        }
        let wkt = SourceCrs::from_user("EPSG:6372").unwrap().wkt;
        assert_eq!(SourceCrs::from_user(&wkt).unwrap().epsg, Some(6372));
    }

    /// GDAL's URL-following CRS parser and its HTTP client reach nothing: a local
    /// listener sees no connection.
    #[test]
    fn gdal_never_connects() {
        crate::ingest::init_gdal();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        // On other threads than the one that switched the network off, as ingests
        // run: a CRS URL, GDAL's curl reader, a GeoJSON whose `crs` is a link.
        let dir = tempfile::tempdir().unwrap();
        let gj = dir.path().join("linked.geojson");
        std::fs::write(
            &gj,
            format!(
                r#"{{"type":"FeatureCollection","crs":{{"type":"link","properties":{{"href":"http://127.0.0.1:{port}/crs","type":"ogcwkt"}}}},"features":[{{"type":"Feature","properties":{{}},"geometry":{{"type":"Point","coordinates":[1,2]}}}}]}}"#
            ),
        )
        .unwrap();
        std::thread::spawn(move || {
            let _ = SpatialRef::from_definition(&format!("http://127.0.0.1:{port}/crs.wkt"));
            let _ = gdal::Dataset::open(format!("/vsicurl/http://127.0.0.1:{port}/x.none"));
            if let Ok(ds) = gdal::Dataset::open(&gj) {
                use gdal::vector::LayerAccess;
                if let Ok(layer) = ds.layer(0) {
                    let _ = layer.spatial_ref();
                }
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(l.accept().is_err(), "GDAL connected to the listener");
    }

    #[test]
    fn monterrey_round_trips_through_mexican_crss() {
        let (lon, lat) = (-100.31, 25.67);
        for code in [
            "EPSG:6372",
            "EPSG:6369",
            "EPSG:4487",
            "EPSG:32614",
            "EPSG:4267",
        ] {
            let out = FromStorage::new(code).unwrap();
            let (x, y) = out.point(lon, lat).unwrap();
            let src = SourceCrs::from_user(code).unwrap();
            let back = ToStorage::new(&src).unwrap();
            let mut g = Geometry::Point(geo::Point::new(x, y));
            back.apply(&mut g).unwrap();
            let Geometry::Point(p) = g else { panic!() };
            assert!(
                (p.x() - lon).abs() < 1e-7 && (p.y() - lat).abs() < 1e-7,
                "{code}: {p:?}"
            );
        }
    }

    #[test]
    fn easting_comes_first_for_lcc() {
        // EPSG:6372 is northing-first in authority order; we must hand out easting first.
        let (x, y) = FromStorage::new("EPSG:6372")
            .unwrap()
            .point(-100.31, 25.67)
            .unwrap();
        assert!((2_000_000.0..3_000_000.0).contains(&x), "x={x}");
        assert!((1_000_000.0..2_500_000.0).contains(&y), "y={y}");
    }

    #[test]
    fn unknown_crs_is_a_user_error() {
        let e = SourceCrs::from_user("EPSG:999999").unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("unknown CRS"));
    }
}
