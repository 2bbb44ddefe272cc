//! Private RabbitMQ brokers for tests, started from the system's own `rabbitmq-server`: one
//! Erlang node per [`Broker`], its configuration, data and logs in a temporary directory, taking
//! AMQP connections on a free loopback port, removed afterwards.
//!
//! It owns starting, stopping, crashing, restarting and removing a broker, and reading how many
//! messages its queues hold (through `rabbitmqctl`). It knows nothing of drover's exchanges and
//! queues (the priority router declares its own, and the tests' independent worker checks them),
//! speaks no AMQP itself (the tests' clients do) and is only ever a dev-dependency.
//!
//! A broker takes about 5-6 s to start (the Erlang VM, then RabbitMQ's boot steps; longer when
//! several start at once) and about 1.5 s to stop gracefully (killing it, as dropping does,
//! takes a few milliseconds), so a test starts one only when it needs a broker of its own. The API is blocking:
//! a tokio test calls it through `tokio::task::spawn_blocking` (a [`Broker`] is `Send + Sync`,
//! so an `Arc<Broker>` can go there).
//!
//! What keeps brokers apart, in one test process and across several:
//! - Each has a node name, an AMQP port and an Erlang distribution port of its own, its own
//!   `rabbitmq.conf` and plugin list (none), and its data (`mnesia`) and logs in its directory;
//!   nothing is read from the system's `/etc/rabbitmq`.
//! - Each has its own random Erlang cookie, in its directory, which is `HOME` for the server and
//!   for `rabbitmqctl` alike: `rabbitmqctl` reaches the node over Erlang distribution, which
//!   needs the node's cookie, and no other broker's (nor the system's
//!   `/var/lib/rabbitmq/.erlang.cookie`) will do.
//! - Erlang distribution listens on loopback only, for the server and for `rabbitmqctl`, and
//!   `rabbitmqctl` takes any free port for it instead of RabbitMQ's fixed range of eleven
//!   (35672-35682), which parallel tests would exhaust.
//! - The exception is `epmd`, Erlang's port mapper: the first node started on the machine starts
//!   it as a daemon, every node registers its name there, and it outlives the brokers. It is
//!   shared by design, harmless, and left alone.
//!
//! As root, the programs run as the `rabbitmq` user through `runuser`, in a directory that user
//! owns (started as root, RabbitMQ exits at once, without a log, when its directories are not
//! the `rabbitmq` user's). Debian's `/usr/sbin/rabbitmq-server` is a wrapper that does the same
//! switch but also moves to `/var/lib/rabbitmq` and sends the server's output to
//! `/var/log/rabbitmq`, so the real scripts beside it are run instead.

use std::fmt;
use std::fs;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a start may take before it counts as failed: about 6 s here, but tests start
/// brokers in parallel on small machines, where it can take several times that.
const START_WITHIN: Duration = Duration::from_secs(90);

/// How long the node may take to end after `rabbitmqctl stop` before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Erlang distribution on loopback only, for the server's node and `rabbitmqctl`'s.
const LOOPBACK_DISTRIBUTION: &str = "-kernel inet_dist_use_interface {127,0,0,1}";

