//! Who is calling: the [`Caller`] extractor (an `Authorization: Bearer` token, or the
//! web UI's session cookie), a short cache of verified credentials, the limit on
//! failed attempts, the same-origin rule for cookie-authenticated changes, and the
//! client's address (`X-Forwarded-For` only from configured proxies).
//!
//! No credentials → anonymous. Credentials that do not verify → 401, never a silent
//! downgrade to anonymous (a client with a revoked token should learn it).
//!
//! The cookie holds a session id (`ds_<id>_<secret>`, stored hashed in the catalogue),
//! never the API token: signing out ends the session on the server, and a stolen
//! cookie is worth one session. Its name is `__Host-datahub_session` (Secure, no
//! Domain, Path=/: no sibling site of the city can set or read it) when the page is
//! served over HTTPS; browsers refuse `Secure` cookies on plain HTTP, where it is
//! `datahub_session`. Either way a state change sent with the cookie must come from
//! the page's own origin (`Sec-Fetch-Site`, else `Origin`), or it is refused (CSRF).
//!
//! Guessing is limited without locking anyone out: a credential that verifies is
//! always accepted; failures are counted per address and per presented token id, and
//! past the limit further failures answer 429 after a delay. Only the first failures
//! of an address per window reach the audit log, with a sanitized token id.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap, Method};

use super::{ApiError, AppState};
use crate::catalog::sqlite::still_valid;
use crate::catalog::{AuditEntry, Caller, CatalogStore, Principal};

/// Failed attempts allowed per address (and per token id) and window; past it,
/// failures answer 429.
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Failed attempts written to the audit log per window, all addresses together
/// (each address also at most `MAX_FAILURES`): an attacker cannot fill the table.
const MAX_AUDITED_FAILURES: u32 = 100;
/// How long a verification is trusted before the database is asked again: revocations
/// made through the API apply at once, those from the command line within this time.
const VERIFIED_TTL: Duration = Duration::from_secs(15);
/// Verified credentials kept at most (a full cache is simply cleared: verification
/// is cheap, only not free on every request).
const VERIFIED_MAX: usize = 10_000;
/// A web session lasts at most this long (and never past its token's expiry).
pub const SESSION_HOURS: i64 = 12;

/// The session cookie over HTTPS (see the module doc).
pub const SESSION_COOKIE_SECURE: &str = "__Host-datahub_session";
/// The session cookie over plain HTTP (a local or test server).
pub const SESSION_COOKIE: &str = "datahub_session";

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    Bearer(String),
    Session(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    Address(Option<IpAddr>),
    TokenId(String),
}

pub struct Auth {
    catalog: Arc<dyn CatalogStore>,
    /// Credential → its principal and when it was verified. A plain map under a read
    /// lock: this lookup is on the path of every authenticated tile request.
    verified: RwLock<HashMap<Credential, (Arc<Principal>, Instant)>>,
    failures: Mutex<Failures>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<IpAddr>,
}

#[derive(Default)]
struct Failures {
    counts: HashMap<FailureKey, (Instant, u32)>,
    /// Audit rows written for failures in the current window (all addresses).
    audited: (Option<Instant>, u32),
}

