//! `/api/analysis/...`: aggregate by zones, class breaks and choropleth tiles,
//! nearest features, coverage and zone profiles over HTTP. Parameters are checked
//! here (unknown ones are a 400 that lists the accepted ones); the work is in
//! [`crate::analysis`] and runs on the blocking pool.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use layers::index::LoadedLayer;
use serde_json::{json, Value};
use tiles::grid::TileId;
use tiles::mvt::MvtValue;

use super::{base_url, ApiError, ApiResult, AppState};
use crate::analysis::{self, classes, nearest, FilterSpec, Stat};
use crate::catalog::Caller;

/// The query string as (name, value) pairs, every name among `accepted`.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>, accepted: &[&str], repeatable: &[&str]) -> ApiResult<Params> {
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !accepted.contains(&k.as_ref()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{k}'; this endpoint accepts: {}",
                    accepted.join(", ")
                )));
            }
            if !repeatable.contains(&k.as_ref()) && v.iter().any(|(n, _)| *n == k) {
                return Err(ApiError::bad_request(format!(
                    "query parameter '{k}' is given twice"
                )));
            }
            v.push((k.into_owned(), val.into_owned()));
        }
        Ok(Params(v))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn required(&self, k: &str, hint: &str) -> ApiResult<&str> {
        self.get(k).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::bad_request(format!("query parameter '{k}' is required: {hint}"))
        })
    }

    fn number(&self, k: &str, default: f64, lo: f64, hi: f64) -> ApiResult<f64> {
        let Some(v) = self.get(k) else {
            return Ok(default);
        };
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= lo && *x <= hi)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter '{k}' must be a number from {lo} to {hi}, got '{v}'"
                ))
            })
    }

    fn filter(&self) -> ApiResult<Option<FilterSpec>> {
        match self.get("filter") {
            None => {
                if self.get("filter-lang").is_some() || self.get("filter-crs").is_some() {
                    return Err(ApiError::bad_request(
                        "'filter-lang' and 'filter-crs' need a 'filter'",
                    ));
                }
                Ok(None)
            }
            Some(f) => Ok(Some(FilterSpec {
                filter: f.to_string(),
                lang: self.get("filter-lang").map(str::to_string),
                crs: self.get("filter-crs").map(str::to_string),
            })),
        }
    }
}

const FILTER_PARAMS: [&str; 3] = ["filter", "filter-lang", "filter-crs"];

fn accepted<'a>(own: &[&'a str], filter: bool) -> Vec<&'a str> {
    let mut v = own.to_vec();
    if filter {
        v.extend(FILTER_PARAMS);
    }
    v
}

fn layer_named(
    state: &AppState,
    caller: &Caller,
    param: &str,
    id: &str,
) -> ApiResult<Arc<LoadedLayer>> {
    super::visible(state, caller, id).ok_or_else(|| {
        let what = if param == "zones" {
            "zone layer"
        } else {
            "layer"
        };
        ApiError::not_found(format!(
            "{what} '{id}' does not exist; GET /collections lists the layers"
        ))
    })
}

/// `stat=count&stat=sum:x` or `stat=count,sum:x`; `count` when absent.
fn stats_of(p: &Params, layer: &LoadedLayer) -> ApiResult<Vec<Stat>> {
    let given =
        p.0.iter()
            .filter(|(k, _)| k == "stat")
            .map(|(_, v)| v.as_str());
    let out = analysis::parse_stats(given, layer).map_err(ApiError::bad_request)?;
    if out.len() > 20 {
        return Err(ApiError::bad_request("at most 20 stats per request"));
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Out {
    Json,
    Csv,
    GeoJson,
}

fn out_format(p: &Params, geojson: bool) -> ApiResult<Out> {
    match p.get("f") {
        None | Some("json") => Ok(Out::Json),
        Some("csv") => Ok(Out::Csv),
        Some("geojson") if geojson => Ok(Out::GeoJson),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown format f={other}; use {}",
            if geojson {
                "json, csv or geojson"
            } else {
                "json or csv"
            }
        ))),
    }
}

