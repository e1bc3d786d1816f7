//! tollgate in-process, for what the binary cannot be told from outside: the library's
//! `Server` on 127.0.0.1:0 with interception forced by a predicate and an optional request
//! predicate, its leaf cache inspected, and the access log captured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate::config::{Config, ServeOverrides};
use tollgate::identity::Caller;
use tollgate::policy::Host;
use tollgate::proxy::intercept::InterceptPredicate;
use tollgate::server::Server;
use tollgate::tls::LeafCache;

use super::policies::LOOPBACK as POLICY;
use super::tls::TestCa;

/// tollgate running in-process.
pub struct Running {
    pub proxy: SocketAddr,
    /// The web listener (the admin and operator API).
    pub web: SocketAddr,
    pub dir: tempfile::TempDir,
    pub leaves: Arc<LeafCache>,
    pub shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn auth(&self, org: &str, user: &str) -> String {
        self.auth_ttl(org, user, Duration::from_secs(3600))
    }

    /// `Bearer TOKEN` of a caller token that expires `ttl` from now.
    pub fn auth_ttl(&self, org: &str, user: &str, ttl: Duration) -> String {
        let key = std::fs::read_to_string(self.data().join("keys/identity.key")).unwrap();
        let token = tollgate::identity::mint(
            &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
            org,
            user,
            &[],
            ttl,
        )
        .expect("clock");
        format!("Bearer {token}")
    }

    /// Replaces the test policy file (written aside, then renamed over it, as editors do).
    pub fn write_policy(&self, text: &str) {
        let dir = self.dir.path().join("policies");
        std::fs::write(dir.join(".10-test.toml.tmp"), text).unwrap();
        std::fs::rename(dir.join(".10-test.toml.tmp"), dir.join("10-test.toml")).unwrap();
    }

    /// A caller token (no `Bearer`) with the operator role, for the operator API.
    pub fn operator_token(&self) -> String {
        let key = std::fs::read_to_string(self.data().join("keys/identity.key")).unwrap();
        tollgate::identity::mint(
            &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
            "ops",
            "operator",
            &["operator".to_string()],
            Duration::from_secs(3600),
        )
        .expect("clock")
    }

    /// The tollgate CA as a client gets it: `tollgate ca export`.
    pub fn exported_ca(&self) -> String {
        self.ca_export(&[])
    }

    /// `tollgate ca export ARGS` (e.g. `--all`) on this instance's data directory.
    pub fn ca_export(&self, args: &[&str]) -> String {
        let out = Command::new(super::bin())
            .args(["ca", "export", "--data"])
            .arg(self.data())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Starts tollgate trusting `upstream_ca` (as `--upstream-ca-file`), intercepting the
/// CONNECTs `predicate` selects.
pub async fn start(upstream_ca: &TestCa, predicate: InterceptPredicate) -> Running {
    start_with(upstream_ca, predicate, |_| {}).await
}

/// [`start`], with the overrides adjusted by `adjust`.
pub async fn start_with(
    upstream_ca: &TestCa,
    predicate: InterceptPredicate,
    adjust: impl FnOnce(&mut ServeOverrides),
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("10-test.toml"), POLICY).unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &upstream_ca.pem).unwrap();
    let mut over = ServeOverrides {
        data: Some(dir.path().join("data")),
        policies: Some(policies),
        proxy_listen: Some("127.0.0.1:0".into()),
        web_listen: Some("127.0.0.1:0".into()),
        upstream_ca_file: Some(ca_file),
        ..Default::default()
    };
    adjust(&mut over);
    let mut server = Server::bind(Config::resolve(&over).unwrap()).await.unwrap();
    server.intercept_when(predicate);
    let proxy = server.proxy_addr;
    let web = server.web_addr;
    let leaves = server.leaf_cache();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    Running {
        proxy,
        web,
        dir,
        leaves,
        shutdown,
    }
}

pub fn always() -> InterceptPredicate {
    Arc::new(|_: &Caller, _: &Host, _: u16| true)
}

/// Access log lines of this test binary (JSON), captured once for all tests.
pub fn access_log() -> Arc<Mutex<Vec<u8>>> {
    pub static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("tollgate::access=info")
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn log_lines(buf: &Mutex<Vec<u8>>, user: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&buf.lock().unwrap())
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["user"] == user)
        .collect()
}
