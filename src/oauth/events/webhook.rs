//! `--events-webhook`: delivers grant events ([`GrantEvent`]) to the operator's endpoint,
//! signed with HMAC-SHA256 (`Tollgate-Signature: t=<unix>,v1=<hex>` over `"<t>.<body>"`,
//! docs/events.md). The sink only queues (the path that made the change never waits): a
//! bounded queue ([`QUEUE_CAPACITY`], the oldest dropped when full) drained by one delivery
//! task, retrying with exponential backoff and full jitter. Sent with a plain hyper client
//! (rustls on ring, the webpki roots plus `--upstream-ca-file`), not through the proxy's
//! egress policy: the receiver is the operator's, like the OTLP collector. At shutdown what is
//! queued gets one more try, for at most [`SHUTDOWN_BUDGET`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{EventSink, GrantEvent};
use crate::config::events::{GrantHealthConfig, WebhookConfig};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::oauth::inject::Injector;

/// Events waiting at most; beyond it the oldest is dropped (counted, warned).
pub const QUEUE_CAPACITY: usize = 1000;
/// One delivery attempt's deadline (connect, send, response head).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry waits up to this (full jitter: a random wait below the bound).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The bound of a retry's wait never exceeds this.
const BACKOFF_CAP: Duration = Duration::from_secs(5 * 60);
/// Attempts per event before it is given up (counted `failed`).
const MAX_ATTEMPTS: u32 = 10;
/// An event still undelivered this long after its first attempt is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60 * 60);
/// How long the shutdown hook tries to deliver what is queued.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);
/// The signature header.
pub const SIGNATURE_HEADER: &str = "tollgate-signature";

/// The pooled client deliveries go through.
type Client = crate::tls::Http1Client;

/// One event waiting for delivery.
struct Pending {
    /// The event's name, for the metrics.
    event: &'static str,
    /// The JSON body, signed anew at each attempt (fresh `t`).
    body: Bytes,
    /// Attempts made so far.
    attempts: u32,
    /// When the first attempt was made, for [`GIVE_UP_AFTER`].
    first: Option<Instant>,
}

/// The JSON body of a delivery (docs/events.md).
#[derive(Serialize)]
struct Body<'a> {
    /// Random, unique per event: receivers deduplicate retries with it.
    id: String,
    /// The event name.
    event: &'static str,
    /// The app's org.
    org: &'a str,
    /// The app id.
    app: &'a str,
    /// The user.
    user: &'a str,
    /// When, RFC 3339 UTC.
    at: String,
    /// The grant's state after the event; absent once the grant is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    /// The last refresh error, worded for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The events webhook: queue, signer and client.
pub struct Webhook {
    /// The receiver.
    url: http::Uri,
    /// The HMAC-SHA256 key (the secret file's bytes).
    key: hmac::Key,
    /// Sends the deliveries.
    client: Client,
    /// Events waiting, oldest first; bounded by [`QUEUE_CAPACITY`].
    queue: Mutex<VecDeque<Pending>>,
    /// Wakes the delivery task when an event is queued.
    wake: Notify,
    /// `tollgate_events_total` and the queue gauge.
    metrics: Arc<Metrics>,
    /// Event ids and jitter.
    rng: SystemRandom,
}

/// Starts the webhook when `config` has one: events of `injector` (and of consent and
/// disconnect, which announce through it) are queued, one task delivers them, and a shutdown
/// hook delivers what is left. `tls` is the upstream client configuration (webpki roots and
/// `--upstream-ca-file`).
pub fn start(
    config: &GrantHealthConfig,
    injector: &Injector,
    metrics: &Arc<Metrics>,
    (lifecycle, tasks, shutdown, tls): (
        &Arc<Lifecycle>,
        &TaskTracker,
        &CancellationToken,
        &rustls::ClientConfig,
    ),
) {
    let Some(cfg) = &config.webhook else { return };
    let hook = match Webhook::new(cfg, tls.clone(), metrics.clone()) {
        Ok(hook) => hook,
        Err(e) => {
            tracing::error!(error = %e, "events webhook not started");
            return;
        }
    };
    let queued = hook.clone();
    injector.set_events(Arc::new(move |e| queued.push(&e)) as EventSink);
    tasks.spawn(hook.clone().run(shutdown.clone()));
    lifecycle.on_shutdown("events webhook", move || hook.drain(SHUTDOWN_BUDGET));
    tracing::info!(url = %cfg.url, "grant events are delivered to the events webhook");
}

