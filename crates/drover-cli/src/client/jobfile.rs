//! Job files for `drover submit`: a job written as TOML (or JSON), read into [`JobFile`],
//! checked, and turned into the API's `CreateJobRequest`.
//!
//! This module owns the file format: snake_case keys, with the API's camelCase names accepted
//! as aliases so that a JSON body for `POST /api/v1/jobs` is a job file unchanged; durations
//! written as text; and the resolution of relative paths in `command`. Its errors name the
//! file and the key (or line and column). It must not expand placeholders (agents do that,
//! task by task), nor re-implement the server's validation: the few checks here exist to give a
//! message that names the key before anything is sent, and the server checks every request
//! again. Placeholders are checked by the core's rule (`drover_core::run::PayloadFields`), the
//! one the server applies, so that a file refused here would be refused there.

use drover_api::CreateJobRequest;
use drover_core::run::{self, RunSpec};
use drover_core::sweep::{RangeFault, range_len};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The two syntaxes a job file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Json,
}

impl Syntax {
    /// JSON for a `.json` file or a text that starts with `{` (a request body saved as is);
    /// TOML otherwise.
    pub fn detect(path: &Path, text: &str) -> Syntax {
        let json_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if json_name || text.trim_start().starts_with('{') {
            Syntax::Json
        } else {
            Syntax::Toml
        }
    }
}

/// A job file as written. Field by field it is `CreateJobRequest`, except that the task
/// timeout may be given as a duration and `command` may hold paths relative to the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    name: Option<String>,
    /// What agents run per task: an argv with `{name}` placeholders.
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    #[serde(alias = "retryOnFailure")]
    retry_on_failure: Option<bool>,
    priority: Option<i64>,
    #[serde(alias = "maxAttempts")]
    max_attempts: Option<u32>,
    /// A duration such as `"2m"` or `"90s"`.
    task_timeout: Option<String>,
    #[serde(alias = "taskTimeoutSeconds")]
    task_timeout_seconds: Option<u64>,
    /// Swept parameters by name, in document order: the first varies slowest.
    parameters: Option<Map<String, Value>>,
    /// Explicit task payloads instead of a sweep.
    tasks: Option<Vec<Map<String, Value>>>,
    shared: Option<Map<String, Value>>,
    // The batch contract's named fields, passed on as they are.
    #[serde(alias = "jarPath")]
    jar_path: Option<String>,
    #[serde(alias = "mainClass")]
    main_class: Option<String>,
    algorithms: Option<Value>,
    iterations: Option<Value>,
    agents: Option<Value>,
    dimension: Option<Value>,
}

/// A job file that cannot be submitted; the message names the file and what is wrong where.
#[derive(Debug)]
pub struct JobFileError(pub String);

impl std::fmt::Display for JobFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobFileError {}

/// Reads, checks and converts the job file at `path`.
pub fn load(path: &Path) -> Result<CreateJobRequest, JobFileError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobFileError(format!("cannot read the job file {shown}: {e}")))?;
    let syntax = Syntax::detect(path, &text);
    let file =
        parse(&text, syntax).map_err(|m| JobFileError(format!("in the job file {shown}: {m}")))?;
    let dir = directory_of(path).map_err(|m| JobFileError(format!("the job file {shown}: {m}")))?;
    file.into_request(syntax, &dir)
        .map_err(|m| JobFileError(format!("in the job file {shown}: {m}")))
}

/// Parses a job file's text. TOML errors carry the line, the column and the offending text;
/// JSON errors the path of the key, the line and the column.
pub fn parse(text: &str, syntax: Syntax) -> Result<JobFile, String> {
    let mut file: JobFile = match syntax {
        Syntax::Toml => toml::from_str(text)
            .map_err(|e| crate::suggest::unknown_field(e.to_string().trim_end()))?,
        Syntax::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let file = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = crate::suggest::unknown_field(&e.into_inner().to_string());
                if path == "." {
                    inner
                } else {
                    format!("{path}: {inner}")
                }
            })?;
            // Text after the object is a broken file, not something to ignore.
            de.end().map_err(|e| e.to_string())?;
            file
        }
    };
    file.datetimes_as_text();
    Ok(file)
}

