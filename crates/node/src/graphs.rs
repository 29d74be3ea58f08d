//! Task graphs on a node: coordinating a client's graph (`SubmitGraph`, with
//! `tern_sched::GraphCoordinator`) and running the graph tasks coordinators send
//! (`RunGraphTask`): inputs read (stored partitions checked against their dataset before a
//! kernel sees them, other tasks' outputs fetched from the nodes keeping them), the kernel
//! run in a task slot off the async threads, the output kept with the shuffle outputs under
//! `GRAPH_STAGE` until the job is released.

use tern_exec::{BlockReader, ShuffleFetcher, ShuffleKey};
use tern_proto::{
    Arg, ArgSource, Caller, Datum, ErrorKind, GRAPH_STAGE, GraphEvent, Response, Task, Transport,
};
use tern_sched::GraphCoordinator;
use tracing::warn;

use crate::compute::respond;
use crate::service::NodeService;

impl<T: Transport, C: tern_proto::Clock> NodeService<T, C> {
    /// Run one graph task and keep its output (see the module docs).
    pub(crate) async fn run_graph_task(
        &self,
        job: u64,
        index: u32,
        task: Task,
        sources: Vec<ArgSource>,
    ) -> Response {
        if sources.len() != task.args.len() {
            return Response::error(
                ErrorKind::Invalid,
                format!(
                    "task {} has {} arguments but {} sources",
                    task.key,
                    task.args.len(),
                    sources.len()
                ),
            );
        }
        let Some(_slot) = self.task_slots.acquire(job).await else {
            return Response::error(ErrorKind::Unavailable, "shutting down");
        };
        if self.compute.task_delay_ms > 0 {
            // A slow node (`tern up --slow-node`), for tests of placement and failures.
            tokio::time::sleep(std::time::Duration::from_millis(self.compute.task_delay_ms)).await;
        }
        let reader = self.reader(self.addresses(), false);
        let mut inputs = Vec::with_capacity(task.args.len());
        for (arg, source) in task.args.iter().zip(sources) {
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
                    let ids = holders.iter().map(|(id, _)| *id).collect();
                    let read = match reader.read(block, ids).await {
                        Ok(read) => read,
                        Err(reason) => {
                            return Response::error(
                                ErrorKind::NotFound,
                                format!("{partition} is unavailable: {reason}"),
                            );
                        }
                    };
                    let checked = tern_exec::schema_from_json(&partition, &schema)
                        .map_err(|e| e.to_string())
                        .and_then(|schema| {
                            tern_exec::check_block(&read.bytes, &schema, rows)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(why) = checked {
                        warn!(%block, %why, "a stored partition is not its dataset's data");
                        return Response::error(ErrorKind::BadData, format!("{partition}: {why}"));
                    }
                    Datum::Table(read.bytes)
                }
                (Arg::Output(key), ArgSource::Kept { task, node, addr }) => {
                    let kept = ShuffleKey {
                        job,
                        stage: GRAPH_STAGE,
                        task,
                        bucket: 0,
                    };
                    let fetched = reader.fetch(vec![kept], None, node, addr).await;
                    let datum = fetched.map_err(|e| e.to_string()).and_then(|parts| {
                        let part = parts.into_iter().next().ok_or("no output came")?;
                        postcard::from_bytes::<Datum>(part.as_slice())
                            .map_err(|e| format!("an unreadable output: {e}"))
                    });
                    match datum {
                        Ok(datum) => datum,
                        Err(reason) => {
                            return Response::ShuffleLost {
                                stage: GRAPH_STAGE,
                                node,
                                reason: format!("{key}: {reason}"),
                            };
                        }
                    }
                }
                (arg, source) => {
                    return Response::error(
                        ErrorKind::Invalid,
                        format!("argument {arg:?} cannot come from {source:?}"),
                    );
                }
            };
            inputs.push(input);
        }
        let kernel = task.kernel.clone();
        let ran = tokio::task::spawn_blocking(move || tern_graph::kernels::run(&kernel, inputs));
        let output = match ran.await {
            Ok(Ok(datum)) => datum,
            Ok(Err(e)) => {
                return Response::TaskRaised {
                    message: e.to_string(),
                };
            }
            Err(e) => {
                // A kernel that panics would panic anywhere with these inputs.
                return Response::TaskRaised {
                    message: format!("{} stopped: {e}", task.kernel),
                };
            }
        };
        let bytes = match postcard::to_allocvec(&output) {
            Ok(bytes) => bytes,
            Err(e) => return Response::error(ErrorKind::Invalid, e.to_string()),
        };
        // A task still running when its job was released (cancelled, its client gone, its
        // deadline passed) keeps nothing: nobody would release it again.
        if self.running_jobs.is_released(job) {
            return Response::error(ErrorKind::Cancelled, format!("job {job:x} was released"));
        }
        let shuffles = self.shuffles.clone();
        let inline = !self.blocks.blocks_thread();
        let kept = crate::blocks::off_runtime(inline, move || {
            shuffles.put(job, GRAPH_STAGE, index, vec![bytes])
        })
        .await;
        if self.running_jobs.is_released(job) {
            // Released while the output was being kept.
            let shuffles = self.shuffles.clone();
            let _ = crate::blocks::off_runtime(inline, move || shuffles.release(job)).await;
            return Response::error(ErrorKind::Cancelled, format!("job {job:x} was released"));
        }
        match kept {
            Ok(Ok(bytes)) => Response::GraphTaskRan { bytes },
            Ok(Err(e)) => Response::error(ErrorKind::Unavailable, e.to_string()),
            Err(e) => Response::error(ErrorKind::Unavailable, e.to_string()),
        }
    }

    /// Coordinate a client's graph: its events go back as they happen, and the outputs it
    /// kept on the nodes are released when it ends.
    pub(crate) async fn run_graph(
        &self,
        graph: tern_proto::Graph,
        caller: &Caller,
        reply: tern_net::BodyWriter,
    ) {
        let (_turn, datasets, nodes) = match self.start_job(caller).await {
            Ok(started) => started,
            Err(answer) => return respond(reply, &answer).await,
        };
        let tasks = match graph.validate(&Default::default()) {
            Ok(order) => order.len() as u64,
            Err(e) => {
                return respond(reply, &Response::error(ErrorKind::Invalid, e.to_string())).await;
            }
        };
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
            &format!("{tasks} tasks, {} wanted", graph.wanted.len()),
            caller,
            self.id(),
            started_ms,
        );
        entry.progress(0, tasks);
        let coordinator = GraphCoordinator::new(self.transport.as_ref(), &self.board, views, job);
        let (events, mut pending) = tokio::sync::mpsc::unbounded_channel();
        let running = coordinator.run(&graph, &datasets, &events);
        tokio::pin!(running);
        let deadline = tokio::time::sleep(self.compute.query_timeout);
        tokio::pin!(deadline);
        let mut newest_progress = None;
        let ended: Result<GraphEvent, ()> = loop {
            tokio::select! {
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
        let _ = reply.finish().await;
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
