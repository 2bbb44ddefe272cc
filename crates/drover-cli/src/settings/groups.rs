//! The settings groups of `drover server` besides the runners: where it listens, where it keeps
//! its state, who may call it, its task rules and intervals, its log format, and its part in a
//! cluster of replicas.
//!
//! Each group is one struct that is at once the flags with their `DROVER_*` variables (clap),
//! the config file's keys (serde, the long option names in kebab case) and the unit of merging
//! (flags over file, field by field). Every field is optional here, so a group says only what
//! its source gave; defaults are applied once, when the groups are resolved. A group never
//! decides whether a value is acceptable (zero intervals, a public bind without keys): the
//! server's configuration check does.

use super::SettingsError;
use super::alias;
use crate::process::LogFormat;
use crate::span::Span;
use clap::Args;
use drover_server::{ListenerConfig, ServerConfig, Surface, TlsFiles};
use merge::Merge;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Listeners")]
pub struct ListenSettings {
    /// Address to listen on [default: 127.0.0.1]. Binding anything but loopback needs both
    /// --agent-key and --api-key, or --allow-unauthenticated.
    #[arg(long, env = "DROVER_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// Port to listen on; 0 picks a free one [default: 8080] [alias: ORHESTRA_PORT].
    #[arg(long, short, env = "DROVER_PORT")]
    pub port: Option<u16>,

    /// Also serve one surface on an address of its own, e.g. runners=127.0.0.1:3001;
    /// repeatable.
    ///
    /// Surfaces: `native` (/api/v1, /internal/v1, /metrics), `runners` (/api/runner/*),
    /// `placement` (/register, /nodes, /placement, /schedule, ...), `registry` (/api/nodes) and
    /// `dashboard` (the web pages, /ui).
    /// Entries with the same address share one listener; the main listener (--bind, --port)
    /// serves every surface. A non-loopback address needs the keys its surfaces check.
    /// `runners=127.0.0.1:3001` is the session-runners contract's own port. In the --config
    /// file: `listen = ["runners=127.0.0.1:3001"]`. [alias: COORDINATOR_HOST and
    /// COORDINATOR_PORT, default 127.0.0.1 and 8080, give `placement=HOST:PORT`]
    #[arg(
        long,
        env = "DROVER_LISTEN",
        value_delimiter = ',',
        value_name = "SURFACE=ADDR:PORT"
    )]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub listen: Vec<Listen>,

    /// Port of the gRPC listener (the node-registry contract's `orchion.v1.Orchestrator`, with
    /// grpc.health.v1 and reflection), on --bind; 0 picks a free one [default: 50051]. The
    /// contract's own `-port`.
    #[arg(long, env = "DROVER_GRPC_PORT", value_name = "PORT")]
    pub grpc_port: Option<u16>,
}

/// One `--listen` entry: a surface and the address it is also served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub surface: Surface,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((surface, addr)) = s.split_once('=') else {
            return Err(format!(
                "{s:?} is not SURFACE=ADDR:PORT, e.g. runners=127.0.0.1:3001"
            ));
        };
        Ok(Listen {
            surface: surface.parse().map_err(|e| format!("{s:?}: {e}"))?,
            addr: addr.trim().parse().map_err(|e| {
                format!("{s:?}: {addr:?} is not an address such as 127.0.0.1:3001 ({e})")
            })?,
        })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl ListenSettings {
    /// `ORHESTRA_PORT` is the main port; `COORDINATOR_HOST` and `COORDINATOR_PORT` (the
    /// placement contract's, default 127.0.0.1 and 8080) add a listener for the placement
    /// surface, unless `--listen` names one already.
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.port, "ORHESTRA_PORT")?;
        let (mut host, mut port): (Option<IpAddr>, Option<u16>) = (None, None);
        alias::fill(&mut host, "COORDINATOR_HOST")?;
        alias::fill(&mut port, "COORDINATOR_PORT")?;
        let named = self.listen.iter().any(|l| l.surface == Surface::Placement);
        if (host.is_some() || port.is_some()) && !named {
            self.listen.push(Listen {
                surface: Surface::Placement,
                addr: SocketAddr::new(
                    host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    port.unwrap_or(8080),
                ),
            });
        }
        Ok(())
    }

    pub fn bind(&self) -> IpAddr {
        self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(8080)
    }

    /// The gRPC listener's address.
    pub fn grpc(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.bind(),
            self.grpc_port.unwrap_or(50051),
        ))
    }

    /// The listeners: the main one (every surface, on --bind and --port) first, then one per
    /// distinct address of `extra` (`--runner-listen`, `--listen`), serving the surfaces named
    /// for it in the order given. An entry on the main listener's address adds nothing: that
    /// listener serves every surface already.
    pub fn listeners(&self, extra: impl IntoIterator<Item = Listen>) -> Vec<ListenerConfig> {
        let main = SocketAddr::new(self.bind(), self.port());
        let mut listeners = vec![ListenerConfig::all(main)];
        for Listen { surface, addr } in extra.into_iter().chain(self.listen.iter().copied()) {
            if addr == main {
                continue;
            }
            match listeners[1..].iter_mut().find(|l| l.addr == addr) {
                Some(l) if l.surfaces.contains(&surface) => {}
                Some(l) => l.surfaces.push(surface),
                None => listeners.push(ListenerConfig {
                    addr,
                    surfaces: vec![surface],
                }),
            }
        }
        listeners
    }
}

