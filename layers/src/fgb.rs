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

use flatbuffers::FlatBufferBuilder;
use flatgeobuf::packed_r_tree::PackedRTree;
use flatgeobuf::{ColumnType, GeometryType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Encodes one feature as a size-prefixed FlatGeobuf `Feature` buffer. Runs in the
/// ingest workers (one encoder per thread), so encoding uses every core.
pub struct FeatureEncoder {
    fbb: FlatBufferBuilder<'static>,
    props: Vec<u8>,
}

impl Default for FeatureEncoder {
    fn default() -> Self {
        FeatureEncoder {
            fbb: FlatBufferBuilder::with_capacity(1024),
            props: Vec::with_capacity(256),
        }
    }
}

/// An encoded feature and its bbox.
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The geometry's bbox; [0, 0, 0, 0] for a row of a table without geometry.
    pub bbox: [f64; 4],
    pub has_geometry: bool,
}

impl FeatureEncoder {
    /// `values` follow the schema; column 0 is always the DataHub id. `geom` is None
    /// for the rows of a dataset without geometry (a table with no place).
    pub fn encode(
        &mut self,
        fid: i64,
        geom: Option<&geo::Geometry<f64>>,
        values: &[Value2],
    ) -> Result<Encoded> {
        use geo::BoundingRect;
        let bbox = match geom {
            Some(g) => {
                let r = g.bounding_rect().ok_or_else(|| {
                    Error::Internal(format!("feature {fid} has an empty geometry"))
                })?;
                Some([r.min().x, r.min().y, r.max().x, r.max().y])
            }
            None => None,
        };
        self.props.clear();
        self.props.extend_from_slice(&0u16.to_le_bytes());
        self.props.extend_from_slice(&fid.to_le_bytes());
        for (i, v) in values.iter().enumerate() {
            let col = u16::try_from(i + 1)
                .map_err(|_| Error::bad("more than 65,534 attribute columns"))?;
            let p = &mut self.props;
            match v {
                Value2::Null => continue,
                Value2::Bool(b) => {
                    p.extend_from_slice(&col.to_le_bytes());
                    p.push(u8::from(*b));
                }
                Value2::Int(n) => {
                    p.extend_from_slice(&col.to_le_bytes());
                    p.extend_from_slice(&n.to_le_bytes());
                }
                Value2::Long(n) => {
                    p.extend_from_slice(&col.to_le_bytes());
                    p.extend_from_slice(&n.to_le_bytes());
                }
                Value2::Float(n) => {
                    p.extend_from_slice(&col.to_le_bytes());
                    p.extend_from_slice(&n.to_le_bytes());
                }
                Value2::Text(t) => {
                    let len = u32::try_from(t.len()).map_err(|_| {
                        Error::bad(format!("feature {fid}: a text value over 4 GiB"))
                    })?;
                    p.extend_from_slice(&col.to_le_bytes());
                    p.extend_from_slice(&len.to_le_bytes());
                    p.extend_from_slice(t.as_bytes());
                }
            }
        }
        self.fbb.reset();
        let g = geom.map(|g| build_geometry(&mut self.fbb, g, true));
        let props = self.fbb.create_vector(&self.props);
        let f = flatgeobuf::Feature::create(
            &mut self.fbb,
            &flatgeobuf::FeatureArgs {
                geometry: g,
                properties: Some(props),
                columns: None,
            },
        );
        self.fbb.finish_size_prefixed(f, None);
        Ok(Encoded {
            bytes: self.fbb.finished_data().to_vec(),
            // The index needs a box: rows without geometry sit at the origin, and a
            // layer without geometry is never searched by bbox (no R-tree at load).
            bbox: bbox.unwrap_or([0.0; 4]),
            has_geometry: bbox.is_some(),
        })
    }
}

type Fbb = FlatBufferBuilder<'static>;

fn line_coords(xy: &mut Vec<f64>, l: &geo::LineString<f64>) {
    for c in &l.0 {
        xy.push(c.x);
        xy.push(c.y);
    }
}

fn polygon_coords(xy: &mut Vec<f64>, ends: &mut Vec<u32>, p: &geo::Polygon<f64>) {
    line_coords(xy, p.exterior());
    ends.push((xy.len() / 2) as u32);
    for r in p.interiors() {
        line_coords(xy, r);
        ends.push((xy.len() / 2) as u32);
    }
}

