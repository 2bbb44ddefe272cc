//! Listeners by configuration: any surface can be served on a port of its own, as a contract's
//! clients expect (the session-runners contract's 3001), through the same `Application` that
//! `drover server` builds; and settings that would expose a surface without keys are refused.

use crate::helpers::{spawn, test_config};
use crate::runners::python_runners;
use drover_runners::process::ProcessConfig;
use drover_server::{Application, ConfigError, DriverConfig, ListenerConfig, Surface};
use serde_json::Value;

#[cfg_attr(
    missing_python3,
    ignore = "needs python3, missing where this was built"
)]
#[tokio::test]
async fn the_runner_surface_can_have_a_listener_of_its_own() {
    let driver = python_runners();
    let app = spawn(
        |c| {
            c.runner_driver = Some(driver);
            c.listeners = vec![
                ListenerConfig {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    surfaces: vec![Surface::Native],
                },
                ListenerConfig {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    surfaces: vec![Surface::Runners],
                },
            ];
        },
        true,
    )
    .await;
    assert_eq!(app.addrs.len(), 2);
    let (main, runners) = (&app.addrs[0].0, &app.addrs[1].0);
    assert_ne!(main, runners);
    let post = |base: &str, path: &str| {
        app.http
            .post(format!("{base}{path}"))
            .header("X-Session-Id", "s-own-port")
            .send()
    };

    // The runner routes answer on their own port, and only there.
    let provisioned = post(runners, "/api/runner/provision").await.unwrap();
    assert_eq!(provisioned.status().as_u16(), 201);
    let body: Value = provisioned.json().await.unwrap();
    assert_eq!(body["sessionId"], "s-own-port");
    let on_main = post(main, "/api/runner/heartbeat").await.unwrap();
    assert_eq!(on_main.status().as_u16(), 404);

    // The native API stays on the main port and is absent from the runners' port.
    let health = app
        .http
        .get(format!("{runners}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 404);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    let listed = app.client.runners().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    let gone = post(runners, "/api/runner/deprovision").await.unwrap();
    assert_eq!(gone.status().as_u16(), 200);
    app.finish().await;
}

#[tokio::test]
async fn a_surface_exposed_without_its_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let public = |surfaces: Vec<Surface>| ListenerConfig {
        addr: "0.0.0.0:0".parse().unwrap(),
        surfaces,
    };

    let mut config = test_config(dir.path());
    config.listeners = vec![public(vec![Surface::Native])];
    config.server.agent_key = Some("a".into());
    assert!(matches!(
        config.validate(),
        Err(ConfigError::PublicWithoutKeys(_))
    ));
    config.server.api_key = Some("p".into());
    assert_eq!(config.validate(), Ok(()));

    let mut config = test_config(dir.path());
    // Validation only: the driver is never started.
    config.runner_driver = Some(DriverConfig::Process(ProcessConfig::new(vec![
        "true".into(),
    ])));
    config.listeners.push(public(vec![Surface::Runners]));
    assert!(matches!(
        config.validate(),
        Err(ConfigError::PublicRunnersWithoutKey(_))
    ));
    config.allow_unauthenticated = true;
    assert_eq!(config.validate(), Ok(()));

    // The dashboard alone on a public address needs the API key, which its login then asks for.
    let mut config = test_config(dir.path());
    config.listeners.push(public(vec![Surface::Dashboard]));
    assert!(matches!(
        config.validate(),
        Err(ConfigError::PublicDashboardWithoutKey(_))
    ));
    config.server.api_key = Some("p".into());
    assert_eq!(config.validate(), Ok(()));

    // A listener for the runner routes without a driver would only ever answer 503.
    let mut config = test_config(dir.path());
    config.listeners.push(ListenerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        surfaces: vec![Surface::Runners],
    });
    let e = Application::build(config).await.err().unwrap().to_string();
    assert!(e.contains("no runner driver"), "{e}");
}

#[test]
fn surfaces_are_named_in_configuration() {
    assert_eq!("runners".parse::<Surface>(), Ok(Surface::Runners));
    assert_eq!(" Native ".parse::<Surface>(), Ok(Surface::Native));
    let e = "grpc".parse::<Surface>().unwrap_err().to_string();
    assert!(e.contains("native, runners"), "{e}");
}
