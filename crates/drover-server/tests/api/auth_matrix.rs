//! The auth matrix: every route of every surface (native `/api/v1/*`, spot drains included,
//! `/internal/v1/*`, `/metrics`, the session runners' `/api/runner/*`) called with no key, a
//! wrong key, the other kind of key alone, another node's (or runner's) credential, and the
//! right one, on a server with an agent key and an API key. Each answer's status and JSON code is checked, and the
//! refused calls are shown to have changed nothing.

use crate::helpers::{TestApp, spawn_app_with_runners};
use crate::runners::python_runners;
use serde_json::{Value, json};

const AGENT_KEY: &str = "agent-k";
const API_KEY: &str = "api-p";

/// What a call presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    /// Nothing at all.
    Nothing,
    /// A wrong key of the kind the route wants.
    WrongKey,
    /// The right key of the other kind (the agent key on the API's routes, the API key's
    /// absence and the agent key alone on an agent's spot calls).
    KeyOnly,
    /// Another node's credential, presented for my spot (or another runner's token for mine).
    OtherNode,
    /// What the route wants.
    Right,
}

const CREDS: [Cred; 5] = [
    Cred::Nothing,
    Cred::WrongKey,
    Cred::KeyOnly,
    Cred::OtherNode,
    Cred::Right,
];

/// How a route is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Open to all (health).
    Open,
    /// The API key (reads and changes, `/metrics`, provision).
    ApiKey,
    /// The job read: the API key, the agent key, or a spot's own secret.
    JobRead,
    /// `/internal/v1/hello`: the agent key.
    AgentKey,
    /// A call for my spot: the agent key and my spot's secret.
    Spot,
    /// A call for my runner: the API key or my runner's token.
    Runner,
}

/// The status and JSON code each guard answers to each credential (`None` where the body is no
/// error: the route's own success).
fn expected(guard: Guard, cred: Cred, ok: u16) -> (u16, Option<&'static str>) {
    use Cred::*;
    const UNAUTHORIZED: (u16, Option<&str>) = (401, Some("UNAUTHORIZED"));
    match (guard, cred) {
        (Guard::Open, _) => (ok, None),
        (Guard::ApiKey, Right) => (ok, None),
        (Guard::ApiKey, _) => UNAUTHORIZED,
        (Guard::JobRead, KeyOnly | Right) => (ok, None),
        (Guard::JobRead, OtherNode) => (403, Some("SPOT_SECRET_INVALID")),
        (Guard::JobRead, _) => UNAUTHORIZED,
        (Guard::AgentKey, Nothing | WrongKey) => UNAUTHORIZED,
        (Guard::AgentKey, _) => (ok, None),
        (Guard::Spot, Nothing | WrongKey) => UNAUTHORIZED,
        (Guard::Spot, KeyOnly) => (401, Some("SPOT_SECRET_REQUIRED")),
        (Guard::Spot, OtherNode) => (403, Some("SPOT_SECRET_INVALID")),
        (Guard::Spot, Right) => (ok, None),
        (Guard::Runner, OtherNode) => (403, Some("RUNNER_TOKEN_INVALID")),
        (Guard::Runner, Right) => (ok, None),
        (Guard::Runner, _) => UNAUTHORIZED,
    }
}

/// The identities the matrix acts with and against.
struct World {
    job: String,
    spare_job: String,
    mine: (String, String),
    other: (String, String),
    my_task: String,
    task_of_other: String,
    my_runner: (String, String),
    other_runner: (String, String),
}

