//! Mapping between SQLite rows and domain types. Column lists live next to the functions that
//! read them, so a column cannot be added to one and forgotten in the other.

use super::{attempt_outcome, bad_value, map_err};
use crate::common::Unclaimed;
use crate::{CountMismatch, Result, StoreError};
use drover_core::lifecycle::{AttemptRecord, ClaimKey};
use drover_core::time::parse;
use drover_core::{
    Capacity, Job, JobCounts, Node, NodeInfo, NodeStatus, Task, TaskResult, TaskStatus, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::{Map, Value};
use std::time::Duration;

pub(super) fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| bad_value(&s))
}

pub(super) fn opt_time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| parse(&s).ok_or_else(|| bad_value(&s)))
        .transpose()
}

pub(super) fn status<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    s.parse().map_err(|_| bad_value(&s))
}

pub(super) fn json_object(row: &Row<'_>, idx: usize) -> rusqlite::Result<Map<String, Value>> {
    let s: String = row.get(idx)?;
    match serde_json::from_str(&s) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_value(&s)),
    }
}

pub(super) const JOB_COLUMNS: &str = "seq, id, name, priority, max_attempts, task_timeout_ms, \
    spec, parameters, cancelled, total_tasks, new_tasks, running_tasks, completed_tasks, \
    failed_tasks, cancelled_tasks, created_at, updated_at, finished_at, started_at, run, origin";

pub(super) fn job(r: &Row<'_>) -> rusqlite::Result<Job> {
    let spec: String = r.get(6)?;
    let parameters: String = r.get(7)?;
    let cancelled: bool = r.get(8)?;
    let counts = counts(r, 9)?;
    let started_at = opt_time(r, 18)?;
    let run: Option<String> = r.get(19)?;
    let run = match run {
        Some(text) => Some(serde_json::from_str(&text).map_err(|_| bad_value(&text))?),
        None => None,
    };
    Ok(Job {
        seq: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        origin: r.get(20)?,
        priority: r.get(3)?,
        max_attempts: r.get(4)?,
        task_timeout: Duration::from_millis(r.get::<_, i64>(5)?.max(0) as u64),
        spec: serde_json::from_str(&spec).map_err(|_| bad_value(&spec))?,
        run,
        parameter_names: serde_json::from_str(&parameters).map_err(|_| bad_value(&parameters))?,
        // Derived from the counts on every read, so it is right even if the stored column lags
        // behind a change made by hand.
        status: counts.status(cancelled, started_at.is_some()),
        cancelled,
        counts,
        created_at: time(r, 15)?,
        updated_at: time(r, 16)?,
        finished_at: opt_time(r, 17)?,
        started_at,
    })
}

/// Six count columns starting at `base`: total, NEW, RUNNING, DONE, FAILED, CANCELLED.
pub(super) fn counts(r: &Row<'_>, base: usize) -> rusqlite::Result<JobCounts> {
    Ok(JobCounts {
        total: r.get(base)?,
        new: r.get(base + 1)?,
        running: r.get(base + 2)?,
        done: r.get(base + 3)?,
        failed: r.get(base + 4)?,
        cancelled: r.get(base + 5)?,
    })
}

/// One row of `table` by its `id`, or [`StoreError::NotFound`] naming `kind`.
fn by_id<T>(
    conn: &Connection,
    table: &str,
    columns: &str,
    kind: &'static str,
    id: &str,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    conn.prepare_cached(&format!("SELECT {columns} FROM {table} WHERE id = ?1"))
        .map_err(map_err)?
        .query_row([id], map)
        .optional()
        .map_err(map_err)?
        .ok_or_else(|| StoreError::not_found(kind, id))
}

pub(super) fn job_by_id(conn: &Connection, id: &str) -> Result<Job> {
    by_id(conn, "jobs", JOB_COLUMNS, "job", id, job)
}

/// The two statements that find a task's row by its id (schema migration 10): by its job's
/// `seq` and its index for an id derived from them, through `tasks_job_idx` (integers), and by
/// the id for any other, through `task_names`. Both select `$columns`. (Macros, so that each
/// statement is a literal.)
macro_rules! task_by_id_sql {
    ($columns:expr) => {
        (
            concat!(
                "SELECT ",
                $columns,
                " FROM tasks WHERE job_seq = ?1 AND idx = ?2 AND id = ?3"
            ),
            concat!(
                "SELECT ",
                $columns,
                " FROM tasks WHERE seq = (SELECT task_seq FROM task_names WHERE id = ?1)"
            ),
        )
    };
}

