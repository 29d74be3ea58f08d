//! Stored datasets as DataFusion tables: one output partition per stored partition, each read
//! as one block through the session's [`BlockReader`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tern_proto::{BlockHash, DatasetRecord, NodeId};

use crate::cache::{CachedColumn, ColumnCache};
use crate::validate::{BadBlock, check_block_columns, decode_checked};
use crate::{ExecError, ReaderHandle};

/// The bytes of one block, or why they could not be had.
pub type ReadFuture = Pin<Box<dyn Future<Output = Result<BlockRead, String>> + Send>>;

/// One block's bytes, and whether they came from the reading node's own store.
pub struct BlockRead {
    pub bytes: arrow::buffer::Buffer,
    pub local: bool,
    /// Only the columns asked for are there (see [`crate::read_columns_sparse`]); the rest
    /// of the bytes are zeros.
    pub partial: bool,
}

/// Where scans get partition bytes: the node's own store, then the other holders.
pub trait BlockReader: Send + Sync + 'static {
    fn read(&self, block: BlockHash, holders: Vec<NodeId>) -> ReadFuture;

    /// Columns `columns` of a block of a dataset of `schema`: the whole block, or (when the
    /// reader can) only those columns' bytes and the stream's metadata, [`BlockRead::partial`].
    fn read_columns(
        &self,
        block: BlockHash,
        holders: Vec<NodeId>,
        _schema: SchemaRef,
        _columns: Vec<usize>,
    ) -> ReadFuture {
        self.read(block, holders)
    }

    /// Decoded columns the reading node keeps of blocks it holds (see [`ColumnCache`]); a
    /// block fetched from another holder is not kept, so data stays where placement says.
    fn cache(&self) -> Option<Arc<ColumnCache>> {
        None
    }

    /// A block turned out not to be the data its dataset declares ([`BadBlock`]): every copy
    /// is the same, so whoever runs the task should not try it elsewhere.
    fn bad_block(&self, _block: BlockHash, _why: &BadBlock) {}
}

/// A dataset's Arrow schema from the JSON its record keeps (see `tern describe`).
pub fn schema_from_json(name: &str, json: &str) -> Result<SchemaRef, ExecError> {
    let bad = |reason: String| ExecError::BadSchema {
        name: name.into(),
        reason,
    };
    let columns: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut fields = Vec::with_capacity(columns.len());
    for column in &columns {
        let field_name = column["name"]
            .as_str()
            .ok_or_else(|| bad("a column without a name".into()))?;
        let type_name = column["type"]
            .as_str()
            .ok_or_else(|| bad(format!("column {field_name} has no type")))?;
        let data_type =
            DataType::from_str(type_name).map_err(|e| bad(format!("column {field_name}: {e}")))?;
        let nullable = column["nullable"].as_bool().unwrap_or(true);
        fields.push(Field::new(field_name, data_type, nullable));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// One stored partition as a scan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPartition {
    /// Its position in the dataset.
    pub index: usize,
    pub block: BlockHash,
    pub holders: Vec<NodeId>,
    /// Stored bytes (how the coordinator sizes batches of tasks).
    pub bytes: u64,
    pub rows: u64,
}

/// A stored dataset as a DataFusion table.
#[derive(Debug)]
pub struct StoredTable {
    dataset: String,
    schema: SchemaRef,
    partitions: Vec<ScanPartition>,
    /// Told its size when it has at most this many rows (see `SIZED_TABLE_ROWS`).
    sized_rows: u64,
    /// The record's bounds (see [`crate::bounds`]), decoded only for a scan with filters.
    bounds: Arc<[u8]>,
}

impl StoredTable {
    /// Stored partitions: the table's output partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Whether the table is small enough for DataFusion to be told its size (see
    /// `SIZED_TABLE_ROWS`).
    pub fn is_small(&self) -> bool {
        self.partitions.iter().map(|p| p.rows).sum::<u64>() <= self.sized_rows
    }

    /// The same table, told its size only if it has at most `rows` rows instead of
    /// `SIZED_TABLE_ROWS` (0: never, so every join of it is planned partitioned and decided
    /// as the query runs: how tests reach the run-time joins with small tables).
    pub fn sized_up_to(self, rows: u64) -> Self {
        Self {
            sized_rows: rows,
            ..self
        }
    }

    pub fn new(record: &DatasetRecord) -> Result<Self, ExecError> {
        if record.format != "arrow-ipc" {
            return Err(ExecError::Plan(format!(
                "dataset {:?} holds {} partitions, not a table",
                record.name, record.format
            )));
        }
        Ok(Self {
            dataset: record.name.clone(),
            schema: schema_from_json(&record.name, &record.schema)?,
            partitions: record
                .partitions
                .iter()
                .enumerate()
                .map(|(index, p)| ScanPartition {
                    index,
                    block: p.block,
                    holders: p.holders.clone(),
                    bytes: p.bytes,
                    rows: p.rows,
                })
                .collect(),
            sized_rows: SIZED_TABLE_ROWS,
            bounds: record.bounds.as_slice().into(),
        })
    }

    /// The partitions `filters` may match (all of them without bounds to tell).
    fn partitions_matching(&self, filters: &[Expr], state: &dyn Session) -> Vec<ScanPartition> {
        if filters.is_empty() || self.bounds.is_empty() {
            return self.partitions.clone();
        }
        let rows: Vec<u64> = self.partitions.iter().map(|p| p.rows).collect();
        let keep = match crate::bounds::Bounds::decode(&self.bounds, &self.schema, &rows) {
            Ok(Some(bounds)) => bounds.keep(filters, &self.schema, state),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(dataset = %self.dataset, error = %e, "bounds not used");
                None
            }
        };
        match keep {
            Some(keep) => self
                .partitions
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(p, _)| p.clone())
                .collect(),
            None => self.partitions.clone(),
        }
    }
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters reach the scan to skip partitions by their bounds; DataFusion still applies
    /// them to the rows of the partitions kept.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let how = if self.bounds.is_empty() {
            TableProviderFilterPushDown::Unsupported
        } else {
            TableProviderFilterPushDown::Inexact
        };
        Ok(vec![how; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PartitionScanExec {
            sized_rows: self.sized_rows,
            ..PartitionScanExec::new(
                self.dataset.clone(),
                self.schema.clone(),
                projection.cloned(),
                self.partitions_matching(filters, state),
                limit,
            )?
        }))
    }
}

