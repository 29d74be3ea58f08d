//! Where a task goes: the least busy of its block's holders that has a free slot, as this
//! coordinator sees the load (the tasks it has in flight on each node). A task waits a short
//! while for a holder to free a slot (locality wait), then runs on the least busy node, which
//! fetches the block from a holder. The counts are soft state, never needed for correctness.
//!
//! A node keeps the columns its scans decode from its own blocks in memory, so the board
//! remembers, per block, which holder last scanned it locally (its *warm* holder). Between
//! equally busy holders a task takes its warm one; and while tasks wait, a holder that some
//! of them have warm is left to them by the other tasks of the same job (not by other jobs:
//! sharing between jobs comes first), until the locality wait is over. So a stage with work
//! for every node reads each block from disk once and then from memory, and a hot block
//! still goes to the least busy of its holders.
//!
//! The board is shared by every job the node coordinates. A job with nothing in flight on a
//! node may send it one task beyond its slots (one such task per node at a time): the node's
//! own queue then gives
//! that task a turn between the busy jobs' tasks (it shares slots fairly between jobs), so a
//! small query is not held here behind every task of a large one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tern_proto::{BlockHash, NodeId};
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
    /// Per block, the holder that last scanned it locally (see the module doc).
    warm: Mutex<HashMap<BlockHash, NodeId>>,
    /// Tasks waiting for each node because their blocks are warm there.
    wanted: Mutex<BTreeMap<NodeId, usize>>,
}

/// Blocks remembered at most: past it the memory starts again (it is only a preference).
const MAX_WARM_BLOCKS: usize = 1 << 20;

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
            warm: Mutex::default(),
            wanted: Mutex::default(),
        }
    }

    /// `node` scanned `blocks` from its own store: their columns are likely in its memory.
    pub fn scanned(&self, blocks: impl IntoIterator<Item = BlockHash>, node: NodeId) {
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        for block in blocks {
            if warm.len() >= MAX_WARM_BLOCKS {
                warm.clear();
            }
            warm.insert(block, node);
        }
    }

    /// The node among `holders` most of `blocks` are warm on: the holder that last scanned a
    /// block locally as this coordinator saw it, else the block's [`home_holder`], so that
    /// coordinators with no history of a block (a new one for every `tern sql`) still send
    /// it to the same holder and one node's memory serves it, not three nodes' in turn.
    pub fn warm_holder(&self, blocks: &[BlockHash], holders: &[NodeId]) -> Option<NodeId> {
        let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for block in blocks {
            let node = warm
                .get(block)
                .filter(|n| holders.contains(n))
                .copied()
                .or_else(|| home_holder(block, holders));
            if let Some(node) = node {
                *votes.entry(node).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(node, n)| (*n, std::cmp::Reverse(*node)))
            .map(|(node, _)| node)
    }

    /// Tasks of `job` this coordinator has running, per node.
    pub fn job_load(&self, job: u64) -> BTreeMap<NodeId, u64> {
        self.by_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range((job, NodeId::MIN)..=(job, NodeId::MAX))
            .map(|(&(_, node), &n)| (node, n as u64))
            .collect()
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

    /// The least busy of `candidates` with a free slot, taken; between equally busy ones,
    /// `warm` first.
    fn try_take(
        &self,
        job: u64,
        candidates: &[NodeId],
        local: bool,
        warm: Option<NodeId>,
    ) -> Option<Slot<'_>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_job = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
        let (_, _, _, node) = candidates
            .iter()
            .map(|id| {
                let load = map.get(id).copied().unwrap_or(0);
                let cold = Some(*id) != warm;
                (load, cold, placed.get(id).copied().unwrap_or(0), *id)
            })
            // One task beyond the slots, for a job with nothing on the node yet.
            .filter(|(load, _, _, id)| {
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
    /// busy of `anywhere` (waiting as long as it takes for one to free). `warm`, one of the
    /// holders, goes first between equally busy holders; until the locality wait is over,
    /// holders that other waiting tasks have warm are left to them, unless this task's job
    /// has nothing running there (sharing between jobs comes first).
    pub async fn take(
        &self,
        job: u64,
        holders: &[NodeId],
        anywhere: &[NodeId],
        warm: Option<NodeId>,
        locality_wait: Duration,
    ) -> Slot<'_> {
        self.take_with(job, holders, anywhere, warm, locality_wait, true)
            .await
    }

    /// [`Self::take`]; with `claim_warm` false, `warm` only breaks ties between equally busy
    /// holders and the task does not hold other tasks off its warm node while it waits (graph
    /// tasks, many and short, spread better without).
    pub async fn take_with(
        &self,
        job: u64,
        holders: &[NodeId],
        anywhere: &[NodeId],
        warm: Option<NodeId>,
        locality_wait: Duration,
        claim_warm: bool,
    ) -> Slot<'_> {
        let waited = tokio::time::Instant::now();
        let _wanting = warm
            .filter(|w| claim_warm && holders.contains(w))
            .map(|node| Wanting::new(self, node));
        loop {
            let freed = self.freed.notified();
            let candidates: Vec<NodeId> = if waited.elapsed() < locality_wait {
                let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
                let by_job = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
                holders
                    .iter()
                    .filter(|h| {
                        Some(**h) == warm
                            || !wanted.contains_key(h)
                            || !by_job.contains_key(&(job, **h))
                    })
                    .copied()
                    .collect()
            } else {
                holders.to_vec()
            };
            if let Some(slot) = self.try_take(job, &candidates, true, warm) {
                return slot;
            }
            if waited.elapsed() >= locality_wait {
                let others: Vec<NodeId> = anywhere
                    .iter()
                    .filter(|n| !holders.contains(n))
                    .copied()
                    .collect();
                if let Some(slot) = self.try_take(job, &others, false, None) {
                    return slot;
                }
            }
            let _ = tokio::time::timeout(locality_wait.max(Duration::from_millis(5)), freed).await;
        }
    }
}

/// The holder a block goes to when nothing else decides: the one scoring highest for it
/// (rendezvous hashing), the same in every coordinator, spread evenly over nodes, and
/// moving only the blocks of a node that leaves `holders`.
pub fn home_holder(block: &BlockHash, holders: &[NodeId]) -> Option<NodeId> {
    let mut key = [0u8; 8];
    key.copy_from_slice(&block.0[..8]);
    let key = u64::from_le_bytes(key);
    holders
        .iter()
        .copied()
        .max_by_key(|&node| (mix(key ^ mix(node)), std::cmp::Reverse(node)))
}

/// splitmix64's finalizer: a block name's bits and a node id scrambled into a fair score.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A task waiting for `node` because its blocks are warm there; counted while it waits.
struct Wanting<'a> {
    board: &'a LoadBoard,
    node: NodeId,
}

