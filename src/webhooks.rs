//! Subscriptions (webhooks): other services told when a layer they may see gets a
//! new version. What is owned here: the subscription and delivery records (kept by
//! the [`crate::catalog::CatalogStore`], so every replica shares them), which
//! subscriptions a publish concerns, the signed POST, and the delivery loop (retries
//! with backoff, one delivery at a time per subscription so a receiver sees versions
//! in order, a log of every attempt).
//!
//! A publish only writes delivery records: a receiver that is slow or down never
//! holds it up. A delivery is claimed (`claimed_until`) before it is sent, so two
//! replicas never send the same one at once.

use std::sync::Arc;
use std::time::Duration;

use layers::store::LayerMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::catalog::CatalogStore;

/// `[webhooks]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// First retry after this many seconds, doubling each time (capped at one hour).
    pub retry_base_s: u64,
    /// Attempts before a delivery is given up and its subscription marked failing.
    pub max_attempts: u32,
    /// How long a receiver has to answer.
    pub timeout_s: u64,
    /// The DataHub's public address, for absolute links in the notifications
    /// (relative links when absent).
    pub public_url: Option<String>,
    /// Finished deliveries kept in each subscription's log (the newest); older ones
    /// are forgotten so the log cannot grow without bound.
    pub keep_deliveries: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry_base_s: 10,
            max_attempts: 8,
            timeout_s: 10,
            public_url: None,
            keep_deliveries: 1000,
        }
    }
}

/// A registered receiver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub id: String,
    /// The ministry it was registered for: it is told only of layers that ministry
    /// may see. None: registered by the city-wide admin (every layer).
    pub ministry: Option<String>,
    /// Only this layer (None: every layer it may see, or those of `of_ministry`).
    pub layer: Option<String>,
    /// Only layers of this ministry.
    pub of_ministry: Option<String>,
    pub url: String,
    /// The HMAC-SHA256 key (shown once when created, never listed).
    pub secret: String,
    pub created_by: String,
    pub created_at: String,
    /// The last delivery was given up (receiver down or refusing).
    #[serde(default)]
    pub failing: bool,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Subscription {
    /// Whether a publish of `m` concerns this subscription.
    pub fn wants(&self, m: &LayerMeta) -> bool {
        if self.layer.as_deref().is_some_and(|l| l != m.id)
            || self.of_ministry.as_deref().is_some_and(|o| o != m.ministry)
        {
            return false;
        }
        // The access rule of the admin who registered it.
        crate::catalog::Caller::admin_of(self.ministry.as_deref()).can_see(m)
    }

    /// As listed: everything but the secret.
    pub fn public(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("secret");
        }
        v
    }
}

/// One notification to one subscription, with what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// Order of creation (assigned by the store).
    #[serde(default)]
    pub seq: i64,
    pub subscription: String,
    pub event: String,
    pub layer: String,
    pub version: u32,
    pub created_at: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    /// When the next attempt is due (RFC 3339 UTC).
    pub next_at: String,
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub delivered_at: Option<String>,
    /// The JSON body sent (the same bytes at every attempt).
    pub payload: String,
}

/// HMAC-SHA256 (RFC 2104) of `body` under `key`, as lowercase hex.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(body);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex::encode(outer.finalize())
}

/// Checks a receiver's address: absolute http:// with a host (this build sends no
/// TLS: https receivers sit behind a forwarding proxy).
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            "https:// receivers are not supported by this DataHub build (it sends without \
             TLS): give an http:// address inside the city network, or one of a \
             forwarding proxy that adds TLS"
                .to_string()
        } else {
            format!("'{url}' is not an http:// address")
        }
    })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || host.contains('@')
        || url.len() > 2000
        || url.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "'{url}' is not a usable receiver address (http://host[:port]/path)"
        ));
    }
    Ok(())
}

/// The `host:port` of a checked receiver address.
pub fn host_port(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.starts_with('[') {
        if host.contains("]:") {
            host.to_string()
        } else {
            format!("{host}:80")
        }
    } else if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    }
}

