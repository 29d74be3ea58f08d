//! `tern._tern`, the native half of the Python package `tern`: a thin layer over
//! `tern-client`, so Python speaks to the cluster through the one protocol implementation
//! there is. It owns the conversions between Python and the client (Arrow data in and out
//! through the C stream interface, records as JSON text, errors as Python exceptions), a
//! tokio runtime for the client's calls, which run with the GIL released and stop when
//! Python is interrupted, and the in-process engine of the single-machine schedulers
//! (`local.rs`). It does not own anything a user sees by Dask's names: that is the
//! pure-Python package (`python/tern/`), which pyarrow and pandas serve.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::types::PyTuple;
use tern_client::{Client, ClientError, FutureError, TaskFuture};
use tern_proto::{Arg, DatasetRecord, Datum, Graph, Kernel, Task, Value};

mod local;
mod put;
mod streams;

create_exception!(
    _tern,
    TernError,
    PyException,
    "An error from a tern cluster or its client."
);
create_exception!(
    _tern,
    ClusterNotFound,
    TernError,
    "No cluster where one was looked for (start one with `tern up`, or tern.LocalCluster())."
);
create_exception!(
    _tern,
    DatasetExists,
    TernError,
    "A dataset of that name exists (pass replace=True to write a new version)."
);
create_exception!(_tern, NoSuchDataset, TernError, "No dataset of that name.");
create_exception!(
    _tern,
    TaskFailed,
    TernError,
    "A task failed (for a Python function: its exception and remote traceback)."
);
create_exception!(
    _tern,
    Conflict,
    TernError,
    "What the request expected changed meanwhile (another writer); nothing was done."
);

/// The Python exception a client error becomes, by its kind (never by its text).
fn to_py(e: ClientError) -> PyErr {
    let message = e.to_string();
    match e {
        ClientError::NoCluster { .. } | ClientError::Config { .. } => {
            ClusterNotFound::new_err(message)
        }
        ClientError::DatasetExists { .. } | ClientError::Exists(_) => {
            DatasetExists::new_err(message)
        }
        ClientError::NoSuchDataset { .. } | ClientError::NotFound(_) => {
            NoSuchDataset::new_err(message)
        }
        ClientError::Conflict(_) => Conflict::new_err(message),
        _ => TernError::new_err(message),
    }
}

fn arrow_err(e: impl std::fmt::Display) -> PyErr {
    TernError::new_err(format!("Arrow data: {e}"))
}

/// The runtime the client's calls run on: two threads, made on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tern-client")
            .enable_all()
            .build()
            .expect("a tokio runtime for the tern client")
    })
}

/// Run `work` on the client's runtime with the GIL released; Ctrl-C (any pending Python
/// signal) stops it within a tenth of a second, and dropping it stops what it asked of the
/// cluster (a query's stream closes, and its coordinator stops it).
fn wait<T: Send + 'static>(
    py: Python<'_>,
    work: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    wait_ticking(py, work, |_| Ok(()))
}

/// [`wait`], calling `tick` (with the GIL) every tenth of a second while the work runs.
fn wait_ticking<T: Send + 'static>(
    py: Python<'_>,
    work: impl Future<Output = T> + Send + 'static,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<T> {
    let mut running = runtime().spawn(work);
    loop {
        let step = py.allow_threads(|| {
            runtime().block_on(async {
                tokio::time::timeout(Duration::from_millis(100), &mut running).await
            })
        });
        match step {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => return Err(TernError::new_err(format!("the call failed: {e}"))),
            Err(_) => {
                if let Err(stopped) = py.check_signals().and_then(|()| tick(py)) {
                    running.abort();
                    return Err(stopped);
                }
            }
        }
    }
}

/// The formats a dataset may be stored in.
fn dataset_format(format: &str) -> PyResult<&'static str> {
    match format {
        "arrow-ipc" => Ok("arrow-ipc"),
        tern_array::FORMAT => Ok(tern_array::FORMAT),
        other => Err(TernError::new_err(format!(
            "format {other:?}: arrow-ipc or {}",
            tern_array::FORMAT
        ))),
    }
}

