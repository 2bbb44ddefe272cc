//! The `table` subcommand: one Markdown report from the suite's rows (JSON lines), the peers'
//! output and the machine description: the command, the machine, then one table of scenario,
//! command, figure, target and met/missed. It adds the peers' rows and the one verdict that
//! needs them (burn-down ≥ 10× the fastest peer). It reads files and prints; it measures
//! nothing.

use crate::stats::thousands;
use crate::suite::{Goal, Row, Verdict};
use anyhow::Context;
use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;

const PEER_RATIO: &str = "burn-down vs fastest peer";

#[derive(Debug, Args)]
pub struct TableArgs {
    /// The suite's rows (`drover-bench suite --out FILE`).
    #[arg(long, value_name = "FILE")]
    pub rows: PathBuf,
    /// The peers' output: blocks that start `## LABEL | COMMAND`, as `bench/run` writes them.
    #[arg(long, value_name = "FILE")]
    pub peers: Option<PathBuf>,
    /// Why the peers did not run, when they did not.
    #[arg(long, value_name = "TEXT")]
    pub peers_skipped: Option<String>,
    /// Text put under the title as it is (machine, date, build).
    #[arg(long, value_name = "FILE")]
    pub machine: Option<PathBuf>,
    /// The command that made the report.
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
}

/// A peer's run: its label, command and `process_per_s` (or why there is none).
#[derive(Debug, PartialEq)]
pub struct PeerRun {
    pub label: String,
    pub command: String,
    pub rate: Result<f64, String>,
}

/// Reads the blocks of the peers' output.
pub fn parse_peers(text: &str) -> Vec<PeerRun> {
    let mut runs: Vec<PeerRun> = Vec::new();
    let mut last_line = String::new();
    let close = |runs: &mut Vec<PeerRun>, last: &str| {
        if let Some(r) = runs.last_mut()
            && r.rate == Err(String::new())
        {
            r.rate = Err(if last.is_empty() {
                "no output".into()
            } else {
                format!("no figure; last line: {last}")
            });
        }
    };
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("## ") {
            close(&mut runs, &last_line);
            last_line.clear();
            let (label, command) = head.split_once(" | ").unwrap_or((head, ""));
            runs.push(PeerRun {
                label: label.trim().to_string(),
                command: command.trim().to_string(),
                rate: Err(String::new()),
            });
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        last_line = line.trim().to_string();
        if let Some(r) = runs.last_mut()
            && let Some(v) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("process_per_s="))
                .and_then(|v| v.parse::<f64>().ok())
            && line.contains("enqueue_per_s=")
        {
            r.rate = Ok(v);
        }
    }
    close(&mut runs, &last_line);
    runs
}

