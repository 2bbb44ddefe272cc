//! The event journal's records and the deterministic state machine that replays them.
//!
//! Every acknowledged write appends, in its own transaction, what it changed as journal
//! [`Entry`]s: a gap-free sequence number, the time, a kind (an [`Event::kind`] name) and the
//! [`Change`]s of that kind, in order. Replaying the entries from empty with [`State::apply`]
//! rebuilds the *journaled state*: the part of the store that the journal promises to carry.
//! The consistency check ([`State::differences`]) compares a replayed state with one read from
//! the live tables and names every entry that differs.
//!
//! What is journaled (and so compared) and what is not:
//! - nodes: id, status, hostname, zone, labels, capacity; not the liveness figures that every
//!   heartbeat writes (last heartbeat, address, load, running tasks, free memory);
//! - node stats as reported to the placement contract (`POST /node/{id}/stats`), last value
//!   (a report of the same figures again is not a change: the store yields no event for it);
//! - jobs: id, name, origin, priority, attempts allowed, task timeout, task count, cancelled,
//!   and the sweep's spec and the run as stored (so a rebuild can create them again); their
//!   counts per status are derived from the tasks and compared with the live counters;
//! - tasks: status, attempt, and the node while RUNNING, for every task that left the state its
//!   job implies (NEW, or CANCELLED in a cancelled job, never claimed); a sweep's untouched
//!   tasks have no rows in the live tables either;
//! - runners: session, driver, status, singleton, instance, endpoint; not their heartbeats;
//! - objects (hash, size, replication factor), replica states, the scheduler's weights.
//!
//! This module owns those records, their encoding (serde, stable field names: sinks keep them)
//! and the replay rules. It does no IO and must not decide anything a store decides: a change
//! records an outcome, it is never re-judged here.

use crate::event::Event;
use crate::model::{
    Capacity, JobCounts, Node, NodeStatus, ReplicaState, Runner, RunnerStatus, TaskStatus,
};
use crate::scheduling::{Stats, Weights};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One record of the journal: the changes of one kind that one write made, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(with = "as_text")]
    pub at: Timestamp,
    pub kind: String,
    pub changes: Vec<Change>,
}

/// What one change did, with the data it takes to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Change {
    /// A node as it stands after the change (registered, described, down, revived).
    Node(NodeImage),
    NodeGone {
        id: String,
    },
    NodeStats {
        id: String,
        stats: StatsImage,
    },
    /// A job as created.
    Job(JobImage),
    JobCancelled {
        job: String,
    },
    JobPriority {
        job: String,
        priority: i64,
    },
    /// A task moved: claimed (RUNNING on `node`), completed, failed (NEW again when retried),
    /// or taken back by the server. Task changes of one write form one entry.
    Task(TaskMove),
    /// Tasks of one job that moved to one status (and node), each by its index in the job and
    /// its attempt: the compact form of a batch of claims or reports (a task's id is derived
    /// from its job and index, `ids::sweep_task_id`), a few bytes per task.
    Tasks {
        job: String,
        #[serde(with = "as_status")]
        to: TaskStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        moves: Vec<(u64, u32)>,
    },
    Runner(RunnerImage),
    RunnerGone {
        session: String,
    },
    Object(ObjectImage),
    Replica {
        hash: String,
        node: String,
        #[serde(with = "as_status")]
        state: ReplicaState,
    },
    /// The scheduler's weights.
    Scheduler {
        weights: StatsImage,
    },
}

/// A task's move, compact: one of these per task in a batch of claims or reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMove {
    pub task: String,
    pub job: String,
    #[serde(with = "as_status")]
    pub to: TaskStatus,
    pub attempt: u32,
    /// The node that holds it, when `to` is RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeImage {
    pub id: String,
    #[serde(with = "as_status")]
    pub status: NodeStatus,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    pub labels: Map<String, Value>,
    pub cores: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub gpus: Option<i64>,
    pub disk_bytes: Option<i64>,
}

