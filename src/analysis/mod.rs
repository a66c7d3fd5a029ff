//! Neighbourhood decision support: aggregate any layer by any zone layer (counts,
//! sums, means, extremes, densities, lengths of lines, shares of area), nearest
//! features, coverage within a distance, one zone's profile across every layer, and
//! class breaks for choropleths. No HTTP here: [`crate::http`] and the CLI call it.
//!
//! Measures are geodesic on the WGS 84 ellipsoid (Karney's algorithms through
//! `geo`/`geographiclib-rs`, the method PostGIS `geography` uses): zone and overlap
//! areas with `GeodesicArea`, line lengths with `Geodesic.length`. Clipping happens in
//! lon/lat, where the stored geometries are straight.

pub mod cache;
pub mod classes;
pub mod nearest;
pub mod zones;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use geo::{BooleanOps, Coord, GeodesicArea, Length, MultiLineString, MultiPolygon};
use layers::fgb::{FieldType, RawValue};
use layers::index::LoadedLayer;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::download::csv_field;

pub use zones::Zones;

/// One statistic asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    Count,
    Sum(usize, String),
    Mean(usize, String),
    Min(usize, String),
    Max(usize, String),
    /// Features per km² of zone.
    Density,
    /// Metres of the layer's lines inside the zone.
    Length,
    /// Share (0–1) of the zone covered by the layer's polygons (overlaps counted once).
    AreaShare,
}

pub const STAT_HELP: &str =
    "count, sum:<field>, mean:<field>, min:<field>, max:<field>, density, length, area_share";

impl Stat {
    /// Parses `count`, `sum:<field>`, … against the layer it will be computed on.
    pub fn parse(s: &str, layer: &LoadedLayer) -> Result<Stat, String> {
        let numeric = || {
            layer
                .meta
                .schema
                .iter()
                .filter(|f| matches!(f.ftype, FieldType::Int | FieldType::Long | FieldType::Float))
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
        };
        let field = |name: &str| -> Result<(usize, String), String> {
            let Some((i, f)) = layer
                .meta
                .schema
                .iter()
                .enumerate()
                .find(|(_, f)| f.name == name)
            else {
                return Err(format!(
                    "layer '{}' has no field '{name}'; its numeric fields: {}",
                    layer.meta.id,
                    list_or_none(&numeric())
                ));
            };
            if !matches!(f.ftype, FieldType::Int | FieldType::Long | FieldType::Float) {
                return Err(format!(
                    "field '{name}' of layer '{}' is {}, not a number; its numeric fields: {}",
                    layer.meta.id,
                    f.ftype.json_type(),
                    list_or_none(&numeric())
                ));
            }
            Ok((i, name.to_string()))
        };
        let types = &layer.meta.geometry_types;
        let has = |t: &str| types.iter().any(|g| g.ends_with(t));
        match s.split_once(':') {
            Some(("sum", f)) => field(f).map(|(i, n)| Stat::Sum(i, n)),
            Some(("mean", f)) => field(f).map(|(i, n)| Stat::Mean(i, n)),
            Some(("min", f)) => field(f).map(|(i, n)| Stat::Min(i, n)),
            Some(("max", f)) => field(f).map(|(i, n)| Stat::Max(i, n)),
            None if s == "count" => Ok(Stat::Count),
            None if s == "density" => Ok(Stat::Density),
            None if s == "length" => {
                if has("LineString") {
                    Ok(Stat::Length)
                } else {
                    Err(format!(
                        "stat 'length' needs a line layer; '{}' holds {}",
                        layer.meta.id,
                        types.join(", ")
                    ))
                }
            }
            None if s == "area_share" => {
                if has("Polygon") {
                    Ok(Stat::AreaShare)
                } else {
                    Err(format!(
                        "stat 'area_share' needs a polygon layer; '{}' holds {}",
                        layer.meta.id,
                        types.join(", ")
                    ))
                }
            }
            _ => Err(format!("unknown stat '{s}'; use one of: {STAT_HELP}")),
        }
    }

