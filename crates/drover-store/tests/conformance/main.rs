//! The store conformance suite: what every backend must do, one module per aggregate.
//!
//! Each scenario is a plain async function over [`Stores`]; each aggregate's module ends with
//! its own macro (`jobs_suite!`, `nodes_suite!`, `runners_suite!`, `ops_suite!`,
//! `events_suite!`, `cluster_suite!`, `placement_suite!`, `dispatch_suite!`, `journal_suite!`) instantiated for SQLite, so a backend proves each part
//! separately: a PostgreSQL store adds one `xxx_suite!(postgres, ...)` line per module. Every scenario that
//! changes jobs ends by checking invariant 4 (job counts equal task counts) through
//! `audit_job_counts`. Every scenario also runs behind `drover_store::faults` with delays
//! (`sqlite_delayed`); `faults.rs` runs the lifecycle behind errors and lost answers.

use chrono::{Duration as Span, TimeZone, Utc};
use drover_core::sweep::{Sweep, SweepSpec};
use drover_core::{NodeInfo, ReportKind, ReportOutcome, TaskResult, Timestamp};
use drover_store::{NewJob, Page, Report, SqliteStore, Stores};
use std::time::Duration;

/// A store under test and whatever keeps its backing storage alive.
pub struct Fixture {
    pub store: Stores,
    _guard: Box<dyn std::any::Any + Send>,
}

/// Instantiates scenarios for one backend: `plain` ones on a current-thread runtime, `shared`
/// ones (which spawn concurrent callers) on a multi-threaded one. Attributes before the
/// backend's name go on each of its tests (a backend that needs an outside part is marked
/// `#[cfg_attr(missing_<part>, ignore = "...")]`).
macro_rules! suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr; plain: [$($plain:ident),* $(,)?]; shared: [$($shared:ident),* $(,)?]) => {
        suite!(@module [$(#[$meta])*] $backend, $fixture; plain: [$($plain),*]; shared: [$($shared),*]);
    };
    // The attributes travel as one bracketed group, so that each test can take them all.
    (@module $attrs:tt $backend:ident, $fixture:expr; plain: [$($plain:ident),*]; shared: [$($shared:ident),*]) => {
        mod $backend {
            async fn fixture() -> Option<$crate::Fixture> {
                $fixture.await
            }
            $( suite!(@plain $attrs $plain); )*
            $( suite!(@shared $attrs $shared); )*
        }
    };
    (@plain [$(#[$meta:meta])*] $name:ident) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let Some(f) = fixture().await else { return };
            super::$name(&f.store).await;
        }
    };
    (@shared [$(#[$meta:meta])*] $name:ident) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some(f) = fixture().await else { return };
            super::$name(f.store.clone()).await;
        }
    };
}

mod cluster;
mod dispatch;
mod events;
mod faults;
mod jobs;
mod journal;
mod nodes;
mod ops;
mod placement;
mod runners;
mod sqlite;

/// A fresh PostgreSQL store: an empty database in the cluster this test process shares
/// (`drover_pgtest`). Panics, saying why, when no cluster can be started: the tests that use
/// it are marked ignored where PostgreSQL is not installed, so reaching here without one is a
/// failure, not a skip.
pub async fn postgres_fixture() -> Option<Fixture> {
    let url = drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to run the suite against: {why}"));
    let store = drover_store::PgStore::connect(&url, drover_store::PgOptions::default())
        .await
        .unwrap_or_else(|e| panic!("opening the PostgreSQL store at {url}: {e}"));
    Some(Fixture {
        store: store.into_stores(),
        _guard: Box::new(()),
    })
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite_fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = drover_store::open(&dir.path().join("drover.db").to_string_lossy()).unwrap();
    Some(Fixture {
        store,
        _guard: Box::new(dir),
    })
}

/// A fresh SQLite store behind the fault wrapper with delays only (every call succeeds, late
/// and in a seeded order), so each scenario also shows the wrapper passes calls through intact
/// and nothing depends on a call's timing.
pub async fn delayed_fixture() -> Option<Fixture> {
    use drover_store::faults::{self, FaultPlan, Faults};
    let f = sqlite_fixture().await?;
    let plan = FaultPlan::delays_only(faults::seed_from_env("conformance"));
    Some(Fixture {
        store: faults::wrap(f.store, Faults::new(plan)),
        _guard: f._guard,
    })
}

/// Opens the SQLite file at `path` as [`Stores`].
pub fn open_sqlite(path: &std::path::Path) -> Stores {
    SqliteStore::open(path).unwrap().into_stores()
}

pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap()
}

pub fn secs(s: i64) -> Span {
    Span::seconds(s)
}

pub fn new_job(max_attempts: u32, timeout_secs: u64, priority: i64) -> NewJob {
    NewJob {
        origin: None,
        id: None,
        name: Some("test".into()),
        priority,
        max_attempts,
        task_timeout: Duration::from_secs(timeout_secs),
        run: None,
    }
}

pub fn sweep(n: i64) -> Sweep {
    Sweep::new(SweepSpec::counting("x", "x", n), 1_000_000).unwrap()
}

/// An explicit list of `n` tasks (`{"seed": i}`), as a contract's jobs and a broker's are made.
pub fn listed(n: u64) -> Sweep {
    let tasks = (0..n)
        .map(|i| {
            let mut payload = serde_json::Map::new();
            payload.insert("seed".into(), i.into());
            payload
        })
        .collect();
    Sweep::new(
        SweepSpec {
            tasks: Some(tasks),
            ..Default::default()
        },
        1_000_000,
    )
    .unwrap()
}

pub async fn node(store: &Stores, now: Timestamp) -> String {
    store
        .nodes
        .register_node(
            NodeInfo {
                address: "127.0.0.1".into(),
                ..Default::default()
            }
            .into(),
            None,
            now,
        )
        .await
        .unwrap()
        .id
}

pub fn complete(task: &str, node: &str, fopt: f64) -> Report {
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

pub fn fail(task: &str, node: &str, retriable: bool) -> Report {
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

pub async fn report_one(store: &Stores, r: Report, now: Timestamp) -> ReportOutcome {
    store.jobs.report(vec![r], now).await.unwrap()[0]
}

/// Invariant 4, checked by the store's own audit and by the counts adding up.
pub async fn assert_counts_consistent(store: &Stores) {
    let mismatches = store.ops.audit_job_counts().await.unwrap();
    assert!(
        mismatches.is_empty(),
        "job counts differ from task counts: {mismatches:?}"
    );
    for job in store
        .jobs
        .list_jobs(None, Page::first(1000))
        .await
        .unwrap()
        .items
    {
        assert!(job.counts.is_consistent(), "{job:?}");
    }
}
