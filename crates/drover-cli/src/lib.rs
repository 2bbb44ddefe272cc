//! drover's command line as a library: the client commands (`status`, `submit`, `job ...`,
//! `task`, `nodes`, `runners`, ...), the shell completions, the settings of `drover server` and
//! `drover agent`, and their start-up (logging, runtime, signals). The `drover` binary only
//! parses the command line and dispatches here.
//!
//! This crate is presentation and configuration plumbing. It decides nothing the server or the
//! agent does not decide again: settings are merged and shaped here, and checked where they are
//! used; a job file is read here, and the server validates the request once more.

pub mod agent;
pub mod client;
pub mod completions;
pub mod process;
pub mod server;
pub mod settings;
pub mod span;
pub mod suggest;
