//! Property test of the task lifecycle through a real store: random sequences of claims (of the
//! best tasks, and of named tasks under a cap), reports (some repeated, some from the wrong
//! node), clock advances, reaper steps, heartbeats and a cancellation, checked after every step against the invariants of DESIGN.md section 1:
//!
//! 1. a task is held by at most one node, a claim never hands out a held task, and a report is
//!    accepted only from the current holder (fencing);
//! 2. a repeated report changes nothing (a DONE task's result never changes);
//! 4. job counts equal task counts by status.
//!
//! The test keeps its own record of who holds what, from the store's answers alone, and checks
//! the store against it.

use chrono::{Duration as Span, TimeZone, Utc};
use drover_core::sweep::{Sweep, SweepSpec};
use drover_core::{
    NodeInfo, NodeStats, ReportKind, ReportOutcome, TaskResult, TaskStatus, Timestamp,
};
use drover_store::{NewJob, Page, Report, SqliteStore, StoreError, Stores, TaskClaim};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const NODES: usize = 3;
const TASKS: i64 = 6;

#[derive(Debug, Clone)]
enum Op {
    Claim {
        node: usize,
        max: u32,
    },
    ClaimTask {
        node: usize,
        task: usize,
        cap: Option<u32>,
    },
    Complete {
        node: usize,
        task: usize,
    },
    Fail {
        node: usize,
        task: usize,
        retriable: bool,
    },
    RepeatLastReport,
    Advance {
        secs: i64,
    },
    ReapTasks,
    ReapNodes,
    Heartbeat {
        node: usize,
    },
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let task = 0..TASKS as usize;
    prop_oneof![
        4 => (node.clone(), 1..4u32).prop_map(|(node, max)| Op::Claim { node, max }),
        3 => (node.clone(), task.clone(), proptest::option::of(0..3u32))
            .prop_map(|(node, task, cap)| Op::ClaimTask { node, task, cap }),
        4 => (node.clone(), task.clone()).prop_map(|(node, task)| Op::Complete { node, task }),
        3 => (node.clone(), task, any::<bool>()).prop_map(|(node, task, retriable)| Op::Fail { node, task, retriable }),
        2 => Just(Op::RepeatLastReport),
        2 => (1..25i64).prop_map(|secs| Op::Advance { secs }),
        2 => Just(Op::ReapTasks),
        2 => Just(Op::ReapNodes),
        3 => node.prop_map(|node| Op::Heartbeat { node }),
        1 => Just(Op::Cancel),
    ]
}

