//! The publishing operations, one copy shared by the command line and the HTTP API:
//! each changes the store, writes its audit entry and, when a zone layer got a new
//! version, rebuilds the tables joined to it. What is the caller's own stays with it:
//! the server's per-layer job lock, access checks and registry reload; the CLI's
//! progress bar and printing. Both go through the [`LayerStore`] seam only.

use layers::ingest::{IngestRequest, IngestSummary, Progress};
use layers::store::{LayerMeta, LayerStore, RecordEdit};

use crate::catalog::{self, CatalogStore};

/// Who acts, where the data are, what is recorded.
pub struct Ctx<'a> {
    pub store: &'a dyn LayerStore,
    pub catalog: &'a dyn CatalogStore,
    /// The audit log's actor (`token:<id> (label)`, `cli:<user>`).
    pub actor: &'a str,
    /// The client's address (`cli` for the command line).
    pub remote: Option<&'a str>,
    /// How subscribers are notified of new versions.
    pub webhooks: &'a crate::webhooks::WebhookSettings,
}

/// Queues the notifications of a new served version (and of the tables rebuilt
/// after it).
fn notify(ctx: &Ctx<'_>, m: &LayerMeta, previous: Option<u32>, rejoined: &Rejoined) {
    crate::webhooks::enqueue(ctx.catalog, ctx.webhooks, m, previous);
    for (_, r) in rejoined {
        if let Ok(t) = r {
            crate::webhooks::enqueue(ctx.catalog, ctx.webhooks, t, None);
        }
    }
}

/// Tables rebuilt after a zone layer changed: layer id and its new record, or why not.
pub type Rejoined = Vec<(String, Result<LayerMeta, String>)>;

/// Ingests and publishes `req` (a new layer or a new version), records it, and
/// rebuilds the tables joined to the layer. Returns the summary, the record it
/// replaced and the rebuilt tables.
///
/// A draft (`req.draft`, or any upload of a ministry that requires approval) is
/// stored, diagnosed and recorded but not served; nothing is rebuilt for it.
pub fn publish(
    ctx: &Ctx<'_>,
    req: &IngestRequest,
    progress: &(dyn Fn(Progress) + Sync),
) -> layers::Result<(IngestSummary, Option<LayerMeta>, Rejoined)> {
    let previous = ctx.store.current(&req.layer_id)?.map(|v| v.meta);
    let mut req = req.clone();
    if req.draft.is_none() && requires_approval(ctx.catalog, &req.ministry)? {
        req.draft = Some(ctx.actor.to_string());
    }
    let req = &req;
    let summary = layers::ingest::ingest(ctx.store, req, progress)?;
    // The version is published: an audit write that fails now is logged, not
    // reported as a failed upload (which would invite sending it again).
    if let Err(e) = catalog::record_publish(
        ctx.catalog,
        previous.as_ref(),
        &summary.meta,
        ctx.actor,
        ctx.remote,
    ) {
        tracing::error!(layer = %summary.meta.id, error = %e, "cannot write the audit log");
    }
    if summary.meta.draft.is_some() {
        return Ok((summary, previous, Vec::new()));
    }
    let rejoined = rejoin(ctx, &summary.meta.id, req);
    notify(
        ctx,
        &summary.meta,
        previous.as_ref().map(|p| p.version),
        &rejoined,
    );
    Ok((summary, previous, rejoined))
}

/// Whether `ministry` publishes only through approved drafts.
pub fn requires_approval(catalog: &dyn CatalogStore, ministry: &str) -> layers::Result<bool> {
    Ok(catalog
        .ministries()?
        .iter()
        .any(|m| m.slug == ministry && m.require_approval))
}

/// Why `actor` may not publish `draft` (None: it may). `is_admin`: the actor is an
/// admin of the draft's ministry or the city-wide admin.
pub fn approval_refused(
    catalog: &dyn CatalogStore,
    draft: &LayerMeta,
    actor: &str,
    is_admin: bool,
) -> layers::Result<Option<String>> {
    if !requires_approval(catalog, &draft.ministry)? {
        return Ok(None);
    }
    let by = draft.draft.as_ref().map(|d| d.by.as_str()).unwrap_or("");
    if by == actor {
        return Ok(Some(format!(
            "{} requires approval of new versions by someone other than who uploaded them: \
             ask an admin of the ministry (or the city-wide admin) to publish this draft",
            draft.ministry
        )));
    }
    if !is_admin {
        return Ok(Some(format!(
            "{} requires approval of new versions: only an admin of the ministry or the \
             city-wide admin may publish a draft",
            draft.ministry
        )));
    }
    Ok(None)
}