/// The id part of `dh_<id>_<secret>` / `ds_<id>_<secret>` when it looks like one
/// (hex, at most 32 characters): what is counted and logged, never the secret and
/// never arbitrary attacker text.
fn credential_id(c: &Credential) -> Option<String> {
    let (prefix, v) = match c {
        Credential::Bearer(v) => ("dh_", v),
        Credential::Session(v) => ("ds_", v),
    };
    v.strip_prefix(prefix)
        .and_then(|r| r.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

impl Auth {
    pub fn new(catalog: Arc<dyn CatalogStore>, trusted_proxies: Vec<IpAddr>) -> Self {
        Auth {
            catalog,
            verified: RwLock::default(),
            failures: Mutex::default(),
            trusted_proxies,
        }
    }

    pub fn catalog(&self) -> &Arc<dyn CatalogStore> {
        &self.catalog
    }

    /// Forget cached verifications (after a revocation or a sign-out).
    pub fn forget_all(&self) {
        self.verified
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Counts a failure; returns whether the address or the token id is now past
    /// the limit, and whether this failure goes into the audit log.
    fn count_failure(&self, ip: Option<IpAddr>, id: Option<&str>) -> (bool, bool) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut bump = |k: FailureKey| {
            let e = f.counts.entry(k).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= WINDOW {
                *e = (Instant::now(), 0);
            }
            e.1 += 1;
            e.1
        };
        let by_address = bump(FailureKey::Address(ip));
        let by_token = id.map_or(0, |id| bump(FailureKey::TokenId(id.to_string())));
        if f.counts.len() > 100_000 {
            f.counts.retain(|_, (start, _)| start.elapsed() < WINDOW);
            // Still full within one window (invented token ids): those go, the
            // per-address counts stay, and the map never grows without bound.
            if f.counts.len() > 100_000 {
                f.counts.retain(|k, _| matches!(k, FailureKey::Address(_)));
            }
        }
        let (start, n) = &mut f.audited;
        if start.is_none_or(|s| s.elapsed() >= WINDOW) {
            *start = Some(Instant::now());
            *n = 0;
        }
        let audit = by_address <= MAX_FAILURES && *n < MAX_AUDITED_FAILURES;
        if audit {
            *n += 1;
        }
        (by_address > MAX_FAILURES || by_token > MAX_FAILURES, audit)
    }

    fn failed(&self, ip: Option<IpAddr>, c: &Credential) -> ApiError {
        let id = credential_id(c);
        let (limited, audit) = self.count_failure(ip, id.as_deref());
        if audit {
            tracing::warn!(remote = ?ip, token_id = ?id, "failed authentication");
            let mut e = AuditEntry::now("anonymous", "auth.failed");
            e.detail = match c {
                Credential::Bearer(_) => serde_json::json!({"token_id": id}),
                Credential::Session(_) => serde_json::json!({"session_id": id}),
            };
            e.remote = ip.map(|i| i.to_string());
            if let Err(err) = self.catalog.append_audit(&e) {
                tracing::error!(error = %err, "cannot write the audit log");
            }
        }
        if limited {
            return ApiError::too_many(
                "too many failed authentication attempts from this address or for this token; \
                 a valid token is still accepted, wrong ones are refused for a minute",
            );
        }
        match c {
            Credential::Bearer(_) => ApiError::unauthorized(
                "the token is not valid (unknown, revoked or expired); ask your ministry's DataHub admin for a new one",
            ),
            Credential::Session(_) => ApiError::unauthorized(
                "your session has ended (signed out, expired, or its token was revoked); sign in again",
            ),
        }
    }

    /// The caller presenting `c` from `ip`. A credential that verifies is always
    /// accepted, whatever failed before from the same address.
    pub fn resolve(&self, c: &Credential, ip: Option<IpAddr>) -> Result<Caller, ApiError> {
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(c)
            .filter(|(p, at)| {
                at.elapsed() < VERIFIED_TTL && (p.expires_at.is_none() || still_valid(p))
            })
            .map(|(p, _)| p.clone());
        if let Some(p) = cached {
            return Ok(Caller::Token(p));
        }
        let verify = || match c {
            Credential::Bearer(t) => self.catalog.verify(t),
            Credential::Session(s) => self.catalog.verify_session(s),
        };
        // A shared catalogue is a network round trip (and the database may be slow
        // or away): the worker thread hands its other requests on while it waits.
        let verified = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(verify)
            }
            _ => verify(),
        };
        match verified {
            Ok(Some(p)) => {
                let p = Arc::new(p);
                let mut v = self.verified.write().unwrap_or_else(|p| p.into_inner());
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(c.clone(), (p.clone(), Instant::now()));
                Ok(Caller::Token(p))
            }
            Ok(None) => Err(self.failed(ip, c)),
            // The database is away: 503 "try again", not a refusal of the credential.
            Err(e) => Err(ApiError::from(e)),
        }
    }

    /// Ends a web session everywhere this process caches it.
    pub fn end_session(&self, session: &str) -> layers::Result<bool> {
        let ended = self.catalog.end_session(session)?;
        self.verified
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Credential::Session(session.to_string()));
        Ok(ended)
    }

    /// Whether the client reached DataHub over HTTPS: only a trusted proxy's
    /// `X-Forwarded-Proto: https` says so (DataHub itself serves plain HTTP).
    pub fn is_https(&self, parts: &Parts) -> bool {
        peer_ip(parts).is_some_and(|p| self.trusted_proxies.contains(&p))
            && parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim() == "https"))
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the
    /// last address in `X-Forwarded-For` that is not one of the trusted proxies.
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = peer_ip(parts)?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in parts.headers.get_all("x-forwarded-for") {
            for h in v.to_str().unwrap_or("").split(',') {
                match h.trim().parse::<IpAddr>() {
                    Ok(ip) => hops.push(ip),
                    // A garbled chain: believe nothing in it.
                    Err(_) => return Some(peer),
                }
            }
        }
        Some(
            hops.into_iter()
                .rev()
                .find(|ip| !self.trusted_proxies.contains(ip))
                .unwrap_or(peer),
        )
    }
}

