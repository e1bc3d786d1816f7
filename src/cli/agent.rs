//! `tollgate agent`: enroll an agent (offline, on the tollgate side), revoke one (through the
//! API, as an operator), or run one (inside the private network).

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
        /// Lifetime, e.g. 30d or 365d. A connected agent renews it over the relay at two
        /// thirds of it; revoke earlier with `tollgate agent revoke`.
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Refuse every credential issued so far for an agent ID and close its connections
    /// (operator token; enroll the agent again to bring it back).
    Revoke {
        /// Agent ID.
        id: String,
        #[command(flatten)]
        target: super::app::Target,
    },
    /// Run an agent: dial out to tollgate's relay and open tunnels into this network.
    Run(Box<AgentArgs>),
}

/// `agent enroll`: prints the credential on stdout.
pub fn enroll(data: &std::path::Path, id: &str, ttl: Duration) -> anyhow::Result<()> {
    let key = super::load_identity_key(data)?;
    let credential =
        crate::relay::credential::enroll(&key, id, Some(ttl)).map_err(anyhow::Error::msg)?;
    println!("{credential}");
    Ok(())
}

/// `agent revoke`: `POST /v1/agents/{id}/revoke` with an operator token.
pub async fn revoke(target: &super::app::Target, id: &str) -> anyhow::Result<()> {
    if let Some(problem) = crate::relay::credential::agent_id_problem(id) {
        anyhow::bail!("{problem}");
    }
    let api = super::app::Api::new(target)?;
    let path = format!("/v1/agents/{id}/revoke");
    let out = api.call(http::Method::POST, &path, None).await?;
    if target.json {
        println!("{out}");
    } else {
        println!(
            "revoked agent {id}: credentials issued so far are refused and its connections \
             closed; enroll it again to bring it back"
        );
    }
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
