//! Sinks: where drover's event journal is published, as the placement contract's
//! data-availability layer is. A sink keeps blobs (opaque bytes) and answers each post with a
//! commitment, the hex of the blob's SHA3-256, and a height, which starts at 1 and grows by one
//! per blob in that sink; a blob is read back by its height.
//!
//! This crate owns the [`Sink`] interface, the sinks' formats and their durability, and what
//! their failures mean to a caller ([`SinkError`]); it must not know what a blob holds (the
//! journal's encoding is the journal's) nor when to post, how often to retry or where to fall
//! back to (the server's routing decides, from [`SinkError::is_unavailable`]). Nor does it read
//! settings from the environment: whoever builds a sink hands it its URL and timeouts.
//!
//! Three sinks, each behind [`Sink`]:
//! - [`FileSink`] (`file.rs`): an append-only directory. The development default, what the
//!   contract's `USE_MOCK_DA=true` selects, and what a drover server's `POST /da/post` writes
//!   to. Its IO is blocking; it keeps its synchronous calls for callers on a blocking thread,
//!   and its [`Sink`] calls run them on tokio's blocking pool.
//! - [`PostgresSink`] (`postgres.rs`): a table, `drover_sink_blobs`, in a PostgreSQL database
//!   that need not be drover's own; heights are assigned gap-free inside each insert's
//!   transaction, so posters on several machines share one sequence.
//! - [`HttpSink`] (`http.rs`): another drover server's `POST /da/post`, `GET /da/blob/{height}`
//!   and `GET /da/head`; it checks every commitment the server answers against the blob's own.

mod file;
mod http;
mod postgres;

pub use file::{FileSink, read_blobs};
pub use http::HttpSink;
pub use postgres::{PostgresOptions, PostgresSink};

use sha3::{Digest, Sha3_256};
use std::path::PathBuf;

/// What a sink answered to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The hex of the blob's SHA3-256.
    pub commitment: String,
    /// The blob's place in the sink: 1 for the first, one more for each after.
    pub height: u64,
}

/// Why a sink could not do what was asked. Each variant says what the caller should do:
/// [`Io`](SinkError::Io) and [`Unavailable`](SinkError::Unavailable) may pass if tried again
/// later or at another sink ([`SinkError::is_unavailable`]); the others will not, and a person
/// has to act on what they name.
///
/// A post that failed as unavailable after its request left (a timeout, a connection lost
/// before the answer) may have been kept all the same: trying it again can keep the blob twice,
/// under two heights with one commitment. Readers that need each blob once go by commitment.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file sink's storage failed (a full disk, its directory removed or made unwritable):
    /// the call did not happen and may be tried again, here once the storage is fixed, or at
    /// another sink. Counts as unavailable.
    #[error("the sink at {path} could not {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The sink cannot be reached or cannot serve now: a database that is stopped or busy past
    /// its timeout, a server that refuses connections, does not answer in time or answers 5xx.
    /// Try again later, or fall back to another sink.
    #[error("the sink at {sink} is unavailable: {why}")]
    Unavailable { sink: String, why: String },
    /// The sink understood the call and refused it, and will refuse it again the same way: a
    /// 4xx from a server (a missing key, a route it does not have), a database that denies
    /// the sink's user, a URL that does not parse. Not retryable: fix what it names.
    #[error("the sink at {sink} refused: {why}")]
    Refused { sink: String, why: String },
    /// The sink holds or answered something this build did not write (a stranger file or a
    /// missing height in a sink's directory, a row whose data no longer matches its commitment,
    /// an answer that is not a drover sink's). Not retryable: a person has to look.
    #[error("the sink at {sink} is not a sink this build can read: {what}")]
    Corrupt { sink: String, what: String },
    /// The sink answered a post with a commitment that is not the blob's: it did not keep what
    /// was sent (or is not a drover sink). Not retryable, and the height it answered must not
    /// be counted on.
    #[error(
        "the sink at {sink} answered commitment {answered} at height {height} for a blob whose \
         commitment is {expected}"
    )]
    Mismatch {
        sink: String,
        height: u64,
        expected: String,
        answered: String,
    },
}

impl SinkError {
    /// Whether the same call may pass if tried again later or at another sink: the
    /// unavailable kinds ([`Io`](SinkError::Io), [`Unavailable`](SinkError::Unavailable)).
    /// The others will fail the same way until someone fixes what they name.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SinkError::Io { .. } | SinkError::Unavailable { .. })
    }
}

/// The commitment of `data`: the lower-case hex of its SHA3-256.
pub fn commitment(data: &[u8]) -> String {
    hex::encode(Sha3_256::digest(data))
}

/// A place that keeps blobs and answers each post with a commitment and a height.
///
/// Every implementation assigns heights 1, 2, 3, ... with neither gap nor repeat, even to
/// concurrent posts (from this process or, where the sink is shared, from others), and a post
/// that returned `Ok` is durable: a crash or restart of the sink afterwards still reads it back.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Keeps `data` as the next blob; answers its commitment and height.
    async fn post(&self, data: &[u8]) -> Result<Posted, SinkError>;

    /// The blob of `height`, or `None` when the sink has none there (height 0 never has one).
    async fn get(&self, height: u64) -> Result<Option<Vec<u8>>, SinkError>;

    /// The highest height kept (0 when the sink is empty).
    async fn head(&self) -> Result<u64, SinkError>;

    /// Whether the sink can take a write now, found cheaply and without adding a blob; the
    /// error says why not, as a post's would.
    async fn check(&self) -> Result<(), SinkError>;

    /// Which kind of sink this is: `"file"`, `"postgres"` or `"http"`, for logs and metrics.
    fn kind(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commitment_is_the_hex_of_sha3_256() {
        // SHA3-256("hello world"), as any implementation of FIPS 202 gives it.
        assert_eq!(
            commitment(b"hello world"),
            "644bcc7e564373040999aac89e7622f3ca71fba1d972fd94a31c3bfbf24e3938"
        );
        assert_eq!(
            commitment(b""),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
    }

    #[test]
    fn only_the_unavailable_kinds_say_try_again() {
        let at = || "x".to_string();
        let io = SinkError::Io {
            path: "d".into(),
            action: "write a blob",
            source: std::io::Error::other("full"),
        };
        assert!(io.is_unavailable());
        assert!(
            SinkError::Unavailable {
                sink: at(),
                why: at()
            }
            .is_unavailable()
        );
        for e in [
            SinkError::Refused {
                sink: at(),
                why: at(),
            },
            SinkError::Corrupt {
                sink: at(),
                what: at(),
            },
            SinkError::Mismatch {
                sink: at(),
                height: 1,
                expected: at(),
                answered: at(),
            },
        ] {
            assert!(!e.is_unavailable(), "{e}");
        }
    }
}
