//! Graceful shutdown: the signal stops new connections, lets a request in flight finish and
//! be stored, then stops the workers and closes the store.

use crate::helpers::spawn_app;
use drover_store::SqliteStore;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();

    // A first request on the connection proves the server has accepted it.
    conn.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: drover\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // Half of a job request, then the shutdown signal, then the other half.
    let body = r#"{"name": "in flight", "parameters": {"x": {"min": 1, "max": 50}}}"#;
    let (head, tail) = body.split_at(25);
    let request = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: drover\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{head}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // Let the server read the head and start waiting for the body; this orders the steps, it
    // does not time anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.begin_shutdown();
    conn.write_all(tail.as_bytes()).await.unwrap();

    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"totalTasks\":50"), "{answer}");

    let base = app.base.clone();
    let dir = app.stopped().await;
    assert!(
        reqwest::get(format!("{base}/api/v1/health")).await.is_err(),
        "a stopped server accepts no connections"
    );
    let store = SqliteStore::open(dir.path().join("drover.db"))
        .unwrap()
        .into_stores();
    let jobs = store
        .jobs
        .list_jobs(None, drover_store::Page::first(10))
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    assert_eq!(jobs.items[0].counts.total, 50);
}
