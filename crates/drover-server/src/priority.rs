//! The priority job router: the priority-queue contract's operations over drover's core.
//!
//! A registered job is a drover job of one task (`contract_jobs`), whose priority class
//! (`drover_core::priority`) is its drover priority, so claims take high, then medium, then
//! low, the oldest first within a class. In RabbitMQ mode the job is also put in the store's
//! dispatch outbox in the same transaction, and the publisher (`amqp.rs`) sends it to its
//! class's queue; a worker that took it from the broker says "running", and the task is
//! claimed for that worker by the store (`JobStore::claim_task`), then completed or failed
//! through the same report path as every task. Workers are drover nodes that heartbeat (every
//! 10 s in the contract), judged by this contract's own worker timeout.
//!
//! This service translates and orders store calls; every decision is the core's (the class,
//! what an update asks, whether a claim or a report is allowed). The capacity a worker
//! announces in its heartbeat is kept on its node (the label [`CAPACITY_LABEL`]), so every
//! replica caps its running jobs by it (the contract's default of 10 until one is announced);
//! a replica reads it again once its copy is [`CAPACITY_FRESH`] old, so a change made through
//! another replica binds here within that time.

use crate::AppState;
use crate::amqp::{STATUS_EXCHANGE, STATUS_ROUTING_KEY};
use crate::clock::Clock;
use crate::contract_jobs::{self, SubmitError, Submitted};
use crate::workers::{Counts, Worker};
use drover_api::priority as api;
use drover_core::priority::{DEFAULT_PRIORITY, PriorityClass, UPDATE_WORDS, WorkerUpdate};
use drover_core::{
    Job, NodeInfo, NodeStats, NodeStatus, ReportKind, ReportOutcome, Task, TaskResult, TaskStatus,
    Timestamp,
};
use drover_store::{
    JobStore, Liveness, NamedNode, NewJob, OutboxMessage, Report, Route, StoreError, TaskClaim,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The namespace of this contract's job ids (`contract_jobs::drover_job_id`), and their jobs'
/// origin.
const NAMESPACE: &str = "distriqueue";
/// The contract's defaults for what a registration leaves out.
const DEFAULT_MAX_RETRIES: u64 = 3;
const DEFAULT_EXECUTION_TIMEOUT_SECS: u64 = 300;
const DEFAULT_CAPACITY: u32 = 10;
/// The label a worker's type is kept under; a node with it is one of this contract's workers.
pub const WORKER_TYPE_LABEL: &str = "worker_type";
/// The label the capacity a worker last announced is kept under.
pub const CAPACITY_LABEL: &str = "capacity";
/// How long a replica trusts its copy of a worker's capacity before reading it again: the
/// contract's heartbeat period, so a change announced to another replica binds here within it.
const CAPACITY_FRESH: Duration = Duration::from_secs(10);
/// Longest contract job id accepted.
const MAX_ID_LEN: usize = 200;

/// How jobs reach workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Workers pull from the store (drover agents, `/internal/v1/claim`), by priority.
    Native,
    /// Each job is published to its class's queue on this RabbitMQ broker.
    Rabbitmq { url: String },
}

impl Dispatch {
    pub fn name(&self) -> &'static str {
        match self {
            Dispatch::Native => "native",
            Dispatch::Rabbitmq { .. } => "rabbitmq",
        }
    }
}

/// The contract's settings.
#[derive(Debug, Clone)]
pub struct PriorityConfig {
    pub dispatch: Dispatch,
    /// Answer a status update for an unknown job with 200, as the original system does
    /// (`--priority-lenient-unknown`); by default it is 404 `job_not_found`.
    pub lenient_unknown_jobs: bool,
    /// How long a worker of this contract may stay silent before it is DOWN and its jobs are
    /// taken back: well above the 10 s between its heartbeats.
    pub worker_timeout: Duration,
    /// Priority aging (`drover_core::priority`): a job waiting this long is served as at
    /// least medium, twice as long as high. `None` (the default): no aging, as in the
    /// contract.
    pub aging: Option<Duration>,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            dispatch: Dispatch::Native,
            lenient_unknown_jobs: false,
            worker_timeout: Duration::from_secs(30),
            aging: None,
        }
    }
}

