//! The node registry in SQLite: the [`NodeStore`] implementation.
//!
//! SQL and row handling only: a heartbeat's effect on a node's status, which nodes are silent
//! (each by the spot timeout, or by its own longer silence timeout when it was registered
//! with one) and which DOWN nodes may be forgotten are asked of `drover_core::node`; tasks of a node
//! marked DOWN are released through the jobs module, in the same transaction. Heartbeats that
//! change nothing but liveness are held by `beats.rs` and written here, all together
//! ([`NodeStore::flush_heartbeats`], and first in every write that judges or removes nodes).

use super::beats::{Beat, Buffered, FLUSH_AFTER};
use super::jobs::release_all;
use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::common::{Candidates, Facts};
use crate::{Liveness, NamedNode, NewNode, NodeStore, NodesDown, Page, Paged, Result, StoreError};
use async_trait::async_trait;
use drover_core::credential::SpotCredential;
use drover_core::node::{self, Drain, RetentionView};
use drover_core::time::format as ts;
use drover_core::{Event, Node, NodeStats, NodeStatus, Timestamp, ids};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Writes one node's heartbeats (`count` of them, merged into `stats` at `now`) and records
/// their events; the node's status after them, or `None` if there is no such node. With
/// `assumed`, the status a held heartbeat found, the update is tried on that status first and
/// the status is read only if the row has changed since (which spares a read per held beat).
fn write_beat(
    tx: &Tx<'_>,
    id: &str,
    stats: &NodeStats,
    now: Timestamp,
    count: u32,
    assumed: Option<NodeStatus>,
) -> Result<Option<NodeStatus>> {
    let before = match assumed {
        Some(status) if update_beat(tx, id, stats, now, status, true)? => status,
        _ => {
            let Some(before) = rows::node_status(tx, id)? else {
                return Ok(None);
            };
            if !update_beat(tx, id, stats, now, before, false)? {
                return Ok(None);
            }
            before
        }
    };
    let after = node::status_after_heartbeat(before);
    if before == NodeStatus::Down && after != NodeStatus::Down {
        tx.emit(Event::NodeRevived {
            node_id: id.to_string(),
        });
    }
    for _ in 0..count {
        tx.emit(Event::NodeUpdated {
            node_id: id.to_string(),
            status: after,
        });
    }
    Ok(Some(after))
}

/// The heartbeat's update of a node whose status is `before` (only if it still is, when
/// `only_if_still`); whether a row changed.
fn update_beat(
    tx: &Tx<'_>,
    id: &str,
    stats: &NodeStats,
    now: Timestamp,
    before: NodeStatus,
    only_if_still: bool,
) -> Result<bool> {
    let after = node::status_after_heartbeat(before);
    let changed = tx
        .prepare_cached(
            "UPDATE nodes SET last_heartbeat = ?2,
                 status = ?8,
                 address = COALESCE(?3, address),
                 cpu_load = COALESCE(?4, cpu_load),
                 running_tasks = COALESCE(?5, running_tasks),
                 total_cores = COALESCE(?6, total_cores),
                 free_memory_bytes = COALESCE(?7, free_memory_bytes)
             WHERE id = ?1 AND (?9 IS NULL OR status = ?9)",
        )
        .map_err(map_err)?
        .execute(params![
            id,
            ts(&now),
            stats.address,
            stats.cpu_load,
            stats.running_tasks,
            stats.total_cores,
            stats.free_memory_bytes,
            after.as_str(),
            only_if_still.then_some(before.as_str()),
        ])
        .map_err(map_err)?;
    Ok(changed > 0)
}

/// Brings a node seen alive now back UP if it was DOWN, with its event.
pub(super) fn seen_alive(tx: &Tx<'_>, id: &str, before: NodeStatus, now: &str) -> Result<()> {
    let after = node::status_after_heartbeat(before);
    tx.prepare_cached("UPDATE nodes SET status = ?2, last_heartbeat = ?3 WHERE id = ?1")
        .map_err(map_err)?
        .execute(params![id, after.as_str(), now])
        .map_err(map_err)?;
    if before == NodeStatus::Down && after != NodeStatus::Down {
        tx.emit(Event::NodeRevived {
            node_id: id.to_string(),
        });
    }
    Ok(())
}

