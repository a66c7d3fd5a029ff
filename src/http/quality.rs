//! `/api/layers/{id}/quality`, `/api/quality` and `/api/usage`: the data-quality
//! reports over HTTP (JSON, CSV, HTML). Records are read from the store on each request,
//! so a recomputed diagnosis shows at once.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::{base_url, query_params, ApiError, ApiResult, AppState};
use crate::catalog::Caller;
use crate::quality;

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `f=` wins, then a browser's Accept header asks for HTML.
fn wants<'a>(
    p: &'a [(String, String)],
    headers: &HeaderMap,
    allowed: &[&str],
) -> ApiResult<&'a str> {
    match get(p, "f") {
        Some(f) if allowed.contains(&f) => Ok(f),
        Some(f) => Err(ApiError::bad_request(format!(
            "unknown format f={f}; use {}",
            allowed.join(", ")
        ))),
        None => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Ok(
                if accept.contains("text/html") && !accept.contains("json") {
                    "html"
                } else {
                    "json"
                },
            )
        }
    }
}

/// `GET /api/layers/{id}/quality[?version=n][&f=json|html]`
pub async fn layer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = query_params(raw.as_deref(), &["version", "f"])?;
    let f = wants(&p, &headers, &["json", "html"])?;
    let version = match get(&p, "version") {
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!("version must be a version number, got '{v}'"))
        })?),
        None => None,
    };
    let registry = state.registry.clone();
    let settings = state.quality.clone();
    // `<id>@draft`: the layer's draft (its ministry's to see).
    let (id2, want_draft) = match id.strip_suffix(layers::index::DRAFT_SUFFIX) {
        Some(base) => (base.to_string(), true),
        None => (id.clone(), false),
    };
    let c2 = caller.clone();
    let (meta, diagnosis) = super::heavy(&state, &c2, crate::limits::Work::Query, move || {
        let store = registry.store();
        let v = if want_draft {
            store.draft(&id2).or_else(|e| match e {
                layers::Error::BadInput(_) => Ok(None),
                e => Err(e),
            })?
        } else {
            // The current record decides who may see every version of the layer (an
            // id that cannot exist is simply not found).
            match store.current(&id2).or_else(|e| match e {
                layers::Error::BadInput(_) => Ok(None),
                e => Err(e),
            })? {
                Some(c) if !store.is_hidden(&id2) && caller.can_see(&c.meta) => {}
                _ => return Ok(None),
            }
            match version {
                Some(n) => store
                    .versions(&id2)?
                    .into_iter()
                    .find(|v| v.meta.version == n),
                None => store.current(&id2)?,
            }
        };
        // A draft among the versions is its ministry's only.
        let Some(v) = v.filter(|v| v.meta.draft.is_none() || caller.can_see(&v.meta)) else {
            return Ok(None);
        };
        // Versions stored before diagnoses existed get one computed now, in a slot
        // of the gate, and not stored: a reader (anonymous, even) never writes the
        // record; `datahub quality` stores them.
        let d = match &v.meta.diagnosis {
            Some(d) => d.clone(),
            None => {
                let loaded = layers::index::LoadedLayer::load(&v)?;
                layers::diagnose::diagnose(&loaded, &settings)?
            }
        };
        let d = d.as_of(&v.meta, chrono::Utc::now());
        Ok::<_, layers::Error>(Some((v.meta, d)))
    })
    .await?
    .ok_or_else(|| match version {
        Some(n) => ApiError::not_found(format!("layer '{id}' has no kept version {n}")),
        None => ApiError::not_found(format!(
            "layer '{id}' does not exist; GET /collections lists them"
        )),
    })?;
    let usage = state.usage.summary(30);
    let u = usage.get(&id);
    Ok(if f == "html" {
        Html(quality::layer_html(&meta, &diagnosis, u)).into_response()
    } else {
        Json(quality::layer_json(
            &meta,
            &diagnosis,
            u,
            &base_url(&headers),
        ))
        .into_response()
    })
}

/// `GET /api/quality[?f=json|csv|html]`: every layer, grouped by ministry.
pub async fn city(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = query_params(raw.as_deref(), &["f"])?;
    let f = wants(&p, &headers, &["json", "csv", "html"])?;
    let registry = state.registry.clone();
    let metas = tokio::task::spawn_blocking(move || {
        let store = registry.store();
        let mut v = Vec::new();
        for id in store.layer_ids()? {
            // An unreadable layer is left out here (reported by /health).
            let current = store.current(&id).unwrap_or_else(|e| {
                tracing::warn!(layer = %id, error = %e, "unreadable layer left out of the report");
                None
            });
            if let Some(mut c) = current.filter(|c| caller.can_see(&c.meta)) {
                // Staleness depends on today's date, not the day it was diagnosed.
                c.meta.diagnosis = c
                    .meta
                    .diagnosis
                    .as_ref()
                    .map(|d| d.as_of(&c.meta, chrono::Utc::now()));
                v.push(c.meta);
            }
        }
        Ok::<_, layers::Error>(v)
    })
    .await
    .map_err(ApiError::internal)??;
    let doc = quality::city_json(&metas, &state.usage.summary(30));
    Ok(match f {
        "csv" => {
            let mut r = quality::city_csv(&doc).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"calidad-datahub.csv\""),
            );
            r
        }
        "html" => Html(quality::city_html(&doc)).into_response(),
        _ => Json(doc).into_response(),
    })
}

/// `GET /api/usage[?days=30]`: requests per day, layer, kind and audience.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = query_params(raw.as_deref(), &["days"])?;
    let days = match get(&p, "days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=366).contains(d))
            .ok_or_else(|| ApiError::bad_request(format!("days must be 1 to 366, got '{d}'")))?,
        None => 30,
    };
    // Counts of layers the caller may not see are left out, names included.
    let seen = |id: &str| super::visible(&state, &caller, id).is_some();
    let mut daily = state.usage.daily(days);
    if let Some(days) = daily.as_object_mut() {
        for layers in days.values_mut() {
            if let Some(m) = layers.as_object_mut() {
                m.retain(|id, _| seen(id));
            }
        }
    }
    let mut by_layer = state.usage.summary(days);
    by_layer.retain(|id, _| seen(id));
    Ok(Json(serde_json::json!({
        "days": days,
        "kinds": crate::usage::KINDS,
        "daily": daily,
        "by_layer": by_layer,
    }))
    .into_response())
}
