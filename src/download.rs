//! Downloads of a collection (or of the result of an items query) as files:
//! GeoJSON streamed feature by feature, and FlatGeobuf, CSV (WKT geometry),
//! GeoPackage, zipped Shapefile (UTF-8, `.cpg` written), KML and Excel (XLSX: the
//! attributes, and longitude/latitude of a point on each geometry) written by GDAL to a
//! scratch directory and then streamed. Memory stays flat whatever the layer size:
//! features go out in chunks through a bounded channel; files are on disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use gdal::vector::{Defn, Feature, FieldValue, LayerAccess, LayerOptions, ToGdal};
use gdal_sys::{OGRFieldType, OGRwkbGeometryType};
use layers::fgb::FieldType;
use layers::index::LoadedLayer;
use serde_json::Value;
use tokio::sync::mpsc::Sender;

use crate::ogc::crs::{OutputCrs, Reproject};

/// Formats offered with `f=` on items and as whole-layer download links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadFormat {
    GeoJson,
    Fgb,
    Csv,
    Gpkg,
    Shp,
    Kml,
    Xlsx,
}

pub const ALL: [DownloadFormat; 7] = [
    DownloadFormat::GeoJson,
    DownloadFormat::Fgb,
    DownloadFormat::Csv,
    DownloadFormat::Gpkg,
    DownloadFormat::Shp,
    DownloadFormat::Kml,
    DownloadFormat::Xlsx,
];

/// The formats a layer can be downloaded in: all of them, but a dataset without
/// geometry has no Shapefile or FlatGeobuf (both need a geometry; GDAL writes neither
/// for a table).
pub fn formats_for(meta: &layers::store::LayerMeta) -> impl Iterator<Item = DownloadFormat> {
    let table = meta.geometry_types.is_empty() && meta.feature_count > 0;
    ALL.into_iter()
        .filter(move |f| !(table && matches!(f, DownloadFormat::Shp | DownloadFormat::Fgb)))
}

/// Rows an Excel sheet holds, the header included.
const XLSX_MAX_ROWS: usize = 1_048_576;

impl DownloadFormat {
    pub fn parse(f: &str) -> Option<Self> {
        ALL.into_iter().find(|d| d.param() == f)
    }

    /// The `f=` value.
    pub fn param(self) -> &'static str {
        match self {
            DownloadFormat::GeoJson => "geojson",
            DownloadFormat::Fgb => "fgb",
            DownloadFormat::Csv => "csv",
            DownloadFormat::Gpkg => "gpkg",
            DownloadFormat::Shp => "shp",
            DownloadFormat::Kml => "kml",
            DownloadFormat::Xlsx => "xlsx",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            DownloadFormat::Shp => "zip",
            other => other.param(),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            DownloadFormat::GeoJson => "application/geo+json",
            DownloadFormat::Fgb => "application/flatgeobuf",
            DownloadFormat::Csv => "text/csv; charset=utf-8",
            DownloadFormat::Gpkg => "application/geopackage+sqlite3",
            DownloadFormat::Shp => "application/zip",
            DownloadFormat::Kml => "application/vnd.google-earth.kml+xml",
            DownloadFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            DownloadFormat::GeoJson => "GeoJSON",
            DownloadFormat::Fgb => "FlatGeobuf",
            DownloadFormat::Csv => "CSV (geometría WKT / WKT geometry)",
            DownloadFormat::Gpkg => "GeoPackage",
            DownloadFormat::Shp => "Shapefile (zip, UTF-8)",
            DownloadFormat::Kml => "KML",
            DownloadFormat::Xlsx => "Excel (XLSX; lon/lat de un punto de cada geometría)",
        }
    }

    fn driver(self) -> &'static str {
        match self {
            DownloadFormat::GeoJson => "GeoJSON",
            DownloadFormat::Fgb => "FlatGeobuf",
            DownloadFormat::Csv => "CSV",
            DownloadFormat::Gpkg => "GPKG",
            DownloadFormat::Shp => "ESRI Shapefile",
            DownloadFormat::Kml => "KML",
            DownloadFormat::Xlsx => "XLSX",
        }
    }
}

pub type Chunk = Result<Bytes, std::io::Error>;

/// How long a download waits for its client to take the next chunk before it stops:
/// a stalled (or deliberately slow) client must not hold a thread forever.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends a chunk from a blocking thread; false when the client went away or took
/// nothing for [`IDLE`].
fn send(tx: &Sender<Chunk>, chunk: Chunk) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(tx.send_timeout(chunk, IDLE)).is_ok(),
        Err(_) => tx.blocking_send(chunk).is_ok(),
    }
}

