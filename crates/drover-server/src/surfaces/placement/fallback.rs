//! The placement contract's routes about publishing the journal: `GET /da/metrics`,
//! `GET /da/routing`, `GET /fallback/status`, `GET /fallback/pending` and
//! `POST /fallback/reconcile`, over [`crate::journal::Publisher`], and the journal's words for
//! `/health` and `/system/info`.
//!
//! They translate the publisher's routing snapshot, counters and pending blobs into the
//! contract's bodies; they decide nothing. A server that publishes its journal nowhere
//! (`--journal-sink` unset) answers with the routing word `none`, every counter 0, and
//! refuses a reconciliation with 503 `JOURNAL_NOT_PUBLISHED`.

use super::{Answer, PlacementApiError, Refusals};
use crate::AppState;
use crate::error::ApiError;
use crate::journal::Publisher;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::placement as api;
use drover_core::sink_routing::{RoutingState, SinkRole, Snapshot};
use std::sync::Arc;

/// The routing word of a server that publishes nowhere.
const NOT_PUBLISHED: &str = "none";

fn publisher(app: &AppState) -> Option<&Arc<Publisher>> {
    app.journal.as_ref()
}

/// The contract's `da_health`/`da_status` words: `Ok(<state>)`, as the original prints its
/// health result, or `Err(unavailable)` when no sink takes blobs.
pub(super) fn da_health(snapshot: &Snapshot) -> String {
    match snapshot.state {
        RoutingState::Unavailable => "Err(unavailable)".into(),
        state => format!("Ok({state:?})"),
    }
}

/// What `/health` and `/system/info` say of the journal: whether a sink takes blobs, the
/// health word and the routing word (`None` when the journal is published nowhere).
pub(super) fn journal_words(app: &AppState) -> Option<(bool, String, String, bool)> {
    let snapshot = publisher(app)?.snapshot();
    Some((
        snapshot.target.role().is_some(),
        da_health(&snapshot),
        snapshot.state.current_state().to_string(),
        snapshot.fallback_active,
    ))
}

#[utoipa::path(get, path = "/da/metrics", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Counters of the journal's sink in use", body = api::DaMetrics), Refusals))]
pub(super) async fn metrics(State(app): State<AppState>) -> Json<api::DaMetrics> {
    let Some(publisher) = publisher(&app) else {
        return Json(api::DaMetrics::default());
    };
    let c = publisher.counts();
    Json(api::DaMetrics {
        available: publisher.snapshot().target.role().is_some(),
        post_count: c.posts,
        get_count: c.gets,
        error_count: c.errors,
        health_check_count: c.health_checks,
        retry_count: c.retries,
        avg_post_latency_us: c.avg_post_micros,
        avg_get_latency_us: c.avg_get_micros,
    })
}

#[utoipa::path(get, path = "/da/routing", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Where the journal's blobs go and each sink's health", body = api::DaRouting), Refusals))]
pub(super) async fn routing(State(app): State<AppState>) -> Json<api::DaRouting> {
    let Some(publisher) = publisher(&app) else {
        return Json(api::DaRouting {
            current_state: NOT_PUBLISHED.into(),
            primary_healthy: false,
            secondary_healthy: false,
            emergency_healthy: false,
            fallback_active: false,
            pending_reconcile: 0,
        });
    };
    let s = publisher.snapshot();
    let healthy = |role| s.sink(role).configured && s.sink(role).healthy;
    Json(api::DaRouting {
        current_state: s.state.current_state().into(),
        primary_healthy: healthy(SinkRole::Primary),
        secondary_healthy: healthy(SinkRole::Secondary),
        emergency_healthy: healthy(SinkRole::Emergency),
        fallback_active: s.fallback_active,
        pending_reconcile: s.pending_reconcile,
    })
}

#[utoipa::path(get, path = "/fallback/status", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Whether the journal falls back from its primary sink, and why", body = api::FallbackStatus), Refusals))]
pub(super) async fn status(State(app): State<AppState>) -> Json<api::FallbackStatus> {
    let Some(publisher) = publisher(&app) else {
        return Json(api::FallbackStatus {
            current_status: RoutingState::Unavailable.current_status().into(),
            fallback_active: false,
            fallback_reason: Some(
                "the journal is published nowhere: start the server with --journal-sink".into(),
            ),
            pending_reconcile_count: 0,
            last_fallback_at: None,
        });
    };
    let s = publisher.snapshot();
    Json(api::FallbackStatus {
        current_status: s.state.current_status().into(),
        fallback_active: s.fallback_active,
        fallback_reason: s.fallback_reason.clone(),
        pending_reconcile_count: s.pending_reconcile,
        last_fallback_at: s.last_fallback_at_ms(),
    })
}

#[utoipa::path(get, path = "/fallback/pending", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "Blobs on a fallback sink waiting to be copied to the primary", body = Vec<api::PendingBlob>), Refusals))]
pub(super) async fn pending(State(app): State<AppState>) -> Answer<Vec<api::PendingBlob>> {
    let blobs = app
        .store
        .journal
        .pending_blobs(u32::MAX)
        .await
        .map_err(|e| PlacementApiError::Request(ApiError::from(e)))?;
    Ok(Json(
        blobs
            .into_iter()
            .map(|b| api::PendingBlob {
                blob_id: b.blob.commitment,
                source_da: b.blob.sink.as_str().into(),
                target_da: SinkRole::Primary.as_str().into(),
                stored_at: b.blob.posted_at.timestamp_millis(),
                retry_count: b.retry_count,
                last_error: b.last_error,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/fallback/reconcile", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "One pass over the pending blobs", body = api::ReconcileReport),
        (status = 500, description = "The pass failed without reconciling anything (`RECONCILIATION_FAILED`)", body = api::ReconcileFailed),
        Refusals))]
pub(super) async fn reconcile(State(app): State<AppState>) -> Response {
    let Some(publisher) = publisher(&app) else {
        let refused = ApiError::Unavailable {
            code: "JOURNAL_NOT_PUBLISHED",
            message: "the journal is published nowhere, so nothing waits for reconciliation: \
                      start the server with --journal-sink"
                .into(),
        };
        return PlacementApiError::Request(refused).into_response();
    };
    let done = match publisher.reconcile().await {
        Ok(done) => done,
        Err(e) => {
            return PlacementApiError::Request(ApiError::Unavailable {
                code: "STORE_UNAVAILABLE",
                message: e.to_string(),
            })
            .into_response();
        }
    };
    let report = api::ReconcileReport {
        success: done.failed == 0,
        blobs_processed: done.processed,
        blobs_reconciled: done.reconciled,
        blobs_failed: done.failed,
        duration_ms: done.duration.as_millis() as u64,
        errors: done.errors,
    };
    // The original answers 500 when a pass failed without reconciling anything.
    if report.blobs_reconciled == 0 && !report.errors.is_empty() {
        let failed = api::ReconcileFailed {
            error: "reconciliation_failed".into(),
            message: report.errors[0].clone(),
            report,
            code: Some("RECONCILIATION_FAILED".into()),
        };
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(failed)).into_response();
    }
    Json(report).into_response()
}
