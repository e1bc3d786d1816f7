//! An in-process OAuth 2.0 provider (authorize, token, revoke endpoints) and a protected API,
//! on 127.0.0.1:0, for the integration tests (`tollgate demo` has its own, in `src/demo/`).
//!
//! The provider checks what a strict server checks: client authentication, single-use codes
//! bound to the redirect URI, PKCE S256, refresh tokens it issued. Everything it saw is kept
//! in [`ProviderState`] so tests can count calls and inspect parameters. The API accepts only
//! access tokens the provider issued and not revoked; it answers `401` with
//! `WWW-Authenticate: Bearer error="invalid_token"` otherwise, and echoes what it received.
//!
//! Beside the standard endpoints, the same listener serves a legacy, non-standard token
//! exchange for the webhook handshake (`POST /handshake/token`, `POST /handshake/refresh`):
//! an API key header instead of client authentication, JSON bodies in and out, nested
//! outputs, and the lifetime as a string. It checks the code grant as strictly as `/token`.

#![allow(dead_code)]

mod hook;
mod revoke_styles;
pub use revoke_styles::StyledRevocation;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use hook::HookKind;

/// How the token endpoint answers refresh requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshMode {
    /// Issue a new access token (and a new refresh token when `rotate_refresh`).
    Normal,
    /// `400 {"error":"invalid_grant"}`.
    InvalidGrant,
    /// `500` with a text body.
    ServerError,
    /// `401 {"error":"invalid_client"}`.
    InvalidClient,
    /// `400 {"error":"temporarily_unavailable"}`.
    Unavailable,
    /// Wait for a permit on [`Provider::release`], then answer as `Normal`.
    Hold,
}

/// A canned answer for the next code exchange. `{at}` and `{rt}` in the body are replaced
/// by freshly issued (and therefore valid) tokens.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: String,
}

/// The legacy handshake's API key header.
pub const HOOK_API_KEY_HEADER: &str = "x-api-key";

/// A code issued by `/authorize`.
#[derive(Clone, Debug)]
struct Code {
    challenge: Option<String>,
    method: Option<String>,
    redirect_uri: String,
}

/// Everything the provider knows and saw.
#[derive(Debug)]
pub struct ProviderState {
    pub client_id: String,
    pub client_secret: String,
    /// `iss` sent on the callback; `None` = the real issuer, `Some("")` = no `iss` at all.
    pub iss_override: Option<String>,
    /// `expires_in` of issued access tokens; `None` = omitted.
    pub access_ttl: Option<u64>,
    /// Refresh returns a new refresh token (and invalidates the old one).
    pub rotate_refresh: bool,
    pub refresh_mode: RefreshMode,
    /// Extra time the token endpoint takes for a refresh.
    pub refresh_delay: Duration,
    pub next_code_response: Option<Canned>,
    codes: HashMap<String, Code>,
    pub refresh_tokens: HashSet<String>,
    pub access_tokens: HashSet<String>,
    counter: u64,
    pub code_calls: usize,
    pub refresh_calls: usize,
    /// Refresh tokens presented, in order.
    pub refresh_tokens_used: Vec<String>,
    /// Tokens revoked at `/revoke`, in order.
    pub revoked: Vec<String>,
    /// Query of the last `/authorize` request.
    pub last_authorize: Vec<(String, String)>,
    /// Protocol violations the provider detected (bad PKCE, client auth, ...).
    pub violations: Vec<String>,
    /// Requests the API received.
    pub api_calls: usize,
    /// TLS handshakes completed by [`Provider::serve_api_tls`].
    pub tls_handshakes: usize,
    /// How the client authenticated at the last token request: `basic` or `post`.
    pub last_client_auth: &'static str,
    /// `X-Api-Key` the legacy handshake endpoints require.
    pub hook_api_key: String,
    /// The legacy handshake endpoints take form bodies (flat keys `code`, `verifier`,
    /// `client`, `redirect`, `renew`) instead of JSON.
    pub hook_accepts_form: bool,
    /// `ttl` in legacy handshake answers, sent as a string as such servers do; `None` = omitted.
    pub hook_ttl: Option<String>,
    /// A canned answer for the next legacy handshake call (token or refresh) that passes the
    /// API key and request checks; `{at}` and `{rt}` as in [`Canned`].
    pub next_hook_response: Option<Canned>,
    /// Calls to `/handshake/token` and `/handshake/refresh`, whatever their outcome.
    pub hook_token_calls: usize,
    pub hook_refresh_calls: usize,
    /// Headers (lowercase names) and JSON body of the last `/handshake/token` request.
    pub last_hook_token: Option<HookRequest>,
    /// Headers and JSON body of the last `/handshake/refresh` request.
    pub last_hook_refresh: Option<HookRequest>,
    /// A refresh token presented again after it was rotated out revokes every token (as
    /// providers with refresh-token reuse detection do, RFC 9700 §4.14.2).
    pub revoke_on_reuse: bool,
    /// Refresh tokens rotated out, to recognise their reuse.
    pub rotated_out: HashSet<String>,
    /// Reuses detected (each revoked everything).
    pub reuse_detected: usize,
    /// The status `/revoke` answers with (200 unless a test makes the provider refuse);
    /// a refused token is not revoked.
    pub revoke_status: u16,
    /// Requests to the non-RFC 7009 revocation endpoints (`revoke_styles.rs`), in order.
    pub styled_revocations: Vec<StyledRevocation>,
}

