//! The server's one error type and its single mapping to HTTP: status, stable `code`, and the
//! contract's `{"success": false, "error": ...}` body. Handlers return `ApiError`; nothing else
//! in the server picks a status code for an error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::ErrorBody;
use drover_core::ReportOutcome;
use drover_core::sweep::SweepError;
use drover_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says what to fix.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The contract's exact messages: "job not found", "task not found".
            StoreError::NotFound { kind, .. } => ApiError::NotFound {
                code: match kind {
                    "job" => "JOB_NOT_FOUND",
                    "task" => "TASK_NOT_FOUND",
                    "spot" => "SPOT_NOT_FOUND",
                    _ => "NOT_FOUND",
                },
                message: format!("{kind} not found"),
            },
            StoreError::NodeDown(_) => ApiError::Conflict {
                code: "SPOT_DOWN",
                message: e.to_string(),
            },
            StoreError::JobFinished { .. } => ApiError::Conflict {
                code: "JOB_FINISHED",
                message: e.to_string(),
            },
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            // Only opening a store gives this; no request can.
            StoreError::Unsupported(m) | StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<SweepError> for ApiError {
    fn from(e: SweepError) -> Self {
        match e {
            SweepError::Invalid { .. } => ApiError::bad_request("INVALID_SWEEP", e.to_string()),
            SweepError::TooManyTasks { .. } => {
                ApiError::bad_request("TOO_MANY_TASKS", e.to_string())
            }
        }
    }
}

impl ApiError {
    /// The answer to a complete or fail report that the store refused, with the batch
    /// contract's messages; `None` for outcomes that are successes.
    pub fn refused_report(outcome: ReportOutcome) -> Option<ApiError> {
        let conflict = |code, message: &str| ApiError::Conflict {
            code,
            message: message.into(),
        };
        Some(match outcome {
            ReportOutcome::TaskNotFound => ApiError::NotFound {
                code: "TASK_NOT_FOUND",
                message: "task not found".into(),
            },
            ReportOutcome::NotHolder => conflict("WRONG_SPOT", "task not assigned to this spot"),
            ReportOutcome::Cancelled => conflict(
                "TASK_CANCELLED",
                "task was cancelled with its job; drop this result",
            ),
            ReportOutcome::Contradicts => conflict(
                "REPORT_CONFLICT",
                "this attempt was already reported as failed",
            ),
            ReportOutcome::Completed
            | ReportOutcome::AlreadyCompleted
            | ReportOutcome::Failed { .. }
            | ReportOutcome::AlreadyReported { .. }
            | ReportOutcome::AlreadyTerminal => return None,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let body = ErrorBody {
            success: false,
            error: self.to_string(),
            code: code.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<crate::runners::RunnerError> for ApiError {
    /// For the native API; the session-runners surface has its own error shape.
    fn from(e: crate::runners::RunnerError) -> Self {
        use crate::runners::RunnerError as R;
        match e {
            R::Store(e) => e.into(),
            R::Disabled | R::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            R::SessionRequired | R::InvalidSession(_) => {
                ApiError::bad_request("INVALID_FIELD", e.to_string())
            }
            R::NotFound { .. } => ApiError::NotFound {
                code: "RUNNER_NOT_FOUND",
                message: e.to_string(),
            },
            R::LimitReached(_) | R::ImageNotFound(_) | R::Failed(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
