//! The Docker driver against the real Docker Engine on this machine.
//!
//! Each test skips (with a line saying so) when `docker info` fails. The runner image comes from
//! `scripts/runner-test-image`, built once per run. Every test labels its containers with its own
//! random instance value, so tests running in parallel never see each other's containers, and a
//! guard removes whatever carries that value when the test ends, passed or not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use drover_runners::docker::{DockerConfig, DockerDriver};
use drover_runners::{
    Driver, DriverError, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, StartSpec, Started,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "drover-test-runner:latest";
const PORT: u16 = 3000;
const BODY: &str = "drover test runner";
const SESSION_LABEL: &str = "io.drover.session";

/// Why Docker cannot be used here, if it cannot.
fn docker_missing() -> Option<String> {
    match Command::new("docker").arg("info").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "docker info failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("docker not runnable: {e}")),
    }
}

/// Builds the test image once per test binary; the script skips the build when it exists.
fn test_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/runner-test-image");
        let out = Command::new("bash")
            .arg(&script)
            .arg(IMAGE)
            .arg(PORT.to_string())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    IMAGE
}

/// Fails the test when Docker cannot be used here. Tests using it are ignored where the engine
/// was missing at build time (`build/parts.rs`); under CI it must be there.
macro_rules! require_docker {
    ($test:literal) => {
        if let Some(reason) = docker_missing() {
            panic!("{} needs a Docker engine: {reason}", $test);
        }
    };
}