/// The listeners' TLS certificate: both files, or neither (plain http).
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "TLS")]
pub struct TlsSettings {
    /// PEM file of the server's certificate (then any intermediates); with --tls-key, every
    /// listener speaks https only.
    #[arg(long, env = "DROVER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The two files, when both are given; one without the other is a usage error.
    pub fn files(&self) -> Result<Option<TlsFiles>, SettingsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(SettingsError::Invalid(
                "--tls-cert needs --tls-key (DROVER_TLS_KEY, tls-key in the config file): give \
                 both files, or neither to serve plain http"
                    .into(),
            )),
            (None, Some(_)) => Err(SettingsError::Invalid(
                "--tls-key needs --tls-cert (DROVER_TLS_CERT, tls-cert in the config file): give \
                 both files, or neither to serve plain http"
                    .into(),
            )),
        }
    }
}

/// Where the server keeps its state.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Store")]
pub struct StoreSettings {
    /// The SQLite database file (or sqlite:// URL), created with its directory if missing; or
    /// a PostgreSQL database, postgres://user:password@host:5432/dbname, which several
    /// replicas may share [default: ./data/drover.db] [alias: ORHESTRA_DB_URL].
    #[arg(long, env = "DROVER_DB", value_name = "PATH|URL")]
    pub db: Option<String>,

    /// PostgreSQL only: connections this replica keeps to the database [default: 16].
    #[arg(long, env = "DROVER_DB_POOL_SIZE", value_name = "N")]
    pub db_pool_size: Option<usize>,

    /// PostgreSQL only: the longest one statement may run before the database cancels it and
    /// the request answers 503 [default: 30s].
    #[arg(long, env = "DROVER_DB_STATEMENT_TIMEOUT", value_name = "DURATION")]
    pub db_statement_timeout: Option<Span>,

    /// PostgreSQL only: how long connecting, or waiting for a free connection, may take before
    /// the request answers 503. A lost database is tried again on every request after that, so
    /// the replica recovers by itself when it returns. A connection whose packets go unanswered
    /// this long (a network partition) is dropped too [default: 5s].
    #[arg(long, env = "DROVER_DB_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub db_connect_timeout: Option<Span>,

    /// Health answers 503 LOW_DISK_SPACE when the file system holding the database has less
    /// free space than this many bytes; 0 turns the check off [default: 67108864, 64 MiB].
    #[arg(long, env = "DROVER_MIN_FREE_DISK", value_name = "BYTES")]
    pub min_free_disk: Option<u64>,

    /// A directory (created if missing) where the placement contract's `POST /da/post` keeps
    /// the blobs posted to it, one fsynced file per height; unset, that route answers 503
    /// DA_DISABLED.
    #[arg(long, env = "DROVER_DA_DIR", value_name = "DIR")]
    pub da_dir: Option<std::path::PathBuf>,
}

