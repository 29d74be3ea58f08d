//! Garbage collection: deleting blocks nothing needs any more.
//!
//! A block on this node is kept while a dataset in the catalog lists this node among its
//! holders, or while the put it arrived for (its claim) still has a live lease. Anything else
//! (blocks of a put that died half way, of a removed or replaced dataset, an extra replica left
//! by repair or drain after its node came back) is deleted once it has been unneeded for the
//! whole grace period, as this node observed it: readers of a replaced version finish first,
//! and a catalog entry that is still on its way (a repair recording its new holder) arrives
//! first. Each node decides for its own blocks from its own copy of the catalog; the leader
//! alone expires the leases of writers that stopped renewing, and the ids of idempotent writes
//! (`tern_proto::write_once`) once no retry of them can come.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tern_meta::Command;
use tern_proto::{BlockHash, CatalogOp, Clock, PUTS_TABLE, Transport, WRITES_TABLE};
use tracing::{debug, info, warn};

use crate::NodeService;
use crate::blocks::on_store;

/// What this node remembers between collection rounds (soft state: a restart only delays).
#[derive(Default)]
pub(crate) struct GcMemory {
    /// When each unneeded block was first seen unneeded.
    unneeded_since: BTreeMap<BlockHash, Instant>,
    /// On the leader: each lease's (and remembered write id's) last value and when it was
    /// first seen with it, by (table, key).
    leases: BTreeMap<(String, String), (Vec<u8>, Instant)>,
    /// Why collection refuses to run, while it does (shown by `tern status`).
    pub(crate) stopped: Option<String>,
}

/// How long a block a repair copies here is kept before its grace period even starts: the
/// repair round that asked for it records the new holder only once all its copies are done
/// (each within its deadline, at most `repair::copy_deadline` of the largest block), so a quick
/// copy may wait that long for its catalog entry. A grace period counted from the copy alone
/// let a short grace (the tests' 1.5 s) collect a copy the catalog then listed: a replica lost
/// while repair reported three.
pub(crate) const COPY_HOLD: Duration = Duration::from_secs(120);

impl GcMemory {
    /// `hash` is wanted again (a repair copied or confirmed it here, at `now`): it is kept for
    /// [`COPY_HOLD`], then its grace period starts over if nothing lists it by then.
    pub(crate) fn restart_grace(&mut self, hash: &BlockHash, now: Instant) {
        self.unneeded_since.insert(*hash, now + COPY_HOLD);
    }
}

