//! HTTP: axum routers over the layer registry, and the one place errors become status
//! codes. Handlers are thin: parameters are parsed by [`crate::features`], work that
//! decodes many features runs on the blocking pool, never on the async executor.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use layers::index::{LoadedLayer, Registry};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::features::{self, BadParam};
use crate::tileserve::TileService;

mod tiles;

/// Shared state: a cheap `Clone` handle.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub tiles: Arc<TileService>,
}

/// An error response: 4xx bodies explain, 5xx bodies reveal nothing.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidParameterValue",
            description: msg.into(),
        }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            description: msg.into(),
        }
    }
    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "ServerError",
            description: "internal server error; the details are in the server log".into(),
        }
    }
}

impl From<BadParam> for ApiError {
    fn from(e: BadParam) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<layers::Error> for ApiError {
    fn from(e: layers::Error) -> Self {
        match e {
            layers::Error::UnknownLayer(_) => ApiError::not_found(e.to_string()),
            e if e.is_user_error() => ApiError::bad_request(e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "description": self.description});
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/health", get(health))
        .route("/collections", get(collections))
        .route("/collections/:id", get(collection))
        .route("/collections/:id/items", get(items))
        .route("/collections/:id/items/:fid", get(item))
        .route("/tiles/:layers/:z/:x/:y", get(tiles::tile))
        .route("/tiles/:name", get(tiles::tilejson))
        .fallback(|| async { ApiError::not_found("no such endpoint; see / for the links") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` resolves; also refreshes the registry every `refresh`
/// so versions published by `datahub ingest` in another process appear without restart.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    refresh: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = state.registry.clone();
    let tile_service = state.tiles.clone();
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.tick().await;
        loop {
            tick.tick().await;
            let r = registry.clone();
            match tokio::task::spawn_blocking(move || r.refresh()).await {
                Ok(Ok(changed)) if !changed.is_empty() => {
                    tile_service.invalidate(&changed);
                    tracing::info!(?changed, "new layer versions loaded")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "refresh failed"),
                _ => {}
            }
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    refresher.abort();
    Ok(())
}

/// The URL prefix clients used to reach us (honours reverse-proxy headers).
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let proto = h("x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = h("x-forwarded-host")
        .or_else(|| h("host"))
        .unwrap_or_else(|| "localhost".into());
    format!("{proto}://{host}")
}

pub(crate) fn layer(state: &AppState, id: &str) -> ApiResult<Arc<LoadedLayer>> {
    state.registry.get(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "collection '{id}' does not exist; GET /collections lists them"
        ))
    })
}

async fn landing(headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    Json(json!({
        "title": "Monterrey DataHub",
        "description": "Datos geoespaciales de las secretarías del Municipio de Monterrey / Spatial data of the City of Monterrey",
        "links": [
            {"href": format!("{base}/"), "rel": "self", "type": "application/json", "title": "this document"},
            {"href": format!("{base}/collections"), "rel": "data", "type": "application/json", "title": "layers"},
        ]
    }))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "layers": state.registry.snapshot().len()}))
}

fn collection_json(l: &LoadedLayer, base: &str) -> Value {
    let m = &l.meta;
    let url = format!("{base}/collections/{}", m.id);
    let mut c = json!({
        "id": m.id,
        "title": m.title,
        "description": m.description,
        "ministry": m.ministry,
        "itemType": "feature",
        "count": l.len(),
        "version": m.version,
        "updated": m.created_at,
        "synthetic": m.synthetic,
        "geometryTypes": m.geometry_types,
        "sourceCrs": m.source_crs.epsg.map(|c| format!("EPSG:{c}")).unwrap_or_else(|| m.source_crs.name.clone()),
        "crs": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
        "storageCrs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "links": [
            {"href": url, "rel": "self", "type": "application/json", "title": "this collection"},
            {"href": format!("{url}/items"), "rel": "items", "type": "application/geo+json", "title": "features"},
        ],
    });
    if let Some(b) = m.bbox {
        c["bbox"] = json!(b);
        c["extent"] = json!({"spatial": {"bbox": [b], "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}});
    }
    c
}

async fn collections(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    let snap = state.registry.snapshot();
    let mut ids: Vec<&String> = snap.keys().collect();
    ids.sort();
    let cols: Vec<Value> = ids
        .iter()
        .map(|id| collection_json(&snap[*id], &base))
        .collect();
    Json(json!({
        "collections": cols,
        "links": [{"href": format!("{base}/collections"), "rel": "self", "type": "application/json", "title": "this document"}],
    }))
}

async fn collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let l = layer(&state, &id)?;
    Ok(Json(collection_json(&l, &base_url(&headers))))
}

fn geojson(body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    r
}

async fn items(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let l = layer(&state, &id)?;
    let q = features::parse_items_query(raw.as_deref())?;
    let url = format!("{}/collections/{id}", base_url(&headers));
    let body = tokio::task::spawn_blocking(move || features::items_page(&l, &q, &url))
        .await
        .map_err(ApiError::internal)??;
    Ok(geojson(body))
}

async fn item(
    State(state): State<AppState>,
    Path((id, fid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let l = layer(&state, &id)?;
    let n: i64 = fid
        .parse()
        .map_err(|_| ApiError::not_found(format!("feature '{fid}' does not exist in '{id}'")))?;
    let offset = l
        .find(n)
        .ok_or_else(|| ApiError::not_found(format!("feature '{fid}' does not exist in '{id}'")))?;
    let mut out = Vec::new();
    l.write_geojson(offset, &mut out)?;
    Ok(geojson(out))
}
