//! The event journal: every acknowledged change is an entry, numbered without gaps, written in
//! the change's own transaction, and replaying the entries rebuilds the journaled state that
//! the live tables hold.

use crate::{complete, fail, listed, new_job, node, secs, sweep, t0};
use drover_core::journal::{Change, Entry, State};
use drover_core::node::Drain;
use drover_core::scheduling::{Stats, Weights};
use drover_core::sink_routing::SinkRole;
use drover_core::{Capacity, NodeInfo, NodeStats, ReplicaState, Timestamp};
use drover_store::{Liveness, NamedNode, NewBlob, NewJob, NewRunner, Route, StoreError, Stores};

/// Every entry of the journal, read a page at a time.
pub async fn read_all(store: &Stores) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store.journal.journal(after, 100).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Replays the whole journal and compares it with the live tables; panics naming every
/// difference. Answers the entries.
pub async fn assert_replay_matches(store: &Stores) -> Vec<Entry> {
    let entries = read_all(store).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=entries.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "entries are numbered 1, 2, 3, ... without gaps"
    );
    let mut replayed = State::default();
    for entry in &entries {
        replayed.apply(entry).unwrap();
    }
    let live = store.journal.live_state().await.unwrap();
    assert_eq!(live.head, replayed.applied, "the head is the last entry");
    assert_eq!(store.journal.journal_head().await.unwrap(), live.head);
    let differences = replayed.differences(&live.state, &live.counts);
    assert!(
        differences.is_empty(),
        "the journal and the tables differ:\n{}",
        differences.join("\n")
    );
    entries
}

fn placed(id: &str) -> NamedNode {
    let mut labels = serde_json::Map::new();
    labels.insert("rack".into(), serde_json::json!("r1"));
    NamedNode {
        id: id.into(),
        info: NodeInfo {
            address: "10.0.0.1:50001".into(),
            zone: Some("zone-a".into()),
            labels,
            ..Default::default()
        },
        capacity_gb: Some(10),
        liveness: Liveness::Stats,
        silence_timeout: None,
    }
}

fn runner(session: &str) -> NewRunner {
    NewRunner {
        session_id: session.into(),
        driver: "process".into(),
        singleton: false,
        token_hash: None,
    }
}