impl NodeImage {
    pub fn of(node: &Node) -> NodeImage {
        let Capacity {
            cores,
            memory_bytes,
            gpus,
            disk_bytes,
        } = node.info.capacity.clone();
        NodeImage {
            id: node.id.clone(),
            status: node.status,
            hostname: node.info.hostname.clone(),
            zone: node.info.zone.clone(),
            labels: node.info.labels.clone(),
            cores,
            memory_bytes,
            gpus,
            disk_bytes,
        }
    }
}

/// Five figures: a node's placement stats, or the scheduler's weights (same shape, same order:
/// cpu, ram, gpu, latency, io).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatsImage(pub [f64; 5]);

impl From<&Stats> for StatsImage {
    fn from(s: &Stats) -> Self {
        StatsImage([
            s.cpu_free,
            s.ram_free_mb,
            s.gpu_free,
            s.latency_ms,
            s.io_pressure,
        ])
    }
}

impl From<&Weights> for StatsImage {
    fn from(w: &Weights) -> Self {
        StatsImage([w.w_cpu, w.w_ram, w.w_gpu, w.w_latency, w.w_io])
    }
}

/// A job as created, with what it takes to create it again (a rebuild): its sweep's spec and
/// its run, as the store keeps them (JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobImage {
    pub id: String,
    pub name: Option<String>,
    pub origin: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub total: u64,
    pub cancelled: bool,
    pub spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerImage {
    pub session: String,
    pub driver: String,
    #[serde(with = "as_status")]
    pub status: RunnerStatus,
    pub singleton: bool,
    pub instance: Option<String>,
    pub endpoint: Option<String>,
}

