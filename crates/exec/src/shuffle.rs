//! Shuffles: a task's output split into buckets that stay on the node that computed them
//! ([`run_shuffle_task`]), and the leaf that reads them back in a later stage
//! ([`ShuffleReaderExec`], fetching through the session's [`ShuffleFetcher`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tern_proto::NodeId;

use crate::ipc::ipc_buffer_to_batches;
use crate::{ExecError, batches_to_ipc};

/// Which stored shuffle output to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShuffleKey {
    pub job: u64,
    pub stage: u32,
    pub task: u32,
    pub bucket: u32,
}

/// Where the shuffle outputs of one earlier stage are: one producing node per task.
pub trait ShuffleFetcher: Send + Sync + 'static {
    /// The buckets `keys`, all kept on `node` at `addr`, in order, each an Arrow IPC stream
    /// of every column or only of `columns` (a node may leave the others out, or not).
    fn fetch(
        &self,
        keys: Vec<ShuffleKey>,
        columns: Option<Vec<usize>>,
        node: NodeId,
        addr: String,
    ) -> ShuffleFuture;
}

/// Buckets' bytes as Arrow buffers: a bucket kept on the reading node is shared, not
/// copied, and its columns are read in place.
pub type ShuffleFuture = Pin<Box<dyn Future<Output = Result<Vec<Buffer>, String>> + Send>>;

/// About how many bytes of buckets one fetch asks a node for (estimated from the producing
/// tasks' output sizes): few round trips, a bounded answer.
pub const FETCH_BYTES: u64 = 4 << 20;

/// The extension a session carries so shuffle readers find their inputs.
pub(crate) struct FetcherHandle(pub(crate) Arc<dyn ShuffleFetcher>);

/// How a reader's output partitions map onto the producing stage's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// Partition `j` is bucket `j` of every producing task (after a hash exchange).
    Bucket,
    /// Partition `i` is everything producing task `i` made (a gather or merge reads them all).
    PerTask,
}

/// The producing node of one task of an earlier stage, and how many rows it left there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLocation {
    pub node: NodeId,
    pub addr: String,
    /// Rows of the task's output, all buckets together: what a later stage's plan is
    /// adapted to (see [`crate::build_on_smaller_sides`]).
    pub rows: u64,
    /// Bytes of the task's output, all buckets together (Arrow IPC).
    pub bytes: u64,
}

/// Reads what an earlier stage's tasks left on their nodes.
#[derive(Debug, Clone)]
pub struct ShuffleReaderExec {
    pub(crate) job: u64,
    pub(crate) stage: u32,
    pub(crate) mode: ReadMode,
    /// Producing tasks of the stage, in task order; empty until the stage has run.
    pub(crate) locations: Vec<TaskLocation>,
    pub(crate) tasks: usize,
    /// The columns of the producing stage's output it reads (all when `None`): a remote
    /// node sends only those.
    pub(crate) columns: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    /// A reader of stage `stage`'s `tasks` outputs with the given output `partitioning`
    /// (for [`ReadMode::PerTask`] its partition count is `tasks`).
    pub fn new(
        job: u64,
        stage: u32,
        mode: ReadMode,
        tasks: usize,
        schema: SchemaRef,
        partitioning: Partitioning,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self::with_properties(job, stage, mode, tasks, properties)
    }

    /// A reader whose output looks exactly like `properties` (partitioning and orderings of
    /// the operator it replaces, for the planner's view on the coordinator).
    pub fn with_properties(
        job: u64,
        stage: u32,
        mode: ReadMode,
        tasks: usize,
        properties: Arc<PlanProperties>,
    ) -> Self {
        Self {
            job,
            stage,
            mode,
            locations: Vec::new(),
            tasks,
            columns: None,
            properties,
        }
    }

