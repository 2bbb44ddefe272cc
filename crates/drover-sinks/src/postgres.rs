//! The PostgreSQL sink: blobs as rows of one table, `drover_sink_blobs`, in a database that
//! need not be drover's own. It owns that table (made on open when missing), the assignment of
//! gap-free heights, and how the driver's errors map onto [`SinkError`]. It must not touch any
//! other table of the database nor change its settings beyond its own sessions' timeouts, and
//! it keeps no copy of the blobs: the table is the sink.

use crate::{Posted, Sink, SinkError, commitment};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

/// How a [`PostgresSink`] uses its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Connections in the pool. Posts take turns on the table's lock, so more connections
    /// speed up reads, not posts.
    pub pool_size: usize,
    /// How long opening a connection may take; also the limit of a [`Sink::check`], which
    /// must answer quickly to be of use.
    pub connect_timeout: Duration,
    /// The longest a post, a read, or a wait for a free connection may take; PostgreSQL
    /// cancels a statement past it (a post stuck behind another's lock), and the call fails as
    /// unavailable.
    pub timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A sink in a PostgreSQL table:
///
/// ```sql
/// drover_sink_blobs (height BIGINT PRIMARY KEY, commitment TEXT NOT NULL,
///                    data BYTEA NOT NULL, posted_at TIMESTAMPTZ NOT NULL DEFAULT now())
/// ```
///
/// Each post is one transaction that takes the table's lock in `EXCLUSIVE` mode, then inserts
/// its row at one past the highest committed height: posters (in this process or any other)
/// take turns, each sees every earlier post's row, and a post that rolls back takes no height,
/// so heights have neither gaps nor repeats. Readers are never blocked (`EXCLUSIVE` lets plain
/// `SELECT`s through). A post is durable when PostgreSQL's commit is.
pub struct PostgresSink {
    pool: Pool,
    /// The URL, password hidden, for messages.
    at: String,
    options: PostgresOptions,
}

const CREATE: &str = "\
    SELECT pg_advisory_xact_lock(hashtext('drover_sink_blobs'));
    CREATE TABLE IF NOT EXISTS drover_sink_blobs (
        height BIGINT PRIMARY KEY,
        commitment TEXT NOT NULL,
        data BYTEA NOT NULL,
        posted_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );";

// The lock is its own statement, before the insert: in READ COMMITTED each statement takes its
// snapshot when it starts, so the insert's `max(height)` sees the rows of every post that held
// the lock before this one (each commits, then releases it).
const LOCK: &str = "LOCK TABLE drover_sink_blobs IN EXCLUSIVE MODE";
const INSERT: &str = "\
    INSERT INTO drover_sink_blobs (height, commitment, data)
    SELECT coalesce(max(height), 0) + 1, $1::text, $2::bytea FROM drover_sink_blobs
    RETURNING height";
const SELECT: &str = "SELECT commitment, data FROM drover_sink_blobs WHERE height = $1";
const HEAD: &str = "SELECT coalesce(max(height), 0) FROM drover_sink_blobs";
// A standby answers `SELECT 1` but takes no write, and a user may read the table without the
// right to insert: both are asked in the same round trip.
const CHECK: &str =
    "SELECT pg_is_in_recovery(), has_table_privilege('drover_sink_blobs', 'INSERT')";

