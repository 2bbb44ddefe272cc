//! The priority-queue contract's HTTP API (its clients expect port 8081): jobs
//! (`/api/jobs/register`, `/api/jobs/{id}/status`, `/api/jobs/status`, `/api/jobs/{id}/cancel`,
//! `/api/jobs`), worker heartbeats (`/api/workers/heartbeat`) and the cluster's state
//! (`/api/health`, `/api/raft/status`, `/api/cluster/status`, `/api/metrics`).
//!
//! It reads the contract's bodies, hands them to the priority router (`crate::priority`),
//! and answers in the contract's words; its one error mapping is `error.rs`. Clients' routes
//! need the API key and workers' routes the agent key when those are configured; health,
//! raft and cluster status are open, as health is on every surface.

mod error;

use crate::extract::{ApiPath, ApiQuery};
use crate::priority::{self, JobFilter, result_of};
use crate::{AppState, auth};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware;
use drover_api::priority as api;
use drover_core::TaskStatus;
use drover_core::priority::{PriorityClass, parse_status_word, status_word};
use error::{PriorityApiError, Refusals};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let clients = OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(cancel))
        .routes(routes!(list))
        .routes(routes!(metrics))
        .route_layer(middleware::from_fn_with_state(
            auth::ApiKeyRule::of(&state.config),
            auth::require_api_key,
        ));
    let workers = OpenApiRouter::new()
        .routes(routes!(update_by_path))
        .routes(routes!(update))
        .routes(routes!(heartbeat))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(state.config.agent_key.clone()),
            auth::require_agent_key,
        ));
    let open = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(raft))
        .routes(routes!(cluster));
    clients.merge(workers).merge(open)
}

/// A path segment and a query string, refused in the contract's shape with its words
/// (`invalid_request`, `invalid_query`): axum's own refusals are plain text.
struct Segment(String);
struct Params<T>(T);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = PriorityApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match ApiPath::<String>::from_request_parts(parts, state).await {
            Ok(ApiPath(id)) => Ok(Segment(id)),
            Err(e) => Err(PriorityApiError::Malformed {
                word: "invalid_request",
                message: e.to_string(),
            }),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = PriorityApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match ApiQuery::<T>::from_request_parts(parts, state).await {
            Ok(ApiQuery(p)) => Ok(Params(p)),
            Err(e) => Err(PriorityApiError::Malformed {
                word: "invalid_query",
                message: e.to_string(),
            }),
        }
    }
}

/// Parses a body, refusing malformed JSON with the contract's word for the route.
fn parse<T: DeserializeOwned>(body: &Bytes, word: &'static str) -> Result<T, PriorityApiError> {
    serde_json::from_slice(body).map_err(|e| PriorityApiError::Malformed {
        word,
        message: format!("the body is not the JSON this route takes: {e}"),
    })
}

fn answer(status: &str) -> Json<api::StatusAnswer> {
    Json(api::StatusAnswer {
        status: status.into(),
        job_id: None,
    })
}

#[utoipa::path(post, path = "/api/jobs/register", tag = "priority", security(("apiKey" = [])), request_body = api::RegisterJob,
    responses((status = 202, description = "The job is queued under its class", body = api::StatusAnswer), Refusals))]
async fn register(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<api::StatusAnswer>), PriorityApiError> {
    let request = parse(&body, "invalid_json")?;
    let (id, _) = app.priority.register(&app, request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(api::StatusAnswer {
            status: "accepted".into(),
            job_id: Some(id),
        }),
    ))
}

#[utoipa::path(put, path = "/api/jobs/{id}/status", tag = "priority", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("id" = String, Path, description = "The job's id")), request_body = api::StatusUpdate,
    responses((status = 200, description = "The update is recorded", body = api::StatusAnswer), Refusals))]
