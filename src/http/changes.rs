//! `GET /collections/{id}/changes` (what changed between two versions, or since a
//! version or a date: a JSON summary, or the changed features as paged GeoJSON) and
//! `GET /collections/{id}/items/{fid}/history`. The work is [`crate::changes`]; this
//! file owns the parameters, access and the responses.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{base_url, heavy, json_doc, layer, link_header, ApiError, ApiResult, AppState};
use crate::catalog::Caller;
use crate::changes::{self, Page};
use crate::limits::Work;

/// Most changed features in one GeoJSON page (the default is 1,000).
const MAX_LIMIT: usize = 10_000;

pub(super) async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let l = layer(&state, &caller, &id)?;
    let params = super::query_params(
        raw.as_deref(),
        &[
            "from", "to", "since", "key", "f", "change", "limit", "offset",
        ],
    )?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let version = |k: &str| -> ApiResult<Option<u32>> {
        get(k)
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    ApiError::bad_request(format!("{k}='{v}' is not a version number"))
                })
            })
            .transpose()
    };
    let geojson = match get("f").unwrap_or("json") {
        "json" => false,
        "geojson" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "f='{other}' is not offered here; use f=json (summary) or f=geojson (the changed features)"
            )))
        }
    };
    let count = |k: &str, default: usize, max: usize| -> ApiResult<usize> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{k}='{v}' must be a whole number from 0 to {max}"
                    ))
                }),
        }
    };
    let limit = count("limit", 1000, MAX_LIMIT)?.max(1);
    let offset = count("offset", 0, usize::MAX)?;
    let kinds = changes::parse_kinds(get("change").unwrap_or("")).map_err(ApiError::bad_request)?;
    let key: Vec<String> = get("key")
        .map(|k| {
            k.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let (mut from, to, since) = (
        version("from")?,
        version("to")?,
        get("since").map(str::to_string),
    );
    // A draft (`<id>@draft`) is compared with the version it was made on by default.
    let draft_base = l.meta.draft.as_ref().map(|d| d.base.unwrap_or(0));
    if from.is_none() && since.is_none() {
        from = draft_base;
    }
    if from.is_some() == since.is_some() {
        return Err(ApiError::bad_request(
            "say where to start: from=<version> (with to=<version>, the current one by default) \
             or since=<version or date>, not both",
        ));
    }
    if since.is_some() && to.is_some() {
        return Err(ApiError::bad_request(
            "since= compares with the current version: leave out to=",
        ));
    }
    let store = state.registry.shared_store();
    let cache = state.changes.clone();
    let base = base_url(&headers);
    let current = l.clone();
    let id = l.meta.id.clone();
    let who = caller.clone();
    let doc = heavy(&state, &caller, Work::Query, move || {
        let from = match (from, since) {
            (Some(f), _) => f,
            (None, Some(s)) => {
                changes::resolve_since(&id, &changes::published(store.as_ref(), &id)?, &s)?
            }
            (None, None) => 0,
        };
        let to = to.unwrap_or(current.meta.version);
        // Both versions' records decide first, before anything of them is read: a
        // version the caller may not see (a draft, restricted then) answers like a
        // missing one, with nothing of its columns or values in an error.
        if from != 0 || to != current.meta.version {
            let all = store.versions(&id)?;
            for n in [from, to].into_iter().filter(|n| *n != 0) {
                if let Some(v) = all.iter().find(|v| v.meta.version == n) {
                    if !who.can_see(&v.meta) {
                        return Err(layers::Error::UnknownLayer(format!("{id} v{n}")));
                    }
                }
            }
        }
        let c = cache.diff(store.as_ref(), Some(&current), &id, from, to, &key)?;
        // A draft's features are its ministry's only, whichever way it is named.
        if !who.can_see(&c.new.meta) || c.old.as_ref().is_some_and(|o| !who.can_see(&o.meta)) {
            return Err(layers::Error::UnknownLayer(format!("{id} v{to}")));
        }
        if geojson {
            changes::geojson_page(
                &c,
                &Page {
                    kinds: &kinds,
                    offset,
                    limit,
                },
                &base,
            )
        } else {
            Ok(changes::summary(&c, &base))
        }
    })
    .await?;
    let mut r = json_doc(
        &doc,
        if geojson {
            "application/geo+json"
        } else {
            "application/json"
        },
    );
    if let Some(links) = doc["links"].as_array() {
        link_header(&mut r, links);
    }
    Ok(r)
}

pub(super) async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, fid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let l = layer(&state, &caller, &id)?;
    let params = super::query_params(raw.as_deref(), &["f"])?;
    if let Some((_, f)) = params.iter().find(|(k, v)| k == "f" && v != "json") {
        return Err(ApiError::bad_request(format!(
            "f='{f}' is not offered here; use f=json"
        )));
    }
    let not_found =
        || ApiError::not_found(format!("feature '{fid}' is in no kept version of '{id}'"));
    let n: i64 = fid.parse().map_err(|_| not_found())?;
    let store = state.registry.shared_store();
    let cache = state.changes.clone();
    let who = caller.clone();
    let doc = heavy(&state, &caller, Work::Query, move || {
        changes::history(&cache, store.as_ref(), &l, n, &|m| who.can_see(m))
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(json_doc(&doc, "application/json"))
}
