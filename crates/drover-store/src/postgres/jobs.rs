//! Jobs, their tasks and the task lifecycle in PostgreSQL: the [`JobStore`] implementation.
//!
//! SQL and row handling only. Each call reads the facts it needs inside its transaction, asks
//! `drover_core::lifecycle` what to do, writes exactly that, and records the events on the
//! write's [`Tx`]; it must not decide a lifecycle rule itself. As on SQLite, a sweep's tasks
//! get rows lazily (a claim inserts each task it takes from a job's never-claimed remainder,
//! RUNNING), and the job counters change once per job per transaction (a group's calls
//! together) from the collected [`Deltas`] (`common.rs`), in one statement ([`settle_jobs`]).
//!
//! Many replicas and agents claim at once, so rows are locked as they are decided on: a claim
//! takes stored NEW tasks `FOR UPDATE SKIP LOCKED` (two claims never wait for each other over a
//! task, and never get the same one), then locks the jobs it may touch (their `materialised`
//! count is read under the lock and moved before the commit, so no two claims make the same
//! task's row); a report batch locks its tasks in id order; a cancel locks its job first; a
//! claim of one named task (`claim_task`) locks its node for update (so that such claims of
//! one node are counted against its cap one after another), then the task's row, then its
//! job, in the order of a claim. Job rows are locked in id order by every call that locks
//! several. A deadlock between two calls
//! that still lock in different orders is broken by PostgreSQL and the loser is run again by
//! the write path.
//!
//! One exception to "read, then decide": a complete by the holder of the task's current
//! attempt gets the same decision whatever else the row says (`lifecycle::complete_by_holder`),
//! so grouped completes are first written by compare and set, with that condition in the
//! statement, in one round trip ([`complete_held_at_once`]); those whose condition fails
//! take the path above.

