//! Tests of verification, the cache, minting and the key file.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::cache::{Cache, CACHE_SHARDS};
use super::mint::mint_at;
use super::*;
use crate::clock::{Clock, ManualClock};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;

fn key() -> IdentityKey {
    IdentityKey::from_bytes(KEY)
}

fn verifier_at(now: u64) -> (Verifier, ManualClock) {
    let clock = ManualClock::new(now);
    (Verifier::with_clock(key(), clock.clock()), clock)
}

fn token(org: &str, user: &str, roles: &[&str], exp: u64) -> String {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    mint_at(&key(), org, user, &roles, NOW - 10, exp)
}

/// A verifier at [`NOW`] and a token of alice (org acme, no roles) valid for a minute.
fn alice() -> (Verifier, String) {
    let (v, _) = verifier_at(NOW);
    (v, token("acme", "alice", &[], NOW + 60))
}

fn basic(user_and_token: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_and_token)
    )
    .into_bytes()
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn round_trip_with_system_clock() {
    let tok = mint(
        &key(),
        "acme",
        "alice",
        &["admin".to_string()],
        Duration::from_secs(3600),
    )
    .unwrap();
    let v = Verifier::new(key());
    let c = v.verify_token(&tok).unwrap();
    assert_eq!(c.org, "acme");
    assert_eq!(c.user, "alice");
    assert_eq!(c.roles, vec!["admin".to_string()]);
    assert!(c.is_admin());
    let now = Clock::system().now().unwrap();
    assert!(c.exp >= now + 3590 && c.exp <= now + 3600);
}

#[test]
fn roles_are_optional() {
    let (v, _) = verifier_at(NOW);
    let c = v
        .verify_token(&token("acme", "bob", &[], NOW + 60))
        .unwrap();
    assert!(c.roles.is_empty());
    assert!(!c.is_admin());
}

#[test]
fn bearer_any_case_and_spacing() {
    let (v, tok) = alice();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for sep in [" ", "   "] {
            let h = format!("{scheme}{sep}{tok}");
            let c = v.verify_header(h.as_bytes()).unwrap();
            assert_eq!((c.org.as_str(), c.user.as_str()), ("acme", "alice"), "{h}");
        }
    }
}

#[test]
fn basic_with_matching_user() {
    let (v, tok) = alice();
    let c = v.verify_header(&basic(&format!("alice:{tok}"))).unwrap();
    assert_eq!(c.user, "alice");
    // Scheme is case-insensitive for Basic too.
    let h = String::from_utf8(basic(&format!("alice:{tok}"))).unwrap();
    let lower = h.replacen("Basic", "basic", 1);
    assert_eq!(v.verify_header(lower.as_bytes()).unwrap().user, "alice");
}

#[test]
fn basic_unpadded_base64_is_accepted() {
    let (v, tok) = alice();
    let h = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("alice:{tok}"))
    );
    assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
}

#[test]
fn basic_user_mismatch() {
    let (v, tok) = alice();
    assert_eq!(
        v.verify_header(&basic(&format!("mallory:{tok}"))),
        Err(IdentityError::UserMismatch)
    );
    // Not cached as a success under that header either.
    assert_eq!(
        v.verify_header(&basic(&format!("mallory:{tok}"))),
        Err(IdentityError::UserMismatch)
    );
}

#[test]
fn basic_empty_user_takes_sub() {
    let (v, tok) = alice();
    let c = v.verify_header(&basic(&format!(":{tok}"))).unwrap();
    assert_eq!(c.user, "alice");
}

#[test]
fn expired_token() {
    let (v, _) = verifier_at(NOW);
    let tok = token("acme", "alice", &[], NOW - 60);
    assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
    assert_eq!(
        v.verify_header(format!("Bearer {tok}").as_bytes()),
        Err(IdentityError::Expired)
    );
    assert_eq!(v.cached(), 0);
}

#[test]
fn leeway_is_five_seconds() {
    let tok = token("acme", "alice", &[], NOW);
    let (v, _) = verifier_at(NOW + LEEWAY_SECS);
    assert!(v.verify_token(&tok).is_ok());
    let (v, _) = verifier_at(NOW + LEEWAY_SECS + 1);
    assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
}

