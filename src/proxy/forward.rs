//! Absolute-form `http://` requests (`HTTP_PROXY`): the listener adapter that parses the
//! target, runs the pipeline (`super::pipeline`: identify → app → decide → exchange →
//! respond) and prepares the request for the upstream: `Host` from the target, hop-by-hop
//! headers removed, and for an outbound application's domains, TLS origination (the request
//! is pointed at `https://`, unless the app has `upstream_tls = false`). A WebSocket
//! handshake (`Upgrade: websocket`) is such a request too; `super::upgrade` carries it.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::callers::ConnPermit;
use super::errors::ProxyError;
use super::log::RequestLog;
use super::upgrade::Pending;
use super::{pipeline, ProxyBody, ProxyState};
use crate::policy::{authority_port, normalize_host, Host};

/// Answers one absolute-form request. A WebSocket handshake's pump (`super::upgrade`) holds
/// the connection's `permit` while it runs.
pub(super) async fn handle(
    state: &ProxyState,
    permit: Arc<ConnPermit>,
    mut req: Request<Incoming>,
    mut log: RequestLog,
) -> Response<ProxyBody> {
    let upgrade = Pending::take(&mut req);
    let result = forward(state, &permit, req, &mut log).await;
    match upgrade {
        Some(u) => u.respond(state, result, log, &state.tunnels, permit),
        None => pipeline::respond(result, log),
    }
}

async fn forward(
    state: &ProxyState,
    permit: &ConnPermit,
    mut req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<Incoming>, ProxyError> {
    pipeline::check_head(state, &req)?;
    let (host, port, authority) = target_of(&req)?;
    log.host = Some(host.to_string());
    log.port = port;
    log.path = Some(req.uri().path().to_owned());
    let caller = pipeline::identify(state, permit, req.headers(), log).await?;
    // The app before the decision: a plain-http request to an outbound application's domains
    // is forwarded over TLS unless the app says otherwise (the default port 80 becomes 443),
    // so the policy decides on the port actually dialed.
    let app = pipeline::app(state, &caller, &host).await?;
    let tls_port = app
        .as_ref()
        .filter(|a| a.upstream_tls)
        .map(|_| if port == 80 { 443 } else { port });
    let port = tls_port.unwrap_or(port);
    let target = pipeline::decide_request(state, caller, host, port, &mut req, log)?;
    prepare_request(&mut req, &authority)?;
    // TLS origination, on either route: through an agent, TLS runs end to end inside the
    // tunnel and tollgate verifies the certificate.
    if let Some(p) = tls_port {
        originate_tls(&mut req, &target.host, p)?;
    }
    pipeline::exchange(state, &target, app, req, log, None).await
}

/// The destination of an absolute-form request: an `http://` URI. Returns the normalized
/// host, the port (80 when none is written; `400` for 0 or above 65535) and the authority to
/// send as `Host`.
fn target_of<B>(req: &Request<B>) -> Result<(Host, u16, Authority), ProxyError> {
    let uri = req.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(auth)) => {
            if auth.as_str().contains('@') {
                return Err(ProxyError::BadRequest(
                    "user information in the request target is not allowed".into(),
                ));
            }
            let host =
                normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            let port = authority_port(auth.as_str())
                .map_err(|_| {
                    ProxyError::BadRequest(format!(
                        "invalid port in the request target {auth}: ports are 1-65535"
                    ))
                })?
                .unwrap_or(80);
            Ok((host, port, auth.clone()))
        }
        (Some("https"), Some(_)) => Err(ProxyError::BadRequest(
            "https:// targets must be requested with CONNECT (set HTTPS_PROXY)".into(),
        )),
        (Some(other), Some(_)) => Err(ProxyError::BadRequest(format!(
            "unsupported scheme {other:?}; only http:// and CONNECT are proxied"
        ))),
        _ => Err(ProxyError::BadRequest(
            "tollgate is a forward proxy: send an absolute-form request (GET http://host/path) \
             or CONNECT host:port"
                .into(),
        )),
    }
}

/// Prepares a client request for the upstream: origin of the URI kept (the client converts to
/// origin-form), `Host` set from the target (a different `Host` would let a request reach a
/// virtual host the policy never saw), hop-by-hop and proxy headers removed.
pub fn prepare_request<B>(req: &mut Request<B>, authority: &Authority) -> Result<(), ProxyError> {
    strip_hop_by_hop(req.headers_mut());
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| ProxyError::BadRequest("invalid host in request target".into()))?;
    req.headers_mut().insert(HOST, host);
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// Points the request at `https://host:port` (TLS origination): the pool then keys the
/// connection by the https authority, and hyper-rustls verifies the certificate for `host`.
/// `Host` keeps what the client asked for, minus a port the origin no longer listens on.
pub fn originate_tls<B>(req: &mut Request<B>, host: &Host, port: u16) -> Result<(), ProxyError> {
    let bad = || ProxyError::BadRequest("invalid request target".into());
    // The authority as an intercepted request to the same origin writes it (no `:443`), so
    // both share pooled connections, and HTTP/2's `:authority` equals `Host`.
    let authority = https_authority(host, port)?;
    let value = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
    *req.uri_mut() = https_uri(authority, req.uri().path_and_query())?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}

/// `host`, plus `:port` unless 443: how requests to an https origin name it.
pub fn https_authority(host: &Host, port: u16) -> Result<Authority, ProxyError> {
    let text = if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    Authority::try_from(text).map_err(|_| ProxyError::BadRequest("invalid request target".into()))
}

/// `https://{authority}{path_and_query}` (path `/` when there is none), built from parts.
pub fn https_uri(authority: Authority, path: Option<&PathAndQuery>) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target".into()))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those named by `Connection`, and the
/// proxy's own credentials, which are never forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &[]);
}

/// Headers that never cross a hop, in lower case (as `HeaderName::as_str` gives them).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`strip_hop_by_hop`], and `extra` headers too. One pass over the names finds what is
/// present (usually only `Proxy-Authorization` on a request, nothing on a response); only
/// those are removed, each by one lookup, with no allocation unless `Connection` names
/// headers of its own.
fn strip(headers: &mut HeaderMap, extra: &[&str]) {
    let mut present = 0u32;
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = HOP_BY_HOP.iter().chain(extra).position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().chain(extra).enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// Cleans an upstream response: hop-by-hop headers go, and so does any `Proxy-Status` the
/// upstream sent (clients must be able to trust that header as tollgate's own).
pub fn clean_response<B>(resp: &mut Response<B>) {
    strip(resp.headers_mut(), &["proxy-status"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Bearer t"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn originated_requests_name_the_authority_as_intercepted_ones_do() {
        let host = Host::Name("api.example".into());
        let mut req = Request::get("http://api.example/v1?x=1").body(()).unwrap();
        originate_tls(&mut req, &host, 443).unwrap();
        assert_eq!(req.uri(), "https://api.example/v1?x=1");
        assert_eq!(req.headers()[HOST], "api.example");
        let mut req = Request::get("http://api.example:8443/v1").body(()).unwrap();
        originate_tls(&mut req, &host, 8443).unwrap();
        assert_eq!(req.uri(), "https://api.example:8443/v1");
        assert_eq!(req.headers()[HOST], "api.example:8443");
    }

    #[test]
    fn upstream_proxy_status_is_not_passed_on() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("proxy-status", HeaderValue::from_static("evil; error=none"));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        clean_response(&mut r);
        assert!(!r.headers().contains_key("proxy-status"));
        assert!(r.headers().contains_key("content-type"));
    }
}
