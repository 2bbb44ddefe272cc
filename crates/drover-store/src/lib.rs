//! drover's durable state.
//!
//! This crate owns the store traits, one per aggregate ([`JobStore`] for jobs and the task
//! lifecycle, [`NodeStore`] for the node registry, [`RunnerStore`] for session runners,
//! [`PlacementStore`] for the placement contract's stats, weights, objects and replicas,
//! [`DispatchStore`] for the outbox of jobs dispatched through a message broker,
//! [`StoreOps`] for health and operations, [`ClusterStore`] for the replicas' lease and
//! members, [`JournalStore`] for the event journal), the [`Stores`] that holds one of each, [`open`], and the backends (SQLite,
//! embedded; PostgreSQL, shared by several replicas; each passes the same conformance suite,
//! `tests/conformance/`). A backend reads facts, asks `drover_core` for every
//! decision, and writes what it was told, inside one transaction per call; it must not invent
//! rules of its own, and it must not return before a change is durable. Each acknowledged write
//! yields the [`Event`]s it caused: journaled in the same transaction (`journal.rs`), and handed
//! to the observers registered on [`Stores`] after the commit.

pub mod cluster;
mod common;
mod error;
mod events;
pub mod faults;
pub mod fence;
mod journal;
pub mod postgres;
pub mod sqlite;
mod types;

pub use cluster::ClusterStore;
pub use error::StoreError;
pub use events::{EventObservers, Observer, Waker};
pub use fence::{Fence, fenced};
pub use journal::{BlobRecord, JournalStore, LiveState, NewBlob};
pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use drover_core::credential::SpotCredential;
use drover_core::node::Drain;
use drover_core::{
    ClaimedTask, Event, Job, JobStatus, Node, NodeStats, NodeStatus, ReportOutcome, Runner, Task,
    TaskStatus, Timestamp, sweep::Sweep,
};
use std::path::PathBuf;
use std::sync::Arc;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// Every method of every trait is atomic (one transaction, or one savepoint of a transaction
// that writes arriving together share): when it returns `Ok`, the change is on disk
// (invariant 3); when it returns `Err`, nothing of it was written. `now` is passed in so that
// callers (and tests) own the clock.

