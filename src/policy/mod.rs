//! Egress policies: admin-edited TOML files in `policies/`, validated strictly and compiled
//! into a [`PolicySet`] that answers "may this org reach host:port, and by which route?".
//!
//! Parsing is two-step (raw serde types with spans → validated model) so every error can be
//! reported as `FILE:LINE: message`, all at once. Matching never walks every rule: exact names
//! are hashed, `*.suffix` patterns are compiled with globset, CIDRs are indexed by prefix length.

mod host;
mod matcher;
mod model;
pub mod watch;

pub use host::{normalize_host, Host, HostError};
pub use matcher::{Decision, PolicySet, Route, RuleKind, RuleRef};
pub use model::PolicyError;