/// Reads stored partitions: output partition `i` is the rows of `partitions[i]`.
#[derive(Debug, Clone)]
pub struct PartitionScanExec {
    pub(crate) dataset: String,
    pub(crate) table_schema: SchemaRef,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) partitions: Vec<ScanPartition>,
    pub(crate) limit: Option<usize>,
    /// Statistics only up to this many rows (planning only: it does not travel).
    sized_rows: u64,
    properties: Arc<PlanProperties>,
}

impl PartitionScanExec {
    pub fn new(
        dataset: String,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        partitions: Vec<ScanPartition>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            dataset,
            table_schema,
            projection,
            partitions,
            limit,
            sized_rows: SIZED_TABLE_ROWS,
            properties,
        })
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn partitions(&self) -> &[ScanPartition] {
        &self.partitions
    }

    /// About the bytes the scan reads: the partitions' stored bytes, scaled by the share of
    /// the table's columns it reads (before any filter; columns differ in width).
    pub fn estimated_bytes(&self) -> u64 {
        let stored: u64 = self.partitions.iter().map(|p| p.bytes).sum();
        let all = self.table_schema.fields().len().max(1) as u64;
        let read = self
            .projection
            .as_ref()
            .map_or(all, |p| p.len() as u64)
            .min(all);
        stored / all * read
    }

    /// The same scan narrowed to its partition `i` (then its only partition), so a task
    /// carries one block's description, not the whole dataset's.
    pub fn only(&self, i: usize) -> Result<Self> {
        self.only_these(&[i])
    }

    /// The same scan narrowed to partitions `these` (then its partitions 0, 1, …, in order).
    pub fn only_these(&self, these: &[usize]) -> Result<Self> {
        let parts = these
            .iter()
            .map(|&i| {
                self.partitions.get(i).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("{} has no partition {i}", self.dataset))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            sized_rows: self.sized_rows,
            ..Self::new(
                self.dataset.clone(),
                self.table_schema.clone(),
                self.projection.clone(),
                parts,
                self.limit,
            )?
        })
    }
}

