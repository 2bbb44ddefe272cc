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
use drover_core::journal::{Entry, State};
use drover_core::sink_routing::SinkRole;
use drover_core::{JobCounts, Timestamp};
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

    /// Records that the entries `blob.first..=blob.last` were posted as one blob, which
    /// publishes them: the next blob starts after `blob.last`. A blob that does not start
    /// right after the last one recorded is refused ([`crate::StoreError::Conflict`]): two
    /// publishers (a leader that lost its lease and its successor) cannot both record one.
    async fn record_blob(&self, blob: NewBlob) -> Result<BlobRecord>;

    /// The last entry published (in a blob recorded); 0 when none.
    async fn published_upto(&self) -> Result<u64>;

    /// Blobs posted to a fallback sink and not yet reconciled to the primary, oldest first.
    async fn pending_blobs(&self, limit: u32) -> Result<Vec<BlobRecord>>;

    /// The blob `id` was posted again to the primary, at `height`, and its commitment checked.
    async fn blob_reconciled(&self, id: i64, height: u64, at: Timestamp) -> Result<()>;

    /// An attempt to reconcile blob `id` failed with `error`.
    async fn blob_reconcile_failed(&self, id: i64, error: String) -> Result<()>;

    /// Rebuilds into this store, which must hold nothing yet, the state that `entries` (a
    /// whole journal, from entry 1, as read back from a sink) replay to, and keeps the entries
    /// as its own journal, published already (they came from a sink). One transaction: all or
    /// nothing. Answers the last entry's number. What the journal does not carry takes a
    /// neutral value: a node's address is empty and it was last heard from at `now`, a
    /// RUNNING task's lease starts at `now`, task payloads come from their job's spec, results
    /// are empty.
    async fn restore(&self, entries: Vec<Entry>, now: Timestamp) -> Result<u64>;

    /// The last entry the primary sink holds with every one before it: published to the
    /// primary, or to a fallback and reconciled since. Entries up to it may be compacted.
    async fn primary_holds_upto(&self) -> Result<u64>;

    /// The latest snapshot (the journaled state as of entry `applied`), behind which the
    /// entries were compacted; `None` before the first compaction.
    async fn snapshot(&self) -> Result<Option<State>>;

    /// Keeps `state`, the journaled state as of entry `state.applied`, as the snapshot, and
    /// drops the entries up to it (one transaction). Refused unless the primary holds them
    /// all ([`JournalStore::primary_holds_upto`]): the journal never loses an entry that no
    /// sink keeps. Numbering goes on after the dropped entries. Answers how many were dropped.
    async fn compact(&self, state: State, at: Timestamp) -> Result<u64>;
}

/// What a rebuild writes for one task: when it started, its lease (while RUNNING) and when it
/// finished, all at `now` (the journal keeps moves, not their times).
pub(crate) fn task_times(
    task: &drover_core::journal::TaskImage,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>, Option<Timestamp>) {
    let at = |yes: bool| yes.then_some(now);
    (
        at(task.attempt > 0),
        at(task.status == drover_core::TaskStatus::Running),
        at(task.status.is_terminal()),
    )
}

/// What a rebuild writes for each job: its counts as the replay derives them, its status by
/// the core's rule, and whether it has started (a task of it was claimed).
pub(crate) fn job_rows(state: &State) -> Vec<(String, JobCounts, drover_core::JobStatus, bool)> {
    let derived = state.job_counts();
    state
        .jobs
        .values()
        .map(|job| {
            let counts = derived.get(job.id.as_str()).copied().unwrap_or_default();
            let started = (state.tasks.values()).any(|t| t.job == job.id && t.attempt > 0);
            let status = counts.status(job.cancelled, started);
            (job.id.clone(), counts, status, started)
        })
        .collect()
}

/// The statement that reads a job's image and its counters, the same on both backends (the
/// table and column names are shared); a backend adds its own `WHERE` with its placeholder.
macro_rules! job_image_sql {
    () => {
        "SELECT id, name, origin, priority, max_attempts, total_tasks, cancelled, new_tasks,
             running_tasks, completed_tasks, failed_tasks, cancelled_tasks, task_timeout_ms,
             spec, run FROM jobs"
    };
}
pub(crate) use job_image_sql;

/// The statement that reads the placement stats of the nodes that reported some, as
/// [`job_image_sql`].
macro_rules! stats_sql {
    () => {
        "SELECT id, cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure FROM nodes
         WHERE cpu_free IS NOT NULL"
    };
}
pub(crate) use stats_sql;

/// What a rebuild creates a job from: the job as created, and its sweep, from the job's image.
pub(crate) fn job_to_create(
    job: &drover_core::journal::JobImage,
) -> Result<(crate::NewJob, drover_core::sweep::Sweep)> {
    let internal = |e: &dyn std::fmt::Display| {
        crate::StoreError::Internal(format!("rebuilding {}: {e}", job.id))
    };
    let sweep = drover_core::sweep::Sweep::from_spec_json(&job.spec).map_err(|e| internal(&e))?;
    let run = (job.run.as_deref())
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| internal(&e))?;
    let new = crate::NewJob {
        id: Some(job.id.clone()),
        name: job.name.clone(),
        origin: job.origin.clone(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        task_timeout: std::time::Duration::from_millis(job.timeout_ms),
        run,
    };
    Ok((new, sweep))
}

/// A snapshot as the stores keep it (JSON text).
pub(crate) fn encode_snapshot(state: &State) -> Result<String> {
    serde_json::to_string(state)
        .map_err(|e| crate::StoreError::Internal(format!("snapshot not encoded: {e}")))
}

pub(crate) fn decode_snapshot(text: &str) -> Result<State> {
    serde_json::from_str(text)
        .map_err(|e| crate::StoreError::Internal(format!("the journal's snapshot: {e}")))
}

/// The replayed state of a whole journal for [`JournalStore::restore`], or why it cannot be
/// rebuilt.
pub(crate) fn state_to_restore(entries: &[Entry]) -> Result<State> {
    if entries.first().is_some_and(|e| e.seq != 1) {
        return Err(crate::StoreError::Unsupported(format!(
            "a rebuild starts from the journal's first entry; these start at entry {}",
            entries[0].seq
        )));
    }
    drover_core::journal::replay(entries)
        .map_err(|e| crate::StoreError::Unsupported(format!("the journal cannot be replayed: {e}")))
}

/// A blob of journal entries as posted to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    pub first: u64,
    pub last: u64,
    pub sink: SinkRole,
    /// The height the sink gave it.
    pub height: u64,
    pub commitment: String,
    pub size: u64,
    pub posted_at: Timestamp,
}

/// A blob as recorded, with its reconciliation to the primary when it went to a fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub id: i64,
    pub blob: NewBlob,
    /// When it was posted again to the primary, and the height it got there.
    pub reconciled: Option<(Timestamp, u64)>,
    pub retry_count: u32,
    pub last_error: Option<String>,
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
