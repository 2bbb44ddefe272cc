//! What the server needs to know, already validated. The binary builds it from flags,
//! environment and file; tests build it directly.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every `/internal/v1/*` request must carry it (`X-Orhestra-Key` or `X-Agent-Key`).
    pub agent_key: Option<String>,
    /// When set, `/api/v1/*` (health excepted), `/metrics` and the runner routes need
    /// `Authorization: Bearer <key>`: every request, or only changing ones under `public_reads`.
    pub api_key: Option<String>,
    /// Reads stay open when an API key is set (`--public-reads`); job `env` values stay
    /// redacted for everyone but agents.
    pub public_reads: bool,
    /// Every spot needs its own secret on each call, including spots whose clients did not ask
    /// for one at hello (`--require-node-credentials`). Without it, only spots that asked for a
    /// secret (drover's agent always does) are held to it.
    pub require_node_credentials: bool,
    /// Attempts per task when a job does not say.
    pub default_max_attempts: u32,
    /// How long a claimed task may run when its job does not say.
    pub default_task_timeout: Duration,
    /// Most tasks one job may expand to.
    pub max_tasks_per_job: u64,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    pub task_reaper_interval: Duration,
    /// How long past its lease a task is left to its agent before the reaper takes it back.
    /// Agents kill a task at its timeout and report at once; the grace lets that report arrive
    /// instead of racing the reaper.
    pub task_lease_grace: Duration,
    pub spot_reaper_interval: Duration,
    /// A spot with no heartbeat for this long is marked DOWN.
    pub spot_timeout: Duration,
    /// A DOWN spot silent for this long is removed from the registry; `None` keeps it.
    pub spot_retention: Option<Duration>,
    /// How often agents should heartbeat (told to them in the hello answer).
    pub heartbeat_interval: Duration,
    /// How long shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
    /// Session runners (used when a runner driver is given to the state).
    pub runners: crate::runners::RunnersConfig,
}

impl Default for ServerConfig {
    /// The batch contract's defaults.
    fn default() -> Self {
        ServerConfig {
            agent_key: None,
            api_key: None,
            public_reads: false,
            require_node_credentials: false,
            default_max_attempts: 3,
            default_task_timeout: Duration::from_secs(5 * 60),
            max_tasks_per_job: drover_core::sweep::DEFAULT_MAX_TASKS_PER_JOB,
            body_limit: 1024 * 1024,
            task_reaper_interval: Duration::from_secs(30),
            task_lease_grace: Duration::from_secs(10),
            spot_reaper_interval: Duration::from_secs(5),
            spot_timeout: Duration::from_secs(10),
            spot_retention: Some(Duration::from_secs(24 * 3600)),
            heartbeat_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            runners: crate::runners::RunnersConfig::default(),
        }
    }
}