impl DisplayAs for PartitionScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PartitionScanExec: dataset={}, partitions={}",
            self.dataset,
            self.partitions.len()
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

/// Stored partitions are compressed Arrow; in memory they take about this many times more.
const MEMORY_PER_STORED_BYTE: u64 = 3;

/// Tables of at most this many rows tell DataFusion their size; larger ones do not.
/// DataFusion broadcasts a join side it estimates small, and its estimates of joined or
/// filtered inputs come from these numbers without column statistics: told the size of a
/// large table, it can misjudge a join of it as small and broadcast millions of rows to
/// every task. Told only the sizes of small tables, it broadcasts those (dimension tables,
/// filtered or not) and shuffles everything else.
const SIZED_TABLE_ROWS: u64 = 1_000_000;

impl PartitionScanExec {
    /// Rows and in-memory size from the catalog, for small tables (see `SIZED_TABLE_ROWS`).
    fn statistics_of(&self, partition: Option<usize>) -> Statistics {
        if self.partitions.iter().map(|p| p.rows).sum::<u64>() > self.sized_rows {
            return Statistics::new_unknown(&self.schema());
        }
        let parts: &[ScanPartition] = match partition {
            Some(i) => self.partitions.get(i..=i).unwrap_or(&[]),
            None => &self.partitions,
        };
        let mut rows: u64 = parts.iter().map(|p| p.rows).sum();
        let bytes: u64 = parts.iter().map(|p| p.bytes).sum::<u64>() * MEMORY_PER_STORED_BYTE;
        let columns = self.table_schema.fields().len().max(1) as u64;
        let kept = self.projection.as_ref().map_or(columns, |p| p.len() as u64);
        let mut stats = Statistics::new_unknown(&self.schema());
        stats.total_byte_size = Precision::Inexact((bytes * kept / columns) as usize);
        stats.num_rows = match self.limit {
            Some(limit) if (limit as u64) < rows => {
                rows = limit as u64;
                Precision::Inexact(rows as usize)
            }
            _ => Precision::Exact(rows as usize),
        };
        stats
    }
}

impl ExecutionPlan for PartitionScanExec {
    fn name(&self) -> &str {
        "PartitionScanExec"
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(self.statistics_of(args.partition())))
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
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
        let part = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("{} has no partition {partition}", self.dataset))
        })?;
        let reader = context
            .session_config()
            .get_extension::<ReaderHandle>()
            .ok_or_else(|| {
                DataFusionError::Internal("this session cannot read stored partitions".into())
            })?
            .0
            .clone();
        let (dataset, projection, limit) =
            (self.dataset.clone(), self.projection.clone(), self.limit);
        let table_schema = self.table_schema.clone();
        let columns = projection.unwrap_or_else(|| (0..self.table_schema.fields().len()).collect());
        let read = async move {
            let batches = read_columns(reader.as_ref(), &part, &table_schema, &columns)
                .await
                .map_err(|reason| {
                    DataFusionError::Execution(format!(
                        "partition {} of {dataset} (block {}): {reason}",
                        part.index,
                        part.block.prefix(12)
                    ))
                })?;
            let mut left = limit.unwrap_or(usize::MAX);
            let mut out = Vec::with_capacity(batches.len());
            for batch in batches {
                if left == 0 {
                    break;
                }
                let take = batch.num_rows().min(left);
                left -= take;
                out.push(Ok(batch.slice(0, take)));
            }
            Ok::<_, DataFusionError>(futures::stream::iter(out))
        };
        let stream = futures::stream::once(read).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// Columns `columns` (table positions, in that order) of one stored partition, as its
