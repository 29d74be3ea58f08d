//! The software of a simulated node host: the real `NodeService` with its Raft metadata,
//! block store, loops and request handling, wired to the simulator's transport, clock and
//! disks instead of QUIC, the system clock and RocksDB. turmoil runs it again from the top
//! after a crash; the disks are the only thing that carries over.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tern_meta::{Meta, MetaOptions};
use tern_node::{ComputeSettings, NodeService, NodeTimings, join_or_bootstrap, spawn_loops};
use tern_proto::{NodeId, NodeRecord, NodeState};
use tern_store::BlockStore;

use crate::net::{PORT, SimTransport};
use crate::world::{PlantedBug, SimClock, World};

pub fn host_name(id: NodeId) -> String {
    format!("node{id}")
}

pub fn node_addr(id: NodeId) -> String {
    format!("{}:{PORT}", host_name(id))
}

/// Timings under simulation: production's, with a snapshot every few hundred entries so that
/// a node back from a long outage catches up from a snapshot.
pub fn timings() -> NodeTimings {
    NodeTimings {
        scrub_interval_ms: 500,
        gc_grace_ms: 60_000,
        // Short, so forgetting write ids runs within a simulated run too.
        write_id_expiry_ms: 30_000,
        // Down at 10 s, out at 20 s: nodes that crash and restart within the faults' periods
        // come back down (nothing copied), others are out and repaired.
        out_after_ms: 20_000,
        ..NodeTimings::default()
    }
}

pub const SNAPSHOT_AFTER: u64 = 30;

type Software = Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// What turmoil runs on host `id` (again after each restart).
pub fn node_software(world: Arc<World>, id: NodeId) -> impl Fn() -> Software {
    move || {
        let world = world.clone();
        Box::pin(async move { run_node(world, id).await })
    }
}

async fn run_node(world: Arc<World>, id: NodeId) -> turmoil::Result {
    let incarnation = world.next_incarnation(id);
    if id > world.initial_nodes && incarnation == 1 {
        // The late node: it joins a cluster that has been running (and snapshotting) a while.
        tokio::time::sleep(world.join_at).await;
    }
    world.event(format!("node {id} starts (incarnation {incarnation})"));
    let transport =
        SimTransport::bind(world.clone(), incarnation, tern_proto::Caller::Node(id)).await?;
    let timings = timings();
    let options = MetaOptions {
        heartbeat_interval: Duration::from_millis(timings.raft_heartbeat_ms),
        election_timeout: (
            Duration::from_millis(timings.election_min_ms),
            Duration::from_millis(timings.election_max_ms),
        ),
        max_voters: 3,
        snapshot_after: SNAPSHOT_AFTER,
        log_kept_after_snapshot: 10,
    };
    let disks = &world.disks[&id];
    let shared = Arc::new(transport.clone());
    let (mut log, state) = tern_meta::stores_on(disks.meta.clone())?;
    if world.bug == Some(PlantedBug::VoteBeforeSync) {
        log.plant_bug_vote_before_sync();
    }
    let meta = Meta::start(id, log, state, shared.clone(), &options).await?;
    let mut blocks = BlockStore::on(disks.blocks.clone())?;
    match world.bug {
        Some(PlantedBug::AckBeforeSync) => blocks.plant_bug_ack_before_sync(),
        Some(PlantedBug::SkipReadHashCheck) => blocks.plant_bug_skip_read_hash_check(),
        _ => {}
    }
    let record = NodeRecord {
        id,
        addr: node_addr(id),
        zone: format!("zone-{}", (id - 1) % 3),
        capacity_bytes: 1 << 30,
        state: NodeState::Up,
    };
    let compute = ComputeSettings {
        slots: 2,
        task_memory_bytes: 64 << 20,
        query_memory_bytes: 4 * (64 << 20),
        query_timeout: Duration::from_secs(600),
        shuffle_memory_bytes: 64 << 20,
        answer_memory_bytes: 64 << 20,
        cache_memory_bytes: 16 << 20,
        task_delay_ms: 0,
        // Joins planned as for large tables: decided as each query runs.
        sized_table_rows: Some(0),
        data_dir: std::env::temp_dir().join(format!("tern-sim-{}-{id}", world.seed)),
        python: None,
        python_worker_memory_bytes: 0,
    };
    let mut service = NodeService::new(
        record,
        meta,
        shared,
        Arc::new(SimClock::new(world.drift[&id])),
        timings,
        3,
        Arc::new(blocks),
        compute,
    );
    if world.bug == Some(PlantedBug::KeepReleasedOutputs) {
        service.plant_bug_keep_released_outputs();
    }
    if world.bug == Some(PlantedBug::CountDownNodeAsHolder) {
        service.plant_bug_count_down_nodes_as_holders();
    }
    let service = Arc::new(service);
    tokio::spawn(transport.clone().serve(service.clone()));
    // Node 1 starts the cluster; the others join through any node already in it.
    let peers: Vec<String> = if id == 1 {
        Vec::new()
    } else {
        (1..id).map(node_addr).collect()
    };
    join_or_bootstrap(&service, &peers).await?;
    world.set_running(id, Some(service.clone()));
    let _loops = spawn_loops(&service);
    std::future::pending::<()>().await;
    Ok(())
}
