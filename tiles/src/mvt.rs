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
        LayerBuilder {
            name: name.to_string(),
            extent,
            keys: Vec::new(),
            key_index: FnvMap::default(),
            values: Vec::new(),
            value_index: FnvMap::default(),
            string_index: FnvMap::default(),
            features: Vec::new(),
            tags: Vec::new(),
            scratch: Vec::new(),
            count: 0,
        }
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
            let ki = match self.key_index.get(k) {
                Some(i) => *i,
                None => {
                    let i = self.keys.len() as u32;
                    self.keys.push(k.to_string());
                    self.key_index.insert(k.to_string(), i);
                    i
                }
            };
            let next = self.values.len() as u32;
            let found = match (v, v.key()) {
                (MvtValue::String(s), _) => self.string_index.get(s.as_str()).copied(),
                (_, Some(vk)) => self.value_index.get(&vk).copied(),
                (_, None) => None,
            };
            let vi = match found {
                Some(i) => i,
                None => {
                    match (v, v.key()) {
                        (MvtValue::String(s), _) => {
                            self.string_index.insert(s.clone(), next);
                        }
                        (_, Some(vk)) => {
                            self.value_index.insert(vk, next);
                        }
                        (_, None) => {}
                    }
                    self.values.push(v.clone());
                    next
                }
            };
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

    /// Appends the layer message (field 3 of Tile) to `tile`.
    pub fn finish(self, tile: &mut Vec<u8>) {
        let mut l = Vec::with_capacity(self.features.len() + 256);
        tag(&mut l, 15, 0);
        varint(&mut l, 2);
        bytes_field(&mut l, 1, self.name.as_bytes());
        l.extend_from_slice(&self.features);
        for k in &self.keys {
            bytes_field(&mut l, 3, k.as_bytes());
        }
        for v in &self.values {
            v.encode(&mut l);
        }
        tag(&mut l, 5, 0);
        varint(&mut l, u64::from(self.extent));
        bytes_field(tile, 3, &l);
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