fn with_type(body: impl IntoResponse, ct: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

fn csv_response(body: String, filename: &str) -> Response {
    let mut r = with_type(body, "text/csv; charset=utf-8");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Analysis work in one of the gate's slots, within the query budget.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    f: impl FnOnce() -> layers::Result<T> + Send + 'static,
) -> ApiResult<T> {
    super::heavy(state, caller, crate::limits::Work::Query, f).await
}

/// `GET /api/analysis`: what is here, with examples on the loaded layers.
pub async fn index(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Json<Value> {
    let base = base_url(&headers);
    let snap = state.registry.snapshot();
    let mut ids: Vec<&String> = snap
        .iter()
        .filter(|(_, l)| caller.can_see(&l.meta))
        .map(|(k, _)| k)
        .collect();
    ids.sort();
    let zones: Vec<&String> = ids
        .iter()
        .copied()
        .filter(|id| {
            snap.get(*id)
                .is_some_and(|l| analysis::zones::is_polygonal(l))
        })
        .collect();
    Json(json!({
        "title": "Análisis por zona / Neighbourhood analysis",
        "method": analysis::METHOD,
        "stats": analysis::STAT_HELP,
        "zone_layers": zones,
        "layers": ids,
        "endpoints": {
            "aggregate": format!("{base}/api/analysis/aggregate?zones={{zones}}&layer={{layer}}&stat=count[&stat=sum:<field>…][&filter=<CQL2>][&name_field=<field>][&f=json|csv|geojson]"),
            "legend": format!("{base}/api/analysis/legend?zones={{zones}}&layer={{layer}}&stat=count[&classes=5][&method=quantile|equal|jenks]"),
            "tiles": format!("{base}/api/analysis/tiles/{{zones}}/{{layer}}/{{stat}}/{{z}}/{{x}}/{{y}}.mvt[?classes=5&method=quantile]"),
            "tilejson": format!("{base}/api/analysis/tiles/{{zones}}/{{layer}}/{{stat}}.json"),
            "nearest": format!("{base}/api/analysis/nearest?layer={{layer}}&lon={{lon}}&lat={{lat}}[&k=5][&max_km=]"),
            "coverage": format!("{base}/api/analysis/coverage?zones={{zones}}&layer={{layer}}&within_m=1000[&f=json|csv|geojson]"),
            "profile": format!("{base}/api/analysis/profile?zones={{zones}}&zone={{feature id}}[&f=json|csv]"),
        }
    }))
}

/// `GET /api/analysis/aggregate`
pub async fn aggregate(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(
        raw.as_deref(),
        &accepted(&["zones", "layer", "stat", "name_field", "f"], true),
        &["stat"],
    )?;
    let zl = layer_named(
        &state,
        &caller,
        "zones",
        p.required("zones", "a polygon layer such as colonias")?,
    )?;
    let ll = layer_named(
        &state,
        &caller,
        "layer",
        p.required("layer", "the layer to aggregate")?,
    )?;
    let stats = stats_of(&p, &ll)?;
    let out = out_format(&p, true)?;
    let filter = p.filter()?;
    let name_field = p.get("name_field").map(str::to_string);
    let cache = state.analysis.clone();
    let (zones, agg) = blocking(&state, &caller, move || {
        analysis::cached_aggregate(
            &cache,
            &zl,
            name_field.as_deref(),
            &ll,
            &stats,
            filter.as_ref(),
        )
    })
    .await?;
    Ok(match out {
        Out::Json => with_type(agg.json_bytes(), "application/json"),
        Out::Csv => csv_response(
            agg.to_csv(),
            &format!("{}-{}.csv", agg.zones_id, agg.layer_id),
        ),
        Out::GeoJson => with_type(Json(agg.to_geojson(&zones)), "application/geo+json"),
    })
}

/// The one stat, classes and method of a legend or tile request.
struct Choropleth {
    stat: Stat,
    classes: usize,
    method: classes::Method,
}

fn choropleth(p: &Params, stat: &str, layer: &LoadedLayer) -> ApiResult<Choropleth> {
    if stat.contains(',') {
        return Err(ApiError::bad_request(
            "a legend or choropleth has one stat; ask for the others separately",
        ));
    }
    let stat = Stat::parse(stat, layer).map_err(ApiError::bad_request)?;
    let classes = p.number(
        "classes",
        5.0,
        classes::MIN_CLASSES as f64,
        classes::MAX_CLASSES as f64,
    )? as usize;
    let method = classes::Method::parse(p.get("method").unwrap_or("quantile"))
        .map_err(ApiError::bad_request)?;
    Ok(Choropleth {
        stat,
        classes,
        method,
    })
}

const CHOROPLETH_PARAMS: [&str; 3] = ["classes", "method", "name_field"];

/// `GET /api/analysis/legend`: class breaks and colours for one stat.
pub async fn legend(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let mut acc = accepted(&["zones", "layer", "stat"], true);
    acc.extend(CHOROPLETH_PARAMS);
    let p = Params::parse(raw.as_deref(), &acc, &[])?;
    let zl = layer_named(
        &state,
        &caller,
        "zones",
        p.required("zones", "a polygon layer such as colonias")?,
    )?;
    let ll = layer_named(
        &state,
        &caller,
        "layer",
        p.required("layer", "the layer to aggregate")?,
    )?;
    let c = choropleth(&p, p.get("stat").unwrap_or("count"), &ll)?;
    let filter = p.filter()?;
    let name_field = p.get("name_field").map(str::to_string);
    let cache = state.analysis.clone();
    let stat = c.stat.clone();
    let (zl2, ll2) = (zl.clone(), ll.clone());
    let (_, agg) = blocking(&state, &caller, move || {
        analysis::cached_aggregate(
            &cache,
            &zl2,
            name_field.as_deref(),
            &ll2,
            &[stat],
            filter.as_ref(),
        )
    })
    .await?;
    let key = c.stat.key();
    let column = agg.column(&key).unwrap_or_default();
    let breaks = agg.breaks(&key, c.classes, c.method);
    let mut legend = classes::legend(&column, &breaks, c.method);
    // The tiles that draw this legend: same stat, classes, method and filter.
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p.0 {
        if !["zones", "layer", "stat"].contains(&k.as_str()) {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    let base = base_url(&headers);
    let stat_path = utf8_percent(&key);
    let path = format!(
        "{base}/api/analysis/tiles/{}/{}/{stat_path}",
        zl.meta.id, ll.meta.id
    );
    let qs = if q.is_empty() {
        String::new()
    } else {
        format!("?{q}")
    };
    if let Value::Object(o) = &mut legend {
        o.insert("zones".into(), json!(zl.meta.id));
        o.insert("layer".into(), json!(ll.meta.id));
        o.insert("stat".into(), json!(key));
        o.insert(
            "tiles".into(),
            json!(format!("{path}/{{z}}/{{x}}/{{y}}.mvt{qs}")),
        );
        o.insert("tilejson".into(), json!(format!("{path}.json{qs}")));
        o.insert("vector_layer".into(), json!(tile_layer_name(&zl.meta.id)));
    }
    Ok(Json(legend))
}

/// Percent-encodes what a path segment cannot hold as is (`:` may stay).
fn utf8_percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tile_layer_name(zones: &str) -> String {
    format!("{zones}_analysis")
}

/// `GET /api/analysis/tiles/{zones}/{layer}/{stat}/{z}/{x}/{y}.mvt`: the zones with
/// `name`, `value` and `class` (0-based, absent when the value is undefined).
pub async fn tile(
    State(state): State<AppState>,
    caller: Caller,
    Path((zones_id, layer_id, stat, z, x, y)): Path<(
        String,
        String,
        String,
        String,
        String,
        String,
    )>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let y = y.strip_suffix(".mvt").ok_or_else(|| {
        ApiError::not_found("analysis tiles end in .mvt: /api/analysis/tiles/{zones}/{layer}/{stat}/{z}/{x}/{y}.mvt")
    })?;
    let num = |what: &str, v: &str| {
        v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "tile {what} must be a whole number >= 0, got '{v}'"
            ))
        })
    };
    let zz = u32::try_from(num("z", &z)?)
        .map_err(|_| ApiError::bad_request("tile z must be 0 to 22"))?;
    let tile = TileId::new(zz, num("x", &x)?, num("y", y)?).map_err(ApiError::bad_request)?;
    let mut acc = accepted(&[], true);
    acc.extend(CHOROPLETH_PARAMS);
    let p = Params::parse(raw.as_deref(), &acc, &[])?;
    let zl = layer_named(&state, &caller, "zones", &zones_id)?;
    let ll = layer_named(&state, &caller, "layer", &layer_id)?;
    let c = choropleth(&p, &stat, &ll)?;
    let filter = p.filter()?;
    let name_field = p.get("name_field").map(str::to_string);
    let variant = format!(
        "{}|{}|{}|{}|{}",
        c.stat.key(),
        c.classes,
        c.method.name(),
        filter
            .as_ref()
            .map(FilterSpec::describe)
            .unwrap_or_default(),
        name_field.as_deref().unwrap_or("")
    );
    let cache = state.analysis.clone();
    let service = state.tiles.clone();
    let stat_key = c.stat.key();
    let (zl2, ll2) = (zl.clone(), ll.clone());
    let render = move |zones: Arc<analysis::Zones>, agg: Arc<analysis::Aggregate>| {
        let column = agg.column(&stat_key).unwrap_or_default();
        let breaks = agg.breaks(&stat_key, c.classes, c.method);
        let (k_name, k_value, k_class): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("name"), Arc::from("value"), Arc::from("class"));
        service.zone_tile(
            &zl2,
            &[&ll2],
            &tile_layer_name(&zl2.meta.id),
            &variant,
            tile,
            |pos| {
                let mut props = Vec::new();
                let Ok(i) = zones.zones.binary_search_by_key(&pos, |z| z.pos) else {
                    return props;
                };
                if let Some(n) = &zones.zones[i].name {
                    props.push((k_name.clone(), MvtValue::String(n.clone())));
                }
                if let Some(v) = column.get(i).copied().flatten() {
                    props.push((k_value.clone(), MvtValue::Double(v)));
                    if let Some(cl) = classes::class_of(v, &breaks) {
                        props.push((k_class.clone(), MvtValue::Uint(cl as u64)));
                    }
                }
                props
            },
        )
    };
    let stats = std::slice::from_ref(&c.stat).to_vec();
    // A map asks for a dozen tiles of one choropleth at once: when its aggregate is
    // cached, a tile is a rendering and takes no slot of the gate; computing a new
    // aggregate (a new filter) goes through it.
    let body = match analysis::peek_aggregate(
        &cache,
        &zl,
        name_field.as_deref(),
        &ll,
        &stats,
        filter.as_ref(),
    ) {
        Some((zones, agg)) => tokio::task::spawn_blocking(move || render(zones, agg))
            .await
            .map_err(ApiError::internal)??,
        None => {
            blocking(&state, &caller, move || {
                let (zones, agg) = analysis::cached_aggregate(
                    &cache,
                    &zl,
                    name_field.as_deref(),
                    &ll,
                    &stats,
                    filter.as_ref(),
                )?;
                render(zones, agg)
            })
            .await?
        }
    };
    Ok(super::tiles::tile_response(&state, &body, &headers))
}