use super::PgStore;
use super::group::joins_group;
use super::rows::{self, TaskHead, at};
use super::write::{Params, PgErr, R, Tx, exec, on_generic_plans, row, row_opt, rows as all};
use crate::common::{self, Deltas, StoredJob, SweepCache, Unclaimed};
use crate::{
    JobStore, NewJob, OriginCounts, Page, Paged, Released, Report, Result, StoreError, TaskClaim,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use drover_core::lifecycle::{
    self, AttemptRecord, CancelDecision, ClaimAccess, ClaimPick, Decision, TaskClaimDecision,
    TaskView,
};
use drover_core::{
    ClaimedTask, Event, Job, JobStatus, NodeStatus, ReportKind, ReportOutcome, Task, TaskStatus,
    Timestamp, ids, sweep::Sweep,
};
use std::sync::Arc;
use std::time::Duration;

/// What a write has changed in its jobs' counts, and the jobs it has already read under its
/// lock: a write collects its moves here from every part of it (a group's reports and claims
/// alike) and settles them once, at its end, in [`settle_jobs`].
#[derive(Default)]
struct Settlement {
    deltas: Deltas,
    read: std::collections::HashMap<String, StoredJob>,
}

impl Settlement {
    fn of(deltas: Deltas) -> Self {
        Settlement {
            deltas,
            read: Default::default(),
        }
    }

    /// The touched jobs not yet read under the write's lock.
    fn unread(&self) -> Vec<String> {
        let mut ids: Vec<String> = (self.deltas.0.iter())
            .filter(|(id, _)| !self.read.contains_key(id))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Writes each touched job's counts, rows made, start, status and finish, all in one
/// statement: the status is the core's `JobCounts::status` of the counts after the write. The
/// jobs the write has not read yet are read first, locked in id order. A job whose status and
/// start stay as they were keeps its indexed columns' values, so its update stays HOT.
async fn settle_jobs(tx: &Tx<'_>, settlement: Settlement, now: Timestamp) -> R<()> {
    let unread = settlement.unread();
    let Settlement { deltas, mut read } = settlement;
    if deltas.0.is_empty() {
        return Ok(());
    }
    if !unread.is_empty() {
        let sql = format!(
            "SELECT id, {} FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            rows::STORED_JOB_COLUMNS
        );
        for r in all(&**tx, &sql, &[&unread]).await? {
            read.insert(rows::get(&r, 0)?, rows::stored_job(&r, 1)?);
        }
    }
    let mut w = JobWrites::default();
    for (id, delta) in &deltas.0 {
        let stored = read
            .get(id)
            .ok_or_else(|| StoreError::Internal(format!("job {id} has no row to settle")))?;
        let settled = common::settle(id, stored, delta)?;
        let c = settled.counts;
        w.id.push(id);
        w.counts[0].push(c.new as i64);
        w.counts[1].push(c.running as i64);
        w.counts[2].push(c.done as i64);
        w.counts[3].push(c.failed as i64);
        w.counts[4].push(c.cancelled as i64);
        w.materialised.push(delta.materialised as i64);
        w.started.push(settled.started);
        w.status.push(settled.status.as_str());
        w.finished.push(settled.status.is_finished());
    }
    exec(
        &**tx,
        "UPDATE jobs j SET new_tasks = u.new, running_tasks = u.running,
             completed_tasks = u.done, failed_tasks = u.failed, cancelled_tasks = u.cancelled,
             materialised = j.materialised + u.materialised,
             started_at = CASE WHEN u.started THEN COALESCE(j.started_at, $1) ELSE j.started_at END,
             status = u.status, updated_at = $1,
             finished_at = CASE WHEN u.finished THEN COALESCE(j.finished_at, $1) ELSE NULL END
         FROM unnest($2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[],
             $7::BIGINT[], $8::BIGINT[], $9::BOOL[], $10::TEXT[], $11::BOOL[])
             AS u (id, new, running, done, failed, cancelled, materialised, started, status,
                   finished)
         WHERE j.id = u.id",
        &[
            &at(now),
            &w.id,
            &w.counts[0],
            &w.counts[1],
            &w.counts[2],
            &w.counts[3],
            &w.counts[4],
            &w.materialised,
            &w.started,
            &w.status,
            &w.finished,
        ],
    )
    .await?;
    Ok(())
}

/// The settled jobs' new values, column by column (one `UPDATE ... FROM unnest(...)` writes
/// them all).
#[derive(Default)]
struct JobWrites<'a> {
    id: Vec<&'a str>,
    /// NEW, RUNNING, DONE, FAILED, CANCELLED.
    counts: [Vec<i64>; 5],
    materialised: Vec<i64>,
    started: Vec<bool>,
    status: Vec<&'static str>,
    finished: Vec<bool>,
}

/// Moves a task out of RUNNING to `to` (NEW, FAILED), ending its lease and recording `error`;
/// its holder, start and finish follow the core's back-to-NEW rule. The caller counts the move.
async fn move_task(tx: &Tx<'_>, seq: i64, to: TaskStatus, error: &str, now: Timestamp) -> R<()> {
    let after = lifecycle::after_move(to, now);
    exec(
        &**tx,
        "UPDATE tasks SET status = $2, lease_expires_at = NULL, last_error = $3,
             assigned_to = CASE WHEN $4 THEN assigned_to ELSE NULL END,
             started_at = CASE WHEN $5 THEN started_at ELSE NULL END,
             finished_at = $6, updated_at = $7
         WHERE seq = $1",
        &[
            &seq,
            &to.as_str(),
            &error,
            &after.keep_holder,
            &after.keep_started_at,
            &after.finished_at,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// Releases every task of `running` (rows the caller has locked) back to NEW or on to FAILED,
/// closing each attempt as reaped, and settles their jobs.
pub(super) async fn release_all(
    tx: &Tx<'_>,
    running: Vec<TaskHead>,
    reason: impl Fn(&TaskHead) -> String,
    now: Timestamp,
) -> R<Vec<Released>> {
    let now = at(now);
    let mut released = Vec::with_capacity(running.len());
    let mut deltas = Deltas::default();
    for task in &running {
        let why = reason(task);
        let to = lifecycle::status_after_release(task.attempt, task.max_attempts);
        move_task(tx, task.seq, to, &why, now).await?;
        deltas.of(&task.job_id).moved(task.status, to);
        exec(
            &**tx,
            "UPDATE task_attempts SET outcome = 'REAPED', ended_at = $3, error = $4
             WHERE task_seq = $1 AND attempt = $2",
            &[&task.seq, &i64::from(task.attempt), &now, &why],
        )
        .await?;
        tx.emit(Event::TaskReleased {
            task_id: task.id.clone(),
            job_id: task.job_id.clone(),
            node_id: task.assigned_to.clone(),
            attempt: task.attempt,
            to,
        });
        released.push(Released {
            task_id: task.id.clone(),
            job_id: task.job_id.clone(),
            node_id: task.assigned_to.clone(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            to,
        });
    }
    settle_jobs(tx, Settlement::of(deltas), now).await?;
    Ok(released)
}

/// The sweep `job`'s kept spec describes, for building the tasks that have no rows.
async fn sweep_of<C: GenericClient>(sweeps: &SweepCache, c: &C, job: &Unclaimed) -> R<Arc<Sweep>> {
    if let Some(sweep) = sweeps.cached(&job.job_id) {
        return Ok(sweep);
    }
    let spec: String = rows::get(
        &row(c, "SELECT spec FROM jobs WHERE seq = $1", &[&job.seq]).await?,
        0,
    )?;
    Ok(sweeps.keep(&job.job_id, &spec)?)
}

/// The job and index of a task that has no row: `id` names task `index` of a job that has not
/// made its row yet. `None` for anything else.
async fn unclaimed_by_id<C: GenericClient>(c: &C, id: &str) -> R<Option<(Unclaimed, u64)>> {
    let Some((job_id, index)) = ids::parse_sweep_task_id(id) else {
        return Ok(None);
    };
    Ok(rows::unclaimed_of(c, &job_id)
        .await?
        .filter(|job| (job.materialised..job.total).contains(&index))
        .map(|job| (job, index)))
}

/// The head of task `id`, locked, when a claim made its row after the report first looked:
/// the job's row, shared, waits for a claim that holds it, and then says whether the task has
/// a row now. `None` for a task that still has none (or no such task).
async fn row_lock_after_claims(tx: &Tx<'_>, id: &str) -> R<Option<tokio_postgres::Row>> {
    let Some((job_id, index)) = ids::parse_sweep_task_id(id) else {
        return Ok(None);
    };
    let materialised = row_opt(
        &**tx,
        "SELECT materialised FROM jobs WHERE id = $1 FOR SHARE",
        &[&job_id],
    )
    .await?;
    match materialised {
        Some(r) if index < rows::count(&r, 0)? => {
            row_opt(
                &**tx,
                &format!(
                    "SELECT {} FROM tasks WHERE id = $1 FOR UPDATE",
                    rows::TASK_HEAD_COLUMNS
                ),
                &[&id],
            )
            .await
        }
        _ => Ok(None),
    }
}

/// Decides and applies one report. A task that has no row was never claimed, so nobody holds
/// it: the core decides that case from what the task is (NEW, or CANCELLED with its job).
async fn apply_report(
    tx: &Tx<'_>,
    report: &Report,
    now: Timestamp,
    deltas: &mut Deltas,
) -> R<ReportOutcome> {
    let head = row_opt(
        &**tx,
        &format!(
            "SELECT {} FROM tasks WHERE id = $1 FOR UPDATE",
            rows::TASK_HEAD_COLUMNS
        ),
        &[&report.task_id],
    )
    .await?;
    let head = match head {
        Some(head) => Some(head),
        None => row_lock_after_claims(tx, &report.task_id).await?,
    };
    let Some(head) = head else {
        let Some((job, _)) = unclaimed_by_id(&**tx, &report.task_id).await? else {
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
            ))
            .into()),
        };
    };
    let task = rows::task_head(&head)?;
    let view = TaskView {
        status: task.status,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        assigned_to: task.assigned_to.as_deref(),
    };
    // The reporter's attempt: the one it names, else its latest. Read only when the core will
    // look at it.
    let own: Option<AttemptRecord> =
        if lifecycle::holds_current(&view, &report.node_id, report.attempt) {
            None
        } else {
            row_opt(
                &**tx,
                "SELECT attempt, node_id, outcome FROM task_attempts
                 WHERE task_seq = $1 AND node_id = $2 AND ($3::BIGINT IS NULL OR attempt = $3)
                 ORDER BY attempt DESC LIMIT 1",
                &[&task.seq, &report.node_id, &report.attempt.map(i64::from)],
            )
            .await?
            .map(|r| rows::attempt_record(&r))
            .transpose()?
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
            exec(
                &**tx,
                "UPDATE tasks SET status = 'DONE', lease_expires_at = NULL, finished_at = $2,
                     runtime_ms = $3, iter = $4, fopt = $5, result_json = $6, output = $7,
                     updated_at = $2
                 WHERE seq = $1",
                &[
                    &task.seq,
                    &now,
                    &result.runtime_ms,
                    &result.iter,
                    &result.fopt,
                    &result.result_json,
                    &result.output,
                ],
            )
            .await?;
        }
        ReportKind::Fail { error, .. } => move_task(tx, task.seq, to, error, now).await?,
    }
    deltas.of(&task.job_id).moved(task.status, to);
    let error = match &report.kind {
        ReportKind::Fail { error, .. } => Some(error.as_str()),
        ReportKind::Complete(_) => None,
    };
    exec(
        &**tx,
        "UPDATE task_attempts SET outcome = $3, ended_at = $4, error = $5
         WHERE task_seq = $1 AND attempt = $2",
        &[
            &task.seq,
            &i64::from(task.attempt),
            &attempt_outcome.as_str(),
            &now,
            &error,
        ],
    )
    .await?;
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

/// Completes by the tasks' current holders, decided from the rows a report batch locked and
/// written together, column by column.
#[derive(Default)]
struct Completions {
    seq: Vec<i64>,
    attempt: Vec<i64>,
    outcome: Vec<&'static str>,
    runtime_ms: Vec<Option<i64>>,
    iter: Vec<Option<i64>>,
    fopt: Vec<Option<f64>>,
    result_json: Vec<Option<String>>,
    output: Vec<Option<String>>,
}

impl Completions {
    /// Takes `report` if it is a complete by the holder of `task`'s current attempt, which the
    /// core applies without reading the attempt records: records the write, the counts and
    /// the event, and gives the answer. `None` leaves the report to [`apply_report`].
    fn complete_held(
        &mut self,
        tx: &Tx<'_>,
        task: TaskHead,
        report: &Report,
        deltas: &mut Deltas,
    ) -> Option<ReportOutcome> {
        let ReportKind::Complete(result) = &report.kind else {
            return None;
        };
        let view = TaskView {
            status: task.status,
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            assigned_to: task.assigned_to.as_deref(),
        };
        if !lifecycle::holds_current(&view, &report.node_id, report.attempt) {
            return None;
        }
        let Decision::Apply {
            to: TaskStatus::Done,
            attempt_outcome,
            reply,
        } = lifecycle::decide_report(&view, &report.node_id, report.attempt, &report.kind, None)
        else {
            return None;
        };
        self.seq.push(task.seq);
        self.attempt.push(i64::from(task.attempt));
        self.outcome.push(attempt_outcome.as_str());
        self.runtime_ms.push(result.runtime_ms);
        self.iter.push(result.iter);
        self.fopt.push(result.fopt);
        self.result_json.push(result.result_json.clone());
        self.output.push(result.output.clone());
        deltas.of(&task.job_id).moved(task.status, TaskStatus::Done);
        tx.emit(Event::TaskCompleted {
            task_id: task.id,
            job_id: task.job_id,
            node_id: report.node_id.clone(),
            attempt: task.attempt,
        });
        Some(reply)
    }

    /// The tasks DONE and their attempts ended, in one statement each.
    async fn write(&self, tx: &Tx<'_>, now: Timestamp) -> R<()> {
        if self.seq.is_empty() {
            return Ok(());
        }
        // The two statements go out together (pipelined): one round trip.
        let (task_params, attempt_params): (Params<'_>, Params<'_>) = (
            &[
                &now,
                &self.seq,
                &self.runtime_ms,
                &self.iter,
                &self.fopt,
                &self.result_json,
                &self.output,
            ],
            &[&now, &self.seq, &self.attempt, &self.outcome],
        );
        let tasks = exec(
            &**tx,
            "UPDATE tasks t SET status = 'DONE', lease_expires_at = NULL, finished_at = $1,
                 runtime_ms = u.runtime_ms, iter = u.iter, fopt = u.fopt,
                 result_json = u.result_json, output = u.output, updated_at = $1
             FROM unnest($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::FLOAT8[], $6::TEXT[],
                 $7::TEXT[]) AS u (seq, runtime_ms, iter, fopt, result_json, output)
             WHERE t.seq = u.seq",
            task_params,
        );
        let attempts = exec(
            &**tx,
            "UPDATE task_attempts a SET outcome = u.outcome, ended_at = $1, error = NULL
             FROM unnest($2::BIGINT[], $3::BIGINT[], $4::TEXT[]) AS u (seq, attempt, outcome)
             WHERE a.task_seq = u.seq AND a.attempt = u.attempt",
            attempt_params,
        );
        tokio::try_join!(tasks, attempts)?;
        Ok(())
    }
}

/// The rows a claim writes for tasks taken from never-claimed remainders, column by column
/// (one `INSERT ... SELECT FROM unnest(...)` writes them all).
#[derive(Default)]
struct FreshRows<'a> {
    node: Vec<&'a str>,
    id: Vec<String>,
    job_id: Vec<String>,
    job_seq: Vec<i64>,
    idx: Vec<i64>,
    priority: Vec<i64>,
    payload: Vec<String>,
    attempt: Vec<i64>,
    max_attempts: Vec<i64>,
    timeout_ms: Vec<i64>,
    lease: Vec<Timestamp>,
    created_at: Vec<Timestamp>,
}

/// The stored NEW tasks a claim takes, column by column.
#[derive(Default)]
struct TakenRows<'a> {
    node: Vec<&'a str>,
    seq: Vec<i64>,
    attempt: Vec<i64>,
    lease: Vec<Timestamp>,
}

/// Completes by compare and set, in one round trip: each complete in `reports` is applied on
/// the condition that its reporter holds the task's current attempt (the task RUNNING,
/// assigned to the reporter, at the attempt it names, if it names one: `holds_current`),
/// which the statement that writes it checks, with the decision the core gives that case
/// ([`lifecycle::complete_by_holder`]). The tasks, their attempt records and their jobs'
/// counts and status change in that one statement; the status is `drover_job_status`, the
/// schema's statement of the core's rule (`schema.rs`). Answers the outcome of each report
/// applied and `None` for each left (not a complete, its condition not met, or the write
/// failed): nothing of those was written, and [`report_and_claim`] decides them from their
/// rows.
pub(super) async fn complete_held_at_once(
    store: &PgStore,
    reports: &[&Report],
    now: Timestamp,
) -> Vec<Option<ReportOutcome>> {
    let mut answers = vec![None; reports.len()];
    let Decision::Apply {
        to: TaskStatus::Done,
        attempt_outcome,
        reply,
    } = lifecycle::complete_by_holder()
    else {
        return answers;
    };
    let mut c = HeldCompletes::default();
    for (i, report) in reports.iter().enumerate() {
        let ReportKind::Complete(result) = &report.kind else {
            continue;
        };
        c.ord.push(i as i64);
        c.id.push(&report.task_id);
        c.node.push(&report.node_id);
        c.attempt.push(report.attempt.map(i64::from));
        c.runtime_ms.push(result.runtime_ms);
        c.iter.push(result.iter);
        c.fopt.push(result.fopt);
        c.result_json.push(result.result_json.as_deref());
        c.output.push(result.output.as_deref());
    }
    if c.ord.is_empty() {
        return answers;
    }
    let finished: Vec<&str> = (JobStatus::ALL.iter())
        .filter(|s| s.is_finished())
        .map(|s| s.as_str())
        .collect();
    let now = at(now);
    // The tasks are found by id. The status condition is written so that it cannot select
    // the partial index of running tasks instead: on a generic plan that index looks as small
    // as one row, and walking it (dead entries included) made this statement ten times slower.
    let written = write_at_once!(store, |tx| {
        let done = all(
            &*tx,
            "WITH u AS (
                 SELECT * FROM unnest($3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                     $7::BIGINT[], $8::BIGINT[], $9::FLOAT8[], $10::TEXT[], $11::TEXT[])
                     AS u (ord, id, node, attempt, runtime_ms, iter, fopt, result_json, output)),
             done AS (
                 UPDATE tasks t SET status = 'DONE', lease_expires_at = NULL, finished_at = $1,
                     runtime_ms = u.runtime_ms, iter = u.iter, fopt = u.fopt,
                     result_json = u.result_json, output = u.output, updated_at = $1
                 FROM u
                 WHERE t.id = u.id AND (t.status = 'RUNNING') IS TRUE AND t.assigned_to = u.node
                     AND (u.attempt IS NULL OR t.attempt = u.attempt)
                 RETURNING u.ord, t.seq, t.job_id, t.job_seq, t.attempt, t.id),
             head AS (
                 UPDATE journal_head SET seq = seq + 1
                 WHERE id = 1 AND EXISTS (SELECT 1 FROM done) RETURNING seq),
             journaled AS (
                 INSERT INTO journal (seq, at, kind, data)
                 SELECT head.seq, $1, 'task_completed',
                     (SELECT json_agg(json_build_object('t', 'task', 'task', d.id,
                          'job', d.job_id, 'to', 'DONE', 'attempt', d.attempt) ORDER BY d.ord)
                      FROM done d)::TEXT
                 FROM head),
             ended AS (
                 UPDATE task_attempts a SET outcome = $2, ended_at = $1, error = NULL
                 FROM done d WHERE a.task_seq = d.seq AND a.attempt = d.attempt),
             settled AS (
                 UPDATE jobs j SET running_tasks = j.running_tasks - c.n,
                     completed_tasks = j.completed_tasks + c.n,
                     status = drover_job_status(j.total_tasks, j.new_tasks,
                         j.running_tasks - c.n, j.completed_tasks + c.n, j.failed_tasks,
                         j.cancelled_tasks, j.cancelled, j.started_at IS NOT NULL),
                     updated_at = $1,
                     finished_at = CASE WHEN drover_job_status(j.total_tasks, j.new_tasks,
                         j.running_tasks - c.n, j.completed_tasks + c.n, j.failed_tasks,
                         j.cancelled_tasks, j.cancelled, j.started_at IS NOT NULL) = ANY($12)
                         THEN COALESCE(j.finished_at, $1) ELSE NULL END
                 FROM (SELECT job_seq, count(*) AS n FROM done GROUP BY job_seq) c
                 WHERE j.seq = c.job_seq)
             SELECT ord, job_id, attempt FROM done",
            &[
                &now,
                &attempt_outcome.as_str(),
                &c.ord,
                &c.id,
                &c.node,
                &c.attempt,
                &c.runtime_ms,
                &c.iter,
                &c.fopt,
                &c.result_json,
                &c.output,
                &finished,
            ],
        )
        .await?;
        let mut applied = Vec::with_capacity(done.len());
        for r in &done {
            let ord: i64 = rows::get(r, 0)?;
            let report = usize::try_from(ord)
                .ok()
                .and_then(|i| reports.get(i).map(|report| (i, report)))
                .ok_or_else(|| StoreError::Internal(format!("no report {ord} was sent")))?;
            let attempt: i64 = rows::get(r, 2)?;
            tx.emit(Event::TaskCompleted {
                task_id: report.1.task_id.clone(),
                job_id: rows::get(r, 1)?,
                node_id: report.1.node_id.clone(),
                attempt: u32::try_from(attempt).unwrap_or(0),
            });
            applied.push(report.0);
        }
        Ok(applied)
    });
    match written {
        Ok(applied) => {
            for i in applied {
                answers[i] = Some(reply);
            }
        }
        // Nothing was written (or, if the commit's answer was lost, the careful path finds
        // the reports already applied and answers them as repeats).
        Err(e) => {
            tracing::debug!(error = %e.into_store(), "completes by compare and set left to the careful path")
        }
    }
    answers
}

