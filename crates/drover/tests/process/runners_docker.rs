//! Session runners on the real Docker engine, through the real `drover server` binary: the
//! session-runners contract end to end, hardening as `docker inspect` shows it, the inactivity
//! reaper, reuse mode, the limit, a missing image, an engine that is away, and a restart that
//! adopts its runners and removes its own orphans (never another instance's).
//!
//! The runner image is built here without a registry (`scripts/runner-test-image`: a static
//! busybox serving HTTP on port 3000). Each test's server has a fresh database, so a fresh
//! instance id: tests find and clean up their containers by that label.

use crate::helpers::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const IMAGE: &str = "drover-test-runner:latest";
const SESSION_LABEL: &str = "taylored-runner-session-id";
const INSTANCE_LABEL: &str = "io.drover.instance";

/// Why Docker tests cannot run here, if they cannot; builds the test image once.
fn docker_missing() -> Option<String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let info = Command::new("docker")
                .args(["info", "--format", "{{.ServerVersion}}"])
                .output()
                .map_err(|e| format!("cannot run docker: {e}"))?;
            if !info.status.success() {
                return Err(format!(
                    "the Docker engine is not reachable: {}",
                    String::from_utf8_lossy(&info.stderr).trim()
                ));
            }
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/runner-test-image");
            let built = Command::new("bash")
                .arg(script)
                .args([IMAGE, "3000"])
                .output()
                .map_err(|e| format!("cannot run scripts/runner-test-image: {e}"))?;
            if !built.status.success() {
                return Err(format!(
                    "scripts/runner-test-image failed: {}",
                    String::from_utf8_lossy(&built.stderr)
                ));
            }
            Ok(())
        })
        .clone()
        .err()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Container ids carrying `label=value` (`all`: stopped ones too).
fn containers(label: &str, value: &str, all: bool) -> Vec<String> {
    let filter = format!("label={label}={value}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    docker(&args).lines().map(String::from).collect()
}

fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    serde_json::from_str::<Value>(&text).expect("inspect JSON")[0].clone()
}

