//! The session-runners contract (`/api/runner/provision`, `/deprovision`, `/heartbeat`) over
//! [`crate::runners::RunnerService`].
//!
//! It translates only: where the session id comes from (the `X-Session-Id` header, or
//! `sessionId` in the JSON body), the contract's success messages, and (in `error.rs`) its error
//! shape. Its wire types are `drover_api::session_runners`. Every rule is the service's. A
//! header that is not visible ASCII is refused as an invalid session id, never ignored: ignoring
//! it would give the caller a new session instead of its own.

mod error;

pub use error::{Call, Failure, Refusals, RunnerApiError, RunnerCallError};

use crate::error::ApiError;
use crate::extract::RawBody;
use crate::runners::{RunnerError, SessionToken, check_session};
use crate::{AppState, auth};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use drover_api::session_runners::{Message, Provisioned};
use drover_core::credential::Refusal;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The contract's routes. Provision needs the API key when one is configured; deprovision and
/// heartbeat need it or the runner's own session token (`auth::authorise_runner`), checked once
/// the session is known.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let provision_routes = OpenApiRouter::new().routes(routes!(provision)).route_layer(
        middleware::from_fn_with_state(auth::ApiKeyRule::of(&state.config), auth::require_api_key),
    );
    OpenApiRouter::new()
        .routes(routes!(deprovision))
        .routes(routes!(heartbeat))
        .merge(provision_routes)
}

/// The `X-Session-Id` header: absent or blank is none; anything else must be a valid id.
fn header_session(headers: &HeaderMap) -> Result<Option<String>, RunnerError> {
    let Some(value) = headers.get("x-session-id") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        RunnerError::InvalidSession(
            "the X-Session-Id header is not ASCII; use letters, digits, '-', '_', '.' and ':'"
                .into(),
        )
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    check_session(value)?;
    Ok(Some(value.to_string()))
}

/// The session id from the body's `sessionId` or, failing that, the `X-Session-Id` header. An
/// empty or non-JSON body simply has none. Public for the fuzz targets (`fuzz/`).
pub fn session_of(headers: &HeaderMap, body: &Bytes) -> Result<String, RunnerError> {
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("sessionId").and_then(Value::as_str).map(String::from))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    match from_body {
        Some(s) => Ok(s),
        None => header_session(headers)?.ok_or(RunnerError::SessionRequired),
    }
}

/// Tags a service error with the call it failed, for the contract's wording.
fn failed(app: &AppState, call: Call) -> impl FnOnce(RunnerError) -> RunnerApiError {
    let details = app.runners.config.error_details;
    move |error| RunnerApiError {
        call,
        error: Failure::Service(error),
        details,
    }
}

/// The body, or the contract-shaped answer to a body the shared plumbing refused.
fn body_of(call: Call, body: Result<RawBody, ApiError>) -> Result<Bytes, RunnerApiError> {
    body.map(|RawBody(b)| b).map_err(|e| RunnerApiError {
        call,
        error: Failure::Request(e),
        details: false,
    })
}

#[utoipa::path(post, path = "/api/runner/provision", tag = "session-runners", security(("apiKey" = [])),
    params(("X-Session-Id" = Option<String>, Header, description = "The session the runner is for; without one, the shared runner (reuse mode)")),
    responses(
        (status = 201, description = "This call started the runner; `sessionToken` is given this once", body = Provisioned),
        (status = 200, description = "A runner for this session already exists", body = Provisioned),
        Refusals))]
async fn provision(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Response, RunnerCallError> {
    // The contract's provision reads no body; it is still held to the body limit, so an
    // oversize request is refused like on every other route instead of being half read.
    body_of(Call::Provision, body)?;
    let session = header_session(&headers).map_err(failed(&app, Call::Provision))?;
    let (token, hash) = auth::new_secret()?;
    let p = app
        .runners
        .provision(
            session,
            Some(SessionToken {
                secret: token.clone(),
                hash,
            }),
        )
        .await
        .map_err(failed(&app, Call::Provision))?;
    let (status, message) = if p.created {
        (StatusCode::CREATED, "Runner provisioned successfully.")
    } else {
        (StatusCode::OK, "Runner already exists for this session.")
    };
    let body = Provisioned {
        message: message.into(),
        endpoint: p.runner.endpoint.unwrap_or_default(),
        session_id: p.runner.session_id,
        // Only the call that started the runner learns its token; the server keeps its hash.
        session_token: p.created.then_some(token),
    };
    Ok((status, Json(body)).into_response())
}

/// The session a deprovision or heartbeat names, once the caller may act for its runner; or
/// the contract's error for that call.
async fn session_for(
    app: &AppState,
    call: Call,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, RunnerCallError> {
    let session = session_of(headers, body).map_err(failed(app, call))?;
    let runner = app
        .store
        .runners
        .get_runner(&session)
        .await
        .map_err(|e| failed(app, call)(e.into()))?;
    match auth::authorise_runner(
        &app.config,
        headers,
        runner.as_ref().and_then(|r| r.token_hash.as_deref()),
    ) {
        Ok(()) => Ok(session),
        // A token for a session that has no runner (any more): there is nothing it could be
        // wrong for, and the contract answers a runner it does not know with 404. This is how a
        // runner learns that it was forgotten (deprovisioned, reaped, or found exited) and
        // should stop. It tells the caller no more than that the session id it named has no
        // runner; acting for a runner still needs the key or that runner's token.
        Err(ApiError::RunnerToken(Refusal::Wrong)) if runner.is_none() => {
            Err(failed(app, call)(RunnerError::NotFound {
                singleton: app.runners.config.reuse,
            })
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/runner/deprovision", tag = "session-runners",
    security(("apiKey" = []), ("runnerToken" = [])),
    params(("X-Session-Id" = Option<String>, Header, description = "The session, when the body does not name it (`sessionId`)")),
    request_body(content = Option<Object>, description = "Optional: `{\"sessionId\": ...}` names the session instead of the header", content_type = "application/json"),
    responses((status = 200, description = "The runner is stopped", body = Message), Refusals))]
async fn deprovision(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Json<Message>, RunnerCallError> {
    let body = body_of(Call::Deprovision, body)?;
    let session = session_for(&app, Call::Deprovision, &headers, &body).await?;
    let r = (app.runners.deprovision(&session).await).map_err(failed(&app, Call::Deprovision))?;
    Ok(Json(Message {
        message: format!(
            "Runner for session {} deprovisioned successfully.",
            r.session_id
        ),
    }))
}

#[utoipa::path(post, path = "/api/runner/heartbeat", tag = "session-runners",
    security(("apiKey" = []), ("runnerToken" = [])),
    params(("X-Session-Id" = Option<String>, Header, description = "The session, when the body does not name it (`sessionId`)")),
    request_body(content = Option<Object>, description = "Optional: `{\"sessionId\": ...}` names the session instead of the header", content_type = "application/json"),
    responses((status = 200, description = "The runner's idle time starts again", body = Message), Refusals))]
async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Json<Message>, RunnerCallError> {
    let body = body_of(Call::Heartbeat, body)?;
    let session = session_for(&app, Call::Heartbeat, &headers, &body).await?;
    let r = (app.runners.heartbeat(&session).await).map_err(failed(&app, Call::Heartbeat))?;
    let message = if r.singleton {
        "Heartbeat received for singleton runner.".to_string()
    } else {
        format!("Heartbeat received for session {}.", r.session_id)
    };
    Ok(Json(Message { message }))
}