/// The absolute directory a job file is in: where relative paths in it start from.
fn directory_of(path: &Path) -> Result<PathBuf, String> {
    let absolute =
        std::path::absolute(path).map_err(|e| format!("cannot make its path absolute: {e}"))?;
    Ok(absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// A duration written as text, in whole seconds, at least one: the API counts task timeouts in
/// whole seconds and rounding a user's number silently would change their job.
fn whole_seconds(text: &str) -> Result<u64, String> {
    let d: Duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration such as \"90s\", \"2m\" or \"1h 30m\" ({e})")
    })?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than the shortest timeout, 1s"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?} is not a whole number of seconds; timeouts are counted in seconds"
        ));
    }
    Ok(d.as_secs())
}

/// Checks the shape of one swept dimension (a list, a `{min, max, step}` range, or one bare
/// value), naming the key path of what is wrong.
fn check_dimension(path: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::Array(items) if items.is_empty() => Err(format!(
            "{path}: an empty list gives no tasks at all; give at least one value"
        )),
        Value::Null => Err(format!(
            "{path}: expected a list of values or {{min, max, step}}"
        )),
        Value::Object(range) => {
            if let Some(key) = range
                .keys()
                .find(|k| !matches!(k.as_str(), "min" | "max" | "step"))
            {
                return Err(format!(
                    "{path}.{key}: unknown key in a range; a range has min, max and step"
                ));
            }
            let number = |key: &str| match range.get(key) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(Some(n)),
                Some(other) => Err(format!("{path}.{key}: expected a number, got {other}")),
            };
            let (Some(min), Some(max)) = (number("min")?, number("max")?) else {
                return Err(format!(
                    "{path}: a range needs both min and max (and optionally step)"
                ));
            };
            // The server's default step; the core's range rule decides, this names the key.
            let one = serde_json::Number::from(1);
            let step = number("step")?.unwrap_or(&one);
            match range_len(min, max, step) {
                Ok(_) => Ok(()),
                Err(RangeFault::Step) => {
                    Err(format!("{path}.step: must be greater than 0, got {step}"))
                }
                Err(RangeFault::Bounds) => {
                    Err(format!("{path}: min and max must be finite numbers"))
                }
                Err(RangeFault::MinAboveMax) => {
                    Err(format!("{path}: min ({min}) is greater than max ({max})"))
                }
            }
        }
        _ => Ok(()),
    }
}

/// Checks the command and env templates by the core's own rule (`drover_core::run`): each
/// `{placeholder}` must name a field every task's payload will have, or a built-in name. The
/// server checks again; checking here names the job file and exits before anything is sent.
fn check_placeholders(request: &CreateJobRequest) -> Result<(), String> {
    let Some(command) = &request.command else {
        // Without a command the server runs the contract's default, which names only fields
        // the job has, or refuses `env` on its own.
        return Ok(());
    };
    let spec = RunSpec {
        command: command.clone(),
        env: request.env.clone().unwrap_or_default(),
        retry_on_failure: request.retry_on_failure.unwrap_or(true),
    };
    let compiled = spec.compile().map_err(|e| e.to_string())?;
    // The request's fields as the server shapes them into every task's payload.
    let contract = [
        request.jar_path.as_ref().map(|_| "jarPath"),
        request.main_class.as_ref().map(|_| "mainClass"),
    ];
    let mut shared: Vec<&str> = contract.into_iter().flatten().collect();
    shared.extend(request.shared.iter().flatten().map(|(k, _)| k.as_str()));
    let named = [
        &request.algorithms,
        &request.iterations,
        &request.agents,
        &request.dimension,
    ];
    let mut dimensions: Vec<&str> = run::NAMED_DIMENSIONS
        .iter()
        .zip(named)
        .filter(|(_, value)| value.is_some())
        .map(|((_, name), _)| *name)
        .collect();
    dimensions.extend(request.parameters.iter().flatten().map(|(k, _)| k.as_str()));
    let fields = run::PayloadFields {
        shared: &shared,
        dimensions: &dimensions,
        tasks: request.tasks.as_deref(),
    };
    compiled
        .check_names(|name| fields.every_task_has(name))
        .map_err(|e| {
            let unknown = spec_placeholder(&e.message);
            let hint = unknown
                .and_then(|name| crate::suggest::closest(name, fields.names()))
                .map(|name| format!(" (did you mean {{{name}}}?)"))
                .unwrap_or_default();
            let fix = if dimensions.is_empty() && shared.is_empty() && request.tasks.is_none() {
                "; add it under [parameters] or [shared], or write {{ for a literal brace"
            } else {
                ""
            };
            format!("{e}{hint}{fix}")
        })
}