impl StoreSettings {
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.db, "ORHESTRA_DB_URL")
    }

    /// The store's URL, as `drover_store` opens it.
    pub fn url(&self) -> String {
        self.db.clone().unwrap_or_else(|| "./data/drover.db".into())
    }

    /// How a PostgreSQL store uses its database; what is unset takes its default.
    pub fn postgres(&self) -> Result<drover_store::PgOptions, SettingsError> {
        let d = drover_store::PgOptions::default();
        let options = drover_store::PgOptions {
            pool_size: self.db_pool_size.unwrap_or(d.pool_size),
            statement_timeout: self
                .db_statement_timeout
                .map_or(d.statement_timeout, |Span(s)| s),
            connect_timeout: self
                .db_connect_timeout
                .map_or(d.connect_timeout, |Span(s)| s),
            ..d
        };
        if options.pool_size == 0 {
            return Err(SettingsError::Invalid(
                "--db-pool-size must be at least 1".into(),
            ));
        }
        for (flag, d) in [
            ("--db-statement-timeout", options.statement_timeout),
            ("--db-connect-timeout", options.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(SettingsError::Invalid(format!(
                    "{flag} must be greater than zero"
                )));
            }
        }
        Ok(options)
    }

    /// The free-space floor of the health check, in bytes.
    pub fn min_free_disk(&self) -> u64 {
        self.min_free_disk
            .unwrap_or(drover_server::config::DEFAULT_MIN_FREE_DISK)
    }
}

/// Who may call the server.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Keys and access")]
pub struct AuthSettings {
    /// Key agents must send on /internal/v1 (X-Orhestra-Key or X-Agent-Key header)
    /// [alias: ORHESTRA_AGENT_KEY].
    #[arg(
        long,
        env = "DROVER_AGENT_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub agent_key: Option<String>,

    /// Key clients must send on /api/v1 (health excepted), /metrics and the runner routes
    /// (Authorization: Bearer KEY); reads too, unless --public-reads.
    #[arg(
        long,
        env = "DROVER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Serve on a non-loopback address without keys. Anyone who can reach the port can then
    /// submit jobs and report results.
    #[arg(long, env = "DROVER_ALLOW_UNAUTHENTICATED")]
    // A switch: on if any source turns it on.
    #[merge(strategy = merge::bool::overwrite_false)]
    pub allow_unauthenticated: bool,

    /// With --api-key, let anyone read (GET /api/v1/*, /metrics) without it; only changes need
    /// the key. Job env values stay hidden from everyone but agents.
    #[arg(long, env = "DROVER_PUBLIC_READS")]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub public_reads: bool,

    /// Require every spot's own secret (X-Spot-Secret, issued by hello) on each heartbeat,
    /// claim and report, also of spots whose clients do not ask for one. drover's agent always
    /// asks; batch-contract clients that never do then cannot report.
    #[arg(long, env = "DROVER_REQUIRE_NODE_CREDENTIALS")]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub require_node_credentials: bool,
}

impl AuthSettings {
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.agent_key, "ORHESTRA_AGENT_KEY")
    }
}

/// The task rules, limits and intervals of the batch API and its reapers.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Tasks, spots and reapers")]
pub struct TaskSettings {
    /// Attempts per task when a job does not say [default: 3] [alias: ORHESTRA_MAX_ATTEMPTS].
    #[arg(long, env = "DROVER_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u32>,

    /// How long a claimed task may run when its job does not say [default: 5m].
    #[arg(long, env = "DROVER_TASK_TIMEOUT", value_name = "DURATION")]
    pub task_timeout: Option<Span>,

    /// Most tasks one job may expand to [default: 1000000].
    #[arg(long, env = "DROVER_MAX_TASKS_PER_JOB", value_name = "N")]
    pub max_tasks_per_job: Option<u64>,

    /// Largest request body accepted, in bytes [default: 1048576].
    #[arg(long, env = "DROVER_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,

    /// How often stuck tasks are looked for [default: 30s].
    #[arg(long, env = "DROVER_TASK_REAPER_INTERVAL", value_name = "DURATION")]
    pub task_reaper_interval: Option<Span>,

    /// How often silent spots are looked for [default: 5s].
    #[arg(long, env = "DROVER_SPOT_REAPER_INTERVAL", value_name = "DURATION")]
    pub spot_reaper_interval: Option<Span>,

    /// How often under-replicated objects of the placement surface are given replacement
    /// copies [default: 10s].
    #[arg(long, env = "DROVER_REPAIR_INTERVAL", value_name = "DURATION")]
    pub repair_interval: Option<Span>,

    /// How long past its timeout a running task is left to its agent before the task reaper
    /// takes it back [default: 10s].
    #[arg(long, env = "DROVER_TASK_LEASE_GRACE", value_name = "DURATION")]
    pub task_lease_grace: Option<Span>,

