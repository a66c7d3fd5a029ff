//! Tables as ministries really send them: CSV exports and spreadsheets (.xlsx, .xls,
//! .ods) with title rows above the header, notes and totals below the data, merged
//! cells, numbers stored as text, Excel date serials, codes that must keep their
//! leading zeros, and coordinates under any name (or none at all).
//!
//! [`Table::open`] reads the header and profiles every column in one pass (types,
//! samples for [`coords::locate`] and [`join`]); [`Table::for_each_row`] then streams
//! the data rows again, so a CSV is never held whole in memory (a spreadsheet is:
//! the formats are zip/OLE containers that the reader parses whole). The ingest
//! pipeline turns each row into a feature: a point from its coordinates, a zone's
//! polygon from a key join, or no geometry at all for a non-spatial dataset.

pub mod coords;
pub mod join;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader};
use serde::{Deserialize, Serialize};

use crate::fgb::{FieldType, Value2};
use crate::ingest::Limits;
use crate::{Error, Result};

/// Extensions read as tables.
pub const TABLE_EXTS: &[&str] = &["csv", "tsv", "xlsx", "xlsm", "xls", "ods"];

/// How to read a table and place its rows; given on the command line, in the upload
/// metadata or the /publicar form, and kept in the version's record so a joined layer
/// can be rebuilt when its zone layer changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableOptions {
    /// 1-based row (sheet row or file line) of the header; found when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_row: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// One column holding both coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coords: Option<String>,
    /// "latlon" or "lonlat", for a combined column whose values do not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord_order: Option<String>,
    /// Place rows by a key matched to a zone layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<join::JoinSpec>,
    /// A dataset with no place at all (a budget, a directory): stored, versioned,
    /// diagnosed and served without geometry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_geometry: bool,
}

impl TableOptions {
    pub fn is_empty(&self) -> bool {
        self == &TableOptions::default()
    }

    fn wanted(&self) -> coords::Wanted<'_> {
        coords::Wanted {
            lon: self.lon.as_deref(),
            lat: self.lat.as_deref(),
            x: self.x.as_deref(),
            y: self.y.as_deref(),
            coords: self.coords.as_deref(),
            order: self.coord_order.as_deref(),
        }
    }
}

/// One cell as the source stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Empty,
    Text(Cow<'a, str>),
    Number(f64),
    Bool(bool),
    DateTime(chrono::NaiveDateTime),
}

impl Cell<'_> {
    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(t) => t.trim().is_empty(),
            _ => false,
        }
    }

    /// [`Cell::to_text`] without copying text cells (the per-row coordinate path).
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            Cell::Text(t) => Cow::Borrowed(t.trim()),
            c => Cow::Owned(c.to_text()),
        }
    }

    /// The cell as text: integral numbers without a decimal point (Excel shows 19,
    /// not 19.0), dates in ISO 8601.
    pub fn to_text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(t) => t.trim().to_string(),
            Cell::Number(v) => fmt_number(*v),
            Cell::Bool(b) => b.to_string(),
            Cell::DateTime(d) => fmt_datetime(d),
        }
    }
}

fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

