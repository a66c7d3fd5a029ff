//! What changed between two versions of a layer: features added, removed and
//! modified (geometry and which attributes), and the schema's changes (columns added,
//! removed, retyped, renamed).
//!
//! Features are matched by an identity chosen in this order: the `--id-field` both
//! versions were published with (the DataHub id is its value), else a declared key
//! (the caller's `key`, or the key column a table was joined by), else an exact
//! content hash (geometry and the attributes both versions have). Without an identity
//! a modified feature cannot be told from a removed one and a new one: it shows as
//! both, and [`Identity::note`] says so.
//!
//! The work is a merge of the two versions' id-sorted lists; a feature whose stored
//! bytes are equal in both is unchanged without being decoded, so the cost is a read
//! of both files plus a decode of what changed. Everything here reads memory-mapped
//! versions and is blocking.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use rayon::prelude::*;
use serde::Serialize;

use crate::fgb::{Field, FieldType, RawValue};
use crate::index::LoadedLayer;
use crate::{Error, Result};

/// How features were matched across the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The DataHub id (the `--id-field` value in both versions).
    IdField,
    /// The value(s) of declared key columns.
    Key,
    /// Geometry and attributes: an edited feature is a removal and an addition.
    Content,
}

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub kind: IdentityKind,
    /// The id field or key columns (empty for content).
    pub fields: Vec<String>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Retyped {
    pub name: String,
    pub from: FieldType,
    pub to: FieldType,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Renamed {
    pub from: String,
    pub to: String,
}

/// Columns of the new version against the old one.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SchemaDiff {
    pub added: Vec<Field>,
    pub removed: Vec<Field>,
    pub retyped: Vec<Retyped>,
    /// A removed and an added column holding the same values feature by feature.
    pub renamed: Vec<Renamed>,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.retyped.is_empty()
            && self.renamed.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        match s {
            "added" => Some(ChangeKind::Added),
            "removed" => Some(ChangeKind::Removed),
            "modified" => Some(ChangeKind::Modified),
            _ => None,
        }
    }
}

/// One changed feature: where it is in each version, and what changed.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    /// (DataHub id, offset) in the old version.
    pub old: Option<(i64, u64)>,
    /// (DataHub id, offset) in the new version.
    pub new: Option<(i64, u64)>,
    /// The geometry changed (modified features).
    pub geometry: bool,
    /// Attributes whose value changed, by their name in the new version.
    pub attributes: Vec<String>,
    /// The union of the feature's bboxes before and after (None: no geometry).
    pub bbox: Option<[f64; 4]>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    /// Of the modified: geometry changed / attributes changed (a feature may be both).
    pub geometry_changed: u64,
    pub attributes_changed: u64,
    pub unchanged: u64,
}

/// The difference between two versions, new against old.
pub struct Diff {
    pub identity: Identity,
    pub schema: SchemaDiff,
    /// In the new version's id order, removed features where they were.
    pub changes: Vec<Change>,
    pub unchanged: u64,
    pub old_count: u64,
    pub new_count: u64,
}