/// Jobs, their tasks, and the task lifecycle (claims, reports, releases).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Creates a job and every task of its sweep, all NEW; the job keeps the sweep's spec. Task
    /// `i` is `ids::sweep_task_id(job, i)`. A backend may keep the tasks as the spec until they
    /// are claimed (SQLite does), so this costs the same for one task or a million.
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job>;

    async fn get_job(&self, id: &str) -> Result<Job>;

    /// Jobs newest first; the cursor is the last seen job's `seq`.
    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>>;

    /// Cancels a job: its NEW and RUNNING tasks become CANCELLED. Cancelling a cancelled job
    /// changes nothing; a job that already finished gives [`StoreError::JobFinished`].
    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job>;

    /// A job's tasks in index order, optionally of one status; the cursor is the last seen
    /// task's `seq` (its index in the job).
    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>>;

    async fn get_task(&self, id: &str) -> Result<Task>;

    /// The tasks of these ids that exist, in the order given, read together (one look at the
    /// store rather than one per task); an unknown id is passed over.
    async fn get_tasks(&self, ids: Vec<String>) -> Result<Vec<Task>>;

    /// Hands up to `max` NEW tasks to `node_id`, highest job priority first, then oldest. Each
    /// starts a new attempt whose lease ends after the task's timeout.
    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>>;

    /// Applies a batch of complete/fail reports in one transaction. Each report gets its own
    /// outcome; a refused report (not found, fenced off) changes nothing and does not stop the
    /// others.
    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>>;

    /// Takes back RUNNING tasks whose lease ended before `now` (retry rule applies).
    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>>;

    /// Hands the one task `task_id` to `node_id`, as [`JobStore::claim`] would hand it, for a
    /// worker that was given the task by someone else (a message broker) and says it runs it
    /// now. The decision is `drover_core::lifecycle::decide_task_claim`: a NEW task is claimed
    /// (a new attempt and its lease) unless the node is DOWN ([`StoreError::NodeDown`]),
    /// DRAINING, or already holds `max_running` RUNNING tasks (`None`: no cap); a task this node
    /// holds already is left as it is; a task held by another node or finished is left as it
    /// is. Unknown task or node: [`StoreError::NotFound`] (kinds `"task"` and `"spot"`).
    ///
    /// A claimed task is then like any other: its holder reports it ([`JobStore::report`],
    /// with or without the attempt), and the reapers take it back when its lease ends or its
    /// node goes silent. Claims of named tasks for one node are counted against its cap one
    /// after the other, so concurrent calls never take it past the cap.
    async fn claim_task(
        &self,
        task_id: &str,
        node_id: &str,
        max_running: Option<u32>,
        now: Timestamp,
    ) -> Result<TaskClaim>;

    /// Up to `limit` jobs of `origin` and priority `priority` with a NEW task, in claim order
    /// (the oldest first), after the job whose `seq` is `after`: for a rule on how long work
    /// has waited (the priority contract's aging), which reads them oldest first and stops at
    /// the first that has not waited long enough.
    async fn waiting_jobs(
        &self,
        origin: &str,
        priority: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>>;

    /// The jobs of `origin` (`Job::origin`), newest first, a page at a time.
    async fn list_jobs_of(&self, origin: &str, page: Page) -> Result<Paged<Job>>;

    /// The stored tasks of the jobs of `origin` counted by their job's priority and their
    /// status, and how many of them completed or failed at or after `finished_since`. A
    /// contract's jobs have every task stored from the start (explicit lists).
    async fn origin_counts(&self, origin: &str, finished_since: Timestamp) -> Result<OriginCounts>;

    /// Raises each of the jobs `job_ids` to `priority`, with its tasks not finished, so that
    /// claims take them among the jobs of that priority (in the order of their age). A job at
    /// or above it already, finished, cancelled or unknown is passed over. With a `route`, the
    /// raised jobs' rows in the dispatch outbox are routed there and due afresh, so that a
    /// NEW task reaches the queue of its new class; the copy it had on the broker stays, and
    /// whichever copy a worker takes second finds the task taken. Answers the jobs raised.
    async fn raise_priority(
        &self,
        job_ids: Vec<String>,
        priority: i64,
        route: Option<Route>,
        now: Timestamp,
    ) -> Result<Vec<String>>;
}

/// Jobs whose tasks go out through a message broker (the priority contract's RabbitMQ mode):
/// a transactional outbox. What must be published is recorded in the transaction that makes
/// it due (the job's creation; a task going back to NEW is due again by its own row), and a
/// publisher marks it published only once the broker confirmed it, so a crash or a broker
/// outage loses nothing and at worst publishes a task twice.
#[async_trait]
pub trait DispatchStore: Send + Sync + 'static {
    /// Creates the job as [`JobStore::create_job`] does and, in the same transaction, records
    /// that each of its tasks is published to `route` whenever it is NEW and not yet published
    /// for its current number of attempts. Every task gets its row at once, whatever the
    /// job's kind (the outbox's rows refer to them): dispatched jobs are small explicit lists.
    async fn create_dispatched_job(
        &self,
        job: NewJob,
        sweep: Sweep,
        route: Route,
        now: Timestamp,
    ) -> Result<Job>;

    /// Up to `limit` publications due: tasks of dispatched jobs that are NEW and were never
    /// published, first, in the order their tasks were made; then those published for fewer
    /// attempts than they have now (taken back from a worker, or failed and retried), in the
    /// same order. Never a task that is not NEW. Reading them changes nothing, so a publisher
    /// that dies before the broker confirms leaves them due.
    async fn due_publications(&self, limit: u32) -> Result<Vec<Publication>>;

    /// Records that the broker confirmed these: each task is published for the attempts it
    /// had when it was read (a later release makes it due again); a confirmation never lowers
    /// what a task was published for, so a late one of an older read hides no newer release.
    /// A task that is not dispatched is passed over. Rows of finished tasks (all of them, not
    /// only those named) are closed here too, so that finding what is due stays cheap however
    /// many jobs were made.
    async fn mark_published(&self, done: Vec<Published>, now: Timestamp) -> Result<()>;

    /// How many publications are due now, by route queue, and how many messages wait, by
    /// exchange (for metrics).
    async fn unpublished_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Records `messages` for the broker, in order, durable once this returns; any replica may
    /// record them, the publisher sends them.
    async fn enqueue_messages(&self, messages: Vec<OutboxMessage>, now: Timestamp) -> Result<()>;

    /// Up to `limit` of the messages waiting, oldest first. Reading them changes nothing.
    async fn due_messages(&self, limit: u32) -> Result<Vec<QueuedMessage>>;

    /// Forgets the messages the broker confirmed (by `seq`); unknown ones are passed over.
    async fn forget_messages(&self, seqs: Vec<i64>) -> Result<()>;
}

