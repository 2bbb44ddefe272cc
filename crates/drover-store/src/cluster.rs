//! The cluster's shared records: the lease that elects one replica to run background work, the
//! replicas seen recently, and the background actions with the epoch each ran under.
//!
//! This module owns the [`ClusterStore`] trait and its input and output types. Whether a
//! request renews, takes or is refused the lease is `drover_core::cluster::decide_lease`'s
//! answer; a backend reads the lease, asks, and writes what it was told. Nothing here reads a
//! clock or decides when a leader must stop acting: the server's election does that
//! (`drover-server/src/cluster.rs`), from `drover_core::cluster::LeaseTiming`.

use crate::Result;
use async_trait::async_trait;
use drover_core::Timestamp;
use drover_core::cluster::Lease;
use std::time::Duration;

/// A replica as the cluster has seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub replica_id: String,
    /// Where it serves (its main listener), as it announced.
    pub address: String,
    /// When it first said it was there (since it was last forgotten).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// The lease and the members seen since a cutoff, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The lease as stored; `leader` is empty while nobody ever took it.
    pub lease: Lease,
    /// Replicas last seen at or after the cutoff, by replica id.
    pub members: Vec<Member>,
}

/// One background step that changed something, and the lease epoch it ran under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub epoch: u64,
    pub replica_id: String,
    /// The worker's name (`task-reaper`, `spot-reaper`, ...).
    pub worker: String,
    /// When the step started, by the replica's clock.
    pub at: Timestamp,
}

/// An [`Action`] as recorded, with its place in the order of recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAction {
    /// Increases with every action recorded, whoever records it.
    pub seq: u64,
    pub action: Action,
}

/// How many recorded actions a backend keeps (the newest); older ones are dropped as new ones
/// arrive, so the record stays small on a long-running cluster.
pub const ACTIONS_KEPT: u64 = 10_000;

/// The cluster's records, shared by every replica on one database.
///
/// # The lease, exactly
///
/// One row, named `background`: `holder` (text, empty before the first holder), `epoch`
/// (integer, 0 before the first holder) and `expires_at`. It is held while `now < expires_at`.
/// [`ClusterStore::acquire_or_renew`] is, in one transaction:
///
/// ```sql
/// SELECT holder, epoch, expires_at FROM cluster_lease WHERE name = 'background';
/// -- drover_core::cluster::decide_lease(current, me, now, ttl) answers Renew, Take or HeldByOther:
/// -- Renew:  UPDATE cluster_lease SET expires_at = $now + ttl
/// --           WHERE name = 'background' AND holder = $me;
/// -- Take:   UPDATE cluster_lease SET holder = $me, epoch = $epoch, expires_at = $now + ttl
/// --           WHERE name = 'background' AND holder = $old_holder AND epoch = $old_epoch;
/// SELECT holder, epoch, expires_at FROM cluster_lease WHERE name = 'background';
/// ```
///
/// The `WHERE` of each `UPDATE` repeats what was read, so the write is a compare-and-set: on a
/// database without SQLite's single writer (PostgreSQL under READ COMMITTED), two replicas
/// that read the same expired lease both try to take it, and only the first update matches;
/// the other updates no row and reads the winner. The same rule as one statement, for a
/// backend that prefers it:
///
/// ```sql
/// UPDATE cluster_lease
///    SET epoch = CASE WHEN holder = $me THEN epoch ELSE epoch + 1 END,
///        holder = $me, expires_at = $now + ttl
///  WHERE name = 'background' AND (holder = $me OR expires_at <= $now)
/// RETURNING holder, epoch, expires_at;
/// -- no row: SELECT holder, epoch, expires_at ... (someone else holds it)
/// ```
///
/// (either way, the answers are those the conformance module `cluster.rs` checks). `$now` is the calling
/// replica's clock, passed in like every `now` of the store: replicas judge expiry by their own
/// clocks, and the leader's safety margin covers their skew.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Asks for the lease for `ttl` at `now` on behalf of `replica`: renews it if `replica`
    /// holds it (same epoch), takes it under the next epoch if it is free or expired, and
    /// otherwise changes nothing. Answers the lease as it stands after the call, so
    /// `lease.leader == replica` means the caller holds it until `lease.expires_at`.
    async fn acquire_or_renew(&self, replica: &str, now: Timestamp, ttl: Duration)
    -> Result<Lease>;

    /// Gives the lease up if `replica` holds it: it expires at `now` (holder and epoch stay, so
    /// the next holder's epoch is higher). Answers whether it was `replica`'s. SQL:
    /// `UPDATE cluster_lease SET expires_at = $now WHERE name = 'background' AND holder = $me
    /// AND expires_at > $now`.
    async fn release(&self, replica: &str, now: Timestamp) -> Result<bool>;

    /// Records that `replica`, serving at `address`, is there at `now`: an upsert that keeps
    /// `first_seen` (`INSERT ... ON CONFLICT (replica_id) DO UPDATE SET address, last_seen`).
    async fn heartbeat_member(&self, replica: &str, address: &str, now: Timestamp) -> Result<()>;

    /// Removes replicas last seen before `cutoff`; answers how many.
    async fn forget_members(&self, cutoff: Timestamp) -> Result<u64>;

    /// The lease and the replicas last seen at or after `members_since`, in one read.
    async fn view(&self, members_since: Timestamp) -> Result<ClusterView>;

    /// Records a background action. Recorded as told, whatever the lease says now, so that the
    /// record shows what really ran; keeps the newest [`ACTIONS_KEPT`].
    async fn record_action(&self, action: Action) -> Result<()>;

    /// The recorded actions in the order they were recorded.
    async fn actions(&self) -> Result<Vec<RecordedAction>>;
}
