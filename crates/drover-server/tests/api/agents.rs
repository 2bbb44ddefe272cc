//! `/internal/v1`: hello, heartbeat, claim, and every row of the contract's complete and fail
//! tables.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn hello_and_heartbeat_keep_the_spot_registry() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/internal/v1/hello",
            json!({"ipAddress": "10.1.2.3", "zone": "eu-1", "labels": {"gpu": "a100"}, "totalCores": 16}),
        )
        .await;
    assert_eq!(status, 200);
    let spot = body["spotId"].as_str().unwrap().to_string();
    let (status, body) = app
        .post_json(
            "/internal/v1/heartbeat",
            json!({"spotId": spot, "ipAddress": "10.1.2.3", "cpuLoad": 45.2, "runningTasks": 2, "totalCores": 8}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"success": true})));

    let (status, body) = app.get_json("/api/v1/spots").await;
    assert_eq!(status, 200);
    let s = &body["spots"][0];
    assert_eq!(s["id"], json!(spot));
    assert_eq!(s["ipAddress"], json!("10.1.2.3"));
    assert_eq!(s["status"], json!("UP"));
    assert_eq!(
        (
            s["cpuLoad"].clone(),
            s["runningTasks"].clone(),
            s["totalCores"].clone()
        ),
        (json!(45.2), json!(2), json!(8))
    );
    assert_eq!(
        (s["zone"].clone(), s["labels"].clone()),
        (json!("eu-1"), json!({"gpu": "a100"}))
    );
    assert!(s["lastHeartbeat"].as_str().unwrap().ends_with('Z'));

    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["activeSpots"], json!(1));

    let err = app.heartbeat_refused("spot-nope").await;
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("SPOT_NOT_FOUND"))
    );
    app.finish().await;
}

#[tokio::test]
async fn claims_hand_out_the_highest_priority_then_the_oldest() {
    let app = spawn_app().await;
    let old = app.create_job(2, json!({})).await;
    let urgent = app.create_job(2, json!({"priority": 10})).await;
    let spot = app.hello().await;

    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 3}),
        )
        .await;
    assert_eq!(status, 200);
    let jobs: Vec<_> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["jobId"].clone())
        .collect();
    assert_eq!(
        jobs,
        vec![
            json!(urgent.job_id),
            json!(urgent.job_id),
            json!(old.job_id)
        ]
    );
    // The payload is a JSON string, as the contract shows it.
    let payload: serde_json::Value =
        serde_json::from_str(body["tasks"][0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, json!({"x": 1}));
    assert_eq!(body["tasks"][0]["attempt"], json!(1));

    assert_eq!(app.client.claim(&spot, 1000).await.unwrap().len(), 1);
    assert!(app.client.claim(&spot, 5).await.unwrap().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn bad_claims_get_clear_errors_not_tasks() {
    let app = spawn_app().await;
    app.create_job(3, json!({})).await;
    let spot = app.hello().await;
    for max in [0, 1001] {
        let (status, body) = app
            .post_json(
                "/internal/v1/tasks/claim",
                json!({"spotId": spot, "maxTasks": max}),
            )
            .await;
        assert_eq!(status, 400);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("maxTasks: must be between 1 and 1000")
        );
    }
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": "spot-nope", "maxTasks": 1}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("SPOT_NOT_FOUND"))
    );

    // A spot the reaper marked DOWN gets an error until it heartbeats again.
    app.advance(std::time::Duration::from_secs(11));
    app.state.spot_reaper().reap().await.unwrap();
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 1}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (409, json!("SPOT_DOWN")));
    assert!(body["error"].as_str().unwrap().contains("heartbeat"));
    app.heartbeat(&spot).await;
    assert_eq!(app.client.claim(&spot, 1).await.unwrap().len(), 1);
    // Nothing was handed out by the refused claims.
    assert_eq!(app.store().ops.overview().await.unwrap().running_tasks, 1);
    app.finish().await;
}

