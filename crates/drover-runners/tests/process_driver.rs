//! The process driver with real child processes: the port comes from the operating system and
//! reaches the child as a listening socket; runners are found again by label, by a driver that
//! did not start them (a restarted server); stopping ends them, also when they already exited.

use drover_runners::process::{ProcessConfig, ProcessDriver};
use drover_runners::{Driver, DriverError, StartSpec};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUNNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/http_runner.py");

fn python() -> Option<&'static str> {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "python3")
}

fn driver(python: &str) -> ProcessDriver {
    let mut config = ProcessConfig::new(vec![python.into(), RUNNER.into()]);
    config.stop_grace = Duration::from_secs(2);
    ProcessDriver::new(config)
}

/// Labels unique to one test, so parallel tests never see each other's runners.
fn spec(session: &str) -> (StartSpec, String) {
    let instance = format!("test-{}-{}", std::process::id(), session);
    let labels = BTreeMap::from([
        ("io.drover.managed-by".to_string(), "drover".to_string()),
        ("io.drover.instance".to_string(), instance.clone()),
        ("session".to_string(), session.to_string()),
    ]);
    (
        StartSpec {
            session_id: session.to_string(),
            labels,
            env: BTreeMap::new(),
        },
        instance,
    )
}

async fn get(port: u16) -> Option<String> {
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
            let mut answer = String::new();
            if s.read_to_string(&mut answer).await.is_ok() && !answer.is_empty() {
                return Some(answer);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn alive(pid: &str) -> bool {
    pid.parse().is_ok_and(drover_runners::process::alive)
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn a_runner_answers_on_its_port_and_is_stopped() {
    let Some(python) = python() else {
        panic!("python3 is not installed");
    };
    let d = driver(python);
    let (spec, instance) = spec("s-answer");
    let started = d.start(&spec).await.unwrap();
    let answer = get(started.host_port).await.expect("the runner answers");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("runner s-answer\n"), "{answer}");

    let found = d.list("io.drover.instance", &instance).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].instance, started.instance);
    assert!(found[0].running);
    assert_eq!(found[0].labels["session"], "s-answer");

    d.stop(&started.instance).await.unwrap();
    assert!(!alive(&started.instance));
    assert!(
        d.list("io.drover.instance", &instance)
            .await
            .unwrap()
            .is_empty()
    );
    d.stop(&started.instance).await.unwrap();
}

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn two_runners_get_two_ports_from_the_system() {
    let Some(python) = python() else {
        panic!("python3 is not installed");
    };
    let d = driver(python);
    let (a, _) = spec("s-port-a");
    let (b, _) = spec("s-port-b");
    let (ra, rb) = tokio::join!(d.start(&a), d.start(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_ne!(ra.host_port, rb.host_port);
    assert!(
        get(ra.host_port)
            .await
            .unwrap()
            .ends_with("runner s-port-a\n")
    );
    assert!(
        get(rb.host_port)
            .await
            .unwrap()
            .ends_with("runner s-port-b\n")
    );
    d.stop(&ra.instance).await.unwrap();
    d.stop(&rb.instance).await.unwrap();
}

/// A restarted server has a new driver that did not start the runner: it finds it by label and
/// can stop it.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn a_new_driver_finds_and_stops_an_earlier_drivers_runner() {
    let Some(python) = python() else {
        panic!("python3 is not installed");
    };
    let first = driver(python);
    let (spec, instance) = spec("s-adopt");
    let started = first.start(&spec).await.unwrap();
    drop(first);

    let second = driver(python);
    let found = second.list("io.drover.instance", &instance).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(get(started.host_port).await.is_some());
    second.stop(&found[0].instance).await.unwrap();
    for _ in 0..100 {
        if !alive(&started.instance) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the adopted runner is still alive");
}

#[tokio::test]
async fn a_runner_that_dies_at_once_is_a_failed_start() {
    let d = ProcessDriver::new(ProcessConfig::new(vec![
        "sh".into(),
        "-c".into(),
        "exit 3".into(),
    ]));
    let (spec, _) = spec("s-dies");
    match d.start(&spec).await {
        Err(DriverError::Failed(why)) => assert!(why.contains("exited"), "{why}"),
        other => panic!("expected a failed start, got {other:?}"),
    }
    let missing = ProcessDriver::new(ProcessConfig::new(vec!["no-such-runner-program".into()]));
    assert!(matches!(
        missing.start(&spec).await,
        Err(DriverError::Failed(_))
    ));
}

/// Only a process this driver started (a group leader with its labels) is ever signalled.
#[tokio::test]
async fn stop_leaves_an_unrelated_process_alone() {
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let d = ProcessDriver::new(ProcessConfig::new(vec!["true".into()]));
    d.stop(&other.id().to_string()).await.unwrap();
    assert!(
        other.try_wait().unwrap().is_none(),
        "an unrelated process was killed"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

/// A start waits for the runner's answer, not only for a moment: a runner that exits later than
/// at once, or one that tries to bind the port it was given itself (which the handed-over socket
/// holds), or one that runs but never answers, is a failed start, and nothing of it is left.
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn a_runner_that_exits_or_never_answers_is_a_failed_start_and_is_gone() {
    let Some(python) = python() else {
        panic!("python3 is not installed");
    };
    let cases: [(&str, Vec<String>, &str); 3] = [
        (
            "s-late-exit",
            vec!["sh".into(), "-c".into(), "sleep 0.5; exit 4".into()],
            "exited",
        ),
        (
            "s-own-bind",
            vec![
                python.into(),
                "-c".into(),
                "import os, socket; socket.socket().bind(('127.0.0.1', int(os.environ['PORT'])))"
                    .into(),
            ],
            "exited",
        ),
        (
            "s-silent",
            vec!["sleep".into(), "60".into()],
            "did not answer",
        ),
    ];
    for (session, command, why) in cases {
        let mut config = ProcessConfig::new(command);
        config.start_timeout = Duration::from_secs(2);
        config.stop_grace = Duration::from_secs(1);
        let d = ProcessDriver::new(config);
        let (spec, instance) = spec(session);
        match d.start(&spec).await {
            Err(DriverError::Failed(message)) => {
                assert!(message.contains(why), "{session}: {message}")
            }
            other => panic!("{session}: expected a failed start, got {other:?}"),
        }
        assert!(
            d.list("io.drover.instance", &instance)
                .await
                .unwrap()
                .is_empty(),
            "{session}: a runner was left behind"
        );
    }
}

/// `running` follows the runner: true while it serves, false once it was killed from outside,
/// also for a driver that did not start it (after a restart).
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn running_notices_a_runner_killed_from_outside() {
    let Some(python) = python() else {
        panic!("python3 is not installed");
    };
    let d = driver(python);
    let (spec, _) = spec("s-killed");
    let started = d.start(&spec).await.unwrap();
    assert!(d.running(&started.instance).await.unwrap());
    assert!(driver(python).running(&started.instance).await.unwrap());

    let pid: i32 = started.instance.parse().unwrap();
    // SAFETY: kill only sends a signal, to the runner this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    for _ in 0..200 {
        if !d.running(&started.instance).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!d.running(&started.instance).await.unwrap());
    assert!(!driver(python).running(&started.instance).await.unwrap());
    assert!(!d.running("not-a-pid").await.unwrap());
    d.stop(&started.instance).await.unwrap();
}

/// What the start spec's `env` says reaches the runner, beside the driver's own variables.
#[tokio::test]
async fn the_runner_gets_its_session_token_and_drovers_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    // The runner writes its environment, then answers one request as HTTP and lives on.
    let script = format!("env > '{}'; while true; do sleep 1; done", out.display());
    let mut config = ProcessConfig::new(vec!["sh".into(), "-c".into(), script]);
    // `sh` answers no HTTP: only the settle check applies.
    config.start_timeout = Duration::ZERO;
    config.stop_grace = Duration::from_secs(1);
    let d = ProcessDriver::new(config);
    let (mut spec, _) = spec("s-env");
    spec.env
        .insert("DROVER_RUNNER_TOKEN".into(), "t0ken".into());
    spec.env
        .insert("DROVER_URL".into(), "http://127.0.0.1:1".into());
    let started = d.start(&spec).await.unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("DROVER_URL") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in [
        "DROVER_RUNNER_TOKEN=t0ken",
        "DROVER_URL=http://127.0.0.1:1",
        "DROVER_RUNNER_SESSION_ID=s-env",
        &format!("PORT={}", started.host_port),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    d.stop(&started.instance).await.unwrap();
}
