//! What an allowing decision lets a direct route connect to: the address guard's say on
//! private addresses, whether the parent proxy (`--upstream-proxy`) is used, and, for a name
//! allowed only through `cidrs` rules, the networks every address it resolves to must be in.
//! The decision makes it ([`Decision::reach`](super::Decision::reach)); the router's direct
//! dialer applies it after resolving the name once, so the addresses checked are the ones
//! dialed.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::model::RuleRef;

/// How a direct route may reach an allowed destination. The default is the strictest: no
/// private address, through the parent proxy when one is configured, any public address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reach {
    /// The address guard lets private addresses through (`private = true`, or a CIDR rule).
    pub private: bool,
    /// The winning policy has `upstream_proxy = false`: its direct routes connect without the
    /// parent proxy.
    pub bypass_parent: bool,
    /// Set when a name is allowed only through `cidrs` rules: the networks every address it
    /// resolves to must be inside, or the destination is refused.
    pub within: Option<Within>,
}

/// The networks of the `cidrs` rules that allowed a name, and the rule named in a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Within {
    /// Every network of every `cidrs` rule that could allow the name (IPv4-mapped folded).
    pub nets: Arc<[IpNet]>,
    /// The first such rule (the decision's `rule`).
    pub rule: RuleRef,
}

impl Within {
    /// Whether `ip` (IPv4-mapped IPv6 folded to IPv4) is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}
