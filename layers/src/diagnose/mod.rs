//! The data-quality diagnosis of a layer version: "is it usable for decisions, and if
//! not, why?" in words a ministry can act on (Spanish first, English beside).
//!
//! Computed at ingest from the stored features and the ingest report, stored in the
//! version's `meta.json`, recomputable (`datahub diagnose --recompute`). Each check gives
//! a count, its share of the layer, up to [`MAX_EXAMPLES`] feature ids, a message in
//! Spanish and English, a suggested fix where there is one, and the points it costs.
//! The score is 100 minus those points; the grade follows documented thresholds
//! ([`Thresholds`]).
//!
//! [`diagnose_with`] scans every feature once on every core (this module: what each
//! feature contributes, merged in order), then each check family reports from what the
//! scan gathered: `geometry`, `location`, `duplicates`, `attributes` and
//! `metadata`, in that order.

mod attributes;
mod duplicates;
mod geometry;
mod location;
mod metadata;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use geo::{BoundingRect, Coord, CoordsIter};
use serde::{Deserialize, Serialize};

use crate::fgb::{FieldType, RawValue};
use crate::index::LoadedLayer;
use crate::store::LayerMeta;

pub const MAX_EXAMPLES: usize = 20;

/// A named lon/lat box.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Area {
    pub name: String,
    /// [min lon, min lat, max lon, max lat]
    pub bbox: [f64; 4],
}

impl Area {
    fn contains(&self, x: f64, y: f64) -> bool {
        x >= self.bbox[0] && x <= self.bbox[2] && y >= self.bbox[1] && y <= self.bbox[3]
    }
}

/// Where the city's data should be, and the grade thresholds (`[quality]` in the
/// settings file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnoseConfig {
    /// The expected area (default: the Monterrey metropolitan area).
    pub area: Area,
    /// The wider bound: outside it a feature is surely misplaced (default: Nuevo León).
    pub region: Area,
    pub thresholds: Thresholds,
}

impl Default for DiagnoseConfig {
    fn default() -> Self {
        DiagnoseConfig {
            area: Area {
                name: "Zona Metropolitana de Monterrey".into(),
                bbox: [-100.70, 25.35, -99.85, 26.10],
            },
            region: Area {
                name: "Nuevo León".into(),
                bbox: [-101.25, 23.10, -98.40, 27.85],
            },
            thresholds: Thresholds::default(),
        }
    }
}

/// Grade thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// At or above: `usable` (when nothing blocks).
    pub usable: u32,
    /// Below: `not usable`.
    pub not_usable: u32,
    /// A blocking check (features outside the region, rejected, unrepairable, exact
    /// duplicates, broken encoding) affecting at least this share makes the layer
    /// `not usable` whatever the score.
    pub blocking_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            usable: 85,
            not_usable: 50,
            blocking_share: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    Usable,
    UsableWithCaveats,
    NotUsable,
}

impl Grade {
    pub fn label_es(self) -> &'static str {
        match self {
            Grade::Usable => "utilizable",
            Grade::UsableWithCaveats => "utilizable con reservas",
            Grade::NotUsable => "no utilizable",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Grade::Usable => "usable",
            Grade::UsableWithCaveats => "usable with caveats",
            Grade::NotUsable => "not usable",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// Stable code, e.g. `location.swapped_lat_lon`.
    pub code: String,
    /// geometry | location | duplicates | attributes | metadata
    pub category: String,
    pub severity: Severity,
    pub count: u64,
    /// Share of the layer's features (0–1) the finding concerns.
    pub share: f64,
    /// The field concerned, for attribute checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub examples: Vec<i64>,
    pub message_es: String,
    pub message_en: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Points taken from the score.
    pub penalty: u32,
    /// Makes the layer not usable on its own (at or above the blocking share).
    pub blocking: bool,
}

/// Completeness and type of one attribute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldProfile {
    pub name: String,
    #[serde(rename = "type")]
    pub ftype: String,
    /// Share of features where it is null or empty text.
    pub missing_share: f64,
    pub distinct: u64,
    /// More distinct values than were tracked.
    pub distinct_capped: bool,
}

