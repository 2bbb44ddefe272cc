//! The client commands (`submit`, `job ...`, `nodes`) against a real server: what they print,
//! and the exit statuses scripts rely on (0 ok, 1 job ended FAILED or CANCELLED, 2 bad usage or
//! job file, 3 server refused or unreachable).
//!
//! No agent runs here: the tests move tasks along themselves, through the typed client, as an
//! agent would (hello, claim, complete or fail).

use crate::helpers::{
    EVENT_DEADLINE, EXIT_DEADLINE, Finished, Launch, ServerProcess, against, completion, drover,
    drover_command, eventually, free_port, hello, run_to_exit,
};
use drover_api::{
    FailRequest, HelloRequest, Job, JobList, ResultsResponse, SpotsResponse, TaskList,
};
use drover_client::Client;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A sweep of four tasks whose command needs nothing installed.
const FOUR_TASKS: &str = r#"
name = "cli test"
command = ["true", "{seed}"]
task_timeout = "10m"
[parameters]
seed = [1, 2, 3, 4]
"#;

fn exit_code(run: &Finished) -> Option<i32> {
    run.status.code()
}

/// Writes a job file at `dir/name` and returns its path.
fn job_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Submits FOUR_TASKS through the CLI and returns the job id.
async fn submit_four(server: &ServerProcess, dir: &Path, name: &str) -> String {
    let file = job_file(dir, &format!("{name}.toml"), FOUR_TASKS);
    let run = against(
        server,
        dir,
        name,
        &["submit", file.to_str().unwrap(), "--output", "json"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let created: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(created["totalTasks"], 4, "{run}");
    created["jobId"].as_str().expect("a job id").to_string()
}

/// Claims up to `n` tasks for a new spot and completes them; returns how many it completed.
async fn complete_some(client: &Client, n: u32) -> usize {
    let spot = hello(client).await;
    let claimed = client.claim(&spot, n).await.expect("claim");
    for (i, task) in claimed.iter().enumerate() {
        client
            .complete(&task.id, &completion(&spot, i as f64 / 10.0))
            .await
            .expect("complete");
    }
    claimed.len()
}

/// Waits until a file written by a running command contains `needle`.
async fn wait_for_text(path: &Path, needle: &str) -> String {
    eventually(
        &format!("{needle:?} in {}", path.display()),
        EVENT_DEADLINE,
        || async {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.contains(needle).then_some(text)
        },
    )
    .await
}

/// Starts `drover job watch ID` in the background; await the handle for how it ended.
fn watch_in_background(
    server: &ServerProcess,
    dir: &Path,
    name: &str,
    id: &str,
) -> tokio::task::JoinHandle<Finished> {
    let mut cmd = drover_command(dir);
    cmd.args(["job", "watch", id, "--interval", "100ms"])
        .env("DROVER_SERVER", server.base_url());
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || run_to_exit(cmd, &dir, &name, EXIT_DEADLINE))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_prints_the_job_and_resolves_command_paths_against_the_job_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    // The file lives in a subdirectory; the command runs in `dir`, so a path resolved against
    // the working directory instead of the file's would show.
    let file = job_file(
        dir.path(),
        "jobs/sweep.toml",
        r#"
name = "paths"
command = ["./run.sh", "--seed", "{seed}", "--out=./x"]
[parameters]
seed = [1, 2, 3]
"#,
    );
    let run = against(
        &server,
        dir.path(),
        "submit",
        &["submit", "jobs/sweep.toml"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains("3 tasks"), "{run}");
    assert!(run.stdout.contains("(paths)"), "{run}");
    let id = run
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("job-"))
        .map(|w| w.trim_end_matches(':'))
        .unwrap_or_else(|| panic!("no job id in:\n{run}"))
        .to_string();
    assert!(
        run.stderr.contains(&format!("drover job watch {id}")),
        "{run}"
    );

    let job = server.client().job(&id).await.unwrap();
    assert_eq!(job.total_tasks, 3);
    let jobs_dir = std::path::absolute(file.parent().unwrap()).unwrap();
    assert_eq!(
        job.command.unwrap(),
        [
            jobs_dir.join("run.sh").to_str().unwrap(),
            "--seed",
            "{seed}",
            "--out=./x"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_commands_show_a_job_its_tasks_and_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let client = server.client();
    let id = submit_four(&server, dir.path(), "submit").await;
    assert_eq!(complete_some(&client, 2).await, 2);

    let d = dir.path();
    let run = against(&server, d, "list", &["job", "list"]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains(&id), "{run}");
    assert!(run.stdout.contains("RUNNING"), "{run}");
    assert!(run.stdout.contains("cli test"), "{run}");

    let run = against(&server, d, "list-json", &["job", "list", "-o", "json"]).await;
    let list: JobList = serde_json::from_str(&run.stdout).expect("a job list");
    assert_eq!(list.jobs.len(), 1, "{run}");
    assert_eq!(list.jobs[0].completed_tasks, 2);
    // Statuses are written as the server names them, in either case.
    let run = against(
        &server,
        d,
        "list-completed",
        &["job", "list", "--status", "completed", "-o", "json"],
    )
    .await;
    let list: JobList = serde_json::from_str(&run.stdout).expect("a job list");
    assert!(list.jobs.is_empty(), "{run}");
    let run = against(&server, d, "list-csv", &["job", "list", "-o", "csv"]).await;
    assert_eq!(run.stdout.lines().count(), 2, "{run}");
    assert!(run.stdout.starts_with("id,name,status,"), "{run}");

    let run = against(&server, d, "status", &["job", "status", &id]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains("RUNNING"), "{run}");
    assert!(run.stdout.contains("2/4 finished"), "{run}");
    assert!(run.stdout.contains("true {seed}"), "{run}");
    let run = against(
        &server,
        d,
        "status-json",
        &["job", "status", &id, "-o", "json"],
    )
    .await;
    let job: Job = serde_json::from_str(&run.stdout).expect("a job");
    assert_eq!((job.completed_tasks, job.running_tasks), (2, 0));

    let run = against(&server, d, "tasks", &["job", "tasks", &id, "-o", "json"]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let tasks: TaskList = serde_json::from_str(&run.stdout).expect("a task list");
    assert_eq!(tasks.tasks.len(), 4, "{run}");
    let done = tasks.tasks.iter().filter(|t| t.status == "DONE").count();
    assert_eq!(done, 2, "{run}");
    let run = against(
        &server,
        d,
        "tasks-new",
        &["job", "tasks", &id, "--status", "pending", "-o", "json"],
    )
    .await;
    let tasks: TaskList = serde_json::from_str(&run.stdout).expect("a task list");
    assert_eq!(tasks.tasks.len(), 2, "{run}");
    let run = against(&server, d, "tasks-table", &["job", "tasks", &id]).await;
    assert!(run.stdout.contains("seed=1"), "{run}");
    assert!(run.stdout.contains("DONE"), "{run}");
    let run = against(&server, d, "tasks-csv", &["job", "tasks", &id, "-o", "csv"]).await;
    assert_eq!(run.stdout.lines().count(), 5, "{run}");

    assert_eq!(complete_some(&client, 10).await, 2);
    let run = against(
        &server,
        d,
        "results-csv",
        &["job", "results", &id, "-o", "csv"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let mut reader = csv::Reader::from_reader(run.stdout.as_bytes());
    let headers = reader.headers().expect("a header row").clone();
    assert_eq!(&headers[0], "taskId", "{run}");
    assert!(headers.iter().any(|h| h == "seed"), "{run}");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 4, "one row per task:\n{run}");

    let run = against(
        &server,
        d,
        "results-json",
        &["job", "results", &id, "-o", "json"],
    )
    .await;
    let results: ResultsResponse = serde_json::from_str(&run.stdout).expect("results");
    assert_eq!(results.results.len(), 4, "{run}");
    assert_eq!(results.total_completed, 4, "{run}");
    let run = against(&server, d, "results", &["job", "results", &id]).await;
    for result in &results.results {
        assert!(run.stdout.contains(&result.task_id), "{run}");
    }
    assert!(run.stdout.contains("SEED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_the_registered_spots() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let d = dir.path();
    let run = against(&server, d, "nodes-none", &["nodes"]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains("no spots"), "{run}");

    let spot = server
        .client()
        .hello(&HelloRequest {
            ip_address: "127.0.0.1".into(),
            zone: Some("lab-1".into()),
            labels: Some(json!({"gpu": "a100"}).as_object().unwrap().clone()),
            total_cores: Some(8),
            ..Default::default()
        })
        .await
        .unwrap()
        .spot_id;

    let run = against(&server, d, "nodes-json", &["nodes", "--output", "json"]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let spots: SpotsResponse = serde_json::from_str(&run.stdout).expect("a spot list");
    assert_eq!(spots.spots.len(), 1, "{run}");
    assert_eq!(spots.spots[0].id, spot);
    assert_eq!(spots.spots[0].zone.as_deref(), Some("lab-1"));

    let run = against(&server, d, "nodes", &["nodes"]).await;
    for expected in [
        spot.as_str(),
        "127.0.0.1",
        "UP",
        "lab-1",
        "gpu=a100",
        "LAST HEARTBEAT",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }
    let run = against(&server, d, "nodes-csv", &["nodes", "-o", "csv"]).await;
    assert_eq!(run.stdout.lines().count(), 2, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_drain_and_undrain_a_spot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let d = dir.path();
    let client = server.client();
    let spot = client
        .hello(&HelloRequest {
            ip_address: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .spot_id;

    let run = against(&server, d, "drain", &["nodes", "drain", &spot]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(
        run.stdout.contains(&format!("spot {spot} is DRAINING")),
        "{run}"
    );
    assert!(run.stdout.contains("drover nodes undrain"), "{run}");
    let run = against(&server, d, "nodes", &["nodes"]).await;
    assert!(run.stdout.contains("DRAINING"), "{run}");
    assert_eq!(client.spots().await.unwrap()[0].status, "DRAINING");

    let run = against(
        &server,
        d,
        "undrain",
        &["nodes", "undrain", &spot, "-o", "json"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let undrained: drover_api::Spot = serde_json::from_str(&run.stdout).expect("a spot");
    assert_eq!(
        (undrained.id.as_str(), undrained.status.as_str()),
        (spot.as_str(), "UP")
    );

    // An unknown spot is the server's refusal (exit 3, its code); a list format is usage (2).
    let run = against(
        &server,
        d,
        "drain-unknown",
        &["nodes", "drain", "spot-nope"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(run.stderr.contains("SPOT_NOT_FOUND"), "{run}");
    let run = against(
        &server,
        d,
        "drain-csv",
        &["nodes", "drain", &spot, "-o", "csv"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(2), "{run}");
    let run = against(&server, d, "drain-no-id", &["nodes", "drain"]).await;
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert_eq!(client.spots().await.unwrap()[0].status, "UP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_0_once_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let client = server.client();
    let id = submit_four(&server, dir.path(), "submit").await;

    let watch = watch_in_background(&server, dir.path(), "watch", &id);
    // It follows the job while it runs, rather than only reading its end.
    let progress = wait_for_text(&dir.path().join("watch.stderr"), "0/4 finished").await;
    assert!(progress.contains("pending 4"), "{progress}");
    assert_eq!(complete_some(&client, 10).await, 4);

    let run = watch.await.unwrap();
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(
        run.stdout
            .contains(&format!("job {id} COMPLETED: 4 tasks done")),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_follows_the_new_job_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let client = server.client();
    job_file(dir.path(), "job.toml", FOUR_TASKS);
    let mut cmd = drover_command(dir.path());
    cmd.args(["submit", "job.toml", "--watch", "--interval", "100ms"])
        .env("DROVER_SERVER", server.base_url());
    let d = dir.path().to_path_buf();
    let watch = tokio::task::spawn_blocking(move || run_to_exit(cmd, &d, "submit", EXIT_DEADLINE));

    wait_for_text(&dir.path().join("submit.stderr"), "0/4 finished").await;
    assert_eq!(complete_some(&client, 10).await, 4);
    let run = watch.await.unwrap();
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains("submitted job job-"), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_1_when_the_job_fails_and_points_at_the_failed_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let client = server.client();
    let id = submit_four(&server, dir.path(), "submit").await;

    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let answer = client
        .fail(
            &claimed[0].id,
            &FailRequest {
                spot_id: spot.clone(),
                error: Some("exit status 7: bad input".into()),
                retriable: Some(false),
                attempt: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.will_retry, Some(false));
    for task in &claimed[1..] {
        client
            .complete(&task.id, &completion(&spot, 1.0))
            .await
            .unwrap();
    }

    let run = against(&server, dir.path(), "watch", &["job", "watch", &id]).await;
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(
        run.stdout
            .contains(&format!("job {id} FAILED: 1 of 4 tasks failed")),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&format!("drover job tasks {id} --status FAILED")),
        "{run}"
    );

    // And that command shows the failure's reason.
    let run = against(
        &server,
        dir.path(),
        "failed-tasks",
        &["job", "tasks", &id, "--status", "FAILED"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains(&claimed[0].id), "{run}");
    assert!(run.stdout.contains("exit status 7: bad input"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cancels_and_watch_exits_1_for_a_cancelled_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let d = dir.path();
    let id = submit_four(&server, d, "submit").await;

    let run = against(&server, d, "cancel", &["job", "cancel", &id]).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stdout.contains("CANCELLED: 4 tasks cancelled"), "{run}");
    // Cancelling again is harmless.
    let run = against(
        &server,
        d,
        "cancel-again",
        &["job", "cancel", &id, "-o", "json"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let job: Job = serde_json::from_str(&run.stdout).expect("a job");
    assert_eq!(job.status, "CANCELLED");

    let run = against(&server, d, "watch", &["job", "watch", &id]).await;
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.contains(&format!("job {id} CANCELLED")), "{run}");

    // A job that already ended COMPLETED cannot be cancelled: the server's refusal, exit 3.
    let done = submit_four(&server, d, "submit-2").await;
    assert_eq!(complete_some(&server.client(), 10).await, 4);
    let run = against(&server, d, "cancel-done", &["job", "cancel", &done]).await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(run.stderr.contains("JOB_FINISHED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_job_file_exits_2_naming_the_key_or_line_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nothing listens here: had the command sent anything, it would exit 3, not 2.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (
            "unknown-key",
            "name = \"x\"\ncommand = [\"true\"]\nprority = 1\n",
            &["prority", "line 3", "did you mean `priority`?"][..],
        ),
        ("syntax", "name = \"x\nseed = 1\n", &["line 1"][..]),
        (
            "both-timeouts",
            "task_timeout = \"1m\"\ntask_timeout_seconds = 60\n",
            &["task_timeout and task_timeout_seconds"][..],
        ),
        (
            "bad-duration",
            "task_timeout = \"1500ms\"\n",
            &["task_timeout:", "whole number"][..],
        ),
        (
            "bad-step",
            "[parameters]\nseed = { min = 1, max = 5, step = 0 }\n",
            &["parameters.seed.step"][..],
        ),
        (
            "json-type",
            "{\"maxAttempts\": \"three\"}",
            &["maxAttempts", "line 1"][..],
        ),
    ];
    for (name, text, expected) in cases {
        let file = job_file(d, &format!("{name}.toml"), text);
        let run = drover(
            d,
            name,
            &["submit", file.to_str().unwrap(), "--server", &nowhere],
            &[],
        )
        .await;
        assert_eq!(exit_code(&run), Some(2), "{name}: {run}");
        assert!(run.stderr.starts_with("error: "), "{name}: {run}");
        assert!(
            run.stderr.contains(&format!("{name}.toml")),
            "{name}: {run}"
        );
        for e in expected {
            assert!(run.stderr.contains(e), "{name}: no {e:?} in\n{run}");
        }
    }
    let run = drover(
        d,
        "missing",
        &["submit", "nope.toml", "--server", &nowhere],
        &[],
    )
    .await;
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert!(run.stderr.contains("nope.toml"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_that_makes_no_sense_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    job_file(d, "job.toml", FOUR_TASKS);
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "status-csv",
            &["job", "status", "job-x", "-o", "csv"],
            "--output csv",
        ),
        (
            "submit-csv",
            &["submit", "job.toml", "-o", "csv"],
            "--output csv",
        ),
        (
            "cancel-csv",
            &["job", "cancel", "job-x", "-o", "csv"],
            "--output csv",
        ),
        (
            "interval",
            &["job", "watch", "job-x", "--interval", "soon"],
            "--interval",
        ),
        (
            "bad-url",
            &["job", "list", "--server", "localhost:8080"],
            "http://",
        ),
    ];
    for (name, args, expected) in cases {
        let run = drover(d, name, args, &[]).await;
        assert_eq!(exit_code(&run), Some(2), "{name}: {run}");
        assert!(run.stderr.contains(expected), "{name}: {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3_and_names_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("http://127.0.0.1:{}", free_port());
    job_file(d, "job.toml", FOUR_TASKS);

    let run = drover(d, "list", &["job", "list"], &[("DROVER_SERVER", &url)]).await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the drover server at {url}")),
        "{run}"
    );
    assert!(run.stderr.contains("--server"), "{run}");
    assert!(run.stderr.contains("DROVER_SERVER"), "{run}");

    for (name, args) in [
        ("submit", &["submit", "job.toml", "--server", &url][..]),
        ("watch", &["job", "watch", "job-x", "--server", &url][..]),
        ("nodes", &["nodes", "--server", &url][..]),
    ] {
        let run = drover(d, name, args, &[]).await;
        assert_eq!(exit_code(&run), Some(3), "{name}: {run}");
        assert!(run.stderr.contains(&url), "{name}: {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_an_api_key_refuses_a_submit_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new().args(["--api-key", "s3cret-key"])).await;
    job_file(d, "job.toml", FOUR_TASKS);

    let run = against(&server, d, "no-key", &["submit", "job.toml"]).await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(run.stderr.contains("401 UNAUTHORIZED"), "{run}");
    assert!(run.stderr.contains("--api-key"), "{run}");
    let run = against(
        &server,
        d,
        "wrong-key",
        &["submit", "job.toml", "--api-key", "nope"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(3), "{run}");

    let run = against(
        &server,
        d,
        "flag",
        &["submit", "job.toml", "--api-key", "s3cret-key"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    let url = server.base_url();
    let env = [
        ("DROVER_SERVER", url.as_str()),
        ("DROVER_API_KEY", "s3cret-key"),
    ];
    let run = drover(d, "env", &["submit", "job.toml"], &env).await;
    assert_eq!(exit_code(&run), Some(0), "{run}");
    // Reading needs the key too (issue 10, finding 2).
    let run = against(&server, d, "list", &["job", "list", "-o", "json"]).await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    let run = against(
        &server,
        d,
        "list",
        &["job", "list", "-o", "json", "--api-key", "s3cret-key"],
    )
    .await;
    let list: JobList = serde_json::from_str(&run.stdout).expect("a job list");
    assert_eq!(list.jobs.len(), 2, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_s_refusals_are_printed_with_their_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new()).await;
    job_file(
        d,
        "job.toml",
        "command = [\"echo\", \"{nope}\"]\n[parameters]\nseed = [1]\n",
    );
    // A placeholder no task can fill is the job file's fault: it is caught before sending,
    // by the same rule the server applies, and the message names the file.
    let run = against(&server, d, "placeholder", &["submit", "job.toml"]).await;
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("in the job file job.toml: command[1]: placeholder {nope}"),
        "{run}"
    );
    let jobs = server.client().jobs(&Default::default()).await.unwrap();
    assert!(jobs.jobs.is_empty(), "nothing was submitted: {jobs:?}");

    let run = against(&server, d, "unknown-job", &["job", "status", "job-missing"]).await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(run.stderr.contains("404 JOB_NOT_FOUND"), "{run}");
    let run = against(
        &server,
        d,
        "unknown-watch",
        &["job", "watch", "job-missing"],
    )
    .await;
    assert_eq!(exit_code(&run), Some(3), "{run}");
    assert!(run.stderr.contains("JOB_NOT_FOUND"), "{run}");
}

/// A server started by hand on a given port, so that it can take over from one that died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rides_out_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = ServerProcess::start(d, Launch::new()).await;
    let port = server.port();
    let id = submit_four(&server, d, "submit").await;

    let watch = watch_in_background(&server, d, "watch", &id);
    let stderr = d.join("watch.stderr");
    wait_for_text(&stderr, "0/4 finished").await;
    server.kill9();
    wait_for_text(&stderr, "retrying").await;

    let again = ServerProcess::start_on(d, Launch::new(), port).await;
    let client = again.client();
    assert_eq!(complete_some(&client, 10).await, 4);

    let run = watch.await.unwrap();
    assert_eq!(exit_code(&run), Some(0), "{run}");
    assert!(run.stderr.contains("the server answers again"), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_teaches_the_client_commands_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = drover(d, "help", &["--help"], &[]).await;
    for command in ["submit", "job", "nodes"] {
        assert!(run.stdout.contains(command), "{run}");
    }
    let run = drover(d, "submit-help", &["submit", "--help"], &[]).await;
    assert!(run.status.success(), "{run}");
    for expected in [
        "Examples:",
        "[parameters]",
        "./ or ../",
        "DROVER_SERVER",
        "DROVER_API_KEY",
        "Exit status:",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }
    let run = drover(d, "job-help", &["job", "--help"], &[]).await;
    for expected in [
        "list",
        "status",
        "tasks",
        "results",
        "cancel",
        "watch",
        "Examples:",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }
    let run = drover(d, "nodes-help", &["nodes", "--help"], &[]).await;
    assert!(run.stdout.contains("Examples:"), "{run}");
    // `-h` stays short.
    let run = drover(d, "watch-h", &["job", "watch", "-h"], &[]).await;
    assert!(!run.stdout.contains("Examples:"), "{run}");
}
