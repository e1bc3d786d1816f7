//! `Config::resolve`: flags, variables and the file merged and validated.

use super::*;

#[test]
fn defaults_match_design() {
    let c = Config::resolve(&ServeOverrides::default()).unwrap();
    assert_eq!(c.proxy_listen.to_string(), "127.0.0.1:3128");
    assert_eq!(c.web_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.relay_listen, None);
    assert_eq!(c.relay_keepalive, Duration::from_secs(10));
    assert!(c.revoked_agents.is_empty());
    assert_eq!(c.data_dir, PathBuf::from("data"));
    assert_eq!(c.policies_dir, PathBuf::from("policies"));
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Duration::from_secs(900));
    assert_eq!(c.max_connections, 10_000);
    assert_eq!(c.max_request_head, 65_536);
}

#[test]
fn flags_override_file_and_all_errors_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::config::write_test_file(
        dir.path(),
        "tollgate.toml",
        "proxy_listen = \"127.0.0.1:9999\"\nweb_listen = \"127.0.0.1:9998\"\nidle_timeout = \"5m\"\n",
    );
    let over = ServeOverrides {
        config: Some(path.clone()),
        proxy_listen: Some("127.0.0.1:7777".into()),
        ..Default::default()
    };
    let c = Config::resolve(&over).unwrap();
    assert_eq!(c.proxy_listen.to_string(), "127.0.0.1:7777");
    assert_eq!(c.web_listen.to_string(), "127.0.0.1:9998");
    assert_eq!(c.idle_timeout, Duration::from_secs(300));

    let bad = ServeOverrides {
        proxy_listen: Some("nope".into()),
        connect_timeout: Some("ten".into()),
        public_url: Some("ftp://x".into()),
        ..Default::default()
    };
    let err = Config::resolve(&bad).unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
}

#[test]
fn oauth_settings_from_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::config::write_test_file(dir.path(), "ca.pem", "x");
    let path = crate::config::write_test_file(
        dir.path(),
        "tollgate.toml",
        &format!(
            "consent_user_header = \"X-Forwarded-User\"\nupstream_ca_file = {:?}\n",
            ca.display().to_string()
        ),
    );
    let over = ServeOverrides {
        config: Some(path),
        ..Default::default()
    };
    let c = Config::resolve(&over).unwrap();
    let crate::config::login::LoginConfig::Header(h) = c.login else {
        panic!("{:?}", c.login)
    };
    assert_eq!(h.user.as_str(), "x-forwarded-user");
    assert_eq!(c.upstream_ca_file.as_deref(), Some(ca.as_path()));
    let bad = ServeOverrides {
        consent_user_header: Some("not a header".into()),
        upstream_ca_file: Some(dir.path().join("missing.pem")),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&bad).unwrap_err().0.len(), 2);
}

#[test]
fn ca_cert_and_key_come_together() {
    let half = ServeOverrides {
        ca_cert: Some("ca.pem".into()),
        ..Default::default()
    };
    let err = Config::resolve(&half).unwrap_err().to_string();
    assert!(err.contains("--ca-cert needs --ca-key"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = crate::config::write_test_file(
        dir.path(),
        "tollgate.toml",
        "ca_cert = \"c.pem\"\nca_key = \"c.key\"\n",
    );
    let c = Config::resolve(&ServeOverrides {
        config: Some(path),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.ca, Some(("c.pem".into(), "c.key".into())));
}

#[test]
fn relay_settings_from_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::config::write_test_file(
        dir.path(),
        "tollgate.toml",
        "relay_listen = \"127.0.0.1:0\"\nrevoked_agents = [\"old-1\", \"old-2\"]\nrelay_keepalive = \"2s\"\n",
    );
    let over = ServeOverrides {
        config: Some(path.clone()),
        ..Default::default()
    };
    let c = Config::resolve(&over).unwrap();
    assert_eq!(c.revoked_agents, ["old-1", "old-2"]);
    assert_eq!(c.relay_keepalive, Duration::from_secs(2));
    let over = ServeOverrides {
        config: Some(path),
        revoked_agents: Some(vec!["x".into(), "Not An Id".into()]),
        relay_cert: Some("cert.pem".into()),
        ..Default::default()
    };
    let err = Config::resolve(&over).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
}

#[test]
fn unknown_file_key_is_an_error_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::config::write_test_file(
        dir.path(),
        "tollgate.toml",
        "data = \"d\"\nproxy_lisen = \"x\"\n",
    );
    let over = ServeOverrides {
        config: Some(path),
        ..Default::default()
    };
    let err = Config::resolve(&over).unwrap_err().to_string();
    assert!(err.contains(":2:"), "{err}");
    assert!(err.contains("proxy_lisen"), "{err}");
}
