//! A real Squid on `127.0.0.1` as tollgate's parent proxy (`--upstream-proxy`), with Basic
//! authentication (user `tollgate`, password [`PASSWORD`]) and an access log the tests read.
//! [`Squid::start`] returns `None`, with a printed notice, when `squid` is not installed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Basic password Squid accepts for user `tollgate`.
pub const PASSWORD: &str = "squid-pass-7Qx";

/// A running Squid; stopped when dropped.
pub struct Squid {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An MD5-crypt hash of `password` for Squid's `basic_ncsa_auth`: Python's `crypt` (up to
/// 3.12), else `openssl passwd -1`.
fn md5_crypt(password: &str) -> String {
    let python = Command::new("python3")
        .args([
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_MD5)))",
            password,
        ])
        .stderr(Stdio::null())
        .output();
    let hash = |o: std::io::Result<std::process::Output>| {
        o.ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|h| h.starts_with("$1$"))
    };
    hash(python)
        .or_else(|| {
            hash(
                Command::new("openssl")
                    .args(["passwd", "-1", password])
                    .output(),
            )
        })
        .expect("an MD5-crypt hash for squid (python3 crypt or openssl)")
}

fn squid_bin() -> Option<PathBuf> {
    ["/usr/sbin/squid", "/usr/bin/squid"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl Squid {
    /// Squid listening on a free loopback port, requiring Basic authentication.
    pub async fn start() -> Option<Squid> {
        let Some(bin) = squid_bin() else {
            eprintln!("NOTICE: squid is not installed; parent-proxy tests skipped");
            return None;
        };
        let helper = Path::new("/usr/lib/squid/basic_ncsa_auth");
        let dir = tempfile::tempdir().unwrap();
        // Squid drops privileges to its own user, which must reach its logs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let hash = md5_crypt(PASSWORD);
        let passwd = dir.path().join("passwd");
        let line = format!("tollgate:{hash}");
        std::fs::write(&passwd, line).unwrap();
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
        let port = super::closed_port();
        let d = dir.path().display();
        let conf = format!(
            "http_port 127.0.0.1:{port}\n\
             auth_param basic program {} {}\n\
             acl authed proxy_auth REQUIRED\n\
             http_access allow authed\n\
             http_access deny all\n\
             cache deny all\n\
             pinger_enable off\n\
             access_log stdio:{d}/access.log\n\
             cache_log {d}/cache.log\n\
             pid_filename {d}/squid.pid\n\
             coredump_dir {d}\n\
             shutdown_lifetime 0 seconds\n",
            helper.display(),
            passwd.display(),
        );
        let conf_file = dir.path().join("squid.conf");
        std::fs::write(&conf_file, conf).unwrap();
        // A service name of its own (`-n`): instances running at once must not share Squid's
        // shared-memory segments and pid file names.
        let child = Command::new(bin)
            .args(["-N", "-n", &format!("tollgate{port}"), "-f"])
            .arg(&conf_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn squid");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let squid = Squid { child, addr, dir };
        let up = super::wait_until(Duration::from_secs(30), async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "squid did not start:\n{}", squid.cache_log());
        Some(squid)
    }

    /// `--upstream-proxy` for this Squid, with `password`.
    pub fn url(&self, password: &str) -> String {
        format!("http://tollgate:{password}@{}", self.addr)
    }

    /// Squid's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }
}
