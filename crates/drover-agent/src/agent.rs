//! The agent's loops: register, heartbeat, exchange (report and claim), run, drain.
//!
//! Claim-ahead: the agent keeps up to `claim_ahead` claimed tasks in a local queue beyond its
//! busy slots, so a slot that frees starts the next task without a round trip. A queued task is
//! under lease from its claim, and its time in the queue counts against its timeout (the agent
//! gives it only what is left, so its own account still comes before the reaper's). The queue
//! is kept small for that reason: a long queue of long tasks would spend their leases waiting.
//! Finished runs' reports wait in an outbox and go out batched in the next exchange, which goes
//! when the queue needs tasks or when the oldest report has waited `report_delay` (see `work`).
//! By default the queue follows how long runs take: about `QUEUE_SPAN` of work per slot.
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
//! Stopping: `stop` ends claiming; tasks claimed ahead but not started are handed back at once
//! as retriable failures ("stopped: the agent shut down before the task started"; like a run
//! the agent stops, that counts as an attempt); running tasks get `drain_grace` to finish and
//! be reported; then (or at once on `abort`) the rest are killed and reported as retriable
//! failures. A claim waiting for work when the stop comes is abandoned (see `work`).

use crate::exec::{self, Run};
use crate::link::{Backoff, Link, is_transient};
use crate::output::{self, Ending, Report};
use crate::stats::{Facts, Figures, Machine, local_address_towards};
use drover_api as api;
use drover_client::{Client, ClientError, ServerList};
use drover_core::run::{Compiled, RunSpec, TaskContext};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most tasks one claim asks for (the server's limit).
const MAX_CLAIM: usize = drover_core::rules::MAX_CLAIM as usize;
/// With the default claim-ahead, how much work the local queue holds: about this long's worth
/// of runs per slot, judged by how long recent runs took (and never fewer than one task per
/// slot). Short tasks then travel several to an exchange (each exchange costs the server a
/// commit, most of its time per task when tasks are short); long ones keep the queue at a task
/// per slot, so a queued task spends little of its lease waiting. The limit: when a job of
/// long tasks follows one of short tasks, the first claim may queue up to
/// [`MAX_AHEAD_PER_SLOT`] of them per slot; those that wait past their lease are handed back
/// as retriable failures (see `perform`), and the queue shrinks after the first long run.
const QUEUE_SPAN: Duration = Duration::from_millis(20);
/// With the default claim-ahead, most tasks queued per slot.
const MAX_AHEAD_PER_SLOT: usize = 8;
/// Jobs whose run settings are remembered; older ones are looked up again if needed.
const JOB_CACHE: usize = 256;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server base URLs: replicas of one coordinator. Calls start at a random one and go on to
    /// the next as `drover_client::Retry` allows.
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
    /// Claimed tasks kept waiting beyond the busy slots; `None`: as many as there are slots,
    /// and more for short runs (see [`QUEUE_SPAN`]).
    pub claim_ahead: Option<usize>,
    /// Longest a finished run's report waits in the agent for company before an exchange
    /// carries it, once no exchange is in flight (an exchange goes sooner when the queue needs
    /// tasks, and at once when the agent stops). Zero: every report goes at the first chance.
    pub report_delay: Duration,
    /// How long one claim waits on the server for work when there is none (at most 30 s).
    /// Zero: claims do not wait, and the agent sleeps `poll_interval` between them.
    pub claim_wait: Duration,
    /// Wait between claims while the queue is empty, when `claim_wait` is zero.
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
            claim_ahead: None,
            report_delay: Duration::from_millis(10),
            claim_wait: Duration::from_secs(20),
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            drain_grace: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            tail_bytes: 4096,
        }
    }
}

