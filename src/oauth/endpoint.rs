//! Provider endpoints (authorization, token, revocation, webhook template URLs): the one
//! parser for them ([`endpoint`]), used by app validation, `/readyz` problems and every
//! provider call, and the check that an egress policy lets an org reach one.

use std::collections::BTreeMap;

use crate::policy::{authority_port, normalize_host, Host, PolicySet};
use crate::route::guard::classify;

/// Field name → what is wrong with it: app validation reports every invalid field at once.
pub type FieldErrors = BTreeMap<String, String>;

/// An absolute `http`/`https` URL without user information → (uses TLS, host, port).
/// The one parser for provider endpoints: app validation, `/readyz` problems and provider
/// calls all read URLs through it.
pub fn endpoint(url: &str) -> Result<(bool, Host, u16), String> {
    let parsed: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let (Some(scheme), Some(auth)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(format!("{url:?} is not an absolute URL"));
    };
    if auth.as_str().contains('@') {
        return Err("must not contain user information".into());
    }
    let tls = match scheme {
        "https" => true,
        "http" => false,
        _ => return Err("must be an https URL".into()),
    };
    let host = normalize_host(auth.host()).map_err(|e| e.to_string())?;
    let port = authority_port(auth.as_str())
        .map_err(|e| format!("port {} is out of range (1-65535)", e.port))?
        .unwrap_or(if tls { 443 } else { 80 });
    Ok((tls, host, port))
}

/// Whether two endpoint URLs reach the same server: scheme, host and port (an unparsable
/// URL is the same as nothing).
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((endpoint(a), endpoint(b)), (Ok(x), Ok(y)) if x == y)
}

/// Why `policy` does not (or no longer) let `org` reach the token endpoint at `host:port`.
pub fn token_endpoint_problem(
    policies: &PolicySet,
    policy: &str,
    org: &str,
    host: &Host,
    port: u16,
) -> Option<String> {
    if policies.policy_route(policy).is_none() {
        return Some(format!("no policy named {policy:?} is loaded"));
    }
    let d = policies.decide_in_policy(policy, org, host, port);
    (!d.is_allowed()).then(|| {
        format!(
            "policy {policy:?} does not allow the token endpoint {host}:{port} for org {org:?} ({})",
            d.reason()
        )
    })
}

/// `https://`, or `http://` only for loopback and private hosts (test and in-network servers).
/// Returns the host and port when the URL is valid.
pub(crate) fn check_url(field: &str, url: &str, errs: &mut FieldErrors) -> Option<(Host, u16)> {
    if url.is_empty() {
        return None;
    }
    let (tls, host, port) = match endpoint(url) {
        Ok(e) => e,
        Err(e) => {
            errs.insert(field.into(), e);
            return None;
        }
    };
    let local = match &host {
        Host::Ip(ip) => classify(*ip).is_prohibited(),
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
    };
    if !tls && !local {
        errs.insert(
            field.into(),
            "must be https (http is accepted only for loopback and private addresses)".into(),
        );
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ports_are_checked_not_defaulted() {
        let port = |url: &str| endpoint(url).map(|(_, _, p)| p);
        assert_eq!(port("https://idp.example/token"), Ok(443));
        assert_eq!(port("http://127.0.0.1/token"), Ok(80));
        assert_eq!(port("https://idp.example:8443/token"), Ok(8443));
        assert_eq!(port("https://[::1]:65535/token"), Ok(65535));
        assert_eq!(port("https://[::1]/token"), Ok(443));
        for bad in [
            "https://idp.example:0/token",
            "https://idp.example:65536/token",
            "https://idp.example:99999/token",
            "http://[::1]:70000/token",
        ] {
            let e = port(bad).expect_err(bad);
            assert!(e.contains("port"), "{bad}: {e}");
        }
    }
}