/// Why an operation was refused; each says what the caller should change.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The request is wrong: `code` is the contract-style error word, the message what to fix.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("no job {0:?}")]
    UnknownJob(String),
    /// The request is well formed but the job's state does not allow it.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(code: &'static str, message: impl Into<String>) -> RouterError {
    RouterError::Invalid {
        code,
        message: message.into(),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> RouterError {
    RouterError::Conflict {
        code,
        message: message.into(),
    }
}

/// What an accepted status update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Changed,
    /// A repeat, or an unknown job under the lenient setting: nothing changed.
    Unchanged,
}

/// `worker`'s labels as its node holds them; `None` for a worker not registered. (The
/// placement aggregate reads one node of the one registry by id, its labels included.)
async fn worker_labels(
    app: &AppState,
    worker: &str,
) -> Result<Option<Map<String, Value>>, RouterError> {
    Ok(app
        .store
        .placement
        .placement_node(worker)
        .await?
        .map(|n| n.meta))
}

/// The capacity kept in a worker's labels, if any.
fn capacity_in(labels: &Map<String, Value>) -> Option<u32> {
    let capacity = labels.get(CAPACITY_LABEL).and_then(Value::as_u64)?;
    u32::try_from(capacity).ok()
}

/// A job of this contract as the listing shows it.
pub struct ContractJob {
    pub id: String,
    pub job_type: String,
    /// The priority it was registered with.
    pub priority: i64,
    /// The class it is served in: its priority's, or a higher one it was aged into.
    pub class: PriorityClass,
    pub task: Task,
}

pub struct PriorityRouter {
    pub config: PriorityConfig,
    /// Each worker's capacity as this replica last read or wrote it on its node, and when.
    capacities: Mutex<HashMap<String, (u32, Timestamp)>>,
    /// When the `/metrics` gauges were last counted, or are being counted.
    gauges_at: Mutex<Option<tokio::time::Instant>>,
}

/// How often a scrape of `/metrics` starts a count of the contract's figures at most.
pub const GAUGES_EVERY: Duration = Duration::from_secs(1);

impl PriorityRouter {
    pub fn new(config: PriorityConfig) -> Self {
        PriorityRouter {
            config,
            capacities: Mutex::default(),
            gauges_at: Mutex::default(),
        }
    }

    /// This replica's copy of `worker`'s capacity while it is fresh at `now`.
    fn known_capacity(&self, worker: &str, now: Timestamp) -> Option<u32> {
        let known = self.capacities.lock().unwrap_or_else(|p| p.into_inner());
        let (capacity, at) = known.get(worker).copied()?;
        let age = now.signed_duration_since(at).to_std().unwrap_or_default();
        (age < CAPACITY_FRESH).then_some(capacity)
    }

    fn remember_capacity(&self, worker: &str, capacity: u32, at: Timestamp) {
        let mut known = self.capacities.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(worker.to_string(), (capacity, at));
    }

    /// `worker`'s capacity: this replica's copy while it is fresh, else as its node holds it
    /// (the contract's default when it announced none, or is not registered yet).
    async fn capacity_of(&self, app: &AppState, worker: &str) -> Result<u32, RouterError> {
        let now = app.clock.now();
        if let Some(capacity) = self.known_capacity(worker, now) {
            return Ok(capacity);
        }
        let labels = worker_labels(app, worker).await?;
        let capacity = (labels.as_ref())
            .and_then(capacity_in)
            .unwrap_or(DEFAULT_CAPACITY);
        self.remember_capacity(worker, capacity, now);
        Ok(capacity)
    }

