//! The dashboard's pages other than a job's: overview, jobs, nodes, runners, placement,
//! journal, cluster, priority classes, and the login form.
//!
//! Each handler makes the reads the matching JSON route makes (the same store and service
//! calls, the same `translate` where there is one) and renders them; nothing is counted or
//! decided here that the core or a service does not already say.

use super::{UiError, Viewer, layout, session, svg};
use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::surfaces::ListQuery;
use crate::translate;
use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::node::Drain;
use drover_core::priority::PriorityClass;
use drover_core::text::path_segment;
use drover_core::{Job, JobStatus, NodeStatus};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Jobs read for the overview's counts at most; past it the counts say "at least".
const OVERVIEW_JOBS: usize = 10_000;
/// Rows per page of the jobs list.
const JOBS_PAGE: u32 = 50;

/// A timestamp as the pages show it: RFC 3339 in UTC, to the second.
pub fn when(t: &drover_core::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long ago `t` was at `now`, in words.
pub fn ago(now: drover_core::Timestamp, t: &drover_core::Timestamp) -> String {
    let s = (now - *t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn bytes(b: Option<i64>) -> String {
    match b {
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{b} B"),
        None => "–".into(),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
}

fn status_class(word: &str) -> String {
    format!("status s-{}", word.to_ascii_lowercase())
}

/// Reads jobs, newest first, up to `max`; whether there were more.
async fn read_jobs(app: &AppState, max: usize) -> Result<(Vec<Job>, bool), UiError> {
    super::read_up_to(max, |page| app.store.jobs.list_jobs(None, page)).await
}

pub(super) async fn overview(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let o = app.store.ops.overview().await?;
    let nodes = app.store.nodes.list_nodes().await?;
    let (jobs, more) = read_jobs(&app, OVERVIEW_JOBS).await?;
    let mut nodes_by: BTreeMap<&str, u64> =
        NodeStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for n in &nodes {
        *nodes_by.entry(n.status.as_str()).or_default() += 1;
    }
    let mut jobs_by: BTreeMap<&str, u64> = JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    // Waiting tasks by the class the core puts their job's priority in.
    let mut queued: BTreeMap<PriorityClass, (u64, u64)> =
        PriorityClass::ALL.iter().map(|c| (*c, (0, 0))).collect();
    for j in &jobs {
        *jobs_by.entry(j.status.as_str()).or_default() += 1;
        let q = queued
            .entry(PriorityClass::of_job_priority(j.priority))
            .or_default();
        q.0 += j.counts.new;
        q.1 += j.counts.running;
    }
    let hour = app.dashboard.history.last_hour();
    let rate: Vec<f64> = hour.iter().map(|m| m.tasks_per_second()).collect();
    let latency: Vec<f64> = hour
        .iter()
        .map(|m| m.mean_claim_ms().unwrap_or(0.0))
        .collect();
    let at_least = if more { "at least " } else { "" };
    let content = html! {
        section class="cards" {
            div class="card" { div class="big" data-live="activeNodes" { (o.active_nodes) } div { "nodes up" } }
            div class="card" { div class="big" data-live="pendingTasks" { (o.pending_tasks) } div { "tasks waiting" } }
            div class="card" { div class="big" data-live="runningTasks" { (o.running_tasks) } div { "tasks running" } }
        }
        div class="row" {
            section {
                h2 { "Nodes by status" }
                table id="nodes-by-status" {
                    @for (s, n) in &nodes_by { tr { th { span class=(status_class(s)) { (s) } } td class="num" data-status=(s) { (n) } } }
                }
                p { a href="/ui/nodes" { "All nodes" } }
            }
            section {
                h2 { "Jobs by status" }
                table id="jobs-by-status" {
                    @for (s, n) in &jobs_by { tr { th { span class=(status_class(s)) { (s) } } td class="num" data-status=(s) { (n) } } }
                }
                @if more { p class="muted" { "Counted over the newest " (OVERVIEW_JOBS) " jobs; the counts are " (at_least) "these." } }
                p { a href="/ui/jobs" { "All jobs" } }
            }
            section {
                h2 { "Queue depth by priority class" }
                table id="queue-by-class" {
                    tr { th { "class" } th { "priorities" } th { "waiting" } th { "running" } }
                    @for (c, (new, running)) in &queued {
                        tr { th { a href="/ui/priority" { (c.name()) } } td { (class_range(*c)) }
                             td class="num" data-class=(c.name()) { (new) } td class="num" { (running) } }
                    }
                }
            }
        }
        div class="row" {
            section {
                h2 { "Tasks finished per second, last hour" }
                (svg::series("tasks finished per second, per minute", "tasks/s", &rate))
            }
            section {
                h2 { "Claim latency, last hour" }
                (svg::series("mean store time of a claim that got work, per minute", "ms", &latency))
                p class="muted" { "Mean time the store took to hand out a claim that got work, per minute, as this server saw it." }
            }
        }
    };
    Ok(layout(
        &viewer,
        "Overview",
        "/ui",
        Some("/ui/events"),
        content,
    ))
}

fn class_range(c: PriorityClass) -> &'static str {
    match c {
        PriorityClass::High => "10 and above",
        PriorityClass::Medium => "5 to 9",
        PriorityClass::Low => "below 5",
    }
}

/// One row of job counts: the progress bar and counts shared by the list and the job page.
pub fn progress(j: &Job) -> Markup {
    let c = &j.counts;
    let finished = c.done + c.failed + c.cancelled;
    html! {
        progress value=(finished) max=(c.total.max(1)) data-live-progress {}
        " " span data-live="finished" { (finished) } " / " span data-live="total" { (c.total) }
    }
}

pub(super) async fn jobs(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Markup, UiError> {
    let status = q.status::<JobStatus>()?;
    let page = app
        .store
        .jobs
        .list_jobs(status, q.page(JOBS_PAGE, 1000)?)
        .await?;
    let filter = q.status.clone().unwrap_or_default();
    let content = html! {
        form method="get" action="/ui/jobs" class="filters" {
            label { "Status " select name="status" {
                option value="" selected[filter.is_empty()] { "any" }
                @for s in JobStatus::ALL { option value=(s.as_str()) selected[filter.eq_ignore_ascii_case(s.as_str())] { (s.as_str()) } }
            } }
            " " button type="submit" { "Show" }
        }
        table id="jobs" class="list" {
            thead { tr { th { "job" } th { "name" } th { "status" } th { "progress" } th { "done" } th { "failed" } th { "running" } th { "waiting" } th { "priority" } th { "created" } } }
            tbody {
                @for j in &page.items {
                    tr data-job=(j.id) {
                        td { a href={ "/ui/jobs/" (j.id) } { code { (j.id) } } }
                        td { (j.name.as_deref().unwrap_or("")) }
                        td { span class=(status_class(j.status.as_str())) { (j.status) } }
                        td { (progress(j)) }
                        td class="num" { (j.counts.done) } td class="num" { (j.counts.failed) }
                        td class="num" { (j.counts.running) } td class="num" { (j.counts.new) }
                        td class="num" { (j.priority) } td { (when(&j.created_at)) }
                    }
                }
            }
        }
        @if page.items.is_empty() { p class="muted" { "No jobs." } }
        @if let Some(next) = page.next_cursor {
            p { a href={ "/ui/jobs?cursor=" (next) @if !filter.is_empty() { "&status=" (filter) } } { "Older jobs →" } }
        }
    };
    Ok(layout(&viewer, "Jobs", "/ui/jobs", None, content))
}

pub(super) async fn nodes(State(app): State<AppState>, viewer: Viewer) -> Result<Markup, UiError> {
    let now = app.clock.now();
    let nodes = app.store.nodes.list_nodes().await?;
    let content = html! {
        p class="muted" {
            "A drained node finishes the tasks it holds and claims nothing new until it is undrained; "
            "draining lasts until then or until the node goes DOWN."
        }
        table id="nodes" class="list" {
            thead { tr { th { "node" } th { "host" } th { "address" } th { "zone" } th { "status" } th { "cores" } th { "memory" } th { "gpus" }
                         th { "cpu load" } th { "running" } th { "free memory" } th { "last heartbeat" } th { "" } } }
            tbody {
                @for n in &nodes {
                    tr data-node=(n.id) {
                        td { code { (n.id) } }
                        td { (n.info.hostname.as_deref().unwrap_or("")) }
                        td { (n.info.address) }
                        td { (n.info.zone.as_deref().unwrap_or("")) }
                        td { span class=(status_class(n.status.as_str())) { (n.status) } }
                        td class="num" { (opt(n.info.capacity.cores)) }
                        td class="num" { (bytes(n.info.capacity.memory_bytes)) }
                        td class="num" { (opt(n.info.capacity.gpus)) }
                        td class="num" { (n.cpu_load.map(|l| format!("{l:.1}")).unwrap_or_else(|| "–".into())) }
                        td class="num" data-running { (n.running_tasks) }
                        td class="num" { (bytes(n.free_memory_bytes)) }
                        td title=(when(&n.last_heartbeat)) { (ago(now, &n.last_heartbeat)) }
                        td { (drain_form(&viewer, n)) }
                    }
                }
            }
        }
        @if nodes.is_empty() { p class="muted" { "No nodes have registered." } }
    };
    Ok(layout(&viewer, "Nodes", "/ui/nodes", None, content))
}

/// The drain or undrain button of a node, by its status; none for a DOWN node, which holds no
/// work and comes back UP by itself.
fn drain_form(viewer: &Viewer, n: &drover_core::Node) -> Markup {
    let (action, label) = match n.status {
        NodeStatus::Up => ("drain", "Drain"),
        NodeStatus::Draining => ("undrain", "Undrain"),
        NodeStatus::Down => return html! {},
    };
    html! {
        form method="post" action={ "/ui/nodes/" (path_segment(&n.id)) "/" (action) } class="inline" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            button type="submit" { (label) }
        }
    }
}

pub(super) async fn drain(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    set_drain(app, viewer, id, form, Drain::Start).await
}

pub(super) async fn undrain(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    set_drain(app, viewer, id, form, Drain::Stop).await
}

/// A drain or undrain from the nodes page: the store's `drain_node`, as
/// `POST /api/v1/spots/{id}/drain` makes it, then back to the page.
async fn set_drain(
    app: AppState,
    viewer: Viewer,
    id: String,
    form: Result<Form<CsrfForm>, FormRejection>,
    drain: Drain,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    viewer.check_csrf(&app, &form.csrf)?;
    let node = app.store.nodes.drain_node(&id, drain).await?;
    tracing::info!(node = %node.id, status = %node.status, "node drain set from the dashboard");
    Ok(Redirect::to("/ui/nodes").into_response())
}

pub(super) async fn runners(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Markup, UiError> {
    let now = app.clock.now();
    let page = app.runners.list(q.page(500, 1000)?).await?;
    // As `GET /api/v1/runners`: session ids and endpoints only to holders of the key, which a
    // dashboard with a login has checked; an open one redacts them as the open API does.
    let shown = app.dashboard.sessions.guarded();
    let content = html! {
        @if !app.runners.enabled() { p class="muted" { "No runner driver is configured: this server provisions no runners." } }
        table id="runners" class="list" {
            thead { tr { th { "session" } th { "driver" } th { "status" } th { "instance" } th { "endpoint" } th { "age" } th { "idle" } } }
            tbody {
                @for r in page.items.iter().map(|r| translate::runner(r, now, shown)) {
                    tr {
                        td { code { (r.session_id) } } td { (r.driver) }
                        td { span class=(status_class(&r.status)) { (r.status) } }
                        td { (r.instance.as_deref().unwrap_or("")) } td { (r.endpoint.as_deref().unwrap_or("")) }
                        td class="num" { (format!("{:.0} s", r.age_seconds)) } td class="num" { (format!("{:.0} s", r.idle_seconds)) }
                    }
                }
            }
        }
        @if page.items.is_empty() { p class="muted" { "No runners." } }
    };
    Ok(layout(&viewer, "Runners", "/ui/runners", None, content))
}

pub(super) async fn placement(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let now = app.clock.now();
    let nodes = app.placement.nodes().await?;
    let weights = app.placement.weights().await?;
    let standing = app.placement.under_replicated().await?;
    let objects = app.store.placement.list_objects(None, 100).await?;
    let content = html! {
        section {
            h2 { "Nodes" }
            table id="placement-nodes" class="list" {
                thead { tr { th { "node" } th { "zone" } th { "address" } th { "capacity" } th { "status" } th { "cpu free" } th { "ram free" } th { "gpu free" } th { "latency" } th { "io pressure" } th { "last seen" } } }
                tbody { @for n in &nodes { tr {
                    td { code { (n.id) } } td { (n.zone) } td { (n.address) } td class="num" { (n.capacity_gb) " GB" }
                    td { span class=(status_class(n.status.as_str())) { (n.status) } }
                    @if let Some(s) = &n.stats {
                        td class="num" { (format!("{:.0} %", s.cpu_free * 100.0)) } td class="num" { (format!("{:.0} MB", s.ram_free_mb)) }
                        td class="num" { (s.gpu_free) } td class="num" { (format!("{:.1} ms", s.latency_ms)) } td class="num" { (format!("{:.2}", s.io_pressure)) }
                    } @else { td colspan="5" class="muted" { "no stats reported" } }
                    td { (ago(now, &n.last_seen)) }
                } } }
            }
            @if nodes.is_empty() { p class="muted" { "No placement nodes." } }
            p class="muted" { "Scheduler weights: cpu " (weights.w_cpu) ", ram " (weights.w_ram) ", gpu " (weights.w_gpu) ", latency " (weights.w_latency) ", io " (weights.w_io) }
        }
        section {
            h2 { "Repairs pending" }
            table id="repairs" class="list" {
                thead { tr { th { "object" } th { "factor" } th { "healthy replicas" } th { "replicas" } } }
                tbody { @for s in &standing { tr {
                    td { code { (s.object.hash) } } td class="num" { (s.object.rf) } td class="num" { (s.healthy) }
                    td { @for (node, state) in &s.object.replicas { (node) " (" (format!("{state:?}")) ") " } }
                } } }
            }
            @if standing.is_empty() { p class="muted" { "Every object has its replicas." } }
        }
        section {
            h2 { "Objects" }
            table id="objects" class="list" {
                thead { tr { th { "object" } th { "size" } th { "factor" } th { "replicas" } th { "registered" } } }
                tbody { @for o in &objects { tr {
                    td { code { (o.hash) } } td class="num" { (o.size) } td class="num" { (o.rf) }
                    td { @for (node, state) in &o.replicas { (node) " (" (format!("{state:?}")) ") " } }
                    td { (when(&o.registered_at)) }
                } } }
            }
            @if objects.is_empty() { p class="muted" { "No objects." } }
            @if objects.len() == 100 { p class="muted" { "The first 100 objects by hash." } }
        }
    };
    Ok(layout(&viewer, "Placement", "/ui/placement", None, content))
}

pub(super) async fn journal(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let journal = &app.store.journal;
    let head = journal.journal_head().await?;
    let published = journal.published_upto().await?;
    let pending = journal.pending_blobs(100).await?;
    let recent = journal.journal(head.saturating_sub(20), 20).await?;
    let routing = app.journal.as_ref().map(|p| p.snapshot());
    let content = html! {
        section class="cards" {
            div class="card" { div class="big" id="journal-head" { (head) } div { "entries (last number)" } }
            div class="card" { div class="big" id="journal-published" { (published) } div { "published up to" } }
            div class="card" { div class="big" { (pending.len()) } div { "blobs waiting for the primary" } }
        }
        section {
            h2 { "Sinks and routing" }
            @match &routing {
                None => p id="routing" class="muted" { "The journal is published nowhere: start the server with --journal-sink to publish it." },
                Some(s) => {
                    p id="routing" { "Routing: " strong { (s.state.current_state()) } " (" (s.state.current_status()) ")"
                        @if s.fallback_active { ", on a fallback" @if let Some(r) = &s.fallback_reason { ": " (r) } } }
                    table id="sinks" class="list" {
                        thead { tr { th { "sink" } th { "configured" } th { "healthy" } th { "down" } th { "failures in a row" } th { "successes in a row" } th { "last error" } } }
                        tbody {
                            @for (name, h) in [("primary", &s.primary), ("secondary", &s.secondary), ("emergency", &s.emergency)] {
                                tr { th { (name) } td { (h.configured) } td { (h.healthy) } td { (h.down) }
                                     td class="num" { (h.consecutive_failures) } td class="num" { (h.consecutive_successes) }
                                     td { (h.last_error.as_deref().unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
        }
        @if !pending.is_empty() {
            section {
                h2 { "Waiting for reconciliation" }
                table class="list" {
                    thead { tr { th { "entries" } th { "on" } th { "commitment" } th { "retries" } th { "last error" } } }
                    tbody { @for b in &pending { tr {
                        td { (b.blob.first) "–" (b.blob.last) } td { (b.blob.sink.as_str()) } td { code { (b.blob.commitment) } }
                        td class="num" { (b.retry_count) } td { (b.last_error.as_deref().unwrap_or("")) }
                    } } }
                }
            }
        }
        section {
            h2 { "Latest entries" }
            table id="entries" class="list" {
                thead { tr { th { "#" } th { "at" } th { "kind" } th { "changes" } } }
                tbody { @for e in recent.iter().rev() { tr {
                    td class="num" { (e.seq) } td { (when(&e.at)) } td { code { (e.kind) } } td class="num" { (e.changes.len()) }
                } } }
            }
        }
    };
    Ok(layout(
        &viewer,
        "Journal and sinks",
        "/ui/journal",
        None,
        content,
    ))
}

pub(super) async fn cluster(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let now = app.clock.now();
    let since = app.cluster.timing().members_since(now);
    let view = app.store.cluster.view(since).await?;
    let c = translate::cluster(&app.cluster, &view, now);
    let workers: Vec<_> = app
        .workers
        .snapshot()
        .iter()
        .map(translate::worker)
        .collect();
    let content = html! {
        section class="cards" {
            div class="card" { div class="big" id="role" { (c.role) } div { "this replica (" code { (c.replica_id) } ")" } }
            div class="card" { div class="big" id="leader" { (c.leader.as_deref().unwrap_or("none")) } div { "leader" } }
            div class="card" { div class="big" { (c.epoch) } div { "epoch" } }
        }
        p class="muted" { "Lease expires " (c.lease_expires_at.as_deref().unwrap_or("–")) "; TTL " (c.lease_ttl_seconds) " s"
            @if let Some(s) = &c.leading_since { "; leading since " (s) } }
        section {
            h2 { "Replicas" }
            table id="members" class="list" {
                thead { tr { th { "replica" } th { "address" } th { "leader" } th { "first seen" } th { "last seen" } } }
                tbody { @for m in &c.members { tr {
                    td { code { (m.replica_id) } } td { (m.address) } td { (m.leader) }
                    td { (m.first_seen) } td { (m.last_seen) }
                } } }
            }
        }
        section {
            h2 { "Background workers" }
            table id="workers" class="list" {
                thead { tr { th { "worker" } th { "every" } th { "runs" } th { "failures" } th { "last run" } th { "last error" } } }
                tbody { @for w in &workers { tr {
                    td { (w.name) } td class="num" { (w.interval_seconds.map(|s| format!("{s} s")).unwrap_or_else(|| "–".into())) }
                    td class="num" { (w.runs) } td class="num" { (w.failures) }
                    td { (w.last_run_at.as_deref().unwrap_or("–")) } td { (w.last_error.as_deref().unwrap_or("")) }
                } } }
            }
        }
    };
    Ok(layout(&viewer, "Cluster", "/ui/cluster", None, content))
}

pub(super) async fn priority(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let snap = app.priority.snapshot(&app).await?;
    let words = ["pending", "running", "completed", "failed", "cancelled"];
    let content = html! {
        p class="muted" { "The priority router's queues: its contract's jobs by the class their priority puts them in, and its workers. "
            "Dispatch: " (app.config.priority.dispatch.name()) "." }
        table id="classes" class="list" {
            thead { tr { th { "class" } th { "queue" } th { "priorities" } @for w in words { th { (w) } } } }
            tbody { @for c in PriorityClass::ALL { tr data-class=(c.name()) {
                th { (c.name()) } td { code { (c.queue()) } } td { (class_range(c)) }
                @for w in words { td class="num" data-word=(w) { (snap.jobs.get(&(c, w)).copied().unwrap_or(0)) } }
            } } }
        }
        p { "Finished in the last minute: " (snap.finished_last_minute) }
        h2 { "Workers" }
        p id="priority-workers" { @for (w, n) in &snap.workers { (w) ": " (n) " " } @if snap.workers.is_empty() { "none" } }
        @if !snap.unpublished.is_empty() {
            h2 { "Waiting for the broker" }
            table class="list" { @for (q, n) in &snap.unpublished { tr { th { code { (q) } } td class="num" { (n) } } } }
        }
    };
    Ok(layout(
        &viewer,
        "Priority classes",
        "/ui/priority",
        None,
        content,
    ))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// Where to go after logging in: a dashboard path only, never another site.
fn safe_next(next: &str) -> &str {
    let is_ours = (next == "/ui" || next.starts_with("/ui/") || next.starts_with("/ui?"))
        && !next.contains("//")
        && !next.contains('\\');
    if is_ours { next } else { "/ui" }
}

fn login_page(next: &str, refused: bool) -> Markup {
    html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · drover" }
                link rel="stylesheet" href="/ui/static/style.css";
                link rel="icon" href="data:,";
            }
            body class="login" {
                main {
                    h1 { "drover" }
                    form method="post" action="/ui/login" id="login" {
                        p { "This server asks for its API key (" code { "server.api_key" } ")." }
                        @if refused { p class="error" id="login-error" { "That is not this server's API key." } }
                        label { "API key " input type="password" name="key" autocomplete="current-password" autofocus; }
                        input type="hidden" name="next" value=(next);
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

pub(super) async fn login_form(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/ui"));
    if !app.dashboard.sessions.guarded() {
        return Redirect::to(next).into_response();
    }
    login_page(next, false).into_response()
}

pub(super) async fn login(
    State(app): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    let next = safe_next(&form.next);
    let sessions = &app.dashboard.sessions;
    if !sessions.guarded() {
        return Ok(Redirect::to(next).into_response());
    }
    if !sessions.key_matches(&form.key) {
        tracing::warn!("dashboard login refused: wrong API key");
        return Ok((StatusCode::UNAUTHORIZED, login_page(next, true)).into_response());
    }
    let value = sessions.issue(app.clock.now()).ok_or_else(|| {
        UiError::Api(crate::error::ApiError::Internal(
            "no randomness for a session".into(),
        ))
    })?;
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie(&value, app.dashboard.secure_cookies()),
        )],
        Redirect::to(next),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub(super) async fn logout(
    State(app): State<AppState>,
    viewer: Viewer,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    viewer.check_csrf(&app, &form.csrf)?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response())
}
