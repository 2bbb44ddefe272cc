//! Jobs, their tasks and the task lifecycle in SQLite: the [`JobStore`] implementation.
//!
//! This module holds SQL and row handling only. Each call reads the facts it needs inside its
//! transaction, asks `drover_core::lifecycle` what to do (claims, reports, cancels, releases,
//! what a task's holder becomes), writes exactly that, and records the events on the write's
//! [`Tx`]. It must not decide a lifecycle rule itself.
//!
//! A job's tasks get rows lazily (schema migration 7): creating a job writes the job alone, and
//! a claim inserts each task it takes from a job's never-claimed remainder, RUNNING, with the
//! payload its spec builds. Reads show the tasks without rows as the spec builds them. The job
//! counters change once per job per call ([`settle_jobs`]), from the [`Deltas`] the call
//! collected. The writer connection runs no triggers (`mod.rs`): the schema's counting triggers
//! are for changes made outside drover, and drover counts every change it makes itself. Those
//! changes still bump `tasks.rev`, so that the counting trigger would skip them even on a
//! connection that ran it.
//!
//! A claim builds a fresh task's payload from its job's sweep, which [`SweepCache`] keeps
//! parsed for recently used jobs rather than parsing the spec on every claim.
//!
//! A claim of one named task (`claim_task`, for a worker that a message broker gave the task
//! to) takes it with the statements a claim takes a stored task with. A task of a sweep that
//! has no row gets one first, NEW, with the rows of the tasks before it that have none (a
//! job's rows are always its first tasks by index, which reads and claims rely on).
//!
//! The per-task UPDATEs of `tasks` say `OR FAIL`: a task row has a reference to its job (and,
//! outside drover's writer, a trigger), so with the default `ABORT` SQLite opens a statement journal for each (a copy of every page it touches, so that
//! the statement alone can be undone). Nothing here needs that: any error fails the whole write,
//! which its savepoint (or transaction) undoes.
use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::common::{self, Deltas, StoredJob, SweepCache, Unclaimed};
use crate::{
    JobStore, NewJob, OriginCounts, Page, Paged, Released, Report, Result, StoreError, TaskClaim,
};
use async_trait::async_trait;
use drover_core::journal::{Change, JobImage};
use drover_core::lifecycle::{
    self, AttemptRecord, CancelDecision, ClaimAccess, ClaimPick, Decision, TaskClaimDecision,
    TaskView,
};
use drover_core::time::format as ts;
use drover_core::{
    ClaimedTask, Event, Job, JobStatus, NodeStatus, ReportKind, ReportOutcome, Task, TaskStatus,
    Timestamp, ids, sweep::Sweep,
};
use rusqlite::{OptionalExtension, ToSql, Transaction, params};
use std::sync::Arc;
use std::time::Duration;

/// A job's counts, whether it is cancelled, and whether it has started.
fn counts_of(tx: &Transaction<'_>, job_id: &str) -> Result<StoredJob> {
    tx.prepare_cached(
        "SELECT total_tasks, new_tasks, running_tasks, completed_tasks, failed_tasks,
                cancelled_tasks, cancelled, started_at IS NOT NULL, status
         FROM jobs WHERE id = ?1",
    )
    .map_err(map_err)?
    .query_row([job_id], |r| {
        Ok(StoredJob {
            counts: rows::counts(r, 0)?,
            cancelled: r.get(6)?,
            started: r.get(7)?,
            status: r.get(8)?,
        })
    })
    .map_err(map_err)
}

