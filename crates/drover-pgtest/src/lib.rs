//! Throwaway PostgreSQL clusters for tests, started from the system's own binaries: `initdb` and
//! `pg_ctl` in a temporary directory, listening on a free loopback port, removed afterwards.
//!
//! It owns starting, crashing, restarting and removing a cluster, and creating an empty
//! database in it. It knows nothing of drover's schema (the store applies its own migrations)
//! and is only ever a dev-dependency.
//!
//! Two ways to get one:
//! - [`TempPostgres::start`]: a cluster of the test's own, for tests that crash or restart the
//!   database. Dropping it stops it (`-m immediate`) and removes its directory.
//! - [`fresh_database`]: an empty database in one cluster shared by the whole test process
//!   (about 0.6 s to start once, then about 0.1 s per database). A watcher process stops that
//!   cluster and removes its directory when the test process exits, however it exits.
//!
//! As root (`initdb` refuses to run as root) the binaries run as the `postgres` user through
//! `runuser`, in a directory that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The directory of the newest installed PostgreSQL's binaries (Debian puts them in
/// `/usr/lib/postgresql/<major>/bin`), or `pg_ctl`'s directory on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Why no cluster can be started here, if none can.
pub fn missing() -> Option<String> {
    match bin_dir() {
        Some(_) => None,
        None => Some(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install \
             postgresql"
                .into(),
        ),
    }
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency: /proc/self/status's "Uid:" line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A cluster's location and how to run its tools: what every operation below needs.
#[derive(Clone)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// `listen_addresses`: 127.0.0.1, then any the test asked for.
    listen: String,
}

/// A running (or crashed) cluster of one test; dropping it stops the server and removes its
/// directory.
pub struct TempPostgres {
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TempPostgres {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl TempPostgres {
    /// initdb and start a cluster on a free port.
    pub fn start() -> Result<TempPostgres, String> {
        TempPostgres::start_listening_also(&[])
    }

    /// [`TempPostgres::start`], listening on `addresses` besides 127.0.0.1 (on the same port)
    /// and trusting clients in each address's /24: for a test whose servers run in network
    /// namespaces it made, reaching the database through links it can cut. The addresses must
    /// exist when the cluster starts.
    pub fn start_listening_also(addresses: &[std::net::Ipv4Addr]) -> Result<TempPostgres, String> {
        TempPostgres::start_with(addresses, "")
    }

    /// [`TempPostgres::start`] with more `postgresql.conf` lines, which win over the small
    /// footprint set here: e.g. `shared_buffers = 128MB`, Debian's default, for a benchmark
    /// that compares with systems running on a default installation.
    pub fn start_with_conf(conf: &str) -> Result<TempPostgres, String> {
        TempPostgres::start_with(&[], conf)
    }

    fn start_with(
        addresses: &[std::net::Ipv4Addr],
        more_conf: &str,
    ) -> Result<TempPostgres, String> {
        let bin = bin_dir().ok_or_else(|| missing().unwrap_or_default())?;
        let dir = tempfile::Builder::new()
            .prefix("drover-pg-")
            .tempdir()
            .map_err(|e| format!("creating a directory for PostgreSQL: {e}"))?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))?;
        }
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let cluster = Cluster {
            dir: dir.path().to_path_buf(),
            bin,
            port,
            as_postgres,
            listen: std::iter::once("127.0.0.1".to_string())
                .chain(addresses.iter().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        };
        run(cluster
            .tool(
                "initdb",
                &[
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "-D",
                ],
            )
            .arg(cluster.data()))?;
        // Durable commits (fsync on) as a user's server has them, in a small footprint.
        let conf = "\nfsync = on\nshared_buffers = 32MB\nmax_connections = 200\n";
        let conf_path = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .map_err(|e| format!("reading postgresql.conf: {e}"))?;
        text.push_str(conf);
        text.push_str(more_conf);
        text.push('\n');
        std::fs::write(&conf_path, text).map_err(|e| format!("writing postgresql.conf: {e}"))?;
        if !addresses.is_empty() {
            let hba_path = cluster.data().join("pg_hba.conf");
            let mut hba = std::fs::read_to_string(&hba_path)
                .map_err(|e| format!("reading pg_hba.conf: {e}"))?;
            for a in addresses {
                let [x, y, z, _] = a.octets();
                hba.push_str(&format!("host all all {x}.{y}.{z}.0/24 trust\n"));
            }
            std::fs::write(&hba_path, hba).map_err(|e| format!("writing pg_hba.conf: {e}"))?;
        }
        let pg = TempPostgres { cluster, _dir: dir };
        pg.start_again()?;
        Ok(pg)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.cluster.crash();
    }
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command running `tool` from the PostgreSQL binaries, as `postgres` when we are root.
    fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` in this cluster.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Stops the server at once, as a crash would (`pg_ctl -m immediate stop`).
    pub fn crash(&self) -> Result<(), String> {
        run(self
            .tool("pg_ctl", &["-m", "immediate", "-w", "stop", "-D"])
            .arg(self.data()))
    }

    /// Starts the server (again) on the same directory and port; waits until it accepts
    /// connections.
    pub fn start_again(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses={}",
            self.port,
            self.dir.display(),
            self.listen
        );
        let log = self.dir.join("log");
        run(self
            .tool("pg_ctl", &["-w", "-t", "30", "-o", &options, "-l"])
            .arg(&log)
            .arg("start")
            .arg("-D")
            .arg(self.data()))
        .map_err(|e| format!("{e}; server log: {}", tail(&log)))
    }

    /// Creates an empty database named `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let port = self.port.to_string();
        run(&mut self.tool(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        ))?;
        Ok(self.url_of(name))
    }

    /// Runs SQL with `psql` against `database`; returns what it printed (unaligned, tuples
    /// only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = self
            .tool(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ],
            )
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster this test process shares: started on first use, stopped and removed by a
/// watcher process once this process has exited, however it exits.
pub fn shared() -> Result<&'static Cluster, String> {
    SHARED
        .get_or_init(|| {
            let pg = TempPostgres::start()?;
            let pid = std::process::id();
            let stop = format!(
                "{} -m immediate stop -D {}",
                pg.bin.join("pg_ctl").display(),
                pg.data().display()
            );
            let stop = if pg.as_postgres {
                format!("runuser -u postgres -- {stop}")
            } else {
                stop
            };
            let script = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; \
                 rm -rf {}",
                pg.dir.display()
            );
            Command::new("setsid")
                .args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting the cluster's watcher: {e}"))?;
            // From here the watcher owns the cluster and its directory.
            // (Forgotten, not dropped: dropping would stop the server and remove the directory.)
            let cluster = pg.cluster.clone();
            std::mem::forget(pg);
            Ok(cluster)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The URL of a new, empty database in the shared cluster ([`shared`]). Errs, saying why, when
/// no cluster can be started here.
pub fn fresh_database() -> Result<String, String> {
    let cluster = shared()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    cluster.create_database(&name)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Waits until `url`'s port accepts TCP connections, up to `within`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_crashes_restarts_and_creates_databases() {
        if let Some(why) = missing() {
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
        let pg = TempPostgres::start().unwrap();
        pg.create_database("one").unwrap();
        assert_eq!(pg.psql("one", "SELECT 1 + 1").unwrap(), "2");
        pg.crash().unwrap();
        assert!(pg.psql("one", "SELECT 1").is_err());
        pg.start_again().unwrap();
        assert_eq!(pg.psql("one", "SELECT 2").unwrap(), "2");
        let url = fresh_database().unwrap();
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
        assert_ne!(fresh_database().unwrap(), url);
    }
}
