//! The contract's section 5 troubleshooting SQL, run unchanged with the `sqlite3` command-line
//! tool against the live database file while the server runs.

use crate::helpers::{
    EXIT_DEADLINE, Finished, Launch, ServerProcess, assert_counts_match_tasks, completion,
    contract, hello, missing_part, missing_tool, run_to_exit,
};
use drover_api::CreateJobRequest;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// The fenced `sql` blocks of section 5, in order.
fn troubleshooting_blocks(contract: &str) -> Vec<String> {
    let start = contract
        .find("## 5. Troubleshooting")
        .expect("the contract has a section 5");
    let mut blocks = Vec::new();
    let mut rest = &contract[start..];
    while let Some(open) = rest.find("```sql\n") {
        let body = &rest[open + "```sql\n".len()..];
        let close = body.find("```").expect("a closed sql block");
        blocks.push(body[..close].to_string());
        rest = &body[close + 3..];
    }
    blocks
}

/// Splits a block into its statements, each exactly as written (comment lines dropped).
fn statements(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(
        current.trim().is_empty(),
        "an unterminated statement: {current}"
    );
    out
}

/// Runs `sql` with `sqlite3` on `db`, fed on standard input as if pasted at its prompt;
/// `.timeout` makes it wait for the server's write lock like any other writer instead of
/// failing at once.
fn sqlite3(dir: &Path, db: &Path, name: &str, sql: &str) -> Finished {
    let input = dir.join(format!("{name}.sql"));
    std::fs::write(&input, sql).expect("write the SQL file");
    let mut cmd = Command::new("sqlite3");
    cmd.args(["-bail", "-json", "-cmd", ".timeout 10000"])
        .arg(db)
        .stdin(std::fs::File::open(&input).expect("open the SQL file"))
        .current_dir(dir);
    let run = run_to_exit(cmd, dir, name, EXIT_DEADLINE);
    assert!(run.status.success(), "sqlite3 failed on {sql}:\n{run}");
    assert!(
        run.stderr.trim().is_empty(),
        "sqlite3 complained on {sql}:\n{run}"
    );
    run
}

/// Rows of a `-json` answer (no output means no rows).
fn rows(run: &Finished) -> Vec<Value> {
    if run.stdout.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&run.stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("not a JSON array of rows ({other:?}):\n{run}"),
    }
}

fn sqlite3_missing(dir: &Path) -> Option<String> {
    if let Some(reason) = missing_tool(&["sqlite3"]) {
        return Some(reason);
    }
    let mut probe = Command::new("sqlite3");
    probe.args(["-json", ":memory:", "SELECT 1 AS one;"]);
    let run = run_to_exit(probe, dir, "sqlite3-probe", EXIT_DEADLINE);
    if !run.status.success() || !run.stdout.contains("\"one\"") {
        return Some(format!("this sqlite3 has no -json output mode:\n{run}"));
    }
    None
}

