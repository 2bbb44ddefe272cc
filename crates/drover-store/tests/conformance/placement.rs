//! The placement contract's records: nodes under their own ids in the one registry, their live
//! stats, the scheduler's weights, objects and replica records.

use crate::*;
use drover_core::NodeInfo;
use drover_core::scheduling::{Stats, Weights};
use drover_core::{NodeStats, NodeStatus, ReplicaState};
use drover_store::{DEFAULT_CAPACITY_GB, Liveness, NamedNode, StoreError};

fn placed(id: &str, zone: &str, capacity_gb: u64) -> NamedNode {
    let mut labels = serde_json::Map::new();
    labels.insert("rack".into(), serde_json::json!("r1"));
    NamedNode {
        id: id.into(),
        info: NodeInfo {
            address: format!("10.0.0.1:{}", 50000 + capacity_gb),
            zone: Some(zone.into()),
            labels,
            ..Default::default()
        },
        capacity_gb: Some(capacity_gb),
        liveness: Liveness::Stats,
        silence_timeout: None,
    }
}

/// Registers a node of the placement surface at `at`.
async fn put(store: &Stores, id: &str, zone: &str, capacity_gb: u64, at: drover_core::Timestamp) {
    store
        .nodes
        .put_node(placed(id, zone, capacity_gb), None, at)
        .await
        .unwrap();
}

const STATS: Stats = Stats {
    cpu_free: 0.75,
    ram_free_mb: 8192.0,
    gpu_free: 0.5,
    latency_ms: 5.0,
    io_pressure: 0.1,
};