/// The node registry.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Adds a node to the registry, UP, with its secret's hash if it has one, unless the registry
    /// holds `max` nodes already ([`StoreError::LimitReached`]; `None` for no cap).
    async fn register_node(&self, new: NewNode, max: Option<u64>, at: Timestamp) -> Result<Node>;

    /// Registers `node` under its own id, UP, or replaces what is known of a node with that id
    /// (a DOWN node comes back UP), its silence timeout included. Registration is a sign of
    /// life. A new id is refused when the registry holds `max` nodes already.
    async fn put_node(&self, node: NamedNode, max: Option<u64>, now: Timestamp) -> Result<()>;

    /// Replaces a node's labels and declared capacity (the node-registry contract's
    /// `UpdateNode`); a sign of life, as a heartbeat. [`StoreError::NotFound`] for an unknown
    /// node.
    async fn update_node(
        &self,
        node_id: &str,
        labels: serde_json::Map<String, serde_json::Value>,
        capacity: drover_core::Capacity,
        now: Timestamp,
    ) -> Result<()>;

    /// What is known of a node's secret, for `drover_core::credential::may_act_for_spot`:
    /// unknown node, none issued, or its hash.
    async fn spot_credential(&self, node_id: &str) -> Result<SpotCredential>;

    /// Records a heartbeat: refreshes the figures given and brings a DOWN node back UP;
    /// returns the node's status after it. A heartbeat that changes nothing but liveness (the
    /// node is UP or DRAINING) may be answered before it is written: it is written within a
    /// bound the store documents, reads of nodes show it at once, and no write that judges a
    /// node's silence runs without it (the SQLite store's `beats.rs`).
    async fn heartbeat(
        &self,
        node_id: &str,
        stats: NodeStats,
        now: Timestamp,
    ) -> Result<NodeStatus>;

    /// Drains a node ([`Drain::Start`]: it finishes what it holds and gets no new work) or puts
    /// a drained node back to work ([`Drain::Stop`]: UP), by
    /// `drover_core::node::status_after_drain`, and returns the node as it is then. Asking for
    /// the status a node has already changes nothing and records nothing. Not a sign of life.
    /// A DOWN node: [`StoreError::DrainRefused`]; an unknown one: [`StoreError::NotFound`].
    async fn drain_node(&self, node_id: &str, drain: Drain) -> Result<Node>;

    /// Writes every heartbeat answered and not yet written: on shutdown, and before reading
    /// the database from outside the store.
    async fn flush_heartbeats(&self) -> Result<()>;

    async fn list_nodes(&self) -> Result<Vec<Node>>;

    /// Nodes in registration order, a page at a time; the cursor is the last seen node's row.
    async fn list_nodes_page(&self, page: Page) -> Result<Paged<Node>>;

    /// Marks nodes whose last heartbeat is older than `cutoff` DOWN and takes back their tasks
    /// (retry rule applies), in the same transaction. `now - cutoff` is the spot timeout; a
    /// node registered with a longer silence timeout of its own
    /// ([`NamedNode::silence_timeout`]) is DOWN only once its last heartbeat is older than
    /// that timeout before `now`.
    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown>;

    /// [`NodeStore::mark_silent_nodes_down`] for the nodes whose signs of life are stats
    /// reports (registered through the placement surface), judged by their last report.
    async fn mark_stats_silent_nodes_down(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown>;

    /// Removes DOWN nodes whose last heartbeat is before `cutoff` and that hold no task, so the
    /// registry does not grow with every agent restart; returns their ids. A removed node's
    /// history stays in the attempt records, and its late reports stay fenced off.
    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>>;
}

/// The session-runner registry.
#[async_trait]
pub trait RunnerStore: Send + Sync + 'static {
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

    /// One page of the runners, oldest first; the cursor is the last seen runner's place in
    /// creation order.
    async fn list_runners_page(&self, page: Page) -> Result<Paged<Runner>>;

    /// Runners with no heartbeat since `cutoff`, oldest first.
    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>>;

    /// Records a heartbeat; `None` if the session has no runner.
    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>>;

    /// Forgets a runner; returns what it was, or `None` if there was none.
    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>>;
}