#[test]
fn forged_signature_other_key() {
    let (v, _) = verifier_at(NOW);
    let other = IdentityKey::from_bytes(b"another key, 32 bytes or more........");
    let tok = mint_at(&other, "acme", "alice", &[], NOW, NOW + 60);
    assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid));
    assert_eq!(
        v.verify_header(format!("Bearer {tok}").as_bytes()),
        Err(IdentityError::Invalid)
    );
    // A tampered payload with the original signature.
    let good = token("acme", "alice", &[], NOW + 60);
    let parts: Vec<&str> = good.split('.').collect();
    let payload = b64url(&format!(
        r#"{{"sub":"alice","org":"other","iat":{NOW},"exp":{}}}"#,
        NOW + 60
    ));
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(v.verify_token(&tampered), Err(IdentityError::Invalid));
}

#[test]
fn alg_none_and_other_algs_rejected() {
    let (v, _) = verifier_at(NOW);
    let payload = b64url(&format!(
        r#"{{"sub":"alice","org":"acme","iat":{NOW},"exp":{}}}"#,
        NOW + 60
    ));
    for alg in ["none", "None", "NONE"] {
        let header = b64url(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let tok = format!("{header}.{payload}.");
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid), "{alg}");
    }
    #[derive(Serialize)]
    struct C<'a> {
        sub: &'a str,
        org: &'a str,
        exp: u64,
    }
    let claims = C {
        sub: "alice",
        org: "acme",
        exp: NOW + 60,
    };
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let tok = jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(KEY))
            .unwrap();
        assert_eq!(v.verify_token(&tok), Err(IdentityError::Invalid), "{alg:?}");
    }
}

