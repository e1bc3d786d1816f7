//! `tollgate` command line: clap parsing, tracing setup, rustls provider, then the library
//! (`tollgate::cli`, one file per command group).
//! Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::cli::{agent::AgentCommand, app, ca::CaCommand, policy::PolicyCommand};
use tollgate::cli::{block_on, token::TokenCommand};
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
        target: app::Target,
        #[command(subcommand)]
        command: app::AppCommand,
    },
    /// Private-network agents: enroll one, revoke one, or run one.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Identity keys: list, rotate, retire (offline, or online with an operator token).
    #[command(subcommand)]
    Keys(tollgate::cli::keys::KeysCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process (ring); installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve(over) => {
            let config = Config::resolve(&over).unwrap_or_else(|e| usage_error(e));
            let _log = init_tracing(config.log_format, "info");
            tollgate::cli::serve::run(config)
        }
        Command::Agent(AgentCommand::Run(args)) => {
            let config = tollgate::config::agent::resolve(&args).unwrap_or_else(|e| usage_error(e));
            let _log = init_tracing(config.log_format, "info");
            tollgate::cli::agent::run(config)
        }
        Command::Agent(AgentCommand::Enroll { data, id, ttl }) => {
            tollgate::cli::agent::enroll(&data, &id, ttl)
        }
        Command::Agent(AgentCommand::Revoke { id, target }) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            block_on(tollgate::cli::agent::revoke(&target, &id))
        }
        Command::Token(cmd) => tollgate::cli::token::run(cmd),
        Command::Ca(cmd) => tollgate::cli::ca::run(cmd),
        Command::Keys(cmd) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            block_on(tollgate::cli::keys::run(cmd))
        }
        Command::Policy(cmd) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            tollgate::cli::policy::run(cmd)
        }
        Command::App { target, command } => {
            let _log = init_tracing(LogFormat::Text, "warn");
            block_on(app::run(&target, command))
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

/// Invalid settings: every problem on stderr, exit code 2.
fn usage_error(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(2)
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
