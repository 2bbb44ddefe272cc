//! A metrics listener of its own, as the priority-queue contract's (port 9101): `GET /metrics`
//! (the same Prometheus text as the main listener's, behind the API key as there) and
//! `GET /health` (open; 200 `{"status":"healthy"}` while the store answers, 503 otherwise).
//! It adds no figures of its own: the registry is `crate::metrics`.

use crate::surfaces::native::public::metrics;
use crate::{AppState, auth};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use serde_json::{Value, json};

pub fn routes(state: &AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            auth::ApiKeyRule::of(&state.config),
            auth::require_api_key,
        ))
        .route("/health", get(health))
}

async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    match app.store.ops.health().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "healthy"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "error": e.to_string()})),
        ),
    }
}