impl AgentConfig {
    /// Tasks claimed ahead of the slots, given how long recent runs took (`None`: no run yet).
    /// Set by hand, it is what was set; by default one per slot, and for runs shorter than
    /// [`QUEUE_SPAN`] as many per slot as fit in it, up to [`MAX_AHEAD_PER_SLOT`].
    pub fn claim_ahead(&self, recent_run: Option<Duration>) -> usize {
        let slots = self.slots.max(1);
        if let Some(n) = self.claim_ahead {
            return n;
        }
        let per_slot = match recent_run {
            Some(run) if !run.is_zero() => (QUEUE_SPAN.as_nanos() / run.as_nanos())
                .clamp(1, MAX_AHEAD_PER_SLOT as u128)
                as usize,
            Some(_) => MAX_AHEAD_PER_SLOT,
            None => 1,
        };
        (slots * per_slot).min(MAX_CLAIM)
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
    #[error("--server: {0}")]
    BadServer(String),
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
    /// Finished runs' reports not yet sent, oldest first.
    outbox: Mutex<Vec<Pending>>,
    /// Told when a run ends (a slot and a report to send).
    finished: Notify,
    /// How long recent runs took, for the default claim-ahead.
    run_times: RunTimes,
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
    exec::remove_leftover_spares(&config.work_dir);
    let servers =
        ServerList::parse(&config.servers).map_err(|e| AgentError::BadServer(e.to_string()))?;
    let mut client = Client::with_servers(servers).with_timeout(config.request_timeout);
    if let Some(pem) = &config.ca_cert_pem {
        client = client
            .with_root_certificate(pem)
            .map_err(|e| AgentError::BadCaCert(e.to_string()))?;
    }
    if let Some(k) = &config.agent_key {
        client = client.with_agent_key(k);
    }
    let mut machine = Machine::new();
    let shared = Arc::new(Shared {
        facts: machine.facts(),
        link: Link::new(client),
        spot: RwLock::new(Spot::default()),
        registering: tokio::sync::Mutex::new(()),
        jobs: Mutex::new(HashMap::new()),
        running: AtomicI64::new(0),
        online: AtomicBool::new(true),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        outbox: Mutex::new(Vec::new()),
        finished: Notify::new(),
        run_times: RunTimes::default(),
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
    let worked = shared.work(&tracker, &stop).await;
    if worked.is_err() {
        // A fatal error (a refused key): the runs still going are stopped, not awaited.
        shared.hard.cancel();
    }
    tracker.close();
    tracker.wait().await;
    exec::remove_spare_work_dirs(&shared.config.work_dir);
    heart_stop.cancel();
    let _ = heart.await;
    worked?;
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
        self.link.note_failover();
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
            match self.link.client().hello(&hello).await {
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
        spot.on(self.link.client().clone())
            .heartbeat(&beat)
            .await
            .map(drop)
    }

    /// The agent's one conversation with the server, until `stop` and then until everything is
    /// drained: it starts queued tasks on free slots, and sends exchanges that carry the
    /// finished runs' reports and claim enough to keep every slot busy plus `claim_ahead`
    /// tasks waiting in the local queue. With free room and nothing to claim, the exchange
    /// long-polls (`waitMs`) instead of sleeping; reports that finish meanwhile go in a
    /// report-only exchange beside it, so a long-poll never holds a report back.
    ///
    /// Exchanges are gathered, not sent per finished run: one goes when the queue is down to
    /// half its room (tasks are needed before a slot would wait) or when the oldest waiting
    /// report has waited `report_delay`, whichever comes first, and at once while stopping.
    /// So a report waits in the agent at most `report_delay` plus the rest of an exchange
    /// already in flight, and short tasks travel several to a request.
    async fn work(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<(), AgentError> {
        let slots = Arc::new(Semaphore::new(self.config.slots.max(1)));
        let mut queue: VecDeque<Queued> = VecDeque::new();
        // Wakes the loop when the oldest waiting report falls due.
        let mut flush = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut claiming: Option<InFlight> = None;
        let mut reporting: Option<InFlight> = None;
        let mut pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut drain: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut backoff = self.backoff();
        let mut stopping = false;
        loop {
            while !queue.is_empty() {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                if let Some(next) = queue.pop_front() {
                    self.running.fetch_add(1, Ordering::Relaxed);
                    tracker.spawn(self.clone().run_task(next, slot));
                }
            }
            if stopping {
                // Claimed ahead but not started: handed back at once, so another agent can
                // take them now rather than after this spot goes silent.
                for q in queue.drain(..) {
                    let report = fail_now(
                        &q.spot.id,
                        q.task.attempt,
                        "stopped: the agent shut down before the task started".into(),
                        true,
                    );
                    self.post(q.task.id, q.spot, report);
                }
            }
            if claiming.is_none() && pause.is_none() {
                let ahead = self.config.claim_ahead(self.run_times.recent());
                let capacity = self.config.slots.max(1) + ahead;
                let busy = queue.len() + self.running.load(Ordering::Relaxed).max(0) as usize;
                let want = if stopping {
                    0
                } else {
                    capacity.saturating_sub(busy).min(MAX_CLAIM)
                };
                if exchange_now(queue.len(), ahead, want, self.reports_due(stopping)) {
                    let (spot, reports) = self.take_reports();
                    let want = if spot.id == self.spot().id { want } else { 0 };
                    if want > 0 || !reports.is_empty() {
                        let wait = if want > 0 {
                            self.config.claim_wait
                        } else {
                            Duration::ZERO
                        };
                        claiming = Some(self.send(spot, reports, want, wait));
                    }
                }
            }
            if reporting.is_none()
                && claiming.as_ref().is_some_and(|c| !c.wait.is_zero())
                && self.reports_due(stopping) == Due::Now
            {
                let (spot, reports) = self.take_reports();
                if !reports.is_empty() {
                    reporting = Some(self.send(spot, reports, 0, Duration::ZERO));
                }
            }
            // A timer only for reports that could go once due; the others go with the
            // exchange in flight's successor.
            let can_send = (claiming.is_none() && pause.is_none())
                || (reporting.is_none() && claiming.as_ref().is_some_and(|c| !c.wait.is_zero()));
            let next = match self.reports_due(stopping) {
                Due::At(at) if can_send => Some(at),
                _ => None,
            };
            if next != flush_at {
                if let Some(at) = next {
                    flush.as_mut().reset(at);
                }
                flush_at = next;
            }
            if stopping
                && claiming.is_none()
                && reporting.is_none()
                && queue.is_empty()
                && self.running.load(Ordering::Relaxed) == 0
                && self.outbox_is_empty()
            {
                return Ok(());
            }
            tokio::select! {
                answer = wait_for(&mut claiming) => {
                    let sent = claiming.take().expect("polled only while in flight");
                    match self.settle(sent, answer).await? {
                        Settled::Claimed(tasks) => {
                            backoff.reset();
                            let wanted = tasks.wanted;
                            let got = tasks.tasks.len();
                            queue.extend(tasks.tasks);
                            if got < wanted && self.config.claim_wait.is_zero() {
                                pause = Some(Box::pin(tokio::time::sleep(self.config.poll_interval)));
                            }
                        }
                        Settled::Retry => {
                            pause = Some(Box::pin(tokio::time::sleep(backoff.next_delay())));
                        }
                    }
                }
                answer = wait_for(&mut reporting) => {
                    let sent = reporting.take().expect("polled only while in flight");
                    if let Settled::Retry = self.settle(sent, answer).await? {
                        pause = Some(Box::pin(tokio::time::sleep(backoff.next_delay())));
                    }
                }
                _ = self.finished.notified() => {}
                _ = &mut flush, if flush_at.is_some() => {
                    flush_at = None;
                }
                _ = async { pause.as_mut().expect("polled only when set").await }, if pause.is_some() => {
                    pause = None;
                }
                _ = self.hard.cancelled(), if pause.is_some() => {
                    // No more waiting between tries: one last try, then reports are given up.
                    pause = None;
                }
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    let running = self.running.load(Ordering::Relaxed);
                    if running > 0 && !self.hard.is_cancelled() {
                        tracing::info!(
                            "stopping: no new tasks; waiting up to {} for {running} running task(s) (signal again to stop them now)",
                            crate::output::humanize(self.config.drain_grace)
                        );
                    }
                    drain = Some(Box::pin(tokio::time::sleep(self.config.drain_grace)));
                    // A claim waiting for work is abandoned, not awaited: it may wait 30 s.
                    // Its reports are sent again (a repeat is answered as one); a task the
                    // server handed out just as it was dropped stays with this spot until
                    // its lease ends or the spot goes silent, as after a crash.
                    if let Some(c) = claiming.take_if(|c| !c.wait.is_zero()) {
                        c.handle.abort();
                        self.requeue(c.spot, c.reports);
                    }
                }
                _ = async { drain.as_mut().expect("polled only when set").await }, if drain.is_some() && !self.hard.is_cancelled() => {
                    tracing::warn!("drain grace over: stopping the tasks still running");
                    self.hard.cancel();
                    drain = None;
                }
            }
        }
    }

    /// Sends one exchange from a task of its own, so the loop goes on while it is in flight.
    fn send(
        self: &Arc<Self>,
        spot: Spot,
        reports: Vec<(String, Report)>,
        want: usize,
        wait: Duration,
    ) -> InFlight {
        let req = api::ExchangeRequest {
            spot_id: spot.id.clone(),
            reports: reports
                .iter()
                .map(|(task, report)| report.to_batch(task))
                .collect(),
            max_tasks: want as u32,
            wait_ms: (!wait.is_zero()).then_some(wait.as_millis() as u64),
            // So that, among spots waiting for work, the least loaded is served first.
            running_tasks: Some(
                u32::try_from(self.running.load(Ordering::Relaxed).max(0)).unwrap_or(u32::MAX),
            ),
        };
        let handle = {
            let (shared, spot) = (self.clone(), spot.clone());
            tokio::spawn(async move { spot.on(shared.link.client().clone()).exchange(&req).await })
        };
        InFlight {
            handle,
            spot,
            reports,
            want,
            wait,
        }
    }

    /// Handles an exchange's answer: each report's own answer as the per-task routes' would be
    /// handled (accepted, or refused and dropped: the task was taken back), and the tasks
    /// claimed. A failed request puts its reports back to be sent again: a report is never
    /// dropped without an answer, unless the agent is stopping and cannot reach the server.
    async fn settle(
        &self,
        sent: InFlight,
        answer: Result<Result<api::ExchangeResponse, ClientError>, tokio::task::JoinError>,
    ) -> Result<Settled, AgentError> {
        let InFlight {
            spot,
            reports,
            want,
            ..
        } = sent;
        let answer = answer.unwrap_or_else(|e| Err(ClientError::Decode(e.to_string())));
        match answer {
            Ok(answer) => {
                self.reachable();
                let mut answered = answer.results.into_iter();
                for (task, report) in reports {
                    match answered.next() {
                        Some(r) if r.success => {
                            match report {
                                Report::Complete(_) => {
                                    self.completed.fetch_add(1, Ordering::Relaxed)
                                }
                                Report::Fail(_) => self.failed.fetch_add(1, Ordering::Relaxed),
                            };
                            tracing::debug!(task, message = ?r.message, will_retry = ?r.will_retry, "reported");
                        }
                        Some(r) => {
                            self.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                task,
                                "the server refused the report ({} {}: {}); the task was taken back",
                                r.status,
                                r.code.as_deref().unwrap_or(""),
                                r.error.as_deref().unwrap_or("")
                            );
                        }
                        None => self.post(task, spot.clone(), report),
                    }
                }
                let now = Instant::now();
                for t in &answer.tasks {
                    tracing::debug!(task = %t.id, job = %t.job_id, attempt = t.attempt, "claimed");
                }
                Ok(Settled::Claimed(Claimed {
                    wanted: want,
                    tasks: answer
                        .tasks
                        .into_iter()
                        .map(|task| Queued {
                            task,
                            spot: spot.clone(),
                            since: now,
                        })
                        .collect(),
                }))
            }
            Err(e) if forgotten(&e) => {
                // The server cannot apply anything for a spot it does not know: its reports
                // are refused, as each would be on its own.
                for (task, _) in &reports {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        task,
                        "the server refused the report ({e}); the task was taken back"
                    );
                }
                tracing::warn!(spot = %spot.id, "the server no longer knows this spot or its secret; registering again");
                self.register(&spot.id).await?;
                Ok(Settled::Retry)
            }
            Err(e) if e.code() == Some("SPOT_DOWN") => {
                // The reports were stored before the claim was refused; sent again, each is
                // answered as a repeat. Marked DOWN while away: a heartbeat brings it back UP.
                self.requeue(spot.clone(), reports);
                let _ = self.beat(&spot, None).await;
                Ok(Settled::Retry)
            }
            Err(e) if is_transient(&e) => {
                self.trouble("an exchange", &e)?;
                if self.hard.is_cancelled() {
                    for (task, _) in &reports {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            task,
                            "stopping: report not delivered; the server will take the task back"
                        );
                    }
                } else {
                    self.requeue(spot, reports);
                }
                Ok(Settled::Retry)
            }
            Err(e) => {
                self.trouble("an exchange", &e)?;
                for (task, _) in &reports {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(task, "the server refused the report ({e})");
                }
                Ok(Settled::Retry)
            }
        }
    }

