//! The placement contract's data-availability route, `POST /da/post`, and drover's two reads
//! beside it, `GET /da/blob/{height}` and `GET /da/head`, over this server's file sink
//! (`drover_sinks::FileSink`, `--da-dir`). A post given as hex is kept and answered with the
//! blob's commitment (the hex of its SHA3-256) and its height; the reads are what another
//! drover's `drover_sinks::HttpSink` reads back through.
//!
//! Its bodies are the contract's for `/da/*`, `{"success": ..., "error": ...}`, not the
//! `{"error"}` of the contract's other routes, so these routes answer their errors themselves,
//! with drover's machine-readable `code` beside the message. They decide nothing: the sink
//! keeps the blobs.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiPath;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_api::placement::{DaPost, DaPosted};
use drover_sinks::FileSink;
use std::sync::Arc;

type Answer = (StatusCode, Json<DaPosted>);

/// `GET /da/head`'s answer: the highest height kept (0 when none).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = placement::DaHead)]
pub(super) struct Head {
    height: u64,
}

fn refused(status: StatusCode, code: &str, error: String) -> Answer {
    let body = DaPosted {
        success: false,
        commitment: None,
        height: None,
        error: Some(error),
        code: Some(code.into()),
    };
    (status, Json(body))
}

/// This server's sink, or the refusal that says how to have one.
fn sink_of(app: &AppState) -> Result<Arc<FileSink>, Answer> {
    app.da.get().cloned().ok_or_else(|| {
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "DA_DISABLED",
            "this server keeps no blobs: start it with --da-dir DIR (DROVER_DA_DIR)".into(),
        )
    })
}

#[utoipa::path(post, path = "/da/post", tag = "placement", security(("apiKey" = [])), request_body = DaPost,
    responses((status = 200, description = "The blob is kept: its commitment and height", body = DaPosted),
        (status = 400, description = "Not a JSON body of hex (`INVALID_JSON`, `INVALID_HEX`) or a height that is no whole number (`INVALID_HEIGHT`)", body = DaPosted),
        (status = 401, description = "A key is missing or wrong", body = drover_api::ErrorBody),
        (status = 503, description = "This server keeps no blobs (`DA_DISABLED`: start it with `--da-dir`) or its sink fails (`DA_UNAVAILABLE`)", body = DaPosted)))]
pub(super) async fn post(State(app): State<AppState>, body: Bytes) -> Answer {
    let request: DaPost = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("the body must be {{\"data_hex\": \"<hex>\"}}: {e}"),
            );
        }
    };
    let data = match hex::decode(request.data_hex.trim()) {
        Ok(d) => d,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "INVALID_HEX",
                format!("invalid hex data: {e}"),
            );
        }
    };
    let sink = match sink_of(&app) {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let posted = tokio::task::spawn_blocking(move || sink.post(&data)).await;
    match posted {
        Ok(Ok(p)) => (
            StatusCode::OK,
            Json(DaPosted {
                success: true,
                commitment: Some(p.commitment),
                height: Some(p.height),
                error: None,
                code: None,
            }),
        ),
        Ok(Err(e)) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "DA_UNAVAILABLE",
            e.to_string(),
        ),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("the post did not finish: {e}"),
        ),
    }
}

/// `GET /da/head`: `{"height": n}`, the highest height kept.
#[utoipa::path(get, path = "/da/head", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "The highest height kept (0 when none)", body = Head),
        (status = 400, description = "Not a JSON body of hex (`INVALID_JSON`, `INVALID_HEX`) or a height that is no whole number (`INVALID_HEIGHT`)", body = DaPosted),
        (status = 401, description = "A key is missing or wrong", body = drover_api::ErrorBody),
        (status = 503, description = "This server keeps no blobs (`DA_DISABLED`: start it with `--da-dir`) or its sink fails (`DA_UNAVAILABLE`)", body = DaPosted)))]
pub(super) async fn head(State(app): State<AppState>) -> Response {
    match sink_of(&app) {
        // The sink's height is an atomic read, nothing that blocks.
        Ok(sink) => Json(Head {
            height: sink.height(),
        })
        .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /da/blob/{height}`: the blob's raw bytes (`application/octet-stream`), or 404
/// `BLOB_NOT_FOUND` when there is none at that height (a client tells that from a server
/// without this route, whose 404 has no such code).
#[utoipa::path(get, path = "/da/blob/{height}", tag = "placement", security(("apiKey" = [])),
    params(("height" = u64, Path, minimum = 1, description = "The blob's height")),
    responses((status = 200, description = "The blob's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No blob at that height (`BLOB_NOT_FOUND`)", body = DaPosted),
        (status = 400, description = "Not a JSON body of hex (`INVALID_JSON`, `INVALID_HEX`) or a height that is no whole number (`INVALID_HEIGHT`)", body = DaPosted),
        (status = 401, description = "A key is missing or wrong", body = drover_api::ErrorBody),
        (status = 503, description = "This server keeps no blobs (`DA_DISABLED`: start it with `--da-dir`) or its sink fails (`DA_UNAVAILABLE`)", body = DaPosted)))]
pub(super) async fn blob(
    State(app): State<AppState>,
    height: Result<ApiPath<String>, ApiError>,
) -> Response {
    // A segment that is not UTF-8 is refused as any other height that is no number, in this
    // route's shape (axum's own refusal is plain text).
    let height = height.map(|ApiPath(h)| h).unwrap_or_default();
    let Ok(height) = height.parse::<u64>() else {
        return refused(
            StatusCode::BAD_REQUEST,
            "INVALID_HEIGHT",
            format!("the height must be a whole number from 1, not {height:?}"),
        )
        .into_response();
    };
    let sink = match sink_of(&app) {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    match tokio::task::spawn_blocking(move || sink.get(height)).await {
        Ok(Ok(Some(data))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
        }
        Ok(Ok(None)) => refused(
            StatusCode::NOT_FOUND,
            "BLOB_NOT_FOUND",
            format!("no blob at height {height}"),
        )
        .into_response(),
        Ok(Err(e)) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "DA_UNAVAILABLE",
            e.to_string(),
        )
        .into_response(),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("the read did not finish: {e}"),
        )
        .into_response(),
    }
}