    /// The name the stat is reported under (as asked: `sum:poblacion`).
    pub fn key(&self) -> String {
        match self {
            Stat::Count => "count".into(),
            Stat::Sum(_, f) => format!("sum:{f}"),
            Stat::Mean(_, f) => format!("mean:{f}"),
            Stat::Min(_, f) => format!("min:{f}"),
            Stat::Max(_, f) => format!("max:{f}"),
            Stat::Density => "density".into(),
            Stat::Length => "length".into(),
            Stat::AreaShare => "area_share".into(),
        }
    }

    fn field(&self) -> Option<usize> {
        match self {
            Stat::Sum(i, _) | Stat::Mean(i, _) | Stat::Min(i, _) | Stat::Max(i, _) => Some(*i),
            _ => None,
        }
    }
}

/// The stats of `stat` values (each one stat or a comma list), duplicates dropped, in
/// the order given; `count` when none is given.
pub fn parse_stats<'a>(
    values: impl IntoIterator<Item = &'a str>,
    layer: &LoadedLayer,
) -> Result<Vec<Stat>, String> {
    let mut out: Vec<Stat> = Vec::new();
    for v in values {
        for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let st = Stat::parse(s, layer)?;
            if !out.contains(&st) {
                out.push(st);
            }
        }
    }
    if out.is_empty() {
        out.push(Stat::Count);
    }
    Ok(out)
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// Which features of the layer take part: all, or those a filter kept (by position).
pub type Allowed = Option<Vec<bool>>;

/// A CQL2 filter on the analysed layer, as the OGC API takes it.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub filter: String,
    pub lang: Option<String>,
    pub crs: Option<String>,
}

impl FilterSpec {
    /// A stable text for cache keys and reports.
    pub fn describe(&self) -> String {
        format!(
            "{} [{}{}]",
            self.filter,
            self.lang.as_deref().unwrap_or("cql2-text"),
            self.crs
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        )
    }

    /// The positions the filter keeps, through the same parser and evaluator as
    /// `/items` (so a filter means the same thing in both places).
    pub fn allowed(&self, layer: &LoadedLayer) -> layers::Result<Vec<bool>> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("filter", &self.filter);
        if let Some(l) = &self.lang {
            q.append_pair("filter-lang", l);
        }
        if let Some(c) = &self.crs {
            q.append_pair("filter-crs", c);
        }
        let q = q.finish();
        let iq = crate::features::parse_items_query(Some(&q), &layer.meta.schema)
            .map_err(|e| layers::Error::bad(e.0))?;
        let mut keep = vec![false; layer.len()];
        for p in crate::features::result_positions(layer, &iq)? {
            if let Some(k) = keep.get_mut(p as usize) {
                *k = true;
            }
        }
        Ok(keep)
    }
}

/// Aggregates through the cache: the zones prepared once per version, the result
/// once per (zones version, layer version, stats, filter).
pub fn cached_aggregate(
    cache: &cache::Cache,
    zones_layer: &LoadedLayer,
    name_field: Option<&str>,
    layer: &LoadedLayer,
    stats: &[Stat],
    filter: Option<&FilterSpec>,
) -> layers::Result<(Arc<Zones>, Arc<Aggregate>)> {
    let zones = cache.zones_named(zones_layer, name_field)?;
    let (keys, described) = key_parts(stats, filter);
    let key = cache::key(&zones, layer, &keys, described.as_deref());
    let agg = cache.aggregate(key, || {
        let allow = filter.map(|f| f.allowed(layer)).transpose()?;
        aggregate(&zones, layer, stats, &allow, described.clone())
    })?;
    Ok((zones, agg))
}

/// The stats and the filter as they enter an aggregate's cache key.
fn key_parts(stats: &[Stat], filter: Option<&FilterSpec>) -> (Vec<String>, Option<String>) {
    (
        stats.iter().map(Stat::key).collect(),
        filter.map(FilterSpec::describe),
    )
}

/// [`cached_aggregate`]'s result when it is cached already; `None` computes nothing.
pub fn peek_aggregate(
    cache: &cache::Cache,
    zones_layer: &LoadedLayer,
    name_field: Option<&str>,
    layer: &LoadedLayer,
    stats: &[Stat],
    filter: Option<&FilterSpec>,
) -> Option<(Arc<Zones>, Arc<Aggregate>)> {
    let (keys, described) = key_parts(stats, filter);
    cache.peek(zones_layer, name_field, |zones| {
        cache::key(zones, layer, &keys, described.as_deref())
    })
}

