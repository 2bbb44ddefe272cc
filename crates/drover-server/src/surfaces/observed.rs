//! Every HTTP request counted and timed, on every listener and surface: one middleware that
//! [`super::router`] puts around all the routes of a listener. It records the route template
//! axum matched (never the path itself, which holds ids), the method and the status, into
//! `crate::metrics::HttpMetrics`; it must not change the request or the response.

use crate::metrics::{HttpLabels, HttpMetrics, UNMATCHED_ROUTE, method_label};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// Counts and times `request`, to its response's headers.
pub async fn track(State(http): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str().to_string(),
        None => UNMATCHED_ROUTE.to_string(),
    };
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    http.record(&labels, started.elapsed());
    response
}
