//! The placement-coordinator contract over HTTP: its quick test and example bodies, the
//! scheduler's formula, placement against an independent ring, replica repair, restart
//! durability on SQLite and PostgreSQL, and bad input.

use crate::helpers::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

async fn register(app: &TestApp, id: &str, zone: &str, capacity_gb: u64) {
    let (status, body) = app
        .post_json(
            "/register",
            json!({"id": id, "zone": zone, "addr": format!("10.0.0.1:{capacity_gb}"),
                   "capacity_gb": capacity_gb}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"ok": true})),
        "registering {id}"
    );
}

async fn stats(app: &TestApp, id: &str, stats: Value) {
    let (status, body) = app.post_json(&format!("/node/{id}/stats"), stats).await;
    assert_eq!((status, body), (200, json!({"ok": true, "node_id": id})));
}

/// A spot of the native API (heartbeats, default capacity) in `zone`: it goes DOWN when the
/// spot reaper finds it silent, which is how a node leaves in these tests.
async fn spot_in_zone(app: &TestApp, zone: &str) -> String {
    let hello = drover_api::HelloRequest {
        ip_address: "127.0.0.1".into(),
        zone: Some(zone.into()),
        ..Default::default()
    };
    app.client.hello(&hello).await.unwrap().spot_id
}

async fn placement(app: &TestApp, key: &str, rf: usize) -> Vec<String> {
    let (status, body) = app.get_json(&format!("/placement/{key}?rf={rf}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn the_contracts_quick_test_and_example_bodies_work_unchanged() {
    let app = spawn_app().await;
    // The quick test, word for word.
    register(&app, "node-1", "zone-a", 100).await;
    let (status, nodes) = app.get_json("/nodes").await;
    assert_eq!(status, 200);
    let node = &nodes.as_array().unwrap()[0];
    for (field, value) in [
        ("id", json!("node-1")),
        ("zone", json!("zone-a")),
        ("addr", json!("10.0.0.1:100")),
        ("capacity_gb", json!(100)),
        ("meta", json!({})),
    ] {
        assert_eq!(node[field], value, "{field} in {node}");
    }
    let (status, info) = app.get_json("/system/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["node_count"], 1);
    assert_eq!(info["fallback_active"], false);
    assert_eq!(
        info["da_status"], "not configured",
        "no journal is claimed: {info}"
    );
    assert!(info["version"].is_string());
    let (status, health) = app.get_json("/health").await;
    assert_eq!((status, &health["status"]), (200, &json!("healthy")));
    assert_eq!(app.get_json("/ready").await.0, 200);

    // Every other route's example body from the contract.
    let (status, n) = app.get_json("/node/node-1").await;
    assert_eq!(
        (status, &n["id"], &n["status"]),
        (200, &json!("node-1"), &json!("UP"))
    );
    // Stats of an unknown node: 200 and not found, as the contract answers.
    let (status, unknown) = app.get_json("/node/nope/stats").await;
    assert_eq!(
        (status, unknown),
        (200, json!({"node_id": "nope", "found": false}))
    );
    let (status, none) = app.get_json("/node/node-1/stats").await;
    assert_eq!(
        (status, none),
        (200, json!({"node_id": "node-1", "found": false}))
    );
    stats(
        &app,
        "node-1",
        json!({"cpu_free": 0.75, "ram_free_mb": 8192.0, "gpu_free": 0.5, "latency_ms": 5.0,
               "io_pressure": 0.1}),
    )
    .await;
    let (_, got) = app.get_json("/node/node-1/stats").await;
    assert_eq!(
        got,
        json!({"node_id": "node-1", "found": true, "stats": {"cpu_free": 0.75,
               "ram_free_mb": 8192.0, "gpu_free": 0.5, "latency_ms": 5.0, "io_pressure": 0.1}})
    );
    // Stats defaults: gpu 0, latency 10, io 0.
    stats(
        &app,
        "node-1",
        json!({"cpu_free": 0.5, "ram_free_mb": 100.0}),
    )
    .await;
    let (_, got) = app.get_json("/node/node-1/stats").await;
    assert_eq!(
        got["stats"],
        json!({"cpu_free": 0.5, "ram_free_mb": 100.0, "gpu_free": 0.0, "latency_ms": 10.0,
               "io_pressure": 0.0})
    );
    assert_eq!(placement(&app, "abc123def456", 3).await, ["node-1"]);
    let (status, body) = app
        .post_json(
            "/schedule",
            json!({"cpu_req": 0.2, "ram_req_mb": 64.0, "gpu_req": null, "max_latency_ms": 10.0,
                   "io_tolerance": null}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"node_id": "node-1"})));
    let (status, body) = app
        .post_json(
            "/scheduler/config",
            json!({"w_cpu": 1.0, "w_ram": 1.5, "w_gpu": 0.5, "w_latency": 1.0, "w_io": 0.8}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "message": "scheduler config updated", "config": {"w_cpu": 1.0,
                   "w_ram": 1.5, "w_gpu": 0.5, "w_latency": 1.0, "w_io": 0.8}})
        )
    );
    // Weights left out take the original system's fill, not the defaults.
    let (_, body) = app
        .post_json("/scheduler/config", json!({"w_cpu": 2.0}))
        .await;
    assert_eq!(
        body["config"],
        json!({"w_cpu": 2.0, "w_ram": 1.0, "w_gpu": 0.5, "w_latency": 0.8, "w_io": 0.6})
    );
    assert_eq!(app.get_json("/scheduler/config").await.1, body["config"]);

    let (status, body) = app
        .post_json(
            "/object/register",
            json!({"hash": "abc123def456", "size": 1048576}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"ok": true})));
    let (status, o) = app.get_json("/object/abc123def456").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&o["hash"], &o["size"], &o["replicas"]),
        (&json!("abc123def456"), &json!(1048576), &json!([]))
    );
    // Its placement is recorded as the copies it awaits.
    assert_eq!(o["pending"], json!(["node-1"]));
    for route in ["/replica/mark_healed", "/replica/mark_missing"] {
        let (status, body) = app
            .post_json(route, json!({"hash": "abc123def456", "node_id": "node-1"}))
            .await;
        assert_eq!((status, body), (200, json!({"ok": true})), "{route}");
    }
    let (_, o) = app.get_json("/object/abc123def456").await;
    assert_eq!(
        (&o["replicas"], &o["missing"]),
        (&json!([]), &json!(["node-1"]))
    );

    // One registry: the node is a spot of the native API too.
    let spots = app.client.spots().await.unwrap();
    assert!(spots.iter().any(|s| s.id == "node-1"), "{spots:?}");
    app.finish().await;
}