/// What the test believes, from the store's answers.
#[derive(Default)]
struct Model {
    /// task id -> (node index, attempt) while a claim is outstanding.
    holder: HashMap<String, (usize, u32)>,
    /// task id -> fopt of its accepted completion.
    done: HashMap<String, f64>,
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("drover.db"))
        .unwrap()
        .into_stores();
    let mut now: Timestamp = Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap();
    let sweep = Sweep::new(SweepSpec::counting("x", "x", TASKS), 100).unwrap();
    let job = store
        .jobs
        .create_job(
            NewJob {
                origin: None,
                id: None,
                name: None,
                priority: 0,
                max_attempts: 3,
                task_timeout: Duration::from_secs(30),
                run: None,
            },
            sweep,
            now,
        )
        .await
        .unwrap();
    let tasks: Vec<String> = store
        .jobs
        .list_tasks(&job.id, None, Page::first(100))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let info = NodeInfo {
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        nodes.push(
            store
                .nodes
                .register_node(info.into(), None, now)
                .await
                .unwrap()
                .id,
        );
    }
    let node_index = |id: &str| nodes.iter().position(|n| n == id).unwrap();

    let mut model = Model::default();
    let mut last_report: Option<Report> = None;
    let mut next_fopt = 0.0;

    for op in ops {
        match op {
            Op::Claim { node, max } => {
                if let Ok(claimed) = store.jobs.claim(&nodes[node], max, now).await {
                    for c in claimed {
                        assert!(
                            !model.holder.contains_key(&c.id),
                            "task {} handed out while still held",
                            c.id
                        );
                        model.holder.insert(c.id, (node, c.attempt));
                    }
                }
            }
            Op::ClaimTask { node, task, cap } => {
                let id = &tasks[task];
                let held = model.holder.get(id).copied();
                let running = model.holder.values().filter(|(n, _)| *n == node).count() as u32;
                match store.jobs.claim_task(id, &nodes[node], cap, now).await {
                    Ok(TaskClaim::Claimed(c)) => {
                        assert_eq!(held, None, "task {id} handed out while still held");
                        assert!(cap.is_none_or(|cap| running < cap), "a cap was passed");
                        model.holder.insert(c.id, (node, c.attempt));
                    }
                    Ok(TaskClaim::AlreadyHeld { attempt }) => {
                        assert_eq!(held, Some((node, attempt)));
                    }
                    Ok(TaskClaim::Unavailable(t)) => {
                        assert!(
                            held.is_some_and(|(n, _)| n != node) || t.status.is_terminal(),
                            "{t:?} refused to {node} while it holds {held:?}"
                        );
                    }
                    Ok(TaskClaim::AtCapacity { running: counted }) => {
                        // Claims of the best tasks know no cap: a node may hold more.
                        assert_eq!(held, None);
                        assert!(cap.is_some_and(|cap| counted >= cap));
                        assert_eq!(counted, running);
                    }
                    Ok(TaskClaim::Draining) => panic!("no node is draining"),
                    Err(StoreError::NodeDown(_)) => assert_eq!(held, None),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Complete { node, task } | Op::Fail { node, task, .. } => {
                next_fopt += 1.0;
                let kind = match op {
                    Op::Complete { .. } => ReportKind::Complete(TaskResult {
                        fopt: Some(next_fopt),
                        ..Default::default()
                    }),
                    Op::Fail { retriable, .. } => ReportKind::Fail {
                        error: "e".into(),
                        retriable,
                    },
                    _ => unreachable!(),
                };
                let report = Report {
                    task_id: tasks[task].clone(),
                    node_id: nodes[node].clone(),
                    attempt: None,
                    kind,
                };
                apply_report(&store, &mut model, report.clone(), node, now).await;
                last_report = Some(report);
            }
            Op::RepeatLastReport => {
                if let Some(report) = last_report.clone() {
                    let node = node_index(&report.node_id);
                    let before = store.jobs.get_task(&report.task_id).await.unwrap();
                    let outcome = apply_report(&store, &mut model, report.clone(), node, now).await;
                    if outcome.is_success()
                        && outcome != ReportOutcome::Completed
                        && !matches!(outcome, ReportOutcome::Failed { .. })
                    {
                        let after = store.jobs.get_task(&report.task_id).await.unwrap();
                        assert_eq!(before, after, "an idempotent repeat changed the task");
                    }
                }
            }
            Op::Advance { secs } => now += Span::seconds(secs),
            Op::ReapTasks => {
                for r in store.jobs.release_expired_tasks(now).await.unwrap() {
                    assert!(
                        model.holder.remove(&r.task_id).is_some(),
                        "reaped an unheld task"
                    );
                }
            }
            Op::ReapNodes => {
                let down = store
                    .nodes
                    .mark_silent_nodes_down(now - Span::seconds(10), now)
                    .await
                    .unwrap();
                for r in down.released {
                    let (holder, _) = model
                        .holder
                        .remove(&r.task_id)
                        .expect("released an unheld task");
                    assert!(
                        down.nodes.contains(&nodes[holder]),
                        "released a task of a live node"
                    );
                }
            }
            Op::Heartbeat { node } => {
                store
                    .nodes
                    .heartbeat(&nodes[node], NodeStats::default(), now)
                    .await
                    .unwrap();
            }
            Op::Cancel => {
                if store.jobs.cancel_job(&job.id, now).await.is_ok() {
                    model.holder.clear();
                }
            }
        }
        check(&store, &model, &job.id).await;
    }
}

/// Sends one report and checks its outcome against the model: only the holder's report is
/// applied, and the model follows what was applied.
async fn apply_report(
    store: &Stores,
    model: &mut Model,
    report: Report,
    node: usize,
    now: Timestamp,
) -> ReportOutcome {
    let task = report.task_id.clone();
    let outcome = store.jobs.report(vec![report.clone()], now).await.unwrap()[0];
    let held_by_reporter = model.holder.get(&task).is_some_and(|(n, _)| *n == node);
    match outcome {
        ReportOutcome::Completed => {
            assert!(
                held_by_reporter,
                "a completion from a non-holder was applied"
            );
            model.holder.remove(&task);
            if let ReportKind::Complete(r) = &report.kind {
                model.done.insert(task, r.fopt.unwrap());
            }
        }
        ReportOutcome::Failed { .. } => {
            assert!(held_by_reporter, "a failure from a non-holder was applied");
            model.holder.remove(&task);
        }
        _ => assert!(
            !held_by_reporter,
            "the holder's report was not applied: {outcome:?}"
        ),
    }
    outcome
}

async fn check(store: &Stores, model: &Model, job_id: &str) {
    assert!(
        store.ops.audit_job_counts().await.unwrap().is_empty(),
        "invariant 4"
    );
    let tasks = store
        .jobs
        .list_tasks(job_id, None, Page::first(100))
        .await
        .unwrap()
        .items;
    for t in &tasks {
        assert!(t.attempt <= t.max_attempts, "{t:?}");
        match t.status {
            TaskStatus::Running => {
                let (_, attempt) = model
                    .holder
                    .get(&t.id)
                    .expect("a RUNNING task nobody holds");
                assert_eq!(*attempt, t.attempt);
                assert!(t.assigned_to.is_some() && t.lease_expires_at.is_some());
            }
            _ => assert!(
                !model.holder.contains_key(&t.id),
                "{} is held but {}",
                t.id,
                t.status
            ),
        }
        if let Some(fopt) = model.done.get(&t.id) {
            assert_eq!(t.status, TaskStatus::Done);
            assert_eq!(t.result.fopt, Some(*fopt), "a DONE task's result changed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_lifecycle_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