impl RunnerImage {
    pub fn of(r: &Runner) -> RunnerImage {
        RunnerImage {
            session: r.session_id.clone(),
            driver: r.driver.clone(),
            status: r.status,
            singleton: r.singleton,
            instance: r.instance.clone(),
            endpoint: r.endpoint.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectImage {
    pub hash: String,
    pub size: u64,
    pub rf: u32,
}

/// A task of the journaled state: where it stands, when that differs from what its job implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskImage {
    pub job: String,
    #[serde(with = "as_status")]
    pub status: TaskStatus,
    pub attempt: u32,
    /// Compared only while RUNNING: a finished task's last holder is history, not state.
    pub node: Option<String>,
}

/// What a store must read to journal an event, or the change itself when the event carries
/// all of it (a task's move, a replica's state).
#[derive(Debug, Clone, PartialEq)]
pub enum Subject<'a> {
    /// Liveness only (a heartbeat, a runner's touch): not journaled.
    Nothing,
    Node(&'a str),
    NodeStats(&'a str),
    Job(&'a str),
    Runner(&'a str),
    Object(&'a str),
    Scheduler,
    Change(Change),
}

/// What journaling `event` takes (see the module docs for what is left out and why).
pub fn subject(event: &Event) -> Subject<'_> {
    let moved = |task: &str, job: &str, to: TaskStatus, attempt: u32, node: Option<&str>| {
        Subject::Change(Change::Task(TaskMove {
            task: task.to_string(),
            job: job.to_string(),
            to,
            attempt,
            node: node
                .filter(|_| to == TaskStatus::Running)
                .map(str::to_string),
        }))
    };
    match event {
        Event::JobCreated { job_id, .. } => Subject::Job(job_id),
        Event::JobCancelled { job_id } => Subject::Change(Change::JobCancelled {
            job: job_id.clone(),
        }),
        Event::JobPriorityRaised { job_id, priority } => Subject::Change(Change::JobPriority {
            job: job_id.clone(),
            priority: *priority,
        }),
        Event::TaskClaimed {
            task_id,
            job_id,
            node_id,
            attempt,
        } => moved(
            task_id,
            job_id,
            TaskStatus::Running,
            *attempt,
            Some(node_id),
        ),
        Event::TaskCompleted {
            task_id,
            job_id,
            attempt,
            ..
        } => moved(task_id, job_id, TaskStatus::Done, *attempt, None),
        Event::TaskFailed {
            task_id,
            job_id,
            attempt,
            will_retry,
            ..
        } => {
            let to = if *will_retry {
                TaskStatus::New
            } else {
                TaskStatus::Failed
            };
            moved(task_id, job_id, to, *attempt, None)
        }
        Event::TaskReleased {
            task_id,
            job_id,
            attempt,
            to,
            ..
        } => moved(task_id, job_id, *to, *attempt, None),
        Event::NodeRegistered { node_id }
        | Event::NodeDescribed { node_id }
        | Event::NodeDown { node_id }
        | Event::NodeRevived { node_id }
        | Event::NodeDraining { node_id }
        | Event::NodeUndrained { node_id } => Subject::Node(node_id),
        // A heartbeat changes nothing journaled: a status change by heartbeat is `NodeRevived`.
        Event::NodeUpdated { .. } => Subject::Nothing,
        Event::NodeForgotten { node_id } => Subject::Change(Change::NodeGone {
            id: node_id.clone(),
        }),
        Event::NodeStatsReported { node_id } => Subject::NodeStats(node_id),
        Event::RunnerReserved { session_id, .. } | Event::RunnerStarted { session_id } => {
            Subject::Runner(session_id)
        }
        Event::RunnerTouched { .. } => Subject::Nothing,
        Event::RunnerRemoved { session_id } => Subject::Change(Change::RunnerGone {
            session: session_id.clone(),
        }),
        Event::SchedulerConfigured => Subject::Scheduler,
        Event::ObjectRegistered { hash } => Subject::Object(hash),
        Event::ReplicaChanged {
            hash,
            node_id,
            state,
        } => Subject::Change(Change::Replica {
            hash: hash.clone(),
            node: node_id.clone(),
            state: *state,
        }),
    }
}

/// Groups one write's changes into entries: consecutive changes of one kind share an entry.
/// `seq` numbers them from `first`.
/// Consecutive moves of tasks of one job to one status and node become one
/// [`Change::Tasks`], when the tasks' ids are their job's derived ones.
pub fn entries(changes: Vec<(&'static str, Change)>, first: u64, at: Timestamp) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for (kind, change) in changes {
        let change = match change {
            Change::Task(m) => {
                let batch = (out.last_mut())
                    .filter(|last| last.kind == kind)
                    .and_then(|last| last.changes.last_mut());
                match join_move(batch, m) {
                    None => continue,
                    Some(change) => change,
                }
            }
            other => other,
        };
        match out.last_mut() {
            Some(last) if last.kind == kind => last.changes.push(change),
            _ => out.push(Entry {
                seq: first + out.len() as u64,
                at,
                kind: kind.to_string(),
                changes: vec![change],
            }),
        }
    }
    out
}

/// Adds move `m` to `batch` when it is a batch of the same job, status and node and `m`'s
/// task id is derived (`None`: joined); otherwise answers the change that records `m` alone,
/// as the start of a batch when its id is derived.
fn join_move(batch: Option<&mut Change>, m: TaskMove) -> Option<Change> {
    let index = crate::ids::sweep_task_id_parts(&m.task)
        .filter(|(hex, _)| m.job.strip_prefix("job-") == Some(*hex))
        .map(|(_, index)| index);
    let Some(index) = index else {
        return Some(Change::Task(m));
    };
    if let Some(Change::Tasks {
        job,
        to,
        node,
        moves,
    }) = batch
        && *job == m.job
        && *to == m.to
        && *node == m.node
    {
        moves.push((index, m.attempt));
        return None;
    }
    Some(Change::Tasks {
        job: m.job,
        to: m.to,
        node: m.node,
        moves: vec![(index, m.attempt)],
    })
}

/// The state `entries` replay to, from empty.
pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<State, ReplayError> {
    let mut state = State::default();
    for entry in entries {
        state.apply(entry)?;
    }
    Ok(state)
}

/// Why an entry cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("entry {found} follows entry {applied}: entries {} to {} are missing", applied + 1, found - 1)]
    Gap { applied: u64, found: u64 },
}

/// The journaled state (see the module docs), as replayed or as read from the live tables. Its
/// encoding (serde) is a snapshot's: the state as of entry `applied`, behind which a store may
/// drop its entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The last entry applied (0: none).
    pub applied: u64,
    pub nodes: BTreeMap<String, NodeImage>,
    pub stats: BTreeMap<String, StatsImage>,
    pub jobs: BTreeMap<String, JobImage>,
    pub tasks: BTreeMap<String, TaskImage>,
    pub runners: BTreeMap<String, RunnerImage>,
    pub objects: BTreeMap<String, ObjectImage>,
    /// Replica states by object hash, then node.
    #[serde(with = "replica_states")]
    pub replicas: BTreeMap<String, BTreeMap<String, ReplicaState>>,
    pub scheduler: Option<StatsImage>,
}

impl State {
    /// Applies one entry. An entry at or below [`State::applied`] was applied already and
    /// changes nothing; one past the next is refused, since replaying around a hole would
    /// build a state no store ever had.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ReplayError> {
        if entry.seq <= self.applied {
            return Ok(());
        }
        if entry.seq != self.applied + 1 {
            return Err(ReplayError::Gap {
                applied: self.applied,
                found: entry.seq,
            });
        }
        for change in &entry.changes {
            self.change(change);
        }
        self.applied = entry.seq;
        Ok(())
    }

    fn change(&mut self, change: &Change) {
        match change {
            Change::Node(n) => {
                self.nodes.insert(n.id.clone(), n.clone());
            }
            Change::NodeGone { id } => {
                self.nodes.remove(id);
                self.stats.remove(id);
            }
            Change::NodeStats { id, stats } => {
                self.stats.insert(id.clone(), *stats);
            }
            Change::Job(j) => {
                self.jobs.insert(j.id.clone(), j.clone());
            }
            Change::JobCancelled { job } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.cancelled = true;
                }
                // Its unfinished tasks end CANCELLED; those never claimed are then what a
                // cancelled job implies and leave the map (see `insert_task`).
                let ids: Vec<String> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| &t.job == job && !t.status.is_terminal())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some(t) = self.tasks.get(&id).cloned() {
                        self.insert_task(
                            id,
                            TaskImage {
                                status: TaskStatus::Cancelled,
                                node: None,
                                ..t
                            },
                        );
                    }
                }
            }
            Change::JobPriority { job, priority } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.priority = *priority;
                }
            }
            Change::Task(m) => self.insert_task(
                m.task.clone(),
                TaskImage {
                    job: m.job.clone(),
                    status: m.to,
                    attempt: m.attempt,
                    node: m.node.clone(),
                },
            ),
            Change::Tasks {
                job,
                to,
                node,
                moves,
            } => {
                for &(index, attempt) in moves {
                    let task = TaskImage {
                        job: job.clone(),
                        status: *to,
                        attempt,
                        node: node.clone(),
                    };
                    self.insert_task(crate::ids::sweep_task_id(job, index), task);
                }
            }
            Change::Runner(r) => {
                self.runners.insert(r.session.clone(), r.clone());
            }
            Change::RunnerGone { session } => {
                self.runners.remove(session);
            }
            Change::Object(o) => {
                self.objects.insert(o.hash.clone(), o.clone());
            }
            Change::Replica { hash, node, state } => {
                self.replicas
                    .entry(hash.clone())
                    .or_default()
                    .insert(node.clone(), *state);
            }
            Change::Scheduler { weights } => self.scheduler = Some(*weights),
        }
    }

    /// Records where a task stands, in canonical form: a task that stands where its job
    /// implies (never claimed, NEW, or CANCELLED with its job) is not kept, so a replayed
    /// state and one read from tables (where a sweep's untouched tasks have no rows, and an
    /// explicit list's have) compare equal.
    pub fn insert_task(&mut self, id: String, mut task: TaskImage) {
        if task.status != TaskStatus::Running {
            task.node = None;
        }
        let cancelled = self.jobs.get(&task.job).is_some_and(|j| j.cancelled);
        let implied = if cancelled {
            TaskStatus::Cancelled
        } else {
            TaskStatus::New
        };
        if task.attempt == 0 && task.status == implied {
            self.tasks.remove(&id);
        } else {
            self.tasks.insert(id, task);
        }
    }

    /// Every job's counts per status, derived from its tasks: those not in the map stand
    /// where the job implies.
    pub fn job_counts(&self) -> BTreeMap<&str, JobCounts> {
        let mut counts: BTreeMap<&str, JobCounts> = BTreeMap::new();
        for task in self.tasks.values() {
            let c = counts.entry(task.job.as_str()).or_default();
            match task.status {
                TaskStatus::New => c.new += 1,
                TaskStatus::Running => c.running += 1,
                TaskStatus::Done => c.done += 1,
                TaskStatus::Failed => c.failed += 1,
                TaskStatus::Cancelled => c.cancelled += 1,
            }
        }
        for (id, job) in &self.jobs {
            let c = counts.entry(id.as_str()).or_default();
            let listed = c.new + c.running + c.done + c.failed + c.cancelled;
            let implied = job.total.saturating_sub(listed);
            if job.cancelled {
                c.cancelled += implied;
            } else {
                c.new += implied;
            }
            c.total = job.total;
        }
        counts
    }

    /// How many items a consistency check compares.
    pub fn items(&self) -> u64 {
        (self.nodes.len()
            + self.stats.len()
            + self.jobs.len()
            + self.tasks.len()
            + self.runners.len()
            + self.objects.len()
            + self.replicas.values().map(BTreeMap::len).sum::<usize>()
            + usize::from(self.scheduler.is_some())) as u64
    }

    /// Every item on which `self` (replayed from the journal) and `live` (read from the
    /// tables, with the job counters as the tables hold them in `live_counts`) differ, each
    /// named with both values; empty when they agree.
    pub fn differences(
        &self,
        live: &State,
        live_counts: &BTreeMap<String, JobCounts>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        diff_maps(&mut out, "node", &self.nodes, &live.nodes);
        diff_maps(&mut out, "node stats", &self.stats, &live.stats);
        diff_maps(&mut out, "job", &self.jobs, &live.jobs);
        diff_maps(&mut out, "task", &self.tasks, &live.tasks);
        diff_maps(&mut out, "runner", &self.runners, &live.runners);
        diff_maps(&mut out, "object", &self.objects, &live.objects);
        diff_maps(
            &mut out,
            "replicas of object",
            &self.replicas,
            &live.replicas,
        );
        if self.scheduler != live.scheduler {
            out.push(format!(
                "scheduler weights: {:?} in the journal, {:?} in the tables",
                self.scheduler, live.scheduler
            ));
        }
        let derived = self.job_counts();
        for (id, counts) in live_counts {
            let journaled = derived.get(id.as_str()).copied().unwrap_or_default();
            if journaled != *counts {
                out.push(format!(
                    "counts of job {id}: {journaled:?} from the journal, {counts:?} in the tables"
                ));
            }
        }
        out
    }
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    what: &str,
    journaled: &BTreeMap<String, V>,
    live: &BTreeMap<String, V>,
) {
    for (id, j) in journaled {
        match live.get(id) {
            None => out.push(format!(
                "{what} {id}: {j:?} in the journal, missing from the tables"
            )),
            Some(l) if l != j => out.push(format!(
                "{what} {id}: {j:?} in the journal, {l:?} in the tables"
            )),
            Some(_) => {}
        }
    }
    for (id, l) in live {
        if !journaled.contains_key(id) {
            out.push(format!(
                "{what} {id}: {l:?} in the tables, missing from the journal"
            ));
        }
    }
}

