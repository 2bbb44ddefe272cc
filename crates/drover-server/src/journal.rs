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

use crate::clock::Clock;
use crate::workers::{Counts, Worker};
use drover_core::journal::Entry;
use drover_core::sink_routing::{
    Outcome, Router, RoutingConfig, SinkRole, Snapshot, Target, Transition,
};
use drover_sinks::{FileSink, HttpSink, Posted, PostgresOptions, PostgresSink, Sink, SinkError};
use drover_store::{BlobRecord, JournalStore, NewBlob, StoreError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Retention: entries the primary holds are compacted behind a snapshot, keeping the
    /// newest `keep` of them in the store; `None` keeps every entry.
    pub keep: Option<u64>,
    /// How often the leader compacts, when `keep` is set.
    pub compact_every: Duration,
    /// The key sent as `Authorization: Bearer` to the http(s) sinks (another drover server's
    /// `--api-key`); `None` sends none. This server's own API key is never sent to a sink: the
    /// server behind a sink is another party.
    pub sink_key: Option<String>,
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
            keep: None,
            compact_every: Duration::from_secs(60),
            sink_key: None,
        }
    }
}

/// A sink opened on first use: a sink that is down when the server starts (a stopped
/// PostgreSQL, a directory not mounted yet) is a failing sink for the routing to fall back
/// from, not a reason to refuse to start.
struct LazySink {
    spec: SinkSpec,
    timeout: Duration,
    api_key: Option<String>,
    opened: tokio::sync::OnceCell<Arc<dyn Sink>>,
}

/// Opens the sink `spec` names; `timeout` bounds each of its calls that has a timeout of its
/// own (PostgreSQL, HTTP), `api_key` is sent to an HTTP sink.
pub async fn open_sink(
    spec: &SinkSpec,
    timeout: Duration,
    api_key: Option<&str>,
) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match spec {
        SinkSpec::File(dir) => {
            let dir = dir.clone();
            let opened = tokio::task::spawn_blocking(move || FileSink::open(dir))
                .await
                .map_err(|e| SinkError::Unavailable {
                    sink: spec.to_string(),
                    why: e.to_string(),
                })??;
            Arc::new(opened)
        }
        SinkSpec::Postgres(url) => {
            let options = PostgresOptions {
                timeout,
                ..PostgresOptions::default()
            };
            Arc::new(PostgresSink::open_with(url, options).await?)
        }
        SinkSpec::Http(url) => {
            let sink = HttpSink::new(url)?.with_timeout(timeout);
            Arc::new(match api_key {
                Some(key) => sink.with_api_key(key),
                None => sink,
            })
        }
    })
}

impl LazySink {
    async fn get(&self) -> Result<&Arc<dyn Sink>, SinkError> {
        self.opened
            .get_or_try_init(|| open_sink(&self.spec, self.timeout, self.api_key.as_deref()))
            .await
    }

    /// Runs `op` on the sink within the timeout; a sink that does not answer in time is
    /// unavailable.
    async fn call<T, F>(&self, op: impl FnOnce(Arc<dyn Sink>) -> F) -> Result<T, SinkError>
    where
        F: std::future::Future<Output = Result<T, SinkError>>,
    {
        let work = async { op(self.get().await?.clone()).await };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Unavailable {
                    sink: self.spec.to_string(),
                    why: format!("no answer within {:?}", self.timeout),
                })
            })
    }
}

/// The contract's `/da/metrics` counts, since the server started.
#[derive(Debug, Default)]
struct Counters {
    posts: AtomicU64,
    gets: AtomicU64,
    errors: AtomicU64,
    health_checks: AtomicU64,
    retries: AtomicU64,
    post_micros: AtomicU64,
    get_micros: AtomicU64,
}

/// The counts `/da/metrics` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaCounts {
    pub posts: u64,
    pub gets: u64,
    pub errors: u64,
    pub health_checks: u64,
    pub retries: u64,
    pub avg_post_micros: u64,
    pub avg_get_micros: u64,
}

/// What one reconciliation pass did (the contract's `POST /fallback/reconcile` report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub processed: u64,
    pub reconciled: u64,
    pub failed: u64,
    pub duration: Duration,
    pub errors: Vec<String>,
}

