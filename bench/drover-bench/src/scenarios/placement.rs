//! Placement and scheduling over HTTP (the placement contract's routes): for each node count,
//! a fresh server gets that many nodes (`POST /register`, ten zones, the contract's default
//! capacity of 100 GB) each with stats, then
//! - `POST /schedule` one request at a time: its latencies;
//! - `GET /placement/{hash}?rf=3` one request at a time: the first (which builds the ring) on
//!   its own, then the latencies of the rest, and the server's RSS after;
//! - `POST /node/{id}/stats` from [`STATS_CLIENTS`] concurrent clients for a few seconds: the
//!   updates per second the server sustains.
//!
//! The clients are tokio tasks of this process sharing one HTTP client.

use crate::server::{Server, ServerOpts};
use crate::stats::{fmt_ms, mb, ms, percentile, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Verdict};
use anyhow::{Context, ensure};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const SCENARIO: &str = "placement";
const REGISTER_IN_FLIGHT: usize = 32;
const STATS_CLIENTS: usize = 64;

/// How much each node count is asked.
#[derive(Debug, Clone, Copy)]
pub struct PlacementSizes {
    pub nodes: [u32; 2],
    pub requests: u32,
    pub stats_secs: u64,
}

struct Figures {
    register_s: f64,
    schedule: Vec<Duration>,
    first_placement: Duration,
    placement: Vec<Duration>,
    rss: Option<u64>,
    stats_per_s: f64,
    stats_failed: u64,
}

pub async fn placement(ctx: &Ctx, command: String, sizes: PlacementSizes) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    for (i, n) in sizes.nodes.into_iter().enumerate() {
        // The targets: placement at the smaller count, scheduling and stats at the larger.
        let (placement_goal, schedule_goal, stats_goal) = if i == 0 {
            (
                ("p99 ≤ 1 ms", Goal::AtMost(1.0)),
                ("reported", Goal::None),
                ("reported", Goal::None),
            )
        } else {
            (
                ("reported", Goal::None),
                ("p99 ≤ 5 ms", Goal::AtMost(5.0)),
                ("≥ 10,000 updates/s", Goal::AtLeast(10_000.0)),
            )
        };
        let nodes = thousands(n as f64);
        match run(ctx, n, sizes).await {
            Ok(f) => {
                let p = |s: &[Duration], q| percentile(s, q).map_or(f64::NAN, ms);
                rows.add(
                    format!(
                        "/schedule p99 {} (p50 {}; {nodes} nodes with stats, {} requests one at a time; registered in {:.1} s)",
                        fmt_ms(p(&f.schedule, 0.99)),
                        fmt_ms(p(&f.schedule, 0.5)),
                        f.schedule.len(),
                        f.register_s
                    ),
                    p(&f.schedule, 0.99),
                    schedule_goal.0,
                    schedule_goal.1,
                );
                rows.add(
                    format!(
                        "/placement rf=3 p99 {} (p50 {}; {nodes} nodes, {} requests; the first, which builds the ring, {}; server RSS after {})",
                        fmt_ms(p(&f.placement, 0.99)),
                        fmt_ms(p(&f.placement, 0.5)),
                        f.placement.len(),
                        fmt_ms(ms(f.first_placement)),
                        f.rss.map_or("unknown".into(), |b| format!("{:.0} MB", mb(b)))
                    ),
                    p(&f.placement, 0.99),
                    placement_goal.0,
                    placement_goal.1,
                );
                let failed = if f.stats_failed > 0 {
                    format!(", {} failed", f.stats_failed)
                } else {
                    String::new()
                };
                rows.add(
                    format!(
                        "{} stats updates/s ({STATS_CLIENTS} clients, {} s, {nodes} nodes{failed})",
                        thousands(f.stats_per_s),
                        sizes.stats_secs
                    ),
                    f.stats_per_s,
                    stats_goal.0,
                    stats_goal.1,
                );
            }
            Err(e) => rows.missing(
                format!("{nodes} nodes failed: {e:#}"),
                "p99 ≤ 1 ms placement, ≤ 5 ms schedule, ≥ 10,000 stats/s",
                Verdict::Failed,
            ),
        }
    }
    rows.rows
}

