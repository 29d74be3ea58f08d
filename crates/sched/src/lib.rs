//! The per-query coordinator: plans a SQL query with DataFusion, cuts the physical plan into
//! stages ([`stages`]: scans and partial aggregates, hash shuffles, joins, final aggregates),
//! runs each stage once the stages it reads are done, sends each task to the least busy
//! holder of its block that has a free slot ([`LoadBoard`]) or, for tasks over shuffled data,
//! to the least busy node; retries a task whose node fails on another node, recomputes the
//! kept outputs of a node that is lost before they are read, and runs the final stage itself.
//!
//! It owns stages, placement, retries and recomputation. It does not run tasks (a node does, with
//! `tern-exec`), know how blocks are read, or know the node: the node hands it a
//! [`Transport`], the live nodes, and a DataFusion session with the datasets registered.
//! Every wait has a deadline: a task that does not answer in time is retried elsewhere, and a
//! query fails with the partition and the reason when none of its holders can serve it.

pub mod board;
pub mod broadcast;
pub mod graph;
pub mod keyfilter;
pub mod liveness;
pub mod stages;
pub mod subquery;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tern_exec::arrow::datatypes::SchemaRef;
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::common::tree_node::TreeNodeRecursion;
use tern_exec::datafusion::logical_expr::LogicalPlan;
use tern_exec::datafusion::prelude::{DataFrame, SessionContext};
use tern_exec::{TaskLocation, encode_plan, ipc_to_batches};
use tern_proto::{
    BlockHash, BulkRead, BulkWrite, ErrorKind, NodeId, QueryEvent, Request, Response,
    ShuffleOutput, StagePlanned, StageReport, TaskSpec, Transport,
};
use tracing::{debug, info, warn};

pub use board::LoadBoard;
pub use graph::GraphCoordinator;
pub use liveness::{NodeGone, while_alive};
pub use stages::{Stage, StageInputExec, StageOutput, StagePlan, cut, describe};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The query itself is wrong (syntax, unknown table or column, types) or failed while
    /// computing (for example a cast that cannot be done).
    #[error("{0}")]
    Query(String),
    #[error("partition {partition} of {dataset} (block {block}) is unavailable: {reason}")]
    PartitionUnavailable {
        dataset: String,
        partition: usize,
        block: String,
        reason: String,
    },
    #[error(
        "stage {stage} sends the coordinator more than {} of rows, its limit for one query (answer_memory_bytes; `tern up --answer-memory`): filter, aggregate or LIMIT the query further",
        tern_proto::human_bytes(*limit)
    )]
    AnswerTooLarge { stage: usize, limit: u64 },
    #[error("task {task} of stage {stage} failed on every node tried: {reason}")]
    TaskFailed {
        stage: usize,
        task: usize,
        reason: String,
    },
}

/// DataFusion's message on one line (some of its messages add hints on a second one).
fn query_error(e: impl std::fmt::Display) -> SchedError {
    let text = e.to_string();
    SchedError::Query(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A node as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: NodeId,
    pub addr: String,
    /// Not marked down.
    pub live: bool,
}

/// How a coordinator waits.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// How long a task waits for a slot on a holder before it runs elsewhere.
    pub locality_wait: Duration,
    /// How long one task attempt may take before it is tried on another node.
    pub task_deadline: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            locality_wait: Duration::from_millis(100),
            task_deadline: Duration::from_secs(120),
        }
    }
}

/// How the final stage is named in reports.
const FINAL_STAGE: &str = "final, on the coordinator";

/// A query whose task stages are done: its final stage runs and hands over rows as it makes
/// them. Dropping it stops the final stage.
pub struct Answer {
    pub schema: SchemaRef,
    batches: tokio::sync::mpsc::Receiver<Result<RecordBatch, SchedError>>,
    reports: Vec<StageReport>,
    started: Instant,
    rows: u64,
    /// The final stage's work: stopped when the answer is dropped (its client went away, or
    /// its deadline passed), even while it computes without sending (an aggregate over a huge
    /// input sends nothing until the end).
    _work: AbortOnDrop,
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Answer {
    /// The answer's next batch, `None` after the last.
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch, SchedError>> {
        let next = self.batches.recv().await;
        if let Some(Ok(batch)) = &next {
            self.rows += batch.num_rows() as u64;
        }
        next
    }

    /// How each stage ran, the final one included (call once every batch has been read).
    pub fn reports(mut self) -> Vec<StageReport> {
        self.reports.push(StageReport {
            stage: self.reports.len() as u32 + 1,
            what: FINAL_STAGE.into(),
            tasks: 1,
            rows: self.rows,
            millis: self.started.elapsed().as_millis() as u64,
            ..Default::default()
        });
        self.reports
    }
}

/// A lost shuffle input is recomputed at most this many times for one task.
const MAX_RECOVERIES: usize = 3;

/// A stage with more tasks than this many per slot sends them in batches, one request per
/// batch (Dask batches its task messages too): with thousands of tiny partitions a request
/// per task would cost more than the tasks.
const TASKS_PER_SLOT_UNBATCHED: usize = 4;
/// At most this many tasks, and this many stored bytes, in one batch.
const MAX_BATCH_TASKS: usize = 256;
const MAX_BATCH_BYTES: u64 = 64 << 20;

/// Coordinates one job over the nodes it is given.
pub struct Coordinator<'a, T: Transport> {
    transport: &'a T,
    board: &'a LoadBoard,
    nodes: BTreeMap<NodeId, NodeView>,
    patience: Patience,
    job: u64,
    /// Where the final stage runs (see `tern_exec::on_runtime`).
    runtime: Option<tokio::runtime::Handle>,
    /// Where the plan and each stage's progress go (the client's progress display).
    progress: Option<tokio::sync::mpsc::UnboundedSender<QueryEvent>>,
    /// The most the job's tasks may send back here (rows the final stage reads).
    answer_limit: u64,
}

