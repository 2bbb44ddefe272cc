//! The runner registry in SQLite: reservations under the limit, start records, heartbeats,
//! removal, and the server's instance id. Each function runs inside the caller's transaction.

use super::{map_err, rows};
use crate::{NewRunner, Reservation, Result, StoreError};
use drover_core::time::format as ts;
use drover_core::{Runner, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn by_session(conn: &Connection, session: &str) -> Result<Option<Runner>> {
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
pub(super) fn reserve(
    conn: &Connection,
    new: &NewRunner,
    max: Option<u64>,
    now: Timestamp,
) -> Result<Reservation> {
    let existing = if new.singleton {
        singleton(conn)?
    } else {
        by_session(conn, &new.session_id)?
    };
    if let Some(r) = existing {
        return Ok(Reservation::Exists(r));
    }
    if let Some(max) = max {
        let active: u64 = conn
            .query_row("SELECT count(*) FROM runners", [], |r| r.get(0))
            .map_err(map_err)?;
        if active >= max {
            return Ok(Reservation::LimitReached { active });
        }
    }
    let now = ts(&now);
    conn.prepare_cached(
        "INSERT INTO runners (session_id, driver, status, singleton, created_at, last_heartbeat)
         VALUES (?1, ?2, 'STARTING', ?3, ?4, ?4)",
    )
    .map_err(map_err)?
    .execute(params![new.session_id, new.driver, new.singleton, now])
    .map_err(map_err)?;
    let reserved = by_session(conn, &new.session_id)?
        .ok_or_else(|| StoreError::Internal("a reserved runner vanished".into()))?;
    Ok(Reservation::Reserved(reserved))
}

pub(super) fn started(
    conn: &Connection,
    session: &str,
    instance: &str,
    endpoint: &str,
    now: Timestamp,
) -> Result<Runner> {
    let changed = conn
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
    by_session(conn, session)?.ok_or_else(|| StoreError::not_found("runner", session))
}

pub(super) fn touch(conn: &Connection, session: &str, now: Timestamp) -> Result<Option<Runner>> {
    conn.prepare_cached("UPDATE runners SET last_heartbeat = ?2 WHERE session_id = ?1")
        .map_err(map_err)?
        .execute(params![session, ts(&now)])
        .map_err(map_err)?;
    by_session(conn, session)
}

pub(super) fn remove(conn: &Connection, session: &str) -> Result<Option<Runner>> {
    let runner = by_session(conn, session)?;
    if runner.is_some() {
        conn.prepare_cached("DELETE FROM runners WHERE session_id = ?1")
            .map_err(map_err)?
            .execute([session])
            .map_err(map_err)?;
    }
    Ok(runner)
}

pub(super) fn list(conn: &Connection, inactive_before: Option<Timestamp>) -> Result<Vec<Runner>> {
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

/// This data directory's server identity, made on first use.
pub(super) fn instance_id(conn: &Connection) -> Result<String> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'instance_id'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = drover_core::ids::instance_id();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('instance_id', ?1)",
        [&id],
    )
    .map_err(map_err)?;
    Ok(id)
}
