//! The gRPC listener: the node-registry contract's `orchion.v1.Orchestrator`
//! (`orchestrator.rs`), drover's `drover.v1.Nodes` (`watch.rs`), the standard health service
//! `grpc.health.v1` and server reflection,
//! served by tonic (HTTP/2) on a listener of its own, beside the HTTP listeners.
//!
//! This module owns the gRPC plumbing: TLS with the HTTP listeners' certificate when they have
//! one, the bearer-token check (the agent key in the
//! `authorization` metadata, when one is configured), the health service's status (SERVING
//! while the store takes writes, NOT_SERVING while it does not, probed every
//! [`HEALTH_PROBE_EVERY`]), the message size limit, and serving until the one shutdown token
//! fires. It decides nothing about nodes: the service translates to store calls.

mod counted;
pub mod orchestrator;
pub mod watch;

use crate::AppState;
use drover_proto::drover::v1::nodes_server::NodesServer;
use drover_proto::orchion::v1::orchestrator_server::OrchestratorServer;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// How often the health service asks the store whether it takes writes.
pub const HEALTH_PROBE_EVERY: Duration = Duration::from_secs(2);

/// The largest message the server decodes: the contract's messages are small (a node and its
/// capabilities, a job's payload).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Idle time before the kernel probes a gRPC connection whose peer may be gone.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The contract's service name, as the health service reports it.
const ORCHESTRATOR: &str = "orchion.v1.Orchestrator";

/// Checks `authorization: Bearer <agent key>` when the server has an agent key.
fn check_token(key: Option<&str>, request: &Request<()>) -> Result<(), Status> {
    let Some(expected) = key else {
        return Ok(());
    };
    let given = (request.metadata().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match given {
        Some(token) if crate::auth::keys_match(token.trim(), expected) => Ok(()),
        Some(_) => Err(Status::unauthenticated("invalid token")),
        None => Err(Status::unauthenticated(
            "missing token: send the agent key as 'authorization: Bearer <key>' metadata",
        )),
    }
}

/// Sets the health service's status of the server and of the contract's service from whether
/// the store takes writes now.
async fn report_health(app: &AppState, reporter: &tonic_health::server::HealthReporter) {
    let status = match app.store.ops.health().await {
        Ok(()) => tonic_health::ServingStatus::Serving,
        Err(_) => tonic_health::ServingStatus::NotServing,
    };
    for service in ["", ORCHESTRATOR] {
        reporter.set_service_status(service, status).await;
    }
}

/// Serves the gRPC services on `listener` until `shutdown` fires.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    tls: Option<tonic::transport::Identity>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // The first answer is known before the listener serves: a probe never meets an unknown
    // service.
    report_health(&app, &reporter).await;
    let probe = {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(HEALTH_PROBE_EVERY) => {}
                }
                report_health(&app, &reporter).await;
            }
        }
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(drover_proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            // The descriptors are compiled in; failing here is a build defect.
            tracing::error!(error = %e, "the gRPC reflection service cannot be built");
            e
        });
    let key = app.config.agent_key.clone();
    let token = move |r: Request<()>| check_token(key.as_deref(), &r).map(|()| r);
    let orchestrator = InterceptedService::new(
        OrchestratorServer::new(orchestrator::Orchestrator { app: app.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        token.clone(),
    );
    let nodes = InterceptedService::new(
        NodesServer::new(watch::Nodes {
            feed: app.node_feed.clone(),
            shutdown: shutdown.clone(),
        }),
        token,
    );
    let metrics = app.metrics.grpc.clone();
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let mut router = server
        .layer(tower::layer::layer_fn(move |inner| counted::Counted {
            inner,
            metrics: metrics.clone(),
        }))
        .add_service(health)
        .add_service(orchestrator)
        .add_service(nodes);
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    // As the HTTP listeners: no Nagle delay on a stream's small frames (WatchNodes), and TCP
    // keepalive so that the connection of an agent whose machine vanished is closed.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let probing = tokio::spawn(probe);
    let served = router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    probing.abort();
    served
}
