//! Running task commands as real child processes: arguments arrive literally, the environment
//! is the task's, timeouts and stops kill the whole process group, and the ending says why.

use drover_agent::exec::{Run, execute};
use drover_agent::output::Ending;
use drover_core::run::{RunSpec, TaskContext};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn run_of(command: &[&str], payload: Value, dir: &Path, timeout: Duration) -> Run {
    let spec = RunSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: [("JOB_SETTING".to_string(), "{x}".to_string())].into(),
        retry_on_failure: true,
    };
    let mut payload: Map<String, Value> = payload.as_object().cloned().unwrap_or_default();
    payload.entry("x").or_insert(json!(0));
    let work_dir = dir.join("task-1-1");
    let rendered = spec
        .compile()
        .unwrap()
        .render(
            &payload,
            &TaskContext {
                task_id: "task-1",
                job_id: "job-1",
                attempt: 1,
                work_dir: &work_dir.to_string_lossy(),
            },
        )
        .unwrap();
    Run {
        command: rendered,
        work_dir,
        facts: vec![("DROVER_TASK_ID".into(), "task-1".into())],
        timeout,
        spent: Duration::ZERO,
        kill_grace: Duration::from_millis(500),
        tail_bytes: 4096,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn hostile_payload_values_arrive_as_single_literal_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = [
        "two words",
        "\"double\" and 'single' quotes",
        "a; touch injected",
        "$(touch injected)",
        "`touch injected`",
        "line one\nline two",
        "* ? [glob]",
    ];
    for value in hostile {
        // printf repeats its format per argument: each argument comes back NUL-terminated.
        let run = run_of(
            &["printf", "%s\\0", "{x}"],
            json!({ "x": value }),
            dir.path(),
            MINUTE,
        );
        let work_dir = run.work_dir.clone();
        let f = execute(run, CancellationToken::new()).await;
        assert_eq!(f.ending, Ending::Exited(0), "{value:?}: {f:?}");
        assert_eq!(f.stdout.text(), format!("{value}\0"), "{value:?}");
        assert!(
            !work_dir.join("injected").exists(),
            "{value:?} was run by a shell"
        );
    }
}

#[tokio::test]
async fn the_task_sees_its_directory_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(
        &[
            "sh",
            "-c",
            // Braces are doubled: single ones are placeholders.
            "pwd; echo \"$DROVER_TASK_ID $JOB_SETTING ${{NOT_SET:-default}}\"",
        ],
        json!({"x": 42}),
        dir.path(),
        MINUTE,
    );
    let expected_dir = run.work_dir.canonicalize().unwrap_or(run.work_dir.clone());
    let f = execute(run, CancellationToken::new()).await;
    assert_eq!(f.ending, Ending::Exited(0));
    let out = f.stdout.text();
    let mut lines = out.lines();
    assert_eq!(
        Path::new(lines.next().unwrap()).canonicalize().unwrap(),
        expected_dir
    );
    assert_eq!(lines.next(), Some("task-1 42 default"));
}

#[tokio::test]
async fn exit_codes_and_stderr_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(
        &[
            "sh",
            "-c",
            "echo '{{\"fopt\": 1.5}}'; echo oops >&2; exit 7",
        ],
        json!({}),
        dir.path(),
        MINUTE,
    );
    let f = execute(run, CancellationToken::new()).await;
    assert_eq!(f.ending, Ending::Exited(7));
    assert_eq!(f.stderr.text(), "oops\n");
    assert_eq!(f.result.unwrap()["fopt"], json!(1.5));
}

#[tokio::test]
async fn output_that_ends_before_the_process_is_kept() {
    // Both streams reach their end well before the exit is noticed: the run's one future has
    // finished reading by then and must still hand over what it read.
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(
        &[
            "sh",
            "-c",
            "echo '{{\"fopt\": 2}}'; echo note >&2; exec >&- 2>&-; sleep 0.3",
        ],
        json!({}),
        dir.path(),
        MINUTE,
    );
    let f = tokio::time::timeout(MINUTE, execute(run, CancellationToken::new()))
        .await
        .expect("the run ends once its process has");
    assert_eq!(f.ending, Ending::Exited(0));
    assert_eq!(f.stdout.text(), "{\"fopt\": 2}\n");
    assert_eq!(f.stderr.text(), "note\n");
    assert_eq!(f.result.unwrap()["fopt"], json!(2));
}