/// Serde for the status enums, as their upper-case names.
mod as_status {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for the replica states of a [`State`], by their upper-case names.
mod replica_states {
    use crate::model::ReplicaState;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Replicas = BTreeMap<String, BTreeMap<String, ReplicaState>>;

    pub fn serialize<S: Serializer>(v: &Replicas, s: S) -> Result<S::Ok, S::Error> {
        let named: BTreeMap<&str, BTreeMap<&str, &str>> = (v.iter())
            .map(|(hash, nodes)| {
                let nodes = (nodes.iter())
                    .map(|(node, state)| (node.as_str(), state.as_str()))
                    .collect();
                (hash.as_str(), nodes)
            })
            .collect();
        named.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Replicas, D::Error> {
        let named = BTreeMap::<String, BTreeMap<String, String>>::deserialize(d)?;
        (named.into_iter())
            .map(|(hash, nodes)| {
                let nodes = (nodes.into_iter())
                    .map(|(node, state)| {
                        Ok((node, state.parse().map_err(serde::de::Error::custom)?))
                    })
                    .collect::<Result<_, D::Error>>()?;
                Ok((hash, nodes))
            })
            .collect()
    }
}

/// Serde for instants, in their canonical text form.
mod as_text {
    use crate::time::{Timestamp, format, parse};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an instant: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap()
    }

