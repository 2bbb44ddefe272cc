//! `drover job watch` and `drover submit --watch`: poll a job until it ends, show its progress
//! on stderr, and answer whether it ended COMPLETED.
//!
//! This module owns the progress display (a bar on a terminal, a plain line every few seconds
//! otherwise), the rate and ETA estimate, and riding out a server that fails for a while during
//! the watch. It only reads: it never changes the job, and the job's status is the server's
//! word, not derived here from counts.

use super::output;
use super::{Failure, Outcome};
use crate::span::Span;
use drover_api::Job;
use drover_client::{Client, ClientError, ListOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long a watch rides out an unreachable or failing server before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long one progress request may take; a hung server then counts as a failing one instead
/// of stopping the watch for good.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// While the server fails, how often to say so again.
const RETRY_NOTE_EVERY: Duration = Duration::from_secs(10);
/// Without a terminal: a progress line at most this often, when something changed...
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// ...and at least this often, so that a CI log shows the watch is alive.
const PLAIN_AT_LEAST: Duration = Duration::from_secs(30);
/// The recent past the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The shortest polling interval: faster polls load the server and show nothing more.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The job statuses after which nothing changes any more.
const ENDED: [&str; 3] = ["COMPLETED", "FAILED", "CANCELLED"];

pub struct Options {
    /// Time between two polls.
    pub interval: Duration,
    /// Whether a failing first request is retried too. When the server has not answered yet,
    /// failure is more likely a wrong --server than a passing problem, and is reported at once.
    pub patient_from_the_start: bool,
    /// Whether the final summary goes to stdout (else stderr, to keep stdout one document).
    pub summary_on_stdout: bool,
}

/// The `--interval` option: a duration such as `500ms` or `2s`, at least 100ms.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let Span(interval) = text.parse()?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "{text:?} is too short; poll at most every {}ms",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(interval)
}

/// A failure the watch may ride out: the server is unreachable, timed out, or failing (5xx,
/// 429). Any other refusal (unknown job, wrong key) will not go away by itself.
pub(super) fn passing(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::Failover { .. } => true,
        ClientError::Api { status, .. } => *status >= 500 || *status == 429,
        ClientError::Decode(_) => false,
    }
}

/// A streak of failed polls.
struct Trouble {
    since: Instant,
    noted: Instant,
}

/// Follows job `id` until it ends; `JobUnsuccessful` when it ends FAILED or CANCELLED.
pub async fn watch(client: &Client, id: &str, options: Options) -> Result<Outcome, Failure> {
    let client = client.clone().with_timeout(REQUEST_TIMEOUT);
    let mut display = Display::new(id);
    let mut answered = options.patient_from_the_start;
    let mut trouble: Option<Trouble> = None;
    let mut idle = Idle::default();
    loop {
        match client.job(id).await {
            Ok(job) => {
                answered = true;
                if trouble.take().is_some() {
                    display.note("the server answers again");
                }
                let idle = idle.check(&client, &job).await;
                display.show(&job, idle);
                if ENDED.contains(&job.status.as_str()) {
                    display.finish();
                    return summarize(&job, options.summary_on_stdout);
                }
            }
            Err(error) if answered && passing(&error) => {
                let now = Instant::now();
                let why = drover_core::text::error_chain(&error);
                match &mut trouble {
                    None => {
                        display.note(&format!(
                            "cannot get the job's progress: {why}; retrying for up to {}",
                            output::short_duration(RETRY_FOR)
                        ));
                        trouble = Some(Trouble {
                            since: now,
                            noted: now,
                        });
                    }
                    Some(t) if now.saturating_duration_since(t.since) >= RETRY_FOR => {
                        display.abandon();
                        return Err(Failure::Server {
                            url: client.base_url().to_string(),
                            error,
                            context: Some(format!(
                                "while watching {id}; gave up after retrying for {}",
                                output::short_duration(RETRY_FOR)
                            )),
                        });
                    }
                    Some(t) if now.saturating_duration_since(t.noted) >= RETRY_NOTE_EVERY => {
                        display.note(&format!(
                            "still failing after {}: {why}; retrying",
                            output::short_duration(now.saturating_duration_since(t.since))
                        ));
                        t.noted = now;
                    }
                    Some(_) => {}
                }
            }
            Err(error) => {
                display.abandon();
                return Err(Failure::server(&client, error));
            }
        }
        // While the server is in trouble, ask less often than a fast --interval would.
        let pause = match trouble {
            Some(_) => options.interval.max(Duration::from_secs(1)),
            None => options.interval,
        };
        tokio::time::sleep(pause).await;
    }
}

