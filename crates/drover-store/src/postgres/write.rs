//! The one write path of the PostgreSQL store: one transaction per call, retried whole when
//! PostgreSQL aborts it for a serialization failure or a deadlock, its events handed to the
//! observers after the commit.
//!
//! This module owns the transaction wrapper ([`Tx`]) on which write code records its events,
//! the order commit, then notify, then answer, the `NOTIFY` that tells other replicas work may
//! have been freed (sent inside the transaction, so PostgreSQL delivers it only if the commit
//! succeeds), the rule that a connection goes back to the pool only when its transaction ended
//! cleanly ([`Conn`]), how PostgreSQL's errors become [`StoreError`]s, and the small query
//! helpers every statement goes through (each statement prepared once per connection). It must
//! not decide anything about jobs, nodes or runners, and nothing else may open a write
//! transaction.

use crate::StoreError;
use deadpool_postgres::GenericClient;
use drover_core::Event;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// How many times a write that PostgreSQL aborted as a conflict is run again before the caller
/// is told to retry later.
pub(super) const MAX_TRIES: u32 = 12;

/// An error inside the PostgreSQL store: a [`StoreError`] for the caller, or a conflict that
/// the write path answers by running the write again.
#[derive(Debug)]
pub(super) enum PgErr {
    Store(StoreError),
    /// A serialization failure or a deadlock: nothing was written, and the same write run
    /// again will likely pass.
    Conflict(String),
}

pub(super) type R<T> = std::result::Result<T, PgErr>;

impl PgErr {
    pub(super) fn into_store(self) -> StoreError {
        match self {
            PgErr::Store(e) => e,
            PgErr::Conflict(why) => StoreError::Unavailable(format!(
                "the database kept refusing the write as conflicting ({why}); retry"
            )),
        }
    }
}

impl From<StoreError> for PgErr {
    fn from(e: StoreError) -> Self {
        PgErr::Store(e)
    }
}

impl From<tokio_postgres::Error> for PgErr {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(code) = e.code() {
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
            {
                return PgErr::Conflict(describe(&e));
            }
            let class = &code.code()[..2];
            // 08 connection exception, 53 insufficient resources (disk full, too many
            // connections), 57 operator intervention (a statement timeout, a shutdown), 58
            // system error: the database cannot serve now, and a retry later may pass.
            // 25006 is a write on a read-only server (a standby after failover).
            let unavailable = matches!(class, "08" | "53" | "57" | "58")
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::LOCK_NOT_AVAILABLE;
            return PgErr::Store(if unavailable {
                StoreError::Unavailable(describe(&e))
            } else {
                StoreError::Internal(describe(&e))
            });
        }
        // No SQLSTATE: the connection is gone (closed, reset, timed out), or a value did not
        // convert (a bug, or data no version of drover writes).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        PgErr::Store(
            if e.is_closed() || io || e.to_string().contains("timed out") {
                StoreError::Unavailable(describe(&e))
            } else {
                StoreError::Internal(describe(&e))
            },
        )
    }
}

/// What went wrong, with the database's own words: the driver's `Display` says only "db error"
/// for an error the server sent.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Why no connection could be had: the database is unreachable or every connection is busy.
pub(super) fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

/// An open write transaction on a pooled connection and the events the write has caused so
/// far. Derefs to the connection, so the query helpers below take it as any other client.
///
/// `BEGIN` is sent when the transaction opens and its answer read at the end, so it shares a
/// round trip with the write's first statement. A transaction that does not end here
/// (its future dropped half way, or its end failed) never goes back to the pool: the
/// connection is closed, and PostgreSQL rolls the transaction back ([`Conn`]).
pub(super) struct Tx<'c> {
    client: &'c deadpool_postgres::Client,
    nonce: &'c str,
    // Mutexes, not RefCells, so that a write's future stays `Send` while helpers hold `&Tx`.
    events: Mutex<Vec<Event>>,
    begin: Mutex<Begin<'c>>,
}

type Sent<'c> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>>;

/// The `BEGIN` of a transaction: sent, its answer not read yet; or read.
enum Begin<'c> {
    Sent(Sent<'c>),
    Answered(Result<(), tokio_postgres::Error>),
}

