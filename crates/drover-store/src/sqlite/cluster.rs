//! The cluster's records in SQLite: the [`ClusterStore`] implementation (the lease for
//! background work, the members, the recorded actions).
//!
//! SQL and row handling only: whether a request renews, takes or leaves the lease is asked of
//! `drover_core::cluster::decide_lease`, from the lease read in the same write transaction.
//! Every write goes through the write path (`write.rs`), whose `BEGIN IMMEDIATE` excludes
//! writers in other processes on the same file, so two servers on one file cannot both take
//! the lease; the compare-and-set `WHERE` of each update keeps that true on its own as well.

use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::cluster::{ACTIONS_KEPT, Action, ClusterStore, ClusterView, Member, RecordedAction};
use crate::{Result, StoreError};
use async_trait::async_trait;
use drover_core::Timestamp;
use drover_core::cluster::{Lease, LeaseDecision, decide_lease};
use drover_core::time::format as ts;
use rusqlite::{Connection, params};
use std::time::Duration;

/// The one lease of this version: background work.
const LEASE: &str = "background";

fn epoch_out(epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| StoreError::Internal(format!("epoch {epoch} out of range")))
}

fn lease(conn: &Connection) -> Result<Lease> {
    conn.prepare_cached("SELECT holder, epoch, expires_at FROM cluster_lease WHERE name = ?1")
        .map_err(map_err)?
        .query_row([LEASE], |r| {
            Ok(Lease {
                leader: r.get(0)?,
                epoch: r.get::<_, i64>(1)?.max(0) as u64,
                expires_at: rows::time(r, 2)?,
            })
        })
        .map_err(map_err)
}

fn acquire_or_renew(tx: &Tx<'_>, replica: &str, now: Timestamp, ttl: Duration) -> Result<Lease> {
    let current = lease(tx)?;
    match decide_lease(&current, replica, now, ttl) {
        LeaseDecision::Renew { expires_at } => {
            tx.prepare_cached(
                "UPDATE cluster_lease SET expires_at = ?3, renewed_at = ?4
                 WHERE name = ?1 AND holder = ?2",
            )
            .map_err(map_err)?
            .execute(params![LEASE, replica, ts(&expires_at), ts(&now)])
            .map_err(map_err)?;
        }
        LeaseDecision::Take { epoch, expires_at } => {
            tx.prepare_cached(
                "UPDATE cluster_lease
                 SET holder = ?2, epoch = ?3, expires_at = ?4, acquired_at = ?5, renewed_at = ?5
                 WHERE name = ?1 AND holder = ?6 AND epoch = ?7",
            )
            .map_err(map_err)?
            .execute(params![
                LEASE,
                replica,
                epoch_out(epoch)?,
                ts(&expires_at),
                ts(&now),
                current.leader,
                epoch_out(current.epoch)?,
            ])
            .map_err(map_err)?;
        }
        LeaseDecision::HeldByOther => {}
    }
    lease(tx)
}

fn members(conn: &Connection, since: Timestamp) -> Result<Vec<Member>> {
    conn.prepare_cached(
        "SELECT replica_id, address, first_seen, last_seen FROM cluster_members
         WHERE last_seen >= ?1 ORDER BY replica_id",
    )
    .map_err(map_err)?
    .query_map([ts(&since)], |r| {
        Ok(Member {
            replica_id: r.get(0)?,
            address: r.get(1)?,
            first_seen: rows::time(r, 2)?,
            last_seen: rows::time(r, 3)?,
        })
    })
    .map_err(map_err)?
    .collect::<rusqlite::Result<_>>()
    .map_err(map_err)
}

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn acquire_or_renew(
        &self,
        replica: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease> {
        let replica = replica.to_string();
        self.write(move |tx| acquire_or_renew(tx, &replica, now, ttl))
            .await
    }

    async fn release(&self, replica: &str, now: Timestamp) -> Result<bool> {
        let replica = replica.to_string();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE cluster_lease SET expires_at = ?3
                     WHERE name = ?1 AND holder = ?2 AND expires_at > ?3",
                )
                .map_err(map_err)?
                .execute(params![LEASE, replica, ts(&now)])
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn heartbeat_member(&self, replica: &str, address: &str, now: Timestamp) -> Result<()> {
        let (replica, address) = (replica.to_string(), address.to_string());
        // A liveness write: a lost one reads as a member heard from a little earlier.
        self.write_liveness(move |tx| {
            tx.prepare_cached(
                "INSERT INTO cluster_members (replica_id, address, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (replica_id) DO UPDATE SET address = ?2, last_seen = ?3",
            )
            .map_err(map_err)?
            .execute(params![replica, address, ts(&now)])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn forget_members(&self, cutoff: Timestamp) -> Result<u64> {
        self.write(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM cluster_members WHERE last_seen < ?1")
                .map_err(map_err)?
                .execute([ts(&cutoff)])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn view(&self, members_since: Timestamp) -> Result<ClusterView> {
        self.read(move |conn| {
            // One read transaction, so the lease and the members are of the same moment.
            let tx = conn.transaction().map_err(map_err)?;
            let view = ClusterView {
                lease: lease(&tx)?,
                members: members(&tx, members_since)?,
            };
            tx.finish().map_err(map_err)?;
            Ok(view)
        })
        .await
    }

    async fn record_action(&self, action: Action) -> Result<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO cluster_actions (epoch, replica_id, worker, at) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(map_err)?
            .execute(params![
                epoch_out(action.epoch)?,
                action.replica_id,
                action.worker,
                ts(&action.at)
            ])
            .map_err(map_err)?;
            let seq = tx.last_insert_rowid();
            tx.prepare_cached("DELETE FROM cluster_actions WHERE seq <= ?1")
                .map_err(map_err)?
                .execute([seq - ACTIONS_KEPT as i64])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn actions(&self) -> Result<Vec<RecordedAction>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT seq, epoch, replica_id, worker, at FROM cluster_actions ORDER BY seq",
            )
            .map_err(map_err)?
            .query_map([], |r| {
                Ok(RecordedAction {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    action: Action {
                        epoch: r.get::<_, i64>(1)?.max(0) as u64,
                        replica_id: r.get(2)?,
                        worker: r.get(3)?,
                        at: rows::time(r, 4)?,
                    },
                })
            })
            .map_err(map_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(map_err)
        })
        .await
    }
}
