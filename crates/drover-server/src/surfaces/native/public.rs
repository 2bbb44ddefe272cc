//! `/api/v1/*`: the client side of the batch-coordinator contract, plus job listing,
//! cancellation, task listing and CSV results.

use super::error::{ApiError, Refusals, Unhealthy};
use super::translate;
use crate::AppState;
use crate::auth::{self, JobReader};
use crate::extract::{ApiJson, ApiPath, ApiQuery, RawBody};
use crate::surfaces::ListQuery;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use drover_api as api;
use drover_core::node::Drain;
use drover_core::sweep::{SizeLimits, Sweep};
use drover_core::{JobStatus, Task, TaskStatus};
use drover_store::{JobStore, Page};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes behind the API key.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(spots))
        .routes(routes!(drain_spot))
        .routes(routes!(undrain_spot))
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(cancel_job))
        .routes(routes!(list_tasks))
        .routes(routes!(results))
        .routes(routes!(get_task))
        .routes(routes!(list_runners))
        .routes(routes!(list_workers))
        .routes(routes!(cluster))
        .routes(routes!(metrics))
}

/// Health, open to everyone: load balancers probe it without keys.
pub fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The job read, which agents make with the agent key or their spot's secret (see
/// `auth::authorise_job_read`).
pub fn job_read_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_job))
}

/// Session ids and endpoints only to holders of the API key: without one configured, a session
/// id is all the session-runners contract asks to stop a runner, so the list must not hand it
/// out.
#[utoipa::path(get, path = "/api/v1/runners", tag = "native", security(("apiKey" = [])),
    params(("cursor" = Option<String>, Query, description = "Where the page starts: `nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Items per page")),
    responses((status = 200, description = "Session runners, a page at a time; session ids and endpoints only to holders of the API key", body = api::RunnerList), Refusals))]
async fn list_runners(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<api::RunnerList>, ApiError> {
    let now = app.clock.now();
    let page = app.runners.list(q.page(LIST_PAGE, LIST_PAGE_MAX)?).await?;
    let shown = auth::holds_api_key(&app.config, &headers);
    Ok(Json(api::RunnerList {
        runners: page
            .items
            .iter()
            .map(|r| translate::runner(r, now, shown))
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/v1/workers", tag = "native", security(("apiKey" = [])),
    responses((status = 200, description = "The background workers and how each is doing", body = api::WorkerList), Refusals))]
async fn list_workers(State(app): State<AppState>) -> Json<api::WorkerList> {
    Json(api::WorkerList {
        workers: app
            .workers
            .snapshot()
            .iter()
            .map(translate::worker)
            .collect(),
    })
}

/// This replica's role and the cluster as the store shows it: the lease and the replicas heard
/// from within the last lease TTL.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "native", security(("apiKey" = [])),
    responses((status = 200, description = "This replica's role and the replicas heard from recently", body = api::ClusterInfo), Refusals))]
async fn cluster(State(app): State<AppState>) -> Result<Json<api::ClusterInfo>, ApiError> {
    let now = app.clock.now();
    let since = app.cluster.timing().members_since(now);
    let view = app.store.cluster.view(since).await?;
    Ok(Json(translate::cluster(&app.cluster, &view, now)))
}

#[utoipa::path(get, path = "/metrics", tag = "native", security(("apiKey" = [])),
    responses((status = 200, description = "The server's metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String), Refusals))]
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    app.priority.refresh_gauges(&app);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.scrape(&app.store).await,
    )
        .into_response()
}

/// Healthy only when the store takes a real write and the disk under it has room to spare:
/// a store that answers reads while every write fails is not a store to send work to.
#[utoipa::path(get, path = "/api/v1/health", tag = "native",
    responses(
        (status = 200, description = "The store takes writes and the disk under it has room", body = api::HealthResponse),
        (status = 503, description = "Unhealthy: `code` says why (`STORE_UNAVAILABLE`, `LOW_DISK_SPACE`)", body = api::HealthResponse)))]
async fn health(State(app): State<AppState>) -> Result<Json<api::HealthResponse>, Unhealthy> {
    let ops = &app.store.ops;
    ops.health().await.map_err(Unhealthy::Store)?;
    let free = ops.free_space().await.map_err(Unhealthy::Store)?;
    if let Some(low) = drover_core::health::low_disk(free, app.config.min_free_disk) {
        return Err(Unhealthy::LowDisk(low));
    }
    let o = ops.overview().await.map_err(Unhealthy::Store)?;
    Ok(Json(api::HealthResponse {
        status: "healthy".into(),
        database: "connected".into(),
        active_spots: o.active_nodes,
        pending_tasks: o.pending_tasks,
        running_tasks: o.running_tasks,
        code: None,
        error: None,
    }))
}