/// Refuses a new node when the registry holds `max` already. Counted in the transaction that
/// inserts, so two registrations cannot pass the cap together.
fn room_for_one_more(tx: &Tx<'_>, max: Option<u64>) -> Result<()> {
    let registered: i64 = tx
        .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))
        .map_err(map_err)?;
    if !node::may_register(registered as u64, max) {
        return Err(StoreError::LimitReached {
            kind: "spot",
            limit: max.unwrap_or_default(),
        });
    }
    Ok(())
}

/// Which pending beats a write takes first (`beats.rs`).
#[derive(Clone, Copy)]
enum Take {
    /// The flush that was due.
    Flush,
    /// Whatever is pending, ahead of a write that judges or removes nodes.
    All,
}

impl SqliteStore {
    /// Runs `f` on the writer after writing the pending heartbeats in the same transaction.
    /// If the write fails, the beats are pending again (and a flush is due for them).
    async fn write_after_beats<T, F>(&self, take: Take, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let beats = self.beats.clone();
        let taken: Arc<Mutex<HashMap<String, Beat>>> = Arc::default();
        let kept = taken.clone();
        let write = move |tx: &Tx<'_>| {
            let pending = match take {
                Take::Flush => beats.take_for_flush(),
                Take::All => beats.take_all(),
            };
            let written = pending.iter().try_for_each(|(id, beat)| {
                match write_beat(tx, id, &beat.stats, beat.at, beat.count, Some(beat.status))? {
                    Some(after) => beats.written(id, after),
                    // Removed meanwhile: nothing left to record the heartbeat on.
                    None => beats.unsettle(id),
                }
                Ok(())
            });
            *kept.lock().unwrap_or_else(|p| p.into_inner()) = pending;
            written?;
            f(tx)
        };
        let out = match take {
            // A flush holds heartbeats alone: see `write_liveness`.
            Take::Flush => self.write_liveness(write).await,
            Take::All => self.write(write).await,
        };
        if out.is_err() {
            let pending = std::mem::take(&mut *taken.lock().unwrap_or_else(|p| p.into_inner()));
            if !pending.is_empty() && self.beats.restore(pending) {
                self.flush_beats_later();
            }
        }
        out
    }

    /// Writes the pending heartbeats [`FLUSH_AFTER`] from now.
    fn flush_beats_later(&self) {
        let store = self.clone();
        // Detached: a heartbeat is answered without waiting for its flush.
        drop(tokio::spawn(async move {
            tokio::time::sleep(FLUSH_AFTER).await;
            if let Err(e) = store.write_after_beats(Take::Flush, |_| Ok(())).await {
                tracing::warn!(error = %e, "writing held heartbeats failed; trying again");
            }
        }));
    }
}

impl SqliteStore {
    /// Marks the silent nodes among `which` DOWN and takes back their tasks.
    async fn mark_down(
        &self,
        which: Candidates,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown> {
        let beats = self.beats.clone();
        // The pending heartbeats are written first, in the same transaction, so silence is
        // judged on every heartbeat acknowledged so far.
        self.write_after_beats(Take::All, move |tx| {
            let silent: Vec<String> = silent_facts(tx, which, cutoff)?
                .into_iter()
                .filter(|f| {
                    let cutoff = which.cutoff_for(cutoff, now, f.silence);
                    node::goes_down(f.view.status, f.view.last_heartbeat, cutoff)
                })
                .map(|f| f.id)
                .collect();
            // A node whose heartbeat was held while this looked has spoken: it stays.
            let nodes = beats.unsettle_silent(silent);
            let mut down = tx
                .prepare_cached("UPDATE nodes SET status = ?2 WHERE id = ?1")
                .map_err(map_err)?;
            for id in &nodes {
                down.execute(params![id, NodeStatus::Down.as_str()])
                    .map_err(map_err)?;
                tx.emit(Event::NodeDown {
                    node_id: id.clone(),
                });
            }
            drop(down);
            let mut running = Vec::new();
            let mut select = tx
                .prepare_cached(&format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND assigned_to = ?1
                     ORDER BY seq",
                    rows::TASK_HEAD_COLUMNS
                ))
                .map_err(map_err)?;
            for node in &nodes {
                running.extend(
                    select
                        .query_map([node], rows::task_head)
                        .map_err(map_err)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(map_err)?,
                );
            }
            drop(select);
            let released = release_all(
                tx,
                running,
                |t| {
                    crate::common::silence_error(
                        t.assigned_to.as_deref(),
                        t.attempt,
                        which.liveness(),
                    )
                },
                now,
            )?;
            Ok(NodesDown { nodes, released })
        })
        .await
    }
}

