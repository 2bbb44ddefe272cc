//! The `process` driver: a runner is a local child process, for machines without Docker.
//!
//! Ports without races: the driver binds a listening socket on port 0, so the operating system
//! picks a free port, and hands the bound socket to the child as file descriptor 3
//! (`LISTEN_FDS=1`, the socket-activation convention). The child also gets the port in `PORT`
//! and `DROVER_RUNNER_PORT`, and whatever the start spec's `env` adds (its session id and
//! token, drover's URL). Between the bind and the child's exit nobody else can take the port.
//!
//! A start returns once the runner answers HTTP on its port ([`crate::ready`]), within
//! [`ProcessConfig::start_timeout`]; a runner that exits first (a bad argument, a port it tried
//! to bind itself) or never answers is a failed start, and is stopped. Its exit is watched from
//! then on, so [`Driver::running`] knows when it has gone.
//!
//! Each runner is the leader of its own process group, so a server that stops (or is killed)
//! leaves it running to be adopted at the next start, and stopping it ends everything it
//! started. Its labels travel in its environment (`DROVER_RUNNER_LABELS`, JSON), which is how
//! [`ProcessDriver::list`] finds the runners of an earlier server in `/proc`. This driver is
//! Linux-only in what it finds after a restart; starting and stopping work on any Unix.
//!
//! It gives no isolation beyond being a separate process: use the Docker driver where the
//! runner's code is not trusted.

use crate::{Driver, DriverError, Found, StartSpec, Started, env, ready};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::watch;

/// The environment variable that carries a runner's labels.
pub const LABELS_VARIABLE: &str = "DROVER_RUNNER_LABELS";

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Address the listening socket is bound to.
    pub bind_ip: IpAddr,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// Where each runner's output goes (`<session>.log`); discarded when `None`.
    pub log_dir: Option<PathBuf>,
    /// How long a start waits for the runner to answer HTTP on its port; a runner that exits
    /// before, or has not answered by then, failed to start. Zero skips the HTTP check: the
    /// runner then only has to live through [`SETTLE`].
    pub start_timeout: Duration,
}

/// How long a runner must live when the HTTP check is off ([`ProcessConfig::start_timeout`]
/// zero): long enough to catch a program that cannot start at all (a missing file, a bad
/// argument), short enough not to slow every provision.
pub const SETTLE: Duration = Duration::from_millis(100);

impl ProcessConfig {
    pub fn new(command: Vec<String>) -> Self {
        ProcessConfig {
            command,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            stop_grace: Duration::from_secs(5),
            log_dir: None,
            start_timeout: Duration::from_secs(10),
        }
    }
}

pub struct ProcessDriver {
    config: ProcessConfig,
    /// Exit statuses of the children this process started, by pid (`None` while running).
    exits: Mutex<HashMap<i32, watch::Receiver<Option<String>>>>,
}

/// The log file name of a session: letters, digits and `-` as they are, every other byte as
/// `_` and two hex digits. One name per session (`a.b`, `a:b` and `a_b` stay apart), and never
/// `.` or `..` or a path separator.
fn log_name(session: &str) -> String {
    let mut name = String::with_capacity(session.len());
    for b in session.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    name
}

impl ProcessDriver {
    pub fn new(config: ProcessConfig) -> Self {
        ProcessDriver {
            config,
            exits: Mutex::new(HashMap::new()),
        }
    }

    fn exit_watch(&self, pid: i32) -> Option<watch::Receiver<Option<String>>> {
        self.exits.lock().ok()?.get(&pid).cloned()
    }

    fn forget(&self, pid: i32) {
        if let Ok(mut exits) = self.exits.lock() {
            exits.remove(&pid);
        }
    }

