//! The node-registry contract's HTTP route, `GET /api/nodes` (its dashboard's): the nodes its
//! gRPC `ListNodes` answers (`grpc::orchestrator::listed_nodes`), as a bare JSON array with
//! empty fields left out, readable from any origin (CORS `*`; a preflight `OPTIONS` answers
//! 200 without a key, as browsers send it without one).

use crate::error::ApiError;
use crate::grpc::orchestrator::listed_nodes;
use crate::{AppState, auth};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware;
use axum::response::IntoResponse;
use drover_api::registry as api;
use drover_proto::orchion::v1 as pb;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Reads need the API key when one is configured (unless `--public-reads`), as every read.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let read =
        OpenApiRouter::new()
            .routes(routes!(nodes))
            .route_layer(middleware::from_fn_with_state(
                auth::ApiKeyRule::of(&state.config),
                auth::require_api_key,
            ));
    read.routes(routes!(preflight))
}

const ANY_ORIGIN: (HeaderName, HeaderValue) = (
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    HeaderValue::from_static("*"),
);

fn wire(c: pb::Capabilities) -> Option<api::Capabilities> {
    let c = api::Capabilities {
        cpu: c.cpu,
        memory: c.memory,
        os: c.os,
        gpu_type: c.gpu_type,
        gpu_vram_total: c.gpu_vram_total,
        gpu_vram_available: c.gpu_vram_available,
        power_usage: c.power_usage,
        gpu_vram_used: c.gpu_vram_used,
        gpu_temperature: c.gpu_temperature,
        gpu_power_usage: c.gpu_power_usage,
    };
    (c != api::Capabilities::default()).then_some(c)
}

#[utoipa::path(get, path = "/api/nodes", tag = "node-registry", security(("apiKey" = [])),
    responses((status = 200, description = "The registered nodes, empty fields left out; readable from any origin", body = Vec<api::Node>),
        (status = 401, description = "The API key is missing or wrong", body = drover_api::ErrorBody),
        (status = 503, description = "Retry later: the store is away or busy", body = drover_api::ErrorBody)))]
async fn nodes(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let nodes: Vec<api::Node> = (listed_nodes(&app).await?)
        .into_iter()
        .map(|n| api::Node {
            capabilities: n.capabilities.and_then(wire),
            id: n.id,
            hostname: n.hostname,
            last_seen_unix: n.last_seen_unix,
            agent_address: n.agent_address,
        })
        .collect();
    Ok(([ANY_ORIGIN], Json(nodes)))
}

#[utoipa::path(options, path = "/api/nodes", tag = "node-registry",
    responses((status = 200, description = "A browser's preflight: any origin may read the nodes")))]
async fn preflight() -> impl IntoResponse {
    (
        [
            ANY_ORIGIN,
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, OPTIONS"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("*"),
            ),
        ],
        "",
    )
}
