//! The task and spot reapers: one step at a time on a manual clock (fencing, retry rule), and
//! as real background workers on short intervals.

use crate::helpers::{eventually, spawn_app, spawn_app_real_time};
use drover_api::{CompleteRequest, HeartbeatRequest};
use serde_json::json;
use std::time::Duration;

/// The default time a task past its lease is left to its agent (`task_lease_grace`).
const GRACE: Duration = Duration::from_secs(10);

/// Invariant 1: claim, let the reaper take the task back, claim it from another spot; the first
/// spot's late complete gets 409 and the second's result stands.
#[tokio::test]
async fn a_late_report_after_reaping_is_fenced_off() {
    let app = spawn_app().await;
    let job = app.create_job(1, json!({"taskTimeoutSeconds": 60})).await;
    let first = app.hello().await;
    let second = app.hello().await;
    let task = app.client.claim(&first, 1).await.unwrap().remove(0);

    app.advance(Duration::from_secs(59));
    assert!(
        app.state.task_reaper().reap().await.unwrap().is_empty(),
        "not yet expired"
    );
    app.advance(Duration::from_secs(2) + GRACE);
    let reaped = app.state.task_reaper().reap().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(app.client.task(&task.id).await.unwrap().status, "NEW");

    let retaken = app.client.claim(&second, 1).await.unwrap().remove(0);
    assert_eq!(
        (retaken.id.as_str(), retaken.attempt),
        (task.id.as_str(), 2)
    );
    let late = CompleteRequest {
        spot_id: first.clone(),
        fopt: Some(999.0),
        ..Default::default()
    };
    let err = app.client.complete(&task.id, &late).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("WRONG_SPOT")));
    let good = CompleteRequest {
        spot_id: second.clone(),
        fopt: Some(1.0),
        ..Default::default()
    };
    app.client.complete(&task.id, &good).await.unwrap();
    let err = app.client.complete(&task.id, &late).await.unwrap_err();
    assert_eq!(
        err.status(),
        Some(409),
        "still refused after the task is DONE"
    );

    let stored = app.client.task(&task.id).await.unwrap();
    assert_eq!((stored.status.as_str(), stored.fopt), ("DONE", Some(1.0)));
    assert_eq!(stored.assigned_to.as_deref(), Some(second.as_str()));
    assert_eq!(
        app.client.job(&job.job_id).await.unwrap().status,
        "COMPLETED"
    );
    app.finish().await;
}

#[tokio::test]
async fn the_task_timeout_retries_then_fails_the_task() {
    let app = spawn_app().await;
    let job = app
        .create_job(1, json!({"taskTimeoutSeconds": 30, "maxAttempts": 2}))
        .await;
    let spot = app.hello().await;
    app.client.claim(&spot, 1).await.unwrap();
    app.advance(Duration::from_secs(31) + GRACE);
    app.state.task_reaper().reap().await.unwrap();
    assert_eq!(app.client.job(&job.job_id).await.unwrap().pending_tasks, 1);
    app.client.claim(&spot, 1).await.unwrap();
    app.advance(Duration::from_secs(31) + GRACE);
    app.state.task_reaper().reap().await.unwrap();
    let job = app.client.job(&job.job_id).await.unwrap();
    assert_eq!((job.status.as_str(), job.failed_tasks), ("FAILED", 1));
    app.finish().await;
}

#[tokio::test]
async fn the_default_task_timeout_is_five_minutes() {
    let app = spawn_app().await;
    app.create_job(1, json!({})).await;
    let spot = app.hello().await;
    app.client.claim(&spot, 1).await.unwrap();
    app.advance(Duration::from_secs(299) + GRACE);
    assert!(app.state.task_reaper().reap().await.unwrap().is_empty());
    app.advance(Duration::from_secs(2));
    assert_eq!(app.state.task_reaper().reap().await.unwrap().len(), 1);
    app.finish().await;
}

