//! Publishing the journal with failover, on real sinks: file sinks in directories that the
//! test breaks and mends, and another drover server over HTTP. The routing walks the
//! placement contract's diagram, every entry reaches the primary in order once it is back,
//! and a restart in the middle of a fallback loses nothing pending.

use crate::helpers::{TestApp, spawn, spawn_app_real_time};
use drover_core::journal::Entry;
use drover_core::sink_routing::{RoutingConfig, RoutingState, Transition};
use drover_server::journal::{JournalConfig, SinkSpec, decode};
use drover_sinks::{FileSink, read_blobs};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Quick to fall back and to recover, so the test walks the diagram in seconds.
fn journal_to(primary: &Path, secondary: &Path, emergency: Option<&str>) -> JournalConfig {
    JournalConfig {
        secondary: Some(SinkSpec::File(secondary.to_path_buf())),
        emergency: emergency.map(|url| SinkSpec::Http(url.to_string())),
        routing: RoutingConfig {
            failure_threshold: 2,
            recovery_threshold: 2,
            check_interval: Duration::from_millis(100),
            ..RoutingConfig::default()
        },
        timeout: Duration::from_secs(5),
        publish_every: Duration::from_millis(50),
        blob_max_bytes: 4096,
        reconcile_retry_delay: Duration::from_millis(50),
        ..JournalConfig::to(SinkSpec::File(primary.to_path_buf()))
    }
}

/// Makes a sink's directory refuse every write, as a lost mount does: the directory moves
/// away and a plain file takes its place (permission bits would not stop root).
fn break_dir(dir: &Path) {
    std::fs::rename(dir, away(dir)).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
}

fn mend_dir(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(away(dir), dir).unwrap();
}

fn away(dir: &Path) -> PathBuf {
    dir.with_extension("away")
}

/// Registers placement nodes one after another until stopped: a stream of journaled changes.
struct Registrations {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Registrations {
    fn start(app: &TestApp) -> Registrations {
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (http, url) = (app.http.clone(), app.url("/register"));
        let (halt, count) = (stop.clone(), done.clone());
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                let i = count.load(Ordering::Relaxed);
                let body = json!({"id": format!("node-{i}"), "zone": "z", "addr": "10.0.0.1:1"});
                let answer = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(answer.status(), 200);
                count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Registrations { stop, done, task }
    }

