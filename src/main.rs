//! `tollgate` command line: clap parsing, tracing setup, rustls provider, then the library.
//! Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tollgate::config::{Config, LogFormat, ServeOverrides};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Egress proxy: caller identity, egress policies, OAuth token injection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, web and (optionally) relay listeners.
    Serve(Box<ServeOverrides>),
    /// Check or explain egress policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Caller tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The interception CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Manage the org's outbound applications through the admin API.
    App {
        #[command(flatten)]
        target: tollgate::cli::app::Target,
        #[command(subcommand)]
        command: tollgate::cli::app::AppCommand,
    },
    /// Private-network agents: enroll one, or run one.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Subcommand)]
enum AgentCommand {
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
        ttl: Option<std::time::Duration>,
    },
    /// Run an agent: dial out to tollgate's relay and open tunnels into this network.
    Run(Box<tollgate::config::agent::AgentArgs>),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy file: exit 0 when valid, 1 with every error as FILE:LINE: message.
    Check {
        /// Directory of policy files.
        #[arg(long, env = "TOLLGATE_POLICIES", default_value = "policies")]
        policies: PathBuf,
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
        target: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a caller token offline with the data directory's identity key.
    Mint {
        /// Data directory holding keys/identity.key.
        #[arg(long, env = "TOLLGATE_DATA", default_value = "data")]
        data: PathBuf,
        /// Organization (`org` claim).
        #[arg(long)]
        org: String,
        /// User (`sub` claim).
        #[arg(long)]
        user: String,
        /// Role to grant (repeatable); `admin` may manage the org's outbound applications.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum CaCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process (ring); installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve(over) => serve(*over),
        Command::Policy(PolicyCommand::Check { policies }) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            policy_check(&policies)
        }
        Command::Policy(PolicyCommand::Explain {
            policies,
            org,
            user,
            json,
            no_resolve,
            server,
            token,
            target,
        }) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            let apps = match token.filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(t) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the runtime")
                    .and_then(|rt| rt.block_on(tollgate::cli::app::fetch_apps(&server, &t)))
                    .map(Some),
            };
            apps.and_then(|apps| {
                tollgate::explain::run(
                    &policies,
                    &org,
                    user.as_deref(),
                    &target,
                    json,
                    !no_resolve,
                    apps.as_deref(),
                )
                .map(|_| ())
            })
        }
        Command::Token(TokenCommand::Mint {
            data,
            org,
            user,
            roles,
            ttl,
        }) => token_mint(&data, &org, &user, &roles, ttl),
        Command::Ca(CaCommand::Export { data, ca_cert }) => ca_export(&data, ca_cert),
        Command::Agent(AgentCommand::Enroll { data, id, ttl }) => agent_enroll(&data, &id, ttl),
        Command::Agent(AgentCommand::Run(args)) => agent_run(&args),
        Command::App { target, command } => {
            let _log = init_tracing(LogFormat::Text, "warn");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")
                .and_then(|rt| rt.block_on(tollgate::cli::app::run(&target, command)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Sets up logging to stderr. Returns the guard of the background writer, which must live
/// until the process exits so buffered lines are flushed.
fn init_tracing(format: LogFormat, default_filter: &str) -> tollgate::logging::FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (writer, guard) = tollgate::logging::BufferedStderr::new();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        // The connection span's fields are on the access line already; serializing the span
        // with every event would cost a JSON round trip per line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

fn serve(over: ServeOverrides) -> anyhow::Result<()> {
    let config = match Config::resolve(&over) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let _log = init_tracing(config.log_format, "info");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = tollgate::server::Server::bind(config).await?;
        for line in server.banner() {
            println!("{line}");
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(tollgate::server::cancel_on_signal(shutdown.clone()));
        server.run(shutdown).await?;
        anyhow::Ok(())
    })
}

fn policy_check(dir: &std::path::Path) -> anyhow::Result<()> {
    match tollgate::policy::PolicySet::load_dir(dir) {
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

fn token_mint(
    data: &std::path::Path,
    org: &str,
    user: &str,
    roles: &[String],
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    if let Some(problem) = tollgate::identity::claims_problem(org, user, roles) {
        bail!("{problem}");
    }
    let path = tollgate::datadir::DataDir::at(data).identity_key;
    let key = tollgate::identity::load_key_file(&path).with_context(|| {
        format!(
            "{}: no identity key; run `tollgate serve` once to create the data directory",
            path.display()
        )
    })?;
    let token = tollgate::identity::mint(&key, org, user, roles, ttl);
    println!("{token}");
    Ok(())
}

fn agent_enroll(
    data: &std::path::Path,
    id: &str,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let path = tollgate::datadir::DataDir::at(data).identity_key;
    let key = tollgate::identity::load_key_file(&path).with_context(|| {
        format!(
            "{}: no identity key; run `tollgate serve` once to create the data directory",
            path.display()
        )
    })?;
    let credential =
        tollgate::relay::credential::enroll(&key, id, ttl).map_err(anyhow::Error::msg)?;
    println!("{credential}");
    Ok(())
}

fn agent_run(args: &tollgate::config::agent::AgentArgs) -> anyhow::Result<()> {
    let config = match tollgate::config::agent::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let _log = init_tracing(config.log_format, "info");
    // Relay connections run on threads of their own (see `agent::run`); this runtime
    // only waits for signals.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(tollgate::server::cancel_on_signal(shutdown.clone()));
        tollgate::agent::run(config, shutdown).await;
    });
    Ok(())
}

fn ca_export(data: &std::path::Path, ca_cert: Option<PathBuf>) -> anyhow::Result<()> {
    let path = ca_cert.unwrap_or_else(|| tollgate::datadir::DataDir::at(data).ca_cert);
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no CA yet; run `tollgate serve` once to create it",
            path.display()
        )
    })?;
    print!("{pem}");
    Ok(())
}
