//! Reading user files into Arrow record batches and cutting them into partitions, streamed:
//! one partition at most is held in memory, whatever the size of the input.
//!
//! CSV (header row, schema inferred from a sample like `dask.dataframe.read_csv`), Parquet,
//! Arrow IPC (file or stream) and JSON lines. A partition is one Arrow IPC stream,
//! zstd-compressed when that saves a fifth or more, stored as one block.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::{RecordBatch, RecordBatchReader};

use crate::bounds::{BoundsBuilder, PartitionBounds};

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
                    None => Arc::new(infer_csv_schema(&mut file).map_err(|e| read_err(path, e))?),
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

/// How many rows `path` holds: Parquet says in its footer, other formats are read through
/// (what `tern put --partitions N` needs to cut N equal partitions).
pub fn count_rows(
    path: &Path,
    format: Option<InputFormat>,
    schema: Option<SchemaRef>,
) -> Result<u64, IngestError> {
    let format = format.or_else(|| InputFormat::from_path(path));
    if format == Some(InputFormat::Parquet) {
        let file = File::open(path).map_err(|e| read_err(path, e))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| read_err(path, e))?;
        use parquet::file::reader::FileReader;
        return Ok(reader.metadata().file_metadata().num_rows().max(0) as u64);
    }
    let mut input = InputFile::open(path, format, schema, Arc::default())?;
    let mut rows = 0u64;
    while let Some(batch) = input.next_batch() {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// A CSV file's columns, inferred from its first [`SCHEMA_SAMPLE_ROWS`] rows by arrow-csv, with
/// one correction: arrow-csv reads timestamps that carry a zone (`2013-01-01T10:00:00Z`,
/// `…+02:00`) as naive ones (converted to UTC), which drops the zone from the type. A timestamp
/// column whose sampled values all carry a zone becomes `Timestamp(unit, "UTC")`, as pandas
/// and DuckDB read it; the values are the same instants either way. A column mixing zoned and
/// naive values stays naive. The file is left at its start.
fn infer_csv_schema<R: Read + Seek>(file: &mut R) -> Result<Schema, ArrowError> {
    let (inferred, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(&mut *file, Some(SCHEMA_SAMPLE_ROWS))?;
    file.rewind()?;
    let zoned = zoned_timestamp_columns(file, &inferred)?;
    file.rewind()?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match field.data_type() {
            DataType::Timestamp(unit, None) if zoned.contains(&i) => field
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, Some("UTC".into()))),
            _ => field.as_ref().clone(),
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The indices of the naive timestamp columns of `inferred` whose sampled values all carry a
/// zone, read from the same sample as the inference (as text).
fn zoned_timestamp_columns<R: Read>(
    file: &mut R,
    inferred: &Schema,
) -> Result<Vec<usize>, ArrowError> {
    let candidates: Vec<usize> = inferred
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(_, None)))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let as_text: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    let mut sample = arrow::csv::ReaderBuilder::new(Arc::new(Schema::new(as_text)))
        .with_header(true)
        .with_batch_size(SCHEMA_SAMPLE_ROWS)
        .with_projection(candidates.clone())
        .build(file)?;
    let Some(batch) = sample.next().transpose()? else {
        return Ok(Vec::new());
    };
    Ok(candidates
        .into_iter()
        .zip(batch.columns())
        .filter(|(_, column)| {
            let values = column.as_string::<i32>();
            values.null_count() < values.len() && values.iter().flatten().all(carries_zone)
        })
        .map(|(i, _)| i)
        .collect())
}

