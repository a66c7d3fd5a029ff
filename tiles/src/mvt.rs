//! MVT 2.1 protobuf encoding (vector_tile.proto), written by hand: the format is five
//! messages and a command stream, and owning it keeps types and winding under control.

use std::collections::HashMap;

/// An attribute value with its MVT type.
#[derive(Debug, Clone, PartialEq)]
pub enum MvtValue {
    String(String),
    Float(f32),
    Double(f64),
    Int(i64),
    Uint(u64),
    Sint(i64),
    Bool(bool),
}

/// Key for de-duplicating non-string values in a layer's value table (floats by bit
/// pattern); strings are looked up by `&str`, without an allocation per feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ValueKey {
    F(u32),
    D(u64),
    I(i64),
    U(u64),
    Si(i64),
    B(bool),
}

impl MvtValue {
    fn key(&self) -> Option<ValueKey> {
        Some(match self {
            MvtValue::String(_) => return None,
            MvtValue::Float(f) => ValueKey::F(f.to_bits()),
            MvtValue::Double(d) => ValueKey::D(d.to_bits()),
            MvtValue::Int(i) => ValueKey::I(*i),
            MvtValue::Uint(u) => ValueKey::U(*u),
            MvtValue::Sint(i) => ValueKey::Si(*i),
            MvtValue::Bool(b) => ValueKey::B(*b),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        match self {
            MvtValue::String(s) => bytes_field(&mut v, 1, s.as_bytes()),
            MvtValue::Float(f) => {
                tag(&mut v, 2, 5);
                v.extend_from_slice(&f.to_le_bytes());
            }
            MvtValue::Double(d) => {
                tag(&mut v, 3, 1);
                v.extend_from_slice(&d.to_le_bytes());
            }
            MvtValue::Int(i) => {
                tag(&mut v, 4, 0);
                varint(&mut v, *i as u64);
            }
            MvtValue::Uint(u) => {
                tag(&mut v, 5, 0);
                varint(&mut v, *u);
            }
            MvtValue::Sint(i) => {
                tag(&mut v, 6, 0);
                varint(&mut v, zigzag(*i));
            }
            MvtValue::Bool(b) => {
                tag(&mut v, 7, 0);
                varint(&mut v, u64::from(*b));
            }
        }
        bytes_field(out, 4, &v);
    }
}

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint_len64(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

fn varint_len(v: u32) -> u64 {
    match v {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// A packed repeated uint32 field, written in place (its length computed first).
fn packed(out: &mut Vec<u8>, field: u32, vals: &[u32]) {
    tag(out, field, 2);
    varint(out, vals.iter().map(|x| varint_len(*x)).sum());
    for x in vals {
        varint(out, u64::from(*x));
    }
}

/// FNV-1a: the key and value tables are looked up once per attribute of every
/// feature, and SipHash's DoS resistance buys nothing for a tile's own values.
#[derive(Clone, Copy, Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    /// Integers (tile units) in one multiply: byte-wise FNV was a tenth of a dense
    /// point tile. The high half is folded down: hash tables index by the low bits.
    fn write_u32(&mut self, v: u32) {
        let h = (self.0 ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeomType {
    Point = 1,
    LineString = 2,
    Polygon = 3,
}

/// Command stream builder (MoveTo / LineTo / ClosePath with zigzag deltas).
#[derive(Debug, Default)]
pub struct Commands {
    pub ints: Vec<u32>,
    cx: i32,
    cy: i32,
}

fn command(id: u32, count: u32) -> u32 {
    (id & 0x7) | (count << 3)
}

impl Commands {
    fn delta(&mut self, x: i32, y: i32) {
        self.ints.push(zigzag(i64::from(x - self.cx)) as u32);
        self.ints.push(zigzag(i64::from(y - self.cy)) as u32);
        self.cx = x;
        self.cy = y;
    }

    /// Several points as one MoveTo with a count.
    pub fn points(&mut self, pts: &[(i32, i32)]) {
        self.ints.push(command(1, pts.len() as u32));
        for &(x, y) in pts {
            self.delta(x, y);
        }
    }

    pub fn line(&mut self, pts: &[(i32, i32)]) {
        self.ints.push(command(1, 1));
        self.delta(pts[0].0, pts[0].1);
        self.ints.push(command(2, (pts.len() - 1) as u32));
        for &(x, y) in &pts[1..] {
            self.delta(x, y);
        }
    }

    /// A ring given without its closing point.
    pub fn ring(&mut self, pts: &[(i32, i32)]) {
        self.line(pts);
        self.ints.push(command(7, 1));
    }
}

/// One MVT layer being built: keys and values shared by its features.
pub struct LayerBuilder {
    name: String,
    extent: u32,
    keys: Vec<String>,
    key_index: FnvMap<String, u32>,
    values: Vec<MvtValue>,
    value_index: FnvMap<ValueKey, u32>,
    string_index: FnvMap<String, u32>,
    features: Vec<u8>,
    /// Reused per feature (tags, then the feature message).
    tags: Vec<u32>,
    scratch: Vec<u8>,
    pub count: usize,
}

impl LayerBuilder {
    pub fn new(name: &str, extent: u32) -> Self {
        Self::with_buffer(name, extent, Vec::new())
    }

    /// A builder writing its features into `buffer` (cleared): a buffer kept from an
    /// earlier layer (see [`LayerBuilder::finish`]) saves allocating and faulting in
    /// fresh memory per tile.
    pub fn with_buffer(name: &str, extent: u32, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        LayerBuilder {
            name: name.to_string(),
            extent,
            keys: Vec::new(),
            key_index: FnvMap::default(),
            values: Vec::new(),
            value_index: FnvMap::default(),
            string_index: FnvMap::default(),
            features: buffer,
            tags: Vec::new(),
            scratch: Vec::new(),
            count: 0,
        }
    }

    /// The index of key `k` in the layer's key table (added when new).
    pub fn key_index(&mut self, k: &str) -> u32 {
        if let Some(i) = self.key_index.get(k) {
            return *i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(k.to_string());
        self.key_index.insert(k.to_string(), i);
        i
    }

    /// The index of string value `s` in the layer's value table (added when new):
    /// looked up by `&str`, so a value already in the table costs no allocation.
    pub fn string_index(&mut self, s: &str) -> u32 {
        if let Some(i) = self.string_index.get(s) {
            return *i;
        }
        let i = self.values.len() as u32;
        self.string_index.insert(s.to_string(), i);
        self.values.push(MvtValue::String(s.to_string()));
        i
    }

    /// The index of value `v` in the layer's value table (added when new).
    pub fn value_index(&mut self, v: &MvtValue) -> u32 {
        let vk = match (v, v.key()) {
            (MvtValue::String(s), _) => return self.string_index(s),
            (_, Some(vk)) => vk,
            (_, None) => return self.push_value(v.clone()),
        };
        if let Some(i) = self.value_index.get(&vk) {
            return *i;
        }
        let i = self.push_value(v.clone());
        self.value_index.insert(vk, i);
        i
    }

    fn push_value(&mut self, v: MvtValue) -> u32 {
        self.values.push(v);
        (self.values.len() - 1) as u32
    }

    pub fn add<'a>(
        &mut self,
        id: u64,
        gtype: GeomType,
        geometry: &[u32],
        props: impl IntoIterator<Item = (&'a str, &'a MvtValue)>,
    ) {
        let mut tags = std::mem::take(&mut self.tags);
        tags.clear();
        for (k, v) in props {
            let ki = self.key_index(k);
            let vi = self.value_index(v);
            tags.push(ki);
            tags.push(vi);
        }
        let mut f = std::mem::take(&mut self.scratch);
        f.clear();
        tag(&mut f, 1, 0);
        varint(&mut f, id);
        if !tags.is_empty() {
            packed(&mut f, 2, &tags);
        }
        tag(&mut f, 3, 0);
        varint(&mut f, gtype as u64);
        packed(&mut f, 4, geometry);
        bytes_field(&mut self.features, 2, &f);
        self.scratch = f;
        self.tags = tags;
        self.count += 1;
    }

    /// A one-point feature at tile coordinates (x, y) with tags (key index, value
    /// index pairs from [`LayerBuilder::key_index`] and friends), written straight
    /// into the layer: dense point tiles hold tens of thousands of these.
    pub fn add_point(&mut self, id: u64, x: i32, y: i32, tags: &[u32]) {
        let zx = zigzag(i64::from(x));
        let zy = zigzag(i64::from(y));
        let geom_len = 1 + varint_len64(zx) + varint_len64(zy);
        let tags_len: u64 = tags.iter().map(|t| varint_len(*t)).sum();
        let mut len = 1 + varint_len64(id) + 2 + 1 + varint_len64(geom_len) + geom_len;
        if !tags.is_empty() {
            len += 1 + varint_len64(tags_len) + tags_len;
        }
        let out = &mut self.features;
        tag(out, 2, 2);
        varint(out, len);
        tag(out, 1, 0);
        varint(out, id);
        if !tags.is_empty() {
            tag(out, 2, 2);
            varint(out, tags_len);
            for t in tags {
                varint(out, u64::from(*t));
            }
        }
        tag(out, 3, 0);
        varint(out, GeomType::Point as u64);
        tag(out, 4, 2);
        varint(out, geom_len);
        varint(out, u64::from(command(1, 1)));
        varint(out, zx);
        varint(out, zy);
        self.count += 1;
    }

    /// The size the layer message will have (within a few bytes).
    pub fn encoded_len(&self) -> usize {
        let keys: usize = self.keys.iter().map(|k| k.len() + 3).sum();
        let values: usize = self
            .values
            .iter()
            .map(|v| match v {
                MvtValue::String(s) => s.len() + 5,
                _ => 12,
            })
            .sum();
        self.features.len() + keys + values + self.name.len() + 16
    }

    /// The feature buffer back, for another builder (what was added is dropped).
    pub fn into_buffer(self) -> Vec<u8> {
        self.features
    }

    /// Appends the layer message (field 3 of Tile) to `tile`, written in place: its
    /// length is known before its fields. Returns the feature buffer for reuse.
    pub fn finish(self, tile: &mut Vec<u8>) -> Vec<u8> {
        let mut head = Vec::with_capacity(self.name.len() + 8);
        tag(&mut head, 15, 0);
        varint(&mut head, 2);
        bytes_field(&mut head, 1, self.name.as_bytes());
        let mut tail = Vec::new();
        for k in &self.keys {
            bytes_field(&mut tail, 3, k.as_bytes());
        }
        for v in &self.values {
            v.encode(&mut tail);
        }
        tag(&mut tail, 5, 0);
        varint(&mut tail, u64::from(self.extent));
        let len = head.len() + self.features.len() + tail.len();
        tile.reserve(len + 6);
        tag(tile, 3, 2);
        varint(tile, len as u64);
        tile.extend_from_slice(&head);
        tile.extend_from_slice(&self.features);
        tile.extend_from_slice(&tail);
        self.features
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(-64), 127);
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(varint_len64(v), b.len() as u64, "{v}");
        }
    }

    #[test]
    fn add_point_equals_add() {
        let props = [
            ("a", MvtValue::Uint(300)),
            ("b", MvtValue::String("x".into())),
        ];
        let mut one = LayerBuilder::new("l", 4096);
        let mut c = Commands::default();
        c.points(&[(-3, 5000)]);
        one.add(
            123_456,
            GeomType::Point,
            &c.ints,
            props.iter().map(|(k, v)| (*k, v)),
        );
        one.add(7, GeomType::Point, &c.ints, std::iter::empty());
        let mut two = LayerBuilder::new("l", 4096);
        let tags: Vec<u32> = props
            .iter()
            .flat_map(|(k, v)| [two.key_index(k), two.value_index(v)])
            .collect();
        two.add_point(123_456, -3, 5000, &tags);
        two.add_point(7, -3, 5000, &[]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        one.finish(&mut a);
        two.finish(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn spec_example_point_commands() {
        // MVT spec 4.3.5.1: a point at (25, 17) is [9, 50, 34].
        let mut c = Commands::default();
        c.points(&[(25, 17)]);
        assert_eq!(c.ints, [9, 50, 34]);
        // Spec: linestring (2,2) (2,10) (10,10) is [9, 4, 4, 18, 0, 16, 16, 0].
        let mut c = Commands::default();
        c.line(&[(2, 2), (2, 10), (10, 10)]);
        assert_eq!(c.ints, [9, 4, 4, 18, 0, 16, 16, 0]);
    }
}
