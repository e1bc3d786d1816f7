//! A workload-identity issuer for the `[[identity.issuer]]` tests: a JWKS server on
//! 127.0.0.1 (plain http) publishing an ES256 and an EdDSA key generated here with ring and a
//! fixed RSA test key (ring cannot generate RSA keys), counting its fetches, and a signer of
//! GitHub-Actions-shaped tokens with any of the three keys.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::provider::{json as json_resp, serve};

/// A 2048-bit RSA key for tests only (PKCS#1 PEM), and its modulus (base64url).
const RSA_PEM: &str = include_str!("workload_rsa_test_key.pem");
const RSA_N: &str = "3cmHhS3vjX5SykOF1ZkggUxXI1s-NVFHH_3GZbuA4sDrUkRX2t4IjyZ0oyqMhmDFcKE9t-O-0XuXLwpxUa70hxsB1mPvve7-XjZqTun_QCvw2S9dm9Ou4uI5H6vyAHuzQnMn5Utu40AH5KPNTfpUEdygO0aK8IgEKFSdyIqA-Wi20xn-8El3nWyfLy0VAdeE00jHT-_JnupGcHn52rj4Kz0DeqC1Oamnr0whV4Eb6TZxLkZyeMajbYLmlEkuxAi0eeEnPtgFBOWDMnsAAEF_Z8vE5wP05UUID9jTf8pff1SAu4zrXEyRzRlQY5xc4HWhYkcN6h0uqyCRdEoVUhFByQ";

/// The issuer GitHub Actions tokens name (tests point its `jwks_url` at [`Jwks`]).
pub const GHA_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The audience the tests configure.
pub const AUDIENCE: &str = "https://tollgate.test";

/// The JWKS server and the private keys behind it.
#[derive(Clone)]
pub struct Jwks {
    pub addr: SocketAddr,
    /// Fetches of `/jwks` so far.
    pub calls: Arc<AtomicUsize>,
    /// Whether the `rotated` ES256 key (kid `es-2`) is published yet.
    pub rotated: Arc<AtomicBool>,
    es: Arc<Vec<u8>>,
    es_public: Arc<Vec<u8>>,
    es2: Arc<Vec<u8>>,
    es2_public: Arc<Vec<u8>>,
    ed: Arc<Vec<u8>>,
    ed_public: Arc<Vec<u8>>,
}

fn ec_key() -> (Vec<u8>, Vec<u8>) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

fn ec_jwk(kid: &str, public: &[u8]) -> Value {
    let (x, y) = public[1..].split_at(32);
    json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64.encode(x), "y": B64.encode(y)})
}

impl Jwks {
    pub async fn start() -> Jwks {
        let (es, es_public) = ec_key();
        let (es2, es2_public) = ec_key();
        let ed = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let ed_public = Ed25519KeyPair::from_pkcs8(ed.as_ref())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks = Jwks {
            addr: listener.local_addr().unwrap(),
            calls: Arc::default(),
            rotated: Arc::default(),
            es: Arc::new(es),
            es_public: Arc::new(es_public),
            es2: Arc::new(es2),
            es2_public: Arc::new(es2_public),
            ed: Arc::new(ed.as_ref().to_vec()),
            ed_public: Arc::new(ed_public),
        };
        let server = jwks.clone();
        serve(listener, move |req| {
            let s = server.clone();
            async move {
                if req.uri().path() != "/jwks" {
                    return json_resp(404, "{}");
                }
                s.calls.fetch_add(1, Ordering::SeqCst);
                json_resp(200, &s.document().to_string())
            }
        });
        jwks
    }

    /// `http://127.0.0.1:PORT/jwks`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn document(&self) -> Value {
        let mut keys = vec![
            ec_jwk("es-1", &self.es_public),
            json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "ed-1",
                "x": B64.encode(&*self.ed_public)}),
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rs-1", "n": RSA_N,
                "e": "AQAB"}),
        ];
        if self.rotated.load(Ordering::SeqCst) {
            keys.push(ec_jwk("es-2", &self.es2_public));
        }
        json!({ "keys": keys })
    }

    /// `claims` signed with the key `kid` (`es-1`, `es-2`, `ed-1`, `rs-1`; any other kid is
    /// signed with `es-1`'s key).
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let (alg, key) = match kid {
            "ed-1" => (Algorithm::EdDSA, EncodingKey::from_ed_der(&self.ed)),
            "rs-1" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
            ),
            "es-2" => (Algorithm::ES256, EncodingKey::from_ec_der(&self.es2)),
            _ => (Algorithm::ES256, EncodingKey::from_ec_der(&self.es)),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// The claims of a GitHub Actions job token (a subset of the real ones), valid for 5 minutes.
pub fn gha_claims(actor: &str, owner: &str, owner_id: &str) -> Value {
    let now = super::oauth::now();
    json!({
        "iss": GHA_ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 1, "exp": now + 300,
        "sub": format!("repo:{owner}/app:ref:refs/heads/main"), "actor": actor,
        "repository": format!("{owner}/app"), "repository_owner": owner,
        "repository_owner_id": owner_id, "ref": "refs/heads/main", "jti": "j-1",
    })
}

/// A `tollgate.toml` accepting GitHub Actions tokens of owner id `owner_id`, with the JWKS at
/// `jwks_url` fetched under the policy `jwks`.
pub fn gha_config(jwks_url: &str, owner_id: &str) -> String {
    format!(
        r#"
[[identity.issuer]]
issuer = "{GHA_ISSUER}"
jwks_url = "{jwks_url}"
egress_policy = "jwks"
audience = "{AUDIENCE}"
org_claim = "repository_owner"
user_claim = "actor"
user_prefix = "gha:"
roles = ["ci"]

  [identity.issuer.require]
  repository_owner_id = "{owner_id}"
"#
    )
}
