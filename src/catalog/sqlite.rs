//! [`CatalogStore`] on the system SQLite: `catalog.sqlite` in the data folder, shared by
//! the server and the command line (WAL, busy timeout), so a token created or revoked
//! by `datahub token` is seen by a running server.
//!
//! Tokens are `dh_<id>_<secret>`: the id finds the row, the secret is stored only as its
//! SHA-256 and compared in constant time. The audit table refuses UPDATE and DELETE
//! (triggers): the log is append-only even for someone with the SQL shell's habits.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{
    AuditEntry, AuditQuery, CatalogStore, Delivery, Ministry, Principal, Role, Subscription,
    TokenInfo,
};
use layers::{Error, Result};

pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS ministries (
    slug TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    ministry TEXT REFERENCES ministries(slug),
    role TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    ministry TEXT,
    action TEXT NOT NULL,
    layer TEXT,
    detail TEXT NOT NULL,
    remote TEXT
);
CREATE INDEX IF NOT EXISTS audit_layer ON audit(layer, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    token_id TEXT NOT NULL REFERENCES tokens(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    state TEXT NOT NULL,
    next_at TEXT NOT NULL,
    claimed_until TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_subscription ON deliveries (subscription, seq);
"#;

fn db(e: rusqlite::Error) -> Error {
    Error::Internal(format!("catalog database: {e}"))
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

/// Equal-length byte strings compared without an early exit.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl SqliteCatalog {
    pub fn open(data: &Path) -> Result<Self> {
        let path = data.join("catalog.sqlite");
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // Catalogues made before approvals existed get the column (off).
        let has: bool = conn
            .prepare(
                "SELECT 1 FROM pragma_table_info('ministries') WHERE name = 'require_approval'",
            )
            .and_then(|mut st| st.exists([]))
            .map_err(db)?;
        if !has {
            conn.execute_batch(
                "ALTER TABLE ministries ADD COLUMN require_approval INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db)?;
        }
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(db)?;
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a usable connection (SQLite rolls back
        // an unfinished statement), so a poisoned lock is taken over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn row_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let role: String = r.get(2)?;
    Ok(TokenInfo {
        id: r.get(0)?,
        ministry: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        label: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

/// A token's row: its secret's hash, the principal it stands for, and whether it
/// was revoked.
fn token_row(c: &Connection, id: &str) -> Result<Option<(Vec<u8>, Principal, bool)>> {
    let row = c
        .query_row(
            "SELECT secret_sha256, ministry, role, label, expires_at, revoked_at
             FROM tokens WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((stored, ministry, role, label, expires_at, revoked_at)) = row else {
        return Ok(None);
    };
    let p = Principal {
        token_id: id.to_string(),
        ministry,
        role: Role::parse(&role)?,
        label,
        expires_at,
    };
    Ok(Some((stored, p, revoked_at.is_some())))
}

impl CatalogStore for SqliteCatalog {
    fn ministries(&self) -> Result<Vec<Ministry>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT slug, name, email, require_approval FROM ministries ORDER BY slug")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok(Ministry {
                    slug: r.get(0)?,
                    name: r.get(1)?,
                    email: r.get(2)?,
                    require_approval: r.get::<_, i64>(3)? != 0,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn add_ministry(&self, m: &Ministry) -> Result<()> {
        super::check_new_ministry(m)?;
        let c = self.conn();
        let n = c
            .execute(
                "INSERT INTO ministries (slug, name, email, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(slug) DO NOTHING",
                params![m.slug, m.name.trim(), m.email, super::now()],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(Error::bad(format!("ministry '{}' already exists", m.slug)));
        }
        Ok(())
    }

    fn set_require_approval(&self, slug: &str, on: bool) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE ministries SET require_approval = ?2 WHERE slug = ?1",
                params![slug, i64::from(on)],
            )
            .map_err(db)?;
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
        self.conn()
            .execute(
                "INSERT INTO tokens (id, secret_sha256, ministry, role, label, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    info.id,
                    hash,
                    info.ministry,
                    role.as_str(),
                    info.label,
                    info.created_at,
                    info.expires_at
                ],
            )
            .map_err(db)?;
        Ok((info, format!("dh_{id}_{secret}")))
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT id, ministry, role, label, created_at, expires_at, revoked_at
                 FROM tokens ORDER BY created_at, id",
            )
            .map_err(db)?;
        let rows = st.query_map([], row_token).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn revoke_token(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, super::now()],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn verify(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = token
            .strip_prefix("dh_")
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let row = token_row(&self.conn(), id)?;
        // Hash even when the id is unknown, so both paths cost the same.
        let presented = Sha256::digest(secret.as_bytes());
        Ok(row.and_then(|(stored, p, revoked)| {
            (constant_time_eq(&stored, &presented) && !revoked && still_valid(&p)).then_some(p)
        }))
    }

    fn create_session(&self, token_id: &str, expires_at: &str) -> Result<String> {
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let c = self.conn();
        // Ended sessions are deleted; expired ones go whenever a new one starts.
        c.execute(
            "DELETE FROM sessions WHERE expires_at < ?1",
            params![super::now()],
        )
        .map_err(db)?;
        c.execute(
            "INSERT INTO sessions (id, secret_sha256, token_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                Sha256::digest(secret.as_bytes()).to_vec(),
                token_id,
                super::now(),
                expires_at
            ],
        )
        .map_err(db)?;
        Ok(format!("ds_{id}_{secret}"))
    }

    fn verify_session(&self, session: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = session
            .strip_prefix("ds_")
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let c = self.conn();
        let row = c
            .query_row(
                "SELECT secret_sha256, expires_at, token_id FROM sessions WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let presented = Sha256::digest(secret.as_bytes());
        let Some((stored, expires, token_id)) = row else {
            return Ok(None);
        };
        let alive = chrono::DateTime::parse_from_rfc3339(&expires)
            .map(|t| t > chrono::Utc::now())
            .unwrap_or(false);
        if !constant_time_eq(&stored, &presented) || !alive {
            return Ok(None);
        }
        // The session's token must still be valid: a revocation ends its sessions.
        Ok(token_row(&c, &token_id)?
            .and_then(|(_, p, revoked)| (!revoked && still_valid(&p)).then_some(p)))
    }

    fn end_session(&self, session: &str) -> Result<bool> {
        if self.verify_session(session)?.is_none() {
            return Ok(false);
        }
        let id = session
            .strip_prefix("ds_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .unwrap_or_default();
        let n = self
            .conn()
            .execute("DELETE FROM sessions WHERE id = ?1", params![id])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<i64> {
        let c = self.conn();
        c.execute(
            "INSERT INTO audit (at, actor, ministry, action, layer, detail, remote)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.at,
                e.actor,
                e.ministry,
                e.action,
                e.layer,
                e.detail.to_string(),
                e.remote
            ],
        )
        .map_err(db)?;
        Ok(c.last_insert_rowid())
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT seq, at, actor, ministry, action, layer, detail, remote FROM audit WHERE 1=1",
        );
        let mut args: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: String| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(l) = &q.layer {
            push(&mut sql, " AND layer = ?", l.clone());
        }
        if let Some(a) = &q.action {
            push(&mut sql, " AND action = ?", a.clone());
        }
        if let Some(s) = &q.since {
            push(&mut sql, " AND at >= ?", s.clone());
        }
        if let Some(b) = q.before {
            push(&mut sql, " AND seq < ?", b.to_string());
        }
        if let Some(ms) = &q.ministries {
            sql.push_str(" AND ministry IN (");
            for (i, m) in ms.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                push(&mut sql, "?", m.clone());
            }
            sql.push_str(if ms.is_empty() { "NULL)" } else { ")" });
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", q.limit.max(1)));
        let c = self.conn();
        let mut st = c.prepare(&sql).map_err(db)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                let detail: String = r.get(6)?;
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    ministry: r.get(3)?,
                    action: r.get(4)?,
                    layer: r.get(5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    remote: r.get(7)?,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn save_job(&self, j: &serde_json::Value) -> Result<()> {
        let id = j["id"].as_str().unwrap_or_default();
        self.conn()
            .execute(
                "INSERT INTO jobs (id, doc) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                params![id, j.to_string()],
            )
            .map_err(db)?;
        Ok(())
    }

    fn job(&self, id: &str) -> Result<Option<serde_json::Value>> {
        let doc: Option<String> = self
            .conn()
            .query_row("SELECT doc FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
    }

    fn put_subscription(&self, s: &Subscription) -> Result<()> {
        let doc = serde_json::to_string(s).map_err(|e| Error::Internal(e.to_string()))?;
        self.conn()
            .execute(
                "INSERT INTO subscriptions (id, doc) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                params![s.id, doc],
            )
            .map_err(db)?;
        Ok(())
    }

    fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT doc FROM subscriptions ORDER BY id")
            .map_err(db)?;
        let docs = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        docs.iter()
            .map(|d| {
                serde_json::from_str(d).map_err(|e| Error::Corrupt(format!("subscription: {e}")))
            })
            .collect()
    }

    fn update_subscription(&self, s: &Subscription) -> Result<bool> {
        let doc = serde_json::to_string(s).map_err(|e| Error::Internal(e.to_string()))?;
        let n = self
            .conn()
            .execute(
                "UPDATE subscriptions SET doc = ?2 WHERE id = ?1",
                params![s.id, doc],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    fn remove_subscription(&self, id: &str) -> Result<bool> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        tx.execute(
            "DELETE FROM deliveries WHERE subscription = ?1",
            params![id],
        )
        .map_err(db)?;
        let n = tx
            .execute("DELETE FROM subscriptions WHERE id = ?1", params![id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(n > 0)
    }

    fn add_delivery(&self, d: &Delivery) -> Result<i64> {
        let c = self.conn();
        let doc = serde_json::to_string(d).map_err(|e| Error::Internal(e.to_string()))?;
        c.execute(
            "INSERT INTO deliveries (subscription, state, next_at, doc) VALUES (?1, ?2, ?3, ?4)",
            params![d.subscription, d.state, d.next_at, doc],
        )
        .map_err(db)?;
        Ok(c.last_insert_rowid())
    }

    fn due_deliveries(&self, now: &str, limit: usize) -> Result<Vec<Delivery>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT seq, doc FROM deliveries d
                 WHERE state = 'pending' AND next_at <= ?1
                   AND (claimed_until IS NULL OR claimed_until < ?1)
                   AND seq = (SELECT min(seq) FROM deliveries e
                              WHERE e.subscription = d.subscription AND e.state = 'pending')
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![now, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(seq, doc)| delivery(seq, &doc))
            .collect()
    }

    fn claim_delivery(&self, seq: i64, now: &str, until: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE deliveries SET claimed_until = ?3
                 WHERE seq = ?1 AND state = 'pending' AND next_at <= ?2
                   AND (claimed_until IS NULL OR claimed_until < ?2)",
                params![seq, now, until],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    fn update_delivery(&self, d: &Delivery) -> Result<()> {
        let doc = serde_json::to_string(d).map_err(|e| Error::Internal(e.to_string()))?;
        self.conn()
            .execute(
                "UPDATE deliveries SET state = ?2, next_at = ?3, claimed_until = NULL, doc = ?4
                 WHERE seq = ?1",
                params![d.seq, d.state, d.next_at, doc],
            )
            .map_err(db)?;
        Ok(())
    }

    fn prune_deliveries(&self, subscription: &str, keep: usize) -> Result<u64> {
        // The (subscription, seq) index finds the cut; one statement, so a delivery
        // added meanwhile is either counted or newer than the cut.
        let n = self
            .conn()
            .execute(
                "DELETE FROM deliveries WHERE subscription = ?1 AND state <> 'pending'
                   AND seq <= (SELECT seq FROM deliveries WHERE subscription = ?1
                               ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                params![subscription, keep as i64],
            )
            .map_err(db)?;
        Ok(n as u64)
    }

    fn deliveries(&self, subscription: &str, limit: usize) -> Result<Vec<Delivery>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT seq, doc FROM deliveries WHERE subscription = ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![subscription, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(seq, doc)| delivery(seq, &doc))
            .collect()
    }
}

/// A delivery row: its record, with the store's sequence number.
pub(super) fn delivery(seq: i64, doc: &str) -> Result<Delivery> {
    let mut d: Delivery =
        serde_json::from_str(doc).map_err(|e| Error::Corrupt(format!("delivery {seq}: {e}")))?;
    d.seq = seq;
    Ok(d)
}

/// Everything a catalogue holds, rows as they are (token and session secrets as
/// their hashes): what `datahub migrate` copies to PostgreSQL.
#[derive(Debug, Default)]
pub struct CatalogDump {
    /// slug, name, email, created, whether publishes need approval.
    pub ministries: Vec<(String, String, Option<String>, String, bool)>,
    /// id, secret hash, ministry, role, label, created, expires, revoked.
    #[allow(clippy::type_complexity)]
    pub tokens: Vec<(
        String,
        Vec<u8>,
        Option<String>,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    )>,
    pub audit: Vec<AuditEntry>,
    pub jobs: Vec<(String, String)>,
    /// id, document (secret included: receivers keep verifying with it).
    pub subscriptions: Vec<(String, String)>,
    /// seq, subscription, state, next attempt, document: the delivery log with what
    /// is still pending (claims are not carried: their process is gone).
    pub deliveries: Vec<(i64, String, String, String, String)>,
}

impl SqliteCatalog {
    /// Every row, for a migration.
    pub fn dump(&self) -> Result<CatalogDump> {
        let c = self.conn();
        let mut d = CatalogDump::default();
        let mut st = c
            .prepare(
                "SELECT slug, name, email, created_at, require_approval FROM ministries ORDER BY slug",
            )
            .map_err(db)?;
        d.ministries = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, i64>(4)? != 0,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        drop(st);
        let mut st = c
            .prepare(
                "SELECT id, secret_sha256, ministry, role, label, created_at, expires_at, revoked_at
                 FROM tokens ORDER BY created_at, id",
            )
            .map_err(db)?;
        d.tokens = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        drop(st);
        drop(c);
        d.audit = self.audit(&AuditQuery {
            limit: i64::MAX as usize,
            ..Default::default()
        })?;
        d.audit.reverse();
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, doc FROM jobs ORDER BY id")
            .map_err(db)?;
        d.jobs = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        drop(st);
        let mut st = c
            .prepare("SELECT id, doc FROM subscriptions ORDER BY id")
            .map_err(db)?;
        d.subscriptions = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        drop(st);
        let mut st = c
            .prepare("SELECT seq, subscription, state, next_at, doc FROM deliveries ORDER BY seq")
            .map_err(db)?;
        d.deliveries = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        Ok(d)
    }
}

/// Not expired (now). Checked again on every request, cached verifications included.
pub fn still_valid(p: &Principal) -> bool {
    match &p.expires_at {
        None => true,
        Some(e) => chrono::DateTime::parse_from_rfc3339(e)
            .map(|t| t > chrono::Utc::now())
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_log_keeps_the_newest_finished_and_every_pending() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(dir.path()).unwrap();
        let mk = |sub: &str, version: u32, state: &str| Delivery {
            seq: 0,
            subscription: sub.into(),
            event: "layer.published".into(),
            layer: "obras".into(),
            version,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            state: state.into(),
            attempts: 1,
            next_at: "2026-12-01T00:00:00.000Z".into(),
            last_status: None,
            last_error: None,
            delivered_at: None,
            payload: "{}".into(),
        };
        // A pending one far back (a receiver down) is never dropped.
        let states = [
            "delivered",
            "pending",
            "delivered",
            "failed",
            "delivered",
            "pending",
        ];
        for (i, st) in states.iter().enumerate() {
            c.add_delivery(&mk("a", i as u32 + 1, st)).unwrap();
            c.add_delivery(&mk("b", i as u32 + 1, st)).unwrap();
        }
        assert_eq!(c.prune_deliveries("a", 2).unwrap(), 3);
        let left: Vec<u32> = c
            .deliveries("a", 100)
            .unwrap()
            .iter()
            .map(|d| d.version)
            .collect();
        assert_eq!(left, vec![6, 5, 2]);
        assert_eq!(
            c.deliveries("b", 100).unwrap().len(),
            6,
            "other logs untouched"
        );
        assert_eq!(c.prune_deliveries("a", 2).unwrap(), 0);
        assert_eq!(c.prune_deliveries("a", 100).unwrap(), 0);
    }

    #[test]
    fn tokens_verify_revoke_expire_and_audit_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(dir.path()).unwrap();
        c.add_ministry(&Ministry {
            slug: "obras-publicas".into(),
            name: "Obras Públicas".into(),
            email: None,
            require_approval: false,
        })
        .unwrap();
        // The approval policy is kept (and a ministry that does not exist refused).
        c.set_require_approval("obras-publicas", true).unwrap();
        assert!(c.ministries().unwrap()[0].require_approval);
        assert!(c.set_require_approval("nadie", true).is_err());
        assert!(c
            .add_ministry(&Ministry {
                slug: "obras-publicas".into(),
                name: "x".into(),
                email: None,
                require_approval: false,
            })
            .is_err());
        let (info, secret) = c
            .create_token(Some("obras-publicas"), Role::Editor, "ana", None)
            .unwrap();
        let p = c.verify(&secret).unwrap().unwrap();
        assert_eq!(p.ministry.as_deref(), Some("obras-publicas"));
        assert_eq!(p.role, Role::Editor);
        // A wrong secret with the right id, and garbage, are both refused.
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        assert!(c.verify(&wrong).unwrap().is_none());
        assert!(c.verify("Bearer nonsense").unwrap().is_none());
        assert!(c.revoke_token(&info.id).unwrap());
        assert!(!c.revoke_token(&info.id).unwrap());
        assert!(c.verify(&secret).unwrap().is_none());
        let (_, old) = c
            .create_token(None, Role::Admin, "root", Some("2020-01-01T00:00:00Z"))
            .unwrap();
        assert!(c.verify(&old).unwrap().is_none());
        assert!(c.create_token(None, Role::Editor, "x", None).is_err());
        assert!(c
            .create_token(Some("obras"), Role::Editor, "x", None)
            .unwrap_err()
            .to_string()
            .contains("did you mean 'obras-publicas'"));

        let seq = c
            .append_audit(&AuditEntry::now("cli:test", "token.create"))
            .unwrap();
        assert!(seq > 0);
        let conn = c.conn();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
    }
}
