//! The task stages of a query as the coordinator runs them: a stage's tasks cut into batches
//! per node, each batch sent to the least busy holder of its blocks with a free slot (the
//! shared [`LoadBoard`]), answers and kept outputs recorded, a failed attempt tried on another
//! node, and the outputs of a lost node made again before the stages that read them.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tern_exec::{TaskLocation, encode_plan, ipc_to_batches};
use tern_proto::{
    BlockHash, BulkRead, BulkWrite, ErrorKind, NodeId, QueryEvent, Request, Response,
    ShuffleOutput, StageReport, TaskSpec, Transport,
};
use tracing::{debug, info, warn};

use crate::*;

impl<'a, T: Transport> Coordinator<'a, T> {
    pub(crate) async fn run_stage(&self, job: &Job, s: usize) -> Result<StageReport, SchedError> {
        let started = Instant::now();
        let stage = &job.stage(s);
        // Outputs this stage reads that sit on a node already known lost are made again
        // first, instead of every task finding out on its own, each after a wait.
        self.recover_inputs(job, s).await?;
        // Enough in flight to fill every slot; the board decides where each one runs.
        let in_flight = (self.nodes.len() * self.board.slots() * 2).max(1);
        let mut done = futures::stream::iter(self.batches(job, s))
            .map(|batch| self.run_batch(job, s, batch))
            .buffer_unordered(in_flight);
        let mut report = StageReport {
            stage: s as u32 + 1,
            what: stage.what(),
            tasks: stage.tasks as u64,
            ..Default::default()
        };
        let mut finished = 0u64;
        while let Some(tasks) = done.next().await {
            let tasks = tasks?;
            finished += tasks.len() as u64;
            for task in tasks {
                report.rows += task.rows;
                report.retries += task.retries;
                report.spilled += task.spilled;
                let counts = if task.local {
                    &mut report.local
                } else {
                    &mut report.remote
                };
                *counts.entry(task.node).or_default() += 1;
                if let StageOutput::Coordinator(input) = &stage.output {
                    let bytes: usize = task.batches.iter().map(|b| b.get_array_memory_size()).sum();
                    let held = job.held.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
                    if held > self.answer_limit {
                        return Err(SchedError::AnswerTooLarge {
                            stage: s + 1,
                            limit: self.answer_limit,
                        });
                    }
                    input.set_output(task.index, task.batches);
                }
            }
            self.report_progress(QueryEvent::Progress {
                stage: report.stage,
                done: finished,
                retries: report.retries,
            });
        }
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    pub(crate) fn is_live(&self, job: &Job, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.live) && !job.is_lost(*id)
    }

