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
//! Not yet here (issue 22, item 7): members heartbeating a leader over the simulated
//! network, repair after losing a member or a rack.

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
}
