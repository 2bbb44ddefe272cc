//! Prometheus metrics: one registry per server (no globals, so every test server counts alone),
//! rendered at `GET /metrics` in the OpenMetrics text format.
//!
//! Counters are incremented by the code that did the thing (the runner service, the worker
//! board, the store's committed events, the HTTP layer of `surfaces::router`, the timed store
//! of `crate::timed`), or read from it at each scrape (the store's write path counts its
//! commits itself; the counts by status and the journal's positions are read from the store by
//! [`Metrics::scrape`], which waits for them only a moment); this module only owns their names, their labels and the registry. No
//! label ever holds an id (of a task, job, node, runner or session): every label value comes
//! from a short fixed list or from a route template, so the number of series stays bounded
//! whatever clients send. `docs/metrics.md` lists every series.

use drover_core::sink_routing::{RoutingState, SinkRole};
use drover_core::{Event, TaskStatus, Timestamp};
use drover_store::{StatusCounts, StoreError, StoreOps, Stores};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Runner lifecycle counters.
#[derive(Debug, Clone, Default)]
pub struct RunnerCounters {
    /// Runners started for a provision request.
    pub provisioned: Counter,
    /// Runners stopped for a deprovision request.
    pub deprovisioned: Counter,
    /// Runners stopped by the inactivity reaper.
    pub reaped: Counter,
    /// Runners forgotten because their sandbox had exited.
    pub exited: Counter,
    /// Provisions or stops that failed.
    pub failed: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerItemLabels {
    worker: String,
    item: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The background workers' series, by worker name.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    runs: Family<WorkerLabel, Counter>,
    failures: Family<WorkerLabel, Counter>,
    last_run: Family<WorkerLabel, FloatGauge>,
    last_duration: Family<WorkerLabel, FloatGauge>,
    last_failed: Family<WorkerLabel, Gauge>,
    items: Family<WorkerItemLabels, Counter>,
}

impl WorkerMetrics {
    fn label(worker: &str) -> WorkerLabel {
        WorkerLabel {
            worker: worker.to_string(),
        }
    }

    /// Shows a worker's series (at zero) before its first step.
    pub fn register(&self, worker: &str) {
        let l = Self::label(worker);
        let _ = self.runs.get_or_create(&l);
        let _ = self.failures.get_or_create(&l);
        let _ = self.last_failed.get_or_create(&l);
    }

    pub fn record(
        &self,
        worker: &str,
        started_at: Timestamp,
        took: Duration,
        outcome: &Result<&Vec<(&'static str, u64)>, String>,
    ) {
        let l = Self::label(worker);
        self.runs.get_or_create(&l).inc();
        self.last_run
            .get_or_create(&l)
            .set(started_at.timestamp_millis() as f64 / 1000.0);
        self.last_duration.get_or_create(&l).set(took.as_secs_f64());
        match outcome {
            Ok(counts) => {
                self.last_failed.get_or_create(&l).set(0);
                for (item, n) in counts.iter() {
                    let labels = WorkerItemLabels {
                        worker: worker.to_string(),
                        item: item.to_string(),
                    };
                    self.items.get_or_create(&labels).inc_by(*n);
                }
            }
            Err(_) => {
                self.failures.get_or_create(&l).inc();
                self.last_failed.get_or_create(&l).set(1);
            }
        }
    }
}

/// A gRPC method (`/package.Service/Method`) and the status code it answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcMethod {
    pub method: &'static str,
}

/// gRPC requests by method and code, and their durations by method.
#[derive(Clone)]
pub struct GrpcMetrics {
    requests: Family<GrpcLabels, Counter>,
    seconds: Family<GrpcMethod, Histogram, fn() -> Histogram>,
}

fn grpc_histogram() -> Histogram {
    // 0.1 ms to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(grpc_histogram),
        }
    }
}

impl GrpcMetrics {
    pub fn record(&self, method: &'static str, code: &'static str, took: std::time::Duration) {
        self.requests
            .get_or_create(&GrpcLabels { method, code })
            .inc();
        self.seconds
            .get_or_create(&GrpcMethod { method })
            .observe(took.as_secs_f64());
    }
}

