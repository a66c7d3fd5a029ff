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

use crate::download::DownloadFormat;
use crate::features::{self, BadParam, Format};
use crate::limits::Work;
use crate::ogc::{self, crs::OutputCrs};
use crate::tileserve::TileService;

mod analysis;
pub mod auth;
pub(crate) mod catalog;
mod changes;
mod drafts;
mod quality;
mod subscriptions;
mod tiles;
mod web;

use crate::catalog::{Caller, CatalogStore};

/// Shared state: one `Arc`, so the clone axum makes for each extractor of each
/// request is one reference count (cloning ~20 `Arc` fields, contended between the
/// worker threads, was 7% of a cached tile's CPU).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(s: Shared) -> Self {
        AppState(Arc::new(s))
    }
}

/// What every handler reads (through [`AppState`]).
pub struct Shared {
    pub registry: Arc<Registry>,
    pub tiles: Arc<TileService>,
    pub temporal: Arc<ogc::TemporalExtents>,
    /// Prepared zone layers and computed aggregates (`/api/analysis`).
    pub analysis: Arc<crate::analysis::cache::Cache>,
    /// Requests per layer and day (`usage.json` in the data folder).
    pub usage: Arc<crate::usage::Usage>,
    /// Expected area and thresholds for diagnoses computed by the server.
    pub quality: Arc<layers::diagnose::DiagnoseConfig>,
    /// Ministries, tokens, audit log, job records.
    pub catalog: Arc<dyn CatalogStore>,
    pub auth: Arc<auth::Auth>,
    /// Uploads being ingested.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Archive limits of ingests started by uploads.
    pub limits: layers::ingest::Limits,
    /// Largest upload accepted (413 beyond).
    pub max_upload_bytes: u64,
    /// The web map's basemap settings.
    pub map: Arc<crate::config::MapSettings>,
    /// Slots, budgets and cancellation for expensive requests.
    pub gate: Arc<crate::limits::Gate>,
    /// The PostgreSQL backend, when used: replication and readiness.
    pub pg: Option<crate::backend::Pg>,
    /// Request counters and latencies, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Woken when another replica announced a change (the refresh runs at once).
    pub changed: Arc<tokio::sync::Notify>,
    /// Loaded kept versions and computed diffs (`/collections/{id}/changes`).
    pub changes: Arc<crate::changes::Changes>,
    /// Notifications to subscribers: settings, and the sender's wake-up.
    pub webhooks: Arc<crate::webhooks::WebhookSettings>,
    pub webhooks_wake: Arc<tokio::sync::Notify>,
    /// Catalogue search index, rebuilt when the layers change.
    pub search: Arc<std::sync::Mutex<Option<Arc<catalog::SearchIndex>>>>,
}

fn registry_root(r: &Registry) -> &std::path::Path {
    r.store().data_dir()
}

