//! `/internal/v1/*`: the agent side of the batch-coordinator contract (hello, heartbeat, claim,
//! complete, fail) and drover's extensions (a batch of reports; an exchange, which reports and
//! claims in one request; `waitMs`, a claim that waits for work, the least loaded waiter
//! looking first). Guarded by the agent key when one is configured (see `auth`); every call
//! for a spot is also held to that spot's own secret (`X-Spot-Secret`) where it has one, or
//! where the server requires one (`auth::authorise_spot`).

use super::error::{ApiError, Refusals};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, auth, wake};
use axum::Json;
use axum::extract::State;
use drover_api as api;
use drover_core::credential;
use drover_core::rules::{self, RuleError};
use drover_core::{Capacity, NodeInfo, NodeStats, ReportKind, ReportOutcome, TaskResult};
use drover_store::{NewNode, Report};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hello))
        .routes(routes!(heartbeat))
        .routes(routes!(claim))
        .routes(routes!(complete))
        .routes(routes!(fail))
        .routes(routes!(report_batch))
        .routes(routes!(exchange))
}

#[utoipa::path(post, path = "/internal/v1/hello", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    request_body = api::HelloRequest,
    responses((status = 200, description = "The spot is registered under a new id", body = api::HelloResponse), Refusals))]
async fn hello(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<api::HelloRequest>,
) -> Result<Json<api::HelloResponse>, ApiError> {
    check_hello(&req, app.config.max_label_bytes)?;
    let asked = req.issue_secret.unwrap_or(false);
    let secret = if credential::issues_spot_secret(asked, app.config.require_node_credentials) {
        Some(auth::new_secret()?)
    } else {
        None
    };
    let info = NodeInfo {
        address: req.ip_address,
        hostname: req.hostname,
        zone: req.zone,
        labels: req.labels.unwrap_or_default(),
        capacity: Capacity {
            cores: req.total_cores,
            memory_bytes: req.memory_bytes,
            gpus: req.gpus,
            disk_bytes: req.disk_bytes,
        },
    };
    let (secret, hash) = secret.unzip();
    let node = app
        .store
        .nodes
        .register_node(
            NewNode {
                info,
                secret_hash: hash,
            },
            app.config.max_spots,
            app.clock.now(),
        )
        .await?;
    tracing::info!(spot = %node.id, address = %node.info.address, secret = secret.is_some(), "spot registered");
    Ok(Json(api::HelloResponse {
        spot_id: node.id,
        heartbeat_interval_seconds: Some(app.config.heartbeat_interval.as_secs_f64()),
        spot_secret: secret,
    }))
}

/// Optional counts, each checked by the core's rule when given.
fn counts(fields: &[(&'static str, Option<i64>)]) -> Result<(), RuleError> {
    for (field, value) in fields {
        if let Some(v) = value {
            rules::check_count(field, *v)?;
        }
    }
    Ok(())
}

/// What a hello announces, checked by the core's rules before anything is stored.
fn check_hello(req: &api::HelloRequest, max_label_bytes: u64) -> Result<(), RuleError> {
    rules::check_address("ipAddress", &req.ip_address)?;
    if let Some(h) = &req.hostname {
        rules::check_node_text("hostname", h)?;
    }
    if let Some(z) = &req.zone {
        rules::check_node_text("zone", z)?;
    }
    counts(&[
        ("totalCores", req.total_cores),
        ("memoryBytes", req.memory_bytes),
        ("gpus", req.gpus),
        ("diskBytes", req.disk_bytes),
    ])?;
    if let Some(labels) = &req.labels {
        let bytes = serde_json::to_string(labels).map_or(u64::MAX, |s| s.len() as u64);
        rules::check_label_bytes(bytes, max_label_bytes)?;
    }
    Ok(())
}

/// A heartbeat's figures, checked by the core's rules.
fn check_heartbeat(req: &api::HeartbeatRequest) -> Result<(), RuleError> {
    if let Some(a) = &req.ip_address {
        rules::check_address("ipAddress", a)?;
    }
    if let Some(load) = req.cpu_load {
        rules::check_load("cpuLoad", load)?;
    }
    counts(&[
        ("runningTasks", req.running_tasks),
        ("totalCores", req.total_cores),
        ("freeMemoryBytes", req.free_memory_bytes),
    ])
}

#[utoipa::path(post, path = "/internal/v1/heartbeat", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::HeartbeatRequest,
    responses((status = 200, description = "The heartbeat is recorded", body = api::SuccessBody), Refusals))]
