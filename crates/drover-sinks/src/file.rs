//! The file sink: an append-only directory of blobs, one file per height. It owns the
//! directory's layout, the write order that makes a post durable, and the refusal to open a
//! directory it did not write. It must not be shared: one [`FileSink`] per directory, in one
//! process (its posts are ordered by an in-process lock, not a lock on the directory).

use crate::{Posted, Sink, SinkError, commitment};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An append-only directory of blobs, one file per height (`00000000000000000001.blob`, ...).
///
/// A post writes the blob to a temporary file, syncs it, renames it into place and syncs the
/// directory, so a blob is either whole under its height or absent, and a post that returned
/// survives a crash. Posts are taken one at a time. Opening finds the last height from the
/// files and removes temporary files a crash left behind; a gap among the heights (a file
/// removed by hand) is refused, since heights are what readers count on.
///
/// Its own calls block on the disk; its [`Sink`] calls run them on tokio's blocking pool.
/// Cloning is cheap and clones share the directory's lock.
#[derive(Clone)]
pub struct FileSink {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The last height written; held while a post writes, so posts never share a height.
    last: Mutex<u64>,
    /// The last height written, readable without waiting for a post's fsyncs to end (the
    /// lock above is held through them): what `height`, `get` and `head` read.
    published: AtomicU64,
    /// Numbers the probe files of `check`, so that concurrent checks never share one.
    probes: AtomicU64,
}

const SUFFIX: &str = ".blob";
const TEMP_PREFIX: &str = ".tmp-";

/// The heights of the blobs in `dir`, in order, checked to run from 1 without a gap; the
/// temporary files of posts and checks are passed over, or removed when `clear` says so.
fn heights_in(dir: &Path, clear: bool) -> Result<Vec<u64>, SinkError> {
    let io = |action, source| SinkError::Io {
        path: dir.to_path_buf(),
        action,
        source,
    };
    let corrupt = |what| SinkError::Corrupt {
        sink: dir.display().to_string(),
        what,
    };
    let mut heights = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("list its directory", e))? {
        let entry = entry.map_err(|e| io("list its directory", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            if clear {
                fs::remove_file(entry.path()).map_err(|e| io("remove a torn write", e))?;
            }
            continue;
        }
        let height = name
            .strip_suffix(SUFFIX)
            .and_then(|h| h.parse::<u64>().ok())
            .filter(|h| *h > 0)
            .ok_or_else(|| corrupt(format!("{name:?} is not a blob of this sink")))?;
        heights.push(height);
    }
    heights.sort_unstable();
    if let Some((i, h)) = (heights.iter().enumerate()).find(|(i, h)| **h != *i as u64 + 1) {
        return Err(corrupt(format!(
            "the blob of height {} is missing (found {h} next)",
            i + 1
        )));
    }
    Ok(heights)
}

/// The blobs of the sink in `dir`, in height order, read without opening it: for a reader
/// beside the one [`FileSink`] that writes there (a test, a tool), which must not clear that
/// sink's temporary files as [`FileSink::open`] does (a check's probe removed under it fails
/// the check).
pub fn read_blobs(dir: &Path) -> Result<Vec<Vec<u8>>, SinkError> {
    heights_in(dir, false)?
        .into_iter()
        .map(|h| {
            fs::read(dir.join(format!("{h:020}{SUFFIX}"))).map_err(|e| SinkError::Io {
                path: dir.to_path_buf(),
                action: "read a blob",
                source: e,
            })
        })
        .collect()
}