/// A dataset record as JSON text for the Python side (`json.loads`).
fn record_json(record: &DatasetRecord) -> String {
    let partitions: Vec<serde_json::Value> = record
        .partitions
        .iter()
        .map(|p| {
            serde_json::json!({
                "rows": p.rows,
                "bytes": p.bytes,
                "holders": p.holders,
                "block": p.block.to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "name": record.name,
        "version": record.version,
        "format": record.format,
        "schema": record.schema,
        "rows": record.partitions.iter().map(|p| p.rows).sum::<u64>(),
        "bytes": record.partitions.iter().map(|p| p.bytes).sum::<u64>(),
        "created_ms": record.created_ms,
        "partitions": partitions,
    })
    .to_string()
}

/// A connection to one cluster (Python's `tern.Client` holds one).
#[pyclass(module = "tern._tern", frozen)]
struct NativeClient {
    client: Arc<Client>,
    /// The cluster directory it was found in.
    #[pyo3(get)]
    cluster: String,
}

#[pymethods]
impl NativeClient {
    /// Connect to the cluster in directory `cluster` (else `$TERN_CLUSTER`, else `./.tern`),
    /// as the `tern` command finds it. No call is made yet.
    #[new]
    #[pyo3(signature = (cluster=None))]
    fn new(cluster: Option<String>) -> PyResult<Self> {
        let dir = tern_client::cluster_dir(cluster.as_deref().map(Path::new));
        // The QUIC endpoint is made on the runtime its calls will run on.
        let _entered = runtime().enter();
        let client = Client::open(&dir).map_err(to_py)?;
        Ok(Self {
            client: Arc::new(client),
            cluster: dir.display().to_string(),
        })
    }

    /// The node addresses the client configuration names.
    fn nodes(&self) -> Vec<String> {
        self.client.nodes().to_vec()
    }

    /// Run a SQL query; its answer as an Arrow stream capsule. `progress`, when given, is
    /// called with `(tasks done, tasks in all)` as the query's stages run.
    #[pyo3(signature = (query, progress=None))]
    fn sql<'py>(
        &self,
        py: Python<'py>,
        query: String,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, pyo3::types::PyCapsule>> {
        let client = self.client.clone();
        // Tasks done and planned, per stage, as the coordinator reports them.
        let seen = Arc::new(std::sync::Mutex::new((
            Vec::<u64>::new(),
            Vec::<u64>::new(),
        )));
        let reported = seen.clone();
        let work = async move {
            let mut stream = client.sql_stream(&query).await?;
            let mut batches = Vec::new();
            while let Some(update) = stream.next_update().await? {
                match update {
                    tern_client::QueryUpdate::Planned(stages) => {
                        let mut seen = reported.lock().unwrap_or_else(|p| p.into_inner());
                        seen.0 = vec![0; stages.len()];
                        seen.1 = stages.iter().map(|s| s.tasks).collect();
                    }
                    tern_client::QueryUpdate::Progress { stage, done, .. } => {
                        let mut seen = reported.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(d) = seen.0.get_mut(stage as usize) {
                            *d = done;
                        }
                    }
                    tern_client::QueryUpdate::Batch(batch) => batches.push(batch),
                    tern_client::QueryUpdate::Finished(_) => break,
                }
            }
            let schema = stream.schema().ok_or_else(|| {
                ClientError::Unexpected("the query's answer had no schema".into())
            })?;
            Ok::<_, ClientError>((schema, batches))
        };
        let mut last = (0, 0);
        let mut tick = |py: Python<'_>| -> PyResult<()> {
            let Some(callback) = &progress else {
                return Ok(());
            };
            let now = {
                let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                (seen.0.iter().sum::<u64>(), seen.1.iter().sum::<u64>())
            };
            if now != last {
                last = now;
                callback.call1(now)?;
            }
            let _ = py;
            Ok(())
        };
        let (schema, batches) = wait_ticking(py, work, &mut tick)?.map_err(to_py)?;
        // The last count, however quick the query was.
        tick(py)?;
        streams::export(py, schema, batches)
    }

    /// The stages and tasks a SQL query would run.
    fn explain(&self, py: Python<'_>, query: String) -> PyResult<String> {
        let client = self.client.clone();
        wait(py, async move { client.explain(&query).await })?.map_err(to_py)
    }

    /// Every dataset's summary (name, version, format, npartitions, rows, bytes), as JSON
    /// text (a list in name order), read a page at a time.
    fn datasets(&self, py: Python<'_>) -> PyResult<String> {
        let client = self.client.clone();
        let summaries =
            wait(py, async move { client.dataset_summaries().await })?.map_err(to_py)?;
        serde_json::to_string(&summaries).map_err(|e| PyException::new_err(e.to_string()))
    }

    /// One dataset's record as JSON text, or `None`.
    fn dataset(&self, py: Python<'_>, name: String) -> PyResult<Option<String>> {
        let client = self.client.clone();
        let record = wait(py, async move { client.dataset(&name).await })?.map_err(to_py)?;
        Ok(record.as_ref().map(record_json))
    }

    /// Store `partitions` (each Arrow data of one schema: a pyarrow Table) as dataset
    /// `name`, each partition in triplicate; with `replace`, as a new version of an existing
    /// one. A table unless `format` says `ndarray` (an array's chunks, `schema` its
    /// description). The record written, as JSON text.
    #[pyo3(signature = (name, partitions, replace=false, format="arrow-ipc", schema=None))]
    fn put(
        &self,
        py: Python<'_>,
        name: String,
        partitions: Vec<Bound<'_, PyAny>>,
        replace: bool,
        format: &str,
        schema: Option<String>,
    ) -> PyResult<String> {
        let format = dataset_format(format)?;
        let put = put::DatasetPut::start(self.client.clone(), name, replace, format, schema);
        for part in partitions {
            put.add(py, part)?;
        }
        put.commit(py)
    }

    /// Store dataset `name` one partition at a time (as `put` does, holding about two
    /// partitions at once): `add` each, then `commit`.
    #[pyo3(signature = (name, replace=false, format="arrow-ipc", schema=None))]
    fn put_stream(
        &self,
        name: String,
        replace: bool,
        format: &str,
        schema: Option<String>,
    ) -> PyResult<put::DatasetPut> {
        let format = dataset_format(format)?;
        Ok(put::DatasetPut::start(
            self.client.clone(),
            name,
            replace,
            format,
            schema,
        ))
    }

    /// Remove dataset `name` (its blocks are collected later).
    fn remove(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let client = self.client.clone();
        wait(py, async move { client.remove_dataset(&name).await })?.map_err(to_py)
    }

    /// Partition `index` of dataset `name`, as the Arrow IPC stream it is stored as.
    fn read_partition<'py>(
        &self,
        py: Python<'py>,
        name: String,
        index: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let client = self.client.clone();
        let bytes = wait(py, async move {
            let record = client
                .dataset(&name)
                .await?
                .ok_or(ClientError::NoSuchDataset { name })?;
            let addresses = client.node_addresses().await?;
            client.read_partition(&record, index, &addresses).await
        })?
        .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Submit calls of one Python function (`function`: `cloudpickle.dumps((fn, kwargs))`)
    /// as one graph, a task per call, each over its arguments: `("pickle", bytes)`,
    /// `("future", NativeFuture)` or `("partition", dataset, version, index)`. A call over a
    /// stored partition runs on the least busy of its holders; one over a future's output
    /// where that output is kept. Returns a future per call, in order.
    fn submit_python(
        &self,
        py: Python<'_>,
        name: String,
        function: Vec<u8>,
        calls: Vec<Vec<Bound<'_, PyTuple>>>,
    ) -> PyResult<Vec<NativeFuture>> {
        let kernel = python_kernel(function);
        let mut tasks = Vec::with_capacity(calls.len());
        for call in &calls {
            let args = call
                .iter()
                .map(|a| python_arg(a, &[]))
                .collect::<PyResult<Vec<Arg>>>()?;
            tasks.push(Task::new(&name, kernel.clone(), args));
        }
        let wanted = tasks.iter().map(|t| t.key.clone()).collect();
        Ok(self.submit(py, Graph { tasks, wanted }))
    }

    /// Submit a graph of Python calls (`tern.delayed`): `tasks` as `(name, function,
    /// arguments)`, an argument `("task", i)` reading the output of the `i`th task (an
    /// earlier one), the others as for `submit_python`. Returns a future for each task
    /// `wanted` names (by index).
    fn submit_python_graph(
        &self,
        py: Python<'_>,
        tasks: Vec<(String, Vec<u8>, Vec<Bound<'_, PyTuple>>)>,
        wanted: Vec<usize>,
    ) -> PyResult<Vec<NativeFuture>> {
        let tasks = tasks
            .into_iter()
            .map(|(name, function, args)| (name, python_kernel(function), args))
            .collect();
        let graph = graph_of(tasks, &wanted)?;
        Ok(self.submit(py, graph))
    }

    /// Submit a graph of built-in kernels (the array operations) and Python calls among
    /// them (`map_blocks`): `tasks` as `(name, kernel, arguments)`, the kernel a built-in's
    /// name or a pickled Python function (bytes); arguments as for `submit_python_graph` plus
    /// `("value", x)` for a number, a boolean or text. Returns a future for each task
    /// `wanted` names; with `stay`, the wanted outputs stay on the nodes that made them and
    /// each future resolves to `None` once made (`persist`).
    #[pyo3(signature = (tasks, wanted, stay = false))]
    fn submit_builtin_graph(
        &self,
        py: Python<'_>,
        tasks: Vec<(String, KernelOf, Vec<Bound<'_, PyTuple>>)>,
        wanted: Vec<usize>,
        stay: bool,
    ) -> PyResult<Vec<NativeFuture>> {
        let tasks = tasks
            .into_iter()
            .map(|(name, kernel, args)| {
                let kernel = match kernel {
                    KernelOf::Builtin(name) => Kernel::builtin(&name),
                    KernelOf::Python(function) => python_kernel(function),
                };
                (name, kernel, args)
            })
            .collect();
        let graph = graph_of(tasks, &wanted)?;
        Ok(self.submit_kept(py, graph, stay))
    }

    /// The cluster's nodes and leader, as JSON text.
    fn status(&self, py: Python<'_>) -> PyResult<String> {
        let client = self.client.clone();
        let status = wait(py, async move { client.status().await })?.map_err(to_py)?;
        let nodes: Vec<serde_json::Value> = status
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id,
                    "address": n.address,
                    "state": format!("{:?}", n.state).to_lowercase(),
                    "role": format!("{:?}", n.role).to_lowercase(),
                    "capacity_bytes": n.capacity_bytes,
                    "stored_bytes": n.stored_bytes,
                    "task_slots": n.task_slots,
                    "tasks_running": n.tasks_running,
                    "query_memory_bytes": n.query_memory_bytes,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "leader": status.leader,
            "term": status.term,
            "nodes": nodes,
            "under_replicated": status.under_replicated,
            "missing": status.missing,
        })
        .to_string())
    }
}