/// The address of the connection's other end (a client, or a proxy).
fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The credential a request presents: the Authorization header first, then the
/// session cookie (only `__Host-datahub_session` over HTTPS, see [`session_cookie`]).
pub fn presented(headers: &HeaderMap, https: bool) -> Result<Option<Credential>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "use Authorization: Bearer <token> (a DataHub API token, see `datahub token create`)",
            ));
        }
        return Ok(Some(Credential::Bearer(rest.trim().to_string())));
    }
    Ok(session_cookie(headers, https).map(Credential::Session))
}

/// The session cookie's value. Over HTTPS only `__Host-datahub_session` counts: a
/// plain `datahub_session` may have been set by a sibling site of the city for the
/// whole domain (session fixation), which a `__Host-` cookie cannot be. Over plain
/// HTTP (a local server) the plain one; the `__Host-` one is preferred anyway.
pub fn session_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    let mut plain = None;
    for v in headers.get_all(header::COOKIE) {
        for kv in v.to_str().unwrap_or("").split(';') {
            if let Some((k, val)) = kv.trim().split_once('=') {
                if val.is_empty() {
                    continue;
                }
                if k == SESSION_COOKIE_SECURE {
                    return Some(val.to_string());
                }
                if k == SESSION_COOKIE && !https && plain.is_none() {
                    plain = Some(val.to_string());
                }
            }
        }
    }
    plain
}

/// Whether a browser sent this request from the DataHub's own pages: `Sec-Fetch-Site`
/// (`same-origin`, or `none` for a typed URL) when the browser sends it, else an
/// `Origin` whose host and port are the request's `Host`. A request with neither
/// is not a modern browser's page script: refused too (API clients use Bearer).
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: String| {
        Err(ApiError::forbidden(format!(
            "{why}: changes made with the sign-in cookie must come from the DataHub's own pages \
             (other sites, even of the city, cannot act for a signed-in user); \
             API clients send Authorization: Bearer <token>"
        )))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return match site {
            "same-origin" | "none" => Ok(()),
            other => refuse(format!(
                "the request came from another site (Sec-Fetch-Site: {other})"
            )),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'))
                .unwrap_or("");
            if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
                Ok(())
            } else {
                refuse(format!("the request came from {origin}, not from {host}"))
            }
        }
        None => refuse("the request has no Origin".into()),
    }
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[async_trait]
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let caller = match presented(&parts.headers, state.auth.is_https(parts))? {
            None => Caller::Anonymous,
            Some(c) => {
                if matches!(c, Credential::Session(_)) && changes_state(&parts.method) {
                    same_origin(&parts.headers)?;
                }
                let ip = state.auth.client_ip(parts);
                match state.auth.resolve(&c, ip) {
                    Ok(caller) => caller,
                    Err(e) => {
                        // Past the limit, the refusal is also slowed down: guessing
                        // costs the guesser time, a valid token never waits.
                        if e.is_too_many() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        return Err(e);
                    }
                }
            }
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Whether the request came over HTTPS (see [`Auth::is_https`]).
pub struct Https(pub bool);

#[async_trait]
impl FromRequestParts<AppState> for Https {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Https(state.auth.is_https(parts)))
    }
}

/// The client's address (see [`Auth::client_ip`]).
pub struct ClientIp(pub Option<IpAddr>);

#[async_trait]
impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(state.auth.client_ip(parts)))
    }
}

/// The client's address for the audit log (see [`Auth::client_ip`]).
pub struct Remote(pub Option<String>);

#[async_trait]
impl FromRequestParts<AppState> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Remote(state.auth.client_ip(parts).map(|i| i.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn same_origin_rule() {
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&h(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&h(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&h(&[
            ("host", "datahub.monterrey.gob.mx"),
            ("origin", "https://datahub.monterrey.gob.mx")
        ]))
        .is_ok());
        assert!(same_origin(&h(&[
            ("host", "datahub.monterrey.gob.mx"),
            ("origin", "https://portal.monterrey.gob.mx")
        ]))
        .is_err());
        assert!(same_origin(&h(&[("host", "127.0.0.1:8080")])).is_err());
    }

    #[test]
    fn credential_ids_are_sanitized() {
        let id = |s: &str| credential_id(&Credential::Bearer(s.into()));
        assert_eq!(id("dh_0a1b_secret"), Some("0a1b".into()));
        assert_eq!(id("dh_<script>_x"), None);
        assert_eq!(id(&format!("dh_{}_x", "a".repeat(40))), None);
        assert_eq!(id("garbage"), None);
    }
}
