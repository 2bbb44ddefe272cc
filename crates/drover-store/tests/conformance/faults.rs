//! The task lifecycle through a store that fails: every call may be delayed, refused before it
//! reaches the store, or (for a write) committed with its answer lost, at points drawn from a
//! seed (`FAULT_SEED` reproduces a run; the seed is printed). Callers behave as drover's agent
//! does: a report that gets no answer is sent again, unchanged, until it gets one; a claim that
//! gets no answer is simply lost (its tasks come back when their lease ends).
//!
//! The history of acknowledged answers is then checked against DESIGN.md section 1:
//! 1. no task is DONE twice, and no two attempts of a task ran at once (the attempt records);
//! 2. a repeated report is a success that changes nothing;
//! 3. every acknowledged completion and failure is in the store;
//! 4. job counts equal task counts.

use crate::{new_job, secs, sweep, t0};
use drover_core::{NodeInfo, NodeStats, ReportKind, ReportOutcome, TaskResult, TaskStatus};
use drover_store::faults::{self, FaultCounts, FaultPlan, Faults, SeededRng};
use drover_store::{Report, SqliteStore, StoreError, Stores};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;

const ROUNDS: u64 = 6;
const STEPS: usize = 250;
const NODES: usize = 3;
const TASKS: i64 = 24;
/// How many times a caller sends a call that gets no answer; at a one-in-five fault rate the
/// chance of running out is below 10^-60.
const TRIES: usize = 100;

/// Sends `call` until it gets an answer that is not `Unavailable`, as the agent retries.
async fn retried<T, F, Fut>(what: &str, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    for _ in 0..TRIES {
        match call().await {
            Err(StoreError::Unavailable(_)) => continue,
            other => return other,
        }
    }
    panic!("{what} got no answer in {TRIES} tries");
}

/// What the callers were told.
#[derive(Default)]
struct History {
    /// task -> (attempt, fopt) of its acknowledged completion.
    completed: HashMap<String, (u32, f64)>,
    /// (task, attempt) of acknowledged failures.
    failed: Vec<(String, u32)>,
    /// Every report that was acknowledged, to send again at the end.
    acknowledged: Vec<Report>,
    jobs: Vec<String>,
}

async fn run_round(seed: u64) -> (History, FaultCounts) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let faults = Faults::new(FaultPlan::chaotic(seed));
    let store = faults::wrap(
        SqliteStore::open(&path).unwrap().into_stores(),
        faults.clone(),
    );
    let mut pick = SeededRng::new(seed);
    let mut now = t0();
    let mut history = History::default();

    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let info = NodeInfo {
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        // A registration whose answer was lost leaves a node nobody uses; harmless.
        let node = retried("register", || {
            store.nodes.register_node(info.clone().into(), None, now)
        })
        .await;
        nodes.push(node.unwrap().id);
    }
    // task -> (node, attempt) as the claimers were told; ordered, so a seed picks the same
    // tasks every run.
    let mut held: BTreeMap<String, (usize, u32)> = BTreeMap::new();
    let mut next_fopt = 0.0;

    for _ in 0..STEPS {
        match pick.below(10) {
            0 => {
                // A job creation whose answer was lost is a job the client does not know of;
                // the client may create it again, so both exist. Only what was acknowledged
                // must be found.
                if let Ok(job) = store
                    .jobs
                    .create_job(
                        new_job(3, 30, 0),
                        sweep(pick.below(TASKS as usize) as i64 + 1),
                        now,
                    )
                    .await
                {
                    history.jobs.push(job.id);
                }
            }
            1..=3 => {
                let node = pick.below(NODES);
                let max = pick.below(4) as u32 + 1;
                if let Ok(claimed) = store.jobs.claim(&nodes[node], max, now).await {
                    for c in claimed {
                        // Still in `held` only if the answer of the release that took it back
                        // was lost; then this is a later attempt.
                        if let Some((_, before)) = held.insert(c.id.clone(), (node, c.attempt)) {
                            assert!(c.attempt > before, "{} handed out while held", c.id);
                        }
                    }
                }
            }
            4..=6 => {
                let Some(task) = held.keys().nth(pick.below(held.len().max(1))).cloned() else {
                    continue;
                };
                let (node, attempt) = held[&task];
                next_fopt += 1.0;
                let complete = pick.below(3) > 0;
                let report = Report {
                    task_id: task.clone(),
                    node_id: nodes[node].clone(),
                    attempt: Some(attempt),
                    kind: if complete {
                        ReportKind::Complete(TaskResult {
                            fopt: Some(next_fopt),
                            ..Default::default()
                        })
                    } else {
                        ReportKind::Fail {
                            error: "injected".into(),
                            retriable: pick.below(2) == 0,
                        }
                    },
                };
                let outcome = retried("report", || store.jobs.report(vec![report.clone()], now))
                    .await
                    .unwrap()[0];
                held.remove(&task);
                match outcome {
                    // A first answer, or the answer to a retry whose first try committed.
                    ReportOutcome::Completed | ReportOutcome::AlreadyCompleted => {
                        assert!(complete, "{outcome:?} for a failure");
                        let prev = history.completed.insert(task.clone(), (attempt, next_fopt));
                        assert!(prev.is_none(), "{task} acknowledged as completed twice");
                        history.acknowledged.push(report);
                    }
                    // A failure, or the retry of one whose first try committed (a final
                    // failure's repeat answers AlreadyTerminal).
                    ReportOutcome::Failed { .. }
                    | ReportOutcome::AlreadyReported { .. }
                    | ReportOutcome::AlreadyTerminal => {
                        assert!(!complete, "{outcome:?} for a completion");
                        history.failed.push((task, attempt));
                        history.acknowledged.push(report);
                    }
                    // The lease ran out and the reaper took it back first: fenced off.
                    ReportOutcome::NotHolder => {}
                    other => panic!("the holder's report of {task} was refused: {other:?}"),
                }
            }
            7 => now += secs(pick.below(40) as i64),
            8 => {
                let node = pick.below(NODES);
                let _ = store
                    .nodes
                    .heartbeat(&nodes[node], NodeStats::default(), now)
                    .await;
            }
            _ => {
                // A lost answer here means the callers keep believing they hold a task that
                // was taken back; their late report is then fenced off (NotHolder), as above.
                if let Ok(released) = store.jobs.release_expired_tasks(now).await {
                    for r in released {
                        held.remove(&r.task_id);
                    }
                }
            }
        }
    }

    // The final reading goes past the faults.
    faults.set_enabled(false);
    let counts = faults.counts();
    check(&store, &path, &history, now).await;
    (history, counts)
}