/// The job one call last found a task of, by the hex of its id, and its `seq`: the tasks one
/// call looks up (a batch of reports) are nearly always of one job, so each after the first is
/// found without reading the job. Kept for one call only (a job's `seq` never changes, but a
/// job written and rolled back within a call's group could have had a `seq` another job takes).
#[derive(Default)]
pub(super) struct LastJob(Option<(String, i64)>);

impl LastJob {
    /// The `seq` of the job `job-<hex>`, or `None` if there is none.
    fn seq(&mut self, conn: &Connection, hex: &str) -> Result<Option<i64>> {
        if let Some((last, seq)) = &self.0
            && last == hex
        {
            return Ok(Some(*seq));
        }
        let seq: Option<i64> = conn
            .prepare_cached("SELECT seq FROM jobs WHERE id = 'job-' || ?1")
            .map_err(map_err)?
            .query_row([hex], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        if let Some(seq) = seq {
            self.0 = Some((hex.to_string(), seq));
        }
        Ok(seq)
    }
}

/// One task's row, by id, mapped by `map`: one of the statements of [`task_by_id_sql`] (a
/// derived id whose row is missing is looked up by name too, as the id of a row written before
/// derived ids could, however unlikely, take that shape).
pub(super) fn find_task<T>(
    conn: &Connection,
    (derived, named): (&mut rusqlite::Statement<'_>, &str),
    last: &mut LastJob,
    id: &str,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    if let Some((hex, index)) = drover_core::ids::sweep_task_id_parts(id)
        && let Some(job_seq) = last.seq(conn, hex)?
    {
        let found = derived
            .query_row(rusqlite::params![job_seq, index, id], map)
            .optional()
            .map_err(map_err)?;
        if found.is_some() {
            return Ok(found);
        }
    }
    conn.prepare_cached(named)
        .map_err(map_err)?
        .query_row([id], map)
        .optional()
        .map_err(map_err)
}

/// `Task::seq` is the task's index in its job.
macro_rules! task_columns {
    () => {
        "idx, id, job_id, payload, status, attempt, max_attempts, assigned_to, started_at, \
         lease_expires_at, finished_at, runtime_ms, iter, fopt, result_json, last_error, \
         created_at, output"
    };
}
pub(super) const TASK_COLUMNS: &str = task_columns!();

/// The statements that find a task's row (its [`TASK_COLUMNS`]) by its id.
pub(super) const TASK_BY_ID_SQL: (&str, &str) = task_by_id_sql!(task_columns!());

/// A task's row by its id, or `None` if it has none (no such task, or one never claimed).
pub(super) fn task_row(conn: &Connection, id: &str) -> Result<Option<Task>> {
    let (derived, named) = TASK_BY_ID_SQL;
    let mut derived = conn.prepare_cached(derived).map_err(map_err)?;
    find_task(
        conn,
        (&mut derived, named),
        &mut LastJob::default(),
        id,
        task,
    )
}

pub(super) fn task(r: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        seq: r.get(0)?,
        id: r.get(1)?,
        job_id: r.get(2)?,
        payload: json_object(r, 3)?,
        status: status::<TaskStatus>(r, 4)?,
        attempt: r.get(5)?,
        max_attempts: r.get(6)?,
        assigned_to: r.get(7)?,
        started_at: opt_time(r, 8)?,
        lease_expires_at: opt_time(r, 9)?,
        finished_at: opt_time(r, 10)?,
        result: TaskResult {
            runtime_ms: r.get(11)?,
            iter: r.get(12)?,
            fopt: r.get(13)?,
            result_json: r.get(14)?,
            output: r.get(17)?,
        },
        last_error: r.get(15)?,
        created_at: time(r, 16)?,
    })
}

pub(super) const NODE_COLUMNS: &str = "id, address, hostname, zone, labels, total_cores, \
    memory_bytes, gpus, disk_bytes, cpu_load, free_memory_bytes, running_tasks, status, \
    registered_at, last_heartbeat";

