//! Memory a node's query work may hold, all tasks together. Each task has its own limit (its
//! `FairSpillPool`, past which it spills), but many tasks and many coordinators' final stages
//! run at once: [`NodeMemory`] is the budget they share, so concurrent queries cannot add up
//! past what the node has. A reservation that would exceed it fails like one past the task's
//! own limit (operators that can spill do; others fail their query with a clear error).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The memory budget of one node's query work.
#[derive(Debug)]
pub struct NodeMemory {
    limit: usize,
    used: AtomicUsize,
}

impl NodeMemory {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved by all tasks now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// `bytes` of the budget for work outside DataFusion's pools (a graph task's kernel),
    /// given back when the reservation drops; `None` when the node has not that much left.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<NodeReservation> {
        self.try_take(bytes).then(|| NodeReservation {
            node: self.clone(),
            bytes,
        })
    }

    pub(crate) fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    pub(crate) fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(crate) fn give(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Bytes taken from a [`NodeMemory`] until dropped.
#[derive(Debug)]
pub struct NodeReservation {
    node: Arc<NodeMemory>,
    bytes: usize,
}

impl Drop for NodeReservation {
    fn drop(&mut self) {
        self.node.give(self.bytes);
    }
}

/// A task's pool: its own fair limit, within what the node has left.
#[derive(Debug)]
pub(crate) struct SharedPool {
    task: FairSpillPool,
    node: Arc<NodeMemory>,
}

impl SharedPool {
    pub(crate) fn new(task_bytes: usize, node: Arc<NodeMemory>) -> Self {
        Self {
            task: FairSpillPool::new(task_bytes),
            node,
        }
    }
}

impl fmt::Display for SharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} within the node's {} bytes for queries",
            self.task, self.node.limit
        )
    }
}

impl MemoryPool for SharedPool {
    fn name(&self) -> &str {
        "tern-task"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.task.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.task.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.node.take(additional);
        self.task.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.node.give(shrink);
        self.task.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if !self.node.try_take(additional) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{} wanted {additional} more bytes, but the node's memory for queries ({} of {} \
                 bytes in use) is taken by other work; retry when it is less busy",
                reservation.consumer().name(),
                self.node.used(),
                self.node.limit
            )));
        }
        self.task
            .try_grow(reservation, additional)
            .inspect_err(|_| self.node.give(additional))
    }

    fn reserved(&self) -> usize {
        self.task.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.task.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks each within their own limit cannot together pass the node's.
    #[test]
    fn tasks_share_the_nodes_budget() {
        let node = NodeMemory::new(100);
        let a: Arc<dyn MemoryPool> = Arc::new(SharedPool::new(80, node.clone()));
        let b: Arc<dyn MemoryPool> = Arc::new(SharedPool::new(80, node.clone()));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(70).unwrap();
        let err = rb.try_grow(40).unwrap_err().to_string();
        assert!(err.contains("node's memory for queries"), "{err}");
        assert_eq!(node.used(), 70);
        rb.try_grow(30).unwrap();
        assert!(ra.try_grow(20).is_err(), "past both limits");
        drop(ra);
        assert_eq!(node.used(), 30);
        rb.try_grow(50).unwrap();
        assert_eq!(node.used(), 80);
    }
}