/// The completes [`complete_held_at_once`] sends, column by column.
#[derive(Default)]
struct HeldCompletes<'a> {
    ord: Vec<i64>,
    id: Vec<&'a str>,
    node: Vec<&'a str>,
    attempt: Vec<Option<i64>>,
    runtime_ms: Vec<Option<i64>>,
    iter: Vec<Option<i64>>,
    fopt: Vec<Option<f64>>,
    result_json: Vec<Option<&'a str>>,
    output: Vec<Option<&'a str>>,
}

/// Takes the stored NEW task `t` for `node_id` (its row locked by the caller): its next
/// attempt and lease as `lifecycle::claim_grant` gives them, counted in `deltas` and added to
/// `taken`, which [`write_taken`] writes with the call's other claims. The task's fields move
/// out into the answer; its event is the caller's ([`claimed_event`]).
fn take_stored<'a>(
    t: &mut rows::Claimable,
    node_id: &'a str,
    now: Timestamp,
    taken: &mut TakenRows<'a>,
    deltas: &mut Deltas,
) -> ClaimedTask {
    // A negative timeout can only come from a hand edit; it leases for no time.
    let timeout = Duration::from_millis(u64::try_from(t.timeout_ms).unwrap_or(0));
    let grant = lifecycle::claim_grant(t.attempt, timeout, now);
    let lease = at(grant.lease_expires_at);
    taken.seq.push(t.seq);
    taken.node.push(node_id);
    taken.attempt.push(i64::from(grant.attempt));
    taken.lease.push(lease);
    let delta = deltas.of(&t.job_id);
    delta.moved(TaskStatus::New, TaskStatus::Running);
    delta.claimed = true;
    ClaimedTask {
        id: std::mem::take(&mut t.id),
        job_id: std::mem::take(&mut t.job_id),
        attempt: grant.attempt,
        payload: std::mem::take(&mut t.payload),
        lease_expires_at: lease,
    }
}