    /// Keeps `capacity` on `worker`'s node, unless this replica's fresh copy says it holds it
    /// already (a stale copy is checked against the node: the node may have been registered
    /// again since). A contract worker declares no resources of its own, so its node's labels
    /// are rewritten with the capacity added and its declared resources stay empty.
    async fn record_capacity(
        &self,
        app: &AppState,
        worker: &str,
        capacity: u32,
    ) -> Result<(), RouterError> {
        let now = app.clock.now();
        if self.known_capacity(worker, now) == Some(capacity) {
            return Ok(());
        }
        let mut labels = worker_labels(app, worker).await?.unwrap_or_default();
        if capacity_in(&labels) != Some(capacity) {
            labels.insert(CAPACITY_LABEL.into(), Value::from(capacity));
            let nodes = &app.store.nodes;
            nodes
                .update_node(worker, labels, drover_core::Capacity::default(), now)
                .await?;
        }
        self.remember_capacity(worker, capacity, now);
        Ok(())
    }

    /// In RabbitMQ mode, records in the store's outbox the status event of `task` standing at
    /// `status` for `worker`, for the leader's publisher to send to `status.exchange`. It is
    /// recorded before the update is answered, and again when a worker repeats the update (a
    /// repeat also finds the event of a change whose answer was lost), so every change is
    /// published at least once, from whichever replica it was made on.
    async fn announce(
        &self,
        app: &AppState,
        task: &Task,
        status: TaskStatus,
        worker: &str,
        result: Value,
    ) -> Result<(), RouterError> {
        if self.config.dispatch == Dispatch::Native {
            return Ok(());
        }
        let (id, _, _) = contract_fields(&task.payload);
        let event = api::StatusEvent {
            job_id: id,
            job_status: drover_core::priority::status_word(status).to_uppercase(),
            worker_id: worker.to_string(),
            result,
        };
        let body = serde_json::to_string(&event)
            .map_err(|e| StoreError::Internal(format!("encoding a status event: {e}")))?;
        let message = OutboxMessage {
            exchange: STATUS_EXCHANGE.into(),
            routing_key: STATUS_ROUTING_KEY.into(),
            body,
        };
        (app.store.dispatch)
            .enqueue_messages(vec![message], app.clock.now())
            .await?;
        Ok(())
    }

