//! `tollgate ca`: the interception CA that clients must trust.

use std::path::PathBuf;

use anyhow::Context;

/// `tollgate ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Print the interception CA certificate (PEM) on stdout.
    Export {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// The operator-supplied CA certificate `serve` uses instead of the generated one.
        #[arg(long, env = "TOLLGATE_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
}

/// Runs a `ca` subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    let CaCommand::Export { data, ca_cert } = cmd;
    let path = ca_cert.unwrap_or_else(|| crate::datadir::DataDir::at(&data).ca_cert);
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no CA yet; run `tollgate serve` once to create it",
            path.display()
        )
    })?;
    print!("{pem}");
    Ok(())
}
