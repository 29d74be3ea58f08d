//! One run of one seed: build the cluster in turmoil, step it, inject faults between steps
//! (each kind with a rate the seed draws from), observe Raft, and report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tern_proto::NodeId;

use crate::cluster::{host_name, node_software};
use crate::invariants::{self, RaftObserver};
use crate::workload::{self, Phases};
use crate::world::{PlantedBug, World};

/// Simulated time per step: every host runs this long between fault decisions.
const TICK: Duration = Duration::from_millis(5);
const NORMAL_LATENCY: Duration = Duration::from_millis(20);
/// How often the driver reads every node's Raft view.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub nodes: u64,
    pub phases: Phases,
    pub bug: Option<PlantedBug>,
    /// How many of its last events a run keeps to print.
    pub recent_events: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            nodes: 5,
            phases: Phases {
                chaos: Duration::from_secs(20),
                heal: Duration::from_secs(120),
            },
            bug: None,
            recent_events: crate::world::RECENT_EVENTS,
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub violation: Option<String>,
    /// blake3 of the whole event trace: equal for two runs of one seed.
    pub trace_hash: String,
    pub events: u64,
    /// Requests delivered between hosts (each is in the trace's hash).
    pub messages: u64,
    /// The last events, for a failing seed.
    pub recent: Vec<String>,
    pub faults: BTreeMap<&'static str, u64>,
    /// Workload operations by kind: (completed, failed).
    pub ops: BTreeMap<&'static str, (u64, u64)>,
    /// Raft snapshot chunks sent to followers that fell behind the log.
    pub snapshot_chunks: u64,
    pub simulated: Duration,
}

/// Per-second rates of each fault while faults are on (drawn per seed around these).
struct Rates {
    crash: f64,
    partition: f64,
    loss: f64,
    delay: f64,
    duplicate: f64,
    slow: f64,
    bitflip: f64,
    full: f64,
    lose_node: f64,
}

/// A fault in progress and when it ends.
enum Ongoing {
    Down { node: NodeId, until: Duration },
    Partition { until: Duration },
    Loss { until: Duration },
    Delay { until: Duration },
    Duplicate { until: Duration },
    Slow { node: NodeId, until: Duration },
    Full { node: NodeId, until: Duration },
}

struct Driver {
    world: Arc<World>,
    rates: Rates,
    ongoing: Vec<Ongoing>,
    /// A node lost for good (its disks destroyed); at most one per run.
    lost: Option<NodeId>,
    /// Blocks with a damaged copy: the last intact copies are never damaged.
    flipped: BTreeMap<tern_proto::BlockHash, NodeId>,
    observer: RaftObserver,
    next_observe: Duration,
}

fn per_tick(rate_per_s: f64) -> f64 {
    rate_per_s * TICK.as_secs_f64()
}

impl Driver {
    fn new(world: Arc<World>) -> Self {
        // Each seed gets its own mix: some runs are crash-heavy, others network-heavy.
        let rates = world.with_rng(|r| Rates {
            crash: r.gen_range(0.02..0.15),
            partition: r.gen_range(0.0..0.1),
            loss: r.gen_range(0.0..0.08),
            delay: r.gen_range(0.0..0.08),
            duplicate: r.gen_range(0.0..0.1),
            slow: r.gen_range(0.0..0.05),
            bitflip: r.gen_range(0.0..0.3),
            full: r.gen_range(0.0..0.05),
            lose_node: if r.gen_bool(0.3) { 0.1 } else { 0.0 },
        });
        Self {
            world,
            rates,
            ongoing: Vec::new(),
            lost: None,
            flipped: BTreeMap::new(),
            observer: RaftObserver::default(),
            next_observe: Duration::ZERO,
        }
    }

    fn down(&self) -> Vec<NodeId> {
        let mut down: Vec<NodeId> = self
            .ongoing
            .iter()
            .filter_map(|o| match o {
                Ongoing::Down { node, .. } => Some(*node),
                _ => None,
            })
            .collect();
        down.extend(self.lost);
        down
    }

    /// Whether to start a fault of a kind none of which is in progress (`active` tells one).
    fn may_start(&self, active: impl Fn(&Ongoing) -> bool, rate_per_s: f64) -> bool {
        !self.ongoing.iter().any(active) && self.world.chance(per_tick(rate_per_s))
    }

