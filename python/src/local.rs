//! The engine of the single-machine schedulers (`scheduler="sync"` or `"threads"`): the
//! same SQL a DataFrame sends the cluster, run here by DataFusion with the session settings
//! and guarded functions every node uses, over tables held in this process. The answers are
//! the cluster's answers because the engine is the cluster's engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use tern_exec::datafusion::common::TableReference;
use tern_exec::datafusion::datasource::MemTable;
use tern_exec::datafusion::physical_plan::collect;
use tern_exec::datafusion::prelude::SessionContext;

use crate::{TernError, streams};

/// A table held in this process: its schema and its partitions' batches.
struct LocalTable {
    schema: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
}

/// Tables held in this process and the SQL that runs over them (Python's
/// `tern.local.LocalData` holds one for the whole process).
#[pyclass(module = "tern._tern", frozen)]
pub struct LocalSession {
    tables: Mutex<BTreeMap<String, Arc<LocalTable>>>,
}

/// The runtime queries on the thread pool run on: a thread per core, made on first use.
fn pool() -> &'static tokio::runtime::Runtime {
    static POOL: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("tern-local")
            .enable_all()
            .build()
            .expect("a tokio runtime for local queries")
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn query_err(e: impl std::fmt::Display) -> PyErr {
    // DataFusion's message on one line, as the cluster gives it.
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    TernError::new_err(lines.join(" "))
}

impl LocalSession {
    fn table(&self, name: &str) -> PyResult<Arc<LocalTable>> {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables
            .get(name)
            .cloned()
            .ok_or_else(|| crate::NoSuchDataset::new_err(format!("no local table {name:?}")))
    }

    /// A DataFusion session over every table held, with `threads` partitions after an
    /// exchange (1 runs the whole query as one stream).
    fn context(&self, threads: usize) -> PyResult<SessionContext> {
        let ctx = tern_exec::local_session(threads).map_err(query_err)?;
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        for (name, table) in tables.iter() {
            let mem = MemTable::try_new(table.schema.clone(), table.partitions.clone())
                .map_err(query_err)?;
            ctx.register_table(TableReference::bare(name.as_str()), Arc::new(mem))
                .map_err(query_err)?;
        }
        Ok(ctx)
    }

    /// Run `query` on `threads` threads (1: on this thread, one call at a time, as Dask's
    /// synchronous scheduler does) with the GIL released.
    fn run(
        &self,
        py: Python<'_>,
        query: String,
        threads: usize,
    ) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
        let threads = if threads == 0 { cores() } else { threads };
        let ctx = self.context(threads)?;
        let work = async move {
            let frame = ctx.sql(&query).await?;
            let plan = frame.create_physical_plan().await?;
            let schema = plan.schema();
            let batches = collect(plan, ctx.task_ctx()).await?;
            Ok::<_, tern_exec::datafusion::error::DataFusionError>((schema, batches))
        };
        let answer = if threads == 1 {
            py.allow_threads(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TernError::new_err(format!("a runtime for the query: {e}")))
                    .map(|rt| rt.block_on(work))
            })?
        } else {
            py.allow_threads(|| pool().block_on(work))
        };
        answer.map_err(query_err)
    }
}

#[pymethods]
impl LocalSession {
    #[new]
    fn new() -> Self {
        Self {
            tables: Mutex::new(BTreeMap::new()),
        }
    }

    /// Hold `partitions` (each Arrow data: a pyarrow Table) as table `name`, replacing one
    /// of that name. The batches are shared with Python, not copied.
    fn register(&self, name: String, partitions: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let mut schema = None;
        let mut held = Vec::with_capacity(partitions.len());
        for (i, part) in partitions.iter().enumerate() {
            let (this, batches) = streams::import(part)?;
            match &schema {
                None => schema = Some(this),
                Some(first) if first.fields() != this.fields() => {
                    return Err(TernError::new_err(format!(
                        "partition {i} of {name:?} has another schema than the first"
                    )));
                }
                Some(_) => {}
            }
            held.push(batches);
        }
        let schema = schema.ok_or_else(|| TernError::new_err("no partitions to hold"))?;
        let table = LocalTable {
            schema,
            partitions: held,
        };
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.insert(name, Arc::new(table));
        Ok(())
    }

    /// Whether table `name` is held.
    fn has(&self, name: &str) -> bool {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.contains_key(name)
    }

    /// Stop holding table `name`.
    fn drop_table(&self, name: &str) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.remove(name);
    }

    /// How many partitions table `name` has.
    fn partitions(&self, name: &str) -> PyResult<usize> {
        Ok(self.table(name)?.partitions.len())
    }

    /// Partition `index` of table `name` as an Arrow stream capsule.
    fn read_partition<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        index: usize,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let table = self.table(name)?;
        let part = table.partitions.get(index).ok_or_else(|| {
            TernError::new_err(format!(
                "{name:?} has {} partitions, not {}",
                table.partitions.len(),
                index + 1
            ))
        })?;
        streams::export(py, table.schema.clone(), part.clone())
    }

    /// Run SQL `query` over the tables held on `threads` threads (0: one per core); its
    /// answer as an Arrow stream capsule.
    #[pyo3(signature = (query, threads=0))]
    fn sql<'py>(
        &self,
        py: Python<'py>,
        query: String,
        threads: usize,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let (schema, batches) = self.run(py, query, threads)?;
        streams::export(py, schema, batches)
    }

    /// The physical plan `query` would run here.
    fn explain(&self, py: Python<'_>, query: String) -> PyResult<String> {
        let ctx = self.context(cores())?;
        let work = async move {
            let frame = ctx.sql(&query).await?;
            let plan = frame.create_physical_plan().await?;
            Ok::<_, tern_exec::datafusion::error::DataFusionError>(
                tern_exec::datafusion::physical_plan::displayable(plan.as_ref())
                    .indent(true)
                    .to_string(),
            )
        };
        py.allow_threads(|| pool().block_on(work))
            .map_err(query_err)
    }
}

/// The tables SQL `query` reads (not the names its `WITH` clauses make), as written.
#[pyfunction]
pub fn tables_of(query: &str) -> PyResult<Vec<String>> {
    let ctx = SessionContext::new();
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(query, &dialect).map_err(query_err)?;
    let tables = state
        .resolve_table_references(&statement)
        .map_err(query_err)?;
    Ok(tables.iter().map(|t| t.table().to_string()).collect())
}
