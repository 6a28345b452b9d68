//! The webhook tee: Meta's verified POSTs forwarded, byte for byte, to the `forward_url`
//! of each account they name, from a durable outbox.
//!
//! A delivery is written by the webhook's write job in the same commit as the payload's
//! figures (so Meta's 200 never waits for the upstream); a background worker claims due
//! deliveries, POSTs each with a timeout, and on anything but a 2xx retries with backoff
//! (1 s, doubling, capped) until the delivery's age runs out, then moves it to the failed
//! list. Outbox times are Unix milliseconds of the server's wall clock.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use tokio::sync::{Notify, watch};

use super::{EngineConfig, EngineError, Org};
use crate::store::{
    AccountRecord, AccountStore, DeliveryState, ForwardingCounts, OutboxDelivery, OutboxStore,
};

pub const DEFAULT_MAX_BACKOFF_SECS: u64 = 300;
pub const DEFAULT_MAX_AGE_SECS: u64 = 7 * 86_400;
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;
const MAX_URL_LEN: usize = 2048;

/// Settings of the tee.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Allow `http://` forward URLs (loopback tests, private networks).
    pub allow_http: bool,
    /// Refuse forward URLs whose host is or resolves to a loopback, private, link-local or
    /// unique-local address, when saved and again at each delivery.
    pub deny_private: bool,
    /// The first retry waits this long; each next one twice the last.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a delivery is tried before it moves to the failed list.
    pub max_age: Duration,
    /// Pending bodies per organization beyond this move to the failed list, oldest first.
    pub max_pending_bytes: u64,
    /// How long one attempt may take, connection included.
    pub attempt_timeout: Duration,
    /// How often the worker looks for due retries (new deliveries wake it at once).
    pub poll_interval: Duration,
    /// Deliveries attempted at once by one worker.
    pub batch: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            allow_http: false,
            deny_private: false,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(DEFAULT_MAX_BACKOFF_SECS),
            max_age: Duration::from_secs(DEFAULT_MAX_AGE_SECS),
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            batch: 32,
        }
    }
}

impl ForwardConfig {
    /// How long a claimed delivery is held: longer than any attempt can take, so that no
    /// other instance starts it while it may still be running.
    fn lease(&self) -> Duration {
        self.attempt_timeout * 2 + Duration::from_secs(1)
    }

    /// The wait after the `attempts`-th failed attempt (1 for the first).
    pub fn backoff(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 32)).unwrap_or(32);
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_backoff)
    }
}

/// Whether an address is one `--forward-deny-private` refuses: loopback, private,
/// link-local, unique-local, shared (CGNAT), unspecified, broadcast or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Whether what follows `https://` has the shape the API description states for
/// `forward_url` (the pattern in src/api/accounts.rs says the same): host, port, path,
/// query. Accepting exactly what the description allows keeps the two from drifting.
pub fn url_shape_ok(rest: &str) -> bool {
    const PATH: &[u8] = b"._~!$&'()*+,;=:@%-/";
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && !p.starts_with('0')
            && p.parse::<u32>().is_ok_and(|n| (1..=65_535).contains(&n))
    });
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let chars_ok = |s: &str, extra: &[u8]| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || PATH.contains(&b) || extra.contains(&b))
    };
    port_ok
        && (is_ipv4_literal(host) || is_dns_name(host))
        && chars_ok(path, b"")
        && query.is_none_or(|q| chars_ok(q, b"?"))
}

/// Four decimal octets without leading zeros.
fn is_ipv4_literal(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// Lowercase labels of letters and digits joined by single hyphens, the last one
/// starting with a letter (so that it never reads as an address).
fn is_dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    let labels: Vec<&str> = host.split('.').collect();
    labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|l| l.bytes().next().is_some_and(|b| b.is_ascii_lowercase()))
}

fn deny_private_message(host: &str) -> String {
    format!(
        "field `forward_url` names `{host}`, a loopback, private or link-local address; allowed: public addresses only (the server runs with --forward-deny-private)"
    )
}

