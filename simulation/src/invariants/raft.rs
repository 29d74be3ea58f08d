//! Raft's safety, observed from outside every node, as openraft promises it in the mode tern
//! runs it.
//!
//! openraft is built without its `single-term-leader` feature: a leader is named by a leader
//! id `(term, node)`, ordered first by term and then by node, and a node grants a vote to any
//! leader id at least as great as the one it last granted. So two nodes may both win one term
//! (node 1 with votes for T4-N1, then node 4 with votes for T4-N4 from voters that moved on),
//! and the greater id wins: the lesser leader can no longer commit, since a quorum has moved
//! past it. Standard Raft's "one leader per term" is therefore not a promise; what is:
//!
//! - a leader leads under its own leader id, and no two nodes under one id;
//! - committed entries carry leader ids that never decrease along the log, so a leader whose
//!   id is superseded (by one a quorum granted and that committed an entry) never commits
//!   again;
//! - nodes that applied the same index hold the same state, and a running node's applied
//!   index never goes back;
//! - a node's vote never goes back, not even across a crash: a vote is durable before it is
//!   granted (a node that forgot a vote in a crash could grant a lesser one, and a lesser
//!   leader could then win after a greater one).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, CommittedLeaderId, LeaderId, RaftMetrics, ServerState, Vote};
use tern_proto::{NodeId, Response};

use super::RAFT;
use crate::world::{World, lock};

/// Raft safety, observed from outside: the driver feeds it every running node's view.
#[derive(Default)]
pub struct RaftObserver {
    /// Who led under each leader id.
    leaders: BTreeMap<LeaderId<u64>, NodeId>,
    /// The leader id of each applied (so committed) log index seen.
    committed: BTreeMap<u64, CommittedLeaderId<u64>>,
    states: BTreeMap<u64, (NodeId, blake3::Hash)>,
    applied: BTreeMap<NodeId, u64>,
}

impl RaftObserver {
    /// A node crashed: its state machine may restart from an older applied index (applies are
    /// not synced; the log is, and Raft applies it again). Its vote is not forgotten.
    pub fn forget(&mut self, node: NodeId) {
        self.applied.remove(&node);
    }

