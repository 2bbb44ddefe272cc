//! A fault-injecting wrapper around any [`Stores`], for the reliability tests.
//!
//! [`wrap`] returns a `Stores` whose every aggregate call may, at points drawn from a seed:
//! wait a little before reaching the store; fail before reaching it ([`StoreError::Unavailable`],
//! nothing written, as a full disk or a busy lock answers); or, for a write, reach it, commit, and
//! still answer `Unavailable`, as when the server dies between the commit and the answer. The
//! last one is what idempotent reports and fencing exist for: the caller retries a change that
//! is already durable. Tests drive work through the wrapper the way the agent retries and then
//! check the history against the invariants of DESIGN.md section 1.
//!
//! The seed comes from `FAULT_SEED` when set (see [`seed_from_env`]), so a failing run is
//! reproduced by running it again with the seed it printed. The same seed gives the same faults
//! to the same sequence of calls; concurrent callers interleave as the scheduler decides.
//! This module decides nothing about jobs or tasks: it passes every call through or refuses it.

use crate::cluster::{Action, ClusterView, RecordedAction};
use crate::{
    BlobRecord, ClusterStore, CountMismatch, DispatchStore, JobStore, JournalStore, LiveState,
    NamedNode, NewBlob, NewJob, NewNode, NewRunner, NodeStore, NodesDown, OriginCounts,
    OutboxMessage, Overview, Page, Paged, PlacementNode, PlacementStore, Publication, Published,
    QueuedMessage, Released, Report, Reservation, Result, Route, RunnerStore, StatusCounts,
    StoreError, StoreOps, StoredObject, Stores, TaskClaim, WriteStats,
};
use async_trait::async_trait;
use drover_core::ReplicaState;
use drover_core::credential::SpotCredential;
use drover_core::journal::Entry;
use drover_core::node::Drain;
use drover_core::scheduling::{Stats, Weights};
use drover_core::sweep::Sweep;
use drover_core::{
    ClaimedTask, Job, JobStatus, Node, NodeStats, NodeStatus, ReportOutcome, Runner, Task,
    TaskStatus, Timestamp,
};
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often each kind of fault happens. Chances are in `[0, 1]`, per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    /// A call fails before it reaches the store: nothing is written.
    pub fail_before: f64,
    /// A write reaches the store and commits, and its caller gets an error anyway.
    pub fail_after_commit: f64,
    /// A call waits before it reaches the store, up to `max_delay`.
    pub delay: f64,
    pub max_delay: Duration,
}

impl FaultPlan {
    /// No faults at all: the wrapper passes every call through.
    pub fn none(seed: u64) -> Self {
        FaultPlan {
            seed,
            fail_before: 0.0,
            fail_after_commit: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
        }
    }

    /// Errors and lost answers on about one call in ten each, short delays on one in five.
    pub fn chaotic(seed: u64) -> Self {
        FaultPlan {
            seed,
            fail_before: 0.1,
            fail_after_commit: 0.1,
            delay: 0.2,
            max_delay: Duration::from_millis(3),
        }
    }

    /// Delays only: every call succeeds, later than it would. Scenarios that expect every call
    /// to succeed run under this.
    pub fn delays_only(seed: u64) -> Self {
        FaultPlan {
            delay: 0.3,
            max_delay: Duration::from_millis(2),
            ..FaultPlan::none(seed)
        }
    }
}

/// The seed of this run: `FAULT_SEED` when set, otherwise a fresh one. Printed either way, so a
/// failing run names the seed that reproduces it.
pub fn seed_from_env(test: &str) -> u64 {
    let seed = match std::env::var("FAULT_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FAULT_SEED={text:?} is not an unsigned integer")),
        Err(_) => fresh_seed(),
    };
    eprintln!("{test}: FAULT_SEED={seed}");
    seed
}

fn fresh_seed() -> u64 {
    // Only the seed comes from the clock; every fault after it comes from the seed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()))
}

/// One step of SplitMix64: small, fast, and good enough to scatter faults.
fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded generator for the choices of a test that drives a wrapped store (which call, which
/// task, when to kill a server), so one seed reproduces the faults and the load together.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// How many faults of each kind were injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub calls: u64,
    pub failed_before: u64,
    pub failed_after_commit: u64,
    pub delayed: u64,
}

