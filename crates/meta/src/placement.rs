//! Where a block's replicas go: distinct nodes that are up and have room, in distinct zones
//! when the cluster has enough zones, each chosen by the power of two choices: of two nodes
//! drawn at random, the one with more free space. That spreads a dataset about as evenly as
//! always taking the emptiest node, in O(zones) per block instead of a sort of the whole
//! cluster, and writers placing at the same time (each with its own seed) do not all pile
//! onto the emptiest node. A pure function of the node table, the space already promised and
//! a seed, so the simulator replays it.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_proto::{NodeId, NodeRecord, NodeState};

/// Replicas per block.
pub const REPLICAS: usize = 3;

/// Random draws for one replica before the placer scans its group for any node that fits
/// (a cluster nearly full, or smaller than the draws would need).
const DRAWS: usize = 8;
/// Groups of up to this many nodes are scanned for the roomiest node: exact and even, and
/// cheap at this size.
const SCAN_BELOW: usize = 32;

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

/// Places blocks over one view of the cluster: build it once per request (O(nodes)), then
/// [`Placer::pick`] per block.
pub struct Placer<'a> {
    /// Nodes that are up, the only ones that take new replicas.
    up: Vec<&'a NodeRecord>,
    /// Zone → indexes into `up`.
    zones: BTreeMap<&'a str, Vec<usize>>,
    /// What each node stores or has been promised; grows with every pick.
    used: &'a mut BTreeMap<NodeId, u64>,
    rng: StdRng,
}

