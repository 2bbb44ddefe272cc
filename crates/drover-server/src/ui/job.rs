//! A job's page: its progress, tasks by status, failures with their error tails, its results
//! (sortable), the best and median objective value per configuration with a chart, the CSV
//! download and the cancel button.
//!
//! "Objective" and "best" are `drover_core::objective`'s; the CSV is the native API's export
//! (`surfaces::native::public::csv_results`); cancel is the store's `cancel_job`, as
//! `POST /api/v1/jobs/{id}/cancel`. The page only reads and arranges.

use super::pages::{CsrfForm, progress, when};
use super::{UiError, Viewer, layout, svg};
use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::objective::{self, ConfigSummary};
use drover_core::text::value_text;
use drover_core::{Job, Task, TaskStatus};
use drover_store::Page;
use maud::{Markup, html};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// DONE tasks read for the summary and the table at most (pages of 1000).
const RESULTS_READ: usize = 20_000;
/// Rows of the results table shown.
const RESULTS_SHOWN: usize = 500;
/// FAILED tasks shown with their errors.
const FAILURES_SHOWN: u32 = 50;
/// Characters of an error's tail shown.
const ERROR_TAIL: usize = 1200;
/// Configurations drawn in the chart.
const CHART_CONFIGS: usize = 60;

/// The page's query: `sort` (the results table's column: `fopt`, `iter`, `runtimeMs`,
/// `finishedAt`, `task` or a parameter's name), `dir` (`asc` or `desc`), and which parameters
/// define a configuration: `by` (comma-separated), or, from the page's form, `pick=1` with a
/// `with_<name>` for each ticked one. Default: the core's choice.
struct JobQuery {
    sort: Option<String>,
    dir: Option<String>,
    by: Option<Vec<String>>,
}

impl JobQuery {
    fn of(mut q: BTreeMap<String, String>, params: &[String]) -> Self {
        let by = if q.contains_key("pick") {
            Some(
                params
                    .iter()
                    .filter(|p| q.contains_key(&format!("with_{p}")))
                    .cloned()
                    .collect(),
            )
        } else {
            q.get("by").map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|p| params.iter().any(|x| x == p))
                    .map(String::from)
                    .collect()
            })
        };
        JobQuery {
            sort: q.remove("sort"),
            dir: q.remove("dir"),
            by,
        }
    }
}

/// Reads the DONE tasks of `job`, up to [`RESULTS_READ`]; whether there were more.
async fn done_tasks(app: &AppState, job: &str) -> Result<(Vec<Task>, bool), UiError> {
    super::read_up_to(RESULTS_READ, |page| {
        app.store.jobs.list_tasks(job, Some(TaskStatus::Done), page)
    })
    .await
}

/// How two results compare by `column` (ascending).
fn compare(a: &Task, b: &Task, column: &str) -> Ordering {
    let num = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => objective::order(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    match column {
        "fopt" => num(a.result.fopt, b.result.fopt),
        "iter" => num(
            a.result.iter.map(|v| v as f64),
            b.result.iter.map(|v| v as f64),
        ),
        "runtimeMs" => num(
            a.result.runtime_ms.map(|v| v as f64),
            b.result.runtime_ms.map(|v| v as f64),
        ),
        "finishedAt" => a.finished_at.cmp(&b.finished_at),
        "task" => a.seq.cmp(&b.seq),
        param => {
            let (x, y) = (a.payload.get(param), b.payload.get(param));
            match (
                x.and_then(serde_json::Value::as_f64),
                y.and_then(serde_json::Value::as_f64),
            ) {
                (Some(x), Some(y)) => objective::order(x, y),
                _ => x.map(value_text).cmp(&y.map(value_text)),
            }
        }
    }
}

/// The last `n` characters of `s` (whole characters), marked when cut.
fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_string();
    }
    let cut: String = s.chars().skip(count - n).collect();
    format!("…{cut}")
}

fn fmt_f(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "–".into())
}

pub(super) async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
) -> Result<Markup, UiError> {
    let job = app.store.jobs.get_job(&id).await?;
    let q = JobQuery::of(query, &job.parameter_names);
    let (mut done, more) = done_tasks(&app, &id).await?;
    let failed = app
        .store
        .jobs
        .list_tasks(
            &id,
            Some(TaskStatus::Failed),
            Page {
                cursor: None,
                limit: FAILURES_SHOWN,
            },
        )
        .await?;
    let params = &job.parameter_names;
    let by =
        q.by.clone()
            .unwrap_or_else(|| objective::default_configuration(params));
    let summary = objective::summarise(&by, done.iter().map(|t| (&t.payload, t.result.fopt)));
    let sort = q.sort.clone().unwrap_or_else(|| "fopt".into());
    let desc = q.dir.as_deref() == Some("desc");
    done.sort_by(|a, b| {
        let o = compare(a, b, &sort);
        if desc { o.reverse() } else { o }
    });
    let content = html! {
        (summary_section(&job, &viewer))
        section {
            h2 { "Best per configuration" }
            (configuration_form(&job, &by, &sort, desc))
            (svg::objectives(&summary, CHART_CONFIGS))
            (summary_table(&by, &summary))
            @if more { p class="muted" { "Summarised over the first " (RESULTS_READ) " results; download the CSV for all of them." } }
        }
        section {
            h2 { "Results" }
            p { a id="csv" href={ "/ui/jobs/" (job.id) "/results.csv" } download { "Download all results (CSV)" } }
            (results_table(&job, &done, &sort, desc, &by))
        }
        section {
            h2 { "Failures" }
            @if failed.items.is_empty() { p class="muted" id="no-failures" { "No task has failed for good." } }
            @for t in &failed.items {
                details class="failure" data-task=(t.id) {
                    summary { code { (t.id) } " · attempt " (t.attempt) " of " (t.max_attempts)
                        @if let Some(spot) = &t.assigned_to { " · " (spot) }
                        " · " (params.iter().map(|p| format!("{p}={}", t.payload.get(p).map(value_text).unwrap_or_default())).collect::<Vec<_>>().join(" ")) }
                    pre { (tail(t.last_error.as_deref().unwrap_or("(no error reported)"), ERROR_TAIL)) }
                }
            }
            @if failed.next_cursor.is_some() { p class="muted" { "The first " (FAILURES_SHOWN) " failures." } }
        }
    };
    let title = job.name.clone().unwrap_or_else(|| job.id.clone());
    let events = format!("/ui/jobs/{}/events", job.id);
    Ok(layout(&viewer, &title, "/ui/jobs", Some(&events), content))
}

