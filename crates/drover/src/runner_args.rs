//! The session-runner options of `drover server`: flags, `DROVER_*` variables and the
//! session-runners contract's own variable names (`REUSE_RUNNER_MODE`, `RUNNERS_HOST`,
//! `INACTIVITY_TIMEOUT_SECONDS`, ...) as aliases, into a `RunnersConfig` and a driver.

use crate::server_cmd::Span;
use anyhow::{Context, bail};
use clap::Args;
use drover_runners::docker::{DockerConfig, Hardening};
use drover_runners::process::ProcessConfig;
use drover_server::DriverConfig;
use drover_server::runners::RunnersConfig;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// No runners: the runner endpoints answer 503.
    None,
    /// A container per session, through the local Docker Engine.
    Docker,
    /// A local child process per session (no isolation beyond a process).
    Process,
}

/// Also the `[runners]` table of the `--config` file, with the same names as keys
/// (`runner-driver = "docker"`, `max-runners = 10`); flags and variables win over it.
#[derive(Debug, Args, Default, serde::Deserialize)]
#[command(next_help_heading = "Session runners")]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RunnerArgs {
    /// How runners are started: none, docker or process [default: none].
    #[arg(long, env = "DROVER_RUNNER_DRIVER", value_name = "DRIVER")]
    runner_driver: Option<DriverKind>,

    /// Image of runner containers; it must exist on the engine (nothing is pulled)
    /// [default: runner-image] [alias: DOCKER_IMAGE_NAME].
    #[arg(long, env = "DROVER_RUNNER_IMAGE", value_name = "IMAGE")]
    runner_image: Option<String>,

    /// Port the runner listens on inside its container [default: 3000].
    #[arg(long, env = "DROVER_RUNNER_PORT", value_name = "PORT")]
    runner_port: Option<u16>,

    /// Host address runner ports are published on [default: 127.0.0.1].
    #[arg(long, env = "DROVER_RUNNER_PUBLISH_IP", value_name = "IP")]
    runner_publish_ip: Option<IpAddr>,

    /// Host name clients are told to reach runners at [default: localhost] [alias: RUNNERS_HOST].
    #[arg(long, env = "DROVER_RUNNERS_HOST", value_name = "HOST")]
    runners_host: Option<String>,

    /// Every session shares one runner [alias: REUSE_RUNNER_MODE=true].
    #[arg(long, env = "DROVER_RUNNER_REUSE")]
    runner_reuse: bool,

    /// A runner without a heartbeat for this long is removed [default: 60s]
    /// [alias: INACTIVITY_TIMEOUT_SECONDS].
    #[arg(
        long,
        env = "DROVER_RUNNER_INACTIVITY_TIMEOUT",
        value_name = "DURATION"
    )]
    runner_inactivity_timeout: Option<Span>,

    /// How often inactive runners are looked for [default: 30s] [alias: CLEANUP_INTERVAL_SECONDS].
    #[arg(long, env = "DROVER_RUNNER_CLEANUP_INTERVAL", value_name = "DURATION")]
    runner_cleanup_interval: Option<Span>,

    /// Most runners at once; a provision beyond answers 429; 0 for no limit [default: 50]
    /// [alias: MAX_CONCURRENT_RUNNERS].
    #[arg(long, env = "DROVER_MAX_RUNNERS", value_name = "N")]
    max_runners: Option<u64>,

    /// Label that carries the session id on runner containers
    /// [default: taylored-runner-session-id].
    #[arg(long, env = "DROVER_RUNNER_SESSION_LABEL", value_name = "KEY")]
    runner_session_label: Option<String>,

    /// Memory limit of a runner container (swap limited to the same), e.g. 512m, 1g; 0 for none
    /// [default: 512m].
    #[arg(long, env = "DROVER_RUNNER_MEMORY", value_name = "SIZE")]
    runner_memory: Option<String>,

    /// CPU limit of a runner container, in CPUs; 0 for none [default: 1].
    #[arg(long, env = "DROVER_RUNNER_CPUS", value_name = "CPUS")]
    runner_cpus: Option<f64>,

    /// Most processes in a runner container; 0 for no limit [default: 256].
    #[arg(long, env = "DROVER_RUNNER_PIDS_LIMIT", value_name = "N")]
    runner_pids_limit: Option<i64>,

    /// Give runner containers a writable root file system (for images that need one).
    #[arg(long, env = "DROVER_RUNNER_WRITABLE_ROOT")]
    runner_writable_root: bool,

    /// Keep the image's default capabilities instead of dropping them all.
    #[arg(long, env = "DROVER_RUNNER_KEEP_CAPABILITIES")]
    runner_keep_capabilities: bool,

    /// Let runner processes gain privileges (setuid); off by default (no-new-privileges).
    #[arg(long, env = "DROVER_RUNNER_ALLOW_NEW_PRIVILEGES")]
    runner_allow_new_privileges: bool,

    /// The Docker Engine's unix socket [default: DOCKER_HOST, else /var/run/docker.sock].
    #[arg(long, env = "DROVER_DOCKER_SOCKET", value_name = "PATH")]
    docker_socket: Option<PathBuf>,

    /// Bound on every Docker call; an engine that does not answer in time gives 503
    /// [default: 30s].
    #[arg(long, env = "DROVER_DOCKER_TIMEOUT", value_name = "DURATION")]
    docker_timeout: Option<Span>,

    /// Command of the process driver, split like a shell would (no shell runs it). It gets
    /// its listening socket as fd 3 (LISTEN_FDS=1) and its port in PORT.
    #[arg(long, env = "DROVER_RUNNER_COMMAND", value_name = "COMMAND")]
    runner_command: Option<String>,

    /// Where the process driver writes each runner's output (`<session>.log`); discarded when
    /// not set.
    #[arg(long, env = "DROVER_RUNNER_LOG_DIR", value_name = "DIR")]
    runner_log_dir: Option<PathBuf>,

    /// Also serve the /api/runner/* routes (only those) on this address, e.g. 127.0.0.1:3001,
    /// the contract's own port.
    #[arg(long, env = "DROVER_RUNNER_LISTEN", value_name = "ADDR:PORT")]
    runner_listen: Option<std::net::SocketAddr>,

    /// `production` hides error details in runner 500 answers [alias: NODE_ENV].
    #[arg(long, env = "DROVER_RUNNER_ENVIRONMENT", value_name = "NAME")]
    runner_environment: Option<String>,
}

