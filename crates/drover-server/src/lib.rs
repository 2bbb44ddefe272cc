//! drover's server: the HTTP surfaces, authentication, and the background reapers, over one
//! store ([`Stores`]).
//!
//! The server owns no state of its own: every request becomes one store call, and the store is
//! the single source of truth (so several replicas can later share one database). Surfaces
//! translate wire types into domain calls (`translate`) and map errors once (`error`); they
//! hold no SQL and no lifecycle rule. [`serve`] starts from an already-bound listener and one
//! shutdown token that the HTTP server and every background worker obey.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod reaper;
pub mod routes;
pub mod runners;
pub mod translate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::ServerConfig;
pub use error::ApiError;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Method;
use axum::{Extension, Router, middleware};
use drover_store::{StoreError, Stores};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub store: Stores,
    pub config: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<metrics::Metrics>,
    pub runners: Arc<runners::RunnerService>,
}

impl AppState {
    /// A state without a runner driver: the runner endpoints answer 503 `RUNNERS_DISABLED`.
    pub fn new(store: Stores, config: ServerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::with_runner_driver(store, config, clock, None)
    }

    pub fn with_runner_driver(
        store: Stores,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        driver: Option<Arc<dyn drover_runners::Driver>>,
    ) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        let counted = metrics.clone();
        store.observe(move |events| counted.count_events(events));
        let runners = Arc::new(runners::RunnerService::new(
            store.clone(),
            driver,
            config.runners.clone(),
            clock.clone(),
            metrics.runners.clone(),
        ));
        AppState {
            store,
            config: Arc::new(config),
            clock,
            metrics,
            runners,
        }
    }

    pub fn runner_worker(&self) -> reaper::RunnerReaper {
        reaper::RunnerReaper {
            runners: self.runners.clone(),
        }
    }

    pub fn task_reaper(&self) -> reaper::TaskReaper {
        reaper::TaskReaper {
            store: self.store.jobs.clone(),
            clock: self.clock.clone(),
            grace: self.config.task_lease_grace,
        }
    }

    pub fn spot_reaper(&self) -> reaper::SpotReaper {
        reaper::SpotReaper {
            store: self.store.nodes.clone(),
            clock: self.clock.clone(),
            timeout: self.config.spot_timeout,
            retention: self.config.spot_retention,
        }
    }
}

/// All routes with auth, limits, fallbacks and request tracing.
pub fn router(state: AppState) -> Router {
    let agent_key = Arc::new(state.config.agent_key.clone());
    let api_key = Arc::new(state.config.api_key.clone());
    let limit = state.config.body_limit;
    let internal = routes::internal::routes().route_layer(middleware::from_fn_with_state(
        agent_key,
        auth::require_agent_key,
    ));
    let public = routes::public::routes()
        .merge(routes::session_runners::routes())
        .route_layer(middleware::from_fn_with_state(
            api_key,
            auth::require_api_key_for_changes,
        ));
    finish(Router::new().merge(public).merge(internal), state, limit)
}

/// Only the session-runners contract's routes, for a listener of their own (the contract's
/// clients expect port 3001), with the same API-key rule as on the main port.
pub fn runner_router(state: AppState) -> Router {
    let api_key = Arc::new(state.config.api_key.clone());
    let limit = state.config.body_limit;
    let runners = routes::session_runners::routes().route_layer(middleware::from_fn_with_state(
        api_key,
        auth::require_api_key_for_changes,
    ));
    finish(runners, state, limit)
}

/// Fallbacks, body limit and request tracing around a set of routes.
fn finish(routes: Router<AppState>, state: AppState, limit: usize) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(extract::BodyLimit(limit)))
        .layer(TraceLayer::new_for_http())
}

async fn not_found(method: Method, request: Request) -> ApiError {
    ApiError::NotFound {
        code: "NOT_FOUND",
        message: format!("no route for {method} {}", request.uri().path()),
    }
}

async fn method_not_allowed(method: Method, request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}",
        request.uri().path()
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("closing the store failed: {0}")]
    Store(#[from] StoreError),
}

/// Serves `state` on `listener` with the reapers running, until `shutdown` fires; then stops
/// accepting, lets in-flight requests finish (up to the configured grace), stops the background
/// workers, and closes the store.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with_runner_listener(listener, None, state, shutdown).await
}

/// [`serve`], and the session-runners routes also on `runner_listener` when one is given.
/// Both listeners stop together and share the shutdown grace.
pub async fn serve_with_runner_listener(
    listener: TcpListener,
    runner_listener: Option<TcpListener>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let config = state.config.clone();
    if state.runners.enabled() {
        // Adopt or remove what an earlier run left, before the first cleanup interval; the
        // runner worker retries if the engine is not up yet.
        let runners = state.runners.clone();
        tokio::spawn(async move {
            if let Err(e) = runners.reconcile().await {
                tracing::warn!(error = %e, "runner reconciliation failed; will retry");
            }
        });
    }
    let mut workers = vec![
        reaper::spawn(
            state.task_reaper(),
            config.task_reaper_interval,
            shutdown.clone(),
        ),
        reaper::spawn(
            state.spot_reaper(),
            config.spot_reaper_interval,
            shutdown.clone(),
        ),
    ];
    if state.runners.enabled() {
        workers.push(reaper::spawn(
            state.runner_worker(),
            config.runners.cleanup_interval,
            shutdown.clone(),
        ));
    }
    let store = state.store.clone();
    let extra = runner_listener.map(|l| {
        axum::serve(l, runner_router(state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future()
    });
    let main = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let server = async move {
        match extra {
            Some(extra) => tokio::try_join!(main, extra).map(drop),
            None => main.await,
        }
    };
    let mut server = tokio::spawn(server);
    let served = tokio::select! {
        done = &mut server => done,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                Ok(done) => done,
                Err(_) => {
                    tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests did not finish in time; dropping them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // Whatever ended the server, the workers stop too.
    shutdown.cancel();
    for w in workers {
        let _ = w.await;
    }
    store.ops.close().await?;
    tracing::info!("server stopped");
    match served {
        Ok(result) => result.map_err(ServeError::Io),
        Err(join) => Err(ServeError::Io(std::io::Error::other(join))),
    }
}