/// FlatGeobuf geometry encoding. `ends` are written even for one part: GDAL 3.6's
/// reader requires them for MultiLineStrings.
fn build_geometry(
    fbb: &mut Fbb,
    g: &geo::Geometry<f64>,
    typed: bool,
) -> flatbuffers::WIPOffset<flatgeobuf::Geometry<'static>> {
    use geo::Geometry as G;
    let mut xy = Vec::new();
    let mut ends = Vec::new();
    let mut parts = Vec::new();
    let gtype = match g {
        G::Point(p) => {
            xy.extend([p.x(), p.y()]);
            GeometryType::Point
        }
        G::MultiPoint(mp) => {
            for p in &mp.0 {
                xy.extend([p.x(), p.y()]);
            }
            GeometryType::MultiPoint
        }
        G::Line(l) => {
            xy.extend([l.start.x, l.start.y, l.end.x, l.end.y]);
            GeometryType::LineString
        }
        G::LineString(l) => {
            line_coords(&mut xy, l);
            GeometryType::LineString
        }
        G::MultiLineString(ml) => {
            for l in &ml.0 {
                line_coords(&mut xy, l);
                ends.push((xy.len() / 2) as u32);
            }
            GeometryType::MultiLineString
        }
        G::Polygon(p) => {
            polygon_coords(&mut xy, &mut ends, p);
            GeometryType::Polygon
        }
        G::Rect(r) => {
            polygon_coords(&mut xy, &mut ends, &r.to_polygon());
            GeometryType::Polygon
        }
        G::Triangle(t) => {
            polygon_coords(&mut xy, &mut ends, &t.to_polygon());
            GeometryType::Polygon
        }
        G::MultiPolygon(mp) => {
            for p in &mp.0 {
                parts.push(build_geometry(fbb, &G::Polygon(p.clone()), false));
            }
            GeometryType::MultiPolygon
        }
        G::GeometryCollection(gc) => {
            for p in &gc.0 {
                parts.push(build_geometry(fbb, p, true));
            }
            GeometryType::GeometryCollection
        }
    };
    let xy = (!xy.is_empty()).then(|| fbb.create_vector(&xy));
    let ends = (!ends.is_empty()).then(|| fbb.create_vector(&ends));
    let parts = (!parts.is_empty()).then(|| fbb.create_vector(&parts));
    flatgeobuf::Geometry::create(
        fbb,
        &flatgeobuf::GeometryArgs {
            xy,
            ends,
            parts,
            type_: if typed { gtype } else { GeometryType::Unknown },
            ..Default::default()
        },
    )
}

/// Collects encoded features in a temporary file, then writes the FlatGeobuf file:
/// header, packed Hilbert R-tree, features in Hilbert order.
///
/// Our own finishing step rather than the crate's `FgbWriter`: that one computes the
/// Hilbert value inside the sort comparator and reads each feature back with a seek
/// (a syscall per feature), together most of the time of a 1 M-point ingest.
pub struct LayerWriter {
    name: String,
    schema: Vec<Field>,
    tmp_path: std::path::PathBuf,
    tmp: std::io::BufWriter<std::fs::File>,
    written: u64,
    items: Vec<(u64, u32, [f64; 4])>,
}

impl LayerWriter {
    /// `tmp_path` is scratch space (removed by [`LayerWriter::finish`]).
    pub fn new(name: &str, schema: &[Field], tmp_path: &std::path::Path) -> Result<Self> {
        // Read access too: `finish` maps it to copy features out in Hilbert order.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp_path)
            .map_err(|e| Error::io(tmp_path, e))?;
        Ok(LayerWriter {
            name: name.to_string(),
            schema: schema.to_vec(),
            tmp_path: tmp_path.to_path_buf(),
            tmp: std::io::BufWriter::with_capacity(1 << 20, f),
            written: 0,
            items: Vec::new(),
        })
    }

    pub fn add(&mut self, e: &Encoded) -> Result<()> {
        self.tmp
            .write_all(&e.bytes)
            .map_err(|err| Error::io(&self.tmp_path, err))?;
        let len = u32::try_from(e.bytes.len())
            .map_err(|_| Error::bad("a single feature larger than 4 GiB"))?;
        self.items.push((self.written, len, e.bbox));
        self.written += u64::from(len);
        Ok(())
    }

