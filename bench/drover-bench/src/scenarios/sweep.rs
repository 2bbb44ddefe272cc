//! Creating a large sweep: how long the create request takes, the server's RSS and the
//! database and WAL on disk after it, and whether the rest of the world waits meanwhile: a
//! prober calls `GET /api/v1/health` and a spot heartbeats, each every ~10 ms, from before the
//! create request until after it; their latencies during the creation (and at least the
//! second after its start) give the p99s.

use crate::scenarios::burn::sweep_job;
use crate::server::{Server, ServerOpts};
use crate::stats::{fmt_ms, mb, ms, percentile, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Verdict};
use anyhow::{Context, ensure};
use drover_api::{HeartbeatRequest, HelloRequest};
use drover_client::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SCENARIO: &str = "sweep-creation";
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Probes run this long before the create request and after it returns.
const AROUND: Duration = Duration::from_millis(300);
/// The window judged is at least this long from the create request on.
const MIN_WINDOW: Duration = Duration::from_secs(1);

struct Creation {
    create_s: f64,
    rss: Option<u64>,
    db: u64,
    wal: u64,
    health: Vec<Duration>,
    heartbeat: Vec<Duration>,
    probe_errors: u64,
}

pub async fn sweep_creation(ctx: &Ctx, command: String, n: u64) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    match run(ctx, n).await {
        Ok(c) => {
            rows.add(
                format!(
                    "created in {:.2} s (N = {})",
                    c.create_s,
                    thousands(n as f64)
                ),
                c.create_s,
                "≤ 2 s",
                Goal::AtMost(2.0),
            );
            match c.rss {
                Some(rss) => rows.add(
                    format!("server RSS {:.0} MB after", mb(rss)),
                    mb(rss),
                    "≤ 200 MB",
                    Goal::AtMost(200.0),
                ),
                None => rows.missing("server RSS unknown".into(), "≤ 200 MB", Verdict::Failed),
            }
            rows.add(
                format!(
                    "database + WAL {:.0} MB ({:.0} + {:.0} MB, 1 s after)",
                    mb(c.db + c.wal),
                    mb(c.db),
                    mb(c.wal)
                ),
                mb(c.db + c.wal),
                "≤ 150 MB",
                Goal::AtMost(150.0),
            );
            let errors = if c.probe_errors > 0 {
                format!(", {} probes failed", c.probe_errors)
            } else {
                String::new()
            };
            for (what, samples) in [("health", &c.health), ("heartbeat", &c.heartbeat)] {
                match percentile(samples, 0.99) {
                    Some(p99) => rows.add(
                        format!(
                            "{what} p99 {} during creation (max {}, {} probe(s){errors})",
                            fmt_ms(ms(p99)),
                            fmt_ms(samples.iter().max().map_or(0.0, |d| ms(*d))),
                            samples.len()
                        ),
                        ms(p99),
                        "p99 ≤ 100 ms",
                        Goal::AtMost(100.0),
                    ),
                    None => rows.missing(
                        format!("no {what} probe completed during creation{errors}"),
                        "p99 ≤ 100 ms",
                        Verdict::Failed,
                    ),
                }
            }
        }
        Err(e) => rows.missing(
            format!("failed: {e:#}"),
            "≤ 2 s; RSS ≤ 200 MB; disk ≤ 150 MB; probes p99 ≤ 100 ms",
            Verdict::Failed,
        ),
    }
    rows.rows
}

async fn run(ctx: &Ctx, n: u64) -> anyhow::Result<Creation> {
    let server = Server::start(&ServerOpts {
        drover: &ctx.drover,
        strace: false,
        extra: &[],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(ctx, &server, n).await;
    server.stop().await;
    result
}

/// One probe loop: calls `probe` every [`PROBE_EVERY`] until `stop`; each sample is when the
/// call started and how long it took (`None` if it failed).
async fn probe_loop<F, Fut>(stop: Arc<AtomicBool>, probe: F) -> Vec<(Instant, Option<Duration>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        let ok = probe().await;
        samples.push((t, ok.then(|| t.elapsed())));
    }
    samples
}

async fn measure(ctx: &Ctx, server: &Server, n: u64) -> anyhow::Result<Creation> {
    // Probes give up after a minute: a server stalled longer than that fails them.
    let client = Client::new(&server.url).with_timeout(Duration::from_secs(60));
    let spot = client
        .hello(&HelloRequest {
            ip_address: "127.0.0.1".into(),
            hostname: Some("drover-bench-probe".into()),
            ..Default::default()
        })
        .await?
        .spot_id;
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let (c, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            probe_loop(stop, || {
                let c = c.clone();
                async move { c.health().await.is_ok() }
            })
            .await
        })
    };
    let heartbeat = {
        let (c, stop, spot) = (client.clone(), stop.clone(), spot.clone());
        tokio::spawn(async move {
            probe_loop(stop, || {
                let (c, spot) = (c.clone(), spot.clone());
                async move {
                    let req = HeartbeatRequest {
                        spot_id: spot,
                        ..Default::default()
                    };
                    c.heartbeat(&req).await.is_ok()
                }
            })
            .await
        })
    };
    tokio::time::sleep(AROUND).await;
    ctx.say(
        SCENARIO,
        format!("creating a sweep of {} tasks", thousands(n as f64)),
    );
    let creator = Client::new(&server.url).with_timeout(Duration::from_secs(600));
    let t0 = Instant::now();
    let job = creator.create_job(&sweep_job("sweep-creation", n)).await;
    let t1 = Instant::now();
    let window_end = t1.max(t0 + MIN_WINDOW);
    tokio::time::sleep_until((window_end + AROUND).into()).await;
    stop.store(true, Ordering::Relaxed);
    let health = health.await.context("the health prober")?;
    let heartbeat = heartbeat.await.context("the heartbeat prober")?;
    let job = job.context("creating the sweep")?;
    ensure!(
        job.total_tasks == n,
        "the job has {} tasks, not {n}",
        job.total_tasks
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (db, wal) = server.db_bytes();
    // A sample counts if its call overlapped the window.
    let during = |samples: &[(Instant, Option<Duration>)]| -> (Vec<Duration>, u64) {
        let mut ok = Vec::new();
        let mut failed = 0;
        for (start, took) in samples {
            let end = *start + took.unwrap_or_default();
            if *start <= window_end && end >= t0 {
                match took {
                    Some(d) => ok.push(*d),
                    None => failed += 1,
                }
            }
        }
        (ok, failed)
    };
    let (health, e1) = during(&health);
    let (heartbeat, e2) = during(&heartbeat);
    Ok(Creation {
        create_s: (t1 - t0).as_secs_f64(),
        rss: server.rss_bytes(),
        db,
        wal,
        health,
        heartbeat,
        probe_errors: e1 + e2,
    })
}