pub(super) fn node(r: &Row<'_>) -> rusqlite::Result<Node> {
    Ok(Node {
        id: r.get(0)?,
        info: NodeInfo {
            address: r.get(1)?,
            hostname: r.get(2)?,
            zone: r.get(3)?,
            labels: json_object(r, 4)?,
            capacity: Capacity {
                cores: r.get(5)?,
                memory_bytes: r.get(6)?,
                gpus: r.get(7)?,
                disk_bytes: r.get(8)?,
            },
        },
        cpu_load: r.get(9)?,
        free_memory_bytes: r.get(10)?,
        running_tasks: r.get(11)?,
        status: status::<NodeStatus>(r, 12)?,
        registered_at: time(r, 13)?,
        last_heartbeat: time(r, 14)?,
    })
}

pub(super) fn node_by_id(conn: &Connection, id: &str) -> Result<Node> {
    by_id(conn, "nodes", NODE_COLUMNS, "spot", id, node)
}

/// A node's status, or `None` if there is no such node.
pub(super) fn node_status(conn: &Connection, id: &str) -> Result<Option<NodeStatus>> {
    conn.prepare_cached("SELECT status FROM nodes WHERE id = ?1")
        .map_err(map_err)?
        .query_row([id], |r| status(r, 0))
        .optional()
        .map_err(map_err)
}

/// The statements that find a task's `seq` by its id.
pub(super) const TASK_SEQ_BY_ID_SQL: (&str, &str) = task_by_id_sql!("seq");

/// The columns of a task that report decisions and releases need (a macro, so that SQL built
/// from it is a literal, not a string formatted on every report).
macro_rules! task_head_columns {
    () => {
        "seq, id, job_id, status, attempt, max_attempts, assigned_to"
    };
}
pub(super) const TASK_HEAD_COLUMNS: &str = task_head_columns!();

/// The statements that find a task's head by its id.
pub(super) const TASK_HEAD_BY_ID_SQL: (&str, &str) = task_by_id_sql!(task_head_columns!());

/// One task's head by its id, or `None` if it has no row: the first read of every report.
/// `derived` is the first statement of [`TASK_HEAD_BY_ID_SQL`], prepared by the caller (once
/// for all the reports of a call).
pub(super) fn task_head_by_id(
    conn: &Connection,
    derived: &mut rusqlite::Statement<'_>,
    last: &mut LastJob,
    id: &str,
) -> Result<Option<TaskHead>> {
    find_task(conn, (derived, TASK_HEAD_BY_ID_SQL.1), last, id, task_head)
}

pub(super) struct TaskHead {
    pub seq: i64,
    pub id: String,
    pub job_id: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub assigned_to: Option<String>,
}

pub(super) fn task_head(r: &Row<'_>) -> rusqlite::Result<TaskHead> {
    Ok(TaskHead {
        seq: r.get(0)?,
        id: r.get(1)?,
        job_id: r.get(2)?,
        status: status::<TaskStatus>(r, 3)?,
        attempt: r.get(4)?,
        max_attempts: r.get(5)?,
        assigned_to: r.get(6)?,
    })
}

/// `SELECT attempt, node_id, outcome` of `task_attempts`.
pub(super) fn attempt_record(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    let outcome: String = r.get(2)?;
    Ok(AttemptRecord {
        attempt: r.get(0)?,
        node_id: r.get(1)?,
        outcome: attempt_outcome(&outcome)?,
    })
}

/// A stored NEW task a claim may take (a macro, so that SQL built from it is a literal).
macro_rules! claimable_columns {
    () => {
        "seq, id, job_id, attempt, timeout_ms, payload, priority, job_seq, idx"
    };
}
pub(super) const CLAIMABLE_COLUMNS: &str = claimable_columns!();

/// The statements that find one task's row by its id for a claim of that task: its
/// [`CLAIMABLE_COLUMNS`], then its status and holder ([`named_claim`]).
pub(super) const NAMED_CLAIM_BY_ID_SQL: (&str, &str) =
    task_by_id_sql!(concat!(claimable_columns!(), ", status, assigned_to"));

/// A task named by a claim of that one task: what a claim writes from, and what decides
/// whether it may.
pub(super) struct NamedClaim {
    pub task: Claimable,
    pub status: TaskStatus,
    pub assigned_to: Option<String>,
}

pub(super) fn named_claim(r: &Row<'_>) -> rusqlite::Result<NamedClaim> {
    Ok(NamedClaim {
        task: claimable(r)?,
        status: status(r, 9)?,
        assigned_to: r.get(10)?,
    })
}

