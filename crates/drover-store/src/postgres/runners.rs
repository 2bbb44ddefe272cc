//! The runner registry in PostgreSQL: the [`RunnerStore`] implementation (reservations under
//! the limit, start records, heartbeats, removal).
//!
//! SQL and row handling only: whether a provision reuses, is refused or reserves is asked of
//! `drover_core::runner`, from facts read in the reserving transaction, which holds an advisory
//! lock so that two provisions (on any replicas) can neither pass the limit together nor start
//! two sandboxes for one session.

use super::PgStore;
use super::rows::{self, at};
use super::write::{R, Tx, exec, row, row_opt, rows as all};
use crate::{NewRunner, Page, Paged, Reservation, Result, RunnerStore, StoreError};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use drover_core::runner::{ReservationDecision, ReservationView, decide_reservation};
use drover_core::{Event, Runner, Timestamp};

/// The advisory lock that makes reading the registry and reserving a slot one step.
const RESERVATION_LOCK: i64 = 0x6472_6f76_0002;

async fn by_session<C: GenericClient>(c: &C, session: &str) -> R<Option<Runner>> {
    let sql = format!(
        "SELECT {} FROM runners WHERE session_id = $1",
        rows::RUNNER_COLUMNS
    );
    row_opt(c, &sql, &[&session])
        .await?
        .map(|r| rows::runner(&r))
        .transpose()
}

async fn singleton(tx: &Tx<'_>) -> R<Option<Runner>> {
    let sql = format!(
        "SELECT {} FROM runners WHERE singleton",
        rows::RUNNER_COLUMNS
    );
    row_opt(&**tx, &sql, &[])
        .await?
        .map(|r| rows::runner(&r))
        .transpose()
}

async fn reserve(tx: &Tx<'_>, new: &NewRunner, max: Option<u64>, now: Timestamp) -> R<Reservation> {
    exec(
        &**tx,
        "SELECT pg_advisory_xact_lock($1)",
        &[&RESERVATION_LOCK],
    )
    .await?;
    let active: i64 = rows::get(&row(&**tx, "SELECT count(*) FROM runners", &[]).await?, 0)?;
    let view = ReservationView {
        singleton: new.singleton,
        session_runner: by_session(&**tx, &new.session_id).await?,
        singleton_runner: if new.singleton {
            singleton(tx).await?
        } else {
            None
        },
        active: active as u64,
        max,
    };
    match decide_reservation(view) {
        ReservationDecision::Exists(r) => return Ok(Reservation::Exists(r)),
        ReservationDecision::LimitReached { active } => {
            return Ok(Reservation::LimitReached { active });
        }
        ReservationDecision::Reserve => {}
    }
    exec(
        &**tx,
        "INSERT INTO runners (session_id, driver, status, singleton, created_at, last_heartbeat,
             token_hash)
         VALUES ($1, $2, 'STARTING', $3, $4, $4, $5)",
        &[
            &new.session_id,
            &new.driver,
            &new.singleton,
            &at(now),
            &new.token_hash,
        ],
    )
    .await?;
    let reserved = by_session(&**tx, &new.session_id)
        .await?
        .ok_or_else(|| StoreError::Internal("a reserved runner vanished".into()))?;
    tx.emit(Event::RunnerReserved {
        session_id: new.session_id.clone(),
        singleton: new.singleton,
    });
    Ok(Reservation::Reserved(reserved))
}

async fn list<C: GenericClient>(c: &C, inactive_before: Option<Timestamp>) -> R<Vec<Runner>> {
    let sql = format!(
        "SELECT {} FROM runners WHERE $1::TIMESTAMPTZ IS NULL OR last_heartbeat < $1
         ORDER BY created_at, session_id",
        rows::RUNNER_COLUMNS
    );
    all(c, &sql, &[&inactive_before.map(at)])
        .await?
        .iter()
        .map(rows::runner)
        .collect()
}

#[async_trait]
impl RunnerStore for PgStore {
    async fn reserve_runner(
        &self,
        new: NewRunner,
        max: Option<u64>,
        now: Timestamp,
    ) -> Result<Reservation> {
        write_tx!(self, |tx| reserve(&tx, &new, max, now).await)
    }

    async fn runner_started(
        &self,
        session_id: &str,
        instance: &str,
        endpoint: &str,
        now: Timestamp,
    ) -> Result<Runner> {
        write_tx!(self, |tx| async {
            let changed = exec(
                &*tx,
                "UPDATE runners SET status = 'RUNNING', instance = $2, endpoint = $3,
                     last_heartbeat = $4
                 WHERE session_id = $1",
                &[&session_id, &instance, &endpoint, &at(now)],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::not_found("runner", session_id).into());
            }
            tx.emit(Event::RunnerStarted {
                session_id: session_id.to_string(),
            });
            by_session(&*tx, session_id)
                .await?
                .ok_or_else(|| StoreError::not_found("runner", session_id).into())
        }
        .await)
    }

    async fn get_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        read!(self, |conn| by_session(&conn, session_id).await)
    }

    async fn list_runners(&self) -> Result<Vec<Runner>> {
        read!(self, |conn| list(&conn, None).await)
    }

    async fn list_runners_page(&self, page: Page) -> Result<Paged<Runner>> {
        read!(self, |conn| async {
            let found = all(
                &conn,
                &format!(
                    "SELECT {}, seq FROM runners WHERE $1::BIGINT IS NULL OR seq > $1
                     ORDER BY seq LIMIT $2",
                    rows::RUNNER_COLUMNS
                ),
                &[&page.cursor, &(page.limit as i64 + 1)],
            )
            .await?;
            let items = found
                .iter()
                .map(|r| Ok((rows::runner(r)?, rows::get::<i64>(r, 9)?)))
                .collect::<R<Vec<_>>>()?;
            let paged = crate::common::paged(items, page.limit, |(_, seq)| *seq);
            Ok(Paged {
                items: paged.items.into_iter().map(|(r, _)| r).collect(),
                next_cursor: paged.next_cursor,
            })
        }
        .await)
    }

    async fn inactive_runners(&self, cutoff: Timestamp) -> Result<Vec<Runner>> {
        read!(self, |conn| list(&conn, Some(cutoff)).await)
    }

    async fn touch_runner(&self, session_id: &str, now: Timestamp) -> Result<Option<Runner>> {
        write_tx!(self, |tx| async {
            let changed = exec(
                &*tx,
                "UPDATE runners SET last_heartbeat = $2 WHERE session_id = $1",
                &[&session_id, &at(now)],
            )
            .await?;
            if changed > 0 {
                tx.emit(Event::RunnerTouched {
                    session_id: session_id.to_string(),
                });
            }
            by_session(&*tx, session_id).await
        }
        .await)
    }

    async fn remove_runner(&self, session_id: &str) -> Result<Option<Runner>> {
        write_tx!(self, |tx| async {
            let runner = by_session(&*tx, session_id).await?;
            if runner.is_some() {
                exec(
                    &*tx,
                    "DELETE FROM runners WHERE session_id = $1",
                    &[&session_id],
                )
                .await?;
                tx.emit(Event::RunnerRemoved {
                    session_id: session_id.to_string(),
                });
            }
            Ok(runner)
        }
        .await)
    }
}
