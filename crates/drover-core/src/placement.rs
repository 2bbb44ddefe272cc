//! Consistent-hash placement: which nodes hold the replicas of an object, from its content hash
//! (the placement contract's `GET /placement/{hash}?rf=N`, and the repair worker's targets).
//!
//! This module owns the ring and the walk. It must not decide which nodes are eligible (the
//! caller builds the ring from the nodes that may hold data) and it must not keep the ring up
//! to date (the caller edits it as nodes join and leave, [`Ring::insert`] and
//! [`Ring::remove`], which hash only that node's points: building hashes every point, 6,400
//! per node at the default capacity).
//!
//! The ring is the original system's, so that data placed by it stays where it is after a
//! move to drover: node `id` with `capacity_gb` has `64 × max(capacity_gb, 1)` points, point
//! `v` at the first 8 bytes (big-endian) of SHA-256 of `"{id}:{v}"`; a key sits at the first 8
//! bytes of SHA-256 of the key as given. A placement walks clockwise from the first point at or
//! after the key, wrapping, and takes each node whose zone is not chosen yet; then, if fewer
//! than `rf` nodes were found that way (fewer zones than `rf`), it walks again and fills the
//! remaining places with the nodes not chosen yet, in ring order. It answers at most `rf`
//! distinct nodes (fewer when there are fewer nodes). Where the original differs it is in that
//! fill only: it may repeat a node or fall back to registration order, which drover never does.
//! Two points at the same place (a 64-bit collision) belong to the node whose id sorts last.

use sha2::{Digest, Sha256};

/// Points per GB of a node's capacity.
pub const POINTS_PER_GB: u64 = 64;

/// The largest capacity a node may declare, 64 TiB: 4,194,304 points, about 50 MB of ring for
/// that one node.
pub const MAX_CAPACITY_GB: u64 = 65_536;

/// The most replicas one placement may ask for.
pub const MAX_RF: usize = 16;

/// A node as the ring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingNode<'a> {
    pub id: &'a str,
    pub zone: &'a str,
    pub capacity_gb: u64,
}

/// The ring of a set of nodes.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Every point, in ring order.
    points: Vec<u64>,
    /// The node of each point (an index into `nodes`).
    owners: Vec<u32>,
    /// Each node's id and zone (the zone as an index into `zones`), in no set order.
    nodes: Vec<(String, u32)>,
    /// Each zone seen, with how many of the ring's nodes are in it now.
    zones: Vec<(String, usize)>,
}

/// The place of point `v` of node `id`.
pub fn node_point(id: &str, v: u64) -> u64 {
    first_eight(
        Sha256::new()
            .chain_update(id)
            .chain_update(b":")
            .chain_update(v.to_string()),
    )
}

/// The place of a key.
pub fn key_point(key: &str) -> u64 {
    first_eight(Sha256::new().chain_update(key))
}