/// Writes the stored tasks a call took ([`take_stored`]): each task RUNNING and its new
/// attempt's record, in one statement.
async fn write_taken(tx: &Tx<'_>, taken: &TakenRows<'_>, now: Timestamp) -> R<()> {
    if taken.seq.is_empty() {
        return Ok(());
    }
    exec(
        &**tx,
        "WITH taken AS (
             UPDATE tasks t SET status = 'RUNNING', attempt = u.attempt, assigned_to = u.node,
                 started_at = $2, lease_expires_at = u.lease, updated_at = $2
             FROM unnest($3::BIGINT[], $4::BIGINT[], $5::TIMESTAMPTZ[], $1::TEXT[])
                 AS u (seq, attempt, lease, node)
             WHERE t.seq = u.seq
             RETURNING t.seq, t.attempt, t.id, t.assigned_to)
         INSERT INTO task_attempts (task_seq, attempt, task_id, node_id, started_at, outcome)
         SELECT seq, attempt, id, assigned_to, $2, 'RUNNING' FROM taken",
        &[&taken.node, &now, &taken.seq, &taken.attempt, &taken.lease],
    )
    .await
    .map(drop)
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

/// A task by id, with or without its row, as [`JobStore::get_task`] answers it.
async fn task_by_id<C: GenericClient>(c: &C, sweeps: &SweepCache, id: &str) -> R<Task> {
    let found = row_opt(
        c,
        &format!("SELECT {} FROM tasks WHERE id = $1", rows::TASK_COLUMNS),
        &[&id],
    )
    .await?;
    if let Some(r) = found {
        return rows::task(&r);
    }
    let (job, index) = unclaimed_by_id(c, id)
        .await?
        .ok_or_else(|| StoreError::not_found("task", id))?;
    let payload = sweep_of(sweeps, c, &job).await?.payload(index);
    Ok(common::unclaimed_task(&job, payload, index))
}

/// The tasks of `ids` that exist, in that order: the stored ones in one statement, the rest
/// (tasks of a sweep never claimed) one by one.
async fn tasks_by_id<C: GenericClient>(c: &C, sweeps: &SweepCache, ids: &[String]) -> R<Vec<Task>> {
    let mut stored: std::collections::HashMap<String, Task> = all(
        c,
        &format!(
            "SELECT {} FROM tasks WHERE id = ANY($1)",
            rows::TASK_COLUMNS
        ),
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| rows::task(r).map(|t| (t.id.clone(), t)))
    .collect::<R<_>>()?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(task) = stored.remove(id) {
            found.push(task);
            continue;
        }
        if let Some((job, index)) = unclaimed_by_id(c, id).await? {
            let payload = sweep_of(sweeps, c, &job).await?.payload(index);
            found.push(common::unclaimed_task(&job, payload, index));
        }
    }
    Ok(found)
}

/// What a claim of one named task found: its row (locked), or the job and index of a task of
/// a sweep that has none yet.
enum Named {
    Row {
        task: rows::Claimable,
        status: TaskStatus,
        holder: Option<String>,
    },
    Unclaimed(Unclaimed, u64),
}

/// Claims the one task `task_id` for `node_id` ([`JobStore::claim_task`]). The rows are locked
/// in the order of [`JobStore::claim`]: the node (here for update, so that two claims of
/// named tasks for one node are counted one after the other against its cap), the task, then
/// its job; `lifecycle::decide_task_claim` decides, and a claim is written as `claim` writes
/// one (the same statements), the job settled once.
async fn claim_named(
    tx: &Tx<'_>,
    sweeps: &SweepCache,
    task_id: &str,
    node_id: &str,
    max_running: Option<u32>,
    now: Timestamp,
) -> R<TaskClaim> {
    let node_status = super::nodes::locked_status(tx, node_id)
        .await?
        .ok_or_else(|| StoreError::not_found("spot", node_id))?;
    let locked_row = format!(
        "SELECT {}, status, assigned_to FROM tasks WHERE id = $1 FOR UPDATE",
        rows::CLAIMABLE_COLUMNS
    );
    let mut found = row_opt(&**tx, &locked_row, &[&task_id]).await?;
    let mut unclaimed = None;
    if found.is_none() {
        unclaimed = unclaimed_by_id(&**tx, task_id).await?;
        if unclaimed.is_none() {
            // Its job counts it among the tasks with rows now: a claim made its row after the
            // first look (rows are never removed), so a second look finds it.
            found = row_opt(&**tx, &locked_row, &[&task_id]).await?;
        }
    }
    let named = match (found, unclaimed) {
        (Some(r), _) => Named::Row {
            task: rows::claimable(&r)?,
            status: rows::status(&r, 9)?,
            holder: rows::get(&r, 10)?,
        },
        (None, Some((job, index))) => Named::Unclaimed(job, index),
        (None, None) => return Err(StoreError::not_found("task", task_id).into()),
    };
    // A task without a row is NEW (CANCELLED with its job) and held by nobody.
    let (status, holder, attempt) = match &named {
        Named::Row {
            task,
            status,
            holder,
        } => (*status, holder.as_deref(), task.attempt),
        Named::Unclaimed(job, _) => (job.status(), None, 0),
    };
    // Counted only when there is a cap: without one the count decides nothing.
    let running = match max_running {
        None => 0,
        Some(_) => rows::small(
            &row(
                &**tx,
                "SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND assigned_to = $1",
                &[&node_id],
            )
            .await?,
            0,
        )?,
    };
    match lifecycle::decide_task_claim(status, holder, node_id, node_status, running, max_running) {
        TaskClaimDecision::NodeDown => {
            return Err(StoreError::NodeDown(node_id.to_string()).into());
        }
        TaskClaimDecision::Draining => return Ok(TaskClaim::Draining),
        TaskClaimDecision::AtCapacity => return Ok(TaskClaim::AtCapacity { running }),
        TaskClaimDecision::AlreadyHeld => return Ok(TaskClaim::AlreadyHeld { attempt }),
        TaskClaimDecision::Unavailable => {
            let task = task_by_id(&**tx, sweeps, task_id).await?;
            return Ok(TaskClaim::Unavailable(Box::new(task)));
        }
        TaskClaimDecision::Claim => {}
    }
    let now = at(now);
    let mut settlement = Settlement::default();
    let mut task = match named {
        Named::Row { task, .. } => task,
        Named::Unclaimed(job, index) => {
            // The job's row, locked, says again whether the task still has no row: the claim
            // makes it from the job's `materialised`, which only the holder of that lock moves.
            let locked = row(
                &**tx,
                &format!(
                    "SELECT {}, {} FROM jobs WHERE seq = $1 FOR UPDATE",
                    rows::UNCLAIMED_COLUMNS,
                    rows::STORED_JOB_COLUMNS
                ),
                &[&job.seq],
            )
            .await?;
            let job = rows::unclaimed(&locked)?;
            if index < job.materialised || job.cancelled {
                // A claim made its row, or a cancel took it, since it was read unlocked.
                // Locking the task's row now, under its job's lock, would lock the two in the
                // order reports do not: the write runs again from the start instead, and finds
                // the task as it now is.
                return Err(PgErr::Conflict(format!(
                    "task {task_id} changed while its claim looked"
                )));
            }
            settlement
                .read
                .insert(job.job_id.clone(), rows::stored_job(&locked, 10)?);
            // A job's rows are always its first tasks by index, so the rows of the tasks
            // before this one that have none are made with it, NEW as they were.
            let sweep = sweep_of(sweeps, &**tx, &job).await?;
            insert_new_rows(tx, &job, &sweep, job.materialised..index + 1, now).await?;
            settlement.deltas.of(&job.job_id).materialised += index + 1 - job.materialised;
            let made = row(
                &**tx,
                &format!(
                    "SELECT {} FROM tasks WHERE id = $1",
                    rows::CLAIMABLE_COLUMNS
                ),
                &[&task_id],
            )
            .await?;
            rows::claimable(&made)?
        }
    };
    let mut taken = TakenRows::default();
    let claimed = take_stored(&mut task, node_id, now, &mut taken, &mut settlement.deltas);
    claimed_event(tx, &claimed, node_id);
    write_taken(tx, &taken, now).await?;
    settle_jobs(tx, settlement, now).await?;
    Ok(TaskClaim::Claimed(claimed))
}