/// The diagnosis of one layer version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Diagnosis {
    pub grade: Grade,
    pub score: u32,
    /// The codes that decided the grade, most costly first.
    pub reasons: Vec<String>,
    /// Every finding, most costly first.
    pub checks: Vec<Check>,
    pub fields: Vec<FieldProfile>,
    pub features: u64,
    pub area: Area,
    pub region: Area,
    /// The thresholds the grade was given with (kept, so read-time additions such as
    /// staleness grade the same way).
    #[serde(default)]
    pub thresholds: Thresholds,
    pub computed_at: String,
    pub duration_ms: u64,
}

impl Diagnosis {
    /// One line per finding, for the CLI.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{} / {} — {}/100",
            self.grade.label_es(),
            self.grade.label_en(),
            self.score
        )];
        for c in &self.checks {
            if c.severity == Severity::Info && c.penalty == 0 {
                continue;
            }
            v.push(format!("-{:<3} {}", c.penalty, c.message_es));
        }
        v
    }
}

/// Weight (maximum points) of each check; the points taken grow with the square root
/// of the share affected, so a few bad features already cost something.
fn weight(code: &str) -> u32 {
    match code {
        "location.outside_region" => 50,
        "geometry.rejected" => 40,
        "geometry.invalid_kept" => 40,
        "duplicates.exact" => 30,
        "attributes.mojibake" => 20,
        "attributes.non_unique_id" => 20,
        "duplicates.same_record" => 20,
        "attributes.incomplete" => 15,
        "geometry.invalid_repaired" => 10,
        "geometry.mixed_types" => 10,
        "attributes.mixed_date_formats" => 10,
        "attributes.inconsistent_spelling" => 10,
        "attributes.out_of_range" => 10,
        "geometry.spikes" => 5,
        "attributes.numbers_as_text" | "attributes.dates_as_text" => 5,
        "attributes.code_as_number" => 10,
        "attributes.empty_field" => 5,
        "metadata.title" | "metadata.description" | "metadata.license" | "metadata.contact" => 4,
        "metadata.update_frequency" => 3,
        "metadata.stale" => 10,
        "geometry.duplicate_vertices" | "attributes.constant_field" => 2,
        _ => 0,
    }
}

fn blocking_code(code: &str) -> bool {
    matches!(
        code,
        "location.outside_region"
            | "geometry.rejected"
            | "geometry.invalid_kept"
            | "duplicates.exact"
            | "attributes.mojibake"
    )
}

struct Builder {
    n: u64,
    checks: Vec<Check>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        code: &str,
        severity: Severity,
        count: u64,
        examples: Vec<i64>,
        field: Option<&str>,
        es: String,
        en: String,
        fix: Option<String>,
    ) {
        if count == 0 {
            return;
        }
        let share = if self.n == 0 {
            1.0
        } else {
            (count as f64 / self.n as f64).min(1.0)
        };
        let w = weight(code);
        let penalty = if severity == Severity::Info {
            0
        } else {
            ((f64::from(w) * share.sqrt()).ceil() as u32).min(w)
        };
        let mut examples = examples;
        examples.truncate(MAX_EXAMPLES);
        self.checks.push(Check {
            code: code.into(),
            category: code.split('.').next().unwrap_or("").into(),
            severity,
            count,
            share,
            field: field.map(str::to_string),
            examples,
            message_es: es,
            message_en: en,
            fix,
            penalty,
            blocking: false,
        });
    }
}

/// Per-field accumulator.
#[derive(Default)]
struct FieldAcc {
    missing: u64,
    /// Distinct text values with counts and a first example feature (capped).
    distinct: HashMap<String, (u64, i64)>,
    /// Distinct numbers (by bit pattern, capped).
    distinct_numbers: HashSet<u64>,
    capped: bool,
    numbers: Vec<(f64, i64)>,
    numeric_text: u64,
    /// Shortest and longest numeric-looking text: equal for fixed-width codes.
    numeric_len: (usize, usize),
    /// Numeric-looking values with a leading zero ("037"): codes, rightly text.
    leading_zero: u64,
    date_text: u64,
    date_formats: HashMap<&'static str, (u64, i64)>,
    text_values: u64,
    mojibake: Vec<i64>,
    mojibake_count: u64,
    dup_ids: Vec<i64>,
    dup_id_count: u64,
}

impl FieldAcc {
    fn distinct_len(&self) -> usize {
        self.distinct.len() + self.distinct_numbers.len()
    }