    /// Registers a job; its id (the one given, or a new one) and whether it was made now.
    pub async fn register(
        &self,
        app: &AppState,
        r: api::RegisterJob,
    ) -> Result<(String, Submitted), RouterError> {
        let id = match r.id {
            None | Some(Value::Null) => drover_core::ids::job_id(),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_ID_LEN => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(invalid(
                    "invalid_id",
                    format!(
                        "id must be a non-empty string of at most {MAX_ID_LEN} characters (got {other})"
                    ),
                ));
            }
        };
        let job_type = match r.job_type {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            None | Some(Value::Null) => {
                return Err(invalid(
                    "missing_type",
                    "type is required: the kind of job, e.g. \"calculate\"",
                ));
            }
            Some(other) => {
                return Err(invalid(
                    "invalid_type",
                    format!("type must be a non-empty string (got {other})"),
                ));
            }
        };
        let priority = match r.priority {
            None | Some(Value::Null) => DEFAULT_PRIORITY,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default(),
            Some(other) => {
                return Err(invalid(
                    "invalid_priority",
                    format!(
                        "priority must be an integer: 10 and above is high, 5 to 9 medium, \
                         below 5 low (got {other})"
                    ),
                ));
            }
        };
        let payload = match r.payload {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(o)) => Value::Object(o),
            Some(other) => {
                return Err(invalid(
                    "invalid_payload",
                    format!("payload must be a JSON object (got {other})"),
                ));
            }
        };
        let max_attempts_limit = u64::from(drover_core::rules::MAX_ATTEMPTS_LIMIT);
        let max_retries = whole(
            r.max_retries,
            DEFAULT_MAX_RETRIES,
            0..=max_attempts_limit - 1,
        )
        .ok_or_else(|| {
            invalid(
                "invalid_max_retries",
                format!(
                    "max_retries must be an integer from 0 to {}",
                    max_attempts_limit - 1
                ),
            )
        })?;
        let timeout = whole(
            r.execution_timeout,
            DEFAULT_EXECUTION_TIMEOUT_SECS,
            drover_core::rules::TASK_TIMEOUT_RANGE_SECS,
        )
        .ok_or_else(|| {
            invalid(
                "invalid_execution_timeout",
                format!(
                    "execution_timeout must be a whole number of seconds from 1 to {}",
                    drover_core::rules::MAX_TASK_TIMEOUT_SECS
                ),
            )
        })?;
        let class = PriorityClass::of(priority);
        let mut task = Map::new();
        task.insert("id".into(), Value::String(id.clone()));
        task.insert("type".into(), Value::String(job_type));
        task.insert("priority".into(), Value::from(priority));
        task.insert("payload".into(), payload);
        task.insert("max_retries".into(), Value::from(max_retries));
        task.insert("execution_timeout".into(), Value::from(timeout));
        let job = NewJob {
            priority: class.job_priority(),
            max_attempts: max_retries as u32 + 1,
            task_timeout: Duration::from_secs(timeout),
            ..contract_jobs::identity(NAMESPACE, &id)
        };
        let route = match self.config.dispatch {
            Dispatch::Native => None,
            Dispatch::Rabbitmq { .. } => Some(route_of(class)),
        };
        match contract_jobs::submit(app, job, task, route).await {
            Ok(submitted) => Ok((id, submitted)),
            Err(SubmitError::Conflict) => Err(conflict(
                "job_exists",
                format!(
                    "a different job was already registered with id {id:?}; register it under another id"
                ),
            )),
            Err(SubmitError::Invalid(m)) => Err(invalid("invalid_payload", m)),
            Err(SubmitError::Store(e)) => Err(e.into()),
        }
    }

    /// The task of the contract job `id`, or `None`.
    async fn task(&self, app: &AppState, id: &str) -> Result<Option<Task>, RouterError> {
        let job = contract_jobs::drover_job_id(NAMESPACE, id);
        Ok(contract_jobs::task_of(app, &job).await?)
    }

    /// Applies a worker's status update for the job `id`.
    pub async fn update(
        &self,
        app: &AppState,
        id: Option<String>,
        u: api::StatusUpdate,
    ) -> Result<Updated, RouterError> {
        let id = id.or(u.id).filter(|s| !s.is_empty()).ok_or_else(|| {
            invalid(
                "invalid_request",
                "the job id is missing: PUT /api/jobs/{id}/status, or \"jobId\" in the body",
            )
        })?;
        let word = u.status.ok_or_else(|| {
            invalid(
                "invalid_request",
                format!("status is required: {UPDATE_WORDS}"),
            )
        })?;
        let update = WorkerUpdate::parse(&word).ok_or_else(|| {
            invalid(
                "invalid_status",
                format!("unknown status {word:?}: expected {UPDATE_WORDS}"),
            )
        })?;
        let worker = u
            .worker_id
            .filter(|w| !w.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    "invalid_request",
                    "workerId is required: the worker that runs the job",
                )
            })?;
        let Some(task) = self.task(app, &id).await? else {
            return if self.config.lenient_unknown_jobs {
                Ok(Updated::Unchanged)
            } else {
                Err(RouterError::UnknownJob(id))
            };
        };
        let mut changed = false;
        if update.claims_first(task.status) {
            match self.claim_for(app, &task, &worker).await? {
                TaskClaim::Claimed(_) => changed = true,
                TaskClaim::AlreadyHeld { .. } => {}
                TaskClaim::Unavailable(now) if update == WorkerUpdate::Running => {
                    return Err(match now.status {
                        TaskStatus::Running => conflict(
                            "held_by_another_worker",
                            format!(
                                "job {id:?} is running on worker {:?}; it is given to another only after that worker goes silent",
                                now.assigned_to.unwrap_or_default()
                            ),
                        ),
                        s => conflict(
                            "job_finished",
                            format!(
                                "job {id:?} is {} already",
                                drover_core::priority::status_word(s)
                            ),
                        ),
                    });
                }
                // A report for a task that moved on: the report path decides (a repeat by its
                // holder is accepted, anyone else's refused).
                TaskClaim::Unavailable(_) => {}
                TaskClaim::AtCapacity { running } => {
                    return Err(conflict(
                        "worker_at_capacity",
                        format!(
                            "worker {worker:?} runs {running} jobs already, its capacity; finish one first or announce a larger capacity in its heartbeat"
                        ),
                    ));
                }
                TaskClaim::Draining => {
                    return Err(conflict(
                        "worker_draining",
                        format!("worker {worker:?} is draining and takes no new jobs"),
                    ));
                }
            }
        }
        let unchanged_unless = |changed: bool| {
            if changed {
                Updated::Changed
            } else {
                Updated::Unchanged
            }
        };
        if update == WorkerUpdate::Running {
            self.announce(app, &task, TaskStatus::Running, &worker, Value::Null)
                .await?;
            return Ok(unchanged_unless(changed));
        }
        let result = u.result.unwrap_or(Value::Null);
        let kind = if update == WorkerUpdate::Completed {
            ReportKind::Complete(TaskResult {
                result_json: (!result.is_null()).then(|| result.to_string()),
                ..Default::default()
            })
        } else {
            ReportKind::Fail {
                error: u.error_message.unwrap_or_else(|| "failed".into()),
                retriable: true,
            }
        };
        let report = Report {
            task_id: task.id.clone(),
            node_id: worker.clone(),
            attempt: None,
            kind,
        };
        let outcome = (app.store.jobs.report(vec![report], app.clock.now()).await?)
            .into_iter()
            .next()
            .unwrap_or(ReportOutcome::TaskNotFound);
        match outcome {
            ReportOutcome::Completed => {
                self.announce(app, &task, TaskStatus::Done, &worker, result)
                    .await?;
                Ok(Updated::Changed)
            }
            ReportOutcome::Failed { will_retry } => {
                let now = if will_retry {
                    TaskStatus::New
                } else {
                    TaskStatus::Failed
                };
                self.announce(app, &task, now, &worker, result).await?;
                Ok(Updated::Changed)
            }
            // The holder's repeat: said again, in case the first answer was lost.
            ReportOutcome::AlreadyCompleted => {
                self.announce(app, &task, TaskStatus::Done, &worker, result)
                    .await?;
                Ok(unchanged_unless(changed))
            }
            ReportOutcome::AlreadyReported { .. } | ReportOutcome::AlreadyTerminal => {
                Ok(unchanged_unless(changed))
            }
            ReportOutcome::TaskNotFound => Err(RouterError::UnknownJob(id)),
            ReportOutcome::NotHolder => Err(conflict(
                "not_holder",
                format!(
                    "worker {worker:?} does not hold job {id:?}; only the worker running it may report it"
                ),
            )),
            ReportOutcome::Cancelled => Err(conflict(
                "job_cancelled",
                format!("job {id:?} was cancelled while worker {worker:?} ran it"),
            )),
            ReportOutcome::Contradicts => Err(conflict(
                "contradicts",
                format!("worker {worker:?} already reported the opposite outcome for job {id:?}"),
            )),
        }
    }

    /// Claims `task` for `worker`; a worker this registry does not know yet (its first
    /// heartbeat still on its way) or one that went DOWN is brought in first: a status update
    /// is a sign of life.
    async fn claim_for(
        &self,
        app: &AppState,
        task: &Task,
        worker: &str,
    ) -> Result<TaskClaim, RouterError> {
        let cap = Some(self.capacity_of(app, worker).await?);
        let jobs = &app.store.jobs;
        match jobs
            .claim_task(&task.id, worker, cap, app.clock.now())
            .await
        {
            Err(StoreError::NotFound { .. } | StoreError::NodeDown(_)) => {
                self.worker_seen(app, worker, None, None).await?;
                Ok(jobs
                    .claim_task(&task.id, worker, cap, app.clock.now())
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Records a sign of life of `worker`: a heartbeat, or its registration when the registry
    /// does not know it.
    async fn worker_seen(
        &self,
        app: &AppState,
        worker: &str,
        worker_type: Option<String>,
        load: Option<i64>,
    ) -> Result<(), RouterError> {
        let now = app.clock.now();
        let stats = NodeStats {
            running_tasks: load,
            ..Default::default()
        };
        match app.store.nodes.heartbeat(worker, stats, now).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => {
                let mut labels = Map::new();
                labels.insert(
                    WORKER_TYPE_LABEL.into(),
                    Value::String(worker_type.unwrap_or_default()),
                );
                let node = NamedNode {
                    id: worker.to_string(),
                    info: NodeInfo {
                        labels,
                        ..Default::default()
                    },
                    capacity_gb: None,
                    liveness: Liveness::Heartbeats,
                    silence_timeout: Some(self.config.worker_timeout),
                };
                (app.store.nodes)
                    .put_node(node, app.config.max_spots, now)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A worker's heartbeat: registers it the first time, refreshes it after, and notes the
    /// capacity it announced.
    pub async fn heartbeat(
        &self,
        app: &AppState,
        h: api::WorkerHeartbeat,
    ) -> Result<(), RouterError> {
        let worker = h
            .worker_id
            .filter(|w| !w.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    "invalid_request",
                    "worker_id is required: the worker's own name",
                )
            })?;
        let capacity =
            whole(h.capacity, u64::from(DEFAULT_CAPACITY), 1..=100_000).ok_or_else(|| {
                invalid(
                    "invalid_request",
                    "capacity must be an integer from 1 to 100000",
                )
            })?;
        let load = whole(h.current_load, 0, 0..=1_000_000).ok_or_else(|| {
            invalid(
                "invalid_request",
                "current_load must be a non-negative integer",
            )
        })?;
        self.worker_seen(app, &worker, h.worker_type, Some(load as i64))
            .await?;
        self.record_capacity(app, &worker, capacity as u32).await
    }

    /// Cancels the job `id`.
    pub async fn cancel(&self, app: &AppState, id: &str) -> Result<(), RouterError> {
        let Some(task) = self.task(app, id).await? else {
            return Err(RouterError::UnknownJob(id.to_string()));
        };
        match app
            .store
            .jobs
            .cancel_job(&task.job_id, app.clock.now())
            .await
        {
            Ok(_) => {
                let holder = task.assigned_to.as_deref().unwrap_or("none");
                self.announce(app, &task, TaskStatus::Cancelled, holder, Value::Null)
                    .await
            }
            Err(StoreError::JobFinished { .. }) => Err(conflict(
                "job_finished",
                format!("job {id:?} finished before it could be cancelled"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts every job, worker and unpublished message of this contract (the jobs by one
    /// aggregate read of the store, `JobStore::origin_counts`).
    pub async fn snapshot(&self, app: &AppState) -> Result<Snapshot, RouterError> {
        let minute_ago = app.clock.now() - chrono::Duration::minutes(1);
        let counts = app.store.jobs.origin_counts(NAMESPACE, minute_ago).await?;
        let mut snap = Snapshot {
            finished_last_minute: counts.finished_since,
            ..Default::default()
        };
        for (priority, status, n) in counts.tasks {
            let class = PriorityClass::of_job_priority(priority);
            let word = drover_core::priority::status_word(status);
            *snap.jobs.entry((class, word)).or_default() += n;
        }
        for n in app.store.nodes.list_nodes().await? {
            if n.info.labels.contains_key(WORKER_TYPE_LABEL) {
                let word = match n.status {
                    NodeStatus::Up => "up",
                    NodeStatus::Draining => "draining",
                    NodeStatus::Down => "down",
                };
                *snap.workers.entry(word).or_default() += 1;
            }
        }
        snap.unpublished = app.store.dispatch.unpublished_counts().await?;
        app.metrics.priority.set(&snap);
        Ok(snap)
    }

    /// Starts bringing the `drover_priority_*` gauges up to date for a scrape of `/metrics`,
    /// at most every [`GAUGES_EVERY`], in the background: a scrape never waits for the store
    /// (it must answer at once while the database is away, which is when it is read most) and
    /// shows the figures of the last count.
    pub fn refresh_gauges(&self, app: &AppState) {
        let now = tokio::time::Instant::now();
        {
            let mut at = self.gauges_at.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|t| now.duration_since(t) < GAUGES_EVERY) {
                return;
            }
            *at = Some(now);
        }
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = app.priority.snapshot(&app).await {
                tracing::warn!(error = %e, "counting the priority contract's jobs for /metrics");
            }
        });
    }

    /// This contract's jobs, newest first, filtered; a page of at most `limit` and where the
    /// next one starts.
    pub async fn list(
        &self,
        app: &AppState,
        filter: &JobFilter,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<ContractJob>, Option<i64>), RouterError> {
        let mut out = Vec::new();
        let mut cursor = cursor;
        loop {
            let page = drover_store::Page { cursor, limit: 500 };
            let jobs = app.store.jobs.list_jobs_of(NAMESPACE, page).await?;
            let ours: Vec<&Job> = (jobs.items.iter())
                .filter(|job| {
                    let class = PriorityClass::of_job_priority(job.priority);
                    filter.class.is_none_or(|c| c == class)
                })
                .collect();
            // The page's tasks in one read of the store, not one per job.
            let ids = (ours.iter())
                .map(|job| drover_core::ids::sweep_task_id(&job.id, 0))
                .collect();
            let mut tasks: HashMap<String, Task> = (app.store.jobs.get_tasks(ids).await?)
                .into_iter()
                .map(|t| (t.job_id.clone(), t))
                .collect();
            for job in ours {
                let Some(task) = tasks.remove(&job.id) else {
                    continue;
                };
                if filter.status.is_some_and(|s| s != task.status) {
                    continue;
                }
                let (id, job_type, priority) = contract_fields(&task.payload);
                if filter.job_type.as_ref().is_some_and(|t| *t != job_type) {
                    continue;
                }
                out.push(ContractJob {
                    id,
                    job_type,
                    priority,
                    class: PriorityClass::of_job_priority(job.priority),
                    task,
                });
                if out.len() == limit {
                    return Ok((out, Some(job.seq)));
                }
            }
            match jobs.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((out, None)),
            }
        }
    }
}

/// Priority aging, a background worker of the leader (only when `--priority-aging` is set):
/// each step raises this contract's jobs that have waited past their class's deadline
/// (`PriorityClass::aged`) to the class they are due, and in RabbitMQ mode routes them to
/// that class's queue (the store publishes them there again).
///
/// It reads the waiting jobs of the contract of the medium and the low class oldest first
/// and stops at the first that has not waited long enough, so a step costs the jobs it
/// raises.
pub struct Ager {
    pub jobs: Arc<dyn JobStore>,
    pub clock: Arc<dyn Clock>,
    /// The aging step.
    pub step: Duration,
    /// Whether jobs go out through the broker, so that raised ones are routed anew.
    pub routed: bool,
}

/// Jobs read, and raised, at a time.
const AGING_PAGE: u32 = 500;

impl Ager {
    /// How often the step runs: a tenth of the aging step, within 100 ms and 10 s, so a job
    /// is raised soon after its deadline without reading the store needlessly often.
    pub fn interval(&self) -> Duration {
        (self.step / 10).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Raises every job due a higher class now; how many it raised.
    pub async fn age(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut raised = 0;
        // Medium first, so that a low job due high is raised once, straight to high.
        for class in [PriorityClass::Medium, PriorityClass::Low] {
            let Some(deadline) = class.raised_after(self.step) else {
                continue;
            };
            let mut due: BTreeMap<PriorityClass, Vec<String>> = BTreeMap::new();
            let mut after = None;
            'read: loop {
                let jobs = (self.jobs)
                    .waiting_jobs(NAMESPACE, class.job_priority(), after, AGING_PAGE)
                    .await?;
                for job in &jobs {
                    after = Some(job.seq);
                    let waited = (now - job.created_at).to_std().unwrap_or_default();
                    if waited < deadline {
                        // Those after it are younger still.
                        break 'read;
                    }
                    let to = class.aged(waited, self.step);
                    due.entry(to).or_default().push(job.id.clone());
                }
                if jobs.len() < AGING_PAGE as usize {
                    break;
                }
            }
            for (to, ids) in due {
                let route = self.routed.then(|| route_of(to));
                for chunk in ids.chunks(AGING_PAGE as usize) {
                    let done = (self.jobs)
                        .raise_priority(chunk.to_vec(), to.job_priority(), route.clone(), now)
                        .await?;
                    raised += done.len() as u64;
                }
            }
        }
        Ok(raised)
    }
}

#[async_trait::async_trait]
impl Worker for Ager {
    type Error = StoreError;

    fn name(&self) -> &'static str {
        "priority_aging"
    }

    async fn run_once(&self) -> Result<Counts, StoreError> {
        Ok(vec![("raised", self.age().await?)])
    }
}

/// The contract's jobs, workers and outbox counted at one moment (`GET /api/metrics`, and the
/// `drover_priority_*` gauges of `/metrics`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Jobs by the class they are served in and their status word.
    pub jobs: BTreeMap<(PriorityClass, &'static str), u64>,
    /// Jobs completed or failed for good within the last minute.
    pub finished_last_minute: u64,
    /// This contract's workers by status (`up`, `draining`, `down`).
    pub workers: BTreeMap<&'static str, u64>,
    /// What waits for the broker, by queue or exchange.
    pub unpublished: Vec<(String, u64)>,
}

/// The filters of `GET /api/jobs`.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Option<TaskStatus>,
    pub job_type: Option<String>,
    pub class: Option<PriorityClass>,
}

/// The route of a class's jobs on the broker.
pub fn route_of(class: PriorityClass) -> Route {
    Route {
        queue: class.queue().to_string(),
        priority: class.message_priority(),
    }
}

/// The contract's id, type and priority of the job a task carries.
pub fn contract_fields(payload: &Map<String, Value>) -> (String, String, i64) {
    let text = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let priority = payload
        .get("priority")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_PRIORITY);
    (text("id"), text("type"), priority)
}

/// A whole number from a loose JSON value: `default` when absent, `None` when it is not a
/// whole number within `range`.
fn whole(v: Option<Value>, default: u64, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    let n = match v {
        None | Some(Value::Null) => default,
        Some(Value::Number(n)) => n.as_u64()?,
        Some(_) => return None,
    };
    range.contains(&n).then_some(n)
}

/// Milliseconds since the epoch, the contract's time.
pub fn millis(t: &Timestamp) -> i64 {
    t.timestamp_millis()
}

/// The job as the contract's records show it (the published message's body).
pub fn job_message(task: &Task, job_created_at: &Timestamp) -> api::JobMessage {
    let (id, job_type, priority) = contract_fields(&task.payload);
    let field = |k: &str| task.payload.get(k).cloned().unwrap_or(Value::Null);
    api::JobMessage {
        id,
        job_type,
        priority,
        status: drover_core::priority::status_word(task.status).into(),
        worker_id: task.assigned_to.clone().unwrap_or_else(|| "none".into()),
        payload: field("payload"),
        result: result_of(task),
        error_message: task.last_error.clone(),
        retry_count: task.attempt,
        max_retries: task.max_attempts.saturating_sub(1),
        execution_timeout: field("execution_timeout").as_u64().unwrap_or_default(),
        created_at: millis(job_created_at),
        started_at: task.started_at.as_ref().map(millis),
        completed_at: task.finished_at.as_ref().map(millis),
        metadata: Map::new(),
    }
}

/// A task's result as the worker sent it (JSON), or null.
pub fn result_of(task: &Task) -> Value {
    (task.result.result_json.as_deref())
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null)
}
