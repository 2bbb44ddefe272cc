//! The application: everything `drover server` runs, built from one [`AppConfig`].
//!
//! [`Application::build`] opens the store, builds the runner driver, binds every listener and
//! mounts its surfaces; [`Application::run_until`] serves them all with the background workers
//! until one shutdown token fires. The binary and the test harness both go through here, so the
//! tests exercise exactly the wiring that users run, extra listeners included. This module
//! decides how the parts are put together, never what a request may do.

use crate::AppState;
use crate::clock::{Clock, SystemClock};
use crate::config::ServerConfig;
use crate::surfaces::{self, Surface};
use crate::tls::{TlsError, TlsFiles};
use drover_runners::Driver;
use drover_runners::docker::{DockerConfig, DockerDriver};
use drover_runners::process::{ProcessConfig, ProcessDriver};
use drover_store::{StoreError, Stores};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest task timeout a job or the server's default may ask for: one year.
use crate::translate::MAX_TASK_TIMEOUT_SECS;

/// Everything the server needs, already merged from flags, environment and file.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the state lives: a SQLite file path, a `sqlite://` URL, or a `postgres://` URL
    /// (several replicas may share one PostgreSQL database).
    pub store_url: String,
    /// How a PostgreSQL store uses its database (pool, timeouts); SQLite ignores it.
    pub postgres: drover_store::PgOptions,
    /// The listeners and the surfaces each serves; the first is the main one.
    pub listeners: Vec<ListenerConfig>,
    /// Keys, limits, intervals.
    pub server: ServerConfig,
    /// How session runners are started; `None` makes the runner routes answer 503.
    pub runner_driver: Option<DriverConfig>,
    /// Serve on non-loopback addresses without keys.
    pub allow_unauthenticated: bool,
    /// When set, every listener speaks https only, with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Where the gRPC services (the node-registry contract) listen; `None` serves none.
    pub grpc: Option<SocketAddr>,
}

/// One listening address and the surfaces it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub surfaces: Vec<Surface>,
}

impl ListenerConfig {
    /// A listener serving every surface that may share one (the default main listener).
    pub fn all(addr: SocketAddr) -> Self {
        ListenerConfig {
            addr,
            surfaces: Surface::MAIN.to_vec(),
        }
    }
}

/// Where a local runner (the process driver's) reaches this server: the first listener that
/// serves the runner routes, on loopback when it listens on every address. A container cannot
/// reach the host's loopback, so the Docker driver's runners are told only a URL configured for
/// them (`--runner-drover-url`).
fn local_runner_url(listeners: &[Bound], tls: bool) -> Option<String> {
    let addr = listeners
        .iter()
        .find(|b| b.surfaces.contains(&Surface::Runners))?
        .listener
        .local_addr()
        .ok()?;
    let addr = SocketAddr::new(drover_runners::ready::probe_ip(addr.ip()), addr.port());
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{addr}"))
}

/// How runner sandboxes are started.
#[derive(Debug, Clone)]
pub enum DriverConfig {
    Docker(DockerConfig),
    Process(ProcessConfig),
}

impl DriverConfig {
    pub fn build(&self) -> Arc<dyn Driver> {
        match self {
            DriverConfig::Docker(c) => Arc::new(DockerDriver::new(c.clone())),
            DriverConfig::Process(c) => Arc::new(ProcessDriver::new(c.clone())),
        }
    }
}

/// Settings that cannot work together, or that would expose the server; the message says
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "refusing to listen on {0} without keys: anyone who can reach it could submit jobs and \
         report results. Set both --agent-key and --api-key (or DROVER_AGENT_KEY and \
         DROVER_API_KEY), bind 127.0.0.1, or pass --allow-unauthenticated"
    )]
    PublicWithoutKeys(std::net::IpAddr),
    #[error(
        "refusing to serve runners on {0} without --api-key: anyone who can reach it could start \
         containers. Set --api-key, listen on 127.0.0.1, or pass --allow-unauthenticated"
    )]
    PublicRunnersWithoutKey(SocketAddr),
    #[error(
        "refusing to serve the dashboard on {0} without --api-key: anyone who can reach it could \
         read every job and cancel it. Set --api-key (the dashboard then asks for it), listen on \
         127.0.0.1, or pass --allow-unauthenticated"
    )]
    PublicDashboardWithoutKey(SocketAddr),
}

impl AppConfig {
    /// A configuration with the contract's defaults: one listener on `addr` serving every
    /// surface, the store at `store_url`, no runner driver.
    pub fn new(store_url: impl Into<String>, addr: SocketAddr) -> Self {
        AppConfig {
            store_url: store_url.into(),
            postgres: drover_store::PgOptions::default(),
            listeners: vec![ListenerConfig::all(addr)],
            server: ServerConfig::default(),
            runner_driver: None,
            allow_unauthenticated: false,
            tls: None,
            grpc: None,
        }
    }