/// The row of task `id` for a claim of it, or `None` if it has none (no such task, or one of a
/// sweep never claimed).
pub(super) fn named_claim_by_id(conn: &Connection, id: &str) -> Result<Option<NamedClaim>> {
    let (derived, named) = NAMED_CLAIM_BY_ID_SQL;
    let mut derived = conn.prepare_cached(derived).map_err(map_err)?;
    find_task(
        conn,
        (&mut derived, named),
        &mut LastJob::default(),
        id,
        named_claim,
    )
}

pub(super) struct Claimable {
    pub seq: i64,
    pub id: String,
    pub job_id: String,
    pub attempt: u32,
    pub timeout_ms: i64,
    pub payload: String,
    pub key: ClaimKey,
}

pub(super) fn claimable(r: &Row<'_>) -> rusqlite::Result<Claimable> {
    Ok(Claimable {
        seq: r.get(0)?,
        id: r.get(1)?,
        job_id: r.get(2)?,
        attempt: r.get(3)?,
        timeout_ms: r.get(4)?,
        payload: r.get(5)?,
        key: ClaimKey {
            priority: r.get(6)?,
            job_order: r.get(7)?,
            index: r.get(8)?,
        },
    })
}

/// A job's tasks that have no rows yet (`materialised..total`), and what building them needs.
pub(super) const UNCLAIMED_COLUMNS: &str = "seq, id, priority, materialised, total_tasks, \
    cancelled, max_attempts, task_timeout_ms, created_at, finished_at";

pub(super) fn unclaimed(r: &Row<'_>) -> rusqlite::Result<Unclaimed> {
    Ok(Unclaimed {
        seq: r.get(0)?,
        job_id: r.get(1)?,
        priority: r.get(2)?,
        materialised: r.get(3)?,
        total: r.get(4)?,
        cancelled: r.get(5)?,
        max_attempts: r.get(6)?,
        timeout_ms: r.get(7)?,
        created_at: time(r, 8)?,
        finished_at: opt_time(r, 9)?,
    })
}

/// The job's [`Unclaimed`] facts, or `None` if there is no such job.
pub(super) fn unclaimed_of(conn: &Connection, job_id: &str) -> Result<Option<Unclaimed>> {
    conn.prepare_cached(&format!(
        "SELECT {UNCLAIMED_COLUMNS} FROM jobs WHERE id = ?1"
    ))
    .map_err(map_err)?
    .query_row([job_id], unclaimed)
    .optional()
    .map_err(map_err)
}

/// Counts each job's tasks: its rows, and the tasks without rows (NEW, or CANCELLED with the
/// job). A job whose rows are not exactly its first `materialised` tasks shows as a wrong total.
pub(super) fn audit(conn: &Connection) -> Result<Vec<CountMismatch>> {
    let mut stmt = conn
        .prepare(
            "SELECT j.id, j.total_tasks, j.new_tasks, j.running_tasks, j.completed_tasks,
                    j.failed_tasks, j.cancelled_tasks,
                    count(t.seq) + j.total_tasks - j.materialised,
                    COALESCE(sum(t.status = 'NEW'), 0)
                        + CASE WHEN j.cancelled THEN 0 ELSE j.total_tasks - j.materialised END,
                    COALESCE(sum(t.status = 'RUNNING'), 0),
                    COALESCE(sum(t.status = 'DONE'), 0), COALESCE(sum(t.status = 'FAILED'), 0),
                    COALESCE(sum(t.status = 'CANCELLED'), 0)
                        + CASE WHEN j.cancelled THEN j.total_tasks - j.materialised ELSE 0 END
             FROM jobs j LEFT JOIN tasks t ON t.job_seq = j.seq
             GROUP BY j.id ORDER BY j.seq",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(CountMismatch {
                job_id: r.get(0)?,
                stored: counts(r, 1)?,
                actual: counts(r, 7)?,
            })
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    Ok(rows.into_iter().filter(|m| m.stored != m.actual).collect())
}

pub(super) const RUNNER_COLUMNS: &str =
    "session_id, driver, instance, endpoint, status, singleton, created_at, last_heartbeat,
     token_hash";

pub(super) fn runner(r: &Row<'_>) -> rusqlite::Result<drover_core::Runner> {
    Ok(drover_core::Runner {
        session_id: r.get(0)?,
        driver: r.get(1)?,
        instance: r.get(2)?,
        endpoint: r.get(3)?,
        status: status(r, 4)?,
        singleton: r.get(5)?,
        created_at: time(r, 6)?,
        last_heartbeat: time(r, 7)?,
        token_hash: r.get(8)?,
    })
}
