//! The node registry in PostgreSQL: the [`NodeStore`] implementation.
//!
//! SQL and row handling only: a heartbeat's effect on a node's status, which nodes are silent
//! (each by the spot timeout, or by its own longer silence timeout when it was registered
//! with one) and which DOWN nodes may be forgotten are asked of `drover_core::node`; tasks of a node
//! marked DOWN are released through the jobs module, in the same transaction. Every heartbeat
//! is written at once, by one UPDATE (nothing is held in memory, so replicas agree on every
//! node's liveness). The reaper judges nodes from an unlocked read, then locks the ones it
//! would change and judges them again, so a heartbeat that lands in between keeps its node UP
//! without every node being locked on each pass.

use super::PgStore;
use super::jobs::release_all;
use super::rows::{self, at};
use super::write::{R, Tx, exec, row, row_opt, rows as all};
use crate::common::{Candidates, Facts};
use crate::{Liveness, NamedNode, NewNode, NodeStore, NodesDown, Page, Paged, Result, StoreError};
use async_trait::async_trait;
use drover_core::credential::SpotCredential;
use drover_core::node::{self, Drain, RetentionView};
use drover_core::{Event, Node, NodeStats, NodeStatus, Timestamp, ids};

/// The advisory lock that makes counting and inserting a node one step, so that two hellos
/// cannot pass the registry's cap together.
const REGISTRY_LOCK: i64 = 0x6472_6f76_0001;

const STATUSES: [NodeStatus; 3] = [NodeStatus::Up, NodeStatus::Draining, NodeStatus::Down];

/// Writes one heartbeat and records its events; the node's status after it, or `None` if
/// there is no such node. One statement: the status a heartbeat leads to from each status is
/// the core's answer, passed in, and the row's status before it comes back.
async fn write_beat(
    tx: &Tx<'_>,
    id: &str,
    stats: &NodeStats,
    now: Timestamp,
) -> R<Option<NodeStatus>> {
    let after = STATUSES.map(|s| node::status_after_heartbeat(s).as_str());
    let now = at(now);
    let found = row_opt(
        &**tx,
        "UPDATE nodes n SET last_heartbeat = $2,
             status = CASE o.status WHEN 'UP' THEN $8 WHEN 'DRAINING' THEN $9 ELSE $10 END,
             address = COALESCE($3, n.address),
             cpu_load = COALESCE($4, n.cpu_load),
             running_tasks = COALESCE($5, n.running_tasks),
             total_cores = COALESCE($6, n.total_cores),
             free_memory_bytes = COALESCE($7, n.free_memory_bytes)
         FROM (SELECT id, status FROM nodes WHERE id = $1 FOR UPDATE) o
         WHERE n.id = o.id
         RETURNING o.status",
        &[
            &id,
            &now,
            &stats.address,
            &stats.cpu_load,
            &stats.running_tasks,
            &stats.total_cores,
            &stats.free_memory_bytes,
            &after[0],
            &after[1],
            &after[2],
        ],
    )
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    let before: NodeStatus = rows::status(&found, 0)?;
    let after = node::status_after_heartbeat(before);
    if before == NodeStatus::Down && after != NodeStatus::Down {
        tx.emit(Event::NodeRevived {
            node_id: id.to_string(),
        });
    }
    tx.emit(Event::NodeUpdated {
        node_id: id.to_string(),
        status: after,
    });
    Ok(Some(after))
}

/// Marks a node seen alive now (a DOWN node comes back UP, with its event).
pub(super) async fn seen_alive(tx: &Tx<'_>, id: &str, before: NodeStatus, now: Timestamp) -> R<()> {
    let after = node::status_after_heartbeat(before);
    exec(
        &**tx,
        "UPDATE nodes SET status = $2, last_heartbeat = $3 WHERE id = $1",
        &[&id, &after.as_str(), &now],
    )
    .await?;
    if before == NodeStatus::Down && after != NodeStatus::Down {
        tx.emit(Event::NodeRevived {
            node_id: id.to_string(),
        });
    }
    Ok(())
}

