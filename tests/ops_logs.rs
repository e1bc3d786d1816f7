//! Logs an operator can trust (issue 17): no ANSI escapes when stderr is not a terminal;
//! with `--log-format json` every line on stderr and stdout is JSON, the banner included;
//! absent values are `null`; `duration_us` is an integer; the access line carries the path
//! (without the query), the upstream address dialed, and why a `407` was answered. The real
//! binary runs, and its output is checked line by line.

mod common;

use common::policies::LOOPBACK as POLICY;
use common::*;
use serde_json::Value;

/// Every line parsed as a JSON object (panics naming the first line that is not).
fn json_lines(lines: &[String], what: &str) -> Vec<Value> {
    assert!(!lines.is_empty(), "no {what} lines");
    lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("{what} line is not a JSON object: {l:?}"),
        })
        .collect()
}

/// The status of a `GET url` through the proxy, with `Proxy-Authorization: auth` if given.
async fn get(tg: &Tollgate, url: &str, auth: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = auth
        .map(|a| ("proxy-authorization", a))
        .into_iter()
        .collect();
    proxy_request(tg.proxy, "GET", url, &headers, "")
        .await
        .status
}

fn access(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "tollgate::access")
        .collect()
}

#[tokio::test]
async fn json_logs_are_json_on_every_line_with_nulls_paths_upstreams_and_407_reasons() {
    let up = echo_upstream().await;
    let mut tg = Tollgate::start(POLICY, &["--log-format", "json"]);
    let a = auth(&tg, "acme");
    let expired = format!("Bearer {}", tg.expired_token("acme", "old"));
    let closed = closed_port();
    for (url, auth, status) in [
        (format!("http://{up}/x/y?secret=1"), Some(a.as_str()), 200),
        (format!("http://{up}/m"), None, 407),
        (format!("http://{up}/e"), Some(expired.as_str()), 407),
        (format!("http://{up}/f"), Some("Bearer not.a.token"), 407),
        // A refused dial names the address it tried.
        (
            format!("http://127.0.0.1:{closed}/r"),
            Some(a.as_str()),
            502,
        ),
    ] {
        assert_eq!(get(&tg, &url, auth).await, status, "{url}");
    }
    let status = tg.stop().await;
    assert!(status.success(), "{status:?}");

    let out = json_lines(&tg.stdout.lock().unwrap(), "stdout");
    assert!(
        out.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with("tollgate: proxy listening on")),
        "{out:?}"
    );
    for l in &out {
        assert_eq!(l["target"], "tollgate::banner");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    let logs = json_lines(&tg.logs.lock().unwrap(), "stderr");
    assert!(
        logs.iter().any(|l| l["target"] != "tollgate::access"),
        "start-up lines too: {logs:?}"
    );
    let lines = access(&logs);
    let by_path = |p: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no access line for {p}: {lines:?}"))
    };
    let ok = by_path("/x/y");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["upstream"], up.to_string());
    assert!(ok["duration_us"].is_u64(), "{ok}");
    assert_eq!(ok["app"], Value::Null, "{ok}");
    assert!(ok.get("duration_ms").is_none());
    // Every field of the line is present, absent values as null.
    let fields = "org user method host port path decision reason policy rule route app upstream \
                  injected status bytes_up bytes_down duration_us peer";
    for field in fields.split_whitespace() {
        for l in &lines {
            assert!(l.get(field).is_some(), "no {field} in {l}");
        }
    }
    let no_token = by_path("/m");
    assert_eq!(no_token["status"], 407);
    assert_eq!(no_token["reason"], "missing_credentials");
    assert_eq!(no_token["org"], Value::Null);
    assert_eq!(no_token["user"], Value::Null);
    assert_eq!(no_token["upstream"], Value::Null);
    assert_eq!(by_path("/e")["reason"], "token_expired");
    assert_eq!(by_path("/f")["reason"], "invalid_token");
    let r = by_path("/r");
    assert_eq!(r["reason"], "connection_refused");
    assert_eq!(r["upstream"], format!("127.0.0.1:{closed}"));
    // Nothing reads "-" any more, and the query (which may carry secrets) is never logged.
    let all = tg.logs();
    assert!(!all.contains("\":\"-\""), "{all}");
    assert!(!all.contains("secret=1"), "{all}");
    assert!(!all.contains(&a[7..]), "token logged");
}

#[tokio::test]
async fn connect_lines_carry_the_dialed_address_and_no_path() {
    let echo = tcp_echo().await;
    let mut tg = Tollgate::start(POLICY, &["--log-format", "json"]);
    let a = auth(&tg, "acme");
    let pa = [("proxy-authorization", a.as_str())];
    let (resp, stream) = proxy_connect(tg.proxy, &echo.to_string(), &pa).await;
    assert_eq!(resp.status, 200);
    drop(stream);
    tg.stop().await;
    let logs = json_lines(&tg.logs.lock().unwrap(), "stderr");
    let line = access(&logs)
        .into_iter()
        .find(|l| l["method"] == "CONNECT")
        .unwrap_or_else(|| panic!("no CONNECT line: {logs:?}"));
    assert_eq!(line["upstream"], echo.to_string());
    assert_eq!(line["path"], Value::Null);
}

#[tokio::test]
async fn text_logs_have_no_ansi_escapes_when_stderr_is_not_a_terminal() {
    let up = echo_upstream().await;
    let mut tg = Tollgate::start(POLICY, &[]);
    let a = auth(&tg, "acme");
    assert_eq!(get(&tg, &format!("http://{up}/t"), Some(&a)).await, 200);
    tg.stop().await;
    let logs = tg.logs();
    assert!(logs.contains("tollgate::access"), "{logs}");
    assert!(logs.contains("path=\"/t\""), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape in: {logs:?}");
}

/// A start-up failure in JSON mode is a JSON line too, with the cause named once.
#[test]
fn a_failed_start_reports_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve_on(dir.path(), "127.0.0.1:0", &addr)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = stderr.lines().map(String::from).collect();
    let v = json_lines(&lines, "stderr");
    let last = v.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{stderr}");
    let msg = last["message"].as_str().unwrap();
    assert!(msg.contains(&addr), "{msg}");
    // The OS's reason appears once, not once per layer of the error chain.
    let os = msg.rsplit(": ").next().unwrap();
    assert_eq!(msg.matches(os).count(), 1, "{msg}");
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
}
