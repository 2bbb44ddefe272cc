//! The placement contract's records in SQLite: the [`PlacementStore`] implementation.
//!
//! SQL and row handling only. The placement contract's nodes are rows of the one `nodes` table
//! (registered by `NodeStore::put_node`, so every surface lists them), marked `by_stats`: their
//! signs of life are stats reports, so the heartbeat silence check passes them by. Stats are
//! the node's own columns, written as liveness (`write_liveness`: no fsync wait of their own,
//! as heartbeats). Which nodes a
//! placement or a schedule picks, and which replicas count, is decided in `drover_core`.

use super::nodes::seen_alive;
use super::{SqliteStore, map_err, rows};
use crate::{PlacementNode, PlacementStore, Result, StoreError, StoredObject};
use async_trait::async_trait;
use drover_core::scheduling::{Stats, Weights};
use drover_core::time::format as ts;
use drover_core::{Event, NodeStatus, ReplicaState, Timestamp, node};
use rusqlite::{Connection, OptionalExtension, Row, params};

const PLACEMENT_NODE_COLUMNS: &str = "id, zone, address, capacity_gb, labels, status, \
    cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure, last_heartbeat";

fn placement_node(r: &Row<'_>) -> rusqlite::Result<PlacementNode> {
    let stats = match r.get::<_, Option<f64>>(6)? {
        None => None,
        Some(cpu_free) => Some(Stats {
            cpu_free,
            ram_free_mb: r.get(7)?,
            gpu_free: r.get(8)?,
            latency_ms: r.get(9)?,
            io_pressure: r.get(10)?,
        }),
    };
    let capacity: Option<i64> = r.get(3)?;
    Ok(PlacementNode {
        id: r.get(0)?,
        zone: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        address: r.get(2)?,
        capacity_gb: capacity.map_or(crate::DEFAULT_CAPACITY_GB, |c| c.max(0) as u64),
        meta: rows::json_object(r, 4)?,
        status: rows::status::<NodeStatus>(r, 5)?,
        stats,
        last_seen: rows::time(r, 11)?,
    })
}

