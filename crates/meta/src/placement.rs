//! Where a block's replicas go: three distinct nodes that are up, in distinct zones when the
//! cluster has enough zones, with the most free space first, so a dataset's partitions spread
//! evenly. A pure function of the node table and the space already promised, so every
//! coordinator (and the simulator) picks the same way from the same catalog.

use std::collections::{BTreeMap, BTreeSet};

use tern_proto::{NodeId, NodeRecord, NodeState};

/// Replicas per block.
pub const REPLICAS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{need} replicas need {need} live nodes, but only {have} are up")]
    NotEnoughNodes { need: usize, have: usize },
    #[error(
        "not enough free space: a block of {} needs {need} nodes with room for it, only {have} have",
        tern_proto::human_bytes(*bytes)
    )]
    NoSpace {
        bytes: u64,
        need: usize,
        have: usize,
    },
}

/// Choose `count` holders for a block of `bytes` bytes, never one in `exclude` (nodes that
/// already hold it, during repair). `used` is what each node already stores or has been
/// promised; the chosen nodes' entries grow by `bytes`, so calling this once per partition
/// spreads a dataset over the cluster.
pub fn pick_holders(
    nodes: &[NodeRecord],
    used: &mut BTreeMap<NodeId, u64>,
    bytes: u64,
    count: usize,
    exclude: &BTreeSet<NodeId>,
) -> Result<Vec<NodeId>, PlacementError> {
    pick_holders_beside(nodes, used, bytes, count, exclude, &BTreeSet::new())
}