    /// Refuses settings that cannot work or that would serve the API to anyone without keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        let s = &self.server;
        if s.default_max_attempts == 0 {
            return invalid("max attempts must be at least 1");
        }
        for (name, d) in [
            ("task reaper interval", s.task_reaper_interval),
            ("spot reaper interval", s.spot_reaper_interval),
            ("spot timeout", s.spot_timeout),
            ("task timeout", s.default_task_timeout),
        ] {
            if d.is_zero() {
                return invalid(&format!("the {name} must be greater than zero"));
            }
        }
        for (name, key) in [("agent key", &s.agent_key), ("API key", &s.api_key)] {
            // A key of blanks looks set but no client can send it: the server would start
            // public to nobody instead of refusing.
            if key.as_deref().is_some_and(|k| k.trim().is_empty()) {
                return invalid(&format!(
                    "the {name} is only whitespace: give a real key, or none"
                ));
            }
        }
        let h = &s.http;
        for (name, d) in [
            ("header timeout", h.header_timeout),
            ("body timeout", h.body_timeout),
            ("idle timeout", h.idle_timeout),
        ] {
            if d.is_zero() {
                return invalid(&format!("the {name} must be greater than zero"));
            }
        }
        if h.max_connections == 0 {
            return invalid("max connections must be at least 1");
        }
        if let Err(e) = drover_core::cluster::LeaseTiming::new(s.cluster.lease_ttl) {
            return invalid(&format!("--lease-ttl: {e}"));
        }
        if s.cluster.replica_id.trim().is_empty() {
            return invalid(
                "the replica id is empty: give each replica a name of its own, or none for a generated one",
            );
        }
        if s.default_task_timeout > Duration::from_secs(MAX_TASK_TIMEOUT_SECS) {
            return invalid("the task timeout must be at most one year");
        }
        if s.runners.inactivity_timeout.is_zero() || s.runners.cleanup_interval.is_zero() {
            return invalid(
                "the runner inactivity timeout and cleanup interval must be greater than zero",
            );
        }
        if self.listeners.is_empty() {
            return invalid("no listener configured: give at least one address to listen on");
        }
        for l in &self.listeners {
            if l.surfaces.is_empty() {
                return invalid(&format!("the listener on {} serves no surface", l.addr));
            }
            let serves = |x| l.surfaces.contains(&x);
            if self.runner_driver.is_none() && l.surfaces == [Surface::Runners] {
                return invalid(&format!(
                    "the listener on {} serves only the runner routes, but no runner driver is \
                     set: choose --runner-driver docker or process",
                    l.addr
                ));
            }
            if l.addr.ip().is_loopback() || self.allow_unauthenticated {
                continue;
            }
            if serves(Surface::Native) && (s.agent_key.is_none() || s.api_key.is_none()) {
                return Err(ConfigError::PublicWithoutKeys(l.addr.ip()));
            }
            if serves(Surface::Runners) && s.api_key.is_none() {
                return Err(ConfigError::PublicRunnersWithoutKey(l.addr));
            }
            if serves(Surface::Dashboard) && s.api_key.is_none() {
                return Err(ConfigError::PublicDashboardWithoutKey(l.addr));
            }
        }
        Ok(())
    }
}

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("opening the store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening the data-availability sink (--da-dir): {0}")]
    DaSink(drover_sinks::SinkError),
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener and the surfaces it serves.
pub struct Bound {
    pub listener: TcpListener,
    pub surfaces: Vec<Surface>,
}

/// The server, built and bound, not yet serving.
pub struct Application {
    state: AppState,
    listeners: Vec<Bound>,
    tls: Option<TlsAcceptor>,
    grpc: Option<TcpListener>,
    /// The certificate and key (PEM) the gRPC listener speaks TLS with, the HTTP listeners'.
    grpc_tls: Option<tonic::transport::Identity>,
}

