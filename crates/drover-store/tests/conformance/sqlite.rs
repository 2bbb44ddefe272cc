//! SQLite-only behaviour: the file itself.

use crate::*;
use drover_core::{Event, NodeStats, NodeStatus};
use drover_store::StoreError;

#[tokio::test]
async fn sqlite_changes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/drover.db");
    let store = open_sqlite(&path);
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(&store, t0()).await;
    let t = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    report_one(&store, complete(&t.id, &a, 4.0), t0()).await;
    // No close: the process may die at any point after a call returned.
    drop(store);

    let reopened = open_sqlite(&path);
    let job = reopened.jobs.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.done, job.counts.new), (1, 2));
    assert_eq!(
        reopened.jobs.get_task(&t.id).await.unwrap().result.fopt,
        Some(4.0)
    );
    assert_counts_consistent(&reopened).await;
}

#[tokio::test]
async fn sqlite_counts_stay_right_when_an_operator_resets_a_task_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    let a = node(&store, t0()).await;
    let t = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);

    // The batch contract's "force reset" SQL, run by another connection.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL, started_at = NULL WHERE id = ?1",
            [&t.id],
        )
        .unwrap();
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.new, job.counts.running), (2, 0));
    assert_counts_consistent(&store).await;
    // The old holder's report is refused; the task can be claimed again.
    assert_eq!(
        report_one(&store, complete(&t.id, &a, 1.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(store.jobs.claim(&a, 2, t0()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_health_fails_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    store.ops.health().await.unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    assert!(matches!(
        store.ops.health().await,
        Err(StoreError::Unavailable(_))
    ));
    tx.rollback().unwrap();
    store.ops.health().await.unwrap();
    store.ops.close().await.unwrap();
    assert!(matches!(
        store.ops.health().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn sqlite_health_commits_a_real_write_and_measures_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    let probes = || -> i64 {
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'write_probe'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    store.ops.health().await.unwrap();
    assert_eq!(
        probes(),
        1,
        "the probe's write is committed, not rolled back"
    );
    store.ops.health().await.unwrap();
    assert_eq!(probes(), 2);
    let free = store.ops.free_space().await.unwrap();
    assert!(free.is_some_and(|b| b > 0), "{free:?}");
    // The probe leaves the writer durable: a change made after it survives a reopen.
    let job = store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    drop(store);
    open_sqlite(&path).jobs.get_job(&job.id).await.unwrap();
}

/// Rows of the `tasks` table, counted by another connection as an operator would.
fn task_rows(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap()
}

/// The database file and its WAL, in bytes.
fn disk_bytes(path: &std::path::Path) -> u64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    size(path.to_path_buf()) + size(path.with_extension("db-wal"))
}

#[tokio::test]
async fn sqlite_a_sweep_holds_no_task_rows_until_its_tasks_are_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(1_000_000), t0())
        .await
        .unwrap();
    assert_eq!(job.counts.new, 1_000_000);
    assert_eq!(task_rows(&path), 0);
    let bytes = disk_bytes(&path);
    assert!(
        bytes < 1024 * 1024,
        "a million-task sweep takes {bytes} bytes"
    );

    let a = node(&store, t0()).await;
    let claimed = store.jobs.claim(&a, 5, t0()).await.unwrap();
    assert_eq!(
        task_rows(&path),
        5,
        "a claim writes the rows of what it took"
    );

    // The contract's troubleshooting SQL sees what was claimed, and its force reset is counted.
    let other = rusqlite::Connection::open(&path).unwrap();
    let running: Vec<(String, String, String)> = other
        .prepare("SELECT id, status, assigned_to FROM tasks WHERE status = 'RUNNING' ORDER BY idx")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        running,
        claimed
            .iter()
            .map(|c| (c.id.clone(), "RUNNING".to_string(), a.clone()))
            .collect::<Vec<_>>()
    );
    let (total, done): (i64, i64) = other
        .query_row(
            "SELECT total_tasks, completed_tasks FROM jobs WHERE id = ?1",
            [&job.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((total, done), (1_000_000, 0));
    other
        .execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL, started_at = NULL WHERE id = ?1",
            [&claimed[3].id],
        )
        .unwrap();
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.new, job.counts.running), (999_996, 4));
    let again = store.jobs.claim(&a, 2, t0()).await.unwrap();
    assert_eq!(
        again[0].id, claimed[3].id,
        "the reset task comes first again"
    );
    assert_eq!(again[0].attempt, 2);
    assert_eq!(task_rows(&path), 6);
    assert_counts_consistent(&store).await;
}

/// Group commit: writes that arrive together share one durable commit, and each keeps its own
/// answer. Refused reports, succeeding reports and writes that fail run side by side; every
/// succeeding change is stored and published, nothing of a failing one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writes_share_commits_and_each_keeps_its_own_answer() {
    use drover_core::Event;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(40), t0())
        .await
        .unwrap();
    let (a, b) = (node(&store, t0()).await, node(&store, t0()).await);
    let tasks = store.jobs.claim(&a, 40, t0()).await.unwrap();
    // Five are done already: completing them again is answered AlreadyCompleted.
    for t in &tasks[..5] {
        report_one(&store, complete(&t.id, &a, 1.0), t0()).await;
    }
    let completed = Arc::new(Mutex::new(Vec::new()));
    let sink = completed.clone();
    store.observe(move |events| {
        for e in events {
            match e {
                Event::TaskCompleted { task_id, .. } => sink.lock().unwrap().push(task_id.clone()),
                other => panic!("no other event may be published: {other:?}"),
            }
        }
    });
    let before = store.ops.write_stats();

    // Another process holds the write lock while the writes arrive, so they queue together.
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let n = tasks.len() + 10 + 2;
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut reports = Vec::new();
    for t in &tasks {
        let (store, start, r) = (store.clone(), start.clone(), complete(&t.id, &a, 2.0));
        reports.push(tokio::spawn(async move {
            start.wait().await;
            store.jobs.report(vec![r], t0()).await
        }));
    }
    // The wrong holder is refused, task by task.
    let mut wrong = Vec::new();
    for t in &tasks[10..20] {
        let (store, start, r) = (store.clone(), start.clone(), complete(&t.id, &b, 3.0));
        wrong.push(tokio::spawn(async move {
            start.wait().await;
            store.jobs.report(vec![r], t0()).await
        }));
    }
    // Two writes that fail outright.
    let failing = [
        tokio::spawn({
            let (store, start) = (store.clone(), start.clone());
            async move {
                start.wait().await;
                store.jobs.claim("spot-missing", 1, t0()).await.map(|_| ())
            }
        }),
        tokio::spawn({
            let (store, start) = (store.clone(), start.clone());
            async move {
                start.wait().await;
                store
                    .nodes
                    .heartbeat("spot-missing", Default::default(), t0())
                    .await
                    .map(|_| ())
            }
        }),
    ];
    start.wait().await;
    tokio::task::yield_now().await;
    lock.rollback().unwrap();

    for (i, h) in reports.into_iter().enumerate() {
        let want = if i < 5 {
            ReportOutcome::AlreadyCompleted
        } else {
            ReportOutcome::Completed
        };
        assert_eq!(h.await.unwrap().unwrap(), vec![want], "task {i}");
    }
    for h in wrong {
        assert_eq!(h.await.unwrap().unwrap(), vec![ReportOutcome::NotHolder]);
    }
    for h in failing {
        assert!(matches!(h.await.unwrap(), Err(StoreError::NotFound { .. })));
    }

    let mut published = completed.lock().unwrap().clone();
    published.sort();
    let mut expected: Vec<String> = tasks[5..].iter().map(|t| t.id.clone()).collect();
    expected.sort();
    assert_eq!(
        published, expected,
        "one event per committed complete, none for the rest"
    );
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!((job.counts.done, job.counts.running), (40, 0));
    for t in &tasks[5..] {
        // The holder's result is stored; the wrong holder's refused report left nothing.
        let task = store.jobs.get_task(&t.id).await.unwrap();
        assert_eq!(task.result.fopt, Some(2.0), "{}", t.id);
    }
    assert_counts_consistent(&store).await;

    let after = store.ops.write_stats();
    let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
    assert_eq!(writes, 50, "every write answered Ok was committed once");
    assert!(commits < writes, "{commits} commits for {writes} writes");
}

