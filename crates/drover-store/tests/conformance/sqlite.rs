//! SQLite-only behaviour: the file itself.

use crate::*;
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
