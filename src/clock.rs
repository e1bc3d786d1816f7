//! The one clock: wall-clock time in whole seconds since the Unix epoch, for expiry (tokens,
//! tickets, pending authorizations, credentials) and timestamps (store records, audit).
//!
//! Everything that needs "now" holds a [`Clock`] and reads it with [`Clock::now`]. In
//! production it is the system clock; tests hand out a [`ManualClock`]'s clock and move time
//! by setting it, so expiry is tested without sleeping. Reading fails with [`ClockError`]
//! when the host clock is before 1970: a broken clock must stop the operation, not turn into
//! a time (0 made every record look fresh forever; the end of time made everything expired).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The host clock cannot be read as a time after the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system clock is unusable: it reads a time before 1970")]
pub struct ClockError;

/// A source of the current time; cheap to clone (clones share the source).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` reads the system clock; `Some` reads a [`ManualClock`]'s seconds (tests).
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now(&self) -> Result<u64, ClockError> {
        match &self.manual {
            Some(secs) => Ok(secs.load(Ordering::SeqCst)),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .map_err(|_| ClockError),
        }
    }

    /// Now, in nanoseconds since the Unix epoch (a manual clock reads whole seconds): for
    /// "issued up to this moment" comparisons, where a second is too coarse (an agent
    /// enrolled right after a revocation must not fall in the revoked second).
    pub fn now_nanos(&self) -> Result<u64, ClockError> {
        match &self.manual {
            Some(secs) => Ok(secs.load(Ordering::SeqCst).saturating_mul(1_000_000_000)),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .map_err(|_| ClockError),
        }
    }

    /// Now as a [`SystemTime`] (whole seconds), for APIs that take one.
    pub fn now_time(&self) -> Result<SystemTime, ClockError> {
        Ok(UNIX_EPOCH + Duration::from_secs(self.now()?))
    }
}

/// A clock that moves only when told to: for tests of expiry, here and in other modules.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now` (seconds since the Unix epoch).
    pub fn new(now: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }

    /// The [`Clock`] that reads this one.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.0.clone()),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp, to the second (`2026-12-06T11:30:23Z`): how
/// times are shown in CLI output and the admin API.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_is_shared() {
        let manual = ManualClock::new(100);
        let clock = manual.clock();
        let copy = clock.clone();
        assert_eq!(clock.now(), Ok(100));
        manual.advance(5);
        assert_eq!(copy.now(), Ok(105));
        manual.set(7);
        assert_eq!(clock.now(), Ok(7));
        assert_eq!(clock.now_time(), Ok(UNIX_EPOCH + Duration::from_secs(7)));
    }

    #[test]
    fn system_clock_reads_the_present() {
        // 2020-01-01: any working host is past it.
        assert!(Clock::system().now().unwrap() > 1_577_836_800);
    }
}
