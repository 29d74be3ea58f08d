//! Work a node keeps count of by job and by client: the turns each client's queries take on
//! this coordinator ([`ClientJobs`]), and the task batches running for each job
//! ([`RunningJobs`]), so a job's end stops them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        let client = caller.to_string();
        let turns = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(client.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(QUERIES_PER_CLIENT)))
            .clone();
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
/// the job, and tasks still computing for it are aborted instead of running to their end.
#[derive(Default)]
pub(crate) struct RunningJobs {
    by_job: Mutex<BTreeMap<u64, BTreeMap<u64, tokio::task::AbortHandle>>>,
    next: AtomicU64,
}

impl RunningJobs {
    pub(crate) fn add(&self, job: u64, work: tokio::task::AbortHandle) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job)
            .or_default()
            .insert(id, work);
        id
    }

    pub(crate) fn remove(&self, job: u64, id: u64) {
        let mut by_job = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = by_job.get_mut(&job) {
            running.remove(&id);
            if running.is_empty() {
                by_job.remove(&job);
            }
        }
    }

    /// Abort every batch of `job` still running; returns how many.
    pub(crate) fn abort(&self, job: u64) -> usize {
        let running = self
            .by_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job)
            .unwrap_or_default();
        for work in running.values() {
            work.abort();
        }
        running.len()
    }
}