#[tokio::test]
async fn sqlite_counts_each_durable_commit_and_the_writes_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir.path().join("drover.db"));
    let before = store.ops.write_stats();
    store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    node(&store, t0()).await;
    // A refused write commits nothing.
    assert!(store.jobs.claim("spot-missing", 1, t0()).await.is_err());
    // The health probe is not a durable commit.
    store.ops.health().await.unwrap();
    let after = store.ops.write_stats();
    // One at a time: each write is its own group.
    assert_eq!(
        (after.commits - before.commits, after.writes - before.writes),
        (2, 2)
    );
}

/// A heartbeat that changes nothing but liveness is answered before it is written, so a crash
/// can lose what is held (at most the last `HELD_HEARTBEATS_WRITTEN_WITHIN`); a second
/// connection to the file sees what a restart after `kill -9` would. A heartbeat that brings a
/// node back is written before it is answered, and a close writes what is held.
#[tokio::test]
async fn sqlite_a_crash_can_lose_only_the_heartbeats_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let store = open_sqlite(&path);
    let after_crash = open_sqlite(&path);
    let n = node(&store, t0()).await;
    let seen_by = |s: &Stores| {
        let (s, n) = (s.clone(), n.clone());
        async move {
            let node = s.nodes.list_nodes().await.unwrap().remove(0);
            assert_eq!(node.id, n);
            (node.status, node.last_heartbeat)
        }
    };
    store
        .nodes
        .heartbeat(&n, NodeStats::default(), t0() + secs(3))
        .await
        .unwrap();
    assert_eq!(seen_by(&store).await, (NodeStatus::Up, t0() + secs(3)));
    assert_eq!(seen_by(&after_crash).await, (NodeStatus::Up, t0()));
    store.nodes.flush_heartbeats().await.unwrap();
    assert_eq!(
        seen_by(&after_crash).await,
        (NodeStatus::Up, t0() + secs(3))
    );

    // DOWN, then back: the heartbeat that revives it is in the file when it is answered.
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(10), t0() + secs(10))
        .await
        .unwrap();
    store
        .nodes
        .heartbeat(&n, NodeStats::default(), t0() + secs(20))
        .await
        .unwrap();
    assert_eq!(
        seen_by(&after_crash).await,
        (NodeStatus::Up, t0() + secs(20))
    );

    // Held again, then written by the close.
    store
        .nodes
        .heartbeat(&n, NodeStats::default(), t0() + secs(25))
        .await
        .unwrap();
    assert_eq!(
        seen_by(&after_crash).await,
        (NodeStatus::Up, t0() + secs(20))
    );
    store.ops.close().await.unwrap();
    assert_eq!(
        seen_by(&after_crash).await,
        (NodeStatus::Up, t0() + secs(25))
    );
}

