//! The commands a user meets in their first hour, through the built binary against a real
//! server: `drover status`, `drover task ID`, `drover completions SHELL`, the watch's word when
//! no worker is UP, and user errors that never print a backtrace.
//!
//! Tasks are moved along through the typed client, as an agent would (hello, claim, complete or
//! fail), so no agent process is needed.

use crate::helpers::{
    EVENT_DEADLINE, EXIT_DEADLINE, Launch, ServerProcess, against, completion, drover,
    drover_command, eventually, find_tool, free_port, hello, missing_part, run_to_exit,
};
use drover_api::{CreateJobRequest, FailRequest};
use drover_client::Client;
use serde_json::{Value, json};

/// Creates a job of `n` tasks (`seed` 1..=n) whose command needs nothing installed.
async fn create_job(client: &Client, n: i64) -> String {
    let request = CreateJobRequest {
        name: Some("overview".into()),
        command: Some(vec!["true".into(), "{seed}".into()]),
        parameters: Some(
            json!({ "seed": (1..=n).collect::<Vec<_>>() })
                .as_object()
                .unwrap()
                .clone(),
        ),
        ..Default::default()
    };
    client
        .create_job(&request)
        .await
        .expect("create job")
        .job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_version_health_leader_nodes_jobs_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new()).await;
    let client = server.client();
    create_job(&client, 4).await;
    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);

    let run = against(&server, d, "status", &["status"]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    for expected in [
        format!("version  {}", env!("CARGO_PKG_VERSION")),
        "health   healthy".to_string(),
        "(this replica)".to_string(),
        "nodes    1 UP".to_string(),
        "0 PENDING, 1 RUNNING, 0 COMPLETED, 0 FAILED, 0 CANCELLED".to_string(),
        "tasks    3 waiting, 1 running".to_string(),
    ] {
        assert!(run.stdout.contains(&expected), "no {expected:?} in:\n{run}");
    }

    let run = against(&server, d, "status-json", &["status", "--output", "json"]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let o: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(o["serverVersion"], env!("CARGO_PKG_VERSION"), "{o}");
    assert_eq!(o["health"], "healthy", "{o}");
    assert_eq!(o["leader"], o["replicaId"], "{o}");
    assert_eq!(o["nodes"], json!({"UP": 1}), "{o}");
    assert_eq!(o["jobs"]["RUNNING"], 1, "{o}");
    assert_eq!(o["jobs"]["COMPLETED"], 0, "{o}");
    assert_eq!(o["tasksWaiting"], 3, "{o}");
    assert_eq!(o["tasksRunning"], 1, "{o}");

    let run = against(&server, d, "status-csv", &["status", "--output", "csv"]).await;
    assert_eq!(run.status.code(), Some(2), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_shows_one_task_with_its_whole_error_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new()).await;
    let client = server.client();
    let job = create_job(&client, 2).await;
    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 2).await.expect("claim");
    assert_eq!(claimed.len(), 2);

    // A traceback longer than any table cell, over several lines.
    let deep = "x".repeat(300);
    let error = format!(
        "exit status 1\nTraceback (most recent call last):\n  File \"run.py\", line 9\n{deep}\n\
         ValueError: the last line matters most"
    );
    client
        .fail(
            &claimed[0].id,
            &FailRequest {
                spot_id: spot.clone(),
                error: Some(error.clone()),
                retriable: Some(false),
                attempt: None,
            },
        )
        .await
        .expect("fail");
    let mut done = completion(&spot, 0.25);
    done.output = Some("step 1\nstep 2\nconverged\n".into());
    client
        .complete(&claimed[1].id, &done)
        .await
        .expect("complete");

    let run = against(&server, d, "failed", &["task", &claimed[0].id]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    for expected in [
        claimed[0].id.as_str(),
        job.as_str(),
        "FAILED",
        "1 of at most",
        spot.as_str(),
        "error:\nexit status 1\nTraceback",
        deep.as_str(),
        "ValueError: the last line matters most",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }

    let run = against(&server, d, "done", &["task", &claimed[1].id]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    for expected in [
        "DONE",
        "fopt",
        "0.25",
        "output:\nstep 1\nstep 2\nconverged",
        "result:",
        "\"converged\": true",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }

    let run = against(
        &server,
        d,
        "json",
        &["task", &claimed[0].id, "--output", "json"],
    )
    .await;
    let task: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(task["lastError"], error, "{run}");

    let run = against(&server, d, "unknown", &["task", "task-nope"]).await;
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(run.stderr.contains("error: no task task-nope on"), "{run}");
    assert!(run.stderr.contains("drover job tasks JOB"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_scripts_the_shells_accept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = drover(d, "bash", &["completions", "bash"], &[]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    assert!(!run.stdout.trim().is_empty(), "{run}");
    for command in [
        "submit",
        "status",
        "task",
        "nodes",
        "journal",
        "completions",
    ] {
        assert!(run.stdout.contains(command), "no {command:?} in:\n{run}");
    }
    let Some(bash) = find_tool("bash") else {
        missing_part(
            "completions_are_scripts_the_shells_accept",
            "bash is not installed",
        );
    };
    let script = d.join("drover.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    let check = std::process::Command::new(bash)
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run bash -n");
    assert!(
        check.status.success(),
        "bash -n refused the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    for shell in ["zsh", "fish", "elvish", "powershell", "BASH"] {
        let run = drover(d, shell, &["completions", shell], &[]).await;
        assert_eq!(run.status.code(), Some(0), "{run}");
        assert!(run.stdout.contains("submit"), "{shell}: {run}");
    }
    let run = drover(d, "tcsh", &["completions", "tcsh"], &[]).await;
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert!(run.stderr.contains("possible values"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_says_when_no_worker_is_up_to_run_the_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new()).await;
    let client = server.client();
    let job = create_job(&client, 2).await;

    let mut cmd = drover_command(d);
    cmd.args(["job", "watch", &job, "--interval", "100ms"])
        .env("DROVER_SERVER", server.base_url());
    let dir_path = d.to_path_buf();
    let watch =
        tokio::task::spawn_blocking(move || run_to_exit(cmd, &dir_path, "watch", EXIT_DEADLINE));
    let stderr = d.join("watch.stderr");
    eventually(
        "the watch to say no worker is UP",
        EVENT_DEADLINE,
        || async {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            text.contains("waiting: no worker is UP (drover nodes lists them)")
                .then_some(())
        },
    )
    .await;

    // A worker arrives and does the work: the watch ends as usual.
    let spot = hello(&client).await;
    for task in client.claim(&spot, 2).await.expect("claim") {
        client
            .complete(&task.id, &completion(&spot, 1.0))
            .await
            .expect("complete");
    }
    let run = watch.await.unwrap();
    assert_eq!(run.status.code(), Some(0), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_never_print_a_backtrace_even_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProcess::start(d, Launch::new()).await;
    let url = server.base_url();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(d.join("bad.toml"), "prority = 1\n").unwrap();
    let cases: [(&str, &[&str], i32); 7] = [
        (
            "job-status",
            &["job", "status", "job-nope", "--server", &url],
            3,
        ),
        ("task", &["task", "task-nope", "--server", &url], 3),
        ("watch", &["job", "watch", "job-nope", "--server", &url], 3),
        ("unreachable", &["nodes", "--server", &nowhere], 3),
        ("bad-file", &["submit", "bad.toml", "--server", &url], 2),
        (
            "missing-file",
            &["submit", "none.toml", "--server", &url],
            2,
        ),
        ("no-such-command", &["job", "show", "nope"], 2),
    ];
    for backtrace in ["1", "full"] {
        for (name, args, code) in cases {
            let env = [("RUST_BACKTRACE", backtrace), ("RUST_LIB_BACKTRACE", "1")];
            let run = drover(d, &format!("{name}-{backtrace}"), args, &env).await;
            assert_eq!(run.status.code(), Some(code), "{name}: {run}");
            assert!(run.stderr.starts_with("error"), "{name}: {run}");
            for trace in [
                "backtrace",
                "panicked",
                "at src/",
                "at crates/",
                "RUST_BACKTRACE",
            ] {
                assert!(!run.stderr.contains(trace), "{name}: {trace:?} in:\n{run}");
            }
        }
    }
}
