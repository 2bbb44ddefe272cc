//! The contract's section 4 smoke test script, run unchanged (but for the address, and the key
//! where a test says so) with bash, curl and jq against a real server.

use crate::helpers::{
    EXIT_DEADLINE, Finished, Launch, ServerProcess, contract, missing_part, missing_tool,
    run_to_exit,
};
use std::path::Path;
use std::process::Command;

const CONTRACT_BASE: &str = "http://localhost:8080";

/// The fenced bash block of section 4, from `#!/bin/bash` through the `Smoke test complete` line.
fn script_from(contract: &str) -> String {
    let start = contract
        .find("```bash\n#!/bin/bash")
        .map(|i| i + "```bash\n".len())
        .expect("the contract has a fenced bash block starting with #!/bin/bash");
    let rest = &contract[start..];
    let marker = rest
        .find("Smoke test complete")
        .expect("the script ends with a 'Smoke test complete' line");
    let end = marker + rest[marker..].find('\n').unwrap_or(rest.len() - marker);
    let script = &rest[..end];
    assert!(
        !script.contains("```"),
        "the extracted script runs past its fenced block:\n{script}"
    );
    format!("{script}\n")
}

/// The contract's section 4 script; a test fails when the tools it runs on are missing.
fn contract_script(test: &str) -> String {
    if let Some(reason) = missing_tool(&["bash", "curl", "jq"]) {
        missing_part(test, &reason);
    }
    script_from(&contract())
}

/// Runs `script` against `server`, changed only by the given replacements.
fn run_script(
    dir: &Path,
    server: &ServerProcess,
    script: &str,
    replacements: &[(&str, &str)],
) -> Finished {
    assert!(
        script.contains(CONTRACT_BASE),
        "the script no longer names {CONTRACT_BASE}"
    );
    let mut script = script.replace(CONTRACT_BASE, &server.base_url());
    for (from, to) in replacements {
        assert!(script.contains(from), "the script has no {from:?}");
        script = script.replace(from, to);
    }
    let path = dir.join("smoke_test.sh");
    std::fs::write(&path, &script).expect("write smoke_test.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&path).current_dir(dir);
    // Keep curl on loopback whatever proxy the environment names.
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    run_to_exit(cmd, dir, "smoke_test", EXIT_DEADLINE)
}

fn assert_completed_run(run: &Finished) {
    assert!(run.status.success(), "the smoke script failed:\n{run}");
    let out = &run.stdout;
    for expected in [
        "\"status\": \"healthy\"",
        "\"success\": true",
        "\"spotId\": \"",
        // The job's one task was claimed and completed, so the job is done.
        "\"status\": \"COMPLETED\"",
        "\"completedTasks\": 1",
        "\"totalCompleted\": 1",
        "\"fopt\": 0.001",
        "Smoke test complete",
    ] {
        assert!(
            out.contains(expected),
            "no {expected:?} in the output:\n{run}"
        );
    }
    assert!(
        !out.contains("\"success\": false"),
        "an error answer:\n{run}"
    );
    assert!(!out.contains("UNAUTHORIZED"), "refused:\n{run}");
}

#[cfg_attr(
    any(missing_shell_tools, missing_contract),
    ignore = "needs bash, curl and jq and the contract beside the checkout (../shared), missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_smoke_script_passes_unchanged_against_a_fresh_server() {
    let script = contract_script("smoke script");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;

    let run = run_script(dir.path(), &server, &script, &[]);
    assert_completed_run(&run);

    // What the script printed is what the server holds.
    let health = server.client().health().await.unwrap();
    assert_eq!((health.pending_tasks, health.running_tasks), (0, 0));
    assert_eq!(health.active_spots, 1);
}

#[cfg_attr(
    any(missing_shell_tools, missing_contract),
    ignore = "needs bash, curl and jq and the contract beside the checkout (../shared), missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_orhestra_agent_key_and_port_the_script_passes_when_given_the_key() {
    let script = contract_script("smoke script with key");
    let dir = tempfile::tempdir().unwrap();
    // The contract's own variable names: the port through ORHESTRA_PORT, not --port.
    let server = ServerProcess::start(
        dir.path(),
        Launch::new()
            .port_via_env("ORHESTRA_PORT")
            .env("ORHESTRA_AGENT_KEY", "secret123"),
    )
    .await;
    assert!(
        server
            .log()
            .contains(&format!("listening on http://127.0.0.1:{}", server.port())),
        "not on the ORHESTRA_PORT port:\n{}",
        server.log()
    );

    let run = run_script(
        dir.path(),
        &server,
        &script,
        &[("KEY=\"\"", "KEY=\"secret123\"")],
    );
    assert_completed_run(&run);
}

