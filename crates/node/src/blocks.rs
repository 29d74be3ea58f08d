//! Blocks on a node: receive one while passing each chunk down the replica chain as it
//! arrives, check its hash, make it durable, and acknowledge only when every holder after us
//! has too (HDFS-style pipeline). Serve one, re-checking its hash, so a corrupted copy is
//! reported and the reader tries another.

use std::sync::Arc;
use std::time::Duration;

use tern_meta::placement::REPLICAS;
use tern_proto::{
    BlockHash, BulkRead, BulkWrite, Clock, ErrorKind, MAX_BLOCK_BYTES, NodeState, PutId, Request,
    Response, Transport, human_bytes,
};
use tern_store::{BlockStore, StoreError};
use tracing::{info, warn};

use crate::NodeService;

/// Blocks go back to readers in chunks of this size.
const CHUNK_BYTES: usize = 4 << 20;

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound { .. } => Response::error(ErrorKind::Invalid, e.to_string()),
        StoreError::CorruptBlock { .. } => Response::error(ErrorKind::Invalid, e.to_string()),
        other => Response::error(ErrorKind::Unavailable, other.to_string()),
    }
}

/// How long a writer may leave a block's stream silent before the node gives up on it.
const CHUNK_IDLE: Duration = Duration::from_secs(30);

/// How long a whole block may take to arrive: a minute, plus its bytes at 4 MiB/s.
fn body_deadline(size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs_f64(size as f64 / (4 << 20) as f64)
}

/// Read the `size` bytes of `what` (a block, a graph) from `body`, within its deadline and
/// with no chunk later than [`CHUNK_IDLE`] after the one before.
pub(crate) async fn receive_body(
    what: &str,
    size: u64,
    body: &mut impl BulkRead,
) -> Result<Vec<u8>, Response> {
    receive_passing_on(what, size, body, None::<NoSink>)
        .await
        .map_err(|failed| match failed {
            Received::Refused(refusal) => refusal,
            Received::NotPassedOn(e) => Response::error(ErrorKind::Unavailable, e.to_string()),
        })
}

/// Why a body was not received whole (and passed on).
enum Received {
    /// The body was bad or late: this answer says so.
    Refused(Response),
    /// The next node stopped taking it.
    NotPassedOn(tern_proto::TransportError),
}

/// Nowhere to pass a body on to.
struct NoSink;

impl BulkWrite for NoSink {
    async fn write_chunk(&mut self, _bytes: &[u8]) -> Result<(), tern_proto::TransportError> {
        Ok(())
    }
    async fn finish(self) -> Result<(), tern_proto::TransportError> {
        Ok(())
    }
}

/// [`receive_body`], writing each chunk on to `next` as soon as it arrives.
async fn receive_passing_on<W: BulkWrite>(
    what: &str,
    size: u64,
    body: &mut impl BulkRead,
    mut onward: Option<W>,
) -> Result<Vec<u8>, Received> {
    let deadline = tokio::time::Instant::now() + body_deadline(size);
    let mut bytes = Vec::with_capacity(size as usize);
    loop {
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(CHUNK_IDLE);
        let next = match tokio::time::timeout(wait, body.next_chunk()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(Received::Refused(Response::error(
                    ErrorKind::Unavailable,
                    format!(
                        "{what} arrived too slowly: {} of {} after the deadline",
                        human_bytes(bytes.len() as u64),
                        human_bytes(size)
                    ),
                )));
            }
        };
        match next {
            Ok(Some(chunk)) => {
                if bytes.len() as u64 + chunk.len() as u64 > size {
                    return Err(Received::Refused(Response::error(
                        ErrorKind::Invalid,
                        format!("{what} is longer than the {size} bytes announced"),
                    )));
                }
                if let Some(onward) = onward.as_mut() {
                    onward
                        .write_chunk(&chunk)
                        .await
                        .map_err(Received::NotPassedOn)?;
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Received::Refused(Response::error(
                    ErrorKind::BadFrame,
                    format!("{what} arrived incomplete: {e}"),
                )));
            }
        }
    }
    if bytes.len() as u64 != size {
        return Err(Received::Refused(Response::error(
            ErrorKind::Invalid,
            format!("{what} has {} bytes, {size} were announced", bytes.len()),
        )));
    }
    if let Some(onward) = onward {
        onward.finish().await.map_err(Received::NotPassedOn)?;
    }
    Ok(bytes)
}

/// Bytes of blocks being received, node-wide, bounded: each block reserves its size before
/// a byte of it is buffered, waiting a while for others to finish.
pub(crate) struct ReceiveBudget {
    /// Permits are KiB.
    kib: tokio::sync::Semaphore,
    bytes: u64,
}

impl ReceiveBudget {
    /// How long a block waits for room before its writer is told the node is busy.
    const WAIT: Duration = Duration::from_secs(30);