/// A node's status, locked until the transaction ends; `None` if there is no such node.
pub(super) async fn locked_status(tx: &Tx<'_>, id: &str) -> R<Option<NodeStatus>> {
    row_opt(
        &**tx,
        "SELECT status FROM nodes WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?
    .map(|r| rows::status(&r, 0))
    .transpose()
}

/// Refuses a new node when the registry holds `max` already. Called under [`REGISTRY_LOCK`],
/// so two registrations cannot pass the cap together.
async fn room_for_one_more(tx: &Tx<'_>, max: Option<u64>) -> R<()> {
    let registered: i64 = rows::get(&row(&**tx, "SELECT count(*) FROM nodes", &[]).await?, 0)?;
    if !node::may_register(registered as u64, max) {
        return Err(StoreError::LimitReached {
            kind: "spot",
            limit: max.unwrap_or_default(),
        }
        .into());
    }
    Ok(())
}

/// The facts silence and retention are judged from, of the candidates silent since `cutoff`
/// (`ids` `None`) or of `ids`, locked, for judging them again before changing them. A node's
/// own silence timeout is never shorter than the spot timeout, so `cutoff` finds every node
/// it may judge silent.
async fn node_facts(
    tx: &Tx<'_>,
    which: Candidates,
    cutoff: Timestamp,
    ids: Option<&[String]>,
) -> R<Vec<Facts>> {
    const FACTS: &str = "SELECT id, status, last_heartbeat,
                EXISTS (SELECT 1 FROM tasks
                        WHERE tasks.status = 'RUNNING' AND tasks.assigned_to = nodes.id),
                silence_ms
         FROM nodes";
    let found = match ids {
        None => {
            let status = match which {
                Candidates::NotDown => "status <> 'DOWN' AND NOT by_stats",
                Candidates::StatsNotDown => "status <> 'DOWN' AND by_stats",
                Candidates::Down => "status = 'DOWN'",
            };
            all(
                &**tx,
                &format!(
                    "{FACTS} WHERE {status} AND last_heartbeat < $1 ORDER BY registered_at, id"
                ),
                &[&cutoff],
            )
            .await?
        }
        Some(ids) => {
            all(
                &**tx,
                &format!("{FACTS} WHERE id = ANY($1) ORDER BY id FOR UPDATE OF nodes"),
                &[&ids],
            )
            .await?
        }
    };
    found
        .iter()
        .map(|r| {
            Ok(Facts {
                id: rows::get(r, 0)?,
                view: RetentionView {
                    status: rows::status(r, 1)?,
                    last_heartbeat: rows::get(r, 2)?,
                    holds_running_task: rows::get(r, 3)?,
                },
                silence: crate::common::silence_of(rows::get(r, 4)?),
            })
        })
        .collect()
}

/// The candidates `judge` picks, judged from a plain read and again once locked.
async fn pick_nodes(
    tx: &Tx<'_>,
    which: Candidates,
    cutoff: Timestamp,
    judge: impl Fn(&Facts) -> bool,
) -> R<Vec<String>> {
    let first: Vec<String> = node_facts(tx, which, cutoff, None)
        .await?
        .into_iter()
        .filter(&judge)
        .map(|f| f.id)
        .collect();
    if first.is_empty() {
        return Ok(first);
    }
    Ok(node_facts(tx, which, cutoff, Some(&first))
        .await?
        .into_iter()
        .filter(&judge)
        .map(|f| f.id)
        .collect())
}

impl PgStore {
    /// Marks the silent nodes among `which` DOWN and takes back their tasks.
    async fn mark_down(
        &self,
        which: Candidates,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown> {
        write_tx!(self, |tx| async {
            let nodes = pick_nodes(&tx, which, cutoff, |f| {
                let cutoff = which.cutoff_for(cutoff, now, f.silence);
                node::goes_down(f.view.status, f.view.last_heartbeat, cutoff)
            })
            .await?;
            if nodes.is_empty() {
                return Ok(NodesDown::default());
            }
            exec(
                &*tx,
                "UPDATE nodes SET status = $2 WHERE id = ANY($1)",
                &[&nodes, &NodeStatus::Down.as_str()],
            )
            .await?;
            for id in &nodes {
                tx.emit(Event::NodeDown {
                    node_id: id.clone(),
                });
            }
            let running = all(
                &*tx,
                &format!(
                    "SELECT {} FROM tasks WHERE status = 'RUNNING' AND assigned_to = ANY($1)
                     ORDER BY seq FOR UPDATE",
                    rows::TASK_HEAD_COLUMNS
                ),
                &[&nodes],
            )
            .await?
            .iter()
            .map(rows::task_head)
            .collect::<R<Vec<_>>>()?;
            // Released in the order of the nodes, as the SQLite store does.
            let mut ordered = Vec::with_capacity(running.len());
            for id in &nodes {
                ordered.extend(
                    running
                        .iter()
                        .filter(|t| t.assigned_to.as_deref() == Some(id.as_str()))
                        .cloned(),
                );
            }
            let released = release_all(
                &tx,
                ordered,
                |t| {
                    crate::common::silence_error(
                        t.assigned_to.as_deref(),
                        t.attempt,
                        which.liveness(),
                    )
                },
                now,
            )
            .await?;
            Ok(NodesDown { nodes, released })
        }
        .await)
    }
}

#[async_trait]
impl NodeStore for PgStore {
    async fn register_node(&self, new: NewNode, max: Option<u64>, now: Timestamp) -> Result<Node> {
        let NewNode { info, secret_hash } = new;
        let id = ids::node_id();
        let now = at(now);
        let labels = serde_json::Value::Object(info.labels.clone()).to_string();
        write_tx!(self, |tx| async {
            exec(&*tx, "SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK]).await?;
            room_for_one_more(&tx, max).await?;
            exec(
                &*tx,
                "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores,
                     memory_bytes, gpus, disk_bytes, status, registered_at, last_heartbeat,
                     secret_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'UP', $10, $10, $11)",
                &[
                    &id,
                    &info.address,
                    &info.hostname,
                    &info.zone,
                    &labels,
                    &info.capacity.cores,
                    &info.capacity.memory_bytes,
                    &info.capacity.gpus,
                    &info.capacity.disk_bytes,
                    &now,
                    &secret_hash,
                ],
            )
            .await?;
            tx.emit(Event::NodeRegistered {
                node_id: id.clone(),
            });
            rows::node_by_id(&*tx, &id).await
        }
        .await)
    }

    async fn put_node(&self, n: NamedNode, max: Option<u64>, now: Timestamp) -> Result<()> {
        let now = at(now);
        let labels = serde_json::Value::Object(n.info.labels.clone()).to_string();
        let capacity_gb = n.capacity_gb.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        let by_stats = n.liveness == Liveness::Stats;
        let silence_ms = crate::common::silence_ms(n.silence_timeout);
        let info = &n.info;
        write_tx!(self, |tx| async {
            exec(&*tx, "SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK]).await?;
            let before = locked_status(&tx, &n.id).await?;
            if before.is_none() {
                room_for_one_more(&tx, max).await?;
            }
            // Inserted UP, or its facts replaced; its status is then judged as a sign of life.
            exec(
                &*tx,
                "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores,
                     memory_bytes, gpus, disk_bytes, capacity_gb, by_stats, status,
                     registered_at, last_heartbeat, silence_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'UP', $12, $12, $13)
                 ON CONFLICT (id) DO UPDATE SET address = $2, hostname = $3, zone = $4,
                     labels = $5, total_cores = $6, memory_bytes = $7, gpus = $8,
                     disk_bytes = $9, capacity_gb = $10, by_stats = $11, silence_ms = $13",
                &[
                    &n.id,
                    &info.address,
                    &info.hostname,
                    &info.zone,
                    &labels,
                    &info.capacity.cores,
                    &info.capacity.memory_bytes,
                    &info.capacity.gpus,
                    &info.capacity.disk_bytes,
                    &capacity_gb,
                    &by_stats,
                    &now,
                    &silence_ms,
                ],
            )
            .await?;
            if let Some(before) = before {
                seen_alive(&tx, &n.id, before, now).await?;
            }
            tx.emit(Event::NodeRegistered {
                node_id: n.id.clone(),
            });
            Ok(())
        }
        .await)
    }

    async fn update_node(
        &self,
        node_id: &str,
        labels: serde_json::Map<String, serde_json::Value>,
        capacity: drover_core::Capacity,
        now: Timestamp,
    ) -> Result<()> {
        let now = at(now);
        let labels = serde_json::Value::Object(labels).to_string();
        write_tx!(self, |tx| async {
            let Some(before) = locked_status(&tx, node_id).await? else {
                return Err(StoreError::not_found("spot", node_id).into());
            };
            exec(
                &*tx,
                "UPDATE nodes SET labels = $2, total_cores = $3, memory_bytes = $4, gpus = $5,
                     disk_bytes = $6 WHERE id = $1",
                &[
                    &node_id,
                    &labels,
                    &capacity.cores,
                    &capacity.memory_bytes,
                    &capacity.gpus,
                    &capacity.disk_bytes,
                ],
            )
            .await?;
            seen_alive(&tx, node_id, before, now).await?;
            tx.emit(Event::NodeDescribed {
                node_id: node_id.to_string(),
            });
            tx.emit(Event::NodeUpdated {
                node_id: node_id.to_string(),
                status: node::status_after_heartbeat(before),
            });
            Ok(())
        }
        .await)
    }

    async fn heartbeat(
        &self,
        node_id: &str,
        stats: NodeStats,
        now: Timestamp,
    ) -> Result<NodeStatus> {
        write_tx!(self, |tx| async {
            write_beat(&tx, node_id, &stats, now)
                .await?
                .ok_or_else(|| StoreError::not_found("spot", node_id).into())
        }
        .await)
    }

    async fn flush_heartbeats(&self) -> Result<()> {
        // Every heartbeat is written before it is answered: nothing is held.
        Ok(())
    }

    async fn drain_node(&self, node_id: &str, drain: Drain) -> Result<Node> {
        write_tx!(self, |tx| async {
            let Some(before) = locked_status(&tx, node_id).await? else {
                return Err(StoreError::not_found("spot", node_id).into());
            };
            let after = node::status_after_drain(before, drain).map_err(|reason| {
                StoreError::DrainRefused {
                    id: node_id.to_string(),
                    reason,
                }
            })?;
            if after != before {
                exec(
                    &*tx,
                    "UPDATE nodes SET status = $2 WHERE id = $1",
                    &[&node_id, &after.as_str()],
                )
                .await?;
                tx.emit(drain.event(node_id));
            }
            rows::node_by_id(&*tx, node_id).await
        }
        .await)
    }

    async fn spot_credential(&self, node_id: &str) -> Result<SpotCredential> {
        read!(self, |conn| async {
            let stored = row_opt(
                &conn,
                "SELECT secret_hash FROM nodes WHERE id = $1",
                &[&node_id],
            )
            .await?
            .map(|r| rows::get::<Option<String>>(&r, 0))
            .transpose()?;
            Ok(match stored {
                None => SpotCredential::UnknownSpot,
                Some(None) => SpotCredential::NotIssued,
                Some(Some(hash)) => SpotCredential::Issued { hash },
            })
        }
        .await)
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        read!(self, |conn| async {
            all(
                &conn,
                &format!(
                    "SELECT {} FROM nodes ORDER BY registered_at, id",
                    rows::NODE_COLUMNS
                ),
                &[],
            )
            .await?
            .iter()
            .map(rows::node)
            .collect()
        }
        .await)
    }

    async fn list_nodes_page(&self, page: Page) -> Result<Paged<Node>> {
        read!(self, |conn| async {
            let found = all(
                &conn,
                &format!(
                    "SELECT {}, seq FROM nodes WHERE $1::BIGINT IS NULL OR seq > $1
                     ORDER BY seq LIMIT $2",
                    rows::NODE_COLUMNS
                ),
                &[&page.cursor, &(page.limit as i64 + 1)],
            )
            .await?;
            let items = found
                .iter()
                .map(|r| Ok((rows::node(r)?, rows::get::<i64>(r, 15)?)))
                .collect::<R<Vec<_>>>()?;
            let paged = crate::common::paged(items, page.limit, |(_, seq)| *seq);
            Ok(Paged {
                items: paged.items.into_iter().map(|(n, _)| n).collect(),
                next_cursor: paged.next_cursor,
            })
        }
        .await)
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
        write_tx!(self, |tx| async {
            let forgotten = pick_nodes(&tx, Candidates::Down, cutoff, |f| {
                node::may_forget(&f.view, cutoff)
            })
            .await?;
            if !forgotten.is_empty() {
                exec(&*tx, "DELETE FROM nodes WHERE id = ANY($1)", &[&forgotten]).await?;
            }
            for id in &forgotten {
                tx.emit(Event::NodeForgotten {
                    node_id: id.clone(),
                });
            }
            Ok(forgotten)
        }
        .await)
    }
}