/// Publishes the layer's draft (it becomes the served version), records who
/// approved it, and rebuilds the tables joined to the layer. Approval rules are the
/// caller's to check first ([`approval_refused`]).
pub fn publish_draft(
    ctx: &Ctx<'_>,
    id: &str,
    expected: Option<u32>,
    template: &IngestRequest,
) -> layers::Result<(LayerMeta, Rejoined)> {
    let previous = ctx.store.current(id)?.map(|v| v.meta);
    let m = ctx.store.publish_draft(id, ctx.actor, expected)?;
    if let Err(e) =
        catalog::record_publish(ctx.catalog, previous.as_ref(), &m, ctx.actor, ctx.remote)
    {
        tracing::error!(layer = %id, error = %e, "cannot write the audit log");
    }
    let rejoined = rejoin(ctx, id, template);
    notify(ctx, &m, previous.as_ref().map(|p| p.version), &rejoined);
    Ok((m, rejoined))
}

/// Removes the layer's draft and records it.
pub fn discard_draft(ctx: &Ctx<'_>, id: &str) -> layers::Result<LayerMeta> {
    let m = ctx.store.discard_draft(id)?;
    let mut e = catalog::AuditEntry::now(ctx.actor, "layer.discard");
    e.ministry = Some(m.ministry.clone());
    e.layer = Some(m.id.clone());
    e.remote = ctx.remote.map(str::to_string);
    e.detail = serde_json::json!({"version": m.version, "uploaded_by": m.uploaded_by});
    ctx.catalog.append_audit(&e)?;
    Ok(m)
}

/// A catalogue edit of the served version's record, validated and recorded;
/// returns the record after it.
pub fn edit(ctx: &Ctx<'_>, id: &str, edit: &RecordEdit) -> layers::Result<LayerMeta> {
    edit.validate()?;
    let (before, after) = ctx.store.edit_record(id, edit)?;
    catalog::record_edit(ctx.catalog, &before, &after, ctx.actor, ctx.remote)?;
    Ok(after)
}

/// Publishes kept version `n` again as the newest version, records it, and rebuilds
/// the tables joined to the layer (a restored zone layer is a new version too).
/// `template` gives the limits and diagnosis settings of those rebuilds.
pub fn restore(
    ctx: &Ctx<'_>,
    id: &str,
    n: u32,
    template: &IngestRequest,
) -> layers::Result<(LayerMeta, Rejoined)> {
    let previous = ctx.store.current_number(id)?;
    let m = ctx.store.restore(id, n, ctx.actor)?;
    catalog::record_restore(ctx.catalog, &m, n, ctx.actor, ctx.remote)?;
    let rejoined = rejoin(ctx, &m.id, template);
    notify(ctx, &m, previous, &rejoined);
    Ok((m, rejoined))
}

/// Hides a layer (nothing is erased) and records it; returns its record.
pub fn delete(ctx: &Ctx<'_>, id: &str) -> layers::Result<LayerMeta> {
    let m = ctx
        .store
        .current(id)?
        .ok_or_else(|| layers::Error::UnknownLayer(id.to_string()))?
        .meta;
    ctx.store.hide(id)?;
    catalog::record_simple(ctx.catalog, "layer.delete", &m, ctx.actor, ctx.remote)?;
    Ok(m)
}

/// Brings a hidden layer back and records it; `None` when no such deleted layer.
pub fn undelete(ctx: &Ctx<'_>, id: &str) -> layers::Result<Option<LayerMeta>> {
    if layers::store::validate_id(id).is_err() || !ctx.store.is_hidden(id) {
        return Ok(None);
    }
    ctx.store.unhide(id)?;
    let m = ctx.store.current(id)?.map(|v| v.meta);
    if let Some(m) = &m {
        catalog::record_simple(ctx.catalog, "layer.undelete", m, ctx.actor, ctx.remote)?;
    }
    Ok(m)
}

/// The tables joined to `zone` rebuilt from their kept sources, with `template`'s
/// limits and diagnosis settings.
fn rejoin(ctx: &Ctx<'_>, zone: &str, template: &IngestRequest) -> Rejoined {
    catalog::rejoin_after_publish(
        ctx.catalog,
        ctx.store,
        zone,
        template,
        ctx.actor,
        ctx.remote,
    )
}
