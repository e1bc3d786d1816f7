//! Agents on every replica, agent side: the agent keeps a session to every live tollgate
//! replica, so the route on each replica has sessions of its own.
//!
//! The relay tells each connection the live replicas ([`crate::relay::replicas`]: a `POST`
//! [`REPLICAS_PATH`] with the list in a header) and which replica the connection reached.
//! The agent's sessions:
//!
//! - the **bootstrap** session dials `--relay` (which may be a load-balanced name) and
//!   always runs: with an empty or unknown list it is the fallback, and a connection of it
//!   counts as the session to the replica it reached;
//! - a **direct** session per other listed replica dials the relay URL that replica
//!   advertises, and is dropped (GOAWAY, open tunnels finish) when the replica leaves the
//!   list. New replicas are dialed as soon as a list names them.
//!
//! Every session checks the relay certificate against the name in `--relay`: the replicas
//! of one deployment share the relay certificate, and the advertised address only says
//! where to connect. Direct sessions use slots from [`DIRECT_SLOT_BASE`], so the relay never
//! mistakes one for a stale bootstrap connection of the same agent process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::relay::replicas::{ReplicaAddr, ReplicaView, MAX_TOLD};

pub use crate::relay::replicas::{REPLICAS_HEADER, REPLICAS_PATH};

/// First slot number of direct sessions (bootstrap slots are `0..connections`).
pub const DIRECT_SLOT_BASE: u32 = 1 << 16;

/// Where one session's connections go.
#[derive(Debug)]
pub(super) struct Session {
    /// Host to dial.
    pub(super) host: String,
    /// Port to dial.
    pub(super) port: u16,
    /// `None` for the bootstrap session (`--relay`), else the replica dialed directly.
    pub(super) replica: Option<String>,
    /// Lists told on this session go here.
    pub(super) book: Arc<Book>,
}

impl Session {
    /// The slot number of connection `i` of this session.
    pub(super) fn slot(&self, i: u32) -> u32 {
        match self.replica {
            None => i,
            Some(_) => DIRECT_SLOT_BASE + i,
        }
    }

    /// A list arrived on connection `slot` (the `REPLICAS_HEADER` value).
    pub(super) fn told(&self, slot: u32, header: &[u8]) -> Result<(), String> {
        let view: ReplicaView =
            serde_json::from_slice(header).map_err(|e| format!("replica list: {e}"))?;
        if view.replicas.len() > MAX_TOLD {
            return Err(format!("replica list: more than {MAX_TOLD} replicas"));
        }
        let mut book = self.book.lock();
        if self.replica.is_none() {
            book.covered.insert(slot, view.this.clone());
        }
        if book.list != view.replicas {
            tracing::info!(replicas = view.replicas.len(), reached = %view.this, "replica list");
            book.list = view.replicas;
        }
        drop(book);
        self.book.changed.notify_one();
        Ok(())
    }

    /// Connection `slot` of this session ended.
    pub(super) fn ended(&self, slot: u32) {
        if self.replica.is_none() && self.book.lock().covered.remove(&slot).is_some() {
            self.book.changed.notify_one();
        }
    }
}

/// What the agent knows of the replicas.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// The lists and who the bootstrap reached.
    state: Mutex<BookState>,
    /// Wakes [`follow`] on a change.
    changed: Notify,
}

#[derive(Debug, Default)]
struct BookState {
    /// The latest list any session was told.
    list: Vec<ReplicaAddr>,
    /// Connected bootstrap slot → the replica it reached.
    covered: BTreeMap<u32, String>,
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        // Each change is a few assignments: a panic elsewhere leaves the state usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replicas to dial directly (id → relay URL): listed, and not reached by a bootstrap
    /// connection.
    fn wanted(&self) -> BTreeMap<String, String> {
        let book = self.lock();
        book.list
            .iter()
            .filter(|r| !book.covered.values().any(|c| *c == r.id))
            .map(|r| (r.id.clone(), r.relay.clone()))
            .collect()
    }
}

/// Keeps a direct session to every wanted replica until `shutdown`: `start` runs a new
/// session until its token is cancelled (the replica left the list, or shutdown).
pub(super) async fn follow(
    book: Arc<Book>,
    start: impl Fn(Arc<Session>, CancellationToken),
    shutdown: CancellationToken,
) {
    let mut running: HashMap<String, (String, CancellationToken)> = HashMap::new();
    loop {
        let wanted = book.wanted();
        running.retain(|id, (url, stop)| {
            let keep = wanted.get(id) == Some(url);
            if !keep {
                tracing::info!(replica = %id, relay = %url, "leaving a replica");
                stop.cancel();
            }
            keep
        });
        for (id, url) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (host, port) = match crate::config::agent::parse_relay_url(&url) {
                Ok((host, port, _)) => (host, port),
                Err(e) => {
                    tracing::warn!(replica = %id, error = %e, "a replica advertises an unusable relay URL");
                    continue;
                }
            };
            tracing::info!(replica = %id, relay = %url, "attaching to a replica");
            let stop = shutdown.child_token();
            let session = Session {
                host,
                port,
                replica: Some(id.clone()),
                book: book.clone(),
            };
            start(Arc::new(session), stop.clone());
            running.insert(id, (url, stop));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = book.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(this: &str, ids: &[&str]) -> Vec<u8> {
        let v = ReplicaView {
            this: this.into(),
            replicas: ids
                .iter()
                .map(|id| ReplicaAddr {
                    id: (*id).into(),
                    relay: format!("https://127.0.0.1:{}", 1000 + id.len()),
                })
                .collect(),
        };
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn direct_sessions_go_to_replicas_the_bootstrap_did_not_reach() {
        let book = Arc::new(Book::default());
        let session = |replica: Option<&str>| Session {
            host: "h".into(),
            port: 1,
            replica: replica.map(str::to_string),
            book: book.clone(),
        };
        let boot = session(None);
        assert!(book.wanted().is_empty(), "nothing known: bootstrap only");
        boot.told(0, &view("a", &["a", "bb", "ccc"])).unwrap();
        assert_eq!(book.wanted().keys().collect::<Vec<_>>(), ["bb", "ccc"]);
        // A second bootstrap connection reached another replica through the balancer.
        boot.told(1, &view("bb", &["a", "bb", "ccc"])).unwrap();
        assert_eq!(book.wanted().keys().collect::<Vec<_>>(), ["ccc"]);
        // A direct session's list replaces the list, not who the bootstrap reached.
        let direct = session(Some("ccc"));
        assert_eq!(direct.slot(0), DIRECT_SLOT_BASE);
        direct
            .told(DIRECT_SLOT_BASE, &view("ccc", &["a", "ccc"]))
            .unwrap();
        assert_eq!(book.wanted().keys().collect::<Vec<_>>(), ["ccc"]);
        boot.ended(0);
        assert_eq!(book.wanted().keys().collect::<Vec<_>>(), ["a", "ccc"]);
        assert!(boot.told(0, b"not json").is_err());
    }
}
