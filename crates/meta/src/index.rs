//! What each node holds, kept up to date as dataset records are applied, so placement and
//! `tern status` read it in O(nodes) instead of decoding every dataset in the catalog.
//!
//! It is derived state: not in snapshots, rebuilt from the catalog when a state machine is
//! loaded or a snapshot installed ([`MetaState::reindex`](crate::MetaState::reindex)).

use std::collections::BTreeMap;

use tern_proto::{DatasetRecord, NodeId};

use crate::placement::REPLICAS;

/// Partition replicas and their bytes on one node, as the catalog lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub partitions: u64,
    pub bytes: u64,
}

/// [`Held`] per node, over every dataset record that decodes, and how many partitions list
/// fewer than three holders (or none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    per_node: BTreeMap<NodeId, Held>,
    short: u64,
    empty: u64,
}

impl Holdings {
    /// Count (`sign` = 1) or uncount (`sign` = -1) the record stored as `raw`. A record this
    /// version cannot decode counts for nothing (GC and repair stop on such records).
    pub(crate) fn count(&mut self, raw: &[u8], sign: i8) {
        let Ok(record) = DatasetRecord::decode(raw) else {
            return;
        };
        for p in &record.partitions {
            let (short, empty) = (
                u64::from(p.holders.len() < REPLICAS),
                u64::from(p.holders.is_empty()),
            );
            if sign > 0 {
                self.short += short;
                self.empty += empty;
            } else {
                self.short = self.short.saturating_sub(short);
                self.empty = self.empty.saturating_sub(empty);
            }
            for holder in &p.holders {
                let held = self.per_node.entry(*holder).or_default();
                if sign > 0 {
                    held.partitions += 1;
                    held.bytes += p.bytes;
                } else {
                    held.partitions = held.partitions.saturating_sub(1);
                    held.bytes = held.bytes.saturating_sub(p.bytes);
                }
            }
        }
        self.per_node.retain(|_, held| held.partitions > 0);
    }

    pub fn of(&self, node: NodeId) -> Held {
        self.per_node.get(&node).copied().unwrap_or_default()
    }

    /// Nodes that hold something.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.per_node.keys().copied()
    }

    /// Partitions listing fewer than three holders, and those listing none.
    pub fn short_and_empty(&self) -> (u64, u64) {
        (self.short, self.empty)
    }

    /// Bytes each node holds (nodes holding nothing are absent).
    pub fn bytes_per_node(&self) -> BTreeMap<NodeId, u64> {
        self.per_node.iter().map(|(id, h)| (*id, h.bytes)).collect()
    }
}
