//! What an agent runs for a task: a command template (an argv array with `{name}`
//! placeholders), environment variables, and whether a failed run may be retried.
//!
//! This module owns the template language and nothing about processes. A template is parsed
//! once, checked against the names a job's payloads will have (so a misspelt placeholder is a
//! submit-time error, not a thousand failed tasks), and rendered per task into plain strings.
//! Rendering substitutes text into argv elements; there is no shell, so no payload value can
//! become a second argument or a command, whatever it contains.
//!
//! Syntax: `{name}` is replaced by the value of `name`; `{{` and `}}` are literal braces.
//! A name is letters, digits, `_`, `-` and `.`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Names every task has besides its payload. A payload field of the same name wins.
pub const BUILTIN_NAMES: [&str; 4] = ["taskId", "jobId", "attempt", "workDir"];

/// The run settings of a job, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// argv templates; the first is the program.
    pub command: Vec<String>,
    /// Environment variables (values are templates too).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether a non-zero exit, timeout or crash may be retried (up to the job's attempts).
    #[serde(default = "yes")]
    pub retry_on_failure: bool,
}

fn yes() -> bool {
    true
}

/// Why a template is refused. `field` names what to fix, e.g. `command[2]` or `env.SEED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TemplateError {
    pub field: String,
    pub message: String,
}

fn template_error(field: &str, message: impl Into<String>) -> TemplateError {
    TemplateError {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Name(String),
}

/// One parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Whether `name` can appear as a placeholder.
pub fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(valid_name_char)
}

/// Escapes braces so that `text` renders as itself.
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

impl Template {
    /// Parses one template string; `field` is used in errors.
    pub fn parse(field: &str, text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(template_error(
                        field,
                        "a lone '}'; write '}}' for a literal brace",
                    ));
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if valid_name_char(c) => name.push(c),
                            Some(c) => {
                                return Err(template_error(
                                    field,
                                    format!(
                                        "'{c}' in a placeholder; names are letters, digits, \
                                         '_', '-' and '.' (write '{{{{' for a literal brace)"
                                    ),
                                ));
                            }
                            None => {
                                return Err(template_error(
                                    field,
                                    "a '{' that is never closed; write '{{' for a literal brace",
                                ));
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(template_error(field, "an empty placeholder '{}'"));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Name(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The placeholder names, in order of appearance.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Name(n) => Some(n.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Fills in every placeholder; the error is the first name `lookup` does not know.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, &str> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Name(n) => out.push_str(&lookup(n).ok_or(n.as_str())?),
            }
        }
        Ok(out)
    }
}

/// A value as it appears in an argument: strings as they are, numbers and booleans as JSON
/// writes them, null as nothing, arrays and objects as compact JSON.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The per-task values a template may name besides the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext<'a> {
    pub task_id: &'a str,
    pub job_id: &'a str,
    pub attempt: u32,
    pub work_dir: &'a str,
}

/// A run spec parsed and ready to render per task.
#[derive(Debug, Clone)]
pub struct Compiled {
    command: Vec<Template>,
    env: Vec<(String, Template)>,
}

/// One task's command line and environment, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl RunSpec {
    /// Parses every template and checks the variable names. Errors name the field to fix.
    pub fn compile(&self) -> Result<Compiled, TemplateError> {
        if self.command.is_empty() {
            return Err(template_error(
                "command",
                "must name at least the program to run",
            ));
        }
        if self.command[0].is_empty() {
            return Err(template_error(
                "command[0]",
                "the program must not be empty",
            ));
        }
        let command = self
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| Template::parse(&format!("command[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = Vec::with_capacity(self.env.len());
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(template_error(
                    &format!("env.{name}"),
                    "a variable name must be non-empty and contain neither '=' nor NUL",
                ));
            }
            env.push((
                name.clone(),
                Template::parse(&format!("env.{name}"), value)?,
            ));
        }
        Ok(Compiled { command, env })
    }
}