/// The scheduler's score, written out here as the contract states it.
fn score(w: [f64; 5], s: [f64; 5]) -> f64 {
    let inverse_latency = if s[3] <= 0.0 { 1.0 } else { 1.0 / s[3] };
    w[0] * s[0] + w[1] * s[1] + w[2] * s[2] + w[3] * inverse_latency - w[4] * s[4]
}

#[tokio::test]
async fn scheduling_follows_the_contracts_formula() {
    let app = spawn_app().await;
    // cpu_free, ram_free_mb, gpu_free, latency_ms, io_pressure
    let nodes: [(&str, [f64; 5]); 3] = [
        ("a", [0.2, 2000.0, 2.0, 10.0, 0.3]),
        ("b", [0.9, 4000.0, 1.0, 5.0, 0.05]),
        ("c", [0.5, 1000.0, 0.0, 20.0, 0.1]),
    ];
    for (id, s) in &nodes {
        register(&app, id, "z", 1).await;
        stats(
            &app,
            id,
            json!({"cpu_free": s[0], "ram_free_mb": s[1], "gpu_free": s[2], "latency_ms": s[3],
                   "io_pressure": s[4]}),
        )
        .await;
    }
    let defaults = [1.0, 0.001, 2.0, 50.0, 1.5];
    let best = |w: [f64; 5]| {
        nodes
            .iter()
            .max_by(|x, y| score(w, x.1).total_cmp(&score(w, y.1)))
            .unwrap()
            .0
    };
    assert_eq!(best(defaults), "b", "the table below assumes it");

    // (workload, the node expected, or the requirement that rules every node out)
    type Expected = Result<&'static str, (&'static str, u64)>;
    let cases: Vec<(Value, Expected)> = vec![
        (json!({}), Ok("b")),
        (json!({"ram_req_mb": 3000.0}), Ok("b")),
        (json!({"gpu_req": 1.5}), Ok("a")),
        (json!({"cpu_req": 0.4, "max_latency_ms": 30.0}), Ok("b")),
        (
            json!({"max_latency_ms": 12.0, "io_tolerance": 0.2}),
            Ok("b"),
        ),
        (json!({"io_tolerance": 0.2, "cpu_req": 0.3}), Ok("b")),
        (json!({"io_tolerance": 0.04}), Err(("io_tolerance", 3))),
        (json!({"cpu_req": 0.95}), Err(("cpu_req", 3))),
        (json!({"ram_req_mb": 1e9}), Err(("ram_req_mb", 3))),
        (json!({"max_latency_ms": 1.0}), Err(("max_latency_ms", 3))),
    ];
    for (workload, expected) in cases {
        let (status, body) = app.post_json("/schedule", workload.clone()).await;
        match expected {
            Ok(id) => assert_eq!((status, body), (200, json!({"node_id": id})), "{workload}"),
            Err((field, n)) => {
                assert_eq!(status, 404, "{workload}: {body}");
                assert_eq!(body["error"], "no suitable node");
                assert_eq!(body["ruled_out"], json!({field: n}), "{workload}");
                assert_eq!(body["nodes"], 3);
            }
        }
    }
    // Each node is counted once, under the first requirement it fails.
    let (_, body) = app
        .post_json("/schedule", json!({"gpu_req": 1.5, "cpu_req": 0.95}))
        .await;
    assert_eq!(body["ruled_out"], json!({"cpu_req": 3}));
    let (_, body) = app
        .post_json("/schedule", json!({"gpu_req": 3.0, "max_latency_ms": 6.0}))
        .await;
    assert_eq!(body["ruled_out"], json!({"gpu_req": 3}));

    // Changing the weights changes the winner, as the formula says.
    for weights in [
        [0.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0, 0.0],
    ] {
        let body = json!({"w_cpu": weights[0], "w_ram": weights[1], "w_gpu": weights[2],
                          "w_latency": weights[3], "w_io": weights[4]});
        assert_eq!(app.post_json("/scheduler/config", body).await.0, 200);
        let (_, got) = app.post_json("/schedule", json!({})).await;
        assert_eq!(
            got,
            json!({"node_id": best(weights)}),
            "weights {weights:?}"
        );
    }
    assert_eq!(best([0.0, 0.0, 1.0, 0.0, 0.0]), "a");

    // A tie goes to the smaller id; a node that never reported stats scores as unknown.
    register(&app, "y", "z", 1).await;
    register(&app, "x", "z", 1).await;
    register(&app, "w-silent", "z", 1).await;
    for id in ["y", "x"] {
        stats(
            &app,
            id,
            json!({"cpu_free": 50.0, "ram_free_mb": 1.0, "gpu_free": 0.0}),
        )
        .await;
    }
    let (_, got) = app.post_json("/schedule", json!({})).await;
    assert_eq!(got, json!({"node_id": "x"}));
    app.finish().await;
}