    pub(crate) fn new(bytes: u64) -> Self {
        // Room for at least one block of the largest size.
        let bytes = bytes.max(MAX_BLOCK_BYTES);
        Self {
            kib: tokio::sync::Semaphore::new((bytes >> 10) as usize),
            bytes,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.bytes
    }

    /// Room for `size` bytes, held until the permit drops; `None` if none came in time.
    pub(crate) async fn reserve(&self, size: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(size.div_ceil(1024)).ok()?;
        tokio::time::timeout(Self::WAIT, self.kib.acquire_many(kib))
            .await
            .ok()?
            .ok()
    }
}

/// RocksDB calls block; keep them off the async workers. (A disk that does not block, the
/// simulator's, is called in place: a blocking thread would make its runs depend on timing.)
pub(crate) async fn on_store<R: Send + 'static>(
    blocks: &Arc<BlockStore>,
    f: impl FnOnce(&BlockStore) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    if !blocks.blocks_thread() {
        return f(blocks.as_ref());
    }
    let blocks = blocks.clone();
    tokio::task::spawn_blocking(move || f(&blocks))
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(format!("block store task failed: {e}"))))
}

/// Run `f`, which may block on local files (the shuffle store past its memory), off the async
/// workers; in place when `inline` (a node on the simulator's disk, whose outputs stay in
/// memory: a blocking thread's timing would make runs depend on more than their seed).
pub(crate) async fn off_runtime<R: Send + 'static>(
    inline: bool,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    if inline {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    pub(crate) async fn serve_bulk(
        &self,
        request: Request,
        mut body: impl BulkRead,
        mut reply: tern_net::BodyWriter,
    ) {
        let answer = match request {
            Request::PutBlock {
                hash,
                size,
                chain,
                put,
            } => self.put_block(hash, size, chain, put, &mut body).await,
            Request::GetBlock { hash } => {
                match on_store(&self.blocks, move |b| b.get(&hash)).await {
                    Ok(bytes) => {
                        // Counted before the bytes leave: a reader holding them has been counted.
                        self.blocks_served
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if reply
                            .respond(&Response::Block {
                                size: bytes.len() as u64,
                            })
                            .await
                            .is_ok()
                        {
                            for chunk in bytes.chunks(CHUNK_BYTES) {
                                if reply.write_chunk(chunk).await.is_err() {
                                    return;
                                }
                            }
                            let _ = reply.finish().await;
                        }
                        return;
                    }
                    Err(e) => {
                        if matches!(e, StoreError::CorruptBlock { .. }) {
                            warn!(%hash, error = %e, "refusing to serve a corrupt block");
                        }
                        store_error(e)
                    }
                }
            }
            other => Response::error(
                ErrorKind::Invalid,
                format!("{} is not a bulk request", other.name()),
            ),
        };
        if reply.respond(&answer).await.is_ok() {
            let _ = reply.finish().await;
        }
    }

    async fn put_block(
        &self,
        hash: BlockHash,
        size: u64,
        chain: Vec<String>,
        put: Option<PutId>,
        body: &mut impl BulkRead,
    ) -> Response {
        if size > MAX_BLOCK_BYTES {
            return Response::error(
                ErrorKind::TooLarge,
                format!("block of {size} bytes exceeds the {MAX_BLOCK_BYTES}-byte limit"),
            );
        }
        if let Err(reason) = self.check_chain(&chain) {
            warn!(%hash, ?chain, %reason, "refused a block's replica chain");
            return Response::error(ErrorKind::Invalid, reason);
        }
        if let Some(refusal) = self.no_room_for(size).await {
            return refusal;
        }
        // Blocks being received share one memory budget, so many slow or idle writers cannot
        // pin more than it; a writer that cannot get its share in time is told the node is busy.
        let Some(_budget) = self.receiving.reserve(size).await else {
            return Response::error(
                ErrorKind::Unavailable,
                format!(
                    "node {} is busy receiving other blocks ({} buffered); retry shortly",
                    self.id(),
                    human_bytes(self.receiving.capacity())
                ),
            );
        };
        // Pipelined, as HDFS does: the next holder gets each chunk as it arrives here, so the
        // chain's copies cost about one transfer and one store, not three of each.
        let what = format!("block {hash}");
        let not_passed = |next: &str, reason: String| {
            Response::error(
                ErrorKind::Unavailable,
                format!("block {hash} not passed on to {next}: {reason}"),
            )
        };
        let (mut onward, mut next) = (None, None);
        if let Some((addr, rest)) = chain.split_first() {
            let request = Request::PutBlock {
                hash,
                size,
                chain: rest.to_vec(),
                put,
            };
            match self.transport.open_bulk(addr, &request).await {
                Ok((writer, reader)) => {
                    onward = Some(writer);
                    next = Some((addr.clone(), reader));
                }
                Err(e) => return not_passed(addr, e.to_string()),
            }
        }
        let bytes = match receive_passing_on(&what, size, body, onward.take()).await {
            Ok(bytes) => bytes,
            Err(Received::Refused(refusal)) => return refusal,
            // The next node may have refused the block before reading it: its answer says why.
            Err(Received::NotPassedOn(e)) => {
                let (addr, mut reader) = next.expect("passing on needs a next node");
                let reason =
                    match tokio::time::timeout(Duration::from_secs(5), reader.response()).await {
                        Ok(Ok(Response::Error(refusal))) => refusal.message,
                        _ => e.to_string(),
                    };
                return not_passed(&addr, reason);
            }
        };
        let store = on_store(&self.blocks, move |b| b.put_verified(&hash, &bytes, put));
        let passed = async {
            match next {
                Some((addr, mut reader)) => Some((addr, reader.response().await)),
                None => None,
            }
        };
        let (stored, passed) = tokio::join!(store, passed);
        if let Err(e) = stored {
            return store_error(e);
        }
        let mut holders = vec![self.id()];
        match passed {
            None => {}
            Some((_, Ok(Response::BlockStored { holders: more }))) => holders.extend(more),
            // Our copy stays (it is verified and harmless); the writer sees the chain failed
            // and, without a full set of acknowledgements, never makes the block visible.
            Some((addr, Ok(Response::Error(e)))) => return not_passed(&addr, e.message),
            Some((addr, Ok(other))) => {
                return not_passed(&addr, format!("unexpected answer {other:?}"));
            }
            Some((addr, Err(e))) => return not_passed(&addr, e.to_string()),
        }
        info!(%hash, size, holders = ?holders, "block stored");
        Response::BlockStored { holders }
    }

    /// A replica chain must be what placement could have returned: at most the other
    /// replicas, each a distinct node of the cluster that takes blocks now, and not this node.
    /// (A chain naming one node many times would store one copy while answering many holders,
    /// and make that node pass the block to itself over and over.)
    fn check_chain(&self, chain: &[String]) -> Result<(), String> {
        if chain.len() >= REPLICAS {
            return Err(format!(
                "a replica chain names at most {} further holders, this one {}",
                REPLICAS - 1,
                chain.len()
            ));
        }
        let nodes = self.meta.read_local(|s| s.nodes.clone());
        let mut seen = std::collections::BTreeSet::from([self.id()]);
        for addr in chain {
            let Some(node) = nodes.values().find(|n| &n.addr == addr) else {
                return Err(format!(
                    "{addr:?} in the replica chain is not a node of this cluster"
                ));
            };
            if !seen.insert(node.id) {
                return Err(format!(
                    "node {} appears twice in the replica chain (with this node {})",
                    node.id,
                    self.id()
                ));
            }
            if !matches!(node.state, NodeState::Up | NodeState::Suspect) {
                return Err(format!(
                    "node {} in the replica chain is {} and takes no new blocks",
                    node.id, node.state
                ));
            }
        }
        Ok(())
    }

    /// A refusal if a block of `size` bytes would take this node past its capacity.
    async fn no_room_for(&self, size: u64) -> Option<Response> {
        let used = on_store(&self.blocks, |b| b.bytes_on_disk()).await.ok()?;
        let capacity = self.record.capacity_bytes;
        (used + size > capacity).then(|| {
            Response::error(
                ErrorKind::Unavailable,
                format!(
                    "node {} is full: {} of its {} used, a block of {} does not fit",
                    self.id(),
                    human_bytes(used),
                    human_bytes(capacity),
                    human_bytes(size)
                ),
            )
        })
    }

    /// Repair: fetch a block from the first source that serves it intact and keep a copy.
    pub(crate) async fn copy_block(&self, hash: BlockHash, sources: &[String]) -> Response {
        // A repair is about to list this node for the block: it is held until that entry can
        // have arrived and its grace starts again after, so a copy (or one confirmed again
        // after an earlier round's commit failed) is not collected just before it is listed.
        let now = self.clock.now();
        self.gc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restart_grace(&hash, now);
        if matches!(
            on_store(&self.blocks, move |b| b.verify(&hash)).await,
            Ok(true)
        ) {
            return Response::BlockStored {
                holders: vec![self.id()],
            };
        }
        let mut reasons = Vec::new();
        for source in sources {
            match tern_proto::fetch_block(self.transport.as_ref(), source, &hash).await {
                Ok(bytes) => {
                    let size = bytes.len() as u64;
                    if let Err(e) =
                        on_store(&self.blocks, move |b| b.put_verified(&hash, &bytes, None)).await
                    {
                        return store_error(e);
                    }
                    let hold = self.copy_pace.book(self.clock.now(), size);
                    tokio::time::sleep(hold).await;
                    return Response::BlockStored {
                        holders: vec![self.id()],
                    };
                }
                Err(reason) => reasons.push(format!("{source}: {reason}")),
            }
        }
        Response::error(
            ErrorKind::Unavailable,
            format!("could not copy block {hash}: {}", reasons.join("; ")),
        )
    }
}
