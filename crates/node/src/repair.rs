//! Repair, on the leader: every partition with a replica on a down node is copied from a
//! surviving holder to a new one (chosen by the same placement as writes), and the dataset's
//! record is updated in one catalog entry, until each block has three replicas on nodes that
//! are not down. A bounded number of copies run per round, so repair never floods the cluster.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tern_meta::placement::{REPLICAS, pick_holders};
use tern_meta::{Command, MetaState};
use tern_proto::{
    CatalogOp, Clock, DATASETS_TABLE, DatasetRecord, NodeId, NodeRecord, NodeState, Request,
    Response, Transport,
};
use tracing::{info, warn};

use crate::NodeService;

/// Copies started per repair round.
const MAX_COPIES_PER_ROUND: usize = 4;
const COPY_DEADLINE: Duration = Duration::from_secs(60);

/// Every dataset in the catalog, with the exact bytes of its entry (for the precondition).
pub(crate) fn datasets(state: &MetaState) -> Vec<(Vec<u8>, DatasetRecord)> {
    state
        .catalog
        .get(DATASETS_TABLE)
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|raw| {
            Some((
                raw.clone(),
                postcard::from_bytes::<DatasetRecord>(raw).ok()?,
            ))
        })
        .collect()
}

/// Bytes each node holds for the datasets in the catalog.
pub(crate) fn usage<'a>(
    datasets: impl IntoIterator<Item = &'a DatasetRecord>,
) -> HashMap<NodeId, u64> {
    let mut used = HashMap::new();
    for dataset in datasets {
        for p in &dataset.partitions {
            for holder in &p.holders {
                *used.entry(*holder).or_default() += p.bytes;
            }
        }
    }
    used
}

/// (under-replicated, missing) partition counts, counting replicas on nodes not marked down.
pub(crate) fn replica_health(state: &MetaState) -> (u64, u64) {
    let alive = |id: &NodeId| {
        state
            .nodes
            .get(id)
            .is_some_and(|n| n.state != NodeState::Down)
    };
    let (mut under, mut missing) = (0, 0);
    for (_, dataset) in datasets(state) {
        for p in &dataset.partitions {
            match p.holders.iter().filter(|h| alive(h)).count() {
                0 => missing += 1,
                n if n < REPLICAS => under += 1,
                _ => {}
            }
        }
    }
    (under, missing)
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// One repair round; returns how many blocks were copied.
    pub async fn repair_once(&self) -> usize {
        if !self.meta.is_leader() {
            return 0;
        }
        let (nodes, found) = self.meta.read_local(|s| (s.nodes.clone(), datasets(s)));
        let lost = |id: &NodeId| nodes.get(id).is_none_or(|n| n.state == NodeState::Down);
        let node_list: Vec<NodeRecord> = nodes.values().cloned().collect();
        let mut used = usage(found.iter().map(|(_, d)| d));
        let mut copies = 0;
        for (raw, mut dataset) in found {
            let mut changed = false;
            for (index, p) in dataset.partitions.iter_mut().enumerate() {
                if copies >= MAX_COPIES_PER_ROUND {
                    break;
                }
                let live: Vec<NodeId> = p.holders.iter().filter(|h| !lost(h)).copied().collect();
                if live.len() == p.holders.len() && live.len() >= REPLICAS {
                    continue;
                }
                if live.is_empty() {
                    warn!(dataset = %dataset.name, partition = index, block = %p.block, "no live replica left");
                    continue;
                }
                if live.len() >= REPLICAS {
                    p.holders = live;
                    changed = true;
                    continue;
                }
                let exclude: BTreeSet<NodeId> = p.holders.iter().copied().collect();
                let Ok(target) = pick_holders(&node_list, &mut used, p.bytes, 1, &exclude) else {
                    warn!(dataset = %dataset.name, partition = index, "no node free to take a new replica");
                    continue;
                };
                let target = target[0];
                let sources: Vec<String> = live
                    .iter()
                    .filter_map(|id| nodes.get(id).map(|n| n.addr.clone()))
                    .collect();
                let request = Request::CopyBlock {
                    hash: p.block,
                    sources,
                };
                match self
                    .transport
                    .call_within(&nodes[&target].addr, request, COPY_DEADLINE)
                    .await
                {
                    Ok(Response::BlockStored { .. }) => {
                        info!(dataset = %dataset.name, partition = index, block = %p.block, to = target, "replica repaired");
                        p.holders = live.into_iter().chain([target]).collect();
                        changed = true;
                        copies += 1;
                    }
                    Ok(Response::Error(e)) => {
                        warn!(block = %p.block, to = target, error = %e, "repair copy refused")
                    }
                    Ok(other) => {
                        warn!(block = %p.block, to = target, answer = ?other, "repair copy: unexpected answer")
                    }
                    Err(e) => {
                        warn!(block = %p.block, to = target, error = %e, "repair copy failed")
                    }
                }
            }
            if changed {
                self.commit_holders(raw, &dataset).await;
            }
        }
        copies
    }

    /// Record new holders, unless the dataset changed meanwhile (then the next round redoes it
    /// against the new record; the copied blocks are harmless extra replicas until collected).
    async fn commit_holders(&self, raw: Vec<u8>, dataset: &DatasetRecord) {
        let Ok(encoded) = postcard::to_allocvec(dataset) else {
            return;
        };
        let ops = vec![
            CatalogOp::Expect {
                table: DATASETS_TABLE.into(),
                key: dataset.name.clone(),
                value: Some(raw),
            },
            CatalogOp::Put {
                table: DATASETS_TABLE.into(),
                key: dataset.name.clone(),
                value: encoded,
            },
        ];
        if let Err(e) = self.meta.write(Command::Catalog(ops)).await {
            warn!(dataset = %dataset.name, error = %e, "repaired holders not recorded; will retry");
        }
    }
}