    /// Stage `s`'s tasks in the batches they are sent in: one task each unless the stage has
    /// many more tasks than the cluster has slots. Then each scan task is given to the least
    /// loaded of its live holders and each holder's tasks are cut into batches (so a batch
    /// reads locally), interleaved between holders so every node starts at once.
    pub(crate) fn batches(&self, job: &Job, s: usize) -> Vec<Vec<usize>> {
        let stage = &job.stage(s);
        let live = self.nodes.keys().filter(|id| self.is_live(job, id)).count();
        let slots = (live * self.board.slots()).max(1);
        // A batch builds a broadcast join's hash table once for all its tasks: one per slot.
        let per_slot = match stage.broadcast.or(stage.filtered_by) {
            Some(_) => 1,
            None => TASKS_PER_SLOT_UNBATCHED,
        };
        if stage.tasks <= slots * per_slot {
            return (0..stage.tasks).map(|i| vec![i]).collect();
        }
        let size = stage.tasks.div_ceil(slots * per_slot).min(MAX_BATCH_TASKS);
        let Some(scan) = stage.scan() else {
            return (0..stage.tasks)
                .collect::<Vec<_>>()
                .chunks(size)
                .map(<[usize]>::to_vec)
                .collect();
        };
        let mut per_holder: std::collections::BTreeMap<NodeId, Vec<usize>> = Default::default();
        let mut alone = Vec::new();
        for (i, part) in scan.partitions().iter().enumerate() {
            let holder = part
                .holders
                .iter()
                .filter(|h| self.is_live(job, h))
                .min_by_key(|h| (per_holder.get(h).map_or(0, Vec::len), **h));
            match holder {
                Some(h) => per_holder.entry(*h).or_default().push(i),
                // No live holder: alone, so it fails naming its partition.
                None => alone.push(vec![i]),
            }
        }
        let mut runs: Vec<std::collections::VecDeque<Vec<usize>>> = per_holder
            .into_values()
            .map(|tasks| {
                let mut batches = std::collections::VecDeque::new();
                let (mut batch, mut bytes) = (Vec::new(), 0u64);
                for i in tasks {
                    let size_of = scan.partitions()[i].bytes;
                    if !batch.is_empty()
                        && (batch.len() >= size || bytes + size_of > MAX_BATCH_BYTES)
                    {
                        batches.push_back(std::mem::take(&mut batch));
                        bytes = 0;
                    }
                    batch.push(i);
                    bytes += size_of;
                }
                if !batch.is_empty() {
                    batches.push_back(batch);
                }
                batches
            })
            .collect();
        let mut out = alone;
        while runs.iter().any(|r| !r.is_empty()) {
            for run in &mut runs {
                if let Some(batch) = run.pop_front() {
                    out.push(batch);
                }
            }
        }
        out
    }

