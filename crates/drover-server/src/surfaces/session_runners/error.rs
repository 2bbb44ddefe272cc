//! The session-runners surface's one error mapping: a [`RunnerError`] from the runner service,
//! with the call it came from, becomes the contract's status, `error` code and message; a
//! request the shared plumbing refused (an oversize or late body) keeps its status and code in
//! the contract's shape. Nothing else in this surface picks a status code for an error.

use crate::error::ApiError;
use crate::runners::RunnerError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::session_runners::ContractError;

/// A refused or failed runner call: a refused key or token answers in the native shape, as
/// every key check of the shared plumbing does; a failure of the call itself in the contract's.
#[derive(Debug)]
pub enum RunnerCallError {
    Auth(ApiError),
    Runner(RunnerApiError),
}

impl From<ApiError> for RunnerCallError {
    fn from(e: ApiError) -> Self {
        RunnerCallError::Auth(e)
    }
}

impl From<RunnerApiError> for RunnerCallError {
    fn from(e: RunnerApiError) -> Self {
        RunnerCallError::Runner(e)
    }
}

impl IntoResponse for RunnerCallError {
    fn into_response(self) -> Response {
        match self {
            RunnerCallError::Auth(e) => e.into_response(),
            RunnerCallError::Runner(e) => e.into_response(),
        }
    }
}

/// The refusals of the contract's routes as their documentation lists them (`openapi`): the
/// contract's own `{"error", "message", "details"?}`, except the key checks, which answer in
/// the native shape as on every surface.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// The session id is missing or not valid (`SESSION_ID_REQUIRED`, `INVALID_SESSION_ID`), or
    /// the body cannot be read.
    #[response(status = 400)]
    BadRequest(ContractError),
    /// The API key (or the runner's token) is missing or wrong.
    #[response(status = 401)]
    Unauthorized(drover_api::ErrorBody),
    /// The runner token is not this runner's (`RUNNER_TOKEN_INVALID`).
    #[response(status = 403)]
    Forbidden(drover_api::ErrorBody),
    /// No runner for this session (`RUNNER_NOT_FOUND`).
    #[response(status = 404)]
    NotFound(ContractError),
    /// The body is over `--body-limit` (`PAYLOAD_TOO_LARGE`).
    #[response(status = 413)]
    TooLarge(ContractError),
    /// Every runner slot is in use (`RUNNER_LIMIT_REACHED`).
    #[response(status = 429)]
    TooMany(ContractError),
    /// The runner could not be started or stopped (`DOCKER_IMAGE_NOT_FOUND`, `SERVER_ERROR`).
    #[response(status = 500)]
    Failed(ContractError),
    /// No runner driver, or its engine cannot be reached (`RUNNERS_DISABLED`,
    /// `RUNNER_ENGINE_UNAVAILABLE`); retry later.
    #[response(status = 503)]
    Unavailable(ContractError),
}

/// Which call failed, for the contract's wording of "session id required".
#[derive(Debug, Clone, Copy)]
pub enum Call {
    Provision,
    Deprovision,
    Heartbeat,
}

/// A failed runner call, answered in the contract's error shape.
#[derive(Debug)]
pub struct RunnerApiError {
    pub call: Call,
    pub error: Failure,
    /// Whether 500 answers carry the error's details (the contract shows them outside
    /// production).
    pub details: bool,
}

/// What failed: the runner service, or the request before it reached the service.
#[derive(Debug)]
pub enum Failure {
    Service(RunnerError),
    Request(ApiError),
}

impl RunnerApiError {
    /// The status, the contract's code and its message.
    pub fn status_code_message(&self) -> (StatusCode, &'static str, String) {
        let error = match &self.error {
            Failure::Service(e) => e,
            Failure::Request(e) => {
                let (status, code) = e.status_and_code();
                return (status, code, e.to_string());
            }
        };
        match error {
            RunnerError::SessionRequired => (
                StatusCode::BAD_REQUEST,
                "SESSION_ID_REQUIRED",
                match self.call {
                    Call::Heartbeat => "Session ID is required for heartbeat.".to_string(),
                    _ => "Session ID is required for deprovisioning.".to_string(),
                },
            ),
            RunnerError::InvalidSession(why) => (
                StatusCode::BAD_REQUEST,
                "INVALID_SESSION_ID",
                format!("The session ID is not valid: {why}."),
            ),
            RunnerError::NotFound { singleton: true } if matches!(self.call, Call::Heartbeat) => (
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
                "This server runs no runner driver; start it with --runner-driver docker or \
                 process."
                    .to_string(),
            ),
            RunnerError::Failed(_) | RunnerError::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER_ERROR",
                "An unexpected error occurred on the server.".to_string(),
            ),
        }
    }
}

impl IntoResponse for RunnerApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = self.status_code_message();
        let details = if status == StatusCode::INTERNAL_SERVER_ERROR && error == "SERVER_ERROR" {
            let error = match &self.error {
                Failure::Service(e) => e.to_string(),
                Failure::Request(e) => e.to_string(),
            };
            tracing::error!(%error, "runner request failed");
            self.details.then_some(error)
        } else {
            None
        };
        let body = ContractError {
            error: error.to_string(),
            message,
            details,
        };
        (status, Json(body)).into_response()
    }
}