/// The placement contract's records beside the node registry: the nodes it registers under
/// their own ids, their live stats, the scheduler's weights, and objects with their replica
/// records. What a placement or a schedule is, and which replicas count, is `drover_core`'s
/// (`placement`, `scheduling`, `replicas`); a backend only keeps the facts.
#[async_trait]
pub trait PlacementStore: Send + Sync + 'static {
    /// Every node of the registry (whichever surface registered it), in id order.
    async fn placement_nodes(&self) -> Result<Vec<PlacementNode>>;

    async fn placement_node(&self, id: &str) -> Result<Option<PlacementNode>>;

    /// Replaces a node's live stats. A report is a sign of life: a DOWN node comes back UP.
    /// [`StoreError::NotFound`] for an unknown node.
    async fn report_stats(
        &self,
        node_id: &str,
        stats: drover_core::scheduling::Stats,
        now: Timestamp,
    ) -> Result<()>;

    /// The scheduler's weights, or `None` while they were never set (the caller's default).
    async fn scheduler_weights(&self) -> Result<Option<drover_core::scheduling::Weights>>;

    async fn set_scheduler_weights(
        &self,
        weights: drover_core::scheduling::Weights,
        now: Timestamp,
    ) -> Result<()>;

    /// Records an object with its replication factor and one PENDING replica record per
    /// target (its placement when registered), unless it is recorded already: then nothing
    /// changes and the answer is `false`.
    async fn register_object(
        &self,
        hash: &str,
        size: u64,
        rf: u32,
        targets: &[String],
        now: Timestamp,
    ) -> Result<bool>;

    async fn get_object(&self, hash: &str) -> Result<Option<StoredObject>>;

    /// Sets the state of `node_id`'s replica record of `hash`, making the record if there is
    /// none. [`StoreError::NotFound`] for an unknown object or node.
    async fn set_replica(
        &self,
        hash: &str,
        node_id: &str,
        state: drover_core::ReplicaState,
        now: Timestamp,
    ) -> Result<()>;

    /// Objects in hash order after `after`, at most `limit` of them (repair's scan).
    async fn list_objects(&self, after: Option<&str>, limit: u32) -> Result<Vec<StoredObject>>;
}

/// Operating the store: health, figures, audits, identity, shutdown.
#[async_trait]
pub trait StoreOps: Send + Sync + 'static {
    /// Succeeds when the store can take a write right now: a backend proves it with a real
    /// write that commits (it may skip the durability wait, since the write carries no data).
    async fn health(&self) -> Result<()>;

    /// Bytes available to the server on the file system that holds the data, or `None` when
    /// the backend keeps no local files (a database server watches its own disk).
    async fn free_space(&self) -> Result<Option<u64>>;

    /// Counts shown by the health endpoint.
    async fn overview(&self) -> Result<Overview>;

    /// Nodes and runners by status and tasks waiting or running, read in one snapshot (the
    /// gauges of `/metrics`): a few counts over indexed columns, cheap enough for every scrape.
    async fn status_counts(&self) -> Result<StatusCounts>;

    /// Compares every job's stored counts with a count of its tasks; returns the jobs that differ.
    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>>;

    /// This data directory's server identity, made on first use and kept.
    async fn instance_id(&self) -> Result<String>;

    /// Flushes and closes; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self) -> Result<()>;

    /// Folds the backend's log into its data when it has been idle since its last writes, so
    /// the disk holds what the data needs; never waits for a busy writer. Answers the bytes
    /// released; 0 (the default) for a backend with nothing to fold.
    async fn checkpoint_idle(&self) -> Result<u64> {
        Ok(0)
    }

    /// Whether other processes may write this store too (replicas on one PostgreSQL
    /// database), so that what a server holds in memory from it can grow stale without any
    /// write of its own.
    fn is_shared(&self) -> bool {
        false
    }

    /// How many durable commits the backend has made since it opened, and how many writes
    /// they held; zero for a backend that does not count them.
    fn write_stats(&self) -> WriteStats {
        WriteStats::default()
    }
}

