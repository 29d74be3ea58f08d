//! A node's task slots, shared fairly between the jobs that send it tasks.
//!
//! Coordinators keep several requests in flight per slot, so a node's queue fills with one
//! large job's tasks; served in arrival order, a small query that arrives next waits behind
//! all of them. When a slot frees, it goes instead to the waiting job with the fewest tasks
//! running here, then the job served longest ago, then the oldest request), so concurrent jobs
//! take turns at the node's slots whichever nodes coordinate them, and one job alone still
//! uses them all.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Held while a task (or a batch of tasks) of `job` runs; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<FairSlots>,
    job: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.release(self.job);
        self.slots.dispatch(&mut state);
    }
}

pub(crate) struct FairSlots {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: usize,
    running: BTreeMap<u64, usize>,
    /// Per job, its waiting requests in arrival order (sequence number, where to hand the slot).
    waiting: BTreeMap<u64, VecDeque<(u64, oneshot::Sender<Slot>)>>,
    arrivals: u64,
    /// When each job present was last given a slot (a count of grants).
    served: BTreeMap<u64, u64>,
    grants: u64,
}

impl State {
    fn grant(&mut self, job: u64) {
        self.free -= 1;
        *self.running.entry(job).or_default() += 1;
        self.grants += 1;
        self.served.insert(job, self.grants);
    }

    fn release(&mut self, job: u64) {
        self.free += 1;
        if let Some(n) = self.running.get_mut(&job) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&job);
            }
        }
        if !self.running.contains_key(&job) && !self.waiting.contains_key(&job) {
            self.served.remove(&job);
        }
    }

    /// The waiting job to serve next: fewest running here, then served longest ago, then the
    /// oldest request.
    fn next_job(&self) -> Option<u64> {
        self.waiting
            .iter()
            .filter_map(|(job, queue)| queue.front().map(|(seq, _)| (*job, *seq)))
            .min_by_key(|(job, seq)| {
                (
                    self.running.get(job).copied().unwrap_or(0),
                    self.served.get(job).copied().unwrap_or(0),
                    *seq,
                )
            })
            .map(|(job, _)| job)
    }
}

impl FairSlots {
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots.max(1),
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot for a task of `job` (`None` only if the slots are gone).
    pub(crate) async fn acquire(self: &Arc<Self>, job: u64) -> Option<Slot> {
        let receiver = {
            let mut state = self.lock();
            if state.free > 0 && state.waiting.is_empty() {
                state.grant(job);
                return Some(Slot {
                    slots: self.clone(),
                    job,
                });
            }
            let (sender, receiver) = oneshot::channel();
            state.arrivals += 1;
            let seq = state.arrivals;
            state
                .waiting
                .entry(job)
                .or_default()
                .push_back((seq, sender));
            self.dispatch(&mut state);
            receiver
        };
        // The sender lives in the queue until a slot is handed over.
        receiver.await.ok()
    }

    /// Hand free slots to waiting jobs, fairest first. A waiter that gave up (its request was
    /// dropped) is skipped without using a slot.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        while state.free > 0 {
            let Some(job) = state.next_job() else { return };
            let Some(queue) = state.waiting.get_mut(&job) else {
                return;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&job);
            }
            let Some((_, sender)) = next else { continue };
            state.grant(job);
            let slot = Slot {
                slots: self.clone(),
                job,
            };
            if let Err(slot) = sender.send(slot) {
                // Undo here: dropping the slot would take the lock we hold.
                std::mem::forget(slot);
                state.release(job);
            }
        }
    }

    /// Tasks of each job running now (for tests and status).
    #[cfg(test)]
    fn running(&self) -> BTreeMap<u64, usize> {
        self.lock().running.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slot, held by job 1; job 1 queues ten more requests, then job 2 one: job 2's runs
    /// next (job 1 was just served), not eleventh.
    #[tokio::test]
    async fn a_small_job_is_not_queued_behind_a_large_one() {
        let slots = FairSlots::new(1);
        let first = slots.acquire(1).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, job) in (0..10).map(|_| 1u64).chain([2]).enumerate() {
            let (slots, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = slots.acquire(job).await;
                order.lock().unwrap().push((job, i));
                tokio::task::yield_now().await;
            }));
            // Queue them in this order.
            tokio::task::yield_now().await;
        }
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 11);
        assert_eq!(order[0].0, 2, "job 2 goes next: {order:?}");
        let job1: Vec<usize> = order.iter().filter(|o| o.0 == 1).map(|o| o.1).collect();
        assert_eq!(job1, (0..10).collect::<Vec<_>>(), "job 1's in order");
        assert!(slots.running().is_empty());
    }

    /// Two jobs with work waiting share four slots two and two.
    #[tokio::test]
    async fn concurrent_jobs_share_the_slots_evenly() {
        let slots = FairSlots::new(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slots.acquire(1).await.unwrap());
        }
        let mut waiting = Vec::new();
        for job in [1u64, 1, 1, 1, 2, 2, 2, 2] {
            let slots = slots.clone();
            waiting.push(tokio::spawn(async move { slots.acquire(job).await }));
            tokio::task::yield_now().await;
        }
        drop(held);
        let running = slots.running();
        assert_eq!(running.get(&1), Some(&2), "{running:?}");
        assert_eq!(running.get(&2), Some(&2), "{running:?}");
        for w in waiting {
            w.abort();
        }
    }

    /// A waiter that gives up does not take a slot with it.
    #[tokio::test]
    async fn a_dropped_waiter_frees_its_turn() {
        let slots = FairSlots::new(1);
        let held = slots.acquire(1).await.unwrap();
        let gave_up = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(2).await })
        };
        tokio::task::yield_now().await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), slots.acquire(3))
            .await
            .expect("the slot is free again")
            .unwrap();
        assert_eq!(slots.running().get(&3), Some(&1));
        drop(again);
    }
}
