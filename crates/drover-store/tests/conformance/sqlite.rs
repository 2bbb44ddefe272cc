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
