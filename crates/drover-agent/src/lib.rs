//! `drover agent`: the worker daemon of DESIGN.md. It registers with a server (hello),
//! heartbeats with the machine's real figures, claims for its free slots and a small queue
//! ahead, runs each task's command, and reports complete or fail in batches with its next
//! claim, until it is told to stop.
//!
//! Code map:
//! - [`agent`]: the loops (register, heartbeat, exchange, run, drain) and their error
//!   handling: the only module that sequences IO.
//! - [`exec`]: one child process per task: working directory, process group, timeout, kill.
//! - [`spawn`]: starting a process without copying the agent (`clone` + `execve`), the
//!   death signal, `PATH` lookups remembered; waiting and reaping.
//! - [`output`]: pure decisions: the result line, the output tails, the report for an ending.
//! - [`link`]: the clients of the server URLs, failover, and backoff.
//! - [`stats`]: the machine's figures.
//!
//! The agent keeps no state on disk: a task it loses (a crash, a `kill -9`) is taken back by the
//! server when the agent's heartbeats stop, and run again elsewhere. The lifecycle rules (which
//! report counts, when a task is retried) live in the server's core; the agent only says what
//! happened.

pub mod agent;
pub mod exec;
pub mod link;
pub mod output;
pub mod spawn;
pub mod stats;

pub use agent::{AgentConfig, AgentError, Summary, run};
