//! The OpenAPI document, `GET /api/v1/openapi.json`: each listener's lists exactly the routes
//! that listener serves, with the keys they need and schemas that resolve; nothing is mounted
//! beside it; and a live server answers schemathesis, fuzzing from that document, with no
//! server error and no body outside its schema.

use crate::helpers::{TestApp, spawn};
use crate::runners::python_runners;
use drover_server::journal::{JournalConfig, SinkSpec};
use drover_server::{ListenerConfig, Surface};
use drover_store::Page;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const API_KEY: &str = "openapi-api-key";
const AGENT_KEY: &str = "openapi-agent-key";
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A server with both keys, serving the main surfaces on one listener and the metrics surface
/// on another.
async fn app_with_metrics_listener() -> TestApp {
    spawn(
        |c| {
            c.server.api_key = Some(API_KEY.into());
            c.server.agent_key = Some(AGENT_KEY.into());
            c.listeners.push(ListenerConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                surfaces: vec![Surface::Metrics],
            });
        },
        true,
    )
    .await
}

async fn document(app: &TestApp, base: &str) -> Value {
    let response = app
        .http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

/// The (method, path template) pairs a document lists.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch", "options", "head"] {
            if item.get(method).is_some() {
                ops.insert((method.to_string(), path.clone()));
            }
        }
    }
    ops
}

