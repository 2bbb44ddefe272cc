//! The priority-queue contract's rules: which class a job's priority falls in (and with it its
//! queue, its message priority and its place in claim order), what a worker's status word
//! means, and how a job's state reads in that contract's words.
//!
//! Pure: the priority router service (`drover-server/src/priority.rs`) and its surface ask
//! here; nothing here knows about HTTP, AMQP or the store.

use crate::model::TaskStatus;
use std::fmt;
use std::time::Duration;

/// The contract's three classes. Each is a queue on the broker with its own `x-max-priority`,
/// and the class (not the raw number) orders claims: within a class, the oldest job first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PriorityClass {
    High,
    Medium,
    Low,
}

/// The priority a job registered without one has.
pub const DEFAULT_PRIORITY: i64 = 5;

impl PriorityClass {
    /// Every class, highest first (the order workers poll the queues in).
    pub const ALL: [PriorityClass; 3] = [
        PriorityClass::High,
        PriorityClass::Medium,
        PriorityClass::Low,
    ];

    /// `priority >= 10` is high, `>= 5` medium, anything else low.
    pub fn of(priority: i64) -> PriorityClass {
        if priority >= 10 {
            PriorityClass::High
        } else if priority >= 5 {
            PriorityClass::Medium
        } else {
            PriorityClass::Low
        }
    }

    /// The queue this class is published to (also its routing key on `jobs.exchange`).
    pub fn queue(self) -> &'static str {
        match self {
            PriorityClass::High => "job.high",
            PriorityClass::Medium => "job.medium",
            PriorityClass::Low => "job.low",
        }
    }

    /// The class whose queue is `name`.
    pub fn of_queue(name: &str) -> Option<PriorityClass> {
        Self::ALL.into_iter().find(|c| c.queue() == name)
    }

    /// The message priority its jobs are published with, which is also the queue's
    /// `x-max-priority` (10, 5, 1).
    pub fn message_priority(self) -> u8 {
        match self {
            PriorityClass::High => 10,
            PriorityClass::Medium => 5,
            PriorityClass::Low => 1,
        }
    }

    /// The drover job priority that puts this class's jobs in claim order: higher classes
    /// first, and within a class the oldest (every job of a class has the same priority).
    pub fn job_priority(self) -> i64 {
        i64::from(self.message_priority())
    }

    /// The class of a drover job priority set by [`PriorityClass::job_priority`].
    pub fn of_job_priority(priority: i64) -> PriorityClass {
        Self::of(priority)
    }

    pub fn name(self) -> &'static str {
        match self {
            PriorityClass::High => "high",
            PriorityClass::Medium => "medium",
            PriorityClass::Low => "low",
        }
    }

    /// The class named `name` (`high`, `medium`, `low`, or its queue's name).
    pub fn parse(name: &str) -> Option<PriorityClass> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name) || c.queue() == name)
    }
}

/// Priority aging, drover's addition to the contract (off unless configured): so that a
/// steady stream of high jobs cannot starve the low ones for ever, a job that has waited one
/// aging step is served as at least medium, and one that has waited two steps as high. The
/// rule reads only the job's class now and how long it has waited, so applying it again
/// changes nothing and a job is never lowered.
impl PriorityClass {
    /// The class a job of this class should be in after waiting `waited`.
    pub fn aged(self, waited: Duration, step: Duration) -> PriorityClass {
        let floor = if waited >= step.saturating_mul(2) {
            PriorityClass::High
        } else if waited >= step {
            PriorityClass::Medium
        } else {
            PriorityClass::Low
        };
        // The derived order puts High first: the smaller is the higher class.
        self.min(floor)
    }

