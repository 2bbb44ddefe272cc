//! Inputs and outputs of the store traits' calls that are not domain entities themselves.

use drover_core::{
    ClaimedTask, NodeInfo, NodeStatus, ReportKind, RunnerStatus, Task, TaskStatus, Timestamp,
};
use std::time::Duration;

/// A job to create; its tasks, and the spec it keeps, come from the sweep passed beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// An id the caller chose (a contract's own job id, mapped by its surface to the form of
    /// `drover_core::ids::job_id`); `None` for a new one.
    pub id: Option<String>,
    pub name: Option<String>,
    /// Which contract's clients made it (see `drover_core::Job::origin`); `None` for drover's
    /// own API.
    pub origin: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    pub task_timeout: Duration,
    /// What agents run for each task, if the job says.
    pub run: Option<drover_core::run::RunSpec>,
}

/// A node to register: what it announced, and the hash of the secret it was issued
/// (`drover_core::credential::hash`), if any; the secret itself is never stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewNode {
    pub info: NodeInfo,
    pub secret_hash: Option<String>,
}

impl From<NodeInfo> for NewNode {
    /// A node registered without a secret (a batch-contract client's).
    fn from(info: NodeInfo) -> Self {
        NewNode {
            info,
            secret_hash: None,
        }
    }
}

/// A runner to reserve a slot for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRunner {
    pub session_id: String,
    pub driver: String,
    /// The one shared runner of reuse mode.
    pub singleton: bool,
    /// The hash of the session token handed to the provisioning client
    /// (`drover_core::credential::hash`); the token itself is never stored.
    pub token_hash: Option<String>,
}

/// The answer to a runner reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A new STARTING runner holds a slot; start its sandbox, then record it as started.
    Reserved(drover_core::Runner),
    /// The session already has a runner (or, for the singleton, the singleton exists).
    Exists(drover_core::Runner),
    /// `active` runners exist, which is the limit; nothing was written.
    LimitReached { active: u64 },
}

/// Keyset paging: `cursor` is the `seq` of the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub cursor: Option<i64>,
    pub limit: u32,
}

impl Page {
    pub fn first(limit: u32) -> Self {
        Page {
            cursor: None,
            limit,
        }
    }
}

/// One page of items and the cursor of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

/// A complete or fail report from a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub task_id: String,
    pub node_id: String,
    /// The attempt the node believes it holds; `None` trusts the node id alone (the contract's
    /// clients do not send it).
    pub attempt: Option<u32>,
    pub kind: ReportKind,
}

/// A task the server took back from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub task_id: String,
    pub job_id: String,
    pub node_id: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    /// NEW (will be retried) or FAILED (attempts spent).
    pub to: TaskStatus,
}

/// What the node reaper did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodesDown {
    pub nodes: Vec<String>,
    pub released: Vec<Released>,
}

/// Figures for the health endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overview {
    pub active_nodes: u64,
    pub pending_tasks: u64,
    pub running_tasks: u64,
}

/// How many nodes and runners are in each status, and how many tasks wait or run: what
/// `/metrics` shows of the store at a scrape. Every status is listed, with 0 when none is in it,
/// so a series never vanishes when its last member leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Nodes by status, in [`NodeStatus::ALL`] order.
    pub nodes: Vec<(NodeStatus, u64)>,
    /// Runners by status, in [`RunnerStatus::ALL`] order.
    pub runners: Vec<(RunnerStatus, u64)>,
    /// Tasks NEW (waiting to be claimed), whether or not their rows exist yet.
    pub tasks_waiting: u64,
    /// Tasks RUNNING (claimed, under a lease).
    pub tasks_running: u64,
}

impl StatusCounts {
    /// `nodes` and `runners` in their statuses' order, from `(status word, count)` pairs as a
    /// backend's `GROUP BY status` reads them; a word no status has is an error, since the
    /// schema's CHECK constraints allow none.
    pub(crate) fn from_rows(
        nodes: Vec<(String, u64)>,
        runners: Vec<(String, u64)>,
        tasks_waiting: u64,
        tasks_running: u64,
    ) -> crate::Result<StatusCounts> {
        fn by_status<S: Copy + PartialEq + std::str::FromStr>(
            all: &[S],
            found: Vec<(String, u64)>,
        ) -> crate::Result<Vec<(S, u64)>>
        where
            S::Err: std::fmt::Display,
        {
            let mut out: Vec<(S, u64)> = all.iter().map(|s| (*s, 0)).collect();
            for (word, n) in found {
                let status: S = word
                    .parse()
                    .map_err(|e| crate::StoreError::Internal(format!("stored status: {e}")))?;
                if let Some(slot) = out.iter_mut().find(|(s, _)| *s == status) {
                    slot.1 += n;
                }
            }
            Ok(out)
        }
        Ok(StatusCounts {
            nodes: by_status(NodeStatus::ALL, nodes)?,
            runners: by_status(RunnerStatus::ALL, runners)?,
            tasks_waiting,
            tasks_running,
        })
    }
}

