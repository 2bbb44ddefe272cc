//! Sweep expansion: a job request's dimensions become one task payload per combination.
//!
//! The rule is the cartesian product of every dimension given, ranges inclusive of `max` when
//! the steps land on it. A request with algorithms × iterations × agents × dimension of sizes
//! 3, 5, 5, 5 makes 375 tasks (the batch contract's example says 75; the product is the rule).
//!
//! [`Sweep::new`] validates everything and counts the tasks before anything is materialised, so
//! an oversize request is refused cheaply; [`Sweep::payload`] builds the payload of one task by
//! its index, so a store can stream a million tasks into its transaction without holding them.
//! A range is never expanded into a list: its `k`-th value is computed when asked for, so
//! rebuilding a sweep from its spec (once per claim, in a store) costs the same for a range of
//! ten values as for a million.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Default cap on the number of tasks one job may expand to.
pub const DEFAULT_MAX_TASKS_PER_JOB: u64 = 1_000_000;
/// Default cap on the bytes of all of one job's task payloads: a million tasks of the
/// contract's example payload (about 110 bytes) fit twice over.
pub const DEFAULT_MAX_JOB_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on one task's payload, in bytes.
pub const DEFAULT_MAX_TASK_PAYLOAD_BYTES: u64 = 64 * 1024;

/// The byte quotas a sweep is checked against before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Most bytes of one task's payload, as JSON.
    pub task_payload_bytes: u64,
    /// Most bytes of every task payload of the job, added up.
    pub job_bytes: u64,
}

/// The values one swept parameter takes. Serialised as the request gives them: a list, or
/// `{min, max, step}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Values {
    List(Vec<Value>),
    /// Inclusive range: `min, min+step, ...` up to and including `max` when a step lands on it.
    Range {
        min: Number,
        max: Number,
        step: Number,
    },
}

/// One swept parameter. `field` is how the request named it, for error messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    pub field: String,
    pub values: Values,
}

/// What a job request asks to expand. Its JSON form is what a job keeps as its spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSpec {
    /// Fields copied into every task's payload (`jarPath`, `mainClass`, ...).
    pub shared: Map<String, Value>,
    /// Swept parameters; the first varies slowest.
    pub dimensions: Vec<Dimension>,
    /// An explicit list of task payloads, instead of dimensions.
    pub tasks: Option<Vec<Map<String, Value>>>,
}

impl SweepSpec {
    /// One dimension `name` (written to payload field `field`) counting 1, 2, ..., `n`.
    pub fn counting(name: &str, field: &str, n: i64) -> SweepSpec {
        SweepSpec {
            dimensions: vec![Dimension {
                name: name.into(),
                field: field.into(),
                values: Values::Range {
                    min: 1.into(),
                    max: n.into(),
                    step: 1.into(),
                },
            }],
            ..Default::default()
        }
    }
}

/// Why a sweep cannot be expanded. `field` names the request field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "the job expands to {count} tasks, above the limit of {cap}; narrow the ranges or split the job"
    )]
    TooManyTasks { count: u128, cap: u64 },
    #[error(
        "a task payload of this job would be {bytes} bytes, above the limit of {cap} bytes per \
         task; make the shared fields or values smaller"
    )]
    PayloadTooLarge { bytes: u64, cap: u64 },
    #[error(
        "the job's task payloads add up to {bytes} bytes, above the limit of {cap} bytes per \
         job; narrow the ranges, make the payload smaller or split the job"
    )]
    JobTooLarge { bytes: u64, cap: u64 },
}

fn invalid(field: &str, message: impl Into<String>) -> SweepError {
    SweepError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A validated sweep, ready to produce payloads by index.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    shared: Map<String, Value>,
    /// Each dimension's name and values.
    dims: Vec<(String, Axis)>,
    tasks: Option<Vec<Map<String, Value>>>,
    total: u64,
    /// The dimensions as given, kept for [`Sweep::spec_json`].
    given: Vec<Dimension>,
}

/// A borrowed [`SweepSpec`], so a sweep serialises its spec without copying its task list.
#[derive(Serialize)]
struct SpecRef<'a> {
    shared: &'a Map<String, Value>,
    dimensions: &'a [Dimension],
    tasks: Option<&'a [Map<String, Value>]>,
}