/// Reports, then claims, in one transaction: a group's calls (`group.rs`), or one large call
/// alone. The reports are decided and written while the claims' first reads go out with them
/// (pipelined); the claims decide after, and every touched job is settled once at the end:
/// the claims lock the reports' jobs with their own, in id order, and settle them all. The
/// answers come in the order of `reports` and of `claims`.
pub(super) async fn report_and_claim(
    tx: &Tx<'_>,
    sweeps: &SweepCache,
    reports: &[Report],
    claims: &[(&str, u32)],
    now: Timestamp,
) -> R<(
    Vec<ReportOutcome>,
    Vec<std::result::Result<Vec<ClaimedTask>, StoreError>>,
)> {
    on_generic_plans(tx, async {
        let mut settlement = Settlement::default();
        let reported = async {
            if reports.is_empty() {
                return Ok(Vec::new());
            }
            report_in(tx, reports, now, &mut settlement).await
        };
        let read = async {
            if claims.is_empty() {
                return Ok(None);
            }
            claim_reads(tx, claims).await.map(Some)
        };
        let (outcomes, read) = tokio::try_join!(reported, read)?;
        let claimed = match read {
            Some(read) => claim_for(tx, sweeps, claims, read, now, settlement).await?,
            None => {
                settle_jobs(tx, settlement, now).await?;
                Vec::new()
            }
        };
        Ok((outcomes, claimed))
    })
    .await
}

/// What a claim reads first, before it decides anything ([`claim_reads`]).
struct ClaimReads {
    nodes: Vec<tokio_postgres::Row>,
    stored: Vec<tokio_postgres::Row>,
    seen: Vec<tokio_postgres::Row>,
}

/// The first reads of a claim for `wants`: the spots' statuses, the best stored NEW tasks and
/// the jobs with never-claimed remainders, sent together (pipelined on the connection: one
/// round trip; a group sends them with its reports' first statement). The spots are read
/// shared, so a reaper marking one DOWN waits for this claim and this claim sees a DOWN it
/// committed. The best `asked` of each source is enough: the merge takes at most that many.
/// Stored tasks another claim is taking right now are skipped, not waited for; the
/// remainders' jobs are read without a lock. Rows locked for a spot that turns out unable to
/// claim stay NEW and are freed at the commit.
async fn claim_reads(tx: &Tx<'_>, wants: &[(&str, u32)]) -> R<ClaimReads> {
    let ids: Vec<&str> = wants.iter().map(|(id, _)| *id).collect();
    let asked: i64 = wants.iter().map(|(_, n)| i64::from(*n)).sum();
    let stored_sql = format!(
        "SELECT {} FROM tasks WHERE status = 'NEW'
         ORDER BY priority DESC, job_seq, idx LIMIT $1 FOR UPDATE SKIP LOCKED",
        rows::CLAIMABLE_COLUMNS
    );
    let seen_sql = format!(
        "SELECT {} FROM jobs WHERE materialised < total_tasks AND NOT cancelled
         ORDER BY priority DESC, seq LIMIT $1",
        rows::UNCLAIMED_COLUMNS
    );
    let (by_id, by_limit): (Params<'_>, Params<'_>) = (&[&ids], &[&asked]);
    let (nodes, stored, seen) = tokio::try_join!(
        all(
            &**tx,
            "SELECT id, status FROM nodes WHERE id = ANY($1) ORDER BY id FOR SHARE",
            by_id,
        ),
        all(&**tx, &stored_sql, by_limit),
        all(&**tx, &seen_sql, by_limit)
    )?;
    Ok(ClaimReads {
        nodes,
        stored,
        seen,
    })
}

