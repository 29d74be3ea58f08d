//! Blocks: written along a chain of holders, read from the least busy holder that serves
//! them intact.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tern_proto::{
    BlockHash, DatasetRecord, FetchError, NodeId, PutId, Request, Response, Transport,
    TransportError,
};

use crate::{BLOCK_CHUNK_BYTES, Client, ClientError};

/// How long a holder that did not answer a read is tried after the others: long enough for
/// the cluster to mark a dead node down (10 s by default), short enough that a restarted
/// node soon takes its share again.
const UNANSWERED_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts one read in flight to a node for as long as it lives.
struct InFlight<'a> {
    map: &'a std::sync::Mutex<HashMap<String, usize>>,
    addr: String,
}

impl<'a> InFlight<'a> {
    fn start(map: &'a std::sync::Mutex<HashMap<String, usize>>, addr: &str) -> Self {
        *map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_default() += 1;
        Self {
            map,
            addr: addr.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
    }
}

impl<T: Transport> Client<T> {
    /// Store `bytes` as one block on `chain`: the first holder passes it to the next, each
    /// checks its hash and syncs it, and the answer lists every holder that has it durably.
    pub async fn put_block(
        &self,
        bytes: &[u8],
        chain: &[String],
        put: Option<PutId>,
    ) -> Result<(BlockHash, Vec<NodeId>), ClientError> {
        let hash = BlockHash::of(bytes);
        let not_stored = |reason: String| ClientError::BlockNotStored { hash, reason };
        let (first, rest) = chain
            .split_first()
            .ok_or_else(|| not_stored("no holders given".into()))?;
        let request = tern_proto::Request::PutBlock {
            hash,
            size: bytes.len() as u64,
            chain: rest.to_vec(),
            put,
        };
        let answer = tern_proto::send_body(
            self.transport.as_ref(),
            first,
            &request,
            bytes,
            BLOCK_CHUNK_BYTES,
        )
        .await
        .map_err(|e| not_stored(e.to_string()))?;
        match answer {
            Response::BlockStored { holders } => Ok((hash, holders)),
            Response::Error(e) => Err(not_stored(e.message)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Read block `hash` from the first of `holders` that serves it intact: a holder that is
    /// down, lacks it, or returns bytes that do not hash to its name is skipped.
    pub async fn get_block(
        &self,
        hash: &BlockHash,
        holders: &[String],
    ) -> Result<Vec<u8>, ClientError> {
        let mut reasons = Vec::new();
        for addr in &self.least_busy_first(holders) {
            let _counted = InFlight::start(&self.in_flight, addr);
            let read = self.read_block_from(hash, addr).await;
            let mut unanswered = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
            match read {
                Ok(bytes) => {
                    unanswered.remove(addr);
                    return Ok(bytes);
                }
                Err(reason) => {
                    if matches!(reason, FetchError::Transport(_)) {
                        unanswered.insert(addr.clone(), self.clock.now());
                    }
                    reasons.push(format!("{addr}: {reason}"));
                }
            }
        }
        Err(ClientError::BlockUnavailable {
            hash: *hash,
            reasons: reasons.join("; "),
        })
    }

    /// `holders` ordered by this client's reads in flight to each, fewest first; equally busy
    /// holders take turns at the front. Holders that did not answer lately go last.
    fn least_busy_first(&self, holders: &[String]) -> Vec<String> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let unanswered = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        let silent = |h: &String| {
            unanswered
                .get(h)
                .is_some_and(|at| now.saturating_duration_since(*at) < UNANSWERED_FOR)
        };
        let loads = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = holders.len().max(1);
        let mut order: Vec<(bool, usize, usize, &String)> = holders
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    silent(h),
                    loads.get(h).copied().unwrap_or(0),
                    (i + n - turn % n) % n,
                    h,
                )
            })
            .collect();
        order.sort();
        order.into_iter().map(|(_, _, _, h)| h.clone()).collect()
    }

    async fn read_block_from(&self, hash: &BlockHash, addr: &str) -> Result<Vec<u8>, FetchError> {
        match tern_proto::fetch_block(self.transport.as_ref(), addr, hash).await {
            // A node that restarted since our last call leaves a dead cached connection:
            // dial once more before giving up on this holder.
            Err(FetchError::Transport(
                TransportError::Broken { .. } | TransportError::Unreachable { .. },
            )) => {
                self.transport.forget(addr);
                tern_proto::fetch_block(self.transport.as_ref(), addr, hash).await
            }
            fetched => fetched,
        }
    }

    /// Replica chains for blocks of these sizes, chosen by the cluster; `pending` is what this
    /// client placed and has not committed yet (bytes per node).
    pub async fn place(
        &self,
        sizes: &[u64],
        pending: &HashMap<NodeId, u64>,
    ) -> Result<Vec<Vec<(NodeId, String)>>, ClientError> {
        let pending = pending.iter().map(|(id, bytes)| (*id, *bytes)).collect();
        match self
            .call(Request::Place {
                sizes: sizes.to_vec(),
                pending,
            })
            .await?
        {
            Response::Placement { chains } => Ok(chains),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Node id → address, from the cluster's node table.
    pub async fn node_addresses(&self) -> Result<HashMap<NodeId, String>, ClientError> {
        Ok(self
            .status()
            .await?
            .nodes
            .into_iter()
            .map(|n| (n.id, n.address))
            .collect())
    }

    /// The bytes of partition `index`, from whichever holder serves them intact.
    pub async fn read_partition(
        &self,
        dataset: &DatasetRecord,
        index: usize,
        addresses: &HashMap<NodeId, String>,
    ) -> Result<Vec<u8>, ClientError> {
        let partition = dataset.partitions.get(index).ok_or_else(|| {
            ClientError::Unexpected(format!("{} has no partition {index}", dataset.name))
        })?;
        let holders: Vec<String> = partition
            .holders
            .iter()
            .filter_map(|id| addresses.get(id).cloned())
            .collect();
        self.get_block(&partition.block, &holders).await
    }
}
