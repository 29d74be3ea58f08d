//! Writing a stored dataset to a local file: partitions are read one at a time (from the
//! least-loaded live holder the client can reach) and appended, so memory stays at one partition.

use std::fs::File;
use std::io::{BufWriter, Cursor};
use std::path::Path;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

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
}

/// Decode one stored partition (an Arrow IPC stream) into batches.
pub fn decode_partition(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// An output file being written batch by batch.
pub enum FileSink {
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Parquet(parquet::arrow::ArrowWriter<File>),
    Arrow(arrow::ipc::writer::FileWriter<BufWriter<File>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

impl FileSink {
    pub fn create(path: &Path, format: OutputFormat, schema: &SchemaRef) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        Ok(match format {
            OutputFormat::Csv => {
                // The header goes out now, so an answer with no rows still names its columns.
                let mut writer = arrow::csv::Writer::new(BufWriter::new(file));
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(|e| err(&e))?;
                FileSink::Csv(writer)
            }
            OutputFormat::Parquet => FileSink::Parquet(
                parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| err(&e))?,
            ),
            OutputFormat::Arrow => FileSink::Arrow(
                arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), schema)
                    .map_err(|e| err(&e))?,
            ),
            OutputFormat::Json => {
                FileSink::Json(arrow::json::LineDelimitedWriter::new(BufWriter::new(file)))
            }
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            FileSink::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            FileSink::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            FileSink::Arrow(w) => w.write(batch).map_err(|e| e.to_string()),
            FileSink::Json(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    pub fn finish(self) -> Result<(), String> {
        match self {
            FileSink::Csv(w) => w
                .into_inner()
                .into_inner()
                .map(|_| ())
                .map_err(|e| e.to_string()),
            FileSink::Parquet(w) => w.close().map(|_| ()).map_err(|e| e.to_string()),
            FileSink::Arrow(mut w) => w.finish().map_err(|e| e.to_string()),
            FileSink::Json(mut w) => w.finish().map_err(|e| e.to_string()),
        }
    }
}