/// An agent kills a task at its timeout and reports at once; the reaper leaves it the grace to
/// do so, so the agent's own account of the failure (its stderr) is what is kept.
#[tokio::test]
async fn a_report_just_past_the_lease_is_kept_within_the_grace() {
    let app = spawn_app().await;
    app.create_job(1, json!({"taskTimeoutSeconds": 30})).await;
    let spot = app.hello().await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0);
    app.advance(Duration::from_secs(30) + GRACE - Duration::from_secs(1));
    assert!(app.state.task_reaper().reap().await.unwrap().is_empty());
    let fail = drover_api::FailRequest {
        spot_id: spot.clone(),
        error: Some("killed after the task timeout (30s)".into()),
        attempt: Some(task.attempt),
        ..Default::default()
    };
    let answer = app.client.fail(&task.id, &fail).await.unwrap();
    assert_eq!(answer.will_retry, Some(true));
    let stored = app.client.task(&task.id).await.unwrap();
    assert_eq!(
        stored.last_error.as_deref(),
        Some("killed after the task timeout (30s)")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_silent_spot_goes_down_and_frees_its_tasks() {
    let app = spawn_app().await;
    app.create_job(3, json!({})).await;
    let silent = app.hello().await;
    let alive = app.hello().await;
    assert_eq!(app.client.claim(&silent, 2).await.unwrap().len(), 2);

    app.advance(Duration::from_secs(9));
    let beat = HeartbeatRequest {
        spot_id: alive.clone(),
        ..Default::default()
    };
    app.client.heartbeat(&beat).await.unwrap();
    assert!(
        app.state
            .spot_reaper()
            .reap()
            .await
            .unwrap()
            .nodes
            .is_empty(),
        "10 s have not passed"
    );
    app.advance(Duration::from_secs(2));
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(down.nodes, vec![silent.clone()]);
    assert_eq!(down.released.len(), 2);

    let spots = app.client.spots().await.unwrap();
    let status = |id: &str| spots.iter().find(|s| s.id == id).unwrap().status.clone();
    assert_eq!(
        (status(&silent), status(&alive)),
        ("DOWN".to_string(), "UP".to_string())
    );
    assert_eq!(app.client.claim(&alive, 10).await.unwrap().len(), 3);
    app.finish().await;
}

/// A DOWN spot is forgotten after the retention (24 h by default); its agent, if it ever comes
/// back, is told the spot is unknown and registers again.
#[tokio::test]
async fn down_spots_are_forgotten_after_the_retention() {
    let app = spawn_app().await;
    let gone = app.hello().await;
    app.advance(Duration::from_secs(11));
    app.state.spot_reaper().reap().await.unwrap();
    assert!(app.state.spot_reaper().forget().await.unwrap().is_empty());
    assert_eq!(app.client.spots().await.unwrap()[0].status, "DOWN");

    app.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        app.state.spot_reaper().forget().await.unwrap(),
        vec![gone.clone()]
    );
    assert!(app.client.spots().await.unwrap().is_empty());
    let err = app.heartbeat_refused(&gone).await;
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("SPOT_NOT_FOUND"))
    );
    app.finish().await;
}