    /// A spot without a heartbeat for this long is marked DOWN and its tasks go back to the
    /// queue [default: 10s].
    #[arg(long, env = "DROVER_SPOT_TIMEOUT", value_name = "DURATION")]
    pub spot_timeout: Option<Span>,

    /// A DOWN spot silent for this long is removed from the spot list; 0 keeps spots forever
    /// [default: 24h].
    #[arg(long, env = "DROVER_SPOT_RETENTION", value_name = "DURATION")]
    pub spot_retention: Option<Span>,

    /// A node of the placement surface (`POST /register`) without a stats report for this
    /// long is marked DOWN; 0 never does, as the placement contract's own server [default: 0].
    #[arg(long, env = "DROVER_STATS_TIMEOUT", value_name = "DURATION")]
    pub stats_timeout: Option<Span>,

    /// Heartbeat period suggested to agents [default: 2s].
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub heartbeat_interval: Option<Span>,

    /// How long shutdown waits for in-flight requests [default: 30s].
    #[arg(long, env = "DROVER_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<Span>,
}

impl TaskSettings {
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.max_attempts, "ORHESTRA_MAX_ATTEMPTS")
    }

    /// The server's configuration from these settings and the keys; what is unset takes the
    /// contract's default. The runner part is left at its default for the runner group to set.
    pub fn server_config(&self, auth: &AuthSettings) -> ServerConfig {
        let d = ServerConfig::default();
        let or = |span: Option<Span>, default: Duration| span.map_or(default, |Span(s)| s);
        // An empty key (`DROVER_API_KEY=`) means no key, as an unset one does.
        let key = |k: &Option<String>| k.clone().filter(|k| !k.is_empty());
        ServerConfig {
            agent_key: key(&auth.agent_key),
            api_key: key(&auth.api_key),
            public_reads: auth.public_reads,
            require_node_credentials: auth.require_node_credentials,
            default_max_attempts: self.max_attempts.unwrap_or(d.default_max_attempts),
            default_task_timeout: or(self.task_timeout, d.default_task_timeout),
            max_tasks_per_job: self.max_tasks_per_job.unwrap_or(d.max_tasks_per_job),
            body_limit: self.body_limit.unwrap_or(d.body_limit),
            task_reaper_interval: or(self.task_reaper_interval, d.task_reaper_interval),
            spot_reaper_interval: or(self.spot_reaper_interval, d.spot_reaper_interval),
            repair_interval: or(self.repair_interval, d.repair_interval),
            task_lease_grace: or(self.task_lease_grace, d.task_lease_grace),
            spot_timeout: or(self.spot_timeout, d.spot_timeout),
            stats_timeout: match self.stats_timeout {
                Some(Span(s)) if s.is_zero() => None,
                Some(Span(s)) => Some(s),
                None => d.stats_timeout,
            },
            spot_retention: match self.spot_retention {
                Some(Span(s)) if s.is_zero() => None,
                Some(Span(s)) => Some(s),
                None => d.spot_retention,
            },
            heartbeat_interval: or(self.heartbeat_interval, d.heartbeat_interval),
            shutdown_grace: or(self.shutdown_grace, d.shutdown_grace),
            // Set by their own groups.
            runners: d.runners,
            min_free_disk: d.min_free_disk,
            ..ServerConfig::default()
        }
    }
}

/// How this server takes part among replicas that share one database: its name, and the lease
/// that elects the one replica running the background work (reapers, runner clean-up).
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Replicas")]
pub struct ClusterSettings {
    /// This replica's name in the leader's lease and in `drover cluster`; each replica of one
    /// database needs its own (two of one name would both lead) [default: the host's name,
    /// the process id and a random part, new at every start].
    #[arg(long, env = "DROVER_REPLICA_ID", value_name = "NAME")]
    pub replica_id: Option<String>,

    /// How long the leader's lease lasts without renewal. The leader renews it every third of
    /// this and stops its background work a fifth of it before the lease runs out when it
    /// cannot; another replica takes over within about this long after the leader dies or is
    /// cut off from the database. Between 1s and 1h [default: 10s].
    #[arg(long, env = "DROVER_LEASE_TTL", value_name = "DURATION")]
    pub lease_ttl: Option<Span>,

