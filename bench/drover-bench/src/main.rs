//! `drover-bench`: drover's throughput on N no-op tasks, measured the way the peer task queues
//! (pgqueuer, Celery, RQ) are measured in `../shared/bench-peers`.
//!
//! It starts `drover server` on a free loopback port with a fresh SQLite file, starts W worker
//! processes, warms them up with a small job, then times enqueueing N tasks (`enqueue_per_s`)
//! and the wall time from the first enqueue until the server says all N are done
//! (`process_per_s`). At the end every job's counts are checked, the workers and the server get
//! SIGTERM, and the server log is scanned for WARN/ERROR lines.
//!
//! The workers are one of two kinds (`--workers-kind`):
//! - `bench` (default): this binary again, with the hidden `worker` subcommand. It registers a
//!   spot, heartbeats every 2 s, and loops: claim up to `--claim-batch` tasks, complete each one
//!   (no work, no process), back off 5-20 ms when a claim comes back empty. This measures the
//!   coordination alone, like the peers' in-process no-op functions.
//! - `agent`: real `drover agent` processes with `--slots` slots. Every job then carries the
//!   command `true`, so each task is a child process that exits 0, run and reported the way a
//!   deployment would. This measures coordination plus one process per task.

mod amqp_floor;
mod batch_worker;
mod floor;
mod pg_floor;
mod ring;
mod scenarios;
mod server;
mod stats;
mod suite;
mod table;

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use drover_api::{CompleteRequest, CreateJobRequest, HelloRequest};
use drover_client::{Client, ListOptions};
use serde_json::{Map, Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const WARMUP_JOB: &str = "drover-bench warm-up";
const BENCH_JOB: &str = "drover-bench";
/// How often the producer polls for completion (the peers' harness polls every 10 ms).
const POLL: Duration = Duration::from_millis(10);
/// Zero remaining must be read twice this far apart (as the peers' harness does).
const SETTLE: Duration = Duration::from_millis(20);
const WARMUP_TIMEOUT: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Throughput of drover on N no-op tasks with W worker processes, on 127.0.0.1.
///
/// Prints a detail line and `drover enqueue_per_s=X process_per_s=Y`, as the peer benchmarks do.
#[derive(Parser)]
#[command(name = "drover-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Sub {
    /// One worker process (started by the benchmark itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// One batched worker process of the burn-down (started by the suite itself).
    #[command(hide = true)]
    BatchWorker(batch_worker::BatchWorkerArgs),
    /// A bare HTTP server answering the nodes scenario's routes with constants, started in
    /// place of `drover server` to measure what HTTP alone costs (see `floor.rs`).
    #[command(hide = true)]
    Server(floor::FloorArgs),
    /// Every scenario of the throughput targets (or `--only` some), one result row per figure.
    Suite(suite::SuiteArgs),
    /// The Markdown report of a suite run and the peers' output.
    Table(table::TableArgs),
    /// The placement ring of N nodes, in this process: build time, memory, placement latency.
    Ring(ring::RingArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Enqueue {
    /// One POST /api/v1/jobs whose sweep expands to N tasks.
    Batch,
    /// N jobs of one task each, one request each, one after the other.
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkersKind {
    /// This binary's `worker` subcommand: claim and complete, no process per task.
    Bench,
    /// `drover agent` processes: every task runs `true` as a child process.
    Agent,
}

/// The worker kind with the setting that applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workers {
    Bench { claim_batch: u32 },
    Agent { slots: u32 },
}

impl Workers {
    const DEFAULT_CLAIM_BATCH: u32 = 10;
    const DEFAULT_SLOTS: u32 = 2;

    /// Checks that only the option of the chosen kind is given, and fills in its default.
    fn from_args(a: &BenchArgs) -> anyhow::Result<Workers> {
        match a.workers_kind {
            WorkersKind::Bench => {
                ensure!(
                    a.slots.is_none(),
                    "--slots applies to --workers-kind agent only"
                );
                let claim_batch = a.claim_batch.unwrap_or(Self::DEFAULT_CLAIM_BATCH);
                ensure!(claim_batch >= 1, "--claim-batch must be at least 1");
                Ok(Workers::Bench { claim_batch })
            }
            WorkersKind::Agent => {
                ensure!(
                    a.claim_batch.is_none(),
                    "--claim-batch applies to --workers-kind bench only (an agent claims up \
                     to its free slots)"
                );
                let slots = a.slots.unwrap_or(Self::DEFAULT_SLOTS);
                ensure!(slots >= 1, "--slots must be at least 1");
                Ok(Workers::Agent { slots })
            }
        }
    }

    /// The command every submitted job carries. Bench workers never run anything, so their
    /// jobs have none; an agent must run something, and `true` is the cheapest real process.
    fn task_command(self) -> Option<Vec<String>> {
        match self {
            Workers::Bench { .. } => None,
            Workers::Agent { .. } => Some(vec!["true".into()]),
        }
    }

    /// The settings part of the detail line; the other kind's setting is `n/a`.
    fn settings(self) -> String {
        match self {
            Workers::Bench { claim_batch } => {
                format!("workers_kind=bench claim_batch={claim_batch} slots=n/a")
            }
            Workers::Agent { slots } => format!("workers_kind=agent claim_batch=n/a slots={slots}"),
        }
    }
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The drover binary to start as the server.
    #[arg(long, value_name = "PATH", default_value = "target/release/drover")]
    drover: PathBuf,
    /// Tasks to enqueue and process.
    #[arg(long, default_value_t = 20_000)]
    n: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// What the worker processes are.
    #[arg(long, value_enum, default_value_t = WorkersKind::Bench)]
    workers_kind: WorkersKind,
    /// Most tasks a bench worker claims per request [default: 10]. Bench workers only.
    #[arg(long, value_name = "N")]
    claim_batch: Option<u32>,
    /// Tasks each `drover agent` runs at once [default: 2]. Agents only; an agent claims up to
    /// its free slots.
    #[arg(long, value_name = "N")]
    slots: Option<u32>,
    /// How the N tasks are enqueued.
    #[arg(long, value_enum, default_value_t = Enqueue::Batch)]
    enqueue: Enqueue,
    /// Tasks of the untimed warm-up job (0: no warm-up).
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Longest wait for the N tasks to be done, e.g. 400s or 5m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "400s")]
    timeout: Duration,
    /// Directory to create the temporary database directory in [default: the system temp dir].
    /// Its file system decides what an fsync costs.
    #[arg(long, value_name = "DIR")]
    db_dir: Option<PathBuf>,
    /// Keep a copy of the server's log here.
    #[arg(long, value_name = "FILE")]
    server_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    index: u32,
    #[arg(long)]
    claim_batch: u32,
    /// Exit after this many seconds whatever happens.
    #[arg(long)]
    max_lifetime: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Some(Sub::Worker(args)) => runtime.block_on(worker(args)),
        Some(Sub::BatchWorker(args)) => runtime.block_on(batch_worker::run(args)),
        Some(Sub::Suite(args)) => {
            // Scenarios drive many concurrent clients: both cores.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(suite::run(args))
        }
        Some(Sub::Table(args)) => table::run(args),
        Some(Sub::Ring(args)) => ring::run(args),
        Some(Sub::Server(args)) => floor::run(args),
        None => runtime.block_on(bench(cli.bench)).map(|_| ()),
    }
}