/// A contract variable, if set and not empty.
fn contract_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `512m`, `1g`, `1048576`: bytes, with binary k/m/g suffixes; `0` means no limit.
fn parse_size(text: &str) -> anyhow::Result<Option<i64>> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1024i64),
        Some('m') => (&t[..t.len() - 1], 1024 * 1024),
        Some('g') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let n: i64 = digits
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a size such as 512m or 1g"))?;
    let bytes = n
        .checked_mul(unit)
        .with_context(|| format!("{text:?} is too large"))?;
    Ok((bytes > 0).then_some(bytes))
}

/// The runner settings after merging every source.
#[derive(Debug)]
pub struct RunnerSettings {
    pub config: RunnersConfig,
    pub driver: Option<DriverConfig>,
    /// An extra listener for the runner routes.
    pub listen: Option<std::net::SocketAddr>,
}

impl RunnerArgs {
    /// These settings, with what they leave unset taken from `file`.
    pub fn or_file(self, file: RunnerArgs) -> RunnerArgs {
        RunnerArgs {
            runner_driver: self.runner_driver.or(file.runner_driver),
            runner_image: self.runner_image.or(file.runner_image),
            runner_port: self.runner_port.or(file.runner_port),
            runner_publish_ip: self.runner_publish_ip.or(file.runner_publish_ip),
            runners_host: self.runners_host.or(file.runners_host),
            runner_reuse: self.runner_reuse || file.runner_reuse,
            runner_inactivity_timeout: self
                .runner_inactivity_timeout
                .or(file.runner_inactivity_timeout),
            runner_cleanup_interval: self
                .runner_cleanup_interval
                .or(file.runner_cleanup_interval),
            max_runners: self.max_runners.or(file.max_runners),
            runner_session_label: self.runner_session_label.or(file.runner_session_label),
            runner_memory: self.runner_memory.or(file.runner_memory),
            runner_cpus: self.runner_cpus.or(file.runner_cpus),
            runner_pids_limit: self.runner_pids_limit.or(file.runner_pids_limit),
            runner_writable_root: self.runner_writable_root || file.runner_writable_root,
            runner_keep_capabilities: self.runner_keep_capabilities
                || file.runner_keep_capabilities,
            runner_allow_new_privileges: self.runner_allow_new_privileges
                || file.runner_allow_new_privileges,
            docker_socket: self.docker_socket.or(file.docker_socket),
            docker_timeout: self.docker_timeout.or(file.docker_timeout),
            runner_command: self.runner_command.or(file.runner_command),
            runner_log_dir: self.runner_log_dir.or(file.runner_log_dir),
            runner_listen: self.runner_listen.or(file.runner_listen),
            runner_environment: self.runner_environment.or(file.runner_environment),
        }
    }

