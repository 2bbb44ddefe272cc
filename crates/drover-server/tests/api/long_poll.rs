//! Claims that wait for work (`waitMs`) and the exchange route (`POST /internal/v1/tasks/exchange`:
//! reports, then a claim, in one request).
//!
//! Where a test lets a request start waiting before it acts, the pause orders the steps; it
//! times nothing. "Woken, not timed out" is shown by the answer arriving well before the wait
//! it asked for.

use crate::batch_report::{EVERY_ANSWER, EveryOutcome, complete, every_outcome, short};
use crate::helpers::{TestApp, spawn_app};
use drover_api::{BatchReportRequest, ClaimedTask, ExchangeRequest, FailRequest};
use serde_json::json;
use std::time::{Duration, Instant};

type Waited = (drover_client::Result<Vec<ClaimedTask>>, Duration);

/// Sends a claim of up to `max` tasks waiting up to `wait` from another task; it hands back the
/// answer and how long it took.
fn claim_in_background(
    app: &TestApp,
    spot: &str,
    max: u32,
    wait: Duration,
) -> tokio::task::JoinHandle<Waited> {
    let (client, spot) = (app.client.clone(), spot.to_string());
    tokio::spawn(async move {
        let asked = Instant::now();
        let answer = client.claim_waiting(&spot, max, wait).await;
        (answer, asked.elapsed())
    })
}

/// Lets a request sent from another task reach the server and start waiting.
async fn let_it_start_waiting() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_waiting_claim_gets_the_task_of_a_job_submitted_after_it() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    let waiting = claim_in_background(&app, &spot, 5, Duration::from_secs(10));
    let_it_start_waiting().await;
    assert!(
        !waiting.is_finished(),
        "the claim waits while nothing is there"
    );
    let job = app.create_job(2, json!({})).await;

    let (tasks, waited) = waiting.await.unwrap();
    let tasks = tasks.unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.job_id == job.job_id));
    assert!(
        waited < Duration::from_secs(5),
        "woken by the new job, not by the end of its 10 s wait (took {waited:?})"
    );
    let task = app.client.task(&tasks[0].id).await.unwrap();
    assert_eq!(
        (task.status.as_str(), task.assigned_to.as_deref()),
        ("RUNNING", Some(spot.as_str()))
    );
    app.finish().await;
}

/// Sends a raw claim body from another task; it hands back the status, the answer and how long
/// it took.
fn raw_claim_in_background(
    app: &TestApp,
    body: serde_json::Value,
) -> tokio::task::JoinHandle<(u16, serde_json::Value, Duration)> {
    let (http, url) = (app.http.clone(), app.url("/internal/v1/tasks/claim"));
    tokio::spawn(async move {
        let asked = Instant::now();
        let answer = http.post(url).json(&body).send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap();
        (status, body, asked.elapsed())
    })
}

#[tokio::test]
async fn of_two_spots_waiting_for_work_the_least_loaded_gets_it_first() {
    let app = spawn_app().await;
    let spots = [app.hello().await, app.hello().await];
    let wait_ms = 1000;
    // Several rounds, the busy role going back and forth, so neither luck nor the order of
    // registration can pass for the rule.
    for round in 0..5 {
        let (busy, idle) = (&spots[round % 2], &spots[1 - round % 2]);
        // The busy spot asks first, so being first in line does not help it either.
        let busy_claim = raw_claim_in_background(
            &app,
            json!({"spotId": busy, "maxTasks": 1, "runningTasks": 3, "waitMs": wait_ms}),
        );
        let idle_claim = raw_claim_in_background(
            &app,
            json!({"spotId": idle, "maxTasks": 1, "runningTasks": 0, "waitMs": wait_ms}),
        );
        let_it_start_waiting().await;
        let job = app.create_job(1, json!({})).await;

        let (status, answer, _) = idle_claim.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        let tasks = answer["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1, "round {round}: the idle spot gets the task");
        assert_eq!(tasks[0]["jobId"], job.job_id.as_str());
        let (status, answer, waited) = busy_claim.await.unwrap();
        assert_eq!(
            (status, &answer),
            (200, &json!({"tasks": []})),
            "round {round}: the busy spot gets nothing"
        );
        assert!(
            waited >= Duration::from_millis(wait_ms),
            "round {round}: the busy spot waited on to its deadline (took {waited:?})"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn a_waiting_claim_with_nothing_to_come_answers_empty_when_the_wait_is_over() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    let asked = Instant::now();
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 3, "waitMs": 400}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"tasks": []})));
    assert!(asked.elapsed() >= Duration::from_millis(400));
    app.finish().await;
}

#[tokio::test]
async fn a_task_sent_back_to_new_wakes_a_waiting_claim_of_another_spot() {
    let app = spawn_app().await;
    app.create_job(1, json!({})).await;
    let first = app.hello().await;
    let second = app.hello().await;
    let task = app.client.claim(&first, 1).await.unwrap().remove(0);
    let waiting = claim_in_background(&app, &second, 1, Duration::from_secs(20));
    let_it_start_waiting().await;
    let retry = FailRequest {
        spot_id: first.clone(),
        error: Some("flaky".into()),
        retriable: Some(true),
        attempt: Some(task.attempt),
    };
    assert_eq!(
        app.client.fail(&task.id, &retry).await.unwrap().will_retry,
        Some(true)
    );
    let taken = waiting.await.unwrap().0.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((&taken[0].id, taken[0].attempt), (&task.id, 2));
    app.finish().await;
}

