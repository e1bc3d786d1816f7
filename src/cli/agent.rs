//! `tollgate agent`: enroll an agent (offline, on the tollgate side), or run one (inside the
//! private network).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::AgentConfig;
use crate::config::agent::AgentArgs;

/// `tollgate agent` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print a signed agent credential, offline, with the data directory's identity key.
    Enroll {
        /// Data directory holding keys/identity.key.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// Agent ID, as in `route = "agent:ID"`.
        #[arg(long)]
        id: String,
        /// Lifetime, e.g. 365d [default: no expiry; revoke with --revoked-agents].
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Run an agent: dial out to tollgate's relay and open tunnels into this network.
    Run(Box<AgentArgs>),
}

/// `agent enroll`: prints the credential on stdout.
pub fn enroll(data: &std::path::Path, id: &str, ttl: Option<Duration>) -> anyhow::Result<()> {
    let key = super::load_identity_key(data)?;
    let credential = crate::relay::credential::enroll(&key, id, ttl).map_err(anyhow::Error::msg)?;
    println!("{credential}");
    Ok(())
}

/// `agent run` with validated settings, until SIGTERM or SIGINT and the drain after it.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    // Relay connections run on threads of their own (see `agent::run`); this runtime only
    // waits for signals.
    super::block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::cancel_on_signal(shutdown.clone()));
        crate::agent::run(config, shutdown).await;
        Ok(())
    })
}
