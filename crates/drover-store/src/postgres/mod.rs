//! The shared store: one PostgreSQL database that several drover replicas use at once.
//!
//! A pool of connections (deadpool) serves every call; each write is one transaction on one
//! connection (`write.rs`), retried from the start when PostgreSQL aborts it for a
//! serialization failure or a deadlock, and its events reach the observers after the commit.
//! Reads take a pooled connection and run outside a transaction (each statement sees the last
//! committed state). The schema is the store's own (`schema.rs`), applied on first use under an
//! advisory lock so that replicas starting together do not race. Work made claimable on one
//! replica wakes the waiting claims of every other through `NOTIFY drover_work` (`listen.rs`).
//!
//! It must not decide any rule of the lifecycle, the node registry or the runners: as with
//! SQLite, each call reads facts, asks `drover_core`, and writes what it was told.

#[macro_use]
mod write;
mod cluster;
mod dispatch;
mod group;
mod jobs;
mod journal;
mod listen;
mod nodes;
mod ops;
mod placement;
mod rows;
mod runners;
mod schema;

use crate::common::SweepCache;
use crate::{EventObservers, Result, StoreError, Stores};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use write::PgErr;

pub use listen::WORK_CHANNEL;

/// How a [`PgStore`] uses its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections in the pool (the listener's own connection comes on top).
    pub pool_size: usize,
    /// The longest one statement may run before PostgreSQL cancels it (the call then fails as
    /// unavailable, 503): a stuck lock must not hold a request forever.
    pub statement_timeout: Duration,
    /// How long opening a connection, or waiting for a free one, may take.
    pub connect_timeout: Duration,
    /// How often the store looks for work made elsewhere while its listener is down.
    pub poll_while_deaf: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            poll_while_deaf: Duration::from_secs(1),
        }
    }
}