const CHUNK: usize = 256 * 1024;

/// Streams the features at `positions` as one GeoJSON FeatureCollection into `tx`.
/// Returns early (without error) when the client has gone away or stalled.
pub fn stream_geojson(
    layer: &LoadedLayer,
    positions: &[u32],
    crs: &'static OutputCrs,
    tx: &Sender<Chunk>,
) -> layers::Result<()> {
    let reproject = Reproject::new(crs).map_err(layers::Error::Internal)?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(br#"{"type":"FeatureCollection","features":["#);
    for (n, &pos) in positions.iter().enumerate() {
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        if n > 0 {
            buf.push(b',');
        }
        reproject.write_feature(layer, offset, &mut buf)?;
        if buf.len() >= CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096));
            if !send(tx, Ok(Bytes::from(full))) {
                return Ok(());
            }
        }
    }
    buf.extend_from_slice(b"]}");
    send(tx, Ok(Bytes::from(buf)));
    Ok(())
}

/// Streams a file into `tx` in chunks.
pub fn stream_file(path: &Path, tx: &Sender<Chunk>) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if !send(tx, Ok(Bytes::from(buf))) {
            return Ok(());
        }
    }
}

/// The single geometry type a typed format's layer is declared with, or an error
/// when the layer mixes kinds a Shapefile cannot hold together.
fn layer_geometry_type(types: &[String], fmt: DownloadFormat) -> layers::Result<u32> {
    let kind = |t: &str| match t {
        "Point" | "MultiPoint" => 0,
        "LineString" | "MultiLineString" => 1,
        "Polygon" | "MultiPolygon" => 2,
        _ => 3,
    };
    if types.is_empty() && matches!(fmt, DownloadFormat::Shp | DownloadFormat::Fgb) {
        return Err(layers::Error::bad(format!(
            "this dataset has no geometry and {} needs one: download it as CSV (f=csv), \
             Excel (f=xlsx), GeoPackage (f=gpkg) or GeoJSON",
            fmt.title()
        )));
    }
    let kinds: std::collections::BTreeSet<u8> = types.iter().map(|t| kind(t)).collect();
    let multi = types.iter().any(|t| t.starts_with("Multi"));
    Ok(match (kinds.len(), kinds.first()) {
        (1, Some(0)) if !multi => OGRwkbGeometryType::wkbPoint,
        (1, Some(0)) => OGRwkbGeometryType::wkbMultiPoint,
        (1, Some(1)) => OGRwkbGeometryType::wkbMultiLineString,
        (1, Some(2)) => OGRwkbGeometryType::wkbMultiPolygon,
        _ if fmt == DownloadFormat::Shp => {
            return Err(layers::Error::bad(format!(
                "a Shapefile holds one kind of geometry and this layer has {}; download it \
                 as GeoPackage (f=gpkg) or GeoJSON instead",
                types.join(", ")
            )))
        }
        _ => OGRwkbGeometryType::wkbUnknown,
    })
}

/// Promotes a single part to its multi type where the layer is declared multi
/// (GeoPackage and FlatGeobuf check geometry types against the layer's).
fn promote(g: geo::Geometry<f64>, layer_type: u32) -> geo::Geometry<f64> {
    use geo::Geometry as G;
    match (g, layer_type) {
        (G::Polygon(p), OGRwkbGeometryType::wkbMultiPolygon) => {
            G::MultiPolygon(geo::MultiPolygon::new(vec![p]))
        }
        (G::LineString(l), OGRwkbGeometryType::wkbMultiLineString) => {
            G::MultiLineString(geo::MultiLineString::new(vec![l]))
        }
        (G::Point(p), OGRwkbGeometryType::wkbMultiPoint) => {
            G::MultiPoint(geo::MultiPoint::new(vec![p]))
        }
        (g, _) => g,
    }
}

