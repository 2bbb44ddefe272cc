//! `kill -9` torture: the real server under load from several concurrent clients (hello, job
//! creation, claims, completions, failures), killed with SIGKILL at seeded random moments and
//! restarted on the same database, again and again. Every answer a client got is recorded; at
//! the end the history is checked against DESIGN.md section 1: no acknowledged change lost
//! (invariant 3), no task completed twice (the attempt records), job counters equal task counts
//! (invariant 4), and `PRAGMA integrity_check` is ok.
//!
//! `TORTURE_SEED` reproduces the kill moments and the clients' choices (the seed is printed);
//! `TORTURE_KILLS` changes the number of kills (default [`KILLS`]). The backend is a parameter:
//! a PostgreSQL run is one more `#[tokio::test]` line naming its [`Backend`].

use crate::helpers::{
    Launch, ServerProcess, assert_no_task_completed_or_held_twice, completion, free_port,
};
use drover_api::{CreateJobRequest, FailRequest, HelloRequest};
use drover_client::{Client, ClientError};
use drover_store::faults::SeededRng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills per run; with the load between them the test takes about 15 s on two cores.
const KILLS: usize = 10;
const CLIENTS: u64 = 4;

/// Where the server keeps its state, and how the history is read back from it.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged_on_sqlite() {
    torture(Backend::Sqlite).await;
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// Everything a client was told 2xx.
#[derive(Default)]
struct History {
    /// job -> total tasks
    jobs: HashMap<String, u64>,
    /// task -> (attempt, fopt)
    completed: HashMap<String, (u32, f64)>,
    /// (task, attempt)
    failed: Vec<(String, u32)>,
    spots: usize,
}

impl History {
    fn operations(&self) -> usize {
        self.jobs.len() + self.completed.len() + self.failed.len() + self.spots
    }
}

/// Whether an error means "no answer" (the server is down or was killed mid-request), so the
/// outcome is unknown and the call is sent again.
fn unanswered(e: &ClientError) -> bool {
    !matches!(e, ClientError::Api { status, .. } if *status != 503)
}

/// Sends `call` until it is answered (or the load stops), as the agent does across restarts.
async fn until_answered<T, F, Fut>(stop: &AtomicBool, mut call: F) -> Option<Result<T, ClientError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        match call().await {
            Err(e) if unanswered(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered => return Some(answered),
        }
    }
}

async fn client_load(
    base: String,
    index: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let client = Client::new(&base);
    let mut pick = SeededRng::new(seed.wrapping_add(index + 1));
    let hello = HelloRequest {
        ip_address: "127.0.0.1".into(),
        total_cores: Some(2),
        ..Default::default()
    };
    let Some(Ok(spot)) = until_answered(&stop, || client.hello(&hello)).await else {
        return;
    };
    history.lock().unwrap().spots += 1;
    let spot = spot.spot_id;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if pick.below(6) == 0 {
            let total = pick.below(30) as u64 + 1;
            let req: CreateJobRequest = serde_json::from_value(json!({
                "parameters": {"x": {"min": 1, "max": total}},
                "maxAttempts": 50,
            }))
            .unwrap();
            // Not retried: a creation whose answer was lost would be a second job.
            if let Ok(job) = client.create_job(&req).await {
                history.lock().unwrap().jobs.insert(job.job_id, total);
            }
            continue;
        }
        let claimed = match client.claim(&spot, pick.below(4) as u32 + 1).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        for task in claimed {
            if pick.below(4) == 0 {
                let req = FailRequest {
                    spot_id: spot.clone(),
                    error: Some("torture".into()),
                    retriable: Some(true),
                    attempt: Some(task.attempt),
                };
                match until_answered(&stop, || client.fail(&task.id, &req)).await {
                    Some(Ok(a)) if a.success => {
                        history.lock().unwrap().failed.push((task.id, task.attempt));
                    }
                    Some(Ok(a)) => panic!("a holder's failure was refused: {a:?}"),
                    Some(Err(e)) => panic!("a holder's failure was refused: {e}"),
                    None => {}
                }
            } else {
                let fopt = (index * 1_000_000_000 + n * 100) as f64 + task.attempt as f64;
                let mut req = completion(&spot, fopt);
                req.attempt = Some(task.attempt);
                match until_answered(&stop, || client.complete(&task.id, &req)).await {
                    Some(Ok(a)) if a.success => {
                        let prev = history
                            .lock()
                            .unwrap()
                            .completed
                            .insert(task.id.clone(), (task.attempt, fopt));
                        assert!(
                            prev.is_none(),
                            "{} acknowledged as completed twice",
                            task.id
                        );
                    }
                    Some(Ok(a)) => panic!("a holder's completion was refused: {a:?}"),
                    Some(Err(e)) => panic!("a holder's completion was refused: {e}"),
                    None => {}
                }
            }
        }
    }
}