    /// After this replica becomes leader, how long the spot reaper waits before it declares
    /// any spot DOWN: spots' heartbeats may have gone to a replica that died with the old
    /// leader [default: --spot-timeout].
    #[arg(long, env = "DROVER_TAKEOVER_GRACE", value_name = "DURATION")]
    pub takeover_grace: Option<Span>,

    /// The address other replicas and operators reach this one at, shown in `drover cluster`
    /// [default: the main listener's address, with the host's name for a 0.0.0.0 bind].
    #[arg(long, env = "DROVER_ADVERTISE_ADDRESS", value_name = "HOST:PORT")]
    pub advertise_address: Option<String>,
}

impl ClusterSettings {
    /// The cluster part of the server's configuration; what is unset takes its default.
    pub fn config(&self) -> drover_server::ClusterConfig {
        let d = drover_server::ClusterConfig::default();
        drover_server::ClusterConfig {
            replica_id: self.replica_id.clone().unwrap_or(d.replica_id),
            lease_ttl: self.lease_ttl.map_or(d.lease_ttl, |Span(s)| s),
            takeover_grace: self.takeover_grace.map(|Span(s)| s).or(d.takeover_grace),
            advertise_address: self.advertise_address.clone().or(d.advertise_address),
        }
    }
}

/// How the server logs.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Logging")]
pub struct LogSettings {
    /// Log format: text or json [default: text]. The level comes from RUST_LOG (default info).
    #[arg(long, env = "DROVER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl LogSettings {
    pub fn format(&self) -> LogFormat {
        self.log_format.unwrap_or(LogFormat::Text)
    }
}

/// Limits on connections, requests and what one client may store: the server's defence
/// against slow, idle or oversize clients. Every default keeps the contracts' clients working.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Limits")]
pub struct LimitSettings {
    /// How long a client may take to send a request's headers, from their first byte
    /// [default: 10s].
    #[arg(long, env = "DROVER_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<Span>,

    /// How long a client may take to send a request's body [default: 30s].
    #[arg(long, env = "DROVER_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<Span>,

    /// How long a connection may wait for its next request before it is closed [default: 60s].
    #[arg(long, env = "DROVER_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<Span>,

    /// Most connections open at once over every listener; keep it under the open-file limit
    /// [default: 512].
    #[arg(long, env = "DROVER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections accepted past --max-connections that answer GET /api/v1/health only
    /// [default: 8].
    #[arg(long, env = "DROVER_CONNECTION_RESERVE", value_name = "N")]
    pub connection_reserve: Option<usize>,

    /// Longest request target (path and query) answered, in bytes [default: 8192].
    #[arg(long, env = "DROVER_MAX_URI_BYTES", value_name = "BYTES")]
    pub max_uri_bytes: Option<usize>,

    /// Most bytes of request header names and values [default: 32768].
    #[arg(long, env = "DROVER_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,

    /// Most bytes one job's task payloads may add up to [default: 268435456].
    #[arg(long, env = "DROVER_MAX_JOB_BYTES", value_name = "BYTES")]
    pub max_job_bytes: Option<u64>,

    /// Most bytes of one task's payload [default: 65536].
    #[arg(long, env = "DROVER_MAX_TASK_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_task_payload_bytes: Option<u64>,

    /// Most bytes of a spot's labels, as JSON [default: 65536].
    #[arg(long, env = "DROVER_MAX_LABEL_BYTES", value_name = "BYTES")]
    pub max_label_bytes: Option<u64>,

    /// Most spots the registry holds; a hello past it is refused; 0 for no limit
    /// [default: 10000].
    #[arg(long, env = "DROVER_MAX_SPOTS", value_name = "N")]
    pub max_spots: Option<u64>,
}

