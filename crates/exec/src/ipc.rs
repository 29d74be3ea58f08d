//! Arrow batches as bytes: an Arrow IPC stream (the format partitions are stored in, too).

use std::sync::Arc;

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::ExecError;

/// `batches` (all of `schema`) as one Arrow IPC stream.
pub fn batches_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ExecError> {
    let batches = batches
        .iter()
        .map(compact_views)
        .collect::<Result<Vec<_>, _>>()?;
    // Sized up front: a shuffle writes every row it moves once here, and growing the
    // buffer by doubling copied it about once more.
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut writer = StreamWriter::try_new(Vec::with_capacity(size + 4096), schema)?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The schema and batches of one Arrow IPC stream (compressed or not). Uncompressed
/// columns are not copied: the batches share `bytes` (a shuffle's rows arrive once and are
/// read in place).
pub fn ipc_to_batches(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    ipc_buffer_to_batches(Buffer::from_vec(bytes))
}

/// The same from bytes already in an Arrow buffer (shared, not copied).
pub fn ipc_buffer_to_batches(
    mut buffer: Buffer,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            batches.push(batch);
        }
    }
    decoder.finish()?;
    let schema = decoder.schema().ok_or_else(|| {
        arrow::error::ArrowError::IpcError("an Arrow IPC stream without a schema".into())
    })?;
    Ok((schema, batches))
}

/// An Arrow IPC stream in `bytes` cut down to its `columns` (the others are never copied).
pub fn project_ipc(bytes: Buffer, columns: &[usize]) -> Result<Vec<u8>, ExecError> {
    let (schema, batches) = ipc_buffer_to_batches(bytes)?;
    let schema = Arc::new(schema.project(columns)?);
    let batches = batches
        .iter()
        .map(|b| b.project(columns))
        .collect::<Result<Vec<_>, _>>()?;
    batches_to_ipc(&schema, &batches)
}

/// The same, keeping only the columns `projection` names: the others are never decoded or
/// decompressed, and uncompressed columns share `bytes` (nothing is copied message by
/// message, as Arrow's stream reader does).
pub fn ipc_to_batches_projected(
    buffer: Buffer,
    projection: Option<Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    use arrow::error::ArrowError;
    use arrow::ipc::reader::{read_dictionary, read_record_batch};
    let cut = || ArrowError::IpcError("the stream is cut short".into());
    let word = |at: usize| -> Result<u32, ArrowError> {
        let four = buffer.get(at..at + 4).ok_or_else(cut)?;
        Ok(u32::from_le_bytes(four.try_into().expect("four bytes")))
    };
    let mut schema: Option<SchemaRef> = None;
    let mut dictionaries = std::collections::HashMap::new();
    let mut batches = Vec::new();
    let mut at = 0;
    while at < buffer.len() {
        let (prefix, meta_len) = match word(at)? {
            u32::MAX => (8, word(at + 4)? as usize),
            len => (4, len as usize),
        };
        if meta_len == 0 {
            break;
        }
        let meta_start = at + prefix;
        let metadata = buffer
            .get(meta_start..meta_start + meta_len)
            .ok_or_else(cut)?;
        let message = arrow::ipc::root_as_message(metadata)
            .map_err(|e| ArrowError::IpcError(format!("undecodable message metadata: {e}")))?;
        let body_start = meta_start + meta_len;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| cut())?;
        if body_len > buffer.len() - body_start.min(buffer.len()) {
            return Err(cut().into());
        }
        let body = buffer.slice_with_length(body_start, body_len);
        let version = message.version();
        let no_schema = || ArrowError::IpcError("a batch before the schema".into());
        if let Some(found) = message.header_as_schema() {
            schema = Some(Arc::new(arrow::ipc::convert::fb_to_schema(found)));
        } else if let Some(dictionary) = message.header_as_dictionary_batch() {
            let schema = schema.as_ref().ok_or_else(no_schema)?;
            read_dictionary(&body, dictionary, schema, &mut dictionaries, &version)?;
        } else if let Some(batch) = message.header_as_record_batch() {
            let schema = schema.clone().ok_or_else(no_schema)?;
            batches.push(read_record_batch(
                &body,
                batch,
                schema,
                &dictionaries,
                projection.as_deref(),
                &version,
            )?);
        }
        at = body_start + body_len;
    }
    let schema = schema.ok_or_else(|| ArrowError::IpcError("a stream without a schema".into()))?;
    let schema = match &projection {
        Some(columns) => Arc::new(schema.project(columns)?),
        None => schema,
    };
    Ok((schema, batches))
}

/// `batch` with its string and binary view columns copied down to the bytes their rows use.
/// A view column's rows point into shared data buffers, and IPC writes those buffers whole:
/// five rows picked by a top-k or a join out of a partition would otherwise carry the whole
/// partition's strings (measured: TPC-H Q10's 20-row answer sent megabytes).
pub fn compact_views(batch: &RecordBatch) -> Result<RecordBatch, ExecError> {
    use arrow::array::{ArrayRef, AsArray};
    use arrow::datatypes::DataType;
    let mut changed = false;
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let compacted = match column.data_type() {
                DataType::Utf8View => compacted(column.as_string_view()),
                DataType::BinaryView => compacted(column.as_binary_view()),
                _ => None,
            };
            changed |= compacted.is_some();
            compacted.unwrap_or_else(|| column.clone())
        })
        .collect::<Vec<ArrayRef>>();
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// A copy of `views` holding only the bytes its rows use, when its buffers hold much more.
fn compacted<T: arrow::datatypes::ByteViewType + ?Sized>(
    views: &arrow::array::GenericByteViewArray<T>,
) -> Option<arrow::array::ArrayRef> {
    let buffers: usize = views.data_buffers().iter().map(|b| b.len()).sum();
    (buffers > 2 * views.total_bytes_len() + 4096).then(|| Arc::new(views.gc()) as _)
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use arrow::array::{Array, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Five rows out of a large string-view column travel as five rows, not the whole column.
    #[test]
    fn a_few_rows_of_a_view_column_travel_alone() {
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>100}")).collect();
        let column = StringViewArray::from_iter_values(long.iter());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
        let few = batch.slice(17, 5);
        let bytes = batches_to_ipc(&schema, &[few.clone()]).unwrap();
        assert!(bytes.len() < 8_000, "{} bytes for five rows", bytes.len());
        let (_, back) = ipc_to_batches(bytes).unwrap();
        assert_eq!(back[0].num_rows(), 5);
        assert_eq!(back[0].column(0).to_data(), few.column(0).to_data());
    }
}
