//! The invariants, checked during and after every run. Each names itself in violations.
//!
//! - [`RAFT`]: at most one leader per term; nodes that applied the same log index hold the same
//!   state (so committed entries are never lost or changed); the applied index of a node never
//!   goes back, even across its restarts.
//! - [`DURABILITY`]: an acknowledged dataset is still there after the faults (every fault
//!   leaves at least one intact copy of each block: crashes keep synced data, and bit flips
//!   spare the last intact copy).
//! - [`INTEGRITY`]: every block a node serves matches its blake3 name.
//! - [`VISIBILITY`]: readers only ever see dataset records whose commit was sent, whole.
//! - [`ANSWERS`]: a query that answers gives the answer of some version of its table whose
//!   commit was sent (computed by the workload when it wrote the rows).
//! - [`LIVENESS`]: the cluster forms; after the faults stop, every operation completes, and
//!   every block has exactly three holders, distinct and up, each serving it intact.

use std::collections::BTreeMap;

use tern_proto::{BlockHash, DatasetRecord, NodeId};

use crate::world::{DatasetModel, World};

pub const RAFT: &str = "raft-safety";
pub const DURABILITY: &str = "durability";
pub const INTEGRITY: &str = "integrity";
pub const VISIBILITY: &str = "visibility";
pub const LIVENESS: &str = "liveness";
pub const ANSWERS: &str = "job-answers";

/// Bytes a node served for `block` must hash to it.
pub fn check_served(world: &World, node: NodeId, block: &BlockHash, bytes: &[u8]) {
    let actual = BlockHash::of(bytes);
    if actual != *block {
        world.violated(
            INTEGRITY,
            format!("node {node} served block {block} with bytes that hash to {actual}"),
        );
    }
}

/// What a dataset record says apart from who holds its blocks (repair changes holders).
fn content(record: &DatasetRecord) -> (u64, &str, Vec<(BlockHash, u64)>) {
    (
        record.version,
        &record.format,
        record
            .partitions
            .iter()
            .map(|p| (p.block, p.bytes))
            .collect(),
    )
}

/// A record a reader saw must be one whose commit was sent.
pub fn check_visible(world: &World, record: &DatasetRecord) {
    let seen = crate::world::lock(&world.datasets)
        .get(&record.name)
        .is_some_and(|m| m.maybe.iter().any(|r| content(r) == content(record)));
    if !seen {
        world.violated(
            VISIBILITY,
            format!(
                "a reader saw {} version {} with {} partitions, never committed",
                record.name,
                record.version,
                record.partitions.len()
            ),
        );
    }
}

/// After the faults: an acknowledged put (not removed since) is still in the catalog.
pub fn check_durable(
    world: &World,
    name: &str,
    model: &DatasetModel,
    found: Option<&DatasetRecord>,
) {
    let Some(acked) = &model.acked else { return };
    match found {
        None if !model.uncertain_remove => world.violated(
            DURABILITY,
            format!(
                "acknowledged dataset {name} version {} is gone",
                acked.version
            ),
        ),
        Some(record) if record.version < acked.version => world.violated(
            DURABILITY,
            format!(
                "{name} went back from acknowledged version {} to {}",
                acked.version, record.version
            ),
        ),
        _ => {}
    }
}

/// A crash may only lose writes that were never acknowledged: `lost` are the blocks that were
/// on `node`'s disk before its crash and are gone after it.
pub fn check_crash_kept_acknowledged(world: &World, node: NodeId, lost: &[BlockHash]) {
    let acked = world.acked_blocks();
    for block in lost {
        if acked
            .get(block)
            .is_some_and(|holders| holders.contains(&node))
        {
            world.violated(
                DURABILITY,
                format!("node {node} acknowledged block {block}, then lost it in a crash (it was not synced)"),
            );
        }
    }
}

/// Raft safety, observed from outside: the driver feeds it every running node's view.
#[derive(Default)]
pub struct RaftObserver {
    leaders: BTreeMap<u64, NodeId>,
    states: BTreeMap<u64, (NodeId, blake3::Hash)>,
    applied: BTreeMap<NodeId, u64>,
}

impl RaftObserver {
    /// A node crashed: its state machine may restart from an older applied index (applies are
    /// not synced; the log is, and Raft applies it again).
    pub fn forget(&mut self, node: NodeId) {
        self.applied.remove(&node);
    }

    pub fn observe(
        &mut self,
        world: &World,
        node: NodeId,
        leader_in_term: Option<u64>,
        applied: Option<u64>,
        state: blake3::Hash,
    ) {
        if let Some(term) = leader_in_term {
            match self.leaders.get(&term) {
                Some(other) if *other != node => world.violated(
                    RAFT,
                    format!("nodes {other} and {node} both lead term {term}"),
                ),
                Some(_) => {}
                None => {
                    world.event(format!("node {node} leads term {term}"));
                    self.leaders.insert(term, node);
                }
            }
        }
        let Some(index) = applied else { return };
        if let Some(before) = self.applied.insert(node, index)
            && before > index
        {
            world.violated(
                RAFT,
                format!("node {node} applied index went back from {before} to {index}"),
            );
        }
        match self.states.get(&index) {
            Some((other, hash)) if *hash != state => world.violated(
                RAFT,
                format!("nodes {other} and {node} hold different states at applied index {index}"),
            ),
            Some(_) => {}
            None => {
                self.states.insert(index, (node, state));
            }
        }
    }
}
