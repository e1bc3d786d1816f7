//! The decision: "may this caller reach host:port, and by which route?", answered from the
//! compiled set's lookup tables. `[[deny]]` rules first, then the most specific allow rule of
//! a policy visible to the caller's org.

use std::fmt;
use std::sync::Arc;

use super::compile::PolicySet;
use super::host::Host;
use super::index::RuleKind;
use super::model::{Route, RuleRef};

/// The answer to "may this caller reach this destination?" (smokescreen's decide()): allowed
/// through a policy's rule and route, or denied for a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An allow rule of a policy visible to the caller won, and no `[[deny]]` rule matched.
    Allow {
        /// Name of the policy whose rule won: logged, and shown by `policy explain`.
        policy: Arc<str>,
        /// The winning `[[policy.allow]]` rule, logged as `file:line`.
        rule: RuleRef,
        /// How the rule matched (exact name, suffix or CIDR), for `policy explain` and tests.
        kind: RuleKind,
        /// How the destination is reached: the winning policy's route.
        route: Route,
        /// The address guard may let private/loopback/... addresses through: the winning rule
        /// has `private = true` or is a CIDR rule (its CIDR contains the literal target).
        allow_private: bool,
    },
    /// The destination is refused.
    Deny {
        /// Why: the access line's `reason` and the error body's.
        reason: DenyReason,
        /// The policy that refused, when one did (none refuses for the reasons of today:
        /// `[[deny]]` rules belong to no policy).
        policy: Option<Arc<str>>,
        /// The rule that refused (the matching `[[deny]]` rule), when one did.
        rule: Option<RuleRef>,
    },
}

/// Why a [`Decision`] denies. A closed set of fixed codes, so the access line's `reason`
/// field stays one of a few known strings; what the code is about (the rule, the policy)
/// travels in the decision beside it. Finer rules add variants here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// A `[[deny]]` rule matched.
    DenyRule,
    /// No allow rule of a policy visible to the caller matched the host.
    NoMatchingRule,
    /// Allow rules matched the host, but none of them the port.
    PortNotAllowed,
    /// [`PolicySet::decide_in_policy`] was asked about a policy that does not exist.
    UnknownPolicy,
}

impl DenyReason {
    /// The reason as logged and returned in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DenyRule => "deny rule",
            DenyReason::NoMatchingRule => "no matching rule",
            DenyReason::PortNotAllowed => "port not allowed",
            DenyReason::UnknownPolicy => "unknown policy",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Decision::reason`] of an allowed destination.
const REASON_ALLOWED: &str = "allowed";

impl Decision {
    /// A denial that no rule made (no match, wrong port, unknown policy).
    pub(super) fn denied(reason: DenyReason) -> Self {
        Decision::Deny {
            reason,
            policy: None,
            rule: None,
        }
    }

    /// Whether the destination may be reached.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The access line's `reason`: "allowed", or the [`DenyReason`].
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => REASON_ALLOWED,
            Decision::Deny { reason, .. } => reason.as_str(),
        }
    }

    /// The policy that allowed or refused, if any.
    pub fn policy(&self) -> Option<&Arc<str>> {
        match self {
            Decision::Allow { policy, .. } => Some(policy),
            Decision::Deny { policy, .. } => policy.as_ref(),
        }
    }

    /// The rule that allowed or refused, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allow { rule, .. } => Some(rule),
            Decision::Deny { rule, .. } => rule.as_ref(),
        }
    }

    /// The route of an allowed destination.
    pub fn route(&self) -> Option<&Route> {
        match self {
            Decision::Allow { route, .. } => Some(route),
            Decision::Deny { .. } => None,
        }
    }

    /// Whether the address guard lets private addresses through (false when denied).
    pub fn allow_private(&self) -> bool {
        matches!(
            self,
            Decision::Allow {
                allow_private: true,
                ..
            }
        )
    }
}

impl PolicySet {
    /// The decision for a caller of `org` reaching `host:port`.
    pub fn decide(&self, org: &str, host: &Host, port: u16) -> Decision {
        self.decide_among(None, org, host, port)
    }

    /// The decision restricted to the named policy (deny rules still apply first); used for
    /// an outbound application's `egress_policy`. `org` scoping applies.
    pub fn decide_in_policy(&self, policy: &str, org: &str, host: &Host, port: u16) -> Decision {
        match self.by_name.get(policy) {
            Some(&index) => self.decide_among(Some(index), org, host, port),
            None => self
                .deny_decision(host, port)
                .unwrap_or_else(|| Decision::denied(DenyReason::UnknownPolicy)),
        }
    }

    /// The `[[deny]]` rule that refuses `host:port`, if any. Besides its use in the decision,
    /// this lets a dialer check the addresses a name resolved to against deny CIDRs.
    pub fn denied_by(&self, host: &Host, port: u16) -> Option<&RuleRef> {
        self.deny.find(host, |_, id| {
            let rule = &self.deny_rules[id as usize];
            rule.ports
                .as_ref()
                .is_none_or(|p| p.contains(port))
                .then_some(&rule.at)
        })
    }

    fn deny_decision(&self, host: &Host, port: u16) -> Option<Decision> {
        self.denied_by(host, port).map(|rule| Decision::Deny {
            reason: DenyReason::DenyRule,
            policy: None,
            rule: Some(rule.clone()),
        })
    }

    fn decide_among(&self, only: Option<u32>, org: &str, host: &Host, port: u16) -> Decision {
        if let Some(d) = self.deny_decision(host, port) {
            return d;
        }
        let mut port_refused = false;
        let winner = self.allow.find(host, |kind, id| {
            let rule = &self.allow_rules[id as usize];
            if only.is_some_and(|p| p != rule.policy) {
                return None;
            }
            let policy = &self.policies[rule.policy as usize];
            if !policy.visible_to(org) {
                return None;
            }
            if !rule.ports.contains(port) {
                port_refused = true;
                return None;
            }
            Some((kind, rule, policy))
        });
        match winner {
            Some((kind, rule, policy)) => Decision::Allow {
                policy: policy.name.clone(),
                rule: rule.at.clone(),
                kind,
                route: policy.route.clone(),
                allow_private: rule.private || kind == RuleKind::Cidr,
            },
            None if port_refused => Decision::denied(DenyReason::PortNotAllowed),
            None => Decision::denied(DenyReason::NoMatchingRule),
        }
    }
}
