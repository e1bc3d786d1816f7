//! Agents at run time, for operators: which agents are connected to this instance
//! (`GET /v1/agents`), and `tollgate agent revoke` (`POST /v1/agents/{id}/revoke`).
//!
//! A revocation is a store record (agent ID, time in nanoseconds): every credential of the
//! agent issued up to that time is refused at the relay, and the agent's connections made
//! with such a credential are closed with their tunnels. The store publishes
//! [`Change::AgentRevoked`]; [`AgentControl::follow`] reads the store's change events (and
//! the record itself, so a revocation written elsewhere applies here too) as soon as the feed
//! has one, with [`FOLLOW_EVERY`] as a backstop. The instance that took the request applies it
//! at once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::credential::{agent_id_problem, Revocations};
use super::registry::Registry;
use crate::store::{AgentRevocation, AuditEvent, Change, Changes, Seen, Store, StoreError};

/// The backstop of [`AgentControl::follow`], which otherwise wakes on each change event: a
/// revoked agent's connections are closed within this at the latest (DESIGN: 5 s).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Deployment-wide audit events read to find the agents' ones (the others are the offline
/// key operations').
const MAX_EVENTS_SCANNED: usize = 1000;

/// One agent process connected to this instance, as `GET /v1/agents` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConnectedAgent {
    /// The agent ID.
    pub id: String,
    /// The agent process's random instance ID (several processes may share an ID).
    pub instance: String,
    /// When its oldest live connection was made, Unix seconds.
    pub connected_since: u64,
}

impl Registry {
    /// Closes, now and with their tunnels, the connections of `agent` made with a credential
    /// issued at or before `revoked_at_ns`. Returns how many.
    pub fn close_revoked(&self, agent: &str, revoked_at_ns: u64) -> usize {
        let agents = self.lock();
        let mut closed = 0;
        for c in agents.get(agent).into_iter().flatten() {
            if c.issued_at_ns <= revoked_at_ns {
                c.closing.store(true, std::sync::atomic::Ordering::SeqCst);
                c.stop.cancel();
                closed += 1;
            }
        }
        closed
    }

    /// The agents connected to this instance, one entry per agent process (ID and instance)
    /// with its oldest live connection's time, by ID and instance.
    pub fn connected(&self) -> Vec<ConnectedAgent> {
        let mut out: Vec<ConnectedAgent> = Vec::new();
        for (agent, list) in self.lock().iter() {
            for c in list.iter().filter(|c| c.usable()) {
                let same = |a: &&mut ConnectedAgent| *a.id == **agent && a.instance == c.instance;
                match out.iter_mut().find(same) {
                    Some(a) => a.connected_since = a.connected_since.min(c.connected_at),
                    None => out.push(ConnectedAgent {
                        id: agent.to_string(),
                        instance: c.instance.clone(),
                        connected_since: c.connected_at,
                    }),
                }
            }
        }
        out.sort_by(|a, b| (&a.id, &a.instance).cmp(&(&b.id, &b.instance)));
        out
    }
}

/// Why a revocation was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Not an agent ID.
    #[error("{0}")]
    InvalidId(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operator's view of agents: the registry, the relay's revocations and the store.
pub struct AgentControl {
    /// Where revocations are kept (and announced to other instances).
    store: Arc<dyn Store>,
    /// What the relay's credential verifier refuses.
    revocations: Arc<Revocations>,
    /// The connections to close.
    registry: Arc<Registry>,
}

impl std::fmt::Debug for AgentControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentControl").finish_non_exhaustive()
    }
}

impl AgentControl {
    /// Revocations recorded in `store` apply to `revocations` (the relay verifier's) and
    /// `registry`; call [`AgentControl::load`] before the relay accepts agents.
    pub fn new(
        store: Arc<dyn Store>,
        revocations: Arc<Revocations>,
        registry: Arc<Registry>,
    ) -> Self {
        AgentControl {
            store,
            revocations,
            registry,
        }
    }

    /// The agents connected to this instance.
    pub fn connected(&self) -> Vec<ConnectedAgent> {
        self.registry.connected()
    }

