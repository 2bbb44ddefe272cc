//! What a finished run means: the result line found in stdout, the tails of both streams, and
//! the report to send (complete or fail, retriable or not).
//!
//! Pure and synchronous: bytes in, decisions out. It must not spawn, wait or talk to the server;
//! `exec` feeds it and `agent` sends what it decides.

use drover_api::{BatchReport, CompleteRequest, FailRequest, ReportVerb};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// Longest stdout line examined as a possible result; longer lines are skipped, not buffered.
pub const MAX_RESULT_LINE: usize = 1024 * 1024;

/// The last `cap` bytes of a stream.
#[derive(Debug, Clone)]
pub struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
    /// Whether anything was dropped from the front.
    cut: bool,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            cap,
            bytes: VecDeque::with_capacity(cap.min(64 * 1024)),
            cut: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.cap {
            self.cut = true;
            &chunk[chunk.len() - self.cap..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.cut = true;
            self.bytes.drain(..overflow);
        }
        self.bytes.extend(chunk);
    }

    /// The tail as text. Invalid UTF-8 (including a character cut in half at the front) is
    /// replaced; a cut tail starts with `…`.
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut raw = Vec::with_capacity(a.len() + b.len());
        raw.extend_from_slice(a);
        raw.extend_from_slice(b);
        let text = String::from_utf8_lossy(&raw);
        if self.cut {
            format!("…{}", text.trim_start_matches('\u{FFFD}'))
        } else {
            text.into_owned()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Watches stdout line by line for the result: the last line that parses as a JSON object.
#[derive(Debug, Default)]
pub struct ResultScanner {
    line: Vec<u8>,
    /// The current line passed [`MAX_RESULT_LINE`]; skip it up to its end.
    skipping: bool,
    last: Option<Map<String, Value>>,
}

impl ResultScanner {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..pos]);
            self.end_line();
            chunk = &chunk[pos + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + part.len() > MAX_RESULT_LINE {
            self.skipping = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) {
        if !self.skipping {
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim();
            if text.starts_with('{')
                && let Ok(Value::Object(o)) = serde_json::from_str(text)
            {
                self.last = Some(o);
            }
        }
        self.line.clear();
        self.skipping = false;
    }

    /// The result, once the stream has ended (a last line without a newline counts).
    pub fn finish(mut self) -> Option<Map<String, Value>> {
        if !self.line.is_empty() {
            self.end_line();
        }
        self.last
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The process exited with this code.
    Exited(i32),
    /// The process was ended by this signal (not by the agent).
    Signalled(i32),
    /// The agent killed it at the task timeout.
    TimedOut(Duration),
    /// The agent killed it because the agent is stopping.
    Stopped,
    /// The program could not be started (or its working directory made).
    NotStarted(String),
}

/// Everything known about a finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub ending: Ending,
    pub elapsed: Duration,
    pub stdout: Tail,
    pub stderr: Tail,
    pub result: Option<Map<String, Value>>,
}

/// The report a run leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Complete(CompleteRequest),
    Fail(FailRequest),
}

impl Report {
    /// The report as one entry of a batch (`/tasks/report`, `/tasks/exchange`) for `task_id`.
    pub fn to_batch(&self, task_id: &str) -> BatchReport {
        let none = BatchReport::new(task_id, ReportVerb::Complete);
        match self {
            Report::Complete(r) => BatchReport {
                attempt: r.attempt,
                runtime_ms: r.runtime_ms,
                iter: r.iter,
                fopt: r.fopt,
                result_json: r.result_json.clone(),
                output: r.output.clone(),
                ..none
            },
            Report::Fail(r) => BatchReport {
                outcome: ReportVerb::Fail,
                attempt: r.attempt,
                error: r.error.clone(),
                retriable: r.retriable,
                ..none
            },
        }
    }
}

/// The combined output tail kept with a result, or `None` if the run printed nothing.
fn output_text(f: &Finished) -> Option<String> {
    let mut text = String::new();
    if !f.stdout.is_empty() {
        text.push_str(&f.stdout.text());
    }
    if !f.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("--- stderr ---\n");
        text.push_str(&f.stderr.text());
    }
    (!text.is_empty()).then_some(text)
}

fn why(ending: &Ending) -> String {
    match ending {
        Ending::Exited(code) => format!("exited with code {code}"),
        Ending::Signalled(sig) => format!("killed by signal {sig}"),
        Ending::TimedOut(t) => format!("killed after the task timeout ({})", humanize(*t)),
        Ending::Stopped => "stopped: the agent shut down before the task finished".into(),
        Ending::NotStarted(e) => format!("could not start: {e}"),
    }
}

/// A duration as people read it in messages: `2s`, `1.5s`.
pub(crate) fn humanize(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{secs:.1}s")
    }
}

