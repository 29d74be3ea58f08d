//! Writing a stored dataset (or a query's answer) to a local file: partitions are read one at a
//! time (from the least-loaded live holder the client can reach) and appended, so memory stays
//! at one partition.
//!
//! Each column is first converted to the type the file's format can name ([`file_types`]), so
//! other tools read the file as the same logical types; a type a format cannot hold is refused
//! when the file is created, naming the column, and a value that cannot be converted exactly
//! fails the write: never a file with silently different values.

mod dictionaries;
pub mod file_types;

use std::fs::File;
use std::io::{BufWriter, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::{DictionaryHandling, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::file::properties::WriterProperties;

/// File formats a dataset can be written to, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Parquet,
    Arrow,
    Json,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "arrow" | "feather" | "ipc" => Some(Self::Arrow),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Parquet => "Parquet",
            Self::Arrow => "Arrow IPC",
            Self::Json => "JSON",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{path}: column {column:?} is {data_type}, which {format} cannot hold: {reason}")]
    Unsupported {
        path: String,
        column: String,
        data_type: String,
        format: &'static str,
        reason: file_types::Refusal,
    },
    #[error("{path}: column {column:?} cannot be written as {file_type}: {reason}")]
    Value {
        path: String,
        column: String,
        file_type: String,
        reason: String,
    },
}

/// Decode one stored partition (an Arrow IPC stream) into batches.
pub fn decode_partition(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// An output file being written batch by batch.
pub struct FileSink {
    path: PathBuf,
    format: OutputFormat,
    writer: Writer,
}

enum Writer {
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Parquet(ArrowWriter<File>),
    Arrow(
        arrow::ipc::writer::FileWriter<BufWriter<File>>,
        dictionaries::FileDictionaries,
    ),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

impl FileSink {
    /// Create the file for rows of `schema`; refused, before the file exists, when a column's
    /// type has no place in `format`.
    pub fn create(
        path: &Path,
        format: OutputFormat,
        schema: &SchemaRef,
    ) -> Result<Self, ExportError> {
        let file_schema = file_schema(path, format, schema)?;
        let file = File::create(path).map_err(|e| write_err(path, e))?;
        let writer = match format {
            OutputFormat::Csv => {
                // The header goes out now, so an answer with no rows still names its columns.
                let mut writer = arrow::csv::Writer::new(BufWriter::new(file));
                writer
                    .write(&RecordBatch::new_empty(file_schema))
                    .map_err(|e| write_err(path, e))?;
                Writer::Csv(writer)
            }
            OutputFormat::Parquet => {
                Writer::Parquet(parquet_writer(file, file_schema).map_err(|e| write_err(path, e))?)
            }
            OutputFormat::Arrow => Writer::Arrow(
                ipc_writer(file, &file_schema).map_err(|e| write_err(path, e))?,
                dictionaries::FileDictionaries::default(),
            ),
            OutputFormat::Json => {
                // Nulls written out: a map entry whose value is null is still an entry.
                let writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(BufWriter::new(file));
                Writer::Json(writer)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            format,
            writer,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        let batch = self.conform(batch)?;
        let written = match &mut self.writer {
            Writer::Csv(w) => w.write(&batch),
            Writer::Parquet(w) => w.write(&batch).map_err(ArrowError::from),
            Writer::Arrow(w, dictionaries) => dictionaries.rekey(&batch).and_then(|b| w.write(&b)),
            Writer::Json(w) => w.write(&batch),
        };
        written.map_err(|e| write_err(&self.path, e))
    }

    pub fn finish(self) -> Result<(), ExportError> {
        let path = self.path;
        match self.writer {
            Writer::Csv(w) => w
                .into_inner()
                .into_inner()
                .map(|_| ())
                .map_err(|e| write_err(&path, e)),
            Writer::Parquet(w) => w.close().map(|_| ()).map_err(|e| write_err(&path, e)),
            Writer::Arrow(mut w, _) => w.finish().map_err(|e| write_err(&path, e)),
            Writer::Json(mut w) => w.finish().map_err(|e| write_err(&path, e)),
        }
    }

    /// `batch` with each column converted to its type in the file.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, ExportError> {
        let schema = file_schema(&self.path, self.format, batch.schema_ref())?;
        if &schema == batch.schema_ref() {
            return Ok(batch.clone());
        }
        let columns = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(schema.fields())
            .map(|((field, column), to)| self.convert(field, column, to))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, columns).map_err(|e| write_err(&self.path, e))
    }

    /// One column as `to` says: exactly, or an error naming the column.
    fn convert(
        &self,
        field: &Field,
        column: &ArrayRef,
        to: &FieldRef,
    ) -> Result<ArrayRef, ExportError> {
        if field.data_type() == to.data_type() {
            return Ok(column.clone());
        }
        let value_err = |reason: String| ExportError::Value {
            path: self.path.display().to_string(),
            column: field.name().clone(),
            file_type: to.data_type().to_string(),
            reason,
        };
        // Not `safe`: a value that overflows the new unit is an error, not a null.
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let converted = cast_with_options(column, to.data_type(), &strict)
            .map_err(|e| value_err(e.to_string()))?;
        // Date64 to days drops a time of day; refuse what would be dropped.
        if file_types::holds_date64(field.data_type()) {
            let back = cast_with_options(&converted, field.data_type(), &strict)
                .map_err(|e| value_err(e.to_string()))?;
            if &back != column {
                return Err(value_err(
                    "a Date64 value holds a time of day, which a date cannot keep; cast it to a timestamp".into(),
                ));
            }
        }
        Ok(converted)
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// `schema` with each column's type as `format` holds it ([`file_types::file_type`]).
fn file_schema(
    path: &Path,
    format: OutputFormat,
    schema: &SchemaRef,
) -> Result<SchemaRef, ExportError> {
    let mut changed = false;
    let mut fields = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let data_type = file_types::file_type(format, field.data_type()).map_err(|reason| {
            ExportError::Unsupported {
                path: path.display().to_string(),
                column: field.name().clone(),
                data_type: field.data_type().to_string(),
                format: format.name(),
                reason,
            }
        })?;
        if &data_type == field.data_type() {
            fields.push(field.clone());
        } else {
            changed = true;
            fields.push(Arc::new(field.as_ref().clone().with_data_type(data_type)));
        }
    }
    if !changed {
        return Ok(schema.clone());
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// A Parquet writer whose lists and maps use the names the Parquet spec gives their inner
/// fields (`element`, `key_value`), which some readers expect (`coerce_types`).
fn parquet_writer(
    file: File,
    schema: SchemaRef,
) -> Result<ArrowWriter<File>, parquet::errors::ParquetError> {
    let properties = WriterProperties::builder().set_coerce_types(true).build();
    ArrowWriter::try_new_with_options(
        file,
        schema,
        ArrowWriterOptions::new().with_properties(properties),
    )
}

/// An Arrow IPC file writer that sends a dictionary's new values as deltas (see
/// [`dictionaries`]), the one change to a dictionary the file format allows.
fn ipc_writer(
    file: File,
    schema: &Schema,
) -> Result<arrow::ipc::writer::FileWriter<BufWriter<File>>, ArrowError> {
    let options = IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
    arrow::ipc::writer::FileWriter::try_new_with_options(BufWriter::new(file), schema, options)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Date64Array, Int32Array, TimestampSecondArray, UnionArray};
    use arrow::buffer::ScalarBuffer;
    use arrow::datatypes::{DataType, UnionFields};

    use super::*;

    fn one_column(name: &str, column: ArrayRef) -> RecordBatch {
        RecordBatch::try_from_iter([(name, column)]).unwrap()
    }

    fn write_one(
        path: &Path,
        format: OutputFormat,
        batch: &RecordBatch,
    ) -> Result<(), ExportError> {
        let mut sink = FileSink::create(path, format, batch.schema_ref())?;
        sink.write(batch)?;
        sink.finish()
    }

    #[test]
    fn a_date64_with_a_time_of_day_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let noon = Date64Array::from(vec![86_400_000 + 43_200_000]);
        let batch = one_column("day", Arc::new(noon));
        for name in ["noon.parquet", "noon.csv", "noon.json"] {
            let path = dir.path().join(name);
            let format = OutputFormat::from_path(&path).unwrap();
            let err = write_one(&path, format, &batch).unwrap_err().to_string();
            assert!(
                err.contains("\"day\"") && err.contains("time of day"),
                "{err}"
            );
        }
        write_one(&dir.path().join("noon.arrow"), OutputFormat::Arrow, &batch).unwrap();
    }

    #[test]
    fn seconds_beyond_the_milliseconds_range_are_refused_not_nulled() {
        let dir = tempfile::tempdir().unwrap();
        let far = TimestampSecondArray::from(vec![i64::MAX / 10]);
        let batch = one_column("at", Arc::new(far));
        let path = dir.path().join("far.parquet");
        let err = write_one(&path, OutputFormat::Parquet, &batch).unwrap_err();
        assert!(matches!(err, ExportError::Value { .. }), "{err}");
    }

    #[test]
    fn a_type_the_format_cannot_hold_is_refused_before_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let fields =
            UnionFields::try_new(vec![0], vec![Field::new("n", DataType::Int32, false)]).unwrap();
        let children: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![1]))];
        let union =
            UnionArray::try_new(fields, ScalarBuffer::from(vec![0i8]), None, children).unwrap();
        let batch = one_column("choice", Arc::new(union));
        let path = dir.path().join("choice.parquet");
        let err = FileSink::create(&path, OutputFormat::Parquet, batch.schema_ref())
            .err()
            .unwrap();
        assert!(matches!(err, ExportError::Unsupported { .. }), "{err}");
        assert!(!path.exists());
    }
}