/// Refuses a host that is, or resolves to, an address `is_private` names.
async fn check_public(host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if is_private(ip) {
            Err(deny_private_message(host))
        } else {
            Ok(())
        };
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, 0))
        .await
        .map_err(|e| format!("field `forward_url`: host `{host}` does not resolve: {e}"))?
        .collect();
    if addrs.iter().any(|a| is_private(a.ip())) {
        return Err(deny_private_message(host));
    }
    Ok(())
}

/// Resolves names for deliveries, refusing private addresses, so that what is checked is
/// what is connected to (a name that changed its answer since it was saved is caught).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|a| is_private(a.ip())) {
                return Err(format!(
                    "`{host}` resolves to a loopback, private or link-local address (--forward-deny-private)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The forwarding status of one account, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ForwardingStatus {
    pub account_id: String,
    pub forward_url: Option<String>,
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Of the failed ones over time, those moved there because the outbox was full.
    pub dropped_over_bound: u64,
    pub oldest_pending_at: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

/// A failed delivery, as the API lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FailedDelivery {
    pub id: String,
    pub forward_url: String,
    pub received_at: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub bytes: usize,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    /// The body as received (UTF-8, as Meta sends JSON).
    pub body: String,
}

fn show_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Unix milliseconds now, by the wall clock (retries must advance in real time).
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn new_delivery_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("dlv_{}", hex::encode(b))
}

/// The tee: checks forward URLs, makes deliveries, runs the delivery worker and answers
/// the forwarding status.
pub struct Forwarding {
    outbox: Arc<dyn OutboxStore>,
    accounts: Arc<dyn AccountStore>,
    config: Arc<EngineConfig>,
    wake: Notify,
}

impl Forwarding {
    pub fn new(
        outbox: Arc<dyn OutboxStore>,
        accounts: Arc<dyn AccountStore>,
        config: Arc<EngineConfig>,
    ) -> Self {
        Forwarding {
            outbox,
            accounts,
            config,
            wake: Notify::new(),
        }
    }

    fn settings(&self) -> &ForwardConfig {
        &self.config.forward
    }

    /// Checks a forward URL before it is saved; the URL is kept as given.
    pub async fn check_url(&self, url: &str) -> Result<(), EngineError> {
        let cfg = self.settings();
        let bad = |why: &str| {
            EngineError::BadRequest(format!(
                "field `forward_url` is `{url}`: {why}; allowed: an absolute {} URL of at most {MAX_URL_LEN} characters, without user name or password",
                if cfg.allow_http {
                    "https:// or http://"
                } else {
                    "https://"
                }
            ))
        };
        if url.len() > MAX_URL_LEN || url.chars().any(char::is_control) {
            return Err(bad("too long or holds control characters"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if cfg.allow_http => {}
            "http" => {
                return Err(bad(
                    "http is refused unless the server runs with --forward-allow-http",
                ));
            }
            _ => return Err(bad("not an http(s) URL")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "it holds credentials, and forward URLs are shown to every reader",
            ));
        }
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        if !url_shape_ok(rest) {
            return Err(bad(
                "the host must be a lowercase DNS name or an IPv4 address, then an optional port (1 to 65535), path and query; no fragment or IPv6 literal",
            ));
        }
        let Some(host) = parsed.host_str() else {
            return Err(bad("it has no host"));
        };
        if cfg.deny_private {
            check_public(host).await.map_err(EngineError::BadRequest)?;
        }
        Ok(())
    }

    /// The deliveries of one verified payload: one per distinct forward URL of the
    /// accounts it names (in the order it names them), each belonging to the first
    /// account with that URL, grouped by that account's organization.
    pub fn deliveries_for<'a>(
        &self,
        accounts: impl Iterator<Item = &'a AccountRecord>,
        body: &[u8],
        signature: &str,
        content_type: Option<&str>,
    ) -> BTreeMap<String, Vec<OutboxDelivery>> {
        let now = now_ms();
        let expires_at = now
            .saturating_add(i64::try_from(self.settings().max_age.as_millis()).unwrap_or(i64::MAX));
        let mut seen = std::collections::HashSet::new();
        let mut out: BTreeMap<String, Vec<OutboxDelivery>> = BTreeMap::new();
        for a in accounts {
            let Some(url) = &a.forward_url else { continue };
            if !seen.insert(url.clone()) {
                continue;
            }
            out.entry(a.org.clone()).or_default().push(OutboxDelivery {
                id: new_delivery_id(),
                org: a.org.clone(),
                account: a.account_id.clone(),
                forward_url: url.clone(),
                body: body.to_vec(),
                signature: Some(signature.to_string()),
                content_type: content_type.map(str::to_string),
                created_at: now,
                next_attempt_at: now,
                expires_at,
                attempts: 0,
                last_error: None,
                state: DeliveryState::Pending,
            });
        }
        out
    }