/// Whether an ISO-8601 timestamp as arrow-csv infers one (`YYYY-MM-DD?HH:MM:SS[.fff…]`, then
/// anything) ends with a zone: `Z`, `+02:00`, `-0500`, a zone name.
fn carries_zone(value: &str) -> bool {
    const DATE_AND_TIME: usize = "2013-01-01T10:00:00".len();
    let Some(rest) = value.get(DATE_AND_TIME..) else {
        return false;
    };
    let rest = match rest.strip_prefix('.') {
        Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    !rest.trim().is_empty()
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

/// Accumulates batches into one partition: an Arrow IPC stream, zstd-compressed when that
/// pays (LZ4 was measured too, and stored 1.7x the bytes, made ingest slower and queries no
/// faster; see docs/benchmarks.md).
///
/// Whether it pays is decided on the first batch: data that zstd shrinks by less than
/// [`MIN_SAVING`] (random floats shrink by about a tenth) is stored plain, since every read
/// of it would pay for decompressing (40% of a node's time summing such an array).
pub struct PartitionBuilder {
    schema: SchemaRef,
    compression: Compression,
    writer: Option<StreamWriter<Vec<u8>>>,
    bounds: BoundsBuilder,
    pub rows: u64,
    /// Uncompressed Arrow bytes so far: what `--partition-size` is measured in.
    pub arrow_bytes: u64,
}

/// A partition cut and encoded, ready for [`crate::DatasetWriter::add_table_partition`].
#[derive(Debug)]
pub struct Partition {
    pub bytes: Vec<u8>,
    pub rows: u64,
    pub bounds: PartitionBounds,
}

/// How a partition's buffers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd when it saves at least [`MIN_SAVING`] of the first batch's bytes.
    #[default]
    Auto,
    Zstd,
    /// Plain Arrow: more bytes stored, and reads that decode in place.
    None,
}

/// The least share of a sample's bytes zstd must save for a partition to be compressed.
pub const MIN_SAVING: f64 = 0.2;

/// Rows of the first batch encoded both ways to decide.
const SAMPLE_ROWS: usize = 64 << 10;

impl PartitionBuilder {
    pub fn new(schema: &Schema) -> Result<Self, ArrowError> {
        Ok(Self {
            schema: Arc::new(schema.clone()),
            compression: Compression::Auto,
            writer: None,
            bounds: BoundsBuilder::new(schema),
            rows: 0,
            arrow_bytes: 0,
        })
    }

    /// The same builder, compressing as `compression` says.
    pub fn with_compression(self, compression: Compression) -> Self {
        Self {
            compression,
            ..self
        }
    }

    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let compress = match self.compression {
                    Compression::Auto => compression_pays(&self.schema, batch)?,
                    Compression::Zstd => true,
                    Compression::None => false,
                };
                self.writer.insert(stream_writer(&self.schema, compress)?)
            }
        };
        writer.write(batch)?;
        self.bounds.push(batch)?;
        self.rows += batch.num_rows() as u64;
        self.arrow_bytes += arrow_bytes(batch);
        Ok(())
    }

    /// The finished partition: its bytes, rows and bounds.
    pub fn finish(self) -> Result<Partition, ArrowError> {
        let mut writer = match self.writer {
            Some(writer) => writer,
            None => stream_writer(&self.schema, self.compression != Compression::None)?,
        };
        writer.finish()?;
        Ok(Partition {
            bytes: writer.into_inner()?,
            rows: self.rows,
            bounds: self.bounds.finish()?,
        })
    }
}

/// The bytes of Arrow data `batch` holds (a slice: its own rows, not the buffers it shares).
pub fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

/// zstd's level 1: a quarter faster to compress than its default 3 on TPC-H's orders (cut in
/// 128 KiB buffers, `zstd -b1 -e3 -B128K`), for 5 % more bytes, and as fast to decompress.
/// Ingest is bound by CPU, and the writer's compression is a fifth of it.
const ZSTD_LEVEL: i32 = 1;

fn stream_writer(schema: &Schema, compress: bool) -> Result<StreamWriter<Vec<u8>>, ArrowError> {
    let options = IpcWriteOptions::default()
        .try_with_compression(compress.then_some(CompressionType::ZSTD))?
        .try_with_compression_level(compress.then_some(ZSTD_LEVEL))?;
    StreamWriter::try_new_with_options(Vec::new(), schema, options)
}

