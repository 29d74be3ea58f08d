//! Futures in Dask's manner: [`Client::submit`] hands a graph to the cluster and returns at
//! once with a [`TaskFuture`] per wanted task, each resolving as its task ends (outputs are
//! streamed back as they are fetched, not at the end); [`gather`], [`wait`] and
//! [`as_completed`] work over many. [`TaskFuture::cancel`] stops the whole submission on its
//! coordinator.
//!
//! The futures of one submission share its job: the outputs it kept on the nodes are released
//! when the job ends, so a later submission cannot read them (Dask's `persist` across
//! submissions is not there yet); a graph that needs an earlier answer names the task again
//! (same key, same work) or stores the answer as a dataset.

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_proto::{Datum, Graph, TaskFailure, TaskKey, TaskOutcome};
use tokio::sync::watch;

use crate::{Client, ClientError, GraphUpdate};

/// Why a future has no value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FutureError {
    /// Its task (or one it reads) failed.
    #[error("task {key} failed: {failure}")]
    Task { key: TaskKey, failure: TaskFailure },
    /// The submission as a whole failed (it could not run, its coordinator went away, it
    /// was cancelled).
    #[error("{0}")]
    Job(String),
}

type Slot = Option<Result<Datum, FutureError>>;

/// One wanted task of a submitted graph.
#[derive(Clone)]
pub struct TaskFuture {
    key: TaskKey,
    value: watch::Receiver<Slot>,
    job: Arc<Job>,
}

/// What the futures of one submission share.
struct Job {
    client: Arc<Client>,
    id: watch::Receiver<Option<u64>>,
    driver: tokio::task::AbortHandle,
}

impl Drop for Job {
    /// The last future of a submission gone: nobody wants its answers, so it stops (the
    /// coordinator notices the closed stream and releases what it kept).
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl TaskFuture {
    pub fn key(&self) -> &TaskKey {
        &self.key
    }

    /// Whether the task has ended (done or failed).
    pub fn done(&self) -> bool {
        self.value.borrow().is_some()
    }

    /// Wait for the task's value.
    pub async fn result(&self) -> Result<Datum, FutureError> {
        let mut value = self.value.clone();
        match value.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().expect("waited for a value"),
            Err(_) => Err(FutureError::Job("the submission stopped".into())),
        }
    }

    /// Stop the submission this future belongs to (all its tasks), on its coordinator.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        let mut id = self.job.id.clone();
        let job = match id.wait_for(|j| j.is_some()).await {
            Ok(j) => j.expect("waited for the id"),
            Err(_) => return Ok(()),
        };
        if self.done() {
            return Ok(());
        }
        self.job.client.cancel_job(job).await
    }
}

impl std::fmt::Debug for TaskFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TaskFuture({}, {})",
            self.key,
            if self.done() { "done" } else { "pending" }
        )
    }
}

impl Client {
    /// Submit `graph` and return at once a future for each wanted task (each task when it
    /// names none), in the order wanted.
    pub fn submit(self: &Arc<Self>, graph: Graph) -> Vec<TaskFuture> {
        let wanted: Vec<TaskKey> = if graph.wanted.is_empty() {
            let mut seen = std::collections::BTreeSet::new();
            graph
                .tasks
                .iter()
                .filter(|t| seen.insert(t.key.clone()))
                .map(|t| t.key.clone())
                .collect()
        } else {
            graph.wanted.clone()
        };
        let mut senders: BTreeMap<TaskKey, watch::Sender<Slot>> = BTreeMap::new();
        let mut receivers = Vec::with_capacity(wanted.len());
        for key in &wanted {
            let rx = senders
                .entry(key.clone())
                .or_insert_with(|| watch::channel(None).0)
                .subscribe();
            receivers.push((key.clone(), rx));
        }
        let (id_tx, id_rx) = watch::channel(None);
        let client = self.clone();
        let driver = tokio::spawn(async move {
            let fail_all = |senders: &BTreeMap<TaskKey, watch::Sender<Slot>>, why: String| {
                for tx in senders.values() {
                    tx.send_if_modified(|v| {
                        if v.is_none() {
                            *v = Some(Err(FutureError::Job(why.clone())));
                            true
                        } else {
                            false
                        }
                    });
                }
            };
            let mut stream = match client.graph_stream(&graph).await {
                Ok(stream) => stream,
                Err(e) => return fail_all(&senders, e.to_string()),
            };
            let _ = id_tx.send(Some(stream.job));
            loop {
                match stream.next_update().await {
                    Ok(Some(GraphUpdate::Output { key, outcome })) => {
                        if let Some(tx) = senders.get(&key) {
                            let value = match outcome {
                                TaskOutcome::Done(datum) => Ok(datum),
                                TaskOutcome::Failed(failure) => {
                                    Err(FutureError::Task { key, failure })
                                }
                            };
                            let _ = tx.send(Some(value));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return fail_all(&senders, "the graph ended without this task".into());
                    }
                    Err(e) => return fail_all(&senders, e.to_string()),
                }
            }
        });
        let job = Arc::new(Job {
            client: self.clone(),
            id: id_rx,
            driver: driver.abort_handle(),
        });
        receivers
            .into_iter()
            .map(|(key, value)| TaskFuture {
                key,
                value,
                job: job.clone(),
            })
            .collect()
    }
}

/// Every future's value, in order (Dask's `gather`).
pub async fn gather(futures: &[TaskFuture]) -> Vec<Result<Datum, FutureError>> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.result().await);
    }
    out
}

/// Wait until every future has ended (Dask's `wait`).
pub async fn wait(futures: &[TaskFuture]) {
    for f in futures {
        let _ = f.result().await;
    }
}

/// The futures in the order they end (Dask's `as_completed`).
pub fn as_completed(
    futures: Vec<TaskFuture>,
) -> impl futures::Stream<Item = (TaskFuture, Result<Datum, FutureError>)> {
    futures::stream::FuturesUnordered::from_iter(futures.into_iter().map(|f| async move {
        let value = f.result().await;
        (f, value)
    }))
}
