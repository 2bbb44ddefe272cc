//! drover's server: the API surfaces, authentication, and the background workers, over one
//! set of stores.
//!
//! The server owns no state of its own: every request becomes one store call, and the store is
//! the single source of truth, so several replicas can share one database; they elect one
//! leader through the store to run the background workers (`cluster.rs`). Surfaces
//! (`surfaces/`) translate wire types into domain calls and map their errors once; they hold no
//! SQL and no lifecycle rule. [`Application`] builds the whole server from one [`AppConfig`]
//! and runs it from already-bound listeners and one shutdown token that every listener and
//! background worker obeys.

pub mod amqp;
pub mod app;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consistency;
pub mod contract_jobs;
pub mod extract;
pub mod grpc;
pub mod journal;
pub mod metrics;
pub mod placement;
pub mod priority;
pub mod runners;
pub mod serve;
pub mod surfaces;
pub mod timed;
pub mod tls;
pub mod ui;
pub mod wake;
pub mod workers;

pub use app::{
    AppConfig, Application, Bound, BuildError, ConfigError, DriverConfig, ListenerConfig,
    ServeError,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ClusterConfig, HttpLimits, ServerConfig};
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
/// How often the leader publishes what the dispatch outbox holds (RabbitMQ mode): a job waits
/// at most about this long between its commit and its publication.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

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
    /// The ring, the scheduler and replica repair of the placement contract.
    pub placement: Arc<placement::PlacementService>,
    /// Node changes for gRPC watchers (`drover.v1.Nodes/WatchNodes`).
    pub node_feed: grpc::watch::NodeFeed,
    pub workers: workers::WorkerBoard,
    /// Spot credentials already read from the store (they never change once a spot exists).
    pub spot_credentials: Arc<auth::CredentialCache>,
    /// Wakes claims waiting for work (`waitMs`) when a committed write may have freed some.
    pub wake: wake::Wake,
    /// This replica's id and role among the replicas of its store.
    pub cluster: cluster::Cluster,
    /// The priority-queue contract's jobs and workers.
    pub priority: Arc<priority::PriorityRouter>,
    /// The outbox's publisher, in the priority contract's RabbitMQ mode.
    pub publisher: Option<amqp::Publisher>,
    /// The data-availability file sink of `POST /da/post`, set once at start-up when
    /// `--da-dir` is given.
    pub da: std::sync::OnceLock<Arc<drover_sinks::FileSink>>,
    /// Publishes the event journal to its sinks, when `--journal-sink` is given.
    pub journal: Option<Arc<journal::Publisher>>,
    /// The web dashboard's login secret and its last hour of figures.
    pub dashboard: Arc<ui::Dashboard>,
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
        let ttl = config.cluster.lease_ttl;
        // `AppConfig::validate` refuses a TTL out of range; a state built by hand may use any.
        let timing = drover_core::cluster::LeaseTiming::new(ttl)
            .unwrap_or_else(|_| drover_core::cluster::LeaseTiming::unchecked(ttl));
        let cluster = cluster::Cluster::new(
            config.cluster.replica_id.clone(),
            timing,
            config.cluster.takeover_grace.unwrap_or(config.spot_timeout),
        );
        let journal = config.journal.clone().map(|journaled| {
            Arc::new(journal::Publisher::new(
                journaled,
                store.journal.clone(),
                clock.clone(),
            ))
        });
        let mut metrics = metrics::Metrics::new()
            .with_store_writes(store.ops.clone())
            .with_cluster_role(cluster.clone());
        if let Some(journal) = &journal {
            metrics = metrics.with_journal(journal.clone());
        }
        let metrics = Arc::new(metrics);
        // Every store call of jobs and nodes, from any surface or worker, is timed here once.
        let store = timed::timed(store, metrics.store_timings.clone());
        let counted = metrics.clone();
        store.observe(move |events| counted.count_events(events));
        let wake = wake::Wake::new();
        let woken = wake.clone();
        store.observe(move |events| woken.observe(events));
        // Another replica's writes reach this one only through the database's notice.
        let poked = wake.clone();
        store.on_work_elsewhere(move || poked.poke());
        let runners = Arc::new(runners::RunnerService::new(
            store.clone(),
            driver,
            config.runners.clone(),
            clock.clone(),
            metrics.runners.clone(),
        ));
        let placement =
            placement::PlacementService::new(store.clone(), clock.clone(), store.ops.is_shared());
        let placed = placement.clone();
        store.observe(move |events| placed.observe(events));
        let dashboard = Arc::new(ui::Dashboard::new(config.api_key.clone(), clock.clone()));
        let charted = dashboard.clone();
        store.observe(move |events| charted.history.observe(events));
        let node_feed = grpc::watch::NodeFeed::default();
        let fed = node_feed.clone();
        store.observe(move |events| fed.observe(events));
        let workers = workers::WorkerBoard::new(metrics.workers.clone());
        let priority = priority::PriorityRouter::new(config.priority.clone());
        let publisher = match &config.priority.dispatch {
            priority::Dispatch::Rabbitmq { url } => Some(amqp::Publisher::new(
                url.clone(),
                store.dispatch.clone(),
                clock.clone(),
            )),
            priority::Dispatch::Native => None,
        };
        AppState(Arc::new(AppParts {
            store,
            config: Arc::new(config),
            clock,
            metrics,
            runners,
            placement,
            node_feed,
            workers,
            spot_credentials: Arc::default(),
            wake,
            cluster,
            priority: Arc::new(priority),
            publisher,
            da: std::sync::OnceLock::new(),
            journal,
            dashboard,
        }))
    }

    pub fn runner_worker(&self) -> workers::RunnerReaper {
        workers::RunnerReaper {
            runners: self.runners.clone(),
        }
    }

    /// The priority contract's aging worker, when aging is on.
    pub fn priority_ager(&self) -> Option<priority::Ager> {
        let step = self.config.priority.aging?;
        Some(priority::Ager {
            jobs: self.store.jobs.clone(),
            clock: self.clock.clone(),
            step,
            routed: matches!(
                self.config.priority.dispatch,
                priority::Dispatch::Rabbitmq { .. }
            ),
        })
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
            stats_timeout: self.config.stats_timeout,
            retention: self.config.spot_retention,
            cluster: Some(self.cluster.clone()),
        }
    }

    pub fn repair_worker(&self) -> workers::RepairWorker {
        workers::RepairWorker {
            placement: self.placement.clone(),
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

    /// Starts the election, which runs every background worker of this server on its interval
    /// (the runner worker only with a driver) while this replica leads, and stops them when
    /// it stops leading or `shutdown` fires. Each worker is listed on the worker board from
    /// now on, leading or not. The first request for the lease is answered before this
    /// returns, so a server alone on its store leads before it serves its first request.
    pub async fn spawn_workers(
        &self,
        shutdown: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        for (name, every) in self.worker_schedule() {
            self.workers.register(name, Some(every));
        }
        let election = cluster::Election::new(
            self.cluster.clone(),
            self.store.cluster.clone(),
            self.clock.clone(),
        );
        let first = election.attempt().await;
        election.apply(first);
        let state = self.clone();
        let term: cluster::TermWorkers =
            Box::new(move |epoch, stop| state.spawn_term_workers(epoch, stop));
        vec![tokio::spawn(election.run(term, shutdown.clone()))]
    }

    /// Every background worker's name and interval.
    fn worker_schedule(&self) -> Vec<(&'static str, Duration)> {
        let config = &self.config;
        let mut schedule = vec![
            ("task-reaper", config.task_reaper_interval),
            ("spot-reaper", config.spot_reaper_interval),
            ("replica-repair", config.repair_interval),
            ("store-checkpoint", STORE_CHECKPOINT_EVERY),
        ];
        if self.runners.enabled() {
            schedule.push(("runner-reaper", config.runners.cleanup_interval));
        }
        if self.publisher.is_some() {
            schedule.push(("amqp-publisher", PUBLISH_EVERY));
        }
        if let Some(journal) = &self.journal {
            let config = journal.config();
            schedule.push(("journal-publisher", config.publish_every));
            schedule.push(("journal-sink-monitor", config.routing.check_interval));
            if config.keep.is_some() {
                schedule.push(("journal-compactor", config.compact_every));
            }
        }
        schedule
    }

    /// Starts the background workers of one leader's term (`epoch`), until `stop` fires.
    fn spawn_term_workers(
        &self,
        epoch: u64,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let config = &self.config;
        let mut handles = vec![
            self.spawn_worker(
                self.led(self.task_reaper(), epoch),
                config.task_reaper_interval,
                stop,
            ),
            self.spawn_worker(
                self.led(self.spot_reaper(), epoch),
                config.spot_reaper_interval,
                stop,
            ),
            self.spawn_worker(
                self.led(self.repair_worker(), epoch),
                config.repair_interval,
                stop,
            ),
            self.spawn_worker(
                self.led(self.store_checkpoint(), epoch),
                STORE_CHECKPOINT_EVERY,
                stop,
            ),
        ];
        if self.runners.enabled() {
            // Adopt or remove what an earlier run left at once, not after the first cleanup
            // interval; on the leader only, since a follower's engine may not hold the
            // sandboxes of the runners it sees in the store. The runner worker retries if the
            // engine is not up yet.
            let runners = self.runners.clone();
            let fence = drover_store::Fence {
                replica_id: self.cluster.replica_id().to_string(),
                epoch,
            };
            handles.push(tokio::spawn(async move {
                if let Err(e) = drover_store::fenced(fence, runners.reconcile()).await {
                    tracing::warn!(error = %e, "runner reconciliation failed; will retry");
                }
            }));
            handles.push(self.spawn_worker(
                self.led(self.runner_worker(), epoch),
                config.runners.cleanup_interval,
                stop,
            ));
        }
        if let Some(ager) = self.priority_ager() {
            let every = ager.interval();
            handles.push(self.spawn_worker(self.led(ager, epoch), every, stop));
        }
        if let Some(publisher) = &self.publisher {
            handles.push(self.spawn_worker(
                self.led(publisher.clone(), epoch),
                PUBLISH_EVERY,
                stop,
            ));
        }
        if let Some(journal) = &self.journal {
            let config = journal.config();
            handles.push(self.spawn_worker(
                self.led(journal::JournalPublisher(journal.clone()), epoch),
                config.publish_every,
                stop,
            ));
            handles.push(self.spawn_worker(
                journal::SinkMonitor(journal.clone()),
                config.routing.check_interval,
                stop,
            ));
            if let Some(keep) = config.keep {
                let compactor = journal::JournalCompactor {
                    store: self.store.journal.clone(),
                    clock: self.clock.clone(),
                    keep,
                };
                handles.push(self.spawn_worker(
                    self.led(compactor, epoch),
                    config.compact_every,
                    stop,
                ));
            }
        }
        handles
    }

    /// `worker` for the term of `epoch` (see [`cluster::Led`]).
    pub fn led<W: workers::Worker>(&self, worker: W, epoch: u64) -> cluster::Led<W> {
        cluster::Led {
            worker,
            epoch,
            cluster: self.cluster.clone(),
            store: self.store.cluster.clone(),
            clock: self.clock.clone(),
        }
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
