//! Whether a server is fit to take work: the free-disk rule of the health check.
//!
//! The store says whether it can take a write and how much room its file system has left; this
//! module decides what that room means. Writes need headroom beyond the next page (a job of a
//! million tasks grows the database by hundreds of megabytes, SQLite's WAL and checkpoints need
//! room of their own), so a server is reported unhealthy before the disk is full, while a
//! scheduler can still move work elsewhere.

/// Free space under the configured minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowDisk {
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

impl std::fmt::Display for LowDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes free where the database lives, under the minimum of {} bytes; free disk \
             space or lower --min-free-disk",
            self.free_bytes, self.min_free_bytes
        )
    }
}

/// Decides the disk part of health. `free_bytes` is `None` when the store has no local file
/// system to measure (a database server), which is not a failure; a minimum of 0 turns the rule
/// off.
pub fn low_disk(free_bytes: Option<u64>, min_free_bytes: u64) -> Option<LowDisk> {
    let free_bytes = free_bytes?;
    (min_free_bytes > 0 && free_bytes < min_free_bytes).then_some(LowDisk {
        free_bytes,
        min_free_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn low_exactly_when_under_a_nonzero_minimum(free in any::<u64>(), min in any::<u64>()) {
            let verdict = low_disk(Some(free), min);
            prop_assert_eq!(verdict.is_some(), min > 0 && free < min);
            prop_assert_eq!(low_disk(None, min), None);
            prop_assert_eq!(low_disk(Some(free), 0), None);
        }
    }
}
