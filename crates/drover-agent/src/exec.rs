//! Runs one task's command as a child process and reports how it ended.
//!
//! The child gets its own working directory, its own process group (so a timeout or a stop kills
//! everything it started, not just the first process), the agent's environment minus the agent's
//! secrets plus the job's variables and `DROVER_*` facts, and no stdin. Both output streams are
//! read as they come, keeping only their tails and the result line, so a chatty task costs
//! bounded memory. The kernel kills it if the agent dies (`spawn` starts it). This module
//! decides nothing about reports: `output::report` does.

use crate::output::{Ending, Finished, ResultScanner, Tail};
use crate::spawn::{Child, Spawn, spawn};
use drover_core::run::Rendered;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Variables the agent reads for itself that a task must not see.
pub const SECRET_VARIABLES: [&str; 3] =
    ["DROVER_AGENT_KEY", "DROVER_API_KEY", "ORHESTRA_AGENT_KEY"];

/// One run to perform.
#[derive(Debug, Clone)]
pub struct Run {
    pub command: Rendered,
    /// Created before the start; the child's working directory.
    pub work_dir: PathBuf,
    /// `DROVER_*` facts about the task.
    pub facts: Vec<(String, String)>,
    pub timeout: Duration,
    /// The part of `timeout` already spent before the start (the task's lease runs from its
    /// claim, and it may have waited in the agent's queue): the run gets what is left.
    pub spent: Duration,
    /// Between SIGTERM and SIGKILL when the agent ends a run.
    pub kill_grace: Duration,
    /// Bytes of each stream kept.
    pub tail_bytes: usize,
}

/// Runs `run` to its end: exit, timeout, or `stop` (the agent giving up on it).
pub async fn execute(run: Run, stop: CancellationToken) -> Finished {
    let started = Instant::now();
    let not_started = |why: String| Finished {
        ending: Ending::NotStarted(why),
        elapsed: started.elapsed(),
        stdout: Tail::new(run.tail_bytes),
        stderr: Tail::new(run.tail_bytes),
        result: None,
    };
    if let Err(e) = make_work_dir(&run.work_dir).await {
        return not_started(format!(
            "cannot create the working directory {}: {e}",
            run.work_dir.display()
        ));
    }
    let env: Vec<(&str, &str)> = run
        .command
        .env
        .iter()
        .chain(run.facts.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let spec = Spawn {
        program: &run.command.program,
        args: &run.command.args,
        remove: &SECRET_VARIABLES,
        set: &env,
        cwd: &run.work_dir,
    };
    let mut child = match spawn(&spec) {
        Ok(child) => child,
        Err(e) => return not_started(format!("`{}`: {e}", run.command.program)),
    };
    // Both streams are read inside this future, beside the wait: no task of their own, so a
    // run costs the runtime one task and no wake-ups but its own (its exit, its output).
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let readers = std::pin::pin!(async {
        tokio::join!(
            read_stream(
                stdout,
                Tail::new(run.tail_bytes),
                Some(ResultScanner::default())
            ),
            read_stream(stderr, Tail::new(run.tail_bytes), None),
        )
    });
    let mut readers = Readers::new(readers);

    let deadline = tokio::time::sleep(run.timeout.saturating_sub(run.spent));
    tokio::pin!(deadline);
    let ending = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(status) => ending_of(status),
                Err(e) => Ending::NotStarted(format!("waiting for the process: {e}")),
            },
            // The streams are drained while the run goes on, so a chatty child never blocks
            // on a full pipe; they usually end with it.
            () = readers.progress() => {}
            _ = &mut deadline => {
                terminate(&mut child, &mut readers, run.kill_grace).await;
                break Ending::TimedOut(run.timeout);
            }
            _ = stop.cancelled() => {
                terminate(&mut child, &mut readers, run.kill_grace).await;
                break Ending::Stopped;
            }
        }
    };
    // Whatever the first process left running in its group goes too: it would hold the output
    // pipes open and outlive the task's lease.
    kill_group(&child, libc::SIGKILL);
    let elapsed = started.elapsed();

    let ((stdout, result), (stderr, _)) = readers.collect(run.tail_bytes).await;
    Finished {
        ending,
        elapsed,
        stdout,
        stderr,
        result,
    }
}

/// Creates the run's working directory: an empty one that an earlier run left behind, renamed
/// (see [`remove_work_dir`]), or a new one. The agent made their parent at start, so this is one
/// system call on the runtime's thread in the usual case (a hop to the blocking pool costs more);
/// a missing parent (removed by hand) is made again on the blocking pool.
async fn make_work_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(spare) = spares::take(dir) {
        if std::fs::rename(&spare, dir).is_ok() {
            return Ok(());
        }
        let _ = std::fs::remove_dir(&spare);
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => tokio::fs::create_dir_all(dir).await,
    }
}