    fn random_node(&self) -> NodeId {
        let n = self.world.nodes;
        self.world.with_rng(|r| r.gen_range(1..=n))
    }

    fn duration(&self, from_ms: u64, to_ms: u64) -> Duration {
        Duration::from_millis(self.world.with_rng(|r| r.gen_range(from_ms..to_ms)))
    }

    /// Crash `node`: its software stops and each disk keeps a prefix of its unsynced writes.
    /// Returns how many writes were lost.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, node: NodeId) -> usize {
        // Forget the node before it crashes: the last handles on its socket must be dropped
        // inside turmoil (by the crash), or the port stays bound after the restart.
        self.world.set_running(node, None);
        sim.crash(host_name(node));
        self.observer.forget(node);
        let disks = &self.world.disks[&node];
        let family = tern_store::disk::DEFAULT_FAMILY;
        let before = disks.blocks.keys(family);
        self.check_stored_vote(node, "on its disk when it crashed");
        let keep_meta = self
            .world
            .with_rng(|r| r.gen_range(0..=disks.meta.unsynced()));
        let keep_blocks = self
            .world
            .with_rng(|r| r.gen_range(0..=disks.blocks.unsynced()));
        let lost_meta = disks.meta.crash(keep_meta);
        let lost = lost_meta + disks.blocks.crash(keep_blocks);
        self.check_stored_vote(
            node,
            &format!("what its disk kept in the crash, {lost_meta} unsynced metadata writes lost"),
        );
        let after: std::collections::BTreeSet<Vec<u8>> =
            disks.blocks.keys(family).into_iter().collect();
        // Keys are a block's name, then a group's index: a block is gone if any group is.
        let gone: Vec<tern_proto::BlockHash> = before
            .into_iter()
            .filter(|k| !after.contains(k))
            .filter_map(|k| <[u8; 32]>::try_from(k.get(..32)?).ok())
            .map(tern_proto::BlockHash)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        invariants::check_crash_kept_acknowledged(&self.world, node, &gone);
        lost
    }

    /// Maybe start faults, end those whose time is up.
    fn step(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        let calm = self.world.calm.load(Ordering::Relaxed);
        let chaos = self.world.chaos.load(Ordering::Relaxed);
        self.end_faults(sim, now, calm);
        if !chaos || calm {
            return;
        }
        let w = self.world.clone();
        // At most two nodes down at once (crashed or lost): a block's third copy stays.
        if self.down().len() < 2 && w.chance(per_tick(self.rates.crash)) {
            let node = self.random_node();
            if !self.down().contains(&node) {
                let lost = self.crash(sim, node);
                // Some outages are long: the node comes back far behind (or at the end of the
                // faults), to catch up by snapshot.
                let long = w.chance(0.15);
                let until = now
                    + if long {
                        self.duration(20_000, 60_000)
                    } else {
                        self.duration(200, 15_000)
                    };
                w.count_fault(
                    if long { "crash-long-outage" } else { "crash" },
                    format!(
                        "node {node} until {} ms, {lost} unsynced writes lost",
                        until.as_millis()
                    ),
                );
                self.ongoing.push(Ongoing::Down { node, until });
            }
        }
        if self.lost.is_none() && self.down().is_empty() && w.chance(per_tick(self.rates.lose_node))
        {
            let node = self.random_node();
            self.crash(sim, node);
            self.lost = Some(node);
            w.count_fault("node-lost", format!("node {node} and its disks, for good"));
        }
        if self.may_start(
            |o| matches!(o, Ongoing::Partition { .. }),
            self.rates.partition,
        ) {
            let n = w.nodes;
            let side: Vec<NodeId> = (1..=n).filter(|_| w.chance(0.5)).collect();
            if !side.is_empty() && side.len() < n as usize {
                let other: Vec<NodeId> = (1..=n).filter(|id| !side.contains(id)).collect();
                let one_way = w.chance(0.3);
                for a in &side {
                    for b in &other {
                        if one_way {
                            sim.partition_oneway(host_name(*a), host_name(*b));
                        } else {
                            sim.partition(host_name(*a), host_name(*b));
                        }
                    }
                }
                let until = now + self.duration(500, 10_000);
                let kind = if one_way {
                    "partition-one-way"
                } else {
                    "partition"
                };
                w.count_fault(kind, format!("{side:?} from {other:?}"));
                self.ongoing.push(Ongoing::Partition { until });
            }
        }
        if self.may_start(|o| matches!(o, Ongoing::Loss { .. }), self.rates.loss) {
            sim.set_fail_rate(0.02);
            let until = now + self.duration(500, 5_000);
            w.count_fault("message-loss", "links fail at random");
            self.ongoing.push(Ongoing::Loss { until });
        }
        if self.may_start(|o| matches!(o, Ongoing::Delay { .. }), self.rates.delay) {
            sim.set_max_message_latency(Duration::from_millis(400));
            let until = now + self.duration(500, 5_000);
            w.count_fault("delay-reorder", "messages take up to 400 ms, out of order");
            self.ongoing.push(Ongoing::Delay { until });
        }
        if self.may_start(
            |o| matches!(o, Ongoing::Duplicate { .. }),
            self.rates.duplicate,
        ) {
            w.set_dup_rate(0.2);
            let until = now + self.duration(500, 5_000);
            w.count_fault("duplicate", "a fifth of messages sent twice");
            self.ongoing.push(Ongoing::Duplicate { until });
        }
        if self.may_start(|o| matches!(o, Ongoing::Slow { .. }), self.rates.slow) {
            let node = self.random_node();
            let others: Vec<String> = (1..=w.nodes)
                .filter(|id| *id != node)
                .map(host_name)
                .chain(["client".to_string()])
                .collect();
            for other in &others {
                sim.set_link_max_message_latency(
                    host_name(node),
                    other.as_str(),
                    Duration::from_millis(800),
                );
            }
            let until = now + self.duration(1_000, 8_000);
            w.count_fault("slow-node", format!("node {node} answers slowly"));
            self.ongoing.push(Ongoing::Slow { node, until });
        }
        if w.chance(per_tick(self.rates.bitflip)) {
            self.flip_a_bit();
        }
        if self.may_start(|o| matches!(o, Ongoing::Full { .. }), self.rates.full) {
            let node = self.random_node();
            w.disks[&node].blocks.set_full(true);
            let until = now + self.duration(500, 5_000);
            w.count_fault("disk-full", format!("node {node}'s block disk"));
            self.ongoing.push(Ongoing::Full { node, until });
        }
    }

    /// Damage one stored block copy, unless it might be the last intact one.
    fn flip_a_bit(&mut self) {
        let w = self.world.clone();
        let node = self.random_node();
        if Some(node) == self.lost {
            return;
        }
        let keys = w.disks[&node].blocks.keys(tern_store::disk::DEFAULT_FAMILY);
        if keys.is_empty() {
            return;
        }
        let key = keys[w.with_rng(|r| r.gen_range(0..keys.len()))].clone();
        // A block is kept in groups, each under its name and index.
        let Some(Ok(raw)) = key.get(..32).map(<[u8; 32]>::try_from) else {
            return;
        };
        let hash = tern_proto::BlockHash(raw);
        if self.flipped.contains_key(&hash) {
            return;
        }
        let bit = w.with_rng(|r| r.r#gen::<u64>());
        if w.disks[&node]
            .blocks
            .flip_bit(tern_store::disk::DEFAULT_FAMILY, &key, bit)
        {
            self.flipped.insert(hash, node);
            w.count_fault("bit-flip", format!("block {hash} on node {node}"));
        }
    }

    fn end_faults(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, calm: bool) {
        let w = self.world.clone();
        let mut still = Vec::new();
        for fault in std::mem::take(&mut self.ongoing) {
            let until = match &fault {
                Ongoing::Down { until, .. }
                | Ongoing::Partition { until }
                | Ongoing::Loss { until }
                | Ongoing::Delay { until }
                | Ongoing::Duplicate { until }
                | Ongoing::Slow { until, .. }
                | Ongoing::Full { until, .. } => *until,
            };
            if !calm && now < until {
                still.push(fault);
                continue;
            }
            match fault {
                Ongoing::Down { node, .. } => {
                    sim.bounce(host_name(node));
                    w.event(format!("node {node} restarts"));
                }
                Ongoing::Partition { .. } => {
                    for a in 1..=w.nodes {
                        for b in 1..=w.nodes {
                            if a != b {
                                sim.repair(host_name(a), host_name(b));
                            }
                        }
                    }
                    w.event("partition healed");
                }
                Ongoing::Loss { .. } => {
                    sim.set_fail_rate(0.0);
                    w.event("message loss ends");
                }
                Ongoing::Delay { .. } => {
                    sim.set_max_message_latency(NORMAL_LATENCY);
                    w.event("delays end");
                }
                Ongoing::Duplicate { .. } => {
                    w.set_dup_rate(0.0);
                    w.event("duplication ends");
                }
                Ongoing::Slow { node, .. } => {
                    for other in (1..=w.nodes)
                        .filter(|id| *id != node)
                        .map(host_name)
                        .chain(["client".to_string()])
                    {
                        sim.set_link_max_message_latency(
                            host_name(node),
                            other.as_str(),
                            NORMAL_LATENCY,
                        );
                    }
                    w.event(format!("node {node} is fast again"));
                }
                Ongoing::Full { node, .. } => {
                    w.disks[&node].blocks.set_full(false);
                    w.event(format!("node {node}'s disk has room again"));
                }
            }
        }
        self.ongoing = still;
    }

    /// The Raft vote on `node`'s metadata disk must not be less than any it held before.
    fn check_stored_vote(&self, node: NodeId, how: &str) {
        match tern_meta::stored_vote(&*self.world.disks[&node].meta) {
            Ok(Some(vote)) => invariants::check_vote(&self.world, node, &vote, how),
            Ok(None) => {}
            Err(e) => self
                .world
                .violated(invariants::RAFT, format!("node {node}'s vote: {e}")),
        }
    }

    /// Read every running node's Raft view, and every node's stored vote.
    fn observe(&mut self, now: Duration) {
        if now < self.next_observe {
            return;
        }
        self.next_observe = now + OBSERVE_EVERY;
        for id in 1..=self.world.nodes {
            if Some(id) != self.lost {
                self.check_stored_vote(id, "on its disk");
            }
        }
        for (id, node) in self.world.running() {
            let metrics = node.meta().raft().metrics().borrow().clone();
            let (applied, state) = node.meta().read_applied(|index, state| {
                let bytes = postcard::to_allocvec(state).unwrap_or_default();
                (index, blake3::hash(&bytes))
            });
            self.observer
                .observe(&self.world, id, &metrics, applied, state);
        }
    }
}

