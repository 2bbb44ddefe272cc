//! `/api/v1/jobs`: sweeps, job status, listing, cancellation, tasks and results.

use crate::helpers::{spawn_app, spawn_app_real_time};
use drover_api::{CompleteRequest, CreateJobRequest};
use drover_client::ListOptions;
use serde_json::{Value, json};

#[tokio::test]
async fn the_contract_example_expands_to_the_full_product() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({
                "jarPath": "/path/to/optimizer.jar",
                "mainClass": "com.example.OptRunner",
                "algorithms": ["PSO", "GA", "DE"],
                "iterations": {"min": 100, "max": 500, "step": 100},
                "agents": {"min": 10, "max": 50, "step": 10},
                "dimension": {"min": 2, "max": 10, "step": 2}
            }),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["totalTasks"], json!(375), "3 x 5 x 5 x 5");
    let job_id = body["jobId"].as_str().unwrap();
    assert!(job_id.starts_with("job-"));

    let job = app.client.job(job_id).await.unwrap();
    assert_eq!(
        (job.status.as_str(), job.total_tasks, job.completed_tasks),
        ("PENDING", 375, 0)
    );
    let tasks = app.client.all_tasks(job_id, None).await.unwrap();
    assert_eq!(tasks.len(), 375);
    assert_eq!(
        Value::Object(tasks[0].payload.clone()),
        json!({
            "jarPath": "/path/to/optimizer.jar",
            "mainClass": "com.example.OptRunner",
            "algorithm": "PSO", "iterations": 100, "agents": 10, "dimension": 2
        }),
        "each payload carries its parameters and the job's shared fields"
    );
    app.finish().await;
}

