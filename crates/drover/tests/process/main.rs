//! End-to-end tests that run the real `drover` binary as a child process and talk to it over
//! loopback HTTP, with shell tools, and with `sqlite3`, as an operator would.
//!
//! Each module reads as a specification of one area; `helpers` is the harness.

mod helpers;
mod netns;
mod packaging;

mod agents;
mod cli;
mod client_cli;
mod client_overview;
mod cluster;
mod disk_full;
mod durability;
mod failover;
mod group_commit;
mod grpc;
mod journal_cli;
mod readme;
mod reapers_in_process;
mod replicas_postgres;
mod runners_docker;
mod shutdown;
mod smoke_script;
mod tls;
mod torture;
mod troubleshooting_sql;
