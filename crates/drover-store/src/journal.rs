//! The event journal's side of the store: reading the entries back and reading the live tables
//! as the journaled state, for the consistency check.
//!
//! Appending is not here: each backend's write path appends a write's entries inside that
//! write's transaction (savepoint), just before it commits, so a change and its record commit
//! together or not at all, and a write that rolls back consumes no sequence number. What an
//! entry carries and how it is replayed is `drover_core::journal`'s; this module must not
//! re-decide it.

use crate::Result;
use async_trait::async_trait;
use drover_core::JobCounts;
use drover_core::journal::{Entry, State};
use std::collections::BTreeMap;

/// The journal of one store.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Entries after `after`, oldest first, at most `limit` of them.
    async fn journal(&self, after: u64, limit: u32) -> Result<Vec<Entry>>;

    /// The last entry's sequence number; 0 while the journal is empty.
    async fn journal_head(&self) -> Result<u64>;

    /// The journaled state as the live tables hold it, read in one snapshot.
    async fn live_state(&self) -> Result<LiveState>;
}

/// The live tables seen as the journal sees them (`drover_core::journal`'s module docs say
/// what that covers).
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// The journal's head in the same snapshot: a replay up to here must equal `state`.
    pub head: u64,
    /// `applied` is 0: this state was read, not replayed.
    pub state: State,
    /// Every job's counters per status, as the jobs table keeps them.
    pub counts: BTreeMap<String, JobCounts>,
}
