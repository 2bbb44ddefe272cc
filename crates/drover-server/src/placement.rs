//! The placement service: where the placement contract's rules meet the store, once, for every
//! surface that places data or schedules work.
//!
//! It owns the ring (`drover_core::placement::Ring`) and a view of the nodes with their stats
//! and the scheduler's weights, built from the store and kept current: a write of this server
//! that changes which nodes are UP, a node's zone or capacity, or the weights marks the view
//! stale through the store's events, and the next placement or schedule reads the store again
//! first. The ring follows the view when a placement asks, edited node by node rather than
//! rebuilt (building hashes 6,400 points per node at the default capacity), so a server that
//! only schedules never holds one. Stats this server writes go into the view as they
//! are committed. On a store that several replicas share, the view is also read again when it
//! is older than [`SHARED_VIEW_MAX_AGE`], so another replica's changes show within that bound.
//!
//! Which nodes a key goes to, which node a workload goes to and which replicas count are the
//! core's answers; the store keeps the facts. This module must not talk HTTP: the surface
//! (`surfaces/placement`) translates.

use crate::clock::Clock;
use drover_core::NodeInfo;
use drover_core::placement::{Ring, RingNode};
use drover_core::replicas::{self, Replica};
use drover_core::rules::{self, RuleError};
use drover_core::scheduling::{self, Requirement, Stats, Weights, Workload};
use drover_core::{Event, NodeStatus, ReplicaState};
use drover_store::{Liveness, NamedNode, PlacementNode, StoreError, StoredObject, Stores};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How old the view may grow on a shared store before it is read again.
pub const SHARED_VIEW_MAX_AGE: Duration = Duration::from_secs(1);

/// The replication factor of an object registered without one (the contract's placement
/// default).
pub const DEFAULT_RF: u32 = 3;

/// Objects read per page by the repair scan.
const SCAN_PAGE: u32 = 500;

/// Why a placement call failed; each variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The request breaks a rule: fix the field named.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(RuleError),
    /// No node has this id: register it first (`POST /register`).
    #[error("node {0:?} is not registered")]
    NodeNotFound(String),
    /// No object has this hash: register it first (`POST /object/register`).
    #[error("object {0:?} is not registered")]
    ObjectNotFound(String),
    /// No UP node meets every requirement: relax one, or add nodes.
    #[error("no suitable node")]
    NoFit {
        ruled_out: Vec<(Requirement, usize)>,
        nodes: usize,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl From<RuleError> for PlacementError {
    fn from(e: RuleError) -> Self {
        PlacementError::Invalid(e)
    }
}

impl From<StoreError> for PlacementError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind: "node", id } => PlacementError::NodeNotFound(id),
            StoreError::NotFound { kind: "object", id } => PlacementError::ObjectNotFound(id),
            e => PlacementError::Store(e),
        }
    }
}

pub type Result<T, E = PlacementError> = std::result::Result<T, E>;

/// The nodes, with stats, and the weights, as last read.
struct View {
    /// Every node of the registry, in id order.
    nodes: Vec<PlacementNode>,
    weights: Weights,
    read_at: Option<Instant>,
    /// Counts the reads of the store, so the ring knows which one it follows.
    generation: u64,
}

/// The ring of the UP nodes, and what it was built from.
#[derive(Default)]
struct RingView {
    /// The view's generation the ring was brought in line with.
    generation: Option<u64>,
    ring: Ring,
    /// Each node on the ring: its zone and capacity.
    members: HashMap<String, (String, u64)>,
}

/// A node as the placement contract registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedNode {
    pub id: String,
    pub zone: String,
    pub address: String,
    pub capacity_gb: u64,
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// One object's replica standing, for `GET /repair`.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub object: StoredObject,
    pub healthy: usize,
}

