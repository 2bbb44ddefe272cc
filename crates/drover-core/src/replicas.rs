//! Replica repair: how many of an object's replicas still count, and where the missing ones go
//! (the placement contract's objects and replicas, and the repair worker's one step).
//!
//! This module owns the rule; it must not read replicas, nodes or the ring itself. The caller
//! hands in the object's replica records, which nodes are UP, and the object's candidates in
//! placement order (`placement::Ring::place(hash, MAX_RF)` over the nodes that may hold data).
//!
//! A replica counts toward the object's replication factor when it is HEALTHY and its node is
//! UP. One marked MISSING, or on a node that is not UP, does not. A replacement is assigned as
//! PENDING on the first candidates that hold no record of the object yet (a node that lost its
//! copy keeps its MISSING record until it is healed, so it is not chosen again meanwhile), and
//! counts once it is marked healed. A PENDING replacement on an UP node is waited for, not
//! assigned twice. A node that comes back UP still holds its copy, so an object may then count
//! more healthy replicas than its factor; repair only ever adds, and leaves that alone.

pub use crate::model::ReplicaState;

/// One replica record of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica<'a> {
    pub node_id: &'a str,
    pub state: ReplicaState,
}

/// How many of `replicas` count toward the replication factor: HEALTHY on an UP node.
pub fn healthy(replicas: &[Replica<'_>], is_up: impl Fn(&str) -> bool) -> usize {
    (replicas.iter())
        .filter(|r| r.state == ReplicaState::Healthy && is_up(r.node_id))
        .count()
}

/// Whether an object with `replicas` has fewer healthy ones than `rf`.
pub fn under_replicated(rf: usize, replicas: &[Replica<'_>], is_up: impl Fn(&str) -> bool) -> bool {
    healthy(replicas, is_up) < rf
}

/// The nodes to assign as PENDING replacements so that healthy plus awaited replicas reach
/// `rf`: the first of `candidates` (in placement order) that are UP and hold no record of the
/// object. Fewer, or none, when the candidates run out.
pub fn repair_targets<'a>(
    rf: usize,
    replicas: &[Replica<'_>],
    candidates: &[&'a str],
    is_up: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    let awaited = (replicas.iter())
        .filter(|r| r.state != ReplicaState::Missing && is_up(r.node_id))
        .count();
    let wanted = rf.saturating_sub(awaited);
    (candidates.iter())
        .filter(|c| is_up(c) && !replicas.iter().any(|r| r.node_id == **c))
        .take(wanted)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReplicaState::*;

    fn replica(node_id: &str, state: ReplicaState) -> Replica<'_> {
        Replica { node_id, state }
    }

    #[test]
    fn only_healthy_replicas_on_up_nodes_count() {
        let down = ["n2"];
        let is_up = |id: &str| !down.contains(&id);
        let replicas = [
            replica("n1", Healthy),
            replica("n2", Healthy),
            replica("n3", Missing),
            replica("n4", Pending),
        ];
        assert_eq!(healthy(&replicas, is_up), 1);
        assert!(under_replicated(3, &replicas, is_up));
        assert!(!under_replicated(1, &replicas, is_up));
    }

    #[test]
    fn a_node_going_down_gets_its_replica_replaced_by_the_next_candidate() {
        let replicas = [
            replica("n1", Healthy),
            replica("n2", Healthy),
            replica("n3", Healthy),
        ];
        let candidates = ["n1", "n2", "n3", "n4", "n5"];
        assert!(repair_targets(3, &replicas, &candidates, |_| true).is_empty());
        let is_up = |id: &str| id != "n2";
        assert_eq!(repair_targets(3, &replicas, &candidates, is_up), vec!["n4"]);
    }

    #[test]
    fn a_missing_copy_is_replaced_elsewhere_and_a_pending_one_is_awaited() {
        let candidates = ["n1", "n2", "n3", "n4", "n5"];
        let lost = [
            replica("n1", Healthy),
            replica("n2", Missing),
            replica("n3", Healthy),
        ];
        // The node that lost its copy is not chosen again while its record says MISSING.
        assert_eq!(repair_targets(3, &lost, &candidates, |_| true), vec!["n4"]);
        // Once assigned, the replacement is awaited, not assigned again.
        let assigned = [
            replica("n1", Healthy),
            replica("n2", Missing),
            replica("n3", Healthy),
            replica("n4", Pending),
        ];
        assert!(repair_targets(3, &assigned, &candidates, |_| true).is_empty());
        // Unless its node goes down too.
        let is_up = |id: &str| id != "n4";
        assert_eq!(repair_targets(3, &assigned, &candidates, is_up), vec!["n5"]);
    }

    #[test]
    fn repair_takes_what_candidates_there_are() {
        let replicas = [replica("n1", Missing)];
        assert_eq!(
            repair_targets(3, &replicas, &["n1", "n2"], |_| true),
            vec!["n2"]
        );
        assert!(repair_targets(3, &replicas, &[], |_| true).is_empty());
        assert!(repair_targets(0, &[], &["n1"], |_| true).is_empty());
    }
}