    /// Adds a later chunk's counts (examples keep feature order).
    fn merge(&mut self, o: FieldAcc) {
        self.missing += o.missing;
        for (k, (c, ex)) in o.distinct {
            if let Some(e) = self.distinct.get_mut(&k) {
                e.0 += c;
            } else if self.distinct_len() < DISTINCT_CAP {
                self.distinct.insert(k, (c, ex));
            } else {
                self.capped = true;
            }
        }
        for b in o.distinct_numbers {
            if self.distinct_len() < DISTINCT_CAP {
                self.distinct_numbers.insert(b);
            } else if !self.distinct_numbers.contains(&b) {
                self.capped = true;
            }
        }
        self.capped |= o.capped;
        self.numbers.extend(o.numbers);
        if o.numeric_text > 0 {
            self.numeric_len = if self.numeric_text == 0 {
                o.numeric_len
            } else {
                (
                    self.numeric_len.0.min(o.numeric_len.0),
                    self.numeric_len.1.max(o.numeric_len.1),
                )
            };
        }
        self.numeric_text += o.numeric_text;
        self.leading_zero += o.leading_zero;
        self.date_text += o.date_text;
        for (k, (c, ex)) in o.date_formats {
            self.date_formats.entry(k).or_insert((0, ex)).0 += c;
        }
        self.text_values += o.text_values;
        self.mojibake_count += o.mojibake_count;
        for f in o.mojibake {
            push_ex(&mut self.mojibake, f);
        }
    }
}

const DISTINCT_CAP: usize = 5_000;

fn looks_like_id(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "id" | "fid"
            | "gid"
            | "objectid"
            | "uuid"
            | "folio"
            | "clave"
            | "codigo"
            | "cvegeo"
            | "cve"
            | "id_unico"
    ) || n.starts_with("id_")
        || n.starts_with("cve_")
        || n.ends_with("_id")
}

/// The date pattern of a text value, if it is a date.
fn date_format(s: &str) -> Option<&'static str> {
    let b = s.trim().as_bytes();
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let all = |r: std::ops::Range<usize>| r.clone().all(d);
    if b.len() >= 10 && all(0..4) && b[4] == b'-' && all(5..7) && b[7] == b'-' && all(8..10) {
        return Some("AAAA-MM-DD");
    }
    if b.len() == 10 && all(0..2) && b[2] == b'/' && all(3..5) && b[5] == b'/' && all(6..10) {
        return Some("DD/MM/AAAA");
    }
    if b.len() == 10 && all(0..2) && b[2] == b'-' && all(3..5) && b[5] == b'-' && all(6..10) {
        return Some("DD-MM-AAAA");
    }
    if b.len() == 10 && all(0..4) && b[4] == b'/' && all(5..7) && b[7] == b'/' && all(8..10) {
        return Some("AAAA/MM/DD");
    }
    if b.len() == 8 && all(0..2) && b[2] == b'/' && all(3..5) && b[5] == b'/' && all(6..8) {
        return Some("DD/MM/AA");
    }
    None
}

/// Text that shows UTF-8 read as Latin-1/CP1252 (`Ã±` for `ñ`) or lost characters.
pub fn is_mojibake(s: &str) -> bool {
    let mut prev = '\0';
    for c in s.chars() {
        if c == '\u{FFFD}' {
            return true;
        }
        if (prev == 'Ã' || prev == 'Â') && ('\u{80}'..='\u{BF}').contains(&c) {
            return true;
        }
        // CP1252 renderings of the UTF-8 continuation bytes 0x80–0x9F.
        if prev == 'Ã' && "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
        {
            return true;
        }
        prev = c;
    }
    false
}

/// Case-, accent- and punctuation-insensitive key of a category value.
/// Whether `short` abbreviates `long` ("Mty." → "Monterrey", "Apod." → "Apodaca"):
/// same first letter, its letters in order within the long form, at most 60% as long.
fn abbreviates(short: &str, long: &str) -> bool {
    let (s, l) = (crate::text::compact(short), crate::text::compact(long));
    if s.is_empty() || s.len() * 5 > l.len() * 3 || s.chars().next() != l.chars().next() {
        return false;
    }
    let mut it = l.chars();
    s.chars().all(|c| it.any(|d| d == c))
}

fn geometry_hash(g: &geo::Geometry<f64>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::mem::discriminant(g).hash(&mut h);
    let mut f = Fnv::new();
    f.u64(h.finish());
    for c in g.coords_iter() {
        f.u64(c.x.to_bits());
        f.u64(c.y.to_bits());
    }
    f.0
}