    /// The same reader keeping only `columns` of its output (a key filter's build side needs
    /// the join keys only; the rest would cross the network for nothing).
    pub fn projected(&self, columns: Vec<usize>) -> Result<Self> {
        let schema = Arc::new(self.schema().project(&columns)?);
        let partitions = self.properties.partitioning.partition_count();
        let columns = match &self.columns {
            Some(kept) => columns.iter().map(|&c| kept[c]).collect(),
            None => columns,
        };
        Ok(Self {
            columns: Some(columns),
            ..Self::new(
                self.job,
                self.stage,
                self.mode,
                self.tasks,
                schema,
                Partitioning::UnknownPartitioning(partitions),
            )
            .located(self.locations.clone())
        })
    }

    pub fn stage(&self) -> u32 {
        self.stage
    }

    /// The job whose outputs it reads.
    pub fn job(&self) -> u64 {
        self.job
    }

    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// Rows the producing stage made, once every task of it has run.
    pub fn rows(&self) -> Option<u64> {
        (self.locations.len() == self.tasks && self.tasks > 0)
            .then(|| self.locations.iter().map(|at| at.rows).sum())
    }

    /// The same reader of a stage that now runs `tasks` tasks (its plan changed before it
    /// ran: see `tern_sched`'s run-time broadcast joins). Only hash-exchanged outputs can
    /// change producers: a bucket reader's partitions do not depend on them.
    pub fn producing(&self, tasks: usize) -> Self {
        Self {
            tasks,
            ..self.clone()
        }
    }

    /// The same reader, told where the producing tasks ran.
    pub fn located(&self, locations: Vec<TaskLocation>) -> Self {
        Self {
            locations,
            ..self.clone()
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match self.mode {
            ReadMode::Bucket => "its bucket of every task",
            ReadMode::PerTask => "one task's output per partition",
        };
        write!(
            f,
            "ShuffleReaderExec: stage {}, {what}, partitions={}",
            self.stage + 1,
            self.properties.partitioning.partition_count()
        )?;
        match &self.columns {
            Some(columns) => write!(f, ", columns={columns:?}"),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    /// Exact rows once the producing stage has run (what join sides are chosen by); a
    /// partition's share is an estimate, hashing is not even.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        if let Some(total) = self.rows() {
            stats.num_rows = match (args.partition(), self.mode) {
                (None, _) => Precision::Exact(total as usize),
                (Some(i), ReadMode::PerTask) => {
                    Precision::Exact(self.locations.get(i).map_or(0, |at| at.rows) as usize)
                }
                (Some(_), ReadMode::Bucket) => {
                    let parts = self.properties.partitioning.partition_count().max(1);
                    Precision::Inexact(total as usize / parts)
                }
            };
        }
        Ok(Arc::new(stats))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if self.locations.len() != self.tasks {
            return Err(DataFusionError::Internal(format!(
                "stage {} has not run: {} of {} task outputs located",
                self.stage + 1,
                self.locations.len(),
                self.tasks
            )));
        }
        let fetcher = context
            .session_config()
            .get_extension::<FetcherHandle>()
            .ok_or_else(|| {
                DataFusionError::Internal("this session cannot read shuffle outputs".into())
            })?
            .0
            .clone();
        let fetches = match self.mode {
            ReadMode::Bucket => self.bucket_fetches(partition),
            ReadMode::PerTask => vec![(
                self.locations[partition].clone(),
                vec![self.key(partition, 0)],
            )],
        };
        let stage = self.stage;
        let columns = self.columns.clone();
        let fetches = futures::stream::iter(fetches)
            .map(move |(at, keys)| {
                let (fetcher, columns) = (fetcher.clone(), columns.clone());
                async move {
                    let tasks: Vec<String> =
                        keys.iter().map(|k| (k.task + 1).to_string()).collect();
                    let buckets = fetcher
                        .fetch(keys, columns.clone(), at.node, at.addr.clone())
                        .await
                        .map_err(|reason| {
                            DataFusionError::Execution(format!(
                                "output of stage {} (task {}) on node {}: {reason}",
                                stage + 1,
                                tasks.join(", "),
                                at.node
                            ))
                        })?;
                    let mut batches = Vec::new();
                    for bytes in buckets {
                        let (_, more) = ipc_buffer_to_batches(bytes)
                            .map_err(|e| DataFusionError::External(Box::new(e)))?;
                        for batch in more {
                            batches.push(match &columns {
                                Some(kept) if batch.num_columns() != kept.len() => {
                                    batch.project(kept)?
                                }
                                _ => batch,
                            });
                        }
                    }
                    Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
                }
            })
            // A few fetches at once: enough to hide a round trip, few enough to bound memory.
            .buffered(4)
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            fetches,
        )))
    }
}

