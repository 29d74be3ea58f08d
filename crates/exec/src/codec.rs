//! Plans on the wire: DataFusion's protobuf encoding of physical plans, with tern's scan and
//! shuffle reader encoded by [`TernCodec`] (postcard; schemas as empty Arrow IPC streams).

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use datafusion::physical_plan::Partitioning;

use crate::scan::ScanPartition;
use crate::shuffle::{ReadMode, ShuffleReaderExec, TaskLocation};
use crate::{ExecError, PartitionScanExec, batches_to_ipc, ipc_to_batches};

/// Encodes and decodes tern's own operators inside DataFusion plans.
#[derive(Debug, Default)]
pub struct TernCodec;

#[derive(Serialize, Deserialize)]
struct ScanWire {
    dataset: String,
    /// The table's schema as an Arrow IPC stream without batches.
    schema: Vec<u8>,
    projection: Option<Vec<usize>>,
    partitions: Vec<ScanPartition>,
    limit: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct ReaderWire {
    job: u64,
    stage: u32,
    mode: ReadMode,
    tasks: usize,
    partitions: usize,
    schema: Vec<u8>,
    locations: Vec<TaskLocation>,
    columns: Option<Vec<usize>>,
}

#[derive(Serialize, Deserialize)]
enum Wire {
    Scan(ScanWire),
    Reader(ReaderWire),
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PhysicalExtensionCodec for TernCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal(
                "tern's scans and shuffle readers have no inputs".into(),
            ));
        }
        match postcard::from_bytes(buf).map_err(external)? {
            Wire::Scan(wire) => {
                let (schema, _) = ipc_to_batches(wire.schema).map_err(external)?;
                Ok(Arc::new(PartitionScanExec::new(
                    wire.dataset,
                    schema,
                    wire.projection,
                    wire.partitions,
                    wire.limit,
                )?))
            }
            Wire::Reader(wire) => {
                let (schema, _) = ipc_to_batches(wire.schema).map_err(external)?;
                // The exact hash expressions only mattered for planning, done on the
                // coordinator; here the count of partitions is what runs.
                let reader = ShuffleReaderExec::new(
                    wire.job,
                    wire.stage,
                    wire.mode,
                    wire.tasks,
                    schema,
                    Partitioning::UnknownPartitioning(wire.partitions),
                );
                let mut reader = reader.located(wire.locations);
                reader.columns = wire.columns;
                Ok(Arc::new(reader))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let wire = if let Some(scan) = node.downcast_ref::<PartitionScanExec>() {
            Wire::Scan(ScanWire {
                dataset: scan.dataset.clone(),
                schema: batches_to_ipc(&scan.table_schema, &[]).map_err(external)?,
                projection: scan.projection.clone(),
                partitions: scan.partitions.clone(),
                limit: scan.limit,
            })
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            Wire::Reader(ReaderWire {
                job: reader.job,
                stage: reader.stage,
                mode: reader.mode,
                tasks: reader.tasks,
                partitions: reader.properties().partitioning.partition_count(),
                schema: batches_to_ipc(&reader.schema(), &[]).map_err(external)?,
                locations: reader.locations.clone(),
                columns: reader.columns.clone(),
            })
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to another node",
                node.name()
            )));
        };
        buf.extend(postcard::to_allocvec(&wire).map_err(external)?);
        Ok(())
    }
}

/// `plan` as bytes for another node.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>, ExecError> {
    let bytes =
        datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &TernCodec)?;
    Ok(bytes.to_vec())
}

/// A plan another node encoded with [`encode_plan`], refused unless it reads only what tern
/// stores (see [`check_sources`]).
pub fn decode_plan(
    bytes: &[u8],
    context: &TaskContext,
) -> Result<Arc<dyn ExecutionPlan>, ExecError> {
    let plan = datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
        bytes, context, &TernCodec,
    )?;
    check_sources(&plan)?;
    crate::guard::check_plan_literals(&plan)?;
    Ok(plan)
}

/// DataFusion's plan encoding can name file scans and file sinks with any path; a plan that
/// reached a node must read only stored partitions, shuffle outputs and literal rows, and
/// write nothing. (The task's runtime has no object store either, so a file scan that slipped
/// through would still find no file system.)
pub fn check_sources(plan: &Arc<dyn ExecutionPlan>) -> Result<(), ExecError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::memory::LazyMemoryExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    let mut refused = None;
    plan.apply(|node| {
        let allowed = if node.children().is_empty() {
            node.downcast_ref::<PartitionScanExec>().is_some()
                || node.downcast_ref::<ShuffleReaderExec>().is_some()
                || node.downcast_ref::<EmptyExec>().is_some()
                || node.downcast_ref::<PlaceholderRowExec>().is_some()
                // generate_series / range in FROM: rows made from numbers, no input.
                || node.downcast_ref::<LazyMemoryExec>().is_some()
                || node.downcast_ref::<DataSourceExec>().is_some_and(|source| {
                    let data: &dyn std::any::Any = source.data_source().as_ref();
                    data.is::<MemorySourceConfig>()
                })
        } else {
            node.name() != "DataSinkExec"
        };
        if !allowed {
            refused = Some(node.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match refused {
        Some(name) => Err(ExecError::Plan(format!(
            "a task plan may read only stored datasets and shuffle outputs; {name} is refused"
        ))),
        None => Ok(()),
    }
}
