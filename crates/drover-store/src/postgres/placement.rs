//! The placement contract's records in PostgreSQL: the [`PlacementStore`] implementation.
//!
//! SQL and row handling only, as in SQLite's `placement.rs`: the placement contract's nodes are
//! rows of the one `nodes` table (`NodeStore::put_node`), marked `by_stats` (the heartbeat
//! silence check passes them by); stats
//! are the node's own columns, committed without waiting for the WAL flush (liveness, as the
//! SQLite store writes heartbeats: a crash may lose the last reports, never order them wrong).
//! Decisions are `drover_core`'s.

use super::PgStore;
use super::nodes::{locked_status, seen_alive};
use super::rows::{self, at};
use super::write::{R, exec, row_opt, rows as all};
use crate::{PlacementNode, PlacementStore, Result, StoreError, StoredObject};
use async_trait::async_trait;
use drover_core::scheduling::{Stats, Weights};
use drover_core::{Event, NodeStatus, ReplicaState, Timestamp};
use tokio_postgres::Row;

const PLACEMENT_NODE_COLUMNS: &str = "id, zone, address, capacity_gb, labels, status, \
    cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure, last_heartbeat";

fn placement_node(r: &Row) -> R<PlacementNode> {
    let stats = match rows::get::<Option<f64>>(r, 6)? {
        None => None,
        Some(cpu_free) => Some(Stats {
            cpu_free,
            ram_free_mb: rows::get(r, 7)?,
            gpu_free: rows::get(r, 8)?,
            latency_ms: rows::get(r, 9)?,
            io_pressure: rows::get(r, 10)?,
        }),
    };
    let capacity: Option<i64> = rows::get(r, 3)?;
    Ok(PlacementNode {
        id: rows::get(r, 0)?,
        zone: rows::get::<Option<String>>(r, 1)?.unwrap_or_default(),
        address: rows::get(r, 2)?,
        capacity_gb: capacity.map_or(crate::DEFAULT_CAPACITY_GB, |c| c.max(0) as u64),
        meta: rows::json_object(r, 4)?,
        status: rows::status::<NodeStatus>(r, 5)?,
        stats,
        last_seen: rows::get(r, 11)?,
    })
}

async fn object<C: deadpool_postgres::GenericClient>(
    conn: &C,
    hash: &str,
) -> R<Option<StoredObject>> {
    let Some(o) = row_opt(
        conn,
        "SELECT size, rf, registered_at FROM objects WHERE hash = $1",
        &[&hash],
    )
    .await?
    else {
        return Ok(None);
    };
    let replicas = all(
        conn,
        "SELECT node_id, state FROM replicas WHERE hash = $1 ORDER BY seq",
        &[&hash],
    )
    .await?
    .iter()
    .map(|r| Ok((rows::get(r, 0)?, rows::status::<ReplicaState>(r, 1)?)))
    .collect::<R<Vec<_>>>()?;
    Ok(Some(StoredObject {
        hash: hash.to_string(),
        size: rows::get::<i64>(&o, 0)?.max(0) as u64,
        rf: u32::try_from(rows::get::<i64>(&o, 1)?).unwrap_or(0),
        replicas,
        registered_at: rows::get(&o, 2)?,
    }))
}

#[async_trait]
impl PlacementStore for PgStore {
    async fn placement_nodes(&self) -> Result<Vec<PlacementNode>> {
        read!(self, |conn| async {
            all(
                &conn,
                &format!("SELECT {PLACEMENT_NODE_COLUMNS} FROM nodes ORDER BY id"),
                &[],
            )
            .await?
            .iter()
            .map(placement_node)
            .collect()
        }
        .await)
    }

    async fn placement_node(&self, id: &str) -> Result<Option<PlacementNode>> {
        read!(self, |conn| async {
            row_opt(
                &conn,
                &format!("SELECT {PLACEMENT_NODE_COLUMNS} FROM nodes WHERE id = $1"),
                &[&id],
            )
            .await?
            .map(|r| placement_node(&r))
            .transpose()
        }
        .await)
    }

    async fn report_stats(&self, node_id: &str, stats: Stats, now: Timestamp) -> Result<()> {
        let now = at(now);
        write_tx!(self, |tx| async {
            // Liveness: the next report replaces it, so it need not wait for the WAL flush.
            exec(&*tx, "SET LOCAL synchronous_commit TO OFF", &[]).await?;
            let Some(before) = locked_status(&tx, node_id).await? else {
                return Err(StoreError::not_found("node", node_id).into());
            };
            // Only figures that changed are a change (and a journal entry): a node reporting
            // the same stats again is liveness alone, so the journal coalesces them.
            let changed = exec(
                &*tx,
                "UPDATE nodes SET cpu_free = $2, ram_free_mb = $3, gpu_free = $4,
                     latency_ms = $5, io_pressure = $6
                 WHERE id = $1 AND (cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure)
                     IS DISTINCT FROM ($2, $3, $4, $5, $6)",
                &[
                    &node_id,
                    &stats.cpu_free,
                    &stats.ram_free_mb,
                    &stats.gpu_free,
                    &stats.latency_ms,
                    &stats.io_pressure,
                ],
            )
            .await?;
            seen_alive(&tx, node_id, before, now).await?;
            if changed > 0 {
                tx.emit(Event::NodeStatsReported {
                    node_id: node_id.to_string(),
                });
            }
            Ok(())
        }
        .await)
    }

