//! The embedded default store: one SQLite file in WAL mode.
//!
//! Two connections, each behind a mutex, serve calls on the blocking pool: one writer (SQLite
//! has a single writer anyway) and one reader, so status pages and listings read the last
//! committed state while a long write (a million-task job) is in progress instead of queueing
//! behind it. `synchronous = FULL` makes each commit durable before the call returns, which is
//! what lets the server acknowledge a change (invariant 3). Writes that arrive together share
//! one commit, and so one fsync (group commit, `write.rs`), each in its own savepoint; the
//! WAL is kept below `journal_size_limit` (`write::WAL_LIMIT`) by the same path.

mod beats;
mod cluster;
mod dispatch;
mod jobs;
mod journal;
mod nodes;
mod ops;
mod placement;
mod rows;
mod runners;
mod schema;
mod write;

use crate::{EventObservers, Result, StoreError, Stores};
use drover_core::lifecycle::AttemptOutcome;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use write::{WAL_LIMIT, WritePath};

/// How long a heartbeat that changes nothing but liveness may be held in memory before it is
/// written (`beats.rs`): the most a crash can take of the heartbeats answered.
pub use beats::FLUSH_AFTER as HELD_HEARTBEATS_WRITTEN_WITHIN;

/// How long a call waits for a lock held by another process before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: every statement of the hot paths stays cached.
const STATEMENT_CACHE: usize = 64;
/// How long the health probe waits: short, so a wedged store shows up as 503 quickly.
pub(super) const HEALTH_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) type Shared = Arc<Mutex<Option<Connection>>>;

/// The SQLite store. Cheap to clone; clones share the connections and the observers.
///
/// It implements every store trait: `jobs.rs`, `nodes.rs`, `runners.rs`, `dispatch.rs` and
/// `ops.rs` hold one aggregate each, and every change goes through [`SqliteStore::write`] (`write.rs`).
#[derive(Clone)]
pub struct SqliteStore {
    writer: Shared,
    reader: Shared,
    path: PathBuf,
    observers: Arc<EventObservers>,
    /// The group-commit queue, its counters and the WAL rule (`write.rs`).
    writes: Arc<WritePath>,
    /// Parsed sweeps of recently claimed or read jobs (`jobs.rs`).
    sweeps: Arc<crate::common::SweepCache>,
    /// Heartbeats of settled nodes not yet written (`beats.rs`).
    beats: Arc<beats::Beats>,
    /// Where the outbox's next looks at its published rows start (`dispatch.rs`).
    outbox: Arc<crate::common::OutboxWindows>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, its parent directory included, and
    /// applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_wal_limit(path, WAL_LIMIT)
    }

    /// [`SqliteStore::open`], truncating the WAL past `wal_limit` bytes instead of the default.
    fn open_with_wal_limit(path: impl AsRef<Path>, wal_limit: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // No SQLite mutex per connection: each connection is used by one thread at a time,
        // behind its own mutex here, and SQLite's locking of every call (bind, step, column,
        // reset) cost a claim and report a twentieth of their instructions.
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(map_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use WAL mode (got {mode}); is it on a network file system?",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(map_err)?;
        // The statement journal of each write's savepoint (group commit) stays in memory
        // instead of spilling to a temporary file past 64 KiB, and the writer keeps the hot
        // pages of a large claim or report cached (32 MiB; SQLite's default is 2 MiB).
        conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;")
            .map_err(map_err)?;
        // SQLite trims the WAL file to this size whenever it restarts the log.
        conn.pragma_update(None, "journal_size_limit", wal_limit as i64)
            .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        // The writer runs no triggers. The schema's triggers keep the job counters and status
        // right when a task is changed by hand (the contract's force reset, from another
        // connection); drover counts each change it makes itself (`jobs.rs`), and a trigger
        // run per updated row, even one whose condition skips it, cost a report an eighth of
        // its instructions (SQLite builds a frame for the trigger's program on every row).
        // Statements are compiled without them from here on.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
            .map_err(map_err)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteStore {
            writes: Arc::new(WritePath::new(&path, wal_limit)),
            writer: Arc::new(Mutex::new(Some(conn))),
            reader: Arc::new(Mutex::new(Some(reader))),
            path,
            observers: Arc::default(),
            sweeps: Arc::default(),
            beats: Arc::default(),
            outbox: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds the database, its WAL and its temporary files.
    fn data_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The store seen through its aggregates, sharing this store's observers.
    pub fn into_stores(self) -> Stores {
        let observers = self.observers.clone();
        Stores::from_backend(self, observers)
    }

    /// Runs `f` with the writer connection on the blocking pool, outside the write path (no
    /// transaction, no events, no group): for tests and settings only.
    #[cfg(test)]
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        on(&self.writer, f).await
    }

    /// Runs the read-only `f` with the reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        on(&self.reader, f).await
    }
}

/// Runs `f` with one of the store's connections on the blocking pool.
async fn on<T, F>(conn: &Shared, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| StoreError::Internal("connection lock poisoned".into()))?;
        let conn = guard
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        f(conn)
    })
    .await
    .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
}

/// Sorts SQLite's errors into "try again later" and "bug".
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DatabaseBusy
            | DatabaseLocked
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | ReadOnly
            | FileLockingProtocolFailed
            | NotADatabase => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Reads an outcome column, refusing values no version of drover writes.
pub(crate) fn attempt_outcome(s: &str) -> rusqlite::Result<AttemptOutcome> {
    AttemptOutcome::parse(s).ok_or_else(|| bad_value(s))
}

pub(crate) fn bad_value(s: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected value {s:?}").into(),
    )
}
