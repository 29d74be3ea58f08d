//! The per-query coordinator: plans a SQL query with DataFusion, cuts the physical plan into
//! stages ([`stages`]: scans and partial aggregates, hash shuffles, joins, final aggregates),
//! runs each stage once the stages it reads are done, sends each task to the least busy
//! holder of its block that has a free slot ([`LoadBoard`]) or, for tasks over shuffled data,
//! to the least busy node; retries a task whose node fails on another node, recomputes the
//! kept outputs of a node that is lost before they are read, and runs the final stage itself
//! (the stages' tasks: `tasks.rs`). Task graphs have their coordinator beside it
//! ([`GraphCoordinator`], `graph.rs`), on the same [`LoadBoard`].
//!
//! It owns stages, placement, retries and recomputation. It does not run tasks (a node does, with
//! `tern-exec`), know how blocks are read, or know the node: the node hands it a
//! [`Transport`], the live nodes, and a DataFusion session with the datasets registered.
//! Every wait has a deadline: a task that does not answer in time is retried elsewhere, and a
//! query fails with the partition and the reason when none of its holders can serve it.

pub mod board;
pub mod broadcast;
pub mod graph;
mod graph_run;
pub mod keyfilter;
pub mod liveness;
pub mod stages;
pub mod subquery;
mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tern_exec::TaskLocation;
use tern_exec::arrow::datatypes::SchemaRef;
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::common::tree_node::TreeNodeRecursion;
use tern_exec::datafusion::logical_expr::LogicalPlan;
use tern_exec::datafusion::prelude::{DataFrame, SessionContext};
use tern_proto::{NodeId, QueryEvent, Request, StagePlanned, StageReport, Transport};
use tracing::{info, warn};

pub use board::LoadBoard;
pub use graph::{GraphCoordinator, PreparedGraph};
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
