//! Tables placed by key: each row's key matched to a field of a published zone layer
//! (municipalities, AGEBs, colonias), and the row takes that zone's polygon (or a
//! point on its surface).
//!
//! Keys are compared the way Mexican data is written: INEGI's geostatistical codes
//! (CVE_ENT 2 digits, CVE_MUN 3, CVE_LOC 4, AGEB 4, manzana 3, CVEGEO their
//! concatenation) are zero-padded whether the table stores them as numbers or text,
//! and composite keys are built from the parts; names are compared with
//! [`crate::text::name_key`] (case, accents, punctuation and abbreviations do not
//! matter), with an optional crosswalk for the rest. The report says what matched,
//! what did not (with the closest zone names), duplicate keys and zones with no row.

use std::collections::{BTreeMap, HashMap};

use geo::InteriorPoint;
use serde::{Deserialize, Serialize};

use super::{Cell, Column};
use crate::{Error, Result};

/// `--join LAYER:FIELD [--key COL[+COL…]] [--as points] [--crosswalk FILE]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// The zone layer's id.
    pub layer: String,
    /// The zone layer's field the key is matched to.
    pub field: String,
    /// The table's key column(s); several are concatenated (composite INEGI keys).
    /// Empty: found from the names and values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// A point on each zone's surface instead of its polygon.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_points: bool,
    /// Table value → zone value, for names no rule can match ("Quertaro" →
    /// "Queretaro de Arteaga").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub crosswalk: BTreeMap<String, String>,
}

impl JoinSpec {
    /// Parses `LAYER:FIELD`.
    pub fn parse(s: &str) -> Result<JoinSpec> {
        let (layer, field) = s.split_once(':').ok_or_else(|| {
            Error::bad(format!(
                "--join '{s}' must be ZONE_LAYER:ZONE_FIELD, e.g. --join municipios:CVEGEO"
            ))
        })?;
        if layer.trim().is_empty() || field.trim().is_empty() {
            return Err(Error::bad(format!(
                "--join '{s}' must be ZONE_LAYER:ZONE_FIELD, e.g. --join municipios:CVEGEO"
            )));
        }
        Ok(JoinSpec {
            layer: layer.trim().to_string(),
            field: field.trim().to_string(),
            ..Default::default()
        })
    }

    /// The join a user asked for, from its options as the command line and the
    /// upload metadata take them: `join` (already parsed), the key columns, `as`
    /// ("points" or "polygons") and crosswalk pairs, which need a join.
    pub fn assemble(
        join: Option<JoinSpec>,
        key: Option<Vec<String>>,
        as_: Option<&str>,
        crosswalk: BTreeMap<String, String>,
    ) -> Result<Option<JoinSpec>> {
        let Some(mut spec) = join else {
            if key.is_some() || as_.is_some() || !crosswalk.is_empty() {
                return Err(Error::bad(
                    "key, as and crosswalk go with join (--join municipios:CVEGEO; in the \
                     upload metadata \"join\": \"municipios:CVEGEO\")",
                ));
            }
            return Ok(None);
        };
        if let Some(k) = key {
            spec.key = k;
        }
        match as_ {
            Some("points") => spec.as_points = true,
            Some("polygons") | None => {}
            Some(o) => {
                return Err(Error::bad(format!(
                    "as is \"points\" or \"polygons\", not \"{o}\""
                )))
            }
        }
        spec.crosswalk.extend(crosswalk);
        Ok(Some(spec))
    }
}

/// `CVE_ENT+CVE_MUN` → the key columns.
pub fn key_list(s: &str) -> Vec<String> {
    s.split('+')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Most rows a crosswalk may have.
const MAX_CROSSWALK: usize = 100_000;

/// Reads a crosswalk CSV: two columns, table value then zone value (a header row is
/// allowed).
pub fn read_crosswalk(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let bad = |e: csv::Error| Error::bad(format!("--crosswalk {}: {e}", path.display()));
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(bad)?;
    let mut out = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(bad)?;
        if let (Some(a), Some(b)) = (rec.get(0), rec.get(1)) {
            if !a.trim().is_empty() && !b.trim().is_empty() {
                out.insert(a.trim().to_string(), b.trim().to_string());
            }
        }
        if out.len() > MAX_CROSSWALK {
            return Err(Error::bad(format!(
                "--crosswalk has more than {MAX_CROSSWALK} rows"
            )));
        }
    }
    Ok(out)
}

