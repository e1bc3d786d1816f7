//! Tests of the sled store: the store contract, then sled-specific behaviour by record kind.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::store::contract;
use crate::store::model::Secret;
use crate::store::record::token_app_prefix;
use crate::store::{AppConfig, ClientAuth, Handshake};

mod apps;
mod consents;
mod disk;
mod tokens;

const T0: u64 = 1_700_000_000;

fn key_a() -> StoreKey {
    StoreKey::from_hex_text(&"a1".repeat(32)).unwrap()
}

fn key_b() -> StoreKey {
    StoreKey::from_hex_text(&"b2".repeat(32)).unwrap()
}

fn open(dir: &Path, clock: &ManualClock) -> SledStore {
    SledStore::open_with_clock(dir, key_a(), clock.clock()).unwrap()
}

fn fresh() -> (tempfile::TempDir, ManualClock, SledStore) {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(&tmp.path().join("store"), &clock);
    (tmp, clock, store)
}

fn app(org: &str, id: &str) -> App {
    let config = AppConfig {
        id: id.into(),
        name: "GitHub VISIBLE-NAME-789".into(),
        description: "Source hosting".into(),
        approval_prompt: "Allow the runner to act for you on GitHub?".into(),
        authorize_url: "https://github.com/login/oauth/authorize".into(),
        token_url: Some("https://github.com/login/oauth/access_token".into()),
        client_id: "Iv1.abc".into(),
        client_secret: Some(Secret::new("sk-PLAINTEXT-123")),
        scopes: vec!["repo".into(), "read:user".into()],
        access_token_ttl: Some(3600),
        egress_policy: "public-saas".into(),
        domains: vec!["api.github.com".into()],
        client_auth: ClientAuth::Post,
        authorize_params: BTreeMap::from([("prompt".into(), "consent".into())]),
        issuer: Some("https://github.com".into()),
        handshake: Handshake::Webhook,
        webhook: Some(
            serde_json::from_value(serde_json::json!({
                "token": {"headers": {"X-Api-Key": "hook-PLAINTEXT-000"}}
            }))
            .unwrap(),
        ),
        ..Default::default()
    };
    App {
        // Set by the store on create; these values must be ignored.
        enabled: false,
        generation: 99,
        incarnation: 99,
        created_at: 1,
        updated_at: 1,
        ..App::new(org, config)
    }
}

fn token(a: &App, user: &str, access: &str) -> TokenSet {
    TokenSet {
        org: a.org.clone(),
        app: a.id.clone(),
        user: user.into(),
        generation: a.generation,
        // What the store sets on a first consent.
        version: 1,
        access_token: Secret::new(access),
        refresh_token: Some(Secret::new(format!("rt-{access}"))),
        token_type: Some("bearer".into()),
        scopes: vec!["repo".into()],
        expires_at: Some(T0 + 3600),
        obtained_at: T0,
    }
}

fn ticket(a: &App, user: &str, expires_at: u64) -> ConsentTicket {
    ConsentTicket::new(&a.org, user, &a.id, a.generation, a.incarnation, expires_at).unwrap()
}

fn pending(a: &App, user: &str, expires_at: u64) -> PendingAuthorization {
    PendingAuthorization::new(
        &a.org,
        user,
        &a.id,
        a.generation,
        a.incarnation,
        Some(Secret::new("pkce-PLAINTEXT-777")),
        "https://tollgate.example/oauth/callback",
        expires_at,
    )
    .unwrap()
}

async fn current(s: &SledStore, a: &App, user: &str) -> Option<TokenSet> {
    s.get_token(&a.org, &a.id, a.incarnation, a.generation, user)
        .await
        .unwrap()
}

fn corrupt_record(r: StoreResult<impl fmt::Debug>) -> (String, String) {
    match r {
        Err(StoreError::Corrupt { record, reason }) => (record, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Rewrites the JSON of one raw record.
fn edit_raw(tree: &Tree, key: &[u8], f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
    f(&mut v);
    tree.insert(key, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Flips one bit in the middle of a sealed base64 value.
fn flip_sealed(v: &mut serde_json::Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(v.as_str().unwrap()).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    *v = serde_json::Value::String(b64.encode(raw));
}

/// Raw record moves for the contract's sealing test.
struct SledTamper {
    apps: Tree,
    tokens: Tree,
}

impl contract::Tamper for SledTamper {
    fn copy_app(&self, org: &str, from: &str, to: &str) {
        let raw = self.apps.get(app_key(org, from)).unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["id"] = to.into();
        self.apps
            .insert(app_key(org, to), serde_json::to_vec(&v).unwrap())
            .unwrap();
    }

    fn copy_grant(&self, org: &str, app: &str, from_user: &str, to_user: &str) {
        let (k, raw) = self
            .tokens
            .scan_prefix(token_app_prefix(org, app))
            .map(Result::unwrap)
            .find(|(k, _)| TokenKey::parse(k).unwrap().user == from_user)
            .unwrap();
        let tk = TokenKey::parse(&k).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["user"] = to_user.into();
        let to = token_key(org, app, tk.incarnation, tk.generation, to_user);
        self.tokens
            .insert(to, serde_json::to_vec(&v).unwrap())
            .unwrap();
    }
}

#[tokio::test]
async fn passes_the_store_contract() {
    contract::run_all(|clock| {
        let tmp = tempfile::tempdir().unwrap();
        let store = SledStore::open_with_clock(&tmp.path().join("store"), key_a(), clock).unwrap();
        let tamper = SledTamper {
            apps: store.apps.clone(),
            tokens: store.tokens.clone(),
        };
        contract::Fixture {
            store: Arc::new(store),
            tamper: Box::new(tamper),
            _guard: Box::new(tmp),
        }
    })
    .await;
}
