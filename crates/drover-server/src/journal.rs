//! Publishing the event journal to sinks, with failover and reconciliation (the placement
//! contract's DA router, health monitor and reconciliation engine, on drover's own sinks).
//!
//! The journal itself lives in the store (`drover_store::JournalStore`): every acknowledged
//! change is an entry there before it is answered. This module owns taking those entries out:
//! the configuration of the sinks ([`JournalConfig`]), the [`Publisher`] that batches entries
//! into blobs and posts them where the routing state machine (`drover_core::sink_routing`)
//! says, the health checks that feed that machine, and the reconciliation that posts blobs
//! kept on a fallback to the primary again, in order, before anything newer goes there. Only
//! the leader publishes and reconciles (its workers run under the leader's term). It must not
//! decide routing (the core's state machine does) nor encode entries differently from
//! `drover_core::journal`.

use drover_core::sink_routing::RoutingConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Where one sink is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// An append-only directory of fsynced files (`file:DIR` or a plain path).
    File(PathBuf),
    /// A table in a PostgreSQL database (`postgres://...`), possibly not drover's own.
    Postgres(String),
    /// Another drover server's `POST /da/post` (`http://host:port` or `https://...`).
    Http(String),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a sink is file:DIR, postgres://..., or http(s)://host:port".into());
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(SinkSpec::Postgres(s.to_string()))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(SinkSpec::Http(s.trim_end_matches('/').to_string()))
        } else if let Some(dir) = s.strip_prefix("file:") {
            Ok(SinkSpec::File(PathBuf::from(dir)))
        } else if s.contains("://") {
            Err(format!(
                "sink {s:?}: drover publishes its journal to file:DIR, postgres://... or \
                 http(s)://host:port (another drover server's /da/post); Celestia and other \
                 data-availability networks are not supported"
            ))
        } else {
            Ok(SinkSpec::File(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for SinkSpec {
    /// The sink without secrets: a PostgreSQL URL's password is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::File(dir) => write!(f, "file:{}", dir.display()),
            SinkSpec::Http(url) => f.write_str(url),
            SinkSpec::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let user = &url[scheme + 3..at];
                    let user = user.split(':').next().unwrap_or_default();
                    write!(f, "{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// How the journal is published; `None` in [`crate::ServerConfig::journal`] keeps it in the
/// store only (it is still written, read by `GET /api/v1/journal`, and checked).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    pub primary: SinkSpec,
    /// Where blobs go while the primary is down (the contract's secondary, `FALLBACK_DA_TYPE`).
    pub secondary: Option<SinkSpec>,
    /// Where blobs go while the secondary is down too (`EMERGENCY_DA_URL`).
    pub emergency: Option<SinkSpec>,
    /// Consecutive failures before a sink counts as down, successes before it counts as up
    /// again, and how often every sink is checked. Its `secondary` and `emergency` flags are
    /// set from the sinks above when the publisher starts.
    pub routing: RoutingConfig,
    /// How long one post, read or check may take (`DA_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How often the publisher looks for new entries: an entry waits about this long at most
    /// before it is posted (when its sink takes it).
    pub publish_every: Duration,
    /// The largest blob, in bytes of encoded entries; a single entry larger than this is
    /// posted alone.
    pub blob_max_bytes: usize,
    /// Blobs per reconciliation batch (`RECONCILE_BATCH_SIZE`).
    pub reconcile_batch: u32,
    /// Tries per blob in one reconciliation pass (`RECONCILE_MAX_RETRIES`), and the wait
    /// between them (`RECONCILE_RETRY_DELAY_MS`).
    pub reconcile_max_retries: u32,
    pub reconcile_retry_delay: Duration,
}

impl JournalConfig {
    /// Publishing to `primary` alone, with the contract's defaults.
    pub fn to(primary: SinkSpec) -> JournalConfig {
        JournalConfig {
            primary,
            secondary: None,
            emergency: None,
            routing: RoutingConfig::default(),
            timeout: Duration::from_secs(30),
            publish_every: Duration::from_millis(200),
            blob_max_bytes: 1024 * 1024,
            reconcile_batch: 10,
            reconcile_max_retries: 3,
            reconcile_retry_delay: Duration::from_secs(1),
        }
    }
}
