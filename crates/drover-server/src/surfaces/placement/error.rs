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
