//! The floor of the nodes scenario: a bare HTTP server (axum over hyper, as drover's is) that
//! answers the routes the scenario calls with constant bodies, and does nothing else: no store,
//! no routing beyond those three routes, no limits, no auth, no tracing. Its CPU under the same
//! heartbeat load is what the HTTP library, tokio and the kernel's loopback path cost by
//! themselves on this machine, so the scenario can say how much of drover's figure is drover's.
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

#[derive(Args)]
pub struct FloorArgs {
    #[arg(long)]
    bind: String,
    #[arg(long)]
    port: u16,
    /// The other `drover server` options, accepted and ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _rest: Vec<String>,
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
                post(|| async { (JSON, r#"{"spotId":"floor"}"#) }),
            )
            .route(
                "/internal/v1/heartbeat",
                post(|| async { (JSON, r#"{"success":true}"#) }),
            );
        let listener = tokio::net::TcpListener::bind((args.bind.as_str(), args.port)).await?;
        let stop = async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await?;
        anyhow::Ok(())
    })
}
