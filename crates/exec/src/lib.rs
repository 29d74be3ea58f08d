//! Running query work on a node with Apache DataFusion.
//!
//! It owns how stored datasets look to DataFusion ([`StoredTable`], whose scan
//! [`PartitionScanExec`] has one output partition per stored partition), how a piece of a
//! physical plan travels between nodes ([`encode_plan`] / [`decode_plan`]: DataFusion's protobuf
//! encoding plus [`TernCodec`] for tern's own operators), how Arrow batches travel (Arrow IPC,
//! [`batches_to_ipc`] / [`ipc_to_batches`]), running one task ([`run_task`], or
//! [`run_shuffle_task`] when its output is split into buckets for a later stage, which reads
//! them with [`ShuffleReaderExec`]), and the memory limit a task runs under (past it, sorts,
//! aggregations and joins spill to disk). Where a partition's or a shuffle's bytes come from
//! is the caller's business ([`BlockReader`], [`ShuffleFetcher`]): the node reads its own store
//! first and other holders after. It does not cut plans into stages or choose nodes (that is
//! `tern-sched`).

mod adapt;
pub mod bounds;
mod cache;
mod codec;
mod guard;
mod ipc;
mod memory;
mod reorder;
mod scan;
mod shuffle;
mod sparse;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use adapt::{build_on_smaller_sides, semi_joins_first};
pub use arrow;
pub use cache::{CachedColumn, ColumnCache};
pub use codec::{TernCodec, check_sources, decode_plan, encode_plan};
pub use datafusion;
pub use guard::{
    DEFAULT_OUTPUT_LIMIT, check_plan_literals, check_type_size, count_calls_against, output_limit,
    set_output_limit,
};
pub use ipc::{batches_to_ipc, compact_views, ipc_buffer_to_batches, ipc_to_batches, project_ipc};
pub use memory::{NodeMemory, NodeReservation};
pub use scan::{
    BlockRead, BlockReader, PartitionScanExec, ReadFuture, StoredTable, schema_from_json,
};
pub use shuffle::{
    ReadMode, ShuffleFetcher, ShuffleFuture, ShuffleKey, ShuffleReaderExec, TaskLocation,
    run_shuffle_task,
};
pub use sparse::{GroupSource, SparseError, read_columns_sparse};
pub use validate::{BadBlock, check_block, check_block_columns};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Plan(String),
    #[error("dataset {name:?} has a schema tern cannot read: {reason}")]
    BadSchema { name: String, reason: String },
    #[error("{0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Session settings every node and coordinator share, so a plan means the same everywhere:
/// no round-robin repartitioning (a stored partition stays one stream, so a task reads one
/// block), and `target_partitions` for the stages after an exchange.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_round_robin_repartition(false)
        .with_information_schema(false);
    // Plans are cut where partitions are exchanged; keep joins and aggregates on hash
    // exchanges the cutter recognizes rather than sort-merge variants.
    config.options_mut().optimizer.prefer_hash_join = true;
    // Dynamic filters connect the partitions of one operator inside one process (a join's
    // build side feeding its probe side's scan); tern runs those partitions as separate
    // tasks, so they stay off.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    config
}

/// How much memory one task (or a coordinator's final stage) may hold, and where it spills
/// what does not fit.
#[derive(Debug, Clone, Default)]
pub struct MemoryLimit {
    /// Bytes; 0 means no limit.
    pub bytes: usize,
    /// Where spill files go (the system's temporary directory when `None`).
    pub spill_dir: Option<PathBuf>,
    /// The budget every task of the node draws from as well (see [`NodeMemory`]).
    pub node: Option<Arc<NodeMemory>>,
}

/// A session whose tasks read partitions through `reader` and shuffle outputs through
/// `fetcher`, under `memory`.
pub fn session(
    target_partitions: usize,
    reader: Arc<dyn BlockReader>,
    fetcher: Arc<dyn ShuffleFetcher>,
    memory: &MemoryLimit,
) -> Result<SessionContext, ExecError> {
    let (config, runtime) = configure(target_partitions, reader, fetcher, memory)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.add_optimizer_rule(Arc::new(reorder::SmallTablesFirst));
    // Functions that size their output from their arguments are checked before they run
    // (constant folding runs them here, while planning).
    for udf in ctx.state().scalar_functions().clone().into_values() {
        if let Some(guarded) = guard::guarded(udf.name()) {
            ctx.register_udf(guarded.as_ref().clone());
        }
    }
    Ok(ctx)
}

