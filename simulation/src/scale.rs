//! The scale harness (`tern-sim --scale`): the metadata tier's own work at cluster sizes no
//! test machine has, run on the real code (the state machine's apply, the holdings index,
//! placement) without the network. It measures:
//!
//! - placement: blocks placed per second, in calls of 1,000 blocks as writers send them, on
//!   1,000 and 10,000 nodes in 10 zones;
//! - the catalog at 1,000,000 partitions (1,000 datasets of 1,000): time to apply the
//!   commits, catalog bytes per partition, snapshot bytes, and what reading every record
//!   costs (what `tern status`, repair, GC and scrub still do each time) against reading the
//!   holdings index (what placement and the per-node status columns do now).
//!
//! - restoring three replicas after losing a member and a rack of 40, planned by repair's
//!   own code round by round, with copies simulated at 100 MB/s per member.
//!
//! Not yet here (issue 22, item 7): members heartbeating a leader over the simulated
//! network (every node is still a Raft member).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tern_meta::placement::{Placer, REPLICAS};
use tern_meta::{Command, MetaState};
use tern_proto::{
    BlockHash, CatalogOp, DATASETS_TABLE, DatasetRecord, NodeId, NodeRecord, NodeState,
    PartitionRecord,
};

const ZONES: u64 = 10;
const BLOCK_BYTES: u64 = 64 << 20;

fn nodes(count: u64) -> Vec<NodeRecord> {
    (1..=count)
        .map(|id| NodeRecord {
            id,
            addr: format!("10.{}.{}.{}:7401", id >> 16, (id >> 8) & 255, id & 255),
            zone: format!("zone-{}", id % ZONES),
            capacity_bytes: 100 << 40,
            state: NodeState::Up,
        })
        .collect()
}

/// Blocks per second placed on `count` nodes, `blocks` in all, in calls of `per_call`.
fn placement_rate(count: u64, blocks: usize, per_call: usize) -> f64 {
    let table = nodes(count);
    let mut held: BTreeMap<NodeId, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut placed = 0;
    let mut call = 0u64;
    while placed < blocks {
        // As a Place request does: its own copy of the node table and of what nodes hold.
        let node_list = table.clone();
        let mut used = held.clone();
        let mut placer = Placer::new(&node_list, &mut used, call);
        for _ in 0..per_call.min(blocks - placed) {
            placer
                .pick(BLOCK_BYTES, REPLICAS, &BTreeSet::new(), &BTreeSet::new())
                .expect("room");
            placed += 1;
        }
        held = used;
        call += 1;
    }
    placed as f64 / started.elapsed().as_secs_f64()
}

fn dataset(name: &str, partitions: usize, node_count: u64, seed: u64) -> DatasetRecord {
    let mut next = seed;
    let mut holder = || {
        // A cheap deterministic spread; placement itself is measured above.
        next = next
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (next >> 33) % node_count
    };
    DatasetRecord {
        name: name.into(),
        version: 1,
        format: "arrow-ipc".into(),
        schema: "a table's schema, as JSON, a few hundred bytes".repeat(4),
        partitions: (0..partitions)
            .map(|i| PartitionRecord {
                block: BlockHash::of(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat()),
                bytes: BLOCK_BYTES,
                rows: 1_000_000,
                holders: vec![holder(), holder(), holder()],
            })
            .collect(),
        created_ms: 0,
        bounds: Vec::new(),
    }
}

