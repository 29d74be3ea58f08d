//! Futures in Dask's manner: [`Client::submit`] hands a graph to the cluster and returns at
//! once with a [`TaskFuture`] per wanted task, each resolving as its task ends (outputs are
//! streamed back as they are fetched, not at the end); [`gather`], [`wait`] and
//! [`as_completed`] work over many. [`TaskFuture::cancel`] stops the whole submission on its
//! coordinator.
//!
//! As in Dask, a submission's wanted outputs stay on the nodes that made them while any of
//! its futures lives (its coordinator holds them while this client holds the submission's
//! stream open; a client that goes away lets them go). A later graph of this client that
//! reads one of those keys (`Arg::Output(future.key())`) reads it where it is kept instead
//! of computing it again: the client adds the tasks that make it (so a lost output is made
//! again) and where it is kept ([`KeptRegistry`]). A graph reading a future that is still
//! pending is sent once that future has ended, as Dask runs a task after its inputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use tern_proto::{
    Datum, Graph, KeptOutput, Submission, TaskFailure, TaskKey, TaskOutcome, Transport,
};
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

type Canceller =
    Arc<dyn Fn(u64) -> futures::future::BoxFuture<'static, Result<(), ClientError>> + Send + Sync>;

/// What the futures of one submission share.
struct Job {
    /// Cancels the submission on its coordinator (the client, whatever its transport).
    cancel: Canceller,
    id: watch::Receiver<Option<u64>>,
    _hold: Arc<Hold>,
}

/// Keeps a submission's stream open, and so its outputs kept: its futures hold it, and so do
/// later submissions while they read those outputs.
pub(crate) struct Hold {
    driver: tokio::task::AbortHandle,
}

impl Drop for Hold {
    /// Nothing holds the submission any more: nobody wants its answers, so it stops (the
    /// coordinator notices the closed stream and releases what it kept).
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The outputs this client's live submissions want, by key: the graph that makes them (their
/// lineage), their value as it comes, and once their coordinator keeps them, where, with the
/// submission holding them.
#[derive(Default)]
pub(crate) struct KeptRegistry {
    entries: Mutex<HashMap<TaskKey, KeptEntry>>,
    /// Names submissions, so one forgets only its own entries.
    submissions: std::sync::atomic::AtomicU64,
}

struct KeptEntry {
    /// Where the output is kept, once its coordinator said so.
    at: Option<KeptOutput>,
    lineage: Arc<Graph>,
    hold: Weak<Hold>,
    value: watch::Receiver<Slot>,
    submission: u64,
}

impl KeptRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskKey, KeptEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until every output `graph` reads from a pending submission of this client has
    /// ended (as Dask runs a task after the futures it reads), so it is read where it is
    /// kept rather than made twice.
    pub(crate) async fn wait_for_inputs(&self, graph: &Graph) {
        let pending: Vec<watch::Receiver<Slot>> = {
            let entries = self.lock();
            let made: HashSet<&TaskKey> = graph.tasks.iter().map(|t| &t.key).collect();
            graph
                .tasks
                .iter()
                .flat_map(|t| t.upstream())
                .filter(|k| !made.contains(k))
                .filter_map(|k| entries.get(k))
                .filter(|e| e.at.is_none() && e.value.borrow().is_none())
                .map(|e| e.value.clone())
                .collect()
        };
        for mut value in pending {
            // A submission that stops drops its sender: nothing more to wait for.
            let _ = value.wait_for(|v| v.is_some()).await;
        }
    }

    /// A new submission wanting `keys` (with their value receivers), made by `graph`: its
    /// number, for [`KeptRegistry::forget`].
    fn begin(&self, graph: &Arc<Graph>, keys: &[(TaskKey, watch::Receiver<Slot>)]) -> u64 {
        let submission = self
            .submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = self.lock();
        for (key, value) in keys {
            entries.insert(
                key.clone(),
                KeptEntry {
                    at: None,
                    lineage: graph.clone(),
                    hold: Weak::new(),
                    value: value.clone(),
                    submission,
                },
            );
        }
        submission
    }

    /// `submission` was sent as `lineage` (its graph with what it reads from earlier ones).
    fn sent(&self, submission: u64, lineage: &Arc<Graph>, hold: &Weak<Hold>) {
        for entry in self.lock().values_mut() {
            if entry.submission == submission {
                entry.lineage = lineage.clone();
                entry.hold = hold.clone();
            }
        }
    }

