//! `tollgate serve`: install the signal handlers, bind the listeners, print the banner, run
//! until SIGTERM or SIGINT (the shutdown sequence is `lifecycle`'s).

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lifecycle::Signals;

/// Runs the server with validated settings on a multi-threaded runtime.
pub fn run(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        // Before any startup work: a signal during it is held, not fatal (SIGHUP's default
        // action would end the process before the policy watcher listens for it).
        let signals = Signals::install();
        let server = crate::server::Server::bind(config).await?;
        let out = crate::logging::Output(server.log_format());
        for line in server.banner() {
            println!("{}", out.banner(&line));
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(signals.drive(shutdown.clone(), server.lifecycle()));
        server.run(shutdown).await?;
        anyhow::Ok(())
    })
}