impl Compiled {
    /// Checks that every placeholder is a built-in name or satisfies `known` (which tells
    /// whether every task's payload will have that field).
    pub fn check_names(&self, known: impl Fn(&str) -> bool) -> Result<(), TemplateError> {
        let fields = self
            .command
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("command[{i}]"), t))
            .chain(self.env.iter().map(|(n, t)| (format!("env.{n}"), t)));
        for (field, template) in fields {
            for name in template.names() {
                if !BUILTIN_NAMES.contains(&name) && !known(name) {
                    return Err(template_error(
                        &field,
                        format!(
                            "placeholder {{{name}}} is not a field of every task; \
                             use a parameter name or one of {}",
                            BUILTIN_NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Renders the command and environment for one task. Fails with the first placeholder the
    /// task cannot fill (a payload that lacks a field the template names).
    pub fn render(
        &self,
        payload: &Map<String, Value>,
        ctx: &TaskContext<'_>,
    ) -> Result<Rendered, String> {
        let lookup = |name: &str| -> Option<String> {
            if let Some(v) = payload.get(name) {
                return Some(value_text(v));
            }
            match name {
                "taskId" => Some(ctx.task_id.to_string()),
                "jobId" => Some(ctx.job_id.to_string()),
                "attempt" => Some(ctx.attempt.to_string()),
                "workDir" => Some(ctx.work_dir.to_string()),
                _ => None,
            }
        };
        let mut argv = Vec::with_capacity(self.command.len());
        for t in &self.command {
            argv.push(t.render(lookup).map_err(|n| n.to_string())?);
        }
        let program = argv.remove(0);
        let mut env = Vec::with_capacity(self.env.len());
        for (name, t) in &self.env {
            env.push((name.clone(), t.render(lookup).map_err(|n| n.to_string())?));
        }
        Ok(Rendered {
            program,
            args: argv,
            env,
        })
    }
}

/// The batch contract's named sweep fields of a job request, each with the payload field it
/// gives every task: a job's `algorithms` list gives each task an `algorithm`.
pub const NAMED_DIMENSIONS: [(&str, &str); 4] = [
    ("algorithms", "algorithm"),
    ("iterations", "iterations"),
    ("agents", "agents"),
    ("dimension", "dimension"),
];

/// The payload fields every task of a job will have, as its request tells them: the shared
/// fields (`shared` and the contract's `jarPath`, `mainClass`), one field per swept dimension,
/// and, for a job of explicit tasks, the fields all of them have. This is the one rule for
/// which placeholders a job's templates may use: the server applies it when a job is created,
/// the CLI before it sends a job file, so that both refuse the same templates.
#[derive(Debug, Clone, Copy)]
pub struct PayloadFields<'a> {
    pub shared: &'a [&'a str],
    pub dimensions: &'a [&'a str],
    pub tasks: Option<&'a [Map<String, Value>]>,
}

impl PayloadFields<'_> {
    /// Whether the payload of every task of the job has field `name`. No task at all (an
    /// empty task list) has none.
    pub fn every_task_has(&self, name: &str) -> bool {
        self.shared.contains(&name)
            || self.dimensions.contains(&name)
            || self
                .tasks
                .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| t.contains_key(name)))
    }

    /// Every name a placeholder may use: the built-in names, the shared fields, the dimensions
    /// and the fields all explicit tasks have, for a message that suggests one.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = BUILTIN_NAMES.to_vec();
        names.extend(self.shared);
        names.extend(self.dimensions);
        if let Some(first) = self.tasks.and_then(|ts| ts.first()) {
            names.extend(
                first
                    .keys()
                    .map(String::as_str)
                    .filter(|k| self.every_task_has(k)),
            );
        }
        names
    }
}