/// Whether zstd saves at least [`MIN_SAVING`] of the first rows of `batch`.
fn compression_pays(schema: &Schema, batch: &RecordBatch) -> Result<bool, ArrowError> {
    let sample = batch.slice(0, batch.num_rows().min(SAMPLE_ROWS));
    let size = |compress| -> Result<usize, ArrowError> {
        let mut writer = stream_writer(schema, compress)?;
        writer.write(&sample)?;
        writer.finish()?;
        Ok(writer.into_inner()?.len())
    };
    let (plain, packed) = (size(false)?, size(true)?);
    Ok((packed as f64) <= (plain as f64) * (1.0 - MIN_SAVING))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use arrow::datatypes::{TimeUnit, TimestampMillisecondType, TimestampSecondType};

    use super::*;

    /// Zoned (`Z`, `+02:00`, `-05:00`), naive and mixed timestamp columns, one with fractions.
    const TIMES_CSV: &str = "id,utc,offset,naive,mixed,millis\n\
        1,2013-01-01T10:00:00Z,2013-01-01T12:00:00+02:00,2013-01-01 10:00:00,2013-01-01T10:00:00Z,2013-01-01T10:00:00.250Z\n\
        2,,2013-07-01T09:30:00-05:00,2013-01-01 11:00:00,2013-01-01T11:00:00,2013-01-01T12:00:00.500+02:00\n";

    fn column_type(schema: &Schema, name: &str) -> DataType {
        schema.field_with_name(name).unwrap().data_type().clone()
    }

    #[test]
    fn a_partition_is_compressed_when_it_pays_or_as_told() {
        let schema = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
        // Repetitive integers: zstd shrinks them far past a fifth.
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(arrow::array::Int64Array::from_iter_values(
                (0..50_000).map(|i| i % 7),
            ))],
        )
        .unwrap();
        let size = |compression: Compression| {
            let mut builder = PartitionBuilder::new(&schema)
                .unwrap()
                .with_compression(compression);
            builder.push(&batch).unwrap();
            let partition = builder.finish().unwrap();
            assert_eq!(partition.rows, 50_000);
            let (_, back) = rows_read_back(&partition.bytes);
            assert_eq!(back, 50_000);
            partition.bytes.len()
        };
        let (auto, zstd, none) = (
            size(Compression::Auto),
            size(Compression::Zstd),
            size(Compression::None),
        );
        assert_eq!(auto, zstd);
        assert!(none > 400_000 && zstd * 10 < none, "{zstd} {none}");
    }

    /// Rows of an encoded partition, read back with Arrow's own reader.
    fn rows_read_back(bytes: &[u8]) -> (SchemaRef, usize) {
        let reader = arrow::ipc::reader::StreamReader::try_new(bytes, None).unwrap();
        let schema = reader.schema();
        let rows = reader.map(|b| b.unwrap().num_rows()).sum();
        (schema, rows)
    }

    #[test]
    fn timestamps_with_a_zone_are_inferred_as_utc_and_naive_ones_stay_naive() {
        let mut csv = Cursor::new(TIMES_CSV.as_bytes());
        let schema = infer_csv_schema(&mut csv).unwrap();
        let utc = |unit| DataType::Timestamp(unit, Some("UTC".into()));
        assert_eq!(column_type(&schema, "id"), DataType::Int64);
        assert_eq!(column_type(&schema, "utc"), utc(TimeUnit::Second));
        assert_eq!(column_type(&schema, "offset"), utc(TimeUnit::Second));
        assert_eq!(column_type(&schema, "millis"), utc(TimeUnit::Millisecond));
        let naive = DataType::Timestamp(TimeUnit::Second, None);
        assert_eq!(column_type(&schema, "naive"), naive);
        assert_eq!(column_type(&schema, "mixed"), naive);
        assert_eq!(csv.position(), 0, "the file is left at its start");
    }

    #[test]
    fn zoned_timestamps_read_back_as_the_same_instants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("times.csv");
        std::fs::write(&path, TIMES_CSV).unwrap();
        let mut input = InputFile::open(&path, None, None, Arc::default()).unwrap();
        let batch = input.next_batch().unwrap().unwrap();
        let seconds = |name: &str| {
            let column = batch.column_by_name(name).unwrap();
            column
                .as_primitive::<TimestampSecondType>()
                .iter()
                .collect::<Vec<_>>()
        };
        // 2013-01-01T10:00:00Z; 2013-07-01T14:30:00Z.
        assert_eq!(seconds("utc"), vec![Some(1_357_034_400), None]);
        assert_eq!(
            seconds("offset"),
            vec![Some(1_357_034_400), Some(1_372_689_000)]
        );
        assert_eq!(
            seconds("naive"),
            vec![Some(1_357_034_400), Some(1_357_038_000)]
        );
        let millis = batch.column_by_name("millis").unwrap();
        let millis: Vec<_> = millis
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect();
        assert_eq!(
            millis,
            vec![Some(1_357_034_400_250), Some(1_357_034_400_500)]
        );
    }

    #[test]
    fn only_text_after_the_seconds_is_a_zone() {
        assert!(carries_zone("2013-01-01T10:00:00Z"));
        assert!(carries_zone("2013-01-01T10:00:00.123+02:00"));
        assert!(carries_zone("2013-01-01 10:00:00 -0500"));
        assert!(!carries_zone("2013-01-01T10:00:00"));
        assert!(!carries_zone("2013-01-01T10:00:00.123456789"));
        assert!(!carries_zone("2013-01-01"));
    }
}