/// Committed store events, by `kind` (`drover_core::Event::kind`).
pub type EventCounters = Family<Vec<(&'static str, &'static str)>, Counter>;

/// One counter of [`EventCounters`] per kind, made at start-up: counting an event is then a
/// lookup, with no allocation on the write path that calls it.
fn counters_by_kind(family: &EventCounters) -> HashMap<&'static str, Counter> {
    drover_core::Event::KINDS
        .iter()
        .map(|kind| (*kind, family.get_or_create(&vec![("kind", *kind)]).clone()))
        .collect()
}

/// The priority contract's gauges, counted from a [`crate::priority::Snapshot`] when
/// `/metrics` is scraped (at most every few seconds).
#[derive(Clone, Default)]
pub struct PriorityGauges {
    jobs: Family<Vec<(&'static str, &'static str)>, Gauge>,
    workers: Family<Vec<(&'static str, &'static str)>, Gauge>,
    unpublished: Family<Vec<(&'static str, String)>, Gauge>,
    finished_last_minute: Gauge,
    queue_depth: Family<Vec<(&'static str, &'static str)>, Gauge>,
}

impl PriorityGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "priority_jobs",
            "Jobs of the priority-queue contract by the class they are served in and status",
            self.jobs.clone(),
        );
        registry.register(
            "priority_workers",
            "Workers of the priority-queue contract by status",
            self.workers.clone(),
        );
        registry.register(
            "priority_unpublished",
            "Jobs and status events of the priority-queue contract waiting for the broker, by queue or exchange",
            self.unpublished.clone(),
        );
        registry.register(
            "priority_queue_depth",
            "Jobs of the priority-queue contract waiting to be claimed, by the class they are served in",
            self.queue_depth.clone(),
        );
        registry.register(
            "priority_finished_last_minute",
            "Jobs of the priority-queue contract completed or failed within the last minute",
            self.finished_last_minute.clone(),
        );
    }

    /// Sets every gauge to `snap`; series it no longer has are dropped.
    pub fn set(&self, snap: &crate::priority::Snapshot) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.jobs.clear();
        for (&(class, status), &v) in &snap.jobs {
            (self
                .jobs
                .get_or_create(&vec![("class", class.name()), ("status", status)]))
            .set(n(v));
        }
        self.workers.clear();
        for (&status, &v) in &snap.workers {
            self.workers
                .get_or_create(&vec![("status", status)])
                .set(n(v));
        }
        self.unpublished.clear();
        for (queue, v) in &snap.unpublished {
            (self
                .unpublished
                .get_or_create(&vec![("queue", queue.clone())]))
            .set(n(*v));
        }
        self.finished_last_minute.set(n(snap.finished_last_minute));
        // Every class, waiting or not: an empty queue reads 0, not a missing series.
        let waiting = drover_core::priority::status_word(TaskStatus::New);
        for class in drover_core::priority::PriorityClass::ALL {
            let depth = snap.jobs.get(&(class, waiting)).copied().unwrap_or(0);
            (self
                .queue_depth
                .get_or_create(&vec![("class", class.name())]))
            .set(n(depth));
        }
    }
}

/// The label set of an HTTP request: the route template axum matched (`unmatched` when none
/// did), the method (one of the standard ones, else `other`) and the status code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

/// The route label of a request no route matched (a 404): its path is the client's and is
/// never a label.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method as a label: a client may send any token as its method, so anything beyond the
/// standard ones is `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// HTTP requests answered, on every listener and surface, and how long each took to its
/// response's headers (a streamed body, such as a CSV of results, goes on after).
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    seconds: HistogramFamily<HttpLabels>,
}

fn http_histogram() -> Histogram {
    // 0.5 ms to about 16 s: a cached read to a long-poll claim's wait.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(http_histogram),
        }
    }
}

impl HttpMetrics {
    pub fn record(&self, labels: &HttpLabels, took: Duration) {
        self.requests.get_or_create(labels).inc();
        self.seconds
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }
}

/// A store call's name: a method of the store's traits, so a fixed list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

/// How long store calls take, as the server sees them (`crate::timed` measures them once, for
/// every surface and worker): claims and reports alone, and the hot calls by operation.
#[derive(Clone)]
pub struct StoreTimings {
    claim: Histogram,
    report: Histogram,
    operations: HistogramFamily<OperationLabel>,
}