fn fmt_datetime(d: &chrono::NaiveDateTime) -> String {
    if d.time() == chrono::NaiveTime::MIN {
        d.format("%Y-%m-%d").to_string()
    } else {
        d.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// Values that mean "no data" in Mexican statistical tables (INEGI writes `*` and
/// `N/D`); they do not make a numeric column text, and are stored as null there.
fn is_null_marker(s: &str) -> bool {
    // Every word marker has at most 4 letters: longer values (nearly all) are not
    // folded, which would allocate for every cell.
    if s.chars().filter(|c| c.is_alphanumeric()).nth(4).is_some() {
        return false;
    }
    matches!(
        crate::text::words(s).as_str(),
        "" | "n a" | "na" | "n d" | "nd" | "s d" | "sd" | "null" | "nan" | "none"
    ) && !s.trim().chars().any(|c| c.is_ascii_digit())
        || matches!(s.trim(), "-" | "--" | "*" | "…" | "..." | "—")
}

/// Column names that hold identifiers or codes (keys, and record numbers such as
/// `id`, `folio`, `num`, `telefono`): digits that are not quantities, so the diagnosis
/// does not ask for them to be numbers.
pub fn looks_like_code(name: &str) -> bool {
    const IDS: &[&str] = &[
        "id", "folio", "cat", "num", "no", "manzana", "loc", "mun", "ent", "telefono", "tel",
    ];
    looks_like_key(name)
        || coords::tokens(name)
            .iter()
            .any(|w| IDS.contains(&w.as_str()))
}

/// Names of geostatistical and administrative keys (CVEGEO, CVE_MUN, clave, código
/// postal): digits, but text in a text file, because their width is part of the key.
pub fn looks_like_key(name: &str) -> bool {
    let t = coords::tokens(name);
    let keys = [
        "cvegeo",
        "clave",
        "codigo",
        "code",
        "cp",
        "ageb",
        "mza",
        "inegi",
        "postal",
        "zip",
        "curp",
        "rfc",
        "catastral",
        "expediente",
    ];
    t.iter()
        .any(|w| keys.contains(&w.as_str()) || w.starts_with("cve") || w.starts_with("clave"))
}

/// The position of `name` among `names`: exactly, else as [`crate::text::compact`]
/// folds them ("cve mun" finds "CVE_MUN").
pub fn find_name<'a, I>(names: I, name: &str) -> Option<usize>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let names = names.into_iter();
    names.clone().position(|n| n == name).or_else(|| {
        let folded = crate::text::compact(name);
        names
            .clone()
            .position(|n| crate::text::compact(n) == folded)
    })
}

/// Names for a message: "a, b, c".
pub fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// The table column `name` names (the user's `what`: "--lon", "--key"), or an error
/// listing the columns.
pub fn find_column(columns: &[Column], name: &str, what: &str) -> Result<usize> {
    let names = || columns.iter().map(|c| c.name.as_str());
    find_name(names(), name).ok_or_else(|| {
        Error::bad(format!(
            "{what} '{name}' is not a column of the table; its columns are: {}",
            name_list(names())
        ))
    })
}

/// A column of the table: its header, where it is in the source, and what its
/// values are.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Position in the source row.
    pub src: usize,
    pub ftype: FieldType,
    /// The first non-empty values as text, for coordinate and key detection.
    pub sample: Vec<String>,
    /// Dates written day first (dd/mm/yyyy): Mexican usage, unless the values show
    /// month first.
    pub day_first: bool,
    stats: Stats,
}

#[derive(Debug, Clone, Default)]
struct Stats {
    non_empty: u64,
    markers: u64,
    numbers: u64,
    /// Text cells that read as numbers (spreadsheets: "numbers stored as text").
    text_numbers: u64,
    integral: u64,
    leading_zero: u64,
    min: f64,
    max: f64,
    bools: u64,
    dates: u64,
    datetimes: u64,
    /// Slash dates: how many, and the largest first and second parts seen.
    slash: u64,
    slash_max: (u32, u32),
}

const SAMPLE: usize = 200;

impl Column {
    fn observe(&mut self, c: &Cell<'_>, decimal_comma: bool) {
        let s = &mut self.stats;
        if c.is_empty() {
            return;
        }
        if let Cell::Text(t) = c {
            if is_null_marker(t) {
                s.markers += 1;
                return;
            }
        }
        s.non_empty += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(c.to_text());
        }
        match c {
            Cell::Number(v) => s.number(*v, false),
            Cell::Bool(_) => s.bools += 1,
            Cell::DateTime(d) => {
                if d.time() == chrono::NaiveTime::MIN {
                    s.dates += 1;
                } else {
                    s.datetimes += 1;
                }
            }
            Cell::Text(t) => {
                let t = t.trim();
                if let Some(v) = coords::parse_number(t, decimal_comma) {
                    let lz = t.len() > 1
                        && (t.starts_with('0') && !t.starts_with("0.") && !t.starts_with("0,"));
                    if lz {
                        s.leading_zero += 1;
                    }
                    s.number(v, true);
                } else if matches!(
                    t.to_lowercase().as_str(),
                    "true" | "false" | "verdadero" | "falso"
                ) {
                    s.bools += 1;
                } else if let Some((d, has_time, slash)) = parse_date_text(t, true) {
                    let _ = d;
                    if has_time {
                        s.datetimes += 1;
                    } else {
                        s.dates += 1;
                    }
                    if let Some((a, b)) = slash {
                        s.slash += 1;
                        s.slash_max = (s.slash_max.0.max(a), s.slash_max.1.max(b));
                    }
                }
            }
            Cell::Empty => {}
        }
    }

    fn decide(&mut self, text_source: bool) {
        let s = &self.stats;
        let n = s.non_empty;
        self.day_first = !(s.slash_max.1 > 12 && s.slash_max.0 <= 12);
        self.ftype = if n == 0 {
            FieldType::String
        } else if s.bools == n {
            FieldType::Bool
        } else if s.dates + s.datetimes == n && (s.slash == 0 || s.slash == n) {
            // One written format: a date column. Mixed formats stay text, so the
            // diagnosis shows them (attributes.mixed_date_formats) instead of a guess.
            if s.datetimes > 0 {
                FieldType::Datetime
            } else {
                FieldType::Date
            }
        } else if s.numbers == n
            && s.leading_zero == 0
            && !(text_source && looks_like_key(&self.name) && s.integral == n)
            && !(!text_source && s.text_numbers == n && looks_like_code(&self.name))
        {
            if s.integral == n && s.min >= i32::MIN as f64 && s.max <= i32::MAX as f64 {
                FieldType::Int
            } else if s.integral == n && s.min >= -9.0e15 && s.max <= 9.0e15 {
                FieldType::Long
            } else {
                FieldType::Float
            }
        } else {
            FieldType::String
        };
    }

    /// The stored value of a cell of this column.
    pub fn value(&self, c: &Cell<'_>, decimal_comma: bool) -> Value2 {
        if c.is_empty() {
            return Value2::Null;
        }
        if let Cell::Text(t) = c {
            if self.ftype != FieldType::String && is_null_marker(t) {
                return Value2::Null;
            }
        }
        let num = || match c {
            Cell::Number(v) => Some(*v),
            Cell::Text(t) => coords::parse_number(t, decimal_comma),
            _ => None,
        };
        match self.ftype {
            FieldType::String => Value2::Text(c.to_text()),
            FieldType::Int => num().map_or(Value2::Null, |v| Value2::Int(v as i32)),
            FieldType::Long => num().map_or(Value2::Null, |v| Value2::Long(v as i64)),
            FieldType::Float => num().map_or(Value2::Null, Value2::Float),
            FieldType::Bool => match c {
                Cell::Bool(b) => Value2::Bool(*b),
                Cell::Text(t) => Value2::Bool(matches!(
                    t.trim().to_lowercase().as_str(),
                    "true" | "verdadero"
                )),
                _ => Value2::Null,
            },
            FieldType::Date | FieldType::Datetime => {
                let d = match c {
                    Cell::DateTime(d) => Some(*d),
                    Cell::Text(t) => parse_date_text(t, self.day_first).map(|x| x.0),
                    _ => None,
                };
                match d {
                    Some(d) if self.ftype == FieldType::Date => {
                        Value2::Text(d.format("%Y-%m-%d").to_string())
                    }
                    Some(d) => Value2::Text(d.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    None => Value2::Null,
                }
            }
        }
    }
}

