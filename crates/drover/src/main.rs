//! The `drover` binary: parses the command line and hands each subcommand to `drover-cli`. It
//! holds the top-level `Cli` and the dispatch only; settings, start-up and the client commands
//! are library code, where their tests reach them without spawning a process.

use clap::{CommandFactory, Parser, Subcommand};
use drover_cli::{agent, client, completions, server, settings};

// Every request allocates (headers, JSON, rows): mimalloc's thread-local free lists cost less
// per allocation than glibc's malloc, which took about 8 % of the server's CPU per heartbeat.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version and the commit it was built from (`unknown` outside a git checkout; a `+` after
/// the commit when the work tree had changes).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DROVER_COMMIT"),
    ")"
);

/// drover: a self-hosted coordinator for distributed work.
///
/// Start a server, point worker machines at it, submit parameter sweeps, and follow them to
/// their results. Run `drover <command> --help` for the details of each command.
#[derive(Parser)]
#[command(name = "drover", version = VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const SERVER_EXAMPLES: &str = "\
Examples:
  drover server                                  # 127.0.0.1:8080, state in ./data/drover.db
  drover server --port 9000 --agent-key \"$KEY\"   # agents must send X-Orhestra-Key: $KEY
  drover server --bind 0.0.0.0 --agent-key \"$AK\" --api-key \"$PK\"
  RUST_LOG=debug drover server --log-format json # request logs as JSON lines
  drover server --runner-driver docker --runner-image my-runner:latest   # a container per session
  drover server --runner-driver process --runner-command \"python3 runner.py\"";

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: HTTP API, agent endpoints and background reapers on one port.
    ///
    /// drover serves the batch-coordinator API (`/api/v1` for clients, `/internal/v1` for
    /// agents) on one port, keeps its state in an embedded SQLite file, and reaps stuck tasks
    /// and silent spots in the background. Every option can also be set by its environment
    /// variable, or in a TOML file given with --config whose keys are the long option names
    /// (`port = 9000`, `spot-timeout = "10s"`). Flags win over the environment, which wins over
    /// the file.
    #[command(after_long_help = SERVER_EXAMPLES)]
    Server(Box<settings::ServerArgs>),

    /// Run a worker: register with the server, claim tasks, run their commands, report.
    #[command(after_long_help = agent::EXAMPLES)]
    Agent(Box<agent::AgentArgs>),

    /// Print drover's version and the commit it was built from.
    Version,

    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// The script completes drover's commands, their options and the values those options
    /// take. Write it where your shell loads completions from (examples below), or source it
    /// for the current shell only.
    #[command(after_long_help = completions::EXAMPLES)]
    Completions(completions::CompletionsArgs),

    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let done = match Cli::parse().command {
        Command::Server(args) => server::run(*args),
        Command::Agent(args) => agent::run(*args),
        Command::Version => {
            println!("drover {VERSION}");
            Ok(())
        }
        Command::Completions(args) => completions::print(args, Cli::command(), "drover"),
        Command::Client(command) => client::run(command),
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line, as the client commands print theirs: a
            // refused setting is the user's to fix, not a crash, so no backtrace even with
            // RUST_BACKTRACE set (a panic still prints one).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