impl FaultCounts {
    pub fn injected(&self) -> u64 {
        self.failed_before + self.failed_after_commit + self.delayed
    }
}

/// The faults of one wrapped store: the plan, its random state and what it injected.
pub struct Faults {
    plan: FaultPlan,
    state: Mutex<u64>,
    enabled: AtomicBool,
    writes_down: AtomicBool,
    calls: AtomicU64,
    failed_before: AtomicU64,
    failed_after_commit: AtomicU64,
    delayed: AtomicU64,
}

/// What happens to one call.
enum Fault {
    None,
    Before,
    AfterCommit,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Arc<Faults> {
        Arc::new(Faults {
            plan,
            state: Mutex::new(plan.seed),
            enabled: AtomicBool::new(true),
            writes_down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            failed_before: AtomicU64::new(0),
            failed_after_commit: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        })
    }

    pub fn plan(&self) -> FaultPlan {
        self.plan
    }

    /// Turns random faults on or off (a test turns them off to read the final state).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// While set, every write (the health probe included) fails before reaching the store, as
    /// on a full disk; reads still work.
    pub fn set_writes_down(&self, down: bool) {
        self.writes_down.store(down, Ordering::SeqCst);
    }

    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            calls: self.calls.load(Ordering::Relaxed),
            failed_before: self.failed_before.load(Ordering::Relaxed),
            failed_after_commit: self.failed_after_commit.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
        }
    }

    /// A uniform draw in `[0, 1)` from the seeded sequence.
    fn draw(&self) -> f64 {
        // A poisoned lock holds a valid state all the same.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = splitmix(*state);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides this call's fault and waits out its delay, if it has one.
    async fn before(&self, write: bool) -> Fault {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if write && self.writes_down.load(Ordering::SeqCst) {
            self.failed_before.fetch_add(1, Ordering::Relaxed);
            return Fault::Before;
        }
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let p = self.plan;
        if self.draw() < p.delay && !p.max_delay.is_zero() {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(p.max_delay.mul_f64(self.draw())).await;
        }
        let roll = self.draw();
        if roll < p.fail_before {
            self.failed_before.fetch_add(1, Ordering::Relaxed);
            Fault::Before
        } else if write && roll < p.fail_before + p.fail_after_commit {
            Fault::AfterCommit
        } else {
            Fault::None
        }
    }

    /// Runs a read through the plan: delayed or refused before it reaches the store.
    async fn read<T>(&self, call: &str, inner: impl Future<Output = Result<T>>) -> Result<T> {
        match self.before(false).await {
            Fault::Before => Err(injected(call, "before it reached the store")),
            Fault::None | Fault::AfterCommit => inner.await,
        }
    }

    /// Runs a write through the plan: delayed, refused before it reaches the store, or
    /// committed with its answer lost.
    async fn write<T>(&self, call: &str, inner: impl Future<Output = Result<T>>) -> Result<T> {
        match self.before(true).await {
            // The inner future is never polled, so the store never sees the call.
            Fault::Before => Err(injected(call, "before it reached the store")),
            Fault::None => inner.await,
            Fault::AfterCommit => {
                let out = inner.await;
                if out.is_ok() {
                    self.failed_after_commit.fetch_add(1, Ordering::Relaxed);
                    return Err(injected(call, "after it committed; its answer was lost"));
                }
                out
            }
        }
    }
}

fn injected(call: &str, when: &str) -> StoreError {
    StoreError::Unavailable(format!("injected fault in {call}, {when}"))
}

/// `stores` with `faults` injected into every aggregate call. The observers are shared, so
/// events of the writes that commit are still counted.
pub fn wrap(stores: Stores, faults: Arc<Faults>) -> Stores {
    let observers = stores.observers.clone();
    Stores::from_backend(
        Faulty {
            inner: stores,
            faults,
        },
        observers,
    )
}

#[derive(Clone)]
struct Faulty {
    inner: Stores,
    faults: Arc<Faults>,
}

