//! `drover_sinks::HttpSink` against a real drover server with a data-availability directory:
//! posts answered with their heights and commitments, blobs read back through
//! `GET /da/blob/{height}`, the height through `GET /da/head`; a server without a directory,
//! and one whose key the sink lacks, answered as unavailable and refused; a stopped server
//! answered as unavailable. Also the two read routes' own answers, and the key a publisher
//! sends to such a sink.

use crate::helpers::*;
use drover_sinks::{HttpSink, Posted, Sink, SinkError, commitment};
use serde_json::json;
use std::time::Duration;

fn sink_on(app: &TestApp) -> HttpSink {
    HttpSink::new(&app.base)
        .unwrap()
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn an_http_sink_posts_reads_back_and_finds_a_stopped_server_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("da");
    let app = spawn_app_with({
        let kept = kept.clone();
        move |c| c.da_dir = Some(kept)
    })
    .await;
    let sink = sink_on(&app);
    assert_eq!(sink.kind(), "http");
    sink.check().await.unwrap();
    assert_eq!(sink.head().await.unwrap(), 0);

    let blobs: [&[u8]; 3] = [b"hello world", b"", &[0, 159, 146, 150]];
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(
            sink.post(blob).await.unwrap(),
            Posted {
                commitment: commitment(blob),
                height: i as u64 + 1
            }
        );
    }
    // The contract's example commitment, as the server computed it.
    assert_eq!(
        commitment(b"hello world"),
        "644bcc7e564373040999aac89e7622f3ca71fba1d972fd94a31c3bfbf24e3938"
    );
    for (i, blob) in blobs.iter().enumerate() {
        let height = i as u64 + 1;
        assert_eq!(
            sink.get(height).await.unwrap().as_deref(),
            Some(*blob),
            "height {height}"
        );
        // What the server's file sink holds under that height, read without the server.
        let file = std::fs::read(kept.join(format!("{height:020}.blob"))).unwrap();
        assert_eq!(file, *blob);
    }
    assert_eq!(sink.get(4).await.unwrap(), None);
    assert_eq!(sink.get(0).await.unwrap(), None);
    assert_eq!(sink.head().await.unwrap(), 3);
    // Checks take no height.
    sink.check().await.unwrap();
    assert_eq!(sink.head().await.unwrap(), 3);

    app.begin_shutdown();
    let _dir = app.stopped().await;
    let err = sink.post(b"after the stop").await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    let err = sink.check().await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    let err = sink.get(1).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn a_server_without_a_directory_is_unavailable_and_a_missing_key_is_refused() {
    let app = spawn_app().await;
    let err = sink_on(&app).check().await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("DA_DISABLED"), "{err}");
    app.finish().await;

    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with({
        let kept = dir.path().join("da");
        move |c| {
            c.da_dir = Some(kept);
            c.api_key = Some("k-123".into());
        }
    })
    .await;
    let err = sink_on(&app).post(b"x").await.unwrap_err();
    assert!(matches!(err, SinkError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    let err = sink_on(&app).check().await.unwrap_err();
    assert!(matches!(err, SinkError::Refused { .. }), "{err}");
    // The refused post took no height.
    let sink = sink_on(&app).with_api_key("k-123");
    assert_eq!(sink.post(b"x").await.unwrap().height, 1);
    assert_eq!(sink.get(1).await.unwrap().as_deref(), Some(&b"x"[..]));
    app.finish().await;
}

#[tokio::test]
async fn the_read_routes_answer_raw_bytes_the_head_and_coded_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with({
        let kept = dir.path().join("da");
        move |c| c.da_dir = Some(kept)
    })
    .await;
    assert_eq!(app.get_json("/da/head").await, (200, json!({"height": 0})));
    let (status, _) = app.post_json("/da/post", json!({"data_hex": "00ff"})).await;
    assert_eq!(status, 200);
    assert_eq!(app.get_json("/da/head").await, (200, json!({"height": 1})));

    let resp = reqwest::get(app.url("/da/blob/1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[0x00, 0xff]);

    let (status, body) = app.get_json("/da/blob/2").await;
    assert_eq!(
        (status, &body["success"], &body["code"]),
        (404, &json!(false), &json!("BLOB_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = app.get_json("/da/blob/two").await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("INVALID_HEIGHT")),
        "{body}"
    );
    // A segment that is not UTF-8 is no height either, refused in the same JSON.
    let (status, body) = app.get_json("/da/blob/%ff").await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("INVALID_HEIGHT")),
        "{body}"
    );
    app.finish().await;

    let app = spawn_app().await;
    let (status, body) = app.get_json("/da/head").await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("DA_DISABLED")),
        "{body}"
    );
    let (status, body) = app.get_json("/da/blob/1").await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("DA_DISABLED")),
        "{body}"
    );
    app.finish().await;
}

/// A publisher posting to another drover server sends that server's key
/// (`--journal-sink-key`), and never its own API key, even where the two would match.
#[tokio::test]
async fn the_publisher_sends_the_sinks_own_key_never_its_servers_api_key() {
    const KEY: &str = "the-sinks-key";
    let dir = tempfile::tempdir().unwrap();
    let sink_server = spawn_app_with({
        let kept = dir.path().join("da");
        move |c| {
            c.da_dir = Some(kept);
            c.api_key = Some(KEY.into());
        }
    })
    .await;
    let app = spawn_app_with(|c| c.api_key = Some(KEY.into())).await;
    app.hello().await;
    let publisher = |sink_key: Option<&str>| {
        drover_server::journal::Publisher::new(
            drover_server::journal::JournalConfig {
                sink_key: sink_key.map(String::from),
                ..drover_server::journal::JournalConfig::to(drover_server::journal::SinkSpec::Http(
                    sink_server.base.clone(),
                ))
            },
            app.store().journal.clone(),
            app.state.clock.clone(),
        )
    };
    assert_eq!(
        publisher(None).publish().await.unwrap(),
        0,
        "refused: no key was sent"
    );
    assert!(publisher(Some(KEY)).publish().await.unwrap() > 0);
    let held = sink_on(&sink_server).with_api_key(KEY);
    assert!(held.get(1).await.unwrap().is_some());
    app.finish().await;
    sink_server.finish().await;
}