pub struct PlacementService {
    store: Stores,
    clock: Arc<dyn Clock>,
    /// Whether another replica may write the same store.
    shared: bool,
    view: RwLock<View>,
    ring: Arc<RwLock<RingView>>,
    stale: AtomicBool,
    /// One reader of the store at a time; the others wait for its view.
    reading: tokio::sync::Mutex<()>,
    /// One editor of the ring at a time.
    editing: tokio::sync::Mutex<()>,
    /// Stats this server committed, numbered, until a read of the store that began after them
    /// has them: a read that raced a write must not put the older figures back.
    written: Mutex<HashMap<String, (u64, Stats)>>,
    writes: AtomicU64,
}

impl PlacementService {
    pub fn new(store: Stores, clock: Arc<dyn Clock>, shared: bool) -> Arc<Self> {
        Arc::new(PlacementService {
            store,
            clock,
            shared,
            view: RwLock::new(View {
                nodes: Vec::new(),
                weights: Weights::default(),
                read_at: None,
                generation: 0,
            }),
            ring: Arc::default(),
            stale: AtomicBool::new(true),
            reading: tokio::sync::Mutex::new(()),
            editing: tokio::sync::Mutex::new(()),
            written: Mutex::default(),
            writes: AtomicU64::new(0),
        })
    }

    /// Marks the view stale when a committed write changed what it holds (called with every
    /// write's events; quick, and never calls the store).
    pub fn observe(&self, events: &[Event]) {
        let changes_view = |e: &Event| {
            matches!(
                e,
                Event::NodeRegistered { .. }
                    | Event::NodeDown { .. }
                    | Event::NodeRevived { .. }
                    | Event::NodeForgotten { .. }
                    | Event::NodeDraining { .. }
                    | Event::NodeUndrained { .. }
                    | Event::SchedulerConfigured
            )
        };
        if events.iter().any(changes_view) {
            self.stale.store(true, Ordering::Release);
        }
    }

    fn needs_reading(&self) -> bool {
        if self.stale.load(Ordering::Acquire) {
            return true;
        }
        let read_at = read(&self.view).read_at;
        match read_at {
            None => true,
            Some(at) => self.shared && at.elapsed() > SHARED_VIEW_MAX_AGE,
        }
    }

    /// Reads the store again if the view is stale. The ring follows only when a placement
    /// asks ([`Self::ring_in_line`]): a server that only schedules never builds it.
    async fn current(&self) -> Result<()> {
        if !self.needs_reading() {
            return Ok(());
        }
        let _one = self.reading.lock().await;
        if !self.needs_reading() {
            return Ok(());
        }
        // Cleared before reading, so a change committed while this reads marks it again.
        self.stale.store(false, Ordering::Release);
        let read_at = Instant::now();
        let result = self.read_store().await;
        match result {
            Ok((nodes, weights)) => {
                let mut view = write(&self.view);
                let generation = view.generation + 1;
                *view = View {
                    nodes,
                    weights,
                    read_at: Some(read_at),
                    generation,
                };
                Ok(())
            }
            Err(e) => {
                self.stale.store(true, Ordering::Release);
                Err(e.into())
            }
        }
    }

    async fn read_store(&self) -> Result<(Vec<PlacementNode>, Weights), StoreError> {
        let began = self.writes.load(Ordering::Acquire);
        let mut nodes = self.store.placement.placement_nodes().await?;
        let weights = self.store.placement.scheduler_weights().await?;
        // Stats committed before the read began are in it; those after it stay on top.
        let mut written = lock(&self.written);
        written.retain(|_, (n, _)| *n > began);
        for node in &mut nodes {
            if let Some((_, s)) = written.get(&node.id) {
                node.stats = Some(*s);
            }
        }
        Ok((nodes, weights.unwrap_or_default()))
    }