impl NativeClient {
    /// Submit `graph` keeping its outputs (futures); the futures' driver runs on the
    /// client's runtime.
    fn submit(&self, py: Python<'_>, graph: Graph) -> Vec<NativeFuture> {
        self.submit_kept(py, graph, false)
    }

    /// `graph` submitted; with `stay`, its wanted outputs stay on the nodes (`persist`).
    fn submit_kept(&self, py: Python<'_>, graph: Graph, stay: bool) -> Vec<NativeFuture> {
        let client = self.client.clone();
        let futures = py.allow_threads(|| {
            let _entered = runtime().enter();
            if stay {
                client.persist(graph)
            } else {
                client.submit(graph)
            }
        });
        futures
            .into_iter()
            .map(|future| NativeFuture { future })
            .collect()
    }
}

/// A graph of `tasks` (each reading earlier ones by index), wanting those `wanted` names.
/// A pickled Python function as a task's kernel (run by the nodes' Python workers).
fn python_kernel(function: Vec<u8>) -> Kernel {
    Kernel::External {
        runtime: "python".into(),
        function,
    }
}

/// A task's kernel as Python gives it: a built-in's name, or a pickled function.
#[derive(FromPyObject)]
enum KernelOf {
    Builtin(String),
    Python(Vec<u8>),
}