/// Writes each touched job's counts, rows made, start, status, and finish, once per job: the
/// status is the core's `JobCounts::status` of the counts after the call.
fn settle_jobs(tx: &Transaction<'_>, deltas: &Deltas, now: &str) -> Result<()> {
    for (id, delta) in &deltas.0 {
        let stored = counts_of(tx, id)?;
        let common::Settled {
            counts,
            started: _,
            status,
            counts_only,
        } = common::settle(id, &stored, delta)?;
        // Most calls only move counts (and a claim, the rows made): the job keeps its status
        // and start. Writing only what changed leaves the `jobs_status` index entry alone
        // (and, without rows made, the `jobs_unclaimed` one): SQLite rewrites an index entry
        // whenever one of its columns is assigned, even to the same value, which dirtied two
        // more pages in every commit.
        if counts_only {
            let c = &counts;
            if delta.materialised == 0 {
                tx.prepare_cached(
                    "UPDATE jobs SET new_tasks = ?2, running_tasks = ?3, completed_tasks = ?4,
                         failed_tasks = ?5, cancelled_tasks = ?6, updated_at = ?7
                     WHERE id = ?1",
                )
                .map_err(map_err)?
                .execute(params![
                    id,
                    c.new,
                    c.running,
                    c.done,
                    c.failed,
                    c.cancelled,
                    now
                ])
            } else {
                tx.prepare_cached(
                    "UPDATE jobs SET new_tasks = ?2, running_tasks = ?3, completed_tasks = ?4,
                         failed_tasks = ?5, cancelled_tasks = ?6, updated_at = ?7,
                         materialised = materialised + ?8
                     WHERE id = ?1",
                )
                .map_err(map_err)?
                .execute(params![
                    id,
                    c.new,
                    c.running,
                    c.done,
                    c.failed,
                    c.cancelled,
                    now,
                    delta.materialised
                ])
            }
            .map_err(map_err)?;
            continue;
        }
        tx.prepare_cached(
            "UPDATE jobs SET new_tasks = ?2, running_tasks = ?3, completed_tasks = ?4,
                 failed_tasks = ?5, cancelled_tasks = ?6, materialised = materialised + ?7,
                 started_at = CASE WHEN ?8 THEN COALESCE(started_at, ?10) ELSE started_at END,
                 status = ?9, updated_at = ?10,
                 finished_at = CASE WHEN ?11 THEN COALESCE(finished_at, ?10) ELSE NULL END
             WHERE id = ?1",
        )
        .map_err(map_err)?
        .execute(params![
            id,
            counts.new,
            counts.running,
            counts.done,
            counts.failed,
            counts.cancelled,
            delta.materialised,
            delta.claimed,
            status.as_str(),
            now,
            status.is_finished()
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// Moves a task out of RUNNING to `to` (NEW, FAILED), ending its lease and recording `error`;
/// its holder, start and finish follow the core's back-to-NEW rule. The caller counts the move.
fn move_task(tx: &Tx<'_>, seq: i64, to: TaskStatus, error: &str, now: Timestamp) -> Result<()> {
    let after = lifecycle::after_move(to, now);
    tx.prepare_cached(
        "UPDATE OR FAIL tasks SET status = ?2, lease_expires_at = NULL, last_error = ?3,
             assigned_to = CASE WHEN ?4 THEN assigned_to ELSE NULL END,
             started_at = CASE WHEN ?5 THEN started_at ELSE NULL END,
             finished_at = ?6, updated_at = ?7, rev = rev + 1
         WHERE seq = ?1",
    )
    .map_err(map_err)?
    .execute(params![
        seq,
        to.as_str(),
        error,
        after.keep_holder,
        after.keep_started_at,
        after.finished_at.as_ref().map(ts),
        ts(&now)
    ])
    .map_err(map_err)?;
    Ok(())
}

/// Moves one RUNNING task back to NEW or on to FAILED, closing its attempt as reaped.
fn release_task(
    tx: &Tx<'_>,
    row: &rows::TaskHead,
    reason: &str,
    now: Timestamp,
    deltas: &mut Deltas,
) -> Result<Released> {
    let to = lifecycle::status_after_release(row.attempt, row.max_attempts);
    move_task(tx, row.seq, to, reason, now)?;
    deltas.of(&row.job_id).moved(row.status, to);
    tx.prepare_cached(
        "UPDATE task_attempts SET outcome = 'REAPED', ended_at = ?3, error = ?4
         WHERE task_seq = ?1 AND attempt = ?2",
    )
    .map_err(map_err)?
    .execute(params![row.seq, row.attempt, ts(&now), reason])
    .map_err(map_err)?;
    tx.emit(Event::TaskReleased {
        task_id: row.id.clone(),
        job_id: row.job_id.clone(),
        node_id: row.assigned_to.clone(),
        attempt: row.attempt,
        to,
    });
    Ok(Released {
        task_id: row.id.clone(),
        job_id: row.job_id.clone(),
        node_id: row.assigned_to.clone(),
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        to,
    })
}

/// Releases every task of `running` and settles their jobs.
pub(super) fn release_all(
    tx: &Tx<'_>,
    running: Vec<rows::TaskHead>,
    reason: impl Fn(&rows::TaskHead) -> String,
    now: Timestamp,
) -> Result<Vec<Released>> {
    let mut released = Vec::with_capacity(running.len());
    let mut deltas = Deltas::default();
    for row in &running {
        released.push(release_task(tx, row, &reason(row), now, &mut deltas)?);
    }
    settle_jobs(tx, &deltas, &ts(&now))?;
    Ok(released)
}

/// The sweep `job`'s kept spec describes, for building the tasks that have no rows.
fn sweep_of(
    sweeps: &SweepCache,
    conn: &rusqlite::Connection,
    job: &Unclaimed,
) -> Result<Arc<Sweep>> {
    sweeps.sweep_of(&job.job_id, || {
        conn.prepare_cached("SELECT spec FROM jobs WHERE seq = ?1")
            .map_err(map_err)?
            .query_row([job.seq], |r| r.get(0))
            .map_err(map_err)
    })
}

/// The job and index of a task that has no row: `id` names task `index` of a job that has not
/// made its row yet. `None` for anything else.
fn unclaimed_by_id(conn: &rusqlite::Connection, id: &str) -> Result<Option<(Unclaimed, u64)>> {
    let Some((job_id, index)) = ids::parse_sweep_task_id(id) else {
        return Ok(None);
    };
    Ok(rows::unclaimed_of(conn, &job_id)?
        .filter(|job| (job.materialised..job.total).contains(&index))
        .map(|job| (job, index)))
}

/// A task by id, with or without its row.
fn task_by_id(conn: &rusqlite::Connection, sweeps: &SweepCache, id: &str) -> Result<Task> {
    if let Some(task) = rows::task_row(conn, id)? {
        return Ok(task);
    }
    let (job, index) =
        unclaimed_by_id(conn, id)?.ok_or_else(|| StoreError::not_found("task", id))?;
    let payload = sweep_of(sweeps, conn, &job)?.payload(index);
    Ok(common::unclaimed_task(&job, payload, index))
}

/// Decides and applies one report. A task that has no row was never claimed, so nobody holds
/// it: the core decides that case from what the task is (NEW, or CANCELLED with its job).
fn apply_report(
    tx: &Tx<'_>,
    report: &Report,
    now: &Now,
    deltas: &mut Deltas,
    each: &mut EveryReport<'_>,
) -> Result<ReportOutcome> {
    let Some(task) =
        rows::task_head_by_id(tx, &mut each.head, &mut each.last_job, &report.task_id)?
    else {
        let Some((job, _)) = unclaimed_by_id(tx, &report.task_id)? else {
            return Ok(ReportOutcome::TaskNotFound);
        };
        let view = TaskView {
            status: job.status(),
            attempt: 0,
            max_attempts: job.max_attempts,
            assigned_to: None,
        };
        return match lifecycle::decide_report(
            &view,
            &report.node_id,
            report.attempt,
            &report.kind,
            None,
        ) {
            Decision::Reply(reply) => Ok(reply),
            Decision::Apply { .. } => Err(StoreError::Internal(format!(
                "a report would change task {}, which nobody has claimed",
                report.task_id
            ))),
        };
    };
    let view = TaskView {
        status: task.status,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        assigned_to: task.assigned_to.as_deref(),
    };
    // The reporter's attempt: the one it names, else its latest. Read only when the core will
    // look at it; a report from the current holder (nearly every report) is decided without.
    let own: Option<AttemptRecord> =
        if lifecycle::holds_current(&view, &report.node_id, report.attempt) {
            None
        } else {
            tx.prepare_cached(
                "SELECT attempt, node_id, outcome FROM task_attempts
                 WHERE task_seq = ?1 AND node_id = ?2 AND (?3 IS NULL OR attempt = ?3)
                 ORDER BY attempt DESC LIMIT 1",
            )
            .map_err(map_err)?
            .query_row(
                params![task.seq, report.node_id, report.attempt],
                rows::attempt_record,
            )
            .optional()
            .map_err(map_err)?
        };
    let decision = lifecycle::decide_report(
        &view,
        &report.node_id,
        report.attempt,
        &report.kind,
        own.as_ref(),
    );
    let (to, attempt_outcome, reply) = match decision {
        Decision::Reply(reply) => return Ok(reply),
        Decision::Apply {
            to,
            attempt_outcome,
            reply,
        } => (to, attempt_outcome, reply),
    };
    match &report.kind {
        ReportKind::Complete(result) => {
            each.complete
                .execute(params![
                    task.seq,
                    now.text,
                    result.runtime_ms,
                    result.iter,
                    result.fopt,
                    result.result_json,
                    result.output
                ])
                .map_err(map_err)?;
        }
        ReportKind::Fail { error, .. } => move_task(tx, task.seq, to, error, now.at)?,
    }
    deltas.of(&task.job_id).moved(task.status, to);
    let error = match &report.kind {
        ReportKind::Fail { error, .. } => Some(error.as_str()),
        ReportKind::Complete(_) => None,
    };
    each.end_attempt
        .execute(params![
            task.seq,
            task.attempt,
            attempt_outcome.as_str(),
            now.text,
            error
        ])
        .map_err(map_err)?;
    let (task_id, job_id, node_id, attempt) =
        (task.id, task.job_id, report.node_id.clone(), task.attempt);
    tx.emit(match reply {
        ReportOutcome::Failed { will_retry } => Event::TaskFailed {
            task_id,
            job_id,
            node_id,
            attempt,
            will_retry,
        },
        _ => Event::TaskCompleted {
            task_id,
            job_id,
            node_id,
            attempt,
        },
    });
    Ok(reply)
}

/// Most rows one INSERT of [`insert_rows`] writes. A claim of a thousand tasks wrote a
/// thousand rows of each of two tables one statement each; a statement's own cost (its
/// cursors, its start and its end) was about a seventh of a claim's instructions.
const ROWS_PER_INSERT: [usize; 3] = [32, 4, 1];

/// Inserts `rows` with `head` (an `INSERT INTO ... VALUES `) and `row` (one row's values, `?`
/// for each of those `push` gives), as few statements as [`ROWS_PER_INSERT`] allows, in order.
fn insert_rows<'a, R>(
    tx: &Transaction<'_>,
    head: &str,
    row: &str,
    rows: &'a [R],
    push: impl Fn(&'a R, &mut Vec<&'a dyn ToSql>),
) -> Result<()> {
    let mut rest = rows;
    let mut values = Vec::new();
    for size in ROWS_PER_INSERT {
        if rest.len() < size {
            continue;
        }
        let sql = format!("{head}{}", vec![row; size].join(", "));
        let mut insert = tx.prepare_cached(&sql).map_err(map_err)?;
        while rest.len() >= size {
            let (chunk, later) = rest.split_at(size);
            values.clear();
            for r in chunk {
                push(r, &mut values);
            }
            insert.execute(values.as_slice()).map_err(map_err)?;
            rest = later;
        }
    }
    Ok(())
}

/// What every report of a call uses, made once per call: the statements each runs (taken from
/// the statement cache once rather than once per report: a fetch and a return cost a report a
/// tenth of its instructions) and the job its lookup last found.
struct EveryReport<'t> {
    /// The lookup of a task's head by its job and index (`rows::TASK_HEAD_BY_ID_SQL`).
    head: rusqlite::CachedStatement<'t>,
    complete: rusqlite::CachedStatement<'t>,
    end_attempt: rusqlite::CachedStatement<'t>,
    last_job: rows::LastJob,
}

impl<'t> EveryReport<'t> {
    fn prepare(tx: &'t Transaction<'_>) -> Result<Self> {
        let prepare = |sql: &str| tx.prepare_cached(sql).map_err(map_err);
        Ok(EveryReport {
            head: prepare(rows::TASK_HEAD_BY_ID_SQL.0)?,
            complete: prepare(
                "UPDATE OR FAIL tasks SET status = 'DONE', lease_expires_at = NULL,
                     finished_at = ?2, runtime_ms = ?3, iter = ?4, fopt = ?5, result_json = ?6,
                     output = ?7, updated_at = ?2, rev = rev + 1
                 WHERE seq = ?1",
            )?,
            end_attempt: prepare(
                "UPDATE task_attempts SET outcome = ?3, ended_at = ?4, error = ?5
                 WHERE task_seq = ?1 AND attempt = ?2",
            )?,
            last_job: rows::LastJob::default(),
        })
    }
}

/// A call's instant, and its stored text formatted once.
struct Now {
    at: Timestamp,
    text: String,
}

impl Now {
    fn new(at: Timestamp) -> Self {
        Now { at, text: ts(&at) }
    }
}

/// Hands out tasks of one job's never-claimed remainder within a claim: the job's sweep (its
/// spec parsed once per claim) and the lease every task of it gets in this claim.
struct Fresh {
    sweep: Arc<Sweep>,
    grant: lifecycle::ClaimGrant,
    lease_text: String,
    created_text: String,
}

/// A job's creation with everything worked out that needs no database: its rows' JSON. Built
/// on the caller's thread ([`Creation::new`]), so that the writer, which runs every write one
/// after another, only inserts; and turned back into the [`Job`] there too
/// ([`Creation::into_job`]).
pub(super) struct Creation {
    id: String,
    job: NewJob,
    sweep: Sweep,
    spec: String,
    parameters: String,
    run: Option<String>,
    /// The payloads of the tasks whose rows are written now, in index order.
    payloads: Vec<String>,
}

/// What the writer made of a [`Creation`]: the job's row and the time as stored.
pub(super) struct Made {
    seq: i64,
    at: Timestamp,
}

impl SqliteStore {
    /// Makes a job (its id the one given, or a new one) as one unguarded write (see
    /// [`create_job_in`]), running `then` in the same write with the job's row number; the
    /// JSON is worked out before the write and the answer after it ([`Creation`]).
    pub(super) async fn create(
        &self,
        job: NewJob,
        sweep: Sweep,
        every_row: bool,
        now: Timestamp,
        then: impl FnOnce(&Tx<'_>, i64) -> Result<()> + Send + 'static,
    ) -> Result<Job> {
        let id = job.id.clone().unwrap_or_else(ids::job_id);
        let creation = Creation::new(id, job, sweep, every_row)?;
        let (made, creation) = (self.write_unguarded(move |tx| {
            let made = create_job_in(tx, &creation, now)?;
            then(tx, made.seq)?;
            Ok((made, creation))
        }))
        .await?;
        creation.into_job(&made)
    }
}

impl Creation {
    /// Job `id` with its tasks' rows for an explicit task list or when `every_row` says so; a
    /// sweep of parameters is otherwise kept as its spec alone, its tasks getting rows as they
    /// are claimed. An explicit task list already sits whole in the spec (and is bounded by the
    /// request body), so its rows are written at once, and claims need not parse it.
    pub(super) fn new(id: String, job: NewJob, sweep: Sweep, every_row: bool) -> Result<Creation> {
        let internal = |e: serde_json::Error| StoreError::Internal(e.to_string());
        let rows = if sweep.is_listed() || every_row {
            sweep.len()
        } else {
            0
        };
        Ok(Creation {
            parameters: serde_json::to_string(&sweep.parameter_names()).map_err(internal)?,
            spec: sweep.spec_json().map_err(internal)?,
            run: (job.run.as_ref().map(serde_json::to_string))
                .transpose()
                .map_err(internal)?,
            payloads: (0..rows).map(|i| payload_json(&sweep, i)).collect(),
            id,
            job,
            sweep,
        })
    }

    /// The job as the writer made it, as it reads back, without reading it.
    pub(super) fn into_job(self, made: &Made) -> Result<Job> {
        common::created_job(made.seq, &self.id, &self.job, &self.sweep, made.at)
    }
}

/// Task `index`'s payload as its row keeps it.
fn payload_json(sweep: &Sweep, index: u64) -> String {
    serde_json::Value::Object(sweep.payload(index)).to_string()
}

/// Writes the job of `c` and its tasks' rows (NEW). Shared by [`JobStore::create_job`], the
/// dispatch outbox (`dispatch.rs`), whose rows refer to every task's row, and the journal's
/// rebuild. Its one expected failure (the id is taken) comes at its first `INSERT`, before any
/// change, so the first two run it as an unguarded write (`SqliteStore::create`); keep every
/// other check before that `INSERT`.
pub(super) fn create_job_in(tx: &Tx<'_>, c: &Creation, now: Timestamp) -> Result<Made> {
    let job = &c.job;
    let total = c.sweep.len();
    let timeout_ms = job.task_timeout.as_millis() as i64;
    let materialised = c.payloads.len() as u64;
    let now_text = ts(&now);
    tx.prepare_cached(
        "INSERT INTO jobs (id, name, priority, max_attempts, task_timeout_ms, spec,
             parameters, status, total_tasks, new_tasks, created_at, updated_at, run,
             materialised, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'PENDING', ?8, ?8, ?9, ?9, ?10, ?11, ?12)",
    )
    .map_err(map_err)?
    .execute(params![
        c.id,
        job.name,
        job.priority,
        job.max_attempts,
        timeout_ms,
        c.spec,
        c.parameters,
        total,
        now_text,
        c.run,
        materialised,
        job.origin
    ])
    .map_err(map_err)?;
    let made = Unclaimed {
        seq: tx.last_insert_rowid(),
        job_id: c.id.clone(),
        priority: job.priority,
        materialised: 0,
        total,
        cancelled: false,
        max_attempts: job.max_attempts,
        timeout_ms,
        created_at: now,
        finished_at: None,
    };
    insert_task_rows(tx, &made, (0..).zip(&c.payloads), &now_text)?;
    // The journal's image of the job, as it would read it back from the row just written.
    let image = JobImage {
        id: c.id.clone(),
        name: job.name.clone(),
        origin: job.origin.clone(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        timeout_ms: timeout_ms.max(0) as u64,
        total,
        cancelled: false,
        spec: c.spec.clone(),
        run: c.run.clone(),
    };
    tx.emit_with_change(
        Event::JobCreated {
            job_id: c.id.clone(),
            total_tasks: total,
        },
        Change::Job(image),
    );
    Ok(Made {
        seq: made.seq,
        at: drover_core::time::parse(&now_text).unwrap_or(now),
    })
}

/// Writes the rows of `job`'s tasks `range`, NEW, with the payloads its sweep builds. The
/// caller makes sure they are the job's next tasks by index (rows are always a job's first
/// tasks) and counts them in `materialised`; their status was NEW without rows too, so no
/// count moves.
fn insert_new_rows(
    tx: &Transaction<'_>,
    job: &Unclaimed,
    sweep: &Sweep,
    range: std::ops::Range<u64>,
    now: &str,
) -> Result<()> {
    insert_task_rows(tx, job, range.map(|i| (i, payload_json(sweep, i))), now)
}

/// Writes the rows of `job`'s tasks given by index and payload, NEW.
fn insert_task_rows<P: rusqlite::ToSql>(
    tx: &Transaction<'_>,
    job: &Unclaimed,
    rows: impl Iterator<Item = (u64, P)>,
    now: &str,
) -> Result<()> {
    let created = ts(&job.created_at);
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO tasks (id, job_id, job_seq, idx, priority, payload, status,
                 max_attempts, timeout_ms, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'NEW', ?7, ?8, ?9, ?10)",
        )
        .map_err(map_err)?;
    for (i, payload) in rows {
        insert
            .execute(params![
                ids::sweep_task_id(&job.job_id, i),
                job.job_id,
                job.seq,
                i,
                job.priority,
                payload,
                job.max_attempts,
                job.timeout_ms,
                created,
                now
            ])
            .map_err(map_err)?;
    }
    Ok(())
}

/// The UPDATE that takes a stored NEW task ([`take_stored`]).
const TAKE_STORED_SQL: &str = "UPDATE OR FAIL tasks SET status = 'RUNNING', attempt = ?2,
         assigned_to = ?3, started_at = ?4, lease_expires_at = ?5, updated_at = ?4,
         rev = rev + 1
     WHERE seq = ?1";

/// Takes the stored NEW task `t` for `node_id` with `take` (the prepared [`TAKE_STORED_SQL`]):
/// its next attempt and lease as `lifecycle::claim_grant` gives them, counted in `deltas`.
/// The task's fields move out into the answer. Its attempt record and event are the caller's
/// ([`insert_attempts`], [`claimed_event`]), so that a claim of many tasks writes them together.
fn take_stored(
    take: &mut rusqlite::CachedStatement<'_>,
    t: &mut rows::Claimable,
    node_id: &str,
    now: &Now,
    deltas: &mut Deltas,
) -> Result<ClaimedTask> {
    // A negative timeout can only come from a hand edit; it leases for no time.
    let timeout = Duration::from_millis(u64::try_from(t.timeout_ms).unwrap_or(0));
    let grant = lifecycle::claim_grant(t.attempt, timeout, now.at);
    take.execute(params![
        t.seq,
        grant.attempt,
        node_id,
        now.text,
        ts(&grant.lease_expires_at)
    ])
    .map_err(map_err)?;
    let delta = deltas.of(&t.job_id);
    delta.moved(TaskStatus::New, TaskStatus::Running);
    delta.claimed = true;
    Ok(ClaimedTask {
        id: std::mem::take(&mut t.id),
        job_id: std::mem::take(&mut t.job_id),
        attempt: grant.attempt,
        payload: std::mem::take(&mut t.payload),
        lease_expires_at: grant.lease_expires_at,
    })
}

/// Records the claim of `task` by `node_id` as an event of the write.
fn claimed_event(tx: &Tx<'_>, task: &ClaimedTask, node_id: &str) {
    tx.emit(Event::TaskClaimed {
        task_id: task.id.clone(),
        job_id: task.job_id.clone(),
        node_id: node_id.to_string(),
        attempt: task.attempt,
    });
}

/// Writes the attempt record of each claim of `claimed` by `node_id` (the node's id, as a
/// statement's value), RUNNING from now: `attempts` holds each task's `seq` and its place in
/// `claimed`.
fn insert_attempts<'a>(
    tx: &Transaction<'_>,
    attempts: &'a [(i64, usize)],
    claimed: &'a [ClaimedTask],
    node_id: &'a dyn ToSql,
    now: &'a Now,
) -> Result<()> {
    insert_rows(
        tx,
        "INSERT INTO task_attempts (task_seq, attempt, task_id, node_id, started_at,
             outcome) VALUES ",
        "(?, ?, ?, ?, ?, 'RUNNING')",
        attempts,
        |(seq, task), values| {
            let task = &claimed[*task];
            values.extend([
                seq as &dyn ToSql,
                &task.attempt,
                &task.id,
                node_id,
                &now.text,
            ]);
        },
    )
}

