//! Grant events: `connected`, `disconnected`, `refresh_failed`, `needs_consent`,
//! `recovered`, announced by the replica that made the change (so never twice across
//! replicas) to an [`EventSink`]; `--events-webhook` delivers them to the operator's
//! endpoint (`events::webhook`). An event carries who and what, never a token.

use std::sync::Arc;

use serde::Serialize;

use crate::store::GrantHealth;

pub mod webhook;

/// What happened to a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A user consented (first time or again).
    Connected,
    /// The grant was removed: the user disconnected, an admin revoked it, or the app was
    /// reset or deleted.
    Disconnected,
    /// Refreshing started failing for a reason that may pass.
    RefreshFailed,
    /// The provider refused the grant for good: the user must consent again.
    NeedsConsent,
    /// A refresh succeeded after failures.
    Recovered,
}

impl EventKind {
    /// The name in the JSON body and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::RefreshFailed => "refresh_failed",
            EventKind::NeedsConsent => "needs_consent",
            EventKind::Recovered => "recovered",
        }
    }
}

/// One event, as delivered (the JSON body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantEvent {
    /// What happened.
    pub event: EventKind,
    /// The app's organization.
    pub org: String,
    /// The app id.
    pub app: String,
    /// The user whose grant it is.
    pub user: String,
    /// When, Unix seconds.
    pub at: u64,
    /// The grant's state after the event (`ok`, `refresh_failing`, `needs_consent`), absent
    /// once the grant is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// The last refresh error, worded for people, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl GrantEvent {
    /// An event for `user`'s grant of `org`/`app`, with the grant's health after it (`None`
    /// once the grant is gone).
    pub fn of(
        event: EventKind,
        org: &str,
        app: &str,
        user: &str,
        at: u64,
        health: Option<&GrantHealth>,
    ) -> GrantEvent {
        GrantEvent {
            event,
            org: org.to_owned(),
            app: app.to_owned(),
            user: user.to_owned(),
            at,
            state: health.map(|h| h.state.as_str()),
            error: health.and_then(|h| h.last_error.clone()),
        }
    }
}

/// Where events go; called on the path that made the change, so it must not block.
pub type EventSink = Arc<dyn Fn(GrantEvent) + Send + Sync>;
