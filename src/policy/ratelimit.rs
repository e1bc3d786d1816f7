//! `[[limit]]` blocks: request rate limits written in the policy files, next to the rules
//! they bound.
//!
//! ```toml
//! [[limit]]
//! name = "github-per-user"   # [a-z0-9-]+, unique across files; named in the 429
//! key = "user"               # "org" | "user" | "app" | "host"; the key always includes the org
//! rate = "10/s"              # N/s, N/m or N/h
//! burst = 20                 # optional; default N
//! orgs = ["acme"]            # optional scope; absent = every organization
//! hosts = ["*.github.com"]   # optional scope (exact names or *.suffix); absent = every host
//! ```
//!
//! This file parses and matches them; the counters live in `limiter`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::de::DeValue;
use toml::Spanned;

use super::host::Host;
use super::model::{is_id, HostPattern, RuleRef, MAX_ID_LEN};
use super::parse::{parse_host_pattern, raw_item, Ctx};

/// What a limit counts requests per (always within one org).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The caller's organization.
    Org,
    /// The caller (org and user).
    User,
    /// The outbound application whose token is injected (requests without one are not
    /// counted by such a limit).
    App,
    /// The destination host.
    Host,
}

impl LimitKey {
    /// As written in the file and shown by `policy explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKey::Org => "org",
            LimitKey::User => "user",
            LimitKey::App => "app",
            LimitKey::Host => "host",
        }
    }
}

/// A validated `[[limit]]`.
#[derive(Clone, Debug)]
pub struct LimitDef {
    /// Where its header is (filled in by `compile`; the line alone while parsing).
    pub at: RuleRef,
    /// The unique `name`: in the `429` body, the access line and the metric.
    pub name: Arc<str>,
    /// What requests are counted per.
    pub key: LimitKey,
    /// Requests allowed per `per` on average.
    pub count: u32,
    /// The unit of the rate (1 s, 1 min or 1 h).
    pub per: Duration,
    /// Requests allowed at once after a quiet period (default `count`).
    pub burst: u32,
    /// The organizations it applies to; `None` = every one.
    pub orgs: Option<Box<[Arc<str>]>>,
    /// The hosts it applies to; `None` = every host.
    pub(crate) hosts: Option<Box<[HostPattern]>>,
}

impl LimitDef {
    /// Whether a request of a caller of `org` to `host` is counted by this limit.
    pub fn applies(&self, org: &str, host: &Host) -> bool {
        let org_ok = self
            .orgs
            .as_ref()
            .is_none_or(|orgs| orgs.iter().any(|o| **o == *org));
        org_ok
            && self.hosts.as_ref().is_none_or(|hosts| {
                let Host::Name(name) = host else {
                    return false;
                };
                hosts.iter().any(|p| match p {
                    HostPattern::Exact(n) => n == name,
                    HostPattern::Suffix(s) => name
                        .strip_suffix(s.as_str())
                        .is_some_and(|rest| rest.ends_with('.')),
                })
            })
    }

    /// The rate as written: `10/s`, with the burst.
    pub fn describe(&self) -> String {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        format!(
            "{}/{unit}, burst {}, per {}",
            self.count,
            self.burst,
            self.key.as_str()
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: Spanned<String>,
    key: Spanned<String>,
    rate: Spanned<String>,
    #[serde(default)]
    burst: Option<Spanned<i64>>,
    #[serde(default)]
    orgs: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Parses `N/s`, `N/m` or `N/h` (N from 1 to 1,000,000).
fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let bad =
        || format!("invalid rate {s:?}: expected N/s, N/m or N/h such as \"10/s\" or \"600/m\"");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let per = match unit {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || n > 1_000_000 {
        return Err(format!("invalid rate {s:?}: N must be 1 to 1000000"));
    }
    Ok((n, per))
}

/// Parses and validates one `[[limit]]` table; problems are reported in `cx`.
pub(super) fn parse_limit(cx: &mut Ctx<'_>, item: &Spanned<DeValue<'_>>) -> Option<LimitDef> {
    let (line, raw) = raw_item::<RawLimit>(cx, item)?;
    let mut ok = true;
    let mut fail = |cx: &mut Ctx<'_>, at: usize, m: String| {
        ok = false;
        cx.err_at(at, m);
    };
    let name = raw.name.get_ref();
    if !is_id(name) {
        fail(
            cx,
            raw.name.span().start,
            format!("invalid limit name {name:?}: use 1 to {MAX_ID_LEN} lowercase letters, digits and '-'"),
        );
    }
    let key = match raw.key.get_ref().as_str() {
        "org" => LimitKey::Org,
        "user" => LimitKey::User,
        "app" => LimitKey::App,
        "host" => LimitKey::Host,
        other => {
            fail(
                cx,
                raw.key.span().start,
                format!("invalid key {other:?}: expected \"org\", \"user\", \"app\" or \"host\""),
            );
            LimitKey::Org
        }
    };
    let (count, per) = match parse_rate(raw.rate.get_ref()) {
        Ok(r) => r,
        Err(m) => {
            fail(cx, raw.rate.span().start, m);
            (1, Duration::from_secs(1))
        }
    };
    let burst = match &raw.burst {
        None => count,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => {
                fail(
                    cx,
                    b.span().start,
                    format!("invalid burst {}: 1 to 1000000", b.get_ref()),
                );
                1
            }
        },
    };
    let orgs = raw.orgs.map(|list| {
        if list.get_ref().is_empty() {
            fail(cx, list.span().start, "empty `orgs` list: the limit would apply to no one (omit `orgs` for every organization)".into());
        }
        let mut v: Vec<Arc<str>> = Vec::new();
        for o in list.into_inner() {
            let o = o.into_inner();
            if !v.iter().any(|x| **x == *o) {
                v.push(o.into());
            }
        }
        v.into_boxed_slice()
    });
    let hosts = raw.hosts.map(|list| {
        if list.get_ref().is_empty() {
            fail(cx, list.span().start, "empty `hosts` list: the limit would apply to nothing (omit `hosts` for every host)".into());
        }
        let mut v = Vec::new();
        for h in list.get_ref() {
            match parse_host_pattern(h.get_ref()) {
                Ok(p) if v.contains(&p) => {}
                Ok(p) => v.push(p),
                Err(m) => fail(cx, h.span().start, m),
            }
        }
        v.into_boxed_slice()
    });
    ok.then(|| LimitDef {
        at: RuleRef {
            file: "".into(),
            line,
        },
        name: name.as_str().into(),
        key,
        count,
        per,
        burst,
        orgs,
        hosts,
    })
}
