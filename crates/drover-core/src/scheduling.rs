//! Weighted scheduling: which node a workload goes to, from the nodes' live stats (the placement
//! contract's `POST /schedule`, and later the batch path's placement of tasks).
//!
//! This module owns the score, the hard filters, the tie rule and what a valid weight or
//! requirement is. It must not read or keep stats itself: callers hand it the nodes to choose
//! from (only those that may take work) with their stats as last reported.
//!
//! The formula is the contract's:
//! `score = w_cpu·cpu_free + w_ram·ram_free_mb + w_gpu·gpu_free + w_latency·inverse_latency −
//! w_io·io_pressure`, where `inverse_latency` is `1/latency_ms`, or 1 when `latency_ms ≤ 0`; the
//! highest score wins, and a tie (scores less than [`TIE`] apart) goes to the lexicographically
//! smaller id. A
//! node that never reported stats counts as [`Stats::UNKNOWN`]. One difference from the
//! original system, which ignores `io_tolerance`: here it filters (`io_pressure ≤
//! io_tolerance`), since a workload that states it expects to be honoured.

use crate::rules::RuleError;
use serde::{Deserialize, Serialize};

/// Scores closer than this are a tie.
pub const TIE: f64 = 1e-9;

/// A node's live stats for scheduling, as it last reported them (the placement contract's
/// `/node/{id}/stats`; not the heartbeat's `NodeStats`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Fraction of CPU free, 0 to 1.
    pub cpu_free: f64,
    pub ram_free_mb: f64,
    /// GPU units free.
    pub gpu_free: f64,
    pub latency_ms: f64,
    /// I/O pressure, 0 (none) to 1.
    pub io_pressure: f64,
}

impl Stats {
    /// How a node that never reported stats is scored and filtered: nothing free, far away,
    /// fully pressed.
    pub const UNKNOWN: Stats = Stats {
        cpu_free: 0.0,
        ram_free_mb: 0.0,
        gpu_free: 0.0,
        latency_ms: 9999.0,
        io_pressure: 1.0,
    };

    /// Checks reported stats: every figure finite and none negative.
    pub fn validate(&self) -> Result<(), RuleError> {
        non_negative([
            ("cpu_free", self.cpu_free),
            ("ram_free_mb", self.ram_free_mb),
            ("gpu_free", self.gpu_free),
            ("latency_ms", self.latency_ms),
            ("io_pressure", self.io_pressure),
        ])
    }
}

/// The scheduler's weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub w_cpu: f64,
    pub w_ram: f64,
    pub w_gpu: f64,
    pub w_latency: f64,
    pub w_io: f64,
}

impl Default for Weights {
    /// The weights a scheduler starts with (RAM is in MiB, hence its small weight).
    fn default() -> Self {
        Weights {
            w_cpu: 1.0,
            w_ram: 0.001,
            w_gpu: 2.0,
            w_latency: 50.0,
            w_io: 1.5,
        }
    }
}

impl Weights {
    /// What the contract's `POST /scheduler/config` puts in place of a weight left out of its
    /// body: not the defaults, but these (the original system's own fill, kept so that its
    /// clients configure the same scheduler here).
    pub const CONFIG_FILL: Weights = Weights {
        w_cpu: 1.0,
        w_ram: 1.0,
        w_gpu: 0.5,
        w_latency: 0.8,
        w_io: 0.6,
    };

    /// Checks weights before they are stored: each finite and not negative, and not all zero
    /// (every node would score the same).
    pub fn validate(&self) -> Result<(), RuleError> {
        let fields = [
            ("w_cpu", self.w_cpu),
            ("w_ram", self.w_ram),
            ("w_gpu", self.w_gpu),
            ("w_latency", self.w_latency),
            ("w_io", self.w_io),
        ];
        non_negative(fields)?;
        if fields.iter().all(|(_, v)| *v == 0.0) {
            return Err(RuleError {
                field: "weights",
                message: "are all 0: every node would score the same; give at least one a \
                          positive value"
                    .into(),
            });
        }
        Ok(())
    }

    /// The score of a node with `stats`: higher is better.
    pub fn score(&self, stats: &Stats) -> f64 {
        let inverse_latency = if stats.latency_ms <= 0.0 {
            1.0
        } else {
            1.0 / stats.latency_ms
        };
        self.w_cpu * stats.cpu_free
            + self.w_ram * stats.ram_free_mb
            + self.w_gpu * stats.gpu_free
            + self.w_latency * inverse_latency
            - self.w_io * stats.io_pressure
    }
}

