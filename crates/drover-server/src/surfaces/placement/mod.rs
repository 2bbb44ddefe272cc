//! The placement-coordinator contract (`/register`, `/nodes`, `/node/{id}`, `/node/{id}/stats`,
//! `/placement/{hash}`, `/schedule`, `/scheduler/config`, `/object/*`, `/replica/*`,
//! `/health`, `/ready`, `/system/info`, the data-availability routes `/da/*` in `da.rs` and
//! the journal's `/da/metrics`, `/da/routing` and `/fallback/*` in `fallback.rs`) and
//! drover's `/repair`, over [`crate::placement::PlacementService`] and
//! [`crate::journal::Publisher`].
//!
//! It translates only: the contract's bodies and defaults (`drover_api::placement`), and in
//! `error.rs` its error shape. Every rule is the service's or the core's. Where drover differs
//! from the original system, the difference is on purpose and documented in the README's
//! placement section: only UP nodes are placed and scheduled, `io_tolerance` filters, unknown
//! objects and nodes are 404s, a placement records its targets.

mod da;
mod error;
mod fallback;

pub use error::{PlacementApiError, Refusals};

use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::placement::{DEFAULT_RF, PlacedNode, PlacementError};
use crate::{AppState, auth};
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware;
use drover_api::placement as api;
use drover_core::ReplicaState;
use drover_core::scheduling::{Stats, Weights, Workload};
use drover_store::{DEFAULT_CAPACITY_GB, PlacementNode, StoredObject};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<T>, PlacementApiError>;

/// The shared extractors, refusing in this contract's error shape.
struct Body<T>(T);
struct Segment<T>(T);
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = PlacementApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(v) = ApiJson::from_request(req, state).await?;
        Ok(Body(v))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segment<T> {
    type Rejection = PlacementApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiPath(v) = ApiPath::from_request_parts(parts, state).await?;
        Ok(Segment(v))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = PlacementApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(v) = ApiQuery::from_request_parts(parts, state).await?;
        Ok(Params(v))
    }
}

/// The contract's routes with drover's key checks, which its own server does not have: when
/// keys are configured, what nodes send (registration, stats, replica marks) needs the agent
/// key, as the agents' routes do, and the clients' calls need the API key (reads too unless
/// `--public-reads`); `/health` and `/ready` stay open for load balancers. Without keys (the
/// default, on loopback only) every route is open, as in the contract.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let from_nodes = OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(report_stats))
        .routes(routes!(mark_missing))
        .routes(routes!(mark_healed))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(state.config.agent_key.clone()),
            auth::require_agent_key,
        ));
    let from_clients = OpenApiRouter::new()
        .routes(routes!(nodes))
        .routes(routes!(node))
        .routes(routes!(stats))
        .routes(routes!(placement))
        .routes(routes!(schedule))
        .routes(routes!(weights, set_weights))
        .routes(routes!(register_object))
        .routes(routes!(object))
        .routes(routes!(repair))
        .routes(routes!(system_info))
        .routes(routes!(da::post))
        .routes(routes!(da::head))
        .routes(routes!(da::blob))
        .routes(routes!(fallback::metrics))
        .routes(routes!(fallback::routing))
        .routes(routes!(fallback::status))
        .routes(routes!(fallback::pending))
        .routes(routes!(fallback::reconcile))
        .routes(routes!(crate::consistency::fallback_consistency))
        .route_layer(middleware::from_fn_with_state(
            auth::ApiKeyRule::of(&state.config),
            auth::require_api_key,
        ));
    let open = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready));
    from_nodes.merge(from_clients).merge(open)
}

fn ok() -> Json<api::Ok> {
    Json(api::Ok {
        ok: true,
        node_id: None,
    })
}

fn node_info(n: PlacementNode) -> api::NodeInfo {
    api::NodeInfo {
        id: n.id,
        zone: n.zone,
        addr: n.address,
        capacity_gb: n.capacity_gb,
        meta: n.meta,
        status: Some(n.status.as_str().to_string()),
        last_seen: Some(drover_core::time::format(&n.last_seen)),
    }
}

