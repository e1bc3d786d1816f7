//! `tollgate store copy --from sled:DIR --to postgres://…`: moves a single-node deployment's
//! store to the shared PostgreSQL store ([`crate::store::copy`]). Stop `tollgate serve`
//! first (sled allows one process); the data directory's `keys/store.key` seals both.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::config::store::StoreLocation;

/// `tollgate store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every app, grant, audit event and agent revocation of a sled store into an empty
    /// PostgreSQL database, secrets still sealed under the data directory's store key.
    Copy {
        /// Data directory (its keys/store.key seals both stores).
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// The source, sled:DIR [default: sled:DATA/store].
        #[arg(long)]
        from: Option<String>,
        /// The target, postgres://… (shown without its password).
        #[arg(long, env = "TOLLGATE_STORE", hide_env_values = true)]
        to: String,
        /// Add only the records the target lacks, even if it holds some (a rerun).
        #[arg(long)]
        merge: bool,
    },
}

/// Runs a `store` subcommand.
pub async fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Copy {
        data,
        from,
        to,
        merge,
    } = cmd;
    let data = crate::datadir::DataDir::at(&data);
    let from = match from {
        None => data.root.join("store"),
        Some(s) => match StoreLocation::parse(&s).map_err(anyhow::Error::msg)? {
            StoreLocation::Sled(dir) => dir,
            StoreLocation::Postgres(_) => bail!("--from: only a sled:DIR store can be copied"),
        },
    };
    let to_shown = match StoreLocation::parse(&to).map_err(anyhow::Error::msg)? {
        StoreLocation::Postgres(url) => StoreLocation::Postgres(url).to_string(),
        StoreLocation::Sled(_) => bail!("--to: the target must be postgres://…"),
    };
    let key = crate::keys::store_key::load(&data.root.join("keys"))
        .with_context(|| format!("{}", data.store_key.display()))?;
    let report = crate::store::copy::copy_sled_to_postgres(&from, &to, key, merge)
        .await
        .with_context(|| format!("copying sled:{} to {to_shown}", from.display()))?;
    println!(
        "tollgate: copied sled:{} to {to_shown}: {} apps, {} grants, {} audit events, {} agent \
         revocations ({} already present, {} skipped: old generations, consent tickets and \
         pending authorizations)",
        from.display(),
        report.apps,
        report.grants,
        report.audit,
        report.agent_revocations,
        report.already_present,
        report.skipped
    );
    Ok(())
}
