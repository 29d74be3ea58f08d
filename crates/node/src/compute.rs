//! Queries on a node: running tasks other coordinators send (`RunTask`, at most `task_slots`
//! at once, in arrival order, each under the task memory limit), keeping and serving their
//! shuffle outputs (`FetchShuffle`), and coordinating a client's query (`Query`) with
//! `tern-sched`. Partitions are read from this node's store when it holds them, otherwise
//! from another holder, and the task reports how many it fetched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tern_exec::arrow::buffer::Buffer;
use tern_exec::{MemoryLimit, ShuffleKey, StoredTable};
use tern_proto::{
    Caller, Clock, ErrorKind, NodeId, NodeState, Response, TaskSpec, TaskStats, Transport,
};
use tern_sched::{Coordinator, NodeView, SchedError};
use tracing::warn;

use crate::NodeService;
use crate::reader::NodeReader;
use crate::shuffle::ShuffleStore;

/// Arrow IPC answers go out in chunks of this size.
const CHUNK_BYTES: usize = 4 << 20;

/// Counts a batch of tasks as running (one slot's worth) while it lives.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn batch(running: &'a AtomicU64, run: &AtomicU64, tasks: usize) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        run.fetch_add(tasks as u64, Ordering::Relaxed);
        Self(running)
    }
}

/// What one `RunTask` request runs, owned, so it can move to the query runtime.
struct BatchWork<T: Transport> {
    plan: Vec<u8>,
    tasks: Vec<TaskSpec>,
    task_ctx: Arc<tern_exec::datafusion::execution::TaskContext>,
    reader: Arc<NodeReader<T>>,
    shuffles: Arc<ShuffleStore>,
    /// Store calls may block this thread.
    in_place: bool,
    /// Every task first waits this long (a slow node, for tests).
    delay: Duration,
}

