//! Where a table's coordinates are, and how to read them: two columns under whatever
//! names the ministry's system used (`centroid_lon`, `LONGITUD_DEC`, `x_utm`), one
//! column holding both (`25.6866, -100.3161`, `lon lat`, degrees-minutes-seconds), or
//! WKT. Nothing is guessed silently: when two readings are possible the error lists
//! the candidates with sample values.

use super::{Cell, Column};
use crate::{Error, Result};

/// How a table's rows get their place.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Two columns: x (longitude or easting), y (latitude or northing).
    Pair { x: usize, y: usize },
    /// One column with both numbers; `lat_first` as told by the values or the user.
    Combined { col: usize, lat_first: bool },
    /// A WKT geometry column.
    Wkt { col: usize },
}

impl Placement {
    pub fn columns(&self) -> Vec<usize> {
        match *self {
            Placement::Pair { x, y } => vec![x, y],
            Placement::Combined { col, .. } | Placement::Wkt { col } => vec![col],
        }
    }
}

/// Name tokens that say "x / longitude" and "y / latitude".
const X_TOKENS: &[&str] = &[
    "lon",
    "lng",
    "long",
    "longitude",
    "longitud",
    "x",
    "este",
    "easting",
    "xcoord",
    "coordx",
    "utmx",
    "lonx",
];
const Y_TOKENS: &[&str] = &[
    "lat", "latitude", "latitud", "y", "norte", "northing", "ycoord", "coordy", "utmy", "laty",
];
/// Names of one column holding both coordinates.
const BOTH_TOKENS: &[&str] = &[
    "coordenadas",
    "coordenada",
    "coordinates",
    "coordinate",
    "coords",
    "coord",
    "latlon",
    "latlng",
    "lonlat",
    "lnglat",
    "ubicacion",
    "location",
    "georreferencia",
    "geolocalizacion",
    "punto",
    "point",
    "gps",
    "xy",
];
pub const WKT_NAMES: &[&str] = &["wkt", "geom", "geometry", "the_geom", "geometria", "shape"];

/// A column name split into folded tokens: `LONGITUD_DEC` → [longitud, dec],
/// `centroidLon` → [centroid, lon], `coord x` → [coord, x].
pub fn tokens(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase().map(crate::text::base_char));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Which coordinate a column name speaks of, and the rest of its name (the "affix"
/// that pairs `centroid_lon` with `centroid_lat`).
fn role(name: &str) -> Option<(char, String)> {
    let t = tokens(name);
    let compact: String = t.concat();
    for (i, tok) in t.iter().enumerate() {
        let rest = || {
            t.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join("_")
        };
        if X_TOKENS.contains(&tok.as_str()) {
            return Some(('x', rest()));
        }
        if Y_TOKENS.contains(&tok.as_str()) {
            return Some(('y', rest()));
        }
    }
    if X_TOKENS.contains(&compact.as_str()) {
        return Some(('x', String::new()));
    }
    if Y_TOKENS.contains(&compact.as_str()) {
        return Some(('y', String::new()));
    }
    None
}

fn is_both_name(name: &str) -> bool {
    let t = tokens(name);
    let compact = t.concat();
    t.iter().any(|s| BOTH_TOKENS.contains(&s.as_str())) && role(name).is_none()
        || BOTH_TOKENS.contains(&compact.as_str())
}

pub fn is_wkt_name(name: &str) -> bool {
    let n = crate::text::compact(name);
    WKT_NAMES.iter().any(|w| crate::text::compact(w) == n)
}

/// One number as written in a coordinate cell: decimal degrees or metres, with a
/// decimal comma when the file uses them, or degrees-minutes-seconds
/// (`25°40'12.5"N`, `100° 18' 57" O`, `-100 18 57`). The hemisphere letter, when
/// there is one, says which axis it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coord {
    pub value: f64,
    /// 'y' for N/S, 'x' for E/W/O, None when the text does not say.
    pub axis: Option<char>,
    pub dms: bool,
}