/// Decides the report for a finished run of attempt `attempt` by `spot_id`.
///
/// Exit 0 is a success, with the result line's `fopt`, `iter` and `runtimeMs` lifted into the
/// contract's fields (a missing or non-numeric field stays empty; `runtimeMs` defaults to the
/// measured time) and the whole object as `resultJson`. Anything else is a failure whose error
/// says why and ends with the stderr tail; it is retriable if the job allows retries, and always
/// when the agent stopped it (the task did nothing wrong).
pub fn report(spot_id: &str, attempt: u32, f: &Finished, retry_on_failure: bool) -> Report {
    if f.ending == Ending::Exited(0) {
        let field = |name: &str| f.result.as_ref().and_then(|r| r.get(name));
        let measured = i64::try_from(f.elapsed.as_millis()).unwrap_or(i64::MAX);
        return Report::Complete(CompleteRequest {
            spot_id: spot_id.to_string(),
            runtime_ms: Some(
                field("runtimeMs")
                    .and_then(Value::as_i64)
                    .unwrap_or(measured),
            ),
            iter: field("iter").and_then(Value::as_i64),
            fopt: field("fopt").and_then(Value::as_f64),
            result_json: f
                .result
                .as_ref()
                .map(|r| Value::String(Value::Object(r.clone()).to_string())),
            output: output_text(f),
            attempt: Some(attempt),
        });
    }
    let mut error = why(&f.ending);
    if !f.stderr.is_empty() {
        error.push_str("\n--- stderr ---\n");
        error.push_str(&f.stderr.text());
    } else if !f.stdout.is_empty() {
        error.push_str("\n--- stdout ---\n");
        error.push_str(&f.stdout.text());
    }
    Report::Fail(FailRequest {
        spot_id: spot_id.to_string(),
        error: Some(error),
        retriable: Some(retry_on_failure || f.ending == Ending::Stopped),
        attempt: Some(attempt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finished(ending: Ending, stdout: &str, stderr: &str) -> Finished {
        let mut out = Tail::new(64);
        out.push(stdout.as_bytes());
        let mut err = Tail::new(64);
        err.push(stderr.as_bytes());
        let mut scan = ResultScanner::default();
        scan.feed(stdout.as_bytes());
        Finished {
            ending,
            elapsed: Duration::from_millis(1500),
            stdout: out,
            stderr: err,
            result: scan.finish(),
        }
    }

    #[test]
    fn the_result_is_the_last_json_object_line() {
        let mut s = ResultScanner::default();
        s.feed(b"starting\n{\"fopt\": 1}\nnot json {\n");
        s.feed(b"[1,2]\n  {\"fopt\": 2.5, \"it");
        s.feed(b"er\": 10}  ");
        assert_eq!(
            s.finish(),
            Some(
                json!({"fopt": 2.5, "iter": 10})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        );
        assert_eq!(ResultScanner::default().finish(), None);
    }

    #[test]
    fn overlong_lines_are_skipped_without_buffering() {
        let mut s = ResultScanner::default();
        s.feed(b"{\"fopt\": 1}\n{");
        s.feed(&vec![b' '; MAX_RESULT_LINE + 10]);
        s.feed(b"}\n");
        assert_eq!(s.finish().unwrap()["fopt"], json!(1));
    }

    #[test]
    fn tails_keep_the_end_and_say_they_were_cut() {
        let mut t = Tail::new(5);
        t.push(b"abc");
        assert_eq!(t.text(), "abc");
        t.push(b"defg");
        assert_eq!(t.text(), "…cdefg");
        t.push(b"0123456789");
        assert_eq!(t.text(), "…56789");
        let mut u = Tail::new(3);
        u.push("éé".as_bytes()); // 4 bytes: the first character is cut in half
        assert_eq!(u.text(), "…é");
    }

    #[test]
    fn exit_zero_completes_with_the_contract_fields() {
        let f = finished(
            Ending::Exited(0),
            "log\n{\"fopt\": 0.5, \"iter\": 200, \"runtimeMs\": 42, \"x\": [1]}\n",
            "",
        );
        let Report::Complete(c) = report("spot-1", 2, &f, true) else {
            panic!("expected a completion")
        };
        assert_eq!(
            (c.fopt, c.iter, c.runtime_ms),
            (Some(0.5), Some(200), Some(42))
        );
        assert_eq!(c.attempt, Some(2));
        let stored: Value = serde_json::from_str(c.result_json.unwrap().as_str().unwrap()).unwrap();
        assert_eq!(stored["x"], json!([1]));
        assert!(c.output.unwrap().contains("log"));
    }

    #[test]
    fn exit_zero_without_a_result_is_an_empty_success() {
        let f = finished(Ending::Exited(0), "", "");
        let Report::Complete(c) = report("s", 1, &f, true) else {
            panic!("expected a completion")
        };
        assert_eq!((c.fopt, c.iter, c.result_json), (None, None, None));
        assert_eq!(c.runtime_ms, Some(1500), "the measured time");
        assert_eq!(c.output, None);
    }

    #[test]
    fn failures_say_why_and_carry_the_stderr_tail() {
        let f = finished(Ending::Exited(3), "{\"fopt\": 1}", "boom\n");
        let Report::Fail(r) = report("s", 1, &f, true) else {
            panic!("expected a failure")
        };
        let error = r.error.unwrap();
        assert!(error.starts_with("exited with code 3"), "{error}");
        assert!(error.ends_with("boom\n"), "{error}");
        assert_eq!(r.retriable, Some(true));

        let timed = finished(Ending::TimedOut(Duration::from_secs(2)), "", "");
        let Report::Fail(r) = report("s", 1, &timed, false) else {
            panic!("expected a failure")
        };
        assert_eq!(
            r.error.as_deref(),
            Some("killed after the task timeout (2s)")
        );
        assert_eq!(r.retriable, Some(false), "the job said no retries");

        let stopped = finished(Ending::Stopped, "", "");
        let Report::Fail(r) = report("s", 1, &stopped, false) else {
            panic!("expected a failure")
        };
        assert_eq!(r.retriable, Some(true), "not the task's fault");
    }
}