/// Run a request's tasks one after the other: rows of tasks without an output come back as
/// Arrow IPC streams (concatenated); the others' are kept here, split into buckets.
async fn run_batch<T: Transport>(
    work: BatchWork<T>,
) -> Result<(Vec<TaskStats>, Vec<u8>), tern_exec::ExecError> {
    let BatchWork {
        plan,
        tasks,
        task_ctx,
        reader,
        shuffles,
        in_place,
        delay,
    } = work;
    let plan = tern_exec::decode_plan(&plan, &task_ctx)?;
    let schema = plan.schema();
    let mut stats = Vec::with_capacity(tasks.len());
    let mut bytes = Vec::new();
    for task in tasks {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let remote_before = reader.remote.load(Ordering::Relaxed);
        let partition = task.partition as usize;
        let (rows, sent, kept_bytes) = match task.output {
            None => {
                let batches =
                    tern_exec::run_task(plan.clone(), partition, task_ctx.clone()).await?;
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                let ipc = tern_exec::batches_to_ipc(&schema, &batches)?;
                bytes.extend_from_slice(&ipc);
                (rows, ipc.len() as u64, 0)
            }
            Some(out) => {
                let buckets =
                    tern_exec::run_shuffle_task(plan.clone(), partition, task_ctx.clone()).await?;
                let rows = buckets.iter().map(|(_, rows)| rows).sum::<u64>();
                let kept: Vec<_> = buckets.into_iter().map(|(bytes, _)| bytes).collect();
                let kept_bytes = kept.iter().map(|b| b.len() as u64).sum();
                let shuffles = shuffles.clone();
                crate::blocks::off_runtime(in_place, move || {
                    shuffles.put(out.job, out.stage, out.task, kept)
                })
                .await
                .map_err(tern_exec::ExecError::Plan)?
                .map_err(|e| tern_exec::ExecError::Plan(e.to_string()))?;
                (rows, 0, kept_bytes)
            }
        };
        stats.push(TaskStats {
            rows,
            remote_reads: reader.remote.load(Ordering::Relaxed) - remote_before,
            spilled: 0,
            bytes: sent,
            kept_bytes,
        });
    }
    // Walking the plan's metrics costs more the more partitions it ran: once per batch, not
    // per task (the coordinator only adds them up).
    if let Some(first) = stats.first_mut() {
        first.spilled = tern_exec::spilled_bytes(&plan);
    }
    Ok((stats, bytes))
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Send `answer`, then `bytes` in chunks.
async fn respond_with_bytes(mut reply: tern_net::BodyWriter, answer: &Response, bytes: &[u8]) {
    if reply.respond(answer).await.is_err() {
        return;
    }
    for chunk in bytes.chunks(CHUNK_BYTES) {
        if reply.write_chunk(chunk).await.is_err() {
            return;
        }
    }
    let _ = reply.finish().await;
}

pub(crate) async fn respond(mut reply: tern_net::BodyWriter, answer: &Response) {
    if reply.respond(answer).await.is_ok() {
        let _ = reply.finish().await;
    }
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    pub(crate) fn reader(
        &self,
        addrs: BTreeMap<NodeId, String>,
        in_place: bool,
    ) -> Arc<NodeReader<T>> {
        Arc::new(NodeReader {
            me: self.id(),
            blocks: self.blocks.clone(),
            shuffles: self.shuffles.clone(),
            transport: self.transport.clone(),
            addrs,
            remote: Default::default(),
            unavailable: Default::default(),
            bad_data: Default::default(),
            lost: Default::default(),
            in_place,
            cache: self.column_cache.clone(),
        })
    }

    pub(crate) fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.meta
            .read_local(|s| s.nodes.values().map(|n| (n.id, n.addr.clone())).collect())
    }

    /// A session reading through `reader`, under the task memory limit.
    fn session(
        &self,
        target_partitions: usize,
        reader: &Arc<NodeReader<T>>,
    ) -> Result<tern_exec::datafusion::prelude::SessionContext, Response> {
        let memory = self.task_memory();
        tern_exec::session(target_partitions, reader.clone(), reader.clone(), &memory)
            .map_err(|e| Response::error(ErrorKind::Unavailable, e.to_string()))
    }

    fn task_memory(&self) -> MemoryLimit {
        MemoryLimit {
            node: Some(self.query_memory.clone()),
            bytes: self.compute.task_memory_bytes as usize,
            spill_dir: Some(self.compute.data_dir.join("spill")),
        }
    }

    /// Run the tasks a coordinator sent, one after the other in one slot: rows of tasks
    /// without an output go back with the answer; the others' stay here, split into buckets,
    /// under the job, stage and task their output names.
    pub(crate) async fn run_task(
        &self,
        job: u64,
        plan: Vec<u8>,
        tasks: Vec<TaskSpec>,
        reply: tern_net::BodyWriter,
    ) {
        let Some(_slot) = self.task_slots.acquire(job).await else {
            return respond(
                reply,
                &Response::error(ErrorKind::Unavailable, "shutting down"),
            )
            .await;
        };
        // On the query runtime's threads (one per slot) a task may block on the store: its
        // block read and its shuffle output are done in place, and the whole batch runs there
        // in one go instead of hopping between runtimes and blocking threads per task.
        let in_place = self.compute_runtime.is_some() || !self.blocks.blocks_thread();
        let reader = self.reader(self.addresses(), in_place);
        let memory = self.task_memory();
        let task_ctx = match tern_exec::task_context(
            &self.functions,
            self.slot_count,
            reader.clone(),
            reader.clone(),
            &memory,
        ) {
            Ok(task_ctx) => task_ctx,
            Err(e) => {
                let answer = Response::error(ErrorKind::Unavailable, e.to_string());
                return respond(reply, &answer).await;
            }
        };
        let _running = Running::batch(&self.tasks_running, &self.tasks_run, tasks.len());
        let batch = run_batch(BatchWork {
            plan,
            tasks,
            task_ctx,
            reader: reader.clone(),
            shuffles: self.shuffles.clone(),
            in_place,
            delay: Duration::from_millis(self.compute.task_delay_ms),
        });
        let result = self.run_for_job(job, batch).await;
        match result {
            Ok((tasks, bytes)) => {
                respond_with_bytes(reply, &Response::TaskOutput { tasks }, &bytes).await;
            }
            Err(e) => {
                let lost = reader.lost.lock().unwrap_or_else(|p| p.into_inner()).take();
                // A lost shuffle input is recomputed; a partition no holder could serve is
                // worth another node; anything else is the query's own error and would fail
                // anywhere.
                let answer = if let Some((stage, node, reason)) = lost {
                    Response::ShuffleLost {
                        stage,
                        node,
                        reason,
                    }
                } else if reader.bad_data.load(Ordering::Relaxed) {
                    Response::error(ErrorKind::BadData, e.to_string())
                } else if reader.unavailable.load(Ordering::Relaxed) {
                    Response::error(ErrorKind::Unavailable, e.to_string())
                } else {
                    Response::error(ErrorKind::Invalid, e.to_string())
                };
                respond(reply, &answer).await;
            }
        }
    }

    /// Run a batch of `job`'s tasks on the query runtime, until it ends, its job is released
    /// ([`RunningJobs::abort`]), or the query deadline passes. (Without a query runtime, the
    /// simulator's, it runs in place: a spawned task's timing would depend on more than the
    /// seed.)
    async fn run_for_job<R: Send + 'static>(
        &self,
        job: u64,
        work: impl std::future::Future<Output = Result<R, tern_exec::ExecError>> + Send + 'static,
    ) -> Result<R, tern_exec::ExecError> {
        let Some(runtime) = &self.compute_runtime else {
            return work.await;
        };
        let deadline = self.compute.query_timeout;
        let bounded = async move {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or_else(|_| {
                    Err(tern_exec::ExecError::Plan(format!(
                        "the task ran past its query's deadline of {} s and was stopped",
                        deadline.as_secs()
                    )))
                })
        };
        let handle = runtime.spawn(bounded);
        let Some(id) = self.running_jobs.add(job, handle.abort_handle()) else {
            return Err(tern_exec::ExecError::Plan(
                "not started: its query had ended".into(),
            ));
        };
        let ended = handle.await;
        self.running_jobs.remove(job, id);
        match ended {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Err(tern_exec::ExecError::Plan(
                "stopped: its query ended".into(),
            )),
            Err(e) => Err(tern_exec::ExecError::Plan(format!(
                "query work stopped: {e}"
            ))),
        }
    }

    /// Send the kept buckets `keys` (only `columns` of them when given), joined.
    pub(crate) async fn serve_shuffle(
        &self,
        keys: Vec<ShuffleKey>,
        columns: Option<Vec<usize>>,
        reply: tern_net::BodyWriter,
    ) {
        let shuffles = self.shuffles.clone();
        let got = crate::blocks::off_runtime(!self.blocks.blocks_thread(), move || {
            keys.into_iter()
                .map(|key| {
                    let bucket = shuffles.get(key).map_err(|e| {
                        // A bucket past the output's last is the asker's mistake, not a loss.
                        let kind = match e {
                            crate::shuffle::ShuffleError::NoBucket { .. } => ErrorKind::Invalid,
                            _ => ErrorKind::Unavailable,
                        };
                        (kind, e.to_string())
                    })?;
                    match &columns {
                        Some(columns) => tern_exec::project_ipc(bucket, columns)
                            .map(Buffer::from_vec)
                            .map_err(|e| (ErrorKind::Unavailable, format!("bucket {key:?}: {e}"))),
                        None => Ok(bucket),
                    }
                })
                .collect::<Result<Vec<_>, (ErrorKind, String)>>()
        })
        .await;
        match got {
            Ok(Ok(buckets)) => {
                let parts: Vec<&[u8]> = buckets.iter().map(|b| b.as_slice()).collect();
                let body = tern_proto::join_parts(&parts);
                let answer = Response::Block {
                    size: body.len() as u64,
                };
                respond_with_bytes(reply, &answer, &body).await
            }
            Ok(Err((kind, message))) => respond(reply, &Response::error(kind, message)).await,
            Err(e) => {
                respond(
                    reply,
                    &Response::error(ErrorKind::Unavailable, e.to_string()),
                )
                .await
            }
        }
    }

    /// Coordinate a client's query.
    pub(crate) async fn run_query(
        &self,
        sql: String,
        explain: bool,
        caller: &Caller,
        reply: tern_net::BodyWriter,
    ) {
        let named = crate::tables::tables_named(&sql);
        let (_turn, datasets, nodes) = match self.start_job(caller, Some(&named)).await {
            Ok(started) => started,
            Err(answer) => return respond(reply, &answer).await,
        };
        let addrs = nodes.values().map(|n| (n.id, n.addr.clone())).collect();
        let reader = self.reader(addrs, false);
        let live = nodes
            .values()
            .filter(|n| n.state == NodeState::Up)
            .count()
            .max(1);
        // As many partitions after an exchange as the cluster has slots (counting every node
        // as this one), so every slot has a task.
        let ctx = match self.session(live * self.slot_count, &reader) {
            Ok(ctx) => ctx,
            Err(answer) => return respond(reply, &answer).await,
        };
        for dataset in &datasets {
            // SQL sees an array as the table of its elements in C order, one column `values`
            // (its chunks are such tables already).
            let as_table;
            let dataset = match dataset.format.as_str() {
                "arrow-ipc" => dataset,
                tern_array::FORMAT => match tern_array::ArrayMeta::from_json(&dataset.schema) {
                    Ok(meta) => {
                        as_table = tern_proto::DatasetRecord {
                            format: "arrow-ipc".into(),
                            schema: tern_array::chunk::schema_json(&meta.dtype),
                            ..dataset.clone()
                        };
                        &as_table
                    }
                    Err(_) => continue,
                },
                _ => continue,
            };
            let table =
                StoredTable::new(dataset).map(|table| match self.compute.sized_table_rows {
                    Some(rows) => table.sized_up_to(rows),
                    None => table,
                });
            match table {
                Ok(table) => {
                    let name =
                        tern_exec::datafusion::common::TableReference::bare(dataset.name.as_str());
                    if let Err(e) = ctx.register_table(name, Arc::new(table)) {
                        warn!(dataset = %dataset.name, error = %e, "dataset not queryable");
                    }
                }
                Err(e) => warn!(dataset = %dataset.name, error = %e, "dataset not queryable"),
            }
        }
        if explain {
            let answer = match Coordinator::<T>::explain(&ctx, &sql).await {
                Ok(text) => Response::Explained(text),
                Err(e) => sched_error(e),
            };
            return respond(reply, &answer).await;
        }
        let views = node_views(&nodes);
        let job = self.new_job_id();
        let plan = match Coordinator::<T>::plan(&ctx, &sql, job).await {
            Ok(plan) => plan,
            Err(e) => return respond(reply, &sched_error(e)).await,
        };
        let mut reply = reply;
        if reply
            .respond(&Response::QueryRunning { job })
            .await
            .is_err()
        {
            return;
        }
        let (events, mut progress) = tokio::sync::mpsc::unbounded_channel();
        let mut coordinator = Coordinator::new(self.transport.as_ref(), &self.board, views, job)
            .with_progress(events)
            .with_answer_limit(self.compute.answer_memory_bytes);
        if let Some(runtime) = &self.compute_runtime {
            coordinator = coordinator.with_runtime(runtime.clone());
        }
        // Nothing runs without a deadline: a query past its time fails, saying so, and its
        // tasks and kept outputs are released as for any other end.
        let deadline = self.compute.query_timeout;
        let entry = self.coordinated.start(
            job,
            "sql",
            &sql,
            caller,
            self.id(),
            self.clock.wall().as_millis() as u64,
        );
        let streamed = stream_query(&coordinator, &ctx, plan, &mut progress, &mut reply, &entry);
        let bounded = async {
            tokio::select! {
                // Biased: polled in order, so a seed replays exactly under the simulator.
                biased;
                ended = tokio::time::timeout(deadline, streamed) => Some(ended),
                _ = entry.cancelled() => None,
            }
        };
        let mut how = tern_proto::JobState::Finished;
        let ended = match bounded.await {
            None => {
                how = tern_proto::JobState::Cancelled;
                let cancelled = tern_proto::ErrorReply {
                    kind: ErrorKind::Cancelled,
                    message: format!("query {job:x} was cancelled"),
                };
                let event = tern_proto::QueryEvent::Failed(cancelled);
                reply.write_chunk(&tern_proto::encode_event(&event)).await
            }
            Some(Ok(ended)) => ended,
            Some(Err(_)) => {
                how = tern_proto::JobState::Failed("past its deadline".into());
                warn!(
                    job,
                    secs = deadline.as_secs(),
                    "query stopped at its deadline"
                );
                let late = tern_proto::ErrorReply {
                    kind: ErrorKind::Unavailable,
                    message: format!(
                        "the query ran past its deadline of {} s (query_timeout_ms; `tern up --query-timeout-secs`) and was stopped",
                        deadline.as_secs()
                    ),
                };
                let event = tern_proto::QueryEvent::Failed(late);
                reply.write_chunk(&tern_proto::encode_event(&event)).await
            }
        };
        if let Err(e) = ended {
            // The client went away (Ctrl-C, a lost connection): the query stops with it.
            warn!(job, error = %e, "query abandoned: its client stopped reading");
            how = tern_proto::JobState::Failed("its client went away".into());
        }
        let _ = reply.finish().await;
        coordinator.release().await;
        self.coordinated.end(job, how);
    }
}