/// A session for queries over data handed to it in this process (a graph task's `sql`
/// kernel): tern's settings, the guarded functions, no object stores, no stored tables.
pub fn local_session(target_partitions: usize) -> Result<SessionContext, ExecError> {
    struct Nothing;
    impl BlockReader for Nothing {
        fn read(&self, block: tern_proto::BlockHash, _holders: Vec<u64>) -> ReadFuture {
            Box::pin(async move { Err(format!("block {block}: no stored data here")) })
        }
    }
    impl ShuffleFetcher for Nothing {
        fn fetch(
            &self,
            _keys: Vec<ShuffleKey>,
            _columns: Option<Vec<usize>>,
            _node: u64,
            _addr: String,
        ) -> ShuffleFuture {
            Box::pin(async move { Err("no shuffle outputs here".to_string()) })
        }
    }
    let nothing = Arc::new(Nothing);
    session(
        target_partitions,
        nothing.clone(),
        nothing,
        &MemoryLimit::default(),
    )
}

/// The functions DataFusion knows, gathered once per process: a task's context is made from
/// them ([`task_context`]) instead of a whole session per request, which registers every
/// function and optimizer rule again.
pub struct Functions {
    scalar: HashMap<String, Arc<ScalarUDF>>,
    higher_order: HashMap<String, Arc<HigherOrderUDF>>,
    aggregate: HashMap<String, Arc<AggregateUDF>>,
    window: HashMap<String, Arc<WindowUDF>>,
}

impl Default for Functions {
    fn default() -> Self {
        let state = SessionContext::new().state();
        let mut scalar = state.scalar_functions().clone();
        guard::guard_functions(&mut scalar);
        Self {
            scalar,
            higher_order: state.higher_order_functions().clone(),
            aggregate: state.aggregate_functions().clone(),
            window: state.window_functions().clone(),
        }
    }
}

/// What a task needs to decode and run its plan: the same settings, reader, fetcher and
/// memory limit as [`session`] gives, without planning machinery.
pub fn task_context(
    functions: &Functions,
    target_partitions: usize,
    reader: Arc<dyn BlockReader>,
    fetcher: Arc<dyn ShuffleFetcher>,
    memory: &MemoryLimit,
) -> Result<Arc<TaskContext>, ExecError> {
    let (config, runtime) = configure(target_partitions, reader, fetcher, memory)?;
    Ok(Arc::new(TaskContext::new(
        None,
        "tern-task".into(),
        config,
        functions.scalar.clone(),
        functions.higher_order.clone(),
        functions.aggregate.clone(),
        functions.window.clone(),
        runtime,
    )))
}

fn configure(
    target_partitions: usize,
    reader: Arc<dyn BlockReader>,
    fetcher: Arc<dyn ShuffleFetcher>,
    memory: &MemoryLimit,
) -> Result<
    (
        SessionConfig,
        Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ),
    ExecError,
> {
    let mut config = session_config(target_partitions);
    if memory.bytes > 0 {
        // A sort keeps this much aside for merging what it spilled; by default 10 MiB,
        // more than a small limit holds.
        let execution = &mut config.options_mut().execution;
        execution.sort_spill_reservation_bytes =
            execution.sort_spill_reservation_bytes.min(memory.bytes / 4);
        execution.sort_in_place_threshold_bytes = execution
            .sort_in_place_threshold_bytes
            .min(memory.bytes / 4);
    }
    let config = config
        .with_extension(Arc::new(ReaderHandle(reader)))
        .with_extension(Arc::new(shuffle::FetcherHandle(fetcher)));
    // No object stores at all, not even the local file system's: tasks read blocks through
    // the reader, and a plan naming a file must find nothing to read it with.
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(NoObjectStores));
    if memory.bytes > 0 {
        // Fair between the spilling operators of one task, so one sort cannot starve a join;
        // within what the node's tasks share, so many tasks cannot add up past the node.
        runtime = match &memory.node {
            Some(node) => runtime.with_memory_pool(Arc::new(memory::SharedPool::new(
                memory.bytes,
                node.clone(),
            ))),
            None => runtime.with_memory_pool(Arc::new(FairSpillPool::new(memory.bytes))),
        };
    }
    if let Some(dir) = &memory.spill_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            ExecError::Plan(format!(
                "cannot create spill directory {}: {e}",
                dir.display()
            ))
        })?;
        runtime = runtime.with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
        );
    }
    Ok((config, runtime.build_arc()?))
}

