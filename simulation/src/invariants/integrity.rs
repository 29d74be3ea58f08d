//! Every block a node serves hashes to its name.

use tern_proto::{BlockHash, NodeId};

use super::INTEGRITY;
use crate::world::World;

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