fn graph_of(
    tasks: Vec<(String, Kernel, Vec<Bound<'_, PyTuple>>)>,
    wanted: &[usize],
) -> PyResult<Graph> {
    let mut made: Vec<Task> = Vec::with_capacity(tasks.len());
    for (name, kernel, args) in tasks {
        let keys: Vec<tern_proto::TaskKey> = made.iter().map(|t| t.key.clone()).collect();
        let args = args
            .iter()
            .map(|a| python_arg(a, &keys))
            .collect::<PyResult<Vec<Arg>>>()?;
        made.push(Task::new(&name, kernel, args));
    }
    let wanted = wanted
        .iter()
        .map(|&i| {
            made.get(i)
                .map(|t| t.key.clone())
                .ok_or_else(|| TernError::new_err(format!("no task {i} in the graph")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Graph {
        tasks: made,
        wanted,
    })
}

/// One argument of a Python call, as the graph takes it; `("task", i)` reads `earlier[i]`,
/// `("part", i, p)` part `p` of what `earlier[i]` made as `Datum::Parts`.
fn python_arg(arg: &Bound<'_, PyTuple>, earlier: &[tern_proto::TaskKey]) -> PyResult<Arg> {
    let kind: String = arg.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "pickle" => Arg::Value(Value::Bytes(arg.get_item(1)?.extract()?)),
        "future" => {
            let item = arg.get_item(1)?;
            let future = item.downcast::<NativeFuture>()?;
            Arg::Output(future.get().future.key().clone())
        }
        "task" => {
            let i: usize = arg.get_item(1)?.extract()?;
            let key = earlier.get(i).ok_or_else(|| {
                TernError::new_err(format!("task {i} is not an earlier task of the graph"))
            })?;
            Arg::Output(key.clone())
        }
        "part" => {
            let i: usize = arg.get_item(1)?.extract()?;
            let of = earlier.get(i).cloned().ok_or_else(|| {
                TernError::new_err(format!("task {i} is not an earlier task of the graph"))
            })?;
            Arg::Part {
                of,
                part: arg.get_item(2)?.extract()?,
            }
        }
        "value" => {
            let item = arg.get_item(1)?;
            Arg::Value(if item.is_instance_of::<pyo3::types::PyBool>() {
                Value::Bool(item.extract()?)
            } else if let Ok(i) = item.extract::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = item.extract::<f64>() {
                Value::Float(f)
            } else {
                Value::Str(item.extract()?)
            })
        }
        "partition" => Arg::Partition {
            dataset: arg.get_item(1)?.extract()?,
            version: arg.get_item(2)?.extract()?,
            index: arg.get_item(3)?.extract()?,
        },
        other => {
            return Err(TernError::new_err(format!(
                "an argument of kind {other:?} (pickle, value, future, task, part or partition)"
            )));
        }
    })
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null | Value::Bytes(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Str(s) => s.clone().into(),
        Value::List(items) => items.iter().map(value_json).collect(),
    }
}

/// The future of one task (Python's `tern.Future` holds one).
#[pyclass(module = "tern._tern", frozen)]
struct NativeFuture {
    future: TaskFuture,
}

#[pymethods]
impl NativeFuture {
    /// The task's key (`name-token`).
    #[getter]
    fn key(&self) -> String {
        self.future.key().to_string()
    }

    /// Whether the task has ended (done or failed).
    fn done(&self) -> bool {
        self.future.done()
    }

    /// Wait for the task: `("pickle", bytes)`, `("table", Arrow IPC bytes)` or
    /// `("json", text)`; a failure raises `TaskFailed` with its message.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyAny>)> {
        let future = self.future.clone();
        let outcome = wait(py, async move { future.result().await })?;
        match outcome {
            Ok(Datum::Table(bytes)) => Ok(("table".into(), PyBytes::new(py, &bytes).into_any())),
            Ok(Datum::Value(Value::Bytes(bytes))) => {
                Ok(("pickle".into(), PyBytes::new(py, &bytes).into_any()))
            }
            Ok(Datum::Value(value)) => {
                let text = value_json(&value).to_string();
                Ok(("json".into(), text.into_pyobject(py)?.into_any()))
            }
            // As a node keeps such an output: read whole, it is how many parts there are.
            Ok(Datum::Parts(parts)) => {
                Ok(("json".into(), parts.len().into_pyobject(py)?.into_any()))
            }
            Err(FutureError::Task { key, failure }) => {
                Err(TaskFailed::new_err(format!("task {key} failed: {failure}")))
            }
            Err(FutureError::Job(why)) => Err(TaskFailed::new_err(why)),
        }
    }

    /// Stop the submission this future belongs to.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.clone();
        wait(py, async move { future.cancel().await })?.map_err(to_py)
    }
}