impl Application {
    /// Validates `config`, opens the store, builds the runner driver and binds every listener,
    /// on the wall clock.
    pub async fn build(config: AppConfig) -> Result<Self, BuildError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] on the given clock (tests pass a manual one).
    pub async fn build_with_clock(
        config: AppConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        Self::build_with_store(config, clock, |store| store).await
    }

    /// [`Application::build_with_clock`] with the opened store passed through `wrap` before the
    /// server uses it (the reliability tests inject faults there).
    pub async fn build_with_store(
        mut config: AppConfig,
        clock: Arc<dyn Clock>,
        wrap: impl FnOnce(Stores) -> Stores,
    ) -> Result<Self, BuildError> {
        config.validate()?;
        // Before the store and the ports: a bad certificate changes nothing on disk.
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let store = drover_store::open_with(&config.store_url, config.postgres.clone()).map_err(
            |source| BuildError::Store {
                url: config.store_url.clone(),
                source,
            },
        )?;
        let store = wrap(store);
        // A database server may be down while this one starts (they often start together):
        // serve anyway, answer 503 on health, and recover when it is back.
        if drover_store::is_postgres(&config.store_url)
            && let Err(e) = store.ops.health().await
        {
            tracing::warn!(error = %e, "the store is not available yet; health answers 503 until it is");
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = TcpListener::bind(l.addr)
                .await
                .map_err(|source| BuildError::Bind {
                    addr: l.addr,
                    source,
                })?;
            listeners.push(Bound {
                listener,
                surfaces: l.surfaces.clone(),
            });
        }
        let grpc_tls = match (&config.tls, config.grpc) {
            (Some(files), Some(_)) => Some(crate::tls::grpc_identity(files)?),
            _ => None,
        };
        let grpc = match config.grpc {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BuildError::Bind { addr, source })?,
            ),
            None => None,
        };
        if config.server.runners.drover_url.is_none()
            && matches!(config.runner_driver, Some(DriverConfig::Process(_)))
        {
            config.server.runners.drover_url = local_runner_url(&listeners, tls.is_some());
        }
        let driver = config.runner_driver.as_ref().map(DriverConfig::build);
        let da = match &config.server.da_dir {
            Some(dir) => Some(drover_sinks::FileSink::open(dir).map_err(BuildError::DaSink)?),
            None => None,
        };
        let state = AppState::with_runner_driver(store, config.server, clock, driver);
        // Over TLS the dashboard's session cookie is sent over HTTPS only.
        state.dashboard.set_secure_cookies(config.tls.is_some());
        if let Some(sink) = da {
            // A fresh state: nothing has set it yet.
            let _ = state.da.set(Arc::new(sink));
        }
        if let Some(main) = listeners.first().and_then(|b| b.listener.local_addr().ok()) {
            let configured = state.config.cluster.advertise_address.as_deref();
            state
                .cluster
                .set_address(crate::cluster::advertised_address(configured, main));
        }
        Ok(Application {
            state,
            listeners,
            tls,
            grpc,
            grpc_tls,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// `https` when the listeners speak TLS, else `http`: how clients must address them.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Each listener's address (the port the OS picked for port 0) and its surfaces.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Vec<Surface>)> {
        self.listeners
            .iter()
            .filter_map(|b| Some((b.listener.local_addr().ok()?, b.surfaces.clone())))
            .collect()
    }

    /// The gRPC listener's address, when there is one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves every listener with the background workers running, until `shutdown` fires; then
    /// stops accepting, lets in-flight requests finish (up to the configured grace), stops the
    /// workers, and closes the store.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Application {
            state,
            listeners,
            tls,
            grpc,
            grpc_tls,
        } = self;
        let config = state.config.clone();
        let mut handles = state.spawn_workers(&shutdown).await;
        if let Some(listener) = grpc {
            let (app, stop) = (state.clone(), shutdown.clone());
            handles.push(tokio::spawn(async move {
                if let Err(e) = crate::grpc::serve(app, listener, grpc_tls, stop).await {
                    tracing::error!(error = %e, "the gRPC listener stopped");
                }
            }));
        }
        let served: Vec<_> = listeners
            .into_iter()
            .map(|b| (b.listener, surfaces::router(state.clone(), &b.surfaces)))
            .collect();
        let mut server = tokio::spawn(crate::serve::serve(
            served,
            config.http.clone(),
            tls,
            shutdown.clone(),
        ));
        let served = tokio::select! {
            done = &mut server => done,
            _ = shutdown.cancelled() => {
                // Claims waiting for work answer now, so they do not hold up the stop.
                state.wake.close();
                match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                    Ok(done) => done,
                    Err(_) => {
                        tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests did not finish in time; dropping them");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        // Whatever ended the server, the workers stop too.
        shutdown.cancel();
        for h in handles {
            let _ = h.await;
        }
        // Every acknowledged change was durable when it was acknowledged, so a close that fails
        // (a full disk refusing the final checkpoint) loses nothing: say so and stop cleanly.
        if let Err(e) = state.store.ops.close().await {
            tracing::error!(error = %e, "closing the store failed; committed changes are safe and are recovered at the next start");
        }
        tracing::info!("server stopped");
        served.map_err(|join| ServeError::Io(std::io::Error::other(join)))
    }
}
