//! A real `drover server` for one scenario of the suite: started on a free loopback port with a
//! fresh SQLite file in its own temporary directory, optionally under `strace` (counting its
//! fsyncs with timestamps), and read from the outside (`/proc` CPU and RSS, file sizes,
//! `/metrics`). It owns the server process and must leave none behind: [`Server::stop`] ends
//! it, and dropping a server that was not stopped kills it.

use crate::{clean_env, cpu_seconds, free_port, spawn};
use anyhow::{Context, bail, ensure};
use drover_client::Client;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start one server.
pub struct ServerOpts<'a> {
    pub drover: &'a Path,
    /// Count the server's fsync/fdatasync calls with `strace` (see [`strace_works`]).
    pub strace: bool,
    /// More `drover server` options (e.g. `--max-spots 0`).
    pub extra: &'a [&'a str],
    /// Where the temporary directory goes (its file system decides what an fsync costs).
    pub db_dir: Option<&'a Path>,
    /// A database URL (PostgreSQL) instead of a fresh SQLite file in the temporary directory.
    pub db_url: Option<&'a str>,
}

pub struct Server {
    /// The process we started: the server itself, or `strace` running it.
    child: Option<Child>,
    /// The server's own pid (the child of `strace` when traced).
    pid: u32,
    pub url: String,
    pub db: PathBuf,
    log: PathBuf,
    strace_out: Option<PathBuf>,
    /// Kept for the server's lifetime; removed with it.
    _dir: tempfile::TempDir,
}

/// How the server ended and what its log says.
pub struct ServerEnd {
    pub exit: Option<ExitStatus>,
    pub warn: usize,
    pub error: usize,
    pub first_problem: Option<String>,
    /// strace's output when the server ran under it (complete: read after strace exited).
    pub trace: Option<String>,
}

impl ServerEnd {
    /// The fsync/fdatasync calls the server made between `from` and `to` (wall clock), when it
    /// ran under strace.
    pub fn fsyncs_between(&self, from: SystemTime, to: SystemTime) -> Option<u64> {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        Some(count_fsyncs(self.trace.as_ref()?, secs(from), secs(to)))
    }
}

