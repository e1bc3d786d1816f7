//! Tunnels outlive the `CONNECT` that opened them, and with it the caller token and the
//! policy set it was decided under. This module re-applies both while a tunnel lives:
//!
//! - an intercepted tunnel's every inner request first re-checks the caller token's expiry
//!   (`407` once expired) and, when a reload applied a new policy set since the decision the
//!   tunnel holds (the [`Policies::generation`] differs), decides again: `403` when the new
//!   set denies, else the new decision (its route too) serves this and later requests
//!   ([`recheck`]);
//! - a blind tunnel carries bytes tollgate cannot see, so the only moment to act is the
//!   reload itself: [`Revocation`] subscribes to reloads and resolves when the set in force
//!   no longer allows the tunnel as it was opened, and the tunnel is then closed (its access
//!   line says `policy_revoked`). Nothing polls per byte or per tick.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::errors::ProxyError;
use super::log::RequestLog;
use super::pipeline::{self, Target};
use super::ProxyState;
use crate::identity::Caller;
use crate::policy::watch::Policies;
use crate::policy::{Decision, Host, RequestInfo, Route};

/// The access-line reason of a blind tunnel closed because a reload no longer allows it.
pub(super) const POLICY_REVOKED: &str = "policy_revoked";

/// The target an intercepted tunnel's next inner request runs under: the one `live` holds
/// while its caller token is valid and the policy set unchanged, else a new decision (stored
/// back into `live` when it allows). Records the decision in `log`.
pub(super) fn recheck(
    state: &ProxyState,
    live: &ArcSwap<Target>,
    log: &mut RequestLog,
) -> Result<Arc<Target>, ProxyError> {
    let target = live.load_full();
    state
        .verifier
        .check_expiry(&target.caller)
        .map_err(ProxyError::AuthRequired)?;
    if state.policies.generation() == target.generation {
        log.set_decision(&target.decision);
        return Ok(target);
    }
    // Denied: `decide` records it and the error is the answer; the tunnel keeps its old
    // target, so a later reload that allows again serves it again.
    let fresh = Arc::new(pipeline::decide(
        state,
        target.caller.clone(),
        target.host.clone(),
        target.port,
        log,
    )?);
    live.store(fresh.clone());
    Ok(fresh)
}

/// A blind tunnel's watch on policy reloads (see the module docs).
pub(super) struct Revocation {
    /// The live policy set, re-read on each reload.
    policies: Arc<Policies>,
    /// Wakes on every applied reload.
    reloads: watch::Receiver<u64>,
    /// Whose tunnel it is (the decision depends on the org).
    caller: Arc<Caller>,
    /// The destination as decided.
    host: Host,
    /// The destination port.
    port: u16,
    /// The route the tunnel was dialed on: a reload that routes the destination elsewhere
    /// revokes the tunnel too, since its bytes no longer go the way the policy says.
    route: Route,
    /// Whether private addresses were allowed: a reload that withdraws that revokes it (the
    /// dialed address may be one).
    allow_private: bool,
    /// The policy generation the tunnel was decided under.
    generation: u64,
    /// A WebSocket's handshake path (normalized): the connection is decided again as that
    /// `GET`. Its handshake was seen, so method and path limits alone do not revoke it.
    request_path: Option<String>,
}

impl Revocation {
    /// Follows reloads for the tunnel to `target`.
    pub(super) fn new(policies: &Arc<Policies>, target: &Target) -> Revocation {
        Revocation {
            reloads: policies.subscribe(),
            policies: policies.clone(),
            caller: target.caller.clone(),
            host: target.host.clone(),
            port: target.port,
            route: target.route.clone(),
            allow_private: target.allow_private,
            generation: target.generation,
            request_path: None,
        }
    }

    /// Follows reloads for a WebSocket opened by a `GET` of `path` to `target`.
    pub(super) fn for_request(policies: &Arc<Policies>, target: &Target, path: String) -> Self {
        Revocation {
            request_path: Some(path),
            ..Revocation::new(policies, target)
        }
    }

    /// Resolves with the new decision once a reload no longer allows the tunnel; never while
    /// every reload still does.
    pub(super) async fn revoked(mut self) -> Decision {
        // A reload between the decision and the subscription shows in the generation.
        let mut reloaded = *self.reloads.borrow_and_update() != self.generation;
        loop {
            if reloaded {
                let set = self.policies.current();
                let (org, host, port) = (&self.caller.org, &self.host, self.port);
                let decision = match &self.request_path {
                    Some(path) => {
                        let request = RequestInfo {
                            method: "GET",
                            path: Ok(path),
                        };
                        set.decide_request(org, host, port, &request)
                    }
                    None => set.decide(org, host, port),
                };
                if !self.still_allowed_by(&decision) {
                    return decision;
                }
            }
            if self.reloads.changed().await.is_err() {
                // The policies are gone (shutdown): nothing can revoke any more.
                std::future::pending::<()>().await;
            }
            reloaded = true;
        }
    }