#[tokio::test]
async fn general_parameters_explicit_tasks_and_job_settings() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({
                "name": "rastrigin",
                "parameters": {"seed": [1, 2, 3], "w": {"min": 0.5, "max": 0.7, "step": 0.1}},
                "shared": {"function": "rastrigin"},
                "priority": 7, "maxAttempts": 5, "taskTimeoutSeconds": 90
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["totalTasks"], json!(9));
    let job = app
        .client
        .job(body["jobId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(job.name.as_deref(), Some("rastrigin"));
    assert_eq!(
        (job.priority, job.max_attempts, job.task_timeout_seconds),
        (7, 5, 90.0)
    );
    assert_eq!(job.parameters, vec!["seed", "w"]);
    let tasks = app.client.all_tasks(&job.id, None).await.unwrap();
    assert_eq!(
        Value::Object(tasks[8].payload.clone()),
        json!({"function": "rastrigin", "seed": 3, "w": 0.7})
    );
    assert_eq!(tasks[8].max_attempts, 5);

    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({"tasks": [{"file": "a.csv"}, {"file": "b.csv"}], "mainClass": "M"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let tasks = app
        .client
        .all_tasks(body["jobId"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(tasks[1].payload.clone()),
        json!({"mainClass": "M", "file": "b.csv"})
    );
    app.finish().await;
}

#[tokio::test]
async fn invalid_sweeps_are_refused_and_nothing_is_written() {
    let app = spawn_app_with_cap(100).await;
    let cases = [
        (
            json!({"iterations": {"min": 1, "max": 5, "step": 0}}),
            "INVALID_SWEEP",
            "iterations.step",
        ),
        (
            json!({"agents": {"min": 1, "max": 5, "step": -2}}),
            "INVALID_SWEEP",
            "agents.step",
        ),
        (
            json!({"dimension": {"min": 9, "max": 2, "step": 1}}),
            "INVALID_SWEEP",
            "min (9) must not be greater than max (2)",
        ),
        (json!({"algorithms": []}), "INVALID_SWEEP", "algorithms"),
        (
            json!({"parameters": {"x": {"min": 1, "max": 101}}}),
            "TOO_MANY_TASKS",
            "101 tasks, above the limit of 100",
        ),
        (
            json!({"algorithms": ["A", "B"], "parameters": {"x": {"min": 1, "max": 51}}}),
            "TOO_MANY_TASKS",
            "102",
        ),
        (
            json!({"algoritms": ["PSO"]}),
            "INVALID_FIELD",
            "unknown field `algoritms`",
        ),
        (
            json!({"iterations": {"min": "1", "max": 5}}),
            "INVALID_FIELD",
            "iterations.min",
        ),
        (
            json!({"iterations": {"min": 1, "max": 5, "stride": 1}}),
            "INVALID_FIELD",
            "stride",
        ),
        (json!({"maxAttempts": 0}), "INVALID_FIELD", "maxAttempts"),
        (json!({"maxAttempts": -1}), "INVALID_FIELD", "maxAttempts"),
        (
            json!({"taskTimeoutSeconds": 0}),
            "INVALID_FIELD",
            "taskTimeoutSeconds",
        ),
        (
            json!({"taskTimeoutSeconds": u64::MAX}),
            "INVALID_FIELD",
            "must be between 1 and 31536000",
        ),
        (json!({"tasks": []}), "INVALID_SWEEP", "tasks"),
        (
            json!({"tasks": [{}], "parameters": {"x": [1]}}),
            "INVALID_SWEEP",
            "not both",
        ),
        (json!({"priority": "high"}), "INVALID_FIELD", "priority"),
        (
            json!({"parameters": {"x": [1]}, "command": ["opt", "{y}"]}),
            "INVALID_FIELD",
            "command[1]: placeholder {y} is not a field of every task",
        ),
        (
            json!({"tasks": [{"y": 1}, {"z": 2}], "command": ["opt", "{y}"]}),
            "INVALID_FIELD",
            "command[1]",
        ),
        (
            json!({"parameters": {"x": [1]}, "command": []}),
            "INVALID_FIELD",
            "command",
        ),
        (
            json!({"parameters": {"x": [1]}, "command": ["opt", "{x"]}),
            "INVALID_FIELD",
            "never closed",
        ),
        (
            json!({"parameters": {"x": [1]}, "env": {"A": "1"}}),
            "INVALID_FIELD",
            "env: only applies to a job with a command",
        ),
        (
            json!({"parameters": {"x": [1]}, "command": ["opt"], "env": {"A=B": "1"}}),
            "INVALID_FIELD",
            "env.A=B",
        ),
    ];
    for (body, code, hint) in cases {
        let (status, answer) = app.post_json("/api/v1/jobs", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["success"], json!(false));
        assert_eq!(answer["code"], json!(code), "{body} -> {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(hint),
            "{body}: {message:?} should mention {hint:?}"
        );
    }
    assert!(
        app.client
            .jobs(&ListOptions::default())
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(app.store().ops.overview().await.unwrap().pending_tasks, 0);
    app.finish().await;
}

/// A job's command comes back with the job; a `jarPath`/`mainClass` job gets the Java default.
#[tokio::test]
async fn jobs_carry_the_command_agents_run() {
    let app = spawn_app().await;
    let job = app
        .create_job(
            2,
            json!({
                "command": ["opt", "--x={x}", "{taskId}", "{{literal}}"],
                "env": {"SEED": "{attempt}"},
                "retryOnFailure": false
            }),
        )
        .await;
    // Agents read the job with their spot's secret, and see its env values; anyone else sees
    // them redacted.
    let plain = app.client.job(&job.job_id).await.unwrap();
    assert_eq!(plain.env.unwrap()["SEED"], "***");
    let (spot, secret) = app.hello_with_secret().await;
    let agent = app.client.clone().with_spot_secret(spot, secret);
    let stored = agent.job(&job.job_id).await.unwrap();
    assert_eq!(
        stored.command,
        Some(vec![
            "opt".into(),
            "--x={x}".into(),
            "{taskId}".into(),
            "{{literal}}".into()
        ])
    );
    assert_eq!(stored.env.unwrap()["SEED"], "{attempt}");
    assert_eq!(stored.retry_on_failure, Some(false));

    let (status, answer) = app
        .post_json(
            "/api/v1/jobs",
            json!({"jarPath": "/opt/o.jar", "mainClass": "a.Main", "algorithms": ["PSO"]}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let java = app
        .client
        .job(answer["jobId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        java.command.unwrap(),
        [
            "java",
            "-cp",
            "{jarPath}",
            "{mainClass}",
            "--algorithm",
            "{algorithm}"
        ]
    );
    assert_eq!(java.retry_on_failure, Some(true));

    let plain = app.create_job(1, json!({})).await;
    assert_eq!(app.client.job(&plain.job_id).await.unwrap().command, None);
    app.finish().await;
}

async fn spawn_app_with_cap(cap: u64) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|c| c.max_tasks_per_job = cap).await
}

#[tokio::test]
async fn an_unknown_job_is_a_contract_404() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/jobs/job-nope",
        "/api/v1/jobs/job-nope/results",
        "/api/v1/jobs/job-nope/tasks",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["success"], json!(false));
        assert_eq!(body["error"], json!("job not found"));
        assert_eq!(body["code"], json!("JOB_NOT_FOUND"));
    }
    let (status, body) = app.get_json("/api/v1/tasks/task-nope").await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("task not found"))
    );
    app.finish().await;
}

#[tokio::test]
async fn job_status_follows_its_tasks() {
    let app = spawn_app().await;
    let job = app.create_job(2, json!({"maxAttempts": 1})).await;
    let spot = app.hello().await;
    let status = |app: &crate::helpers::TestApp| {
        let client = app.client.clone();
        let id = job.job_id.clone();
        async move { client.job(&id).await.unwrap().status }
    };
    assert_eq!(status(&app).await, "PENDING");
    let tasks = app.client.claim(&spot, 2).await.unwrap();
    assert_eq!(status(&app).await, "RUNNING");
    let done = CompleteRequest {
        spot_id: spot.clone(),
        fopt: Some(0.5),
        ..Default::default()
    };
    app.client.complete(&tasks[0].id, &done).await.unwrap();
    assert_eq!(status(&app).await, "RUNNING");
    let fail = drover_api::FailRequest {
        spot_id: spot.clone(),
        error: Some("x".into()),
        ..Default::default()
    };
    let answer = app.client.fail(&tasks[1].id, &fail).await.unwrap();
    assert_eq!(
        answer.will_retry,
        Some(false),
        "maxAttempts 1 leaves no retry"
    );
    let finished = app.client.job(&job.job_id).await.unwrap();
    assert_eq!(
        (
            finished.status.as_str(),
            finished.completed_tasks,
            finished.failed_tasks
        ),
        ("FAILED", 1, 1)
    );
    assert!(finished.finished_at.is_some());
    app.finish().await;
}

#[tokio::test]
async fn jobs_are_listed_newest_first_in_pages_and_by_status() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_job(1, json!({})).await.job_id);
    }
    let spot = app.hello().await;
    app.client.claim(&spot, 1).await.unwrap(); // the oldest job starts running

    let first = app
        .client
        .jobs(&ListOptions {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&ids[4], &ids[3]]
    );
    let rest = app
        .client
        .jobs(&ListOptions {
            limit: Some(10),
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.jobs.len(), 3);
    assert_eq!(rest.next_cursor, None);

    let running = app
        .client
        .jobs(&ListOptions {
            status: Some("running".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        running.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );

    let (status, body) = app.get_json("/api/v1/jobs?status=DONE").await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_QUERY"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("PENDING, RUNNING, COMPLETED, FAILED, CANCELLED")
    );
    let (status, _) = app.get_json("/api/v1/jobs?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = app.get_json("/api/v1/jobs?cursor=abc").await;
    assert_eq!(status, 400);
    app.finish().await;
}

#[tokio::test]
async fn cancel_stops_pending_and_running_tasks() {
    let app = spawn_app().await;
    let job = app.create_job(4, json!({})).await;
    let spot = app.hello().await;
    let tasks = app.client.claim(&spot, 2).await.unwrap();
    let done = CompleteRequest {
        spot_id: spot.clone(),
        fopt: Some(1.0),
        ..Default::default()
    };
    app.client.complete(&tasks[0].id, &done).await.unwrap();

    let cancelled = app.client.cancel_job(&job.job_id).await.unwrap();
    assert_eq!(cancelled.status, "CANCELLED");
    assert_eq!(
        (cancelled.cancelled_tasks, cancelled.completed_tasks),
        (3, 1)
    );
    // The running task's later report is refused, and nothing is handed out any more.
    let err = app.client.complete(&tasks[1].id, &done).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("TASK_CANCELLED"))
    );
    assert!(app.client.claim(&spot, 10).await.unwrap().is_empty());
    let cancelled_tasks = app
        .client
        .all_tasks(&job.job_id, Some("CANCELLED"))
        .await
        .unwrap();
    assert_eq!(cancelled_tasks.len(), 3);
    // Again: harmless.
    assert_eq!(
        app.client.cancel_job(&job.job_id).await.unwrap().status,
        "CANCELLED"
    );

    let finished = app.create_job(1, json!({})).await;
    let t = app.client.claim(&spot, 1).await.unwrap().remove(0);
    app.client.complete(&t.id, &done).await.unwrap();
    let err = app.client.cancel_job(&finished.job_id).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("JOB_FINISHED"))
    );
    let err = app.client.cancel_job("job-nope").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    app.finish().await;
}

