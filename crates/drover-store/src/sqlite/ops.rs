//! Operating the SQLite store: the [`StoreOps`] implementation (the health probe, free space,
//! the health figures, the counts by status of `/metrics`, the count audit, the instance id, closing).
//!
//! It must not change jobs, tasks, nodes or runners; the instance id and the health probe's
//! counter (`meta`) are its only writes.

use super::{Shared, SqliteStore, map_err, rows};
use crate::{CountMismatch, Overview, Result, StatusCounts, StoreError, StoreOps, WriteStats};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

/// This data directory's server identity, made on first use.
/// The NEW (waiting) and RUNNING tasks of every job, from the jobs' counters.
fn task_sums(conn: &Connection) -> Result<(u64, u64)> {
    conn.prepare_cached(
        "SELECT COALESCE(sum(new_tasks), 0), COALESCE(sum(running_tasks), 0) FROM jobs",
    )
    .map_err(map_err)?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
    .map_err(map_err)
}

fn instance_id(conn: &Connection) -> Result<String> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'instance_id'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = drover_core::ids::instance_id();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('instance_id', ?1)",
        [&id],
    )
    .map_err(map_err)?;
    Ok(id)
}

#[async_trait]
impl StoreOps for SqliteStore {
    async fn health(&self) -> Result<()> {
        self.check_writes().await
    }

    async fn checkpoint_idle(&self) -> Result<u64> {
        SqliteStore::checkpoint_idle(self).await
    }

    async fn free_space(&self) -> Result<Option<u64>> {
        let dir = self.data_dir();
        tokio::task::spawn_blocking(move || {
            let st = rustix::fs::statvfs(&dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot measure {}: {e}", dir.display()))
            })?;
            // f_bavail: what an unprivileged writer may still use (root's reserve excluded).
            Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    async fn overview(&self) -> Result<Overview> {
        self.read(|conn| {
            let active_nodes: u64 = conn
                .query_row("SELECT count(*) FROM nodes WHERE status = 'UP'", [], |r| {
                    r.get(0)
                })
                .map_err(map_err)?;
            let (pending_tasks, running_tasks) = task_sums(conn)?;
            Ok(Overview {
                active_nodes,
                pending_tasks,
                running_tasks,
            })
        })
        .await
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        self.read(|conn| {
            let by_status = |sql: &str| -> Result<Vec<(String, u64)>> {
                conn.prepare_cached(sql)
                    .map_err(map_err)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(map_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(map_err)
            };
            let nodes = by_status("SELECT status, count(*) FROM nodes GROUP BY status")?;
            let runners = by_status("SELECT status, count(*) FROM runners GROUP BY status")?;
            let (waiting, running) = task_sums(conn)?;
            StatusCounts::from_rows(nodes, runners, waiting, running)
        })
        .await
    }

    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>> {
        self.read(|conn| rows::audit(conn)).await
    }

    async fn instance_id(&self) -> Result<String> {
        self.write(|tx| instance_id(tx)).await
    }

    fn write_stats(&self) -> WriteStats {
        self.write_counts()
    }

    async fn close(&self) -> Result<()> {
        // Heartbeats answered and still held in memory are written first (`beats.rs`); if that
        // fails, they read as heartbeats that arrived late, which is all a crash would cost.
        if let Err(e) = crate::NodeStore::flush_heartbeats(self).await {
            tracing::warn!(error = %e, "could not write the held heartbeats on close");
        }
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
                // Folding the WAL into the database is tidiness, not safety: every committed
                // change is already durable in the WAL and is recovered by the next open. On a
                // full disk the checkpoint cannot grow the database, and that must not turn a
                // clean stop into a failure.
                if let Err(e) = writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                    tracing::warn!(error = %e, "could not checkpoint the WAL on close; the data is safe in the WAL and is folded in at the next start");
                }
                writer.close().map_err(|(_, e)| map_err(e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}
