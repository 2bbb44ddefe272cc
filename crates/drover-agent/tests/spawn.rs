//! Starting a task's process: it dies with the process that started it (even on `kill -9`),
//! a missing program is reported as std's `Command` reports it, and the lookup on `PATH`
//! follows the task's own `PATH`.

use drover_agent::spawn::{Spawn, spawn};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the helper process this file starts from its own test binary.
const HELPER: &str = "DROVER_SPAWN_TEST_HELPER";

fn spec<'a>(program: &'a str, args: &'a [String], cwd: &'a Path) -> Spawn<'a> {
    Spawn {
        program,
        args,
        remove: &[],
        set: &[],
        cwd,
    }
}

/// The helper's part of the test below, in the process it starts: it starts `sleep 30` the way
/// the agent starts a task, prints the sleep's pid, and waits to be killed.
fn be_the_helper() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir();
        let args = ["30".to_string()];
        let child = spawn(&spec("sleep", &args, &dir)).expect("sleep starts");
        println!("\nPID {}", child.id().unwrap());
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// Gone, or a zombie waiting for whoever inherited it to reap it.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// The test binary runs this test again as the helper (with `DROVER_SPAWN_TEST_HELPER` set),
/// which starts a sleep; the helper is then killed with SIGKILL and the sleep must die too.
#[test]
fn a_started_process_dies_with_its_starter_even_on_kill_9() {
    if std::env::var_os(HELPER).is_some() {
        return be_the_helper();
    }
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_started_process_dies_with_its_starter_even_on_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let sleep: u32 = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            // libtest's "test NAME ... " may come first on the line.
            let (_, pid) = l.split_once("PID ")?;
            pid.trim().parse().ok()
        })
        .expect("the helper prints its child's pid");
    assert!(!dead(sleep), "the sleep runs while its starter lives");
    helper.kill().unwrap(); // SIGKILL: no chance to clean up
    helper.wait().unwrap();
    for _ in 0..250 {
        if dead(sleep) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the sleep ({sleep}) outlived the process that started it");
}

#[tokio::test]
async fn a_missing_program_is_not_found_as_with_std() {
    let dir = tempfile::tempdir().unwrap();
    let ours = spawn(&spec("no-such-program-here", &[], dir.path()))
        .err()
        .expect("no such program");
    let std = Command::new("no-such-program-here").spawn().unwrap_err();
    assert_eq!(ours.kind(), std.kind());
    assert_eq!(ours.to_string(), std.to_string());

    let ours = spawn(&spec("/no/such/dir/prog", &[], dir.path()))
        .err()
        .expect("no such path");
    assert_eq!(ours.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_missing_working_directory_is_a_failure_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let e = spawn(&spec("true", &[], &gone))
        .err()
        .expect("no such directory");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn the_program_is_looked_up_on_the_tasks_own_path() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("only-here");
    std::fs::write(&script, "#!/bin/sh\nexit 42\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = bin.to_string_lossy().into_owned();
    let set = [("PATH", path.as_str())];
    let mut child = spawn(&Spawn {
        program: "only-here",
        args: &[],
        remove: &[],
        set: &set,
        cwd: dir.path(),
    })
    .expect("found on the task's PATH");
    assert_eq!(child.wait().await.unwrap().code(), Some(42));

    // Removed after it was found: looked up again, and now missing.
    std::fs::remove_file(&script).unwrap();
    let e = spawn(&Spawn {
        program: "only-here",
        args: &[],
        remove: &[],
        set: &set,
        cwd: dir.path(),
    })
    .err()
    .expect("gone");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn output_streams_and_exit_status_come_back() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "-c".to_string(),
        "echo out; echo err >&2; exit 3".to_string(),
    ];
    let mut child = spawn(&spec("sh", &args, dir.path())).unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(3));
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(child.id(), None, "reaped");
}
