//! `drover server`: the settings resolved and checked, logging, the runtime and the signals,
//! then the server. How the server behaves is `drover-server`'s; this module only starts it.

use crate::process::{init_logging, runtime, until_second_signal};
use crate::settings::runners::DriverConfig;
use crate::settings::{Resolved, ServerArgs};
use anyhow::{Context, bail};
use drover_runners::Driver;
use drover_runners::docker::DockerDriver;
use drover_runners::process::ProcessDriver;
use drover_server::{AppState, SystemClock};
use drover_store::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Turns a database setting into a SQLite file path.
fn db_path(db: &str) -> anyhow::Result<PathBuf> {
    if db.starts_with("jdbc:") {
        bail!(
            "database {db:?} is a JDBC URL; drover keeps its state in SQLite: give a file path \
             such as ./data/drover.db (or sqlite://./data/drover.db)"
        );
    }
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        bail!(
            "database {db:?}: this build of drover stores its state in SQLite only; give a file path"
        );
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    if path.is_empty() {
        bail!("the database path is empty");
    }
    Ok(PathBuf::from(path))
}

/// Refuses settings that cannot work or that would serve the API to anyone without keys.
fn validate(s: &Resolved) -> anyhow::Result<()> {
    let server = &s.server;
    if server.default_max_attempts == 0 {
        bail!("max attempts must be at least 1");
    }
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
    if server.runners.inactivity_timeout.is_zero() || server.runners.cleanup_interval.is_zero() {
        bail!("the runner inactivity timeout and cleanup interval must be greater than zero");
    }
    if s.runner_listen.is_some() && s.runner_driver.is_none() {
        bail!("--runner-listen serves the runner routes: choose a --runner-driver too");
    }
    let bind = s.addr.ip();
    if !bind.is_loopback()
        && (server.agent_key.is_none() || server.api_key.is_none())
        && !s.allow_unauthenticated
    {
        bail!(
            "refusing to listen on {bind} without keys: anyone who can reach it could submit \
             jobs and report results. Set both --agent-key and --api-key (or DROVER_AGENT_KEY \
             and DROVER_API_KEY), bind 127.0.0.1, or pass --allow-unauthenticated"
        );
    }
    if let Some(listen) = s.runner_listen
        && !listen.ip().is_loopback()
        && server.api_key.is_none()
        && !s.allow_unauthenticated
    {
        bail!(
            "refusing to serve runners on {listen} without --api-key: anyone who can reach it \
             could start containers. Set --api-key, listen on 127.0.0.1, or pass \
             --allow-unauthenticated"
        );
    }
    Ok(())
}

fn driver(config: DriverConfig) -> Arc<dyn Driver> {
    match config {
        DriverConfig::Docker(c) => Arc::new(DockerDriver::new(c)),
        DriverConfig::Process(c) => Arc::new(ProcessDriver::new(c)),
    }
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

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    validate(&settings)?;
    let db_path = db_path(&settings.store_url)?;
    init_logging(settings.log_format);
    let runtime = runtime().context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = SqliteStore::open(&db_path)
            .with_context(|| format!("opening the store {}", db_path.display()))?;
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("listening on {}", settings.addr))?;
        let addr = listener.local_addr()?;
        if settings.allow_unauthenticated && !addr.ip().is_loopback() {
            tracing::warn!("serving on {addr} without authentication (--allow-unauthenticated)");
        }
        let required = |key: &Option<String>| if key.is_some() { "required" } else { "off" };
        tracing::info!(
            "drover listening on http://{addr} (store: {}, agent key: {}, API key: {})",
            db_path.display(),
            required(&settings.server.agent_key),
            required(&settings.server.api_key),
        );
        let runner_listener = match settings.runner_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for runner requests on {addr}"))?;
                tracing::info!("runner routes also on http://{}", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone());
        let runner_driver = settings.runner_driver.map(driver);
        if let Some(driver) = &runner_driver {
            let runners = &settings.server.runners;
            tracing::info!(
                "session runners on the {} driver ({} at most, inactivity timeout {}s{})",
                driver.name(),
                runners
                    .max_runners
                    .map_or("no limit".to_string(), |n| n.to_string()),
                runners.inactivity_timeout.as_secs(),
                if runners.reuse { ", reuse mode" } else { "" }
            );
        }
        let state = AppState::with_runner_driver(
            Arc::new(store),
            settings.server,
            Arc::new(SystemClock),
            runner_driver,
        );
        drover_server::serve_with_runner_listener(listener, runner_listener, state, shutdown)
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ServerSettings;
    use crate::settings::groups::{AuthSettings, ListenSettings, StoreSettings, TaskSettings};

    /// Settings as flags would give them, through the same resolve and check as `run`.
    fn checked(config: Option<PathBuf>, settings: ServerSettings) -> anyhow::Result<Resolved> {
        let resolved = ServerArgs { config, settings }.resolve()?;
        validate(&resolved)?;
        Ok(resolved)
    }

    fn flags(port: u16) -> ServerSettings {
        ServerSettings {
            listen: ListenSettings {
                port: Some(port),
                ..Default::default()
            },
            store: StoreSettings {
                db: Some("x.db".into()),
            },
            tasks: TaskSettings {
                max_attempts: Some(3),
                ..Default::default()
            },
            ..Default::default()
        }
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
        let args = |agent: Option<&str>, api: Option<&str>, allow: bool| ServerSettings {
            listen: ListenSettings {
                bind: Some("0.0.0.0".parse().unwrap()),
                port: Some(1),
            },
            auth: AuthSettings {
                agent_key: agent.map(String::from),
                api_key: api.map(String::from),
                allow_unauthenticated: allow,
            },
            ..flags(1)
        };
        assert!(checked(None, args(None, None, false)).is_err());
        assert!(checked(None, args(Some("a"), None, false)).is_err());
        assert!(checked(None, args(Some("a"), Some("b"), false)).is_ok());
        assert!(checked(None, args(None, None, true)).is_ok());
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
        let s = checked(Some(path.clone()), flags(7000)).unwrap();
        assert_eq!(s.addr.port(), 7000);
        assert_eq!(s.server.spot_timeout, Duration::from_secs(3));
        assert_eq!(s.server.task_reaper_interval, Duration::from_secs(2));

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = checked(Some(path), ServerSettings::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `prot`"),
            "{err:#}"
        );
    }
}
