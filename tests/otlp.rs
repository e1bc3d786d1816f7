//! OpenTelemetry export (issue 17, `--otlp-endpoint`): the real binary sends one span per
//! proxied request to an in-process OTLP/HTTP collector ([`common::otlp`]), carrying the
//! decision, the policy and rule, the status and the upstream time, for an allowed and a
//! denied request; no token or query value appears in any attribute; SIGTERM flushes the
//! exporter. Without the flag nothing is exported.

mod common;

use std::time::Duration;

use common::otlp::{Collector, ReceivedSpan};
use common::policies::{loopback_deny_line, LOOPBACK as POLICY};
use common::*;

/// Waits until the collector holds at least `n` spans.
async fn spans(c: &Collector, n: usize) -> Vec<ReceivedSpan> {
    let arrived = wait_until(Duration::from_secs(20), async || c.spans().len() >= n).await;
    assert!(arrived, "expected {n} spans, got {:?}", c.spans());
    c.spans()
}

/// The span whose `url.path` is `path`.
fn by_path<'a>(spans: &'a [ReceivedSpan], path: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.attrs.get("url.path").map(String::as_str) == Some(path))
        .collect();
    assert_eq!(found.len(), 1, "one span for {path}: {spans:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_request_with_the_decision_and_no_secret() {
    let collector = Collector::start().await;
    let up = echo_upstream().await;
    let mut tg = Tollgate::start(
        POLICY,
        &[
            "--otlp-endpoint",
            &collector.url(),
            "--shutdown-delay",
            "0s",
        ],
    );
    let token = tg.token("acme", "alice");
    let auth = format!("Bearer {token}");
    let headers = [("proxy-authorization", auth.as_str())];
    let allowed = format!("http://{up}/allowed?secret=query-secret");
    let r = proxy_request(tg.proxy, "GET", &allowed, &headers, "").await;
    assert_eq!(r.status, 200);
    // The policies' `[[deny]]` names 127.0.0.99.
    let denied = format!("http://127.0.0.99:{}/denied", up.port());
    let r = proxy_request(tg.proxy, "GET", &denied, &headers, "").await;
    assert_eq!(r.status, 403);

    let got = spans(&collector, 2).await;
    assert_eq!(got.len(), 2, "one span per request: {got:?}");
    assert!(
        collector.rejected().is_empty(),
        "{:?}",
        collector.rejected()
    );

    let ok = by_path(&got, "/allowed");
    assert_eq!(ok.name, "GET");
    assert_eq!(ok.service.as_deref(), Some("tollgate"));
    let a = &ok.attrs;
    assert_eq!(a["tollgate.decision"], "allowed");
    assert_eq!(a["tollgate.policy"], "acme-loopback");
    assert!(a["tollgate.rule"].contains(':'), "rule is file:line: {a:?}");
    assert_eq!(a["tollgate.route"], "direct");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["tollgate.injected"], "false");
    assert_eq!(a["tollgate.refreshed"], "false");
    assert_eq!(a["tollgate.org"], "acme");
    assert_eq!(a["tollgate.user"], "alice");
    assert_eq!(a["server.port"], up.port().to_string());
    let upstream_ms: f64 = a["tollgate.upstream_time_ms"].parse().unwrap();
    assert!(upstream_ms > 0.0 && upstream_ms < 20_000.0, "{upstream_ms}");
    assert!(
        !a.contains_key("tollgate.app"),
        "no app on this host: {a:?}"
    );

    let no = by_path(&got, "/denied");
    let d = &no.attrs;
    assert_eq!(d["tollgate.decision"], "denied");
    assert_eq!(d["tollgate.reason"], "deny_rule");
    assert_eq!(d["http.response.status_code"], "403");
    assert_eq!(
        d["tollgate.rule"],
        format!("10-test.toml:{}", loopback_deny_line()),
        "{d:?}"
    );
    assert!(
        !d.contains_key("tollgate.upstream_time_ms"),
        "nothing was sent upstream: {d:?}"
    );

    // No secret in any attribute: not the caller token (nor a piece of it), not the query.
    let signature = token.rsplit('.').next().unwrap();
    for span in &got {
        for (k, v) in &span.attrs {
            assert!(
                !v.contains(signature) && !v.contains(&token) && !v.contains("query-secret"),
                "{k} = {v}"
            );
        }
    }

    // SIGTERM flushes the exporter (the lifecycle's shutdown hook).
    let status = tg.stop().await;
    assert!(status.success(), "{status:?}");
    assert!(tg.logs().contains("otlp: spans flushed"), "{}", tg.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_variable_turns_export_on() {
    let collector = Collector::start().await;
    let up = echo_upstream().await;
    let url = collector.url();
    let tg = Tollgate::start_env(POLICY, &[], &[("TOLLGATE_OTLP_ENDPOINT", url.as_str())]);
    let a = auth(&tg, "acme");
    let headers = [("proxy-authorization", a.as_str())];
    let r = proxy_request(tg.proxy, "GET", &format!("http://{up}/env"), &headers, "").await;
    assert_eq!(r.status, 200);
    // Without credentials: a `407` is a request too, denied before any policy.
    let r = proxy_request(tg.proxy, "GET", &format!("http://{up}/anon"), &[], "").await;
    assert_eq!(r.status, 407);
    let got = spans(&collector, 2).await;
    assert_eq!(by_path(&got, "/env").attrs["tollgate.decision"], "allowed");
    let anon = &by_path(&got, "/anon").attrs;
    assert_eq!(anon["tollgate.decision"], "denied");
    assert_eq!(anon["tollgate.reason"], "missing_credentials");
    assert!(!anon.contains_key("tollgate.user"), "{anon:?}");
}

/// An injected request's span names the app and says whether its token was refreshed first;
/// neither the injected access token nor the refresh token nor the client secret appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_requests_carry_the_app_and_whether_the_token_was_refreshed() {
    let collector = Collector::start().await;
    let url = collector.url();
    let env = oauth::setup(&["--otlp-endpoint", &url], |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));
    env.consent("acme", "alice").await;
    env.p.with(|s| s.access_ttl = Some(3600));
    env.wait_stale("alice").await;
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.p.refresh_calls(), 1);
    let r = env.call("acme", "alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(env.p.refresh_calls(), 1);

    // The consent flow's first call (`401 authorization_required`), then the two above.
    let arrived = wait_until(Duration::from_secs(20), async || {
        records(&collector).len() >= 3
    })
    .await;
    let got = records(&collector);
    assert!(arrived && got.len() == 3, "{got:?}");
    let seen: Vec<[&str; 4]> = got
        .iter()
        .map(|s| {
            let a = |k: &str| s.attrs.get(k).map_or("-", String::as_str);
            [
                a("tollgate.decision"),
                a("tollgate.injected"),
                a("tollgate.refreshed"),
                a("http.response.status_code"),
            ]
        })
        .collect();
    assert_eq!(
        seen,
        [
            ["denied", "false", "false", "401"],
            ["allowed", "true", "true", "200"],
            ["allowed", "true", "false", "200"],
        ],
        "{got:?}"
    );
    for span in &got {
        assert_eq!(span.attrs["tollgate.app"], "crm");
    }
    assert!(got[1].attrs.contains_key("tollgate.upstream_time_ms"));
    let tokens: Vec<String> = env.p.with(|s| {
        (s.access_tokens.iter())
            .chain(s.refresh_tokens.iter())
            .cloned()
            .collect()
    });
    assert!(tokens.len() >= 3, "{tokens:?}");
    for span in collector.spans() {
        for (k, v) in &span.attrs {
            for secret in tokens
                .iter()
                .map(String::as_str)
                .chain(["sk-CLIENT-SECRET", "client-own-token"])
            {
                assert!(!v.contains(secret), "{k} = {v} carries a secret");
            }
        }
    }
}

/// The spans of the runner's API calls (`/records`), in the order they were received.
fn records(c: &Collector) -> Vec<ReceivedSpan> {
    (c.spans().into_iter())
        .filter(|s| s.attrs.get("url.path").map(String::as_str) == Some("/records"))
        .collect()
}
