//! The placement contract's data-availability route, `POST /da/post`: a blob given as hex is
//! kept in this server's file sink (`drover_sinks::FileSink`, `--da-dir`), which answers with
//! the blob's commitment (the hex of its SHA3-256) and its height.
//!
//! Its bodies are the contract's for `/da/*`, `{"success": ..., "error": ...}`, not the
//! `{"error"}` of the contract's other routes, so this route answers its errors itself, with
//! drover's machine-readable `code` beside the message. It decides nothing: the sink keeps the
//! blob.

use crate::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use drover_api::placement::{DaPost, DaPosted};

type Answer = (StatusCode, Json<DaPosted>);

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
    let Some(sink) = app.da.get().cloned() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "DA_DISABLED",
            "this server keeps no blobs: start it with --da-dir DIR (DROVER_DA_DIR)".into(),
        );
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
