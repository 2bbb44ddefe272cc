//! Operating the SQLite store: the [`StoreOps`] implementation (the health probe, the health
//! figures, the count audit, the instance id, closing).
//!
//! It must not change jobs, tasks, nodes or runners; the instance id is its only write.

use super::{BUSY_TIMEOUT, HEALTH_BUSY_TIMEOUT, Shared, SqliteStore, map_err, rows};
use crate::{CountMismatch, Overview, Result, StoreError, StoreOps};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// This data directory's server identity, made on first use.
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

    async fn audit_job_counts(&self) -> Result<Vec<CountMismatch>> {
        self.read(|conn| rows::audit(conn)).await
    }

    async fn instance_id(&self) -> Result<String> {
        self.write(|tx| instance_id(tx)).await
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
