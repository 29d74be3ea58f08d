//! Task graphs on the cluster ([`GraphCoordinator`]): every ready task goes to the least busy
//! of the nodes holding the most bytes of its inputs (a stored partition's holders, the node
//! keeping an upstream output), through the same [`LoadBoard`] as SQL tasks, so a node's
//! slots are shared between queries and graphs; after the locality wait it goes to the least
//! busy node, which fetches its inputs.
//!
//! A task's output stays on the node that made it (with the shuffle outputs, under
//! [`GRAPH_STAGE`]) until the job is released; the wanted outputs are fetched from there. A
//! task whose node fails is tried on another (at most [`MAX_ATTEMPTS`] nodes); outputs lost
//! with a node are made again from their inputs (lineage); a kernel that fails fails its task
//! and every task that reads it, naming the first failure, and the others go on.
//!
//! Ready tasks go out in the graph's order (a depth-first order: a task that finishes a
//! branch before another branch starts, so its inputs can be dropped early), in batches: the
//! ready tasks that share a holder of their inputs go to one node in one request, as many as
//! run there in about [`BATCH_TIME`] (so many tiny tasks cost one request, not one each, and a
//! slow task still goes alone). No more batches are in flight than twice the cluster's
//! slots, so a graph of many root tasks queues them here rather than flooding the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tern_proto::{
    Arg, ArgSource, DatasetRecord, Datum, ErrorKind, GRAPH_STAGE, GraphEvent, GraphReport,
    KeptOutput, MAX_TASK_BATCH, NodeId, Request, Response, Submission, TaskFailure, TaskOutcome,
    TaskRan, TaskRun, Transport,
};
use tracing::{debug, warn};

use crate::graph_run::{Run, State};
use crate::{LoadBoard, NodeView, Patience, SchedError};

/// Nodes a task is tried on before it is given up (Dask's `allowed-failures` is 3 too).
pub const MAX_ATTEMPTS: u32 = 3;

/// Times one task's inputs may be lost and made again before it is given up: each loss
/// needs a node gone or an output dropped, so a task meeting this many has a cause that
/// making its inputs again does not cure.
pub const MAX_INPUT_LOSSES: u32 = 12;

/// Requests in flight while fetching wanted outputs ([`tern_proto::fetch_batches`] each).
const FETCHES_IN_FLIGHT: usize = 4;

/// Wanted outputs fetched in one request: from a node, of a job, (task, as the job keeps it).
type FetchBatch = (NodeId, u64, Vec<(usize, u32)>);

/// Ready tasks sent together to one node: each with where its arguments are.
struct Batch {
    tasks: Vec<(usize, Vec<ArgSource>)>,
    /// The nodes holding the most input bytes of every task in it (empty: any node).
    holders: Vec<NodeId>,
}

/// How each task of a batch ended, and how long the batch took on its node.
type BatchFuture<'a> = BoxFuture<'a, (Vec<(usize, Attempt)>, std::time::Duration)>;

/// What a batch of graph tasks should take on its node: long enough that a request's cost
/// is small beside its tasks', short enough that the slots stay shared out.
const BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(50);

/// Batch size before any task has run (and its pace is unknown).
const FIRST_BATCH: usize = 16;

/// How one attempt at a task ended.
enum Attempt {
    Ran {
        node: NodeId,
        bytes: u64,
        local: bool,
    },
    Raised(String),
    /// The node keeping an input is gone (or dropped it).
    InputLost {
        node: NodeId,
        reason: String,
    },
    /// The node failed while running it (died, stopped answering, refused for its own
    /// reasons): try another.
    NodeFailed {
        node: NodeId,
        reason: String,
    },
    /// A stored input cannot be read anywhere, or is not the data its dataset declares.
    Unavailable(String),
    /// A task was sent with an input that is no longer kept anywhere known (it was lost
    /// while the task waited for a slot): made again first.
    NotReady,
}

/// A graph checked ([`Graph::validate`]) and set up to run: the costly part of starting a
/// graph (a second or so for a million tasks), done off the async threads.
pub struct PreparedGraph {
    run: Run,
    keep: bool,
    stay: bool,
}

