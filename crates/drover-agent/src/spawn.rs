//! Starts a task's process cheaply, and waits for it.
//!
//! Owns the one unsafe sequence of the agent: a `clone(CLONE_VM | CLONE_VFORK)` child that sets
//! up the run (death signal, process group, stdio, working directory, signal state) and calls
//! `execve`, the way glibc's `posix_spawn` does. `fork()` would copy the agent's page tables and
//! then pay a copy-on-write fault for every page either side touches before the `exec`; that was
//! a third of the agent's CPU per task. std's `Command` uses `posix_spawn` only when there is no
//! `pre_exec` hook, and the death signal needs one, hence this module.
//!
//! It also finds the program on `PATH` once per (program, `PATH`) in the agent and remembers
//! it, instead of the child trying every `PATH` entry with `execve` on every run.
//!
//! It must not decide anything about a run's meaning (`exec` and `output` do), and nothing it
//! starts goes through a shell: the program is `execve`d directly.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, OnceLock};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// Variables removed from the agent's environment.
    pub remove: &'a [&'a str],
    /// Variables set on top of the agent's environment, later ones winning.
    pub set: &'a [(&'a str, &'a str)],
    pub cwd: &'a Path,
}

/// A started process: its own process group leader, stdin `/dev/null`, both output streams
/// piped to the agent, SIGKILLed by the kernel if the agent dies. Dropped before it was reaped,
/// it is killed and reaped in the background (like tokio's `kill_on_drop`).
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Starts `spec`. A program that cannot be started (missing, not executable, a bad working
/// directory) is an error here, as with `Command::spawn`.
pub fn spawn(spec: &Spawn<'_>) -> io::Result<Child> {
    let env = Env::build(spec);
    let path_var = env.path_var();
    let (program, cached) = resolve(spec.program, path_var.as_deref(), spec.cwd)?;
    match start(spec, &env, &program) {
        // A remembered program that is gone (or changed) since: look again, once.
        Err(e) if cached && is_lookup_error(&e) => {
            forget(spec.program, path_var.as_deref());
            let (program, _) = resolve(spec.program, path_var.as_deref(), spec.cwd)?;
            start(spec, &env, &program)
        }
        other => other,
    }
}

fn is_lookup_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EACCES | libc::ENOTDIR)
    )
}

impl Child {
    /// The process id while it has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid as u32)
    }

    /// Sends `signal` to the child's process group (its id: it leads its own group). A gone
    /// group is not an error.
    pub fn signal_group(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: killpg only sends a signal; the pid is our unreaped child, so it cannot
            // have been reused for another group.
            unsafe {
                libc::killpg(self.pid, signal);
            }
        }
    }

    /// Waits for the child to exit and reaps it. Cancel-safe; returns the same status again
    /// once reaped.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            let Some(pidfd) = self.pidfd.as_ref() else {
                return Err(io::Error::other("the child has no pidfd"));
            };
            // The pidfd turns readable when the process exits.
            let mut ready = pidfd.readable().await?;
            ready.clear_ready();
        }
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG writes only `status`.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r == self.pid => {
                let status = ExitStatus::from_raw(status);
                self.status = Some(status);
                // Deregistered from the reactor now, not when the run's record is dropped.
                self.pidfd = None;
                Ok(Some(status))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: signals our own unreaped child (so the pid is still ours).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        if let Ok(Some(_)) = self.try_reap() {
            return;
        }
        // Not gone yet: reap it when it is, so it does not stay a zombie.
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        if let (Ok(rt), Some(pidfd)) = (tokio::runtime::Handle::try_current(), pidfd) {
            rt.spawn(async move {
                let mut orphan = Child {
                    pid,
                    pidfd: Some(pidfd),
                    status: None,
                    stdout: None,
                    stderr: None,
                };
                let _ = orphan.wait().await;
            });
        }
    }
}

/// The child's environment as `KEY=VALUE` strings: the agent's own (read once), minus
/// `remove`, with `set` on top.
struct Env {
    entries: Vec<CString>,
}

/// The agent's environment, read once: nothing in the agent changes it while it runs.
fn agent_env() -> &'static [(OsString, CString)] {
    static ENV: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    ENV.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut entry = k.clone().into_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                CString::new(entry).ok().map(|e| (k, e))
            })
            .collect()
    })
}

impl Env {
    fn build(spec: &Spawn<'_>) -> Env {
        let overridden = |key: &OsStr| {
            spec.remove.iter().any(|r| OsStr::new(r) == key)
                || spec.set.iter().any(|(k, _)| OsStr::new(k) == key)
        };
        let mut entries: Vec<CString> = agent_env()
            .iter()
            .filter(|(k, _)| !overridden(k))
            .map(|(_, e)| e.clone())
            .collect();
        for (i, (k, v)) in spec.set.iter().enumerate() {
            // A later setting of the same variable wins.
            if spec.set[i + 1..].iter().any(|(later, _)| later == k) {
                continue;
            }
            if let Ok(e) = CString::new(format!("{k}={v}")) {
                entries.push(e);
            }
        }
        Env { entries }
    }

