//! Arrow batches as bytes: an Arrow IPC stream (the format partitions are stored in, too).

use std::io::Cursor;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::ExecError;

/// `batches` (all of `schema`) as one Arrow IPC stream.
pub fn batches_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ExecError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The schema and batches of one Arrow IPC stream (compressed or not).
pub fn ipc_to_batches(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    ipc_to_batches_projected(bytes, None)
}

/// The same, keeping only the columns `projection` names: the others are never decoded or
/// decompressed.
pub fn ipc_to_batches_projected(
    bytes: Vec<u8>,
    projection: Option<Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), projection)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}
