//! A job's objective value and how its results compare: the one rule of "best" that every
//! reader of results (the dashboard, reports) applies.
//!
//! The objective value of a task is the `fopt` its run reported (DESIGN.md section 1: "result
//! (runtime, iterations, objective value, result JSON)"; the batch-coordinator contract's
//! `fopt`, the optimum a minimising run found). Lower is better. A configuration is one
//! combination of values of the parameters that define it (by default every swept parameter
//! except those that only repeat a run, such as `seed`); its summary gives the best and the
//! median objective value of its runs. Pure functions: callers hand in the results they read.

use crate::run::value_text;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Parameter names that repeat a run rather than configure it: by default a configuration is
/// every swept parameter but these, so runs that differ only by seed are summarised together.
pub const REPETITION_PARAMETERS: &[&str] =
    &["seed", "run", "repeat", "repetition", "replicate", "trial"];

/// Whether objective value `a` is better than `b`: lower is better.
pub fn better(a: f64, b: f64) -> bool {
    a < b
}

/// The order of objective values, best first; values that are not numbers (NaN) last.
pub fn order(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The parameters that define a configuration by default: every swept parameter that does not
/// merely repeat a run ([`REPETITION_PARAMETERS`]), in the job's order.
pub fn default_configuration(parameters: &[String]) -> Vec<String> {
    parameters
        .iter()
        .filter(|p| {
            !REPETITION_PARAMETERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(p))
        })
        .cloned()
        .collect()
}

/// One configuration's results.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSummary {
    /// The configuration's value of each parameter that defines it, as text, in the order asked.
    pub values: Vec<String>,
    /// DONE runs of this configuration, with an objective value or not.
    pub runs: u64,
    /// Every objective value reported, best first.
    pub objectives: Vec<f64>,
    /// The best objective value, if any run reported one.
    pub best: Option<f64>,
    /// The median objective value (the mean of the middle two for an even count).
    pub median: Option<f64>,
}

/// Summarises results by configuration: `by` names the parameters that define one, `results`
/// gives each DONE task's payload and objective value. Configurations come best first (by
/// their best value; those without any objective value last, then by their values as text).
pub fn summarise<'a>(
    by: &[String],
    results: impl IntoIterator<Item = (&'a Map<String, Value>, Option<f64>)>,
) -> Vec<ConfigSummary> {
    let mut groups: std::collections::BTreeMap<Vec<String>, (u64, Vec<f64>)> =
        std::collections::BTreeMap::new();
    for (payload, objective) in results {
        let key = by
            .iter()
            .map(|p| payload.get(p).map(value_text).unwrap_or_default())
            .collect();
        let entry = groups.entry(key).or_default();
        entry.0 += 1;
        if let Some(v) = objective {
            entry.1.push(v);
        }
    }
    let mut out: Vec<ConfigSummary> = groups
        .into_iter()
        .map(|(values, (runs, mut objectives))| {
            objectives.sort_by(|a, b| order(*a, *b));
            ConfigSummary {
                values,
                runs,
                best: objectives.first().copied(),
                median: median(&objectives),
                objectives,
            }
        })
        .collect();
    out.sort_by(|a, b| match (a.best, b.best) {
        (Some(x), Some(y)) => order(x, y).then_with(|| a.values.cmp(&b.values)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.values.cmp(&b.values),
    });
    out
}

/// The median of values sorted best first.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn lower_objective_values_are_better() {
        assert!(better(0.1, 0.2));
        assert!(!better(0.2, 0.1));
        assert_eq!(order(f64::NAN, 1.0), Ordering::Greater);
        assert_eq!(order(-1.0, 1.0), Ordering::Less);
    }

    #[test]
    fn repetitions_do_not_define_a_configuration() {
        let params = ["algorithm", "seed", "dimension", "Trial"].map(String::from);
        assert_eq!(
            default_configuration(&params),
            vec!["algorithm".to_string(), "dimension".to_string()]
        );
    }

    #[test]
    fn each_configuration_has_its_best_and_median_best_first() {
        let rows = [
            (payload(json!({"algorithm": "pso", "seed": 1})), Some(3.0)),
            (payload(json!({"algorithm": "pso", "seed": 2})), Some(1.0)),
            (payload(json!({"algorithm": "pso", "seed": 3})), Some(2.0)),
            (payload(json!({"algorithm": "de", "seed": 1})), Some(0.5)),
            (payload(json!({"algorithm": "de", "seed": 2})), Some(4.5)),
            (payload(json!({"algorithm": "ga", "seed": 1})), None),
        ];
        let by = vec!["algorithm".to_string()];
        let s = summarise(&by, rows.iter().map(|(p, v)| (p, *v)));
        let names: Vec<&str> = s.iter().map(|c| c.values[0].as_str()).collect();
        assert_eq!(names, ["de", "pso", "ga"]);
        assert_eq!(
            (s[0].best, s[0].median, s[0].runs),
            (Some(0.5), Some(2.5), 2)
        );
        assert_eq!(
            (s[1].best, s[1].median, s[1].runs),
            (Some(1.0), Some(2.0), 3)
        );
        assert_eq!(s[1].objectives, vec![1.0, 2.0, 3.0]);
        assert_eq!((s[2].best, s[2].median, s[2].runs), (None, None, 1));
    }

    #[test]
    fn no_parameters_make_one_configuration() {
        let rows = [(payload(json!({"x": 1})), Some(2.0))];
        let s = summarise(&[], rows.iter().map(|(p, v)| (p, *v)));
        assert_eq!(s.len(), 1);
        assert!(s[0].values.is_empty());
    }
}