impl FileSink {
    /// Opens (making it if need be) the sink in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileSink, SinkError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| SinkError::Io {
            path: dir.clone(),
            action: "create its directory",
            source: e,
        })?;
        // A post that crashed before its rename (never answered, so never counted), or a
        // check's probe: only the one sink of the directory may clear them.
        let heights = heights_in(&dir, true)?;
        let last = heights.last().copied().unwrap_or(0);
        Ok(FileSink {
            inner: Arc::new(Inner {
                dir,
                last: Mutex::new(last),
                published: AtomicU64::new(last),
                probes: AtomicU64::new(0),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The height of the last blob (0 when empty).
    pub fn height(&self) -> u64 {
        self.inner.published.load(Ordering::Acquire)
    }

    fn path_of(&self, height: u64) -> PathBuf {
        self.inner.dir.join(format!("{height:020}{SUFFIX}"))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.inner.dir.clone(),
            action,
            source,
        }
    }

    /// Keeps `data` as the next blob; durable when this returns.
    pub fn post(&self, data: &[u8]) -> Result<Posted, SinkError> {
        let mut last = self.inner.last.lock().unwrap_or_else(|p| p.into_inner());
        let height = *last + 1;
        let dir = &self.inner.dir;
        let temp = dir.join(format!("{TEMP_PREFIX}{height}"));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(data)?;
            file.sync_all()?;
            fs::rename(&temp, self.path_of(height))?;
            // The rename is durable only once the directory is.
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(self.io("write a blob", e));
        }
        *last = height;
        self.inner.published.store(height, Ordering::Release);
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

    /// Whether a blob could be written now: writes, syncs and removes a one-byte probe file
    /// under the temporary prefix (which `open` clears, should a crash leave it behind), so
    /// it proves what a post needs of the directory without taking a height.
    pub fn check(&self) -> Result<(), SinkError> {
        let n = self.inner.probes.fetch_add(1, Ordering::Relaxed);
        let probe = self.inner.dir.join(format!("{TEMP_PREFIX}check-{n}"));
        let written = (|| {
            let mut file = File::create(&probe)?;
            file.write_all(b"?")?;
            // A full disk may only show when the data is flushed (delayed allocation).
            file.sync_data()
        })();
        let removed = fs::remove_file(&probe);
        written.map_err(|e| self.io("write a probe file", e))?;
        removed.map_err(|e| self.io("remove a probe file", e))
    }

    /// Runs `call` with a clone of this sink on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(FileSink) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let sink = self.clone();
        tokio::task::spawn_blocking(move || call(sink))
            .await
            .unwrap_or_else(|e| {
                // A panic in the call, or a runtime shutting down: whether a post was kept is
                // unknown, as after a lost answer, and another try may pass.
                Err(SinkError::Unavailable {
                    sink: self.inner.dir.display().to_string(),
                    why: format!("the blocking call did not finish: {e}"),
                })
            })
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn post(&self, data: &[u8]) -> Result<Posted, SinkError> {
        let data = data.to_vec();
        self.blocking(move |sink| sink.post(&data)).await
    }

    async fn get(&self, height: u64) -> Result<Option<Vec<u8>>, SinkError> {
        self.blocking(move |sink| sink.get(height)).await
    }

    async fn head(&self) -> Result<u64, SinkError> {
        // An atomic read: nothing to block on.
        Ok(self.height())
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.blocking(|sink| sink.check()).await
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_reader_beside_the_sink_reads_its_blobs_in_order_and_leaves_its_probes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        sink.post(b"one").unwrap();
        sink.post(b"two").unwrap();
        // A check's probe in flight.
        let probe = dir.path().join(format!("{TEMP_PREFIX}check-0"));
        fs::write(&probe, b"?").unwrap();
        assert_eq!(
            read_blobs(dir.path()).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert!(probe.exists(), "only the sink itself clears its probes");
    }

    #[test]
    fn a_sink_opened_again_goes_on_from_its_last_height_and_drops_torn_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sink = FileSink::open(dir.path()).unwrap();
            sink.post(b"one").unwrap();
            sink.post(b"two").unwrap();
        }
        // A post that crashed before its rename, and a check's probe.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}3")), b"half").unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}check-0")), b"?").unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        assert_eq!(sink.height(), 2);
        assert_eq!(sink.post(b"three").unwrap().height, 3);
        assert_eq!(sink.get(3).unwrap().as_deref(), Some(&b"three"[..]));
        assert!(!dir.path().join(format!("{TEMP_PREFIX}3")).exists());
        assert!(!dir.path().join(format!("{TEMP_PREFIX}check-0")).exists());
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
        let err = FileSink::open(dir.path()).err().unwrap();
        assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
        assert!(!err.is_unavailable());
        assert!(err.to_string().contains("height 2 is missing"), "{err}");

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
        assert!(err.is_unavailable());
        assert_eq!(sink.height(), 1, "a failed post takes no height");
    }

    #[test]
    fn concurrent_posts_never_share_a_height() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(FileSink::open(dir.path()).unwrap());
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

    #[tokio::test]
    async fn through_the_trait_a_file_sink_posts_reads_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let sink: Box<dyn Sink> = Box::new(FileSink::open(dir.path().join("sink")).unwrap());
        assert_eq!(sink.kind(), "file");
        assert_eq!(sink.head().await.unwrap(), 0);
        sink.check().await.unwrap();
        for (i, blob) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
            let posted = sink.post(blob).await.unwrap();
            assert_eq!(
                posted,
                Posted {
                    commitment: commitment(blob),
                    height: i as u64 + 1
                }
            );
        }
        assert_eq!(sink.head().await.unwrap(), 3);
        assert_eq!(sink.get(2).await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(sink.get(4).await.unwrap(), None);
        // The check takes no height and leaves no file behind.
        sink.check().await.unwrap();
        assert_eq!(sink.head().await.unwrap(), 3);
        assert_eq!(fs::read_dir(dir.path().join("sink")).unwrap().count(), 3);
    }

    #[tokio::test]
    async fn the_check_fails_when_the_directory_can_take_no_write() {
        // Tests run as root here, and root writes through permission bits: a read-only
        // directory would pass the check. The directory is taken away instead, then put back
        // as a plain file, which no blob can be written into either.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink");
        let sink = FileSink::open(&path).unwrap();
        Sink::post(&sink, b"kept").await.unwrap();
        Sink::check(&sink).await.unwrap();

        fs::remove_dir_all(&path).unwrap();
        let err = Sink::check(&sink).await.unwrap_err();
        assert!(matches!(err, SinkError::Io { .. }), "{err}");
        assert!(err.is_unavailable(), "{err}");

        fs::write(&path, b"not a directory").unwrap();
        let err = Sink::check(&sink).await.unwrap_err();
        assert!(matches!(err, SinkError::Io { .. }), "{err}");
        let err = Sink::post(&sink, b"lost").await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert_eq!(
            Sink::head(&sink).await.unwrap(),
            1,
            "a failed post takes no height"
        );
    }
}