    async fn scheduler_weights(&self) -> Result<Option<Weights>> {
        read!(self, |conn| async {
            row_opt(
                &conn,
                "SELECT w_cpu, w_ram, w_gpu, w_latency, w_io FROM scheduler_config WHERE id = 1",
                &[],
            )
            .await?
            .map(|r| {
                Ok(Weights {
                    w_cpu: rows::get(&r, 0)?,
                    w_ram: rows::get(&r, 1)?,
                    w_gpu: rows::get(&r, 2)?,
                    w_latency: rows::get(&r, 3)?,
                    w_io: rows::get(&r, 4)?,
                })
            })
            .transpose()
        }
        .await)
    }

    async fn set_scheduler_weights(&self, w: Weights, now: Timestamp) -> Result<()> {
        let now = at(now);
        write_tx!(self, |tx| async {
            exec(
                &*tx,
                "INSERT INTO scheduler_config (id, w_cpu, w_ram, w_gpu, w_latency, w_io, updated_at)
                 VALUES (1, $1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET w_cpu = $1, w_ram = $2, w_gpu = $3,
                     w_latency = $4, w_io = $5, updated_at = $6",
                &[&w.w_cpu, &w.w_ram, &w.w_gpu, &w.w_latency, &w.w_io, &now],
            )
            .await?;
            tx.emit(Event::SchedulerConfigured);
            Ok(())
        }
        .await)
    }

    async fn register_object(
        &self,
        hash: &str,
        size: u64,
        rf: u32,
        targets: &[String],
        now: Timestamp,
    ) -> Result<bool> {
        let now = at(now);
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let rf = i64::from(rf);
        write_tx!(self, |tx| async {
            let made = exec(
                &*tx,
                "INSERT INTO objects (hash, size, rf, registered_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hash, &size, &rf, &now],
            )
            .await?;
            if made == 0 {
                return Ok(false);
            }
            tx.emit(Event::ObjectRegistered {
                hash: hash.to_string(),
            });
            exec(
                &*tx,
                "INSERT INTO replicas (hash, node_id, state, updated_at)
                 SELECT $1, t.node_id, 'PENDING', $3
                 FROM unnest($2::TEXT[]) WITH ORDINALITY AS t (node_id, n) ORDER BY t.n",
                &[&hash, &targets, &now],
            )
            .await?;
            for node_id in targets {
                tx.emit(Event::ReplicaChanged {
                    hash: hash.to_string(),
                    node_id: node_id.clone(),
                    state: ReplicaState::Pending,
                });
            }
            Ok(true)
        }
        .await)
    }

    async fn get_object(&self, hash: &str) -> Result<Option<StoredObject>> {
        read!(self, |conn| async { object(&conn, hash).await }.await)
    }

    async fn set_replica(
        &self,
        hash: &str,
        node_id: &str,
        state: ReplicaState,
        now: Timestamp,
    ) -> Result<()> {
        let now = at(now);
        write_tx!(self, |tx| async {
            let known = row_opt(
                &*tx,
                "SELECT 1 FROM objects WHERE hash = $1 FOR SHARE",
                &[&hash],
            )
            .await?;
            if known.is_none() {
                return Err(StoreError::not_found("object", hash).into());
            }
            let node = row_opt(&*tx, "SELECT 1 FROM nodes WHERE id = $1", &[&node_id]).await?;
            if node.is_none() {
                return Err(StoreError::not_found("node", node_id).into());
            }
            exec(
                &*tx,
                "INSERT INTO replicas (hash, node_id, state, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hash, node_id) DO UPDATE SET state = $3, updated_at = $4",
                &[&hash, &node_id, &state.as_str(), &now],
            )
            .await?;
            tx.emit(Event::ReplicaChanged {
                hash: hash.to_string(),
                node_id: node_id.to_string(),
                state,
            });
            Ok(())
        }
        .await)
    }

    async fn list_objects(&self, after: Option<&str>, limit: u32) -> Result<Vec<StoredObject>> {
        let limit = i64::from(limit);
        read!(self, |conn| async {
            let hashes: Vec<String> = all(
                &conn,
                "SELECT hash FROM objects WHERE $1::TEXT IS NULL OR hash > $1
                 ORDER BY hash LIMIT $2",
                &[&after, &limit],
            )
            .await?
            .iter()
            .map(|r| rows::get(r, 0))
            .collect::<R<_>>()?;
            let mut objects = Vec::with_capacity(hashes.len());
            for h in &hashes {
                objects.extend(object(&conn, h).await?);
            }
            Ok(objects)
        }
        .await)
    }
}