    /// Whether `decision` allows the tunnel as it was opened.
    fn still_allowed_by(&self, decision: &Decision) -> bool {
        match decision {
            // A reload that limits methods or paths needs every request seen: a blind tunnel
            // cannot be, so it is closed (the client's next `CONNECT` is intercepted).
            Decision::Allow {
                route,
                allow_private,
                inspect,
                ..
            } => {
                *route == self.route
                    && (*allow_private || !self.allow_private)
                    && (!inspect || self.request_path.is_some())
            }
            Decision::Deny { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;
    use crate::policy::normalize_host;

    fn policy(route: &str, private: bool) -> String {
        format!(
            "[[policy]]\nname = \"p\"\nroute = {route:?}\n  [[policy.allow]]\n  \
             hosts = [\"api.example\", \"other.example\"]\n  private = {private}\n"
        )
    }

    /// A tunnel to api.example:443 opened under the set in force.
    fn watch(policies: &Arc<Policies>) -> Revocation {
        let caller = Arc::new(Caller {
            org: "acme".into(),
            user: "alice".into(),
            roles: Vec::new(),
            exp: u64::MAX,
            jti: None,
            iat: None,
        });
        let host = normalize_host("api.example").unwrap();
        let Decision::Allow {
            route,
            allow_private,
            ..
        } = policies.current().decide("acme", &host, 443)
        else {
            panic!("the first set allows the tunnel");
        };
        Revocation {
            reloads: policies.subscribe(),
            policies: policies.clone(),
            caller,
            host,
            port: 443,
            route,
            allow_private,
            generation: policies.generation(),
            request_path: None,
        }
    }

    /// A WebSocket's handshake was inspected: limits revoke it only when they refuse its
    /// `GET` of its path, not merely by existing.
    #[test]
    fn a_websocket_is_revoked_only_by_limits_that_refuse_its_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        for (case, next, revoked) in [
            ("same set", policy("direct", true), false),
            (
                "its path allowed",
                policy("direct", true) + "  paths = [\"/ws/**\"]\n",
                false,
            ),
            (
                "GET allowed",
                policy("direct", true) + "  read_only = true\n",
                false,
            ),
            (
                "its path refused",
                policy("direct", true) + "  paths = [\"/x/**\"]\n",
                true,
            ),
            (
                "GET refused",
                policy("direct", true) + "  methods = [\"POST\"]\n",
                true,
            ),
            ("rerouted", policy("agent:edge-1", true), true),
        ] {
            std::fs::write(&file, policy("direct", true)).unwrap();
            let policies = Policies::load(dir.path().to_owned());
            let w = Revocation {
                request_path: Some("/ws/chat".into()),
                ..watch(&policies)
            };
            std::fs::write(&file, &next).unwrap();
            policies.reload().unwrap();
            let got = w.revoked().now_or_never();
            assert_eq!(got.is_some(), revoked, "{case}: {got:?}");
        }
    }

    #[test]
    fn a_tunnel_is_revoked_by_a_reload_that_denies_reroutes_withdraws_private_or_limits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let reload = |p: &Policies, text: &str| {
            std::fs::write(&file, text).unwrap();
            p.reload().unwrap();
        };
        for (case, next, revoked) in [
            ("same set", policy("direct", true), false),
            ("private widened", policy("direct", true), false),
            ("rerouted", policy("agent:edge-1", true), true),
            ("private withdrawn", policy("direct", false), true),
            (
                "methods limited",
                policy("direct", true) + "  methods = [\"GET\"]\n",
                true,
            ),
            (
                "paths limited",
                policy("direct", true) + "  paths = [\"/x/**\"]\n",
                true,
            ),
            (
                "denied",
                policy("direct", true) + "[[deny]]\nhosts = [\"api.example\"]\n",
                true,
            ),
        ] {
            let first = if case == "private widened" {
                policy("direct", false)
            } else {
                policy("direct", true)
            };
            std::fs::write(&file, &first).unwrap();
            let policies = Policies::load(dir.path().to_owned());
            let w = watch(&policies);
            reload(&policies, &next);
            let got = w.revoked().now_or_never();
            assert_eq!(got.is_some(), revoked, "{case}: {got:?}");
            if let Some(d) = got {
                assert!(case != "denied" || !d.is_allowed(), "{case}");
            }
        }
    }

    #[test]
    fn a_reload_between_the_decision_and_the_subscription_is_not_missed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, policy("direct", true)).unwrap();
        let policies = Policies::load(dir.path().to_owned());
        let mut w = watch(&policies);
        std::fs::write(&file, policy("agent:edge-1", true)).unwrap();
        policies.reload().unwrap();
        // Subscribed only now: the receiver has seen the reload; only the generation tells.
        w.reloads = policies.subscribe();
        assert!(w.revoked().now_or_never().is_some());
    }
}