/// A workload over every aggregate the journal covers: nodes (registered, described, beating,
/// down, revived, forgotten), placement stats, the scheduler's weights, objects and replicas,
/// jobs (a sweep and lists; claims, completes, retried and final failures, leases taken back,
/// a cancel with tasks running, a priority raised, a dispatched job) and runners.
pub async fn workload(store: &Stores, at: Timestamp) {
    let a = node(store, at).await;
    let b = node(store, at).await;
    let gone = node(store, at).await;
    let mut labels = serde_json::Map::new();
    labels.insert("gpu".into(), serde_json::json!("a100"));
    store
        .nodes
        .update_node(
            &a,
            labels,
            Capacity {
                cores: Some(8),
                gpus: Some(1),
                ..Capacity::default()
            },
            at + secs(1),
        )
        .await
        .unwrap();
    store
        .nodes
        .heartbeat(&b, NodeStats::default(), at + secs(2))
        .await
        .unwrap();
    store.nodes.flush_heartbeats().await.unwrap();

    store
        .nodes
        .put_node(placed("place-1"), None, at)
        .await
        .unwrap();
    let stats = Stats {
        cpu_free: 0.75,
        ram_free_mb: 4096.5,
        gpu_free: 1.0,
        latency_ms: 3.25,
        io_pressure: 0.1,
    };
    store
        .placement
        .report_stats("place-1", stats, at + secs(1))
        .await
        .unwrap();
    // The same figures again are liveness, not a change: no entry (the journal coalesces them).
    let head = store.journal.journal_head().await.unwrap();
    store
        .placement
        .report_stats("place-1", stats, at + secs(2))
        .await
        .unwrap();
    assert_eq!(store.journal.journal_head().await.unwrap(), head);
    store
        .placement
        .set_scheduler_weights(Weights::default(), at)
        .await
        .unwrap();
    let targets = vec!["place-1".to_string(), a.clone()];
    store
        .placement
        .register_object("obj-1", 1_048_576, 2, &targets, at)
        .await
        .unwrap();
    store
        .placement
        .set_replica("obj-1", "place-1", ReplicaState::Missing, at + secs(2))
        .await
        .unwrap();

    // A sweep of 6: two complete, one fails for good, one fails and is retried, one is taken
    // back when its lease ends, one is never claimed. It says what agents run, so that the
    // job's image in the journal carries a run spec too.
    let run = drover_core::run::RunSpec {
        command: vec!["opt".into(), "--x={x}".into()],
        env: [("SEED".to_string(), "{taskId}".to_string())].into(),
        retry_on_failure: false,
    };
    let swept = store
        .jobs
        .create_job(
            NewJob {
                run: Some(run),
                ..new_job(3, 5, 0)
            },
            sweep(6),
            at,
        )
        .await
        .unwrap();
    let claimed = store.jobs.claim(&a, 5, at + secs(3)).await.unwrap();
    assert_eq!(claimed.len(), 5);
    // A lone complete (PostgreSQL writes it by compare and set) and a batch.
    store
        .jobs
        .report(vec![complete(&claimed[0].id, &a, 1.0)], at + secs(4))
        .await
        .unwrap();
    let reports = vec![
        complete(&claimed[1].id, &a, 2.0),
        fail(&claimed[2].id, &a, false),
        fail(&claimed[3].id, &a, true),
    ];
    store.jobs.report(reports, at + secs(4)).await.unwrap();
    store
        .jobs
        .release_expired_tasks(at + secs(60))
        .await
        .unwrap();
    assert!(!swept.cancelled);

    // A listed job cancelled with one task running.
    let cancelled = store
        .jobs
        .create_job(new_job(1, 60, 0), listed(3), at + secs(61))
        .await
        .unwrap();
    let held = store.jobs.claim(&b, 1, at + secs(62)).await.unwrap();
    assert_eq!(held.len(), 1);
    store
        .jobs
        .cancel_job(&cancelled.id, at + secs(63))
        .await
        .unwrap();

    // A waiting job raised, and a job dispatched through the outbox.
    let mut origin = new_job(1, 60, 1);
    origin.origin = Some("distriqueue".into());
    let low = store
        .jobs
        .create_job(origin.clone(), listed(2), at + secs(64))
        .await
        .unwrap();
    store
        .jobs
        .raise_priority(vec![low.id.clone()], 5, None, at + secs(65))
        .await
        .unwrap();
    let route = Route {
        queue: "job.low".into(),
        priority: 1,
    };
    store
        .dispatch
        .create_dispatched_job(origin, listed(1), route, at + secs(66))
        .await
        .unwrap();

    // Nodes go silent: all DOWN, one beats again, one is forgotten.
    store
        .nodes
        .mark_silent_nodes_down(at + secs(200), at + secs(200))
        .await
        .unwrap();
    store
        .nodes
        .heartbeat(&a, NodeStats::default(), at + secs(201))
        .await
        .unwrap();
    store.nodes.flush_heartbeats().await.unwrap();
    let forgotten = store.nodes.forget_down_nodes(at + secs(300)).await.unwrap();
    assert!(forgotten.contains(&gone), "{forgotten:?}");
    // An operator drains the one that came back; a heartbeat keeps it DRAINING.
    store.nodes.drain_node(&a, Drain::Start).await.unwrap();
    store
        .nodes
        .heartbeat(&a, NodeStats::default(), at + secs(202))
        .await
        .unwrap();
    store.nodes.flush_heartbeats().await.unwrap();

    // Runners: one started and touched, one removed.
    store
        .runners
        .reserve_runner(runner("s1"), None, at)
        .await
        .unwrap();
    store
        .runners
        .runner_started("s1", "c0ffee", "http://127.0.0.1:40001", at + secs(1))
        .await
        .unwrap();
    store
        .runners
        .touch_runner("s1", at + secs(2))
        .await
        .unwrap();
    store
        .runners
        .reserve_runner(runner("s2"), None, at)
        .await
        .unwrap();
    store.runners.remove_runner("s2").await.unwrap();
}

