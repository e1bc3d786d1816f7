//! `Store::query_audit` in sled: the org's events walked newest first from the page's start
//! (`before_seq`), filtered, stopping at a page or after [`MAX_AUDIT_SCAN`] events.

use super::super::record::{audit_key, audit_name, audit_org_prefix, decode, AuditRecord};
use super::{io, SledStore};
use crate::store::audit_query::MAX_AUDIT_SCAN;
use crate::store::{AuditEvent, AuditQuery, StoreResult};

impl SledStore {
    /// [`crate::store::Store::query_audit`].
    pub(super) fn query_audit_now(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let prefix = audit_org_prefix(&q.org);
        let iter = match q.before_seq {
            Some(seq) => self.audit.range(prefix..audit_key(&q.org, seq)),
            None => self.audit.scan_prefix(prefix),
        };
        let mut out = Vec::new();
        for item in iter.rev().take(MAX_AUDIT_SCAN) {
            let (k, v) = item.map_err(io)?;
            let rec: AuditRecord = decode(&audit_name(&k), &v)?;
            let event = rec.into_event();
            if q.matches(&event) {
                out.push(event);
                if out.len() >= q.page_size() {
                    break;
                }
            }
        }
        Ok(out)
    }
}
