//! Simulated node agents over gRPC (the node-registry contract's `orchion.v1.Orchestrator`):
//! K nodes `RegisterNode`, then each sends `Heartbeat` every interval for the window, spread
//! evenly over the interval, as the contract's agents do (every 5 s). The figures are those of
//! the HTTP `nodes` scenario (`nodes.rs`, whose registration and heartbeat schedule this
//! shares): the server's CPU over the window and the heartbeat latencies. The nodes are tokio
//! tasks of this process spread over [`CONNECTIONS`] HTTP/2 connections (tonic channels).

use crate::scenarios::nodes::{Figures, Kind, drover_then_floor, heartbeat_window, register_all};
use crate::server::{Server, ServerOpts};
use crate::stats::thousands;
use crate::suite::{Ctx, Row, Sizes};
use anyhow::Context;
use drover_proto::orchion::v1 as pb;
use drover_proto::orchion::v1::orchestrator_client::OrchestratorClient;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

const SCENARIO: &str = "grpc-nodes";

/// HTTP/2 connections the simulated agents share, round robin (each real agent holds its own;
/// one connection for all would put every frame through one connection task on each side).
const CONNECTIONS: usize = 64;

pub async fn grpc_nodes(ctx: &Ctx, command: String, sizes: &Sizes) -> Vec<Row> {
    let (k, secs, every) = (sizes.nodes, sizes.nodes_secs, sizes.nodes_interval);
    let kind = Kind {
        scenario: SCENARIO,
        nodes: "nodes over gRPC",
        transport: "gRPC",
        floor: "a bare tonic server answering every call at once",
        floor_target: "none: what any gRPC server shows here",
    };
    drover_then_floor(ctx, command, sizes, kind, |program| async move {
        run(ctx, &program, k, secs, every).await
    })
    .await
}

/// The load against `program` started as `drover server` (drover itself, or the floor).
async fn run(
    ctx: &Ctx,
    program: &Path,
    k: u32,
    secs: u64,
    every: Duration,
) -> anyhow::Result<Figures> {
    let grpc_port = crate::free_port()?.to_string();
    // No cap on the registry: the default (10,000) would refuse the last of them.
    let server = Server::start(&ServerOpts {
        drover: program,
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
) -> anyhow::Result<Figures> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
            .connect()
            .await
            .context("connecting to the gRPC listener")?;
        clients.push(OrchestratorClient::new(channel));
    }
    let clients = std::sync::Arc::new(clients);
    let client_of = move |i: usize| clients[i % CONNECTIONS].clone();
    ctx.say(
        SCENARIO,
        format!("registering {} nodes over gRPC", thousands(k as f64)),
    );
    let registering = client_of.clone();
    let (ids, register_s) = register_all(k, move |i| {
        let mut client = registering(i as usize);
        async move {
            let id = format!("agent-{i:05}");
            let node = pb::Node {
                id: id.clone(),
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
                .await?;
            Ok(id)
        }
    })
    .await?;
    ctx.say(
        SCENARIO,
        format!("registered in {register_s:.1} s; heartbeating for {secs} s"),
    );
    let (cpu_pct, latencies, failed) = heartbeat_window(server, ids, secs, every, move |id| {
        // The agent's number is in its id: it keeps the connection it registered on.
        let n: usize = id.trim_start_matches("agent-").parse().unwrap_or(0);
        let mut client = client_of(n);
        async move {
            let beat = pb::HeartbeatRequest { node_id: id };
            client.heartbeat(beat).await.is_ok()
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