/// What a workload needs of its node; each requirement left out does not filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub cpu_req: Option<f64>,
    pub ram_req_mb: Option<f64>,
    pub gpu_req: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub io_tolerance: Option<f64>,
}

/// One of a workload's hard filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// `cpu_free ≥ cpu_req`
    CpuReq,
    /// `ram_free_mb ≥ ram_req_mb`
    RamReqMb,
    /// `gpu_free ≥ gpu_req`
    GpuReq,
    /// `latency_ms ≤ max_latency_ms`
    MaxLatencyMs,
    /// `io_pressure ≤ io_tolerance`
    IoTolerance,
}

impl Requirement {
    /// The request field that states it.
    pub fn field(self) -> &'static str {
        match self {
            Requirement::CpuReq => "cpu_req",
            Requirement::RamReqMb => "ram_req_mb",
            Requirement::GpuReq => "gpu_req",
            Requirement::MaxLatencyMs => "max_latency_ms",
            Requirement::IoTolerance => "io_tolerance",
        }
    }
}

impl Workload {
    /// Checks a workload: each requirement given is finite and not negative.
    pub fn validate(&self) -> Result<(), RuleError> {
        let given = [
            ("cpu_req", self.cpu_req),
            ("ram_req_mb", self.ram_req_mb),
            ("gpu_req", self.gpu_req),
            ("max_latency_ms", self.max_latency_ms),
            ("io_tolerance", self.io_tolerance),
        ];
        non_negative(
            given
                .into_iter()
                .filter_map(|(field, v)| v.map(|v| (field, v))),
        )
    }

    /// The first requirement a node with `stats` fails, if any.
    pub fn unmet_by(&self, stats: &Stats) -> Option<Requirement> {
        let at_least = |req: Option<f64>, have: f64| req.is_some_and(|r| have < r);
        let at_most = |max: Option<f64>, have: f64| max.is_some_and(|m| have > m);
        if at_least(self.cpu_req, stats.cpu_free) {
            Some(Requirement::CpuReq)
        } else if at_least(self.ram_req_mb, stats.ram_free_mb) {
            Some(Requirement::RamReqMb)
        } else if at_least(self.gpu_req, stats.gpu_free) {
            Some(Requirement::GpuReq)
        } else if at_most(self.max_latency_ms, stats.latency_ms) {
            Some(Requirement::MaxLatencyMs)
        } else if at_most(self.io_tolerance, stats.io_pressure) {
            Some(Requirement::IoTolerance)
        } else {
            None
        }
    }
}

/// Where a workload goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheduled<'a> {
    /// The node with the best score among those that meet every requirement.
    Node { id: &'a str, score: f64 },
    /// No node meets every requirement: how many each requirement ruled out (each node is
    /// counted once, under the first requirement it fails, in [`Requirement`] order), and how
    /// many nodes there were.
    NoFit {
        ruled_out: Vec<(Requirement, usize)>,
        nodes: usize,
    },
}

/// Chooses the node for `workload` among `nodes` (each with its stats, `None` for a node that
/// never reported): the best score among those meeting every requirement, a tie going to the
/// smaller id. The answer does not depend on the order of `nodes`.
pub fn schedule<'a>(
    weights: &Weights,
    workload: &Workload,
    nodes: impl IntoIterator<Item = (&'a str, Option<&'a Stats>)>,
) -> Scheduled<'a> {
    let mut best: Option<(&'a str, f64)> = None;
    let mut ruled_out = std::collections::BTreeMap::new();
    let mut count = 0;
    for (id, stats) in nodes {
        count += 1;
        let stats = stats.unwrap_or(&Stats::UNKNOWN);
        if let Some(requirement) = workload.unmet_by(stats) {
            *ruled_out.entry(requirement).or_insert(0) += 1;
            continue;
        }
        let score = weights.score(stats);
        let better = match best {
            None => true,
            Some((best_id, best_score)) => {
                score > best_score + TIE || (score >= best_score - TIE && id < best_id)
            }
        };
        if better {
            best = Some((id, score));
        }
    }
    match best {
        Some((id, score)) => Scheduled::Node { id, score },
        None => Scheduled::NoFit {
            ruled_out: ruled_out.into_iter().collect(),
            nodes: count,
        },
    }
}