/// How often a running query's progress is sent again while it does not change.
const PROGRESS_RESEND: Duration = Duration::from_secs(1);

/// Rows of an answer go out in IPC streams of about this many bytes (a row-count slice of a
/// larger batch, or small batches gathered until they reach it).
const ROWS_EVENT_BYTES: usize = 1 << 20;

/// Run a planned query and send its events to the client: progress while its task stages run
/// (several updates that queue up while the client reads are merged into the newest), then
/// its rows as the final stage makes them, then how it ended.
async fn stream_query<T: Transport>(
    coordinator: &Coordinator<'_, T>,
    ctx: &tern_exec::datafusion::prelude::SessionContext,
    plan: tern_sched::StagePlan,
    progress: &mut tokio::sync::mpsc::UnboundedReceiver<tern_proto::QueryEvent>,
    reply: &mut tern_net::BodyWriter,
    job: &crate::jobs::JobEntry,
) -> Result<(), tern_proto::TransportError> {
    use tern_proto::{QueryEvent, encode_event};
    let running = coordinator.run_planned(ctx, plan);
    tokio::pin!(running);
    // The newest progress goes out again every second while nothing changes: a client that
    // went away (Ctrl-C) is noticed by the failed write within that, not when the stage ends.
    let mut resend = tokio::time::interval(PROGRESS_RESEND);
    let mut newest: Option<QueryEvent> = None;
    let (mut planned, mut stage_done): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let answer = loop {
        tokio::select! {
            // Biased: polled in order, so a seed replays exactly under the simulator.
            biased;
            answer = &mut running => break answer,
            Some(event) = progress.recv() => {
                let mut pending = vec![event];
                while let Ok(event) = progress.try_recv() {
                    pending.push(event);
                }
                for event in newest_progress(pending) {
                    match &event {
                        QueryEvent::Planned { stages } => {
                            planned = stages.iter().map(|s| s.tasks).collect();
                            job.progress(0, planned.iter().sum());
                        }
                        QueryEvent::Progress { stage, done, .. } => {
                            if let Some(d) = stage_done.get_mut(*stage as usize - 1) {
                                *d = *done;
                            } else if *stage >= 1 {
                                stage_done.resize(*stage as usize, 0);
                                stage_done[*stage as usize - 1] = *done;
                            }
                            job.progress(stage_done.iter().sum(), planned.iter().sum());
                        }
                        _ => {}
                    }
                    reply.write_chunk(&encode_event(&event)).await?;
                    if matches!(event, QueryEvent::Progress { .. }) {
                        newest = Some(event);
                    }
                }
                resend.reset();
            }
            _ = resend.tick() => {
                if let Some(event) = &newest {
                    reply.write_chunk(&encode_event(event)).await?;
                }
            }
        }
    };
    while let Ok(event) = progress.try_recv() {
        reply.write_chunk(&encode_event(&event)).await?;
    }
    let mut answer = match answer {
        Ok(answer) => answer,
        Err(e) => return failed(reply, e).await,
    };
    let mut pending: Vec<tern_exec::arrow::record_batch::RecordBatch> = Vec::new();
    let mut pending_bytes = 0;
    let mut sent_rows = false;
    loop {
        let next = answer.next_batch().await;
        // Sized by the bytes its rows use, not the buffers they share with other batches.
        let next = match next {
            Some(Ok(batch)) => {
                Some(tern_exec::compact_views(&batch).map_err(|e| SchedError::Query(e.to_string())))
            }
            other => other,
        };
        let flush = match &next {
            Some(Ok(batch)) => {
                pending_bytes += batch.get_array_memory_size();
                pending.push(batch.clone());
                pending_bytes >= ROWS_EVENT_BYTES
            }
            // The client learns the schema from rows: an empty answer sends it alone.
            None => !pending.is_empty() || !sent_rows,
            Some(Err(_)) => !pending.is_empty(),
        };
        if flush {
            for piece in rows_events(&answer.schema, std::mem::take(&mut pending)) {
                match piece {
                    Ok(event) => reply.write_chunk(&encode_event(&event)).await?,
                    Err(e) => return failed(reply, SchedError::Query(e.to_string())).await,
                }
            }
            pending_bytes = 0;
            sent_rows = true;
        }
        match next {
            Some(Ok(_)) => {}
            Some(Err(e)) => return failed(reply, e).await,
            None => break,
        }
    }
    let stages = answer.reports();
    let rows = stages.last().map_or(0, |s| s.rows);
    reply
        .write_chunk(&encode_event(&QueryEvent::Finished { rows, stages }))
        .await
}

