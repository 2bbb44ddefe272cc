//! The store's one error type. Each variant tells the caller what to do about it.

use drover_core::JobStatus;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist: tell the client (404).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// The node is DOWN: it must heartbeat (or register again) before it gets work.
    #[error("spot {0} is DOWN; send a heartbeat or register again before claiming")]
    NodeDown(String),

    /// An operator's drain or undrain of a node that is DOWN: nothing changed. It can be asked
    /// again once the node's heartbeats bring it back UP.
    #[error("spot {id} is DOWN: {reason}")]
    DrainRefused {
        id: String,
        reason: drover_core::node::DrainRefused,
    },

    /// The job finished before the request; nothing was changed.
    #[error("job {id} is already {status}; nothing to cancel")]
    JobFinished { id: String, status: JobStatus },

    /// The registry holds the most `kind`s allowed; nothing was written. Free one (or raise the
    /// limit) and retry.
    #[error("the registry holds {limit} {kind}s, the limit")]
    LimitReached { kind: &'static str, limit: u64 },

    /// The store cannot be reached or is busy: retry later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// The connection to the database was lost while a write was committing: it may or may not
    /// have been made. Read the state back before repeating a write that is not idempotent.
    #[error(
        "store connection lost while committing; the change may or may not have been made: {0}"
    )]
    OutcomeUnknown(String),

    /// A background write of a leader's term, refused because another replica has taken the
    /// lease since (`fence.rs`): this replica must stop acting as leader.
    #[error(
        "replica {replica_id} no longer holds the leader's lease of epoch {epoch}; the write was refused"
    )]
    Fenced { replica_id: String, epoch: u64 },

    /// A journal blob that does not continue the published journal: another publisher
    /// recorded the entries up to `published` since this one read it. Read the cursor again.
    #[error(
        "the journal is published up to entry {published}; a blob starting at {first} does not follow it"
    )]
    OutOfOrder { published: u64, first: u64 },

    /// Entries not yet held by the primary sink were to be compacted: nothing was dropped.
    #[error(
        "the primary sink holds the journal up to entry {held}; entries up to {upto} cannot be compacted yet"
    )]
    NotPublished { upto: u64, held: u64 },

    /// The store location names nothing this build can open: fix the setting.
    #[error("{0}")]
    Unsupported(String),

    /// A bug or corrupt data: nothing the client can fix (500).
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}
