//! Background workers: the reapers that take work back from stuck tasks and silent spots and
//! remove inactive runners, the store's idle checkpoint, and the board that shows how each of
//! them is doing.
//!
//! Each worker is one testable step, [`Worker::run_once`], which returns counts of what it did.
//! [`spawn`] repeats that step on an interval until its token fires (the token of a leader's
//! term: the election in `cluster.rs` runs the workers only while this replica leads), and
//! [`step`] runs it once; both record the outcome on the [`WorkerBoard`] (last run, duration,
//! last error, counts), which `/metrics` and `GET /api/v1/workers` show. A failed step is logged
//! and tried again at the next tick: a worker must never take the server down. The lifecycle
//! rule the reapers apply (back to NEW while attempts remain, else FAILED) lives in the core;
//! the store carries it out.

use crate::clock::{Clock, before};
use crate::metrics::WorkerMetrics;
use drover_core::{TaskStatus, Timestamp};
use drover_store::{JobStore, NodeStore, NodesDown, Released, StoreError, StoreOps};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one step did, by name (`released`, `spots_down`, ...); names a step did nothing of may
/// be left out.
pub type Counts = Vec<(&'static str, u64)>;

/// One step of background work.
#[async_trait::async_trait]
pub trait Worker: Send + Sync + 'static {
    /// What a failed step reports; it is logged and recorded, and the step is tried again next
    /// interval.
    type Error: std::fmt::Display + Send;
    fn name(&self) -> &'static str;
    async fn run_once(&self) -> Result<Counts, Self::Error>;

    /// Whether a step that changed something is recorded in the cluster's action record with
    /// the leader's epoch (`cluster::Led`); only housekeeping of this replica's own files opts
    /// out.
    fn records_actions(&self) -> bool {
        true
    }
}

/// How one worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerState {
    pub name: &'static str,
    /// How often it runs; `None` until it is scheduled.
    pub interval: Option<Duration>,
    pub runs: u64,
    pub failures: u64,
    /// When the last step started, by the server's clock.
    pub last_run_at: Option<Timestamp>,
    pub last_duration: Option<Duration>,
    /// The last step's error; cleared by a step that succeeds.
    pub last_error: Option<String>,
    /// What the last successful step did.
    pub last_counts: BTreeMap<&'static str, u64>,
    /// What every step so far did, summed.
    pub totals: BTreeMap<&'static str, u64>,
}

impl WorkerState {
    fn new(name: &'static str) -> Self {
        WorkerState {
            name,
            interval: None,
            runs: 0,
            failures: 0,
            last_run_at: None,
            last_duration: None,
            last_error: None,
            last_counts: BTreeMap::new(),
            totals: BTreeMap::new(),
        }
    }
}

/// The state of every background worker of one server, written by the workers and read by the
/// surfaces; it also moves the workers' Prometheus series.
#[derive(Clone)]
pub struct WorkerBoard {
    states: Arc<Mutex<BTreeMap<&'static str, WorkerState>>>,
    metrics: WorkerMetrics,
}

impl WorkerBoard {
    pub fn new(metrics: WorkerMetrics) -> Self {
        WorkerBoard {
            states: Arc::new(Mutex::new(BTreeMap::new())),
            metrics,
        }
    }

    fn with<T>(&self, name: &'static str, f: impl FnOnce(&mut WorkerState) -> T) -> T {
        // A panic while holding this lock cannot leave a state half-written that matters more
        // than showing it, so a poisoned lock is used as is.
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        f(states.entry(name).or_insert_with(|| WorkerState::new(name)))
    }

    /// Lists a worker before its first step, with its interval.
    pub fn register(&self, name: &'static str, interval: Option<Duration>) {
        self.with(name, |s| s.interval = interval);
        self.metrics.register(name);
    }

    /// Records one step.
    pub fn record(
        &self,
        name: &'static str,
        started_at: Timestamp,
        took: Duration,
        outcome: Result<&Counts, String>,
    ) {
        self.metrics.record(name, started_at, took, &outcome);
        self.with(name, |s| {
            s.runs += 1;
            s.last_run_at = Some(started_at);
            s.last_duration = Some(took);
            match outcome {
                Ok(counts) => {
                    s.last_error = None;
                    s.last_counts = counts.iter().copied().collect();
                    for (item, n) in counts {
                        *s.totals.entry(item).or_default() += n;
                    }
                }
                Err(e) => {
                    s.failures += 1;
                    s.last_error = Some(e);
                }
            }
        });
    }