/// What went wrong starting, stopping or asking a broker, said in full (with the end of the
/// server's log where it tells more).
pub struct Error(String);

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// As Display: a failed test's `unwrap` then shows the message and the log lines as they are.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The directory of RabbitMQ's own scripts (`rabbitmq-server`, `rabbitmqctl`):
/// `/usr/lib/rabbitmq/bin` on Debian, else where `rabbitmq-server` on `PATH` (or in
/// `/usr/sbin`) really lives.
pub fn program_dir() -> Option<PathBuf> {
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    if has_programs(debian) {
        return Some(debian.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .find_map(|dir| {
            // Packages link the programs into a bin directory; the scripts source their
            // neighbours (rabbitmq-env) from the directory they really live in.
            let real = fs::canonicalize(dir.join("rabbitmq-server")).ok()?;
            let real_dir = real.parent()?;
            has_programs(real_dir).then(|| real_dir.to_path_buf())
        })
}

fn has_programs(dir: &Path) -> bool {
    dir.join("rabbitmq-server").is_file() && dir.join("rabbitmqctl").is_file()
}

/// Why no broker can be started here, if none can.
pub fn missing() -> Option<String> {
    match program_dir() {
        Some(_) => None,
        None => Some(
            "RabbitMQ's server (rabbitmq-server, rabbitmqctl) is not installed: apt-get install \
             rabbitmq-server"
                .into(),
        ),
    }
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency: /proc/self/status's "Uid:" line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Two distinct free loopback ports (both held until both are found, so they differ).
fn free_ports() -> std::io::Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A cookie no one can guess: whoever has it can run code in the node.
fn random_cookie() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::new(format!("reading /dev/urandom for an Erlang cookie: {e}")))?;
    Ok(bytes.iter().map(|b| char::from(b'A' + b % 26)).collect())
}

/// Quotes `text` for `sh`.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Kills every process of the group `pgid` (a server started by [`Broker::start_again`] leads
/// its own group: `runuser`, the scripts' shell, the Erlang VM and its helpers).
fn kill_group(pgid: u32) -> Result<()> {
    let out = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("running kill: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "kill -KILL -- -{pgid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The state and process group of a `/proc/<pid>` or `/proc/<pid>/task/<tid>` entry.
fn state_and_group(entry: &Path) -> Option<(String, String)> {
    // "pid (comm) state ppid pgrp ...": comm may hold anything, so from the last ')'.
    let stat = fs::read_to_string(entry.join("stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    Some((state, fields.nth(1)?.to_string()))
}

/// Whether a process of the group `pgid` is left that still holds its files (sockets among
/// them), from `/proc`. A killed multi-threaded process (the Erlang VM) shows as a zombie as
/// soon as its main thread has ended, while its other threads, and its open sockets, may
/// live on a moment longer: so each thread is looked at.
fn group_alive(pgid: u32) -> bool {
    let pgid = pgid.to_string();
    let dead = |state: &str| state == "Z" || state == "X";
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| state_and_group(&e.path()).is_some_and(|(_, group)| group == pgid))
        .any(|e| {
            fs::read_dir(e.path().join("task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| state_and_group(&t.path()).is_some_and(|(state, _)| !dead(&state)))
        })
}

/// Kills the group `pgid` whose leader is `child`, reaps the leader and waits until the rest
/// (the Erlang VM, which `runuser` does not wait for once killed) has ended too, so its ports
/// are free when this returns.
fn kill_and_reap(child: &mut Child) -> Result<()> {
    let pgid = child.id();
    // Killed before the leader is reaped: until then no other process can have its pid.
    let killed = kill_group(pgid);
    child
        .wait()
        .map_err(|e| Error::new(format!("waiting for the killed server: {e}")))?;
    wait_group_gone(pgid)?;
    killed
}

/// Waits until no live process of the group `pgid` is left.
fn wait_group_gone(pgid: u32) -> Result<()> {
    let begun = Instant::now();
    while group_alive(pgid) {
        if begun.elapsed() > STOP_WITHIN {
            return Err(Error::new(format!(
                "processes of group {pgid} still run {STOP_WITHIN:?} after the server ended"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One queue of the broker's default virtual host (`/`), as `rabbitmqctl list_queues` tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    /// Messages ready to be delivered.
    pub ready: u64,
    /// Messages delivered to a consumer (or taken with basic.get) and not yet acknowledged.
    pub unacked: u64,
}

/// A private RabbitMQ broker of one test. Dropping it kills the server (also when the test
/// panics) and removes its directory; should the test process die without dropping it, a
/// watcher process does the same.
#[derive(Debug)]
pub struct Broker {
    dir: tempfile::TempDir,
    programs: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    as_rabbitmq: bool,
    /// The running server (leader of its own process group), while there is one.
    server: Mutex<Option<Child>>,
}

impl Broker {
    /// Sets up a broker in a new temporary directory, on free ports, and starts it; returns once
    /// it takes AMQP connections and has finished booting.
    pub fn start() -> Result<Broker> {
        let programs = program_dir().ok_or_else(|| Error::new(missing().unwrap_or_default()))?;
        let dir = tempfile::Builder::new()
            .prefix("drover-amqp-")
            .tempdir()
            .map_err(|e| Error::new(format!("creating a directory for RabbitMQ: {e}")))?;
        // The directory's name is unique on this machine (created exclusively, with a random
        // suffix): as the node's name too, no two brokers register the same name with epmd.
        let node = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            + "@localhost";
        let (port, dist_port) =
            free_ports().map_err(|e| Error::new(format!("finding free ports: {e}")))?;
        let write = |name: &str, text: &str| {
            fs::write(dir.path().join(name), text)
                .map_err(|e| Error::new(format!("writing {name} for RabbitMQ: {e}")))
        };
        // `loopback_users = none`: the default user (guest) may log in from anywhere, though the
        // listener is on loopback only.
        write(
            "rabbitmq.conf",
            &format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        write("plugins", "[].\n")?;
        // Read by the scripts instead of the system's /etc/rabbitmq/rabbitmq-env.conf.
        write("rabbitmq-env.conf", "")?;
        write(".erlang.cookie", &random_cookie()?)?;
        // Erlang refuses a cookie file that others may read.
        fs::set_permissions(
            dir.path().join(".erlang.cookie"),
            fs::Permissions::from_mode(0o400),
        )
        .map_err(|e| Error::new(format!("making the Erlang cookie private: {e}")))?;
        for sub in ["mnesia", "log"] {
            fs::create_dir(dir.path().join(sub))
                .map_err(|e| Error::new(format!("creating {sub} for RabbitMQ: {e}")))?;
        }
        let as_rabbitmq = is_root();
        if as_rabbitmq {
            run(Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir.path()))?;
        }
        let broker = Broker {
            dir,
            programs,
            node,
            port,
            dist_port,
            as_rabbitmq,
            server: Mutex::new(None),
        };
        broker.start_again()?;
        Ok(broker)
    }

    /// The AMQP URL of the broker's default virtual host, as the default user.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The port it takes AMQP connections on, at 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node's name (`rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its directory: configuration, `mnesia` (the data), `log` (the node's log) and
    /// `server.out` (what the server printed).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn server(&self) -> MutexGuard<'_, Option<Child>> {
        // A test that panicked while holding the lock left nothing half-done in it.
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the server process is running (it may still be booting or halting).
    pub fn is_running(&self) -> bool {
        self.server()
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// A command running one of RabbitMQ's scripts for this broker: as `rabbitmq` when we are
    /// root, with the broker's directory as `HOME` (where its cookie is) and its environment.
    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let path = self.programs.join(program);
        let mut cmd = if self.as_rabbitmq {
            // runuser sets HOME to the user's own (/var/lib/rabbitmq); env sets it back.
            let mut c = Command::new("runuser");
            c.args(["-u", "rabbitmq", "--", "env"])
                .arg(format!("HOME={}", dir.display()))
                .arg(path);
            c
        } else {
            let mut c = Command::new(path);
            c.env("HOME", dir);
            c
        };
        // Nothing of a RabbitMQ the caller's environment describes.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RABBITMQ_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            // Without its extension: RabbitMQ reads `rabbitmq.conf`.
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", LOOPBACK_DISTRIBUTION)
            .env("RABBITMQ_CTL_ERL_ARGS", LOOPBACK_DISTRIBUTION)
            // Port 0 for rabbitmqctl's own distribution listener: any free port.
            .env("RABBITMQ_CTL_DIST_PORT_MIN", "0")
            .env("RABBITMQ_CTL_DIST_PORT_MAX", "0")
            // Heeded only by the epmd the first node starts: on loopback, then.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(dir)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `rabbitmqctl -n NODE ARGS...` against this broker; returns what it printed. E.g.
    /// `["list_connections", "name"]`, or `["eval", "..."]` for what no subcommand does.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .map_err(|e| Error::new(format!("running rabbitmqctl: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(Error::new(format!(
                "rabbitmqctl -n {} {} failed ({}): {} {}",
                self.node,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            )))
        }
    }

    /// The queues of the default virtual host, with their message counts.
    pub fn queues(&self) -> Result<Vec<QueueInfo>> {
        let out = self.ctl(&[
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                // Tab-separated, the name first (a name may itself hold a tab: split from the
                // right).
                let mut fields = line.rsplitn(3, '\t');
                let (unacked, ready, name) = (fields.next(), fields.next(), fields.next());
                let count = |f: Option<&str>| f.and_then(|f| f.trim().parse::<u64>().ok());
                match (name, count(ready), count(unacked)) {
                    (Some(name), Some(ready), Some(unacked)) => Ok(QueueInfo {
                        name: name.to_string(),
                        ready,
                        unacked,
                    }),
                    _ => Err(Error::new(format!(
                        "unexpected line from rabbitmqctl list_queues: {line:?}"
                    ))),
                }
            })
            .collect()
    }

    /// How many messages are ready in the queue `name` (of the default virtual host); errs when
    /// there is no such queue.
    pub fn queue_depth(&self, name: &str) -> Result<u64> {
        let queues = self.queues()?;
        match queues.iter().find(|q| q.name == name) {
            Some(q) => Ok(q.ready),
            None => Err(Error::new(format!(
                "no queue {name:?} on the broker; it has {:?}",
                queues.iter().map(|q| &q.name).collect::<Vec<_>>()
            ))),
        }
    }

    /// Starts the server (again) with the same node name, port and directory, so durable
    /// queues and persistent messages are back; returns once it takes AMQP connections and has
    /// finished booting. Errs if it is already running.
    pub fn start_again(&self) -> Result<()> {
        let mut server = self.server();
        if let Some(child) = server.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Err(Error::new(format!(
                "broker {} is already running",
                self.node
            )));
        }
        *server = None;
        let out_path = self.dir.path().join("server.out");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|e| Error::new(format!("opening {}: {e}", out_path.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::new(format!("opening {}: {e}", out_path.display())))?;
        let mut child = self
            .command("rabbitmq-server")
            .stdout(out)
            .stderr(err)
            // Its own process group: crash() and the watcher kill the lot (runuser, the
            // scripts, the VM and its helpers); epmd detaches from it as a daemon, and lives.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::new(format!("starting rabbitmq-server: {e}")))?;
        let started = self
            .watch(child.id())
            .and_then(|()| self.wait_started(&mut child));
        match started {
            Ok(()) => {
                *server = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = kill_and_reap(&mut child);
                Err(e)
            }
        }
    }

    /// Waits until the server takes AMQP connections and `rabbitmqctl await_startup` says it
    /// has booted; errs at once, with its log, if the server ends first.
    fn wait_started(&self, child: &mut Child) -> Result<()> {
        let begun = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::new(format!(
                    "rabbitmq-server ({}) ended ({status}) before taking connections: {}",
                    self.node,
                    self.log_tail()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if begun.elapsed() > START_WITHIN {
                return Err(Error::new(format!(
                    "rabbitmq-server ({}) took no connections on port {} within {:?}: {}",
                    self.node,
                    self.port,
                    START_WITHIN,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The listener opens among the last boot steps; await_startup makes sure of the rest.
        self.ctl(&["await_startup", "--timeout", "60"])
            .map(drop)
            .map_err(|e| Error::new(format!("{e}; {}", self.log_tail())))
    }

    /// Starts a watcher that kills the server `pid` leads and removes the directory if this
    /// process ends while the server still runs (a test killed, or exiting without dropping
    /// its broker); it ends by itself once the server has.
    fn watch(&self, pid: u32) -> Result<()> {
        // `kill -KILL -PID` kills the group: dash's kill (Debian's sh) takes no `--`.
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do kill -0 {pid} 2>/dev/null || exit 0; sleep 1; \
             done; kill -KILL -{pid} 2>/dev/null; rm -rf {dir}",
            me = std::process::id(),
            dir = sh_quote(&self.dir.path().to_string_lossy()),
        );
        // In the background of a shell that exits at once: the watcher is nobody's child to
        // reap, and in a session of its own, out of reach of a Ctrl-C to the tests.
        run(Command::new("setsid").args([
            "sh",
            "-c",
            &format!("({script}) </dev/null >/dev/null 2>&1 &"),
        ]))
    }

    /// Stops the server gracefully (`rabbitmqctl stop`) and waits until it has ended; its
    /// directory stays, for [`Broker::start_again`]. Clients' connections are closed. Does
    /// nothing if it is not running; kills it (and errs) if it does not end in time.
    pub fn stop(&self) -> Result<()> {
        let mut server = self.server();
        let Some(mut child) = server.take() else {
            return Ok(());
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return Ok(());
        }
        let asked = self.ctl(&["stop"]);
        // rabbitmqctl returns once the node has begun halting; the VM ends a moment later.
        // Refused, it may still have been heard: a short wait before killing.
        let within = match asked {
            Ok(_) => STOP_WITHIN,
            Err(_) => Duration::from_secs(2),
        };
        let begun = Instant::now();
        while begun.elapsed() < within {
            if !matches!(child.try_wait(), Ok(None)) {
                return wait_group_gone(child.id());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill_and_reap(&mut child);
        Err(Error::new(match asked {
            Err(e) => format!("{e}; killed the server"),
            Ok(_) => format!(
                "rabbitmq-server ({}) did not end within {STOP_WITHIN:?} of rabbitmqctl stop; \
                 killed it: {}",
                self.node,
                self.log_tail()
            ),
        }))
    }

    /// Kills the server at once (SIGKILL), as a crash would; its directory stays, for
    /// [`Broker::start_again`]. Does nothing if it is not running.
    pub fn crash(&self) -> Result<()> {
        let mut server = self.server();
        let Some(mut child) = server.take() else {
            return Ok(());
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return Ok(());
        }
        kill_and_reap(&mut child)
    }

    /// The last lines of what the server printed and of the node's log.
    fn log_tail(&self) -> String {
        let tail = |path: PathBuf| {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "{}:\n{}",
                path.display(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        };
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node));
        format!(
            "{}\n{}",
            tail(self.dir.path().join("server.out")),
            tail(log)
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Its data goes with it, so a graceful stop would save nothing: killed at once. The
        // directory goes when `dir` is dropped, after this.
        let _ = self.crash();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("running {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Under CI a missing server is a failure, not a reason to skip.
    fn require_rabbitmq() {
        if let Some(why) = missing() {
            panic!("{why}");
        }
    }

    /// Whether `port` answers the AMQP 0-9-1 protocol header with connection.start.
    fn speaks_amqp(port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut frame = [0u8; 11];
        stream.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
            && stream.read_exact(&mut frame).is_ok()
            // A method frame on channel 0: class 10 (connection), method 10 (start).
            && frame[0] == 1
            && frame[1..3] == [0, 0]
            && frame[7..11] == [0, 10, 0, 10]
    }

    /// Declares a durable classic queue through the node itself (no AMQP client here).
    fn declare_durable_queue(broker: &Broker, name: &str) {
        let expr = format!(
            "rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"{name}\">>), true, \
             false, [], none, <<\"test\">>)."
        );
        broker.ctl(&["eval", &expr]).unwrap();
    }

    /// Publishes `count` messages to `queue` through the default exchange; `delivery_mode` 2 is
    /// persistent, 1 transient.
    fn publish(broker: &Broker, queue: &str, count: u32, delivery_mode: u8) {
        let expr = format!(
            "[ok = rabbit_basic:publish(rabbit_misc:r(<<\"/\">>, exchange, <<>>), \
             <<\"{queue}\">>, [{{delivery_mode, {delivery_mode}}}], <<\"m\">>) \
             || _ <- lists:seq(1, {count})], ok."
        );
        broker.ctl(&["eval", &expr]).unwrap();
    }

    #[test]
    #[cfg_attr(
        missing_rabbitmq,
        ignore = "RabbitMQ's server is not installed here (apt-get install rabbitmq-server)"
    )]
    fn a_broker_starts_keeps_persistent_messages_across_restarts_and_is_removed() {
        require_rabbitmq();
        let begun = Instant::now();
        let broker = Broker::start().unwrap();
        eprintln!("started in {:?}", begun.elapsed());
        assert!(broker.is_running());
        assert!(speaks_amqp(broker.port()));
        assert_eq!(
            broker.url(),
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port())
        );
        assert_eq!(broker.queues().unwrap(), vec![]);
        assert!(broker.queue_depth("jobs").is_err());

        declare_durable_queue(&broker, "jobs");
        assert_eq!(broker.queue_depth("jobs").unwrap(), 0);
        publish(&broker, "jobs", 3, 2);
        publish(&broker, "jobs", 1, 1);
        assert_eq!(broker.queue_depth("jobs").unwrap(), 4);

        let begun = Instant::now();
        broker.stop().unwrap();
        eprintln!("stopped in {:?}", begun.elapsed());
        assert!(!broker.is_running());
        assert!(TcpStream::connect(("127.0.0.1", broker.port())).is_err());
        assert!(broker.queue_depth("jobs").is_err());
        broker.stop().unwrap();

        let begun = Instant::now();
        broker.start_again().unwrap();
        eprintln!("started again in {:?}", begun.elapsed());
        assert!(broker.start_again().is_err());
        assert!(speaks_amqp(broker.port()));
        // The durable queue and its persistent messages are back; the transient one is not.
        assert_eq!(
            broker.queues().unwrap(),
            vec![QueueInfo {
                name: "jobs".into(),
                ready: 3,
                unacked: 0
            }]
        );

        broker.crash().unwrap();
        assert!(!broker.is_running());
        assert!(TcpStream::connect(("127.0.0.1", broker.port())).is_err());
        broker.start_again().unwrap();
        assert_eq!(broker.queue_depth("jobs").unwrap(), 3);

        let (dir, port) = (broker.dir().to_path_buf(), broker.port());
        drop(broker);
        assert!(!dir.exists(), "{} is left", dir.display());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// A real AMQP client logs in with `url()`, and a durable priority queue's persistent
    /// messages outlive the broker stopping under the open connection; they come back in
    /// priority order.
    #[tokio::test(flavor = "multi_thread")]
    #[cfg_attr(
        missing_rabbitmq,
        ignore = "RabbitMQ's server is not installed here (apt-get install rabbitmq-server)"
    )]
    async fn a_client_logs_in_and_persistent_priority_messages_outlive_a_restart() {
        use lapin::options::{
            BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        };
        use lapin::types::{AMQPValue, FieldTable};
        use lapin::{BasicProperties, Connection, ConnectionProperties};
        use std::sync::Arc;
        use tokio::task::spawn_blocking;

        require_rabbitmq();
        let broker = Arc::new(spawn_blocking(Broker::start).await.unwrap().unwrap());
        let conn = Connection::connect(&broker.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(10));
        channel
            .queue_declare("job.high".into(), QueueDeclareOptions::durable(), arguments)
            .await
            .unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for priority in [1u8, 9, 5] {
            let confirmation = channel
                .basic_publish(
                    "".into(),
                    "job.high".into(),
                    BasicPublishOptions::default(),
                    format!("p{priority}").as_bytes(),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_priority(priority),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirmation.is_ack());
        }
        let b = Arc::clone(&broker);
        let depth = spawn_blocking(move || b.queue_depth("job.high"));
        assert_eq!(depth.await.unwrap().unwrap(), 3);

        let b = Arc::clone(&broker);
        spawn_blocking(move || b.stop().and_then(|()| b.start_again()))
            .await
            .unwrap()
            .unwrap();
        let conn = Connection::connect(&broker.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let mut got = Vec::new();
        while let Some(message) = channel
            .basic_get("job.high".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let delivery = message.delivery;
            got.push((
                delivery.properties.priority().unwrap_or(0),
                *delivery.properties.delivery_mode(),
                String::from_utf8_lossy(&delivery.data).into_owned(),
            ));
        }
        let persistent = Some(2);
        assert_eq!(
            got,
            [
                (9, persistent, "p9".to_string()),
                (5, persistent, "p5".to_string()),
                (1, persistent, "p1".to_string())
            ]
        );
    }

    #[test]
    #[cfg_attr(
        missing_rabbitmq,
        ignore = "RabbitMQ's server is not installed here (apt-get install rabbitmq-server)"
    )]
    fn brokers_started_side_by_side_are_apart() {
        require_rabbitmq();
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Broker>();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(Broker::start);
            let b = s.spawn(Broker::start);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        assert_ne!(a.node(), b.node());
        assert_ne!(a.port(), b.port());
        declare_durable_queue(&a, "only-in-a");
        assert_eq!(a.queue_depth("only-in-a").unwrap(), 0);
        assert!(b.queue_depth("only-in-a").is_err());
        assert!(speaks_amqp(a.port()) && speaks_amqp(b.port()));
    }
}
