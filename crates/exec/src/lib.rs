//! Running query work on a node with Apache DataFusion.
//!
//! It owns how stored datasets look to DataFusion ([`StoredTable`], whose scan
//! [`PartitionScanExec`] has one output partition per stored partition), how a piece of a
//! physical plan travels between nodes ([`encode_plan`] / [`decode_plan`]: DataFusion's protobuf
//! encoding plus [`TernCodec`] for tern's own operators), how Arrow batches travel (Arrow IPC,
//! [`batches_to_ipc`] / [`ipc_to_batches`]), and running one task ([`run_task`]). Where a
//! partition's bytes come from is the caller's business ([`BlockReader`]): the node reads its
//! own store first and other holders after. It does not cut plans into stages or choose nodes
//! (that is `tern-sched`).

mod codec;
mod ipc;
mod scan;

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use arrow;
pub use codec::{TernCodec, decode_plan, encode_plan};
pub use datafusion;
pub use ipc::{batches_to_ipc, ipc_to_batches};
pub use scan::{BlockReader, PartitionScanExec, ReadFuture, StoredTable, schema_from_json};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Plan(String),
    #[error("dataset {name:?} has a schema tern cannot read: {reason}")]
    BadSchema { name: String, reason: String },
    #[error("{0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Session settings every node and coordinator share, so a plan means the same everywhere:
/// no round-robin repartitioning (a stored partition stays one stream, so a task reads one
/// block), and `target_partitions` for the stages after an exchange.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_round_robin_repartition(false)
        .with_information_schema(false);
    // Plans are cut where partitions are exchanged; keep joins and aggregates on hash
    // exchanges the cutter recognizes rather than sort-merge variants.
    config.options_mut().optimizer.prefer_hash_join = true;
    config
}

/// A session whose tasks read partitions through `reader`.
pub fn session(target_partitions: usize, reader: Arc<dyn BlockReader>) -> SessionContext {
    let config = session_config(target_partitions).with_extension(Arc::new(ReaderHandle(reader)));
    SessionContext::new_with_config(config)
}

/// The extension a session carries so scans find their blocks.
pub(crate) struct ReaderHandle(pub(crate) Arc<dyn BlockReader>);

/// Run partition `partition` of `plan` to completion.
pub async fn run_task(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, ExecError> {
    use futures::TryStreamExt;
    let stream = plan.execute(partition, context)?;
    Ok(stream.try_collect().await?)
}

/// Run every partition of `plan` and return all batches, partition by partition.
pub async fn run_all(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, ExecError> {
    Ok(collect(plan, context).await?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::physical_plan::displayable;
    use tern_proto::{BlockHash, DatasetRecord, PartitionRecord};

    use super::*;

    struct NoBlocks;
    impl BlockReader for NoBlocks {
        fn read(&self, block: BlockHash, _holders: Vec<u64>) -> ReadFuture {
            Box::pin(async move { Err(format!("no block {block} here")) })
        }
    }

    fn record() -> DatasetRecord {
        let schema = r#"[{"name":"id","type":"Int64","nullable":false},{"name":"city","type":"Utf8","nullable":true}]"#;
        DatasetRecord {
            name: "trips".into(),
            version: 1,
            format: "arrow-ipc".into(),
            schema: schema.into(),
            partitions: (0..3u8)
                .map(|i| PartitionRecord {
                    block: BlockHash::of(&[i]),
                    bytes: 10,
                    rows: 1,
                    holders: vec![1, 2, 3],
                })
                .collect(),
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_planned_scan_travels_as_bytes_and_comes_back_the_same() {
        let ctx = session(2, Arc::new(NoBlocks));
        ctx.register_table("trips", Arc::new(StoredTable::new(&record()).unwrap()))
            .unwrap();
        let plan = ctx
            .sql("SELECT city FROM trips WHERE id > 3")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        assert!(
            text.contains("PartitionScanExec: dataset=trips, partitions=3"),
            "{text}"
        );
        let back = decode_plan(&encode_plan(plan.clone()).unwrap(), &ctx.task_ctx()).unwrap();
        assert_eq!(displayable(back.as_ref()).indent(true).to_string(), text);
        // Running it reads through the session's reader, whose failure names the partition.
        let err = run_all(back, ctx.task_ctx()).await.unwrap_err().to_string();
        assert!(
            err.contains("partition 0 of trips") || err.contains("of trips"),
            "{err}"
        );
    }

    #[test]
    fn schemas_come_back_from_the_catalog_json_and_bad_ones_are_named() {
        let schema = schema_from_json("trips", &record().schema).unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert!(!schema.field(0).is_nullable());
        let err = schema_from_json("trips", r#"[{"name":"x","type":"NoSuchType"}]"#).unwrap_err();
        assert!(
            err.to_string().contains("trips") && err.to_string().contains("x"),
            "{err}"
        );
    }
}
