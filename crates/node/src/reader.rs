//! Where a task's inputs come from: [`NodeReader`] reads a stored partition from this node's
//! store when it holds it, else from another holder (counted, and refused for good when the
//! bytes are not the dataset's data), and fetches shuffle outputs from the nodes keeping them
//! (this node's own in place).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tern_exec::arrow::buffer::Buffer;
use tern_exec::arrow::datatypes::SchemaRef;
use tern_exec::{
    BlockRead, BlockReader, ColumnCache, ReadFuture, ShuffleFetcher, ShuffleFuture, ShuffleKey,
};
use tern_proto::{BlockHash, ErrorKind, NodeId, Request, Transport};
use tern_store::BlockStore;
use tracing::warn;

use crate::blocks::on_store;
use crate::shuffle::{ShuffleError, ShuffleStore};

/// Reads partitions for one task or query: own store first, then the holders.
pub(crate) struct NodeReader<T: Transport> {
    pub(crate) me: NodeId,
    pub(crate) blocks: Arc<BlockStore>,
    pub(crate) shuffles: Arc<ShuffleStore>,
    pub(crate) transport: Arc<T>,
    pub(crate) addrs: BTreeMap<NodeId, String>,
    pub(crate) remote: Arc<AtomicU32>,
    pub(crate) unavailable: Arc<AtomicBool>,
    /// A block read was not its dataset's data: the task fails the same on any holder.
    pub(crate) bad_data: Arc<AtomicBool>,
    /// Read this node's blocks on the calling thread (it is one of the query runtime's).
    pub(crate) in_place: bool,
    /// The first shuffle input that could not be fetched: (stage, node, why).
    pub(crate) lost: Arc<Mutex<Option<(u32, NodeId, String)>>>,
    pub(crate) cache: Arc<ColumnCache>,
}

/// Why kept shuffle outputs could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BucketFetchError {
    /// The node keeping them is gone, or no longer keeps them: they can be made again.
    #[error("{0}")]
    Lost(String),
    /// The output is kept, without the bucket asked for: the asker is wrong, not the node.
    #[error("{0}")]
    NoBucket(String),
}

