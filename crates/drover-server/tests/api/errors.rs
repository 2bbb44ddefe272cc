//! Client mistakes get JSON errors with a stable code, never a 500, and write nothing.

use crate::helpers::{spawn_app, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_400_with_a_code() {
    let app = spawn_app().await;
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "/api/v1/jobs",
            "{not json",
            "MALFORMED_JSON",
            "not valid JSON",
        ),
        ("/api/v1/jobs", "", "MALFORMED_JSON", "empty"),
        (
            "/api/v1/jobs",
            "[1, 2]",
            "INVALID_FIELD",
            "must be a JSON object",
        ),
        (
            "/internal/v1/tasks/claim",
            r#"{"spotId": "s", "maxTasks": "five"}"#,
            "INVALID_FIELD",
            "maxTasks",
        ),
        (
            "/internal/v1/tasks/claim",
            r#"{"maxTasks": 5}"#,
            "INVALID_FIELD",
            "spotId",
        ),
        (
            "/internal/v1/tasks/t/complete",
            r#"{"spotId": "s", "fopt": "low"}"#,
            "INVALID_FIELD",
            "fopt",
        ),
    ];
    for (path, body, code, hint) in cases {
        let (status, answer) = app.post_raw(path, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["success"], json!(false));
        assert_eq!(answer["code"], json!(code), "{path} {body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(hint), "{answer}");
    }
    assert!(
        app.client
            .jobs(&Default::default())
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    app.finish().await;
}

#[tokio::test]
async fn oversize_bodies_are_413_and_write_nothing() {
    let app = spawn_app_with(|c| c.body_limit = 1024).await;
    let big: Vec<i64> = (0..1000).collect();
    let (status, answer) = app
        .post_json("/api/v1/jobs", json!({"parameters": {"x": big}}))
        .await;
    assert_eq!(status, 413);
    assert_eq!(answer["code"], json!("PAYLOAD_TOO_LARGE"));
    assert!(answer["error"].as_str().unwrap().contains("1024"));
    assert!(
        app.client
            .jobs(&Default::default())
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    app.finish().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(
        (body["success"].clone(), body["code"].clone()),
        (json!(false), json!("NOT_FOUND"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing-here")
    );
    let resp = app
        .http
        .delete(app.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!("METHOD_NOT_ALLOWED"));
    app.finish().await;
}

#[tokio::test]
async fn health_is_503_while_the_store_cannot_take_writes() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);
    // Another process holds SQLite's write lock.
    let mut other = rusqlite::Connection::open(&app.db_path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    // A commit of the server's own within the last second stands in for a probe while its
    // writer is at work (the store's health evidence), so the answer may stay 200 for that
    // long; after it, every answer must be the failed probe's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = app.get_json("/api/v1/health").await;
        if status != 200 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(
        (body["status"].clone(), body["database"].clone()),
        (json!("unhealthy"), json!("disconnected"))
    );
    tx.rollback().unwrap();
    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("healthy")));
    app.finish().await;
}
