//! [`World`]: what the simulated hosts and the driver share: the seed's random stream, the
//! disks (they outlive crashes), the nodes now running (for the invariants to observe), the
//! workload's model of what was acknowledged, the faults injected, and the event trace.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_proto::{BlockHash, Clock, DatasetRecord, NodeId};

use crate::disk::SimDisk;
use crate::net::SimTransport;

pub type SimNode = tern_node::NodeService<SimTransport, SimClock>;

/// Bugs planted on purpose, to show the simulator catches them (see `tests/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// Holders acknowledge a block before it is synced to disk.
    AckBeforeSync,
    /// Blocks are served without checking them against their hash.
    SkipReadHashCheck,
    /// Repair counts nodes marked down as holders (blocks of a lost node stay at two copies).
    CountDownNodeAsHolder,
    /// Raft votes are saved without a sync, so a crash can make a node forget a vote it
    /// granted.
    VoteBeforeSync,
    /// Nodes keep the outputs of a job after it is released (what dropped futures kept leaks).
    KeepReleasedOutputs,
}

impl PlantedBug {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ack-before-sync" => Some(Self::AckBeforeSync),
            "skip-read-hash-check" => Some(Self::SkipReadHashCheck),
            "count-down-node-as-holder" => Some(Self::CountDownNodeAsHolder),
            "vote-before-sync" => Some(Self::VoteBeforeSync),
            "keep-released-outputs" => Some(Self::KeepReleasedOutputs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AckBeforeSync => "ack-before-sync",
            Self::SkipReadHashCheck => "skip-read-hash-check",
            Self::CountDownNodeAsHolder => "count-down-node-as-holder",
            Self::VoteBeforeSync => "vote-before-sync",
            Self::KeepReleasedOutputs => "keep-released-outputs",
        }
    }

    pub const ALL: [Self; 5] = [
        Self::AckBeforeSync,
        Self::SkipReadHashCheck,
        Self::CountDownNodeAsHolder,
        Self::VoteBeforeSync,
        Self::KeepReleasedOutputs,
    ];
}

/// A node's two disks: the metadata store and the block store.
pub struct NodeDisks {
    pub meta: Arc<SimDisk>,
    pub blocks: Arc<SimDisk>,
}

/// Time as a simulated node reads it: the host's virtual time, running `rate` times as fast
/// as true simulated time (clock drift).
pub struct SimClock {
    start: tokio::time::Instant,
    start_std: Instant,
    rate: f64,
}

