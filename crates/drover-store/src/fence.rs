//! Fencing of background writes by the leader's epoch.
//!
//! A leader stops its background workers before its lease can run out, by its own clock; that
//! keeps two leaders from *starting* work at once, but not a write sent before the deadline from
//! *landing* after it (a link that comes back and delivers a held COMMIT, a statement queued
//! behind a lock). So every write made inside [`fenced`] first checks, in its own transaction,
//! that the lease still names the same holder under the same epoch, and fails with
//! [`StoreError::Fenced`] otherwise: once another replica has taken the lease (which bumps the
//! epoch), no write of the old term can commit. On PostgreSQL the check locks the lease row
//! (`FOR SHARE`), so a takeover waits for a fenced write in flight and the write that loses sees
//! the new epoch.
//!
//! This module owns the fence and how a write finds it (a tokio task-local, set around one
//! background step, so no store call needs a parameter for it; a task spawned inside the step
//! does not inherit it). It must not decide who leads: `drover_core::cluster` does.

use crate::StoreError;

/// The term a background write belongs to: the lease's holder and epoch when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub replica_id: String,
    pub epoch: u64,
}

impl Fence {
    /// The refusal of a write of this term, once the lease has moved on.
    pub(crate) fn refused(&self) -> StoreError {
        StoreError::Fenced {
            replica_id: self.replica_id.clone(),
            epoch: self.epoch,
        }
    }
}

tokio::task_local! {
    static FENCE: Fence;
}

/// Runs `work` with every store write it makes (on this task) fenced by `fence`.
pub async fn fenced<F: std::future::Future>(fence: Fence, work: F) -> F::Output {
    FENCE.scope(fence, work).await
}

/// The fence of the background step running on this task, if any.
pub(crate) fn current() -> Option<Fence> {
    FENCE.try_with(Fence::clone).ok()
}