    pub fn finish(mut self, mut out: impl Write) -> Result<()> {
        use flatgeobuf::packed_r_tree::{NodeItem, PackedRTree};
        self.tmp.flush().map_err(|e| Error::io(&self.tmp_path, e))?;
        let n = self.items.len();
        let mut ext = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for (_, _, b) in &self.items {
            ext = [
                ext[0].min(b[0]),
                ext[1].min(b[1]),
                ext[2].max(b[2]),
                ext[3].max(b[3]),
            ];
        }
        // Hilbert value of each bbox centre, computed once (descending, like the
        // reference writer).
        let (w, h) = (
            (ext[2] - ext[0]).max(f64::MIN_POSITIVE),
            (ext[3] - ext[1]).max(f64::MIN_POSITIVE),
        );
        let max = f64::from(u16::MAX);
        let mut order: Vec<(u32, u32)> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, (_, _, b))| {
                let x = (max * ((b[0] + b[2]) / 2.0 - ext[0]) / w).floor() as u32;
                let y = (max * ((b[1] + b[3]) / 2.0 - ext[1]) / h).floor() as u32;
                (hilbert(x, y), i as u32)
            })
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

        let mut fbb = FlatBufferBuilder::new();
        let name = fbb.create_string(&self.name);
        let mut specs = vec![(FID_COLUMN, ColumnType::Long, false)];
        specs.extend(
            self.schema
                .iter()
                .map(|f| (f.name.as_str(), f.ftype.column_type(), true)),
        );
        let mut cols = Vec::with_capacity(specs.len());
        for (cname, t, nullable) in specs {
            let cname = fbb.create_string(cname);
            cols.push(flatgeobuf::Column::create(
                &mut fbb,
                &flatgeobuf::ColumnArgs {
                    name: Some(cname),
                    type_: t,
                    nullable,
                    ..Default::default()
                },
            ));
        }
        let columns = fbb.create_vector(&cols);
        let envelope = (n > 0).then(|| fbb.create_vector(&ext));
        let org = fbb.create_string("EPSG");
        let crs = flatgeobuf::Crs::create(
            &mut fbb,
            &flatgeobuf::CrsArgs {
                org: Some(org),
                code: 4326,
                ..Default::default()
            },
        );
        let header = flatgeobuf::Header::create(
            &mut fbb,
            &flatgeobuf::HeaderArgs {
                name: Some(name),
                envelope,
                geometry_type: GeometryType::Unknown,
                columns: Some(columns),
                features_count: n as u64,
                index_node_size: if n > 0 {
                    PackedRTree::DEFAULT_NODE_SIZE
                } else {
                    0
                },
                crs: Some(crs),
                ..Default::default()
            },
        );
        fbb.finish_size_prefixed(header, None);
        let io = |e: std::io::Error| Error::Internal(format!("cannot write FlatGeobuf: {e}"));
        out.write_all(&MAGIC).map_err(io)?;
        out.write_all(fbb.finished_data()).map_err(io)?;
        if n > 0 {
            let mut offset = 0u64;
            let nodes: Vec<NodeItem> = order
                .iter()
                .map(|(_, i)| {
                    let (_, len, b) = self.items[*i as usize];
                    let mut node = NodeItem::bounds(b[0], b[1], b[2], b[3]);
                    node.offset = offset;
                    offset += u64::from(len);
                    node
                })
                .collect();
            let extent = NodeItem::bounds(ext[0], ext[1], ext[2], ext[3]);
            let tree = PackedRTree::build(&nodes, &extent, PackedRTree::DEFAULT_NODE_SIZE)
                .map_err(|e| Error::Internal(format!("cannot build the R-tree: {e}")))?;
            tree.stream_write(&mut out).map_err(io)?;
            drop(nodes);
            let file = self
                .tmp
                .into_inner()
                .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
            // SAFETY: a private scratch file we just wrote and nobody else changes.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&self.tmp_path, e))?;
            for (_, i) in &order {
                let (off, len, _) = self.items[*i as usize];
                let start = off as usize;
                out.write_all(&map[start..start + len as usize])
                    .map_err(io)?;
            }
        }
        let _ = std::fs::remove_file(&self.tmp_path);
        Ok(())
    }
}