#[async_trait]
impl JobStore for Faulty {
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        let inner = self.inner.jobs.create_job(job, sweep, now);
        self.faults.write("create_job", inner).await
    }

    async fn get_job(&self, id: &str) -> Result<Job> {
        self.faults
            .read("get_job", self.inner.jobs.get_job(id))
            .await
    }

    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>> {
        let inner = self.inner.jobs.list_jobs(status, page);
        self.faults.read("list_jobs", inner).await
    }

    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job> {
        let inner = self.inner.jobs.cancel_job(id, now);
        self.faults.write("cancel_job", inner).await
    }

    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>> {
        let inner = self.inner.jobs.list_tasks(job_id, status, page);
        self.faults.read("list_tasks", inner).await
    }

    async fn get_task(&self, id: &str) -> Result<Task> {
        self.faults
            .read("get_task", self.inner.jobs.get_task(id))
            .await
    }

    async fn get_tasks(&self, ids: Vec<String>) -> Result<Vec<Task>> {
        let inner = self.inner.jobs.get_tasks(ids);
        self.faults.read("get_tasks", inner).await
    }

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        let inner = self.inner.jobs.claim(node_id, max, now);
        self.faults.write("claim", inner).await
    }

    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>> {
        let inner = self.inner.jobs.report(reports, now);
        self.faults.write("report", inner).await
    }

    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>> {
        let inner = self.inner.jobs.release_expired_tasks(now);
        self.faults.write("release_expired_tasks", inner).await
    }

    async fn claim_task(
        &self,
        task_id: &str,
        node_id: &str,
        max_running: Option<u32>,
        now: Timestamp,
    ) -> Result<TaskClaim> {
        let inner = self
            .inner
            .jobs
            .claim_task(task_id, node_id, max_running, now);
        self.faults.write("claim_task", inner).await
    }

    async fn waiting_jobs(
        &self,
        origin: &str,
        priority: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let inner = self.inner.jobs.waiting_jobs(origin, priority, after, limit);
        self.faults.read("waiting_jobs", inner).await
    }

    async fn list_jobs_of(&self, origin: &str, page: Page) -> Result<Paged<Job>> {
        let inner = self.inner.jobs.list_jobs_of(origin, page);
        self.faults.read("list_jobs_of", inner).await
    }

    async fn origin_counts(&self, origin: &str, since: Timestamp) -> Result<OriginCounts> {
        let inner = self.inner.jobs.origin_counts(origin, since);
        self.faults.read("origin_counts", inner).await
    }

    async fn raise_priority(
        &self,
        job_ids: Vec<String>,
        priority: i64,
        route: Option<Route>,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let inner = self
            .inner
            .jobs
            .raise_priority(job_ids, priority, route, now);
        self.faults.write("raise_priority", inner).await
    }
}

#[async_trait]
impl DispatchStore for Faulty {
    async fn create_dispatched_job(
        &self,
        job: NewJob,
        sweep: Sweep,
        route: Route,
        now: Timestamp,
    ) -> Result<Job> {
        let inner = self
            .inner
            .dispatch
            .create_dispatched_job(job, sweep, route, now);
        self.faults.write("create_dispatched_job", inner).await
    }

    async fn due_publications(&self, limit: u32) -> Result<Vec<Publication>> {
        let inner = self.inner.dispatch.due_publications(limit);
        self.faults.read("due_publications", inner).await
    }

    async fn mark_published(&self, done: Vec<Published>, now: Timestamp) -> Result<()> {
        let inner = self.inner.dispatch.mark_published(done, now);
        self.faults.write("mark_published", inner).await
    }

    async fn unpublished_counts(&self) -> Result<Vec<(String, u64)>> {
        let inner = self.inner.dispatch.unpublished_counts();
        self.faults.read("unpublished_counts", inner).await
    }

    async fn enqueue_messages(&self, messages: Vec<OutboxMessage>, now: Timestamp) -> Result<()> {
        let inner = self.inner.dispatch.enqueue_messages(messages, now);
        self.faults.write("enqueue_messages", inner).await
    }

