//! `drover server`: configuration from flags, environment and file, then `drover_server::serve`.
//!
//! Precedence: a flag, then its `DROVER_*` variable, then the batch contract's `ORHESTRA_*` alias
//! where one exists, then the TOML file (`--config`), then the default.

use anyhow::{Context, bail};
use clap::Args;
use drover_server::{Application, ServerConfig};
use serde::Deserialize;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A duration given as `30s`, `5m`, `250ms`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Duration::try_from_secs_f64(secs)
                .map(Span)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|e| format!("{s:?} is not a duration such as 30s, 5m or 250ms: {e}"))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::try_from_secs_f64(s)
                .map(Span)
                .map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The options of `drover server`; the command's help text is on `Command::Server`.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// TOML file with settings; flags and environment variables override it.
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1]. Binding anything but loopback needs both
    /// --agent-key and --api-key, or --allow-unauthenticated.
    #[arg(long, env = "DROVER_BIND", value_name = "IP")]
    bind: Option<IpAddr>,

    /// Port to listen on; 0 picks a free one [default: 8080] [alias: ORHESTRA_PORT].
    #[arg(long, short, env = "DROVER_PORT")]
    port: Option<u16>,

    /// The SQLite database file (or sqlite:// URL); created with its directory if missing
    /// [default: ./data/drover.db] [alias: ORHESTRA_DB_URL].
    #[arg(long, env = "DROVER_DB", value_name = "PATH")]
    db: Option<String>,

    /// Key agents must send on /internal/v1 (X-Orhestra-Key or X-Agent-Key header)
    /// [alias: ORHESTRA_AGENT_KEY].
    #[arg(
        long,
        env = "DROVER_AGENT_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    agent_key: Option<String>,

    /// Key clients must send on changing /api/v1 calls (Authorization: Bearer KEY).
    #[arg(
        long,
        env = "DROVER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,

    /// Serve on a non-loopback address without keys. Anyone who can reach the port can then
    /// submit jobs and report results.
    #[arg(long, env = "DROVER_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,

    /// Attempts per task when a job does not say [default: 3] [alias: ORHESTRA_MAX_ATTEMPTS].
    #[arg(long, env = "DROVER_MAX_ATTEMPTS", value_name = "N")]
    max_attempts: Option<u32>,

    /// How long a claimed task may run when its job does not say [default: 5m].
    #[arg(long, env = "DROVER_TASK_TIMEOUT", value_name = "DURATION")]
    task_timeout: Option<Span>,

    /// Most tasks one job may expand to [default: 1000000].
    #[arg(long, env = "DROVER_MAX_TASKS_PER_JOB", value_name = "N")]
    max_tasks_per_job: Option<u64>,

    /// Largest request body accepted, in bytes [default: 1048576].
    #[arg(long, env = "DROVER_BODY_LIMIT", value_name = "BYTES")]
    body_limit: Option<usize>,

    /// How often stuck tasks are looked for [default: 30s].
    #[arg(long, env = "DROVER_TASK_REAPER_INTERVAL", value_name = "DURATION")]
    task_reaper_interval: Option<Span>,

    /// How often silent spots are looked for [default: 5s].
    #[arg(long, env = "DROVER_SPOT_REAPER_INTERVAL", value_name = "DURATION")]
    spot_reaper_interval: Option<Span>,

    /// How long past its timeout a running task is left to its agent before the task reaper
    /// takes it back [default: 10s].
    #[arg(long, env = "DROVER_TASK_LEASE_GRACE", value_name = "DURATION")]
    task_lease_grace: Option<Span>,

    /// A spot without a heartbeat for this long is marked DOWN and its tasks go back to the
    /// queue [default: 10s].
    #[arg(long, env = "DROVER_SPOT_TIMEOUT", value_name = "DURATION")]
    spot_timeout: Option<Span>,

    /// A DOWN spot silent for this long is removed from the spot list; 0 keeps spots forever
    /// [default: 24h].
    #[arg(long, env = "DROVER_SPOT_RETENTION", value_name = "DURATION")]
    spot_retention: Option<Span>,

    /// Heartbeat period suggested to agents [default: 2s].
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    heartbeat_interval: Option<Span>,

    /// How long shutdown waits for in-flight requests [default: 30s].
    #[arg(long, env = "DROVER_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: Option<Span>,

    /// Log format: text or json [default: text]. The level comes from RUST_LOG (default info).
    #[arg(long, env = "DROVER_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    #[command(flatten)]
    runners: crate::runner_args::RunnerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The TOML file: the same settings, by long option name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    bind: Option<IpAddr>,
    port: Option<u16>,
    db: Option<String>,
    agent_key: Option<String>,
    api_key: Option<String>,
    allow_unauthenticated: Option<bool>,
    max_attempts: Option<u32>,
    task_timeout: Option<Span>,
    max_tasks_per_job: Option<u64>,
    body_limit: Option<usize>,
    task_reaper_interval: Option<Span>,
    spot_reaper_interval: Option<Span>,
    task_lease_grace: Option<Span>,
    spot_timeout: Option<Span>,
    spot_retention: Option<Span>,
    heartbeat_interval: Option<Span>,
    shutdown_grace: Option<Span>,
    log_format: Option<LogFormat>,
    /// Session runner settings, by the same long option names.
    #[serde(default)]
    runners: crate::runner_args::RunnerArgs,
}

