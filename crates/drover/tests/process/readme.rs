//! The README's quick start, run as written: the `sh` blocks between its quick-start markers go
//! to bash from the repository's root, with the built binary on `PATH`, a free port (the
//! commands themselves name none: `DROVER_PORT` and `DROVER_SERVER` point them at it) and every
//! line but the build. A README edit that breaks the walk-through fails here.

use crate::helpers::{BIN, free_port, missing_part, missing_tool, run_to_exit};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BEGIN: &str = "<!-- quick-start:";
const END: &str = "<!-- quick-start: end -->";

/// The lines of the fenced `sh` blocks between the markers, without the build lines (the test
/// runs the binary cargo built for it).
fn quick_start(readme: &str) -> Vec<String> {
    let start = readme
        .find(BEGIN)
        .expect("the README marks its quick start");
    let end = readme
        .find(END)
        .expect("the README marks the end of its quick start");
    assert!(start < end, "the quick start's markers are out of order");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim_end() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            l if in_block && !l.starts_with("cargo build") && !l.starts_with("export PATH=") => {
                lines.push(l.to_string())
            }
            _ => {}
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("drover server")),
        "the quick start starts no server: {lines:?}"
    );
    lines
}

#[cfg_attr(
    any(missing_shell_tools, missing_python3),
    ignore = "needs bash, curl, jq and python3, missing where this was built"
)]
#[test]
fn the_readmes_quick_start_runs_as_written_and_completes_the_sweep() {
    if let Some(reason) = missing_tool(&["bash", "jq", "python3"]) {
        missing_part("the README's quick start", &reason);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = quick_start(&readme);
    let script = format!(
        "set -euo pipefail\n\
         # The walk-through leaves its server and agents running; the test stops them.\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{}\n",
        steps.join("\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_port();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(&root);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("DROVER_") || key.starts_with("ORHESTRA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PATH", path)
        .env("DROVER_PORT", port.to_string())
        .env("DROVER_SERVER", format!("http://127.0.0.1:{port}"))
        // Tests run side by side: no gRPC listener on the shared default port.
        .env("DROVER_GRPC_PORT", "0")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let run = run_to_exit(cmd, dir.path(), "quick-start", Duration::from_secs(180));
    assert!(run.status.success(), "the quick start failed:\n{run}");
    for expected in ["COMPLETED", "ALGORITHM", "FOPT", "UP"] {
        assert!(run.stdout.contains(expected), "no {expected:?}:\n{run}");
    }
    let up = run.stdout.lines().filter(|l| l.contains(" UP ")).count();
    assert!(up >= 2, "two agents UP in `drover nodes`:\n{run}");
}

#[test]
fn the_quick_start_is_read_from_its_sh_blocks_without_the_build() {
    let readme = "intro\n<!-- quick-start: run -->\n```sh\ncargo build --release\n\
                  export PATH=x\ndrover server &\n```\ntext\n```\nout\n```\n```sh\necho b\n```\n\
                  <!-- quick-start: end -->\n```sh\nnot this\n```\n";
    assert_eq!(quick_start(readme), ["drover server &", "echo b"]);
}

/// docs/job-files.md shows the example job file as it is, not an excerpt that drifts from it.
#[test]
fn the_job_file_page_shows_the_example_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let page = std::fs::read_to_string(root.join("docs/job-files.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/sweep/sweep.toml")).unwrap();
    assert!(
        page.contains(&format!("```toml\n{example}```")),
        "docs/job-files.md no longer shows examples/sweep/sweep.toml unchanged"
    );
}