    /// Runs one queued task on its slot and leaves its report for the next exchange. `spot` is
    /// the spot that holds the lease, which is what the report must name even if the agent has
    /// registered again since.
    async fn run_task(self: Arc<Self>, queued: Queued, slot: OwnedSemaphorePermit) {
        let Queued { task, spot, since } = queued;
        let started = Instant::now();
        let report = self.perform(&task, &spot, since).await;
        self.run_times.note(started.elapsed());
        self.post(task.id, spot, report);
        self.running.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
        self.finished.notify_one();
    }

    /// Leaves a report for the next exchange.
    fn post(&self, task: String, spot: Spot, report: Report) {
        if let Ok(mut out) = self.outbox.lock() {
            out.push(Pending {
                task,
                spot,
                report,
                at: tokio::time::Instant::now(),
            });
        }
    }

    /// When the waiting reports must go: now (the oldest has waited `report_delay`, a full
    /// batch is waiting, or the agent is stopping), at a later instant, or never (none wait).
    fn reports_due(&self, stopping: bool) -> Due {
        let Ok(out) = self.outbox.lock() else {
            return Due::Never;
        };
        due(
            out.first().map(|p| p.at),
            out.len(),
            tokio::time::Instant::now(),
            self.config.report_delay,
            stopping || self.hard.is_cancelled(),
        )
    }