pub async fn a_workload_replays_to_the_live_tables(store: &Stores) {
    workload(store, t0()).await;
    let entries = assert_replay_matches(store).await;
    let kinds: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "job_created",
        "job_cancelled",
        "job_priority_raised",
        "task_claimed",
        "task_completed",
        "task_failed",
        "task_released",
        "node_registered",
        "node_described",
        "node_down",
        "node_revived",
        "node_forgotten",
        "node_stats_reported",
        "scheduler_configured",
        "object_registered",
        "replica_changed",
        "runner_reserved",
        "runner_started",
        "runner_removed",
    ] {
        assert!(kinds.contains(kind), "no {kind} entry in {kinds:?}");
    }
    // Liveness is not journaled.
    assert!(!kinds.contains("node_updated") && !kinds.contains("runner_touched"));
}

pub async fn a_batch_of_task_changes_is_one_entry(store: &Stores) {
    let n = node(store, t0()).await;
    store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(20), t0())
        .await
        .unwrap();
    let head = store.journal.journal_head().await.unwrap();
    let claimed = store.jobs.claim(&n, 20, t0() + secs(1)).await.unwrap();
    let reports = claimed.iter().map(|t| complete(&t.id, &n, 0.5)).collect();
    store.jobs.report(reports, t0() + secs(2)).await.unwrap();
    let entries = store.journal.journal(head, 100).await.unwrap();
    // One entry per kind, each one compact change of the job's 20 tasks.
    let moves = |c: &Change| match c {
        Change::Tasks { moves, .. } => moves.len(),
        _ => 1,
    };
    let shape: Vec<(&str, usize, usize)> = entries
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.changes.len(),
                e.changes.iter().map(moves).sum(),
            )
        })
        .collect();
    assert_eq!(shape, [("task_claimed", 1, 20), ("task_completed", 1, 20)]);
    assert_replay_matches(store).await;
}

pub async fn a_refused_write_takes_no_number(store: &Stores) {
    let n = node(store, t0()).await;
    let job = store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    let head = store.journal.journal_head().await.unwrap();
    assert!(matches!(
        store.jobs.cancel_job("job-unknown", t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .nodes
            .update_node(
                "spot-unknown",
                Default::default(),
                Capacity::default(),
                t0()
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.journal.journal_head().await.unwrap(), head);
    // The next write takes the next number.
    store.jobs.cancel_job(&job.id, t0()).await.unwrap();
    let next = store.journal.journal(head, 10).await.unwrap();
    assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), [head + 1]);
    assert_eq!(next[0].kind, "job_cancelled");
    let _ = n;
    assert_replay_matches(store).await;
}

pub async fn entries_are_read_in_order_a_page_at_a_time(store: &Stores) {
    for _ in 0..7 {
        node(store, t0()).await;
    }
    let first = store.journal.journal(0, 3).await.unwrap();
    let rest = store.journal.journal(3, 100).await.unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|e| e.kind == "node_registered")
    );
    assert!(store.journal.journal(7, 10).await.unwrap().is_empty());
}

