//! `drover agent` end to end: a real server, real agent processes, real task commands.
//!
//! Each test states one promise of the agent: results come back parsed, failures are retried
//! then kept with their stderr, timeouts kill, a killed agent's tasks are finished by another
//! without any task completing twice, a server restart or data reset is ridden out, payload
//! values never reach a shell, and a stop drains before exiting.

use crate::helpers::*;
use drover_api::CreateJobRequest;
use drover_runners::process::alive;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Long enough for a slow machine to run a short sweep.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

fn job(body: Value) -> CreateJobRequest {
    serde_json::from_value(body).expect("a valid job request")
}

async fn fast_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(dir, Launch::new().args(FAST_REAPERS)).await
}

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sweep")
}

/// The README's quick start: a server, two agents, `drover submit` of the example sweep, then
/// every task DONE with a parsed objective and one CSV row per task.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_example_sweep_runs_to_the_end_on_two_agents() {
    if let Some(why) = missing_tool(&["python3"]) {
        missing_part("the_example_sweep_runs_to_the_end_on_two_agents", &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let _a = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "2"]);
    let _b = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "2"]);

    let mut submit = drover_command(dir.path());
    submit
        .arg("submit")
        .arg(example_dir().join("sweep.toml"))
        .args(["--server", &server.base_url(), "--output", "json"]);
    let submitted = run_to_exit(submit, dir.path(), "drover submit", EXIT_DEADLINE);
    assert!(submitted.status.success(), "{submitted}");
    let answer: Value = serde_json::from_str(&submitted.stdout).expect("JSON from submit");
    let job_id = answer["jobId"].as_str().expect("a job id").to_string();
    assert!(answer["totalTasks"].as_u64().unwrap() >= 24, "{answer}");

    let client = server.client();
    let done = job_reaches(&client, &job_id, "COMPLETED", JOB_DEADLINE).await;
    let tasks = client.all_tasks(&job_id, None).await.unwrap();
    assert_eq!(tasks.len() as u64, done.total_tasks);
    for t in &tasks {
        assert_eq!(t.status, "DONE", "{t:?}");
        assert!(t.fopt.is_some_and(f64::is_finite), "no parsed fopt: {t:?}");
        assert!(t.iter.is_some(), "no parsed iter: {t:?}");
        let result: Value = serde_json::from_str(t.result_json.as_deref().unwrap()).unwrap();
        assert_eq!(result["algorithm"], t.payload["algorithm"], "{t:?}");
        assert!(
            t.output.as_deref().unwrap_or("").contains("iteration"),
            "the progress the program printed is kept: {t:?}"
        );
    }
    let csv = client.results_csv(&job_id).await.unwrap();
    assert_eq!(
        csv.lines().count(),
        tasks.len() + 1,
        "a header and one row per task:\n{csv}"
    );
    assert_counts_match_tasks(&client, &job_id).await;
}

