//! The cluster's records in PostgreSQL: the [`ClusterStore`] implementation (the lease for
//! background work, the members, the recorded actions), as `crate::cluster` specifies it.
//!
//! SQL and row handling only: whether a request renews, takes or leaves the lease is asked of
//! `drover_core::cluster::decide_lease`, from the lease read in the same transaction. Under
//! READ COMMITTED two replicas may read the same expired lease; the compare-and-set `WHERE` of
//! each update lets only the first take it, and the other reads the winner afterwards.

use super::PgStore;
use super::rows::{self, at};
use super::write::{R, exec, row, rows as all};
use crate::cluster::{ACTIONS_KEPT, Action, ClusterStore, ClusterView, Member, RecordedAction};
use crate::{Result, StoreError};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use drover_core::Timestamp;
use drover_core::cluster::{Lease, LeaseDecision, decide_lease};
use std::time::Duration;

/// The one lease of this version: background work.
const LEASE: &str = "background";

fn epoch_out(epoch: u64) -> R<i64> {
    i64::try_from(epoch)
        .map_err(|_| StoreError::Internal(format!("epoch {epoch} out of range")).into())
}

async fn lease<C: GenericClient>(c: &C) -> R<Lease> {
    let r = row(
        c,
        "SELECT holder, epoch, expires_at FROM cluster_lease WHERE name = $1",
        &[&LEASE],
    )
    .await?;
    Ok(Lease {
        leader: rows::get(&r, 0)?,
        epoch: rows::count(&r, 1)?,
        expires_at: rows::get(&r, 2)?,
    })
}

async fn members<C: GenericClient>(c: &C, since: Timestamp) -> R<Vec<Member>> {
    all(
        c,
        "SELECT replica_id, address, first_seen, last_seen FROM cluster_members
         WHERE last_seen >= $1 ORDER BY replica_id",
        &[&at(since)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Member {
            replica_id: rows::get(r, 0)?,
            address: rows::get(r, 1)?,
            first_seen: rows::get(r, 2)?,
            last_seen: rows::get(r, 3)?,
        })
    })
    .collect()
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn acquire_or_renew(
        &self,
        replica: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease> {
        write_tx!(self, |tx| async {
            let current = lease(&*tx).await?;
            match decide_lease(&current, replica, now, ttl) {
                LeaseDecision::Renew { expires_at } => {
                    exec(
                        &*tx,
                        "UPDATE cluster_lease SET expires_at = $3, renewed_at = $4
                         WHERE name = $1 AND holder = $2",
                        &[&LEASE, &replica, &at(expires_at), &at(now)],
                    )
                    .await?;
                }
                LeaseDecision::Take { epoch, expires_at } => {
                    exec(
                        &*tx,
                        "UPDATE cluster_lease
                         SET holder = $2, epoch = $3, expires_at = $4, acquired_at = $5,
                             renewed_at = $5
                         WHERE name = $1 AND holder = $6 AND epoch = $7",
                        &[
                            &LEASE,
                            &replica,
                            &epoch_out(epoch)?,
                            &at(expires_at),
                            &at(now),
                            &current.leader,
                            &epoch_out(current.epoch)?,
                        ],
                    )
                    .await?;
                }
                LeaseDecision::HeldByOther => {}
            }
            lease(&*tx).await
        }
        .await)
    }

    async fn release(&self, replica: &str, now: Timestamp) -> Result<bool> {
        write_tx!(self, |tx| async {
            let n = exec(
                &*tx,
                "UPDATE cluster_lease SET expires_at = $3
                 WHERE name = $1 AND holder = $2 AND expires_at > $3",
                &[&LEASE, &replica, &at(now)],
            )
            .await?;
            Ok(n > 0)
        }
        .await)
    }

    async fn heartbeat_member(&self, replica: &str, address: &str, now: Timestamp) -> Result<()> {
        write_tx!(self, |tx| async {
            exec(
                &*tx,
                "INSERT INTO cluster_members (replica_id, address, first_seen, last_seen)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (replica_id) DO UPDATE SET address = $2, last_seen = $3",
                &[&replica, &address, &at(now)],
            )
            .await?;
            Ok(())
        }
        .await)
    }

    async fn forget_members(&self, cutoff: Timestamp) -> Result<u64> {
        write_tx!(self, |tx| async {
            exec(
                &*tx,
                "DELETE FROM cluster_members WHERE last_seen < $1",
                &[&at(cutoff)],
            )
            .await
        }
        .await)
    }

    async fn view(&self, members_since: Timestamp) -> Result<ClusterView> {
        // One snapshot, so the lease and the members are of the same moment.
        snapshot!(self, |conn| async {
            Ok(ClusterView {
                lease: lease(&conn).await?,
                members: members(&conn, members_since).await?,
            })
        }
        .await)
    }

    async fn record_action(&self, action: Action) -> Result<()> {
        write_tx!(self, |tx| async {
            let r = row(
                &*tx,
                "INSERT INTO cluster_actions (epoch, replica_id, worker, at)
                 VALUES ($1, $2, $3, $4) RETURNING seq",
                &[
                    &epoch_out(action.epoch)?,
                    &action.replica_id,
                    &action.worker,
                    &at(action.at),
                ],
            )
            .await?;
            let seq: i64 = rows::get(&r, 0)?;
            exec(
                &*tx,
                "DELETE FROM cluster_actions WHERE seq <= $1",
                &[&(seq - ACTIONS_KEPT as i64)],
            )
            .await?;
            Ok(())
        }
        .await)
    }

    async fn actions(&self) -> Result<Vec<RecordedAction>> {
        read!(self, |conn| async {
            all(
                &conn,
                "SELECT seq, epoch, replica_id, worker, at FROM cluster_actions ORDER BY seq",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(RecordedAction {
                    seq: rows::count(r, 0)?,
                    action: Action {
                        epoch: rows::count(r, 1)?,
                        replica_id: rows::get(r, 2)?,
                        worker: rows::get(r, 3)?,
                        at: rows::get(r, 4)?,
                    },
                })
            })
            .collect()
        }
        .await)
    }
}