    async fn due_messages(&self, limit: u32) -> Result<Vec<QueuedMessage>> {
        let inner = self.inner.dispatch.due_messages(limit);
        self.faults.read("due_messages", inner).await
    }

    async fn forget_messages(&self, seqs: Vec<i64>) -> Result<()> {
        let inner = self.inner.dispatch.forget_messages(seqs);
        self.faults.write("forget_messages", inner).await
    }
}

#[async_trait]
impl NodeStore for Faulty {
    async fn update_node(
        &self,
        node_id: &str,
        labels: serde_json::Map<String, serde_json::Value>,
        capacity: drover_core::Capacity,
        now: Timestamp,
    ) -> Result<()> {
        let inner = self.inner.nodes.update_node(node_id, labels, capacity, now);
        self.faults.write("update_node", inner).await
    }

    async fn put_node(&self, node: NamedNode, max: Option<u64>, now: Timestamp) -> Result<()> {
        let inner = self.inner.nodes.put_node(node, max, now);
        self.faults.write("put_node", inner).await
    }

    async fn register_node(&self, new: NewNode, max: Option<u64>, now: Timestamp) -> Result<Node> {
        let inner = self.inner.nodes.register_node(new, max, now);
        self.faults.write("register_node", inner).await
    }

    async fn drain_node(&self, node_id: &str, drain: Drain) -> Result<Node> {
        let inner = self.inner.nodes.drain_node(node_id, drain);
        self.faults.write("drain_node", inner).await
    }

    async fn spot_credential(&self, node_id: &str) -> Result<SpotCredential> {
        let inner = self.inner.nodes.spot_credential(node_id);
        self.faults.read("spot_credential", inner).await
    }

    async fn heartbeat(
        &self,
        node_id: &str,
        stats: NodeStats,
        now: Timestamp,
    ) -> Result<NodeStatus> {
        let inner = self.inner.nodes.heartbeat(node_id, stats, now);
        self.faults.write("heartbeat", inner).await
    }

    async fn flush_heartbeats(&self) -> Result<()> {
        let inner = self.inner.nodes.flush_heartbeats();
        self.faults.write("flush_heartbeats", inner).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let inner = self.inner.nodes.list_nodes();
        self.faults.read("list_nodes", inner).await
    }

    async fn list_nodes_page(&self, page: Page) -> Result<Paged<Node>> {
        let inner = self.inner.nodes.list_nodes_page(page);
        self.faults.read("list_nodes_page", inner).await
    }

    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown> {
        let inner = self.inner.nodes.mark_silent_nodes_down(cutoff, now);
        self.faults.write("mark_silent_nodes_down", inner).await
    }

    async fn mark_stats_silent_nodes_down(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown> {
        let inner = self.inner.nodes.mark_stats_silent_nodes_down(cutoff, now);
        self.faults
            .write("mark_stats_silent_nodes_down", inner)
            .await
    }

    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>> {
        let inner = self.inner.nodes.forget_down_nodes(cutoff);
        self.faults.write("forget_down_nodes", inner).await
    }
}

#[async_trait]
impl PlacementStore for Faulty {
    async fn placement_nodes(&self) -> Result<Vec<PlacementNode>> {
        let inner = self.inner.placement.placement_nodes();
        self.faults.read("placement_nodes", inner).await
    }

    async fn placement_node(&self, id: &str) -> Result<Option<PlacementNode>> {
        let inner = self.inner.placement.placement_node(id);
        self.faults.read("placement_node", inner).await
    }

    async fn report_stats(&self, node_id: &str, stats: Stats, now: Timestamp) -> Result<()> {
        let inner = self.inner.placement.report_stats(node_id, stats, now);
        self.faults.write("report_stats", inner).await
    }

    async fn scheduler_weights(&self) -> Result<Option<Weights>> {
        let inner = self.inner.placement.scheduler_weights();
        self.faults.read("scheduler_weights", inner).await
    }

    async fn set_scheduler_weights(&self, weights: Weights, now: Timestamp) -> Result<()> {
        let inner = self.inner.placement.set_scheduler_weights(weights, now);
        self.faults.write("set_scheduler_weights", inner).await
    }

