//! The dispatch outbox in PostgreSQL: the [`DispatchStore`] implementation (schema migration
//! 6), as the SQLite store's `dispatch.rs` keeps it.
//!
//! It owns the `dispatches` table: one row per task of a job whose tasks go out through a
//! message broker, written in the transaction that makes the job, and what makes a row due
//! (its task NEW, and never published or published for fewer attempts than the task has now).
//! Beyond making the job (through the jobs module's creation) it must not change a task or a
//! job: the lifecycle moves tasks as for any job, and this module only reads where they stand,
//! without locking them (a publication read a moment before its task is claimed is harmless:
//! a worker's claim of a task already running elsewhere is refused). It decides no rule of
//! the lifecycle either.
//!
//! Reads name only open rows, in the terms of the two partial indexes (`dispatches_fresh`,
//! `dispatches_published`), so the publisher never reads the rows of finished work; rows of
//! finished tasks are closed by [`DispatchStore::mark_published`], the publisher's one write.

use super::PgStore;
use super::jobs::create_job;
use super::rows::{self, at};
use super::write::{R, Tx, exec, row, rows as all};
use crate::common::OutboxWindows;
use crate::{
    DispatchStore, NewJob, OutboxMessage, Publication, Published, QueuedMessage, Result, Route,
    StoreError,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use drover_core::{Job, Timestamp, ids, sweep::Sweep};

/// The open rows never published, whose task is NEW: due first, in creation order.
///
/// Each of these statements reads the outbox's rows through one partial index, and each
/// row's task by its primary key, in a subquery that cannot be merged into the join
/// (`LATERAL`, `OFFSET 0`): left to choose, the planner drove the join from the stored NEW
/// tasks (`tasks_claim`), or from every finished task, reading the outbox once for each.
const FRESH: &str = "FROM dispatches d
     CROSS JOIN LATERAL (SELECT * FROM tasks
                         WHERE tasks.seq = d.task_seq AND tasks.status = 'NEW' OFFSET 0) t
     WHERE d.open AND d.published_attempts IS NULL";

/// The open rows published before whose task is NEW again with more attempts: due after the
/// fresh ones.
const RETRIED: &str = "FROM dispatches d
     CROSS JOIN LATERAL (SELECT * FROM tasks
                         WHERE tasks.seq = d.task_seq AND tasks.status = 'NEW'
                             AND tasks.attempt > d.published_attempts OFFSET 0) t
     WHERE d.open AND d.published_attempts IS NOT NULL";

/// The open rows never published whose task finished: never due.
const FINISHED_FRESH: &str = "SELECT d.task_seq FROM dispatches d
     CROSS JOIN LATERAL (SELECT 1 FROM tasks
                         WHERE tasks.seq = d.task_seq
                             AND tasks.status IN ('DONE', 'FAILED', 'CANCELLED')
                         OFFSET 0) t
     WHERE d.open AND d.published_attempts IS NULL";

/// One window of the open rows published before: at most `${limit}` of them after the row
/// `${after}`, in creation order. The publisher looks at the published rows a window at a
/// time (`common::OutboxWindows`), so that a backlog of published jobs not yet consumed is
/// never read whole by a step.
fn published_window(after: usize, limit: usize) -> String {
    format!(
        "SELECT task_seq FROM dispatches
         WHERE open AND published_attempts IS NOT NULL AND task_seq > ${after}
         ORDER BY task_seq LIMIT ${limit}"
    )
}

/// How many rows the window from after `start` holds, and its last.
async fn window_extent<C: GenericClient>(c: &C, start: i64) -> R<(i64, Option<i64>)> {
    let r = row(
        c,
        &format!(
            "SELECT count(*), max(task_seq) FROM ({}) w",
            published_window(1, 2)
        ),
        &[&start, &crate::common::OUTBOX_WINDOW],
    )
    .await?;
    Ok((rows::get(&r, 0)?, rows::get(&r, 1)?))
}

/// [`rows::TASK_COLUMNS`] of the task `t` a statement joins to its outbox row.
fn task_columns() -> String {
    rows::TASK_COLUMNS
        .split(',')
        .map(|c| format!("t.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Up to `limit` publications of the rows `from` ([`FRESH`] or [`RETRIED`]) selects, in
/// creation order.
async fn due<C: GenericClient>(c: &C, from: &str, limit: u32) -> R<Vec<Publication>> {
    due_with(c, from, &[&i64::from(limit)]).await
}

/// The publications due again among one window of the published rows, from after `start`.
async fn due_again<C: GenericClient>(c: &C, start: i64, limit: u32) -> R<Vec<Publication>> {
    let from = format!(
        "FROM ({}) w
         CROSS JOIN LATERAL (SELECT * FROM dispatches
                             WHERE dispatches.task_seq = w.task_seq OFFSET 0) d
         CROSS JOIN LATERAL (SELECT * FROM tasks
                             WHERE tasks.seq = d.task_seq AND tasks.status = 'NEW'
                                 AND tasks.attempt > d.published_attempts OFFSET 0) t",
        published_window(2, 3)
    );
    due_with(
        c,
        &from,
        &[&i64::from(limit), &start, &crate::common::OUTBOX_WINDOW],
    )
    .await
}

async fn due_with<C: GenericClient>(
    c: &C,
    from: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> R<Vec<Publication>> {
    all(
        c,
        &format!(
            "SELECT {}, d.queue, d.priority,
                    (SELECT created_at FROM jobs WHERE jobs.seq = d.job_seq)
             {from} ORDER BY d.task_seq LIMIT $1",
            task_columns()
        ),
        params,
    )
    .await?
    .iter()
    .map(|r| {
        let priority: i16 = rows::get(r, 19)?;
        Ok(Publication {
            task: rows::task(r)?,
            route: Route {
                queue: rows::get(r, 18)?,
                priority: u8::try_from(priority).map_err(|_| {
                    StoreError::Internal(format!("unexpected priority {priority} in dispatches"))
                })?,
            },
            job_created_at: rows::get(r, 20)?,
        })
    })
    .collect()
}

/// Records the confirmations of `done`: each row's published attempts rise to those
/// confirmed, never fall (a late confirmation of an older read must not hide a newer
/// release). A task without a row here (not dispatched) is passed over.
/// Returns how many published rows it looked at from after `start` for closing, and the last
/// (`common::OutboxWindows::advance`).
async fn mark(
    tx: &Tx<'_>,
    done: &[Published],
    now: Timestamp,
    start: i64,
) -> R<(i64, Option<i64>)> {
    // One entry per task, the most attempts confirmed, in id order (the order rows are
    // updated in, so that two publishers' marks of the same tasks queue rather than deadlock).
    let mut most = std::collections::BTreeMap::<&str, i64>::new();
    for p in done {
        let n = most.entry(p.task_id.as_str()).or_insert(0);
        *n = (*n).max(i64::from(p.attempts));
    }
    let (task_ids, attempts): (Vec<&str>, Vec<i64>) = most.into_iter().unzip();
    let now = at(now);
    if !task_ids.is_empty() {
        exec(
            &**tx,
            "UPDATE dispatches d SET published_attempts = u.attempts, published_at = $1
             FROM (SELECT t.seq, u.attempts
                   FROM unnest($2::TEXT[], $3::BIGINT[]) AS u (id, attempts)
                   JOIN tasks t ON t.id = u.id) u
             WHERE d.task_seq = u.seq AND d.open
                 AND (d.published_attempts IS NULL OR d.published_attempts < u.attempts)",
            &[&now, &task_ids, &attempts],
        )
        .await?;
    }
    // Closed here rather than by the calls that finish tasks, so that the lifecycle's hot
    // paths (reports above all) never touch the outbox.
    // The never-published rows whole (the publisher keeps them few), the published ones a
    // window at a time.
    exec(
        &**tx,
        &format!("UPDATE dispatches SET open = false WHERE task_seq IN ({FINISHED_FRESH})"),
        &[],
    )
    .await?;
    let extent = window_extent(&**tx, start).await?;
    exec(
        &**tx,
        &format!(
            "UPDATE dispatches SET open = false WHERE task_seq IN (
                 SELECT w.task_seq FROM ({}) w
                 CROSS JOIN LATERAL (SELECT 1 FROM tasks
                                     WHERE tasks.seq = w.task_seq
                                         AND tasks.status IN ('DONE', 'FAILED', 'CANCELLED')
                                     OFFSET 0) t)",
            published_window(1, 2)
        ),
        &[&start, &crate::common::OUTBOX_WINDOW],
    )
    .await?;
    Ok(extent)
}

#[async_trait]
impl DispatchStore for PgStore {
    async fn create_dispatched_job(
        &self,
        job: NewJob,
        sweep: Sweep,
        route: Route,
        now: Timestamp,
    ) -> Result<Job> {
        let id = job.id.clone().unwrap_or_else(ids::job_id);
        let now = at(now);
        let priority = i16::from(route.priority);
        write_tx!(self, |tx| async {
            // Every task gets its row now, whatever the job's kind: the outbox rows refer to
            // them.
            let made = create_job(&tx, &id, &job, &sweep, now, true).await?;
            exec(
                &*tx,
                "INSERT INTO dispatches (task_seq, job_seq, queue, priority)
                 SELECT seq, job_seq, $2, $3 FROM tasks WHERE job_seq = $1 ORDER BY idx",
                &[&made.seq, &route.queue, &priority],
            )
            .await?;
            Ok(made)
        }
        .await)
    }

    async fn due_publications(&self, limit: u32) -> Result<Vec<Publication>> {
        let start = OutboxWindows::start(&self.outbox.retried);
        let (found, extent) = snapshot!(self, |conn| async {
            let mut found = due(&conn, FRESH, limit).await?;
            let left = limit.saturating_sub(found.len() as u32);
            let mut extent = None;
            if left > 0 {
                extent = Some(window_extent(&conn, start).await?);
                found.extend(due_again(&conn, start, left).await?);
            }
            Ok((found, extent))
        }
        .await)?;
        if let Some((seen, last)) = extent {
            OutboxWindows::advance(&self.outbox.retried, seen, last);
        }
        Ok(found)
    }

    async fn mark_published(&self, done: Vec<Published>, now: Timestamp) -> Result<()> {
        let start = OutboxWindows::start(&self.outbox.closing);
        let (seen, last) = write_tx!(self, |tx| mark(&tx, &done, now, start).await)?;
        OutboxWindows::advance(&self.outbox.closing, seen, last);
        Ok(())
    }

    async fn unpublished_counts(&self) -> Result<Vec<(String, u64)>> {
        read!(self, |conn| async {
            all(
                &conn,
                &format!(
                    "SELECT queue, count(*) FROM (
                         SELECT d.queue AS queue {FRESH}
                         UNION ALL
                         SELECT d.queue AS queue {RETRIED}
                         UNION ALL
                         SELECT exchange AS queue FROM outbox_messages) due
                     GROUP BY queue ORDER BY queue"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((rows::get(r, 0)?, rows::count(r, 1)?)))
            .collect()
        }
        .await)
    }

    async fn enqueue_messages(&self, messages: Vec<OutboxMessage>, now: Timestamp) -> Result<()> {
        let now = at(now);
        let (exchanges, keys, bodies): (Vec<&str>, Vec<&str>, Vec<&str>) = messages
            .iter()
            .map(|m| (m.exchange.as_str(), m.routing_key.as_str(), m.body.as_str()))
            .collect();
        write_tx!(self, |tx| {
            exec(
                &*tx,
                "INSERT INTO outbox_messages (exchange, routing_key, body, created_at)
                 SELECT e, k, b, $4 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[])
                     WITH ORDINALITY AS m(e, k, b, n) ORDER BY n",
                &[&exchanges, &keys, &bodies, &now],
            )
            .await
        })
        .map(|_| ())
    }

    async fn due_messages(&self, limit: u32) -> Result<Vec<QueuedMessage>> {
        read!(self, |conn| async {
            all(
                &conn,
                "SELECT seq, exchange, routing_key, body FROM outbox_messages
                 ORDER BY seq LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(QueuedMessage {
                    seq: rows::get(r, 0)?,
                    message: OutboxMessage {
                        exchange: rows::get(r, 1)?,
                        routing_key: rows::get(r, 2)?,
                        body: rows::get(r, 3)?,
                    },
                })
            })
            .collect()
        }
        .await)
    }

    async fn forget_messages(&self, seqs: Vec<i64>) -> Result<()> {
        write_tx!(self, |tx| {
            exec(
                &*tx,
                "DELETE FROM outbox_messages WHERE seq = ANY($1)",
                &[&seqs],
            )
            .await
        })
        .map(|_| ())
    }
}
