//! The Docker driver: one container per session, through the Docker Engine API on a unix socket.
//!
//! It owns the container's whole life on the engine: it checks that the image exists, creates
//! the container with the session's labels and environment, the hardening settings and one
//! published port, starts it, reads back the host port the engine picked, waits until the
//! runner answers HTTP there ([`crate::ready`], within [`DockerConfig::start_timeout`]; a
//! container that exits first or never answers is a failed start and is removed), and later
//! stops and removes it. It also lists the containers that carry a label, so a server can find
//! what it started before a restart, and tells whether one is still running.
//!
//! It must not pull images (there may be no registry: an image is built or loaded beforehand),
//! pick host ports itself (the engine picks a free one; probing would race other programs), or
//! touch containers it was not asked about by id or label. Every engine call is bounded by
//! [`DockerConfig::call_timeout`], so a hung engine is reported as
//! [`DriverError::Unavailable`] rather than hanging the caller.
//!
//! The connection is lazy: [`DockerDriver::new`] does not touch the engine, and a call that
//! finds the engine unreachable drops the connection so the next call connects anew. A server
//! can therefore start while Docker is down and work once it is up.

use drover_core::text::error_chain;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummaryStateEnum, HostConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};

use crate::{Driver, DriverError, Found, StartSpec, Started, env, ready};

/// Where the engine listens when neither the configuration nor `DOCKER_HOST` says.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How to reach the engine and what to run on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The engine's unix socket. `None`: `DOCKER_HOST` when it is a `unix://` address, else
    /// `/var/run/docker.sock`.
    pub socket: Option<PathBuf>,
    /// The runner image. It must already exist on the engine: nothing is pulled.
    pub image: String,
    /// The port the runner listens on inside the container.
    pub container_port: u16,
    /// The host address the container port is published on. The loopback address by default,
    /// so that runners are reached only through the server.
    pub publish_ip: String,
    /// The bound on every engine call (a stop may take [`DockerConfig::stop_grace`] longer).
    pub call_timeout: Duration,
    /// How long a start waits for the runner to answer HTTP on its published port; a container
    /// that exits before, or has not answered by then, failed to start. Zero skips the HTTP
    /// check: the container then only has to be running when the engine is asked once.
    pub start_timeout: Duration,
    /// How long a stopping container has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Whether the engine runs its small init (`docker-init`) as the container's PID 1. A
    /// program running as PID 1 gets no default signal handlers, so one that installs none (a
    /// plain `busybox httpd`, many servers) ignores SIGTERM and every stop would wait out the
    /// whole grace; the init forwards the signal and reaps zombies. Turn it off for an image
    /// that brings its own init, or on an engine without `docker-init`.
    pub init: bool,
    pub hardening: Hardening,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            image: "runner-image".to_owned(),
            container_port: 3000,
            publish_ip: "127.0.0.1".to_owned(),
            call_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            init: true,
            hardening: Hardening::default(),
        }
    }
}

/// What a runner container may not do. The defaults suit a runner that serves HTTP and writes
/// only to `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Drop every Linux capability (`CapDrop: ["ALL"]`).
    pub drop_all_capabilities: bool,
    /// Forbid gaining privileges through setuid binaries (`SecurityOpt: ["no-new-privileges"]`).
    pub no_new_privileges: bool,
    /// The most processes and threads the container may have at once.
    pub pids_limit: Option<i64>,
    /// The memory limit; swap is limited to the same value, so the container gets no swap.
    pub memory_bytes: Option<i64>,
    /// CPU time, in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Mount the image read-only, with a small tmpfs at `/tmp` (no exec, no setuid) for the
    /// programs that need a scratch directory.
    pub read_only_root: bool,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            drop_all_capabilities: true,
            no_new_privileges: true,
            pids_limit: Some(256),
            memory_bytes: Some(512 * 1024 * 1024),
            nano_cpus: Some(1_000_000_000),
            read_only_root: true,
        }
    }
}

/// The tmpfs at `/tmp` under a read-only root: small, since it counts against the container's
/// memory, and neither executable nor setuid, so it is scratch space and not a place to run code.
const TMP_MOUNT_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=16m";