    async fn register_object(
        &self,
        hash: &str,
        size: u64,
        rf: u32,
        targets: &[String],
        now: Timestamp,
    ) -> Result<bool> {
        let inner = self
            .inner
            .placement
            .register_object(hash, size, rf, targets, now);
        self.faults.write("register_object", inner).await
    }

    async fn get_object(&self, hash: &str) -> Result<Option<StoredObject>> {
        let inner = self.inner.placement.get_object(hash);
        self.faults.read("get_object", inner).await
    }

    async fn set_replica(
        &self,
        hash: &str,
        node_id: &str,
        state: ReplicaState,
        now: Timestamp,
    ) -> Result<()> {
        let inner = self.inner.placement.set_replica(hash, node_id, state, now);
        self.faults.write("set_replica", inner).await
    }

    async fn list_objects(&self, after: Option<&str>, limit: u32) -> Result<Vec<StoredObject>> {
        let inner = self.inner.placement.list_objects(after, limit);
        self.faults.read("list_objects", inner).await
    }
}

#[async_trait]
impl RunnerStore for Faulty {
    async fn reserve_runner(
        &self,
        new: NewRunner,
        max: Option<u64>,
        now: Timestamp,
    ) -> Result<Reservation> {
        let inner = self.inner.runners.reserve_runner(new, max, now);
        self.faults.write("reserve_runner", inner).await
    }

    async fn runner_started(
        &self,
        session_id: &str,
        instance: &str,
        endpoint: &str,
        now: Timestamp,
    ) -> Result<Runner> {
        let inner = self
            .inner
            .runners
            .runner_started(session_id, instance, endpoint, now);
        self.faults.write("runner_started", inner).await
    }

    async fn get_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let inner = self.inner.runners.get_runner(session_id);
        self.faults.read("get_runner", inner).await
    }

    async fn list_runners(&self) -> Result<Vec<Runner>> {
        let inner = self.inner.runners.list_runners();
        self.faults.read("list_runners", inner).await
    }

    async fn list_runners_page(&self, page: Page) -> Result<Paged<Runner>> {
        let inner = self.inner.runners.list_runners_page(page);
        self.faults.read("list_runners_page", inner).await
    }

    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>> {
        let inner = self.inner.runners.inactive_runners(cutoff);
        self.faults.read("inactive_runners", inner).await
    }

    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>> {
        let inner = self.inner.runners.touch_runner(session_id, now);
        self.faults.write("touch_runner", inner).await
    }

    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let inner = self.inner.runners.remove_runner(session_id);
        self.faults.write("remove_runner", inner).await
    }
}

#[async_trait]
impl StoreOps for Faulty {
    fn is_shared(&self) -> bool {
        self.inner.ops.is_shared()
    }

    async fn health(&self) -> Result<()> {
        // The probe is a write, so it fails wherever writes fail.
        self.faults.write("health", self.inner.ops.health()).await
    }

    async fn checkpoint_idle(&self) -> Result<u64> {
        // Housekeeping outside the plan: a background tick must not shift a seeded run's faults.
        self.inner.ops.checkpoint_idle().await
    }

    async fn free_space(&self) -> Result<Option<u64>> {
        let inner = self.inner.ops.free_space();
        self.faults.read("free_space", inner).await
    }

    async fn overview(&self) -> Result<Overview> {
        self.faults
            .read("overview", self.inner.ops.overview())
            .await
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        let inner = self.inner.ops.status_counts();
        self.faults.read("status_counts", inner).await
    }

    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>> {
        let inner = self.inner.ops.audit_job_counts();
        self.faults.read("audit_job_counts", inner).await
    }

    async fn instance_id(&self) -> Result<String> {
        let inner = self.inner.ops.instance_id();
        self.faults.write("instance_id", inner).await
    }

    fn write_stats(&self) -> WriteStats {
        self.inner.ops.write_stats()
    }

    async fn close(&self) -> Result<()> {
        // Closing is how a test ends; a fault here would only hide the real outcome.
        self.inner.ops.close().await
    }
}

