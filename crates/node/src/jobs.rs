//! Work a node keeps count of by job and by client: the turns each client's queries take on
//! this coordinator ([`ClientJobs`]), and the task batches running for each job
//! ([`RunningJobs`]), so a job's end stops them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::Caller;

/// Queries one client may have running at once on one coordinator; more wait their turn.
pub(crate) const QUERIES_PER_CLIENT: usize = 32;
/// How long a query waits for its client's turn before it is refused.
const CLIENT_TURN_WAIT: Duration = Duration::from_secs(120);

/// Turns of each client's queries on this coordinator (soft state: one small entry per
/// certificate name that sent a query).
#[derive(Default)]
pub(crate) struct ClientJobs(Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>);

impl ClientJobs {
    /// Wait for a turn of `caller`'s, of which it has [`QUERIES_PER_CLIENT`]; refused after
    /// [`CLIENT_TURN_WAIT`]. Held until dropped.
    pub(crate) async fn enter(
        &self,
        caller: &Caller,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        // By name: one client's certificates with different roles share its turns.
        let client = match caller {
            Caller::Client { name, .. } => format!("client {name:?}"),
            node => node.to_string(),
        };
        let turns = {
            let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Clients with no query running are forgotten now and then.
            if all.len() > 1024 {
                all.retain(|_, t| t.available_permits() < QUERIES_PER_CLIENT);
            }
            all.entry(client.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(QUERIES_PER_CLIENT)))
                .clone()
        };
        match tokio::time::timeout(CLIENT_TURN_WAIT, turns.acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(format!(
                "{client} has run {QUERIES_PER_CLIENT} queries on this node for {} s and this one \
                 could not start; wait for some to end",
                CLIENT_TURN_WAIT.as_secs()
            )),
        }
    }
}

/// Task batches running on this node, by job, so that the job's end stops them: a
/// coordinator that gave up on a query (its client went away, its deadline passed) releases
/// the job, and tasks still computing for it are aborted instead of running to their end. A
/// batch that waited for a slot while its job was released is not started at all.
#[derive(Default)]
pub(crate) struct RunningJobs {
    state: Mutex<Jobs>,
    next: AtomicU64,
}

#[derive(Default)]
struct Jobs {
    running: BTreeMap<u64, BTreeMap<u64, tokio::task::AbortHandle>>,
    /// Jobs released lately, and when (forgotten after [`RELEASED_KEPT`]).
    released: BTreeMap<u64, Instant>,
}

/// How long a released job is remembered: longer than any batch waits for a slot.
const RELEASED_KEPT: Duration = Duration::from_secs(30 * 60);

impl RunningJobs {
    /// Count a batch of `job` as running; `None` if the job was released already.
    pub(crate) fn add(&self, job: u64, work: tokio::task::AbortHandle) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.released.contains_key(&job) {
            work.abort();
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        state.running.entry(job).or_default().insert(id, work);
        Some(id)
    }

    pub(crate) fn remove(&self, job: u64, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = state.running.get_mut(&job) {
            running.remove(&id);
            if running.is_empty() {
                state.running.remove(&job);
            }
        }
    }

    /// The job ended: abort every batch of it still running, and refuse any that arrives
    /// later. Returns how many were aborted.
    pub(crate) fn release(&self, job: u64, now: Instant) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .released
            .retain(|_, at| now.saturating_duration_since(*at) < RELEASED_KEPT);
        state.released.insert(job, now);
        let running = state.running.remove(&job).unwrap_or_default();
        for work in running.values() {
            work.abort();
        }
        running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_job_stops_its_batches_and_starts_no_more() {
        let jobs = RunningJobs::default();
        let running = tokio::spawn(std::future::pending::<()>());
        let id = jobs.add(7, running.abort_handle()).expect("not released");
        assert_eq!(jobs.release(7, Instant::now()), 1);
        assert!(running.await.unwrap_err().is_cancelled());
        jobs.remove(7, id);
        let late = tokio::spawn(std::future::pending::<()>());
        assert_eq!(
            jobs.add(7, late.abort_handle()),
            None,
            "released before it started"
        );
        assert!(late.await.unwrap_err().is_cancelled());
        let other = tokio::spawn(async {});
        assert!(jobs.add(8, other.abort_handle()).is_some());
    }
}