/// Run one seed to its end (or its first violation).
pub fn run_seed(seed: u64, options: &SimOptions) -> Outcome {
    tern_meta::seed_election_randomness(Some(seed.rotate_left(17) ^ 0x7465_726e));
    let world = Arc::new(World::new(
        seed,
        options.nodes,
        options.bug,
        options.recent_events,
    ));
    for (id, rate) in &world.drift {
        world.event(format!("node {id} clock runs at {rate:.4}x"));
    }
    world.event(format!(
        "node {} joins at {} ms",
        world.nodes,
        world.join_at.as_millis()
    ));
    *crate::world::lock(&world.faults)
        .entry("clock-drift")
        .or_default() += world.nodes;
    let phases = options.phases;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(90) + phases.chaos + phases.heal)
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(NORMAL_LATENCY)
        .udp_capacity(1 << 16)
        .build();
    for id in 1..=world.nodes {
        sim.host(host_name(id), node_software(world.clone(), id));
    }
    {
        let world = world.clone();
        sim.client("client", async move { workload::run(world, phases).await });
    }
    let mut driver = Driver::new(world.clone());
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                world.violated(invariants::LIVENESS, format!("the simulation stopped: {e}"));
                break;
            }
        }
        let now = sim.elapsed();
        world.set_now(now);
        driver.step(&mut sim, now);
        driver.observe(now);
        if world.violation().is_some() {
            break;
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    tern_meta::seed_election_randomness(None);
    let (trace_hash, events, messages, recent) = world.trace_summary();
    Outcome {
        seed,
        violation: world.violation(),
        trace_hash,
        events,
        messages,
        recent,
        faults: crate::world::lock(&world.faults).clone(),
        ops: crate::world::lock(&world.ops).clone(),
        snapshot_chunks: world.snapshot_chunks.load(Ordering::Relaxed),
        simulated,
    }
}