    fn job(id: &str, total: u64) -> Change {
        Change::Job(JobImage {
            id: id.into(),
            name: None,
            origin: None,
            priority: 0,
            max_attempts: 3,
            timeout_ms: 60_000,
            total,
            cancelled: false,
            spec: "{}".into(),
            run: None,
        })
    }

    fn moved(task: &str, job: &str, to: TaskStatus, attempt: u32, node: Option<&str>) -> Change {
        Change::Task(TaskMove {
            task: task.into(),
            job: job.into(),
            to,
            attempt,
            node: node.map(str::to_string),
        })
    }

    fn replay(entries: &[Entry]) -> State {
        super::replay(entries).unwrap()
    }

    fn numbered(changes: Vec<Change>) -> Vec<Entry> {
        changes
            .into_iter()
            .enumerate()
            .map(|(i, c)| Entry {
                seq: i as u64 + 1,
                at: at(),
                kind: "k".into(),
                changes: vec![c],
            })
            .collect()
    }

    #[test]
    fn a_write_s_changes_of_one_kind_share_an_entry_numbered_in_order() {
        let changes = vec![
            (
                "task_claimed",
                moved("t1", "j", TaskStatus::Running, 1, Some("n")),
            ),
            (
                "task_claimed",
                moved("t2", "j", TaskStatus::Running, 1, Some("n")),
            ),
            ("node_revived", Change::NodeGone { id: "x".into() }),
            (
                "task_claimed",
                moved("t3", "j", TaskStatus::Running, 1, Some("n")),
            ),
        ];
        let entries = entries(changes, 7, at());
        let shape: Vec<(u64, &str, usize)> = entries
            .iter()
            .map(|e| (e.seq, e.kind.as_str(), e.changes.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (7, "task_claimed", 2),
                (8, "node_revived", 1),
                (9, "task_claimed", 1)
            ]
        );
    }

