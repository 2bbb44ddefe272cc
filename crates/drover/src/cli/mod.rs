//! The client commands (`submit`, `job`, `nodes`): read input, call the typed client, print.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClientCommand {}

pub fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {}
}
