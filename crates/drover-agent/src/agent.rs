//! The agent's loops: register, heartbeat, claim, run, report, drain.
//!
//! Failure handling, in one place:
//! - A server that cannot be reached (or answers 5xx/429) is retried with backoff and jitter,
//!   failing over between URLs; running tasks go on meanwhile and their reports wait.
//! - A server that no longer knows the spot (404 `SPOT_NOT_FOUND`, e.g. after its data was
//!   reset) or its secret (`SPOT_SECRET_*`) gets a new hello; a spot marked DOWN is revived by
//!   a heartbeat. Every hello asks for a spot secret, and every call for the spot carries it.
//! - A report the server refuses (404, 409) is dropped: the task was taken back and belongs to
//!   someone else now. It is logged, never retried.
//! - A refused agent key stops the agent with an error that says so.
//!
//! Stopping: `stop` ends claiming, running tasks get `drain_grace` to finish and be reported;
//! then (or at once on `abort`) the rest are killed and reported as retriable failures.

use crate::exec::{self, Run};
use crate::link::{Backoff, Link, is_transient};
use crate::output::{self, Report};
use crate::stats::{Facts, Figures, Machine, local_address_towards};
use drover_api as api;
use drover_client::{Client, ClientError};
use drover_core::run::{Compiled, RunSpec, TaskContext};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most tasks one claim asks for (the server's limit).
const MAX_CLAIM: usize = drover_core::rules::MAX_CLAIM as usize;
/// Jobs whose run settings are remembered; older ones are looked up again if needed.
const JOB_CACHE: usize = 256;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server base URLs, tried in order and failed over between.
    pub servers: Vec<String>,
    pub agent_key: Option<String>,
    /// PEM certificates trusted for https servers besides the system's (a private CA).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Tasks run at once.
    pub slots: usize,
    pub labels: Map<String, Value>,
    pub zone: Option<String>,
    /// The address announced to the server; found from the route to it when `None`.
    pub address: Option<String>,
    /// Where per-task working directories are made.
    pub work_dir: PathBuf,
    /// Keep each task's working directory after it ends (for debugging).
    pub keep_work_dirs: bool,
    /// Heartbeat period; the server's suggestion when `None`.
    pub heartbeat_interval: Option<Duration>,
    /// Wait between claims while the queue is empty.
    pub poll_interval: Duration,
    /// Longest wait for one request.
    pub request_timeout: Duration,
    /// Longest wait between retries of a failing call.
    pub max_backoff: Duration,
    /// How long running tasks may go on after a stop before they are killed.
    pub drain_grace: Duration,
    /// Between SIGTERM and SIGKILL when a task is ended.
    pub kill_grace: Duration,
    /// Bytes of stdout and of stderr kept per task.
    pub tail_bytes: usize,
}

impl AgentConfig {
    /// Defaults for everything but the servers.
    pub fn new(servers: Vec<String>, work_dir: PathBuf) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        AgentConfig {
            servers,
            agent_key: None,
            ca_cert_pem: None,
            slots: cores,
            labels: Map::new(),
            zone: None,
            address: None,
            work_dir,
            keep_work_dirs: false,
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            drain_grace: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            tail_bytes: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the server refused the agent key ({0}); start the agent with the server's agent key \
         (--key or DROVER_AGENT_KEY)"
    )]
    Unauthorized(String),
    #[error("no server URL given; pass --server http://HOST:PORT")]
    NoServer,
    #[error("cannot use the CA certificate: {0}")]
    BadCaCert(String),
    #[error("cannot use the work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the agent did, for its last log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Completions the server accepted.
    pub completed: u64,
    /// Failures the server accepted.
    pub failed: u64,
    /// Reports the server refused (the task had been taken back).
    pub refused: u64,
    /// Reports that could not be delivered before the agent had to exit.
    pub lost: u64,
}

/// A job's run settings as the agent uses them.
struct JobRun {
    /// `Err` says why the job cannot be run by an agent.
    command: Result<Compiled, String>,
    retry_on_failure: bool,
    timeout: Duration,
}

/// The spot this agent is registered as, and the secret its hello returned, which every call
/// for the spot carries (`X-Spot-Secret`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Spot {
    id: String,
    secret: Option<String>,
}

