//! `tollgate` command line: clap parsing, tracing setup, rustls provider, then the library
//! (`tollgate::cli`, one file per command group).
//! Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage error.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tollgate::cli::{agent::AgentCommand, app, ca::CaCommand, policy::PolicyCommand};
use tollgate::cli::{block_on, token::TokenCommand};
use tollgate::config::{Config, LogFormat, ServeOverrides};
use tollgate::logging::Output;

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
    /// The five-minute tour, offline: tollgate, a TEST-GRADE OAuth provider and API, a policy
    /// and an app on loopback in a temporary directory; prints a token and a curl command.
    Demo,
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
    /// The store: copy a sled store into PostgreSQL.
    #[command(subcommand)]
    Store(tollgate::cli::store::StoreCommand),
    /// Print a shell completion script, e.g. `tollgate completions bash >
    /// /etc/bash_completion.d/tollgate`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `tollgate man > /usr/local/share/man/man1/tollgate.1`.
    Man,
    /// Identity keys: list, rotate, retire (offline, or online with an operator token).
    #[command(subcommand)]
    Keys(tollgate::cli::keys::KeysCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process (ring); installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The format the final error line is written in: JSON when the logs are.
    let mut out = Output(LogFormat::Text);
    let result = match cli.command {
        Command::Serve(over) => {
            out = Output(over.log_format.unwrap_or_default());
            let config = Config::resolve(&over).unwrap_or_else(|e| usage_error(out, e));
            out = Output(config.log_format);
            let _log = init_tracing(config.log_format, "info");
            tollgate::cli::serve::run(config)
        }
        Command::Demo => {
            let _log = init_tracing(LogFormat::Text, "warn");
            tollgate::cli::demo::run()
        }
        Command::Agent(AgentCommand::Run(args)) => {
            let config =
                tollgate::config::agent::resolve(&args).unwrap_or_else(|e| usage_error(out, e));
            out = Output(config.log_format);
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
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tollgate",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(Into::into),
        Command::App { target, command } => {
            let _log = init_tracing(LogFormat::Text, "warn");
            block_on(app::run(&target, command))
        }
        Command::Store(cmd) => {
            let _log = init_tracing(LogFormat::Text, "warn");
            block_on(tollgate::cli::store::run(cmd))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", out.error(&tollgate::logging::error_chain(e.as_ref())));
            ExitCode::from(1)
        }
    }
}

/// Invalid settings: every problem on stderr, exit code 2.
fn usage_error(out: Output, e: impl std::fmt::Display) -> ! {
    eprintln!("{}", out.error(&e.to_string()));
    std::process::exit(2)
}

/// Sets up logging to stderr (`tollgate::logging::init`); the guard must live until exit.
fn init_tracing(format: LogFormat, default_filter: &str) -> tollgate::logging::FlushGuard {
    tollgate::logging::init(format, default_filter)
}
