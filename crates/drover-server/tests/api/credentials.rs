//! Per-node credentials and protected reads: issue 10's findings 1 and 2, reproduced as they
//! were sent, and the settings around them (`--require-node-credentials`, `--public-reads`).

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use drover_core::NodeInfo;
use serde_json::{Value, json};

const K: &str = "agent-k";
const P: &str = "api-p";

/// A server started with `--agent-key K --api-key P`, as the findings were.
async fn spawn_with_both_keys() -> TestApp {
    spawn_app_with(|c| {
        c.agent_key = Some(K.into());
        c.api_key = Some(P.into());
    })
    .await
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut req = app.http.post(app.url(path)).json(&body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Finding 1: "Any holder of the agent key can report for any spot." Started with
/// `--agent-key K --api-key P`, a running task's holder was read without a key, and a complete
/// sent with the agent key and the holder's id was stored; the real holder then got "already
/// completed". Now the read needs the API key, the forged report is refused with a code that
/// says what to send, nothing is stored, and the holder's own report is the one applied.
#[tokio::test]
async fn finding_1_the_agent_key_alone_cannot_report_for_another_spot() {
    let app = spawn_with_both_keys().await;
    let job = app.create_job(1, json!({})).await.job_id;
    // The holder is a spot as drover's agent registers it: with a secret of its own.
    let (holder, secret) = app.hello_with_secret().await;
    let agent = app
        .client
        .clone()
        .with_spot_secret(holder.clone(), secret.clone());
    let task = agent.claim(&holder, 1).await.unwrap().remove(0).id;

    // `GET $B/api/v1/jobs/$J/tasks?status=RUNNING` (no key needed) — now it is.
    let path = format!("/api/v1/jobs/{job}/tasks?status=RUNNING");
    let (status, body) = app.get_json(&path).await;
    assert_eq!((status, body["code"].clone()), (401, json!("UNAUTHORIZED")));
    let running = app.client.tasks(&job, &Default::default()).await.unwrap();
    assert_eq!(
        running.tasks[0].assigned_to.as_deref(),
        Some(holder.as_str())
    );

    // `POST $B/internal/v1/tasks/$T/complete -H 'X-Orhestra-Key: K' -d '{"spotId":"<holder>","fopt":666}'`
    let forged = json!({"spotId": holder, "fopt": 666});
    let complete = format!("/internal/v1/tasks/{task}/complete");
    let (status, body) = post(&app, &complete, &[("X-Orhestra-Key", K)], forged.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "SPOT_SECRET_REQUIRED");
    assert_eq!(body["success"], false);
    assert!(
        body["error"].as_str().unwrap().contains("X-Spot-Secret"),
        "{body}"
    );
    // With another spot's secret: refused too.
    let (_, other_secret) = app.hello_with_secret().await;
    let (status, body) = post(
        &app,
        &complete,
        &[("X-Orhestra-Key", K), ("X-Spot-Secret", &other_secret)],
        forged,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("SPOT_SECRET_INVALID"))
    );
    let stored = app.store().jobs.get_task(&task).await.unwrap();
    assert_eq!(stored.status, drover_core::TaskStatus::Running);
    assert_eq!(
        stored.result.fopt, None,
        "nothing of the forged report was stored"
    );

    // The real holder's report is the one applied, not "already completed".
    let answer = agent
        .complete(
            &task,
            &drover_api::CompleteRequest {
                spot_id: holder.clone(),
                fopt: Some(0.25),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((answer.success, answer.message), (true, None));
    assert_eq!(
        app.store().jobs.get_task(&task).await.unwrap().result.fopt,
        Some(0.25)
    );
    app.finish().await;
}

/// Spots of batch-contract clients, which never ask for a secret, keep the contract's
/// behaviour by default: no secret in the hello answer, the agent key alone suffices.
#[tokio::test]
async fn contract_spots_keep_the_contracts_behaviour_by_default() {
    let app = spawn_app_with(|c| c.agent_key = Some(K.into())).await;
    let (status, hello) = post(
        &app,
        "/internal/v1/hello",
        &[("X-Orhestra-Key", K)],
        json!({"ipAddress": "127.0.0.1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(hello.get("spotSecret").is_none(), "{hello}");
    let spot = hello["spotId"].as_str().unwrap();
    let (status, _) = post(
        &app,
        "/internal/v1/heartbeat",
        &[("X-Orhestra-Key", K)],
        json!({"spotId": spot}),
    )
    .await;
    assert_eq!(status, 200);
    app.finish().await;
}

/// `--require-node-credentials`: every hello gets a secret and every spot needs its own, also
/// one registered without (before the setting was turned on).
#[tokio::test]
async fn with_node_credentials_required_every_spot_needs_its_secret() {
    let app = spawn_app_with(|c| c.require_node_credentials = true).await;
    let (status, hello) = app
        .post_json("/internal/v1/hello", json!({"ipAddress": "127.0.0.1"}))
        .await;
    assert_eq!(status, 200);
    let spot = hello["spotId"].as_str().unwrap();
    let secret = hello["spotSecret"]
        .as_str()
        .expect("a secret, asked for or not");
    assert_eq!(secret.len(), 64, "256 bits as hex");
    let beat = json!({"spotId": spot});
    let (status, body) = app.post_json("/internal/v1/heartbeat", beat.clone()).await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("SPOT_SECRET_REQUIRED"))
    );
    let (status, _) = post(
        &app,
        "/internal/v1/heartbeat",
        &[("X-Spot-Secret", secret)],
        beat,
    )
    .await;
    assert_eq!(status, 200);

    // Only the hash is stored.
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let stored: String = conn
        .query_row("SELECT secret_hash FROM nodes WHERE id = ?1", [spot], |r| {
            r.get(0)
        })
        .unwrap();
    assert_ne!(stored, secret);
    assert_eq!(stored, drover_core::credential::hash(secret));

    // A spot registered before the setting was turned on, without a secret.
    let info = NodeInfo::default();
    let registered = app
        .store()
        .nodes
        .register_node(info.into(), None, chrono::Utc::now());
    let old = registered.await.unwrap().id;
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": old, "maxTasks": 1}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("SPOT_SECRET_NOT_ISSUED"))
    );
    assert!(
        body["error"].as_str().unwrap().contains("register again"),
        "{body}"
    );
    app.finish().await;
}

/// Creates a job whose `env` has `TOKEN`, reads it without credentials, and checks the value
/// is redacted; returns the job's id.
async fn job_read_plainly_has_its_token_redacted(app: &TestApp) -> String {
    let job = app
        .create_job(1, json!({"command": ["run"], "env": {"TOKEN": "t0p"}}))
        .await
        .job_id;
    let (status, body) = app.get_json(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["env"]["TOKEN"], "***");
    job
}

/// Finding 2: "Reads are open and carry secrets." Every GET worked without a key, including
/// job `env` values, commands, payloads, results, node addresses, runner sessions and
/// `/metrics`. Now, with an API key, every read needs it (health excepted); `env` values are
/// shown only to agents, whatever the reader's key.
#[tokio::test]
async fn finding_2_reads_need_the_api_key_and_env_values_reach_only_agents() {
    let app = spawn_with_both_keys().await;
    let job = app
        .create_job(
            1,
            json!({"command": ["run", "{x}"], "env": {"DB_PASSWORD": "hunter2"}}),
        )
        .await
        .job_id;
    let spot = app.hello().await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0).id;
    for path in [
        "/api/v1/spots".to_string(),
        "/api/v1/jobs".into(),
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/tasks"),
        format!("/api/v1/jobs/{job}/results"),
        format!("/api/v1/jobs/{job}/results?format=csv"),
        format!("/api/v1/tasks/{task}"),
        "/api/v1/runners".into(),
        "/api/v1/workers".into(),
        "/metrics".into(),
    ] {
        let resp = app.http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED", "{path}");
    }
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);

    // With the API key (as `drover job` reads it): the job, its env values redacted, in the
    // job and in the listing.
    let user = drover_client::Client::new(&app.base).with_api_key(P);
    let read = user.job(&job).await.unwrap();
    assert_eq!(read.env.unwrap()["DB_PASSWORD"], "***");
    let listed = user.jobs(&Default::default()).await.unwrap();
    assert_eq!(listed.jobs[0].env.as_ref().unwrap()["DB_PASSWORD"], "***");
    // The agent (the agent key, as `drover agent` reads it) gets the values to run the task.
    let agent = drover_client::Client::new(&app.base).with_agent_key(K);
    assert_eq!(
        agent.job(&job).await.unwrap().env.unwrap()["DB_PASSWORD"],
        "hunter2"
    );
    app.finish().await;
}

/// `--public-reads`: reads are open again, changes still need the key, and `env` values stay
/// hidden.
#[tokio::test]
async fn public_reads_open_reads_but_not_changes_or_env_values() {
    let app = spawn_app_with(|c| {
        c.api_key = Some(P.into());
        c.public_reads = true;
    })
    .await;
    job_read_plainly_has_its_token_redacted(&app).await;
    assert_eq!(app.get_json("/api/v1/spots").await.0, 200);
    assert_eq!(app.get_json("/metrics").await.0, 200);
    let (status, _) = app
        .post_json("/api/v1/jobs", json!({"parameters": {"x": [1]}}))
        .await;
    assert_eq!(status, 401);
    app.finish().await;
}

/// Without any key (the default, loopback only), reads stay open as the contract's clients
/// expect, and `env` values are still redacted for everyone but agents.
#[tokio::test]
async fn without_keys_reads_are_open_and_env_values_redacted() {
    let app = spawn_app().await;
    let job = job_read_plainly_has_its_token_redacted(&app).await;
    let (spot, secret) = app.hello_with_secret().await;
    let agent = app.client.clone().with_spot_secret(spot.clone(), secret);
    assert_eq!(agent.job(&job).await.unwrap().env.unwrap()["TOKEN"], "t0p");
    // A wrong secret is refused, not quietly answered with redacted values an agent would run.
    let forger = app.client.clone().with_spot_secret(spot, "0".repeat(64));
    let e = forger.job(&job).await.unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(403), Some("SPOT_SECRET_INVALID"))
    );
    app.finish().await;
}
