//! Work a node keeps count of by job and by client: the turns each client's queries take on
//! this coordinator ([`ClientJobs`]), the task batches running for each job
//! ([`RunningJobs`]), so a job's end stops them, and the jobs it coordinates
//! ([`CoordinatedJobs`]: what `tern jobs` lists and `tern cancel` stops).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::{Caller, ClientRole, ErrorKind, ErrorReply, JobInfo, JobState, NodeId};

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

    /// Whether job `job` was released (lately).
    pub(crate) fn is_released(&self, job: u64) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.released.contains_key(&job)
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

/// Ended jobs a coordinator still lists.
const RECENT_JOBS: usize = 50;

/// The jobs this node coordinates, and the last [`RECENT_JOBS`] it ended.
#[derive(Default)]
pub(crate) struct CoordinatedJobs {
    state: Mutex<Coordinated>,
}

#[derive(Default)]
struct Coordinated {
    running: BTreeMap<u64, Arc<JobEntry>>,
    recent: std::collections::VecDeque<JobInfo>,
    /// Graph jobs whose outputs are kept for their client's later graphs, by the client.
    keeping: BTreeMap<u64, String>,
}

/// One coordinated job: its row in `tern jobs` and the signal that cancels it.
pub(crate) struct JobEntry {
    info: Mutex<JobInfo>,
    started: Instant,
    /// The certificate name of the client that started it.
    owner: String,
    cancel: tokio::sync::Notify,
    cancelled: std::sync::atomic::AtomicBool,
}

impl JobEntry {
    pub(crate) fn progress(&self, done: u64, total: u64) {
        let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        info.done = done;
        info.total = total;
    }

    /// Resolves once the job is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.cancel.notified();
            if self.cancelled.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// The name a caller is known by in jobs (its certificate's).
fn caller_name(caller: &Caller) -> String {
    match caller {
        Caller::Client { name, .. } => name.clone(),
        node => node.to_string(),
    }
}

impl CoordinatedJobs {
    /// Count job `job` of `caller` as running here until [`Self::end`].
    pub(crate) fn start(
        &self,
        job: u64,
        kind: &str,
        what: &str,
        caller: &Caller,
        coordinator: NodeId,
        started_ms: u64,
    ) -> Arc<JobEntry> {
        let entry = Arc::new(JobEntry {
            info: Mutex::new(JobInfo {
                job,
                kind: kind.into(),
                what: what.chars().take(200).collect(),
                client: caller_name(caller),
                coordinator,
                started_ms,
                millis: 0,
                done: 0,
                total: 0,
                running_on: BTreeMap::new(),
                state: JobState::Running,
            }),
            started: Instant::now(),
            owner: caller_name(caller),
            cancel: tokio::sync::Notify::new(),
            cancelled: std::sync::atomic::AtomicBool::new(false),
        });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.running.insert(job, entry.clone());
        entry
    }

    /// Job `job` keeps its outputs for `caller` until [`Self::let_go`].
    pub(crate) fn keep_for(&self, job: u64, caller: &Caller) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.keeping.insert(job, caller_name(caller));
    }

    /// Job `job`'s client let its kept outputs go: a job listed as kept is finished.
    pub(crate) fn let_go(&self, job: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.keeping.remove(&job);
        for info in state.recent.iter_mut().filter(|i| i.job == job) {
            if info.state == JobState::Kept {
                info.state = JobState::Finished;
            }
        }
    }

    /// The jobs this node keeps outputs of for `caller`: the only ones its graphs may name as
    /// where an input is kept (another client's are not its to read).
    pub(crate) fn kept_for(&self, caller: &Caller) -> std::collections::BTreeSet<u64> {
        let name = caller_name(caller);
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .keeping
            .iter()
            .filter(|(_, owner)| **owner == name)
            .map(|(job, _)| *job)
            .collect()
    }