/// Why a publishing step stopped short; it is tried again at the next tick.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the journal could not be read or recorded: {0}")]
    Store(#[from] StoreError),
    #[error("a journal entry could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Takes the journal out of the store to its sinks. One per server; only the leader's workers
/// call [`Publisher::publish`] and [`Publisher::check_sinks`], and every step takes its turn
/// (`turn`), so a reconciliation asked for by hand never runs beside the publisher.
pub struct Publisher {
    store: Arc<dyn JournalStore>,
    clock: Arc<dyn Clock>,
    config: JournalConfig,
    sinks: [Option<LazySink>; 3],
    router: Mutex<Router>,
    counters: Counters,
    /// Blobs waiting on a fallback, as last counted.
    pending: AtomicU64,
    /// The routing's last moves, oldest first (at most [`TRANSITIONS_KEPT`]).
    transitions: Mutex<std::collections::VecDeque<Transition>>,
    turn: tokio::sync::Mutex<()>,
}

/// How many of the routing's moves are kept for [`Publisher::transitions`].
const TRANSITIONS_KEPT: usize = 64;

/// Entries read from the store at a time while building blobs.
const READ_PAGE: u32 = 1000;

impl Publisher {
    /// A publisher for `config`; sinks are opened when first used.
    pub fn new(
        mut config: JournalConfig,
        store: Arc<dyn JournalStore>,
        clock: Arc<dyn Clock>,
    ) -> Publisher {
        config.routing.secondary = config.secondary.is_some();
        config.routing.emergency = config.emergency.is_some();
        let lazy = |spec: &Option<SinkSpec>| {
            spec.clone().map(|spec| LazySink {
                spec,
                timeout: config.timeout,
                api_key: config.sink_key.clone(),
                opened: tokio::sync::OnceCell::new(),
            })
        };
        let sinks = [
            lazy(&Some(config.primary.clone())),
            lazy(&config.secondary),
            lazy(&config.emergency),
        ];
        Publisher {
            router: Mutex::new(Router::new(config.routing)),
            store,
            clock,
            sinks,
            config,
            counters: Counters::default(),
            pending: AtomicU64::new(0),
            transitions: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    fn sink(&self, role: SinkRole) -> Option<&LazySink> {
        self.sinks[SinkRole::ALL.iter().position(|r| *r == role).unwrap_or(0)].as_ref()
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        // A poisoned lock means a panic between two plain field updates; the router is whole.
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, role: SinkRole, outcome: Result<(), &SinkError>) {
        let outcome = match outcome {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let now = self.clock.now();
        let moved = self.router().observe(role, outcome, now);
        if let Some(moved) = moved {
            tracing::warn!(from = %moved.from, to = %moved.to, sink = %role, "journal routing changed");
            self.moved(moved);
        }
    }

    fn moved(&self, moved: Transition) {
        let mut kept = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == TRANSITIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back(moved);
    }

    /// The routing's last moves, oldest first.
    pub fn transitions(&self) -> Vec<Transition> {
        let kept = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().copied().collect()
    }

    /// The routing as the routes show it.
    pub fn snapshot(&self) -> Snapshot {
        self.router().snapshot(self.pending.load(Ordering::Relaxed))
    }

    pub fn counts(&self) -> DaCounts {
        let c = &self.counters;
        let (posts, gets) = (
            c.posts.load(Ordering::Relaxed),
            c.gets.load(Ordering::Relaxed),
        );
        DaCounts {
            posts,
            gets,
            errors: c.errors.load(Ordering::Relaxed),
            health_checks: c.health_checks.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            avg_post_micros: c.post_micros.load(Ordering::Relaxed) / posts.max(1),
            avg_get_micros: c.get_micros.load(Ordering::Relaxed) / gets.max(1),
        }
    }

    /// Checks every configured sink once and feeds the routing; answers how many answered.
    pub async fn check_sinks(&self) -> u64 {
        let mut healthy = 0;
        for role in SinkRole::ALL {
            let Some(sink) = self.sink(role) else {
                continue;
            };
            let outcome = sink.call(|s| async move { s.check().await }).await;
            self.counters.health_checks.fetch_add(1, Ordering::Relaxed);
            if outcome.is_ok() {
                healthy += 1;
            }
            self.observe(role, outcome.as_ref().map(|_| ()));
        }
        healthy
    }

    /// One publishing step: blobs waiting on a fallback go to the primary first, in order,
    /// when the routing is on the primary; then new entries go out as blobs to where the
    /// routing says, until none are left or a post fails. Answers how many entries it
    /// published.
    pub async fn publish(&self) -> Result<u64, PublishError> {
        let _turn = self.turn.lock().await;
        let pending = self.store.pending_blobs(1).await?;
        if !pending.is_empty() {
            // Counted afresh: after a restart the count starts at 0.
            let waiting = self.store.pending_blobs(u32::MAX).await?.len() as u64;
            self.pending.store(waiting, Ordering::Relaxed);
            let moved = self.router().pending_found();
            if let Some(moved) = moved {
                self.moved(moved);
            }
            if self.router().target() == Target::Sink(SinkRole::Primary) {
                self.reconcile_in_turn().await?;
            }
        }
        let mut published = 0;
        loop {
            let Target::Sink(role) = self.router().target() else {
                break;
            };
            // The routing may have come back to the primary during this step (the monitor
            // runs beside it): blobs still waiting for the primary go there first, at the next
            // step.
            if role == SinkRole::Primary && self.pending.load(Ordering::Relaxed) > 0 {
                break;
            }
            let from = self.store.published_upto().await?;
            let entries = self.store.journal(from, READ_PAGE).await?;
            if entries.is_empty() {
                break;
            }
            let (blob, last) = encode(&entries, self.config.blob_max_bytes)?;
            let Some(sink) = self.sink(role) else { break };
            let started = Instant::now();
            let sent = &blob;
            let posted = sink.call(|s| async move { s.post(sent).await }).await;
            let posted = posted.and_then(|p| verified(p, &blob, &sink.spec));
            self.observe(role, posted.as_ref().map(|_| ()));
            let posted = match posted {
                Ok(posted) => posted,
                Err(e) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, sink = %role, "posting journal entries failed; retrying at the next step");
                    break;
                }
            };
            self.counters.posts.fetch_add(1, Ordering::Relaxed);
            self.counters
                .post_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.store
                .record_blob(NewBlob {
                    first: from + 1,
                    last,
                    sink: role,
                    height: posted.height,
                    commitment: posted.commitment,
                    size: blob.len() as u64,
                    posted_at: self.clock.now(),
                })
                .await?;
            published += last - from;
            if role != SinkRole::Primary {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(published)
    }

    /// A reconciliation pass asked for by hand (`POST /fallback/reconcile`): waits for the
    /// publisher's step to finish, then runs.
    pub async fn reconcile(&self) -> Result<Reconciled, PublishError> {
        let _turn = self.turn.lock().await;
        self.reconcile_in_turn().await
    }

    /// Posts the blobs waiting on a fallback to the primary, oldest first, a batch at a time,
    /// each checked against its commitment; stops at the first blob that keeps failing, so the
    /// primary never receives a blob before an older one.
    async fn reconcile_in_turn(&self) -> Result<Reconciled, PublishError> {
        let started = Instant::now();
        let mut report = Reconciled::default();
        let Some(primary) = self.sink(SinkRole::Primary) else {
            return Ok(report);
        };
        'batches: loop {
            let batch = self
                .store
                .pending_blobs(self.config.reconcile_batch.max(1))
                .await?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                report.processed += 1;
                let mut last_error = String::new();
                let mut done = false;
                for attempt in 0..self.config.reconcile_max_retries.max(1) {
                    if attempt > 0 {
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(self.config.reconcile_retry_delay).await;
                    }
                    match self.repost(&record, primary).await {
                        Ok(height) => {
                            self.store
                                .blob_reconciled(record.id, height, self.clock.now())
                                .await?;
                            done = true;
                            break;
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            self.store
                                .blob_reconcile_failed(record.id, last_error.clone())
                                .await?;
                        }
                    }
                }
                if done {
                    report.reconciled += 1;
                } else {
                    report.failed += 1;
                    report.errors.push(format!(
                        "blob of entries {}..={} ({} height {}): {last_error}",
                        record.blob.first, record.blob.last, record.blob.sink, record.blob.height
                    ));
                    break 'batches;
                }
            }
        }
        let left = self.store.pending_blobs(u32::MAX).await?.len() as u64;
        self.pending.store(left, Ordering::Relaxed);
        let moved = self.router().reconciled(left);
        if let Some(moved) = moved {
            tracing::info!(from = %moved.from, to = %moved.to, "journal reconciliation finished");
            self.moved(moved);
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Posts the blob `record` again to the primary: its bytes as the fallback keeps them
    /// or, when that sink cannot give them back, as the journal in the store rebuilds them
    /// (the same entries encode to the same bytes, which the commitment proves). Answers the
    /// primary's height.
    async fn repost(&self, record: &BlobRecord, primary: &LazySink) -> Result<u64, SinkError> {
        let blob = match self.read_back(record).await {
            Some(blob) => blob,
            None => self.rebuild(record).await?,
        };
        let started = Instant::now();
        let sent = &blob;
        let posted = primary.call(|s| async move { s.post(sent).await }).await;
        let posted = posted.and_then(|p| verified(p, &blob, &primary.spec));
        self.observe(SinkRole::Primary, posted.as_ref().map(|_| ()));
        match posted {
            Ok(posted) => {
                self.counters.posts.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .post_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(posted.height)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The blob as its fallback sink keeps it, if that sink gives it back intact.
    async fn read_back(&self, record: &BlobRecord) -> Option<Vec<u8>> {
        let sink = self.sink(record.blob.sink)?;
        let height = record.blob.height;
        let started = Instant::now();
        let got = sink.call(|s| async move { s.get(height).await }).await;
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .get_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match got {
            Ok(Some(blob)) if drover_sinks::commitment(&blob) == record.blob.commitment => {
                Some(blob)
            }
            Ok(_) => None,
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %e, "a pending blob could not be read back from its fallback; rebuilding it from the journal");
                None
            }
        }
    }

    /// The blob of `record` made again from the journal's entries.
    async fn rebuild(&self, record: &BlobRecord) -> Result<Vec<u8>, SinkError> {
        let b = &record.blob;
        let unreadable = |why: String| SinkError::Corrupt {
            sink: "journal".into(),
            what: format!("entries {}..={}: {why}", b.first, b.last),
        };
        let count = u32::try_from(b.last - b.first + 1).unwrap_or(u32::MAX);
        let entries = self
            .store
            .journal(b.first - 1, count)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let (blob, last) = encode(&entries, usize::MAX).map_err(|e| unreadable(e.to_string()))?;
        if last != b.last || drover_sinks::commitment(&blob) != b.commitment {
            return Err(unreadable(
                "the journal no longer gives the blob that was posted".into(),
            ));
        }
        Ok(blob)
    }
}

/// The blob of the longest run of `entries` whose encoding stays within `max_bytes` (always
/// at least one entry), as a JSON array, and the last entry in it.
pub fn encode(entries: &[Entry], max_bytes: usize) -> Result<(Vec<u8>, u64), serde_json::Error> {
    let mut blob = vec![b'['];
    let mut last = 0;
    for entry in entries {
        let encoded = serde_json::to_vec(entry)?;
        if last != 0 && blob.len() + encoded.len() + 2 > max_bytes {
            break;
        }
        if last != 0 {
            blob.push(b',');
        }
        blob.extend_from_slice(&encoded);
        last = entry.seq;
    }
    blob.push(b']');
    Ok((blob, last))
}

/// The entries a blob holds.
pub fn decode(blob: &[u8]) -> Result<Vec<Entry>, serde_json::Error> {
    serde_json::from_slice(blob)
}

/// `posted` if the sink's commitment is the blob's own: a sink that answers another is not
/// keeping what was sent.
fn verified(posted: Posted, blob: &[u8], spec: &SinkSpec) -> Result<Posted, SinkError> {
    let expected = drover_sinks::commitment(blob);
    if posted.commitment.eq_ignore_ascii_case(&expected) {
        Ok(posted)
    } else {
        Err(SinkError::Mismatch {
            sink: spec.to_string(),
            height: posted.height,
            expected,
            answered: posted.commitment,
        })
    }
}

/// Why a journal could not be read back from sinks for a rebuild.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("{0}")]
    Sink(#[from] SinkError),
    #[error("blob {height} of {sink} is not a journal blob: {why}")]
    NotJournal {
        sink: String,
        height: u64,
        why: String,
    },
    #[error("entry {seq} differs between two blobs that hold it")]
    Conflict { seq: u64 },
    #[error(
        "the sinks hold no entry {missing} (they hold {held} entries up to {last}): add the \
         sink that kept it (a fallback's blobs wait there until reconciled) with another --from"
    )]
    Missing {
        missing: u64,
        held: usize,
        last: u64,
    },
}

/// Every journal entry the sinks `from` hold, in order, each once: a primary's blobs and the
/// blobs still pending on a fallback together give the whole journal. `progress` is told each
/// blob read (the sink's name, the height, and the sink's head).
pub async fn read_back(
    from: &[(String, Arc<dyn Sink>)],
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<Vec<Entry>, ReadBackError> {
    let mut by_seq: std::collections::BTreeMap<u64, Entry> = std::collections::BTreeMap::new();
    for (name, sink) in from {
        let head = sink.head().await?;
        for height in 1..=head {
            let not_journal = |why: String| ReadBackError::NotJournal {
                sink: name.clone(),
                height,
                why,
            };
            let blob = sink
                .get(height)
                .await?
                .ok_or_else(|| not_journal("the sink has no blob at this height".into()))?;
            for entry in decode(&blob).map_err(|e| not_journal(e.to_string()))? {
                match by_seq.get(&entry.seq) {
                    Some(held) if *held != entry => {
                        return Err(ReadBackError::Conflict { seq: entry.seq });
                    }
                    Some(_) => {}
                    None => {
                        by_seq.insert(entry.seq, entry);
                    }
                }
            }
            progress(name, height, head);
        }
    }
    let last = by_seq.keys().next_back().copied().unwrap_or(0);
    if let Some(missing) = (1..=last).find(|seq| !by_seq.contains_key(seq)) {
        return Err(ReadBackError::Missing {
            missing,
            held: by_seq.len(),
            last,
        });
    }
    Ok(by_seq.into_values().collect())
}

/// The worker that publishes: one [`Publisher::publish`] step per tick.
pub struct JournalPublisher(pub Arc<Publisher>);

#[async_trait::async_trait]
impl Worker for JournalPublisher {
    type Error = PublishError;

    fn name(&self) -> &'static str {
        "journal-publisher"
    }

    async fn run_once(&self) -> Result<Counts, PublishError> {
        let published = self.0.publish().await?;
        Ok(vec![("published", published)])
    }
}

/// The worker that compacts the journal (retention, `JournalConfig::keep`): entries the
/// primary sink holds, but for the newest `keep`, are dropped from the store behind a snapshot
/// of the state as of the last of them. Entries on no sink, or waiting on a fallback, are never
/// dropped (the store refuses).
pub struct JournalCompactor {
    pub store: Arc<dyn JournalStore>,
    pub clock: Arc<dyn Clock>,
    pub keep: u64,
}

impl JournalCompactor {
    /// Compacts once; answers how many entries were dropped.
    pub async fn compact(&self) -> Result<u64, PublishError> {
        let head = self.store.journal_head().await?;
        let upto = self
            .store
            .primary_holds_upto()
            .await?
            .min(head.saturating_sub(self.keep));
        let mut state = self.store.snapshot().await?.unwrap_or_default();
        if upto <= state.applied {
            return Ok(0);
        }
        while state.applied < upto {
            let limit = u32::try_from(upto - state.applied).map_or(READ_PAGE, |n| n.min(READ_PAGE));
            let page = self.store.journal(state.applied, limit).await?;
            if page.is_empty() {
                break;
            }
            for entry in &page {
                state.apply(entry).map_err(|e| {
                    StoreError::Internal(format!("the journal cannot be compacted: {e}"))
                })?;
            }
        }
        Ok(self.store.compact(state, self.clock.now()).await?)
    }
}

#[async_trait::async_trait]
impl Worker for JournalCompactor {
    type Error = PublishError;

    fn name(&self) -> &'static str {
        "journal-compactor"
    }

    async fn run_once(&self) -> Result<Counts, PublishError> {
        Ok(vec![("compacted", self.compact().await?)])
    }
}

/// The worker that checks the sinks: one [`Publisher::check_sinks`] per tick.
pub struct SinkMonitor(pub Arc<Publisher>);

#[async_trait::async_trait]
impl Worker for SinkMonitor {
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "journal-sink-monitor"
    }

    async fn run_once(&self) -> Result<Counts, std::convert::Infallible> {
        Ok(vec![("healthy", self.0.check_sinks().await)])
    }

    fn records_actions(&self) -> bool {
        false
    }
}
