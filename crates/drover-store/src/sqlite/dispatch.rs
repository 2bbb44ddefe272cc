//! The dispatch outbox in SQLite: the [`DispatchStore`] implementation (schema migration 13).
//!
//! It owns the `dispatches` table: one row per task of a job whose tasks go out through a
//! message broker, written in the transaction that makes the job, and what makes a row due
//! (its task NEW, and never published or published for fewer attempts than the task has now).
//! Beyond making the job (through the jobs module's creation) it must not change a task or a
//! job: the lifecycle moves tasks (claims, reports, reapers) as for any job, and this module
//! only reads where they stand. It decides no rule of the lifecycle either; "due" is only the
//! outbox's record of what the broker has been handed.
//!
//! Reads go through the two partial indexes of open rows, with `INDEXED BY` (a statement an
//! index cannot serve fails instead of scanning) and `CROSS JOIN` (the outbox rows drive the
//! join, not the stored NEW tasks), so the publisher never reads the rows of finished work.
//! Rows of finished tasks are closed by [`DispatchStore::mark_published`], the publisher's
//! one write, which keeps the open rows bounded by the dispatched work not finished.

use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::common::OutboxWindows;
use crate::{
    DispatchStore, NewJob, OutboxMessage, Publication, Published, QueuedMessage, Result, Route,
};
use async_trait::async_trait;
use drover_core::time::format as ts;
use drover_core::{Job, Timestamp, sweep::Sweep};
use rusqlite::{Connection, params};

/// The open rows never published, whose task is NEW: due first, in creation order.
const FRESH: &str = "FROM dispatches AS d INDEXED BY dispatches_fresh
     CROSS JOIN tasks ON tasks.seq = d.task_seq
     WHERE d.open AND d.published_attempts IS NULL AND tasks.status = 'NEW'";

/// The open rows published before whose task is NEW again with more attempts: due after the
/// fresh ones.
const RETRIED: &str = "FROM dispatches AS d INDEXED BY dispatches_published
     CROSS JOIN tasks ON tasks.seq = d.task_seq
     WHERE d.open AND d.published_attempts IS NOT NULL AND tasks.status = 'NEW'
         AND tasks.attempt > d.published_attempts";

/// The open rows never published whose task finished: never due.
const FINISHED_FRESH: &str = "SELECT d.task_seq FROM dispatches AS d INDEXED BY dispatches_fresh
     CROSS JOIN tasks ON tasks.seq = d.task_seq
     WHERE d.open AND d.published_attempts IS NULL
         AND (tasks.status = 'DONE' OR tasks.status = 'FAILED' OR tasks.status = 'CANCELLED')";

/// One window of the open rows published before: at most `?{limit}` of them after the row
/// `?{after}`, in creation order. The publisher looks at the published rows a window at a
/// time (`common::OutboxWindows`), so that a backlog of published jobs not yet consumed is
/// never read whole by a step.
fn published_window(after: usize, limit: usize) -> String {
    format!(
        "SELECT task_seq FROM dispatches INDEXED BY dispatches_published
         WHERE open AND published_attempts IS NOT NULL AND task_seq > ?{after}
         ORDER BY task_seq LIMIT ?{limit}"
    )
}