impl Sweep {
    /// Validates `spec` and counts its tasks; refuses more than `cap` tasks.
    pub fn new(spec: SweepSpec, cap: u64) -> Result<Sweep, SweepError> {
        if let Some(tasks) = spec.tasks {
            if !spec.dimensions.is_empty() {
                return Err(invalid(
                    "tasks",
                    "give either an explicit task list or swept parameters, not both",
                ));
            }
            if tasks.is_empty() {
                return Err(invalid("tasks", "the task list is empty"));
            }
            if tasks.len() as u128 > cap as u128 {
                return Err(SweepError::TooManyTasks {
                    count: tasks.len() as u128,
                    cap,
                });
            }
            return Ok(Sweep {
                shared: spec.shared,
                dims: Vec::new(),
                total: tasks.len() as u64,
                tasks: Some(tasks),
                given: Vec::new(),
            });
        }

        let mut seen = std::collections::HashSet::new();
        let mut total: u128 = 1;
        for dim in &spec.dimensions {
            if !seen.insert(dim.name.as_str()) {
                return Err(invalid(
                    &dim.field,
                    format!("parameter {:?} is given twice", dim.name),
                ));
            }
            if spec.shared.contains_key(&dim.name) {
                return Err(invalid(
                    &dim.field,
                    format!("parameter {:?} is also a shared field", dim.name),
                ));
            }
            let n = count(dim)?;
            total = total.saturating_mul(n);
        }
        if total > cap as u128 {
            return Err(SweepError::TooManyTasks { count: total, cap });
        }
        let dims = spec
            .dimensions
            .iter()
            .map(|d| (d.name.clone(), Axis::of(d)))
            .collect();
        Ok(Sweep {
            shared: spec.shared,
            dims,
            tasks: None,
            total: total as u64,
            given: spec.dimensions,
        })
    }

    /// The sweep a job's kept spec (the text of [`Sweep::spec_json`]) describes, so a store
    /// that keeps only the spec can build any task's payload later. The spec was validated when
    /// the job was made; nothing caps it again here.
    pub fn from_spec_json(text: &str) -> Result<Sweep, SweepError> {
        let spec: SweepSpec =
            serde_json::from_str(text).map_err(|e| invalid("spec", e.to_string()))?;
        Sweep::new(spec, u64::MAX)
    }

    /// Whether the tasks were given as an explicit list of payloads (which the spec holds in
    /// full) rather than swept parameters.
    pub fn is_listed(&self) -> bool {
        self.tasks.is_some()
    }

    /// How many tasks the sweep makes.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// [`Sweep::spec_json`] as a JSON value, as a job shows its spec.
    pub fn spec_value(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(SpecRef {
            shared: &self.shared,
            dimensions: &self.given,
            tasks: self.tasks.as_deref(),
        })
    }