async fn failed(
    reply: &mut tern_net::BodyWriter,
    e: SchedError,
) -> Result<(), tern_proto::TransportError> {
    let event = tern_proto::QueryEvent::Failed(sched_reply(e));
    reply.write_chunk(&tern_proto::encode_event(&event)).await
}

/// Of a run of events, each stage's newest progress (in stage order) and everything else.
fn newest_progress(events: Vec<tern_proto::QueryEvent>) -> Vec<tern_proto::QueryEvent> {
    use tern_proto::QueryEvent;
    let mut newest: BTreeMap<u32, QueryEvent> = BTreeMap::new();
    let mut others = Vec::new();
    for event in events {
        match event {
            QueryEvent::Progress { stage, .. } => {
                newest.insert(stage, event);
            }
            other => others.push(other),
        }
    }
    others.extend(newest.into_values());
    others
}

/// `batches` as `Rows` events of about [`ROWS_EVENT_BYTES`] each: a large batch is sliced.
fn rows_events(
    schema: &tern_exec::arrow::datatypes::SchemaRef,
    batches: Vec<tern_exec::arrow::record_batch::RecordBatch>,
) -> Vec<Result<tern_proto::QueryEvent, tern_exec::ExecError>> {
    let mut out = Vec::new();
    let mut group = Vec::new();
    let mut group_bytes = 0;
    for batch in batches {
        let bytes = batch.get_array_memory_size().max(1);
        let rows = batch.num_rows();
        let per_piece = (rows * ROWS_EVENT_BYTES / bytes).clamp(1, rows.max(1));
        for at in (0..rows).step_by(per_piece) {
            group.push(batch.slice(at, per_piece.min(rows - at)));
            group_bytes += bytes * per_piece.min(rows - at) / rows.max(1);
            if group_bytes >= ROWS_EVENT_BYTES {
                out.push(tern_exec::batches_to_ipc(
                    schema,
                    &std::mem::take(&mut group),
                ));
                group_bytes = 0;
            }
        }
    }
    if !group.is_empty() || out.is_empty() {
        out.push(tern_exec::batches_to_ipc(schema, &group));
    }
    out.into_iter()
        .map(|r| r.map(tern_proto::QueryEvent::Rows))
        .collect()
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// What a job this node coordinates starts with: a turn of its client's (one client
    /// cannot fill a coordinator with jobs; others' go on meanwhile), then the datasets
    /// (those `named`, or all) and nodes from the catalog.
    pub(crate) async fn start_job(
        &self,
        caller: &Caller,
        named: Option<&[String]>,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            Vec<tern_proto::DatasetRecord>,
            std::collections::BTreeMap<NodeId, tern_proto::NodeRecord>,
        ),
        Response,
    > {
        let turn = self
            .client_jobs
            .enter(caller)
            .await
            .map_err(|reason| Response::error(ErrorKind::Unavailable, reason))?;
        let (datasets, nodes) = self.query_catalog(named).await?;
        Ok((turn, datasets, nodes))
    }

    /// An id for a job this node coordinates, unique across the cluster and across restarts
    /// of this node (it mixes in the node id and the time it started the job).
    pub(crate) fn new_job_id(&self) -> u64 {
        let n = self.jobs_started.fetch_add(1, Ordering::Relaxed);
        (self.id() << 48) ^ ((self.clock.wall().as_millis() as u64) << 16) ^ n
    }
}

fn sched_error(e: SchedError) -> Response {
    Response::Error(sched_reply(e))
}

fn sched_reply(e: SchedError) -> tern_proto::ErrorReply {
    let kind = match e {
        SchedError::Query(_) => ErrorKind::Invalid,
        SchedError::PartitionUnavailable { .. } | SchedError::TaskFailed { .. } => {
            ErrorKind::Unavailable
        }
        SchedError::AnswerTooLarge { .. } => ErrorKind::TooLarge,
    };
    tern_proto::ErrorReply {
        kind,
        message: e.to_string(),
    }
}

/// The nodes as a coordinator sees them. A drained node is retired (and may be gone without
/// being marked down): it gets no tasks, like a down one. The simulator found queries waiting
/// on a drained node that had died.
pub(crate) fn node_views(
    nodes: &std::collections::BTreeMap<NodeId, tern_proto::NodeRecord>,
) -> Vec<NodeView> {
    nodes
        .values()
        .map(|n| NodeView {
            id: n.id,
            addr: n.addr.clone(),
            live: !n.state.is_gone() && n.state != NodeState::Drained,
        })
        .collect()
}