/// The ring as the contract describes it, written here without drover's code: 64 points per
/// GB (at least one GB), point `v` of node `id` at the first 8 bytes (big-endian) of
/// SHA-256("{id}:{v}"), a key at those of SHA-256(key); walk clockwise from the first point at
/// or after the key taking nodes of zones not chosen yet, then fill with other nodes in ring
/// order. Two points at one place belong to the larger id.
struct TestRing {
    points: Vec<(u64, String)>,
    zones: HashMap<String, String>,
}

fn place_of(data: &str) -> u64 {
    let digest = Sha256::digest(data.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap())
}

impl TestRing {
    fn new(nodes: &[(String, String, u64)]) -> Self {
        let mut points = Vec::new();
        for (id, _, gb) in nodes {
            for v in 0..64 * (*gb).max(1) {
                points.push((place_of(&format!("{id}:{v}")), id.clone()));
            }
        }
        points.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        points.dedup_by_key(|p| p.0);
        let zones = nodes
            .iter()
            .map(|(id, z, _)| (id.clone(), z.clone()))
            .collect();
        TestRing { points, zones }
    }

    fn place(&self, key: &str, rf: usize) -> Vec<String> {
        let k = place_of(key);
        let start = self.points.partition_point(|p| p.0 < k);
        let walk =
            || (0..self.points.len()).map(|i| &self.points[(start + i) % self.points.len()].1);
        let mut chosen: Vec<String> = Vec::new();
        let mut zones = HashSet::new();
        for id in walk() {
            if chosen.len() == rf {
                break;
            }
            if !chosen.contains(id) && zones.insert(self.zones[id].clone()) {
                chosen.push(id.clone());
            }
        }
        for id in walk() {
            if chosen.len() == rf {
                break;
            }
            if !chosen.contains(id) {
                chosen.push(id.clone());
            }
        }
        chosen
    }
}

