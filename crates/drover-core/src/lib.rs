//! drover's domain: the entities of DESIGN.md section 1, the task lifecycle as pure functions,
//! sweep expansion, and the placement of work and data on nodes (weighted scheduling,
//! consistent hashing).
//!
//! This crate owns every rule about *what* may happen to a task or a job: which report is
//! accepted, when a failure is retried, how a job's status follows from its task counts, how a
//! sweep becomes tasks. It must not do IO, spawn, or know about SQL or HTTP: stores and
//! surfaces ask it for decisions and carry them out.

pub mod cluster;
pub mod credential;
pub mod event;
pub mod health;
pub mod ids;
pub mod journal;
pub mod lifecycle;
pub mod model;
pub mod node;
pub mod objective;
pub mod placement;
pub mod priority;
pub mod replicas;
pub mod rules;
pub mod run;
pub mod runner;
pub mod scheduling;
pub mod sink_routing;
pub mod sweep;
pub mod text;
pub mod time;

#[cfg(test)]
mod test_support;

pub use event::Event;
pub use lifecycle::{AttemptOutcome, AttemptRecord, Decision, ReportKind, ReportOutcome};
pub use model::*;
pub use time::Timestamp;
