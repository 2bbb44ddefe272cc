//! The PostgreSQL sink against a real database: heights 1, 2, 3 with their commitments, blobs
//! read back by height, concurrent posters (two sinks, as two processes would be, several
//! tasks each) sharing one gap-free sequence, a sink opened again going on from its last
//! height, a row changed by hand refused on read, and a stopped database making posts and
//! checks fail as unavailable until it is back.
//!
//! Every test starts a real PostgreSQL (`drover_pgtest`) and panics with the reason if it
//! cannot; where PostgreSQL's server binaries are not installed they are marked ignored
//! (`build.rs`), except under CI, where a missing PostgreSQL is a failure.

use drover_sinks::{Posted, PostgresOptions, PostgresSink, Sink, SinkError, commitment};
use std::time::Duration;

fn fresh_database() -> String {
    drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to test against: {why}"))
}

async fn open(url: &str) -> PostgresSink {
    PostgresSink::open(url)
        .await
        .unwrap_or_else(|e| panic!("opening the sink at {url}: {e}"))
}

/// The rows of the sink's table, counted by `psql` (not through the sink).
fn rows(url: &str) -> String {
    let database = url.rsplit('/').next().unwrap();
    drover_pgtest::shared()
        .unwrap()
        .psql(
            database,
            "SELECT count(*), count(DISTINCT height), min(height), max(height) \
             FROM drover_sink_blobs",
        )
        .unwrap()
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn posts_take_heights_one_two_three_and_read_back_by_height() {
    let url = fresh_database();
    let sink = open(&url).await;
    assert_eq!(sink.kind(), "postgres");
    assert_eq!(sink.head().await.unwrap(), 0);
    sink.check().await.unwrap();
    let blobs: [&[u8]; 3] = [b"hello world", b"", &[0, 255, 0, 1]];
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(
            sink.post(blob).await.unwrap(),
            Posted {
                commitment: commitment(blob),
                height: i as u64 + 1
            }
        );
    }
    assert_eq!(
        commitment(b"hello world"),
        "644bcc7e564373040999aac89e7622f3ca71fba1d972fd94a31c3bfbf24e3938"
    );
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(
            sink.get(i as u64 + 1).await.unwrap().as_deref(),
            Some(*blob),
            "height {}",
            i + 1
        );
    }
    assert_eq!(sink.get(0).await.unwrap(), None);
    assert_eq!(sink.get(4).await.unwrap(), None);
    assert_eq!(sink.get(u64::MAX).await.unwrap(), None);
    assert_eq!(sink.head().await.unwrap(), 3);
    // The check takes no height.
    sink.check().await.unwrap();
    assert_eq!(rows(&url), "3|3|1|3");
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_posts_take_heights_one_to_twenty_once_each() {
    let url = fresh_database();
    // Two sinks, each with its own pool, as two processes posting to one table would be.
    let sinks = [
        std::sync::Arc::new(open(&url).await),
        std::sync::Arc::new(open(&url).await),
    ];
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let sink = sinks[t % 2].clone();
            tokio::spawn(async move {
                let mut posted = Vec::new();
                for i in 0..5 {
                    let blob = format!("task {t} blob {i}").into_bytes();
                    let p = sink.post(&blob).await.unwrap();
                    assert_eq!(p.commitment, commitment(&blob));
                    posted.push((p.height, blob));
                }
                posted
            })
        })
        .collect();
    let mut posted = Vec::new();
    for task in tasks {
        posted.extend(task.await.unwrap());
    }
    posted.sort();
    let heights: Vec<u64> = posted.iter().map(|(h, _)| *h).collect();
    assert_eq!(heights, (1..=20).collect::<Vec<_>>());
    // Each height holds the blob its post was answered for.
    for (height, blob) in &posted {
        assert_eq!(
            sinks[0].get(*height).await.unwrap().as_ref(),
            Some(blob),
            "height {height}"
        );
    }
    assert_eq!(sinks[1].head().await.unwrap(), 20);
    assert_eq!(rows(&url), "20|20|1|20");
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_sink_opened_again_goes_on_from_its_last_height() {
    let url = fresh_database();
    {
        let sink = open(&url).await;
        sink.post(b"one").await.unwrap();
        sink.post(b"two").await.unwrap();
    }
    // Opening finds the table there and leaves it as it is.
    let sink = open(&url).await;
    assert_eq!(sink.head().await.unwrap(), 2);
    assert_eq!(sink.post(b"three").await.unwrap().height, 3);
    assert_eq!(sink.get(1).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(sink.get(3).await.unwrap().as_deref(), Some(&b"three"[..]));
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_row_changed_by_hand_is_refused_on_read() {
    let url = fresh_database();
    let sink = open(&url).await;
    sink.post(b"kept").await.unwrap();
    let database = url.rsplit('/').next().unwrap();
    drover_pgtest::shared()
        .unwrap()
        .psql(
            database,
            "UPDATE drover_sink_blobs SET data = 'changed'::bytea WHERE height = 1",
        )
        .unwrap();
    let err = sink.get(1).await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
    assert!(!err.is_unavailable());
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn a_stopped_database_makes_posts_and_checks_unavailable_until_it_is_back() {
    // A cluster of this test's own, since it stops it.
    let pg = drover_pgtest::TempPostgres::start()
        .unwrap_or_else(|why| panic!("no PostgreSQL to test against: {why}"));
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        ..PostgresOptions::default()
    };
    let sink = PostgresSink::open_with(&pg.url(), options).await.unwrap();
    assert_eq!(sink.post(b"before").await.unwrap().height, 1);
    sink.check().await.unwrap();

    pg.crash().unwrap();
    let err = sink.post(b"while down").await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    let err = sink.check().await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    let err = sink.head().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    // The pool opens new connections once the database is back; the failed post took no
    // height.
    pg.start_again().unwrap();
    sink.check().await.unwrap();
    assert_eq!(sink.post(b"after").await.unwrap().height, 2);
    assert_eq!(sink.get(2).await.unwrap().as_deref(), Some(&b"after"[..]));
}
