//! Simulated nodes: K spots register (`hello`), then each heartbeats every interval for the
//! window, their heartbeats spread evenly over the interval. The figures are the server's CPU
//! over the window (utime + stime from `/proc/PID/stat`, as a share of one core) and the
//! heartbeat latencies. The nodes are tokio tasks of this process sharing one HTTP client, with
//! at most [`IN_FLIGHT`] requests at once so that the server's connection cap is never reached.
//!
//! Then the same load runs against the floor (`floor.rs`: a bare HTTP server answering
//! constants), reported beside drover's figure: on loopback the server's CPU includes the
//! kernel's delivery of each answer to the client, and the floor says how much of the figure
//! any HTTP server on this machine would show.

use crate::server::{Server, ServerOpts};
use crate::stats::{fmt_ms, ms, percentile, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Sizes, Verdict};
use anyhow::{Context, bail};
use drover_api::{HeartbeatRequest, HelloRequest};
use drover_client::Client;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const SCENARIO: &str = "nodes";
const IN_FLIGHT: usize = 256;
const REGISTER_IN_FLIGHT: usize = 32;

/// What a run of simulated nodes measured.
pub struct Figures {
    pub cpu_pct: f64,
    pub latencies: Vec<Duration>,
    pub failed: u64,
    pub register_s: f64,
}

/// The two rows of a run: the server's CPU (`shape` says what ran) and the heartbeat
/// latencies, each against its target.
pub fn add_rows(rows: &mut Rows, f: &Figures, shape: &str) {
    rows.add(
        format!("server CPU {:.1} % of one core ({shape})", f.cpu_pct),
        f.cpu_pct,
        "≤ 10 % of one core",
        Goal::AtMost(10.0),
    );
    let failed = if f.failed > 0 {
        format!(", {} failed", f.failed)
    } else {
        String::new()
    };
    match (
        percentile(&f.latencies, 0.5),
        percentile(&f.latencies, 0.99),
    ) {
        (Some(p50), Some(p99)) => rows.add(
            format!(
                "heartbeat p99 {} (p50 {}, {} heartbeats{failed})",
                fmt_ms(ms(p99)),
                fmt_ms(ms(p50)),
                thousands(f.latencies.len() as f64)
            ),
            ms(p99),
            "heartbeat p99 ≤ 5 ms",
            Goal::AtMost(5.0),
        ),
        _ => rows.missing(
            format!("no heartbeat succeeded{failed}"),
            "heartbeat p99 ≤ 5 ms",
            Verdict::Failed,
        ),
    }
}

pub async fn nodes(ctx: &Ctx, command: String, sizes: &Sizes) -> Vec<Row> {
    let (k, secs, every) = (sizes.nodes, sizes.nodes_secs, sizes.nodes_interval);
    let kind = Kind {
        scenario: SCENARIO,
        nodes: "nodes",
        transport: "HTTP",
        floor: "a bare axum server answering constants",
        floor_target: "none: what any HTTP server shows here",
    };
    drover_then_floor(ctx, command, sizes, kind, |program| async move {
        run(ctx, &program, k, secs, every).await
    })
    .await
}

/// What a scenario of simulated nodes calls itself in its rows.
pub struct Kind {
    pub scenario: &'static str,
    /// What the nodes are, e.g. "nodes over gRPC".
    pub nodes: &'static str,
    pub transport: &'static str,
    /// What the floor server is.
    pub floor: &'static str,
    /// The floor row's target column.
    pub floor_target: &'static str,
}

/// Runs the load against drover, then against the floor (this binary's hidden `server`), and
/// makes the rows: drover's CPU and latencies against their targets, the floor's CPU beside
/// them, and how much of drover's figure is its own work. `run(program)` runs the load
/// against `program` started as `drover server`.
pub async fn drover_then_floor<F, Fut>(
    ctx: &Ctx,
    command: String,
    sizes: &Sizes,
    kind: Kind,
    run: F,
) -> Vec<Row>
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<Figures>>,
{
    let mut rows = Rows::new(kind.scenario, command);
    let (k, secs, every) = (sizes.nodes, sizes.nodes_secs, sizes.nodes_interval);
    let drover_cpu = match run(ctx.drover.clone()).await {
        Ok(f) => {
            let shape = format!(
                "{} {}, a heartbeat each every {} s for {secs} s; registered in {:.1} s",
                thousands(k as f64),
                kind.nodes,
                every.as_secs_f64(),
                f.register_s
            );
            add_rows(&mut rows, &f, &shape);
            Some(f.cpu_pct)
        }
        Err(e) => {
            rows.missing(
                format!("failed: {e:#}"),
                "≤ 10 % of one core; heartbeat p99 ≤ 5 ms",
                Verdict::Failed,
            );
            None
        }
    };
    ctx.say(
        kind.scenario,
        format!(
            "the same load against a bare {} server (the floor)",
            kind.transport
        ),
    );
    let floor = std::env::current_exe().context("finding this binary for the floor server");
    let floor = match floor {
        Ok(exe) => run(exe).await,
        Err(e) => Err(e),
    };
    let target = kind.floor_target;
    match floor {
        Ok(f) => {
            let above = drover_cpu.map_or(String::new(), |d| {
                format!("; drover's own work above it: {:.1} points", d - f.cpu_pct)
            });
            rows.add(
                format!(
                    "floor {:.1} % of one core: {} under the same load{above}",
                    f.cpu_pct, kind.floor
                ),
                f.cpu_pct,
                target,
                Goal::None,
            );
        }
        Err(e) => rows.missing(format!("floor failed: {e:#}"), target, Verdict::Failed),
    }
    rows.rows
}

