//! The web pages: the planners' map at `/` (for browsers; API clients still get the
//! OGC landing page there) and the publishing page at `/publicar`, with their scripts
//! and styles compiled into the binary, so the pages always match the server's API.
//! MapLibre GL JS is compiled in too (`/web/maplibre/`; the pinned build, its
//! checksum verified by `build.rs`): the binary carries its own map, wherever it runs.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

pub const INDEX: &str = include_str!("../../web/app/index.html");
const PUBLICAR: &str = include_str!("../../web/app/publicar.html");

const FILES: [(&str, &str, &str); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app/app.js"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app/common.js"),
    ),
    (
        "publicar.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app/publicar.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/app/style.css"),
    ),
];

/// MapLibre's files as embedded by `build.rs`: name, type, bytes, gzipped bytes.
const MAPLIBRE: [(&str, &str, &[u8], &[u8]); 2] = [
    (
        "maplibre-gl.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/maplibre-gl.js")),
        include_bytes!(concat!(env!("OUT_DIR"), "/maplibre-gl.js.gz")),
    ),
    (
        "maplibre-gl.css",
        "text/css; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/maplibre-gl.css")),
        include_bytes!(concat!(env!("OUT_DIR"), "/maplibre-gl.css.gz")),
    ),
];

/// `GET /web/maplibre/{file}`: the embedded MapLibre GL JS, gzipped when the client
/// accepts it; its version is pinned, so it may be cached for a day.
pub async fn maplibre(
    Path(file): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (_, ctype, raw, gz) = MAPLIBRE
        .iter()
        .find(|(name, ..)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no such file /web/maplibre/{file}")))?;
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|e| {
                let mut parts = e.split(';').map(str::trim);
                parts.next() == Some("gzip")
                    && parts.all(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_none_or(|q| q > 0.0)
                    })
            })
        });
    let mut r = if gzip { *gz } else { *raw }.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(r)
}

fn page(body: &'static str, extra_origins: &[String]) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The pages call only this origin and a configured basemap's (MapLibre's workers
    // are blob: URLs).
    let extra = extra_origins.join(" ");
    let csp = format!(
        "default-src 'self'; img-src 'self' data: blob: {extra}; worker-src blob:; child-src blob:; style-src 'self' 'unsafe-inline'; connect-src 'self' {extra}"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

pub fn map_page(map: &crate::config::MapSettings) -> Response {
    page(INDEX, &map.origins())
}

/// `/publicar`: it draws a draft's preview on the same basemap as the map.
pub async fn publicar(State(state): State<AppState>) -> Response {
    page(PUBLICAR, &state.map.origins())
}

/// `GET /api/map-config`: the basemap the page should draw.
pub async fn map_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "basemap_style": state.map.basemap_style,
        "basemap_tiles": state.map.basemap_tiles,
        "basemap_attribution": state.map.basemap_attribution,
        "boundaries": state.map.boundaries.clone().unwrap_or_else(|| "colonias".into()),
    }))
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, ctype, body) = FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no such file /web/app/{file}")))?;
    let mut r = (*body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
