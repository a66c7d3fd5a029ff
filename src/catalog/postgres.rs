//! [`CatalogStore`] on PostgreSQL: ministries, tokens, sessions, the audit log and job
//! records shared by every replica (schema `datahub`, next to the layer store's
//! tables). The same rules as the SQLite catalogue: secrets stored as SHA-256 only and
//! compared in constant time, an audit table that refuses UPDATE, DELETE and TRUNCATE
//! (triggers), sessions that end with their token.
//!
//! Replicas: a revoked token or an ended session is announced (`NOTIFY`), so every
//! replica drops its short verification cache at once. Each process holds an advisory
//! lock named after its instance id for as long as it lives (its *lease*); a job
//! record says which instance runs it, so a job whose replica died (its lock gone with
//! its connection) is reported failed by whichever replica is asked.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::sqlite::{constant_time_eq, random_hex, still_valid};
use super::{
    AuditEntry, AuditQuery, CatalogStore, Delivery, Ministry, Principal, Role, Subscription,
    TokenInfo,
};
use layers::pg::{db_err, lock_key, Client, Db, CHANNEL};
use layers::{Error, Result};

/// The catalogue tables a migration copies, in the order of `import` and `counts`.
pub const CATALOG_TABLE_NAMES: [&str; CATALOG_TABLES] = [
    "ministries",
    "tokens",
    "audit",
    "jobs",
    "subscriptions",
    "deliveries",
];
pub const CATALOG_TABLES: usize = 6;

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS datahub;
CREATE TABLE IF NOT EXISTS datahub.ministries (
    slug text PRIMARY KEY,
    name text NOT NULL,
    email text,
    created_at text NOT NULL
);
ALTER TABLE datahub.ministries ADD COLUMN IF NOT EXISTS require_approval boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS datahub.tokens (
    id text PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    ministry text REFERENCES datahub.ministries(slug),
    role text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    label text NOT NULL,
    created_at text NOT NULL,
    expires_at text,
    revoked_at text
);
CREATE TABLE IF NOT EXISTS datahub.audit (
    seq bigserial PRIMARY KEY,
    at text NOT NULL,
    actor text NOT NULL,
    ministry text,
    action text NOT NULL,
    layer text,
    detail jsonb NOT NULL,
    remote text
);
CREATE INDEX IF NOT EXISTS audit_layer ON datahub.audit(layer, seq);
CREATE OR REPLACE FUNCTION datahub.audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_no_change ON datahub.audit;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON datahub.audit
    FOR EACH ROW EXECUTE FUNCTION datahub.audit_append_only();
DROP TRIGGER IF EXISTS audit_no_truncate ON datahub.audit;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON datahub.audit
    FOR EACH STATEMENT EXECUTE FUNCTION datahub.audit_append_only();