/// Writes the features at `positions` with GDAL into `dir` and returns the file to
/// send (the zipped Shapefile for `shp`).
pub fn write_file(
    layer: &LoadedLayer,
    positions: &[u32],
    fmt: DownloadFormat,
    crs: &'static OutputCrs,
    dir: &Path,
) -> layers::Result<PathBuf> {
    let gdal_err = |e: gdal::errors::GdalError| layers::Error::Internal(format!("GDAL: {e}"));
    let id = &layer.meta.id;
    if fmt == DownloadFormat::Xlsx && positions.len() >= XLSX_MAX_ROWS {
        return Err(layers::Error::bad(format!(
            "an Excel sheet holds at most {} rows and this result has {}: download it as CSV \
             (f=csv), or narrow it with bbox, filter or limit",
            XLSX_MAX_ROWS - 1,
            positions.len()
        )));
    }
    let reproject = Reproject::new(crs).map_err(layers::Error::Internal)?;
    let path = match fmt {
        DownloadFormat::Shp => dir.join("shp").join(format!("{id}.shp")),
        other => dir.join(format!("{id}.{}", other.extension())),
    };
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| layers::Error::io(p, e))?;
    }
    let driver = gdal::DriverManager::get_driver_by_name(fmt.driver()).map_err(gdal_err)?;
    let mut ds = driver.create_vector_only(&path).map_err(gdal_err)?;
    // Files store easting/longitude first whatever the CRS's authority order.
    let mut srs = match crs.epsg {
        Some(code) => gdal::spatial_ref::SpatialRef::from_epsg(code),
        None => gdal::spatial_ref::SpatialRef::from_epsg(4326),
    }
    .map_err(gdal_err)?;
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let gtype = if fmt == DownloadFormat::Xlsx {
        // No geometry column in a sheet: the point columns carry the place.
        OGRwkbGeometryType::wkbNone
    } else {
        layer_geometry_type(&layer.meta.geometry_types, fmt)?
    };
    // A dataset without geometry: no geometry column at all (not an empty WKT one).
    let no_geometry = layer.meta.geometry_types.is_empty();
    let gtype = if no_geometry {
        OGRwkbGeometryType::wkbNone
    } else {
        gtype
    };
    let options: Vec<&str> = match fmt {
        DownloadFormat::Csv if no_geometry => vec!["CREATE_CSVT=YES"],
        DownloadFormat::Csv => vec!["GEOMETRY=AS_WKT", "CREATE_CSVT=YES"],
        DownloadFormat::Shp => vec!["ENCODING=UTF-8"],
        DownloadFormat::Fgb => vec!["SPATIAL_INDEX=YES"],
        _ => vec![],
    };
    let txn_capable = fmt == DownloadFormat::Gpkg;
    {
        let lyr = ds
            .create_layer(LayerOptions {
                name: id,
                srs: if matches!(fmt, DownloadFormat::Csv | DownloadFormat::Xlsx) {
                    None
                } else {
                    Some(&srs)
                },
                ty: gtype,
                options: Some(&options),
            })
            .map_err(gdal_err)?;
        let mut fields: Vec<(&str, u32)> = layer
            .meta
            .schema
            .iter()
            .map(|f| {
                let t = match f.ftype {
                    FieldType::Bool | FieldType::Int => OGRFieldType::OFTInteger,
                    FieldType::Long => OGRFieldType::OFTInteger64,
                    FieldType::Float => OGRFieldType::OFTReal,
                    FieldType::String => OGRFieldType::OFTString,
                    FieldType::Date => OGRFieldType::OFTDate,
                    FieldType::Datetime => OGRFieldType::OFTDateTime,
                };
                (f.name.as_str(), t)
            })
            .collect();
        let point_names = point_columns(layer, crs);
        if fmt == DownloadFormat::Xlsx {
            fields.push((point_names[0].as_str(), OGRFieldType::OFTReal));
            fields.push((point_names[1].as_str(), OGRFieldType::OFTReal));
        }
        lyr.create_defn_fields(&fields).map_err(gdal_err)?;
    }
    // GeoPackage: one transaction for all rows (row-by-row commits are ~100x slower).
    if txn_capable {
        let mut t = ds.start_transaction().map_err(gdal_err)?;
        write_rows(&mut t, layer, positions, gtype, fmt, crs, &reproject)?;
        t.commit().map_err(gdal_err)?;
    } else {
        write_rows(&mut ds, layer, positions, gtype, fmt, crs, &reproject)?;
    }
    ds.close().map_err(gdal_err)?;
    if fmt != DownloadFormat::Shp {
        return Ok(path);
    }
    let zip_path = dir.join(format!("{id}.zip"));
    zip_folder(&dir.join("shp"), &zip_path, "")?;
    Ok(zip_path)
}

/// Names of the point columns of an Excel download: longitud/latitud in degrees, x/y
/// in a projected output CRS; suffixed when the layer has fields of those names.
fn point_columns(layer: &LoadedLayer, crs: &OutputCrs) -> [String; 2] {
    let base = if crs.epsg.is_some_and(|c| c != 4326) {
        ["x", "y"]
    } else {
        ["longitud", "latitud"]
    };
    base.map(|b| {
        let taken = |n: &str| {
            layer
                .meta
                .schema
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(n))
        };
        let mut name = b.to_string();
        let mut k = 2;
        while taken(&name) {
            name = format!("{b}_{k}");
            k += 1;
        }
        name
    })
}

