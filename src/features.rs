//! OGC API – Features semantics over a loaded layer: the items query (bbox,
//! bbox-crs, crs, datetime, equality filters on queryables, paging, format), its
//! validation, and the GeoJSON pages. Pure functions of (layer, query): no axum here,
//! so they are unit tested without a server.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use layers::fgb::{Field, FieldType, RawValue};
use layers::index::LoadedLayer;
use serde_json::{json, Value};

use crate::cql2;
use crate::download::DownloadFormat;
use crate::ogc::crs::{self, OutputCrs, Reproject};

/// Default and maximum page sizes (OGC API – Features, /req/core/fc-limit-*).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// A 400 with a message that names the parameter and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct BadParam(pub String);

/// Response encodings of the OGC resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
    /// A file of the whole result (items only).
    Download(DownloadFormat),
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Html => "html",
            Format::Download(d) => d.param(),
        }
    }
}

/// `f=` of the documents: `json` or `html`.
pub fn parse_format(v: &str) -> Result<Format, BadParam> {
    match v {
        "json" => Ok(Format::Json),
        "html" => Ok(Format::Html),
        _ => Err(BadParam(format!("f must be 'json' or 'html', got '{v}'"))),
    }
}

/// `f=` of items: a page (`json`, `html`) or a download of the whole result.
pub fn parse_items_format(v: &str) -> Result<Format, BadParam> {
    match (v, DownloadFormat::parse(v)) {
        ("json", _) => Ok(Format::Json),
        ("html", _) => Ok(Format::Html),
        (_, Some(d)) => Ok(Format::Download(d)),
        _ => Err(BadParam(format!(
            "f must be 'json' or 'html' (a page of GeoJSON or HTML) or a download format: {}; got '{v}'",
            crate::download::ALL.map(|d| d.param()).join(", ")
        ))),
    }
}

/// A time interval in milliseconds since 1970 UTC; `None` ends are open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRange {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// One `property=value` equality filter on a queryable.
#[derive(Debug, Clone, PartialEq)]
pub struct PropFilter {
    /// Schema index of the property.
    pub index: usize,
    pub name: String,
    pub raw: String,
    value: FilterValue,
}

#[derive(Debug, Clone, PartialEq)]
enum FilterValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemsQuery {
    /// As given, in the axis order of `bbox_crs`.
    pub bbox: Option<[f64; 4]>,
    pub bbox_raw: Option<String>,
    pub bbox_crs: &'static OutputCrs,
    pub crs: &'static OutputCrs,
    pub datetime: Option<TimeRange>,
    pub datetime_raw: Option<String>,
    pub props: Vec<PropFilter>,
    /// CQL2 `filter` (geometry literals already in lon/lat) and its raw parameters.
    pub filter: Option<cql2::Expr>,
    pub filter_raw: Option<String>,
    pub filter_lang: Option<String>,
    pub filter_crs: &'static OutputCrs,
    pub limit: usize,
    /// `limit` was given (downloads are the whole result unless it is).
    pub limit_set: bool,
    pub offset: usize,
    /// Only when given with `f=` (otherwise the Accept header decides).
    pub format: Option<Format>,
}

impl Default for ItemsQuery {
    fn default() -> Self {
        ItemsQuery {
            bbox: None,
            bbox_raw: None,
            bbox_crs: crs::crs84(),
            crs: crs::crs84(),
            datetime: None,
            datetime_raw: None,
            props: Vec::new(),
            filter: None,
            filter_raw: None,
            filter_lang: None,
            filter_crs: crs::crs84(),
            limit: DEFAULT_LIMIT,
            limit_set: false,
            offset: 0,
            format: None,
        }
    }
}

/// The parameters `/items` takes besides the collection's queryables.
pub const ITEMS_PARAMS: &[&str] = &[
    "bbox",
    "bbox-crs",
    "crs",
    "datetime",
    "filter",
    "filter-lang",
    "filter-crs",
    "limit",
    "offset",
    "f",
];