fn headers(
    req: reqwest::RequestBuilder,
    guard: Guard,
    cred: Cred,
    w: &World,
) -> reqwest::RequestBuilder {
    let (my_spot, my_secret) = &w.mine;
    let other_secret = &w.other.1;
    match (guard, cred) {
        (_, Cred::Nothing) => req,
        (Guard::ApiKey | Guard::JobRead | Guard::Open, Cred::WrongKey) => req.bearer_auth("nope"),
        (Guard::ApiKey | Guard::Open, Cred::KeyOnly) => req.header("X-Agent-Key", AGENT_KEY),
        (Guard::JobRead, Cred::KeyOnly) => req.header("X-Agent-Key", AGENT_KEY),
        (Guard::ApiKey | Guard::JobRead | Guard::Open, Cred::OtherNode) => req
            .header("X-Spot-Id", my_spot)
            .header("X-Spot-Secret", other_secret)
            .header("X-Runner-Token", &w.other_runner.1),
        (Guard::ApiKey | Guard::JobRead | Guard::Open, Cred::Right) => req.bearer_auth(API_KEY),
        (Guard::AgentKey | Guard::Spot, Cred::WrongKey) => req.header("X-Orhestra-Key", "nope"),
        (Guard::AgentKey | Guard::Spot, Cred::KeyOnly) => req.header("X-Orhestra-Key", AGENT_KEY),
        (Guard::AgentKey | Guard::Spot, Cred::OtherNode) => req
            .header("X-Orhestra-Key", AGENT_KEY)
            .header("X-Spot-Secret", other_secret),
        (Guard::AgentKey | Guard::Spot, Cred::Right) => req
            .header("X-Orhestra-Key", AGENT_KEY)
            .header("X-Spot-Secret", my_secret),
        (Guard::Runner, Cred::WrongKey) => req.bearer_auth("nope"),
        (Guard::Runner, Cred::KeyOnly) => req.header("X-Agent-Key", AGENT_KEY),
        (Guard::Runner, Cred::OtherNode) => req.header("X-Runner-Token", &w.other_runner.1),
        (Guard::Runner, Cred::Right) => req.header("X-Runner-Token", &w.my_runner.1),
    }
}

/// One row: a route, its guard, the body it is sent, and its status when allowed.
struct Route {
    method: &'static str,
    path: String,
    guard: Guard,
    body: Option<Value>,
    ok: u16,
}

fn routes(w: &World) -> Vec<Route> {
    let get = |path: String, guard| Route {
        method: "GET",
        path,
        guard,
        body: None,
        ok: 200,
    };
    let post = |path: &str, guard, body: Value, ok| Route {
        method: "POST",
        path: path.to_string(),
        guard,
        body: Some(body),
        ok,
    };
    let spot = &w.mine.0;
    vec![
        get("/api/v1/health".into(), Guard::Open),
        get("/api/v1/spots".into(), Guard::ApiKey),
        get("/api/v1/jobs".into(), Guard::ApiKey),
        get(format!("/api/v1/jobs/{}", w.job), Guard::JobRead),
        get(format!("/api/v1/jobs/{}/tasks", w.job), Guard::ApiKey),
        get(format!("/api/v1/jobs/{}/results", w.job), Guard::ApiKey),
        get(format!("/api/v1/tasks/{}", w.my_task), Guard::ApiKey),
        get("/api/v1/runners".into(), Guard::ApiKey),
        get("/api/v1/workers".into(), Guard::ApiKey),
        get("/api/v1/cluster".into(), Guard::ApiKey),
        get("/api/v1/journal".into(), Guard::ApiKey),
        get("/api/v1/journal/verify".into(), Guard::ApiKey),
        get("/metrics".into(), Guard::ApiKey),
        post(
            "/api/v1/jobs",
            Guard::ApiKey,
            json!({"parameters": {"x": [1]}}),
            201,
        ),
        post(
            &format!("/api/v1/jobs/{}/cancel", w.spare_job),
            Guard::ApiKey,
            json!({}),
            200,
        ),
        post(
            &format!("/api/v1/spots/{}/drain", w.other.0),
            Guard::ApiKey,
            json!({}),
            200,
        ),
        post(
            &format!("/api/v1/spots/{}/undrain", w.other.0),
            Guard::ApiKey,
            json!({}),
            200,
        ),
        post(
            "/internal/v1/hello",
            Guard::AgentKey,
            json!({"ipAddress": "127.0.0.1"}),
            200,
        ),
        post(
            "/internal/v1/heartbeat",
            Guard::Spot,
            json!({"spotId": spot, "cpuLoad": 1.0}),
            200,
        ),
        post(
            "/internal/v1/tasks/claim",
            Guard::Spot,
            json!({"spotId": spot, "maxTasks": 1}),
            200,
        ),
        post(
            &format!("/internal/v1/tasks/{}/complete", w.my_task),
            Guard::Spot,
            json!({"spotId": spot, "fopt": 0.5}),
            200,
        ),
        post(
            &format!("/internal/v1/tasks/{}/fail", w.my_task),
            Guard::Spot,
            json!({"spotId": spot, "error": "late"}),
            200,
        ),
        post(
            "/internal/v1/tasks/report",
            Guard::Spot,
            json!({"spotId": spot, "reports": [
                {"taskId": w.my_task, "outcome": "complete", "fopt": 0.5}
            ]}),
            200,
        ),
        post(
            "/internal/v1/tasks/exchange",
            Guard::Spot,
            json!({"spotId": spot, "reports": [], "maxTasks": 1, "waitMs": 0}),
            200,
        ),
        post("/api/runner/provision", Guard::ApiKey, json!({}), 201),
        post(
            "/api/runner/heartbeat",
            Guard::Runner,
            json!({"sessionId": w.my_runner.0}),
            200,
        ),
        post(
            "/api/runner/deprovision",
            Guard::Runner,
            json!({"sessionId": w.my_runner.0}),
            200,
        ),
    ]
}