/// The reapers as background workers, on the wall clock with short intervals.
#[tokio::test]
async fn background_reapers_run_on_their_intervals() {
    let app = spawn_app_real_time(|c| {
        c.spot_reaper_interval = Duration::from_millis(100);
        c.spot_timeout = Duration::from_millis(600);
        c.task_reaper_interval = Duration::from_millis(100);
        c.task_lease_grace = Duration::ZERO;
    })
    .await;
    let spot_job = app.create_job(2, json!({})).await;
    let silent = app.hello().await;
    assert_eq!(app.client.claim(&silent, 2).await.unwrap().len(), 2);

    // A silent spot goes DOWN and its tasks become claimable again.
    let client = app.client.clone();
    eventually(
        Duration::from_secs(10),
        "the silent spot to go DOWN",
        || {
            let client = client.clone();
            let silent = silent.clone();
            async move {
                let spots = client.spots().await.unwrap();
                spots
                    .iter()
                    .any(|s| s.id == silent && s.status == "DOWN")
                    .then_some(())
            }
        },
    )
    .await;
    let job = app.client.job(&spot_job.job_id).await.unwrap();
    assert_eq!((job.pending_tasks, job.running_tasks), (2, 0));

    // A task past its timeout goes back to NEW, then FAILED after its last attempt, while its
    // spot keeps heartbeating.
    app.client.cancel_job(&spot_job.job_id).await.unwrap();
    let timed = app
        .create_job(1, json!({"taskTimeoutSeconds": 1, "maxAttempts": 2}))
        .await;
    let worker = app.hello().await;
    let beats = {
        let client = app.client.clone();
        let worker = worker.clone();
        tokio::spawn(async move {
            loop {
                let beat = HeartbeatRequest {
                    spot_id: worker.clone(),
                    ..Default::default()
                };
                let _ = client.heartbeat(&beat).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let task = app.client.claim(&worker, 1).await.unwrap().remove(0);
    eventually(
        Duration::from_secs(10),
        "the timed-out task to return to NEW",
        || {
            let client = app.client.clone();
            let id = task.id.clone();
            async move { (client.task(&id).await.unwrap().status == "NEW").then_some(()) }
        },
    )
    .await;
    let again = app.client.claim(&worker, 1).await.unwrap().remove(0);
    assert_eq!(again.attempt, 2);
    let job = eventually(Duration::from_secs(10), "the job to fail", || {
        let client = app.client.clone();
        let id = timed.job_id.clone();
        async move { Some(client.job(&id).await.unwrap()).filter(|j| j.status == "FAILED") }
    })
    .await;
    assert_eq!(job.failed_tasks, 1);
    beats.abort();
    app.finish().await;
}

/// A heartbeat of an UP spot may be answered before it is written (it is written within
/// `drover_store::sqlite::HELD_HEARTBEATS_WRITTEN_WITHIN`): the spot listing shows it and its
/// figures at once, the reaper counts it, and each heartbeat is counted once as `node_updated`
/// when written. A DOWN spot's heartbeat brings it back UP before it is answered; an unknown
/// spot's is refused with 404.
#[tokio::test]
async fn heartbeats_are_seen_at_once_and_a_down_spot_comes_back_at_its_heartbeat() {
    let app = spawn_app().await;
    app.create_job(2, json!({})).await;
    let spot = app.hello().await;
    let started = app.client.spots().await.unwrap()[0].last_heartbeat.clone();

    app.advance(Duration::from_secs(9));
    app.client
        .heartbeat(&HeartbeatRequest {
            spot_id: spot.clone(),
            cpu_load: Some(0.5),
            running_tasks: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen = app.client.spots().await.unwrap().remove(0);
    assert_ne!(seen.last_heartbeat, started);
    assert_eq!((seen.cpu_load, seen.running_tasks), (Some(0.5), 3));
    app.heartbeat(&spot).await;
    // 11 s after the hello, 2 s after the heartbeats: not silent.
    app.advance(Duration::from_secs(2));
    assert!(
        app.state
            .spot_reaper()
            .reap()
            .await
            .unwrap()
            .nodes
            .is_empty()
    );
    app.store().nodes.flush_heartbeats().await.unwrap();
    let text = app.metrics_text().await;
    let line = "drover_store_events_total{kind=\"node_updated\"} 2";
    assert!(text.contains(line), "{line} missing from\n{text}");

    // Silent for 11 s: DOWN. Its next heartbeat is UP again by the time it is answered.
    app.advance(Duration::from_secs(11));
    assert_eq!(
        app.state.spot_reaper().reap().await.unwrap().nodes,
        vec![spot.clone()]
    );
    assert_eq!(app.client.spots().await.unwrap()[0].status, "DOWN");
    app.heartbeat(&spot).await;
    assert_eq!(app.client.spots().await.unwrap()[0].status, "UP");
    assert_eq!(app.client.claim(&spot, 1).await.unwrap().len(), 1);

    let err = app.heartbeat_refused("spot-never-registered").await;
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("SPOT_NOT_FOUND"))
    );
    app.finish().await;
}
