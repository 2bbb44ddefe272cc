//! `GET /api/v1/cluster`: on SQLite a server is alone on its file and leads from its start,
//! under epoch 1; and a new leader's grace before it declares any spot DOWN.

use crate::helpers::{spawn_app, spawn_app_with};
use drover_store::cluster::Action;
use std::time::Duration;

#[tokio::test]
async fn a_server_alone_on_its_sqlite_file_is_the_single_leader() {
    let app = spawn_app_with(|c| c.cluster.replica_id = "replica-a".into()).await;
    let cluster = app.client.cluster().await.unwrap();
    assert_eq!(cluster.replica_id, "replica-a");
    assert_eq!(cluster.role, "leader");
    assert_eq!(cluster.leader.as_deref(), Some("replica-a"));
    assert_eq!(cluster.epoch, 1);
    assert_eq!(cluster.lease_ttl_seconds, 10.0);
    // The test's clock stands at 12:00:00; the lease runs a TTL past it.
    assert_eq!(
        cluster.lease_expires_at.as_deref(),
        Some("2026-01-28T12:00:10.000Z")
    );
    assert_eq!(
        cluster.leading_since.as_deref(),
        Some("2026-01-28T12:00:00.000Z")
    );
    assert_eq!(cluster.members.len(), 1);
    let me = &cluster.members[0];
    assert_eq!(me.replica_id, "replica-a");
    assert!(me.leader);
    assert_eq!(me.address, app.base.trim_start_matches("http://"));
    assert_eq!(me.first_seen, "2026-01-28T12:00:00.000Z");

    // The wire form, field by field.
    let (status, body) = app.get_json("/api/v1/cluster").await;
    assert_eq!(status, 200);
    for field in [
        "replicaId",
        "role",
        "leader",
        "epoch",
        "leaseExpiresAt",
        "leaseTtlSeconds",
        "leadingSince",
        "members",
        "version",
    ] {
        assert!(body.get(field).is_some(), "no {field} in {body}");
    }
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    for field in ["replicaId", "address", "leader", "firstSeen", "lastSeen"] {
        assert!(
            body["members"][0].get(field).is_some(),
            "no {field} in {body}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn a_replica_silent_for_a_ttl_is_no_longer_listed() {
    let app = spawn_app().await;
    let cluster = app.store().cluster.clone();
    let t = app.state.clock.now();
    cluster
        .heartbeat_member("gone", "10.0.0.7:8080", t)
        .await
        .unwrap();
    let ids = |c: &drover_api::ClusterInfo| {
        c.members
            .iter()
            .map(|m| m.replica_id.clone())
            .collect::<Vec<_>>()
    };
    assert!(ids(&app.client.cluster().await.unwrap()).contains(&"gone".to_string()));
    // The test's clock moves past a TTL since "gone" was last heard from.
    app.advance(Duration::from_secs(11));
    assert!(!ids(&app.client.cluster().await.unwrap()).contains(&"gone".to_string()));
    app.finish().await;
}

/// Right after a server becomes leader, the spot reaper declares no spot DOWN for the grace
/// (configured here to a minute; the spot timeout by default): a spot's heartbeats may have
/// gone to a replica that died with the old leader.
#[tokio::test]
async fn a_new_leader_declares_no_spot_down_during_its_grace() {
    let app = spawn_app_with(|c| c.cluster.takeover_grace = Some(Duration::from_secs(60))).await;
    let silent = app.hello().await;
    app.advance(Duration::from_secs(30));
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert!(down.nodes.is_empty(), "within the grace: {down:?}");
    assert_eq!(app.client.spots().await.unwrap()[0].status, "UP");

    app.advance(Duration::from_secs(30));
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(down.nodes, vec![silent]);
    app.finish().await;
}

/// A step of a leader's worker that changed something is recorded with the epoch it ran
/// under; a step that changed nothing is not.
#[tokio::test]
async fn the_leaders_steps_that_change_something_are_recorded_with_their_epoch() {
    let app = spawn_app_with(|c| c.cluster.replica_id = "replica-a".into()).await;
    let reaper = app.state.led(app.state.spot_reaper(), 1);
    app.state.step(&reaper).await.unwrap();
    assert!(app.store().cluster.actions().await.unwrap().is_empty());

    app.hello().await;
    app.advance(Duration::from_secs(11));
    let counts = app.state.step(&reaper).await.unwrap();
    assert!(counts.contains(&("spots_down", 1)), "{counts:?}");
    let actions: Vec<Action> = app
        .store()
        .cluster
        .actions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [Action {
            epoch: 1,
            replica_id: "replica-a".into(),
            worker: "spot-reaper".into(),
            at: app.state.clock.now(),
        }]
    );

    // Under an epoch this replica does not lead, a step does nothing.
    let stale = app.state.led(app.state.spot_reaper(), 7);
    assert_eq!(app.state.step(&stale).await.unwrap(), vec![]);
    app.finish().await;
}
