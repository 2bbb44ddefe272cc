//! The node registry: registration, heartbeats, silence, retention, and who may claim.

use crate::*;
use drover_core::credential::SpotCredential;
use drover_core::node::Drain;
use drover_core::{NodeInfo, NodeStats, NodeStatus, TaskStatus};
use drover_store::{Liveness, NamedNode, NewNode, Page, StoreError};

pub async fn claims_need_a_known_live_node(store: &Stores) {
    store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    assert!(matches!(
        store.jobs.claim("spot-nope", 1, t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    let n = node(store, t0()).await;
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(1), t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![n.clone()]);
    assert!(matches!(
        store.jobs.claim(&n, 1, t0()).await,
        Err(StoreError::NodeDown(_))
    ));
    // A heartbeat brings it back.
    let back = store
        .nodes
        .heartbeat(&n, NodeStats::default(), t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(back, NodeStatus::Up);
    assert_eq!(
        store.jobs.claim(&n, 1, t0() + secs(2)).await.unwrap().len(),
        1
    );
    assert!(matches!(
        store
            .nodes
            .heartbeat("spot-nope", NodeStats::default(), t0())
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn heartbeats_update_live_figures(store: &Stores) {
    let n = node(store, t0()).await;
    let stats = NodeStats {
        cpu_load: Some(45.5),
        running_tasks: Some(2),
        total_cores: Some(8),
        ..Default::default()
    };
    let after = store
        .nodes
        .heartbeat(&n, stats, t0() + secs(3))
        .await
        .unwrap();
    assert_eq!(after, NodeStatus::Up);
    let read = the_node(store, &n).await;
    assert_eq!(read.cpu_load, Some(45.5));
    assert_eq!(read.running_tasks, 2);
    assert_eq!(read.info.capacity.cores, Some(8));
    assert_eq!(read.last_heartbeat, t0() + secs(3));
    // Fields left out keep their values.
    store
        .nodes
        .heartbeat(&n, NodeStats::default(), t0() + secs(4))
        .await
        .unwrap();
    let read = the_node(store, &n).await;
    assert_eq!(read.cpu_load, Some(45.5));
    assert_eq!(read.last_heartbeat, t0() + secs(4));
    assert_eq!(store.nodes.list_nodes().await.unwrap().len(), 1);
}

/// The node `id` as a listing shows it.
async fn the_node(store: &Stores, id: &str) -> drover_core::Node {
    store
        .nodes
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
        .unwrap()
}

/// A heartbeat that changes nothing but liveness may be answered before it is written: reads
/// show it at once (both listings, each figure merged over the last), and it reads the same
/// once written.
pub async fn answered_heartbeats_are_read_at_once(store: &Stores) {
    let n = node(store, t0()).await;
    let other = node(store, t0()).await;
    for (at, stats) in [
        (
            3,
            NodeStats {
                cpu_load: Some(1.5),
                running_tasks: Some(4),
                ..Default::default()
            },
        ),
        (
            8,
            NodeStats {
                free_memory_bytes: Some(1 << 30),
                address: Some("10.0.0.9".into()),
                ..Default::default()
            },
        ),
    ] {
        let status = store
            .nodes
            .heartbeat(&n, stats, t0() + secs(at))
            .await
            .unwrap();
        assert_eq!(status, NodeStatus::Up);
    }
    let check = |read: &drover_core::Node| {
        assert_eq!(read.last_heartbeat, t0() + secs(8));
        assert_eq!(read.cpu_load, Some(1.5));
        assert_eq!(read.running_tasks, 4);
        assert_eq!(read.free_memory_bytes, Some(1 << 30));
        assert_eq!(read.info.address, "10.0.0.9");
        assert_eq!(read.status, NodeStatus::Up);
    };
    check(&the_node(store, &n).await);
    let page = store
        .nodes
        .list_nodes_page(Page {
            cursor: None,
            limit: 10,
        })
        .await
        .unwrap();
    check(page.items.iter().find(|x| x.id == n).unwrap());
    assert_eq!(the_node(store, &other).await.last_heartbeat, t0());

    store.nodes.flush_heartbeats().await.unwrap();
    check(&the_node(store, &n).await);
    assert_eq!(the_node(store, &other).await.last_heartbeat, t0());
    // Nothing is left to write.
    store.nodes.flush_heartbeats().await.unwrap();
    check(&the_node(store, &n).await);
}

/// The reaper judges silence on every heartbeat answered so far, written or not; a node that
/// went DOWN comes back at its next heartbeat, at once; a heartbeat of a node the registry
/// does not hold (never, or no longer) is refused as unknown.
pub async fn answered_heartbeats_count_for_silence(store: &Stores) {
    let live = node(store, t0()).await;
    let silent = node(store, t0()).await;
    store
        .nodes
        .heartbeat(&live, NodeStats::default(), t0() + secs(50))
        .await
        .unwrap();
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(40), t0() + secs(60))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![silent.clone()]);
    assert_eq!(the_node(store, &live).await.status, NodeStatus::Up);
    assert_eq!(the_node(store, &silent).await.status, NodeStatus::Down);
    // A DOWN node's heartbeat is written before it is answered.
    let back = store
        .nodes
        .heartbeat(&silent, NodeStats::default(), t0() + secs(61))
        .await
        .unwrap();
    assert_eq!(back, NodeStatus::Up);
    let read = the_node(store, &silent).await;
    assert_eq!(
        (read.status, read.last_heartbeat),
        (NodeStatus::Up, t0() + secs(61))
    );
    assert!(
        store
            .jobs
            .claim(&silent, 1, t0() + secs(61))
            .await
            .unwrap()
            .is_empty()
    );

    // Down again, then forgotten: its heartbeat is then refused, as a made-up id's is.
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(100), t0() + secs(100))
        .await
        .unwrap();
    assert_eq!(
        store
            .nodes
            .forget_down_nodes(t0() + secs(200))
            .await
            .unwrap()
            .len(),
        2
    );
    for id in [live.as_str(), silent.as_str(), "spot-made-up"] {
        assert!(matches!(
            store
                .nodes
                .heartbeat(id, NodeStats::default(), t0() + secs(201))
                .await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert!(store.nodes.list_nodes().await.unwrap().is_empty());
}

pub async fn silent_nodes_go_down_and_free_their_tasks(store: &Stores) {
    store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    assert_eq!(store.jobs.claim(&a, 2, t0()).await.unwrap().len(), 2);
    store
        .nodes
        .heartbeat(&b, NodeStats::default(), t0() + secs(9))
        .await
        .unwrap();

    // Cutoff at t0+5s: a (last seen t0) is silent, b (t0+9s) is not.
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(5), t0() + secs(15))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![a.clone()]);
    assert_eq!(down.released.len(), 2);
    assert!(down.released.iter().all(|r| r.to == TaskStatus::New));
    // Running it again finds nothing new.
    assert_eq!(
        store
            .nodes
            .mark_silent_nodes_down(t0() + secs(5), t0() + secs(16))
            .await
            .unwrap(),
        Default::default()
    );

    let nodes = store.nodes.list_nodes().await.unwrap();
    let status = |id: &str| nodes.iter().find(|n| n.id == id).unwrap().status;
    assert_eq!((status(&a), status(&b)), (NodeStatus::Down, NodeStatus::Up));
    assert_eq!(
        store
            .jobs
            .claim(&b, 10, t0() + secs(16))
            .await
            .unwrap()
            .len(),
        3
    );
    let overview = store.ops.overview().await.unwrap();
    assert_eq!(
        (
            overview.active_nodes,
            overview.pending_tasks,
            overview.running_tasks
        ),
        (1, 0, 3)
    );
    assert_counts_consistent(store).await;
}

pub async fn down_nodes_are_forgotten_after_the_retention(store: &Stores) {
    let old = node(store, t0()).await;
    let recent = node(store, t0()).await;
    let alive = node(store, t0()).await;
    store
        .nodes
        .heartbeat(&recent, NodeStats::default(), t0() + secs(100))
        .await
        .unwrap();
    store
        .nodes
        .heartbeat(&alive, NodeStats::default(), t0() + secs(300))
        .await
        .unwrap();
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(200), t0() + secs(200))
        .await
        .unwrap();
    // `old` and `recent` are DOWN now; only `old` has been silent since before the cutoff.
    let forgotten = store
        .nodes
        .forget_down_nodes(t0() + secs(50))
        .await
        .unwrap();
    assert_eq!(forgotten, vec![old.clone()]);
    let ids: Vec<String> = store
        .nodes
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert!(!ids.contains(&old) && ids.contains(&recent) && ids.contains(&alive));
    assert!(matches!(
        store
            .nodes
            .heartbeat(&old, NodeStats::default(), t0() + secs(400))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // An UP node is never forgotten, however old its heartbeat.
    let forgotten = store
        .nodes
        .forget_down_nodes(t0() + secs(10_000))
        .await
        .unwrap();
    assert_eq!(forgotten, vec![recent]);
}

/// A node registered with a secret's hash gives that hash back, one registered without gives
/// none, an unknown node is told apart; the listing carries no credential.
pub async fn a_nodes_secret_is_kept_as_its_hash_alone(store: &Stores) {
    let hash = drover_core::credential::hash("the-secret");
    let info = || NodeInfo {
        address: "127.0.0.1".into(),
        ..Default::default()
    };
    let with = store
        .nodes
        .register_node(
            NewNode {
                info: info(),
                secret_hash: Some(hash.clone()),
            },
            None,
            t0(),
        )
        .await
        .unwrap();
    let without = store
        .nodes
        .register_node(info().into(), None, t0())
        .await
        .unwrap();
    assert_eq!(
        store.nodes.spot_credential(&with.id).await.unwrap(),
        SpotCredential::Issued { hash: hash.clone() }
    );
    assert_eq!(
        store.nodes.spot_credential(&without.id).await.unwrap(),
        SpotCredential::NotIssued
    );
    assert_eq!(
        store.nodes.spot_credential("spot-nobody").await.unwrap(),
        SpotCredential::UnknownSpot
    );
    // A heartbeat keeps the credential; the node is listed as before.
    store
        .nodes
        .heartbeat(&with.id, NodeStats::default(), t0())
        .await
        .unwrap();
    assert!(matches!(
        store.nodes.spot_credential(&with.id).await.unwrap(),
        SpotCredential::Issued { .. }
    ));
    assert_eq!(store.nodes.list_nodes().await.unwrap().len(), 2);
}

/// The registry refuses a node past its cap and writes nothing; a page at a time lists every
/// node once, in registration order.
pub async fn the_registry_is_capped_and_listed_in_pages(store: &Stores) {
    let now = t0();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let info = NodeInfo {
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        ids.push(
            store
                .nodes
                .register_node(info.into(), Some(5), now)
                .await
                .unwrap()
                .id,
        );
    }
    let refused = store
        .nodes
        .register_node(NodeInfo::default().into(), Some(5), now)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::LimitReached { limit: 5, .. }),
        "{refused}"
    );
    assert_eq!(store.nodes.list_nodes().await.unwrap().len(), 5);
    let mut seen = Vec::new();
    let mut page = Page::first(2);
    loop {
        let got = store.nodes.list_nodes_page(page).await.unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.into_iter().map(|n| n.id));
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

/// A node registered with a silence timeout of its own (`NamedNode::silence_timeout`).
fn slow_node(id: &str, silence_secs: Option<u64>) -> NamedNode {
    NamedNode {
        id: id.into(),
        info: NodeInfo {
            address: "10.0.0.7:7000".into(),
            ..Default::default()
        },
        capacity_gb: None,
        liveness: Liveness::Heartbeats,
        silence_timeout: silence_secs.map(std::time::Duration::from_secs),
    }
}

/// The spot timeout of these scenarios, in seconds: the reaper's cutoff is this long before
/// its `now`.
const SPOT_TIMEOUT: i64 = 10;

/// The node reaper's pass at `at` seconds, with the spot timeout; the nodes it marked DOWN,
/// sorted, and the tasks it released.
async fn reap_at(store: &Stores, at: i64) -> (Vec<String>, Vec<String>) {
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(at - SPOT_TIMEOUT), t0() + secs(at))
        .await
        .unwrap();
    let mut nodes = down.nodes;
    nodes.sort();
    (
        nodes,
        down.released.into_iter().map(|r| r.task_id).collect(),
    )
}

/// A node with a silence timeout of its own longer than the spot timeout is DOWN only once it
/// has been silent that long (and its tasks stay with it until then); a node without one, or
/// with a shorter one, is judged by the spot timeout.
pub async fn a_node_with_a_longer_silence_timeout_is_judged_by_it(store: &Stores) {
    store
        .nodes
        .put_node(slow_node("node-slow", Some(30)), None, t0())
        .await
        .unwrap();
    store
        .nodes
        .put_node(slow_node("node-short", Some(5)), None, t0())
        .await
        .unwrap();
    let plain = node(store, t0()).await;
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(1), t0())
        .await
        .unwrap();
    let task = drover_core::ids::sweep_task_id(&job.id, 0);
    let claimed = store
        .jobs
        .claim_task(&task, "node-slow", None, t0())
        .await
        .unwrap();
    assert!(
        matches!(claimed, drover_store::TaskClaim::Claimed(_)),
        "{claimed:?}"
    );

    assert_eq!(reap_at(store, 5).await, (vec![], vec![]));
    let mut spot_timed = vec!["node-short".to_string(), plain.clone()];
    spot_timed.sort();
    assert_eq!(reap_at(store, 11).await, (spot_timed, vec![]));
    for at in [15, 25, 30] {
        assert_eq!(reap_at(store, at).await, (vec![], vec![]), "at {at} s");
    }
    let slow = the_node(store, "node-slow").await;
    assert_eq!(slow.status, NodeStatus::Up);
    assert_eq!(
        store.jobs.get_task(&task).await.unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(
        reap_at(store, 31).await,
        (vec!["node-slow".to_string()], vec![task.clone()])
    );
    assert_eq!(the_node(store, "node-slow").await.status, NodeStatus::Down);
    assert_eq!(
        store.jobs.get_task(&task).await.unwrap().status,
        TaskStatus::New
    );
    assert_counts_consistent(store).await;
}

/// A node's own silence timeout counts from its last heartbeat answered (one the store held
/// without writing it yet included), and registering the node again replaces it.
pub async fn a_nodes_own_silence_timeout_counts_from_its_last_heartbeat(store: &Stores) {
    store
        .nodes
        .put_node(slow_node("node-slow", Some(30)), None, t0())
        .await
        .unwrap();
    for at in [20, 46] {
        let status = store
            .nodes
            .heartbeat("node-slow", NodeStats::default(), t0() + secs(at))
            .await
            .unwrap();
        assert_eq!(status, NodeStatus::Up);
        // Silent since its heartbeat for longer than the spot timeout, not its own.
        assert_eq!(reap_at(store, at + 25).await, (vec![], vec![]), "at {at} s");
    }
    assert_eq!(
        reap_at(store, 77).await,
        (vec!["node-slow".to_string()], vec![])
    );
    // Registered again without a timeout of its own: the spot timeout judges it.
    store
        .nodes
        .put_node(slow_node("node-slow", None), None, t0() + secs(80))
        .await
        .unwrap();
    assert_eq!(the_node(store, "node-slow").await.status, NodeStatus::Up);
    assert_eq!(reap_at(store, 90).await, (vec![], vec![]));
    assert_eq!(
        reap_at(store, 91).await,
        (vec!["node-slow".to_string()], vec![])
    );
}

/// An operator's drain: a DRAINING node claims nothing (named tasks neither), keeps its status
/// through heartbeats and registration, and claims again once undrained. Asking for the status
/// a node has changes nothing; a DOWN node is refused, an unknown one not found.
pub async fn a_drained_node_claims_nothing_until_undrained(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let n = node(store, t0()).await;
    let held = store.jobs.claim(&n, 1, t0()).await.unwrap().remove(0);

    let drained = store.nodes.drain_node(&n, Drain::Start).await.unwrap();
    assert_eq!(drained.status, NodeStatus::Draining);
    assert_eq!(drained.id, n);
    // Again: the same, and harmless.
    let again = store.nodes.drain_node(&n, Drain::Start).await.unwrap();
    assert_eq!(again.status, NodeStatus::Draining);
    assert!(
        store
            .jobs
            .claim(&n, 2, t0() + secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    let named = drover_core::ids::sweep_task_id(&job.id, 2);
    assert_eq!(
        store
            .jobs
            .claim_task(&named, &n, None, t0() + secs(1))
            .await
            .unwrap(),
        drover_store::TaskClaim::Draining
    );
    assert_eq!(
        store
            .jobs
            .claim_task(&held.id, &n, None, t0() + secs(1))
            .await
            .unwrap(),
        drover_store::TaskClaim::AlreadyHeld { attempt: 1 },
        "it keeps what it holds"
    );
    let left = store.jobs.get_task(&named).await.unwrap();
    assert_eq!((left.status, left.attempt), (TaskStatus::New, 0));
    // It finishes what it holds.
    let outcomes = store
        .jobs
        .report(vec![crate::complete(&held.id, &n, 1.0)], t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(outcomes, vec![drover_core::ReportOutcome::Completed]);
    // Heartbeats (held ones too) keep what the operator chose.
    for at in [3, 4] {
        let status = store
            .nodes
            .heartbeat(&n, NodeStats::default(), t0() + secs(at))
            .await
            .unwrap();
        assert_eq!(status, NodeStatus::Draining);
    }
    store.nodes.flush_heartbeats().await.unwrap();
    assert_eq!(the_node(store, &n).await.status, NodeStatus::Draining);

    let undrained = store.nodes.drain_node(&n, Drain::Stop).await.unwrap();
    assert_eq!(undrained.status, NodeStatus::Up);
    assert_eq!(
        store
            .nodes
            .heartbeat(&n, NodeStats::default(), t0() + secs(5))
            .await
            .unwrap(),
        NodeStatus::Up
    );
    assert_eq!(
        store.jobs.claim(&n, 2, t0() + secs(5)).await.unwrap().len(),
        2
    );
    let up = store.nodes.drain_node(&n, Drain::Stop).await.unwrap();
    assert_eq!(up.status, NodeStatus::Up);

    // A DOWN node is refused either way and stays DOWN; a heartbeat brings it back UP.
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(100), t0() + secs(100))
        .await
        .unwrap();
    for drain in [Drain::Start, Drain::Stop] {
        match store.nodes.drain_node(&n, drain).await {
            Err(StoreError::DrainRefused { id, .. }) => assert_eq!(id, n),
            other => panic!("draining a DOWN node: {other:?}"),
        }
    }
    assert_eq!(the_node(store, &n).await.status, NodeStatus::Down);
    assert!(matches!(
        store.nodes.drain_node("spot-nope", Drain::Start).await,
        Err(StoreError::NotFound { kind: "spot", .. })
    ));
    assert_counts_consistent(store).await;
}

macro_rules! nodes_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                claims_need_a_known_live_node,
                heartbeats_update_live_figures,
                answered_heartbeats_are_read_at_once,
                answered_heartbeats_count_for_silence,
                silent_nodes_go_down_and_free_their_tasks,
                down_nodes_are_forgotten_after_the_retention,
                a_nodes_secret_is_kept_as_its_hash_alone,
                the_registry_is_capped_and_listed_in_pages,
                a_node_with_a_longer_silence_timeout_is_judged_by_it,
                a_nodes_own_silence_timeout_counts_from_its_last_heartbeat,
                a_drained_node_claims_nothing_until_undrained,
            ];
            shared: []);
    };
}

nodes_suite!(sqlite, crate::sqlite_fixture());
nodes_suite!(sqlite_delayed, crate::delayed_fixture());
nodes_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