// ---------------------------------------------------------------------------------------------
// Worker process

/// The flag a worker process stops on: set when its stdin closes (the parent keeps it open, so
/// end of file means the parent is gone or wants it to stop) or on SIGTERM.
pub(crate) fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let flag = stop.clone();
    tokio::spawn(async move {
        term.recv().await;
        flag.store(true, Ordering::SeqCst);
    });
    Ok(stop)
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let stop = crate::stop_flag()?;
    let deadline = Instant::now() + Duration::from_secs(args.max_lifetime);
    let client = Client::new(&args.url);
    let spot = client
        .hello(&HelloRequest {
            ip_address: "127.0.0.1".into(),
            hostname: Some(format!("drover-bench-worker-{}", args.index)),
            total_cores: Some(1),
            ..Default::default()
        })
        .await
        .context("registering the spot")?
        .spot_id;

    let heartbeat_errors = Arc::new(AtomicU64::new(0));
    batch_worker::spawn_heartbeats(
        client.clone(),
        spot.clone(),
        stop.clone(),
        heartbeat_errors.clone(),
    );

    let (mut claims, mut empty_claims, mut claimed, mut completed, mut errors) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let idle_min = Duration::from_millis(5);
    let idle_max = Duration::from_millis(20);
    let mut idle = idle_min;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match client.claim(&spot, args.claim_batch).await {
            Ok(tasks) if tasks.is_empty() => {
                empty_claims += 1;
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(idle_max);
            }
            Ok(tasks) => {
                idle = idle_min;
                claims += 1;
                claimed += tasks.len() as u64;
                for task in tasks {
                    // The "work": read the payload, nothing else.
                    let _payload: Value = serde_json::from_str(&task.payload).unwrap_or_default();
                    let req = CompleteRequest {
                        spot_id: spot.clone(),
                        runtime_ms: Some(0),
                        attempt: Some(task.attempt),
                        ..Default::default()
                    };
                    match client.complete(&task.id, &req).await {
                        Ok(_) => completed += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("complete: {e}"));
                        }
                    }
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("claim: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "{}",
        json!({
            "index": args.index,
            "spot": spot,
            "claims": claims,
            "emptyClaims": empty_claims,
            "claimed": claimed,
            "completed": completed,
            "errors": errors,
            "heartbeatErrors": heartbeat_errors.load(Ordering::Relaxed),
            "firstError": first_error,
        })
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The benchmark (producer, supervisor)

/// The child processes, stopped whatever happens.
struct Procs {
    server: Option<Child>,
    workers: Vec<Worker>,
}

/// One worker process, and where its counts come from when it stops.
struct Worker {
    child: Child,
    /// `drover agent`'s log (its stdout and stderr). `None` for a bench worker, which prints its
    /// counts as a JSON line on stdout.
    log: Option<PathBuf>,
}

/// Where the run's pieces are, besides the options.
struct Setup {
    drover: PathBuf,
    url: String,
    /// The temporary directory: database, server log, agents' logs and work directories.
    dir: PathBuf,
    workers: Workers,
}

/// What the workers said about their run when they stopped.
#[derive(Debug)]
struct WorkerTotals {
    counts: Counts,
    /// Workers whose counts were found.
    reported: u32,
    /// Workers that did not exit 0 within [`STOP_TIMEOUT`] of SIGTERM.
    exit_failures: u32,
}

#[derive(Debug)]
enum Counts {
    Bench(BenchCounts),
    Agent(AgentCounts),
}

/// The JSON line a bench worker prints on stdout when it stops.
#[derive(Debug, Default)]
struct BenchCounts {
    claims: u64,
    empty_claims: u64,
    claimed: u64,
    completed: u64,
    errors: u64,
    heartbeat_errors: u64,
    first_error: Option<String>,
}

/// What a `drover agent` log says: the counts of its last line ("agent stopped") and its
/// WARN/ERROR lines. An agent counts neither claims nor failed calls (it retries those and logs
/// a WARN), so those stay unknown.
#[derive(Debug, Default, PartialEq, Eq)]
struct AgentCounts {
    /// Completions the server accepted.
    completed: u64,
    /// Failures the server accepted.
    failed: u64,
    /// Reports the server refused.
    refused: u64,
    /// Reports not delivered before the agent exited.
    lost: u64,
    warn: u64,
    error: u64,
    first_problem: Option<String>,
}

impl WorkerTotals {
    fn new(workers: Workers) -> Self {
        let counts = match workers {
            Workers::Bench { .. } => Counts::Bench(BenchCounts::default()),
            Workers::Agent { .. } => Counts::Agent(AgentCounts::default()),
        };
        WorkerTotals {
            counts,
            reported: 0,
            exit_failures: 0,
        }
    }

    /// Adds what one stopped worker left: its stdout (bench) or its log file (agent).
    fn add(&mut self, stdout: &str, log: Option<&Path>) {
        let found = match &mut self.counts {
            Counts::Bench(c) => c.add(stdout),
            Counts::Agent(c) => log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .is_some_and(|text| c.add(&text)),
        };
        self.reported += u32::from(found);
    }

    /// The workers' part of the detail line; what the kind does not count is `n/a`.
    fn detail(&self) -> String {
        match &self.counts {
            Counts::Bench(c) => {
                let avg_claim = if c.claims > 0 {
                    c.claimed as f64 / c.claims as f64
                } else {
                    0.0
                };
                format!(
                    "claims={} avg_claim={avg_claim:.1} empty_claims={} worker_errors={} \
                     heartbeat_errors={}",
                    c.claims, c.empty_claims, c.errors, c.heartbeat_errors
                )
            }
            Counts::Agent(c) => format!(
                "claims=n/a avg_claim=n/a empty_claims=n/a worker_errors=n/a \
                 heartbeat_errors=n/a agent_completed={} agent_failed={} agent_refused={} \
                 agent_lost={} agent_warn={} agent_error={}",
                c.completed, c.failed, c.refused, c.lost, c.warn, c.error
            ),
        }
    }

    /// The first thing that went wrong on a worker, if any.
    fn first_problem(&self) -> Option<&str> {
        match &self.counts {
            Counts::Bench(c) => c.first_error.as_deref(),
            Counts::Agent(c) => c.first_problem.as_deref(),
        }
    }
}

impl BenchCounts {
    /// Adds the last JSON line of a worker's stdout; false if there is none.
    fn add(&mut self, stdout: &str) -> bool {
        let Some(v) = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
        else {
            return false;
        };
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.claims += n("claims");
        self.empty_claims += n("emptyClaims");
        self.claimed += n("claimed");
        self.completed += n("completed");
        self.errors += n("errors");
        self.heartbeat_errors += n("heartbeatErrors");
        if self.first_error.is_none() {
            self.first_error = v
                .get("firstError")
                .and_then(Value::as_str)
                .map(String::from);
        }
        true
    }
}

impl AgentCounts {
    /// Adds one agent's log (text format); false if it lacks the "agent stopped" line.
    fn add(&mut self, log: &str) -> bool {
        for line in log.lines() {
            if line.contains(" WARN ") {
                self.warn += 1;
            } else if line.contains(" ERROR ") {
                self.error += 1;
            } else {
                continue;
            }
            self.first_problem.get_or_insert_with(|| line.to_string());
        }
        let Some((_, fields)) = log
            .lines()
            .rev()
            .find_map(|l| l.split_once(": agent stopped"))
        else {
            return false;
        };
        for (k, v) in fields.split_whitespace().filter_map(|f| f.split_once('=')) {
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "completed" => self.completed += v,
                "failed" => self.failed += v,
                "refused" => self.refused += v,
                "lost" => self.lost += v,
                _ => {}
            }
        }
        true
    }
}

struct Outcome {
    enqueue_s: f64,
    total_s: f64,
    jobs: u64,
    completed: u64,
    failed: u64,
    verify_error: Option<String>,
    cpu: Option<Cpu>,
    poll_errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: f64,
    /// The worker processes themselves.
    workers: f64,
    /// The workers' children they have waited for: an agent's task processes.
    tasks: f64,
    bench: f64,
}

/// Runs the classic benchmark, prints its lines, and returns `process_per_s`.
async fn bench(a: BenchArgs) -> anyhow::Result<f64> {
    ensure!(a.n >= 1, "--n must be at least 1");
    ensure!(a.workers >= 1, "--workers must be at least 1");
    let workers = Workers::from_args(&a)?;
    let drover = a.drover.canonicalize().with_context(|| {
        format!(
            "the drover binary {} is missing; build it with `cargo build --release -p drover` \
             or pass --drover PATH",
            a.drover.display()
        )
    })?;
    if PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        eprintln!(
            "note: a proxy variable is set; make sure NO_PROXY covers 127.0.0.1 (the workers \
             get it without proxy variables)"
        );
    }
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("drover-bench-");
    let dir = match &a.db_dir {
        Some(d) => tmp.tempdir_in(d),
        None => tmp.tempdir(),
    }
    .context("creating the temporary directory")?;
    let db = dir.path().join("drover.db");
    let log_path = dir.path().join("server.log");
    let port = free_port()?;
    let setup = Setup {
        drover,
        url: format!("http://127.0.0.1:{port}"),
        dir: dir.path().to_path_buf(),
        workers,
    };

    let log = std::fs::File::create(&log_path).context("creating the server log")?;
    let mut cmd = Command::new(&setup.drover);
    cmd.arg("server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--grpc-port", "0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "info")
        .env("DROVER_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    clean_env(&mut cmd);
    let server = spawn(cmd).with_context(|| format!("starting {}", setup.drover.display()))?;
    let mut procs = Procs {
        server: Some(server),
        workers: Vec::new(),
    };

    let result = run(&a, &setup, &mut procs).await;
    let (totals, server_status) = stop_all(&mut procs, workers).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if let Some(keep) = &a.server_log {
        std::fs::write(keep, &log_text)
            .with_context(|| format!("copying the server log to {}", keep.display()))?;
    }
    let warns: Vec<&str> = log_text.lines().filter(|l| l.contains(" WARN ")).collect();
    let errs: Vec<&str> = log_text.lines().filter(|l| l.contains(" ERROR ")).collect();

    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("drover-bench failed; last server log lines:");
            for line in tail(&log_text, 20) {
                eprintln!("  {line}");
            }
            return Err(e);
        }
    };

    let enqueue = match a.enqueue {
        Enqueue::Batch => "batch",
        Enqueue::Single => "single",
    };
    let cpu = match (outcome.cpu, workers) {
        (None, _) => String::new(),
        (Some(c), Workers::Bench { .. }) => format!(
            " cpu_s=server:{:.2},workers:{:.2},bench:{:.2}",
            c.server, c.workers, c.bench
        ),
        (Some(c), Workers::Agent { .. }) => format!(
            " cpu_s=server:{:.2},workers:{:.2},tasks:{:.2},bench:{:.2}",
            c.server, c.workers, c.tasks, c.bench
        ),
    };
    println!(
        "drover mode=e2e {} enqueue={enqueue} n={} workers={} enqueue_s={:.3} total_s={:.3} \
         jobs={} completed={} failed={} {} poll_errors={}{cpu} server_warn={} \
         server_error={} server_exit={}",
        workers.settings(),
        a.n,
        a.workers,
        outcome.enqueue_s,
        outcome.total_s,
        outcome.jobs,
        outcome.completed,
        outcome.failed,
        totals.detail(),
        outcome.poll_errors,
        warns.len(),
        errs.len(),
        server_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "killed".into()),
    );
    println!(
        "drover enqueue_per_s={:.0} process_per_s={:.0}",
        a.n as f64 / outcome.enqueue_s,
        a.n as f64 / outcome.total_s
    );
    for line in warns.iter().chain(errs.iter()).take(10) {
        eprintln!("server log: {line}");
    }
    if let Some(e) = totals.first_problem() {
        eprintln!("first worker problem: {e}");
    }
    if totals.reported != a.workers {
        eprintln!(
            "note: {} of {} workers reported their counts",
            totals.reported, a.workers
        );
    }
    if totals.exit_failures > 0 {
        eprintln!(
            "note: {} of {} workers did not exit 0 after SIGTERM",
            totals.exit_failures, a.workers
        );
    }
    let mut problems: Vec<String> = outcome.verify_error.into_iter().collect();
    // `true` never fails: a failed run the server retried hides from the jobs' counts, not here.
    if let Counts::Agent(c) = &totals.counts
        && c.failed > 0
    {
        problems.push(format!("the agents reported {} failed runs", c.failed));
    }
    if !problems.is_empty() {
        bail!("verification failed: {}", problems.join("; "));
    }
    Ok(a.n as f64 / outcome.total_s)
}

