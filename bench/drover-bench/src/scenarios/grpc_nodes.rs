//! Simulated node agents over gRPC (the node-registry contract's `orchion.v1.Orchestrator`):
//! K nodes `RegisterNode`, then each sends `Heartbeat` every interval for the window, spread
//! evenly over the interval, as the contract's agents do (every 5 s). The figures are the
//! server's CPU over the window (utime + stime from `/proc/PID/stat`, as a share of one core)
//! and the heartbeat latencies. The nodes are tokio tasks of this process sharing one HTTP/2
//! connection (a tonic channel), at most [`IN_FLIGHT`] calls at once.

use crate::server::{Server, ServerOpts};
use crate::stats::{fmt_ms, ms, percentile, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Sizes, Verdict};
use anyhow::{Context, bail};
use drover_proto::orchion::v1 as pb;
use drover_proto::orchion::v1::orchestrator_client::OrchestratorClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

const SCENARIO: &str = "grpc-nodes";
const IN_FLIGHT: usize = 256;
const REGISTER_IN_FLIGHT: usize = 32;

pub async fn grpc_nodes(ctx: &Ctx, command: String, sizes: &Sizes) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    let (k, secs, every) = (sizes.nodes, sizes.nodes_secs, sizes.nodes_interval);
    match run(ctx, k, secs, every).await {
        Ok((cpu_pct, latencies, failed, register_s)) => {
            rows.add(
                format!(
                    "server CPU {cpu_pct:.1} % of one core ({} nodes over gRPC, a heartbeat each every {} s for {secs} s; registered in {register_s:.1} s)",
                    thousands(k as f64),
                    every.as_secs_f64()
                ),
                cpu_pct,
                "≤ 10 % of one core",
                Goal::AtMost(10.0),
            );
            let failed = if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            };
            match (percentile(&latencies, 0.5), percentile(&latencies, 0.99)) {
                (Some(p50), Some(p99)) => rows.add(
                    format!(
                        "heartbeat p99 {} (p50 {}, {} heartbeats{failed})",
                        fmt_ms(ms(p99)),
                        fmt_ms(ms(p50)),
                        thousands(latencies.len() as f64)
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
        Err(e) => rows.missing(
            format!("failed: {e:#}"),
            "≤ 10 % of one core; heartbeat p99 ≤ 5 ms",
            Verdict::Failed,
        ),
    }
    rows.rows
}

async fn run(
    ctx: &Ctx,
    k: u32,
    secs: u64,
    every: Duration,
) -> anyhow::Result<(f64, Vec<Duration>, u64, f64)> {
    let grpc_port = crate::free_port()?.to_string();
    // No cap on the registry: the default (10,000) would refuse the last of them.
    let server = Server::start(&ServerOpts {
        drover: &ctx.drover,
        strace: false,
        extra: &["--max-spots", "0", "--grpc-port", &grpc_port],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(ctx, &server, &grpc_port, k, secs, every).await;
    server.stop().await;
    result
}

async fn measure(
    ctx: &Ctx,
    server: &Server,
    grpc_port: &str,
    k: u32,
    secs: u64,
    every: Duration,
) -> anyhow::Result<(f64, Vec<Duration>, u64, f64)> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
        .connect()
        .await
        .context("connecting to the gRPC listener")?;
    let client = OrchestratorClient::new(channel);
    ctx.say(
        SCENARIO,
        format!("registering {} nodes over gRPC", thousands(k as f64)),
    );
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(REGISTER_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..k {
        let (mut client, gate) = (client.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let node = pb::Node {
                id: format!("agent-{i:05}"),
                hostname: format!("sim-{i}"),
                capabilities: Some(pb::Capabilities {
                    cpu: "8".into(),
                    memory: "16GB".into(),
                    os: "linux".into(),
                    ..Default::default()
                }),
                last_seen_unix: 0,
                agent_address: format!("127.0.0.1:{}", 20000 + i % 40000),
            };
            client
                .register_node(pb::RegisterNodeRequest { node: Some(node) })
                .await
                .map(|_| format!("agent-{i:05}"))
        });
    }
    let mut ids = Vec::with_capacity(k as usize);
    while let Some(r) = set.join_next().await {
        ids.push(r?.context("registering a node")?);
    }
    let register_s = t.elapsed().as_secs_f64();
    ctx.say(
        SCENARIO,
        format!("registered in {register_s:.1} s; heartbeating for {secs} s"),
    );

    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let (mut client, gate) = (client.clone(), gate.clone());
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
                let beat = pb::HeartbeatRequest {
                    node_id: id.clone(),
                };
                match client.heartbeat(beat).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => failed += 1,
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
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_seconds();
    match joined {
        Ok(r) => r?,
        Err(_) => bail!("the heartbeats did not finish within {} s", secs + 120),
    }
    let (Some(c0), Some(c1)) = (cpu0, cpu1) else {
        bail!("the server's CPU time could not be read from /proc");
    };
    Ok(((c1 - c0) / wall * 100.0, latencies, failed, register_s))
}
