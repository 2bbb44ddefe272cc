//! The priority-queue contract's HTTP API: its curl examples as written, every body it
//! answers, priority order, the worker rules (holder, capacity, silence), bad input, and in
//! RabbitMQ mode (`priority_amqp.rs`) the broker side.

use crate::helpers::{TestApp, eventually, spawn, spawn_app, spawn_app_with};
use drover_api::CompleteRequest;
use serde_json::{Value, json};
use std::time::Duration;

impl TestApp {
    /// Registers a contract job of `priority`; asserts it was accepted.
    pub async fn register(&self, id: &str, priority: i64) {
        let (status, body) = self
            .post_json(
                "/api/jobs/register",
                json!({"id": id, "type": "calculate", "priority": priority, "payload": {"n": id}}),
            )
            .await;
        assert_eq!((status, &body["job_id"]), (202, &json!(id)), "{body}");
    }

    pub async fn worker_says(&self, job: &str, status: &str, worker: &str) -> (u16, Value) {
        self.put_json(
            &format!("/api/jobs/{job}/status"),
            json!({"status": status, "workerId": worker, "result": {"by": worker}}),
        )
        .await
    }

    /// A worker's heartbeat with `body`; asserts it was acknowledged.
    pub async fn worker_beats(&self, body: Value) {
        let (status, answer) = self.post_json("/api/workers/heartbeat", body).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// The contract's listing of one job.
    pub async fn contract_job(&self, id: &str) -> Value {
        let (status, body) = self.get_json("/api/jobs").await;
        assert_eq!(status, 200, "{body}");
        (body["jobs"].as_array().unwrap().iter())
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("no job {id} in {body}"))
            .clone()
    }

    pub async fn job_count(&self) -> u64 {
        self.get_json("/api/jobs").await.1["count"]
            .as_u64()
            .unwrap()
    }
}

/// Runs a curl command line as written in the contract, against this server's address.
async fn curl(app: &TestApp, command: &str) -> (u16, Value) {
    let command = command.replace("http://localhost:8081", &app.base);
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{command} -s -w '\\n%{{http_code}}'"))
        .output()
        .await
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text
        .trim_end()
        .rsplit_once('\n')
        .expect("curl's status line");
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

const REGISTER_EXAMPLE: &str = r#"curl -X POST http://localhost:8081/api/jobs/register \
  -H "Content-Type: application/json" \
  -d '{
    "id":"job-123",
    "type":"calculate",
    "priority":10,
    "payload":{"numbers":[1,2,3]}
  }'"#;

const UPDATE_EXAMPLE: &str = r#"curl -X PUT http://localhost:8081/api/jobs/job-123/status \
  -H "Content-Type: application/json" \
  -d '{
    "status":"completed",
    "workerId":"worker-001",
    "result":{"sum":6}
  }'"#;

const HEARTBEAT_EXAMPLE: &str = r#"curl -X POST http://localhost:8081/api/workers/heartbeat \
  -H "Content-Type: application/json" \
  -d '{
    "worker_id":"worker-001",
    "worker_type":"calculate",
    "capacity":10,
    "current_load":2
  }'"#;

#[tokio::test]
async fn the_contracts_curl_examples_work_as_written() {
    let app = spawn_app().await;
    assert_eq!(
        curl(&app, REGISTER_EXAMPLE).await,
        (202, json!({"status": "accepted", "job_id": "job-123"}))
    );
    assert_eq!(
        curl(&app, HEARTBEAT_EXAMPLE).await,
        (200, json!({"status": "acknowledged"}))
    );
    // The example's worker reports completion straight away: the job is taken as run by it.
    assert_eq!(
        curl(&app, UPDATE_EXAMPLE).await,
        (200, json!({"status": "updated"}))
    );
    let job = app.contract_job("job-123").await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["worker_id"], "worker-001");
    assert_eq!(job["result"], json!({"sum": 6}));
    assert_eq!(job["priority"], 10);
    assert_eq!(job["type"], "calculate");
    assert!(job["completed_at"].as_i64().unwrap() >= job["created_at"].as_i64().unwrap());
    // The job is a drover job too.
    let (_, jobs) = app.get_json("/api/v1/jobs").await;
    assert_eq!(jobs["jobs"][0]["name"], "job-123", "{jobs}");
}

