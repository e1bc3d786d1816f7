//! Egress policies: admin-edited TOML files in `policies/`, validated strictly and compiled
//! into a [`PolicySet`] that answers "may this org reach host:port, and by which route?".
//!
//! A load runs one way, each step importing only the ones before it:
//! `files` (read the directory) → `parse` (raw serde types with spans → the validated
//! `model`, so every error is reported as `FILE:LINE: message`, all at once) → `compile`
//! (the [`PolicySet`] and its `index` of lookup tables) → `decide` (the query, a
//! [`Decision`]). Matching never walks every rule: exact names and `*.suffix` patterns are
//! hashed (one probe per label boundary; see `index` for why this replaces globset), CIDRs are
//! indexed by prefix length. [`watch::Policies`] holds the set in force and swaps it
//! atomically when the directory changes. Beside the rules, files hold `[[limit]]` blocks
//! (`ratelimit`), counted by [`limiter::RateLimiters`]; a decision's [`Reach`] tells the
//! direct dialer how far it may go (private addresses, the parent proxy, `cidrs` conditions).

mod compile;
mod decide;
mod fasthash;
mod files;
mod host;
mod index;
pub mod limiter;
mod limits;
mod model;
mod parse;
mod path;
mod ratelimit;
mod reach;
pub mod watch;

#[cfg(test)]
mod tests;

pub use compile::{PolicyInfo, PolicySet};
pub use decide::{Decision, DenyReason, RequestInfo};
pub use host::{
    authority_port, normalize_host, parse_port, Host, HostError, PortError, MAX_LABEL_LEN,
    MAX_NAME_LEN,
};
pub use index::RuleKind;
pub use limits::READ_ONLY_METHODS;
/// The policy files' host-pattern and CIDR grammar, shared with the agent's allowlist.
pub(crate) use model::HostPattern;
pub use model::{is_id, PolicyError, Route, RuleRef, DEFAULT_ALLOW_PORTS, MAX_ID_LEN};
pub(crate) use parse::{parse_cidr, parse_host_pattern};
pub use path::{normalize_path, PathError};
pub use ratelimit::{LimitDef, LimitKey};
pub use reach::{Reach, Within};