/// Which features fall in which zone, with their measure there.
pub struct Membership {
    /// Per zone (index into `Zones::zones`): (feature position, measure), by position.
    /// The measure is 1 for points, metres inside the zone for lines, m² inside the
    /// zone for polygons.
    pub members: Vec<Vec<(u32, f64)>>,
    /// Per zone: m² covered by the union of the layer's polygons inside it.
    pub covered_m2: Vec<f64>,
    /// Per zone: metres of the layer's lines inside it (polygons of a mixed layer
    /// do not count).
    pub line_m: Vec<f64>,
}

fn allowed(a: &Allowed, pos: u32) -> bool {
    a.as_ref()
        .is_none_or(|v| v.get(pos as usize).copied().unwrap_or(false))
}

/// Assigns the layer's features to zones. Points follow [`Zones::assign_point`]; lines
/// and polygons belong to every zone where their clipped part has positive length or
/// area (touching a border is not being in a zone).
pub fn membership(
    zones: &Zones,
    layer: &LoadedLayer,
    allow: &Allowed,
) -> layers::Result<Membership> {
    let n = zones.zones.len();
    let points_only = layer.meta.geometry_types.iter().all(|t| t == "Point");
    if points_only {
        let Some(extent) = zones_extent(zones) else {
            return Ok(Membership {
                members: vec![Vec::new(); n],
                covered_m2: vec![0.0; n],
                line_m: vec![0.0; n],
            });
        };
        // Point positions straight from the R-tree leaves (a point's box is the point):
        // no feature is decoded.
        let pts: Vec<(u32, f64, f64)> = layer
            .query_bbox_iter(extent)
            .filter(|(pos, _)| allowed(allow, *pos))
            .map(|(pos, e)| (pos, e[0], e[1]))
            .collect();
        // The request's budget goes with the work to rayon's threads.
        let budget = crate::limits::current();
        let chunks: Vec<layers::Result<Vec<(u32, u32)>>> = pts
            .par_chunks(16_384)
            .map(|chunk| {
                crate::limits::within_opt(budget.clone(), crate::limits::check)?;
                let mut out = Vec::with_capacity(chunk.len());
                let mut hits = Vec::new();
                for &(pos, x, y) in chunk {
                    hits.clear();
                    zones.assign_point(Coord { x, y }, &mut hits);
                    out.extend(hits.iter().map(|&z| (z, pos)));
                }
                Ok(out)
            })
            .collect();
        let mut members = vec![Vec::new(); n];
        for chunk in chunks {
            for (z, pos) in chunk? {
                members[z as usize].push((pos, 1.0));
            }
        }
        members
            .par_iter_mut()
            .for_each(|m| m.sort_unstable_by_key(|e| e.0));
        return Ok(Membership {
            members,
            covered_m2: vec![0.0; n],
            line_m: vec![0.0; n],
        });
    }
    let budget = crate::limits::current();
    let per_zone: Vec<layers::Result<ZoneMembers>> = (0..n)
        .into_par_iter()
        .map(|zi| {
            crate::limits::within_opt(budget.clone(), || zone_members(zones, zi, layer, allow))
        })
        .collect();
    let mut members = Vec::with_capacity(n);
    let mut covered = Vec::with_capacity(n);
    let mut lines = Vec::with_capacity(n);
    for r in per_zone {
        let (m, c, l) = r?;
        members.push(m);
        covered.push(c);
        lines.push(l);
    }
    Ok(Membership {
        members,
        covered_m2: covered,
        line_m: lines,
    })
}

fn zones_extent(zones: &Zones) -> Option<[f64; 4]> {
    zones.zones.iter().map(|z| z.bbox).reduce(|a, b| {
        [
            a[0].min(b[0]),
            a[1].min(b[1]),
            a[2].max(b[2]),
            a[3].max(b[3]),
        ]
    })
}