impl SimClock {
    pub fn new(rate: f64) -> Self {
        let start = tokio::time::Instant::now();
        Self {
            start,
            start_std: start.into_std(),
            rate,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.start_std + elapsed.mul_f64(self.rate)
    }
    fn wall(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }
}

/// What the workload knows about one dataset name.
#[derive(Debug, Clone, Default)]
pub struct DatasetModel {
    /// Records whose commit was sent (acknowledged or not): a reader may see any of them.
    pub maybe: Vec<DatasetRecord>,
    /// The record of the last acknowledged put, if no acknowledged removal came after it.
    pub acked: Option<DatasetRecord>,
    /// A removal was sent and its outcome is unknown (the dataset may be gone).
    pub uncertain_remove: bool,
    /// Records that an operation read as current and then sent a write to replace or remove.
    /// The workload's two loops race: a put's acknowledgment can come back after the other
    /// loop read the new record and replaced or removed it, and then it says nothing about
    /// what the catalog holds.
    pub superseded: Vec<DatasetRecord>,
}

/// The run's event trace: a running hash of every event (compared between two runs of one
/// seed) and the last events (printed when an invariant breaks).
pub struct Trace {
    hasher: blake3::Hasher,
    recent: VecDeque<String>,
    events: u64,
    messages: u64,
}

/// The last events a failing seed prints, unless asked for more.
pub const RECENT_EVENTS: usize = 60;

pub struct World {
    pub seed: u64,
    /// Every node host, including the one that joins late (the last).
    pub nodes: u64,
    /// The nodes that form the cluster at the start.
    pub initial_nodes: u64,
    /// When the late node starts, in simulated time.
    pub join_at: Duration,
    pub bug: Option<PlantedBug>,
    rng: Mutex<StdRng>,
    /// Probability that a message is sent twice (set by the fault driver).
    dup_rate: Mutex<f64>,
    pub disks: BTreeMap<NodeId, NodeDisks>,
    pub drift: BTreeMap<NodeId, f64>,
    incarnations: Mutex<BTreeMap<NodeId, u64>>,
    running: Mutex<BTreeMap<NodeId, Arc<SimNode>>>,
    pub datasets: Mutex<BTreeMap<String, DatasetModel>>,
    /// What each table partition holds, per group (see `workload::GroupStats`).
    block_stats: Mutex<BTreeMap<BlockHash, crate::workload::GroupStats>>,
    /// Every block a put was told is stored, with the nodes that acknowledged it.
    block_acks: Mutex<BTreeMap<BlockHash, Vec<NodeId>>>,
    pub faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Workload operations by kind: (completed, failed).
    pub ops: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    /// The node the workload asked to drain, if any.
    pub drained: Mutex<Option<NodeId>>,
    /// Raft snapshot chunks delivered (followers catching up from a snapshot).
    pub snapshot_chunks: AtomicU64,
    /// The greatest Raft vote each node was seen to hold (stored, or answered with): it must
    /// never go back, not even across a crash.
    pub votes: Mutex<BTreeMap<NodeId, openraft::Vote<u64>>>,
    trace: Mutex<Trace>,
    /// How many of the last events the trace keeps to print.
    recent_events: usize,
    now_ms: AtomicU64,
    /// Set by the workload while faults may be injected.
    pub chaos: AtomicBool,
    /// Set by the workload when its fault phase ends; the driver then heals everything.
    pub calm: AtomicBool,
    /// The first invariant violation, if any.
    violation: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// A world of `initial_nodes` nodes that form the cluster, and one more that joins later;
    /// its trace keeps the last `recent_events` events to print.
    pub fn new(
        seed: u64,
        initial_nodes: u64,
        bug: Option<PlantedBug>,
        recent_events: usize,
    ) -> Self {
        let nodes = initial_nodes + 1;
        let mut rng = StdRng::seed_from_u64(seed);
        let join_at = Duration::from_millis(rng.gen_range(2_000..15_000));
        let disks = (1..=nodes)
            .map(|id| {
                (
                    id,
                    NodeDisks {
                        meta: Arc::default(),
                        blocks: Arc::default(),
                    },
                )
            })
            .collect();
        let drift = (1..=nodes)
            .map(|id| (id, 1.0 + rng.gen_range(-0.05..0.05)))
            .collect();
        Self {
            seed,
            nodes,
            initial_nodes,
            join_at,
            bug,
            rng: Mutex::new(rng),
            dup_rate: Mutex::new(0.0),
            disks,
            drift,
            incarnations: Mutex::default(),
            running: Mutex::default(),
            datasets: Mutex::default(),
            block_acks: Mutex::default(),
            block_stats: Mutex::default(),
            faults: Mutex::default(),
            ops: Mutex::default(),
            snapshot_chunks: AtomicU64::new(0),
            votes: Mutex::default(),
            drained: Mutex::default(),
            trace: Mutex::new(Trace {
                hasher: blake3::Hasher::new(),
                recent: VecDeque::new(),
                events: 0,
                messages: 0,
            }),
            recent_events: recent_events.max(1),
            now_ms: AtomicU64::new(0),
            chaos: AtomicBool::new(false),
            calm: AtomicBool::new(false),
            violation: Mutex::default(),
        }
    }

    /// Run `f` on the seed's random stream.
    pub fn with_rng<R>(&self, f: impl FnOnce(&mut StdRng) -> R) -> R {
        f(&mut lock(&self.rng))
    }

    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.with_rng(|r| r.gen_bool(p.min(1.0)))
    }

    pub fn set_dup_rate(&self, p: f64) {
        *lock(&self.dup_rate) = p;
    }

    pub fn duplicate_message(&self) -> bool {
        let p = *lock(&self.dup_rate);
        p > 0.0 && self.chance(p)
    }

    pub fn next_incarnation(&self, id: NodeId) -> u64 {
        let mut all = lock(&self.incarnations);
        let n = all.entry(id).or_default();
        *n += 1;
        *n
    }

    pub fn set_running(&self, id: NodeId, node: Option<Arc<SimNode>>) {
        let mut running = lock(&self.running);
        match node {
            Some(node) => running.insert(id, node),
            None => running.remove(&id),
        };
    }