/// Rings or lines with a spike (the path turns back on itself) and with repeated
/// consecutive vertices.
fn vertex_problems(g: &geo::Geometry<f64>) -> (bool, bool) {
    use geo::Geometry as G;
    let mut spike = false;
    let mut dup = false;
    let mut line = |pts: &[Coord<f64>], closed: bool| {
        for w in pts.windows(2) {
            if w[0] == w[1] {
                dup = true;
            }
        }
        let n = pts.len();
        let m = if closed { n.saturating_sub(1) } else { n };
        if m < 3 {
            return;
        }
        for i in 0..m {
            if !closed && (i == 0 || i == m - 1) {
                continue;
            }
            let a = pts[(i + m - 1) % m];
            let b = pts[i];
            let c = pts[(i + 1) % m];
            let (ux, uy, vx, vy) = (a.x - b.x, a.y - b.y, c.x - b.x, c.y - b.y);
            let (lu, lv) = ((ux * ux + uy * uy).sqrt(), (vx * vx + vy * vy).sqrt());
            if lu == 0.0 || lv == 0.0 {
                continue;
            }
            // Both neighbours in almost the same direction from b: an angle under ~1°.
            let cos = (ux * vx + uy * vy) / (lu * lv);
            if cos > 0.9998 {
                spike = true;
            }
        }
    };
    let mut visit = |g: &G<f64>| match g {
        G::LineString(l) => line(&l.0, false),
        G::MultiLineString(ml) => ml.iter().for_each(|l| line(&l.0, false)),
        G::Polygon(p) => std::iter::once(p.exterior())
            .chain(p.interiors())
            .for_each(|r| line(&r.0, true)),
        G::MultiPolygon(mp) => mp.iter().for_each(|p| {
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .for_each(|r| line(&r.0, true))
        }),
        _ => {}
    };
    visit(g);
    (spike, dup)
}

/// Candidate CRSs a misplaced layer may really be in, tried in this order.
pub const CANDIDATE_CRS: &[(u32, &str)] = &[
    (6372, "México ITRF2008 / LCC (INEGI)"),
    (32614, "WGS 84 / UTM 14N"),
    (6369, "México ITRF2008 / UTM 14N"),
    (32613, "WGS 84 / UTM 13N"),
    (3857, "WGS 84 / Pseudo-Mercator"),
];

/// The CRSs in which the point (x, y) lands inside `region` (the likely true CRS of
/// coordinates that make no sense as lon/lat).
pub fn crs_candidates(x: f64, y: f64, region: &Area) -> Vec<(u32, &'static str)> {
    thread_local! {
        // Creating a PROJ transformation opens PROJ's database: ~50 ms each. Called
        // for every misplaced row (a CSV with swapped columns), so each thread makes
        // them once and keeps them (PROJ objects are not Send).
        static CANDIDATES: Vec<(u32, &'static str, Option<proj::Proj>)> = CANDIDATE_CRS
            .iter()
            .map(|&(code, name)| {
                (code, name, proj::Proj::new_known_crs(&format!("EPSG:{code}"), "EPSG:4326", None).ok())
            })
            .collect();
    }
    CANDIDATES.with(|c| {
        let mut out = Vec::new();
        for (code, name, p) in c {
            let Some(p) = p else { continue };
            // The proj crate normalises axis order for visualisation: (lon, lat).
            if let Ok((lon, lat)) = p.convert((x, y)) {
                if region.contains(lon, lat) {
                    out.push((*code, *name));
                }
            }
        }
        out
    })
}

/// Counted features with their first examples.
type Counted = (u64, Vec<i64>);

fn count(c: &mut Counted, fid: i64) {
    c.0 += 1;
    push_ex(&mut c.1, fid);
}

/// What one chunk of features contributes.
struct Partial {
    acc: Vec<FieldAcc>,
    /// Per field: (value hash, feature) of identifier-like fields.
    ids: Vec<Vec<(u64, i64)>>,
    /// (geometry hash, all-attributes hash, non-identifier attributes hash, feature).
    keys: Vec<(u64, u64, u64, i64)>,
    outside_area: Counted,
    outside_region: Counted,
    zero: Counted,
    swapped: Counted,
    unexplained: Vec<(i64, f64, f64)>,
    spikes: Counted,
    dup_vertices: Counted,
    /// Scratch: which fields the current feature has.
    present: Vec<bool>,
}

impl Partial {
    fn new(fields: usize) -> Partial {
        Partial {
            acc: (0..fields).map(|_| FieldAcc::default()).collect(),
            ids: vec![Vec::new(); fields],
            keys: Vec::new(),
            outside_area: Default::default(),
            outside_region: Default::default(),
            zero: Default::default(),
            swapped: Default::default(),
            unexplained: Vec::new(),
            spikes: Default::default(),
            dup_vertices: Default::default(),
            present: vec![false; fields],
        }
    }

    fn merge(&mut self, o: Partial) {
        for (a, b) in self.acc.iter_mut().zip(o.acc) {
            a.merge(b);
        }
        for (a, b) in self.ids.iter_mut().zip(o.ids) {
            a.extend(b);
        }
        self.keys.extend(o.keys);
        for (a, b) in [
            (&mut self.outside_area, o.outside_area),
            (&mut self.outside_region, o.outside_region),
            (&mut self.zero, o.zero),
            (&mut self.swapped, o.swapped),
            (&mut self.spikes, o.spikes),
            (&mut self.dup_vertices, o.dup_vertices),
        ] {
            a.0 += b.0;
            for f in b.1 {
                push_ex(&mut a.1, f);
            }
        }
        self.unexplained.extend(o.unexplained);
    }
}

/// Hashes the hashes the dedupe sets hold: they are already well mixed, so a
/// multiply-rotate is enough (SipHash was a tenth of a million-feature diagnosis).
#[derive(Clone, Copy, Default)]
struct Mix;

struct MixHasher(u64);

impl std::hash::BuildHasher for Mix {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(0)
    }
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// FNV-1a: hashes of every feature's values, cheap and stable.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

struct Ctx<'a> {
    layer: &'a LoadedLayer,
    cfg: &'a DiagnoseConfig,
    id_like: &'a [bool],
    points: Option<&'a [(f64, f64)]>,
}

