//! Times the SQLite store in-process, with no server in front: making a large sweep (how long,
//! and how many bytes of database and WAL it leaves), then draining a sweep by claim and report
//! batches on one node. Figures for the benchmark notes, never a test's pass mark.
//!
//! `cargo run --release -p drover-store --example store_timing -- [sweep] [drain] [batch]`
//! (defaults: 1,000,000, 20,000, 100).

use chrono::Utc;
use drover_core::sweep::{Sweep, SweepSpec};
use drover_core::{NodeInfo, ReportKind, TaskResult};
use drover_store::{NewJob, Report, SqliteStore};
use std::path::Path;
use std::time::{Duration, Instant};

fn sweep(n: u64) -> Sweep {
    let spec = SweepSpec::counting("x", "x", n as i64);
    Sweep::new(spec, u64::MAX).expect("a valid sweep")
}

fn job() -> NewJob {
    NewJob {
        origin: None,
        id: None,
        name: Some("timing".into()),
        priority: 0,
        max_attempts: 3,
        task_timeout: Duration::from_secs(3600),
        run: None,
    }
}

fn bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(path) + size(&path.with_extension("db-wal"))
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (sweep_len, drain, batch) = (arg(1, 1_000_000), arg(2, 20_000), arg(3, 100) as u32);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("drover.db");
    let store = SqliteStore::open(&path)
        .expect("the store opens")
        .into_stores();

    let started = Instant::now();
    let big = store
        .jobs
        .create_job(job(), sweep(sweep_len), Utc::now())
        .await
        .expect("the sweep is made");
    println!(
        "create {sweep_len} tasks: {:.3} s; database + WAL {:.1} MB",
        started.elapsed().as_secs_f64(),
        bytes(&path) as f64 / 1e6
    );
    // The drain job comes first in claim order.
    let mut drained = job();
    drained.priority = 1;
    store
        .jobs
        .create_job(drained, sweep(drain), Utc::now())
        .await
        .expect("the drain job is made");
    let node = store
        .nodes
        .register_node(
            NodeInfo {
                address: "127.0.0.1".into(),
                ..Default::default()
            }
            .into(),
            None,
            Utc::now(),
        )
        .await
        .expect("the node registers")
        .id;

    let started = Instant::now();
    let mut done = 0u64;
    while done < drain {
        let claimed = store
            .jobs
            .claim(&node, batch, Utc::now())
            .await
            .expect("a claim");
        let reports = claimed
            .into_iter()
            .map(|t| Report {
                task_id: t.id,
                node_id: node.clone(),
                attempt: Some(t.attempt),
                kind: ReportKind::Complete(TaskResult {
                    runtime_ms: Some(1),
                    ..Default::default()
                }),
            })
            .collect::<Vec<_>>();
        done += reports.len() as u64;
        store
            .jobs
            .report(reports, Utc::now())
            .await
            .expect("a report");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "claim + report {drain} tasks in batches of {batch}: {secs:.3} s, {:.0} tasks/s; \
         database + WAL {:.1} MB",
        drain as f64 / secs,
        bytes(&path) as f64 / 1e6
    );
    let job = store.jobs.get_job(&big.id).await.expect("the sweep");
    assert_eq!(job.counts.new, sweep_len);
    store.ops.close().await.expect("the store closes");
}