/// `GET /api/analysis/tiles/{zones}/{layer}/{stat}.json`: TileJSON 3.0.0 of a
/// choropleth.
pub async fn tilejson(
    State(state): State<AppState>,
    caller: Caller,
    Path((zones_id, layer_id, stat)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let stat = stat.strip_suffix(".json").ok_or_else(|| {
        ApiError::not_found(
            "the TileJSON of a choropleth is /api/analysis/tiles/{zones}/{layer}/{stat}.json",
        )
    })?;
    let mut acc = accepted(&[], true);
    acc.extend(CHOROPLETH_PARAMS);
    let p = Params::parse(raw.as_deref(), &acc, &[])?;
    let zl = layer_named(&state, &caller, "zones", &zones_id)?;
    let ll = layer_named(&state, &caller, "layer", &layer_id)?;
    let c = choropleth(&p, stat, &ll)?;
    let base = base_url(&headers);
    let qs = raw
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut tj = state
        .tiles
        .tilejson(std::slice::from_ref(&zl), &zl.meta.id, &base);
    if let Value::Object(o) = &mut tj {
        let key = c.stat.key();
        o.insert(
            "tiles".into(),
            json!([format!(
                "{base}/api/analysis/tiles/{}/{}/{}/{{z}}/{{x}}/{{y}}.mvt{qs}",
                zl.meta.id,
                ll.meta.id,
                utf8_percent(&key)
            )]),
        );
        o.insert(
            "name".into(),
            json!(format!("{} por {}: {key}", ll.meta.title, zl.meta.title)),
        );
        o.insert(
            "description".into(),
            json!(format!(
                "{key} of '{}' per zone of '{}'. {}",
                ll.meta.id,
                zl.meta.id,
                analysis::METHOD
            )),
        );
        o.insert(
            "vector_layers".into(),
            json!([{
                "id": tile_layer_name(&zl.meta.id),
                "description": format!("{} ({key})", zl.meta.title),
                "fields": {"name": "String", "value": "Number", "class": "Number"},
                "minzoom": 0,
                "maxzoom": state.tiles.maxzoom(&zl.meta.id),
            }]),
        );
    }
    Ok(Json(tj))
}

/// `GET /api/analysis/nearest`: the k nearest features as GeoJSON with `distance_m`.
pub async fn nearest(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(
        raw.as_deref(),
        &accepted(&["layer", "lon", "lat", "k", "max_km"], true),
        &[],
    )?;
    let ll = layer_named(
        &state,
        &caller,
        "layer",
        p.required("layer", "the layer to search, e.g. clinicas")?,
    )?;
    p.required("lon", "longitude in degrees (WGS 84)")?;
    p.required("lat", "latitude in degrees (WGS 84)")?;
    let lon = p.number("lon", 0.0, -180.0, 180.0)?;
    let lat = p.number("lat", 0.0, -90.0, 90.0)?;
    let k = p.number("k", 5.0, 1.0, 100.0)?;
    if k.fract() != 0.0 {
        return Err(ApiError::bad_request(
            "k must be a whole number from 1 to 100",
        ));
    }
    let max_m = match p.get("max_km") {
        Some(_) => Some(p.number("max_km", 0.0, 1e-9, 20_040.0)? * 1000.0),
        None => None,
    };
    let filter = p.filter()?;
    let layer = ll.clone();
    let body = blocking(&state, &caller, move || {
        let allow = filter.as_ref().map(|f| f.allowed(&layer)).transpose()?;
        let hits = nearest::nearest(&layer, lon, lat, k as usize, max_m, &allow)?;
        let mut feats = Vec::with_capacity(hits.len());
        for h in hits {
            let Some((_, offset)) = layer.at(h.pos) else {
                continue;
            };
            let mut f = layer.feature_json(offset)?;
            if let Some(props) = f.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert(
                    "distance_m".into(),
                    json!((h.distance_m * 100.0).round() / 100.0),
                );
            }
            feats.push(f);
        }
        Ok(json!({
            "type": "FeatureCollection",
            "query": {"layer": layer.meta.id, "lon": lon, "lat": lat, "k": k as usize,
                      "max_km": max_m.map(|m| m / 1000.0),
                      "distance": "geodesic metres on the WGS 84 ellipsoid"},
            "numberReturned": feats.len(),
            "features": feats,
        }))
    })
    .await?;
    Ok(with_type(Json(body), "application/geo+json"))
}