impl Diff {
    /// Roughly the memory it holds (for caches bounded in bytes).
    pub fn heap_bytes(&self) -> usize {
        self.changes.capacity() * std::mem::size_of::<Change>()
            + self
                .changes
                .iter()
                .map(|c| {
                    c.attributes.capacity() * std::mem::size_of::<String>()
                        + c.attributes.iter().map(String::capacity).sum::<usize>()
                })
                .sum::<usize>()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            unchanged: self.unchanged,
            ..Counts::default()
        };
        for ch in &self.changes {
            match ch.kind {
                ChangeKind::Added => c.added += 1,
                ChangeKind::Removed => c.removed += 1,
                ChangeKind::Modified => {
                    c.modified += 1;
                    c.geometry_changed += u64::from(ch.geometry);
                    c.attributes_changed += u64::from(!ch.attributes.is_empty());
                }
            }
        }
        c
    }

    /// The bbox of every change (None when nothing with a geometry changed).
    pub fn bbox(&self) -> Option<[f64; 4]> {
        self.changes.iter().filter_map(|c| c.bbox).reduce(union)
    }

    /// Attribute names per change, then the counts per attribute, most changed first.
    pub fn attribute_counts(&self) -> Vec<(String, u64)> {
        let mut m: HashMap<&str, u64> = HashMap::new();
        for c in &self.changes {
            for a in &c.attributes {
                *m.entry(a.as_str()).or_default() += 1;
            }
        }
        let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Most columns a key may combine (INEGI keys use two or three).
const MAX_KEY_COLUMNS: usize = 4;

/// Which identity to use: `key` asked by the caller, else what the versions declare.
pub fn choose_identity(
    old: Option<&LoadedLayer>,
    new: &LoadedLayer,
    key: &[String],
) -> Result<Identity> {
    let has = |l: &LoadedLayer, f: &str| l.meta.schema.iter().any(|x| x.name == f);
    // Keys are built per feature from these columns: a few, each once.
    if key.len() > MAX_KEY_COLUMNS {
        return Err(Error::bad(format!(
            "a key has at most {MAX_KEY_COLUMNS} columns ({} given)",
            key.len()
        )));
    }
    if key.iter().collect::<BTreeSet<_>>().len() != key.len() {
        return Err(Error::bad("a key column is named twice"));
    }
    if !key.is_empty() {
        for k in key {
            for l in old.into_iter().chain(std::iter::once(new)) {
                if !has(l, k) {
                    return Err(Error::bad(format!(
                        "key '{k}' is not a column of version {} of '{}'; columns: {}",
                        l.meta.version,
                        l.meta.id,
                        crate::table::name_list(l.meta.schema.iter().map(|f| f.name.as_str()))
                    )));
                }
            }
        }
        return Ok(Identity {
            kind: IdentityKind::Key,
            fields: key.to_vec(),
            note: format!(
                "features matched by the value of {}, as asked",
                key.join(" + ")
            ),
        });
    }
    let id_new = new.meta.id_field.as_deref();
    let id_old = old.map_or(id_new, |o| o.meta.id_field.as_deref());
    if let (Some(a), Some(b)) = (id_old, id_new) {
        if a == b {
            return Ok(Identity {
                kind: IdentityKind::IdField,
                fields: vec![a.to_string()],
                note: format!("features matched by their id (the '{a}' field)"),
            });
        }
    }
    // A table placed by a key keeps that key from version to version: the one asked
    // for, or the one the join found by itself (in its report).
    let declared = new
        .meta
        .table
        .as_ref()
        .and_then(|t| t.join.as_ref())
        .map(|j| j.key.clone())
        .filter(|k| !k.is_empty())
        .or_else(|| new.meta.report.join.as_ref().map(|j| j.key.clone()))
        .unwrap_or_default();
    if !declared.is_empty()
        && declared
            .iter()
            .all(|k| has(new, k) && old.is_none_or(|o| has(o, k)))
    {
        return Ok(Identity {
            kind: IdentityKind::Key,
            note: format!(
                "features matched by the table's key {}",
                declared.join(" + ")
            ),
            fields: declared,
        });
    }
    Ok(Identity {
        kind: IdentityKind::Content,
        fields: Vec::new(),
        note: "the layer has no feature id (--id-field) or key: features are matched by \
               geometry and attributes, so an edited feature shows as removed and added; \
               publish with --id-field or ask with key=COLUMN to see modifications"
            .into(),
    })
}

/// Asked now and then while a diff runs (from every worker thread): an error stops
/// the diff with it (a request's budget ran out, its client went away).
pub type Stop<'a> = dyn Fn() -> Result<()> + Sync + 'a;

/// How many features are compared between two calls of a [`Stop`].
const STOP_EVERY: usize = 4096;

fn poll(stop: &Stop, i: usize) -> Result<()> {
    if i.is_multiple_of(STOP_EVERY) {
        stop()
    } else {
        Ok(())
    }
}

/// `new` against `old` (None: against nothing, every feature is added).
pub fn diff(old: Option<&LoadedLayer>, new: &LoadedLayer, key: &[String]) -> Result<Diff> {
    diff_until(old, new, key, &|| Ok(()))
}

/// [`diff`], stopped when `stop` says so.
pub fn diff_until(
    old: Option<&LoadedLayer>,
    new: &LoadedLayer,
    key: &[String],
    stop: &Stop,
) -> Result<Diff> {
    let identity = choose_identity(old, new, key)?;
    let Some(old) = old else {
        let changes = new
            .ids()
            .par_iter()
            .enumerate()
            .map(|(i, &(fid, off))| {
                poll(stop, i)?;
                Ok(Change {
                    kind: ChangeKind::Added,
                    old: None,
                    new: Some((fid, off)),
                    geometry: false,
                    attributes: Vec::new(),
                    bbox: feature_bbox(new, off)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Diff {
            identity,
            schema: SchemaDiff {
                added: new.meta.schema.clone(),
                ..SchemaDiff::default()
            },
            changes,
            unchanged: 0,
            old_count: 0,
            new_count: new.len() as u64,
        });
    };
    let mut map = ColumnMap::by_name(old, new);
    let mut schema = map.schema(old, new);
    // Pairs of features believed to be the same, for telling renames.
    let sample = match identity.kind {
        IdentityKind::IdField => sample_by_id(old, new),
        IdentityKind::Key => {
            let ko = key_index(old, &identity.fields, stop)?;
            let kn = key_index(new, &identity.fields, stop)?;
            ko.iter()
                .filter_map(|(k, &a)| kn.get(k).map(|&b| (a, b)))
                .take(SAMPLE)
                .collect()
        }
        IdentityKind::Content => sample_by_geometry(old, new)?,
    };
    let renamed = find_renames(old, new, &schema, &sample)?;
    for r in &renamed {
        map.link(old, new, &r.from, &r.to);
    }
    schema
        .added
        .retain(|f| !renamed.iter().any(|r| r.to == f.name));
    schema
        .removed
        .retain(|f| !renamed.iter().any(|r| r.from == f.name));
    schema.renamed = renamed;
    let same_layout = map.is_identity() && old.meta.schema == new.meta.schema;

    let (changes, unchanged) = match identity.kind {
        IdentityKind::IdField => {
            let pairs = merge_by_id(old.ids(), new.ids());
            match_pairs(old, new, &map, &pairs, same_layout, stop)?
        }
        IdentityKind::Key => {
            let ko = key_index(old, &identity.fields, stop)?;
            let kn = key_index(new, &identity.fields, stop)?;
            let mut pairs: Vec<Pair> = Vec::new();
            for (k, &a) in &ko {
                pairs.push((Some(a), kn.get(k).copied()));
            }
            for (k, &b) in &kn {
                if !ko.contains_key(k) {
                    pairs.push((None, Some(b)));
                }
            }
            pairs.sort_by_key(|(a, b)| b.or(*a).map(|x| x.0));
            match_pairs(old, new, &map, &pairs, same_layout, stop)?
        }
        IdentityKind::Content => by_content(old, new, &map, stop)?,
    };
    Ok(Diff {
        identity,
        schema,
        changes,
        unchanged,
        old_count: old.len() as u64,
        new_count: new.len() as u64,
    })
}

/// At most this many matched pairs are read to tell renamed columns.
const SAMPLE: usize = 20_000;

/// Old schema index → new schema index, for the columns both versions have.
struct ColumnMap {
    to_new: Vec<Option<usize>>,
    /// Columns whose type changed: compared by their text.
    retyped: Vec<bool>,
}

impl ColumnMap {
    fn by_name(old: &LoadedLayer, new: &LoadedLayer) -> Self {
        let to_new: Vec<Option<usize>> = old
            .meta
            .schema
            .iter()
            .map(|f| new.meta.schema.iter().position(|g| g.name == f.name))
            .collect();
        let retyped = old
            .meta
            .schema
            .iter()
            .zip(&to_new)
            .map(|(f, n)| n.is_some_and(|n| new.meta.schema[n].ftype != f.ftype))
            .collect();
        ColumnMap { to_new, retyped }
    }

    fn link(&mut self, old: &LoadedLayer, new: &LoadedLayer, from: &str, to: &str) {
        let (Some(i), Some(j)) = (
            old.meta.schema.iter().position(|f| f.name == from),
            new.meta.schema.iter().position(|f| f.name == to),
        ) else {
            return;
        };
        self.to_new[i] = Some(j);
        self.retyped[i] = old.meta.schema[i].ftype != new.meta.schema[j].ftype;
    }

    /// By the new version's column index: compared by text (its type changed).
    fn new_text(&self, nn: usize) -> Vec<bool> {
        let mut t = vec![false; nn];
        for (i, j) in self.to_new.iter().enumerate() {
            if let Some(j) = j {
                if self.retyped[i] {
                    t[*j] = true;
                }
            }
        }
        t
    }

    fn is_identity(&self) -> bool {
        self.to_new
            .iter()
            .enumerate()
            .all(|(i, j)| *j == Some(i) && !self.retyped[i])
    }

    fn schema(&self, old: &LoadedLayer, new: &LoadedLayer) -> SchemaDiff {
        let mut s = SchemaDiff::default();
        for (i, f) in old.meta.schema.iter().enumerate() {
            match self.to_new[i] {
                None => s.removed.push(f.clone()),
                Some(j) if self.retyped[i] => s.retyped.push(Retyped {
                    name: f.name.clone(),
                    from: f.ftype,
                    to: new.meta.schema[j].ftype,
                }),
                Some(_) => {}
            }
        }
        for (j, f) in new.meta.schema.iter().enumerate() {
            if !self.to_new.contains(&Some(j)) {
                s.added.push(f.clone());
            }
        }
        s
    }
}

/// A value as compared across versions: numbers by value (an int 5 equals a float
/// 5.0), strings by bytes; a retyped column compares the values' text.
#[derive(Debug, Clone, PartialEq)]
enum Canon {
    Bool(bool),
    /// Integers exactly (ids and codes beyond 2^53 stay distinct).
    Int(i64),
    Num(f64),
    Text(Vec<u8>),
}

/// Integers up to this magnitude are exact as f64: they hash like the equal float.
const EXACT: u64 = 1 << 53;

impl Canon {
    fn of(v: RawValue<'_>, as_text: bool) -> Canon {
        let c = match v {
            RawValue::Bool(b) => Canon::Bool(b),
            RawValue::I64(n) => Canon::Int(n),
            RawValue::U64(n) => i64::try_from(n).map_or(Canon::Num(n as f64), Canon::Int),
            RawValue::F64(x) => Canon::Num(x),
            RawValue::Str(s) => Canon::Text(s.to_vec()),
        };
        if as_text {
            c.text()
        } else {
            c
        }
    }

    fn text(self) -> Canon {
        match self {
            Canon::Bool(b) => Canon::Text(b.to_string().into_bytes()),
            Canon::Int(i) => Canon::Text(i.to_string().into_bytes()),
            Canon::Num(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                Canon::Text(format!("{}", x as i64).into_bytes())
            }
            Canon::Num(x) => Canon::Text(format!("{x}").into_bytes()),
            t => t,
        }
    }

    fn feed(&self, h: &mut impl Hasher) {
        match self {
            Canon::Bool(b) => (1u8, *b).hash(h),
            Canon::Int(i) if i.unsigned_abs() < EXACT => (2u8, (*i as f64).to_bits()).hash(h),
            Canon::Int(i) => (4u8, *i).hash(h),
            // NaN equals NaN here: a value that did not change is not a change.
            Canon::Num(x) => (
                2u8,
                if x.is_nan() {
                    u64::MAX
                } else {
                    (x + 0.0).to_bits()
                },
            )
                .hash(h),
            Canon::Text(t) => (3u8, t).hash(h),
        }
    }

    fn same(a: &Option<Canon>, b: &Option<Canon>) -> bool {
        match (a, b) {
            (Some(Canon::Num(x)), Some(Canon::Num(y))) => x == y || (x.is_nan() && y.is_nan()),
            (Some(Canon::Int(i)), Some(Canon::Num(x)))
            | (Some(Canon::Num(x)), Some(Canon::Int(i))) => {
                i.unsigned_abs() < EXACT && *i as f64 == *x
            }
            _ => a == b,
        }
    }
}

/// A feature's values by column (None: null or absent).
type Values = Vec<Option<Canon>>;

/// One feature's values in both versions, by the new version's column index; the
/// columns whose type changed as text on both sides.
fn pair_values(
    old: &LoadedLayer,
    a: u64,
    new: &LoadedLayer,
    b: u64,
    map: &ColumnMap,
    text: &[bool],
) -> Result<(Values, Values)> {
    let nn = new.meta.schema.len();
    let (mut va, mut vb) = (values(old, a, Some(map), nn)?, values(new, b, None, nn)?);
    as_text(&mut va, text);
    as_text(&mut vb, text);
    Ok((va, vb))
}

fn as_text(v: &mut [Option<Canon>], text: &[bool]) {
    for (slot, t) in v.iter_mut().zip(text) {
        if *t {
            *slot = slot.take().map(Canon::text);
        }
    }
}

/// The values of the feature at `offset`, by the new version's column index.
fn values(
    l: &LoadedLayer,
    offset: u64,
    map: Option<&ColumnMap>,
    n: usize,
) -> Result<Vec<Option<Canon>>> {
    let mut out = vec![None; n];
    l.for_each_value(offset, |i, v| {
        let j = match map {
            Some(m) => match m.to_new.get(i).copied().flatten() {
                Some(j) => j,
                None => return,
            },
            None => i,
        };
        if let Some(slot) = out.get_mut(j) {
            *slot = Some(Canon::of(v, false));
        }
    })?;
    Ok(out)
}

fn geometry_digest(l: &LoadedLayer, offset: u64) -> Result<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    l.geometry_digest(offset, &mut h)?;
    Ok(h.finish())
}

fn feature_bbox(l: &LoadedLayer, offset: u64) -> Result<Option<[f64; 4]>> {
    use geo::BoundingRect;
    Ok(l.geometry(offset)?
        .and_then(|g| g.bounding_rect())
        .map(|r| [r.min().x, r.min().y, r.max().x, r.max().y]))
}

fn union(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

/// (DataHub id, offset) of a feature in one version.
type At = (i64, u64);
/// A feature in the old version, the new one, or both.
type Pair = (Option<At>, Option<At>);
/// A feature found in both versions.
type Matched = (At, At);

fn merge_by_id(old: &[(i64, u64)], new: &[(i64, u64)]) -> Vec<Pair> {
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                out.push((Some(*a), Some(*b)));
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push((Some(*a), None));
                i += 1;
            }
            (Some(_), Some(b)) => {
                out.push((None, Some(*b)));
                j += 1;
            }
            (Some(a), None) => {
                out.push((Some(*a), None));
                i += 1;
            }
            (None, Some(b)) => {
                out.push((None, Some(*b)));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

fn sample_by_id(old: &LoadedLayer, new: &LoadedLayer) -> Vec<Matched> {
    merge_by_id(old.ids(), new.ids())
        .into_iter()
        .filter_map(|(a, b)| Some((a?, b?)))
        .take(SAMPLE)
        .collect()
}

/// Features whose geometry is unique in both versions and equal: the same feature,
/// for telling renames when nothing else identifies features.
fn sample_by_geometry(old: &LoadedLayer, new: &LoadedLayer) -> Result<Vec<Matched>> {
    let take = |l: &LoadedLayer| -> Result<HashMap<u64, Option<(i64, u64)>>> {
        let mut m = HashMap::new();
        for &(fid, off) in l.ids().iter().take(SAMPLE * 5) {
            m.entry(geometry_digest(l, off)?)
                .and_modify(|e| *e = None)
                .or_insert(Some((fid, off)));
        }
        Ok(m)
    };
    let (a, b) = (take(old)?, take(new)?);
    Ok(a.iter()
        .filter_map(|(g, x)| Some(((*x)?, (*b.get(g)?)?)))
        .take(SAMPLE)
        .collect())
}

/// Removed and added columns whose values agree on at least 90 % of the matched
/// features (and on some non-empty value) are one column renamed.
fn find_renames(
    old: &LoadedLayer,
    new: &LoadedLayer,
    schema: &SchemaDiff,
    sample: &[Matched],
) -> Result<Vec<Renamed>> {
    if schema.removed.is_empty() || schema.added.is_empty() || sample.is_empty() {
        return Ok(Vec::new());
    }
    let oi: Vec<usize> = schema
        .removed
        .iter()
        .filter_map(|f| old.meta.schema.iter().position(|g| g.name == f.name))
        .collect();
    let ni: Vec<usize> = schema
        .added
        .iter()
        .filter_map(|f| new.meta.schema.iter().position(|g| g.name == f.name))
        .collect();
    // agree[r][a], compared[r][a]
    let mut agree = vec![vec![0u64; ni.len()]; oi.len()];
    let mut filled = vec![vec![0u64; ni.len()]; oi.len()];
    let (on, nn) = (old.meta.schema.len(), new.meta.schema.len());
    for &((_, a), (_, b)) in sample {
        let va = values(old, a, None, on)?;
        let vb = values(new, b, None, nn)?;
        for (r, &i) in oi.iter().enumerate() {
            for (c, &j) in ni.iter().enumerate() {
                let x = va[i].clone().map(Canon::text);
                let y = vb[j].clone().map(Canon::text);
                if x.is_some() || y.is_some() {
                    filled[r][c] += 1;
                    if x == y {
                        agree[r][c] += 1;
                    }
                }
            }
        }
    }
    let mut cands: Vec<(f64, usize, usize)> = Vec::new();
    for r in 0..oi.len() {
        for c in 0..ni.len() {
            if filled[r][c] > 0 && agree[r][c] > 0 {
                let share = agree[r][c] as f64 / filled[r][c] as f64;
                if share >= 0.9 {
                    cands.push((share, r, c));
                }
            }
        }
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_r, mut used_c) = (BTreeSet::new(), BTreeSet::new());
    let mut out = Vec::new();
    for (_, r, c) in cands {
        // Best pairs first; a column taken by a better pair is not renamed twice.
        if used_r.contains(&r) || used_c.contains(&c) {
            continue;
        }
        used_r.insert(r);
        used_c.insert(c);
        out.push(Renamed {
            from: old.meta.schema[oi[r]].name.clone(),
            to: new.meta.schema[ni[c]].name.clone(),
        });
    }
    Ok(out)
}

/// The key of each feature (values of `fields` joined), refused when not unique.
fn key_index(
    l: &LoadedLayer,
    fields: &[String],
    stop: &Stop,
) -> Result<HashMap<Vec<u8>, (i64, u64)>> {
    let cols: Vec<usize> = fields
        .iter()
        .filter_map(|f| l.meta.schema.iter().position(|g| &g.name == f))
        .collect();
    let n = l.meta.schema.len();
    let mut out = HashMap::with_capacity(l.len());
    for (i, &(fid, off)) in l.ids().iter().enumerate() {
        poll(stop, i)?;
        let v = values(l, off, None, n)?;
        let mut k = Vec::new();
        for &c in &cols {
            match v[c].clone().map(Canon::text) {
                Some(Canon::Text(t)) => k.extend_from_slice(&t),
                _ => k.extend_from_slice(b"\x00null"),
            }
            k.push(0x1f);
        }
        if let Some(prev) = out.insert(k.clone(), (fid, off)) {
            return Err(Error::bad(format!(
                "the key {} is not unique in version {} of '{}': features {} and {} both have '{}'; \
                 choose another key",
                fields.join(" + "),
                l.meta.version,
                l.meta.id,
                prev.0,
                fid,
                String::from_utf8_lossy(&k).replace('\u{1f}', " ").trim()
            )));
        }
    }
    Ok(out)
}

/// Compares matched features (in parallel); returns the changes and the unchanged count.
fn match_pairs(
    old: &LoadedLayer,
    new: &LoadedLayer,
    map: &ColumnMap,
    pairs: &[Pair],
    same_layout: bool,
    stop: &Stop,
) -> Result<(Vec<Change>, u64)> {
    let nn = new.meta.schema.len();
    let text = map.new_text(nn);
    let results: Vec<Option<Change>> = pairs
        .par_iter()
        .enumerate()
        .map(|(i, &(a, b))| -> Result<Option<Change>> {
            poll(stop, i)?;
            match (a, b) {
                (Some(a), None) => Ok(Some(Change {
                    kind: ChangeKind::Removed,
                    old: Some(a),
                    new: None,
                    geometry: false,
                    attributes: Vec::new(),
                    bbox: feature_bbox(old, a.1)?,
                })),
                (None, Some(b)) => Ok(Some(Change {
                    kind: ChangeKind::Added,
                    old: None,
                    new: Some(b),
                    geometry: false,
                    attributes: Vec::new(),
                    bbox: feature_bbox(new, b.1)?,
                })),
                (Some(a), Some(b)) => {
                    // Equal stored bytes (ids equal too): nothing to decode.
                    if same_layout
                        && a.0 == b.0
                        && old.feature_bytes(a.1)? == new.feature_bytes(b.1)?
                    {
                        return Ok(None);
                    }
                    let geometry = geometry_digest(old, a.1)? != geometry_digest(new, b.1)?;
                    let (va, vb) = pair_values(old, a.1, new, b.1, map, &text)?;
                    let attributes: Vec<String> = (0..nn)
                        .filter(|&j| {
                            // Columns only the new version has are schema changes,
                            // not changes of every feature.
                            map.to_new.contains(&Some(j)) && !Canon::same(&va[j], &vb[j])
                        })
                        .map(|j| new.meta.schema[j].name.clone())
                        .collect();
                    if !geometry && attributes.is_empty() {
                        return Ok(None);
                    }
                    let after = feature_bbox(new, b.1)?;
                    // A moved feature's change spans where it was and where it is (a
                    // geometry added to a feature that had none: where it is).
                    let bbox = if geometry {
                        match (feature_bbox(old, a.1)?, after) {
                            (Some(x), Some(y)) => Some(union(x, y)),
                            (before, after) => before.or(after),
                        }
                    } else {
                        after
                    };
                    Ok(Some(Change {
                        kind: ChangeKind::Modified,
                        old: Some(a),
                        new: Some(b),
                        geometry,
                        attributes,
                        bbox,
                    }))
                }
                (None, None) => Ok(None),
            }
        })
        .collect::<Result<_>>()?;
    let mut unchanged = 0;
    let mut changes = Vec::new();
    for (r, p) in results.into_iter().zip(pairs) {
        match r {
            Some(c) => changes.push(c),
            None if p.0.is_some() && p.1.is_some() => unchanged += 1,
            None => {}
        }
    }
    Ok((changes, unchanged))
}

/// Features matched by content: a multiset difference of (geometry, attributes).
fn by_content(
    old: &LoadedLayer,
    new: &LoadedLayer,
    map: &ColumnMap,
    stop: &Stop,
) -> Result<(Vec<Change>, u64)> {
    let nn = new.meta.schema.len();
    // New columns with no old counterpart are left out: a column added to every
    // feature is a schema change, not every feature replaced.
    let shared: Vec<bool> = (0..nn).map(|j| map.to_new.contains(&Some(j))).collect();
    let text = map.new_text(nn);
    let digest = |l: &LoadedLayer, off: u64, m: Option<&ColumnMap>| -> Result<u64> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        l.geometry_digest(off, &mut h)?;
        let mut vals = values(l, off, m, nn)?;
        as_text(&mut vals, &text);
        for (j, v) in vals.iter().enumerate() {
            if shared[j] {
                j.hash(&mut h);
                match v {
                    Some(v) => v.feed(&mut h),
                    None => 0u8.hash(&mut h),
                }
            }
        }
        Ok(h.finish())
    };
    let dold: Vec<u64> = old
        .ids()
        .par_iter()
        .enumerate()
        .map(|(i, &(_, off))| {
            poll(stop, i)?;
            digest(old, off, Some(map))
        })
        .collect::<Result<_>>()?;
    let dnew: Vec<u64> = new
        .ids()
        .par_iter()
        .enumerate()
        .map(|(i, &(_, off))| {
            poll(stop, i)?;
            digest(new, off, None)
        })
        .collect::<Result<_>>()?;
    let mut count: HashMap<u64, i64> = HashMap::with_capacity(dold.len());
    for d in &dold {
        *count.entry(*d).or_default() += 1;
    }
    let mut unchanged = 0u64;
    let mut added = Vec::new();
    for (i, d) in dnew.iter().enumerate() {
        match count.get_mut(d) {
            Some(c) if *c > 0 => {
                *c -= 1;
                unchanged += 1;
            }
            _ => added.push(new.ids()[i]),
        }
    }
    let mut removed = Vec::new();
    for (i, d) in dold.iter().enumerate().rev() {
        if let Some(c) = count.get_mut(d) {
            if *c > 0 {
                *c -= 1;
                removed.push(old.ids()[i]);
            }
        }
    }
    removed.reverse();
    let mut changes = Vec::with_capacity(added.len() + removed.len());
    for a in removed {
        changes.push(Change {
            kind: ChangeKind::Removed,
            old: Some(a),
            new: None,
            geometry: false,
            attributes: Vec::new(),
            bbox: feature_bbox(old, a.1)?,
        });
    }
    for b in added {
        changes.push(Change {
            kind: ChangeKind::Added,
            old: None,
            new: Some(b),
            geometry: false,
            attributes: Vec::new(),
            bbox: feature_bbox(new, b.1)?,
        });
    }
    Ok((changes, unchanged))
}

/// Whether one feature changed between two versions (columns matched by name):
/// (geometry changed, attributes changed by their new name).
pub fn compare(
    old: &LoadedLayer,
    a: u64,
    new: &LoadedLayer,
    b: u64,
) -> Result<(bool, Vec<String>)> {
    let map = ColumnMap::by_name(old, new);
    let nn = new.meta.schema.len();
    let geometry = geometry_digest(old, a)? != geometry_digest(new, b)?;
    let (va, vb) = pair_values(old, a, new, b, &map, &map.new_text(nn))?;
    // Columns of one version only are schema changes, not this feature's.
    let attributes = (0..nn)
        .filter(|&j| map.to_new.contains(&Some(j)) && !Canon::same(&va[j], &vb[j]))
        .map(|j| new.meta.schema[j].name.clone())
        .collect();
    Ok((geometry, attributes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::{FsStore, LayerStore};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two versions of a 10,000-point layer with an id field: in the second, point 7
    /// moved, point 8 renamed, point 9 removed and point 20,000 added.
    fn two_versions(dir: &std::path::Path) -> (LoadedLayer, LoadedLayer) {
        let store = FsStore::open(dir.join("data"), 5).unwrap();
        let write = |name: &str, second: bool| {
            let mut fs = Vec::new();
            for i in 0..10_000u32 {
                if second && i == 9 {
                    continue;
                }
                let x = -100.3 + f64::from(i) * 1e-5 + if second && i == 7 { 1e-3 } else { 0.0 };
                let nombre = if second && i == 8 {
                    "otro".to_string()
                } else {
                    format!("p{i}")
                };
                fs.push(format!(
                    r#"{{"type":"Feature","properties":{{"id":{i},"nombre":"{nombre}"}},"geometry":{{"type":"Point","coordinates":[{x},25.67]}}}}"#
                ));
            }
            if second {
                fs.push(r#"{"type":"Feature","properties":{"id":20000,"nombre":"nuevo"},"geometry":{"type":"Point","coordinates":[-100.2,25.7]}}"#.into());
            }
            let p = dir.join(name);
            std::fs::write(
                &p,
                format!(
                    r#"{{"type":"FeatureCollection","features":[{}]}}"#,
                    fs.join(",")
                ),
            )
            .unwrap();
            p
        };
        for (name, second) in [("v1.geojson", false), ("v2.geojson", true)] {
            let mut req =
                crate::ingest::IngestRequest::new(write(name, second), "puntos", "pruebas");
            req.id_field = Some("id".into());
            crate::ingest::ingest(&store, &req, &|_| {}).unwrap();
        }
        let vs = store.versions("puntos").unwrap();
        let load = |i: usize| LoadedLayer::load_for_scan(&vs[i]).unwrap().0;
        (load(0), load(1))
    }

    #[test]
    fn diff_by_id_and_stopped_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = two_versions(dir.path());
        let d = diff(Some(&old), &new, &[]).unwrap();
        assert_eq!(d.identity.kind, IdentityKind::IdField);
        let c = d.counts();
        assert_eq!((c.added, c.removed, c.modified), (1, 1, 2), "{c:?}");
        assert_eq!(d.unchanged, 9_997);
        let moved = d
            .changes
            .iter()
            .find(|c| c.old.map(|o| o.0) == Some(7))
            .unwrap();
        assert!(moved.geometry && moved.attributes.is_empty());
        let renamed = d
            .changes
            .iter()
            .find(|c| c.old.map(|o| o.0) == Some(8))
            .unwrap();
        assert!(!renamed.geometry);
        assert_eq!(renamed.attributes, vec!["nombre".to_string()]);
        assert!(d.heap_bytes() >= 4 * std::mem::size_of::<Change>());

        // Asked every few thousand features, from the worker threads too: the
        // first "no" stops the diff with its error, whichever identity is used.
        for key in [&[][..], &["nombre".to_string()][..]] {
            let calls = AtomicUsize::new(0);
            let stop = || {
                if calls.fetch_add(1, Ordering::Relaxed) >= 1 {
                    Err(Error::Limit("the client went away".into()))
                } else {
                    Ok(())
                }
            };
            let Err(e) = diff_until(Some(&old), &new, key, &stop) else {
                panic!("not stopped (key {key:?})")
            };
            assert!(e.to_string().contains("went away"), "{e}");
        }
        let Err(e) = diff_until(None, &new, &[], &|| Err(Error::Limit("budget".into()))) else {
            panic!("not stopped")
        };
        assert!(e.to_string().contains("budget"), "{e}");
    }
}