    /// Puts back the reports of a request that got no answer, ahead of newer ones (and due at
    /// once: they have waited already).
    fn requeue(&self, spot: Spot, reports: Vec<(String, Report)>) {
        if let Ok(mut out) = self.outbox.lock() {
            let now = tokio::time::Instant::now();
            let long_ago = now.checked_sub(self.config.report_delay).unwrap_or(now);
            let back = reports.into_iter().map(|(task, report)| Pending {
                task,
                spot: spot.clone(),
                report,
                at: long_ago,
            });
            out.splice(0..0, back);
        }
    }

    fn outbox_is_empty(&self) -> bool {
        self.outbox.lock().map(|o| o.is_empty()).unwrap_or(true)
    }

    /// Up to one batch of waiting reports, all of one spot (the oldest report's), and that
    /// spot; the current spot when there are none.
    fn take_reports(&self) -> (Spot, Vec<(String, Report)>) {
        let Ok(mut out) = self.outbox.lock() else {
            return (self.spot(), Vec::new());
        };
        let Some(first) = out.first() else {
            return (self.spot(), Vec::new());
        };
        let spot = first.spot.clone();
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(out.len());
        for p in out.drain(..) {
            if p.spot.id == spot.id && taken.len() < MAX_CLAIM {
                taken.push((p.task, p.report));
            } else {
                kept.push(p);
            }
        }
        *out = kept;
        (spot, taken)
    }

