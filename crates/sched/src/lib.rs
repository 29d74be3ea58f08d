//! The per-query coordinator: plans a SQL query with DataFusion, cuts the physical plan into
//! stages ([`stages`]), sends each task to the least busy holder of its block that has a free
//! slot ([`LoadBoard`]), retries a task whose node fails on another node, and runs the final
//! stage itself.
//!
//! It owns stages, placement and retries. It does not run tasks (a node does, with
//! `tern-exec`), know how blocks are read, or know the node: the node hands it a
//! [`Transport`], the live nodes, and a DataFusion session with the datasets registered.
//! Every wait has a deadline: a task that does not answer in time is retried elsewhere, and a
//! query fails with the partition and the reason when none of its holders can serve it.

pub mod board;
pub mod stages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tern_exec::arrow::datatypes::SchemaRef;
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::prelude::SessionContext;
use tern_exec::{encode_plan, ipc_to_batches};
use tern_proto::{
    BulkRead, BulkWrite, ErrorKind, NodeId, Request, Response, StageReport, Transport,
};
use tracing::{info, warn};

pub use board::LoadBoard;
pub use stages::{Fragment, StageInputExec, cut, describe};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The query itself is wrong (syntax, unknown table or column, types) or failed while
    /// computing (for example a cast that cannot be done).
    #[error("{0}")]
    Query(String),
    #[error("partition {partition} of {dataset} (block {block}) is unavailable: {reason}")]
    PartitionUnavailable {
        dataset: String,
        partition: usize,
        block: String,
        reason: String,
    },
}

/// DataFusion's message on one line (some of its messages add hints on a second one).
fn query_error(e: impl std::fmt::Display) -> SchedError {
    let text = e.to_string();
    SchedError::Query(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A node as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: NodeId,
    pub addr: String,
    /// Not marked down.
    pub live: bool,
}

/// How a coordinator waits.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// How long a task waits for a slot on a holder before it runs elsewhere.
    pub locality_wait: Duration,
    /// How long one task attempt may take before it is tried on another node.
    pub task_deadline: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            locality_wait: Duration::from_millis(100),
            task_deadline: Duration::from_secs(120),
        }
    }
}

/// Coordinates queries over the nodes it is given.
pub struct Coordinator<'a, T: Transport> {
    transport: &'a T,
    board: &'a LoadBoard,
    nodes: HashMap<NodeId, NodeView>,
    patience: Patience,
}

/// One task's outcome.
struct TaskDone {
    index: usize,
    batches: Vec<RecordBatch>,
    rows: u64,
    node: NodeId,
    local: bool,
    retries: u64,
}

/// Why one attempt failed: worth another node, or final.
enum Attempt {
    Retry(String),
    Fatal(String),
}

