//! The store conformance suite: what every `Store` implementation must do.
//!
//! Each scenario is a plain async function over `&dyn Store`; the `conformance!` macro
//! instantiates all of them for one backend. SQLite runs always; a PostgreSQL store adds one
//! `conformance!(postgres, ...)` line. Every scenario ends by checking invariant 4 (job counts
//! equal task counts) through `audit_job_counts`.

use chrono::{Duration as Span, TimeZone, Utc};
use drover_core::run::RunSpec;
use drover_core::sweep::{Dimension, Sweep, SweepSpec, Values};
use drover_core::{
    JobStatus, NodeInfo, NodeStats, NodeStatus, ReportKind, ReportOutcome, RunnerStatus,
    TaskResult, TaskStatus, Timestamp,
};
use drover_store::{NewJob, NewRunner, Page, Report, Reservation, SqliteStore, Store, StoreError};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A store under test and whatever keeps its backing storage alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap()
}

fn secs(s: i64) -> Span {
    Span::seconds(s)
}

fn new_job(max_attempts: u32, timeout_secs: u64, priority: i64) -> NewJob {
    NewJob {
        name: Some("test".into()),
        priority,
        max_attempts,
        task_timeout: Duration::from_secs(timeout_secs),
        spec: json!({}),
        run: None,
    }
}

fn sweep(n: i64) -> Sweep {
    Sweep::new(
        SweepSpec {
            dimensions: vec![Dimension {
                name: "x".into(),
                field: "x".into(),
                values: Values::Range {
                    min: 1.into(),
                    max: n.into(),
                    step: 1.into(),
                },
            }],
            ..Default::default()
        },
        1_000_000,
    )
    .unwrap()
}

