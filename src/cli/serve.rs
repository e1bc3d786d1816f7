//! `tollgate serve`: bind the listeners, print the banner, run until SIGTERM or SIGINT.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the server with validated settings on a multi-threaded runtime.
pub fn run(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = crate::server::Server::bind(config).await?;
        let out = crate::logging::Output(server.log_format());
        for line in server.banner() {
            println!("{}", out.banner(&line));
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::cancel_on_signal(shutdown.clone()));
        server.run(shutdown).await?;
        anyhow::Ok(())
    })
}