    /// The runner settings and the driver, if one is chosen.
    pub fn build(self) -> anyhow::Result<RunnerSettings> {
        let defaults = RunnersConfig::default();
        let seconds = |name: &str| -> anyhow::Result<Option<Duration>> {
            contract_var(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map(Duration::from_secs)
                        .with_context(|| format!("{name}={v:?} is not a number of seconds"))
                })
                .transpose()
        };
        let inactivity_timeout = match self.runner_inactivity_timeout {
            Some(s) => s.0,
            None => seconds("INACTIVITY_TIMEOUT_SECONDS")?.unwrap_or(defaults.inactivity_timeout),
        };
        let cleanup_interval = match self.runner_cleanup_interval {
            Some(s) => s.0,
            None => seconds("CLEANUP_INTERVAL_SECONDS")?.unwrap_or(defaults.cleanup_interval),
        };
        if inactivity_timeout.is_zero() || cleanup_interval.is_zero() {
            bail!("the runner inactivity timeout and cleanup interval must be greater than zero");
        }
        let max_runners = match self.max_runners {
            Some(n) => n,
            None => match contract_var("MAX_CONCURRENT_RUNNERS") {
                Some(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("MAX_CONCURRENT_RUNNERS={v:?} is not a number"))?,
                None => defaults.max_runners.unwrap_or(0),
            },
        };
        let reuse = self.runner_reuse
            || contract_var("REUSE_RUNNER_MODE").is_some_and(|v| v.trim() == "true");
        let environment = self
            .runner_environment
            .or_else(|| contract_var("NODE_ENV"))
            .unwrap_or_default();
        let config = RunnersConfig {
            reuse,
            host: self
                .runners_host
                .or_else(|| contract_var("RUNNERS_HOST"))
                .unwrap_or(defaults.host),
            inactivity_timeout,
            cleanup_interval,
            max_runners: (max_runners > 0).then_some(max_runners),
            session_label: self.runner_session_label.unwrap_or(defaults.session_label),
            error_details: environment.trim() != "production",
        };