impl Ctx<'_> {
    fn visit(&self, pos: u32, part: &mut Partial) -> crate::Result<()> {
        let layer = self.layer;
        let schema = &layer.meta.schema;
        let Some((fid, offset)) = layer.at(pos) else {
            return Ok(());
        };
        let mut all = Fnv::new();
        let mut non_id = Fnv::new();
        part.present.iter_mut().for_each(|p| *p = false);
        let Partial {
            acc, ids, present, ..
        } = part;
        layer.for_each_value(offset, |i, v| {
            let (Some(a), Some(f)) = (acc.get_mut(i), schema.get(i)) else {
                return;
            };
            let id_like = self.id_like.get(i).copied().unwrap_or(false);
            let mut text_buf = [0u8; 32];
            let (text, number): (&str, Option<f64>) = match v {
                RawValue::Str(b) => (std::str::from_utf8(b).unwrap_or(""), None),
                RawValue::I64(n) => (fmt_into(&mut text_buf, n), Some(n as f64)),
                RawValue::U64(n) => (fmt_into(&mut text_buf, n), Some(n as f64)),
                RawValue::F64(x) => ("", Some(x)),
                RawValue::Bool(b) => (if b { "true" } else { "false" }, None),
            };
            let t = text.trim();
            if number.is_none() && t.is_empty() {
                return; // missing
            }
            present[i] = true;
            all.u64(i as u64);
            match number {
                Some(x) => all.u64(x.to_bits()),
                None => all.bytes(t.as_bytes()),
            }
            if !id_like {
                non_id.u64(i as u64);
                match number {
                    Some(x) => non_id.u64(x.to_bits()),
                    None => non_id.bytes(t.as_bytes()),
                }
            } else {
                let mut h = Fnv::new();
                match number {
                    Some(x) => h.u64(x.to_bits()),
                    None => h.bytes(t.as_bytes()),
                }
                ids[i].push((h.0, fid));
            }
            if let Some(x) = number {
                if matches!(f.ftype, FieldType::Int | FieldType::Long | FieldType::Float) {
                    a.numbers.push((x, fid));
                }
                if !a.capped {
                    if a.distinct_numbers.contains(&x.to_bits()) || a.distinct_len() < DISTINCT_CAP
                    {
                        a.distinct_numbers.insert(x.to_bits());
                    } else {
                        a.capped = true;
                    }
                }
                return;
            }
            if f.ftype == FieldType::String {
                a.text_values += 1;
                let b = t.as_bytes();
                if b[0].is_ascii_digit() || b[0] == b'-' || b[0] == b'+' || b[0] == b'.' {
                    if t.replace(',', ".").parse::<f64>().is_ok() {
                        a.numeric_len = if a.numeric_text == 0 {
                            (t.len(), t.len())
                        } else {
                            (a.numeric_len.0.min(t.len()), a.numeric_len.1.max(t.len()))
                        };
                        a.numeric_text += 1;
                        if t.len() > 1 && t.starts_with('0') && !t.starts_with("0.") {
                            a.leading_zero += 1;
                        }
                    }
                    if let Some(df) = date_format(t) {
                        a.date_text += 1;
                        a.date_formats.entry(df).or_insert((0, fid)).0 += 1;
                    }
                }
                // Only text with the bytes of 'Ã'/'Â' or U+FFFD can be mojibake.
                if (b.contains(&0xC3) || b.contains(&0xEF)) && is_mojibake(t) {
                    a.mojibake_count += 1;
                    push_ex(&mut a.mojibake, fid);
                }
            }
            if !a.capped {
                if let Some(e) = a.distinct.get_mut(t) {
                    e.0 += 1;
                } else if a.distinct_len() < DISTINCT_CAP {
                    a.distinct.insert(t.to_string(), (1, fid));
                } else {
                    a.capped = true;
                }
            }
        })?;
        for (a, p) in part.acc.iter_mut().zip(&part.present) {
            if !*p {
                a.missing += 1;
            }
        }
        // Geometry: where it is, its shape, its hash.
        let mut gh = Fnv::new();
        let (lo, hi) = match self.points {
            Some(pts) => {
                let Some(&(x, y)) = pts.get(pos as usize) else {
                    return Ok(());
                };
                gh.u64(1);
                gh.u64(x.to_bits());
                gh.u64(y.to_bits());
                ((x, y), (x, y))
            }
            None => {
                let Some(g) = layer.geometry(offset)? else {
                    part.keys.push((0, all.0, non_id.0, fid));
                    return Ok(());
                };
                let (spike, dup) = vertex_problems(&g);
                if spike {
                    count(&mut part.spikes, fid);
                }
                if dup {
                    count(&mut part.dup_vertices, fid);
                }
                gh.u64(geometry_hash(&g));
                let Some(r) = g.bounding_rect() else {
                    return Ok(());
                };
                ((r.min().x, r.min().y), (r.max().x, r.max().y))
            }
        };
        part.keys.push((gh.0, all.0, non_id.0, fid));
        let inside = |a: &Area| a.contains(lo.0, lo.1) && a.contains(hi.0, hi.1);
        let cfg = self.cfg;
        if !inside(&cfg.region) {
            count(&mut part.outside_region, fid);
            let (mx, my) = ((lo.0 + hi.0) / 2.0, (lo.1 + hi.1) / 2.0);
            if mx.abs() < 1e-3 && my.abs() < 1e-3 {
                count(&mut part.zero, fid);
            } else if cfg.region.contains(my, mx) {
                count(&mut part.swapped, fid);
            } else {
                part.unexplained.push((fid, mx, my));
            }
        } else if !inside(&cfg.area) {
            count(&mut part.outside_area, fid);
        }
        Ok(())
    }
}