/// [`pick_holders`] for a block that already has holders in `zones_taken` (repair): nodes in
/// other zones come first, so the replicas end up spread over as many zones as there are.
pub fn pick_holders_beside(
    nodes: &[NodeRecord],
    used: &mut BTreeMap<NodeId, u64>,
    bytes: u64,
    count: usize,
    exclude: &BTreeSet<NodeId>,
    zones_taken: &BTreeSet<String>,
) -> Result<Vec<NodeId>, PlacementError> {
    let mut candidates: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up && !exclude.contains(&n.id))
        .collect();
    if candidates.len() < count {
        return Err(PlacementError::NotEnoughNodes {
            need: count,
            have: candidates.len(),
        });
    }
    let free = |n: &NodeRecord| {
        n.capacity_bytes
            .saturating_sub(used.get(&n.id).copied().unwrap_or(0))
    };
    candidates.retain(|n| free(n) >= bytes);
    if candidates.len() < count {
        return Err(PlacementError::NoSpace {
            bytes,
            need: count,
            have: candidates.len(),
        });
    }
    // Most free space first; the id breaks ties so the choice is deterministic.
    candidates.sort_by(|a, b| free(b).cmp(&free(a)).then(a.id.cmp(&b.id)));

    let mut chosen: Vec<&NodeRecord> = Vec::with_capacity(count);
    let mut zones: BTreeSet<&str> = zones_taken.iter().map(String::as_str).collect();
    // First a node from each zone not yet used, then anything left, best first.
    for n in &candidates {
        if chosen.len() < count && zones.insert(n.zone.as_str()) {
            chosen.push(n);
        }
    }
    for n in &candidates {
        if chosen.len() < count && !chosen.iter().any(|c| c.id == n.id) {
            chosen.push(n);
        }
    }
    let ids: Vec<NodeId> = chosen.iter().map(|n| n.id).collect();
    for id in &ids {
        *used.entry(*id).or_default() += bytes;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(id: NodeId, zone: &str, capacity: u64, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            addr: format!("127.0.0.1:{}", 7400 + id),
            zone: zone.into(),
            capacity_bytes: capacity,
            state,
        }
    }

    #[test]
    fn a_repair_target_goes_to_a_zone_the_block_lacks() {
        let nodes = vec![
            node(1, "a", 100, NodeState::Up),
            node(2, "b", 100, NodeState::Up),
            // More free space than node 4, but in a zone the block already has.
            node(3, "a", 1000, NodeState::Up),
            node(4, "c", 100, NodeState::Up),
        ];
        let taken = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let exclude = BTreeSet::from([1, 2]);
        let picked =
            pick_holders_beside(&nodes, &mut BTreeMap::new(), 1, 1, &exclude, &taken).unwrap();
        assert_eq!(picked, vec![4]);
    }

    #[test]
    fn distinct_zones_come_first() {
        let nodes = vec![
            node(1, "a", 100, NodeState::Up),
            node(2, "a", 100, NodeState::Up),
            node(3, "b", 100, NodeState::Up),
            node(4, "c", 100, NodeState::Up),
        ];
        let picked = pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::new()).unwrap();
        let zones: BTreeSet<&str> = picked
            .iter()
            .map(|id| nodes[*id as usize - 1].zone.as_str())
            .collect();
        assert_eq!(zones.len(), 3, "{picked:?}");
    }

    #[test]
    fn nodes_that_are_not_up_or_excluded_are_never_chosen() {
        let nodes = vec![
            node(1, "", 100, NodeState::Up),
            node(2, "", 100, NodeState::Down),
            node(3, "", 100, NodeState::Suspect),
            node(4, "", 100, NodeState::Draining),
            node(5, "", 100, NodeState::Up),
            node(6, "", 100, NodeState::Up),
        ];
        let picked = pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::new()).unwrap();
        assert_eq!(picked, vec![1, 5, 6]);
        let err =
            pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::from([1])).unwrap_err();
        assert_eq!(err, PlacementError::NotEnoughNodes { need: 3, have: 2 });
        assert!(err.to_string().contains("only 2 are up"));
    }

    #[test]
    fn nodes_without_room_are_skipped_and_a_full_cluster_is_named() {
        let nodes = vec![
            node(1, "", 100, NodeState::Up),
            node(2, "", 100, NodeState::Up),
            node(3, "", 100, NodeState::Up),
            node(4, "", 100, NodeState::Up),
        ];
        let mut used = BTreeMap::from([(2, 90)]);
        let picked = pick_holders(&nodes, &mut used, 50, 3, &BTreeSet::new()).unwrap();
        assert!(!picked.contains(&2), "{picked:?}");
        let err = pick_holders(&nodes, &mut used, 60, 3, &BTreeSet::new()).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NoSpace {
                bytes: 60,
                need: 3,
                have: 0
            }
        );
        assert!(
            err.to_string().starts_with("not enough free space"),
            "{err}"
        );
    }

    proptest! {
        /// Holders are distinct live nodes; a dataset's replicas spread evenly over equal nodes.
        #[test]
        fn placement_is_distinct_live_and_even(nodes_up in 3usize..9, down in 0usize..3, partitions in 1usize..60) {
            let mut nodes: Vec<NodeRecord> = (1..=nodes_up as u64).map(|id| node(id, "", 1 << 40, NodeState::Up)).collect();
            nodes.extend((0..down as u64).map(|i| node(100 + i, "", 1 << 40, NodeState::Down)));
            let mut used = BTreeMap::new();
            let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
            for _ in 0..partitions {
                let picked = pick_holders(&nodes, &mut used, 1 << 20, REPLICAS, &BTreeSet::new()).unwrap();
                let distinct: BTreeSet<_> = picked.iter().collect();
                prop_assert_eq!(distinct.len(), REPLICAS);
                prop_assert!(picked.iter().all(|id| *id <= nodes_up as u64));
                for id in picked {
                    *count.entry(id).or_default() += 1;
                }
            }
            let most = count.values().max().copied().unwrap_or(0);
            let least = (1..=nodes_up as u64).map(|id| count.get(&id).copied().unwrap_or(0)).min().unwrap_or(0);
            prop_assert!(most - least <= 1, "uneven spread: {:?}", count);
        }
    }
}