impl<'c> Deref for Tx<'c> {
    type Target = deadpool_postgres::Client;

    fn deref(&self) -> &Self::Target {
        self.client
    }
}

impl<'c> Tx<'c> {
    /// Opens a transaction on `client`: `BEGIN` is written to the connection at once (its
    /// answer is read when the transaction ends, so the next statement follows it on the same
    /// round trip). `nonce` marks the notices this store sends.
    pub(super) async fn open(client: &'c deadpool_postgres::Client, nonce: &'c str) -> Tx<'c> {
        let mut sent: Sent<'c> = Box::pin(client.batch_execute("BEGIN"));
        // One poll writes the request; the answer waits in the connection's queue for it.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(sent.as_mut().poll(cx))).await;
        let begin = match first {
            std::task::Poll::Ready(answer) => Begin::Answered(answer),
            std::task::Poll::Pending => Begin::Sent(sent),
        };
        Tx {
            client,
            nonce,
            events: Mutex::default(),
            begin: Mutex::new(begin),
        }
    }

    /// Records an event of this write; it is published only if the write commits.
    pub(super) fn emit(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }

    /// The answer to `BEGIN`.
    async fn begun(&self) -> Result<(), tokio_postgres::Error> {
        let pending = {
            let mut begin = self.begin.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *begin, Begin::Answered(Ok(()))) {
                Begin::Answered(answer) => return answer,
                Begin::Sent(sent) => sent,
            }
        };
        pending.await
    }

    /// The `COMMIT` of this write (with the `NOTIFY` that tells other replicas work may have
    /// been freed, when one of its events may have: PostgreSQL delivers it only if the commit
    /// succeeds), as one simple query.
    fn commit_query(&self) -> String {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_query_for(&events)
    }

    /// [`Tx::commit_query`] for a write whose events are `events`.
    fn commit_query_for(&self, events: &[Event]) -> String {
        if events.iter().any(Event::may_free_work) {
            // Both are drover's own words (a constant and an id it made): nothing to quote.
            format!(
                "SELECT pg_notify('{}', '{}'); COMMIT",
                super::WORK_CHANNEL,
                self.nonce
            )
        } else {
            "COMMIT".to_string()
        }
    }

    /// Ends the write: appends its journal entries (`journal.rs`), commits, and answers its
    /// events. The append and the `COMMIT` go out together; the append's statement is prepared
    /// first, so that it can never reach the server after the `COMMIT`, outside the
    /// transaction.
    pub(super) async fn commit(self) -> R<Vec<Event>> {
        self.begun().await?;
        // Taken, not copied: nothing records an event once the write is ending.
        let events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        let at = super::rows::at(chrono::Utc::now());
        let journaled = super::journal::entries_of(&self, &events, at).await?;
        let query = self.commit_query_for(&events);
        let commit = async { self.client.batch_execute(&query).await.map_err(at_commit) };
        match journaled {
            None => commit.await?,
            Some((n, kinds, data)) => {
                let append = self.client.prepare_cached(super::journal::APPEND).await?;
                let append = async {
                    self.client
                        .execute(&append, &[&n, &at, &kinds, &data])
                        .await
                        .map_err(PgErr::from)
                };
                tokio::try_join!(append, commit)?;
            }
        }
        Ok(events)
    }

    /// Ends the write with its last statement, `last`, and the `COMMIT` sent together: one
    /// round trip for both (with the `BEGIN` and anything else still unanswered). `last` is
    /// polled first, so its statement (prepared already) goes out ahead of the `COMMIT`.
    /// Whether the commit notifies is decided from the events recorded before `last` runs:
    /// `last` must not record one that may free work. When `last` fails, PostgreSQL has
    /// aborted the transaction and answers the `COMMIT` with a rollback: nothing was written,
    /// and `last`'s error is answered (the connection is then not clean: see [`Conn`]).
    pub(super) async fn commit_after<T>(&self, last: impl Future<Output = R<T>>) -> R<T> {
        let query = self.commit_query();
        let begun = async { self.begun().await.map_err(PgErr::from) };
        let commit = async { self.client.batch_execute(&query).await.map_err(at_commit) };
        let ((), value, ()) = tokio::try_join!(begun, last, commit)?;
        Ok(value)
    }

    /// The events this write has recorded, taken.
    pub(super) fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Ends a write that failed: rolls it back. Answers whether the connection is clean (no
    /// transaction left open on it) and may go back to the pool.
    pub(super) async fn roll_back(self) -> bool {
        self.begun().await.is_ok() && self.client.batch_execute("ROLLBACK").await.is_ok()
    }
}