/// One zone's (feature position, measure) pairs and the m² its polygons cover.
/// One zone's (feature position, measure) pairs, the m² its polygons cover and the
/// metres of its lines.
type ZoneMembers = (Vec<(u32, f64)>, f64, f64);

/// The members of one zone and the area the layer's polygons cover in it.
fn zone_members(
    zones: &Zones,
    zi: usize,
    layer: &LoadedLayer,
    allow: &Allowed,
) -> layers::Result<ZoneMembers> {
    let zone = &zones.zones[zi];
    let mut out = Vec::new();
    let mut pieces: Vec<MultiPolygon<f64>> = Vec::new();
    let mut hits = Vec::new();
    let mut line_m = 0.0;
    let points_only = layer.meta.geometry_types.iter().all(|t| t == "Point");
    for (i, (pos, e)) in layer.query_bbox_iter(zone.bbox).enumerate() {
        crate::limits::check_every(i)?;
        if !allowed(allow, pos) {
            continue;
        }
        if points_only {
            // A point's box is the point: no decoding.
            hits.clear();
            zones.assign_point(Coord { x: e[0], y: e[1] }, &mut hits);
            if hits.contains(&(zi as u32)) {
                out.push((pos, 1.0));
            }
            continue;
        }
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        let Some(g) = layer.geometry(offset)? else {
            continue;
        };
        if let Some(m) = measure_in(zones, zi, &g, &mut hits, &mut pieces, &mut line_m) {
            out.push((pos, m));
        }
    }
    out.sort_unstable_by_key(|e| e.0);
    let covered = match pieces.len() {
        0 => 0.0,
        1 => pieces[0].geodesic_area_unsigned(),
        _ => geo::unary_union(&pieces).geodesic_area_unsigned(),
    };
    Ok((out, covered, line_m))
}

/// The measure of geometry `g` in zone `zi` (None when it is not in it); polygon
/// overlaps are pushed to `pieces`.
fn measure_in(
    zones: &Zones,
    zi: usize,
    g: &geo::Geometry<f64>,
    hits: &mut Vec<u32>,
    pieces: &mut Vec<MultiPolygon<f64>>,
    line_m: &mut f64,
) -> Option<f64> {
    use geo::Geometry as G;
    let zone = &zones.zones[zi];
    match g {
        G::Point(p) => {
            hits.clear();
            zones.assign_point(p.0, hits);
            hits.contains(&(zi as u32)).then_some(1.0)
        }
        G::MultiPoint(mp) => mp
            .iter()
            .any(|p| {
                hits.clear();
                zones.assign_point(p.0, hits);
                hits.contains(&(zi as u32))
            })
            .then_some(1.0),
        G::LineString(l) => line_in(zone, MultiLineString(vec![l.clone()]), line_m),
        G::MultiLineString(ml) => line_in(zone, ml.clone(), line_m),
        G::Polygon(p) => poly_in(zone, &MultiPolygon(vec![p.clone()]), pieces),
        G::MultiPolygon(mp) => poly_in(zone, mp, pieces),
        G::GeometryCollection(gc) => {
            let mut total = None;
            for part in gc {
                if let Some(m) = measure_in(zones, zi, part, hits, pieces, line_m) {
                    total = Some(total.unwrap_or(0.0) + m);
                }
            }
            total
        }
        _ => None,
    }
}

fn line_in(zone: &zones::Zone, ml: MultiLineString<f64>, total: &mut f64) -> Option<f64> {
    let clipped = zone.geom.clip(&ml, false);
    let m = geo::Geodesic.length(&clipped);
    *total += m;
    (m > 0.0).then_some(m)
}

fn poly_in(
    zone: &zones::Zone,
    mp: &MultiPolygon<f64>,
    pieces: &mut Vec<MultiPolygon<f64>>,
) -> Option<f64> {
    let inter = zone.geom.intersection(mp);
    let a = inter.geodesic_area_unsigned();
    if a > 0.0 {
        pieces.push(inter);
        Some(a)
    } else {
        None
    }
}

/// One zone's row of an aggregate.
#[derive(Debug, Clone)]
pub struct Row {
    pub fid: i64,
    pub name: Option<String>,
    pub area_km2: f64,
    /// One per stat, in the order asked; None where undefined (a mean of nothing).
    pub values: Vec<Option<f64>>,
}

