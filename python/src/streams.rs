//! Arrow data between Rust and pyarrow through the Arrow C stream interface, in the form of
//! the PyCapsule protocol (`__arrow_c_stream__`): batches cross in either direction as the
//! buffers they are, neither copied nor encoded.

use std::ffi::{CStr, CString};

use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow::record_batch::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::{TernError, arrow_err};

/// The capsule name the protocol gives a stream.
const STREAM: &CStr = c"arrow_array_stream";

/// `batches` as a capsule holding an `ArrowArrayStream` (pyarrow takes it with
/// `RecordBatchReader.from_stream` over an object whose `__arrow_c_stream__` returns it).
/// Whoever imports it moves the stream out; the capsule releases it if nobody does.
pub fn export(
    py: Python<'_>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> PyResult<Bound<'_, PyCapsule>> {
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    let stream = FFI_ArrowArrayStream::new(Box::new(reader));
    PyCapsule::new(py, stream, Some(CString::from(STREAM)))
}

/// The schema and batches of any object that exports an Arrow stream (a pyarrow `Table` or
/// `RecordBatchReader`, a polars or DuckDB answer); its buffers are shared, not copied.
pub fn import(data: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    if !data.hasattr("__arrow_c_stream__")? {
        return Err(TernError::new_err(format!(
            "{} is not Arrow data (it has no __arrow_c_stream__; pass a pyarrow Table)",
            data.get_type().name()?
        )));
    }
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.downcast::<PyCapsule>()?;
    if capsule.name()? != Some(STREAM) {
        return Err(TernError::new_err(
            "__arrow_c_stream__ returned a capsule that is not an arrow_array_stream",
        ));
    }
    let raw = capsule.pointer() as *mut FFI_ArrowArrayStream;
    // SAFETY: a capsule named `arrow_array_stream` holds an `ArrowArrayStream` (the
    // protocol's contract, checked by name above); `from_raw` moves it out and leaves a
    // released one behind, which the capsule's destructor then leaves alone.
    let reader = unsafe { ArrowArrayStreamReader::from_raw(raw) }.map_err(arrow_err)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(arrow_err)?;
    Ok((schema, batches))
}
