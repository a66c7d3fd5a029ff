//! Drafts over HTTP: `GET /api/layers/{id}/draft` (what it is, its diagnosis, what
//! it changes, whether the caller may publish it), `POST …/draft/publish` (approval)
//! and `DELETE …/draft`. The draft's features, tiles and quality are the usual
//! endpoints under `<id>@draft`; the rules are in [`crate::app`].

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use layers::store::LayerMeta;
use serde_json::{json, Value};

use super::auth::Remote;
use super::catalog::{app_ctx, rejoined_json, reload, require_write};
use super::{base_url, ApiError, ApiResult, AppState};
use crate::catalog::Caller;

/// The draft the caller may see, else 404 (as if it did not exist).
async fn visible_draft(state: &AppState, caller: &Caller, id: &str) -> ApiResult<LayerMeta> {
    let store = state.registry.shared_store();
    let id2 = id.to_string();
    let d = tokio::task::spawn_blocking(move || {
        if layers::store::validate_id(&id2).is_err() {
            return Ok(None);
        }
        store.draft(&id2)
    })
    .await
    .map_err(ApiError::internal)??;
    match d {
        Some(v) if caller.can_see(&v.meta) => Ok(v.meta),
        _ => Err(ApiError::not_found(format!("layer '{id}' has no draft"))),
    }
}

pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let m = visible_draft(&state, &caller, &id).await?;
    let base = base_url(&headers);
    let refused = if caller.can_write(&m.ministry) {
        crate::app::approval_refused(
            state.catalog.as_ref(),
            &m,
            &caller.actor(),
            caller.is_admin_of(&m.ministry),
        )?
    } else {
        Some(format!(
            "only editors and admins of '{}' may publish its drafts",
            m.ministry
        ))
    };
    let d = m.draft.clone();
    let base_v = d.as_ref().and_then(|d| d.base);
    // What it changes, against the version it was made on (when still kept).
    let store = state.registry.shared_store();
    let cache = state.changes.clone();
    let (current, draft) = (state.registry.get(&id), state.registry.draft(&id));
    let (lid, b2) = (id.clone(), base.clone());
    let changes = super::heavy(&state, &caller, crate::limits::Work::Query, move || {
        let Some(draft) = draft else {
            return Ok(Value::Null);
        };
        let from = base_v.unwrap_or(0);
        // The registry's draft is the one compared (the store's copy is the same
        // version; loading it again would cost a second index).
        let c = match cache.diff(
            store.as_ref(),
            Some(&draft),
            &lid,
            from,
            draft.meta.version,
            &[],
        ) {
            Ok(c) => c,
            // The base no longer kept, a version that cannot be compared: said.
            Err(e) if e.is_user_error() => return Ok(json!({"error": e.to_string()})),
            Err(e) => return Err(e),
        };
        // The draft's own name in the links (its versions are its ministry's).
        let mut s = crate::changes::summary(&c, &b2);
        s["layer"] = json!(format!("{lid}{}", layers::index::DRAFT_SUFFIX));
        drop(current);
        Ok(s)
    })
    .await?;
    let stale = state
        .registry
        .get(&id)
        .map(|c| c.meta.version)
        .filter(|v| Some(*v) != base_v);
    let did = format!("{id}{}", layers::index::DRAFT_SUFFIX);
    Ok(Json(json!({
        "layer": id,
        "version": m.version,
        "base": base_v,
        "uploaded_by": m.uploaded_by,
        "created_at": m.created_at,
        "note": m.note,
        "source_file": m.source_file,
        "feature_count": m.feature_count,
        "quality": m.diagnosis.as_ref().map(|d| json!({"grade": d.grade, "grade_es": d.grade.label_es(), "score": d.score, "summary": d.summary_lines()})),
        "approval_required": crate::app::requires_approval(state.catalog.as_ref(), &m.ministry)?,
        "may_publish": refused.is_none() && stale.is_none(),
        "why_not": refused.or_else(|| stale.map(|v| format!(
            "version {v} was published after this draft was made on {}: upload the file again or discard the draft",
            base_v.map_or("no version".into(), |b| format!("version {b}"))
        ))),
        "changes": changes,
        "links": [
            {"rel": "items", "type": "application/geo+json", "href": format!("{base}/collections/{did}/items")},
            {"rel": "tilejson", "type": "application/json", "href": format!("{base}/tiles/{did}")},
            {"rel": "quality", "type": "application/json", "href": format!("{base}/api/layers/{did}/quality")},
            {"rel": "changes", "type": "application/geo+json", "href": format!("{base}/collections/{did}/changes?f=geojson")},
            {"rel": "publish", "method": "POST", "href": format!("{base}/api/layers/{id}/draft/publish")},
            {"rel": "discard", "method": "DELETE", "href": format!("{base}/api/layers/{id}/draft")},
        ],
    })))
}

pub(super) async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let m = visible_draft(&state, &caller, &id).await?;
    require_write(&caller, &m.ministry)?;
    if let Some(why) = crate::app::approval_refused(
        state.catalog.as_ref(),
        &m,
        &caller.actor(),
        caller.is_admin_of(&m.ministry),
    )? {
        return Err(ApiError::forbidden(why));
    }
    let st = state.clone();
    let actor = caller.actor();
    let reviewed = m.version;
    let (m, rejoined) = tokio::task::spawn_blocking(move || {
        // Not while an upload of the layer is being published.
        let lock = st.jobs.layer_lock(&id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let template = layers::ingest::IngestRequest {
            limits: st.limits,
            diagnose: (*st.quality).clone(),
            uploaded_by: Some(actor.clone()),
            ..layers::ingest::IngestRequest::new("", &id, &m.ministry)
        };
        let done =
            // The draft whose approval was checked above, and no other.
            crate::app::publish_draft(
                &app_ctx(&st, &actor, remote.as_deref()),
                &id,
                Some(reviewed),
                &template,
            )?;
        reload(&st);
        Ok::<_, layers::Error>(done)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!({
        "layer": m.id,
        "version": m.version,
        "published": true,
        "uploaded_by": m.uploaded_by,
        "approved_by": m.approved_by,
        "rejoined": rejoined_json(&rejoined),
    })))
}

pub(super) async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let m = visible_draft(&state, &caller, &id).await?;
    require_write(&caller, &m.ministry)?;
    let st = state.clone();
    let actor = caller.actor();
    let m = tokio::task::spawn_blocking(move || {
        let lock = st.jobs.layer_lock(&id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let m = crate::app::discard_draft(&app_ctx(&st, &actor, remote.as_deref()), &id)?;
        reload(&st);
        Ok::<_, layers::Error>(m)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(
        json!({"layer": m.id, "version": m.version, "discarded": true}),
    ))
}