/// How often, at most, the watch asks whether any worker is UP while tasks wait unclaimed.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Whether the job waits for workers that are not there: tasks pending, none running, and no
/// spot UP. Only asked while nothing runs, and at most every [`IDLE_CHECK_EVERY`].
#[derive(Default)]
struct Idle {
    checked: Option<(Instant, bool)>,
}

impl Idle {
    async fn check(&mut self, client: &Client, job: &Job) -> bool {
        let waiting = job.pending_tasks > 0
            && job.running_tasks == 0
            && !ENDED.contains(&job.status.as_str());
        if !waiting {
            self.checked = None;
            return false;
        }
        let now = Instant::now();
        if let Some((at, idle)) = self.checked
            && now.saturating_duration_since(at) < IDLE_CHECK_EVERY
        {
            return idle;
        }
        // A server that will not list its spots (an older one, a key that may only read jobs)
        // leaves the watch as it was: this is a hint, never a reason to fail.
        let idle = matches!(any_worker_up(client).await, Ok(false));
        self.checked = Some((now, idle));
        idle
    }
}

/// Whether any spot is UP, reading the spots a page at a time only until one is found.
async fn any_worker_up(client: &Client) -> Result<bool, ClientError> {
    let mut options = ListOptions {
        status: None,
        cursor: None,
        limit: Some(1000),
    };
    loop {
        let page = client.spots_page(&options).await?;
        if page.spots.iter().any(|s| s.status == "UP") {
            return Ok(true);
        }
        match page.next_cursor {
            Some(cursor) => options.cursor = Some(cursor),
            None => return Ok(false),
        }
    }
}

/// The final line, and the exit outcome that goes with the job's status.
fn summarize(job: &Job, on_stdout: bool) -> Result<Outcome, Failure> {
    let took = job
        .finished_at
        .as_deref()
        .and_then(|f| output::between(job.started_at.as_deref().unwrap_or(&job.created_at), f))
        .map(|d| format!(" in {}", output::short_duration(d)))
        .unwrap_or_default();
    let (text, outcome) = match job.status.as_str() {
        "COMPLETED" => (
            format!(
                "job {} COMPLETED: {} tasks done{took}",
                job.id, job.completed_tasks
            ),
            Outcome::Done,
        ),
        "FAILED" => (
            format!(
                "job {} FAILED: {} of {} tasks failed ({} done{}){took}",
                job.id,
                job.failed_tasks,
                job.total_tasks,
                job.completed_tasks,
                if job.cancelled_tasks > 0 {
                    format!(", {} cancelled", job.cancelled_tasks)
                } else {
                    String::new()
                }
            ),
            Outcome::JobUnsuccessful,
        ),
        other => (
            format!(
                "job {} {other}: {} done, {} failed, {} cancelled, of {} tasks",
                job.id, job.completed_tasks, job.failed_tasks, job.cancelled_tasks, job.total_tasks
            ),
            Outcome::JobUnsuccessful,
        ),
    };
    if on_stdout {
        output::line(&text)?;
    } else {
        output::note(&text);
    }
    if job.failed_tasks > 0 {
        output::note(&format!(
            "see which tasks failed and why: drover job tasks {} --status FAILED",
            job.id
        ));
    }
    Ok(outcome)
}

/// Where progress goes: a bar on a terminal, plain lines otherwise.
struct Display {
    id: String,
    bar: Option<ProgressBar>,
    /// The bar's layout as last set, so the style is only rebuilt when the width changes it.
    layout: Option<Layout>,
    terminal: bool,
    rate: Rate,
    /// When the last plain line was printed, and what it showed.
    last_line: Option<(Instant, [u64; 5], String)>,
    /// Whether the last check found no worker UP while tasks wait, said once per stretch.
    idle_said: bool,
}

impl Display {
    fn new(id: &str) -> Display {
        Display {
            id: id.to_string(),
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            rate: Rate::default(),
            last_line: None,
            layout: None,
            idle_said: false,
        }
    }

