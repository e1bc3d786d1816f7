//! The replicas table and retention of the embedded store: the table is this process alone
//! ([`LocalReplicas`](crate::store::replicas::LocalReplicas), in memory), the change events
//! live only in memory (nothing to prune), and the audit log is pruned on a blocking thread.

use std::time::Duration;

use async_trait::async_trait;
use sled::Tree;

use super::{io, SledStore};
use crate::store::record::{audit_name, decode, AuditRecord};
use crate::store::replicas::{Replica, ReplicaStore};
use crate::store::{StoreError, StoreResult};

#[async_trait]
impl ReplicaStore for SledStore {
    async fn heartbeat_replica(
        &self,
        id: &str,
        relay: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.replicas.heartbeat(self.clock.now()?, id, relay, ttl)
    }

    async fn list_replicas(&self) -> StoreResult<Vec<Replica>> {
        Ok(self.replicas.live(self.clock.now()?))
    }

    async fn remove_replica(&self, id: &str) -> StoreResult<bool> {
        Ok(self.replicas.remove(id))
    }

    async fn prune_audit(&self, keep: Duration) -> StoreResult<usize> {
        let cutoff = self.clock.now()?.saturating_sub(keep.as_secs());
        let audit = self.audit.clone();
        let removed = tokio::task::spawn_blocking(move || prune_audit_tree(&audit, cutoff))
            .await
            .map_err(|e| StoreError::Io(format!("audit pruning: {e}")))??;
        if removed > 0 {
            self.durable().await?;
        }
        Ok(removed)
    }

    async fn prune_changes(&self, _keep: Duration) -> StoreResult<usize> {
        // Change events live in this process's bounded feed only.
        Ok(0)
    }
}

/// Removes the events stamped before `cutoff` (Unix seconds). An unreadable record is kept
/// (and counted in the log): pruning never deletes what it cannot date.
fn prune_audit_tree(audit: &Tree, cutoff: u64) -> StoreResult<usize> {
    let (mut removed, mut unreadable) = (0, 0usize);
    for item in audit.iter() {
        let (k, v) = item.map_err(io)?;
        match decode::<AuditRecord>(&audit_name(&k), &v).map(|r| r.into_event().at) {
            Ok(at) if at < cutoff => {
                audit.remove(&k).map_err(io)?;
                removed += 1;
            }
            Ok(_) => {}
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(unreadable, "audit pruning kept records it cannot read");
    }
    Ok(removed)
}
