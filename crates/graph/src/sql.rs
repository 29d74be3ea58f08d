//! The `sql` kernel: a query over one table (registered as `input`), run by DataFusion inside
//! the task, with the same guarded functions as every query (see `tern_exec`), and no files.

use std::sync::Arc;

use tern_exec::arrow::datatypes::SchemaRef;
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::datasource::MemTable;
use tern_exec::datafusion::execution::context::SQLOptions;
use tern_proto::Datum;

/// Run `query` over `batches`.
pub(crate) fn run(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    query: &str,
) -> Result<Datum, String> {
    // A runtime of the task's own: the kernel is called from plain threads (the thread-pool
    // scheduler, a node's task slot), and DataFusion's operators await.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start the query's runtime: {e}"))?;
    runtime.block_on(async move {
        let ctx = tern_exec::local_session(1).map_err(|e| e.to_string())?;
        let input = MemTable::try_new(schema, vec![batches]).map_err(|e| e.to_string())?;
        ctx.register_table("input", Arc::new(input))
            .map_err(|e| e.to_string())?;
        // Queries only: no tables made, no files written.
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(query, options)
            .await
            .map_err(|e| e.to_string())?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let answer = frame.collect().await.map_err(|e| e.to_string())?;
        crate::kernels::to_table(&schema, &answer)
    })
}