/// Claims for several spots at once (a group's claims), in one pass, from the first reads
/// [`claim_reads`] made for the same `wants`: each spot's access is checked, the best tasks
/// for all of them are picked together, and handed out in the order
/// asked, each spot up to its `max`. A spot that is unknown or DOWN gets its error and takes
/// nothing; the others go on. The answers come in the order of `wants`. The claim is the
/// last part of its transaction: it settles `settlement` (what the write has changed before
/// it, such as a group's reports) with its own changes, locking the jobs touched there with
/// its own, in one id-ordered statement.
async fn claim_for(
    tx: &Tx<'_>,
    sweeps: &SweepCache,
    wants: &[(&str, u32)],
    read: ClaimReads,
    now: Timestamp,
    mut settlement: Settlement,
) -> R<Vec<std::result::Result<Vec<ClaimedTask>, StoreError>>> {
    let ClaimReads {
        nodes,
        stored,
        seen,
    } = read;
    let mut statuses = std::collections::HashMap::new();
    for r in nodes {
        let id: String = r.get(0);
        statuses.insert(id, rows::status::<NodeStatus>(&r, 1)?);
    }
    let mut answers: Vec<std::result::Result<Vec<ClaimedTask>, StoreError>> = Vec::new();
    // Which spot takes the picks, in order: (answer index, how many).
    let mut takers: Vec<(usize, usize)> = Vec::new();
    for (i, (node_id, max)) in wants.iter().enumerate() {
        let Some(status) = statuses.get(*node_id) else {
            answers.push(Err(StoreError::not_found("spot", node_id)));
            continue;
        };
        answers.push(Ok(Vec::new()));
        match lifecycle::claim_access(*status) {
            ClaimAccess::NodeDown => answers[i] = Err(StoreError::NodeDown(node_id.to_string())),
            ClaimAccess::Nothing => {}
            ClaimAccess::Claim => takers.push((i, *max as usize)),
        }
    }
    let max: u32 = takers.iter().map(|(_, n)| *n as u32).sum();
    if max == 0 {
        settle_jobs(tx, settlement, now).await?;
        return Ok(answers);
    }
    // The spot each pick goes to, in pick order.
    let owner: Vec<usize> = takers
        .iter()
        .flat_map(|(i, n)| std::iter::repeat_n(*i, *n))
        .collect();
    let mut stored = stored.iter().map(rows::claimable).collect::<R<Vec<_>>>()?;
    let seen = seen.iter().map(rows::unclaimed).collect::<R<Vec<_>>>()?;
    let keys: Vec<_> = stored.iter().map(|t| t.key).collect();
    let remainders: Vec<_> = seen.iter().map(Unclaimed::remainder).collect();
    let mut touched: Vec<i64> = keys.iter().map(|k| k.job_order).collect();
    for pick in lifecycle::merge_claims(&keys, &remainders, max as usize) {
        if let ClaimPick::Fresh { remainder, .. } = pick {
            touched.push(seen[remainder].seq);
        }
    }
    // ...then every job the claim may touch is locked, with those the write has touched
    // already, in id order: the order in which every write settles jobs, so that a claim and
    // a report never each hold a job the other waits for. Their counts are read for the
    // settling. A remainder's rows are numbered from its `materialised`, which only the
    // holder of the job's row may move: it is read again under the lock, and the claim is
    // decided from what the lock shows (another claim may have taken part of a remainder
    // meanwhile).
    touched.sort_unstable();
    touched.dedup();
    let also = settlement.unread();
    let mut unclaimed = Vec::new();
    for r in all(
        &**tx,
        &format!(
            "SELECT {}, {} FROM jobs WHERE seq = ANY($1) OR id = ANY($2) ORDER BY id FOR UPDATE",
            rows::UNCLAIMED_COLUMNS,
            rows::STORED_JOB_COLUMNS
        ),
        &[&touched, &also],
    )
    .await?
    {
        let job = rows::unclaimed(&r)?;
        settlement
            .read
            .insert(job.job_id.clone(), rows::stored_job(&r, 10)?);
        if touched.binary_search(&job.seq).is_ok() && job.materialised < job.total && !job.cancelled
        {
            unclaimed.push(job);
        }
    }
    unclaimed.sort_by_key(|j| j.remainder().first);
    let remainders: Vec<_> = unclaimed.iter().map(Unclaimed::remainder).collect();
    let picks = lifecycle::merge_claims(&keys, &remainders, max as usize);

    let now = at(now);
    let deltas = &mut settlement.deltas;
    let mut taken = TakenRows::default();
    let mut fresh = FreshRows::default();
    let mut sweeps_of: Vec<Option<(Arc<Sweep>, lifecycle::ClaimGrant)>> = Vec::new();
    sweeps_of.resize_with(unclaimed.len(), || None);
    for (k, pick) in picks.into_iter().enumerate() {
        let taker = owner[k];
        let node_id = wants[taker].0;
        let task = match pick {
            ClaimPick::Row(i) => take_stored(&mut stored[i], node_id, now, &mut taken, deltas),
            ClaimPick::Fresh { remainder, index } => {
                let job = &unclaimed[remainder];
                let (sweep, grant) = match &sweeps_of[remainder] {
                    Some(made) => made.clone(),
                    None => {
                        let timeout =
                            Duration::from_millis(u64::try_from(job.timeout_ms).unwrap_or(0));
                        // Never claimed: no attempt made yet.
                        let made = (
                            sweep_of(sweeps, &**tx, job).await?,
                            lifecycle::claim_grant(0, timeout, now),
                        );
                        sweeps_of[remainder] = Some(made.clone());
                        made
                    }
                };
                let id = ids::sweep_task_id(&job.job_id, index);
                let payload = serde_json::Value::Object(sweep.payload(index)).to_string();
                let lease = at(grant.lease_expires_at);
                fresh.id.push(id.clone());
                fresh.node.push(node_id);
                fresh.job_id.push(job.job_id.clone());
                fresh.job_seq.push(job.seq);
                fresh.idx.push(index as i64);
                fresh.priority.push(job.priority);
                fresh.payload.push(payload.clone());
                fresh.attempt.push(i64::from(grant.attempt));
                fresh.max_attempts.push(i64::from(job.max_attempts));
                fresh.timeout_ms.push(job.timeout_ms);
                fresh.lease.push(lease);
                fresh.created_at.push(job.created_at);
                let delta = deltas.of(&job.job_id);
                delta.moved(TaskStatus::New, TaskStatus::Running);
                delta.materialised += 1;
                delta.claimed = true;
                ClaimedTask {
                    id,
                    job_id: job.job_id.clone(),
                    attempt: grant.attempt,
                    payload,
                    lease_expires_at: lease,
                }
            }
        };
        claimed_event(tx, &task, node_id);
        if let Some(Ok(tasks)) = answers.get_mut(taker) {
            tasks.push(task);
        }
    }
    // The rows the claim writes and the settling of every job the write touched go out
    // together (pipelined): the job rows are already locked and read, so the settling is one
    // statement, and the jobs' locks are held for one round trip less before the commit.
    let taken_written = write_taken(tx, &taken, now);
    let fresh_written = async {
        if fresh.id.is_empty() {
            return Ok(());
        }
        // Each fresh task's row and its first attempt's record, in one statement.
        let f = &fresh;
        exec(
            &**tx,
            "WITH made AS (
                 INSERT INTO tasks (id, job_id, job_seq, idx, priority, payload, status, attempt,
                     max_attempts, timeout_ms, assigned_to, started_at, lease_expires_at,
                     created_at, updated_at)
                 SELECT u.id, u.job_id, u.job_seq, u.idx, u.priority, u.payload, 'RUNNING',
                     u.attempt, u.max_attempts, u.timeout_ms, u.node, $2, u.lease, u.created_at, $2
                 FROM unnest($3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[],
                     $8::TEXT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::TIMESTAMPTZ[],
                     $13::TIMESTAMPTZ[], $1::TEXT[])
                     AS u (id, job_id, job_seq, idx, priority, payload, attempt, max_attempts,
                           timeout_ms, lease, created_at, node)
                 RETURNING seq, attempt, id, assigned_to)
             INSERT INTO task_attempts (task_seq, attempt, task_id, node_id, started_at, outcome)
             SELECT seq, attempt, id, assigned_to, $2, 'RUNNING' FROM made",
            &[
                &f.node,
                &now,
                &f.id,
                &f.job_id,
                &f.job_seq,
                &f.idx,
                &f.priority,
                &f.payload,
                &f.attempt,
                &f.max_attempts,
                &f.timeout_ms,
                &f.lease,
                &f.created_at,
            ],
        )
        .await
        .map(drop)
    };
    tokio::try_join!(
        taken_written,
        fresh_written,
        settle_jobs(tx, settlement, now)
    )?;
    Ok(answers)
}

/// A batch of reports inside a transaction of the caller's (a group's), each decided on its
/// own; the answers in the reports' order. The jobs' counts move in `settlement`, which the
/// caller settles.
async fn report_in(
    tx: &Tx<'_>,
    reports: &[Report],
    now: Timestamp,
    settlement: &mut Settlement,
) -> R<Vec<ReportOutcome>> {
    let now = at(now);
    // The batch's task rows, locked in id order before any is decided: two batches
    // about the same tasks in different orders (an agent's retry reaching another
    // replica) then queue instead of deadlocking, which PostgreSQL would take a second
    // to notice.
    let ids: Vec<&str> = reports.iter().map(|r| r.task_id.as_str()).collect();
    let heads = all(
        &**tx,
        &format!(
            "SELECT {} FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            rows::TASK_HEAD_COLUMNS
        ),
        &[&ids],
    )
    .await?;
    // The common case, a batch of completes by the tasks' holders, is decided from
    // these rows and written in two statements; every other report (a fail, a late or
    // repeated report, a task without a row yet) takes the one-by-one path. A batch
    // naming a task twice takes it whole, so each report sees the one before.
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut heads: std::collections::HashMap<String, TaskHead> = if distinct.len() == ids.len() {
        heads
            .iter()
            .map(|r| rows::task_head(r).map(|h| (h.id.clone(), h)))
            .collect::<R<_>>()?
    } else {
        Default::default()
    };
    let mut outcomes = Vec::with_capacity(reports.len());
    let deltas = &mut settlement.deltas;
    let mut done = Completions::default();
    for report in reports {
        let head = heads.remove(&report.task_id);
        let outcome = match head {
            Some(task) => done.complete_held(tx, task, report, deltas),
            None => None,
        };
        outcomes.push(match outcome {
            Some(outcome) => outcome,
            None => apply_report(tx, report, now, deltas).await?,
        });
    }
    done.write(tx, now).await?;
    Ok(outcomes)
}