    /// The deliveries of every organization in the outbox, pending and failed.
    pub async fn totals(&self) -> Result<crate::store::OutboxTotals, EngineError> {
        Ok(self.outbox.outbox_totals().await?)
    }

    /// Tells the worker that new deliveries were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let cfg = self.settings();
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("whatstat/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.attempt_timeout)
            .connect_timeout(cfg.attempt_timeout)
            // A redirect is an answer other than 2xx: retried, never followed (it could
            // lead anywhere, a private address included).
            .redirect(reqwest::redirect::Policy::none());
        if cfg.deny_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        b.build()
    }

    /// Delivers from the outbox until `stop` turns true (or its sender is dropped).
    pub async fn run_worker(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the forwarding client; webhook forwarding is off");
                return;
            }
        };
        match self.outbox.resume_pending(now_ms()).await {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "resuming pending webhook deliveries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot resume pending webhook deliveries"),
        }
        loop {
            if *stop.borrow() {
                break;
            }
            let claimed = self.tick(&client).await;
            if claimed == 0 {
                tokio::select! {
                    changed = stop.changed() => if changed.is_err() { break },
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings().poll_interval) => {}
                }
            }
        }
        tracing::info!("webhook forwarding stopped");
    }

    /// Bounds the outbox, then attempts the due deliveries at once; returns how many.
    async fn tick(&self, client: &reqwest::Client) -> usize {
        let cfg = self.settings();
        match self
            .outbox
            .bound_pending(
                cfg.max_pending_bytes,
                "the organization's outbox was over --forward-max-pending-bytes; oldest pending deliveries moved here",
            )
            .await
        {
            Ok(moved) => {
                for (org, account, n) in moved {
                    tracing::warn!(%org, %account, deliveries = n, max_pending_bytes = cfg.max_pending_bytes,
                        "outbox over its bound: oldest pending webhook deliveries moved to the failed list");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot bound the outbox"),
        }
        let now = now_ms();
        let lease_until =
            now.saturating_add(i64::try_from(cfg.lease().as_millis()).unwrap_or(i64::MAX));
        let due = match self.outbox.claim_due(now, lease_until, cfg.batch).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries");
                return 0;
            }
        };
        let n = due.len();
        let mut attempts = tokio::task::JoinSet::new();
        for d in due {
            let client = client.clone();
            attempts.spawn(async move {
                let result = attempt(&client, &d).await;
                (d, result)
            });
        }
        while let Some(done) = attempts.join_next().await {
            let Ok((d, result)) = done else { continue };
            if let Err(e) = self.settle(&d, result).await {
                tracing::warn!(delivery = %d.id, error = %e, "cannot record a webhook delivery's outcome; it will be tried again");
            }
        }
        n
    }

    async fn settle(
        &self,
        d: &OutboxDelivery,
        result: Result<(), String>,
    ) -> Result<(), crate::store::StoreError> {
        let now = now_ms();
        match result {
            Ok(()) => {
                tracing::debug!(delivery = %d.id, url = %d.forward_url, "webhook delivered");
                self.outbox.mark_delivered(d, now).await
            }
            Err(error) => {
                let wait = self.settings().backoff(d.attempts + 1);
                let next = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                if next > d.expires_at {
                    tracing::warn!(delivery = %d.id, url = %d.forward_url, attempts = d.attempts + 1, %error,
                        "webhook delivery moved to the failed list: its age ran out");
                    self.outbox.mark_failed(d, &error).await
                } else {
                    tracing::debug!(delivery = %d.id, url = %d.forward_url, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; will retry");
                    self.outbox.reschedule(d, next, &error).await
                }
            }
        }
    }

    async fn account(&self, org: &Org, id: &str) -> Result<AccountRecord, EngineError> {
        let visible = if org.may_use(id) {
            self.accounts.account(&org.id, id).await?
        } else {
            None
        };
        visible.ok_or_else(|| EngineError::UnknownAccount(format!("account `{id}` not found")))
    }

    pub async fn status(&self, org: &Org, id: &str) -> Result<ForwardingStatus, EngineError> {
        let account = self.account(org, id).await?;
        let ForwardingCounts {
            pending,
            delivered,
            failed,
            dropped_over_bound,
            oldest_pending_at,
            last_error,
            last_success_at,
        } = self.outbox.forwarding_counts(&org.id, id).await?;
        Ok(ForwardingStatus {
            account_id: account.account_id,
            forward_url: account.forward_url,
            pending,
            delivered,
            failed,
            dropped_over_bound,
            oldest_pending_at: oldest_pending_at.map(show_ms),
            last_error,
            last_success_at: last_success_at.map(show_ms),
        })
    }

    pub async fn failed(&self, org: &Org, id: &str) -> Result<Vec<FailedDelivery>, EngineError> {
        self.account(org, id).await?;
        Ok(self
            .outbox
            .failed_deliveries(&org.id, id)
            .await?
            .into_iter()
            .map(|d| FailedDelivery {
                id: d.id,
                forward_url: d.forward_url,
                received_at: show_ms(d.created_at),
                attempts: d.attempts,
                last_error: d.last_error,
                bytes: d.body.len(),
                signature: d.signature,
                content_type: d.content_type,
                body: String::from_utf8_lossy(&d.body).into_owned(),
            })
            .collect())
    }

    /// Makes one failed delivery (or all of the account's) pending again, due now and
    /// with a full age ahead of it; returns how many.
    pub async fn retry(
        &self,
        org: &Org,
        id: &str,
        delivery: Option<&str>,
    ) -> Result<u64, EngineError> {
        self.account(org, id).await?;
        let now = now_ms();
        let expires_at = now
            .saturating_add(i64::try_from(self.settings().max_age.as_millis()).unwrap_or(i64::MAX));
        let n = self
            .outbox
            .retry_failed(&org.id, id, delivery, now, expires_at)
            .await?;
        if let (Some(d), 0) = (delivery, n) {
            return Err(EngineError::NotFound(format!(
                "account `{id}` has no failed delivery `{d}`"
            )));
        }
        if n > 0 {
            tracing::info!(org = %org.id, account = %id, deliveries = n, "failed webhook deliveries retried");
            self.wake();
        }
        Ok(n)
    }

    pub async fn delete_failed(
        &self,
        org: &Org,
        id: &str,
        delivery: &str,
    ) -> Result<(), EngineError> {
        self.account(org, id).await?;
        if self.outbox.delete_failed(&org.id, id, delivery).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!(
                "account `{id}` has no failed delivery `{delivery}`"
            )))
        }
    }
}