impl Shared {
    pub fn new(
        registry: Arc<Registry>,
        tiles: Arc<TileService>,
        catalog: Arc<dyn CatalogStore>,
    ) -> layers::Result<Self> {
        let usage = Arc::new(crate::usage::Usage::open(registry_root(&registry)));
        Ok(Shared {
            pg: None,
            changed: Arc::default(),
            metrics: Arc::default(),
            registry,
            tiles,
            temporal: Arc::default(),
            analysis: Arc::default(),
            usage,
            quality: Default::default(),
            auth: Arc::new(auth::Auth::new(catalog.clone(), Vec::new())),
            jobs: Arc::new(crate::jobs::Jobs::new(catalog.clone())),
            catalog,
            limits: layers::ingest::Limits::default(),
            max_upload_bytes: 2 << 30,
            search: Arc::default(),
            changes: Arc::default(),
            webhooks: Arc::default(),
            webhooks_wake: Arc::default(),
            gate: Arc::new(crate::limits::Gate::new(crate::limits::Limits::default())),
            map: Default::default(),
        })
    }
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
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthorized",
            description: msg.into(),
        }
    }
    pub fn is_too_many(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            description: msg.into(),
        }
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code: "Conflict",
            description: msg.into(),
        }
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "PayloadTooLarge",
            description: msg.into(),
        }
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "ServiceUnavailable",
            description: msg.into(),
        }
    }
    pub fn too_many(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TooManyRequests",
            description: msg.into(),
        }
    }
    pub fn gone(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::GONE,
            code: "Gone",
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

/// No slot of the gate came free in time: 503 naming the setting.
impl From<crate::limits::Busy> for ApiError {
    fn from(b: crate::limits::Busy) -> Self {
        ApiError::unavailable(b.to_string())
    }
}

impl From<layers::Error> for ApiError {
    fn from(e: layers::Error) -> Self {
        match e {
            layers::Error::UnknownLayer(_) => ApiError::not_found(e.to_string()),
            layers::Error::Gone(m) => ApiError::gone(m),
            layers::Error::Conflict(m) => ApiError::conflict(m),
            layers::Error::Limit(m) => ApiError::unavailable(m),
            e @ layers::Error::Database(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable(e.to_string())
            }
            e if e.is_user_error() => ApiError::bad_request(e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "description": self.description});
        let mut r = (self.status, Json(body)).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"datahub\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        r
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/conformance", get(conformance))
        .route("/publicar", get(web::publicar))
        .route("/api/map-config", get(web::map_config))
        .route("/web/app/:file", get(web::asset))
        .route("/api", get(api))
        .route("/api.html", get(api_html))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/collections", get(collections))
        .route("/collections/:id", get(collection))
        .route("/collections/:id/queryables", get(queryables))
        .route("/collections/:id/items", get(items))
        .route("/collections/:id/items/:fid", get(item))
        .route("/collections/:id/items/:fid/history", get(changes::history))
        .route("/collections/:id/changes", get(changes::changes))
        .route(
            "/api/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/api/subscriptions/:id",
            axum::routing::delete(subscriptions::remove),
        )
        .route(
            "/api/subscriptions/:id/deliveries",
            get(subscriptions::deliveries),
        )
        .route("/tiles/:layers/:z/:x/:y", get(tiles::tile))
        .route("/tiles/:name", get(tiles::tilejson))
        .route("/api/layers/:id/quality", get(quality::layer))
        .route("/api/quality", get(quality::city))
        .route("/api/usage", get(quality::usage))
        .route("/api/analysis", get(analysis::index))
        .route("/api/analysis/aggregate", get(analysis::aggregate))
        .route("/api/analysis/legend", get(analysis::legend))
        .route("/api/analysis/nearest", get(analysis::nearest))
        .route("/api/analysis/coverage", get(analysis::coverage))
        .route("/api/analysis/profile", get(analysis::profile))
        .route(
            "/api/analysis/tiles/:zones/:layer/:stat/:z/:x/:y",
            get(analysis::tile),
        )
        .route(
            "/api/analysis/tiles/:zones/:layer/:stat",
            get(analysis::tilejson),
        )
        .merge(catalog::routes(&state))
        .route("/web/maplibre/:file", get(web::maplibre))
        .route("/metrics", get(metrics))
        // After routing (route_layer): the matched route names the class.
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint; see / for the links") })
        .layer(axum::middleware::from_fn_with_state(
            (state.usage.clone(), state.registry.clone()),
            crate::usage::track,
        ))
        .layer(axum::middleware::from_fn(private_when_authenticated))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(cors())
        .with_state(state)
}

/// A response to a request that carried credentials may hold what anonymous callers
/// must not see: shared caches (CDNs, proxies) must not keep it for others.
async fn private_when_authenticated(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authenticated = req.headers().contains_key(header::AUTHORIZATION)
        || req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .any(|v| v.to_str().unwrap_or("").contains(auth::SESSION_COOKIE));
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if authenticated {
        let cc = h
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|d| !d.eq_ignore_ascii_case("public") && !d.starts_with("s-maxage"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let v = if cc.is_empty() {
            "private".to_string()
        } else {
            format!("private, {cc}")
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(header::CACHE_CONTROL, v);
        }
    }
    h.append(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    r
}

/// Everything here is readable from any origin (web maps on the city's portals call
/// features and tiles from the browser); the headers clients need are exposed.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::ACCEPT,
            header::IF_NONE_MATCH,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
        ])
        .expose_headers([
            header::LINK,
            header::ETAG,
            header::CONTENT_DISPOSITION,
            header::LOCATION,
            HeaderName::from_static("content-crs"),
            HeaderName::from_static("x-tile-dropped-features"),
        ])
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
    let analysis = state.analysis.clone();
    let usage = state.usage.clone();
    let usage_at_exit = state.usage.clone();
    let changed = state.changed.clone();
    let metrics = state.metrics.clone();
    metrics.refreshed(true);
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.tick().await;
        loop {
            // Every `refresh`, or at once when another replica announced a change.
            tokio::select! {
                _ = tick.tick() => {}
                _ = changed.notified() => {}
            }
            let r = registry.clone();
            let u = usage.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || u.flush())
                .await
                .map_err(std::io::Error::other)
                .and_then(|x| x)
            {
                tracing::warn!(error = %e, "cannot write usage.json");
            }
            let t = tile_service.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let changed = r.refresh()?;
                t.reloaded(&changed, &r);
                Ok::<_, layers::Error>(changed)
            });
            let loaded = loaded.await;
            metrics.refreshed(matches!(loaded, Ok(Ok(_))) && registry.in_sync());
            match loaded {
                Ok(Ok(changed)) if !changed.is_empty() => {
                    analysis.invalidate(&changed);
                    tracing::info!(?changed, "new layer versions loaded")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "refresh failed"),
                _ => {}
            }
        }
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    refresher.abort();
    if let Err(e) = usage_at_exit.flush() {
        tracing::warn!(error = %e, "cannot write usage.json");
    }
    Ok(())
}

