//! After the faults stop, the cluster heals: every block of every dataset has exactly three
//! holders, distinct and up, in as many zones as are up (at most three). (The workload also
//! requires each holder to serve the block and every table query to answer, and reports
//! [`super::LIVENESS`] when that does not happen in time.)

use std::collections::{BTreeMap, BTreeSet};

use tern_meta::placement::REPLICAS;
use tern_proto::{DatasetRecord, NodeId};

/// `Err` says which block is not yet where it belongs.
pub fn check_replicas(
    record: &DatasetRecord,
    up: &[NodeId],
    zone_of: &BTreeMap<NodeId, String>,
) -> Result<(), String> {
    let zones_up: BTreeSet<&String> = up.iter().filter_map(|id| zone_of.get(id)).collect();
    for p in &record.partitions {
        let distinct: BTreeSet<NodeId> = p.holders.iter().copied().collect();
        if p.holders.len() != REPLICAS
            || distinct.len() != p.holders.len()
            || !p.holders.iter().all(|h| up.contains(h))
        {
            return Err(format!(
                "{}: block {} held by {:?} (up: {up:?})",
                record.name, p.block, p.holders
            ));
        }
        let zones: BTreeSet<&String> = p.holders.iter().filter_map(|h| zone_of.get(h)).collect();
        if zones.len() < REPLICAS.min(zones_up.len()) {
            return Err(format!(
                "{}: block {} held by {:?} in zones {zones:?}, though {} zones are up",
                record.name,
                p.block,
                p.holders,
                zones_up.len()
            ));
        }
    }
    Ok(())
}