fn catalog(datasets: usize, partitions: usize, node_count: u64) {
    let mut state = MetaState::default();
    let mut touched = Vec::new();
    let mut encoded_bytes = 0usize;
    let mut apply_secs = 0.0;
    for d in 0..datasets {
        let name = format!("dataset-{d:05}");
        let record = dataset(&name, partitions, node_count, d as u64);
        let value = postcard::to_allocvec(&record).expect("encode");
        encoded_bytes += value.len();
        let command = Command::Catalog(vec![CatalogOp::Put {
            table: DATASETS_TABLE.into(),
            key: name,
            value,
        }]);
        let started = Instant::now();
        state.apply(&command, &mut touched);
        apply_secs += started.elapsed().as_secs_f64();
        touched.clear();
    }
    let total = (datasets * partitions) as f64;
    let snapshot = postcard::to_allocvec(&state).expect("snapshot").len();

    let started = Instant::now();
    let mut decoded = 0usize;
    for raw in state
        .catalog
        .get(DATASETS_TABLE)
        .into_iter()
        .flat_map(|t| t.values())
    {
        decoded += DatasetRecord::decode(raw).expect("decode").partitions.len();
    }
    let decode_all = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let per_node = state.holdings.bytes_per_node();
    let index_read = started.elapsed().as_secs_f64();
    assert_eq!(decoded as f64, total);
    println!(
        "| {datasets} datasets × {partitions} partitions on {node_count} nodes | {:.2} µs | {:.0} B | {:.0} MB | {:.0} ms | {:.3} ms ({} nodes) |",
        apply_secs / total * 1e6,
        encoded_bytes as f64 / total,
        snapshot as f64 / 1e6,
        decode_all * 1e3,
        index_read * 1e3,
        per_node.len()
    );
}

/// Run every measurement and print them as Markdown tables.
pub fn run() {
    println!("## placement (calls of 1,000 blocks, 10 zones, 3 replicas in distinct zones)\n");
    println!("| nodes | blocks | blocks placed per second |\n|---|---|---|");
    for (count, blocks) in [(1_000, 1_000_000), (10_000, 1_000_000)] {
        let rate = placement_rate(count, blocks, 1_000);
        println!("| {count} | {blocks} | {rate:.0} |");
    }
    println!(
        "\n## the catalog at 1,000,000 partitions\n\n| catalog | apply per partition | record bytes per partition | snapshot | decode every record | read the holdings index |\n|---|---|---|---|---|---|"
    );
    catalog(1_000, 1_000, 1_000);
    // The largest dataset one catalog value holds today (1 MiB): about 22,000 partitions.
    catalog(1, 20_000, 1_000);

    println!(
        "\n## restoring three replicas: racks of 40, 1,000,000 blocks of 64 MiB, copies at 100 MB/s per member\n\n| members | lost | blocks to copy | rounds | restore (simulated) | bandwidth bound | ratio | planning CPU |\n|---|---|---|---|---|---|---|---|"
    );
    let rack: Vec<NodeId> = (1..=40).collect();
    for members in [1_000, 10_000] {
        for (what, lost) in [("one member", &rack[..1]), ("a rack of 40", &rack[..])] {
            let r = restore::run(members, 40, 1_000, 1_000, lost);
            println!(
                "| {members} | {what} | {} | {} | {:.1} s | {:.1} s | {:.2} | {:.1} s |",
                r.blocks,
                r.rounds,
                r.simulated.as_secs_f64(),
                r.bound.as_secs_f64(),
                r.simulated.as_secs_f64() / r.bound.as_secs_f64(),
                r.planning.as_secs_f64()
            );
        }
    }
}

/// Restoring three replicas after losing members, with repair's own planning
/// ([`tern_node::plan_repair`], timed on this machine) and copies simulated: each member sends
/// and receives at `MEMBER_BANDWIDTH`, shared by its streams, and a round lasts as long as its
/// planning and its slowest copy. Timed from when the members are marked out: the leader
/// wakes repair then.
mod restore {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use tern_meta::placement::{Placer, REPLICAS};
    use tern_proto::{BlockHash, DatasetRecord, NodeId, NodeRecord, NodeState, PartitionRecord};

    /// Copy bandwidth of a member, in and out (the figure).
    const MEMBER_BANDWIDTH: f64 = 100e6;
    const BLOCK_BYTES: u64 = 64 << 20;

    pub struct Restored {
        pub blocks: usize,
        pub rounds: usize,
        pub simulated: Duration,
        /// Bytes to copy over the survivors' aggregate bandwidth.
        pub bound: Duration,
        pub planning: Duration,
    }