impl<'a> Placer<'a> {
    pub fn new(nodes: &'a [NodeRecord], used: &'a mut BTreeMap<NodeId, u64>, seed: u64) -> Self {
        let up: Vec<&NodeRecord> = nodes.iter().filter(|n| n.state == NodeState::Up).collect();
        let mut zones: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, n) in up.iter().enumerate() {
            zones.entry(n.zone.as_str()).or_default().push(i);
        }
        Self {
            up,
            zones,
            used,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn free(&self, i: usize) -> u64 {
        let n = self.up[i];
        n.capacity_bytes
            .saturating_sub(self.used.get(&n.id).copied().unwrap_or(0))
    }

    /// Choose `count` holders for a block of `bytes`, never one in `exclude` (nodes that
    /// already hold it, during repair), in zones outside `zones_taken` (where the block's
    /// other replicas are) first. The chosen nodes' promised space grows by `bytes`.
    pub fn pick(
        &mut self,
        bytes: u64,
        count: usize,
        exclude: &BTreeSet<NodeId>,
        zones_taken: &BTreeSet<String>,
    ) -> Result<Vec<NodeId>, PlacementError> {
        let mut chosen: Vec<usize> = Vec::with_capacity(count);
        let mut taken: BTreeSet<&str> = zones_taken.iter().map(String::as_str).collect();
        for _ in 0..count {
            let fits = |placer: &Self, i: usize| {
                !exclude.contains(&placer.up[i].id)
                    && !chosen.contains(&i)
                    && placer.free(i) >= bytes
            };
            let fresh: Vec<&'a str> = self
                .zones
                .keys()
                .copied()
                .filter(|z| !taken.contains(z))
                .collect();
            let all: Vec<&'a str> = self.zones.keys().copied().collect();
            let Some(i) = self
                .two_choices(&fresh, &fits)
                .or_else(|| self.two_choices(&all, &fits))
            else {
                return Err(self.why_not(bytes, count, exclude));
            };
            taken.insert(self.up[i].zone.as_str());
            chosen.push(i);
        }
        let ids: Vec<NodeId> = chosen.iter().map(|i| self.up[*i].id).collect();
        for id in &ids {
            *self.used.entry(*id).or_default() += bytes;
        }
        Ok(ids)
    }

    /// Of two nodes in `zones` that fit, drawn at random, the one with more free space; in a
    /// small group, or when the draws find none, the roomiest of all that fit.
    fn two_choices(
        &mut self,
        zones: &[&str],
        fits: &dyn Fn(&Self, usize) -> bool,
    ) -> Option<usize> {
        let total: usize = zones.iter().map(|z| self.zones[z].len()).sum();
        if total == 0 {
            return None;
        }
        if total <= SCAN_BELOW {
            return self.roomiest(zones, total, fits);
        }
        let mut found: Vec<usize> = Vec::with_capacity(2);
        for _ in 0..DRAWS {
            let mut k = self.rng.gen_range(0..total);
            let mut drawn = None;
            for z in zones {
                let members = &self.zones[z];
                if k < members.len() {
                    drawn = Some(members[k]);
                    break;
                }
                k -= members.len();
            }
            let Some(i) = drawn else { break };
            if fits(self, i) && !found.contains(&i) {
                found.push(i);
                if found.len() == 2 {
                    break;
                }
            }
        }
        if found.is_empty() {
            return self.roomiest(zones, total, fits);
        }
        found
            .into_iter()
            .max_by_key(|i| (self.free(*i), std::cmp::Reverse(self.up[*i].id)))
    }

    /// The node with the most free space of those in `zones` that fit, scanning from a random
    /// one so that ties (equal nodes) go to a different node each time.
    fn roomiest(
        &mut self,
        zones: &[&str],
        total: usize,
        fits: &dyn Fn(&Self, usize) -> bool,
    ) -> Option<usize> {
        let members: Vec<usize> = zones
            .iter()
            .flat_map(|z| self.zones[z].iter().copied())
            .collect();
        let start = self.rng.gen_range(0..total);
        let mut best: Option<usize> = None;
        for k in 0..total {
            let i = members[(start + k) % total];
            if fits(self, i) && best.is_none_or(|b| self.free(i) > self.free(b)) {
                best = Some(i);
            }
        }
        best
    }

    /// Take back a pick's promise of `bytes` on `node` (the caller did not use it).
    pub fn release(&mut self, node: NodeId, bytes: u64) {
        if let Some(u) = self.used.get_mut(&node) {
            *u = u.saturating_sub(bytes);
        }
    }

    fn why_not(&self, bytes: u64, count: usize, exclude: &BTreeSet<NodeId>) -> PlacementError {
        let candidates: Vec<usize> = (0..self.up.len())
            .filter(|i| !exclude.contains(&self.up[*i].id))
            .collect();
        if candidates.len() < count {
            return PlacementError::NotEnoughNodes {
                need: count,
                have: candidates.len(),
            };
        }
        PlacementError::NoSpace {
            bytes,
            need: count,
            have: candidates
                .iter()
                .filter(|i| self.free(**i) >= bytes)
                .count(),
        }
    }
}

/// One block's holders ([`Placer::pick`] on a placer of its own).
pub fn pick_holders(
    nodes: &[NodeRecord],
    used: &mut BTreeMap<NodeId, u64>,
    bytes: u64,
    count: usize,
    exclude: &BTreeSet<NodeId>,
    seed: u64,
) -> Result<Vec<NodeId>, PlacementError> {
    Placer::new(nodes, used, seed).pick(bytes, count, exclude, &BTreeSet::new())
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
        for seed in 0..20 {
            let mut used = BTreeMap::new();
            let picked = Placer::new(&nodes, &mut used, seed)
                .pick(1, 1, &exclude, &taken)
                .unwrap();
            assert_eq!(picked, vec![4]);
        }
    }

