//! Mapping between PostgreSQL rows and domain types. Column lists live next to the functions
//! that read them, so a column cannot be added to one and forgotten in the other.

use super::write::{R, row_opt};
use crate::StoreError;
use crate::common::{StoredJob, Unclaimed};
use chrono::DurationRound;
use deadpool_postgres::GenericClient;
use drover_core::lifecycle::{AttemptOutcome, AttemptRecord, ClaimKey};
use drover_core::{
    Capacity, Job, JobCounts, Node, NodeInfo, NodeStatus, Task, TaskResult, TaskStatus, Timestamp,
};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

/// An instant as stored: milliseconds, as the SQLite store keeps them, so both answer the
/// same instants.
pub(super) fn at(t: Timestamp) -> Timestamp {
    t.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(t)
}

fn bad(what: &str, value: impl std::fmt::Debug) -> StoreError {
    StoreError::Internal(format!("unexpected {what} {value:?} in the database"))
}

/// Column `i` of `r`.
pub(super) fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> R<T> {
    Ok(r.try_get(i)?)
}

/// A non-negative integer column as `u64`.
pub(super) fn count(r: &Row, i: usize) -> R<u64> {
    let n: i64 = get(r, i)?;
    u64::try_from(n).map_err(|_| bad("count", n).into())
}

pub(super) fn small(r: &Row, i: usize) -> R<u32> {
    let n: i64 = get(r, i)?;
    u32::try_from(n).map_err(|_| bad("number", n).into())
}

pub(super) fn status<T: std::str::FromStr>(r: &Row, i: usize) -> R<T> {
    let s: String = get(r, i)?;
    s.parse().map_err(|_| bad("status", &s).into())
}

pub(super) fn json_object(r: &Row, i: usize) -> R<Map<String, Value>> {
    let s: String = get(r, i)?;
    match serde_json::from_str(&s) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad("JSON object", &s).into()),
    }
}

fn json(r: &Row, i: usize) -> R<Value> {
    let s: String = get(r, i)?;
    serde_json::from_str(&s).map_err(|_| bad("JSON", &s).into())
}

pub(super) const JOB_COLUMNS: &str = "seq, id, name, priority, max_attempts, task_timeout_ms, \
    spec, parameters, cancelled, total_tasks, new_tasks, running_tasks, completed_tasks, \
    failed_tasks, cancelled_tasks, created_at, updated_at, finished_at, started_at, run, origin";

pub(super) fn job(r: &Row) -> R<Job> {
    let cancelled: bool = get(r, 8)?;
    let counts = counts(r, 9)?;
    let started_at: Option<Timestamp> = get(r, 18)?;
    let run: Option<String> = get(r, 19)?;
    let run = match run {
        Some(text) => Some(serde_json::from_str(&text).map_err(|_| bad("run spec", &text))?),
        None => None,
    };
    Ok(Job {
        seq: get(r, 0)?,
        id: get(r, 1)?,
        name: get(r, 2)?,
        origin: get(r, 20)?,
        priority: get(r, 3)?,
        max_attempts: small(r, 4)?,
        task_timeout: Duration::from_millis(get::<i64>(r, 5)?.max(0) as u64),
        spec: json(r, 6)?,
        run,
        parameter_names: {
            let s: String = get(r, 7)?;
            serde_json::from_str(&s).map_err(|_| bad("parameter names", &s))?
        },
        // Derived from the counts on every read, as on SQLite.
        status: counts.status(cancelled, started_at.is_some()),
        cancelled,
        counts,
        created_at: get(r, 15)?,
        updated_at: get(r, 16)?,
        finished_at: get(r, 17)?,
        started_at,
    })
}

/// A job's columns as settling reads them (`common::StoredJob`), read by [`stored_job`].
pub(super) const STORED_JOB_COLUMNS: &str = "total_tasks, new_tasks, running_tasks, \
    completed_tasks, failed_tasks, cancelled_tasks, cancelled, started_at IS NOT NULL, status";

/// A job as settling needs it, from [`STORED_JOB_COLUMNS`] starting at `base`.
pub(super) fn stored_job(r: &Row, base: usize) -> R<StoredJob> {
    Ok(StoredJob {
        counts: counts(r, base)?,
        cancelled: get(r, base + 6)?,
        started: get(r, base + 7)?,
        status: get(r, base + 8)?,
    })
}

/// Six count columns starting at `base`: total, NEW, RUNNING, DONE, FAILED, CANCELLED.
pub(super) fn counts(r: &Row, base: usize) -> R<JobCounts> {
    Ok(JobCounts {
        total: count(r, base)?,
        new: count(r, base + 1)?,
        running: count(r, base + 2)?,
        done: count(r, base + 3)?,
        failed: count(r, base + 4)?,
        cancelled: count(r, base + 5)?,
    })
}

pub(super) async fn job_by_id<C: GenericClient>(c: &C, id: &str) -> R<Job> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    match row_opt(c, &sql, &[&id]).await? {
        Some(r) => job(&r),
        None => Err(StoreError::not_found("job", id).into()),
    }
}

/// `Task::seq` is the task's index in its job.
pub(super) const TASK_COLUMNS: &str = "idx, id, job_id, payload, status, attempt, max_attempts, \
    assigned_to, started_at, lease_expires_at, finished_at, runtime_ms, iter, fopt, \
    result_json, last_error, created_at, output";