    /// Every worker's state, by name.
    pub fn snapshot(&self) -> Vec<WorkerState> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.values().cloned().collect()
    }
}

/// Runs one step of `worker` and records it on `board`.
pub async fn step<W: Worker>(
    worker: &W,
    board: &WorkerBoard,
    clock: &dyn Clock,
) -> Result<Counts, W::Error> {
    let started_at = clock.now();
    let started = tokio::time::Instant::now();
    let outcome = worker.run_once().await;
    let took = started.elapsed();
    board.record(
        worker.name(),
        started_at,
        took,
        outcome.as_ref().map_err(|e| e.to_string()),
    );
    outcome
}

/// Repeats `worker`'s step every `every` until `shutdown` fires, recording each on `board`. The
/// first step runs after one interval, not at once, so a restarted server gives agents a
/// heartbeat period to come back.
pub fn spawn<W: Worker>(
    worker: W,
    every: Duration,
    board: WorkerBoard,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    board.register(worker.name(), Some(every));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {
                    if let Err(e) = step(&worker, &board, &*clock).await {
                        tracing::warn!(worker = worker.name(), error = %e, "background step failed; retrying next interval");
                    }
                }
            }
        }
        tracing::debug!(worker = worker.name(), "stopped");
    })
}

/// Tasks taken back, by where they went.
fn released_counts(released: &[Released]) -> Counts {
    let retried = released.iter().filter(|r| r.to == TaskStatus::New).count() as u64;
    vec![
        ("tasks_retried", retried),
        ("tasks_failed", released.len() as u64 - retried),
    ]
}

fn log_released(released: &[Released]) {
    for r in released {
        match r.to {
            TaskStatus::New => {
                tracing::info!(target: "TaskReaper", "Reaped task {} for retry", r.task_id)
            }
            _ => tracing::warn!(
                target: "TaskReaper",
                "Task {} permanently failed after {} attempts",
                r.task_id,
                r.attempt
            ),
        }
    }
}

/// Takes back RUNNING tasks whose lease (the task timeout) ran out more than `grace` ago.
#[derive(Clone)]
pub struct TaskReaper {
    pub store: Arc<dyn JobStore>,
    pub clock: Arc<dyn Clock>,
    pub grace: Duration,
}

impl TaskReaper {
    pub async fn reap(&self) -> Result<Vec<Released>, StoreError> {
        let cutoff = before(self.clock.now(), self.grace);
        let released = self.store.release_expired_tasks(cutoff).await?;
        log_released(&released);
        Ok(released)
    }
}

#[async_trait::async_trait]
impl Worker for TaskReaper {
    type Error = StoreError;
    fn name(&self) -> &'static str {
        "task-reaper"
    }

    async fn run_once(&self) -> Result<Counts, StoreError> {
        let released = self.reap().await?;
        Ok(released_counts(&released))
    }
}

/// Gives objects of the placement surface that have fewer healthy replicas than their factor
/// replacement copies (`PlacementService::repair_once`).
#[derive(Clone)]
pub struct RepairWorker {
    pub placement: Arc<crate::placement::PlacementService>,
}

#[async_trait::async_trait]
impl Worker for RepairWorker {
    type Error = crate::placement::PlacementError;
    fn name(&self) -> &'static str {
        "replica-repair"
    }

    async fn run_once(&self) -> Result<Counts, Self::Error> {
        let assigned = self.placement.repair_once().await?;
        Ok(vec![("replicas_assigned", assigned as u64)])
    }
}