    /// The normalised spec this sweep was made from, as the JSON a job keeps: the shared
    /// fields, the dimensions as given, and the explicit task list if there was one.
    pub fn spec_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&SpecRef {
            shared: &self.shared,
            dimensions: &self.given,
            tasks: self.tasks.as_deref(),
        })
    }

    /// The largest task payload and the sum of every task payload, in bytes of JSON, counted
    /// without building the payloads: with dimensions each value appears in `len / n` tasks.
    /// Separators are counted generously, so the figures never fall below the real sizes.
    pub fn payload_bytes(&self) -> (u64, u64) {
        let json_len = |v: &Value| serde_json::to_string(v).map_or(0, |s| s.len()) as u128;
        // `"key":value,`
        let entry = |k: &str, v: &Value| k.len() as u128 + 4 + json_len(v);
        let shared: u128 = 2 + self.shared.iter().map(|(k, v)| entry(k, v)).sum::<u128>();
        let (largest, total) = match &self.tasks {
            Some(tasks) => tasks.iter().fold((0u128, 0u128), |(max, sum), t| {
                let own: u128 = t.iter().map(|(k, v)| entry(k, v)).sum();
                (max.max(shared + own), sum.saturating_add(shared + own))
            }),
            None => {
                let total = self.total as u128;
                let mut largest = shared;
                let mut sum = shared.saturating_mul(total);
                for (name, axis) in &self.dims {
                    let sizes = (0..axis.len()).map(|k| entry(name, &axis.get(k)));
                    let (max, all) = sizes.fold((0, 0u128), |(m, s), x| (m.max(x), s + x));
                    largest += max;
                    let repeats = total / axis.len().max(1) as u128;
                    sum = sum.saturating_add(all.saturating_mul(repeats));
                }
                (largest, sum)
            }
        };
        let cap = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        (cap(largest), cap(total))
    }

    /// Refuses a sweep whose payloads exceed `limits`, before anything is written.
    pub fn check_size(&self, limits: SizeLimits) -> Result<(), SweepError> {
        let (largest, total) = self.payload_bytes();
        if largest > limits.task_payload_bytes {
            return Err(SweepError::PayloadTooLarge {
                bytes: largest,
                cap: limits.task_payload_bytes,
            });
        }
        if total > limits.job_bytes {
            return Err(SweepError::JobTooLarge {
                bytes: total,
                cap: limits.job_bytes,
            });
        }
        Ok(())
    }

    /// Names of the swept parameters, slowest-varying first.
    pub fn parameter_names(&self) -> Vec<String> {
        self.dims.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The payload of task `index` (0-based, `< len()`): the shared fields, then the values of
    /// each parameter (or the explicit task's fields, which win over shared ones).
    pub fn payload(&self, index: u64) -> Map<String, Value> {
        let mut payload = self.shared.clone();
        if let Some(tasks) = &self.tasks {
            for (k, v) in &tasks[index as usize] {
                payload.insert(k.clone(), v.clone());
            }
            return payload;
        }
        // Mixed-radix decode, last dimension fastest.
        let mut rest = index;
        let mut picked = vec![0u64; self.dims.len()];
        for (i, (_, axis)) in self.dims.iter().enumerate().rev() {
            let n = axis.len();
            picked[i] = rest % n;
            rest /= n;
        }
        for ((name, axis), at) in self.dims.iter().zip(picked) {
            payload.insert(name.clone(), axis.get(at));
        }
        payload
    }
}

/// Integer view of a range, when all three bounds are integers.
fn int_range(min: &Number, max: &Number, step: &Number) -> Option<(i64, i64, i64)> {
    Some((min.as_i64()?, max.as_i64()?, step.as_i64()?))
}

/// Float steps may land a hair short of `max`; this much slack keeps `max` in.
const FLOAT_SLACK: f64 = 1e-9;

/// What is wrong with a `{min, max, step}` range. Callers word it for their own users (the API
/// names the request field, a job file names its key); the rule is [`range_len`]'s alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFault {
    /// The step is not a finite number greater than 0.
    Step,
    /// `min` or `max` is not a finite number.
    Bounds,
    /// `min` is greater than `max`.
    MinAboveMax,
}

/// How many values the inclusive range `min, min+step, ...` up to `max` has, or why it has
/// none: the one range rule, for the sweep and for anyone checking a range before sending it.
pub fn range_len(min: &Number, max: &Number, step: &Number) -> Result<u128, RangeFault> {
    if let Some((lo, hi, st)) = int_range(min, max, step) {
        if st <= 0 {
            return Err(RangeFault::Step);
        }
        if lo > hi {
            return Err(RangeFault::MinAboveMax);
        }
        return Ok(((hi as i128 - lo as i128) / st as i128) as u128 + 1);
    }
    let (lo, hi, st) = (
        min.as_f64().unwrap_or(f64::NAN),
        max.as_f64().unwrap_or(f64::NAN),
        step.as_f64().unwrap_or(f64::NAN),
    );
    if st.is_nan() || st <= 0.0 || !st.is_finite() {
        return Err(RangeFault::Step);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return Err(RangeFault::Bounds);
    }
    if lo > hi {
        return Err(RangeFault::MinAboveMax);
    }
    let n = ((hi - lo) / st + FLOAT_SLACK).floor();
    // Saturate: the cap check refuses anything this large anyway.
    Ok(if n >= 1e30 { u128::MAX } else { n as u128 + 1 })
}

