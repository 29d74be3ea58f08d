//! A stored partition as a scan reads it: whatever bytes a client stored are checked, and only
//! what passes is decoded. Neither may panic or allocate past the block's bound (libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch a large allocation).
#![no_main]

use arrow::datatypes::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;

// The node's check itself, compiled here without the rest of tern-exec (DataFusion).
#[path = "../../crates/exec/src/validate.rs"]
#[allow(dead_code)]
mod validate;

fuzz_target!(|data: &[u8]| {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]);
    for rows in [0, 1, 3, 10_000] {
        if validate::check_block(data, &schema, rows).is_ok() {
            // What passes is decoded as a scan decodes it (arrow's stream reader); a panic
            // here is one the node would catch, and is still reported as a crash.
            let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(data), None);
            if let Ok(reader) = reader {
                for batch in reader {
                    let _ = batch;
                }
            }
        }
        // A scan of one column checks that column's buffers only, and decodes only it.
        if validate::check_block_columns(data, &schema, rows, Some(&[1])).is_ok() {
            let reader = arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(data),
                Some(vec![1]),
            );
            if let Ok(reader) = reader {
                for batch in reader {
                    let _ = batch;
                }
            }
        }
    }
});
