//! The validated policy definitions: what a policy file means once it has been checked, and
//! the types a decision names (its [`Route`] and the [`RuleRef`] of a rule). No parsing and no
//! matching here; `parse` produces these types, `compile` indexes them.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

/// One problem found in a policy file, displayed as `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File name relative to the policies directory (or the path given).
    pub file: String,
    /// 1-based line of the offending item (0 when the whole file or directory is at fault).
    pub line: usize,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Ports an allow rule applies to when it has no `ports` key.
pub const DEFAULT_ALLOW_PORTS: [u16; 2] = [80, 443];

/// Longest policy name or agent ID: they appear in log lines, metrics labels and URLs.
pub const MAX_ID_LEN: usize = 63;

/// How an allowed destination is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Dialed by the proxy itself, behind the address guard.
    Direct,
    /// Through the agent with this ID (`route = "agent:ID"`).
    Agent(Arc<str>),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

/// Where a rule was written: `file:line`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// File name relative to the policies directory.
    pub file: Arc<str>,
    /// 1-based line of the `[[policy.allow]]` / `[[deny]]` header.
    pub line: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A set of ports as inclusive ranges; a handful at most, so a linear scan is the fastest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortSet(pub(super) Box<[(u16, u16)]>);

impl PortSet {
    pub(crate) fn default_allow() -> Self {
        PortSet(DEFAULT_ALLOW_PORTS.iter().map(|&p| (p, p)).collect())
    }

    pub(crate) fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

/// A validated host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// Matches this normalized name only.
    Exact(String),
    /// `*.suffix`: matches names strictly below this normalized suffix.
    Suffix(String),
}

/// A validated `[[policy.allow]]` or `[[deny]]` rule.
#[derive(Debug)]
pub(crate) struct RuleDef {
    /// Line of the table header.
    pub line: usize,
    /// The `hosts` patterns, each once.
    pub hosts: Vec<HostPattern>,
    /// The `cidrs`, each once, IPv4-mapped ones folded to IPv4.
    pub cidrs: Vec<IpNet>,
    /// `None`: the default (80, 443 for allow rules; every port for deny rules).
    pub ports: Option<PortSet>,
    /// `private = true` (always false for deny rules).
    pub private: bool,
    /// `methods` / `read_only` / `paths` (allow rules only); `None` when it has none.
    pub limits: Option<super::limits::Limits>,
}

/// A validated `[[policy]]`.
#[derive(Debug)]
pub(crate) struct PolicyDef {
    /// Line of the `[[policy]]` header.
    pub line: usize,
    /// The unique `name`.
    pub name: Arc<str>,
    /// The optional `description`.
    pub description: Option<Arc<str>>,
    /// The `route`.
    pub route: Route,
    /// The `orgs` it applies to, each once; `None` = every organization.
    pub orgs: Option<Vec<Arc<str>>>,
    /// `mode = "report"`: what its rules would deny its orgs is allowed and logged.
    pub report: bool,
    /// Its `[[policy.allow]]` rules, in file order.
    pub allow: Vec<RuleDef>,
    /// `upstream_proxy` (default true): whether its direct routes go through the parent
    /// proxy when one is configured; `false` bypasses it.
    pub upstream_proxy: bool,
}

/// Everything one file defines (complete only when no error was reported for it).
#[derive(Debug, Default)]
pub(crate) struct FileDef {
    /// Its `[[policy]]` tables, in file order.
    pub policies: Vec<PolicyDef>,
    /// Its `[[deny]]` rules, in file order.
    pub deny: Vec<RuleDef>,
    /// Its `[[limit]]` blocks, in file order.
    pub limits: Vec<super::ratelimit::LimitDef>,
}

/// `[a-z0-9-]+`, at most [`MAX_ID_LEN`] long: policy names and agent IDs (the ID in
/// `route = "agent:ID"`, `agent enroll --id`, `agent run --id`, `--revoked-agents`).
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
