//! The background workers' uniform state: last run, duration, last error and counts, shown by
//! `GET /api/v1/workers` and `/metrics`, moving when a reaper runs.

use crate::helpers::{eventually, spawn_app, spawn_app_real_time};
use drover_api::WorkerInfo;
use serde_json::json;
use std::time::Duration;

fn by_name<'a>(workers: &'a [WorkerInfo], name: &str) -> &'a WorkerInfo {
    workers
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no worker {name} in {workers:?}"))
}

#[tokio::test]
async fn a_reaper_step_moves_its_state_in_the_listing_and_the_metrics() {
    let app = spawn_app().await;
    let before = app.client.workers().await.unwrap();
    let names: Vec<&str> = before.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "replica-repair",
            "spot-reaper",
            "store-checkpoint",
            "task-reaper"
        ]
    );
    let reaper = by_name(&before, "task-reaper");
    assert_eq!((reaper.runs, reaper.failures), (0, 0));
    assert_eq!(reaper.last_run_at, None);
    assert!(
        app.metrics_text()
            .await
            .contains("drover_worker_runs_total{worker=\"task-reaper\"} 0")
    );

    // One task whose lease runs out, taken back by one recorded step.
    app.create_job(1, json!({"taskTimeoutSeconds": 60})).await;
    let spot = app.hello().await;
    app.client.claim(&spot, 1).await.unwrap();
    app.advance(Duration::from_secs(60 + 11));
    let counts = app.state.step(&app.state.task_reaper()).await.unwrap();
    assert!(counts.contains(&("tasks_retried", 1)), "{counts:?}");

    let after = app.client.workers().await.unwrap();
    let reaper = by_name(&after, "task-reaper");
    assert_eq!((reaper.runs, reaper.failures), (1, 0));
    assert_eq!(
        reaper.last_run_at.as_deref(),
        Some("2026-01-28T12:01:11.000Z")
    );
    assert!(reaper.last_duration_ms.is_some());
    assert_eq!(reaper.last_error, None);
    assert_eq!(reaper.last_counts.get("tasks_retried"), Some(&1));
    assert_eq!(reaper.totals.get("tasks_retried"), Some(&1));
    assert_eq!(
        by_name(&after, "spot-reaper").runs,
        0,
        "only the one that ran"
    );

    let text = app.metrics_text().await;
    for line in [
        "drover_worker_runs_total{worker=\"task-reaper\"} 1",
        "drover_worker_items_total{worker=\"task-reaper\",item=\"tasks_retried\"} 1",
        "drover_worker_last_failed{worker=\"task-reaper\"} 0",
        "drover_worker_last_run_timestamp_seconds{worker=\"task-reaper\"} 1769601671.0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    app.finish().await;
}

#[tokio::test]
async fn a_failed_step_is_recorded_with_its_error() {
    let app = spawn_app().await;
    app.state.store.ops.close().await.unwrap();
    let failed = app.state.step(&app.state.spot_reaper()).await;
    assert!(failed.is_err());

    let workers = app.state.workers.snapshot();
    let reaper = workers.iter().find(|w| w.name == "spot-reaper").unwrap();
    assert_eq!((reaper.runs, reaper.failures), (1, 1));
    let error = reaper.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("closed"), "{error}");
    let text = app.metrics_text().await;
    assert!(
        text.contains("drover_worker_failures_total{worker=\"spot-reaper\"} 1"),
        "{text}"
    );
    assert!(text.contains("drover_worker_last_failed{worker=\"spot-reaper\"} 1"));
    app.begin_shutdown();
    app.stopped().await;
}

#[tokio::test]
async fn scheduled_workers_record_their_steps() {
    let app = spawn_app_real_time(|c| {
        c.task_reaper_interval = Duration::from_millis(50);
        c.spot_reaper_interval = Duration::from_millis(50);
    })
    .await;
    let workers = eventually(
        Duration::from_secs(10),
        "two steps of each reaper",
        || async {
            let workers = app.client.workers().await.ok()?;
            let reapers: Vec<_> = workers
                .into_iter()
                .filter(|w| w.name.ends_with("-reaper"))
                .collect();
            reapers.iter().all(|w| w.runs >= 2).then_some(reapers)
        },
    )
    .await;
    assert_eq!(workers.len(), 2, "{workers:?}");
    for w in &workers {
        assert_eq!(w.interval_seconds, Some(0.05), "{w:?}");
        assert_eq!(w.failures, 0, "{w:?}");
    }
    app.finish().await;
}

#[tokio::test]
async fn the_store_checkpoint_is_a_listed_step_that_never_fails_a_busy_or_fresh_store() {
    let app = spawn_app().await;
    app.create_job(3, json!({})).await;
    // Just after a commit the store is not quiet: nothing to fold yet, and no failure.
    let counts = app.state.step(&app.state.store_checkpoint()).await.unwrap();
    assert_eq!(counts, [("wal_bytes_released", 0)]);
    let listed = app.client.workers().await.unwrap();
    let step = by_name(&listed, "store-checkpoint");
    assert_eq!((step.runs, step.failures), (1, 0));
    app.finish().await;
}