/// What a legacy handshake endpoint received.
#[derive(Clone, Debug)]
pub struct HookRequest {
    /// Lowercase header names with their values.
    pub headers: HashMap<String, String>,
    /// The body, when it was JSON.
    pub body: serde_json::Value,
}

impl HookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A running provider and protected API.
#[derive(Clone)]
pub struct Provider {
    /// Provider base: `http://{addr}` (issuer), `/authorize`, `/token`, `/revoke`.
    pub addr: SocketAddr,
    /// The protected API (plain HTTP).
    pub api: SocketAddr,
    pub state: Arc<Mutex<ProviderState>>,
    hold: Arc<Semaphore>,
}

impl Provider {
    /// Starts the provider and the API on 127.0.0.1:0.
    pub async fn start() -> Provider {
        let state = Arc::new(Mutex::new(ProviderState {
            client_id: "client-1".into(),
            client_secret: "sk-CLIENT-SECRET".into(),
            revoke_status: 200,
            iss_override: None,
            access_ttl: Some(3600),
            rotate_refresh: true,
            refresh_mode: RefreshMode::Normal,
            refresh_delay: Duration::ZERO,
            next_code_response: None,
            codes: HashMap::new(),
            refresh_tokens: HashSet::new(),
            access_tokens: HashSet::new(),
            counter: 0,
            code_calls: 0,
            refresh_calls: 0,
            refresh_tokens_used: Vec::new(),
            revoked: Vec::new(),
            last_authorize: Vec::new(),
            violations: Vec::new(),
            api_calls: 0,
            tls_handshakes: 0,
            last_client_auth: "",
            hook_api_key: "k-HOOK-SECRET".into(),
            hook_accepts_form: false,
            hook_ttl: Some("3600".into()),
            next_hook_response: None,
            hook_token_calls: 0,
            hook_refresh_calls: 0,
            last_hook_token: None,
            last_hook_refresh: None,
            revoke_on_reuse: false,
            rotated_out: HashSet::new(),
            reuse_detected: 0,
            styled_revocations: Vec::new(),
        }));
        let hold = Arc::new(Semaphore::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = Provider {
            addr,
            api: addr,
            state,
            hold,
        };
        let server = p.clone();
        serve(listener, move |req| {
            let p = server.clone();
            async move { p.provider(req).await }
        });
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = api_listener.local_addr().unwrap();
        let p = Provider { api, ..p };
        let server = p.clone();
        serve(api_listener, move |req| {
            let p = server.clone();
            async move { p.api(req).await }
        });
        p
    }

    /// Serves the provider's endpoints (same state) on one more listener, e.g. one bound inside
    /// a network namespace that only an agent can reach. The listener must be non-blocking.
    pub fn serve_provider_on(&self, listener: std::net::TcpListener) -> SocketAddr {
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = self.clone();
        serve(listener, move |req| {
            let p = server.clone();
            async move { p.provider(req).await }
        });
        addr
    }

    /// The issuer (`iss`) and base URL.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets one held refresh answer.
    pub fn release(&self) {
        self.hold.add_permits(1);
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut ProviderState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn refresh_calls(&self) -> usize {
        self.with(|s| s.refresh_calls)
    }

    fn issue(s: &mut ProviderState) -> (String, String) {
        s.counter += 1;
        let at = format!("AT-secret-{}", s.counter);
        let rt = format!("RT-secret-{}", s.counter);
        s.access_tokens.insert(at.clone());
        s.refresh_tokens.insert(rt.clone());
        (at, rt)
    }

    async fn provider(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/authorize" => self.authorize(&req),
            "/token" => self.token(req).await,
            "/revoke" => self.revoke(req).await,
            "/handshake/token" => self.hook(req, HookKind::Token).await,
            "/handshake/refresh" => self.hook(req, HookKind::Refresh).await,
            p if p.starts_with("/applications/") && p.ends_with("/grant") => {
                self.github_style_revoke(req).await
            }
            "/api/auth.revoke" => self.slack_style_revoke(req).await,
            _ => text(404, "not found"),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut s = self.state.lock().unwrap();
        s.last_authorize = query.clone();
        if get("response_type").as_deref() != Some("code")
            || get("client_id").as_deref() != Some(s.client_id.as_str())
        {
            s.violations
                .push("authorize: bad response_type or client_id".into());
            return text(400, "bad authorization request");
        }
        let (Some(redirect_uri), Some(state)) = (get("redirect_uri"), get("state")) else {
            s.violations
                .push("authorize: missing redirect_uri or state".into());
            return text(400, "bad authorization request");
        };
        s.counter += 1;
        let code = format!("code-{}", s.counter);
        s.codes.insert(
            code.clone(),
            Code {
                challenge: get("code_challenge"),
                method: get("code_challenge_method"),
                redirect_uri: redirect_uri.clone(),
            },
        );
        let iss = s
            .iss_override
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr));
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("code", &code)
            .append_pair("state", &state);
        if !iss.is_empty() {
            query.append_pair("iss", &iss);
        }
        let location = format!("{redirect_uri}?{}", query.finish());
        let mut r = text(302, "");
        r.headers_mut()
            .insert("location", location.parse().unwrap());
        r
    }