/// Removes every container of one server instance when the test ends, however it ends.
struct Cleanup(Vec<(String, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (label, value) in &self.0 {
            let filter = format!("label={label}={value}");
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
    }
}

fn instance_id(server: &ServerProcess) -> String {
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.query_row(
        "SELECT value FROM meta WHERE key = 'instance_id'",
        [],
        |r| r.get(0),
    )
    .expect("the server made its instance id")
}

/// Server flags for the Docker driver with the test image.
const DOCKER_ARGS: [&str; 6] = [
    "--runner-driver",
    "docker",
    "--runner-image",
    IMAGE,
    "--runner-port",
    "3000",
];

/// A server with the Docker driver and the test image, plus a guard for its containers.
async fn docker_server(dir: &Path, extra: &[&str]) -> (ServerProcess, Cleanup) {
    docker_server_with(dir, IMAGE, extra).await
}

/// [`docker_server`] with runners from `image`.
async fn docker_server_with(dir: &Path, image: &str, extra: &[&str]) -> (ServerProcess, Cleanup) {
    let mut args = DOCKER_ARGS.to_vec();
    args[3] = image;
    args.extend_from_slice(extra);
    let server = ServerProcess::start(dir, Launch::new().args(args)).await;
    server.wait_for_log("runners reconciled").await;
    let id = instance_id(&server);
    (server, Cleanup(vec![(INSTANCE_LABEL.into(), id)]))
}

async fn post(server: &ServerProcess, path: &str, session: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{}{path}", server.base_url()));
    if let Some(s) = session {
        req = req.header("X-Session-Id", s);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The body a runner's endpoint answers, retried while the container starts.
async fn fetch(endpoint: &str) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    eventually("the runner to answer", EVENT_DEADLINE, || async {
        let resp = http.get(endpoint).send().await.ok()?;
        resp.text().await.ok()
    })
    .await
}

macro_rules! require_docker {
    ($test:literal) => {
        if let Some(why) = docker_missing() {
            missing_part($test, &why);
        }
    };
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn docker_runners_follow_the_contract_from_provision_to_deprovision() {
    require_docker!("docker_runners_follow_the_contract_from_provision_to_deprovision");
    let dir = tempfile::tempdir().unwrap();
    let (server, _cleanup) = docker_server(dir.path(), &[]).await;

    let (status, first) = post(&server, "/api/runner/provision", Some("web-1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["message"], "Runner provisioned successfully.");
    let endpoint = first["endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with("http://localhost:"), "{endpoint}");
    let running = containers(SESSION_LABEL, "web-1", false);
    assert_eq!(running.len(), 1, "one container with the session label");
    let c = inspect(&running[0]);
    assert_eq!(c["Config"]["Image"], IMAGE);
    assert_eq!(c["Config"]["Labels"]["io.drover.managed-by"], "drover");
    assert!(fetch(&endpoint).await.contains("drover test runner"));

    // Hardened by default.
    let host = &c["HostConfig"];
    assert!(
        host["CapDrop"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "ALL"),
        "{host}"
    );
    assert!(
        host["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap().starts_with("no-new-privileges")),
        "{host}"
    );
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], host["Memory"], "no swap beyond memory");
    assert_eq!(host["NanoCpus"], 1_000_000_000i64);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["PortBindings"]["3000/tcp"][0]["HostIp"], "127.0.0.1");

    let (status, again) = post(&server, "/api/runner/provision", Some("web-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["endpoint"], first["endpoint"]);
    assert_eq!(
        containers(SESSION_LABEL, "web-1", true).len(),
        1,
        "no second container"
    );

    let listed = server.client().runners().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].driver, "docker");
    assert_eq!(listed[0].instance.as_deref(), Some(running[0].as_str()));

    let (status, gone) = post(&server, "/api/runner/deprovision", Some("web-1")).await;
    assert_eq!(status, 200, "{gone}");
    assert!(
        containers(SESSION_LABEL, "web-1", true).is_empty(),
        "docker ps -a shows nothing"
    );
    let (status, body) = post(&server, "/api/runner/deprovision", Some("web-1")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND"))
    );
    let (status, body) = post(&server, "/api/runner/deprovision", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("SESSION_ID_REQUIRED"))
    );
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_missing_image_is_reported_and_leaves_nothing_behind() {
    require_docker!("a_missing_image_is_reported_and_leaves_nothing_behind");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().args([
            "--runner-driver",
            "docker",
            "--runner-image",
            "drover-no-such-image:latest",
        ]),
    )
    .await;
    server.wait_for_log("runners reconciled").await;
    let _cleanup = Cleanup(vec![(INSTANCE_LABEL.into(), instance_id(&server))]);
    let (status, body) = post(&server, "/api/runner/provision", Some("s")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("DOCKER_IMAGE_NOT_FOUND")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("drover-no-such-image:latest")
    );
    assert!(containers(INSTANCE_LABEL, &instance_id(&server), true).is_empty());
    assert!(server.client().runners().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_engine_that_is_away_answers_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-docker.sock");
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().args([
            "--runner-driver",
            "docker",
            "--docker-socket",
            socket.to_str().unwrap(),
            "--docker-timeout",
            "2s",
        ]),
    )
    .await;
    let (status, body) = post(&server, "/api/runner/provision", Some("s")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("RUNNER_ENGINE_UNAVAILABLE")),
        "{body}"
    );
    assert!(server.client().runners().await.unwrap().is_empty());
}

/// A runner without heartbeats is removed after the inactivity timeout; one with heartbeats
/// stays.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn docker_runners_without_heartbeats_are_reaped() {
    require_docker!("docker_runners_without_heartbeats_are_reaped");
    let dir = tempfile::tempdir().unwrap();
    let (server, _cleanup) = docker_server(
        dir.path(),
        &[
            "--runner-inactivity-timeout",
            "2s",
            "--runner-cleanup-interval",
            "300ms",
        ],
    )
    .await;
    assert_eq!(
        post(&server, "/api/runner/provision", Some("quiet"))
            .await
            .0,
        201
    );
    assert_eq!(
        post(&server, "/api/runner/provision", Some("chatty"))
            .await
            .0,
        201
    );
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let (status, body) = post(&server, "/api/runner/heartbeat", Some("chatty")).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually("the quiet runner to be reaped", EVENT_DEADLINE, || async {
        containers(SESSION_LABEL, "quiet", true)
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        containers(SESSION_LABEL, "chatty", false).len(),
        1,
        "the chatty one stays"
    );
    let metrics = metrics_text(&server.base_url()).await;
    assert!(
        metrics.contains("drover_runners_reaped_total 1"),
        "{metrics}"
    );
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn reuse_mode_and_the_limit_on_docker() {
    require_docker!("reuse_mode_and_the_limit_on_docker");
    let dir = tempfile::tempdir().unwrap();
    let reuse = ServerProcess::start(
        dir.path(),
        Launch::new()
            .args(["--runner-driver", "docker", "--runner-image", IMAGE])
            .env("REUSE_RUNNER_MODE", "true"),
    )
    .await;
    reuse.wait_for_log("runners reconciled").await;
    let instance = instance_id(&reuse);
    let _cleanup = Cleanup(vec![(INSTANCE_LABEL.into(), instance.clone())]);
    let (s1, first) = post(&reuse, "/api/runner/provision", Some("a")).await;
    let (s2, second) = post(&reuse, "/api/runner/provision", Some("b")).await;
    assert_eq!((s1, s2), (201, 200), "{first} {second}");
    assert_eq!(second["endpoint"], first["endpoint"]);
    assert_eq!(second["sessionId"], "a");
    assert_eq!(containers(INSTANCE_LABEL, &instance, true).len(), 1);
    let (_, beat) = post(&reuse, "/api/runner/heartbeat", Some("a")).await;
    assert_eq!(beat["message"], "Heartbeat received for singleton runner.");
    let (status, beat) = post(&reuse, "/api/runner/heartbeat", Some("b")).await;
    assert_eq!(status, 404);
    assert_eq!(
        beat["message"],
        "Singleton runner not found or session ID mismatch."
    );

    let dir = tempfile::tempdir().unwrap();
    let (limited, _cleanup) = docker_server(dir.path(), &["--max-runners", "1"]).await;
    let limited_instance = instance_id(&limited);
    assert_eq!(
        post(&limited, "/api/runner/provision", Some("x")).await.0,
        201
    );
    let (status, body) = post(&limited, "/api/runner/provision", Some("y")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("RUNNER_LIMIT_REACHED"))
    );
    assert_eq!(
        containers(INSTANCE_LABEL, &limited_instance, true).len(),
        1,
        "nothing was started"
    );
}

/// `kill -9` the server with runners alive. At the next start it adopts the runners it knows
/// (heartbeat and deprovision work), removes a container it started that the store no longer
/// knows, and leaves another instance's container alone.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_restarted_server_adopts_its_runners_and_removes_its_orphans() {
    require_docker!("a_restarted_server_adopts_its_runners_and_removes_its_orphans");
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _cleanup) = docker_server(dir.path(), &[]).await;
    let port = server.port();
    let instance = instance_id(&server);
    assert_eq!(
        post(&server, "/api/runner/provision", Some("kept")).await.0,
        201
    );
    assert_eq!(
        post(&server, "/api/runner/provision", Some("orphan"))
            .await
            .0,
        201
    );
    let kept = containers(SESSION_LABEL, "kept", false);
    let orphan = containers(SESSION_LABEL, "orphan", false);
    assert_eq!((kept.len(), orphan.len()), (1, 1));

    // Another drover instance's runner, which this server must never touch.
    let foreign_instance = format!("other-{}", std::process::id());
    let _foreign_cleanup = Cleanup(vec![(INSTANCE_LABEL.into(), foreign_instance.clone())]);
    docker(&[
        "create",
        "--label",
        "io.drover.managed-by=drover",
        "--label",
        &format!("{INSTANCE_LABEL}={foreign_instance}"),
        IMAGE,
    ]);

    server.kill9();
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.execute("DELETE FROM runners WHERE session_id = 'orphan'", [])
        .unwrap();
    drop(db);

    let server = ServerProcess::start_on(dir.path(), Launch::new().args(DOCKER_ARGS), port).await;
    server.wait_for_log("runners reconciled").await;
    assert_eq!(
        instance_id(&server),
        instance,
        "the same instance after a restart"
    );
    assert!(
        containers(SESSION_LABEL, "orphan", true).is_empty(),
        "the orphan was removed"
    );
    assert_eq!(
        containers(SESSION_LABEL, "kept", false),
        kept,
        "the known runner was adopted"
    );
    assert_eq!(
        containers(INSTANCE_LABEL, &foreign_instance, true).len(),
        1,
        "another instance's container is left alone"
    );

    let (status, body) = post(&server, "/api/runner/heartbeat", Some("kept")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&server, "/api/runner/deprovision", Some("kept")).await;
    assert_eq!(status, 200, "{body}");
    assert!(containers(SESSION_LABEL, "kept", true).is_empty());
}

