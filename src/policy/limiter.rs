//! The counters behind `[[limit]]` blocks: one GCRA limiter (governor) per (limit, org, key
//! value), kept in an LRU of at most [`MAX_KEYS`] entries, so memory stays bounded whatever
//! callers send; a key evicted after a quiet spell starts again with a full burst.
//!
//! The state is per process (per replica): N replicas behind a load balancer allow up to N
//! times a limit. A key includes the limit's rate and burst, so a reload that changes them
//! starts fresh counters, and counters survive reloads that do not.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lru::LruCache;

use super::compile::PolicySet;
use super::host::Host;
use super::model::RuleRef;
use super::ratelimit::{LimitDef, LimitKey};

/// Most (limit, org, key) counters kept: about 100 bytes each, so a few MB at most.
pub const MAX_KEYS: usize = 65_536;

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Who sends a request, and where: what the limits are keyed by.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The caller's organization (part of every key).
    pub org: &'a str,
    /// The caller's user.
    pub user: &'a str,
    /// The outbound application whose token is injected, if any.
    pub app: Option<&'a str>,
    /// The destination host.
    pub host: &'a Host,
}

/// A request over a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit's name: in the `429` body, the access line and the metric.
    pub limit: Arc<str>,
    /// Where the limit is written.
    pub at: RuleRef,
    /// When a request would be allowed again.
    pub retry_after: Duration,
}

impl Exceeded {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        s.max(1)
    }
}

/// The rate-limit counters of one process.
pub struct RateLimiters<C: Clock = DefaultClock> {
    /// The clock every limiter reads (a fake one in tests).
    clock: C,
    /// (limit, rate, burst, org, key value) → its limiter, least recently used evicted first.
    keys: Mutex<LruCache<String, Limiter<C>>>,
}

impl Default for RateLimiters<DefaultClock> {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default(), MAX_KEYS)
    }
}

impl<C: Clock + Clone> RateLimiters<C> {
    /// Counters reading `clock`, at most `capacity` of them (at least 1).
    pub fn with_clock(clock: C, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RateLimiters {
            clock,
            keys: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Counts one request of `who` against every limit of `set` that applies to it; the first
    /// limit it exceeds refuses it (limits checked before still count it).
    pub fn check(&self, set: &PolicySet, who: &Subject<'_>) -> Result<(), Exceeded> {
        for limit in set.limits_for(who.org, who.host) {
            let host;
            let value = match limit.key {
                LimitKey::Org => "",
                LimitKey::User => who.user,
                LimitKey::App => match who.app {
                    Some(app) => app,
                    None => continue,
                },
                LimitKey::Host => {
                    host = who.host.to_string();
                    &host
                }
            };
            self.check_one(limit, who.org, value)?;
        }
        Ok(())
    }

    fn check_one(&self, limit: &LimitDef, org: &str, value: &str) -> Result<(), Exceeded> {
        // NUL cannot occur in a name, an org from a token or a host, so keys cannot collide.
        let key = format!(
            "{}\0{}/{:?}\0{}\0{org}\0{value}",
            limit.name, limit.count, limit.per, limit.burst
        );
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let limiter = keys.get_or_insert(key, || {
            RateLimiter::direct_with_clock(quota(limit), self.clock.clone())
        });
        limiter.check().map_err(|not_until| Exceeded {
            limit: limit.name.clone(),
            at: limit.at.clone(),
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Number of counters kept (for tests and the metrics).
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no counter is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `count` per `per`, `burst` at once. Parsing bounds `count` to 1..=1,000,000 and `per` to
/// at least a second, so the period is never zero; the fallbacks are never taken.
fn quota(limit: &LimitDef) -> Quota {
    let period = limit.per / limit.count.max(1);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::policy::normalize_host;

    const LIMITS: &str = r#"
[[limit]]
name = "per-user"
key = "user"
rate = "2/s"
burst = 3
orgs = ["acme"]
hosts = ["*.github.com"]

[[limit]]
name = "per-org"
key = "org"
rate = "60/m"
burst = 1
hosts = ["slow.example"]

[[limit]]
name = "per-app"
key = "app"
rate = "1/h"
hosts = ["api.example"]
"#;

    fn set() -> PolicySet {
        PolicySet::from_sources(&[("10-l.toml".into(), LIMITS.into())]).unwrap()
    }

    fn who<'a>(org: &'a str, user: &'a str, app: Option<&'a str>, host: &'a Host) -> Subject<'a> {
        Subject {
            org,
            user,
            app,
            host,
        }
    }

    #[test]
    fn requests_beyond_the_burst_wait_for_the_rate() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiters::with_clock(clock.clone(), 100);
        let s = set();
        let gh = normalize_host("api.github.com").unwrap();
        let alice = who("acme", "alice", None, &gh);
        for _ in 0..3 {
            l.check(&s, &alice).unwrap();
        }
        let e = l.check(&s, &alice).unwrap_err();
        assert_eq!(&*e.limit, "per-user");
        assert_eq!(e.at.to_string(), "10-l.toml:2");
        assert_eq!(e.retry_after, Duration::from_millis(500));
        assert_eq!(e.retry_after_secs(), 1);
        // Per user, within the org; other orgs and hosts are not in its scope.
        l.check(&s, &who("acme", "bob", None, &gh)).unwrap();
        for _ in 0..10 {
            l.check(&s, &who("globex", "alice", None, &gh)).unwrap();
            let other = normalize_host("github.com").unwrap();
            l.check(&s, &who("acme", "alice", None, &other)).unwrap();
        }
        clock.advance(Duration::from_millis(500));
        l.check(&s, &alice).unwrap();
        assert!(l.check(&s, &alice).is_err());
    }

    #[test]
    fn org_and_app_keys() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiters::with_clock(clock.clone(), 100);
        let s = set();
        let slow = normalize_host("slow.example").unwrap();
        l.check(&s, &who("acme", "alice", None, &slow)).unwrap();
        let e = l.check(&s, &who("acme", "bob", None, &slow)).unwrap_err();
        assert_eq!((&*e.limit, e.retry_after_secs()), ("per-org", 1));
        l.check(&s, &who("globex", "bob", None, &slow)).unwrap();
        let api = normalize_host("api.example").unwrap();
        // Without an app the app limit does not count.
        for _ in 0..5 {
            l.check(&s, &who("acme", "alice", None, &api)).unwrap();
        }
        l.check(&s, &who("acme", "alice", Some("gh"), &api))
            .unwrap();
        let e = l
            .check(&s, &who("acme", "bob", Some("gh"), &api))
            .unwrap_err();
        assert_eq!((&*e.limit, e.retry_after_secs()), ("per-app", 3600));
        l.check(&s, &who("acme", "bob", Some("other"), &api))
            .unwrap();
    }

    #[test]
    fn the_counters_are_bounded() {
        let l = RateLimiters::with_clock(FakeRelativeClock::default(), 8);
        let s = set();
        let gh = normalize_host("api.github.com").unwrap();
        for i in 0..100 {
            let user = format!("user-{i}");
            l.check(&s, &who("acme", &user, None, &gh)).unwrap();
        }
        assert_eq!(l.len(), 8);
    }
}