// Hilbert curve index of a 16-bit grid cell; public-domain algorithm by
// rawrunprotected (the same as the flatgeobuf reference writer uses).
fn hilbert(x: u32, y: u32) -> u32 {
    let mut a = x ^ y;
    let mut b = 0xFFFF ^ a;
    let mut c = 0xFFFF ^ (x | y);
    let mut d = x & (y ^ 0xFFFF);
    let mut aa = a | (b >> 1);
    let mut bb = (a >> 1) ^ a;
    let mut cc = ((c >> 1) ^ (b & (d >> 1))) ^ c;
    let mut dd = ((a & (c >> 1)) ^ (d >> 1)) ^ d;
    a = aa;
    b = bb;
    c = cc;
    d = dd;
    aa = (a & (a >> 2)) ^ (b & (b >> 2));
    bb = (a & (b >> 2)) ^ (b & ((a ^ b) >> 2));
    cc ^= (a & (c >> 2)) ^ (b & (d >> 2));
    dd ^= (b & (c >> 2)) ^ ((a ^ b) & (d >> 2));
    a = aa;
    b = bb;
    c = cc;
    d = dd;
    aa = (a & (a >> 4)) ^ (b & (b >> 4));
    bb = (a & (b >> 4)) ^ (b & ((a ^ b) >> 4));
    cc ^= (a & (c >> 4)) ^ (b & (d >> 4));
    dd ^= (b & (c >> 4)) ^ ((a ^ b) & (d >> 4));
    a = aa;
    b = bb;
    c = cc;
    d = dd;
    cc ^= (a & (c >> 8)) ^ (b & (d >> 8));
    dd ^= (b & (c >> 8)) ^ ((a ^ b) & (d >> 8));
    a = cc ^ (cc >> 1);
    b = dd ^ (dd >> 1);
    let mut i0 = x ^ y;
    let mut i1 = b | (0xFFFF ^ (i0 | a));
    i0 = (i0 | (i0 << 8)) & 0x00FF_00FF;
    i0 = (i0 | (i0 << 4)) & 0x0F0F_0F0F;
    i0 = (i0 | (i0 << 2)) & 0x3333_3333;
    i0 = (i0 | (i0 << 1)) & 0x5555_5555;
    i1 = (i1 | (i1 << 8)) & 0x00FF_00FF;
    i1 = (i1 | (i1 << 4)) & 0x0F0F_0F0F;
    i1 = (i1 | (i1 << 2)) & 0x3333_3333;
    i1 = (i1 | (i1 << 1)) & 0x5555_5555;
    (i1 << 1) | i0
}

/// A transformation applied to geometries on output (e.g. to another CRS).
pub type GeometryMap<'a> =
    dyn FnMut(&mut geo::Geometry<f64>) -> std::result::Result<(), String> + 'a;