    async fn token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let basic = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let method = if basic.is_some() { "basic" } else { "post" };
        let (id, secret) = match basic {
            Some(pair) => {
                let (i, s) = pair.split_once(':').unwrap_or((&pair, ""));
                let dec = |x: &str| {
                    url::form_urlencoded::parse(format!("x={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(i), dec(s))
            }
            None => (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            ),
        };
        let grant_type = form.get("grant_type").cloned().unwrap_or_default();
        {
            let mut s = self.state.lock().unwrap();
            s.last_client_auth = method;
            if id != s.client_id || secret != s.client_secret {
                s.violations.push(format!("token: bad client auth {id:?}"));
                return json(401, r#"{"error":"invalid_client"}"#);
            }
        }
        match grant_type.as_str() {
            "authorization_code" => self.code_grant(&form),
            "refresh_token" => self.refresh_grant(&form).await,
            _ => json(400, r#"{"error":"unsupported_grant_type"}"#),
        }
    }

    fn code_grant(&self, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let mut s = self.state.lock().unwrap();
        s.code_calls += 1;
        let code = form.get("code").cloned().unwrap_or_default();
        let Some(issued) = s.codes.remove(&code) else {
            s.violations.push("token: unknown or reused code".into());
            return json(400, r#"{"error":"invalid_grant"}"#);
        };
        if form.get("redirect_uri") != Some(&issued.redirect_uri) {
            s.violations.push("token: redirect_uri mismatch".into());
            return json(400, r#"{"error":"invalid_grant"}"#);
        }
        if let Some(challenge) = &issued.challenge {
            let ok = issued.method.as_deref() == Some("S256")
                && form.get("code_verifier").is_some_and(|v| {
                    let d = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
                        == *challenge
                });
            if !ok {
                s.violations.push("token: PKCE verification failed".into());
                return json(
                    400,
                    r#"{"error":"invalid_grant","error_description":"PKCE"}"#,
                );
            }
        }
        let (at, rt) = Self::issue(&mut s);
        if let Some(c) = s.next_code_response.take() {
            return canned(c, &at, &rt);
        }
        let mut v = serde_json::json!({
            "access_token": at, "token_type": "Bearer", "refresh_token": rt,
            "scope": "read write",
        });
        if let Some(ttl) = s.access_ttl {
            v["expires_in"] = ttl.into();
        }
        json(200, &v.to_string())
    }

    async fn refresh_grant(&self, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let rt = form.get("refresh_token").cloned().unwrap_or_default();
        let (mode, delay) = self.with(|s| {
            s.refresh_calls += 1;
            s.refresh_tokens_used.push(rt.clone());
            (s.refresh_mode, s.refresh_delay)
        });
        if !delay.is_zero() {
            // Simulated provider latency (the scenario under test), not synchronization.
            tokio::time::sleep(delay).await;
        }
        if let Some(r) = self.refresh_by_mode(mode).await {
            return r;
        }
        let mut s = self.state.lock().unwrap();
        if !s.refresh_tokens.contains(&rt) {
            if s.revoke_on_reuse && s.rotated_out.contains(&rt) {
                s.reuse_detected += 1;
                s.refresh_tokens.clear();
                s.access_tokens.clear();
            }
            return json(400, r#"{"error":"invalid_grant"}"#);
        }
        let (at, new_rt) = Self::issue(&mut s);
        let mut v = serde_json::json!({"access_token": at, "token_type": "bearer"});
        if s.rotate_refresh {
            s.refresh_tokens.remove(&rt);
            s.rotated_out.insert(rt.clone());
            v["refresh_token"] = new_rt.into();
        } else {
            s.refresh_tokens.remove(&new_rt);
        }
        if let Some(ttl) = s.access_ttl {
            v["expires_in"] = ttl.into();
        }
        json(200, &v.to_string())
    }

    /// What `mode` answers to a refresh instead of new tokens (after waiting, for `Hold`);
    /// `None`: refresh normally. Shared by `/token` and `/handshake/refresh`.
    async fn refresh_by_mode(&self, mode: RefreshMode) -> Option<Response<Full<Bytes>>> {
        match mode {
            RefreshMode::ServerError => Some(text(500, "internal error")),
            RefreshMode::InvalidGrant => Some(json(400, r#"{"error":"invalid_grant"}"#)),
            RefreshMode::InvalidClient => Some(json(401, r#"{"error":"invalid_client"}"#)),
            RefreshMode::Unavailable => Some(json(400, r#"{"error":"temporarily_unavailable"}"#)),
            RefreshMode::Hold => {
                self.hold.acquire().await.unwrap().forget();
                None
            }
            RefreshMode::Normal => None,
        }
    }

    async fn revoke(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let token = form.get("token").cloned().unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        if s.revoke_status != 200 {
            return text(s.revoke_status, "{\"error\":\"unsupported_token_type\"}");
        }
        s.refresh_tokens.remove(&token);
        s.access_tokens.remove(&token);
        s.revoked.push(token);
        text(200, "")
    }

    /// The protected API: echoes `{"authorization","method","path","body"}`; 401
    /// `invalid_token` unless the bearer token is one the provider issued.
    pub async fn api(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let version = format!("{:?}", req.version());
        let host = req
            .headers()
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let authority = req.uri().authority().map(|a| a.to_string());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let valid = self.with(|s| {
            s.api_calls += 1;
            auth.as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| s.access_tokens.contains(t))
        });
        let echo = serde_json::json!({
            "authorization": auth, "method": method, "path": path,
            "body_len": body.len(), "version": version, "host": host, "authority": authority,
        });
        let mut r = json(if valid { 200 } else { 401 }, &echo.to_string());
        if !valid {
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"api\", error=\"invalid_token\""
                    .parse()
                    .unwrap(),
            );
        }
        r
    }

    /// Serves the API over TLS with `config` on 127.0.0.1:0: HTTP/1.1, or HTTP/2 when the
    /// config offers `h2` in ALPN and the client takes it. Completed TLS handshakes are
    /// counted in `tls_handshakes`.
    pub async fn serve_api_tls(&self, config: Arc<rustls::ServerConfig>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve_api_tls_on(listener, config)
    }

    /// As [`Provider::serve_api_tls`], on a given listener (e.g. one bound inside a network
    /// namespace that only an agent can reach).
    pub fn serve_api_tls_on(
        &self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> SocketAddr {
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let p = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let p = p.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    p.with(|s| s.tls_handshakes += 1);
                    let svc = hyper::service::service_fn(move |req| {
                        let p = p.clone();
                        async move { Ok::<_, Infallible>(p.api(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        addr
    }
}

pub fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// `c` with `{at}` and `{rt}` replaced by freshly issued tokens.
fn canned(c: Canned, at: &str, rt: &str) -> Response<Full<Bytes>> {
    let body = c.body.replace("{at}", at).replace("{rt}", rt);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(c.status).unwrap();
    if let Some(ct) = c.content_type {
        r.headers_mut().insert("content-type", ct.parse().unwrap());
    }
    r
}

fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
}

pub fn json(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = text(status, body);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// [`test_ca_and_server`] with the CA written to a file for `--upstream-ca-file`:
/// (the directory holding it, to keep alive; the file; the server config for the leaf).
pub fn test_ca_file() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<rustls::ServerConfig>,
) {
    let (ca_pem, server) = test_ca_and_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test-ca.pem");
    std::fs::write(&file, ca_pem).unwrap();
    (dir, file, server)
}

/// A test CA and a `localhost` leaf it signed: (CA PEM, server config for the leaf).
pub fn test_ca_and_server() -> (String, Arc<rustls::ServerConfig>) {
    test_ca_and_server_for(&["localhost"])
}

/// A test CA and a leaf it signed for `names` (DNS names, or IP addresses as IP SANs):
/// (CA PEM, server config for the leaf).
pub fn test_ca_and_server_for(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca.pem(), Arc::new(config))
}
