//! Heartbeats that change nothing but liveness, held in memory for a moment and written
//! together.
//!
//! A node whose status a heartbeat leaves as it is (`drover_core::node::status_after_heartbeat`
//! of its status is that status: UP or DRAINING) is *settled*. A heartbeat of a settled node
//! is not a transaction of its own: it is merged into the node's pending beat here (the latest
//! time, each figure the latest one given) and answered at once, and the writer writes every
//! pending beat in one transaction at most [`FLUSH_AFTER`] later (`flush`), with one
//! `NodeUpdated` per heartbeat it holds. Every other heartbeat (a DOWN node, an unknown one, a
//! node this store has not written since it opened) takes the write path as before, and its
//! transition and events are immediate.
//!
//! What keeps this exact:
//! - Only writes on the writer mark a node settled (registration, a written heartbeat, a
//!   flush), and every write that changes a node's status or removes it first writes the
//!   pending beats (`take_all` in the same transaction) and unsettles the nodes it changes, so
//!   a later heartbeat of such a node takes the write path and queues behind that write.
//! - The spot reaper writes the pending beats before it looks for silent nodes, and spares a
//!   node whose beat arrived while it looked (`unsettle_silent`): no acknowledged heartbeat is
//!   ever older than what the reaper judged.
//! - A flush applies each beat by the same rule as a written heartbeat, so a beat that finds
//!   its node changed after all (another process wrote the file) still does what a heartbeat
//!   does, a flush later.
//! - Reads of nodes overlay the pending beats (`overlay`): a listing shows the last
//!   acknowledged heartbeat and figures, not the last flushed ones.
//!
//! This is a buffer, never an authority: nothing is decided from it that the database would
//! decide otherwise, and what it holds is at most [`FLUSH_AFTER`] of heartbeats (see
//! `docs/reliability.md` for what a crash can lose).

use drover_core::{Node, NodeStats, NodeStatus, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long a heartbeat of a settled node may wait in memory before it is written.
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);

/// The heartbeats of one node since the last flush, merged.
#[derive(Debug, Clone)]
pub(super) struct Beat {
    pub(super) stats: NodeStats,
    pub(super) at: Timestamp,
    /// How many heartbeats it stands for: each gets its `NodeUpdated` when written.
    pub(super) count: u32,
    /// The node's status when the first of them was held.
    pub(super) status: NodeStatus,
}

impl Beat {
    /// `later` merged over this beat: its time, and each figure it gives.
    fn absorb(&mut self, later: NodeStats, at: Timestamp) {
        let s = &mut self.stats;
        if later.address.is_some() {
            s.address = later.address;
        }
        if later.cpu_load.is_some() {
            s.cpu_load = later.cpu_load;
        }
        if later.running_tasks.is_some() {
            s.running_tasks = later.running_tasks;
        }
        if later.total_cores.is_some() {
            s.total_cores = later.total_cores;
        }
        if later.free_memory_bytes.is_some() {
            s.free_memory_bytes = later.free_memory_bytes;
        }
        self.at = at;
        self.count = self.count.saturating_add(1);
    }
}

#[derive(Default)]
struct Inner {
    /// Settled nodes and their status, as the last write that touched them left it.
    settled: HashMap<String, NodeStatus>,
    /// Heartbeats acknowledged and not yet written.
    pending: HashMap<String, Beat>,
    /// Whether a flush is on its way for what is pending.
    flush_due: bool,
}

/// What [`Beats::buffer`] did with a heartbeat.
pub(super) enum Buffered {
    /// Held; the node's status is this. `schedule`: no flush is due yet, the caller starts one.
    Held { status: NodeStatus, schedule: bool },
    /// The node is not settled: the heartbeat must be written.
    Write(NodeStats),
}

/// The pending heartbeats of a store and the nodes that may have them (see the module docs).
#[derive(Default)]
pub(super) struct Beats {
    inner: Mutex<Inner>,
}