#[tokio::test]
async fn every_route_answers_the_contracts_bodies() {
    let app = spawn_app().await;
    app.register("j1", 7).await;
    let job = app.contract_job("j1").await;
    assert_eq!(job["status"], "pending");
    assert_eq!(job["worker_id"], "none");
    assert_eq!(job["result"], Value::Null);
    assert_eq!(job["started_at"], Value::Null);
    for key in [
        "id",
        "type",
        "status",
        "priority",
        "worker_id",
        "result",
        "created_at",
        "started_at",
        "completed_at",
    ] {
        assert!(job.get(key).is_some(), "{key} missing from {job}");
    }
    let (status, body) = app.get_json("/api/jobs").await;
    assert_eq!((status, &body["count"]), (200, &json!(1)));

    // Both status routes, with the id in the path or in the body (`jobId` or `id`).
    let (status, body) = app.worker_says("j1", "running", "w1").await;
    assert_eq!((status, body), (200, json!({"status": "updated"})));
    let job = app.contract_job("j1").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("running"), &json!("w1"))
    );
    assert!(job["started_at"].is_i64());
    let (status, body) = app
        .post_json(
            "/api/jobs/status",
            json!({"jobId": "j1", "status": "completed", "worker_id": "w1", "result": 42}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"status": "updated"})));
    assert_eq!(app.contract_job("j1").await["result"], 42);
    // The id may also come as `id`: a repeat of the completion, answered the same.
    let (status, body) = app
        .post_json(
            "/api/jobs/status",
            json!({"id": "j1", "status": "completed", "workerId": "w1", "result": 42}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"status": "updated"})));

    app.register("j2", 1).await;
    let (status, body) = app.post_json("/api/jobs/j2/cancel", json!({})).await;
    assert_eq!((status, body), (200, json!({"status": "cancelled"})));
    assert_eq!(app.contract_job("j2").await["status"], "cancelled");

    let (status, body) = app
        .post_json(
            "/api/workers/heartbeat",
            json!({"workerId": "w2", "worker_type": "calculate", "currentLoad": 0}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"status": "acknowledged"})));

    let (status, health) = app.get_json("/api/health").await;
    assert_eq!((status, &health["status"]), (200, &json!("healthy")));
    assert!(health["timestamp"].as_i64().unwrap() > 0 && health["node"].is_string());

    let (status, raft) = app.get_json("/api/raft/status").await;
    assert_eq!(status, 200);
    assert_eq!(raft["role"], "leader", "one replica leads alone: {raft}");
    assert_eq!(raft["leader"], health["node"]);
    assert!(raft["term"].as_u64().unwrap() >= 1);

    let (status, cluster) = app.get_json("/api/cluster/status").await;
    assert_eq!(status, 200);
    assert_eq!(cluster["node"], health["node"]);
    assert_eq!(cluster["raft"], raft);
    assert_eq!(cluster["cluster"][0]["node"], health["node"], "{cluster}");
    assert_eq!(cluster["cluster"][0]["role"], "leader");

    let (status, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(metrics["jobs"], json!({"completed": 1, "cancelled": 1}));
    assert_eq!(metrics["classes"], json!({"medium": 1, "low": 1}));
    assert_eq!(
        metrics["finished_last_minute"], 1,
        "the cancelled one did not finish"
    );
    assert_eq!(
        metrics["queues"],
        json!({"job.high": 0, "job.medium": 0, "job.low": 0})
    );
    assert_eq!(metrics["workers"], json!({"up": 2}));
    assert_eq!(metrics["dispatch"], "native");
    assert!(metrics["timestamp"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn the_same_registration_twice_is_one_job_and_another_under_its_id_is_refused() {
    let app = spawn_app().await;
    app.register("dup", 5).await;
    app.register("dup", 5).await;
    assert_eq!(app.job_count().await, 1);
    let (status, body) = app
        .post_json(
            "/api/jobs/register",
            json!({"id": "dup", "type": "calculate", "priority": 5, "payload": {"other": 1}}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("job_exists")),
        "{body}"
    );
    assert_eq!(app.job_count().await, 1);
    // In drover's own API it is one job, named by the contract's id, from that contract.
    let (_, jobs) = app.get_json("/api/v1/jobs").await;
    let jobs = jobs["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        (&jobs[0]["name"], &jobs[0]["origin"]),
        (&json!("dup"), &json!("distriqueue"))
    );
}

#[tokio::test]
async fn one_worker_drains_high_then_medium_then_low_oldest_first() {
    let app = spawn_app().await;
    // 30 jobs of mixed priority, registered before any worker exists.
    let priorities = [1, 10, 5, 3, 12, 7, 0, 9, 10, 5];
    let mut expected: Vec<(u8, usize, String)> = Vec::new();
    for i in 0..30 {
        let p = priorities[i % priorities.len()] as i64;
        let id = format!("p{i:02}");
        app.register(&id, p).await;
        let rank = if p >= 10 {
            0
        } else if p >= 5 {
            1
        } else {
            2
        };
        expected.push((rank, i, id));
        app.advance(Duration::from_millis(5));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, _, id)| id).collect();

    // One drover agent takes them one at a time.
    let spot = app.hello().await;
    let mut order = Vec::new();
    loop {
        let claimed = app.client.claim(&spot, 1).await.unwrap();
        let Some(task) = claimed.into_iter().next() else {
            break;
        };
        let payload: Value = serde_json::from_str(&task.payload).unwrap();
        order.push(payload["id"].as_str().unwrap().to_string());
        let done: CompleteRequest =
            serde_json::from_value(json!({"spotId": spot, "resultJson": {"ok": true}})).unwrap();
        app.client.complete(&task.id, &done).await.unwrap();
    }
    assert_eq!(order, expected);
    let (_, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(metrics["jobs"], json!({"completed": 30}));
}

#[tokio::test]
async fn with_aging_a_waiting_low_job_climbs_past_younger_high_ones() {
    let app = spawn_app_with(|c| c.priority.aging = Some(Duration::from_secs(60))).await;
    let ager = app.state.priority_ager().expect("aging is on");
    app.register("old-low", 1).await;
    app.register("old-medium", 5).await;
    app.advance(Duration::from_secs(61));
    app.register("young-high", 10).await;
    app.register("young-low", 0).await;
    // One step past the deadline of low: the old low job is medium now, nothing else moves.
    assert_eq!(ager.age().await.unwrap(), 1);
    assert_eq!(
        ager.age().await.unwrap(),
        0,
        "a second step changes nothing"
    );
    app.advance(Duration::from_secs(60));
    // Two steps: both old jobs are due high; the young ones have waited one step only, and
    // the young low one becomes medium.
    assert_eq!(ager.age().await.unwrap(), 3);
    let (_, jobs) = app.get_json("/api/jobs?class=high").await;
    let mut high: Vec<_> = (jobs["jobs"].as_array().unwrap().iter())
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    high.sort();
    assert_eq!(high, ["old-low", "old-medium", "young-high"]);
    // The contract's own record keeps the priority it was registered with.
    assert_eq!(app.contract_job("old-low").await["priority"], 1);

    let spot = app.hello().await;
    let claimed = app.client.claim(&spot, 4).await.unwrap();
    let order: Vec<String> = claimed
        .iter()
        .map(|t| {
            serde_json::from_str::<Value>(&t.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    assert_eq!(order, ["old-low", "old-medium", "young-high", "young-low"]);
}

#[tokio::test]
async fn prometheus_text_counts_the_contracts_jobs_and_workers() {
    let app = spawn_app().await;
    let quiet = app.metrics_text().await;
    assert!(
        !quiet.contains("drover_priority_jobs{"),
        "a server that never served the contract counts nothing: {quiet}"
    );
    app.register("a", 10).await;
    app.register("b", 1).await;
    app.register("c", 3).await;
    app.worker_beats(json!({"worker_id": "w1", "worker_type": "t"}))
        .await;
    assert_eq!(app.worker_says("a", "running", "w1").await.0, 200);
    // A scrape starts a count in the background and shows the last one; the JSON snapshot
    // says the same.
    let expected = [
        r#"drover_priority_jobs{class="high",status="running"} 1"#,
        r#"drover_priority_jobs{class="low",status="pending"} 2"#,
        r#"drover_priority_workers{status="up"} 1"#,
        "drover_priority_finished_last_minute 0",
        // The queue depth per class: jobs waiting, every class shown.
        r#"drover_priority_queue_depth{class="high"} 0"#,
        r#"drover_priority_queue_depth{class="medium"} 0"#,
        r#"drover_priority_queue_depth{class="low"} 2"#,
    ];
    eventually(Duration::from_secs(10), "the gauges counted", || async {
        let text = app.metrics_text().await;
        expected.iter().all(|l| text.contains(l)).then_some(())
    })
    .await;
    let (_, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(metrics["jobs"], json!({"pending": 2, "running": 1}));
}

#[tokio::test]
async fn without_aging_no_job_ever_changes_class() {
    let app = spawn_app().await;
    assert!(app.state.priority_ager().is_none());
    app.register("low", 1).await;
    app.advance(Duration::from_secs(24 * 3600));
    let (_, jobs) = app.get_json("/api/jobs?class=low").await;
    assert_eq!(jobs["count"], 1);
}

#[tokio::test]
async fn only_the_worker_holding_a_job_may_report_it_and_repeats_change_nothing() {
    let app = spawn_app().await;
    app.register("h1", 10).await;
    assert_eq!(app.worker_says("h1", "running", "w1").await.0, 200);
    // A repeat is answered and changes nothing.
    assert_eq!(app.worker_says("h1", "running", "w1").await.0, 200);
    let (status, body) = app.worker_says("h1", "running", "w2").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("held_by_another_worker")),
        "{body}"
    );
    let (status, body) = app.worker_says("h1", "completed", "w2").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("not_holder")),
        "{body}"
    );
    assert_eq!(app.worker_says("h1", "completed", "w1").await.0, 200);
    assert_eq!(
        app.worker_says("h1", "completed", "w1").await.0,
        200,
        "a repeated completion"
    );
    let job = app.contract_job("h1").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("completed"), &json!("w1"))
    );
    assert_eq!(job["result"], json!({"by": "w1"}));
    let (status, body) = app.worker_says("h1", "running", "w1").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("job_finished")),
        "{body}"
    );
}

