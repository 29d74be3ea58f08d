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
pub(crate) const MAX_METADATA_BYTES: usize = 16 << 20;

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
    check_block_columns(bytes, schema, rows, None)
}

/// The same, looking into the buffers of `columns` only (all when `None`): the others'
/// bytes may be absent (see [`crate::sparse`]), and are never decoded. Every message and
/// every buffer's place in its body is still checked.
pub fn check_block_columns(
    bytes: &[u8],
    schema: &Schema,
    rows: u64,
    columns: Option<&[usize]>,
) -> Result<(), BadBlock> {
    let checked: Vec<bool> = (0..schema.fields().len())
        .map(|c| columns.is_none_or(|columns| columns.contains(&c)))
        .collect();
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
                total_rows += check_batch(batch, body, &columns, &checked, &mut budget)?;
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
                check_batch(data, body, &[value], &[true], &mut budget)?;
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

/// The compression a batch's buffers carry: whether they are zstd frames with their length.
fn batch_compressed(batch: ipc::RecordBatch<'_>) -> Result<bool, BadBlock> {
    match batch.compression() {
        None => Ok(false),
        Some(c) if c.method() == ipc::BodyCompressionMethod::BUFFER => match c.codec() {
            ipc::CompressionType::ZSTD => Ok(true),
            // LZ4 frames decompress past the size they declare; tern writes zstd.
            other => Err(bad(format!("compression {other:?} is not accepted"))),
        },
        Some(_) => Err(bad("an unknown compression method")),
    }
}

/// A batch's buffers as (offset, length) in its body of `body_len` bytes, each inside it.
fn batch_buffers(batch: ipc::RecordBatch<'_>, body_len: u64) -> Result<Vec<(u64, u64)>, BadBlock> {
    let mut buffers = Vec::new();
    for buffer in batch.buffers().iter().flatten() {
        let (offset, len) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(len);
        if offset < 0 || len < 0 || end.is_none_or(|end| end as u64 > body_len) {
            return Err(bad(format!(
                "a buffer at {offset} of {len} bytes lies outside its body of {body_len}"
            )));
        }
        buffers.push((offset as u64, len as u64));
    }
    Ok(buffers)
}

/// One batch's lengths: returns its rows. Every buffer inside the body, then every column
/// walked as Arrow reads it (its nodes and buffers, in order); for the `checked` ones, each
/// buffer's declared uncompressed size within bounds and large enough for the values its
/// node declares: Arrow itself panics on a validity bitmap shorter than its rows.
fn check_batch(
    batch: ipc::RecordBatch<'_>,
    body: &[u8],
    columns: &[DataType],
    checked: &[bool],
    budget: &mut u64,
) -> Result<u64, BadBlock> {
    let rows = batch.length();
    if !(0..=MAX_BATCH_ROWS).contains(&rows) {
        return Err(bad(format!("a batch declares {rows} rows")));
    }
    let compressed = batch_compressed(batch)?;
    let buffers = batch_buffers(batch, body.len() as u64)?;
    let mut walk = Walk::new(
        batch,
        &buffers,
        Some(Contents {
            body,
            compressed,
            budget,
        }),
    );
    for (column, &check) in columns.iter().zip(checked) {
        walk.checking = check;
        walk.column(column, Some(rows), 0)?;
    }
    walk.finish()?;
    Ok(rows as u64)
}

/// Where each of a batch's top-level `columns` lies in its body: the span from its first
/// buffer's start to its last one's end (`None` for a column without bytes). Only the
/// batch's metadata is read.
pub(crate) fn column_spans(
    batch: ipc::RecordBatch<'_>,
    body_len: u64,
    columns: &[DataType],
) -> Result<Vec<Option<(u64, u64)>>, BadBlock> {
    let buffers = batch_buffers(batch, body_len)?;
    let mut walk = Walk::new(batch, &buffers, None);
    walk.checking = false;
    let mut spans = Vec::with_capacity(columns.len());
    for column in columns {
        let first = walk.next;
        walk.column(column, Some(batch.length()), 0)?;
        let own = &buffers[first..walk.next];
        let start = own.iter().filter(|b| b.1 > 0).map(|b| b.0).min();
        let end = own.iter().filter(|b| b.1 > 0).map(|b| b.0 + b.1).max();
        spans.push(start.zip(end));
    }
    walk.finish()?;
    Ok(spans)
}

/// The bytes of a batch's body, for the columns whose buffers are looked into.
struct Contents<'a> {
    body: &'a [u8],
    compressed: bool,
    budget: &'a mut u64,
}