#[cfg_attr(
    any(missing_shell_tools, missing_contract),
    ignore = "needs bash, curl and jq and the contract beside the checkout (../shared), missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_agent_key_set_the_script_without_the_key_is_refused_on_every_agent_call() {
    let script = contract_script("smoke script without key");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().env("ORHESTRA_AGENT_KEY", "secret123"),
    )
    .await;

    let run = run_script(dir.path(), &server, &script, &[]);
    // curl -s does not fail on a 4xx and every answer is JSON, so the script runs to its end;
    // what it shows is the refusals.
    assert!(run.status.success(), "the script stopped early:\n{run}");
    let out = &run.stdout;
    assert!(out.contains("Smoke test complete"), "{run}");
    let refusals = out.matches("\"code\": \"UNAUTHORIZED\"").count();
    // hello, heartbeat, claim and complete are all agent calls.
    assert_eq!(refusals, 4, "expected four 401 answers:\n{run}");
    assert!(out.contains("\"success\": false"), "{run}");
    assert!(out.contains("missing agent key"), "{run}");
    // Public calls need no agent key: the job was created, but nothing ran.
    assert!(out.contains("\"totalTasks\": 1"), "{run}");
    assert!(out.contains("\"status\": \"PENDING\""), "{run}");
    assert!(out.contains("\"spots\": []"), "{run}");
    assert!(!out.contains("\"status\": \"COMPLETED\""), "{run}");

    let health = server.client().health().await.unwrap();
    assert_eq!(health.active_spots, 0);
    assert_eq!(health.pending_tasks, 1);
}

#[cfg_attr(
    missing_contract,
    ignore = "needs the contract beside the checkout (../shared), missing where this was built"
)]
#[test]
fn the_script_is_found_in_the_contract() {
    let contract = contract();
    let script = script_from(&contract);
    assert!(script.starts_with("#!/bin/bash\nset -e\n"), "{script}");
    assert!(
        script.trim_end().ends_with("Smoke test complete!\""),
        "{script}"
    );
    assert!(script.contains("KEY=\"\""), "{script}");
}

/// drover's own smoke test, which needs nothing from outside the repository: the walk-through
/// of `examples/api-by-hand.sh` (docs/native-api.md shows its output), whose every step checks
/// its answer with jq, run against a fresh server with keys and without.
#[cfg_attr(
    missing_shell_tools,
    ignore = "needs bash, curl and jq, missing where this was built"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projects_own_walk_through_passes_against_a_fresh_server_with_keys_and_without() {
    if let Some(reason) = missing_tool(&["bash", "curl", "jq"]) {
        missing_part("the project's own walk-through", &reason);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/api-by-hand.sh");
    for keys in [None, Some(("agent-secret", "api-secret"))] {
        let dir = tempfile::tempdir().unwrap();
        let launch = match keys {
            None => Launch::new(),
            Some((agent, api)) => Launch::new().args(["--agent-key", agent, "--api-key", api]),
        };
        let server = ServerProcess::start(dir.path(), launch).await;
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .current_dir(dir.path())
            .env("BASE", server.base_url())
            .env_remove("AGENT_KEY")
            .env_remove("API_KEY")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        if let Some((agent, api)) = keys {
            cmd.env("AGENT_KEY", agent).env("API_KEY", api);
        }
        let run = run_to_exit(cmd, dir.path(), "api-by-hand.sh", EXIT_DEADLINE);
        assert!(run.status.success(), "keys {keys:?}: {run}");
        assert!(
            run.stdout.contains("all steps answered as expected"),
            "{run}"
        );
        // The script's own checks agree with what the server holds.
        let client = match keys {
            None => server.client(),
            Some((_, api)) => server.client().with_api_key(api),
        };
        let health = client.health().await.unwrap();
        assert_eq!((health.pending_tasks, health.running_tasks), (3, 0));
        assert_eq!(health.active_spots, 1);
    }
}
