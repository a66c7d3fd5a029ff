//! The catalogue around the layers: ministries, API tokens and who may do what with a
//! layer (the one access rule every HTTP surface applies), the append-only audit log,
//! upload jobs' records, search and the open-data feeds (DCAT-US 1.1, DCAT-AP 3).
//!
//! Layer records themselves (title, access level, …) live with the layer versions
//! (`layers::store`); this module keeps what is not versioned with the data, behind
//! [`CatalogStore`] (SQLite in the data folder today, PostgreSQL later).

pub mod dcat;
pub mod postgres;
pub mod search;
pub mod sqlite;

use layers::store::{Access, LayerMeta};
use serde::{Deserialize, Serialize};

pub use sqlite::{CatalogDump, SqliteCatalog};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees what its ministry may see.
    Viewer,
    /// And uploads, edits and restores its ministry's layers.
    Editor,
    /// With a ministry: an editor who also reads its ministry's audit entries.
    /// Without one: the city-wide administrator, who sees and may do everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> layers::Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(layers::Error::bad(format!(
                "unknown role '{other}': use viewer, editor or admin"
            ))),
        }
    }
}

/// A ministry (secretaría) of the city: the publisher and owner of layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ministry {
    pub slug: String,
    pub name: String,
    /// Open-data contact used in the feeds when a layer has none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Uploads are drafts that someone other than the uploader (an admin of the
    /// ministry or the city-wide admin) must publish.
    #[serde(default)]
    pub require_approval: bool,
}

/// The city's ministries, seeded by `datahub demo` (and by nothing else: a deployment
/// adds its own with `datahub ministry add`).
pub const CITY_MINISTRIES: [(&str, &str); 8] = [
    (
        "desarrollo-urbano",
        "Secretaría de Desarrollo Urbano Sostenible",
    ),
    ("obras-publicas", "Secretaría de Obras Públicas"),
    ("servicios-publicos", "Secretaría de Servicios Públicos"),
    (
        "seguridad",
        "Secretaría de Seguridad y Protección a la Ciudadanía",
    ),
    ("medio-ambiente", "Secretaría de Medio Ambiente"),
    ("movilidad", "Secretaría de Movilidad y Planeación Urbana"),
    ("proteccion-civil", "Dirección de Protección Civil"),
    (
        "desarrollo-social",
        "Secretaría de Desarrollo Humano e Igualdad Sustantiva",
    ),
];

/// A verified token: who is calling.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Principal {
    pub token_id: String,
    pub ministry: Option<String>,
    pub role: Role,
    pub label: String,
    /// RFC 3339; checked on every use (a cached verification does not outlive it).
    pub expires_at: Option<String>,
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Caller {
    #[default]
    Anonymous,
    /// Shared: a verified token's principal is cloned into every request it makes.
    Token(std::sync::Arc<Principal>),
}

impl Caller {
    /// What an admin token of `ministry` (None: the city-wide admin) is, for rules
    /// applied without a request (a subscription sees what its registrar sees).
    pub fn admin_of(ministry: Option<&str>) -> Caller {
        Caller::Token(std::sync::Arc::new(Principal {
            token_id: String::new(),
            ministry: ministry.map(str::to_string),
            role: Role::Admin,
            label: String::new(),
            expires_at: None,
        }))
    }

    /// The one access rule: anonymous sees `public`; a ministry's token sees `public`,
    /// `internal` and its own ministry's `restricted`; the city-wide admin sees all.
    pub fn can_see(&self, m: &LayerMeta) -> bool {
        // A draft is its ministry's until published (and the city-wide admin's, who
        // may approve it): seen as a restricted layer is, whatever its access.
        let access = if m.draft.is_some() {
            Access::Restricted
        } else {
            m.access
        };
        match (self, access) {
            (_, Access::Public) => true,
            (Caller::Anonymous, _) => false,
            (Caller::Token(_), Access::Internal) => true,
            (Caller::Token(p), Access::Restricted) => match &p.ministry {
                None => p.role == Role::Admin,
                Some(min) => *min == m.ministry,
            },
        }
    }

