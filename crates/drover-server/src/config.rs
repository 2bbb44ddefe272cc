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
    /// How often objects with fewer healthy replicas than their factor are given replacements.
    pub repair_interval: Duration,
    /// A spot with no heartbeat for this long is marked DOWN.
    pub spot_timeout: Duration,
    /// A node of the placement surface with no stats report for this long is marked DOWN;
    /// `None` (the default, as the contract's own server) never does.
    pub stats_timeout: Option<Duration>,
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
    /// Connection and request limits of every listener.
    pub http: HttpLimits,
    /// Most bytes the task payloads of one job may add up to (payload size × tasks).
    pub max_job_bytes: u64,
    /// Most bytes one task's payload may have.
    pub max_task_payload_bytes: u64,
    /// Most bytes a spot's labels may have, as JSON.
    pub max_label_bytes: u64,
    /// Most spots the registry holds; a hello beyond it is refused. `None` for no limit.
    pub max_spots: Option<u64>,
    /// This replica's name and the leader's lease (`cluster.rs`).
    pub cluster: ClusterConfig,
    /// The priority-queue contract: dispatch mode, worker timeout, compatibility.
    pub priority: crate::priority::PriorityConfig,
    /// The directory of this server's data-availability file sink, which `POST /da/post`
    /// writes to (`--da-dir`); `None`: that route answers 503 `DA_DISABLED`.
    pub da_dir: Option<std::path::PathBuf>,
    /// Where the event journal is published (`journal.rs`); `None`: it is kept in the store
    /// only.
    pub journal: Option<crate::journal::JournalConfig>,
}

/// How this replica takes part in electing the one that runs background work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This replica's name in the lease and the member list; unique among the replicas of one
    /// database (two replicas of one name would both lead).
    pub replica_id: String,
    /// How long a lease lasts without renewal: a successor takes over within about this long
    /// after the leader dies or is cut off.
    pub lease_ttl: std::time::Duration,
    /// After this replica becomes leader, how long before the spot reaper may declare a spot
    /// DOWN; `None` for the spot timeout.
    pub takeover_grace: Option<std::time::Duration>,
    /// The address other replicas and operators reach this one at, shown in the member list;
    /// `None` for the main listener's address (with the host's name for a wildcard bind).
    pub advertise_address: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replica_id: crate::cluster::default_replica_id(),
            lease_ttl: drover_core::cluster::DEFAULT_LEASE_TTL,
            takeover_grace: None,
            advertise_address: None,
        }
    }
}

/// How long a connection may take over each part of a request, and how many may be open. The
/// reason for each: a client that opens connections and sends nothing, or sends slowly, must
/// not hold a file descriptor for ever, and health must answer while the cap is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the first byte of a request to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Most connections served at once over every listener, the reserve not counted.
    pub max_connections: usize,
    /// Connections accepted past the cap for `GET /api/v1/health` only.
    pub connection_reserve: usize,
    /// Longest request target (path and query) answered; longer ones get a JSON 414.
    pub max_uri_bytes: usize,
    /// Most bytes of header names and values answered; more gets a JSON 431.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // Well under the usual open-file limit of 1024, which the store, runner logs and
            // the reserve share.
            max_connections: 512,
            connection_reserve: 8,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
        }
    }
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
            public_reads: false,
            require_node_credentials: false,
            default_max_attempts: 3,
            default_task_timeout: Duration::from_secs(5 * 60),
            max_tasks_per_job: drover_core::sweep::DEFAULT_MAX_TASKS_PER_JOB,
            body_limit: 1024 * 1024,
            task_reaper_interval: Duration::from_secs(30),
            task_lease_grace: Duration::from_secs(10),
            spot_reaper_interval: Duration::from_secs(5),
            repair_interval: Duration::from_secs(10),
            spot_timeout: Duration::from_secs(10),
            stats_timeout: None,
            spot_retention: Some(Duration::from_secs(24 * 3600)),
            heartbeat_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            runners: crate::runners::RunnersConfig::default(),
            min_free_disk: DEFAULT_MIN_FREE_DISK,
            http: HttpLimits::default(),
            max_job_bytes: drover_core::sweep::DEFAULT_MAX_JOB_BYTES,
            max_task_payload_bytes: drover_core::sweep::DEFAULT_MAX_TASK_PAYLOAD_BYTES,
            max_label_bytes: drover_core::rules::DEFAULT_MAX_LABEL_BYTES,
            max_spots: Some(drover_core::rules::DEFAULT_MAX_SPOTS),
            cluster: ClusterConfig::default(),
            priority: crate::priority::PriorityConfig::default(),
            da_dir: None,
            journal: None,
        }
    }
}