pub fn parse_number(s: &str, decimal_comma: bool) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let v = if decimal_comma && t.contains(',') && !t.contains('.') {
        t.replacen(',', ".", 1).parse::<f64>().ok()?
    } else {
        t.parse::<f64>().ok()?
    };
    v.is_finite().then_some(v)
}

pub fn parse_coord(s: &str, decimal_comma: bool) -> Option<Coord> {
    if let Some(v) = parse_number(s, decimal_comma) {
        return Some(Coord {
            value: v,
            axis: None,
            dms: false,
        });
    }
    parse_dms(s, decimal_comma)
}

fn parse_dms(s: &str, decimal_comma: bool) -> Option<Coord> {
    let t = s.trim();
    let mut sign = 1.0;
    let mut axis = None;
    let mut body = t;
    if let Some(first) = body.chars().next() {
        if first == '-' {
            sign = -1.0;
            body = &body[1..];
        }
    }
    // Hemisphere letter before or after the numbers.
    let upper: String = body.trim().to_uppercase();
    let mut core = upper.as_str();
    for (letter, ax, sg) in [
        ('N', 'y', 1.0),
        ('S', 'y', -1.0),
        ('E', 'x', 1.0),
        ('W', 'x', -1.0),
        ('O', 'x', -1.0),
    ] {
        if let Some(rest) = core.strip_suffix(letter) {
            core = rest;
            axis = Some(ax);
            sign *= sg;
            break;
        }
        if let Some(rest) = core.strip_prefix(letter) {
            core = rest;
            axis = Some(ax);
            sign *= sg;
            break;
        }
    }
    let mut parts: Vec<f64> = Vec::with_capacity(3);
    let mut cur = String::new();
    let mut marks = false;
    for c in core.chars() {
        if c.is_ascii_digit() || c == '.' || (decimal_comma && c == ',') {
            cur.push(if c == ',' { '.' } else { c });
        } else {
            if matches!(c, '°' | 'º' | '\'' | '’' | '′' | '"' | '”' | '″' | ':') {
                marks = true;
            } else if !c.is_whitespace() {
                return None;
            }
            if !cur.is_empty() {
                parts.push(cur.parse().ok()?);
                cur.clear();
            }
        }
    }
    if !cur.is_empty() {
        parts.push(cur.parse().ok()?);
    }
    if parts.len() < 2 && !(marks && parts.len() == 1) {
        return None;
    }
    if parts.len() > 3 {
        return None;
    }
    let (d, m, sec) = (
        parts[0],
        parts.get(1).copied().unwrap_or(0.0),
        parts.get(2).copied().unwrap_or(0.0),
    );
    if !(0.0..60.0).contains(&m) || !(0.0..60.0).contains(&sec) {
        return None;
    }
    let v = sign * (d + m / 60.0 + sec / 3600.0);
    (v.is_finite() && (marks || axis.is_some())).then_some(Coord {
        value: v,
        axis,
        dms: true,
    })
}

/// Splits one cell holding both coordinates: "25.6866, -100.3161", "25.6866 -100.3161",
/// "(25.68;-100.31)", "POINT-less" DMS pairs "25°40'12\"N 100°18'57\"W".
pub fn parse_pair(s: &str, decimal_comma: bool) -> Option<(Coord, Coord)> {
    let t = s
        .trim()
        .trim_start_matches(['(', '[', '{'])
        .trim_end_matches([')', ']', '}'])
        .trim();
    if t.is_empty() {
        return None;
    }
    // Separators in order of preference, then white space. A separator must split
    // the cell in exactly two numbers: "25,68, -100,31" (decimal commas) splits on
    // ", " but not on ",".
    for sep in [";", ", ", ",", "/", "|"] {
        if decimal_comma && sep == "," {
            continue; // "1234,50" is a number there, not a pair
        }
        let parts: Vec<&str> = t.split(sep).collect();
        if parts.len() == 2 {
            if let (Some(a), Some(b)) = (
                parse_coord(parts[0], decimal_comma),
                parse_coord(parts[1], decimal_comma),
            ) {
                return Some((a, b));
            }
        }
    }
    // White space: numbers, or DMS groups split after a hemisphere letter.
    // Positions in `t` itself: upper-casing the whole text may change its length
    // ("ß" becomes "SS"), so each character is compared on its own.
    for (i, c) in t.char_indices() {
        if matches!(c.to_ascii_uppercase(), 'N' | 'S') {
            let (a, b) = t.split_at(i + c.len_utf8());
            if let (Some(a), Some(b)) = (parse_dms(a, false), parse_dms(b, false)) {
                return Some((a, b));
            }
        }
    }
    let parts: Vec<&str> = t.split_whitespace().collect();
    if parts.len() == 2 {
        if let (Some(a), Some(b)) = (
            parse_number(parts[0], decimal_comma),
            parse_number(parts[1], decimal_comma),
        ) {
            let c = |v| Coord {
                value: v,
                axis: None,
                dms: false,
            };
            return Some((c(a), c(b)));
        }
    }
    None
}

