//! Repair and drain, on the leader: every partition with a replica on a node that is out, or
//! on a node being drained, is copied from a live holder to a new one (chosen by the same
//! placement as writes), and the dataset's record is updated in one catalog entry, until each
//! block has three replicas on nodes that are neither out nor draining. A node that is merely
//! down is waited for (its data is served by the other holders): most come back, and copying
//! their blocks at once would start a storm of copies for a reboot.
//!
//! The whole cluster copies: each round plans the partitions with the fewest live replicas
//! first and lets every live node send and receive up to [`STREAMS_PER_NODE`] copies at once,
//! so the time to restore a lost node shrinks as the cluster grows. A draining holder leaves
//! the record only in the entry that adds its replacement, whose copy is already durable, so a
//! drain never leaves a block with fewer than three live replicas. A node being drained that
//! no record lists any more is marked drained. Each node also paces the bytes it receives
//! ([`Pace`]), so repair never floods it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_meta::placement::{Placer, REPLICAS};
use tern_meta::{Command, MetaState};
use tern_proto::{
    CatalogOp, Clock, DATASETS_TABLE, DatasetRecord, NodeId, NodeRecord, NodeState, Request,
    Response, Transport,
};
use tracing::{info, warn};

use crate::NodeService;

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

/// Bytes each node holds for these datasets (the leader reads its holdings index instead; this
/// is for planning over records that are not in a catalog, as tests and the scale harness do).
pub fn bytes_per_node<'a>(
    datasets: impl IntoIterator<Item = &'a DatasetRecord>,
) -> BTreeMap<NodeId, u64> {
    let mut used: BTreeMap<NodeId, u64> = BTreeMap::new();
    for p in datasets.into_iter().flat_map(|d| &d.partitions) {
        for holder in &p.holders {
            *used.entry(*holder).or_default() += p.bytes;
        }
    }
    used
}

/// (under-replicated, missing) partition counts, counting replicas on nodes neither down nor
/// out.
pub(crate) fn replica_health(state: &MetaState) -> (u64, u64) {
    let alive = |id: &NodeId| state.nodes.get(id).is_some_and(|n| !n.state.is_gone());
    // Every holder alive: the counts kept on apply are the answer, without reading a record.
    if state.holdings.nodes().all(|id| alive(&id)) {
        return state.holdings.short_and_empty();
    }
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

/// Copies a node may send, and receive, at once during repair (HDFS's default
/// `dfs.namenode.replication.max-streams` is 2 as well).
pub const STREAMS_PER_NODE: usize = 2;

/// One copy a repair round makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCopy {
    /// Index into the round's datasets, and of the partition in it.
    pub dataset: usize,
    pub partition: usize,
    pub target: NodeId,
    /// Holders that can send the block, the one chosen for this copy first (the target tries
    /// the others if it fails).
    pub sources: Vec<NodeId>,
    /// The holders that are not out (before the target joins).
    pub live: Vec<NodeId>,
    /// A holder to drop once the copy is made (a replica moved out of a crowded zone).
    pub surplus: Option<NodeId>,
}

/// What a round does: copies to make, and datasets whose holders it changed without a copy
/// (holders dropped that are no longer needed).
#[derive(Debug, Default)]
pub struct RepairPlan {
    pub copies: Vec<PlannedCopy>,
    pub trimmed: Vec<bool>,
}

/// A partition that needs a copy, and how urgently (fewest reachable replicas first).
struct Need {
    reachable: usize,
    staying: usize,
    crowded: bool,
    dataset: usize,
    partition: usize,
}

