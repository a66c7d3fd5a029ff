//! `/tiles/...`: Mapbox Vector Tiles and TileJSON over HTTP (caching headers, gzip,
//! conditional requests). The rendering itself is in [`crate::tileserve`].

use std::sync::Arc;

use crate::tileserve::TileBody;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use layers::index::LoadedLayer;
use serde_json::Value;
use tiles::grid::TileId;

use super::{base_url, layer, ApiError, ApiResult, AppState};
use crate::catalog::Caller;

/// "a,b,c" → the loaded layers, 404 naming the first unknown one.
fn layers_of(state: &AppState, caller: &Caller, ids: &str) -> ApiResult<Vec<Arc<LoadedLayer>>> {
    let mut out = Vec::new();
    for id in ids.split(',') {
        if out.iter().any(|l: &Arc<LoadedLayer>| l.meta.id == id) {
            return Err(ApiError::bad_request(format!(
                "layer '{id}' is listed twice"
            )));
        }
        out.push(layer(state, caller, id)?);
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(what: &str, v: &str) -> ApiResult<T> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "tile {what} must be a whole number >= 0, got '{v}'"
        ))
    })
}

pub async fn tile(
    State(state): State<AppState>,
    caller: Caller,
    Path((ids, z, x, y)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let y = y.strip_suffix(".mvt").ok_or_else(|| {
        ApiError::not_found(format!("tiles end in .mvt: /tiles/{ids}/{z}/{x}/{y}.mvt"))
    })?;
    let tile = TileId::new(parse_num("z", &z)?, parse_num("x", &x)?, parse_num("y", y)?)
        .map_err(ApiError::bad_request)?;
    let layers = layers_of(&state, &caller, &ids)?;
    // Cache hits are answered here; only rendering goes to the blocking pool.
    let body = match state.tiles.cached(&layers, tile) {
        Some(b) => b,
        None => {
            let _permit = state
                .tiles
                .renders
                .acquire()
                .await
                .map_err(ApiError::internal)?;
            // Rendered by a request that held the permit before this one?
            match state.tiles.cached(&layers, tile) {
                Some(b) => b,
                None => {
                    let service = state.tiles.clone();
                    tokio::task::spawn_blocking(move || service.tile(&layers, tile))
                        .await
                        .map_err(ApiError::internal)??
                }
            }
        }
    };
    Ok(tile_response(&state, &body, &headers))
}

pub async fn tilejson(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let ids = name.strip_suffix(".json").ok_or_else(|| {
        ApiError::not_found(format!(
            "no such endpoint: TileJSON is at /tiles/{name}.json"
        ))
    })?;
    let layers = layers_of(&state, &caller, ids)?;
    Ok(Json(state.tiles.tilejson(
        &layers,
        ids,
        &base_url(&headers),
    )))
}

/// Whether `Accept-Encoding` takes gzip (RFC 9110 12.5.3: `gzip;q=0` refuses it, as
/// does `*;q=0` without a gzip entry; `*` accepts it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = None;
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        for item in v.to_str().unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = Some(q > 0.0),
                _ => {}
            }
        }
    }
    star.unwrap_or(false)
}

/// A rendered tile as an HTTP response: 304 on a matching `If-None-Match`, 204 when
/// empty, gzip when accepted, the size cap's drop count in a header.
pub(crate) fn tile_response(state: &AppState, body: &TileBody, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&body.etag).unwrap_or(HeaderValue::from_static("\"x\""));
    let cache_control = HeaderValue::from_str(&state.tiles.settings.cache_control)
        .unwrap_or(HeaderValue::from_static("no-cache"));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == body.etag || t.trim() == "*")
        });
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if body.is_empty() {
        // No feature here: 204 tells map clients there is nothing to draw.
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut r = if accepts_gzip(headers) {
            let mut r = body.gzip.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            match body.raw() {
                Ok(raw) => raw.into_response(),
                Err(e) => return ApiError::internal(e).into_response(),
            }
        };
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.mapbox-vector-tile"),
        );
        if body.dropped > 0 {
            r.headers_mut()
                .insert("x-tile-dropped-features", HeaderValue::from(body.dropped));
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}