/// What the server would ask for: a session's labels under one server instance.
fn spec(instance: &str, session_id: &str) -> StartSpec {
    StartSpec {
        session_id: session_id.to_owned(),
        labels: BTreeMap::from([
            (SESSION_LABEL.to_owned(), session_id.to_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        ]),
        env: BTreeMap::new(),
    }
}

/// One test's containers: its own label value, and their removal when the test ends.
struct Scope {
    instance: String,
}

impl Scope {
    fn new() -> Self {
        Self {
            instance: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn spec(&self, session_id: &str) -> StartSpec {
        spec(&self.instance, session_id)
    }

    /// Ids of every container (running or not) carrying this scope's label, per the CLI.
    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label={INSTANCE_LABEL}={}", self.instance))
            .output()
            .expect("docker ps runs");
        assert!(out.status.success(), "docker ps failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

fn driver() -> DockerDriver {
    DockerDriver::new(DockerConfig {
        image: test_image().to_owned(),
        container_port: PORT,
        ..Default::default()
    })
}

/// `docker inspect` of one container, as JSON.
fn inspect(id: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker inspect runs");
    assert!(
        out.status.success(),
        "docker inspect {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect is JSON");
    all[0].clone()
}

/// The body of `GET /` on the host port, retried while the server in the container starts.
async fn get_root(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_get_root(port).await {
            Ok(body) => return body,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("GET http://127.0.0.1:{port}/ never answered: {e}"),
        }
    }
}

async fn try_get_root(port: u16) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 5s".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("not a 200: {head:?}"));
    }
    Ok(body.to_owned())
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn start_serves_lists_and_stop_removes() {
    require_docker!("start_serves_lists_and_stop_removes");
    let scope = Scope::new();
    let driver = driver();
    let spec = scope.spec("ses_one");

    let began = Instant::now();
    let Started {
        instance,
        host_port,
    } = driver.start(&spec).await.expect("start");
    eprintln!("start took {:?}", began.elapsed());

    let inspected = inspect(&instance);
    assert_eq!(inspected["Config"]["Image"], IMAGE);
    assert_eq!(inspected["State"]["Running"], true);
    for (key, value) in &spec.labels {
        assert_eq!(inspected["Config"]["Labels"][key], value.as_str(), "{key}");
    }
    let name = inspected["Name"].as_str().unwrap_or_default();
    assert!(name.starts_with("/drover-runner-ses_one-"), "{name}");

    assert_eq!(get_root(host_port).await.trim(), BODY);

    let found = driver
        .list(INSTANCE_LABEL, &scope.instance)
        .await
        .expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].instance, instance);
    assert!(found[0].running);
    assert_eq!(found[0].labels, spec.labels);

    let began = Instant::now();
    driver.stop(&instance).await.expect("stop");
    eprintln!("stop took {:?}", began.elapsed());
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
    assert!(
        driver
            .list(INSTANCE_LABEL, &scope.instance)
            .await
            .expect("list")
            .is_empty()
    );

    driver
        .stop(&instance)
        .await
        .expect("stopping a container that is gone");
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn containers_are_hardened() {
    require_docker!("containers_are_hardened");
    let scope = Scope::new();
    let driver = driver();
    let started = driver.start(&scope.spec("ses_hard")).await.expect("start");

    let inspected = inspect(&started.instance);
    let host = &inspected["HostConfig"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        strings(&host["CapDrop"]).contains(&"ALL".to_owned()),
        "{host}"
    );
    assert!(
        strings(&host["SecurityOpt"])
            .iter()
            .any(|o| o.starts_with("no-new-privileges")),
        "{host}"
    );
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], 512 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 1_000_000_000);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(host["Tmpfs"]["/tmp"].is_string(), "{host}");
    let bindings = &host["PortBindings"][format!("{PORT}/tcp")];
    assert_eq!(bindings[0]["HostIp"], "127.0.0.1", "{host}");
    let published = &inspected["NetworkSettings"]["Ports"][format!("{PORT}/tcp")];
    assert_eq!(published[0]["HostIp"], "127.0.0.1", "{inspected}");
    assert_eq!(
        published[0]["HostPort"],
        started.host_port.to_string(),
        "{inspected}"
    );

    // What the kernel enforces, seen from inside: no capabilities, no new privileges, a
    // read-only root and a writable /tmp.
    let exec = |script: &str| {
        let out = Command::new("docker")
            .args([
                "exec",
                &started.instance,
                "/bin/busybox",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("docker exec runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, status) = exec("/bin/busybox grep -E '^(CapEff|NoNewPrivs)' /proc/self/status");
    assert!(ok, "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let (ok, out) = exec("echo x > /written");
    assert!(!ok, "the root is writable: {out}");
    let (ok, out) = exec("echo x > /tmp/written && /bin/busybox cat /tmp/written");
    assert!(ok && out.trim() == "x", "{out}");

    assert_eq!(get_root(started.host_port).await.trim(), BODY);
    driver.stop(&started.instance).await.expect("stop");
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_missing_image_is_image_not_found_and_leaves_nothing() {
    require_docker!("a_missing_image_is_image_not_found_and_leaves_nothing");
    let scope = Scope::new();
    let image = format!("drover-no-such-image:{}", scope.instance);
    let driver = DockerDriver::new(DockerConfig {
        image: image.clone(),
        ..Default::default()
    });
    let err = driver
        .start(&scope.spec("ses_noimage"))
        .await
        .expect_err("no image");
    assert_eq!(err, DriverError::ImageNotFound(image));
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn stop_removes_a_container_that_already_exited() {
    require_docker!("stop_removes_a_container_that_already_exited");
    let scope = Scope::new();
    let driver = driver();
    let started = driver
        .start(&scope.spec("ses_exited"))
        .await
        .expect("start");

    let out = Command::new("docker")
        .args(["stop", "-t", "0", &started.instance])
        .output()
        .expect("docker stop runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = driver
        .list(INSTANCE_LABEL, &scope.instance)
        .await
        .expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found[0].running, "{found:?}");

    driver.stop(&started.instance).await.expect("stop");
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No engine is reached, so nothing can be left behind: no scope, and no Docker needed.
    let spec = spec("test-unreachable", "ses_nowhere");

    // No socket at all.
    let driver = DockerDriver::new(DockerConfig {
        socket: Some(dir.path().join("missing.sock")),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let began = Instant::now();
    let err = driver.start(&spec).await.expect_err("no engine");
    eprintln!("no socket: {err}");
    assert!(matches!(err, DriverError::Unavailable(_)), "{err:?}");
    assert!(matches!(
        driver.stop("x").await,
        Err(DriverError::Unavailable(_))
    ));
    assert!(matches!(
        driver.list(INSTANCE_LABEL, "x").await,
        Err(DriverError::Unavailable(_))
    ));
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    // A socket file nobody listens on: connection refused.
    let path = dir.path().join("refusing.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let driver = DockerDriver::new(DockerConfig {
        socket: Some(path),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let began = Instant::now();
    let err = driver.start(&spec).await.expect_err("nobody listens");
    eprintln!("nobody listening: {err}");
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("refused")),
        "{err:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    // An engine that accepts and never answers: the call bound ends the wait.
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let driver = DockerDriver::new(DockerConfig {
        socket: Some(path),
        call_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let began = Instant::now();
    let err = driver.start(&spec).await.expect_err("silent engine");
    let took = began.elapsed();
    eprintln!("silent engine: {err} (after {took:?})");
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("no answer")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    silent.abort();
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn parallel_starts_get_distinct_ports() {
    require_docker!("parallel_starts_get_distinct_ports");
    let scope = Scope::new();
    let driver = driver();
    let (a, b) = (scope.spec("ses_a"), scope.spec("ses_b"));
    let (a, b) = tokio::join!(driver.start(&a), driver.start(&b));
    let (a, b) = (a.expect("start a"), b.expect("start b"));
    assert_ne!(a.instance, b.instance);
    assert_ne!(a.host_port, b.host_port);
    assert_eq!(get_root(a.host_port).await.trim(), BODY);
    assert_eq!(get_root(b.host_port).await.trim(), BODY);
    assert_eq!(
        driver
            .list(INSTANCE_LABEL, &scope.instance)
            .await
            .expect("list")
            .len(),
        2
    );
    let (sa, sb) = tokio::join!(driver.stop(&a.instance), driver.stop(&b.instance));
    sa.expect("stop a");
    sb.expect("stop b");
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_start_that_fails_after_create_leaves_nothing() {
    require_docker!("a_start_that_fails_after_create_leaves_nothing");
    let scope = Scope::new();
    // An image whose command does not exist: the engine creates the container, then refuses to
    // start it.
    let image = format!("drover-test-broken:{}", scope.instance);
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"tar -cf - -T /dev/null | docker import --change 'CMD ["/no/such/program"]' - "$0""#)
        .arg(&image)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["image", "rm", &self.0])
                .output();
        }
    }
    let _image = RemoveImage(image.clone());

    // Without an init the engine refuses the start. (With one, the init starts and exits at
    // once: a container that exits before it answers, which
    // `a_container_that_exits_or_never_answers_is_a_failed_start_and_is_removed` covers.)
    let driver = DockerDriver::new(DockerConfig {
        image,
        init: false,
        ..Default::default()
    });
    let err = driver
        .start(&scope.spec("ses_broken"))
        .await
        .expect_err("no such program");
    assert!(
        matches!(&err, DriverError::Failed(m) if m.contains("starting the container")),
        "{err:?}"
    );
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
}

#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_driver_made_while_the_engine_is_away_works_once_it_is_there() {
    require_docker!("a_driver_made_while_the_engine_is_away_works_once_it_is_there");
    let scope = Scope::new();
    // The engine "comes up" when a link to its socket appears where the driver looks.
    let engine = DockerDriver::new(DockerConfig::default())
        .socket()
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("docker.sock");
    let driver = DockerDriver::new(DockerConfig {
        socket: Some(link.clone()),
        image: test_image().to_owned(),
        ..Default::default()
    });
    let err = driver
        .list(INSTANCE_LABEL, &scope.instance)
        .await
        .expect_err("no engine yet");
    assert!(matches!(err, DriverError::Unavailable(_)), "{err:?}");

    std::os::unix::fs::symlink(&engine, &link).expect("link the socket");
    let found = driver
        .list(INSTANCE_LABEL, &scope.instance)
        .await
        .expect("the engine is there now");
    assert!(found.is_empty(), "{found:?}");
    let started = driver.start(&scope.spec("ses_late")).await.expect("start");
    driver.stop(&started.instance).await.expect("stop");
}

/// An image made from the test image with another command (`docker build` from a local base:
/// nothing is pulled), removed when the guard goes.
struct DerivedImage(String);

impl DerivedImage {
    fn new(scope: &Scope, name: &str, cmd: &str) -> Self {
        let tag = format!("drover-test-{name}:{}", scope.instance);
        let dockerfile = format!("FROM {}\nCMD {cmd}\n", test_image());
        let mut build = Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker build runs");
        use std::io::Write;
        build
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let out = build.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker build {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        DerivedImage(tag)
    }
}

impl Drop for DerivedImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", &self.0])
            .output();
    }
}

/// A container that exits soon after it started, or one that runs but never answers on its
/// port, is a failed start: the driver waits for the runner's answer, not only for the engine's
/// start, and removes the container.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn a_container_that_exits_or_never_answers_is_a_failed_start_and_is_removed() {
    require_docker!("a_container_that_exits_or_never_answers_is_a_failed_start_and_is_removed");
    let scope = Scope::new();
    let exits = DerivedImage::new(
        &scope,
        "exits",
        r#"["/bin/busybox", "sh", "-c", "sleep 0.5; exit 7"]"#,
    );
    let silent = DerivedImage::new(&scope, "silent", r#"["/bin/busybox", "sleep", "600"]"#);
    for (image, why) in [(&exits.0, "exit code 7"), (&silent.0, "did not answer")] {
        let driver = DockerDriver::new(DockerConfig {
            image: image.clone(),
            container_port: PORT,
            start_timeout: Duration::from_secs(3),
            stop_grace: Duration::from_secs(1),
            ..Default::default()
        });
        let err = driver
            .start(&scope.spec("ses_failing"))
            .await
            .expect_err("a failed start");
        assert!(
            matches!(&err, DriverError::Failed(m) if m.contains(why)),
            "{image}: {err:?}"
        );
        assert!(scope.containers().is_empty(), "{:?}", scope.containers());
    }
}

/// `running` follows the container: true while it serves, false once it was killed from outside
/// or removed.
#[cfg_attr(
    missing_docker,
    ignore = "needs a Docker engine (docker info), missing where this was built"
)]
#[tokio::test]
async fn running_notices_a_container_killed_from_outside() {
    require_docker!("running_notices_a_container_killed_from_outside");
    let scope = Scope::new();
    let driver = driver();
    let mut spec = scope.spec("ses_killed");
    spec.env
        .insert("DROVER_RUNNER_TOKEN".into(), "t0ken".into());
    let started = driver.start(&spec).await.expect("start");
    assert!(driver.running(&started.instance).await.unwrap());
    let env = inspect(&started.instance)["Config"]["Env"].clone();
    for var in [
        "DROVER_RUNNER_TOKEN=t0ken",
        "DROVER_RUNNER_SESSION_ID=ses_killed",
        "PORT=3000",
    ] {
        assert!(
            env.as_array().unwrap().iter().any(|v| v == var),
            "{var} in {env}"
        );
    }

    let out = Command::new("docker")
        .args(["kill", &started.instance])
        .output()
        .expect("docker kill runs");
    assert!(out.status.success());
    assert!(!driver.running(&started.instance).await.unwrap());
    driver.stop(&started.instance).await.expect("stop");
    assert!(!driver.running(&started.instance).await.unwrap());
    assert!(scope.containers().is_empty());
}
