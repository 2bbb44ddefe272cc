//! The embedded default store: one SQLite file in WAL mode.
//!
//! Two connections, each behind a mutex, serve calls on the blocking pool: one writer (SQLite
//! has a single writer anyway, and one connection keeps each call a plain `BEGIN IMMEDIATE`
//! transaction) and one reader, so status pages and listings read the last committed state
//! while a long write (a million-task job) is in progress instead of queueing behind it.
//! `synchronous = FULL` makes each commit durable before the call returns, which is what lets
//! the server acknowledge a change (invariant 3). Claims and reports already take batches, so
//! a caller that groups requests pays one fsync per group.

mod rows;
mod runners;
mod schema;

use crate::{
    CountMismatch, NewJob, NewRunner, NodesDown, Overview, Page, Paged, Released, Report,
    Reservation, Result, Store, StoreError,
};
use async_trait::async_trait;
use drover_core::lifecycle::{self, AttemptOutcome, AttemptRecord, Decision, TaskView};
use drover_core::time::format as ts;
use drover_core::{
    ClaimedTask, Job, JobCounts, JobStatus, Node, NodeInfo, NodeStats, ReportKind, ReportOutcome,
    Runner, Task, TaskStatus, Timestamp, ids, sweep::Sweep,
};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a call waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the health probe waits: short, so a wedged store shows up as 503 quickly.
const HEALTH_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

type Shared = Arc<Mutex<Option<Connection>>>;

/// The SQLite store. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Shared,
    reader: Shared,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, its parent directory included, and
    /// applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(map_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use WAL mode (got {mode}); is it on a network file system?",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(map_err)?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Some(conn))),
            reader: Arc::new(Mutex::new(Some(reader))),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the writer connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        on(&self.writer, f).await
    }

    /// Runs the read-only `f` with the reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        on(&self.reader, f).await
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(map_err)?;
            Ok(out)
        })
        .await
    }
}

/// Runs `f` with one of the store's connections on the blocking pool.
async fn on<T, F>(conn: &Shared, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| StoreError::Internal("connection lock poisoned".into()))?;
        let conn = guard
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        f(conn)
    })
    .await
    .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
}

/// Sorts SQLite's errors into "try again later" and "bug".
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DatabaseBusy
            | DatabaseLocked
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | ReadOnly
            | FileLockingProtocolFailed
            | NotADatabase => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

/// A job's counts, whether it is cancelled, and whether it has started.
fn counts_of(tx: &Transaction<'_>, job_id: &str) -> Result<(JobCounts, bool, bool)> {
    tx.prepare_cached(
        "SELECT total_tasks, new_tasks, running_tasks, completed_tasks, failed_tasks,
                cancelled_tasks, cancelled, started_at IS NOT NULL
         FROM jobs WHERE id = ?1",
    )
    .map_err(map_err)?
    .query_row([job_id], |r| {
        Ok((rows::counts(r, 0)?, r.get(6)?, r.get(7)?))
    })
    .map_err(map_err)
}

/// Re-derives the status of each job touched by a transaction from its (trigger-kept) counts.
fn refresh_jobs<'a>(
    tx: &Transaction<'_>,
    job_ids: impl IntoIterator<Item = &'a str>,
    now: &str,
) -> Result<()> {
    let mut update = tx
        .prepare_cached(
            "UPDATE jobs SET status = ?2, updated_at = ?3,
                 finished_at = CASE WHEN ?4 THEN COALESCE(finished_at, ?3) ELSE NULL END
             WHERE id = ?1",
        )
        .map_err(map_err)?;
    for id in job_ids {
        let (counts, cancelled, started) = counts_of(tx, id)?;
        let status = counts.status(cancelled, started);
        update
            .execute(params![id, status.as_str(), now, status.is_finished()])
            .map_err(map_err)?;
    }
    Ok(())
}