/// Held heartbeats are written by themselves, `HELD_HEARTBEATS_WRITTEN_WITHIN` after the first
/// of them, in one write with one `NodeUpdated` for each heartbeat.
#[tokio::test(start_paused = true)]
async fn sqlite_held_heartbeats_are_written_within_the_bound() {
    use drover_store::sqlite::HELD_HEARTBEATS_WRITTEN_WITHIN as BOUND;
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir.path().join("drover.db"));
    let a = node(&store, t0()).await;
    let b = node(&store, t0()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    store.observe(move |events: &[Event]| {
        let _ = tx.send(events.to_vec());
    });
    let start = tokio::time::Instant::now();
    for (id, at) in [(&a, 1), (&b, 1), (&a, 2)] {
        store
            .nodes
            .heartbeat(id, NodeStats::default(), t0() + secs(at))
            .await
            .unwrap();
    }
    // Paused time moves only when nothing runs (the writer's thread included).
    let written = tokio::time::timeout(BOUND * 4, rx.recv())
        .await
        .expect("held heartbeats were never written")
        .unwrap();
    assert!(start.elapsed() <= BOUND, "{:?}", start.elapsed());
    let updated = |id: &String| Event::NodeUpdated {
        node_id: id.clone(),
        status: NodeStatus::Up,
    };
    let mut want = vec![updated(&a), updated(&a), updated(&b)];
    let mut got = written;
    let key = |e: &Event| format!("{e:?}");
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, want);
    // A second connection (what a restart would read) sees them written.
    let other = open_sqlite(&dir.path().join("drover.db"));
    let nodes = other.nodes.list_nodes().await.unwrap();
    let beat = |id: &String| nodes.iter().find(|n| &n.id == id).unwrap().last_heartbeat;
    assert_eq!((beat(&a), beat(&b)), (t0() + secs(2), t0() + secs(1)));
}
