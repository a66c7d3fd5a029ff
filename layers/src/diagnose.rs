//! The data-quality diagnosis of a layer version: "is it usable for decisions, and if
//! not, why?" in words a ministry can act on (Spanish first, English beside).
//!
//! Computed at ingest from the stored features and the ingest report, stored in the
//! version's `meta.json`, recomputable (`datahub diagnose --recompute`). Each check gives
//! a count, its share of the layer, up to [`MAX_EXAMPLES`] feature ids, a message in
//! Spanish and English, a suggested fix where there is one, and the points it costs.
//! The score is 100 minus those points; the grade follows documented thresholds
//! ([`Thresholds`]).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use geo::{BoundingRect, Coord, CoordsIter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fgb::FieldType;
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
        "location.outside_area" => 15,
        "attributes.incomplete" => 15,
        "geometry.invalid_repaired" => 10,
        "geometry.mixed_types" => 10,
        "attributes.mixed_date_formats" => 10,
        "attributes.inconsistent_spelling" => 10,
        "attributes.out_of_range" => 10,
        "geometry.spikes" => 5,
        "attributes.numbers_as_text" | "attributes.dates_as_text" => 5,
        "attributes.empty_field" => 5,
        "metadata.title" | "metadata.description" | "metadata.license" | "metadata.contact" => 4,
        "metadata.update_frequency" => 3,
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
    capped: bool,
    numbers: Vec<(f64, i64)>,
    numeric_text: u64,
    /// Numeric-looking values with a leading zero ("037"): codes, rightly text.
    leading_zero: u64,
    date_text: u64,
    date_formats: HashMap<&'static str, (u64, i64)>,
    text_values: u64,
    mojibake: Vec<i64>,
    mojibake_count: u64,
    /// Non-null values seen per value (for id uniqueness): hash -> first feature.
    seen_ids: HashMap<u64, i64>,
    dup_ids: Vec<i64>,
    dup_id_count: u64,
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
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            'á' | 'à' | 'ä' | 'â' => Some('a'),
            'é' | 'è' | 'ë' | 'ê' => Some('e'),
            'í' | 'ì' | 'ï' | 'î' => Some('i'),
            'ó' | 'ò' | 'ö' | 'ô' => Some('o'),
            'ú' | 'ù' | 'ü' | 'û' => Some('u'),
            'ñ' => Some('n'),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether `short` abbreviates `long` ("Mty." → "Monterrey", "Apod." → "Apodaca"):
/// same first letter, its letters in order within the long form, at most 60% as long.
fn abbreviates(short: &str, long: &str) -> bool {
    let (s, l) = (fold(short), fold(long));
    if s.is_empty() || s.len() * 5 > l.len() * 3 || s.chars().next() != l.chars().next() {
        return false;
    }
    let mut it = l.chars();
    s.chars().all(|c| it.any(|d| d == c))
}