/// 10,000 keys that look like content hashes.
fn keys() -> Vec<String> {
    (0..10_000u32)
        .map(|i| {
            let digest = Sha256::digest(i.to_be_bytes());
            digest.iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect()
}

#[tokio::test]
async fn placement_matches_an_independent_ring_and_moves_little() {
    let app = spawn_app().await;
    let nodes: Vec<(String, String, u64)> = (0..12)
        .map(|i| (format!("n{i:02}"), format!("zone-{}", i % 4), 1 + i % 4))
        .collect();
    for (id, zone, gb) in &nodes {
        register(&app, id, zone, *gb).await;
    }
    let ring = TestRing::new(&nodes);
    let keys = keys();
    let mut before = HashMap::new();
    for key in &keys {
        let got = placement(&app, key, 3).await;
        assert_eq!(got, ring.place(key, 3), "key {key}");
        let zones: HashSet<&String> = got.iter().map(|id| &ring.zones[id]).collect();
        assert_eq!(zones.len(), 3, "three zones for {key}: {got:?}");
        before.insert(key.clone(), placement(&app, key, 1).await);
    }
    // Without `rf` the contract places 3 replicas.
    for key in keys.iter().take(100) {
        let (status, got) = app.get_json(&format!("/placement/{key}")).await;
        assert_eq!((status, got), (200, json!(ring.place(key, 3))), "key {key}");
    }
    // More replicas than zones: distinct nodes, zones first; more than nodes: every node once.

    let six = placement(&app, &keys[0], 6).await;
    assert_eq!(six, ring.place(&keys[0], 6));
    assert_eq!(six.iter().collect::<HashSet<_>>().len(), 6);
    assert_eq!(placement(&app, &keys[0], 16).await.len(), 12);

    // Another server given the same nodes in another order answers the same.
    let other = spawn_app().await;
    for (id, zone, gb) in nodes.iter().rev() {
        register(&other, id, zone, *gb).await;
    }
    for key in keys.iter().take(500) {
        assert_eq!(
            placement(&other, key, 3).await,
            placement(&app, key, 3).await
        );
    }
    other.finish().await;

    // A node joins: only keys that now go to it move, about its share of the ring.
    register(&app, "n-new", "zone-0", 2).await;
    let total_gb: u64 = nodes.iter().map(|n| n.2).sum::<u64>() + 2;
    let share = 2.0 / total_gb as f64;
    let mut moved = 0;
    for key in &keys {
        let now = placement(&app, key, 1).await;
        if now != before[key] {
            assert_eq!(now, ["n-new"], "{key} moved elsewhere than to the new node");
            moved += 1;
        }
    }
    let fraction = moved as f64 / keys.len() as f64;
    assert!(
        fraction > share / 2.0 && fraction < share * 2.0,
        "{moved} keys moved on a join; the new node holds {share:.3} of the ring"
    );

    // A node leaves (a spot of the native API that goes silent and DOWN): only its keys move.
    let spot = spot_in_zone(&app, "zone-9").await;
    let with_spot: HashMap<&String, Vec<String>> = {
        let mut m = HashMap::new();
        for key in &keys {
            m.insert(key, placement(&app, key, 1).await);
        }
        m
    };
    let on_spot = with_spot.values().filter(|v| v[0] == spot).count();
    assert!(on_spot > 0, "the spot holds keys");
    app.advance(Duration::from_secs(3600));
    app.state.step(&app.state.spot_reaper()).await.unwrap();
    let mut moved = 0;
    for key in &keys {
        let now = placement(&app, key, 1).await;
        assert_ne!(now[0], spot, "a DOWN node is not placed");
        if now != with_spot[key] {
            assert_eq!(
                with_spot[key][..],
                [spot.as_str()],
                "{key} moved without its node leaving"
            );
            moved += 1;
        }
    }
    assert_eq!(moved, on_spot);
    app.finish().await;
}

#[tokio::test]
async fn a_node_going_down_gets_its_objects_repaired() {
    let app = spawn_app().await;
    for (id, zone) in [("p1", "z1"), ("p2", "z2"), ("p3", "z3")] {
        register(&app, id, zone, 100).await;
    }
    // A native spot in a zone of its own holds copies too.
    let spot = spot_in_zone(&app, "z4").await;
    let mut on_spot = Vec::new();
    for i in 0..40 {
        let hash = format!("object-{i}");
        let (status, _) = app
            .post_json(
                "/object/register",
                json!({"hash": hash, "size": 10, "rf": 2}),
            )
            .await;
        assert_eq!(status, 200);
        let (_, o) = app.get_json(&format!("/object/{hash}")).await;
        let targets: Vec<String> = serde_json::from_value(o["pending"].clone()).unwrap();
        assert_eq!(targets.len(), 2);
        for node in &targets {
            app.post_json(
                "/replica/mark_healed",
                json!({"hash": hash, "node_id": node}),
            )
            .await;
        }
        if targets.contains(&spot) {
            on_spot.push(hash);
        }
    }
    assert!(!on_spot.is_empty(), "some objects are on the spot");
    let (_, repair) = app.get_json("/repair").await;
    assert_eq!(repair["under_replicated"], json!([]));

    app.advance(Duration::from_secs(3600));
    app.state.step(&app.state.spot_reaper()).await.unwrap();
    let (_, repair) = app.get_json("/repair").await;
    let listed: HashSet<String> = (repair["under_replicated"].as_array().unwrap().iter())
        .map(|o| o["hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, on_spot.iter().cloned().collect());
    let (_, info) = app.get_json("/system/info").await;
    assert_eq!(info["repair"]["under_replicated"], on_spot.len());

    let counts = app.state.step(&app.state.repair_worker()).await.unwrap();
    assert_eq!(counts, vec![("replicas_assigned", on_spot.len() as u64)]);
    // A second step assigns nothing more: the replacements are awaited.
    let counts = app.state.step(&app.state.repair_worker()).await.unwrap();
    assert_eq!(counts, vec![("replicas_assigned", 0)]);
    let (_, repair) = app.get_json("/repair").await;
    assert_eq!(repair["pending_repairs"], on_spot.len());
    for hash in &on_spot {
        let (_, o) = app.get_json(&format!("/object/{hash}")).await;
        let pending: Vec<String> = serde_json::from_value(o["pending"].clone()).unwrap();
        assert_eq!(pending.len(), 1, "{o}");
        assert_ne!(pending[0], spot);
        let (status, _) = app
            .post_json(
                "/replica/mark_healed",
                json!({"hash": hash, "node_id": pending[0]}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, repair) = app.get_json("/repair").await;
    assert_eq!(repair["under_replicated"], json!([]), "{repair}");
    app.finish().await;
}

#[tokio::test]
async fn a_stats_timeout_takes_a_silent_node_down_and_a_report_brings_it_back() {
    let app = spawn_app_with(|c| c.stats_timeout = Some(Duration::from_secs(30))).await;
    register(&app, "quiet", "z1", 1).await;
    register(&app, "chatty", "z2", 1).await;
    app.advance(Duration::from_secs(20));
    stats(&app, "chatty", json!({"cpu_free": 0.5, "ram_free_mb": 1.0})).await;
    app.advance(Duration::from_secs(15));
    let counts = app.state.step(&app.state.spot_reaper()).await.unwrap();
    assert!(counts.contains(&("spots_down", 1)), "{counts:?}");
    let (_, quiet) = app.get_json("/node/quiet").await;
    assert_eq!(quiet["status"], "DOWN");
    assert_eq!(placement(&app, "k", 3).await, ["chatty"]);
    // A report is a sign of life.
    stats(&app, "quiet", json!({"cpu_free": 0.5, "ram_free_mb": 1.0})).await;
    let (_, quiet) = app.get_json("/node/quiet").await;
    assert_eq!(quiet["status"], "UP");
    assert_eq!(placement(&app, "k", 3).await.len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn with_keys_nodes_need_the_agent_key_and_clients_the_api_key() {
    let app = spawn_app_with(|c| {
        c.agent_key = Some("agent-k".into());
        c.api_key = Some("api-k".into());
    })
    .await;
    let node = json!({"id": "n1", "zone": "z", "addr": "a"});
    let send = |path: &str, key: Option<(&str, &str)>, body: Option<&Value>| {
        let mut req = match body {
            Some(b) => app.http.post(app.url(path)).json(b),
            None => app.http.get(app.url(path)),
        };
        if let Some((name, value)) = key {
            req = req.header(name, value);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send("/register", None, Some(&node)).await, 401);
    assert_eq!(
        send(
            "/register",
            Some(("authorization", "Bearer api-k")),
            Some(&node)
        )
        .await,
        401
    );
    assert_eq!(
        send("/register", Some(("x-agent-key", "agent-k")), Some(&node)).await,
        200
    );
    let stats = json!({"cpu_free": 1.0, "ram_free_mb": 1.0});
    assert_eq!(send("/node/n1/stats", None, Some(&stats)).await, 401);
    assert_eq!(
        send(
            "/node/n1/stats",
            Some(("x-agent-key", "agent-k")),
            Some(&stats)
        )
        .await,
        200
    );
    assert_eq!(send("/schedule", None, Some(&json!({}))).await, 401);
    assert_eq!(send("/nodes", None, None).await, 401);
    let bearer = Some(("authorization", "Bearer api-k"));
    assert_eq!(send("/schedule", bearer, Some(&json!({}))).await, 200);
    assert_eq!(send("/nodes", bearer, None).await, 200);
    assert_eq!(send("/node/n1/stats", bearer, None).await, 200);
    // Load balancers probe without keys.
    assert_eq!(send("/health", None, None).await, 200);
    assert_eq!(send("/ready", None, None).await, 200);
    app.finish().await;
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn two_replicas_on_one_database_place_and_schedule_alike() {
    let url = drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to run against: {why}"));
    let first_url = url.clone();
    let a = spawn(move |c| c.store_url = first_url, false).await;
    let b = spawn(move |c| c.store_url = url, false).await;
    // b reads its view before the nodes exist, so it must see a's writes by itself.
    assert_eq!(placement(&b, "k", 3).await, Vec::<String>::new());
    for (id, zone) in [("n1", "z1"), ("n2", "z2"), ("n3", "z3"), ("n4", "z1")] {
        register(&a, id, zone, 2).await;
        stats(&a, id, json!({"cpu_free": 0.5, "ram_free_mb": 100.0})).await;
    }
    a.post_json(
        "/scheduler/config",
        json!({"w_cpu": 0.0, "w_ram": 1.0, "w_gpu": 0.0,
                                            "w_latency": 0.0, "w_io": 0.0}),
    )
    .await;
    stats(&a, "n3", json!({"cpu_free": 0.5, "ram_free_mb": 900.0})).await;
    eventually(
        Duration::from_secs(5),
        "b sees a's nodes, stats and weights",
        || async {
            let (_, got) = b.post_json("/schedule", json!({})).await;
            (got == json!({"node_id": "n3"})).then_some(())
        },
    )
    .await;
    for i in 0..200 {
        let key = format!("object-{i}");
        assert_eq!(placement(&b, &key, 3).await, placement(&a, &key, 3).await);
    }
    a.finish().await;
    b.finish().await;
}

#[tokio::test]
async fn ready_and_health_are_503_while_the_store_cannot_write() {
    use drover_store::faults::{self, FaultPlan, Faults};
    let faults = Faults::new(FaultPlan::none(0));
    let injected = faults.clone();
    let app = spawn_with_store(|_| {}, move |s| faults::wrap(s, injected)).await;
    assert_eq!(app.get_json("/ready").await.0, 200);
    faults.set_writes_down(true);
    assert_eq!(app.get_json("/ready").await.0, 503);
    let (status, health) = app.get_json("/health").await;
    assert_eq!(status, 503);
    assert!(
        health["status"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{health}"
    );
    faults.set_writes_down(false);
    assert_eq!(app.get_json("/ready").await.0, 200);
    app.finish().await;
}

/// Writes one of each record, for the restart tests.
async fn write_some_of_everything(app: &TestApp) {
    register(app, "node-1", "zone-a", 7).await;
    register(app, "node-2", "zone-b", 9).await;
    stats(
        app,
        "node-1",
        json!({"cpu_free": 0.5, "ram_free_mb": 512.0, "gpu_free": 1.0, "latency_ms": 3.0,
               "io_pressure": 0.2}),
    )
    .await;
    app.post_json("/scheduler/config", json!({"w_cpu": 3.0}))
        .await;
    app.post_json(
        "/object/register",
        json!({"hash": "h1", "size": 42, "rf": 2}),
    )
    .await;
    app.post_json(
        "/replica/mark_healed",
        json!({"hash": "h1", "node_id": "node-2"}),
    )
    .await;
}

async fn read_everything(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for path in [
        "/nodes",
        "/node/node-1/stats",
        "/scheduler/config",
        "/object/h1",
        "/placement/h1?rf=2",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        all.push(body);
    }
    all
}

async fn survives_a_restart(store_url: String) {
    let url = store_url.clone();
    let first = spawn(move |c| c.store_url = url, true).await;
    write_some_of_everything(&first).await;
    let before = read_everything(&first).await;
    assert_eq!(before[2]["w_cpu"], 3.0);
    first.begin_shutdown();
    let _dir = first.stopped().await;
    let second = spawn(move |c| c.store_url = store_url, true).await;
    assert_eq!(read_everything(&second).await, before);
    second.finish().await;
}

#[tokio::test]
async fn placement_records_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    survives_a_restart(dir.path().join("placement.db").display().to_string()).await;
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn placement_records_survive_a_restart_on_postgres() {
    let url = drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to run against: {why}"));
    survives_a_restart(url).await;
}

#[tokio::test]
async fn bad_input_is_refused_with_what_to_fix() {
    let app = spawn_app().await;
    register(&app, "n1", "z", 1).await;
    let cases: Vec<(&str, &str, Value, u16, &str, &str)> = vec![
        // (method, path, body, status, code, words the message must hold)
        (
            "POST",
            "/schedule",
            json!({"cpu_req": -1.0}),
            400,
            "INVALID_FIELD",
            "cpu_req",
        ),
        (
            "POST",
            "/scheduler/config",
            json!({"w_io": -0.5}),
            400,
            "INVALID_FIELD",
            "w_io",
        ),
        (
            "POST",
            "/scheduler/config",
            json!({"w_cpu": 0, "w_ram": 0, "w_gpu": 0, "w_latency": 0, "w_io": 0}),
            400,
            "INVALID_FIELD",
            "all 0",
        ),
        (
            "POST",
            "/node/n1/stats",
            json!({"cpu_free": -0.1, "ram_free_mb": 1.0}),
            400,
            "INVALID_FIELD",
            "cpu_free",
        ),
        (
            "POST",
            "/node/n1/stats",
            json!({"ram_free_mb": 1.0}),
            400,
            "INVALID_FIELD",
            "cpu_free",
        ),
        (
            "POST",
            "/node/nope/stats",
            json!({"cpu_free": 0.1, "ram_free_mb": 1.0}),
            404,
            "NODE_NOT_FOUND",
            "node not found",
        ),
        (
            "GET",
            "/node/nope",
            Value::Null,
            404,
            "NODE_NOT_FOUND",
            "node not found",
        ),
        (
            "GET",
            "/placement/h?rf=0",
            Value::Null,
            400,
            "INVALID_FIELD",
            "rf",
        ),
        (
            "GET",
            "/placement/h?rf=17",
            Value::Null,
            400,
            "INVALID_FIELD",
            "between 1 and 16",
        ),
        (
            "GET",
            "/placement/h?rf=x",
            Value::Null,
            400,
            "INVALID_QUERY",
            "rf",
        ),
        (
            "GET",
            "/object/nope",
            Value::Null,
            404,
            "OBJECT_NOT_FOUND",
            "not found",
        ),
        (
            "POST",
            "/replica/mark_missing",
            json!({"hash": "nope", "node_id": "n1"}),
            404,
            "OBJECT_NOT_FOUND",
            "not found",
        ),
        (
            "POST",
            "/register",
            json!({"id": " ", "zone": "z", "addr": "a"}),
            400,
            "INVALID_FIELD",
            "id",
        ),
        (
            "POST",
            "/register",
            json!({"id": "n2", "addr": "a"}),
            400,
            "INVALID_FIELD",
            "zone",
        ),
        (
            "POST",
            "/register",
            json!({"id": "n2", "zone": "z", "addr": "a",
         "capacity_gb": 1_000_000}),
            400,
            "INVALID_FIELD",
            "capacity_gb",
        ),
        (
            "POST",
            "/object/register",
            json!({"hash": "h", "size": 1, "rf": 0}),
            400,
            "INVALID_FIELD",
            "rf",
        ),
        (
            "POST",
            "/object/register",
            json!({"hash": "", "size": 1}),
            400,
            "INVALID_FIELD",
            "hash",
        ),
        (
            "POST",
            "/schedule",
            json!("not an object"),
            400,
            "INVALID_FIELD",
            "JSON object",
        ),
    ];
    for (method, path, body, status, code, words) in cases {
        let (got, answer) = match method {
            "GET" => app.get_json(path).await,
            _ => app.post_json(path, body.clone()).await,
        };
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert_eq!(answer["code"], code, "{method} {path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(words),
            "{method} {path}: {error:?} lacks {words:?}"
        );
    }
    // JSON has no NaN; an infinite weight reads as a number out of range.
    let (status, body) = app
        .post_raw("/scheduler/config", r#"{"w_cpu": 1e999}"#)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("MALFORMED_JSON")),
        "{body}"
    );
    let (_, body) = app
        .post_json(
            "/replica/mark_healed",
            json!({"hash": "h", "node_id": "n1"}),
        )
        .await;
    assert_eq!(body["code"], "OBJECT_NOT_FOUND");
    app.post_json("/object/register", json!({"hash": "h", "size": 1}))
        .await;
    let (status, body) = app
        .post_json(
            "/replica/mark_healed",
            json!({"hash": "h", "node_id": "nope"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"], &body["node_id"]),
        (404, &json!("node not found"), &json!("nope"))
    );
    let (status, body) = app
        .post_json(
            "/node/nope/stats",
            json!({"cpu_free": 0.1, "ram_free_mb": 1.0}),
        )
        .await;
    assert_eq!(
        (status, &body["error"], &body["node_id"]),
        (404, &json!("node not found"), &json!("nope"))
    );
    let (status, body) = app.post_json("/schedule", json!({"cpu_req": 5.0})).await;
    assert_eq!((status, &body["error"]), (404, &json!("no suitable node")));
    app.finish().await;
}

#[tokio::test]
async fn a_blob_posted_for_data_availability_gets_its_sha3_commitment_and_the_next_height() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("da");
    let app = crate::helpers::spawn_app_with({
        let sink = sink.clone();
        move |c| c.da_dir = Some(sink)
    })
    .await;
    // The contract's example: "hello world".
    let (status, body) = app
        .post_json("/da/post", json!({"data_hex": "68656c6c6f20776f726c64"}))
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({
                "success": true,
                "commitment": "644bcc7e564373040999aac89e7622f3ca71fba1d972fd94a31c3bfbf24e3938",
                "height": 1
            })
        )
    );
    let (_, body) = app.post_json("/da/post", json!({"data_hex": ""})).await;
    assert_eq!(body["height"], 2);
    let kept = std::fs::read(sink.join(format!("{:020}.blob", 1))).unwrap();
    assert_eq!(kept, b"hello world");

    let (status, body) = app
        .post_json("/da/post", json!({"data_hex": "68656c6cZZ"}))
        .await;
    assert_eq!(
        (status, &body["success"], &body["code"]),
        (400, &json!(false), &json!("INVALID_HEX"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid hex data: "),
        "{body}"
    );
    let (status, body) = app.post_json("/da/post", json!({"data": "00"})).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("INVALID_JSON")),
        "{body}"
    );
    // Refusals take no height.
    let (_, body) = app.post_json("/da/post", json!({"data_hex": "00"})).await;
    assert_eq!(body["height"], 3);
}

#[tokio::test]
async fn without_a_sink_the_data_availability_route_says_how_to_have_one() {
    let app = crate::helpers::spawn_app().await;
    let (status, body) = app.post_json("/da/post", json!({"data_hex": "00"})).await;
    assert_eq!(
        (status, &body["success"], &body["code"]),
        (503, &json!(false), &json!("DA_DISABLED"))
    );
    assert!(
        body["error"].as_str().unwrap().contains("--da-dir"),
        "{body}"
    );
}
