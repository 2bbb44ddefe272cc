//! Sinks: where drover's event journal is published, as the placement contract's
//! data-availability layer is. A sink keeps blobs (opaque bytes) and answers each post with a
//! commitment, the hex of the blob's SHA3-256, and a height, which starts at 1 and grows by one
//! per blob in that sink; a blob is read back by its height.
//!
//! This crate owns the sinks' formats and their durability; it must not know what a blob
//! holds (the journal's encoding is the journal's) nor when to post or where to fall back to
//! (the server's routing decides). IO here is blocking: callers on an async runtime run it on
//! a blocking thread.
//!
//! [`FileSink`] is an append-only directory: the development default, what the contract's
//! `USE_MOCK_DA=true` selects, and what a drover server's `POST /da/post` writes to.

use sha3::{Digest, Sha3_256};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a sink answered to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The hex of the blob's SHA3-256.
    pub commitment: String,
    /// The blob's place in the sink: 1 for the first, one more for each after.
    pub height: u64,
}

/// Why a sink could not do what was asked; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's storage failed (a full disk, a directory made unwritable): the post did not
    /// happen and may be tried again, here or at another sink.
    #[error("the sink at {path} could not {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The sink's directory holds something this build did not write; it names the file.
    #[error("the sink at {path} is not a sink this build can read: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// The commitment of `data`: the lower-case hex of its SHA3-256.
pub fn commitment(data: &[u8]) -> String {
    hex::encode(Sha3_256::digest(data))
}

/// An append-only directory of blobs, one file per height (`00000000000000000001.blob`, ...).
///
/// A post writes the blob to a temporary file, syncs it, renames it into place and syncs the
/// directory, so a blob is either whole under its height or absent, and a post that returned
/// survives a crash. Posts are taken one at a time. Opening finds the last height from the
/// files and removes temporary files a crash left behind; a gap among the heights (a file
/// removed by hand) is refused, since heights are what readers count on.
pub struct FileSink {
    dir: PathBuf,
    /// The last height written; held while a post writes, so posts never share a height.
    last: Mutex<u64>,
}

const SUFFIX: &str = ".blob";
const TEMP_PREFIX: &str = ".tmp-";

impl FileSink {
    /// Opens (making it if need be) the sink in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileSink, SinkError> {
        let dir = dir.into();
        let io = |action, source| SinkError::Io {
            path: dir.clone(),
            action,
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io("create its directory", e))?;
        let mut heights = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io("list its directory", e))? {
            let entry = entry.map_err(|e| io("list its directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                // A post that crashed before its rename: never answered, so never counted.
                fs::remove_file(entry.path()).map_err(|e| io("remove a torn write", e))?;
                continue;
            }
            let height = name
                .strip_suffix(SUFFIX)
                .and_then(|h| h.parse::<u64>().ok())
                .filter(|h| *h > 0)
                .ok_or_else(|| SinkError::Corrupt {
                    path: dir.clone(),
                    what: format!("{name:?} is not a blob of this sink"),
                })?;
            heights.push(height);
        }
        heights.sort_unstable();
        if let Some((i, h)) = (heights.iter().enumerate()).find(|(i, h)| **h != *i as u64 + 1) {
            return Err(SinkError::Corrupt {
                path: dir,
                what: format!("the blob of height {} is missing (found {h} next)", i + 1),
            });
        }
        let last = heights.last().copied().unwrap_or(0);
        Ok(FileSink {
            dir,
            last: Mutex::new(last),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The height of the last blob (0 when empty).
    pub fn height(&self) -> u64 {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, height: u64) -> PathBuf {
        self.dir.join(format!("{height:020}{SUFFIX}"))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.dir.clone(),
            action,
            source,
        }
    }

    /// Keeps `data` as the next blob; durable when this returns.
    pub fn post(&self, data: &[u8]) -> Result<Posted, SinkError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let height = *last + 1;
        let temp = self.dir.join(format!("{TEMP_PREFIX}{height}"));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(data)?;
            file.sync_all()?;
            fs::rename(&temp, self.path_of(height))?;
            // The rename is durable only once the directory is.
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(self.io("write a blob", e));
        }
        *last = height;
        Ok(Posted {
            commitment: commitment(data),
            height,
        })
    }

    /// The blob of `height`, or `None` when there is none.
    pub fn get(&self, height: u64) -> Result<Option<Vec<u8>>, SinkError> {
        if height == 0 || height > self.height() {
            return Ok(None);
        }
        match fs::read(self.path_of(height)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read a blob", e)),
        }
    }
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
    fn heights_start_at_one_and_blobs_read_back_by_height() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        assert_eq!(sink.height(), 0);
        let a = sink.post(b"hello world").unwrap();
        let b = sink.post(b"").unwrap();
        assert_eq!((a.height, b.height), (1, 2));
        assert_eq!(a.commitment, commitment(b"hello world"));
        assert_eq!(sink.get(1).unwrap().as_deref(), Some(&b"hello world"[..]));
        assert_eq!(sink.get(2).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(sink.get(0).unwrap(), None);
        assert_eq!(sink.get(3).unwrap(), None);
    }

    #[test]
    fn a_sink_opened_again_goes_on_from_its_last_height_and_drops_torn_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sink = FileSink::open(dir.path()).unwrap();
            sink.post(b"one").unwrap();
            sink.post(b"two").unwrap();
        }
        // A post that crashed before its rename.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}3")), b"half").unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        assert_eq!(sink.height(), 2);
        assert_eq!(sink.post(b"three").unwrap().height, 3);
        assert_eq!(sink.get(3).unwrap().as_deref(), Some(&b"three"[..]));
        assert!(!dir.path().join(format!("{TEMP_PREFIX}3")).exists());
    }

    #[test]
    fn a_missing_height_or_a_stranger_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        for blob in [&b"a"[..], b"b", b"c"] {
            sink.post(blob).unwrap();
        }
        drop(sink);
        fs::remove_file(dir.path().join(format!("{:020}{SUFFIX}", 2))).unwrap();
        let err = FileSink::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("height 2 is missing"), "{err}");

        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("notes.txt"), b"x").unwrap();
        let err = FileSink::open(other.path()).err().unwrap().to_string();
        assert!(err.contains("\"notes.txt\""), "{err}");
    }

    #[test]
    fn a_post_to_an_unwritable_directory_fails_and_leaves_the_height() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::open(dir.path().join("gone")).unwrap();
        sink.post(b"kept").unwrap();
        fs::remove_dir_all(dir.path().join("gone")).unwrap();
        let err = sink.post(b"lost").unwrap_err();
        assert!(matches!(err, SinkError::Io { .. }), "{err}");
        assert_eq!(sink.height(), 1, "a failed post takes no height");
    }

    #[test]
    fn concurrent_posts_never_share_a_height() {
        let dir = tempfile::tempdir().unwrap();
        let sink = std::sync::Arc::new(FileSink::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| sink.post(format!("{t}-{i}").as_bytes()).unwrap().height)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut heights: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        heights.sort_unstable();
        assert_eq!(heights, (1..=40).collect::<Vec<_>>());
    }
}
