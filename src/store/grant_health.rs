//! Writing a grant's health ([`GrantHealth`]) without touching its tokens.
//!
//! Health changes often (a "last used" time every minute of use, a failing refresh every
//! retry) and matters only to people and metrics, so it has its own store write:
//! [`crate::store::Store::update_grant_health`] applies a [`HealthUpdate`] to the stored
//! grant in one atomic step. It does not move the grant's `version` (a refresh's
//! compare-and-swap is not disturbed by it) and publishes no change event (no cache decides
//! anything from health). A refresh failure names the version it failed on, so it is dropped
//! when a refresh elsewhere already replaced that grant. Token writes keep the later
//! `last_used_at` of the stored grant and the written one, so a refresh that read the grant
//! before a "last used" write does not undo it.

use super::model::{GrantHealth, GrantState};

/// Which stored grant a health update is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantRef {
    /// Organization of the app and the user.
    pub org: String,
    /// App id.
    pub app: String,
    /// The user the grant acts for.
    pub user: String,
    /// App incarnation the grant belongs to.
    pub incarnation: u64,
    /// App generation the grant belongs to.
    pub generation: u64,
    /// `Some(v)`: apply only while the stored grant still has version `v` (a refresh failure
    /// of that version); `None`: whatever version is stored ("last used").
    pub version: Option<u64>,
}

/// A change of a grant's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthUpdate {
    /// A request used the grant at `at` (Unix seconds); kept only if later than the stored
    /// time.
    Used {
        /// When, Unix seconds.
        at: u64,
    },
    /// A refresh failed at `at` for a reason that may pass (network, 5xx,
    /// `temporarily_unavailable`): the state becomes `refresh_failing`, `failing_since` is
    /// kept from the first failure.
    RefreshFailed {
        /// Worded for people; never a token.
        error: String,
        /// When, Unix seconds.
        at: u64,
    },
}

impl HealthUpdate {
    /// `health` after this update.
    pub fn apply(&self, health: &GrantHealth) -> GrantHealth {
        let mut h = health.clone();
        match self {
            HealthUpdate::Used { at } => {
                h.last_used_at = Some(h.last_used_at.map_or(*at, |t| t.max(*at)));
            }
            HealthUpdate::RefreshFailed { error, at } => {
                if h.state != GrantState::RefreshFailing {
                    h.failing_since = Some(*at);
                }
                h.state = GrantState::RefreshFailing;
                h.last_error = Some(error.clone());
            }
        }
        h
    }
}

/// The health a successful refresh at `at` leaves: `ok`, no error, refreshed at `at`, last
/// used kept.
pub fn refreshed(health: &GrantHealth, at: u64) -> GrantHealth {
    GrantHealth {
        state: GrantState::Ok,
        last_error: None,
        failing_since: None,
        last_refreshed_at: Some(at),
        last_used_at: health.last_used_at,
    }
}

/// The health of a grant the provider refused for good (`invalid_grant`) at `at`.
pub fn needs_consent(health: &GrantHealth, error: &str, at: u64) -> GrantHealth {
    GrantHealth {
        state: GrantState::NeedsConsent,
        last_error: Some(error.to_owned()),
        failing_since: Some(health.failing_since.unwrap_or(at)),
        last_refreshed_at: health.last_refreshed_at,
        last_used_at: health.last_used_at,
    }
}

/// The later of two optional times.
pub(crate) fn later(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_first_time_and_success_clears_them() {
        let ok = GrantHealth {
            last_used_at: Some(5),
            ..Default::default()
        };
        let fail = |at| HealthUpdate::RefreshFailed {
            error: "the provider answered 503".into(),
            at,
        };
        let once = fail(10).apply(&ok);
        assert_eq!(once.state, GrantState::RefreshFailing);
        assert_eq!(once.failing_since, Some(10));
        let twice = fail(20).apply(&once);
        assert_eq!(twice.failing_since, Some(10));
        let back = refreshed(&twice, 30);
        assert_eq!(back.state, GrantState::Ok);
        assert_eq!((back.last_error, back.failing_since), (None, None));
        assert_eq!(back.last_refreshed_at, Some(30));
        assert_eq!(back.last_used_at, Some(5));
        let used = HealthUpdate::Used { at: 3 }.apply(&ok);
        assert_eq!(
            used.last_used_at,
            Some(5),
            "an older use never moves it back"
        );
        assert_eq!(later(None, Some(2)), Some(2));
    }
}
