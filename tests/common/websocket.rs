//! WebSocket fixtures: a real WebSocket echo server and client, Python `websockets`
//! (`ws.py` beside this file). [`available`] installs the package with pip when it is missing
//! and says whether the tests can run (they print a notice and skip when it cannot be
//! imported).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use rcgen::{CertificateParams, KeyPair};

use super::tls::TestCa;

/// The script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/ws.py")
}

/// Whether Python `websockets` (15 or later: proxies, the sync client) can be imported,
/// after one `pip install` attempt if not. Prints a notice when the tests must skip.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let import = || {
            Command::new("python3")
                .args(["-c", "import websockets.proxy, websockets.sync.client"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if import() {
            return true;
        }
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "websockets>=15"])
            .status();
        let ok = import();
        if !ok {
            eprintln!(
                "NOTICE: Python `websockets` (>= 15) cannot be imported; WebSocket tests skipped"
            );
        }
        ok
    })
}

/// A running echo server; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A plain `ws://` echo server.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// A `wss://` echo server whose certificate (for `localhost` and `127.0.0.1`) is signed by
    /// `ca`; the PEM files go in `dir`.
    pub fn start_tls(ca: &TestCa, dir: &Path) -> Server {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let (cert_file, key_file) = (dir.join("ws-server.pem"), dir.join("ws-server.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Self::start_with(&[
            "--cert",
            super::path_str(&cert_file),
            "--key",
            super::path_str(&key_file),
        ])
    }

    fn start_with(args: &[&str]) -> Server {
        let mut child = Command::new("python3")
            .arg(script())
            .arg("server")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the WebSocket server did not start: {line:?}")
        });
        Server { child, port }
    }
}

/// Runs the client with `args` (see `ws.py`) and returns its JSON line.
pub async fn client(args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script())
            .arg("client")
            .args(&args)
            .output()
            .expect("spawn python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "WebSocket client failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