async fn torture(backend: Backend) {
    let seed = env_u64("TORTURE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let kills = env_u64("TORTURE_KILLS").map_or(KILLS, |k| k as usize);
    eprintln!("torture on {backend:?}: TORTURE_SEED={seed} TORTURE_KILLS={kills}");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // No reaper takes anything back during the run: a task stays with the client that holds
    // it, so every report the clients send is the holder's.
    let launch = Launch::new().args(["--spot-timeout", "1h", "--task-timeout", "1h"]);
    let port = free_port();
    let mut server = ServerProcess::start_on(dir.path(), launch.clone(), port).await;

    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::default()));
    let load: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_load(
                server.base_url(),
                i,
                seed,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();

    let mut pick = SeededRng::new(seed);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + (pick.below(1200) as u64))).await;
        server.kill9();
        // Down for a moment, as a real crash is: clients see refused connections.
        tokio::time::sleep(Duration::from_millis(pick.below(200) as u64)).await;
        server = ServerProcess::start_on(dir.path(), launch.clone(), port).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());

    let history = history.lock().unwrap();
    let checked = match backend {
        Backend::Sqlite => check_sqlite(server.db_path(), &history),
    };
    eprintln!(
        "torture on {backend:?}: {kills} kills survived in {:?}; {} acknowledged operations \
         ({} jobs, {} completions, {} failures, {} spots) and {checked} rows checked; nothing lost",
        started.elapsed(),
        history.operations(),
        history.jobs.len(),
        history.completed.len(),
        history.failed.len(),
        history.spots,
    );
    assert!(
        !history.completed.is_empty(),
        "the load must have completed something"
    );
}

/// Checks the history against the SQLite file; returns how many rows it looked at.
fn check_sqlite(path: &std::path::Path, history: &History) -> usize {
    let db = rusqlite::Connection::open(path).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for (job, total) in &history.jobs {
        let stored: u64 = db
            .query_row("SELECT total_tasks FROM jobs WHERE id = ?1", [job], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("acknowledged job {job} lost: {e}"));
        assert_eq!(stored, *total, "job {job}");
        // Tasks get rows when first claimed: the rows are the job's first `materialised`.
        let (tasks, materialised, last): (u64, u64, Option<u64>) = db
            .query_row(
                "SELECT count(*), (SELECT materialised FROM jobs WHERE id = ?1), max(idx)
                 FROM tasks WHERE job_id = ?1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert!(materialised <= *total, "job {job}");
        assert_eq!(tasks, materialised, "job {job} lost tasks");
        assert_eq!(last.map_or(0, |i| i + 1), materialised, "job {job}");
    }
    for (task, (attempt, fopt)) in &history.completed {
        let (status, stored_attempt, stored_fopt): (String, u32, Option<f64>) = db
            .query_row(
                "SELECT status, attempt, fopt FROM tasks WHERE id = ?1",
                [task],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (status.as_str(), stored_attempt, stored_fopt),
            ("DONE", *attempt, Some(*fopt)),
            "acknowledged completion of {task} lost or changed"
        );
    }
    for (task, attempt) in &history.failed {
        let outcome: String = db
            .query_row(
                "SELECT outcome FROM task_attempts WHERE task_id = ?1 AND attempt = ?2",
                rusqlite::params![task, attempt],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("acknowledged failure of {task}#{attempt} lost: {e}"));
        assert!(outcome.starts_with("FAILED"), "{task}#{attempt}: {outcome}");
    }
    assert_no_task_completed_or_held_twice(&db);
    let wrong_counts: i64 = db
        .query_row(
            // Tasks without rows are NEW, or CANCELLED with their job.
            "SELECT count(*) FROM jobs j WHERE
               new_tasks       <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'NEW')
                                  + (1 - j.cancelled) * (j.total_tasks - j.materialised)
            OR running_tasks   <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'RUNNING')
            OR completed_tasks <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'DONE')
            OR failed_tasks    <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'FAILED')
            OR cancelled_tasks <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'CANCELLED')
                                  + j.cancelled * (j.total_tasks - j.materialised)
            OR total_tasks     <> (SELECT count(*) FROM tasks t WHERE t.job_id = j.id)
                                  + j.total_tasks - j.materialised",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(wrong_counts, 0, "job counters differ from task counts");
    let rows: i64 = db
        .query_row(
            "SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM task_attempts)
                  + (SELECT count(*) FROM jobs)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    rows as usize
}