/// Check an array's description (JSON: dtype, shape, chunks) as the cluster would; raises
/// `TernError` with the one-line reason it would refuse it for.
#[pyfunction]
fn array_check(meta: &str) -> PyResult<()> {
    tern_array::ArrayMeta::from_json(meta)
        .map(|_| ())
        .map_err(|e| TernError::new_err(e.to_string()))
}

/// The chunk shape tern picks for an array of `descr` (NumPy's descr as JSON) and `shape`,
/// as JSON.
#[pyfunction]
fn array_auto_chunks(descr: &str, shape: Vec<u64>) -> PyResult<String> {
    let value: serde_json::Value =
        serde_json::from_str(descr).map_err(|e| TernError::new_err(e.to_string()))?;
    let dtype =
        tern_array::DType::from_json(&value).map_err(|e| TernError::new_err(e.to_string()))?;
    Ok(serde_json::Value::from(tern_array::ArrayMeta::auto_chunks(&dtype, &shape)).to_string())
}

#[pymodule]
fn _tern(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeFuture>()?;
    m.add_class::<put::DatasetPut>()?;
    m.add_class::<local::LocalSession>()?;
    m.add_function(wrap_pyfunction!(local::tables_of, m)?)?;
    m.add_function(wrap_pyfunction!(array_check, m)?)?;
    m.add_function(wrap_pyfunction!(array_auto_chunks, m)?)?;
    let py = m.py();
    m.add("TernError", py.get_type::<TernError>())?;
    m.add("ClusterNotFound", py.get_type::<ClusterNotFound>())?;
    m.add("DatasetExists", py.get_type::<DatasetExists>())?;
    m.add("NoSuchDataset", py.get_type::<NoSuchDataset>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("TaskFailed", py.get_type::<TaskFailed>())?;
    Ok(())
}
