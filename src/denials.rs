//! The live deny log: the last [`CAPACITY`] requests the proxy refused (policy denials, and
//! every other refusal its access line marks `denied`), kept in memory for the admin
//! console. The proxy writes an entry where it writes the access line; the console reads a
//! copy, all of it for operators or one org's for its admins. This module knows neither: it
//! imports nothing of `proxy` or `web`, so both can depend on it.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many denied requests are kept; the oldest is dropped for each new one.
pub const CAPACITY: usize = 200;

/// One denied request, as its access line reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    /// When it was answered, Unix seconds.
    pub at: u64,
    /// The caller's org, when the caller was identified.
    pub org: Option<String>,
    /// The caller's user, when the caller was identified.
    pub user: Option<String>,
    /// The request method (`CONNECT` for tunnels).
    pub method: String,
    /// The destination host, when it could be read.
    pub host: Option<String>,
    /// The destination port.
    pub port: u16,
    /// The request path without its query, when there was one (not for `CONNECT`).
    pub path: Option<String>,
    /// The policy that decided, when one did.
    pub policy: Option<String>,
    /// The deciding rule (`file:line`), when one did.
    pub rule: Option<String>,
    /// Why: the policy's reason or the error code.
    pub reason: String,
    /// The status tollgate answered with.
    pub status: u16,
}

/// The bounded ring of the last denied requests.
#[derive(Debug, Default)]
pub struct DenyLog {
    /// Oldest first; at most [`CAPACITY`].
    ring: Mutex<VecDeque<Denial>>,
}

impl DenyLog {
    /// Keeps `d`, dropping the oldest entry when full.
    pub fn record(&self, d: Denial) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= CAPACITY {
            ring.pop_front();
        }
        ring.push_back(d);
    }

    /// The kept denials newest first: every one (`org` is `None`, for operators), or those of
    /// callers of `org` (for its admins; unidentified callers belong to no org).
    pub fn recent(&self, org: Option<&str>) -> Vec<Denial> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .filter(|d| org.is_none_or(|o| d.org.as_deref() == Some(o)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(n: usize, org: Option<&str>) -> Denial {
        Denial {
            at: n as u64,
            org: org.map(Into::into),
            user: None,
            method: "GET".into(),
            host: Some(format!("h{n}.example")),
            port: 443,
            path: None,
            policy: None,
            rule: None,
            reason: "no_matching_rule".into(),
            status: 403,
        }
    }

    #[test]
    fn keeps_the_last_capacity_newest_first() {
        let log = DenyLog::default();
        for n in 0..CAPACITY + 5 {
            log.record(denial(n, Some(if n % 2 == 0 { "acme" } else { "globex" })));
        }
        let all = log.recent(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].at, (CAPACITY + 4) as u64);
        assert_eq!(all[CAPACITY - 1].at, 5);
        let acme = log.recent(Some("acme"));
        assert_eq!(acme.len(), CAPACITY / 2);
        assert!(acme.iter().all(|d| d.org.as_deref() == Some("acme")));
        log.record(denial(999, None));
        assert_eq!(log.recent(None)[0].at, 999);
        assert!(log.recent(Some("acme")).iter().all(|d| d.at != 999));
    }
}
