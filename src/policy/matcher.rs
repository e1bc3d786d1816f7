//! Compiled policy set and the decision (STUB).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::{Host, PolicyError};

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

/// Which kind of rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// An exact host name.
    ExactHost,
    /// A `*.suffix` pattern.
    SuffixHost,
    /// A CIDR (the target was an IP literal).
    Cidr,
}

/// Where a rule was written: `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The answer to "may this caller reach this destination?" (smokescreen's decide()).
#[derive(Clone, Debug)]
pub struct Decision {
    /// True when an allow rule won and no deny rule matched.
    pub allowed: bool,
    /// Short machine-friendly reason, e.g. "allowed", "deny rule", "no matching rule",
    /// "port not allowed".
    pub reason: &'static str,
    /// Name of the policy whose rule won (None for deny rules and no-match).
    pub policy: Option<Arc<str>>,
    /// The rule that decided (the winning allow rule, or the matching deny rule).
    pub rule: Option<RuleRef>,
    /// Kind of the deciding rule.
    pub rule_kind: Option<RuleKind>,
    /// The route of the winning policy (None when denied).
    pub route: Option<Route>,
    /// The address guard may let private/loopback/... addresses through: the winning rule has
    /// `private = true` or is a CIDR rule (its CIDR contains the literal target).
    pub allow_private: bool,
}

/// A validated, compiled set of policy files. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct PolicySet {}

impl PolicySet {
    /// The set that denies everything (no valid set ever loaded).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every `*.toml` file in `dir` (sorted by name). All errors of all files are
    /// returned at once; the set is built only when there are none.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        let _ = dir;
        todo!()
    }

    /// Same as `load_dir`, from (file name, contents) pairs, already in file-name order.
    pub fn from_sources(files: &[(String, String)]) -> Result<Self, Vec<PolicyError>> {
        let _ = files;
        todo!()
    }

    /// The decision for a caller of `org` reaching `host:port`.
    pub fn decide(&self, org: &str, host: &Host, port: u16) -> Decision {
        let _ = (org, host, port);
        todo!()
    }

    /// The decision restricted to the named policy (deny rules still apply first); used for
    /// an outbound application's `egress_policy`. `org` scoping applies.
    pub fn decide_in_policy(&self, policy: &str, org: &str, host: &Host, port: u16) -> Decision {
        let _ = (policy, org, host, port);
        todo!()
    }

    /// The route of the named policy, if it exists.
    pub fn policy_route(&self, policy: &str) -> Option<Route> {
        let _ = policy;
        todo!()
    }

    /// Number of policies in the set.
    pub fn policy_count(&self) -> usize {
        0
    }

    /// Number of files the set was loaded from.
    pub fn file_count(&self) -> usize {
        0
    }
}