pub fn render(
    rows: &[Row],
    peers: &[PeerRun],
    peers_skipped: Option<&str>,
    machine: &str,
    command: Option<&str>,
) -> String {
    let mut all: Vec<Row> = Vec::new();
    let burn = rows
        .iter()
        .find(|r| r.scenario == "burn-down" && r.value.is_some())
        .and_then(|r| r.value);
    let fastest = peers
        .iter()
        .filter_map(|p| p.rate.as_ref().ok().map(|r| (*r, p.label.as_str())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    for (i, r) in rows.iter().enumerate() {
        all.push(r.clone());
        // The peer comparison goes right under the (first) burn-down rows.
        let last_of_burn =
            r.scenario == "burn-down" && rows.get(i + 1).is_none_or(|x| x.scenario != "burn-down");
        if last_of_burn && !all.iter().any(|x| x.scenario == PEER_RATIO) {
            all.push(peer_ratio(r, burn, fastest, peers_skipped));
        }
    }
    for p in peers {
        all.push(Row {
            scenario: format!("peer: {}", p.label),
            command: p.command.clone(),
            figure: match &p.rate {
                Ok(v) => format!("{} tasks/s", thousands(*v)),
                Err(e) => format!("failed: {e}"),
            },
            value: p.rate.as_ref().ok().copied(),
            target: "reference".into(),
            verdict: if p.rate.is_ok() {
                Verdict::Reported
            } else {
                Verdict::Failed
            },
        });
    }

    let mut out = String::new();
    let _ = writeln!(out, "# drover throughput suite\n");
    if let Some(c) = command {
        let _ = writeln!(out, "Command: `{c}`\n");
    }
    if !machine.trim().is_empty() {
        let _ = writeln!(out, "{}\n", machine.trim_end());
    }
    let _ = writeln!(out, "| scenario | command | figure | target | met/missed |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for r in &all {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} |",
            cell(&r.scenario),
            r.command.replace('|', "\\|").replace('`', "'"),
            cell(&r.figure),
            cell(&r.target),
            r.verdict.text()
        );
    }
    let count = |v: Verdict| all.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "\n{} met, {} missed, {} failed, {} not run, {} reported.",
        count(Verdict::Met),
        count(Verdict::Missed),
        count(Verdict::Failed),
        count(Verdict::Skipped),
        count(Verdict::Reported)
    );
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The burn-down against the fastest peer of the same run.
fn peer_ratio(
    burn_row: &Row,
    burn: Option<f64>,
    fastest: Option<(f64, &str)>,
    skipped: Option<&str>,
) -> Row {
    let target = "≥ 10× the fastest peer";
    let mut row = Row {
        scenario: PEER_RATIO.into(),
        command: burn_row.command.clone(),
        figure: String::new(),
        value: None,
        target: target.into(),
        verdict: Verdict::Skipped,
    };
    match (burn, fastest) {
        (Some(b), Some((p, label))) => {
            row.figure = format!(
                "{:.1}× ({} / {} tasks/s of {label})",
                b / p,
                thousands(b),
                thousands(p)
            );
            row.value = Some(b / p);
            row.verdict = Goal::AtLeast(10.0).verdict(b / p);
        }
        (None, _) => {
            row.figure = "no burn-down figure".into();
            row.verdict = Verdict::Failed;
        }
        (Some(_), None) => {
            row.figure = format!(
                "peers not run ({})",
                skipped.unwrap_or("no peer produced a figure")
            );
        }
    }
    row
}

pub fn run(a: TableArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.rows)
        .with_context(|| format!("reading {}", a.rows.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        rows.push(
            serde_json::from_str::<Row>(line)
                .with_context(|| format!("{} line {}", a.rows.display(), i + 1))?,
        );
    }
    let peers = match &a.peers {
        Some(p) => parse_peers(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => Vec::new(),
    };
    let machine = match &a.machine {
        Some(m) => {
            std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?
        }
        None => String::new(),
    };
    print!(
        "{}",
        render(
            &rows,
            &peers,
            a.peers_skipped.as_deref(),
            &machine,
            a.command.as_deref()
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, value: Option<f64>, verdict: Verdict) -> Row {
        Row {
            scenario: scenario.into(),
            command: format!("drover-bench suite --only {scenario}"),
            figure: "x".into(),
            value,
            target: "t".into(),
            verdict,
        }
    }

    #[test]
    fn peer_blocks_give_their_figures_or_why_not() {
        let text = "\
## pgqueuer e2e | timeout 420 .venv/bin/python bench_pgqueuer.py --n 20000
pgqueuer mode=e2e enqueue=batch n=20000
pgqueuer enqueue_per_s=45423 process_per_s=4172
## celery | bench_celery.py
Traceback (most recent call last):
ConnectionError: refused
## rq | bench_rq.py
";
        let runs = parse_peers(text);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].label, "pgqueuer e2e");
        assert_eq!(runs[0].rate, Ok(4172.0));
        assert_eq!(
            runs[1].rate,
            Err("no figure; last line: ConnectionError: refused".into())
        );
        assert_eq!(runs[2].rate, Err("no output".into()));
    }

    #[test]
    fn the_burn_down_is_judged_against_the_fastest_peer() {
        let rows = vec![
            row("burn-down", Some(60_000.0), Verdict::Met),
            row("burn-down", Some(0.01), Verdict::Met),
            row("nodes", Some(1.0), Verdict::Met),
        ];
        let peers = parse_peers(
            "## a | x\na enqueue_per_s=1 process_per_s=4000\n## b | y\nb enqueue_per_s=1 process_per_s=7000\n",
        );
        let md = render(&rows, &peers, None, "Machine: test", Some("bench/run"));
        let ratio = md
            .lines()
            .find(|l| l.starts_with("| burn-down vs fastest peer"))
            .unwrap();
        assert!(ratio.contains("8.6×") && ratio.contains("of b") && ratio.contains("missed"));
        // Right after the burn-down rows, before the next scenario.
        let pos = |s: &str| md.find(s).unwrap();
        assert!(pos("| burn-down vs fastest peer") < pos("| nodes"));
        assert!(md.contains("| peer: b |"));
        assert!(md.contains("Command: `bench/run`"));
    }

    #[test]
    fn without_peers_the_comparison_says_why() {
        let rows = vec![row("burn-down", Some(60_000.0), Verdict::Met)];
        let md = render(&rows, &[], Some("--no-peers"), "", None);
        assert!(md.contains("peers not run (--no-peers)"));
        assert!(md.contains("| not run |"));
    }
}
