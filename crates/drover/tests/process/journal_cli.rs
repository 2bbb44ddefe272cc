//! `drover journal tail` and `drover journal verify` against a real server: what they print and
//! the exit statuses scripts rely on (verify: 0 consistent, 1 inconsistencies found).
//!
//! The tests move work along themselves, through the typed client, as an agent would.

use crate::helpers::{
    DroverChild, EXIT_DEADLINE, Finished, Launch, ServerProcess, completion, drover_command, hello,
    run_to_exit,
};
use drover_api::CreateJobRequest;
use drover_client::Client;
use serde_json::{Value, json};
use std::path::Path;

/// Runs `drover ARGS --server URL` against `server` to its end.
async fn drover(server: &ServerProcess, dir: &Path, name: &str, args: &[&str]) -> Finished {
    let mut cmd = drover_command(dir);
    cmd.args(args).args(["--server", &server.base_url()]);
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || run_to_exit(cmd, &dir, &name, EXIT_DEADLINE))
        .await
        .expect("the command runner")
}

async fn create_job(client: &Client, n: u32) -> String {
    let seeds: Vec<u32> = (1..=n).collect();
    let req: CreateJobRequest =
        serde_json::from_value(json!({"parameters": {"seed": seeds}})).unwrap();
    client.create_job(&req).await.expect("create job").job_id
}

/// A spot, a job of three tasks, two of them claimed and completed: five entries (the spot, the
/// job, the claims, two completions) and four items (the spot, the job, two tasks). Answers the
/// spot and the completed tasks.
async fn some_work(client: &Client) -> (String, Vec<String>) {
    let spot = hello(client).await;
    create_job(client, 3).await;
    let claimed = client.claim(&spot, 2).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    for task in &claimed {
        client
            .complete(&task.id, &completion(&spot, 0.5))
            .await
            .expect("complete");
    }
    (spot, claimed.into_iter().map(|t| t.id).collect())
}

/// The value printed after `key` in a `key  value` record.
fn field<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{stdout}"))
}