fn wire_stats(s: Stats) -> api::NodeStats {
    api::NodeStats {
        cpu_free: s.cpu_free,
        ram_free_mb: s.ram_free_mb,
        gpu_free: s.gpu_free,
        latency_ms: s.latency_ms,
        io_pressure: s.io_pressure,
    }
}

fn wire_weights(w: Weights) -> api::Weights {
    api::Weights {
        w_cpu: w.w_cpu,
        w_ram: w.w_ram,
        w_gpu: w.w_gpu,
        w_latency: w.w_latency,
        w_io: w.w_io,
    }
}

#[utoipa::path(post, path = "/register", tag = "placement", security(("agentKey" = []), ("orhestraKey" = [])), request_body = api::RegisterNode,
    responses((status = 200, description = "The node is registered (again)", body = api::Ok), Refusals))]
async fn register(
    State(app): State<AppState>,
    Body(body): Body<api::RegisterNode>,
) -> Answer<api::Ok> {
    let node = PlacedNode {
        id: body.id,
        zone: body.zone,
        address: body.addr,
        capacity_gb: body.capacity_gb.unwrap_or(DEFAULT_CAPACITY_GB),
        meta: body.meta.unwrap_or_default(),
    };
    app.placement.register(node, app.config.max_spots).await?;
    Ok(ok())
}

#[utoipa::path(get, path = "/nodes", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Every node", body = Vec<api::NodeInfo>), Refusals))]
async fn nodes(State(app): State<AppState>) -> Answer<Vec<api::NodeInfo>> {
    let nodes = app.placement.nodes().await?;
    Ok(Json(nodes.into_iter().map(node_info).collect()))
}

#[utoipa::path(get, path = "/node/{id}", tag = "placement", security(("apiKey" = [])), params(("id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "The node", body = api::NodeInfo), Refusals))]
async fn node(State(app): State<AppState>, Segment(id): Segment<String>) -> Answer<api::NodeInfo> {
    Ok(Json(node_info(app.placement.node(&id).await?)))
}

/// A node's stats; `found` is whether it reported any (an unknown node has none, as in the
/// contract).
#[utoipa::path(get, path = "/node/{id}/stats", tag = "placement", security(("apiKey" = [])), params(("id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "The node's last stats; `found` is false when it reported none (or is unknown)", body = api::NodeStatsAnswer), Refusals))]
async fn stats(
    State(app): State<AppState>,
    Segment(id): Segment<String>,
) -> Answer<api::NodeStatsAnswer> {
    let stats = match app.placement.node(&id).await {
        Ok(n) => n.stats,
        Err(PlacementError::NodeNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(api::NodeStatsAnswer {
        node_id: id,
        found: stats.is_some(),
        stats: stats.map(wire_stats),
    }))
}

#[utoipa::path(post, path = "/node/{id}/stats", tag = "placement", security(("agentKey" = []), ("orhestraKey" = [])), params(("id" = String, Path, description = "The node's id")), request_body = api::NodeStats,
    responses((status = 200, description = "The stats are recorded", body = api::Ok), Refusals))]
async fn report_stats(
    State(app): State<AppState>,
    Segment(id): Segment<String>,
    Body(body): Body<api::NodeStats>,
) -> Answer<api::Ok> {
    let stats = Stats {
        cpu_free: body.cpu_free,
        ram_free_mb: body.ram_free_mb,
        gpu_free: body.gpu_free,
        latency_ms: body.latency_ms,
        io_pressure: body.io_pressure,
    };
    app.placement.report_stats(&id, stats).await?;
    Ok(Json(api::Ok {
        ok: true,
        node_id: Some(id),
    }))
}

#[derive(Debug, Deserialize)]
struct PlacementQuery {
    rf: Option<usize>,
}

#[utoipa::path(get, path = "/placement/{hash}", tag = "placement", security(("apiKey" = [])),
    params(("hash" = String, Path, description = "The object's hash"), ("rf" = Option<u32>, Query, description = "How many replicas (default 3)")),
    responses((status = 200, description = "The nodes the object's replicas go to, in order", body = Vec<String>), Refusals))]
