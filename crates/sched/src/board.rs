//! Where a task goes: the least busy of its block's holders that has a free slot, as this
//! coordinator sees the load (the tasks it has in flight on each node). A task waits a short
//! while for a holder to free a slot (locality wait), then runs on the least busy node, which
//! fetches the block from a holder. The counts are soft state, never needed for correctness.
//!
//! The board is shared by every job the node coordinates. A job with nothing in flight on a
//! node may send it one task beyond its slots (one such task per node at a time): the node's
//! own queue then gives
//! that task a turn between the busy jobs' tasks (it shares slots fairly between jobs), so a
//! small query is not held here behind every task of a large one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tern_proto::NodeId;
use tokio::sync::Notify;

pub struct LoadBoard {
    slots: usize,
    in_flight: Mutex<BTreeMap<NodeId, usize>>,
    /// Tasks in flight per (job, node).
    by_job: Mutex<BTreeMap<(u64, NodeId), usize>>,
    freed: Notify,
    /// Tasks ever placed on each node: between equally busy nodes, the one given fewer tasks
    /// goes first, so short tasks that never overlap still take turns.
    placed: Mutex<BTreeMap<NodeId, u64>>,
}

/// A task slot taken on a node; given back when dropped.
pub struct Slot<'a> {
    board: &'a LoadBoard,
    job: u64,
    pub node: NodeId,
    /// Whether the node holds the task's block.
    pub local: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .board
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.node) {
            *n = n.saturating_sub(1);
        }
        drop(map);
        let mut by_job = self.board.by_job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_job.get_mut(&(self.job, self.node)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_job.remove(&(self.job, self.node));
            }
        }
        drop(by_job);
        self.board.freed.notify_waiters();
    }
}

impl LoadBoard {
    /// `slots`: tasks each node runs at once.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: slots.max(1),
            in_flight: Mutex::default(),
            by_job: Mutex::default(),
            freed: Notify::new(),
            placed: Mutex::default(),
        }
    }

    /// Tasks each node runs at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tasks this coordinator has running on `node`.
    pub fn load(&self, node: NodeId) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied()
            .unwrap_or(0)
    }

    /// The least busy of `candidates` with a free slot, taken.
    fn try_take(&self, job: u64, candidates: &[NodeId], local: bool) -> Option<Slot<'_>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_job = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
        let (_, _, node) = candidates
            .iter()
            .map(|id| {
                let load = map.get(id).copied().unwrap_or(0);
                (load, placed.get(id).copied().unwrap_or(0), *id)
            })
            // One task beyond the slots, for a job with nothing on the node yet.
            .filter(|(load, _, id)| {
                *load < self.slots || (*load == self.slots && !by_job.contains_key(&(job, *id)))
            })
            .min()?;
        *map.entry(node).or_default() += 1;
        *placed.entry(node).or_default() += 1;
        *by_job.entry((job, node)).or_default() += 1;
        Some(Slot {
            board: self,
            job,
            node,
            local,
        })
    }

    /// A slot on one of `holders` if one frees within `locality_wait`, else on the least
    /// busy of `anywhere` (waiting as long as it takes for one to free).
    pub async fn take(
        &self,
        job: u64,
        holders: &[NodeId],
        anywhere: &[NodeId],
        locality_wait: Duration,
    ) -> Slot<'_> {
        let waited = tokio::time::Instant::now();
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take(job, holders, true) {
                return slot;
            }
            if waited.elapsed() >= locality_wait {
                let others: Vec<NodeId> = anywhere
                    .iter()
                    .filter(|n| !holders.contains(n))
                    .copied()
                    .collect();
                if let Some(slot) = self.try_take(job, &others, false) {
                    return slot;
                }
            }
            let _ = tokio::time::timeout(locality_wait.max(Duration::from_millis(5)), freed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_go_to_the_least_busy_holder_and_spill_over_when_all_are_full() {
        let board = LoadBoard::new(2);
        let holders = [1, 2, 3];
        let all = [1, 2, 3, 4];
        let wait = Duration::from_millis(10);
        let mut taken = Vec::new();
        for _ in 0..6 {
            taken.push(board.take(1, &holders, &all, wait).await);
        }
        for id in holders {
            assert_eq!(
                board.load(id),
                2,
                "six tasks over three holders with two slots each"
            );
        }
        assert!(taken.iter().all(|s| s.local));
        let spilled = board.take(1, &holders, &all, wait).await;
        assert_eq!((spilled.node, spilled.local), (4, false));
        drop(taken.pop());
        let back = board.take(1, &holders, &all, wait).await;
        assert!(back.local, "a freed holder slot is preferred again");
    }

    #[tokio::test]
    async fn another_job_gets_one_task_onto_a_full_node() {
        let board = LoadBoard::new(1);
        let wait = Duration::from_millis(10);
        let _busy = board.take(1, &[1], &[1], wait).await;
        let other = tokio::time::timeout(Duration::from_secs(5), board.take(2, &[1], &[1], wait))
            .await
            .expect("a job with nothing on the node is not held back");
        assert_eq!(other.node, 1);
        let third =
            tokio::time::timeout(Duration::from_millis(50), board.take(2, &[1], &[1], wait)).await;
        assert!(
            third.is_err(),
            "but only one: the node is full for job 2 now"
        );
    }
}