/// The command for the batch contract's `jarPath`/`mainClass` jobs: `java -cp {jarPath}
/// {mainClass}` followed by `--<name> {<name>}` for each swept parameter that can be named.
pub fn java_default(parameter_names: &[String]) -> Vec<String> {
    let mut command = vec![
        "java".to_string(),
        "-cp".into(),
        "{jarPath}".into(),
        "{mainClass}".into(),
    ];
    for name in parameter_names.iter().filter(|n| is_placeholder_name(n)) {
        command.push(escape(&format!("--{name}")));
        command.push(format!("{{{name}}}"));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(command: &[&str]) -> RunSpec {
        RunSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            retry_on_failure: true,
        }
    }

    fn ctx() -> TaskContext<'static> {
        TaskContext {
            task_id: "task-1",
            job_id: "job-1",
            attempt: 2,
            work_dir: "/tmp/w",
        }
    }

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_fill_whole_and_partial_arguments() {
        let c = spec(&[
            "opt",
            "--alg={algorithm}",
            "{dimension}",
            "{taskId}:{attempt}",
        ])
        .compile()
        .unwrap();
        let r = c
            .render(
                &payload(json!({"algorithm": "pso", "dimension": 10})),
                &ctx(),
            )
            .unwrap();
        assert_eq!(r.program, "opt");
        assert_eq!(r.args, ["--alg=pso", "10", "task-1:2"]);
    }

    #[test]
    fn hostile_values_stay_one_literal_argument() {
        let c = spec(&["echo", "{x}"]).compile().unwrap();
        for hostile in [
            "a b",
            "\"quoted\" 'single'",
            "; rm -rf /",
            "$(touch /tmp/pwned)",
            "`id`",
            "line1\nline2",
            "{taskId}",
        ] {
            let r = c.render(&payload(json!({ "x": hostile })), &ctx()).unwrap();
            assert_eq!(r.args, [hostile], "value {hostile:?}");
        }
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(value_text(&json!("s")), "s");
        assert_eq!(value_text(&json!(1.5)), "1.5");
        assert_eq!(value_text(&json!(true)), "true");
        assert_eq!(value_text(&json!(null)), "");
        assert_eq!(value_text(&json!([1, 2])), "[1,2]");
    }

    #[test]
    fn braces_escape_and_errors_point_at_the_field() {
        let t = Template::parse("f", "{{literal}}").unwrap();
        assert_eq!(t.render(|_| None).unwrap(), "{literal}");
        for bad in ["{open", "close}", "{}", "{a b}"] {
            let e = spec(&["p", bad]).compile().unwrap_err();
            assert_eq!(e.field, "command[1]", "{bad}");
        }
        assert_eq!(spec(&[]).compile().unwrap_err().field, "command");
    }

    #[test]
    fn unknown_names_are_refused_at_submit_time() {
        let c = spec(&["p", "{algoritm}", "{taskId}"]).compile().unwrap();
        let e = c.check_names(|n| n == "algorithm").unwrap_err();
        assert_eq!(e.field, "command[1]");
        assert!(e.message.contains("{algoritm}"), "{e}");
        assert!(c.check_names(|n| n == "algoritm").is_ok());
    }

    #[test]
    fn a_placeholder_must_name_a_field_of_every_task() {
        let tasks = [
            payload(json!({"seed": 1, "only_first": true})),
            payload(json!({"seed": 2})),
        ];
        let fields = PayloadFields {
            shared: &["jarPath", "budget"],
            dimensions: &["algorithm"],
            tasks: Some(&tasks),
        };
        for known in ["jarPath", "budget", "algorithm", "seed"] {
            assert!(fields.every_task_has(known), "{known}");
        }
        assert!(!fields.every_task_has("only_first"));
        assert!(!fields.every_task_has("algorithms"));
        let names = fields.names();
        assert!(
            names.contains(&"taskId") && names.contains(&"seed"),
            "{names:?}"
        );
        assert!(!names.contains(&"only_first"), "{names:?}");
        let none = PayloadFields {
            tasks: Some(&[]),
            ..fields
        };
        assert!(!none.every_task_has("seed"));
    }

    #[test]
    fn env_values_are_templates() {
        let mut s = spec(&["p"]);
        s.env.insert("SEED".into(), "{seed}-{attempt}".into());
        let r = s
            .compile()
            .unwrap()
            .render(&payload(json!({"seed": 7})), &ctx())
            .unwrap();
        assert_eq!(r.env, [("SEED".to_string(), "7-2".to_string())]);
        s.env.insert("A=B".into(), "x".into());
        assert_eq!(s.compile().unwrap_err().field, "env.A=B");
    }

    #[test]
    fn java_default_passes_each_parameter() {
        let c = java_default(&["algorithm".into(), "dimension".into()]);
        assert_eq!(
            c,
            [
                "java",
                "-cp",
                "{jarPath}",
                "{mainClass}",
                "--algorithm",
                "{algorithm}",
                "--dimension",
                "{dimension}"
            ]
        );
        assert!(
            spec(&c.iter().map(String::as_str).collect::<Vec<_>>())
                .compile()
                .is_ok()
        );
    }
}
