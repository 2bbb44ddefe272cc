//! Store calls timed once, for every surface and background worker: [`timed`] puts a wrapper
//! around the jobs and nodes aggregates of a [`Stores`] that measures each call and records it
//! in [`StoreTimings`] (`drover_store_operation_duration_seconds` by operation, and the claim
//! and report histograms). Handlers and workers keep calling `app.store.jobs` as before, so a
//! new surface is measured without a line of its own.
//!
//! It passes every call through unchanged: it must not retry, refuse, reorder or decide
//! anything, and it measures only the store call (a long-poll claim's wait for work is the
//! caller's, between calls, and is not counted).

use crate::metrics::StoreTimings;
use async_trait::async_trait;
use drover_core::credential::SpotCredential;
use drover_core::node::Drain;
use drover_core::sweep::Sweep;
use drover_core::{
    ClaimedTask, Job, JobStatus, Node, NodeStats, NodeStatus, ReportOutcome, Task, TaskStatus,
    Timestamp,
};
use drover_store::{
    JobStore, NamedNode, NewJob, NewNode, NodeStore, NodesDown, OriginCounts, Page, Paged,
    Released, Report, Result, Route, Stores, TaskClaim,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// `store` with its jobs and nodes calls timed into `timings`; every other aggregate, and the
/// event observers, are the same.
pub fn timed(mut store: Stores, timings: StoreTimings) -> Stores {
    store.jobs = Arc::new(Timed {
        inner: store.jobs.clone(),
        timings: timings.clone(),
    });
    store.nodes = Arc::new(Timed {
        inner: store.nodes.clone(),
        timings,
    });
    store
}

struct Timed<S: ?Sized> {
    inner: Arc<S>,
    timings: StoreTimings,
}

impl<S: ?Sized> Timed<S> {
    /// Runs `call` and records how long it took under `operation`, failed or not: a slow
    /// failure is as much a store's latency as a slow success.
    async fn time<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.timings.record(operation, started.elapsed());
        out
    }
}

#[async_trait]
impl JobStore for Timed<dyn JobStore> {
    async fn create_job(&self, job: NewJob, sweep: Sweep, now: Timestamp) -> Result<Job> {
        (self.time("create_job", self.inner.create_job(job, sweep, now))).await
    }

    async fn get_job(&self, id: &str) -> Result<Job> {
        self.time("get_job", self.inner.get_job(id)).await
    }

    async fn list_jobs(&self, status: Option<JobStatus>, page: Page) -> Result<Paged<Job>> {
        (self.time("list_jobs", self.inner.list_jobs(status, page))).await
    }

    async fn cancel_job(&self, id: &str, now: Timestamp) -> Result<Job> {
        self.time("cancel_job", self.inner.cancel_job(id, now))
            .await
    }

    async fn list_tasks(
        &self,
        job_id: &str,
        status: Option<TaskStatus>,
        page: Page,
    ) -> Result<Paged<Task>> {
        let inner = self.inner.list_tasks(job_id, status, page);
        self.time("list_tasks", inner).await
    }

    async fn get_task(&self, id: &str) -> Result<Task> {
        self.time("get_task", self.inner.get_task(id)).await
    }

    async fn get_tasks(&self, ids: Vec<String>) -> Result<Vec<Task>> {
        self.time("get_tasks", self.inner.get_tasks(ids)).await
    }

    async fn claim(&self, node_id: &str, max: u32, now: Timestamp) -> Result<Vec<ClaimedTask>> {
        (self.time("claim", self.inner.claim(node_id, max, now))).await
    }

    async fn report(&self, reports: Vec<Report>, now: Timestamp) -> Result<Vec<ReportOutcome>> {
        (self.time("report", self.inner.report(reports, now))).await
    }

    async fn release_expired_tasks(&self, now: Timestamp) -> Result<Vec<Released>> {
        let inner = self.inner.release_expired_tasks(now);
        self.time("release_expired_tasks", inner).await
    }

    async fn claim_task(
        &self,
        task_id: &str,
        node_id: &str,
        max_running: Option<u32>,
        now: Timestamp,
    ) -> Result<TaskClaim> {
        let inner = self.inner.claim_task(task_id, node_id, max_running, now);
        self.time("claim_task", inner).await
    }

    async fn waiting_jobs(
        &self,
        origin: &str,
        priority: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let inner = self.inner.waiting_jobs(origin, priority, after, limit);
        self.time("waiting_jobs", inner).await
    }

    async fn list_jobs_of(&self, origin: &str, page: Page) -> Result<Paged<Job>> {
        (self.time("list_jobs_of", self.inner.list_jobs_of(origin, page))).await
    }

    async fn origin_counts(&self, origin: &str, finished_since: Timestamp) -> Result<OriginCounts> {
        let inner = self.inner.origin_counts(origin, finished_since);
        self.time("origin_counts", inner).await
    }

    async fn raise_priority(
        &self,
        job_ids: Vec<String>,
        priority: i64,
        route: Option<Route>,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let inner = self.inner.raise_priority(job_ids, priority, route, now);
        self.time("raise_priority", inner).await
    }
}

#[async_trait]
impl NodeStore for Timed<dyn NodeStore> {
    async fn register_node(&self, new: NewNode, max: Option<u64>, at: Timestamp) -> Result<Node> {
        (self.time("register_node", self.inner.register_node(new, max, at))).await
    }

    async fn put_node(&self, node: NamedNode, max: Option<u64>, now: Timestamp) -> Result<()> {
        (self.time("put_node", self.inner.put_node(node, max, now))).await
    }

    async fn update_node(
        &self,
        node_id: &str,
        labels: serde_json::Map<String, serde_json::Value>,
        capacity: drover_core::Capacity,
        now: Timestamp,
    ) -> Result<()> {
        let inner = self.inner.update_node(node_id, labels, capacity, now);
        self.time("update_node", inner).await
    }

    async fn spot_credential(&self, node_id: &str) -> Result<SpotCredential> {
        (self.time("spot_credential", self.inner.spot_credential(node_id))).await
    }

    async fn heartbeat(
        &self,
        node_id: &str,
        stats: NodeStats,
        now: Timestamp,
    ) -> Result<NodeStatus> {
        (self.time("heartbeat", self.inner.heartbeat(node_id, stats, now))).await
    }

    async fn flush_heartbeats(&self) -> Result<()> {
        (self.time("flush_heartbeats", self.inner.flush_heartbeats())).await
    }

    async fn drain_node(&self, node_id: &str, drain: Drain) -> Result<Node> {
        (self.time("drain_node", self.inner.drain_node(node_id, drain))).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.time("list_nodes", self.inner.list_nodes()).await
    }

    async fn list_nodes_page(&self, page: Page) -> Result<Paged<Node>> {
        (self.time("list_nodes_page", self.inner.list_nodes_page(page))).await
    }

    async fn mark_silent_nodes_down(&self, cutoff: Timestamp, now: Timestamp) -> Result<NodesDown> {
        let inner = self.inner.mark_silent_nodes_down(cutoff, now);
        self.time("mark_silent_nodes_down", inner).await
    }

    async fn mark_stats_silent_nodes_down(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<NodesDown> {
        let inner = self.inner.mark_stats_silent_nodes_down(cutoff, now);
        self.time("mark_stats_silent_nodes_down", inner).await
    }

    async fn forget_down_nodes(&self, cutoff: Timestamp) -> Result<Vec<String>> {
        (self.time("forget_down_nodes", self.inner.forget_down_nodes(cutoff))).await
    }
}
