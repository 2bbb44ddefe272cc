//! The native surface's one error type and its single mapping to HTTP: status, stable `code`,
//! and the batch contract's `{"success": false, "error": ...}` body. Handlers return `ApiError`;
//! nothing else in this surface picks a status code for an error. The shared request plumbing
//! (extractors, auth, fallbacks) answers in this shape too, on every listener.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::ErrorBody;
use drover_core::ReportOutcome;
use drover_core::credential::Refusal;
use drover_core::sweep::SweepError;
use drover_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says what to fix.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    /// A call for a spot without that spot's own secret (see `auth::authorise_spot`).
    #[error("{}", spot_refusal_message(*refusal, spot))]
    SpotCredential { refusal: Refusal, spot: String },
    /// A runner call with a session token that is not the runner's.
    #[error("{}", runner_refusal_message(*.0))]
    RunnerToken(Refusal),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive within the body timeout.
    #[error(
        "the request body was not received within {0:?}; send it faster or raise --body-timeout"
    )]
    BodyTimeout(std::time::Duration),
    #[error("the request target is longer than {0} bytes (--max-uri-bytes)")]
    UriTooLong(usize),
    #[error(
        "the request headers are larger than {bytes} bytes (--max-header-bytes) or {lines} lines"
    )]
    HeadersTooLarge { bytes: usize, lines: usize },
    /// A quota of the server refuses the request; the message names the limit and its flag.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// Retry later: the store or an engine behind the server is away or busy.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// The store was lost while committing the request's change, which may or may not have
    /// been made: the client must look before it repeats anything that is not idempotent.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{message}")]
    TooManyRequests { code: &'static str, message: String },
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
            ApiError::SpotCredential { refusal, .. } => match refusal {
                Refusal::Missing => (StatusCode::UNAUTHORIZED, "SPOT_SECRET_REQUIRED"),
                Refusal::Wrong => (StatusCode::FORBIDDEN, "SPOT_SECRET_INVALID"),
                Refusal::NotIssued => (StatusCode::FORBIDDEN, "SPOT_SECRET_NOT_ISSUED"),
            },
            ApiError::RunnerToken(_) => (StatusCode::FORBIDDEN, "RUNNER_TOKEN_INVALID"),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "URI_TOO_LONG"),
            ApiError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HEADERS_TOO_LARGE",
            ),
            ApiError::TooLarge { code, .. } => (StatusCode::PAYLOAD_TOO_LARGE, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::OutcomeUnknown(_) => (StatusCode::GATEWAY_TIMEOUT, "STORE_OUTCOME_UNKNOWN"),
            ApiError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

/// What a refused spot call must send instead.
fn spot_refusal_message(refusal: Refusal, spot: &str) -> String {
    match refusal {
        Refusal::Missing => format!(
            "spot {spot} has a secret: send the spotSecret its hello returned in the \
             X-Spot-Secret header"
        ),
        Refusal::Wrong => format!(
            "the X-Spot-Secret header is not spot {spot}'s secret: send the spotSecret that \
             spot's hello returned"
        ),
        Refusal::NotIssued => format!(
            "this server requires a secret of every spot (--require-node-credentials) and spot \
             {spot} has none: register again with hello and send the spotSecret it returns in \
             the X-Spot-Secret header"
        ),
    }
}

fn runner_refusal_message(_: Refusal) -> String {
    "the X-Runner-Token header is not this runner's session token: send the sessionToken its \
     provision returned, or the API key as 'Authorization: Bearer <key>'"
        .to_string()
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
            StoreError::DrainRefused { .. } => ApiError::Conflict {
                code: "SPOT_DOWN",
                message: e.to_string(),
            },
            StoreError::JobFinished { .. } => ApiError::Conflict {
                code: "JOB_FINISHED",
                message: e.to_string(),
            },
            StoreError::OutOfOrder { .. } => ApiError::Conflict {
                code: "JOURNAL_OUT_OF_ORDER",
                message: e.to_string(),
            },
            StoreError::NotPublished { .. } => ApiError::Conflict {
                code: "JOURNAL_NOT_PUBLISHED",
                message: e.to_string(),
            },
            StoreError::LimitReached { kind, .. } => ApiError::TooManyRequests {
                code: "SPOT_LIMIT_REACHED",
                message: format!(
                    "{e}; wait for DOWN {kind}s to be forgotten (--spot-retention) or raise \
                     --max-spots"
                ),
            },
            StoreError::Unavailable(m) => ApiError::Unavailable {
                code: "STORE_UNAVAILABLE",
                message: m,
            },
            StoreError::OutcomeUnknown(_) => ApiError::OutcomeUnknown(e.to_string()),
            // Only background steps are fenced; should a request ever be, it is this replica's
            // own state that is wrong, and another replica can serve it.
            StoreError::Fenced { .. } => ApiError::Unavailable {
                code: "NOT_LEADER",
                message: e.to_string(),
            },
            // Only opening a store gives this; no request can.
            StoreError::Unsupported(m) | StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<drover_core::rules::RuleError> for ApiError {
    /// A refused rule, as the request field to fix.
    fn from(e: drover_core::rules::RuleError) -> Self {
        ApiError::bad_request("INVALID_FIELD", format!("{}: {}", e.field, e.message))
    }
}

impl From<SweepError> for ApiError {
    fn from(e: SweepError) -> Self {
        match e {
            SweepError::Invalid { .. } => ApiError::bad_request("INVALID_SWEEP", e.to_string()),
            SweepError::TooManyTasks { .. } => {
                ApiError::bad_request("TOO_MANY_TASKS", e.to_string())
            }
            SweepError::PayloadTooLarge { .. } => ApiError::TooLarge {
                code: "TASK_PAYLOAD_TOO_LARGE",
                message: format!("{e} (the server's --max-task-payload-bytes)"),
            },
            SweepError::JobTooLarge { .. } => ApiError::TooLarge {
                code: "JOB_TOO_LARGE",
                message: format!("{e} (the server's --max-job-bytes)"),
            },
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
    /// The native API's view of runner failures (`GET /api/v1/runners`); the session-runners
    /// surface answers in its contract's own shape (`surfaces::session_runners`).
    fn from(e: crate::runners::RunnerError) -> Self {
        use crate::runners::RunnerError as R;
        let message = e.to_string();
        match e {
            R::Store(e) => e.into(),
            R::Disabled => ApiError::Unavailable {
                code: "RUNNERS_DISABLED",
                message,
            },
            R::Unavailable(_) => ApiError::Unavailable {
                code: "RUNNER_ENGINE_UNAVAILABLE",
                message,
            },
            R::SessionRequired | R::InvalidSession(_) => {
                ApiError::bad_request("INVALID_FIELD", message)
            }
            R::NotFound { .. } => ApiError::NotFound {
                code: "RUNNER_NOT_FOUND",
                message,
            },
            R::LimitReached(_) => ApiError::TooManyRequests {
                code: "RUNNER_LIMIT_REACHED",
                message,
            },
            R::ImageNotFound(_) | R::Failed(_) => ApiError::Internal(message),
        }
    }
}

/// The health endpoint's failure: 503 with the contract's health body, which (unlike every
/// other error) keeps the health fields instead of `success`, plus a stable `code` and the
/// reason in `error`.
#[derive(Debug)]
pub enum Unhealthy {
    /// The store cannot take a write (full disk, read-only file, a lock held elsewhere, closed).
    Store(StoreError),
    /// Writes still work, but the disk under the store is nearly full.
    LowDisk(drover_core::health::LowDisk),
}

impl Unhealthy {
    /// The health body's `database` field and `code`.
    pub fn database_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Unhealthy::Store(_) => ("disconnected", "STORE_UNAVAILABLE"),
            Unhealthy::LowDisk(_) => ("connected", "LOW_DISK_SPACE"),
        }
    }
}

impl IntoResponse for Unhealthy {
    fn into_response(self) -> Response {
        let (database, code) = self.database_and_code();
        let error = match &self {
            Unhealthy::Store(e) => e.to_string(),
            Unhealthy::LowDisk(low) => low.to_string(),
        };
        tracing::warn!(code, %error, "health check failed");
        let body = drover_api::HealthResponse {
            status: "unhealthy".into(),
            database: database.into(),
            active_spots: 0,
            pending_tasks: 0,
            running_tasks: 0,
            code: Some(code.into()),
            error: Some(error),
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The native surface's refusals as its routes' documentation lists them (`openapi`): every
/// one is an [`ErrorBody`] whose `code` says which. The shared plumbing (key checks, the body
/// limit, the router's 404 and 405) answers in this shape on every surface.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// The request is malformed or breaks a rule; `code` names which (`MALFORMED_JSON`,
    /// `INVALID_FIELD`, `INVALID_QUERY`, `INVALID_PATH`, `INVALID_SWEEP`, `TOO_MANY_TASKS`, ...)
    /// and `error` the field and what to fix.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// A key is missing or wrong (`UNAUTHORIZED`), or a spot's secret is missing
    /// (`SPOT_SECRET_REQUIRED`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A spot's secret or a runner's token is wrong (`SPOT_SECRET_INVALID`,
    /// `SPOT_SECRET_NOT_ISSUED`, `RUNNER_TOKEN_INVALID`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// What the request names does not exist (`JOB_NOT_FOUND`, `TASK_NOT_FOUND`,
    /// `SPOT_NOT_FOUND`, ...).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The state refuses the request (`SPOT_DOWN`, `JOB_FINISHED`, `WRONG_SPOT`,
    /// `TASK_CANCELLED`, `REPORT_CONFLICT`, ...).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over `--body-limit`, or a quota refuses it (`TASK_PAYLOAD_TOO_LARGE`,
    /// `JOB_TOO_LARGE`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A limit of the server is reached (`SPOT_LIMIT_REACHED`, `RUNNER_LIMIT_REACHED`).
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// Retry later: the store or an engine behind the server is away or busy
    /// (`STORE_UNAVAILABLE`, `NOT_LEADER`, ...). Nothing was done.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The store was lost while committing (`STORE_OUTCOME_UNKNOWN`): the change may or may not
    /// have been made; look before repeating it.
    #[response(status = 504)]
    OutcomeUnknown(ErrorBody),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runners::RunnerError;

    #[test]
    fn runner_failures_keep_their_meaning_on_the_native_api() {
        let status = |e: RunnerError| ApiError::from(e).status_and_code();
        assert_eq!(
            status(RunnerError::Disabled),
            (StatusCode::SERVICE_UNAVAILABLE, "RUNNERS_DISABLED")
        );
        assert_eq!(
            status(RunnerError::LimitReached(3)),
            (StatusCode::TOO_MANY_REQUESTS, "RUNNER_LIMIT_REACHED")
        );
        assert_eq!(
            status(RunnerError::Unavailable("down".into())),
            (StatusCode::SERVICE_UNAVAILABLE, "RUNNER_ENGINE_UNAVAILABLE")
        );
        assert_eq!(
            status(RunnerError::Store(StoreError::Unavailable("busy".into()))),
            (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE")
        );
    }

    /// A client moves a claim or a submission to another replica after a 503, which promises
    /// that nothing was done; a commit cut off half way promises nothing, so it is not a 503.
    #[test]
    fn a_commit_of_unknown_outcome_is_not_a_503() {
        let e = ApiError::from(StoreError::OutcomeUnknown("connection reset".into()));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::GATEWAY_TIMEOUT, "STORE_OUTCOME_UNKNOWN")
        );
        assert!(e.to_string().contains("may or may not"), "{e}");
    }
}
