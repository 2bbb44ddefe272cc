//! Keys: the agent key on `/internal/v1/*`, the API key on changing `/api/v1/*` calls.

use crate::helpers::spawn_app_with;
use serde_json::json;

#[tokio::test]
async fn the_agent_key_guards_every_internal_route() {
    let app = spawn_app_with(|c| c.agent_key = Some("secret123".into())).await;
    let hello = json!({"ipAddress": "127.0.0.1"});
    let routes = [
        "/internal/v1/hello",
        "/internal/v1/heartbeat",
        "/internal/v1/tasks/claim",
        "/internal/v1/tasks/task-1/complete",
        "/internal/v1/tasks/task-1/fail",
    ];
    for route in routes {
        let (status, body) = app.post_json(route, hello.clone()).await;
        assert_eq!(status, 401, "{route} without a key");
        assert_eq!(body["success"], json!(false));
        assert_eq!(body["code"], json!("UNAUTHORIZED"));
        assert!(body["error"].as_str().unwrap().contains("X-Orhestra-Key"));

        let resp = app
            .http
            .post(app.url(route))
            .header("X-Orhestra-Key", "wrong")
            .json(&hello)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{route} with a wrong key");
    }
    for header in ["X-Orhestra-Key", "X-Agent-Key"] {
        let resp = app
            .http
            .post(app.url("/internal/v1/hello"))
            .header(header, "secret123")
            .json(&hello)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{header}");
    }
    // The public API does not need the agent key.
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);
    assert_eq!(
        app.post_json("/api/v1/jobs", json!({"parameters": {"x": [1]}}))
            .await
            .0,
        201
    );
    app.finish().await;
}

#[tokio::test]
async fn without_an_agent_key_internal_routes_are_open() {
    let app = crate::helpers::spawn_app().await;
    assert_eq!(
        app.post_json("/internal/v1/hello", json!({"ipAddress": "127.0.0.1"}))
            .await
            .0,
        200
    );
    app.finish().await;
}

/// Issue 10, finding 2: with an API key, reads need it too (health excepted).
#[tokio::test]
async fn the_api_key_guards_changes_and_reads() {
    let app = spawn_app_with(|c| c.api_key = Some("k-123".into())).await;
    let (status, body) = app.post_json("/api/v1/jobs", json!({})).await;
    assert_eq!((status, body["code"].clone()), (401, json!("UNAUTHORIZED")));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let resp = app
        .http
        .post(app.url("/api/v1/jobs"))
        .bearer_auth("nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, _) = app.post_json("/api/v1/jobs/job-x/cancel", json!({})).await;
    assert_eq!(status, 401);

    // The typed client carries the key.
    let job = app.create_job(1, json!({})).await;
    app.client.job(&job.job_id).await.unwrap();
    app.client.spots().await.unwrap();
    // Without it, reads are refused too; health stays open for load balancers.
    for path in [
        format!("/api/v1/jobs/{}", job.job_id),
        "/api/v1/jobs".into(),
        "/api/v1/spots".into(),
    ] {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("UNAUTHORIZED")),
            "{path}"
        );
    }
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);
    app.finish().await;
}
