//! Process concerns shared by the long-running commands (`drover server`, `drover agent`): the
//! log format and logging set-up, the async runtime, and the two-stage stop on signals. It owns
//! how the process behaves, never what the server or the agent does.

use serde::Deserialize;
use std::io::Write;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stdout in `format`, at the level RUST_LOG gives (info by default).
pub fn init_logging(format: LogFormat) {
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

/// The multi-threaded runtime of a long-running command.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The two-stage stop of every long-running command: cancels `stop` on the first SIGTERM or
/// Ctrl-C (then logs `on_first`), and returns on the second, once `on_second` is printed; the
/// caller then stops without waiting.
pub async fn until_second_signal(stop: CancellationToken, on_first: Option<&str>, on_second: &str) {
    wait_for_signal().await;
    // Act first, log second: a failing log write must not keep the process up.
    stop.cancel();
    if let Some(message) = on_first {
        tracing::info!("{message}");
    }
    wait_for_signal().await;
    let _ = writeln!(std::io::stderr(), "{on_second}");
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