    /// The job ended as `how`: it moves to the recent ones.
    pub(crate) fn end(&self, job: u64, how: JobState) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.running.remove(&job) else {
            return;
        };
        let mut info = entry.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        info.millis = entry.started.elapsed().as_millis() as u64;
        info.state = if entry.cancelled.load(Ordering::SeqCst) {
            JobState::Cancelled
        } else {
            how
        };
        info.running_on.clear();
        state.recent.push_back(info);
        while state.recent.len() > RECENT_JOBS {
            state.recent.pop_front();
        }
    }

    /// Every job running here, with `running_on(job)` (tasks in flight per node), then the
    /// recent ones, newest first.
    pub(crate) fn list(&self, running_on: impl Fn(u64) -> BTreeMap<NodeId, u64>) -> Vec<JobInfo> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<JobInfo> = state
            .running
            .values()
            .map(|entry| {
                let mut info = entry.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
                info.millis = entry.started.elapsed().as_millis() as u64;
                info.running_on = running_on(info.job);
                info
            })
            .collect();
        out.extend(state.recent.iter().rev().cloned());
        out
    }

    /// Cancel job `job` for `caller`: its own client or an admin.
    pub(crate) fn cancel(&self, job: u64, caller: &Caller) -> Result<(), ErrorReply> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.running.get(&job) else {
            return Err(ErrorReply {
                kind: ErrorKind::NotFound,
                message: format!("no job {job:x} is running on this node"),
            });
        };
        let admin = matches!(
            caller,
            Caller::Client {
                role: Some(ClientRole::Admin),
                ..
            }
        );
        if !admin && entry.owner != caller_name(caller) {
            return Err(ErrorReply {
                kind: ErrorKind::Forbidden,
                message: format!(
                    "job {job:x} belongs to {:?}; only it or an admin may cancel it",
                    entry.owner
                ),
            });
        }
        entry.cancelled.store(true, Ordering::SeqCst);
        entry.cancel.notify_waiters();
        Ok(())
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

    /// A client's graphs may read only the outputs kept for it: another client naming them
    /// gets them made again instead.
    #[test]
    fn kept_outputs_are_their_clients_only() {
        let jobs = CoordinatedJobs::default();
        let client = |name: &str| Caller::Client {
            name: name.into(),
            role: Some(ClientRole::Read),
        };
        jobs.keep_for(5, &client("alice"));
        jobs.keep_for(6, &client("bob"));
        assert_eq!(jobs.kept_for(&client("alice")), [5].into());
        assert_eq!(jobs.kept_for(&client("bob")), [6].into());
        let entry = jobs.start(5, "graph", "3 tasks", &client("alice"), 1, 0);
        drop(entry);
        jobs.end(5, JobState::Kept);
        assert_eq!(jobs.list(|_| BTreeMap::new())[0].state, JobState::Kept);
        jobs.let_go(5);
        assert!(jobs.kept_for(&client("alice")).is_empty());
        assert_eq!(jobs.list(|_| BTreeMap::new())[0].state, JobState::Finished);
    }

    #[tokio::test]
    async fn a_job_is_cancelled_by_its_client_or_an_admin_only() {
        let jobs = CoordinatedJobs::default();
        let alice = Caller::Client {
            name: "alice".into(),
            role: Some(ClientRole::Read),
        };
        let bob = Caller::Client {
            name: "bob".into(),
            role: Some(ClientRole::Write),
        };
        let entry = jobs.start(9, "graph", "3 tasks", &alice, 1, 0);
        entry.progress(1, 3);
        assert_eq!(jobs.list(|_| BTreeMap::new())[0].done, 1);
        assert_eq!(jobs.cancel(9, &bob).unwrap_err().kind, ErrorKind::Forbidden);
        assert_eq!(
            jobs.cancel(8, &alice).unwrap_err().kind,
            ErrorKind::NotFound
        );
        jobs.cancel(9, &alice).unwrap();
        tokio::time::timeout(Duration::from_secs(5), entry.cancelled())
            .await
            .expect("cancelled");
        jobs.end(9, JobState::Finished);
        let listed = jobs.list(|_| BTreeMap::new());
        assert_eq!(listed[0].state, JobState::Cancelled);
    }
}
