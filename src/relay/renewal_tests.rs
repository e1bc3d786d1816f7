//! Renewal against in-memory agents: one that renews, one that already holds a newer
//! credential, one that predates renewal, and a revoked one.

use std::convert::Infallible;
use std::sync::Mutex;

use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;

use super::*;
use crate::identity::IdentityKey;
use crate::relay::credential::Revocations;
use crate::relay::metrics::AgentMetrics;
use crate::relay::registry::tests::serve_agent;
use crate::relay::Registry;
use crate::store::{SledStore, StoreKey};

struct Fixture {
    _dir: tempfile::TempDir,
    key: IdentityKey,
    renewer: Arc<Renewer>,
    revocations: Arc<Revocations>,
    store: Arc<dyn Store>,
    registry: Registry,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::datadir::DataDir::prepare(&dir.path().join("data")).unwrap();
    let keys_dir = data.root.join("keys");
    let ring = crate::keys::IdentityRing::load(&keys_dir).unwrap();
    let key = ring.signing(Clock::system().now().unwrap()).clone();
    let revocations = Arc::new(Revocations::new(vec![]));
    let verifier = Arc::new(CredentialVerifier::with_revocations(
        &key,
        revocations.clone(),
    ));
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(
            &dir.path().join("store"),
            StoreKey::from_hex_text(&"a1".repeat(32)).unwrap(),
        )
        .unwrap(),
    );
    Fixture {
        renewer: Arc::new(Renewer::new(keys_dir, verifier.clone(), store.clone())),
        key,
        revocations,
        store,
        registry: Registry::new(AgentMetrics::default(), Duration::from_secs(5)),
        _dir: dir,
    }
}

impl Fixture {
    fn credential(&self, ttl_secs: u64) -> (String, Verified) {
        let c = credential::enroll(&self.key, "a", Some(Duration::from_secs(ttl_secs))).unwrap();
        let v = CredentialVerifier::new(&self.key, vec![])
            .check(&c)
            .unwrap();
        (c, v)
    }

    async fn actions(&self) -> Vec<String> {
        let events = self.store.list_audit(AUDIT_ORG, 100).await.unwrap();
        events.into_iter().map(|e| e.action).collect()
    }
}

/// What an in-memory agent saw: each offer's replaced `jti` and credential.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An agent that takes an offer replacing `holds` and answers every later one with the
/// credential it took (as `agent::credential_file` does).
async fn renewing_agent(holds: String) -> (SendRequest<Empty<Bytes>>, Seen) {
    let seen: Seen = Arc::default();
    let current = Arc::new(Mutex::new(holds));
    let log = seen.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (log, current) = (log.clone(), current.clone());
        async move {
            let h = |n: &str| req.headers()[n].to_str().unwrap().to_string();
            let (replaces, offered) = (h(REPLACES_HEADER), h(CREDENTIAL_HEADER));
            assert_eq!(req.uri().path(), CREDENTIAL_PATH);
            log.lock()
                .unwrap()
                .push((replaces.clone(), offered.clone()));
            let mut current = current.lock().unwrap();
            let held = credential::peek(&current).unwrap().jti;
            let mut resp = Response::new(Full::new(Bytes::new()));
            if held == replaces {
                *current = offered;
                *resp.status_mut() = StatusCode::NO_CONTENT;
            } else {
                let value = http::HeaderValue::from_str(&current).unwrap();
                resp.headers_mut().insert(CREDENTIAL_HEADER, value);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    (serve_agent(svc).await, seen)
}

#[test]
fn renewal_is_due_two_thirds_into_the_lifetime_with_a_little_jitter() {
    let iat_ns = 1_000 * 1_000_000_000;
    assert_eq!(due_at_ms(iat_ns, 1_030, 0), 1_020_000);
    assert_eq!(due_at_ms(iat_ns, 1_030, 1_000), 1_021_000);
    assert_eq!(due_at_ms(iat_ns, 1_030, 1_001), 1_020_000);
    assert!((0..50).all(|r| due_at_ms(iat_ns, 1_030, r * 7919) <= 1_021_000));
}

#[tokio::test]
async fn one_renewal_for_several_sessions_audited_without_the_credential() {
    let f = fixture();
    let (text, cred) = f.credential(30);
    let (mut send, seen) = renewing_agent(text).await;
    let conn = f.registry.register(
        "a",
        "i".into(),
        0,
        "127.0.0.1:1".parse().unwrap(),
        1,
        send.clone(),
    );

    // The first session's offer is taken: same agent and lifetime, a later expiry.
    let Outcome::Renewed(renewed) = f.renewer.offer(&mut send, &conn, &cred).await else {
        panic!("not renewed");
    };
    assert_eq!(renewed.agent, "a");
    assert_eq!(renewed.lifetime(), cred.lifetime());
    assert!(renewed.expires_at >= cred.expires_at && renewed.jti != cred.jti);
    // A second session with the same old credential: the agent sends back the one it took.
    let Outcome::Kept(kept) = f.renewer.offer(&mut send, &conn, &cred).await else {
        panic!("not kept");
    };
    assert_eq!(kept.jti, renewed.jti);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(f.actions().await, ["agent.renew"], "one renewal audited");
    let event = &f.store.list_audit(AUDIT_ORG, 1).await.unwrap()[0];
    assert_eq!(event.target, "agent:a");
    let detail = event.detail.to_string();
    for (_, offered) in seen.lock().unwrap().iter() {
        assert!(
            !detail.contains(offered.as_str()),
            "credential in the audit"
        );
    }
    assert!(detail.contains(&renewed.jti));
}

#[tokio::test]
async fn an_agent_of_an_older_build_is_left_alone() {
    let f = fixture();
    let (_, cred) = f.credential(30);
    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        Ok::<_, Infallible>(r)
    });
    let mut send = serve_agent(svc).await;
    let conn = f.registry.register(
        "a",
        "i".into(),
        0,
        "127.0.0.1:1".parse().unwrap(),
        1,
        send.clone(),
    );
    let outcome = f.renewer.offer(&mut send, &conn, &cred).await;
    assert!(
        matches!(
            outcome,
            Outcome::Unsupported(StatusCode::METHOD_NOT_ALLOWED)
        ),
        "{outcome:?}"
    );
    assert!(f.actions().await.is_empty());
}

#[tokio::test]
async fn a_revoked_agent_is_refused_audited_and_its_session_ends_at_expiry() {
    let f = fixture();
    let (text, cred) = f.credential(1);
    let (send, seen) = renewing_agent(text).await;
    let conn = f.registry.register(
        "a",
        "i".into(),
        0,
        "127.0.0.1:1".parse().unwrap(),
        1,
        send.clone(),
    );
    // Revoked in memory only (as on a replica where the connection was not closed yet).
    f.revocations.revoke("a", cred.issued_at_ns);
    let ends_ms = end_ms(cred.expires_at.unwrap());
    let keep = tokio::spawn(f.renewer.clone().keep(send, conn.clone(), cred));
    tokio::time::timeout(Duration::from_secs(15), keep)
        .await
        .expect("the session is cut at expiry")
        .unwrap();
    assert!(conn.stopped().is_cancelled());
    assert!(
        now_ms() >= ends_ms,
        "cut before the handshake refuses the credential"
    );
    assert!(seen.lock().unwrap().is_empty(), "no credential offered");
    assert_eq!(f.actions().await, ["agent.renew_refused"]);
}
