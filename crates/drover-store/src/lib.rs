//! drover's durable state.
//!
//! This crate owns the [`Store`] trait, the one way the server reads and changes jobs, tasks,
//! nodes and runners, and its implementations (SQLite now; PostgreSQL implements the same trait and
//! passes the same conformance suite, `tests/conformance.rs`). A store carries out the
//! decisions of `drover_core::lifecycle` inside one transaction per call; it must not invent
//! lifecycle rules of its own, and it must not return before a change is durable.

mod error;
pub mod sqlite;
mod types;

pub use error::StoreError;
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use drover_core::{
    ClaimedTask, Job, JobStatus, Node, NodeInfo, NodeStats, ReportOutcome, Runner, Task,
    TaskStatus, Timestamp, sweep::Sweep,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Durable state of jobs, tasks and nodes.
///
/// Every method is one transaction: when it returns `Ok`, the change is on disk (invariant 3);
/// when it returns `Err`, nothing of it was written. `now` is passed in so that callers (and
/// tests) own the clock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds when the store can take a write right now.
    async fn health(&self) -> Result<()>;

    /// Counts shown by the health endpoint.
    async fn overview(&self) -> Result<Overview>;

    /// Creates a job and every task of its sweep, all NEW.
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job>;

    async fn get_job(&self, id: &str) -> Result<Job>;

    /// Jobs newest first; the cursor is the last seen job's `seq`.
    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>>;

    /// Cancels a job: its NEW and RUNNING tasks become CANCELLED. Cancelling a cancelled job
    /// changes nothing; a job that already finished gives [`StoreError::JobFinished`].
    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job>;

    /// A job's tasks in creation order, optionally of one status; the cursor is the last seen
    /// task's `seq`.
    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>>;

    async fn get_task(&self, id: &str) -> Result<Task>;

    /// Adds a node to the registry, UP.
    async fn register_node(&self, info: NodeInfo, now: Timestamp) -> Result<Node>;

    /// Records a heartbeat: refreshes the figures given and brings a DOWN node back UP.
    async fn heartbeat(&self, node_id: &str, stats: NodeStats, now: Timestamp) -> Result<Node>;

    async fn list_nodes(&self) -> Result<Vec<Node>>;

    /// Hands up to `max` NEW tasks to `node_id`, highest job priority first, then oldest. Each
    /// starts a new attempt whose lease ends after the task's timeout.
    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>>;

    /// Applies a batch of complete/fail reports in one transaction. Each report gets its own
    /// outcome; a refused report (not found, fenced off) changes nothing and does not stop the
    /// others.
    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>>;

    /// Takes back RUNNING tasks whose lease ended before `now` (retry rule applies).
    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>>;

    /// Marks nodes whose last heartbeat is older than `cutoff` DOWN and takes back their tasks.
    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown>;

    /// Removes DOWN nodes whose last heartbeat is before `cutoff` and that hold no task, so the
    /// registry does not grow with every agent restart; returns their ids. A removed node's
    /// history stays in the attempt records, and its late reports stay fenced off.
    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>>;

    /// This data directory's server identity, made on first use and kept.
    async fn instance_id(&self) -> Result<String>;

    /// Reserves a runner slot for a session (see [`Reservation`]): at most one runner per
    /// session, one singleton, and at most `max` runners in all.
    async fn reserve_runner(
        &self,
        new: NewRunner,
        max: Option<u64>,
        now: Timestamp,
    ) -> Result<Reservation>;

    /// Records that a reserved runner's sandbox is up: RUNNING, with its handle and endpoint.
    async fn runner_started(
        &self,
        session_id: &str,
        instance: &str,
        endpoint: &str,
        now: Timestamp,
    ) -> Result<Runner>;

    async fn get_runner(&self, session_id: &str) -> Result<Option<Runner>>;

    /// Every runner, oldest first.
    async fn list_runners(&self) -> Result<Vec<Runner>>;

    /// Runners with no heartbeat since `cutoff`, oldest first.
    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>>;

    /// Records a heartbeat; `None` if the session has no runner.
    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>>;

    /// Forgets a runner; returns what it was, or `None` if there was none.
    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>>;

    /// Compares every job's stored counts with a count of its tasks; returns the jobs that differ.
    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>>;

    /// Flushes and closes; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self) -> Result<()>;
}