impl PreparedGraph {
    pub fn new(submission: Submission) -> Result<Self, tern_proto::GraphError> {
        let Submission {
            graph,
            kept,
            keep,
            stay,
        } = submission;
        let order = graph.validate(&BTreeSet::new())?;
        Ok(Self {
            run: Run::new(graph, &order, &kept),
            keep,
            // Outputs that are neither sent nor kept would be lost: without `keep` they are sent.
            stay: stay && keep,
        })
    }

    /// Distinct tasks.
    pub fn tasks(&self) -> u64 {
        self.run.report.tasks
    }

    /// Keys the submitter named as wanted (none: every task is).
    pub fn wanted_named(&self) -> usize {
        self.run.graph.wanted.len()
    }

    /// Whether the wanted outputs stay kept after the graph finishes.
    pub fn keeps(&self) -> bool {
        self.keep
    }
}

/// Runs graph jobs with this node as coordinator.
pub struct GraphCoordinator<'a, T: Transport> {
    transport: &'a T,
    board: &'a LoadBoard,
    nodes: BTreeMap<NodeId, NodeView>,
    job: u64,
    patience: Patience,
    /// Nodes found dead during this job: they get no more tasks.
    dead: Mutex<BTreeSet<NodeId>>,
    /// Outputs no task left to run reads, by the node keeping them: it is told to drop them
    /// with its next batch (or when the job ends).
    releasing: Mutex<BTreeMap<NodeId, BTreeSet<u32>>>,
}

