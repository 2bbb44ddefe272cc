//! The API surfaces and how they are mounted on listeners.
//!
//! A surface is one module with its routes, its wire types and one mapping of its errors to
//! status and body: `native` (the batch-coordinator contract, drover's own API),
//! `session_runners` (the session-runners contract), `placement` (the placement-coordinator
//! contract), `registry` (the node-registry contract's HTTP route), `priority` (the
//! priority-queue contract), `dashboard` (the web pages of `crate::ui`) and `prometheus` (a
//! metrics listener of its own). [`Surface`] names them for configuration; [`router`] mounts
//! any set of them on one listener with the shared plumbing (fallbacks, body limit, request
//! metrics, request tracing) and that listener's OpenAPI document (`openapi`). Each API surface
//! mounts its routes only through `utoipa_axum`'s `routes!`, so a route and its documentation
//! are one declaration (see `openapi`); the dashboard's HTML pages are for browsers and are not
//! in the document. Surfaces translate; they decide nothing (the core and the services do) and
//! hold no SQL.

pub mod native;
pub mod observed;
pub mod openapi;
pub mod placement;
pub mod priority;
pub mod prometheus;
pub mod registry;
pub mod session_runners;

use crate::extract::BodyLimit;
use crate::{AppState, error::ApiError};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Method;
use axum::{Extension, Router};
use drover_store::Page;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An API surface that a listener can serve. Their paths do not collide, so any set of them can
/// share a listener; each can also have a port of its own (a contract's default port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Surface {
    /// drover's own API, a superset of the batch-coordinator contract: `/api/v1`,
    /// `/internal/v1`, `/metrics`.
    Native,
    /// The session-runners contract: `/api/runner/*` (its clients expect port 3001).
    Runners,
    /// The placement-coordinator contract: `/register`, `/nodes`, `/node/*`, `/placement/*`,
    /// `/schedule`, `/scheduler/config`, `/object/*`, `/replica/*`, `/repair`, `/health`,
    /// `/ready`, `/system/info`.
    Placement,
    /// The node-registry contract's HTTP route for its dashboard: `/api/nodes` (its gRPC API
    /// has a listener of its own, `grpc/`).
    Registry,
    /// The priority-queue contract: `/api/jobs/*`, `/api/workers/heartbeat`, `/api/health`,
    /// `/api/raft/status`, `/api/cluster/status`, `/api/metrics` (its clients expect port 8081).
    Priority,
    /// The web dashboard: `/ui/*`, and `/`, which sends a browser to it.
    Dashboard,
    /// A metrics listener as the priority contract's (port 9101): `/metrics` (Prometheus text)
    /// and `/health`. Its paths are other surfaces' too, so it is served only on a listener of
    /// its own (`--listen metrics=127.0.0.1:9101`), never on the main one.
    Metrics,
}

impl Surface {
    /// Every surface, by name.
    pub const ALL: &'static [Surface] = &[
        Surface::Native,
        Surface::Runners,
        Surface::Placement,
        Surface::Registry,
        Surface::Priority,
        Surface::Dashboard,
        Surface::Metrics,
    ];

    /// What the main listener serves: every surface whose paths are its own.
    pub const MAIN: &'static [Surface] = &[
        Surface::Native,
        Surface::Runners,
        Surface::Placement,
        Surface::Registry,
        Surface::Priority,
        Surface::Dashboard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Surface::Native => "native",
            Surface::Runners => "runners",
            Surface::Placement => "placement",
            Surface::Registry => "registry",
            Surface::Priority => "priority",
            Surface::Dashboard => "dashboard",
            Surface::Metrics => "metrics",
        }
    }

    /// This surface's routes, each with its path item.
    fn routes(self, state: &AppState) -> OpenApiRouter<AppState> {
        match self {
            Surface::Native => native::routes(state),
            Surface::Runners => session_runners::routes(state),
            Surface::Placement => placement::routes(state),
            Surface::Registry => registry::routes(state),
            Surface::Priority => priority::routes(state),
            // HTML pages for browsers, outside the API document (docs/dashboard.md lists them).
            Surface::Dashboard => OpenApiRouter::from(crate::ui::routes(state)),
            Surface::Metrics => prometheus::routes(state),
        }
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no surface's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown surface {0:?}; expected one of: {names}", names = surface_names())]
pub struct UnknownSurface(pub String);

fn surface_names() -> String {
    let names: Vec<&str> = Surface::ALL.iter().map(|s| s.name()).collect();
    names.join(", ")
}

impl FromStr for Surface {
    type Err = UnknownSurface;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Surface::ALL
            .iter()
            .copied()
            .find(|x| x.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownSurface(s.to_string()))
    }
}

/// The router of one listener: the given surfaces and their OpenAPI document, with fallbacks,
/// the body limit, request metrics (`observed`) and request tracing around them.
pub fn router(state: AppState, surfaces: &[Surface]) -> Router {
    let limit = state.config.body_limit;
    let http = state.metrics.http.clone();
    let (routes, _) = routes_and_document(&state, surfaces);
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(http, observed::track))
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(TraceLayer::new_for_http())
}

/// The routes of `surfaces` with `GET /api/v1/openapi.json` among them, and the document
/// that route serves: the path items of exactly the routes mounted.
pub fn routes_and_document(
    state: &AppState,
    surfaces: &[Surface],
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, doc) = surfaces
        .iter()
        .fold(OpenApiRouter::with_openapi(openapi::frame()), |r, s| {
            r.merge(s.routes(state))
        })
        .routes(routes!(openapi::document))
        .split_for_parts();
    let rendered = openapi::Rendered::of(&doc);
    (routes.route_layer(Extension(rendered)), doc)
}

async fn not_found(method: Method, request: Request) -> ApiError {
    ApiError::NotFound {
        code: "NOT_FOUND",
        message: format!("no route for {method} {}", request.uri().path()),
    }
}

async fn method_not_allowed(method: Method, request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}",
        request.uri().path()
    ))
}

/// Paging and filtering parameters shared by the list endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    pub status: Option<String>,
    pub format: Option<String>,
}

impl ListQuery {
    /// The page asked for; `limit` defaults to `default` and may not exceed `max`.
    pub fn page(&self, default: u32, max: u32) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("limit must be between 1 and {max} (got {limit})"),
            ));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "INVALID_QUERY",
                    format!("cursor {c:?} is not one this server handed out; use nextCursor from the previous page"),
                )
            })?),
        };
        Ok(Page { cursor, limit })
    }

    pub fn status<T>(&self) -> Result<Option<T>, ApiError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.status
            .as_deref()
            .map(|s| s.parse::<T>())
            .transpose()
            .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("status: {e}")))
    }
}