/// The region used to tell lat/lon order apart when the ranges do not: the
/// configured region's bbox [minx, miny, maxx, maxy] in lon/lat.
pub type RegionBox = [f64; 4];

fn in_box(b: &RegionBox, lon: f64, lat: f64) -> bool {
    lon >= b[0] && lon <= b[2] && lat >= b[1] && lat <= b[3]
}

/// The order of one pair told by its values: Some(true) = latitude first.
pub fn order_of(a: Coord, b: Coord, region: &RegionBox) -> Option<bool> {
    match (a.axis, b.axis) {
        (Some('y'), _) | (_, Some('x')) => return Some(true),
        (Some('x'), _) | (_, Some('y')) => return Some(false),
        _ => {}
    }
    let (va, vb) = (a.value, b.value);
    if va.abs() > 90.0 && vb.abs() <= 90.0 {
        return Some(false);
    }
    if vb.abs() > 90.0 && va.abs() <= 90.0 {
        return Some(true);
    }
    match (in_box(region, vb, va), in_box(region, va, vb)) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// What the user said about where coordinates are.
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    pub lon: Option<&'a str>,
    pub lat: Option<&'a str>,
    pub x: Option<&'a str>,
    pub y: Option<&'a str>,
    pub coords: Option<&'a str>,
    /// "latlon" or "lonlat" for a combined column whose values do not tell.
    pub order: Option<&'a str>,
}

/// The share of a column's sampled values that `ok` accepts (0 when it has none).
fn share(col: &Column, ok: impl Fn(&str) -> bool) -> f64 {
    let vals: Vec<&String> = col.sample.iter().filter(|v| !v.trim().is_empty()).collect();
    if vals.is_empty() {
        return 0.0;
    }
    vals.iter().filter(|v| ok(v)).count() as f64 / vals.len() as f64
}

