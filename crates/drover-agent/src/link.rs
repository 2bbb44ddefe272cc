//! The agent's connection to its servers: one typed client per URL, failover between them, and
//! the classification of errors into "try again" and "the server said no".
//!
//! Several URLs are replicas of one coordinator (they share a store), so a spot id and a task
//! lease are valid on any of them. A call goes to the server that answered last; when it cannot
//! be reached (or answers 502/503/504), the next one is tried, each once per call. Waiting
//! between calls is the caller's business ([`Backoff`]).

use drover_client::{Client, ClientError};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub struct Link {
    clients: Vec<Client>,
    current: AtomicUsize,
}

/// Whether an error is worth retrying later (the server is away or overloaded) rather than an
/// answer to act on.
pub fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) | ClientError::Decode(_) => true,
        ClientError::Api { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
    }
}

/// Whether trying another server may help.
fn try_next(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        ClientError::Api { status, .. } => matches!(status, 502..=504),
        ClientError::Decode(_) => false,
    }
}

impl Link {
    /// `clients` must not be empty.
    pub fn new(clients: Vec<Client>) -> Self {
        assert!(!clients.is_empty(), "an agent needs at least one server");
        Link {
            clients,
            current: AtomicUsize::new(0),
        }
    }

    /// The URL calls go to now.
    pub fn current_url(&self) -> &str {
        self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].base_url()
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(Client::base_url)
    }

    /// Calls `f` on the current server, failing over to the others in turn.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let n = self.clients.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            match f(self.clients[index].clone()).await {
                Err(e) if try_next(&e) => {
                    if n > 1 {
                        tracing::debug!(server = self.clients[index].base_url(), error = %e, "server unavailable; trying the next");
                    }
                    last = Some(e);
                }
                other => {
                    if index != start % n {
                        tracing::info!(server = self.clients[index].base_url(), "failed over");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Decode("no server to call".into())))
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

    #[tokio::test]
    async fn a_call_tries_each_server_once() {
        // Two servers that refuse connections: loopback ports nobody listens on.
        let dead = |port| Client::new(format!("http://127.0.0.1:{port}"));
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let link = Link::new(vec![dead(ports[0]), dead(ports[1])]);
        let tried = std::sync::Mutex::new(Vec::new());
        let result = link
            .call(|c| {
                tried.lock().unwrap().push(c.base_url().to_string());
                async move { c.health().await }
            })
            .await;
        assert!(matches!(result, Err(ClientError::Transport(_))));
        assert_eq!(tried.lock().unwrap().len(), 2, "each server once");
    }
}
