//! The harness: runs the real `drover` binary as a child process on a free loopback port, with
//! its output captured to a log file in the test's temporary directory.
//!
//! Nothing here contacts any address but 127.0.0.1 and the network namespaces a test made
//! (`netns`). Waits are polls with generous deadlines,
//! never timed assertions: a slow machine makes a test slower, not red.

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_drover");

/// The batch-coordinator contract, whose scripts and SQL the tests run unchanged.
pub const CONTRACT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/contracts/batch-coordinator.md"
);

/// How long a server may take to answer its first health check.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to exit once asked to (or once it should have).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a background effect (a reaper, a log line) may take to show up.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(50);

/// A free loopback port: bind port 0, read what the kernel gave, let it go.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The full path of a program on `PATH`, if there is one.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Fails the test, saying which outside part it needs and why that part is missing. A test that
/// needs a part carries `#[cfg_attr(missing_<part>, ignore = ...)]` (`build/parts.rs`), so it
/// shows as ignored where the part was missing at build time, and gets here only when the part
/// went away after the build, or under CI, where every part must be present.
pub fn missing_part(test: &str, reason: &str) -> ! {
    panic!("{test} needs a part that is missing here: {reason}")
}

/// The first tool of `names` that is not installed, if any.
pub fn missing_tool(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| find_tool(n).is_none())
        .map(|n| format!("`{n}` is not installed"))
}

/// The contract's text; a test that needs it fails when it is missing.
pub fn contract() -> String {
    read_contract().unwrap_or_else(|why| missing_part("reading the contract", &why))
}

/// Reads the contract, or says why it cannot.
pub fn read_contract() -> Result<String, String> {
    std::fs::read_to_string(CONTRACT)
        .map_err(|e| format!("cannot read the contract {CONTRACT}: {e}"))
}

/// A command for the binary with an environment cleaned of every setting the server reads, so
/// the tests' own environment cannot leak into the child. Logging is pinned to `info`, the level
/// the asserted log lines are written at.
pub fn drover_command(dir: &Path) -> Command {
    drover_command_in(dir, None)
}

/// [`drover_command`], run inside the network namespace `namespace` (`ip netns exec`, which
/// execs the binary: the child is drover itself) when one is given.
pub fn drover_command_in(dir: &Path, namespace: Option<&str>) -> Command {
    let mut cmd = match namespace {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("DROVER_") || key_text.starts_with("ORHESTRA_") {
            cmd.env_remove(&key);
        }
    }
    // Tests run servers side by side: each takes a free gRPC port, not the shared default.
    cmd.env("RUST_LOG", "info")
        .env("DROVER_GRPC_PORT", "0")
        .env_remove("RUST_LOG_STYLE")
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end in its own process group, its output going to files named after
/// `name` in `dir`. A command still running after `deadline` is killed with its whole group and
/// the test fails (a hang, not a slow machine, is what such a deadline catches).
pub fn run_to_exit(mut cmd: Command, dir: &Path, name: &str, deadline: Duration) -> Finished {
    use std::os::unix::process::CommandExt;
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > deadline {
            // SAFETY: kill(2) with a negative pid signals the process group the child leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
            panic!(
                "{name} still ran after {deadline:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(POLL);
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into(),
    }
}

/// Polls `probe` until it yields a value; fails the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How to start a server beyond the harness's own `--port` and `--db`.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    port_env: Option<String>,
    db: Option<PathBuf>,
    /// The server speaks https with a certificate of this CA (PEM), which the harness trusts.
    ca_pem: Option<Vec<u8>>,
    /// The network namespace it runs in and its address there.
    namespace: Option<(String, std::net::Ipv4Addr)>,
}

impl Launch {
    pub fn new() -> Self {
        Launch::default()
    }

    /// Extra command-line arguments after `drover server --port P --db D`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the server.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps the database at `path` instead of `<dir>/drover.db` (the log stays in `dir`).
    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db = Some(path.into());
        self
    }

    /// Gives the port in this environment variable (e.g. `ORHESTRA_PORT`) instead of `--port`.
    pub fn port_via_env(mut self, var: impl Into<String>) -> Self {
        self.port_env = Some(var.into());
        self
    }

    /// Runs in `host`'s network namespace, listening on its address there (unauthenticated:
    /// only the test's own namespaces reach it).
    pub fn in_namespace(mut self, host: &crate::netns::Host) -> Self {
        self.args.extend([
            "--bind".to_string(),
            host.address.to_string(),
            "--allow-unauthenticated".to_string(),
        ]);
        self.namespace = Some((host.namespace.clone(), host.address));
        self
    }

    /// Serves https with `ca`'s server certificate (`--tls-cert`, `--tls-key`); the harness's
    /// health checks and clients trust `ca`.
    pub fn https(mut self, ca: &PrivateCa) -> Self {
        self.args.extend([
            "--tls-cert".to_string(),
            ca.cert.display().to_string(),
            "--tls-key".to_string(),
            ca.key.display().to_string(),
        ]);
        self.ca_pem = Some(std::fs::read(&ca.ca_pem).expect("the CA's PEM file"));
        self
    }
}

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM files
/// in a directory: what an operator makes for replicas that talk across machines.
pub struct PrivateCa {
    /// The CA's certificate: what clients are given with `--ca-cert`.
    pub ca_pem: PathBuf,
    /// The server's certificate and key: `--tls-cert`, `--tls-key`.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PrivateCa {
    pub fn create(dir: &Path) -> PrivateCa {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "drover test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
            .expect("the CA's certificate");
        let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server certificate parameters");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a server key");
        let cert = leaf.signed_by(&key, &ca).expect("the server's certificate");
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("writing a PEM file");
            path
        };
        PrivateCa {
            ca_pem: write("ca.pem", ca.pem()),
            cert: write("server-cert.pem", cert.pem()),
            key: write("server-key.pem", key.serialize_pem()),
        }
    }
}