/// (stat, classes, method) of a set of class breaks.
type BreaksKey = (String, usize, classes::Method);

/// The result of aggregating a layer by zones.
pub struct Aggregate {
    pub zones_id: String,
    pub zones_version: u32,
    pub layer_id: String,
    pub layer_version: u32,
    pub name_field: Option<String>,
    pub stats: Vec<String>,
    pub filter: Option<String>,
    pub rows: Vec<Row>,
    pub elapsed_ms: f64,
    /// The JSON document, serialized once: a cached aggregate is then served as bytes.
    json: std::sync::OnceLock<bytes::Bytes>,
    /// Class breaks by (stat, classes, method), computed once: every choropleth tile
    /// needs them, and Jenks is quadratic in the zones.
    breaks: std::sync::Mutex<HashMap<BreaksKey, Arc<Vec<f64>>>>,
}

impl Aggregate {
    /// Heap bytes held, roughly, with its JSON once serialized (for the cache's
    /// byte bound).
    pub fn approx_bytes(&self) -> usize {
        let row = |r: &Row| {
            std::mem::size_of::<Row>()
                + r.name.as_ref().map_or(0, String::len)
                + r.values.len() * 16
        };
        let rows: usize = self.rows.iter().map(row).sum();
        // The JSON text is about as large again.
        2 * rows + self.filter.as_ref().map_or(0, String::len) + 256
    }
}

/// Computes `stats` of `layer` for every zone.
pub fn aggregate(
    zones: &Zones,
    layer: &LoadedLayer,
    stats: &[Stat],
    allow: &Allowed,
    filter: Option<String>,
) -> layers::Result<Aggregate> {
    let t = Instant::now();
    let m = membership(zones, layer, allow)?;
    let fields: Vec<usize> = {
        let mut f: Vec<usize> = stats.iter().filter_map(Stat::field).collect();
        f.sort_unstable();
        f.dedup();
        f
    };
    let budget = crate::limits::current();
    let rows: Vec<layers::Result<Row>> = zones
        .zones
        .par_iter()
        .zip(m.members.par_iter())
        .zip(m.covered_m2.par_iter())
        .zip(m.line_m.par_iter())
        .map(|(((z, members), covered), line_m)| {
            crate::limits::within_opt(budget.clone(), crate::limits::check)?;
            // Per field: (sum, count, min, max) over non-null values.
            let mut acc: Vec<(f64, u64, f64, f64)> =
                vec![(0.0, 0, f64::INFINITY, f64::NEG_INFINITY); fields.len()];
            if !fields.is_empty() {
                for &(pos, _) in members {
                    let Some((_, offset)) = layer.at(pos) else {
                        continue;
                    };
                    layer.for_each_value(offset, |i, v| {
                        if let Ok(k) = fields.binary_search(&i) {
                            let x = match v {
                                RawValue::I64(n) => n as f64,
                                RawValue::U64(n) => n as f64,
                                RawValue::F64(x) if x.is_finite() => x,
                                _ => return,
                            };
                            let a = &mut acc[k];
                            a.0 += x;
                            a.1 += 1;
                            a.2 = a.2.min(x);
                            a.3 = a.3.max(x);
                        }
                    })?;
                }
            }
            let count = members.len() as f64;
            let values = stats
                .iter()
                .map(|s| {
                    let field = |i: &usize| {
                        fields.binary_search(i).ok().map(|k| acc[k]).unwrap_or((
                            0.0,
                            0,
                            f64::NAN,
                            f64::NAN,
                        ))
                    };
                    match s {
                        Stat::Count => Some(count),
                        Stat::Sum(i, _) => Some(field(i).0),
                        Stat::Mean(i, _) => {
                            let a = field(i);
                            (a.1 > 0).then(|| a.0 / a.1 as f64)
                        }
                        Stat::Min(i, _) => {
                            let a = field(i);
                            (a.1 > 0).then_some(a.2)
                        }
                        Stat::Max(i, _) => {
                            let a = field(i);
                            (a.1 > 0).then_some(a.3)
                        }
                        Stat::Density => (z.area_km2 > 0.0).then(|| count / z.area_km2),
                        Stat::Length => Some(*line_m),
                        Stat::AreaShare => {
                            (z.area_km2 > 0.0).then(|| (covered / (z.area_km2 * 1e6)).min(1.0))
                        }
                    }
                })
                .collect();
            Ok(Row {
                fid: z.fid,
                name: z.name.clone(),
                area_km2: z.area_km2,
                values,
            })
        })
        .collect();
    Ok(Aggregate {
        zones_id: zones.layer_id.clone(),
        zones_version: zones.version,
        layer_id: layer.meta.id.clone(),
        layer_version: layer.meta.version,
        name_field: zones.name_field.clone(),
        stats: stats.iter().map(Stat::key).collect(),
        filter,
        rows: rows.into_iter().collect::<layers::Result<Vec<_>>>()?,
        elapsed_ms: t.elapsed().as_secs_f64() * 1000.0,
        json: std::sync::OnceLock::new(),
        breaks: Default::default(),
    })
}