/// How often collection runs for a given grace period.
pub(crate) fn gc_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// One collection round; returns how many blocks were deleted.
    pub async fn collect_garbage(&self) -> usize {
        // Judge only from a catalog that is current: a node that lost its leader, or has not
        // applied what it has received, may not know the datasets and leases that need its
        // blocks. (The grace period covers the lag of a node that is merely a little behind.)
        let raft = self.meta.local_metrics();
        if raft.leader.is_none() || raft.applied_index < raft.last_log_index {
            return 0;
        }
        if self.meta.is_leader() {
            let t = &self.timings;
            self.expire_unchanged(PUTS_TABLE, Duration::from_millis(t.put_lease_expiry_ms))
                .await;
            self.expire_unchanged(WRITES_TABLE, Duration::from_millis(t.write_id_expiry_ms))
                .await;
        }
        let grace = Duration::from_millis(self.timings.gc_grace_ms);
        // Fail closed: a record this node cannot read (a newer version's layout, in a rolling
        // upgrade) may list blocks held here, and judging without it would delete them all.
        let (mine, undecodable) = self.my_blocks_checked();
        if !undecodable.is_empty() {
            let reason = format!(
                "garbage collection stopped (and, on the leader, repair and drain): {} dataset record(s) \
                 do not decode on this node ({}{}); written by a newer tern? no block is deleted \
                 until every record reads",
                undecodable.len(),
                undecodable
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if undecodable.len() > 3 { ", …" } else { "" }
            );
            warn!("{reason}");
            let mut memory = self.gc.lock().unwrap_or_else(|p| p.into_inner());
            // Every grace period starts over once collection resumes.
            memory.unneeded_since.clear();
            memory.stopped = Some(reason);
            return 0;
        }
        self.gc.lock().unwrap_or_else(|p| p.into_inner()).stopped = None;
        let live_puts: BTreeSet<String> = self
            .meta
            .read_local(|s| s.catalog_list(PUTS_TABLE, "", usize::MAX))
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        // Every block held here that no dataset lists this node for, with its claims.
        let unlisted: BTreeSet<BlockHash> = mine.keys().copied().collect();
        let found = on_store(&self.blocks, move |b| {
            let mut out = Vec::new();
            for hash in b.hashes()? {
                if !unlisted.contains(&hash) {
                    out.push((hash, b.claims(&hash)?));
                }
            }
            Ok(out)
        })
        .await;
        let Ok(unlisted) = found else {
            return 0;
        };
        let now = self.clock.now();
        let mut due = Vec::new();
        {
            let mut memory = self.gc.lock().unwrap_or_else(|p| p.into_inner());
            let candidates: BTreeSet<BlockHash> = unlisted.iter().map(|(h, _)| *h).collect();
            memory.unneeded_since.retain(|h, _| candidates.contains(h));
            for (hash, claims) in unlisted {
                if claims.iter().any(|p| live_puts.contains(&p.key())) {
                    memory.unneeded_since.remove(&hash);
                    continue;
                }
                let since = *memory.unneeded_since.entry(hash).or_insert(now);
                // `since` is ahead of `now` while a repair copy is held.
                if now
                    .checked_duration_since(since)
                    .is_some_and(|d| d >= grace)
                {
                    due.push(hash);
                }
            }
        }
        let mut deleted = 0;
        for hash in due {
            match on_store(&self.blocks, move |b| b.delete(&hash)).await {
                Ok(()) => {
                    info!(%hash, "unreferenced block collected");
                    deleted += 1;
                    self.gc
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .unneeded_since
                        .remove(&hash);
                }
                Err(e) => warn!(%hash, error = %e, "could not delete an unreferenced block"),
            }
        }
        self.blocks_collected
            .fetch_add(deleted as u64, std::sync::atomic::Ordering::Relaxed);
        match on_store(&self.blocks, |b| b.reclaim_space()).await {
            Ok(0) => {}
            Ok(bytes) => info!(bytes, "space of collected blocks reclaimed"),
            Err(e) => warn!(error = %e, "could not reclaim the space of collected blocks"),
        }
        deleted
    }

    /// On the leader: delete entries of `table` whose value has not changed for `expiry`: put
    /// leases whose writer stopped renewing, write ids old enough that no retry can come. Each
    /// goes under a precondition, so a renewal racing with the expiry wins.
    async fn expire_unchanged(&self, table: &str, expiry: Duration) {
        let entries = self
            .meta
            .read_local(|s| s.catalog_list(table, "", usize::MAX));
        let now = self.clock.now();
        let mut expired = Vec::new();
        {
            let mut memory = self.gc.lock().unwrap_or_else(|p| p.into_inner());
            let keys: BTreeSet<&String> = entries.iter().map(|(k, _)| k).collect();
            memory
                .leases
                .retain(|(t, k), _| t != table || keys.contains(k));
            for (key, value) in &entries {
                let seen = memory
                    .leases
                    .entry((table.to_string(), key.clone()))
                    .or_insert_with(|| (value.clone(), now));
                if seen.0 != *value {
                    *seen = (value.clone(), now);
                } else if now.saturating_duration_since(seen.1) >= expiry {
                    expired.push((key.clone(), value.clone()));
                }
            }
        }
        for (key, value) in expired {
            let ops = vec![
                CatalogOp::Expect {
                    table: table.into(),
                    key: key.clone(),
                    value: Some(value),
                },
                CatalogOp::Delete {
                    table: table.into(),
                    key: key.clone(),
                },
            ];
            match self.meta.write(Command::Catalog(ops)).await {
                Ok(_) if table == PUTS_TABLE => {
                    info!(put = %key, "put lease expired: its writer stopped renewing")
                }
                Ok(_) => debug!(table, %key, "expired"),
                Err(e) => warn!(table, %key, error = %e, "could not expire a catalog entry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tern_meta::{Meta, MetaOptions};
    use tern_net::{ClusterFiles, QuicTransport, TlsIdentity, TransportOptions};
    use tern_proto::{DATASETS_TABLE, NodeRecord, NodeState, SystemClock};
    use tern_store::BlockStore;

    use super::*;
    use crate::{ComputeSettings, NodeService, NodeTimings};

    /// A one-node cluster in this process, collecting garbage without a grace period.
    async fn one_node(dir: &std::path::Path) -> NodeService<QuicTransport, SystemClock> {
        let files = ClusterFiles::new(dir.join("certs"));
        files.init(1).unwrap();
        let identity = TlsIdentity::load(&files.node(1)).unwrap();
        let transport = QuicTransport::server(
            ([127, 0, 0, 1], 0).into(),
            &identity,
            TransportOptions::default(),
        )
        .unwrap();
        let addr = transport.local_addr().unwrap().to_string();
        let meta = Meta::open(
            1,
            &dir.join("meta"),
            transport.clone(),
            &MetaOptions::default(),
        )
        .await
        .unwrap();
        meta.bootstrap(&addr).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !meta.is_leader() {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let record = NodeRecord {
            id: 1,
            addr,
            zone: String::new(),
            capacity_bytes: 1 << 30,
            state: NodeState::Up,
        };
        meta.write(Command::RegisterNode(record.clone()))
            .await
            .unwrap();
        let compute = ComputeSettings {
            slots: 1,
            task_memory_bytes: 64 << 20,
            query_memory_bytes: 128 << 20,
            query_timeout: Duration::from_secs(60),
            shuffle_memory_bytes: 64 << 20,
            answer_memory_bytes: 64 << 20,
            cache_memory_bytes: 0,
            task_delay_ms: 0,
            sized_table_rows: None,
            data_dir: dir.to_path_buf(),
            python: None,
            python_worker_memory_bytes: 0,
        };
        let timings = NodeTimings {
            gc_grace_ms: 0,
            ..NodeTimings::default()
        };
        let blocks = Arc::new(BlockStore::open(&dir.join("blocks")).unwrap());
        NodeService::new(
            record,
            meta,
            transport,
            Arc::new(SystemClock),
            timings,
            3,
            blocks,
            compute,
        )
    }

    /// A block a repair copied here is kept while the repair's catalog entry may still be on
    /// its way, whatever the grace period.
    #[tokio::test]
    async fn a_repair_copy_is_held_until_its_holder_entry_can_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let node = one_node(dir.path()).await;
        let copied = node.blocks.put(b"a block a repair copied here").unwrap();
        let unneeded = node.blocks.put(b"a block nothing wants").unwrap();
        let now = node.clock.now();
        node.gc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restart_grace(&copied, now);
        let mut collected = 0;
        for _ in 0..3 {
            collected += node.collect_garbage().await;
        }
        assert_eq!(collected, 1);
        assert!(node.blocks.contains(&copied).unwrap());
        assert!(!node.blocks.contains(&unneeded).unwrap());
    }

    /// A dataset record this version cannot decode (as a newer version may write in a
    /// rolling upgrade) stops collection, which says why; nothing is deleted until every
    /// record reads again.
    #[tokio::test]
    async fn collection_stops_while_a_record_does_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let node = one_node(dir.path()).await;
        let unneeded = node.blocks.put(b"a block nothing lists").unwrap();
        let future = CatalogOp::Put {
            table: DATASETS_TABLE.into(),
            key: "from-the-future".into(),
            value: vec![0xff; 40],
        };
        node.meta
            .write(Command::Catalog(vec![future]))
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(node.collect_garbage().await, 0);
        }
        assert!(node.blocks.contains(&unneeded).unwrap());
        let stopped = node.local_metrics().health.gc_stopped.unwrap_or_default();
        assert!(
            stopped.contains("from-the-future") && stopped.contains("do not decode"),
            "{stopped}"
        );

        let gone = CatalogOp::Delete {
            table: DATASETS_TABLE.into(),
            key: "from-the-future".into(),
        };
        node.meta.write(Command::Catalog(vec![gone])).await.unwrap();
        // The grace period starts over when collection resumes: noted once, collected next.
        let mut collected = 0;
        for _ in 0..3 {
            collected += node.collect_garbage().await;
        }
        assert_eq!(collected, 1);
        assert!(!node.blocks.contains(&unneeded).unwrap());
        assert_eq!(node.local_metrics().health.gc_stopped, None);
    }
}