#[async_trait]
impl JournalStore for Faulty {
    async fn journal(&self, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let inner = self.inner.journal.journal(after, limit);
        self.faults.read("journal", inner).await
    }

    async fn journal_head(&self) -> Result<u64> {
        let inner = self.inner.journal.journal_head();
        self.faults.read("journal_head", inner).await
    }

    async fn live_state(&self) -> Result<LiveState> {
        let inner = self.inner.journal.live_state();
        self.faults.read("live_state", inner).await
    }

    async fn record_blob(&self, blob: NewBlob) -> Result<BlobRecord> {
        let inner = self.inner.journal.record_blob(blob);
        self.faults.write("record_blob", inner).await
    }

    async fn published_upto(&self) -> Result<u64> {
        let inner = self.inner.journal.published_upto();
        self.faults.read("published_upto", inner).await
    }

    async fn pending_blobs(&self, limit: u32) -> Result<Vec<BlobRecord>> {
        let inner = self.inner.journal.pending_blobs(limit);
        self.faults.read("pending_blobs", inner).await
    }

    async fn blob_reconciled(&self, id: i64, height: u64, at: Timestamp) -> Result<()> {
        let inner = self.inner.journal.blob_reconciled(id, height, at);
        self.faults.write("blob_reconciled", inner).await
    }

    async fn restore(&self, entries: Vec<Entry>, now: Timestamp) -> Result<u64> {
        let inner = self.inner.journal.restore(entries, now);
        self.faults.write("restore", inner).await
    }

    async fn primary_holds_upto(&self) -> Result<u64> {
        let inner = self.inner.journal.primary_holds_upto();
        self.faults.read("primary_holds_upto", inner).await
    }

    async fn snapshot(&self) -> Result<Option<drover_core::journal::State>> {
        let inner = self.inner.journal.snapshot();
        self.faults.read("snapshot", inner).await
    }

    async fn compact(&self, state: drover_core::journal::State, at: Timestamp) -> Result<u64> {
        let inner = self.inner.journal.compact(state, at);
        self.faults.write("compact", inner).await
    }

    async fn blob_reconcile_failed(&self, id: i64, error: String) -> Result<()> {
        let inner = self.inner.journal.blob_reconcile_failed(id, error);
        self.faults.write("blob_reconcile_failed", inner).await
    }
}

#[async_trait]
impl ClusterStore for Faulty {
    async fn acquire_or_renew(
        &self,
        replica: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<drover_core::cluster::Lease> {
        let inner = self.inner.cluster.acquire_or_renew(replica, now, ttl);
        self.faults.write("acquire_or_renew", inner).await
    }

    async fn release(&self, replica: &str, now: Timestamp) -> Result<bool> {
        let inner = self.inner.cluster.release(replica, now);
        self.faults.write("release", inner).await
    }

    async fn heartbeat_member(&self, replica: &str, address: &str, now: Timestamp) -> Result<()> {
        let inner = self.inner.cluster.heartbeat_member(replica, address, now);
        self.faults.write("heartbeat_member", inner).await
    }

    async fn forget_members(&self, cutoff: Timestamp) -> Result<u64> {
        let inner = self.inner.cluster.forget_members(cutoff);
        self.faults.write("forget_members", inner).await
    }

    async fn view(&self, members_since: Timestamp) -> Result<ClusterView> {
        let inner = self.inner.cluster.view(members_since);
        self.faults.read("view", inner).await
    }

    async fn record_action(&self, action: Action) -> Result<()> {
        let inner = self.inner.cluster.record_action(action);
        self.faults.write("record_action", inner).await
    }

    async fn actions(&self) -> Result<Vec<RecordedAction>> {
        self.faults
            .read("actions", self.inner.cluster.actions())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let a = Faults::new(FaultPlan::chaotic(7));
        let b = Faults::new(FaultPlan::chaotic(7));
        let draws = |f: &Faults| (0..100).map(|_| f.draw()).collect::<Vec<_>>();
        let (da, db) = (draws(&a), draws(&b));
        assert_eq!(da, db);
        assert!(da.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(da, draws(&Faults::new(FaultPlan::chaotic(8))));
    }
}