/// The layer's temporal property: its first date or date-time field.
pub fn temporal_field(schema: &[Field]) -> Option<(usize, &Field)> {
    schema
        .iter()
        .enumerate()
        .find(|(_, f)| matches!(f.ftype, FieldType::Date | FieldType::Datetime))
}

/// Parses the query string of `/collections/{id}/items` for a layer with `schema`.
/// Unknown parameters are an error (a misspelt `bbox` must not silently return the
/// whole layer); the message lists what is accepted.
pub fn parse_items_query(raw: Option<&str>, schema: &[Field]) -> Result<ItemsQuery, BadParam> {
    let mut q = ItemsQuery::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !seen.insert(k.to_string()) {
            return Err(BadParam(format!(
                "query parameter '{k}' is given more than once"
            )));
        }
        match k.as_ref() {
            "bbox" => {
                q.bbox = Some(parse_bbox_numbers(&v)?);
                q.bbox_raw = Some(v.to_string());
            }
            "bbox-crs" => q.bbox_crs = crs::parse("bbox-crs", &v)?,
            "crs" => q.crs = crs::parse("crs", &v)?,
            "datetime" => {
                if temporal_field(schema).is_none() {
                    return Err(BadParam(
                        "datetime cannot be applied: this collection has no date or date-time \
                         property (its extent has no temporal part)"
                            .into(),
                    ));
                }
                q.datetime = parse_datetime(&v)?;
                q.datetime_raw = Some(v.to_string());
            }
            "limit" => {
                q.limit_set = true;
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        BadParam(format!(
                            "limit must be a whole number from 1 to {MAX_LIMIT}, got '{v}'"
                        ))
                    })?
            }
            "offset" => {
                q.offset = v.parse::<usize>().map_err(|_| {
                    BadParam(format!("offset must be a whole number >= 0, got '{v}'"))
                })?
            }
            "f" => q.format = Some(parse_items_format(&v)?),
            "filter" => q.filter_raw = Some(v.to_string()),
            "filter-lang" => q.filter_lang = Some(v.to_string()),
            "filter-crs" => q.filter_crs = crs::parse("filter-crs", &v)?,
            name => match schema.iter().position(|f| f.name == name) {
                Some(index) => q.props.push(PropFilter {
                    index,
                    name: name.to_string(),
                    raw: v.to_string(),
                    value: filter_value(name, schema[index].ftype, &v)?,
                }),
                None => {
                    let mut accepted: Vec<&str> = ITEMS_PARAMS.to_vec();
                    accepted.extend(schema.iter().map(|f| f.name.as_str()));
                    return Err(BadParam(format!(
                        "unknown query parameter '{name}'; this endpoint accepts: {}",
                        accepted.join(", ")
                    )));
                }
            },
        }
    }
    if let Some(b) = q.bbox {
        check_bbox(b, q.bbox_crs, q.bbox_raw.as_deref().unwrap_or(""))?;
    }
    if let Some(f) = &q.filter_raw {
        let mut e = match q.filter_lang.as_deref() {
            None | Some("cql2-text") => cql2::parse_text(f, schema),
            Some("cql2-json") => cql2::parse_json(f, schema),
            Some(other) => {
                return Err(BadParam(format!(
                    "filter-lang must be 'cql2-text' (default) or 'cql2-json', got '{other}'"
                )))
            }
        }
        .map_err(|e| BadParam(e.0))?;
        if q.filter_crs.epsg.is_some() {
            let r = Reproject::new(q.filter_crs).map_err(BadParam)?;
            e.map_geometries(&mut |g| r.geometry_to_lonlat(g))
                .map_err(|m| BadParam(format!("filter geometry in {}: {m}", q.filter_crs.uri)))?;
        }
        q.filter = Some(e);
    } else if q.filter_lang.is_some() || q.filter_crs.epsg.is_some() {
        return Err(BadParam("filter-lang and filter-crs need a filter".into()));
    }
    Ok(q)
}