impl<'a, T: Transport> GraphCoordinator<'a, T> {
    pub fn new(transport: &'a T, board: &'a LoadBoard, nodes: Vec<NodeView>, job: u64) -> Self {
        Self {
            transport,
            board,
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            job,
            patience: Patience::default(),
            dead: Mutex::default(),
            releasing: Mutex::default(),
        }
    }

    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    fn live(&self) -> Vec<NodeId> {
        let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        self.nodes
            .values()
            .filter(|n| n.live && !dead.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    fn queue_releases(&self, released: BTreeMap<NodeId, BTreeSet<u32>>) {
        let mut releasing = self.releasing.lock().unwrap_or_else(|p| p.into_inner());
        for (node, tasks) in released {
            releasing.entry(node).or_default().extend(tasks);
        }
    }

    /// Releases queued for `node`, to go with a request to it.
    fn releases_for(&self, node: NodeId) -> Vec<u32> {
        let mut releasing = self.releasing.lock().unwrap_or_else(|p| p.into_inner());
        releasing
            .remove(&node)
            .map(|tasks| tasks.into_iter().collect())
            .unwrap_or_default()
    }

    /// Tasks being sent again (made again after a release): a queued release of their old
    /// output must not drop the new one.
    fn unqueue_releases(&self, tasks: &[usize]) {
        let mut releasing = self.releasing.lock().unwrap_or_else(|p| p.into_inner());
        if releasing.is_empty() {
            return;
        }
        for queued in releasing.values_mut() {
            for &i in tasks {
                queued.remove(&(i as u32));
            }
        }
    }

    fn mark_dead(&self, node: NodeId) {
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
    }

    /// Run a prepared graph over the stored `datasets`, sending `events` as tasks end
    /// (progress, and each wanted task's outcome once fetched). Wanted: `graph.wanted`, or
    /// every task when none is named. The outputs stay kept until [`Self::release`].
    pub async fn run(
        &self,
        prepared: PreparedGraph,
        datasets: &BTreeMap<String, DatasetRecord>,
        events: &tokio::sync::mpsc::UnboundedSender<GraphEvent>,
    ) -> Result<GraphReport, SchedError> {
        let started = Instant::now();
        let (keep, stay) = (prepared.keep, prepared.stay);
        let mut run = prepared.run;
        let wanted = run.wanted();
        let mut sent: BTreeSet<usize> = BTreeSet::new();
        let in_flight = (self.nodes.len() * self.board.slots() * 2).max(1);
        loop {
            self.compute(&mut run, datasets, in_flight, events).await?;
            // Every task ended; fetch what is wanted. A holder lost meanwhile makes its
            // outputs again and the loop runs once more.
            let mut lost_any = false;
            // By node and the job keeping them: (task, as the job keeps it).
            let mut done_on: BTreeMap<(NodeId, u64), Vec<((usize, u32), u64)>> = BTreeMap::new();
            for &i in &wanted {
                if sent.contains(&i) {
                    continue;
                }
                match run.state(i) {
                    State::Done { node } if stay => {
                        // Left where it is (`Submission::stay`): where, and that it was made.
                        sent.insert(i);
                        let (job, task) = run.foreign(i).unwrap_or((self.job, i as u32));
                        let key = run.graph.tasks[i].key.clone();
                        let _ = events.send(GraphEvent::Kept(KeptOutput {
                            key: key.clone(),
                            job,
                            task,
                            node,
                        }));
                        let _ = events.send(GraphEvent::Output {
                            key,
                            outcome: TaskOutcome::Done(Datum::Value(tern_proto::Value::Null)),
                        });
                    }
                    State::Done { node } => {
                        let (job, task) = run.foreign(i).unwrap_or((self.job, i as u32));
                        let size = run.size(i);
                        done_on
                            .entry((node, job))
                            .or_default()
                            .push(((i, task), size));
                    }
                    State::Failed => {
                        sent.insert(i);
                        let failure = run.failure(i).cloned().unwrap_or(TaskFailure::Stopped {
                            message: "it failed".into(),
                        });
                        let _ = events.send(GraphEvent::Output {
                            key: run.graph.tasks[i].key.clone(),
                            outcome: TaskOutcome::Failed(failure),
                        });
                    }
                    other => {
                        return Err(SchedError::Query(format!(
                            "task {} ended {other:?}, neither done nor failed",
                            run.graph.tasks[i].key
                        )));
                    }
                }
            }
            // Many outputs per request (a bounded body each), a few requests at once.
            let batches: Vec<FetchBatch> = done_on
                .into_iter()
                .flat_map(|((node, job), tasks)| {
                    tern_proto::fetch_batches(tasks)
                        .into_iter()
                        .map(move |c| (node, job, c))
                })
                .collect();
            let mut fetched = futures::stream::iter(batches)
                .map(|(node, job, tasks)| async move {
                    let outputs: Vec<u32> = tasks.iter().map(|(_, task)| *task).collect();
                    let got = self.fetch(job, &outputs, node).await;
                    (node, job, tasks, got)
                })
                .buffer_unordered(FETCHES_IN_FLIGHT);
            while let Some((node, job, tasks, got)) = fetched.next().await {
                match got {
                    Ok(data) => {
                        for ((i, task), datum) in tasks.into_iter().zip(data) {
                            sent.insert(i);
                            if keep {
                                let _ = events.send(GraphEvent::Kept(KeptOutput {
                                    key: run.graph.tasks[i].key.clone(),
                                    job,
                                    task,
                                    node,
                                }));
                            }
                            let _ = events.send(GraphEvent::Output {
                                key: run.graph.tasks[i].key.clone(),
                                outcome: TaskOutcome::Done(datum),
                            });
                        }
                    }
                    Err(reason) => {
                        warn!(job = self.job, node, %reason, "kept outputs are lost");
                        self.mark_dead(node);
                        run.lose(node);
                        lost_any = true;
                    }
                }
            }
            if !lost_any {
                break;
            }
        }
        if keep {
            // What the kept outputs needed is dropped now, not when the client lets go.
            self.queue_releases(run.take_releases());
            self.hold().await;
        }
        run.report.millis = started.elapsed().as_millis() as u64;
        Ok(run.report)
    }

    /// Run ready tasks until none is running or ready.
    async fn compute(
        &self,
        run: &mut Run,
        datasets: &BTreeMap<String, DatasetRecord>,
        in_flight: usize,
        events: &tokio::sync::mpsc::UnboundedSender<GraphEvent>,
    ) -> Result<(), SchedError> {
        let mut running: FuturesUnordered<BatchFuture<'_>> = FuturesUnordered::new();
        loop {
            while running.len() < in_flight {
                let Some(batch) = self.next_batch(run, datasets) else {
                    break;
                };
                for (i, _) in &batch.tasks {
                    run.running(*i);
                }
                let indexes: Vec<usize> = batch.tasks.iter().map(|(i, _)| *i).collect();
                self.unqueue_releases(&indexes);
                let tasks = batch
                    .tasks
                    .into_iter()
                    .map(|(i, sources)| (i, run.graph.tasks[i].clone(), sources))
                    .collect();
                let holders = batch.holders;
                let pace = run.task_micros;
                running.push(Box::pin(self.attempt(tasks, holders, pace)));
            }
            let Some((ended, took)) = running.next().await else {
                break;
            };
            if ended.iter().any(|(_, a)| matches!(a, Attempt::Ran { .. })) {
                let micros = took.as_micros() as f64 / ended.len() as f64;
                run.task_micros = Some(match run.task_micros {
                    None => micros,
                    Some(pace) => 0.8 * pace + 0.2 * micros,
                });
            }
            // A node that failed a batch is asked once whether it still answers.
            let mut answers: BTreeMap<NodeId, bool> = BTreeMap::new();
            for (i, attempt) in ended {
                if run.state(i) != State::Running {
                    // It failed meanwhile (an input it read failed when made again).
                    continue;
                }
                match attempt {
                    Attempt::Ran { node, bytes, local } => {
                        if local {
                            run.report.local += 1;
                        } else {
                            run.report.remote += 1;
                        }
                        *run.report.per_node.entry(node).or_default() += 1;
                        run.done(i, node, bytes);
                    }
                    Attempt::Raised(message) => run.fail(i, TaskFailure::Raised { message }),
                    Attempt::Unavailable(message) => {
                        run.fail(i, TaskFailure::InputUnavailable { message })
                    }
                    Attempt::InputLost { node, reason } => {
                        let losses = run.input_losses.entry(i as u32).or_default();
                        *losses += 1;
                        if *losses >= MAX_INPUT_LOSSES {
                            let attempts = *losses;
                            let message =
                                format!("its inputs were lost {attempts} times, last: {reason}");
                            run.fail(i, TaskFailure::Abandoned { attempts, message });
                            continue;
                        }
                        self.check_node(run, node, &mut answers).await;
                        // A node that answers but no longer has them: made again.
                        run.lose_inputs_of(i, node);
                        run.wait_again(i);
                    }
                    Attempt::NotReady => run.wait_again(i),
                    Attempt::NodeFailed { node, reason } => {
                        let attempts = run.attempts.entry(i as u32).or_default();
                        *attempts += 1;
                        let attempts = *attempts;
                        run.report.retries += 1;
                        debug!(job = self.job, node, %reason, attempts, "graph task failed on a node");
                        self.check_node(run, node, &mut answers).await;
                        if attempts >= MAX_ATTEMPTS {
                            run.fail(
                                i,
                                TaskFailure::Abandoned {
                                    attempts,
                                    message: reason,
                                },
                            );
                        } else if self.live().is_empty() {
                            run.fail(
                                i,
                                TaskFailure::Stopped {
                                    message: "no live node is left to run it".into(),
                                },
                            );
                        } else {
                            run.wait_again(i);
                        }
                    }
                }
            }
            self.queue_releases(run.take_releases());
            let _ = events.send(GraphEvent::Progress {
                done: run.ended,
                tasks: run.report.tasks,
            });
        }
        run.fail_stuck();
        Ok(())
    }

    /// Where task `i` finds each argument, and which nodes hold most of its input bytes.
    fn sources(
        &self,
        run: &Run,
        i: usize,
        datasets: &BTreeMap<String, DatasetRecord>,
    ) -> Result<(Vec<ArgSource>, Vec<NodeId>), Attempt> {
        let mut bytes: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut sources = Vec::with_capacity(run.graph.tasks[i].args.len());
        for arg in &run.graph.tasks[i].args {
            sources.push(match arg {
                Arg::Value(_) => ArgSource::Inline,
                Arg::Partition {
                    dataset,
                    version,
                    index,
                } => {
                    let record = datasets.get(dataset).ok_or_else(|| {
                        Attempt::Unavailable(format!("no dataset {dataset} is stored"))
                    })?;
                    if record.version != *version {
                        return Err(Attempt::Unavailable(format!(
                            "dataset {dataset} is at version {}, not {version}",
                            record.version
                        )));
                    }
                    // A table's blocks are checked against its schema; an array's chunks
                    // against the one-column schema of its dtype.
                    let schema = match record.format.as_str() {
                        "arrow-ipc" => record.schema.clone(),
                        tern_array::FORMAT => tern_array::ArrayMeta::from_json(&record.schema)
                            .map(|meta| tern_array::chunk::schema_json(&meta.dtype))
                            .map_err(|e| Attempt::Unavailable(format!("dataset {dataset}: {e}")))?,
                        other => {
                            return Err(Attempt::Unavailable(format!(
                                "dataset {dataset} holds {other} data, not a table or an array"
                            )));
                        }
                    };
                    let part = record.partitions.get(*index as usize).ok_or_else(|| {
                        Attempt::Unavailable(format!(
                            "dataset {dataset} has {} partitions, not {}",
                            record.partitions.len(),
                            index + 1
                        ))
                    })?;
                    for h in &part.holders {
                        *bytes.entry(*h).or_default() += part.bytes.max(1);
                    }
                    ArgSource::Block {
                        block: part.block,
                        rows: part.rows,
                        schema,
                        holders: part
                            .holders
                            .iter()
                            .filter_map(|h| self.nodes.get(h).map(|n| (*h, n.addr.clone())))
                            .collect(),
                        partition: format!("partition {index} of {dataset}"),
                    }
                }
                Arg::Output(key) | Arg::Part { of: key, .. } => {
                    let bucket = match arg {
                        Arg::Part { part, .. } => part.saturating_add(1),
                        _ => 0,
                    };
                    let (task, node, size) = run.kept(key).ok_or(Attempt::NotReady)?;
                    *bytes.entry(node).or_default() += size.max(1);
                    // A node this coordinator does not know (an earlier submission's, since
                    // gone): what it keeps is made again.
                    let addr = self
                        .nodes
                        .get(&node)
                        .map(|n| n.addr.clone())
                        .ok_or_else(|| Attempt::InputLost {
                            node,
                            reason: "kept on a node no longer known".into(),
                        })?;
                    let (job, task) = run.foreign(task).unwrap_or((self.job, task as u32));
                    ArgSource::Kept {
                        job,
                        task,
                        node,
                        addr,
                        bucket,
                        bytes: size,
                    }
                }
            });
        }
        let live = self.live();
        let most = bytes
            .iter()
            .filter(|(n, _)| live.contains(n))
            .map(|(_, b)| *b)
            .max();
        let holders = match most {
            Some(most) => bytes
                .iter()
                .filter(|(n, b)| **b == most && live.contains(n))
                .map(|(n, _)| *n)
                .collect(),
            None => Vec::new(),
        };
        Ok((sources, holders))
    }

    /// The next ready tasks to send together, in the graph's order: as many as share a node
    /// holding the most of their input bytes, up to a batch size that spreads what is ready
    /// over every slot (four batches a slot) and keeps a batch near [`BATCH_TIME`] at the
    /// pace tasks have run so far (one task at a time for slow tasks, [`MAX_TASK_BATCH`] at
    /// most). Tasks met on the way that cannot run are failed, or wait again.
    fn next_batch(
        &self,
        run: &mut Run,
        datasets: &BTreeMap<String, DatasetRecord>,
    ) -> Option<Batch> {
        let slots = (self.live().len() * self.board.slots()).max(1);
        let by_time = match run.task_micros {
            None => FIRST_BATCH,
            Some(micros) => (BATCH_TIME.as_micros() as f64 / micros.max(1.0)) as usize,
        };
        let size = by_time
            .min(run.queued() / (slots * 4))
            .clamp(1, MAX_TASK_BATCH);
        let mut tasks = Vec::new();
        // Nodes holding the most input bytes of every task so far (None: any node).
        let mut shared: Option<Vec<NodeId>> = None;
        while tasks.len() < size {
            let Some(i) = run.peek_ready() else {
                break;
            };
            let (sources, holders) = match self.sources(run, i, datasets) {
                Ok(found) => found,
                Err(Attempt::Unavailable(message)) => {
                    run.take_ready(i);
                    run.fail(i, TaskFailure::InputUnavailable { message });
                    continue;
                }
                Err(Attempt::InputLost { node, .. }) => {
                    run.take_ready(i);
                    run.lose(node);
                    run.wait_again(i);
                    continue;
                }
                Err(_) => {
                    // An input is not kept anywhere now: wait for it to be made again.
                    run.take_ready(i);
                    run.wait_again(i);
                    if run.state(i) == State::Ready {
                        // Its inputs are done, yet cannot be found: never spin on it.
                        run.take_ready(i);
                        run.fail(
                            i,
                            TaskFailure::Stopped {
                                message: "its inputs are done but cannot be found".into(),
                            },
                        );
                    }
                    continue;
                }
            };
            if !holders.is_empty() {
                let common: Vec<NodeId> = match &shared {
                    None => holders,
                    Some(shared) => shared
                        .iter()
                        .filter(|n| holders.contains(n))
                        .copied()
                        .collect(),
                };
                if common.is_empty() {
                    // Its data is elsewhere: it starts the next batch.
                    break;
                }
                shared = Some(common);
            }
            run.take_ready(i);
            tasks.push((i, sources));
        }
        (!tasks.is_empty()).then(|| Batch {
            tasks,
            holders: shared.unwrap_or_default(),
        })
    }

    /// Send a batch to the least busy of `holders` (after the locality wait, of any live
    /// node): how each task ended, and how long the batch took.
    async fn attempt(
        &self,
        tasks: Vec<(usize, tern_proto::Task, Vec<ArgSource>)>,
        holders: Vec<NodeId>,
        pace_micros: Option<f64>,
    ) -> (Vec<(usize, Attempt)>, std::time::Duration) {
        let indexes: Vec<usize> = tasks.iter().map(|(i, ..)| *i).collect();
        let all_failed = |node: NodeId, reason: String| {
            indexes
                .iter()
                .map(|&i| {
                    let reason = reason.clone();
                    (i, Attempt::NodeFailed { node, reason })
                })
                .collect::<Vec<_>>()
        };
        let started = Instant::now();
        let live = self.live();
        if live.is_empty() {
            return (all_failed(0, "no live node".into()), started.elapsed());
        }
        // Tasks without inputs may go anywhere at once.
        let wait = if holders.is_empty() {
            std::time::Duration::ZERO
        } else {
            self.patience.locality_wait
        };
        let candidates = if holders.is_empty() { &live } else { &holders };
        // The stored blocks the batch reads: between equally busy holders, the one that read
        // them last goes first, as their bytes are likely still in its memory (a node keeps
        // what it read, up to its cache budget; every holder of a block has it on disk).
        let blocks: Vec<tern_proto::BlockHash> = tasks
            .iter()
            .flat_map(|(_, _, sources)| sources)
            .filter_map(|source| match source {
                ArgSource::Block { block, .. } => Some(*block),
                _ => None,
            })
            .collect();
        let warm = self.board.warm_holder(&blocks, &holders);
        let slot = self
            .board
            .take_with(self.job, candidates, &live, warm, wait, false)
            .await;
        let node = slot.node;
        let local = holders.is_empty() || holders.contains(&node);
        let Some(addr) = self.nodes.get(&node).map(|n| n.addr.clone()) else {
            return (
                all_failed(node, "an unknown node".into()),
                started.elapsed(),
            );
        };
        let sent = Instant::now();
        let count = tasks.len();
        let release = self.releases_for(node);
        let request = Request::RunGraphTasks {
            job: self.job,
            release: release.clone(),
            tasks: tasks
                .into_iter()
                .map(|(i, task, sources)| TaskRun {
                    index: i as u32,
                    task,
                    sources,
                })
                .collect(),
        };
        // One task's deadline, plus the batch's tasks at four times the pace seen so far (at
        // most four tasks' deadlines in all).
        let expected = pace_micros.unwrap_or(0.0) * count as f64 * 4.0;
        let deadline = (self.patience.task_deadline
            + std::time::Duration::from_micros(expected as u64))
        .min(self.patience.task_deadline * 4);
        // A node that dies mid-batch is noticed by its pings, not at the deadline.
        let call = self.transport.call_within(&addr, request, deadline);
        let answer = crate::while_alive(self.transport, &addr, call)
            .await
            .unwrap_or_else(|gone| {
                Err(tern_proto::TransportError::Unreachable {
                    addr: gone.addr,
                    reason: gone.reason,
                })
            });
        drop(slot);
        let took = sent.elapsed();
        if !matches!(answer, Ok(Response::GraphTasksRan(_))) {
            // Perhaps not applied: they go with the next request to that node.
            self.queue_releases(BTreeMap::from([(node, release.into_iter().collect())]));
        }
        let ended = match answer {
            Ok(Response::GraphTasksRan(ended)) if ended.len() == count => {
                if local {
                    self.board.scanned(blocks, node);
                }
                ended
            }
            Ok(Response::GraphTasksRan(ended)) => {
                let reason = format!("{} answers to a batch of {count} tasks", ended.len());
                return (all_failed(node, reason), took);
            }
            Ok(Response::Error(e)) => return (all_failed(node, e.message), took),
            Ok(other) => {
                return (
                    all_failed(node, format!("unexpected answer {other:?}")),
                    took,
                );
            }
            Err(e) => return (all_failed(node, e.to_string()), took),
        };
        let attempts = indexes
            .into_iter()
            .zip(ended)
            .map(|(i, ended)| {
                let attempt = match ended {
                    TaskRan::Kept { bytes } => Attempt::Ran { node, bytes, local },
                    TaskRan::Raised { message } => Attempt::Raised(message),
                    TaskRan::InputLost { node: lost, reason } => {
                        Attempt::InputLost { node: lost, reason }
                    }
                    TaskRan::Failed(e)
                        if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadData) =>
                    {
                        Attempt::Unavailable(e.message)
                    }
                    TaskRan::Failed(e) => Attempt::NodeFailed {
                        node,
                        reason: e.message,
                    },
                };
                (i, attempt)
            })
            .collect();
        (attempts, took)
    }

    /// Whether `node` still answers, asked once per batch's results (`answers`): one that
    /// does not is dead for this job, and what it kept is made again.
    async fn check_node(
        &self,
        run: &mut Run,
        node: NodeId,
        answers: &mut BTreeMap<NodeId, bool>,
    ) -> bool {
        if let Some(&up) = answers.get(&node) {
            return up;
        }
        let up = self.ping(node).await.is_ok();
        if !up {
            self.mark_dead(node);
            run.lose(node);
        }
        answers.insert(node, up);
        up
    }

    async fn ping(&self, node: NodeId) -> Result<(), String> {
        let addr = self.nodes.get(&node).ok_or("unknown node")?.addr.clone();
        match self
            .transport
            .call_within(&addr, Request::Ping, std::time::Duration::from_secs(2))
            .await
        {
            Ok(Response::Pong { .. }) => Ok(()),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The outputs of `tasks` of `job`, from the node keeping them.
    async fn fetch(&self, job: u64, tasks: &[u32], node: NodeId) -> Result<Vec<Datum>, String> {
        let addr = self.nodes.get(&node).ok_or("unknown node")?.addr.clone();
        let request = Request::FetchShuffle {
            job,
            stage: GRAPH_STAGE,
            tasks: tasks.to_vec(),
            bucket: 0,
            columns: None,
        };
        let fetch = tern_proto::fetch_bytes(self.transport, &addr, &request);
        let bytes = crate::while_alive(self.transport, &addr, fetch)
            .await
            .map_err(|gone| gone.to_string())?
            .map_err(|e| e.to_string())?;
        let parts = tern_proto::split_parts(&bytes).map_err(|e| e.to_string())?;
        let bytes = bytes::Bytes::from(bytes);
        if parts.len() != tasks.len() {
            return Err(format!(
                "asked for {} outputs, got {}",
                tasks.len(),
                parts.len()
            ));
        }
        parts
            .into_iter()
            .map(|part| {
                Datum::from_kept(bytes.slice(part))
                    .map_err(|e| format!("an unreadable output: {e}"))
            })
            .collect()
    }

    /// While a finished graph's outputs stay kept: tell every node the job is still held
    /// (so they do not expire what it keeps), and to drop what it no longer needs.
    pub async fn hold(&self) {
        self.tell_every_node(|node| Request::RunGraphTasks {
            job: self.job,
            tasks: Vec::new(),
            release: self.releases_for(node),
        })
        .await
    }

    /// Tell every node the job is over, so they drop its kept outputs.
    pub async fn release(&self) {
        self.tell_every_node(|_| Request::ReleaseJob { job: self.job })
            .await
    }

    /// Send each live node its request, two seconds each at most, all at once; answers are
    /// not waited for past that (a node that misses it expires what it keeps).
    async fn tell_every_node(&self, request_for: impl Fn(NodeId) -> Request) {
        let calls = self.nodes.values().filter(|n| n.live).map(|n| {
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.transport.call(&n.addr, request_for(n.id)),
            )
        });
        futures::future::join_all(calls).await;
    }
}