/// Removes a run's working directory. One the run left empty (the usual case for short tasks)
/// is kept, renamed, for a later run: on ext4 a rename costs a small fraction of the `mkdir` and
/// `rmdir` it saves (inode and block allocation, journal). Anything else goes, the whole tree
/// on the blocking pool.
pub async fn remove_work_dir(dir: &Path) {
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if empty && spares::keep(dir) {
        return;
    }
    if std::fs::remove_dir(dir).is_err() {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}

/// Removes the spare working directories under `root` (at the agent's stop).
pub fn remove_spare_work_dirs(root: &Path) {
    spares::clear(root);
}

/// Removes the empty spares that an agent killed before its stop left under `root` (at start).
/// A spare of another agent still running there may go too; that agent then makes a new
/// directory, as it would without spares.
pub fn remove_leftover_spares(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".spare-") {
            // Only an empty directory is removed: a spare is never anything else.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Empty working directories kept for reuse: `.spare-<pid>-<n>` beside the runs' directories.
mod spares {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Enough for a busy agent's slots; more finished runs than this at once just rmdir.
    const MAX: usize = 64;
    static SPARES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);

    /// A spare beside `dir`, if any.
    pub(super) fn take(dir: &Path) -> Option<PathBuf> {
        let parent = dir.parent()?;
        let mut spares = SPARES.lock().ok()?;
        let i = spares.iter().rposition(|s| s.parent() == Some(parent))?;
        Some(spares.swap_remove(i))
    }

    /// Renames the empty `dir` to a spare; false if it was not kept.
    pub(super) fn keep(dir: &Path) -> bool {
        let Some(parent) = dir.parent() else {
            return false;
        };
        let Ok(mut spares) = SPARES.lock() else {
            return false;
        };
        if spares.len() >= MAX {
            return false;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let spare = parent.join(format!(".spare-{}-{n}", std::process::id()));
        if std::fs::rename(dir, &spare).is_err() {
            return false;
        }
        spares.push(spare);
        true
    }

    pub(super) fn clear(root: &Path) {
        let Ok(mut spares) = SPARES.lock() else {
            return;
        };
        spares.retain(|s| {
            if s.parent() == Some(root) {
                let _ = std::fs::remove_dir(s);
                false
            } else {
                true
            }
        });
    }
}

type StreamEnd = (Tail, Option<serde_json::Map<String, serde_json::Value>>);

/// The output readers of one run, polled by the run's own future (not tasks of their own):
/// the reading future until both streams end, then what they read.
struct Readers<'a, F: Future<Output = (StreamEnd, StreamEnd)>> {
    reading: Pin<&'a mut F>,
    ends: Option<(StreamEnd, StreamEnd)>,
}

impl<'a, F: Future<Output = (StreamEnd, StreamEnd)>> Readers<'a, F> {
    fn new(reading: Pin<&'a mut F>) -> Self {
        Readers {
            reading,
            ends: None,
        }
    }

    /// Reads on; resolves when both streams have ended, and never after that. Cancel-safe:
    /// the readers live in `self`, so a `select!` that drops this future loses nothing.
    async fn progress(&mut self) {
        if self.ends.is_some() {
            return std::future::pending().await;
        }
        self.ends = Some(self.reading.as_mut().await);
    }

    /// Both streams' ends, waiting briefly for them: a pipe still held open by an escaped
    /// grandchild must not keep the report back (its output is then given up).
    async fn collect(self, tail_bytes: usize) -> (StreamEnd, StreamEnd) {
        match self.ends {
            Some(ends) => ends,
            None => tokio::time::timeout(Duration::from_secs(2), self.reading)
                .await
                .unwrap_or_else(|_| ((Tail::new(tail_bytes), None), (Tail::new(tail_bytes), None))),
        }
    }
}

async fn read_stream(
    stream: Option<impl AsyncRead + Unpin>,
    mut tail: Tail,
    mut scanner: Option<ResultScanner>,
) -> StreamEnd {
    let Some(mut stream) = stream else {
        return (tail, None);
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.push(&buf[..n]);
                if let Some(s) = scanner.as_mut() {
                    s.feed(&buf[..n]);
                }
            }
        }
    }
    (tail, scanner.and_then(ResultScanner::finish))
}

fn ending_of(status: std::process::ExitStatus) -> Ending {
    if let Some(code) = status.code() {
        return Ending::Exited(code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Ending::Signalled(sig);
        }
    }
    Ending::NotStarted(format!("ended without an exit code: {status}"))
}

/// SIGTERM to the group, then SIGKILL if it has not exited within `grace`. Its output is still
/// read meanwhile: a child that writes much as it shuts down must not block on a full pipe.
async fn terminate<F: Future<Output = (StreamEnd, StreamEnd)>>(
    child: &mut Child,
    readers: &mut Readers<'_, F>,
    grace: Duration,
) {
    kill_group(child, libc::SIGTERM);
    let exited = tokio::time::timeout(grace, async {
        loop {
            tokio::select! {
                _ = child.wait() => return,
                () = readers.progress() => {}
            }
        }
    })
    .await;
    if exited.is_err() {
        kill_group(child, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Signals the child's process group (its id, since it was started as a group leader).
fn kill_group(child: &Child, signal: i32) {
    child.signal_group(signal);
}