/// The load against `program` started as `drover server` (drover itself, or the floor).
async fn run(
    ctx: &Ctx,
    program: &Path,
    k: u32,
    secs: u64,
    every: Duration,
) -> anyhow::Result<Figures> {
    // No cap on the registry: the default (10,000) would refuse the last of them.
    let server = Server::start(&ServerOpts {
        drover: program,
        strace: false,
        extra: &["--max-spots", "0"],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(ctx, &server, k, secs, every).await;
    server.stop().await;
    result
}

async fn measure(
    ctx: &Ctx,
    server: &Server,
    k: u32,
    secs: u64,
    every: Duration,
) -> anyhow::Result<Figures> {
    let client = Client::new(&server.url).with_timeout(Duration::from_secs(30));
    ctx.say(
        SCENARIO,
        format!("registering {} nodes", thousands(k as f64)),
    );
    let registering = client.clone();
    let (spots, register_s) = register_all(k, move |i| {
        let client = registering.clone();
        async move {
            let hello = HelloRequest {
                ip_address: "127.0.0.1".into(),
                hostname: Some(format!("sim-node-{i}")),
                total_cores: Some(8),
                ..Default::default()
            };
            Ok(client.hello(&hello).await?.spot_id)
        }
    })
    .await?;
    ctx.say(
        SCENARIO,
        format!("registered in {register_s:.1} s; heartbeating for {secs} s"),
    );
    let (cpu_pct, latencies, failed) = heartbeat_window(server, spots, secs, every, move |spot| {
        let client = client.clone();
        async move {
            let req = HeartbeatRequest {
                spot_id: spot,
                running_tasks: Some(0),
                ..Default::default()
            };
            client.heartbeat(&req).await.is_ok()
        }
    })
    .await?;
    Ok(Figures {
        cpu_pct,
        latencies,
        failed,
        register_s,
    })
}

/// Registers `k` nodes by `register(i)`, [`REGISTER_IN_FLIGHT`] at once; their ids and how
/// long it took, in seconds.
pub async fn register_all<F, Fut>(k: u32, register: F) -> anyhow::Result<(Vec<String>, f64)>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
{
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(REGISTER_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..k {
        let (registered, gate) = (register(i), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            registered.await
        });
    }
    let mut ids = Vec::with_capacity(k as usize);
    while let Some(r) = set.join_next().await {
        ids.push(r?.context("registering a node")?);
    }
    Ok((ids, t.elapsed().as_secs_f64()))
}

/// Each of `ids` heartbeats by `beat(id)` (true when it was answered) every `every` for
/// `secs`, their beats spread evenly over the interval, at most [`IN_FLIGHT`] at once. Answers
/// the server's CPU over the window as a share of one core, the latencies, and the failures.
pub async fn heartbeat_window<F, Fut>(
    server: &Server,
    ids: Vec<String>,
    secs: u64,
    every: Duration,
    beat: F,
) -> anyhow::Result<(f64, Vec<Duration>, u64)>
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let k = ids.len().max(1);
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let (beat, gate) = (beat.clone(), gate.clone());
        let offset = every.mul_f64(i as f64 / k as f64);
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let mut at = start + offset;
            while at < end {
                tokio::time::sleep_until(at).await;
                let Ok(_permit) = gate.acquire().await else {
                    break;
                };
                let t = Instant::now();
                if beat(id.clone()).await {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
                at += every;
            }
            (lat, failed)
        });
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let joined = tokio::time::timeout(Duration::from_secs(secs + 120), async {
        while let Some(r) = set.join_next().await {
            let (l, f) = r?;
            latencies.extend(l);
            failed += f;
        }
        anyhow::Ok(())
    })
    .await;
    // The window is the heartbeat schedule; what ran late past it counts too.
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_seconds();
    match joined {
        Ok(r) => r?,
        Err(_) => bail!("the heartbeats did not finish within {} s", secs + 120),
    }
    let (Some(c0), Some(c1)) = (cpu0, cpu1) else {
        bail!("the server's CPU time could not be read from /proc");
    };
    Ok(((c1 - c0) / wall * 100.0, latencies, failed))
}