/// Formats an integer into `buf` without allocating.
fn fmt_into<T: itoa::Integer>(buf: &mut [u8; 32], n: T) -> &str {
    let mut b = itoa::Buffer::new();
    let s = b.format(n);
    let len = s.len().min(32);
    buf[..len].copy_from_slice(&s.as_bytes()[..len]);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Diagnoses a loaded layer version.
pub fn diagnose(layer: &LoadedLayer, cfg: &DiagnoseConfig) -> crate::Result<Diagnosis> {
    diagnose_with(layer, None, cfg)
}

/// [`diagnose`] with each feature's bbox by position given (a layer loaded with
/// [`LoadedLayer::load_for_scan`], which has no R-tree to read them from).
pub fn diagnose_with(
    layer: &LoadedLayer,
    boxes: Option<&[[f64; 4]]>,
    cfg: &DiagnoseConfig,
) -> crate::Result<Diagnosis> {
    let started = std::time::Instant::now();
    let meta = &layer.meta;
    let report = &meta.report;
    let n = layer.len() as u64;
    let mut b = Builder {
        n: n.max(1),
        checks: Vec::new(),
    };
    let schema = &meta.schema;
    let id_like: Vec<bool> = schema.iter().map(|f| looks_like_id(&f.name)).collect();
    // Point positions straight from the R-tree leaves: a point layer's geometries are
    // never decoded.
    // (A table without geometry has no types: its rows are not points at the origin.)
    let points_only =
        !meta.geometry_types.is_empty() && meta.geometry_types.iter().all(|t| t == "Point");
    let points: Vec<(f64, f64)> = match (points_only, boxes) {
        (false, _) => Vec::new(),
        (true, Some(b)) => b.iter().map(|b| (b[0], b[1])).collect(),
        (true, None) => {
            let mut v = vec![(f64::NAN, f64::NAN); layer.len()];
            for (pos, x, y) in layer.anchors() {
                if let Some(slot) = v.get_mut(pos as usize) {
                    *slot = (x, y);
                }
            }
            v
        }
    };
    let ctx = Ctx {
        layer,
        cfg,
        id_like: &id_like,
        points: points_only.then_some(points.as_slice()),
    };
    // Chunks in position order on every core, merged in order: the examples are the
    // first features, as a sequential pass would give.
    use rayon::prelude::*;
    let chunk = 32_768usize;
    let parts: Vec<crate::Result<Partial>> = (0..layer.len().div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut part = Partial::new(schema.len());
            for pos in (c * chunk)..((c + 1) * chunk).min(layer.len()) {
                ctx.visit(pos as u32, &mut part)?;
            }
            Ok(part)
        })
        .collect();
    let mut all = Partial::new(schema.len());
    for p in parts {
        all.merge(p?);
    }
    let Partial {
        mut acc,
        ids,
        keys,
        outside_area,
        outside_region,
        zero,
        swapped,
        unexplained,
        spikes,
        dup_vertices,
        ..
    } = all;
    geometry::checks(&mut b, meta, n, spikes, dup_vertices);
    location::checks(
        &mut b,
        cfg,
        report,
        zero,
        outside_region,
        swapped,
        unexplained,
        outside_area,
    );
    duplicates::checks(&mut b, keys, ids, &mut acc, &id_like);
    let fields = attributes::checks(&mut b, schema, &mut acc, n);

    // Metadata (the catalogue record).
    metadata::checks(&mut b, meta);

    let (score, grade, reasons) = grade_checks(&mut b.checks, &cfg.thresholds);
    Ok(Diagnosis {
        grade,
        score,
        reasons,
        checks: b.checks,
        fields,
        features: n,
        area: cfg.area.clone(),
        region: cfg.region.clone(),
        thresholds: cfg.thresholds.clone(),
        computed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Orders the checks by cost, marks the blocking ones, and gives the score, grade
/// and the codes that decided it.
fn grade_checks(checks: &mut [Check], t: &Thresholds) -> (u32, Grade, Vec<String>) {
    for c in checks.iter_mut() {
        c.blocking = blocking_code(&c.code) && c.share >= t.blocking_share;
    }
    checks.sort_by(|x, y| {
        y.penalty
            .cmp(&x.penalty)
            .then(y.severity.cmp(&x.severity))
            .then(x.code.cmp(&y.code))
    });
    let lost: u32 = checks.iter().map(|c| c.penalty).sum();
    let score = 100u32.saturating_sub(lost);
    let blocking: Vec<String> = checks
        .iter()
        .filter(|c| c.blocking)
        .map(|c| c.code.clone())
        .collect();
    let grade = if !blocking.is_empty() || score < t.not_usable {
        Grade::NotUsable
    } else if score < t.usable || checks.iter().any(|c| c.severity == Severity::Error) {
        Grade::UsableWithCaveats
    } else {
        Grade::Usable
    };
    let reasons = if !blocking.is_empty() {
        blocking
    } else {
        checks
            .iter()
            .filter(|c| c.penalty > 0)
            .take(5)
            .map(|c| c.code.clone())
            .collect()
    };
    (score, grade, reasons)
}

impl Diagnosis {
    /// The metadata checks again, after the catalogue record changed (the feature
    /// checks stand: the features did not change).
    pub fn refresh_metadata(&mut self, meta: &LayerMeta) {
        self.checks.retain(|c| c.category != "metadata");
        let mut b = Builder {
            n: self.features.max(1),
            checks: std::mem::take(&mut self.checks),
        };
        metadata::checks(&mut b, meta);
        self.checks = b.checks;
        let (score, grade, reasons) = grade_checks(&mut self.checks, &self.thresholds);
        (self.score, self.grade, self.reasons) = (score, grade, reasons);
    }

    /// This diagnosis as of `now`: a layer whose last version is older than its
    /// declared update frequency (plus a tenth of it) is stale. Computed when a report
    /// is read, since time passes after the diagnosis was stored.
    pub fn as_of(&self, meta: &LayerMeta, now: chrono::DateTime<chrono::Utc>) -> Diagnosis {
        let mut d = self.clone();
        let Some(freq) = meta.update_frequency.as_deref() else {
            return d;
        };
        let (Some(days), Ok(updated)) = (
            crate::store::frequency_days(freq),
            chrono::DateTime::parse_from_rfc3339(&meta.created_at),
        ) else {
            return d;
        };
        let age = (now - updated.with_timezone(&chrono::Utc)).num_seconds() as f64 / 86_400.0;
        if age <= days * 1.1 {
            return d;
        }
        let mut b = Builder {
            n: d.features.max(1),
            checks: std::mem::take(&mut d.checks),
        };
        b.add(
            "metadata.stale",
            Severity::Warning,
            b.n,
            Vec::new(),
            None,
            format!("desactualizada: la última versión es de hace {age:.0} días y su frecuencia declarada es {freq} ({days:.0} días)"),
            format!("stale: the last version is {age:.0} days old and its declared update frequency is {freq} ({days:.0} days)"),
            Some("publique una versión nueva o corrija la frecuencia (datahub layer set --update-frequency)".into()),
        );
        d.checks = b.checks;
        let (score, grade, reasons) = grade_checks(&mut d.checks, &d.thresholds);
        (d.score, d.grade, d.reasons) = (score, grade, reasons);
        d
    }
}

/// First and third quartiles (nearest rank), by selection rather than a full sort.
fn quartiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let at = |v: &mut [f64], p: f64| {
        let k = ((v.len() - 1) as f64 * p).round() as usize;
        *v.select_nth_unstable_by(k, f64::total_cmp).1
    };
    (at(v, 0.25), at(v, 0.75))
}

fn push_ex(v: &mut Vec<i64>, fid: i64) {
    if v.len() < MAX_EXAMPLES {
        v.push(fid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_checks() {
        assert!(is_mojibake("NiÃ±o Artillero"));
        assert!(is_mojibake("TecnolÃ³gico"));
        assert!(is_mojibake("Se\u{FFFD}or"));
        assert!(!is_mojibake("Niño Artillero"));
        assert!(!is_mojibake("Ãlvaro")); // a real capital A-tilde followed by a letter
        assert_eq!(
            crate::text::compact("MONTERREY"),
            crate::text::compact("Monterrey")
        );
        assert_eq!(
            crate::text::compact("San Nicolás"),
            crate::text::compact("san nicolas")
        );
        assert!(abbreviates("Mty.", "Monterrey"));
        assert!(!abbreviates("Gpe.", "Monterrey"));
        assert!(abbreviates("Apod.", "Apodaca"));
        assert!(!abbreviates("Apodac", "Apodaca"));
        assert!(abbreviates("Gpe.", "Guadalupe"));
        assert_eq!(date_format("2024-05-01"), Some("AAAA-MM-DD"));
        assert_eq!(date_format("01/05/2024"), Some("DD/MM/AAAA"));
        assert_eq!(date_format("mayo"), None);
        assert!(looks_like_id("folio") && looks_like_id("CVE_COL") && !looks_like_id("nombre"));
    }

    #[test]
    fn projected_coordinates_suggest_their_crs() {
        let r = DiagnoseConfig::default().region;
        // Monterrey's centre in EPSG:6372 and in UTM 14N.
        let c = crs_candidates(2_668_856.0, 1_514_447.0, &r);
        assert_eq!(c.first().map(|x| x.0), Some(6372), "{c:?}");
        let u = crs_candidates(368_527.0, 2_839_790.0, &r);
        assert!(u.iter().any(|x| x.0 == 32614), "{u:?}");
        assert!(crs_candidates(-100.3, 25.7, &r).is_empty());
    }

    #[test]
    fn spikes_and_repeated_vertices() {
        let spike = geo::Geometry::LineString(geo::LineString::from(vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (0.0, 0.00001),
            (0.0, 1.0),
        ]));
        assert_eq!(vertex_problems(&spike), (true, false));
        let dup = geo::Geometry::LineString(geo::LineString::from(vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (1.0, 0.0),
            (1.0, 1.0),
        ]));
        assert_eq!(vertex_problems(&dup), (false, true));
    }
}