/// The text that says how numbers were computed (in every JSON answer).
pub const METHOD: &str = "Areas and lengths are geodesic on the WGS 84 ellipsoid (Karney 2013, as PostGIS geography). A point inside a zone counts there; a point on a border shared by several zones counts once, in the zone that comes first in id order. Lines and polygons count in every zone where the part inside has positive length or area.";

impl Aggregate {
    /// [`Aggregate::to_json`] serialized, computed once per aggregate.
    pub fn json_bytes(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&self.to_json())
                    .unwrap_or_default()
                    .into()
            })
            .clone()
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), json!(r.fid));
                o.insert("name".into(), json!(r.name));
                o.insert("area_km2".into(), number(Some(r.area_km2)));
                for (k, v) in self.stats.iter().zip(&r.values) {
                    o.insert(k.clone(), number(*v));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "zones": {"layer": self.zones_id, "version": self.zones_version, "name_field": self.name_field},
            "layer": {"layer": self.layer_id, "version": self.layer_version},
            "stats": self.stats,
            "filter": self.filter,
            "method": METHOD,
            "elapsed_ms": (self.elapsed_ms * 100.0).round() / 100.0,
            "rows": rows,
        })
    }

    /// CSV with a header row (id, name, area_km2, one column per stat), RFC 4180.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("id,name,area_km2");
        for k in &self.stats {
            s.push(',');
            s.push_str(&csv_field(k));
        }
        s.push_str("\r\n");
        for r in &self.rows {
            s.push_str(&r.fid.to_string());
            s.push(',');
            s.push_str(&csv_field(r.name.as_deref().unwrap_or("")));
            s.push(',');
            s.push_str(&fmt_num(r.area_km2));
            for v in &r.values {
                s.push(',');
                if let Some(v) = v {
                    s.push_str(&fmt_num(*v));
                }
            }
            s.push_str("\r\n");
        }
        s
    }

    /// The zones as a GeoJSON FeatureCollection with the values as properties, for a
    /// choropleth.
    pub fn to_geojson(&self, zones: &Zones) -> Value {
        let feats: Vec<Value> = self
            .rows
            .iter()
            .zip(&zones.zones)
            .map(|(r, z)| {
                let mut props = serde_json::Map::new();
                props.insert("name".into(), json!(r.name));
                props.insert("area_km2".into(), number(Some(r.area_km2)));
                for (k, v) in self.stats.iter().zip(&r.values) {
                    props.insert(k.clone(), number(*v));
                }
                json!({
                    "type": "Feature",
                    "id": r.fid,
                    "geometry": geometry_json(&z.geom),
                    "properties": props,
                })
            })
            .collect();
        json!({"type": "FeatureCollection", "features": feats})
    }

    /// The values of one stat by zone position (for class breaks and tiles).
    /// The class breaks of one stat's values (cached in the aggregate).
    pub fn breaks(&self, stat: &str, n: usize, method: classes::Method) -> Arc<Vec<f64>> {
        let key = (stat.to_string(), n, method);
        let mut m = self.breaks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key)
            .or_insert_with(|| {
                let present: Vec<f64> = self
                    .column(stat)
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .collect();
                Arc::new(classes::breaks(&present, n, method))
            })
            .clone()
    }

    pub fn column(&self, stat: &str) -> Option<Vec<Option<f64>>> {
        let k = self.stats.iter().position(|s| s == stat)?;
        Some(self.rows.iter().map(|r| r.values[k]).collect())
    }
}