#[tokio::test]
async fn tasks_are_listed_by_status_in_pages() {
    let app = spawn_app().await;
    let job = app.create_job(5, json!({})).await;
    let spot = app.hello().await;
    app.client.claim(&spot, 2).await.unwrap();
    let page = app
        .client
        .tasks(
            &job.job_id,
            &ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 2);
    assert!(page.next_cursor.is_some());
    let running = app
        .client
        .all_tasks(&job.job_id, Some("RUNNING"))
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    assert!(
        running
            .iter()
            .all(|t| t.assigned_to.as_deref() == Some(spot.as_str()) && t.attempt == 1)
    );
    assert_eq!(
        app.client
            .all_tasks(&job.job_id, Some("NEW"))
            .await
            .unwrap()
            .len(),
        3
    );
    let one = app.client.task(&running[0].id).await.unwrap();
    assert_eq!(one.status, "RUNNING");
    assert!(one.lease_expires_at.is_some());
    app.finish().await;
}

#[tokio::test]
async fn results_come_in_pages_and_as_csv() {
    let app = spawn_app().await;
    let job = app
        .create_job(3, json!({"algorithms": ["PSO"], "iterations": [100]}))
        .await;
    let spot = app.hello().await;
    let tasks = app.client.claim(&spot, 3).await.unwrap();
    for (i, t) in tasks.iter().enumerate().take(2) {
        let req = CompleteRequest {
            spot_id: spot.clone(),
            runtime_ms: Some(1000 + i as i64),
            iter: Some(100),
            fopt: Some(0.25 * i as f64),
            result_json: Some(json!("{\"note\": \"a, \\\"quoted\\\" value\"}")),
            output: Some(format!("run {i}\n")),
            attempt: None,
        };
        app.client.complete(&t.id, &req).await.unwrap();
    }

    let page = app
        .client
        .results(
            &job.job_id,
            &ListOptions {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total_completed, 2);
    assert_eq!(page.results.len(), 1);
    let r = &page.results[0];
    assert_eq!(
        (r.algorithm.clone(), r.iterations.clone()),
        (Some(json!("PSO")), Some(json!(100)))
    );
    assert_eq!(
        (r.fopt, r.runtime_ms, r.iter),
        (Some(0.0), Some(1000), Some(100))
    );
    assert_eq!(r.spot_id.as_deref(), Some(spot.as_str()));
    assert!(r.finished_at.is_some());
    let stored = app.client.task(&r.task_id).await.unwrap();
    assert_eq!(stored.output.as_deref(), Some("run 0\n"));
    let next = app
        .client
        .results(
            &job.job_id,
            &ListOptions {
                limit: Some(1),
                cursor: page.next_cursor,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(next.results.len(), 1);
    assert_eq!(next.next_cursor, None);

    let csv = app.client.results_csv(&job.job_id).await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "taskId",
            "algorithm",
            "iterations",
            "x",
            "fopt",
            "iter",
            "runtimeMs",
            "finishedAt",
            "spotId",
            "attempt",
            "resultJson"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "one row per DONE task");
    assert_eq!(&rows[1][1], "PSO");
    assert_eq!(&rows[1][4], "0.25");
    assert_eq!(
        &rows[1][10], "{\"note\": \"a, \\\"quoted\\\" value\"}",
        "quotes and commas survive"
    );

    let (status, body) = app
        .get_json(&format!("/api/v1/jobs/{}/results?format=xml", job.job_id))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_QUERY"))
    );
    app.finish().await;
}

#[tokio::test]
async fn committed_writes_are_counted_by_event_kind_and_the_job_keeps_its_sweep() {
    let app = spawn_app().await;
    let created = app.create_job(3, json!({})).await;
    let spot = app.hello().await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    for line in [
        "drover_store_events_total{kind=\"job_created\"} 1",
        "drover_store_events_total{kind=\"node_registered\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // The store's own write counters: both writes committed, in at most as many commits.
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    let (commits, writes) = (
        value("drover_store_commits_total"),
        value("drover_store_writes_total"),
    );
    assert!(
        writes >= 2 && (1..=writes).contains(&commits),
        "{commits} commits, {writes} writes"
    );
    // The job keeps the normalised sweep, not the request it came in.
    let job = app.store().jobs.get_job(&created.job_id).await.unwrap();
    assert!(job.spec["dimensions"].is_array(), "{}", job.spec);
    assert!(job.spec.get("parameters").is_none(), "{}", job.spec);
    assert!(!spot.is_empty());
}

/// A million-task sweep is written as its definition, so making one holds up nobody: a spot
/// that heartbeats and claims meanwhile, against a spot timeout far shorter than writing every
/// task would take, stays UP and is served. (Statuses are checked, never durations.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sweep_is_created_while_a_spot_heartbeats_and_claims() {
    let app = spawn_app_real_time(|c| {
        c.spot_timeout = std::time::Duration::from_secs(1);
        c.spot_reaper_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let spot = app.hello().await;
    let small = app.create_job(1000, json!({})).await;

    let client = app.client.clone();
    let creating = tokio::spawn(async move {
        let req: CreateJobRequest = serde_json::from_value(json!({
            "parameters": {"x": {"min": 1, "max": 1_000_000, "step": 1}},
            "priority": 1
        }))
        .unwrap();
        client.create_job(&req).await
    });
    let mut beat = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut claimed = Vec::new();
    let mut rounds = 0;
    // Until the sweep is made and the spot reaper has looked at the spot at least twice.
    let reaper_runs = || async {
        let workers = app.client.workers().await.unwrap();
        workers
            .iter()
            .find(|w| w.name == "spot-reaper")
            .unwrap()
            .runs
    };
    while rounds < 5 || !creating.is_finished() || reaper_runs().await < 2 {
        beat.tick().await;
        app.heartbeat(&spot).await;
        claimed.extend(app.client.claim(&spot, 1).await.unwrap());
        rounds += 1;
    }
    let big = creating.await.unwrap().unwrap();
    assert_eq!(big.total_tasks, 1_000_000);
    assert_eq!(claimed.len(), rounds, "every claim was served a task");

    // Once made, the sweep has the higher priority: its tasks come in index order.
    claimed.extend(app.client.claim(&spot, 3).await.unwrap());
    let from_big: Vec<_> = claimed
        .iter()
        .filter(|t| t.job_id == big.job_id)
        .map(|t| t.id.clone())
        .collect();
    let n = from_big.len() as u64;
    assert!(n >= 3);
    let expect: Vec<_> = (0..n)
        .map(|i| drover_core::ids::sweep_task_id(&big.job_id, i))
        .collect();
    assert_eq!(from_big, expect);
    let (_, spots) = app.get_json("/api/v1/spots").await;
    assert_eq!(spots["spots"][0]["status"], json!("UP"), "{spots}");
    // The spot reaper ran all along and never found the spot silent.
    let workers = app.client.workers().await.unwrap();
    let reaper = workers.iter().find(|w| w.name == "spot-reaper").unwrap();
    assert!(reaper.runs >= 2, "{reaper:?}");
    assert_eq!(
        reaper.totals.get("spots_down").copied().unwrap_or(0),
        0,
        "{reaper:?}"
    );
    let job = app.client.job(&big.job_id).await.unwrap();
    assert_eq!((job.pending_tasks, job.running_tasks), (1_000_000 - n, n));
    let task = app.client.task(&expect[2]).await.unwrap();
    assert_eq!(
        (task.status.as_str(), task.assigned_to),
        ("RUNNING", Some(spot.clone()))
    );
    let last = drover_core::ids::sweep_task_id(&big.job_id, 999_999);
    assert_eq!(app.client.task(&last).await.unwrap().status, "NEW");
    // Claims served before the sweep existed took the small job's tasks; how many depends on how
    // fast the sweep was made, so only their agreement with the job's counts is checked.
    let from_small = claimed.iter().filter(|t| t.job_id == small.job_id).count() as u64;
    assert_eq!(
        app.client.job(&small.job_id).await.unwrap().running_tasks,
        from_small
    );
    assert_eq!(app.store().ops.audit_job_counts().await.unwrap(), []);
    app.begin_shutdown();
    app.stopped().await;
}
