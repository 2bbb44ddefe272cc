//! The event journal over HTTP: `GET /api/v1/journal` (entries numbered from 1 without gaps, a
//! page at a time, `waitMs` to wait for the next one), `GET /api/v1/journal/verify` and the
//! placement contract's `GET /fallback/consistency` (the journal replayed and compared with the
//! live tables, which a row changed by hand makes disagree).

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use drover_api::{CompleteRequest, FailRequest, JournalPage, JournalVerification};
use drover_core::journal::Entry;
use drover_server::consistency;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What the workload leaves in the journal: one spot, a job of 3 tasks, 2 claimed, one
/// completed and one failed (to be retried).
struct Worked {
    spot: String,
    done: String,
    failed: String,
}

/// The kinds of the entries [`workload`] writes, in order.
const WORKLOAD_KINDS: [&str; 5] = [
    "node_registered",
    "job_created",
    "task_claimed",
    "task_completed",
    "task_failed",
];

async fn workload(app: &TestApp) -> Worked {
    let spot = app.hello().await;
    app.create_job(3, json!({})).await;
    let claimed = app.client.claim(&spot, 2).await.unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let done = CompleteRequest {
        spot_id: spot.clone(),
        fopt: Some(0.5),
        ..Default::default()
    };
    app.client.complete(&claimed[0].id, &done).await.unwrap();
    let fail = FailRequest {
        spot_id: spot.clone(),
        error: Some("exit 1".into()),
        ..Default::default()
    };
    app.client.fail(&claimed[1].id, &fail).await.unwrap();
    Worked {
        spot,
        done: claimed[0].id.clone(),
        failed: claimed[1].id.clone(),
    }
}

/// Every entry, read `limit` at a time through the typed client; checks each page's head.
async fn read_all(app: &TestApp, limit: u32) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = app
            .client
            .journal(after, limit, Duration::ZERO)
            .await
            .unwrap();
        assert!(page.entries.len() <= limit as usize, "{page:?}");
        if page.entries.is_empty() {
            assert_eq!(page.head, after, "the last page ends at the head");
            return all;
        }
        assert!(page.head >= page.entries.last().unwrap().seq, "{page:?}");
        all.extend(page.entries);
    }
}

async fn verify(app: &TestApp) -> JournalVerification {
    app.client.verify_journal().await.unwrap()
}

/// `GET /fallback/consistency`, the placement contract's report.
async fn fallback_consistency(app: &TestApp) -> (u16, Value) {
    app.get_json("/fallback/consistency").await
}

#[tokio::test]
async fn every_acknowledged_change_is_an_entry_numbered_from_one_without_gaps() {
    let app = spawn_app().await;
    workload(&app).await;

    let entries = read_all(&app, 2).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, WORKLOAD_KINDS);
    // Both claims in one entry, as one compact change of the job's two tasks.
    match &entries[2].changes[..] {
        [drover_core::journal::Change::Tasks { moves, .. }] => assert_eq!(moves.len(), 2),
        other => panic!("both claims in one entry: {other:?}"),
    }

    // One default page holds them all; the wire shape is the journal's own encoding.
    let (status, body) = app.get_json("/api/v1/journal").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["head"], 5, "{body}");
    let first = &body["entries"][0];
    assert_eq!(first["seq"], 1, "{body}");
    assert_eq!(first["kind"], "node_registered", "{body}");
    assert!(first["at"].is_string(), "{body}");
    assert_eq!(first["changes"][0]["t"], "node", "{body}");
    let page: JournalPage<Entry> = serde_json::from_value(body).unwrap();
    assert_eq!(page.entries, entries);

    // After the head: nothing, and the head.
    let (status, body) = app.get_json("/api/v1/journal?after=5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"entries": [], "head": 5}));
    app.finish().await;
}

#[tokio::test]
async fn a_waiting_read_gets_the_entry_written_during_its_wait() {
    let app = spawn_app().await;
    workload(&app).await;
    let head = app.client.journal(0, 1, Duration::ZERO).await.unwrap().head;

    let writer = {
        let client = app.client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let job = serde_json::from_value(json!({"parameters": {"x": [1]}})).unwrap();
            client.create_job(&job).await.unwrap()
        })
    };
    let page = app
        .client
        .journal(head, 100, Duration::from_secs(20))
        .await
        .unwrap();
    let created = writer.await.unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert_eq!(page.entries[0].seq, head + 1);
    assert_eq!(page.entries[0].kind, "job_created");
    let named = serde_json::to_string(&page.entries[0].changes).unwrap();
    assert!(named.contains(&created.job_id), "{named}");
    assert_eq!(page.head, head + 1);
    app.finish().await;
}

#[tokio::test]
async fn a_waiting_read_answers_nothing_once_its_wait_has_passed() {
    let app = spawn_app().await;
    let spot = workload(&app).await.spot;
    // A heartbeat writes nothing to the journal: the wait goes on to its end.
    let beating = {
        let app_client = app.client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let beat = drover_api::HeartbeatRequest {
                spot_id: spot,
                ..Default::default()
            };
            app_client.heartbeat(&beat).await.unwrap();
        })
    };
    let asked = Instant::now();
    let (status, body) = app.get_json("/api/v1/journal?after=5&waitMs=400").await;
    beating.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"entries": [], "head": 5}));
    assert!(
        asked.elapsed() >= Duration::from_millis(400),
        "answered before its wait was over: {:?}",
        asked.elapsed()
    );
    app.finish().await;
}

