//! A real HAProxy (Debian's `haproxy`) in front of tollgate replicas, running the shipped
//! `deploy/haproxy/haproxy.cfg` with its addresses and ports rewritten to the test's, plus an
//! admin socket to read each server's state. [`Haproxy::start`] prints a notice and returns
//! `None` when HAProxy is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// The binary.
const HAPROXY: &str = "/usr/sbin/haproxy";

/// One replica's listeners, as HAProxy's servers.
pub struct Backend {
    pub proxy: SocketAddr,
    pub web: SocketAddr,
    /// The relay listener, when the replica has one.
    pub relay: Option<SocketAddr>,
}

impl Backend {
    /// The listeners of a running instance (no relay).
    pub fn of(tg: &Tollgate) -> Backend {
        Backend {
            proxy: tg.proxy,
            web: tg.web,
            relay: None,
        }
    }
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// Its proxy frontend (balancing the replicas' proxy listeners).
    pub proxy: SocketAddr,
    /// Its web frontend.
    pub web: SocketAddr,
    /// Its relay frontend.
    pub relay: SocketAddr,
    /// The configuration and the admin socket.
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy in front of `backends` (three, as the shipped file has), or `None` without it.
    pub fn start(test: &str, backends: &[Backend; 3]) -> Option<Haproxy> {
        if !std::path::Path::new(HAPROXY).exists() {
            eprintln!("skipped {test}: HAProxy is not installed (apt-get install haproxy)");
            return None;
        }
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg");
        let mut config = std::fs::read_to_string(shipped).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let frontend =
            |_| -> SocketAddr { format!("127.0.0.1:{}", closed_port()).parse().unwrap() };
        let (proxy, web, relay) = (frontend(()), frontend(()), frontend(()));
        for (bind, addr) in [(":3128", proxy), (":8080", web), (":8443", relay)] {
            config = config.replace(&format!("bind {bind}\n"), &format!("bind {addr}\n"));
        }
        for (i, b) in backends.iter().enumerate() {
            let host = format!("10.0.0.1{}", i + 1);
            let relay = b
                .relay
                .unwrap_or_else(|| format!("127.0.0.1:{}", closed_port()).parse().unwrap());
            config = config
                .replace(&format!("{host}:3128"), &b.proxy.to_string())
                .replace(&format!("{host}:8443"), &relay.to_string())
                .replace(&format!("{host}:8080"), &b.web.to_string())
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with(&format!("server t{} ", i + 1)) {
                        l.replace("port 8080", &format!("port {}", b.web.port()))
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        config.push('\n');
        assert!(
            !config.contains("10.0.0.1"),
            "an address left unrewritten:\n{config}"
        );
        let socket = dir.path().join("admin.sock");
        config = config.replacen(
            "global\n",
            &format!(
                "global\n    stats socket {} level admin\n",
                socket.display()
            ),
            1,
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, &config).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .expect("spawn haproxy");
        let h = Haproxy {
            child,
            proxy,
            web,
            relay,
            dir,
        };
        let up = std::time::Instant::now();
        while h.up("tollgate_proxy") < 3 {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "HAProxy's servers never came up: {:?}\n{}",
                h.states("tollgate_proxy"),
                std::fs::read_to_string(h.dir.path().join("haproxy.log")).unwrap_or_default()
            );
            std::thread::sleep(POLL_EVERY);
        }
        Some(h)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// One admin command's answer (empty when the socket is not ready).
    pub fn admin(&self, command: &str) -> String {
        let Ok(mut s) = UnixStream::connect(self.socket()) else {
            return String::new();
        };
        let _ = s.write_all(format!("{command}\n").as_bytes());
        let mut out = String::new();
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// (server, status) of `backend`'s servers, from `show stat`.
    pub fn states(&self, backend: &str) -> Vec<(String, String)> {
        self.admin("show stat")
            .lines()
            .filter(|l| l.starts_with(&format!("{backend},")))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let (name, status) = (f.get(1)?, f.get(17)?);
                (*name != "BACKEND").then(|| (name.to_string(), status.to_string()))
            })
            .collect()
    }

    /// How many of `backend`'s servers are UP.
    pub fn up(&self, backend: &str) -> usize {
        self.states(backend)
            .iter()
            .filter(|(_, s)| s == "UP")
            .count()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
