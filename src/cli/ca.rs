//! `tollgate ca`: the interception CA that clients must trust.

use std::path::PathBuf;

use anyhow::Context;

use crate::keys::ca_ring::{self, CaRing};

/// `tollgate ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Print the interception CA certificate that signs now (PEM) on stdout; with `--all`,
    /// every CA not retired (during a rotation's overlap: the old and the new).
    Export {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// The operator-supplied CA certificate `serve` uses instead of the generated one.
        #[arg(long, env = "TOLLGATE_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Every CA clients should trust, each after a `# ... kid=ID state=STATE` line.
        #[arg(long)]
        all: bool,
    },
}

/// Runs a `ca` subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    let CaCommand::Export { data, ca_cert, all } = cmd;
    if let Some(path) = ca_cert {
        // The operator's CA: one pair, rotated by pointing serve at another.
        let pem = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        print!("{pem}");
        return Ok(());
    }
    let dir = ca_ring::ca_dir(&data);
    let cert = crate::datadir::DataDir::at(&data).ca_cert;
    if !cert.exists() {
        anyhow::bail!(
            "{}: no CA yet; run `tollgate serve` once to create it",
            cert.display()
        );
    }
    let ring = CaRing::load(&dir)?;
    let now = crate::clock::Clock::system().now()?;
    if all {
        print!("{}", ca_ring::export_all(&ring, now));
    } else {
        print!("{}", ring.signing(now).cert_pem());
    }
    Ok(())
}
