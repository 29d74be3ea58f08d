//! Raft's safety, observed from outside every node.

use std::collections::BTreeMap;

use tern_proto::NodeId;

use super::RAFT;
use crate::world::World;

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
