//! The agent's connection to its servers: one client over every server URL, the
//! classification of errors into "try again" and "the server said no", and the backoff between
//! tries.
//!
//! Several URLs are replicas of one coordinator (they share a store), so a spot id and a task
//! lease are valid on any of them. Which replica a call goes to, and which failed calls go on to
//! the next one, is `drover_client`'s (its `servers` module): heartbeats, reports and reads go
//! on after any failure, hellos and claims only when they certainly did nothing. A call that
//! fails on every replica (or may have been carried out) comes back here as an error, and the
//! agent tries again after a [`Backoff`], from the next replica.

use drover_client::{Client, ClientError};
use std::sync::Mutex;
use std::time::Duration;

pub struct Link {
    client: Client,
    /// The server that answered when last looked at, to log a move to another.
    answered: Mutex<String>,
}

/// Whether an error is worth retrying later (the server is away or overloaded) rather than an
/// answer to act on.
pub fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) | ClientError::Decode(_) | ClientError::Failover { .. } => true,
        ClientError::Api { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
    }
}

impl Link {
    pub fn new(client: Client) -> Self {
        let answered = Mutex::new(client.base_url().to_string());
        Link { client, answered }
    }

    /// After a call that was answered: logs it when the answer came from another server than
    /// the last one did (the client failed over).
    pub fn note_failover(&self) {
        let now = self.client.base_url();
        let Ok(mut last) = self.answered.lock() else {
            return;
        };
        if *last != now {
            tracing::info!(from = %*last, to = now, "failed over to another server");
            *last = now.to_string();
        }
    }

    /// The client of every server; clones share where the next call starts.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The URL calls go to first now.
    pub fn current_url(&self) -> &str {
        self.client.base_url()
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.client.servers().iter().map(String::as_str)
    }
}

/// Exponential backoff with jitter between retries of one operation.
pub struct Backoff {
    min: Duration,
    max: Duration,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            delays: Self::fresh(min, max),
        }
    }

    fn fresh(min: Duration, max: Duration) -> Box<dyn Iterator<Item = Duration> + Send> {
        use backon::BackoffBuilder;
        Box::new(
            backon::ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max.max(min))
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.delays = Self::fresh(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(100)));
        // Jitter adds at most the delay itself on top of the cap.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(4)),
            "{delays:?}"
        );
        assert!(delays[10] >= Duration::from_secs(2), "{delays:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(250));
    }
}