/// One POST of a delivery: Meta's body, signature and content type, as received.
async fn attempt(client: &reqwest::Client, d: &OutboxDelivery) -> Result<(), String> {
    let mut req = client
        .post(&d.forward_url)
        .header("X-Whatstat-Delivery", &d.id)
        .body(d.body.clone());
    if let Some(sig) = &d.signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    if let Some(ct) = &d.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let resp = req.send().await.map_err(|e| {
        // The chain names the cause (refused, timed out, a private address).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the upstream answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let c = ForwardConfig::default();
        let secs: Vec<u64> = (1..=11).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(c.backoff(1_000).as_secs(), 300);
    }

    #[test]
    fn url_shapes_follow_the_described_pattern() {
        for ok in [
            "shop.example",
            "hooks.platform-1.example:8443/meta/webhook?token=a-b_c&x=%20",
            "127.0.0.1:65535/",
            "203.0.113.7/a/b/",
            "localhost",
            "a",
        ] {
            assert!(url_shape_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "Shop.example",
            "shop.example#frag",
            "[::1]/hook",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "shop.123",
            "xn--zz.example",
            "-a.example",
            "a.example:0",
            "a.example:65536",
            "a.example:",
            "a.example/with space",
            "a..example",
        ] {
            assert!(!url_shape_ok(bad), "{bad}");
        }
    }

    #[test]
    fn private_addresses_are_named_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