/// The URL prefix clients used to reach us (honours reverse-proxy headers). Only a
/// well-formed scheme and host are taken from the request: they are written into
/// links and HTML pages, so a forged header must not inject markup.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let host_ok = |s: &String| {
        s.len() <= 255
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
            })
    };
    let proto = h("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let host = h("x-forwarded-host")
        .filter(host_ok)
        .or_else(|| h("host").filter(host_ok))
        .unwrap_or_else(|| "localhost".into());
    format!("{proto}://{host}")
}

/// A layer the caller may see; one it may not answers exactly like a missing one.
pub(crate) fn layer(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Arc<LoadedLayer>> {
    visible(state, caller, id).ok_or_else(|| {
        ApiError::not_found(format!(
            "collection '{id}' does not exist; GET /collections lists them"
        ))
    })
}

pub(crate) fn visible(state: &AppState, caller: &Caller, id: &str) -> Option<Arc<LoadedLayer>> {
    state.registry.get(id).filter(|l| caller.can_see(&l.meta))
}

/// The representation asked for: `f=` wins, then the Accept header (a browser's
/// `text/html` gets HTML; API clients, `*/*` and no header get JSON).
fn negotiate(f: Option<Format>, headers: &HeaderMap) -> Format {
    if let Some(f) = f {
        return f;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/html") && !accept.contains("json") {
        Format::Html
    } else {
        Format::Json
    }
}

/// Query parameters as (name, value) pairs; a name outside `accepted` is a 400 that
/// lists the accepted ones.
pub(crate) fn query_params(
    raw: Option<&str>,
    accepted: &[&str],
) -> ApiResult<Vec<(String, String)>> {
    let mut v = Vec::new();
    for (k, val) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !accepted.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{k}'; this endpoint accepts: {}",
                accepted.join(", ")
            )));
        }
        v.push((k.into_owned(), val.into_owned()));
    }
    Ok(v)
}

/// For resources whose only parameter is `f`: unknown parameters are a 400.
fn only_f(raw: Option<&str>) -> ApiResult<Option<Format>> {
    let mut f = None;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "f" => f = Some(features::parse_format(&v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; this endpoint accepts: f"
                )))
            }
        }
    }
    Ok(f)
}

