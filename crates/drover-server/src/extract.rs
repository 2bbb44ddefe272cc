//! Request extractors that turn every client mistake into an [`ApiError`] with a message that
//! says what to fix: malformed JSON or data after it, a wrong type at a named field, an
//! oversize or late body, a bad query string, a path segment that is not UTF-8. Axum's own
//! rejections are plain text; these keep every answer JSON.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body. The `Content-Type` header is not required: the contract's clients do send it,
/// but a missing header is no reason to refuse a well-formed document.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The body as bytes, with the body limit and the body timeout answered as JSON (axum's
/// `Bytes` answers them as text).
pub struct RawBody(pub Bytes);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| body_error(e, limit))
    }
}

/// The configured body limit, put in request extensions so rejections can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

fn body_error(e: BytesRejection, limit: Option<usize>) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit.unwrap_or_default())
    } else if let Some(timeout) = body_timeout(&e) {
        ApiError::BodyTimeout(timeout)
    } else {
        ApiError::bad_request("INVALID_BODY", format!("cannot read the request body: {e}"))
    }
}

/// The body timeout that ended reading the body, if that is what did.
fn body_timeout(e: &BytesRejection) -> Option<std::time::Duration> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<crate::serve::BodyTimedOut>() {
            return Some(t.0);
        }
        cause = c.source();
    }
    None
}

/// Parses a JSON document, naming the field that has the wrong type. Anything but whitespace
/// after the document is refused: two documents in one body are a client bug, not a choice.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "MALFORMED_JSON",
            "the request body is empty; send a JSON object",
        ));
    }
    // Every request body of this API is an object; saying so beats serde's "[0]: invalid type".
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "INVALID_FIELD",
            "the request body must be a JSON object ({...})",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(
                "MALFORMED_JSON",
                format!("the request body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            ApiError::bad_request("INVALID_FIELD", format!("invalid request: {inner}"))
        } else {
            ApiError::bad_request("INVALID_FIELD", format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "MALFORMED_JSON",
            format!("the request body has data after the JSON object: {e}; send one object"),
        )
    })?;
    Ok(value)
}

/// A path parameter, with errors as JSON (a segment such as `%ff%fe` is not UTF-8).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::bad_request(
                    "INVALID_PATH",
                    format!("the request path is not valid: {}", e.body_text()),
                )
            })
    }
}

/// A query string, with errors as JSON.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))
    }
}
