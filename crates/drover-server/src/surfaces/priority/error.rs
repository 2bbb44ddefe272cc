//! The priority surface's one error mapping: a [`RouterError`] or a malformed body becomes
//! the contract's `{"error": word}` with a `message` saying what to fix: 400 for bad input
//! (`invalid_json` on registration, `invalid_request` on the workers' routes, a precise word
//! for a bad field), 404 `job_not_found`, 409 for a request the job's state refuses, and the
//! store's unavailability as 503 with drover's code.

use crate::error::ApiError;
use crate::priority::RouterError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::priority::ErrorBody;

/// The refusals of the contract's routes as their documentation lists them (`openapi`): the
/// contract's `{"error": word, "message"}`, except the key checks, which answer in the native
/// shape as on every surface.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// The body or the query is not what the route takes (`invalid_json`, `invalid_request`,
    /// `invalid_query`, or a word for the field).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// A key is missing or wrong.
    #[response(status = 401)]
    Unauthorized(drover_api::ErrorBody),
    /// No such job (`job_not_found`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The job's state refuses the request.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over `--body-limit`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Retry later: the store or the broker is away or busy (`store_unavailable`, ...).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(Debug)]
pub enum PriorityApiError {
    /// The body is not JSON of the route's shape; `word` is the contract's error for the route.
    Malformed {
        word: &'static str,
        message: String,
    },
    Router(RouterError),
}

impl From<RouterError> for PriorityApiError {
    fn from(e: RouterError) -> Self {
        PriorityApiError::Router(e)
    }
}

fn body(error: &str, message: String) -> ErrorBody {
    ErrorBody {
        error: error.into(),
        message: Some(message),
    }
}

impl PriorityApiError {
    pub fn status_and_body(self) -> (StatusCode, ErrorBody) {
        match self {
            PriorityApiError::Malformed { word, message } => {
                (StatusCode::BAD_REQUEST, body(word, message))
            }
            PriorityApiError::Router(e) => {
                let message = e.to_string();
                match e {
                    RouterError::Invalid { code, .. } => {
                        (StatusCode::BAD_REQUEST, body(code, message))
                    }
                    RouterError::UnknownJob(_) => {
                        (StatusCode::NOT_FOUND, body("job_not_found", message))
                    }
                    RouterError::Conflict { code, .. } => {
                        (StatusCode::CONFLICT, body(code, message))
                    }
                    RouterError::Store(e) => {
                        let e = ApiError::from(e);
                        let (status, code) = e.status_and_code();
                        (status, body(&code.to_ascii_lowercase(), e.to_string()))
                    }
                }
            }
        }
    }
}

impl IntoResponse for PriorityApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, Json(body)).into_response()
    }
}
