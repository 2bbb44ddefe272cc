//! The background reapers in a real process, on real time with short intervals: a silent spot
//! loses its tasks, and a task past its timeout is retried, then failed.

use crate::helpers::{
    EVENT_DEADLINE, Heartbeats, Launch, ServerProcess, assert_counts_match_tasks, completion,
    eventually, hello,
};
use drover_api::{CreateJobRequest, HeartbeatRequest};
use serde_json::json;
use std::time::Duration;

fn fast_reapers() -> Launch {
    Launch::new().args([
        "--spot-reaper-interval",
        "200ms",
        "--spot-timeout",
        "1s",
        "--task-reaper-interval",
        "200ms",
    ])
}

/// Both reapers on short intervals, but a spot timeout that a heartbeat every 200 ms cannot
/// miss on a busy machine: only the task's own timeout is meant to act here.
fn fast_task_reaper() -> Launch {
    Launch::new().args([
        "--spot-reaper-interval",
        "200ms",
        "--spot-timeout",
        "5s",
        "--task-reaper-interval",
        "200ms",
    ])
}

const BEAT: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_spot_is_marked_down_and_its_tasks_go_to_another_spot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), fast_reapers()).await;
    let client = server.client();
    let job_id = client
        .create_job(&CreateJobRequest {
            algorithms: Some(json!(["PSO", "GA", "DE"])),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;

    // Spot A claims two tasks and then says nothing more.
    let silent = hello(&client).await;
    let held = client.claim(&silent, 2).await.unwrap();
    assert_eq!(held.len(), 2);

    eventually("the silent spot to be marked DOWN", EVENT_DEADLINE, || {
        let client = client.clone();
        let silent = silent.clone();
        async move {
            let spots = client.spots().await.ok()?;
            spots
                .iter()
                .any(|s| s.id == silent && s.status == "DOWN")
                .then_some(())
        }
    })
    .await;
    server
        .wait_for_log("Reaped 1 stale SPOTs, freed 2 tasks")
        .await;
    let job = client.job(&job_id).await.unwrap();
    assert_eq!((job.pending_tasks, job.running_tasks), (3, 0), "{job:?}");
    assert_counts_match_tasks(&client, &job_id).await;
    for t in &held {
        let task = client.task(&t.id).await.unwrap();
        assert_eq!(task.status, "NEW", "{task:?}");
        assert_eq!(task.attempt, 1, "the reaped attempt counts: {task:?}");
    }

    // Spot B, alive, gets everything, the freed tasks included.
    let alive = hello(&client).await;
    let _beats = Heartbeats::start(client.clone(), &alive, BEAT);
    let got = eventually("spot B to claim", EVENT_DEADLINE, || {
        let client = client.clone();
        let alive = alive.clone();
        async move { client.claim(&alive, 10).await.ok() }
    })
    .await;
    assert_eq!(got.len(), 3, "{got:?}");
    for t in &held {
        assert!(
            got.iter().any(|g| g.id == t.id && g.attempt == 2),
            "{got:?}"
        );
    }

    // A late report from the reaped spot is refused: the task has a new holder.
    let late = client
        .complete(&held[0].id, &completion(&silent, 9.0))
        .await
        .unwrap_err();
    assert_eq!(late.status(), Some(409), "{late}");

    for t in &got {
        client
            .complete(&t.id, &completion(&alive, 1.0))
            .await
            .unwrap();
    }
    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.status, "COMPLETED", "{job:?}");
    let done = client.task(&held[0].id).await.unwrap();
    assert_eq!(done.assigned_to.as_deref(), Some(alive.as_str()));
    assert_eq!(done.fopt, Some(1.0), "the late report changed nothing");

    // The silent spot comes back with a heartbeat.
    client
        .heartbeat(&HeartbeatRequest {
            spot_id: silent.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let spots = client.spots().await.unwrap();
    let back = spots.iter().find(|s| s.id == silent).unwrap();
    assert_eq!(back.status, "UP", "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_retried_then_failed_when_attempts_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), fast_task_reaper()).await;
    let client = server.client();
    let job_id = client
        .create_job(&CreateJobRequest {
            algorithms: Some(json!(["PSO"])),
            task_timeout_seconds: Some(1),
            max_attempts: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;

    // The spot stays alive throughout; only its task overruns.
    let spot = hello(&client).await;
    let _beats = Heartbeats::start(client.clone(), &spot, BEAT);
    let first = client.claim(&spot, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let task_id = first[0].id.clone();
    assert_eq!(first[0].attempt, 1);

    let task = eventually("the overrun task to go back to NEW", EVENT_DEADLINE, || {
        let client = client.clone();
        let task_id = task_id.clone();
        async move {
            let t = client.task(&task_id).await.ok()?;
            (t.status == "NEW").then_some(t)
        }
    })
    .await;
    assert_eq!(task.attempt, 1, "{task:?}");
    assert_eq!(task.assigned_to, None, "{task:?}");
    assert!(
        task.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{task:?}"
    );
    server
        .wait_for_log(&format!("Reaped task {task_id} for retry"))
        .await;
    let spots = client.spots().await.unwrap();
    assert!(
        spots.iter().any(|s| s.id == spot && s.status == "UP"),
        "a heartbeating spot stays UP: {spots:?}"
    );

    let second = eventually("the retry to be claimed", EVENT_DEADLINE, || {
        let client = client.clone();
        let spot = spot.clone();
        async move {
            let tasks = client.claim(&spot, 1).await.ok()?;
            (!tasks.is_empty()).then_some(tasks)
        }
    })
    .await;
    assert_eq!(second[0].id, task_id);
    assert_eq!(second[0].attempt, 2);

    let task = eventually("the task to fail for good", EVENT_DEADLINE, || {
        let client = client.clone();
        let task_id = task_id.clone();
        async move {
            let t = client.task(&task_id).await.ok()?;
            (t.status == "FAILED").then_some(t)
        }
    })
    .await;
    assert_eq!(task.attempt, 2, "{task:?}");
    server
        .wait_for_log(&format!(
            "Task {task_id} permanently failed after 2 attempts"
        ))
        .await;

    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.status, "FAILED", "{job:?}");
    assert_eq!(job.failed_tasks, 1, "{job:?}");
    assert_counts_match_tasks(&client, &job_id).await;

    // A report that arrives after the lease ran out is refused and changes nothing.
    let late = client
        .complete(&task_id, &completion(&spot, 0.5))
        .await
        .unwrap_err();
    assert_eq!(late.status(), Some(409), "{late}");
    let task = client.task(&task_id).await.unwrap();
    assert_eq!(task.status, "FAILED");
    assert_eq!(task.fopt, None);
}