    #[test]
    fn moves_of_one_job_to_one_status_are_one_compact_change() {
        let job = format!("job-{:032x}", 7);
        let task = |i| crate::ids::sweep_task_id(&job, i);
        let changes = vec![
            (
                "task_completed",
                moved(&task(0), &job, TaskStatus::Done, 1, None),
            ),
            (
                "task_completed",
                moved(&task(3), &job, TaskStatus::Done, 2, None),
            ),
            (
                "task_completed",
                moved("task-old", &job, TaskStatus::Done, 1, None),
            ),
            (
                "task_completed",
                moved(&task(4), &job, TaskStatus::Done, 1, None),
            ),
        ];
        let entries = entries(changes, 1, at());
        assert_eq!(entries.len(), 1);
        assert_eq!(
            serde_json::to_value(&entries[0].changes).unwrap(),
            serde_json::json!([
                {"t": "tasks", "job": job, "to": "DONE", "moves": [[0, 1], [3, 2]]},
                {"t": "task", "task": "task-old", "job": job, "to": "DONE", "attempt": 1},
                {"t": "tasks", "job": job, "to": "DONE", "moves": [[4, 1]]},
            ])
        );
    }

    #[test]
    fn the_encoding_keeps_its_field_names() {
        let entry = Entry {
            seq: 3,
            at: at(),
            kind: "task_claimed".into(),
            changes: vec![moved("t1", "j1", TaskStatus::Running, 2, Some("n1"))],
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"seq":3,"at":"2026-12-07T09:00:00.000Z","kind":"task_claimed","changes":[{"t":"task","task":"t1","job":"j1","to":"RUNNING","attempt":2,"node":"n1"}]}"#
        );
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
    }

    #[test]
    fn an_entry_past_the_next_is_refused_and_one_applied_already_changes_nothing() {
        let entries = numbered(vec![job("j", 2), job("k", 1), job("l", 1)]);
        let mut state = State::default();
        state.apply(&entries[0]).unwrap();
        assert_eq!(
            state.apply(&entries[2]),
            Err(ReplayError::Gap {
                applied: 1,
                found: 3
            })
        );
        let before = state.clone();
        state.apply(&entries[0]).unwrap();
        assert_eq!(state, before);
    }