#[tokio::test]
async fn a_failed_job_is_retried_then_fails_for_good() {
    let app = spawn_app().await;
    let (status, _) = app
        .post_json(
            "/api/jobs/register",
            json!({"id": "f1", "type": "t", "max_retries": 1}),
        )
        .await;
    assert_eq!(status, 202);
    let fail = |w: &'static str| {
        let app = &app;
        async move {
            app.put_json(
                "/api/jobs/f1/status",
                json!({"status": "failed", "workerId": w, "errorMessage": "boom"}),
            )
            .await
        }
    };
    assert_eq!(app.worker_says("f1", "running", "w1").await.0, 200);
    assert_eq!(fail("w1").await.0, 200);
    let job = app.contract_job("f1").await;
    assert_eq!(
        (&job["status"], &job["retry_count"]),
        (&json!("pending"), &json!(1)),
        "{job}"
    );
    assert_eq!(app.worker_says("f1", "running", "w2").await.0, 200);
    assert_eq!(fail("w2").await.0, 200);
    let job = app.contract_job("f1").await;
    assert_eq!(
        (&job["status"], &job["error_message"]),
        (&json!("failed"), &json!("boom"))
    );
}

#[tokio::test]
async fn a_worker_is_never_given_more_jobs_than_its_capacity() {
    let app = spawn_app().await;
    app.worker_beats(json!({"worker_id": "small", "worker_type": "t", "capacity": 1}))
        .await;
    app.register("c1", 5).await;
    app.register("c2", 5).await;
    assert_eq!(app.worker_says("c1", "running", "small").await.0, 200);
    let (status, body) = app.worker_says("c2", "running", "small").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("worker_at_capacity")),
        "{body}"
    );
    assert_eq!(app.contract_job("c2").await["status"], "pending");
    assert_eq!(app.worker_says("c1", "completed", "small").await.0, 200);
    assert_eq!(app.worker_says("c2", "running", "small").await.0, 200);
}