/// Writers at once (on PostgreSQL, on several connections): numbers stay gap-free and the
/// replay still matches.
pub async fn concurrent_writes_keep_numbers_without_gaps(store: Stores) {
    let n = node(&store, t0()).await;
    let mut writers = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        let n = n.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..5 {
                let at = t0() + secs(w * 10 + i);
                store
                    .jobs
                    .create_job(new_job(2, 60, 0), sweep(3), at)
                    .await
                    .unwrap();
                let claimed = store.jobs.claim(&n, 2, at).await.unwrap();
                // One report per call, as agents send them.
                for t in claimed {
                    store
                        .jobs
                        .report(vec![complete(&t.id, &n, 1.0)], at)
                        .await
                        .unwrap();
                }
                node(&store, at).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_replay_matches(&store).await;
}

/// A rebuild into this store (empty) from the journal of another (a SQLite store with the full
/// workload): the rebuilt tables equal the original's, its own journal replays to them, and its
/// entries count as published. A second rebuild into it is refused: it is no longer empty.
pub async fn a_rebuild_from_the_journal_equals_the_original(store: &Stores) {
    let f = crate::sqlite_fixture().await.unwrap();
    let original = &f.store;
    workload(original, t0()).await;
    let entries = read_all(original).await;
    let last = entries.last().unwrap().seq;
    let restored = store
        .journal
        .restore(entries.clone(), t0() + secs(1000))
        .await
        .unwrap();
    assert_eq!(restored, last);

    let (before, after) = (
        original.journal.live_state().await.unwrap(),
        store.journal.live_state().await.unwrap(),
    );
    let differences = before.state.differences(&after.state, &after.counts);
    assert!(
        differences.is_empty(),
        "the rebuilt store differs from the original:\n{}",
        differences.join("\n")
    );
    assert_eq!(after.counts, before.counts);
    assert_eq!(assert_replay_matches(store).await, entries);
    assert_eq!(store.journal.published_upto().await.unwrap(), last);
    assert!(store.journal.pending_blobs(10).await.unwrap().is_empty());

    // It goes on from there: the next change is the next entry, and a rebuilt task can be
    // claimed and completed.
    let n = crate::node(store, t0() + secs(1001)).await;
    let claimed = store.jobs.claim(&n, 10, t0() + secs(1002)).await.unwrap();
    assert!(!claimed.is_empty(), "the rebuilt jobs still have NEW tasks");
    let reports = claimed.iter().map(|t| complete(&t.id, &n, 3.0)).collect();
    store.jobs.report(reports, t0() + secs(1003)).await.unwrap();
    let more = assert_replay_matches(store).await;
    assert!(more.len() > entries.len());
    assert!(matches!(
        store.journal.restore(entries, t0()).await,
        Err(StoreError::Unsupported(why)) if why.contains("empty store")
    ));
}

/// Compaction: entries the primary holds are dropped behind a snapshot of the state as of the
/// last of them; entries not on the primary (never published, or waiting on a fallback) are
/// never dropped; numbering goes on; the snapshot and the entries after it replay to the tables.
pub async fn entries_the_primary_holds_are_compacted_behind_a_snapshot(store: &Stores) {
    workload(store, t0()).await;
    let head = store.journal.journal_head().await.unwrap();
    assert!(head > 10);
    assert_eq!(store.journal.primary_holds_upto().await.unwrap(), 0);
    let state_at = |upto: u64| async move {
        let entries = store.journal.journal(0, upto as u32).await.unwrap();
        drover_core::journal::replay(&entries).unwrap()
    };
    // Nothing published yet: nothing may go.
    assert!(matches!(
        store.journal.compact(state_at(5).await, t0()).await,
        Err(StoreError::NotPublished { upto: 5, held: 0 })
    ));
    // 1..=6 on the primary, 7..=8 waiting on the secondary: only up to 6 may go.
    store
        .journal
        .record_blob(blob(1, 6, SinkRole::Primary, 1))
        .await
        .unwrap();
    let pending = store
        .journal
        .record_blob(blob(7, 8, SinkRole::Secondary, 1))
        .await
        .unwrap();
    store
        .journal
        .record_blob(blob(9, 10, SinkRole::Primary, 2))
        .await
        .unwrap();
    assert_eq!(store.journal.primary_holds_upto().await.unwrap(), 6);
    assert!(matches!(
        store.journal.compact(state_at(8).await, t0()).await,
        Err(StoreError::NotPublished { upto: 8, held: 6 })
    ));
    assert_eq!(
        store
            .journal
            .compact(state_at(6).await, t0())
            .await
            .unwrap(),
        6
    );
    assert_eq!(store.journal.snapshot().await.unwrap().unwrap().applied, 6);
    let rest = store.journal.journal(0, 1000).await.unwrap();
    assert_eq!(rest.first().map(|e| e.seq), Some(7));
    assert_eq!(store.journal.journal_head().await.unwrap(), head);

    // Reconciled, the rest may go: every entry, the head's too.
    store
        .journal
        .blob_reconciled(pending.id, 3, t0())
        .await
        .unwrap();
    let upto = store.journal.published_upto().await.unwrap();
    store
        .journal
        .record_blob(blob(upto + 1, head, SinkRole::Primary, 3))
        .await
        .unwrap();
    assert_eq!(store.journal.primary_holds_upto().await.unwrap(), head);
    let mut state = store.journal.snapshot().await.unwrap().unwrap();
    for e in &rest {
        state.apply(e).unwrap();
    }
    assert_eq!(store.journal.compact(state, t0()).await.unwrap(), head - 6);
    assert!(store.journal.journal(0, 10).await.unwrap().is_empty());
    assert_eq!(store.journal.journal_head().await.unwrap(), head);

    // The next change is entry head + 1, and the snapshot with it replays to the tables.
    crate::node(store, t0() + secs(500)).await;
    let next = store.journal.journal(0, 10).await.unwrap();
    assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), [head + 1]);
    let mut replayed = store.journal.snapshot().await.unwrap().unwrap();
    replayed.apply(&next[0]).unwrap();
    let live = store.journal.live_state().await.unwrap();
    assert_eq!(live.head, head + 1);
    let differences = replayed.differences(&live.state, &live.counts);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