    pub fn observe(
        &mut self,
        world: &World,
        node: NodeId,
        metrics: &RaftMetrics<u64, BasicNode>,
        applied: Option<u64>,
        state: blake3::Hash,
    ) {
        if metrics.state == ServerState::Leader {
            self.leader(world, node, &metrics.vote);
        }
        if let Some(log_id) = &metrics.last_applied {
            self.applied_entry(world, node, log_id.index, log_id.leader_id);
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

    /// `node` leads with `vote`: its own, granted by a quorum, and no other node's id.
    fn leader(&mut self, world: &World, node: NodeId, vote: &Vote<u64>) {
        let id = vote.leader_id;
        if id.node_id != node || !vote.is_committed() {
            world.violated(RAFT, format!("node {node} leads with vote {vote}"));
            return;
        }
        match self.leaders.get(&id) {
            Some(other) if *other != node => {
                world.violated(RAFT, format!("nodes {other} and {node} both lead as {id}"))
            }
            Some(_) => {}
            None => {
                let same_term: Vec<String> = self
                    .leaders
                    .keys()
                    .filter(|l| l.term == id.term)
                    .map(|l| l.to_string())
                    .collect();
                world.event(if same_term.is_empty() {
                    format!("node {node} leads {id}")
                } else {
                    format!(
                        "node {node} leads {id} (term {} also led as {}: the greater id supersedes)",
                        id.term,
                        same_term.join(", ")
                    )
                });
                self.leaders.insert(id, node);
            }
        }
    }

    /// `node` applied the entry at `index`, written by leader `leader`: along the committed
    /// log, leader ids never decrease, so a superseded leader commits nothing after its
    /// successor has.
    fn applied_entry(
        &mut self,
        world: &World,
        node: NodeId,
        index: u64,
        leader: CommittedLeaderId<u64>,
    ) {
        if let Some(known) = self.committed.get(&index) {
            if *known != leader {
                world.violated(
                    RAFT,
                    format!(
                        "node {node} applied index {index} from leader {leader}, another node from {known}"
                    ),
                );
            }
            return;
        }
        let before = self.committed.range(..index).next_back();
        let after = self.committed.range(index + 1..).next();
        if let Some((at, greater)) = before.filter(|(_, l)| **l > leader) {
            world.violated(
                RAFT,
                format!(
                    "node {node} applied index {index} from leader {leader}, after index {at} was committed by the greater leader {greater}"
                ),
            );
        } else if let Some((at, lesser)) = after.filter(|(_, l)| **l < leader) {
            world.violated(
                RAFT,
                format!(
                    "node {node} applied index {index} from leader {leader}, before index {at} was committed by the lesser leader {lesser}"
                ),
            );
        }
        self.committed.insert(index, leader);
    }
}

/// `node`'s vote is `vote` (`how`: on its disk, or what its disk kept in a crash): it must not
/// be less than any vote the node held before, even before a crash.
pub fn check_vote(world: &World, node: NodeId, vote: &Vote<u64>, how: &str) {
    let mut votes = lock(&world.votes);
    match votes.get(&node) {
        // Votes are totally ordered with openraft's default leader ids; an incomparable
        // pair would be as wrong as a lesser vote.
        Some(before)
            if !matches!(
                vote.partial_cmp(before),
                Some(Ordering::Greater | Ordering::Equal)
            ) =>
        {
            let before = *before;
            drop(votes);
            world.violated(
                RAFT,
                format!("node {node}'s vote went back from {before} to {vote} ({how})"),
            );
        }
        _ => {
            votes.insert(node, *vote);
        }
    }
}

/// `node` answered the vote request `payload` with `response`: trace who voted for whom. (The
/// vote it answered with is not checked here: the answer may run after the node has moved
/// to a greater vote, which the driver may have read from its disk already. The disk is
/// checked instead, every 100 ms and around every crash, and it holds every vote granted.)
pub fn trace_vote_answer(world: &World, node: NodeId, payload: &[u8], response: &Response) {
    let Ok(request) = postcard::from_bytes::<VoteRequest<u64>>(payload) else {
        return;
    };
    let Response::Raft(bytes) = response else {
        return;
    };
    let Ok(Ok(answer)) = postcard::from_bytes::<Result<VoteResponse<u64>, RaftError<u64>>>(bytes)
    else {
        return;
    };
    let last_log = |l: &Option<openraft::LogId<u64>>| {
        l.map(|l| l.to_string()).unwrap_or_else(|| "none".into())
    };
    world.event(if answer.vote_granted {
        format!("node {node} grants vote {}", request.vote)
    } else {
        format!(
            "node {node} refuses vote {} (last log {}): it holds {} (last log {})",
            request.vote,
            last_log(&request.last_log_id),
            answer.vote,
            last_log(&answer.last_log_id)
        )
    });
}

#[cfg(test)]
mod tests {
    use openraft::LogId;

    use super::*;

    fn world() -> World {
        World::new(1, 5, None, 10)
    }

    fn metrics(
        node: NodeId,
        vote: Vote<u64>,
        leading: bool,
        applied: Option<(u64, u64, u64)>,
    ) -> RaftMetrics<u64, BasicNode> {
        let mut m = RaftMetrics::new_initial(node);
        m.vote = vote;
        m.current_term = vote.leader_id.term;
        m.state = if leading {
            ServerState::Leader
        } else {
            ServerState::Follower
        };
        m.last_applied = applied
            .map(|(term, leader, index)| LogId::new(CommittedLeaderId::new(term, leader), index));
        m
    }

    fn observe(o: &mut RaftObserver, w: &World, m: &RaftMetrics<u64, BasicNode>) {
        o.observe(w, m.id, m, None, blake3::hash(b""));
    }

    #[test]
    fn two_leaders_of_one_term_are_openraft_s_design() {
        let (w, mut o) = (world(), RaftObserver::default());
        observe(
            &mut o,
            &w,
            &metrics(4, Vote::new_committed(4, 4), true, Some((1, 1, 25))),
        );
        observe(
            &mut o,
            &w,
            &metrics(1, Vote::new_committed(4, 1), true, Some((1, 1, 25))),
        );
        assert_eq!(w.violation(), None);
    }

    #[test]
    fn a_leader_under_another_node_s_id_is_caught() {
        let (w, mut o) = (world(), RaftObserver::default());
        observe(
            &mut o,
            &w,
            &metrics(1, Vote::new_committed(4, 4), true, None),
        );
        assert!(w.violation().unwrap().contains("leads with vote T4-N4"));
    }

    #[test]
    fn a_superseded_leader_committing_again_is_caught() {
        let (w, mut o) = (world(), RaftObserver::default());
        observe(
            &mut o,
            &w,
            &metrics(2, Vote::new_committed(4, 4), false, Some((4, 4, 27))),
        );
        observe(
            &mut o,
            &w,
            &metrics(1, Vote::new_committed(4, 1), true, Some((4, 1, 28))),
        );
        let v = w.violation().unwrap();
        assert!(v.contains("greater leader T4-N4"), "{v}");
    }

    #[test]
    fn an_entry_applied_from_two_leaders_is_caught() {
        let (w, mut o) = (world(), RaftObserver::default());
        observe(
            &mut o,
            &w,
            &metrics(2, Vote::new_committed(4, 4), false, Some((4, 4, 27))),
        );
        observe(
            &mut o,
            &w,
            &metrics(1, Vote::new_committed(4, 4), false, Some((4, 1, 27))),
        );
        assert!(w.violation().is_some());
    }

    #[test]
    fn a_vote_that_goes_back_is_caught_even_across_a_crash() {
        let w = world();
        check_vote(&w, 3, &Vote::new(5, 2), "answered");
        check_vote(&w, 3, &Vote::new(5, 4), "answered");
        check_vote(&w, 3, &Vote::new_committed(5, 4), "stored");
        assert_eq!(w.violation(), None);
        let mut o = RaftObserver::default();
        o.forget(3);
        check_vote(&w, 3, &Vote::new(5, 2), "kept in a crash");
        assert!(w.violation().unwrap().contains("vote went back"));
    }
}