#[tokio::test]
async fn a_failing_command_is_retried_then_failed_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let _agent = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "2"]);
    let client = server.client();
    let retried = client
        .create_job(&job(json!({
            "parameters": {"x": [1]},
            "command": ["sh", "-c", "echo \"attempt $DROVER_ATTEMPT failed\" >&2; exit 3"],
            "maxAttempts": 3
        })))
        .await
        .unwrap();
    let permanent = client
        .create_job(&job(json!({
            "parameters": {"x": [1]},
            "command": ["sh", "-c", "exit 4"],
            "maxAttempts": 3,
            "retryOnFailure": false
        })))
        .await
        .unwrap();

    job_reaches(&client, &retried.job_id, "FAILED", JOB_DEADLINE).await;
    let task = &client.all_tasks(&retried.job_id, None).await.unwrap()[0];
    assert_eq!(task.attempt, 3, "every attempt was used: {task:?}");
    let error = task.last_error.as_deref().unwrap();
    assert!(error.starts_with("exited with code 3"), "{error}");
    assert!(
        error.contains("attempt 3 failed"),
        "the stderr tail: {error}"
    );

    job_reaches(&client, &permanent.job_id, "FAILED", JOB_DEADLINE).await;
    let task = &client.all_tasks(&permanent.job_id, None).await.unwrap()[0];
    assert_eq!(task.attempt, 1, "no retry when the job says so: {task:?}");
    assert!(
        task.last_error
            .as_deref()
            .unwrap()
            .starts_with("exited with code 4")
    );
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let _agent = AgentProcess::start(dir.path(), &server.base_url(), &[]);
    let client = server.client();
    let pid_file = dir.path().join("task.pid");
    let timed = client
        .create_job(&job(json!({
            "parameters": {"x": [1]},
            "shared": {"pidFile": pid_file.to_string_lossy()},
            "command": ["sh", "-c", "echo $$ > \"$1\"; exec sleep 300", "sh", "{pidFile}"],
            "maxAttempts": 1,
            "taskTimeoutSeconds": 1
        })))
        .await
        .unwrap();
    job_reaches(&client, &timed.job_id, "FAILED", JOB_DEADLINE).await;
    let task = &client.all_tasks(&timed.job_id, None).await.unwrap()[0];
    assert_eq!(
        task.last_error.as_deref(),
        Some("killed after the task timeout (1s)"),
        "the agent's account, not the reaper's: {task:?}"
    );
    let pid = read_pid(&pid_file).expect("the task wrote its pid");
    eventually(
        "the timed-out process to be gone",
        EVENT_DEADLINE,
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

/// Payload values reach the program as one argument each, exactly as given: no shell splits,
/// expands or runs them.
#[tokio::test]
async fn payload_values_arrive_as_single_literal_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let _agent = AgentProcess::start(dir.path(), &server.base_url(), &[]);
    let client = server.client();
    let marker = dir.path().join("injected");
    let marker = marker.to_string_lossy();
    let values = [
        "two words".to_string(),
        "\"double\" and 'single' quotes".to_string(),
        format!("x; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        "first line\nsecond line".to_string(),
        "*".to_string(),
    ];
    let tasks: Vec<Value> = values.iter().map(|v| json!({ "v": v })).collect();
    let created = client
        .create_job(&job(json!({
            "tasks": tasks,
            // printf repeats its format per argument: a split value would show two brackets.
            "command": ["printf", "[%s]", "{v}"]
        })))
        .await
        .unwrap();
    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    for t in client.all_tasks(&created.job_id, None).await.unwrap() {
        let value = t.payload["v"].as_str().unwrap();
        assert_eq!(t.output.as_deref(), Some(format!("[{value}]").as_str()));
    }
    assert!(
        !Path::new(marker.as_ref()).exists(),
        "a payload value ran as a command"
    );
}

/// A job of `n` tasks that each sleep `secs`, then print a result.
fn sleepy(n: i64, secs: f64) -> CreateJobRequest {
    job(json!({
        "parameters": {"x": {"min": 1, "max": n}},
        "command": ["sh", "-c", "sleep \"$1\"; echo \"{{\\\"fopt\\\": $2}}\"", "sh", secs.to_string(), "{x}"],
        "maxAttempts": 5
    }))
}

/// Invariant 1 end to end: `kill -9` of an agent mid-sweep; its runs die with it, its tasks are
/// taken back after the heartbeat timeout and finished by the other agent, and no task is
/// completed twice.
#[tokio::test]
async fn a_killed_agents_tasks_are_finished_by_another_and_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let client = server.client();
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    // First attempts run until killed; later ones finish at once. So the first attempts can
    // only end by dying with their agent.
    let created = client
        .create_job(&job(json!({
            "parameters": {"x": {"min": 1, "max": 3}},
            "shared": {"pidDir": pids.to_string_lossy()},
            "command": ["sh", "-c",
                        "echo $$ > \"$1/$2-$3.pid\"; if [ \"$3\" = 1 ]; then exec sleep 300; fi",
                        "sh", "{pidDir}", "{taskId}", "{attempt}"],
            "maxAttempts": 5
        })))
        .await
        .unwrap();
    let mut doomed = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "3"]);
    eventually(
        "the first agent to hold every task",
        EVENT_DEADLINE,
        || async {
            let j = client.job(&created.job_id).await.ok()?;
            (j.running_tasks == 3).then_some(())
        },
    )
    .await;
    let held: Vec<String> = client
        .all_tasks(&created.job_id, Some("RUNNING"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    // Every held run has started (a claimed task's run starts after the agent reads its job,
    // so on a loaded machine the kill could otherwise come first) before the agent is killed.
    let mut runs = Vec::new();
    for id in &held {
        runs.push(
            eventually(
                "the run to have written its pid",
                EVENT_DEADLINE,
                || async { read_pid(&pids.join(format!("{id}-1.pid"))) },
            )
            .await,
        );
    }
    doomed.kill9();
    for pid in runs {
        eventually(
            "the killed agent's run to die with it",
            EVENT_DEADLINE,
            || async { (!alive(pid)).then_some(()) },
        )
        .await;
    }
    let _survivor = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "3"]);

    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    for id in &held {
        let t = client.task(id).await.unwrap();
        assert!(
            t.attempt >= 2,
            "a task of the killed agent ran again: {t:?}"
        );
    }
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    let twice: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'COMPLETED'
             GROUP BY task_id HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "some task was completed by two attempts");
    assert_counts_match_tasks(&client, &created.job_id).await;
}

