//! Queries on a node: running tasks other coordinators send (`RunTask`, at most `task_slots`
//! at once, in arrival order), and coordinating a client's query (`Query`) with
//! `tern-sched`. Partitions are read from this node's store when it holds them, otherwise
//! from another holder, and the task reports how many it fetched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tern_exec::{BlockReader, ReadFuture, StoredTable};
use tern_proto::{BlockHash, Clock, ErrorKind, NodeId, NodeState, Response, Transport};
use tern_sched::{Coordinator, NodeView, SchedError};
use tern_store::BlockStore;
use tracing::warn;

use crate::NodeService;
use crate::blocks::on_store;

/// Arrow IPC answers go out in chunks of this size.
const CHUNK_BYTES: usize = 4 << 20;

/// Reads partitions for one task or query: own store first, then the holders.
struct NodeReader<T: Transport> {
    blocks: Arc<BlockStore>,
    transport: Arc<T>,
    addrs: HashMap<NodeId, String>,
    remote: Arc<AtomicU32>,
    unavailable: Arc<AtomicBool>,
}

impl<T: Transport> BlockReader for NodeReader<T> {
    fn read(&self, block: BlockHash, holders: Vec<NodeId>) -> ReadFuture {
        let (blocks, transport) = (self.blocks.clone(), self.transport.clone());
        let addrs: Vec<(NodeId, Option<String>)> = holders
            .iter()
            .map(|h| (*h, self.addrs.get(h).cloned()))
            .collect();
        let (remote, unavailable) = (self.remote.clone(), self.unavailable.clone());
        Box::pin(async move {
            if let Ok(bytes) = on_store(&blocks, move |b| b.get(&block)).await {
                return Ok(bytes);
            }
            remote.fetch_add(1, Ordering::Relaxed);
            let mut reasons = Vec::new();
            for (id, addr) in addrs {
                let Some(addr) = addr else {
                    reasons.push(format!("node {id}: unknown address"));
                    continue;
                };
                match tern_proto::fetch_block(transport.as_ref(), &addr, &block).await {
                    Ok(bytes) => return Ok(bytes),
                    Err(e) => reasons.push(format!("node {id}: {e}")),
                }
            }
            unavailable.store(true, Ordering::Relaxed);
            Err(format!("no holder served it ({})", reasons.join("; ")))
        })
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

async fn respond(mut reply: tern_net::BodyWriter, answer: &Response) {
    if reply.respond(answer).await.is_ok() {
        let _ = reply.finish().await;
    }
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    fn reader(&self, addrs: HashMap<NodeId, String>) -> NodeReader<T> {
        NodeReader {
            blocks: self.blocks.clone(),
            transport: self.transport.clone(),
            addrs,
            remote: Default::default(),
            unavailable: Default::default(),
        }
    }

    fn addresses(&self) -> HashMap<NodeId, String> {
        self.meta
            .read_local(|s| s.nodes.values().map(|n| (n.id, n.addr.clone())).collect())
    }

    /// Run one task a coordinator sent.
    pub(crate) async fn run_task(&self, plan: Vec<u8>, reply: tern_net::BodyWriter) {
        let Ok(_slot) = self.task_slots.acquire().await else {
            return respond(
                reply,
                &Response::error(ErrorKind::Unavailable, "shutting down"),
            )
            .await;
        };
        let reader = self.reader(self.addresses());
        let (remote, unavailable) = (reader.remote.clone(), reader.unavailable.clone());
        let ctx = tern_exec::session(self.slot_count, Arc::new(reader));
        let result = async {
            let plan = tern_exec::decode_plan(&plan, &ctx.task_ctx())?;
            let schema = plan.schema();
            let batches = tern_exec::run_task(plan, 0, ctx.task_ctx()).await?;
            let bytes = tern_exec::batches_to_ipc(&schema, &batches)?;
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            Ok::<_, tern_exec::ExecError>((rows, bytes))
        }
        .await;
        match result {
            Ok((rows, bytes)) => {
                let answer = Response::TaskOutput {
                    rows,
                    remote_reads: remote.load(Ordering::Relaxed),
                };
                respond_with_bytes(reply, &answer, &bytes).await;
            }
            Err(e) => {
                // A partition no holder could serve is worth another node; anything else is
                // the query's own error and would fail anywhere.
                let kind = if unavailable.load(Ordering::Relaxed) {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Invalid
                };
                respond(reply, &Response::error(kind, e.to_string())).await;
            }
        }
    }

    /// Coordinate a client's query.
    pub(crate) async fn run_query(&self, sql: String, explain: bool, reply: tern_net::BodyWriter) {
        let state = self
            .meta
            .read(|s| (crate::repair::datasets(s), s.nodes.clone()))
            .await;
        let (datasets, nodes) = match state {
            Ok(state) => state,
            Err(e) => {
                return respond(reply, &Response::error(ErrorKind::NoLeader, e.to_string())).await;
            }
        };
        let addrs = nodes.values().map(|n| (n.id, n.addr.clone())).collect();
        let ctx = tern_exec::session(self.slot_count, Arc::new(self.reader(addrs)));
        for (_, dataset) in &datasets {
            if dataset.format != "arrow-ipc" {
                continue;
            }
            match StoredTable::new(dataset) {
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
        let views = nodes
            .values()
            .map(|n| NodeView {
                id: n.id,
                addr: n.addr.clone(),
                live: n.state != NodeState::Down,
            })
            .collect();
        let coordinator = Coordinator::new(self.transport.as_ref(), &self.board, views);
        let answer = coordinator
            .run(&ctx, &sql)
            .await
            .and_then(|(schema, batches, stages)| {
                let bytes = tern_exec::batches_to_ipc(&schema, &batches)
                    .map_err(|e| SchedError::Query(e.to_string()))?;
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                Ok((Response::QueryOutput { rows, stages }, bytes))
            });
        match answer {
            Ok((answer, bytes)) => respond_with_bytes(reply, &answer, &bytes).await,
            Err(e) => respond(reply, &sched_error(e)).await,
        }
    }
}

fn sched_error(e: SchedError) -> Response {
    let kind = match e {
        SchedError::Query(_) => ErrorKind::Invalid,
        SchedError::PartitionUnavailable { .. } => ErrorKind::Unavailable,
    };
    Response::error(kind, e.to_string())
}