/// Every stdout line as a JSON document.
fn json_lines(run: &Finished) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{run}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_0_with_the_counts_and_1_naming_a_row_changed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let (spot, done) = some_work(&server.client()).await;

    let run = drover(&server, dir.path(), "verify", &["journal", "verify"]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    assert!(field(&run.stdout, "Consistent").starts_with("yes"), "{run}");
    assert_eq!(field(&run.stdout, "Items verified"), "4", "{run}");
    assert_eq!(field(&run.stdout, "Entries replayed"), "1 to 5", "{run}");

    let run = drover(
        &server,
        dir.path(),
        "verify-json",
        &["journal", "verify", "--json"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(report["consistent"], true, "{run}");
    assert_eq!(report["itemsVerified"], 4, "{run}");
    assert_eq!(report["inconsistencies"], 0, "{run}");
    assert_eq!(report["head"], 5, "{run}");

    // An operator's hand edit, which no entry records.
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let edited = db
        .execute(
            "UPDATE nodes SET labels = '{\"rack\":\"by-hand\"}' WHERE id = ?1",
            [&spot],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(db);

    let run = drover(&server, dir.path(), "verify-bad", &["journal", "verify"]).await;
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        field(&run.stdout, "Consistent").starts_with("NO: 1 "),
        "{run}"
    );
    let detail = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("- node {spot}: ")))
        .unwrap_or_else(|| panic!("no detail names node {spot}:\n{run}"));
    assert!(detail.contains("by-hand"), "{run}");
    assert!(
        !run.stdout.contains(&done[0]),
        "only the edited row is named:\n{run}"
    );

    let run = drover(
        &server,
        dir.path(),
        "verify-bad-json",
        &["journal", "verify", "--json"],
    )
    .await;
    assert_eq!(run.status.code(), Some(1), "{run}");
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(report["consistent"], false, "{run}");
    assert_eq!(report["inconsistencies"], 1, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_entries_as_lines_or_json_and_follows_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let client = server.client();
    let (_, done) = some_work(&client).await;
    let kinds = [
        "node_registered",
        "job_created",
        "task_claimed",
        "task_completed",
        "task_completed",
    ];

    // The whole journal as JSON lines, each an entry in the journal's own encoding.
    let run = drover(
        &server,
        dir.path(),
        "tail-json",
        &["journal", "tail", "--json"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let entries = json_lines(&run);
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "{run}");
    let got: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(got, kinds, "{run}");
    assert!(
        entries
            .iter()
            .all(|e| e["at"].is_string() && e["changes"].is_array())
    );
    // The two claims: one compact change of the job's tasks 0 and 1.
    assert_eq!(
        entries[2]["changes"][0]["moves"],
        json!([[0, 1], [1, 1]]),
        "{run}"
    );

    // --last and --after choose where to start.
    let run = drover(
        &server,
        dir.path(),
        "tail-last",
        &["journal", "tail", "--json", "-n", "2"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let seqs: Vec<u64> = json_lines(&run)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5], "{run}");
    let run = drover(
        &server,
        dir.path(),
        "tail-after",
        &["journal", "tail", "--after", "3"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run}");
    assert!(lines[0].trim_start().starts_with("4  "), "{run}");
    assert!(lines[0].contains("task_completed"), "{run}");
    assert!(lines[0].contains("1 change"), "{run}");
    assert!(
        lines[0].contains(&format!("task {} DONE", done[0])),
        "{run}"
    );

    // --follow prints what is written after it started, until Ctrl-C.
    let mut cmd = drover_command(dir.path());
    cmd.args([
        "journal",
        "tail",
        "--follow",
        "--json",
        "--server",
        &server.base_url(),
    ]);
    let mut follow = DroverChild::spawn(cmd, dir.path(), "tail-follow");
    follow.wait_for_log("\"seq\":5").await;
    let job = create_job(&client, 1).await;
    let log = follow.wait_for_log(&job).await;
    let followed: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{log}")))
        .collect();
    let last = followed.last().unwrap();
    assert_eq!(
        (last["seq"].as_u64(), last["kind"].as_str()),
        (Some(6), Some("job_created")),
        "{log}"
    );
    follow.signal(libc::SIGINT);
    let status = tokio::task::spawn_blocking(move || follow.wait_exit())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a follow quietly");
}

/// The whole path, as an operator takes it: a server started with the contract's
/// `USE_MOCK_DA=true` publishes its journal to a file sink beside its database; once it is
/// published, `drover journal rebuild` makes a new store from that sink alone, which checks
/// consistent, and a server started on it shows the same jobs, tasks and spots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_the_published_sink_makes_a_store_that_serves_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new()
            .env("USE_MOCK_DA", "true")
            .args(["--journal-publish-every", "50ms"]),
    )
    .await;
    let client = server.client();
    let (spot, _) = some_work(&client).await;
    let sink = server.db_path().parent().unwrap().join("journal-sink");

    // Published: the file sink holds every entry of the journal.
    let head = client
        .journal(0, 1, std::time::Duration::ZERO)
        .await
        .unwrap()
        .head;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status: Value = reqwest::get(format!("{}/fallback/status", server.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let held = std::fs::read_dir(&sink).map_or(0, |d| d.count());
        if status["current_status"] == "primary_healthy" && held > 0 {
            let (_, read) = read_sink(&sink).await;
            if read == head {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not published: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let rebuilt = dir.path().join("rebuilt").join("drover.db");
    std::fs::create_dir_all(rebuilt.parent().unwrap()).unwrap();
    let from = format!("file:{}", sink.display());
    let db = rebuilt.display().to_string();
    let run = drover(
        &server,
        dir.path(),
        "rebuild",
        &["journal", "rebuild", "--from", &from, "--db", &db],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    assert!(
        run.stdout.contains(&format!("entries 1 to {head}")),
        "{run}"
    );
    assert!(run.stdout.contains("consistent"), "{run}");

    // Into a store that is not empty any more: refused, exit 3, the store untouched.
    let again = drover(
        &server,
        dir.path(),
        "rebuild-again",
        &["journal", "rebuild", "--from", &from, "--db", &db],
    )
    .await;
    assert_eq!(again.status.code(), Some(3), "{again}");
    assert!(again.stderr.contains("empty store"), "{again}");

    let second_dir = tempfile::tempdir().unwrap();
    let second = ServerProcess::start(second_dir.path(), Launch::new().db(&rebuilt)).await;
    let copy = second.client();
    let run = drover(&second, second_dir.path(), "verify", &["journal", "verify"]).await;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let listing = |c: Client| async move {
        let jobs = c.jobs(&Default::default()).await.unwrap().jobs;
        let mut shown = Vec::new();
        for job in jobs {
            let tasks = c.all_tasks(&job.id, None).await.unwrap();
            let tasks: Vec<(String, String)> =
                tasks.into_iter().map(|t| (t.id, t.status)).collect();
            shown.push((job.id, job.status, job.completed_tasks, tasks));
        }
        shown
    };
    assert_eq!(listing(copy.clone()).await, listing(client.clone()).await);
    let spots: Vec<String> = copy
        .spots()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(spots, vec![spot]);
}

/// The entries a file sink holds, and the last one's number.
async fn read_sink(dir: &Path) -> (usize, u64) {
    let sink = drover_server::journal::open_sink(
        &drover_server::journal::SinkSpec::File(dir.to_path_buf()),
        std::time::Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    match drover_server::journal::read_back(&[("primary".into(), sink)], |_, _, _| {}).await {
        Ok(entries) => (entries.len(), entries.last().map_or(0, |e| e.seq)),
        Err(_) => (0, 0),
    }
}