fn object(conn: &Connection, hash: &str) -> Result<Option<StoredObject>> {
    let Some((size, rf, registered_at)) = conn
        .prepare_cached("SELECT size, rf, registered_at FROM objects WHERE hash = ?1")
        .map_err(map_err)?
        .query_row([hash], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, rows::time(r, 2)?))
        })
        .optional()
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    let replicas = conn
        .prepare_cached("SELECT node_id, state FROM replicas WHERE hash = ?1 ORDER BY rowid")
        .map_err(map_err)?
        .query_map([hash], |r| {
            Ok((r.get(0)?, rows::status::<ReplicaState>(r, 1)?))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    Ok(Some(StoredObject {
        hash: hash.to_string(),
        size: size.max(0) as u64,
        rf: u32::try_from(rf).unwrap_or(0),
        replicas,
        registered_at,
    }))
}

#[async_trait]
impl PlacementStore for SqliteStore {
    async fn placement_nodes(&self) -> Result<Vec<PlacementNode>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {PLACEMENT_NODE_COLUMNS} FROM nodes ORDER BY id"
            ))
            .map_err(map_err)?
            .query_map([], placement_node)
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn placement_node(&self, id: &str) -> Result<Option<PlacementNode>> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {PLACEMENT_NODE_COLUMNS} FROM nodes WHERE id = ?1"
            ))
            .map_err(map_err)?
            .query_row([&id], placement_node)
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn report_stats(&self, node_id: &str, stats: Stats, now: Timestamp) -> Result<()> {
        let id = node_id.to_string();
        let now = ts(&now);
        let beats = self.beats.clone();
        // Liveness, as a heartbeat: live figures that the next report replaces.
        self.write_liveness(move |tx| {
            let Some(before) = rows::node_status(tx, &id)? else {
                return Err(StoreError::not_found("node", &id));
            };
            // Only figures that changed are a change (and a journal entry): a node reporting
            // the same stats again is liveness alone, so the journal coalesces them.
            let changed = tx
                .prepare_cached(
                    "UPDATE nodes SET cpu_free = ?2, ram_free_mb = ?3, gpu_free = ?4,
                         latency_ms = ?5, io_pressure = ?6
                     WHERE id = ?1 AND (cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure)
                         IS NOT (?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(map_err)?
                .execute(params![
                    id,
                    stats.cpu_free,
                    stats.ram_free_mb,
                    stats.gpu_free,
                    stats.latency_ms,
                    stats.io_pressure
                ])
                .map_err(map_err)?;
            seen_alive(tx, &id, before, &now)?;
            beats.written(&id, node::status_after_heartbeat(before));
            if changed > 0 {
                tx.emit(Event::NodeStatsReported { node_id: id });
            }
            Ok(())
        })
        .await
    }

    async fn scheduler_weights(&self) -> Result<Option<Weights>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT w_cpu, w_ram, w_gpu, w_latency, w_io FROM scheduler_config WHERE id = 1",
            )
            .map_err(map_err)?
            .query_row([], |r| {
                Ok(Weights {
                    w_cpu: r.get(0)?,
                    w_ram: r.get(1)?,
                    w_gpu: r.get(2)?,
                    w_latency: r.get(3)?,
                    w_io: r.get(4)?,
                })
            })
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn set_scheduler_weights(&self, w: Weights, now: Timestamp) -> Result<()> {
        let now = ts(&now);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO scheduler_config (id, w_cpu, w_ram, w_gpu, w_latency, w_io, updated_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET w_cpu = ?1, w_ram = ?2, w_gpu = ?3,
                     w_latency = ?4, w_io = ?5, updated_at = ?6",
            )
            .map_err(map_err)?
            .execute(params![w.w_cpu, w.w_ram, w.w_gpu, w.w_latency, w.w_io, now])
            .map_err(map_err)?;
            tx.emit(Event::SchedulerConfigured);
            Ok(())
        })
        .await
    }

    async fn register_object(
        &self,
        hash: &str,
        size: u64,
        rf: u32,
        targets: &[String],
        now: Timestamp,
    ) -> Result<bool> {
        let (hash, targets, now) = (hash.to_string(), targets.to_vec(), ts(&now));
        self.write(move |tx| {
            let made = tx
                .prepare_cached(
                    "INSERT INTO objects (hash, size, rf, registered_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(map_err)?
                .execute(params![
                    hash,
                    i64::try_from(size).unwrap_or(i64::MAX),
                    rf,
                    now
                ])
                .map_err(map_err)?;
            if made == 0 {
                return Ok(false);
            }
            tx.emit(Event::ObjectRegistered { hash: hash.clone() });
            for node_id in targets {
                tx.prepare_cached(
                    "INSERT INTO replicas (hash, node_id, state, updated_at)
                     VALUES (?1, ?2, 'PENDING', ?3)",
                )
                .map_err(map_err)?
                .execute(params![hash, node_id, now])
                .map_err(map_err)?;
                tx.emit(Event::ReplicaChanged {
                    hash: hash.clone(),
                    node_id,
                    state: ReplicaState::Pending,
                });
            }
            Ok(true)
        })
        .await
    }

    async fn get_object(&self, hash: &str) -> Result<Option<StoredObject>> {
        let hash = hash.to_string();
        self.read(move |conn| object(conn, &hash)).await
    }

    async fn set_replica(
        &self,
        hash: &str,
        node_id: &str,
        state: ReplicaState,
        now: Timestamp,
    ) -> Result<()> {
        let (hash, node_id, now) = (hash.to_string(), node_id.to_string(), ts(&now));
        self.write(move |tx| {
            let known: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM objects WHERE hash = ?1")
                .map_err(map_err)?
                .query_row([&hash], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if known.is_none() {
                return Err(StoreError::not_found("object", &hash));
            }
            if rows::node_status(tx, &node_id)?.is_none() {
                return Err(StoreError::not_found("node", &node_id));
            }
            tx.prepare_cached(
                "INSERT INTO replicas (hash, node_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash, node_id) DO UPDATE SET state = ?3, updated_at = ?4",
            )
            .map_err(map_err)?
            .execute(params![hash, node_id, state.as_str(), now])
            .map_err(map_err)?;
            tx.emit(Event::ReplicaChanged {
                hash,
                node_id,
                state,
            });
            Ok(())
        })
        .await
    }

    async fn list_objects(&self, after: Option<&str>, limit: u32) -> Result<Vec<StoredObject>> {
        let after = after.map(str::to_string);
        self.read(move |conn| {
            let hashes = conn
                .prepare_cached(
                    "SELECT hash FROM objects WHERE ?1 IS NULL OR hash > ?1 ORDER BY hash LIMIT ?2",
                )
                .map_err(map_err)?
                .query_map(params![after, limit], |r| r.get::<_, String>(0))
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let mut objects = Vec::with_capacity(hashes.len());
            for h in hashes {
                objects.extend(object(conn, &h)?);
            }
            Ok(objects)
        })
        .await
    }
}