/// The server goes away mid-sweep and comes back on the same port and database: agents keep
/// their tasks running, deliver the reports they held, and finish the sweep.
#[tokio::test]
async fn agents_ride_out_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = fast_server(dir.path()).await;
    let port = server.port();
    let client = server.client();
    // A claim the server commits just as it is killed never reaches its agent; its tasks come
    // back when their lease ends, so the lease is short (the runs take 0.5 s).
    let mut job = sleepy(12, 0.5);
    job.task_timeout_seconds = Some(10);
    let created = client.create_job(&job).await.unwrap();
    let a = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "2"]);
    let _b = AgentProcess::start(dir.path(), &server.base_url(), &["--slots", "2"]);
    eventually("some tasks to finish", EVENT_DEADLINE, || async {
        let j = client.job(&created.job_id).await.ok()?;
        (j.completed_tasks >= 2).then_some(())
    })
    .await;
    server.kill9();
    a.wait_for_log("lost the server").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server = ServerProcess::start_on(dir.path(), Launch::new().args(FAST_REAPERS), port).await;
    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    a.wait_for_log("server reachable again").await;
    assert_counts_match_tasks(&client, &created.job_id).await;
}

/// A server that lost its data no longer knows the agent's spot: the agent registers again and
/// goes on working.
#[tokio::test]
async fn an_agent_registers_again_after_a_data_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = fast_server(dir.path()).await;
    let port = server.port();
    let agent = AgentProcess::start(dir.path(), &server.base_url(), &[]);
    agent.wait_for_log("registered").await;
    server.kill9();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.db_path().display()));
    }
    let server = ServerProcess::start_on(dir.path(), Launch::new().args(FAST_REAPERS), port).await;
    agent.wait_for_log("registering again").await;
    let client = server.client();
    let created = client.create_job(&sleepy(2, 0.1)).await.unwrap();
    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
}

/// With several server URLs the agent uses the one that answers; the agent's key reaches the
/// server but never the task.
#[tokio::test]
async fn an_agent_fails_over_to_a_live_server_and_keeps_its_key_from_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().args(["--agent-key", "agent-secret", "--api-key", "api-secret"]),
    )
    .await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut agent = AgentProcess::start_with_env(
        dir.path(),
        &format!("{dead},{}", server.base_url()),
        &[],
        &[("DROVER_AGENT_KEY", "agent-secret")],
    );
    let client = server.client().with_api_key("api-secret");
    let created = client
        .create_job(&job(json!({
            "parameters": {"x": [1]},
            "command": ["sh", "-c", "echo \"key=${{DROVER_AGENT_KEY:-none}} task=$DROVER_TASK_ID\""]
        })))
        .await
        .unwrap();
    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    let task = &client.all_tasks(&created.job_id, None).await.unwrap()[0];
    assert_eq!(
        task.output.as_deref(),
        Some(format!("key=none task={}\n", task.id).as_str())
    );
    assert!(agent.terminate().success(), "{}", agent.log());
}