/// Each of `fields` (a weight, a stat or a requirement, by its request name) is a finite
/// number, 0 or more; the first that is not is refused.
fn non_negative(fields: impl IntoIterator<Item = (&'static str, f64)>) -> Result<(), RuleError> {
    for (field, value) in fields {
        let message = if !value.is_finite() {
            format!("must be a finite number, not {value}")
        } else if value < 0.0 {
            format!("must be 0 or more, not {value}")
        } else {
            continue;
        };
        return Err(RuleError { field, message });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(cpu: f64, ram: f64, gpu: f64, latency: f64, io: f64) -> Stats {
        Stats {
            cpu_free: cpu,
            ram_free_mb: ram,
            gpu_free: gpu,
            latency_ms: latency,
            io_pressure: io,
        }
    }

    fn winner<'a>(
        weights: &Weights,
        workload: &Workload,
        nodes: &'a [(&'a str, Option<Stats>)],
    ) -> Option<&'a str> {
        match schedule(
            weights,
            workload,
            nodes.iter().map(|(id, s)| (*id, s.as_ref())),
        ) {
            Scheduled::Node { id, .. } => Some(id),
            Scheduled::NoFit { .. } => None,
        }
    }

    #[test]
    fn the_score_is_the_contracts_formula() {
        let w = Weights::default();
        let s = stats(0.75, 8192.0, 0.5, 5.0, 0.1);
        let expected = 0.75 + 0.001 * 8192.0 + 2.0 * 0.5 + 50.0 / 5.0 - 1.5 * 0.1;
        assert!((w.score(&s) - expected).abs() < 1e-12);
        // A latency of zero or less counts as an inverse latency of 1.
        assert_eq!(w.score(&stats(0.0, 0.0, 0.0, 0.0, 0.0)), 50.0);
        assert_eq!(w.score(&stats(0.0, 0.0, 0.0, -3.0, 0.0)), 50.0);
        // A node without stats.
        let unknown = 50.0 / 9999.0 - 1.5;
        assert!((w.score(&Stats::UNKNOWN) - unknown).abs() < 1e-12);
    }

    #[test]
    fn the_best_score_wins_whatever_the_order_of_the_nodes() {
        let nodes = [
            ("a", Some(stats(0.2, 1000.0, 0.0, 20.0, 0.5))),
            ("b", Some(stats(0.9, 16000.0, 1.0, 2.0, 0.0))),
            ("c", None),
        ];
        let w = Weights::default();
        assert_eq!(winner(&w, &Workload::default(), &nodes), Some("b"));
        let mut reversed = nodes;
        reversed.reverse();
        assert_eq!(winner(&w, &Workload::default(), &reversed), Some("b"));
    }

    #[test]
    fn changing_the_weights_changes_the_winner() {
        // "near" is close, "big" has RAM to spare.
        let nodes = [
            ("big", Some(stats(0.5, 64000.0, 0.0, 50.0, 0.2))),
            ("near", Some(stats(0.5, 1000.0, 0.0, 1.0, 0.2))),
        ];
        let defaults = Weights::default();
        assert_eq!(winner(&defaults, &Workload::default(), &nodes), Some("big"));
        let latency_first = Weights {
            w_ram: 0.0,
            ..defaults
        };
        assert_eq!(
            winner(&latency_first, &Workload::default(), &nodes),
            Some("near")
        );
    }

    #[test]
    fn each_filter_excludes_what_it_should() {
        let good = stats(0.8, 8000.0, 2.0, 5.0, 0.1);
        let cases: [(Workload, Stats, Requirement); 5] = [
            (
                Workload {
                    cpu_req: Some(0.5),
                    ..Default::default()
                },
                Stats {
                    cpu_free: 0.4,
                    ..good
                },
                Requirement::CpuReq,
            ),
            (
                Workload {
                    ram_req_mb: Some(4096.0),
                    ..Default::default()
                },
                Stats {
                    ram_free_mb: 4095.0,
                    ..good
                },
                Requirement::RamReqMb,
            ),
            (
                Workload {
                    gpu_req: Some(1.0),
                    ..Default::default()
                },
                Stats {
                    gpu_free: 0.5,
                    ..good
                },
                Requirement::GpuReq,
            ),
            (
                Workload {
                    max_latency_ms: Some(10.0),
                    ..Default::default()
                },
                Stats {
                    latency_ms: 10.5,
                    ..good
                },
                Requirement::MaxLatencyMs,
            ),
            (
                Workload {
                    io_tolerance: Some(0.3),
                    ..Default::default()
                },
                Stats {
                    io_pressure: 0.31,
                    ..good
                },
                Requirement::IoTolerance,
            ),
        ];
        for (workload, bad, requirement) in cases {
            assert_eq!(workload.unmet_by(&bad), Some(requirement));
            assert_eq!(workload.unmet_by(&good), None);
            // The filter alone keeps the node out: without the requirement it is chosen.
            let only_bad = [("bad", Some(bad))];
            let w = Weights::default();
            assert_eq!(winner(&w, &workload, &only_bad), None, "{requirement:?}");
            assert_eq!(winner(&w, &Workload::default(), &only_bad), Some("bad"));
            // The bound itself passes.
            let at_bound = match requirement {
                Requirement::CpuReq => Stats {
                    cpu_free: 0.5,
                    ..good
                },
                Requirement::RamReqMb => Stats {
                    ram_free_mb: 4096.0,
                    ..good
                },
                Requirement::GpuReq => Stats {
                    gpu_free: 1.0,
                    ..good
                },
                Requirement::MaxLatencyMs => Stats {
                    latency_ms: 10.0,
                    ..good
                },
                Requirement::IoTolerance => Stats {
                    io_pressure: 0.3,
                    ..good
                },
            };
            assert_eq!(workload.unmet_by(&at_bound), None, "{requirement:?}");
        }
    }

    #[test]
    fn a_tie_goes_to_the_smaller_id() {
        let same = stats(0.5, 1000.0, 0.0, 10.0, 0.1);
        // Lower by less than the threshold: a tie, which the smaller id takes.
        let nearly = stats(0.5 - 1e-12, 1000.0, 0.0, 10.0, 0.1);
        let nodes = [
            ("node-b", Some(same)),
            ("node-a", Some(nearly)),
            ("node-c", Some(same)),
        ];
        assert_eq!(
            winner(&Weights::default(), &Workload::default(), &nodes),
            Some("node-a")
        );
        // A difference above the tie threshold is not a tie.
        let better = stats(0.5 + 1e-6, 1000.0, 0.0, 10.0, 0.1);
        let nodes = [("node-a", Some(same)), ("node-z", Some(better))];
        assert_eq!(
            winner(&Weights::default(), &Workload::default(), &nodes),
            Some("node-z")
        );
    }

    #[test]
    fn no_fit_says_which_requirement_ruled_out_how_many() {
        let workload = Workload {
            cpu_req: Some(0.5),
            gpu_req: Some(1.0),
            ..Default::default()
        };
        let nodes = [
            ("a", Some(stats(0.1, 0.0, 4.0, 1.0, 0.0))),
            ("b", Some(stats(0.9, 0.0, 0.0, 1.0, 0.0))),
            ("c", None),
        ];
        let answer = schedule(
            &Weights::default(),
            &workload,
            nodes.iter().map(|(id, s)| (*id, s.as_ref())),
        );
        assert_eq!(
            answer,
            Scheduled::NoFit {
                ruled_out: vec![(Requirement::CpuReq, 2), (Requirement::GpuReq, 1)],
                nodes: 3
            }
        );
        assert_eq!(
            schedule(&Weights::default(), &workload, std::iter::empty()),
            Scheduled::NoFit {
                ruled_out: Vec::new(),
                nodes: 0
            }
        );
    }

    #[test]
    fn weights_and_requirements_are_checked() {
        assert!(Weights::default().validate().is_ok());
        assert!(Weights::CONFIG_FILL.validate().is_ok());
        let bad = [
            (
                Weights {
                    w_cpu: f64::NAN,
                    ..Weights::default()
                },
                "w_cpu",
            ),
            (
                Weights {
                    w_io: f64::INFINITY,
                    ..Weights::default()
                },
                "w_io",
            ),
            (
                Weights {
                    w_ram: -1.0,
                    ..Weights::default()
                },
                "w_ram",
            ),
            (
                Weights {
                    w_cpu: 0.0,
                    w_ram: 0.0,
                    w_gpu: 0.0,
                    w_latency: 0.0,
                    w_io: 0.0,
                },
                "weights",
            ),
        ];
        for (weights, field) in bad {
            assert_eq!(weights.validate().unwrap_err().field, field);
        }
        let negative = Workload {
            ram_req_mb: Some(-5.0),
            ..Default::default()
        };
        let err = negative.validate().unwrap_err();
        assert_eq!(err.to_string(), "ram_req_mb: must be 0 or more, not -5");
        assert!(Workload::default().validate().is_ok());
        assert!(stats(0.1, 1.0, 0.0, 3.0, 0.2).validate().is_ok());
        assert_eq!(
            stats(0.1, 1.0, 0.0, f64::NAN, 0.2)
                .validate()
                .unwrap_err()
                .field,
            "latency_ms"
        );
    }
}