CREATE TABLE IF NOT EXISTS datahub.sessions (
    id text PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    token_id text NOT NULL REFERENCES datahub.tokens(id),
    created_at text NOT NULL,
    expires_at text NOT NULL
);
CREATE TABLE IF NOT EXISTS datahub.jobs (
    id text PRIMARY KEY,
    doc jsonb NOT NULL,
    owner text
);
CREATE TABLE IF NOT EXISTS datahub.subscriptions (
    id text PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE IF NOT EXISTS datahub.deliveries (
    seq bigserial PRIMARY KEY,
    subscription text NOT NULL,
    state text NOT NULL,
    next_at text NOT NULL,
    claimed_until text,
    doc text NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_subscription ON datahub.deliveries (subscription, seq);
CREATE TABLE IF NOT EXISTS datahub.usage (
    day text NOT NULL,
    layer text NOT NULL,
    kind text NOT NULL,
    audience text NOT NULL,
    requests bigint NOT NULL,
    PRIMARY KEY (day, layer, kind, audience)
);
"#;

pub struct PgCatalog {
    db: Arc<Db>,
    /// This process's instance id (its job lease is the advisory lock of that name).
    instance: String,
    /// The connection holding the lease; re-taken if the database restarted.
    lease: Mutex<Option<Client>>,
}

impl PgCatalog {
    pub fn open(db: Arc<Db>) -> Result<Self> {
        db.run(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key("datahub:catalog-schema")],
            )
            .await
            .map_err(db_err)?;
            tx.batch_execute(SCHEMA).await.map_err(db_err)?;
            tx.commit().await.map_err(db_err)
        })?;
        let cat = PgCatalog {
            db,
            instance: random_hex(8)?,
            lease: Mutex::new(None),
        };
        cat.hold_lease()?;
        Ok(cat)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Takes (again) the advisory lock that says this process is alive: after the
    /// database restarted, before other replicas take its running jobs for dead.
    pub fn hold_lease(&self) -> Result<()> {
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        let key = lock_key(&format!("replica:{}", self.instance));
        let c = self.db.run(move |c| async move {
            // Only this process ever takes its own key: free unless already held.
            c.execute("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(db_err)?;
            Ok(c)
        })?;
        // Kept out of the pool for the process's life.
        *lease = Some(c);
        Ok(())
    }
}

type TokenRow = (Vec<u8>, Principal, bool);

async fn token_row(c: &Client, id: &str) -> Result<Option<TokenRow>> {
    let row = c
        .query_opt(
            "SELECT secret_sha256, ministry, role, label, expires_at, revoked_at
             FROM datahub.tokens WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db_err)?;
    let Some(r) = row else { return Ok(None) };
    let role: String = r.get(2);
    let p = Principal {
        token_id: id.to_string(),
        ministry: r.get(1),
        role: Role::parse(&role)?,
        label: r.get(3),
        expires_at: r.get(4),
    };
    Ok(Some((r.get(0), p, r.get::<_, Option<String>>(5).is_some())))
}

fn split(s: &str, prefix: &str) -> Option<(String, String)> {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.split_once('_'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
}

impl CatalogStore for PgCatalog {
    fn ministries(&self) -> Result<Vec<Ministry>> {
        self.db.run(|c| async move {
            Ok(c.query(
                "SELECT slug, name, email, require_approval FROM datahub.ministries ORDER BY slug",
                &[],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| Ministry {
                slug: r.get(0),
                name: r.get(1),
                email: r.get(2),
                require_approval: r.get(3),
            })
            .collect())
        })
    }

    fn add_ministry(&self, m: &Ministry) -> Result<()> {
        super::check_new_ministry(m)?;
        let (slug, name, email) = (m.slug.clone(), m.name.trim().to_string(), m.email.clone());
        let n = self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO datahub.ministries (slug, name, email, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO NOTHING",
                &[&slug, &name, &email, &super::now()],
            )
            .await
            .map_err(db_err)
        })?;
        if n == 0 {
            return Err(Error::bad(format!("ministry '{}' already exists", m.slug)));
        }
        Ok(())
    }

    fn set_require_approval(&self, slug: &str, on: bool) -> Result<()> {
        let s = slug.to_string();
        let n = self.db.run(move |c| async move {
            c.execute(
                "UPDATE datahub.ministries SET require_approval = $2 WHERE slug = $1",
                &[&s, &on],
            )
            .await
            .map_err(db_err)
        })?;
        if n == 0 {
            return Err(Error::bad(format!("ministry '{slug}' does not exist")));
        }
        Ok(())
    }

    fn create_token(
        &self,
        ministry: Option<&str>,
        role: Role,
        label: &str,
        expires_at: Option<&str>,
    ) -> Result<(TokenInfo, String)> {
        super::check_new_token(&self.ministries()?, ministry, role, expires_at)?;
        let id = random_hex(6)?;
        let secret = random_hex(32)?;
        let hash = Sha256::digest(secret.as_bytes()).to_vec();
        let info = TokenInfo {
            id: id.clone(),
            ministry: ministry.map(str::to_string),
            role,
            label: label.to_string(),
            created_at: super::now(),
            expires_at: expires_at.map(str::to_string),
            revoked_at: None,
        };
        let i = info.clone();
        self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO datahub.tokens (id, secret_sha256, ministry, role, label, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&i.id, &hash, &i.ministry, &i.role.as_str(), &i.label, &i.created_at, &i.expires_at],
            )
            .await
            .map_err(db_err)
        })?;
        Ok((info, format!("dh_{id}_{secret}")))
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.db.run(|c| async move {
            Ok(c.query(
                "SELECT id, ministry, role, label, created_at, expires_at, revoked_at
                 FROM datahub.tokens ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| TokenInfo {
                id: r.get(0),
                ministry: r.get(1),
                role: Role::parse(r.get::<_, &str>(2)).unwrap_or(Role::Viewer),
                label: r.get(3),
                created_at: r.get(4),
                expires_at: r.get(5),
                revoked_at: r.get(6),
            })
            .collect())
        })
    }

    fn revoke_token(&self, id: &str) -> Result<bool> {
        let tid = id.to_string();
        let n = self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let n = tx
                .execute(
                    "UPDATE datahub.tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&tid, &super::now()],
                )
                .await
                .map_err(db_err)?;
            if n > 0 {
                // Every replica forgets its cached verifications now, not in 15 s;
                // sent with the commit, so never a revocation without its notice.
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("token:{tid}")])
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n)
        })?;
        Ok(n > 0)
    }

    fn verify(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = split(token, "dh_") else {
            return Ok(None);
        };
        let row = self
            .db
            .run(move |c| async move { token_row(&c, &id).await })?;
        let presented = Sha256::digest(secret.as_bytes());
        Ok(row.and_then(|(stored, p, revoked)| {
            (constant_time_eq(&stored, &presented) && !revoked && still_valid(&p)).then_some(p)
        }))
    }

    fn create_session(&self, token_id: &str, expires_at: &str) -> Result<String> {
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let hash = Sha256::digest(secret.as_bytes()).to_vec();
        let (sid, tid, exp) = (id.clone(), token_id.to_string(), expires_at.to_string());
        self.db.run(move |c| async move {
            let now = super::now();
            c.execute(
                "DELETE FROM datahub.sessions WHERE expires_at < $1",
                &[&now],
            )
            .await
            .map_err(db_err)?;
            c.execute(
                "INSERT INTO datahub.sessions (id, secret_sha256, token_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&sid, &hash, &tid, &now, &exp],
            )
            .await
            .map_err(db_err)
        })?;
        Ok(format!("ds_{id}_{secret}"))
    }

    fn verify_session(&self, session: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = split(session, "ds_") else {
            return Ok(None);
        };
        let found = self.db.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT secret_sha256, expires_at, token_id FROM datahub.sessions WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(db_err)?;
            let Some(r) = row else { return Ok(None) };
            let token_id: String = r.get(2);
            let token = token_row(&c, &token_id).await?;
            Ok(Some((r.get::<_, Vec<u8>>(0), r.get::<_, String>(1), token)))
        })?;
        let Some((stored, expires, token)) = found else {
            return Ok(None);
        };
        let presented = Sha256::digest(secret.as_bytes());
        let alive = chrono::DateTime::parse_from_rfc3339(&expires)
            .map(|t| t > chrono::Utc::now())
            .unwrap_or(false);
        if !constant_time_eq(&stored, &presented) || !alive {
            return Ok(None);
        }
        Ok(token.and_then(|(_, p, revoked)| (!revoked && still_valid(&p)).then_some(p)))
    }

    fn end_session(&self, session: &str) -> Result<bool> {
        if self.verify_session(session)?.is_none() {
            return Ok(false);
        }
        let Some((id, _)) = split(session, "ds_") else {
            return Ok(false);
        };
        let n = self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let n = tx
                .execute("DELETE FROM datahub.sessions WHERE id = $1", &[&id])
                .await
                .map_err(db_err)?;
            if n > 0 {
                tx.execute("SELECT pg_notify($1, 'session')", &[&CHANNEL])
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n)
        })?;
        Ok(n > 0)
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<i64> {
        let e = e.clone();
        self.db.run(move |c| async move {
            let detail = e.detail.to_string();
            Ok(c.query_one(
                "INSERT INTO datahub.audit (at, actor, ministry, action, layer, detail, remote)
                 VALUES ($1, $2, $3, $4, $5, ($6::text)::jsonb, $7) RETURNING seq",
                &[
                    &e.at,
                    &e.actor,
                    &e.ministry,
                    &e.action,
                    &e.layer,
                    &detail,
                    &e.remote,
                ],
            )
            .await
            .map_err(db_err)?
            .get(0))
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let q = q.clone();
        self.db.run(move |c| async move {
            let ministries: Option<Vec<String>> = q.ministries.clone();
            let limit = q.limit.max(1) as i64;
            let rows = c
                .query(
                    "SELECT seq, at, actor, ministry, action, layer, detail::text, remote
                     FROM datahub.audit
                     WHERE ($1::text IS NULL OR layer = $1)
                       AND ($2::text IS NULL OR action = $2)
                       AND ($3::text IS NULL OR at >= $3)
                       AND ($4::bigint IS NULL OR seq < $4)
                       AND ($5::text[] IS NULL OR ministry = ANY($5))
                     ORDER BY seq DESC LIMIT $6",
                    &[
                        &q.layer,
                        &q.action,
                        &q.since,
                        &q.before,
                        &ministries,
                        &limit,
                    ],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .into_iter()
                .map(|r| AuditEntry {
                    seq: r.get(0),
                    at: r.get(1),
                    actor: r.get(2),
                    ministry: r.get(3),
                    action: r.get(4),
                    layer: r.get(5),
                    detail: serde_json::from_str(r.get::<_, &str>(6))
                        .unwrap_or(serde_json::Value::Null),
                    remote: r.get(7),
                })
                .collect())
        })
    }

    fn save_job(&self, j: &serde_json::Value) -> Result<()> {
        if let Err(e) = self.hold_lease() {
            tracing::warn!(error = %e, "cannot renew this replica's job lease");
        }
        let id = j["id"].as_str().unwrap_or_default().to_string();
        let doc = j.to_string();
        let owner = self.instance.clone();
        self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO datahub.jobs (id, doc, owner) VALUES ($1, ($2::text)::jsonb, $3)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, owner = excluded.owner",
                &[&id, &doc, &owner],
            )
            .await
            .map_err(db_err)
            .map(|_| ())
        })
    }

    fn job(&self, id: &str) -> Result<Option<serde_json::Value>> {
        let id = id.to_string();
        let row: Option<(String, Option<String>)> = self.db.run(move |c| async move {
            Ok(c.query_opt(
                "SELECT doc::text, owner FROM datahub.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_err)?
            .map(|r| (r.get(0), r.get(1))))
        })?;
        let Some((doc, owner)) = row else {
            return Ok(None);
        };
        let mut d: serde_json::Value =
            serde_json::from_str(&doc).map_err(|e| Error::Corrupt(format!("job record: {e}")))?;
        if let Some(owner) = owner {
            d["replica"] = serde_json::json!(owner);
            d["replica_alive"] = serde_json::json!(self.instance_alive(&owner)?);
        }
        Ok(Some(d))
    }

    fn put_subscription(&self, s: &Subscription) -> Result<()> {
        let doc = serde_json::to_string(s).map_err(|e| Error::Internal(e.to_string()))?;
        let id = s.id.clone();
        self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO datahub.subscriptions (id, doc) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                &[&id, &doc],
            )
            .await
            .map_err(db_err)
            .map(|_| ())
        })
    }

    fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let docs: Vec<String> = self.db.run(|c| async move {
            Ok(
                c.query("SELECT doc FROM datahub.subscriptions ORDER BY id", &[])
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })?;
        docs.iter()
            .map(|d| {
                serde_json::from_str(d).map_err(|e| Error::Corrupt(format!("subscription: {e}")))
            })
            .collect()
    }

    fn update_subscription(&self, s: &Subscription) -> Result<bool> {
        let doc = serde_json::to_string(s).map_err(|e| Error::Internal(e.to_string()))?;
        let id = s.id.clone();
        let n = self.db.run(move |c| async move {
            c.execute(
                "UPDATE datahub.subscriptions SET doc = $2 WHERE id = $1",
                &[&id, &doc],
            )
            .await
            .map_err(db_err)
        })?;
        Ok(n == 1)
    }

    fn remove_subscription(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute(
                "DELETE FROM datahub.deliveries WHERE subscription = $1",
                &[&id],
            )
            .await
            .map_err(db_err)?;
            let n = tx
                .execute("DELETE FROM datahub.subscriptions WHERE id = $1", &[&id])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        })
    }

    fn add_delivery(&self, d: &Delivery) -> Result<i64> {
        let doc = serde_json::to_string(d).map_err(|e| Error::Internal(e.to_string()))?;
        let (s, st, n) = (d.subscription.clone(), d.state.clone(), d.next_at.clone());
        self.db.run(move |c| async move {
            Ok(c.query_one(
                "INSERT INTO datahub.deliveries (subscription, state, next_at, doc)
                 VALUES ($1, $2, $3, $4) RETURNING seq",
                &[&s, &st, &n, &doc],
            )
            .await
            .map_err(db_err)?
            .get(0))
        })
    }

    fn due_deliveries(&self, now: &str, limit: usize) -> Result<Vec<Delivery>> {
        let (now, limit) = (now.to_string(), limit as i64);
        let rows: Vec<(i64, String)> = self.db.run(move |c| async move {
            Ok(c.query(
                "SELECT seq, doc FROM datahub.deliveries d
                 WHERE state = 'pending' AND next_at <= $1
                   AND (claimed_until IS NULL OR claimed_until < $1)
                   AND seq = (SELECT min(seq) FROM datahub.deliveries e
                              WHERE e.subscription = d.subscription AND e.state = 'pending')
                 ORDER BY seq LIMIT $2",
                &[&now, &limit],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })?;
        rows.into_iter()
            .map(|(seq, doc)| super::sqlite::delivery(seq, &doc))
            .collect()
    }

    fn claim_delivery(&self, seq: i64, now: &str, until: &str) -> Result<bool> {
        let (now, until) = (now.to_string(), until.to_string());
        let n = self.db.run(move |c| async move {
            c.execute(
                "UPDATE datahub.deliveries SET claimed_until = $3
                 WHERE seq = $1 AND state = 'pending' AND next_at <= $2
                   AND (claimed_until IS NULL OR claimed_until < $2)",
                &[&seq, &now, &until],
            )
            .await
            .map_err(db_err)
        })?;
        Ok(n == 1)
    }

    fn update_delivery(&self, d: &Delivery) -> Result<()> {
        let doc = serde_json::to_string(d).map_err(|e| Error::Internal(e.to_string()))?;
        let (seq, st, n) = (d.seq, d.state.clone(), d.next_at.clone());
        self.db.run(move |c| async move {
            c.execute(
                "UPDATE datahub.deliveries SET state = $2, next_at = $3, claimed_until = NULL, doc = $4
                 WHERE seq = $1",
                &[&seq, &st, &n, &doc],
            )
            .await
            .map_err(db_err)
            .map(|_| ())
        })
    }

    fn prune_deliveries(&self, subscription: &str, keep: usize) -> Result<u64> {
        let (s, keep) = (subscription.to_string(), keep as i64);
        self.db.run(move |c| async move {
            c.execute(
                "DELETE FROM datahub.deliveries WHERE subscription = $1 AND state <> 'pending'
                   AND seq <= (SELECT seq FROM datahub.deliveries WHERE subscription = $1
                               ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                &[&s, &keep],
            )
            .await
            .map_err(db_err)
        })
    }

    fn deliveries(&self, subscription: &str, limit: usize) -> Result<Vec<Delivery>> {
        let (s, limit) = (subscription.to_string(), limit as i64);
        let rows: Vec<(i64, String)> = self.db.run(move |c| async move {
            Ok(c.query(
                "SELECT seq, doc FROM datahub.deliveries WHERE subscription = $1
                 ORDER BY seq DESC LIMIT $2",
                &[&s, &limit],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })?;
        rows.into_iter()
            .map(|(seq, doc)| super::sqlite::delivery(seq, &doc))
            .collect()
    }
}

impl crate::usage::SharedUsage for PgCatalog {
    fn add_usage(&self, rows: Vec<crate::usage::Row>, oldest: &str) -> Result<()> {
        let oldest = oldest.to_string();
        self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            for (day, layer, kind, aud, n) in &rows {
                tx.execute(
                    "INSERT INTO datahub.usage (day, layer, kind, audience, requests)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (day, layer, kind, audience)
                     DO UPDATE SET requests = datahub.usage.requests + excluded.requests",
                    &[day, layer, kind, aud, n],
                )
                .await
                .map_err(db_err)?;
            }
            tx.execute("DELETE FROM datahub.usage WHERE day < $1", &[&oldest])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)
        })
    }

    fn usage_since(&self, since: &str) -> Result<Vec<crate::usage::Row>> {
        let since = since.to_string();
        self.db.run(move |c| async move {
            Ok(c.query(
                "SELECT day, layer, kind, audience, requests FROM datahub.usage WHERE day >= $1",
                &[&since],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
        })
    }
}

impl PgCatalog {
    /// Copies a catalogue's rows (a migration): rows already here are left as they are,
    /// so a migration run again adds only what is missing. Audit entries keep their
    /// sequence numbers. Returns the rows added per table.
    pub fn import(&self, d: super::CatalogDump) -> Result<[u64; CATALOG_TABLES]> {
        self.db.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            // The audit keeps its sequence numbers: a database whose log already has
            // other entries under them is another hub's, and merging would drop ours.
            if let Some(first) = d.audit.first() {
                let row = tx
                    .query_opt(
                        "SELECT at, action, actor FROM datahub.audit WHERE seq = $1",
                        &[&first.seq],
                    )
                    .await
                    .map_err(db_err)?;
                if let Some(r) = row {
                    let same = r.get::<_, String>(0) == first.at
                        && r.get::<_, String>(1) == first.action
                        && r.get::<_, String>(2) == first.actor;
                    if !same {
                        return Err(Error::bad(
                            "this database already holds another hub's audit log: migrate into a new, empty database",
                        ));
                    }
                }
            }
            let mut n = [0u64; CATALOG_TABLES];
            // Only what is missing: a migration run again after going live never
            // undoes a change made since (an approval switched off, say).
            for (slug, name, email, at, approval) in &d.ministries {
                n[0] += tx
                    .execute(
                        "INSERT INTO datahub.ministries (slug, name, email, created_at, require_approval)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (slug) DO NOTHING",
                        &[slug, name, email, at, approval],
                    )
                    .await
                    .map_err(db_err)?;
            }
            for (id, hash, ministry, role, label, created, expires, revoked) in &d.tokens {
                n[1] += tx
                    .execute(
                        "INSERT INTO datahub.tokens (id, secret_sha256, ministry, role, label,
                           created_at, expires_at, revoked_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                        &[id, hash, ministry, role, label, created, expires, revoked],
                    )
                    .await
                    .map_err(db_err)?;
            }
            for e in &d.audit {
                let detail = e.detail.to_string();
                n[2] += tx
                    .execute(
                        "INSERT INTO datahub.audit (seq, at, actor, ministry, action, layer, detail, remote)
                         VALUES ($1, $2, $3, $4, $5, $6, ($7::text)::jsonb, $8)
                         ON CONFLICT (seq) DO NOTHING",
                        &[&e.seq, &e.at, &e.actor, &e.ministry, &e.action, &e.layer, &detail, &e.remote],
                    )
                    .await
                    .map_err(db_err)?;
            }
            // New entries continue after the copied ones.
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('datahub.audit', 'seq'),
                   greatest((SELECT max(seq) FROM datahub.audit), 1))",
            )
            .await
            .map_err(db_err)?;
            for (id, doc) in &d.jobs {
                n[3] += tx
                    .execute(
                        "INSERT INTO datahub.jobs (id, doc) VALUES ($1, ($2::text)::jsonb)
                         ON CONFLICT (id) DO NOTHING",
                        &[id, doc],
                    )
                    .await
                    .map_err(db_err)?;
            }
            for (id, doc) in &d.subscriptions {
                n[4] += tx
                    .execute(
                        "INSERT INTO datahub.subscriptions (id, doc) VALUES ($1, $2)
                         ON CONFLICT (id) DO NOTHING",
                        &[id, doc],
                    )
                    .await
                    .map_err(db_err)?;
            }
            // Sequence numbers kept, as the audit's: a second run adds nothing, and
            // pending ones go out from the replicas in their order.
            for (seq, sub, state, next_at, doc) in &d.deliveries {
                n[5] += tx
                    .execute(
                        "INSERT INTO datahub.deliveries (seq, subscription, state, next_at, doc)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
                        &[seq, sub, state, next_at, doc],
                    )
                    .await
                    .map_err(db_err)?;
            }
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('datahub.deliveries', 'seq'),
                   greatest((SELECT max(seq) FROM datahub.deliveries), 1))",
            )
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(n)
        })
    }

    /// Rows per catalogue table, in the order of [`CATALOG_TABLE_NAMES`].
    pub fn counts(&self) -> Result<[i64; CATALOG_TABLES]> {
        self.db.run(|c| async move {
            let mut out = [0i64; CATALOG_TABLES];
            for (i, t) in CATALOG_TABLE_NAMES.iter().enumerate() {
                out[i] = c
                    .query_one(&format!("SELECT count(*) FROM datahub.{t}"), &[])
                    .await
                    .map_err(db_err)?
                    .get(0);
            }
            Ok(out)
        })
    }

    /// Whether the process `instance` still holds its lease (its advisory lock).
    pub fn instance_alive(&self, instance: &str) -> Result<bool> {
        if instance == self.instance {
            return Ok(true);
        }
        // Looked up in pg_locks, not taken: taking it to test it could leave it held.
        let key = lock_key(&format!("replica:{instance}")) as u64;
        let (hi, lo) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
        self.db.run(move |c| async move {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)",
                &[&hi, &lo],
            )
            .await
            .map_err(db_err)?
            .get(0))
        })
    }
}
