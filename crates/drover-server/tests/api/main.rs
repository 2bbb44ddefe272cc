//! HTTP-level specification of drover's native API (the batch-coordinator contract and its
//! extensions), against a real server on a loopback port with a real SQLite file.

mod agents;
mod auth;
mod auth_matrix;
mod batch_report;
mod cluster;
mod credentials;
mod drain;
mod errors;
mod fallback;
mod grpc;
mod helpers;
mod jobs;
mod journal;
mod limits;
mod listeners;
mod long_poll;
mod metrics;
mod openapi;
mod placement;
mod priority;
mod priority_amqp;
mod reapers;
mod reliability;
mod runners;
mod shutdown;
mod sinks;
mod tls;
mod ui;
mod workers;
