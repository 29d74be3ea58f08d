//! Plans on the wire: DataFusion's protobuf encoding of physical plans, with tern's scan and
//! shuffle reader encoded by [`TernCodec`] (postcard; schemas as DataFusion's protobuf `Schema`,
//! whose decoding refuses what it does not know where Arrow's IPC schema reader would panic).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use serde::{Deserialize, Serialize};

use datafusion::physical_plan::Partitioning;

use crate::scan::ScanPartition;
use crate::shuffle::{ReadMode, ShuffleReaderExec, TaskLocation};
use crate::{ExecError, PartitionScanExec};

/// Encodes and decodes tern's own operators inside DataFusion plans.
#[derive(Debug, Default)]
pub struct TernCodec;

#[derive(Serialize, Deserialize)]
struct ScanWire {
    dataset: String,
    /// The table's schema (see [`schema_to_wire`]).
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

/// A schema as the protobuf message DataFusion's plan encoding uses for schemas elsewhere in
/// the plan. (Arrow's IPC schema reader panics on type ids it does not know, and a task plan
/// comes from the network.)
fn schema_to_wire(schema: &SchemaRef) -> Result<Vec<u8>> {
    let proto = datafusion_proto::protobuf::Schema::try_from(schema.as_ref())?;
    Ok(proto.encode_to_vec())
}

fn schema_from_wire(bytes: &[u8]) -> Result<SchemaRef> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes).map_err(external)?;
    Ok(Arc::new(Schema::try_from(&proto)?))
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
                let schema = schema_from_wire(&wire.schema)?;
                Ok(Arc::new(PartitionScanExec::new(
                    wire.dataset,
                    schema,
                    wire.projection,
                    wire.partitions,
                    wire.limit,
                )?))
            }
            Wire::Reader(wire) => {
                let schema = schema_from_wire(&wire.schema)?;
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
                schema: schema_to_wire(&scan.table_schema)?,
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
                schema: schema_to_wire(&reader.schema())?,
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
    // DataFusion's decoders assume the plan came from its own encoder and panic on some
    // inconsistencies (an aggregate with grouping sets but no grouping expressions divides
    // by zero, found by the mutation test below and by `make fuzz`). Decoding only builds new
    // values, so a panic leaves nothing half-changed: it becomes a refused plan, not a
    // dead task runner.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            bytes, context, &TernCodec,
        )
    }))
    .map_err(|_| ExecError::Plan("the task plan is malformed: it could not be decoded".into()))?;
    let plan = decoded?;
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn schemas_travel_and_unknown_types_are_refused() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new_list(
                "tags",
                Field::new_list_field(DataType::Utf8View, true),
                true,
            ),
        ]));
        let bytes = schema_to_wire(&schema).unwrap();
        assert_eq!(schema_from_wire(&bytes).unwrap(), schema);
        // A field without a type (what a type id the decoder does not know decodes to).
        let mut proto = datafusion_proto::protobuf::Schema::decode(bytes.as_slice()).unwrap();
        proto.columns[0].arrow_type = None;
        assert!(schema_from_wire(&proto.encode_to_vec()).is_err());
        assert!(schema_from_wire(b"\xff\xff not protobuf").is_err());
    }
}
