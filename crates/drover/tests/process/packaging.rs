//! How drover is shipped: the container image (`Dockerfile`, built by `scripts/image` from a
//! static binary, FROM scratch) serves health from a container; the systemd unit
//! (`packaging/drover.service`) passes `systemd-analyze verify`, and its `ExecStart` line, run
//! as written (binary and state directory moved to the test's), starts the real server with an
//! SQLite file in the state directory and stops cleanly on SIGTERM.
//!
//! The image's static release build lives in its own target directory beside the test build
//! (`<target>/static`), so running the test again, or `scripts/image` with that
//! `CARGO_TARGET_DIR`, reuses it.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>/static`, the static build's own target directory: a directory of its own, because
/// the test build holds the lock on the test's target directory while tests run.
fn static_target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    // <target>/<profile>/drover
    bin.parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>")
        .join("static")
}

/// Builds the image once per test run with `scripts/image`; its tag.
fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    const TAG: &str = "drover-test-image:latest";
    let built = BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(workspace().join("scripts/image"))
            .arg(TAG)
            .env("CARGO_TARGET_DIR", static_target_dir())
            // What is tested is the packaging (a static binary alone FROM scratch), not the
            // optimiser: a lighter release profile halves the build that CI pays for once.
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .output()
            .map_err(|e| format!("running scripts/image: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/image failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    TAG
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

/// Removes a container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn the_image_is_the_static_binary_alone_and_serves_health() {
    if let Some(why) = missing_tool(&["docker"]).or_else(|| {
        (!docker(&["info"]).status.success()).then(|| "the Docker engine is not reachable".into())
    }) {
        missing_part(
            "the_image_is_the_static_binary_alone_and_serves_health",
            &why,
        );
    }
    let tag = image();
    let inspected: Value =
        serde_json::from_slice(&docker(&["image", "inspect", tag]).stdout).unwrap();
    let config = &inspected[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "not root: {config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/drover"]));

    // FROM scratch: no shell, nothing but drover.
    let shell = docker(&["run", "--rm", "--entrypoint", "/bin/sh", tag, "-c", "true"]);
    assert!(!shell.status.success(), "the image has a shell");

    // Its default command listens on every address, which drover refuses without keys.
    let refused = docker(&["run", "--rm", tag]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("refusing to listen"), "{said}");

    let run = docker(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1::8080",
        "-e",
        "DROVER_AGENT_KEY=agent-key",
        "-e",
        "DROVER_API_KEY=api-key",
        tag,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let _container = Container(id.clone());
    let port = String::from_utf8_lossy(&docker(&["port", &id, "8080/tcp"]).stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        port.starts_with("127.0.0.1:"),
        "published on loopback: {port}"
    );
    let health = eventually("the container to answer health", EVENT_DEADLINE, || async {
        let resp = reqwest::get(format!("http://{port}/api/v1/health"))
            .await
            .ok()?;
        (resp.status().as_u16() == 200).then_some(())?;
        resp.json::<Value>().await.ok()
    })
    .await;
    assert!(health.is_object(), "{health}");
    // The store is the SQLite file in the state directory, which the image's user may write.
    let stopped = docker(&["stop", "-t", "30", &id]);
    assert!(stopped.status.success());
    let inspected: Value = serde_json::from_slice(&docker(&["inspect", &id]).stdout).unwrap();
    assert_eq!(
        inspected[0]["State"]["ExitCode"],
        0,
        "drover stops cleanly on SIGTERM: {}",
        String::from_utf8_lossy(&docker(&["logs", &id]).stderr)
    );
}

/// The unit file as sections of keys, each key with its values in order (a key may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not a key=value: {line}", n + 1));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("line {}: a key before any section", n + 1));
        sections
            .entry(section)
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    sections
}

#[cfg_attr(
    missing_systemd_analyze,
    ignore = "needs systemd-analyze (the systemd package), missing where this was built"
)]
#[tokio::test]
async fn the_systemd_unit_verifies_and_its_exec_start_serves_from_the_state_directory() {
    let unit_path = workspace().join("packaging/drover.service");
    let text = std::fs::read_to_string(&unit_path).unwrap();
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] has no {key}"));
        assert_eq!(values.len(), 1, "{key} is set once");
        &values[0]
    };
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("StateDirectory"), "drover");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);

    // systemd's own check, with ExecStart pointing at the binary built here (it checks that the
    // program exists). Lines about other units of this machine are not the unit's.
    let dir = tempfile::tempdir().unwrap();
    let exec_start = one("ExecStart").to_string();
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    assert!(
        !exec_start.contains(['"', '\'', '$', '%']),
        "ExecStart is plain words: {exec_start}"
    );
    assert_eq!(argv[0], "/usr/local/bin/drover");
    let bin = env!("CARGO_BIN_EXE_drover");
    let local = dir.path().join("drover.service");
    std::fs::write(&local, text.replace(argv[0], bin)).unwrap();
    match find_tool("systemd-analyze") {
        Some(analyze) => {
            let out = Command::new(analyze)
                .arg("verify")
                .arg(&local)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let about_unit: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("drover.service"))
                .collect();
            assert!(
                out.status.success() && about_unit.is_empty(),
                "systemd-analyze verify: {}\n{stderr}",
                out.status
            );
        }
        None => missing_part(
            "the_systemd_unit_verifies_and_its_exec_start_serves_from_the_state_directory",
            "systemd-analyze is not installed",
        ),
    }

    // ExecStart as written, with the state directory and the port moved to the test's.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let port = free_port();
    let mut args: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.replace("/var/lib/drover", state.to_str().unwrap()))
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--port")
        .expect("ExecStart names its port");
    args[at + 1] = port.to_string();
    let mut cmd = drover_command(&state);
    cmd.args(&args);
    let mut server = DroverChild::spawn(cmd, dir.path(), "unit-server");
    let url = format!("http://127.0.0.1:{port}/api/v1/health");
    eventually(
        "the unit's server to answer health",
        EVENT_DEADLINE,
        || async {
            let resp = reqwest::get(&url).await.ok()?;
            (resp.status().as_u16() == 200).then_some(())
        },
    )
    .await;
    assert!(
        state.join("drover.db").is_file(),
        "the SQLite store is in the state directory"
    );
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
}
