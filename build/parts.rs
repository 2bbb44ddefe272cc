// The outside parts some tests need (a Docker engine, python3, shell tools, the contract beside
// the checkout, the right to mount a tmpfs, PostgreSQL's server binaries, network namespaces
// with iptables, RabbitMQ's server, Python's grpcio and pika, schemathesis, Chromium with
// chromedriver, systemd-analyze), probed once when a test crate is built. Included by
// the build scripts of the crates whose tests use them (`include!`), not a module of its own.
//
// A missing part sets `cfg(missing_<part>)`, which tests turn into
// `#[cfg_attr(missing_<part>, ignore = "...")]`, so they show as ignored with their reason. Under
// CI (the `CI` variable set) nothing is marked missing: there a missing part is a failure, and
// the test's own check panics saying what is missing.

use std::path::Path;
use std::process::{Command, Stdio};

const PARTS: &[&str] = &[
    "docker", "python3", "shell_tools", "sqlite3_json", "contract", "tmpfs", "postgres", "netns",
    "grpcio", "rabbitmq", "pika", "schemathesis", "chromium", "systemd_analyze",
];

/// The Python virtualenv with `grpcio`, `grpcio-tools`, `pika` and `schemathesis` that
/// `scripts/test` makes (or the one `DROVER_TEST_VENV` names): the independent gRPC client, AMQP
/// worker and OpenAPI fuzzer of the tests.
fn test_venv() -> std::path::PathBuf {
    match std::env::var_os("DROVER_TEST_VENV") {
        Some(v) => v.into(),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/drover/venv"),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
    })
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn present(part: &str, workspace: &Path) -> bool {
    match part {
        "docker" => succeeds("docker", &["info"]),
        "python3" => succeeds("python3", &["--version"]),
        "systemd_analyze" => succeeds("systemd-analyze", &["--version"]),
        "shell_tools" => ["bash", "curl", "jq"].iter().all(|t| on_path(t)),
        "sqlite3_json" => succeeds("sqlite3", &["-json", ":memory:", "SELECT 1;"]),
        "contract" => workspace
            .join("../shared/contracts/batch-coordinator.md")
            .is_file(),
        "tmpfs" => {
            let dir = std::env::temp_dir().join(format!("drover-tmpfs-probe-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let dir_s = dir.to_string_lossy().into_owned();
            let mounted = succeeds("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &dir_s]);
            if mounted {
                let _ = succeeds("umount", &[&dir_s]);
            }
            let _ = std::fs::remove_dir(&dir);
            mounted
        }
        // A throwaway cluster needs the server binaries (drover-pgtest finds them the same way).
        "postgres" => {
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join("bin/initdb").is_file())
                || on_path("initdb")
        }
        // Namespaces of its own, linked by veth pairs and cut with iptables (needs root).
        "netns" => {
            let ns = format!("drover-probe-{}", std::process::id());
            let made = succeeds("ip", &["netns", "add", &ns]);
            // Link names have at most 15 characters.
            let (x, y) = (format!("dvp{}x", std::process::id()), format!("dvp{}y", std::process::id()));
            let works = made
                && succeeds("ip", &["netns", "exec", &ns, "iptables", "-L", "-n"])
                && succeeds("ip", &["link", "add", &x, "type", "veth", "peer", "name", &y]);
            let _ = succeeds("ip", &["link", "del", &x]);
            if made {
                let _ = succeeds("ip", &["netns", "del", &ns]);
            }
            works
        }
        "grpcio" => {
            let python = test_venv().join("bin/python");
            succeeds(&python.to_string_lossy(), &["-c", "import grpc, grpc_tools"])
        }
        // A private broker needs the server's programs (drover-amqptest finds them the same
        // way); Debian puts them in /usr/sbin, off a non-root PATH, and the real scripts in
        // /usr/lib/rabbitmq/bin.
        "rabbitmq" => {
            on_path("rabbitmq-server")
                || Path::new("/usr/sbin/rabbitmq-server").is_file()
                || Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").is_file()
        }
        // The AMQP client of the priority-router tests' independent worker.
        "pika" => {
            let python = test_venv().join("bin/python");
            succeeds(&python.to_string_lossy(), &["-c", "import pika"])
        }
        // Headless Chromium and its WebDriver, for the dashboard's browser tests.
        "chromium" => on_path("chromium") && on_path("chromedriver"),
        // The fuzzer that checks the server against its own OpenAPI document.
        "schemathesis" => test_venv().join("bin/st").is_file(),
        _ => true,
    }
}

/// Probes `parts` and tells cargo which are missing.
fn probe_parts(parts: &[&str]) {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let workspace = Path::new(&manifest).join("../..");
    let names: Vec<String> = PARTS.iter().map(|p| format!("missing_{p}")).collect();
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=DROVER_TEST_VENV");
    println!("cargo::rerun-if-changed={}", test_venv().display());
    println!("cargo::rerun-if-changed=/var/run/docker.sock");
    println!("cargo::rerun-if-changed={}", workspace.join("../shared").display());
    println!("cargo::rerun-if-changed={}", workspace.join("build/parts.rs").display());
    if std::env::var_os("CI").is_some() {
        return;
    }
    for part in parts {
        if !present(part, &workspace) {
            println!("cargo::rustc-cfg=missing_{part}");
            println!("cargo::warning=tests needing {part} are ignored: it is missing here");
        }
    }
}
