//! The stored form of audit events.

use serde::{Deserialize, Serialize};

use super::super::model::AuditEvent;
use super::FORMAT_VERSION;

/// Stored form of an [`AuditEvent`] (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRecord {
    v: u32,
    at: u64,
    seq: u64,
    org: String,
    actor: String,
    action: String,
    target: String,
    detail: serde_json::Value,
}

impl AuditRecord {
    /// The stored form of `e`.
    pub(crate) fn new(e: &AuditEvent) -> AuditRecord {
        AuditRecord {
            v: FORMAT_VERSION,
            at: e.at,
            seq: e.seq,
            org: e.org.clone(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
        }
    }

    /// The model.
    pub(crate) fn into_event(self) -> AuditEvent {
        AuditEvent {
            at: self.at,
            seq: self.seq,
            org: self.org,
            actor: self.actor,
            action: self.action,
            target: self.target,
            detail: self.detail,
        }
    }
}