    /// How long a job of this class waits before aging raises it; `None` for high.
    pub fn raised_after(self, step: Duration) -> Option<Duration> {
        match self {
            PriorityClass::High => None,
            PriorityClass::Medium => Some(step.saturating_mul(2)),
            PriorityClass::Low => Some(step),
        }
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a worker says about a job it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerUpdate {
    Running,
    Completed,
    Failed,
}

impl WorkerUpdate {
    /// The contract's words, in any case.
    pub fn parse(word: &str) -> Option<WorkerUpdate> {
        match word.trim().to_ascii_lowercase().as_str() {
            "running" => Some(WorkerUpdate::Running),
            "completed" => Some(WorkerUpdate::Completed),
            "failed" => Some(WorkerUpdate::Failed),
            _ => None,
        }
    }

    /// Whether the worker must first be made the task's holder: "running" always asks for it,
    /// and a "completed" or "failed" for a task nobody holds yet is taken as the worker having
    /// run it (its "running" was lost, or it never sends one), so the task is claimed for it
    /// and then reported, as the two updates would have done.
    pub fn claims_first(self, task: TaskStatus) -> bool {
        self == WorkerUpdate::Running || task == TaskStatus::New
    }
}

/// The words a status update may carry, for messages.
pub const UPDATE_WORDS: &str = "running, completed or failed";

/// A job's status in the contract's words, from its task's.
pub fn status_word(task: TaskStatus) -> &'static str {
    match task {
        TaskStatus::New => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Done => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// The status of a job's listing filter (`?status=pending`): the task status it stands for.
pub fn parse_status_word(word: &str) -> Option<TaskStatus> {
    let word = word.trim().to_ascii_lowercase();
    [
        TaskStatus::New,
        TaskStatus::Running,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| status_word(*s) == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_contract_thresholds() {
        let cases = [
            (i64::MAX, PriorityClass::High),
            (10, PriorityClass::High),
            (9, PriorityClass::Medium),
            (5, PriorityClass::Medium),
            (4, PriorityClass::Low),
            (0, PriorityClass::Low),
            (-3, PriorityClass::Low),
        ];
        for (priority, class) in cases {
            assert_eq!(PriorityClass::of(priority), class, "priority {priority}");
        }
        let routes: Vec<_> = PriorityClass::ALL
            .iter()
            .map(|c| (c.queue(), c.message_priority()))
            .collect();
        assert_eq!(
            routes,
            [("job.high", 10), ("job.medium", 5), ("job.low", 1)]
        );
    }

    #[test]
    fn a_class_survives_the_trip_through_a_job_priority() {
        for class in PriorityClass::ALL {
            assert_eq!(PriorityClass::of_job_priority(class.job_priority()), class);
            assert_eq!(PriorityClass::of_queue(class.queue()), Some(class));
            assert_eq!(PriorityClass::parse(class.name()), Some(class));
        }
        assert!(PriorityClass::High.job_priority() > PriorityClass::Medium.job_priority());
        assert!(PriorityClass::Medium.job_priority() > PriorityClass::Low.job_priority());
    }

    #[test]
    fn aging_raises_a_class_per_step_waited_and_never_lowers() {
        let step = Duration::from_secs(60);
        let s = |secs| Duration::from_secs(secs);
        use PriorityClass::*;
        let cases = [
            (Low, s(0), Low),
            (Low, s(59), Low),
            (Low, s(60), Medium),
            (Low, s(119), Medium),
            (Low, s(120), High),
            (Medium, s(60), Medium),
            (Medium, s(120), High),
            (High, s(0), High),
            (High, s(1_000), High),
        ];
        for (class, waited, now) in cases {
            assert_eq!(class.aged(waited, step), now, "{class} after {waited:?}");
            // Applying the rule again to what it gave changes nothing.
            assert_eq!(now.aged(waited, step), now);
        }
        for class in PriorityClass::ALL {
            match class.raised_after(step) {
                None => assert_eq!(class.aged(Duration::MAX, step), class),
                Some(after) => {
                    assert_eq!(class.aged(after - s(1), step), class);
                    assert_ne!(class.aged(after, step), class);
                }
            }
        }
    }

    #[test]
    fn updates_read_the_contract_words_only() {
        assert_eq!(WorkerUpdate::parse("RUNNING"), Some(WorkerUpdate::Running));
        assert_eq!(
            WorkerUpdate::parse("completed"),
            Some(WorkerUpdate::Completed)
        );
        assert_eq!(WorkerUpdate::parse(" failed "), Some(WorkerUpdate::Failed));
        assert_eq!(WorkerUpdate::parse("done"), None);
        assert_eq!(WorkerUpdate::parse("pending"), None);
        assert!(WorkerUpdate::Running.claims_first(TaskStatus::Running));
        assert!(WorkerUpdate::Completed.claims_first(TaskStatus::New));
        assert!(!WorkerUpdate::Completed.claims_first(TaskStatus::Running));
        assert!(!WorkerUpdate::Failed.claims_first(TaskStatus::Done));
    }

    #[test]
    fn status_words_round_trip() {
        for s in [
            TaskStatus::New,
            TaskStatus::Running,
            TaskStatus::Done,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ] {
            assert_eq!(parse_status_word(status_word(s)), Some(s));
        }
        assert_eq!(parse_status_word("queued"), None);
    }
}