impl<'a, T: Transport> Coordinator<'a, T> {
    pub fn new(transport: &'a T, board: &'a LoadBoard, nodes: Vec<NodeView>) -> Self {
        Self {
            transport,
            board,
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            patience: Patience::default(),
        }
    }

    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// Plan `sql` and cut it into stages.
    pub async fn plan(
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<
        (
            Arc<dyn tern_exec::datafusion::physical_plan::ExecutionPlan>,
            Vec<Fragment>,
        ),
        SchedError,
    > {
        // Queries only: DDL and DML would create tables or write files on the coordinator.
        let options = tern_exec::datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(query_error)?;
        let plan = frame.create_physical_plan().await.map_err(query_error)?;
        cut(plan).map_err(query_error)
    }

    /// The stages and tasks `sql` would run.
    pub async fn explain(ctx: &SessionContext, sql: &str) -> Result<String, SchedError> {
        let (root, fragments) = Self::plan(ctx, sql).await?;
        Ok(describe(&root, &fragments))
    }

    /// Run `sql`: its task stages on the nodes, then the final stage here.
    pub async fn run(
        &self,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, Vec<StageReport>), SchedError> {
        let (root, fragments) = Self::plan(ctx, sql).await?;
        let stages = futures::future::join_all(fragments.iter().map(|f| self.run_fragment(f)));
        let mut reports = Vec::new();
        for report in stages.await {
            reports.push(report?);
        }
        let started = Instant::now();
        let schema = root.schema();
        let batches = tern_exec::run_all(root, ctx.task_ctx())
            .await
            .map_err(query_error)?;
        reports.push(StageReport {
            stage: reports.len() as u32 + 1,
            what: "final, on the coordinator".into(),
            tasks: 1,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            millis: started.elapsed().as_millis() as u64,
            ..Default::default()
        });
        Ok((schema, batches, reports))
    }

    async fn run_fragment(&self, fragment: &Fragment) -> Result<StageReport, SchedError> {
        let started = Instant::now();
        let tasks = fragment.scan().partitions().len();
        // Enough in flight to fill every slot; the board decides where each one runs.
        let in_flight = (self.nodes.len() * 4).max(1);
        let mut done = futures::stream::iter(0..tasks)
            .map(|i| self.run_task(fragment, i))
            .buffer_unordered(in_flight);
        let mut report = StageReport {
            stage: fragment.id as u32 + 1,
            what: format!("scan of {}", fragment.scan().dataset()),
            tasks: tasks as u64,
            ..Default::default()
        };
        while let Some(task) = done.next().await {
            let task = task?;
            report.rows += task.rows;
            report.retries += task.retries;
            let counts = if task.local {
                &mut report.local
            } else {
                &mut report.remote
            };
            *counts.entry(task.node).or_default() += 1;
            fragment.input.set_output(task.index, task.batches);
        }
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn run_task(&self, fragment: &Fragment, index: usize) -> Result<TaskDone, SchedError> {
        let scan = fragment.scan();
        let part = &scan.partitions()[index];
        let unavailable = |reason: String| SchedError::PartitionUnavailable {
            dataset: scan.dataset().to_string(),
            partition: part.index,
            block: part.block.prefix(12).to_string(),
            reason,
        };
        let live = |id: &NodeId| self.nodes.get(id).is_some_and(|n| n.live);
        let holders: Vec<NodeId> = part.holders.iter().copied().filter(live).collect();
        if holders.is_empty() {
            return Err(unavailable(format!(
                "all of its holders ({}) are down",
                join(&part.holders)
            )));
        }
        let plan = fragment.task_plan(index).map_err(query_error)?;
        let plan = encode_plan(plan).map_err(query_error)?;
        let mut tried: Vec<NodeId> = Vec::new();
        let mut reasons = Vec::new();
        // Every live holder once, then two other nodes (which fetch the block remotely).
        for _ in 0..holders.len() + 2 {
            let left: Vec<NodeId> = holders
                .iter()
                .filter(|h| !tried.contains(h))
                .copied()
                .collect();
            let anywhere: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.live && !tried.contains(&n.id))
                .map(|n| n.id)
                .collect();
            if anywhere.is_empty() {
                break;
            }
            let slot = self
                .board
                .take(&left, &anywhere, self.patience.locality_wait)
                .await;
            let node = slot.node;
            let addr = &self.nodes[&node].addr;
            let attempt =
                tokio::time::timeout(self.patience.task_deadline, self.send_task(addr, &plan))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Attempt::Retry(format!(
                            "no answer within {} s",
                            self.patience.task_deadline.as_secs()
                        )))
                    });
            match attempt {
                Ok((batches, rows, remote_reads)) => {
                    return Ok(TaskDone {
                        index,
                        batches,
                        rows,
                        node,
                        local: slot.local && remote_reads == 0,
                        retries: tried.len() as u64,
                    });
                }
                Err(Attempt::Fatal(reason)) => return Err(SchedError::Query(reason)),
                Err(Attempt::Retry(reason)) => {
                    warn!(dataset = scan.dataset(), partition = part.index, node, %reason, "task failed; trying another node");
                    reasons.push(format!("node {node}: {reason}"));
                    tried.push(node);
                }
            }
        }
        info!(
            dataset = scan.dataset(),
            partition = part.index,
            "task failed everywhere"
        );
        Err(unavailable(reasons.join("; ")))
    }

    async fn send_task(
        &self,
        addr: &str,
        plan: &[u8],
    ) -> Result<(Vec<RecordBatch>, u64, u32), Attempt> {
        let retry = |e: &dyn std::fmt::Display| Attempt::Retry(e.to_string());
        let request = Request::RunTask {
            plan: plan.to_vec(),
        };
        let (writer, mut reader) = self
            .transport
            .open_bulk(addr, &request)
            .await
            .map_err(|e| retry(&e))?;
        writer.finish().await.map_err(|e| retry(&e))?;
        let (rows, remote_reads) = match reader.response().await.map_err(|e| retry(&e))? {
            Response::TaskOutput { rows, remote_reads } => (rows, remote_reads),
            Response::Error(e) if e.kind == ErrorKind::Invalid => {
                return Err(Attempt::Fatal(e.message));
            }
            Response::Error(e) => return Err(Attempt::Retry(e.message)),
            other => return Err(Attempt::Retry(format!("unexpected answer {other:?}"))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.map_err(|e| retry(&e))? {
            bytes.extend_from_slice(&chunk);
        }
        let (_, batches) = ipc_to_batches(bytes).map_err(|e| retry(&e))?;
        Ok((batches, rows, remote_reads))
    }
}

fn join(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