/// An object store registry with nothing in it: see [`configure`].
#[derive(Debug)]
struct NoObjectStores;

impl datafusion::execution::object_store::ObjectStoreRegistry for NoObjectStores {
    fn register_store(
        &self,
        _url: &url::Url,
        _store: Arc<dyn datafusion::object_store::ObjectStore>,
    ) -> Option<Arc<dyn datafusion::object_store::ObjectStore>> {
        None
    }

    fn get_store(
        &self,
        url: &url::Url,
    ) -> datafusion::error::Result<Arc<dyn datafusion::object_store::ObjectStore>> {
        Err(datafusion::error::DataFusionError::Plan(format!(
            "tern reads no files: {url} is not reachable from a query"
        )))
    }
}

/// Bytes the operators of `plan` spilled to disk while it ran.
pub fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut total = 0u64;
    let _ = plan.apply(|node| {
        total += node.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
        Ok(TreeNodeRecursion::Continue)
    });
    total
}

/// The extension a session carries so scans find their blocks.
pub(crate) struct ReaderHandle(pub(crate) Arc<dyn BlockReader>);

/// Run `work` on `runtime` (a pool kept for query work, so it cannot starve the caller's
/// runtime), or here when there is none.
pub async fn on_runtime<T, F>(
    runtime: Option<&tokio::runtime::Handle>,
    work: F,
) -> Result<T, ExecError>
where
    F: std::future::Future<Output = Result<T, ExecError>> + Send + 'static,
    T: Send + 'static,
{
    match runtime {
        Some(runtime) => runtime
            .spawn(work)
            .await
            .map_err(|e| ExecError::Plan(format!("query work stopped: {e}")))?,
        None => work.await,
    }
}

