//! Background workers that take work back from stuck tasks and silent spots, and remove
//! inactive runners.
//!
//! Each reaper is one testable step, `run_once()`, and [`spawn`] repeats that step on an
//! interval until the server's shutdown signal fires. A failed step is logged and tried again at
//! the next tick: a reaper must never take the server down. The lifecycle rule they apply (back to
//! NEW while attempts remain, else FAILED) lives in the core; the store carries it out.

use crate::clock::{Clock, before};
use drover_core::TaskStatus;
use drover_store::{JobStore, NodeStore, NodesDown, Released, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One step of background work.
#[async_trait::async_trait]
pub trait Worker: Send + Sync + 'static {
    /// What a failed step reports; it is logged, and the step is tried again next interval.
    type Error: std::fmt::Display + Send;
    fn name(&self) -> &'static str;
    async fn run_once(&self) -> Result<(), Self::Error>;
}

/// Repeats `worker.run_once()` every `every` until `shutdown` fires. The first step runs after one
/// interval, not at once, so a restarted server gives agents a heartbeat period to come back.
pub fn spawn<W: Worker>(worker: W, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {
                    if let Err(e) = worker.run_once().await {
                        tracing::warn!(worker = worker.name(), error = %e, "background step failed; retrying next interval");
                    }
                }
            }
        }
        tracing::debug!(worker = worker.name(), "stopped");
    })
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

    async fn run_once(&self) -> Result<(), StoreError> {
        self.reap().await.map(drop)
    }
}

/// Marks spots without a heartbeat for `timeout` DOWN and takes back their tasks.
#[derive(Clone)]
pub struct SpotReaper {
    pub store: Arc<dyn NodeStore>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
    /// DOWN spots silent for longer than this are removed from the registry; `None` keeps
    /// them forever.
    pub retention: Option<Duration>,
}

impl SpotReaper {
    pub async fn reap(&self) -> Result<NodesDown, StoreError> {
        let now = self.clock.now();
        let cutoff = before(now, self.timeout);
        let down = self.store.mark_silent_nodes_down(cutoff, now).await?;
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

    async fn run_once(&self) -> Result<(), StoreError> {
        self.reap().await?;
        self.forget().await.map(drop)
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

    async fn run_once(&self) -> Result<(), Self::Error> {
        self.runners.run_once().await
    }
}
