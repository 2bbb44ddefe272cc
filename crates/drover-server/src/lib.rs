//! drover's server: the API surfaces, authentication, and the background workers, over one
//! set of stores.
//!
//! The server owns no state of its own: every request becomes one store call, and the store is
//! the single source of truth (so several replicas can later share one database). Surfaces
//! (`surfaces/`) translate wire types into domain calls and map their errors once; they hold no
//! SQL and no lifecycle rule. [`Application`] builds the whole server from one [`AppConfig`]
//! and runs it from already-bound listeners and one shutdown token that every listener and
//! background worker obeys.

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod extract;
pub mod metrics;
pub mod runners;
pub mod serve;
pub mod surfaces;
pub mod tls;
pub mod wake;
pub mod workers;

pub use app::{
    AppConfig, Application, Bound, BuildError, ConfigError, DriverConfig, ListenerConfig,
    ServeError,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{HttpLimits, ServerConfig};
pub use surfaces::Surface;
pub use surfaces::native::error::{self, ApiError};
pub use surfaces::native::translate;
pub use tls::{TlsError, TlsFiles};

use drover_store::Stores;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the store is asked whether it has gone quiet with a log to fold in: cheap when it
/// has not (a few atomic reads).
const STORE_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// What every handler and background worker gets: one shared [`AppParts`], so that handing it to
/// a request (axum clones the state for every extractor and middleware) is one counter, not one
/// per part.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub store: Stores,
    pub config: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<metrics::Metrics>,
    pub runners: Arc<runners::RunnerService>,
    pub workers: workers::WorkerBoard,
    /// Spot credentials already read from the store (they never change once a spot exists).
    pub spot_credentials: Arc<auth::CredentialCache>,
    /// Wakes claims waiting for work (`waitMs`) when a committed write may have freed some.
    pub wake: wake::Wake,
}

impl AppState {
    /// A state without a runner driver: the runner endpoints answer 503 `RUNNERS_DISABLED`.
    pub fn new(store: Stores, config: ServerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::with_runner_driver(store, config, clock, None)
    }

    pub fn with_runner_driver(
        store: Stores,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        driver: Option<Arc<dyn drover_runners::Driver>>,
    ) -> Self {
        let metrics = Arc::new(metrics::Metrics::new().with_store_writes(store.ops.clone()));
        let counted = metrics.clone();
        store.observe(move |events| counted.count_events(events));
        let wake = wake::Wake::new();
        let woken = wake.clone();
        store.observe(move |events| woken.observe(events));
        let runners = Arc::new(runners::RunnerService::new(
            store.clone(),
            driver,
            config.runners.clone(),
            clock.clone(),
            metrics.runners.clone(),
        ));
        let workers = workers::WorkerBoard::new(metrics.workers.clone());
        AppState(Arc::new(AppParts {
            store,
            config: Arc::new(config),
            clock,
            metrics,
            runners,
            workers,
            spot_credentials: Arc::default(),
            wake,
        }))
    }

    pub fn runner_worker(&self) -> workers::RunnerReaper {
        workers::RunnerReaper {
            runners: self.runners.clone(),
        }
    }

    pub fn task_reaper(&self) -> workers::TaskReaper {
        workers::TaskReaper {
            store: self.store.jobs.clone(),
            clock: self.clock.clone(),
            grace: self.config.task_lease_grace,
        }
    }

    pub fn spot_reaper(&self) -> workers::SpotReaper {
        workers::SpotReaper {
            store: self.store.nodes.clone(),
            clock: self.clock.clone(),
            timeout: self.config.spot_timeout,
            retention: self.config.spot_retention,
        }
    }

    pub fn store_checkpoint(&self) -> workers::StoreCheckpoint {
        workers::StoreCheckpoint {
            store: self.store.ops.clone(),
        }
    }

    /// Runs one step of `worker` now and records it on the worker board, as a scheduled step
    /// would be.
    pub async fn step<W: workers::Worker>(&self, worker: &W) -> Result<workers::Counts, W::Error> {
        workers::step(worker, &self.workers, &*self.clock).await
    }

    /// Starts every background worker of this server on its interval (the runner worker only
    /// with a driver); each is listed on the worker board from then on.
    pub fn spawn_workers(&self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let config = &self.config;
        let mut handles = vec![
            self.spawn_worker(self.task_reaper(), config.task_reaper_interval, shutdown),
            self.spawn_worker(self.spot_reaper(), config.spot_reaper_interval, shutdown),
            self.spawn_worker(self.store_checkpoint(), STORE_CHECKPOINT_EVERY, shutdown),
        ];
        if self.runners.enabled() {
            handles.push(self.spawn_worker(
                self.runner_worker(),
                config.runners.cleanup_interval,
                shutdown,
            ));
        }
        handles
    }

    /// Runs `worker` every `every` until `shutdown` fires, recording each step.
    pub fn spawn_worker<W: workers::Worker>(
        &self,
        worker: W,
        every: Duration,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        workers::spawn(
            worker,
            every,
            self.workers.clone(),
            self.clock.clone(),
            shutdown.clone(),
        )
    }
}
