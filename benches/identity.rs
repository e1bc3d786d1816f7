//! Caller-token verification: the first thing the proxy does for every request.
//!
//! `warm/*` is the steady state (the same header on every request of a job, served from the
//! cache: no base64, no JSON, no HMAC); `cold/*` is the first request with a token (full HS256
//! verification plus the cache insert).
//!
//! `cargo bench --bench identity -- --warm-up-time 1 --measurement-time 3`

use std::time::Duration;

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use tollgate::identity::{mint, IdentityKey, Verifier};

fn key() -> IdentityKey {
    IdentityKey::from_bytes(tollgate::identity::generate_key_text().as_bytes())
}

fn headers(key: &IdentityKey) -> (String, String, String) {
    let roles = ["admin".to_string()];
    let token = mint(key, "acme", "alice", &roles, Duration::from_secs(3600)).expect("clock");
    let bearer = format!("Bearer {token}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}"))
    );
    (token, bearer, basic)
}

fn warm(c: &mut Criterion) {
    let key = key();
    let (token, bearer, basic) = headers(&key);
    let verifier = Verifier::new(key);
    for h in [&bearer, &basic] {
        verifier
            .verify_header(h.as_bytes())
            .expect("bench token verifies");
    }
    verifier.verify_token(&token).expect("bench token verifies");

    let mut g = c.benchmark_group("warm");
    g.bench_function("verify_header_bearer", |b| {
        b.iter(|| verifier.verify_header(black_box(bearer.as_bytes())))
    });
    g.bench_function("verify_header_basic", |b| {
        b.iter(|| verifier.verify_header(black_box(basic.as_bytes())))
    });
    g.bench_function("verify_token", |b| {
        b.iter(|| verifier.verify_token(black_box(&token)))
    });
    g.finish();
}

fn cold(c: &mut Criterion) {
    let key = key();
    let (_token, bearer, basic) = headers(&key);
    let mut g = c.benchmark_group("cold");
    // A fresh verifier per iteration (built outside the timing) makes every call a miss;
    // returning it keeps its drop out of the timing too.
    for (name, header) in [
        ("verify_header_bearer", &bearer),
        ("verify_header_basic", &basic),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Verifier::new(key.clone()),
                |v| {
                    let r = v.verify_header(black_box(header.as_bytes()));
                    (v, r)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, warm, cold);
criterion_main!(benches);