/// Spots in registration order, a page at a time: the contract's `{"spots": [...]}` with
/// `nextCursor` when more follow, so one answer never holds the whole registry.
#[utoipa::path(get, path = "/api/v1/spots", tag = "native", security(("apiKey" = [])),
    params(("cursor" = Option<String>, Query, description = "Where the page starts: `nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Items per page")),
    responses((status = 200, description = "Spots in registration order, a page at a time", body = api::SpotsResponse), Refusals))]
async fn spots(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<api::SpotsResponse>, ApiError> {
    let page = app
        .store
        .nodes
        .list_nodes_page(q.page(LIST_PAGE, LIST_PAGE_MAX)?)
        .await?;
    Ok(Json(api::SpotsResponse {
        spots: page.items.iter().map(translate::spot).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Drains a spot: it finishes the tasks it holds and claims nothing new until it is undrained
/// (its claims answer an empty list). Lasts until undrained or until the spot goes DOWN.
#[utoipa::path(post, path = "/api/v1/spots/{id}/drain", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The spot's id")),
    responses(
        (status = 200, description = "The spot, DRAINING (draining a DRAINING spot changes nothing); a DOWN spot is refused with 409 `SPOT_DOWN`", body = api::Spot),
        Refusals))]
async fn drain_spot(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _body: RawBody,
) -> Result<Json<api::Spot>, ApiError> {
    set_drain(&app, &id, Drain::Start).await
}

/// Puts a drained spot back to work: UP, claiming again.
#[utoipa::path(post, path = "/api/v1/spots/{id}/undrain", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The spot's id")),
    responses(
        (status = 200, description = "The spot, UP (undraining an UP spot changes nothing); a DOWN spot is refused with 409 `SPOT_DOWN`", body = api::Spot),
        Refusals))]
async fn undrain_spot(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    _body: RawBody,
) -> Result<Json<api::Spot>, ApiError> {
    set_drain(&app, &id, Drain::Stop).await
}

/// A drain or undrain, as both routes make it.
async fn set_drain(app: &AppState, id: &str, drain: Drain) -> Result<Json<api::Spot>, ApiError> {
    let node = app.store.nodes.drain_node(id, drain).await?;
    tracing::info!(spot = %node.id, status = %node.status, "spot drain set");
    Ok(Json(translate::spot(&node)))
}

/// Spots or runners per page when the client does not say, and the most it may ask for.
const LIST_PAGE: u32 = 500;
const LIST_PAGE_MAX: u32 = 1000;

#[utoipa::path(post, path = "/api/v1/jobs", tag = "native", security(("apiKey" = [])),
    request_body = api::CreateJobRequest,
    responses((status = 201, description = "The job and its tasks are stored", body = api::CreateJobResponse), Refusals))]