    #[test]
    fn counts_follow_the_tasks_and_untouched_tasks_stand_where_their_job_implies() {
        let state = replay(&numbered(vec![
            job("j", 4),
            moved("t0", "j", TaskStatus::Running, 1, Some("n")),
            moved("t1", "j", TaskStatus::Running, 1, Some("n")),
            moved("t1", "j", TaskStatus::Done, 1, Some("n")),
            moved("t2", "j", TaskStatus::Running, 1, Some("n")),
            moved("t2", "j", TaskStatus::New, 1, None),
        ]));
        let c = state.job_counts()["j"];
        assert_eq!((c.total, c.new, c.running, c.done), (4, 2, 1, 1));
        // A finished task does not keep its node; a retried one is kept (its attempt moved).
        assert_eq!(state.tasks["t1"].node, None);
        assert_eq!(state.tasks["t2"].status, TaskStatus::New);
        assert_eq!(state.tasks.len(), 3);
    }

    #[test]
    fn cancelling_a_job_cancels_its_unfinished_tasks_and_the_untouched_ones() {
        let state = replay(&numbered(vec![
            job("j", 3),
            moved("t0", "j", TaskStatus::Running, 1, Some("n")),
            moved("t1", "j", TaskStatus::Running, 1, Some("n")),
            moved("t1", "j", TaskStatus::Done, 1, None),
            Change::JobCancelled { job: "j".into() },
        ]));
        let c = state.job_counts()["j"];
        assert_eq!((c.done, c.cancelled, c.new, c.running), (1, 2, 0, 0));
        assert_eq!(state.tasks["t0"].status, TaskStatus::Cancelled);
        assert!(state.jobs["j"].cancelled);
    }

    #[test]
    fn a_table_row_that_stands_where_its_job_implies_compares_equal_to_no_row() {
        let replayed = replay(&numbered(vec![job("j", 2)]));
        let mut live = State {
            jobs: replayed.jobs.clone(),
            ..State::default()
        };
        // An explicit task list has rows for every task, NEW, from the start.
        for t in ["t0", "t1"] {
            live.insert_task(
                t.into(),
                TaskImage {
                    job: "j".into(),
                    status: TaskStatus::New,
                    attempt: 0,
                    node: None,
                },
            );
        }
        let counts = BTreeMap::from([(
            "j".to_string(),
            JobCounts {
                total: 2,
                new: 2,
                ..JobCounts::default()
            },
        )]);
        assert_eq!(replayed.differences(&live, &counts), Vec::<String>::new());
    }