/// Addresses a receiver may not resolve to: the cloud metadata service and other
/// link-local, unspecified, multicast and broadcast addresses (what an attacker with
/// an admin token would aim a server-side request at).
pub fn forbidden_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            a.is_link_local() || a.is_unspecified() || a.is_multicast() || a.is_broadcast()
        }
        std::net::IpAddr::V6(a) => {
            a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Why a receiver's resolved addresses are refused: any of them forbidden (a name
/// that also points at the metadata service is no receiver), or none at all.
pub const FORBIDDEN_RECEIVER: &str = "the receiver resolves to a link-local, unspecified or \
     multicast address (such as the cloud metadata service): not a place to send notifications";

/// The addresses a receiver's name resolved to, when it may be sent to.
pub fn receiver_addrs(
    addrs: impl Iterator<Item = std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, &'static str> {
    let addrs: Vec<_> = addrs.collect();
    if addrs.is_empty() || addrs.iter().any(|a| forbidden_address(a.ip())) {
        return Err(FORBIDDEN_RECEIVER);
    }
    Ok(addrs)
}

/// The sender's resolver: receivers' names are resolved again at every send and
/// checked as at registration, so a name re-pointed later at the metadata service
/// (DNS rebinding) is refused then too.
struct ReceiverResolver;

impl reqwest::dns::Resolve for ReceiverResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = receiver_addrs(tokio::net::lookup_host((host.as_str(), 0)).await?)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Writes one pending delivery per subscription that wants this new version of
/// `m` (`previous`: the version it replaces). Never fails a publish: problems are
/// logged.
pub fn enqueue(
    catalog: &dyn CatalogStore,
    settings: &WebhookSettings,
    m: &LayerMeta,
    previous: Option<u32>,
) {
    let subs = match catalog.subscriptions() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(layer = %m.id, error = %e, "cannot read the subscriptions: nobody notified");
            return;
        }
    };
    let base = settings
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    for s in subs.iter().filter(|s| s.wants(m)) {
        // Milliseconds, as the sender compares: due at once, not in the next second.
        let now = rfc3339(chrono::Utc::now());
        // A first version is compared with nothing (from=0): all of it is added.
        let changes = format!(
            "{base}/collections/{}/changes?from={}&to={}&f=geojson",
            m.id,
            previous.unwrap_or(0),
            m.version
        );
        let payload = json!({
            "event": "layer.published",
            "subscription": s.id,
            "layer": m.id,
            "title": m.title,
            "ministry": m.ministry,
            "access": m.access.as_str(),
            "version": m.version,
            "previous_version": previous,
            "published_at": m.created_at,
            "uploaded_by": m.uploaded_by,
            "approved_by": m.approved_by,
            "note": m.note,
            "feature_count": m.feature_count,
            "bbox": m.bbox,
            "sent_at": now,
            "links": [
                {"rel": "changes", "type": "application/geo+json", "href": changes},
                {"rel": "collection", "type": "application/json", "href": format!("{base}/collections/{}", m.id)},
                {"rel": "items", "type": "application/geo+json", "href": format!("{base}/collections/{}/items", m.id)},
            ],
        });
        let d = Delivery {
            seq: 0,
            subscription: s.id.clone(),
            event: "layer.published".into(),
            layer: m.id.clone(),
            version: m.version,
            created_at: now.clone(),
            state: "pending".into(),
            attempts: 0,
            next_at: now,
            last_status: None,
            last_error: None,
            delivered_at: None,
            payload: payload.to_string(),
        };
        if let Err(e) = catalog.add_delivery(&d) {
            tracing::error!(layer = %m.id, subscription = %s.id, error = %e, "cannot queue a notification");
        }
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Sends due deliveries until the process ends: every second, and at once when
/// `wake` is notified (a publish in this process).
pub async fn run(
    catalog: Arc<dyn CatalogStore>,
    settings: WebhookSettings,
    wake: Arc<tokio::sync::Notify>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_s.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(ReceiverResolver))
        .user_agent(concat!("Monterrey-DataHub/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build the HTTP client");
            return;
        }
    };
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
        let cat = catalog.clone();
        let now = chrono::Utc::now();
        let due = tokio::task::spawn_blocking(move || cat.due_deliveries(&rfc3339(now), 32)).await;
        let due = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read due notifications");
                continue;
            }
            Err(_) => continue,
        };
        // One per subscription (the store gives each one's oldest): sent side by side.
        let sends = due.into_iter().map(|d| {
            let (client, catalog, settings) = (client.clone(), catalog.clone(), settings.clone());
            async move { attempt(&client, catalog, &settings, d).await }
        });
        futures_util::future::join_all(sends).await;
    }
}

