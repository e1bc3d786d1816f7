//! PostgreSQL for the replica tests: a fresh database on `TOLLGATE_TEST_POSTGRES` per test
//! ([`fresh_database`]), a replica's data directory sharing another's keys ([`replica_dir`]),
//! a runner's call through one replica ([`call`]), a TCP hop that can cut the way to the
//! database and restore it ([`Cut`]), and a cluster of a test's own that it may restart
//! ([`Cluster`], from `.ci/postgres.sh`). Without the variable, tests print that they were
//! skipped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;

/// A fresh database on the test server, and its URL; `None` (skipped) without the variable.
pub async fn fresh_database(test: &str) -> Option<(String, tokio_postgres::Client)> {
    let Ok(base) = std::env::var("TOLLGATE_TEST_POSTGRES") else {
        eprintln!("skipped {test}: set TOLLGATE_TEST_POSTGRES=postgres://… to run it");
        return None;
    };
    Some(database_on(&base, test).await)
}

/// A fresh database named after `test` on the server of `base`.
pub async fn database_on(base: &str, test: &str) -> (String, tokio_postgres::Client) {
    let (admin, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    let name = format!("tg_{}_{}", test, std::process::id());
    // Two statements: CREATE DATABASE refuses to run inside a (multi-statement) transaction.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let mut url = url::Url::parse(base).unwrap();
    url.set_path(&name);
    let (client, conn) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    (url.to_string(), client)
}

/// Copies the keys and CA of one instance's data directory into a new test directory, as an
/// operator distributes them to replicas.
pub fn replica_dir(from: &Path, policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("10-test.toml"), policy).unwrap();
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    for sub in ["keys", "ca"] {
        copy_tree(&from.join(sub), &dir.path().join("data").join(sub));
    }
    dir
}

/// A runner's request through `tg`'s proxy to the provider's API, as acme's `user`.
pub async fn call(tg: &Tollgate, api_port: u16, user: &str) -> Resp {
    call_via(tg.proxy, tg, api_port, user).await
}

/// [`call`] through the proxy at `proxy` (a balancer in front of `tg` and its replicas),
/// with a token minted from `tg`'s keys.
pub async fn call_via(proxy: SocketAddr, tg: &Tollgate, api_port: u16, user: &str) -> Resp {
    let pa = format!("Bearer {}", tg.token("acme", user));
    proxy_request(
        proxy,
        "GET",
        &format!("http://localhost:{api_port}/records"),
        &[("proxy-authorization", &pa)],
        "",
    )
    .await
}

/// A TCP hop to a database: [`Cut::cut`] resets every connection through it and refuses
/// new ones (accepted, then closed at once, as a restarting server does), [`Cut::restore`]
/// lets them through again.
pub struct Cut {
    /// Where clients connect instead of the database.
    pub addr: SocketAddr,
    /// Set while the way is cut.
    down: Arc<AtomicBool>,
    /// Replaced on every cut; cancelling it ends the connections it started.
    live: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Cut {
    /// A hop to `target` on 127.0.0.1:0.
    pub async fn start(target: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let live = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (d, l) = (down.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let stop = l.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Cut { addr, down, live }
    }

    /// `url` (a `postgres://` URL) pointed at this hop.
    pub fn url(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_port(Some(self.addr.port())).unwrap();
        u.to_string()
    }

    /// Resets every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        let mut live = self.live.lock().unwrap();
        live.cancel();
        *live = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// The address of a `postgres://` URL.
pub fn url_addr(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .unwrap()
}

/// A PostgreSQL cluster of a test's own (so it may restart it without disturbing others),
/// started with `.ci/postgres.sh`; stopped and removed on drop.
pub struct Cluster {
    /// `postgres://…` of its `postgres` database.
    pub url: String,
    /// Its directory (data and log).
    dir: String,
    /// PostgreSQL's `bin` directory.
    bin: String,
}

impl Cluster {
    /// Starts one; `None` (after printing why) when that is not possible here.
    pub fn start(test: &str) -> Option<Cluster> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres.sh");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {script} && pg_test_start >/dev/null && \
                 echo \"$TOLLGATE_TEST_POSTGRES $PG_TEST_DIR $PG_TEST_BIN\""
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        match (
            words.next(),
            words.next(),
            words.next(),
            out.status.success(),
        ) {
            (Some(url), Some(dir), Some(bin), true) => Some(Cluster {
                url: url.to_owned(),
                dir: dir.to_owned(),
                bin: bin.to_owned(),
            }),
            _ => {
                eprintln!(
                    "skipped {test}: cannot start a PostgreSQL cluster of its own: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
        }
    }

    /// `pg_ctl` with `args` as the `postgres` user; panics when it fails.
    fn pg_ctl(&self, args: &[&str]) {
        let data = format!("{}/data", self.dir);
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", self.bin))
            .args(["-D", &data, "-l", &format!("{}/log", self.dir), "-w"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Restarts the server (fast: sessions are terminated), with the options it ran with.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "restart"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", self.bin))
            .args([
                "-D",
                &format!("{}/data", self.dir),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