fn with_type(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_doc(v: &Value, content_type: &'static str) -> Response {
    with_type(serde_json::to_vec(v).unwrap_or_default(), content_type)
}

fn html_doc(s: String) -> Response {
    with_type(s, "text/html; charset=utf-8")
}

/// `Link` header from a links array (RFC 8288), so clients can page without
/// parsing the body.
fn link_header(r: &mut Response, links: &[Value]) {
    let v: Vec<String> = links
        .iter()
        .filter_map(|l| {
            Some(format!(
                "<{}>; rel=\"{}\"; type=\"{}\"",
                l["href"].as_str()?,
                l["rel"].as_str()?,
                l["type"].as_str().unwrap_or("")
            ))
        })
        .collect();
    if let Ok(h) = HeaderValue::from_str(&v.join(", ")) {
        r.headers_mut().insert(header::LINK, h);
    }
}

async fn landing(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let asked = only_f(raw.as_deref())?;
    // A browser opening the site gets the map; `?f=html` is the OGC landing page.
    if asked.is_none() && negotiate(None, &headers) == Format::Html {
        return Ok(web::map_page(&state.map));
    }
    let f = negotiate(asked, &headers);
    let base = base_url(&headers);
    let doc = ogc::landing(&base);
    Ok(match f {
        Format::Json | Format::Download(_) => json_doc(&doc, "application/json"),
        Format::Html => html_doc(ogc::html::landing(&doc, &base)),
    })
}

async fn conformance(headers: HeaderMap, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let f = negotiate(only_f(raw.as_deref())?, &headers);
    let base = base_url(&headers);
    let doc = ogc::conformance(&base);
    Ok(match f {
        Format::Json | Format::Download(_) => json_doc(&doc, "application/json"),
        Format::Html => html_doc(ogc::html::conformance(&doc, &base)),
    })
}

pub(crate) fn sorted_layers(state: &AppState, caller: &Caller) -> Vec<Arc<LoadedLayer>> {
    let snap = state.registry.snapshot();
    let mut v: Vec<Arc<LoadedLayer>> = snap
        .values()
        .filter(|l| caller.can_see(&l.meta))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    v
}

async fn api(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let doc = ogc::openapi::document(&sorted_layers(&state, &caller), &base_url(&headers));
    json_doc(&doc, ogc::OPENAPI_TYPE)
}

async fn api_html(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let doc = ogc::openapi::document(&sorted_layers(&state, &caller), &base);
    html_doc(ogc::html::api(&doc, &base))
}

/// `GET /health`: `ok`, or `degraded` when some layers could not be read at the
/// last refresh (the others are served). Which ones, and why, only for admins: an
/// anonymous monitor learns the count.
async fn health(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let problems = state.registry.problems();
    let mut doc = json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "layers": sorted_layers(&state, &caller).len(),
        "unreadable_layers": problems.len(),
    });
    doc["backend"] = json!(if state.pg.is_some() {
        "postgresql"
    } else {
        "files"
    });
    if caller.is_admin() && !problems.is_empty() {
        doc["problems"] = problems
            .iter()
            .map(|(layer, error)| json!({"layer": layer, "error": error}))
            .collect();
    }
    Json(doc)
}