    /// `graph` as it is sent: with the tasks that make the kept outputs it reads (when it
    /// does not have them), and where those are kept; and the holds that keep them while it
    /// runs.
    pub(crate) fn resolve(
        &self,
        mut graph: Graph,
        keep: bool,
        stay: bool,
    ) -> (Submission, Vec<Arc<Hold>>) {
        let entries = self.lock();
        if entries.is_empty() {
            let submission = Submission {
                graph,
                kept: Vec::new(),
                keep,
                stay,
            };
            return (submission, Vec::new());
        }
        let mut have: HashSet<TaskKey> = graph.tasks.iter().map(|t| t.key.clone()).collect();
        if graph.wanted.is_empty() {
            // Every task of its own is wanted, not the ones added below.
            let mut seen = HashSet::new();
            graph.wanted = graph
                .tasks
                .iter()
                .filter(|t| seen.insert(&t.key))
                .map(|t| t.key.clone())
                .collect();
        }
        // Keys read and not made here, each with the lineage it was met in (an input of a
        // task taken from an earlier graph is made by that graph, kept or not).
        let mut missing: Vec<(TaskKey, Option<&Arc<Graph>>)> = graph
            .tasks
            .iter()
            .flat_map(|t| t.upstream().cloned())
            .chain(graph.wanted.iter().cloned())
            .filter(|k| !have.contains(k))
            .map(|k| (k, None))
            .collect();
        // Each lineage graph's tasks by key, built when first needed.
        let mut lineages: HashMap<*const Graph, HashMap<&TaskKey, usize>> = HashMap::new();
        while let Some((key, met_in)) = missing.pop() {
            if have.contains(&key) {
                continue;
            }
            // Neither wanted by a submission nor made by the graph it was met in: the
            // coordinator names it.
            let Some(lineage) = entries.get(&key).map(|e| &e.lineage).or(met_in) else {
                continue;
            };
            let by_key = lineages.entry(Arc::as_ptr(lineage)).or_insert_with(|| {
                lineage
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (&t.key, i))
                    .collect()
            });
            if let Some(&i) = by_key.get(&key) {
                let task = lineage.tasks[i].clone();
                missing.extend(
                    task.upstream()
                        .filter(|k| !have.contains(*k))
                        .map(|k| (k.clone(), Some(lineage))),
                );
                have.insert(key);
                graph.tasks.push(task);
            }
        }
        let mut kept = Vec::new();
        let mut holds = Vec::new();
        for task in &graph.tasks {
            if let Some(entry) = entries.get(&task.key)
                && let Some(at) = &entry.at
                && let Some(hold) = entry.hold.upgrade()
            {
                kept.push(at.clone());
                holds.push(hold);
            }
        }
        (
            Submission {
                graph,
                kept,
                keep,
                stay,
            },
            holds,
        )
    }

    /// `submission`'s output `at.key` is kept at `at`.
    fn kept(&self, submission: u64, at: KeptOutput) {
        if let Some(entry) = self.lock().get_mut(&at.key)
            && entry.submission == submission
        {
            entry.at = Some(at);
        }
    }

    fn forget(&self, submission: u64) {
        self.lock().retain(|_, e| e.submission != submission);
    }
}

/// Forgets a submission's outputs when its driver ends (the stream closed or broke).
struct ForgetOnEnd {
    registry: Arc<KeptRegistry>,
    submission: u64,
}

