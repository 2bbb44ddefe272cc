//! `/api/runner/*`: the session-runners contract (`provision`, `deprovision`, `heartbeat`) over
//! [`crate::runners::RunnerService`].
//!
//! It translates only: where the session id comes from (the `X-Session-Id` header, or
//! `sessionId` in the JSON body), the contract's messages, and its error shape
//! `{"error": CODE, "message": ..., "details"?}`. Every rule is the service's.

use crate::AppState;
use crate::runners::RunnerError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/runner/provision", post(provision))
        .route("/api/runner/deprovision", post(deprovision))
        .route("/api/runner/heartbeat", post(heartbeat))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Provisioned {
    message: &'static str,
    endpoint: String,
    session_id: String,
}

#[derive(Serialize)]
struct Message {
    message: String,
}

/// The contract's error body.
#[derive(Serialize)]
struct ContractError {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<String>,
}

/// Which call failed, for the contract's wording of "session id required".
#[derive(Clone, Copy)]
enum Call {
    Provision,
    Deprovision,
    Heartbeat,
}

fn error_response(app: &AppState, call: Call, e: RunnerError) -> Response {
    let (status, error, message) = match &e {
        RunnerError::SessionRequired => (
            StatusCode::BAD_REQUEST,
            "SESSION_ID_REQUIRED",
            match call {
                Call::Heartbeat => "Session ID is required for heartbeat.".to_string(),
                _ => "Session ID is required for deprovisioning.".to_string(),
            },
        ),
        RunnerError::InvalidSession(why) => (
            StatusCode::BAD_REQUEST,
            "INVALID_SESSION_ID",
            format!("The session ID is not valid: {why}."),
        ),
        RunnerError::NotFound { singleton: true } if matches!(call, Call::Heartbeat) => (
            StatusCode::NOT_FOUND,
            "RUNNER_NOT_FOUND",
            "Singleton runner not found or session ID mismatch.".to_string(),
        ),
        RunnerError::NotFound { .. } => (
            StatusCode::NOT_FOUND,
            "RUNNER_NOT_FOUND",
            "No active runner found for this session ID.".to_string(),
        ),
        RunnerError::ImageNotFound(image) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "DOCKER_IMAGE_NOT_FOUND",
            format!(
                "Docker image {image} not found. Ensure it has been built or loaded on this \
                 Docker engine (e.g. `docker build -t {image} .`)."
            ),
        ),
        RunnerError::LimitReached(n) => (
            StatusCode::TOO_MANY_REQUESTS,
            "RUNNER_LIMIT_REACHED",
            format!(
                "All {n} runner slots are in use. Deprovision a runner, or raise the limit \
                 (--max-runners)."
            ),
        ),
        RunnerError::Unavailable(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RUNNER_ENGINE_UNAVAILABLE",
            format!("The runner engine cannot be reached; retry later. ({why})"),
        ),
        RunnerError::Disabled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RUNNERS_DISABLED",
            "This server runs no runner driver; start it with --runner-driver docker or process."
                .to_string(),
        ),
        RunnerError::Failed(_) | RunnerError::Store(_) => {
            tracing::error!(error = %e, "runner request failed");
            let details = app.runners.config.error_details.then(|| e.to_string());
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(ContractError {
                    error: "SERVER_ERROR",
                    message: "An unexpected error occurred on the server.".into(),
                    details,
                }),
            )
                .into_response();
        }
    };
    (
        status,
        Json(ContractError {
            error,
            message,
            details: None,
        }),
    )
        .into_response()
}

fn header_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The session id from the body's `sessionId` or, failing that, the `X-Session-Id` header. An
/// empty or non-JSON body simply has none.
fn session_of(headers: &HeaderMap, body: &Bytes) -> Result<String, RunnerError> {
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("sessionId").and_then(Value::as_str).map(String::from))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    from_body
        .or_else(|| header_session(headers))
        .ok_or(RunnerError::SessionRequired)
}

async fn provision(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match app.runners.provision(header_session(&headers)).await {
        Ok(p) => {
            let (status, message) = if p.created {
                (StatusCode::CREATED, "Runner provisioned successfully.")
            } else {
                (StatusCode::OK, "Runner already exists for this session.")
            };
            let body = Provisioned {
                message,
                endpoint: p.runner.endpoint.unwrap_or_default(),
                session_id: p.runner.session_id,
            };
            (status, Json(body)).into_response()
        }
        Err(e) => error_response(&app, Call::Provision, e),
    }
}

async fn deprovision(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let session = session_of(&headers, &body)?;
        app.runners.deprovision(&session).await
    }
    .await;
    match result {
        Ok(r) => Json(Message {
            message: format!(
                "Runner for session {} deprovisioned successfully.",
                r.session_id
            ),
        })
        .into_response(),
        Err(e) => error_response(&app, Call::Deprovision, e),
    }
}

async fn heartbeat(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let session = session_of(&headers, &body)?;
        app.runners.heartbeat(&session).await
    }
    .await;
    match result {
        Ok(r) if r.singleton => Json(Message {
            message: "Heartbeat received for singleton runner.".into(),
        })
        .into_response(),
        Ok(r) => Json(Message {
            message: format!("Heartbeat received for session {}.", r.session_id),
        })
        .into_response(),
        Err(e) => error_response(&app, Call::Heartbeat, e),
    }
}
