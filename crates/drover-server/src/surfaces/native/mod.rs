//! The native API, a superset of the batch-coordinator contract: `/api/v1/*` for clients
//! (`public.rs`; the event journal in `journal.rs`), `/internal/v1/*` for agents
//! (`internal.rs`), `/metrics`. Its wire types are
//! `drover_api`'s, `translate.rs` maps them to domain types and back, and `error.rs` is its one
//! mapping of errors to status and body.
//!
//! Handlers parse, read the clock once, make one store (or service) call and translate the
//! answer; no SQL and no lifecycle rule lives here.

pub mod error;
pub mod internal;
pub mod journal;
pub mod public;
pub mod translate;

use crate::{AppState, auth};
use axum::middleware;
use std::sync::Arc;

/// The native routes with their key checks: the agent key on `/internal/v1` (and each spot's
/// own secret, checked by the handlers once they know the spot); the API key on `/api/v1` and
/// `/metrics` (reads too unless `--public-reads`), except health, which load balancers call
/// without one, and the job read, which agents make with their own credentials. The journal
/// needs the API key for reads even under `--public-reads` (see `journal::routes`).
pub fn routes(state: &AppState) -> utoipa_axum::router::OpenApiRouter<AppState> {
    let agent_key = Arc::new(state.config.agent_key.clone());
    let internal = internal::routes().route_layer(middleware::from_fn_with_state(
        agent_key,
        auth::require_agent_key,
    ));
    let public = public::routes().route_layer(middleware::from_fn_with_state(
        auth::ApiKeyRule::of(&state.config),
        auth::require_api_key,
    ));
    let journal = journal::routes().route_layer(middleware::from_fn_with_state(
        Arc::new(auth::ApiKeyRule {
            key: state.config.api_key.clone(),
            reads: true,
        }),
        auth::require_api_key,
    ));
    let job_read = public::job_read_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authorise_job_read,
    ));
    public
        .merge(journal)
        .merge(job_read)
        .merge(public::open_routes())
        .merge(internal)
}
