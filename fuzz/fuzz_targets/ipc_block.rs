//! A stored partition as a scan reads it: whatever bytes a client stored are checked, and only
//! what passes is decoded. Neither may panic or allocate past the block's bound (libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch a large allocation).
#![no_main]

use arrow::datatypes::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]);
    for rows in [0, 1, 3, 10_000] {
        if tern_exec::check_block(data, &schema, rows).is_ok() {
            let _ = tern_exec::ipc_to_batches(data.to_vec());
        }
    }
});
