//! Stored datasets as DataFusion tables: one output partition per stored partition, each read
//! as one block through the session's [`BlockReader`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
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

use crate::{ExecError, ReaderHandle};

/// The bytes of one block, or why they could not be had.
pub type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Where scans get partition bytes: the node's own store, then the other holders.
pub trait BlockReader: Send + Sync + 'static {
    fn read(&self, block: BlockHash, holders: Vec<NodeId>) -> ReadFuture;
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
}

impl StoredTable {
    /// Stored partitions: the table's output partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
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
        })
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

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PartitionScanExec::new(
            self.dataset.clone(),
            self.schema.clone(),
            projection.cloned(),
            self.partitions.clone(),
            limit,
        )?))
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
            properties,
        })
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn partitions(&self) -> &[ScanPartition] {
        &self.partitions
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
        Self::new(
            self.dataset.clone(),
            self.table_schema.clone(),
            self.projection.clone(),
            parts,
            self.limit,
        )
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
        if self.partitions.iter().map(|p| p.rows).sum::<u64>() > SIZED_TABLE_ROWS {
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
        let read = async move {
            let bytes = reader
                .read(part.block, part.holders.clone())
                .await
                .map_err(|reason| {
                    DataFusionError::Execution(format!(
                        "partition {} of {dataset} (block {}): {reason}",
                        part.index,
                        part.block.prefix(12)
                    ))
                })?;
            let (_, batches) = crate::ipc::ipc_to_batches_projected(bytes, projection)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
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
