//! A minimal OpenID Provider for the sign-in tests (`--login oidc`): discovery, a JWKS with
//! one ES256 key (generated with ring), an authorization endpoint that signs in whoever the
//! test names and sends the browser straight back with a code, and a token endpoint that
//! checks client authentication, the code, the redirect URI and the PKCE verifier (S256) and
//! answers with a signed ID token. [`Bend`] makes the next ID token wrong in one way, to see
//! that tollgate refuses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::provider::{json as json_resp, serve};

pub const CLIENT_ID: &str = "tollgate-rp";
pub const CLIENT_SECRET: &str = "rp-SECRET-value";
pub const KID: &str = "k1";

/// One way to make the next ID token wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bend {
    /// A correct token.
    None,
    /// Another nonce than the one tollgate sent.
    Nonce,
    /// No nonce at all.
    NoNonce,
    /// Issued to another client.
    Audience,
    /// From another issuer.
    Issuer,
    /// Expired an hour ago.
    Expired,
    /// Signed with a key that is not in the JWKS (same `kid`).
    ForeignKey,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the client secret.
    Hmac,
    /// A `kid` the JWKS does not have.
    UnknownKid,
}

struct Code {
    challenge: String,
    nonce: Option<String>,
    redirect_uri: String,
    user: String,
}

/// What the IdP knows and saw.
pub struct IdpState {
    /// Who the next `/authorize` signs in.
    pub user: String,
    /// Claims added to ID tokens (org, roles...).
    pub extra: Value,
    /// How the next ID token is bent.
    pub bend: Bend,
    /// The issuer discovery reports (`None` = the real one).
    pub discovery_issuer: Option<String>,
    codes: HashMap<String, Code>,
    counter: usize,
    pub token_calls: usize,
    pub jwks_calls: usize,
    /// The query of the last `/authorize`.
    pub last_authorize: Vec<(String, String)>,
    /// Protocol violations by the client (tests assert it stays empty).
    pub violations: Vec<String>,
}

#[derive(Clone)]
pub struct Idp {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<IdpState>>,
    pkcs8: Arc<Vec<u8>>,
    public: Arc<Vec<u8>>,
}

impl Idp {
    pub async fn start() -> Idp {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Idp {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(IdpState {
                user: "alice".into(),
                extra: json!({}),
                bend: Bend::None,
                discovery_issuer: None,
                codes: HashMap::new(),
                counter: 0,
                token_calls: 0,
                jwks_calls: 0,
                last_authorize: Vec::new(),
                violations: Vec::new(),
            })),
            pkcs8: Arc::new(pkcs8),
            public: Arc::new(public),
        };
        let server = idp.clone();
        serve(listener, move |req| {
            let idp = server.clone();
            async move { idp.handle(req).await }
        });
        idp
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut IdpState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/.well-known/openid-configuration" => {
                let iss = self
                    .with(|s| s.discovery_issuer.clone())
                    .unwrap_or(self.issuer());
                json_resp(
                    200,
                    &json!({
                        "issuer": iss,
                        "authorization_endpoint": format!("{}/authorize", self.issuer()),
                        "token_endpoint": format!("{}/token", self.issuer()),
                        "jwks_uri": format!("{}/jwks", self.issuer()),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                    })
                    .to_string(),
                )
            }
            "/jwks" => {
                self.with(|s| s.jwks_calls += 1);
                let (x, y) = self.public[1..].split_at(32);
                json_resp(
                    200,
                    &json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                        "kid": KID, "x": B64.encode(x), "y": B64.encode(y)}]})
                    .to_string(),
                )
            }
            "/authorize" => self.authorize(&req),
            "/token" => self.token(req).await,
            _ => json_resp(404, "{}"),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let q: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut s = self.state.lock().unwrap();
        s.last_authorize = q.clone();
        for (k, want) in [
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("code_challenge_method", "S256"),
        ] {
            if get(k).as_deref() != Some(want) {
                s.violations.push(format!("/authorize {k}={:?}", get(k)));
            }
        }
        if !get("scope").is_some_and(|sc| sc.split(' ').any(|x| x == "openid")) {
            s.violations
                .push("/authorize without the openid scope".into());
        }
        let (Some(redirect_uri), Some(state), Some(challenge)) =
            (get("redirect_uri"), get("state"), get("code_challenge"))
        else {
            s.violations
                .push("/authorize missing redirect_uri, state or code_challenge".into());
            return json_resp(400, "{}");
        };
        s.counter += 1;
        let code = format!("code-{}", s.counter);
        let user = s.user.clone();
        s.codes.insert(
            code.clone(),
            Code {
                challenge,
                nonce: get("nonce"),
                redirect_uri: redirect_uri.clone(),
                user,
            },
        );
        let back = format!(
            "{redirect_uri}?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("code", &code)
                .append_pair("state", &state)
                .finish()
        );
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::FOUND;
        r.headers_mut().insert("location", back.parse().unwrap());
        r
    }

    async fn token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let basic = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let mut s = self.state.lock().unwrap();
        s.token_calls += 1;
        let want = format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        if basic.as_deref() != Some(want.as_str()) {
            s.violations
                .push("/token without the client's Basic authentication".into());
            return json_resp(401, r#"{"error":"invalid_client"}"#);
        }
        let code = form.get("code").and_then(|c| s.codes.remove(c));
        let Some(code) = code else {
            return json_resp(400, r#"{"error":"invalid_grant"}"#);
        };
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let challenge = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        if challenge != code.challenge
            || form.get("redirect_uri") != Some(&code.redirect_uri)
            || form.get("grant_type").map(String::as_str) != Some("authorization_code")
        {
            s.violations
                .push("/token: PKCE, redirect URI or grant type mismatch".into());
            return json_resp(400, r#"{"error":"invalid_grant"}"#);
        }
        let id_token = self.id_token(&s, &code);
        json_resp(
            200,
            &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
                "id_token": id_token})
            .to_string(),
        )
    }

    fn id_token(&self, s: &IdpState, code: &Code) -> String {
        let now = super::oauth::now();
        let mut claims = json!({
            "iss": self.issuer(), "aud": CLIENT_ID, "sub": code.user,
            "iat": now, "exp": now + 300, "nonce": code.nonce,
        });
        for (k, v) in s.extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(KID.into());
        let mut key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        match s.bend {
            Bend::None => {}
            Bend::Nonce => claims["nonce"] = json!("another-nonce"),
            Bend::NoNonce => {
                claims.as_object_mut().unwrap().remove("nonce");
            }
            Bend::Audience => claims["aud"] = json!("another-client"),
            Bend::Issuer => claims["iss"] = json!("https://evil.example"),
            Bend::Expired => {
                claims["iat"] = json!(now - 7200);
                claims["exp"] = json!(now - 3600);
            }
            Bend::ForeignKey => {
                let rng = SystemRandom::new();
                let other =
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
                key = jsonwebtoken::EncodingKey::from_ec_der(other.as_ref());
            }
            Bend::UnknownKid => header.kid = Some("k-unknown".into()),
            Bend::AlgNone => {
                let h = B64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
                return format!("{h}.{}.", B64.encode(claims.to_string()));
            }
            Bend::Hmac => {
                let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                h.kid = Some(KID.into());
                let k = jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes());
                return jsonwebtoken::encode(&h, &claims, &k).unwrap();
            }
        }
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}
