//! `--login header`: the platform's login proxy names the signed-in user in a header (and
//! optionally the org and roles). Anyone can send that header, so it is believed only when
//! the TCP peer is inside `--trusted-proxies`; the peer is the `ConnectInfo<SocketAddr>` the
//! web listener attaches to every request. Values are bounded and must be printable.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::{SignedIn, Visitor};
use crate::config::login::HeaderLogin;

/// Longest user or org name accepted (from a header or a claim).
pub const MAX_NAME: usize = 256;
/// Most roles accepted.
pub const MAX_ROLES: usize = 32;

/// Who the login headers of `parts` name, if its peer may set them.
pub fn visitor(cfg: &HeaderLogin, parts: &Parts) -> Visitor {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Visitor::Anonymous;
    };
    let ip = peer.ip().to_canonical();
    if !cfg.trusted_proxies.iter().any(|net| net.contains(&ip)) {
        if parts.headers.contains_key(&cfg.user) {
            tracing::debug!(peer = %ip, "login header from a peer outside --trusted-proxies ignored");
        }
        return Visitor::Anonymous;
    }
    let Some(user) = single(&parts.headers, &cfg.user).and_then(valid_name) else {
        return Visitor::Anonymous;
    };
    let org = match &cfg.org {
        None => None,
        // Configured but missing: the proxy is not doing what it was set up for.
        Some(h) => match single(&parts.headers, h).and_then(valid_name) {
            Some(o) => Some(o.to_string()),
            None => return Visitor::Anonymous,
        },
    };
    let roles = match cfg.roles.as_ref().map(|h| single(&parts.headers, h)) {
        None | Some(None) => Vec::new(),
        Some(Some(list)) => match roles_of(list.split(',')) {
            Some(r) => r,
            None => return Visitor::Anonymous,
        },
    };
    Visitor::User(SignedIn {
        user: user.to_string(),
        org,
        roles,
    })
}

/// The one value of header `name`; two values are ambiguous and count as none.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// A user, org or role name: non-empty, at most [`MAX_NAME`] bytes, no control characters,
/// no surrounding whitespace.
pub fn valid_name(s: &str) -> Option<&str> {
    let ok =
        !s.is_empty() && s.len() <= MAX_NAME && s.trim() == s && !s.chars().any(char::is_control);
    ok.then_some(s)
}

/// Roles from a list: each trimmed and valid, empty entries skipped, at most [`MAX_ROLES`];
/// `None` when any is invalid or there are too many.
pub fn roles_of<'a>(list: impl Iterator<Item = &'a str>) -> Option<Vec<String>> {
    let mut roles = Vec::new();
    for r in list.map(str::trim).filter(|r| !r.is_empty()) {
        roles.push(valid_name(r)?.to_string());
        if roles.len() > MAX_ROLES {
            return None;
        }
    }
    Some(roles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn cfg(trusted: &[&str]) -> HeaderLogin {
        HeaderLogin {
            user: HeaderName::from_static("x-user"),
            org: None,
            roles: Some(HeaderName::from_static("x-roles")),
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder().uri("/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        req.into_parts().0
    }

    #[test]
    fn trusted_peer_only() {
        let c = cfg(&["10.0.0.0/8", "::1/128"]);
        let alice = [("x-user", "alice"), ("x-roles", "admin, ops")];
        let Visitor::User(s) = visitor(&c, &parts("10.1.2.3:5000", &alice)) else {
            panic!()
        };
        assert_eq!((s.user.as_str(), s.roles.len()), ("alice", 2));
        // IPv4-mapped IPv6 is the IPv4 peer.
        assert!(matches!(
            visitor(&c, &parts("[::ffff:10.0.0.1]:1", &alice)),
            Visitor::User(_)
        ));
        for peer in ["127.0.0.1:5000", "192.0.2.1:1", "[::2]:1"] {
            assert_eq!(
                visitor(&c, &parts(peer, &alice)),
                Visitor::Anonymous,
                "{peer}"
            );
        }
    }

    #[test]
    fn values_are_checked() {
        let c = cfg(&["127.0.0.0/8"]);
        let long = "a".repeat(MAX_NAME + 1);
        let many = vec!["r"; MAX_ROLES + 1].join(",");
        for bad in [
            &[][..],
            &[("x-user", "")][..],
            &[("x-user", " alice")][..],
            &[("x-user", "al\tice")][..],
            &[("x-user", long.as_str())][..],
            &[("x-user", "alice"), ("x-user", "bob")][..],
            &[("x-user", "alice"), ("x-roles", many.as_str())][..],
        ] {
            assert_eq!(
                visitor(&c, &parts("127.0.0.1:1", bad)),
                Visitor::Anonymous,
                "{bad:?}"
            );
        }
    }
}