async fn provision(app: &TestApp, session: &str) -> (String, String) {
    let resp = app
        .http
        .post(app.url("/api/runner/provision"))
        .bearer_auth(API_KEY)
        .header("X-Session-Id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    let token = body["sessionToken"].as_str().expect("a new runner's token");
    (session.to_string(), token.to_string())
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn every_route_of_every_surface_answers_each_credential_as_the_matrix_says() {
    let app = spawn_app_with_runners(python_runners(), |c| {
        c.agent_key = Some(AGENT_KEY.into());
        c.api_key = Some(API_KEY.into());
    })
    .await;
    let job = app
        .create_job(
            2,
            json!({"command": ["true"], "env": {"PASSWORD": "hunter2"}}),
        )
        .await
        .job_id;
    let spare_job = app.create_job(1, json!({})).await.job_id;
    let mine = app.hello_with_secret().await;
    let other = app.hello_with_secret().await;
    let claim = |(spot, secret): (String, String)| {
        let client = app.client.clone().with_spot_secret(spot.clone(), secret);
        async move { client.claim(&spot, 1).await.unwrap().remove(0).id }
    };
    let my_task = claim(mine.clone()).await;
    let task_of_other = claim(other.clone()).await;
    let w = World {
        job,
        spare_job,
        my_task,
        task_of_other,
        my_runner: provision(&app, "runner-mine").await,
        other_runner: provision(&app, "runner-other").await,
        mine,
        other,
    };

    let mut cases = 0;
    for route in routes(&w) {
        for cred in CREDS {
            let mut req = app
                .http
                .request(route.method.parse().unwrap(), app.url(&route.path));
            if let Some(body) = &route.body {
                req = req.json(body);
            }
            if route.path == "/api/runner/provision" {
                req = req.header("X-Session-Id", format!("matrix-{cred:?}"));
            }
            let resp = headers(req, route.guard, cred, &w).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let (want_status, want_code) = expected(route.guard, cred, route.ok);
            let what = format!(
                "{} {} with {cred:?}: {status} {text}",
                route.method, route.path
            );
            assert_eq!(status, want_status, "{what}");
            if let Some(code) = want_code {
                let body: Value = serde_json::from_str(&text).expect(&what);
                assert_eq!(body["code"], code, "{what}");
                assert_eq!(body["success"], false, "{what}");
                assert!(!body["error"].as_str().unwrap_or("").is_empty(), "{what}");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 135, "27 routes, 5 credentials each");

    // What the refused calls did not do: my task was completed by my own call (the forged
    // reports before it changed nothing), the other spot's task is still its own, and the
    // other runner still runs.
    let task = app.client.task(&w.my_task).await.unwrap();
    assert_eq!(task.status, "DONE");
    assert_eq!(task.fopt, Some(0.5));
    let theirs = app.client.task(&w.task_of_other).await.unwrap();
    assert_eq!(
        (theirs.status.as_str(), theirs.assigned_to.as_deref()),
        ("RUNNING", Some(w.other.0.as_str()))
    );
    let spots = app.client.spots().await.unwrap();
    let other = spots.iter().find(|s| s.id == w.other.0).unwrap();
    assert_eq!(
        other.status, "UP",
        "drained and undrained by the right key alone"
    );
    let listed = app.client.runners().await.unwrap();
    assert!(listed.iter().any(|r| r.session_id == w.other_runner.0));
    assert!(!listed.iter().any(|r| r.session_id == w.my_runner.0));

    let sessions: Vec<String> = listed.iter().map(|r| r.session_id.clone()).collect();
    for session in sessions {
        app.http
            .post(app.url("/api/runner/deprovision"))
            .bearer_auth(API_KEY)
            .json(&json!({"sessionId": session}))
            .send()
            .await
            .unwrap();
    }
    app.finish().await;
}
