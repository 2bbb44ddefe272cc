//! The fuzz targets' bodies: what drover does with bytes a client controls, and what must hold
//! for any input (no panic, no answer a server error would be).
//!
//! The same functions run under libFuzzer (`fuzz_targets/`, `scripts/fuzz`) and, through
//! `crates/drover-server/tests/fuzz_corpus.rs`, over every checked-in corpus file in
//! `cargo test`, so the corpus keeps protecting without cargo-fuzz or a nightly toolchain.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use drover_core::run::{RunSpec, TaskContext};
use drover_core::sweep::Sweep;
use drover_server::ServerConfig;
use drover_server::extract::parse_json;
use drover_server::surfaces::session_runners::session_of;
use drover_server::translate;
use serde_json::{Map, Value, json};

/// Most tasks a fuzzed sweep may expand to: enough to reach every branch of the sizing rules,
/// small enough that an accepted sweep is cheap to walk.
const MAX_TASKS: u64 = 10_000;

/// A job request as `POST /api/v1/jobs` reads it: parsed, split into settings and a sweep
/// spec, validated and sized by `Sweep::new`, then a few tasks built from it.
pub fn sweep_spec(data: &[u8]) {
    let Ok(req) = parse_json::<drover_api::CreateJobRequest>(data) else {
        return;
    };
    let config = ServerConfig {
        max_tasks_per_job: MAX_TASKS,
        ..ServerConfig::default()
    };
    let (_, spec) = match translate::job_request(req, &config) {
        Ok(parts) => parts,
        Err(e) => return assert_client_error(&e, data),
    };
    let sweep = match Sweep::new(spec, MAX_TASKS) {
        Ok(s) => s,
        Err(e) => return assert_client_error(&drover_server::ApiError::from(e), data),
    };
    let n = sweep.len();
    assert!(
        n <= MAX_TASKS,
        "a sweep of {n} tasks passed a cap of {MAX_TASKS}"
    );
    for i in [0, n / 2, n.saturating_sub(1)] {
        if i < n {
            let _ = sweep.payload(i);
        }
    }
}

/// A job's run spec as an agent meets it: parsed from JSON, compiled, checked against a
/// payload's fields and rendered for one task.
pub fn command_template(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<RunSpec>(data) else {
        return;
    };
    let Ok(compiled) = spec.compile() else {
        return;
    };
    let payload: Map<String, Value> = match json!({"x": 1, "y": 2.5, "name": "a b", "flag": true}) {
        Value::Object(m) => m,
        _ => unreachable!("a literal object"),
    };
    let known = |name: &str| payload.contains_key(name);
    let _ = compiled.check_names(known);
    let ctx = TaskContext {
        task_id: "task-1",
        job_id: "job-1",
        attempt: 1,
        work_dir: "/tmp/w",
    };
    // A payload missing a named field is refused with its name; nothing else may go wrong.
    let _ = compiled.render(&payload, &ctx);
}

/// Every request body of every surface: the native API's request types through the one JSON
/// extractor, and the session-runners surface's session lookup (body, then header).
pub fn request_body(data: &[u8]) {
    fn parse<T: serde::de::DeserializeOwned>(data: &[u8]) {
        if let Err(e) = parse_json::<T>(data) {
            assert_client_error(&e, data);
        }
    }
    parse::<drover_api::CreateJobRequest>(data);
    parse::<drover_api::HelloRequest>(data);
    parse::<drover_api::HeartbeatRequest>(data);
    parse::<drover_api::ClaimRequest>(data);
    parse::<drover_api::CompleteRequest>(data);
    parse::<drover_api::FailRequest>(data);

    let body = Bytes::copy_from_slice(data);
    let _ = session_of(&HeaderMap::new(), &body);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        headers.insert("x-session-id", v);
        let _ = session_of(&headers, &Bytes::new());
    }
}

/// A refusal of client input must be a 4xx: a 5xx would tell the client to retry what can never
/// succeed, and page an operator over a typo.
fn assert_client_error(e: &drover_server::ApiError, data: &[u8]) {
    let (status, code) = e.status_and_code();
    assert!(
        status.is_client_error(),
        "{status} {code} ({e}) for input {:?}",
        String::from_utf8_lossy(data)
    );
}