fn samples(col: &Column) -> String {
    col.sample
        .iter()
        .filter(|v| !v.trim().is_empty())
        .take(3)
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds where the coordinates are. `Ok(None)`: the table has no coordinates at all.
pub fn locate(
    columns: &[Column],
    wanted: &Wanted<'_>,
    decimal_comma: bool,
    region: &RegionBox,
) -> Result<Option<Placement>> {
    let num = |c: &Column| share(c, |v| parse_coord(v, decimal_comma).is_some());
    // What the user named wins.
    if let Some(name) = wanted.coords {
        let col = super::find_column(columns, name, "--coords")?;
        return combined(col, &columns[col], wanted.order, decimal_comma, region).map(Some);
    }
    let (xn, yn) = match (wanted.lon.or(wanted.x), wanted.lat.or(wanted.y)) {
        (Some(x), Some(y)) => (Some(x), Some(y)),
        (None, None) => (None, None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::bad(
                "give both coordinate columns: --lon with --lat (degrees) or --x with --y (projected, with --crs)",
            ))
        }
    };
    if let (Some(xn), Some(yn)) = (xn, yn) {
        let (xw, yw) = if wanted.lon.is_some() {
            ("--lon", "--lat")
        } else {
            ("--x", "--y")
        };
        let x = super::find_column(columns, xn, xw)?;
        let y = super::find_column(columns, yn, yw)?;
        for (i, w) in [(x, xw), (y, yw)] {
            if num(&columns[i]) < 0.5 {
                return Err(Error::bad(format!(
                    "{w} '{}' does not hold coordinates (values {})",
                    columns[i].name,
                    samples(&columns[i])
                )));
            }
        }
        return Ok(Some(Placement::Pair { x, y }));
    }
    // WKT columns by name and content.
    let wkt: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            is_wkt_name(&c.name) && share(c, |v| v.trim().parse::<wkt::Wkt<f64>>().is_ok()) >= 0.5
        })
        .map(|(i, _)| i)
        .collect();
    // Pairs by name: x-like and y-like columns with the same affix, numeric values.
    let roles: Vec<(usize, char, String)> = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| role(&c.name).map(|(r, a)| (i, r, a)))
        .collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (xi, _, xa) in roles.iter().filter(|r| r.1 == 'x') {
        for (yi, _, ya) in roles.iter().filter(|r| r.1 == 'y') {
            // Named as a pair: mostly numbers is enough, the bad rows are reported by line.
            if xa == ya && num(&columns[*xi]) >= 0.5 && num(&columns[*yi]) >= 0.5 {
                pairs.push((*xi, *yi));
            }
        }
    }
    if pairs.is_empty() {
        // One x-like and one y-like column with different affixes (LONGITUD_DEC, LAT).
        let xs: Vec<usize> = roles
            .iter()
            .filter(|r| r.1 == 'x' && num(&columns[r.0]) >= 0.9)
            .map(|r| r.0)
            .collect();
        let ys: Vec<usize> = roles
            .iter()
            .filter(|r| r.1 == 'y' && num(&columns[r.0]) >= 0.9)
            .map(|r| r.0)
            .collect();
        if xs.len() == 1 && ys.len() == 1 {
            pairs.push((xs[0], ys[0]));
        }
    }
    // Combined columns: by name, or any text column whose values are pairs.
    let both: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            !pairs.iter().any(|p| p.0 == *i || p.1 == *i)
                && !wkt.contains(i)
                && if is_both_name(&c.name) {
                    share(c, |v| parse_pair(v, decimal_comma).is_some()) >= 0.5
                } else {
                    // Found by its values alone: they must look like degrees.
                    share(c, |v| {
                        parse_pair(v, decimal_comma).is_some_and(|(a, b)| {
                            a.value.abs() <= 180.0
                                && b.value.abs() <= 180.0
                                && a.value.abs().min(b.value.abs()) <= 90.0
                        })
                    }) >= 0.9
                }
        })
        .map(|(i, _)| i)
        .collect();
    let n = pairs.len() + both.len() + wkt.len();
    if n == 0 {
        // Columns named like coordinates whose values are not: say so.
        if let Some((i, _, _)) = roles.first() {
            if roles.iter().any(|r| r.1 == 'x') && roles.iter().any(|r| r.1 == 'y') {
                return Err(Error::bad(format!(
                    "column '{}' is named like a coordinate but its values are not numbers ({}); \
                     fix the values or name the columns with --lon/--lat",
                    columns[*i].name,
                    samples(&columns[*i])
                )));
            }
        }
        return Ok(None);
    }
    if n > 1 {
        let mut list = Vec::new();
        for (x, y) in &pairs {
            list.push(format!(
                "--lon {} --lat {} ({} / {})",
                columns[*x].name,
                columns[*y].name,
                samples(&columns[*x]),
                samples(&columns[*y])
            ));
        }
        for c in &both {
            list.push(format!(
                "--coords {} ({})",
                columns[*c].name,
                samples(&columns[*c])
            ));
        }
        for c in &wkt {
            list.push(format!("WKT column {}", columns[*c].name));
        }
        return Err(Error::bad(format!(
            "more than one set of columns could be the coordinates; choose one: {}",
            list.join("; ")
        )));
    }
    if let Some(&(x, y)) = pairs.first() {
        return Ok(Some(Placement::Pair { x, y }));
    }
    if let Some(&col) = wkt.first() {
        return Ok(Some(Placement::Wkt { col }));
    }
    let col = both[0];
    combined(col, &columns[col], wanted.order, decimal_comma, region).map(Some)
}