    /// `idle`: the server has no worker UP to run the job's waiting tasks.
    fn show(&mut self, job: &Job, idle: bool) {
        let now = Instant::now();
        let finished = job.completed_tasks + job.failed_tasks + job.cancelled_tasks;
        self.rate.record(now, finished);
        let remaining = job.total_tasks.saturating_sub(finished);
        let mut counts = format!(
            "done {}, failed {}, running {}, pending {}",
            job.completed_tasks, job.failed_tasks, job.running_tasks, job.pending_tasks
        );
        if job.cancelled_tasks > 0 {
            counts.push_str(&format!(", cancelled {}", job.cancelled_tasks));
        }
        let pace = if idle {
            NO_WORKER.to_string()
        } else {
            pace(self.rate.per_second(), remaining)
        };

        if self.terminal {
            let bar = self.bar.get_or_insert_with(|| new_bar(job.total_tasks));
            bar.set_length(job.total_tasks);
            bar.set_position(finished);
            let width = terminal_size::terminal_size_of(std::io::stderr())
                .map_or(DEFAULT_WIDTH, |(w, _)| usize::from(w.0));
            let layout = layout(width, job, &pace);
            if self.layout.as_ref().map(|l| l.bar) != Some(layout.bar) {
                bar.set_style(bar_style(layout.bar));
            }
            bar.set_message(layout.message.clone());
            self.layout = Some(layout);
            return;
        }

        // Said at once when it changes, not at the next progress line; the first line says it
        // itself.
        if idle != self.idle_said {
            if self.last_line.is_some() {
                output::note(&match idle {
                    true => format!("{}: {NO_WORKER}", self.id),
                    false => format!("{}: a worker is UP", self.id),
                });
            }
            self.idle_said = idle;
        }

        let key = [
            job.completed_tasks,
            job.failed_tasks,
            job.running_tasks,
            job.pending_tasks,
            job.cancelled_tasks,
        ];
        let due = match &self.last_line {
            None => true,
            Some((at, last_key, last_status)) => {
                let since = now.saturating_duration_since(*at);
                let changed = *last_key != key || *last_status != job.status;
                since >= PLAIN_AT_LEAST || (changed && since >= PLAIN_EVERY)
            }
        };
        if due {
            output::note(&format!(
                "{} {}: {finished}/{} finished ({counts}); {pace}",
                self.id, job.status, job.total_tasks
            ));
            self.last_line = Some((now, key, job.status.clone()));
        }
    }

    /// A message that must not be drawn over by the bar.
    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => output::note(text),
        }
    }

    /// Leaves the bar in its final state.
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Leaves the bar where it stopped, for an error to follow.
    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// What the watch says instead of a rate while tasks wait and no worker is UP to run them.
const NO_WORKER: &str = "waiting: no worker is UP (drover nodes lists them)";
/// The width assumed when stderr's cannot be read.
const DEFAULT_WIDTH: usize = 80;
/// The bar's width on a wide terminal, and the narrowest bar still worth drawing.
const BAR_MAX: usize = 25;
const BAR_MIN: usize = 8;
/// The columns of the prefix before the bar, `{spinner} {elapsed:>4} `: the spinner, the
/// elapsed time in indicatif's short form (`15s`, `3m`, `1h`), counted at 7 columns to leave
/// room, and their spaces.
const PREFIX: usize = 1 + 1 + 7 + 1;

/// How the progress line is laid out on a terminal `width` columns wide.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// The bar's width, 0 for no bar.
    bar: usize,
    /// The message after `pos/len`.
    message: String,
}

/// Lays out the progress line for a terminal `width` columns wide, so that it never wraps
/// (a wrapped line redraws badly) and the rate and ETA (`pace`) always show: the counts are
/// shortened first, then dropped, then the bar goes, then the status word.
fn layout(width: usize, job: &Job, pace: &str) -> Layout {
    let finished = job.completed_tasks + job.failed_tasks + job.cancelled_tasks;
    let position = format!("{finished}/{}", job.total_tasks).len();
    // RUNNING is the usual case and goes without saying on a moving bar.
    let status = match job.status.as_str() {
        "RUNNING" => String::new(),
        other => format!("{other} · "),
    };
    let cancelled = |long: bool| match (job.cancelled_tasks, long) {
        (0, _) => String::new(),
        (n, true) => format!(", cancelled {n}"),
        (n, false) => format!(" {n}c"),
    };
    let long = format!(
        "{status}done {}, failed {}, running {}, pending {}{} · {pace}",
        job.completed_tasks,
        job.failed_tasks,
        job.running_tasks,
        job.pending_tasks,
        cancelled(true)
    );
    let short = format!(
        "{status}{}d {}f {}r {}p{} · {pace}",
        job.completed_tasks,
        job.failed_tasks,
        job.running_tasks,
        job.pending_tasks,
        cancelled(false)
    );
    // The counts are only worth showing beside a bar; the pace is worth more than any bar.
    let with_bar = [BAR_MAX, BAR_MIN];
    let any_bar = [BAR_MAX, BAR_MIN, 0];
    let tiers = [
        (long, &with_bar[..]),
        (short, &with_bar[..]),
        (format!("{status}{pace}"), &any_bar[..]),
        (pace.to_string(), &any_bar[..]),
    ];
    // The columns left for the message with a bar of `bar` columns (`[` `]` and a space).
    let room = |bar: usize| {
        let drawn = if bar == 0 { 0 } else { bar + 3 };
        width.saturating_sub(PREFIX + drawn + position + 1)
    };
    let fits = |message: &String, bar: usize| message.chars().count() <= room(bar);
    for (message, bars) in tiers {
        if let Some(&bar) = bars.iter().find(|&&bar| fits(&message, bar)) {
            return Layout { bar, message };
        }
    }
    // Narrower than the pace itself: `wide_msg` cuts what does not fit.
    Layout {
        bar: 0,
        message: pace.to_string(),
    }
}

