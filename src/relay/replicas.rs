//! Agents on every replica, relay side: this replica's row in the store's replicas table,
//! and telling connected agents which replicas are alive.
//!
//! [`heartbeat`] writes the row every [`HEARTBEAT_EVERY`] (with the relay URL this replica
//! advertises, `--relay-advertise`), reads the live list, and publishes it in the
//! [`Directory`]; [`leave`], a shutdown step (`crate::lifecycle`), deletes the row. [`push`] runs beside every authenticated
//! relay connection and sends the agent the list, at once and on every change, as an HTTP/2
//! request on the connection tollgate already drives: `POST` [`REPLICAS_PATH`] with the
//! list as JSON in the [`REPLICAS_HEADER`] header and no body. An agent that predates this
//! answers `405` to anything but `CONNECT`; the relay then stops telling it.
//!
//! The agent ([`crate::agent::replicas`]) keeps a session to every replica listed; the
//! route on each replica uses that replica's own sessions, so every replica can reach every
//! agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::replicas::{HEARTBEAT_EVERY, REPLICA_TTL};
use crate::store::Store;

/// The request path of a replica list sent to an agent.
pub const REPLICAS_PATH: &str = "/tollgate/replicas";

/// The header carrying the list (JSON, [`ReplicaView`]).
pub const REPLICAS_HEADER: &str = "tollgate-replicas";

/// Most replicas told to an agent: the header stays under 10 KiB, well inside HTTP/2 header
/// limits.
pub const MAX_TOLD: usize = 16;

/// How long an agent has to answer a list.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One replica an agent can dial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAddr {
    /// The replica's id (random per start).
    pub id: String,
    /// Its advertised relay URL, `https://host:port`.
    pub relay: String,
}

/// What an agent is told on one relay connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The replica this connection reached, so the agent knows which listed replica a
    /// connection through a load-balanced name is.
    #[serde(rename = "self")]
    pub this: String,
    /// Every live replica with a relay, by id (at most [`MAX_TOLD`]).
    pub replicas: Vec<ReplicaAddr>,
}

/// The live replica list as this replica last read it, for the relay connections.
#[derive(Debug)]
pub struct Directory {
    /// The current view; `this` is empty until the first heartbeat.
    view: watch::Sender<Arc<ReplicaView>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            view: watch::Sender::new(Arc::default()),
        }
    }
}

impl Directory {
    /// Publishes a new view (only if it differs, so agents are told changes only).
    pub fn set(&self, view: ReplicaView) {
        self.view.send_if_modified(|v| {
            if **v == view {
                return false;
            }
            *v = Arc::new(view);
            true
        });
    }

    /// The current view and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ReplicaView>> {
        self.view.subscribe()
    }

    /// The current view.
    pub fn current(&self) -> Arc<ReplicaView> {
        self.view.borrow().clone()
    }
}

/// The relay URL a replica advertises when `--relay-advertise` is not given: the address
/// the relay listener is bound to, or for a wildcard address the public URL's host with the
/// relay's port.
pub fn default_advertise(bound: SocketAddr, public_url: &str) -> String {
    let ip = bound.ip();
    if !ip.is_unspecified() {
        return format!("https://{bound}");
    }
    let host = public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}:{}", bound.port())
}

/// A new replica id: 16 random bytes in hex.
pub fn replica_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // A failing system RNG leaves zeros: the id is then only less unique, never a secret.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How often the live list is read between heartbeats: a replica that starts or stops
/// cleanly reaches every agent within about this.
pub const LIST_EVERY: Duration = Duration::from_secs(1);

/// Heartbeats this replica's row every [`HEARTBEAT_EVERY`] until `stop`, reading the live
/// list every [`LIST_EVERY`] into `directory`. The row is deleted by [`leave`], a shutdown
/// step that runs once requests drained.
pub async fn heartbeat(
    store: Arc<dyn Store>,
    id: String,
    advertise: Option<String>,
    directory: Arc<Directory>,
    stop: CancellationToken,
) {
    tracing::info!(replica = %id, relay = advertise.as_deref(), "replica starting");
    let mut tick = tokio::time::interval(LIST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            match store
                .heartbeat_replica(&id, advertise.as_deref(), REPLICA_TTL)
                .await
            {
                Ok(()) => last_beat = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "replica heartbeat failed"),
            }
        }
        match live(&*store, &id).await {
            Ok(view) => directory.set(view),
            Err(e) => tracing::warn!(error = %e, "cannot read the replica list"),
        }
    }
}

/// Deletes this replica's row (at shutdown, after [`heartbeat`] stopped), so agents and the
/// other replicas stop counting on it at once instead of when its lease ends.
pub async fn leave(store: Arc<dyn Store>, id: String) {
    match store.remove_replica(&id).await {
        Ok(_) => tracing::info!(replica = %id, "replica row deleted"),
        Err(e) => tracing::warn!(error = %e, "cannot delete this replica's row; it expires"),
    }
}

/// The live replicas with a relay, as told to agents of replica `id`.
async fn live(store: &dyn Store, id: &str) -> crate::store::StoreResult<ReplicaView> {
    let replicas = store
        .list_replicas()
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(ReplicaAddr {
                relay: r.relay?,
                id: r.id,
            })
        })
        .take(MAX_TOLD)
        .collect();
    Ok(ReplicaView {
        this: id.to_owned(),
        replicas,
    })
}

/// Tells the agent on `send` the replica list, now and on every change, until the
/// connection closes or the agent shows it does not know the request.
pub async fn push(
    mut send: SendRequest<Empty<Bytes>>,
    mut views: watch::Receiver<Arc<ReplicaView>>,
    agent: String,
) {
    loop {
        let view = views.borrow_and_update().clone();
        if !view.this.is_empty() {
            match tell(&mut send, &view).await {
                Ok(()) => {}
                Err(Some(status)) => {
                    tracing::debug!(%agent, %status, "agent does not follow replica lists");
                    return;
                }
                Err(None) => return,
            }
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

/// One list sent; `Err(Some(status))` when the agent refused it, `Err(None)` when the
/// connection failed.
async fn tell(
    send: &mut SendRequest<Empty<Bytes>>,
    view: &ReplicaView,
) -> Result<(), Option<StatusCode>> {
    let json = serde_json::to_string(view).map_err(|_| None)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(REPLICAS_PATH)
        .header(REPLICAS_HEADER, json)
        .body(Empty::new())
        .map_err(|_| None)?;
    send.ready().await.map_err(|_| None)?;
    let answer = tokio::time::timeout(PUSH_TIMEOUT, send.send_request(req))
        .await
        .map_err(|_| None)?
        .map_err(|_| None)?;
    match answer.status() {
        s if s.is_success() => Ok(()),
        s => Err(Some(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_advertised_url_is_reachable_from_elsewhere() {
        let bound: SocketAddr = "10.0.0.5:8443".parse().unwrap();
        assert_eq!(
            default_advertise(bound, "http://x"),
            "https://10.0.0.5:8443"
        );
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(
            default_advertise(any, "https://tollgate.example.com"),
            "https://tollgate.example.com:8443"
        );
    }

    #[test]
    fn a_view_is_published_only_when_it_changes() {
        let d = Directory::default();
        let mut rx = d.subscribe();
        rx.borrow_and_update();
        let view = ReplicaView {
            this: "a".into(),
            replicas: vec![ReplicaAddr {
                id: "a".into(),
                relay: "https://127.0.0.1:1".into(),
            }],
        };
        d.set(view.clone());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        d.set(view.clone());
        assert!(!rx.has_changed().unwrap());
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["self"], "a");
    }
}