impl<T: Transport> NodeReader<T> {
    /// One bucket of several tasks' outputs (all of one job and stage) kept on `node`, in the
    /// order of `keys`, only `columns` of them when given.
    pub(crate) fn fetch_buckets(
        &self,
        keys: Vec<ShuffleKey>,
        columns: Option<Vec<usize>>,
        node: NodeId,
        addr: String,
    ) -> impl std::future::Future<Output = Result<Vec<Buffer>, BucketFetchError>> + Send + 'static
    {
        let (me, shuffles, transport) = (self.me, self.shuffles.clone(), self.transport.clone());
        let inline = !self.blocks.blocks_thread();
        let lost = self.lost.clone();
        async move {
            let Some(first) = keys.first().copied() else {
                return Ok(Vec::new());
            };
            let fetched = if node == me {
                crate::blocks::off_runtime(inline, move || {
                    keys.into_iter()
                        .map(|key| shuffles.get(key))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(BucketFetchError::Lost)
                .and_then(|r| {
                    r.map_err(|e| match e {
                        ShuffleError::NoBucket { .. } => BucketFetchError::NoBucket(e.to_string()),
                        _ => BucketFetchError::Lost(e.to_string()),
                    })
                })
            } else {
                fetch_shuffle(transport.as_ref(), &addr, &keys, columns).await
            };
            if let Err(reason) = &fetched {
                lost.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert((first.stage, node, reason.to_string()));
            }
            fetched
        }
    }
}

impl<T: Transport> ShuffleFetcher for NodeReader<T> {
    fn fetch(
        &self,
        keys: Vec<ShuffleKey>,
        columns: Option<Vec<usize>>,
        node: NodeId,
        addr: String,
    ) -> ShuffleFuture {
        let fetched = self.fetch_buckets(keys, columns, node, addr);
        Box::pin(async move { fetched.await.map_err(|e| e.to_string()) })
    }
}

/// One bucket of several tasks' outputs (all of one job and stage) kept on the node at
/// `addr`, in the order of `keys`, only `columns` of them when given.
async fn fetch_shuffle<T: Transport>(
    transport: &T,
    addr: &str,
    keys: &[ShuffleKey],
    columns: Option<Vec<usize>>,
) -> Result<Vec<Buffer>, BucketFetchError> {
    let request = Request::FetchShuffle {
        job: keys[0].job,
        stage: keys[0].stage,
        tasks: keys.iter().map(|k| k.task).collect(),
        bucket: keys[0].bucket,
        columns: columns.map(|c| c.into_iter().map(|c| c as u32).collect()),
    };
    let lost = |e: String| BucketFetchError::Lost(e);
    let fetch = tern_proto::fetch_bytes(transport, addr, &request);
    let body = tern_sched::while_alive(transport, addr, fetch)
        .await
        .map_err(|gone| lost(gone.to_string()))?
        .map_err(|e| match e {
            tern_proto::FetchError::Refused { reply, .. } if reply.kind == ErrorKind::Invalid => {
                BucketFetchError::NoBucket(reply.message)
            }
            e => lost(e.to_string()),
        })?;
    let parts = tern_proto::split_parts(&body).map_err(|e| lost(e.to_string()))?;
    if parts.len() != keys.len() {
        return Err(lost(format!(
            "asked for {} buckets, got {}",
            keys.len(),
            parts.len()
        )));
    }
    let body = Buffer::from_vec(body);
    Ok(parts
        .into_iter()
        .map(|range| body.slice_with_length(range.start, range.len()))
        .collect())
}

impl<T: Transport> BlockReader for NodeReader<T> {
    fn read(&self, block: BlockHash, holders: Vec<NodeId>) -> ReadFuture {
        let (blocks, transport) = (self.blocks.clone(), self.transport.clone());
        let addrs: Vec<(NodeId, Option<String>)> = holders
            .iter()
            .map(|h| (*h, self.addrs.get(h).cloned()))
            .collect();
        let (remote, unavailable) = (self.remote.clone(), self.unavailable.clone());
        let in_place = self.in_place;
        Box::pin(async move {
            let local = if in_place {
                blocks.get(&block)
            } else {
                on_store(&blocks, move |b| b.get(&block)).await
            };
            if let Ok(bytes) = local {
                return Ok(BlockRead {
                    bytes: bytes.into(),
                    local: true,
                    partial: false,
                });
            }
            remote.fetch_add(1, Ordering::Relaxed);
            let mut reasons = Vec::new();
            for (id, addr) in addrs {
                let Some(addr) = addr else {
                    reasons.push(format!("node {id}: unknown address"));
                    continue;
                };
                let fetch = tern_proto::fetch_block(transport.as_ref(), &addr, &block);
                let fetched = match tern_sched::while_alive(transport.as_ref(), &addr, fetch).await
                {
                    Ok(fetched) => fetched.map_err(|e| e.to_string()),
                    Err(gone) => Err(gone.to_string()),
                };
                match fetched {
                    Ok(bytes) => {
                        return Ok(BlockRead {
                            bytes: bytes.into(),
                            local: false,
                            partial: false,
                        });
                    }
                    Err(e) => reasons.push(format!("node {id}: {e}")),
                }
            }
            unavailable.store(true, Ordering::Relaxed);
            Err(format!("no holder served it ({})", reasons.join("; ")))
        })
    }

    /// From this node's store, only the columns' groups (each checked against the block's
    /// name); a block stored whole, or not here, or a group that does not check out: the
    /// whole block, from here or another holder.
    fn read_columns(
        &self,
        block: BlockHash,
        holders: Vec<NodeId>,
        schema: SchemaRef,
        columns: Vec<usize>,
    ) -> ReadFuture {
        let blocks = self.blocks.clone();
        let in_place = self.in_place;
        let whole = self.read(block, holders);
        Box::pin(async move {
            let read = move |store: &BlockStore| {
                let Some(ranges) = store.ranges(&block)? else {
                    return Ok(None);
                };
                let mut source = StoreGroups(ranges);
                match tern_exec::read_columns_sparse(&mut source, &schema, &columns) {
                    Ok(bytes) => Ok(Some(bytes)),
                    // Read whole below: a bad block is reported from there, and another
                    // holder may have a good copy of a group this one lost.
                    Err(e) => {
                        warn!(%block, error = %e, "reading a block by column failed");
                        Ok(None)
                    }
                }
            };
            let sparse = if in_place {
                read(&blocks)
            } else {
                on_store(&blocks, read).await
            };
            match sparse {
                Ok(Some(bytes)) => Ok(BlockRead {
                    bytes,
                    local: true,
                    partial: true,
                }),
                Ok(None) | Err(_) => whole.await,
            }
        })
    }

    fn cache(&self) -> Option<Arc<ColumnCache>> {
        Some(self.cache.clone())
    }

    fn bad_block(&self, block: BlockHash, why: &tern_exec::BadBlock) {
        warn!(%block, reason = %why.reason, "a stored partition is not its dataset's data");
        self.bad_data.store(true, Ordering::Relaxed);
    }
}

/// A block in this node's store, read a group at a time.
struct StoreGroups<'a>(tern_store::BlockRanges<'a>);

impl tern_exec::GroupSource for StoreGroups<'_> {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_groups(&mut self, groups: &[u64], out: &mut [u8]) -> Result<(), String> {
        self.0
            .read_groups(groups, out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