/// A job's running state: where each kept task output is, and which nodes it gave up on.
struct Job {
    /// Changed only where a join becomes a broadcast, in stages not yet started.
    stages: Mutex<Vec<Stage>>,
    locations: Vec<Mutex<Vec<Option<TaskLocation>>>>,
    /// One recovery of a stage at a time; the others find it done.
    recovering: Vec<tokio::sync::Mutex<()>>,
    recomputed: Vec<AtomicU64>,
    /// Nodes whose kept outputs could not be read: no more tasks of this job go there.
    lost: Mutex<BTreeSet<NodeId>>,
    /// Bytes of rows tasks have sent back to the coordinator.
    held: AtomicU64,
}

impl Job {
    fn new(stages: Vec<Stage>) -> Self {
        Self {
            locations: stages
                .iter()
                .map(|s| Mutex::new(vec![None; s.tasks]))
                .collect(),
            recovering: stages.iter().map(|_| Default::default()).collect(),
            recomputed: stages.iter().map(|_| AtomicU64::new(0)).collect(),
            lost: Mutex::default(),
            held: AtomicU64::new(0),
            stages: Mutex::new(stages),
        }
    }

    /// Stage `s` as it stands.
    fn stage(&self, s: usize) -> Stage {
        lock(&self.stages)[s].clone()
    }

    fn stages(&self) -> Vec<Stage> {
        lock(&self.stages).clone()
    }