    async fn perform(&self, task: &api::ClaimedTask, holder: &Spot, since: Instant) -> Report {
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
        // The lease runs from the claim: what the queue took is not the run's to use.
        let spent = since.elapsed();
        if spent >= job.timeout {
            return fail_now(
                spot,
                attempt,
                "the task's lease ran out while it waited for a slot on this agent".into(),
                true,
            );
        }
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
                spent,
                kill_grace: self.config.kill_grace,
                tail_bytes: self.config.tail_bytes,
            },
            self.hard.clone(),
        )
        .await;
        // A run that did not exit 0 is worth a line by default; a success only when asked
        // (`RUST_LOG=drover_agent=debug`): at thousands of short runs a second, formatting and
        // writing a line each was a measurable share of the agent's time per task.
        if finished.ending == Ending::Exited(0) {
            tracing::debug!(
                task = %task.id,
                attempt,
                elapsed_ms = finished.elapsed.as_millis() as u64,
                "task ended"
            );
        } else {
            tracing::info!(
                task = %task.id,
                attempt,
                ending = ?finished.ending,
                elapsed_ms = finished.elapsed.as_millis() as u64,
                "task ended"
            );
        }
        if !self.config.keep_work_dirs {
            exec::remove_work_dir(&work_dir).await;
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
            match spot.on(self.link.client().clone()).job(job_id).await {
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
}

/// A claimed task in the local queue, and when it arrived: its lease runs from its claim, so
/// its time in the queue counts against its timeout.
struct Queued {
    task: api::ClaimedTask,
    spot: Spot,
    since: Instant,
}

/// A finished run's report, waiting for the next exchange.
struct Pending {
    task: String,
    spot: Spot,
    report: Report,
    /// When it was left (the report delay runs from here).
    at: tokio::time::Instant,
}

/// When the waiting reports must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Never,
    Now,
    At(tokio::time::Instant),
}