fn hash_of(x: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

fn geometry_hash(g: &geo::Geometry<f64>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::mem::discriminant(g).hash(&mut h);
    for c in g.coords_iter() {
        c.x.to_bits().hash(&mut h);
        c.y.to_bits().hash(&mut h);
    }
    h.finish()
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
    let mut out = Vec::new();
    for &(code, name) in CANDIDATE_CRS {
        let Ok(p) = proj::Proj::new_known_crs(&format!("EPSG:{code}"), "EPSG:4326", None) else {
            continue;
        };
        // The proj crate normalises axis order for visualisation: (lon, lat).
        if let Ok((lon, lat)) = p.convert((x, y)) {
            if region.contains(lon, lat) {
                out.push((code, name));
            }
        }
    }
    out
}

/// Diagnoses a loaded layer version.
pub fn diagnose(layer: &LoadedLayer, cfg: &DiagnoseConfig) -> crate::Result<Diagnosis> {
    let started = std::time::Instant::now();
    let meta = &layer.meta;
    let report = &meta.report;
    let n = layer.len() as u64;
    let mut b = Builder {
        n: n.max(1),
        checks: Vec::new(),
    };
    let schema = &meta.schema;
    let mut acc: Vec<FieldAcc> = schema.iter().map(|_| FieldAcc::default()).collect();
    let id_like: Vec<bool> = schema.iter().map(|f| looks_like_id(&f.name)).collect();

    let mut outside_area = (0u64, Vec::new());
    let mut outside_region = (0u64, Vec::new());
    let mut zero = (0u64, Vec::new());
    let mut swapped = (0u64, Vec::new());
    let mut unexplained: Vec<(i64, f64, f64)> = Vec::new();
    let mut spikes = (0u64, Vec::new());
    let mut dup_vertices = (0u64, Vec::new());
    // (geometry hash, all-attributes hash, non-id attributes hash) per feature.
    let mut exact: HashMap<(u64, u64), i64> = HashMap::new();
    let mut record: HashMap<(u64, u64), i64> = HashMap::new();
    let mut exact_dups = (0u64, Vec::new());
    let mut record_dups = (0u64, Vec::new());

    for pos in 0..layer.len() as u32 {
        let Some((fid, offset)) = layer.at(pos) else {
            continue;
        };
        let (g, props) = layer.geometry_and_properties(offset)?;
        let mut values: Vec<Option<&Value>> = vec![None; schema.len()];
        for (i, v) in &props {
            if let Some(s) = values.get_mut(*i) {
                *s = Some(v);
            }
        }
        // Attributes.
        for (i, (f, a)) in schema.iter().zip(acc.iter_mut()).enumerate() {
            let v = values[i];
            let text = match v {
                None | Some(Value::Null) => {
                    a.missing += 1;
                    continue;
                }
                Some(Value::String(s)) if s.trim().is_empty() => {
                    a.missing += 1;
                    continue;
                }
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if id_like[i] {
                let h = hash_of(&text);
                if let Some(&_first) = a.seen_ids.get(&h) {
                    a.dup_id_count += 1;
                    if a.dup_ids.len() < MAX_EXAMPLES {
                        a.dup_ids.push(fid);
                    }
                } else {
                    a.seen_ids.insert(h, fid);
                }
            }
            match f.ftype {
                FieldType::Int | FieldType::Long | FieldType::Float => {
                    if let Some(x) = v.and_then(Value::as_f64) {
                        a.numbers.push((x, fid));
                    }
                }
                FieldType::String => {
                    a.text_values += 1;
                    let t = text.trim();
                    if t.replace(',', ".").parse::<f64>().is_ok() {
                        a.numeric_text += 1;
                        if t.len() > 1 && t.starts_with('0') && !t.starts_with("0.") {
                            a.leading_zero += 1;
                        }
                    }
                    if let Some(df) = date_format(t) {
                        a.date_text += 1;
                        a.date_formats.entry(df).or_insert((0, fid)).0 += 1;
                    }
                    if is_mojibake(t) {
                        a.mojibake_count += 1;
                        if a.mojibake.len() < MAX_EXAMPLES {
                            a.mojibake.push(fid);
                        }
                    }
                }
                _ => {}
            }
            if !a.capped {
                if let Some(e) = a.distinct.get_mut(&text) {
                    e.0 += 1;
                } else if a.distinct.len() < DISTINCT_CAP {
                    a.distinct.insert(text, (1, fid));
                } else {
                    a.capped = true;
                }
            }
        }
        let Some(g) = g else {
            continue;
        };
        // Location.
        if let Some(r) = g.bounding_rect() {
            let (c, d) = (r.min(), r.max());
            let inside = |a: &Area| a.contains(c.x, c.y) && a.contains(d.x, d.y);
            if !inside(&cfg.region) {
                outside_region.0 += 1;
                push_ex(&mut outside_region.1, fid);
                let (mx, my) = ((c.x + d.x) / 2.0, (c.y + d.y) / 2.0);
                if mx.abs() < 1e-3 && my.abs() < 1e-3 {
                    zero.0 += 1;
                    push_ex(&mut zero.1, fid);
                } else if cfg.region.contains(my, mx) {
                    swapped.0 += 1;
                    push_ex(&mut swapped.1, fid);
                } else {
                    unexplained.push((fid, mx, my));
                }
            } else if !inside(&cfg.area) {
                outside_area.0 += 1;
                push_ex(&mut outside_area.1, fid);
            }
        }
        let (spike, dup) = vertex_problems(&g);
        if spike {
            spikes.0 += 1;
            push_ex(&mut spikes.1, fid);
        }
        if dup {
            dup_vertices.0 += 1;
            push_ex(&mut dup_vertices.1, fid);
        }
        // Duplicates: the same geometry with the same attributes (all of them, or all
        // but the identifiers: the same record entered twice under two ids).
        let gh = geometry_hash(&g);
        let all = hash_of(
            props
                .iter()
                .map(|(i, v)| (*i, v.to_string()))
                .collect::<Vec<_>>(),
        );
        let non_id = hash_of(
            props
                .iter()
                .filter(|(i, _)| !id_like.get(*i).copied().unwrap_or(false))
                .map(|(i, v)| (*i, v.to_string()))
                .collect::<Vec<_>>(),
        );
        if exact.insert((gh, all), fid).is_some() {
            exact_dups.0 += 1;
            push_ex(&mut exact_dups.1, fid);
        } else if record.contains_key(&(gh, non_id)) && id_like.iter().any(|x| *x) {
            record_dups.0 += 1;
            push_ex(&mut record_dups.1, fid);
        }
        record.entry((gh, non_id)).or_insert(fid);
    }

    // Geometry, from the ingest report and the stored features.
    let rejected = report.features_rejected;
    if rejected > 0 {
        let kinds: Vec<String> = report
            .problems
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "empty_geometry" | "transform_failed" | "bad_coordinates"
                )
            })
            .map(|(k, p)| format!("{k}: {}", p.count))
            .collect();
        let ex: Vec<i64> = report
            .problems
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "empty_geometry" | "transform_failed" | "bad_coordinates"
                )
            })
            .flat_map(|(_, p)| p.examples.iter().map(|e| e.feature))
            .collect();
        let read = report.features_read.max(1);
        let mut bb = Builder {
            n: read,
            checks: Vec::new(),
        };
        bb.add(
            "geometry.rejected",
            Severity::Error,
            rejected,
            ex,
            None,
            format!("{rejected} de {read} elementos de la fuente no se guardaron (sin geometría o coordenadas inválidas: {}); los ejemplos son números de elemento de la fuente", kinds.join(", ")),
            format!("{rejected} of {read} source features were not stored (no geometry or invalid coordinates: {}); examples are source feature numbers", kinds.join(", ")),
            Some("corrija o complete las coordenadas en la fuente / fix or fill in the coordinates at the source".into()),
        );
        b.checks.extend(bb.checks);
    }
    let from_report = |code: &str| report.problems.get(code);
    if let Some(p) = from_report("invalid_geometry_kept") {
        b.add(
            "geometry.invalid_kept",
            Severity::Error,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} geometrías inválidas que no se pudieron reparar con seguridad (autointersección, anillos mal formados)", p.count),
            format!("{} invalid geometries that could not be repaired safely (self-intersection, malformed rings)", p.count),
            Some("corrija las geometrías en el SIG de origen (QGIS: Vector ▸ Herramientas de geometría ▸ Comprobar validez)".into()),
        );
    }
    if let Some(p) = from_report("invalid_geometry_repaired") {
        let detail = p
            .examples
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default();
        b.add(
            "geometry.invalid_repaired",
            Severity::Warning,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} geometrías inválidas (p. ej. {detail}) reparadas automáticamente; revise que la reparación conserva lo que representan", p.count),
            format!("{} invalid geometries (e.g. {detail}) repaired automatically; check the repair keeps what they represent", p.count),
            None,
        );
    }
    for (code, es, en) in [
        (
            "z_dropped",
            "valores Z (altura) descartados: la capa se guarda en 2D",
            "Z (height) values dropped: the layer is stored in 2D",
        ),
        (
            "m_dropped",
            "valores M (medida) descartados",
            "M (measure) values dropped",
        ),
    ] {
        if let Some(p) = from_report(code) {
            b.add(
                &format!("geometry.{code}"),
                Severity::Info,
                p.count,
                p.examples.iter().map(|e| e.feature).collect(),
                None,
                format!("{}: {es}", p.count),
                format!("{}: {en}", p.count),
                None,
            );
        }
    }
    let families: HashSet<&str> = meta
        .geometry_types
        .iter()
        .map(|t| t.trim_start_matches("Multi"))
        .collect();
    if families.len() > 1 {
        let mut f: Vec<&str> = families.into_iter().collect();
        f.sort_unstable();
        b.add(
            "geometry.mixed_types",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            format!(
                "la capa mezcla tipos de geometría ({}): muchos SIG esperan un solo tipo por capa",
                f.join(", ")
            ),
            format!(
                "the layer mixes geometry types ({}): many GIS expect one type per layer",
                f.join(", ")
            ),
            Some("separe la fuente en una capa por tipo de geometría".into()),
        );
    }
    b.add(
        "geometry.spikes",
        Severity::Warning,
        spikes.0,
        spikes.1,
        None,
        format!(
            "{} geometrías con picos (el trazo regresa sobre sí mismo)",
            spikes.0
        ),
        format!(
            "{} geometries with spikes (the outline turns back on itself)",
            spikes.0
        ),
        None,
    );
    b.add(
        "geometry.duplicate_vertices",
        Severity::Warning,
        dup_vertices.0,
        dup_vertices.1,
        None,
        format!(
            "{} geometrías con vértices consecutivos repetidos",
            dup_vertices.0
        ),
        format!(
            "{} geometries with repeated consecutive vertices",
            dup_vertices.0
        ),
        None,
    );

    // Location.
    let region = &cfg.region.name;
    let area = &cfg.area.name;
    if zero.0 > 0 {
        b.add(
            "location.zero_zero",
            Severity::Error,
            zero.0,
            zero.1,
            None,
            format!(
                "{} elementos en (0, 0): coordenadas de relleno, no ubicaciones reales",
                zero.0
            ),
            format!(
                "{} features at (0, 0): placeholder coordinates, not real locations",
                zero.0
            ),
            Some("capture las coordenadas faltantes o deje la geometría vacía".into()),
        );
    }
    // Rejected at ingest, with the reason the coordinates gave.
    if let Some(p) = report.problems.get("swapped_lat_lon") {
        swapped.0 += p.count;
        for e in &p.examples {
            push_ex(&mut swapped.1, e.feature);
        }
    }
    if let Some(p) = report.problems.get("projected_as_degrees") {
        let detail = p
            .examples
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default();
        let code = detail
            .split("EPSG:")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("n")
            .to_string();
        b.add(
            "location.projected_as_degrees",
            Severity::Error,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} elementos traen metros de un sistema proyectado donde se esperaban grados (p. ej. {detail}); no se guardaron", p.count),
            format!("{} features carry metres of a projected CRS where degrees were expected (e.g. {detail}); they were not stored", p.count),
            Some(format!("vuelva a cargar con --crs EPSG:{code}")),
        );
    }
    if swapped.0 > 0 {
        b.add(
            "location.swapped_lat_lon",
            Severity::Error,
            swapped.0,
            swapped.1,
            None,
            format!("{} elementos con latitud y longitud intercambiadas (intercambiadas caen en {region})", swapped.0),
            format!("{} features with latitude and longitude swapped (swapped back they fall in {region})", swapped.0),
            Some("intercambie las columnas de longitud y latitud (x = longitud, y = latitud) / swap the lon and lat columns".into()),
        );
    }
    let mut crs_fix = None;
    if let Some(&(_, x, y)) = unexplained.first() {
        // Stored lon/lat that came from a projected source declared wrongly cannot be
        // undone here, but a layer in the wrong place says so.
        let c = crs_candidates(x, y, &cfg.region);
        crs_fix = c
            .first()
            .map(|(code, name)| format!("--crs EPSG:{code} ({name})"));
    }
    b.add(
        "location.outside_region",
        Severity::Error,
        outside_region.0,
        outside_region.1,
        None,
        format!(
            "{} elementos fuera de {region}{}",
            outside_region.0,
            if unexplained.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} sin causa evidente: ¿el sistema de coordenadas declarado es el correcto?",
                    unexplained.len()
                )
            }
        ),
        format!(
            "{} features outside {region}{}",
            outside_region.0,
            if unexplained.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} without an obvious cause: is the declared coordinate system right?",
                    unexplained.len()
                )
            }
        ),
        crs_fix.map(|c| format!("vuelva a cargar con {c}")),
    );
    b.add(
        "location.outside_area",
        Severity::Warning,
        outside_area.0,
        outside_area.1,
        None,
        format!(
            "{} elementos fuera de {area} (dentro de {region})",
            outside_area.0
        ),
        format!(
            "{} features outside {area} (inside {region})",
            outside_area.0
        ),
        None,
    );

    // Duplicates.
    b.add(
        "duplicates.exact",
        Severity::Error,
        exact_dups.0,
        exact_dups.1,
        None,
        format!(
            "{} elementos duplicados exactos (misma geometría y mismos atributos): contarían doble",
            exact_dups.0
        ),
        format!(
            "{} exact duplicate features (same geometry and attributes): they would count twice",
            exact_dups.0
        ),
        Some("elimine los registros repetidos en la fuente".into()),
    );
    b.add(
        "duplicates.same_record",
        Severity::Warning,
        record_dups.0,
        record_dups.1,
        None,
        format!("{} elementos repiten la geometría y los atributos de otro con distinto identificador: probablemente el mismo registro capturado dos veces", record_dups.0),
        format!("{} features repeat another's geometry and attributes under a different id: probably the same record entered twice", record_dups.0),
        None,
    );

    // Attributes.
    let mut fields = Vec::new();
    let mut incomplete: Vec<(String, f64)> = Vec::new();
    for (f, a) in schema.iter().zip(acc.iter_mut()) {
        let present = n - a.missing.min(n);
        let missing_share = if n == 0 {
            0.0
        } else {
            a.missing as f64 / n as f64
        };
        fields.push(FieldProfile {
            name: f.name.clone(),
            ftype: f.ftype.json_type().into(),
            missing_share,
            distinct: a.distinct.len() as u64,
            distinct_capped: a.capped,
        });
        let name = f.name.as_str();
        if n > 0 && present == 0 {
            b.add(
                "attributes.empty_field",
                Severity::Warning,
                n,
                Vec::new(),
                Some(name),
                format!("el campo «{name}» está vacío en todos los elementos"),
                format!("field '{name}' is empty in every feature"),
                None,
            );
            continue;
        }
        if missing_share >= 0.05 {
            incomplete.push((name.to_string(), missing_share));
        }
        if present >= 2 && a.distinct.len() == 1 && !a.capped {
            b.add(
                "attributes.constant_field",
                Severity::Info,
                present,
                Vec::new(),
                Some(name),
                format!("el campo «{name}» tiene el mismo valor en todos los elementos"),
                format!("field '{name}' has the same value in every feature"),
                None,
            );
        }
        if a.dup_id_count > 0 {
            b.add(
                "attributes.non_unique_id",
                Severity::Error,
                a.dup_id_count,
                std::mem::take(&mut a.dup_ids),
                Some(name),
                format!(
                    "el identificador «{name}» se repite en {} elementos",
                    a.dup_id_count
                ),
                format!("identifier '{name}' repeats in {} features", a.dup_id_count),
                Some("asigne un identificador único a cada registro".into()),
            );
        }
        if a.mojibake_count > 0 {
            b.add(
                "attributes.mojibake",
                Severity::Error,
                a.mojibake_count,
                std::mem::take(&mut a.mojibake),
                Some(name),
                format!("«{name}»: {} textos con caracteres dañados (p. ej. «Ã±» en lugar de «ñ»): la codificación se leyó mal", a.mojibake_count),
                format!("'{name}': {} texts with broken characters (e.g. 'Ã±' for 'ñ'): the encoding was read wrongly", a.mojibake_count),
                Some("exporte la fuente en UTF-8, o declare su codificación (.cpg del Shapefile)".into()),
            );
        }
        if f.ftype == FieldType::String && a.text_values >= 5 {
            let tv = a.text_values as f64;
            if a.numeric_text as f64 >= 0.9 * tv && a.leading_zero == 0 {
                b.add(
                    "attributes.numbers_as_text",
                    Severity::Warning,
                    a.numeric_text,
                    Vec::new(),
                    Some(name),
                    format!("«{name}» guarda números como texto: no se puede sumar ni promediar"),
                    format!("'{name}' stores numbers as text: it cannot be summed or averaged"),
                    Some(format!("defina «{name}» como campo numérico en la fuente")),
                );
            } else if a.date_text as f64 >= 0.9 * tv {
                b.add(
                    "attributes.dates_as_text",
                    Severity::Warning,
                    a.date_text,
                    Vec::new(),
                    Some(name),
                    format!("«{name}» guarda fechas como texto"),
                    format!("'{name}' stores dates as text"),
                    Some(format!("defina «{name}» como campo de fecha (AAAA-MM-DD)")),
                );
            }
            if a.date_formats.len() > 1 {
                let mut fm: Vec<(&str, u64)> =
                    a.date_formats.iter().map(|(k, v)| (*k, v.0)).collect();
                fm.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
                let minority: u64 = fm.iter().skip(1).map(|x| x.1).sum();
                let ex: Vec<i64> = a
                    .date_formats
                    .iter()
                    .filter(|(k, _)| **k != fm[0].0)
                    .map(|(_, v)| v.1)
                    .collect();
                let list = fm
                    .iter()
                    .map(|(k, c)| format!("{k}: {c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                b.add(
                    "attributes.mixed_date_formats",
                    Severity::Warning,
                    minority,
                    ex,
                    Some(name),
                    format!("«{name}» mezcla formatos de fecha ({list}): 05/01 puede ser 5 de enero o 1 de mayo"),
                    format!("'{name}' mixes date formats ({list}): 05/01 may be 5 January or 1 May"),
                    Some("use un solo formato, AAAA-MM-DD".into()),
                );
            }
            // Categories written several ways.
            if !a.capped && a.distinct.len() <= 200 && a.distinct.len() < a.text_values as usize {
                let mut groups: HashMap<String, Vec<(&String, u64, i64)>> = HashMap::new();
                for (v, (c, ex)) in &a.distinct {
                    groups.entry(fold(v)).or_default().push((v, *c, *ex));
                }
                let mut variants: Vec<Vec<(&String, u64, i64)>> = groups.into_values().collect();
                // Abbreviations ("Mty.") join the group of the long form they shorten.
                variants.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|x| x.1).sum::<u64>()));
                let mut merged: Vec<Vec<(&String, u64, i64)>> = Vec::new();
                for g in variants {
                    let short = g
                        .iter()
                        .all(|(v, _, _)| v.chars().count() <= 5 || v.ends_with('.'));
                    if short {
                        if let Some(target) = merged.iter_mut().find(|m| {
                            m.iter()
                                .any(|(l, _, _)| g.iter().any(|(s, _, _)| abbreviates(s, l)))
                        }) {
                            target.extend(g);
                            continue;
                        }
                    }
                    merged.push(g);
                }
                let mut count = 0;
                let mut ex = Vec::new();
                let mut shown = Vec::new();
                for g in merged.iter_mut().filter(|g| g.len() > 1) {
                    g.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
                    count += g.iter().skip(1).map(|x| x.1).sum::<u64>();
                    ex.extend(g.iter().skip(1).map(|x| x.2));
                    shown.push(
                        g.iter()
                            .map(|x| format!("«{}»", x.0))
                            .collect::<Vec<_>>()
                            .join(" / "),
                    );
                }
                shown.sort();
                b.add(
                    "attributes.inconsistent_spelling",
                    Severity::Warning,
                    count,
                    ex,
                    Some(name),
                    format!(
                        "«{name}» escribe la misma categoría de varias formas: {}",
                        shown.join("; ")
                    ),
                    format!(
                        "'{name}' writes the same category several ways: {}",
                        shown.join("; ")
                    ),
                    Some("unifique la escritura (un catálogo de valores)".into()),
                );
            }
        }
        if a.numbers.len() >= 20 {
            let mut xs: Vec<f64> = a.numbers.iter().map(|x| x.0).collect();
            xs.sort_by(f64::total_cmp);
            let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
            let (q1, q3) = (q(0.25), q(0.75));
            let iqr = q3 - q1;
            // Fill values that stand for "no data", and negatives in a field that is
            // otherwise never negative.
            let sentinel = |x: f64| {
                x.fract() == 0.0
                    && matches!(
                        x as i64,
                        -99 | -999 | -9999 | -99999 | 9999 | 99999 | 999999
                    )
            };
            let negatives = a.numbers.iter().filter(|(x, _)| *x < 0.0).count();
            let lone_negative =
                |x: f64| x < 0.0 && (negatives as f64) < 0.01 * a.numbers.len() as f64;
            // Quantities (populations, amounts) span orders of magnitude: positive
            // values are compared in log10, 3 interquartile ranges beyond the middle
            // half (a factor of ~30–1000 past the usual values); fields with many
            // negatives (temperatures, levels) in linear units, 10 ranges beyond.
            let signed = negatives as f64 >= 0.01 * a.numbers.len() as f64;
            let mut logs: Vec<f64> = a
                .numbers
                .iter()
                .filter(|x| x.0 > 0.0 && !sentinel(x.0))
                .map(|x| x.0.log10())
                .collect();
            logs.sort_by(f64::total_cmp);
            let lq = |p: f64| {
                logs.get(((logs.len().max(1) - 1) as f64 * p).round() as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            let (l1, l3) = (lq(0.25), lq(0.75));
            let liqr = l3 - l1;
            let far = |x: f64| {
                if signed {
                    iqr > 0.0 && (x < q1 - 10.0 * iqr || x > q3 + 10.0 * iqr)
                } else {
                    x > 0.0
                        && logs.len() >= 20
                        && liqr > 0.0
                        && (x.log10() < l1 - 3.0 * liqr || x.log10() > l3 + 3.0 * liqr)
                }
            };
            let out: Vec<&(f64, i64)> = a
                .numbers
                .iter()
                .filter(|(x, _)| far(*x) || sentinel(*x) || lone_negative(*x))
                .collect();
            b.add(
                "attributes.out_of_range",
                Severity::Warning,
                out.len() as u64,
                out.iter().map(|x| x.1).collect(),
                Some(name),
                format!("«{name}»: {} valores fuera del rango plausible (muy lejos de los valores usuales, valores de relleno como -99 o -9999, o negativos aislados)", out.len()),
                format!("'{name}': {} values outside the plausible range (far from the usual values, fill values like -99 or -9999, or lone negatives)", out.len()),
                None,
            );
        }
    }
    if !incomplete.is_empty() {
        let mean: f64 = incomplete.iter().map(|x| x.1).sum::<f64>() / schema.len().max(1) as f64;
        let list = incomplete
            .iter()
            .map(|(f, s)| format!("{f} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        b.add(
            "attributes.incomplete",
            Severity::Warning,
            ((mean * n as f64).round() as u64).max(1),
            Vec::new(),
            None,
            format!("campos incompletos (vacíos o nulos): {list}"),
            format!("incomplete fields (empty or null): {list}"),
            None,
        );
    }

    // Metadata (the catalogue record).
    metadata_checks(&mut b, meta);

    // Score and grade.
    for c in &mut b.checks {
        c.blocking = blocking_code(&c.code) && c.share >= cfg.thresholds.blocking_share;
    }
    b.checks.sort_by(|x, y| {
        y.penalty
            .cmp(&x.penalty)
            .then(y.severity.cmp(&x.severity))
            .then(x.code.cmp(&y.code))
    });
    let lost: u32 = b.checks.iter().map(|c| c.penalty).sum();
    let score = 100u32.saturating_sub(lost);
    let t = &cfg.thresholds;
    let blocking: Vec<String> = b
        .checks
        .iter()
        .filter(|c| c.blocking)
        .map(|c| c.code.clone())
        .collect();
    let grade = if !blocking.is_empty() || score < t.not_usable {
        Grade::NotUsable
    } else if score < t.usable || b.checks.iter().any(|c| c.severity == Severity::Error) {
        Grade::UsableWithCaveats
    } else {
        Grade::Usable
    };
    let reasons = if !blocking.is_empty() {
        blocking
    } else {
        b.checks
            .iter()
            .filter(|c| c.penalty > 0)
            .take(5)
            .map(|c| c.code.clone())
            .collect()
    };
    Ok(Diagnosis {
        grade,
        score,
        reasons,
        checks: b.checks,
        fields,
        features: n,
        area: cfg.area.clone(),
        region: cfg.region.clone(),
        computed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn push_ex(v: &mut Vec<i64>, fid: i64) {
    if v.len() < MAX_EXAMPLES {
        v.push(fid);
    }
}

/// What the catalogue record lacks. Licence, contact and update frequency have no
/// place in the record yet (the catalogue issue adds them), so they are reported
/// missing: that is the truth about the layer today.
fn metadata_checks(b: &mut Builder, meta: &LayerMeta) {
    let n = b.n;
    if meta.title.trim().is_empty() || meta.title == meta.id {
        b.add(
            "metadata.title",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin título descriptivo (el título es el identificador)".into(),
            "no descriptive title (the title is the id)".into(),
            Some("--title \"…\"".into()),
        );
    }
    if meta.description.trim().is_empty() {
        b.add(
            "metadata.description",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin descripción: qué contiene, de dónde viene, cómo se levantó".into(),
            "no description: what it holds, where it comes from, how it was collected".into(),
            Some("--description \"…\"".into()),
        );
    }
    for (code, es, en) in [
        (
            "metadata.license",
            "sin licencia de uso declarada",
            "no licence declared",
        ),
        (
            "metadata.contact",
            "sin contacto responsable (nombre y correo)",
            "no contact (name and email)",
        ),
        (
            "metadata.update_frequency",
            "sin frecuencia de actualización declarada",
            "no update frequency declared",
        ),
    ] {
        b.add(
            code,
            Severity::Warning,
            n,
            Vec::new(),
            None,
            es.into(),
            en.into(),
            None,
        );
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
        assert_eq!(fold("MONTERREY"), fold("Monterrey"));
        assert_eq!(fold("San Nicolás"), fold("san nicolas"));
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
