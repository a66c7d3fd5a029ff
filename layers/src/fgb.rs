//! FlatGeobuf, the storage format of every layer version: writing it, and reading single
//! features straight out of a memory-mapped file.
//!
//! Files are written by the `flatgeobuf` crate with its packed Hilbert R-tree, so any
//! FlatGeobuf reader (GDAL, QGIS) can open a stored version. Reading is our own: the
//! crate only reads sequentially, while serving needs random access by byte offset, and
//! the leaf level of the packed R-tree already lists every feature's bbox and offset.
//!
//! Every feature carries its stable DataHub id in the first column, [`FID_COLUMN`],
//! because the R-tree sorts features by Hilbert order, not source order.

use std::io::Write;

use flatgeobuf::packed_r_tree::PackedRTree;
use flatgeobuf::{ColumnType, FgbCrs, FgbWriter, FgbWriterOptions, GeometryType};
use geozero::{ColumnValue, PropertyProcessor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Column holding the DataHub feature id; never shown as a property.
pub const FID_COLUMN: &str = "__datahub_fid";

const MAGIC: [u8; 8] = [0x66, 0x67, 0x62, 0x03, 0x66, 0x67, 0x62, 0x00];

/// Attribute types DataHub keeps (the types GIS users see in QGIS).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Bool,
    Int,
    Long,
    Float,
    String,
    Date,
    Datetime,
}

impl FieldType {
    fn column_type(self) -> ColumnType {
        match self {
            FieldType::Bool => ColumnType::Bool,
            FieldType::Int => ColumnType::Int,
            FieldType::Long => ColumnType::Long,
            FieldType::Float => ColumnType::Double,
            FieldType::String => ColumnType::String,
            FieldType::Date | FieldType::Datetime => ColumnType::DateTime,
        }
    }

    /// JSON Schema type name, for queryables and docs.
    pub fn json_type(self) -> &'static str {
        match self {
            FieldType::Bool => "boolean",
            FieldType::Int | FieldType::Long => "integer",
            FieldType::Float => "number",
            FieldType::String | FieldType::Date | FieldType::Datetime => "string",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ftype: FieldType,
}

/// One attribute value as read from a source.
#[derive(Debug, Clone, PartialEq)]
pub enum Value2 {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f64),
    /// Strings, and dates/datetimes as ISO 8601 text.
    Text(String),
}

/// Streams features into a FlatGeobuf file with its spatial index.
pub struct LayerWriter<'a> {
    fgb: FgbWriter<'a>,
    names: Vec<String>,
}