/// `GET /api/analysis/coverage`: per zone, the share farther than `within_m` from
/// every feature of the layer, and its centroid's distance to the nearest one.
pub async fn coverage(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(
        raw.as_deref(),
        &accepted(&["zones", "layer", "within_m", "name_field", "f"], true),
        &[],
    )?;
    let zl = layer_named(
        &state,
        &caller,
        "zones",
        p.required("zones", "a polygon layer such as colonias")?,
    )?;
    let ll = layer_named(
        &state,
        &caller,
        "layer",
        p.required("layer", "the layer of services, e.g. parques")?,
    )?;
    let within = p.number("within_m", 1000.0, 1.0, 100_000.0)?;
    let out = out_format(&p, true)?;
    let filter = p.filter()?;
    let name_field = p.get("name_field").map(str::to_string);
    let cache = state.analysis.clone();
    let (zones, v) = blocking(&state, &caller, move || {
        let zones = cache.zones_named(&zl, name_field.as_deref())?;
        let key = format!(
            "coverage|{}@{}|{}|{}@{}|{within}|{}",
            zl.meta.id,
            zl.meta.version,
            zones.name_field.as_deref().unwrap_or(""),
            ll.meta.id,
            ll.meta.version,
            filter.as_ref().map(FilterSpec::describe).unwrap_or_default()
        );
        let z2 = zones.clone();
        let v = cache.value(key, move || {
            let allow = filter.as_ref().map(|f| f.allowed(&ll)).transpose()?;
            let rows = nearest::coverage(&z2, &ll, within, &allow)?;
            Ok(json!({
                "zones": {"layer": zl.meta.id, "version": zl.meta.version, "name_field": z2.name_field},
                "layer": {"layer": ll.meta.id, "version": ll.meta.version},
                "within_m": within,
                "method": format!("uncovered_share: share of the zone farther than within_m (geodesic) from every feature, estimated on a regular lattice of about {} points per zone (cell centres, equal spacing in metres); centroid_distance_m: geodesic metres from the zone's centroid to the nearest feature; centroid_uncovered: that distance exceeds within_m.", nearest::SAMPLES_PER_ZONE),
                "rows": rows.iter().map(|r| json!({
                    "id": r.fid,
                    "name": r.name,
                    "area_km2": (r.area_km2 * 1e6).round() / 1e6,
                    "uncovered_share": (r.uncovered_share * 1e4).round() / 1e4,
                    "samples": r.samples,
                    "centroid_distance_m": r.centroid_distance_m.map(|d| (d * 100.0).round() / 100.0),
                    "centroid_uncovered": r.centroid_distance_m.is_none_or(|d| d > within),
                })).collect::<Vec<_>>(),
            }))
        })?;
        Ok((zones, v))
    })
    .await?;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let cols = [
        "id",
        "name",
        "area_km2",
        "uncovered_share",
        "samples",
        "centroid_distance_m",
        "centroid_uncovered",
    ];
    Ok(match out {
        Out::Json => Json((*v).clone()).into_response(),
        Out::Csv => csv_response(
            table_csv(&cols, &rows),
            &format!(
                "cobertura-{}-{}.csv",
                zones.layer_id,
                v["layer"]["layer"].as_str().unwrap_or("")
            ),
        ),
        Out::GeoJson => {
            let feats: Vec<Value> = rows
                .iter()
                .zip(&zones.zones)
                .map(|(r, z)| {
                    let mut props = r.as_object().cloned().unwrap_or_default();
                    props.remove("id");
                    json!({"type": "Feature", "id": z.fid,
                           "geometry": analysis::geometry_json(&z.geom),
                           "properties": props})
                })
                .collect();
            with_type(
                Json(json!({"type": "FeatureCollection", "features": feats})),
                "application/geo+json",
            )
        }
    })
}