impl Drop for ForgetOnEnd {
    fn drop(&mut self) {
        self.registry.forget(self.submission);
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
        (self.job.cancel)(job).await
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

impl<T: Transport> Client<T> {
    /// Submit `graph` and return at once a future for each wanted task (each task when it
    /// names none), in the order wanted. The wanted outputs stay kept on the cluster while a
    /// future of them lives; later graphs may read them by key (see the module docs).
    pub fn submit(self: &Arc<Self>, graph: Graph) -> Vec<TaskFuture> {
        self.submit_kept(graph, false)
    }

    /// Dask's `persist`: as [`Self::submit`], but the wanted outputs stay on the nodes that
    /// made them and are not sent here; each future resolves to `Datum::Value(Value::Null)`
    /// once its output is made (or to its failure). Later graphs read them by key.
    pub fn persist(self: &Arc<Self>, graph: Graph) -> Vec<TaskFuture> {
        self.submit_kept(graph, true)
    }

    fn submit_kept(self: &Arc<Self>, graph: Graph, stay: bool) -> Vec<TaskFuture> {
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
        let asked = Arc::new(graph);
        let number = self.kept.begin(&asked, &receivers);
        let (id_tx, id_rx) = watch::channel(None);
        let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<Weak<Hold>>();
        let client = self.clone();
        // Moved into the driver, so its entries go when the driver ends, even unpolled.
        let forget = ForgetOnEnd {
            registry: self.kept.clone(),
            submission: number,
        };
        let driver = tokio::spawn(async move {
            let _forget = forget;
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
            let Ok(hold) = hold_rx.await else {
                return;
            };
            client.kept.wait_for_inputs(&asked).await;
            let (submission, reads) = client.kept.resolve(Graph::clone(&asked), true, stay);
            drop(asked);
            // The outputs it reads stay kept until it has finished.
            let mut reads = Some(reads);
            let mut stream = match client.graph_stream_of(&submission).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "submission refused");
                    return fail_all(&senders, e.to_string());
                }
            };
            tracing::debug!(
                job = stream.job,
                coordinator = stream.coordinator(),
                "submitted"
            );
            let lineage = Arc::new(submission.graph);
            client.kept.sent(number, &lineage, &hold);
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
                    // An output an earlier submission keeps is that one's to hold.
                    Ok(Some(GraphUpdate::Kept(at))) if at.job == stream.job => {
                        client.kept.kept(number, at)
                    }
                    Ok(Some(GraphUpdate::Kept(_))) => {}
                    Ok(Some(GraphUpdate::Finished(_))) => {
                        reads.take();
                        fail_all(&senders, "the graph ended without this task".into());
                    }
                    Ok(Some(GraphUpdate::Progress { .. })) => {}
                    Ok(None) => {
                        return fail_all(&senders, "the graph ended without this task".into());
                    }
                    Err(e) => return fail_all(&senders, e.to_string()),
                }
            }
        });
        let hold = Arc::new(Hold {
            driver: driver.abort_handle(),
        });
        let _ = hold_tx.send(Arc::downgrade(&hold));
        let canceller: Canceller = {
            let client = self.clone();
            Arc::new(move |job| {
                let client = client.clone();
                Box::pin(async move { client.cancel_job(job).await })
            })
        };
        let job = Arc::new(Job {
            cancel: canceller,
            id: id_rx,
            _hold: hold,
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

impl<T: Transport> Client<T> {
    /// The node keeping `future`'s output, while it is kept (Dask's `who_has`).
    pub fn who_has(&self, future: &TaskFuture) -> Option<tern_proto::NodeId> {
        let entries = self.kept.lock();
        entries.get(future.key())?.at.as_ref().map(|at| at.node)
    }

    /// Store the tables `futures` hold as dataset `name`, one partition each (three copies of
    /// each, like any `tern put`; Dask's `to_parquet`/`store` of computed pieces). Every
    /// table must have the first one's columns. The tables travel through this client on
    /// their way to their holders (the nodes that keep them do not write them themselves yet).
    pub async fn store(
        &self,
        name: &str,
        futures: &[TaskFuture],
    ) -> Result<tern_proto::DatasetRecord, ClientError> {
        use crate::ingest::{PartitionBuilder, schema_json};
        let unexpected = |what: String| ClientError::Unexpected(what);
        let mut tables = Vec::with_capacity(futures.len());
        for future in futures {
            let datum = future
                .result()
                .await
                .map_err(|e| unexpected(format!("cannot store {name}: {e}")))?;
            let Datum::Table(bytes) = datum else {
                return Err(unexpected(format!(
                    "cannot store {name}: task {} made a value, not a table",
                    future.key()
                )));
            };
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                    .map_err(|e| unexpected(format!("task {}: {e}", future.key())))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unexpected(format!("task {}: {e}", future.key())))?;
            tables.push((future.key().clone(), schema, batches));
        }
        let Some((_, schema, _)) = tables.first() else {
            return Err(unexpected(format!("cannot store {name}: no futures")));
        };
        let schema = schema.clone();
        if let Some((key, other, _)) = tables
            .iter()
            .find(|(_, s, _)| s.fields() != schema.fields())
        {
            return Err(unexpected(format!(
                "cannot store {name}: task {key} made columns {other:?}, not those of the first table ({schema:?})"
            )));
        }
        let mut writer = self.dataset_writer(name, false).await?;
        let bad = |e: arrow::error::ArrowError| unexpected(e.to_string());
        for (_, _, batches) in tables {
            let mut partition = PartitionBuilder::new(&schema).map_err(bad)?;
            for batch in &batches {
                partition.push(batch).map_err(bad)?;
            }
            let partition = partition.finish().map_err(bad)?;
            writer.add_table_partition(&partition).await?;
        }
        writer.commit("arrow-ipc", &schema_json(&schema)).await
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