/// What a join did, in the ingest report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JoinReport {
    pub zone_layer: String,
    pub zone_version: u32,
    pub zone_field: String,
    /// The table's key column(s).
    pub key: Vec<String>,
    /// "code" (zero-padded INEGI keys) or "name" (normalized names).
    pub matched_by: String,
    pub rows: u64,
    pub matched: u64,
    pub unmatched: u64,
    /// The first unmatched rows with the closest zone values.
    pub unmatched_rows: Vec<Unmatched>,
    /// Keys on more than one row: (key, rows).
    pub duplicate_keys: Vec<(String, u64)>,
    pub zones: u64,
    pub zones_without_row: u64,
    pub zones_without_row_examples: Vec<String>,
    pub crosswalk_used: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Unmatched {
    pub row: u64,
    pub key: String,
    pub closest: Vec<String>,
}

/// INEGI's geostatistical key parts in the order CVEGEO concatenates them, with the
/// column names they go by and their width: ENT(2) MUN(3) LOC(4) AGEB(4) MZA(3) make
/// CVEGEO keys of 2, 5, 9, 13 or 16 characters.
const INEGI_PARTS: [(&[&str], usize); 5] = [
    (
        &["cveent", "ent", "entidad", "claveentidad", "cveentidad"],
        2,
    ),
    (
        &[
            "cvemun",
            "mun",
            "municipio",
            "clavemunicipio",
            "cvemunicipio",
        ],
        3,
    ),
    (
        &[
            "cveloc",
            "loc",
            "localidad",
            "clavelocalidad",
            "cvelocalidad",
        ],
        4,
    ),
    (&["cveageb", "ageb", "claveageb"], 4),
    (
        &["cvemza", "mza", "manzana", "clavemanzana", "cvemanzana"],
        3,
    ),
];

/// Which INEGI key part a column holds, by its name (`CVE_MUN`, `cve_ent`, `AGEB`);
/// an index into [`INEGI_PARTS`]. Names such as `NOM_MUN` are not keys.
fn inegi_part(name: &str) -> Option<usize> {
    let name = super::coords::tokens(name).concat();
    INEGI_PARTS
        .iter()
        .position(|(names, _)| names.contains(&name.as_str()))
}

/// The width of the INEGI key part a column holds, by its name.
pub fn part_width(name: &str) -> Option<usize> {
    inegi_part(name).map(|i| INEGI_PARTS[i].1)
}

fn pad(v: &str, width: usize) -> String {
    let v = v.trim();
    if v.len() < width && v.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("{}{v}", "0".repeat(width - v.len()))
    } else {
        v.to_string()
    }
}

fn is_code(v: &str) -> bool {
    !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric())
        && v.chars().filter(|c| c.is_ascii_digit()).count() * 2 >= v.len()
}

