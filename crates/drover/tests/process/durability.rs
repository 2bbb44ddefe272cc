//! Invariant 3: once the server answered 2xx, the change survives `kill -9` and a restart.

use crate::helpers::{Launch, ServerProcess, assert_counts_match_tasks, completion, hello};
use drover_api::{CreateJobRequest, FailRequest, HeartbeatRequest};
use serde_json::json;
use std::collections::BTreeMap;

/// Long enough that no reaper takes anything back during the test: what the restarted server
/// shows must come from what was acknowledged, not from a reaper.
fn quiet_reapers() -> Launch {
    Launch::new().args(["--spot-timeout", "1h", "--task-timeout", "1h"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_kill_9_and_the_job_finishes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::start(dir.path(), quiet_reapers()).await;
    let client = first.client();

    let mut parameters = serde_json::Map::new();
    parameters.insert("x".into(), json!({"min": 1, "max": 20, "step": 1}));
    let created = client
        .create_job(&CreateJobRequest {
            name: Some("durability".into()),
            parameters: Some(parameters),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.total_tasks, 20);
    let job_id = created.job_id;

    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 10).await.unwrap();
    assert_eq!(claimed.len(), 10);

    // Six completions, each with its own objective value.
    let mut expected_fopt = BTreeMap::new();
    for (i, task) in claimed[..6].iter().enumerate() {
        let fopt = 0.5 + i as f64;
        let answer = client
            .complete(&task.id, &completion(&spot, fopt))
            .await
            .unwrap();
        assert!(answer.success);
        expected_fopt.insert(task.id.clone(), fopt);
    }
    // One retriable failure: back to NEW with its attempt recorded.
    let failed = &claimed[6];
    let answer = client
        .fail(
            &failed.id,
            &FailRequest {
                spot_id: spot.clone(),
                error: Some("OutOfMemoryError".into()),
                retriable: Some(true),
                attempt: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.will_retry, Some(true));
    let running: Vec<String> = claimed[7..].iter().map(|t| t.id.clone()).collect();

    first.kill9();
    assert!(
        !first.log().contains("server stopped"),
        "kill -9 must not let the server shut down cleanly"
    );

    let second = ServerProcess::start(dir.path(), quiet_reapers()).await;
    let client = second.client();

    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.total_tasks, 20);
    assert_eq!(job.completed_tasks, 6, "{job:?}");
    assert_eq!(job.running_tasks, 3, "{job:?}");
    assert_eq!(job.pending_tasks, 11, "{job:?}");
    assert_eq!(job.failed_tasks, 0, "{job:?}");
    assert_eq!(job.status, "RUNNING");
    assert_counts_match_tasks(&client, &job_id).await;

    // Each task is as it was acknowledged, attempts included.
    let tasks = client.all_tasks(&job_id, None).await.unwrap();
    for t in &tasks {
        if let Some(fopt) = expected_fopt.get(&t.id) {
            assert_eq!(t.status, "DONE", "{t:?}");
            assert_eq!(t.fopt, Some(*fopt), "{t:?}");
            assert_eq!(t.attempt, 1, "{t:?}");
            assert_eq!(t.assigned_to.as_deref(), Some(spot.as_str()), "{t:?}");
        } else if t.id == failed.id {
            assert_eq!(t.status, "NEW", "{t:?}");
            assert_eq!(t.attempt, 1, "{t:?}");
            assert_eq!(t.assigned_to, None, "{t:?}");
            assert!(
                t.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("OutOfMemoryError")),
                "{t:?}"
            );
        } else if running.contains(&t.id) {
            assert_eq!(t.status, "RUNNING", "{t:?}");
            assert_eq!(t.attempt, 1, "{t:?}");
            assert_eq!(t.assigned_to.as_deref(), Some(spot.as_str()), "{t:?}");
        } else {
            assert_eq!(t.status, "NEW", "{t:?}");
            assert_eq!(t.attempt, 0, "{t:?}");
        }
    }
    let results = client.results(&job_id, &Default::default()).await.unwrap();
    assert_eq!(results.total_completed, 6);
    let stored: BTreeMap<String, f64> = results
        .results
        .iter()
        .map(|r| (r.task_id.clone(), r.fopt.expect("fopt")))
        .collect();
    assert_eq!(stored, expected_fopt);

    // The same agent comes back: it heartbeats, reports what it was running, and drains the rest.
    client
        .heartbeat(&HeartbeatRequest {
            spot_id: spot.clone(),
            ip_address: Some("127.0.0.1".into()),
            running_tasks: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    for id in &running {
        let answer = client.complete(id, &completion(&spot, 42.0)).await.unwrap();
        assert!(answer.success);
        assert_eq!(answer.message, None, "a first completion, not a repeat");
    }
    let rest = client.claim(&spot, 100).await.unwrap();
    assert_eq!(rest.len(), 11);
    assert!(rest.iter().any(|t| t.id == failed.id && t.attempt == 2));
    for task in &rest {
        client
            .complete(&task.id, &completion(&spot, 7.0))
            .await
            .unwrap();
    }

    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.status, "COMPLETED", "{job:?}");
    assert_eq!(job.completed_tasks, 20, "{job:?}");
    assert_eq!((job.pending_tasks, job.running_tasks), (0, 0));
    assert_counts_match_tasks(&client, &job_id).await;

    let csv = client.results_csv(&job_id).await.unwrap();
    assert_eq!(csv.lines().count(), 21, "a header and 20 rows:\n{csv}");
    assert!(csv.starts_with("taskId,x,fopt,"), "{csv}");
}
