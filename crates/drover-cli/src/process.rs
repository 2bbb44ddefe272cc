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
        // PostgreSQL's NOTICEs (a migration's "already exists, skipping") are not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The multi-threaded runtime of the server: half the machine's cores as async workers (at
/// least one), unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// More workers than that cost more than they give. The store's writer and the blocking pool
/// run on threads of their own, and each request wakes its connection's own task while that
/// task runs (inside hyper's connection; not the idle timer's doing, which was ruled out):
/// tokio then puts the task back on the queue and rouses an idle worker to steal it, a futex
/// wake, an eventfd write and a context switch per request. On 2 cores, one
/// worker took 22 % less server CPU per heartbeat (10,000 nodes) and half the context
/// switches, with the HTTP-bound scenarios (burn-down, contract-exact, add-to-start) as fast.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // tokio reads TOKIO_WORKER_THREADS itself only when no count is set here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(default_workers(std::thread::available_parallelism()));
    }
    builder.enable_all().build()
}

/// Half the cores, at least one; one when the count is unknown.
fn default_workers(cores: std::io::Result<std::num::NonZeroUsize>) -> usize {
    cores.map_or(1, |n| (n.get() / 2).max(1))
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

#[cfg(test)]
mod tests {
    use super::default_workers;
    use std::num::NonZeroUsize;

    fn cores(n: usize) -> std::io::Result<NonZeroUsize> {
        Ok(NonZeroUsize::new(n).expect("a positive count"))
    }

    #[test]
    fn the_server_runs_half_the_cores_as_async_workers_and_at_least_one() {
        assert_eq!(default_workers(cores(1)), 1);
        assert_eq!(default_workers(cores(2)), 1);
        assert_eq!(default_workers(cores(3)), 1);
        assert_eq!(default_workers(cores(8)), 4);
        assert_eq!(default_workers(Err(std::io::Error::other("unknown"))), 1);
    }
}
