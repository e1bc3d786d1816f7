//! `tollgate demo`, as a new user runs it: the real binary, its printed curl command run with
//! the real curl (first a `401` with a consent URL), the consent walked as a browser walks it
//! (tollgate's page, the demo provider's Approve page, the callback), the same curl again (the
//! API answers who called), then Ctrl-C (SIGINT) removes the temporary directory.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::consent::{split, Browser};

/// The demo process and its stdout lines as they arrive.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(common::bin())
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tollgate demo starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from the start) for which `pick` says something, waiting up to 60 s.
    fn wait_for<T>(&mut self, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.seen.iter().find_map(|l| pick(l)) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("demo output so far:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the printed command (program and arguments split on spaces, as a shell would split
/// this unquoted line) and returns its stdout as JSON.
fn run_printed(command: &[String]) -> serde_json::Value {
    let out = Command::new(&command[0])
        .args(&command[1..])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{command:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON from {command:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The hidden fields of the demo provider's Approve form, form-encoded.
fn approve_form(html: &str) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for input in html.split("<input ").skip(1) {
        let attr = |name: &str| {
            input
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(|v| v.replace("&quot;", "\"").replace("&amp;", "&"))
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            form.append_pair(&n, &v);
        }
    }
    form.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_curl_gets_a_consent_url_then_the_injected_call() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl is not installed (the demo prints a curl command)");
        return;
    }
    let mut demo = Demo::start();
    let command: Vec<String> = demo.wait_for(|l| {
        l.starts_with("curl ")
            .then(|| l.split_whitespace().map(str::to_string).collect())
    });
    let dir = demo.wait_for(|l| {
        l.trim_start()
            .strip_prefix("temporary data and policies")
            .map(|rest| PathBuf::from(rest.split_whitespace().next().unwrap()))
    });
    let output = demo.seen.join("\n");
    assert_eq!(
        demo.seen.iter().filter(|l| l.contains("curl ")).count(),
        1,
        "one curl command:\n{output}"
    );
    assert!(output.contains("TEST-GRADE"), "{output}");
    // Temporary directories, never ./data or ./policies.
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    assert!(dir.join("data").is_dir() && dir.join("policies/demo.toml").is_file());

    // 1. The printed command: 401 authorization_required with a consent URL.
    let first = run_printed(&command);
    assert_eq!(first["error"], "authorization_required", "{first}");
    let consent_url = first["consent_url"].as_str().unwrap().to_string();

    // 2. The consent, as a browser: tollgate's page and Authorize, the provider's Approve.
    let (web, path) = split(&consent_url);
    let mut browser = Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (idp, authorize) = split(&post.header("location").unwrap());
    let page = Browser::default().get(idp, &authorize).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("TEST-GRADE"), "{}", page.text());
    let approved = Browser::default()
        .request(idp, "POST", "/authorize", Some(&approve_form(&page.text())))
        .await;
    assert_eq!(approved.status, 303, "{}", approved.text());
    let (back, callback) = split(&approved.header("location").unwrap());
    assert_eq!(back, web, "the provider redirects to tollgate");
    let done = browser.get(web, &callback).await;
    assert_eq!(done.status, 200, "{}", done.text());

    // 3. The same command again: the API saw alice's injected token.
    let second = run_printed(&command);
    assert_eq!(second["caller"], "alice", "{second}");
    assert_eq!(second["path"], "/whoami", "{second}");

    // 4. Ctrl-C: the demo drains and removes its temporary directory.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(common::POLL_EVERY);
    };
    assert!(status.success(), "{status:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    demo.wait_for(|l| l.contains("removed").then_some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_provider_refuses_unknown_clients_and_foreign_redirects() {
    // The demo provider is test-grade but checks the client and the redirect URI.
    let mut demo = Demo::start();
    let issuer: String = demo.wait_for(|l| {
        l.trim_start()
            .strip_prefix("demo OAuth provider")
            .map(|r| r.split_whitespace().next().unwrap().to_string())
    });
    let (idp, _) = split(&format!("{issuer}/"));
    let r = Browser::default()
        .request(
            idp,
            "POST",
            "/token",
            Some("grant_type=authorization_code&code=nope&client_id=tollgate-demo"),
        )
        .await;
    assert_eq!(r.status, 401, "no client secret: {}", r.text());
    let r = Browser::default()
        .get(
            idp,
            "/authorize?response_type=code&client_id=tollgate-demo&state=s&redirect_uri=http://evil.example/cb&code_challenge=x&code_challenge_method=S256",
        )
        .await;
    assert_eq!(r.status, 400, "a foreign redirect URI: {}", r.text());
}