/// Marks spots without a heartbeat for `timeout` DOWN, and nodes of the placement surface
/// without a stats report for `stats_timeout` when one is set, and takes back their tasks.
#[derive(Clone)]
pub struct SpotReaper {
    pub store: Arc<dyn NodeStore>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
    pub stats_timeout: Option<Duration>,
    /// DOWN spots silent for longer than this are removed from the registry; `None` keeps
    /// them forever.
    pub retention: Option<Duration>,
    /// This replica's place in the cluster: for the takeover grace, during which a new leader
    /// declares no spot DOWN (`drover_core::cluster::may_declare_down`).
    pub cluster: Option<crate::cluster::Cluster>,
}

impl SpotReaper {
    pub async fn reap(&self) -> Result<NodesDown, StoreError> {
        let now = self.clock.now();
        if let Some(cluster) = &self.cluster
            && let Some(since) = cluster.leading_since()
            && !drover_core::cluster::may_declare_down(now, since, cluster.takeover_grace())
        {
            // Their heartbeats may have gone to a replica that died with the old leader.
            tracing::debug!(target: "SpotService", "no SPOT is declared DOWN during the grace after this replica became leader");
            return Ok(NodesDown::default());
        }
        let cutoff = before(now, self.timeout);
        let mut down = self.store.mark_silent_nodes_down(cutoff, now).await?;
        if let Some(timeout) = self.stats_timeout {
            let silent = (self.store)
                .mark_stats_silent_nodes_down(before(now, timeout), now)
                .await?;
            down.nodes.extend(silent.nodes);
            down.released.extend(silent.released);
        }
        if !down.nodes.is_empty() {
            tracing::info!(
                target: "SpotService",
                spots = ?down.nodes,
                "Reaped {} stale SPOTs, freed {} tasks",
                down.nodes.len(),
                down.released.len()
            );
            log_released(&down.released);
        }
        Ok(down)
    }
}

#[async_trait::async_trait]
impl Worker for SpotReaper {
    type Error = StoreError;
    fn name(&self) -> &'static str {
        "spot-reaper"
    }

    async fn run_once(&self) -> Result<Counts, StoreError> {
        let down = self.reap().await?;
        let forgotten = self.forget().await?;
        let mut counts = vec![
            ("spots_down", down.nodes.len() as u64),
            ("spots_forgotten", forgotten.len() as u64),
        ];
        counts.extend(released_counts(&down.released));
        Ok(counts)
    }
}

impl SpotReaper {
    /// Removes DOWN spots silent for longer than the retention; returns their ids.
    pub async fn forget(&self) -> Result<Vec<String>, StoreError> {
        let Some(retention) = self.retention else {
            return Ok(Vec::new());
        };
        let forgotten = self
            .store
            .forget_down_nodes(before(self.clock.now(), retention))
            .await?;
        if !forgotten.is_empty() {
            tracing::info!(
                target: "SpotService",
                "Forgot {} DOWN SPOTs silent for more than {}s",
                forgotten.len(),
                retention.as_secs()
            );
        }
        Ok(forgotten)
    }
}

/// Reconciles runners with their driver once (retried until the engine answers), then removes
/// runners without a heartbeat for the inactivity timeout.
#[derive(Clone)]
pub struct RunnerReaper {
    pub runners: Arc<crate::runners::RunnerService>,
}

#[async_trait::async_trait]
impl Worker for RunnerReaper {
    type Error = crate::runners::RunnerError;
    fn name(&self) -> &'static str {
        "runner-reaper"
    }

    async fn run_once(&self) -> Result<Counts, Self::Error> {
        self.runners.run_once().await
    }
}

/// Folds the store's log into its data once the server has gone quiet after writing (the
/// store decides what quiet is and never waits for a busy writer), so that a burst followed by
/// idleness does not leave a large WAL on disk.
#[derive(Clone)]
pub struct StoreCheckpoint {
    pub store: Arc<dyn StoreOps>,
}

#[async_trait::async_trait]
impl Worker for StoreCheckpoint {
    type Error = StoreError;
    fn name(&self) -> &'static str {
        "store-checkpoint"
    }

    /// Folding this replica's own log changes nothing another replica could also do.
    fn records_actions(&self) -> bool {
        false
    }

    async fn run_once(&self) -> Result<Counts, StoreError> {
        let released = self.store.checkpoint_idle().await?;
        Ok(vec![("wal_bytes_released", released)])
    }
}