fn blob(first: u64, last: u64, sink: SinkRole, height: u64) -> NewBlob {
    NewBlob {
        first,
        last,
        sink,
        height,
        commitment: format!("c{first}"),
        size: 100,
        posted_at: t0(),
    }
}

pub async fn blobs_publish_the_journal_in_order_and_fallback_ones_wait_for_reconciliation(
    store: &Stores,
) {
    assert_eq!(store.journal.published_upto().await.unwrap(), 0);
    store
        .journal
        .record_blob(blob(1, 3, SinkRole::Primary, 1))
        .await
        .unwrap();
    // A blob that does not start right after the last one is refused, whoever sends it.
    for (first, last) in [(3, 5), (5, 6), (1, 3)] {
        assert!(matches!(
            store
                .journal
                .record_blob(blob(first, last, SinkRole::Primary, 2))
                .await,
            Err(StoreError::OutOfOrder { published: 3, .. })
        ));
    }
    let second = store
        .journal
        .record_blob(blob(4, 4, SinkRole::Secondary, 1))
        .await
        .unwrap();
    let third = store
        .journal
        .record_blob(blob(5, 9, SinkRole::Emergency, 1))
        .await
        .unwrap();
    assert_eq!(store.journal.published_upto().await.unwrap(), 9);
    let pending = store.journal.pending_blobs(10).await.unwrap();
    assert_eq!(pending, vec![second.clone(), third.clone()]);
    assert_eq!(
        store.journal.pending_blobs(1).await.unwrap(),
        vec![second.clone()]
    );

    store
        .journal
        .blob_reconcile_failed(second.id, "primary refused".into())
        .await
        .unwrap();
    let failed = &store.journal.pending_blobs(10).await.unwrap()[0];
    assert_eq!(
        (failed.retry_count, failed.last_error.as_deref()),
        (1, Some("primary refused"))
    );
    store
        .journal
        .blob_reconciled(second.id, 2, t0() + secs(5))
        .await
        .unwrap();
    assert_eq!(store.journal.pending_blobs(10).await.unwrap(), vec![third]);
    assert!(matches!(
        store.journal.blob_reconciled(9999, 1, t0()).await,
        Err(StoreError::NotFound { .. })
    ));
}

macro_rules! journal_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                a_workload_replays_to_the_live_tables,
                a_batch_of_task_changes_is_one_entry,
                a_refused_write_takes_no_number,
                entries_are_read_in_order_a_page_at_a_time,
                blobs_publish_the_journal_in_order_and_fallback_ones_wait_for_reconciliation,
                a_rebuild_from_the_journal_equals_the_original,
                entries_the_primary_holds_are_compacted_behind_a_snapshot,
            ];
            shared: [concurrent_writes_keep_numbers_without_gaps]);
    };
}

journal_suite!(sqlite, crate::sqlite_fixture());
journal_suite!(sqlite_delayed, crate::delayed_fixture());
journal_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