    /// Run a batch of tasks of stage `s` as one request to one node; if that fails, each
    /// task on its own (with its retries and recomputation).
    pub(crate) async fn run_batch(
        &self,
        job: &Job,
        s: usize,
        batch: Vec<usize>,
    ) -> Result<Vec<TaskDone>, SchedError> {
        if batch.len() == 1 {
            return Ok(vec![self.run_task(job, s, batch[0]).await?]);
        }
        let stage = &job.stage(s);
        let anywhere: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|id| self.is_live(job, id))
            .copied()
            .collect();
        let preferred: Vec<NodeId> = match stage.scan() {
            Some(scan) => anywhere
                .iter()
                .filter(|n| {
                    batch
                        .iter()
                        .all(|&i| scan.partitions()[i].holders.contains(n))
                })
                .copied()
                .collect(),
            None => anywhere.clone(),
        };
        if !anywhere.is_empty() {
            let (plan, partitions) = stage
                .task_plan(&batch, &job.located(s))
                .map_err(query_error)?;
            let plan = encode_plan(plan).map_err(query_error)?;
            let specs: Vec<TaskSpec> = batch
                .iter()
                .zip(partitions)
                .map(|(&index, partition)| TaskSpec {
                    partition: partition as u32,
                    output: self.output_of(stage, s, index),
                })
                .collect();
            let blocks: Vec<BlockHash> = match stage.scan() {
                Some(scan) => batch.iter().map(|&i| scan.partitions()[i].block).collect(),
                None => Vec::new(),
            };
            let warm = self.board.warm_holder(&blocks, &preferred);
            let slot = self
                .board
                .take(
                    self.job,
                    &preferred,
                    &anywhere,
                    warm,
                    self.patience.locality_wait,
                )
                .await;
            let (node, local) = (slot.node, slot.local);
            let addr = self.nodes[&node].addr.clone();
            debug!(
                job = self.job,
                stage = s + 1,
                tasks = batch.len(),
                node,
                "batch sent"
            );
            let attempt = tokio::time::timeout(
                self.patience.task_deadline,
                self.send_tasks(&addr, plan, &specs),
            )
            .await
            .unwrap_or_else(|_| Err(Attempt::Retry("no answer in time".into())));
            drop(slot);
            match attempt {
                Ok(sent) => {
                    let mut done = Vec::with_capacity(batch.len());
                    if local {
                        self.board.scanned(
                            blocks
                                .iter()
                                .zip(&sent)
                                .filter(|(_, t)| t.remote_reads == 0)
                                .map(|(b, _)| *b),
                            node,
                        );
                    }
                    for (index, sent) in batch.iter().zip(sent) {
                        if stage_keeps(stage) {
                            lock(&job.locations[s])[*index] = Some(TaskLocation {
                                node,
                                addr: addr.clone(),
                                rows: sent.rows,
                                bytes: sent.kept_bytes,
                            });
                        }
                        done.push(TaskDone {
                            index: *index,
                            batches: sent.batches,
                            rows: sent.rows,
                            node,
                            local: local && sent.remote_reads == 0,
                            retries: 0,
                            spilled: sent.spilled,
                        });
                    }
                    return Ok(done);
                }
                Err(Attempt::Fatal(reason)) => return Err(SchedError::Query(reason)),
                Err(Attempt::Unreachable(reason)) => {
                    warn!(job = self.job, stage = s + 1, node, %reason, "node unreachable; no more tasks of this job go there");
                    lock(&job.lost).insert(node);
                }
                Err(_) => {}
            }
        }
        let runs = futures::future::join_all(batch.iter().map(|&i| self.run_task(job, s, i))).await;
        runs.into_iter().collect()
    }

    pub(crate) fn output_of(&self, stage: &Stage, s: usize, index: usize) -> Option<ShuffleOutput> {
        stage_keeps(stage).then_some(ShuffleOutput {
            job: self.job,
            stage: s as u32,
            task: index as u32,
        })
    }

    /// Run task `index` of stage `s` until one node does it: a scan's task on a live holder
    /// of its block first, then on other nodes; a lost input is recomputed first.
    pub(crate) fn run_task<'s>(
        &'s self,
        job: &'s Job,
        s: usize,
        index: usize,
    ) -> BoxFuture<'s, Result<TaskDone, SchedError>> {
        async move {
            let stage = &job.stage(s);
            let live = |id: &NodeId| self.is_live(job, id);
            let holders: Option<Vec<NodeId>> = match stage.scan() {
                Some(scan) => {
                    let part = &scan.partitions()[index];
                    let holders: Vec<NodeId> = part.holders.iter().copied().filter(live).collect();
                    if holders.is_empty() {
                        return Err(self.unavailable(stage, index, format!(
                            "all of its holders ({}) are down",
                            join(&part.holders)
                        )));
                    }
                    Some(holders)
                }
                None => None,
            };
            let output = self.output_of(stage, s, index);
            let mut tried: Vec<NodeId> = Vec::new();
            let mut reasons = Vec::new();
            let mut recoveries = 0;
            // Every live holder once, then two other nodes (which fetch the block remotely);
            // a task without a block: three nodes.
            let budget = holders.as_ref().map_or(3, |h| h.len() + 2);
            while tried.len() < budget {
                let anywhere: Vec<NodeId> = self
                    .nodes
                    .values()
                    .filter(|n| live(&n.id) && !tried.contains(&n.id))
                    .map(|n| n.id)
                    .collect();
                if anywhere.is_empty() {
                    break;
                }
                let preferred: Vec<NodeId> = match &holders {
                    Some(h) => h.iter().filter(|n| anywhere.contains(n)).copied().collect(),
                    None => anywhere.clone(),
                };
                let (plan, partitions) = stage
                    .task_plan(&[index], &job.located(s))
                    .map_err(query_error)?;
                let spec = TaskSpec {
                    partition: partitions[0] as u32,
                    output,
                };
                let plan = encode_plan(plan).map_err(query_error)?;
                let block = stage.scan().map(|scan| scan.partitions()[index].block);
                let warm = block.and_then(|b| self.board.warm_holder(&[b], &preferred));
                let slot = self
                    .board
                    .take(self.job, &preferred, &anywhere, warm, self.patience.locality_wait)
                    .await;
                let node = slot.node;
                let addr = self.nodes[&node].addr.clone();
                debug!(job = self.job, stage = s + 1, task = index, node, "task sent");
                let attempt = tokio::time::timeout(
                    self.patience.task_deadline,
                    self.send_tasks(&addr, plan, std::slice::from_ref(&spec)),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Attempt::Retry(format!(
                        "no answer within {} s",
                        self.patience.task_deadline.as_secs()
                    )))
                });
                let local = slot.local;
                drop(slot);
                debug!(job = self.job, stage = s + 1, task = index, node, ok = attempt.is_ok(), "task answered");
                match attempt.map(|mut sent| sent.remove(0)) {
                    Ok(sent) => {
                        if let Some(block) = block.filter(|_| local && sent.remote_reads == 0) {
                            self.board.scanned([block], node);
                        }
                        if output.is_some() {
                            lock(&job.locations[s])[index] = Some(TaskLocation {
                                node,
                                addr,
                                rows: sent.rows,
                                bytes: sent.kept_bytes,
                            });
                        }
                        return Ok(TaskDone {
                            index,
                            batches: sent.batches,
                            rows: sent.rows,
                            node,
                            local: local && sent.remote_reads == 0,
                            retries: tried.len() as u64,
                            spilled: sent.spilled,
                        });
                    }
                    Err(Attempt::Fatal(reason)) => return Err(SchedError::Query(reason)),
                    Err(Attempt::Lost { stage: from, node: gone }) if recoveries < MAX_RECOVERIES && from < s => {
                        recoveries += 1;
                        warn!(job = self.job, stage = s + 1, task = index, from = from + 1, node = gone, "an input was lost; recomputing it");
                        lock(&job.lost).insert(gone);
                        self.recover_inputs(job, s).await?;
                    }
                    Err(Attempt::Lost { stage: from, node: gone }) => {
                        reasons.push(format!("node {node}: the output of stage {} on node {gone} was lost again", from + 1));
                        tried.push(node);
                    }
                    Err(Attempt::Unreachable(reason)) => {
                        warn!(job = self.job, stage = s + 1, task = index, node, %reason, "node unreachable; no more tasks of this job go there");
                        lock(&job.lost).insert(node);
                        reasons.push(format!("node {node}: {reason}"));
                        tried.push(node);
                    }
                    Err(Attempt::Retry(reason)) => {
                        warn!(job = self.job, stage = s + 1, task = index, node, %reason, "task failed; trying another node");
                        reasons.push(format!("node {node}: {reason}"));
                        tried.push(node);
                    }
                }
            }
            info!(job = self.job, stage = s + 1, task = index, "task failed everywhere");
            let reason = if reasons.is_empty() {
                "no live node to run it".to_string()
            } else {
                reasons.join("; ")
            };
            Err(match stage.scan() {
                Some(_) => self.unavailable(stage, index, reason),
                None => SchedError::TaskFailed {
                    stage: s + 1,
                    task: index,
                    reason,
                },
            })
        }
        .boxed()
    }

    /// Recompute every output stage `s` reads that is kept on a node known lost (the inputs
    /// at once): one node's death costs one round of recomputation, not one per input.
    pub(crate) async fn recover_inputs(&self, job: &Job, s: usize) -> Result<(), SchedError> {
        let mut redo = Vec::new();
        for &input in &job.stage(s).inputs {
            let gone: BTreeSet<NodeId> = lock(&job.locations[input])
                .iter()
                .flatten()
                .map(|at| at.node)
                .filter(|node| job.is_lost(*node))
                .collect();
            redo.extend(gone.into_iter().map(|node| (input, node)));
        }
        if !redo.is_empty() {
            info!(job = self.job, stage = s + 1, lost = ?redo, "recomputing inputs kept on lost nodes");
        }
        let runs = redo
            .iter()
            .map(|&(input, node)| self.recover(job, input, node));
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// The outputs stage `from` kept on `gone` cannot be read: run those tasks again
    /// elsewhere (once, however many readers found out).
    pub(crate) async fn recover(
        &self,
        job: &Job,
        from: usize,
        gone: NodeId,
    ) -> Result<(), SchedError> {
        let _one_at_a_time = job.recovering[from].lock().await;
        lock(&job.lost).insert(gone);
        let redo: Vec<usize> = lock(&job.locations[from])
            .iter()
            .enumerate()
            .filter(|(_, at)| at.as_ref().is_some_and(|at| at.node == gone))
            .map(|(i, _)| i)
            .collect();
        let runs =
            futures::future::join_all(redo.iter().map(|&t| self.run_task(job, from, t))).await;
        for run in runs {
            run?;
        }
        job.recomputed[from].fetch_add(redo.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn unavailable(&self, stage: &Stage, index: usize, reason: String) -> SchedError {
        let scan = stage.scan().expect("a scan stage");
        let part = &scan.partitions()[index];
        SchedError::PartitionUnavailable {
            dataset: scan.dataset().to_string(),
            partition: part.index,
            block: part.block.prefix(12).to_string(),
            reason,
        }
    }

    /// Send tasks to the node at `addr`: how each ran, with the rows of those not kept.
    /// Send `tasks` to the node at `addr`; a node that dies meanwhile is noticed by its
    /// silence to pings ([`while_alive`]), not the connection's idle timeout.
    pub(crate) async fn send_tasks(
        &self,
        addr: &str,
        plan: Vec<u8>,
        tasks: &[TaskSpec],
    ) -> Result<Vec<Sent>, Attempt> {
        while_alive(
            self.transport,
            addr,
            self.send_tasks_once(addr, plan, tasks),
        )
        .await
        .unwrap_or_else(|gone| Err(Attempt::Unreachable(gone.to_string())))
    }

    pub(crate) async fn send_tasks_once(
        &self,
        addr: &str,
        plan: Vec<u8>,
        tasks: &[TaskSpec],
    ) -> Result<Vec<Sent>, Attempt> {
        let unreachable = |e: &dyn std::fmt::Display| Attempt::Unreachable(e.to_string());
        let request = Request::RunTask {
            job: self.job,
            plan,
            tasks: tasks.to_vec(),
        };
        let (writer, mut reader) = self
            .transport
            .open_bulk(addr, &request)
            .await
            .map_err(|e| unreachable(&e))?;
        writer.finish().await.map_err(|e| unreachable(&e))?;
        let stats = match reader.response().await.map_err(|e| unreachable(&e))? {
            Response::TaskOutput { tasks: stats } if stats.len() == tasks.len() => stats,
            Response::ShuffleLost { stage, node, .. } => {
                return Err(Attempt::Lost {
                    stage: stage as usize,
                    node,
                });
            }
            // The query's own error, or stored bytes that are bad on every holder (their hash
            // matched, so all copies are the same): another node would fail the same way.
            Response::Error(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::BadData) => {
                return Err(Attempt::Fatal(e.message));
            }
            Response::Error(e) => return Err(Attempt::Retry(e.message)),
            other => return Err(Attempt::Retry(format!("unexpected answer {other:?}"))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.map_err(|e| unreachable(&e))? {
            bytes.extend_from_slice(&chunk);
        }
        let mut sent = Vec::with_capacity(stats.len());
        let mut at = 0usize;
        for (task, stat) in tasks.iter().zip(stats) {
            let end = at + stat.bytes as usize;
            let batches = if task.output.is_some() {
                Vec::new()
            } else {
                let ipc = bytes
                    .get(at..end)
                    .ok_or_else(|| Attempt::Retry("answer shorter than announced".into()))?;
                ipc_to_batches(ipc.to_vec())
                    .map_err(|e| Attempt::Retry(e.to_string()))?
                    .1
            };
            at = end;
            sent.push(Sent {
                batches,
                rows: stat.rows,
                kept_bytes: stat.kept_bytes,
                remote_reads: stat.remote_reads,
                spilled: stat.spilled,
            });
        }
        Ok(sent)
    }
}
