//! The floor of the nodes scenarios: a bare HTTP server (axum over hyper, as drover's is) that
//! answers the routes the scenario calls with constant bodies, and does nothing else: no store,
//! no routing beyond those three routes, no limits, no auth, no tracing. Its CPU under the same
//! heartbeat load is what the HTTP library, tokio and the kernel's loopback path cost by
//! themselves on this machine, so the scenario can say how much of drover's figure is drover's.
//! With a PostgreSQL `--db` it also serves the contract-exact scenario's claims and completes
//! with the fewest durable statements (`pg_floor.rs`); with `--amqp-url`, the priority-router
//! scenario's registrations published straight to the broker (`amqp_floor.rs`). With
//! `--grpc-port` it also serves the node-registry contract's gRPC service answering every call
//! at once (tonic, as drover's), the floor of the `grpc-nodes` scenario.
//!
//! It is this binary's hidden `server` subcommand and takes the options `drover server` takes
//! (`--bind A --port P ...`, the rest ignored), so that [`crate::server::Server`] starts it as
//! it starts drover, with this binary in place of drover's. It runs on a
//! runtime of the same shape as drover's server (half the cores as workers, at least one; see
//! `drover_cli::process`).

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use clap::Args;
use drover_proto::orchion::v1 as pb;
use drover_proto::orchion::v1::orchestrator_server::{Orchestrator, OrchestratorServer};
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Response, Status};

#[derive(Args)]
pub struct FloorArgs {
    #[arg(long)]
    bind: String,
    #[arg(long)]
    port: u16,
    /// Also answer the node-registry contract's gRPC calls on this port (the `grpc-nodes`
    /// scenario's floor): every call succeeds with an empty answer.
    #[arg(long)]
    grpc_port: Option<u16>,
    /// With a `postgres://` URL, also serve the contract-exact scenario's calls on that
    /// database (`pg_floor.rs`); a SQLite path is ignored.
    #[arg(long)]
    db: Option<String>,
    /// The other `drover server` options, accepted and ignored but for `--amqp-url`, with
    /// which it also serves the priority-router scenario's registrations (`amqp_floor.rs`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

const JSON: [(axum::http::HeaderName, &str); 1] = [(CONTENT_TYPE, "application/json")];

pub fn run(args: FloorArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads((cores / 2).max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route(
                "/api/v1/health",
                get(|| async {
                    (
                        JSON,
                        r#"{"status":"healthy","database":"connected","activeSpots":0,"pendingTasks":0,"runningTasks":0}"#,
                    )
                }),
            )
            .route(
                "/internal/v1/hello",
                post(|| async {
                    // Each spot its own id (unique across replicas of the floor), as the
                    // PostgreSQL floor's completes check their holder.
                    static SPOTS: AtomicU64 = AtomicU64::new(0);
                    let n = SPOTS.fetch_add(1, Ordering::Relaxed);
                    let id = format!("floor-{}-{n}", std::process::id());
                    (JSON, format!(r#"{{"spotId":"{id}"}}"#))
                }),
            )
            .route(
                "/internal/v1/heartbeat",
                post(|| async { (JSON, r#"{"success":true}"#) }),
            );
        let app = match args.db.as_deref() {
            Some(url) if url.starts_with("postgres://") => {
                app.merge(crate::pg_floor::routes(url).await?)
            }
            _ => app,
        };
        let amqp = (args.rest.iter())
            .position(|a| a == "--amqp-url")
            .and_then(|i| args.rest.get(i + 1));
        let app = match amqp {
            Some(url) => app.merge(crate::amqp_floor::routes(url).await?),
            None => app,
        };
        let listener = tokio::net::TcpListener::bind((args.bind.as_str(), args.port)).await?;
        let stop = async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        };
        if let Some(port) = args.grpc_port {
            let grpc = tokio::net::TcpListener::bind((args.bind.as_str(), port)).await?;
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(OrchestratorServer::new(Floor))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
            );
        }
        axum::serve(listener, app).with_graceful_shutdown(stop).await?;
        anyhow::Ok(())
    })
}

/// The gRPC floor: the contract's service answering every call at once, as it comes.
struct Floor;

#[tonic::async_trait]
impl Orchestrator for Floor {
    async fn register_node(
        &self,
        _: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        Ok(Response::new(pb::RegisterNodeResponse {}))
    }

    async fn update_node(
        &self,
        _: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeResponse>, Status> {
        Ok(Response::new(pb::UpdateNodeResponse {}))
    }

    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Ok(Response::new(pb::ListNodesResponse::default()))
    }

    async fn submit_job(
        &self,
        _: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        Ok(Response::new(pb::SubmitJobResponse::default()))
    }

    async fn get_job_status(
        &self,
        _: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        Ok(Response::new(pb::GetJobStatusResponse::default()))
    }
}
