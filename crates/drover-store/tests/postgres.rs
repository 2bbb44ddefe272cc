//! What the PostgreSQL store does beyond the conformance suite, because several replicas share
//! one database: replicas that start together migrate it once, work made on one replica wakes
//! the waiting claims of the others (and a replica that cannot hear them looks every so often
//! instead), concurrent claimers on several replicas never share an attempt, and a database
//! that goes away makes calls fail as unavailable until it is back. Also what the conformance
//! suite cannot reach through the store's calls: a node drained by hand, and how much of the
//! dispatch outbox the publisher's calls read.
//!
//! Every test starts a real PostgreSQL (`drover_pgtest`) and panics with the reason if it
//! cannot; where PostgreSQL's server binaries are not installed they are marked ignored.

use chrono::{TimeZone, Utc};
use drover_core::sweep::{Sweep, SweepSpec};
use drover_core::{Event, NodeInfo, ReportKind, ReportOutcome, TaskResult, Timestamp};
use drover_store::{
    NewJob, PgOptions, PgStore, Publication, Published, Report, Route, StoreError, Stores,
    TaskClaim,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap()
}

fn fresh_database() -> String {
    drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to test against: {why}"))
}

fn options() -> PgOptions {
    PgOptions {
        pool_size: 4,
        poll_while_deaf: Duration::from_millis(50),
        ..PgOptions::default()
    }
}

async fn replica(url: &str) -> Stores {
    PgStore::connect(url, options())
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
        .into_stores()
}

fn job(max_attempts: u32) -> NewJob {
    NewJob {
        origin: None,
        id: None,
        name: Some("race".into()),
        priority: 0,
        max_attempts,
        task_timeout: Duration::from_secs(3600),
        run: None,
    }
}

fn sweep(n: i64) -> Sweep {
    Sweep::new(SweepSpec::counting("x", "x", n), 1_000_000).unwrap()
}

async fn node(store: &Stores) -> String {
    let info = NodeInfo {
        address: "127.0.0.1".into(),
        ..Default::default()
    };
    store
        .nodes
        .register_node(info.into(), None, t0())
        .await
        .unwrap()
        .id
}