pub async fn placed_nodes_share_the_registry_and_replace_on_register(store: &Stores) {
    put(store, "node-1", "zone-a", 10, t0()).await;
    let spot = node(store, t0()).await;
    // One registry: the node registered here is listed by the registry, and the registry's
    // own node is seen by placement, with the contract's default capacity.
    let listed: Vec<String> = (store.nodes.list_nodes().await.unwrap())
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert!(listed.contains(&"node-1".to_string()), "{listed:?}");
    let all = store.placement.placement_nodes().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "in id order");
    let theirs = all.iter().find(|n| n.id == spot).unwrap();
    assert_eq!(theirs.capacity_gb, DEFAULT_CAPACITY_GB);
    assert_eq!(theirs.zone, "");

    let n = store
        .placement
        .placement_node("node-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (n.zone.as_str(), n.capacity_gb, n.status, n.stats),
        ("zone-a", 10, NodeStatus::Up, None)
    );
    assert_eq!(n.meta.get("rack"), Some(&serde_json::json!("r1")));
    assert_eq!(n.address, "10.0.0.1:50010");

    // Registering the same id again replaces what is known of it, and adds no node.
    store
        .nodes
        .put_node(placed("node-1", "zone-b", 20), None, t0() + secs(1))
        .await
        .unwrap();
    let n = store
        .placement
        .placement_node("node-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.zone.as_str(), n.capacity_gb), ("zone-b", 20));
    assert_eq!(n.last_seen, t0() + secs(1));
    assert_eq!(store.placement.placement_nodes().await.unwrap().len(), 2);
    assert!(
        store
            .placement
            .placement_node("nope")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn the_registry_cap_holds_for_placed_nodes(store: &Stores) {
    store
        .nodes
        .put_node(placed("a", "z", 1), Some(1), t0())
        .await
        .unwrap();
    assert!(matches!(
        store
            .nodes
            .put_node(placed("b", "z", 1), Some(1), t0())
            .await,
        Err(StoreError::LimitReached { .. })
    ));
    // Replacing a known node is not a new one.
    store
        .nodes
        .put_node(placed("a", "y", 2), Some(1), t0())
        .await
        .unwrap();
}

pub async fn stats_are_kept_and_are_the_signs_of_life_of_placed_nodes(store: &Stores) {
    put(store, "node-1", "zone-a", 10, t0()).await;
    store
        .placement
        .report_stats("node-1", STATS, t0() + secs(5))
        .await
        .unwrap();
    let n = store
        .placement
        .placement_node("node-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.stats, Some(STATS));
    assert_eq!(n.last_seen, t0() + secs(5));
    assert!(matches!(
        store.placement.report_stats("nope", STATS, t0()).await,
        Err(StoreError::NotFound { .. })
    ));

    // The heartbeat silence check passes a node whose signs of life are stats by; a node of
    // the registry's own (heartbeats) silent as long goes DOWN.
    let spot = node(store, t0()).await;
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(600), t0() + secs(600))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![spot.clone()]);
    let n = store
        .placement
        .placement_node("node-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.status, NodeStatus::Up);

    // Stats from a DOWN node bring it back UP, as a heartbeat does.
    store
        .placement
        .report_stats(&spot, STATS, t0() + secs(601))
        .await
        .unwrap();
    let back = store
        .placement
        .placement_node(&spot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.status, NodeStatus::Up);
    // And a heartbeat keeps the stats.
    store
        .nodes
        .heartbeat(&spot, NodeStats::default(), t0() + secs(602))
        .await
        .unwrap();
    let back = store
        .placement
        .placement_node(&spot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.stats, Some(STATS));
}

pub async fn stats_silence_takes_only_placed_nodes_down(store: &Stores) {
    put(store, "node-1", "zone-a", 10, t0()).await;
    put(store, "node-2", "zone-a", 10, t0()).await;
    store
        .placement
        .report_stats("node-2", STATS, t0() + secs(50))
        .await
        .unwrap();
    let spot = node(store, t0()).await;
    let down = store
        .nodes
        .mark_stats_silent_nodes_down(t0() + secs(30), t0() + secs(60))
        .await
        .unwrap();
    // node-2 reported after the cutoff; the spot is judged by its heartbeats, not here.
    assert_eq!(down.nodes, vec!["node-1".to_string()]);
    let status = |id: &'static str| async move {
        store
            .placement
            .placement_node(id)
            .await
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(status("node-1").await, NodeStatus::Down);
    assert_eq!(status("node-2").await, NodeStatus::Up);
    let spot_status = store
        .placement
        .placement_node(&spot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spot_status.status, NodeStatus::Up);
}

pub async fn named_nodes_that_heartbeat_are_judged_by_their_heartbeats(store: &Stores) {
    let agent = |hostname: &str| NamedNode {
        id: "agent-1".into(),
        info: NodeInfo {
            address: "10.0.0.9:7000".into(),
            hostname: Some(hostname.into()),
            ..Default::default()
        },
        capacity_gb: None,
        liveness: Liveness::Heartbeats,
        silence_timeout: None,
    };
    store.nodes.put_node(agent("h1"), None, t0()).await.unwrap();
    let listed = store.nodes.list_nodes().await.unwrap();
    let n = listed.iter().find(|n| n.id == "agent-1").unwrap();
    assert_eq!(n.info.hostname.as_deref(), Some("h1"));
    // Its heartbeats keep it UP; silence takes it DOWN, as any spot.
    store
        .nodes
        .heartbeat("agent-1", NodeStats::default(), t0() + secs(20))
        .await
        .unwrap();
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(10), t0() + secs(30))
        .await
        .unwrap();
    assert!(down.nodes.is_empty(), "{down:?}");
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(40), t0() + secs(40))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec!["agent-1".to_string()]);
    // Registering again brings it back UP, with the new facts.
    store
        .nodes
        .put_node(agent("h2"), None, t0() + secs(50))
        .await
        .unwrap();
    let n = store
        .placement
        .placement_node("agent-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.status, n.last_seen), (NodeStatus::Up, t0() + secs(50)));
    let listed = store.nodes.list_nodes().await.unwrap();
    let n = listed.iter().find(|n| n.id == "agent-1").unwrap();
    assert_eq!(n.info.hostname.as_deref(), Some("h2"));
}

