//! The scenarios of the suite, one module each (burn-down and store ceiling share one). Each
//! runs its own server (or store), measures, stops what it started, and turns its figures into
//! result rows; none decides anything about the others.

pub mod agents;
pub mod burn;
pub mod contract;
pub mod failover;
pub mod grpc_nodes;
pub mod latency;
pub mod nodes;
pub mod placement;
pub mod priority;
pub mod sweep;
