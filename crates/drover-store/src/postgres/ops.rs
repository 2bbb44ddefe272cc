//! Operating the PostgreSQL store: the [`StoreOps`] implementation (the health probe, the
//! health figures, the counts by status of `/metrics`, the count audit, the instance id, closing).
//!
//! It must not change jobs, tasks, nodes or runners; the instance id and the health probe's
//! counter (`meta`) are its only writes.

use super::PgStore;
use super::rows;
use super::write::{R, exec, row, row_opt, rows as all};
use crate::{CountMismatch, Overview, Result, StatusCounts, StoreOps};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use std::sync::atomic::Ordering;

/// Counts each job's tasks: its rows, and the tasks without rows (NEW, or CANCELLED with the
/// job). A job whose rows are not exactly its first `materialised` tasks shows as a wrong
/// total.
/// The NEW (waiting) and RUNNING tasks of every job, from the jobs' counters.
async fn task_sums<C: GenericClient>(c: &C) -> R<(u64, u64)> {
    let r = row(
        c,
        "SELECT COALESCE(sum(new_tasks), 0)::BIGINT, COALESCE(sum(running_tasks), 0)::BIGINT
         FROM jobs",
        &[],
    )
    .await?;
    Ok((rows::count(&r, 0)?, rows::count(&r, 1)?))
}

async fn audit<C: GenericClient>(c: &C) -> R<Vec<CountMismatch>> {
    let found = all(
        c,
        "SELECT j.id, j.total_tasks, j.new_tasks, j.running_tasks, j.completed_tasks,
                j.failed_tasks, j.cancelled_tasks,
                count(t.seq) + j.total_tasks - j.materialised,
                count(t.seq) FILTER (WHERE t.status = 'NEW')
                    + CASE WHEN j.cancelled THEN 0 ELSE j.total_tasks - j.materialised END,
                count(t.seq) FILTER (WHERE t.status = 'RUNNING'),
                count(t.seq) FILTER (WHERE t.status = 'DONE'),
                count(t.seq) FILTER (WHERE t.status = 'FAILED'),
                count(t.seq) FILTER (WHERE t.status = 'CANCELLED')
                    + CASE WHEN j.cancelled THEN j.total_tasks - j.materialised ELSE 0 END
         FROM jobs j LEFT JOIN tasks t ON t.job_seq = j.seq
         GROUP BY j.seq ORDER BY j.seq",
        &[],
    )
    .await?;
    let mut mismatches = Vec::new();
    for r in &found {
        let m = CountMismatch {
            job_id: rows::get(r, 0)?,
            stored: rows::counts(r, 1)?,
            actual: rows::counts(r, 7)?,
        };
        if m.stored != m.actual {
            mismatches.push(m);
        }
    }
    Ok(mismatches)
}

#[async_trait]
impl StoreOps for PgStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn write_stats(&self) -> crate::WriteStats {
        crate::WriteStats {
            commits: self.commits.load(std::sync::atomic::Ordering::Relaxed),
            writes: self.writes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    async fn health(&self) -> Result<()> {
        // A real write that commits: a read-only standby, a full disk or a lost connection
        // fails it.
        write_tx!(self, |tx| exec(
            &*tx,
            "INSERT INTO meta (key, value) VALUES ('write_probe', '1')
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT",
            &[],
        )
        .await
        .map(|_| ()))
    }

    async fn free_space(&self) -> Result<Option<u64>> {
        // The database server watches its own disk.
        Ok(None)
    }

    async fn overview(&self) -> Result<Overview> {
        read!(self, |conn| async {
            let active: i64 = rows::get(
                &row(&conn, "SELECT count(*) FROM nodes WHERE status = 'UP'", &[]).await?,
                0,
            )?;
            let (pending_tasks, running_tasks) = task_sums(&conn).await?;
            Ok(Overview {
                active_nodes: active as u64,
                pending_tasks,
                running_tasks,
            })
        }
        .await)
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        // One snapshot, so a node or runner moving between statuses is counted once.
        snapshot!(self, |conn| async {
            let mut by_status = Vec::new();
            for sql in [
                "SELECT status, count(*) FROM nodes GROUP BY status",
                "SELECT status, count(*) FROM runners GROUP BY status",
            ] {
                let found = all(&conn, sql, &[]).await?;
                let mut pairs = Vec::with_capacity(found.len());
                for r in &found {
                    pairs.push((rows::get::<String>(r, 0)?, rows::count(r, 1)?));
                }
                by_status.push(pairs);
            }
            let (waiting, running) = task_sums(&conn).await?;
            let runners = by_status.pop().unwrap_or_default();
            let nodes = by_status.pop().unwrap_or_default();
            Ok(StatusCounts::from_rows(nodes, runners, waiting, running)?)
        }
        .await)
    }

    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>> {
        read!(self, |conn| audit(&conn).await)
    }

    async fn instance_id(&self) -> Result<String> {
        let made = drover_core::ids::instance_id();
        write_tx!(self, |tx| async {
            // The first replica to ask makes it; every other finds it.
            exec(
                &*tx,
                "INSERT INTO meta (key, value) VALUES ('instance_id', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&made],
            )
            .await?;
            let found = row_opt(
                &*tx,
                "SELECT value FROM meta WHERE key = 'instance_id'",
                &[],
            )
            .await?
            .ok_or_else(|| crate::StoreError::Internal("the instance id vanished".into()))?;
            rows::get::<String>(&found, 0)
        }
        .await)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.listener.stop();
        self.pool.close();
        Ok(())
    }
}