impl<'a> Wanting<'a> {
    fn new(board: &'a LoadBoard, node: NodeId) -> Self {
        *board
            .wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_default() += 1;
        Self { board, node }
    }
}

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        let mut wanted = self.board.wanted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = wanted.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                wanted.remove(&self.node);
            }
        }
        drop(wanted);
        // Tasks that left this node alone for it may take it now.
        self.board.freed.notify_waiters();
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
            taken.push(board.take(1, &holders, &all, None, wait).await);
        }
        for id in holders {
            assert_eq!(
                board.load(id),
                2,
                "six tasks over three holders with two slots each"
            );
        }
        assert!(taken.iter().all(|s| s.local));
        let spilled = board.take(1, &holders, &all, None, wait).await;
        assert_eq!((spilled.node, spilled.local), (4, false));
        drop(taken.pop());
        let back = board.take(1, &holders, &all, None, wait).await;
        assert!(back.local, "a freed holder slot is preferred again");
    }

    #[tokio::test]
    async fn another_job_gets_one_task_onto_a_full_node() {
        let board = LoadBoard::new(1);
        let wait = Duration::from_millis(10);
        let _busy = board.take(1, &[1], &[1], None, wait).await;
        let other = tokio::time::timeout(
            Duration::from_secs(5),
            board.take(2, &[1], &[1], None, wait),
        )
        .await
        .expect("a job with nothing on the node is not held back");
        assert_eq!(other.node, 1);
        let third = tokio::time::timeout(
            Duration::from_millis(50),
            board.take(2, &[1], &[1], None, wait),
        )
        .await;
        assert!(
            third.is_err(),
            "but only one: the node is full for job 2 now"
        );
    }

    #[test]
    fn coordinators_with_no_history_agree_on_a_blocks_holder_and_spread_blocks_evenly() {
        let (one, other) = (LoadBoard::new(2), LoadBoard::new(2));
        let holders = [4, 9, 17];
        let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
        for i in 0..3000u32 {
            let block = BlockHash::of(&i.to_le_bytes());
            let home = one.warm_holder(&[block], &holders).expect("a holder");
            assert_eq!(other.warm_holder(&[block], &holders), Some(home));
            *per_node.entry(home).or_default() += 1;
            // A node leaving moves only its own blocks.
            let without_9 = home_holder(&block, &[4, 17]).expect("a holder");
            if home != 9 {
                assert_eq!(without_9, home);
            }
        }
        assert_eq!(per_node.len(), 3);
        for (node, n) in per_node {
            assert!(
                (900..=1100).contains(&n),
                "node {node} is home to {n} of 3000"
            );
        }
    }

    #[tokio::test]
    async fn a_task_goes_to_its_warm_holder_and_others_leave_that_holder_to_it() {
        let board = LoadBoard::new(1);
        let (a, b) = (BlockHash::of(b"a"), BlockHash::of(b"b"));
        let holders = [1, 2, 3];
        let wait = Duration::from_secs(5);
        assert_eq!(
            board.warm_holder(&[a], &holders),
            home_holder(&a, &holders),
            "with no history, the block's home"
        );
        board.scanned([a], 2);
        board.scanned([b], 3);
        assert_eq!(board.warm_holder(&[a], &holders), Some(2));
        assert_eq!(
            board.warm_holder(&[a], &[1, 3]),
            home_holder(&a, &[1, 3]),
            "only a live holder counts"
        );
        assert_eq!(
            board.warm_holder(&[a, b, b], &holders),
            Some(3),
            "most of a batch's blocks"
        );

        // Free holders: the warm one, though not the least busy by the count of placements.
        let first = board.take(1, &holders, &holders, Some(3), wait).await;
        assert_eq!(first.node, 3);
        drop(first);

        // Every holder full (two slots each). A task warm on 3 waits for it, and a task of
        // the same job with nothing warm leaves node 3 to it when a slot there frees.
        let board = LoadBoard::new(2);
        let mut full: Vec<Slot> = Vec::new();
        for node in holders {
            for _ in 0..2 {
                full.push(board.take(1, &[node], &[node], None, wait).await);
            }
        }
        let warm_task = board.take(1, &holders, &holders, Some(3), wait);
        let cold_task = board.take(1, &holders, &holders, None, wait);
        tokio::pin!(warm_task, cold_task);
        let short = Duration::from_millis(20);
        assert!(tokio::time::timeout(short, &mut warm_task).await.is_err());
        assert!(tokio::time::timeout(short, &mut cold_task).await.is_err());
        drop(full.pop()); // a slot on node 3 frees
        assert!(
            tokio::time::timeout(short, &mut cold_task).await.is_err(),
            "node 3 is left to the task warm there"
        );
        let warm_slot = warm_task.await;
        assert_eq!(warm_slot.node, 3);
        drop(full.remove(0)); // a slot on node 1 frees
        let cold_slot = cold_task.await;
        assert_eq!(cold_slot.node, 1);

        // Another job, with nothing on any node, is not kept off a node others want.
        let waits_for_3 = board.take(1, &holders, &holders, Some(3), wait);
        tokio::pin!(waits_for_3);
        assert!(tokio::time::timeout(short, &mut waits_for_3).await.is_err());
        let other_job = tokio::time::timeout(short, board.take(2, &[3], &[3], None, wait))
            .await
            .expect("a new job takes its one task beyond the slots on node 3");
        assert_eq!(other_job.node, 3);
        drop(other_job);
        drop(warm_slot);
        assert_eq!(waits_for_3.await.node, 3);
        drop((full, cold_slot));

        // A task whose warm holder is busy takes a free holder nobody waits for: a hot block
        // still spreads over its holders.
        let _on_2 = [
            board.take(1, &[2], &[2], None, wait).await,
            board.take(1, &[2], &[2], None, wait).await,
        ];
        let spread = tokio::time::timeout(short, board.take(1, &holders, &holders, Some(2), wait))
            .await
            .expect("a free holder is taken at once");
        assert_ne!(spread.node, 2);

        // And a warm holder busier than another holder is passed over: the least busy first.
        drop((spread, _on_2));
        let _on_3 = board.take(1, &[3], &[3], None, wait).await;
        let least_busy = board.take(2, &holders, &holders, Some(3), wait).await;
        assert_ne!(least_busy.node, 3);
    }
}