/// The facts silence and retention are judged from, of the nodes of `which` whose stored
/// heartbeat is older than `cutoff`. The SQL only narrows the rows read (through the index of
/// live nodes' heartbeats, so the reaper does not read every node every few seconds); whether
/// a node is silent, and what happens to it, is still `drover_core::node`'s answer. The filter
/// is a second wider than `cutoff`, so a time written in another format (a hand edit) is still
/// judged by the core rather than left out by a text comparison. A node's own silence timeout
/// is never shorter than the spot timeout, so `cutoff` finds every node it may judge silent.
fn silent_facts(tx: &Tx<'_>, which: Candidates, cutoff: Timestamp) -> Result<Vec<Facts>> {
    let sql = match which {
        Candidates::NotDown => {
            "SELECT id, status, last_heartbeat,
                    EXISTS (SELECT 1 FROM tasks
                            WHERE tasks.status = 'RUNNING' AND tasks.assigned_to = nodes.id),
                    silence_ms
             FROM nodes WHERE status <> 'DOWN' AND last_heartbeat < ?1 AND NOT by_stats
             ORDER BY registered_at, id"
        }
        Candidates::StatsNotDown => {
            "SELECT id, status, last_heartbeat,
                    EXISTS (SELECT 1 FROM tasks
                            WHERE tasks.status = 'RUNNING' AND tasks.assigned_to = nodes.id),
                    silence_ms
             FROM nodes WHERE status <> 'DOWN' AND last_heartbeat < ?1 AND by_stats
             ORDER BY registered_at, id"
        }
        Candidates::Down => {
            "SELECT id, status, last_heartbeat,
                    EXISTS (SELECT 1 FROM tasks
                            WHERE tasks.status = 'RUNNING' AND tasks.assigned_to = nodes.id),
                    silence_ms
             FROM nodes WHERE status = 'DOWN' AND last_heartbeat < ?1
             ORDER BY registered_at, id"
        }
    };
    let widened = ts(&(cutoff + chrono::Duration::seconds(1)));
    tx.prepare_cached(sql)
        .map_err(map_err)?
        .query_map([widened], |r| {
            Ok(Facts {
                id: r.get(0)?,
                view: RetentionView {
                    status: rows::status(r, 1)?,
                    last_heartbeat: rows::time(r, 2)?,
                    holds_running_task: r.get(3)?,
                },
                silence: crate::common::silence_of(r.get(4)?),
            })
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn register_node(&self, new: NewNode, max: Option<u64>, now: Timestamp) -> Result<Node> {
        let NewNode { info, secret_hash } = new;
        let id = ids::node_id();
        let now = ts(&now);
        let beats = self.beats.clone();
        self.write(move |tx| {
            room_for_one_more(tx, max)?;
            tx.execute(
                "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores,
                     memory_bytes, gpus, disk_bytes, status, registered_at, last_heartbeat,
                     secret_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'UP', ?10, ?10, ?11)",
                params![
                    id,
                    info.address,
                    info.hostname,
                    info.zone,
                    serde_json::Value::Object(info.labels).to_string(),
                    info.capacity.cores,
                    info.capacity.memory_bytes,
                    info.capacity.gpus,
                    info.capacity.disk_bytes,
                    now,
                    secret_hash
                ],
            )
            .map_err(map_err)?;
            tx.emit(Event::NodeRegistered {
                node_id: id.clone(),
            });
            beats.written(&id, NodeStatus::Up);
            rows::node_by_id(tx, &id)
        })
        .await
    }

    async fn put_node(&self, n: NamedNode, max: Option<u64>, now: Timestamp) -> Result<()> {
        let now = ts(&now);
        let beats = self.beats.clone();
        self.write(move |tx| {
            let before = rows::node_status(tx, &n.id)?;
            if before.is_none() {
                room_for_one_more(tx, max)?;
            }
            let info = &n.info;
            let labels = serde_json::Value::Object(info.labels.clone()).to_string();
            let capacity_gb = n.capacity_gb.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
            // Inserted UP, or its facts replaced; its status is then judged as a sign of life.
            tx.prepare_cached(
                "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores,
                     memory_bytes, gpus, disk_bytes, capacity_gb, by_stats, status,
                     registered_at, last_heartbeat, silence_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'UP', ?12, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET address = ?2, hostname = ?3, zone = ?4,
                     labels = ?5, total_cores = ?6, memory_bytes = ?7, gpus = ?8,
                     disk_bytes = ?9, capacity_gb = ?10, by_stats = ?11, silence_ms = ?13",
            )
            .map_err(map_err)?
            .execute(params![
                n.id,
                info.address,
                info.hostname,
                info.zone,
                labels,
                info.capacity.cores,
                info.capacity.memory_bytes,
                info.capacity.gpus,
                info.capacity.disk_bytes,
                capacity_gb,
                n.liveness == Liveness::Stats,
                now,
                crate::common::silence_ms(n.silence_timeout)
            ])
            .map_err(map_err)?;
            if let Some(before) = before {
                seen_alive(tx, &n.id, before, &now)?;
            }
            let status = rows::node_status(tx, &n.id)?.unwrap_or(NodeStatus::Up);
            beats.written(&n.id, status);
            tx.emit(Event::NodeRegistered { node_id: n.id });
            Ok(())
        })
        .await
    }

    async fn update_node(
        &self,
        node_id: &str,
        labels: serde_json::Map<String, serde_json::Value>,
        capacity: drover_core::Capacity,
        now: Timestamp,
    ) -> Result<()> {
        let (id, now) = (node_id.to_string(), ts(&now));
        let beats = self.beats.clone();
        self.write(move |tx| {
            let Some(before) = rows::node_status(tx, &id)? else {
                return Err(StoreError::not_found("spot", &id));
            };
            tx.prepare_cached(
                "UPDATE nodes SET labels = ?2, total_cores = ?3, memory_bytes = ?4, gpus = ?5,
                     disk_bytes = ?6 WHERE id = ?1",
            )
            .map_err(map_err)?
            .execute(params![
                id,
                serde_json::Value::Object(labels).to_string(),
                capacity.cores,
                capacity.memory_bytes,
                capacity.gpus,
                capacity.disk_bytes
            ])
            .map_err(map_err)?;
            seen_alive(tx, &id, before, &now)?;
            let after = node::status_after_heartbeat(before);
            beats.written(&id, after);
            tx.emit(Event::NodeDescribed {
                node_id: id.clone(),
            });
            tx.emit(Event::NodeUpdated {
                node_id: id,
                status: after,
            });
            Ok(())
        })
        .await
    }

    async fn heartbeat(
        &self,
        node_id: &str,
        stats: NodeStats,
        now: Timestamp,
    ) -> Result<NodeStatus> {
        // A settled node's heartbeat waits in memory for the next flush (`beats.rs`).
        let stats = match self.beats.buffer(node_id, stats, now) {
            Buffered::Held { status, schedule } => {
                if schedule {
                    self.flush_beats_later();
                }
                return Ok(status);
            }
            Buffered::Write(stats) => stats,
        };
        let id = node_id.to_string();
        let beats = self.beats.clone();
        // Liveness only: see `write_liveness` for why it need not wait for the fsync.
        self.write_liveness(move |tx| {
            let after = write_beat(tx, &id, &stats, now, 1, None)?
                .ok_or_else(|| StoreError::not_found("spot", &id))?;
            beats.written(&id, after);
            Ok(after)
        })
        .await
    }

    async fn flush_heartbeats(&self) -> Result<()> {
        self.write_after_beats(Take::Flush, |_| Ok(())).await
    }

    async fn drain_node(&self, node_id: &str, drain: Drain) -> Result<Node> {
        let id = node_id.to_string();
        let beats = self.beats.clone();
        // The pending heartbeats are written first (`beats.rs`): a heartbeat held before this
        // write finds the new status when it is written, and one after it is answered with it.
        self.write_after_beats(Take::All, move |tx| {
            let Some(before) = rows::node_status(tx, &id)? else {
                return Err(StoreError::not_found("spot", &id));
            };
            let after = node::status_after_drain(before, drain).map_err(|reason| {
                StoreError::DrainRefused {
                    id: id.clone(),
                    reason,
                }
            })?;
            if after != before {
                tx.prepare_cached("UPDATE nodes SET status = ?2 WHERE id = ?1")
                    .map_err(map_err)?
                    .execute(params![id, after.as_str()])
                    .map_err(map_err)?;
                tx.emit(drain.event(&id));
                beats.written(&id, after);
            }
            rows::node_by_id(tx, &id)
        })
        .await
    }

    async fn spot_credential(&self, node_id: &str) -> Result<SpotCredential> {
        let id = node_id.to_string();
        self.read(move |conn| {
            let stored = conn
                .prepare_cached("SELECT secret_hash FROM nodes WHERE id = ?1")
                .map_err(map_err)?
                .query_row([&id], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map_err(map_err)?;
            Ok(match stored {
                None => SpotCredential::UnknownSpot,
                Some(None) => SpotCredential::NotIssued,
                Some(Some(hash)) => SpotCredential::Issued { hash },
            })
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let mut nodes = self
            .read(|conn| {
                conn.prepare_cached(&format!(
                    "SELECT {} FROM nodes ORDER BY registered_at, id",
                    rows::NODE_COLUMNS
                ))
                .map_err(map_err)?
                .query_map([], rows::node)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)
            })
            .await?;
        self.beats.overlay(&mut nodes);
        Ok(nodes)
    }

    async fn list_nodes_page(&self, page: Page) -> Result<Paged<Node>> {
        let mut paged = self
            .read(move |conn| {
                let items = conn
                    .prepare_cached(&format!(
                        "SELECT {}, rowid AS row_seq FROM nodes WHERE ?1 IS NULL OR rowid > ?1
                     ORDER BY rowid LIMIT ?2",
                        rows::NODE_COLUMNS
                    ))
                    .map_err(map_err)?
                    .query_map(params![page.cursor, page.limit as i64 + 1], |r| {
                        Ok((rows::node(r)?, r.get::<_, i64>("row_seq")?))
                    })
                    .map_err(map_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(map_err)?;
                let paged = crate::common::paged(items, page.limit, |(_, row)| *row);
                Ok(Paged {
                    items: paged.items.into_iter().map(|(n, _)| n).collect(),
                    next_cursor: paged.next_cursor,
                })
            })
            .await?;
        self.beats.overlay(&mut paged.items);
        Ok(paged)
    }

    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown> {
        self.mark_down(Candidates::NotDown, cutoff, now).await
    }

    async fn mark_stats_silent_nodes_down(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown> {
        self.mark_down(Candidates::StatsNotDown, cutoff, now).await
    }

    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>> {
        let beats = self.beats.clone();
        self.write_after_beats(Take::All, move |tx| {
            let forgotten: Vec<String> = silent_facts(tx, Candidates::Down, cutoff)?
                .into_iter()
                .filter(|f| node::may_forget(&f.view, cutoff))
                .map(|f| f.id)
                .collect();
            let mut delete = tx
                .prepare_cached("DELETE FROM nodes WHERE id = ?1")
                .map_err(map_err)?;
            for id in &forgotten {
                delete.execute([id]).map_err(map_err)?;
                beats.unsettle(id);
                tx.emit(Event::NodeForgotten {
                    node_id: id.clone(),
                });
            }
            Ok(forgotten)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    /// A held heartbeat whose node changed behind the store's back (another process on the
    /// file marked it DOWN) is still applied by the heartbeat rule when written: the node comes
    /// back UP, with its events.
    #[tokio::test]
    async fn a_held_beat_whose_node_changed_meanwhile_still_follows_the_heartbeat_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        store.observers.register(Arc::new(move |events: &[Event]| {
            log.lock().unwrap().extend_from_slice(events)
        }));
        let info = drover_core::NodeInfo {
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        let id = store
            .register_node(info.into(), None, t(0))
            .await
            .unwrap()
            .id;
        assert_eq!(
            store
                .heartbeat(&id, NodeStats::default(), t(1))
                .await
                .unwrap(),
            NodeStatus::Up
        );
        let marked = id.clone();
        store
            .with_conn(move |c| {
                c.execute("UPDATE nodes SET status = 'DOWN' WHERE id = ?1", [&marked])
                    .map(|_| ())
                    .map_err(map_err)
            })
            .await
            .unwrap();
        seen.lock().unwrap().clear();
        store.flush_heartbeats().await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Event::NodeRevived {
                    node_id: id.clone()
                },
                Event::NodeUpdated {
                    node_id: id.clone(),
                    status: NodeStatus::Up
                },
            ]
        );
        let node = store.list_nodes().await.unwrap().remove(0);
        assert_eq!((node.status, node.last_heartbeat), (NodeStatus::Up, t(1)));
    }
}