async fn heartbeat(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiJson(req): ApiJson<api::HeartbeatRequest>,
) -> Result<Json<api::SuccessBody>, ApiError> {
    check_heartbeat(&req)?;
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let stats = NodeStats {
        address: req.ip_address,
        cpu_load: req.cpu_load,
        running_tasks: req.running_tasks,
        total_cores: req.total_cores,
        free_memory_bytes: req.free_memory_bytes,
    };
    app.store
        .nodes
        .heartbeat(&req.spot_id, stats, app.clock.now())
        .await?;
    Ok(Json(api::SuccessBody { success: true }))
}

#[utoipa::path(post, path = "/internal/v1/tasks/claim", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::ClaimRequest,
    responses((status = 200, description = "The tasks claimed, each under a lease (none when nothing is claimable)", body = api::ClaimResponse), Refusals))]
async fn claim(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiJson(req): ApiJson<api::ClaimRequest>,
) -> Result<Json<api::ClaimResponse>, ApiError> {
    rules::check_claim_size(req.max_tasks)?;
    let wait = wait_of(req.wait_ms)?;
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let tasks = claim_tasks(&app, &req.spot_id, req.max_tasks, req.running_tasks, wait).await?;
    Ok(Json(api::ClaimResponse { tasks }))
}

/// `waitMs`, checked by the core's rule.
fn wait_of(wait_ms: Option<u64>) -> Result<std::time::Duration, RuleError> {
    let ms = wait_ms.unwrap_or(0);
    rules::check_wait_ms(ms)?;
    Ok(std::time::Duration::from_millis(ms))
}

/// Claims up to `max` tasks for `spot`; with a `wait`, when none is claimable, claims again each
/// time a committed change may have freed work, until some is found or the wait is over. Each
/// attempt reads the clock afresh, so a lease starts when its task is handed out.
///
/// A spot that says it runs `running` tasks holds back a little after each wake-up, the more
/// the busier it is (`wake::stagger_for`), so the least loaded waiting spot claims first. It
/// never gets more than `max`: the load only orders the looks.
async fn claim_tasks(
    app: &AppState,
    spot: &str,
    max: u32,
    running: Option<u32>,
    wait: std::time::Duration,
) -> Result<Vec<api::ClaimedTask>, ApiError> {
    // An older agent does not say: it counts as idle, as every waiter did before.
    let stagger = wake::stagger_for(rules::claim_load(running.unwrap_or(0), max));
    let claimed = app
        .wake
        .until_found(wait, stagger, || async {
            // The store's time for a claim that got work: the dashboard's claim latency.
            let started = std::time::Instant::now();
            let claimed = app.store.jobs.claim(spot, max, app.clock.now()).await;
            if claimed.as_ref().is_ok_and(|c| !c.is_empty()) {
                app.dashboard.history.record_claim(started.elapsed());
            }
            claimed
        })
        .await?;
    Ok(claimed
        .into_iter()
        .map(|c| api::ClaimedTask {
            id: c.id,
            payload: c.payload,
            job_id: c.job_id,
            attempt: c.attempt,
            lease_expires_at: drover_core::time::format(&c.lease_expires_at),
        })
        .collect())
}

#[utoipa::path(post, path = "/internal/v1/tasks/{id}/complete", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("id" = String, Path, description = "The task's id"), ("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::CompleteRequest,
    responses((status = 200, description = "The report is recorded, or was already", body = api::ReportResponse), Refusals))]
