//! Honest health and the API's invariants behind a failing store.
//!
//! Health answers 200 only when the store takes a real write and the disk under it has room
//! (finding 4 of issue 10: it used to answer 200 while every write failed). And whatever the
//! store does (a call refused, an answer lost after its commit, a delay), agents that retry the
//! way drover's agent does leave a history that keeps DESIGN.md section 1: what was
//! acknowledged is there, no task completes twice, counts equal tasks. Faults come from a seed
//! (`FAULT_SEED` reproduces a run).

use crate::helpers::{spawn_app_with, spawn_with_store};
use drover_api::{CompleteRequest, FailRequest, HelloRequest};
use drover_client::{Client, ClientError};
use drover_store::faults::{self, FaultPlan, Faults};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn health_is_503_low_disk_space_when_free_space_is_under_the_minimum() {
    let app = spawn_app_with(|c| c.min_free_disk = u64::MAX).await;
    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], json!("unhealthy"));
    assert_eq!(body["database"], json!("connected"));
    assert_eq!(body["code"], json!("LOW_DISK_SPACE"));
    assert!(
        body["error"].as_str().unwrap().contains("--min-free-disk"),
        "{body}"
    );
    app.finish().await;
}

#[tokio::test]
async fn health_is_200_with_no_code_when_writes_work_and_the_disk_has_room() {
    let app = spawn_app_with(|c| c.min_free_disk = 1).await;
    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("healthy"));
    assert!(
        body.get("code").is_none() && body.get("error").is_none(),
        "{body}"
    );
    app.finish().await;
}

#[tokio::test]
async fn health_is_503_store_unavailable_while_every_write_fails() {
    let faults = Faults::new(FaultPlan::none(0));
    let injected = faults.clone();
    let app = spawn_with_store(|_| {}, move |s| faults::wrap(s, injected)).await;
    assert_eq!(app.get_json("/api/v1/health").await.0, 200);

    // As on a full disk: writes answer STORE_UNAVAILABLE, reads still work.
    faults.set_writes_down(true);
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({"parameters": {"x": {"min": 1, "max": 2}}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (503, json!("STORE_UNAVAILABLE"))
    );
    assert_eq!(app.get_json("/api/v1/jobs").await.0, 200);
    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!(
        status, 503,
        "health must not say healthy while writes fail: {body}"
    );
    assert_eq!(body["status"], json!("unhealthy"));
    assert_eq!(body["database"], json!("disconnected"));
    assert_eq!(body["code"], json!("STORE_UNAVAILABLE"));

    faults.set_writes_down(false);
    let (status, body) = app.get_json("/api/v1/health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("healthy")));
    app.finish().await;
}

/// Sends `call` until it gets an answer that is not a 503, as the agent retries.
async fn until_answered<T, F, Fut>(what: &str, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..100 {
        match call().await {
            Err(ClientError::Api { status: 503, .. }) => continue,
            other => return other,
        }
    }
    panic!("{what} got no answer in 100 tries");
}

/// What one agent was told.
#[derive(Default)]
struct Acknowledged {
    /// task -> (attempt, fopt)
    completed: HashMap<String, (u32, f64)>,
    failed: usize,
}

async fn agent(client: Client, index: u64, rounds: usize) -> Acknowledged {
    let hello = HelloRequest {
        ip_address: "127.0.0.1".into(),
        ..Default::default()
    };
    let spot = until_answered("hello", || client.hello(&hello))
        .await
        .unwrap()
        .spot_id;
    let mut seen = Acknowledged::default();
    for round in 0..rounds {
        // A claim whose answer is lost is lost: its tasks come back when their lease ends.
        let Ok(claimed) = client.claim(&spot, 3).await else {
            continue;
        };
        for (i, task) in claimed.into_iter().enumerate() {
            let fopt = (index * 1_000_000 + round as u64 * 10 + i as u64) as f64;
            if (round + i) % 4 == 3 {
                let req = FailRequest {
                    spot_id: spot.clone(),
                    error: Some("injected".into()),
                    retriable: Some(true),
                    attempt: Some(task.attempt),
                };
                let answer = until_answered("fail", || client.fail(&task.id, &req)).await;
                if answer.is_ok_and(|a| a.success) {
                    seen.failed += 1;
                }
                continue;
            }
            let req = CompleteRequest {
                spot_id: spot.clone(),
                fopt: Some(fopt),
                attempt: Some(task.attempt),
                ..Default::default()
            };
            match until_answered("complete", || client.complete(&task.id, &req)).await {
                Ok(a) if a.success => {
                    let prev = seen.completed.insert(task.id.clone(), (task.attempt, fopt));
                    assert!(prev.is_none(), "{} acknowledged twice", task.id);
                }
                Ok(a) => panic!("the holder's completion was refused: {a:?}"),
                // Fenced off: the task was taken back; nothing acknowledged.
                Err(ClientError::Api { status: 409, .. }) => {}
                Err(e) => panic!("complete: {e}"),
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_retry_keep_every_invariant_when_the_store_fails_at_random() {
    let seed = faults::seed_from_env(
        "agents_that_retry_keep_every_invariant_when_the_store_fails_at_random",
    );
    let faults = Faults::new(FaultPlan::chaotic(seed));
    let injected = faults.clone();
    let app = spawn_with_store(|_| {}, move |s| faults::wrap(s, injected)).await;

    // Jobs whose creation was acknowledged, with their size.
    let mut jobs = Vec::new();
    for n in [12, 20, 8] {
        let req = serde_json::from_value(json!({
            "parameters": {"x": {"min": 1, "max": n}},
            "maxAttempts": 10,
        }))
        .unwrap();
        if let Ok(created) = app.client.create_job(&req).await {
            jobs.push((created.job_id, n as u64));
        }
    }
    let mut agents = Vec::new();
    for index in 0..3 {
        agents.push(tokio::spawn(agent(app.client.clone(), index, 25)));
    }
    let mut completed = HashMap::new();
    let mut failed = 0;
    for a in agents {
        let seen = a.await.unwrap();
        for (task, v) in seen.completed {
            assert!(
                completed.insert(task, v).is_none(),
                "completed by two agents"
            );
        }
        failed += seen.failed;
    }
    // Tasks whose claim answers were lost come back after their lease.
    app.advance(Duration::from_secs(3600));
    let _ = app.state.step(&app.state.task_reaper()).await;

    faults.set_enabled(false);
    let counts = faults.counts();
    eprintln!(
        "{} store calls: {} refused, {} answers lost after the commit, {} delayed; {} \
         completions and {failed} failures acknowledged",
        counts.calls,
        counts.failed_before,
        counts.failed_after_commit,
        counts.delayed,
        completed.len()
    );
    for (job, n) in &jobs {
        assert_eq!(app.client.job(job).await.unwrap().total_tasks, *n);
    }
    for (task, (attempt, fopt)) in &completed {
        let t = app.store().jobs.get_task(task).await.unwrap();
        assert_eq!(t.status, drover_core::TaskStatus::Done, "{t:?}");
        assert_eq!((t.attempt, t.result.fopt), (*attempt, Some(*fopt)), "{t:?}");
    }
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    let twice: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'COMPLETED'
             GROUP BY task_id HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "tasks completed twice");
    app.finish().await;
}