impl Stats {
    fn number(&mut self, v: f64, text: bool) {
        if self.numbers == 0 {
            self.min = v;
            self.max = v;
        }
        self.numbers += 1;
        if text {
            self.text_numbers += 1;
        }
        if v.fract() == 0.0 {
            self.integral += 1;
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// A parsed text date: the value, whether it has a time, the two first parts of a
/// slash date.
type TextDate = (chrono::NaiveDateTime, bool, Option<(u32, u32)>);

/// A date written as text: ISO (`2024-03-15`, `2024-03-15T10:30:00`, `2024-03-15
/// 10:30`) or with slashes (`15/03/2024`, day first as in Mexico unless
/// `day_first` is false). Returns the date, whether it has a time, and the two first
/// parts of a slash date.
fn parse_date_text(s: &str, day_first: bool) -> Option<TextDate> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = s.trim();
    if t.len() < 8 || t.len() > 30 || !t.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), f) {
            return Some((d, true, None));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some((d.and_time(chrono::NaiveTime::MIN), false, None));
    }
    let parts: Vec<&str> = t.split(['/', '-']).collect();
    if parts.len() == 3 && parts[2].len() == 4 {
        let a: u32 = parts[0].parse().ok()?;
        let b: u32 = parts[1].parse().ok()?;
        let y: i32 = parts[2].parse().ok()?;
        // A part above 12 can only be the day; otherwise the column's convention.
        let (d, m) = if a > 12 || (day_first && b <= 12) {
            (a, b)
        } else {
            (b, a)
        };
        let date = NaiveDate::from_ymd_opt(y, m, d)?;
        return Some((date.and_time(chrono::NaiveTime::MIN), false, Some((a, b))));
    }
    None
}

/// The furthest row `--header-row` may name (rows above it are read as a preamble).
const MAX_HEADER_ROW: usize = 10_000;

/// Where the rows come from.
enum Source {
    Csv {
        path: PathBuf,
        delimiter: u8,
    },
    /// A spreadsheet's sheet, merged cells already filled in.
    Sheet(calamine::Range<Data>),
}

/// An opened table: its header, columns and which rows are data.
pub struct Table {
    source: Source,
    /// 1-based line/row of the header.
    pub header_row: u64,
    /// Kept columns, in source order.
    pub columns: Vec<Column>,
    /// Lines of trailing note rows and totals rows, skipped.
    skip: std::collections::HashSet<u64>,
    pub data_rows: u64,
    /// What was found and done, for the ingest report.
    pub notes: Vec<String>,
    /// The file writes decimals with a comma (`;`- or tab-separated CSV).
    pub decimal_comma: bool,
    /// "CSV", "XLSX", "XLS" or "ODS".
    pub format: &'static str,
    /// The sheet read (spreadsheets), or the file name.
    pub name: String,
}

