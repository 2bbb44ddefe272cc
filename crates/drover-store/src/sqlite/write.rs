//! The one write path of the SQLite store: every change is one `BEGIN IMMEDIATE` transaction on
//! the writer connection, and the events it caused reach the observers only after it commits.
//!
//! This module owns the transaction wrapper ([`Tx`]) on which write code records its events,
//! the order commit, then notify, and the health probe's write. It must not decide anything
//! about jobs, nodes or runners, and nothing else may open a write transaction.

use super::{BUSY_TIMEOUT, HEALTH_BUSY_TIMEOUT, SqliteStore, map_err};
use crate::{Result, StoreError};
use drover_core::Event;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::cell::RefCell;
use std::ops::Deref;

/// An open write transaction and the events the write has caused so far. Derefs to the
/// transaction, so SQL helpers take `&Transaction` (or `&Connection`) as before.
pub(super) struct Tx<'c> {
    tx: Transaction<'c>,
    // A RefCell so that helpers holding `&Tx` can both run SQL and record what it did.
    events: RefCell<Vec<Event>>,
}

impl<'c> Deref for Tx<'c> {
    type Target = Transaction<'c>;

    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl Tx<'_> {
    /// Records an event of this write; it is published only if the write commits.
    pub(super) fn emit(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }
}

impl SqliteStore {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, commits, then hands the events `f`
    /// recorded to the observers. If `f` fails or the commit fails, the transaction rolls back
    /// (on drop) and no event is published.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let observers = self.observers.clone();
        self.with_conn(move |conn| {
            let tx = Tx {
                tx: conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(map_err)?,
                events: RefCell::default(),
            };
            let out = f(&tx)?;
            let Tx { tx, events } = tx;
            let events = events.into_inner();
            // The event journal will insert `events` here, inside this transaction, so that a
            // change and its record commit together.
            tx.commit().map_err(map_err)?;
            observers.notify(&events);
            Ok(out)
        })
        .await
    }
}

impl SqliteStore {
    /// Proves the store can take a write: bumps the `write_probe` row of `meta` in a
    /// `BEGIN IMMEDIATE` transaction and commits, waiting at most [`HEALTH_BUSY_TIMEOUT`] for
    /// another process's lock. The commit appends a real frame to the WAL (so a full disk or a
    /// read-only file fails it, where a rolled-back transaction would not), but runs with
    /// `synchronous = NORMAL`: the row carries nothing worth an fsync, and health is an open
    /// endpoint that must not turn each poll into a flush of the disk every write waits on.
    /// The next real commit's fsync covers the frame. If the writer cannot be put back to
    /// `synchronous = FULL`, it is closed: a write that is not durable must never be
    /// acknowledged, so later writes fail as unavailable instead.
    pub(super) async fn probe_write(&self) -> Result<()> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = writer
                .lock()
                .map_err(|_| StoreError::Internal("connection lock poisoned".into()))?;
            let conn = guard
                .as_mut()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            conn.busy_timeout(HEALTH_BUSY_TIMEOUT).map_err(map_err)?;
            let probed = conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(map_err)
                .and_then(|()| bump_probe(conn));
            let restored = conn
                .pragma_update(None, "synchronous", "FULL")
                .and_then(|()| conn.busy_timeout(BUSY_TIMEOUT));
            if let Err(e) = restored {
                *guard = None;
                return Err(StoreError::Unavailable(format!(
                    "the writer could not be made durable again ({e}); the store is closed"
                )));
            }
            probed
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

fn bump_probe(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('write_probe', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_health_probe_leaves_the_writer_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
        store.probe_write().await.unwrap();
        store.probe_write().await.unwrap();
        // 2 is FULL: every acknowledged write after a probe is still synced before its answer.
        let mode: i64 = store
            .with_conn(|c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(map_err)
            })
            .await
            .unwrap();
        assert_eq!(mode, 2);
    }
}