    /// Where the tasks of stage `s`'s input stages ran, for the readers in its tasks' plans
    /// (indexed by stage; empty for stages it does not read).
    fn located(&self, s: usize) -> Vec<Vec<TaskLocation>> {
        let inputs = self.stage(s).inputs;
        self.locations
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if !inputs.contains(&i) {
                    return Vec::new();
                }
                lock(l)
                    .iter()
                    .map_while(|at| at.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Rows and bytes stage `s`'s tasks made, all together.
    fn made(&self, s: usize) -> (u64, u64) {
        lock(&self.locations[s])
            .iter()
            .flatten()
            .fold((0, 0), |(rows, bytes), at| {
                (rows + at.rows, bytes + at.bytes)
            })
    }

    /// Make a join a broadcast (see [`broadcast`]): its consumer, its large side and the
    /// stages reading the consumer must not have started.
    fn broadcast(&self, b: broadcast::Broadcastable) -> tern_exec::datafusion::error::Result<()> {
        let mut stages = lock(&self.stages);
        broadcast::broadcast(&mut stages, b)?;
        for s in [b.consumer, b.large] {
            *lock(&self.locations[s]) = vec![None; stages[s].tasks];
        }
        Ok(())
    }

    /// Filter a scan by the keys of another stage (see [`keyfilter`]): the scan must not
    /// have started.
    fn filter(&self, f: &keyfilter::KeyFilter) -> tern_exec::datafusion::error::Result<()> {
        keyfilter::filter(&mut lock(&self.stages), f)
    }

    fn is_lost(&self, node: NodeId) -> bool {
        lock(&self.lost).contains(&node)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One task's outcome.
struct TaskDone {
    index: usize,
    batches: Vec<RecordBatch>,
    rows: u64,
    node: NodeId,
    local: bool,
    retries: u64,
    spilled: u64,
}

/// What one task attempt sent back.
struct Sent {
    batches: Vec<RecordBatch>,
    rows: u64,
    /// Bytes of the output kept on the node (0 when sent back).
    kept_bytes: u64,
    remote_reads: u32,
    spilled: u64,
}

/// Why one attempt failed: worth another node, an input to recompute, or final.
enum Attempt {
    /// The node could not be reached or the connection broke: no more of this job goes there.
    Unreachable(String),
    Retry(String),
    Lost {
        stage: usize,
        node: NodeId,
    },
    Fatal(String),
}

impl<'a, T: Transport> Coordinator<'a, T> {
    /// A coordinator for job `job` (an id unique in the cluster: shuffle outputs are kept
    /// under it).
    pub fn new(transport: &'a T, board: &'a LoadBoard, nodes: Vec<NodeView>, job: u64) -> Self {
        Self {
            transport,
            board,
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            patience: Patience::default(),
            job,
            runtime: None,
            progress: None,
            answer_limit: u64::MAX,
        }
    }

    /// Fail the job when its tasks send back more than `bytes` of rows (Arrow memory).
    pub fn with_answer_limit(mut self, bytes: u64) -> Self {
        self.answer_limit = bytes;
        self
    }

    /// Send the plan (`QueryEvent::Planned`) and progress as tasks finish to `events`.
    pub fn with_progress(mut self, events: tokio::sync::mpsc::UnboundedSender<QueryEvent>) -> Self {
        self.progress = Some(events);
        self
    }

    fn report_progress(&self, event: QueryEvent) {
        if let Some(events) = &self.progress {
            // A client that went away stops reading; the query's owner notices and drops it.
            let _ = events.send(event);
        }
    }

    /// Run the final stage's work on `runtime`.
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// Plan `sql` and cut it into stages (see [`plan_query`]).
    pub async fn plan(ctx: &SessionContext, sql: &str, job: u64) -> Result<StagePlan, SchedError> {
        plan_query(ctx, sql, job).await
    }

    /// The stages and tasks `sql` would run.
    pub async fn explain(ctx: &SessionContext, sql: &str) -> Result<String, SchedError> {
        Ok(describe(&Self::plan(ctx, sql, 0).await?))
    }

    /// Run `sql`: its stages on the nodes, each once the stages it reads are done, then the
    /// final stage here; the whole answer.
    pub async fn run(
        &self,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, Vec<StageReport>), SchedError> {
        let mut answer = self
            .run_planned(ctx, Self::plan(ctx, sql, self.job).await?)
            .await?;
        let mut batches = Vec::new();
        while let Some(batch) = answer.next_batch().await {
            batches.push(batch?);
        }
        let schema = answer.schema.clone();
        Ok((schema, batches, answer.reports()))
    }

    /// Run a planned query's task stages, each once the stages it reads are done, and start
    /// its final stage here: the answer's rows come from the [`Answer`] as they are made.
    pub async fn run_planned(
        &self,
        ctx: &SessionContext,
        plan: StagePlan,
    ) -> Result<Answer, SchedError> {
        let plan = self.answer_scalar_subqueries(ctx, plan).await?;
        self.run_cut(ctx, plan).await
    }

    /// Run a cut plan as it is (see [`Self::run_planned`]).
    async fn run_cut(&self, ctx: &SessionContext, plan: StagePlan) -> Result<Answer, SchedError> {
        let StagePlan { root, stages, .. } = plan;
        let count = stages.len();
        let job = Job::new(stages);
        let gathered = StageInputExec::gathered(&root);
        let mut refused = BTreeSet::new();
        // Scans given a key filter, or whose filter failed to be made.
        let mut filtered = BTreeSet::new();
        self.report_planned(&job);
        let mut reports: Vec<Option<StageReport>> = vec![None; count];
        let mut started = vec![false; count];
        let mut running = futures::stream::FuturesUnordered::new();
        // Each stage starts as soon as the stages it reads are done.
        loop {
            let done: Vec<bool> = reports.iter().map(Option::is_some).collect();
            // A join whose small side has run and is small: into the large side's scan.
            while let Some(b) = broadcast::broadcastable(&job.stages(), &gathered)
                .into_iter()
                .find(|b| {
                    !refused.contains(&b.consumer)
                        && done[b.small]
                        && !started[b.large]
                        && !started[b.consumer]
                        && job.made(b.small).1 <= broadcast::BROADCAST_BYTES
                })
            {
                let (rows, bytes) = job.made(b.small);
                if let Err(e) = job.broadcast(b) {
                    // The join stays as planned (nothing was changed): slower, not wrong.
                    warn!(
                        job = self.job,
                        stage = b.consumer + 1,
                        "join kept shuffled: {e}"
                    );
                    refused.insert(b.consumer);
                    continue;
                }
                info!(
                    job = self.job,
                    stage = b.consumer + 1,
                    rows,
                    bytes,
                    "join made a broadcast of stage {} into the scan of stage {}",
                    b.small + 1,
                    b.large + 1
                );
                if !b.split {
                    started[b.large] = true;
                    reports[b.large] = Some(StageReport {
                        stage: b.large as u32 + 1,
                        what: format!("joined in stage {}'s tasks", b.consumer + 1),
                        ..Default::default()
                    });
                }
                self.report_planned(&job);
            }
            // A scan whose join's other side has run and is small, though not a broadcast:
            // it keeps only rows with that side's keys.
            while let Some(f) = {
                let stages = job.stages();
                keyfilter::filterable(&stages).into_iter().find(|f| {
                    let (rows, bytes) = job.made(f.small);
                    !filtered.contains(&f.large)
                        && done[f.small]
                        && !started[f.large]
                        && bytes <= keyfilter::KEY_FILTER_BYTES
                        && keyfilter::selective(&stages, f, rows)
                })
            } {
                let (rows, bytes) = job.made(f.small);
                filtered.insert(f.large);
                match job.filter(&f) {
                    Ok(()) => info!(
                        job = self.job,
                        stage = f.large + 1,
                        rows,
                        bytes,
                        "scan filtered by the join keys of stage {}",
                        f.small + 1
                    ),
                    Err(e) => warn!(
                        job = self.job,
                        stage = f.large + 1,
                        "scan kept unfiltered: {e}"
                    ),
                }
                self.report_planned(&job);
            }
            let done: Vec<bool> = reports.iter().map(Option::is_some).collect();
            let stages = job.stages();
            let ready: Vec<usize> = (0..count)
                .filter(|&s| !started[s] && stages[s].inputs.iter().all(|i| done[*i]))
                .collect();
            // A large scan waits for the other side of its join, which may turn out small
            // (unless nothing else could run).
            let waiting: BTreeSet<usize> = broadcast::broadcastable(&stages, &gathered)
                .into_iter()
                .filter(|b| {
                    !refused.contains(&b.consumer)
                        && !done[b.small]
                        && broadcast::worth_waiting(&stages, b)
                })
                .map(|b| b.large)
                .chain(
                    keyfilter::filterable(&stages)
                        .into_iter()
                        .filter(|f| {
                            !filtered.contains(&f.large)
                                && !done[f.small]
                                && keyfilter::worth_waiting(&stages, f)
                        })
                        .map(|f| f.large),
                )
                .collect();
            let not_waiting: Vec<usize> = ready
                .iter()
                .copied()
                .filter(|s| !waiting.contains(s))
                .collect();
            let ready = if not_waiting.is_empty() && running.is_empty() {
                ready
            } else {
                not_waiting
            };
            for s in ready {
                started[s] = true;
                let job = &job;
                running.push(async move { (s, self.run_stage(job, s).await) });
            }
            match running.next().await {
                Some((s, report)) => reports[s] = Some(report?),
                None => break,
            }
        }
        let mut reports: Vec<StageReport> = reports.into_iter().flatten().collect();
        for report in &mut reports {
            report.recomputed = job.recomputed[report.stage as usize - 1].load(Ordering::Relaxed);
        }
        let schema = root.schema();
        // A few batches ahead of the reader: a client that reads slowly holds the final stage
        // back instead of the coordinator buffering the whole answer.
        let (sender, batches) = tokio::sync::mpsc::channel(4);
        let task_ctx = ctx.task_ctx();
        let work = async move {
            let mut stream =
                match tern_exec::datafusion::physical_plan::execute_stream(root, task_ctx) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = sender.send(Err(query_error(e))).await;
                        return;
                    }
                };
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if sender.send(batch.map_err(query_error)).await.is_err() || failed {
                    return;
                }
            }
        };
        let work = match &self.runtime {
            Some(runtime) => runtime.spawn(work),
            None => tokio::spawn(work),
        };
        Ok(Answer {
            schema,
            batches,
            reports,
            started: Instant::now(),
            rows: 0,
            _work: AbortOnDrop(work.abort_handle()),
        })
    }

    /// Run the uncorrelated scalar subqueries of `plan` first, each as a job of its own, and
    /// cut the query again with their values written in (see [`subquery`]); `plan` as it is
    /// when it has none, or when a value is read where it cannot be written in.
    async fn answer_scalar_subqueries(
        &self,
        ctx: &SessionContext,
        plan: StagePlan,
    ) -> Result<StagePlan, SchedError> {
        let Some(exec) = subquery::outermost(&plan.whole) else {
            return Ok(plan);
        };
        // Each runs as a job whose id sets the top four bits (below): at most 15 distinct
        // ones, or two would share an id (and a released job's id is refused by the nodes).
        if exec.subqueries().len() > 15 {
            return Ok(plan);
        }
        for (i, link) in exec.subqueries().iter().enumerate() {
            // Job ids use the bits below 60 (node, time, a counter): a subquery's job sets
            // the top four, so its kept outputs never mix with another job's.
            let job = self.job ^ (((i as u64 % 15) + 1) << 60);
            let inner = Coordinator {
                transport: self.transport,
                board: self.board,
                nodes: self.nodes.clone(),
                patience: self.patience,
                job,
                runtime: self.runtime.clone(),
                progress: None,
                answer_limit: self.answer_limit,
            };
            let staged = cut(link.plan.clone(), job).map_err(query_error)?;
            // Subqueries inside the subquery stay where the cut put them (not recursive).
            let mut answer = inner.run_cut(ctx, staged).await;
            let mut batches = Vec::new();
            if let Ok(answer) = &mut answer {
                while let Some(batch) = answer.next_batch().await {
                    match batch {
                        Ok(batch) => batches.push(batch),
                        Err(e) => {
                            inner.release().await;
                            return Err(e);
                        }
                    }
                }
            }
            inner.release().await;
            answer?;
            let value = subquery::value_of(&batches, &link.plan.schema()).map_err(query_error)?;
            exec.results().set(link.index, value).map_err(query_error)?;
        }
        match subquery::written_in(plan.whole.clone()).map_err(query_error)? {
            Some(whole) => cut(whole, self.job).map_err(query_error),
            None => Ok(plan),
        }
    }

    /// The stages as they stand, for the client's progress display.
    fn report_planned(&self, job: &Job) {
        let stages = job.stages();
        let mut planned: Vec<StagePlanned> = stages
            .iter()
            .enumerate()
            .map(|(s, stage)| StagePlanned {
                stage: s as u32 + 1,
                what: stage.what(),
                tasks: stage.tasks as u64,
            })
            .collect();
        planned.push(StagePlanned {
            stage: stages.len() as u32 + 1,
            what: FINAL_STAGE.into(),
            tasks: 1,
        });
        self.report_progress(QueryEvent::Planned { stages: planned });
    }

    /// Tell every node the job is over, so they drop what they kept for it (best effort; a
    /// node that misses it drops the outputs when they are old).
    pub async fn release(&self) {
        let request = Request::ReleaseJob { job: self.job };
        let calls = self.nodes.values().filter(|n| n.live).map(|n| {
            tokio::time::timeout(
                Duration::from_secs(2),
                self.transport.call(&n.addr, request.clone()),
            )
        });
        futures::future::join_all(calls).await;
    }

    async fn run_stage(&self, job: &Job, s: usize) -> Result<StageReport, SchedError> {
        let started = Instant::now();
        let stage = &job.stage(s);
        // Outputs this stage reads that sit on a node already known lost are made again
        // first, instead of every task finding out on its own, each after a wait.
        self.recover_inputs(job, s).await?;
        // Enough in flight to fill every slot; the board decides where each one runs.
        let in_flight = (self.nodes.len() * self.board.slots() * 2).max(1);
        let mut done = futures::stream::iter(self.batches(job, s))
            .map(|batch| self.run_batch(job, s, batch))
            .buffer_unordered(in_flight);
        let mut report = StageReport {
            stage: s as u32 + 1,
            what: stage.what(),
            tasks: stage.tasks as u64,
            ..Default::default()
        };
        let mut finished = 0u64;
        while let Some(tasks) = done.next().await {
            let tasks = tasks?;
            finished += tasks.len() as u64;
            for task in tasks {
                report.rows += task.rows;
                report.retries += task.retries;
                report.spilled += task.spilled;
                let counts = if task.local {
                    &mut report.local
                } else {
                    &mut report.remote
                };
                *counts.entry(task.node).or_default() += 1;
                if let StageOutput::Coordinator(input) = &stage.output {
                    let bytes: usize = task.batches.iter().map(|b| b.get_array_memory_size()).sum();
                    let held = job.held.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
                    if held > self.answer_limit {
                        return Err(SchedError::AnswerTooLarge {
                            stage: s + 1,
                            limit: self.answer_limit,
                        });
                    }
                    input.set_output(task.index, task.batches);
                }
            }
            self.report_progress(QueryEvent::Progress {
                stage: report.stage,
                done: finished,
                retries: report.retries,
            });
        }
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    fn is_live(&self, job: &Job, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.live) && !job.is_lost(*id)
    }

    /// Stage `s`'s tasks in the batches they are sent in: one task each unless the stage has
    /// many more tasks than the cluster has slots. Then each scan task is given to the least
    /// loaded of its live holders and each holder's tasks are cut into batches (so a batch
    /// reads locally), interleaved between holders so every node starts at once.
    fn batches(&self, job: &Job, s: usize) -> Vec<Vec<usize>> {
        let stage = &job.stage(s);
        let live = self.nodes.keys().filter(|id| self.is_live(job, id)).count();
        let slots = (live * self.board.slots()).max(1);
        // A batch builds a broadcast join's hash table once for all its tasks: one per slot.
        let per_slot = match stage.broadcast.or(stage.filtered_by) {
            Some(_) => 1,
            None => TASKS_PER_SLOT_UNBATCHED,
        };
        if stage.tasks <= slots * per_slot {
            return (0..stage.tasks).map(|i| vec![i]).collect();
        }
        let size = stage.tasks.div_ceil(slots * per_slot).min(MAX_BATCH_TASKS);
        let Some(scan) = stage.scan() else {
            return (0..stage.tasks)
                .collect::<Vec<_>>()
                .chunks(size)
                .map(<[usize]>::to_vec)
                .collect();
        };
        let mut per_holder: std::collections::BTreeMap<NodeId, Vec<usize>> = Default::default();
        let mut alone = Vec::new();
        for (i, part) in scan.partitions().iter().enumerate() {
            let holder = part
                .holders
                .iter()
                .filter(|h| self.is_live(job, h))
                .min_by_key(|h| (per_holder.get(h).map_or(0, Vec::len), **h));
            match holder {
                Some(h) => per_holder.entry(*h).or_default().push(i),
                // No live holder: alone, so it fails naming its partition.
                None => alone.push(vec![i]),
            }
        }
        let mut runs: Vec<std::collections::VecDeque<Vec<usize>>> = per_holder
            .into_values()
            .map(|tasks| {
                let mut batches = std::collections::VecDeque::new();
                let (mut batch, mut bytes) = (Vec::new(), 0u64);
                for i in tasks {
                    let size_of = scan.partitions()[i].bytes;
                    if !batch.is_empty()
                        && (batch.len() >= size || bytes + size_of > MAX_BATCH_BYTES)
                    {
                        batches.push_back(std::mem::take(&mut batch));
                        bytes = 0;
                    }
                    batch.push(i);
                    bytes += size_of;
                }
                if !batch.is_empty() {
                    batches.push_back(batch);
                }
                batches
            })
            .collect();
        let mut out = alone;
        while runs.iter().any(|r| !r.is_empty()) {
            for run in &mut runs {
                if let Some(batch) = run.pop_front() {
                    out.push(batch);
                }
            }
        }
        out
    }

    /// Run a batch of tasks of stage `s` as one request to one node; if that fails, each
    /// task on its own (with its retries and recomputation).
    async fn run_batch(
        &self,
        job: &Job,
        s: usize,
        batch: Vec<usize>,
    ) -> Result<Vec<TaskDone>, SchedError> {
        if batch.len() == 1 {
            return Ok(vec![self.run_task(job, s, batch[0]).await?]);
        }
        let stage = &job.stage(s);
        let anywhere: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|id| self.is_live(job, id))
            .copied()
            .collect();
        let preferred: Vec<NodeId> = match stage.scan() {
            Some(scan) => anywhere
                .iter()
                .filter(|n| {
                    batch
                        .iter()
                        .all(|&i| scan.partitions()[i].holders.contains(n))
                })
                .copied()
                .collect(),
            None => anywhere.clone(),
        };
        if !anywhere.is_empty() {
            let (plan, partitions) = stage
                .task_plan(&batch, &job.located(s))
                .map_err(query_error)?;
            let plan = encode_plan(plan).map_err(query_error)?;
            let specs: Vec<TaskSpec> = batch
                .iter()
                .zip(partitions)
                .map(|(&index, partition)| TaskSpec {
                    partition: partition as u32,
                    output: self.output_of(stage, s, index),
                })
                .collect();
            let blocks: Vec<BlockHash> = match stage.scan() {
                Some(scan) => batch.iter().map(|&i| scan.partitions()[i].block).collect(),
                None => Vec::new(),
            };
            let warm = self.board.warm_holder(&blocks, &preferred);
            let slot = self
                .board
                .take(
                    self.job,
                    &preferred,
                    &anywhere,
                    warm,
                    self.patience.locality_wait,
                )
                .await;
            let (node, local) = (slot.node, slot.local);
            let addr = self.nodes[&node].addr.clone();
            debug!(
                job = self.job,
                stage = s + 1,
                tasks = batch.len(),
                node,
                "batch sent"
            );
            let attempt = tokio::time::timeout(
                self.patience.task_deadline,
                self.send_tasks(&addr, plan, &specs),
            )
            .await
            .unwrap_or_else(|_| Err(Attempt::Retry("no answer in time".into())));
            drop(slot);
            match attempt {
                Ok(sent) => {
                    let mut done = Vec::with_capacity(batch.len());
                    if local {
                        self.board.scanned(
                            blocks
                                .iter()
                                .zip(&sent)
                                .filter(|(_, t)| t.remote_reads == 0)
                                .map(|(b, _)| *b),
                            node,
                        );
                    }
                    for (index, sent) in batch.iter().zip(sent) {
                        if stage_keeps(stage) {
                            lock(&job.locations[s])[*index] = Some(TaskLocation {
                                node,
                                addr: addr.clone(),
                                rows: sent.rows,
                                bytes: sent.kept_bytes,
                            });
                        }
                        done.push(TaskDone {
                            index: *index,
                            batches: sent.batches,
                            rows: sent.rows,
                            node,
                            local: local && sent.remote_reads == 0,
                            retries: 0,
                            spilled: sent.spilled,
                        });
                    }
                    return Ok(done);
                }
                Err(Attempt::Fatal(reason)) => return Err(SchedError::Query(reason)),
                Err(Attempt::Unreachable(reason)) => {
                    warn!(job = self.job, stage = s + 1, node, %reason, "node unreachable; no more tasks of this job go there");
                    lock(&job.lost).insert(node);
                }
                Err(_) => {}
            }
        }
        let runs = futures::future::join_all(batch.iter().map(|&i| self.run_task(job, s, i))).await;
        runs.into_iter().collect()
    }