async fn placement(
    State(app): State<AppState>,
    Segment(hash): Segment<String>,
    Params(q): Params<PlacementQuery>,
) -> Answer<Vec<String>> {
    let rf = q.rf.unwrap_or(DEFAULT_RF as usize);
    Ok(Json(app.placement.place(&hash, rf).await?))
}

#[utoipa::path(post, path = "/schedule", tag = "placement", security(("apiKey" = [])), request_body = api::Workload,
    responses((status = 200, description = "The node the workload goes to", body = api::Scheduled), Refusals))]
async fn schedule(
    State(app): State<AppState>,
    Body(body): Body<api::Workload>,
) -> Answer<api::Scheduled> {
    let workload = Workload {
        cpu_req: body.cpu_req,
        ram_req_mb: body.ram_req_mb,
        gpu_req: body.gpu_req,
        max_latency_ms: body.max_latency_ms,
        io_tolerance: body.io_tolerance,
    };
    let node_id = app.placement.schedule(&workload).await?;
    Ok(Json(api::Scheduled { node_id }))
}

#[utoipa::path(get, path = "/scheduler/config", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "The scheduler's weights in force", body = api::Weights), Refusals))]
async fn weights(State(app): State<AppState>) -> Answer<api::Weights> {
    Ok(Json(wire_weights(app.placement.weights().await?)))
}

/// Weights left out take the original system's fill, not the defaults
/// (`Weights::CONFIG_FILL`), so that its clients configure the same scheduler here.
#[utoipa::path(post, path = "/scheduler/config", tag = "placement", security(("apiKey" = [])), request_body = api::SchedulerConfig,
    responses((status = 200, description = "The weights are set", body = api::ConfigUpdated), Refusals))]
async fn set_weights(
    State(app): State<AppState>,
    Body(body): Body<api::SchedulerConfig>,
) -> Answer<api::ConfigUpdated> {
    let fill = Weights::CONFIG_FILL;
    let weights = Weights {
        w_cpu: body.w_cpu.unwrap_or(fill.w_cpu),
        w_ram: body.w_ram.unwrap_or(fill.w_ram),
        w_gpu: body.w_gpu.unwrap_or(fill.w_gpu),
        w_latency: body.w_latency.unwrap_or(fill.w_latency),
        w_io: body.w_io.unwrap_or(fill.w_io),
    };
    let set = app.placement.set_weights(weights).await?;
    Ok(Json(api::ConfigUpdated {
        ok: true,
        message: "scheduler config updated".into(),
        config: wire_weights(set),
    }))
}

#[utoipa::path(post, path = "/object/register", tag = "placement", security(("apiKey" = [])), request_body = api::RegisterObject,
    responses((status = 200, description = "The object is registered and its replicas placed", body = api::Ok), Refusals))]
async fn register_object(
    State(app): State<AppState>,
    Body(body): Body<api::RegisterObject>,
) -> Answer<api::Ok> {
    let rf = body.rf.unwrap_or(DEFAULT_RF);
    app.placement
        .register_object(&body.hash, body.size, rf)
        .await?;
    Ok(ok())
}

#[utoipa::path(get, path = "/object/{hash}", tag = "placement", security(("apiKey" = [])), params(("hash" = String, Path, description = "The object's hash")),
    responses((status = 200, description = "The object and its replicas", body = api::ObjectInfo), Refusals))]
async fn object(
    State(app): State<AppState>,
    Segment(hash): Segment<String>,
) -> Answer<api::ObjectInfo> {
    let o = app.placement.object(&hash).await?;
    Ok(Json(api::ObjectInfo {
        replicas: nodes_in(&o, ReplicaState::Healthy),
        pending: nodes_in(&o, ReplicaState::Pending),
        missing: nodes_in(&o, ReplicaState::Missing),
        hash: o.hash,
        size: o.size,
        rf: o.rf,
    }))
}

#[utoipa::path(post, path = "/replica/mark_missing", tag = "placement", security(("agentKey" = []), ("orhestraKey" = [])), request_body = api::ReplicaChange,
    responses((status = 200, description = "The replica is marked lost", body = api::Ok), Refusals))]