#[cfg_attr(
    any(missing_sqlite3_json, missing_contract),
    ignore = "needs sqlite3 with -json and the contract beside the checkout (../shared), missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_sql_inspects_the_live_database_and_its_force_reset_frees_the_task() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(reason) = sqlite3_missing(dir.path()) {
        missing_part("troubleshooting SQL", &reason);
    }
    let contract = contract();
    let blocks = troubleshooting_blocks(&contract);
    assert_eq!(blocks.len(), 2, "section 5 has two sql blocks: {blocks:?}");
    let selects = statements(&blocks[0]);
    assert_eq!(selects.len(), 3, "three SELECTs: {selects:?}");
    let resets = statements(&blocks[1]);
    assert_eq!(resets.len(), 1, "one UPDATE: {resets:?}");
    let reset_template = &resets[0];
    assert!(reset_template.contains("'task-xxx'"), "{reset_template}");

    // A job of three tasks, one of them claimed and running.
    let server =
        ServerProcess::start(dir.path(), Launch::new().args(["--spot-timeout", "1h"])).await;
    let client = server.client();
    let job_id = client
        .create_job(&CreateJobRequest {
            algorithms: Some(json!(["PSO", "GA", "DE"])),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    let spot = hello(&client).await;
    let claimed = client.claim(&spot, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let task_id = claimed[0].id.clone();
    let db = server.db_path().to_path_buf();

    // The whole block, as an operator would paste it.
    sqlite3(dir.path(), &db, "sql-block", &blocks[0]);

    // -- Check stuck tasks
    let stuck = rows(&sqlite3(dir.path(), &db, "sql-stuck", &selects[0]));
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0]["id"], json!(task_id));
    assert_eq!(stuck[0]["status"], json!("RUNNING"));
    assert_eq!(stuck[0]["assigned_to"], json!(spot));
    assert!(stuck[0]["started_at"].is_string(), "{stuck:?}");

    // -- Check job progress
    let jobs = rows(&sqlite3(dir.path(), &db, "sql-jobs", &selects[1]));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["id"], json!(job_id));
    assert_eq!(jobs[0]["status"], json!("RUNNING"));
    assert_eq!(jobs[0]["total_tasks"], json!(3));
    assert_eq!(jobs[0]["completed_tasks"], json!(0));
    assert_eq!(jobs[0]["failed_tasks"], json!(0));

    // -- Check SPOT health
    let spots = rows(&sqlite3(dir.path(), &db, "sql-spots", &selects[2]));
    assert_eq!(spots.len(), 1, "{spots:?}");
    assert_eq!(spots[0]["id"], json!(spot));
    assert_eq!(spots[0]["status"], json!("UP"));
    assert!(spots[0]["last_heartbeat"].is_string(), "{spots:?}");

    // Force reset, with the real task id in place of the contract's placeholder.
    let before = client.job(&job_id).await.unwrap();
    let reset = reset_template.replace("task-xxx", &task_id);
    sqlite3(dir.path(), &db, "sql-reset", &reset);

    let after = client.job(&job_id).await.unwrap();
    assert_eq!(after.pending_tasks, before.pending_tasks + 1, "{after:?}");
    assert_eq!(after.running_tasks, before.running_tasks - 1, "{after:?}");
    assert_eq!(after.total_tasks, 3);
    assert_counts_match_tasks(&client, &job_id).await;
    let task = client.task(&task_id).await.unwrap();
    assert_eq!(task.status, "NEW", "{task:?}");
    assert_eq!(task.assigned_to, None, "{task:?}");
    assert_eq!(task.started_at, None, "{task:?}");
    let health = client.health().await.unwrap();
    assert_eq!((health.pending_tasks, health.running_tasks), (3, 0));
    let stuck = rows(&sqlite3(dir.path(), &db, "sql-stuck-after", &selects[0]));
    assert!(stuck.is_empty(), "{stuck:?}");

    // The freed task is handed out again, as a new attempt, and can be finished.
    let again = client.claim(&spot, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, task_id);
    assert_eq!(again[0].attempt, 2);
    let answer = client
        .complete(&task_id, &completion(&spot, 0.125))
        .await
        .unwrap();
    assert!(answer.success);
    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.completed_tasks, 1, "{job:?}");
    assert_eq!(job.pending_tasks, 2, "{job:?}");
    assert_counts_match_tasks(&client, &job_id).await;
}

#[cfg_attr(
    missing_contract,
    ignore = "needs the contract beside the checkout (../shared), missing where this was built"
)]
#[test]
fn section_5_has_three_selects_and_one_reset() {
    let contract = contract();
    let blocks = troubleshooting_blocks(&contract);
    assert_eq!(blocks.len(), 2);
    let selects = statements(&blocks[0]);
    assert!(
        selects.iter().all(|s| s.starts_with("SELECT ")),
        "{selects:?}"
    );
    assert!(statements(&blocks[1])[0].starts_with("UPDATE tasks SET status = 'NEW'"));
}

/// Invariant: a job is listed under the status it shows. The contract's force reset changes a
/// task behind the server's back; the job's counts follow (a trigger keeps them), and so must
/// the status that `GET /api/v1/jobs?status=` filters on.
#[cfg_attr(
    any(missing_sqlite3_json, missing_contract),
    ignore = "needs sqlite3 with -json and the contract beside the checkout (../shared), missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_force_reset_the_job_is_listed_under_the_status_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(reason) = sqlite3_missing(dir.path()) {
        missing_part("force reset and job list", &reason);
    }
    let contract = contract();
    let reset_template = statements(&troubleshooting_blocks(&contract)[1]).remove(0);

    let server =
        ServerProcess::start(dir.path(), Launch::new().args(["--spot-timeout", "1h"])).await;
    let client = server.client();
    let job_id = client
        .create_job(&CreateJobRequest {
            algorithms: Some(json!(["PSO", "GA"])),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    let spot = hello(&client).await;
    let task_id = client.claim(&spot, 1).await.unwrap().remove(0).id;
    let reset = reset_template.replace("task-xxx", &task_id);
    sqlite3(dir.path(), server.db_path(), "sql-reset", &reset);

    let shown = client.job(&job_id).await.unwrap().status;
    for status in ["PENDING", "RUNNING"] {
        let listed = client
            .jobs(&drover_client::ListOptions {
                status: Some(status.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs;
        for job in &listed {
            assert_eq!(job.status, status, "listed under {status}: {job:?}");
        }
        assert_eq!(
            listed.iter().any(|j| j.id == job_id),
            shown == status,
            "the job shows {shown} but the {status} list says otherwise: {listed:?}"
        );
    }
}