fn count(dim: &Dimension) -> Result<u128, SweepError> {
    match &dim.values {
        Values::List(values) => {
            if values.is_empty() {
                Err(invalid(&dim.field, "the list of values is empty"))
            } else {
                Ok(values.len() as u128)
            }
        }
        Values::Range { min, max, step } => range_len(min, max, step).map_err(|fault| {
            // Integer ranges and float ranges word a bad step differently.
            let integers = int_range(min, max, step).is_some();
            match fault {
                RangeFault::Step if integers => invalid(
                    &format!("{}.step", dim.field),
                    format!("step must be greater than 0 (got {step})"),
                ),
                RangeFault::Step => invalid(
                    &format!("{}.step", dim.field),
                    format!("step must be a finite number greater than 0 (got {step})"),
                ),
                RangeFault::Bounds => invalid(&dim.field, "min and max must be finite numbers"),
                RangeFault::MinAboveMax => invalid(
                    &dim.field,
                    format!("min ({min}) must not be greater than max ({max})"),
                ),
            }
        }),
    }
}

/// The values of a dimension that [`count`] accepted: a list as given, or a range kept as its
/// bounds, whose `k`-th value is computed on demand.
#[derive(Debug, Clone, PartialEq)]
enum Axis {
    List(Vec<Value>),
    Ints { lo: i64, step: i64, len: u64 },
    Floats { lo: f64, step: f64, len: u64 },
}

