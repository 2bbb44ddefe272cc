//! Burn-down and store ceiling: N no-op tasks as one sweep, drained as fast as the batched
//! routes allow, through a real server with W worker processes (tasks/s, fsyncs and commits
//! per task), and then the same drain in-process against `drover_store` alone, the ceiling the
//! server can approach. Both clocks run from the create request to the last task done, so both
//! include creating the sweep, as the peers' end-to-end figure includes enqueueing.

use crate::batch_worker::Route;
use crate::server::Server;
use crate::stats::thousands;
use crate::suite::{Ctx, Goal, Rows, Verdict};
use crate::{Counts, Procs, Worker, Workers, clean_env, spawn, stop_all};
use anyhow::{Context, bail, ensure};
use drover_client::Client;
use drover_core::sweep::{Sweep, SweepSpec};
use drover_core::{ReportKind, TaskResult};
use drover_store::{NewJob, Report, Stores};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::Command;

const SCENARIO: &str = "burn-down";
const RATE_TARGET: &str = "≥ 50,000 tasks/s (≥ 10× the fastest peer: see its row)";
const FSYNC_TARGET: &str = "≤ 0.05 per task";
/// How often the drain is polled (the peers' harness polls every 10 ms).
const POLL: Duration = Duration::from_millis(10);
/// How often progress is shown.
const PROGRESS: Duration = Duration::from_secs(10);

/// The burn-down rows, and its rate for the ratio to the store ceiling.
pub async fn burn_down(
    ctx: &Ctx,
    command: String,
    n: u64,
    warmup: u64,
    workers: u32,
    route: Route,
) -> (Vec<crate::suite::Row>, Option<f64>) {
    let mut rows = Rows::new(SCENARIO, command);
    match run_burn_down(ctx, n, warmup, workers, route).await {
        Ok(b) => {
            let rate = n as f64 / b.total_s;
            rows.add(
                format!(
                    "{} tasks/s (N = {}, {} workers, create {:.2} s, total {:.2} s, server CPU \
                     {:.1} s{})",
                    thousands(rate),
                    thousands(n as f64),
                    workers,
                    b.create_s,
                    b.total_s,
                    b.server_cpu_s,
                    b.notes
                ),
                rate,
                RATE_TARGET,
                Goal::AtLeast(50_000.0),
            );
            match b.fsyncs {
                Some(f) => rows.add(
                    format!(
                        "{:.3} fsyncs per task ({} fsync/fdatasync calls, strace)",
                        f as f64 / n as f64,
                        thousands(f as f64)
                    ),
                    f as f64 / n as f64,
                    FSYNC_TARGET,
                    Goal::AtMost(0.05),
                ),
                None => rows.missing(
                    "fsyncs per task: not counted (strace not usable)".into(),
                    FSYNC_TARGET,
                    Verdict::Skipped,
                ),
            }
            match b.commits {
                Some(c) => rows.add(
                    format!(
                        "{:.3} store commits per task ({} commits, /metrics)",
                        c / n as f64,
                        thousands(c)
                    ),
                    c / n as f64,
                    FSYNC_TARGET,
                    Goal::AtMost(0.05),
                ),
                None => rows.missing(
                    "store commits per task: not exported (no drover_store_commits_total in \
                     /metrics)"
                        .into(),
                    FSYNC_TARGET,
                    Verdict::Skipped,
                ),
            }
            (rows.rows, Some(rate))
        }
        Err(e) => {
            rows.missing(format!("failed: {e:#}"), RATE_TARGET, Verdict::Failed);
            (rows.rows, None)
        }
    }
}

struct BurnDown {
    create_s: f64,
    total_s: f64,
    server_cpu_s: f64,
    fsyncs: Option<u64>,
    commits: Option<f64>,
    notes: String,
    /// The timed part, by the wall clock (strace's timestamps).
    wall: (SystemTime, SystemTime),
}