/// The nodes, buffers and view buffer counts of one batch, taken in the order Arrow's
/// reader takes them.
struct Walk<'a> {
    nodes: std::vec::IntoIter<(i64, i64)>,
    buffers: &'a [(u64, u64)],
    /// The next buffer to take.
    next: usize,
    variadic: std::vec::IntoIter<i64>,
    contents: Option<Contents<'a>>,
    /// Whether the column walked now has its buffers' sizes checked.
    checking: bool,
}

impl<'a> Walk<'a> {
    fn new(
        batch: ipc::RecordBatch<'_>,
        buffers: &'a [(u64, u64)],
        contents: Option<Contents<'a>>,
    ) -> Self {
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
        Self {
            nodes: nodes.into_iter(),
            buffers,
            next: 0,
            variadic: variadic.into_iter(),
            contents,
            checking: true,
        }
    }

    fn finish(mut self) -> Result<(), BadBlock> {
        if self.nodes.next().is_some()
            || self.next != self.buffers.len()
            || self.variadic.next().is_some()
        {
            return Err(bad("more columns or buffers than the schema has"));
        }
        Ok(())
    }

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
            if walk.checking && nulls > 0 && size < n.div_ceil(8) {
                return Err(bad("a validity bitmap shorter than its column"));
            }
            Ok(())
        };
        // Arrow reads fixed-width buffers as slices of their type, and asserts (panics) that
        // a buffer's length is a whole number of values (found by the ipc_block fuzz target).
        let fixed = |walk: &mut Walk, width: u64| -> Result<(), BadBlock> {
            let size = walk.buffer()?;
            if !walk.checking {
                return Ok(());
            }
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

    /// The next buffer's size once decompressed (0 when not checking: its bytes may be
    /// absent).
    fn buffer(&mut self) -> Result<u64, BadBlock> {
        let (offset, len) = *self
            .buffers
            .get(self.next)
            .ok_or_else(|| bad("a buffer is missing"))?;
        self.next += 1;
        if !self.checking {
            return Ok(0);
        }
        let Some(Contents {
            body,
            compressed,
            budget,
        }) = self.contents.as_mut()
        else {
            return Ok(0);
        };
        let size = if *compressed && len > 0 {
            if len < 8 {
                return Err(bad("a compressed buffer without its length"));
            }
            let at = offset as usize;
            let declared = i64::from_le_bytes(body[at..at + 8].try_into().expect("eight bytes"));
            match declared {
                -1 => len - 8,
                0 => 0,
                // Within what the whole block may still decompress to: a column of one
                // repeated value compresses thousands of times, so no ratio per buffer holds.
                n if n > 0 && (n as u64) <= **budget => n as u64,
                n => {
                    return Err(bad(format!(
                        "a compressed buffer of {len} bytes declares {n} bytes uncompressed, \
                         more than the {} the block may still decompress to",
                        **budget
                    )));
                }
            }
        } else {
            len
        };
        **budget = budget
            .checked_sub(size)
            .ok_or_else(|| bad("the block decompresses to more than a block may"))?;
        Ok(size)
    }

    fn at_least(&mut self, bytes: u64) -> Result<(), BadBlock> {
        if self.buffer()? < bytes && self.checking {
            return Err(bad("a buffer shorter than its column's values"));
        }
        Ok(())
    }

    fn offsets(&mut self, n: u64, width: u64) -> Result<(), BadBlock> {
        let size = self.buffer()?;
        if !self.checking {
            return Ok(());
        }
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
mod tests;
