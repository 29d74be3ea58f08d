//! Repair and drain, on the leader: every partition with a replica on a down node, or on a
//! node being drained, is copied from a live holder to a new one (chosen by the same placement
//! as writes), and the dataset's record is updated in one catalog entry, until each block has
//! three replicas on nodes that are neither down nor draining. A draining holder leaves the
//! record only in the entry that adds its replacement, whose copy is already durable, so a
//! drain never leaves a block with fewer than three live replicas. A node being drained that
//! no record lists any more is marked drained. A bounded number of copies run per round, and
//! each node paces the copies it receives ([`Pace`]), so repair never floods the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_meta::placement::{REPLICAS, pick_holders_beside};
use tern_meta::{Command, MetaState};
use tern_proto::{
    CatalogOp, Clock, DATASETS_TABLE, DatasetRecord, NodeId, NodeRecord, NodeState, Request,
    Response, Transport,
};
use tracing::{info, warn};

use crate::NodeService;

/// Copies run at once in a repair round (each target paces what it receives).
const MAX_COPIES_PER_ROUND: usize = 4;

/// How long one repair copy may take: a round waits for all its copies, so a target that died
/// after it was picked must not hold up every other repair for long (the simulator found a
/// fixed 60 s deadline stalling repair for a minute per dead target). Ten seconds plus the
/// block at a slow 8 MiB/s: 18 s for a 64 MiB partition.
fn copy_deadline(bytes: u64) -> Duration {
    Duration::from_secs(10) + Duration::from_secs_f64(bytes as f64 / (8 << 20) as f64)
}

/// Paces the copies a node receives to a byte rate: each copy books its bytes, and the answer
/// to it waits until the booked time has passed, so the sender's next copy starts no sooner.
pub(crate) struct Pace {
    bytes_per_s: u64,
    free_at: Mutex<Option<Instant>>,
}

impl Pace {
    pub(crate) fn new(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s: bytes_per_s.max(1),
            free_at: Mutex::new(None),
        }
    }

    /// Book `bytes` moved at `now`; returns how long to hold the answer.
    pub(crate) fn book(&self, now: Instant, bytes: u64) -> Duration {
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = free_at.map_or(now, |t| t.max(now));
        let done = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64);
        *free_at = Some(done);
        done.saturating_duration_since(now)
    }
}

/// Every dataset in the catalog, with the exact bytes of its entry (for the precondition).
pub(crate) fn datasets(state: &MetaState) -> Vec<(Vec<u8>, DatasetRecord)> {
    state
        .catalog
        .get(DATASETS_TABLE)
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|raw| Some((raw.clone(), DatasetRecord::decode(raw).ok()?)))
        .collect()
}

/// Keys of dataset records that do not decode as this version's [`DatasetRecord`].
pub(crate) fn undecodable_datasets(state: &MetaState) -> Vec<String> {
    state
        .catalog
        .get(DATASETS_TABLE)
        .into_iter()
        .flat_map(|t| t.iter())
        .filter(|(_, raw)| DatasetRecord::decode(raw).is_err())
        .map(|(key, _)| key.clone())
        .collect()
}

/// Partition replicas and their bytes each node holds for these datasets.
pub(crate) fn holdings<'a>(
    datasets: impl IntoIterator<Item = &'a DatasetRecord>,
) -> BTreeMap<NodeId, (u64, u64)> {
    let mut held: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    for dataset in datasets {
        for p in &dataset.partitions {
            for holder in &p.holders {
                let entry = held.entry(*holder).or_default();
                entry.0 += 1;
                entry.1 += p.bytes;
            }
        }
    }
    held
}