fn store_histogram() -> Histogram {
    // 0.1 ms to about 3 s: a read from the page cache to a commit waiting on a busy disk.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Default for StoreTimings {
    fn default() -> Self {
        StoreTimings {
            claim: store_histogram(),
            report: store_histogram(),
            operations: Family::new_with_constructor(store_histogram),
        }
    }
}

impl StoreTimings {
    /// One store call of `operation` that took `took`.
    pub fn record(&self, operation: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        match operation {
            "claim" | "claim_task" => self.claim.observe(secs),
            "report" => self.report.observe(secs),
            _ => {}
        }
        self.operations
            .get_or_create(&OperationLabel { operation })
            .observe(secs);
    }
}

/// A task's move between two statuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

/// The status move a committed event records, if it is a task's (a cancel moves a job's
/// tasks without an event each, so it is not among them).
fn transition(event: &Event) -> Option<(TaskStatus, TaskStatus)> {
    use TaskStatus::*;
    match event {
        Event::TaskClaimed { .. } => Some((New, Running)),
        Event::TaskCompleted { .. } => Some((Running, Done)),
        Event::TaskFailed { will_retry, .. } => {
            Some((Running, if *will_retry { New } else { Failed }))
        }
        Event::TaskReleased { to, .. } => Some((Running, *to)),
        _ => None,
    }
}

/// Every move [`transition`] names, made at start-up so each shows at 0 before it happens.
const TRANSITIONS: [(TaskStatus, TaskStatus); 4] = [
    (TaskStatus::New, TaskStatus::Running),
    (TaskStatus::Running, TaskStatus::Done),
    (TaskStatus::Running, TaskStatus::Failed),
    (TaskStatus::Running, TaskStatus::New),
];

/// What a scrape read from the store: the counts by status and the journal's positions.
#[derive(Debug, Clone, Default)]
struct StoreFigures {
    counts: StatusCounts,
    journal_head: u64,
    /// Only when the journal is published (`--journal-sink`).
    published_upto: Option<u64>,
}

/// The store's figures as the last read that succeeded found them, when that read started, and
/// the read in flight, if any.
struct ScrapedFigures {
    last: std::sync::Mutex<Option<(StoreFigures, std::time::SystemTime)>>,
    /// Set while a read is in flight: a scrape then starts no other.
    reading: std::sync::atomic::AtomicBool,
    /// Reads finished (succeeded or failed), for a scrape to wait on the one it started.
    finished: tokio::sync::watch::Sender<u64>,
    failures: Counter,
}

impl Default for ScrapedFigures {
    fn default() -> Self {
        ScrapedFigures {
            last: std::sync::Mutex::default(),
            reading: std::sync::atomic::AtomicBool::new(false),
            finished: tokio::sync::watch::Sender::new(0),
            failures: Counter::default(),
        }
    }
}

impl ScrapedFigures {
    /// Reads the store's figures and keeps them; the figures kept stay as they were when the
    /// read fails.
    async fn read(&self, store: &Stores, journal_published: bool) {
        let started = std::time::SystemTime::now();
        match read_figures(store, journal_published).await {
            Ok(figures) => {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((figures, started));
            }
            Err(e) => {
                self.failures.inc();
                tracing::warn!(error = %e, "reading the store's figures for /metrics");
            }
        }
    }
}

/// Clears [`ScrapedFigures::reading`] and counts the read finished, however the read ends.
struct ReadDone(Arc<ScrapedFigures>);

impl Drop for ReadDone {
    fn drop(&mut self) {
        self.0
            .reading
            .store(false, std::sync::atomic::Ordering::Release);
        self.0.finished.send_modify(|n| *n += 1);
    }
}

/// How long a scrape waits for the read of the store's figures it started. A read that takes
/// longer goes on in the background and the next scrape shows what it found: a scrape must
/// answer at once while the database is away, which is when it is read most (a replica cut off
/// from its database still says whether it leads).
pub const SCRAPE_WAIT: Duration = Duration::from_millis(100);