    /// Makes the ring hold exactly the UP nodes of the view: node by node when few changed,
    /// rebuilt when many did (off the async threads: a large ring takes seconds to build).
    async fn ring_in_line(&self) {
        let _one = self.editing.lock().await;
        let (generation, wanted) = {
            let view = read(&self.view);
            if read(&self.ring).generation == Some(view.generation) {
                return;
            }
            let wanted: HashMap<String, (String, u64)> = (view.nodes.iter())
                .filter(|n| n.status == NodeStatus::Up)
                .map(|n| (n.id.clone(), (n.zone.clone(), n.capacity_gb)))
                .collect();
            (view.generation, wanted)
        };
        let ring = self.ring.clone();
        let edit = move || {
            let mut r = write(&ring);
            r.generation = Some(generation);
            let gone: Vec<String> = (r.members.iter())
                .filter(|(id, was)| wanted.get(*id) != Some(*was))
                .map(|(id, _)| id.clone())
                .collect();
            let came: Vec<(&String, &(String, u64))> = (wanted.iter())
                .filter(|(id, now)| r.members.get(*id) != Some(*now))
                .collect();
            if gone.is_empty() && came.is_empty() {
                return;
            }
            if gone.len() + came.len() > wanted.len() / 4 {
                r.ring = Ring::build(wanted.iter().map(|(id, (zone, gb))| RingNode {
                    id,
                    zone,
                    capacity_gb: *gb,
                }));
            } else {
                for id in &gone {
                    r.ring.remove(id);
                }
                for (id, (zone, gb)) in came {
                    r.ring.insert(RingNode {
                        id,
                        zone,
                        capacity_gb: *gb,
                    });
                }
            }
            r.members = wanted;
        };
        if let Err(e) = tokio::task::spawn_blocking(edit).await {
            tracing::error!(error = %e, "editing the placement ring failed");
            write(&self.ring).generation = None;
        }
    }

    /// Registers a node of the placement contract under its own id (its signs of life are its
    /// stats reports), or replaces what is known of it.
    pub async fn register(&self, node: PlacedNode, max: Option<u64>) -> Result<()> {
        rules::check_placement_name("id", &node.id)?;
        rules::check_node_text("zone", &node.zone)?;
        rules::check_node_text("addr", &node.address)?;
        rules::check_capacity_gb(node.capacity_gb)?;
        let named = NamedNode {
            id: node.id,
            info: NodeInfo {
                address: node.address,
                zone: Some(node.zone),
                labels: node.meta,
                ..Default::default()
            },
            capacity_gb: Some(node.capacity_gb),
            liveness: Liveness::Stats,
            silence_timeout: None,
        };
        let now = self.clock.now();
        self.store.nodes.put_node(named, max, now).await?;
        Ok(())
    }

    /// Every node of the registry, read from the store.
    pub async fn nodes(&self) -> Result<Vec<PlacementNode>> {
        Ok(self.store.placement.placement_nodes().await?)
    }

    pub async fn node(&self, id: &str) -> Result<PlacementNode> {
        self.store
            .placement
            .placement_node(id)
            .await?
            .ok_or_else(|| PlacementError::NodeNotFound(id.to_string()))
    }

    /// Records a node's live stats.
    pub async fn report_stats(&self, node_id: &str, stats: Stats) -> Result<()> {
        stats.validate()?;
        let now = self.clock.now();
        self.store
            .placement
            .report_stats(node_id, stats, now)
            .await?;
        let n = self.writes.fetch_add(1, Ordering::AcqRel) + 1;
        lock(&self.written).insert(node_id.to_string(), (n, stats));
        let mut view = write(&self.view);
        if let Ok(i) = view.nodes.binary_search_by(|n| n.id.as_str().cmp(node_id)) {
            view.nodes[i].stats = Some(stats);
        }
        Ok(())
    }

    /// The nodes that hold `key`'s `rf` replicas: at most `rf` distinct UP nodes, in distinct
    /// zones first; fewer when fewer nodes are UP.
    pub async fn place(&self, key: &str, rf: usize) -> Result<Vec<String>> {
        rules::check_rf(rf)?;
        self.current().await?;
        self.ring_in_line().await;
        let ring = read(&self.ring);
        Ok(ring
            .ring
            .place(key, rf)
            .into_iter()
            .map(String::from)
            .collect())
    }