/// Counts the calls of the wakers registered on `store`.
fn count_wakes(store: &Stores) -> Arc<AtomicUsize> {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = wakes.clone();
    store.on_work_elsewhere(move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    wakes
}

/// Waits (up to 10 s) until `wakes` has counted more than `than`.
async fn woken_past(wakes: &AtomicUsize, than: usize) -> bool {
    for _ in 0..1000 {
        if wakes.load(Ordering::SeqCst) > than {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_that_start_together_migrate_the_database_once() {
    let url = fresh_database();
    let opened = futures_join(
        (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::connect(&url, options()).await })
            })
            .collect(),
    )
    .await;
    for store in opened {
        store.unwrap();
    }
    let store = replica(&url).await;
    // One instance id for every replica: they are one server.
    let id = store.ops.instance_id().await.unwrap();
    assert_eq!(replica(&url).await.ops.instance_id().await.unwrap(), id);
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_made_on_one_replica_wakes_the_others_and_not_itself() {
    let url = fresh_database();
    let (a, b) = (replica(&url).await, replica(&url).await);
    // Each store's listener wakes once when it starts listening (work may have been made
    // while it was not); wait for that before counting.
    let (woken_a, woken_b) = (count_wakes(&a), count_wakes(&b));
    a.ops.health().await.unwrap();
    b.ops.health().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before_a, before_b) = (
        woken_a.load(Ordering::SeqCst),
        woken_b.load(Ordering::SeqCst),
    );
    // A's own observers see the event; its listener skips its own notification.
    let seen_by_a = Arc::new(AtomicUsize::new(0));
    let seen = seen_by_a.clone();
    a.observe(move |events| {
        if events.iter().any(Event::may_free_work) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    a.jobs.create_job(job(1), sweep(3), t0()).await.unwrap();
    assert!(
        woken_past(&woken_b, before_b).await,
        "the other replica was not woken"
    );
    assert_eq!(seen_by_a.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        woken_a.load(Ordering::SeqCst),
        before_a,
        "a replica was woken by its own write"
    );
    // A write that frees no work notifies nobody.
    let before_b = woken_b.load(Ordering::SeqCst);
    node(&a).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(woken_b.load(Ordering::SeqCst), before_b);
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_listen_polls_and_hears_again_once_the_database_is_back() {
    let pg = drover_pgtest::TempPostgres::start()
        .unwrap_or_else(|why| panic!("no PostgreSQL to test against: {why}"));
    let url = pg.url();
    let (a, b) = (replica(&url).await, replica(&url).await);
    let woken = count_wakes(&b);
    b.ops.health().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    pg.crash().unwrap();
    // While deaf, the replica looks for work every `poll_while_deaf` (50 ms here).
    let deaf = woken.load(Ordering::SeqCst);
    assert!(woken_past(&woken, deaf + 3).await, "no polling while deaf");
    // A call on a database that is gone fails as unavailable (the server answers 503).
    let out = a.jobs.create_job(job(1), sweep(1), t0()).await;
    assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");

    pg.start_again().unwrap();
    // The pool makes new connections; the listener listens again.
    let mut made = None;
    for _ in 0..100 {
        match a.jobs.create_job(job(1), sweep(1), t0()).await {
            Ok(j) => {
                made = Some(j);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        made.is_some(),
        "the store did not come back with the database"
    );
    // Heard again, not polled: once the listener is back, a quiet second wakes nothing...
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quiet = woken.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(woken.load(Ordering::SeqCst), quiet, "still polling");
    // ...and work made on the other replica does.
    a.jobs.create_job(job(1), sweep(1), t0()).await.unwrap();
    assert!(
        woken_past(&woken, quiet).await,
        "not heard after reconnecting"
    );
}

/// What one claimer saw: every task it claimed, with the attempt, and how its reports ended.
#[derive(Default)]
struct Seen {
    claims: Vec<(String, u32)>,
    completed: Vec<String>,
}

/// Claims and reports until no task is left: fails each task's first attempt when
/// `fail_first` (so retried tasks come back as stored NEW rows for the others to take),
/// completes the rest.
async fn claimer(store: Stores, node: String, seed: u32, fail_first: bool) -> Seen {
    let mut seen = Seen::default();
    let mut idle = 0;
    let mut turn = seed;
    while idle < 20 {
        turn = turn.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let max = 1 + (turn >> 16) % 25;
        let claimed = store.jobs.claim(&node, max, t0()).await.unwrap();
        if claimed.is_empty() {
            idle += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        idle = 0;
        let mut reports = Vec::with_capacity(claimed.len());
        for task in &claimed {
            seen.claims.push((task.id.clone(), task.attempt));
            let kind = if fail_first && task.attempt == 1 && (turn >> 8).is_multiple_of(3) {
                ReportKind::Fail {
                    error: "first try".into(),
                    retriable: true,
                }
            } else {
                ReportKind::Complete(TaskResult {
                    fopt: Some(1.0),
                    ..Default::default()
                })
            };
            reports.push(Report {
                task_id: task.id.clone(),
                node_id: node.clone(),
                attempt: Some(task.attempt),
                kind,
            });
        }
        let outcomes = store.jobs.report(reports.clone(), t0()).await.unwrap();
        for (report, outcome) in reports.iter().zip(outcomes) {
            match outcome {
                ReportOutcome::Completed => seen.completed.push(report.task_id.clone()),
                ReportOutcome::Failed { will_retry: true } => {}
                other => panic!("{} got {other:?}", report.task_id),
            }
        }
    }
    seen
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_on_three_replicas_take_each_attempt_once() {
    let url = fresh_database();
    let replicas = [
        replica(&url).await,
        replica(&url).await,
        replica(&url).await,
    ];
    // Every claim event of every replica, to check against what the claimers were handed.
    let events: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    for store in &replicas {
        let events = events.clone();
        store.observe(move |batch| {
            let mut events = events.lock().unwrap();
            for e in batch {
                if let Event::TaskClaimed {
                    task_id, attempt, ..
                } = e
                {
                    events.push((task_id.clone(), *attempt));
                }
            }
        });
    }
    // Two sweeps and an explicit task list: fresh rows from remainders and stored rows.
    let mut total = 0;
    let mut made = Vec::new();
    for (i, n) in [1200i64, 800].into_iter().enumerate() {
        let j = replicas[i]
            .jobs
            .create_job(job(2), sweep(n), t0())
            .await
            .unwrap();
        total += n as usize;
        made.push(j.id);
    }
    let listed = SweepSpec {
        tasks: Some(
            (0..300)
                .map(|i| serde_json::json!({"seed": i}).as_object().unwrap().clone())
                .collect(),
        ),
        ..Default::default()
    };
    let j = replicas[2]
        .jobs
        .create_job(job(2), Sweep::new(listed, 1000).unwrap(), t0())
        .await
        .unwrap();
    total += 300;
    made.push(j.id);

    let mut claimers = Vec::new();
    for i in 0..8u32 {
        let store = replicas[i as usize % 3].clone();
        let node = node(&store).await;
        claimers.push(tokio::spawn(claimer(store, node, i + 1, i % 2 == 0)));
    }
    // A reader on every replica meanwhile: each task reads as itself, with or without its row,
    // and a page of a job's tasks holds each index once, in order.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for (i, store) in replicas.iter().enumerate() {
        let (store, stop, job) = (store.clone(), stop.clone(), made[i % 2].clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let index = (reads * 7919) % 800;
                let id = drover_core::ids::sweep_task_id(&job, index);
                let task = store.jobs.get_task(&id).await.unwrap();
                assert_eq!(task.seq, index as i64);
                let page = store
                    .jobs
                    .list_tasks(&job, None, drover_store::Page::first(200))
                    .await
                    .unwrap();
                let indexes: Vec<i64> = page.items.iter().map(|t| t.seq).collect();
                assert_eq!(indexes, (0..200).collect::<Vec<i64>>());
                reads += 1;
            }
            reads
        }));
    }
    let seen = futures_join(claimers).await;
    stop.store(true, Ordering::SeqCst);
    let reads: u64 = futures_join(readers).await.into_iter().sum();
    assert!(reads > 0);

    let mut per_attempt: HashMap<(String, u32), usize> = HashMap::new();
    let mut completions: HashMap<String, usize> = HashMap::new();
    for s in &seen {
        for c in &s.claims {
            *per_attempt.entry(c.clone()).or_default() += 1;
        }
        for t in &s.completed {
            *completions.entry(t.clone()).or_default() += 1;
        }
    }
    let shared: Vec<_> = per_attempt.iter().filter(|(_, n)| **n > 1).collect();
    assert!(shared.is_empty(), "attempts handed out twice: {shared:?}");
    assert_eq!(completions.len(), total, "every task completed");
    assert!(
        completions.values().all(|n| *n == 1),
        "a task completed twice"
    );
    // What the events say is what the claimers got.
    let mut from_events = events.lock().unwrap().clone();
    let mut from_claims: Vec<_> = per_attempt.into_keys().collect();
    from_events.sort();
    from_claims.sort();
    assert_eq!(from_events, from_claims);
    assert!(
        from_claims.iter().any(|(_, attempt)| *attempt == 2),
        "no retried task was claimed again: the stored rows went untested"
    );
    // Invariant 4, and every job done.
    let store = &replicas[0];
    assert_eq!(store.ops.audit_job_counts().await.unwrap(), vec![]);
    for id in made {
        let j = store.jobs.get_job(&id).await.unwrap();
        assert_eq!(j.counts.done, j.counts.total, "{j:?}");
    }
}

/// A plain session on `url`, as an operator's psql would have: not drover's.
async fn operator(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    drop(tokio::spawn(connection));
    client
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn the_status_function_agrees_with_the_core_rule() {
    let url = fresh_database();
    replica(&url).await.ops.health().await.unwrap();
    let sql = operator(&url).await;
    let ask = sql
        .prepare("SELECT drover_job_status($1, $2, $3, $4, $5, $6, $7, $8)")
        .await
        .unwrap();
    let range = 0..3i64;
    for new in range.clone() {
        for running in range.clone() {
            for done in range.clone() {
                for failed in range.clone() {
                    for cancelled_tasks in range.clone() {
                        for (cancelled, started) in
                            [(false, false), (false, true), (true, false), (true, true)]
                        {
                            let total = new + running + done + failed + cancelled_tasks;
                            let counts = drover_core::JobCounts {
                                total: total as u64,
                                new: new as u64,
                                running: running as u64,
                                done: done as u64,
                                failed: failed as u64,
                                cancelled: cancelled_tasks as u64,
                            };
                            let stored: String = sql
                                .query_one(
                                    &ask,
                                    &[
                                        &total,
                                        &new,
                                        &running,
                                        &done,
                                        &failed,
                                        &cancelled_tasks,
                                        &cancelled,
                                        &started,
                                    ],
                                )
                                .await
                                .unwrap()
                                .get(0);
                            assert_eq!(
                                stored,
                                counts.status(cancelled, started).as_str(),
                                "{counts:?} cancelled={cancelled} started={started}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_task_reset_by_hand_keeps_its_job_counts_and_status() {
    let url = fresh_database();
    let store = replica(&url).await;
    let spot = node(&store).await;
    let j = store.jobs.create_job(job(3), sweep(2), t0()).await.unwrap();
    let claimed = store.jobs.claim(&spot, 2, t0()).await.unwrap();
    let done = Report {
        task_id: claimed[1].id.clone(),
        node_id: spot.clone(),
        attempt: None,
        kind: ReportKind::Complete(TaskResult::default()),
    };
    store.jobs.report(vec![done], t0()).await.unwrap();
    // The contract's force reset of a stuck task, from outside drover.
    let sql = operator(&url).await;
    let changed = sql
        .execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL, started_at = NULL
             WHERE id = $1",
            &[&claimed[0].id],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(store.ops.audit_job_counts().await.unwrap(), vec![]);
    let after = store.jobs.get_job(&j.id).await.unwrap();
    assert_eq!(
        (after.counts.new, after.counts.running, after.counts.done),
        (1, 0, 1)
    );
    // Marking the last task done by hand finishes the job in the stored status too, which
    // listings by status read.
    sql.execute(
        "UPDATE tasks SET status = 'DONE' WHERE id = $1",
        &[&claimed[0].id],
    )
    .await
    .unwrap();
    let stored: String = sql
        .query_one("SELECT status FROM jobs WHERE id = $1", &[&j.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "COMPLETED");
    assert_eq!(store.ops.audit_job_counts().await.unwrap(), vec![]);
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_call_stuck_behind_a_lock_fails_as_unavailable_after_the_statement_timeout() {
    let url = fresh_database();
    let store = PgStore::connect(
        &url,
        PgOptions {
            statement_timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .await
    .unwrap()
    .into_stores();
    let j = store.jobs.create_job(job(1), sweep(1), t0()).await.unwrap();
    // An operator's open transaction holds the job's row.
    let mut sql = operator(&url).await;
    let held = sql.transaction().await.unwrap();
    held.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&j.id])
        .await
        .unwrap();
    let out = store.jobs.cancel_job(&j.id, t0()).await;
    assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
    held.rollback().await.unwrap();
    let cancelled = store.jobs.cancel_job(&j.id, t0()).await.unwrap();
    assert!(cancelled.cancelled);
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_that_lock_in_opposite_orders_both_succeed() {
    // Two batches about the same tasks in opposite orders, on two replicas: both answer, each
    // report decided once (the rows are locked in one order, so they queue rather than
    // deadlock; a deadlock would be broken by PostgreSQL after a second and the write run again).
    let url = fresh_database();
    let (a, b) = (replica(&url).await, replica(&url).await);
    let spot = node(&a).await;
    a.jobs.create_job(job(1), sweep(40), t0()).await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let claimed = a.jobs.claim(&spot, 2, t0()).await.unwrap();
        let done = |task: &drover_core::ClaimedTask| Report {
            task_id: task.id.clone(),
            node_id: spot.clone(),
            attempt: Some(task.attempt),
            kind: ReportKind::Complete(TaskResult::default()),
        };
        let forward = vec![done(&claimed[0]), done(&claimed[1])];
        let backward = vec![done(&claimed[1]), done(&claimed[0])];
        let (one, two) = tokio::join!(a.jobs.report(forward, t0()), b.jobs.report(backward, t0()));
        for outcome in one.unwrap().into_iter().chain(two.unwrap()) {
            assert!(
                matches!(
                    outcome,
                    ReportOutcome::Completed | ReportOutcome::AlreadyCompleted
                ),
                "{outcome:?}"
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reports waited on deadlocks: {:?}",
        started.elapsed()
    );
    assert_eq!(a.ops.audit_job_counts().await.unwrap(), vec![]);
}

/// A connection lost while COMMIT is on its way leaves the write's fate unknown to the store:
/// it must not say "unavailable" (503), on which a client repeats a submission or a claim on
/// another replica, as if nothing had been done.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_connection_lost_during_commit_is_an_unknown_outcome_not_unavailable() {
    let url = fresh_database();
    let store = replica(&url).await;
    // A trigger that runs at COMMIT and ends its own session: the client sees its connection
    // die in the middle of the commit, as it would if the network or the server went away.
    let sql = operator(&url).await;
    sql.batch_execute(
        "CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_terminate_backend(pg_backend_pid());
             PERFORM pg_sleep(5);
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON jobs
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit();",
    )
    .await
    .unwrap();
    let out = store.jobs.create_job(job(1), sweep(1), t0()).await;
    assert!(matches!(out, Err(StoreError::OutcomeUnknown(_))), "{out:?}");

    sql.batch_execute("DROP TRIGGER die_at_commit ON jobs")
        .await
        .unwrap();
    // The store gets a new connection by itself; reads and writes go on.
    let made = store.jobs.create_job(job(1), sweep(1), t0()).await;
    let made = match made {
        Ok(j) => j,
        // The pool may hand out the dead connection once more before it notices.
        Err(StoreError::Unavailable(_)) => {
            store.jobs.create_job(job(1), sweep(1), t0()).await.unwrap()
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(store.jobs.get_job(&made.id).await.unwrap().id, made.id);
}

/// Claims and reports that arrive while a group is committing share the next commit, and each
/// keeps its own answer: completes by many spots, a report about a task that does not exist,
/// and a claim by an unknown spot, all in one burst. The first group is held on the job's row
/// (an operator's lock) so that the burst provably queues behind it.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_that_arrive_together_share_a_commit_and_keep_their_own_answers() {
    const SPOTS: usize = 24;
    let url = fresh_database();
    let store = replica(&url).await;
    let job_id = store
        .jobs
        .create_job(job(1), sweep(SPOTS as i64 + 3), t0())
        .await
        .unwrap()
        .id;
    let mut held = Vec::new();
    for _ in 0..SPOTS {
        let spot = node(&store).await;
        let task = store.jobs.claim(&spot, 1, t0()).await.unwrap().remove(0);
        held.push((spot, task));
    }
    let lock = operator(&url).await;
    lock.batch_execute("BEGIN").await.unwrap();
    lock.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job_id])
        .await
        .unwrap();

    // The first call takes the turn and waits on the job's row; everything after it queues.
    let (first_spot, first_task) = held.pop().unwrap();
    let complete = |spot: &str, task: &drover_core::ClaimedTask| Report {
        task_id: task.id.clone(),
        node_id: spot.to_string(),
        attempt: Some(task.attempt),
        kind: ReportKind::Complete(TaskResult::default()),
    };
    let first = {
        let (s, r) = (store.clone(), complete(&first_spot, &first_task));
        tokio::spawn(async move { s.jobs.report(vec![r], t0()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = store.ops.write_stats();
    let mut burst = Vec::new();
    for (spot, task) in &held {
        let (s, r) = (store.clone(), complete(spot, task));
        burst.push(tokio::spawn(
            async move { s.jobs.report(vec![r], t0()).await },
        ));
    }
    let unknown_task = {
        let s = store.clone();
        let r = Report {
            task_id: "task-that-does-not-exist".into(),
            node_id: first_spot.clone(),
            attempt: None,
            kind: ReportKind::Complete(TaskResult::default()),
        };
        tokio::spawn(async move { s.jobs.report(vec![r], t0()).await })
    };
    let unknown_spot = {
        let s = store.clone();
        tokio::spawn(async move { s.jobs.claim("spot-that-does-not-exist", 1, t0()).await })
    };
    // Two claims of two each for the three tasks left: picked together, neither gets one
    // twice nor more than it asked.
    let last_claims: Vec<_> = [first_spot.clone(), held[0].0.clone()]
        .into_iter()
        .map(|spot| {
            let s = store.clone();
            tokio::spawn(async move { s.jobs.claim(&spot, 2, t0()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.batch_execute("COMMIT").await.unwrap();

    assert_eq!(
        first.await.unwrap().unwrap(),
        vec![ReportOutcome::Completed]
    );
    for answer in futures_join(burst).await {
        assert_eq!(answer.unwrap(), vec![ReportOutcome::Completed]);
    }
    assert_eq!(
        unknown_task.await.unwrap().unwrap(),
        vec![ReportOutcome::TaskNotFound]
    );
    assert!(matches!(
        unknown_spot.await.unwrap(),
        Err(StoreError::NotFound { .. })
    ));
    let mut last: Vec<String> = Vec::new();
    for claim in futures_join(last_claims).await {
        let tasks = claim.unwrap();
        assert!(tasks.len() <= 2, "{tasks:?}");
        last.extend(tasks.into_iter().map(|t| t.id));
    }
    last.sort();
    last.dedup();
    assert_eq!(last.len(), 3, "the three tasks left, each to one claim");
    // The held group's commit and one for the whole burst (two, should a call of the burst
    // have been slow to queue), every call counted as a write.
    let after = store.ops.write_stats();
    let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
    assert_eq!(writes, SPOTS as u64 + 4);
    assert!(commits <= 3, "{writes} calls took {commits} commits");
    let j = store.jobs.get_job(&job_id).await.unwrap();
    assert_eq!(j.counts.done, SPOTS as u64);
    assert_eq!(store.ops.audit_job_counts().await.unwrap(), vec![]);
}

/// How many rows whole-table scans of `table` have read, as PostgreSQL's statistics say once
/// every session has flushed them. A session flushes its counts within a second of going idle,
/// so the answer is read until `updated` (a count the caller knows has moved) shows the work.
async fn rows_scanned(operator: &tokio_postgres::Client, table: &str, updated: i64) -> i64 {
    for _ in 0..100 {
        let r = operator
            .query_one(
                "SELECT coalesce(seq_tup_read, 0), n_tup_upd FROM pg_stat_user_tables
                 WHERE relname = $1",
                &[&table],
            )
            .await
            .unwrap();
        if r.get::<_, i64>(1) >= updated {
            return r.get(0);
        }
        operator
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the statistics of {table} never showed {updated} updates");
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_keeps_its_index_plans_as_the_tables_grow() {
    // Claims and reports run on plans made once per connection. Plans made while the tables
    // were nearly empty must not scan them whole once they are large.
    const BIG: i64 = 10_000;
    let url = fresh_database();
    let store = replica(&url).await;
    let spot = node(&store).await;
    let complete = |task: &drover_core::ClaimedTask| Report {
        task_id: task.id.clone(),
        node_id: spot.clone(),
        attempt: Some(task.attempt),
        kind: ReportKind::Complete(TaskResult::default()),
    };
    // Small claims and reports while the tables hold a few rows: every pooled connection
    // makes its plans now.
    store
        .jobs
        .create_job(job(1), sweep(80), t0())
        .await
        .unwrap();
    for _ in 0..20 {
        let tasks = store.jobs.claim(&spot, 2, t0()).await.unwrap();
        store
            .jobs
            .report(tasks.iter().map(complete).collect(), t0())
            .await
            .unwrap();
        // A complete alone, as the contract's clients send it, takes the compare and set.
        let tasks = store.jobs.claim(&spot, 2, t0()).await.unwrap();
        for task in &tasks {
            store.jobs.report(vec![complete(task)], t0()).await.unwrap();
        }
    }
    // The tables grow to tens of thousands of rows, RUNNING and DONE.
    store
        .jobs
        .create_job(job(1), sweep(BIG), t0())
        .await
        .unwrap();
    let mut updated = 0;
    for _ in 0..(BIG / 1_000 - 1) {
        let tasks = store.jobs.claim(&spot, 1_000, t0()).await.unwrap();
        let reports: Vec<_> = tasks.iter().map(complete).collect();
        updated += reports.len() as i64;
        store.jobs.report(reports, t0()).await.unwrap();
    }
    let _running = store.jobs.claim(&spot, 500, t0()).await.unwrap();
    let operator = operator(&url).await;
    let before = rows_scanned(&operator, "tasks", updated).await;
    let running_before = index_entries_read(&operator, "tasks_running").await;

    // The hot path, small calls as agents make them: batches, and completes one by one.
    for _ in 0..50 {
        let tasks = store.jobs.claim(&spot, 2, t0()).await.unwrap();
        let reports: Vec<_> = tasks.iter().map(complete).collect();
        updated += reports.len() as i64;
        store.jobs.report(reports, t0()).await.unwrap();
        for task in store.jobs.claim(&spot, 2, t0()).await.unwrap() {
            updated += 1;
            store
                .jobs
                .report(vec![complete(&task)], t0())
                .await
                .unwrap();
        }
    }
    let after = rows_scanned(&operator, "tasks", updated).await;
    assert_eq!(
        after - before,
        0,
        "claims and reports scanned the whole tasks table"
    );
    // The 500 tasks left RUNNING are not walked to find the one a complete names (a plan
    // through the partial index of running tasks would read them all, each time).
    let running_read = index_entries_read(&operator, "tasks_running").await - running_before;
    assert!(
        running_read < 500,
        "completes walked the index of running tasks: {running_read} entries read"
    );
}

/// How many entries scans of `index` have read so far (by the statistics already flushed:
/// read after [`rows_scanned`], which waits for them).
async fn index_entries_read(operator: &tokio_postgres::Client, index: &str) -> i64 {
    operator
        .query_one(
            "SELECT coalesce(idx_tup_read, 0) FROM pg_stat_user_indexes WHERE indexrelname = $1",
            &[&index],
        )
        .await
        .unwrap()
        .get(0)
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_half_way_leaves_no_transaction_behind() {
    let url = fresh_database();
    let store = replica(&url).await;
    let job_id = store
        .jobs
        .create_job(job(1), sweep(20), t0())
        .await
        .unwrap()
        .id;
    let holder = node(&store).await;
    let held = store.jobs.claim(&holder, 1, t0()).await.unwrap().remove(0);
    let lock = operator(&url).await;
    lock.batch_execute("BEGIN").await.unwrap();
    lock.execute(
        "SELECT 1 FROM task_attempts WHERE task_id = $1 FOR UPDATE",
        &[&held.id],
    )
    .await
    .unwrap();
    // The cancel locks the job, then waits to close the held task's attempt; its caller goes
    // away (a client that disconnected). Its statement finishes once the lock is gone, inside
    // a transaction that nobody will end.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        store.jobs.cancel_job(&job_id, t0()),
    )
    .await;
    assert!(gave_up.is_err(), "the cancel did not wait for the lock");
    lock.batch_execute("ROLLBACK").await.unwrap();

    // Every pooled connection is taken again: none carries the dropped write's transaction
    // (whose next commit would be that write's too).
    for _ in 0..8 {
        let spot = node(&store).await;
        store.jobs.claim(&spot, 1, t0()).await.unwrap();
    }
    let outcome: String = lock
        .query_one(
            "SELECT outcome FROM task_attempts WHERE task_id = $1",
            &[&held.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        outcome, "RUNNING",
        "the dropped cancel's change was committed"
    );
    let job = store.jobs.get_job(&job_id).await.unwrap();
    assert!(!job.cancelled, "{job:?}");
    let open = lock
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'drover' AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(open, 0, "a session of drover's stayed in a transaction");
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_committed_by_compare_and_set_keeps_its_answer_when_its_group_fails() {
    // A group commits lone completes first, then the rest in a careful transaction. When the
    // careful one fails, the completes already committed must still be answered as applied,
    // and only the calls in the failed transaction get the error.
    let url = fresh_database();
    let store = replica(&url).await;
    let job_id = store
        .jobs
        .create_job(job(1), sweep(10), t0())
        .await
        .unwrap()
        .id;
    let (holder, other, poisoned) = (node(&store).await, node(&store).await, node(&store).await);
    let held = store.jobs.claim(&holder, 1, t0()).await.unwrap().remove(0);
    let operator = operator(&url).await;
    // Any claim by `poisoned` fails inside its transaction, as a full disk would.
    operator
        .batch_execute(&format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'no room'; END $$;
             CREATE TRIGGER poison BEFORE INSERT ON task_attempts FOR EACH ROW
             WHEN (NEW.node_id = '{poisoned}') EXECUTE FUNCTION poison();"
        ))
        .await
        .unwrap();
    // The job's row is held, so the first group (a claim) waits on it while the next two
    // calls queue together behind it.
    operator.batch_execute("BEGIN").await.unwrap();
    operator
        .execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job_id])
        .await
        .unwrap();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.jobs.claim(&other, 1, t0()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let complete = tokio::spawn({
        let (store, task_id, holder) = (store.clone(), held.id.clone(), holder.clone());
        async move {
            let report = Report {
                task_id,
                node_id: holder,
                attempt: Some(1),
                kind: ReportKind::Complete(TaskResult::default()),
            };
            store.jobs.report(vec![report], t0()).await
        }
    });
    let refused = tokio::spawn({
        let store = store.clone();
        async move { store.jobs.claim(&poisoned, 1, t0()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    operator.batch_execute("COMMIT").await.unwrap();

    assert_eq!(first.await.unwrap().unwrap().len(), 1);
    assert_eq!(
        complete.await.unwrap().unwrap(),
        vec![ReportOutcome::Completed],
        "the complete was committed: its caller must hear so"
    );
    let err = refused.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("no room"), "{err}");
    let task = store.jobs.get_task(&held.id).await.unwrap();
    assert_eq!(task.status, drover_core::TaskStatus::Done);
}

/// The outbox's open rows, and all its rows.
async fn open(operator: &tokio_postgres::Client) -> (i64, i64) {
    let r = operator
        .query_one(
            "SELECT count(*) FILTER (WHERE open), count(*) FROM dispatches",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// How many entries scans of the indexes of the outbox and of `tasks` have read so far, by the
/// statistics already flushed: the outbox's rows, and the tasks read for them (or that a plan
/// driven from the tasks side reads instead).
async fn outbox_entries_read(operator: &tokio_postgres::Client) -> i64 {
    operator
        .query_one(
            "SELECT coalesce(sum(idx_tup_read), 0)::BIGINT FROM pg_stat_user_indexes
             WHERE relname IN ('dispatches', 'tasks')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_reads_only_its_open_rows_and_closes_those_of_finished_tasks() {
    // The publisher asks what is due every few milliseconds, for as long as the server runs:
    // what it reads must be bounded by the dispatched work not finished, never by every row
    // the outbox has held.
    const MADE: usize = 300;
    const LEFT: usize = 5;
    let url = fresh_database();
    let store = replica(&url).await;
    let route = Route {
        queue: "q".into(),
        priority: 1,
    };
    let made = store
        .dispatch
        .create_dispatched_job(job(3), sweep(MADE as i64), route, t0())
        .await
        .unwrap();
    let due = store.dispatch.due_publications(1_000).await.unwrap();
    assert_eq!(due.len(), MADE);
    let confirmed = |due: &[Publication]| -> Vec<Published> {
        due.iter()
            .map(|p| Published {
                task_id: p.task.id.clone(),
                attempts: p.task.attempt,
            })
            .collect()
    };
    store
        .dispatch
        .mark_published(confirmed(&due), t0())
        .await
        .unwrap();
    let spot = node(&store).await;
    let mut reports = Vec::new();
    for i in 0..(MADE - LEFT) as u64 {
        let task = drover_core::ids::sweep_task_id(&made.id, i);
        let claimed = store.jobs.claim_task(&task, &spot, None, t0()).await;
        assert!(matches!(claimed, Ok(TaskClaim::Claimed(_))), "{claimed:?}");
        reports.push(Report {
            task_id: task,
            node_id: spot.clone(),
            attempt: None,
            kind: ReportKind::Complete(TaskResult::default()),
        });
    }
    store.jobs.report(reports, t0()).await.unwrap();
    let operator = operator(&url).await;
    assert_eq!(
        open(&operator).await,
        (MADE as i64, MADE as i64),
        "finishing tasks leaves the outbox alone"
    );
    store
        .dispatch
        .mark_published(Vec::new(), t0())
        .await
        .unwrap();
    assert_eq!(open(&operator).await, (LEFT as i64, MADE as i64));
    // Every publication, then every close, updated a row.
    let mut updated = (MADE + MADE - LEFT) as i64;
    let before = rows_scanned(&operator, "dispatches", updated).await;
    // What autovacuum does in time: the index entries of the rows' versions before they
    // were published and closed go (PostgreSQL keeps them until then; they are garbage of
    // the updates, not rows the statements select).
    operator.batch_execute("VACUUM dispatches").await.unwrap();
    let read_before = outbox_entries_read(&operator).await;

    // The publisher's loop: what is due (nothing), the gauges, and one retried task's
    // publication and confirmation.
    for _ in 0..5 {
        assert_eq!(store.dispatch.due_publications(10).await.unwrap(), vec![]);
        assert_eq!(store.dispatch.unpublished_counts().await.unwrap(), vec![]);
    }
    let last = drover_core::ids::sweep_task_id(&made.id, (MADE - 1) as u64);
    let claimed = store.jobs.claim_task(&last, &spot, None, t0()).await;
    assert!(matches!(claimed, Ok(TaskClaim::Claimed(_))), "{claimed:?}");
    let failed = Report {
        task_id: last.clone(),
        node_id: spot.clone(),
        attempt: None,
        kind: ReportKind::Fail {
            error: "again".into(),
            retriable: true,
        },
    };
    store.jobs.report(vec![failed], t0()).await.unwrap();
    let due = store.dispatch.due_publications(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].task.id.as_str(), due[0].task.attempt),
        (last.as_str(), 1)
    );
    store
        .dispatch
        .mark_published(confirmed(&due), t0())
        .await
        .unwrap();
    updated += 1;
    let after = rows_scanned(&operator, "dispatches", updated).await;
    assert_eq!(after - before, 0, "the outbox was scanned whole");
    // About a dozen statements, each reading the few open rows (a window of the published
    // ones, their outbox rows by key): bounded by the work not finished. One walk over the
    // rows of the finished tasks alone would pass the bound.
    let read = outbox_entries_read(&operator).await - read_before;
    assert!(
        read < (MADE - LEFT) as i64,
        "the outbox's reads walked the rows of finished tasks: {read} entries read"
    );
}
