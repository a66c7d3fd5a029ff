//! Point layers' tiles: what is prepared when a point layer version is loaded (its
//! [`PointIndex`], each point's feature, and its low-cardinality attributes as coded
//! columns) and how a tile is encoded from it.
//!
//! A point tile never decodes a geometry: the index gives the points and their places.
//! Attributes with few distinct values (categories, statuses, small integers — most
//! of what ministries' point layers carry) are read from memory as codes, each value
//! registered in the tile's value table once; the others are read from the file, in
//! file order.

use std::collections::HashMap;
use std::sync::Arc;

use layers::fgb::{FieldType, RawValue};
use layers::index::LoadedLayer;
use tiles::grid::TileId;
use tiles::mvt::{LayerBuilder, MvtValue};
use tiles::points::{tile_coords, PointIndex, Selection};
use tiles::render::RenderOptions;

use super::{raw_mvt_value, Scratch};

/// Code of a null (absent) value.
const NULL: u16 = u16::MAX;
/// Distinct values a column may hold (codes 0..MAX_CODES); a field with more is read
/// from the file.
const MAX_CODES: usize = 4096;
/// Memory for the codes of one layer (2 bytes per point and coded field): 128 MB, e.g.
/// 64 fields of a million points.
const CODES_BUDGET: usize = 128 << 20;

/// One attribute of every point, coded: 2 bytes per point.
pub(super) struct Column {
    /// The MVT value of each code.
    values: Vec<MvtValue>,
    /// Each point's code, in the index's slot order ([`NULL`] = no value).
    codes: Vec<u16>,
}

/// A loaded point layer version, ready for tiles.
pub(super) struct PointTiles {
    pub index: PointIndex,
    /// Each point's (feature id, file offset), in slot order.
    features: Vec<(i64, u64)>,
    /// By schema field: its column, or None when it is read from the file.
    columns: Vec<Option<Column>>,
}

impl PointTiles {
    /// Which fields are coded in memory (the others are read from the file, in file
    /// order): two versions with the same layout encode their points alike.
    pub fn layout(&self) -> Vec<bool> {
        self.columns.iter().map(Option::is_some).collect()
    }

    /// Indexes `layer`'s points and codes its low-cardinality attributes: one pass over
    /// the file, in file order (about 0.3 s per million points with two fields).
    pub fn build(layer: &LoadedLayer) -> PointTiles {
        let index = PointIndex::build(layer.anchors());
        let features: Vec<(i64, u64)> = index
            .positions()
            .map(|pos| layer.at(pos).unwrap_or((0, 0)))
            .collect();
        let columns = code_columns(layer, &features);
        PointTiles {
            index,
            features,
            columns,
        }
    }
}

/// A field's distinct values while coding it.
#[derive(Default)]
struct Dictionary {
    strings: HashMap<Box<[u8]>, u16>,
    /// Non-string values by (type tag, bits).
    others: HashMap<(u8, u64), u16>,
    values: Vec<MvtValue>,
}

impl Dictionary {
    /// The code of `v`, None when the dictionary is full.
    fn code(&mut self, v: RawValue<'_>, t: FieldType) -> Option<u16> {
        let next = self.values.len();
        let found = match v {
            RawValue::Str(s) => self.strings.get(s).copied(),
            other => self.others.get(&other_key(other)).copied(),
        };
        if let Some(c) = found {
            return Some(c);
        }
        if next >= MAX_CODES {
            return None;
        }
        let code = next as u16;
        match v {
            RawValue::Str(s) => {
                self.strings.insert(s.into(), code);
                self.values
                    .push(MvtValue::String(String::from_utf8_lossy(s).into_owned()));
            }
            other => {
                self.others.insert(other_key(other), code);
                self.values.push(raw_mvt_value(other, t)?);
            }
        }
        Some(code)
    }
}

fn other_key(v: RawValue<'_>) -> (u8, u64) {
    match v {
        RawValue::Bool(b) => (0, u64::from(b)),
        RawValue::I64(n) => (1, n as u64),
        RawValue::U64(n) => (2, n),
        RawValue::F64(x) => (3, x.to_bits()),
        RawValue::Str(_) => (4, 0),
    }
}