    fn output(&self, session: &str) -> Result<(Stdio, Stdio), DriverError> {
        let Some(dir) = &self.config.log_dir else {
            return Ok((Stdio::null(), Stdio::null()));
        };
        let name = log_name(session);
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| DriverError::Failed(format!("opening {}: {e}", path.display())))?;
        let copy = file
            .try_clone()
            .map_err(|e| DriverError::Failed(format!("opening {}: {e}", path.display())))?;
        Ok((Stdio::from(file), Stdio::from(copy)))
    }

    /// Waits until the runner answers HTTP at `addr` (or, with the check off, lives through
    /// [`SETTLE`]); says why not if it exits first or the start timeout passes.
    async fn until_ready(
        &self,
        mut exit: watch::Receiver<Option<String>>,
        addr: SocketAddr,
    ) -> Result<(), String> {
        let exited = |exit: &watch::Receiver<Option<String>>| exit.borrow().clone();
        let timeout = self.config.start_timeout;
        if timeout.is_zero() {
            let _ = tokio::time::timeout(SETTLE, exit.wait_for(Option::is_some)).await;
            return match exited(&exit) {
                Some(status) => Err(format!("exited right after starting ({status})")),
                None => Ok(()),
            };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = exited(&exit) {
                return Err(format!(
                    "exited right after starting ({status}), before it answered on port {}",
                    addr.port()
                ));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if ready::answers_http(addr, left.min(ready::PROBE_LIMIT)).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "did not answer HTTP on port {} within {timeout:?}: it must serve on the \
                     listening socket it is given as fd 3 (LISTEN_FDS=1), or raise the start \
                     timeout (--runner-start-timeout)",
                    addr.port()
                ));
            }
            // Woken early by an exit, which the next turn reports.
            let _ =
                tokio::time::timeout(ready::PROBE_INTERVAL, exit.wait_for(Option::is_some)).await;
        }
    }

    /// Waits up to `grace` for `pid` to end, by its exit watch if it is our child, else by
    /// polling `/proc`.
    async fn wait_gone(&self, pid: i32, grace: Duration) -> bool {
        if let Some(mut exit) = self.exit_watch(pid) {
            return tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_ok();
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if !alive(pid) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn signal_group(pid: i32, signal: i32) {
    // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH, which is fine.
    unsafe {
        libc::killpg(pid, signal);
    }
}

/// A process's state letter and process group, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = text.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// Whether `pid` is a live process (a zombie counts as gone: it has ended and only waits to be
/// reaped).
pub fn alive(pid: i32) -> bool {
    if std::path::Path::new("/proc/self/stat").exists() {
        stat(pid).is_some_and(|(state, _)| state != 'Z')
    } else {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }
}

/// The labels of a process this driver started: a group leader carrying [`LABELS_VARIABLE`].
/// Children of a runner inherit its environment but not its group leadership, so they are not
/// mistaken for runners.
fn labels_of(pid: i32) -> Option<(BTreeMap<String, String>, bool)> {
    let (state, group) = stat(pid)?;
    if group != pid {
        return None;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{LABELS_VARIABLE}=");
    let json = environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))?;
    let labels = parse_labels(&String::from_utf8_lossy(json))?;
    Some((labels, state != 'Z'))
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_str(text).ok()
}

fn write_labels(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

#[async_trait::async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &StartSpec) -> Result<Started, DriverError> {
        let Some((program, args)) = self.config.command.split_first() else {
            return Err(DriverError::Failed(
                "no runner command is configured for the process driver".into(),
            ));
        };
        let listener = TcpListener::bind((self.config.bind_ip, 0))
            .map_err(|e| DriverError::Failed(format!("binding a port for the runner: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| DriverError::Failed(format!("reading the runner's port: {e}")))?
            .port();
        let (stdout, stderr) = self.output(&spec.session_id)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(&spec.env)
            .env(env::PORT, port.to_string())
            .env(env::RUNNER_PORT, port.to_string())
            .env(env::SESSION_ID, &spec.session_id)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "http")
            .env(LABELS_VARIABLE, write_labels(&spec.labels))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let fd = listener.as_raw_fd();
        // SAFETY: runs in the forked child before exec; dup2 and fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // Already in place: only the close-on-exec flag must go.
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| DriverError::Failed(format!("starting `{program}`: {e}")))?;
        // The child holds the socket now.
        drop(listener);
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| DriverError::Failed("the runner exited at once".into()))?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            let _ = tx.send(Some(status));
        });
        if let Ok(mut exits) = self.exits.lock() {
            exits.insert(pid, rx.clone());
        }
        let addr = SocketAddr::new(ready::probe_ip(self.config.bind_ip), port);
        if let Err(why) = self.until_ready(rx, addr).await {
            // It may still run (it never answered): nothing may be left behind.
            let instance = pid.to_string();
            let _ = self.stop(&instance).await;
            self.forget(pid);
            return Err(DriverError::Failed(format!("the runner `{program}` {why}")));
        }
        Ok(Started {
            instance: pid.to_string(),
            host_port: port,
        })
    }

    async fn stop(&self, instance: &str) -> Result<(), DriverError> {
        let pid: i32 = instance
            .parse()
            .map_err(|_| DriverError::Failed(format!("{instance:?} is not a process id")))?;
        let ours = self.exit_watch(pid).is_some();
        // A pid from an earlier server may have been reused by an unrelated process: only a
        // group leader that carries our labels is signalled.
        if !ours && labels_of(pid).is_none() {
            return Ok(());
        }
        signal_group(pid, libc::SIGTERM);
        if !self.wait_gone(pid, self.config.stop_grace).await {
            signal_group(pid, libc::SIGKILL);
            self.wait_gone(pid, Duration::from_secs(5)).await;
        }
        // Whatever the runner left in its group goes too.
        signal_group(pid, libc::SIGKILL);
        self.forget(pid);
        Ok(())
    }

    async fn running(&self, instance: &str) -> Result<bool, DriverError> {
        let Ok(pid) = instance.parse::<i32>() else {
            return Ok(false);
        };
        // A child of this process: its exit watch knows (the child is reaped at once, so /proc
        // would soon not know it at all).
        if let Some(exit) = self.exit_watch(pid) {
            return Ok(exit.borrow().is_none());
        }
        // An earlier server's runner: a live group leader that still carries drover's labels (a
        // reused pid belongs to some other program, which is not the runner).
        Ok(labels_of(pid).is_some_and(|(_, running)| running))
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Found>, DriverError> {
        let entries = std::fs::read_dir("/proc")
            .map_err(|e| DriverError::Unavailable(format!("reading /proc: {e}")))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((labels, running)) = labels_of(pid)
                && labels.get(label).is_some_and(|v| v == value)
            {
                found.push(Found {
                    instance: pid.to_string(),
                    labels,
                    running,
                });
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_that_differ_have_log_files_that_differ() {
        let names: Vec<String> = ["a.b", "a:b", "a_b", "a-b", "ab", "..", "."]
            .iter()
            .map(|s| log_name(s))
            .collect();
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(log_name("web-1"), "web-1");
        assert!(
            names
                .iter()
                .all(|n| !n.contains('/') && !n.starts_with('.'))
        );
    }

    #[test]
    fn labels_round_trip_through_their_text_form() {
        let labels = BTreeMap::from([
            ("io.drover.instance".to_string(), "inst-1".to_string()),
            ("session".to_string(), "a \"quoted\" \\ value".to_string()),
        ]);
        assert_eq!(parse_labels(&write_labels(&labels)), Some(labels));
        assert_eq!(parse_labels("{}"), Some(BTreeMap::new()));
        assert_eq!(parse_labels("not json"), None);
    }
}
