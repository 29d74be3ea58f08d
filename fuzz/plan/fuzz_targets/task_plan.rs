//! A task plan as a node decodes it from a coordinator: DataFusion's protobuf encoding with
//! tern's operators. Decoding may refuse anything, but no panic may escape it.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

fn context() -> &'static Arc<tern_exec::datafusion::execution::TaskContext> {
    static CONTEXT: OnceLock<Arc<tern_exec::datafusion::execution::TaskContext>> =
        OnceLock::new();
    CONTEXT.get_or_init(|| {
        // `decode_plan` catches the panics of DataFusion's decoder on purpose (it panics on
        // some malformed plans rather than erroring), as the node needs; libfuzzer-sys's panic
        // hook would abort even on those. A panic that escapes `decode_plan` still aborts:
        // libfuzzer-sys catches it around this target and aborts.
        std::panic::set_hook(Box::new(|_| {}));
        let functions = tern_exec::Functions::default();
        struct Nothing;
        impl tern_exec::BlockReader for Nothing {
            fn read(&self, _: tern_proto::BlockHash, _: Vec<u64>) -> tern_exec::ReadFuture {
                Box::pin(async { Err("no blocks while fuzzing".to_string()) })
            }
        }
        impl tern_exec::ShuffleFetcher for Nothing {
            fn fetch(
                &self,
                _: Vec<tern_exec::ShuffleKey>,
                _: Option<Vec<usize>>,
                _: u64,
                _: String,
            ) -> tern_exec::ShuffleFuture {
                Box::pin(async { Err("no shuffles while fuzzing".to_string()) })
            }
        }
        let nothing = Arc::new(Nothing);
        tern_exec::task_context(
            &functions,
            2,
            nothing.clone(),
            nothing,
            &tern_exec::MemoryLimit::default(),
        )
        .expect("a task context")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = tern_exec::decode_plan(data, context());
});