/// Starts worker `i`: the bench's own worker subcommand or a `drover agent`.
fn start_worker(setup: &Setup, i: u32, max_lifetime: u64) -> anyhow::Result<Worker> {
    let (mut cmd, log) = match setup.workers {
        Workers::Bench { claim_batch } => {
            let exe = std::env::current_exe().context("finding this executable")?;
            let mut cmd = Command::new(exe);
            cmd.args([
                "worker",
                "--url",
                &setup.url,
                "--index",
                &i.to_string(),
                "--claim-batch",
                &claim_batch.to_string(),
                "--max-lifetime",
                &max_lifetime.to_string(),
            ])
            // Closing its stdin stops the worker; it prints its counts on stdout.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            (cmd, None)
        }
        Workers::Agent { slots } => {
            let log = setup.dir.join(format!("agent-{i}.log"));
            let file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(&setup.drover);
            cmd.args([
                "agent",
                "--server",
                &setup.url,
                "--slots",
                &slots.to_string(),
                "--poll-interval",
                "10ms",
                "--log-format",
                "text",
                "--work-dir",
            ])
            .arg(setup.dir.join(format!("agent-{i}")))
            .env("RUST_LOG", "info")
            // The agent logs a few lines per task: to a file, so that a full pipe cannot stall
            // it and the terminal stays readable.
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
            (cmd, Some(log))
        }
    };
    clean_env(&mut cmd);
    let child = spawn(cmd).with_context(|| format!("starting worker {i}"))?;
    Ok(Worker { child, log })
}

