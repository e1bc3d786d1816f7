//! Tests of the sled store: the store contract, then sled-specific behaviour by record kind.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::store::contract::{self, pending, sample_app as app, ticket, T0};
use crate::store::model::Secret;
use crate::store::record::{lookup_hash, ticket_owner_key, token_app_prefix, Kind};

mod apps;
mod consents;
mod disk;
mod tokens;

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

/// A first consent's grant: the version is what the store sets.
fn token(a: &App, user: &str, access: &str) -> TokenSet {
    TokenSet {
        version: 1,
        ..contract::grant(a, user, access)
    }
}

/// Stores `user`'s token set (access token `access`) for `a`; true when `a` was still current.
async fn put_token(s: &SledStore, a: &App, user: &str, access: &str) -> bool {
    s.put_token_if_current(token(a, user, access), a.incarnation)
        .await
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

/// Raw record moves for the contract's sealing test, and raw reads.
struct SledTamper {
    db: sled::Db,
    apps: Tree,
    tokens: Tree,
    tickets: Tree,
    pending: Tree,
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

    fn raw_contains(&self, needle: &[u8]) -> bool {
        raw_contains(&self.db, needle)
    }

    fn consent_records(&self) -> (usize, usize) {
        (self.tickets.len(), self.pending.len())
    }
}

/// Whether any key or value of any tree of `db` contains `needle`.
fn raw_contains(db: &sled::Db, needle: &[u8]) -> bool {
    let has = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    db.tree_names().iter().any(|name| {
        db.open_tree(name)
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .any(|(k, v)| has(&k) || has(&v))
    })
}

#[tokio::test]
async fn passes_the_store_contract() {
    contract::run_all(|clock| {
        let tmp = tempfile::tempdir().unwrap();
        let key = key_a();
        let store =
            SledStore::open_with_clock(&tmp.path().join("store"), key.clone(), clock).unwrap();
        let tamper = SledTamper {
            db: store.db.clone(),
            apps: store.apps.clone(),
            tokens: store.tokens.clone(),
            tickets: store.tickets.clone(),
            pending: store.pending.clone(),
        };
        contract::Fixture {
            store: Arc::new(store),
            tamper: Box::new(tamper),
            _guard: Box::new(tmp),
            key,
        }
    })
    .await;
}
