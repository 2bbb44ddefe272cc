//! Group commit under `kill -9`: many clients complete tasks at once, one HTTP request per
//! complete, so the store commits their changes in shared transactions; the server is killed
//! mid-run and restarted on the same file. Every complete that was answered 2xx must be DONE
//! after the restart, with the attempt and result it was acknowledged with, and no task may be
//! DONE (or held) twice: a write is acknowledged only once the group holding it is durable.

use crate::helpers::{
    Launch, ServerProcess, assert_counts_match_tasks, assert_no_task_completed_or_held_twice,
    completion, hello, metrics_text,
};
use drover_api::CreateJobRequest;
use drover_client::Client;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKS: u64 = 2_000;
const CLIENTS: u64 = 32;
/// The server is killed once this many completes were acknowledged: well into the run, with
/// most of the job still to do, so requests are in flight when it dies.
const KILL_AFTER: usize = 600;

/// task -> (attempt, fopt), for every complete answered 2xx.
type Acknowledged = Arc<Mutex<HashMap<String, (u32, f64)>>>;

/// Claims and completes tasks, one request per complete, until the server stops answering.
/// Before the kill every call must succeed; after it, no answer is expected.
async fn complete_until_killed(
    base: String,
    index: u64,
    killed: Arc<AtomicBool>,
    acked: Acknowledged,
) {
    let client = Client::new(&base);
    let spot = hello(&client).await;
    let mut n = 0u64;
    loop {
        let claimed = match client.claim(&spot, (index % 3) as u32 + 1).await {
            Ok(claimed) if claimed.is_empty() => return,
            Ok(claimed) => claimed,
            Err(_) if killed.load(Ordering::SeqCst) => return,
            Err(e) => panic!("a claim failed before the kill: {e}"),
        };
        for task in claimed {
            n += 1;
            let fopt = (index * 1_000_000 + n) as f64;
            let mut req = completion(&spot, fopt);
            req.attempt = Some(task.attempt);
            match client.complete(&task.id, &req).await {
                Ok(answer) if answer.success => {
                    let prev = acked
                        .lock()
                        .unwrap()
                        .insert(task.id.clone(), (task.attempt, fopt));
                    assert!(prev.is_none(), "{} acknowledged twice", task.id);
                }
                Ok(answer) => panic!("the holder's complete was refused: {answer:?}"),
                // No answer: the outcome is unknown, and the test asserts nothing about it.
                Err(_) if killed.load(Ordering::SeqCst) => return,
                Err(e) => panic!("a complete failed before the kill: {e}"),
            }
        }
    }
}

/// Reads a counter from the server's `/metrics`.
async fn metric(base: &str, name: &str) -> u64 {
    let text = metrics_text(base).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_complete_survives_kill_9_while_many_clients_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    // No reaper takes anything back: what the restarted server shows comes from what was
    // acknowledged.
    let launch = Launch::new().args(["--spot-timeout", "1h", "--task-timeout", "1h"]);
    let mut first = ServerProcess::start(dir.path(), launch.clone()).await;
    let base = first.base_url();
    let created = first
        .client()
        .create_job(&CreateJobRequest {
            name: Some("group commit".into()),
            parameters: Some(
                json!({"x": {"min": 1, "max": TASKS, "step": 1}})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.total_tasks, TASKS);
    let job_id = created.job_id;

    let killed = Arc::new(AtomicBool::new(false));
    let acked: Acknowledged = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(complete_until_killed(
                base.clone(),
                i,
                killed.clone(),
                acked.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the clients stalled at {} completes:\n{}",
            acked.lock().unwrap().len(),
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Concurrent writes did share commits (the store counts both).
    let (commits, writes) = (
        metric(&base, "drover_store_commits_total").await,
        metric(&base, "drover_store_writes_total").await,
    );
    assert!(commits < writes, "{commits} commits for {writes} writes");
    killed.store(true, Ordering::SeqCst);
    first.kill9();
    for c in clients {
        c.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() < TASKS as usize,
        "the kill must come mid-run: {} of {TASKS} were done",
        acked.len()
    );

    let second = ServerProcess::start(dir.path(), launch).await;
    let client = second.client();
    let tasks = client.all_tasks(&job_id, None).await.unwrap();
    assert_eq!(tasks.len() as u64, TASKS);
    let by_id: HashMap<&str, _> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    for (id, (attempt, fopt)) in &acked {
        let t = by_id[id.as_str()];
        assert_eq!(
            (t.status.as_str(), t.attempt, t.fopt),
            ("DONE", *attempt, Some(*fopt)),
            "the acknowledged complete of {id} was lost or changed"
        );
    }
    let job = client.job(&job_id).await.unwrap();
    assert!(
        job.completed_tasks >= acked.len() as u64,
        "{} DONE, {} acknowledged",
        job.completed_tasks,
        acked.len()
    );
    assert_counts_match_tasks(&client, &job_id).await;

    // The attempt records: no task completed or held twice, and one completed attempt per
    // DONE task.
    let db = rusqlite::Connection::open(second.db_path()).unwrap();
    assert_no_task_completed_or_held_twice(&db);
    let completed_attempts: u64 = db
        .query_row(
            "SELECT count(*) FROM task_attempts WHERE outcome = 'COMPLETED'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(completed_attempts, job.completed_tasks);
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    eprintln!(
        "group commit: {} completes acknowledged before kill -9 ({commits} commits held {writes} \
         writes), all DONE after restart",
        acked.len()
    );
}
