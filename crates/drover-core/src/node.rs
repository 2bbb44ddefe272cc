//! The node registry's decisions: what a heartbeat does to a node's status, what draining does
//! to it, when a node counts as silent, which DOWN nodes may be forgotten, and whether the
//! registry has room for another.
//!
//! This module owns those rules; a store reads each node's status, last heartbeat and whether
//! it holds a RUNNING task, asks here, and writes what it is told. Nothing here reads the clock:
//! the cutoffs are computed by the caller from its own `now`.

use crate::event::Event;
use crate::model::NodeStatus;
use crate::time::Timestamp;

/// A node's status after a heartbeat: a DOWN node that speaks again is UP; UP and DRAINING
/// stay as they are (draining is an operator's choice, which a heartbeat does not undo).
pub fn status_after_heartbeat(status: NodeStatus) -> NodeStatus {
    match status {
        NodeStatus::Down => NodeStatus::Up,
        other => other,
    }
}

/// What an operator asks of a node: to drain it (it finishes what it holds and gets no new
/// work) or to put a drained node back to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Start,
    Stop,
}

impl Drain {
    /// The event that records this drain or undrain of `node_id`, when it changed the node.
    pub fn event(self, node_id: &str) -> Event {
        let node_id = node_id.to_string();
        match self {
            Drain::Start => Event::NodeDraining { node_id },
            Drain::Stop => Event::NodeUndrained { node_id },
        }
    }
}

/// Why a drain or undrain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DrainRefused {
    /// A DOWN node holds no work and gets none until it speaks again, when it comes back UP:
    /// there is nothing to drain, and undraining would hand work to a node that is not there.
    #[error("it holds no work; drain or undrain it once its heartbeats bring it back UP")]
    Down,
}

/// A node's status after an operator's drain or undrain: UP and DRAINING go to the status
/// asked for (asking for the status a node has already changes nothing); a DOWN node is
/// refused. Draining lasts until it is undone or the node goes DOWN: a node that comes back
/// after being DOWN is UP, and is drained again by asking again.
pub fn status_after_drain(status: NodeStatus, drain: Drain) -> Result<NodeStatus, DrainRefused> {
    match (status, drain) {
        (NodeStatus::Down, _) => Err(DrainRefused::Down),
        (_, Drain::Start) => Ok(NodeStatus::Draining),
        (_, Drain::Stop) => Ok(NodeStatus::Up),
    }
}

/// Whether the registry, holding `registered` nodes, may take one more under the cap `max`
/// (`None`: no cap). Every node counts, DOWN ones too: they hold a row until retention forgets
/// them.
pub fn may_register(registered: u64, max: Option<u64>) -> bool {
    max.is_none_or(|max| registered < max)
}

/// Whether a node has been silent since `cutoff`: its last heartbeat is before it.
pub fn is_silent(last_heartbeat: Timestamp, cutoff: Timestamp) -> bool {
    last_heartbeat < cutoff
}

/// Whether the silence reaper marks a node DOWN: it is not DOWN yet and silent since `cutoff`.
pub fn goes_down(status: NodeStatus, last_heartbeat: Timestamp, cutoff: Timestamp) -> bool {
    status != NodeStatus::Down && is_silent(last_heartbeat, cutoff)
}

/// The facts retention looks at for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionView {
    pub status: NodeStatus,
    pub last_heartbeat: Timestamp,
    /// Whether a RUNNING task is assigned to the node.
    pub holds_running_task: bool,
}

/// Whether a node may be forgotten: DOWN, silent since `cutoff`, and holding no RUNNING task (a
/// task's holder must stay known until the task is taken back). A forgotten node's history
/// stays in the attempt records, so its late reports stay fenced off.
pub fn may_forget(node: &RetentionView, cutoff: Timestamp) -> bool {
    node.status == NodeStatus::Down
        && is_silent(node.last_heartbeat, cutoff)
        && !node.holds_running_task
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{any_instant, any_node_status};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_heartbeat_never_leaves_a_node_down(status in any_node_status()) {
            let after = status_after_heartbeat(status);
            prop_assert_ne!(after, NodeStatus::Down);
            if status != NodeStatus::Down {
                prop_assert_eq!(after, status);
            }
        }

        #[test]
        fn only_a_silent_live_node_goes_down(
            status in any_node_status(),
            last in any_instant(),
            cutoff in any_instant(),
        ) {
            prop_assert_eq!(goes_down(status, last, cutoff), status != NodeStatus::Down && last < cutoff);
            // A heartbeat at the cutoff or later keeps a node up.
            prop_assert!(!goes_down(status, cutoff, cutoff));
        }

        #[test]
        fn a_drain_moves_only_live_nodes_and_only_between_up_and_draining(
            status in any_node_status(),
            drain in prop::sample::select(vec![Drain::Start, Drain::Stop]),
        ) {
            match status_after_drain(status, drain) {
                Err(DrainRefused::Down) => prop_assert_eq!(status, NodeStatus::Down),
                Ok(after) => {
                    prop_assert_ne!(status, NodeStatus::Down);
                    let asked = if drain == Drain::Start { NodeStatus::Draining } else { NodeStatus::Up };
                    prop_assert_eq!(after, asked);
                    // Asking again changes nothing.
                    prop_assert_eq!(status_after_drain(after, drain), Ok(after));
                    // A heartbeat keeps what the operator chose.
                    prop_assert_eq!(status_after_heartbeat(after), after);
                }
            }
        }

        #[test]
        fn forget_never_removes_a_live_node_or_one_holding_a_task(
            status in any_node_status(),
            last_heartbeat in any_instant(),
            holds_running_task in any::<bool>(),
            cutoff in any_instant(),
        ) {
            let view = RetentionView { status, last_heartbeat, holds_running_task };
            let forget = may_forget(&view, cutoff);
            if forget {
                prop_assert_eq!(status, NodeStatus::Down);
                prop_assert!(!holds_running_task);
                prop_assert!(last_heartbeat < cutoff);
            } else {
                prop_assert!(status != NodeStatus::Down || holds_running_task || last_heartbeat >= cutoff);
            }
        }
    }
}
