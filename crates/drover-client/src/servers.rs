//! Several server URLs: replicas of one coordinator sharing one store, so that any of them
//! serves any request (a spot id, a task lease and a job are valid on all of them).
//!
//! This module owns the list as users give it (`--server a,b`), where a process starts in it,
//! and the rule for which failures a request is sent on to the next replica after. It sends
//! nothing itself: `Client` does, and asks [`Retry::after`] what to do with each failure.
//!
//! The rule, by what a request does:
//! * [`Retry::Idempotent`] (reads, heartbeats, completes, fails, report batches, cancels, an
//!   exchange that claims nothing): sending it twice changes nothing the first did not, so any
//!   failure that may be the server's (the connection failed or broke, no answer in time, 502,
//!   503, 504) moves on to the next replica.
//! * [`Retry::UnlessSent`] (claims, exchanges that claim, hellos, job submissions): a second
//!   copy would claim other tasks, register another spot or create another job. It moves on
//!   only when the first copy certainly did nothing: the connection failed before the request
//!   was sent (refused, unreachable, TLS refused), or the server answered 503 (drover's word
//!   that nothing was written; a store error leaves nothing behind). After a timeout or a
//!   connection lost once the request was sent, or a gateway's 502/504, it may have been
//!   carried out: the error goes back to the caller, the next request starts at the next
//!   replica, and a claim that was carried out stays with its spot until the task's lease ends
//!   (the reaper then hands it back), exactly as when the answer to a claim is lost with one
//!   server.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server URL that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadServerUrl(String);

/// An example in messages.
const EXAMPLE: &str = "http://127.0.0.1:8080";

/// The server URLs of one client, in the order given, each without a trailing `/`; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(Vec<String>);

impl ServerList {
    /// The URLs from `items`, each of which may itself be a comma-separated list (one
    /// `--server a,b`, or a variable, or several flags). Blanks are skipped and a URL given
    /// twice is kept once; each must be http:// or https:// with a host.
    pub fn parse<I, S>(items: I) -> Result<ServerList, BadServerUrl>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut urls: Vec<String> = Vec::new();
        for item in items {
            for url in item.as_ref().split(',') {
                let url = url.trim();
                if url.is_empty() {
                    continue;
                }
                let Some((scheme, rest)) = ["http://", "https://"]
                    .into_iter()
                    .find_map(|scheme| Some((scheme, url.strip_prefix(scheme)?)))
                else {
                    return Err(BadServerUrl(format!(
                        "{url:?} is not an http:// or https:// URL such as {EXAMPLE}"
                    )));
                };
                let rest = rest.trim_end_matches('/');
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(BadServerUrl(format!(
                        "{url:?} names no host; give a URL such as {EXAMPLE}"
                    )));
                }
                let url = format!("{scheme}{rest}");
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        if urls.is_empty() {
            return Err(BadServerUrl(format!(
                "no server URL given; give one such as {EXAMPLE}, or several separated by commas"
            )));
        }
        Ok(ServerList(urls))
    }

    /// One URL, as given (a trailing `/` removed), unchecked: the single-server client.
    pub(crate) fn one(url: String) -> ServerList {
        ServerList(vec![url.trim_end_matches('/').to_string()])
    }

    pub fn urls(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a list has at least one URL.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where the next request starts: shared by a client and its clones (an agent's calls for its
/// spot, a watch's client with its own timeout), so they all follow one failover.
#[derive(Debug)]
pub(crate) struct Rotation {
    len: usize,
    current: AtomicUsize,
}

impl Rotation {
    /// Starts at `start` (modulo the length).
    pub(crate) fn starting_at(len: usize, start: usize) -> Rotation {
        Rotation {
            len: len.max(1),
            current: AtomicUsize::new(start % len.max(1)),
        }
    }

    /// Starts at a random replica, so that many agents and clients given the same list spread
    /// over the replicas instead of all loading the first.
    pub(crate) fn random(len: usize) -> Rotation {
        // The standard library's per-process random hash keys: random enough to spread, and no
        // dependency for it.
        let random = RandomState::new().build_hasher().finish();
        Rotation::starting_at(len, (random % len.max(1) as u64) as usize)
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.len
    }

    /// The order in which one request tries the replicas: from the current one, each once.
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let (start, len) = (self.current(), self.len);
        (0..len).map(move |i| (start + i) % len)
    }

    /// `index` answered: later requests start there.
    pub(crate) fn answered(&self, index: usize) {
        self.current.store(index % self.len, Ordering::Relaxed);
    }

    /// `index` failed: later requests start at the one after it.
    pub(crate) fn failed(&self, index: usize) {
        self.current
            .store((index + 1) % self.len, Ordering::Relaxed);
    }
}

/// Whether a request may be sent again, to another replica, after a failure. See the module
/// documentation for which requests are which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it changes nothing: moved on after any failure that may be the server's.
    Idempotent,
    /// Repeating it could do it twice: moved on only when it certainly was not carried out.
    UnlessSent,
}

/// What to do after one replica's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The server answered: its answer is final (a 404, a 401, a 409...).
    Answer,
    /// Send the request to the next replica.
    Move,
    /// The request may have been carried out: hand the error back and send it nowhere else.
    Stop,
}