/// Guesses a CSV's delimiter from its first lines: the first of tab, `;`, `|`, `,`
/// that splits most lines into the same number of fields (title rows above the
/// header are tolerated).
fn sniff_delimiter(head: &[u8]) -> u8 {
    let text = String::from_utf8_lossy(head);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(30)
        .collect();
    if lines.is_empty() {
        return b',';
    }
    let lines = if lines.len() > 1 && head.len() >= 65536 {
        &lines[..lines.len() - 1] // the last one may be cut
    } else {
        &lines[..]
    };
    for d in ['\t', ';', '|', ','] {
        let counts: Vec<usize> = lines
            .iter()
            .map(|l| {
                let mut quoted = false;
                l.chars()
                    .filter(|&c| {
                        if c == '"' {
                            quoted = !quoted;
                        }
                        c == d && !quoted
                    })
                    .count()
            })
            .collect();
        let mut freq: BTreeMap<usize, usize> = BTreeMap::new();
        for c in &counts {
            *freq.entry(*c).or_default() += 1;
        }
        if let Some((&mode, &f)) = freq
            .iter()
            .filter(|(k, _)| **k > 0)
            .max_by_key(|(_, f)| **f)
        {
            if mode > 0 && f * 10 >= lines.len() * 6 {
                return d as u8;
            }
        }
    }
    b','
}

/// Declared sizes of a zip-based spreadsheet (.xlsx, .ods) checked before a reader
/// inflates it: a few kilobytes must not become gigabytes in memory.
fn check_zip_container(path: &Path, limits: Limits) -> Result<()> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        Error::bad(format!(
            "{name} is not a readable spreadsheet (corrupt or truncated zip container): {e}"
        ))
    })?;
    let total = crate::ingest::archive::check_entries(&mut zip, &name.to_string(), limits)?;
    // A sheet is parsed in memory: a tighter cap than for unpacking to disk.
    let cap = limits.max_uncompressed.min(2 << 30);
    if total > cap {
        return Err(Error::bad(format!(
            "{name} expands to {} MiB, more than the {} MiB a spreadsheet may take; \
             export it as CSV",
            total >> 20,
            cap >> 20
        )));
    }
    Ok(())
}

