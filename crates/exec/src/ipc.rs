//! Arrow batches as bytes: an Arrow IPC stream (the format partitions are stored in, too).

use std::io::Cursor;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::ExecError;

/// `batches` (all of `schema`) as one Arrow IPC stream.
pub fn batches_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ExecError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(&compact_views(batch)?)?;
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

/// `batch` with its string and binary view columns copied down to the bytes their rows use.
/// A view column's rows point into shared data buffers, and IPC writes those buffers whole:
/// five rows picked by a top-k or a join out of a partition would otherwise carry the whole
/// partition's strings (measured: TPC-H Q10's 20-row answer sent megabytes).
pub fn compact_views(batch: &RecordBatch) -> Result<RecordBatch, ExecError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let wasteful = |buffers: usize, used: usize| buffers > 2 * used + 4096;
    let mut changed = false;
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View => {
                let views = column.as_string_view();
                let buffers: usize = views.data_buffers().iter().map(|b| b.len()).sum();
                if wasteful(buffers, views.total_bytes_len()) {
                    changed = true;
                    Arc::new(views.gc()) as arrow::array::ArrayRef
                } else {
                    column.clone()
                }
            }
            DataType::BinaryView => {
                let views = column.as_binary_view();
                let buffers: usize = views.data_buffers().iter().map(|b| b.len()).sum();
                if wasteful(buffers, views.total_bytes_len()) {
                    changed = true;
                    Arc::new(views.gc()) as arrow::array::ArrayRef
                } else {
                    column.clone()
                }
            }
            _ => column.clone(),
        })
        .collect::<Vec<_>>();
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
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
