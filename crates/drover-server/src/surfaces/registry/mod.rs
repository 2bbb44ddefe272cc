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
use axum::routing::{get, options};
use drover_api::registry as api;
use drover_proto::orchion::v1 as pb;

/// Reads need the API key when one is configured (unless `--public-reads`), as every read.
pub fn routes(state: &AppState) -> axum::Router<AppState> {
    let read = axum::Router::new()
        .route("/api/nodes", get(nodes))
        .route_layer(middleware::from_fn_with_state(
            auth::ApiKeyRule::of(&state.config),
            auth::require_api_key,
        ));
    read.route("/api/nodes", options(preflight))
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