fn filter_value(name: &str, t: FieldType, v: &str) -> Result<FilterValue, BadParam> {
    Ok(match t {
        FieldType::Int | FieldType::Long => FilterValue::Int(
            v.trim()
                .parse()
                .map_err(|_| BadParam(format!("{name} is a whole-number property, got '{v}'")))?,
        ),
        FieldType::Float => FilterValue::Float(
            v.trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| BadParam(format!("{name} is a numeric property, got '{v}'")))?,
        ),
        FieldType::Bool => FilterValue::Bool(match v.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(BadParam(format!(
                    "{name} is a true/false property, got '{v}'"
                )))
            }
        }),
        FieldType::String | FieldType::Date | FieldType::Datetime => {
            FilterValue::Text(v.to_string())
        }
    })
}

/// `bbox=` numbers: 4, or 6 for a 3D box (heights are ignored: layers are 2D).
pub fn parse_bbox_numbers(v: &str) -> Result<[f64; 4], BadParam> {
    let nums: Vec<f64> = v
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            BadParam(format!(
                "bbox must be 4 comma-separated numbers (minLon,minLat,maxLon,maxLat), got '{v}'"
            ))
        })?;
    let b = match nums.len() {
        4 => [nums[0], nums[1], nums[2], nums[3]],
        6 => [nums[0], nums[1], nums[3], nums[4]],
        n => {
            return Err(BadParam(format!(
                "bbox must have 4 numbers (minLon,minLat,maxLon,maxLat) or 6 for a 3D box, got {n}"
            )))
        }
    };
    if b.iter().any(|x| !x.is_finite()) {
        return Err(BadParam(format!("bbox has a non-finite number: '{v}'")));
    }
    Ok(b)
}

/// Range and order checks, in the axis order of the box's CRS.
fn check_bbox(b: [f64; 4], c: &OutputCrs, v: &str) -> Result<(), BadParam> {
    let geographic = matches!(c.epsg, None | Some(4326));
    // (lon, lat) order of the numbers as given.
    let (x0, y0, x1, y1) = if c.north_first {
        (b[1], b[0], b[3], b[2])
    } else {
        (b[0], b[1], b[2], b[3])
    };
    let (xn, yn) = match (geographic, c.north_first) {
        (true, false) => ("longitude", "latitude"),
        (true, true) => ("longitude", "latitude"),
        (false, false) => ("easting", "northing"),
        (false, true) => ("easting", "northing"),
    };
    if geographic {
        if !(-180.0..=180.0).contains(&x0) || !(-180.0..=180.0).contains(&x1) {
            return Err(BadParam(format!(
                "bbox longitudes must be within -180..180, got '{v}'"
            )));
        }
        if !(-90.0..=90.0).contains(&y0) || !(-90.0..=90.0).contains(&y1) {
            return Err(BadParam(format!(
                "bbox latitudes must be within -90..90, got '{v}'{}",
                if c.north_first {
                    " (EPSG:4326 boxes are minLat,minLon,maxLat,maxLon)"
                } else {
                    ""
                }
            )));
        }
    }
    if y0 > y1 {
        return Err(BadParam(format!(
            "bbox minimum {yn} {y0} is greater than the maximum {y1}"
        )));
    }
    // A lon/lat box whose west edge is east of its east edge crosses the antimeridian
    // (OGC API – Features, /req/core/fc-bbox-definition); a projected one is an error.
    if x0 > x1 && !geographic {
        return Err(BadParam(format!(
            "bbox minimum {xn} {x0} is greater than the maximum {x1}"
        )));
    }
    Ok(())
}

/// A date or date-time as the interval it covers (a date is its whole day; a
/// date-time without an offset is taken as UTC).
pub fn time_span(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let ms = t.timestamp_millis();
        return Some((ms, ms));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            let ms = t.and_utc().timestamp_millis();
            return Some((ms, ms));
        }
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let start = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    Some((start, start + 86_400_000 - 1))
}

