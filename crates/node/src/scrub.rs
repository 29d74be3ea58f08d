//! Scrub: re-hash every block this node holds, at a bounded rate in the background and all at
//! once on request (`tern scrub --now`). A block whose bytes no longer match its name is
//! dropped and replaced from another holder; a block the catalog says this node holds but it
//! lacks (lost with its disk, say) is fetched again. The node stays a holder throughout, so the
//! catalog does not change.

use std::collections::BTreeMap;

use tern_proto::{BlockHash, Clock, NodeId, ScrubReport, Transport};
use tracing::{info, warn};

use crate::NodeService;
use crate::blocks::on_store;

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// Which blocks the catalog says this node holds, with the other holders' addresses.
    pub(crate) fn my_blocks(&self) -> BTreeMap<BlockHash, Vec<String>> {
        self.my_blocks_checked().0
    }

    /// The same, and the keys of dataset records this node cannot decode (written by a
    /// newer version, say): the blocks those list are missing from the map, so whoever would
    /// delete what the map lacks must stop when there are any.
    pub(crate) fn my_blocks_checked(&self) -> (BTreeMap<BlockHash, Vec<String>>, Vec<String>) {
        let me = self.id();
        self.meta.read_local(|s| {
            let addr = |id: &NodeId| s.nodes.get(id).map(|n| n.addr.clone());
            let mut mine = BTreeMap::new();
            for (_, dataset) in crate::repair::datasets(s) {
                for p in &dataset.partitions {
                    if p.holders.contains(&me) {
                        let others = p
                            .holders
                            .iter()
                            .filter(|h| **h != me)
                            .filter_map(addr)
                            .collect();
                        mine.insert(p.block, others);
                    }
                }
            }
            (mine, crate::repair::undecodable_datasets(s))
        })
    }

    /// Fetch a healthy copy of `hash` from `sources`; it replaces a damaged copy in place
    /// (the store rewrites a block whose stored bytes no longer match), so the bad copy is
    /// gone only once a good one is durable.
    async fn restore(&self, hash: BlockHash, sources: &[String]) -> bool {
        for source in sources {
            if let Ok(bytes) = tern_proto::fetch_block(self.transport.as_ref(), source, &hash).await
            {
                if on_store(&self.blocks, move |b| b.put_verified(&hash, &bytes, None))
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
        }
        false
    }

    /// Check (and fix) one block; updates `report`. A copy is replaced only when its bytes
    /// are known bad (they hash to another name, or the disk says they are damaged), and only
    /// by a healthy copy fetched first; an I/O error that may pass leaves it alone.
    async fn scrub_block(&self, hash: BlockHash, sources: &[String], report: &mut ScrubReport) {
        let held = on_store(&self.blocks, move |b| b.contains(&hash)).await;
        match held {
            Ok(true) => {
                report.checked += 1;
                match on_store(&self.blocks, move |b| b.verify(&hash)).await {
                    Ok(true) => return,
                    Ok(false) => {
                        warn!(%hash, "scrub: corrupt block");
                        report.corrupt += 1;
                    }
                    Err(e) => {
                        warn!(%hash, error = %e, "scrub: block unreadable now; kept, checked again later");
                        report.unreadable += 1;
                        return;
                    }
                }
            }
            Ok(false) => {
                warn!(%hash, "scrub: block missing");
                report.missing += 1;
            }
            Err(e) => {
                warn!(%hash, error = %e, "scrub: block index unreadable now");
                report.unreadable += 1;
                return;
            }
        }
        if self.restore(hash, sources).await {
            info!(%hash, "scrub: block restored from another holder");
            report.repaired += 1;
        }
    }

    /// One full pass over this node's blocks.
    pub async fn scrub_now(&self) -> ScrubReport {
        let mut report = ScrubReport {
            node: self.id(),
            ..Default::default()
        };
        let mine = self.my_blocks();
        let stored = on_store(&self.blocks, |b| b.hashes())
            .await
            .unwrap_or_default();
        for hash in &stored {
            if !mine.contains_key(hash) {
                // Not referenced by any dataset (yet): still check it. There is nothing to
                // restore it from, and a put in progress may need it, so only a copy known bad
                // is dropped (the holder is then reported missing and fetched again).
                report.checked += 1;
                let hash = *hash;
                match on_store(&self.blocks, move |b| b.verify(&hash)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        report.corrupt += 1;
                        let _ = on_store(&self.blocks, move |b| b.delete(&hash)).await;
                    }
                    Err(_) => report.unreadable += 1,
                }
            }
        }
        for (hash, sources) in &mine {
            self.scrub_block(*hash, sources, &mut report).await;
        }
        report
    }

    /// The background scrub: one referenced block per call, round robin.
    pub async fn scrub_step(&self, cursor: &std::sync::atomic::AtomicUsize) {
        let mut mine: Vec<(BlockHash, Vec<String>)> = self.my_blocks().into_iter().collect();
        if mine.is_empty() {
            return;
        }
        mine.sort_by_key(|(h, _)| *h);
        let turn = cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (hash, sources) = &mine[turn % mine.len()];
        let mut report = ScrubReport::default();
        self.scrub_block(*hash, sources, &mut report).await;
    }
}