/// The process driver through the binary's flags: the same contract without Docker, here also
/// on a listener of its own (`--runner-listen`, for clients that expect the contract's port).
#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_process_driver_serves_the_same_contract() {
    if let Some(why) = missing_tool(&["python3"]) {
        missing_part("the_process_driver_serves_the_same_contract", &why);
    }
    let runner = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../drover-runners/tests/fixtures/http_runner.py");
    let command = format!("python3 '{}'", runner.display());
    let dir = tempfile::tempdir().unwrap();
    let runner_port = free_port();
    let logs = dir.path().join("runner-logs");
    let listen = format!("127.0.0.1:{runner_port}");
    let server = ServerProcess::start(
        dir.path(),
        Launch::new().args([
            "--runner-driver",
            "process",
            "--runner-command",
            &command,
            "--runner-listen",
            &listen,
            "--runner-log-dir",
            logs.to_str().unwrap(),
        ]),
    )
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{listen}/api/runner/provision"))
        .header("X-Session-Id", "p-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    let other = http
        .get(format!("http://{listen}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404, "only the runner routes there");
    let text = fetch(body["endpoint"].as_str().unwrap()).await;
    assert_eq!(text, "runner p-1\n");
    let log = std::fs::read_to_string(logs.join("p-1.log")).unwrap_or_default();
    assert!(
        log.starts_with("serving on port "),
        "the runner's output: {log:?}"
    );

    let mut list = drover_command(dir.path());
    list.args(["runners", "--server", &server.base_url()]);
    let listed = run_to_exit(list, dir.path(), "drover runners", EXIT_DEADLINE);
    assert!(listed.status.success(), "{listed}");
    let table = listed.stdout.lines().nth(1).unwrap_or_default().to_string();
    // Without an API key the listing hides session ids: they are all the contract asks to
    // stop a runner (issue 10, finding 2).
    assert!(
        table.starts_with("***") && table.contains("process") && table.contains("RUNNING"),
        "{listed}"
    );
    let (status, _) = post(&server, "/api/runner/heartbeat", Some("p-1")).await;
    assert_eq!(status, 200);
    let (status, body) = post(&server, "/api/runner/deprovision", Some("p-1")).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.client().runners().await.unwrap().is_empty());
}

/// Builds `tag` with `docker build` from a Dockerfile given on standard input and a context
/// directory (or none): every base it names is already on the engine, so nothing is pulled.
fn docker_build(tag: &str, dockerfile: Option<&str>, context: Option<&Path>, args: &[&str]) {
    use std::io::Write;
    let mut cmd = Command::new("docker");
    cmd.args(["build", "-q", "-t", tag]).args(args);
    match (dockerfile, context) {
        (Some(_), None) => cmd.arg("-"),
        (_, Some(dir)) => cmd.arg(dir),
        (None, None) => unreachable!("a Dockerfile or a context"),
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker build runs");
    let mut stdin = child.stdin.take().unwrap();
    if let (Some(text), None) = (dockerfile, context) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address of the default Docker bridge on this host: what a container reaches the host at.
/// The engine's IPAM often names no gateway, so it is read from the bridge's interface.
fn bridge_address() -> String {
    let name = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        r#"{{index .Options "com.docker.network.bridge.name"}}"#,
    ]);
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", name.trim()])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on the bridge {name:?}: {text}"))
        .to_string()
}