/// A running `drover` child process whose output goes to a log file. Killed (SIGKILL) when
/// dropped; when a test panics, its log is printed first.
pub struct DroverChild {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    log_path: PathBuf,
}

impl DroverChild {
    /// Spawns `cmd` with stdout and stderr appended to `<dir>/<name>-<n>.log`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> DroverChild {
        let log_path = (1..)
            .map(|n| dir.join(format!("{name}-{n}.log")))
            .find(|p| !p.exists())
            .expect("a free log file name");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create the log file");
        cmd.stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        DroverChild {
            name: name.to_string(),
            child,
            exited: None,
            log_path,
        }
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if started.elapsed() > EVENT_DEADLINE {
                panic!(
                    "the {} log has no {needle:?} after {EVENT_DEADLINE:?}:\n{log}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether it has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("wait for the child");
        }
        self.exited
    }

    /// `kill -9`: no chance to flush, close or say goodbye. Waits for the process to be gone.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal(libc::SIGKILL);
        let status = self.child.wait().expect("wait for the killed child");
        self.exited = Some(status);
        status
    }

    /// Waits for the process to exit on its own within [`EXIT_DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if started.elapsed() > EXIT_DEADLINE {
                self.kill9();
                panic!(
                    "the {} did not exit within {EXIT_DEADLINE:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then waits for the process to exit on its own and returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it cannot have been
        // reused by another process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }
}

impl Drop for DroverChild {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}--- end of log ---",
                self.name,
                self.log_path.display(),
                self.log()
            );
        }
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `drover server` child process.
pub struct ServerProcess {
    process: DroverChild,
    port: u16,
    db: PathBuf,
    /// The CA of its certificate, when it speaks https.
    ca_pem: Option<Vec<u8>>,
    /// Where it listens: 127.0.0.1, or its address in its network namespace.
    host: String,
}