pub async fn scheduler_weights_are_stored(store: &Stores) {
    assert_eq!(store.placement.scheduler_weights().await.unwrap(), None);
    let w = Weights {
        w_cpu: 1.0,
        w_ram: 1.5,
        w_gpu: 0.5,
        w_latency: 1.0,
        w_io: 0.8,
    };
    store
        .placement
        .set_scheduler_weights(w, t0())
        .await
        .unwrap();
    assert_eq!(store.placement.scheduler_weights().await.unwrap(), Some(w));
    let again = Weights { w_io: 0.0, ..w };
    store
        .placement
        .set_scheduler_weights(again, t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(
        store.placement.scheduler_weights().await.unwrap(),
        Some(again)
    );
}

pub async fn objects_keep_their_replica_records(store: &Stores) {
    for (id, zone) in [("n1", "a"), ("n2", "b"), ("n3", "c")] {
        put(store, id, zone, 1, t0()).await;
    }
    let targets = vec!["n2".to_string(), "n1".to_string()];
    assert!(
        store
            .placement
            .register_object("abc", 1_048_576, 2, &targets, t0())
            .await
            .unwrap()
    );
    let o = store.placement.get_object("abc").await.unwrap().unwrap();
    assert_eq!((o.hash.as_str(), o.size, o.rf), ("abc", 1_048_576, 2));
    assert_eq!(
        o.replicas,
        vec![
            ("n2".to_string(), ReplicaState::Pending),
            ("n1".to_string(), ReplicaState::Pending)
        ]
    );
    // Registering again changes nothing.
    assert!(
        !store
            .placement
            .register_object("abc", 5, 3, &[], t0() + secs(1))
            .await
            .unwrap()
    );
    assert_eq!(store.placement.get_object("abc").await.unwrap().unwrap(), o);

    store
        .placement
        .set_replica("abc", "n2", ReplicaState::Healthy, t0())
        .await
        .unwrap();
    store
        .placement
        .set_replica("abc", "n1", ReplicaState::Missing, t0())
        .await
        .unwrap();
    store
        .placement
        .set_replica("abc", "n3", ReplicaState::Healthy, t0())
        .await
        .unwrap();
    let o = store.placement.get_object("abc").await.unwrap().unwrap();
    assert_eq!(
        o.replicas,
        vec![
            ("n2".to_string(), ReplicaState::Healthy),
            ("n1".to_string(), ReplicaState::Missing),
            ("n3".to_string(), ReplicaState::Healthy)
        ]
    );
    assert!(matches!(
        store
            .placement
            .set_replica("nope", "n1", ReplicaState::Healthy, t0())
            .await,
        Err(StoreError::NotFound { kind: "object", .. })
    ));
    assert!(matches!(
        store
            .placement
            .set_replica("abc", "nope", ReplicaState::Healthy, t0())
            .await,
        Err(StoreError::NotFound { kind: "node", .. })
    ));
    assert!(store.placement.get_object("nope").await.unwrap().is_none());

    // Listed in hash order, a page at a time.
    for h in ["b", "a", "c"] {
        store
            .placement
            .register_object(h, 1, 1, &[], t0())
            .await
            .unwrap();
    }
    let page = |after: Option<&'static str>| async move {
        (store.placement.list_objects(after, 2).await.unwrap())
            .into_iter()
            .map(|o| o.hash)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None).await, ["a", "abc"]);
    assert_eq!(page(Some("abc")).await, ["b", "c"]);
    assert!(page(Some("c")).await.is_empty());
}

macro_rules! placement_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                placed_nodes_share_the_registry_and_replace_on_register,
                the_registry_cap_holds_for_placed_nodes,
                stats_are_kept_and_are_the_signs_of_life_of_placed_nodes,
                stats_silence_takes_only_placed_nodes_down,
                named_nodes_that_heartbeat_are_judged_by_their_heartbeats,
                scheduler_weights_are_stored,
                objects_keep_their_replica_records,
            ];
            shared: []);
    };
}

placement_suite!(sqlite, crate::sqlite_fixture());
placement_suite!(sqlite_delayed, crate::delayed_fixture());
placement_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
