//! Egress policies: admin-edited TOML files in `policies/`, validated strictly and compiled
//! into a [`PolicySet`] that answers "may this org reach host:port, and by which route?".
//!
//! Parsing is two-step (raw serde types with spans → validated model) so every error can be
//! reported as `FILE:LINE: message`, all at once. Matching never walks every rule: exact names
//! and `*.suffix` patterns are hashed (one probe per label boundary; see `matcher` for why this
//! replaces globset), CIDRs are indexed by prefix length. [`watch::Policies`] holds the set in
//! force and swaps it atomically when the directory changes.

mod fasthash;
mod host;
mod matcher;
mod model;
pub mod watch;

#[cfg(test)]
mod tests;

pub use host::{normalize_host, Host, HostError, MAX_LABEL_LEN, MAX_NAME_LEN};
pub use matcher::{Decision, DenyReason, PolicyInfo, PolicySet, Route, RuleKind, RuleRef};
pub use model::{is_id, PolicyError, DEFAULT_ALLOW_PORTS, MAX_ID_LEN};
/// The policy files' host-pattern and CIDR grammar, shared with the agent's allowlist.
pub(crate) use model::{parse_cidr, parse_host_pattern, HostPattern};