/// Settings after merging every source.
#[derive(Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    pub allow_unauthenticated: bool,
    pub log_format: LogFormat,
    pub server: ServerConfig,
    /// The runner driver, if runners are enabled.
    pub runner_driver: Option<drover_server::DriverConfig>,
    /// An extra listener for the runner routes.
    pub runner_listen: Option<SocketAddr>,
}

/// Reads an `ORHESTRA_*` alias.
fn alias<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        _ => Ok(None),
    }
}

/// Turns a database setting into a SQLite file path (the store's own reading of its URL).
fn db_path(db: &str) -> anyhow::Result<PathBuf> {
    Ok(drover_store::sqlite_path(db)?)
}

impl ServerArgs {
    pub fn settings(self) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let defaults = ServerConfig::default();
        let span = |flag: Option<Span>, file: Option<Span>, default: Duration| {
            flag.or(file).map(|s| s.0).unwrap_or(default)
        };

        let bind = self
            .bind
            .or(file.bind)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = match self.port {
            Some(p) => p,
            None => alias("ORHESTRA_PORT")?.or(file.port).unwrap_or(8080),
        };
        let db = match self.db {
            Some(d) => d,
            None => alias::<String>("ORHESTRA_DB_URL")?
                .or(file.db)
                .unwrap_or_else(|| "./data/drover.db".into()),
        };
        let agent_key = match self.agent_key {
            Some(k) => Some(k),
            None => alias("ORHESTRA_AGENT_KEY")?.or(file.agent_key),
        }
        .filter(|k: &String| !k.is_empty());
        let api_key = self.api_key.or(file.api_key).filter(|k| !k.is_empty());
        let max_attempts = match self.max_attempts {
            Some(n) => n,
            None => alias("ORHESTRA_MAX_ATTEMPTS")?
                .or(file.max_attempts)
                .unwrap_or(defaults.default_max_attempts),
        };
        if max_attempts == 0 {
            bail!("max attempts must be at least 1");
        }
        let server = ServerConfig {
            agent_key,
            api_key,
            default_max_attempts: max_attempts,
            default_task_timeout: span(
                self.task_timeout,
                file.task_timeout,
                defaults.default_task_timeout,
            ),
            max_tasks_per_job: self
                .max_tasks_per_job
                .or(file.max_tasks_per_job)
                .unwrap_or(defaults.max_tasks_per_job),
            body_limit: self
                .body_limit
                .or(file.body_limit)
                .unwrap_or(defaults.body_limit),
            task_reaper_interval: span(
                self.task_reaper_interval,
                file.task_reaper_interval,
                defaults.task_reaper_interval,
            ),
            spot_reaper_interval: span(
                self.spot_reaper_interval,
                file.spot_reaper_interval,
                defaults.spot_reaper_interval,
            ),
            task_lease_grace: span(
                self.task_lease_grace,
                file.task_lease_grace,
                defaults.task_lease_grace,
            ),
            spot_timeout: span(self.spot_timeout, file.spot_timeout, defaults.spot_timeout),
            spot_retention: match self.spot_retention.or(file.spot_retention) {
                Some(Span(d)) if d.is_zero() => None,
                Some(Span(d)) => Some(d),
                None => defaults.spot_retention,
            },
            heartbeat_interval: span(
                self.heartbeat_interval,
                file.heartbeat_interval,
                defaults.heartbeat_interval,
            ),
            shutdown_grace: span(
                self.shutdown_grace,
                file.shutdown_grace,
                defaults.shutdown_grace,
            ),
            runners: defaults.runners.clone(),
        };
        let runners = self.runners.or_file(file.runners).build()?;
        let (runner_driver, runner_listen) = (runners.driver, runners.listen);
        let server = ServerConfig {
            runners: runners.config,
            ..server
        };
        for (name, d) in [
            ("task reaper interval", server.task_reaper_interval),
            ("spot reaper interval", server.spot_reaper_interval),
            ("spot timeout", server.spot_timeout),
            ("task timeout", server.default_task_timeout),
        ] {
            if d.is_zero() {
                bail!("the {name} must be greater than zero");
            }
        }
        let max_timeout = Duration::from_secs(drover_server::translate::MAX_TASK_TIMEOUT_SECS);
        if server.default_task_timeout > max_timeout {
            bail!("the task timeout must be at most one year");
        }
        let allow_unauthenticated =
            self.allow_unauthenticated || file.allow_unauthenticated.unwrap_or(false);
        if !bind.is_loopback()
            && (server.agent_key.is_none() || server.api_key.is_none())
            && !allow_unauthenticated
        {
            bail!(
                "refusing to listen on {bind} without keys: anyone who can reach it could submit \
                 jobs and report results. Set both --agent-key and --api-key (or DROVER_AGENT_KEY \
                 and DROVER_API_KEY), bind 127.0.0.1, or pass --allow-unauthenticated"
            );
        }
        if let Some(listen) = runner_listen
            && !listen.ip().is_loopback()
            && server.api_key.is_none()
            && !allow_unauthenticated
        {
            bail!(
                "refusing to serve runners on {listen} without --api-key: anyone who can reach it                  could start containers. Set --api-key, listen on 127.0.0.1, or pass                  --allow-unauthenticated"
            );
        }
        Ok(Settings {
            addr: SocketAddr::new(bind, port),
            db_path: db_path(&db)?,
            allow_unauthenticated,
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            server,
            runner_driver,
            runner_listen,
        })
    }
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The two-stage stop of every long-running command: cancels `stop` on the first SIGTERM or
/// Ctrl-C (then logs `on_first`), and returns on the second, once `on_second` is printed; the
/// caller then stops without waiting.
pub(crate) async fn until_second_signal(
    stop: CancellationToken,
    on_first: Option<&str>,
    on_second: &str,
) {
    wait_for_signal().await;
    // Act first, log second: a failing log write must not keep the process up.
    stop.cancel();
    if let Some(message) = on_first {
        tracing::info!("{message}");
    }
    wait_for_signal().await;
    let _ = writeln!(std::io::stderr(), "{on_second}");
}

