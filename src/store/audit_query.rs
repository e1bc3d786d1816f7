//! The audit log as the console reads it: one org's events filtered by user, app, action and
//! time, newest first, a page at a time ([`AuditQuery`], answered by `Store::query_audit`).
//! Every backend applies the same [`AuditQuery::matches`] meaning.

use super::AuditEvent;

/// Most events one query returns, whatever `limit` asks.
pub const MAX_AUDIT_PAGE: usize = 500;
/// Most events the embedded store examines for one query (filters that match little stop
/// here rather than walk a long log).
pub const MAX_AUDIT_SCAN: usize = 100_000;

/// Which of an org's audit events to return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The org whose events are read; an admin reads its own only.
    pub org: String,
    /// Events by this user (`actor`) or about this user (`detail.user`, e.g. a revoke).
    pub user: Option<String>,
    /// Events on this app (`target`).
    pub app: Option<String>,
    /// Events of this action (`app.create`), or of a family when it ends with `.`
    /// (`app.` matches every app action).
    pub action: Option<String>,
    /// Events at or after this Unix time.
    pub since: Option<u64>,
    /// Events at or before this Unix time.
    pub until: Option<u64>,
    /// Events older than this sequence number: the next page after the last one shown.
    pub before_seq: Option<u64>,
    /// Most events returned (clamped to 1..=[`MAX_AUDIT_PAGE`]).
    pub limit: usize,
}

impl AuditQuery {
    /// The org's newest events, unfiltered.
    pub fn org(org: &str, limit: usize) -> AuditQuery {
        AuditQuery {
            org: org.to_string(),
            limit,
            ..AuditQuery::default()
        }
    }

    /// `limit` within its bounds.
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_AUDIT_PAGE)
    }

    /// The `action` filter as a SQL `LIKE` pattern (exact, or a prefix for a family).
    pub fn action_pattern(&self) -> Option<String> {
        let a = self.action.as_deref()?;
        let escaped = a
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        Some(if a.ends_with('.') {
            format!("{escaped}%")
        } else {
            escaped
        })
    }

    /// Whether `e` passes every filter (the org is the backend's key, checked too).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let user_ok = self.user.as_deref().is_none_or(|u| {
            e.actor == u || e.detail.get("user").and_then(|v| v.as_str()) == Some(u)
        });
        let action_ok = self.action.as_deref().is_none_or(|a| {
            if a.ends_with('.') {
                e.action.starts_with(a)
            } else {
                e.action == a
            }
        });
        e.org == self.org
            && user_ok
            && action_ok
            && self.app.as_deref().is_none_or(|a| e.target == a)
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at <= t)
            && self.before_seq.is_none_or(|s| e.seq < s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: &str, action: &str, target: &str, at: u64, seq: u64) -> AuditEvent {
        AuditEvent {
            at,
            seq,
            org: "acme".into(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: serde_json::json!({"user": "bob"}),
        }
    }

    #[test]
    fn filters_combine() {
        let e = event("alice", "app.create", "gh", 100, 7);
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::org("acme", 10);
            f(&mut q);
            q.matches(&e)
        };
        assert!(q(|_| {}));
        assert!(q(|q| q.user = Some("alice".into())));
        assert!(q(|q| q.user = Some("bob".into())), "the affected user");
        assert!(!q(|q| q.user = Some("carol".into())));
        assert!(q(|q| q.action = Some("app.".into())));
        assert!(!q(|q| q.action = Some("app.delete".into())));
        assert!(!q(|q| q.action = Some("app".into())), "no bare prefix");
        assert!(q(|q| q.app = Some("gh".into())));
        assert!(!q(|q| q.app = Some("gl".into())));
        assert!(q(|q| q.since = Some(100)));
        assert!(!q(|q| q.since = Some(101)));
        assert!(q(|q| q.until = Some(100)));
        assert!(!q(|q| q.until = Some(99)));
        assert!(!q(|q| q.before_seq = Some(7)));
        assert!(!q(|q| q.org = "globex".into()));
    }

    #[test]
    fn action_patterns_escape_like() {
        let mut q = AuditQuery::org("acme", 10);
        q.action = Some("app.".into());
        assert_eq!(q.action_pattern().as_deref(), Some("app.%"));
        q.action = Some("a_b%".into());
        assert_eq!(q.action_pattern().as_deref(), Some("a\\_b\\%"));
        assert_eq!(AuditQuery::org("x", 0).page_size(), 1);
        assert_eq!(AuditQuery::org("x", 10_000).page_size(), MAX_AUDIT_PAGE);
    }
}
