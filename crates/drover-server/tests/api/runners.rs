//! The session-runners contract (`/api/runner/*`) and `GET /api/v1/runners`, with the process
//! driver and real runner processes: provision, re-provision, deprovision, heartbeats, the
//! inactivity reaper, reuse mode, the limit, and the contract's errors.
//!
//! The same lifecycle runs on Docker in `crates/drover/tests/process/runners_docker.rs`.

use crate::helpers::{TestApp, spawn_app, spawn_app_with_runners};
use drover_runners::process::ProcessConfig;
use drover_server::{DriverConfig, ServerConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUNNER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../drover-runners/tests/fixtures/http_runner.py"
);

fn has_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The process driver running `python3 http_runner.py` per session. Tests using it are ignored
/// where python3 was missing at build time (`build/parts.rs`); here a missing one fails them.
pub fn python_runners() -> DriverConfig {
    assert!(has_python(), "python3 is not installed");
    let mut config = ProcessConfig::new(vec!["python3".into(), RUNNER.into()]);
    config.stop_grace = Duration::from_secs(2);
    DriverConfig::Process(config)
}

/// A server whose runners are `python3 http_runner.py` processes.
async fn app_with(configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    spawn_app_with_runners(python_runners(), configure).await
}

async fn post(
    app: &TestApp,
    path: &str,
    session: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.post(app.url(path));
    if let Some(s) = session {
        req = req.header("X-Session-Id", s);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GET / on a runner's endpoint, retried while it starts.
async fn answer(endpoint: &str) -> Option<String> {
    let port: u16 = endpoint.rsplit(':').next()?.parse().ok()?;
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
            let mut text = String::new();
            if s.read_to_string(&mut text).await.is_ok() && !text.is_empty() {
                return Some(text);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn alive(pid: &str) -> bool {
    pid.parse().is_ok_and(drover_runners::process::alive)
}

async fn runners(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/api/v1/runners").await;
    assert_eq!(status, 200, "{body}");
    body["runners"].as_array().unwrap().clone()
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn provision_starts_one_runner_per_session() {
    let app = app_with(|_| {}).await;
    let (status, first) = post(&app, "/api/runner/provision", Some("session-a"), None).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["message"], "Runner provisioned successfully.");
    assert_eq!(first["sessionId"], "session-a");
    let endpoint = first["endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with("http://localhost:"), "{endpoint}");
    let text = answer(&endpoint).await.expect("the runner answers");
    assert!(text.ends_with("runner session-a\n"), "{text}");

    let (status, again) = post(&app, "/api/runner/provision", Some("session-a"), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message"], "Runner already exists for this session.");
    assert_eq!(again["endpoint"], first["endpoint"]);
    let listed = runners(&app).await;
    assert_eq!(listed.len(), 1, "no second runner: {listed:?}");
    assert_eq!(listed[0]["driver"], "process");
    assert_eq!(listed[0]["status"], "RUNNING");

    // Without a session id the server makes a UUID v4.
    let (status, fresh) = post(&app, "/api/runner/provision", None, None).await;
    assert_eq!(status, 201, "{fresh}");
    let id = fresh["sessionId"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "a version-4 UUID: {id}");

    for s in ["session-a", id] {
        post(&app, "/api/runner/deprovision", Some(s), None).await;
    }
    app.finish().await;
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn deprovision_stops_the_runner_and_then_knows_it_no_more() {
    let app = app_with(|_| {}).await;
    post(&app, "/api/runner/provision", Some("s-1"), None).await;
    let pid = runners(&app).await[0]["instance"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(alive(&pid));

    let (status, body) = post(
        &app,
        "/api/runner/deprovision",
        None,
        Some(json!({"sessionId": "s-1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        "Runner for session s-1 deprovisioned successfully."
    );
    assert!(!alive(&pid), "the runner process is gone");
    assert!(runners(&app).await.is_empty());

    let (status, body) = post(&app, "/api/runner/deprovision", Some("s-1"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND"))
    );
    assert_eq!(
        body["message"],
        "No active runner found for this session ID."
    );

    let (status, body) = post(&app, "/api/runner/deprovision", None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("SESSION_ID_REQUIRED"))
    );
    assert_eq!(
        body["message"],
        "Session ID is required for deprovisioning."
    );
    let (status, body) = post(&app, "/api/runner/heartbeat", None, Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("SESSION_ID_REQUIRED"))
    );
    assert_eq!(body["message"], "Session ID is required for heartbeat.");
    app.finish().await;
}

/// With a 60 s inactivity timeout: a runner that heartbeats stays, one that does not is removed
/// by the reaper's step.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_reaper_removes_runners_without_heartbeats() {
    let app = app_with(|c| c.runners.inactivity_timeout = Duration::from_secs(60)).await;
    post(&app, "/api/runner/provision", Some("quiet"), None).await;
    post(&app, "/api/runner/provision", Some("chatty"), None).await;
    // Without an API key the listing hides session ids (they would let anyone stop the
    // runner), so the runners are told apart through the store.
    let pid_of = |list: &[drover_core::Runner], s: &str| {
        list.iter()
            .find(|r| r.session_id == s)
            .and_then(|r| r.instance.clone())
    };
    assert!(
        runners(&app).await.iter().all(|r| r["sessionId"] == "***"),
        "session ids are not listed without the API key"
    );
    let before = app.store().runners.list_runners().await.unwrap();
    let quiet = pid_of(&before, "quiet").unwrap();

    app.advance(Duration::from_secs(40));
    let (status, body) = post(&app, "/api/runner/heartbeat", Some("chatty"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Heartbeat received for session chatty.");
    app.advance(Duration::from_secs(21));
    let reaped = app.state.runners.reap_inactive().await.unwrap();
    assert_eq!(reaped, ["quiet"]);
    assert!(!alive(&quiet));
    let after = app.store().runners.list_runners().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].session_id, "chatty");

    let (_, metrics) = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("drover_runners_reaped_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_runners_provisioned_total 2"),
        "{metrics}"
    );
    post(&app, "/api/runner/deprovision", Some("chatty"), None).await;
    app.finish().await;
}

async fn get_text(app: &TestApp, path: &str) -> (u16, String) {
    let resp = app.http.get(app.url(path)).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn reuse_mode_shares_one_singleton_runner() {
    let app = app_with(|c| c.runners.reuse = true).await;
    let (status, first) = post(&app, "/api/runner/provision", Some("first"), None).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = post(&app, "/api/runner/provision", Some("second"), None).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["endpoint"], first["endpoint"]);
    assert_eq!(second["sessionId"], "first", "the singleton's session");
    assert_eq!(runners(&app).await.len(), 1);

    let (status, body) = post(&app, "/api/runner/heartbeat", Some("first"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "Heartbeat received for singleton runner.");
    let (status, body) = post(&app, "/api/runner/heartbeat", Some("second"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND"))
    );
    assert_eq!(
        body["message"],
        "Singleton runner not found or session ID mismatch."
    );
    post(&app, "/api/runner/deprovision", Some("first"), None).await;
    app.finish().await;
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn provisioning_past_the_limit_is_refused_and_starts_nothing() {
    let app = app_with(|c| c.runners.max_runners = Some(2)).await;
    for s in ["one", "two"] {
        assert_eq!(
            post(&app, "/api/runner/provision", Some(s), None).await.0,
            201
        );
    }
    let (status, body) = post(&app, "/api/runner/provision", Some("three"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("RUNNER_LIMIT_REACHED")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("--max-runners"));
    assert_eq!(runners(&app).await.len(), 2, "nothing was started");
    // An existing session is still answered at the limit.
    assert_eq!(
        post(&app, "/api/runner/provision", Some("one"), None)
            .await
            .0,
        200
    );
    for s in ["one", "two"] {
        post(&app, "/api/runner/deprovision", Some(s), None).await;
    }
    app.finish().await;
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn bad_session_ids_and_failed_starts_answer_with_the_contracts_errors() {
    let app = app_with(|_| {}).await;
    let (status, body) = post(&app, "/api/runner/provision", Some("a b/c"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("INVALID_SESSION_ID")),
        "{body}"
    );
    app.finish().await;

    let broken = ProcessConfig::new(vec!["sh".into(), "-c".into(), "exit 3".into()]);
    let app = spawn_app_with_runners(DriverConfig::Process(broken), |_| {}).await;
    let (status, body) = post(&app, "/api/runner/provision", Some("s"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("SERVER_ERROR")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "An unexpected error occurred on the server."
    );
    assert!(
        body["details"].as_str().unwrap().contains("exited"),
        "{body}"
    );
    assert!(runners(&app).await.is_empty(), "the slot was given back");
    let (_, metrics) = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("drover_runners_failed_total 1"),
        "{metrics}"
    );
    app.finish().await;

    let quiet = ProcessConfig::new(vec!["sh".into(), "-c".into(), "exit 3".into()]);
    let app = spawn_app_with_runners(DriverConfig::Process(quiet), |c| {
        c.runners.error_details = false
    })
    .await;
    let (_, body) = post(&app, "/api/runner/provision", Some("s"), None).await;
    assert_eq!(
        body.get("details"),
        None,
        "no details in production: {body}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_server_without_a_runner_driver_says_so() {
    let app = spawn_app().await;
    let (status, body) = post(&app, "/api/runner/provision", Some("s"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("RUNNERS_DISABLED")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--runner-driver")
    );
    app.finish().await;
}

/// `GET /api/v1/runners` comes in pages, oldest first, like every list route.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_runner_list_comes_in_pages() {
    let app = app_with(|_| {}).await;
    // Session ids are shown only to holders of the API key, so the pages are told apart by
    // their creation times, one second apart.
    let mut created = Vec::new();
    for s in ["p1", "p2", "p3"] {
        let (status, body) = post(&app, "/api/runner/provision", Some(s), None).await;
        assert_eq!(status, 201, "{body}");
        created.push(
            app.state
                .store
                .runners
                .get_runner(s)
                .await
                .unwrap()
                .unwrap()
                .created_at,
        );
        app.advance(Duration::from_secs(1));
    }
    let created: Vec<String> = created.iter().map(drover_core::time::format).collect();
    let (status, first) = app.get_json("/api/v1/runners?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let sessions = |page: &Value| -> Vec<String> {
        page["runners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["createdAt"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(sessions(&first), created[..2]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, rest) = app
        .get_json(&format!("/api/v1/runners?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(sessions(&rest), created[2..]);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    let (status, refused) = app.get_json("/api/v1/runners?limit=0").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_QUERY"))
    );
    assert_eq!(
        app.client.runners().await.unwrap().len(),
        3,
        "the client follows the pages"
    );
    for s in ["p1", "p2", "p3"] {
        post(&app, "/api/runner/deprovision", Some(s), None).await;
    }
    app.finish().await;
}

/// A second server on the same database follows the leader and must not reconcile the runners
/// it sees in the store against its own engine: that engine need not hold the leader's
/// sandboxes (on several machines each replica has its own), and reconciling would forget
/// them. Only the leader reconciles, at the start of its term; the leader's runner stays known
/// and running.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn only_the_leader_reconciles_runners_and_a_follower_leaves_them_alone() {
    let app = app_with(|_| {}).await;
    let (status, body) = post(&app, "/api/runner/provision", Some("s-1"), None).await;
    assert_eq!(status, 201, "{body}");
    crate::helpers::eventually(Duration::from_secs(10), "the leader reconciled", || async {
        app.state.runners.has_reconciled().then_some(())
    })
    .await;

    let mut config = crate::helpers::test_config(app.db_path.parent().unwrap());
    config.store_url = app.db_path.display().to_string();
    config.runner_driver = Some(python_runners());
    config.server.cluster.replica_id = "follower".into();
    // On the leader's (manual) clock, so that its lease has not run out for the follower.
    let clock = app.clock.clone().expect("a manual clock");
    let follower = drover_server::Application::build_with_clock(config, clock)
        .await
        .unwrap();
    let state = follower.state().clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(follower.run_until(shutdown.clone()));
    // Time for a reconciliation at start, had it run here (it takes milliseconds).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        state.cluster.role().leading_epoch(),
        None,
        "the second server leads"
    );
    assert!(
        !state.runners.has_reconciled(),
        "a follower reconciled runners"
    );

    let listed = runners(&app).await;
    assert_eq!(
        listed.len(),
        1,
        "the leader's runner was forgotten: {listed:?}"
    );
    assert_eq!(listed[0]["status"], "RUNNING");
    assert!(alive(listed[0]["instance"].as_str().unwrap()));

    shutdown.cancel();
    serving.await.unwrap().unwrap();
    post(&app, "/api/runner/deprovision", Some("s-1"), None).await;
    app.finish().await;
}

/// A provision answers only once its runner answers: a runner that exits soon after it started
/// is the contract's 500 with the reason in `details`, leaves no record, and gives its slot
/// back (with a limit of one, the next provision fails the same way, never with 429).
#[tokio::test]
async fn a_runner_that_exits_while_starting_fails_the_provision_and_frees_its_slot() {
    let late = ProcessConfig::new(vec!["sh".into(), "-c".into(), "sleep 0.3; exit 3".into()]);
    let app = spawn_app_with_runners(DriverConfig::Process(late), |c| {
        c.runners.max_runners = Some(1)
    })
    .await;
    for _ in 0..2 {
        let (status, body) = post(&app, "/api/runner/provision", Some("s"), None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (500, Some("SERVER_ERROR")),
            "{body}"
        );
        let details = body["details"].as_str().unwrap();
        assert!(
            details.contains("exited") && details.contains("exit status: 3"),
            "{body}"
        );
        assert!(runners(&app).await.is_empty(), "no record is left");
    }
    let (_, metrics) = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("drover_runners_failed_total 2"),
        "{metrics}"
    );
    app.finish().await;
}

/// Kills a runner process from outside, as a crash or the OOM killer would.
fn kill(pid: &str) {
    let out = std::process::Command::new("kill")
        .args(["-KILL", pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -KILL {pid}");
    for _ in 0..200 {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("runner {pid} did not die");
}

/// A runner whose process dies later is not kept as RUNNING: a heartbeat for it answers 404 and
/// forgets it, and the runner worker's step finds the ones nobody asked about.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn a_runner_that_dies_later_is_noticed_and_forgotten() {
    let app = app_with(|_| {}).await;
    for s in ["beating", "quiet", "alive"] {
        let (status, body) = post(&app, "/api/runner/provision", Some(s), None).await;
        assert_eq!(status, 201, "{body}");
    }
    let (beating, quiet) = (
        instance(&app, "beating").await,
        instance(&app, "quiet").await,
    );
    kill(&beating);
    kill(&quiet);

    let (status, body) = post(&app, "/api/runner/heartbeat", Some("beating"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND")),
        "{body}"
    );
    assert_eq!(runners(&app).await.len(), 2, "the dead one is forgotten");

    let counts = app.state.runners.run_once().await.unwrap();
    assert!(counts.contains(&("runners_exited", 1)), "{counts:?}");
    let left = app.store().runners.list_runners().await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].session_id, "alive");
    let (status, _) = post(&app, "/api/runner/heartbeat", Some("quiet"), None).await;
    assert_eq!(status, 404);
    let (status, body) = post(&app, "/api/runner/heartbeat", Some("alive"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&app, "/api/runner/deprovision", Some("quiet"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND"))
    );

    let (_, metrics) = get_text(&app, "/metrics").await;
    assert!(
        metrics.contains("drover_runners_exited_total 2"),
        "{metrics}"
    );
    // The session can have a runner again.
    let (status, body) = post(&app, "/api/runner/provision", Some("quiet"), None).await;
    assert_eq!(status, 201, "{body}");
    for s in ["alive", "quiet"] {
        post(&app, "/api/runner/deprovision", Some(s), None).await;
    }
    app.finish().await;
}

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/runner/runner.py"
);

/// `examples/runner/runner.py` through the process driver, on a server with an API key: it
/// serves its session on its endpoint, heartbeats to the URL and with the token drover gave it
/// (drover takes them: the runner counts the 200s), is stopped by a deprovision, and exits by
/// itself once drover no longer knows it (a heartbeat answered 404).
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_example_runner_serves_heartbeats_and_stops() {
    assert!(has_python(), "python3 is not installed");
    let mut config = ProcessConfig::new(vec![
        "env".into(),
        "HEARTBEAT_SECONDS=0.1".into(),
        "python3".into(),
        EXAMPLE.into(),
    ]);
    config.stop_grace = Duration::from_secs(2);
    let app = spawn_app_with_runners(DriverConfig::Process(config), |c| {
        c.api_key = Some("the-api-key".into())
    })
    .await;
    let with_key = |path: &str| app.http.post(app.url(path)).bearer_auth("the-api-key");
    let mut endpoints = Vec::new();
    for session in ["ex-1", "ex-2"] {
        let resp = with_key("/api/runner/provision")
            .header("X-Session-Id", session)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let body: Value = resp.json().await.unwrap();
        endpoints.push(body["endpoint"].as_str().unwrap().to_string());
    }

    // Its endpoint names its session, and counts the heartbeats drover took.
    for (session, endpoint) in ["ex-1", "ex-2"].iter().zip(&endpoints) {
        let mut seen = Value::Null;
        for _ in 0..200 {
            seen = reqwest::get(endpoint).await.unwrap().json().await.unwrap();
            if seen["heartbeats"].as_u64() >= Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen["session"], *session, "{seen}");
        assert!(seen["heartbeats"].as_u64() >= Some(2), "{seen}");
    }
    let (one, two) = (instance(&app, "ex-1").await, instance(&app, "ex-2").await);

    let resp = with_key("/api/runner/deprovision")
        .json(&json!({"sessionId": "ex-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!alive(&one), "the deprovisioned runner is stopped");

    // Forgotten behind its back (as a reaper on another replica would): its next heartbeat
    // is answered 404, and it exits.
    app.store().runners.remove_runner("ex-2").await.unwrap();
    for _ in 0..200 {
        if !alive(&two) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(&two), "the forgotten runner exited by itself");
    app.finish().await;
}

/// The instance (for the process driver, the process id) of the session's runner.
async fn instance(app: &TestApp, session: &str) -> String {
    app.store()
        .runners
        .get_runner(session)
        .await
        .unwrap()
        .and_then(|r| r.instance)
        .unwrap()
}
