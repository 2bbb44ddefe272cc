//! `drover agent`: flags and environment into an agent configuration, then the agent library.

use clap::Args;

pub const EXAMPLES: &str = "";

#[derive(Args)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
