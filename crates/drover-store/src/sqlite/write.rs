//! The one write path of the SQLite store: every change is one `BEGIN IMMEDIATE` transaction on
//! the writer connection, and the events it caused reach the observers only after it commits.
//!
//! This module owns the transaction wrapper ([`Tx`]) on which write code records its events,
//! and the order commit, then notify. It must not decide anything about jobs, nodes or runners,
//! and nothing else may open a write transaction.

use super::{SqliteStore, map_err};
use crate::Result;
use drover_core::Event;
use rusqlite::{Transaction, TransactionBehavior};
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