/// Removes an image when the test ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

/// A container that exits soon after it started fails its provision with the contract's 500,
/// and leaves neither a record nor a container.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_container_that_exits_at_once_fails_its_provision_and_leaves_nothing() {
    require_docker!("a_container_that_exits_at_once_fails_its_provision_and_leaves_nothing");
    let dir = tempfile::tempdir().unwrap();
    let image = format!("drover-test-exits:{}", std::process::id());
    docker_build(
        &image,
        Some(&format!(
            "FROM {IMAGE}\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"exit 7\"]\n"
        )),
        None,
        &[],
    );
    let _image = RemoveImage(image.clone());
    let (server, _cleanup) = docker_server_with(dir.path(), &image, &[]).await;
    let id = instance_id(&server);
    let (status, body) = post(&server, "/api/runner/provision", Some("exits")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("SERVER_ERROR")),
        "{body}"
    );
    assert!(
        body["details"].as_str().unwrap().contains("exit code 7"),
        "{body}"
    );
    assert!(server.client().runners().await.unwrap().is_empty());
    assert!(containers(INSTANCE_LABEL, &id, true).is_empty());
}

/// A container killed from outside is noticed: a heartbeat for it answers 404 and removes the
/// stopped container; one nobody asks about is found by the runner worker and removed too.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_killed_container_is_noticed_forgotten_and_removed() {
    require_docker!("a_killed_container_is_noticed_forgotten_and_removed");
    let dir = tempfile::tempdir().unwrap();
    let (server, _cleanup) =
        docker_server(dir.path(), &["--runner-cleanup-interval", "300ms"]).await;
    for s in ["beating", "quiet"] {
        let (status, body) = post(&server, "/api/runner/provision", Some(s)).await;
        assert_eq!(status, 201, "{body}");
    }
    let beating = containers(SESSION_LABEL, "beating", false);
    docker(&["kill", &beating[0]]);
    let (status, body) = post(&server, "/api/runner/heartbeat", Some("beating")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("RUNNER_NOT_FOUND")),
        "{body}"
    );
    assert!(
        containers(SESSION_LABEL, "beating", true).is_empty(),
        "the stopped container is removed"
    );

    let quiet = containers(SESSION_LABEL, "quiet", false);
    docker(&["kill", &quiet[0]]);
    eventually(
        "the worker to forget the killed runner",
        EVENT_DEADLINE,
        || async {
            let left = server.client().runners().await.ok()?;
            left.is_empty().then_some(())
        },
    )
    .await;
    assert!(containers(SESSION_LABEL, "quiet", true).is_empty());
    let (status, _) = post(&server, "/api/runner/heartbeat", Some("quiet")).await;
    assert_eq!(status, 404);
    let metrics = metrics_text(&server.base_url()).await;
    assert!(
        metrics.contains("drover_runners_exited_total 2"),
        "{metrics}"
    );
}