impl Webhook {
    /// A webhook for `cfg` over `tls` (the upstream client configuration, without ALPN).
    pub fn new(
        cfg: &WebhookConfig,
        tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Webhook>, String> {
        let url: http::Uri = cfg.url.parse().map_err(|e| format!("{e}"))?;
        let client = crate::tls::http1_client(tls);
        Ok(Arc::new(Webhook {
            url,
            key: hmac::Key::new(hmac::HMAC_SHA256, &cfg.secret.0),
            client,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            metrics,
            rng: SystemRandom::new(),
        }))
    }

    /// Queues `e` (never blocks); the oldest waiting event is dropped when the queue is full.
    pub fn push(&self, e: &GrantEvent) {
        let mut id = [0u8; 16];
        if self.rng.fill(&mut id).is_err() {
            tracing::error!("no randomness for an event id; event not sent");
            return;
        }
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(e.at));
        let body = Body {
            id: hex(&id),
            event: e.event.as_str(),
            org: &e.org,
            app: &e.app,
            user: &e.user,
            at: at.to_string(),
            state: e.state,
            error: e.error.as_deref(),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        let pending = Pending {
            event: e.event.as_str(),
            body: Bytes::from(body),
            attempts: 0,
            first: None,
        };
        let dropped = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = (q.len() >= QUEUE_CAPACITY).then(|| q.pop_front()).flatten();
            q.push_back(pending);
            self.gauge(q.len());
            dropped
        };
        if let Some(d) = dropped {
            self.metrics.grants.count_event(d.event, "dropped");
            tracing::warn!(
                event = d.event,
                capacity = QUEUE_CAPACITY,
                "events webhook queue full: the oldest event was dropped"
            );
        }
        self.wake.notify_one();
    }

    /// The delivery task: one event at a time, oldest first, until `shutdown` (an event being
    /// tried then goes back to the front of the queue, for the shutdown hook).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let Some(mut p) = self.pop() else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => continue,
                }
            };
            loop {
                let tried = tokio::select! {
                    () = shutdown.cancelled() => None,
                    ok = self.deliver_once(&mut p) => Some(ok),
                };
                let Some(delivered) = tried else {
                    self.requeue(p);
                    return;
                };
                if delivered || self.give_up(&p) {
                    break;
                }
                let wait = self.backoff(p.attempts);
                let slept = tokio::select! {
                    () = shutdown.cancelled() => false,
                    () = tokio::time::sleep(wait) => true,
                };
                if !slept {
                    self.requeue(p);
                    return;
                }
            }
        }
    }

    /// The shutdown hook: one attempt for each queued event, for at most `budget`.
    pub async fn drain(self: Arc<Self>, budget: Duration) {
        let all = async {
            while let Some(mut p) = self.pop() {
                if !self.deliver_once(&mut p).await {
                    self.metrics.grants.count_event(p.event, "failed");
                    tracing::warn!(event = p.event, "events webhook: undelivered at shutdown");
                }
            }
        };
        if tokio::time::timeout(budget, all).await.is_err() {
            let left = self.queue.lock().map(|q| q.len()).unwrap_or(0);
            tracing::warn!(
                left,
                "events webhook: shutdown budget spent; queued events are lost"
            );
        }
    }

    /// The oldest waiting event.
    fn pop(&self) -> Option<Pending> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let p = q.pop_front();
        self.gauge(q.len());
        p
    }

    /// Puts `p` back at the front (unless the queue filled meanwhile).
    fn requeue(&self, p: Pending) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() < QUEUE_CAPACITY {
            q.push_front(p);
        } else {
            self.metrics.grants.count_event(p.event, "dropped");
        }
        self.gauge(q.len());
    }

    fn gauge(&self, len: usize) {
        self.metrics
            .grants
            .events_queue
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Whether `p` has had its attempts (counted `failed` then).
    fn give_up(&self, p: &Pending) -> bool {
        let old = p.first.is_some_and(|f| f.elapsed() >= GIVE_UP_AFTER);
        if p.attempts >= MAX_ATTEMPTS || old {
            self.metrics.grants.count_event(p.event, "failed");
            tracing::warn!(
                event = p.event,
                attempts = p.attempts,
                "events webhook: delivery given up"
            );
            return true;
        }
        false
    }

    /// Full jitter: a random wait below `min(cap, base × 2^(attempts-1))`.
    fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        let bound = BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP);
        let mut r = [0u8; 8];
        let _ = self.rng.fill(&mut r);
        let fraction = (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
        bound.mul_f64(fraction)
    }

    /// One attempt; `true` when the receiver answered 2xx (counted `delivered`).
    async fn deliver_once(&self, p: &mut Pending) -> bool {
        p.attempts += 1;
        p.first.get_or_insert_with(Instant::now);
        match self.attempt(&p.body).await {
            Ok(()) => {
                self.metrics.grants.count_event(p.event, "delivered");
                true
            }
            Err(e) => {
                tracing::warn!(event = p.event, attempt = p.attempts, error = %e,
                    "events webhook: delivery failed");
                false
            }
        }
    }

    /// POSTs `body`, signed now.
    async fn attempt(&self, body: &Bytes) -> Result<(), String> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "tollgate-events")
            .header(SIGNATURE_HEADER, signature(&self.key, t, body))
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await;
        let response = sent
            .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", response.status()))
        }
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    format!("t={t},v1={}", hex(ctx.sign().as_ref()))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // Computed independently (Python's hmac): HMAC-SHA256("key", "1.{}").
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        assert_eq!(
            signature(&key, 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