#[test]
fn invalid_claims() {
    let (v, _) = verifier_at(NOW);
    let sign = |claims: &str| {
        let header = b64url(r#"{"alg":"HS256","typ":"JWT"}"#);
        let msg = format!("{header}.{}", b64url(claims));
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(KEY),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{msg}.{sig}")
    };
    let exp = NOW + 60;
    let long = "x".repeat(MAX_CLAIM_CHARS + 1);
    let max = "é".repeat(MAX_CLAIM_CHARS);
    let nbf = NOW + 30;
    let valid: &[(&str, String)] = &[
        ("ok", format!(r#"{{"sub":"a","org":"b","exp":{exp}}}"#)),
        (
            "fractional exp",
            format!(r#"{{"sub":"a","org":"b","exp":{exp}.5}}"#),
        ),
        (
            "128 chars",
            format!(r#"{{"sub":"{max}","org":"{max}","exp":{exp}}}"#),
        ),
        (
            "extra claims",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"jti":"x"}}"#),
        ),
        (
            "null roles",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":null}}"#),
        ),
    ];
    let invalid: &[(&str, String)] = &[
        ("missing exp", r#"{"sub":"a","org":"b"}"#.into()),
        (
            "string exp",
            format!(r#"{{"sub":"a","org":"b","exp":"{exp}"}}"#),
        ),
        ("negative exp", r#"{"sub":"a","org":"b","exp":-1}"#.into()),
        ("missing sub", format!(r#"{{"org":"b","exp":{exp}}}"#)),
        ("missing org", format!(r#"{{"sub":"a","exp":{exp}}}"#)),
        (
            "empty sub",
            format!(r#"{{"sub":"","org":"b","exp":{exp}}}"#),
        ),
        (
            "empty org",
            format!(r#"{{"sub":"a","org":"","exp":{exp}}}"#),
        ),
        (
            "long sub",
            format!(r#"{{"sub":"{long}","org":"b","exp":{exp}}}"#),
        ),
        (
            "long org",
            format!(r#"{{"sub":"a","org":"{long}","exp":{exp}}}"#),
        ),
        (
            "newline in sub",
            format!(r#"{{"sub":"a\nb","org":"b","exp":{exp}}}"#),
        ),
        (
            "NUL in org",
            format!(r#"{{"sub":"a","org":"b\u0000","exp":{exp}}}"#),
        ),
        (
            "DEL in sub",
            format!(r#"{{"sub":"a\u007f","org":"b","exp":{exp}}}"#),
        ),
        (
            "numeric sub",
            format!(r#"{{"sub":1,"org":"b","exp":{exp}}}"#),
        ),
        (
            "roles string",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":"x"}}"#),
        ),
        (
            "empty role",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"roles":[""]}}"#),
        ),
        (
            "nbf ahead",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"nbf":{nbf}}}"#),
        ),
        (
            "foreign aud",
            format!(r#"{{"sub":"a","org":"b","exp":{exp},"aud":"x"}}"#),
        ),
        ("not json", "nope".into()),
    ];
    for (name, claims) in valid {
        assert!(v.verify_token(&sign(claims)).is_ok(), "{name}");
    }
    for (name, claims) in invalid {
        assert_eq!(
            v.verify_token(&sign(claims)),
            Err(IdentityError::Invalid),
            "{name}"
        );
    }
}

#[test]
fn malformed_headers() {
    use IdentityError::{Invalid, Malformed, Missing};
    let (v, tok) = alice();
    let basic_raw = |raw: &[u8]| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        format!("Basic {encoded}").into_bytes()
    };
    let text = |s: &str| s.as_bytes().to_vec();
    let huge = format!("Bearer {}", "a".repeat(MAX_HEADER_LEN));
    let cases: &[(&str, Vec<u8>, IdentityError)] = &[
        ("empty", text(""), Missing),
        ("blank", text("   "), Missing),
        ("scheme only", text("Bearer"), Malformed),
        ("scheme and space", text("Bearer "), Malformed),
        ("bare token", text(&tok), Malformed),
        ("unknown scheme", text(&format!("Token {tok}")), Malformed),
        (
            "scheme glued to token",
            text(&format!("Bearer{tok}")),
            Malformed,
        ),
        ("digest", text("Digest username=\"a\""), Malformed),
        ("bearer garbage", text("Bearer not-a-jwt"), Invalid),
        ("bearer two parts", text("Bearer a.b"), Invalid),
        ("bearer non-utf8", b"Bearer \xff\xfe".to_vec(), Malformed),
        ("basic bad base64", text("Basic !!!notbase64"), Malformed),
        ("basic no colon", basic_raw(tok.as_bytes()), Malformed),
        ("basic empty token", basic_raw(b"alice:"), Malformed),
        ("basic non-utf8", basic_raw(b"\xff:\xfe"), Malformed),
        ("basic token garbage", basic_raw(b"alice:xyz"), Invalid),
        ("oversized", text(&huge), Malformed),
    ];
    for (name, header, want) in cases {
        assert_eq!(v.verify_header(header).as_ref(), Err(want), "{name}");
    }
    assert_eq!(v.cached(), 0);
}

#[test]
fn surrounding_whitespace_tolerated() {
    let (v, tok) = alice();
    let h = format!("  Bearer {tok} \t");
    assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
}

#[test]
fn cache_hit_returns_same_arc() {
    let (v, tok) = alice();
    let h = format!("Bearer {tok}");
    let a = v.verify_header(h.as_bytes()).unwrap();
    let b = v.verify_header(h.as_bytes()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let c = v.verify_token(&tok).unwrap();
    let d = v.verify_token(&tok).unwrap();
    assert!(Arc::ptr_eq(&c, &d));
    // The cache is keyed by the token: header and bare token are one entry.
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(v.cached(), 1);
    // A header whose bytes equal the token is not a hit on the token's entry.
    assert_eq!(
        v.verify_header(tok.as_bytes()),
        Err(IdentityError::Malformed)
    );
}

#[test]
fn cached_then_expired_is_refused() {
    let (v, clock) = verifier_at(NOW);
    let tok = token("acme", "alice", &[], NOW + 30);
    let h = format!("Bearer {tok}");
    assert!(v.verify_header(h.as_bytes()).is_ok());
    assert!(v.verify_token(&tok).is_ok());
    assert_eq!(v.cached(), 1);
    clock.set(NOW + 30 + LEEWAY_SECS + 1);
    assert_eq!(v.verify_header(h.as_bytes()), Err(IdentityError::Expired));
    assert_eq!(v.verify_token(&tok), Err(IdentityError::Expired));
}

#[test]
fn concurrent_verification_shares_one_entry() {
    let (v, tok) = alice();
    let h = format!("Bearer {tok}");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(v.verify_header(h.as_bytes()).unwrap().user, "alice");
                }
            });
        }
    });
    assert_eq!(v.cached(), 1);
}

#[test]
fn cache_is_bounded() {
    let cache = Cache::new(64, usize::MAX);
    let cap = cache.shard_capacity;
    let caller = |exp| {
        Arc::new(Caller {
            org: "o".into(),
            user: "u".into(),
            roles: vec![],
            exp,
            jti: None,
            iat: None,
        })
    };
    for i in 0..10_000u32 {
        cache.insert(&i.to_be_bytes(), caller(NOW + 60), NOW);
        assert!(cache.len() <= cap * CACHE_SHARDS);
    }
    // The last insert is always present.
    assert!(cache.get(&9_999u32.to_be_bytes()).is_some());
    // Expired entries are swept before anything live is evicted.
    let cache = Cache::new(CACHE_SHARDS * 8, usize::MAX);
    for i in 0..(CACHE_SHARDS * 8 * 4) as u32 {
        cache.insert(&i.to_be_bytes(), caller(NOW - 60), NOW);
    }
    let live = b"live";
    cache.insert(live, caller(NOW + 60), NOW);
    assert!(cache.get(live).is_some());
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let (v, _) = verifier_at(NOW);
    let tok = token("acme", "alice", &[], NOW - 60);
    let err = v.verify_token(&tok).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&tok));
    let k = key();
    assert_eq!(format!("{k:?}"), "IdentityKey(MASKED)");
    assert!(!format!("{v:?}").contains("0123456789"));
}

#[test]
fn key_file_convention() {
    let text = generate_key_text();
    assert_eq!(text.len(), 64);
    assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(text, generate_key_text());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    std::fs::write(&path, format!("{text}\n")).unwrap();
    let loaded = load_key_file(&path).unwrap();
    assert_eq!(&*loaded.0, text.as_bytes());

    // A token signed with the trimmed text (what pyjwt does) verifies.
    let v = Verifier::new(loaded.clone());
    let tok = mint(
        &IdentityKey::from_bytes(text.as_bytes()),
        "acme",
        "alice",
        &[],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(v.verify_token(&tok).is_ok());

    std::fs::write(&path, "short\n").unwrap();
    let err = load_key_file(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(load_key_file(dir.path().join("missing")).is_err());
}

#[test]
fn minted_tokens_carry_a_unique_jti_and_a_revoked_one_is_refused_even_when_cached() {
    let (v, tok) = alice();
    let other = token("acme", "alice", &[], NOW + 60);
    let first = v.verify_token(&tok).unwrap();
    let jti = first.jti.clone().expect("a minted token has a jti");
    assert_eq!(jti.len(), 32);
    assert_ne!(v.verify_token(&other).unwrap().jti, first.jti);
    assert_eq!(first.iat, Some(NOW - 10));
    assert_eq!(v.cached(), 2);
    v.revoked().replace(
        [revoked::Revocation::Jti {
            jti,
            org: None,
            expires_at: NOW + 60,
        }],
        NOW,
    );
    // Cached, and still refused; the other token of the same user is not.
    assert_eq!(v.verify_token(&tok), Err(IdentityError::Revoked));
    assert_eq!(v.check_expiry(&first), Err(IdentityError::Revoked));
    assert!(v.verify_token(&other).is_ok());
    // Every token of the user issued up to now.
    v.revoked().replace(
        [revoked::Revocation::User {
            org: "acme".into(),
            user: "alice".into(),
            before: NOW,
            expires_at: NOW + 60,
        }],
        NOW,
    );
    assert_eq!(v.verify_token(&other), Err(IdentityError::Revoked));
    v.revoked().replace([], NOW);
    assert!(v.verify_token(&tok).is_ok() && v.verify_token(&other).is_ok());
}