    /// `members` in racks (zones) of `rack` members; `datasets` × `partitions` blocks placed
    /// by the real placer; then `lost` members are marked out.
    pub fn run(
        members: u64,
        rack: u64,
        datasets: usize,
        partitions: usize,
        lost: &[NodeId],
    ) -> Restored {
        let mut nodes: BTreeMap<NodeId, NodeRecord> = (1..=members)
            .map(|id| {
                let record = NodeRecord {
                    id,
                    addr: format!("m{id}"),
                    zone: format!("rack-{}", (id - 1) / rack),
                    capacity_bytes: 100 << 40,
                    state: NodeState::Up,
                };
                (id, record)
            })
            .collect();
        let table: Vec<NodeRecord> = nodes.values().cloned().collect();
        let mut used = BTreeMap::new();
        let mut placer = Placer::new(&table, &mut used, 1);
        let mut records: Vec<DatasetRecord> = (0..datasets)
            .map(|d| DatasetRecord {
                name: format!("d{d}"),
                version: 1,
                format: "bytes".into(),
                schema: String::new(),
                partitions: (0..partitions)
                    .map(|i| PartitionRecord {
                        block: BlockHash::of(
                            &[(d as u64).to_le_bytes(), (i as u64).to_le_bytes()].concat(),
                        ),
                        bytes: BLOCK_BYTES,
                        rows: 0,
                        holders: placer
                            .pick(BLOCK_BYTES, REPLICAS, &BTreeSet::new(), &BTreeSet::new())
                            .expect("room"),
                    })
                    .collect(),
                created_ms: 0,
                bounds: Vec::new(),
            })
            .collect();
        for id in lost {
            if let Some(n) = nodes.get_mut(id) {
                n.state = NodeState::Out;
            }
        }
        let gone: BTreeSet<NodeId> = lost.iter().copied().collect();
        let blocks = records
            .iter()
            .flat_map(|d| &d.partitions)
            .filter(|p| p.holders.iter().any(|h| gone.contains(h)))
            .map(|p| p.holders.iter().filter(|h| gone.contains(h)).count())
            .sum::<usize>();
        let survivors = members as usize - lost.len();
        let bound = Duration::from_secs_f64(
            blocks as f64 * BLOCK_BYTES as f64 / (survivors as f64 * MEMBER_BANDWIDTH),
        );

        let lost_fn = |id: &NodeId| nodes.get(id).is_none_or(|n| n.state == NodeState::Out);
        let leaving = |_: &NodeId| false;
        let (mut simulated, mut planning, mut rounds) = (Duration::ZERO, Duration::ZERO, 0);
        // What nodes hold, as the leader's index has it; the planner adds what it places.
        let mut used = tern_node::bytes_per_node(&records);
        loop {
            let started = Instant::now();
            let plan =
                tern_node::plan_repair(&nodes, &mut records, &mut used, &lost_fn, rounds as u64);
            let planned = started.elapsed();
            planning += planned;
            if plan.copies.is_empty() {
                break;
            }
            rounds += 1;
            let mut sending: BTreeMap<NodeId, usize> = BTreeMap::new();
            let mut receiving: BTreeMap<NodeId, usize> = BTreeMap::new();
            for c in &plan.copies {
                *sending.entry(c.sources[0]).or_default() += 1;
                *receiving.entry(c.target).or_default() += 1;
            }
            let mut slowest = Duration::ZERO;
            for c in &plan.copies {
                let share = sending[&c.sources[0]].max(receiving[&c.target]) as f64;
                let bytes = records[c.dataset].partitions[c.partition].bytes as f64;
                slowest = slowest.max(Duration::from_secs_f64(bytes * share / MEMBER_BANDWIDTH));
            }
            for c in &plan.copies {
                records[c.dataset].partitions[c.partition].holders =
                    tern_node::holders_after(c, &leaving);
            }
            // A round that copied is followed at once by the next (see the node's repair loop).
            simulated += planned + slowest;
        }
        assert!(
            records.iter().flat_map(|d| &d.partitions).all(|p| p.holders.len() == REPLICAS
                && p.holders.iter().all(|h| !gone.contains(h))),
            "every block has three replicas on survivors"
        );
        Restored {
            blocks,
            rounds,
            simulated,
            bound,
            planning,
        }
    }
}