/// Plan one repair round over `datasets` (holders no longer needed are dropped in place).
/// `lost(id)`: the node's replicas count no more (out, or unknown). `used`: bytes each node
/// holds, grown by the planned copies. A pure function of its inputs, so it is unit-tested and
/// every leader plans alike.
pub fn plan_repair(
    nodes: &BTreeMap<NodeId, NodeRecord>,
    datasets: &mut [DatasetRecord],
    used: &mut BTreeMap<NodeId, u64>,
    lost: &dyn Fn(&NodeId) -> bool,
    seed: u64,
) -> RepairPlan {
    let leaving = |id: &NodeId| {
        nodes
            .get(id)
            .is_some_and(|n| matches!(n.state, NodeState::Draining | NodeState::Drained))
    };
    // Can send a block now: not down or out (a down node is waited for, not read from).
    let reachable = |id: &NodeId| nodes.get(id).is_some_and(|n| !n.state.is_gone());
    let zone_of = |id: &NodeId| nodes.get(id).map(|n| n.zone.clone());
    let node_list: Vec<NodeRecord> = nodes.values().cloned().collect();
    // Replicas belong in distinct zones, as many as have a node up (at most three).
    let zones_wanted = REPLICAS.min(
        node_list
            .iter()
            .filter(|n| n.state == NodeState::Up)
            .map(|n| n.zone.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
    );

    let mut plan = RepairPlan {
        copies: Vec::new(),
        trimmed: vec![false; datasets.len()],
    };
    // Per node, once: whether its replicas count and stay, and its zone as a number, so a
    // healthy partition (the vast majority) is passed over without an allocation.
    let zone_numbers: BTreeMap<&str, usize> = nodes
        .values()
        .map(|n| n.zone.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, z)| (z, i))
        .collect();
    let steady: std::collections::HashMap<NodeId, usize> = nodes
        .values()
        .filter(|n| !lost(&n.id) && !leaving(&n.id))
        .map(|n| (n.id, zone_numbers[n.zone.as_str()]))
        .collect();
    let healthy = |holders: &[NodeId]| {
        if holders.len() != REPLICAS {
            return false;
        }
        let mut zones = [usize::MAX; REPLICAS];
        for (k, h) in holders.iter().enumerate() {
            match steady.get(h) {
                Some(zone) => zones[k] = *zone,
                None => return false,
            }
        }
        let distinct = (0..REPLICAS)
            .filter(|k| !zones[..*k].contains(&zones[*k]))
            .count();
        distinct >= zones_wanted
    };

    let mut needs = Vec::new();
    for (d, dataset) in datasets.iter_mut().enumerate() {
        for (index, p) in dataset.partitions.iter_mut().enumerate() {
            if healthy(&p.holders) {
                continue;
            }
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
                plan.trimmed[d] = true;
                continue;
            }
            needs.push(Need {
                reachable: live.iter().filter(|h| reachable(h)).count(),
                staying,
                crowded,
                dataset: d,
                partition: index,
            });
        }
    }
    // A block with one replica left goes before one with two; moves between zones go last.
    needs.sort_by_key(|n| (n.crowded, n.reachable, n.staying, n.dataset, n.partition));

    let capacity = STREAMS_PER_NODE
        * node_list
            .iter()
            .filter(|n| n.state == NodeState::Up)
            .count();
    let mut placer = Placer::new(&node_list, used, seed);
    let mut sending: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut receiving: BTreeMap<NodeId, usize> = BTreeMap::new();
    for need in needs {
        if plan.copies.len() >= capacity {
            break;
        }
        let dataset = &datasets[need.dataset];
        let p = &dataset.partitions[need.partition];
        let live: Vec<NodeId> = p.holders.iter().filter(|h| !lost(h)).copied().collect();
        // The least busy holder that can send; none free: the block waits for a later round.
        let mut sources: Vec<NodeId> = live.iter().filter(|h| reachable(h)).copied().collect();
        let Some(first) = sources
            .iter()
            .copied()
            .filter(|h| sending.get(h).copied().unwrap_or(0) < STREAMS_PER_NODE)
            .min_by_key(|h| sending.get(h).copied().unwrap_or(0))
        else {
            continue;
        };
        sources.retain(|h| *h != first);
        sources.insert(0, first);

        let zones: BTreeSet<String> = live
            .iter()
            .filter(|h| !leaving(h))
            .filter_map(zone_of)
            .collect();
        let saturated: BTreeSet<NodeId> = receiving
            .iter()
            .filter(|(_, n)| **n >= STREAMS_PER_NODE)
            .map(|(id, _)| *id)
            .collect();
        let exclude: BTreeSet<NodeId> = p
            .holders
            .iter()
            .copied()
            .chain(saturated.iter().copied())
            .collect();
        let target = match placer.pick(p.bytes, 1, &exclude, &zones) {
            Ok(target) => target[0],
            // Every free node is busy receiving: later.
            Err(_) if !saturated.is_empty() => continue,
            Err(e) => {
                warn!(dataset = %dataset.name, partition = need.partition, error = %e, "no node free to take a new replica");
                continue;
            }
        };
        let surplus = if need.crowded {
            if zone_of(&target).is_some_and(|z| zones.contains(&z)) {
                // No node in a missing zone is free now; give back what the pick promised.
                placer.release(target, p.bytes);
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
        *sending.entry(first).or_default() += 1;
        *receiving.entry(target).or_default() += 1;
        plan.copies.push(PlannedCopy {
            dataset: need.dataset,
            partition: need.partition,
            target,
            sources,
            live,
            surplus,
        });
    }
    plan
}

/// A partition's holders once `copy` is made: the target joins; holders that are leaving go
/// only once enough others hold the block; a crowded zone gives up its surplus replica.
pub fn holders_after(copy: &PlannedCopy, leaving: &dyn Fn(&NodeId) -> bool) -> Vec<NodeId> {
    let staying = copy.live.iter().filter(|h| !leaving(h)).count();
    let mut holders: Vec<NodeId> = copy.live.iter().copied().chain([copy.target]).collect();
    if staying + 1 >= REPLICAS {
        holders.retain(|h| !leaving(h));
    }
    if let Some(extra) = copy.surplus
        && holders.len() > REPLICAS
    {
        holders.retain(|h| *h != extra);
    }
    holders
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// One repair round; returns how many blocks were copied. Plans the round's copies
    /// ([`plan_repair`]), runs them concurrently, then records the new holders.
    pub async fn repair_once(&self) -> usize {
        if !self.meta.is_leader() {
            return 0;
        }
        // A round that found nothing to do finds nothing again until the state changes: skip
        // decoding every record while the applied index stands still.
        let idle_at = self
            .repair_idle_at
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.meta.read_applied(|index, _| index) == Some(idle_at) {
            return 0;
        }
        let (applied, nodes, found, undecodable, mut used) = self.meta.read_applied(|index, s| {
            let used = s.holdings.bytes_per_node();
            (
                index,
                s.nodes.clone(),
                datasets(s),
                undecodable_datasets(s),
                used,
            )
        });
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
                .is_none_or(|n| n.state == NodeState::Out && !planted)
        };
        let leaving = |id: &NodeId| {
            nodes
                .get(id)
                .is_some_and(|n| matches!(n.state, NodeState::Draining | NodeState::Drained))
        };
        let (raws, mut records): (Vec<Vec<u8>>, Vec<DatasetRecord>) = found.into_iter().unzip();
        self.mark_drained(&nodes, &used).await;
        let plan = plan_repair(
            &nodes,
            &mut records,
            &mut used,
            &lost,
            self.placement_seed(),
        );
        if plan.copies.is_empty() && !plan.trimmed.contains(&true) {
            if let Some(index) = applied {
                self.repair_idle_at
                    .store(index, std::sync::atomic::Ordering::Relaxed);
            }
            return 0;
        }
        let mut changed = plan.trimmed;

        let mut copies = tokio::task::JoinSet::new();
        for copy in plan.copies {
            let p = &records[copy.dataset].partitions[copy.partition];
            let request = Request::CopyBlock {
                hash: p.block,
                sources: copy
                    .sources
                    .iter()
                    .filter_map(|id| nodes.get(id).map(|n| n.addr.clone()))
                    .collect(),
            };
            let (transport, addr) = (self.transport.clone(), nodes[&copy.target].addr.clone());
            let deadline = copy_deadline(p.bytes);
            copies.spawn(async move {
                let answer = transport.call_within(&addr, request, deadline).await;
                (copy, answer)
            });
        }

        // Apply each finished copy: the new holder joins; leaving holders go only once
        // enough others hold the block.
        let mut copied = 0;
        while let Some(joined) = copies.join_next().await {
            let Ok((copy, answer)) = joined else {
                continue;
            };
            let dataset = &mut records[copy.dataset];
            let p = &mut dataset.partitions[copy.partition];
            let target = copy.target;
            match answer {
                Ok(Response::BlockStored { .. }) => {
                    info!(dataset = %dataset.name, partition = copy.partition, block = %p.block, to = target, "replica copied");
                    p.holders = holders_after(&copy, &leaving);
                    changed[copy.dataset] = true;
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
        for ((raw, dataset), changed) in raws.into_iter().zip(&records).zip(changed) {
            if changed {
                self.commit_holders(raw, dataset).await;
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
        self.repair_wake.notify_one();
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

#[cfg(test)]
mod tests {
    use tern_proto::{BlockHash, PartitionRecord};

    use super::*;

    fn cluster(up: u64, states: &[(NodeId, NodeState)]) -> BTreeMap<NodeId, NodeRecord> {
        (1..=up)
            .map(|id| {
                let state = states
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map_or(NodeState::Up, |(_, st)| *st);
                let record = NodeRecord {
                    id,
                    addr: format!("127.0.0.1:{}", 7400 + id),
                    zone: String::new(),
                    capacity_bytes: 1 << 40,
                    state,
                };
                (id, record)
            })
            .collect()
    }

    fn dataset(holders: &[[NodeId; 3]]) -> DatasetRecord {
        DatasetRecord {
            name: "d".into(),
            version: 1,
            format: "bytes".into(),
            schema: String::new(),
            partitions: holders
                .iter()
                .enumerate()
                .map(|(i, h)| PartitionRecord {
                    block: BlockHash::of(&i.to_le_bytes()),
                    bytes: 1 << 20,
                    rows: 0,
                    holders: h.to_vec(),
                })
                .collect(),
            created_ms: 0,
            bounds: Vec::new(),
        }
    }

    fn plan(nodes: &BTreeMap<NodeId, NodeRecord>, datasets: &mut [DatasetRecord]) -> RepairPlan {
        let mut used = bytes_per_node(datasets.iter());
        let lost = |id: &NodeId| nodes.get(id).is_none_or(|n| n.state == NodeState::Out);
        plan_repair(nodes, datasets, &mut used, &lost, 7)
    }

    #[test]
    fn a_down_node_is_waited_for_and_an_out_node_is_copied_from_elsewhere() {
        let mut datasets = vec![dataset(&[[1, 2, 3], [2, 3, 4]])];
        let down = cluster(5, &[(1, NodeState::Down)]);
        let nothing = plan(&down, &mut datasets);
        assert!(nothing.copies.is_empty(), "{:?}", nothing.copies);
        assert_eq!(nothing.trimmed, vec![false]);

        let out = cluster(5, &[(1, NodeState::Out)]);
        let copy = plan(&out, &mut datasets);
        assert_eq!(copy.copies.len(), 1, "{:?}", copy.copies);
        let c = &copy.copies[0];
        assert_eq!((c.partition, c.live.clone()), (0, vec![2, 3]));
        assert!(!datasets[0].partitions[0].holders.contains(&c.target));
        assert!(c.target != 1 && c.sources.iter().all(|s| [2, 3].contains(s)));
    }

    #[test]
    fn blocks_with_one_live_replica_are_copied_first() {
        // Nodes 1 and 2 are out: partitions on both have one replica left, the others two.
        // With 4 nodes up a round makes at most 8 copies, fewer than the 12 blocks need.
        let mut holders = Vec::new();
        for i in 0..6u64 {
            holders.push([1, 2, 3 + i % 4]);
            holders.push([1, 3 + i % 4, 3 + (i + 1) % 4]);
        }
        let nodes = cluster(6, &[(1, NodeState::Out), (2, NodeState::Out)]);
        let mut datasets = vec![dataset(&holders)];
        let lone: Vec<usize> = (0..holders.len()).step_by(2).collect();
        let plan = plan(&nodes, &mut datasets);
        assert!(!plan.copies.is_empty());
        let first_two_live = plan
            .copies
            .iter()
            .position(|c| c.live.len() == 2)
            .unwrap_or(plan.copies.len());
        assert!(
            plan.copies[..first_two_live]
                .iter()
                .all(|c| lone.contains(&c.partition)),
            "{:?}",
            plan.copies
        );
        assert!(
            plan.copies[first_two_live..]
                .iter()
                .all(|c| c.live.len() == 2),
            "every block with one live replica is planned before any with two: {:?}",
            plan.copies
        );
    }

    #[test]
    fn every_live_node_takes_part_and_none_exceeds_its_streams() {
        // 20 nodes; node 1 is out and held 200 blocks, spread over the others.
        let holders: Vec<[NodeId; 3]> = (0..200u64)
            .map(|i| [1, 2 + i % 19, 2 + (i + 7) % 19])
            .collect();
        let nodes = cluster(20, &[(1, NodeState::Out)]);
        let mut datasets = vec![dataset(&holders)];
        let plan = plan(&nodes, &mut datasets);
        let (mut sending, mut receiving) = (BTreeMap::new(), BTreeMap::new());
        for c in &plan.copies {
            *sending.entry(c.sources[0]).or_insert(0usize) += 1;
            *receiving.entry(c.target).or_insert(0usize) += 1;
            assert!(c.sources[0] != 1 && c.target != 1);
        }
        assert!(
            sending
                .values()
                .chain(receiving.values())
                .all(|n| *n <= STREAMS_PER_NODE)
        );
        assert!(
            plan.copies.len() >= 19 * STREAMS_PER_NODE * 3 / 4,
            "a round copies with most of the cluster, not a fixed few: {} copies",
            plan.copies.len()
        );
        assert!(receiving.len() >= 15, "{} targets", receiving.len());
    }
}
