//! `tollgate demo`: the five-minute tour in one command. On loopback, in a temporary
//! directory (never `./data` or `./policies`), it starts tollgate, the TEST-GRADE provider and
//! API of [`crate::demo`], writes the demo policy, registers the app through the admin API,
//! prints a caller token and one curl command, and runs until SIGINT or SIGTERM; then it
//! drains and removes the temporary directory.

use std::time::Duration;

use anyhow::{bail, Context};
use http::Method;
use tokio_util::sync::CancellationToken;

use crate::cli::app::{Api, Target};
use crate::config::{Config, ServeOverrides};
use crate::demo::provider::DemoProvider;
use crate::demo::{self, Running, ORG};

/// Lifetime of the printed caller token.
const CALLER_TTL: Duration = Duration::from_secs(12 * 3600);

/// Lifetime of the admin token the demo registers its app with (not printed).
const ADMIN_TTL: Duration = Duration::from_secs(300);

/// Connections each of tollgate's listeners takes at once in the demo.
const DEMO_MAX_CONNECTIONS: usize = 128;

/// Runs the demo until a signal.
pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(demo(dir.path()));
    drop(rt);
    let shown = dir.path().display().to_string();
    dir.close().with_context(|| format!("removing {shown}"))?;
    println!("tollgate demo: stopped; removed {shown}");
    result
}

/// Starts everything, prints the instructions, waits for a signal, drains.
async fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let shutdown = CancellationToken::new();
    // Registered before anything is printed, so a Ctrl-C at any point still cleans up.
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        on_signal.cancel();
    });
    let provider = DemoProvider::start(shutdown.clone())
        .await
        .context("starting the demo provider")?;
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).context("creating the policies directory")?;
    std::fs::write(policies.join("demo.toml"), demo::policy(&provider))
        .context("writing the demo policy")?;
    let config = Config::resolve(&ServeOverrides {
        data: Some(dir.join("data")),
        policies: Some(policies),
        proxy_listen: Some("127.0.0.1:0".into()),
        web_listen: Some("127.0.0.1:0".into()),
        // A tour, not a deployment: small caps (no file-descriptor warning) and a quick stop.
        max_connections: Some(DEMO_MAX_CONNECTIONS),
        shutdown_grace: Some("2s".into()),
        limits: crate::config::limits::LimitsOverrides {
            web_max_connections: Some(DEMO_MAX_CONNECTIONS),
            ..Default::default()
        },
        // No balancer to tell: Ctrl-C stops at once.
        replicas: crate::config::replicas::ReplicaOverrides {
            shutdown_delay: Some("0s".into()),
            ..Default::default()
        },
        ..Default::default()
    })?;
    let server = crate::server::Server::bind(config).await?;
    let (proxy, web) = (server.proxy_addr, server.public_url.clone());
    provider.accept_redirect(format!("{web}/oauth/callback"));
    let key = super::load_identity_key(&dir.join("data"))?;
    let running = tokio::spawn(server.run(shutdown.clone()));

    let admin = crate::identity::mint(&key, ORG, "demo-admin", &["admin".into()], ADMIN_TTL)?;
    let api = Api::new(&Target {
        server: web.clone(),
        token: Some(admin),
        json: false,
    })?;
    let app = api
        .call(
            Method::POST,
            "/v1/apps",
            Some(demo::app_document(&provider)),
        )
        .await
        .context("registering the demo app")?;
    if app["redirect_uri"].as_str() != Some(format!("{web}/oauth/callback").as_str()) {
        bail!("unexpected redirect URI {}", app["redirect_uri"]);
    }
    let caller = crate::identity::mint(&key, ORG, demo::provider::USER, &[], CALLER_TTL)?;
    let lines = demo::instructions(&Running {
        dir,
        proxy,
        web: &web,
        provider: &provider,
        caller_token: &caller,
    });
    for line in lines {
        println!("{line}");
    }
    let served = running.await.context("the server task")?;
    shutdown.cancel();
    served?;
    Ok(())
}
