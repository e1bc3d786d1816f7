//! Agent revocations in sled: one record per agent ID in their own tree, written with a
//! compare-and-swap so that two revocations of one agent never move its time backwards.

use sled::Tree;

use super::super::changes::Change;
use super::super::record::agent::{agent_revocation_name, AgentRevocationRecord};
use super::super::record::encode;
use super::{io, SledStore};
use crate::store::{AgentRevocation, StoreError, StoreResult};

/// Tree of agent revocations (agent ID → [`AgentRevocationRecord`]). Opened on use: sled
/// keeps it open after the first call, and the store's struct stays as it was.
const TREE_AGENT_REVOCATIONS: &str = "agent_revocations";

impl SledStore {
    pub(super) fn revocations(&self) -> StoreResult<Tree> {
        self.db.open_tree(TREE_AGENT_REVOCATIONS).map_err(io)
    }

    /// [`crate::store::Store::revoke_agent`].
    pub(super) async fn revoke_agent_now(&self, agent: &str) -> StoreResult<AgentRevocation> {
        let tree = self.revocations()?;
        let now = self.clock.now_nanos()?;
        let mut current = tree.get(agent.as_bytes()).map_err(io)?;
        let written = loop {
            let previous = current
                .as_ref()
                .map(|b| AgentRevocationRecord::decode(agent, b))
                .transpose()?;
            let revocation = AgentRevocation {
                agent: agent.to_string(),
                revoked_at_ns: previous.map_or(now, |p| p.revoked_at_ns.max(now)),
            };
            let bytes = encode(&AgentRevocationRecord::new(&revocation))?;
            match tree
                .compare_and_swap(agent.as_bytes(), current.clone(), Some(bytes))
                .map_err(io)?
            {
                Ok(()) => break revocation,
                // Another revocation of the same agent won: build on what it wrote.
                Err(e) => current = e.current,
            }
        };
        self.durable().await?;
        self.changes.publish(Change::AgentRevoked {
            agent: agent.to_string(),
        });
        Ok(written)
    }

    /// [`crate::store::Store::get_agent_revocation`].
    pub(super) fn agent_revocation(&self, agent: &str) -> StoreResult<Option<AgentRevocation>> {
        self.revocations()?
            .get(agent.as_bytes())
            .map_err(io)?
            .map(|b| AgentRevocationRecord::decode(agent, &b))
            .transpose()
    }

    /// [`crate::store::Store::list_agent_revocations`].
    pub(super) fn agent_revocations(&self) -> StoreResult<Vec<AgentRevocation>> {
        let mut out = Vec::new();
        for item in self.revocations()?.iter() {
            let (k, v) = item.map_err(io)?;
            let agent = std::str::from_utf8(&k).map_err(|_| StoreError::Corrupt {
                record: agent_revocation_name("<not UTF-8>"),
                reason: "key not written by this build".into(),
            })?;
            out.push(AgentRevocationRecord::decode(agent, &v)?);
        }
        Ok(out)
    }
}