/// batches: from the node's [`ColumnCache`] where it has them, else decoded from the block
/// (only the columns missing; they are kept for next time if the block is this node's own).
async fn read_columns(
    reader: &dyn BlockReader,
    part: &ScanPartition,
    table_schema: &SchemaRef,
    columns: &[usize],
) -> std::result::Result<Vec<RecordBatch>, String> {
    let cache = reader.cache();
    let (rows, mut found) = match &cache {
        Some(cache) => cache.lookup(&part.block, columns),
        None => (None, vec![None; columns.len()]),
    };
    let missing: Vec<usize> = columns
        .iter()
        .zip(&found)
        .filter(|(_, hit)| hit.is_none())
        .map(|(&c, _)| c)
        .collect();
    let rows = match rows {
        Some(rows) if missing.is_empty() => rows,
        _ => {
            let read = reader
                .read_columns(
                    part.block,
                    part.holders.clone(),
                    table_schema.clone(),
                    missing.clone(),
                )
                .await?;
            // Whatever a client stored is checked before Arrow trusts a length in it: all of
            // it when the whole block is here, else the columns read.
            let checked = read.partial.then_some(missing.as_slice());
            let decoded = check_block_columns(&read.bytes, table_schema, part.rows, checked)
                .and_then(|()| {
                    let bytes = read.bytes;
                    let projection = Some(missing.clone());
                    decode_checked(|| crate::ipc::ipc_to_batches_projected(bytes, projection))
                });
            let (_, batches) = match decoded {
                Ok(batches) => batches.map_err(|e| e.to_string())?,
                Err(bad) => {
                    reader.bad_block(part.block, &bad);
                    return Err(bad.to_string());
                }
            };
            // The reader's schema is the whole block's; its batches carry the projected one.
            let Some(schema) = batches.first().map(|b| b.schema()) else {
                return Ok(Vec::new());
            };
            let mut decoded = (0..missing.len()).map(|i| CachedColumn {
                field: schema.fields()[i].clone(),
                arrays: batches.iter().map(|b| b.column(i).clone()).collect(),
            });
            for (slot, &c) in found.iter_mut().zip(columns) {
                if slot.is_none() {
                    let mut column = decoded.next().ok_or("a column is missing from the block")?;
                    if let (Some(cache), true) = (&cache, read.local) {
                        column.arrays = column.arrays.iter().cloned().map(own_bytes).collect();
                        cache.insert(part.block, c, column.clone());
                    }
                    *slot = Some(column);
                }
            }
            batches.iter().map(|b| b.num_rows()).collect()
        }
    };
    let found: Vec<CachedColumn> = found.into_iter().flatten().collect();
    let schema: SchemaRef = Arc::new(Schema::new(
        found.iter().map(|c| c.field.clone()).collect::<Vec<_>>(),
    ));
    rows.iter()
        .enumerate()
        .map(|(i, &n)| {
            let arrays = found
                .iter()
                .map(|c| {
                    c.arrays
                        .get(i)
                        .cloned()
                        .ok_or("a column has fewer batches than the block")
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// `array`, copied out of a larger buffer it shares (an uncompressed block's columns are
/// decoded in place, each sharing the block's buffer), so a cache entry holds and counts
/// only its own bytes.
fn own_bytes(array: arrow::array::ArrayRef) -> arrow::array::ArrayRef {
    let data = array.to_data();
    if !shares_larger_buffer(&data) {
        return array;
    }
    // (Arrow's concat of one array returns a slice of it, sharing the buffer.)
    let mut copy = arrow::array::MutableArrayData::new(vec![&data], false, data.len());
    match copy.try_extend(0, 0, data.len()) {
        Ok(()) => arrow::array::make_array(copy.freeze()),
        Err(_) => array,
    }
}

/// Whether a buffer of `data` (or of its children) is a small window on a large allocation.
fn shares_larger_buffer(data: &arrow::array::ArrayData) -> bool {
    let larger = |b: &arrow::buffer::Buffer| b.capacity() > 2 * b.len() + 4096;
    data.buffers().iter().any(larger)
        || data.nulls().is_some_and(|n| larger(n.buffer()))
        || data.child_data().iter().any(shares_larger_buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One block, served from "this node's store", counting reads.
    struct OneBlock {
        bytes: Vec<u8>,
        reads: AtomicUsize,
        cache: Arc<ColumnCache>,
    }

    impl BlockReader for OneBlock {
        fn read(&self, _block: BlockHash, _holders: Vec<NodeId>) -> ReadFuture {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let bytes = self.bytes.clone();
            Box::pin(async move {
                Ok(BlockRead {
                    bytes: bytes.into(),
                    local: true,
                    partial: false,
                })
            })
        }

        fn cache(&self) -> Option<Arc<ColumnCache>> {
            Some(self.cache.clone())
        }
    }

    fn block_schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ])
    }

    fn block() -> OneBlock {
        let schema = Arc::new(block_schema());
        let batch = |from: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + 3)),
                    Arc::new(StringArray::from(vec!["a", "b", "c"])),
                    Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                ],
            )
            .unwrap()
        };
        OneBlock {
            bytes: crate::batches_to_ipc(&schema, &[batch(0), batch(10)]).unwrap(),
            reads: AtomicUsize::new(0),
            cache: Arc::new(ColumnCache::new(1 << 20)),
        }
    }

    fn partition() -> ScanPartition {
        ScanPartition {
            index: 0,
            block: BlockHash([7; 32]),
            holders: vec![1],
            bytes: 0,
            rows: 6,
        }
    }

    #[tokio::test]
    async fn columns_once_decoded_come_from_memory_in_the_order_asked() {
        let reader = block();
        let read = |columns: Vec<usize>| {
            let reader = &reader;
            async move {
                read_columns(reader, &partition(), &Arc::new(block_schema()), &columns)
                    .await
                    .unwrap()
            }
        };
        let first = read(vec![2, 0]).await;
        assert_eq!(reader.reads.load(Ordering::Relaxed), 1);
        assert_eq!(first.len(), 2, "the block's two batches");
        assert_eq!(first[1].schema().field(0).name(), "n");
        let ids = first[1]
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[10, 11, 12]);
        assert_eq!(first[0].column(0).null_count(), 1);

        // Both columns held: no read, the same batches.
        assert_eq!(read(vec![2, 0]).await, first);
        // No columns (a count): the rows per batch, no read.
        let counted = read(vec![]).await;
        assert_eq!(
            counted.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [3, 3]
        );
        assert_eq!(reader.reads.load(Ordering::Relaxed), 1);
        assert_eq!(reader.cache.hits(), 2);

        // One column missing: one read, and the held one comes from memory.
        let mixed = read(vec![1, 0]).await;
        assert_eq!(reader.reads.load(Ordering::Relaxed), 2);
        assert_eq!(mixed[0].schema().field(0).name(), "name");
        assert_eq!(mixed[0].num_columns(), 2);
        assert_eq!(read(vec![0, 1, 2]).await.len(), 2);
        assert_eq!(reader.reads.load(Ordering::Relaxed), 2);
    }

    /// An uncompressed block is decoded in place; what the cache keeps of one column is that
    /// column's bytes, not the block's buffer.
    #[tokio::test]
    async fn a_cached_column_of_an_uncompressed_block_holds_only_its_bytes() {
        let schema = Arc::new(Schema::new(
            (0..4)
                .map(|c| Field::new(format!("c{c}"), DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let batch = |from: i64| {
            let columns = (0..4)
                .map(|c| Arc::new(Int64Array::from_iter_values(from + c..from + c + 100_000)) as _)
                .collect();
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        };
        let bytes = crate::batches_to_ipc(&schema, &[batch(0), batch(1)]).unwrap();
        let len = bytes.len();
        let reader = OneBlock {
            bytes,
            reads: AtomicUsize::new(0),
            cache: Arc::new(ColumnCache::new(64 << 20)),
        };
        let part = ScanPartition {
            rows: 200_000,
            ..partition()
        };
        let read = read_columns(&reader, &part, &schema, &[2]).await.unwrap();
        assert_eq!(
            read[1]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            3
        );
        let used = reader.cache.used();
        assert!(
            (1_600_000..2_000_000).contains(&used),
            "{used} bytes kept for one column of two batches of a {len}-byte block"
        );
    }

    #[tokio::test]
    async fn a_block_fetched_from_another_holder_is_not_kept() {
        struct Remote(OneBlock);
        impl BlockReader for Remote {
            fn read(&self, block: BlockHash, holders: Vec<NodeId>) -> ReadFuture {
                let read = self.0.read(block, holders);
                Box::pin(async move { read.await.map(|r| BlockRead { local: false, ..r }) })
            }
            fn cache(&self) -> Option<Arc<ColumnCache>> {
                self.0.cache()
            }
        }
        let reader = Remote(block());
        for _ in 0..2 {
            read_columns(&reader, &partition(), &Arc::new(block_schema()), &[0])
                .await
                .unwrap();
        }
        assert_eq!(reader.0.reads.load(Ordering::Relaxed), 2);
        assert_eq!(reader.0.cache.used(), 0);
    }
}