/// The columns of `layer`'s fields that have at most [`MAX_CODES`] distinct values.
fn code_columns(layer: &LoadedLayer, features: &[(i64, u64)]) -> Vec<Option<Column>> {
    let schema = &layer.meta.schema;
    let n = features.len();
    // At most CODES_BUDGET bytes of codes: a wide layer codes its first fields and
    // reads the rest from the file.
    let fit = CODES_BUDGET / (2 * n.max(1));
    let mut dicts: Vec<Option<Dictionary>> = (0..schema.len())
        .map(|i| (i < fit).then(Dictionary::default))
        .collect();
    let mut codes: Vec<Vec<u16>> = dicts
        .iter()
        .map(|d| {
            if d.is_some() {
                vec![NULL; n]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&s| features.get(s as usize).map_or(0, |f| f.1));
    for slot in order {
        let Some(&(_, offset)) = features.get(slot as usize) else {
            continue;
        };
        let read = layer.for_each_value(offset, |i, v| {
            let (Some(dict_slot), Some(field)) = (dicts.get_mut(i), schema.get(i)) else {
                return;
            };
            let Some(dict) = dict_slot else {
                return;
            };
            match dict.code(v, field.ftype) {
                Some(code) => {
                    if let Some(c) = codes.get_mut(i).and_then(|c| c.get_mut(slot as usize)) {
                        *c = code;
                    }
                }
                None => {
                    // Too many distinct values: this field is read from the file.
                    *dict_slot = None;
                    if let Some(c) = codes.get_mut(i) {
                        *c = Vec::new();
                    }
                }
            }
        });
        if read.is_err() {
            // A feature that cannot be read here cannot be read for a tile either;
            // every field goes to the file path, which reports it.
            return schema.iter().map(|_| None).collect();
        }
    }
    dicts
        .into_iter()
        .zip(codes)
        .map(|(d, codes)| {
            d.map(|d| Column {
                values: d.values,
                codes,
            })
        })
        .collect()
}

/// Encodes the points of `sel` as the MVT layer of `layer` into `buf` (the size cap
/// may thin `sel`); returns how many points the cap dropped.
// Eight arguments: the tile's inputs plus the caller's per-thread buffers.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode(
    pt: &PointTiles,
    layer: &LoadedLayer,
    mut sel: Selection,
    tile: TileId,
    opts: &RenderOptions,
    fields: &[Option<(Arc<str>, FieldType)>],
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) -> layers::Result<usize> {
    // Included fields held in memory, and whether any must be read from the file.
    let coded: Vec<(usize, &Column)> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_some())
        .filter_map(|(i, _)| pt.columns.get(i)?.as_ref().map(|c| (i, c)))
        .collect();
    let from_file = fields
        .iter()
        .enumerate()
        .any(|(i, f)| f.is_some() && pt.columns.get(i).is_none_or(|c| c.is_none()));
    // Per schema field: its place in `coded` when held in memory.
    let coded_at: Vec<Option<usize>> = (0..fields.len())
        .map(|i| coded.iter().position(|(j, _)| *j == i))
        .collect();
    let mut tags: Vec<u32> = Vec::new();
    let mut file_values: Vec<(usize, RawValue<'_>)> = Vec::new();
    loop {
        let mut lb = LayerBuilder::with_buffer(
            &layer.meta.id,
            opts.extent,
            std::mem::take(&mut scratch.features),
        );
        let mut keys: Vec<Option<u32>> = vec![None; fields.len()];
        // Per coded field: code → index in this tile's value table (u32::MAX: not yet).
        let mut local: Vec<Vec<u32>> = coded
            .iter()
            .map(|(_, c)| vec![u32::MAX; c.values.len()])
            .collect();
        let reads = &mut scratch.reads;
        reads.clear();
        reads.extend(sel.points.iter().filter_map(|p| {
            let &(fid, offset) = pt.features.get(p.slot as usize)?;
            Some((offset, fid, p.key, p.slot))
        }));
        if from_file {
            // File order: Z-order and the file's Hilbert order are both local, but not
            // at the scale of cache lines; sorted offsets make the reads a sweep.
            reads.sort_unstable_by_key(|r| r.0);
        }
        let mut failed = None;
        for &(offset, fid, key, slot) in reads.iter() {
            tags.clear();
            file_values.clear();
            if from_file {
                let read = layer.for_each_value(offset, |i, v| {
                    let wanted = fields.get(i).is_some_and(Option::is_some);
                    if wanted && coded_at.get(i).is_some_and(Option::is_none) {
                        file_values.push((i, v));
                    }
                });
                if let Err(e) = read {
                    failed = Some(e);
                    break;
                }
            }
            // Tags in schema order, values registered in that order: the tile is the
            // same whether a field is held in memory or read from the file.
            for (i, f) in fields.iter().enumerate() {
                let Some((name, t)) = f else {
                    continue;
                };
                let vi = match coded_at.get(i).copied().flatten() {
                    Some(c) => {
                        let (Some((_, col)), Some(map)) = (coded.get(c), local.get_mut(c)) else {
                            continue;
                        };
                        let code = col.codes.get(slot as usize).copied().unwrap_or(NULL);
                        let (Some(m), Some(v)) = (
                            map.get_mut(usize::from(code)),
                            col.values.get(usize::from(code)),
                        ) else {
                            continue; // null
                        };
                        if *m == u32::MAX {
                            *m = lb.value_index(v);
                        }
                        *m
                    }
                    None => {
                        let Some(&(_, v)) = file_values.iter().find(|(j, _)| *j == i) else {
                            continue; // null
                        };
                        match v {
                            RawValue::Str(s) => match std::str::from_utf8(s) {
                                Ok(s) => lb.string_index(s),
                                Err(_) => lb.string_index(&String::from_utf8_lossy(s)),
                            },
                            other => match raw_mvt_value(other, *t) {
                                Some(mv) => lb.value_index(&mv),
                                None => continue,
                            },
                        }
                    }
                };
                let ki = keys
                    .get_mut(i)
                    .map_or(0, |k| *k.get_or_insert_with(|| lb.key_index(name)));
                tags.push(ki);
                tags.push(vi);
            }
            let (x, y) = tile_coords(key, tile, opts.extent);
            lb.add_point(u64::try_from(fid).unwrap_or(0), x, y, &tags);
        }
        if let Some(e) = failed {
            scratch.features = lb.into_buffer();
            return Err(e);
        }
        if lb.encoded_len() > opts.max_bytes && sel.level > 0 && sel.points.len() > 1 {
            sel = pt.index.thin(&sel);
            scratch.features = lb.into_buffer();
            continue;
        }
        scratch.features = lb.finish(buf);
        return Ok(sel.distinct.saturating_sub(sel.points.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use layers::index::Registry;
    use layers::ingest::{ingest, IngestRequest};
    use layers::store::FsStore;
    use std::io::Write;

    /// 6,000 points: a category (7 values, coded), a unique name (read from the file)
    /// and a sparse number (nulls).
    fn layer(dir: &std::path::Path) -> Arc<LoadedLayer> {
        let csv = dir.join("p.csv");
        let mut f = std::fs::File::create(&csv).expect("csv");
        writeln!(f, "lon,lat,categoria,nombre,n").expect("write");
        for i in 0..6000u32 {
            let lon = -100.32 + 0.02 * f64::from((i * 7919) % 1000) / 1000.0;
            let lat = 25.66 + 0.02 * f64::from((i * 104_729) % 997) / 997.0;
            let n = if i % 3 == 0 {
                String::new()
            } else {
                (i % 50).to_string()
            };
            writeln!(f, "{lon:.6},{lat:.6},c{},punto número {i},{n}", i % 7).expect("write");
        }
        drop(f);
        let store = FsStore::open(dir.join("data"), 2).expect("store");
        ingest(&store, &IngestRequest::new(csv, "p", "pruebas"), &|_| {}).expect("ingest");
        let registry = Registry::new(std::sync::Arc::new(store));
        registry.refresh().expect("load");
        registry.get("p").expect("loaded")
    }

    #[test]
    fn coded_columns_encode_exactly_like_file_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let l = layer(dir.path());
        let coded = PointTiles::build(&l);
        let names: Vec<&str> = l.meta.schema.iter().map(|f| f.name.as_str()).collect();
        let is_coded: Vec<bool> = coded.columns.iter().map(Option::is_some).collect();
        assert_eq!(names, ["categoria", "nombre", "n"]);
        assert_eq!(
            is_coded,
            [true, false, true],
            "unique names stay in the file"
        );
        let from_file = PointTiles {
            index: PointIndex::build(l.anchors()),
            features: coded.features.clone(),
            columns: l.meta.schema.iter().map(|_| None).collect(),
        };
        let fields: Vec<Option<(Arc<str>, FieldType)>> = l
            .meta
            .schema
            .iter()
            .map(|f| Some((Arc::from(f.name.as_str()), f.ftype)))
            .collect();
        let opts = RenderOptions::default();
        for (z, x, y) in [
            (13u32, 1813u64, 3491u64),
            (15, 7253, 13_965),
            (16, 14_507, 27_930),
        ] {
            let t = TileId::new(z, x, y).expect("tile");
            let mut out = [Vec::new(), Vec::new()];
            for (pt, buf) in [&coded, &from_file].into_iter().zip(out.iter_mut()) {
                let sel = pt.index.select(t, 4096, 64, usize::MAX, z >= 16);
                let mut scratch = Scratch::default();
                encode(pt, &l, sel, t, &opts, &fields, &mut scratch, buf).expect("encode");
            }
            assert!(out[0].len() > 100, "{z}/{x}/{y} has points");
            assert_eq!(out[0], out[1], "{z}/{x}/{y}");
        }
    }
}