#[allow(clippy::too_many_arguments)]
fn write_rows(
    target: &mut gdal::Dataset,
    layer: &LoadedLayer,
    positions: &[u32],
    gtype: u32,
    fmt: DownloadFormat,
    crs: &'static OutputCrs,
    reproject: &Reproject,
) -> layers::Result<()> {
    let gdal_err = |e: gdal::errors::GdalError| layers::Error::Internal(format!("GDAL: {e}"));
    let lyr = target.layer(0).map_err(gdal_err)?;
    let defn = Defn::from_layer(&lyr);
    // Our fields were appended in schema order after any the driver adds itself
    // (KML's Name and Description); names may be laundered (Shapefile), so go by
    // position, not name.
    let n_schema = layer.meta.schema.len();
    // An Excel download appends its two point columns after the schema's.
    let appended = if fmt == DownloadFormat::Xlsx { 2 } else { 0 };
    let first = defn.fields().count().saturating_sub(n_schema + appended);
    for (i, &pos) in positions.iter().enumerate() {
        // The time budget, the client, and the data folder's free space.
        crate::limits::check_every(i)?;
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        let (geom, values) = layer.geometry_and_properties(offset)?;
        let mut f = Feature::new(&defn).map_err(gdal_err)?;
        if let Some(mut g) = geom {
            if !reproject.is_identity() {
                reproject
                    .geometry(&mut g)
                    .map_err(|e| layers::Error::bad(format!("{e} in {}", crs.uri)))?;
            }
            if fmt == DownloadFormat::Xlsx {
                // A point on the geometry (inside a polygon), easting/longitude first.
                use geo::InteriorPoint;
                if let Some(p) = g.interior_point() {
                    f.set_field(first + n_schema, &FieldValue::RealValue(p.x()))
                        .map_err(gdal_err)?;
                    f.set_field(first + n_schema + 1, &FieldValue::RealValue(p.y()))
                        .map_err(gdal_err)?;
                }
            } else {
                if !reproject.is_identity() && crs.north_first {
                    layers::crs::for_each_coord_mut(&mut g, &mut |c| {
                        std::mem::swap(&mut c.x, &mut c.y)
                    });
                }
                let g = promote(g, gtype);
                f.set_geometry(g.to_gdal().map_err(gdal_err)?)
                    .map_err(gdal_err)?;
            }
        }
        for (i, v) in values {
            if i >= n_schema {
                continue;
            }
            let fv = match v {
                Value::Null => continue,
                Value::Bool(b) => FieldValue::IntegerValue(i32::from(b)),
                Value::Number(n) => match (layer.meta.schema[i].ftype, n.as_i64()) {
                    (FieldType::Float, _) | (_, None) => {
                        FieldValue::RealValue(n.as_f64().unwrap_or(f64::NAN))
                    }
                    (FieldType::Long, Some(x)) => FieldValue::Integer64Value(x),
                    (_, Some(x)) => match i32::try_from(x) {
                        Ok(x) => FieldValue::IntegerValue(x),
                        Err(_) => FieldValue::Integer64Value(x),
                    },
                },
                Value::String(s) => FieldValue::StringValue(s),
                other => FieldValue::StringValue(other.to_string()),
            };
            // Dates go in as ISO text, which GDAL parses into date fields.
            f.set_field(first + i, &fv).map_err(gdal_err)?;
        }
        f.create(&lyr).map_err(gdal_err)?;
    }
    Ok(())
}

/// Zips the files of `folder` (not recursive) into `out`, each named `prefix` + its
/// file name, in name order.
pub fn zip_folder(folder: &Path, out: &Path, prefix: &str) -> layers::Result<()> {
    let io = |e: std::io::Error| layers::Error::io(out, e);
    let file = std::fs::File::create(out).map_err(io)?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        zip.start_file(format!("{prefix}{name}"), opts)
            .map_err(|e| layers::Error::Internal(format!("zip: {e}")))?;
        let mut f = std::fs::File::open(&p).map_err(io)?;
        std::io::copy(&mut f, &mut zip).map_err(io)?;
    }
    zip.finish()
        .map_err(|e| layers::Error::Internal(format!("zip: {e}")))?;
    Ok(())
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
