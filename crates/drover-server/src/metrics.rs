//! Prometheus metrics: one registry per server (no globals, so every test server counts alone),
//! rendered at `GET /metrics` in the OpenMetrics text format.
//!
//! Counters are incremented by the code that did the thing (the runner service, the worker
//! board, the store's committed events), or read from it at each scrape (the store's write
//! path counts its commits itself); this module only owns their names and the registry.

use drover_core::Timestamp;
use drover_store::StoreOps;
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
    }
}

pub struct Metrics {
    registry: Registry,
    pub runners: RunnerCounters,
    pub priority: PriorityGauges,
    pub workers: WorkerMetrics,
    pub store_events: EventCounters,
    pub grpc: GrpcMetrics,
    events_by_kind: HashMap<&'static str, Counter>,
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
        Metrics {
            registry,
            runners,
            priority,
            workers,
            events_by_kind: counters_by_kind(&store_events),
            store_events,
            grpc,
        }
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
    pub fn count_events(&self, events: &[drover_core::Event]) {
        for event in events {
            match self.events_by_kind.get(event.kind()) {
                Some(counter) => counter.inc(),
                None => self
                    .store_events
                    .get_or_create(&vec![("kind", event.kind())])
                    .inc(),
            };
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