/// When `waiting` reports, the oldest left at `oldest`, must go: once the oldest has waited
/// `delay`, and at once for a full batch or while `stopping`.
fn due(
    oldest: Option<tokio::time::Instant>,
    waiting: usize,
    now: tokio::time::Instant,
    delay: Duration,
    stopping: bool,
) -> Due {
    let Some(oldest) = oldest else {
        return Due::Never;
    };
    let at = oldest + delay;
    if stopping || waiting >= MAX_CLAIM || now >= at {
        Due::Now
    } else {
        Due::At(at)
    }
}

/// Whether the loop sends an exchange now, with `queued` tasks waiting for a slot, room for
/// `ahead` of them, `want` tasks to claim and the reports `due` as they are: when the queue is
/// down to half its room (so tasks arrive before a slot would wait), or reports are due.
fn exchange_now(queued: usize, ahead: usize, want: usize, due: Due) -> bool {
    (want > 0 && queued <= ahead / 2) || due == Due::Now
}

/// How long recent runs took: follows a longer run at once and a shorter one slowly, so the
/// default claim-ahead shrinks as soon as long tasks appear and grows back only over several
/// short ones.
#[derive(Debug, Default)]
struct RunTimes {
    /// Nanoseconds; zero until the first run.
    recent: AtomicU64,
}

impl RunTimes {
    fn note(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let was = self.recent.load(Ordering::Relaxed);
        let now = if was == 0 || took >= was {
            took
        } else {
            was - (was - took) / 8
        };
        self.recent.store(now, Ordering::Relaxed);
    }