/// A pooled connection that goes back to the pool only when its write ended cleanly;
/// otherwise (an error at the end, or the write's future dropped half way) it is closed, so
/// that no transaction left open ever reaches the next caller.
pub(super) struct Conn {
    client: Option<deadpool_postgres::Client>,
    clean: bool,
}

impl Conn {
    pub(super) fn new(client: deadpool_postgres::Client) -> Self {
        Conn {
            client: Some(client),
            clean: false,
        }
    }

    pub(super) fn client(&self) -> &deadpool_postgres::Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("a connection is taken only on drop"))
    }

    /// The write ended cleanly: the connection may go back to the pool.
    pub(super) fn ended_cleanly(&mut self) {
        self.clean = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !self.clean
        {
            // Out of the pool and dropped: the connection closes.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// A failed COMMIT. When the connection broke (or the server was stopped) while the commit was
/// on its way, the transaction may or may not have been made durable: that is not "nothing was
/// done" (503, on which a client moves the same request to another replica), so it is told
/// apart. Any other failure at commit (a conflict, a full disk) means nothing was written.
fn at_commit(e: tokio_postgres::Error) -> PgErr {
    let broken = match e.code() {
        Some(code) => matches!(&code.code()[..2], "08" | "57"),
        None => true,
    };
    match PgErr::from(e) {
        PgErr::Store(StoreError::Unavailable(m)) if broken => {
            PgErr::Store(StoreError::OutcomeUnknown(m))
        }
        other => other,
    }
}

/// Runs `work` (statements on `tx`) on each statement's generic plan: the hot path's claims
/// and reports are planned once per connection instead of on every run (`PgStore::open` says
/// why those plans are index plans). Reads elsewhere keep PostgreSQL's own choice, since a
/// statement with optional filters is better planned for the filters given. The setting goes
/// out ahead of `work`'s first statement, on the same round trip (pipelined), and ends with
/// the transaction.
pub(super) async fn on_generic_plans<T>(
    tx: &Tx<'_>,
    work: impl std::future::Future<Output = R<T>>,
) -> R<T> {
    let set = async {
        tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .map_err(PgErr::from)
    };
    let ((), value) = tokio::try_join!(set, work)?;
    Ok(value)
}

/// Within a background step (`fence.rs`), fails with [`StoreError::Fenced`] unless the leader's
/// lease still names the step's holder and epoch. The lease row is locked `FOR SHARE` until the
/// write commits, so a takeover (which updates the row) waits for it; a check that waited for a
/// takeover sees the row as the takeover left it, and refuses.
pub(super) async fn still_held(tx: &Tx<'_>) -> R<()> {
    let Some(fence) = crate::fence::current() else {
        return Ok(());
    };
    let epoch = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
    let held = row_opt(
        &**tx,
        "SELECT 1 FROM cluster_lease WHERE name = 'background' AND holder = $1 AND epoch = $2
         FOR SHARE",
        &[&fence.replica_id, &epoch],
    )
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(PgErr::Store(fence.refused())),
    }
}

/// Waits before running a conflicting write again: a little longer each time, and spread, so
/// that writes that collided do not collide again in step.
pub(super) async fn back_off(tries: u32) {
    let base = 2u64.saturating_pow(tries.min(6));
    let spread = u64::from(std::process::id() ^ tries.wrapping_mul(0x9e37_79b9)) % base.max(1);
    tokio::time::sleep(Duration::from_millis(base + spread)).await;
}

/// Runs `$body` (an expression of type `R<T>`, which may `.await` and use `?`) inside one
/// transaction on a pooled connection, with the transaction bound to `$tx` (a [`Tx`]); commits,
/// hands the events to the observers, and answers `Result<T, StoreError>`. A conflict runs the
/// whole write again, up to [`MAX_TRIES`] times; the body must therefore not have effects
/// outside the transaction other than those it is fine to repeat.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &$crate::postgres::PgStore = &$store;
        let mut tries = 0u32;
        loop {
            let attempt: $crate::postgres::write::R<_> = async {
                let mut conn = $crate::postgres::write::Conn::new(store.client().await?);
                let $tx = $crate::postgres::write::Tx::open(conn.client(), &store.nonce).await;
                let value: $crate::postgres::write::R<_> = async {
                    $crate::postgres::write::still_held(&$tx).await?;
                    $body
                }
                .await;
                let ended = match value {
                    Ok(value) => $tx.commit().await.map(|events| (value, events)),
                    Err(e) => {
                        if $tx.roll_back().await {
                            conn.ended_cleanly();
                        }
                        return Err(e);
                    }
                };
                if ended.is_ok() {
                    conn.ended_cleanly();
                }
                ended
            }
            .await;
            match attempt {
                Ok((value, events)) => {
                    store.count_commit(1);
                    store.observers.notify(&events);
                    break Ok(value);
                }
                Err($crate::postgres::write::PgErr::Conflict(_))
                    if tries + 1 < $crate::postgres::write::MAX_TRIES =>
                {
                    tries += 1;
                    $crate::postgres::write::back_off(tries).await;
                }
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

/// Runs a write of one statement that decides nothing from what it reads, such as a compare
/// and set: `$last` (an expression of type `R<T>` running that statement on `$tx`) goes out
/// with its transaction's `BEGIN` and `COMMIT` in one round trip ([`Tx::commit_after`]), on
/// a generic plan. (The first time a connection prepares the statement, the preparing takes
/// a round trip of its own and the statement goes out after the `COMMIT`: it then runs as a
/// transaction by itself, which for one statement is the same.) It is not run again on a conflict: the caller
/// hears the error and decides (a compare and set falls back to the careful path). Events
/// are published after the commit, as [`write_tx!`] does. The journal is not appended for it:
/// the statement must write its own entry (as `complete_held_at_once` does), or record no event.
macro_rules! write_at_once {
    ($store:expr, |$tx:ident| $last:expr) => {{
        let store: &$crate::postgres::PgStore = &$store;
        let attempt: $crate::postgres::write::R<_> = async {
            let mut conn = $crate::postgres::write::Conn::new(store.client().await?);
            let $tx = $crate::postgres::write::Tx::open(conn.client(), &store.nonce).await;
            let value =
                $crate::postgres::write::on_generic_plans(&$tx, $tx.commit_after(async { $last }))
                    .await?;
            let events = $tx.take_events();
            drop($tx);
            conn.ended_cleanly();
            Ok((value, events))
        }
        .await;
        attempt.map(|(value, events)| {
            store.count_commit(0);
            store.observers.notify(&events);
            value
        })
    }};
}

/// Runs `$body` (an expression of type `R<T>`) with a pooled connection bound to `$conn`,
/// outside any transaction: each statement reads the last committed state.
macro_rules! read {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &$crate::postgres::PgStore = &$store;
        let attempt: $crate::postgres::write::R<_> = async {
            let $conn = store.client().await?;
            let value: $crate::postgres::write::R<_> = $body;
            value
        }
        .await;
        attempt.map_err($crate::postgres::write::PgErr::into_store)
    }};
}

/// Runs `$body` (an expression of type `R<T>`) inside a read-only transaction bound to `$conn`
/// that sees one snapshot: for reads of several statements that must agree (a task without a
/// row is read from its job's `materialised`, which a claim on another connection may move
/// between two statements).
macro_rules! snapshot {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &$crate::postgres::PgStore = &$store;
        let attempt: $crate::postgres::write::R<_> = async {
            let mut client = store.client().await?;
            let $conn = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let value: $crate::postgres::write::R<_> = $body;
            let value = value?;
            $conn.commit().await?;
            Ok(value)
        }
        .await;
        attempt.map_err($crate::postgres::write::PgErr::into_store)
    }};
}

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Every row `sql` answers.
pub(super) async fn rows<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> R<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// The row `sql` answers, if any.
pub(super) async fn row_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> R<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// The one row `sql` answers.
pub(super) async fn row<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> R<Row> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

/// Runs `sql`; answers how many rows it changed.
pub(super) async fn exec<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> R<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}