/// What a claim of one named task found: its row, or the job and index of a task of a sweep
/// that has none yet.
enum Named {
    Row(rows::NamedClaim),
    Unclaimed(Unclaimed, u64),
}

/// Claims the one task `task_id` for `node_id` ([`JobStore::claim_task`]): the facts are read
/// here, `lifecycle::decide_task_claim` decides, and a claim is written as [`JobStore::claim`]
/// writes one (the same statements), the job settled once.
fn claim_named(
    tx: &Tx<'_>,
    sweeps: &SweepCache,
    task_id: &str,
    node_id: &str,
    max_running: Option<u32>,
    now: Timestamp,
) -> Result<TaskClaim> {
    let node_status =
        rows::node_status(tx, node_id)?.ok_or_else(|| StoreError::not_found("spot", node_id))?;
    let named = match rows::named_claim_by_id(tx, task_id)? {
        Some(row) => Named::Row(row),
        None => {
            let (job, index) = unclaimed_by_id(tx, task_id)?
                .ok_or_else(|| StoreError::not_found("task", task_id))?;
            Named::Unclaimed(job, index)
        }
    };
    // A task without a row is NEW (CANCELLED with its job) and held by nobody.
    let (status, holder, attempt) = match &named {
        Named::Row(row) => (row.status, row.assigned_to.as_deref(), row.task.attempt),
        Named::Unclaimed(job, _) => (job.status(), None, 0),
    };
    // Counted only when there is a cap: without one the count decides nothing.
    let running: u32 = match max_running {
        None => 0,
        Some(_) => tx
            .prepare_cached(
                "SELECT count(*) FROM tasks INDEXED BY tasks_running
                 WHERE status = 'RUNNING' AND assigned_to = ?1",
            )
            .map_err(map_err)?
            .query_row([node_id], |r| r.get(0))
            .map_err(map_err)?,
    };
    match lifecycle::decide_task_claim(status, holder, node_id, node_status, running, max_running) {
        TaskClaimDecision::NodeDown => return Err(StoreError::NodeDown(node_id.to_string())),
        TaskClaimDecision::Draining => return Ok(TaskClaim::Draining),
        TaskClaimDecision::AtCapacity => return Ok(TaskClaim::AtCapacity { running }),
        TaskClaimDecision::AlreadyHeld => return Ok(TaskClaim::AlreadyHeld { attempt }),
        TaskClaimDecision::Unavailable => {
            return Ok(TaskClaim::Unavailable(Box::new(task_by_id(
                tx, sweeps, task_id,
            )?)));
        }
        TaskClaimDecision::Claim => {}
    }
    let now = Now::new(now);
    let mut deltas = Deltas::default();
    let mut row = match named {
        Named::Row(row) => row.task,
        Named::Unclaimed(job, index) => {
            // A job's rows are always its first tasks by index, so the rows of the tasks
            // before this one that have none are made with it, NEW as they were.
            let sweep = sweep_of(sweeps, tx, &job)?;
            insert_new_rows(tx, &job, &sweep, job.materialised..index + 1, &now.text)?;
            deltas.of(&job.job_id).materialised += index + 1 - job.materialised;
            rows::named_claim_by_id(tx, task_id)?
                .ok_or_else(|| {
                    StoreError::Internal(format!("task {task_id} has no row after it was made"))
                })?
                .task
        }
    };
    let mut take = tx.prepare_cached(TAKE_STORED_SQL).map_err(map_err)?;
    let task = take_stored(&mut take, &mut row, node_id, &now, &mut deltas)?;
    drop(take);
    claimed_event(tx, &task, node_id);
    let claimed = [task];
    insert_attempts(tx, &[(row.seq, 0)], &claimed, &node_id, &now)?;
    settle_jobs(tx, &deltas, &now.text)?;
    let [task] = claimed;
    Ok(TaskClaim::Claimed(task))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        self.create(job, sweep, false, now, |_, _| Ok(())).await
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
            Ok(common::paged(items, page.limit, |j| j.seq))
        })
        .await
    }

    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job> {
        let id = id.to_string();
        let now = ts(&now);
        self.write(move |tx| {
            let job = rows::job_by_id(tx, &id)?;
            match lifecycle::decide_cancel(job.cancelled, job.status) {
                CancelDecision::Unchanged => return Ok(job),
                CancelDecision::Finished(status) => {
                    return Err(StoreError::JobFinished { id, status });
                }
                CancelDecision::Cancel => {}
            }
            const RUNNING: &str = JOB_RUNNING_ROWS;
            const NEW: &str = JOB_NEW_ROWS;
            tx.execute(
                &format!(
                    "UPDATE task_attempts SET outcome = 'CANCELLED', ended_at = ?2
                     WHERE outcome = 'RUNNING' AND task_seq IN ({RUNNING})"
                ),
                params![job.seq, now],
            )
            .map_err(map_err)?;
            // The rows it cancels are counted here, like every change drover makes (its writer
            // runs no triggers); so are the tasks without rows, cancelled with the job.
            let count = |select: &str| -> Result<i64> {
                tx.query_row(
                    &format!("SELECT count(*) FROM ({select})"),
                    [job.seq],
                    |r| r.get(0),
                )
                .map_err(map_err)
            };
            let (new_rows, running_rows) = (count(NEW)?, count(RUNNING)?);
            tx.execute(
                &format!(
                    "UPDATE tasks SET status = 'CANCELLED', lease_expires_at = NULL,
                         finished_at = ?2, updated_at = ?2, rev = rev + 1
                     WHERE seq IN ({NEW} UNION ALL {RUNNING})"
                ),
                params![job.seq, now],
            )
            .map_err(map_err)?;
            let unclaimed: i64 = tx
                .query_row(
                    "UPDATE jobs SET cancelled = 1 WHERE id = ?1
                     RETURNING total_tasks - materialised",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let mut deltas = Deltas::default();
            let delta = deltas.of(&id);
            delta.new -= unclaimed + new_rows;
            delta.running -= running_rows;
            delta.cancelled += unclaimed + new_rows + running_rows;
            settle_jobs(tx, &deltas, &now)?;
            tx.emit(Event::JobCancelled { job_id: id.clone() });
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
        let sweeps = self.sweeps.clone();
        self.read(move |conn| {
            // Distinguishes "no such job" from "no tasks on this page".
            let job = rows::unclaimed_of(conn, &job_id)?
                .ok_or_else(|| StoreError::not_found("job", &job_id))?;
            let after = page.cursor.unwrap_or(-1);
            let want = page.limit as usize + 1;
            // One statement per case, so each walks the index that serves it: the job's rows in
            // order for all of them, and for its DONE ones (most of its rows, once it has run);
            // every running task for its RUNNING ones (few, sorted); the job's index by status
            // (which holds neither of those two) for the others.
            let filter = match status {
                None => "INDEXED BY tasks_job_idx WHERE job_seq = ?1 AND idx > ?2",
                Some(TaskStatus::Done) => {
                    "INDEXED BY tasks_job_idx WHERE job_seq = ?1 AND idx > ?2 AND status = ?4"
                }
                Some(TaskStatus::Running) => {
                    "INDEXED BY tasks_running WHERE status = 'RUNNING' AND status = ?4
                         AND job_seq = ?1 AND idx > ?2"
                }
                Some(_) => {
                    "INDEXED BY tasks_job_status WHERE job_seq = ?1 AND status = ?4
                         AND status <> 'RUNNING' AND status <> 'DONE' AND idx > ?2"
                }
            };
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks {filter} ORDER BY idx LIMIT ?3",
                    rows::TASK_COLUMNS
                ))
                .map_err(map_err)?;
            let mut items = match status {
                None => stmt.query_map(params![job.seq, after, want as i64], rows::task),
                Some(s) => {
                    stmt.query_map(params![job.seq, after, want as i64, s.as_str()], rows::task)
                }
            }
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)?;
            // The tasks without rows follow every row (they are the job's last), all of one
            // status.
            if items.len() < want && status.is_none_or(|s| s == job.status()) {
                let first = job
                    .materialised
                    .max(u64::try_from(after.saturating_add(1)).unwrap_or(0));
                let last = job.total.min(first + (want - items.len()) as u64);
                if first < last {
                    let sweep = sweep_of(&sweeps, conn, &job)?;
                    items.extend(
                        (first..last).map(|i| common::unclaimed_task(&job, sweep.payload(i), i)),
                    );
                }
            }
            Ok(common::paged(items, page.limit, |t| t.seq))
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Task> {
        let id = id.to_string();
        let sweeps = self.sweeps.clone();
        self.read(move |conn| task_by_id(conn, &sweeps, &id)).await
    }

    async fn get_tasks(&self, ids: Vec<String>) -> Result<Vec<Task>> {
        let sweeps = self.sweeps.clone();
        self.read(move |conn| {
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                match task_by_id(conn, &sweeps, id) {
                    Ok(task) => found.push(task),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        })
        .await
    }

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        let node_id = node_id.to_string();
        let sweeps = self.sweeps.clone();
        self.write(move |tx| {
            let status: NodeStatus = rows::node_status(tx, &node_id)?
                .ok_or_else(|| StoreError::not_found("spot", &node_id))?;
            match lifecycle::claim_access(status) {
                ClaimAccess::NodeDown => return Err(StoreError::NodeDown(node_id)),
                ClaimAccess::Nothing => return Ok(Vec::new()),
                ClaimAccess::Claim => {}
            }
            // The best `max` of each source is enough: the merge takes at most `max` in all.
            let mut stored = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks WHERE status = 'NEW'
                     ORDER BY priority DESC, job_seq, idx LIMIT ?1",
                    rows::CLAIMABLE_COLUMNS
                ))
                .map_err(map_err)?
                .query_map([max], rows::claimable)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let unclaimed = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM jobs WHERE materialised < total_tasks AND cancelled = 0
                     ORDER BY priority DESC, seq LIMIT ?1",
                    rows::UNCLAIMED_COLUMNS
                ))
                .map_err(map_err)?
                .query_map([max], rows::unclaimed)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let keys: Vec<_> = stored.iter().map(|t| t.key).collect();
            let remainders: Vec<_> = unclaimed.iter().map(Unclaimed::remainder).collect();
            let picks = lifecycle::merge_claims(&keys, &remainders, max as usize);

            let now = Now::new(now);
            let mut take = tx.prepare_cached(TAKE_STORED_SQL).map_err(map_err)?;
            let mut fresh: Vec<Option<Fresh>> = Vec::new();
            fresh.resize_with(unclaimed.len(), || None);
            let mut deltas = Deltas::default();
            let mut claimed = Vec::with_capacity(picks.len());
            // Rows written after the loop, in multi-row statements: each fresh task's row (its
            // `seq`, the claimed task, its job's remainder, its index) and each claim's attempt
            // (the task's `seq`, the claimed task).
            let mut fresh_rows: Vec<(i64, usize, usize, u64)> = Vec::new();
            let mut attempts: Vec<(i64, usize)> = Vec::with_capacity(picks.len());
            let mut next_seq: Option<i64> = None;
            for pick in picks {
                let (seq, task) = match pick {
                    ClaimPick::Row(i) => {
                        // Each stored task is picked at most once: its fields move out.
                        let t = &mut stored[i];
                        let task = take_stored(&mut take, t, &node_id, &now, &mut deltas)?;
                        (t.seq, task)
                    }
                    ClaimPick::Fresh { remainder, index } => {
                        let job = &unclaimed[remainder];
                        let f = match &mut fresh[remainder] {
                            Some(f) => f,
                            slot => {
                                let timeout = Duration::from_millis(
                                    u64::try_from(job.timeout_ms).unwrap_or(0),
                                );
                                // Never claimed: no attempt made yet.
                                let grant = lifecycle::claim_grant(0, timeout, now.at);
                                slot.insert(Fresh {
                                    sweep: sweep_of(&sweeps, tx, job)?,
                                    lease_text: ts(&grant.lease_expires_at),
                                    grant,
                                    created_text: ts(&job.created_at),
                                })
                            }
                        };
                        // The `seq` SQLite would give the row (one past the largest), given
                        // here so that the rows can be written together, after the loop.
                        let seq = match next_seq {
                            Some(seq) => seq,
                            None => tx
                                .prepare_cached("SELECT COALESCE(max(seq), 0) + 1 FROM tasks")
                                .map_err(map_err)?
                                .query_row([], |r| r.get(0))
                                .map_err(map_err)?,
                        };
                        next_seq = Some(seq + 1);
                        fresh_rows.push((seq, claimed.len(), remainder, index));
                        let id = ids::sweep_task_id(&job.job_id, index);
                        let payload = serde_json::Value::Object(f.sweep.payload(index)).to_string();
                        let delta = deltas.of(&job.job_id);
                        delta.moved(TaskStatus::New, TaskStatus::Running);
                        delta.materialised += 1;
                        delta.claimed = true;
                        let task = ClaimedTask {
                            id,
                            job_id: job.job_id.clone(),
                            attempt: f.grant.attempt,
                            payload,
                            lease_expires_at: f.grant.lease_expires_at,
                        };
                        (seq, task)
                    }
                };
                attempts.push((seq, claimed.len()));
                claimed_event(tx, &task, &node_id);
                claimed.push(task);
            }
            drop(take);
            insert_rows(
                tx,
                "INSERT INTO tasks (seq, id, job_id, job_seq, idx, priority, payload, status,
                     attempt, max_attempts, timeout_ms, assigned_to, started_at,
                     lease_expires_at, created_at, updated_at) VALUES ",
                "(?, ?, ?, ?, ?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?, ?)",
                &fresh_rows,
                |(seq, task, remainder, index), values| {
                    let (task, job) = (&claimed[*task], &unclaimed[*remainder]);
                    // Made when the job's first fresh task was picked.
                    let Some(f) = &fresh[*remainder] else {
                        unreachable!("a fresh task's job has its grant")
                    };
                    values.extend([
                        seq as &dyn ToSql,
                        &task.id,
                        &job.job_id,
                        &job.seq,
                        index,
                        &job.priority,
                        &task.payload,
                        &f.grant.attempt,
                        &job.max_attempts,
                        &job.timeout_ms,
                        &node_id,
                        &now.text,
                        &f.lease_text,
                        &f.created_text,
                        &now.text,
                    ]);
                },
            )?;
            insert_attempts(tx, &attempts, &claimed, &node_id, &now)?;
            settle_jobs(tx, &deltas, &now.text)?;
            Ok(claimed)
        })
        .await
    }

    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>> {
        self.write(move |tx| {
            let now = Now::new(now);
            let mut outcomes = Vec::with_capacity(reports.len());
            let mut deltas = Deltas::default();
            let mut each = EveryReport::prepare(tx)?;
            for report in &reports {
                outcomes.push(apply_report(tx, report, &now, &mut deltas, &mut each)?);
            }
            drop(each);
            settle_jobs(tx, &deltas, &now.text)?;
            Ok(outcomes)
        })
        .await
    }

    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>> {
        self.write(move |tx| {
            let now_text = ts(&now);
            let expired = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND lease_expires_at < ?1
                     ORDER BY lease_expires_at",
                    rows::TASK_HEAD_COLUMNS
                ))
                .map_err(map_err)?
                .query_map([&now_text], rows::task_head)
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
                now,
            )
        })
        .await
    }

    async fn claim_task(
        &self,
        task_id: &str,
        node_id: &str,
        max_running: Option<u32>,
        now: Timestamp,
    ) -> Result<TaskClaim> {
        let (task_id, node_id) = (task_id.to_string(), node_id.to_string());
        let sweeps = self.sweeps.clone();
        self.write(move |tx| claim_named(tx, &sweeps, &task_id, &node_id, max_running, now))
            .await
    }

    async fn waiting_jobs(
        &self,
        origin: &str,
        priority: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let origin = origin.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {} {WAITING_JOBS}", rows::JOB_COLUMNS))
                .map_err(map_err)?
                .query_map(
                    params![priority, after.unwrap_or(0), limit, origin],
                    rows::job,
                )
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn list_jobs_of(&self, origin: &str, page: Page) -> Result<Paged<Job>> {
        let origin = origin.to_string();
        self.read(move |conn| {
            let items = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM jobs INDEXED BY jobs_origin
                     WHERE origin = ?1 AND (?2 IS NULL OR seq < ?2)
                     ORDER BY seq DESC LIMIT ?3",
                    rows::JOB_COLUMNS
                ))
                .map_err(map_err)?
                .query_map(
                    params![origin, page.cursor, page.limit as i64 + 1],
                    rows::job,
                )
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            Ok(common::paged(items, page.limit, |j| j.seq))
        })
        .await
    }

    async fn origin_counts(&self, origin: &str, since: Timestamp) -> Result<OriginCounts> {
        let (origin, since) = (origin.to_string(), ts(&since));
        self.read(move |conn| {
            let mut counts = OriginCounts::default();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT j.priority, t.status, count(*),
                         sum(t.status IN ('DONE', 'FAILED') AND t.finished_at >= ?2)
                     FROM jobs AS j INDEXED BY jobs_origin
                     CROSS JOIN tasks AS t INDEXED BY tasks_job_idx ON t.job_seq = j.seq
                     WHERE j.origin = ?1
                     GROUP BY j.priority, t.status",
                )
                .map_err(map_err)?;
            let mut found = stmt.query(params![origin, since]).map_err(map_err)?;
            while let Some(r) = found.next().map_err(map_err)? {
                let status: TaskStatus = rows::status(r, 1).map_err(map_err)?;
                let n: i64 = r.get(2).map_err(map_err)?;
                let finished: i64 = r.get(3).map_err(map_err)?;
                counts
                    .tasks
                    .push((r.get(0).map_err(map_err)?, status, n as u64));
                counts.finished_since += finished as u64;
            }
            Ok(counts)
        })
        .await
    }

    async fn raise_priority(
        &self,
        job_ids: Vec<String>,
        priority: i64,
        route: Option<crate::Route>,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let now = ts(&now);
        self.write(move |tx| {
            let mut raised = Vec::new();
            for id in job_ids {
                let seq: Option<i64> = tx
                    .prepare_cached(
                        "UPDATE jobs SET priority = ?2, updated_at = ?3
                         WHERE id = ?1 AND priority < ?2 AND cancelled = 0
                             AND status IN ('PENDING', 'RUNNING')
                         RETURNING seq",
                    )
                    .map_err(map_err)?
                    .query_row(params![id, priority, now], |r| r.get(0))
                    .optional()
                    .map_err(map_err)?;
                let Some(seq) = seq else { continue };
                tx.prepare_cached(&format!(
                    "UPDATE OR FAIL tasks SET priority = ?2
                     WHERE seq IN ({JOB_NEW_ROWS} UNION ALL {JOB_RUNNING_ROWS})"
                ))
                .map_err(map_err)?
                .execute(params![seq, priority])
                .map_err(map_err)?;
                if let Some(route) = &route {
                    tx.prepare_cached(&format!(
                        "UPDATE dispatches SET queue = ?2, priority = ?3,
                             published_attempts = NULL
                         WHERE open AND task_seq IN ({JOB_NEW_ROWS} UNION ALL {JOB_RUNNING_ROWS})"
                    ))
                    .map_err(map_err)?
                    .execute(params![seq, route.queue, route.priority])
                    .map_err(map_err)?;
                }
                tx.emit(Event::JobPriorityRaised {
                    job_id: id.clone(),
                    priority,
                });
                raised.push(id);
            }
            Ok(raised)
        })
        .await
    }
}

