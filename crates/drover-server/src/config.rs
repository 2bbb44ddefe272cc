//! What the server needs to know, already validated. The binary builds it from flags,
//! environment and file; tests build it directly.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every `/internal/v1/*` request must carry it (`X-Orhestra-Key` or `X-Agent-Key`).
    pub agent_key: Option<String>,
    /// When set, mutating `/api/v1/*` requests must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
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
    /// Health answers 503 `LOW_DISK_SPACE` when the file system holding the database has less
    /// free space than this, in bytes; 0 turns the check off.
    pub min_free_disk: u64,
}

/// The default of [`ServerConfig::min_free_disk`]: 64 MiB, room for the WAL of a large job and
/// a checkpoint, so health turns red while writes still succeed rather than after they fail.
pub const DEFAULT_MIN_FREE_DISK: u64 = 64 * 1024 * 1024;

impl Default for ServerConfig {
    /// The batch contract's defaults.
    fn default() -> Self {
        ServerConfig {
            agent_key: None,
            api_key: None,
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
            min_free_disk: DEFAULT_MIN_FREE_DISK,
        }
    }
}