async fn complete(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiPath(task_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::CompleteRequest>,
) -> Result<Json<api::ReportResponse>, ApiError> {
    counts(&[("runtimeMs", req.runtime_ms), ("iter", req.iter)])?;
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let kind = complete_kind(
        req.runtime_ms,
        req.iter,
        req.fopt,
        req.result_json,
        req.output,
    );
    report(&app, task_id, req.spot_id, req.attempt, kind).await
}

/// A complete report's result; `resultJson` is kept as text (an object is written out).
fn complete_kind(
    runtime_ms: Option<i64>,
    iter: Option<i64>,
    fopt: Option<f64>,
    result_json: Option<serde_json::Value>,
    output: Option<String>,
) -> ReportKind {
    let result_json = match result_json {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    ReportKind::Complete(TaskResult {
        runtime_ms,
        iter,
        fopt,
        result_json,
        output,
    })
}

/// A fail report; a failure is retried unless the worker says it is permanent.
fn fail_kind(error: Option<String>, retriable: Option<bool>) -> ReportKind {
    ReportKind::Fail {
        error: error.unwrap_or_else(|| "no error message given".into()),
        retriable: retriable.unwrap_or(true),
    }
}

#[utoipa::path(post, path = "/internal/v1/tasks/{id}/fail", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("id" = String, Path, description = "The task's id"), ("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::FailRequest,
    responses((status = 200, description = "The failure is recorded, or was already; `willRetry` says whether the task runs again", body = api::ReportResponse), Refusals))]
async fn fail(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiPath(task_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::FailRequest>,
) -> Result<Json<api::ReportResponse>, ApiError> {
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let kind = fail_kind(req.error, req.retriable);
    report(&app, task_id, req.spot_id, req.attempt, kind).await
}

async fn report(
    app: &AppState,
    task_id: String,
    spot_id: String,
    attempt: Option<u32>,
    kind: ReportKind,
) -> Result<Json<api::ReportResponse>, ApiError> {
    let verb = match kind {
        ReportKind::Complete(_) => "complete",
        ReportKind::Fail { .. } => "fail",
    };
    let report = Report {
        task_id: task_id.clone(),
        node_id: spot_id.clone(),
        attempt,
        kind,
    };
    let outcome = app
        .store
        .jobs
        .report(vec![report], app.clock.now())
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("store returned no outcome".into()))?;
    if outcome == ReportOutcome::NotHolder {
        log_not_holder(app, &spot_id, verb, &task_id).await;
    }
    answer(outcome).map(Json)
}

/// The contract's warning for a report from a spot that does not hold the task; it names the
/// holder, looked up only on this rare path.
async fn log_not_holder(app: &AppState, spot_id: &str, verb: &str, task_id: &str) {
    let holder = match app.store.jobs.get_task(task_id).await {
        Ok(t) if t.status == drover_core::TaskStatus::Running => t.assigned_to,
        _ => None,
    };
    tracing::warn!(
        target: "TaskService",
        "Spot {spot_id} tried to {verb} task {task_id} but it's assigned to {}",
        holder.as_deref().unwrap_or("no spot")
    );
}

/// A report's outcome as the per-task routes answer it: the contract's 200 bodies, or the
/// refusal (404, 409) that `ApiError::refused_report` maps.
fn answer(outcome: ReportOutcome) -> Result<api::ReportResponse, ApiError> {
    let ok = |message: Option<&str>, will_retry: Option<bool>| {
        Ok(api::ReportResponse {
            success: true,
            message: message.map(String::from),
            will_retry,
        })
    };
    match outcome {
        ReportOutcome::Completed => ok(None, None),
        ReportOutcome::AlreadyCompleted => ok(Some("already completed"), None),
        ReportOutcome::Failed { will_retry } => ok(None, Some(will_retry)),
        ReportOutcome::AlreadyReported { will_retry } => {
            ok(Some("already reported"), Some(will_retry))
        }
        ReportOutcome::AlreadyTerminal => ok(Some("already terminal"), None),
        refused => Err(ApiError::refused_report(refused)
            .unwrap_or_else(|| ApiError::Internal(format!("unmapped outcome {refused:?}")))),
    }
}

/// `POST /internal/v1/tasks/report`: a spot's completes and fails in one request and one store
/// transaction, each decided and answered on its own as its per-task route would answer it.
#[utoipa::path(post, path = "/internal/v1/tasks/report", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::BatchReportRequest,
    responses((status = 200, description = "One result per report, in the order sent, each as its per-task route would answer", body = api::BatchReportResponse), Refusals))]
async fn report_batch(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiJson(req): ApiJson<api::BatchReportRequest>,
) -> Result<Json<api::BatchReportResponse>, ApiError> {
    rules::check_batch_size("reports", req.reports.len())?;
    check_reports(&req.reports)?;
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let results = apply_reports(&app, &req.spot_id, req.reports).await?;
    Ok(Json(api::BatchReportResponse { results }))
}