    /// Waits until `more` further registrations were answered.
    async fn wait_for(&self, more: u64) {
        let target = self.done.load(Ordering::Relaxed) + more;
        eventually("registrations", || async {
            (self.done.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(app: &TestApp) -> Value {
    let (code, body) = app.get_json("/fallback/status").await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn wait_for_status(app: &TestApp, word: &str) {
    eventually(&format!("status {word}"), || async {
        (status(app).await["current_status"] == word).then_some(())
    })
    .await;
}

/// Waits until every entry of the journal is published and nothing is pending, with the
/// routing back to Healthy; answers the journal's head.
async fn settled(app: &TestApp) -> u64 {
    eventually(
        "the journal published, nothing pending, healthy",
        || async {
            let journal = &app.state.store.journal;
            let head = journal.journal_head().await.ok()?;
            let published = journal.published_upto().await.ok()?;
            let pending = journal.pending_blobs(10).await.ok()?;
            let s = status(app).await;
            // `primary_healthy` is also Recovering's word: the routing itself must be Healthy,
            // which it is only after the pass that emptied the queue has reported.
            let routing = app.state.journal.as_ref()?.snapshot().state;
            (published == head
                && pending.is_empty()
                && s["current_status"] == "primary_healthy"
                && s["pending_reconcile_count"] == 0
                && routing == RoutingState::Healthy)
                .then_some(head)
        },
    )
    .await
}

/// Every entry the file sink in `dir` holds, blob after blob.
/// Read beside the server's own sink there, so without opening one (`FileSink::open` clears
/// the directory's temporary files, a check's probe in flight among them).
fn entries_at(dir: &Path) -> Vec<Entry> {
    (read_blobs(dir).unwrap().iter())
        .flat_map(|blob| decode(blob).unwrap())
        .collect()
}

fn assert_in_order_without_gaps(entries: &[Entry], head: u64) {
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert_eq!(
        seqs, expected,
        "the primary holds every entry once, in order"
    );
}

fn walked(app: &TestApp) -> Vec<(RoutingState, RoutingState)> {
    let publisher = app.state.journal.as_ref().unwrap();
    (publisher.transitions().into_iter())
        .map(|Transition { from, to }| (from, to))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_walks_the_diagram_and_reconciliation_brings_every_entry_to_the_primary() {
    use RoutingState::*;
    // The emergency sink: another drover server's /da/post.
    let sinks = tempfile::tempdir().unwrap();
    let emergency_dir = sinks.path().join("emergency");
    let keeper = spawn_app_real_time({
        let dir = emergency_dir.clone();
        move |c| c.da_dir = Some(dir)
    })
    .await;
    let (primary, secondary) = (sinks.path().join("primary"), sinks.path().join("secondary"));
    let config = journal_to(&primary, &secondary, Some(&keeper.base));
    let app = spawn_app_real_time(move |c| c.journal = Some(config)).await;
    let stream = Registrations::start(&app);
    stream.wait_for(10).await;
    wait_for_status(&app, "primary_healthy").await;
    assert!(!read_blobs(&primary).unwrap().is_empty());

    // The primary's directory goes: Warning, then Degraded (the secondary takes the blobs).
    break_dir(&primary);
    wait_for_status(&app, "fallback_secondary").await;
    stream.wait_for(10).await;
    eventually("blobs on the secondary", || async {
        (!read_blobs(&secondary).ok()?.is_empty()).then_some(())
    })
    .await;
    let s = status(&app).await;
    assert_eq!(s["fallback_active"], true);
    assert!(s["last_fallback_at"].as_i64().is_some(), "{s}");
    assert!(s["fallback_reason"].as_str().is_some(), "{s}");

    // The secondary goes too: Emergency, blobs go to the other server.
    break_dir(&secondary);
    wait_for_status(&app, "fallback_emergency").await;
    stream.wait_for(10).await;
    eventually("blobs on the emergency sink", || async {
        let (_, head) = keeper.get_json("/da/head").await;
        (head["height"].as_u64()? > 0).then_some(())
    })
    .await;
    let (code, pending) = app.get_json("/fallback/pending").await;
    assert_eq!(code, 200);
    let sources: Vec<&str> = (pending.as_array().unwrap().iter())
        .map(|b| b["source_da"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"secondary") && sources.contains(&"emergency"),
        "{pending}"
    );
    assert!(pending[0]["target_da"] == "primary" && pending[0]["stored_at"].is_i64());
    // The contract's fields, each blob named by its commitment.
    let fields: Vec<&str> = pending[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "blob_id",
        "source_da",
        "target_da",
        "stored_at",
        "retry_count",
        "last_error",
    ];
    assert_eq!(fields, expected, "{pending}");
    assert_eq!(
        pending[0]["blob_id"].as_str().map(str::len),
        Some(64),
        "{pending}"
    );
    let (_, routing) = app.get_json("/da/routing").await;
    assert_eq!(routing["current_state"], "emergency");
    assert_eq!(routing["primary_healthy"], false);

    // The primary comes back (the secondary stays broken: its blobs are made again from the
    // journal and checked against their commitments). Recovering, then Healthy.
    mend_dir(&primary);
    stream.wait_for(10).await;
    stream.stop().await;
    let head = settled(&app).await;
    assert_in_order_without_gaps(&entries_at(&primary), head);

    let moves = walked(&app);
    for step in [
        (Healthy, Warning),
        (Warning, Degraded),
        (Degraded, Emergency),
        (Emergency, Recovering),
        (Recovering, Healthy),
    ] {
        assert!(moves.contains(&step), "{step:?} not in {moves:?}");
    }
    let (_, metrics) = app.get_json("/da/metrics").await;
    assert_eq!(metrics["available"], true);
    assert!(metrics["post_count"].as_u64().unwrap() > 0, "{metrics}");
    assert!(metrics["error_count"].as_u64().unwrap() > 0, "{metrics}");
    assert!(
        metrics["health_check_count"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    let (_, health) = app.get_json("/health").await;
    assert_eq!(health["status"], "healthy (routing: primary)");
    assert_eq!(health["da_health"], "Ok(Healthy)");
    // A reconciliation asked for by hand with nothing pending: the contract's report.
    let (code, report) = app.post_json("/fallback/reconcile", json!({})).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(
        (
            &report["success"],
            &report["blobs_processed"],
            &report["blobs_reconciled"],
            &report["blobs_failed"],
            &report["errors"]
        ),
        (&json!(true), &json!(0), &json!(0), &json!(0), &json!([])),
        "{report}"
    );
    assert!(report["duration_ms"].is_u64(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_degraded_loses_nothing_pending_and_reconciles_after() {
    let sinks = tempfile::tempdir().unwrap();
    let (primary, secondary) = (sinks.path().join("primary"), sinks.path().join("secondary"));
    let config = journal_to(&primary, &secondary, None);
    let first = spawn(
        {
            let config = config.clone();
            move |c| {
                c.server = drover_server::ServerConfig::default();
                c.server.journal = Some(config);
            }
        },
        false,
    )
    .await;
    let url = first.db_path.display().to_string();
    let stream = Registrations::start(&first);
    stream.wait_for(10).await;
    break_dir(&primary);
    wait_for_status(&first, "fallback_secondary").await;
    stream.wait_for(20).await;
    stream.stop().await;
    eventually("blobs pending on the secondary", || async {
        let pending = first.state.store.journal.pending_blobs(10).await.ok()?;
        (!pending.is_empty()).then_some(())
    })
    .await;
    first.begin_shutdown();
    let dir = first.stopped().await;

    // Restarted on the same database with the primary back: what was pending is reconciled.
    mend_dir(&primary);
    let second = spawn(
        move |c| {
            c.server = drover_server::ServerConfig::default();
            c.server.journal = Some(config);
            c.store_url = url;
        },
        false,
    )
    .await;
    let head = settled(&second).await;
    assert_in_order_without_gaps(&entries_at(&primary), head);
    let moves = walked(&second);
    assert!(
        moves.contains(&(RoutingState::Healthy, RoutingState::Recovering))
            && moves.contains(&(RoutingState::Recovering, RoutingState::Healthy)),
        "{moves:?}"
    );
    drop(dir);
}

#[tokio::test]
async fn a_server_that_publishes_nowhere_says_so() {
    let app = crate::helpers::spawn_app().await;
    let (code, s) = app.get_json("/fallback/status").await;
    assert_eq!(code, 200);
    assert_eq!(s["current_status"], "unavailable");
    assert!(
        s["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("--journal-sink")
    );
    let (_, routing) = app.get_json("/da/routing").await;
    assert_eq!(routing["current_state"], "none");
    let (_, metrics) = app.get_json("/da/metrics").await;
    assert_eq!(metrics["available"], false);
    let (code, refused) = app.post_json("/fallback/reconcile", json!({})).await;
    assert_eq!(
        (code, refused["code"].as_str()),
        (503, Some("JOURNAL_NOT_PUBLISHED"))
    );
    let (code, pending) = app.get_json("/fallback/pending").await;
    assert_eq!((code, pending), (200, json!([])));
}

/// A workload over the HTTP surfaces: placement nodes with stats, weights, an object with
/// replicas, spots, a job claimed, completed and failed, a runner.
async fn http_workload(app: &TestApp) {
    for (id, zone) in [("node-1", "a"), ("node-2", "b")] {
        let body = json!({"id": id, "zone": zone, "addr": "10.0.0.1:1", "capacity_gb": 5});
        assert_eq!(app.post_json("/register", body).await.0, 200);
    }
    let stats = json!({"cpu_free": 0.5, "ram_free_mb": 100.0, "gpu_free": 0.0,
                       "latency_ms": 2.5, "io_pressure": 0.25});
    assert_eq!(app.post_json("/node/node-1/stats", stats).await.0, 200);
    let weights = json!({"w_cpu": 2.0, "w_ram": 1.0, "w_gpu": 0.5, "w_latency": 0.8, "w_io": 0.6});
    assert_eq!(app.post_json("/scheduler/config", weights).await.0, 200);
    let object = json!({"hash": "abc123def456", "size": 1048576});
    assert_eq!(app.post_json("/object/register", object).await.0, 200);
    let missing = json!({"hash": "abc123def456", "node_id": "node-1"});
    assert_eq!(app.post_json("/replica/mark_missing", missing).await.0, 200);

    let spot = app.hello().await;
    let job = app.create_job(4, json!({})).await;
    let claimed = app.client.claim(&spot, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let done = drover_api::CompleteRequest {
        spot_id: spot.clone(),
        ..Default::default()
    };
    app.client.complete(&claimed[0].id, &done).await.unwrap();
    let failed = drover_api::FailRequest {
        spot_id: spot.clone(),
        retriable: Some(false),
        ..Default::default()
    };
    app.client.fail(&claimed[1].id, &failed).await.unwrap();
    let other = app.create_job(2, json!({})).await;
    app.client.cancel_job(&other.job_id).await.unwrap();
    assert!(!job.job_id.is_empty());
    let runner = drover_store::NewRunner {
        session_id: "session-1".into(),
        driver: "process".into(),
        singleton: false,
        token_hash: None,
    };
    let now = app.state.clock.now();
    app.store()
        .runners
        .reserve_runner(runner, None, now)
        .await
        .unwrap();
}

/// The rebuilt store holds what the original's tables hold, as far as the journal carries it.
async fn assert_same_state(original: &TestApp, rebuilt: &drover_store::Stores) {
    let before = original.store().journal.live_state().await.unwrap();
    let after = rebuilt.journal.live_state().await.unwrap();
    let differences = before.state.differences(&after.state, &after.counts);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert_eq!(before.counts, after.counts);
    assert_eq!(before.head, after.head);
}

/// Publishes a workload's journal to a file sink, reads it back from there and rebuilds it
/// into `rebuilt` (an empty store), which then holds what the original holds.
async fn rebuild_from_the_primary_sink(rebuilt: drover_store::Stores) {
    let sinks = tempfile::tempdir().unwrap();
    let (primary, secondary) = (sinks.path().join("primary"), sinks.path().join("secondary"));
    let config = journal_to(&primary, &secondary, None);
    let app = spawn_app_real_time(move |c| c.journal = Some(config)).await;
    http_workload(&app).await;
    let head = settled(&app).await;

    let sink = drover_server::journal::open_sink(
        &SinkSpec::File(primary.clone()),
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    let mut read = 0;
    let entries =
        drover_server::journal::read_back(&[("primary".into(), sink)], |_, _, _| read += 1)
            .await
            .unwrap();
    assert!(read > 0);
    assert_eq!(entries.last().map(|e| e.seq), Some(head));
    let now = app.state.clock.now();
    assert_eq!(rebuilt.journal.restore(entries, now).await.unwrap(), head);
    assert_same_state(&app, &rebuilt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_rebuilt_from_the_primary_sink_holds_the_original_state() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("rebuilt.db").display().to_string();
    rebuild_from_the_primary_sink(drover_store::open(&url).unwrap()).await;
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_rebuilt_from_the_primary_sink_holds_the_original_state() {
    let url = drover_pgtest::fresh_database().unwrap();
    rebuild_from_the_primary_sink(drover_store::open(&url).unwrap()).await;
}

#[tokio::test]
async fn reading_back_needs_every_entry_and_names_the_first_missing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::open(dir.path()).unwrap();
    let at = chrono::Utc::now();
    let entry = |seq| Entry {
        seq,
        at,
        kind: "node_forgotten".into(),
        changes: vec![drover_core::journal::Change::NodeGone { id: "n".into() }],
    };
    for blob in [vec![entry(1), entry(2)], vec![entry(4)]] {
        let (bytes, _) = drover_server::journal::encode(&blob, usize::MAX).unwrap();
        sink.post(&bytes).unwrap();
    }
    let primary: Arc<dyn drover_sinks::Sink> = Arc::new(sink);
    let err =
        drover_server::journal::read_back(&[("primary".into(), primary.clone())], |_, _, _| {})
            .await
            .unwrap_err();
    assert!(err.to_string().contains("no entry 3"), "{err}");

    // The blob still pending on a fallback fills the hole: read together, the whole journal,
    // each entry once, entry 2 (on both) too.
    let fallback_dir = tempfile::tempdir().unwrap();
    let fallback = FileSink::open(fallback_dir.path()).unwrap();
    let (bytes, _) = drover_server::journal::encode(&[entry(2), entry(3)], usize::MAX).unwrap();
    fallback.post(&bytes).unwrap();
    let fallback: Arc<dyn drover_sinks::Sink> = Arc::new(fallback);
    let both = [
        ("primary".into(), primary.clone()),
        ("secondary".into(), fallback),
    ];
    let entries = drover_server::journal::read_back(&both, |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );

    // Two blobs that disagree on an entry: refused, naming it.
    let other_dir = tempfile::tempdir().unwrap();
    let other = FileSink::open(other_dir.path()).unwrap();
    let mut changed = entry(2);
    changed.kind = "node_registered".into();
    let (bytes, _) = drover_server::journal::encode(&[changed], usize::MAX).unwrap();
    other.post(&bytes).unwrap();
    let other: Arc<dyn drover_sinks::Sink> = Arc::new(other);
    let err = drover_server::journal::read_back(
        &[("primary".into(), primary), ("other".into(), other)],
        |_, _, _| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("entry 2 differs"), "{err}");
}

/// Retention: once the primary holds the journal, the compactor drops all but the newest
/// entries behind a snapshot; the check still replays to the tables, reading the journal from
/// entry 1 now starts after the snapshot, and numbering goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_on_the_primary_are_compacted_and_the_check_replays_from_the_snapshot() {
    let sinks = tempfile::tempdir().unwrap();
    let (primary, secondary) = (sinks.path().join("primary"), sinks.path().join("secondary"));
    let config = journal_to(&primary, &secondary, None);
    let app = spawn_app_real_time(move |c| c.journal = Some(config)).await;
    http_workload(&app).await;
    let head = settled(&app).await;
    let compactor = drover_server::journal::JournalCompactor {
        store: app.store().journal.clone(),
        clock: app.state.clock.clone(),
        keep: 3,
    };
    assert_eq!(compactor.compact().await.unwrap(), head - 3);
    assert_eq!(
        compactor.compact().await.unwrap(),
        0,
        "nothing more to drop"
    );

    let (_, page) = app.get_json("/api/v1/journal?after=0").await;
    let seqs: Vec<u64> = (page["entries"].as_array().unwrap().iter())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, ((head - 2)..=head).collect::<Vec<_>>());
    let (_, report) = app.get_json("/fallback/consistency").await;
    assert_eq!(report["is_consistent"], true, "{report}");

    app.hello().await;
    let next = app.store().journal.journal(head, 10).await.unwrap();
    assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), [head + 1]);
    let (_, report) = app.get_json("/api/v1/journal/verify").await;
    assert_eq!(report["consistent"], true, "{report}");
}

/// The primary is a PostgreSQL sink whose server stops (as a crash) and comes back: blobs go
/// to the secondary meanwhile, and once the database is back they are reconciled to it, so the
/// primary holds every entry once, in order.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_primary_that_stops_and_returns_gets_every_entry_in_order() {
    let pg = drover_pgtest::TempPostgres::start().unwrap();
    let sink_url = pg.create_database("journal_primary").unwrap();
    let sinks = tempfile::tempdir().unwrap();
    let secondary = sinks.path().join("secondary");
    let config = JournalConfig {
        primary: SinkSpec::Postgres(sink_url.clone()),
        timeout: Duration::from_secs(2),
        ..journal_to(sinks.path(), &secondary, None)
    };
    let app = spawn_app_real_time(move |c| c.journal = Some(config)).await;
    let stream = Registrations::start(&app);
    stream.wait_for(10).await;
    wait_for_status(&app, "primary_healthy").await;

    pg.crash().unwrap();
    wait_for_status(&app, "fallback_secondary").await;
    stream.wait_for(20).await;
    pg.start_again().unwrap();
    stream.wait_for(10).await;
    stream.stop().await;
    let head = settled(&app).await;

    let sink = drover_server::journal::open_sink(
        &SinkSpec::Postgres(sink_url),
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    let entries =
        drover_server::journal::read_back(&[("primary".into(), sink.clone())], |_, _, _| {})
            .await
            .unwrap();
    assert_in_order_without_gaps(&entries, head);
    // Publishing is at least once: a post that the database committed as it crashed, before
    // its answer came back, counts as failed, and its entries go again (to the secondary, then
    // back to the primary). So the primary may hold one lost post's entries twice, never more,
    // and always as a repeat of entries just before (replay skips them: `read_back` above).
    let mut seqs = Vec::new();
    for height in 1..=sink.head().await.unwrap() {
        let blob = decode(&sink.get(height).await.unwrap().unwrap()).unwrap();
        seqs.extend(blob.iter().map(|e| e.seq));
    }
    let repeats: Vec<u64> = (seqs.windows(2).filter(|w| w[1] <= w[0]))
        .map(|w| w[1])
        .collect();
    assert!(
        repeats.len() <= 1,
        "more than one lost post repeated: {seqs:?}"
    );
    assert!(
        seqs.len() as u64 - head <= 1000,
        "the repeat is at most one blob: {seqs:?}"
    );
    let moves = walked(&app);
    assert!(
        moves.contains(&(RoutingState::Degraded, RoutingState::Recovering)),
        "{moves:?}"
    );
}
