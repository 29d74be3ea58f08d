//! Task graphs on a node: coordinating a client's graph (`SubmitGraph`, with
//! `tern_sched::GraphCoordinator`) and running the graph tasks coordinators send
//! (`RunGraphTasks`, in batches): inputs read (stored partitions checked against their dataset before a
//! kernel sees them, other tasks' outputs fetched from the nodes keeping them), the kernel
//! run in a task slot off the async threads, the output kept with the shuffle outputs under
//! `GRAPH_STAGE` until the job is released.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use tern_exec::arrow::buffer::Buffer;
use tern_exec::{BlockReader, ShuffleKey};
use tern_proto::{
    Arg, ArgSource, Caller, Datum, ErrorKind, ErrorReply, GRAPH_STAGE, GraphEvent, Kernel,
    MAX_GRAPH_BYTES, MAX_TASK_BATCH, NodeId, Response, TaskRan, TaskRun, Transport, human_bytes,
};
use tern_sched::{GraphCoordinator, PreparedGraph};
use tracing::{debug, warn};

use crate::compute::respond;
use crate::reader::BucketFetchError;
use crate::service::NodeService;

/// How long a kernel waits for the node's memory for queries held by other work before its
/// task is tried on another node.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Stored partitions read at once for one batch.
const READS_IN_FLIGHT: usize = 8;

/// What one task of a batch reads, or how it ended before its kernel ran.
type Inputs = Result<Vec<Datum>, TaskRan>;

