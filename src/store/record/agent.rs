//! Agent revocations (`tollgate agent revoke`): the agent ID and the moment up to which its
//! credentials are refused. Nothing secret, so nothing sealed; stored under the agent ID in
//! the `agent_revocations` tree.

use serde::{Deserialize, Serialize};

use super::{decode_keyed, FORMAT_VERSION};
use crate::store::StoreError;

/// Every credential of `agent` issued at or before `revoked_at_ns` is refused. A credential
/// enrolled after it is accepted, so re-enrolling an agent is how it comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRevocation {
    /// The agent ID (`route = "agent:ID"`).
    pub agent: String,
    /// When, in nanoseconds since the Unix epoch: a credential's issue time is compared with
    /// it, and whole seconds would refuse an enrolment made in the same second.
    pub revoked_at_ns: u64,
}

impl AgentRevocation {
    /// Whether a credential issued at `issued_at_ns` is refused by this revocation.
    pub fn refuses(&self, issued_at_ns: u64) -> bool {
        issued_at_ns <= self.revoked_at_ns
    }
}

/// The stored form of an [`AgentRevocation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentRevocationRecord {
    v: u32,
    agent: String,
    revoked_at_ns: u64,
}

/// Name of an agent revocation in errors.
pub(crate) fn agent_revocation_name(agent: &str) -> String {
    format!("agent_revocation/{agent}")
}

impl AgentRevocationRecord {
    /// The stored form of `r`.
    pub(crate) fn new(r: &AgentRevocation) -> Self {
        AgentRevocationRecord {
            v: FORMAT_VERSION,
            agent: r.agent.clone(),
            revoked_at_ns: r.revoked_at_ns,
        }
    }

    /// Reads the record stored under `agent`.
    pub(crate) fn decode(agent: &str, bytes: &[u8]) -> Result<AgentRevocation, StoreError> {
        let rec: AgentRevocationRecord =
            decode_keyed(&agent_revocation_name(agent), bytes, |r: &Self| {
                r.agent == agent
            })?;
        Ok(AgentRevocation {
            agent: rec.agent,
            revoked_at_ns: rec.revoked_at_ns,
        })
    }
}