/// The capacity a worker announces is kept on its node: another replica on the same database
/// caps the worker by it, and a change announced to one replica binds on the other once that
/// one's copy is ten seconds old (the contract's heartbeat period).
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_announced_to_one_replica_caps_the_worker_on_another() {
    let url = drover_pgtest::fresh_database().unwrap();
    let a = spawn(|c| c.store_url = url.clone(), true).await;
    let b = spawn(|c| c.store_url = url.clone(), true).await;
    let announce =
        |capacity: u32| json!({"worker_id": "small", "worker_type": "t", "capacity": capacity});
    a.worker_beats(announce(1)).await;
    a.register("r1", 5).await;
    a.register("r2", 5).await;
    assert_eq!(b.worker_says("r1", "running", "small").await.0, 200);
    let (status, body) = b.worker_says("r2", "running", "small").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("worker_at_capacity")),
        "{body}"
    );

    // Raised through b: a keeps its fresh copy for a while, then reads the node again.
    b.worker_beats(announce(2)).await;
    let (status, body) = a.worker_says("r2", "running", "small").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("worker_at_capacity"))
    );
    a.advance(Duration::from_secs(11));
    assert_eq!(a.worker_says("r2", "running", "small").await.0, 200);
}

#[tokio::test]
async fn a_silent_workers_job_is_requeued_and_finished_by_another() {
    let app = spawn_app().await;
    let beat = |w: &'static str| app.worker_beats(json!({"worker_id": w, "worker_type": "t"}));
    beat("w1").await;
    app.register("s1", 10).await;
    assert_eq!(app.worker_says("s1", "running", "w1").await.0, 200);
    // Its workers heartbeat every 10 s: 15 s of silence is past the spot timeout (10 s) but
    // not this contract's worker timeout (30 s), so nothing moves.
    app.advance(Duration::from_secs(15));
    app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(app.contract_job("s1").await["status"], "running");
    app.advance(Duration::from_secs(16));
    beat("w2").await;
    app.state.spot_reaper().reap().await.unwrap();
    let job = app.contract_job("s1").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("pending"), &json!("none")),
        "{job}"
    );
    let (_, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(metrics["workers"], json!({"down": 1, "up": 1}));
    // The job, redelivered, is taken over by the other worker; the silent one is fenced off.
    assert_eq!(app.worker_says("s1", "running", "w2").await.0, 200);
    let (status, _) = app.worker_says("s1", "completed", "w1").await;
    assert_eq!(status, 409);
    assert_eq!(app.worker_says("s1", "completed", "w2").await.0, 200);
    let job = app.contract_job("s1").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("completed"), &json!("w2"))
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_what_to_fix_and_nothing_written() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"id": "b", "priority": 5}),
            "missing_type",
            "type is required",
        ),
        (
            json!({"id": "b", "type": "t", "priority": "high"}),
            "invalid_priority",
            "integer",
        ),
        (
            json!({"id": "b", "type": "t", "priority": 2.5}),
            "invalid_priority",
            "integer",
        ),
        (
            json!({"id": "b", "type": "t", "payload": [1]}),
            "invalid_payload",
            "JSON object",
        ),
        (
            json!({"id": "b", "type": "t", "payload": {"blob": "x".repeat(70 * 1024)}}),
            "invalid_payload",
            "bytes",
        ),
    ];
    for (body, error, says) in cases {
        let (status, answer) = app.post_json("/api/jobs/register", body).await;
        assert_eq!((status, &answer["error"]), (400, &json!(error)), "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (status, answer) = app.post_raw("/api/jobs/register", "{not json").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_json")));
    assert_eq!(app.job_count().await, 0, "nothing was written");

    app.register("b", 5).await;
    let (status, answer) = app.worker_says("b", "done", "w1").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_status")));
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("running, completed or failed")
    );
    let (status, answer) = app
        .put_json("/api/jobs/b/status", json!({"status": "running"}))
        .await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_request")),
        "{answer}"
    );
    let (status, answer) = app.post_raw("/api/jobs/status", "[").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_request")));
    let (status, answer) = app.post_raw("/api/workers/heartbeat", "nope").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_request")));
    let job = app.contract_job("b").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("pending"), &json!("none"))
    );
    let (status, answer) = app.get_json("/api/jobs?class=urgent").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_query")));
    // A query that is not even of the right types is refused in the same JSON, not plain text.
    let (status, answer) = app.get_json("/api/jobs?limit=null").await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_query")),
        "{answer}"
    );
    let (status, answer) = app.post_json("/api/jobs/%ff/cancel", json!({})).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_request")),
        "{answer}"
    );
}