async fn run(ctx: &Ctx, n: u32, sizes: PlacementSizes) -> anyhow::Result<Figures> {
    // No cap on the registry: the default (10,000) is the larger count itself.
    let server = Server::start(&ServerOpts {
        drover: &ctx.drover,
        strace: false,
        extra: &["--max-spots", "0"],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(ctx, &server, n, sizes).await;
    server.stop().await;
    result
}

fn stats_of(i: u32) -> serde_json::Value {
    json!({
        "cpu_free": (i % 100) as f64 / 100.0,
        "ram_free_mb": (i % 64) as f64 * 1024.0,
        "gpu_free": (i % 3) as f64,
        "latency_ms": 1.0 + (i % 50) as f64,
        "io_pressure": (i % 10) as f64 / 10.0,
    })
}

/// The latencies of `count` requests made one at a time by `request(i)`.
async fn one_at_a_time<F, Fut>(count: u32, mut request: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        let answer = request(i).await?;
        ensure!(answer.status().is_success(), "answered {}", answer.status());
        answer.bytes().await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

async fn measure(
    ctx: &Ctx,
    server: &Server,
    n: u32,
    sizes: PlacementSizes,
) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    ctx.say(
        SCENARIO,
        format!("registering {} nodes with stats", thousands(n as f64)),
    );
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(REGISTER_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, gate, base) = (http.clone(), gate.clone(), server.url.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let id = format!("node-{i:05}");
            let node = json!({"id": id, "zone": format!("zone-{}", i % 10),
                              "addr": format!("10.0.{}.{}:50051", i / 256, i % 256)});
            let r = http
                .post(format!("{base}/register"))
                .json(&node)
                .send()
                .await?;
            ensure!(r.status().is_success(), "register {id}: {}", r.status());
            let r = (http.post(format!("{base}/node/{id}/stats")))
                .json(&stats_of(i))
                .send()
                .await?;
            ensure!(r.status().is_success(), "stats of {id}: {}", r.status());
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r?.context("registering a node")?;
    }
    let register_s = t.elapsed().as_secs_f64();

    ctx.say(SCENARIO, "scheduling");
    // Met by most nodes (those with 5 % CPU and 1 GB free, within 40 ms), at any count.
    let workload = json!({"cpu_req": 0.05, "ram_req_mb": 1024.0, "max_latency_ms": 40.0});
    let schedule = one_at_a_time(sizes.requests, |_| {
        http.post(url("/schedule")).json(&workload).send()
    })
    .await
    .context("scheduling")?;

    ctx.say(SCENARIO, "placing (the first request builds the ring)");
    let t = Instant::now();
    one_at_a_time(1, |_| http.get(url("/placement/warm-up?rf=3")).send())
        .await
        .context("the first placement")?;
    let first_placement = t.elapsed();
    let placement = one_at_a_time(sizes.requests, |i| {
        http.get(url(&format!("/placement/object-{i:08x}?rf=3")))
            .send()
    })
    .await
    .context("placing")?;
    let rss = server.rss_bytes();

    ctx.say(
        SCENARIO,
        format!("stats updates for {} s", sizes.stats_secs),
    );
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(sizes.stats_secs);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..STATS_CLIENTS {
        let (http, base, done, failed) = (
            http.clone(),
            server.url.clone(),
            done.clone(),
            failed.clone(),
        );
        set.spawn(async move {
            let mut i = c as u32;
            while Instant::now() < end {
                let node = i % n;
                let sent = (http.post(format!("{base}/node/node-{node:05}/stats")))
                    .json(&stats_of(i))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i = i.wrapping_add(STATS_CLIENTS as u32 * 7 + 1);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r?;
    }
    let stats_per_s = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    Ok(Figures {
        register_s,
        schedule,
        first_placement,
        placement,
        rss,
        stats_per_s,
        stats_failed: failed.load(Ordering::Relaxed),
    })
}