/// Cancels `token` on the first SIGTERM or Ctrl-C; a second one exits at once.
fn watch_signals(token: CancellationToken) {
    tokio::spawn(async move {
        until_second_signal(
            token,
            Some("shutting down: no new requests; finishing those in flight (signal again to exit now)"),
            "second signal: exiting without waiting",
        )
        .await;
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    init_logging(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut listeners = vec![drover_server::ListenerConfig::all(settings.addr)];
        if let Some(addr) = settings.runner_listen {
            listeners.push(drover_server::ListenerConfig {
                addr,
                surfaces: vec![drover_server::Surface::Runners],
            });
        }
        let config = drover_server::AppConfig {
            store_url: settings.db_path.display().to_string(),
            listeners,
            server: settings.server,
            runner_driver: settings.runner_driver,
            allow_unauthenticated: settings.allow_unauthenticated,
        };
        if let Some(driver) = &config.runner_driver {
            let runners = &config.server.runners;
            tracing::info!(
                "session runners on the {} driver ({} at most, inactivity timeout {}s{})",
                match driver {
                    drover_server::DriverConfig::Docker(_) => "docker",
                    drover_server::DriverConfig::Process(_) => "process",
                },
                runners
                    .max_runners
                    .map_or("no limit".to_string(), |n| n.to_string()),
                runners.inactivity_timeout.as_secs(),
                if runners.reuse { ", reuse mode" } else { "" }
            );
        }
        let (agent_key, api_key) = (
            config.server.agent_key.is_some(),
            config.server.api_key.is_some(),
        );
        let app = Application::build(config).await?;
        let on = |b: bool| if b { "required" } else { "off" };
        for (i, (addr, surfaces)) in app.local_addrs().into_iter().enumerate() {
            if i == 0 {
                if settings.allow_unauthenticated && !addr.ip().is_loopback() {
                    tracing::warn!(
                        "serving on {addr} without authentication (--allow-unauthenticated)"
                    );
                }
                tracing::info!(
                    "drover listening on http://{addr} (store: {}, agent key: {}, API key: {})",
                    settings.db_path.display(),
                    on(agent_key),
                    on(api_key),
                );
            } else {
                let names: Vec<&str> = surfaces.iter().map(|s| s.name()).collect();
                tracing::info!("{} routes also on http://{addr}", names.join(", "));
            }
        }
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone());
        app.run_until(shutdown).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!("30s".parse::<Span>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Span>().unwrap().0, Duration::from_secs(300));
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1.5".parse::<Span>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("soon".parse::<Span>().is_err());
    }

    #[test]
    fn database_settings() {
        assert_eq!(db_path("sqlite://x/y.db").unwrap(), PathBuf::from("x/y.db"));
        assert_eq!(db_path("./d.db").unwrap(), PathBuf::from("./d.db"));
        assert!(
            db_path("jdbc:h2:file:./data/orhestra")
                .unwrap_err()
                .to_string()
                .contains("JDBC")
        );
    }

    #[test]
    fn a_public_bind_needs_both_keys() {
        let args = |agent: Option<&str>, api: Option<&str>, allow: bool| ServerArgs {
            bind: Some("0.0.0.0".parse().unwrap()),
            agent_key: agent.map(String::from),
            api_key: api.map(String::from),
            allow_unauthenticated: allow,
            port: Some(1),
            db: Some("x.db".into()),
            max_attempts: Some(3),
            ..Default::default()
        };
        assert!(args(None, None, false).settings().is_err());
        assert!(args(Some("a"), None, false).settings().is_err());
        assert!(args(Some("a"), Some("b"), false).settings().is_ok());
        assert!(args(None, None, true).settings().is_ok());
    }

    #[test]
    fn the_file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "port = 9123\nspot-timeout = \"3s\"\ntask-reaper-interval = 2\n",
        )
        .unwrap();
        let s = ServerArgs {
            config: Some(path.clone()),
            port: Some(7000),
            db: Some("x.db".into()),
            max_attempts: Some(3),
            ..Default::default()
        }
        .settings()
        .unwrap();
        assert_eq!(s.addr.port(), 7000);
        assert_eq!(s.server.spot_timeout, Duration::from_secs(3));
        assert_eq!(s.server.task_reaper_interval, Duration::from_secs(2));

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = ServerArgs {
            config: Some(path),
            ..Default::default()
        }
        .settings()
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `prot`"),
            "{err:#}"
        );
    }
}
