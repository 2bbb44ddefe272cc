//! Jobs, their tasks and the task lifecycle in SQLite: the [`JobStore`] implementation.
//!
//! This module holds SQL and row handling only. Each call reads the facts it needs inside its
//! transaction, asks `drover_core::lifecycle` what to do (claims, reports, cancels, releases,
//! what a task's holder becomes), writes exactly that, and records the events on the write's
//! [`Tx`]. It must not decide a lifecycle rule itself.

use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::{JobStore, NewJob, Page, Paged, Released, Report, Result, StoreError};
use async_trait::async_trait;
use drover_core::lifecycle::{
    self, AttemptRecord, CancelDecision, ClaimAccess, Decision, TaskView,
};
use drover_core::time::format as ts;
use drover_core::{
    ClaimedTask, Event, Job, JobCounts, JobStatus, NodeStatus, ReportKind, ReportOutcome, Task,
    TaskStatus, Timestamp, ids, sweep::Sweep,
};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::BTreeSet;
use std::time::Duration;

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

/// Moves a task out of RUNNING to `to` (NEW, FAILED), ending its lease and recording `error`;
/// its holder, start and finish follow the core's back-to-NEW rule.
fn move_task(tx: &Tx<'_>, seq: i64, to: TaskStatus, error: &str, now: Timestamp) -> Result<()> {
    let after = lifecycle::after_move(to, now);
    tx.prepare_cached(
        "UPDATE tasks SET status = ?2, lease_expires_at = NULL, last_error = ?3,
             assigned_to = CASE WHEN ?4 THEN assigned_to ELSE NULL END,
             started_at = CASE WHEN ?5 THEN started_at ELSE NULL END,
             finished_at = ?6, updated_at = ?7
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
) -> Result<Released> {
    let to = lifecycle::status_after_release(row.attempt, row.max_attempts);
    move_task(tx, row.seq, to, reason, now)?;
    tx.prepare_cached(
        "UPDATE task_attempts SET outcome = 'REAPED', ended_at = ?3, error = ?4
         WHERE task_id = ?1 AND attempt = ?2",
    )
    .map_err(map_err)?
    .execute(params![row.id, row.attempt, ts(&now), reason])
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

/// Releases every task of `running` and refreshes their jobs.
pub(super) fn release_all(
    tx: &Tx<'_>,
    running: Vec<rows::TaskHead>,
    reason: impl Fn(&rows::TaskHead) -> String,
    now: Timestamp,
) -> Result<Vec<Released>> {
    let mut released = Vec::with_capacity(running.len());
    for row in &running {
        released.push(release_task(tx, row, &reason(row), now)?);
    }
    let jobs: BTreeSet<&str> = released.iter().map(|r| r.job_id.as_str()).collect();
    refresh_jobs(tx, jobs, &ts(&now))?;
    Ok(released)
}

fn apply_report(
    tx: &Tx<'_>,
    report: &Report,
    now: Timestamp,
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
                ts(&now),
                result.runtime_ms,
                result.iter,
                result.fopt,
                result.result_json,
                result.output
            ])
            .map_err(map_err)?;
        }
        ReportKind::Fail { error, .. } => move_task(tx, task.seq, to, error, now)?,
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
        ts(&now),
        error
    ])
    .map_err(map_err)?;
    let (task_id, job_id, node_id, attempt) = (
        task.id,
        task.job_id.clone(),
        report.node_id.clone(),
        task.attempt,
    );
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
    Ok((reply, Some(task.job_id)))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        let id = ids::job_id();
        let now = ts(&now);
        self.write(move |tx| {
            let total = sweep.len();
            let parameters = serde_json::to_string(&sweep.parameter_names())
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let timeout_ms = job.task_timeout.as_millis() as i64;
            let spec = sweep
                .spec_json()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
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
                    spec,
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
            tx.emit(Event::JobCreated {
                job_id: id.clone(),
                total_tasks: total,
            });
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
            match lifecycle::decide_cancel(job.cancelled, job.status) {
                CancelDecision::Unchanged => return Ok(job),
                CancelDecision::Finished(status) => {
                    return Err(StoreError::JobFinished { id, status });
                }
                CancelDecision::Cancel => {}
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

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        let node_id = node_id.to_string();
        self.write(move |tx| {
            let status: NodeStatus = rows::node_status(tx, &node_id)?
                .ok_or_else(|| StoreError::not_found("spot", &node_id))?;
            match lifecycle::claim_access(status) {
                ClaimAccess::NodeDown => return Err(StoreError::NodeDown(node_id)),
                ClaimAccess::Nothing => return Ok(Vec::new()),
                ClaimAccess::Claim => {}
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
                // A negative timeout can only come from a hand edit; it leases for no time.
                let timeout = Duration::from_millis(u64::try_from(t.timeout_ms).unwrap_or(0));
                let lifecycle::ClaimGrant {
                    attempt,
                    lease_expires_at: lease,
                } = lifecycle::claim_grant(t.attempt, timeout, now);
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
                tx.emit(Event::TaskClaimed {
                    task_id: t.id.clone(),
                    job_id: t.job_id.clone(),
                    node_id: node_id.clone(),
                    attempt,
                });
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
        self.write(move |tx| {
            let mut outcomes = Vec::with_capacity(reports.len());
            let mut jobs = BTreeSet::new();
            for report in &reports {
                let (outcome, job) = apply_report(tx, report, now)?;
                outcomes.push(outcome);
                jobs.extend(job);
            }
            refresh_jobs(tx, jobs.iter().map(String::as_str), &ts(&now))?;
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
}