/// How a request failed, as [`Retry::after`] needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection was made (refused, unreachable, name unknown, TLS refused): nothing sent.
    NotConnected,
    /// The connection broke or timed out after the request may have been sent.
    Lost,
    /// An answer with this HTTP status.
    Status(u16),
    /// An answer this client could not read.
    Unreadable,
}

impl Retry {
    pub(crate) fn after(self, failure: Failure) -> Next {
        match (failure, self) {
            (Failure::NotConnected, _) | (Failure::Status(503), _) => Next::Move,
            (Failure::Lost | Failure::Status(502 | 504), Retry::Idempotent) => Next::Move,
            (Failure::Lost | Failure::Status(502 | 504), Retry::UnlessSent) => Next::Stop,
            (Failure::Status(_) | Failure::Unreadable, _) => Next::Answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_on_commas_trimmed_and_checked() {
        let list = ServerList::parse([" http://a:8080/ , https://b:8443", "http://c:1,,"]).unwrap();
        assert_eq!(
            list.urls(),
            ["http://a:8080", "https://b:8443", "http://c:1"]
        );
        let once = ServerList::parse(["http://a:1,http://a:1/", "http://a:1"]).unwrap();
        assert_eq!(
            once.urls(),
            ["http://a:1"],
            "a URL given twice is one replica"
        );

        let e = ServerList::parse(["http://a:1,b:2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"b:2\" is not an http:// or https:// URL"),
            "{e}"
        );
        let e = ServerList::parse(["https://"]).unwrap_err().to_string();
        assert!(e.contains("names no host"), "{e}");
        let e = ServerList::parse([" , "]).unwrap_err().to_string();
        assert!(e.contains("no server URL given"), "{e}");
        let none: [&str; 0] = [];
        assert!(ServerList::parse(none).is_err());
    }

    #[test]
    fn each_request_tries_every_replica_once_from_the_current_one() {
        let r = Rotation::starting_at(3, 4);
        assert_eq!(r.order().collect::<Vec<_>>(), [1, 2, 0]);
        r.failed(1);
        assert_eq!(
            r.order().collect::<Vec<_>>(),
            [2, 0, 1],
            "moves past a failed one"
        );
        r.failed(2);
        r.answered(0);
        assert_eq!(r.current(), 0, "stays with the one that answered");
        r.failed(2);
        assert_eq!(r.current(), 0, "wraps around");
        assert_eq!(Rotation::starting_at(1, 7).order().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn processes_start_at_different_replicas() {
        let starts: std::collections::HashSet<usize> =
            (0..200).map(|_| Rotation::random(4).current()).collect();
        assert!(starts.iter().all(|s| *s < 4));
        assert!(
            starts.len() > 1,
            "200 random starts over 4 replicas all alike"
        );
    }

    #[test]
    fn only_what_is_safe_to_repeat_moves_on_after_it_may_have_been_sent() {
        use Failure::*;
        for retry in [Retry::Idempotent, Retry::UnlessSent] {
            assert_eq!(retry.after(NotConnected), Next::Move, "{retry:?}");
            assert_eq!(retry.after(Status(503)), Next::Move, "{retry:?}");
            for final_answer in [400, 401, 404, 409, 413, 429, 500] {
                assert_eq!(retry.after(Status(final_answer)), Next::Answer);
            }
            assert_eq!(retry.after(Unreadable), Next::Answer);
        }
        for unknown in [Lost, Status(502), Status(504)] {
            assert_eq!(Retry::Idempotent.after(unknown), Next::Move, "{unknown:?}");
            assert_eq!(Retry::UnlessSent.after(unknown), Next::Stop, "{unknown:?}");
        }
    }
}
