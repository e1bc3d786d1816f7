//! The decision: "may this caller reach host:port, and by which route?", answered from the
//! compiled set's lookup tables. `[[deny]]` rules first, then the most specific allow rule of
//! a policy visible to the caller's org that allows the port and, for an HTTP request, its
//! method and path ([`RequestInfo`]). A `CONNECT` is decided without a request: the most
//! specific rule for the host and port wins, and when it limits methods or paths the decision
//! says the tunnel must be inspected (intercepted) so that each inner request is decided.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

use super::compile::AllowRule;
use super::compile::PolicySet;
use super::host::Host;
use super::index::RuleKind;
use super::model::{Route, RuleRef};
use super::path::PathError;
use super::reach::{Reach, Within};

/// What a decision knows of an HTTP request (none for a `CONNECT`).
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// The method, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The normalized path ([`normalize_path`](super::normalize_path)), or why it has none.
    pub path: Result<&'a str, PathError>,
}

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
        /// The winning rule limits methods or paths: a tunnel to the destination must be
        /// intercepted so that every request inside is decided, and a live blind tunnel is
        /// closed when a reload adds such limits.
        inspect: bool,
        /// Set when the request is allowed only because a report-mode policy of the caller's
        /// org relaxed its own rules: what they would have denied it for (logged as
        /// `would_deny`).
        would_deny: Option<DenyReason>,
        /// The winning policy's `upstream_proxy`: `false` makes a direct route bypass the
        /// parent proxy.
        upstream_proxy: bool,
        /// Set when a name is allowed only through `cidrs` rules ([`RuleKind::ResolvedCidr`]):
        /// the dialer refuses it unless every address it resolves to is inside.
        within: Option<Within>,
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
    /// Allow rules matched the host and port; the most specific of them limits the methods
    /// and the request's is not one of them (and no other matching rule allows the request).
    MethodNotAllowed,
    /// Allow rules matched the host, port and method; the most specific of them limits the
    /// paths and the request's matches none (and no other matching rule allows the request).
    PathNotAllowed,
    /// Only a rule with `paths` could allow the request, and its path cannot be decided on
    /// (an encoded `/`, a disguised dot-segment...): the request is refused as malformed.
    UndecidablePath(PathError),
    /// [`PolicySet::decide_in_policy`] was asked about a policy that does not exist.
    UnknownPolicy,
}

impl DenyReason {
    /// The reason as logged and returned in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DenyRule => "deny_rule",
            DenyReason::NoMatchingRule => "no_matching_rule",
            DenyReason::PortNotAllowed => "port_not_allowed",
            DenyReason::MethodNotAllowed => "method_not_allowed",
            DenyReason::PathNotAllowed => "path_not_allowed",
            DenyReason::UndecidablePath(_) => "undecidable_path",
            DenyReason::UnknownPolicy => "unknown_policy",
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

    /// The access line's `reason`: "allowed", or the [`DenyReason`] (also that of an
    /// allowed request a report-mode policy would deny).
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow {
                would_deny: Some(reason),
                ..
            } => reason.as_str(),
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