/// One attempt at one delivery: claimed, sent, its outcome recorded.
async fn attempt(
    client: &reqwest::Client,
    catalog: Arc<dyn CatalogStore>,
    settings: &WebhookSettings,
    mut d: Delivery,
) {
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::seconds(settings.timeout_s as i64 + 30);
    let (cat, seq) = (catalog.clone(), d.seq);
    let (n, u) = (rfc3339(now), rfc3339(until));
    let claimed = tokio::task::spawn_blocking(move || cat.claim_delivery(seq, &n, &u))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !claimed {
        return;
    }
    let cat = catalog.clone();
    let subs = tokio::task::spawn_blocking(move || cat.subscriptions()).await;
    let Some(sub) = subs
        .ok()
        .and_then(Result::ok)
        .and_then(|all| all.into_iter().find(|s| s.id == d.subscription))
    else {
        return;
    };
    let sent_at = chrono::Utc::now();
    let sig = sign(sub.secret.as_bytes(), d.payload.as_bytes());
    let result = client
        .post(&sub.url)
        .header("content-type", "application/json")
        .header("x-datahub-event", d.event.as_str())
        .header(
            "x-datahub-delivery",
            format!("{}-{}", d.subscription, d.seq),
        )
        .header("x-datahub-timestamp", sent_at.timestamp().to_string())
        .header("x-datahub-signature-256", format!("sha256={sig}"))
        .body(d.payload.clone())
        .send()
        .await;
    d.attempts += 1;
    if let Ok(r) = &result {
        d.last_status = Some(r.status().as_u16());
    }
    let error = match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("the receiver answered {}", r.status())),
        Err(e) if e.is_timeout() => Some(format!(
            "no answer within {} s (setting [webhooks] timeout_s)",
            settings.timeout_s
        )),
        Err(e) => Some(format!("cannot reach the receiver: {e}")),
    };
    let mut sub_update = None;
    match error {
        None => {
            d.state = "delivered".into();
            d.delivered_at = Some(rfc3339(chrono::Utc::now()));
            d.last_error = None;
            if sub.failing {
                sub_update = Some(Subscription {
                    failing: false,
                    last_error: None,
                    ..sub.clone()
                });
            }
        }
        Some(e) => {
            d.last_error = Some(e.clone());
            if d.attempts >= settings.max_attempts {
                d.state = "failed".into();
                tracing::warn!(subscription = %sub.id, layer = %d.layer, version = d.version, error = %e, "notification given up");
                sub_update = Some(Subscription {
                    failing: true,
                    last_error: Some(format!(
                        "{e} ({} attempts; the receiver can catch up with /collections/{}/changes?since=<its version>)",
                        d.attempts, d.layer
                    )),
                    ..sub.clone()
                });
            } else {
                let wait = settings
                    .retry_base_s
                    .max(1)
                    .saturating_mul(1u64 << (d.attempts - 1).min(16))
                    .min(3600);
                d.next_at = rfc3339(chrono::Utc::now() + chrono::Duration::seconds(wait as i64));
            }
        }
    }
    let cat = catalog.clone();
    let keep = settings.keep_deliveries.max(1);
    let r = tokio::task::spawn_blocking(move || {
        cat.update_delivery(&d)?;
        if d.state != "pending" {
            cat.prune_deliveries(&d.subscription, keep)?;
        }
        if let Some(s) = sub_update {
            // Never brings back a subscription removed while this was being sent.
            cat.update_subscription(&s)?;
        }
        Ok::<_, layers::Error>(())
    })
    .await;
    if !matches!(r, Ok(Ok(()))) {
        tracing::warn!("cannot record a notification attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_resolving_to_forbidden_addresses_are_refused() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            receiver_addrs([a("10.1.2.3:0"), a("[::1]:0")].into_iter()),
            Ok(vec![a("10.1.2.3:0"), a("[::1]:0")])
        );
        for bad in [
            vec![a("169.254.169.254:0")],
            vec![a("10.1.2.3:0"), a("169.254.169.254:0")],
            vec![a("[fe80::1]:0")],
            vec![a("0.0.0.0:0")],
            vec![],
        ] {
            assert_eq!(receiver_addrs(bad.into_iter()), Err(FORBIDDEN_RECEIVER));
        }
    }

    #[tokio::test]
    async fn the_sender_resolves_through_the_check() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = ReceiverResolver.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
        let bad: reqwest::dns::Name = "nombre-que-no-existe.invalid".parse().unwrap();
        assert!(ReceiverResolver.resolve(bad).await.is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn receivers_are_plain_http_addresses() {
        assert!(check_url("http://trafico.monterrey.local:8080/hooks/datahub").is_ok());
        assert!(check_url("https://x.example/hook").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://user:pw@x/").is_err());
        assert!(check_url("http:///x").is_err());
        assert_eq!(host_port("http://a.local/x"), "a.local:80");
        assert_eq!(host_port("http://a.local:8080/x?y"), "a.local:8080");
        assert!(forbidden_address("169.254.169.254".parse().unwrap()));
        assert!(forbidden_address("0.0.0.0".parse().unwrap()));
        assert!(!forbidden_address("10.1.2.3".parse().unwrap()));
    }
}