/// A feature's geometry and its properties by schema index (the id column excluded).
pub type Decoded = (Option<geo::Geometry<f64>>, Vec<(usize, Value)>);

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
    /// `"name":` of each column, JSON-escaped once.
    json_keys: Vec<Vec<u8>>,
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
        let json_keys = columns
            .iter()
            .map(|(name, _)| {
                let mut k = serde_json::to_vec(name).unwrap_or_else(|_| b"\"?\"".to_vec());
                k.push(b':');
                k
            })
            .collect();
        Ok(FgbView {
            json_keys,
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

    /// The stored bytes of the feature at `offset` (size prefix included): two
    /// features with equal bytes have the same id, geometry and attributes, which
    /// lets a diff skip decoding the (usually many) unchanged ones.
    pub fn feature_bytes(&self, offset: u64) -> Result<&[u8]> {
        let bytes = self.buf.as_ref();
        let bad = || Error::Corrupt(format!("feature offset {offset} out of range"));
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(self.features_start))
            .ok_or_else(bad)?;
        let size = bytes
            .get(start..start.checked_add(4).ok_or_else(bad)?)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(bad)?;
        bytes
            .get(start..start.checked_add(4 + size).ok_or_else(bad)?)
            .ok_or_else(bad)
    }

    /// Feeds the geometry of the feature at `offset` to `h`: its type, coordinates
    /// and parts as stored, without decoding. Equal geometries give equal digests in
    /// any two files (the type a file leaves to its header is taken from it).
    pub fn geometry_digest(&self, offset: u64, h: &mut impl std::hash::Hasher) -> Result<()> {
        let feat = self.feature(offset)?;
        match feat.geometry() {
            None => h.write_u8(0xff),
            Some(g) => digest_geometry(&g, self.geometry_type, h),
        }
        Ok(())
    }

    /// The DataHub id of the feature at `offset`.
    pub fn fid(&self, offset: u64) -> Result<i64> {
        let feat = self.feature(offset)?;
        let props = feat.properties().map(|p| p.bytes()).unwrap_or(&[]);
        if let Some(id) = leading_id(props) {
            return Ok(id);
        }
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

    /// Writes the feature at `offset` as one RFC 7946 GeoJSON Feature object,
    /// straight into `out` (no intermediate JSON values: this is the hot path of
    /// every items request).
    pub fn write_geojson(&self, offset: u64, out: &mut Vec<u8>) -> Result<()> {
        self.write_geojson_with(offset, out, None)
    }

    /// [`FgbView::write_geojson`] with the geometry passed through `map` first
    /// (output in another CRS); a `map` error is the caller's (a 400).
    pub fn write_geojson_with(
        &self,
        offset: u64,
        out: &mut Vec<u8>,
        map: Option<&mut GeometryMap<'_>>,
    ) -> Result<()> {
        let feat = self.feature(offset)?;
        let raw = feat.properties().map(|p| p.bytes()).unwrap_or(&[]);
        let id = leading_id(raw);
        out.extend_from_slice(br#"{"type":"Feature","id":"#);
        match id {
            Some(id) => out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","geometry":"#);
        match (feat.geometry(), map) {
            (Some(g), None) => {
                let mut w = geozero::geojson::GeoJsonWriter::new(&mut *out);
                g.process(&mut w, self.geometry_type)
                    .map_err(|e| Error::Corrupt(format!("bad geometry at offset {offset}: {e}")))?;
            }
            (Some(g), Some(map)) => {
                use geozero::GeozeroGeometry;
                let mut gw = geozero::geo_types::GeoWriter::new();
                g.process(&mut gw, self.geometry_type)
                    .map_err(|e| Error::Corrupt(format!("bad geometry at offset {offset}: {e}")))?;
                match gw.take_geometry() {
                    Some(mut geom) => {
                        map(&mut geom).map_err(|e| {
                            Error::bad(format!("feature {}: {e}", id.unwrap_or(-1)))
                        })?;
                        let mut w = geozero::geojson::GeoJsonWriter::new(&mut *out);
                        geom.process_geom(&mut w).map_err(|e| {
                            Error::Internal(format!("GeoJSON of feature at {offset}: {e}"))
                        })?;
                    }
                    None => out.extend_from_slice(b"null"),
                }
            }
            (None, _) => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","properties":{"#);
        let mut first = true;
        let mut err = None;
        self.for_each_raw(raw, |i, v| {
            if i == 0 {
                return;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&self.json_keys[i]);
            if let Err(e) = write_json_value(out, v) {
                err.get_or_insert(e);
            }
        })?;
        if let Some(e) = err {
            return Err(Error::Internal(e.to_string()));
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }

    /// Geometry and properties of the feature at `offset` in one read.
    pub fn geometry_and_properties(&self, offset: u64) -> Result<Decoded> {
        let feat = self.feature(offset)?;
        let geom = self.decode_geometry(&feat, offset)?;
        let raw = feat.properties().map(|p| p.bytes()).unwrap_or(&[]);
        let mut props = Vec::new();
        self.for_each_raw(raw, |i, v| {
            if i > 0 {
                // Column 0 is the id; schema field k is column k + 1.
                props.push((i - 1, v.to_json()));
            }
        })?;
        Ok((geom, props))
    }

    /// The geometry of the feature at `offset`, without its properties.
    pub fn geometry(&self, offset: u64) -> Result<Option<geo::Geometry<f64>>> {
        let feat = self.feature(offset)?;
        self.decode_geometry(&feat, offset)
    }

    fn decode_geometry(
        &self,
        feat: &flatgeobuf::Feature<'_>,
        offset: u64,
    ) -> Result<Option<geo::Geometry<f64>>> {
        Ok(match feat.geometry() {
            Some(g) => {
                let mut w = geozero::geo_types::GeoWriter::new();
                g.process(&mut w, self.geometry_type)
                    .map_err(|e| Error::Corrupt(format!("bad geometry at offset {offset}: {e}")))?;
                w.take_geometry()
            }
            None => None,
        })
    }

    /// Calls `f` with each property of the feature at `offset` by schema index (the
    /// id column excluded), strings borrowed from the file: no geometry decoding and
    /// no allocation (the tile path reads tens of thousands of features per tile).
    pub fn for_each_value<'s>(
        &'s self,
        offset: u64,
        mut f: impl FnMut(usize, RawValue<'s>),
    ) -> Result<()> {
        let raw = self.properties_bytes(offset)?;
        self.for_each_raw(raw, |i, v| {
            if i > 0 {
                f(i - 1, v);
            }
        })
    }

    /// The `properties` vector of the feature at `offset`, found by walking the
    /// FlatBuffers table by hand with every offset bounds-checked. Unlike a full
    /// verification it does not visit the geometry, which the point tile path
    /// already has from the index (verification was a fifth of a dense tile's time).
    fn properties_bytes(&self, offset: u64) -> Result<&[u8]> {
        let bytes = self.buf.as_ref();
        let bad = || Error::Corrupt(format!("bad feature at offset {offset}"));
        let u32_at = |i: usize| -> Option<usize> {
            let b = bytes.get(i..i.checked_add(4)?)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let u16_at = |i: usize| -> Option<usize> {
            let b = bytes.get(i..i.checked_add(2)?)?;
            Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        let find = || -> Option<&[u8]> {
            let start = usize::try_from(offset)
                .ok()?
                .checked_add(self.features_start)?;
            let size = u32_at(start)?;
            let root = start + 4;
            let end = root.checked_add(size)?;
            let table = root.checked_add(u32_at(root)?)?;
            // The vtable sits at the table minus a signed offset.
            let soff = u32_at(table)? as u32 as i32;
            let vtable = usize::try_from(table as i64 - i64::from(soff)).ok()?;
            let vt_len = u16_at(vtable)?;
            // Feature: geometry is field 0, properties field 1 (vtable slot at +6).
            if vt_len < 8 {
                return Some(&[]);
            }
            let field = u16_at(vtable + 6)?;
            if field == 0 {
                return Some(&[]);
            }
            let at = table.checked_add(field)?;
            let vec = at.checked_add(u32_at(at)?)?;
            let len = u32_at(vec)?;
            let data = vec + 4;
            if data.checked_add(len)? > end {
                return None;
            }
            bytes.get(data..data + len)
        };
        find().ok_or_else(bad)
    }

    /// Decodes FlatGeobuf's property encoding (u16 column index, then the value).
    fn for_each_property(&self, bytes: &[u8], mut f: impl FnMut(usize, Value)) -> Result<()> {
        self.for_each_raw(bytes, |i, v| f(i, v.to_json()))
    }

    fn for_each_raw<'b>(
        &self,
        bytes: &'b [u8],
        mut f: impl FnMut(usize, RawValue<'b>),
    ) -> Result<()> {
        let bad = || Error::Corrupt("bad property encoding".into());
        let mut p = 0usize;
        let take = |p: &mut usize, n: usize| -> Result<&'b [u8]> {
            let s = bytes.get(*p..*p + n).ok_or_else(bad)?;
            *p += n;
            Ok(s)
        };
        while p + 2 <= bytes.len() {
            let col = u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
            p += 2;
            let ctype = self.columns.get(col).ok_or_else(bad)?.1;
            let v = match ctype {
                ColumnType::Bool => RawValue::Bool(take(&mut p, 1)?[0] != 0),
                ColumnType::Byte => RawValue::I64(i64::from(take(&mut p, 1)?[0] as i8)),
                ColumnType::UByte => RawValue::I64(i64::from(take(&mut p, 1)?[0])),
                ColumnType::Short => {
                    let b = take(&mut p, 2)?;
                    RawValue::I64(i64::from(i16::from_le_bytes([b[0], b[1]])))
                }
                ColumnType::UShort => {
                    let b = take(&mut p, 2)?;
                    RawValue::I64(i64::from(u16::from_le_bytes([b[0], b[1]])))
                }
                ColumnType::Int => {
                    RawValue::I64(i64::from(i32::from_le_bytes(arr4(take(&mut p, 4)?))))
                }
                ColumnType::UInt => {
                    RawValue::I64(i64::from(u32::from_le_bytes(arr4(take(&mut p, 4)?))))
                }
                ColumnType::Long => RawValue::I64(i64::from_le_bytes(arr8(take(&mut p, 8)?))),
                ColumnType::ULong => RawValue::U64(u64::from_le_bytes(arr8(take(&mut p, 8)?))),
                ColumnType::Float => {
                    RawValue::F64(f64::from(f32::from_le_bytes(arr4(take(&mut p, 4)?))))
                }
                ColumnType::Double => RawValue::F64(f64::from_le_bytes(arr8(take(&mut p, 8)?))),
                _ => {
                    let len = u32::from_le_bytes(arr4(take(&mut p, 4)?)) as usize;
                    RawValue::Str(take(&mut p, len)?)
                }
            };
            f(col, v);
        }
        Ok(())
    }
}

/// One decoded property value, borrowing strings from the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a [u8]),
}

impl RawValue<'_> {
    fn to_json(self) -> Value {
        match self {
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::I64(n) => Value::from(n),
            RawValue::U64(n) => Value::from(n),
            RawValue::F64(x) => float_value(x),
            RawValue::Str(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        }
    }
}

fn write_json_value(out: &mut Vec<u8>, v: RawValue<'_>) -> serde_json::Result<()> {
    match v {
        RawValue::Bool(true) => out.extend_from_slice(b"true"),
        RawValue::Bool(false) => out.extend_from_slice(b"false"),
        RawValue::I64(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        RawValue::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        // JSON has no NaN/Infinity: such values become null rather than invalid JSON.
        RawValue::F64(x) if x.is_finite() => serde_json::to_writer(&mut *out, &x)?,
        RawValue::F64(_) => out.extend_from_slice(b"null"),
        RawValue::Str(s) => match std::str::from_utf8(s) {
            Ok(s) => serde_json::to_writer(&mut *out, s)?,
            Err(_) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(s))?,
        },
    }
    Ok(())
}

fn digest_geometry(
    g: &flatgeobuf::Geometry<'_>,
    header_type: GeometryType,
    h: &mut impl std::hash::Hasher,
) {
    let t = if g.type_() == GeometryType::Unknown {
        header_type
    } else {
        g.type_()
    };
    h.write_u8(t.0);
    for v in [g.xy(), g.z(), g.m()] {
        let b = v.map(|v| v.bytes()).unwrap_or(&[]);
        h.write_usize(b.len());
        h.write(b);
    }
    let ends = g.ends().map(|v| v.bytes()).unwrap_or(&[]);
    h.write_usize(ends.len());
    h.write(ends);
    if let Some(parts) = g.parts() {
        h.write_usize(parts.len());
        for p in parts.iter() {
            // A part of a MultiPolygon is a Polygon, whatever the header says.
            digest_geometry(&p, GeometryType::Unknown, h);
        }
    }
}

/// The id, when it sits where we always write it: first, column 0, an i64.
fn leading_id(props: &[u8]) -> Option<i64> {
    (props.len() >= 10 && props[0] == 0 && props[1] == 0)
        .then(|| i64::from_le_bytes(arr8(&props[2..10])))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_walked_properties_match_flatbuffers() {
        let dir = tempfile::tempdir().unwrap();
        let schema = vec![
            Field {
                name: "nombre".into(),
                ftype: FieldType::String,
            },
            Field {
                name: "n".into(),
                ftype: FieldType::Long,
            },
        ];
        let mut w = LayerWriter::new("t", &schema, &dir.path().join("t.tmp")).unwrap();
        let mut enc = FeatureEncoder::default();
        for i in 0..500i64 {
            let g = geo::Geometry::Point(geo::Point::new(-100.3 + i as f64 * 1e-3, 25.6));
            let name = if i % 3 == 0 {
                Value2::Null
            } else {
                Value2::Text(format!("Colonia Niños Héroes {i}"))
            };
            w.add(
                &enc.encode(i + 1, Some(&g), &[name, Value2::Long(i * 7)])
                    .unwrap(),
            )
            .unwrap();
        }
        let mut buf = Vec::new();
        w.finish(&mut buf).unwrap();
        let view = FgbView::open(buf).unwrap();
        let leaves = view.leaves().unwrap();
        assert_eq!(leaves.len(), 500);
        for l in leaves {
            let want = view
                .feature(l.offset)
                .unwrap()
                .properties()
                .map(|p| p.bytes().to_vec())
                .unwrap_or_default();
            assert_eq!(view.properties_bytes(l.offset).unwrap(), &want[..]);
            let mut n = 0;
            view.for_each_value(l.offset, |_, _| n += 1).unwrap();
            assert!(n >= 1);
        }
        // Offsets that point into garbage are errors, not panics.
        assert!(view.properties_bytes(u64::MAX / 2).is_err());
        // Misaligned offsets read whatever is there, bounds-checked: never a panic.
        for off in 0..2_000u64 {
            let _ = view.properties_bytes(off);
        }
    }
}