fn first_eight(hasher: Sha256) -> u64 {
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// How many points a node of `capacity_gb` has.
pub fn points_of(capacity_gb: u64) -> u64 {
    POINTS_PER_GB.saturating_mul(capacity_gb.max(1))
}

impl Ring {
    /// The ring of `nodes` (a node listed twice counts once, with its last entry).
    pub fn build<'a>(nodes: impl IntoIterator<Item = RingNode<'a>>) -> Ring {
        let mut by_id: std::collections::BTreeMap<&str, RingNode<'a>> = Default::default();
        for node in nodes {
            by_id.insert(node.id, node);
        }
        let mut ring = Ring::default();
        let mut placed: Vec<(u64, u32)> = Vec::new();
        for (index, node) in by_id.values().enumerate() {
            let zone = ring.join_zone(node.zone);
            ring.nodes.push((node.id.to_string(), zone));
            placed.extend(
                (0..points_of(node.capacity_gb)).map(|v| (node_point(node.id, v), index as u32)),
            );
        }
        // Ties in place go to the node listed last (the largest id): sorted by place, then
        // owner, and of each run of equal places the last is kept.
        placed.sort_unstable();
        let mut points = Vec::with_capacity(placed.len());
        let mut owners = Vec::with_capacity(placed.len());
        for (i, (point, owner)) in placed.iter().enumerate() {
            if placed.get(i + 1).is_some_and(|(next, _)| next == point) {
                continue;
            }
            points.push(*point);
            owners.push(*owner);
        }
        ring.points = points;
        ring.owners = owners;
        ring
    }

    /// The index of `zone`, counting one more node in it.
    fn join_zone(&mut self, zone: &str) -> u32 {
        let index = match self.zones.iter().position(|(z, _)| z == zone) {
            Some(i) => i,
            None => {
                self.zones.push((zone.to_string(), 0));
                self.zones.len() - 1
            }
        };
        self.zones[index].1 += 1;
        index as u32
    }

    /// Adds `node` (replacing a node of the same id), merging its points into the ring: the
    /// same ring [`Ring::build`] makes of the new set, without hashing the others' points again.
    pub fn insert(&mut self, node: RingNode<'_>) {
        self.remove(node.id);
        let zone = self.join_zone(node.zone);
        let index = self.nodes.len() as u32;
        self.nodes.push((node.id.to_string(), zone));
        let mut added: Vec<u64> = (0..points_of(node.capacity_gb))
            .map(|v| node_point(node.id, v))
            .collect();
        added.sort_unstable();
        added.dedup();
        let total = self.points.len() + added.len();
        let (mut points, mut owners) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let mut new = added.into_iter().peekable();
        for (point, owner) in self.points.iter().zip(&self.owners) {
            while let Some(p) = new.next_if(|p| p < point) {
                points.push(p);
                owners.push(index);
            }
            // Two points at one place: the node whose id sorts last keeps it.
            let collides = new.next_if_eq(point).is_some();
            points.push(*point);
            if collides && node.id > self.nodes[*owner as usize].0.as_str() {
                owners.push(index);
            } else {
                owners.push(*owner);
            }
        }
        for p in new {
            points.push(p);
            owners.push(index);
        }
        self.points = points;
        self.owners = owners;
    }

    /// Removes the node `id` and its points, if the ring holds it. A point it had taken from
    /// another node at the same place (a 64-bit collision) is not given back: rebuild with
    /// [`Ring::build`] for that exactness.
    pub fn remove(&mut self, id: &str) {
        let Some(gone) = self.nodes.iter().position(|(n, _)| n == id) else {
            return;
        };
        let gone = gone as u32;
        let last = (self.nodes.len() - 1) as u32;
        let (points, owners): (Vec<u64>, Vec<u32>) = (self.points.iter().zip(&self.owners))
            .filter(|(_, owner)| **owner != gone)
            .map(|(point, owner)| (*point, if *owner == last { gone } else { *owner }))
            .unzip();
        self.points = points;
        self.owners = owners;
        let (_, zone) = self.nodes.swap_remove(gone as usize);
        self.zones[zone as usize].1 -= 1;
    }

    /// How many nodes the ring holds.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// How many points the ring holds.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The heap memory the ring holds, in bytes: its arrays, and for each node and zone its
    /// entry (`size_of`) and its text.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.points.capacity() * size_of::<u64>()
            + self.owners.capacity() * size_of::<u32>()
            + (self.nodes.iter())
                .map(|(id, _)| id.capacity() + size_of::<(String, u32)>())
                .sum::<usize>()
            + self
                .zones
                .iter()
                .map(|(z, _)| z.capacity() + size_of::<(String, usize)>())
                .sum::<usize>()
    }

    /// The nodes for `key`: at most `rf` distinct nodes, distinct zones first (see the
    /// module's documentation for the walk).
    pub fn place(&self, key: &str, rf: usize) -> Vec<&str> {
        if self.points.is_empty() || rf == 0 {
            return Vec::new();
        }
        let want = rf.min(self.nodes.len());
        let key = key_point(key);
        let start = match self.points.partition_point(|p| *p < key) {
            i if i == self.points.len() => 0,
            i => i,
        };
        let walk = || {
            (self.owners[start..].iter())
                .chain(&self.owners[..start])
                .map(|owner| *owner as usize)
        };
        let mut chosen: Vec<usize> = Vec::with_capacity(want);
        let mut zones_taken = vec![false; self.zones.len()];
        // Distinct zones first; the walk ends as soon as every zone has a node.
        let zones_wanted = want.min(self.zones.iter().filter(|(_, nodes)| *nodes > 0).count());
        if zones_wanted > 0 {
            for owner in walk() {
                let zone = self.nodes[owner].1 as usize;
                if !zones_taken[zone] {
                    zones_taken[zone] = true;
                    chosen.push(owner);
                    if chosen.len() == zones_wanted {
                        break;
                    }
                }
            }
        }
        // Then the nodes not chosen yet, in ring order.
        if chosen.len() < want {
            for owner in walk() {
                if !chosen.contains(&owner) {
                    chosen.push(owner);
                    if chosen.len() == want {
                        break;
                    }
                }
            }
        }
        chosen
            .into_iter()
            .map(|i| self.nodes[i].0.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    /// The ring as its definition reads, built the plain way (a map from place to node,
    /// filled in id order so that a later id overwrites), walked point by point.
    fn reference(nodes: &[(String, String, u64)], key: &str, rf: usize) -> Vec<String> {
        let mut sorted: Vec<_> = nodes.to_vec();
        sorted.sort();
        let mut ring: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, (id, _, capacity)) in sorted.iter().enumerate() {
            for v in 0..64 * (*capacity).max(1) {
                let digest = Sha256::digest(format!("{id}:{v}").as_bytes());
                ring.insert(u64::from_be_bytes(digest[..8].try_into().unwrap()), i);
            }
        }
        let digest = Sha256::digest(key.as_bytes());
        let at = u64::from_be_bytes(digest[..8].try_into().unwrap());
        let order: Vec<usize> = ring
            .range(at..)
            .chain(ring.range(..at))
            .map(|(_, n)| *n)
            .collect();
        let mut chosen: Vec<usize> = Vec::new();
        let mut zones = HashSet::new();
        for &n in &order {
            if chosen.len() < rf && zones.insert(sorted[n].1.clone()) {
                chosen.push(n);
            }
        }
        for &n in &order {
            if chosen.len() < rf && !chosen.contains(&n) {
                chosen.push(n);
            }
        }
        chosen.into_iter().map(|n| sorted[n].0.clone()).collect()
    }

    fn nodes(count: usize, zones: usize, capacity: u64) -> Vec<(String, String, u64)> {
        (0..count)
            .map(|i| (format!("node-{i}"), format!("zone-{}", i % zones), capacity))
            .collect()
    }

    fn ring_of(nodes: &[(String, String, u64)]) -> Ring {
        Ring::build(nodes.iter().map(|(id, zone, capacity_gb)| RingNode {
            id,
            zone,
            capacity_gb: *capacity_gb,
        }))
    }

    #[test]
    fn points_are_the_first_eight_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(key_point("abc"), 0xba78_16bf_8f01_cfea);
        let digest = Sha256::digest(b"node-1:7");
        assert_eq!(
            node_point("node-1", 7),
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        );
        assert_eq!(points_of(100), 6_400);
        assert_eq!(points_of(0), 64);
    }

    #[test]
    fn placements_agree_with_the_plain_ring() {
        for (count, zones, rf) in [(7, 3, 3), (5, 1, 3), (6, 2, 4), (4, 4, 6), (1, 1, 3)] {
            let set = nodes(count, zones, 1 + (count as u64 % 3));
            let ring = ring_of(&set);
            for k in 0..300 {
                let key = format!("{k:064x}");
                assert_eq!(
                    ring.place(&key, rf),
                    reference(&set, &key, rf),
                    "{count} nodes, {zones} zones, rf {rf}, key {key}"
                );
            }
        }
    }

    #[test]
    fn a_placement_has_rf_distinct_nodes_in_distinct_zones_when_there_are_enough() {
        let set = nodes(12, 4, 2);
        let zone_of: BTreeMap<_, _> = set
            .iter()
            .map(|(id, z, _)| (id.as_str(), z.as_str()))
            .collect();
        let ring = ring_of(&set);
        for k in 0..500 {
            let placed = ring.place(&format!("object-{k}"), 3);
            assert_eq!(placed.len(), 3);
            let distinct: HashSet<_> = placed.iter().collect();
            assert_eq!(distinct.len(), 3);
            let zones: HashSet<_> = placed.iter().map(|id| zone_of[id]).collect();
            assert_eq!(zones.len(), 3, "{placed:?}");
            // Five places over four zones: one zone twice, every node distinct.
            let five = ring.place(&format!("object-{k}"), 5);
            assert_eq!(five.iter().collect::<HashSet<_>>().len(), 5);
            assert_eq!(
                five.iter()
                    .map(|id| zone_of[id])
                    .collect::<HashSet<_>>()
                    .len(),
                4
            );
            assert_eq!(
                &five[..3],
                &placed[..],
                "a larger rf extends the smaller one"
            );
        }
        // More places than nodes: every node, once.
        assert_eq!(ring.place("x", MAX_RF).len(), 12);
        assert!(ring.place("x", 0).is_empty());
        assert!(Ring::default().place("x", 3).is_empty());
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_nodes_are_given_in() {
        let set = nodes(9, 3, 1);
        let mut reversed = set.clone();
        reversed.reverse();
        let (a, b) = (ring_of(&set), ring_of(&reversed));
        for k in 0..200 {
            let key = format!("k{k}");
            assert_eq!(a.place(&key, 3), b.place(&key, 3));
        }
    }

    #[test]
    fn nodes_inserted_and_removed_one_by_one_give_the_ring_built_at_once() {
        let set = nodes(12, 3, 1);
        let mut ring = ring_of(&set[..6]);
        for (id, zone, capacity_gb) in &set[6..] {
            ring.insert(RingNode {
                id,
                zone,
                capacity_gb: *capacity_gb,
            });
        }
        // A node registered again with another capacity and zone replaces itself.
        ring.insert(RingNode {
            id: "node-3",
            zone: "zone-9",
            capacity_gb: 2,
        });
        for gone in ["node-0", "node-7", "node-11"] {
            ring.remove(gone);
        }
        ring.remove("no-such-node");
        let mut expected: Vec<_> = (set.iter())
            .filter(|(id, _, _)| !["node-0", "node-7", "node-11", "node-3"].contains(&id.as_str()))
            .cloned()
            .collect();
        expected.push(("node-3".into(), "zone-9".into(), 2));
        let built = ring_of(&expected);
        assert_eq!(ring.nodes(), built.nodes());
        assert_eq!(ring.points(), built.points());
        for k in 0..500 {
            let key = format!("key-{k}");
            assert_eq!(ring.place(&key, 4), built.place(&key, 4), "{key}");
        }
        // The zone left empty no longer counts: three zones hold nodes, so five places are
        // three zones and then two more nodes, as the ring built at once answers.
        ring.remove("node-3");
        let built = ring_of(&expected[..expected.len() - 1]);
        for k in 0..200 {
            let key = format!("key-{k}");
            assert_eq!(ring.place(&key, 5), built.place(&key, 5), "{key}");
        }
    }

    #[test]
    fn one_node_joining_or_leaving_moves_about_one_key_in_n() {
        const KEYS: usize = 10_000;
        let before = nodes(20, 4, 1);
        let mut after = before.clone();
        after.push(("node-new".into(), "zone-1".into(), 1));
        let (small, large) = (ring_of(&before), ring_of(&after));
        let mut moved = 0;
        for k in 0..KEYS {
            let key = format!("{k}");
            let (a, b) = (small.place(&key, 1), large.place(&key, 1));
            if a != b {
                assert_eq!(
                    b,
                    vec!["node-new"],
                    "a key moves only to the node that joined"
                );
                moved += 1;
            }
        }
        // 1/21 of the keys is 476; the ring's points are random, so allow a margin.
        let expected = KEYS as f64 / 21.0;
        assert!(
            (moved as f64) > expected * 0.5 && (moved as f64) < expected * 1.5,
            "{moved} of {KEYS} keys moved, expected about {expected:.0}"
        );

        // One leaving: only its keys move, and for the three-replica sets only its places.
        let mut fewer = before.clone();
        let gone = fewer.remove(7).0;
        let smaller = ring_of(&fewer);
        let (mut moved, mut places) = (0, 0);
        for k in 0..KEYS {
            let key = format!("{k}");
            let (a, b) = (small.place(&key, 3), smaller.place(&key, 3));
            places += a.len();
            let lost: Vec<_> = a.iter().filter(|id| !b.contains(id)).collect();
            assert!(lost.iter().all(|id| **id == gone), "{a:?} became {b:?}");
            moved += lost.len();
        }
        // Each node holds about 1/20 of the places.
        let expected = places as f64 / 20.0;
        assert!(
            (moved as f64) > expected * 0.5 && (moved as f64) < expected * 1.5,
            "{moved} of {places} places moved, expected about {expected:.0}"
        );
    }
}
