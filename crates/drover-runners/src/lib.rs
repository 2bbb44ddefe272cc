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

pub mod docker;
pub mod process;

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
}

impl std::fmt::Debug for dyn Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({})", self.name())
    }
}