/// `datetime=`: an instant, or an interval `start/end` where either end may be open
/// (`..` or empty).
pub fn parse_datetime(v: &str) -> Result<Option<TimeRange>, BadParam> {
    let bad = |what: &str| {
        BadParam(format!(
            "datetime {what}: expected an RFC 3339 date or date-time (2024-05-01, \
             2024-05-01T10:00:00Z) or an interval start/end with '..' for an open end, got '{v}'"
        ))
    };
    let part = |p: &str| -> Result<Option<(i64, i64)>, BadParam> {
        match p.trim() {
            "" | ".." => Ok(None),
            s => time_span(s).map(Some).ok_or_else(|| bad("is not valid")),
        }
    };
    let r = match v.split_once('/') {
        Some((a, b)) => {
            if b.contains('/') {
                return Err(bad("has more than one '/'"));
            }
            // ISO 8601 intervals may give one end as a duration: start/P1M2D, P1D/end.
            let (a, b) = (a.trim(), b.trim());
            match (duration(a), duration(b)) {
                (None, Some(d)) => {
                    let s = part(a)?.ok_or_else(|| bad("has a duration after an open start"))?;
                    TimeRange {
                        start: Some(s.0),
                        end: Some(d.add(s.0).ok_or_else(|| bad("is out of range"))?),
                    }
                }
                (Some(d), None) => {
                    let e = part(b)?.ok_or_else(|| bad("has a duration before an open end"))?;
                    TimeRange {
                        start: Some(d.sub(e.1).ok_or_else(|| bad("is out of range"))?),
                        end: Some(e.1),
                    }
                }
                (Some(_), Some(_)) => return Err(bad("has two durations")),
                (None, None) => TimeRange {
                    start: part(a)?.map(|s| s.0),
                    end: part(b)?.map(|e| e.1),
                },
            }
        }
        None => {
            if v.trim() == ".." {
                return Err(bad("cannot be '..' alone"));
            }
            let (s, e) = part(v)?.ok_or_else(|| bad("is empty"))?;
            TimeRange {
                start: Some(s),
                end: Some(e),
            }
        }
    };
    if let (Some(s), Some(e)) = (r.start, r.end) {
        if s > e {
            return Err(bad("starts after it ends"));
        }
    }
    Ok(Some(r))
}

/// An ISO 8601 duration (`P1Y2M3DT4H5M6S`, `P2W`): calendar months and exact
/// milliseconds, applied in UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IsoDuration {
    months: u32,
    millis: i64,
}

fn duration(s: &str) -> Option<IsoDuration> {
    let rest = s.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return None,
        None => (rest, ""),
    };
    let mut d = IsoDuration {
        months: 0,
        millis: 0,
    };
    let mut take = |part: &str, units: &[(char, u32, i64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let &(_, months, ms) = units.iter().find(|u| u.0 == c)?;
            let n: f64 = num.parse().ok()?;
            num.clear();
            if months > 0 {
                d.months = d.months.checked_add((n as u32).checked_mul(months)?)?;
            } else {
                d.millis = d.millis.checked_add((n * ms as f64) as i64)?;
            }
        }
        num.is_empty().then_some(())
    };
    take(
        date,
        &[
            ('Y', 12, 0),
            ('M', 1, 0),
            ('W', 0, 7 * 86_400_000),
            ('D', 0, 86_400_000),
        ],
    )?;
    take(
        time,
        &[('H', 0, 3_600_000), ('M', 0, 60_000), ('S', 0, 1_000)],
    )?;
    Some(d)
}

impl IsoDuration {
    fn add(self, ms: i64) -> Option<i64> {
        let t = chrono::DateTime::from_timestamp_millis(ms)?
            .checked_add_months(chrono::Months::new(self.months))?;
        t.timestamp_millis().checked_add(self.millis)
    }

    fn sub(self, ms: i64) -> Option<i64> {
        let t = chrono::DateTime::from_timestamp_millis(ms)?
            .checked_sub_months(chrono::Months::new(self.months))?;
        t.timestamp_millis().checked_sub(self.millis)
    }
}

impl TimeRange {
    fn overlaps(&self, (s, e): (i64, i64)) -> bool {
        self.start.is_none_or(|qs| e >= qs) && self.end.is_none_or(|qe| s <= qe)
    }
}

