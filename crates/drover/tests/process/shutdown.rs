//! A clean shutdown: SIGTERM stops the server with status 0, and what it held is there after a
//! restart.

use crate::helpers::{Launch, ServerProcess, assert_counts_match_tasks, completion, hello};
use drover_api::CreateJobRequest;
use serde_json::json;

/// No spot is reaped while the test runs, however slow the machine.
fn patient() -> Launch {
    Launch::new().args(["--spot-timeout", "1h"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_and_a_restart_finds_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::start(dir.path(), patient()).await;
    let client = first.client();
    let job_id = client
        .create_job(&CreateJobRequest {
            name: Some("before shutdown".into()),
            algorithms: Some(json!(["PSO", "GA"])),
            iterations: Some(json!({"min": 100, "max": 300, "step": 100})),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    client
        .complete(&claimed[0].id, &completion(&spot, 0.25))
        .await
        .unwrap();

    let status = first.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let log = first.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("server stopped"), "{log}");
    // A clean stop checkpoints the write-ahead log into the database file.
    let wal = dir.path().join("drover.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{} still holds data after a clean shutdown",
        wal.display()
    );

    let second = ServerProcess::start(dir.path(), patient()).await;
    let client = second.client();
    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.name.as_deref(), Some("before shutdown"));
    assert_eq!(job.total_tasks, 6);
    assert_eq!(job.completed_tasks, 1, "{job:?}");
    assert_eq!(job.running_tasks, 1, "{job:?}");
    assert_eq!(job.pending_tasks, 4, "{job:?}");
    assert_counts_match_tasks(&client, &job_id).await;
    let done = client.task(&claimed[0].id).await.unwrap();
    assert_eq!(done.status, "DONE");
    assert_eq!(done.fopt, Some(0.25));
    let spots = client.spots().await.unwrap();
    assert!(spots.iter().any(|s| s.id == spot), "{spots:?}");
    // The spot that was running a task can still report it to the new process.
    let answer = client
        .complete(&claimed[1].id, &completion(&spot, 0.5))
        .await
        .unwrap();
    assert!(answer.success);

    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), Launch::new()).await;
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(server.log().contains("server stopped"));
}
