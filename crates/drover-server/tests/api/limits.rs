//! Limits on connections and requests: slow and idle connections are closed, a full server
//! still answers health, and every refusal, the HTTP layer's own included, is JSON with a code
//! where the HTTP stack lets it be.

use crate::helpers::{eventually, spawn, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `within` passes, which fails the test);
/// returns what was read.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&all).into_owned()
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_of(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_connection_that_sends_its_headers_slowly_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| {
        c.http.header_timeout = Duration::from_millis(300);
        c.http.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut conn = TcpStream::connect(addr(&app.base)).await.unwrap();
    let started = tokio::time::Instant::now();
    conn.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: d")
        .await
        .unwrap();
    closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A connection that completes its headers in time is served.
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);
    app.finish().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|c| c.http.idle_timeout = Duration::from_millis(300)).await;
    // Idle from the start.
    let mut fresh = TcpStream::connect(addr(&app.base)).await.unwrap();
    closed_within(&mut fresh, Duration::from_secs(5)).await;
    // Idle after a request: keep-alive ends at the idle timeout.
    let mut used = TcpStream::connect(addr(&app.base)).await.unwrap();
    used.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: d\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut used, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.finish().await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_408_json_and_writes_nothing() {
    let app = spawn_app_with(|c| c.http.body_timeout = Duration::from_millis(300)).await;
    let mut conn = TcpStream::connect(addr(&app.base)).await.unwrap();
    conn.write_all(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(body_of(&answer)["code"], json!("BODY_TIMEOUT"));
    app.assert_no_jobs().await;
    app.finish().await;
}

#[tokio::test]
async fn with_every_connection_taken_health_still_answers() {
    let app = spawn_app_with(|c| {
        c.http.max_connections = 4;
        c.http.connection_reserve = 1;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr(&app.base)).await.unwrap();
        // A served request proves the connection holds a slot.
        c.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: d\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    // The reserve answers health ...
    let fresh = reqwest::Client::new();
    let health = fresh.get(app.url("/api/v1/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // ... and nothing else, with a JSON reason.
    let refused = reqwest::Client::new()
        .get(app.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], json!("TOO_MANY_CONNECTIONS"));
    // Freed slots serve everything again.
    drop(held);
    eventually(Duration::from_secs(5), "a freed slot", || async {
        let r = reqwest::Client::new()
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    app.finish().await;
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_400_json_on_every_id_route() {
    let app = spawn_app().await;
    let routes = [
        ("GET", "/api/v1/jobs/%ff%fe"),
        ("POST", "/api/v1/jobs/%ff%fe/cancel"),
        ("GET", "/api/v1/jobs/%ff%fe/tasks"),
        ("GET", "/api/v1/jobs/%ff%fe/results"),
        ("GET", "/api/v1/tasks/%ff%fe"),
        ("POST", "/internal/v1/tasks/%ff%fe/complete"),
        ("POST", "/internal/v1/tasks/%ff%fe/fail"),
    ];
    for (method, path) in routes {
        let resp = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .header("content-type", "application/json")
            .body(r#"{"spotId": "s"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], json!("INVALID_PATH"), "{method} {path}");
        assert_eq!(body["success"], json!(false));
    }
    app.finish().await;
}

#[tokio::test]
async fn oversize_bodies_are_413_json_on_the_runner_routes_too() {
    let app = spawn_app_with(|c| c.body_limit = 1024).await;
    let big = format!(r#"{{"sessionId": "s", "pad": "{}"}}"#, "x".repeat(4096));
    for path in [
        "/api/runner/heartbeat",
        "/api/runner/deprovision",
        "/api/runner/provision",
    ] {
        let resp = app
            .http
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let body: Value = resp.json().await.unwrap();
        // The session-runners contract's shape: `error` is the code.
        assert_eq!(body["error"], json!("PAYLOAD_TOO_LARGE"), "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");
    }
    // A route that reads no body holds it to the limit too, in its own surface's shape.
    let job = app.create_job(1, json!({})).await;
    let resp = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/cancel", job.job_id)))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!("PAYLOAD_TOO_LARGE"), "{body}");
    assert_eq!(app.client.job(&job.job_id).await.unwrap().status, "PENDING");
    app.finish().await;
}

#[tokio::test]
async fn long_targets_and_large_headers_are_414_and_431_json() {
    let app = spawn_app_with(|c| {
        c.http.max_uri_bytes = 1024;
        c.http.max_header_bytes = 2048;
    })
    .await;
    let long = app.url(&format!("/api/v1/jobs?x={}", "a".repeat(2000)));
    let resp = app.http.get(long).send().await.unwrap();
    assert_eq!(resp.status(), 414);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!("URI_TOO_LONG"));

    let resp = app
        .http
        .get(app.url("/api/v1/health"))
        .header("x-big", "b".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!("HEADERS_TOO_LARGE"));

    let mut many = app.http.get(app.url("/api/v1/health"));
    for i in 0..80 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let resp = many.send().await.unwrap();
    assert_eq!(resp.status(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!("HEADERS_TOO_LARGE"));
    app.finish().await;
}

/// Past hyper's own limits (a head over drover's target and header limits plus 64 KiB, more
/// than 100 header lines, a target over 64 KiB) and for a head that is not HTTP, hyper answers before any of drover's code runs, with a status and no body, and closes
/// the connection. This is what it does; README's Errors section says so.
#[tokio::test]
async fn what_hyper_refuses_itself_is_a_bare_status_and_a_close() {
    let app = spawn_app().await;
    let many_lines: String = (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let cases: [(Vec<u8>, &str); 4] = [
        (
            format!("GET /{} HTTP/1.1\r\nHost: d\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            "HTTP/1.1 414",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: d\r\nX-Big: {}\r\n\r\n",
                "b".repeat(1_100_000)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: d\r\n{many_lines}\r\n").into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            b"GET / HTTP/1.1\r\nHost d\r\nbroken header line\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (request, status) in cases {
        let mut conn = TcpStream::connect(addr(&app.base)).await.unwrap();
        // The server may answer and close before reading all of a huge head.
        let _ = conn.write_all(&request).await;
        let answer = closed_within(&mut conn, Duration::from_secs(5)).await;
        assert!(answer.starts_with(status), "{status}: {answer:.200}");
    }
    app.finish().await;
}

#[tokio::test]
async fn unknown_methods_answer_json() {
    let app = spawn_app().await;
    for path in ["/api/v1/jobs", "/api/runner/provision", "/nowhere"] {
        let resp = app
            .http
            .request("PURGE".parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            [404, 405].contains(&resp.status().as_u16()),
            "{path}: {}",
            resp.status()
        );
        let body: Value = resp.json().await.unwrap();
        assert!(body["code"].is_string(), "{path}: {body}");
    }
    app.finish().await;
}

#[tokio::test]
async fn trailing_data_after_the_json_object_is_refused() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_raw("/api/v1/jobs", r#"{"name":"x"}{"name":"y"} garbage"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], json!("MALFORMED_JSON"));
    assert!(body["error"].as_str().unwrap().contains("after the JSON"));
    // Trailing whitespace is fine.
    let (status, _) = app.post_raw("/api/v1/jobs", "{\"name\":\"x\"}\n  ").await;
    assert_eq!(status, 201);
    app.finish().await;
}

#[tokio::test]
async fn a_session_header_that_is_not_ascii_is_refused_not_replaced() {
    let app = spawn_app().await;
    for path in [
        "/api/runner/provision",
        "/api/runner/heartbeat",
        "/api/runner/deprovision",
    ] {
        let resp = app
            .http
            .post(app.url(path))
            .header(
                "x-session-id",
                reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], json!("INVALID_SESSION_ID"), "{path}: {body}");
    }
    app.finish().await;
}

#[tokio::test]
async fn addresses_and_figures_are_validated_with_the_field_named() {
    let app = spawn_app().await;
    let huge = "a".repeat(600_000);
    let hellos = [
        (json!({"ipAddress": ""}), "ipAddress"),
        (json!({"ipAddress": huge}), "ipAddress"),
        (json!({"ipAddress": "not an address"}), "ipAddress"),
        (
            json!({"ipAddress": "10.0.0.1", "totalCores": -4}),
            "totalCores",
        ),
        (
            json!({"ipAddress": "10.0.0.1", "memoryBytes": -1}),
            "memoryBytes",
        ),
        (json!({"ipAddress": "10.0.0.1", "gpus": -1}), "gpus"),
    ];
    for (hello, field) in hellos {
        let (status, body) = app.post_json("/internal/v1/hello", hello).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["code"], json!("INVALID_FIELD"));
        assert!(body["error"].as_str().unwrap().starts_with(field), "{body}");
    }
    assert!(
        app.client.spots().await.unwrap().is_empty(),
        "nothing refused was stored"
    );
    let spot = app.hello().await;
    let (status, body) = app
        .post_json(
            "/internal/v1/heartbeat",
            json!({"spotId": spot, "cpuLoad": -1e308}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("cpuLoad"));
    app.create_job(1, json!({})).await;
    let claimed = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 1}),
        )
        .await
        .1;
    let task = claimed["tasks"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .post_json(
            &format!("/internal/v1/tasks/{task}/complete"),
            json!({"spotId": spot, "runtimeMs": i64::MIN}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("runtimeMs"));
    // The contract's own figures pass.
    let (status, _) = app
        .post_json(
            "/internal/v1/heartbeat",
            json!({"spotId": spot, "ipAddress": "127.0.0.1", "cpuLoad": 10.5,
                   "runningTasks": 0, "totalCores": 4}),
        )
        .await;
    assert_eq!(status, 200);
    app.finish().await;
}

#[tokio::test]
async fn blank_keys_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for blank in [" ", "\t\n"] {
        let mut config = crate::helpers::test_config(dir.path());
        config.server.api_key = Some(blank.into());
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("API key is only whitespace"), "{e}");
        let mut config = crate::helpers::test_config(dir.path());
        config.server.agent_key = Some(blank.into());
        assert!(config.validate().is_err());
    }
    // And the server does not start with one.
    let started =
        std::panic::AssertUnwindSafe(spawn(|c| c.server.agent_key = Some("  ".into()), true));
    assert!(futures::FutureExt::catch_unwind(started).await.is_err());
}

#[tokio::test]
async fn a_job_is_refused_by_its_bytes_before_anything_is_written() {
    let app = spawn_app_with(|c| c.max_job_bytes = 100_000).await;
    // The issue's reproduction: 500 KB of shared payload over 200 tasks.
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({"shared": {"pad": "P".repeat(500_000)},
                   "parameters": {"i": {"min": 1, "max": 200}}}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], json!("TASK_PAYLOAD_TOO_LARGE"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-task-payload-bytes")
    );
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({"shared": {"pad": "P".repeat(1000)},
                   "parameters": {"i": {"min": 1, "max": 200}}}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], json!("JOB_TOO_LARGE"));
    assert!(body["error"].as_str().unwrap().contains("--max-job-bytes"));
    app.assert_no_jobs().await;
    app.finish().await;
}

#[tokio::test]
async fn oversize_labels_are_refused() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/internal/v1/hello",
            json!({"ipAddress": "10.0.0.1", "labels": {"pad": "L".repeat(900_000)}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("labels"));
    app.finish().await;
}

#[tokio::test]
async fn the_spot_registry_is_capped() {
    let app = spawn_app_with(|c| c.max_spots = Some(2)).await;
    app.hello().await;
    app.hello().await;
    let (status, body) = app
        .post_json("/internal/v1/hello", json!({"ipAddress": "127.0.0.1"}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], json!("SPOT_LIMIT_REACHED"));
    assert!(body["error"].as_str().unwrap().contains("--max-spots"));
    assert_eq!(app.client.spots().await.unwrap().len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn spots_are_listed_in_pages_in_the_contracts_shape() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.hello().await);
    }
    let (status, first) = app.get_json("/api/v1/spots?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(first["spots"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let (_, second) = app
        .get_json(&format!("/api/v1/spots?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["spots"][0]["id"], json!(ids[2]));
    // Without a limit, a small registry fits one page and carries no cursor.
    let (_, all) = app.get_json("/api/v1/spots").await;
    assert_eq!(all["spots"].as_array().unwrap().len(), 5);
    assert!(all.get("nextCursor").is_none(), "{all}");
    assert_eq!(app.client.spots().await.unwrap().len(), 5);
    let (status, body) = app.get_json("/api/v1/spots?limit=100000").await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_QUERY"))
    );
    app.finish().await;
}