#[tokio::test]
async fn an_unknown_job_is_404_unless_the_lenient_setting_is_on() {
    let app = spawn_app().await;
    let (status, body) = app.worker_says("ghost", "running", "w1").await;
    assert_eq!((status, &body["error"]), (404, &json!("job_not_found")));
    let (status, _) = app.post_json("/api/jobs/ghost/cancel", json!({})).await;
    assert_eq!(status, 404);
    let lenient = spawn_app_with(|c| c.priority.lenient_unknown_jobs = true).await;
    let (status, body) = lenient.worker_says("ghost", "completed", "w1").await;
    assert_eq!((status, body), (200, json!({"status": "updated"})));
    assert_eq!(lenient.job_count().await, 0);
}

#[tokio::test]
async fn the_listing_filters_by_status_type_and_class_and_pages() {
    let app = spawn_app().await;
    for (id, p) in [("a", 10), ("b", 5), ("c", 1), ("d", 10)] {
        app.register(id, p).await;
    }
    assert_eq!(app.worker_says("a", "completed", "w1").await.0, 200);
    let ids = |body: &Value| -> Vec<String> {
        (body["jobs"].as_array().unwrap().iter())
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, high) = app.get_json("/api/jobs?class=high").await;
    assert_eq!(ids(&high), ["d", "a"], "newest first");
    let (_, pending) = app.get_json("/api/jobs?status=pending").await;
    assert_eq!(ids(&pending), ["d", "c", "b"]);
    let (_, typed) = app.get_json("/api/jobs?type=other").await;
    assert_eq!(typed["count"], 0);
    let (_, first) = app.get_json("/api/jobs?limit=3").await;
    assert_eq!(ids(&first), ["d", "c", "b"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get_json(&format!("/api/jobs?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(ids(&rest), ["a"]);
    assert!(rest.get("next_cursor").is_none());
}

#[tokio::test]
async fn the_contracts_api_and_metrics_listeners_can_have_ports_of_their_own() {
    use drover_server::{ListenerConfig, Surface};
    let app = crate::helpers::spawn(
        |c| {
            let any = || "127.0.0.1:0".parse().unwrap();
            c.listeners.push(ListenerConfig {
                addr: any(),
                surfaces: vec![Surface::Priority],
            });
            c.listeners.push(ListenerConfig {
                addr: any(),
                surfaces: vec![Surface::Metrics],
            });
        },
        true,
    )
    .await;
    let (api, metrics) = (&app.addrs[1].0, &app.addrs[2].0);
    let registered = app
        .http
        .post(format!("{api}/api/jobs/register"))
        .json(&json!({"id": "own-port", "type": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 202);
    let get = |url: String| {
        let http = app.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = get(format!("{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("drover_store_events_total"), "{text}");
    let (status, text) = get(format!("{metrics}/health")).await;
    assert_eq!((status, text.as_str()), (200, r#"{"status":"healthy"}"#));
    // Each listener serves its surfaces only; the main one serves the contract too, but never
    // the metrics listener's `/health`, which is the placement surface's there.
    assert_eq!(get(format!("{metrics}/api/jobs")).await.0, 404);
    assert_eq!(get(format!("{api}/api/v1/jobs")).await.0, 404);
    assert_eq!(app.job_count().await, 1);
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn two_replicas_on_postgres_serve_the_contract_alike_and_report_one_leader() {
    let url = drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to run against: {why}"));
    let first_url = url.clone();
    let a = crate::helpers::spawn(move |c| c.store_url = first_url, false).await;
    let b = crate::helpers::spawn(move |c| c.store_url = url, false).await;

    // Any replica serves any call: registered on one, run and reported through the other.
    a.register("pg-1", 10).await;
    b.register("pg-1", 10).await;
    assert_eq!(b.worker_says("pg-1", "running", "w1").await.0, 200);
    let (status, body) = a.worker_says("pg-1", "running", "w2").await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("held_by_another_worker"))
    );
    assert_eq!(a.worker_says("pg-1", "completed", "w1").await.0, 200);
    for replica in [&a, &b] {
        let job = replica.contract_job("pg-1").await;
        assert_eq!(
            (&job["status"], &job["worker_id"]),
            (&json!("completed"), &json!("w1"))
        );
        assert_eq!(replica.job_count().await, 1);
    }

    // One leader between them; both report its term, and the follower names it.
    let (_, ra) = a.get_json("/api/raft/status").await;
    let (_, rb) = b.get_json("/api/raft/status").await;
    let (leader, follower) = if ra["role"] == "leader" {
        (ra, rb)
    } else {
        (rb, ra)
    };
    assert_eq!(leader["role"], "leader");
    assert_eq!(follower["role"], "follower", "{follower}");
    assert_eq!(follower["term"], leader["term"]);
    assert_eq!(follower["leader"], leader["leader"]);
    let members = eventually(
        Duration::from_secs(10),
        "both replicas as members",
        || async {
            let (_, c) = a.get_json("/api/cluster/status").await;
            (c["cluster"].as_array().unwrap().len() == 2).then_some(c)
        },
    )
    .await;
    let roles: Vec<&str> = (members["cluster"].as_array().unwrap().iter())
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"leader") && roles.contains(&"follower"),
        "{members}"
    );
}
