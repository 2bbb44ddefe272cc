//! A metrics listener of its own, as the priority-queue contract's (port 9101): `GET /metrics`
//! (the same Prometheus text as the main listener's, behind the API key as there) and
//! `GET /health` (open; 200 `{"status":"healthy"}` while the store answers, 503 otherwise).
//! It adds no figures of its own: the registry is `crate::metrics`.

use crate::{AppState, auth};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crate::surfaces::native::public::metrics))
        .route_layer(middleware::from_fn_with_state(
            auth::ApiKeyRule::of(&state.config),
            auth::require_api_key,
        ))
        .routes(routes!(health))
}

/// This listener's health answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = metrics::Health)]
struct MetricsHealth {
    /// `healthy` or `unhealthy`.
    status: String,
    /// Why the store does not answer (absent when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[utoipa::path(get, path = "/health", tag = "metrics",
    responses((status = 200, description = "The store answers", body = MetricsHealth),
        (status = 503, description = "The store does not answer: `error` says why", body = MetricsHealth)))]
async fn health(State(app): State<AppState>) -> (StatusCode, Json<MetricsHealth>) {
    match app.store.ops.health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(MetricsHealth {
                status: "healthy".into(),
                error: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(MetricsHealth {
                status: "unhealthy".into(),
                error: Some(e.to_string()),
            }),
        ),
    }
}