/// `POST /internal/v1/tasks/exchange`: a spot's reports, then its claim, in one request. The
/// reports are applied as the batch route applies them and are durable before the claim
/// starts (and so before any wait); the claim is the claim route's, `waitMs` included. The two
/// writes are not merged: a report that sends a task back to NEW must be visible to the claim.
#[utoipa::path(post, path = "/internal/v1/tasks/exchange", tag = "internal", security(("agentKey" = []), ("orhestraKey" = [])),
    params(("X-Spot-Secret" = Option<String>, Header, description = "The spot's own secret (`spotSecret` of its hello), needed when it has one")),
    request_body = api::ExchangeRequest,
    responses((status = 200, description = "The reports' results, then the tasks claimed", body = api::ExchangeResponse), Refusals))]
async fn exchange(
    State(app): State<AppState>,
    secret: auth::SpotSecret,
    ApiJson(req): ApiJson<api::ExchangeRequest>,
) -> Result<Json<api::ExchangeResponse>, ApiError> {
    rules::check_exchange_reports(req.reports.len())?;
    check_reports(&req.reports)?;
    rules::check_exchange_claim(req.max_tasks)?;
    let wait = wait_of(req.wait_ms)?;
    auth::authorise_spot(&app, &secret, &req.spot_id).await?;
    let results = if req.reports.is_empty() {
        Vec::new()
    } else {
        apply_reports(&app, &req.spot_id, req.reports).await?
    };
    let tasks = if req.max_tasks == 0 {
        Vec::new()
    } else {
        claim_tasks(&app, &req.spot_id, req.max_tasks, req.running_tasks, wait).await?
    };
    Ok(Json(api::ExchangeResponse { results, tasks }))
}

/// The figures of a batch of reports, checked by the core's rules before anything is written.
fn check_reports(reports: &[api::BatchReport]) -> Result<(), RuleError> {
    for r in reports {
        counts(&[("runtimeMs", r.runtime_ms), ("iter", r.iter)])?;
    }
    Ok(())
}

/// Applies `reports` of `spot_id` in one store call and answers each as its per-task route
/// would, in the order sent.
async fn apply_reports(
    app: &AppState,
    spot_id: &str,
    reports: Vec<api::BatchReport>,
) -> Result<Vec<api::BatchReportResult>, ApiError> {
    let task_ids: Vec<String> = reports.iter().map(|r| r.task_id.clone()).collect();
    let verbs: Vec<api::ReportVerb> = reports.iter().map(|r| r.outcome).collect();
    let reports = reports
        .into_iter()
        .map(|r| Report {
            task_id: r.task_id,
            node_id: spot_id.to_string(),
            attempt: r.attempt,
            kind: match r.outcome {
                api::ReportVerb::Complete => {
                    complete_kind(r.runtime_ms, r.iter, r.fopt, r.result_json, r.output)
                }
                api::ReportVerb::Fail => fail_kind(r.error, r.retriable),
            },
        })
        .collect();
    let outcomes = app.store.jobs.report(reports, app.clock.now()).await?;
    let mut results = Vec::with_capacity(outcomes.len());
    for ((task_id, verb), outcome) in task_ids.into_iter().zip(verbs).zip(outcomes) {
        if outcome == ReportOutcome::NotHolder {
            let verb = match verb {
                api::ReportVerb::Complete => "complete",
                api::ReportVerb::Fail => "fail",
            };
            log_not_holder(app, spot_id, verb, &task_id).await;
        }
        results.push(match answer(outcome) {
            Ok(ok) => api::BatchReportResult {
                task_id,
                status: 200,
                success: true,
                message: ok.message,
                will_retry: ok.will_retry,
                error: None,
                code: None,
            },
            Err(refused) => {
                let (status, code) = refused.status_and_code();
                api::BatchReportResult {
                    task_id,
                    status: status.as_u16(),
                    success: false,
                    message: None,
                    will_retry: None,
                    error: Some(refused.to_string()),
                    code: Some(code.to_string()),
                }
            }
        });
    }
    Ok(results)
}