fn sheet_rows(
    path: &Path,
    ext: &str,
    wanted: Option<&str>,
    limits: Limits,
) -> Result<(String, calamine::Range<Data>, usize)> {
    if matches!(ext, "xlsx" | "xlsm" | "ods") {
        check_zip_container(path, limits)?;
    }
    let name = path.display().to_string();
    let mut wb = calamine::open_workbook_auto(path).map_err(|e| {
        Error::bad(format!(
            "{name} cannot be read as a {} spreadsheet: {e}",
            ext.to_uppercase()
        ))
    })?;
    let sheets = wb.sheet_names();
    if sheets.is_empty() {
        return Err(Error::bad(format!("{name} has no sheets")));
    }
    // The sheet parsed while looking for the filled ones: parsed once, not twice.
    let mut parsed = None;
    let pick = match wanted {
        Some(w) => sheets
            .iter()
            .find(|s| *s == w)
            .or_else(|| {
                sheets
                    .iter()
                    .find(|s| crate::text::compact(s) == crate::text::compact(w))
            })
            .cloned()
            .ok_or_else(|| {
                Error::bad(format!(
                    "sheet '{w}' not found; the workbook has: {}",
                    sheets.join(", ")
                ))
            })?,
        None => {
            let mut filled = Vec::new();
            for s in &sheets {
                match wb.worksheet_range(s) {
                    Ok(r) if r.used_cells().next().is_some() => {
                        filled.push((s.clone(), r.height()));
                        if filled.len() == 1 {
                            parsed = Some(r);
                        }
                    }
                    Ok(_) => {}
                    // Unreadable by calamine: listed all the same (GDAL may read it).
                    Err(_) => filled.push((s.clone(), 0)),
                }
            }
            match filled.len() {
                0 => return Err(Error::bad(format!("{name}: every sheet is empty"))),
                1 => filled[0].0.clone(),
                _ => {
                    return Err(Error::bad(format!(
                        "the workbook has {} sheets with data; choose one with --source-layer \
                         (sheet name): {}",
                        filled.len(),
                        filled
                            .iter()
                            .map(|(s, h)| if *h > 0 {
                                format!("{s} ({h} rows)")
                            } else {
                                s.clone()
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    };
    let range = match parsed.map(Ok).unwrap_or_else(|| wb.worksheet_range(&pick)) {
        Ok(r) => r,
        Err(e) => {
            // calamine is strict where Excel is not (a number cell written " 41"):
            // GDAL's reader takes those; cells then arrive as text and are typed here.
            tracing::debug!(error = %e, "calamine cannot read the sheet; trying GDAL");
            let rows = gdal_sheet(path, ext, &pick).map_err(|g| {
                Error::bad(format!("{name}: sheet '{pick}' cannot be read: {e}; {g}"))
            })?;
            return Ok((pick, rows, 0));
        }
    };
    let mut range = range;
    // Merged cells hold their value in the top-left cell only: fill the region, so a
    // municipality merged over several rows is on each of them.
    let merges = match &mut wb {
        calamine::Sheets::Xlsx(x) => x.merge_cells_by_sheet_name(&pick).ok(),
        calamine::Sheets::Xls(x) => x.merge_cells_by_sheet_name(&pick).ok(),
        _ => None,
    }
    .unwrap_or_default();
    let mut filled = 0usize;
    for m in merges.iter().filter(|m| m.end.0 > m.start.0) {
        // Only regions over several rows are filled: a title or group header merged
        // across columns is one value, not one per column.
        let v = range.get_value(m.start).cloned().unwrap_or(Data::Empty);
        if matches!(v, Data::Empty) {
            continue;
        }
        for r in m.start.0..=m.end.0 {
            for c in m.start.1..=m.end.1 {
                if matches!(range.get_value((r, c)), Some(Data::Empty)) {
                    range.set_value((r, c), v.clone());
                    filled += 1;
                }
            }
        }
    }
    Ok((pick, range, filled))
}

/// A sheet read by GDAL's XLSX/XLS/ODS driver, every cell as text, no header.
fn gdal_sheet(path: &Path, ext: &str, sheet: &str) -> Result<calamine::Range<Data>> {
    use gdal::vector::LayerAccess;
    let driver = match ext {
        "ods" => "ODS",
        "xls" => "XLS",
        _ => "XLSX",
    };
    // GDAL 3.6 takes these as configuration options (per thread here, so other
    // ingests are not affected).
    let prefix = if driver == "ODS" {
        "OGR_ODS"
    } else {
        "OGR_XLSX"
    };
    for (k, v) in [("HEADERS", "DISABLE"), ("FIELD_TYPES", "STRING")] {
        let _ = gdal::config::set_thread_local_config_option(&format!("{prefix}_{k}"), v);
        let _ = gdal::config::set_thread_local_config_option(&format!("OGR_XLS_{k}"), v);
    }
    let ds = gdal::Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_VECTOR | gdal::GdalOpenFlags::GDAL_OF_READONLY,
            allowed_drivers: Some(&[driver]),
            open_options: None,
            sibling_files: None,
        },
    )
    .map_err(|e| Error::bad(format!("GDAL cannot read it either: {e}")));
    for k in ["HEADERS", "FIELD_TYPES"] {
        let _ = gdal::config::clear_thread_local_config_option(&format!("{prefix}_{k}"));
        let _ = gdal::config::clear_thread_local_config_option(&format!("OGR_XLS_{k}"));
    }
    let ds = ds?;
    let mut layer = ds
        .layer_by_name(sheet)
        .map_err(|e| Error::bad(format!("GDAL cannot read sheet '{sheet}': {e}")))?;
    let n = layer.defn().fields().count();
    let mut cells = Vec::new();
    for (r, f) in layer.features().enumerate() {
        for i in 0..n {
            if let Ok(Some(s)) = f.field_as_string(i) {
                if !s.is_empty() {
                    let pos = (
                        u32::try_from(r).map_err(|_| Error::bad("too many rows"))?,
                        i as u32,
                    );
                    cells.push(calamine::Cell::new(pos, Data::String(s)));
                }
            }
        }
    }
    Ok(calamine::Range::from_sparse(cells))
}

fn data_cell(d: &Data) -> Cell<'_> {
    match d {
        Data::Empty | Data::Error(_) => Cell::Empty,
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => {
            Cell::Text(Cow::Borrowed(s.as_str()))
        }
        Data::Int(n) => Cell::Number(*n as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Bool(*b),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(d) if dt.is_datetime() => Cell::DateTime(d),
            _ => Cell::Number(dt.as_f64()),
        },
    }
}

/// Is this row a totals row ("Total", "TOTAL GENERAL", "Suma")?
fn is_totals(cells: &[Cell<'_>]) -> bool {
    cells
        .iter()
        .find(|c| !c.is_empty())
        .and_then(|c| match c {
            Cell::Text(t) => Some(crate::text::words(t)),
            _ => None,
        })
        .is_some_and(|w| {
            w == "total"
                || w == "totales"
                || w == "suma"
                || w.starts_with("total ")
                || w.starts_with("gran total")
                || w.starts_with("totales ")
        })
}

impl Table {
    /// Opens a CSV or a spreadsheet and profiles it.
    pub fn open(
        path: &Path,
        ext: &str,
        opts: &TableOptions,
        sheet: Option<&str>,
        limits: Limits,
    ) -> Result<Table> {
        let mut notes = Vec::new();
        let (source, format, name, decimal_comma) = match ext {
            "xlsx" | "xlsm" | "xls" | "ods" => {
                let (sheet, range, merged) = sheet_rows(path, ext, sheet, limits)?;
                if merged > 0 {
                    notes.push(format!(
                        "{merged} cells of merged regions filled with the merged value"
                    ));
                }
                let format = match ext {
                    "xls" => "XLS",
                    "ods" => "ODS",
                    _ => "XLSX",
                };
                (Source::Sheet(range), format, sheet, false)
            }
            _ => {
                if let Some(s) = sheet {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    if s != stem {
                        return Err(Error::bad(format!(
                            "source layer '{s}' not found; a CSV has one table: {stem}"
                        )));
                    }
                }
                let mut head = vec![0u8; 65536];
                let n = {
                    use std::io::Read;
                    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                    let mut n = 0;
                    while n < head.len() {
                        let k = f.read(&mut head[n..]).map_err(|e| Error::io(path, e))?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    n
                };
                head.truncate(n);
                if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
                    return Err(Error::bad(format!(
                        "{} is a spreadsheet (Excel/OpenDocument), not text: give it its .xlsx, .xls or .ods extension",
                        path.display()
                    )));
                }
                let delimiter = sniff_delimiter(&head);
                if delimiter != b',' {
                    notes.push(format!(
                        "separator '{}' found; decimal commas read as decimals",
                        if delimiter == b'\t' {
                            "tab".to_string()
                        } else {
                            (delimiter as char).to_string()
                        }
                    ));
                }
                (
                    Source::Csv {
                        path: path.to_path_buf(),
                        delimiter,
                    },
                    "CSV",
                    path.file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("table")
                        .to_string(),
                    delimiter != b',',
                )
            }
        };
        let mut t = Table {
            source,
            header_row: 0,
            columns: Vec::new(),
            skip: Default::default(),
            data_rows: 0,
            notes,
            decimal_comma,
            format,
            name,
        };
        t.profile(opts)?;
        Ok(t)
    }

    /// Calls `f` with (1-based line or sheet row, cells) for every row of the source.
    fn each_raw(&self, f: &mut dyn FnMut(u64, &[Cell<'_>]) -> Result<bool>) -> Result<u64> {
        let mut latin1 = 0u64;
        match &self.source {
            Source::Csv { path, delimiter } => {
                let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                let mut rdr = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .delimiter(*delimiter)
                    .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
                let mut rec = csv::ByteRecord::new();
                let mut first = true;
                loop {
                    let more = rdr.read_byte_record(&mut rec).map_err(|e| {
                        Error::bad(format!("{}: the CSV cannot be read: {e}", path.display()))
                    })?;
                    if !more {
                        break;
                    }
                    let line = rec.position().map_or(0, |p| p.line());
                    // Borrowed from the record: no allocation per UTF-8 field.
                    let mut cells: Vec<Cell<'_>> = Vec::with_capacity(rec.len());
                    for (i, field) in rec.iter().enumerate() {
                        let field = if first && i == 0 {
                            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
                        } else {
                            field
                        };
                        let text: Cow<'_, str> = match std::str::from_utf8(field) {
                            Ok(s) => Cow::Borrowed(s),
                            Err(_) => {
                                // Per field: a file that is UTF-8 but for a few
                                // Windows-typed names keeps its UTF-8 values.
                                latin1 += 1;
                                Cow::Owned(
                                    encoding_rs::WINDOWS_1252
                                        .decode_without_bom_handling(field)
                                        .0
                                        .into_owned(),
                                )
                            }
                        };
                        cells.push(if text.is_empty() {
                            Cell::Empty
                        } else {
                            Cell::Text(text)
                        });
                    }
                    first = false;
                    if !f(line, &cells)? {
                        break;
                    }
                }
            }
            Source::Sheet(range) => {
                // Sheet rows are numbered as the user sees them (1-based).
                let first_row = range.start().map_or(0, |s| s.0);
                let mut cells: Vec<Cell<'_>> = Vec::new();
                for (i, r) in range.rows().enumerate() {
                    cells.clear();
                    cells.extend(r.iter().map(data_cell));
                    if !f(u64::from(first_row) + i as u64 + 1, &cells)? {
                        break;
                    }
                }
            }
        }
        Ok(latin1)
    }

    fn profile(&mut self, opts: &TableOptions) -> Result<()> {
        // The header: the given row, else the first of the first 30 rows that is as
        // wide as the table and mostly text (title rows above it are one cell wide).
        let mut probe: Vec<(u64, Vec<String>, usize, usize)> = Vec::new();
        self.each_raw(&mut |line, cells| {
            let ne = cells.iter().filter(|c| !c.is_empty()).count();
            let nt = cells
                .iter()
                .filter(|c| match c {
                    Cell::Text(t) => {
                        !t.trim().is_empty() && coords::parse_number(t, false).is_none()
                    }
                    _ => false,
                })
                .count();
            probe.push((line, cells.iter().map(Cell::to_text).collect(), ne, nt));
            // The header is looked for in the first 30 rows, or up to the one named.
            Ok(probe.len() < opts.header_row.map_or(30, |n| n.clamp(30, MAX_HEADER_ROW)))
        })?;
        if probe.is_empty() {
            return Err(Error::bad("the table is empty"));
        }
        let width = probe.iter().map(|p| p.2).max().unwrap_or(0);
        let header_idx = match opts.header_row {
            Some(n) if n > MAX_HEADER_ROW => {
                return Err(Error::bad(format!(
                    "--header-row {n}: the header must be within the first {MAX_HEADER_ROW} rows"
                )))
            }
            Some(n) => probe.iter().position(|p| p.0 == n as u64).ok_or_else(|| {
                Error::bad(format!(
                    "--header-row {n}: the table's rows (with values) are {}..{}",
                    probe[0].0,
                    probe[probe.len() - 1].0
                ))
            })?,
            None => {
                let wide = |p: &(u64, Vec<String>, usize, usize)| {
                    p.2 >= 2.max((width * 6).div_ceil(10)) && p.3 * 2 >= p.2
                };
                // Prefer a wide text row followed by a row with numbers or dates (the
                // first data row): title rows are followed by more text.
                (0..probe.len())
                    .find(|&i| {
                        wide(&probe[i])
                            && probe[i + 1..]
                                .iter()
                                .find(|p| p.2 > 0)
                                .is_some_and(|next| next.3 < next.2)
                    })
                    .or_else(|| probe.iter().position(wide))
                    .unwrap_or(0)
            }
        };
        let header_line = probe[header_idx].0;
        if header_idx > 0 {
            self.notes.push(format!(
                "header found on row {header_line}; {} title row(s) above it skipped (--header-row to choose another)",
                header_idx
            ));
        }
        let header = &probe[header_idx].1;
        let mut seen = std::collections::HashSet::new();
        let mut columns = Vec::new();
        for (i, h) in header.iter().enumerate() {
            let base = if h.trim().is_empty() {
                format!("columna_{}", i + 1)
            } else {
                h.trim().to_string()
            };
            let mut name = base.clone();
            let mut k = 2;
            while name == crate::fgb::FID_COLUMN || !seen.insert(name.to_lowercase()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            columns.push(Column {
                name,
                src: i,
                ftype: FieldType::String,
                sample: Vec::new(),
                day_first: true,
                stats: Stats::default(),
            });
        }
        let unnamed: Vec<bool> = header.iter().map(|h| h.trim().is_empty()).collect();
        drop(probe);
        // One pass over the data: types, samples, totals and trailing notes.
        let decimal_comma = self.decimal_comma;
        let mut data_rows = 0u64;
        let mut empty_rows = 0u64;
        let mut totals: Vec<u64> = Vec::new();
        let mut pending_single: Vec<(u64, usize, String)> = Vec::new();
        let mut notes_rows: Vec<(u64, String)> = Vec::new();
        let multi = columns.len() >= 2;
        let mut extra_cols = 0usize;
        let latin1 = self.each_raw(&mut |line, cells| {
            if line <= header_line {
                return Ok(true);
            }
            let ne = cells.iter().filter(|c| !c.is_empty()).count();
            if ne == 0 {
                empty_rows += 1;
                return Ok(true);
            }
            if is_totals(cells) {
                totals.push(line);
                return Ok(true);
            }
            if multi && ne == 1 {
                if let Some(i) = cells.iter().position(|c| !c.is_empty()) {
                    pending_single.push((line, i, cells[i].to_text()));
                }
                return Ok(true);
            }
            // Rows of one value before this one were data after all.
            for (_, i, t) in pending_single.drain(..) {
                data_rows += 1;
                if let Some(col) = columns.iter_mut().find(|c| c.src == i) {
                    col.observe(&Cell::Text(Cow::Owned(t)), decimal_comma);
                }
            }
            data_rows += 1;
            if cells.len() > columns.len() {
                extra_cols = extra_cols.max(
                    cells[columns.len()..]
                        .iter()
                        .filter(|c| !c.is_empty())
                        .count(),
                );
            }
            for col in columns.iter_mut() {
                if let Some(c) = cells.get(col.src) {
                    col.observe(c, decimal_comma);
                }
            }
            Ok(true)
        })?;
        // Rows of one value after the last full row are notes ("Fuente: INEGI").
        notes_rows.extend(pending_single.into_iter().map(|(l, _, t)| (l, t)));
        if latin1 > 0 {
            self.notes.push(format!(
                "{latin1} value(s) are not UTF-8: read as CP1252 (Windows Latin 1)"
            ));
        }
        if empty_rows > 0 {
            self.notes
                .push(format!("{empty_rows} empty row(s) skipped"));
        }
        if !totals.is_empty() {
            self.notes.push(format!(
                "{} totals row(s) skipped (rows {})",
                totals.len(),
                list(&totals)
            ));
        }
        if !notes_rows.is_empty() {
            self.notes.push(format!(
                "{} note row(s) after the data skipped (row {}: '{}')",
                notes_rows.len(),
                notes_rows[0].0,
                notes_rows[0].1.chars().take(80).collect::<String>()
            ));
        }
        if extra_cols > 0 {
            self.notes.push(format!(
                "some rows have {extra_cols} value(s) beyond the header's columns: not kept"
            ));
        }
        let text_source = matches!(self.source, Source::Csv { .. });
        let mut dropped = 0;
        let mut kept = Vec::new();
        for (i, mut c) in columns.into_iter().enumerate() {
            if unnamed.get(i).copied().unwrap_or(false) && c.stats.non_empty == 0 {
                dropped += 1;
                continue;
            }
            c.decide(text_source);
            if !text_source && c.stats.text_numbers > 0 && c.ftype != FieldType::String {
                self.notes.push(format!(
                    "column '{}': {} number(s) stored as text read as numbers",
                    c.name, c.stats.text_numbers
                ));
            }
            if c.stats.markers > 0 && c.ftype != FieldType::String {
                self.notes.push(format!(
                    "column '{}': {} 'no data' marker(s) (N/D, *, -) stored as null",
                    c.name, c.stats.markers
                ));
            }
            kept.push(c);
        }
        if dropped > 0 {
            self.notes
                .push(format!("{dropped} empty column(s) without a name dropped"));
        }
        if kept.is_empty() {
            return Err(Error::bad("the table has no columns"));
        }
        self.skip = totals
            .into_iter()
            .chain(notes_rows.into_iter().map(|n| n.0))
            .collect();
        self.header_row = header_line;
        self.columns = kept;
        self.data_rows = data_rows;
        Ok(())
    }

    /// Streams the data rows: (1-based line or sheet row, cells by source position).
    pub fn for_each_row(&self, mut f: impl FnMut(u64, &[Cell<'_>]) -> Result<bool>) -> Result<()> {
        let header = self.header_row;
        self.each_raw(&mut |line, cells| {
            if line <= header || self.skip.contains(&line) || cells.iter().all(Cell::is_empty) {
                return Ok(true);
            }
            f(line, cells)
        })?;
        Ok(())
    }

    /// Where the coordinates are (None: none found).
    pub fn placement(
        &self,
        opts: &TableOptions,
        region: &coords::RegionBox,
    ) -> Result<Option<coords::Placement>> {
        let p = coords::locate(&self.columns, &opts.wanted(), self.decimal_comma, region)?;
        if let Some(p) = &p {
            for i in p.columns() {
                if coords::mixed_formats(&self.columns[i], self.decimal_comma) {
                    return Err(Error::bad(format!(
                        "column '{}' mixes degrees-minutes-seconds and decimal degrees; write \
                         every value the same way",
                        self.columns[i].name
                    )));
                }
            }
        }
        Ok(p)
    }
}

fn list(lines: &[u64]) -> String {
    let shown: Vec<String> = lines.iter().take(10).map(u64::to_string).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if lines.len() > 10 { ", ..." } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        assert_eq!(sniff_delimiter(b"a;b;c\n1;2,5;3\n"), b';');
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), b',');
        assert_eq!(sniff_delimiter(b"a\tb\n1\t2\n"), b'\t');
        assert_eq!(
            sniff_delimiter(
                b"Reporte 2024\nnombre;coordenadas\nA;25,6866, -100,31\nB;25,7, -100,2\n"
            ),
            b';'
        );
    }

    #[test]
    fn dates_and_markers() {
        let (d, t, _) = parse_date_text("15/03/2024", true).unwrap();
        assert_eq!(d.format("%F").to_string(), "2024-03-15");
        assert!(!t);
        let (d, _, _) = parse_date_text("03/15/2024", true).unwrap();
        assert_eq!(d.format("%F").to_string(), "2024-03-15");
        assert!(parse_date_text("2024-03-15T10:30:00", true).unwrap().1);
        assert!(is_null_marker("N/D") && is_null_marker("*") && is_null_marker("-"));
        assert!(!is_null_marker("Nuevo León") && !is_null_marker("-100.3"));
        assert!(
            looks_like_code("CVE_MUN") && looks_like_code("cvegeo") && looks_like_code("Folio")
        );
        assert!(!looks_like_code("poblacion") && !looks_like_code("longitud"));
    }
}
