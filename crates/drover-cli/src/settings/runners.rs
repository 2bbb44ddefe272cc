//! The session-runner settings group of `drover server`: flags, `DROVER_*` variables, the
//! session-runners contract's own variable names (`REUSE_RUNNER_MODE`, `RUNNERS_HOST`,
//! `INACTIVITY_TIMEOUT_SECONDS`, ...) as aliases, and the config file's `[runners]` table, into
//! a `RunnersConfig` and the chosen driver's configuration.
//!
//! It shapes what the driver is given (sizes, limits, the command split into an argv); it does
//! not start anything, and the rules of runners (limits, inactivity, reuse) are the server's.

use super::{SettingsError, alias};
use crate::span::Span;
use clap::Args;
use drover_runners::docker::{DockerConfig, Hardening};
use drover_runners::process::ProcessConfig;
use drover_server::DriverConfig;
use drover_server::runners::RunnersConfig;
use merge::Merge;
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
#[derive(Debug, Args, Default, serde::Deserialize, Merge)]
#[command(next_help_heading = "Session runners")]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
pub struct RunnerSettings {
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

    /// Host clients are told to reach runners at, each on its own port: a name or address,
    /// optionally with its scheme (https://r.example.com keeps https; without one, http), no
    /// port or path [default: localhost] [alias: RUNNERS_HOST].
    #[arg(long, env = "DROVER_RUNNERS_HOST", value_name = "HOST")]
    runners_host: Option<String>,

    /// Every session shares one runner [alias: REUSE_RUNNER_MODE=true].
    #[arg(long, env = "DROVER_RUNNER_REUSE")]
    #[merge(strategy = merge::bool::overwrite_false)]
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
    #[merge(strategy = merge::bool::overwrite_false)]
    runner_writable_root: bool,

    /// Keep the image's default capabilities instead of dropping them all.
    #[arg(long, env = "DROVER_RUNNER_KEEP_CAPABILITIES")]
    #[merge(strategy = merge::bool::overwrite_false)]
    runner_keep_capabilities: bool,

    /// Let runner processes gain privileges (setuid); off by default (no-new-privileges).
    #[arg(long, env = "DROVER_RUNNER_ALLOW_NEW_PRIVILEGES")]
    #[merge(strategy = merge::bool::overwrite_false)]
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

    /// How long a provision waits for a new runner to answer HTTP on its port; one that exits
    /// before, or has not answered by then, is a failed start (500) and is removed; 0 only
    /// checks that it did not exit at once [default: 10s].
    #[arg(long, env = "DROVER_RUNNER_START_TIMEOUT", value_name = "DURATION")]
    runner_start_timeout: Option<Span>,

    /// drover's URL as runners reach it, given to each runner as DROVER_URL for its heartbeats,
    /// e.g. http://172.17.0.1:8080 for containers [default: for the process driver, the
    /// listener serving the runner routes, on loopback; for Docker, none].
    #[arg(long, env = "DROVER_RUNNER_DROVER_URL", value_name = "URL")]
    runner_drover_url: Option<String>,

    /// `production` hides error details in runner 500 answers [alias: NODE_ENV].
    #[arg(long, env = "DROVER_RUNNER_ENVIRONMENT", value_name = "NAME")]
    runner_environment: Option<String>,
}

/// `512m`, `1g`, `1048576`: bytes, with binary k/m/g suffixes; `0` means no limit.
fn parse_size(text: &str) -> Result<Option<i64>, String> {
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
        .map_err(|e| format!("{text:?} is not a size such as 512m or 1g: {e}"))?;
    let bytes = n
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    Ok((bytes > 0).then_some(bytes))
}

/// A number of seconds, as the contract's `*_SECONDS` variables give it.
fn whole_seconds(text: &str) -> Result<Span, String> {
    text.parse::<u64>()
        .map(|s| Span(Duration::from_secs(s)))
        .map_err(|_| "not a number of seconds".to_string())
}

/// A base URL runners can send their heartbeats to: `http://` or `https://`, a host, no path;
/// kept without a trailing `/`.
fn drover_url(text: &str) -> Result<String, SettingsError> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
            Ok(url.to_string())
        }
        _ => Err(invalid(format!(
            "--runner-drover-url {text:?} must be drover's base URL as runners reach it, such \
             as http://172.17.0.1:8080 (a scheme and a host, no path)"
        ))),
    }
}

/// The runner settings after merging every source.
#[derive(Debug)]
pub struct RunnerPlan {
    pub config: RunnersConfig,
    pub driver: Option<DriverConfig>,
    /// An extra listener for the runner routes.
    pub listen: Option<std::net::SocketAddr>,
}

