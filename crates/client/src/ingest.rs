//! Reading user files into Arrow record batches and cutting them into partitions, streamed:
//! one partition at most is held in memory, whatever the size of the input.
//!
//! CSV (header row, schema inferred from a sample like `dask.dataframe.read_csv`), Parquet,
//! Arrow IPC (file or stream) and JSON lines. A partition is one Arrow IPC stream,
//! zstd-compressed, stored as one block.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::{RecordBatch, RecordBatchReader};

/// Rows read to infer a CSV or JSON schema.
const SCHEMA_SAMPLE_ROWS: usize = 1000;
const BATCH_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Parquet,
    Arrow,
    Json,
}

impl InputFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "arrow" | "arrows" | "ipc" | "feather" => Some(Self::Arrow),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn from_path(path: &Path) -> Option<Self> {
        Self::parse(path.extension()?.to_str()?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "{path}: cannot tell the format from the file name; pass --format csv|parquet|arrow|json"
    )]
    UnknownFormat { path: String },
    #[error("{path}: its columns ({found}) differ from {first}'s ({expected})")]
    SchemaMismatch {
        path: String,
        first: String,
        found: String,
        expected: String,
    },
    #[error("no input files")]
    NoInput,
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> IngestError {
    IngestError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Counts the bytes a reader has consumed, for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// One input file as a stream of batches.
pub struct InputFile {
    pub path: PathBuf,
    pub schema: SchemaRef,
    batches: Batches,
}

impl InputFile {
    /// Open `path`; `schema` overrides inference for CSV and JSON. `consumed` grows with the
    /// bytes read from the file.
    pub fn open(
        path: &Path,
        format: Option<InputFormat>,
        schema: Option<SchemaRef>,
        consumed: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let format = format
            .or_else(|| InputFormat::from_path(path))
            .ok_or_else(|| IngestError::UnknownFormat {
                path: path.display().to_string(),
            })?;
        let file = File::open(path).map_err(|e| read_err(path, e))?;
        let (schema, batches): (SchemaRef, Batches) = match format {
            InputFormat::Csv => {
                let mut file = file;
                let schema = match schema {
                    Some(s) => s,
                    None => {
                        let (inferred, _) = arrow::csv::reader::Format::default()
                            .with_header(true)
                            .infer_schema(&mut file, Some(SCHEMA_SAMPLE_ROWS))
                            .map_err(|e| read_err(path, e))?;
                        file.rewind().map_err(|e| read_err(path, e))?;
                        Arc::new(inferred)
                    }
                };
                let counted = BufReader::new(Counting {
                    inner: file,
                    count: consumed,
                });
                let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(true)
                    .with_batch_size(BATCH_ROWS)
                    .build(counted)
                    .map_err(|e| read_err(path, e))?;
                (schema, Box::new(reader))
            }
            InputFormat::Json => {
                let mut buffered = BufReader::new(file);
                let schema = match schema {
                    Some(s) => s,
                    None => {
                        let (inferred, _) = arrow::json::reader::infer_json_schema_from_seekable(
                            &mut buffered,
                            Some(SCHEMA_SAMPLE_ROWS),
                        )
                        .map_err(|e| read_err(path, e))?;
                        Arc::new(inferred)
                    }
                };
                let counted = BufReader::new(Counting {
                    inner: buffered,
                    count: consumed,
                });
                let reader = arrow::json::ReaderBuilder::new(schema.clone())
                    .with_batch_size(BATCH_ROWS)
                    .build(counted)
                    .map_err(|e| read_err(path, e))?;
                (schema, Box::new(reader))
            }
            InputFormat::Parquet => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| read_err(path, e))?;
                let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
                let reader = builder
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| read_err(path, e))?;
                let schema = reader.schema();
                // Parquet is read by row groups, not as a byte stream: count progress by rows.
                let mut rows = 0u64;
                let batches = reader.map(move |batch| {
                    if let Ok(b) = &batch {
                        rows += b.num_rows() as u64;
                        consumed.store(size * rows / total_rows, Ordering::Relaxed);
                    }
                    batch
                });
                (schema, Box::new(batches))
            }
            InputFormat::Arrow => {
                let counted = BufReader::new(Counting {
                    inner: file,
                    count: consumed.clone(),
                });
                match arrow::ipc::reader::FileReader::try_new(
                    File::open(path).map_err(|e| read_err(path, e))?,
                    None,
                ) {
                    Ok(reader) => {
                        let schema = reader.schema();
                        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                        let total = reader.num_batches().max(1) as u64;
                        let mut done = 0u64;
                        let batches = reader.map(move |batch| {
                            done += 1;
                            consumed.store(size * done / total, Ordering::Relaxed);
                            batch
                        });
                        (schema, Box::new(batches))
                    }
                    Err(_) => {
                        let reader = arrow::ipc::reader::StreamReader::try_new(counted, None)
                            .map_err(|e| {
                                read_err(path, format!("not an Arrow IPC file or stream: {e}"))
                            })?;
                        (reader.schema(), Box::new(reader))
                    }
                }
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            batches,
        })
    }

    /// The next batch; errors name the file (the reader's message names line and column).
    pub fn next_batch(&mut self) -> Option<Result<RecordBatch, IngestError>> {
        let path = self.path.clone();
        self.batches
            .next()
            .map(|r| r.map_err(|e| read_err(&path, e)))
    }
}

/// Check that every file has the first one's columns.
pub fn check_same_schema(first: &InputFile, other: &InputFile) -> Result<(), IngestError> {
    let describe = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let strip = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect::<Vec<_>>()
    };
    if strip(&first.schema) != strip(&other.schema) {
        return Err(IngestError::SchemaMismatch {
            path: other.path.display().to_string(),
            first: first.path.display().to_string(),
            found: describe(&other.schema),
            expected: describe(&first.schema),
        });
    }
    Ok(())
}

/// The schema as `describe` shows it: JSON `[{"name": .., "type": ..}, ..]`.
pub fn schema_json(schema: &Schema) -> String {
    let columns: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable() }))
        .collect();
    serde_json::Value::Array(columns).to_string()
}

/// Accumulates batches into one partition (an Arrow IPC stream, zstd-compressed: LZ4 was
/// measured too, and stored 1.7x the bytes, made ingest slower and queries no faster; see
/// docs/benchmarks.md).
pub struct PartitionBuilder {
    writer: StreamWriter<Vec<u8>>,
    pub rows: u64,
    /// Uncompressed Arrow bytes so far: what `--partition-size` is measured in.
    pub arrow_bytes: u64,
}

impl PartitionBuilder {
    pub fn new(schema: &Schema) -> Result<Self, ArrowError> {
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
        Ok(Self {
            writer: StreamWriter::try_new_with_options(Vec::new(), schema, options)?,
            rows: 0,
            arrow_bytes: 0,
        })
    }

    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows() as u64;
        self.arrow_bytes += batch.get_array_memory_size() as u64;
        Ok(())
    }

    /// The finished partition's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, ArrowError> {
        self.writer.finish()?;
        self.writer.into_inner()
    }
}