/// A zone's geometry as a GeoJSON geometry object.
pub fn geometry_json(g: &MultiPolygon<f64>) -> Value {
    serde_json::to_value(geojson::Geometry::new(geojson::Value::from(g))).unwrap_or(Value::Null)
}

fn number(v: Option<f64>) -> Value {
    match v {
        Some(x) if x.is_finite() => {
            if x.fract() == 0.0 && x.abs() < 9e15 {
                json!(x as i64)
            } else {
                json!((x * 1e9).round() / 1e9)
            }
        }
        _ => Value::Null,
    }
}

fn fmt_num(x: f64) -> String {
    match number(Some(x)) {
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// One layer's row in a zone profile.
pub struct ProfileRow {
    pub layer: Arc<LoadedLayer>,
    pub count: u64,
    pub length_m: Option<f64>,
    pub area_share: Option<f64>,
}

/// Every layer measured in one zone: counts for all, metres for line layers, share of
/// area for polygon layers. Sorted by ministry, then layer id.
pub fn profile(
    zones: &Zones,
    zi: usize,
    layers: &[Arc<LoadedLayer>],
) -> layers::Result<Vec<ProfileRow>> {
    let budget = crate::limits::current();
    let mut rows = layers
        .par_iter()
        .filter(|l| l.meta.id != zones.layer_id)
        .map(|l| {
            let (members, covered, line_m) =
                crate::limits::within_opt(budget.clone(), || zone_members(zones, zi, l, &None))?;
            let types = &l.meta.geometry_types;
            let has = |t: &str| types.iter().any(|g| g.ends_with(t));
            let area = zones.zones[zi].area_km2 * 1e6;
            Ok(ProfileRow {
                layer: l.clone(),
                count: members.len() as u64,
                length_m: has("LineString").then_some(line_m),
                area_share: (has("Polygon") && area > 0.0).then(|| (covered / area).min(1.0)),
            })
        })
        .collect::<layers::Result<Vec<_>>>()?;
    rows.sort_by(|a, b| {
        (a.layer.meta.ministry.as_str(), a.layer.meta.id.as_str())
            .cmp(&(b.layer.meta.ministry.as_str(), b.layer.meta.id.as_str()))
    });
    Ok(rows)
}

/// The profile as JSON, grouped by ministry.
pub fn profile_json(zones: &Zones, zi: usize, rows: &[ProfileRow]) -> Value {
    let z = &zones.zones[zi];
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for r in rows {
        let m = &r.layer.meta;
        let item = json!({
            "layer": m.id,
            "title": m.title,
            "version": m.version,
            "geometry": m.geometry_types,
            "count": r.count,
            "density_km2": number((z.area_km2 > 0.0).then(|| r.count as f64 / z.area_km2)),
            "length_m": number(r.length_m),
            "area_share": number(r.area_share),
        });
        match groups.last_mut() {
            Some((name, v)) if *name == m.ministry => v.push(item),
            _ => groups.push((m.ministry.clone(), vec![item])),
        }
    }
    json!({
        "zones": {"layer": zones.layer_id, "version": zones.version},
        "zone": {"id": z.fid, "name": z.name, "area_km2": number(Some(z.area_km2)), "bbox": z.bbox},
        "method": METHOD,
        "ministries": groups.into_iter().map(|(m, layers)| json!({"ministry": m, "layers": layers})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_integral_when_whole() {
        assert_eq!(number(Some(3.0)), json!(3));
        assert_eq!(number(Some(0.5)), json!(0.5));
        assert_eq!(number(Some(f64::NAN)), Value::Null);
        assert_eq!(number(None), Value::Null);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("Niño"), "Niño");
        assert_eq!(csv_field("x\"y,"), "\"x\"\"y,\"");
    }
}