pub(super) fn task(r: &Row) -> R<Task> {
    Ok(Task {
        seq: get(r, 0)?,
        id: get(r, 1)?,
        job_id: get(r, 2)?,
        payload: json_object(r, 3)?,
        status: status::<TaskStatus>(r, 4)?,
        attempt: small(r, 5)?,
        max_attempts: small(r, 6)?,
        assigned_to: get(r, 7)?,
        started_at: get(r, 8)?,
        lease_expires_at: get(r, 9)?,
        finished_at: get(r, 10)?,
        result: TaskResult {
            runtime_ms: get(r, 11)?,
            iter: get(r, 12)?,
            fopt: get(r, 13)?,
            result_json: get(r, 14)?,
            output: get(r, 17)?,
        },
        last_error: get(r, 15)?,
        created_at: get(r, 16)?,
    })
}

pub(super) const NODE_COLUMNS: &str = "id, address, hostname, zone, labels, total_cores, \
    memory_bytes, gpus, disk_bytes, cpu_load, free_memory_bytes, running_tasks, status, \
    registered_at, last_heartbeat";

pub(super) fn node(r: &Row) -> R<Node> {
    Ok(Node {
        id: get(r, 0)?,
        info: NodeInfo {
            address: get(r, 1)?,
            hostname: get(r, 2)?,
            zone: get(r, 3)?,
            labels: json_object(r, 4)?,
            capacity: Capacity {
                cores: get(r, 5)?,
                memory_bytes: get(r, 6)?,
                gpus: get(r, 7)?,
                disk_bytes: get(r, 8)?,
            },
        },
        cpu_load: get(r, 9)?,
        free_memory_bytes: get(r, 10)?,
        running_tasks: get(r, 11)?,
        status: status::<NodeStatus>(r, 12)?,
        registered_at: get(r, 13)?,
        last_heartbeat: get(r, 14)?,
    })
}

pub(super) async fn node_by_id<C: GenericClient>(c: &C, id: &str) -> R<Node> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
    match row_opt(c, &sql, &[&id]).await? {
        Some(r) => node(&r),
        None => Err(StoreError::not_found("spot", id).into()),
    }
}

/// The columns of a task that report decisions and releases need.
pub(super) const TASK_HEAD_COLUMNS: &str =
    "seq, id, job_id, status, attempt, max_attempts, assigned_to";

#[derive(Clone)]
pub(super) struct TaskHead {
    pub seq: i64,
    pub id: String,
    pub job_id: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub assigned_to: Option<String>,
}

pub(super) fn task_head(r: &Row) -> R<TaskHead> {
    Ok(TaskHead {
        seq: get(r, 0)?,
        id: get(r, 1)?,
        job_id: get(r, 2)?,
        status: status::<TaskStatus>(r, 3)?,
        attempt: small(r, 4)?,
        max_attempts: small(r, 5)?,
        assigned_to: get(r, 6)?,
    })
}

/// `SELECT attempt, node_id, outcome` of `task_attempts`.
pub(super) fn attempt_record(r: &Row) -> R<AttemptRecord> {
    let outcome: String = get(r, 2)?;
    Ok(AttemptRecord {
        attempt: small(r, 0)?,
        node_id: get(r, 1)?,
        outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| bad("outcome", &outcome))?,
    })
}

/// A stored NEW task a claim may take.
pub(super) const CLAIMABLE_COLUMNS: &str =
    "seq, id, job_id, attempt, timeout_ms, payload, priority, job_seq, idx";

pub(super) struct Claimable {
    pub seq: i64,
    pub id: String,
    pub job_id: String,
    pub attempt: u32,
    pub timeout_ms: i64,
    pub payload: String,
    pub key: ClaimKey,
}

pub(super) fn claimable(r: &Row) -> R<Claimable> {
    Ok(Claimable {
        seq: get(r, 0)?,
        id: get(r, 1)?,
        job_id: get(r, 2)?,
        attempt: small(r, 3)?,
        timeout_ms: get(r, 4)?,
        payload: get(r, 5)?,
        key: ClaimKey {
            priority: get(r, 6)?,
            job_order: get(r, 7)?,
            index: count(r, 8)?,
        },
    })
}

/// A job's tasks that have no rows yet (`materialised..total`), and what building them needs.
pub(super) const UNCLAIMED_COLUMNS: &str = "seq, id, priority, materialised, total_tasks, \
    cancelled, max_attempts, task_timeout_ms, created_at, finished_at";

pub(super) fn unclaimed(r: &Row) -> R<Unclaimed> {
    Ok(Unclaimed {
        seq: get(r, 0)?,
        job_id: get(r, 1)?,
        priority: get(r, 2)?,
        materialised: count(r, 3)?,
        total: count(r, 4)?,
        cancelled: get(r, 5)?,
        max_attempts: small(r, 6)?,
        timeout_ms: get(r, 7)?,
        created_at: get(r, 8)?,
        finished_at: get(r, 9)?,
    })
}

/// The job's [`Unclaimed`] facts, or `None` if there is no such job.
pub(super) async fn unclaimed_of<C: GenericClient>(c: &C, job_id: &str) -> R<Option<Unclaimed>> {
    let sql = format!("SELECT {UNCLAIMED_COLUMNS} FROM jobs WHERE id = $1");
    row_opt(c, &sql, &[&job_id])
        .await?
        .map(|r| unclaimed(&r))
        .transpose()
}

pub(super) const RUNNER_COLUMNS: &str = "session_id, driver, instance, endpoint, status, \
    singleton, created_at, last_heartbeat, token_hash";

pub(super) fn runner(r: &Row) -> R<drover_core::Runner> {
    Ok(drover_core::Runner {
        session_id: get(r, 0)?,
        driver: get(r, 1)?,
        instance: get(r, 2)?,
        endpoint: get(r, 3)?,
        status: status(r, 4)?,
        singleton: get(r, 5)?,
        created_at: get(r, 6)?,
        last_heartbeat: get(r, 7)?,
        token_hash: get(r, 8)?,
    })
}
