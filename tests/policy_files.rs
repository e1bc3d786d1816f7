//! Every policy file shipped in `policies/` parses, and the loader sees all of them (a loop
//! that silently checks zero files would pass whatever the files say).

use std::path::Path;

use tollgate::policy::{normalize_host, Decision, DenyReason, PolicySet};

fn shipped() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
}

#[test]
fn shipped_policies_load() {
    let set = match PolicySet::load_dir(shipped()) {
        Ok(set) => set,
        Err(errors) => {
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("shipped policies are invalid:\n{}", shown.join("\n"));
        }
    };
    let toml_files = std::fs::read_dir(shipped())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .count();
    assert!(set.file_count() > 0, "no policy file loaded");
    assert_eq!(set.file_count(), toml_files);
    assert!(set.policy_count() > 0);
}

#[test]
fn shipped_policies_say_what_they_mean() {
    let set = PolicySet::load_dir(shipped()).unwrap();
    let decide =
        |org: &str, host: &str, port| set.decide(org, &normalize_host(host).unwrap(), port);

    let d = decide("globex", "api.github.com", 443);
    assert!(d.is_allowed());
    assert_eq!(d.policy().map(|p| &**p), Some("public-saas"));

    let d = decide("acme", "git.corp.example", 22);
    assert!(d.is_allowed() && d.allow_private());
    assert_eq!(d.route().unwrap().to_string(), "agent:onprem-1");
    assert!(!decide("globex", "git.corp.example", 22).is_allowed());

    // The metadata endpoint is denied in every spelling, to everyone.
    let deny_rule = |d: Decision| {
        matches!(
            d,
            Decision::Deny {
                reason: DenyReason::DenyRule,
                ..
            }
        )
    };
    for target in [
        "169.254.169.254",
        "2852039166",
        "[::ffff:a9fe:a9fe]",
        "0xa9.0xfe.0xa9.0xfe",
    ] {
        assert!(deny_rule(decide("acme", target, 80)), "{target}");
    }
    assert!(deny_rule(decide("acme", "10.20.1.1", 22)));
    assert!(decide("acme", "10.20.1.1", 443).is_allowed());
    assert!(deny_rule(decide("acme", "paste.pastebin.com", 443)));
}

/// The example app files in `examples/apps/` load (secrets from the environment) and validate
/// against the shipped policies.
#[test]
fn example_apps_validate_against_the_shipped_policies() {
    let set = PolicySet::load_dir(shipped()).expect("shipped policies load");
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps"));
    std::env::set_var("LEGACY_CLIENT_SECRET", "example-secret");
    std::env::set_var("LEGACY_API_KEY", "example-key");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let map = tollgate::cli::app::load_app_file(&path).unwrap();
        let spec: tollgate::oauth::app::AppSpec =
            serde_json::from_value(serde_json::Value::Object(map))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let valid = tollgate::oauth::app::validate(&spec, "acme", &set, &Default::default(), false)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        if valid.handshake == tollgate::store::Handshake::Webhook {
            assert!(valid.webhook.is_some_and(|w| w.refresh.is_some()));
        }
        checked += 1;
    }
    assert!(checked > 0, "no example app file checked");
}

/// `policy explain` with a port of 0 or above 65535 is a usage error (exit code 2) naming
/// the port, never a decision about some other port.
#[test]
fn policy_explain_refuses_a_port_out_of_range() {
    for target in ["http://example.com:99999/", "example.com:0"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["policy", "explain", "--no-resolve", "--org", "acme", target])
            .arg("--policies")
            .arg(shipped())
            .env_remove("TOLLGATE_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains("ports are 1-65535"), "{target}: {stderr}");
        assert!(out.stdout.is_empty(), "{target}: printed a decision");
    }
}