async fn create_job(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<api::CreateJobRequest>,
) -> Result<(StatusCode, Json<api::CreateJobResponse>), ApiError> {
    let (job, spec) = translate::job_request(req, &app.config)?;
    let sweep = Sweep::new(spec, app.config.max_tasks_per_job)?;
    sweep.check_size(SizeLimits {
        task_payload_bytes: app.config.max_task_payload_bytes,
        job_bytes: app.config.max_job_bytes,
    })?;
    let job = app
        .store
        .jobs
        .create_job(job, sweep, app.clock.now())
        .await?;
    tracing::info!(job = %job.id, tasks = job.counts.total, "job created");
    Ok((
        StatusCode::CREATED,
        Json(api::CreateJobResponse {
            success: true,
            job_id: job.id,
            total_tasks: job.counts.total,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "native", security(("apiKey" = [])),
    params(("status" = Option<String>, Query, description = "Only jobs in this status: PENDING, RUNNING, COMPLETED, FAILED or CANCELLED (any case)"),
        ("cursor" = Option<String>, Query, description = "Where the page starts: `nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Items per page")),
    responses((status = 200, description = "Jobs, newest first, a page at a time", body = api::JobList), Refusals))]
async fn list_jobs(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<api::JobList>, ApiError> {
    let page = app
        .store
        .jobs
        .list_jobs(q.status::<JobStatus>()?, q.page(100, 1000)?)
        .await?;
    Ok(Json(api::JobList {
        jobs: page.items.iter().map(translate::job).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "native",
    security(("apiKey" = []), ("agentKey" = []), ("orhestraKey" = []), ("spotId" = [], "spotSecret" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job; `env` values are shown to agents only", body = api::Job), Refusals))]
async fn get_job(
    State(app): State<AppState>,
    Extension(reader): Extension<JobReader>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<api::Job>, ApiError> {
    let job = app.store.jobs.get_job(&id).await?;
    Ok(Json(translate::job_for(&job, reader == JobReader::Agent)))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job, its unfinished tasks cancelled", body = api::Job), Refusals))]
async fn cancel_job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    // Cancel takes no body, but one over the limit is refused as on every other route.
    _body: RawBody,
) -> Result<Json<api::Job>, ApiError> {
    let job = app.store.jobs.cancel_job(&id, app.clock.now()).await?;
    tracing::info!(job = %job.id, cancelled = job.counts.cancelled, "job cancelled");
    Ok(Json(translate::job(&job)))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The job's id"),
        ("status" = Option<String>, Query, description = "Only tasks in this status: NEW, RUNNING, DONE, FAILED or CANCELLED (any case)"),
        ("cursor" = Option<String>, Query, description = "Where the page starts: `nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Items per page")),
    responses((status = 200, description = "The job's tasks by index, a page at a time", body = api::TaskList), Refusals))]
async fn list_tasks(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<api::TaskList>, ApiError> {
    let page = app
        .store
        .jobs
        .list_tasks(&id, q.status::<TaskStatus>()?, q.page(100, 1000)?)
        .await?;
    Ok(Json(api::TaskList {
        job_id: id,
        tasks: page.items.iter().map(translate::task).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = api::Task), Refusals))]
async fn get_task(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<api::Task>, ApiError> {
    Ok(Json(translate::task(&app.store.jobs.get_task(&id).await?)))
}

/// Results of DONE tasks: JSON pages by default, or the whole job as CSV with `format=csv`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/results", tag = "native", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The job's id"),
        ("format" = Option<String>, Query, description = "`json` (the default: pages) or `csv` (the whole job at once)"),
        ("cursor" = Option<String>, Query, description = "Where the page starts: `nextCursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Results per page")),
    responses(
        (status = 200, description = "Results of the job's DONE tasks", content(
            (api::ResultsResponse = "application/json"),
            (String = "text/csv"))),
        Refusals))]
async fn results(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let job = app.store.jobs.get_job(&id).await?;
    match q.format.as_deref() {
        None | Some("json") => {}
        Some("csv") => return Ok(csv_results(app.store.jobs.clone(), job)),
        Some(other) => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("format must be json or csv (got {other:?})"),
            ));
        }
    }
    let page = app
        .store
        .jobs
        .list_tasks(&id, Some(TaskStatus::Done), q.page(1000, 10_000)?)
        .await?;
    Ok(Json(api::ResultsResponse {
        job_id: id,
        total_completed: job.counts.done,
        results: page.items.iter().map(translate::result).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    })
    .into_response())
}

/// Rows fetched per store call while streaming CSV.
const CSV_PAGE: u32 = 1000;

/// Streams every DONE task of `job` as CSV, one store page at a time, so a million results never
/// sit in memory at once. Columns: the task id, each swept parameter, then the result fields.
pub(crate) fn csv_results(store: Arc<dyn JobStore>, job: drover_core::Job) -> Response {
    let params = job.parameter_names.clone();
    let mut header_row = vec!["taskId".to_string()];
    header_row.extend(params.iter().cloned());
    header_row.extend(
        [
            "fopt",
            "iter",
            "runtimeMs",
            "finishedAt",
            "spotId",
            "attempt",
            "resultJson",
        ]
        .map(String::from),
    );
    let first = csv_chunk(std::iter::once(header_row));
    let disposition = format!("attachment; filename=\"{}-results.csv\"", job.id);
    let job_id = job.id;

    let rows = futures::stream::try_unfold(Some(None::<i64>), move |cursor| {
        let store = store.clone();
        let job_id = job_id.clone();
        let params = params.clone();
        async move {
            let Some(cursor) = cursor else {
                return Ok::<_, std::io::Error>(None);
            };
            let page = store
                .list_tasks(
                    &job_id,
                    Some(TaskStatus::Done),
                    Page {
                        cursor,
                        limit: CSV_PAGE,
                    },
                )
                .await
                .map_err(std::io::Error::other)?;
            let chunk = csv_chunk(page.items.iter().map(|t| csv_row(t, &params)));
            Ok(Some((chunk, page.next_cursor.map(Some))))
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rows,
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn csv_row(t: &Task, params: &[String]) -> Vec<String> {
    let text =
        |v: Option<&serde_json::Value>| v.map(drover_core::text::value_text).unwrap_or_default();
    let opt = |v: Option<String>| v.unwrap_or_default();
    let mut row = vec![t.id.clone()];
    row.extend(params.iter().map(|p| text(t.payload.get(p))));
    row.push(opt(t.result.fopt.map(|v| v.to_string())));
    row.push(opt(t.result.iter.map(|v| v.to_string())));
    row.push(opt(t.result.runtime_ms.map(|v| v.to_string())));
    row.push(opt(t.finished_at.as_ref().map(drover_core::time::format)));
    row.push(opt(t.assigned_to.clone()));
    row.push(t.attempt.to_string());
    row.push(opt(t.result.result_json.clone()));
    row
}

fn csv_chunk(rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to a Vec cannot fail.
        let _ = w.write_record(&row);
    }
    w.into_inner().unwrap_or_default()
}
