//! The bench command cannot rot: `bench/run --smoke` runs every scenario end to end at tiny
//! sizes against a real (debug) `drover server` and must produce its table with a row for every
//! scenario and a figure in each. Speed is not judged here: no figure is compared with anything.

use std::path::{Path, PathBuf};
use std::process::Command;

const SCENARIOS: [&str; 10] = [
    "burn-down",
    "store-ceiling",
    "contract-exact",
    "agents",
    "add-to-start",
    "sweep-creation",
    "nodes",
    "placement",
    "grpc-nodes",
    "priority-router",
];

/// The `drover` binary of the same build as this bench binary, built if it is missing (a
/// workspace `cargo test` builds it anyway; `cargo test -p drover-bench` alone does not).
fn drover_binary(bench: &Path) -> PathBuf {
    let dir = bench.parent().expect("the bench binary is in a directory");
    let drover = dir.join("drover");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", "drover"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build -p drover");
    assert!(status.success(), "cargo build -p drover failed");
    assert!(drover.exists(), "no drover binary at {}", drover.display());
    drover
}

#[test]
fn the_smoke_run_produces_a_row_with_a_figure_for_every_scenario() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_drover-bench"));
    let drover = drover_binary(&bench);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(root.join("bench/run"))
        .arg("--smoke")
        .arg("--drover")
        .arg(&drover)
        .arg("--bench")
        .arg(&bench)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running bench/run");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench/run --smoke failed:\n{stdout}\n{stderr}"
    );

    // The same report on stdout and in the results directory.
    let files: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one report file: {files:?}");
    let report = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(report, stdout);
    assert!(report.contains("`nproc` = "), "the machine is recorded");
    assert!(report.contains("| scenario | command | figure | target | met/missed |"));

    let rows: Vec<Vec<&str>> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("| ---"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    for scenario in SCENARIOS {
        assert!(
            rows.iter().any(|r| r[0] == scenario),
            "no row for {scenario}:\n{report}"
        );
    }
    for row in &rows {
        assert_eq!(row.len(), 5, "a row of five cells: {row:?}");
        let (figure, verdict) = (row[2], row[4]);
        assert_ne!(
            verdict, "**failed**",
            "a scenario failed: {row:?}\n{stderr}"
        );
        if verdict != "not run" {
            // The figure's number comes within its first words ("p99 7.75 ms", "server RSS
            // 25 MB", "3,856 tasks/s").
            let number = figure
                .split_whitespace()
                .take(5)
                .find_map(|w| w.replace(',', "").parse::<f64>().ok());
            assert!(
                number.is_some_and(|v| v.is_finite() && v >= 0.0),
                "the figure is a number: {row:?}"
            );
            assert!(
                !figure.contains("NaN") && !figure.contains("inf"),
                "a sane figure: {row:?}"
            );
        }
    }
}

/// On PostgreSQL, contract-exact also runs the same clients against its floor (`pg_floor.rs`:
/// one statement per call, nothing else recorded); both must drain the sweep and give a figure.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[test]
fn on_postgres_contract_exact_and_its_floor_both_drain_the_sweep() {
    if let Some(why) = drover_pgtest::missing() {
        panic!("{why}");
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_drover-bench"));
    let drover = drover_binary(&bench);
    let run = Command::new(&bench)
        .args([
            "suite",
            "--smoke",
            "--only",
            "contract-exact",
            "--postgres",
            "--drover",
        ])
        .arg(&drover)
        .output()
        .expect("running drover-bench suite");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the suite failed:\n{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    let figure = |r: &serde_json::Value| r["figure"].as_str().unwrap_or_default().to_string();
    let floors = rows
        .iter()
        .filter(|r| figure(r).starts_with("floor "))
        .count();
    assert_eq!(
        rows.len(),
        4,
        "drover and the floor at 16 and 64 clients: {rows:?}"
    );
    assert_eq!(
        floors, 2,
        "a floor row per client count: {rows:?}\n{stderr}"
    );
    for row in &rows {
        assert_ne!(row["verdict"], "failed", "{row}\n{stderr}");
        assert!(
            row["value"]
                .as_f64()
                .is_some_and(|v| v.is_finite() && v > 0.0),
            "a figure of tasks/s: {row}"
        );
        assert!(
            figure(row).contains("µs of CPU a task"),
            "the machine's CPU is shown: {row}"
        );
    }
}
