//! Nothing acknowledged is lost: not a block to a crash, not a dataset to the faults.

use tern_proto::{BlockHash, DatasetRecord, NodeId};

use super::DURABILITY;
use crate::world::{DatasetModel, World};

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
