//! The placement surface's one error mapping: a [`PlacementError`] from the service, or a
//! request the shared plumbing refused (malformed JSON, an oversize body, an unavailable
//! store), becomes the contract's status and body `{"error": ...}`, with drover's
//! machine-readable `code` beside it. The contract's own 404 messages are kept word for word:
//! "node not found" (with `node_id`), "not found" for an object, "no suitable node".

use crate::error::ApiError;
use crate::placement::PlacementError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::placement::ErrorBody;

/// The refusals of the contract's routes as their documentation lists them (`openapi`): the
/// contract's `{"error": ...}` with drover's `code`, except the key checks, which answer in the
/// native shape as on every surface.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// The request is malformed or a field breaks a rule (`INVALID_FIELD`, `MALFORMED_JSON`,
    /// `INVALID_QUERY`, `INVALID_PATH`, ...).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// A key is missing or wrong.
    #[response(status = 401)]
    Unauthorized(drover_api::ErrorBody),
    /// The node or object is unknown (`NODE_NOT_FOUND` with `node_id`, `OBJECT_NOT_FOUND`), or no
    /// node fits a workload (`NO_SUITABLE_NODE`, with `ruled_out` and `nodes`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The state refuses the request.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over `--body-limit` (`PAYLOAD_TOO_LARGE`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A limit of the server is reached (`SPOT_LIMIT_REACHED`).
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// Retry later: the store is away or busy (`STORE_UNAVAILABLE`, ...).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The store was lost while committing (`STORE_OUTCOME_UNKNOWN`): look before repeating.
    #[response(status = 504)]
    OutcomeUnknown(ErrorBody),
}

#[derive(Debug)]
pub enum PlacementApiError {
    Service(PlacementError),
    Request(ApiError),
}

impl From<PlacementError> for PlacementApiError {
    fn from(e: PlacementError) -> Self {
        PlacementApiError::Service(e)
    }
}

impl From<ApiError> for PlacementApiError {
    fn from(e: ApiError) -> Self {
        PlacementApiError::Request(e)
    }
}

fn body(error: impl Into<String>, code: &str) -> ErrorBody {
    ErrorBody {
        error: error.into(),
        code: code.into(),
        node_id: None,
        ruled_out: None,
        nodes: None,
    }
}

impl PlacementApiError {
    pub fn status_and_body(self) -> (StatusCode, ErrorBody) {
        let e = match self {
            PlacementApiError::Request(e) => return from_api(e),
            PlacementApiError::Service(e) => e,
        };
        match e {
            PlacementError::Invalid(rule) => (
                StatusCode::BAD_REQUEST,
                body(format!("{}: {}", rule.field, rule.message), "INVALID_FIELD"),
            ),
            PlacementError::NodeNotFound(id) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    node_id: Some(id),
                    ..body("node not found", "NODE_NOT_FOUND")
                },
            ),
            PlacementError::ObjectNotFound(_) => {
                (StatusCode::NOT_FOUND, body("not found", "OBJECT_NOT_FOUND"))
            }
            PlacementError::NoFit { ruled_out, nodes } => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    ruled_out: Some(
                        (ruled_out.into_iter())
                            .map(|(r, n)| (r.field().to_string(), n.into()))
                            .collect(),
                    ),
                    nodes: Some(nodes),
                    ..body("no suitable node", "NO_SUITABLE_NODE")
                },
            ),
            PlacementError::Store(e) => from_api(ApiError::from(e)),
        }
    }
}

fn from_api(e: ApiError) -> (StatusCode, ErrorBody) {
    let (status, code) = e.status_and_code();
    (status, body(e.to_string(), code))
}

impl IntoResponse for PlacementApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, Json(body)).into_response()
    }
}