fn summary_section(job: &Job, viewer: &Viewer) -> Markup {
    let c = &job.counts;
    let finished = job.status.is_finished();
    html! {
        section class="job-head" {
            p { code { (job.id) } " · " span class=(format!("status s-{}", job.status.as_str().to_ascii_lowercase())) data-live="status" { (job.status) }
                " · priority " (job.priority) " · created " (when(&job.created_at)) }
            p class="progress" { (progress(job)) }
            table id="tasks-by-status" {
                tr { th { "waiting" } th { "running" } th { "done" } th { "failed" } th { "cancelled" } th { "total" } }
                tr {
                    td class="num" data-live="pending" { (c.new) } td class="num" data-live="running" { (c.running) }
                    td class="num" data-live="done" { (c.done) } td class="num" data-live="failed" { (c.failed) }
                    td class="num" data-live="cancelled" { (c.cancelled) } td class="num" { (c.total) }
                }
            }
            @if !finished {
                form method="post" action={ "/ui/jobs/" (job.id) "/cancel" } id="cancel" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" class="danger" { "Cancel job" }
                }
            }
            @if let Some(run) = &job.run { p class="muted" { "Command: " code { (run.command.join(" ")) } } }
        }
    }
}

fn configuration_form(job: &Job, by: &[String], sort: &str, desc: bool) -> Markup {
    html! {
        @if !job.parameter_names.is_empty() {
            form method="get" class="filters" id="configuration" {
                "A configuration is a combination of: "
                @for p in &job.parameter_names {
                    label { input type="checkbox" name={ "with_" (p) } value="1" checked[by.contains(p)]; " " (p) } " "
                }
                input type="hidden" name="pick" value="1";
                input type="hidden" name="sort" value=(sort);
                input type="hidden" name="dir" value=(if desc { "desc" } else { "asc" });
                button type="submit" { "Summarise" }
            }
        }
        p class="muted" { "Objective value: the fopt each run reported; lower is better." }
    }
}

fn summary_table(by: &[String], summary: &[ConfigSummary]) -> Markup {
    html! {
        table id="summary" class="list" {
            thead { tr { @for p in by { th { (p) } } th { "runs" } th { "best fopt" } th { "median fopt" } } }
            tbody { @for c in summary { tr {
                @for v in &c.values { td { (v) } }
                td class="num" { (c.runs) } td class="num" data-best { (fmt_f(c.best)) } td class="num" data-median { (fmt_f(c.median)) }
            } } }
        }
        @if summary.is_empty() { p class="muted" { "No results yet." } }
    }
}

fn results_table(job: &Job, done: &[Task], sort: &str, desc: bool, by: &[String]) -> Markup {
    let mut columns = vec!["task".to_string()];
    columns.extend(job.parameter_names.iter().cloned());
    columns.extend(["fopt", "iter", "runtimeMs", "finishedAt"].map(String::from));
    let link = |col: &str| {
        let dir = if col == sort && !desc { "desc" } else { "asc" };
        let by = super::url_escape(&by.join(","));
        format!(
            "/ui/jobs/{}?sort={}&dir={dir}&by={by}#results",
            job.id,
            super::url_escape(col)
        )
    };
    html! {
        table id="results" class="list" data-sort=(sort) data-dir=(if desc { "desc" } else { "asc" }) {
            thead { tr { @for c in &columns {
                th { a href=(link(c)) data-column=(c) { (c) @if c == sort { (if desc { " ▼" } else { " ▲" }) } } }
            } } }
            tbody { @for t in done.iter().take(RESULTS_SHOWN) { tr data-task=(t.id) {
                td { code { (t.id) } }
                @for p in &job.parameter_names { td { (t.payload.get(p).map(value_text).unwrap_or_default()) } }
                td class="num" data-fopt { (fmt_f(t.result.fopt)) }
                td class="num" { (t.result.iter.map(|v| v.to_string()).unwrap_or_default()) }
                td class="num" { (t.result.runtime_ms.map(|v| v.to_string()).unwrap_or_default()) }
                td { (t.finished_at.as_ref().map(when).unwrap_or_default()) }
            } } }
        }
        @if done.len() > RESULTS_SHOWN { p class="muted" { "The first " (RESULTS_SHOWN) " of " (done.len()) " rows in this order." } }
    }
}

pub(super) async fn csv(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, UiError> {
    let job = app.store.jobs.get_job(&id).await?;
    Ok(crate::surfaces::native::public::csv_results(
        app.store.jobs.clone(),
        job,
    ))
}

pub(super) async fn cancel(
    State(app): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    viewer.check_csrf(&app, &form.csrf)?;
    let job = app.store.jobs.cancel_job(&id, app.clock.now()).await?;
    tracing::info!(job = %job.id, cancelled = job.counts.cancelled, "job cancelled from the dashboard");
    Ok(Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response())
}