async fn run_burn_down(
    ctx: &Ctx,
    n: u64,
    warmup: u64,
    workers: u32,
    route: Route,
) -> anyhow::Result<BurnDown> {
    let mut servers = ctx.start_servers(ctx.strace, &[]).await?;
    let mut server = servers.remove(0);
    let timeout = ctx.drain_timeout(n);
    let mut procs = Procs {
        server: None,
        workers: Vec::new(),
    };
    let result = drain(
        ctx,
        &mut server,
        &servers,
        &mut procs,
        n,
        warmup,
        workers,
        route,
        timeout,
    )
    .await;
    let (totals, _) = stop_all(&mut procs, Workers::Bench { claim_batch: 1000 }).await;
    let end = server.stop().await;
    let mut others = String::new();
    for replica in servers {
        others.push_str(&replica.stop().await.notes());
    }
    let mut b = result?;
    b.notes.push_str(&ctx.store_note());
    b.notes.push_str(&others);
    b.fsyncs = end.fsyncs_between(b.wall.0, b.wall.1);
    if let Counts::Bench(c) = &totals.counts {
        b.notes.push_str(&format!(
            ", {} claims, avg {:.0} tasks, {} empty",
            thousands(c.claims as f64),
            if c.claims > 0 {
                c.claimed as f64 / c.claims as f64
            } else {
                0.0
            },
            thousands(c.empty_claims as f64)
        ));
        if c.errors > 0 || c.heartbeat_errors > 0 {
            b.notes.push_str(&format!(
                ", worker errors {} (first: {}), heartbeat errors {}",
                c.errors,
                c.first_error.as_deref().unwrap_or("?"),
                c.heartbeat_errors
            ));
        }
    }
    b.notes.push_str(&end.notes());
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
async fn drain(
    ctx: &Ctx,
    server: &mut Server,
    replicas: &[Server],
    procs: &mut Procs,
    n: u64,
    warmup: u64,
    workers: u32,
    route: Route,
    timeout: Duration,
) -> anyhow::Result<BurnDown> {
    // Long enough for any create call (a slow server materialises every task of the sweep).
    let client = Client::new(&server.url).with_timeout(Duration::from_secs(600));
    let http = reqwest::Client::new();
    let max_lifetime = (timeout + Duration::from_secs(300)).as_secs() + warmup;
    // Worker `i` works through server `i` of the first and the other replicas, round-robin.
    let urls: Vec<&str> = std::iter::once(server.url.as_str())
        .chain(replicas.iter().map(|r| r.url.as_str()))
        .collect();
    for i in 0..workers {
        procs.workers.push(start_batch_worker(
            urls[i as usize % urls.len()],
            i,
            route,
            max_lifetime,
        )?);
    }
    // Server CPU is the sum over every replica.
    let cpu = |server: &Server| -> Option<f64> {
        replicas
            .iter()
            .try_fold(server.cpu_seconds()?, |sum, r| Some(sum + r.cpu_seconds()?))
    };
    let t = Instant::now();
    loop {
        check_workers(procs)?;
        server.check_alive()?;
        if client.health().await?.active_spots >= workers as u64 {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the workers did not register within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if warmup > 0 {
        let job = client.create_job(&sweep_job("warm-up", warmup)).await?;
        wait_job(
            ctx,
            &client,
            server,
            procs,
            &job.job_id,
            Duration::from_secs(60),
        )
        .await?;
    }

    let commits0 = server.commits(&http).await;
    let cpu0 = cpu(server);
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    ctx.say(
        SCENARIO,
        format!("creating a sweep of {} tasks", thousands(n as f64)),
    );
    let job = client
        .create_job(&sweep_job("burn-down", n))
        .await
        .context("creating the sweep")?;
    let create_s = t0.elapsed().as_secs_f64();
    ctx.say(SCENARIO, format!("created in {create_s:.2} s; draining"));
    ensure!(
        job.total_tasks == n,
        "the job has {} tasks, not {n}",
        job.total_tasks
    );
    wait_job(ctx, &client, server, procs, &job.job_id, timeout).await?;
    let total_s = t0.elapsed().as_secs_f64();
    let wall1 = SystemTime::now();
    let cpu1 = cpu(server);
    let commits1 = server.commits(&http).await;

    let j = client.job(&job.job_id).await?;
    ensure!(
        j.completed_tasks == n && j.failed_tasks == 0,
        "{} of {n} tasks completed, {} failed",
        j.completed_tasks,
        j.failed_tasks
    );
    Ok(BurnDown {
        create_s,
        total_s,
        server_cpu_s: cpu0.zip(cpu1).map_or(0.0, |(a, b)| b - a),
        fsyncs: None,
        commits: commits0.zip(commits1).map(|(a, b)| b - a),
        notes: String::new(),
        wall: (wall0, wall1),
    })
}

/// A job whose one parameter `i` sweeps 1..=n; bench workers run nothing.
pub fn sweep_job(name: &str, n: u64) -> drover_api::CreateJobRequest {
    drover_api::CreateJobRequest {
        name: Some(name.into()),
        parameters: Some(serde_json::Map::from_iter([(
            "i".to_string(),
            json!({"min": 1, "max": n, "step": 1}),
        )])),
        ..Default::default()
    }
}

/// Polls a job until it has no NEW or RUNNING task (read twice, 20 ms apart), showing progress.
async fn wait_job(
    ctx: &Ctx,
    client: &Client,
    server: &mut Server,
    procs: &mut Procs,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut shown = Instant::now();
    loop {
        let j = client.job(job).await?;
        if j.pending_tasks + j.running_tasks == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let j = client.job(job).await?;
            if j.pending_tasks + j.running_tasks == 0 {
                return Ok(());
            }
        }
        if shown.elapsed() >= PROGRESS {
            shown = Instant::now();
            ctx.say(
                SCENARIO,
                format!(
                    "{} of {} done after {:.0} s",
                    thousands(j.completed_tasks as f64),
                    thousands(j.total_tasks as f64),
                    start.elapsed().as_secs_f64()
                ),
            );
        }
        server.check_alive()?;
        check_workers(procs)?;
        if start.elapsed() > timeout {
            bail!(
                "not drained after {timeout:?}: {} of {} done (raise --timeout, or the server \
                 stalls)",
                j.completed_tasks,
                j.total_tasks
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn check_workers(procs: &mut Procs) -> anyhow::Result<()> {
    for (i, w) in procs.workers.iter_mut().enumerate() {
        if let Some(status) = w.child.try_wait()? {
            bail!("worker {i} exited ({status})");
        }
    }
    Ok(())
}

fn start_batch_worker(
    url: &str,
    i: u32,
    route: Route,
    max_lifetime: u64,
) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "batch-worker",
        "--url",
        url,
        "--index",
        &i.to_string(),
        "--max-tasks",
        "1000",
        "--wait-ms",
        "1000",
        "--route",
        match route {
            Route::Report => "report",
            Route::Exchange => "exchange",
        },
        "--max-lifetime",
        &max_lifetime.to_string(),
    ])
    // Closing its stdin stops the worker; it prints its counts on stdout.
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    clean_env(&mut cmd);
    let child = spawn(cmd).with_context(|| format!("starting worker {i}"))?;
    Ok(Worker { child, log: None })
}

// ---------------------------------------------------------------------------------------------
// Store ceiling

const CEILING: &str = "store-ceiling";

pub async fn store_ceiling(
    ctx: &Ctx,
    command: String,
    n: u64,
    workers: u32,
) -> (Vec<crate::suite::Row>, Option<f64>) {
    let mut rows = Rows::new(CEILING, command);
    match run_ceiling(ctx, n, workers).await {
        Ok((create_s, total_s)) => {
            let rate = n as f64 / total_s;
            rows.add(
                format!(
                    "{} tasks/s (N = {}, {} tokio tasks claiming 1000 / reporting 1000, create \
                     {create_s:.2} s, total {total_s:.2} s)",
                    thousands(rate),
                    thousands(n as f64),
                    workers
                ),
                rate,
                "reported; burn-down ≥ ½ of it (see its row)",
                Goal::None,
            );
            (rows.rows, Some(rate))
        }
        Err(e) => {
            rows.missing(format!("failed: {e:#}"), "reported", Verdict::Failed);
            (rows.rows, None)
        }
    }
}

async fn run_ceiling(ctx: &Ctx, n: u64, workers: u32) -> anyhow::Result<(f64, f64)> {
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("drover-bench-store-");
    let dir = match ctx.db_dir() {
        Some(d) => tmp.tempdir_in(d),
        None => tmp.tempdir(),
    }?;
    let url = format!("sqlite://{}", dir.path().join("drover.db").display());
    let store = drover_store::open(&url).context("opening the store")?;
    let now = chrono::Utc::now;
    let mut nodes = Vec::new();
    for _ in 0..workers {
        let info = drover_core::NodeInfo {
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        nodes.push(
            store
                .nodes
                .register_node(info.into(), None, now())
                .await?
                .id,
        );
    }
    let sweep = Sweep::new(SweepSpec::counting("i", "parameters.i", n as i64), u64::MAX)?;
    let new_job = NewJob {
        origin: None,
        id: None,
        name: Some("store ceiling".into()),
        priority: 0,
        max_attempts: 3,
        task_timeout: Duration::from_secs(300),
        run: None,
    };
    let t0 = Instant::now();
    let job = store.jobs.create_job(new_job, sweep, now()).await?;
    let create_s = t0.elapsed().as_secs_f64();
    ctx.say(CEILING, format!("created in {create_s:.2} s; draining"));
    let mut set = tokio::task::JoinSet::new();
    for node in nodes {
        let store = store.clone();
        set.spawn(drain_store(store, node));
    }
    let deadline = ctx.drain_timeout(n);
    let joined = tokio::time::timeout(deadline, async {
        let mut done = 0u64;
        while let Some(r) = set.join_next().await {
            done += r??;
        }
        anyhow::Ok(done)
    })
    .await;
    let done = match joined {
        Ok(r) => r?,
        Err(_) => bail!("not drained after {deadline:?}"),
    };
    let total_s = t0.elapsed().as_secs_f64();
    let j = store.jobs.get_job(&job.id).await?;
    ensure!(
        done == n && j.counts.done == n,
        "{} of {n} tasks completed ({done} reports accepted)",
        j.counts.done
    );
    store.ops.close().await?;
    Ok((create_s, total_s))
}

/// One worker of the ceiling: claim 1000, report them all, until nothing is left; returns the
/// completions accepted.
async fn drain_store(store: Stores, node: String) -> anyhow::Result<u64> {
    let mut done = 0u64;
    loop {
        let claimed = store.jobs.claim(&node, 1000, chrono::Utc::now()).await?;
        if claimed.is_empty() {
            return Ok(done);
        }
        let reports = claimed
            .into_iter()
            .map(|c| Report {
                task_id: c.id,
                node_id: node.clone(),
                attempt: Some(c.attempt),
                kind: ReportKind::Complete(TaskResult {
                    runtime_ms: Some(0),
                    ..Default::default()
                }),
            })
            .collect();
        let outcomes = store.jobs.report(reports, chrono::Utc::now()).await?;
        done += outcomes.iter().filter(|o| o.is_success()).count() as u64;
    }
}