impl ShuffleReaderExec {
    /// Bucket `bucket` of every producing task, as fetches of a node's buckets together (one
    /// request instead of one per task: a stage reading a 26-partition scan made 26 round
    /// trips per task), each about [`FETCH_BYTES`] at most, taking the nodes in turn so they
    /// all serve at once.
    fn bucket_fetches(&self, bucket: usize) -> Vec<(TaskLocation, Vec<ShuffleKey>)> {
        let buckets = self.properties.partitioning.partition_count().max(1) as u64;
        // Per node: its fetches so far, and the estimated bytes of the last one.
        let mut per_node: std::collections::BTreeMap<
            NodeId,
            (Vec<(TaskLocation, Vec<ShuffleKey>)>, u64),
        > = Default::default();
        for (task, at) in self.locations.iter().enumerate() {
            let (fetches, last_bytes) = per_node.entry(at.node).or_default();
            let bytes = at.bytes / buckets;
            match fetches.last_mut() {
                Some((_, keys)) if *last_bytes + bytes <= FETCH_BYTES => {
                    keys.push(self.key(task, bucket));
                    *last_bytes += bytes;
                }
                _ => {
                    fetches.push((at.clone(), vec![self.key(task, bucket)]));
                    *last_bytes = bytes;
                }
            }
        }
        let mut runs: Vec<std::collections::VecDeque<_>> = per_node
            .into_values()
            .map(|(fetches, _)| std::collections::VecDeque::from(fetches))
            .collect();
        let mut out = Vec::new();
        while runs.iter().any(|r| !r.is_empty()) {
            for run in &mut runs {
                out.extend(run.pop_front());
            }
        }
        out
    }

    fn key(&self, task: usize, bucket: usize) -> ShuffleKey {
        ShuffleKey {
            job: self.job,
            stage: self.stage,
            task: task as u32,
            bucket: bucket as u32,
        }
    }
}

/// Run `partition` of `plan` and split its rows into buckets: when the plan's root is a hash
/// [`RepartitionExec`], by its hash (one bucket per output partition) after running its
/// input; otherwise everything is bucket 0. Returns the buckets as Arrow IPC streams and the
/// rows in each.
pub async fn run_shuffle_task(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<Vec<(Vec<u8>, u64)>, ExecError> {
    let hashed = plan
        .downcast_ref::<RepartitionExec>()
        .filter(|r| matches!(r.partitioning(), Partitioning::Hash(..)))
        .map(|r| (r.input().clone(), r.partitioning().clone()));
    let (input, partitioning) = match hashed {
        Some((input, partitioning)) => (input, Some(partitioning)),
        None => (plan, None),
    };
    let schema = input.schema();
    let buckets = partitioning
        .as_ref()
        .map_or(1, |p| p.partition_count().max(1));
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); buckets];
    let mut partitioner = match partitioning {
        Some(p) => Some(BatchPartitioner::try_new(
            p,
            metrics::Time::new(),
            partition,
            1,
        )?),
        None => None,
    };
    let mut stream = input.execute(partition, context)?;
    while let Some(batch) = stream.try_next().await? {
        match partitioner.as_mut() {
            Some(p) => p.partition(batch, |bucket, part| {
                out[bucket].push(part);
                Ok(())
            })?,
            None => out[0].push(batch),
        }
    }
    out.into_iter()
        .map(|batches| {
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            Ok((batches_to_ipc(&schema, &batches)?, rows))
        })
        .collect()
}