/// The columns a laid-out line takes (the elapsed time at its widest).
#[cfg(test)]
fn columns(layout: &Layout, job: &Job) -> usize {
    let finished = job.completed_tasks + job.failed_tasks + job.cancelled_tasks;
    let position = format!("{finished}/{}", job.total_tasks).len();
    let drawn = if layout.bar == 0 { 0 } else { layout.bar + 3 };
    PREFIX + drawn + position + 1 + layout.message.chars().count()
}

fn bar_style(bar: usize) -> ProgressStyle {
    // `wide_msg` still cuts the message at the terminal's edge, should the width read be wrong.
    let template = match bar {
        0 => "{spinner} {elapsed:>4} {pos}/{len} {wide_msg}".to_string(),
        n => format!("{{spinner}} {{elapsed:>4}} [{{bar:{n}}}] {{pos}}/{{len}} {{wide_msg}}"),
    };
    ProgressStyle::with_template(&template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

pub(super) fn new_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(bar_style(BAR_MAX));
    // The spinner and the clock keep moving between polls, so a stalled job does not look
    // like a hung command.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Finished tasks per second over the recent past.
#[derive(Debug, Default)]
struct Rate {
    /// Samples of the recent window, oldest first; the first one may lie just before it.
    samples: VecDeque<(Instant, u64)>,
    /// The first sample of the watch.
    first: Option<(Instant, u64)>,
}

impl Rate {
    fn record(&mut self, at: Instant, finished: u64) {
        self.first.get_or_insert((at, finished));
        self.samples.push_back((at, finished));
        // Keep one sample at or before the window's start, so the window is covered whole.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// `None` until a second has been observed. When nothing finished in the recent window
    /// but some did earlier in the watch (tasks slower than the window), the average over the
    /// whole watch is a better guess than zero.
    fn per_second(&self) -> Option<f64> {
        let &(now, finished) = self.samples.back()?;
        let over = |(since, before): (Instant, u64)| {
            let secs = now.saturating_duration_since(since).as_secs_f64();
            (secs >= 1.0).then(|| finished.saturating_sub(before) as f64 / secs)
        };
        let recent = self.samples.front().copied().and_then(over);
        match recent {
            Some(r) if r > 0.0 => Some(r),
            _ => self.first.and_then(over).or(recent),
        }
    }
}

/// The rate and time left, for people.
fn pace(per_second: Option<f64>, remaining: u64) -> String {
    match per_second {
        None => "measuring rate".into(),
        Some(r) if r <= 0.0 => "no task finished while watching".into(),
        Some(r) => {
            let rate = if r >= 1.0 {
                format!("{r:.1} tasks/s")
            } else {
                format!("{:.1} tasks/min", r * 60.0)
            };
            match Duration::try_from_secs_f64((remaining as f64 / r).ceil()) {
                Ok(eta) if remaining > 0 => format!("{rate}, ETA {}", output::short_duration(eta)),
                _ => rate,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_over_the_recent_window() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut rate = Rate::default();
        rate.record(at(0), 0);
        assert_eq!(rate.per_second(), None, "no time has passed yet");
        rate.record(at(10), 20);
        assert_eq!(rate.per_second(), Some(2.0));
        // Fast at first, slow lately: the window forgets the fast start.
        rate.record(at(100), 200);
        rate.record(at(200), 210);
        assert_eq!(rate.per_second(), Some(0.1));
    }

    #[test]
    fn a_window_without_progress_falls_back_to_the_whole_watch() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut rate = Rate::default();
        rate.record(at(0), 0);
        rate.record(at(100), 10);
        rate.record(at(300), 10);
        assert_eq!(rate.per_second(), Some(10.0 / 300.0));

        let mut idle = Rate::default();
        idle.record(at(0), 5);
        idle.record(at(30), 5);
        assert_eq!(idle.per_second(), Some(0.0));
    }

    #[test]
    fn pace_shows_a_rate_and_the_time_left() {
        assert_eq!(pace(None, 10), "measuring rate");
        assert_eq!(pace(Some(0.0), 10), "no task finished while watching");
        assert_eq!(pace(Some(2.0), 30), "2.0 tasks/s, ETA 15s");
        assert_eq!(pace(Some(0.5), 60), "30.0 tasks/min, ETA 2m");
        assert_eq!(pace(Some(2.0), 0), "2.0 tasks/s");
    }

    fn job(done: u64, running: u64, pending: u64) -> Job {
        Job {
            id: "job-0192".into(),
            name: None,
            origin: None,
            status: "RUNNING".into(),
            total_tasks: done + running + pending,
            completed_tasks: done,
            failed_tasks: 0,
            pending_tasks: pending,
            running_tasks: running,
            cancelled_tasks: 0,
            priority: 0,
            max_attempts: 3,
            task_timeout_seconds: 60.0,
            parameters: vec![],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
            command: None,
            env: None,
            retry_on_failure: None,
        }
    }

    #[test]
    fn the_line_fits_the_terminal_and_always_shows_the_pace() {
        let job = job(123_456, 64, 876_480);
        let pace = pace(Some(312.5), 876_544);
        assert_eq!(pace, "312.5 tasks/s, ETA 46m 45s");

        let wide = layout(200, &job, &pace);
        assert_eq!(wide.bar, BAR_MAX);
        assert_eq!(
            wide.message,
            "done 123456, failed 0, running 64, pending 876480 · 312.5 tasks/s, ETA 46m 45s"
        );
        assert!(columns(&wide, &job) <= 200);

        let eighty = layout(80, &job, &pace);
        assert!(columns(&eighty, &job) <= 80, "{eighty:?}");
        assert!(eighty.message.ends_with(&pace), "{eighty:?}");
        assert!(eighty.bar > 0, "a bar still fits on 80 columns: {eighty:?}");

        // 40 columns hold the pace of a job of a thousand tasks, without a bar.
        let job = self::job(400, 8, 592);
        let pace = self::pace(Some(2.5), 600);
        let forty = layout(40, &job, &pace);
        assert!(columns(&forty, &job) <= 40, "{forty:?}");
        assert_eq!(forty.message, "2.5 tasks/s, ETA 4m");
    }

    #[test]
    fn the_counts_are_shortened_before_the_bar() {
        let job = job(3, 2, 5);
        let pace = pace(Some(2.0), 7);
        assert_eq!(
            layout(120, &job, &pace),
            Layout {
                bar: BAR_MAX,
                message: "done 3, failed 0, running 2, pending 5 · 2.0 tasks/s, ETA 4s".into()
            }
        );
        assert_eq!(
            layout(80, &job, &pace),
            Layout {
                bar: BAR_MAX,
                message: "3d 0f 2r 5p · 2.0 tasks/s, ETA 4s".into()
            }
        );
        // The status is named when it is not the usual RUNNING.
        let mut pending = job.clone();
        pending.status = "PENDING".into();
        let l = layout(100, &pending, NO_WORKER);
        assert!(l.message.starts_with("PENDING · "), "{l:?}");
        // No worker: the line says so in place of the rate, whatever the width.
        for width in [40, 80, 200] {
            let l = layout(width, &pending, NO_WORKER);
            assert!(l.message.ends_with(NO_WORKER), "{width}: {l:?}");
        }
    }

    #[test]
    fn intervals_are_durations_not_too_short() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn only_passing_failures_are_retried() {
        let api = |status| ClientError::Api {
            status,
            code: "X".into(),
            message: "m".into(),
        };
        assert!(passing(&api(503)));
        assert!(passing(&api(502)));
        assert!(!passing(&api(404)));
        assert!(!passing(&api(401)));
        assert!(!passing(&ClientError::Decode("?".into())));
    }
}