pub struct Metrics {
    registry: Registry,
    pub runners: RunnerCounters,
    pub priority: PriorityGauges,
    pub workers: WorkerMetrics,
    pub store_events: EventCounters,
    pub grpc: GrpcMetrics,
    pub http: HttpMetrics,
    pub store_timings: StoreTimings,
    events_by_kind: HashMap<&'static str, Counter>,
    transitions: HashMap<(TaskStatus, TaskStatus), Counter>,
    figures: Arc<ScrapedFigures>,
    /// Whether the journal is published, so that a scrape reads how far.
    journal_published: bool,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drover");
        let runners = RunnerCounters::default();
        registry.register(
            "runners_provisioned",
            "Runners started for a provision request",
            runners.provisioned.clone(),
        );
        registry.register(
            "runners_deprovisioned",
            "Runners stopped for a deprovision request",
            runners.deprovisioned.clone(),
        );
        registry.register(
            "runners_reaped",
            "Runners stopped for inactivity",
            runners.reaped.clone(),
        );
        registry.register(
            "runners_exited",
            "Runners forgotten because their sandbox had exited",
            runners.exited.clone(),
        );
        registry.register(
            "runners_failed",
            "Runner starts or stops that failed",
            runners.failed.clone(),
        );
        let workers = WorkerMetrics::default();
        registry.register(
            "worker_runs",
            "Steps run by each background worker",
            workers.runs.clone(),
        );
        registry.register(
            "worker_failures",
            "Steps of each background worker that failed",
            workers.failures.clone(),
        );
        registry.register(
            "worker_last_run_timestamp_seconds",
            "When each background worker's last step started (Unix time)",
            workers.last_run.clone(),
        );
        registry.register(
            "worker_last_duration_seconds",
            "How long each background worker's last step took",
            workers.last_duration.clone(),
        );
        registry.register(
            "worker_last_failed",
            "1 if each background worker's last step failed, else 0",
            workers.last_failed.clone(),
        );
        registry.register(
            "worker_items",
            "What background workers did, by worker and item (tasks_retried, spots_down, ...)",
            workers.items.clone(),
        );
        let priority = PriorityGauges::default();
        priority.register(&mut registry);
        let store_events = EventCounters::default();
        registry.register(
            "store_events",
            "Domain events of committed store writes, by kind",
            store_events.clone(),
        );
        let grpc = GrpcMetrics::default();
        registry.register(
            "grpc_requests",
            "gRPC requests answered, by method and status code",
            grpc.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC request (to its headers, for a stream), by method",
            grpc.seconds.clone(),
        );
        let http = HttpMetrics::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template (unmatched for none), method and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its response's headers), by route template, method and status",
            http.seconds.clone(),
        );
        let store_timings = StoreTimings::default();
        registry.register(
            "task_claim_duration_seconds",
            "Time a claim's store call took (a claim of the next tasks or of one named task), waits for work excluded",
            store_timings.claim.clone(),
        );
        registry.register(
            "task_report_duration_seconds",
            "Time a report's store call took (one or a batch of completions and failures)",
            store_timings.report.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Time a store call of the jobs and nodes took, by operation",
            store_timings.operations.clone(),
        );
        let task_transitions: Family<TransitionLabels, Counter> = Family::default();
        registry.register(
            "task_transitions",
            "Committed task status changes, by status before and after (cancels excepted)",
            task_transitions.clone(),
        );
        let transitions = TRANSITIONS
            .iter()
            .map(|&(from, to)| {
                let labels = TransitionLabels {
                    from: from.as_str(),
                    to: to.as_str(),
                };
                ((from, to), task_transitions.get_or_create(&labels).clone())
            })
            .collect();
        let figures = Arc::new(ScrapedFigures::default());
        registry.register_collector(Box::new(FiguresCollector(figures.clone())));
        Metrics {
            registry,
            runners,
            priority,
            workers,
            events_by_kind: counters_by_kind(&store_events),
            store_events,
            grpc,
            http,
            store_timings,
            transitions,
            figures,
            journal_published: false,
        }
    }

    /// Adds the journal's publishing series (`drover_journal_published_upto`,
    /// `drover_journal_pending_blobs`, `drover_journal_routing_state`,
    /// `drover_journal_sink_consecutive_failures`), the routing's read from `publisher` at each
    /// scrape.
    pub fn with_journal(mut self, publisher: Arc<crate::journal::Publisher>) -> Self {
        self.journal_published = true;
        self.registry
            .register_collector(Box::new(JournalRouting(publisher)));
        self
    }

    /// The text exposition, after starting a read of the store's figures (counts by status,
    /// the journal's positions) and waiting for it at most [`SCRAPE_WAIT`]. While a read is in
    /// flight no other starts, and a scrape shows the figures of the last read that succeeded;
    /// `drover_metrics_store_read_timestamp_seconds` says when that read started.
    pub async fn scrape(&self, store: &Stores) -> String {
        let figures = &self.figures;
        let idle = figures
            .reading
            .compare_exchange(
                false,
                true,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok();
        if idle {
            let mut finished = figures.finished.subscribe();
            let done = ReadDone(figures.clone());
            let (store, journal) = (store.clone(), self.journal_published);
            tokio::spawn(async move {
                done.0.read(&store, journal).await;
                drop(done);
            });
            // Either way the scrape answers: with these figures, or with the last ones.
            let _ = tokio::time::timeout(SCRAPE_WAIT, finished.changed()).await;
        }
        self.render()
    }

    /// Adds `drover_store_commits_total` and `drover_store_writes_total`, read from `store` at
    /// each scrape: writes per commit shows how well the store groups its commits.
    pub fn with_store_writes(mut self, store: Arc<dyn StoreOps>) -> Self {
        self.registry
            .register_collector(Box::new(StoreWrites(store)));
        self
    }

    /// Adds `drover_cluster_leader` (1 while this replica leads, else 0) and
    /// `drover_cluster_epoch` (the lease's epoch as this replica last learnt it), read from its
    /// role at each scrape and answered from memory: a replica cut off from the store still
    /// says whether it acts. Across replicas, a sum of the first other than 1 is worth an alert.
    pub fn with_cluster_role(mut self, cluster: crate::cluster::Cluster) -> Self {
        self.registry
            .register_collector(Box::new(ClusterRole(cluster)));
        self
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Metrics {
    /// Counts each committed write's events by kind.
    /// Counts each committed write's events by kind, and the task status moves they record.
    pub fn count_events(&self, events: &[drover_core::Event]) {
        for event in events {
            match self.events_by_kind.get(event.kind()) {
                Some(counter) => counter.inc(),
                None => self
                    .store_events
                    .get_or_create(&vec![("kind", event.kind())])
                    .inc(),
            };
            if let Some(counter) = transition(event).and_then(|m| self.transitions.get(&m)) {
                counter.inc();
            }
        }
    }
}

/// The store's own write counters ([`StoreOps::write_stats`]).
struct StoreWrites(Arc<dyn StoreOps>);

impl std::fmt::Debug for StoreWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreWrites")
    }
}