async fn update_by_path(
    State(app): State<AppState>,
    Segment(id): Segment,
    body: Bytes,
) -> Result<Json<api::StatusAnswer>, PriorityApiError> {
    let u = parse(&body, "invalid_request")?;
    app.priority.update(&app, Some(id), u).await?;
    Ok(answer("updated"))
}

#[utoipa::path(post, path = "/api/jobs/status", tag = "priority", security(("agentKey" = []), ("orhestraKey" = [])), request_body = api::StatusUpdate,
    responses((status = 200, description = "The update is recorded", body = api::StatusAnswer), Refusals))]
async fn update(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<api::StatusAnswer>, PriorityApiError> {
    let u = parse(&body, "invalid_request")?;
    app.priority.update(&app, None, u).await?;
    Ok(answer("updated"))
}

#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "priority", security(("apiKey" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job is cancelled", body = api::StatusAnswer), Refusals))]
async fn cancel(
    State(app): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<api::StatusAnswer>, PriorityApiError> {
    app.priority.cancel(&app, &id).await?;
    Ok(answer("cancelled"))
}

#[utoipa::path(post, path = "/api/workers/heartbeat", tag = "priority", security(("agentKey" = []), ("orhestraKey" = [])), request_body = api::WorkerHeartbeat,
    responses((status = 200, description = "The heartbeat is recorded", body = api::StatusAnswer), Refusals))]
async fn heartbeat(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<api::StatusAnswer>, PriorityApiError> {
    let h = parse(&body, "invalid_request")?;
    app.priority.heartbeat(&app, h).await?;
    Ok(answer("acknowledged"))
}

/// `GET /api/jobs` filters (drover's additions; without them, every job as the contract).
#[derive(Debug, Default, Deserialize)]
struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    class: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Most jobs one page holds; without `limit`, every job (the contract's clients read one list).
const MAX_PAGE: usize = 10_000;

#[utoipa::path(get, path = "/api/jobs", tag = "priority", security(("apiKey" = [])),
    params(("status" = Option<String>, Query, description = "Only jobs in this status: pending, running, completed, failed or cancelled"),
        ("type" = Option<String>, Query, description = "Only jobs of this type"),
        ("class" = Option<String>, Query, description = "Only jobs of this class: high, medium or low"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Jobs per page (without it, every job)"),
        ("cursor" = Option<String>, Query, description = "Where the page starts: `next_cursor` of the previous page")),
    responses((status = 200, description = "Jobs, a page at a time", body = api::JobList), Refusals))]
async fn list(
    State(app): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<api::JobList>, PriorityApiError> {
    let bad = |m: String| {
        PriorityApiError::from(priority::RouterError::Invalid {
            code: "invalid_query",
            message: m,
        })
    };
    let filter = JobFilter {
        status: match p.status.as_deref() {
            None => None,
            Some(s) => Some(parse_status_word(s).ok_or_else(|| {
                bad(format!(
                    "status {s:?} is not one of pending, running, completed, failed, cancelled"
                ))
            })?),
        },
        job_type: p.job_type,
        class: match p.class.as_deref() {
            None => None,
            Some(c) => Some(
                PriorityClass::parse(c)
                    .ok_or_else(|| bad(format!("class {c:?} is not one of high, medium, low")))?,
            ),
        },
    };
    let limit = p.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let cursor = match p.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            bad(format!(
                "cursor {c:?} is not one this server handed out; use next_cursor from the previous page"
            ))
        })?),
    };
    let (jobs, next) = app.priority.list(&app, &filter, cursor, limit).await?;
    let jobs: Vec<api::JobView> = jobs
        .into_iter()
        .map(|j| api::JobView {
            result: result_of(&j.task),
            id: j.id,
            job_type: j.job_type,
            status: status_word(j.task.status).into(),
            priority: j.priority,
            worker_id: (j.task.assigned_to.clone()).unwrap_or_else(|| "none".into()),
            created_at: priority::millis(&j.task.created_at),
            started_at: j.task.started_at.as_ref().map(priority::millis),
            completed_at: j.task.finished_at.as_ref().map(priority::millis),
            class: j.class.name().into(),
            retry_count: j.task.attempt,
            error_message: j.task.last_error.clone(),
        })
        .collect();
    Ok(Json(api::JobList {
        count: jobs.len(),
        jobs,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/health", tag = "priority",
    responses((status = 200, description = "The store answers", body = api::Health),
        (status = 503, description = "The store does not answer (`degraded`)", body = api::Health)))]
async fn health(State(app): State<AppState>) -> (StatusCode, Json<api::Health>) {
    let healthy = app.store.ops.health().await.is_ok();
    let body = api::Health {
        status: if healthy { "healthy" } else { "degraded" }.into(),
        timestamp: priority::millis(&app.clock.now()),
        node: app.cluster.replica_id().to_string(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

fn raft_status(app: &AppState) -> api::RaftStatus {
    let role = app.cluster.role();
    let (term, leader) = match &role {
        crate::cluster::Role::Leader { epoch, .. } => {
            (*epoch, Some(app.cluster.replica_id().to_string()))
        }
        crate::cluster::Role::Follower { leader, epoch } => (*epoch, leader.clone()),
    };
    api::RaftStatus {
        role: role.name().into(),
        term,
        leader,
    }
}

#[utoipa::path(get, path = "/api/raft/status", tag = "priority",
    responses((status = 200, description = "This replica's role, the lease's epoch as the term, and the leader", body = api::RaftStatus)))]
async fn raft(State(app): State<AppState>) -> Json<api::RaftStatus> {
    Json(raft_status(&app))
}

#[utoipa::path(get, path = "/api/cluster/status", tag = "priority",
    responses((status = 200, description = "The replicas heard from recently", body = api::ClusterStatus), Refusals))]