/// The running rows of the job `?1`, through the index of all running tasks (they are few).
const JOB_RUNNING_ROWS: &str = "SELECT seq FROM tasks INDEXED BY tasks_running
     WHERE status = 'RUNNING' AND job_seq = ?1";
/// The NEW rows of the job `?1`, through the job's index by status (which leaves RUNNING out).
const JOB_NEW_ROWS: &str = "SELECT seq FROM tasks INDEXED BY tasks_job_status
     WHERE job_seq = ?1 AND status = 'NEW' AND status <> 'RUNNING' AND status <> 'DONE'";

/// The jobs of origin `?4` and priority `?1` after the job `?2` that have a stored NEW task or
/// tasks not yet stored, the first `?3` by `seq`: the first `?3` of each kind, through the
/// claim's own two indexes, hold the first `?3` of both.
const WAITING_JOBS: &str = "FROM jobs WHERE seq IN (
         SELECT * FROM (SELECT t.job_seq FROM tasks AS t INDEXED BY tasks_claim
             CROSS JOIN jobs AS j ON j.seq = t.job_seq
             WHERE t.status = 'NEW' AND t.priority = ?1 AND t.job_seq > ?2 AND j.origin = ?4
             ORDER BY t.priority DESC, t.job_seq, t.idx LIMIT ?3)
         UNION
         SELECT * FROM (SELECT seq FROM jobs INDEXED BY jobs_unclaimed
             WHERE materialised < total_tasks AND cancelled = 0 AND priority = ?1 AND seq > ?2
                 AND origin = ?4
             ORDER BY priority DESC, seq LIMIT ?3))
     ORDER BY seq LIMIT ?3";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobStore, NewJob, NodeStore, StoreOps};
    use chrono::Utc;
    use drover_core::NodeInfo;
    use drover_core::sweep::{Dimension, SweepSpec};
    use serde_json::{Map, Value, json};

    fn spec() -> SweepSpec {
        let dim = |name: &str, values: Value| Dimension {
            name: name.into(),
            field: name.into(),
            values: serde_json::from_value(values).unwrap(),
        };
        let mut shared = Map::new();
        shared.insert("jarPath".into(), json!("a.jar"));
        SweepSpec {
            shared,
            dimensions: vec![
                dim("algorithm", json!(["GA", {"deep": [1, 2]}, 3.5])),
                dim("n", json!({"min": -7, "max": 400, "step": 3})),
                dim("x", json!({"min": 0.1, "max": 1.3, "step": 0.1})),
            ],
            tasks: None,
        }
    }

    fn new_job(priority: i64) -> NewJob {
        NewJob {
            origin: None,
            id: None,
            name: None,
            priority,
            max_attempts: 3,
            task_timeout: Duration::from_secs(60),
            run: None,
        }
    }

    /// Every claim, fetch and listing builds a never-claimed task's payload from the cached
    /// sweep; each must equal the payload the job's kept spec builds when parsed afresh.
    #[tokio::test]
    async fn payloads_built_through_the_cache_equal_the_kept_specs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let listed = SweepSpec {
            tasks: Some(
                (0..50)
                    .map(|i| json!({"seed": i}).as_object().unwrap().clone())
                    .collect(),
            ),
            ..Default::default()
        };
        let mut jobs = Vec::new();
        for (priority, spec) in [(1, spec()), (0, listed)] {
            let sweep = Sweep::new(spec, u64::MAX).unwrap();
            // The old path: the kept spec parsed for each payload.
            let fresh = Sweep::from_spec_json(&sweep.spec_json().unwrap()).unwrap();
            let job = store
                .create_job(new_job(priority), sweep, Utc::now())
                .await
                .unwrap();
            jobs.push((job.id, fresh));
        }
        let payload_of = |id: &str| {
            let (job, i) = ids::parse_sweep_task_id(id).unwrap();
            let (_, fresh) = jobs.iter().find(|(j, _)| *j == job).unwrap();
            fresh.payload(i)
        };
        let (big, big_fresh) = &jobs[0];
        for i in (0..big_fresh.len())
            .step_by(37)
            .chain([big_fresh.len() - 1])
        {
            let task = store.get_task(&ids::sweep_task_id(big, i)).await.unwrap();
            assert_eq!(task.payload, payload_of(&task.id), "task {i}");
        }
        let page = Page {
            cursor: Some(99),
            limit: 200,
        };
        for task in store.list_tasks(big, None, page).await.unwrap().items {
            assert_eq!(task.payload, payload_of(&task.id));
        }
        let node = store
            .register_node(NodeInfo::default().into(), None, Utc::now())
            .await
            .unwrap()
            .id;
        let mut claimed = 0;
        for max in (1..=40).cycle() {
            let tasks = store.claim(&node, max, Utc::now()).await.unwrap();
            if tasks.is_empty() {
                break;
            }
            for task in &tasks {
                let payload: Map<String, Value> = serde_json::from_str(&task.payload).unwrap();
                assert_eq!(payload, payload_of(&task.id), "{}", task.id);
            }
            claimed += tasks.len() as u64;
        }
        assert_eq!(claimed, big_fresh.len() + 50);
    }

    /// The cache holds at most its number of jobs and its bytes of spec, dropping the least
    /// recently used; a spec above the byte bound is parsed each time and never kept.
    #[tokio::test]
    async fn the_sweep_cache_keeps_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let mut jobs = Vec::new();
        for _ in 0..6 {
            let sweep = Sweep::new(spec(), u64::MAX).unwrap();
            jobs.push(
                store
                    .create_job(new_job(0), sweep, Utc::now())
                    .await
                    .unwrap()
                    .id,
            );
        }
        let wide = SweepSpec {
            tasks: Some(vec![
                json!({"pad": "p".repeat(4000)})
                    .as_object()
                    .unwrap()
                    .clone(),
            ]),
            ..Default::default()
        };
        let wide = store
            .create_job(new_job(0), Sweep::new(wide, 10).unwrap(), Utc::now())
            .await
            .unwrap()
            .id;
        let len = spec_len(&Sweep::new(spec(), u64::MAX).unwrap());
        let cache = Arc::new(SweepCache::with_bounds(4, len * 3));
        let held = move |ids: Vec<String>| {
            let cache = cache.clone();
            let store = store.clone();
            async move {
                store
                    .read(move |conn| {
                        for id in &ids {
                            let job = rows::unclaimed_of(conn, id)?.unwrap();
                            sweep_of(&cache, conn, &job)?;
                        }
                        let kept = cache.kept();
                        let mut held: Vec<String> =
                            kept.sweeps.iter().map(|(k, _)| k.clone()).collect();
                        held.sort();
                        assert!(kept.bytes <= len * 3);
                        Ok(held)
                    })
                    .await
                    .unwrap()
            }
        };
        // Three fill the bytes; a fourth evicts the least recently used (job 0, since job 1
        // was used again).
        let mut want = vec![jobs[1].clone(), jobs[2].clone(), jobs[3].clone()];
        want.sort();
        let got = held(vec![
            jobs[0].clone(),
            jobs[1].clone(),
            jobs[2].clone(),
            jobs[1].clone(),
            jobs[3].clone(),
        ])
        .await;
        assert_eq!(got, want);
        // Too wide to keep: parsed, not held, nothing evicted for it.
        assert_eq!(held(vec![wide]).await, want);
    }

    /// The listing by each status, each through its own index (`INDEXED BY`: a statement whose
    /// index cannot serve it fails), equals the full listing filtered; a cancel finds the job's
    /// running and NEW rows and counts them, and the counts still match the rows.
    #[tokio::test]
    async fn each_status_is_listed_and_cancelled_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let mut job = new_job(0);
        job.max_attempts = 2;
        let sweep = Sweep::new(SweepSpec::counting("x", "x", 12), u64::MAX).unwrap();
        let job = store.create_job(job, sweep, Utc::now()).await.unwrap();
        let node = store
            .register_node(NodeInfo::default().into(), None, Utc::now())
            .await
            .unwrap()
            .id;
        let claimed = store.claim(&node, 7, Utc::now()).await.unwrap();
        let report = |i: usize, kind: ReportKind| Report {
            task_id: claimed[i].id.clone(),
            node_id: node.clone(),
            attempt: Some(claimed[i].attempt),
            kind,
        };
        let fail = |retriable| ReportKind::Fail {
            error: "no".into(),
            retriable,
        };
        let done = ReportKind::Complete(drover_core::TaskResult::default());
        store
            .report(
                vec![
                    report(0, done.clone()),
                    report(2, done),
                    report(3, fail(true)),
                    report(5, fail(false)),
                ],
                Utc::now(),
            )
            .await
            .unwrap();
        let list = |status: Option<TaskStatus>| {
            let store = store.clone();
            let job = job.id.clone();
            async move {
                let mut ids = Vec::new();
                let mut cursor = None;
                loop {
                    let page = store
                        .list_tasks(&job, status, Page { cursor, limit: 2 })
                        .await
                        .unwrap();
                    ids.extend(page.items.into_iter().map(|t| (t.seq, t.status)));
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => return ids,
                    }
                }
            }
        };
        let all = list(None).await;
        assert_eq!(all.len(), 12);
        let statuses = [
            TaskStatus::New,
            TaskStatus::Running,
            TaskStatus::Done,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ];
        let check = |all: Vec<(i64, TaskStatus)>| async move {
            for status in statuses {
                let want: Vec<_> = all.iter().filter(|t| t.1 == status).cloned().collect();
                assert_eq!(list(Some(status)).await, want, "{status:?}");
            }
        };
        let by = |s: TaskStatus| {
            all.iter()
                .filter(|t| t.1 == s)
                .map(|t| t.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(TaskStatus::Done), [0, 2]);
        assert_eq!(by(TaskStatus::Running), [1, 4, 6]);
        assert_eq!(by(TaskStatus::Failed), [5]);
        assert_eq!(
            by(TaskStatus::New),
            [3, 7, 8, 9, 10, 11],
            "a retry's row, then no rows"
        );
        check(all.clone()).await;

        store.cancel_job(&job.id, Utc::now()).await.unwrap();
        let all = list(None).await;
        let by = |s: TaskStatus| {
            all.iter()
                .filter(|t| t.1 == s)
                .map(|t| t.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(TaskStatus::Cancelled), [1, 3, 4, 6, 7, 8, 9, 10, 11]);
        check(all.clone()).await;
        let counts = store.get_job(&job.id).await.unwrap().counts;
        assert_eq!(
            (
                counts.new,
                counts.running,
                counts.done,
                counts.failed,
                counts.cancelled
            ),
            (0, 0, 2, 1, 9)
        );
        assert_eq!(store.audit_job_counts().await.unwrap(), []);
    }

    /// A claim writes its fresh tasks' rows and every attempt in multi-row statements: each
    /// claimed task has its row, with the `seq` SQLite would have given it, and its attempt,
    /// whatever the claim's size (every chunk size, and a retried task's row among them).
    #[tokio::test]
    async fn a_claim_writes_a_row_and_an_attempt_for_each_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let sweep = Sweep::new(SweepSpec::counting("x", "x", 100), u64::MAX).unwrap();
        let job = store
            .create_job(new_job(0), sweep, Utc::now())
            .await
            .unwrap();
        let node = store
            .register_node(NodeInfo::default().into(), None, Utc::now())
            .await
            .unwrap()
            .id;
        let first = store.claim(&node, 3, Utc::now()).await.unwrap();
        let retry = ReportKind::Fail {
            error: "again".into(),
            retriable: true,
        };
        let report = Report {
            task_id: first[1].id.clone(),
            node_id: node.clone(),
            attempt: Some(1),
            kind: retry,
        };
        store.report(vec![report], Utc::now()).await.unwrap();
        let mut claimed = first.len();
        for max in [37, 1, 5, 40] {
            let tasks = store.claim(&node, max, Utc::now()).await.unwrap();
            assert_eq!(tasks.len(), max as usize);
            claimed += tasks.len();
        }
        assert_eq!(
            tasks_of(&store, &job.id).await,
            claimed - 1,
            "one task claimed twice"
        );
        let rows: Vec<(i64, i64, u32, i64)> = store
            .with_conn(|c| {
                c.prepare(
                    "SELECT t.seq, t.idx, t.attempt,
                            (SELECT count(*) FROM task_attempts a
                             WHERE a.task_seq = t.seq AND a.task_id = t.id)
                     FROM tasks t ORDER BY t.seq",
                )
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)
            })
            .await
            .unwrap();
        for (i, (seq, idx, attempt, attempts)) in rows.iter().enumerate() {
            assert_eq!((*seq, *idx), (i as i64 + 1, i as i64));
            let retried = *idx == 1;
            assert_eq!(*attempt, if retried { 2 } else { 1 });
            assert_eq!(*attempts, i64::from(*attempt), "task {idx}");
        }
        assert_eq!(store.audit_job_counts().await.unwrap(), []);
    }

    /// How many of `job`'s tasks are running.
    async fn tasks_of(store: &SqliteStore, job: &str) -> usize {
        let page = Page {
            cursor: None,
            limit: 1000,
        };
        let running = store.list_tasks(job, Some(TaskStatus::Running), page);
        running.await.unwrap().items.len()
    }

    fn spec_len(sweep: &Sweep) -> usize {
        sweep.spec_json().unwrap().len()
    }
}