impl PropFilter {
    fn matches(&self, v: &RawValue<'_>) -> bool {
        match (&self.value, v) {
            (FilterValue::Int(a), RawValue::I64(b)) => a == b,
            (FilterValue::Int(a), RawValue::U64(b)) => u64::try_from(*a) == Ok(*b),
            (FilterValue::Int(a), RawValue::F64(b)) => (*a as f64) == *b,
            (FilterValue::Float(a), RawValue::F64(b)) => a == b,
            (FilterValue::Float(a), RawValue::I64(b)) => *a == *b as f64,
            (FilterValue::Bool(a), RawValue::Bool(b)) => a == b,
            (FilterValue::Text(a), RawValue::Str(b)) => a.as_bytes() == *b,
            _ => false,
        }
    }
}

impl ItemsQuery {
    pub fn has_property_tests(&self) -> bool {
        self.datetime.is_some() || !self.props.is_empty() || self.filter.is_some()
    }

    /// The query string that reproduces this query at `offset` (paging links carry
    /// every parameter).
    pub fn query_string(&self, offset: usize, format: Option<Format>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(b) = &self.bbox_raw {
            s.append_pair("bbox", b);
        }
        if self.bbox_crs.epsg.is_some() {
            s.append_pair("bbox-crs", self.bbox_crs.uri);
        }
        if self.crs.epsg.is_some() {
            s.append_pair("crs", self.crs.uri);
        }
        if let Some(d) = &self.datetime_raw {
            s.append_pair("datetime", d);
        }
        if let Some(f) = &self.filter_raw {
            s.append_pair("filter", f);
        }
        if let Some(l) = &self.filter_lang {
            s.append_pair("filter-lang", l);
        }
        if self.filter_crs.epsg.is_some() {
            s.append_pair("filter-crs", self.filter_crs.uri);
        }
        for p in &self.props {
            s.append_pair(&p.name, &p.raw);
        }
        s.append_pair("limit", &self.limit.to_string());
        s.append_pair("offset", &offset.to_string());
        if let Some(f) = format {
            s.append_pair("f", f.name());
        }
        s.finish()
    }
}

/// One page of items: the GeoJSON body and the links (also sent as `Link` headers).
pub struct Page {
    pub body: Vec<u8>,
    pub links: Vec<Value>,
    pub matched: usize,
    pub returned: usize,
}