async fn run(a: &BenchArgs, setup: &Setup, procs: &mut Procs) -> anyhow::Result<Outcome> {
    let client = Client::new(&setup.url);

    // The server answers.
    let start = Instant::now();
    loop {
        if let Some(status) = procs
            .server
            .as_mut()
            .and_then(|s| s.try_wait().ok().flatten())
        {
            bail!("the server exited at start-up ({status})");
        }
        if let Ok(h) = client.health().await
            && h.status == "healthy"
        {
            break;
        }
        ensure!(
            start.elapsed() < START_TIMEOUT,
            "the server did not become healthy within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The workers, each its own process, registered.
    let max_lifetime =
        (START_TIMEOUT + WARMUP_TIMEOUT + a.timeout + STOP_TIMEOUT).as_secs() + a.n / 100 + 60;
    for i in 0..a.workers {
        procs.workers.push(start_worker(setup, i, max_lifetime)?);
    }
    let start = Instant::now();
    loop {
        check_alive(procs)?;
        let h = client.health().await?;
        if h.active_spots >= a.workers as u64 {
            break;
        }
        ensure!(
            start.elapsed() < START_TIMEOUT,
            "only {} of {} workers registered within {START_TIMEOUT:?}",
            h.active_spots,
            a.workers
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Warm-up, not timed.
    if a.warmup > 0 {
        let job = client
            .create_job(&sweep_job(WARMUP_JOB, a.warmup, setup.workers))
            .await
            .context("submitting the warm-up job")?;
        let start = Instant::now();
        loop {
            check_alive(procs)?;
            let j = client.job(&job.job_id).await?;
            match j.status.as_str() {
                "COMPLETED" => break,
                "FAILED" | "CANCELLED" => bail!("the warm-up job ended {}", j.status),
                _ => {}
            }
            ensure!(
                start.elapsed() < WARMUP_TIMEOUT,
                "the warm-up job was not done within {WARMUP_TIMEOUT:?}: {} of {} completed",
                j.completed_tasks,
                j.total_tasks
            );
            tokio::time::sleep(POLL).await;
        }
    }

    // Timed: enqueue, then wait until everything is done.
    let cpu0 = cpu_snapshot(procs);
    let t0 = Instant::now();
    let target = match a.enqueue {
        Enqueue::Batch => {
            let job = client
                .create_job(&sweep_job(BENCH_JOB, a.n, setup.workers))
                .await
                .context("submitting the job")?;
            ensure!(
                job.total_tasks == a.n,
                "the job expanded to {} tasks, not {}",
                job.total_tasks,
                a.n
            );
            Target::Job(job.job_id)
        }
        Enqueue::Single => {
            for i in 1..=a.n {
                let req = CreateJobRequest {
                    name: Some(BENCH_JOB.into()),
                    parameters: Some(Map::from_iter([("i".to_string(), json!([i]))])),
                    command: setup.workers.task_command(),
                    ..Default::default()
                };
                client
                    .create_job(&req)
                    .await
                    .with_context(|| format!("submitting job {i} of {}", a.n))?;
            }
            Target::Health
        }
    };
    let t1 = Instant::now();
    let (t2, poll_errors) = wait_done(&client, &target, procs, a.timeout).await?;
    let cpu1 = cpu_snapshot(procs);

    // Every job's counts.
    let mut opts = ListOptions {
        limit: Some(1000),
        ..Default::default()
    };
    let (mut jobs, mut total, mut completed, mut failed, mut other) = (0u64, 0, 0, 0, 0);
    let mut warm_failed = 0;
    loop {
        let page = client.jobs(&opts).await.context("listing the jobs")?;
        for j in &page.jobs {
            if j.name.as_deref() == Some(WARMUP_JOB) {
                warm_failed += j.failed_tasks;
                continue;
            }
            jobs += 1;
            total += j.total_tasks;
            completed += j.completed_tasks;
            failed += j.failed_tasks;
            other += j.cancelled_tasks + j.pending_tasks + j.running_tasks;
        }
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    let want_jobs = match a.enqueue {
        Enqueue::Batch => 1,
        Enqueue::Single => a.n,
    };
    let mut problems = Vec::new();
    if jobs != want_jobs {
        problems.push(format!("{jobs} jobs, expected {want_jobs}"));
    }
    if total != a.n || completed != a.n {
        problems.push(format!(
            "{completed} of {total} tasks completed, expected {}",
            a.n
        ));
    }
    if failed > 0 || warm_failed > 0 || other > 0 {
        problems.push(format!(
            "{failed} failed ({warm_failed} in the warm-up), {other} not done"
        ));
    }
    Ok(Outcome {
        enqueue_s: (t1 - t0).as_secs_f64(),
        total_s: (t2 - t0).as_secs_f64(),
        jobs,
        completed,
        failed,
        verify_error: (!problems.is_empty()).then(|| problems.join("; ")),
        cpu: cpu0.zip(cpu1).map(|(b, e)| Cpu {
            server: e.server - b.server,
            workers: e.workers - b.workers,
            tasks: e.tasks - b.tasks,
            bench: e.bench - b.bench,
        }),
        poll_errors,
    })
}

/// A job named `name` whose one parameter `i` sweeps 1..=n, with the workers' task command.
fn sweep_job(name: &str, n: u64, workers: Workers) -> CreateJobRequest {
    CreateJobRequest {
        name: Some(name.into()),
        parameters: Some(Map::from_iter([(
            "i".to_string(),
            json!({"min": 1, "max": n, "step": 1}),
        )])),
        command: workers.task_command(),
        ..Default::default()
    }
}

enum Target {
    /// The one job of `--enqueue batch`.
    Job(String),
    /// All tasks on the server: pending + running from the health endpoint.
    Health,
}

async fn remaining(client: &Client, target: &Target) -> anyhow::Result<u64> {
    Ok(match target {
        Target::Job(id) => {
            let j = client.job(id).await?;
            j.pending_tasks + j.running_tasks
        }
        Target::Health => {
            let h = client.health().await?;
            h.pending_tasks + h.running_tasks
        }
    })
}

/// Polls until nothing remains, read twice [`SETTLE`] apart; returns the time of the first zero
/// reading and the number of failed polls.
async fn wait_done(
    client: &Client,
    target: &Target,
    procs: &mut Procs,
    timeout: Duration,
) -> anyhow::Result<(Instant, u64)> {
    let deadline = Instant::now() + timeout;
    let (mut errors, mut in_a_row) = (0u64, 0u32);
    let mut last = None;
    loop {
        match remaining(client, target).await {
            Ok(0) => {
                in_a_row = 0;
                let t = Instant::now();
                tokio::time::sleep(SETTLE).await;
                if let Ok(0) = remaining(client, target).await {
                    return Ok((t, errors));
                }
            }
            Ok(r) => {
                in_a_row = 0;
                last = Some(r);
            }
            Err(e) => {
                errors += 1;
                in_a_row += 1;
                ensure!(in_a_row < 50, "50 failed polls in a row, the last: {e:#}");
            }
        }
        check_alive(procs)?;
        if Instant::now() > deadline {
            bail!(
                "not done after {timeout:?}: {} tasks remaining",
                last.map_or("?".into(), |r| r.to_string())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn check_alive(procs: &mut Procs) -> anyhow::Result<()> {
    if let Some(server) = procs.server.as_mut()
        && let Some(status) = server.try_wait()?
    {
        bail!("the server exited ({status})");
    }
    for (i, w) in procs.workers.iter_mut().enumerate() {
        if let Some(status) = w.child.try_wait()? {
            bail!("worker {i} exited ({status})");
        }
    }
    Ok(())
}

/// SIGTERM to the workers (and a bench worker's stdin closed), then to the server; SIGKILL for
/// any that does not exit within [`STOP_TIMEOUT`]. Returns what the workers reported.
async fn stop_all(procs: &mut Procs, workers: Workers) -> (WorkerTotals, Option<ExitStatus>) {
    let mut totals = WorkerTotals::new(workers);
    for w in &mut procs.workers {
        drop(w.child.stdin.take());
        terminate(&w.child);
    }
    for mut w in procs.workers.drain(..) {
        let stdout = w.child.stdout.take();
        let mut child = w.child;
        let read = async move {
            let mut text = String::new();
            if let Some(mut out) = stdout {
                use tokio::io::AsyncReadExt;
                let _ = out.read_to_string(&mut text).await;
            }
            let status = child.wait().await;
            (text, status)
        };
        // On timeout the future (and the child in it) is dropped: kill_on_drop sends SIGKILL.
        match tokio::time::timeout(STOP_TIMEOUT, read).await {
            Ok((text, status)) => {
                if !status.is_ok_and(|s| s.success()) {
                    totals.exit_failures += 1;
                }
                totals.add(&text, w.log.as_deref());
            }
            Err(_) => {
                totals.exit_failures += 1;
                totals.add("", w.log.as_deref());
            }
        }
    }
    let mut status = None;
    if let Some(mut server) = procs.server.take() {
        terminate(&server);
        match tokio::time::timeout(STOP_TIMEOUT, server.wait()).await {
            Ok(Ok(s)) => status = Some(s),
            _ => {
                let _ = server.kill().await;
            }
        }
    }
    (totals, status)
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the id of a child we started and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Starts a child that is killed with us: on drop, and (Linux) when this process dies.
fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Children talk to 127.0.0.1 only: no proxies, no settings of ours leaking in.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("DROVER_") && k != "DROVER_LOG_FORMAT" || k.starts_with("ORHESTRA_") {
            cmd.env_remove(k.as_ref());
        }
    }
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// CPU seconds (user + system) used so far by the server, the workers (and the children they
/// have waited for) and this process.
fn cpu_snapshot(procs: &Procs) -> Option<Cpu> {
    let (server, _) = cpu_seconds(format!("/proc/{}/stat", procs.server.as_ref()?.id()?))?;
    let (mut workers, mut tasks) = (0.0, 0.0);
    for w in &procs.workers {
        let (own, children) = cpu_seconds(format!("/proc/{}/stat", w.child.id()?))?;
        workers += own;
        tasks += children;
    }
    let (bench, _) = cpu_seconds("/proc/self/stat")?;
    Some(Cpu {
        server,
        workers,
        tasks,
        bench,
    })
}

/// A process's own CPU seconds, and those of its children it has waited for (`cutime`,
/// `cstime`: a child's time is added there when it is reaped).
fn cpu_seconds(path: impl AsRef<Path>) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let (utime, stime, cutime, cstime) = (field(11)?, field(12)?, field(13)?, field(14)?);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| {
        let ticks = ticks as f64;
        ((utime + stime) / ticks, (cutime + cstime) / ticks)
    })
}

fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_log_gives_its_counts_and_problems() {
        let log = "\
2026-11-23T19:51:56.458883Z  INFO drover::agent_cmd: drover agent starting servers=http://127.0.0.1:1 slots=2
2026-11-23T19:51:56.900000Z  WARN drover_agent::agent: lost the server (http://127.0.0.1:1) during claim: refused
2026-11-23T19:51:57.959972Z  INFO drover_agent::agent: agent stopped completed=7 failed=1 refused=2 lost=3
";
        let mut counts = AgentCounts::default();
        assert!(counts.add(log));
        assert!(counts.add(log));
        assert_eq!((counts.completed, counts.failed), (14, 2));
        assert_eq!((counts.refused, counts.lost), (4, 6));
        assert_eq!((counts.warn, counts.error), (2, 0));
        assert!(counts.first_problem.unwrap().contains("lost the server"));

        let mut counts = AgentCounts::default();
        assert!(!counts.add(&log[..log.rfind("2026").unwrap()]));
    }

    #[test]
    fn each_option_belongs_to_its_kind() {
        let args = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["drover-bench"], extra].concat()).unwrap();
            Workers::from_args(&cli.bench)
        };
        assert_eq!(args(&[]).unwrap(), Workers::Bench { claim_batch: 10 });
        assert_eq!(
            args(&["--workers-kind", "agent"]).unwrap(),
            Workers::Agent { slots: 2 }
        );
        assert!(args(&["--slots", "4"]).is_err());
        assert!(args(&["--workers-kind", "agent", "--claim-batch", "5"]).is_err());
    }
}
