//! `drover server`: the settings resolved and checked, logging, the runtime and the signals,
//! then the server. How the server behaves is `drover-server`'s; this module only starts it.

use crate::process::{init_logging, runtime, until_second_signal};
use crate::settings::{Resolved, ServerArgs};
use anyhow::Context;
use drover_server::{Application, DriverConfig};
use tokio_util::sync::CancellationToken;

/// Refuses a database URL this build cannot open, before anything is created: the Java
/// coordinator's JDBC URLs name a store drover does not have, and a PostgreSQL URL must parse.
fn check_store_url(db: &str) -> anyhow::Result<()> {
    drover_store::check_url(db)?;
    Ok(())
}

/// Every source merged and the result checked as the server will check it, before anything
/// is created or bound.
fn checked(args: ServerArgs) -> anyhow::Result<Resolved> {
    let resolved = args.resolve()?;
    check_store_url(&resolved.app.store_url)?;
    resolved.app.validate()?;
    Ok(resolved)
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
    let Resolved {
        app: config,
        log_format,
    } = checked(args)?;
    init_logging(log_format);
    let runtime = runtime().context("starting the async runtime")?;
    runtime.block_on(async move {
        if let Some(driver) = &config.runner_driver {
            let runners = &config.server.runners;
            tracing::info!(
                "session runners on the {} driver ({} at most, inactivity timeout {}s{})",
                match driver {
                    DriverConfig::Docker(_) => "docker",
                    DriverConfig::Process(_) => "process",
                },
                runners
                    .max_runners
                    .map_or("no limit".to_string(), |n| n.to_string()),
                runners.inactivity_timeout.as_secs(),
                if runners.reuse { ", reuse mode" } else { "" }
            );
        }
        let on = |key: &Option<String>| if key.is_some() { "required" } else { "off" };
        let keys = (on(&config.server.agent_key), on(&config.server.api_key));
        let (store, allow_unauthenticated) = (config.store_url.clone(), config.allow_unauthenticated);
        let app = Application::build(config).await?;
        let scheme = app.scheme();
        for (i, (addr, surfaces)) in app.local_addrs().into_iter().enumerate() {
            if i == 0 {
                if allow_unauthenticated && !addr.ip().is_loopback() {
                    tracing::warn!(
                        "serving on {addr} without authentication (--allow-unauthenticated)"
                    );
                }
                tracing::info!(
                    "drover listening on {scheme}://{addr} (store: {store}, agent key: {}, API key: {})",
                    keys.0,
                    keys.1,
                );
            } else {
                let names: Vec<&str> = surfaces.iter().map(|s| s.name()).collect();
                tracing::info!("{} routes also on {scheme}://{addr}", names.join(", "));
            }
        }
        if let Some(addr) = app.grpc_addr() {
            tracing::info!("gRPC (orchion.v1.Orchestrator, health, reflection) on {addr}");
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
    use crate::settings::ServerSettings;
    use crate::settings::groups::{AuthSettings, ListenSettings, StoreSettings, TaskSettings};
    use crate::span::Span;
    use drover_server::Surface;
    use std::path::PathBuf;
    use std::time::Duration;

    /// Settings as flags would give them, through the same resolve and checks as `run`.
    fn check(config: Option<PathBuf>, settings: ServerSettings) -> anyhow::Result<Resolved> {
        checked(ServerArgs { config, settings })
    }

    fn flags(port: u16) -> ServerSettings {
        ServerSettings {
            listen: ListenSettings {
                port: Some(port),
                ..Default::default()
            },
            store: StoreSettings {
                db: Some("x.db".into()),
                ..Default::default()
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
        assert!(check_store_url("sqlite://x/y.db").is_ok());
        assert!(check_store_url("./d.db").is_ok());
        assert!(check_store_url("sqlite://").is_err());
        assert!(check_store_url("postgres://drover@127.0.0.1:5432/drover").is_ok());
        assert!(check_store_url("postgresql://drover@127.0.0.1/drover").is_ok());
        assert!(check_store_url("postgres://drover@127.0.0.1:notaport/drover").is_err());
        assert!(
            check_store_url("jdbc:h2:file:./data/orhestra")
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
                listen: Vec::new(),
                grpc_port: Some(0),
            },
            auth: AuthSettings {
                agent_key: agent.map(String::from),
                api_key: api.map(String::from),
                allow_unauthenticated: allow,
                ..AuthSettings::default()
            },
            ..flags(1)
        };
        assert!(check(None, args(None, None, false)).is_err());
        assert!(check(None, args(Some("a"), None, false)).is_err());
        assert!(check(None, args(Some("a"), Some("b"), false)).is_ok());
        assert!(check(None, args(None, None, true)).is_ok());
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
        let s = check(Some(path.clone()), flags(7000)).unwrap().app;
        assert_eq!(s.listeners[0].addr.port(), 7000);
        assert_eq!(s.server.spot_timeout, Duration::from_secs(3));
        assert_eq!(s.server.task_reaper_interval, Duration::from_secs(2));

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = check(Some(path), ServerSettings::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `prot`"),
            "{err:#}"
        );
    }

    #[test]
    fn tls_needs_both_files_from_any_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        let mut settings = flags(1);
        settings.tls.tls_cert = Some("cert.pem".into());
        let e = check(None, settings).unwrap_err().to_string();
        assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
        let mut settings = flags(1);
        settings.tls.tls_key = Some("key.pem".into());
        let e = check(None, settings).unwrap_err().to_string();
        assert!(e.contains("--tls-key needs --tls-cert"), "{e}");

        // The key from the file completes the flag's certificate.
        std::fs::write(&path, "tls-key = \"/etc/drover/key.pem\"\n").unwrap();
        let mut settings = flags(1);
        settings.tls.tls_cert = Some("/etc/drover/cert.pem".into());
        let tls = check(Some(path.clone()), settings)
            .unwrap()
            .app
            .tls
            .unwrap();
        assert_eq!(
            (tls.cert, tls.key),
            ("/etc/drover/cert.pem".into(), "/etc/drover/key.pem".into())
        );
        assert_eq!(
            check(None, flags(1)).unwrap().app.tls,
            None,
            "plain http by default"
        );
    }

    #[test]
    fn zero_intervals_are_refused() {
        let mut settings = flags(1);
        settings.tasks.spot_timeout = Some(Span(Duration::ZERO));
        let e = check(None, settings).unwrap_err().to_string();
        assert!(e.contains("spot timeout must be greater than zero"), "{e}");
    }

    #[test]
    fn extra_listeners_serve_the_surfaces_named_for_them() {
        let mut settings = flags(8080);
        settings.listen.listen = vec![
            "runners=127.0.0.1:3001".parse().unwrap(),
            "native=127.0.0.1:9000".parse().unwrap(),
            "runners=127.0.0.1:9000".parse().unwrap(),
        ];
        settings.runners = toml::from_str("runner-driver = \"process\"\nrunner-command = \"r\"\nrunner-listen = \"127.0.0.1:3002\"").unwrap();
        let app = check(None, settings).unwrap().app;
        let served: Vec<(u16, Vec<Surface>)> = app
            .listeners
            .iter()
            .map(|l| (l.addr.port(), l.surfaces.clone()))
            .collect();
        assert_eq!(
            served,
            [
                (8080, Surface::MAIN.to_vec()),
                (3002, vec![Surface::Runners]),
                (3001, vec![Surface::Runners]),
                (9000, vec![Surface::Native, Surface::Runners]),
            ]
        );
        assert!(
            "runners:3001"
                .parse::<crate::settings::groups::Listen>()
                .is_err()
        );
        assert!(
            "grpc=127.0.0.1:1"
                .parse::<crate::settings::groups::Listen>()
                .is_err()
        );
    }

    #[test]
    fn runner_routes_alone_need_a_driver_and_a_key_off_loopback() {
        let mut settings = flags(1);
        settings.listen.listen = vec!["runners=127.0.0.1:3001".parse().unwrap()];
        assert!(check(None, settings).is_err(), "no driver");
        let mut settings = flags(1);
        settings.runners = toml::from_str(
            "runner-driver = \"process\"\nrunner-command = \"r\"\nrunner-listen = \"0.0.0.0:3001\"",
        )
        .unwrap();
        let e = check(None, settings).unwrap_err().to_string();
        assert!(e.contains("--api-key"), "{e}");
    }
}