        let driver: Option<DriverConfig> = match self.runner_driver.unwrap_or(DriverKind::None) {
            DriverKind::None => None,
            DriverKind::Docker => {
                let base = DockerConfig::default();
                let hardening = Hardening {
                    drop_all_capabilities: !self.runner_keep_capabilities,
                    no_new_privileges: !self.runner_allow_new_privileges,
                    pids_limit: match self.runner_pids_limit {
                        Some(0) => None,
                        Some(n) if n < 0 => bail!("--runner-pids-limit must not be negative"),
                        Some(n) => Some(n),
                        None => base.hardening.pids_limit,
                    },
                    memory_bytes: match &self.runner_memory {
                        Some(m) => parse_size(m).context("--runner-memory")?,
                        None => base.hardening.memory_bytes,
                    },
                    nano_cpus: match self.runner_cpus {
                        Some(c) if !(c >= 0.0 && c.is_finite()) => {
                            bail!("--runner-cpus must be a number of CPUs, 0 or more")
                        }
                        Some(0.0) => None,
                        Some(c) => Some((c * 1e9).round() as i64),
                        None => base.hardening.nano_cpus,
                    },
                    read_only_root: !self.runner_writable_root,
                };
                let image = self
                    .runner_image
                    .or_else(|| contract_var("DOCKER_IMAGE_NAME"))
                    .unwrap_or(base.image.clone());
                Some(DriverConfig::Docker(DockerConfig {
                    socket: self.docker_socket,
                    image,
                    container_port: self.runner_port.unwrap_or(base.container_port),
                    publish_ip: self
                        .runner_publish_ip
                        .map(|ip| ip.to_string())
                        .unwrap_or(base.publish_ip.clone()),
                    call_timeout: self
                        .docker_timeout
                        .map(|s| s.0)
                        .unwrap_or(base.call_timeout),
                    hardening,
                    ..base
                }))
            }
            DriverKind::Process => {
                let Some(command) = self.runner_command else {
                    bail!(
                        "--runner-driver process needs --runner-command, the program to start \
                         per session (it gets its listening socket as fd 3 and its port in PORT)"
                    );
                };
                let argv = shell_words::split(&command)
                    .with_context(|| format!("--runner-command {command:?}"))?;
                if argv.is_empty() {
                    bail!("--runner-command is empty");
                }
                let mut process = ProcessConfig::new(argv);
                if let Some(dir) = self.runner_log_dir {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("--runner-log-dir: creating {}", dir.display()))?;
                    process.log_dir = Some(dir);
                }
                if let Some(ip) = self.runner_publish_ip {
                    process.bind_ip = ip;
                }
                Some(DriverConfig::Process(process))
            }
        };
        if self.runner_listen.is_some() && driver.is_none() {
            bail!("--runner-listen serves the runner routes: choose a --runner-driver too");
        }
        Ok(RunnerSettings {
            config,
            driver,
            listen: self.runner_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_fills_what_flags_leave_out() {
        let file: RunnerArgs = toml::from_str(
            "runner-driver = \"process\"\nrunner-command = \"python3 r.py\"\nmax-runners = 7\n",
        )
        .unwrap();
        let flags = RunnerArgs {
            max_runners: Some(3),
            ..Default::default()
        };
        let built = flags.or_file(file).build().unwrap();
        assert_eq!(built.driver.unwrap().build().name(), "process");
        assert_eq!(built.config.max_runners, Some(3), "the flag wins");
        assert!(toml::from_str::<RunnerArgs>("runner-drvier = \"docker\"").is_err());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("512m").unwrap(), Some(512 * 1024 * 1024));
        assert_eq!(parse_size("1G").unwrap(), Some(1024 * 1024 * 1024));
        assert_eq!(parse_size("64kb").unwrap(), Some(64 * 1024));
        assert_eq!(parse_size("1048576").unwrap(), Some(1048576));
        assert_eq!(parse_size("0").unwrap(), None);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn the_process_driver_needs_a_command() {
        let args = RunnerArgs {
            runner_driver: Some(DriverKind::Process),
            ..Default::default()
        };
        let e = args.build().err().unwrap().to_string();
        assert!(e.contains("--runner-command"), "{e}");
        let args = RunnerArgs {
            runner_driver: Some(DriverKind::Process),
            runner_command: Some("python3 'my runner.py' --flag".into()),
            ..Default::default()
        };
        let built = args.build().unwrap();
        assert_eq!(built.driver.unwrap().build().name(), "process");
    }

    #[test]
    fn the_default_is_no_driver_and_the_contract_defaults() {
        let RunnerSettings { config, driver, .. } = RunnerArgs::default().build().unwrap();
        assert!(driver.is_none());
        assert_eq!(config.host, "localhost");
        assert_eq!(config.inactivity_timeout, Duration::from_secs(60));
        assert_eq!(config.cleanup_interval, Duration::from_secs(30));
        assert_eq!(config.max_runners, Some(50));
    }
}
