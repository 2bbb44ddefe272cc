//! The command line: help texts, and start-up refusals that must be clear and quick.

use crate::helpers::{
    EXIT_DEADLINE, Finished, Launch, ServerProcess, drover_command, free_port, run_to_exit,
};
use std::path::Path;

fn drover(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = drover_command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_exit(cmd, dir, name, EXIT_DEADLINE)
}

#[test]
fn drover_help_lists_the_server_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(dir.path(), "help", &["--help"], &[]);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.contains("server"), "{run}");
    assert!(run.stdout.contains("Usage: drover"), "{run}");
    // The top-level help introduces drover itself, not one group of its commands.
    assert!(
        run.stdout
            .starts_with("drover: a self-hosted coordinator for distributed work"),
        "{run}"
    );
}

#[test]
fn version_names_the_release_and_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    // This checkout's commit, as `git` tells it (the build ran in the same checkout).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for args in [&["version"][..], &["--version"][..]] {
        let run = drover(dir.path(), "version", args, &[]);
        assert!(run.status.success(), "{run}");
        let line = run.stdout.trim();
        let expected = format!("drover {} (commit ", env!("CARGO_PKG_VERSION"));
        assert!(line.starts_with(&expected), "{run}");
        if let Some(head) = &head {
            assert!(line.contains(head.as_str()), "not built from {head}: {run}");
        }
    }
}

#[test]
fn server_help_documents_keys_aliases_timeouts_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(dir.path(), "server-help", &["server", "--help"], &[]);
    assert!(run.status.success(), "{run}");
    for expected in [
        "--agent-key",
        "--api-key",
        "--allow-unauthenticated",
        "ORHESTRA_PORT",
        "ORHESTRA_AGENT_KEY",
        "ORHESTRA_DB_URL",
        "ORHESTRA_MAX_ATTEMPTS",
        "--spot-timeout",
        "--task-timeout",
        "DROVER_PORT",
        "DROVER_AGENT_KEY",
        "Event journal:",
        "--journal-sink",
        "DROVER_JOURNAL_SINK",
        "USE_MOCK_DA",
    ] {
        assert!(run.stdout.contains(expected), "no {expected:?} in:\n{run}");
    }
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(dir.path(), "version", &["--version"], &[]);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.starts_with("drover "), "{run}");
}

#[test]
fn a_public_bind_without_keys_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "public-bind",
        &["server", "--bind", "0.0.0.0", "--port", "0"],
        &[],
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("--allow-unauthenticated"), "{run}");
    assert!(run.stderr.contains("--agent-key"), "{run}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start must not create the database"
    );
}

#[test]
fn a_refused_setting_is_one_error_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "backtrace",
        &["server", "--bind", "0.0.0.0", "--port", "0"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(!run.stderr.contains("Stack backtrace"), "{run}");
    assert!(!run.stderr.contains("stack backtrace"), "{run}");
}

#[test]
fn a_misspelt_config_key_names_the_key_that_was_meant() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "spot_timout = \"10s\"\n",
            "unknown field `spot_timout`: did you mean `spot-timeout`?",
        ),
        (
            "[runners]\nmax-runner = 2\n",
            "[runners] unknown field `max-runner`: did you mean `max-runners`?",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("drover.toml"), text).unwrap();
        let run = drover(
            dir.path(),
            "config-typo",
            &["server", "--config", "drover.toml", "--port", "0"],
            &[],
        );
        assert_eq!(run.status.code(), Some(1), "{run}");
        assert!(run.stderr.contains("drover.toml"), "{run}");
        assert!(run.stderr.contains(expected), "{run}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "a refused start must not create the database"
    );
}

#[test]
fn one_key_is_not_enough_for_a_public_bind() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "public-bind-one-key",
        &["server", "--bind", "0.0.0.0", "--port", "0"],
        &[("ORHESTRA_AGENT_KEY", "secret123")],
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("--allow-unauthenticated"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_starts_on_a_public_bind_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    // Bound on every interface, reached only through loopback.
    let mut server = ServerProcess::start(
        dir.path(),
        Launch::new().args(["--bind", "0.0.0.0", "--allow-unauthenticated"]),
    )
    .await;
    let health = server.client().health().await.unwrap();
    assert_eq!(health.status, "healthy");
    let log = server.log();
    assert!(log.contains("without authentication"), "{log}");
    assert!(
        log.contains(&format!("listening on http://0.0.0.0:{}", server.port())),
        "{log}"
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn a_jdbc_database_url_from_the_java_coordinator_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "jdbc",
        &["server", "--port", "0"],
        &[("ORHESTRA_DB_URL", "jdbc:h2:file:./data/orhestra")],
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("JDBC"), "{run}");
    assert!(run.stderr.contains("SQLite"), "{run}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn celestia_settings_without_a_journal_sink_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "celestia",
        &["server", "--port", "0"],
        &[
            ("DA_RPC_URL", "http://localhost:26658"),
            ("USE_MOCK_DA", "false"),
        ],
    );
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr.contains("DA_RPC_URL names a Celestia node"),
        "{run}"
    );
    assert!(run.stderr.contains("set --journal-sink"), "{run}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_duration_that_is_not_one_is_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = drover(
        dir.path(),
        "bad-duration",
        &["server", "--port", "0", "--spot-timeout", "soon"],
        &[],
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("--spot-timeout"), "{run}");
    assert!(run.stderr.contains("30s"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_port_serves_the_placement_surface_on_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = free_port();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().env("COORDINATOR_PORT", coordinator.to_string()),
    )
    .await;
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("http://127.0.0.1:{coordinator}/register"))
        .json(&serde_json::json!({"id": "node-1", "zone": "zone-a", "addr": "10.0.0.1:50051"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", server.log());
    // The node is in the one registry, which the main listener serves too.
    let nodes: serde_json::Value = http
        .get(format!("http://127.0.0.1:{}/nodes", server.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes[0]["id"], "node-1");
    assert_eq!(nodes[0]["capacity_gb"], 100);
    // That listener serves the placement surface alone.
    let native = http
        .get(format!("http://127.0.0.1:{coordinator}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(native.status(), 404);
}