    #[test]
    fn distinct_zones_come_first() {
        let nodes = vec![
            node(1, "a", 100, NodeState::Up),
            node(2, "a", 100, NodeState::Up),
            node(3, "b", 100, NodeState::Up),
            node(4, "c", 100, NodeState::Up),
        ];
        for seed in 0..20 {
            let picked =
                pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::new(), seed).unwrap();
            let zones: BTreeSet<&str> = picked
                .iter()
                .map(|id| nodes[*id as usize - 1].zone.as_str())
                .collect();
            assert_eq!(zones.len(), 3, "{picked:?}");
        }
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
        for seed in 0..20 {
            let mut picked =
                pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::new(), seed).unwrap();
            picked.sort();
            assert_eq!(picked, vec![1, 5, 6]);
        }
        let err =
            pick_holders(&nodes, &mut BTreeMap::new(), 1, 3, &BTreeSet::from([1]), 0).unwrap_err();
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
        let picked = pick_holders(&nodes, &mut used, 50, 3, &BTreeSet::new(), 7).unwrap();
        assert!(!picked.contains(&2), "{picked:?}");
        let err = pick_holders(&nodes, &mut used, 60, 3, &BTreeSet::new(), 7).unwrap_err();
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

    /// Writers placing at once, each with its own seed and unaware of the others' blocks, do
    /// not all pick the emptiest nodes of a large cluster: the herd that "most free first"
    /// made. (Up to `SCAN_BELOW` nodes, the roomiest is taken: every node is used anyway.)
    #[test]
    fn concurrent_writers_do_not_herd_onto_the_emptiest_nodes() {
        let nodes: Vec<NodeRecord> = (1..=100)
            .map(|id| node(id, "", 1 << 40, NodeState::Up))
            .collect();
        // Nodes 1-3 are the emptiest, though only by a little.
        let used: BTreeMap<NodeId, u64> = (4..=100).map(|id| (id, 1 << 30)).collect();
        let mut first_choices: BTreeSet<Vec<NodeId>> = BTreeSet::new();
        for writer in 0..8u64 {
            let mut mine = used.clone();
            let mut picked =
                pick_holders(&nodes, &mut mine, 1 << 20, 3, &BTreeSet::new(), writer).unwrap();
            picked.sort();
            first_choices.insert(picked);
        }
        assert!(
            first_choices.len() > 1,
            "every writer chose the same nodes: {first_choices:?}"
        );
    }

    /// Placement keeps up with a large cluster: a million blocks on 1,000 nodes in ten zones
    /// (the goal is 50,000 a second; `tern-bench placement` measures it in release).
    #[test]
    fn a_thousand_nodes_take_blocks_evenly_and_in_distinct_zones() {
        let nodes: Vec<NodeRecord> = (1..=1000)
            .map(|id| {
                node(
                    id,
                    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][id as usize % 10],
                    1 << 50,
                    NodeState::Up,
                )
            })
            .collect();
        let zone_of: BTreeMap<NodeId, &str> =
            nodes.iter().map(|n| (n.id, n.zone.as_str())).collect();
        let mut used = BTreeMap::new();
        let mut placer = Placer::new(&nodes, &mut used, 42);
        let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
        for _ in 0..20_000 {
            let picked = placer
                .pick(64 << 20, REPLICAS, &BTreeSet::new(), &BTreeSet::new())
                .unwrap();
            let zones: BTreeSet<&str> = picked.iter().map(|id| zone_of[id]).collect();
            assert_eq!(zones.len(), REPLICAS);
            for id in picked {
                *count.entry(id).or_default() += 1;
            }
        }
        // 60 replicas a node on average; the power of two choices keeps every node near it
        // (uniform random choice would leave some below 40 and others above 80).
        let most = count.values().max().copied().unwrap();
        let least = (1..=1000)
            .map(|id| count.get(&id).copied().unwrap_or(0))
            .min()
            .unwrap();
        assert!(most <= 68 && least >= 52, "most {most}, least {least}");
    }

    proptest! {
        /// Holders are distinct live nodes; a dataset's replicas spread evenly over equal nodes.
        #[test]
        fn placement_is_distinct_live_and_even(nodes_up in 3usize..9, down in 0usize..3, partitions in 1usize..60, seed in 0u64..1000) {
            let mut nodes: Vec<NodeRecord> = (1..=nodes_up as u64).map(|id| node(id, "", 1 << 40, NodeState::Up)).collect();
            nodes.extend((0..down as u64).map(|i| node(100 + i, "", 1 << 40, NodeState::Down)));
            let mut used = BTreeMap::new();
            let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
            let mut placer = Placer::new(&nodes, &mut used, seed);
            for _ in 0..partitions {
                let picked = placer.pick(1 << 20, REPLICAS, &BTreeSet::new(), &BTreeSet::new()).unwrap();
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