impl Spot {
    /// `client` acting for this spot.
    fn on(&self, client: Client) -> Client {
        match &self.secret {
            Some(secret) => client.with_spot_secret(&self.id, secret),
            None => client,
        }
    }
}

struct Shared {
    config: AgentConfig,
    link: Link,
    spot: RwLock<Spot>,
    registering: tokio::sync::Mutex<()>,
    jobs: Mutex<HashMap<String, Arc<JobRun>>>,
    running: AtomicI64,
    online: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    /// Cancelled when running tasks must end now (grace over, or a second signal).
    hard: CancellationToken,
    /// The machine's static facts, read once.
    facts: Facts,
}

/// Runs the agent until `stop` (then drains) or `abort` (then ends running tasks at once).
pub async fn run(
    config: AgentConfig,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<Summary, AgentError> {
    if config.servers.is_empty() {
        return Err(AgentError::NoServer);
    }
    std::fs::create_dir_all(&config.work_dir).map_err(|source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let mut clients = Vec::with_capacity(config.servers.len());
    for url in &config.servers {
        let mut client = Client::new(url.as_str()).with_timeout(config.request_timeout);
        if let Some(pem) = &config.ca_cert_pem {
            client = client
                .with_root_certificate(pem)
                .map_err(|e| AgentError::BadCaCert(e.to_string()))?;
        }
        if let Some(k) = &config.agent_key {
            client = client.with_agent_key(k);
        }
        clients.push(client);
    }
    let mut machine = Machine::new();
    let shared = Arc::new(Shared {
        facts: machine.facts(),
        link: Link::new(clients),
        spot: RwLock::new(Spot::default()),
        registering: tokio::sync::Mutex::new(()),
        jobs: Mutex::new(HashMap::new()),
        running: AtomicI64::new(0),
        online: AtomicBool::new(true),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        hard: CancellationToken::new(),
        config,
    });
    {
        let hard = shared.hard.clone();
        let abort = abort.clone();
        tokio::spawn(async move {
            abort.cancelled().await;
            hard.cancel();
        });
    }

    let suggested = tokio::select! {
        r = shared.register("") => r?,
        _ = stop.cancelled() => return Ok(shared.summary()),
    };
    let interval = shared
        .config
        .heartbeat_interval
        .or(suggested)
        .unwrap_or(Duration::from_secs(2));
    let heart_stop = CancellationToken::new();
    let heart = {
        let shared = shared.clone();
        let heart_stop = heart_stop.clone();
        tokio::spawn(async move { shared.heartbeats(&mut machine, interval, heart_stop).await })
    };

    let tracker = TaskTracker::new();
    let claimed = shared.claim_loop(&tracker, &stop).await;

    let running = shared.running.load(Ordering::Relaxed);
    if running > 0 && !shared.hard.is_cancelled() {
        tracing::info!(
            "stopping: no new tasks; waiting up to {} for {running} running task(s) (signal again to stop them now)",
            crate::output::humanize(shared.config.drain_grace)
        );
    }
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => {}
        _ = tokio::time::sleep(shared.config.drain_grace) => {
            tracing::warn!("drain grace over: stopping the tasks still running");
            shared.hard.cancel();
        }
        _ = shared.hard.cancelled() => {}
    }
    tracker.wait().await;
    heart_stop.cancel();
    let _ = heart.await;
    claimed?;
    let summary = shared.summary();
    tracing::info!(
        completed = summary.completed,
        failed = summary.failed,
        refused = summary.refused,
        lost = summary.lost,
        "agent stopped"
    );
    Ok(summary)
}

fn fail_now(spot: &str, attempt: u32, error: String, retriable: bool) -> Report {
    Report::Fail(api::FailRequest {
        spot_id: spot.to_string(),
        error: Some(error),
        retriable: Some(retriable),
        attempt: Some(attempt),
    })
}

impl Shared {
    fn spot(&self) -> Spot {
        self.spot.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn summary(&self) -> Summary {
        Summary {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(200), self.config.max_backoff)
    }

    /// Notes a failed call: logs the first failure of an outage, and says whether to retry.
    fn trouble(&self, what: &str, e: &ClientError) -> Result<(), AgentError> {
        if let ClientError::Api {
            status: 401,
            message,
            ..
        } = e
        {
            return Err(AgentError::Unauthorized(message.clone()));
        }
        if is_transient(e) {
            if self.online.swap(false, Ordering::Relaxed) {
                let running = self.running.load(Ordering::Relaxed);
                tracing::warn!(
                    "lost the server ({}) during {what}: {e}; retrying with backoff{}",
                    self.link.current_url(),
                    if running > 0 {
                        format!(" while {running} task(s) go on running")
                    } else {
                        String::new()
                    }
                );
            }
        } else {
            tracing::warn!("{what}: {e}");
        }
        Ok(())
    }

    fn reachable(&self) {
        if !self.online.swap(true, Ordering::Relaxed) {
            tracing::info!("server reachable again at {}", self.link.current_url());
        }
    }

    /// Says hello until a server answers, unless another caller already replaced `stale`.
    /// Returns the server's suggested heartbeat period.
    async fn register(&self, stale: &str) -> Result<Option<Duration>, AgentError> {
        let _one_at_a_time = self.registering.lock().await;
        if self.spot().id != stale {
            return Ok(None);
        }
        let facts = self.facts.clone();
        let address = self.config.address.clone().unwrap_or_else(|| {
            self.link
                .urls()
                .find_map(|url| {
                    let url = host_port(url)?;
                    local_address_towards(&url.0, url.1)
                })
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "127.0.0.1".into())
        });
        let hello = api::HelloRequest {
            ip_address: address,
            hostname: facts.hostname,
            zone: self.config.zone.clone(),
            labels: Some(self.config.labels.clone()),
            total_cores: Some(facts.cores),
            memory_bytes: facts.memory_bytes,
            gpus: None,
            disk_bytes: None,
            // Always: a spot with a secret cannot be reported for by anyone else who holds the
            // agent key.
            issue_secret: Some(true),
        };
        let mut backoff = self.backoff();
        loop {
            match self
                .link
                .call(|c| {
                    let hello = hello.clone();
                    async move { c.hello(&hello).await }
                })
                .await
            {
                Ok(answer) => {
                    self.reachable();
                    tracing::info!(
                        spot = %answer.spot_id,
                        server = self.link.current_url(),
                        slots = self.config.slots,
                        "registered"
                    );
                    if let Ok(mut s) = self.spot.write() {
                        *s = Spot {
                            id: answer.spot_id,
                            secret: answer.spot_secret,
                        };
                    }
                    return Ok(answer
                        .heartbeat_interval_seconds
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .filter(|d| !d.is_zero()));
                }
                Err(e) => {
                    self.trouble("hello", &e)?;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn heartbeats(
        self: Arc<Self>,
        machine: &mut Machine,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.cancelled() => return,
            }
            let spot = self.spot();
            match self.beat(&spot, machine.figures()).await {
                Ok(()) => self.reachable(),
                Err(e) if forgotten(&e) => {
                    tracing::warn!(spot = %spot.id, "the server no longer knows this spot or its secret; registering again");
                    if let Err(e) = self.register(&spot.id).await {
                        tracing::error!("{e}");
                    }
                }
                Err(e) => {
                    if let Err(fatal) = self.trouble("heartbeat", &e) {
                        tracing::error!("{fatal}");
                    }
                }
            }
        }
    }

    /// One heartbeat for `spot`, with the live figures when there are some.
    async fn beat(&self, spot: &Spot, figures: Option<Figures>) -> Result<(), ClientError> {
        let beat = api::HeartbeatRequest {
            spot_id: spot.id.clone(),
            ip_address: None,
            cpu_load: figures.map(|f| f.cpu_load),
            running_tasks: Some(self.running.load(Ordering::Relaxed)),
            total_cores: Some(self.facts.cores),
            free_memory_bytes: figures.map(|f| f.free_memory_bytes),
        };
        self.link
            .call(|c| {
                let beat = beat.clone();
                let c = spot.on(c);
                async move { c.heartbeat(&beat).await.map(drop) }
            })
            .await
    }

    /// Claims while there are free slots, until `stop`. Each claimed task runs on the tracker.
    async fn claim_loop(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<(), AgentError> {
        let slots = Arc::new(Semaphore::new(self.config.slots.max(1)));
        let mut backoff = self.backoff();
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
                _ = stop.cancelled() => return Ok(()),
            };
            let mut permits = vec![first];
            while permits.len() < MAX_CLAIM {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let wanted = permits.len();
            let spot = self.spot();
            let result = self
                .link
                .call(|c| {
                    let c = spot.on(c);
                    let id = spot.id.clone();
                    async move { c.claim(&id, wanted as u32).await }
                })
                .await;
            let wait = match result {
                Ok(tasks) => {
                    self.reachable();
                    backoff.reset();
                    let got = tasks.len();
                    for task in tasks {
                        let Some(permit) = permits.pop() else { break };
                        tracing::debug!(task = %task.id, job = %task.job_id, attempt = task.attempt, "claimed");
                        tracker.spawn(self.clone().run_task(task, spot.clone(), permit));
                    }
                    // A short answer means the queue is empty for now: do not ask again at once.
                    (got < wanted).then_some(self.config.poll_interval)
                }
                Err(e) if forgotten(&e) => {
                    tracing::warn!(spot = %spot.id, "the server no longer knows this spot or its secret; registering again");
                    self.register(&spot.id).await?;
                    None
                }
                Err(e) if e.code() == Some("SPOT_DOWN") => {
                    // Marked DOWN while away; a heartbeat brings the spot back UP.
                    let _ = self.beat(&spot, None).await;
                    Some(backoff.next_delay())
                }
                Err(e) => {
                    self.trouble("claim", &e)?;
                    Some(backoff.next_delay())
                }
            };
            drop(permits);
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    }

    /// Runs one claimed task and reports how it ended. `spot` is the spot that holds the lease,
    /// which is what the report must name even if the agent has registered again since.
    async fn run_task(
        self: Arc<Self>,
        task: api::ClaimedTask,
        spot: Spot,
        _slot: OwnedSemaphorePermit,
    ) {
        self.running.fetch_add(1, Ordering::Relaxed);
        let report = self.perform(&task, &spot).await;
        self.deliver(&task.id, &spot, report).await;
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    async fn perform(&self, task: &api::ClaimedTask, holder: &Spot) -> Report {
        let spot = holder.id.as_str();
        let attempt = task.attempt;
        let payload: Map<String, Value> = match serde_json::from_str(&task.payload) {
            Ok(Value::Object(o)) => o,
            _ => {
                return fail_now(
                    spot,
                    attempt,
                    "the task's payload is not a JSON object".into(),
                    false,
                );
            }
        };
        let job = match self.job(&task.job_id, holder).await {
            Some(job) => job,
            None => {
                return fail_now(
                    spot,
                    attempt,
                    "stopped: the agent shut down before the task started".into(),
                    true,
                );
            }
        };
        let compiled = match &job.command {
            Ok(c) => c,
            Err(why) => return fail_now(spot, attempt, why.clone(), false),
        };
        let work_dir = self
            .config
            .work_dir
            .join(format!("{}-{}", task.id, attempt));
        let work_dir_text = work_dir.to_string_lossy().into_owned();
        let ctx = TaskContext {
            task_id: &task.id,
            job_id: &task.job_id,
            attempt,
            work_dir: &work_dir_text,
        };
        let command = match compiled.render(&payload, &ctx) {
            Ok(c) => c,
            Err(missing) => {
                return fail_now(
                    spot,
                    attempt,
                    format!(
                        "the job's command names {{{missing}}}, which this task's payload lacks"
                    ),
                    false,
                );
            }
        };
        let facts = vec![
            ("DROVER_TASK_ID".to_string(), task.id.clone()),
            ("DROVER_JOB_ID".to_string(), task.job_id.clone()),
            ("DROVER_ATTEMPT".to_string(), attempt.to_string()),
            ("DROVER_WORK_DIR".to_string(), work_dir_text.clone()),
            ("DROVER_SPOT_ID".to_string(), spot.to_string()),
        ];
        let finished = exec::execute(
            Run {
                command,
                work_dir: work_dir.clone(),
                facts,
                timeout: job.timeout,
                kill_grace: self.config.kill_grace,
                tail_bytes: self.config.tail_bytes,
            },
            self.hard.clone(),
        )
        .await;
        tracing::info!(
            task = %task.id,
            attempt,
            ending = ?finished.ending,
            elapsed_ms = finished.elapsed.as_millis() as u64,
            "task ended"
        );
        if !self.config.keep_work_dirs {
            let _ = tokio::fs::remove_dir_all(&work_dir).await;
        }
        output::report(spot, attempt, &finished, job.retry_on_failure)
    }

    /// The run settings of a job, from the cache or the server. `None` if the agent is
    /// stopping before it could find out.
    async fn job(&self, job_id: &str, spot: &Spot) -> Option<Arc<JobRun>> {
        if let Some(job) = self.jobs.lock().ok()?.get(job_id) {
            return Some(job.clone());
        }
        let mut backoff = self.backoff();
        let job = loop {
            match self
                .link
                .call(|c| {
                    let c = spot.on(c);
                    async move { c.job(job_id).await }
                })
                .await
            {
                Ok(job) => break job_run(job),
                Err(e) if !is_transient(&e) => {
                    break JobRun {
                        command: Err(format!("cannot read the job's settings: {e}")),
                        retry_on_failure: true,
                        timeout: Duration::from_secs(1),
                    };
                }
                Err(e) => {
                    let _ = self.trouble("reading a job", &e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = self.hard.cancelled() => return None,
                    }
                }
            }
        };
        let job = Arc::new(job);
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs.len() >= JOB_CACHE {
                jobs.clear();
            }
            jobs.insert(job_id.to_string(), job.clone());
        }
        Some(job)
    }

    /// Sends a report until the server takes it or refuses it. Once the agent must stop, one
    /// last try is made and then the report is given up (the server will take the task back).
    async fn deliver(&self, task_id: &str, spot: &Spot, report: Report) {
        let mut backoff = self.backoff();
        loop {
            let result = match &report {
                Report::Complete(r) => {
                    self.link
                        .call(|c| {
                            let c = spot.on(c);
                            async move { c.complete(task_id, r).await }
                        })
                        .await
                }
                Report::Fail(r) => {
                    self.link
                        .call(|c| {
                            let c = spot.on(c);
                            async move { c.fail(task_id, r).await }
                        })
                        .await
                }
            };
            match result {
                Ok(answer) => {
                    self.reachable();
                    match &report {
                        Report::Complete(_) => self.completed.fetch_add(1, Ordering::Relaxed),
                        Report::Fail(_) => self.failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tracing::debug!(task = task_id, ?answer, "reported");
                    return;
                }
                Err(e) if !is_transient(&e) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        task = task_id,
                        "the server refused the report ({e}); the task was taken back"
                    );
                    return;
                }
                Err(e) => {
                    let _ = self.trouble("a report", &e);
                    if self.hard.is_cancelled() {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            task = task_id,
                            "stopping: report not delivered; the server will take the task back"
                        );
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        // One last try before giving up.
                        _ = self.hard.cancelled() => {}
                    }
                }
            }
        }
    }
}

/// Whether the server has forgotten this spot or its secret (its data was reset, or it now
/// requires secrets of spots that have none): the agent registers again.
fn forgotten(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            "SPOT_NOT_FOUND"
                | "SPOT_SECRET_REQUIRED"
                | "SPOT_SECRET_INVALID"
                | "SPOT_SECRET_NOT_ISSUED"
        )
    )
}

fn job_run(job: api::Job) -> JobRun {
    let timeout =
        Duration::try_from_secs_f64(job.task_timeout_seconds).unwrap_or(Duration::from_secs(300));
    let retry_on_failure = job.retry_on_failure.unwrap_or(true);
    let command = match job.command {
        None => Err(format!(
            "job {} has no command: drover agent runs jobs submitted with a command \
             (or with jarPath and mainClass)",
            job.id
        )),
        Some(command) => RunSpec {
            command,
            env: job.env.unwrap_or_default(),
            retry_on_failure,
        }
        .compile()
        .map_err(|e| format!("the job's command is invalid: {e}")),
    };
    JobRun {
        command,
        retry_on_failure,
        timeout,
    }
}

/// Host and port of a server URL, for finding the local address that reaches it.
fn host_port(url: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(url).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((host, url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_give_host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:8080"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            host_port("https://drover.example/base"),
            Some(("drover.example".into(), 443))
        );
        assert_eq!(host_port("http://[::1]:9/"), Some(("::1".into(), 9)));
    }
}
