//! `/api/subscriptions`: webhooks registered by admins (a ministry's admin for its
//! ministry, the city-wide admin for any), listed without their secrets, removed,
//! and each one's delivery log. Sending is [`crate::webhooks`].

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{query_params, ApiError, ApiResult, AppState};
use crate::catalog::{AuditEntry, Caller, Role, Subscription};

/// The admin's ministry (None: city-wide), or why the caller may not manage
/// subscriptions.
fn admin_scope(caller: &Caller) -> ApiResult<Option<String>> {
    match caller {
        Caller::Anonymous => Err(ApiError::unauthorized(
            "subscriptions need an admin token: Authorization: Bearer <token>",
        )),
        Caller::Token(p) if p.role == Role::Admin => Ok(p.ministry.clone()),
        Caller::Token(_) => Err(ApiError::forbidden(
            "only admins (of a ministry, or city-wide) manage subscriptions",
        )),
    }
}

/// The subscriptions an admin sees: its ministry's, or all for the city-wide admin.
fn mine(scope: &Option<String>, s: &Subscription) -> bool {
    scope.is_none() || *scope == s.ministry
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    url: String,
    layer: Option<String>,
    /// Only layers of this ministry.
    ministry: Option<String>,
    /// The signing key; generated when absent (returned once).
    secret: Option<String>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let scope = admin_scope(&caller)?;
    let input: NewSubscription = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON {{\"url\": \"http://…\", \"layer\": \"…\" or \"ministry\": \"…\"}}: {e}"
        ))
    })?;
    crate::webhooks::check_url(&input.url).map_err(ApiError::bad_request)?;
    let addrs = tokio::net::lookup_host(crate::webhooks::host_port(&input.url))
        .await
        .map_err(|e| {
            ApiError::bad_request(format!("the receiver's host cannot be resolved: {e}"))
        })?;
    crate::webhooks::receiver_addrs(addrs).map_err(ApiError::bad_request)?;
    if let Some(l) = &input.layer {
        // A layer the admin may not see is answered like a missing one.
        if super::visible(&state, &caller, l).is_none() {
            return Err(ApiError::bad_request(format!(
                "layer '{l}' does not exist (or you may not see it)"
            )));
        }
    }
    if let Some(m) = &input.ministry {
        crate::catalog::check_ministry(&state.catalog.ministries()?, m)?;
    }
    let secret = match input.secret {
        Some(s) if s.len() >= 16 && s.len() <= 256 => s,
        Some(_) => {
            return Err(ApiError::bad_request(
                "secret must have 16 to 256 characters (or leave it out: one is generated)",
            ))
        }
        None => crate::catalog::sqlite::random_hex(24)?,
    };
    let sub = Subscription {
        id: crate::catalog::sqlite::random_hex(8)?,
        ministry: scope,
        layer: input.layer,
        of_ministry: input.ministry,
        url: input.url,
        secret: secret.clone(),
        created_by: caller.actor(),
        created_at: crate::catalog::now(),
        failing: false,
        last_error: None,
    };
    let cat = state.catalog.clone();
    let (s2, actor) = (sub.clone(), caller.actor());
    tokio::task::spawn_blocking(move || {
        cat.put_subscription(&s2)?;
        let mut e = AuditEntry::now(&actor, "subscription.create");
        e.ministry = s2.ministry.clone();
        e.layer = s2.layer.clone();
        e.detail = json!({"id": s2.id, "url": s2.url, "of_ministry": s2.of_ministry});
        cat.append_audit(&e)
    })
    .await
    .map_err(ApiError::internal)??;
    let mut doc = sub.public();
    doc["secret"] = json!(secret);
    doc["note"] = json!("the secret is shown once: verify each notification's X-DataHub-Signature-256 (HMAC-SHA256 of the body)");
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let scope = admin_scope(&caller)?;
    let cat = state.catalog.clone();
    let all = tokio::task::spawn_blocking(move || cat.subscriptions())
        .await
        .map_err(ApiError::internal)??;
    let items: Vec<Value> = all
        .iter()
        .filter(|s| mine(&scope, s))
        .map(|s| s.public())
        .collect();
    Ok(Json(json!({"subscriptions": items})))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Subscription> {
    let scope = admin_scope(caller)?;
    let cat = state.catalog.clone();
    let all = tokio::task::spawn_blocking(move || cat.subscriptions())
        .await
        .map_err(ApiError::internal)??;
    all.into_iter()
        .find(|s| s.id == id && mine(&scope, s))
        .ok_or_else(|| ApiError::not_found(format!("subscription '{id}' does not exist")))
}

pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = find(&state, &caller, &id).await?;
    let (cat, actor) = (state.catalog.clone(), caller.actor());
    tokio::task::spawn_blocking(move || {
        cat.remove_subscription(&s.id)?;
        let mut e = AuditEntry::now(&actor, "subscription.delete");
        e.ministry = s.ministry.clone();
        e.layer = s.layer.clone();
        e.detail = json!({"id": s.id, "url": s.url});
        cat.append_audit(&e)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!({"id": id, "deleted": true})))
}

pub(super) async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = query_params(raw.as_deref(), &["limit"])?;
    let limit = match p.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit='{v}' must be 1 to 1000")))?,
        None => 100,
    };
    let s = find(&state, &caller, &id).await?;
    let cat = state.catalog.clone();
    let sid = s.id.clone();
    let list = tokio::task::spawn_blocking(move || cat.deliveries(&sid, limit))
        .await
        .map_err(ApiError::internal)??;
    let items: Vec<Value> = list
        .iter()
        .map(|d| {
            json!({
                "seq": d.seq, "event": d.event, "layer": d.layer, "version": d.version,
                "created_at": d.created_at, "state": d.state, "attempts": d.attempts,
                "next_at": (d.state == "pending").then_some(&d.next_at),
                "last_status": d.last_status, "last_error": d.last_error,
                "delivered_at": d.delivered_at,
            })
        })
        .collect();
    Ok(Json(
        json!({"subscription": s.public(), "deliveries": items}),
    ))
}
