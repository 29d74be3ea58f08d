//! Plans on the wire: DataFusion's protobuf encoding of physical plans, with tern's scan
//! encoded by [`TernCodec`] (postcard; the schema as an empty Arrow IPC stream).

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::scan::ScanPartition;
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
                "a tern scan has no inputs".into(),
            ));
        }
        let wire: ScanWire = postcard::from_bytes(buf).map_err(external)?;
        let (schema, _) = ipc_to_batches(wire.schema).map_err(external)?;
        Ok(Arc::new(PartitionScanExec::new(
            wire.dataset,
            schema,
            wire.projection,
            wire.partitions,
            wire.limit,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<PartitionScanExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to another node",
                node.name()
            )));
        };
        let wire = ScanWire {
            dataset: scan.dataset.clone(),
            schema: batches_to_ipc(&scan.table_schema, &[]).map_err(external)?,
            projection: scan.projection.clone(),
            partitions: scan.partitions.clone(),
            limit: scan.limit,
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

/// A plan another node encoded with [`encode_plan`].
pub fn decode_plan(
    bytes: &[u8],
    context: &TaskContext,
) -> Result<Arc<dyn ExecutionPlan>, ExecError> {
    Ok(
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            bytes, context, &TernCodec,
        )?,
    )
}