#[tokio::test]
async fn a_chatty_run_is_read_as_it_writes_and_its_tails_kept() {
    // Far more than a pipe holds, on both streams at once: the run would block on a full pipe
    // if its output were not read while it runs.
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo \"out $i\"; echo \"err $i\" >&2; \
             i=$((i+1)); done; echo '{{\"iter\": 7}}'",
        ],
        json!({}),
        dir.path(),
        MINUTE,
    );
    let f = execute(run, CancellationToken::new()).await;
    assert_eq!(f.ending, Ending::Exited(0));
    assert!(f.stdout.text().ends_with("out 19999\n{\"iter\": 7}\n"));
    assert!(f.stderr.text().ends_with("err 19999\n"));
    assert!(f.stderr.text().starts_with('…'), "only the tail is kept");
    assert_eq!(f.result.unwrap()["iter"], json!(7));
}

#[tokio::test]
async fn a_missing_program_is_a_failure_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(&["no-such-program-here"], json!({}), dir.path(), MINUTE);
    let f = execute(run, CancellationToken::new()).await;
    match f.ending {
        Ending::NotStarted(why) => assert!(why.contains("no-such-program-here"), "{why}"),
        other => panic!("expected NotStarted, got {other:?}"),
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

async fn pid_from(file: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", file.display());
}

/// A task past its timeout is killed with everything it started, not just its first process.
#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let run = run_of(
        &["sh", "-c", &script],
        json!({}),
        dir.path(),
        Duration::from_millis(500),
    );
    let f = execute(run, CancellationToken::new()).await;
    assert_eq!(f.ending, Ending::TimedOut(Duration::from_millis(500)));
    let grandchild = pid_from(&pid_file).await;
    // Reaped by init shortly after the kill; give it a moment.
    for _ in 0..100 {
        if !alive(grandchild) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the task's background process {grandchild} outlived the timeout");
}

#[tokio::test]
async fn a_stop_ends_the_run_as_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_of(&["sleep", "300"], json!({}), dir.path(), MINUTE);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(execute(run, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let f = handle.await.unwrap();
    assert_eq!(f.ending, Ending::Stopped);
}

/// Working directories are reused only when a run left them empty: every run starts in an
/// empty directory of its own name, and a finished run's directory is gone from its name.
#[tokio::test]
async fn every_run_starts_in_an_empty_directory_of_its_own() {
    use drover_agent::exec::{remove_spare_work_dirs, remove_work_dir};
    let dir = tempfile::tempdir().unwrap();
    let mut previous: Option<std::path::PathBuf> = None;
    for (i, script) in ["touch litter", "true", "ls -A", "ls -A"]
        .iter()
        .enumerate()
    {
        let mut run = run_of(&["sh", "-c", script], json!({}), dir.path(), MINUTE);
        run.work_dir = dir.path().join(format!("task-{i}-1"));
        let work_dir = run.work_dir.clone();
        let f = execute(run, CancellationToken::new()).await;
        assert_eq!(f.ending, Ending::Exited(0), "{script}: {f:?}");
        assert_eq!(f.stdout.text(), "", "run {i} found its directory not empty");
        remove_work_dir(&work_dir).await;
        assert!(
            !work_dir.exists(),
            "run {i}'s directory is gone from its name"
        );
        if let Some(p) = previous.replace(work_dir) {
            assert!(!p.exists());
        }
    }
    remove_spare_work_dirs(dir.path());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no spares left"
    );
}

/// Spares left by an agent killed before its stop are removed when an agent starts there; a
/// run's directory or anything holding files is not touched.
#[test]
fn leftover_spares_are_removed_at_start() {
    use drover_agent::exec::remove_leftover_spares;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".spare-4242-0")).unwrap();
    std::fs::create_dir(dir.path().join(".spare-4242-1")).unwrap();
    std::fs::create_dir(dir.path().join("task-1-1")).unwrap();
    std::fs::create_dir(dir.path().join(".spare-4242-2")).unwrap();
    std::fs::write(dir.path().join(".spare-4242-2/kept"), "x").unwrap();
    remove_leftover_spares(dir.path());
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".spare-4242-2", "task-1-1"]);
}