/// A column with both coordinates: its order from the user, else from the values
/// (hemisphere letters, a value beyond ±90, or the only order that lands in the
/// region), the same for every row; refused when the rows disagree or cannot tell.
fn combined(
    col: usize,
    c: &Column,
    order: Option<&str>,
    decimal_comma: bool,
    region: &RegionBox,
) -> Result<Placement> {
    if let Some(o) = order {
        let lat_first = match crate::text::compact(o).as_str() {
            "latlon" | "latlng" | "yx" => true,
            "lonlat" | "lnglat" | "xy" => false,
            _ => {
                return Err(Error::bad(format!(
                    "--coord-order '{o}' is not latlon or lonlat"
                )))
            }
        };
        return Ok(Placement::Combined { col, lat_first });
    }
    let (mut lat_first, mut lon_first, mut unknown) = (0usize, 0usize, 0usize);
    for v in c.sample.iter().filter(|v| !v.trim().is_empty()) {
        match parse_pair(v, decimal_comma).and_then(|(a, b)| order_of(a, b, region)) {
            Some(true) => lat_first += 1,
            Some(false) => lon_first += 1,
            None => unknown += 1,
        }
    }
    if lat_first > 0 && lon_first > 0 {
        return Err(Error::bad(format!(
            "column '{}' mixes latitude-first and longitude-first values ({lat_first} rows \
             look like 'lat, lon', {lon_first} like 'lon, lat'); use one order in the whole column",
            c.name
        )));
    }
    if lat_first == 0 && lon_first == 0 {
        return Err(Error::bad(format!(
            "column '{}' holds two numbers per row ({}) but their order cannot be told from \
             the values ({unknown} rows fit both or neither order in the expected region): \
             say it with --coord-order latlon or --coord-order lonlat",
            c.name,
            samples(c)
        )));
    }
    Ok(Placement::Combined {
        col,
        lat_first: lat_first > 0,
    })
}