    /// What a report-mode policy would have denied this allowed request for, if anything.
    pub fn would_deny(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow { would_deny, .. } => *would_deny,
            Decision::Deny { .. } => None,
        }
    }

    /// Whether a tunnel to the destination must be intercepted (see `Allow::inspect`).
    pub fn inspect(&self) -> bool {
        matches!(self, Decision::Allow { inspect: true, .. })
    }

    /// How a direct route may reach the destination (the strictest [`Reach`] when denied).
    pub fn reach(&self) -> Reach {
        match self {
            Decision::Allow {
                allow_private,
                upstream_proxy,
                within,
                ..
            } => Reach {
                private: *allow_private,
                bypass_parent: !upstream_proxy,
                within: within.clone(),
            },
            Decision::Deny { .. } => Reach::default(),
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
    /// The decision for a caller of `org` reaching `host:port` (a `CONNECT`, or anything that
    /// is not one HTTP request): methods and paths are not decided, but `inspect` says whether
    /// the winning rule limits them.
    pub fn decide(&self, org: &str, host: &Host, port: u16) -> Decision {
        self.decide_among(None, org, host, port, None)
    }

    /// The decision for one HTTP request of a caller of `org` to `host:port`: allowed when an
    /// allow rule matching the host and port allows its method and path too.
    pub fn decide_request(
        &self,
        org: &str,
        host: &Host,
        port: u16,
        request: &RequestInfo<'_>,
    ) -> Decision {
        self.decide_among(None, org, host, port, Some(request))
    }

    /// The decision restricted to the named policy (deny rules still apply first); used for
    /// an outbound application's `egress_policy`. `org` scoping applies.
    pub fn decide_in_policy(&self, policy: &str, org: &str, host: &Host, port: u16) -> Decision {
        match self.by_name.get(policy) {
            Some(&index) => self.decide_among(Some(index), org, host, port, None),
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

    fn decide_among(
        &self,
        only: Option<u32>,
        org: &str,
        host: &Host,
        port: u16,
        request: Option<&RequestInfo<'_>>,
    ) -> Decision {
        if let Some(d) = self.deny_decision(host, port) {
            return d;
        }
        let mut port_refused = false;
        // The most specific rule that matched the host and port but not the request.
        let mut refused: Option<(DenyReason, RuleKind, &AllowRule)> = None;
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
            if let Some(why) = request.and_then(|r| refuses(rule, r)) {
                // The most specific rule that got furthest: one that allowed the method (so
                // `method_not_allowed` means no rule for the host allows it), and an
                // undecidable path above all, since it is malformed for every path rule.
                let further = match (refused.map(|r| r.0), why) {
                    (None, _) => true,
                    (Some(DenyReason::MethodNotAllowed), DenyReason::PathNotAllowed) => true,
                    (Some(DenyReason::UndecidablePath(_)), _) => false,
                    (_, DenyReason::UndecidablePath(_)) => true,
                    _ => false,
                };
                if further {
                    refused = Some((why, kind, rule));
                }
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
                inspect: rule.limits.is_some(),
                would_deny: None,
                upstream_proxy: policy.upstream_proxy,
                within: None,
            },
            None => {
                // A name's `cidrs` rules before report mode: a real (conditional) allow. Not
                // when a host rule for the name and port refused the method or path: that
                // rule is the admins' word on the name, which a network rule does not widen.
                let name = matches!(host, Host::Name(_));
                let resolved = match !name || self.cidr_rules.is_empty() || refused.is_some() {
                    true => None,
                    false => self.resolved_cidrs(only, org, port, request),
                };
                let relaxed = resolved.or_else(|| match only {
                    None => self.report_mode(org, refused, port_refused),
                    Some(_) => None,
                });
                relaxed.unwrap_or_else(|| match refused {
                    Some((reason, _, rule)) => Decision::Deny {
                        reason,
                        policy: Some(self.policies[rule.policy as usize].name.clone()),
                        rule: Some(rule.at.clone()),
                    },
                    None if port_refused => Decision::denied(DenyReason::PortNotAllowed),
                    None => Decision::denied(DenyReason::NoMatchingRule),
                })
            }
        }
    }

    /// Report mode: the allow decision for a request no rule allows, when a report-mode
    /// policy of `org` relaxes the rules that deny it. A method or path refused by a rule of
    /// a report-mode policy is allowed by that rule; a destination no rule allows (host or
    /// port) is allowed on the route of the first report-mode policy naming `org`, without
    /// private addresses. `[[deny]]` rules were checked before, and the address guard
    /// applies on the way out. `None`: enforce.
    fn report_mode(
        &self,
        org: &str,
        refused: Option<(DenyReason, RuleKind, &AllowRule)>,
        port_refused: bool,
    ) -> Option<Decision> {
        if self.report_orgs.is_empty() {
            return None;
        }
        match refused {
            Some((DenyReason::UndecidablePath(_), ..)) => None,
            Some((reason, kind, rule)) => {
                let policy = &self.policies[rule.policy as usize];
                policy.report.then(|| Decision::Allow {
                    policy: policy.name.clone(),
                    rule: rule.at.clone(),
                    kind,
                    route: policy.route.clone(),
                    allow_private: rule.private || kind == RuleKind::Cidr,
                    inspect: true,
                    would_deny: Some(reason),
                    upstream_proxy: policy.upstream_proxy,
                    within: None,
                })
            }
            None => {
                let policy = &self.policies[*self.report_orgs.get(org)? as usize];
                Some(Decision::Allow {
                    policy: policy.name.clone(),
                    rule: policy.defined_at.clone(),
                    kind: RuleKind::ReportMode,
                    route: policy.route.clone(),
                    allow_private: false,
                    inspect: false,
                    would_deny: Some(if port_refused {
                        DenyReason::PortNotAllowed
                    } else {
                        DenyReason::NoMatchingRule
                    }),
                    upstream_proxy: policy.upstream_proxy,
                    within: None,
                })
            }
        }
    }
}

impl PolicySet {
    /// A name no host rule matches (for the port), on a direct route, when a visible policy has `cidrs` rules
    /// for the port (and the request): allowed on the condition that every address the name
    /// resolves to is inside their networks, which the dialer checks after resolving it once
    /// (`Decision::Allow::within`). Like Squid's `dst` ACLs; the decision names the first
    /// such rule, and its policy gives the route settings. `None`: no such rule, so the name
    /// is never resolved for this.
    fn resolved_cidrs(
        &self,
        only: Option<u32>,
        org: &str,
        port: u16,
        request: Option<&RequestInfo<'_>>,
    ) -> Option<Decision> {
        let mut first: Option<(&AllowRule, &Arc<[IpNet]>)> = None;
        let mut more: Vec<IpNet> = Vec::new();
        let mut inspect = false;
        for (id, nets) in &self.cidr_rules {
            let rule = &self.allow_rules[*id as usize];
            let policy = &self.policies[rule.policy as usize];
            if only.is_some_and(|p| p != rule.policy)
                || policy.route != Route::Direct
                || !policy.visible_to(org)
                || !rule.ports.contains(port)
                || request.is_some_and(|r| refuses(rule, r).is_some())
            {
                continue;
            }
            inspect |= rule.limits.is_some();
            match first {
                None => first = Some((rule, nets)),
                Some(_) => more.extend(nets.iter().copied()),
            }
        }
        let (rule, nets) = first?;
        let nets = if more.is_empty() {
            nets.clone()
        } else {
            nets.iter().copied().chain(more).collect()
        };
        let policy = &self.policies[rule.policy as usize];
        Some(Decision::Allow {
            policy: policy.name.clone(),
            rule: rule.at.clone(),
            kind: RuleKind::ResolvedCidr,
            route: Route::Direct,
            allow_private: true,
            inspect,
            would_deny: None,
            upstream_proxy: policy.upstream_proxy,
            within: Some(Within {
                nets,
                rule: rule.at.clone(),
            }),
        })
    }
}

/// Why `rule` (which matches the host and port) does not allow `request`, if it does not.
fn refuses(rule: &AllowRule, request: &RequestInfo<'_>) -> Option<DenyReason> {
    let limits = rule.limits.as_ref()?;
    if !limits.allows_method(request.method) {
        return Some(DenyReason::MethodNotAllowed);
    }
    let paths = limits.paths.as_ref()?;
    match request.path {
        Err(e) => Some(DenyReason::UndecidablePath(e)),
        Ok(p) if !paths.matches(p) => Some(DenyReason::PathNotAllowed),
        Ok(_) => None,
    }
}
