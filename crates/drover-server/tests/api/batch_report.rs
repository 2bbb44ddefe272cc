//! `POST /internal/v1/tasks/report`: many completes and fails in one request and one store
//! transaction, each answered exactly as its per-task route answers it.

use crate::helpers::{TestApp, spawn_app};
use drover_api::{BatchReport, BatchReportRequest, BatchReportResult, CompleteRequest, ReportVerb};
use serde_json::json;

fn report(task: &str, outcome: ReportVerb) -> BatchReport {
    BatchReport::new(task, outcome)
}

pub fn complete(task: &str, fopt: f64) -> BatchReport {
    BatchReport {
        fopt: Some(fopt),
        result_json: Some(json!({"fopt": fopt})),
        ..report(task, ReportVerb::Complete)
    }
}

pub fn fail(task: &str, retriable: bool) -> BatchReport {
    BatchReport {
        error: Some("boom".into()),
        retriable: Some(retriable),
        ..report(task, ReportVerb::Fail)
    }
}

/// The short form of an answer: status, success, message or code, willRetry.
pub fn short(r: &BatchReportResult) -> (u16, bool, Option<&str>, Option<bool>) {
    let said = r.message.as_deref().or(r.code.as_deref());
    (r.status, r.success, said, r.will_retry)
}

/// Every per-task outcome, set up for one batch of spot `a`: the batch, in the order of
/// [`EVERY_ANSWER`], with the ids a test looks at afterwards.
pub struct EveryOutcome {
    pub a: String,
    pub b: String,
    pub ids: Vec<String>,
    pub held_by_b: String,
    pub batch: BatchReportRequest,
}

/// How each report of [`EveryOutcome::batch`] is answered (see [`short`]).
pub const EVERY_ANSWER: [(u16, bool, Option<&str>, Option<bool>); 8] = [
    (200, true, None, None),
    (200, true, Some("already completed"), None),
    (200, true, None, Some(true)),
    (200, true, None, Some(false)),
    (200, true, Some("already terminal"), None),
    (404, false, Some("TASK_NOT_FOUND"), None),
    (409, false, Some("WRONG_SPOT"), None),
    (409, false, Some("TASK_CANCELLED"), None),
];

pub async fn every_outcome(app: &TestApp) -> EveryOutcome {
    app.create_job(6, json!({"maxAttempts": 5})).await;
    let doomed = app.create_job(1, json!({})).await;
    let a = app.hello().await;
    let b = app.hello().await;
    let mine = app.client.claim(&a, 6).await.unwrap();
    let ids: Vec<String> = mine.iter().map(|t| t.id.clone()).collect();
    let cancelled = app.client.claim(&a, 1).await.unwrap().remove(0).id;
    app.client.cancel_job(&doomed.job_id).await.unwrap();

    // Done before the batch: repeated completes and a late fail of a finished task.
    for done in [&ids[1], &ids[4]] {
        let req = CompleteRequest {
            spot_id: a.clone(),
            fopt: Some(1.0),
            ..Default::default()
        };
        app.client.complete(done, &req).await.unwrap();
    }
    // One task taken by another spot: the reaper gives it back, b claims it.
    let held_by_b = ids[5].clone();
    app.advance(std::time::Duration::from_secs(5 * 60 + 11));
    app.state.task_reaper().reap().await.unwrap();
    let taken = app.client.claim(&b, 10).await.unwrap();
    assert!(taken.iter().any(|t| t.id == held_by_b), "{taken:?}");
    // a's other leases were taken back too: claim them again for a.
    let again = app.client.claim(&a, 10).await.unwrap();
    assert!(again.is_empty(), "b took every task: {again:?}");
    let again: Vec<String> = taken.iter().map(|t| t.id.clone()).collect();
    let b_holds = |id: &str| again.iter().any(|t| t == id);
    assert!(b_holds(&ids[0]) && b_holds(&ids[2]) && b_holds(&ids[3]));
    // Hand those back to a by letting them fail once from b (retriable: back to NEW), then
    // a claims them.
    for id in [&ids[0], &ids[2], &ids[3]] {
        let req = drover_api::FailRequest {
            spot_id: b.clone(),
            error: Some("moved".into()),
            retriable: Some(true),
            ..Default::default()
        };
        app.client.fail(id, &req).await.unwrap();
    }
    let back = app.client.claim(&a, 10).await.unwrap();
    assert_eq!(back.len(), 3, "{back:?}");

    let batch = BatchReportRequest {
        spot_id: a.clone(),
        reports: vec![
            complete(&ids[0], 0.5),               // done
            complete(&ids[1], 0.5),               // already completed
            fail(&ids[2], true),                  // retry
            fail(&ids[3], false),                 // permanent
            fail(&ids[4], true),                  // already terminal
            complete("task-does-not-exist", 0.5), // 404
            complete(&held_by_b, 0.5),            // 409 wrong holder
            complete(&cancelled, 0.5),            // 409 cancelled
        ],
    };
    EveryOutcome {
        a,
        b,
        ids,
        held_by_b,
        batch,
    }
}

#[tokio::test]
async fn every_outcome_in_one_batch_is_answered_as_its_own_route_would() {
    let app = spawn_app().await;
    let EveryOutcome {
        b,
        ids,
        held_by_b,
        batch,
        ..
    } = every_outcome(&app).await;
    let answered = app.client.report_batch(&batch).await.unwrap().results;
    let seen: Vec<_> = answered.iter().map(short).collect();
    assert_eq!(seen, EVERY_ANSWER);
    let order: Vec<&str> = answered.iter().map(|r| r.task_id.as_str()).collect();
    let sent: Vec<&str> = batch.reports.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(order, sent, "results come in the order sent");
    assert_eq!(answered[5].error.as_deref(), Some("task not found"));

    // Each change is stored; the refusals changed nothing.
    let task = |id: &str| {
        let client = app.client.clone();
        let id = id.to_string();
        async move { client.task(&id).await.unwrap() }
    };
    assert_eq!(task(&ids[0]).await.status, "DONE");
    assert_eq!(task(&ids[0]).await.fopt, Some(0.5));
    assert_eq!(task(&ids[2]).await.status, "NEW");
    assert_eq!(task(&ids[3]).await.status, "FAILED");
    assert_eq!(task(&held_by_b).await.status, "RUNNING");
    assert_eq!(
        task(&held_by_b).await.assigned_to.as_deref(),
        Some(b.as_str())
    );

    // The same batch again is idempotent: every report gets the answer a repeat gets.
    let repeated = app.client.report_batch(&batch).await.unwrap().results;
    let seen: Vec<_> = repeated.iter().map(short).collect();
    assert_eq!(seen[0], (200, true, Some("already completed"), None));
    assert_eq!(seen[2], (200, true, Some("already reported"), Some(true)));
    assert_eq!(seen[3], (200, true, Some("already terminal"), None));
    app.finish().await;
}

#[tokio::test]
async fn a_batch_is_checked_before_anything_is_written() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/report",
            json!({"spotId": spot, "reports": []}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("between 1 and 1000"),
        "{body}"
    );
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/report",
            json!({"spotId": spot, "reports": [{"taskId": "t", "outcome": "finish"}]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_FIELD")),
        "{body}"
    );
    app.finish().await;
}