fn invalid(message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(message.into())
}

impl RunnerSettings {
    /// Fills what flags and `DROVER_*` variables left unset from the contract's variables.
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        alias::fill(&mut self.runner_image, "DOCKER_IMAGE_NAME")?;
        alias::fill(&mut self.runners_host, "RUNNERS_HOST")?;
        alias::fill_with(
            &mut self.runner_inactivity_timeout,
            "INACTIVITY_TIMEOUT_SECONDS",
            whole_seconds,
        )?;
        alias::fill_with(
            &mut self.runner_cleanup_interval,
            "CLEANUP_INTERVAL_SECONDS",
            whole_seconds,
        )?;
        alias::fill(&mut self.max_runners, "MAX_CONCURRENT_RUNNERS")?;
        alias::fill(&mut self.runner_environment, "NODE_ENV")?;
        // The contract turns reuse on with the word `true` only; anything else leaves it off.
        self.runner_reuse |= alias::read("REUSE_RUNNER_MODE").as_deref() == Some("true");
        Ok(())
    }

    /// The runner settings and the driver's configuration, if one is chosen.
    pub fn build(self) -> Result<RunnerPlan, SettingsError> {
        let defaults = RunnersConfig::default();
        let max_runners = self.max_runners.or(defaults.max_runners).unwrap_or(0);
        let host = self.runners_host.unwrap_or(defaults.host);
        // Refused here, at start-up, rather than answered to clients as a broken endpoint.
        drover_core::runners_host_base(&host).map_err(SettingsError::Invalid)?;
        let config = RunnersConfig {
            reuse: self.runner_reuse,
            host,
            inactivity_timeout: self
                .runner_inactivity_timeout
                .map_or(defaults.inactivity_timeout, |Span(d)| d),
            cleanup_interval: self
                .runner_cleanup_interval
                .map_or(defaults.cleanup_interval, |Span(d)| d),
            max_runners: (max_runners > 0).then_some(max_runners),
            session_label: self.runner_session_label.unwrap_or(defaults.session_label),
            error_details: self.runner_environment.as_deref().map(str::trim) != Some("production"),
            drover_url: match self.runner_drover_url {
                Some(url) => Some(drover_url(&url)?),
                None => None,
            },
        };
        let start_timeout = self.runner_start_timeout.map(|Span(d)| d);

        let driver = match self.runner_driver.unwrap_or(DriverKind::None) {
            DriverKind::None => None,
            DriverKind::Docker => {
                let base = DockerConfig::default();
                let hardening = Hardening {
                    drop_all_capabilities: !self.runner_keep_capabilities,
                    no_new_privileges: !self.runner_allow_new_privileges,
                    pids_limit: match self.runner_pids_limit {
                        Some(0) => None,
                        Some(n) if n < 0 => {
                            return Err(invalid("--runner-pids-limit must not be negative"));
                        }
                        Some(n) => Some(n),
                        None => base.hardening.pids_limit,
                    },
                    memory_bytes: match &self.runner_memory {
                        Some(m) => {
                            parse_size(m).map_err(|e| invalid(format!("--runner-memory: {e}")))?
                        }
                        None => base.hardening.memory_bytes,
                    },
                    nano_cpus: match self.runner_cpus {
                        Some(c) if !(c >= 0.0 && c.is_finite()) => {
                            return Err(invalid(
                                "--runner-cpus must be a number of CPUs, 0 or more",
                            ));
                        }
                        Some(0.0) => None,
                        Some(c) => Some((c * 1e9).round() as i64),
                        None => base.hardening.nano_cpus,
                    },
                    read_only_root: !self.runner_writable_root,
                };
                Some(DriverConfig::Docker(DockerConfig {
                    socket: self.docker_socket,
                    image: self.runner_image.unwrap_or(base.image.clone()),
                    container_port: self.runner_port.unwrap_or(base.container_port),
                    publish_ip: self
                        .runner_publish_ip
                        .map(|ip| ip.to_string())
                        .unwrap_or(base.publish_ip.clone()),
                    call_timeout: self.docker_timeout.map_or(base.call_timeout, |Span(d)| d),
                    start_timeout: start_timeout.unwrap_or(base.start_timeout),
                    hardening,
                    ..base
                }))
            }
            DriverKind::Process => {
                let Some(command) = self.runner_command else {
                    return Err(invalid(
                        "--runner-driver process needs --runner-command, the program to start \
                         per session (it gets its listening socket as fd 3 and its port in PORT)",
                    ));
                };
                let argv = shell_words::split(&command)
                    .map_err(|e| invalid(format!("--runner-command {command:?}: {e}")))?;
                if argv.is_empty() {
                    return Err(invalid("--runner-command is empty"));
                }
                let mut process = ProcessConfig::new(argv);
                if let Some(timeout) = start_timeout {
                    process.start_timeout = timeout;
                }
                if let Some(dir) = self.runner_log_dir {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        invalid(format!("--runner-log-dir: creating {}: {e}", dir.display()))
                    })?;
                    process.log_dir = Some(dir);
                }
                if let Some(ip) = self.runner_publish_ip {
                    process.bind_ip = ip;
                }
                Some(DriverConfig::Process(process))
            }
        };
        Ok(RunnerPlan {
            config,
            driver,
            listen: self.runner_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver_name(plan: &RunnerPlan) -> Option<&'static str> {
        plan.driver.as_ref().map(|d| match d {
            DriverConfig::Docker(_) => "docker",
            DriverConfig::Process(_) => "process",
        })
    }

    #[test]
    fn the_file_fills_what_flags_leave_out() {
        let file: RunnerSettings = toml::from_str(
            "runner-driver = \"process\"\nrunner-command = \"python3 r.py\"\nmax-runners = 7\n",
        )
        .unwrap();
        let mut flags = RunnerSettings {
            max_runners: Some(3),
            ..Default::default()
        };
        flags.merge(file);
        let built = flags.build().unwrap();
        assert_eq!(driver_name(&built), Some("process"));
        assert_eq!(built.config.max_runners, Some(3), "the flag wins");
        assert!(toml::from_str::<RunnerSettings>("runner-drvier = \"docker\"").is_err());
    }

    #[test]
    fn a_runners_host_keeps_its_scheme_and_one_with_a_port_is_refused_at_start() {
        let host = |h: &str| RunnerSettings {
            runners_host: Some(h.into()),
            ..Default::default()
        };
        let built = host("https://r.example.com").build().unwrap();
        assert_eq!(built.config.host, "https://r.example.com");
        assert_eq!(
            drover_core::runner_endpoint(&built.config.host, 40545),
            "https://r.example.com:40545"
        );
        let e = host("r.example.com:8080")
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("it has a port") && e.contains("https://"), "{e}");
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
        let args = RunnerSettings {
            runner_driver: Some(DriverKind::Process),
            ..Default::default()
        };
        let e = args.build().err().unwrap().to_string();
        assert!(e.contains("--runner-command"), "{e}");
        let args = RunnerSettings {
            runner_driver: Some(DriverKind::Process),
            runner_command: Some("python3 'my runner.py' --flag".into()),
            ..Default::default()
        };
        let built = args.build().unwrap();
        assert_eq!(driver_name(&built), Some("process"));
    }

    #[test]
    fn the_default_is_no_driver_and_the_contract_defaults() {
        let RunnerPlan { config, driver, .. } = RunnerSettings::default().build().unwrap();
        assert!(driver.is_none());
        assert_eq!(config.host, "localhost");
        assert_eq!(config.inactivity_timeout, Duration::from_secs(60));
        assert_eq!(config.cleanup_interval, Duration::from_secs(30));
        assert_eq!(config.max_runners, Some(50));
    }

    #[test]
    fn the_start_timeout_reaches_either_driver_and_the_drover_url_is_checked() {
        let process = RunnerSettings {
            runner_driver: Some(DriverKind::Process),
            runner_command: Some("python3 r.py".into()),
            runner_start_timeout: Some(Span(Duration::from_secs(3))),
            runner_drover_url: Some("http://127.0.0.1:8080/".into()),
            ..Default::default()
        };
        let built = process.build().unwrap();
        match built.driver {
            Some(DriverConfig::Process(p)) => {
                assert_eq!(p.start_timeout, Duration::from_secs(3))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            built.config.drover_url.as_deref(),
            Some("http://127.0.0.1:8080"),
            "kept without its trailing slash"
        );
        let docker = RunnerSettings {
            runner_driver: Some(DriverKind::Docker),
            runner_start_timeout: Some(Span(Duration::ZERO)),
            ..Default::default()
        };
        match docker.build().unwrap().driver {
            Some(DriverConfig::Docker(d)) => assert_eq!(d.start_timeout, Duration::ZERO),
            other => panic!("{other:?}"),
        }
        for bad in ["172.17.0.1:8080", "ftp://h", "http://", "http://h/api"] {
            let e = RunnerSettings {
                runner_drover_url: Some(bad.into()),
                ..Default::default()
            }
            .build()
            .err()
            .unwrap_or_else(|| panic!("{bad} was taken"))
            .to_string();
            assert!(e.contains("--runner-drover-url"), "{e}");
        }
    }
}