impl Beats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a thread panicked between two map operations; the maps
        // are intact.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a heartbeat of a settled node; hands it back otherwise.
    pub(super) fn buffer(&self, id: &str, stats: NodeStats, at: Timestamp) -> Buffered {
        let mut inner = self.lock();
        let Some(&status) = inner.settled.get(id) else {
            return Buffered::Write(stats);
        };
        match inner.pending.get_mut(id) {
            Some(beat) => beat.absorb(stats, at),
            None => {
                inner.pending.insert(
                    id.to_string(),
                    Beat {
                        stats,
                        at,
                        count: 1,
                        status,
                    },
                );
            }
        }
        let schedule = !std::mem::replace(&mut inner.flush_due, true);
        Buffered::Held { status, schedule }
    }

    /// Records that a write left `id` with `status`: settled if a heartbeat would leave that
    /// status as it is, unsettled otherwise. Called on the writer, inside the write.
    pub(super) fn written(&self, id: &str, status: NodeStatus) {
        let mut inner = self.lock();
        if drover_core::node::status_after_heartbeat(status) == status {
            inner.settled.insert(id.to_string(), status);
        } else {
            inner.settled.remove(id);
        }
    }

    /// Forgets `id`: a removed node, or one whose status a write is changing.
    pub(super) fn unsettle(&self, id: &str) {
        let mut inner = self.lock();
        inner.settled.remove(id);
    }

    /// Every pending beat, for a write that must see them in the database first.
    pub(super) fn take_all(&self) -> HashMap<String, Beat> {
        std::mem::take(&mut self.lock().pending)
    }

    /// Every pending beat, for the flush that was due: a beat held after this starts the next.
    pub(super) fn take_for_flush(&self) -> HashMap<String, Beat> {
        let mut inner = self.lock();
        inner.flush_due = false;
        // The next flush will likely hold as many: sized for them at once, rather than grown
        // through every power of two again on the heartbeat path.
        let room = inner.pending.len();
        std::mem::replace(&mut inner.pending, HashMap::with_capacity(room))
    }

    /// Puts back beats whose write failed, under any that arrived since (those are later).
    /// Whether no flush was due: the caller starts one.
    pub(super) fn restore(&self, beats: HashMap<String, Beat>) -> bool {
        let mut inner = self.lock();
        for (id, mut beat) in beats {
            if let Some(later) = inner.pending.remove(&id) {
                let count = beat.count;
                beat.absorb(later.stats, later.at);
                beat.count = count.saturating_add(later.count);
            }
            inner.pending.insert(id, beat);
        }
        !std::mem::replace(&mut inner.flush_due, true)
    }

    /// Of the nodes the reaper found silent, those with no beat pending (each is unsettled, so
    /// its next heartbeat is written after the reaper's); a node with one has spoken since.
    pub(super) fn unsettle_silent(&self, silent: Vec<String>) -> Vec<String> {
        let mut inner = self.lock();
        silent
            .into_iter()
            .filter(|id| {
                let quiet = !inner.pending.contains_key(id);
                if quiet {
                    inner.settled.remove(id);
                }
                quiet
            })
            .collect()
    }

    /// `nodes` as their pending beats leave them.
    pub(super) fn overlay(&self, nodes: &mut [Node]) {
        let inner = self.lock();
        if inner.pending.is_empty() {
            return;
        }
        for node in nodes {
            if let Some(beat) = inner.pending.get(&node.id) {
                let s = &beat.stats;
                if let Some(a) = &s.address {
                    node.info.address = a.clone();
                }
                if s.cpu_load.is_some() {
                    node.cpu_load = s.cpu_load;
                }
                if let Some(n) = s.running_tasks {
                    node.running_tasks = n;
                }
                if s.total_cores.is_some() {
                    node.info.capacity.cores = s.total_cores;
                }
                if s.free_memory_bytes.is_some() {
                    node.free_memory_bytes = s.free_memory_bytes;
                }
                node.last_heartbeat = beat.at;
            }
        }
    }
}