impl Collector for StoreWrites {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.write_stats();
        for (name, help, value) in [
            (
                "store_commits",
                "Durable commits of the store (one fsync each)",
                stats.commits,
            ),
            (
                "store_writes",
                "Store writes committed; several may share one commit",
                stats.writes,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// This replica's role among the replicas of its store.
struct ClusterRole(crate::cluster::Cluster);

impl std::fmt::Debug for ClusterRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterRole")
    }
}

impl Collector for ClusterRole {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::cluster::Role;
        let role = self.0.role();
        let epoch = match role {
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } => epoch,
        };
        for (name, help, value) in [
            (
                "cluster_leader",
                "1 while this replica holds the leader's lease and runs the background workers, else 0",
                i64::from(role.leading_epoch().is_some()),
            ),
            (
                "cluster_epoch",
                "The leader's lease epoch as this replica last learnt it",
                i64::try_from(epoch).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The store's figures for one scrape.
async fn read_figures(store: &Stores, journal_published: bool) -> Result<StoreFigures, StoreError> {
    let counts = store.ops.status_counts().await?;
    let journal_head = store.journal.journal_head().await?;
    let published_upto = match journal_published {
        true => Some(store.journal.published_upto().await?),
        false => None,
    };
    Ok(StoreFigures {
        counts,
        journal_head,
        published_upto,
    })
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Encodes one gauge without labels.
fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = prometheus_client::metrics::gauge::ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Encodes `series` as one gauge family `name`, each with its label set.
fn encode_gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::gauge::ConstGauge;
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// The figures the last scrape read from the store ([`Metrics::scrape`]).
struct FiguresCollector(Arc<ScrapedFigures>);

impl std::fmt::Debug for FiguresCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FiguresCollector")
    }
}

impl Collector for FiguresCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let failures = ConstCounter::new(self.0.failures.get());
        failures.encode(encoder.encode_descriptor(
            "metrics_store_read_failures",
            "Reads of the store's figures for /metrics (nodes, runners, tasks, journal) that failed",
            None,
            failures.metric_type(),
        )?)?;
        let last = self
            .0
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Before the first successful read there is nothing true to show.
        let Some((f, read_at)) = last else {
            return Ok(());
        };
        let read_at = read_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = prometheus_client::metrics::gauge::ConstGauge::new(read_at.as_secs_f64());
        stamp.encode(encoder.encode_descriptor(
            "metrics_store_read_timestamp_seconds",
            "When the read of the store's figures shown here started (Unix time); old figures mean the store does not answer",
            None,
            stamp.metric_type(),
        )?)?;
        let by_status = |pairs: Vec<(&'static str, u64)>| -> Vec<(StatusLabel, i64)> {
            pairs
                .into_iter()
                .map(|(status, n)| (StatusLabel { status }, gauge_value(n)))
                .collect()
        };
        encode_gauges(
            &mut encoder,
            "nodes",
            "Registered nodes (spots, workers) by status",
            &by_status(
                f.counts
                    .nodes
                    .iter()
                    .map(|(s, n)| (s.as_str(), *n))
                    .collect(),
            ),
        )?;
        encode_gauges(
            &mut encoder,
            "runners",
            "Session runners by status",
            &by_status(
                f.counts
                    .runners
                    .iter()
                    .map(|(s, n)| (s.as_str(), *n))
                    .collect(),
            ),
        )?;
        encode_gauge(
            &mut encoder,
            "tasks_waiting",
            "Tasks NEW, waiting to be claimed, over every job",
            gauge_value(f.counts.tasks_waiting),
        )?;
        encode_gauge(
            &mut encoder,
            "tasks_running",
            "Tasks RUNNING, claimed under a lease, over every job",
            gauge_value(f.counts.tasks_running),
        )?;
        encode_gauge(
            &mut encoder,
            "journal_head",
            "The sequence number of the journal's last entry (0 while it is empty)",
            gauge_value(f.journal_head),
        )?;
        if let Some(upto) = f.published_upto {
            encode_gauge(
                &mut encoder,
                "journal_published_upto",
                "The last journal entry published to a sink; the head minus this is the backlog",
                gauge_value(upto),
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

/// The journal's routing between its sinks, read from the publisher's memory at each scrape.
struct JournalRouting(Arc<crate::journal::Publisher>);

impl std::fmt::Debug for JournalRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalRouting")
    }
}

impl Collector for JournalRouting {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        encode_gauge(
            &mut encoder,
            "journal_pending_blobs",
            "Blobs posted to a fallback sink and not yet reconciled to the primary",
            gauge_value(snap.pending_reconcile),
        )?;
        let states: Vec<(StateLabel, i64)> = RoutingState::ALL
            .iter()
            .map(|s| {
                let label = StateLabel { state: s.as_str() };
                (label, i64::from(*s == snap.state))
            })
            .collect();
        encode_gauges(
            &mut encoder,
            "journal_routing_state",
            "1 for the journal routing's current state, 0 for the others",
            &states,
        )?;
        let failures: Vec<(SinkLabel, i64)> = SinkRole::ALL
            .iter()
            .filter(|role| snap.sink(**role).configured)
            .map(|role| {
                let label = SinkLabel {
                    sink: role.as_str(),
                };
                let n = snap.sink(*role).consecutive_failures;
                (label, i64::from(n))
            })
            .collect();
        encode_gauges(
            &mut encoder,
            "journal_sink_consecutive_failures",
            "Failures in a row of each configured sink (primary, secondary, emergency); 0 after a success",
            &failures,
        )?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
