//! Readers see only dataset records whose commit was sent, and see them whole.

use tern_proto::{BlockHash, DatasetRecord};

use super::VISIBILITY;
use crate::world::World;

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

/// A record a reader saw must be one whose commit was sent, and name each partition's holders
/// once each (a node listed twice would count as two replicas of one copy: the leader refuses
/// such a commit, and repair must never make one).
pub fn check_visible(world: &World, record: &DatasetRecord) {
    for (i, p) in record.partitions.iter().enumerate() {
        let distinct: std::collections::BTreeSet<_> = p.holders.iter().collect();
        if distinct.len() != p.holders.len() {
            world.violated(
                VISIBILITY,
                format!(
                    "{} version {} partition {i} lists holders {:?}: one node twice",
                    record.name, record.version, p.holders
                ),
            );
        }
    }
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