#[tokio::test]
async fn the_journal_replays_to_the_live_tables_until_a_row_is_changed_by_hand() {
    let app = spawn_app().await;
    let worked = workload(&app).await;

    let report = verify(&app).await;
    assert!(report.consistent, "{report:#?}");
    assert_eq!(report.inconsistencies, 0);
    assert!(report.details.is_empty(), "{report:#?}");
    assert_eq!(report.head, 5);
    // The node, the job, and the two tasks that left NEW.
    assert_eq!(report.items_verified, 4, "{report:#?}");
    assert_eq!(report.verified_at, "2026-01-28T12:00:00.000Z");

    let (status, body) = fallback_consistency(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "is_consistent": true,
            "items_verified": 4,
            "inconsistencies_found": 0,
            "details": [],
            "verified_at": 1_769_601_600_000i64,
        })
    );

    // An operator's hand edit, which no entry records.
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let changed = db
        .execute(
            "UPDATE tasks SET status = 'FAILED' WHERE id = ?1",
            [&worked.done],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let changed = db
        .execute(
            "UPDATE nodes SET labels = '{\"rack\":\"edited\"}' WHERE id = ?1",
            [&worked.spot],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let report = verify(&app).await;
    assert!(!report.consistent, "{report:#?}");
    assert_eq!(report.inconsistencies, report.details.len() as u64);
    let naming = |id: &str, what: &str| {
        report
            .details
            .iter()
            .find(|d| d.starts_with(&format!("{what} {id}: ")))
            .unwrap_or_else(|| panic!("no detail names {what} {id}: {:#?}", report.details))
            .clone()
    };
    let task = naming(&worked.done, "task");
    assert!(task.contains("Done") && task.contains("Failed"), "{task}");
    let node = naming(&worked.spot, "node");
    assert!(node.contains("edited"), "{node}");
    assert!(
        !report.details.iter().any(|d| d.contains(&worked.failed)),
        "the task left alone is not named: {:#?}",
        report.details
    );

    let (status, body) = fallback_consistency(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_consistent"], false, "{body}");
    assert_eq!(
        body["inconsistencies_found"],
        report.details.len(),
        "{body}"
    );
    assert_eq!(body["details"], json!(report.details), "{body}");
    // The hand edit left the job's counters as a trigger keeps them, which `finish` would
    // check against the API: a state of the tables, not of the journal, so it is not run here.
    app.begin_shutdown();
    app.stopped().await;
}

#[tokio::test]
async fn a_missing_entry_is_named_and_the_tables_are_not_compared_around_it() {
    let app = spawn_app().await;
    workload(&app).await;
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        db.execute("DELETE FROM journal WHERE seq = 3", []).unwrap(),
        1
    );
    drop(db);

    let report = verify(&app).await;
    assert!(!report.consistent, "{report:#?}");
    assert_eq!(report.head, 5);
    assert_eq!(
        report.details,
        [
            "the journal has a gap: entry 4 follows entry 2: entries 3 to 3 are missing",
            "the tables were not compared: the replay stopped after entry 2",
        ],
    );
    app.finish().await;
}

#[tokio::test]
async fn a_write_that_commits_during_the_check_is_left_for_the_next_one() {
    let app = spawn_app().await;
    workload(&app).await;
    let journal = app.store().journal.clone();
    let now = chrono::Utc::now();

    // The check has read the live state (head 5) when a spot registers: entry 6.
    let live = journal.live_state().await.unwrap();
    let late = app.hello().await;
    let report = consistency::check_against(journal.as_ref(), live, now)
        .await
        .unwrap();
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!((report.head, report.items_verified), (5, 4), "{report:#?}");
    assert_eq!(journal.journal_head().await.unwrap(), 6);

    // The next check sees it.
    let report = verify(&app).await;
    assert!(report.consistent, "{report:#?}");
    assert_eq!((report.head, report.items_verified), (6, 5), "{report:#?}");
    let page = app.client.journal(5, 10, Duration::ZERO).await.unwrap();
    let named = serde_json::to_string(&page.entries).unwrap();
    assert!(named.contains(&late), "{named}");
    app.finish().await;
}

#[tokio::test]
async fn bad_query_values_are_refused_with_a_code_that_says_so() {
    let app = spawn_app().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=many",
        "after=-1",
        "after=1.5",
        "waitMs=30001",
        "waitMs=-5",
        "wait=5000",
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/journal?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "INVALID_QUERY", "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let (_, body) = app.get_json("/api/v1/journal?limit=1001").await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("between 1 and 1000"),
        "{body}"
    );
    let (_, body) = app.get_json("/api/v1/journal?waitMs=30001").await;
    assert!(body["error"].as_str().unwrap().contains("30000"), "{body}");
    // The largest values allowed are answered.
    let (status, body) = app
        .get_json("/api/v1/journal?limit=1000&after=18446744073709551615")
        .await;
    assert_eq!(status, 200, "{body}");
    app.finish().await;
}

#[tokio::test]
async fn the_journal_needs_the_api_key_even_where_reads_are_public() {
    let app = spawn_app_with(|c| {
        c.api_key = Some("api-k".into());
        c.public_reads = true;
    })
    .await;
    let (status, _) = app.get_json("/api/v1/jobs").await;
    assert_eq!(status, 200, "other reads are public");
    for path in ["/api/v1/journal", "/api/v1/journal/verify"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["code"], "UNAUTHORIZED", "{path}: {body}");
    }
    // The typed client sends the key.
    app.client.journal(0, 10, Duration::ZERO).await.unwrap();
    assert!(verify(&app).await.consistent);
    app.finish().await;
}