/// The zone layer as the join sees it.
pub struct Zones {
    pub layer: String,
    pub version: u32,
    pub field: String,
    values: Vec<String>,
    geoms: Vec<geo::Geometry<f64>>,
    /// Codes: all values are digit keys, of this width when they all have one.
    code_width: Option<usize>,
    codes: bool,
    by_key: HashMap<String, usize>,
    name_keys: Vec<String>,
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Zones {
    /// Loads the current version of the zone layer.
    pub fn load(store: &dyn crate::store::LayerStore, spec: &JoinSpec) -> Result<Zones> {
        let v = store.current(&spec.layer)?.ok_or_else(|| {
            Error::bad(format!(
                "--join: zone layer '{}' does not exist; publish it first (e.g. the municipalities)",
                spec.layer
            ))
        })?;
        let schema = &v.meta.schema;
        let names = || schema.iter().map(|f| f.name.as_str());
        let fi = super::find_name(names(), &spec.field).ok_or_else(|| {
            Error::bad(format!(
                "--join: '{}' is not a field of zone layer '{}'; its fields are: {}",
                spec.field,
                spec.layer,
                super::name_list(names())
            ))
        })?;
        let (loaded, _) = crate::index::LoadedLayer::load_for_scan(&v)?;
        let mut values = Vec::with_capacity(loaded.len());
        let mut geoms = Vec::with_capacity(loaded.len());
        for pos in 0..loaded.len() as u32 {
            let Some((_, offset)) = loaded.at(pos) else {
                continue;
            };
            let (g, props) = loaded.geometry_and_properties(offset)?;
            let Some(g) = g else { continue };
            let val = props
                .iter()
                .find(|(i, _)| *i == fi)
                .map(|(_, v)| json_text(v))
                .unwrap_or_default();
            if val.is_empty() {
                continue;
            }
            values.push(val);
            geoms.push(g);
        }
        if values.is_empty() {
            return Err(Error::bad(format!(
                "--join: zone layer '{}' has no values in field '{}'",
                spec.layer, schema[fi].name
            )));
        }
        let codes = values.iter().all(|v| is_code(v));
        let widths: std::collections::BTreeSet<usize> = values.iter().map(String::len).collect();
        let code_width = (codes && widths.len() == 1).then(|| values[0].len());
        let mut by_key = HashMap::with_capacity(values.len());
        let name_keys: Vec<String> = values.iter().map(|v| crate::text::name_key(v)).collect();
        for (i, v) in values.iter().enumerate() {
            let k = if codes {
                v.clone()
            } else {
                name_keys[i].clone()
            };
            by_key.entry(k).or_insert(i);
        }
        Ok(Zones {
            layer: spec.layer.clone(),
            version: v.meta.version,
            field: schema[fi].name.clone(),
            values,
            geoms,
            code_width,
            codes,
            by_key,
            name_keys,
        })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The key of a row from its key cells, normalized as the zone values are.
    fn row_key(&self, parts: &[(Option<usize>, String)]) -> String {
        if self.codes {
            if parts.len() == 1 {
                let v = parts[0].1.trim();
                return match (parts[0].0, self.code_width) {
                    (Some(w), _) => pad(v, w),
                    (None, Some(w)) => pad(v, w),
                    _ => v.to_string(),
                };
            }
            parts
                .iter()
                .map(|(w, v)| match w {
                    Some(w) => pad(v, *w),
                    None => v.trim().to_string(),
                })
                .collect()
        } else {
            crate::text::name_key(
                &parts
                    .iter()
                    .map(|p| p.1.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The zone values most like `key`.
    fn closest(&self, key: &str, n: usize) -> Vec<String> {
        let mut scored: Vec<(f64, usize)> = self
            .name_keys
            .iter()
            .enumerate()
            .map(|(i, z)| (crate::text::similarity(key, z), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(n)
            .map(|(_, i)| self.values[i].clone())
            .collect()
    }
}

/// The join of one table: which columns make the key, and the running report.
pub struct Joiner<'z> {
    zones: &'z Zones,
    /// (table column index, INEGI width) per key part.
    key_cols: Vec<(usize, Option<usize>)>,
    as_points: bool,
    crosswalk: HashMap<String, String>,
    pub report: JoinReport,
    seen: HashMap<String, u64>,
    zone_rows: Vec<u32>,
    /// Interior points computed once per zone.
    points: Vec<Option<geo::Geometry<f64>>>,
}

impl<'z> Joiner<'z> {
    /// Decides the key columns: the ones given, else a column named like the zone
    /// field, else INEGI parts that compose it, else the column whose values match
    /// the most zone values.
    pub fn new(zones: &'z Zones, spec: &JoinSpec, columns: &[Column]) -> Result<Joiner<'z>> {
        let find = |name: &str| super::find_column(columns, name, "--key");
        let width_of = |i: usize, n_parts: usize| {
            if zones.codes && n_parts > 1 {
                part_width(&columns[i].name)
            } else if zones.codes {
                part_width(&columns[i].name).filter(|w| Some(*w) == zones.code_width)
            } else {
                None
            }
        };
        let key_cols: Vec<(usize, Option<usize>)> = if !spec.key.is_empty() {
            let idx: Vec<usize> = spec.key.iter().map(|k| find(k)).collect::<Result<_>>()?;
            let n = idx.len();
            idx.into_iter().map(|i| (i, width_of(i, n))).collect()
        } else {
            Self::detect(zones, columns)?
        };
        let mut joiner = Joiner {
            zones,
            key_cols,
            as_points: spec.as_points,
            crosswalk: spec
                .crosswalk
                .iter()
                .map(|(a, b)| (crate::text::name_key(a), b.clone()))
                .collect(),
            report: JoinReport {
                zone_layer: zones.layer.clone(),
                zone_version: zones.version,
                zone_field: zones.field.clone(),
                matched_by: if zones.codes { "code" } else { "name" }.into(),
                zones: zones.len() as u64,
                ..Default::default()
            },
            seen: HashMap::new(),
            zone_rows: vec![0; zones.len()],
            points: vec![None; if spec.as_points { zones.len() } else { 0 }],
        };
        joiner.report.key = joiner
            .key_cols
            .iter()
            .map(|(i, _)| columns[*i].name.clone())
            .collect();
        Ok(joiner)
    }

    fn detect(zones: &Zones, columns: &[Column]) -> Result<Vec<(usize, Option<usize>)>> {
        let zf = crate::text::compact(&zones.field);
        if let Some(i) = columns
            .iter()
            .position(|c| crate::text::compact(&c.name) == zf)
        {
            let w = part_width(&columns[i].name).filter(|w| Some(*w) == zones.code_width);
            return Ok(vec![(i, w)]);
        }
        if zones.codes {
            // The parts that compose the zones' CVEGEO, in order.
            let chain = INEGI_PARTS.iter().enumerate().map(|(i, (_, w))| {
                (
                    columns.iter().position(|c| inegi_part(&c.name) == Some(i)),
                    *w,
                )
            });
            if let Some(width) = zones.code_width {
                let mut total = 0;
                let mut cols = Vec::new();
                for (col, w) in chain {
                    let Some(c) = col else { break };
                    cols.push((c, Some(w)));
                    total += w;
                    if total == width {
                        return Ok(cols);
                    }
                }
            }
        }
        // The column whose sampled values match the most zones.
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in columns.iter().enumerate() {
            let w = if zones.codes { zones.code_width } else { None };
            let hits = c
                .sample
                .iter()
                .filter(|v| {
                    let k = zones.row_key(&[(w, v.to_string())]);
                    zones.find(&k).is_some()
                })
                .count();
            if hits > 0 && best.is_none_or(|b| hits > b.1) {
                best = Some((i, hits));
            }
        }
        match best {
            Some((i, hits)) if hits * 5 >= columns[i].sample.len().max(1) => {
                Ok(vec![(i, if zones.codes { zones.code_width } else { None })])
            }
            _ => Err(Error::bad(format!(
                "--join: no column of the table matches field '{}' of '{}' (values such as {}); \
                 name the key column with --key COL (or COL+COL for INEGI parts such as \
                 CVE_ENT+CVE_MUN)",
                zones.field,
                zones.layer,
                zones
                    .values
                    .iter()
                    .take(3)
                    .map(|v| format!("'{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The key columns (table column indexes), e.g. to keep them in the schema.
    pub fn key_columns(&self) -> Vec<usize> {
        self.key_cols.iter().map(|k| k.0).collect()
    }

    /// The zone of one row, or None (counted as unmatched).
    pub fn place(
        &mut self,
        line: u64,
        cells: &[Cell<'_>],
        columns: &[Column],
    ) -> Option<(geo::Geometry<f64>, String)> {
        self.report.rows += 1;
        let parts: Vec<(Option<usize>, String)> = self
            .key_cols
            .iter()
            .map(|(i, w)| {
                (
                    *w,
                    cells
                        .get(columns[*i].src)
                        .map(Cell::to_text)
                        .unwrap_or_default(),
                )
            })
            .collect();
        if parts.iter().all(|p| p.1.trim().is_empty()) {
            self.unmatched(line, String::new());
            return None;
        }
        let raw = parts
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let mut key = self.zones.row_key(&parts);
        let mut zone = self.zones.find(&key);
        if zone.is_none() {
            if let Some(to) = self.crosswalk.get(&crate::text::name_key(&raw)) {
                let k = if self.zones.codes {
                    to.trim().to_string()
                } else {
                    crate::text::name_key(to)
                };
                zone = self.zones.find(&k);
                if zone.is_some() {
                    self.report.crosswalk_used += 1;
                    key = k;
                }
            }
        }
        *self.seen.entry(key.clone()).or_default() += 1;
        let Some(z) = zone else {
            self.unmatched(line, raw);
            return None;
        };
        self.report.matched += 1;
        self.zone_rows[z] += 1;
        let geom = if self.as_points {
            if self.points[z].is_none() {
                self.points[z] = self.zones.geoms[z]
                    .interior_point()
                    .map(geo::Geometry::Point);
            }
            self.points[z].clone()?
        } else {
            self.zones.geoms[z].clone()
        };
        Some((geom, self.zones.values[z].clone()))
    }

    fn unmatched(&mut self, line: u64, raw: String) {
        self.report.unmatched += 1;
        if self.report.unmatched_rows.len() < 50 {
            let closest = if raw.is_empty() {
                Vec::new()
            } else {
                self.zones.closest(&crate::text::name_key(&raw), 3)
            };
            self.report.unmatched_rows.push(Unmatched {
                row: line,
                key: raw,
                closest,
            });
        }
    }

    /// Completes the report (duplicates, zones with no row).
    pub fn finish(mut self) -> JoinReport {
        let mut dups: Vec<(String, u64)> = self
            .seen
            .into_iter()
            .filter(|(k, n)| *n > 1 && !k.is_empty())
            .collect();
        dups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        dups.truncate(50);
        self.report.duplicate_keys = dups;
        let without: Vec<usize> = (0..self.zone_rows.len())
            .filter(|&i| self.zone_rows[i] == 0)
            .collect();
        self.report.zones_without_row = without.len() as u64;
        self.report.zones_without_row_examples = without
            .iter()
            .take(20)
            .map(|&i| self.zones.values[i].clone())
            .collect();
        self.report
    }
}

impl JoinReport {
    /// One line per fact, for the CLI and the job report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "join to {} v{} by {} ({}): {} of {} rows matched, {} not matched; {} of {} zones have no row",
            self.zone_layer,
            self.zone_version,
            self.key.join("+"),
            self.matched_by,
            self.matched,
            self.rows,
            self.unmatched,
            self.zones_without_row,
            self.zones
        )];
        for u in self.unmatched_rows.iter().take(10) {
            out.push(format!(
                "not matched: row {} '{}'{}",
                u.row,
                u.key,
                if u.closest.is_empty() {
                    String::new()
                } else {
                    format!(" (closest: {})", u.closest.join(", "))
                }
            ));
        }
        for (k, n) in self.duplicate_keys.iter().take(5) {
            out.push(format!("duplicate key '{k}' on {n} rows"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inegi_parts_and_padding() {
        assert_eq!(part_width("CVE_ENT"), Some(2));
        assert_eq!(part_width("cve_mun"), Some(3));
        assert_eq!(part_width("CVE_AGEB"), Some(4));
        assert_eq!(part_width("nombre"), None);
        assert_eq!(pad("39", 3), "039");
        assert_eq!(pad("46A", 4), "046A");
        assert!(is_code("19039") && is_code("046A") && !is_code("Monterrey"));
        let s = JoinSpec::parse("municipios:CVEGEO").unwrap();
        assert_eq!(
            (s.layer.as_str(), s.field.as_str()),
            ("municipios", "CVEGEO")
        );
        assert!(JoinSpec::parse("municipios").is_err());
    }
}