/// The placeholder a template error is about: the name between the first `{` and `}`.
fn spec_placeholder(message: &str) -> Option<&str> {
    let start = message.find('{')? + 1;
    let end = start + message[start..].find('}')?;
    Some(&message[start..end])
}

/// Resolves one `command` element. An element that starts with `./` or `../` is a path
/// relative to the job file's directory, not to wherever `drover submit` happens to run (the
/// rule Docker Compose applies to paths in its file), so it is made absolute here; agents then
/// find the program whatever their own working directory. Only whole elements with those
/// prefixes change: `--out=./x` or `{script}` are passed on as written.
fn resolve(arg: String, dir: &Path) -> Result<String, String> {
    let relative = if let Some(rest) = arg.strip_prefix("./") {
        rest
    } else if arg.starts_with("../") {
        arg.as_str()
    } else {
        return Ok(arg);
    };
    let joined = dir.join(relative);
    joined.to_str().map(String::from).ok_or_else(|| {
        format!(
            "{arg:?} would become {}, which is not valid UTF-8",
            joined.display()
        )
    })
}

impl JobFile {
    /// The request to send. `dir` is the absolute directory of the job file.
    pub fn into_request(self, syntax: Syntax, dir: &Path) -> Result<CreateJobRequest, String> {
        // Errors name keys as the file spells them.
        let timeout_seconds_key = match syntax {
            Syntax::Toml => "task_timeout_seconds",
            Syntax::Json => "taskTimeoutSeconds",
        };
        let task_timeout_seconds = match (self.task_timeout, self.task_timeout_seconds) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "task_timeout and {timeout_seconds_key} are both set; give only one of them"
                ));
            }
            (Some(text), None) => {
                Some(whole_seconds(&text).map_err(|m| format!("task_timeout: {m}"))?)
            }
            (None, Some(0)) => {
                return Err(format!("{timeout_seconds_key}: must be at least 1"));
            }
            (None, seconds) => seconds,
        };

        let named = [
            ("algorithms", &self.algorithms),
            ("iterations", &self.iterations),
            ("agents", &self.agents),
            ("dimension", &self.dimension),
        ];
        for (key, value) in named {
            if let Some(value) = value {
                check_dimension(key, value)?;
            }
        }
        for (name, value) in self.parameters.iter().flatten() {
            check_dimension(&format!("parameters.{name}"), value)?;
        }

        let command = match self.command {
            Some(argv) if argv.is_empty() => {
                return Err(
                    "command: must name a program to run, e.g. [\"python3\", \"./run.py\"]".into(),
                );
            }
            Some(argv) => Some(
                argv.into_iter()
                    .enumerate()
                    .map(|(i, arg)| resolve(arg, dir).map_err(|m| format!("command[{i}]: {m}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };

        let request = CreateJobRequest {
            name: self.name,
            jar_path: self.jar_path,
            main_class: self.main_class,
            algorithms: self.algorithms,
            iterations: self.iterations,
            agents: self.agents,
            dimension: self.dimension,
            parameters: self.parameters,
            tasks: self.tasks,
            shared: self.shared,
            priority: self.priority,
            max_attempts: self.max_attempts,
            task_timeout_seconds,
            command,
            env: self.env,
            retry_on_failure: self.retry_on_failure,
        };
        check_placeholders(&request)?;
        Ok(request)
    }

    /// TOML dates and times reach a JSON value as the toml crate's private marker object;
    /// tasks should see the text the user wrote instead.
    fn datetimes_as_text(&mut self) {
        let values = [
            &mut self.algorithms,
            &mut self.iterations,
            &mut self.agents,
            &mut self.dimension,
        ];
        for value in values.into_iter().flatten() {
            datetime_as_text(value);
        }
        let maps = [&mut self.parameters, &mut self.shared];
        for map in maps.into_iter().flatten() {
            map.values_mut().for_each(datetime_as_text);
        }
        for task in self.tasks.iter_mut().flatten() {
            task.values_mut().for_each(datetime_as_text);
        }
    }
}

/// The key under which toml hands a date or time to a deserializer that does not know it.
const TOML_DATETIME: &str = "$__toml_private_datetime";

fn datetime_as_text(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.len() == 1
                && let Some(Value::String(text)) = map.get(TOML_DATETIME)
            {
                *value = Value::String(text.clone());
                return;
            }
            map.values_mut().for_each(datetime_as_text);
        }
        Value::Array(items) => items.iter_mut().for_each(datetime_as_text),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"
name = "rastrigin sweep"
command = ["python3", "./optimize.py", "--algorithm", "{algorithm}", "--dimension", "{dimension}", "--iterations", "{iterations}", "--seed", "{seed}"]
priority = 0
max_attempts = 3
task_timeout = "2m"        # humantime duration string; or task_timeout_seconds = 120 (integer); not both
retry_on_failure = true
[env]                      # values are templates like command arguments
PYTHONUNBUFFERED = "1"
[parameters]               # swept, in this order (first varies slowest); a list or {min, max, step}
algorithm = ["random", "pso", "de"]
dimension = [2, 5]
iterations = { min = 100, max = 200, step = 100 }
seed = [1, 2]
[shared]                   # copied into every task's payload
function = "rastrigin"
"#;

    fn dir() -> PathBuf {
        PathBuf::from("/srv/jobs/sweep")
    }

    fn toml_request(text: &str) -> Result<CreateJobRequest, String> {
        parse(text, Syntax::Toml)?.into_request(Syntax::Toml, &dir())
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn the_documented_example_becomes_the_expected_request() {
        let request = toml_request(EXAMPLE).unwrap();
        let expected = CreateJobRequest {
            name: Some("rastrigin sweep".into()),
            command: Some(
                [
                    "python3",
                    "/srv/jobs/sweep/optimize.py",
                    "--algorithm",
                    "{algorithm}",
                    "--dimension",
                    "{dimension}",
                    "--iterations",
                    "{iterations}",
                    "--seed",
                    "{seed}",
                ]
                .map(String::from)
                .to_vec(),
            ),
            priority: Some(0),
            max_attempts: Some(3),
            task_timeout_seconds: Some(120),
            retry_on_failure: Some(true),
            env: Some(BTreeMap::from([("PYTHONUNBUFFERED".into(), "1".into())])),
            parameters: Some(object(json!({
                "algorithm": ["random", "pso", "de"],
                "dimension": [2, 5],
                "iterations": {"min": 100, "max": 200, "step": 100},
                "seed": [1, 2],
            }))),
            shared: Some(object(json!({"function": "rastrigin"}))),
            ..Default::default()
        };
        assert_eq!(request, expected);
    }

    #[test]
    fn parameters_keep_the_order_they_are_written_in() {
        // Not alphabetical, so a sorted map would show.
        let request = toml_request(
            "[parameters]\nzeta = [1]\nalpha = [2]\nmid = { min = 1, max = 2 }\nbeta = [3]\n",
        )
        .unwrap();
        let names: Vec<&str> = request
            .parameters
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid", "beta"]);
        // And they reach the wire in that order.
        let body = serde_json::to_string(&request).unwrap();
        let positions: Vec<usize> = ["zeta", "alpha", "mid", "beta"]
            .iter()
            .map(|n| body.find(&format!("\"{n}\"")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{body}");
    }

    #[test]
    fn a_json_request_body_is_a_job_file_unchanged() {
        let body = r#"{
            "name": "demo",
            "jarPath": "/opt/optimizer.jar",
            "mainClass": "com.example.OptRunner",
            "algorithms": ["PSO", "GA"],
            "iterations": {"min": 100, "max": 200, "step": 100},
            "agents": 10,
            "parameters": {"seed": [3, 1, 2], "lr": {"min": 0.1, "max": 0.3, "step": 0.1}},
            "shared": {"budget": 5},
            "priority": 2,
            "maxAttempts": 4,
            "taskTimeoutSeconds": 60,
            "command": ["java", "-jar", "{jarPath}"],
            "env": {"A": "{seed}"},
            "retryOnFailure": false
        }"#;
        assert_eq!(Syntax::detect(Path::new("job.txt"), body), Syntax::Json);
        let via_file = parse(body, Syntax::Json)
            .unwrap()
            .into_request(Syntax::Json, &dir())
            .unwrap();
        let as_api: CreateJobRequest = serde_json::from_str(body).unwrap();
        assert_eq!(via_file, as_api);
    }

    #[test]
    fn explicit_tasks_and_contract_fields_are_accepted_in_toml() {
        let request = toml_request(
            "jar_path = \"/opt/o.jar\"\nmain_class = \"Main\"\n\
             [[tasks]]\nalgorithm = \"PSO\"\nwhen = 2026-01-02\n\
             [[tasks]]\nalgorithm = \"GA\"\n",
        )
        .unwrap();
        assert_eq!(request.jar_path.as_deref(), Some("/opt/o.jar"));
        assert_eq!(request.main_class.as_deref(), Some("Main"));
        let tasks = request.tasks.unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0]["algorithm"], "PSO");
        // A TOML date reaches the payload as the text written.
        assert_eq!(tasks[0]["when"], "2026-01-02");
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it_and_its_line() {
        let err = toml_request("name = \"x\"\nprority = 1\n").unwrap_err();
        assert!(err.contains("prority"), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let err = toml_request("[parameters]\nseed = [1]\n[sharred]\nx = 1\n").unwrap_err();
        assert!(err.contains("sharred"), "{err}");
        assert!(err.contains("line 3"), "{err}");

        let err = parse("{\"name\": \"x\",\n \"maxAttempt\": 3}", Syntax::Json).unwrap_err();
        assert!(err.contains("maxAttempt"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn an_unknown_key_names_the_closest_valid_one_first() {
        let err = toml_request("name = \"x\"\nprority = 1\n").unwrap_err();
        let suggestion = err
            .find("did you mean `priority`?")
            .unwrap_or_else(|| panic!("no suggestion in: {err}"));
        // Any list of valid keys comes after the suggestion.
        assert!(
            err.find("`command`").is_none_or(|at| at > suggestion),
            "{err}"
        );

        let err = toml_request("retry_on_failur = true\n").unwrap_err();
        assert!(err.contains("did you mean `retry_on_failure`?"), "{err}");
        let err = parse("{\"name\": \"x\",\n \"maxAttempt\": 3}", Syntax::Json).unwrap_err();
        assert!(err.contains("did you mean `maxAttempts`?"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // Nothing close: no guess.
        let err = toml_request("zebra = 1\n").unwrap_err();
        assert!(
            err.contains("zebra") && !err.contains("did you mean"),
            "{err}"
        );
    }

    #[test]
    fn a_placeholder_must_name_a_field_of_every_task() {
        let err = toml_request("command = [\"run\", \"{seeed}\"]\n[parameters]\nseed = [1, 2]\n")
            .unwrap_err();
        assert!(err.starts_with("command[1]: placeholder {seeed}"), "{err}");
        assert!(err.contains("did you mean {seed}?"), "{err}");

        let err = toml_request("command = [\"run\"]\n[env]\nX = \"{nope}\"\n[shared]\na = 1\n")
            .unwrap_err();
        assert!(err.starts_with("env.X: placeholder {nope}"), "{err}");
        let err = toml_request("command = [\"run\", \"{open\"]\n").unwrap_err();
        assert!(err.starts_with("command[1]: "), "{err}");

        // Every way a job gives its tasks a field, as the server shapes the payloads.
        let accepted = [
            "command = [\"run\", \"{seed}\", \"{taskId}\", \"{workDir}\"]\n[parameters]\nseed = [1]\n",
            "command = [\"run\", \"{fn}\"]\n[shared]\nfn = \"f\"\n",
            "command = [\"run\", \"{algorithm}\", \"{iterations}\"]\nalgorithms = [\"PSO\"]\niterations = 10\n",
            "command = [\"java\", \"-cp\", \"{jarPath}\", \"{mainClass}\"]\njar_path = \"/o.jar\"\nmain_class = \"M\"\n",
            "command = [\"run\", \"{x}\"]\n[[tasks]]\nx = 1\n[[tasks]]\nx = 2\ny = 3\n",
            "command = [\"printf\", \"{{literal}}\"]\n",
        ];
        for text in accepted {
            assert!(
                toml_request(text).is_ok(),
                "{text}: {:?}",
                toml_request(text)
            );
        }
        // A field only some explicit tasks have is not a field of every task.
        let err =
            toml_request("command = [\"run\", \"{y}\"]\n[[tasks]]\nx = 1\n[[tasks]]\ny = 2\n")
                .unwrap_err();
        assert!(err.contains("{y}"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_key_path() {
        let err = toml_request("[env]\nPYTHONUNBUFFERED = 1\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("PYTHONUNBUFFERED"), "{err}");

        let err = parse("{\"env\": {\"A\": 1}}", Syntax::Json).unwrap_err();
        assert!(err.starts_with("env.A: "), "{err}");
    }

    #[test]
    fn the_task_timeout_is_a_duration_or_whole_seconds_but_not_both() {
        let seconds = |text: &str| toml_request(text).map(|r| r.task_timeout_seconds);
        assert_eq!(seconds("task_timeout = \"2m\"").unwrap(), Some(120));
        assert_eq!(seconds("task_timeout = \"1h 30m\"").unwrap(), Some(5400));
        assert_eq!(seconds("task_timeout_seconds = 90").unwrap(), Some(90));
        assert_eq!(seconds("").unwrap(), None);

        let err = seconds("task_timeout = \"2m\"\ntask_timeout_seconds = 120").unwrap_err();
        assert!(
            err.contains("task_timeout and task_timeout_seconds"),
            "{err}"
        );
        for bad in ["\"soon\"", "\"1500ms\"", "\"500ms\"", "\"0s\""] {
            let err = seconds(&format!("task_timeout = {bad}")).unwrap_err();
            assert!(err.starts_with("task_timeout: "), "{bad}: {err}");
        }
        let err = seconds("task_timeout_seconds = 0").unwrap_err();
        assert!(err.starts_with("task_timeout_seconds: "), "{err}");
        // A number where a duration text is expected is a type error at its line.
        let err = seconds("task_timeout = 120").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn relative_command_paths_start_at_the_job_file() {
        let request = toml_request(
            r#"command = ["./bin/run", "../shared/tool.py", "python3", "{script}", "--out=./x", "a/./b", "."]
               shared = { script = "s.py" }"#,
        )
        .unwrap();
        assert_eq!(
            request.command.unwrap(),
            [
                "/srv/jobs/sweep/bin/run",
                "/srv/jobs/sweep/../shared/tool.py",
                "python3",
                "{script}",
                "--out=./x",
                "a/./b",
                "."
            ]
        );
        assert!(
            toml_request("command = []")
                .unwrap_err()
                .starts_with("command: ")
        );
    }

    #[test]
    fn the_directory_of_a_bare_file_name_is_the_current_one() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(directory_of(Path::new("job.toml")).unwrap(), cwd);
        assert_eq!(
            directory_of(Path::new("/a/b/job.toml")).unwrap(),
            PathBuf::from("/a/b")
        );
    }

    #[test]
    fn a_bad_range_names_its_key_path() {
        let cases = [
            (
                "[parameters]\niterations = { min = 1, max = 5, step = 0 }",
                "parameters.iterations.step",
            ),
            (
                "[parameters]\nlr = { min = 0.5, max = 0.1 }",
                "parameters.lr: min (0.5) is greater",
            ),
            (
                "[parameters]\nseed = { min = 1, max = 5, stp = 1 }",
                "parameters.seed.stp",
            ),
            (
                "[parameters]\nseed = { max = 5 }",
                "parameters.seed: a range needs",
            ),
            ("[parameters]\nseed = []", "parameters.seed: an empty list"),
            (
                "iterations = { min = \"1\", max = 5 }",
                "iterations.min: expected a number",
            ),
        ];
        for (text, expected) in cases {
            let err = toml_request(text).unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        // A bare value is one point, as the API allows.
        assert!(toml_request("dimension = 10").is_ok());
    }

    #[test]
    fn load_names_the_file_in_every_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, "name = \n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("line 1"), "{err}");

        let err = load(&tmp.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");

        let path = tmp.path().join("job.json");
        std::fs::write(&path, "{\"command\": [\"./run.sh\"]} trailing").unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, "{\"command\": [\"./run.sh\"]}").unwrap();
        let command = load(&path).unwrap().command.unwrap();
        assert_eq!(command, [tmp.path().join("run.sh").to_str().unwrap()]);
    }
}
