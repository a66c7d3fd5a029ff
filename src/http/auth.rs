//! Who is calling: the [`Caller`] extractor (an `Authorization: Bearer` token, or the
//! web UI's `datahub_session` cookie holding one), a short cache of verified tokens,
//! and the limit on failed attempts per client address.
//!
//! No credentials → anonymous. Credentials that do not verify → 401, never a silent
//! downgrade to anonymous (a client with a revoked token should learn it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap};

use super::{ApiError, AppState};
use crate::catalog::sqlite::still_valid;
use crate::catalog::{AuditEntry, Caller, CatalogStore, Principal};

/// Failed attempts allowed per address and window before answering 429.
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// How long a verification is trusted before the database is asked again: revocations
/// made through the API apply at once, those from the command line within this time.
const VERIFIED_TTL: Duration = Duration::from_secs(15);
/// Verified tokens kept at most (a full cache is simply cleared: verification is cheap,
/// only not free on every request).
const VERIFIED_MAX: usize = 10_000;

pub const SESSION_COOKIE: &str = "datahub_session";

pub struct Auth {
    catalog: Arc<dyn CatalogStore>,
    /// Token → its principal and when it was verified. A plain map under a read lock:
    /// this lookup is on the path of every authenticated tile request.
    verified: RwLock<HashMap<String, (Arc<Principal>, Instant)>>,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl Auth {
    pub fn new(catalog: Arc<dyn CatalogStore>) -> Self {
        Auth {
            catalog,
            verified: RwLock::default(),
            failures: Mutex::default(),
        }
    }

    /// Forget cached verifications (after a revocation).
    pub fn forget_all(&self) {
        self.verified
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn blocked(&self, ip: Option<IpAddr>) -> Option<u64> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&ip).and_then(|(start, n)| {
            let age = start.elapsed();
            (*n >= MAX_FAILURES && age < WINDOW).then(|| (WINDOW - age).as_secs().max(1))
        })
    }

    fn failed(&self, ip: Option<IpAddr>, token: &str) {
        {
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let e = f.entry(ip).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= WINDOW {
                *e = (Instant::now(), 0);
            }
            e.1 += 1;
            if f.len() > 100_000 {
                f.retain(|_, (start, _)| start.elapsed() < WINDOW);
            }
        }
        // The token id (before its secret) says which token was tried; never the secret.
        let id = token
            .strip_prefix("dh_")
            .and_then(|r| r.split_once('_'))
            .map(|(id, _)| id.to_string());
        tracing::warn!(remote = ?ip, token_id = ?id, "failed authentication");
        let mut e = AuditEntry::now("anonymous", "auth.failed");
        e.detail = serde_json::json!({"token_id": id});
        e.remote = ip.map(|i| i.to_string());
        if let Err(err) = self.catalog.append_audit(&e) {
            tracing::error!(error = %err, "cannot write the audit log");
        }
    }

    /// The caller presenting `token` from `ip`.
    pub fn resolve(&self, token: &str, ip: Option<IpAddr>) -> Result<Caller, ApiError> {
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .filter(|(p, at)| {
                at.elapsed() < VERIFIED_TTL && (p.expires_at.is_none() || still_valid(p))
            })
            .map(|(p, _)| p.clone());
        if let Some(p) = cached {
            return Ok(Caller::Token(p));
        }
        if let Some(wait) = self.blocked(ip) {
            return Err(ApiError::too_many(format!(
                "too many failed authentication attempts from this address; try again in {wait} s"
            )));
        }
        match self.catalog.verify(token) {
            Ok(Some(p)) => {
                let p = Arc::new(p);
                let mut v = self.verified.write().unwrap_or_else(|p| p.into_inner());
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(token.to_string(), (p.clone(), Instant::now()));
                Ok(Caller::Token(p))
            }
            Ok(None) => {
                self.failed(ip, token);
                Err(ApiError::unauthorized(
                    "the token is not valid (unknown, revoked or expired); ask your ministry's DataHub admin for a new one",
                ))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

/// The token a request presents: the Authorization header first, then the cookie.
pub fn presented_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "use Authorization: Bearer <token> (a DataHub API token, see `datahub token create`)",
            ));
        }
        return Ok(Some(rest.trim().to_string()));
    }
    for v in headers.get_all(header::COOKIE) {
        for kv in v.to_str().unwrap_or("").split(';') {
            if let Some((k, val)) = kv.trim().split_once('=') {
                if k == SESSION_COOKIE && !val.is_empty() {
                    return Ok(Some(val.to_string()));
                }
            }
        }
    }
    Ok(None)
}

pub fn remote_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

#[async_trait]
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let caller = match presented_token(&parts.headers)? {
            None => Caller::Anonymous,
            Some(t) => state.auth.resolve(&t, remote_ip(parts))?,
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The client's address for the audit log: the first `X-Forwarded-For` hop behind a
/// proxy, else the peer address.
pub struct Remote(pub Option<String>);

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let fwd = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 64);
        Ok(Remote(
            fwd.or_else(|| remote_ip(parts).map(|i| i.to_string())),
        ))
    }
}