#[tokio::test]
async fn an_exchange_answers_each_report_as_the_batch_route_then_claims() {
    let app = spawn_app().await;
    let EveryOutcome { a, ids, batch, .. } = every_outcome(&app).await;
    let answer = app
        .client
        .exchange(&ExchangeRequest {
            spot_id: a.clone(),
            reports: batch.reports.clone(),
            max_tasks: 10,
            wait_ms: None,
            running_tasks: None,
        })
        .await
        .unwrap();
    let seen: Vec<_> = answer.results.iter().map(short).collect();
    assert_eq!(seen, EVERY_ANSWER);
    // The retriable failure went back to NEW before the claim, which took it again.
    let claimed: Vec<(&str, u32)> = answer
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.attempt))
        .collect();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].0, ids[2]);
    let done = app.client.task(&ids[0]).await.unwrap();
    assert_eq!((done.status.as_str(), done.fopt), ("DONE", Some(0.5)));

    // The same reports through the batch route now get what a repeat gets, as they would
    // after a batch.
    let again = app
        .client
        .report_batch(&BatchReportRequest {
            spot_id: a,
            reports: batch.reports[..2].to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(
        short(&again.results[0]),
        (200, true, Some("already completed"), None)
    );
    app.finish().await;
}

#[tokio::test]
async fn an_exchange_stores_its_reports_before_it_waits_for_work() {
    let app = spawn_app().await;
    app.create_job(1, json!({})).await;
    let spot = app.hello().await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0);
    let exchanging = {
        let client = app.client.clone();
        let req = ExchangeRequest {
            spot_id: spot.clone(),
            reports: vec![complete(&task.id, 0.25)],
            max_tasks: 2,
            wait_ms: Some(20_000),
            running_tasks: None,
        };
        tokio::spawn(async move { client.exchange(&req).await.unwrap() })
    };
    let_it_start_waiting().await;
    assert!(!exchanging.is_finished(), "nothing to claim: it waits");
    assert_eq!(app.client.task(&task.id).await.unwrap().status, "DONE");

    let next = app.create_job(1, json!({})).await;
    let answer = exchanging.await.unwrap();
    assert_eq!(short(&answer.results[0]), (200, true, None, None));
    assert_eq!(answer.tasks.len(), 1);
    assert_eq!(answer.tasks[0].job_id, next.job_id);
    app.finish().await;
}

#[tokio::test]
async fn an_exchange_without_a_claim_only_reports_and_never_waits() {
    let app = spawn_app().await;
    app.create_job(2, json!({})).await;
    let spot = app.hello().await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0);
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 0, "waitMs": 30000, "reports": [
                {"taskId": task.id, "outcome": "complete", "attempt": task.attempt}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks"], json!([]));
    assert_eq!(body["results"][0]["status"], 200);
    // Nothing was claimed: the other task is still NEW.
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"], json!([]));
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn out_of_range_waits_claims_and_batches_are_refused_before_anything_is_written() {
    let app = spawn_app().await;
    app.create_job(1, json!({})).await;
    let spot = app.hello().await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0);
    let report = json!({"taskId": task.id, "outcome": "complete"});
    let cases = [
        (
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 1, "waitMs": 30001}),
            "waitMs: must be between 0 and 30000",
        ),
        (
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 1, "waitMs": 30001, "reports": [report]}),
            "waitMs: must be between 0 and 30000",
        ),
        (
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 1001, "reports": [report]}),
            "maxTasks: must be between 0 and 1000",
        ),
        (
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 1, "reports": vec![report.clone(); 1001]}),
            "reports: must hold at most 1000 reports",
        ),
        (
            "/internal/v1/tasks/exchange",
            json!({"spotId": spot, "maxTasks": 1, "waitMs": -1}),
            "waitMs",
        ),
        (
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": 1, "runningTasks": -1}),
            "runningTasks",
        ),
    ];
    for (path, body, says) in cases {
        let (status, answer) = app.post_json(path, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("INVALID_FIELD")),
            "{path}: {answer}"
        );
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{path}: {error}");
    }
    assert_eq!(app.client.task(&task.id).await.unwrap().status, "RUNNING");
    app.finish().await;
}

#[tokio::test]
async fn a_waiting_claim_ends_when_the_server_shuts_down() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    let waiting = claim_in_background(&app, &spot, 1, Duration::from_secs(30));
    let_it_start_waiting().await;
    app.begin_shutdown();
    let (answer, waited) = waiting.await.unwrap();
    assert_eq!(answer.unwrap(), vec![], "answered, with nothing");
    assert!(
        waited < Duration::from_secs(10),
        "ended by the shutdown, not by its 30 s wait (took {waited:?})"
    );
    app.stopped().await;
}