/// `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
async fn metrics(State(state): State<AppState>) -> Response {
    let st = state.clone();
    let text = tokio::task::spawn_blocking(move || {
        let (tile_hits, tile_misses, tile_entries, tile_bytes) = st.tiles.cache_stats();
        let pool = st.pg.as_ref().map(|pg| {
            let (size, idle, max) = pg.db.pool_status();
            (size, idle, max, pg.db.ping())
        });
        st.metrics.render(&crate::metrics::Gauges {
            layers: st.registry.snapshot().len(),
            unreadable: st.registry.problems().len(),
            tile_hits,
            tile_misses,
            tile_entries,
            tile_bytes,
            tiles_carried: st.tiles.carried.load(std::sync::atomic::Ordering::Relaxed),
            tiles_rerendered: st
                .tiles
                .rerendered
                .load(std::sync::atomic::Ordering::Relaxed),
            tiles_dropped: st.tiles.dropped.load(std::sync::atomic::Ordering::Relaxed),
            jobs_active: st.jobs.active_all(),
            pool,
        })
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// `GET /health/live`: the process answers (a liveness probe: restart it if not).
async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`: 200 when the layers are loaded (done before the server
/// listens) and, with PostgreSQL, the database answers; 503 otherwise, so a load
/// balancer sends traffic elsewhere while this replica cannot take writes.
async fn ready(State(state): State<AppState>) -> Response {
    let db = match state.pg.clone() {
        None => None,
        Some(pg) => Some(
            tokio::task::spawn_blocking(move || pg.db.ping())
                .await
                .unwrap_or(false),
        ),
    };
    let ok = db != Some(false);
    let mut doc = json!({
        "status": if ok { "ready" } else { "not ready" },
        "layers": state.registry.snapshot().len(),
    });
    if let Some(up) = db {
        doc["database"] = json!(if up { "ok" } else { "unreachable" });
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(doc)).into_response()
}

/// A collection document; the temporal extent may need a scan of the layer (once
/// per version), so callers run this on the blocking pool.
fn collection_doc(state: &AppState, l: &LoadedLayer, base: &str) -> Value {
    ogc::collection(l, base, state.temporal.get(l))
}

async fn collections(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let f = negotiate(only_f(raw.as_deref())?, &headers);
    let base = base_url(&headers);
    let st = state.clone();
    let b = base.clone();
    let doc = tokio::task::spawn_blocking(move || {
        let cols = sorted_layers(&st, &caller)
            .iter()
            .map(|l| collection_doc(&st, l, &b))
            .collect();
        ogc::collections(cols, &b)
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(match f {
        Format::Json | Format::Download(_) => json_doc(&doc, "application/json"),
        Format::Html => html_doc(ogc::html::collections(&doc, &base)),
    })
}

async fn collection(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let f = negotiate(only_f(raw.as_deref())?, &headers);
    let l = layer(&state, &caller, &id)?;
    let base = base_url(&headers);
    let (st, b, l2) = (state.clone(), base.clone(), l.clone());
    let doc = tokio::task::spawn_blocking(move || collection_doc(&st, &l2, &b))
        .await
        .map_err(ApiError::internal)?;
    Ok(match f {
        Format::Json | Format::Download(_) => json_doc(&doc, "application/json"),
        Format::Html => html_doc(ogc::html::collection(
            &doc,
            &ogc::queryables(&l, &base),
            &base,
        )),
    })
}

async fn queryables(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let f = only_f(raw.as_deref())?;
    if f == Some(Format::Html) {
        return Err(ApiError::bad_request(
            "queryables are JSON Schema only; the collection's HTML page lists them",
        ));
    }
    let l = layer(&state, &caller, &id)?;
    Ok(json_doc(
        &ogc::queryables(&l, &base_url(&headers)),
        "application/schema+json",
    ))
}

/// The map shown on HTML feature pages (only for lon/lat output).
fn preview(crs: &OutputCrs) -> ogc::html::Preview {
    match crs.epsg {
        Some(_) => ogc::html::Preview::None,
        None => ogc::html::Preview::MapLibre,
    }
}

fn content_crs(r: &mut Response, c: &OutputCrs) {
    if let Ok(v) = HeaderValue::from_str(&format!("<{}>", c.uri)) {
        r.headers_mut().insert("content-crs", v);
    }
}

async fn items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let l = layer(&state, &caller, &id)?;
    let q = features::parse_items_query(raw.as_deref(), &l.meta.schema)?;
    let f = negotiate(q.format, &headers);
    if let Format::Download(d) = f {
        return download(&state, &caller, l, q, d).await;
    }
    let base = base_url(&headers);
    let url = format!("{base}/collections/{id}");
    let crs = q.crs;
    let l2 = l.clone();
    // Plain pages and bbox queries go through the index and stay ungated (the
    // map's and the benchmarks' path); property tests scan features.
    let page = if q.has_property_tests() {
        heavy(&state, &caller, Work::Query, move || {
            features::items_page(&l2, &q, &url, f)
        })
        .await?
    } else {
        tokio::task::spawn_blocking(move || features::items_page(&l2, &q, &url, f))
            .await
            .map_err(ApiError::internal)??
    };
    let mut r = match f {
        Format::Json | Format::Download(_) => with_type(page.body, "application/geo+json"),
        Format::Html => {
            let fc: Value = serde_json::from_slice(&page.body).map_err(ApiError::internal)?;
            html_doc(ogc::html::items(
                &fc,
                &l.meta.title,
                &id,
                &base,
                preview(crs),
            ))
        }
    };
    link_header(&mut r, &page.links);
    content_crs(&mut r, crs);
    Ok(r)
}

/// The whole result of an items query as a file. The result is computed before the
/// response starts, so bad queries are still a clean 4xx; then it streams.
/// Runs expensive work (a scan of features, a download, an analysis) in one of the
/// gate's slots, under its budget, cancelled when the client goes away.
pub async fn heavy<T: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    work: Work,
    f: impl FnOnce() -> layers::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let pass = state
        .gate
        .enter(matches!(caller, Caller::Anonymous), work)
        .await?;
    Ok(pass.run(f).await.map_err(ApiError::internal)??)
}

async fn download(
    state: &AppState,
    caller: &Caller,
    l: Arc<LoadedLayer>,
    q: features::ItemsQuery,
    fmt: DownloadFormat,
) -> ApiResult<Response> {
    use crate::download::{stream_file, stream_geojson, write_file, Chunk};
    if fmt == DownloadFormat::Kml && q.crs.epsg.is_some() {
        return Err(ApiError::bad_request(
            "KML is always WGS 84 longitude/latitude: leave out crs for f=kml",
        ));
    }
    let crs = q.crs;
    let (l2, q2) = (l.clone(), q.clone());
    let positions = heavy(state, caller, Work::Query, move || {
        features::download_positions(&l2, &q2)
    })
    .await?;
    // Each download being sent holds a thread while its client reads: a bounded
    // number at once (setting `streams`), each cut off when its client stalls.
    let stream = state.gate.enter_stream().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    if fmt == DownloadFormat::GeoJson {
        let l2 = l.clone();
        tokio::task::spawn_blocking(move || {
            let _stream = stream;
            if let Err(e) = stream_geojson(&l2, &positions, crs, &tx) {
                tracing::error!(error = %e, "GeoJSON download failed midway");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
    } else {
        // Scratch under the data folder's tmp/, with its owner lock so a crash
        // leaves nothing that `clean_stale` does not remove. It is created and
        // dropped by the blocking task, so a client that goes away mid-write cannot
        // delete it under GDAL (nor leave the task writing into a recreated one).
        // Files are written a few at a time (setting `downloads`), each within its
        // budget, and never into the data folder's last free space.
        let tmp_root = state.registry.store().scratch_dir();
        let min_free = state.gate.limits.min_free_disk;
        crate::limits::free_space(&tmp_root, min_free)?;
        let mut pass = state
            .gate
            .enter(matches!(caller, Caller::Anonymous), Work::Download)
            .await?;
        pass.budget_mut().keep_free(&tmp_root, min_free);
        let l2 = l.clone();
        let written = pass
            .run(move || -> layers::Result<_> {
                let dir = tempfile::Builder::new()
                    .prefix("download.")
                    .tempdir_in(&tmp_root)
                    .map_err(|e| layers::Error::io(&tmp_root, e))?;
                let owner = layers::store::hold_dir(dir.path())?;
                let path = write_file(&l2, &positions, fmt, crs, dir.path())?;
                Ok((dir, owner, path))
            })
            .await
            .map_err(ApiError::internal)??;
        tokio::task::spawn_blocking(move || {
            let _stream = stream;
            let (dir, owner, path) = written;
            if let Err(e) = stream_file(&path, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
            drop(dir);
            drop(owner);
        });
    }
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = with_type(body, fmt.media_type());
    let disposition = format!("attachment; filename=\"{}.{}\"", l.meta.id, fmt.extension());
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    content_crs(&mut r, crs);
    Ok(r)
}

async fn item(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, fid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let l = layer(&state, &caller, &id)?;
    let mut crs = ogc::crs::crs84();
    let mut f = None;
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "f" => f = Some(features::parse_format(&v)?),
            "crs" => crs = ogc::crs::parse("crs", &v)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; this endpoint accepts: crs, f"
                )))
            }
        }
    }
    let f = negotiate(f, &headers);
    let not_found = || ApiError::not_found(format!("feature '{fid}' does not exist in '{id}'"));
    let n: i64 = fid.parse().map_err(|_| not_found())?;
    let offset = l.find(n).ok_or_else(not_found)?;
    let l2 = l.clone();
    let out = tokio::task::spawn_blocking(move || -> layers::Result<Vec<u8>> {
        let mut out = Vec::new();
        ogc::crs::Reproject::new(crs)
            .map_err(layers::Error::Internal)?
            .write_feature(&l2, offset, &mut out)?;
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;
    // Links go into the object: the stored writer emits a bare Feature.
    let base = base_url(&headers);
    let url = format!("{base}/collections/{id}/items/{fid}");
    let links = vec![
        json!({"href": format!("{url}?f=json"), "rel": "self", "type": "application/geo+json", "title": "this feature"}),
        json!({"href": format!("{url}?f=html"), "rel": "alternate", "type": "text/html", "title": "this feature as HTML"}),
        json!({"href": format!("{base}/collections/{id}"), "rel": "collection", "type": "application/json", "title": "the collection"}),
    ];
    let mut feature: Value = serde_json::from_slice(&out).map_err(ApiError::internal)?;
    feature["links"] = json!(links);
    let mut r = match f {
        Format::Json | Format::Download(_) => json_doc(&feature, "application/geo+json"),
        Format::Html => html_doc(ogc::html::item(
            &feature,
            &l.meta.title,
            &id,
            &base,
            preview(crs),
        )),
    };
    link_header(&mut r, &links);
    content_crs(&mut r, crs);
    Ok(r)
}