    fn output_of(&self, stage: &Stage, s: usize, index: usize) -> Option<ShuffleOutput> {
        stage_keeps(stage).then_some(ShuffleOutput {
            job: self.job,
            stage: s as u32,
            task: index as u32,
        })
    }

    /// Run task `index` of stage `s` until one node does it: a scan's task on a live holder
    /// of its block first, then on other nodes; a lost input is recomputed first.
    fn run_task<'s>(
        &'s self,
        job: &'s Job,
        s: usize,
        index: usize,
    ) -> BoxFuture<'s, Result<TaskDone, SchedError>> {
        async move {
            let stage = &job.stage(s);
            let live = |id: &NodeId| self.is_live(job, id);
            let holders: Option<Vec<NodeId>> = match stage.scan() {
                Some(scan) => {
                    let part = &scan.partitions()[index];
                    let holders: Vec<NodeId> = part.holders.iter().copied().filter(live).collect();
                    if holders.is_empty() {
                        return Err(self.unavailable(stage, index, format!(
                            "all of its holders ({}) are down",
                            join(&part.holders)
                        )));
                    }
                    Some(holders)
                }
                None => None,
            };
            let output = self.output_of(stage, s, index);
            let mut tried: Vec<NodeId> = Vec::new();
            let mut reasons = Vec::new();
            let mut recoveries = 0;
            // Every live holder once, then two other nodes (which fetch the block remotely);
            // a task without a block: three nodes.
            let budget = holders.as_ref().map_or(3, |h| h.len() + 2);
            while tried.len() < budget {
                let anywhere: Vec<NodeId> = self
                    .nodes
                    .values()
                    .filter(|n| live(&n.id) && !tried.contains(&n.id))
                    .map(|n| n.id)
                    .collect();
                if anywhere.is_empty() {
                    break;
                }
                let preferred: Vec<NodeId> = match &holders {
                    Some(h) => h.iter().filter(|n| anywhere.contains(n)).copied().collect(),
                    None => anywhere.clone(),
                };
                let (plan, partitions) = stage
                    .task_plan(&[index], &job.located(s))
                    .map_err(query_error)?;
                let spec = TaskSpec {
                    partition: partitions[0] as u32,
                    output,
                };
                let plan = encode_plan(plan).map_err(query_error)?;
                let block = stage.scan().map(|scan| scan.partitions()[index].block);
                let warm = block.and_then(|b| self.board.warm_holder(&[b], &preferred));
                let slot = self
                    .board
                    .take(self.job, &preferred, &anywhere, warm, self.patience.locality_wait)
                    .await;
                let node = slot.node;
                let addr = self.nodes[&node].addr.clone();
                debug!(job = self.job, stage = s + 1, task = index, node, "task sent");
                let attempt = tokio::time::timeout(
                    self.patience.task_deadline,
                    self.send_tasks(&addr, plan, std::slice::from_ref(&spec)),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Attempt::Retry(format!(
                        "no answer within {} s",
                        self.patience.task_deadline.as_secs()
                    )))
                });
                let local = slot.local;
                drop(slot);
                debug!(job = self.job, stage = s + 1, task = index, node, ok = attempt.is_ok(), "task answered");
                match attempt.map(|mut sent| sent.remove(0)) {
                    Ok(sent) => {
                        if let Some(block) = block.filter(|_| local && sent.remote_reads == 0) {
                            self.board.scanned([block], node);
                        }
                        if output.is_some() {
                            lock(&job.locations[s])[index] = Some(TaskLocation {
                                node,
                                addr,
                                rows: sent.rows,
                                bytes: sent.kept_bytes,
                            });
                        }
                        return Ok(TaskDone {
                            index,
                            batches: sent.batches,
                            rows: sent.rows,
                            node,
                            local: local && sent.remote_reads == 0,
                            retries: tried.len() as u64,
                            spilled: sent.spilled,
                        });
                    }
                    Err(Attempt::Fatal(reason)) => return Err(SchedError::Query(reason)),
                    Err(Attempt::Lost { stage: from, node: gone }) if recoveries < MAX_RECOVERIES && from < s => {
                        recoveries += 1;
                        warn!(job = self.job, stage = s + 1, task = index, from = from + 1, node = gone, "an input was lost; recomputing it");
                        lock(&job.lost).insert(gone);
                        self.recover_inputs(job, s).await?;
                    }
                    Err(Attempt::Lost { stage: from, node: gone }) => {
                        reasons.push(format!("node {node}: the output of stage {} on node {gone} was lost again", from + 1));
                        tried.push(node);
                    }
                    Err(Attempt::Unreachable(reason)) => {
                        warn!(job = self.job, stage = s + 1, task = index, node, %reason, "node unreachable; no more tasks of this job go there");
                        lock(&job.lost).insert(node);
                        reasons.push(format!("node {node}: {reason}"));
                        tried.push(node);
                    }
                    Err(Attempt::Retry(reason)) => {
                        warn!(job = self.job, stage = s + 1, task = index, node, %reason, "task failed; trying another node");
                        reasons.push(format!("node {node}: {reason}"));
                        tried.push(node);
                    }
                }
            }
            info!(job = self.job, stage = s + 1, task = index, "task failed everywhere");
            let reason = if reasons.is_empty() {
                "no live node to run it".to_string()
            } else {
                reasons.join("; ")
            };
            Err(match stage.scan() {
                Some(_) => self.unavailable(stage, index, reason),
                None => SchedError::TaskFailed {
                    stage: s + 1,
                    task: index,
                    reason,
                },
            })
        }
        .boxed()
    }

    /// Recompute every output stage `s` reads that is kept on a node known lost (the inputs
    /// at once): one node's death costs one round of recomputation, not one per input.
    async fn recover_inputs(&self, job: &Job, s: usize) -> Result<(), SchedError> {
        let mut redo = Vec::new();
        for &input in &job.stage(s).inputs {
            let gone: BTreeSet<NodeId> = lock(&job.locations[input])
                .iter()
                .flatten()
                .map(|at| at.node)
                .filter(|node| job.is_lost(*node))
                .collect();
            redo.extend(gone.into_iter().map(|node| (input, node)));
        }
        if !redo.is_empty() {
            info!(job = self.job, stage = s + 1, lost = ?redo, "recomputing inputs kept on lost nodes");
        }
        let runs = redo
            .iter()
            .map(|&(input, node)| self.recover(job, input, node));
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// The outputs stage `from` kept on `gone` cannot be read: run those tasks again
    /// elsewhere (once, however many readers found out).
    async fn recover(&self, job: &Job, from: usize, gone: NodeId) -> Result<(), SchedError> {
        let _one_at_a_time = job.recovering[from].lock().await;
        lock(&job.lost).insert(gone);
        let redo: Vec<usize> = lock(&job.locations[from])
            .iter()
            .enumerate()
            .filter(|(_, at)| at.as_ref().is_some_and(|at| at.node == gone))
            .map(|(i, _)| i)
            .collect();
        let runs =
            futures::future::join_all(redo.iter().map(|&t| self.run_task(job, from, t))).await;
        for run in runs {
            run?;
        }
        job.recomputed[from].fetch_add(redo.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn unavailable(&self, stage: &Stage, index: usize, reason: String) -> SchedError {
        let scan = stage.scan().expect("a scan stage");
        let part = &scan.partitions()[index];
        SchedError::PartitionUnavailable {
            dataset: scan.dataset().to_string(),
            partition: part.index,
            block: part.block.prefix(12).to_string(),
            reason,
        }
    }

    /// Send tasks to the node at `addr`: how each ran, with the rows of those not kept.
    /// Send `tasks` to the node at `addr`; a node that dies meanwhile is noticed by its
    /// silence to pings ([`while_alive`]), not the connection's idle timeout.
    async fn send_tasks(
        &self,
        addr: &str,
        plan: Vec<u8>,
        tasks: &[TaskSpec],
    ) -> Result<Vec<Sent>, Attempt> {
        while_alive(
            self.transport,
            addr,
            self.send_tasks_once(addr, plan, tasks),
        )
        .await
        .unwrap_or_else(|gone| Err(Attempt::Unreachable(gone.to_string())))
    }

    async fn send_tasks_once(
        &self,
        addr: &str,
        plan: Vec<u8>,
        tasks: &[TaskSpec],
    ) -> Result<Vec<Sent>, Attempt> {
        let unreachable = |e: &dyn std::fmt::Display| Attempt::Unreachable(e.to_string());
        let request = Request::RunTask {
            job: self.job,
            plan,
            tasks: tasks.to_vec(),
        };
        let (writer, mut reader) = self
            .transport
            .open_bulk(addr, &request)
            .await
            .map_err(|e| unreachable(&e))?;
        writer.finish().await.map_err(|e| unreachable(&e))?;
        let stats = match reader.response().await.map_err(|e| unreachable(&e))? {
            Response::TaskOutput { tasks: stats } if stats.len() == tasks.len() => stats,
            Response::ShuffleLost { stage, node, .. } => {
                return Err(Attempt::Lost {
                    stage: stage as usize,
                    node,
                });
            }
            // The query's own error, or stored bytes that are bad on every holder (their hash
            // matched, so all copies are the same): another node would fail the same way.
            Response::Error(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::BadData) => {
                return Err(Attempt::Fatal(e.message));
            }
            Response::Error(e) => return Err(Attempt::Retry(e.message)),
            other => return Err(Attempt::Retry(format!("unexpected answer {other:?}"))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.map_err(|e| unreachable(&e))? {
            bytes.extend_from_slice(&chunk);
        }
        let mut sent = Vec::with_capacity(stats.len());
        let mut at = 0usize;
        for (task, stat) in tasks.iter().zip(stats) {
            let end = at + stat.bytes as usize;
            let batches = if task.output.is_some() {
                Vec::new()
            } else {
                let ipc = bytes
                    .get(at..end)
                    .ok_or_else(|| Attempt::Retry("answer shorter than announced".into()))?;
                ipc_to_batches(ipc.to_vec())
                    .map_err(|e| Attempt::Retry(e.to_string()))?
                    .1
            };
            at = end;
            sent.push(Sent {
                batches,
                rows: stat.rows,
                kept_bytes: stat.kept_bytes,
                remote_reads: stat.remote_reads,
                spilled: stat.spilled,
            });
        }
        Ok(sent)
    }
}

fn stage_keeps(stage: &Stage) -> bool {
    matches!(stage.output, StageOutput::Kept)
}

/// Plan `sql` in `ctx` and cut it into stages for job `job`.
pub async fn plan_query(
    ctx: &SessionContext,
    sql: &str,
    job: u64,
) -> Result<StagePlan, SchedError> {
    // Queries only: DDL and DML would create tables or write files on the coordinator.
    let options = tern_exec::datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(query_error)?;
    // No more shuffle buckets than the partitions read: a small query stays small.
    let width = shuffle_width(ctx, frame.logical_plan()).await;
    let mut state = ctx.state();
    state.config_mut().options_mut().execution.target_partitions = width;
    let frame = DataFrame::new(state, frame.into_unoptimized_plan());
    let plan = frame.create_physical_plan().await.map_err(query_error)?;
    // A literal copied into every row of every batch must fit what a batch may hold.
    tern_exec::check_plan_literals(&plan).map_err(query_error)?;
    let plan = tern_exec::semi_joins_first(plan).map_err(query_error)?;
    cut(plan, job).map_err(query_error)
}

/// Buckets of a hash shuffle: the session's target (the cluster's slots), but no more than
/// the stored partitions the query reads.
async fn shuffle_width(ctx: &SessionContext, plan: &LogicalPlan) -> usize {
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut partitions = 0;
    for table in tables {
        if let Ok(provider) = ctx.table_provider(table).await {
            partitions += provider
                .downcast_ref::<tern_exec::StoredTable>()
                .map_or(1, |t| t.partition_count());
        }
    }
    ctx.copied_config()
        .target_partitions()
        .min(partitions)
        .max(1)
}

fn join(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