    /// The node a workload goes to, among the UP nodes.
    pub async fn schedule(&self, workload: &Workload) -> Result<String> {
        workload.validate()?;
        self.current().await?;
        let view = read(&self.view);
        let up = (view.nodes.iter())
            .filter(|n| n.status == NodeStatus::Up)
            .map(|n| (n.id.as_str(), n.stats.as_ref()));
        match scheduling::schedule(&view.weights, workload, up) {
            scheduling::Scheduled::Node { id, .. } => Ok(id.to_string()),
            scheduling::Scheduled::NoFit { ruled_out, nodes } => {
                Err(PlacementError::NoFit { ruled_out, nodes })
            }
        }
    }

    /// The weights in force.
    pub async fn weights(&self) -> Result<Weights> {
        Ok((self.store.placement.scheduler_weights().await?).unwrap_or_default())
    }

    pub async fn set_weights(&self, weights: Weights) -> Result<Weights> {
        weights.validate()?;
        let now = self.clock.now();
        self.store
            .placement
            .set_scheduler_weights(weights, now)
            .await?;
        Ok(weights)
    }

    /// Records an object and, as its first replica records, the nodes its placement names now
    /// (PENDING until each is marked healed). An object already recorded stays as it is.
    pub async fn register_object(&self, hash: &str, size: u64, rf: u32) -> Result<bool> {
        rules::check_placement_name("hash", hash)?;
        let targets = self.place(hash, rf as usize).await?;
        let now = self.clock.now();
        Ok(self
            .store
            .placement
            .register_object(hash, size, rf, &targets, now)
            .await?)
    }

    pub async fn object(&self, hash: &str) -> Result<StoredObject> {
        self.store
            .placement
            .get_object(hash)
            .await?
            .ok_or_else(|| PlacementError::ObjectNotFound(hash.to_string()))
    }

    /// Records that `node_id`'s copy of `hash` is lost, or good again.
    pub async fn mark_replica(&self, hash: &str, node_id: &str, state: ReplicaState) -> Result<()> {
        let now = self.clock.now();
        self.store
            .placement
            .set_replica(hash, node_id, state, now)
            .await?;
        Ok(())
    }

    /// Every object with fewer healthy replicas (HEALTHY on an UP node) than its factor.
    pub async fn under_replicated(&self) -> Result<Vec<Standing>> {
        let up = self.up_nodes().await?;
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = (self.store.placement)
                .list_objects(after.as_deref(), SCAN_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash.clone());
            for object in page {
                let records = replica_records(&object);
                let is_up = |id: &str| up.contains_key(id);
                if replicas::under_replicated(object.rf as usize, &records, is_up) {
                    let healthy = replicas::healthy(&records, is_up);
                    found.push(Standing { object, healthy });
                }
            }
        }
        Ok(found)
    }

    /// One step of replica repair: each under-replicated object gets PENDING replacements on
    /// the first UP nodes of its placement that hold no record of it. Answers how many
    /// replacements were assigned.
    pub async fn repair_once(&self) -> Result<usize> {
        let standing = self.under_replicated().await?;
        if standing.is_empty() {
            return Ok(0);
        }
        let up = self.up_nodes().await?;
        let mut assigned = 0;
        for Standing { object, .. } in standing {
            let candidates = self
                .place(&object.hash, drover_core::placement::MAX_RF)
                .await?;
            let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let records = replica_records(&object);
            let targets =
                replicas::repair_targets(object.rf as usize, &records, &candidates, |id| {
                    up.contains_key(id)
                });
            for node_id in targets {
                self.mark_replica(&object.hash, node_id, ReplicaState::Pending)
                    .await?;
                assigned += 1;
            }
        }
        Ok(assigned)
    }

    async fn up_nodes(&self) -> Result<HashMap<String, ()>> {
        Ok((self.nodes().await?)
            .into_iter()
            .filter(|n| n.status == NodeStatus::Up)
            .map(|n| (n.id, ()))
            .collect())
    }
}

fn replica_records(object: &StoredObject) -> Vec<Replica<'_>> {
    (object.replicas.iter())
        .map(|(node_id, state)| Replica {
            node_id,
            state: *state,
        })
        .collect()
}

// The locks guard plain data that a panic cannot leave half written; a poisoned one is used
// as it is.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}