/// `examples/runner` as a Docker image, built here from a local python base
/// (`examples/runner/python-base`, nothing pulled): drover provisions it, the runner answers on
/// its endpoint and heartbeats from inside its container with its own token (the runner routes
/// are also served on the Docker bridge's address, behind an API key), and a deprovision
/// removes it.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn the_example_runner_runs_on_docker_and_heartbeats_from_its_container() {
    require_docker!("the_example_runner_runs_on_docker_and_heartbeats_from_its_container");
    if let Some(why) = missing_tool(&["python3", "ldd", "ip"]) {
        missing_part(
            "the_example_runner_runs_on_docker_and_heartbeats_from_its_container",
            &why,
        );
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/runner");
    let base = Command::new("bash")
        .arg(example.join("python-base"))
        .output()
        .unwrap();
    assert!(
        base.status.success(),
        "python-base: {}",
        String::from_utf8_lossy(&base.stderr)
    );
    let image = format!("drover-example-runner:{}", std::process::id());
    docker_build(
        &image,
        None,
        Some(&example),
        &[
            "--build-arg",
            "BASE=drover-python-base:latest",
            "--build-arg",
            "HEARTBEAT_SECONDS=0.2",
        ],
    );
    let _image = RemoveImage(image.clone());
    let gateway = bridge_address();
    let listen = format!("{gateway}:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{listen}");
    let extra = [
        "--runner-listen",
        &listen,
        "--runner-drover-url",
        &url,
        "--api-key",
        "the-api-key",
    ];
    let (server, _cleanup) = docker_server_with(dir.path(), &image, &extra).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/runner/provision", server.base_url()))
        .bearer_auth("the-api-key")
        .header("X-Session-Id", "web-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    let endpoint = body["endpoint"].as_str().unwrap().to_string();
    let seen = eventually(
        "the runner's heartbeats to be taken",
        EVENT_DEADLINE,
        || async {
            let seen: Value = http.get(&endpoint).send().await.ok()?.json().await.ok()?;
            (seen["heartbeats"].as_u64() >= Some(2)).then_some(seen)
        },
    )
    .await;
    assert_eq!(seen["session"], "web-1", "{seen}");

    let resp = http
        .post(format!("{}/api/runner/deprovision", server.base_url()))
        .bearer_auth("the-api-key")
        .header("X-Session-Id", "web-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(containers(SESSION_LABEL, "web-1", true).is_empty());
}