async fn cluster(
    State(app): State<AppState>,
) -> Result<Json<api::ClusterStatus>, PriorityApiError> {
    let now = app.clock.now();
    let since = app.cluster.timing().members_since(now);
    let view = app
        .store
        .cluster
        .view(since)
        .await
        .map_err(priority::RouterError::from)?;
    let leader = view.lease.leader_at(now);
    let cluster = view
        .members
        .iter()
        .map(|m| api::Member {
            node: m.replica_id.clone(),
            address: m.address.clone(),
            role: if leader == Some(m.replica_id.as_str()) {
                "leader"
            } else {
                "follower"
            }
            .into(),
            last_contact: priority::millis(&m.last_seen),
        })
        .collect();
    Ok(Json(api::ClusterStatus {
        node: app.cluster.replica_id().to_string(),
        cluster,
        raft: raft_status(&app),
        timestamp: priority::millis(&now),
    }))
}

#[utoipa::path(get, path = "/api/metrics", tag = "priority", security(("apiKey" = [])),
    responses((status = 200, description = "Jobs by status and class, queue depths, workers", body = api::Metrics), Refusals))]
async fn metrics(State(app): State<AppState>) -> Result<Json<api::Metrics>, PriorityApiError> {
    let snap = app.priority.snapshot(&app).await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut queues: BTreeMap<String, u64> = PriorityClass::ALL
        .iter()
        .map(|c| (c.queue().to_string(), 0))
        .collect();
    for (&(class, status), &n) in &snap.jobs {
        *by_status.entry(status.into()).or_default() += n;
        *classes.entry(class.name().into()).or_default() += n;
        if status == status_word(TaskStatus::New) {
            *queues.entry(class.queue().into()).or_default() += n;
        }
    }
    Ok(Json(api::Metrics {
        jobs: by_status,
        classes,
        queues,
        finished_last_minute: snap.finished_last_minute,
        workers: snap
            .workers
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect(),
        unpublished: snap.unpublished.into_iter().collect(),
        dispatch: app.priority.config.dispatch.name().into(),
        timestamp: priority::millis(&app.clock.now()),
    }))
}
