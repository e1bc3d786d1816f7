//! `tollgate serve`: prepares the data directory, loads policies, binds the listeners and
//! runs them until SIGTERM/SIGINT, then drains.
//!
//! As in mini-redis, [`Server::bind`] binds the sockets and [`Server::run`] takes a shutdown
//! token, so tests can bind `127.0.0.1:0` and stop the server cleanly.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::store::StoreLocation;
use crate::config::Config;
use crate::datadir::{DataDir, DataDirError};
use crate::identity::{load_key_file, Verifier};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::policy::watch::{self, Policies};
use crate::policy::Host;
use crate::proxy::intercept::{self, InterceptPredicate};
use crate::proxy::{self, ProxySettings, ProxyState};
use crate::relay::credential::{CredentialVerifier, Revocations};
use crate::relay::{self, AgentControl, Registry, RelayListener, RelaySettings};
use crate::route::{DirectDialer, Guard, Router, SystemResolver};
use crate::store::{PgStore, SledStore, Store, StoreKey};
use crate::tls::{Ca, LeafCache, TlsError, LEAF_CACHE_CAPACITY};
use crate::web::{self, WebState};

mod background;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be prepared.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The interception CA or the upstream TLS configuration is not usable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The relay listener could not be set up.
    #[error(transparent)]
    Relay(#[from] relay::RelayError),
    /// The policies directory could not be created.
    #[error("cannot create policies directory {path}: {source}")]
    Policies {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The OpenTelemetry exporter (`--otlp-endpoint`) could not be set up.
    #[error("otlp: {0}")]
    Otlp(String),
}

/// A server with its sockets bound, ready to run.
pub struct Server {
    config: Config,
    data: DataDir,
    proxy_listener: TcpListener,
    web_listener: TcpListener,
    relay: Option<RelayListener>,
    policies: Arc<Policies>,
    store: Arc<dyn Store>,
    /// Leaf certificates signed by the interception CA (loaded and checked in `bind`).
    leaves: Arc<LeafCache>,
    /// Upstream TLS client configuration (webpki roots + `--upstream-ca-file`).
    upstream_tls: rustls::ClientConfig,
    /// Which `CONNECT`s are intercepted (default: none).
    intercept_predicate: InterceptPredicate,
    /// Where the proxy listener is bound.
    pub proxy_addr: SocketAddr,
    /// Where the web listener is bound.
    pub web_addr: SocketAddr,
    /// Where the relay listener is bound, when enabled.
    pub relay_addr: Option<SocketAddr>,
    /// Base URL of the web listener.
    pub public_url: String,
    /// The metrics listener (`--metrics-listen`), when enabled.
    metrics_listener: Option<TcpListener>,
    /// Where the metrics listener is bound, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The shutdown sequence: `/readyz` first, the drain delay, the drain, then the hooks.
    lifecycle: Arc<Lifecycle>,
    /// The store's keys (shared with the store), replaced when the store key ring changes.
    store_key: StoreKey,
}

impl Server {
    /// Prepares the data dir, loads policies and binds the listeners.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        crate::fdlimit::raise_and_check(
            config.max_connections
                + config.limits.web_max_connections
                + config
                    .relay_listen
                    .map_or(0, |_| relay::listener::MAX_PENDING_HANDSHAKES),
        );
        let data = DataDir::prepare(&config.data_dir)?;
        if !config.policies_dir.exists() {
            std::fs::create_dir_all(&config.policies_dir).map_err(|source| {
                ServeError::Policies {
                    path: config.policies_dir.clone(),
                    source,
                }
            })?;
            tracing::warn!(
                dir = %config.policies_dir.display(),
                "policies directory did not exist and was created empty: every destination is denied until a policy allows it"
            );
        }
        // The operator's CA, or the CA ring's signing CA (and the oldest one not retired for
        // the relay's certificate, which agents may pin).
        let (ca, relay_ca) = match &config.ca {
            Some((cert, key)) => {
                let ca = Arc::new(Ca::load(cert, key)?);
                (ca.clone(), ca)
            }
            None => crate::keys::ca_ring::load_for_serve(&data.root)?,
        };
        let leaves = Arc::new(LeafCache::new(ca, LEAF_CACHE_CAPACITY)?);
        let upstream_tls = crate::tls::upstream_client_config(config.upstream_ca_file.as_deref())?;
        let policies = Policies::load(config.policies_dir.clone());
        // The store key ring (issue 18): the store seals with its signing key and opens with
        // every key not retired; `run` follows its changes.
        let store_key = crate::keys::store_key::load(&data.root.join("keys")).map_err(|e| {
            DataDirError::Io {
                path: data.store_key.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let store: Arc<dyn Store> = match &config.store {
            StoreLocation::Sled(dir) => Arc::new(SledStore::open(dir, store_key.clone())?),
            StoreLocation::Postgres(url) => Arc::new(PgStore::open(url, store_key.clone()).await?),
        };
        tracing::info!(store = %config.store, "store opened");
        // The listener and the address it got (the port, when asked for port 0).
        let bind = |addr: SocketAddr| async move {
            let bound = TcpListener::bind(addr)
                .await
                .and_then(|l| Ok((l.local_addr()?, l)));
            bound.map_err(|source| ServeError::Bind { addr, source })
        };
        let (proxy_addr, proxy_listener) = bind(config.proxy_listen).await?;
        let (web_addr, web_listener) = bind(config.web_listen).await?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{web_addr}"));
        let relay = match config.relay_listen {
            None => None,
            Some(addr) => {
                let cert = config
                    .relay_cert
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path()));
                Some(RelayListener::bind(addr, &relay_ca, &public_url, cert).await?)
            }
        };
        let (metrics_addr, metrics_listener) = match config.metrics_listen {
            Some(addr) => {
                let (a, l) = bind(addr).await?;
                (Some(a), Some(l))
            }
            None => (None, None),
        };
        Ok(Server {
            lifecycle: Arc::new(Lifecycle::new(config.replicas.shutdown_delay)),
            metrics_listener,
            metrics_addr,
            config,
            data,
            proxy_listener,
            web_listener,
            relay_addr: relay.as_ref().map(|r| r.addr),
            relay,
            policies,
            store,
            leaves,
            upstream_tls,
            intercept_predicate: intercept::never(),
            proxy_addr,
            web_addr,
            public_url,
            store_key,
        })
    }

    /// Intercepts the `CONNECT`s for which `predicate` holds (after the policy allowed them)
    /// instead of tunnelling them blindly.
    pub fn intercept_when(&mut self, predicate: InterceptPredicate) -> &mut Self {
        self.intercept_predicate = predicate;
        self
    }

    /// The shutdown sequence, where steps to run at shutdown are registered
    /// ([`Lifecycle::on_shutdown`]).
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// The leaf certificate cache (and through it, the interception CA).
    pub fn leaf_cache(&self) -> Arc<LeafCache> {
        self.leaves.clone()
    }

    /// The log format, which the banner is printed in too.
    pub fn log_format(&self) -> crate::config::LogFormat {
        self.config.log_format
    }

    /// Lines for the operator: where things are and how to get a first token.
    pub fn banner(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let data = self.data.root.display();
        for created in &self.data.created {
            lines.push(format!("tollgate: created {}", created.display()));
        }
        lines.push(format!(
            "tollgate: data directory {data} (identity key {}, interception CA {})",
            self.data.identity_key.display(),
            self.leaves.ca().cert_path.display()
        ));
        lines.push(format!(
            "tollgate: mint a caller token with: tollgate token mint --data {data} --org ORG --user USER [--role admin]"
        ));
        lines.push(format!(
            "tollgate: policies from {} ({} policies in {} files)",
            self.policies.dir().display(),
            self.policies.current().policy_count(),
            self.policies.current().file_count()
        ));
        lines.push(format!("tollgate: proxy listening on {}", self.proxy_addr));
        if let Some(relay) = &self.relay {
            let names = if relay.names.is_empty() {
                "--relay-cert".to_string()
            } else {
                relay.names.join(", ")
            };
            lines.push(format!(
                "tollgate: relay listening on {} (certificate for {names}); enroll an agent with: tollgate agent enroll --data {data} --id ID",
                relay.addr
            ));
        }
        if let Some(addr) = self.metrics_addr {
            lines.push(format!(
                "tollgate: metrics listening on {addr} (no auth: for an internal scrape network)"
            ));
        }
        lines.push(format!("tollgate: web listening on {}", self.public_url));
        lines
    }

    /// Runs until `shutdown` is cancelled, then leaves as [`Lifecycle`] orders: `/readyz`
    /// turns `503`, the listeners accept for the drain delay, then drain; then the leases
    /// are released and the shutdown hooks run.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ServeError> {
        // Every listener and background task stops on the lifecycle's token, after the delay.
        let stop = self.lifecycle.stop_token();
        tokio::spawn(self.lifecycle.clone().drive(shutdown));
        let shutdown = stop;
        let key = load_key_file(&self.data.identity_key).map_err(|source| DataDirError::Io {
            path: self.data.identity_key.clone(),
            source,
        })?;
        let revocations = Arc::new(Revocations::new(self.config.revoked_agents.clone()));
        let credentials = Arc::new(CredentialVerifier::with_revocations(
            &key,
            revocations.clone(),
        ));
        let issuers = Arc::new(crate::identity::Issuers::new(self.config.issuers.clone()));
        let verifier = Arc::new(
            Verifier::new(key)
                .with_max_ttl(self.config.max_token_ttl)
                .with_issuers(issuers.clone()),
        );
        // The identity key ring (issue 18): every key that still verifies, and its changes
        // on disk from now on.
        let keys_dir = self.data.root.join("keys");
        let ring = crate::keys::IdentityRing::load(&keys_dir).map_err(|e| DataDirError::Io {
            path: keys_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let apply_ring = {
            let (verifier, credentials) = (verifier.clone(), credentials.clone());
            move |ring: &crate::keys::IdentityRing| {
                let now = crate::clock::Clock::system().now().unwrap_or(0);
                let (keys, original) = ring.verifying(now);
                verifier.set_keys(&keys, original.clone());
                credentials.set_keys(&keys, original);
            }
        };
        apply_ring(&ring);
        let apply_ring = Arc::new(apply_ring);
        let metrics = Arc::new(Metrics::new());
        metrics.follow_policies(self.policies.clone());
        let observer = metrics.clone();
        self.store = crate::store::timed::Timed::wrap(
            self.store,
            Arc::new(move |op, took| observer.observe_store(op, took)),
        );
        let agents = Arc::new(Registry::new(
            metrics.agents.clone(),
            self.config.connect_timeout,
        ));
        let mut own = vec![self.proxy_addr, self.web_addr];
        own.extend(self.relay_addr);
        let guard = Guard::new(own);
        let deny_policies = self.policies.clone();
        let dialer = Arc::new(
            DirectDialer::new(Arc::new(SystemResolver), guard, self.config.connect_timeout)
                .with_deny_check(Arc::new(move |addr| {
                    deny_policies
                        .current()
                        .denied_by(&Host::Ip(addr.ip()), addr.port())
                        .map(|r| r.to_string())
                }))
                .with_upstream_proxy(self.config.upstream_proxy.clone()),
        );
        // Provider calls speak HTTP/1.1 only: offer nothing else in ALPN.
        let mut http1_tls = self.upstream_tls.clone();
        http1_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let upstream_tls = Arc::new(http1_tls);
        // The one dial point: tunnels, forwarded and intercepted requests (pools offering h2)
        // and provider calls (which bring their HTTP/1.1-only TLS configuration).
        let router = Arc::new(Router::new(
            dialer,
            agents.clone(),
            self.config.upstream_timeout,
            self.upstream_tls.clone(),
        ));
        let oauth = self.oauth(&router, &upstream_tls, &metrics).await;
        // Issuers' JWKS are fetched like provider calls: under a policy, behind the guard.
        issuers.set_fetcher(Arc::new(crate::oauth::egress::Egress::new(
            self.policies.clone(),
            router.clone(),
            upstream_tls.clone(),
            self.config.upstream_timeout,
        )));
        // Revocations from the store apply before the relay accepts an agent, and follow
        // the store's changes from then on.
        let agent_control = Arc::new(AgentControl::new(
            self.store.clone(),
            revocations,
            agents.clone(),
        ));
        let revocation_changes = self.store.subscribe();
        agent_control.load().await?;
        // Revoked caller tokens likewise apply before the first request.
        let token_control = Arc::new(crate::revoke::TokenControl::new(
            self.store.clone(),
            verifier.revoked().clone(),
            crate::clock::Clock::system(),
        ));
        let token_changes = self.store.subscribe();
        token_control.load().await?;
        let login = self.login(&upstream_tls)?;
        let proxy_headers = self.proxy_headers();
        let settings = ProxySettings {
            idle_timeout: self.config.idle_timeout,
            request_head_timeout: self.config.request_head_timeout,
            max_request_head: self.config.max_request_head,
            max_connections: self.config.max_connections,
            shutdown_grace: self.config.shutdown_grace,
            body_timeout: self.config.limits.body_timeout,
            max_connections_per_caller: self.config.limits.max_connections_per_caller,
            proxy_headers: proxy_headers.clone(),
        };
        // `--otlp-endpoint`: one span per request, flushed by a shutdown hook.
        let otel = match &self.config.otlp_endpoint {
            None => None,
            Some(url) => {
                let otel =
                    crate::otel::Otel::start(url).map_err(|e| ServeError::Otlp(e.to_string()))?;
                let flushed = otel.clone();
                (self.lifecycle).on_shutdown("otlp flush", move || flushed.shutdown());
                tracing::info!(endpoint = %url, "otlp: exporting one span per proxied request");
                Some(otel)
            }
        };
        let state = Arc::new(
            ProxyState::new(
                self.policies.clone(),
                verifier.clone(),
                router,
                oauth.injector.clone(),
                self.leaves.clone(),
                metrics.clone(),
                settings,
            )
            .intercept_when(self.intercept_predicate.clone())
            .trace_to(otel),
        );
        let tasks = TaskTracker::new();
        tasks.spawn(watch::watch(
            self.policies.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        tasks.spawn(purge_periodically(
            oauth.store.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        tasks.spawn(
            agent_control
                .clone()
                .follow(revocation_changes, shutdown.clone()),
        );
        // This replica's row in the store's replicas table, and the live list its agents are
        // told; the row is deleted once requests drained (a shutdown step).
        let replica = relay::replicas::replica_id();
        tasks.spawn(relay::replicas::heartbeat(
            self.store.clone(),
            replica.clone(),
            self.relay_addr.map(|bound| {
                self.config
                    .replicas
                    .relay_advertise
                    .clone()
                    .unwrap_or_else(|| relay::replicas::default_advertise(bound, &self.public_url))
            }),
            agents.replicas().clone(),
            shutdown.clone(),
        ));
        let store = self.store.clone();
        self.lifecycle.on_shutdown("replica row", move || {
            relay::replicas::leave(store, replica)
        });
        tasks.spawn(crate::store::replicas::prune_periodically(
            self.store.clone(),
            self.config.replicas.audit_retention,
            shutdown.clone(),
        ));
        tasks.spawn(
            token_control
                .clone()
                .follow(token_changes, shutdown.clone()),
        );
        self.grant_health_tasks(&oauth, &metrics, &tasks, &shutdown);
        let key_admin = self.key_rings(keys_dir, apply_ring, &login, &metrics, &tasks, &shutdown);
        if let Some(listener) = self.metrics_listener {
            tasks.spawn(web::health::run_metrics(
                listener,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        let web_open = metrics.connections("web");
        // `--events-webhook`: grant events queued, delivered by a task, drained at shutdown.
        let with = (&self.lifecycle, &tasks, &shutdown, &self.upstream_tls);
        crate::oauth::events::webhook::start(&self.config.health, &oauth.injector, &metrics, with);
        tasks.spawn(web::run(
            self.web_listener,
            WebState {
                metrics,
                verifier,
                oauth,
                agents: agent_control,
                login,
                lifecycle: self.lifecycle.clone(),
                tokens: token_control,
                keys: key_admin,
            },
            web::listener::WebSettings {
                header_timeout: self.config.limits.web_header_timeout,
                idle_timeout: self.config.limits.web_idle_timeout,
                max_connections: self.config.limits.web_max_connections,
                shutdown_grace: self.config.shutdown_grace,
                open: web_open,
            },
            shutdown.clone(),
        ));
        // Agent connections outlive the proxy's drain (tunnels through them are finishing) and
        // close once it is over.
        let relay_stop = CancellationToken::new();
        if let Some(listener) = self.relay {
            let settings = RelaySettings {
                keepalive: self.config.relay_keepalive,
                handshake_timeout: self.config.limits.relay_handshake_timeout,
                proxy_headers,
            };
            let renewer = Arc::new(relay::renewal::Renewer::new(
                self.data.root.join("keys"),
                credentials.clone(),
                self.store.clone(),
            ));
            tasks.spawn(relay::run(
                listener,
                credentials,
                agents,
                settings,
                relay_stop.clone(),
                renewer,
            ));
        }
        let proxy = proxy::run(self.proxy_listener, state, shutdown.clone());
        tasks.spawn(async move {
            proxy.await;
            relay_stop.cancel();
        });
        tasks.close();
        tasks.wait().await;
        // Ends the lifecycle's task when the server stopped on its own.
        shutdown.cancel();
        self.lifecycle.finish(self.store.as_ref()).await;
        self.store.flush().await?;
        Ok(())
    }
}

impl Server {
    /// The proxy and relay listeners' PROXY protocol setting (`--proxy-protocol`).
    fn proxy_headers(&self) -> crate::io::proxy_header::ProxyHeaders {
        let replicas = &self.config.replicas;
        if replicas.proxy_protocol {
            crate::io::proxy_header::ProxyHeaders::from(replicas.trusted_proxies.clone())
        } else {
            crate::io::proxy_header::ProxyHeaders::off()
        }
    }
}

impl Server {
    /// The OAuth machinery: the domain index (built now), provider calls through the egress
    /// path, and the injector.
    async fn oauth(
        &self,
        router: &Arc<Router>,
        tls: &Arc<rustls::ClientConfig>,
        metrics: &Arc<Metrics>,
    ) -> Arc<OAuth> {
        OAuth::build(
            self.store.clone(),
            self.policies.clone(),
            router.clone(),
            tls.clone(),
            self.config.upstream_timeout,
            self.public_url.clone(),
            metrics.clone(),
        )
        .await
    }
}

impl Server {
    /// Who is signing in at the pages: the session key from the data dir, the IdP reached
    /// like provider endpoints' TLS (platform roots plus `--upstream-ca-file`), discovery
    /// fetched in the background.
    fn login(&self, tls: &rustls::ClientConfig) -> Result<Arc<web::login::Login>, ServeError> {
        // The session key ring (issue 18): `keys/session.key` until rotated.
        let keys_dir = self.data.root.join("keys");
        let ring = crate::keys::SessionRing::load(&keys_dir).map_err(|e| DataDirError::Io {
            path: self.data.session_key.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let now = crate::clock::Clock::system().now().unwrap_or(0);
        let keys = web::login::session::SessionKeys::from_ring(&ring, now);
        if let crate::config::login::LoginConfig::None { explicit: true } = self.config.login {
            tracing::warn!(
                "--login none: the pages ask nobody who they are; anyone holding a consent \
                 link can connect an account to that link's user (development only)"
            );
        }
        let login = Arc::new(web::login::Login::new(
            &self.config.login,
            keys,
            &self.public_url,
            tls.clone(),
            crate::clock::Clock::system(),
        ));
        tokio::spawn({
            let login = login.clone();
            async move { login.warm_up().await }
        });
        Ok(login)
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    token.cancel();
}

/// How often expired consent tickets and pending authorizations are deleted. Every
/// `authorization_required` answer stores a ticket; unused ones would otherwise stay until the
/// next start.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Runs [`Store::purge_stale`] every [`PURGE_INTERVAL`] until `stop`.
async fn purge_periodically(
    store: Arc<dyn Store>,
    stop: tokio_util::sync::WaitForCancellationFutureOwned,
) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    // The store already purged when it opened.
    tick.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => match store.purge_stale().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "purged expired consents and stale records"),
                Err(e) => tracing::warn!(error = %e, "purging stale store records failed"),
            },
        }
    }
}
