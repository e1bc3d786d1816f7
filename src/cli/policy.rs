//! `tollgate policy`: check the policy files, explain the decision for one destination or
//! request, or test request cases against them (`policy_test`).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// `tollgate policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate every policy file: exit 0 when valid, 1 with every error as FILE:LINE: message.
    Check {
        /// Directory of policy files.
        #[arg(long, env = "TOLLGATE_POLICIES", default_value = "policies")]
        policies: PathBuf,
    },
    /// Run request cases ([[case]] tables) against the policy files: exit 1 on any failure.
    Test {
        /// Directory of policy files.
        #[arg(long, env = "TOLLGATE_POLICIES", default_value = "policies")]
        policies: PathBuf,
        /// Running tollgate's web listener, asked for the apps that `app` expectations name.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Admin token of an org (cases of that org can then check `app`).
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Case files.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Print the decision the proxy would make for a caller of ORG reaching TARGET.
    Explain {
        /// Directory of policy files.
        #[arg(long, env = "TOLLGATE_POLICIES", default_value = "policies")]
        policies: PathBuf,
        /// The caller's organization.
        #[arg(long)]
        org: String,
        /// The caller's user (shown; policies are per organization).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Decide one request with this method (and the URL's path, or `/`), as the proxy
        /// decides plain-http requests and those inside intercepted tunnels.
        #[arg(long)]
        method: Option<String>,
        /// Do not resolve the host to show what the address guard would do.
        #[arg(long)]
        no_resolve: bool,
        /// Running tollgate's web listener, asked which outbound application would inject.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Admin token of the org (without one, the app line says it is unknown).
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A URL (http://host/path, https://host) or host:port.
        target: crate::explain::Target,
    },
}

/// Runs a `policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { policies } => check(&policies),
        PolicyCommand::Test {
            policies,
            server,
            token,
            cases,
        } => {
            let apps = match token.filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => {
                    let org = super::policy_test::token_org(&t)
                        .ok_or_else(|| anyhow::anyhow!("--token is not a caller token"))?;
                    let list = super::block_on(super::app::fetch_apps(&server, &t))?;
                    Some(super::policy_test::Apps { org, list })
                }
            };
            super::policy_test::run(&policies, &cases, apps.as_ref())
        }
        PolicyCommand::Explain {
            policies,
            org,
            user,
            json,
            method,
            no_resolve,
            server,
            token,
            mut target,
        } => {
            target.method = method;
            let apps = match token.filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => Some(super::block_on(super::app::fetch_apps(&server, &t))?),
            };
            crate::explain::run(
                &policies,
                &org,
                user.as_deref(),
                &target,
                json,
                !no_resolve,
                apps.as_deref(),
            )
            .map(|_| ())
        }
    }
}

fn check(dir: &Path) -> anyhow::Result<()> {
    match crate::policy::PolicySet::load_dir(dir) {
        Ok(set) => {
            println!(
                "ok: {} policies in {} files",
                set.policy_count(),
                set.file_count()
            );
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} error(s) in {}", errors.len(), dir.display())
        }
    }
}