    /// Upload, edit, restore and delete a layer of `ministry`.
    pub fn can_write(&self, ministry: &str) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Token(p) => match (&p.ministry, p.role) {
                (None, Role::Admin) => true,
                (Some(m), Role::Editor | Role::Admin) => m == ministry,
                _ => false,
            },
        }
    }

    /// The city-wide administrator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Token(p) if p.role == Role::Admin && p.ministry.is_none())
    }

    /// An admin of `ministry` or the city-wide admin.
    pub fn is_admin_of(&self, ministry: &str) -> bool {
        self.can_audit(Some(ministry))
    }

    /// May read the audit entries of `ministry` (None: entries of no ministry).
    pub fn can_audit(&self, ministry: Option<&str>) -> bool {
        match self {
            Caller::Token(p) if p.role == Role::Admin => {
                p.ministry.is_none() || p.ministry.as_deref() == ministry
            }
            _ => false,
        }
    }

    /// How the caller appears in the audit log and version history.
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Token(p) => format!("token:{} ({})", p.token_id, p.label),
        }
    }

    pub fn ministry(&self) -> Option<&str> {
        match self {
            Caller::Token(p) => p.ministry.as_deref(),
            Caller::Anonymous => None,
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Order of appending (assigned by the store).
    #[serde(default)]
    pub seq: i64,
    /// RFC 3339 UTC.
    pub at: String,
    pub actor: String,
    /// The ministry the action concerns (the layer's owner, the token's ministry).
    pub ministry: Option<String>,
    /// `layer.upload`, `layer.edit`, `layer.access`, `layer.restore`, `layer.delete`,
    /// `layer.undelete`, `token.create`, `token.revoke`, `ministry.add`, `auth.failed`.
    pub action: String,
    pub layer: Option<String>,
    /// What changed (free JSON: old and new values, version numbers, file names).
    pub detail: serde_json::Value,
    /// Client address, or `cli` for the command line.
    pub remote: Option<String>,
}

impl AuditEntry {
    pub fn now(actor: &str, action: &str) -> Self {
        AuditEntry {
            seq: 0,
            at: now(),
            actor: actor.into(),
            ministry: None,
            action: action.into(),
            layer: None,
            detail: serde_json::Value::Null,
            remote: None,
        }
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Filters of `GET /api/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub layer: Option<String>,
    pub action: Option<String>,
    /// Entries of these ministries only (None: all).
    pub ministries: Option<Vec<String>>,
    pub since: Option<String>,
    pub limit: usize,
    /// Entries with `seq` below this (paging backwards).
    pub before: Option<i64>,
}

/// Where ministries, tokens, the audit log and job records are kept.
pub trait CatalogStore: Send + Sync {
    fn ministries(&self) -> layers::Result<Vec<Ministry>>;
    fn add_ministry(&self, m: &Ministry) -> layers::Result<()>;
    /// Whether the ministry's uploads need someone else's approval to go live.
    fn set_require_approval(&self, slug: &str, on: bool) -> layers::Result<()>;
    /// Creates a token; returns its record and the secret, shown once.
    fn create_token(
        &self,
        ministry: Option<&str>,
        role: Role,
        label: &str,
        expires_at: Option<&str>,
    ) -> layers::Result<(TokenInfo, String)>;
    fn tokens(&self) -> layers::Result<Vec<TokenInfo>>;
    /// Revokes a token; false when there is no such active token.
    fn revoke_token(&self, id: &str) -> layers::Result<bool>;
    /// The principal of a valid (known, not revoked, not expired) token.
    fn verify(&self, token: &str) -> layers::Result<Option<Principal>>;
    /// A web session for a verified token, ending at `expires_at` (RFC 3339) at the
    /// latest; returns the cookie value `ds_<id>_<secret>` (only its hash is kept).
    fn create_session(&self, token_id: &str, expires_at: &str) -> layers::Result<String>;
    /// The principal of a live session whose token is still valid (a revoked token
    /// ends its sessions at once).
    fn verify_session(&self, session: &str) -> layers::Result<Option<Principal>>;
    /// Signs out: the session no longer verifies anywhere; false if it did not exist.
    fn end_session(&self, session: &str) -> layers::Result<bool>;
    fn append_audit(&self, e: &AuditEntry) -> layers::Result<i64>;
    fn audit(&self, q: &AuditQuery) -> layers::Result<Vec<AuditEntry>>;
    fn save_job(&self, j: &serde_json::Value) -> layers::Result<()>;
    fn job(&self, id: &str) -> layers::Result<Option<serde_json::Value>>;
    /// Adds or replaces a subscription (webhook).
    fn put_subscription(&self, s: &Subscription) -> layers::Result<()>;
    fn subscriptions(&self) -> layers::Result<Vec<Subscription>>;
    /// Rewrites an existing subscription (its failing mark); false when it was
    /// removed meanwhile (it is not brought back).
    fn update_subscription(&self, s: &Subscription) -> layers::Result<bool>;
    /// Removes a subscription and its delivery log; false if there was none.
    fn remove_subscription(&self, id: &str) -> layers::Result<bool>;
    /// Queues a delivery; its sequence number.
    fn add_delivery(&self, d: &Delivery) -> layers::Result<i64>;
    /// The oldest pending delivery of each subscription, when it is due and nobody
    /// holds it (`now`: RFC 3339 UTC).
    fn due_deliveries(&self, now: &str, limit: usize) -> layers::Result<Vec<Delivery>>;
    /// Takes a due delivery until `until`; false when another process has it.
    fn claim_delivery(&self, seq: i64, now: &str, until: &str) -> layers::Result<bool>;
    /// Records an attempt's outcome (and releases the claim).
    fn update_delivery(&self, d: &Delivery) -> layers::Result<()>;
    /// A subscription's newest deliveries, newest first.
    fn deliveries(&self, subscription: &str, limit: usize) -> layers::Result<Vec<Delivery>>;
    /// Forgets a subscription's finished (delivered or given up) deliveries older
    /// than its newest `keep`; pending ones are never dropped. How many went.
    fn prune_deliveries(&self, subscription: &str, keep: usize) -> layers::Result<u64>;
}

pub use crate::webhooks::{Delivery, Subscription};

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub ministry: Option<String>,
    pub role: Role,
    pub label: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn entry(action: &str, m: &LayerMeta, actor: &str, remote: Option<&str>) -> AuditEntry {
    let mut e = AuditEntry::now(actor, action);
    e.ministry = Some(m.ministry.clone());
    e.layer = Some(m.id.clone());
    e.remote = remote.map(str::to_string);
    e
}

/// After `zone` got a new version: rebuilds the tables joined to it
/// ([`layers::ingest::rejoin_dependents`]) and audits each new version like an upload
/// by `actor`. Returns, per rebuilt layer, its new version or why it failed (its
/// current version stays served).
pub fn rejoin_after_publish(
    c: &dyn CatalogStore,
    store: &dyn layers::store::LayerStore,
    zone: &str,
    base: &layers::ingest::IngestRequest,
    actor: &str,
    remote: Option<&str>,
) -> Vec<(String, Result<LayerMeta, String>)> {
    let rebuilt = match layers::ingest::rejoin_dependents(store, zone, base, &|_| {}) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(zone, error = %e, "cannot look for layers joined to it");
            return Vec::new();
        }
    };
    rebuilt
        .into_iter()
        .map(|r| {
            let res = match r.result {
                Ok(summary) => {
                    let m = summary.meta;
                    let previous = store
                        .versions(&r.layer)
                        .ok()
                        .and_then(|v| {
                            v.into_iter()
                                .filter(|v| v.meta.draft.is_none())
                                .rev()
                                .nth(1)
                        })
                        .map(|v| v.meta);
                    if let Err(e) = record_publish(c, previous.as_ref(), &m, actor, remote) {
                        tracing::error!(error = %e, "cannot write the audit log");
                    }
                    Ok(m)
                }
                Err(e) => {
                    tracing::warn!(layer = %r.layer, zone, error = %e, "joined layer not rebuilt");
                    Err(e.to_string())
                }
            };
            (r.layer, res)
        })
        .collect()
}

/// Audits a published version (`layer.upload`), and the access level it was given
/// when that is new (`layer.access`).
pub fn record_publish(
    c: &dyn CatalogStore,
    previous: Option<&LayerMeta>,
    m: &LayerMeta,
    actor: &str,
    remote: Option<&str>,
) -> layers::Result<()> {
    // A draft is recorded as such; its access and ministry changes when it goes live.
    let action = if m.draft.is_some() {
        "layer.draft"
    } else if m.approved_by.is_some() {
        "layer.publish"
    } else {
        "layer.upload"
    };
    let mut e = entry(action, m, actor, remote);
    e.detail = serde_json::json!({
        "version": m.version,
        "source_file": m.source_file,
        "source_sha256": m.source_sha256,
        "features": m.feature_count,
        "rejected": m.report.features_rejected,
        "note": m.note,
        "new_layer": previous.is_none(),
        "draft_of": m.draft.as_ref().map(|d| d.base),
        "uploaded_by": m.uploaded_by,
        "approved_by": m.approved_by,
    });
    c.append_audit(&e)?;
    if m.draft.is_some() {
        return Ok(());
    }
    let old = previous.map(|p| p.access);
    if old != Some(m.access) {
        let mut e = entry("layer.access", m, actor, remote);
        e.detail = serde_json::json!({"from": old.map(|a| a.as_str()), "to": m.access.as_str()});
        c.append_audit(&e)?;
    }
    if let Some(p) = previous.filter(|p| p.ministry != m.ministry) {
        let mut e = entry("layer.ministry", m, actor, remote);
        e.detail = serde_json::json!({"from": p.ministry, "to": m.ministry});
        c.append_audit(&e)?;
    }
    Ok(())
}

/// Audits a record edit: the fields that changed, old and new; an access change is
/// its own entry (`layer.access`), the one reviewers look for.
pub fn record_edit(
    c: &dyn CatalogStore,
    before: &LayerMeta,
    after: &LayerMeta,
    actor: &str,
    remote: Option<&str>,
) -> layers::Result<()> {
    let (b, a) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    let mut changed = serde_json::Map::new();
    for k in [
        "title",
        "description",
        "keywords",
        "theme",
        "license",
        "contact_name",
        "contact_email",
        "update_frequency",
        "language",
        "temporal",
    ] {
        if b.get(k) != a.get(k) {
            changed.insert(
                k.into(),
                serde_json::json!({"from": b.get(k), "to": a.get(k)}),
            );
        }
    }
    if !changed.is_empty() {
        let mut e = entry("layer.edit", after, actor, remote);
        e.detail = serde_json::Value::Object(changed);
        c.append_audit(&e)?;
    }
    if before.access != after.access {
        let mut e = entry("layer.access", after, actor, remote);
        e.detail = serde_json::json!({"from": before.access.as_str(), "to": after.access.as_str()});
        c.append_audit(&e)?;
    }
    Ok(())
}

pub fn record_restore(
    c: &dyn CatalogStore,
    m: &LayerMeta,
    from: u32,
    actor: &str,
    remote: Option<&str>,
) -> layers::Result<()> {
    let mut e = entry("layer.restore", m, actor, remote);
    e.detail = serde_json::json!({"restored_version": from, "new_version": m.version});
    c.append_audit(&e).map(|_| ())
}

/// `layer.delete`, `layer.undelete`.
pub fn record_simple(
    c: &dyn CatalogStore,
    action: &str,
    m: &LayerMeta,
    actor: &str,
    remote: Option<&str>,
) -> layers::Result<()> {
    let mut e = entry(action, m, actor, remote);
    e.detail = serde_json::json!({"version": m.version, "title": m.title});
    c.append_audit(&e).map(|_| ())
}

/// `ministry` when known, else an error that lists the known ones and suggests the
/// closest.
/// What every catalogue checks before adding a ministry.
pub fn check_new_ministry(m: &Ministry) -> layers::Result<()> {
    layers::store::validate_id(&m.slug).map_err(|_| {
        layers::Error::bad(format!(
            "invalid ministry slug '{}': use lowercase letters, digits and '-', e.g. obras-publicas",
            m.slug
        ))
    })?;
    if m.name.trim().is_empty() {
        return Err(layers::Error::bad(
            "the ministry needs a name (--name \"Obras Públicas\")",
        ));
    }
    Ok(())
}

/// What every catalogue checks before creating a token (`known`: the ministries).
pub fn check_new_token(
    known: &[Ministry],
    ministry: Option<&str>,
    role: Role,
    expires_at: Option<&str>,
) -> layers::Result<()> {
    if let Some(m) = ministry {
        check_ministry(known, m)?;
    } else if role != Role::Admin {
        return Err(layers::Error::bad(
            "a viewer or editor token belongs to a ministry: give --ministry (only city-wide admins have none)",
        ));
    }
    if let Some(e) = expires_at {
        chrono::DateTime::parse_from_rfc3339(e).map_err(|_| {
            layers::Error::bad(format!(
                "expiry '{e}' is not an RFC 3339 time like 2027-01-31T23:59:59Z"
            ))
        })?;
    }
    Ok(())
}

pub fn check_ministry(known: &[Ministry], ministry: &str) -> layers::Result<()> {
    if known.iter().any(|m| m.slug == ministry) {
        return Ok(());
    }
    let list = known
        .iter()
        .map(|m| m.slug.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if known.is_empty() {
        return Err(layers::Error::bad(format!(
            "unknown ministry '{ministry}': no ministries are registered yet; add one with \
             `datahub ministry add {ministry} --name \"…\"` (datahub demo adds the city's)"
        )));
    }
    let closest = known
        .iter()
        .map(|m| (edit_distance(&m.slug, ministry), &m.slug))
        .min()
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    Err(layers::Error::bad(format!(
        "unknown ministry '{ministry}' (did you mean '{closest}'?); known ministries: {list}"
    )))
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(ministry: Option<&str>, role: Role) -> Caller {
        Caller::Token(std::sync::Arc::new(Principal {
            token_id: "t".into(),
            ministry: ministry.map(str::to_string),
            role,
            label: "x".into(),
            expires_at: None,
        }))
    }

    #[test]
    fn the_access_rule() {
        let meta = |access| {
            let mut m: LayerMeta = serde_json::from_value(serde_json::json!({
                "id": "a", "version": 1, "title": "A", "ministry": "obras", "source_file": "",
                "source_sha256": "", "source_format": "", "source_layer": "",
                "source_crs": {"epsg": 4326, "name": "WGS 84", "wkt": "", "how": "source"},
                "feature_count": 0, "bbox": null, "geometry_types": [], "schema": [],
                "created_at": "", "duration_ms": 0,
                "report": serde_json::to_value(layers::quality::IngestReport::default()).unwrap()
            }))
            .unwrap();
            m.access = access;
            m
        };
        let anon = Caller::Anonymous;
        let obras = token(Some("obras"), Role::Viewer);
        let other = token(Some("seguridad"), Role::Editor);
        let admin = token(None, Role::Admin);
        for (who, public, internal, restricted) in [
            (&anon, true, false, false),
            (&obras, true, true, true),
            (&other, true, true, false),
            (&admin, true, true, true),
        ] {
            assert_eq!(who.can_see(&meta(Access::Public)), public);
            assert_eq!(who.can_see(&meta(Access::Internal)), internal);
            assert_eq!(who.can_see(&meta(Access::Restricted)), restricted);
        }
        assert!(!obras.can_write("obras"));
        assert!(token(Some("obras"), Role::Editor).can_write("obras"));
        assert!(!other.can_write("obras"));
        assert!(admin.can_write("obras"));
        assert!(!anon.can_write("obras"));
    }

    #[test]
    fn unknown_ministry_suggests_the_closest() {
        let known = vec![
            Ministry {
                slug: "obras-publicas".into(),
                name: "Obras".into(),
                email: None,
                require_approval: false,
            },
            Ministry {
                slug: "seguridad".into(),
                name: "Seg".into(),
                email: None,
                require_approval: false,
            },
        ];
        assert!(check_ministry(&known, "seguridad").is_ok());
        let e = check_ministry(&known, "obras-publica")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'obras-publicas'"), "{e}");
        assert!(e.contains("seguridad"), "{e}");
    }
}