/// Moves one RUNNING task back to NEW or on to FAILED, closing its attempt as reaped.
fn release_task(
    tx: &Transaction<'_>,
    row: &rows::TaskHead,
    reason: &str,
    now: &str,
) -> Result<Released> {
    let to = lifecycle::status_after_release(row.attempt, row.max_attempts);
    tx.prepare_cached(
        "UPDATE tasks SET status = ?2, assigned_to = CASE WHEN ?2 = 'NEW' THEN NULL ELSE assigned_to END,
             started_at = CASE WHEN ?2 = 'NEW' THEN NULL ELSE started_at END,
             lease_expires_at = NULL,
             finished_at = CASE WHEN ?2 = 'NEW' THEN NULL ELSE ?3 END,
             last_error = ?4, updated_at = ?3
         WHERE seq = ?1",
    )
    .map_err(map_err)?
    .execute(params![row.seq, to.as_str(), now, reason])
    .map_err(map_err)?;
    tx.prepare_cached(
        "UPDATE task_attempts SET outcome = 'REAPED', ended_at = ?3, error = ?4
         WHERE task_id = ?1 AND attempt = ?2",
    )
    .map_err(map_err)?
    .execute(params![row.id, row.attempt, now, reason])
    .map_err(map_err)?;
    Ok(Released {
        task_id: row.id.clone(),
        job_id: row.job_id.clone(),
        node_id: row.assigned_to.clone(),
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        to,
    })
}

fn release_all(
    tx: &Transaction<'_>,
    running: Vec<rows::TaskHead>,
    reason: impl Fn(&rows::TaskHead) -> String,
    now: &str,
) -> Result<Vec<Released>> {
    let mut released = Vec::with_capacity(running.len());
    for row in &running {
        released.push(release_task(tx, row, &reason(row), now)?);
    }
    let jobs: BTreeSet<&str> = released.iter().map(|r| r.job_id.as_str()).collect();
    refresh_jobs(tx, jobs, now)?;
    Ok(released)
}