    /// `PATH` as the child will see it.
    fn path_var(&self) -> Option<OsString> {
        self.entries.iter().find_map(|e| {
            e.as_bytes()
                .strip_prefix(b"PATH=")
                .map(|v| OsStr::from_bytes(v).to_os_string())
        })
    }
}

type LookupKey = (String, Option<OsString>);

fn lookups() -> &'static Mutex<HashMap<LookupKey, CString>> {
    static FOUND: OnceLock<Mutex<HashMap<LookupKey, CString>>> = OnceLock::new();
    FOUND.get_or_init(Default::default)
}

fn forget(program: &str, path_var: Option<&OsStr>) {
    if let Ok(mut found) = lookups().lock() {
        found.remove(&(program.to_string(), path_var.map(OsStr::to_os_string)));
    }
}

/// The path to `execve` for `program`, and whether it came from the remembered lookups.
///
/// As `execvp` does: a name with a `/` is used as it is (relative to the run's working
/// directory, where the child is when it calls `execve`); a bare name is looked up in the
/// child's `PATH` (`/bin:/usr/bin` when unset), the first executable file wins, and if none is
/// found the error is EACCES when some candidate was not executable, else ENOENT. Unlike
/// `execvp`, a file without a `#!` line is not handed to `/bin/sh`.
fn resolve(program: &str, path_var: Option<&OsStr>, cwd: &Path) -> io::Result<(CString, bool)> {
    if program.contains('/') {
        return Ok((c_string(program.as_bytes())?, false));
    }
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let key = (program.to_string(), path_var.map(OsStr::to_os_string));
    if let Some(found) = lookups().lock().ok().and_then(|f| f.get(&key).cloned()) {
        return Ok((found, true));
    }
    let dirs = path_var.unwrap_or(OsStr::new("/bin:/usr/bin"));
    let mut denied = false;
    for dir in dirs.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        // A relative `PATH` entry names a directory under the run's working directory; such a
        // finding is not remembered.
        let relative = candidate.is_relative();
        let on_disk: PathBuf = if relative {
            cwd.join(&candidate)
        } else {
            candidate
        };
        let Ok(meta) = std::fs::metadata(&on_disk) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let c_path = c_string(on_disk.as_os_str().as_bytes())?;
        // SAFETY: access only reads the NUL-terminated path.
        if unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } != 0 {
            denied = true;
            continue;
        }
        if !relative && let Ok(mut found) = lookups().lock() {
            if found.len() >= 256 {
                found.clear();
            }
            found.insert(key, c_path.clone());
        }
        return Ok((c_path, false));
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

/// `/dev/null`, opened once (close-on-exec; the child gets a copy as its stdin).
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let file = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| file.into()).as_raw_fd())
}

/// A pipe whose both ends are close-on-exec (the child's copy of the write end is `dup2`ed onto
/// 1 or 2, which clears the flag there) and whose read end is non-blocking for the reactor.
fn output_pipe() -> io::Result<(pipe::Receiver, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pipe::Receiver::from_owned_fd_unchecked(read)?, write))
}

/// Everything the child reads, prepared by the parent: the child must not allocate, lock or
/// touch anything but these (it shares the agent's memory while the agent's thread waits).
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    agent: libc::pid_t,
    /// The highest signal number (`SIGRTMAX`), looked up by the parent.
    last_signal: libc::c_int,
    /// Written by the child on failure: the errno of the step that failed.
    error: i32,
    /// Written by the child on failure: which step (for the message).
    step: Step,
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    None,
    DeathSignal,
    AgentGone,
    ProcessGroup,
    Stdio,
    WorkDir,
    Exec,
}

/// Bytes of stack for the child. It runs one small function of plain system calls before
/// `execve` replaces it; glibc's `posix_spawn` gives its child 32 KiB plus the argument sizes,
/// which it needs for a `PATH` search that this child does not do.
const CHILD_STACK: usize = 32 * 1024;