/// Counts of a backend's write path: writes per commit shows how well writes are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed durably (each one fsync with SQLite).
    pub commits: u64,
    /// Writes (store calls) those commits held.
    pub writes: u64,
}

/// One store backend seen through its aggregates. Cheap to clone; clones share the backend and
/// its observers.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub nodes: Arc<dyn NodeStore>,
    pub runners: Arc<dyn RunnerStore>,
    pub placement: Arc<dyn PlacementStore>,
    /// The outbox of jobs dispatched through a message broker.
    pub dispatch: Arc<dyn DispatchStore>,
    pub ops: Arc<dyn StoreOps>,
    /// The replicas' shared records: the leader's lease, members, background actions.
    pub cluster: Arc<dyn ClusterStore>,
    /// The event journal: every acknowledged change, in order.
    pub journal: Arc<dyn JournalStore>,
    observers: Arc<EventObservers>,
}

impl Stores {
    /// Wraps a backend that implements every aggregate and hands its events to `observers`
    /// (the same registry the backend's write path notifies).
    pub fn from_backend<B>(backend: B, observers: Arc<EventObservers>) -> Stores
    where
        B: JobStore
            + NodeStore
            + RunnerStore
            + PlacementStore
            + DispatchStore
            + StoreOps
            + ClusterStore
            + JournalStore
            + Clone,
    {
        Stores {
            jobs: Arc::new(backend.clone()),
            dispatch: Arc::new(backend.clone()),
            nodes: Arc::new(backend.clone()),
            runners: Arc::new(backend.clone()),
            placement: Arc::new(backend.clone()),
            cluster: Arc::new(backend.clone()),
            journal: Arc::new(backend.clone()),
            ops: Arc::new(backend),
            observers,
        }
    }

    /// Registers `observer` to receive the events of every write committed from now on, once per
    /// write, in commit order. It runs on the writing thread right after the commit, so it must
    /// be quick and must not call the store (counting by [`Event::kind`] is the intended use).
    pub fn observe(&self, observer: impl Fn(&[Event]) + Send + Sync + 'static) {
        self.observers.register(Arc::new(observer));
    }

    /// Registers `waker` to be called when a write this process did not make (another replica's,
    /// on a shared PostgreSQL store) may have made a task claimable, or when the store cannot
    /// tell (its listener is down: then it is called every so often). Waiting claims should look
    /// again. It runs on the store's listener task, so it must be quick. The SQLite store, which
    /// one process owns, never calls it.
    pub fn on_work_elsewhere(&self, waker: impl Fn() + Send + Sync + 'static) {
        self.observers.register_waker(Arc::new(waker));
    }
}

/// Opens the store a URL names: `postgres://...` or `postgresql://...` (a PostgreSQL database,
/// with [`PgOptions::default`]; it connects on first use), `sqlite://path`, `sqlite:path`, or a
/// plain file path.
pub fn open(url: &str) -> Result<Stores> {
    open_with(url, PgOptions::default())
}

/// [`open`], with `postgres` for a PostgreSQL URL (a SQLite store ignores it).
pub fn open_with(url: &str, postgres: PgOptions) -> Result<Stores> {
    if is_postgres(url) {
        return Ok(PgStore::open(url, postgres)?.into_stores());
    }
    let path = sqlite_path(url)?;
    Ok(SqliteStore::open(path)?.into_stores())
}

/// Checks a store URL without opening anything: `Ok` when [`open`] can try it.
pub fn check_url(url: &str) -> Result<()> {
    if is_postgres(url) {
        postgres::parse_url(url).map(drop)
    } else {
        sqlite_path(url).map(drop)
    }
}

/// Whether a store URL names a PostgreSQL database.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite file a store URL names, or why the URL names none this build can open.
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    if url.starts_with("jdbc:") {
        return Err(StoreError::Unsupported(format!(
            "database {url:?} is a JDBC URL; drover keeps its state in SQLite (give a file \
             path such as ./data/drover.db, or sqlite://./data/drover.db) or in PostgreSQL \
             (postgres://user:password@host:5432/drover)"
        )));
    }
    if is_postgres(url) {
        return Err(StoreError::Unsupported(
            "a PostgreSQL URL names no SQLite file; open it with drover_store::open".into(),
        ));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(StoreError::Unsupported("the database path is empty".into()));
    }
    Ok(PathBuf::from(path))
}