impl<'a> LayerWriter<'a> {
    pub fn new(name: &str, schema: &[Field]) -> Result<Self> {
        let options = FgbWriterOptions {
            write_index: true,
            // Each feature keeps its own type: a Shapefile "Polygon" layer holds
            // MultiPolygons too, and promoting all to multi would change the data.
            detect_type: false,
            promote_to_multi: false,
            crs: FgbCrs {
                code: 4326,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut fgb = FgbWriter::create_with_options(name, GeometryType::Unknown, options)
            .map_err(|e| Error::Internal(format!("cannot start FlatGeobuf writer: {e}")))?;
        fgb.add_column(FID_COLUMN, ColumnType::Long, |_, c| c.nullable = false);
        for f in schema {
            fgb.add_column(&f.name, f.ftype.column_type(), |_, c| c.nullable = true);
        }
        let mut names = vec![FID_COLUMN.to_string()];
        names.extend(schema.iter().map(|f| f.name.clone()));
        Ok(LayerWriter { fgb, names })
    }

    pub fn add(&mut self, fid: i64, geom: geo::Geometry<f64>, values: &[Value2]) -> Result<()> {
        // GDAL 3.6's FlatGeobuf reader (Debian 12, so QGIS there) cannot read a
        // one-part MultiLineString, which the writer encodes without part ends: store
        // it as the LineString it is.
        let geom = match geom {
            geo::Geometry::MultiLineString(mut ml) if ml.0.len() == 1 => {
                geo::Geometry::LineString(ml.0.remove(0))
            }
            g => g,
        };
        let names = &self.names;
        let mut failed: Option<String> = None;
        self.fgb
            .add_feature_geom(geom, |fw| {
                let mut put = |i: usize, v: &ColumnValue| {
                    if let Err(e) = fw.property(i, &names[i], v) {
                        failed.get_or_insert(e.to_string());
                    }
                };
                put(0, &ColumnValue::Long(fid));
                for (i, v) in values.iter().enumerate() {
                    match v {
                        Value2::Null => {}
                        Value2::Bool(b) => put(i + 1, &ColumnValue::Bool(*b)),
                        Value2::Int(n) => put(i + 1, &ColumnValue::Int(*n)),
                        Value2::Long(n) => put(i + 1, &ColumnValue::Long(*n)),
                        Value2::Float(n) => put(i + 1, &ColumnValue::Double(*n)),
                        Value2::Text(s) => put(i + 1, &ColumnValue::String(s)),
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot write feature {fid}: {e}")))?;
        match failed {
            Some(e) => Err(Error::Internal(format!("cannot write feature {fid}: {e}"))),
            None => Ok(()),
        }
    }

    pub fn finish(self, out: impl Write) -> Result<()> {
        self.fgb
            .write(out)
            .map_err(|e| Error::Internal(format!("cannot finish FlatGeobuf file: {e}")))
    }
}

/// A bbox and byte offset of one feature, from the R-tree's leaf level.
#[derive(Debug, Clone, Copy)]
pub struct Leaf {
    pub bbox: [f64; 4],
    /// Offset from the start of the feature section.
    pub offset: u64,
}

/// A stored FlatGeobuf file opened for random access (usually over an mmap).
pub struct FgbView<B: AsRef<[u8]>> {
    buf: B,
    features_start: usize,
    count: usize,
    index_start: usize,
    index_size: usize,
    geometry_type: GeometryType,
    columns: Vec<(String, ColumnType)>,
}

impl<B: AsRef<[u8]>> FgbView<B> {
    pub fn open(buf: B) -> Result<Self> {
        let bytes = buf.as_ref();
        if bytes.len() < 12 || bytes[..3] != MAGIC[..3] {
            return Err(Error::Corrupt("not a FlatGeobuf file".into()));
        }
        let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let header = flatgeobuf::size_prefixed_root_as_header(&bytes[8..])
            .map_err(|e| Error::Corrupt(format!("bad FlatGeobuf header: {e}")))?;
        let count = usize::try_from(header.features_count())
            .map_err(|_| Error::Corrupt("feature count".into()))?;
        let node_size = header.index_node_size();
        if node_size == 0 && count > 0 {
            return Err(Error::Corrupt(
                "stored FlatGeobuf has no spatial index".into(),
            ));
        }
        let index_start = 12 + header_len;
        let index_size = if count > 0 {
            PackedRTree::index_size(count, node_size)
        } else {
            0
        };
        let columns = header
            .columns()
            .map(|cols| {
                cols.iter()
                    .map(|c| (c.name().to_string(), c.type_()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let geometry_type = header.geometry_type();
        if index_start + index_size > bytes.len() {
            return Err(Error::Corrupt("FlatGeobuf file is truncated".into()));
        }
        Ok(FgbView {
            features_start: index_start + index_size,
            buf,
            count,
            index_start,
            index_size,
            geometry_type,
            columns,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every feature's bbox and offset, read from the R-tree leaves (no feature decoding).
    pub fn leaves(&self) -> Result<Vec<Leaf>> {
        let bytes = self.buf.as_ref();
        let leaf_bytes = self.count * 40;
        let start = self.index_start + self.index_size - leaf_bytes;
        let f = |b: &[u8], i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        let mut out = Vec::with_capacity(self.count);
        for chunk in bytes[start..start + leaf_bytes].chunks_exact(40) {
            out.push(Leaf {
                bbox: [
                    f64::from_le_bytes(f(chunk, 0)),
                    f64::from_le_bytes(f(chunk, 8)),
                    f64::from_le_bytes(f(chunk, 16)),
                    f64::from_le_bytes(f(chunk, 24)),
                ],
                offset: u64::from_le_bytes(f(chunk, 32)),
            });
        }
        Ok(out)
    }

    fn feature(&self, offset: u64) -> Result<flatgeobuf::Feature<'_>> {
        let bytes = self.buf.as_ref();
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(self.features_start))
            .filter(|s| s + 4 <= bytes.len())
            .ok_or_else(|| Error::Corrupt(format!("feature offset {offset} out of range")))?;
        flatgeobuf::size_prefixed_root_as_feature(&bytes[start..])
            .map_err(|e| Error::Corrupt(format!("bad feature at offset {offset}: {e}")))
    }

    /// The DataHub id of the feature at `offset`.
    pub fn fid(&self, offset: u64) -> Result<i64> {
        let feat = self.feature(offset)?;
        let props = feat.properties().map(|p| p.bytes()).unwrap_or(&[]);
        let mut id = None;
        self.for_each_property(props, |i, v| {
            if i == 0 {
                if let Value::Number(n) = v {
                    id = n.as_i64();
                }
            }
        })?;
        id.ok_or_else(|| Error::Corrupt(format!("feature at offset {offset} has no id")))
    }

    /// Writes the feature at `offset` as one RFC 7946 GeoJSON Feature object.
    pub fn write_geojson(&self, offset: u64, out: &mut Vec<u8>) -> Result<()> {
        let feat = self.feature(offset)?;
        let mut id = Value::Null;
        let mut props = Map::new();
        let raw = feat.properties().map(|p| p.bytes()).unwrap_or(&[]);
        self.for_each_property(raw, |i, v| {
            if i == 0 {
                id = v;
            } else {
                props.insert(self.columns[i].0.clone(), v);
            }
        })?;
        out.extend_from_slice(br#"{"type":"Feature","id":"#);
        serde_json::to_writer(&mut *out, &id).map_err(|e| Error::Internal(e.to_string()))?;
        out.extend_from_slice(br#","geometry":"#);
        match feat.geometry() {
            Some(g) => {
                let mut w = geozero::geojson::GeoJsonWriter::new(&mut *out);
                g.process(&mut w, self.geometry_type)
                    .map_err(|e| Error::Corrupt(format!("bad geometry at offset {offset}: {e}")))?;
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","properties":"#);
        serde_json::to_writer(&mut *out, &props).map_err(|e| Error::Internal(e.to_string()))?;
        out.push(b'}');
        Ok(())
    }

    /// The geometry of the feature at `offset` as a `geo` geometry.
    pub fn geometry(&self, offset: u64) -> Result<Option<geo::Geometry<f64>>> {
        let feat = self.feature(offset)?;
        let Some(g) = feat.geometry() else {
            return Ok(None);
        };
        let mut w = geozero::geo_types::GeoWriter::new();
        g.process(&mut w, self.geometry_type)
            .map_err(|e| Error::Corrupt(format!("bad geometry at offset {offset}: {e}")))?;
        Ok(w.take_geometry())
    }

    /// Decodes FlatGeobuf's property encoding (u16 column index, then the value).
    fn for_each_property(&self, bytes: &[u8], mut f: impl FnMut(usize, Value)) -> Result<()> {
        let bad = || Error::Corrupt("bad property encoding".into());
        let mut p = 0usize;
        let take = |p: &mut usize, n: usize| -> Result<&[u8]> {
            let s = bytes.get(*p..*p + n).ok_or_else(bad)?;
            *p += n;
            Ok(s)
        };
        while p + 2 <= bytes.len() {
            let col = u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
            p += 2;
            let ctype = self.columns.get(col).ok_or_else(bad)?.1;
            let v = match ctype {
                ColumnType::Bool => Value::Bool(take(&mut p, 1)?[0] != 0),
                ColumnType::Byte => Value::from(take(&mut p, 1)?[0] as i8),
                ColumnType::UByte => Value::from(take(&mut p, 1)?[0]),
                ColumnType::Short => {
                    let b = take(&mut p, 2)?;
                    Value::from(i16::from_le_bytes([b[0], b[1]]))
                }
                ColumnType::UShort => {
                    let b = take(&mut p, 2)?;
                    Value::from(u16::from_le_bytes([b[0], b[1]]))
                }
                ColumnType::Int => Value::from(i32::from_le_bytes(arr4(take(&mut p, 4)?))),
                ColumnType::UInt => Value::from(u32::from_le_bytes(arr4(take(&mut p, 4)?))),
                ColumnType::Long => Value::from(i64::from_le_bytes(arr8(take(&mut p, 8)?))),
                ColumnType::ULong => Value::from(u64::from_le_bytes(arr8(take(&mut p, 8)?))),
                ColumnType::Float => {
                    float_value(f64::from(f32::from_le_bytes(arr4(take(&mut p, 4)?))))
                }
                ColumnType::Double => float_value(f64::from_le_bytes(arr8(take(&mut p, 8)?))),
                _ => {
                    let len = u32::from_le_bytes(arr4(take(&mut p, 4)?)) as usize;
                    let s = take(&mut p, len)?;
                    Value::String(String::from_utf8_lossy(s).into_owned())
                }
            };
            f(col, v);
        }
        Ok(())
    }
}

/// JSON has no NaN/Infinity: such values become null rather than invalid JSON.
fn float_value(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn arr4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn arr8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}