fn apply_report(
    tx: &Transaction<'_>,
    report: &Report,
    now: &str,
) -> Result<(ReportOutcome, Option<String>)> {
    let Some(task) = tx
        .prepare_cached(&format!(
            "SELECT {} FROM tasks WHERE id = ?1",
            rows::TASK_HEAD_COLUMNS
        ))
        .map_err(map_err)?
        .query_row([&report.task_id], rows::task_head)
        .optional()
        .map_err(map_err)?
    else {
        return Ok((ReportOutcome::TaskNotFound, None));
    };
    // The reporter's attempt: the one it names, else its latest.
    let own: Option<AttemptRecord> = tx
        .prepare_cached(
            "SELECT attempt, node_id, outcome FROM task_attempts
             WHERE task_id = ?1 AND node_id = ?2 AND (?3 IS NULL OR attempt = ?3)
             ORDER BY attempt DESC LIMIT 1",
        )
        .map_err(map_err)?
        .query_row(
            params![report.task_id, report.node_id, report.attempt],
            rows::attempt_record,
        )
        .optional()
        .map_err(map_err)?;
    let view = TaskView {
        status: task.status,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        assigned_to: task.assigned_to.as_deref(),
    };
    let decision = lifecycle::decide_report(
        &view,
        &report.node_id,
        report.attempt,
        &report.kind,
        own.as_ref(),
    );
    let (to, attempt_outcome, reply) = match decision {
        Decision::Reply(reply) => return Ok((reply, None)),
        Decision::Apply {
            to,
            attempt_outcome,
            reply,
        } => (to, attempt_outcome, reply),
    };
    match &report.kind {
        ReportKind::Complete(result) => {
            tx.prepare_cached(
                "UPDATE tasks SET status = 'DONE', lease_expires_at = NULL, finished_at = ?2,
                     runtime_ms = ?3, iter = ?4, fopt = ?5, result_json = ?6, output = ?7,
                     updated_at = ?2
                 WHERE seq = ?1",
            )
            .map_err(map_err)?
            .execute(params![
                task.seq,
                now,
                result.runtime_ms,
                result.iter,
                result.fopt,
                result.result_json,
                result.output
            ])
            .map_err(map_err)?;
        }
        ReportKind::Fail { error, .. } => {
            tx.prepare_cached(
                "UPDATE tasks SET status = ?2, lease_expires_at = NULL, last_error = ?4,
                     assigned_to = CASE WHEN ?2 = 'NEW' THEN NULL ELSE assigned_to END,
                     started_at = CASE WHEN ?2 = 'NEW' THEN NULL ELSE started_at END,
                     finished_at = CASE WHEN ?2 = 'NEW' THEN NULL ELSE ?3 END,
                     updated_at = ?3
                 WHERE seq = ?1",
            )
            .map_err(map_err)?
            .execute(params![task.seq, to.as_str(), now, error])
            .map_err(map_err)?;
        }
    }
    let error = match &report.kind {
        ReportKind::Fail { error, .. } => Some(error.as_str()),
        ReportKind::Complete(_) => None,
    };
    tx.prepare_cached(
        "UPDATE task_attempts SET outcome = ?3, ended_at = ?4, error = ?5
         WHERE task_id = ?1 AND attempt = ?2",
    )
    .map_err(map_err)?
    .execute(params![
        task.id,
        task.attempt,
        attempt_outcome.as_str(),
        now,
        error
    ])
    .map_err(map_err)?;
    Ok((reply, Some(task.job_id)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn health(&self) -> Result<()> {
        self.with_conn(|conn| {
            conn.busy_timeout(HEALTH_BUSY_TIMEOUT).map_err(map_err)?;
            let probe = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)
                .and_then(|tx| {
                    tx.query_row("SELECT count(*) FROM jobs", [], |_| Ok(()))
                        .map_err(map_err)?;
                    tx.rollback().map_err(map_err)
                });
            conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
            probe
        })
        .await
    }

    async fn overview(&self) -> Result<Overview> {
        self.read(|conn| {
            let active_nodes: u64 = conn
                .query_row("SELECT count(*) FROM nodes WHERE status = 'UP'", [], |r| {
                    r.get(0)
                })
                .map_err(map_err)?;
            let (pending_tasks, running_tasks): (u64, u64) = conn
                .query_row(
                    "SELECT COALESCE(sum(new_tasks), 0), COALESCE(sum(running_tasks), 0) FROM jobs",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(map_err)?;
            Ok(Overview {
                active_nodes,
                pending_tasks,
                running_tasks,
            })
        })
        .await
    }

    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        let id = ids::job_id();
        let now = ts(&now);
        self.write(move |tx| {
            let total = sweep.len();
            let parameters = serde_json::to_string(&sweep.parameter_names())
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let timeout_ms = job.task_timeout.as_millis() as i64;
            let run = job
                .run
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO jobs (id, name, priority, max_attempts, task_timeout_ms, spec,
                     parameters, status, total_tasks, new_tasks, created_at, updated_at, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'PENDING', ?8, ?8, ?9, ?9, ?10)",
                params![
                    id,
                    job.name,
                    job.priority,
                    job.max_attempts,
                    timeout_ms,
                    job.spec.to_string(),
                    parameters,
                    total,
                    now,
                    run
                ],
            )
            .map_err(map_err)?;
            let mut insert = tx
                .prepare(
                    "INSERT INTO tasks (id, job_id, priority, payload, status, max_attempts,
                         timeout_ms, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'NEW', ?5, ?6, ?7, ?7)",
                )
                .map_err(map_err)?;
            for i in 0..total {
                let payload = serde_json::Value::Object(sweep.payload(i)).to_string();
                insert
                    .execute(params![
                        ids::task_id(),
                        id,
                        job.priority,
                        payload,
                        job.max_attempts,
                        timeout_ms,
                        now
                    ])
                    .map_err(map_err)?;
            }
            drop(insert);
            rows::job_by_id(tx, &id)
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Job> {
        let id = id.to_string();
        self.read(move |conn| rows::job_by_id(conn, &id)).await
    }

    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM jobs
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR seq < ?2)
                     ORDER BY seq DESC LIMIT ?3",
                    rows::JOB_COLUMNS
                ))
                .map_err(map_err)?;
            let items = stmt
                .query_map(
                    params![
                        status.map(|s| s.as_str()),
                        page.cursor,
                        page.limit as i64 + 1
                    ],
                    rows::job,
                )
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            Ok(rows::paged(items, page.limit, |j| j.seq))
        })
        .await
    }

    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job> {
        let id = id.to_string();
        let now = ts(&now);
        self.write(move |tx| {
            let job = rows::job_by_id(tx, &id)?;
            if job.cancelled {
                return Ok(job);
            }
            if job.status.is_finished() {
                return Err(StoreError::JobFinished {
                    id,
                    status: job.status,
                });
            }
            tx.execute(
                "UPDATE task_attempts SET outcome = 'CANCELLED', ended_at = ?2
                 WHERE outcome = 'RUNNING' AND task_id IN
                     (SELECT id FROM tasks WHERE job_id = ?1 AND status = 'RUNNING')",
                params![id, now],
            )
            .map_err(map_err)?;
            tx.execute(
                "UPDATE tasks SET status = 'CANCELLED', lease_expires_at = NULL,
                     finished_at = ?2, updated_at = ?2
                 WHERE job_id = ?1 AND status IN ('NEW', 'RUNNING')",
                params![id, now],
            )
            .map_err(map_err)?;
            tx.execute("UPDATE jobs SET cancelled = 1 WHERE id = ?1", [&id])
                .map_err(map_err)?;
            refresh_jobs(tx, [id.as_str()], &now)?;
            rows::job_by_id(tx, &id)
        })
        .await
    }

    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>> {
        let job_id = job_id.to_string();
        self.read(move |conn| {
            // Distinguish "no such job" from "no tasks on this page".
            rows::job_by_id(conn, &job_id)?;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks
                     WHERE job_id = ?1 AND (?2 IS NULL OR status = ?2) AND seq > ?3
                     ORDER BY seq LIMIT ?4",
                    rows::TASK_COLUMNS
                ))
                .map_err(map_err)?;
            let items = stmt
                .query_map(
                    params![
                        job_id,
                        status.map(|s| s.as_str()),
                        page.cursor.unwrap_or(0),
                        page.limit as i64 + 1
                    ],
                    rows::task,
                )
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            Ok(rows::paged(items, page.limit, |t| t.seq))
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Task> {
        let id = id.to_string();
        self.read(move |conn| rows::task_by_id(conn, &id)).await
    }

    async fn register_node(&self, info: NodeInfo, now: Timestamp) -> Result<Node> {
        let id = ids::node_id();
        let now = ts(&now);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores,
                     memory_bytes, gpus, disk_bytes, status, registered_at, last_heartbeat)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'UP', ?10, ?10)",
                params![
                    id,
                    info.address,
                    info.hostname,
                    info.zone,
                    serde_json::Value::Object(info.labels).to_string(),
                    info.capacity.cores,
                    info.capacity.memory_bytes,
                    info.capacity.gpus,
                    info.capacity.disk_bytes,
                    now
                ],
            )
            .map_err(map_err)?;
            rows::node_by_id(tx, &id)
        })
        .await
    }

    async fn heartbeat(&self, node_id: &str, stats: NodeStats, now: Timestamp) -> Result<Node> {
        let id = node_id.to_string();
        let now = ts(&now);
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE nodes SET last_heartbeat = ?2,
                         status = CASE WHEN status = 'DOWN' THEN 'UP' ELSE status END,
                         address = COALESCE(?3, address),
                         cpu_load = COALESCE(?4, cpu_load),
                         running_tasks = COALESCE(?5, running_tasks),
                         total_cores = COALESCE(?6, total_cores),
                         free_memory_bytes = COALESCE(?7, free_memory_bytes)
                     WHERE id = ?1",
                    params![
                        id,
                        now,
                        stats.address,
                        stats.cpu_load,
                        stats.running_tasks,
                        stats.total_cores,
                        stats.free_memory_bytes
                    ],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Err(StoreError::not_found("spot", &id));
            }
            rows::node_by_id(tx, &id)
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {} FROM nodes ORDER BY registered_at, id",
                rows::NODE_COLUMNS
            ))
            .map_err(map_err)?
            .query_map([], rows::node)
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        let node_id = node_id.to_string();
        self.write(move |tx| {
            let status: Option<String> = tx
                .query_row("SELECT status FROM nodes WHERE id = ?1", [&node_id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(map_err)?;
            match status.as_deref() {
                None => return Err(StoreError::not_found("spot", &node_id)),
                Some("DOWN") => return Err(StoreError::NodeDown(node_id)),
                // A draining node finishes what it has and gets nothing new.
                Some("DRAINING") => return Ok(Vec::new()),
                Some(_) => {}
            }
            let picked = tx
                .prepare_cached(
                    "SELECT seq, id, job_id, attempt, timeout_ms, payload FROM tasks
                     WHERE status = 'NEW' ORDER BY priority DESC, seq LIMIT ?1",
                )
                .map_err(map_err)?
                .query_map([max], rows::claimable)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let now_text = ts(&now);
            let mut claimed = Vec::with_capacity(picked.len());
            let mut jobs = BTreeSet::new();
            for t in picked {
                let attempt = t.attempt + 1;
                // Saturate rather than panic on a timeout no caller should have let through.
                let lease = chrono::Duration::try_milliseconds(t.timeout_ms)
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                tx.prepare_cached(
                    "UPDATE tasks SET status = 'RUNNING', attempt = ?2, assigned_to = ?3,
                         started_at = ?4, lease_expires_at = ?5, updated_at = ?4
                     WHERE seq = ?1",
                )
                .map_err(map_err)?
                .execute(params![t.seq, attempt, node_id, now_text, ts(&lease)])
                .map_err(map_err)?;
                tx.prepare_cached(
                    "INSERT INTO task_attempts (task_id, attempt, node_id, started_at, outcome)
                     VALUES (?1, ?2, ?3, ?4, 'RUNNING')",
                )
                .map_err(map_err)?
                .execute(params![t.id, attempt, node_id, now_text])
                .map_err(map_err)?;
                jobs.insert(t.job_id.clone());
                claimed.push(ClaimedTask {
                    id: t.id,
                    job_id: t.job_id,
                    attempt,
                    payload: t.payload,
                    lease_expires_at: lease,
                });
            }
            let mut started = tx
                .prepare_cached(
                    "UPDATE jobs SET started_at = COALESCE(started_at, ?2) WHERE id = ?1",
                )
                .map_err(map_err)?;
            for job in &jobs {
                started.execute(params![job, now_text]).map_err(map_err)?;
            }
            drop(started);
            refresh_jobs(tx, jobs.iter().map(String::as_str), &now_text)?;
            Ok(claimed)
        })
        .await
    }

    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>> {
        let now = ts(&now);
        self.write(move |tx| {
            let mut outcomes = Vec::with_capacity(reports.len());
            let mut jobs = BTreeSet::new();
            for report in &reports {
                let (outcome, job) = apply_report(tx, report, &now)?;
                outcomes.push(outcome);
                jobs.extend(job);
            }
            refresh_jobs(tx, jobs.iter().map(String::as_str), &now)?;
            Ok(outcomes)
        })
        .await
    }

    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>> {
        let now = ts(&now);
        self.write(move |tx| {
            let expired = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND lease_expires_at < ?1
                     ORDER BY lease_expires_at",
                    rows::TASK_HEAD_COLUMNS
                ))
                .map_err(map_err)?
                .query_map([&now], rows::task_head)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            release_all(
                tx,
                expired,
                |t| {
                    format!(
                        "lease expired: attempt {} on spot {} ran past the task timeout",
                        t.attempt,
                        t.assigned_to.as_deref().unwrap_or("?")
                    )
                },
                &now,
            )
        })
        .await
    }

    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown> {
        let cutoff = ts(&cutoff);
        let now = ts(&now);
        self.write(move |tx| {
            let nodes = tx
                .prepare_cached(
                    "UPDATE nodes SET status = 'DOWN'
                     WHERE status <> 'DOWN' AND last_heartbeat < ?1 RETURNING id",
                )
                .map_err(map_err)?
                .query_map([&cutoff], |r| r.get::<_, String>(0))
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let mut running = Vec::new();
            let mut select = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND assigned_to = ?1
                     ORDER BY seq",
                    rows::TASK_HEAD_COLUMNS
                ))
                .map_err(map_err)?;
            for node in &nodes {
                running.extend(
                    select
                        .query_map([node], rows::task_head)
                        .map_err(map_err)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(map_err)?,
                );
            }
            drop(select);
            let released = release_all(
                tx,
                running,
                |t| {
                    format!(
                        "spot {} stopped sending heartbeats during attempt {}",
                        t.assigned_to.as_deref().unwrap_or("?"),
                        t.attempt
                    )
                },
                &now,
            )?;
            Ok(NodesDown { nodes, released })
        })
        .await
    }

    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>> {
        self.read(|conn| rows::audit(conn)).await
    }

    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>> {
        let cutoff = ts(&cutoff);
        self.write(move |tx| {
            tx.prepare_cached(
                "DELETE FROM nodes
                 WHERE status = 'DOWN' AND last_heartbeat < ?1
                   AND NOT EXISTS (SELECT 1 FROM tasks
                                   WHERE tasks.status = 'RUNNING' AND tasks.assigned_to = nodes.id)
                 RETURNING id",
            )
            .map_err(map_err)?
            .query_map([&cutoff], |r| r.get::<_, String>(0))
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn instance_id(&self) -> Result<String> {
        self.write(|tx| runners::instance_id(tx)).await
    }

    async fn reserve_runner(
        &self,
        new: NewRunner,
        max: Option<u64>,
        now: Timestamp,
    ) -> Result<Reservation> {
        self.write(move |tx| runners::reserve(tx, &new, max, now))
            .await
    }

    async fn runner_started(
        &self,
        session_id: &str,
        instance: &str,
        endpoint: &str,
        now: Timestamp,
    ) -> Result<Runner> {
        let (session, instance, endpoint) = (
            session_id.to_string(),
            instance.to_string(),
            endpoint.to_string(),
        );
        self.write(move |tx| runners::started(tx, &session, &instance, &endpoint, now))
            .await
    }

    async fn get_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.read(move |conn| runners::by_session(conn, &session))
            .await
    }

    async fn list_runners(&self) -> Result<Vec<Runner>> {
        self.read(|conn| runners::list(conn, None)).await
    }

    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>> {
        self.read(move |conn| runners::list(conn, Some(cutoff)))
            .await
    }

    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.write(move |tx| runners::touch(tx, &session, now))
            .await
    }

    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.write(move |tx| runners::remove(tx, &session)).await
    }

    async fn close(&self) -> Result<()> {
        let (writer, reader) = (self.writer.clone(), self.reader.clone());
        tokio::task::spawn_blocking(move || {
            let take = |c: &Shared| {
                c.lock()
                    .map(|mut g| g.take())
                    .map_err(|_| StoreError::Internal("connection lock poisoned".into()))
            };
            if let Some(reader) = take(&reader)? {
                reader.close().map_err(|(_, e)| map_err(e))?;
            }
            if let Some(writer) = take(&writer)? {
                writer
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .map_err(map_err)?;
                writer.close().map_err(|(_, e)| map_err(e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

/// Reads an outcome column, refusing values no version of drover writes.
pub(crate) fn attempt_outcome(s: &str) -> rusqlite::Result<AttemptOutcome> {
    AttemptOutcome::parse(s).ok_or_else(|| bad_value(s))
}

pub(crate) fn bad_value(s: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected value {s:?}").into(),
    )
}