async fn check(
    store: &Stores,
    path: &std::path::Path,
    history: &History,
    now: drover_core::Timestamp,
) {
    // 3: every acknowledged change is there.
    for id in &history.jobs {
        store.jobs.get_job(id).await.unwrap();
    }
    for (task, (attempt, fopt)) in &history.completed {
        let t = store.jobs.get_task(task).await.unwrap();
        assert_eq!(t.status, TaskStatus::Done, "{t:?}");
        assert_eq!((t.attempt, t.result.fopt), (*attempt, Some(*fopt)), "{t:?}");
    }
    let db = rusqlite::Connection::open(path).unwrap();
    for (task, attempt) in &history.failed {
        let outcome: String = db
            .query_row(
                "SELECT outcome FROM task_attempts WHERE task_id = ?1 AND attempt = ?2",
                rusqlite::params![task, attempt],
                |r| r.get(0),
            )
            .unwrap();
        assert!(outcome.starts_with("FAILED"), "{task}#{attempt}: {outcome}");
    }
    // 1: no task completed twice, and no task has two attempts open.
    let twice: Vec<String> = db
        .prepare(
            "SELECT task_id FROM task_attempts WHERE outcome IN ('COMPLETED', 'RUNNING')
             GROUP BY task_id HAVING sum(outcome = 'COMPLETED') > 1 OR sum(outcome = 'RUNNING') > 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(twice.is_empty(), "tasks completed or held twice: {twice:?}");
    let done_without_attempt: i64 = db
        .query_row(
            "SELECT count(*) FROM tasks t WHERE status = 'DONE' AND NOT EXISTS (
                 SELECT 1 FROM task_attempts a
                 WHERE a.task_id = t.id AND a.attempt = t.attempt AND a.outcome = 'COMPLETED')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        done_without_attempt, 0,
        "a DONE task without its completed attempt"
    );
    // 4: counts equal tasks.
    crate::assert_counts_consistent(store).await;
    // 2: each acknowledged report, sent once more, is a success that changes nothing.
    for report in &history.acknowledged {
        let before = store.jobs.get_task(&report.task_id).await.unwrap();
        let outcome = store.jobs.report(vec![report.clone()], now).await.unwrap()[0];
        assert!(
            matches!(
                outcome,
                ReportOutcome::AlreadyCompleted
                    | ReportOutcome::AlreadyReported { .. }
                    | ReportOutcome::AlreadyTerminal
                    // The task was claimed again after a retriable failure; the old attempt's
                    // repeat is fenced off, which also changes nothing.
                    | ReportOutcome::NotHolder
            ),
            "a repeated report of {} answered {outcome:?}",
            report.task_id
        );
        assert_eq!(before, store.jobs.get_task(&report.task_id).await.unwrap());
    }
}

#[tokio::test]
async fn invariants_hold_when_the_store_fails_at_random_points() {
    let seed = faults::seed_from_env("invariants_hold_when_the_store_fails_at_random_points");
    let mut total = FaultCounts::default();
    let (mut completed, mut failed) = (0, 0);
    for round in 0..ROUNDS {
        let (history, counts) = run_round(seed.wrapping_add(round)).await;
        completed += history.completed.len();
        failed += history.failed.len();
        total.calls += counts.calls;
        total.failed_before += counts.failed_before;
        total.failed_after_commit += counts.failed_after_commit;
        total.delayed += counts.delayed;
    }
    eprintln!(
        "{ROUNDS} rounds: {} store calls, {} refused before the store, {} answers lost after \
         the commit, {} delayed; {completed} completions and {failed} failures acknowledged \
         and checked",
        total.calls, total.failed_before, total.failed_after_commit, total.delayed
    );
    assert!(total.failed_after_commit > 0 && total.failed_before > 0);
}