async fn mark_missing(
    State(app): State<AppState>,
    Body(body): Body<api::ReplicaChange>,
) -> Answer<api::Ok> {
    app.placement
        .mark_replica(&body.hash, &body.node_id, ReplicaState::Missing)
        .await?;
    Ok(ok())
}

#[utoipa::path(post, path = "/replica/mark_healed", tag = "placement", security(("agentKey" = []), ("orhestraKey" = [])), request_body = api::ReplicaChange,
    responses((status = 200, description = "The replica is marked good", body = api::Ok), Refusals))]
async fn mark_healed(
    State(app): State<AppState>,
    Body(body): Body<api::ReplicaChange>,
) -> Answer<api::Ok> {
    app.placement
        .mark_replica(&body.hash, &body.node_id, ReplicaState::Healthy)
        .await?;
    Ok(ok())
}

/// The nodes whose replica record of `o` is in `state`, in the order the records were made.
fn nodes_in(o: &StoredObject, state: ReplicaState) -> Vec<String> {
    (o.replicas.iter())
        .filter(|(_, s)| *s == state)
        .map(|(id, _)| id.clone())
        .collect()
}

#[utoipa::path(get, path = "/repair", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Objects under their replication factor", body = api::RepairReport), Refusals))]
async fn repair(State(app): State<AppState>) -> Answer<api::RepairReport> {
    let under_replicated: Vec<api::UnderReplicated> = (app.placement.under_replicated().await?)
        .into_iter()
        .map(|s| api::UnderReplicated {
            pending: nodes_in(&s.object, ReplicaState::Pending),
            hash: s.object.hash,
            rf: s.object.rf,
            healthy: s.healthy,
        })
        .collect();
    Ok(Json(api::RepairReport {
        pending_repairs: under_replicated.iter().map(|u| u.pending.len()).sum(),
        under_replicated,
    }))
}

/// The journal is published nowhere (the contract's data-availability layer): the `da_*`
/// fields say so rather than claim one.
const NO_JOURNAL: &str = "not configured";

#[utoipa::path(get, path = "/health", tag = "placement",
    responses(
        (status = 200, description = "The store answers", body = api::Health),
        (status = 503, description = "The store does not answer", body = api::Health)))]
async fn health(State(app): State<AppState>) -> (StatusCode, Json<api::Health>) {
    let journal = fallback::journal_words(&app);
    let (code, status) = match app.store.ops.health().await {
        Ok(()) => (StatusCode::OK, "healthy".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {e}")),
    };
    let (da_available, da_health, status) = match journal {
        // The original's words: "healthy (routing: primary)".
        Some((available, health, routing, _)) => {
            (available, health, format!("{status} (routing: {routing})"))
        }
        None => (false, NO_JOURNAL.into(), status),
    };
    (
        code,
        Json(api::Health {
            status,
            da_available,
            da_health,
        }),
    )
}

/// 200 once the store is open, migrated and answering; 503 while it is not.
#[utoipa::path(get, path = "/ready", tag = "placement",
    responses((status = 200, description = "The store is open and answering"), (status = 503, description = "The store is not answering yet")))]
async fn ready(State(app): State<AppState>) -> StatusCode {
    match app.store.ops.health().await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[utoipa::path(get, path = "/system/info", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "The server's version, nodes, journal and repair", body = api::SystemInfo), Refusals))]
async fn system_info(State(app): State<AppState>) -> Answer<api::SystemInfo> {
    let node_count = app.placement.nodes().await?.len();
    let standing = app.placement.under_replicated().await?;
    let pending_repairs = (standing.iter())
        .map(|s| nodes_in(&s.object, ReplicaState::Pending).len())
        .sum();
    let (da_status, routing_state, fallback_active) = match fallback::journal_words(&app) {
        Some((_, health, routing, active)) => (health, routing, active),
        None => (NO_JOURNAL.into(), "none".into(), false),
    };
    Ok(Json(api::SystemInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        node_count,
        da_status,
        routing_state,
        fallback_active,
        repair: api::RepairSummary {
            under_replicated: standing.len(),
            pending_repairs,
        },
    }))
}