impl ServerProcess {
    /// Starts `drover server --port P --db <dir>/drover.db <launch args>` in `dir` and waits
    /// until `GET /api/v1/health` answers healthy. A port taken between picking and binding it
    /// (another test may race for it) is retried with a new one.
    pub async fn start(dir: &Path, launch: Launch) -> ServerProcess {
        const TRIES: u32 = 3;
        for attempt in 1..=TRIES {
            let mut server = ServerProcess::spawn(dir, &launch, free_port());
            match server.wait_healthy().await {
                Ok(()) => return server,
                Err(why) if attempt < TRIES && why.contains("Address already in use") => {
                    eprintln!("port {} was taken; trying another", server.port);
                }
                Err(why) => panic!("drover server did not become healthy: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts a server again on `port` (a restart: same directory, same database).
    pub async fn start_on(dir: &Path, launch: Launch, port: u16) -> ServerProcess {
        let mut server = ServerProcess::spawn(dir, &launch, port);
        if let Err(why) = server.wait_healthy().await {
            panic!("drover server did not become healthy on port {port}: {why}");
        }
        server
    }

    fn spawn(dir: &Path, launch: &Launch, port: u16) -> ServerProcess {
        let db = launch.db.clone().unwrap_or_else(|| dir.join("drover.db"));
        let mut cmd = drover_command_in(dir, launch.namespace.as_ref().map(|(ns, _)| ns.as_str()));
        cmd.arg("server");
        match &launch.port_env {
            Some(var) => {
                cmd.env(var, port.to_string());
            }
            None => {
                cmd.arg("--port").arg(port.to_string());
            }
        }
        cmd.arg("--db").arg(&db).args(&launch.args);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        ServerProcess {
            process: DroverChild::spawn(cmd, dir, "server"),
            port,
            db,
            ca_pem: launch.ca_pem.clone(),
            host: launch
                .namespace
                .as_ref()
                .map_or_else(|| "127.0.0.1".to_string(), |(_, a)| a.to_string()),
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(pem) = &self.ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA"));
        }
        let http = http.build().expect("HTTP client");
        let url = format!("{}/api/v1/health", self.base_url());
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.try_exit() {
                return Err(format!(
                    "it exited ({status}) before answering:\n{}",
                    self.log()
                ));
            }
            let last = match http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    if body["status"] == "healthy" {
                        return Ok(());
                    }
                    format!("answered {body}")
                }
                Ok(resp) => format!("answered {}", resp.status()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "not healthy after {START_DEADLINE:?} (last: {last}):\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (or its address in its namespace), or `https://localhost:PORT`
    /// (the certificate's name) for a server that speaks https.
    pub fn base_url(&self) -> String {
        match self.ca_pem {
            Some(_) => format!("https://localhost:{}", self.port),
            None => format!("http://{}:{}", self.host, self.port),
        }
    }

    /// The SQLite file the server keeps its state in.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// A typed client of this server, without keys (trusting its CA when it speaks https).
    pub fn client(&self) -> drover_client::Client {
        let client = drover_client::Client::new(self.base_url());
        match &self.ca_pem {
            Some(pem) => client
                .with_root_certificate(pem)
                .expect("the CA's certificate"),
            None => client,
        }
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        self.process.wait_for_log(needle).await
    }

    /// `kill -9`: no chance to flush, close or say goodbye. Waits for the process to be gone.
    pub fn kill9(&mut self) -> ExitStatus {
        self.process.kill9()
    }

    /// SIGTERM, then waits for the server to exit on its own and returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.terminate()
    }
}

/// Sends heartbeats for a spot every `every` until dropped, as a live agent would.
pub struct Heartbeats(tokio::task::JoinHandle<()>);

impl Heartbeats {
    pub fn start(client: drover_client::Client, spot_id: &str, every: Duration) -> Heartbeats {
        let req = drover_api::HeartbeatRequest {
            spot_id: spot_id.to_string(),
            ip_address: Some("127.0.0.1".into()),
            cpu_load: Some(1.0),
            running_tasks: Some(0),
            total_cores: Some(2),
            free_memory_bytes: None,
        };
        Heartbeats(tokio::spawn(async move {
            loop {
                // A missed beat is what the reapers are about; the test asserts on outcomes.
                let _ = client.heartbeat(&req).await;
                tokio::time::sleep(every).await;
            }
        }))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers a spot from 127.0.0.1 and returns its id.
pub async fn hello(client: &drover_client::Client) -> String {
    client
        .hello(&drover_api::HelloRequest {
            ip_address: "127.0.0.1".into(),
            total_cores: Some(2),
            ..Default::default()
        })
        .await
        .expect("hello")
        .spot_id
}

/// A completion report from `spot` with objective value `fopt`.
pub fn completion(spot: &str, fopt: f64) -> drover_api::CompleteRequest {
    drover_api::CompleteRequest {
        spot_id: spot.to_string(),
        runtime_ms: Some(10),
        iter: Some(100),
        fopt: Some(fopt),
        result_json: Some(serde_json::Value::String("{\"converged\":true}".into())),
        output: None,
        attempt: None,
    }
}

/// Checks invariant 4 through the API: the job's counts equal its tasks counted by status.
pub async fn assert_counts_match_tasks(client: &drover_client::Client, job_id: &str) {
    let job = client.job(job_id).await.expect("get job");
    let tasks = client.all_tasks(job_id, None).await.expect("list tasks");
    let count = |s: &str| tasks.iter().filter(|t| t.status == s).count() as u64;
    let by_status = [
        ("NEW", job.pending_tasks),
        ("RUNNING", job.running_tasks),
        ("DONE", job.completed_tasks),
        ("FAILED", job.failed_tasks),
        ("CANCELLED", job.cancelled_tasks),
    ];
    for (status, counted) in by_status {
        assert_eq!(
            counted,
            count(status),
            "job {job_id}: its {status} count differs from its {status} tasks ({job:?})"
        );
    }
    assert_eq!(job.total_tasks, tasks.len() as u64, "job {job_id} total");
}

/// Server flags that make the reapers act within seconds, for tests that wait on them.
pub const FAST_REAPERS: [&str; 10] = [
    "--spot-timeout",
    "3s",
    "--spot-reaper-interval",
    "500ms",
    "--task-reaper-interval",
    "500ms",
    "--task-lease-grace",
    "2s",
    "--heartbeat-interval",
    "500ms",
];

/// A running `drover agent` child process.
pub struct AgentProcess {
    pub process: DroverChild,
}

impl AgentProcess {
    /// Starts `drover agent --server <servers>` with a work directory under `dir`, short poll
    /// and backoff intervals, and `extra` arguments.
    pub fn start(dir: &Path, servers: &str, extra: &[&str]) -> AgentProcess {
        AgentProcess::start_with_env(dir, servers, extra, &[])
    }

    /// [`AgentProcess::start`] with environment variables for the agent.
    pub fn start_with_env(
        dir: &Path,
        servers: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let work = (1..)
            .map(|n| dir.join(format!("agent-work-{n}")))
            .find(|p| !p.exists())
            .expect("a free work directory name");
        let mut cmd = drover_command(dir);
        cmd.arg("agent")
            .arg("--server")
            .arg(servers)
            .arg("--work-dir")
            .arg(&work)
            .args(["--poll-interval", "100ms", "--max-backoff", "500ms"])
            .args(extra)
            .envs(env.iter().copied());
        AgentProcess {
            process: DroverChild::spawn(cmd, dir, "agent"),
        }
    }
}

impl std::ops::Deref for AgentProcess {
    type Target = DroverChild;
    fn deref(&self) -> &DroverChild {
        &self.process
    }
}

impl std::ops::DerefMut for AgentProcess {
    fn deref_mut(&mut self) -> &mut DroverChild {
        &mut self.process
    }
}

/// Waits until `job_id` reaches `status` (COMPLETED, FAILED, ...) and returns it.
pub async fn job_reaches(
    client: &drover_client::Client,
    job_id: &str,
    status: &str,
    deadline: Duration,
) -> drover_api::Job {
    eventually(
        &format!("job {job_id} to be {status}"),
        deadline,
        || async { client.job(job_id).await.ok().filter(|j| j.status == status) },
    )
    .await
}

/// Reads the attempt records of a stopped server's database: no task has two completed
/// attempts, or two attempts held at once (invariant 1).
pub fn assert_no_task_completed_or_held_twice(db: &rusqlite::Connection) {
    let twice: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT task_id FROM task_attempts
             GROUP BY task_id
             HAVING sum(outcome = 'COMPLETED') > 1 OR sum(outcome = 'RUNNING') > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "tasks completed (or held) twice");
}

/// Runs `drover ARGS` in `dir` to its end, off the async runtime's threads.
pub async fn drover(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = drover_command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || run_to_exit(cmd, &dir, &name, EXIT_DEADLINE))
        .await
        .expect("the command runner")
}

/// Runs `drover ARGS --server URL` against `server`.
pub async fn against(server: &ServerProcess, dir: &Path, name: &str, args: &[&str]) -> Finished {
    let url = server.base_url();
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str()]);
    drover(dir, name, &all, &[]).await
}

/// The server's `/metrics` page as text.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
