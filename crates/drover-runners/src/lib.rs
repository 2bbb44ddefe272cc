//! Runner drivers: start and stop one sandbox per user session, and find the sandboxes a server
//! started earlier.
//!
//! A [`Driver`] knows one kind of sandbox: [`docker::DockerDriver`] (a container through the
//! Docker Engine API) or [`process::ProcessDriver`] (a local child process). Both take their
//! host port from the system rather than probing for a free one: Docker publishes the container
//! port on a port the engine picks and the driver reads back; the process driver binds a
//! listening socket on port 0 and hands it to the child.
//!
//! Drivers know nothing of sessions' lifecycles, limits, heartbeats or the store: the server's
//! runner service decides what to start and stop, records it, and calls a driver. A driver only
//! does what it is told and says precisely how it failed ([`DriverError`]).
//!
//! A start returns only once the runner answers: both drivers wait, up to a configured start
//! timeout, until an HTTP request to the runner's port gets an HTTP answer ([`ready`]), and
//! report a sandbox that exits first, or never answers, as a failed start with nothing left
//! behind. Whether a started sandbox is still running is [`Driver::running`].

pub mod docker;
pub mod process;
pub mod ready;

use std::collections::BTreeMap;

/// Label naming the program that manages a sandbox; its value is [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "io.drover.managed-by";
pub const MANAGED_BY: &str = "drover";
/// Label naming the drover server instance that started a sandbox.
pub const INSTANCE_LABEL: &str = "io.drover.instance";

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartSpec {
    pub session_id: String,
    /// Every label the sandbox carries: the session label, [`MANAGED_BY_LABEL`],
    /// [`INSTANCE_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// Environment variables the runner gets besides the driver's own (its session id, its
    /// session token, where drover is: see [`env`]).
    pub env: BTreeMap<String, String>,
}

/// The names of the environment variables a runner is given, by either driver.
pub mod env {
    /// The port the runner serves on (inside its container, for Docker).
    pub const PORT: &str = "PORT";
    /// The same, under drover's own name.
    pub const RUNNER_PORT: &str = "DROVER_RUNNER_PORT";
    /// The runner's session id: what its heartbeats name.
    pub const SESSION_ID: &str = "DROVER_RUNNER_SESSION_ID";
    /// The runner's session token, sent as `X-Runner-Token` with its heartbeats.
    pub const TOKEN: &str = "DROVER_RUNNER_TOKEN";
    /// drover's base URL as the runner reaches it (`http://127.0.0.1:8080`), when known.
    pub const DROVER_URL: &str = "DROVER_URL";
}

/// A started sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The driver's handle: a container id, or a process id.
    pub instance: String,
    /// Where the sandbox answers on this host.
    pub host_port: u16,
}

/// A sandbox the driver found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    /// Whether it is running (a container may exist stopped).
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The configured image does not exist on this engine: build or load it.
    #[error("image {0} not found")]
    ImageNotFound(String),
    /// The engine could not be reached or did not answer in time: retry later.
    #[error("the runner engine is unavailable: {0}")]
    Unavailable(String),
    /// The engine refused or the sandbox failed to start; the message says why.
    #[error("{0}")]
    Failed(String),
}

#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// `docker` or `process`.
    fn name(&self) -> &'static str;

    /// Starts a sandbox with these labels and returns its handle and host port. On error nothing
    /// is left behind.
    async fn start(&self, spec: &StartSpec) -> Result<Started, DriverError>;

    /// Stops and removes a sandbox. One that already exited is removed; one that is already
    /// gone is not an error.
    async fn stop(&self, instance: &str) -> Result<(), DriverError>;

    /// Every sandbox carrying `label = value`, running or not.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<Found>, DriverError>;

    /// Whether the sandbox `instance` (as [`Started::instance`] named it) is still running. One
    /// that exited, or is gone, or is not drover's, is not.
    async fn running(&self, instance: &str) -> Result<bool, DriverError>;
}

impl std::fmt::Debug for dyn Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({})", self.name())
    }
}