    fn recent(&self) -> Option<Duration> {
        match self.recent.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

/// An exchange in flight, with what it carries, so an unanswered one can be sent again.
struct InFlight {
    handle: tokio::task::JoinHandle<Result<api::ExchangeResponse, ClientError>>,
    spot: Spot,
    reports: Vec<(String, Report)>,
    want: usize,
    wait: Duration,
}

/// What the loop does after an exchange's answer.
enum Settled {
    Claimed(Claimed),
    /// No answer to act on: try again after a backoff.
    Retry,
}

struct Claimed {
    wanted: usize,
    tasks: Vec<Queued>,
}

/// The answer of the exchange in `slot`; pending forever when there is none, so a `select!`
/// branch on it is simply never taken.
async fn wait_for(
    slot: &mut Option<InFlight>,
) -> Result<Result<api::ExchangeResponse, ClientError>, tokio::task::JoinError> {
    match slot {
        Some(sent) => (&mut sent.handle).await,
        None => std::future::pending().await,
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_report_waits_at_most_the_report_delay() {
        let t0 = tokio::time::Instant::now();
        let delay = ms(10);
        assert_eq!(due(None, 0, t0, delay, false), Due::Never);
        assert_eq!(due(Some(t0), 1, t0, delay, false), Due::At(t0 + delay));
        assert_eq!(
            due(Some(t0), 3, t0 + ms(9), delay, false),
            Due::At(t0 + delay)
        );
        assert_eq!(due(Some(t0), 1, t0 + delay, delay, false), Due::Now);
        assert_eq!(
            due(Some(t0), 1, t0, Duration::ZERO, false),
            Due::Now,
            "no delay"
        );
        assert_eq!(due(Some(t0), 1, t0, delay, true), Due::Now, "stopping");
        assert_eq!(
            due(Some(t0), MAX_CLAIM, t0, delay, false),
            Due::Now,
            "a full batch"
        );
    }

    #[test]
    fn an_exchange_goes_when_the_queue_is_half_empty_or_reports_are_due() {
        let later = Due::At(tokio::time::Instant::now() + ms(5));
        // Room for 8 queued: 5 still queued, reports not due yet: nothing goes.
        assert!(!exchange_now(5, 8, 3, later));
        // Down to half: tasks are claimed, and the waiting reports go with them.
        assert!(exchange_now(4, 8, 4, later));
        assert!(
            exchange_now(0, 0, 1, Due::Never),
            "no claim-ahead: claim for a free slot"
        );
        // Nothing to claim (every slot and the queue full): only due reports go.
        assert!(!exchange_now(0, 0, 0, later));
        assert!(exchange_now(8, 8, 0, Due::Now));
        assert!(!exchange_now(8, 8, 0, Due::Never));
    }

    #[test]
    fn the_default_claim_ahead_follows_the_length_of_runs() {
        let mut config = AgentConfig::new(vec!["http://x".into()], PathBuf::from("/tmp"));
        config.slots = 2;
        assert_eq!(config.claim_ahead(None), 2, "one per slot before any run");
        assert_eq!(config.claim_ahead(Some(Duration::from_secs(30))), 2);
        assert_eq!(config.claim_ahead(Some(QUEUE_SPAN)), 2);
        assert_eq!(
            config.claim_ahead(Some(QUEUE_SPAN / 3)),
            6,
            "three runs per slot fit in the span"
        );
        assert_eq!(
            config.claim_ahead(Some(Duration::from_micros(100))),
            2 * MAX_AHEAD_PER_SLOT,
            "at most MAX_AHEAD_PER_SLOT per slot"
        );
        config.claim_ahead = Some(0);
        assert_eq!(config.claim_ahead(Some(ms(1))), 0, "set by hand: as set");
    }

    #[test]
    fn run_times_follow_a_longer_run_at_once_and_a_shorter_one_slowly() {
        let times = RunTimes::default();
        assert_eq!(times.recent(), None);
        times.note(ms(1));
        assert_eq!(times.recent(), Some(ms(1)));
        times.note(Duration::from_secs(60));
        assert_eq!(times.recent(), Some(Duration::from_secs(60)), "at once");
        times.note(ms(1));
        let after_one = times.recent().unwrap();
        assert!(after_one > Duration::from_secs(50), "slowly: {after_one:?}");
        for _ in 0..200 {
            times.note(ms(1));
        }
        assert!(times.recent().unwrap() < ms(2), "{:?}", times.recent());
    }

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