/// Run partition `partition` of `plan` to completion.
pub async fn run_task(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, ExecError> {
    use futures::TryStreamExt;
    let stream = plan.execute(partition, context)?;
    Ok(stream.try_collect().await?)
}

/// Run every partition of `plan` and return all batches, partition by partition.
pub async fn run_all(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, ExecError> {
    Ok(collect(plan, context).await?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::buffer::Buffer;
    use datafusion::physical_plan::displayable;
    use tern_proto::{BlockHash, DatasetRecord, PartitionRecord};

    use super::*;

    struct NoBlocks;
    impl BlockReader for NoBlocks {
        fn read(&self, block: BlockHash, _holders: Vec<u64>) -> ReadFuture {
            Box::pin(async move { Err(format!("no block {block} here")) })
        }
    }
    impl ShuffleFetcher for NoBlocks {
        fn fetch(
            &self,
            keys: Vec<ShuffleKey>,
            _columns: Option<Vec<usize>>,
            _node: u64,
            _addr: String,
        ) -> ShuffleFuture {
            Box::pin(async move { Err(format!("no shuffle output {keys:?} here")) })
        }
    }

    fn record() -> DatasetRecord {
        let schema = r#"[{"name":"id","type":"Int64","nullable":false},{"name":"city","type":"Utf8","nullable":true}]"#;
        DatasetRecord {
            name: "trips".into(),
            version: 1,
            format: "arrow-ipc".into(),
            schema: schema.into(),
            partitions: (0..3u8)
                .map(|i| PartitionRecord {
                    block: BlockHash::of(&[i]),
                    bytes: 10,
                    rows: 1,
                    holders: vec![1, 2, 3],
                })
                .collect(),
            created_ms: 0,
            bounds: Vec::new(),
        }
    }

    /// `sql` over the stored table `trips`, planned and encoded as a coordinator sends it,
    /// and a task context to decode it in.
    async fn encoded(sql: &str) -> (Vec<u8>, Arc<datafusion::execution::TaskContext>) {
        let ctx = session(
            2,
            Arc::new(NoBlocks),
            Arc::new(NoBlocks),
            &MemoryLimit::default(),
        )
        .unwrap();
        ctx.register_table("trips", Arc::new(StoredTable::new(&record()).unwrap()))
            .unwrap();
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        (encode_plan(plan).unwrap(), ctx.task_ctx())
    }

    /// A task plan as a node decodes it from a coordinator, mutated and cut anywhere: refused
    /// or decoded, never a panic. (`make fuzz` runs the same
    /// decoder coverage-guided; this runs a bounded share of it in `make test`.)
    #[tokio::test]
    async fn mutated_task_plans_never_panic_the_decoder() {
        use proptest::prelude::*;
        let (bytes, task) =
            encoded("SELECT city, count(*) FROM trips WHERE id > 3 GROUP BY city ORDER BY city")
                .await;
        proptest!(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(1917), failure_persistence: None, ..ProptestConfig::default() }, |(at in 0usize..1 << 16, byte in any::<u8>(), cut in 0usize..1 << 16)| {
            let mut mutated = bytes.clone();
            let at = at % mutated.len();
            mutated[at] = byte;
            mutated.truncate(mutated.len() - cut % 16);
            let _ = decode_plan(&mutated, &task);
        });
    }

    /// Regression (CI's mutation run): an aggregate declaring grouping sets without grouping
    /// expressions made DataFusion's decoder divide by zero; the node refuses the plan.
    #[tokio::test]
    async fn an_aggregate_with_grouping_sets_and_no_groups_is_refused() {
        use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
        use datafusion_proto::protobuf::{AggregateExecNode, PhysicalPlanNode};
        use prost::Message;
        let (bytes, task) = encoded("SELECT sum(id) FROM trips WHERE id > 3").await;
        decode_plan(&bytes, &task).unwrap();
        let mut node = PhysicalPlanNode::decode(bytes.as_slice()).unwrap();
        fn aggregate(node: &mut PhysicalPlanNode) -> &mut AggregateExecNode {
            match node.physical_plan_type.as_mut().unwrap() {
                PhysicalPlanType::Aggregate(aggregate) => aggregate,
                PhysicalPlanType::Projection(p) => aggregate(p.input.as_mut().unwrap()),
                PhysicalPlanType::Merge(p) => aggregate(p.input.as_mut().unwrap()),
                PhysicalPlanType::Repartition(p) => aggregate(p.input.as_mut().unwrap()),
                other => panic!("no aggregate above {other:?}"),
            }
        }
        let aggregate = aggregate(&mut node);
        assert!(aggregate.group_expr.is_empty());
        aggregate.groups = vec![true];
        let err = decode_plan(&node.encode_to_vec(), &task).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    /// Regression (found by the task_plan fuzz target): a plan naming an Avro scan made
    /// DataFusion's decoder panic (tern builds it without Avro); the node refuses the plan.
    #[tokio::test]
    async fn a_plan_naming_an_avro_scan_is_refused() {
        let (_, task) = encoded("SELECT 1").await;
        let plan = include_bytes!("../../../fuzz/plan/seeds/task_plan/regression-avro-scan");
        let err = decode_plan(plan, &task).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    /// A plan naming a file (as DataFusion's encoding can) is refused by the node.
    #[tokio::test]
    async fn a_plan_reading_a_file_is_refused() {
        let local = SessionContext::new();
        let dir = std::env::temp_dir().join(format!("tern-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret.csv");
        std::fs::write(&file, "a\n1\n").unwrap();
        local
            .register_csv("secret", file.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let plan = local
            .sql("SELECT * FROM secret")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let bytes =
            datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &TernCodec)
                .unwrap();
        let ctx = session(
            2,
            Arc::new(NoBlocks),
            Arc::new(NoBlocks),
            &MemoryLimit::default(),
        )
        .unwrap();
        let err = decode_plan(&bytes, &ctx.task_ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_planned_scan_travels_as_bytes_and_comes_back_the_same() {
        let ctx = session(
            2,
            Arc::new(NoBlocks),
            Arc::new(NoBlocks),
            &MemoryLimit::default(),
        )
        .unwrap();
        ctx.register_table("trips", Arc::new(StoredTable::new(&record()).unwrap()))
            .unwrap();
        let plan = ctx
            .sql("SELECT city FROM trips WHERE id > 3")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        assert!(
            text.contains("PartitionScanExec: dataset=trips, partitions=3"),
            "{text}"
        );
        let back = decode_plan(&encode_plan(plan.clone()).unwrap(), &ctx.task_ctx()).unwrap();
        assert_eq!(displayable(back.as_ref()).indent(true).to_string(), text);
        // Running it reads through the session's reader, whose failure names the partition.
        let err = run_all(back, ctx.task_ctx()).await.unwrap_err().to_string();
        assert!(
            err.contains("partition 0 of trips") || err.contains("of trips"),
            "{err}"
        );
    }

    /// Shuffle outputs of five tasks on nodes 1 and 2, two buckets each; node 2 sends only
    /// the columns asked for, node 1 whole buckets (as a local read does).
    struct KeptBuckets {
        asked: std::sync::Mutex<Vec<(u64, Vec<u32>)>>,
    }
    impl ShuffleFetcher for KeptBuckets {
        fn fetch(
            &self,
            keys: Vec<ShuffleKey>,
            columns: Option<Vec<usize>>,
            node: u64,
            _addr: String,
        ) -> ShuffleFuture {
            self.asked
                .lock()
                .unwrap()
                .push((node, keys.iter().map(|k| k.task).collect()));
            let buckets = keys
                .iter()
                .map(|k| {
                    let batch = bucket(k.task, k.bucket);
                    let bytes = match (&columns, node) {
                        (Some(columns), 2) => project_ipc(
                            Buffer::from_vec(batches_to_ipc(&batch.schema(), &[batch]).unwrap()),
                            columns,
                        )
                        .unwrap(),
                        _ => batches_to_ipc(&batch.schema(), &[batch]).unwrap(),
                    };
                    Buffer::from_vec(bytes)
                })
                .collect();
            Box::pin(async move { Ok(buckets) })
        }
    }

    fn bucket(task: u32, bucket: u32) -> arrow::record_batch::RecordBatch {
        use arrow::array::{Int64Array, StringArray};
        let key = (task * 10 + bucket) as i64;
        arrow::record_batch::RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(vec![key])) as arrow::array::ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![format!("row {key}")])) as _,
            ),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn a_bucket_reader_fetches_a_nodes_buckets_together_and_only_the_columns_it_reads() {
        use arrow::array::AsArray;
        use arrow::datatypes::Int64Type;
        use datafusion::physical_plan::Partitioning;
        let fetcher = Arc::new(KeptBuckets {
            asked: Default::default(),
        });
        let ctx = session(
            2,
            Arc::new(NoBlocks),
            fetcher.clone(),
            &MemoryLimit::default(),
        )
        .unwrap();
        let located = |bytes: u64| {
            (0..5u64)
                .map(|t| TaskLocation {
                    node: 1 + t % 2,
                    addr: String::new(),
                    rows: 2,
                    bytes,
                })
                .collect::<Vec<_>>()
        };
        let reader = ShuffleReaderExec::new(
            7,
            0,
            ReadMode::Bucket,
            5,
            bucket(0, 0).schema(),
            Partitioning::UnknownPartitioning(2),
        )
        .located(located(100))
        .projected(vec![0])
        .unwrap();
        // The projection travels with the plan.
        let plan = decode_plan(&encode_plan(Arc::new(reader)).unwrap(), &ctx.task_ctx()).unwrap();
        let batches = run_task(plan, 1, ctx.task_ctx()).await.unwrap();
        let mut keys: Vec<i64> = batches
            .iter()
            .inspect(|b| assert_eq!(b.num_columns(), 1))
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        keys.sort();
        assert_eq!(keys, vec![1, 11, 21, 31, 41]);
        assert_eq!(
            *fetcher.asked.lock().unwrap(),
            vec![(1, vec![0, 2, 4]), (2, vec![1, 3])]
        );
        // Buckets too large to ask for together: one fetch each, the nodes taking turns.
        fetcher.asked.lock().unwrap().clear();
        let big = ShuffleReaderExec::new(
            7,
            0,
            ReadMode::Bucket,
            5,
            bucket(0, 0).schema(),
            Partitioning::UnknownPartitioning(2),
        )
        .located(located(2 * shuffle::FETCH_BYTES));
        let batches = run_task(Arc::new(big), 0, ctx.task_ctx()).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        assert_eq!(batches[0].num_columns(), 2);
        let nodes: Vec<u64> = fetcher.asked.lock().unwrap().iter().map(|a| a.0).collect();
        assert_eq!(nodes, vec![1, 2, 1, 2, 1]);
    }

    #[test]
    fn schemas_come_back_from_the_catalog_json_and_bad_ones_are_named() {
        let schema = schema_from_json("trips", &record().schema).unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert!(!schema.field(0).is_nullable());
        let err = schema_from_json("trips", r#"[{"name":"x","type":"NoSuchType"}]"#).unwrap_err();
        assert!(
            err.to_string().contains("trips") && err.to_string().contains("x"),
            "{err}"
        );
    }
}