/// Positions (id order) of the features whose geometry intersects `bbox` (lon/lat).
/// The R-tree gives the candidates whose bounding box intersects; those not wholly
/// inside the box are confirmed against their real geometry (a diagonal road's
/// bounding box can cross the box while the road does not).
pub fn bbox_matches(layer: &LoadedLayer, bbox: [f64; 4]) -> layers::Result<Vec<u32>> {
    if bbox[0] > bbox[2] {
        // Crossing the antimeridian: the part east of it and the part west of it.
        let mut a = bbox_matches(layer, [bbox[0], bbox[1], 180.0, bbox[3]])?;
        a.extend(bbox_matches(layer, [-180.0, bbox[1], bbox[2], bbox[3]])?);
        a.sort_unstable();
        a.dedup();
        return Ok(a);
    }
    use geo::Intersects;
    let rect = geo::Rect::new(
        geo::coord! {x: bbox[0], y: bbox[1]},
        geo::coord! {x: bbox[2], y: bbox[3]},
    );
    let mut out = Vec::new();
    for (i, (pos, e)) in layer.query_bbox_iter(bbox).enumerate() {
        crate::limits::check_every(i)?;
        let inside = e[0] >= bbox[0] && e[1] >= bbox[1] && e[2] <= bbox[2] && e[3] <= bbox[3];
        if inside {
            out.push(pos);
            continue;
        }
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        if let (Some(g), _) = layer.geometry_and_properties(offset)? {
            if g.intersects(&rect) {
                out.push(pos);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Positions (id order) of the features that satisfy every part of the query.
fn matching(
    layer: &LoadedLayer,
    q: &ItemsQuery,
    bbox: Option<[f64; 4]>,
) -> layers::Result<Vec<u32>> {
    let mut hits = match bbox {
        Some(b) => Some(bbox_matches(layer, b)?),
        None => None,
    };
    // A spatial test the filter requires: the R-tree narrows the candidates first.
    if let Some(fb) = q.filter.as_ref().and_then(cql2::Expr::required_bbox) {
        let mut near: Vec<u32> = layer.query_bbox(fb);
        if let Some(h) = &hits {
            let keep: std::collections::HashSet<u32> = h.iter().copied().collect();
            near.retain(|p| keep.contains(p));
        }
        hits = Some(near);
    }
    // A box in a projected CRS is a rectangle there, not in lon/lat: the covering
    // lon/lat box found the candidates, the test is in the box's own CRS.
    if let (Some(h), Some(b), false) =
        (&mut hits, q.bbox, q.bbox_crs.epsg.is_none_or(|c| c == 4326))
    {
        use geo::Intersects;
        let to = Reproject::new(q.bbox_crs).map_err(layers::Error::Internal)?;
        let rect = geo::Rect::new(
            geo::coord! {x: b[0], y: b[1]},
            geo::coord! {x: b[2], y: b[3]},
        );
        let mut kept = Vec::with_capacity(h.len());
        for (i, &pos) in h.iter().enumerate() {
            crate::limits::check_every(i)?;
            let Some((_, offset)) = layer.at(pos) else {
                continue;
            };
            if let (Some(mut g), _) = layer.geometry_and_properties(offset)? {
                if to.geometry(&mut g).is_ok() && g.intersects(&rect) {
                    kept.push(pos);
                }
            }
        }
        *h = kept;
    }
    let candidates: Box<dyn Iterator<Item = u32>> = match hits {
        Some(h) => Box::new(h.into_iter()),
        None => Box::new(0..layer.len() as u32),
    };
    if !q.has_property_tests() {
        return Ok(candidates.collect());
    }
    let time_idx = temporal_field(&layer.meta.schema).map(|(i, _)| i);
    let schema = &layer.meta.schema;
    let needs_geometry = q.filter.as_ref().is_some_and(cql2::Expr::needs_geometry);
    let mut out = Vec::new();
    for (i, pos) in candidates.enumerate() {
        crate::limits::check_every(i)?;
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        // Absent (null) properties never match.
        let mut ok = vec![false; q.props.len()];
        let mut time_ok = q.datetime.is_none();
        let mut values: Vec<Option<RawValue<'_>>> = vec![None; schema.len()];
        layer.for_each_value(offset, |i, v| {
            if let Some(slot) = values.get_mut(i) {
                *slot = Some(v);
            }
            for (k, p) in q.props.iter().enumerate() {
                if p.index == i && p.matches(&v) {
                    ok[k] = true;
                }
            }
            if let (Some(r), Some(ti), RawValue::Str(s)) = (&q.datetime, time_idx, &v) {
                if ti == i {
                    time_ok = std::str::from_utf8(s)
                        .ok()
                        .and_then(time_span)
                        .is_some_and(|span| r.overlaps(span));
                }
            }
        })?;
        if !(time_ok && ok.iter().all(|b| *b)) {
            continue;
        }
        if let Some(f) = &q.filter {
            let geometry = if needs_geometry {
                layer.geometry_and_properties(offset)?.0
            } else {
                None
            };
            let row = cql2::Row {
                values: &values,
                schema,
                geometry: geometry.as_ref(),
            };
            // Unknown (a null compared) is not a match, as in SQL.
            if f.eval(&row) != Some(true) {
                continue;
            }
        }
        out.push(pos);
    }
    Ok(out)
}

/// Positions (id order) of the whole result of `q` (every filter, no paging).
pub fn result_positions(layer: &LoadedLayer, q: &ItemsQuery) -> layers::Result<Vec<u32>> {
    let bbox = match q.bbox {
        Some(b) => Some(
            Reproject::new(q.bbox_crs)
                .and_then(|r| r.bbox_to_lonlat(b))
                .map_err(|e| layers::Error::bad(format!("bbox in {}: {e}", q.bbox_crs.uri)))?,
        ),
        None => None,
    };
    matching(layer, q, bbox)
}

/// The positions a download holds: the whole result, or the page `limit`/`offset`
/// select when `limit` is given.
pub fn download_positions(layer: &LoadedLayer, q: &ItemsQuery) -> layers::Result<Vec<u32>> {
    let mut all = result_positions(layer, q)?;
    if q.limit_set || q.offset > 0 {
        let start = q.offset.min(all.len());
        let end = if q.limit_set {
            (start + q.limit).min(all.len())
        } else {
            all.len()
        };
        all = all[start..end].to_vec();
    }
    Ok(all)
}

/// One page of `/items` as a GeoJSON FeatureCollection with the OGC paging members.
/// `format` is the page's own encoding (for the self/alternate links).
pub fn items_page(
    layer: &LoadedLayer,
    q: &ItemsQuery,
    collection_url: &str,
    format: Format,
) -> layers::Result<Page> {
    let reproject = Reproject::new(q.crs).map_err(layers::Error::Internal)?;
    let hits = result_positions(layer, q)?;
    let matched = hits.len();
    let start = q.offset.min(matched);
    let end = (start + q.limit).min(matched);
    let mut out = Vec::with_capacity(256 + (end - start) * 256);
    out.extend_from_slice(br#"{"type":"FeatureCollection","features":["#);
    for (n, &pos) in hits[start..end].iter().enumerate() {
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        if n > 0 {
            out.push(b',');
        }
        reproject.write_feature(layer, offset, &mut out)?;
    }
    let url = |offset: usize, f: Format| {
        format!("{collection_url}/items?{}", q.query_string(offset, Some(f)))
    };
    let (other, other_type) = match format {
        Format::Html => (Format::Json, "application/geo+json"),
        _ => (Format::Html, "text/html"),
    };
    let this_type = match format {
        Format::Html => "text/html",
        _ => "application/geo+json",
    };
    let mut links = vec![
        json!({"href": url(q.offset, format), "rel": "self", "type": this_type, "title": "this page"}),
        json!({"href": url(q.offset, other), "rel": "alternate", "type": other_type, "title": "this page in another format"}),
        json!({"href": collection_url, "rel": "collection", "type": "application/json", "title": "the collection"}),
    ];
    if end < matched {
        links.push(json!({"href": url(end, format), "rel": "next", "type": this_type, "title": "next page"}));
    }
    if q.offset > 0 {
        let prev = q.offset.saturating_sub(q.limit);
        links.push(json!({"href": url(prev, format), "rel": "prev", "type": this_type, "title": "previous page"}));
    }
    let tail = json!({
        "numberMatched": matched,
        "numberReturned": end - start,
        "timeStamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "links": links,
    });
    out.extend_from_slice(b"],");
    let tail_bytes =
        serde_json::to_vec(&tail).map_err(|e| layers::Error::Internal(e.to_string()))?;
    // Splice the members of `tail` into the open object.
    out.extend_from_slice(&tail_bytes[1..]);
    Ok(Page {
        body: out,
        links,
        matched,
        returned: end - start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Vec<Field> {
        vec![
            Field {
                name: "colonia".into(),
                ftype: FieldType::String,
            },
            Field {
                name: "n".into(),
                ftype: FieldType::Long,
            },
            Field {
                name: "fecha".into(),
                ftype: FieldType::Date,
            },
        ]
    }

    #[test]
    fn parses_bbox_limit_offset() {
        let s = schema();
        let q =
            parse_items_query(Some("bbox=-100.4,25.6,-100.2,25.8&limit=10&offset=5"), &s).unwrap();
        assert_eq!(q.bbox, Some([-100.4, 25.6, -100.2, 25.8]));
        assert_eq!((q.limit, q.offset), (10, 5));
        let q = parse_items_query(Some("bbox=-100.4,25.6,0,-100.2,25.8,10"), &s).unwrap();
        assert_eq!(q.bbox, Some([-100.4, 25.6, -100.2, 25.8]));
        // EPSG:4326 boxes are lat/lon: the latitude checks apply to the first number.
        let q = parse_items_query(
            Some(
                "bbox=25.6,-100.4,25.8,-100.2&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/4326",
            ),
            &s,
        )
        .unwrap();
        assert_eq!(q.bbox_crs.epsg, Some(4326));
        let e = parse_items_query(Some("bbox=-100.4,25.6,-100.2,25.8&bbox-crs=EPSG:4326"), &s)
            .unwrap_err();
        assert!(e.0.contains("minLat,minLon"), "{}", e.0);
    }

    #[test]
    fn bad_params_say_what_is_wrong() {
        let s = schema();
        let cases = [
            ("bbox=1,2,3", "4 numbers"),
            ("bbox=a,b,c,d", "comma-separated numbers"),
            ("bbox=-100,27,-99,26", "latitude"),
            ("bbox=-200,20,-99,26", "longitudes"),
            ("bbox=-100,20,-99,96", "latitudes"),
            ("limit=0", "limit"),
            ("limit=10001", "limit"),
            ("limit=x", "limit"),
            ("offset=-1", "offset"),
            ("bbx=1,2,3,4", "unknown query parameter 'bbx'"),
            ("filter=n>>3", "at character 3"),
            ("filter=n>3&filter-lang=cql3", "filter-lang"),
            ("filter-lang=cql2-json", "need a filter"),
            ("limit=1&limit=2", "more than once"),
            ("crs=EPSG:2154", "crs 'EPSG:2154' is not supported"),
            ("n=abc", "whole-number"),
            ("datetime=2024-13-01", "datetime is not valid"),
            ("datetime=2024-02-01/2024-01-01", "starts after it ends"),
            ("f=xml", "f must be"),
            ("f=xml", "gpkg"),
        ];
        for (q, needle) in cases {
            let e = parse_items_query(Some(q), &s).unwrap_err();
            assert!(e.0.contains(needle), "{q}: {}", e.0);
        }
        // The list of accepted parameters names the queryables too.
        let e = parse_items_query(Some("coloina=x"), &s).unwrap_err();
        assert!(e.0.contains("colonia"), "{}", e.0);
        // No temporal property: datetime is refused, not silently ignored.
        let e = parse_items_query(Some("datetime=2024-01-01"), &s[..2]).unwrap_err();
        assert!(e.0.contains("no date"), "{}", e.0);
    }

    #[test]
    fn datetime_instants_and_intervals() {
        let day = |s| time_span(s).unwrap();
        let r = parse_datetime("2024-05-01").unwrap().unwrap();
        assert!(r.overlaps(day("2024-05-01")));
        assert!(r.overlaps(day("2024-05-01T23:59:00Z")));
        assert!(!r.overlaps(day("2024-05-02")));
        let r = parse_datetime("2024-05-01T10:00:00Z").unwrap().unwrap();
        assert!(
            r.overlaps(day("2024-05-01")),
            "an instant inside a date's day"
        );
        assert!(!r.overlaps(day("2024-05-01T10:00:01Z")));
        let r = parse_datetime("2024-01-01/..").unwrap().unwrap();
        assert!(r.overlaps(day("2030-01-01")) && !r.overlaps(day("2023-12-31")));
        let r = parse_datetime("../2024-01-01").unwrap().unwrap();
        assert!(r.overlaps(day("2024-01-01")) && !r.overlaps(day("2024-01-02")));
        let r = parse_datetime("2024-01-01T00:00:00+01:00/2024-01-01T00:30:00Z")
            .unwrap()
            .unwrap();
        assert!(r.overlaps(day("2023-12-31T23:30:00Z")));
        assert!(parse_datetime("../..")
            .unwrap()
            .unwrap()
            .overlaps(day("1999-01-01")));
    }

    #[test]
    fn links_round_trip_every_parameter() {
        let s = schema();
        let raw = "bbox=-100.4,25.6,-100.2,25.8&crs=EPSG:6372&datetime=2024-01-01/..&colonia=Centro+Norte&limit=7&offset=14";
        let q = parse_items_query(Some(raw), &s).unwrap();
        let again = parse_items_query(Some(&q.query_string(q.offset, None)), &s).unwrap();
        assert_eq!(q, again);
    }
}