impl Axis {
    fn of(dim: &Dimension) -> Axis {
        match &dim.values {
            Values::List(values) => Axis::List(values.clone()),
            Values::Range { min, max, step } => {
                if let Some((lo, hi, st)) = int_range(min, max, step) {
                    let len = ((hi as i128 - lo as i128) / st as i128 + 1) as u64;
                    return Axis::Ints { lo, step: st, len };
                }
                let (lo, hi, st) = (
                    min.as_f64().unwrap_or_default(),
                    max.as_f64().unwrap_or_default(),
                    step.as_f64().unwrap_or(1.0),
                );
                let len = ((hi - lo) / st + FLOAT_SLACK).floor() as u64 + 1;
                Axis::Floats { lo, step: st, len }
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            Axis::List(values) => values.len() as u64,
            Axis::Ints { len, .. } | Axis::Floats { len, .. } => *len,
        }
    }

    /// The `k`-th value (`k < len()`).
    fn get(&self, k: u64) -> Value {
        match self {
            Axis::List(values) => values[k as usize].clone(),
            Axis::Ints { lo, step, .. } => {
                Value::from((*lo as i128 + k as i128 * *step as i128) as i64)
            }
            Axis::Floats { lo, step, .. } => {
                // Multiply rather than accumulate, and trim float noise (0.30000000000000004).
                let v = lo + k as f64 * step;
                let v = format!("{v:.12}").parse::<f64>().unwrap_or(v);
                Number::from_f64(v)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn range(name: &str, min: Value, max: Value, step: Value) -> Dimension {
        let n = |v: Value| v.as_number().cloned().unwrap();
        Dimension {
            name: name.into(),
            field: name.into(),
            values: Values::Range {
                min: n(min),
                max: n(max),
                step: n(step),
            },
        }
    }

    fn list(name: &str, values: Vec<Value>) -> Dimension {
        Dimension {
            name: name.into(),
            field: name.into(),
            values: Values::List(values),
        }
    }

    /// The eager expansion sweeps used before ranges were computed on demand: every value of
    /// the dimension in a list. The reference the lazy values must match.
    fn materialise(dim: &Dimension) -> Vec<Value> {
        match &dim.values {
            Values::List(values) => values.clone(),
            Values::Range { min, max, step } => {
                if let Some((lo, hi, st)) = int_range(min, max, step) {
                    let n = (hi as i128 - lo as i128) / st as i128 + 1;
                    return (0..n)
                        .map(|k| Value::from((lo as i128 + k * st as i128) as i64))
                        .collect();
                }
                let (lo, hi, st) = (
                    min.as_f64().unwrap_or_default(),
                    max.as_f64().unwrap_or_default(),
                    step.as_f64().unwrap_or(1.0),
                );
                let n = ((hi - lo) / st + FLOAT_SLACK).floor() as u64 + 1;
                (0..n)
                    .map(|k| {
                        // Multiply rather than accumulate, and trim float noise (0.30000000000000004).
                        let v = lo + k as f64 * st;
                        let v = format!("{v:.12}").parse::<f64>().unwrap_or(v);
                        Number::from_f64(v)
                            .map(Value::Number)
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            }
        }
    }

    /// The payload of task `index` as the eager expansion built it.
    fn eager_payload(spec: &SweepSpec, index: u64) -> Map<String, Value> {
        let lists: Vec<Vec<Value>> = spec.dimensions.iter().map(materialise).collect();
        let mut payload = spec.shared.clone();
        let mut rest = index;
        let mut picked = vec![0usize; lists.len()];
        for (i, values) in lists.iter().enumerate().rev() {
            picked[i] = (rest % values.len() as u64) as usize;
            rest /= values.len() as u64;
        }
        for ((dim, values), at) in spec.dimensions.iter().zip(&lists).zip(picked) {
            payload.insert(dim.name.clone(), values[at].clone());
        }
        payload
    }

    fn int_dim() -> impl Strategy<Value = Dimension> {
        (-1_000_000i64..1_000_000, 1i64..1000, 0i64..500).prop_map(|(lo, step, n)| {
            range("i", json!(lo), json!(lo + step * n + n % 3), json!(step))
        })
    }

    fn float_dim() -> impl Strategy<Value = Dimension> {
        (-1000.0f64..1000.0, 0.001f64..10.0, 0u32..400).prop_map(|(lo, step, n)| {
            range("f", json!(lo), json!(lo + step * n as f64), json!(step))
        })
    }

    proptest! {
        /// A range computed on demand has exactly the values, in order, that the eager
        /// expansion listed.
        #[test]
        fn range_values_on_demand_equal_the_expanded_list(dim in prop_oneof![int_dim(), float_dim()]) {
            let axis = Axis::of(&dim);
            let list = materialise(&dim);
            prop_assert_eq!(axis.len(), list.len() as u64);
            for (k, v) in list.iter().enumerate() {
                prop_assert_eq!(&axis.get(k as u64), v, "value {}", k);
            }
        }

        /// Every payload of a sweep rebuilt from its kept spec is the eager expansion's.
        #[test]
        fn payloads_on_demand_equal_the_eager_ones(
            a in int_dim(),
            b in float_dim(),
            indexes in proptest::collection::vec(any::<u64>(), 50),
        ) {
            let mut shared = Map::new();
            shared.insert("jarPath".into(), json!("a.jar"));
            let spec = SweepSpec {
                shared,
                dimensions: vec![
                    list("algorithm", vec![json!("GA"), json!({"deep": [1]})]),
                    Dimension { name: "a".into(), ..a },
                    Dimension { name: "b".into(), ..b },
                ],
                tasks: None,
            };
            let sweep = Sweep::new(spec.clone(), u64::MAX).unwrap();
            // Compared with the spec as kept: reparsing a float may move it by one ulp.
            let text = sweep.spec_json().unwrap();
            let kept = Sweep::from_spec_json(&text).unwrap();
            let kept_spec: SweepSpec = serde_json::from_str(&text).unwrap();
            let ends = [0, sweep.len() - 1];
            for i in indexes.iter().map(|i| i % sweep.len()).chain(ends) {
                prop_assert_eq!(sweep.payload(i), eager_payload(&spec, i), "task {}", i);
                prop_assert_eq!(kept.payload(i), eager_payload(&kept_spec, i), "task {}", i);
            }
        }
    }

    #[test]
    fn a_sweep_keeps_its_spec_as_given() {
        let mut shared = Map::new();
        shared.insert("jarPath".into(), json!("a.jar"));
        let spec = SweepSpec {
            shared,
            dimensions: vec![
                range("x", json!(1), json!(3), json!(1)),
                list("algorithm", vec![json!("GA")]),
            ],
            tasks: None,
        };
        let sweep = Sweep::new(spec.clone(), 100).unwrap();
        let kept: Value = serde_json::from_str(&sweep.spec_json().unwrap()).unwrap();
        assert_eq!(kept, serde_json::to_value(&spec).unwrap());
        assert_eq!(
            kept,
            json!({
                "shared": {"jarPath": "a.jar"},
                "dimensions": [
                    {"name": "x", "field": "x", "values": {"min": 1, "max": 3, "step": 1}},
                    {"name": "algorithm", "field": "algorithm", "values": ["GA"]}
                ],
                "tasks": null
            })
        );
    }

    #[test]
    fn a_sweep_rebuilt_from_its_kept_spec_makes_the_same_tasks() {
        let mut shared = Map::new();
        shared.insert("jarPath".into(), json!("a.jar"));
        for spec in [
            SweepSpec {
                shared: shared.clone(),
                dimensions: vec![
                    list("algorithm", vec![json!("GA"), json!({"deep": [1, 2]})]),
                    range("x", json!(0.5), json!(2), json!(0.25)),
                    range("n", json!(-3), json!(9), json!(4)),
                ],
                tasks: None,
            },
            SweepSpec {
                shared,
                dimensions: Vec::new(),
                tasks: Some(vec![
                    Map::new(),
                    json!({"a": 1}).as_object().unwrap().clone(),
                ]),
            },
        ] {
            let sweep = Sweep::new(spec, 1000).unwrap();
            let again = Sweep::from_spec_json(&sweep.spec_json().unwrap()).unwrap();
            assert_eq!(again.len(), sweep.len());
            assert_eq!(again.is_listed(), sweep.is_listed());
            for i in 0..sweep.len() {
                assert_eq!(again.payload(i), sweep.payload(i), "task {i}");
            }
        }
        assert!(Sweep::from_spec_json("[1]").is_err());
    }

    #[test]
    fn the_product_of_the_contract_example_is_375() {
        let spec = SweepSpec {
            dimensions: vec![
                list("algorithm", vec![json!("PSO"), json!("GA"), json!("DE")]),
                range("iterations", json!(100), json!(500), json!(100)),
                range("agents", json!(10), json!(50), json!(10)),
                range("dimension", json!(2), json!(10), json!(2)),
            ],
            ..Default::default()
        };
        let sweep = Sweep::new(spec, DEFAULT_MAX_TASKS_PER_JOB).unwrap();
        assert_eq!(sweep.len(), 375);
        assert_eq!(
            Value::Object(sweep.payload(0)),
            json!({"algorithm": "PSO", "iterations": 100, "agents": 10, "dimension": 2})
        );
        assert_eq!(
            Value::Object(sweep.payload(374)),
            json!({"algorithm": "DE", "iterations": 500, "agents": 50, "dimension": 10})
        );
        // Every combination appears exactly once.
        let all: std::collections::HashSet<String> = (0..375)
            .map(|i| Value::Object(sweep.payload(i)).to_string())
            .collect();
        assert_eq!(all.len(), 375);
    }

    #[test]
    fn shared_fields_reach_every_payload() {
        let mut shared = Map::new();
        shared.insert("jarPath".into(), json!("/opt/x.jar"));
        let spec = SweepSpec {
            shared,
            dimensions: vec![range("x", json!(1), json!(2), json!(1))],
            tasks: None,
        };
        let sweep = Sweep::new(spec, 10).unwrap();
        assert_eq!(
            Value::Object(sweep.payload(1)),
            json!({"jarPath": "/opt/x.jar", "x": 2})
        );
    }

    #[test]
    fn ranges_are_inclusive_and_may_skip_max() {
        let sweep = |d| {
            Sweep::new(
                SweepSpec {
                    dimensions: vec![d],
                    ..Default::default()
                },
                100,
            )
            .unwrap()
        };
        assert_eq!(sweep(range("x", json!(1), json!(10), json!(4))).len(), 3); // 1 5 9
        assert_eq!(sweep(range("x", json!(5), json!(5), json!(1))).len(), 1);
        let s = sweep(range("x", json!(0.1), json!(0.3), json!(0.1)));
        assert_eq!(s.len(), 3);
        assert_eq!(s.payload(2)["x"], json!(0.3));
    }

    #[test]
    fn no_dimensions_make_one_task() {
        assert_eq!(Sweep::new(SweepSpec::default(), 10).unwrap().len(), 1);
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let err = |d| {
            Sweep::new(
                SweepSpec {
                    dimensions: vec![d],
                    ..Default::default()
                },
                100,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(
            err(range("iterations", json!(1), json!(5), json!(0))).starts_with("iterations.step:")
        );
        assert!(err(range("x", json!(1.0), json!(5.0), json!(-0.5))).starts_with("x.step:"));
        assert!(
            err(range("agents", json!(9), json!(5), json!(1)))
                .contains("min (9) must not be greater than max (5)")
        );
        assert!(
            err(list("algorithms", vec![])).starts_with("algorithms: the list of values is empty")
        );
    }

    #[test]
    fn oversize_sweeps_are_refused_before_expansion() {
        let spec = SweepSpec {
            dimensions: vec![
                range("a", json!(0), json!(i64::MAX - 1), json!(1)),
                range("b", json!(0), json!(i64::MAX - 1), json!(1)),
            ],
            ..Default::default()
        };
        assert!(matches!(
            Sweep::new(spec, DEFAULT_MAX_TASKS_PER_JOB),
            Err(SweepError::TooManyTasks { .. })
        ));
        let spec = SweepSpec {
            dimensions: vec![range("a", json!(1), json!(11), json!(1))],
            ..Default::default()
        };
        assert_eq!(
            Sweep::new(spec, 10).unwrap_err(),
            SweepError::TooManyTasks { count: 11, cap: 10 }
        );
    }

    #[test]
    fn explicit_task_lists() {
        let spec = SweepSpec {
            tasks: Some(vec![
                json!({"seed": 1}).as_object().unwrap().clone(),
                json!({"seed": 2}).as_object().unwrap().clone(),
            ]),
            ..Default::default()
        };
        let s = Sweep::new(spec, 10).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.payload(1)["seed"], json!(2));
        let spec = SweepSpec {
            tasks: Some(vec![]),
            ..Default::default()
        };
        assert!(Sweep::new(spec, 10).is_err());
    }

    /// The counted sizes are never below the real ones, and the sum is exact up to separators.
    #[test]
    fn payload_bytes_bound_the_real_payloads() {
        let mut shared = Map::new();
        shared.insert("jarPath".into(), json!("/test/opt.jar"));
        let spec = SweepSpec {
            shared,
            dimensions: vec![
                list("algorithm", vec![json!("PSO"), json!("GA")]),
                range("iterations", json!(100), json!(500), json!(100)),
            ],
            tasks: None,
        };
        let sweep = Sweep::new(spec, 100).unwrap();
        let sizes: Vec<u64> = (0..sweep.len())
            .map(|i| Value::Object(sweep.payload(i)).to_string().len() as u64)
            .collect();
        let (largest, total) = sweep.payload_bytes();
        assert!(largest >= *sizes.iter().max().unwrap());
        assert!(total >= sizes.iter().sum::<u64>());
        assert!(total <= sizes.iter().sum::<u64>() * 2, "{total} {sizes:?}");
    }

    /// The reproduction: a 500 KB shared field over 200 tasks.
    #[test]
    fn a_large_payload_times_many_tasks_is_refused_by_its_bytes() {
        let mut shared = Map::new();
        shared.insert("pad".into(), json!("P".repeat(500_000)));
        let spec = SweepSpec {
            shared,
            dimensions: vec![range("i", json!(1), json!(200), json!(1))],
            tasks: None,
        };
        let sweep = Sweep::new(spec, DEFAULT_MAX_TASKS_PER_JOB).unwrap();
        let limits = SizeLimits {
            task_payload_bytes: DEFAULT_MAX_TASK_PAYLOAD_BYTES,
            job_bytes: DEFAULT_MAX_JOB_BYTES,
        };
        assert!(matches!(
            sweep.check_size(limits),
            Err(SweepError::PayloadTooLarge { cap: 65536, .. })
        ));
        let roomy = SizeLimits {
            task_payload_bytes: 1 << 20,
            job_bytes: 50_000_000,
        };
        let e = sweep.check_size(roomy).unwrap_err();
        assert!(
            matches!(
                e,
                SweepError::JobTooLarge {
                    cap: 50_000_000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("50000000 bytes per job"), "{e}");
        let tasks = SweepSpec {
            tasks: Some(vec![
                json!({"a": "x".repeat(100)}).as_object().unwrap().clone(),
            ]),
            ..Default::default()
        };
        let small = SizeLimits {
            task_payload_bytes: 50,
            job_bytes: 1000,
        };
        assert!(Sweep::new(tasks, 10).unwrap().check_size(small).is_err());
    }
}