/// Reads one row's point: (x, y) in the source CRS, or why it cannot.
pub fn point<'c>(
    p: &Placement,
    cell: impl Fn(usize) -> Option<&'c Cell<'c>>,
    decimal_comma: bool,
) -> std::result::Result<Option<geo::Geometry<f64>>, String> {
    let text = |i: usize| cell(i).map(Cell::as_text).unwrap_or_default();
    let num = |i: usize| -> std::result::Result<Option<Coord>, String> {
        match cell(i) {
            None | Some(Cell::Empty) => Ok(None),
            Some(Cell::Number(v)) => Ok(Some(Coord {
                value: *v,
                axis: None,
                dms: false,
            })),
            Some(c) => {
                let t = c.as_text();
                parse_coord(&t, decimal_comma)
                    .map(Some)
                    .ok_or_else(|| format!("'{t}' is not a coordinate"))
            }
        }
    };
    match *p {
        Placement::Pair { x, y } => {
            let (cx, cy) = (num(x)?, num(y)?);
            match (cx, cy) {
                (None, None) => Ok(None),
                (Some(a), Some(b)) => {
                    // A DMS value with a hemisphere letter says which one it is.
                    let (a, b) = if a.axis == Some('y') || b.axis == Some('x') {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    Ok(Some(geo::Geometry::Point(geo::Point::new(
                        a.value, b.value,
                    ))))
                }
                _ => Err(format!("longitude '{}', latitude '{}'", text(x), text(y))),
            }
        }
        Placement::Combined { col, lat_first } => {
            let t = text(col);
            if t.trim().is_empty() {
                return Ok(None);
            }
            let (a, b) = parse_pair(&t, decimal_comma)
                .ok_or_else(|| format!("'{t}' is not a coordinate pair"))?;
            let lat_first = match (a.axis, b.axis) {
                (Some('y'), _) | (_, Some('x')) => true,
                (Some('x'), _) | (_, Some('y')) => false,
                _ => lat_first,
            };
            let (lon, lat) = if lat_first {
                (b.value, a.value)
            } else {
                (a.value, b.value)
            };
            Ok(Some(geo::Geometry::Point(geo::Point::new(lon, lat))))
        }
        Placement::Wkt { col } => {
            let t = text(col);
            if t.trim().is_empty() {
                return Ok(None);
            }
            let w: wkt::Wkt<f64> = t
                .trim()
                .parse()
                .map_err(|e| format!("WKT cannot be read: {e}"))?;
            let g: geo::Geometry<f64> = w
                .try_into()
                .map_err(|e| format!("WKT cannot be read: {e:?}"))?;
            Ok(Some(g))
        }
    }
}

/// Whether a coordinate column's sampled values mix degrees-minutes-seconds and
/// decimal numbers.
pub fn mixed_formats(col: &Column, decimal_comma: bool) -> bool {
    let mut dms = false;
    let mut dec = false;
    for v in col.sample.iter().filter(|v| !v.trim().is_empty()) {
        match parse_coord(v, decimal_comma) {
            Some(c) if c.dms => dms = true,
            Some(_) => dec = true,
            None => {}
        }
    }
    dms && dec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: a character whose upper case is longer ("ß" → "SS")
    /// made the pair splitter cut inside a character (a panic on a CP1252 CSV).
    #[test]
    fn case_expanding_characters_do_not_panic() {
        assert_eq!(parse_pair("ß", false), None);
        assert_eq!(parse_pair("ßß 25°N 100°W", false), None);
        assert!(parse_pair("25°40'N 100°18'W", false).is_some());
    }

    #[test]
    fn names_are_split_and_recognised() {
        assert_eq!(tokens("LONGITUD_DEC"), vec!["longitud", "dec"]);
        assert_eq!(tokens("centroidLon"), vec!["centroid", "lon"]);
        assert_eq!(role("centroid_lon"), Some(('x', "centroid".into())));
        assert_eq!(role("centroid_lat"), Some(('y', "centroid".into())));
        assert_eq!(role("x_utm"), Some(('x', "utm".into())));
        assert_eq!(role("coord_y"), Some(('y', "coord".into())));
        assert_eq!(role("Latitud"), Some(('y', String::new())));
        assert_eq!(role("nombre"), None);
        assert!(is_both_name("coordenadas"));
        assert!(is_both_name("Lat_Lon"));
    }

    #[test]
    fn numbers_dms_and_pairs() {
        assert_eq!(parse_number("25,6866", true), Some(25.6866));
        assert_eq!(parse_number("25,6866", false), None);
        let c = parse_coord("25°40'12.5\"N", false).unwrap();
        assert!((c.value - 25.670138).abs() < 1e-5 && c.axis == Some('y'));
        let c = parse_coord("100° 18' 57\" O", false).unwrap();
        assert!((c.value + 100.315833).abs() < 1e-5 && c.axis == Some('x'));
        let (a, b) = parse_pair("25.686600, -100.316100", false).unwrap();
        assert_eq!((a.value, b.value), (25.6866, -100.3161));
        let (a, b) = parse_pair("-100.3161 25.6866", false).unwrap();
        assert_eq!((a.value, b.value), (-100.3161, 25.6866));
        let (a, b) = parse_pair("25,6866; -100,3161", true).unwrap();
        assert_eq!((a.value, b.value), (25.6866, -100.3161));
        let (a, b) = parse_pair("25°40'12\"N 100°18'57\"W", false).unwrap();
        assert_eq!((a.axis, b.axis), (Some('y'), Some('x')));
        assert!(parse_pair("Centro", false).is_none());
    }

    #[test]
    fn order_from_values_and_region() {
        let nl = [-101.3, 23.1, -98.4, 27.8];
        let c = |v| Coord {
            value: v,
            axis: None,
            dms: false,
        };
        assert_eq!(order_of(c(25.68), c(-100.31), &nl), Some(true));
        assert_eq!(order_of(c(-100.31), c(25.68), &nl), Some(false));
        // Both within ±90 and neither order in the region: cannot tell.
        assert_eq!(order_of(c(10.0), c(20.0), &nl), None);
    }
}