/// Creates job `id` and, for an explicit task list or when `every_row` says so, every task's
/// row (NEW); a sweep of parameters is otherwise kept as its spec alone, its tasks getting rows
/// as they are claimed. Shared by [`JobStore::create_job`] and the dispatch outbox
/// (`dispatch.rs`), whose rows refer to every task's row.
pub(super) async fn create_job(
    tx: &Tx<'_>,
    id: &str,
    job: &NewJob,
    sweep: &Sweep,
    now: Timestamp,
    every_row: bool,
) -> R<Job> {
    let internal = |e: serde_json::Error| StoreError::Internal(e.to_string());
    let total = sweep.len() as i64;
    let parameters = serde_json::to_string(&sweep.parameter_names()).map_err(internal)?;
    let timeout_ms = job.task_timeout.as_millis() as i64;
    let spec = sweep
        .spec_json()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let run = job
        .run
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(internal)?;
    // A sweep of parameters is kept as its spec alone: its tasks get rows as they are claimed.
    // An explicit task list already sits whole in the spec, so its rows are written now.
    let materialised = if sweep.is_listed() || every_row {
        total
    } else {
        0
    };
    let max_attempts = i64::from(job.max_attempts);
    let job_seq: i64 = rows::get(
        &row(
            &**tx,
            "INSERT INTO jobs (id, name, priority, max_attempts, task_timeout_ms, spec,
                 parameters, status, total_tasks, new_tasks, created_at, updated_at, run,
                 materialised, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $8, $9, $9, $10, $11, $12)
             RETURNING seq",
            &[
                &id,
                &job.name,
                &job.priority,
                &max_attempts,
                &timeout_ms,
                &spec,
                &parameters,
                &total,
                &now,
                &run,
                &materialised,
                &job.origin,
            ],
        )
        .await?,
        0,
    )?;
    let made = Unclaimed {
        seq: job_seq,
        job_id: id.to_string(),
        priority: job.priority,
        materialised: 0,
        total: total as u64,
        cancelled: false,
        max_attempts: job.max_attempts,
        timeout_ms,
        created_at: now,
        finished_at: None,
    };
    insert_new_rows(tx, &made, sweep, 0..materialised as u64, now).await?;
    tx.emit(Event::JobCreated {
        job_id: id.to_string(),
        total_tasks: total as u64,
    });
    // As it reads back, without reading it (`now` is already as PostgreSQL keeps it).
    Ok(common::created_job(job_seq, id, job, sweep, now)?)
}

/// Writes the rows of `job`'s tasks `range`, NEW, with the payloads its sweep builds, in one
/// statement. The caller makes sure they are the job's next tasks by index (rows are always a
/// job's first tasks), holding the job's row, and counts them in `materialised`; their status
/// was NEW without rows too, so no count moves.
async fn insert_new_rows(
    tx: &Tx<'_>,
    job: &Unclaimed,
    sweep: &Sweep,
    range: std::ops::Range<u64>,
    now: Timestamp,
) -> R<()> {
    if range.is_empty() {
        return Ok(());
    }
    let indexes: Vec<i64> = range.clone().map(|i| i as i64).collect();
    let task_ids: Vec<String> = range
        .clone()
        .map(|i| ids::sweep_task_id(&job.job_id, i))
        .collect();
    let payloads: Vec<String> = range
        .map(|i| serde_json::Value::Object(sweep.payload(i)).to_string())
        .collect();
    exec(
        &**tx,
        "INSERT INTO tasks (id, job_id, job_seq, idx, priority, payload, status,
             max_attempts, timeout_ms, created_at, updated_at)
         SELECT u.id, $1, $2, u.idx, $3, u.payload, 'NEW', $4, $5, $6, $7
         FROM unnest($8::TEXT[], $9::BIGINT[], $10::TEXT[]) AS u (id, idx, payload)",
        &[
            &job.job_id,
            &job.seq,
            &job.priority,
            &i64::from(job.max_attempts),
            &job.timeout_ms,
            &job.created_at,
            &now,
            &task_ids,
            &indexes,
            &payloads,
        ],
    )
    .await?;
    Ok(())
}

async fn cancel_job(tx: &Tx<'_>, id: &str, now: Timestamp) -> R<Job> {
    // The job's row first: a cancel and a claim or report of the same job queue on it.
    let locked = row_opt(
        &**tx,
        "SELECT seq FROM jobs WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    if locked.is_none() {
        return Err(StoreError::not_found("job", id).into());
    }
    let job = rows::job_by_id(&**tx, id).await?;
    match lifecycle::decide_cancel(job.cancelled, job.status) {
        CancelDecision::Unchanged => return Ok(job),
        CancelDecision::Finished(status) => {
            return Err(StoreError::JobFinished {
                id: id.to_string(),
                status,
            }
            .into());
        }
        CancelDecision::Cancel => {}
    }
    exec(
        &**tx,
        "UPDATE task_attempts SET outcome = 'CANCELLED', ended_at = $2
         WHERE outcome = 'RUNNING' AND task_seq IN
             (SELECT seq FROM tasks WHERE job_seq = $1 AND status = 'RUNNING')",
        &[&job.seq, &now],
    )
    .await?;
    // The rows it cancels are counted by status as they change; so are the tasks without
    // rows, cancelled with the job.
    let moved = all(
        &**tx,
        "WITH cancelled AS (
             UPDATE tasks t SET status = 'CANCELLED', lease_expires_at = NULL,
                 finished_at = $2, updated_at = $2
             FROM (SELECT seq, status FROM tasks
                   WHERE job_seq = $1 AND status IN ('NEW', 'RUNNING') FOR UPDATE) o
             WHERE t.seq = o.seq
             RETURNING o.status)
         SELECT status, count(*) FROM cancelled GROUP BY status",
        &[&job.seq, &now],
    )
    .await?;
    let unclaimed: i64 = rows::get(
        &row(
            &**tx,
            "UPDATE jobs SET cancelled = true WHERE id = $1 RETURNING total_tasks - materialised",
            &[&id],
        )
        .await?,
        0,
    )?;
    let mut deltas = Deltas::default();
    let delta = deltas.of(id);
    delta.new -= unclaimed;
    delta.cancelled += unclaimed;
    for r in &moved {
        let from: TaskStatus = rows::status(r, 0)?;
        let n: i64 = rows::get(r, 1)?;
        *match from {
            TaskStatus::New => &mut delta.new,
            _ => &mut delta.running,
        } -= n;
        delta.cancelled += n;
    }
    settle_jobs(tx, Settlement::of(deltas), now).await?;
    tx.emit(Event::JobCancelled {
        job_id: id.to_string(),
    });
    rows::job_by_id(&**tx, id).await
}