/// How many rows the window from after `start` holds, and its last.
fn window_extent(conn: &Connection, start: i64) -> Result<(i64, Option<i64>)> {
    conn.prepare_cached(&format!(
        "SELECT count(*), max(task_seq) FROM ({})",
        published_window(1, 2)
    ))
    .map_err(map_err)?
    .query_row(params![start, crate::common::OUTBOX_WINDOW], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .map_err(map_err)
}

/// Up to `limit` publications of the rows `from` ([`FRESH`] or [`RETRIED`]) selects, in
/// creation order.
fn due(conn: &Connection, from: &str, limit: u32) -> Result<Vec<Publication>> {
    due_with(conn, from, params![limit])
}

/// The publications due again among one window of the published rows, from after `start`.
fn due_again(conn: &Connection, start: i64, limit: u32) -> Result<Vec<Publication>> {
    let from = format!(
        "FROM ({}) AS w CROSS JOIN dispatches AS d ON d.task_seq = w.task_seq
         CROSS JOIN tasks ON tasks.seq = d.task_seq
         WHERE tasks.status = 'NEW' AND tasks.attempt > d.published_attempts",
        published_window(2, 3)
    );
    due_with(
        conn,
        &from,
        params![limit, start, crate::common::OUTBOX_WINDOW],
    )
}

fn due_with(
    conn: &Connection,
    from: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Publication>> {
    conn.prepare_cached(&format!(
        "SELECT {}, d.queue, d.priority,
                (SELECT created_at FROM jobs WHERE jobs.seq = d.job_seq)
         {from} ORDER BY d.task_seq LIMIT ?1",
        rows::TASK_COLUMNS
    ))
    .map_err(map_err)?
    .query_map(params, |r| {
        Ok(Publication {
            task: rows::task(r)?,
            route: Route {
                queue: r.get(18)?,
                priority: r.get(19)?,
            },
            job_created_at: rows::time(r, 20)?,
        })
    })
    .map_err(map_err)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(map_err)
}

/// Records the confirmations of `done`: each row's published attempts rise to those
/// confirmed, never fall (a late confirmation of an older read must not hide a newer
/// release). A task without a row here (not dispatched) is passed over.
fn mark(
    tx: &Tx<'_>,
    done: &[Published],
    now: Timestamp,
    windows: &crate::common::OutboxWindows,
) -> Result<()> {
    let now = ts(&now);
    let (derived, named) = rows::TASK_SEQ_BY_ID_SQL;
    let mut derived = tx.prepare_cached(derived).map_err(map_err)?;
    let mut last = rows::LastJob::default();
    let mut update = tx
        .prepare_cached(
            "UPDATE dispatches SET published_attempts = ?2, published_at = ?3
             WHERE task_seq = ?1 AND open
                 AND (published_attempts IS NULL OR published_attempts < ?2)",
        )
        .map_err(map_err)?;
    for p in done {
        let found = rows::find_task(tx, (&mut derived, named), &mut last, &p.task_id, |r| {
            r.get::<_, i64>(0)
        })?;
        if let Some(seq) = found {
            update
                .execute(params![seq, p.attempts, now])
                .map_err(map_err)?;
        }
    }
    drop(update);
    // Closed here rather than by the calls that finish tasks, so that the lifecycle's hot
    // paths (reports above all) never touch the outbox.
    // The never-published rows whole (the publisher keeps them few), the published ones a
    // window at a time.
    tx.prepare_cached(&format!(
        "UPDATE dispatches SET open = 0 WHERE task_seq IN ({FINISHED_FRESH})"
    ))
    .map_err(map_err)?
    .execute([])
    .map_err(map_err)?;
    let start = OutboxWindows::start(&windows.closing);
    let extent = window_extent(tx, start)?;
    tx.prepare_cached(&format!(
        "UPDATE dispatches SET open = 0 WHERE task_seq IN (
             SELECT w.task_seq FROM ({}) AS w CROSS JOIN tasks ON tasks.seq = w.task_seq
             WHERE tasks.status = 'DONE' OR tasks.status = 'FAILED'
                 OR tasks.status = 'CANCELLED')",
        published_window(1, 2)
    ))
    .map_err(map_err)?
    .execute(params![start, crate::common::OUTBOX_WINDOW])
    .map_err(map_err)?;
    OutboxWindows::advance(&windows.closing, extent.0, extent.1);
    Ok(())
}

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn create_dispatched_job(
        &self,
        job: NewJob,
        sweep: Sweep,
        route: Route,
        now: Timestamp,
    ) -> Result<Job> {
        // Every task gets its row now, whatever the job's kind: the outbox rows refer to them.
        self.create(job, sweep, true, now, move |tx, seq| {
            tx.prepare_cached(
                "INSERT INTO dispatches (task_seq, job_seq, queue, priority)
                 SELECT seq, job_seq, ?2, ?3 FROM tasks INDEXED BY tasks_job_idx
                 WHERE job_seq = ?1 ORDER BY idx",
            )
            .map_err(map_err)?
            .execute(params![seq, route.queue, route.priority])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn due_publications(&self, limit: u32) -> Result<Vec<Publication>> {
        let windows = self.outbox.clone();
        self.read(move |conn| {
            let mut found = due(conn, FRESH, limit)?;
            let left = limit.saturating_sub(found.len() as u32);
            if left > 0 {
                let start = OutboxWindows::start(&windows.retried);
                let (seen, last) = window_extent(conn, start)?;
                found.extend(due_again(conn, start, left)?);
                OutboxWindows::advance(&windows.retried, seen, last);
            }
            Ok(found)
        })
        .await
    }

    async fn mark_published(&self, done: Vec<Published>, now: Timestamp) -> Result<()> {
        let windows = self.outbox.clone();
        // Unguarded: its statements fail only as SQLite does (the disk, a bug), which fails a
        // group anyway.
        self.write_unguarded(move |tx| mark(tx, &done, now, &windows))
            .await
    }

    async fn unpublished_counts(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT queue, count(*) FROM (
                     SELECT d.queue AS queue {FRESH}
                     UNION ALL
                     SELECT d.queue AS queue {RETRIED}
                     UNION ALL
                     SELECT exchange AS queue FROM outbox_messages)
                 GROUP BY queue ORDER BY queue"
            ))
            .map_err(map_err)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn enqueue_messages(&self, messages: Vec<OutboxMessage>, now: Timestamp) -> Result<()> {
        let now = ts(&now);
        self.write(move |tx| {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO outbox_messages (exchange, routing_key, body, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for m in &messages {
                insert
                    .execute(params![m.exchange, m.routing_key, m.body, now])
                    .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn due_messages(&self, limit: u32) -> Result<Vec<QueuedMessage>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT seq, exchange, routing_key, body FROM outbox_messages
                 ORDER BY seq LIMIT ?1",
            )
            .map_err(map_err)?
            .query_map([limit], |r| {
                Ok(QueuedMessage {
                    seq: r.get(0)?,
                    message: OutboxMessage {
                        exchange: r.get(1)?,
                        routing_key: r.get(2)?,
                        body: r.get(3)?,
                    },
                })
            })
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn forget_messages(&self, seqs: Vec<i64>) -> Result<()> {
        self.write(move |tx| {
            let mut delete = tx
                .prepare_cached("DELETE FROM outbox_messages WHERE seq = ?1")
                .map_err(map_err)?;
            for seq in &seqs {
                delete.execute([seq]).map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobStore, NodeStore, Report, TaskClaim};
    use chrono::{TimeZone, Utc};
    use drover_core::sweep::SweepSpec;
    use drover_core::{NodeInfo, ReportKind, TaskResult};

    fn t0() -> Timestamp {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap()
    }

    /// Each outbox row: its task's index, whether it is open, and the attempts published.
    async fn outbox(store: &SqliteStore) -> Vec<(i64, bool, Option<u32>)> {
        store
            .read(|conn| {
                conn.prepare(
                    "SELECT t.idx, d.open, d.published_attempts FROM dispatches d
                     JOIN tasks t ON t.seq = d.task_seq ORDER BY d.task_seq",
                )
                .map_err(map_err)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)
            })
            .await
            .unwrap()
    }

    /// The rows of finished tasks are closed by the next confirmation, whichever tasks it
    /// names, whether they were published or not; the others stay open.
    #[tokio::test]
    async fn confirmations_close_the_rows_of_finished_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let job = NewJob {
            origin: None,
            id: None,
            name: None,
            priority: 0,
            max_attempts: 1,
            task_timeout: std::time::Duration::from_secs(60),
            run: None,
        };
        let sweep = Sweep::new(SweepSpec::counting("x", "x", 4), 100).unwrap();
        let route = Route {
            queue: "q".into(),
            priority: 3,
        };
        let job = store
            .create_dispatched_job(job, sweep, route, t0())
            .await
            .unwrap();
        let task = |i| drover_core::ids::sweep_task_id(&job.id, i);
        let node = store
            .register_node(NodeInfo::default().into(), None, t0())
            .await
            .unwrap()
            .id;
        let first = Published {
            task_id: task(0),
            attempts: 0,
        };
        store.mark_published(vec![first], t0()).await.unwrap();
        for i in [0, 1, 2] {
            let claimed = store.claim_task(&task(i), &node, None, t0()).await.unwrap();
            assert!(matches!(claimed, TaskClaim::Claimed(_)), "{claimed:?}");
        }
        let report = |i, kind| Report {
            task_id: task(i),
            node_id: node.clone(),
            attempt: None,
            kind,
        };
        let fail = ReportKind::Fail {
            error: "no".into(),
            retriable: true,
        };
        let done = ReportKind::Complete(TaskResult::default());
        store
            .report(vec![report(0, done), report(1, fail)], t0())
            .await
            .unwrap();
        assert_eq!(
            outbox(&store).await,
            [
                (0, true, Some(0)),
                (1, true, None),
                (2, true, None),
                (3, true, None)
            ],
            "nothing is closed before the publisher writes"
        );
        store.mark_published(Vec::new(), t0()).await.unwrap();
        assert_eq!(
            outbox(&store).await,
            [
                (0, false, Some(0)),
                (1, false, None),
                (2, true, None),
                (3, true, None)
            ]
        );
        let due: Vec<_> = store
            .due_publications(10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.task.seq)
            .collect();
        assert_eq!(due, [3]);
    }

    /// The publisher's statements read the outbox through its partial indexes of open rows
    /// (the published ones a window at a time) and reach each row's task and outbox row by
    /// primary key: none scans `dispatches` or `tasks`, and the fresh rows come in index order.
    #[tokio::test]
    async fn the_outbox_is_read_through_its_indexes_of_open_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let again =
            format!(
            "SELECT d.task_seq FROM ({}) AS w CROSS JOIN dispatches AS d ON d.task_seq = w.task_seq
             CROSS JOIN tasks ON tasks.seq = d.task_seq
             WHERE tasks.status = 'NEW' AND tasks.attempt > d.published_attempts
             ORDER BY d.task_seq LIMIT 10",
            published_window(1, 2).replace("?1", "0").replace("?2", "1000")
        );
        let plans = store
            .read(move |conn| {
                let mut plans = Vec::new();
                for sql in [
                    format!("SELECT d.task_seq {FRESH} ORDER BY d.task_seq LIMIT 10"),
                    again.clone(),
                    format!("SELECT * FROM ({FINISHED_FRESH})"),
                ] {
                    let mut stmt = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(map_err)?;
                    let steps = stmt
                        .query_map([], |r| r.get::<_, String>(3))
                        .map_err(map_err)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(map_err)?;
                    plans.push((sql, steps));
                }
                Ok(plans)
            })
            .await
            .unwrap();
        for (i, (sql, steps)) in plans.into_iter().enumerate() {
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("dispatches_fresh") || s.contains("dispatches_published")),
                "{sql}: {steps:?}"
            );
            for step in steps
                .iter()
                .filter(|s| s.contains("dispatches") || s.contains(" d ") || s.contains("tasks"))
            {
                assert!(
                    step.contains("dispatches_fresh")
                        || step.contains("dispatches_published")
                        || step.contains("PRIMARY KEY"),
                    "{sql}: {steps:?}"
                );
            }
            if i == 0 {
                assert!(
                    !steps.iter().any(|s| s.contains("TEMP B-TREE")),
                    "{sql}: no sort: {steps:?}"
                );
            }
        }
    }
}
