//! The runner registry in SQLite: the [`RunnerStore`] implementation (reservations under the
//! limit, start records, heartbeats, removal).
//!
//! SQL and row handling only: whether a provision reuses, is refused or reserves is asked of
//! `drover_core::runner`, from facts read in the reserving transaction.

use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::{NewRunner, Page, Paged, Reservation, Result, RunnerStore, StoreError};
use async_trait::async_trait;
use drover_core::runner::{ReservationDecision, ReservationView, decide_reservation};
use drover_core::time::format as ts;
use drover_core::{Event, Runner, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

fn by_session(conn: &Connection, session: &str) -> Result<Option<Runner>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM runners WHERE session_id = ?1",
        rows::RUNNER_COLUMNS
    ))
    .map_err(map_err)?
    .query_row([session], rows::runner)
    .optional()
    .map_err(map_err)
}

fn singleton(conn: &Connection) -> Result<Option<Runner>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM runners WHERE singleton",
        rows::RUNNER_COLUMNS
    ))
    .map_err(map_err)?
    .query_row([], rows::runner)
    .optional()
    .map_err(map_err)
}

/// Reserves a slot: the existing runner if the session (or the singleton) has one, a refusal at
/// the limit, else a new STARTING row. One transaction, so two provisions can neither pass the
/// limit together nor start two sandboxes for one session.
fn reserve(tx: &Tx<'_>, new: &NewRunner, max: Option<u64>, now: Timestamp) -> Result<Reservation> {
    let active: u64 = tx
        .query_row("SELECT count(*) FROM runners", [], |r| r.get(0))
        .map_err(map_err)?;
    let view = ReservationView {
        singleton: new.singleton,
        session_runner: by_session(tx, &new.session_id)?,
        singleton_runner: if new.singleton { singleton(tx)? } else { None },
        active,
        max,
    };
    match decide_reservation(view) {
        ReservationDecision::Exists(r) => return Ok(Reservation::Exists(r)),
        ReservationDecision::LimitReached { active } => {
            return Ok(Reservation::LimitReached { active });
        }
        ReservationDecision::Reserve => {}
    }
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('runner_seq', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
             RETURNING CAST(value AS INTEGER)",
        )
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .map_err(map_err)?;
    tx.prepare_cached(
        "INSERT INTO runners (session_id, driver, status, singleton, created_at, last_heartbeat,
             token_hash, seq)
         VALUES (?1, ?2, 'STARTING', ?3, ?4, ?4, ?5, ?6)",
    )
    .map_err(map_err)?
    .execute(params![
        new.session_id,
        new.driver,
        new.singleton,
        ts(&now),
        new.token_hash,
        seq
    ])
    .map_err(map_err)?;
    let reserved = by_session(tx, &new.session_id)?
        .ok_or_else(|| StoreError::Internal("a reserved runner vanished".into()))?;
    tx.emit(Event::RunnerReserved {
        session_id: new.session_id.clone(),
        singleton: new.singleton,
    });
    Ok(Reservation::Reserved(reserved))
}

fn started(
    tx: &Tx<'_>,
    session: &str,
    instance: &str,
    endpoint: &str,
    now: Timestamp,
) -> Result<Runner> {
    let changed = tx
        .prepare_cached(
            "UPDATE runners SET status = 'RUNNING', instance = ?2, endpoint = ?3,
                 last_heartbeat = ?4
             WHERE session_id = ?1",
        )
        .map_err(map_err)?
        .execute(params![session, instance, endpoint, ts(&now)])
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StoreError::not_found("runner", session));
    }
    tx.emit(Event::RunnerStarted {
        session_id: session.to_string(),
    });
    by_session(tx, session)?.ok_or_else(|| StoreError::not_found("runner", session))
}

fn touch(tx: &Tx<'_>, session: &str, now: Timestamp) -> Result<Option<Runner>> {
    let changed = tx
        .prepare_cached("UPDATE runners SET last_heartbeat = ?2 WHERE session_id = ?1")
        .map_err(map_err)?
        .execute(params![session, ts(&now)])
        .map_err(map_err)?;
    if changed > 0 {
        tx.emit(Event::RunnerTouched {
            session_id: session.to_string(),
        });
    }
    by_session(tx, session)
}

fn remove(tx: &Tx<'_>, session: &str) -> Result<Option<Runner>> {
    let runner = by_session(tx, session)?;
    if runner.is_some() {
        tx.prepare_cached("DELETE FROM runners WHERE session_id = ?1")
            .map_err(map_err)?
            .execute([session])
            .map_err(map_err)?;
        tx.emit(Event::RunnerRemoved {
            session_id: session.to_string(),
        });
    }
    Ok(runner)
}

fn list(conn: &Connection, inactive_before: Option<Timestamp>) -> Result<Vec<Runner>> {
    let cutoff = inactive_before.map(|t| ts(&t));
    conn.prepare_cached(&format!(
        "SELECT {} FROM runners WHERE ?1 IS NULL OR last_heartbeat < ?1
         ORDER BY created_at, session_id",
        rows::RUNNER_COLUMNS
    ))
    .map_err(map_err)?
    .query_map([cutoff], rows::runner)
    .map_err(map_err)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(map_err)
}

fn list_page(conn: &Connection, page: Page) -> Result<Paged<Runner>> {
    let items = conn
        .prepare_cached(&format!(
            "SELECT {}, seq AS list_seq FROM runners WHERE ?1 IS NULL OR seq > ?1
             ORDER BY seq LIMIT ?2",
            rows::RUNNER_COLUMNS
        ))
        .map_err(map_err)?
        .query_map(params![page.cursor, page.limit as i64 + 1], |r| {
            Ok((rows::runner(r)?, r.get::<_, i64>("list_seq")?))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    let paged = crate::common::paged(items, page.limit, |(_, seq)| *seq);
    Ok(Paged {
        items: paged.items.into_iter().map(|(r, _)| r).collect(),
        next_cursor: paged.next_cursor,
    })
}

#[async_trait]
impl RunnerStore for SqliteStore {
    async fn reserve_runner(
        &self,
        new: NewRunner,
        max: Option<u64>,
        now: Timestamp,
    ) -> Result<Reservation> {
        self.write(move |tx| reserve(tx, &new, max, now)).await
    }

    async fn runner_started(
        &self,
        session_id: &str,
        instance: &str,
        endpoint: &str,
        now: Timestamp,
    ) -> Result<Runner> {
        let (session, instance, endpoint) = (
            session_id.to_string(),
            instance.to_string(),
            endpoint.to_string(),
        );
        self.write(move |tx| started(tx, &session, &instance, &endpoint, now))
            .await
    }

    async fn get_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.read(move |conn| by_session(conn, &session)).await
    }

    async fn list_runners(&self) -> Result<Vec<Runner>> {
        self.read(|conn| list(conn, None)).await
    }

    async fn list_runners_page(&self, page: Page) -> Result<Paged<Runner>> {
        self.read(move |conn| list_page(conn, page)).await
    }

    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>> {
        self.read(move |conn| list(conn, Some(cutoff))).await
    }

    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.write(move |tx| touch(tx, &session, now)).await
    }

    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        let session = session_id.to_string();
        self.write(move |tx| remove(tx, &session)).await
    }
}