impl<T: Transport, C: tern_proto::Clock> NodeService<T, C> {
    /// Drop the outputs in `release`, then run a batch of graph tasks in one task slot and
    /// keep their outputs (see the module docs); each task ends on its own: one that raises
    /// or lacks an input fails alone.
    pub(crate) async fn run_graph_tasks(
        &self,
        job: u64,
        runs: Vec<TaskRun>,
        release: Vec<u32>,
    ) -> Response {
        if runs.len() > MAX_TASK_BATCH {
            return Response::error(
                ErrorKind::Invalid,
                format!(
                    "a batch of {} graph tasks (at most {MAX_TASK_BATCH})",
                    runs.len()
                ),
            );
        }
        if let Some(run) = runs.iter().find(|r| r.sources.len() != r.task.args.len()) {
            return Response::error(
                ErrorKind::Invalid,
                format!(
                    "task {} has {} arguments but {} sources",
                    run.task.key,
                    run.task.args.len(),
                    run.sources.len()
                ),
            );
        }
        let inline = !self.blocks.blocks_thread();
        let hold = runs.is_empty();
        if !release.is_empty() || hold {
            let shuffles = self.shuffles.clone();
            let dropped = crate::blocks::off_runtime(inline, move || {
                shuffles.drop_tasks(job, GRAPH_STAGE, &release);
                if hold {
                    // No tasks: the coordinator holds the job's outputs for its client.
                    shuffles.touch(job);
                }
            });
            if let Err(e) = dropped.await {
                return Response::error(ErrorKind::Unavailable, e);
            }
            if hold {
                return Response::GraphTasksRan(Vec::new());
            }
        }
        let Some(_slot) = self.task_slots.acquire(job).await else {
            return Response::error(ErrorKind::Unavailable, "shutting down");
        };
        if self.compute.task_delay_ms > 0 {
            // A slow node (`tern up --slow-node`), for tests of placement and failures.
            let delay = self.compute.task_delay_ms * runs.len() as u64;
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let reader = self.reader(self.addresses(), false);
        let kept = fetch_kept(&reader, &runs).await;
        let (reader_ref, runs_ref, kept_ref) = (&reader, &runs, &kept);
        let inputs: Vec<Inputs> = futures::stream::iter(0..runs.len())
            .map(move |k| task_inputs(reader_ref, &runs_ref[k], kept_ref))
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        drop(kept);
        let work: Vec<(Kernel, Inputs)> = runs
            .iter()
            .map(|r| r.task.kernel.clone())
            .zip(inputs)
            .collect();
        // The kernels, one after another off the async threads, each holding twice its
        // inputs' bytes of the node's memory for queries while it runs (a kernel that cannot
        // have them now fails on this node and is tried on another; one that needs more than
        // the node has raises); each output encoded as kept.
        let memory = self.query_memory.clone();
        let workers = self.workers.clone();
        let me = self.id();
        let outputs = crate::blocks::off_runtime(inline, move || {
            work.into_iter()
                .map(|(kernel, inputs)| {
                    let inputs = inputs?;
                    let need = inputs.iter().map(datum_bytes).sum::<usize>().saturating_mul(2);
                    if need > memory.limit() {
                        // More than the node has at all: it fails the same anywhere.
                        return Ok(Err(format!(
                            "{kernel} needs {} of memory for queries, more than the node's {}",
                            human_bytes(need as u64),
                            human_bytes(memory.limit() as u64)
                        )));
                    }
                    // Other work holds it: wait a while for it (on a blocking thread; the
                    // simulator's inline runs do not wait) before trying another node.
                    let waited = std::time::Instant::now();
                    let mut held = memory.reserve(need);
                    while held.is_none() && !inline && waited.elapsed() < MEMORY_WAIT {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        held = memory.reserve(need);
                    }
                    let Some(_held) = held else {
                        return Err(TaskRan::Failed(ErrorReply {
                            kind: ErrorKind::Unavailable,
                            message: format!(
                                "{kernel} needs {} of the node's memory for queries; {} of {} are in use",
                                human_bytes(need as u64),
                                human_bytes(memory.used() as u64),
                                human_bytes(memory.limit() as u64)
                            ),
                        }));
                    };
                    match &kernel {
                        Kernel::External { runtime, function } => {
                            match workers.run(runtime, function, &inputs) {
                                Ok(datum) => Ok(kept_buckets(datum)),
                                // The node's trouble, not the function's: tried elsewhere.
                                Err(
                                    e @ (tern_workers::WorkerError::Died { .. }
                                    | tern_workers::WorkerError::NoRuntime { .. }),
                                ) => Err(TaskRan::Failed(ErrorReply {
                                    kind: ErrorKind::Unavailable,
                                    message: format!("node {me}: {e}"),
                                })),
                                Err(e) => Ok(Err(e.to_string())),
                            }
                        }
                        Kernel::Builtin { .. } => Ok(run_kernel(&kernel, inputs)),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(e) => return Response::error(ErrorKind::Unavailable, e),
        };
        // A task still running when its job was released (cancelled, its client gone, its
        // deadline passed) keeps nothing: nobody would release it again.
        let released = || {
            Response::GraphTasksRan(
                runs.iter()
                    .map(|_| {
                        TaskRan::Failed(ErrorReply {
                            kind: ErrorKind::Cancelled,
                            message: format!("job {job:x} was released"),
                        })
                    })
                    .collect(),
            )
        };
        if self.running_jobs.is_released(job) {
            return released();
        }
        let indexes: Vec<u32> = runs.iter().map(|r| r.index).collect();
        let shuffles = self.shuffles.clone();
        let ended = crate::blocks::off_runtime(inline, move || {
            indexes
                .into_iter()
                .zip(outputs)
                .map(|(index, output)| match output {
                    Ok(Ok(buckets)) => match shuffles.put(job, GRAPH_STAGE, index, buckets) {
                        Ok(bytes) => TaskRan::Kept { bytes },
                        Err(e) => TaskRan::Failed(ErrorReply {
                            kind: ErrorKind::Unavailable,
                            message: e.to_string(),
                        }),
                    },
                    Ok(Err(message)) => TaskRan::Raised { message },
                    Err(ended) => ended,
                })
                .collect::<Vec<_>>()
        })
        .await;
        if self.running_jobs.is_released(job) {
            // Released while the outputs were being kept.
            let shuffles = self.shuffles.clone();
            let _ = crate::blocks::off_runtime(inline, move || shuffles.release(job)).await;
            return released();
        }
        match ended {
            Ok(ended) => Response::GraphTasksRan(ended),
            Err(e) => Response::error(ErrorKind::Unavailable, e),
        }
    }

    /// Receive a client's graph (`bytes` of it in `body`, within the node's budget for bytes
    /// being received) and coordinate it.
    pub(crate) async fn submit_graph(
        &self,
        bytes: u64,
        mut body: tern_net::BodyReader,
        caller: &Caller,
        reply: tern_net::BodyWriter,
    ) {
        let graph = match self.receive_graph(bytes, &mut body, caller).await {
            Ok(graph) => graph,
            Err(refusal) => return respond(reply, &refusal).await,
        };
        self.run_graph(graph, caller, reply).await
    }

    /// The graph in `body`, decoded, checked and set up to run (off the async threads: a
    /// million tasks take a while). Outputs it names as kept by earlier submissions count only
    /// when this node keeps them for the same client (another client's are not its to read);
    /// the others are made again from the tasks sent with them.
    async fn receive_graph(
        &self,
        bytes: u64,
        body: &mut tern_net::BodyReader,
        caller: &Caller,
    ) -> Result<PreparedGraph, Response> {
        if bytes > MAX_GRAPH_BYTES {
            return Err(Response::error(
                ErrorKind::TooLarge,
                format!(
                    "a graph of {} is past the limit of {} (split it, or make its literals stored datasets)",
                    human_bytes(bytes),
                    human_bytes(MAX_GRAPH_BYTES)
                ),
            ));
        }
        let Some(_budget) = self.receiving.reserve(bytes).await else {
            return Err(Response::error(
                ErrorKind::Unavailable,
                format!(
                    "node {} is busy receiving other blocks and graphs; retry shortly",
                    self.id()
                ),
            ));
        };
        let encoded = crate::blocks::receive_body("the graph", bytes, body).await?;
        let inline = !self.blocks.blocks_thread();
        let mine = self.coordinated.kept_for(caller);
        let caller = caller.clone();
        let invalid = |e: String| Response::error(ErrorKind::Invalid, e);
        let decoded = crate::blocks::off_runtime(inline, move || {
            let mut submission = tern_proto::decode_submission(&encoded)
                .map_err(|e| invalid(format!("the graph is not readable: {e}")))?;
            drop(encoded);
            // Users' own code runs on the nodes (with the node user's rights): writers only.
            let runs_code = submission
                .graph
                .tasks
                .iter()
                .any(|t| matches!(t.kernel, Kernel::External { .. }));
            if runs_code {
                let write = tern_proto::Access::Client(tern_proto::ClientRole::Write);
                caller
                    .may(write, "a graph of users' functions")
                    .map_err(|e| Response::error(ErrorKind::Forbidden, e))?;
            }
            submission.kept.retain(|k| mine.contains(&k.job));
            PreparedGraph::new(submission).map_err(|e| invalid(e.to_string()))
        })
        .await;
        decoded
            .map_err(|e| Response::error(ErrorKind::Unavailable, e))
            .and_then(|graph| graph)
    }

    /// Coordinate a client's graph: its events go back as they happen, and the outputs it
    /// kept on the nodes are released when it ends.
    async fn run_graph(&self, graph: PreparedGraph, caller: &Caller, reply: tern_net::BodyWriter) {
        let (turn, datasets, nodes) = match self.start_job(caller, None).await {
            Ok(started) => started,
            Err(answer) => return respond(reply, &answer).await,
        };
        let tasks = graph.tasks();
        let keep = graph.keeps();
        let datasets = datasets.into_iter().map(|d| (d.name.clone(), d)).collect();
        let views = crate::compute::node_views(&nodes);
        let job = self.new_job_id();
        let mut reply = reply;
        if reply
            .respond(&Response::GraphRunning { job, tasks })
            .await
            .is_err()
        {
            return;
        }
        let started_ms = self.clock.wall().as_millis() as u64;
        let entry = self.coordinated.start(
            job,
            "graph",
            &format!("{tasks} tasks, {} wanted", graph.wanted_named()),
            caller,
            self.id(),
            started_ms,
        );
        entry.progress(0, tasks);
        if keep {
            self.coordinated.keep_for(job, caller);
        }
        let coordinator = GraphCoordinator::new(self.transport.as_ref(), &self.board, views, job);
        let (events, mut pending) = tokio::sync::mpsc::unbounded_channel();
        let running = coordinator.run(graph, &datasets, &events);
        tokio::pin!(running);
        let deadline = tokio::time::sleep(self.compute.query_timeout);
        tokio::pin!(deadline);
        let mut newest_progress = None;
        let ended: Result<GraphEvent, ()> = loop {
            tokio::select! {
                // Biased: polled in order, so a seed replays exactly under the simulator.
                biased;
                ended = &mut running => break Ok(match ended {
                    Ok(report) => GraphEvent::Finished(report),
                    Err(e) => GraphEvent::Failed(tern_proto::ErrorReply {
                        kind: ErrorKind::Invalid,
                        message: e.to_string(),
                    }),
                }),
                Some(event) = pending.recv() => {
                    // Progress that queued up while the client read goes out once, newest.
                    let mut batch = vec![event];
                    while let Ok(event) = pending.try_recv() {
                        batch.push(event);
                    }
                    let mut gone = false;
                    for event in batch {
                        if let GraphEvent::Progress { done, tasks } = event {
                            entry.progress(done, tasks);
                            newest_progress = Some(event);
                            continue;
                        }
                        gone |= reply.write_chunk(&tern_proto::encode_event(&event)).await.is_err();
                    }
                    if let Some(progress) = newest_progress.take() {
                        gone |= reply.write_chunk(&tern_proto::encode_event(&progress)).await.is_err();
                    }
                    if gone {
                        warn!(job, "graph abandoned: its client stopped reading");
                        break Err(());
                    }
                }
                _ = entry.cancelled() => {
                    break Ok(GraphEvent::Failed(tern_proto::ErrorReply {
                        kind: ErrorKind::Cancelled,
                        message: format!("graph {job:x} was cancelled"),
                    }));
                }
                _ = &mut deadline => {
                    warn!(job, "graph stopped at its deadline");
                    break Ok(GraphEvent::Failed(tern_proto::ErrorReply {
                        kind: ErrorKind::Unavailable,
                        message: format!(
                            "the graph ran past its deadline of {} s (query_timeout_ms; `tern up --query-timeout-secs`) and was stopped",
                            self.compute.query_timeout.as_secs()
                        ),
                    }));
                }
            }
        };
        if let Ok(last) = &ended {
            // Outputs the coordinator sent before it ended are still queued.
            while let Ok(event) = pending.try_recv() {
                if !matches!(event, GraphEvent::Progress { .. }) {
                    let _ = reply.write_chunk(&tern_proto::encode_event(&event)).await;
                }
            }
            let _ = reply.write_chunk(&tern_proto::encode_event(last)).await;
        }
        if keep && matches!(ended, Ok(GraphEvent::Finished(_))) {
            // Finished, its outputs kept for its client's later submissions: the client's
            // turn is over, the outputs stay while it holds the stream open.
            self.coordinated.end(job, tern_proto::JobState::Kept);
            drop(turn);
            hold(&coordinator, &mut reply).await;
            debug!(job, "kept graph outputs released: their client let go");
            let _ = reply.finish().await;
            self.coordinated.let_go(job);
            coordinator.release().await;
            return;
        }
        let _ = reply.finish().await;
        self.coordinated.let_go(job);
        coordinator.release().await;
        self.coordinated.end(
            job,
            match ended {
                Ok(GraphEvent::Finished(_)) => tern_proto::JobState::Finished,
                Ok(GraphEvent::Failed(e)) => tern_proto::JobState::Failed(e.message),
                _ => tern_proto::JobState::Failed("its client went away".into()),
            },
        );
    }
}

/// How often a coordinator holding a finished graph's outputs checks its client is still
/// there (a closed stream: the outputs are released), and how many checks between telling the
/// nodes the job is still held (they expire outputs not held for half an hour).
const HOLD_BEAT: std::time::Duration = std::time::Duration::from_secs(2);
const BEATS_PER_TOUCH: u32 = 60;

/// Hold a finished graph's kept outputs while its client reads the stream.
async fn hold<T: Transport>(
    coordinator: &GraphCoordinator<'_, T>,
    reply: &mut tern_net::BodyWriter,
) {
    let mut beats = 0u32;
    loop {
        tokio::time::sleep(HOLD_BEAT).await;
        let beat = tern_proto::encode_event(&GraphEvent::Holding);
        if reply.write_chunk(&beat).await.is_err() {
            return;
        }
        beats += 1;
        if beats.is_multiple_of(BEATS_PER_TOUCH) {
            coordinator.hold().await;
        }
    }
}

/// An output a batch reads (or one of its parts), or which node lost it and why.
type KeptInput = Result<Datum, (NodeId, BucketFetchError)>;

/// Outputs a batch reads, by (job, task, bucket) as kept, each with how many of the batch's
/// arguments still read it: the last one takes it, the others copy it.
struct KeptInputs(std::sync::Mutex<HashMap<(u64, u32, u32), (usize, KeptInput)>>);

impl KeptInputs {
    fn take(&self, key: (u64, u32, u32)) -> Option<KeptInput> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (uses, input) = kept.get_mut(&key)?;
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            kept.remove(&key).map(|(_, input)| input)
        } else {
            Some(input.clone())
        }
    }
}

/// The outputs of other tasks that a batch reads (of its job, or of an earlier submission's),
/// fetched once each, in one request per node and job keeping them (a chunk of
/// [`tern_proto::fetch_batches`] at a time).
async fn fetch_kept<T: Transport>(
    reader: &crate::reader::NodeReader<T>,
    runs: &[TaskRun],
) -> KeptInputs {
    // One request fetches one bucket of several tasks' outputs.
    let mut by_node: BTreeMap<(NodeId, &str, u64, u32), Vec<(u32, u64)>> = BTreeMap::new();
    let mut uses: HashMap<(u64, u32, u32), usize> = HashMap::new();
    for run in runs {
        for source in &run.sources {
            if let ArgSource::Kept {
                job,
                task,
                node,
                addr,
                bucket,
                bytes,
            } = source
            {
                *uses.entry((*job, *task, *bucket)).or_default() += 1;
                by_node
                    .entry((*node, addr.as_str(), *job, *bucket))
                    .or_default()
                    .push((*task, *bytes));
            }
        }
    }
    let mut requests = Vec::new();
    for ((node, addr, job, bucket), mut tasks) in by_node {
        tasks.sort_unstable();
        tasks.dedup();
        // A bounded body each (a part's size is not known apart: its whole output's counts).
        for chunk in tern_proto::fetch_batches(tasks) {
            let keys = chunk
                .iter()
                .map(|&task| ShuffleKey {
                    job,
                    stage: GRAPH_STAGE,
                    task,
                    bucket,
                })
                .collect();
            let fetched = reader.fetch_buckets(keys, None, node, addr.to_string());
            requests.push(async move { (node, job, bucket, chunk, fetched.await) });
        }
    }
    let mut kept = HashMap::new();
    for (node, job, bucket, tasks, fetched) in futures::future::join_all(requests).await {
        match fetched {
            Ok(parts) => {
                for (task, part) in tasks.into_iter().zip(parts) {
                    let datum = Datum::from_kept(shared(part)).map_err(|e| {
                        let why = format!("an unreadable output: {e}");
                        (node, BucketFetchError::Lost(why))
                    });
                    kept.insert((job, task, bucket), datum);
                }
            }
            Err(reason) => {
                for task in tasks {
                    kept.insert((job, task, bucket), Err((node, reason.clone())));
                }
            }
        }
    }
    let kept = kept
        .into_iter()
        .map(|(key, input)| (key, (uses.get(&key).copied().unwrap_or(1), input)))
        .collect();
    KeptInputs(std::sync::Mutex::new(kept))
}

/// Bytes kept in an Arrow buffer (the outputs a node keeps), shared as [`bytes::Bytes`].
fn shared(buffer: Buffer) -> bytes::Bytes {
    struct Kept(Buffer);
    impl AsRef<[u8]> for Kept {
        fn as_ref(&self) -> &[u8] {
            self.0.as_slice()
        }
    }
    bytes::Bytes::from_owner(Kept(buffer))
}

/// Task `run`'s inputs in argument order: literals as sent, stored partitions read and
/// checked against their dataset, other tasks' outputs from `kept`.
async fn task_inputs<T: Transport>(
    reader: &crate::reader::NodeReader<T>,
    run: &TaskRun,
    kept: &KeptInputs,
) -> Inputs {
    let failed = |kind, message: String| TaskRan::Failed(ErrorReply { kind, message });
    let mut inputs = Vec::with_capacity(run.task.args.len());
    for (arg, source) in run.task.args.iter().zip(&run.sources) {
        let input = match (arg, source) {
            (Arg::Value(value), ArgSource::Inline) => Datum::Value(value.clone()),
            (
                Arg::Partition { .. },
                ArgSource::Block {
                    block,
                    rows,
                    schema,
                    holders,
                    partition,
                },
            ) => {
                // A block read before is read from memory (Dask's workers keep data there
                // too): blocks never change, so a kept one cannot go stale.
                let bytes = match reader.cache.lookup_block(block) {
                    Some(bytes) => bytes,
                    None => {
                        let ids = holders.iter().map(|(id, _)| *id).collect();
                        let read = reader.read(*block, ids).await.map_err(|reason| {
                            failed(
                                ErrorKind::NotFound,
                                format!("{partition} is unavailable: {reason}"),
                            )
                        })?;
                        // A whole read is a vector already: no copy.
                        match read.bytes.into_vec::<u8>() {
                            Ok(vec) => bytes::Bytes::from(vec),
                            Err(buffer) => bytes::Bytes::copy_from_slice(&buffer),
                        }
                    }
                };
                let checked = tern_exec::schema_from_json(partition, schema)
                    .map_err(|e| e.to_string())
                    .and_then(|schema| {
                        tern_exec::check_block(&bytes, &schema, *rows).map_err(|e| e.to_string())
                    });
                if let Err(why) = checked {
                    warn!(%block, %why, "a stored partition is not its dataset's data");
                    return Err(failed(ErrorKind::BadData, format!("{partition}: {why}")));
                }
                reader.cache.insert_block(*block, bytes.clone());
                Datum::Table(bytes)
            }
            (
                Arg::Output(key) | Arg::Part { of: key, .. },
                ArgSource::Kept {
                    job,
                    task,
                    node,
                    bucket,
                    ..
                },
            ) => match kept.take((*job, *task, *bucket)) {
                Some(Ok(datum)) => datum,
                Some(Err((_, BucketFetchError::NoBucket(_)))) => {
                    // Kept, but never cut into that many parts: the graph is wrong.
                    let message = match arg {
                        Arg::Part { part, .. } => {
                            format!(
                                "upstream task {key} has no part {part}: it made fewer, or none"
                            )
                        }
                        _ => format!("{key} is kept without its value"),
                    };
                    return Err(TaskRan::Raised { message });
                }
                Some(Err((lost, reason))) => {
                    return Err(TaskRan::InputLost {
                        node: lost,
                        reason: format!("{key}: {reason}"),
                    });
                }
                None => {
                    return Err(TaskRan::InputLost {
                        node: *node,
                        reason: format!("{key}: not fetched"),
                    });
                }
            },
            (arg, source) => {
                return Err(failed(
                    ErrorKind::Invalid,
                    format!("argument {arg:?} cannot come from {source:?}"),
                ));
            }
        };
        inputs.push(input);
    }
    Ok(inputs)
}

/// About what a kernel's input takes in memory.
fn datum_bytes(datum: &Datum) -> usize {
    fn value(v: &tern_proto::Value) -> usize {
        use tern_proto::Value;
        match v {
            Value::Str(s) => s.len() + 24,
            Value::Bytes(b) => b.len() + 24,
            Value::List(items) => items.iter().map(value).sum::<usize>() + 24,
            _ => 16,
        }
    }
    match datum {
        Datum::Table(bytes) => bytes.len(),
        Datum::Value(v) => value(v),
        Datum::Parts(parts) => parts.iter().map(datum_bytes).sum(),
    }
}

/// Run one kernel and encode its output as it is kept: `Err` is the message it raised. A
/// kernel that panics would panic anywhere with these inputs, so it raises too.
fn run_kernel(kernel: &Kernel, inputs: Vec<Datum>) -> Result<Vec<Vec<u8>>, String> {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tern_graph::kernels::run(kernel, inputs)
    }));
    match ran {
        Ok(Ok(datum)) => kept_buckets(datum),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{kernel} stopped: it panicked")),
    }
}

/// A task's output as it is kept: one bucket, or for [`Datum::Parts`] how many parts there
/// are in bucket 0 and part `i` in bucket `i + 1`, so a task reading one part
/// (`Arg::Part`) fetches that part alone.
fn kept_buckets(datum: Datum) -> Result<Vec<Vec<u8>>, String> {
    match datum {
        Datum::Parts(parts) => {
            let count = Datum::Value(tern_proto::Value::Int(parts.len() as i64));
            std::iter::once(count)
                .chain(parts)
                .map(Datum::into_kept)
                .collect()
        }
        whole => Ok(vec![whole.into_kept()?]),
    }
}