impl LimitSettings {
    /// `config` with these limits set; what is unset keeps its default.
    pub fn apply(&self, config: ServerConfig) -> ServerConfig {
        let d = ServerConfig::default();
        let or = |span: Option<Span>, default: Duration| span.map_or(default, |Span(s)| s);
        let http = drover_server::HttpLimits {
            header_timeout: or(self.header_timeout, d.http.header_timeout),
            body_timeout: or(self.body_timeout, d.http.body_timeout),
            idle_timeout: or(self.idle_timeout, d.http.idle_timeout),
            max_connections: self.max_connections.unwrap_or(d.http.max_connections),
            connection_reserve: self.connection_reserve.unwrap_or(d.http.connection_reserve),
            max_uri_bytes: self.max_uri_bytes.unwrap_or(d.http.max_uri_bytes),
            max_header_bytes: self.max_header_bytes.unwrap_or(d.http.max_header_bytes),
        };
        ServerConfig {
            http,
            max_job_bytes: self.max_job_bytes.unwrap_or(d.max_job_bytes),
            max_task_payload_bytes: self
                .max_task_payload_bytes
                .unwrap_or(d.max_task_payload_bytes),
            max_label_bytes: self.max_label_bytes.unwrap_or(d.max_label_bytes),
            max_spots: match self.max_spots {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.max_spots,
            },
            ..config
        }
    }
}

/// How jobs of the priority-queue contract reach its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchMode {
    /// Workers pull from the store by priority (drover agents); no broker.
    Native,
    /// Each job is published to its class's RabbitMQ queue (`--amqp-url`), which the
    /// contract's own workers consume.
    Rabbitmq,
}

/// The priority-queue contract (`/api/jobs/*`, its workers' heartbeats and RabbitMQ queues).
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
#[command(next_help_heading = "Priority router")]
pub struct PrioritySettings {
    /// How jobs of the priority-queue contract (`/api/jobs/register`) reach workers: native
    /// (workers pull from drover by priority) or rabbitmq (published to job.high, job.medium,
    /// job.low through a transactional outbox with publisher confirms) [default: native].
    #[arg(long, env = "DROVER_DISPATCH", value_name = "MODE")]
    pub dispatch: Option<DispatchMode>,

    /// The RabbitMQ broker of --dispatch rabbitmq, e.g. amqp://user:password@host:5672/%2f
    /// [alias: RABBITMQ_URL].
    #[arg(long, env = "DROVER_AMQP_URL", value_name = "URL")]
    pub amqp_url: Option<String>,

    /// How long a worker of the priority-queue contract (`/api/workers/heartbeat`) may stay
    /// silent before it is DOWN and its running jobs are requeued (those workers heartbeat
    /// every 10 s); never shorter than --spot-timeout [default: 30s].
    #[arg(long, env = "DROVER_WORKER_TIMEOUT", value_name = "DURATION")]
    pub worker_timeout: Option<Span>,

    /// Answer a priority-queue status update for an unknown job with 200
    /// `{"status":"updated"}`, as that contract's original server does, instead of 404
    /// `job_not_found`.
    #[arg(long, env = "DROVER_LENIENT_UNKNOWN_JOBS")]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub lenient_unknown_jobs: bool,

    /// Priority aging for the priority-queue contract, so that a stream of high jobs cannot
    /// starve the others: a job waiting this long is served as at least medium, twice as long
    /// as high (in rabbitmq mode it is published again to its new queue). Off by default, as
    /// in that contract.
    #[arg(long, env = "DROVER_PRIORITY_AGING", value_name = "DURATION")]
    pub priority_aging: Option<Span>,
}

impl PrioritySettings {
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.amqp_url, "RABBITMQ_URL")
    }

    /// The contract's configuration; rabbitmq without a broker URL is refused.
    pub fn config(&self) -> Result<drover_server::priority::PriorityConfig, SettingsError> {
        use drover_server::priority::{Dispatch, PriorityConfig};
        let d = PriorityConfig::default();
        let dispatch = match (
            self.dispatch.unwrap_or(DispatchMode::Native),
            &self.amqp_url,
        ) {
            (DispatchMode::Native, _) => Dispatch::Native,
            (DispatchMode::Rabbitmq, Some(url)) if !url.trim().is_empty() => {
                Dispatch::Rabbitmq { url: url.clone() }
            }
            (DispatchMode::Rabbitmq, _) => {
                return Err(SettingsError::Invalid(
                    "--dispatch rabbitmq needs the broker's address: set --amqp-url (or \
                     DROVER_AMQP_URL), e.g. amqp://guest:guest@127.0.0.1:5672/%2f"
                        .into(),
                ));
            }
        };
        Ok(PriorityConfig {
            dispatch,
            lenient_unknown_jobs: self.lenient_unknown_jobs,
            worker_timeout: self.worker_timeout.map_or(d.worker_timeout, |Span(s)| s),
            aging: self.priority_aging.map(|Span(s)| s),
        })
    }
}