/// The PostgreSQL store. Cheap to clone; clones share the pool, the observers and the listener.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The URL's connection settings, for the listener's own connection.
    config: tokio_postgres::Config,
    options: PgOptions,
    observers: Arc<EventObservers>,
    /// Parsed sweeps of recently claimed or read jobs.
    sweeps: Arc<SweepCache>,
    /// Where the outbox's next looks at its published rows start (`dispatch.rs`).
    outbox: Arc<crate::common::OutboxWindows>,
    /// Set once the schema is known current (migrations applied on first use).
    ready: Arc<OnceCell<()>>,
    /// Names this store in its own notifications, so that its listener skips them (its own
    /// writes already reached its observers).
    nonce: Arc<str>,
    closed: Arc<AtomicBool>,
    listener: Arc<listen::Listener>,
    /// Claims and reports waiting to share the next commit.
    group: Arc<group::Group>,
    /// Commits made and the store calls they held (`StoreOps::write_stats`).
    commits: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl PgStore {
    /// A store over the database `url` names. Connects lazily: nothing is opened until the
    /// first call, which also applies the schema's pending migrations. `url` is a libpq URL
    /// (`postgres://user:password@host:port/database`).
    pub fn open(url: &str, options: PgOptions) -> Result<Self> {
        let mut config = parse_url(url)?;
        config.connect_timeout(options.connect_timeout);
        // A database cut off by the network (packets dropped, no reset) leaves a statement
        // waiting on TCP's own retransmission limit, about fifteen minutes, with the server's
        // statement timeout unable to answer. Data unacknowledged for the connect timeout drops
        // the connection instead (the call fails as unavailable and the pool opens a new one),
        // and keepalives find an idle connection, such as the listener's, gone. A URL's own
        // `tcp_user_timeout` or `keepalives_idle` wins.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.connect_timeout);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            config.keepalives_idle(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("drover");
        }
        // Every session gets the statement timeout (a statement past it is cancelled), and
        // says it is drover's, so the triggers that count hand edits skip its writes (drover
        // counts its own, `schema.rs`). Options the URL gives come first; ours are appended,
        // so a user's own `-c` settings still apply.
        //
        // Every statement is prepared once per connection, and after five runs PostgreSQL
        // may plan it once for all parameters (a generic plan) and keep that plan until the
        // table's statistics change. A plan made while the tables were small (a fresh
        // database, a sweep whose rows are made as it is claimed) may scan or hash a whole
        // table; kept as `tasks` grows to millions of rows, it turns each small report into a
        // full scan, and autovacuum's next ANALYZE may be minutes away. drover's statements
        // all find their rows through an index (reads of one job's tasks, claims through the
        // partial claim index, reports by key), so plans that scan or hash a table are ruled
        // out for its sessions: a generic plan is then an index plan whatever the tables'
        // size when it was made, and the hot path can run on generic plans alone
        // (`write::on_generic_plans`) instead of planning every run, which cost a third of
        // the database's CPU there. A statement with no index to use still runs, as a scan.
        // The penalty that rules the others out also lifts a plan's estimated cost past
        // `jit_above_cost`, and compiling a statement with LLVM costs more than running it
        // many times over: JIT is off for these sessions (contract-exact on one replica, 16
        // clients: 3,249-3,299 tasks/s with it, 3,549-3,621 without).
        //
        // A replica cut off from the database in the middle of a transaction leaves its
        // session behind, idle in that transaction and holding its row locks (a background
        // step's share of the leader's lease row among them) until the server notices the
        // client is gone, which with TCP's defaults takes hours: the next leader's takeover
        // would wait on it all that time. drover never leaves a transaction waiting on itself,
        // so the server ends a session idle in a transaction for the connect timeout, as the
        // replica's own side gives up on unanswered packets after it.
        let own = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={} \
             -c drover.writer=on \
             -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off -c jit=off",
            options.statement_timeout.as_millis(),
            options.connect_timeout.as_millis().max(1)
        );
        let options_line = match config.get_options() {
            Some(user) if !user.trim().is_empty() => format!("{user} {own}"),
            _ => own,
        };
        config.options(options_line);
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                // A connection whose server went away is found by its next statement, which
                // fails as unavailable; checking each on the way out would cost a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            config,
            options,
            observers: Arc::default(),
            sweeps: Arc::default(),
            outbox: Arc::default(),
            ready: Arc::default(),
            nonce: drover_core::ids::instance_id().into(),
            closed: Arc::default(),
            listener: Arc::default(),
            group: Arc::default(),
            commits: Arc::default(),
            writes: Arc::default(),
        })
    }

    /// [`PgStore::open`], then connects and applies the migrations now, so that a bad URL or
    /// an unreachable database shows at start-up.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let store = PgStore::open(url, options)?;
        store.ready().await?;
        Ok(store)
    }

    /// The store seen through its aggregates, sharing this store's observers.
    pub fn into_stores(self) -> Stores {
        let observers = self.observers.clone();
        Stores::from_backend(self, observers)
    }

    /// Applies pending migrations once per store (and starts listening for work made by other
    /// replicas); every call goes through here first.
    async fn ready(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        self.ready
            .get_or_try_init(|| async {
                let mut client = self.pool.get().await.map_err(write::pool_err)?;
                schema::migrate(&mut client)
                    .await
                    .map_err(PgErr::into_store)?;
                listen::start(self);
                Ok::<_, StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// Counts a durable commit holding `writes` store calls.
    pub(super) fn count_commit(&self, writes: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
    }

    /// A pooled connection, once the schema is current.
    async fn client(&self) -> std::result::Result<deadpool_postgres::Client, PgErr> {
        self.ready().await?;
        self.pool
            .get()
            .await
            .map_err(|e| PgErr::Store(write::pool_err(e)))
    }
}

/// The connection settings a libpq URL gives, or why it gives none.
pub(crate) fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    url.parse().map_err(|e| {
        StoreError::Unsupported(format!(
            "database URL {:?} does not parse: {e} (expected \
             postgres://user:password@host:5432/database)",
            redact(url)
        ))
    })
}

/// `url` with its password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            redact("postgres://drover:s3cret@db:5432/drover"),
            "postgres://drover:***@db:5432/drover"
        );
        assert_eq!(redact("postgres://db/drover"), "postgres://db/drover");
    }

    #[test]
    fn a_url_that_does_not_parse_is_a_setting_to_fix() {
        let out = PgStore::open("postgres://a:b@/x?bogus=1", PgOptions::default());
        assert!(
            matches!(out, Err(StoreError::Unsupported(_))),
            "{:?}",
            out.err()
        );
    }
}