/// Every row of the contract's complete table.
#[tokio::test]
async fn complete_answers_as_the_contract_table_says() {
    let app = spawn_app().await;
    app.create_job(1, json!({})).await;
    let holder = app.hello().await;
    let other = app.hello().await;
    let task = app.client.claim(&holder, 1).await.unwrap().remove(0);
    let path = format!("/internal/v1/tasks/{}/complete", task.id);
    let body = |spot: &str| json!({"spotId": spot, "runtimeMs": 1500, "iter": 100, "fopt": 0.00123, "resultJson": "{\"converged\": true}"});

    // 409 Wrong SPOT
    let (status, answer) = app.post_json(&path, body(&other)).await;
    assert_eq!(status, 409);
    assert_eq!(answer["success"], json!(false));
    assert_eq!(answer["error"], json!("task not assigned to this spot"));
    assert_eq!(answer["code"], json!("WRONG_SPOT"));
    // 200 Completed
    assert_eq!(
        app.post_json(&path, body(&holder)).await,
        (200, json!({"success": true}))
    );
    // 200 Already done
    assert_eq!(
        app.post_json(&path, body(&holder)).await,
        (
            200,
            json!({"success": true, "message": "already completed"})
        )
    );
    // 404 Not found
    let (status, answer) = app
        .post_json("/internal/v1/tasks/task-nope/complete", body(&holder))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        (answer["success"].clone(), answer["error"].clone()),
        (json!(false), json!("task not found"))
    );

    let stored = app.client.task(&task.id).await.unwrap();
    assert_eq!(
        (
            stored.status.as_str(),
            stored.fopt,
            stored.runtime_ms,
            stored.iter
        ),
        ("DONE", Some(0.00123), Some(1500), Some(100))
    );
    assert_eq!(stored.result_json.as_deref(), Some("{\"converged\": true}"));
    app.finish().await;
}

/// Every row of the contract's fail table.
#[tokio::test]
async fn fail_answers_as_the_contract_table_says() {
    let app = spawn_app().await;
    app.create_job(2, json!({"maxAttempts": 2})).await;
    let holder = app.hello().await;
    let other = app.hello().await;
    let tasks = app.client.claim(&holder, 2).await.unwrap();
    let fail = |spot: &str, retriable: bool| json!({"spotId": spot, "error": "OutOfMemoryError", "retriable": retriable});
    let path = |i: usize| format!("/internal/v1/tasks/{}/fail", tasks[i].id);

    // 409 Wrong SPOT
    let (status, answer) = app.post_json(&path(0), fail(&other, true)).await;
    assert_eq!(
        (status, answer["error"].clone()),
        (409, json!("task not assigned to this spot"))
    );
    // 200 Will retry
    assert_eq!(
        app.post_json(&path(0), fail(&holder, true)).await,
        (200, json!({"success": true, "willRetry": true}))
    );
    // A repeat of the same report is still a success and changes nothing.
    assert_eq!(
        app.post_json(&path(0), fail(&holder, true)).await,
        (
            200,
            json!({"success": true, "message": "already reported", "willRetry": true})
        )
    );
    assert_eq!(app.client.task(&tasks[0].id).await.unwrap().status, "NEW");
    // 200 Permanent fail
    assert_eq!(
        app.post_json(&path(1), fail(&holder, false)).await,
        (200, json!({"success": true, "willRetry": false}))
    );
    // 200 Already terminal
    assert_eq!(
        app.post_json(&path(1), fail(&holder, true)).await,
        (200, json!({"success": true, "message": "already terminal"}))
    );
    // 404 Not found
    let (status, answer) = app
        .post_json("/internal/v1/tasks/task-nope/fail", fail(&holder, true))
        .await;
    assert_eq!(
        (status, answer["error"].clone()),
        (404, json!("task not found"))
    );

    // The retried task runs out of attempts on its second failure.
    let again = app.client.claim(&holder, 1).await.unwrap().remove(0);
    assert_eq!(
        (again.id.as_str(), again.attempt),
        (tasks[0].id.as_str(), 2)
    );
    assert_eq!(
        app.post_json(&path(0), fail(&holder, true)).await,
        (200, json!({"success": true, "willRetry": false}))
    );
    let stored = app.client.task(&tasks[0].id).await.unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.last_error.as_deref()),
        ("FAILED", Some("OutOfMemoryError"))
    );
    // A failure without `retriable` is retriable; without `error` it still records one.
    app.finish().await;
}

#[tokio::test]
async fn a_report_may_name_its_attempt() {
    let app = spawn_app().await;
    app.create_job(1, json!({"taskTimeoutSeconds": 10})).await;
    let spot = app.hello().await;
    let first = app.client.claim(&spot, 1).await.unwrap().remove(0);
    app.advance(std::time::Duration::from_secs(21));
    app.heartbeat(&spot).await;
    app.state.task_reaper().reap().await.unwrap();
    let second = app.client.claim(&spot, 1).await.unwrap().remove(0);
    assert_eq!((second.id.as_str(), second.attempt), (first.id.as_str(), 2));

    let path = format!("/internal/v1/tasks/{}/complete", first.id);
    let (status, answer) = app
        .post_json(&path, json!({"spotId": spot, "attempt": 1, "fopt": 9.0}))
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (409, json!("WRONG_SPOT")),
        "attempt 1 was reaped"
    );
    let (status, _) = app
        .post_json(&path, json!({"spotId": spot, "attempt": 2, "fopt": 1.0}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.client.task(&first.id).await.unwrap().fopt, Some(1.0));
    app.finish().await;
}