/// A [`Driver`] that runs each sandbox as a container on a Docker Engine.
pub struct DockerDriver {
    config: DockerConfig,
    socket: PathBuf,
    /// The connection, once made. `None` before the first call and after a call found the
    /// engine unreachable, so the next call connects (and negotiates the API version) anew.
    client: Mutex<Option<Docker>>,
}

impl DockerDriver {
    /// A driver for this configuration. It does not connect: the first call does.
    pub fn new(config: DockerConfig) -> Self {
        let socket = config.socket.clone().unwrap_or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
        });
        Self {
            config,
            socket,
            client: Mutex::new(None),
        }
    }

    /// The configuration this driver was made with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The engine's socket this driver talks to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// The connection, made (and its API version negotiated) if there is none.
    async fn client(&self) -> Result<Docker, DriverError> {
        if let Some(client) = self.lock_client().clone() {
            return Ok(client);
        }
        let Some(path) = self.socket.to_str() else {
            return Err(DriverError::Failed(format!(
                "the Docker socket path {} is not UTF-8",
                self.socket.display()
            )));
        };
        // bollard bounds each request by its own timeout too; make it longer than ours (a stop
        // waits out the grace) so ours always fires first and the message is ours.
        let engine_timeout = (self.config.call_timeout + self.config.stop_grace).as_secs() + 1;
        let client = Docker::connect_with_socket(path, engine_timeout, API_DEFAULT_VERSION)
            .map_err(|e| self.unavailable(format!("connecting to {path}: {e}")))?;
        // bollard speaks a newer API than older engines know (1.41 for Engine 20.10), and an
        // engine refuses a version above its own: ask the engine and step down to it.
        let client = self
            .call("negotiating the API version", client.negotiate_version())
            .await
            .map_err(|e| e.into_driver_error("negotiating the API version"))?;
        *self.lock_client() = Some(client.clone());
        Ok(client)
    }

    fn lock_client(&self) -> std::sync::MutexGuard<'_, Option<Docker>> {
        // The guarded value is a plain Option that no panic can leave half-written.
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Unavailable`, and forget the connection so the next call makes a new one.
    fn unavailable(&self, message: String) -> DriverError {
        *self.lock_client() = None;
        DriverError::Unavailable(message)
    }

    /// Runs one engine call under [`DockerConfig::call_timeout`].
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, CallError> {
        self.call_within(what, self.config.call_timeout, call).await
    }

    /// Runs one engine call under `limit`, and sorts its failure: an answer with an error
    /// status (which callers may expect, such as 404), or an engine that could not be used.
    async fn call_within<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(EngineError::DockerResponseServerError {
                status_code,
                message,
            })) => Err(CallError::Status {
                code: status_code,
                message,
            }),
            Ok(Err(e)) if is_unreachable(&e) => Err(CallError::Driver(
                self.unavailable(format!("{what}: {}", error_chain(&e))),
            )),
            Ok(Err(e)) => Err(CallError::Driver(DriverError::Failed(format!(
                "{what}: {}",
                error_chain(&e)
            )))),
            Err(_) => Err(CallError::Driver(self.unavailable(format!(
                "{what}: no answer from the Docker engine at {} within {limit:?}",
                self.socket.display()
            )))),
        }
    }

    /// Force-removes a container that `start` created but could not finish, so a failed start
    /// leaves nothing behind. Its own failure is only logged: the caller reports the first one,
    /// and a container left by an engine that went away still carries its labels, so `list`
    /// finds it later.
    async fn discard(&self, client: &Docker, id: &str) {
        if let Err(e) = self
            .force_remove(client, id, "removing a container that failed to start")
            .await
        {
            tracing::warn!(
                container = id,
                error = %e,
                "a container that failed to start could not be removed"
            );
        }
    }

    /// Removes a container, running or not, with its anonymous volumes (which would otherwise
    /// outlive it). One that is gone, or already being removed, counts as removed.
    async fn force_remove(&self, client: &Docker, id: &str, what: &str) -> Result<(), DriverError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .call(what, client.remove_container(id, Some(options)))
            .await
        {
            Ok(()) | Err(CallError::Status { code: 404, .. }) => Ok(()),
            Err(CallError::Status { code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(e.into_driver_error(what)),
        }
    }

    /// Starts a created container and reads its host port back.
    async fn run_created(&self, client: &Docker, id: &str) -> Result<u16, DriverError> {
        self.call("starting the container", client.start_container(id, None))
            .await
            .map_err(|e| e.into_driver_error("starting the container"))?;
        let inspected = self
            .call(
                "inspecting the started container",
                client.inspect_container(id, None),
            )
            .await
            .map_err(|e| e.into_driver_error("inspecting the started container"))?;
        let port = host_port(
            &inspected,
            self.config.container_port,
            &self.config.publish_ip,
        )?;
        self.until_ready(client, id, port).await?;
        Ok(port)
    }

    /// Waits until the runner answers HTTP on `port`; fails if the container stops first or the
    /// start timeout passes. The caller removes the container on failure.
    async fn until_ready(&self, client: &Docker, id: &str, port: u16) -> Result<(), DriverError> {
        let timeout = self.config.start_timeout;
        if timeout.is_zero() {
            return Ok(());
        }
        let ip = self
            .config
            .publish_ip
            .parse()
            .map(ready::probe_ip)
            .map_err(|e| {
                DriverError::Failed(format!(
                    "the publish address {:?} is not an IP address: {e}",
                    self.config.publish_ip
                ))
            })?;
        let addr = std::net::SocketAddr::new(ip, port);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if ready::answers_http(addr, left.min(ready::PROBE_LIMIT)).await {
                return Ok(());
            }
            // No answer: the program may have exited, which no further wait would change.
            let inspected = self
                .call(
                    "inspecting the starting container",
                    client.inspect_container(id, None),
                )
                .await
                .map_err(|e| e.into_driver_error("inspecting the starting container"))?;
            if let Some(why) = stopped(&inspected) {
                return Err(DriverError::Failed(format!(
                    "{why}, before it answered on port {}",
                    self.config.container_port
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Failed(format!(
                    "the container did not answer HTTP on port {} within {timeout:?}: the \
                     image must serve HTTP on that port (--runner-port), or raise the start \
                     timeout (--runner-start-timeout)",
                    self.config.container_port
                )));
            }
            tokio::time::sleep(ready::PROBE_INTERVAL).await;
        }
    }

    /// The body of the create call: the image, labels, port and hardening.
    fn create_body(&self, spec: &StartSpec) -> ContainerCreateBody {
        let port_key = format!("{}/tcp", self.config.container_port);
        let hardening = &self.config.hardening;
        let port_bindings = HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(self.config.publish_ip.clone()),
                // Empty: the engine picks a free host port, which `start` reads back.
                host_port: Some(String::new()),
            }]),
        )]);
        let host_config = HostConfig {
            port_bindings: Some(port_bindings),
            init: Some(self.config.init),
            cap_drop: hardening
                .drop_all_capabilities
                .then(|| vec!["ALL".to_owned()]),
            // Engine 20.10 accepts both `no-new-privileges` and `no-new-privileges:true`; the
            // bare form is what the docker CLI documents and what `docker inspect` shows back.
            security_opt: hardening
                .no_new_privileges
                .then(|| vec!["no-new-privileges".to_owned()]),
            pids_limit: hardening.pids_limit,
            memory: hardening.memory_bytes,
            // Memory plus swap equal to memory: no swap at all. Left unset, the engine would
            // allow as much swap again as memory.
            memory_swap: hardening.memory_bytes,
            nano_cpus: hardening.nano_cpus,
            readonly_rootfs: Some(hardening.read_only_root),
            tmpfs: hardening
                .read_only_root
                .then(|| HashMap::from([("/tmp".to_owned(), TMP_MOUNT_OPTIONS.to_owned())])),
            ..Default::default()
        };
        let port = self.config.container_port.to_string();
        let mut variables = spec.env.clone();
        variables.insert(env::PORT.to_owned(), port.clone());
        variables.insert(env::RUNNER_PORT.to_owned(), port);
        variables.insert(env::SESSION_ID.to_owned(), spec.session_id.clone());
        ContainerCreateBody {
            image: Some(self.config.image.clone()),
            env: Some(variables.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

#[async_trait::async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &StartSpec) -> Result<Started, DriverError> {
        let client = self.client().await?;
        let image = &self.config.image;

        // Asked first so that a missing image is told apart from every other failure to create
        // (the create call's 404 says "No such image" too, but only in prose).
        match self
            .call("inspecting the image", client.inspect_image(image))
            .await
        {
            Ok(_) => {}
            Err(CallError::Status { code: 404, .. }) => {
                return Err(DriverError::ImageNotFound(image.clone()));
            }
            Err(e) => return Err(e.into_driver_error("inspecting the image")),
        }

        let options = CreateContainerOptions {
            name: Some(container_name(&spec.session_id)),
            ..Default::default()
        };
        let created = match self
            .call(
                "creating the container",
                client.create_container(Some(options), self.create_body(spec)),
            )
            .await
        {
            Ok(created) => created,
            // The image was removed between the inspect and the create.
            Err(CallError::Status { code: 404, .. }) => {
                return Err(DriverError::ImageNotFound(image.clone()));
            }
            Err(e) => return Err(e.into_driver_error("creating the container")),
        };
        let id = created.id;
        for warning in &created.warnings {
            tracing::warn!(container = %id, warning, "the Docker engine warned on create");
        }

        match self.run_created(&client, &id).await {
            Ok(host_port) => {
                tracing::debug!(
                    container = %id,
                    host_port,
                    session = %spec.session_id,
                    "container started"
                );
                Ok(Started {
                    instance: id,
                    host_port,
                })
            }
            Err(e) => {
                self.discard(&client, &id).await;
                Err(e)
            }
        }
    }

    async fn stop(&self, instance: &str) -> Result<(), DriverError> {
        let client = self.client().await?;
        let grace = self.config.stop_grace;
        let options = StopContainerOptions {
            // Whole seconds, rounded up, so a grace under a second still gives the program one.
            t: Some(
                i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
                    .unwrap_or(i32::MAX),
            ),
            ..Default::default()
        };
        // The engine answers a stop only once the container is down, which may take the whole
        // grace: allow for it on top of the usual bound.
        match self
            .call_within(
                "stopping the container",
                self.config.call_timeout + grace,
                client.stop_container(instance, Some(options)),
            )
            .await
        {
            // Stopped now, or (304, which bollard counts as success) already stopped.
            Ok(()) => {}
            Err(CallError::Status { code: 404, .. }) => return Ok(()),
            // The forced remove below kills whatever the stop could not; if that fails too, its
            // error is the one that says why.
            Err(CallError::Status { code, message }) => {
                tracing::warn!(
                    container = instance,
                    code,
                    message,
                    "stopping a container failed; removing it by force"
                );
            }
            Err(CallError::Driver(e)) => return Err(e),
        }

        self.force_remove(&client, instance, "removing the container")
            .await
    }

    async fn running(&self, instance: &str) -> Result<bool, DriverError> {
        let client = self.client().await?;
        match self
            .call(
                "inspecting the container",
                client.inspect_container(instance, None),
            )
            .await
        {
            Ok(inspected) => {
                let ours = inspected
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|labels| labels.get(crate::MANAGED_BY_LABEL))
                    .is_some_and(|v| v == crate::MANAGED_BY);
                Ok(ours && stopped(&inspected).is_none())
            }
            Err(CallError::Status { code: 404, .. }) => Ok(false),
            Err(e) => Err(e.into_driver_error("inspecting the container")),
        }
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Found>, DriverError> {
        let client = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{label}={value}")],
            )])),
            ..Default::default()
        };
        let summaries = self
            .call("listing containers", client.list_containers(Some(options)))
            .await
            .map_err(|e| e.into_driver_error("listing containers"))?;
        summaries
            .into_iter()
            .map(|summary| {
                let instance = summary.id.ok_or_else(|| {
                    DriverError::Failed(
                        "the Docker engine listed a container without an id".to_owned(),
                    )
                })?;
                Ok(Found {
                    instance,
                    labels: summary
                        .labels
                        .unwrap_or_default()
                        .into_iter()
                        .collect::<BTreeMap<_, _>>(),
                    running: summary.state == Some(ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect()
    }
}

/// How one engine call failed.
#[derive(Debug)]
enum CallError {
    /// The engine answered with an error status; some callers expect one (404: no such thing).
    Status { code: u16, message: String },
    /// The engine could not be used, or its answer could not be read.
    Driver(DriverError),
}

impl CallError {
    fn into_driver_error(self, what: &str) -> DriverError {
        match self {
            CallError::Status { code, message } => DriverError::Failed(format!(
                "{what}: the Docker engine answered {code}: {message}"
            )),
            CallError::Driver(e) => e,
        }
    }
}

/// Whether an error means the engine was not reached at all (no socket, nobody listening, the
/// connection broke or timed out), as opposed to an answer that went wrong.
fn is_unreachable(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::SocketNotFoundError(_)
            | EngineError::IOError { .. }
            | EngineError::HyperLegacyError { .. }
            | EngineError::HyperResponseError { .. }
            | EngineError::RequestTimeoutError
    )
}

/// `drover-runner-<session>-<random>`: the session id (cut short, and kept to the characters a
/// container name allows) makes `docker ps` readable; the random part makes two containers of
/// one session, or of two servers on one engine, never collide.
fn container_name(session_id: &str) -> String {
    const MAX_SESSION_CHARS: usize = 40;
    let session: String = session_id
        .chars()
        .take(MAX_SESSION_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let suffix = &random[..12];
    if session.is_empty() {
        format!("drover-runner-{suffix}")
    } else {
        format!("drover-runner-{session}-{suffix}")
    }
}

/// Why a container is not running, from an inspection of it; `None` while it runs.
fn stopped(inspected: &ContainerInspectResponse) -> Option<String> {
    let state = inspected.state.as_ref()?;
    if state.running != Some(false) {
        return None;
    }
    let code = state
        .exit_code
        .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
    let error = state
        .error
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    Some(format!(
        "the container stopped right after starting, exit code {code}{error}"
    ))
}

/// The host port the engine published `container_port` on, from an inspection of the started
/// container.
fn host_port(
    inspected: &ContainerInspectResponse,
    container_port: u16,
    publish_ip: &str,
) -> Result<u16, DriverError> {
    // A container whose program exited at once has no ports; say that instead.
    if let Some(why) = stopped(inspected) {
        return Err(DriverError::Failed(why));
    }

    let key = format!("{container_port}/tcp");
    let bindings = inspected
        .network_settings
        .as_ref()
        .and_then(|settings| settings.ports.as_ref())
        .and_then(|ports| ports.get(&key))
        .and_then(Option::as_ref)
        .ok_or_else(|| {
            DriverError::Failed(format!(
                "the Docker engine published no host port for {key}"
            ))
        })?;
    // Prefer the binding on the address asked for; an engine that also binds IPv6 may list
    // more than one, all on the same port.
    let binding = bindings
        .iter()
        .find(|b| b.host_ip.as_deref() == Some(publish_ip))
        .or_else(|| bindings.first())
        .ok_or_else(|| {
            DriverError::Failed(format!(
                "the Docker engine published no host port for {key}"
            ))
        })?;
    let port = binding.host_port.as_deref().unwrap_or_default();
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(DriverError::Failed(format!(
            "the Docker engine published {key} on an unusable host port {port:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_keep_allowed_characters_and_never_repeat() {
        let a = container_name("ses_01/ab cd");
        let b = container_name("ses_01/ab cd");
        assert!(a.starts_with("drover-runner-ses_01-ab-cd-"), "{a}");
        assert_ne!(a, b);
        assert!(container_name("").starts_with("drover-runner-"));
        let long = container_name(&"x".repeat(200));
        assert!(long.len() < 80, "{long}");
    }

    #[test]
    fn the_socket_comes_from_the_configuration_first() {
        let driver = DockerDriver::new(DockerConfig {
            socket: Some(PathBuf::from("/some/where.sock")),
            ..Default::default()
        });
        assert_eq!(driver.socket(), std::path::Path::new("/some/where.sock"));
    }

    #[test]
    fn a_missing_port_binding_is_a_clear_failure() {
        let inspected = ContainerInspectResponse::default();
        let err = host_port(&inspected, 3000, "127.0.0.1").unwrap_err();
        assert!(
            matches!(&err, DriverError::Failed(m) if m.contains("3000/tcp")),
            "{err:?}"
        );
    }
}
