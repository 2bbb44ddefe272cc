//! Draining a spot over `POST /api/v1/spots/{id}/drain` and `/undrain`: a drained spot finishes
//! what it holds, claims nothing new (a waiting claim is woken by the undrain), keeps its status
//! through heartbeats, and every change is journaled; a DOWN or unknown spot is refused with
//! its code.

use crate::helpers::spawn_app;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_drained_spot_finishes_its_task_and_claims_nothing_until_undrained() {
    let app = spawn_app().await;
    let job = app.create_job(3, json!({})).await;
    let spot = app.hello().await;
    let held = app.client.claim(&spot, 1).await.unwrap().remove(0);

    let (status, body) = app
        .post_json(&format!("/api/v1/spots/{spot}/drain"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["status"].as_str()),
        (Some(spot.as_str()), Some("DRAINING"))
    );
    // The listing says so, and a heartbeat does not undo it.
    app.heartbeat(&spot).await;
    let listed = app.client.spots().await.unwrap();
    assert_eq!(listed[0].status, "DRAINING");

    // Nothing new: an empty list, not an error; the task it holds completes as usual.
    assert!(app.client.claim(&spot, 2).await.unwrap().is_empty());
    app.client
        .complete(
            &held.id,
            &drover_api::CompleteRequest {
                spot_id: spot.clone(),
                fopt: Some(1.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // A claim that waits for work is answered once the spot is undrained.
    let waiting = {
        let client = app.client.clone();
        let spot = spot.clone();
        tokio::spawn(async move {
            client
                .claim_waiting(&spot, 2, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a drained spot's claim waits");
    let undrained = app.client.undrain_spot(&spot).await.unwrap();
    assert_eq!(undrained.status, "UP");
    let claimed = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the undrain wakes the waiting claim")
        .unwrap()
        .unwrap();
    assert_eq!(claimed.len(), 2);

    // Every change is an entry of the journal, and the journal still replays to the tables.
    let entries = app.client.journal(0, 1000, Duration::ZERO).await.unwrap();
    let kinds: Vec<&str> = entries.entries.iter().map(|e| e.kind.as_str()).collect();
    let drained_at = kinds
        .iter()
        .position(|k| *k == "node_draining")
        .expect("node_draining");
    let undrained_at = kinds
        .iter()
        .position(|k| *k == "node_undrained")
        .expect("node_undrained");
    assert!(drained_at < undrained_at, "{kinds:?}");
    assert!(app.client.verify_journal().await.unwrap().consistent);
    assert_eq!(claimed.iter().filter(|t| t.job_id == job.job_id).count(), 2);
    app.assert_job_counts_consistent().await;
    app.finish().await;
}

#[tokio::test]
async fn drains_are_idempotent_and_refuse_down_and_unknown_spots() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    for _ in 0..2 {
        assert_eq!(
            app.client.drain_spot(&spot).await.unwrap().status,
            "DRAINING"
        );
    }
    for _ in 0..2 {
        assert_eq!(app.client.undrain_spot(&spot).await.unwrap().status, "UP");
    }

    let (status, body) = app
        .post_json("/api/v1/spots/spot-nope/drain", json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("SPOT_NOT_FOUND"))
    );

    // Silent past the spot timeout: DOWN, and a drain or undrain is refused until it speaks.
    app.advance(Duration::from_secs(31));
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(down.nodes, vec![spot.clone()]);
    for action in ["drain", "undrain"] {
        let (status, body) = app
            .post_json(&format!("/api/v1/spots/{spot}/{action}"), json!({}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("SPOT_DOWN")),
            "{action}: {body}"
        );
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains(&spot) && message.contains("back UP"),
            "{message}"
        );
    }
    app.heartbeat(&spot).await;
    assert_eq!(
        app.client.drain_spot(&spot).await.unwrap().status,
        "DRAINING"
    );
    app.finish().await;
}

/// A node that names itself (the node-registry and placement contracts let it) may hold any
/// character in its id: the client and the dashboard's form still name it in one path segment.
#[tokio::test]
async fn a_spot_whose_id_holds_a_slash_and_a_space_is_drained_by_its_id() {
    let app = spawn_app().await;
    let id = "rack 7/node?1%";
    app.store()
        .nodes
        .put_node(
            drover_store::NamedNode {
                id: id.into(),
                info: drover_core::NodeInfo {
                    address: "127.0.0.1".into(),
                    ..Default::default()
                },
                capacity_gb: None,
                liveness: drover_store::Liveness::Heartbeats,
                silence_timeout: None,
            },
            None,
            app.state.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(app.client.drain_spot(id).await.unwrap().id, id);
    let (status, page) = {
        let resp = app.http.get(app.url("/ui/nodes")).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(
        page.contains("/ui/nodes/rack%207%2Fnode%3F1%25/undrain"),
        "{page}"
    );
    assert_eq!(app.client.undrain_spot(id).await.unwrap().status, "UP");
    app.finish().await;
}
