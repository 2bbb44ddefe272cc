//! Key checks for the two route groups. Keys are compared in constant time; a failure answers
//! 401 with a JSON body that says which header is expected. Nothing here decides anything else.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use subtle::ConstantTimeEq;

fn keys_match(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The agent key of the batch contract (`X-Orhestra-Key`), or drover's own `X-Agent-Key`.
pub async fn require_agent_key(
    State(key): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = key.as_deref() {
        let headers = request.headers();
        let given = header(headers, "x-orhestra-key").or_else(|| header(headers, "x-agent-key"));
        match given {
            Some(given) if keys_match(given, expected) => {}
            Some(_) => return Err(ApiError::Unauthorized("invalid agent key".into())),
            None => {
                return Err(ApiError::Unauthorized(
                    "missing agent key: send it in the X-Orhestra-Key (or X-Agent-Key) header"
                        .into(),
                ));
            }
        }
    }
    Ok(next.run(request).await)
}

/// `Authorization: Bearer <key>` on requests that change something (not GET/HEAD).
pub async fn require_api_key_for_changes(
    State(key): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if let (Some(expected), false) = (key.as_deref(), reads) {
        let given = header(request.headers(), "authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        match given {
            Some(given) if keys_match(given.trim(), expected) => {}
            Some(_) => return Err(ApiError::Unauthorized("invalid API key".into())),
            None => {
                return Err(ApiError::Unauthorized(
                    "missing API key: send it as 'Authorization: Bearer <key>'".into(),
                ));
            }
        }
    }
    Ok(next.run(request).await)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