fn paths(doc: &Value) -> BTreeSet<String> {
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

/// A concrete path for a template: every parameter a plausible value.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(if &rest[open + 1..close] == "height" {
            "1"
        } else {
            "x"
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Sends `method path` with both keys; the status and the JSON body (null when not JSON).
async fn call(app: &TestApp, base: &str, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let response = app
        .http
        .request(method, format!("{base}{}", concrete(path)))
        .bearer_auth(API_KEY)
        .header("x-agent-key", AGENT_KEY)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The router's own answer for a path it has no route for.
fn unrouted(status: u16, body: &Value) -> bool {
    status == 404
        && body["code"] == "NOT_FOUND"
        && body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no route for"))
}

#[tokio::test]
async fn every_documented_route_is_served_and_no_other_method_on_its_paths() {
    let app = app_with_metrics_listener().await;
    assert_eq!(app.addrs.len(), 2);
    for (base, surfaces) in &app.addrs {
        let doc = document(&app, base).await;
        for (method, path) in operations(&doc) {
            let (status, body) = call(&app, base, &method, &path).await;
            assert!(
                !unrouted(status, &body) && status != 405,
                "{surfaces:?}: {method} {path} is documented but not served: {status} {body}"
            );
        }
        for path in paths(&doc) {
            let item = &doc["paths"][&path];
            for method in METHODS.iter().filter(|m| item.get(**m).is_none()) {
                let (status, body) = call(&app, base, method, &path).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (405, Some("METHOD_NOT_ALLOWED")),
                    "{surfaces:?}: {method} {path} is served but not documented: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn each_listener_documents_the_surfaces_it_serves() {
    let app = app_with_metrics_listener().await;
    let main = document(&app, &app.addrs[0].0).await;
    assert_eq!(main["openapi"], "3.1.0");
    assert_eq!(main["info"]["title"], "drover");
    let main_paths = paths(&main);
    for path in [
        "/api/v1/openapi.json",
        "/api/v1/jobs",
        "/api/v1/journal",
        "/internal/v1/tasks/{id}/complete",
        "/metrics",
        "/api/runner/provision",
        "/register",
        "/placement/{hash}",
        "/da/blob/{height}",
        "/fallback/reconcile",
        "/health",
        "/api/nodes",
        "/api/jobs/{id}/status",
        "/api/cluster/status",
    ] {
        assert!(
            main_paths.contains(path),
            "{path} is missing: {main_paths:?}"
        );
    }
    // The metrics listener serves its own `/health` and `/metrics`, and its document says so.
    let metrics = document(&app, &app.addrs[1].0).await;
    assert_eq!(
        paths(&metrics),
        BTreeSet::from(["/api/v1/openapi.json", "/health", "/metrics"].map(String::from))
    );
    assert_eq!(
        metrics["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/metrics.Health"
    );
}

#[tokio::test]
async fn the_document_names_the_keys_each_route_needs() {
    let app = app_with_metrics_listener().await;
    let doc = document(&app, &app.base).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["type"], "http");
    assert_eq!(schemes["apiKey"]["scheme"], "bearer");
    for (name, header) in [
        ("agentKey", "X-Agent-Key"),
        ("orhestraKey", "X-Orhestra-Key"),
        ("spotSecret", "X-Spot-Secret"),
        ("runnerToken", "X-Runner-Token"),
    ] {
        assert_eq!(schemes[name]["type"], "apiKey", "{name}");
        assert_eq!(schemes[name]["in"], "header", "{name}");
        assert_eq!(schemes[name]["name"], header, "{name}");
    }
    let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("post", "/api/v1/jobs"),
        serde_json::json!([{"apiKey": []}])
    );
    assert_eq!(
        security("post", "/internal/v1/tasks/claim"),
        serde_json::json!([{"agentKey": []}, {"orhestraKey": []}])
    );
    assert_eq!(
        security("post", "/api/runner/heartbeat"),
        serde_json::json!([{"apiKey": []}, {"runnerToken": []}])
    );
    // Load balancers probe health without keys.
    assert_eq!(security("get", "/api/v1/health"), Value::Null);
    assert_eq!(security("get", "/health"), Value::Null);
    // And the document itself is open, as health is.
    let response = reqwest::get(app.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_schema_the_document_refers_to_is_in_it() {
    let app = app_with_metrics_listener().await;
    for (base, _) in &app.addrs {
        let doc = document(&app, base).await;
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(!found.is_empty());
        for (at, r) in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{at}: {r} is not a schema of the document"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{at}: {r} is not in the document"
            );
        }
        // Each surface's error body is a schema of its own.
        if base == &app.base {
            for name in [
                "ErrorBody",
                "placement.ErrorBody",
                "priority.ErrorBody",
                "session_runners.ContractError",
                "placement.DaPosted",
            ] {
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{name} is missing"
                );
            }
        }
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `code` has `token`, not as the end of a longer name (`OpenApiRouter::new()` is not
/// `Router::new()`).
fn uses(code: &str, token: &str) -> bool {
    code.match_indices(token).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !token.starts_with(char::is_alphanumeric)
            || !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The document cannot miss a route mounted through `routes!`; what could bypass it is a route
/// mounted with axum's own routing beside it, so no source of the server may use it.
#[test]
fn routes_are_mounted_only_with_their_documentation() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "{files:?}");
    // The dashboard's HTML pages are for browsers, not part of the API the document describes
    // (docs/dashboard.md lists them); everything else must go through `routes!`.
    let dashboard = src.join("ui");
    files.retain(|f| !f.starts_with(&dashboard));
    let forbidden = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".fallback_service(",
        "axum::routing",
        "routing::{",
        "MethodRouter",
        "Router::new()",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for token in forbidden.iter().filter(|t| uses(code, t)) {
                found.push(format!("{}:{}: {token}", file.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "routes mounted outside `OpenApiRouter::routes(routes!(...))`, so missing from the \
         OpenAPI document:\n{}",
        found.join("\n")
    );
}

/// What schemathesis holds the server to: no 5xx, and every answer's status, content type and
/// body as the document says.
const CHECKS: &str = "not_a_server_error,response_schema_conformance,content_type_conformance,\
                      status_code_conformance";

/// A setting of the schemathesis run from the environment, or its default: in CI a bounded run
/// (about a minute here) with a fixed seed, so a failure is the same failure when run again;
/// by hand, more examples, another seed or further arguments (`DROVER_SCHEMATHESIS_ARGS`, e.g.
/// `--include-path-regex /internal`) to look further.
fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The test virtualenv's schemathesis CLI (`scripts/test` installs it).
fn schemathesis() -> PathBuf {
    crate::helpers::venv_python().with_file_name("st")
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[cfg_attr(
    missing_schemathesis,
    ignore = "schemathesis is not in the test virtualenv (scripts/test installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let st = schemathesis();
    assert!(
        st.is_file(),
        "{} is missing: scripts/test installs schemathesis in the test virtualenv",
        st.display()
    );
    // Every part a route can need is there, so that a 5xx is a fault and not a server
    // configured without a runner driver, a blob directory or a journal sink.
    let work = tempfile::tempdir().unwrap();
    let (da, journal) = (work.path().join("da"), work.path().join("journal"));
    let runners = python_runners();
    let app = spawn(
        move |c| {
            c.runner_driver = Some(runners);
            // Each runner is a process: a few are enough to provision, refuse (429) and stop.
            c.server.runners.max_runners = Some(4);
            c.server.api_key = Some(API_KEY.into());
            c.server.agent_key = Some(AGENT_KEY.into());
            c.server.da_dir = Some(da);
            c.server.journal = Some(JournalConfig::to(SinkSpec::File(journal)));
        },
        true,
    )
    .await;
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis_hooks.py");
    let url = app.url("/api/v1/openapi.json");
    let cwd = work.path().to_path_buf();
    let extra = setting("DROVER_SCHEMATHESIS_ARGS", "");
    let (examples, seed) = (
        setting("DROVER_SCHEMATHESIS_EXAMPLES", "30"),
        setting("DROVER_SCHEMATHESIS_SEED", "1"),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&st)
            .current_dir(cwd)
            .env("SCHEMATHESIS_HOOKS", hooks)
            .args(["run", &url])
            .args(["--checks", CHECKS])
            .args([
                "--max-examples",
                &examples,
                "--seed",
                &seed,
                "--workers",
                "2",
            ])
            .args(["--generation-with-security-parameters", "false"])
            .args(["--generation-database", "none", "--request-timeout", "10"])
            .args(["--suppress-health-check", "all", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {API_KEY}")])
            .args(["-H", &format!("X-Agent-Key: {AGENT_KEY}")])
            .args(extra.split_whitespace())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running schemathesis")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stop_runners(&app).await;
    assert!(output.status.success(), "schemathesis failed:\n{text}");
    eprintln!("{text}");
    app.finish().await;
}

/// Stops every runner the run left: a runner outlives the server that started it (the store
/// keeps it for the next start), so the test stops its processes itself.
async fn stop_runners(app: &TestApp) {
    let runners = &app.state.runners;
    let mut sessions = Vec::new();
    let mut cursor = None;
    loop {
        let page = runners.list(Page { cursor, limit: 100 }).await.unwrap();
        sessions.extend(page.items.into_iter().map(|r| r.session_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for session in sessions {
        runners.deprovision(&session).await.unwrap();
    }
}