async fn node(store: &dyn Store, now: Timestamp) -> String {
    store
        .register_node(
            NodeInfo {
                address: "127.0.0.1".into(),
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap()
        .id
}

fn complete(task: &str, node: &str, fopt: f64) -> Report {
    Report {
        task_id: task.into(),
        node_id: node.into(),
        attempt: None,
        kind: ReportKind::Complete(TaskResult {
            runtime_ms: Some(10),
            iter: Some(1),
            fopt: Some(fopt),
            result_json: None,
            output: Some(format!("fopt = {fopt}\n")),
        }),
    }
}

fn fail(task: &str, node: &str, retriable: bool) -> Report {
    Report {
        task_id: task.into(),
        node_id: node.into(),
        attempt: None,
        kind: ReportKind::Fail {
            error: "boom".into(),
            retriable,
        },
    }
}

async fn report_one(store: &dyn Store, r: Report, now: Timestamp) -> ReportOutcome {
    store.report(vec![r], now).await.unwrap()[0]
}

/// Invariant 4, checked by the store's own audit and by the counts adding up.
pub async fn assert_counts_consistent(store: &dyn Store) {
    let mismatches = store.audit_job_counts().await.unwrap();
    assert!(
        mismatches.is_empty(),
        "job counts differ from task counts: {mismatches:?}"
    );
    for job in store
        .list_jobs(None, Page::first(1000))
        .await
        .unwrap()
        .items
    {
        assert!(job.counts.is_consistent(), "{job:?}");
    }
}

pub async fn create_job_expands_every_task(store: &dyn Store) {
    let job = store
        .create_job(new_job(3, 60, 0), sweep(6), t0())
        .await
        .unwrap();
    assert_eq!(job.counts.total, 6);
    assert_eq!(job.counts.new, 6);
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.parameter_names, vec!["x".to_string()]);

    let first = store
        .list_tasks(&job.id, None, Page::first(4))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 4);
    let second = store
        .list_tasks(
            &job.id,
            None,
            Page {
                cursor: first.next_cursor,
                limit: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_cursor, None);
    let xs: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|t| t.payload["x"].clone())
        .collect();
    assert_eq!(xs, (1..=6).map(|i| json!(i)).collect::<Vec<_>>());

    assert!(matches!(
        store.get_job("job-nope").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.list_tasks("job-nope", None, Page::first(10)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn a_job_keeps_its_run_spec(store: &dyn Store) {
    let run = RunSpec {
        command: vec!["opt".into(), "--x={x}".into()],
        env: [("SEED".to_string(), "{taskId}".to_string())].into(),
        retry_on_failure: false,
    };
    let job = NewJob {
        run: Some(run.clone()),
        ..new_job(1, 60, 0)
    };
    let created = store.create_job(job, sweep(1), t0()).await.unwrap();
    assert_eq!(created.run.as_ref(), Some(&run));
    assert_eq!(store.get_job(&created.id).await.unwrap().run, Some(run));
    let plain = store
        .create_job(new_job(1, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    assert_eq!(store.get_job(&plain.id).await.unwrap().run, None);
}

pub async fn claims_take_highest_priority_then_oldest(store: &dyn Store) {
    let low = store
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    let high = store
        .create_job(new_job(3, 60, 5), sweep(2), t0())
        .await
        .unwrap();
    let n = node(store, t0()).await;
    let claimed = store.claim(&n, 3, t0()).await.unwrap();
    let jobs: Vec<_> = claimed.iter().map(|c| c.job_id.as_str()).collect();
    assert_eq!(
        jobs,
        vec![high.id.as_str(), high.id.as_str(), low.id.as_str()]
    );
    assert!(claimed.iter().all(|c| c.attempt == 1));
    assert_eq!(claimed[0].lease_expires_at, t0() + secs(60));
    let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
    assert_eq!(payload, json!({"x": 1}));

    let task = store.get_task(&claimed[0].id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.assigned_to.as_deref(), Some(n.as_str()));
    assert_eq!(
        store.get_job(&high.id).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(store.claim(&n, 10, t0()).await.unwrap().len(), 1);
    assert!(store.claim(&n, 10, t0()).await.unwrap().is_empty());
    assert_counts_consistent(store).await;
}

pub async fn claims_need_a_known_live_node(store: &dyn Store) {
    store
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    assert!(matches!(
        store.claim("spot-nope", 1, t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    let n = node(store, t0()).await;
    let down = store
        .mark_silent_nodes_down(t0() + secs(1), t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![n.clone()]);
    assert!(matches!(
        store.claim(&n, 1, t0()).await,
        Err(StoreError::NodeDown(_))
    ));
    // A heartbeat brings it back.
    let back = store
        .heartbeat(&n, NodeStats::default(), t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(back.status, NodeStatus::Up);
    assert_eq!(store.claim(&n, 1, t0() + secs(2)).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .heartbeat("spot-nope", NodeStats::default(), t0())
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn heartbeats_update_live_figures(store: &dyn Store) {
    let n = node(store, t0()).await;
    let stats = NodeStats {
        cpu_load: Some(45.5),
        running_tasks: Some(2),
        total_cores: Some(8),
        ..Default::default()
    };
    let after = store.heartbeat(&n, stats, t0() + secs(3)).await.unwrap();
    assert_eq!(after.cpu_load, Some(45.5));
    assert_eq!(after.running_tasks, 2);
    assert_eq!(after.info.capacity.cores, Some(8));
    assert_eq!(after.last_heartbeat, t0() + secs(3));
    // Fields left out keep their values.
    let again = store
        .heartbeat(&n, NodeStats::default(), t0() + secs(4))
        .await
        .unwrap();
    assert_eq!(again.cpu_load, Some(45.5));
    assert_eq!(store.list_nodes().await.unwrap().len(), 1);
}

pub async fn complete_is_idempotent_and_fenced(store: &dyn Store) {
    let job = store
        .create_job(new_job(3, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let task = store.claim(&a, 1, t0()).await.unwrap().remove(0);

    assert_eq!(
        report_one(store, complete(&task.id, &b, 9.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 1.5), t0()).await,
        ReportOutcome::Completed
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 7.0), t0()).await,
        ReportOutcome::AlreadyCompleted
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyTerminal
    );
    assert_eq!(
        report_one(store, complete(&task.id, &b, 9.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete("task-nope", &a, 1.0), t0()).await,
        ReportOutcome::TaskNotFound
    );

    let stored = store.get_task(&task.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Done);
    assert_eq!(
        stored.result.fopt,
        Some(1.5),
        "a repeated report must not overwrite the result"
    );
    assert_eq!(stored.result.output.as_deref(), Some("fopt = 1.5\n"));
    let job = store.get_job(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert!(job.finished_at.is_some());
    assert_counts_consistent(store).await;
}

pub async fn failures_retry_until_attempts_are_spent(store: &dyn Store) {
    let job = store
        .create_job(new_job(2, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let task = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: true }
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyReported { will_retry: true }
    );
    assert_eq!(
        store.get_task(&task.id).await.unwrap().status,
        TaskStatus::New
    );
    let waiting = store.get_job(&job.id).await.unwrap();
    assert_eq!(
        waiting.status,
        JobStatus::Running,
        "a job waiting for a retry has started"
    );
    assert_eq!(waiting.started_at, Some(t0()));

    let again = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(again.id, task.id);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: false }
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyTerminal
    );
    let stored = store.get_task(&task.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some("boom"));
    assert_eq!(
        store.get_job(&job.id).await.unwrap().status,
        JobStatus::Failed
    );
    assert_counts_consistent(store).await;
}

pub async fn a_permanent_failure_is_not_retried(store: &dyn Store) {
    store
        .create_job(new_job(5, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let task = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, fail(&task.id, &a, false), t0()).await,
        ReportOutcome::Failed { will_retry: false }
    );
    assert_eq!(
        store.get_task(&task.id).await.unwrap().status,
        TaskStatus::Failed
    );
    assert_counts_consistent(store).await;
}

pub async fn a_late_report_after_reaping_is_fenced_off(store: &dyn Store) {
    store
        .create_job(new_job(3, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let task = store.claim(&a, 1, t0()).await.unwrap().remove(0);

    assert!(
        store
            .release_expired_tasks(t0() + secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    let released = store.release_expired_tasks(t0() + secs(11)).await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, TaskStatus::New);
    assert_eq!(released[0].node_id.as_deref(), Some(a.as_str()));

    let retaken = store.claim(&b, 1, t0() + secs(12)).await.unwrap().remove(0);
    assert_eq!(
        (retaken.id.as_str(), retaken.attempt),
        (task.id.as_str(), 2)
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 111.0), t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete(&task.id, &b, 2.0), t0() + secs(14)).await,
        ReportOutcome::Completed
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 111.0), t0() + secs(15)).await,
        ReportOutcome::NotHolder
    );

    let stored = store.get_task(&task.id).await.unwrap();
    assert_eq!(stored.assigned_to.as_deref(), Some(b.as_str()));
    assert_eq!(stored.result.fopt, Some(2.0));
    assert_counts_consistent(store).await;
}

pub async fn a_stale_attempt_of_the_same_node_is_fenced_off(store: &dyn Store) {
    store
        .create_job(new_job(3, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let first = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    store.release_expired_tasks(t0() + secs(11)).await.unwrap();
    let second = store.claim(&a, 1, t0() + secs(12)).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    let stale = Report {
        attempt: Some(first.attempt),
        ..complete(&first.id, &a, 5.0)
    };
    assert_eq!(
        report_one(store, stale, t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    let current = Report {
        attempt: Some(2),
        ..complete(&first.id, &a, 6.0)
    };
    assert_eq!(
        report_one(store, current, t0() + secs(13)).await,
        ReportOutcome::Completed
    );
    assert_counts_consistent(store).await;
}

pub async fn expired_tasks_fail_after_their_last_attempt(store: &dyn Store) {
    let job = store
        .create_job(new_job(2, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    store.claim(&a, 1, t0()).await.unwrap();
    assert_eq!(
        store.release_expired_tasks(t0() + secs(11)).await.unwrap()[0].to,
        TaskStatus::New
    );
    store.claim(&a, 1, t0() + secs(20)).await.unwrap();
    let released = store.release_expired_tasks(t0() + secs(31)).await.unwrap();
    assert_eq!(released[0].to, TaskStatus::Failed);
    assert_eq!(released[0].attempt, 2);
    let job = store.get_job(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let task = store
        .list_tasks(&job.id, None, Page::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    assert!(task.last_error.unwrap().contains("lease expired"));
    assert_counts_consistent(store).await;
}

pub async fn silent_nodes_go_down_and_free_their_tasks(store: &dyn Store) {
    store
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    assert_eq!(store.claim(&a, 2, t0()).await.unwrap().len(), 2);
    store
        .heartbeat(&b, NodeStats::default(), t0() + secs(9))
        .await
        .unwrap();

    // Cutoff at t0+5s: a (last seen t0) is silent, b (t0+9s) is not.
    let down = store
        .mark_silent_nodes_down(t0() + secs(5), t0() + secs(15))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![a.clone()]);
    assert_eq!(down.released.len(), 2);
    assert!(down.released.iter().all(|r| r.to == TaskStatus::New));
    // Running it again finds nothing new.
    assert_eq!(
        store
            .mark_silent_nodes_down(t0() + secs(5), t0() + secs(16))
            .await
            .unwrap(),
        Default::default()
    );

    let nodes = store.list_nodes().await.unwrap();
    let status = |id: &str| nodes.iter().find(|n| n.id == id).unwrap().status;
    assert_eq!((status(&a), status(&b)), (NodeStatus::Down, NodeStatus::Up));
    assert_eq!(store.claim(&b, 10, t0() + secs(16)).await.unwrap().len(), 3);
    let overview = store.overview().await.unwrap();
    assert_eq!(
        (
            overview.active_nodes,
            overview.pending_tasks,
            overview.running_tasks
        ),
        (1, 0, 3)
    );
    assert_counts_consistent(store).await;
}

pub async fn cancel_stops_new_and_running_tasks(store: &dyn Store) {
    let job = store
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let running = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    let done = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, complete(&done.id, &a, 1.0), t0()).await,
        ReportOutcome::Completed
    );

    let cancelled = store.cancel_job(&job.id, t0() + secs(1)).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!((cancelled.counts.cancelled, cancelled.counts.done), (2, 1));
    assert_eq!(
        report_one(store, complete(&running.id, &a, 3.0), t0() + secs(2)).await,
        ReportOutcome::Cancelled
    );
    assert!(
        store
            .claim(&a, 10, t0() + secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    // Cancelling again is harmless.
    assert_eq!(
        store
            .cancel_job(&job.id, t0() + secs(3))
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );

    let finished = store
        .create_job(new_job(3, 600, 0), sweep(1), t0())
        .await
        .unwrap();
    let t = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    report_one(store, complete(&t.id, &a, 1.0), t0()).await;
    assert!(matches!(
        store.cancel_job(&finished.id, t0()).await,
        Err(StoreError::JobFinished {
            status: JobStatus::Completed,
            ..
        })
    ));
    assert!(matches!(
        store.cancel_job("job-nope", t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn a_batch_of_reports_is_decided_report_by_report(store: &dyn Store) {
    store
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let tasks = store.claim(&a, 3, t0()).await.unwrap();
    let outcomes = store
        .report(
            vec![
                complete(&tasks[0].id, &a, 1.0),
                complete("task-nope", &a, 1.0),
                fail(&tasks[1].id, &a, true),
                complete(&tasks[0].id, &a, 1.0),
            ],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ReportOutcome::Completed,
            ReportOutcome::TaskNotFound,
            ReportOutcome::Failed { will_retry: true },
            ReportOutcome::AlreadyCompleted
        ]
    );
    assert_counts_consistent(store).await;
}

pub async fn concurrent_claims_never_share_a_task(store: Arc<dyn Store>) {
    store
        .create_job(new_job(3, 600, 0), sweep(200), t0())
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let n = node(&*store, t0()).await;
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&n, 7, t0()).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.await.unwrap() {
            assert!(seen.insert(id.clone()), "task {id} was handed out twice");
        }
    }
    assert_eq!(seen.len(), 200);
    assert_counts_consistent(&*store).await;
}

pub async fn down_nodes_are_forgotten_after_the_retention(store: &dyn Store) {
    let old = node(store, t0()).await;
    let recent = node(store, t0()).await;
    let alive = node(store, t0()).await;
    store
        .heartbeat(&recent, NodeStats::default(), t0() + secs(100))
        .await
        .unwrap();
    store
        .heartbeat(&alive, NodeStats::default(), t0() + secs(300))
        .await
        .unwrap();
    store
        .mark_silent_nodes_down(t0() + secs(200), t0() + secs(200))
        .await
        .unwrap();
    // `old` and `recent` are DOWN now; only `old` has been silent since before the cutoff.
    let forgotten = store.forget_down_nodes(t0() + secs(50)).await.unwrap();
    assert_eq!(forgotten, vec![old.clone()]);
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert!(!ids.contains(&old) && ids.contains(&recent) && ids.contains(&alive));
    assert!(matches!(
        store
            .heartbeat(&old, NodeStats::default(), t0() + secs(400))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // An UP node is never forgotten, however old its heartbeat.
    let forgotten = store.forget_down_nodes(t0() + secs(10_000)).await.unwrap();
    assert_eq!(forgotten, vec![recent]);
}

fn runner(session: &str, singleton: bool) -> NewRunner {
    NewRunner {
        session_id: session.into(),
        driver: "docker".into(),
        singleton,
    }
}

pub async fn runners_are_reserved_started_touched_and_removed(store: &dyn Store) {
    let Reservation::Reserved(r) = store
        .reserve_runner(runner("s1", false), Some(10), t0())
        .await
        .unwrap()
    else {
        panic!("expected a reservation")
    };
    assert_eq!(r.status, RunnerStatus::Starting);
    assert_eq!((r.instance, r.endpoint), (None, None));
    assert!(matches!(
        store.reserve_runner(runner("s1", false), Some(10), t0()).await.unwrap(),
        Reservation::Exists(e) if e.session_id == "s1"
    ));

    let started = store
        .runner_started("s1", "c0ffee", "http://localhost:32768", t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(started.status, RunnerStatus::Running);
    assert_eq!(started.instance.as_deref(), Some("c0ffee"));
    assert_eq!(started.endpoint.as_deref(), Some("http://localhost:32768"));
    assert_eq!(store.get_runner("s1").await.unwrap(), Some(started.clone()));
    assert!(matches!(
        store.runner_started("nope", "x", "y", t0()).await,
        Err(StoreError::NotFound { .. })
    ));

    store
        .reserve_runner(runner("s2", false), Some(10), t0() + secs(2))
        .await
        .unwrap();
    let touched = store
        .touch_runner("s1", t0() + secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_heartbeat, t0() + secs(30));
    assert_eq!(store.touch_runner("nope", t0()).await.unwrap(), None);
    let idle: Vec<_> = store
        .inactive_runners(t0() + secs(10))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(idle, ["s2"]);
    assert_eq!(store.list_runners().await.unwrap().len(), 2);

    assert_eq!(
        store
            .remove_runner("s1")
            .await
            .unwrap()
            .map(|r| r.session_id),
        Some("s1".to_string())
    );
    assert_eq!(store.remove_runner("s1").await.unwrap(), None);
    assert_eq!(store.get_runner("s1").await.unwrap(), None);
}

pub async fn runners_respect_the_limit_and_the_one_singleton(store: &dyn Store) {
    for s in ["a", "b"] {
        assert!(matches!(
            store
                .reserve_runner(runner(s, false), Some(2), t0())
                .await
                .unwrap(),
            Reservation::Reserved(_)
        ));
    }
    assert_eq!(
        store
            .reserve_runner(runner("c", false), Some(2), t0())
            .await
            .unwrap(),
        Reservation::LimitReached { active: 2 }
    );
    assert_eq!(
        store.get_runner("c").await.unwrap(),
        None,
        "nothing written"
    );
    assert!(matches!(
        store
            .reserve_runner(runner("c", false), None, t0())
            .await
            .unwrap(),
        Reservation::Reserved(_)
    ));

    let Reservation::Reserved(one) = store
        .reserve_runner(runner("shared-1", true), None, t0())
        .await
        .unwrap()
    else {
        panic!("expected the singleton's reservation")
    };
    assert!(one.singleton);
    assert!(matches!(
        store.reserve_runner(runner("shared-2", true), None, t0()).await.unwrap(),
        Reservation::Exists(e) if e.session_id == "shared-1"
    ));
}

pub async fn the_instance_id_is_made_once_and_kept(store: &dyn Store) {
    let id = store.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(store.instance_id().await.unwrap(), id);
}

/// Concurrent provisions can never pass the limit together.
pub async fn concurrent_reservations_stop_at_the_limit(store: Arc<dyn Store>) {
    let attempts = (0..12).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .reserve_runner(runner(&format!("c{i}"), false), Some(3), t0())
                .await
                .unwrap()
        })
    });
    let mut reserved = 0;
    for a in attempts {
        if let Reservation::Reserved(_) = a.await.unwrap() {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 3);
    assert_eq!(store.list_runners().await.unwrap().len(), 3);
}

macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            async fn fixture() -> Option<Fixture> {
                $fixture.await
            }

            conformance!(@each
                create_job_expands_every_task,
                a_job_keeps_its_run_spec,
                claims_take_highest_priority_then_oldest,
                claims_need_a_known_live_node,
                heartbeats_update_live_figures,
                complete_is_idempotent_and_fenced,
                failures_retry_until_attempts_are_spent,
                a_permanent_failure_is_not_retried,
                a_late_report_after_reaping_is_fenced_off,
                a_stale_attempt_of_the_same_node_is_fenced_off,
                expired_tasks_fail_after_their_last_attempt,
                silent_nodes_go_down_and_free_their_tasks,
                cancel_stops_new_and_running_tasks,
                a_batch_of_reports_is_decided_report_by_report,
                runners_are_reserved_started_touched_and_removed,
                runners_respect_the_limit_and_the_one_singleton,
                the_instance_id_is_made_once_and_kept,
                down_nodes_are_forgotten_after_the_retention
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_claims_never_share_a_task() {
                let Some(f) = fixture().await else { return };
                super::concurrent_claims_never_share_a_task(f.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_reservations_stop_at_the_limit() {
                let Some(f) = fixture().await else { return };
                super::concurrent_reservations_stop_at_the_limit(f.store.clone()).await;
            }
        }
    };
    (@each $($name:ident),+) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(f) = fixture().await else { return };
                super::$name(&*f.store).await;
            }
        )+
    };
}

async fn sqlite_fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("drover.db")).unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    })
}

conformance!(sqlite, sqlite_fixture());

// SQLite-only behaviour: the file itself.

#[tokio::test]
async fn sqlite_changes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/drover.db");
    let store = SqliteStore::open(&path).unwrap();
    let job = store
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(&store, t0()).await;
    let t = store.claim(&a, 1, t0()).await.unwrap().remove(0);
    report_one(&store, complete(&t.id, &a, 4.0), t0()).await;
    // No close: the process may die at any point after a call returned.
    drop(store);

    let reopened = SqliteStore::open(&path).unwrap();
    let job = reopened.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.done, job.counts.new), (1, 2));
    assert_eq!(
        reopened.get_task(&t.id).await.unwrap().result.fopt,
        Some(4.0)
    );
    assert_counts_consistent(&reopened).await;
}

#[tokio::test]
async fn sqlite_counts_stay_right_when_an_operator_resets_a_task_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = SqliteStore::open(&path).unwrap();
    let job = store
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    let a = node(&store, t0()).await;
    let t = store.claim(&a, 1, t0()).await.unwrap().remove(0);

    // The batch contract's "force reset" SQL, run by another connection.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL, started_at = NULL WHERE id = ?1",
            [&t.id],
        )
        .unwrap();
    let job = store.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.new, job.counts.running), (2, 0));
    assert_counts_consistent(&store).await;
    // The old holder's report is refused; the task can be claimed again.
    assert_eq!(
        report_one(&store, complete(&t.id, &a, 1.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(store.claim(&a, 2, t0()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_health_fails_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = SqliteStore::open(&path).unwrap();
    store.health().await.unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    assert!(matches!(
        store.health().await,
        Err(StoreError::Unavailable(_))
    ));
    tx.rollback().unwrap();
    store.health().await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.health().await,
        Err(StoreError::Unavailable(_))
    ));
}