/// SIGTERM: no new claims; the tasks claimed ahead but not started are handed back at once for
/// a retry; running tasks finish and are reported before the agent exits.
#[tokio::test]
async fn sigterm_drains_running_tasks_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let client = server.client();
    let created = client.create_job(&sleepy(5, 2.0)).await.unwrap();
    let mut agent = AgentProcess::start(
        dir.path(),
        &server.base_url(),
        &["--slots", "2", "--claim-ahead", "2"],
    );
    eventually(
        "two tasks to run and two to wait",
        EVENT_DEADLINE,
        || async {
            let j = client.job(&created.job_id).await.ok()?;
            (j.running_tasks == 4).then_some(())
        },
    )
    .await;
    let status = agent.terminate();
    assert!(status.success(), "{status}: {}", agent.log());
    let j = client.job(&created.job_id).await.unwrap();
    assert_eq!(
        (j.completed_tasks, j.running_tasks, j.pending_tasks),
        (2, 0, 3),
        "both running tasks reported, the two queued handed back, the fifth never claimed: {j:?}"
    );
    let handed_back: Vec<_> = client
        .all_tasks(&created.job_id, Some("NEW"))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.attempt == 1)
        .collect();
    assert_eq!(handed_back.len(), 2, "{handed_back:?}");
    for t in handed_back {
        assert_eq!(
            t.last_error.as_deref(),
            Some("stopped: the agent shut down before the task started"),
            "{t:?}"
        );
    }
}

/// A second signal does not wait: running tasks are stopped and handed back as retriable.
#[tokio::test]
async fn a_second_signal_hands_running_tasks_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let client = server.client();
    let created = client.create_job(&sleepy(1, 300.0)).await.unwrap();
    let mut agent = AgentProcess::start(dir.path(), &server.base_url(), &[]);
    eventually("the task to run", EVENT_DEADLINE, || async {
        let j = client.job(&created.job_id).await.ok()?;
        (j.running_tasks == 1).then_some(())
    })
    .await;
    agent.signal(libc::SIGTERM);
    agent.wait_for_log("stopping: no new tasks").await;
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", agent.log());
    let task = &client.all_tasks(&created.job_id, None).await.unwrap()[0];
    assert_eq!(task.status, "NEW", "handed back for a retry: {task:?}");
    assert!(
        task.last_error
            .as_deref()
            .unwrap()
            .starts_with("stopped: the agent shut down"),
        "{task:?}"
    );
}

/// An agent with the wrong key stops at once and says what to fix, instead of retrying forever.
#[tokio::test]
async fn a_wrong_agent_key_stops_the_agent_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().args(["--agent-key", "right", "--api-key", "api"]),
    )
    .await;
    let mut agent = AgentProcess::start(dir.path(), &server.base_url(), &["--key", "wrong"]);
    let status = agent.wait_exit();
    assert!(!status.success(), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("the server refused the agent key") && log.contains("DROVER_AGENT_KEY"),
        "{log}"
    );
}

/// Claim-ahead and batched reports: many short tasks through one agent that keeps tasks
/// waiting beyond its slots and reports in batches with its next claim. Every task is DONE on
/// its first attempt, each claimed once, and the agent counted each report once.
#[tokio::test]
async fn many_short_tasks_run_once_each_with_claim_ahead_and_batched_reports() {
    let dir = tempfile::tempdir().unwrap();
    let server = fast_server(dir.path()).await;
    let client = server.client();
    let n = 400;
    let created = client
        .create_job(&job(json!({
            "parameters": {"x": {"min": 1, "max": n}},
            "command": ["true"],
            "maxAttempts": 1
        })))
        .await
        .unwrap();
    let mut agent = AgentProcess::start(
        dir.path(),
        &server.base_url(),
        &["--slots", "2", "--claim-ahead", "6"],
    );
    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    assert_counts_match_tasks(&client, &created.job_id).await;
    let tasks = client.all_tasks(&created.job_id, None).await.unwrap();
    assert_eq!(tasks.len(), n as usize);
    assert!(
        tasks.iter().all(|t| t.status == "DONE" && t.attempt == 1),
        "every task done on its first attempt"
    );
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    let attempts: i64 = db
        .query_row("SELECT count(*) FROM task_attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, n, "each task claimed once");

    assert!(agent.terminate().success(), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains(&format!("completed={n} failed=0 refused=0 lost=0")),
        "the agent's own count: {log}"
    );
}