    pub fn running(&self) -> Vec<(NodeId, Arc<SimNode>)> {
        lock(&self.running)
            .iter()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    pub fn set_now(&self, elapsed: Duration) {
        self.now_ms
            .store(elapsed.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Record an event in the trace.
    pub fn event(&self, what: impl Into<String>) {
        let line = format!("{:>8} ms  {}", self.now_ms(), what.into());
        let mut trace = lock(&self.trace);
        trace.hasher.update(line.as_bytes());
        trace.hasher.update(b"\n");
        trace.events += 1;
        if trace.recent.len() >= self.recent_events {
            trace.recent.pop_front();
        }
        trace.recent.push_back(line);
    }

    pub fn count_raft_snapshot_chunk(&self) {
        self.snapshot_chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// Record a message delivery in the trace's hash only (too many to list among the events).
    pub fn delivered(&self, what: std::fmt::Arguments<'_>) {
        let line = format!("{} {what}", self.now_ms());
        let mut trace = lock(&self.trace);
        trace.hasher.update(line.as_bytes());
        trace.messages += 1;
    }

    pub fn count_fault(&self, kind: &'static str, what: impl Into<String>) {
        *lock(&self.faults).entry(kind).or_default() += 1;
        self.event(format!("fault {kind}: {}", what.into()));
    }

    /// The trace so far: its hash, its events, the messages delivered, and its last events.
    pub fn trace_summary(&self) -> (String, u64, u64, Vec<String>) {
        let trace = lock(&self.trace);
        (
            trace.hasher.finalize().to_hex().to_string(),
            trace.events,
            trace.messages,
            trace.recent.iter().cloned().collect(),
        )
    }

    /// Report a broken invariant (the first one ends the run).
    pub fn violated(&self, invariant: &str, what: impl Into<String>) {
        let what = format!("{invariant}: {}", what.into());
        self.event(format!("VIOLATION {what}"));
        let mut v = lock(&self.violation);
        if v.is_none() {
            *v = Some(what);
        }
    }

    pub fn violation(&self) -> Option<String> {
        lock(&self.violation).clone()
    }

    /// `holders` acknowledged `block` as durably stored.
    pub fn block_acknowledged(&self, block: BlockHash, holders: &[NodeId]) {
        let mut acks = lock(&self.block_acks);
        let known = acks.entry(block).or_default();
        for h in holders {
            if !known.contains(h) {
                known.push(*h);
            }
        }
    }

    pub fn block_stats(&self, block: BlockHash, stats: crate::workload::GroupStats) {
        lock(&self.block_stats).insert(block, stats);
    }

    /// The answers a query of table `name` may give: one per version whose commit was sent.
    /// Rows are (k, count, sum), `k` = -1 for the whole-table query.
    /// The rows and the sum of `v` in the partitions of `record`, from what was written to
    /// each of its blocks (`None` when a block is not one the workload wrote).
    pub fn expected_total(&self, record: &DatasetRecord) -> Option<(u64, i64)> {
        let stats = lock(&self.block_stats);
        let mut total = (0u64, 0i64);
        for p in &record.partitions {
            for (n, sum) in stats.get(&p.block)? {
                total.0 += n;
                total.1 += sum;
            }
        }
        Some(total)
    }

    pub fn expected_answers(&self, name: &str, grouped: bool) -> Vec<Vec<(i64, u64, i64)>> {
        let stats = lock(&self.block_stats);
        let datasets = lock(&self.datasets);
        let Some(model) = datasets.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for record in &model.maybe {
            let mut groups = [(0u64, 0i64); crate::workload::GROUPS];
            for p in &record.partitions {
                if let Some(s) = stats.get(&p.block) {
                    for (g, (n, sum)) in groups.iter_mut().zip(s) {
                        g.0 += n;
                        g.1 += sum;
                    }
                }
            }
            let answer = if grouped {
                groups
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| *n > 0)
                    .map(|(k, (n, s))| (k as i64, *n, *s))
                    .collect()
            } else {
                let n = groups.iter().map(|g| g.0).sum();
                vec![(-1, n, groups.iter().map(|g| g.1).sum())]
            };
            out.push(answer);
        }
        out
    }

    /// Every acknowledged block with the nodes that acknowledged it.
    pub fn acked_blocks(&self) -> BTreeMap<BlockHash, Vec<NodeId>> {
        lock(&self.block_acks).clone()
    }
}