    #[test]
    fn differences_name_the_item_and_both_values() {
        let replayed = replay(&numbered(vec![
            job("j", 1),
            moved("t0", "j", TaskStatus::Running, 1, Some("n")),
            Change::Replica {
                hash: "h".into(),
                node: "n".into(),
                state: ReplicaState::Healthy,
            },
        ]));
        let mut live = replayed.clone();
        live.tasks.get_mut("t0").unwrap().status = TaskStatus::Done;
        live.replicas.clear();
        let counts = BTreeMap::from([(
            "j".to_string(),
            JobCounts {
                total: 1,
                done: 1,
                ..JobCounts::default()
            },
        )]);
        let found = replayed.differences(&live, &counts);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("task t0: ") && found[0].contains("Done"),
            "{found:#?}"
        );
        assert!(found[1].starts_with("replicas of object h: "), "{found:#?}");
        assert!(found[2].starts_with("counts of job j: "), "{found:#?}");
    }

    /// Small id spaces, so that random changes collide on the same items.
    fn change() -> impl Strategy<Value = Change> {
        let id = |p: &'static str| (0..3u8).prop_map(move |i| format!("{p}{i}"));
        // Jobs with drover's ids, so that their tasks' ids are derived and batches compact.
        let job_id = || (0..3u8).prop_map(|i| format!("job-{i:032x}"));
        let status = prop_oneof![
            Just(TaskStatus::New),
            Just(TaskStatus::Running),
            Just(TaskStatus::Done),
            Just(TaskStatus::Failed),
            Just(TaskStatus::Cancelled),
        ];
        prop_oneof![
            (job_id(), 0..5u64).prop_map(|(j, total)| job(&j, total)),
            job_id().prop_map(|job| Change::JobCancelled { job }),
            (job_id(), -5..15i64).prop_map(|(job, priority)| Change::JobPriority { job, priority }),
            (0..5u64, job_id(), status.clone(), 0..3u32, id("n")).prop_map(|(i, j, to, a, n)| {
                moved(&crate::ids::sweep_task_id(&j, i), &j, to, a, Some(&n))
            }),
            // A task whose id is not derived from its job's (a row from before derived ids).
            (id("t"), job_id(), status, 0..3u32)
                .prop_map(|(t, j, to, a)| moved(&t, &j, to, a, None)),
            id("n").prop_map(|id| Change::NodeGone { id }),
            (id("n"), 0..100u32).prop_map(|(id, x)| Change::NodeStats {
                id,
                stats: StatsImage([f64::from(x) / 7.0, 1.0, 2.0, 3.0, 0.5]),
            }),
            (id("o"), id("n")).prop_map(|(hash, node)| Change::Replica {
                hash,
                node,
                state: ReplicaState::Pending,
            }),
            id("s").prop_map(|session| Change::RunnerGone { session }),
            (0..10u32).prop_map(|x| Change::Scheduler {
                weights: StatsImage([f64::from(x); 5])
            }),
        ]
    }

    /// Entries of one to three changes each, numbered from 1.
    fn journal() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(prop::collection::vec(change(), 1..4), 0..40).prop_map(|groups| {
            groups
                .into_iter()
                .enumerate()
                .map(|(i, changes)| Entry {
                    seq: i as u64 + 1,
                    at: at(),
                    kind: "k".into(),
                    changes,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_same_entries_in_the_same_order_give_the_same_state(entries in journal()) {
            prop_assert_eq!(replay(&entries), replay(&entries));
        }

        #[test]
        fn replaying_twice_changes_nothing(entries in journal()) {
            let once = replay(&entries);
            let mut twice = once.clone();
            for e in &entries {
                twice.apply(e).unwrap();
            }
            prop_assert_eq!(twice, once);
        }

        #[test]
        fn duplicates_interleaved_change_nothing(
            entries in journal(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let once = replay(&entries);
            let mut state = State::default();
            let mut picks = picks.into_iter();
            for (i, e) in entries.iter().enumerate() {
                state.apply(e).unwrap();
                // Any entry applied so far, again (a sink delivered it twice).
                if let Some(p) = picks.next() {
                    state.apply(&entries[p.index(i + 1)]).unwrap();
                }
            }
            prop_assert_eq!(state, once);
        }

        #[test]
        fn a_snapshot_replays_on_as_the_state_it_was_taken_of(
            entries in journal(),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = replay(&entries);
            let cut = cut.index(entries.len() + 1);
            let text = serde_json::to_string(&replay(&entries[..cut])).unwrap();
            let mut resumed: State = serde_json::from_str(&text).unwrap();
            for e in &entries[cut..] {
                resumed.apply(e).unwrap();
            }
            prop_assert_eq!(resumed, whole);
        }

        #[test]
        fn batching_a_write_s_moves_changes_nothing_of_what_they_replay_to(
            changes in prop::collection::vec(change(), 0..60),
        ) {
            // Each change alone in its entry, against one write's changes batched.
            let alone = (changes.iter().enumerate())
                .map(|(i, c)| Entry { seq: i as u64 + 1, at: at(), kind: "k".into(), changes: vec![c.clone()] })
                .collect::<Vec<_>>();
            let batched = entries(changes.into_iter().map(|c| ("k", c)).collect(), 1, at());
            prop_assert!(batched.len() <= 1);
            let text = serde_json::to_string(&batched).unwrap();
            let decoded: Vec<Entry> = serde_json::from_str(&text).unwrap();
            let mut state = replay(&alone);
            state.applied = 0;
            let mut from_batch = replay(&decoded);
            from_batch.applied = 0;
            prop_assert_eq!(from_batch, state);
        }

        #[test]
        fn entries_survive_their_encoding(entries in journal()) {
            let text = serde_json::to_string(&entries).unwrap();
            let back: Vec<Entry> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(replay(&back), replay(&entries));
        }
    }
}