/// Whether `strace -f --seccomp-bpf` can run a program here (ptrace may be forbidden in a
/// container). With seccomp-bpf only the traced calls stop the tracee, so counting fsyncs costs
/// little besides the fsyncs themselves.
pub fn strace_works() -> bool {
    std::process::Command::new("strace")
        .args([
            "-f",
            "--seccomp-bpf",
            "-e",
            "trace=fsync",
            "-o",
            "/dev/null",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ServerEnd {
    /// What went wrong on the server's side, for a row's figure: empty when nothing did.
    pub fn notes(&self) -> String {
        let mut notes = String::new();
        if self.warn + self.error > 0 {
            notes.push_str(&format!(
                ", server log {} WARN / {} ERROR (first: {})",
                self.warn,
                self.error,
                self.first_problem.as_deref().unwrap_or_default()
            ));
        }
        match self.exit {
            Some(s) if s.success() => {}
            Some(s) => notes.push_str(&format!(", server exit {s}")),
            None => notes.push_str(", server killed (no exit within 20 s of SIGTERM)"),
        }
        notes
    }
}

impl Server {
    pub async fn start(opts: &ServerOpts<'_>) -> anyhow::Result<Server> {
        let mut tmp = tempfile::Builder::new();
        tmp.prefix("drover-bench-");
        let dir = match opts.db_dir {
            Some(d) => tmp.tempdir_in(d),
            None => tmp.tempdir(),
        }
        .context("creating the temporary directory")?;
        let db = match opts.db_url {
            Some(url) => PathBuf::from(url),
            None => dir.path().join("drover.db"),
        };
        let log = dir.path().join("server.log");
        let port = free_port()?;
        let file = std::fs::File::create(&log).context("creating the server log")?;
        let strace_out = opts.strace.then(|| dir.path().join("fsync.trace"));
        let mut cmd = match &strace_out {
            Some(out) => {
                let mut c = Command::new("strace");
                c.args([
                    "-f",
                    "--seccomp-bpf",
                    "-ttt",
                    "-e",
                    "trace=fsync,fdatasync",
                    "-o",
                ])
                .arg(out)
                .arg(opts.drover);
                c
            }
            None => Command::new(opts.drover),
        };
        cmd.arg("server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()]);
        // The gRPC port the scenario chose, or a free one; before `--db`, where the floor
        // (`floor.rs`) still reads its own options.
        let mut extra = opts.extra.to_vec();
        let grpc = match extra.iter().position(|a| *a == "--grpc-port") {
            Some(i) if i + 1 < extra.len() => extra.drain(i..i + 2).nth(1).unwrap_or("0"),
            _ => "0",
        };
        cmd.args(["--grpc-port", grpc])
            .arg("--db")
            .arg(&db)
            .args(&extra)
            .env("RUST_LOG", "info")
            .env("DROVER_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        clean_env(&mut cmd);
        let child = spawn(cmd).with_context(|| format!("starting {}", opts.drover.display()))?;
        let first = child.id().context("the server exited at once")?;
        let mut server = Server {
            child: Some(child),
            pid: first,
            url: format!("http://127.0.0.1:{port}"),
            db,
            log,
            strace_out,
            _dir: dir,
        };
        server.wait_healthy().await?;
        if server.strace_out.is_some() {
            server.pid = traced_child(first).context("finding the server under strace")?;
        }
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = Client::new(&self.url).with_timeout(Duration::from_secs(5));
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the server exited at start-up ({status}); its log ends: {}",
                    self.log_tail(5)
                );
            }
            if let Ok(h) = client.health().await
                && h.status == "healthy"
            {
                return Ok(());
            }
            ensure!(
                start.elapsed() < START_TIMEOUT,
                "the server did not become healthy within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Fails if the server has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "the server exited ({status}); its log ends: {}",
                self.log_tail(5)
            );
        }
        Ok(())
    }

    /// The server's CPU seconds so far (user + system).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(format!("/proc/{}/stat", self.pid)).map(|(own, _)| own)
    }

    /// The server's resident memory, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(&self.pid.to_string())
    }

    /// Bytes of the database file and of its WAL (0 when there is none).
    pub fn db_bytes(&self) -> (u64, u64) {
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.db.clone().into_os_string();
        wal.push("-wal");
        (size(self.db.clone()), size(PathBuf::from(wal)))
    }

    /// `drover_store_commits_total` from `/metrics`, if the server exports it.
    pub async fn commits(&self, client: &reqwest::Client) -> Option<f64> {
        let text = client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric(&text, "drover_store_commits_total")
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        crate::tail(&text, n).join(" | ")
    }

    /// SIGKILL, as a crash: no chance to give anything up. Waits until the process is gone.
    pub async fn kill9(mut self) {
        signal(self.pid, libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
    }

    /// SIGTERM to the server (strace exits with it); SIGKILL if it does not exit in time.
    pub async fn stop(mut self) -> ServerEnd {
        let mut exit = None;
        if let Some(mut child) = self.child.take() {
            signal(self.pid, libc::SIGTERM);
            match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                Ok(Ok(s)) => exit = Some(s),
                _ => {
                    signal(self.pid, libc::SIGKILL);
                    let _ = child.kill().await;
                }
            }
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        ServerEnd {
            exit,
            warn: text.lines().filter(|l| l.contains(" WARN ")).count(),
            error: text.lines().filter(|l| l.contains(" ERROR ")).count(),
            first_problem: problems.first().map(|s| s.to_string()),
            trace: self
                .strace_out
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Not stopped (an error on the way): the server must not outlive the bench.
        if self.child.is_some() {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of the server we started (or strace's child, which is it).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The first child of `pid` (strace's tracee), from `/proc/PID/task/PID/children`.
fn traced_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of a counter line `name value` in a Prometheus/OpenMetrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name || k.starts_with(&format!("{name}{{"))).then_some(v)
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Counts the calls in `strace -f -ttt` output that started between `from` and `to` (Unix
/// seconds). A line is `PID SECS.MICROS fsync(...` or, for a call another thread interrupted,
/// `PID SECS.MICROS fsync(5 <unfinished ...>` followed later by a `<... fsync resumed>` line,
/// which is not a new call.
fn count_fsyncs(text: &str, from: f64, to: f64) -> u64 {
    text.lines()
        .filter(|l| !l.contains("resumed>"))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let _pid = parts.next()?;
            let t: f64 = parts.next()?.parse().ok()?;
            let call = parts.next()?;
            (call.starts_with("fsync(") || call.starts_with("fdatasync(")).then_some(t)
        })
        .filter(|t| (from..=to).contains(t))
        .count() as u64
}

/// The resident memory of process `pid` (`self` for this one), from `/proc/PID/status`.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsyncs_are_counted_once_each_within_the_window() {
        let trace = "\
101 1000.000100 fsync(5) = 0
102 1000.500000 fdatasync(7 <unfinished ...>
101 1000.600000 fsync(5) = 0
102 1000.700000 <... fdatasync resumed>) = 0
101 1002.000000 fsync(5) = 0
101 1000.800000 +++ exited with 0 +++
";
        assert_eq!(count_fsyncs(trace, 1000.0, 1001.0), 3);
        assert_eq!(count_fsyncs(trace, 1000.55, 1003.0), 2);
    }

    #[test]
    fn a_counter_is_read_from_the_metrics_text() {
        let text = "# TYPE drover_store_commits counter\ndrover_store_commits_total 1234\n\
                    drover_store_writes_total 5000\n# EOF\n";
        assert_eq!(metric(text, "drover_store_commits_total"), Some(1234.0));
        assert_eq!(metric(text, "drover_store_writes_total"), Some(5000.0));
        assert_eq!(metric(text, "drover_missing_total"), None);
    }
}