    /// The newest deployment-wide audit events about agents (`agent.renew`,
    /// `agent.renew_refused`), newest first, at most `limit` (`GET /v1/agents/audit`).
    pub async fn events(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let events = self
            .store
            .list_audit(super::renewal::AUDIT_ORG, MAX_EVENTS_SCANNED)
            .await?;
        Ok(events
            .into_iter()
            .filter(|e| e.action.starts_with("agent."))
            .take(limit)
            .collect())
    }

    /// Applies every stored revocation (at start, and when change events were missed).
    pub async fn load(&self) -> Result<(), StoreError> {
        for r in self.store.list_agent_revocations().await? {
            self.apply(&r);
        }
        Ok(())
    }

    /// Revokes every credential of `agent` issued up to now and closes its connections.
    ///
    /// Audited as `agent.revoke` by `actor`, deployment-wide (org
    /// [`super::renewal::AUDIT_ORG`], like the relay's renewals); a failed audit write is
    /// logged, the revocation stands.
    pub async fn revoke(&self, agent: &str, actor: &str) -> Result<AgentRevocation, RevokeError> {
        if let Some(problem) = agent_id_problem(agent) {
            return Err(RevokeError::InvalidId(problem));
        }
        let r = self.store.revoke_agent(agent).await?;
        self.apply(&r);
        let event = AuditEvent::new(
            super::renewal::AUDIT_ORG,
            actor,
            "agent.revoke",
            format!("agent:{agent}"),
            serde_json::json!({ "revoked_at_ns": r.revoked_at_ns }),
        );
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(agent, error = %e, "could not audit an agent revocation");
        }
        Ok(r)
    }

    fn apply(&self, r: &AgentRevocation) {
        self.revocations.revoke(&r.agent, r.revoked_at_ns);
        let closed = self.registry.close_revoked(&r.agent, r.revoked_at_ns);
        if closed > 0 {
            tracing::warn!(agent = %r.agent, closed, "agent revoked: its connections are closed");
        }
    }

    /// Follows `changes` (subscribed before [`AgentControl::load`]) until `stop`, applying
    /// each revocation within [`FOLLOW_EVERY`].
    pub async fn follow(self: Arc<Self>, changes: Changes, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = changes.changed() => {}
                _ = tick.tick() => {}
            }
            let (mut agents, mut missed) = (Vec::new(), false);
            changes.catch_up(|seen| match seen {
                Seen::Event(e) => {
                    if let Change::AgentRevoked { agent } = &e.change {
                        agents.push(agent.clone());
                    }
                }
                Seen::Missed => missed = true,
            });
            let result = if missed {
                self.load().await
            } else {
                self.apply_stored(&agents).await
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot read agent revocations from the store");
            }
        }
    }

    async fn apply_stored(&self, agents: &[String]) -> Result<(), StoreError> {
        for agent in agents {
            if let Some(r) = self.store.get_agent_revocation(agent).await? {
                self.apply(&r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::metrics::AgentMetrics;

    #[tokio::test]
    async fn a_revocation_closes_only_connections_made_with_older_credentials() {
        let r = Registry::new(AgentMetrics::default(), Duration::from_secs(5));
        let peer = "127.0.0.1:1".parse().unwrap();
        let conn = super::super::registry::tests::agent_conn;
        let old = r.register("a", "one".into(), 0, peer, 10, conn().await);
        let new = r.register("a", "two".into(), 0, peer, 30, conn().await);
        let other = r.register("b", "three".into(), 0, peer, 10, conn().await);
        let listed = r.connected();
        let ids: Vec<(&str, &str)> = listed
            .iter()
            .map(|a| (a.id.as_str(), a.instance.as_str()))
            .collect();
        assert_eq!(ids, [("a", "one"), ("a", "two"), ("b", "three")]);
        assert_eq!(r.close_revoked("a", 20), 1);
        assert!(old.stopped().is_cancelled());
        assert!(!new.stopped().is_cancelled() && !other.stopped().is_cancelled());
        assert_eq!(r.connected().len(), 2, "a closing connection is not listed");
    }
}