impl PostgresSink {
    /// [`PostgresSink::open_with`] the default options.
    pub async fn open(url: &str) -> Result<PostgresSink, SinkError> {
        PostgresSink::open_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database `url` names (`postgres://user:password@host:5432/database`)
    /// and makes the sink's table if it is missing, so that a wrong URL, a database that is
    /// down or a user that may not create the table shows now.
    pub async fn open_with(url: &str, options: PostgresOptions) -> Result<PostgresSink, SinkError> {
        let at = redact(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| SinkError::Refused {
            sink: at.clone(),
            why: format!(
                "the URL does not parse: {e} (expected postgres://user:password@host:5432/database)"
            ),
        })?;
        config.connect_timeout(options.connect_timeout);
        // A database cut off without a reset (packets dropped) would leave a call waiting on
        // TCP's own retransmission limit, about fifteen minutes: unacknowledged data drops the
        // connection after the connect timeout instead. A URL's own setting wins.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("drover-sink");
        }
        // The server cancels a statement past the timeout (a post waiting on the lock behind a
        // stuck one) and ends a session left idle in a transaction (a poster that vanished
        // while holding the lock), so no post holds the others up for longer. Appended to the
        // URL's own options, which still apply.
        let ms = options.timeout.as_millis().max(1);
        let own = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
        let line = match config.get_options() {
            Some(user) if !user.trim().is_empty() => format!("{user} {own}"),
            _ => own,
        };
        config.options(line);
        let manager = Manager::from_config(
            config,
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
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| SinkError::Refused {
                sink: at.clone(),
                why: format!("the connection pool could not be built: {e}"),
            })?;
        let sink = PostgresSink { pool, at, options };
        let mut client = sink.client().await?;
        // Sinks opened together would race to create the table (`IF NOT EXISTS` is not safe
        // against a concurrent create): an advisory lock, held to the commit, orders them.
        let tx = client.transaction().await.map_err(|e| sink.error(e))?;
        tx.batch_execute(CREATE).await.map_err(|e| sink.error(e))?;
        tx.commit().await.map_err(|e| sink.error(e))?;
        drop(client);
        Ok(sink)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, SinkError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.error(e),
            PoolError::NoRuntimeSpecified => SinkError::Refused {
                sink: self.at.clone(),
                why: "the connection pool has no runtime".into(),
            },
            // Timed out connecting or waiting for a free connection, or the pool is closed.
            other => self.unavailable(format!("no database connection: {other}")),
        })
    }

    fn unavailable(&self, why: String) -> SinkError {
        SinkError::Unavailable {
            sink: self.at.clone(),
            why,
        }
    }

    fn corrupt(&self, what: String) -> SinkError {
        SinkError::Corrupt {
            sink: self.at.clone(),
            what,
        }
    }

    /// What a driver error means to the caller.
    fn error(&self, e: tokio_postgres::Error) -> SinkError {
        let why = describe(&e);
        if let Some(code) = e.code() {
            // 08 connection exception, 40 a transaction rolled back (serialization failure,
            // deadlock), 53 insufficient resources (disk full, too many connections), 57
            // operator intervention (a statement timeout, a shutdown), 58 system error; 25006 a
            // write on a standby, 55P03 a lock not had in time: the database cannot serve now,
            // and the same call later may pass.
            let unavailable = matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58")
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::LOCK_NOT_AVAILABLE;
            return if unavailable {
                self.unavailable(why)
            } else {
                // A denied password or privilege, a missing database or table, a table of
                // another shape: the same call will fail again until someone fixes it.
                SinkError::Refused {
                    sink: self.at.clone(),
                    why,
                }
            };
        }
        // No SQLSTATE: the connection is gone (refused, closed, reset, timed out), or a value
        // did not convert (the table holds what this build did not write).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io || why.contains("timed out") {
            self.unavailable(why)
        } else {
            self.corrupt(why)
        }
    }
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    async fn post(&self, data: &[u8]) -> Result<Posted, SinkError> {
        let commitment = commitment(data);
        let mut client = self.client().await?;
        let err = |e| self.error(e);
        // READ COMMITTED whatever the database's default: the insert must see the rows
        // committed while it waited for the lock (see `LOCK`), and must not be refused as a
        // serialization failure.
        let tx = (client.build_transaction())
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(err)?;
        tx.batch_execute(LOCK).await.map_err(err)?;
        let insert = tx.prepare_cached(INSERT).await.map_err(err)?;
        let row = tx
            .query_one(&insert, &[&commitment, &data])
            .await
            .map_err(err)?;
        let height: i64 = row.try_get(0).map_err(err)?;
        // A commit whose answer is lost leaves the post's fate unknown: unavailable, as the
        // error's documentation warns.
        tx.commit().await.map_err(err)?;
        let height = u64::try_from(height)
            .map_err(|_| self.corrupt(format!("the table answered height {height}")))?;
        Ok(Posted { commitment, height })
    }

    async fn get(&self, height: u64) -> Result<Option<Vec<u8>>, SinkError> {
        // Heights past i64's range are never assigned (the column is a BIGINT).
        let Ok(key) = i64::try_from(height) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let err = |e| self.error(e);
        let select = client.prepare_cached(SELECT).await.map_err(err)?;
        let Some(row) = client.query_opt(&select, &[&key]).await.map_err(err)? else {
            return Ok(None);
        };
        let kept: String = row.try_get(0).map_err(err)?;
        let data: Vec<u8> = row.try_get(1).map_err(err)?;
        // A row edited by hand (or by a stranger to this table) must not pass for the blob
        // that was posted.
        if commitment(&data) != kept {
            return Err(self.corrupt(format!(
                "the data of height {height} no longer matches its commitment {kept}"
            )));
        }
        Ok(Some(data))
    }

    async fn head(&self) -> Result<u64, SinkError> {
        let client = self.client().await?;
        let err = |e| self.error(e);
        let head = client.prepare_cached(HEAD).await.map_err(err)?;
        let row = client.query_one(&head, &[]).await.map_err(err)?;
        let height: i64 = row.try_get(0).map_err(err)?;
        u64::try_from(height).map_err(|_| self.corrupt(format!("the highest height is {height}")))
    }

    async fn check(&self) -> Result<(), SinkError> {
        let within = self.options.connect_timeout;
        let asked = tokio::time::timeout(within, async {
            let client = self.client().await?;
            let row = client
                .query_one(CHECK, &[])
                .await
                .map_err(|e| self.error(e))?;
            let standby: bool = row.try_get(0).map_err(|e| self.error(e))?;
            let may_insert: bool = row.try_get(1).map_err(|e| self.error(e))?;
            Ok::<_, SinkError>((standby, may_insert))
        })
        .await
        .map_err(|_| self.unavailable(format!("the database did not answer within {within:?}")))?;
        match asked? {
            (true, _) => Err(self.unavailable(
                "the database is a standby (in recovery): it takes no writes until it is \
                 promoted"
                    .into(),
            )),
            (false, false) => Err(SinkError::Refused {
                sink: self.at.clone(),
                why: "the database user may not insert into drover_sink_blobs".into(),
            }),
            (false, true) => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        "postgres"
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
            redact("postgres://drover:s3cret@db:5432/blobs"),
            "postgres://drover:***@db:5432/blobs"
        );
        assert_eq!(redact("postgres://db/blobs"), "postgres://db/blobs");
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_refused_with_the_password_hidden() {
        let err = PostgresSink::open("postgres://u:s3cret@db:5432/x?bogus=1")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SinkError::Refused { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn a_database_nobody_listens_for_is_unavailable() {
        // A port just freed: nothing listens there, so the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PostgresSink::open(&format!("postgres://u@127.0.0.1:{port}/x"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    }
}
