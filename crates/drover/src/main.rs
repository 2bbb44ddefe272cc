//! The `drover` binary: parses the command line and hands over to the library crates. It holds
//! configuration plumbing and process concerns (logging, signals) only; every behaviour lives in
//! a library.

mod server_cmd;

use clap::{Parser, Subcommand};

/// drover: a self-hosted coordinator for distributed work.
///
/// Start a server, point worker machines at it, submit parameter sweeps, and follow them to
/// their results. Run `drover <command> --help` for the details of each command.
#[derive(Parser)]
#[command(name = "drover", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: HTTP API, agent endpoints and background reapers on one port.
    Server(Box<server_cmd::ServerArgs>),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Server(args) => server_cmd::run(*args),
    }
}
