//! Contract-exact: clients that speak only the contract's per-task routes, one HTTP request per
//! complete (`POST /internal/v1/tasks/{id}/complete`) and small claims, 16 and then 64 at once.
//! The clients are tokio tasks of this process sharing one HTTP client, each its own spot. The
//! job is created before the clock starts: the figure is about claims and completes. On
//! PostgreSQL the same load then runs against the floor (`pg_floor.rs`: one statement per call,
//! nothing else recorded), which says what the call pattern itself costs on the machine.

use crate::scenarios::burn::sweep_job;
use crate::server::Server;
use crate::stats::{CpuMeter, fmt_ms, ms, percentile, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Sizes, Verdict, floor_row};
use anyhow::{Context, bail, ensure};
use drover_api::{CompleteRequest, HeartbeatRequest, HelloRequest};
use drover_client::Client;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCENARIO: &str = "contract-exact";
const TARGET: &str = "≥ 10,000 tasks/s";

pub async fn contract_exact(ctx: &Ctx, command: String, sizes: &Sizes) -> Vec<Row> {
    let mut all = Vec::new();
    for clients in sizes.contract_clients {
        let mut rows = Rows::new(SCENARIO, command.clone());
        match run(
            ctx,
            &ctx.drover,
            sizes.contract_n,
            clients,
            sizes.contract_claim,
        )
        .await
        {
            Ok((rate, notes)) => rows.add(
                format!(
                    "{} tasks/s ({clients} clients, claim {}, N = {}{notes})",
                    thousands(rate),
                    sizes.contract_claim,
                    thousands(sizes.contract_n as f64)
                ),
                rate,
                TARGET,
                Goal::AtLeast(10_000.0),
            ),
            Err(e) => rows.missing(
                format!("{clients} clients failed: {e:#}"),
                TARGET,
                Verdict::Failed,
            ),
        }
        if ctx.postgres.is_some() {
            floor(ctx, &mut rows, sizes, clients).await;
        }
        all.extend(rows.rows);
    }
    all
}

/// The same load against the floor (`pg_floor.rs`): the contract's calls served by the fewest
/// durable statements behind the same HTTP stack, on as many replicas as drover ran.
async fn floor(ctx: &Ctx, rows: &mut Rows<'_>, sizes: &Sizes, clients: u32) {
    let what = (
        SCENARIO,
        "one statement per call",
        "none: the call pattern's own cost here",
    );
    floor_row(ctx, rows, what, |exe| async move {
        let (rate, notes) = run(ctx, &exe, sizes.contract_n, clients, sizes.contract_claim).await?;
        let figure = format!(
            "{} tasks/s ({clients} clients{notes}): one autocommitted statement per claim and \
             per complete, no attempts, counters or events",
            thousands(rate)
        );
        Ok((rate, figure))
    })
    .await;
}

async fn run(
    ctx: &Ctx,
    program: &Path,
    n: u64,
    clients: u32,
    claim: u32,
) -> anyhow::Result<(f64, String)> {
    let servers = ctx.start_servers_of(program, false, &[]).await?;
    let result = drive(ctx, &servers, n, clients, claim).await;
    let mut notes = String::new();
    for server in servers {
        notes.push_str(&server.stop().await.notes());
    }
    let (rate, mut figures) = result?;
    figures.push_str(&ctx.store_note());
    figures.push_str(&notes);
    Ok((rate, figures))
}

/// Drives `servers` (the first creates the job; client `i` uses server `i % len`).
async fn drive(
    ctx: &Ctx,
    servers: &[Server],
    n: u64,
    clients: u32,
    claim: u32,
) -> anyhow::Result<(f64, String)> {
    let replicas: Vec<Client> = servers
        .iter()
        .map(|s| Client::new(&s.url).with_timeout(Duration::from_secs(600)))
        .collect();
    let client = replicas[0].clone();
    let job = client
        .create_job(&sweep_job("contract-exact", n))
        .await
        .context("creating the job")?;
    let mut spots = Vec::new();
    for i in 0..clients {
        let hello = HelloRequest {
            ip_address: "127.0.0.1".into(),
            hostname: Some(format!("contract-client-{i}")),
            ..Default::default()
        };
        spots.push(client.hello(&hello).await?.spot_id);
    }
    // Every spot heartbeats, so that a long run does not let the reaper take its tasks back.
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (client, spots, stop) = (client.clone(), spots.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                for s in &spots {
                    let req = HeartbeatRequest {
                        spot_id: s.clone(),
                        ..Default::default()
                    };
                    let _ = client.heartbeat(&req).await;
                }
            }
        })
    };
    ctx.say(
        SCENARIO,
        format!("{clients} clients draining {} tasks", thousands(n as f64)),
    );
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = ctx.drain_timeout(n);
    let meter = CpuMeter::start(&servers[0]);
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, spot) in spots.into_iter().enumerate() {
        let (client, errors) = (replicas[i % replicas.len()].clone(), errors.clone());
        set.spawn(async move {
            let mut done = 0u64;
            let (mut claims, mut completes) = (Vec::new(), Vec::new());
            loop {
                let asked = Instant::now();
                let tasks = match client.claim(&spot, claim).await {
                    Ok(t) => t,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if tasks.is_empty() {
                    return (done, claims, completes);
                }
                claims.push(asked.elapsed());
                for t in tasks {
                    let req = CompleteRequest {
                        spot_id: spot.clone(),
                        runtime_ms: Some(0),
                        attempt: Some(t.attempt),
                        ..Default::default()
                    };
                    let asked = Instant::now();
                    match client.complete(&t.id, &req).await {
                        Ok(_) => {
                            completes.push(asked.elapsed());
                            done += 1
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    // Each call's latency as its client saw it: at 16 clients the figure is bound by them.
    let (mut claims, mut completes) = (Vec::<Duration>::new(), Vec::new());
    let joined = tokio::time::timeout(deadline, async {
        while let Some(r) = set.join_next().await {
            let (_, c, d) = r?;
            claims.extend(c);
            completes.extend(d);
        }
        anyhow::Ok(())
    })
    .await;
    let total_s = t0.elapsed().as_secs_f64();
    let cpu = meter.note(&servers[0], n, "task");
    stop.store(true, Ordering::Relaxed);
    beat.abort();
    match joined {
        Ok(r) => r?,
        Err(_) => bail!("not drained after {deadline:?}"),
    }
    let j = client.job(&job.job_id).await?;
    ensure!(
        j.completed_tasks == n,
        "{} of {n} tasks completed ({} pending, {} running)",
        j.completed_tasks,
        j.pending_tasks,
        j.running_tasks
    );
    let p = |samples: &[Duration], q| fmt_ms(percentile(samples, q).map_or(f64::NAN, ms));
    let mut notes = format!(
        ", claim p50 / p99 {} / {}, complete {} / {}",
        p(&claims, 0.5),
        p(&claims, 0.99),
        p(&completes, 0.5),
        p(&completes, 0.99)
    );
    notes.push_str(&cpu);
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        notes.push_str(&format!(", {errors} failed calls"));
    }
    Ok((n as f64 / total_s, notes))
}