fn start(spec: &Spawn<'_>, env: &Env, program: &CStr) -> io::Result<Child> {
    let cwd = c_string(spec.cwd.as_os_str().as_bytes())?;
    let args: Vec<CString> = spec
        .args
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let arg0 = c_string(spec.program.as_bytes())?;
    let mut argv: Vec<*const libc::c_char> = Vec::with_capacity(args.len() + 2);
    argv.push(arg0.as_ptr());
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(env.entries.len() + 1);
    envp.extend(env.entries.iter().map(|e| e.as_ptr()));
    envp.push(std::ptr::null());

    let stdin = dev_null()?;
    let (stdout, stdout_w) = output_pipe()?;
    let (stderr, stderr_w) = output_pipe()?;
    let mut args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin,
        stdout: stdout_w.as_raw_fd(),
        stderr: stderr_w.as_raw_fd(),
        // SAFETY: getpid has no preconditions.
        agent: unsafe { libc::getpid() },
        last_signal: libc::SIGRTMAX(),
        error: 0,
        step: Step::None,
    };

    // Uninitialised on purpose: only the child writes it (a freed block of this size comes
    // back from the allocator on the next spawn, already paged in).
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    // The stack grows down: the child starts at the (16-byte aligned) top.
    let top = {
        let end = stack.as_mut_ptr().wrapping_add(CHILD_STACK) as usize;
        (end & !15) as *mut libc::c_void
    };
    let mut pidfd: libc::c_int = -1;
    let pid = {
        // Every signal stays blocked in this thread while the child shares its memory: a
        // handler of the agent's (tokio's signal pipe, say) must never run on the child's side.
        // The child resets handlers to their defaults before it unblocks.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigfillset/pthread_sigmask only write the sets we own. clone: `top` is the
        // top of a live buffer of CHILD_STACK bytes that outlives the child's use of it (with
        // CLONE_VFORK this thread does not resume until the child has exec'd or exited);
        // `child_main` touches only `args`, which lives on this frame; CLONE_PIDFD writes the
        // new pidfd into `pidfd`.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&mut args as *mut ChildArgs).cast(),
                &mut pidfd as *mut libc::c_int,
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        }
    };
    drop(stack);
    // SAFETY: CLONE_PIDFD gave us this new descriptor (close-on-exec), owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child has exec'd or exited by now: read what it left.
    // SAFETY: the child no longer runs in our memory; a volatile read because the compiler
    // cannot see that `clone` let another task write these fields.
    let (step, error) = unsafe {
        (
            std::ptr::read_volatile(&args.step),
            std::ptr::read_volatile(&args.error),
        )
    };
    drop((stdout_w, stderr_w));
    let mut child = Child {
        pid,
        pidfd: None,
        status: None,
        stdout: Some(stdout),
        stderr: Some(stderr),
    };
    if step != Step::None {
        // It exited at once with 127: reap it, then say why it did not start.
        let mut status = 0;
        // SAFETY: waitpid on our own child, which has exited or is exiting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        child.status = Some(ExitStatus::from_raw(status));
        let e = io::Error::from_raw_os_error(error);
        return Err(match step {
            Step::Exec => e,
            Step::AgentGone => io::Error::other("the agent exited while starting the task"),
            Step::WorkDir => {
                io::Error::new(e.kind(), format!("entering the working directory: {e}"))
            }
            other => io::Error::new(e.kind(), format!("{other:?}: {e}")),
        });
    }
    // SAFETY: the `OwnedFd` keeps the descriptor open, and the same, for the `AsyncFd`'s life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    child.pidfd = Some(pidfd);
    Ok(child)
}

/// The child, between `clone` and `execve`. It runs on its own small stack but in the agent's
/// memory, with the calling thread suspended (CLONE_VFORK) and every signal blocked. So it only
/// makes system calls that are async-signal-safe and allocation-free, reads the prepared
/// `ChildArgs`, writes its two failure fields, and ends in `execve` or `_exit`, never returning
/// into Rust code of the agent. (`errno` is the suspended thread's, which reads it only on a
/// failed `clone`.)
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: see above; `arg` points at the parent's live `ChildArgs`.
    unsafe {
        let args = &mut *(arg as *mut ChildArgs);
        // A run dies with its agent, however the agent dies (`kill -9` included): the kernel
        // sends SIGKILL when the thread that started it exits. The agent starts runs from its
        // runtime's threads, which live as long as the agent.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(args, Step::DeathSignal);
        }
        // The agent may have died before the request above took effect.
        if libc::getppid() != args.agent {
            fail(args, Step::AgentGone);
        }
        // Its own process group, so a timeout or stop kills all it started.
        if libc::setpgid(0, 0) != 0 {
            fail(args, Step::ProcessGroup);
        }
        for (from, to) in [(args.stdin, 0), (args.stdout, 1), (args.stderr, 2)] {
            let ok = if from == to {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(from, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            };
            if !ok {
                fail(args, Step::Stdio);
            }
        }
        if libc::chdir(args.cwd) != 0 {
            fail(args, Step::WorkDir);
        }
        // Signal state as std's `Command` leaves it: handlers back to their defaults (exec would
        // do that too, but a signal arriving before it must not run the agent's handler here),
        // ignored signals stay ignored except SIGPIPE (which Rust programs ignore), and no
        // signal blocked.
        for sig in 1..=args.last_signal {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut action) != 0 {
                continue;
            }
            let handler = action.sa_sigaction;
            if handler == libc::SIG_DFL || (handler == libc::SIG_IGN && sig != libc::SIGPIPE) {
                continue;
            }
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        fail(args, Step::Exec)
    }
}

/// The child's way out when a step fails: leaves the errno and the step for the parent, exits.
///
/// # Safety
/// Only from `child_main`.
unsafe fn fail(args: &mut ChildArgs, step: Step) -> ! {
    // SAFETY: plain writes into the parent's `ChildArgs`, then the exit system call.
    unsafe {
        std::ptr::write_volatile(&mut args.error, *libc::__errno_location());
        std::ptr::write_volatile(&mut args.step, step);
        libc::_exit(127)
    }
}