/// Rows of JSON objects as CSV in the given column order.
fn table_csv(cols: &[&str], rows: &[Value]) -> String {
    let mut s = cols.join(",");
    s.push_str("\r\n");
    for r in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &r[*c] {
                Value::Null => String::new(),
                Value::String(t) => crate::download::csv_field(t),
                other => other.to_string(),
            })
            .collect();
        s.push_str(&cells.join(","));
        s.push_str("\r\n");
    }
    s
}

/// `GET /api/analysis/profile`: one zone measured against every layer.
pub async fn profile(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(raw.as_deref(), &["zones", "zone", "name_field", "f"], &[])?;
    let zl = layer_named(
        &state,
        &caller,
        "zones",
        p.required("zones", "a polygon layer such as colonias")?,
    )?;
    let zone_raw = p.required(
        "zone",
        "the feature id of the zone (as in /collections/{zones}/items/{id})",
    )?;
    let fid: i64 = zone_raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "zone must be a feature id (a whole number), got '{zone_raw}'"
        ))
    })?;
    let out = out_format(&p, false)?;
    let name_field = p.get("name_field").map(str::to_string);
    // Only the layers the caller may see are profiled.
    let all = super::sorted_layers(&state, &caller);
    let cache = state.analysis.clone();
    let zid = zl.meta.id.clone();
    let v = blocking(&state, &caller, move || {
        let zones = cache.zones_named(&zl, name_field.as_deref())?;
        let Some(zi) = zones.find_fid(fid) else {
            return Err(layers::Error::UnknownLayer(format!("{}/{fid}", zl.meta.id)));
        };
        let key = format!(
            "profile|{}@{}|{}|{fid}|{}",
            zl.meta.id,
            zl.meta.version,
            zones.name_field.as_deref().unwrap_or(""),
            all.iter()
                .map(|l| format!("{}@{}", l.meta.id, l.meta.version))
                .collect::<Vec<_>>()
                .join(",")
        );
        cache.value(key, || {
            let rows = analysis::profile(&zones, zi, &all)?;
            Ok(analysis::profile_json(&zones, zi, &rows))
        })
    })
    .await
    .map_err(|e| match e.status {
        axum::http::StatusCode::NOT_FOUND => ApiError::not_found(format!(
            "zone {fid} does not exist in '{zid}'; GET /collections/{zid}/items lists them"
        )),
        _ => e,
    })?;
    Ok(match out {
        Out::Json => Json((*v).clone()).into_response(),
        _ => {
            let mut rows = Vec::new();
            for m in v["ministries"].as_array().into_iter().flatten() {
                for l in m["layers"].as_array().into_iter().flatten() {
                    let mut r = l.clone();
                    r["ministry"] = m["ministry"].clone();
                    r["geometry"] = json!(l["geometry"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default());
                    rows.push(r);
                }
            }
            let cols = [
                "ministry",
                "layer",
                "title",
                "geometry",
                "count",
                "density_km2",
                "length_m",
                "area_share",
            ];
            csv_response(
                table_csv(&cols, &rows),
                &format!(
                    "perfil-{}-{fid}.csv",
                    v["zones"]["layer"].as_str().unwrap_or("")
                ),
            )
        }
    })
}