/// Bytes each node holds for these datasets.
pub(crate) fn usage<'a>(
    datasets: impl IntoIterator<Item = &'a DatasetRecord>,
) -> BTreeMap<NodeId, u64> {
    holdings(datasets)
        .into_iter()
        .map(|(id, (_, bytes))| (id, bytes))
        .collect()
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
    /// One repair round; returns how many blocks were copied. Plans up to
    /// [`MAX_COPIES_PER_ROUND`] copies, runs them concurrently, then records the new holders.
    pub async fn repair_once(&self) -> usize {
        if !self.meta.is_leader() {
            return 0;
        }
        let (nodes, mut found, undecodable) = self
            .meta
            .read_local(|s| (s.nodes.clone(), datasets(s), undecodable_datasets(s)));
        // Fail closed, as garbage collection does: a record this node cannot read may list
        // replicas, and a drain judged without it could retire their last holder.
        if !undecodable.is_empty() {
            warn!(
                records = ?undecodable,
                "repair and drain paused: dataset records do not decode on the leader"
            );
            return 0;
        }
        let planted = self.planted_count_down_as_holder;
        let lost = |id: &NodeId| {
            nodes
                .get(id)
                .is_none_or(|n| n.state == NodeState::Down && !planted)
        };
        let leaving = |id: &NodeId| {
            nodes
                .get(id)
                .is_some_and(|n| matches!(n.state, NodeState::Draining | NodeState::Drained))
        };
        let node_list: Vec<NodeRecord> = nodes.values().cloned().collect();
        let zone_of = |id: &NodeId| nodes.get(id).map(|n| n.zone.clone());
        // Replicas belong in distinct zones, as many as have a node up (at most three).
        let zones_wanted = REPLICAS.min(
            node_list
                .iter()
                .filter(|n| n.state == NodeState::Up)
                .map(|n| n.zone.as_str())
                .collect::<BTreeSet<_>>()
                .len(),
        );
        let mut used = usage(found.iter().map(|(_, d)| d));
        self.mark_drained(&nodes, &used).await;

        // Plan: drop holders that are no longer needed now, and pick a target for each copy.
        let mut changed = vec![false; found.len()];
        let mut copies = tokio::task::JoinSet::new();
        for (d, (_, dataset)) in found.iter_mut().enumerate() {
            for (index, p) in dataset.partitions.iter_mut().enumerate() {
                let live: Vec<NodeId> = p.holders.iter().filter(|h| !lost(h)).copied().collect();
                let staying = live.iter().filter(|h| !leaving(h)).count();
                let zones: BTreeSet<String> = live
                    .iter()
                    .filter(|h| !leaving(h))
                    .filter_map(zone_of)
                    .collect();
                // Enough replicas, but crowded into too few zones (placed while a zone was
                // down): copy one to a missing zone, then drop one from a crowded zone.
                let crowded = staying >= REPLICAS && zones.len() < zones_wanted;
                if staying == p.holders.len() && staying >= REPLICAS && !crowded {
                    continue;
                }
                if live.is_empty() {
                    warn!(dataset = %dataset.name, partition = index, block = %p.block, "no live replica left");
                    continue;
                }
                if staying >= REPLICAS && !crowded {
                    p.holders = live.into_iter().filter(|h| !leaving(h)).collect();
                    changed[d] = true;
                    continue;
                }
                if copies.len() >= MAX_COPIES_PER_ROUND {
                    continue;
                }
                let exclude: BTreeSet<NodeId> = p.holders.iter().copied().collect();
                let picked =
                    pick_holders_beside(&node_list, &mut used, p.bytes, 1, &exclude, &zones);
                let Ok(target) = picked else {
                    warn!(dataset = %dataset.name, partition = index, "no node free to take a new replica");
                    continue;
                };
                let target = target[0];
                let surplus = if crowded {
                    let new_zone = zone_of(&target).is_some_and(|z| !zones.contains(&z));
                    if !new_zone {
                        continue;
                    }
                    // The last staying holder whose zone another staying holder shares.
                    live.iter().rev().copied().find(|h| {
                        !leaving(h)
                            && live
                                .iter()
                                .filter(|o| *o != h && !leaving(o))
                                .any(|o| zone_of(o) == zone_of(h))
                    })
                } else {
                    None
                };
                let request = Request::CopyBlock {
                    hash: p.block,
                    sources: live
                        .iter()
                        .filter_map(|id| nodes.get(id).map(|n| n.addr.clone()))
                        .collect(),
                };
                let (transport, addr) = (self.transport.clone(), nodes[&target].addr.clone());
                let deadline = copy_deadline(p.bytes);
                copies.spawn(async move {
                    let answer = transport.call_within(&addr, request, deadline).await;
                    (d, index, target, live, surplus, answer)
                });
            }
        }

        // Apply each finished copy: the new holder joins; leaving holders go only once
        // enough others hold the block.
        let mut copied = 0;
        while let Some(joined) = copies.join_next().await {
            let Ok((d, index, target, live, surplus, answer)) = joined else {
                continue;
            };
            let (_, dataset) = &mut found[d];
            let p = &mut dataset.partitions[index];
            match answer {
                Ok(Response::BlockStored { .. }) => {
                    info!(dataset = %dataset.name, partition = index, block = %p.block, to = target, "replica copied");
                    let staying = live.iter().filter(|h| !leaving(h)).count();
                    let mut holders: Vec<NodeId> = live.into_iter().chain([target]).collect();
                    if staying + 1 >= REPLICAS {
                        holders.retain(|h| !leaving(h));
                    }
                    if let Some(extra) = surplus
                        && holders.len() > REPLICAS
                    {
                        holders.retain(|h| *h != extra);
                    }
                    p.holders = holders;
                    changed[d] = true;
                    copied += 1;
                }
                Ok(Response::Error(e)) => {
                    warn!(block = %p.block, to = target, error = %e, "repair copy refused")
                }
                Ok(other) => {
                    warn!(block = %p.block, to = target, answer = ?other, "repair copy: unexpected answer")
                }
                Err(e) => warn!(block = %p.block, to = target, error = %e, "repair copy failed"),
            }
        }
        for ((raw, dataset), changed) in found.into_iter().zip(changed) {
            if changed {
                self.commit_holders(raw, &dataset).await;
            }
        }
        copied
    }

    /// Nodes being drained that no dataset lists any more are done.
    async fn mark_drained(
        &self,
        nodes: &BTreeMap<NodeId, NodeRecord>,
        used: &BTreeMap<NodeId, u64>,
    ) {
        for node in nodes.values() {
            if node.state == NodeState::Draining && !used.contains_key(&node.id) {
                info!(
                    node = node.id,
                    "drain complete: no replica left on the node"
                );
                let command = Command::SetNodeState {
                    id: node.id,
                    state: NodeState::Drained,
                };
                if let Err(e) = self.meta.write(command).await {
                    warn!(node = node.id, error = %e, "could not record the drain as complete");
                }
            }
        }
    }

    /// Start draining `node` (on the leader): refused when the nodes left could not hold
    /// three replicas of every block.
    pub(crate) async fn start_drain(&self, node: NodeId) -> Result<Response, tern_meta::MetaError> {
        let nodes = self.meta.read(|s| s.nodes.clone()).await?;
        let Some(record) = nodes.get(&node) else {
            return Ok(Response::error(
                tern_proto::ErrorKind::Invalid,
                format!("there is no node {node}"),
            ));
        };
        if matches!(record.state, NodeState::Draining | NodeState::Drained) {
            return Ok(Response::Ack);
        }
        let others = nodes
            .values()
            .filter(|n| n.id != node && n.state == NodeState::Up)
            .count();
        if others < REPLICAS {
            return Ok(Response::error(
                tern_proto::ErrorKind::Unavailable,
                format!(
                    "cannot drain node {node}: only {others} other nodes are up, and every block needs {REPLICAS}"
                ),
            ));
        }
        info!(node, "drain started");
        self.meta
            .write(Command::SetNodeState {
                id: node,
                state: NodeState::Draining,
            })
            .await?;
        Ok(Response::Ack)
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