/// A job whose stored counts disagree with its tasks (a broken invariant 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMismatch {
    pub job_id: String,
    pub stored: drover_core::JobCounts,
    pub actual: drover_core::JobCounts,
}

/// A node registered under the id its client chose (the placement and node-registry contracts'
/// clients do), with what it declared. Registering an id that exists replaces these facts, as
/// those contracts do.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedNode {
    pub id: String,
    pub info: NodeInfo,
    /// Its capacity for placement, in GB; `None` counts as [`DEFAULT_CAPACITY_GB`].
    pub capacity_gb: Option<u64>,
    pub liveness: Liveness,
    /// How long this node may stay silent before it is DOWN, when it heartbeats more slowly
    /// than the server's spot timeout assumes (the priority contract's workers, every 10 s);
    /// `None` for the spot timeout. It only ever lengthens the spot timeout: a value below it
    /// counts as the spot timeout. Only the heartbeat silence check reads it (a node judged by
    /// its stats reports keeps the stats timeout); registering the node again replaces it.
    pub silence_timeout: Option<std::time::Duration>,
}

/// What a node sends to show it is alive, which decides which silence check judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heartbeats: the spot timeout applies (the batch and node-registry contracts' nodes).
    Heartbeats,
    /// Stats reports: only the optional stats timeout applies (the placement contract's).
    Stats,
}

/// A node of the registry as placement and scheduling see it: every node, whichever surface
/// registered it (a node registered without a capacity counts as [`DEFAULT_CAPACITY_GB`], one
/// without a zone is in the zone `""`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementNode {
    pub id: String,
    pub zone: String,
    pub address: String,
    pub capacity_gb: u64,
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub status: drover_core::NodeStatus,
    /// Its live stats as last reported, or `None` if it never reported any.
    pub stats: Option<drover_core::scheduling::Stats>,
    /// The last sign of life: registration, a heartbeat, or a stats report.
    pub last_seen: drover_core::Timestamp,
}

/// The placement contract's capacity of a node registered without one.
pub const DEFAULT_CAPACITY_GB: u64 = 100;

/// An object whose replicas placement tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub hash: String,
    pub size: u64,
    /// The replication factor it was registered with.
    pub rf: u32,
    /// Its replica records in the order they were made.
    pub replicas: Vec<(String, drover_core::replicas::ReplicaState)>,
    pub registered_at: drover_core::Timestamp,
}

/// What [`JobStore::claim_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskClaim {
    /// The task was NEW and is now RUNNING under the node: a new attempt with its lease.
    Claimed(ClaimedTask),
    /// The node holds this task already (this attempt): nothing changed.
    AlreadyHeld { attempt: u32 },
    /// Another node holds the task, or it finished: nothing changed. The task as it stands.
    Unavailable(Box<Task>),
    /// The node holds `running` tasks already, as many as its cap: nothing changed.
    AtCapacity { running: u32 },
    /// The node is DRAINING: it takes no new work; nothing changed.
    Draining,
}

/// Where a dispatched job's tasks are published: a queue (the routing key on the broker's
/// exchange) and the message priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub queue: String,
    pub priority: u8,
}

/// A task due for publication, as it stands, and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub task: Task,
    pub route: Route,
    /// When its job was made (the message carries it).
    pub job_created_at: Timestamp,
}

/// What [`crate::JobStore::origin_counts`] counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginCounts {
    /// Stored tasks by their job's priority and their status (pairs with no task left out).
    pub tasks: Vec<(i64, TaskStatus, u64)>,
    /// Tasks completed or failed at or after the time asked.
    pub finished_since: u64,
}

/// A message for the broker that is not a task (a status change): its exchange, routing key
/// and body, as the caller made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: String,
}

/// A message of the outbox waiting for the broker, and its place in the outbox's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub seq: i64,
    pub message: OutboxMessage,
}

/// A publication the broker confirmed: the task and the attempts it had when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub task_id: String,
    pub attempts: u32,
}