#[async_trait]
impl JobStore for PgStore {
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        let id = job.id.clone().unwrap_or_else(ids::job_id);
        let now = at(now);
        write_tx!(self, |tx| create_job(&tx, &id, &job, &sweep, now, false)
            .await)
    }

    async fn get_job(&self, id: &str) -> Result<Job> {
        read!(self, |conn| rows::job_by_id(&conn, id).await)
    }

    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>> {
        read!(self, |conn| async {
            let items = all(
                &conn,
                &format!(
                    "SELECT {} FROM jobs
                     WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::BIGINT IS NULL OR seq < $2)
                     ORDER BY seq DESC LIMIT $3",
                    rows::JOB_COLUMNS
                ),
                &[
                    &status.map(|s| s.as_str()),
                    &page.cursor,
                    &(page.limit as i64 + 1),
                ],
            )
            .await?
            .iter()
            .map(rows::job)
            .collect::<R<Vec<_>>>()?;
            Ok(common::paged(items, page.limit, |j| j.seq))
        }
        .await)
    }

    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job> {
        let now = at(now);
        write_tx!(self, |tx| cancel_job(&tx, id, now).await)
    }

    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>> {
        snapshot!(self, |conn| async {
            // Distinguishes "no such job" from "no tasks on this page".
            let job = rows::unclaimed_of(&conn, job_id)
                .await?
                .ok_or_else(|| StoreError::not_found("job", job_id))?;
            let after = page.cursor.unwrap_or(-1);
            let want = page.limit as usize + 1;
            let mut items = all(
                &conn,
                &format!(
                    "SELECT {} FROM tasks
                     WHERE job_seq = $1 AND idx > $2 AND ($4::TEXT IS NULL OR status = $4)
                     ORDER BY idx LIMIT $3",
                    rows::TASK_COLUMNS
                ),
                &[
                    &job.seq,
                    &after,
                    &(want as i64),
                    &status.map(|s| s.as_str()),
                ],
            )
            .await?
            .iter()
            .map(rows::task)
            .collect::<R<Vec<_>>>()?;
            // The tasks without rows follow every row (they are the job's last), all of one
            // status.
            if items.len() < want && status.is_none_or(|s| s == job.status()) {
                let first = job
                    .materialised
                    .max(u64::try_from(after.saturating_add(1)).unwrap_or(0));
                let last = job.total.min(first + (want - items.len()) as u64);
                if first < last {
                    let sweep = sweep_of(&self.sweeps, &conn, &job).await?;
                    items.extend(
                        (first..last).map(|i| common::unclaimed_task(&job, sweep.payload(i), i)),
                    );
                }
            }
            Ok(common::paged(items, page.limit, |t| t.seq))
        }
        .await)
    }

    async fn get_task(&self, id: &str) -> Result<Task> {
        snapshot!(self, |conn| task_by_id(&conn, &self.sweeps, id).await)
    }

    async fn get_tasks(&self, ids: Vec<String>) -> Result<Vec<Task>> {
        snapshot!(self, |conn| tasks_by_id(&conn, &self.sweeps, &ids).await)
    }

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        if joins_group(max as usize) {
            return self.claim_grouped(node_id, max, now).await;
        }
        let (_, mut claimed) = write_tx!(self, |tx| {
            report_and_claim(&tx, &self.sweeps, &[], &[(node_id, max)], now).await
        })?;
        match claimed.pop() {
            Some(answer) => answer,
            None => Err(StoreError::Internal("a claim got no answer".into())),
        }
    }

    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>> {
        if joins_group(reports.len()) {
            return self.report_grouped(reports, now).await;
        }
        let (outcomes, _) = write_tx!(self, |tx| {
            report_and_claim(&tx, &self.sweeps, &reports, &[], now).await
        })?;
        Ok(outcomes)
    }

    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>> {
        write_tx!(self, |tx| async {
            // Tasks a report is deciding right now are skipped: the report settles them, and
            // a lease still expired is taken back on the next pass.
            let expired = all(
                &*tx,
                &format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND lease_expires_at < $1
                     ORDER BY lease_expires_at FOR UPDATE SKIP LOCKED",
                    rows::TASK_HEAD_COLUMNS
                ),
                &[&at(now)],
            )
            .await?
            .iter()
            .map(rows::task_head)
            .collect::<R<Vec<_>>>()?;
            release_all(
                &tx,
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
            .await
        }
        .await)
    }

    async fn claim_task(
        &self,
        task_id: &str,
        node_id: &str,
        max_running: Option<u32>,
        now: Timestamp,
    ) -> Result<TaskClaim> {
        write_tx!(self, |tx| {
            claim_named(&tx, &self.sweeps, task_id, node_id, max_running, now).await
        })
    }

    async fn waiting_jobs(
        &self,
        origin: &str,
        priority: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        read!(self, |conn| async {
            all(
                &conn,
                &format!(
                    "SELECT {} FROM jobs WHERE seq IN (
                         (SELECT t.job_seq FROM tasks t JOIN jobs j ON j.seq = t.job_seq
                          WHERE t.status = 'NEW' AND t.priority = $1 AND t.job_seq > $2
                              AND j.origin = $4
                          ORDER BY t.priority DESC, t.job_seq, t.idx LIMIT $3)
                         UNION
                         (SELECT seq FROM jobs
                          WHERE materialised < total_tasks AND NOT cancelled AND priority = $1
                              AND seq > $2 AND origin = $4
                          ORDER BY priority DESC, seq LIMIT $3))
                     ORDER BY seq LIMIT $3",
                    rows::JOB_COLUMNS
                ),
                &[&priority, &after.unwrap_or(0), &i64::from(limit), &origin],
            )
            .await?
            .iter()
            .map(rows::job)
            .collect::<R<Vec<_>>>()
        }
        .await)
    }

    async fn list_jobs_of(&self, origin: &str, page: Page) -> Result<Paged<Job>> {
        read!(self, |conn| async {
            let items = all(
                &conn,
                &format!(
                    "SELECT {} FROM jobs
                     WHERE origin = $1 AND ($2::BIGINT IS NULL OR seq < $2)
                     ORDER BY seq DESC LIMIT $3",
                    rows::JOB_COLUMNS
                ),
                &[&origin, &page.cursor, &(page.limit as i64 + 1)],
            )
            .await?
            .iter()
            .map(rows::job)
            .collect::<R<Vec<_>>>()?;
            Ok(common::paged(items, page.limit, |j| j.seq))
        }
        .await)
    }

    async fn origin_counts(&self, origin: &str, since: Timestamp) -> Result<OriginCounts> {
        read!(self, |conn| async {
            let mut counts = OriginCounts::default();
            for r in all(
                &conn,
                "SELECT j.priority, t.status, count(*),
                     count(*) FILTER (WHERE t.status IN ('DONE', 'FAILED')
                         AND t.finished_at >= $2)
                 FROM jobs j JOIN tasks t ON t.job_seq = j.seq
                 WHERE j.origin = $1
                 GROUP BY j.priority, t.status",
                &[&origin, &since],
            )
            .await?
            {
                let status: String = rows::get(&r, 1)?;
                let status: TaskStatus = status
                    .parse()
                    .map_err(|_| StoreError::Internal(format!("a task status {status:?}")))?;
                counts
                    .tasks
                    .push((rows::get(&r, 0)?, status, rows::count(&r, 2)?));
                counts.finished_since += rows::count(&r, 3)?;
            }
            Ok(counts)
        }
        .await)
    }

    async fn raise_priority(
        &self,
        job_ids: Vec<String>,
        priority: i64,
        route: Option<crate::Route>,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let now = at(now);
        let (queue, message_priority) = match &route {
            Some(r) => (Some(r.queue.as_str()), Some(i16::from(r.priority))),
            None => (None, None),
        };
        write_tx!(self, |tx| {
            raise_priority_in(&tx, &job_ids, priority, queue, message_priority, now).await
        })
    }
}

/// Raises the jobs `job_ids` below `priority` to it (see [`JobStore::raise_priority`]); a
/// `queue` re-routes their open dispatch rows there, due afresh.
async fn raise_priority_in(
    tx: &Tx<'_>,
    job_ids: &[String],
    priority: i64,
    queue: Option<&str>,
    message_priority: Option<i16>,
    now: Timestamp,
) -> R<Vec<String>> {
    // Tasks before their jobs, as a claim locks them.
    let seqs: Vec<i64> = all(
        &**tx,
        "SELECT seq FROM jobs WHERE id = ANY($1) AND priority < $2 AND NOT cancelled
             AND status IN ('PENDING', 'RUNNING')",
        &[&job_ids, &priority],
    )
    .await?
    .iter()
    .map(|r| rows::get(r, 0))
    .collect::<R<_>>()?;
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let tasks: Vec<i64> = all(
        &**tx,
        "UPDATE tasks SET priority = $2
         WHERE job_seq = ANY($1) AND status IN ('NEW', 'RUNNING') RETURNING seq",
        &[&seqs, &priority],
    )
    .await?
    .iter()
    .map(|r| rows::get(r, 0))
    .collect::<R<_>>()?;
    if queue.is_some() {
        exec(
            &**tx,
            "UPDATE dispatches SET queue = $2, priority = $3, published_attempts = NULL
             WHERE open AND task_seq = ANY($1)",
            &[&tasks, &queue, &message_priority],
        )
        .await?;
    }
    let raised: Vec<String> = all(
        &**tx,
        "UPDATE jobs SET priority = $2, updated_at = $3
         WHERE seq = ANY($1) AND priority < $2 RETURNING id",
        &[&seqs, &priority, &now],
    )
    .await?
    .iter()
    .map(|r| rows::get(r, 0))
    .collect::<R<_>>()?;
    for id in &raised {
        tx.emit(Event::JobPriorityRaised {
            job_id: id.clone(),
            priority,
        });
    }
    Ok(raised)
}
