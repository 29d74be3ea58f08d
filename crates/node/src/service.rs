//! [`NodeService`]: what a node answers, and the two loops that keep membership honest
//! (heartbeats to the leader; on the leader, marking silent nodes suspect, down and out).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_meta::placement::{Placer, REPLICAS};
use tern_meta::{Command, Meta, MetaError};
use tern_proto::{
    Caller, Clock, ClusterStatus, ErrorKind, NodeId, NodeRecord, NodeState, NodeStatus, Request,
    Response, Role, Transport,
};
use tern_store::BlockStore;
use tracing::{debug, info, warn};

use crate::NodeTimings;

/// Memory for blocks being received at once (two of the largest blocks).
const RECEIVE_BUDGET_BYTES: u64 = 2 * tern_proto::MAX_BLOCK_BYTES;

/// How long the leader waits for each node's metrics when building a status: short, so
/// `tern status` answers within a second with nodes down (a node slower than this shows as
/// unreachable, which it nearly is).
const STATUS_FANOUT_TIMEOUT: Duration = Duration::from_millis(600);

pub struct NodeService<T: Transport, C: Clock> {
    pub(crate) record: NodeRecord,
    pub(crate) meta: Meta,
    pub(crate) blocks: Arc<BlockStore>,
    pub(crate) blocks_served: std::sync::atomic::AtomicU64,
    pub(crate) blocks_collected: std::sync::atomic::AtomicU64,
    pub(crate) gc: Mutex<crate::gc::GcMemory>,
    /// Serial numbers of revoked certificates, kept current from the catalog (shared with
    /// the QUIC endpoint, which refuses them at the handshake).
    pub(crate) revocations: tern_net::Revocations,
    /// Memory for blocks being received, shared by every writer.
    pub(crate) receiving: crate::blocks::ReceiveBudget,
    /// Paces repair and drain copies into this node.
    pub(crate) copy_pace: crate::repair::Pace,
    /// Tasks this node runs at once (its cores by default), and the queue for them.
    pub(crate) slot_count: usize,
    pub(crate) task_slots: std::sync::Arc<crate::slots::FairSlots>,
    /// DataFusion's functions, gathered once, for the contexts tasks run in.
    pub(crate) functions: tern_exec::Functions,
    pub(crate) compute: crate::ComputeSettings,
    /// Worker processes for users' functions (Python), started on demand.
    pub(crate) workers: Arc<tern_workers::WorkerPool>,
    /// Memory all query work on this node shares (every task's pool draws from it).
    pub(crate) query_memory: Arc<tern_exec::NodeMemory>,
    /// Decoded columns of this node's blocks that scans read lately.
    pub(crate) column_cache: Arc<tern_exec::ColumnCache>,
    /// Shuffle outputs of tasks this node ran, until their job ends.
    pub(crate) shuffles: Arc<crate::shuffle::ShuffleStore>,
    /// Task batches running here, by job, so a released job's are stopped.
    pub(crate) running_jobs: crate::jobs::RunningJobs,
    /// Queries each client runs on this coordinator now (bounded per client).
    pub(crate) client_jobs: crate::jobs::ClientJobs,
    /// Queries and graphs this node coordinates, and those it ended lately (`tern jobs`).
    pub(crate) coordinated: crate::jobs::CoordinatedJobs,
    /// Jobs this node coordinates, for their ids.
    pub(crate) jobs_started: std::sync::atomic::AtomicU64,
    pub(crate) tasks_running: std::sync::atomic::AtomicU64,
    /// Where query work runs (see `RunningNode`); `None`: on the caller's runtime.
    pub(crate) compute_runtime: Option<tokio::runtime::Handle>,
    pub(crate) tasks_run: std::sync::atomic::AtomicU64,
    /// Tasks this node, as a coordinator, has placed on each node.
    pub(crate) board: tern_sched::LoadBoard,
    pub(crate) transport: Arc<T>,
    pub(crate) clock: Arc<C>,
    pub(crate) timings: NodeTimings,
    max_voters: usize,
    /// A bug planted for the simulator to find (repair counts down nodes as holders); never
    /// set outside its tests.
    pub(crate) planted_count_down_as_holder: bool,
    /// Placements and repair rounds made by this node: mixed into their seeds, so writers
    /// placing at once draw differently (see `tern_meta::placement`).
    pub(crate) placements: std::sync::atomic::AtomicU64,
    /// The applied index at which a repair round last found nothing to do (`u64::MAX`: none).
    pub(crate) repair_idle_at: std::sync::atomic::AtomicU64,
    /// Wakes the repair loop before its interval: a node was marked out or a drain started.
    pub(crate) repair_wake: tokio::sync::Notify,
    /// A bug planted for the simulator to find (a released job's kept outputs stay); never
    /// set outside its tests.
    planted_keep_released: bool,
    /// Panics of background loops so far (each loop was restarted after its panic).
    pub(crate) loop_panics: Arc<Mutex<tern_proto::NodeHealth>>,
    /// Leader-only soft state: when each node was last heard from.
    last_seen: Mutex<std::collections::BTreeMap<NodeId, Instant>>,
    /// The term in which this node last became leader, and when it noticed.
    leading_since: Mutex<Option<(u64, Instant)>>,
}

fn meta_error(e: MetaError) -> Response {
    match e {
        MetaError::NoLeader | MetaError::NotLeader { .. } => Response::error(
            ErrorKind::NoLeader,
            "no leader is elected right now; retry shortly",
        ),
        MetaError::Rejected(reason) => Response::error(ErrorKind::Invalid, reason),
        e @ MetaError::PreconditionFailed { .. } => {
            Response::error(ErrorKind::Conflict, e.to_string())
        }
        e @ MetaError::Impostor { .. } => Response::error(ErrorKind::Forbidden, e.to_string()),
        other => Response::error(ErrorKind::Unavailable, other.to_string()),
    }
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    pub fn new(
        record: NodeRecord,
        meta: Meta,
        transport: Arc<T>,
        clock: Arc<C>,
        timings: NodeTimings,
        max_voters: usize,
        blocks: Arc<BlockStore>,
        compute: crate::ComputeSettings,
    ) -> Self {
        let task_slots = compute.slots;
        Self {
            record,
            meta,
            blocks,
            blocks_served: Default::default(),
            blocks_collected: Default::default(),
            gc: Mutex::default(),
            copy_pace: crate::repair::Pace::new(timings.copy_bytes_per_s),
            receiving: crate::blocks::ReceiveBudget::new(RECEIVE_BUDGET_BYTES),
            revocations: Default::default(),
            slot_count: task_slots,
            task_slots: crate::slots::FairSlots::new(task_slots),
            functions: tern_exec::Functions::default(),
            board: tern_sched::LoadBoard::new(task_slots),
            shuffles: Arc::new(crate::shuffle::ShuffleStore::new(
                &compute.data_dir.join("shuffle"),
                compute.shuffle_memory_bytes,
            )),
            column_cache: Arc::new(tern_exec::ColumnCache::new(compute.cache_memory_bytes)),
            query_memory: {
                let memory = tern_exec::NodeMemory::new(
                    usize::try_from(compute.query_memory_bytes).unwrap_or(usize::MAX),
                );
                tern_exec::count_calls_against(memory.clone());
                memory
            },
            workers: Arc::new(tern_workers::WorkerPool::new(tern_workers::WorkerConfig {
                python: compute.python.clone(),
                keep_idle: task_slots,
                task_timeout: compute.query_timeout,
                memory_limit: compute.python_worker_memory_bytes,
            })),
            compute,
            jobs_started: Default::default(),
            client_jobs: Default::default(),
            coordinated: Default::default(),
            running_jobs: Default::default(),
            tasks_running: Default::default(),
            compute_runtime: None,
            tasks_run: Default::default(),
            transport,
            clock,
            timings,
            max_voters,
            last_seen: Mutex::default(),
            loop_panics: Arc::default(),
            leading_since: Mutex::default(),
            planted_count_down_as_holder: false,
            placements: Default::default(),
            repair_idle_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            repair_wake: tokio::sync::Notify::new(),
            planted_keep_released: false,
        }
    }

    /// Plant a known bug: repair counts down nodes as replica holders. Only the simulator's
    /// tests call this, to show the simulator catches it.
    #[doc(hidden)]
    pub fn plant_bug_count_down_nodes_as_holders(&mut self) {
        self.planted_count_down_as_holder = true;
    }

    /// Plant a known bug: a released job's kept outputs are not dropped. Only the
    /// simulator's tests call this, to show the simulator catches it.
    #[doc(hidden)]
    pub fn plant_bug_keep_released_outputs(&mut self) {
        self.planted_keep_released = true;
    }

    /// Check certificates against this list (the endpoint's own), kept current from the
    /// catalog's revoked table.
    pub fn with_revocations(mut self, revocations: tern_net::Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// Run query work on `runtime` rather than on the one that answers requests.
    pub fn with_compute_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.compute_runtime = Some(runtime);
        self
    }

    pub fn id(&self) -> NodeId {
        self.record.id
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Answer one request from `caller` (whose access was checked). Requests only the leader
    /// can answer are forwarded to it once, with the caller, except those bound to the
    /// sender's own certificate (joins, heartbeats), which must reach the leader directly.
    pub async fn handle(&self, request: Request, caller: &Caller) -> Response {
        match self.answer(&request, caller).await {
            Err(MetaError::NotLeader { leader }) if crate::access::bound_to_sender(&request) => {
                Response::NotLeader { leader }
            }
            Err(MetaError::NotLeader {
                leader: Some((id, addr)),
            }) if id != self.id() => {
                debug!(
                    request = request.name(),
                    leader = id,
                    "forwarding to leader"
                );
                tokio::select! {
                    answer = self.transport.call(&addr, request.forward(caller)) => match answer {
                        Ok(answer) => answer,
                        Err(e) => Response::error(
                            ErrorKind::NoLeader,
                            format!("leader unreachable: {e}"),
                        ),
                    },
                    // A killed leader answers nothing, and its connection looks alive until
                    // QUIC's idle timeout: Raft notices sooner.
                    () = self.meta.leader_is_not(id) => Response::error(
                        ErrorKind::NoLeader,
                        format!("node {id} stopped being the leader while the request was forwarded to it"),
                    ),
                }
            }
            Err(e) => meta_error(e),
            Ok(answer) => answer,
        }
    }

    async fn answer(&self, request: &Request, caller: &Caller) -> Result<Response, MetaError> {
        Ok(match request {
            Request::Ping => Response::Pong { id: self.id() },
            // A forwarded request is answered here or fails; it is never forwarded again, so
            // there are no loops while leadership moves. The forwarding node checked its
            // caller's access; it is checked again here, on what the leader will do.
            Request::Forwarded {
                caller: original,
                request: bytes,
            } => match Request::unforward(bytes) {
                Err(e) => Response::error(e.kind(), e.to_string()),
                Ok(inner)
                    if crate::access::bound_to_sender(&inner)
                        || matches!(inner, Request::Raft { .. }) =>
                {
                    Response::error(
                        ErrorKind::Invalid,
                        format!("{} requests are not forwarded", inner.name()),
                    )
                }
                Ok(inner) => match original.may(inner.access(), inner.name()) {
                    Err(reason) => Response::error(ErrorKind::Forbidden, reason),
                    Ok(()) => match Box::pin(self.answer(&inner, original)).await {
                        Err(e) => meta_error(e),
                        Ok(answer) => answer,
                    },
                },
            },
            Request::Raft { kind, payload } => {
                match tern_meta::answer_raft_rpc(self.meta.raft(), *kind, payload, caller.node_id())
                    .await
                {
                    Ok(bytes) => Response::Raft(bytes),
                    Err(e @ MetaError::Impostor { .. }) => {
                        warn!(error = %e, "refused a Raft message");
                        Response::error(ErrorKind::Forbidden, e.to_string())
                    }
                    Err(e) => Response::error(ErrorKind::BadFrame, e.to_string()),
                }
            }
            Request::Join(record) => self.admit(record).await?,
            Request::Heartbeat { id } => {
                if !self.meta.is_leader() {
                    return Err(self.not_leader());
                }
                self.last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*id, self.clock.now());
                Response::Ack
            }
            Request::Status => Response::Status(self.status().await?),
            Request::LocalMetrics => Response::Metrics(self.local_metrics()),
            Request::CatalogGet { table, key } => Response::CatalogValue(
                self.meta
                    .read(|s| s.catalog_get(table, key).cloned())
                    .await?,
            ),
            Request::ListDatasets { after, limit } => {
                let (datasets, more) = self
                    .meta
                    .read(|s| dataset_page(s, after.as_deref(), *limit))
                    .await?;
                Response::DatasetPage { datasets, more }
            }
            Request::CatalogList {
                table,
                prefix,
                limit,
            } => Response::CatalogEntries(
                self.meta
                    .read(|s| s.catalog_list(table, prefix, *limit as usize))
                    .await?,
            ),
            Request::CatalogWrite(ops) => {
                // From anyone, nodes included: what a node itself writes to these tables goes
                // straight to Raft, never through a request.
                if let Some(table) = crate::access::system_table_written(ops) {
                    return Ok(Response::error(
                        ErrorKind::Forbidden,
                        format!(
                            "the {table:?} table is written only through its own requests \
                             (tern put, tern rm, tern cert revoke, tern quota); raw writes may go to other tables"
                        ),
                    ));
                }
                Response::Written {
                    log_index: self.meta.write(Command::Catalog(ops.clone())).await?,
                }
            }
            Request::BeginPut { .. }
            | Request::RenewPut { .. }
            | Request::EndPut { .. }
            | Request::CommitDataset { .. }
            | Request::RemoveDataset { .. }
            | Request::Revoke { .. }
            | Request::SetQuota { .. } => self.answer_typed_write(request, caller).await?,
            // Blocks travel with their bytes on a bulk stream (see `blocks.rs`).
            Request::Place { sizes, pending } => self.place(sizes, pending).await?,
            Request::CopyBlock { hash, sources } => self.copy_block(*hash, sources).await,
            Request::ScrubNow => Response::Scrubbed(self.scrub_now().await),
            Request::BlockSizes { hashes } => {
                let hashes = hashes.clone();
                match crate::blocks::on_store(&self.blocks, move |b| {
                    hashes
                        .iter()
                        .map(|h| b.size(h))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                {
                    Ok(sizes) => Response::BlockSizes { sizes },
                    Err(e) => Response::error(ErrorKind::Unavailable, e.to_string()),
                }
            }
            Request::RunGraphTasks {
                job,
                tasks,
                release,
            } => {
                self.run_graph_tasks(*job, tasks.clone(), release.clone())
                    .await
            }
            Request::Jobs => Response::Jobs(self.coordinated.list(|job| self.board.job_load(job))),
            Request::CancelJob { job } => match self.coordinated.cancel(*job, caller) {
                Ok(()) => Response::Ack,
                Err(e) => Response::Error(e),
            },
            Request::ReleaseJob { .. } if self.planted_keep_released => Response::Ack,
            Request::ReleaseJob { job } => {
                let stopped = self.running_jobs.release(*job, self.clock.now());
                if stopped > 0 {
                    debug!(job, stopped, "stopped task batches of a released job");
                }
                let (shuffles, job) = (self.shuffles.clone(), *job);
                // Removing spilled files is blocking work.
                let inline = !self.blocks.blocks_thread();
                let _ = crate::blocks::off_runtime(inline, move || shuffles.release(job)).await;
                Response::Ack
            }
            Request::Drain { node } => {
                if !self.meta.is_leader() {
                    return Err(self.not_leader());
                }
                self.start_drain(*node).await?
            }
            Request::PutBlock { .. }
            | Request::GetBlock { .. }
            | Request::RunTask { .. }
            | Request::FetchShuffle { .. }
            | Request::Query { .. }
            | Request::SubmitGraph { .. } => Response::error(
                ErrorKind::Invalid,
                format!("{} must be sent as a bulk request", request.name()),
            ),
        })
    }

    /// Choose holders for new blocks from the node table, counting what every stored dataset
    /// already puts on each node, so datasets spread over the cluster, not only partitions.
    async fn place(&self, sizes: &[u64], pending: &[(NodeId, u64)]) -> Result<Response, MetaError> {
        const MAX_BLOCKS_PER_CALL: usize = 100_000;
        if sizes.len() > MAX_BLOCKS_PER_CALL {
            return Ok(Response::error(
                ErrorKind::Invalid,
                format!("at most {MAX_BLOCKS_PER_CALL} blocks can be placed in one call"),
            ));
        }
        let (nodes, mut used) = self
            .meta
            .read(|s| {
                let nodes: Vec<NodeRecord> = s.nodes.values().cloned().collect();
                (nodes, s.holdings.bytes_per_node())
            })
            .await?;
        for (id, bytes) in pending {
            *used.entry(*id).or_default() += bytes;
        }
        let addr_of: HashMap<NodeId, String> =
            nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let mut chains = Vec::with_capacity(sizes.len());
        let mut placer = Placer::new(&nodes, &mut used, self.placement_seed());
        for size in sizes {
            match placer.pick(*size, REPLICAS, &BTreeSet::new(), &BTreeSet::new()) {
                Ok(ids) => chains.push(
                    ids.into_iter()
                        .map(|id| (id, addr_of[&id].clone()))
                        .collect(),
                ),
                Err(e) => return Ok(Response::error(ErrorKind::Unavailable, e.to_string())),
            }
        }
        Ok(Response::Placement { chains })
    }

    /// A seed for one placement: this node's id and how many it has made.
    pub(crate) fn placement_seed(&self) -> u64 {
        let n = self
            .placements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.id() << 40) ^ n
    }

    pub fn local_metrics(&self) -> tern_proto::LocalMetrics {
        let mut metrics = self.meta.local_metrics();
        metrics.blocks_served = self
            .blocks_served
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics.blocks_collected = self
            .blocks_collected
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics.blocks_stored = self.blocks.hashes().map(|h| h.len() as u64).unwrap_or(0);
        metrics.tasks_running = self
            .tasks_running
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics.tasks_run = self.tasks_run.load(std::sync::atomic::Ordering::Relaxed);
        metrics.task_slots = self.compute.slots as u64;
        metrics.query_memory_bytes = self.compute.query_memory_bytes;
        metrics.shuffle_outputs = self.shuffles.outputs() as u64;
        metrics.cached_bytes = self.column_cache.used();
        metrics.cache_hits = self.column_cache.hits();
        metrics.block_bytes_read = self.blocks.bytes_read();
        metrics.health = tern_proto::NodeHealth {
            gc_stopped: self
                .gc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stopped
                .clone(),
            ..self
                .loop_panics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        metrics
    }

    pub(crate) fn not_leader(&self) -> MetaError {
        match self.meta.leader() {
            Some(leader) => MetaError::NotLeader {
                leader: Some(leader),
            },
            None => MetaError::NoLeader,
        }
    }

    /// On the leader: add a node to the Raft group and the node table.
    async fn admit(&self, record: &NodeRecord) -> Result<Response, MetaError> {
        if !self.meta.is_leader() {
            return Err(self.not_leader());
        }
        if record.id == 0 || record.addr.is_empty() {
            return Ok(Response::error(
                ErrorKind::Invalid,
                "a joining node needs an id and an address",
            ));
        }
        let known = self.meta.read_local(|s| s.nodes.get(&record.id).cloned());
        if let Some(known) = known {
            if known.addr != record.addr {
                return Ok(Response::error(
                    ErrorKind::Invalid,
                    format!("node id {} is already taken by {}", record.id, known.addr),
                ));
            }
        }
        info!(id = record.id, addr = %record.addr, "admitting node");
        let voter = self
            .meta
            .add_member(record.id, &record.addr, self.max_voters)
            .await?;
        self.meta
            .write(Command::RegisterNode(record.clone()))
            .await?;
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id, self.clock.now());
        Ok(Response::Joined {
            id: record.id,
            voter,
        })
    }

    /// The cluster's status, built on the leader from the node table and each node's metrics.
    async fn status(&self) -> Result<ClusterStatus, MetaError> {
        if !self.meta.is_leader() {
            return Err(self.not_leader());
        }
        let nodes = self.meta.read(|s| s.nodes.clone()).await?;
        let (voters, _) = self.meta.members();
        let mut asks = tokio::task::JoinSet::new();
        for node in nodes.values().filter(|n| n.id != self.id()) {
            let transport = self.transport.clone();
            let (id, addr) = (node.id, node.addr.clone());
            asks.spawn(async move {
                let answer = transport
                    .call_within(&addr, Request::LocalMetrics, STATUS_FANOUT_TIMEOUT)
                    .await;
                match answer {
                    Ok(Response::Metrics(m)) => (id, Some(m)),
                    _ => (id, None),
                }
            });
        }
        let mut metrics = HashMap::from([(self.id(), self.local_metrics())]);
        while let Some(joined) = asks.join_next().await {
            if let Ok((id, Some(m))) = joined {
                metrics.insert(id, m);
            }
        }
        let now = self.clock.now();
        let last_seen = self
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let own = self.local_metrics();
        let stored = self.meta.read_local(|s| s.holdings.clone());
        let rows = nodes
            .values()
            .map(|node| {
                let m = metrics.get(&node.id);
                let age = if node.id == self.id() {
                    Some(0)
                } else {
                    last_seen
                        .get(&node.id)
                        .map(|t| now.saturating_duration_since(*t).as_millis() as u64)
                };
                NodeStatus {
                    id: node.id,
                    address: node.addr.clone(),
                    zone: node.zone.clone(),
                    role: m.map(|m| m.role).unwrap_or(Role::Unreachable),
                    state: node.state,
                    voter: voters.contains(&node.id),
                    heartbeat_age_ms: age,
                    term: m.map(|m| m.term),
                    applied_index: m.and_then(|m| m.applied_index),
                    capacity_bytes: node.capacity_bytes,
                    stored_partitions: stored.of(node.id).partitions,
                    stored_bytes: stored.of(node.id).bytes,
                    cached_bytes: m.map(|m| m.cached_bytes),
                    task_slots: m.map(|m| m.task_slots),
                    tasks_running: m.map(|m| m.tasks_running),
                    query_memory_bytes: m.map(|m| m.query_memory_bytes),
                    health: m.map(|m| m.health.clone()),
                }
            })
            .collect();
        let (under_replicated, missing) = self.meta.read_local(crate::repair::replica_health);
        Ok(ClusterStatus {
            leader: Some(self.id()),
            term: own.term,
            applied_index: own.applied_index,
            nodes: rows,
            under_replicated,
            missing,
        })
    }

    /// Tell the leader we are alive.
    /// Also makes sure this node is in the node table: a crash between joining the Raft group
    /// and registering (or between bootstrapping and registering) would otherwise leave it out
    /// for good, unwatched by failure detection.
    pub async fn send_heartbeat(&self) {
        let registered = self.meta.read_local(|s| s.nodes.contains_key(&self.id()));
        match self.meta.leader() {
            Some((id, _)) if id == self.id() => {
                self.last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, self.clock.now());
                if !registered {
                    info!(id, "registering this node in the node table");
                    if let Err(e) = self
                        .meta
                        .write(Command::RegisterNode(self.record.clone()))
                        .await
                    {
                        warn!(error = %e, "could not register this node");
                    }
                }
            }
            Some((_, addr)) if !registered => {
                info!(
                    id = self.id(),
                    "not in the node table: asking the leader to admit it again"
                );
                let join = Request::Join(self.record.clone());
                if let Err(e) = self
                    .transport
                    .call_within(&addr, join, Duration::from_secs(10))
                    .await
                {
                    warn!(error = %e, "could not ask to be registered");
                }
            }
            Some((_, addr)) => {
                let heartbeat = Request::Heartbeat { id: self.id() };
                if let Err(e) = self
                    .transport
                    .call_within(&addr, heartbeat, self.timings.heartbeat())
                    .await
                {
                    debug!(error = %e, "heartbeat not delivered");
                }
            }
            None => {}
        }
    }

    /// On the leader: move nodes between up, suspect, down and out by how long they have been
    /// silent. Ages count from when this node took office, so a new leader does not mark
    /// everyone down for silence it never had a chance to hear.
    pub async fn detect_failures(&self) {
        let metrics = self.local_metrics();
        if metrics.role != Role::Leader {
            *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return;
        }
        let now = self.clock.now();
        let since = {
            let mut leading = self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
            match *leading {
                Some((term, at)) if term == metrics.term => at,
                _ => {
                    *leading = Some((metrics.term, now));
                    now
                }
            }
        };
        let nodes = self.meta.read_local(|s| s.nodes.clone());
        let last_seen = self
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for node in nodes.values() {
            let heard = last_seen.get(&node.id).copied().filter(|t| *t > since);
            let heard_in_office = node.id == self.id() || heard.is_some();
            let silent = if node.id == self.id() {
                Duration::ZERO
            } else {
                now.saturating_duration_since(heard.unwrap_or(since))
            };
            let wanted = if silent >= Duration::from_millis(self.timings.out_after_ms) {
                NodeState::Out
            } else if silent >= Duration::from_millis(self.timings.down_after_ms) {
                NodeState::Down
            } else if silent >= Duration::from_millis(self.timings.suspect_after_ms) {
                NodeState::Suspect
            } else {
                NodeState::Up
            };
            // Draining is an operator's decision; only a down node leaves it. A node comes back
            // up only on a heartbeat this leader heard itself: a new leader's short memory is
            // no evidence that a down node recovered.
            // Out is never undone by a shorter silence: a new leader counts silence from
            // when it took office, and must not bring back down a node whose replicas are
            // already being copied.
            let change = match (node.state, wanted) {
                (current, wanted) if current == wanted => false,
                (NodeState::Suspect | NodeState::Down | NodeState::Out, NodeState::Up)
                    if !heard_in_office =>
                {
                    false
                }
                (NodeState::Draining, NodeState::Down | NodeState::Out) => true,
                (NodeState::Draining, _) => false,
                // Drained is final: the node holds nothing and waits to be removed.
                (NodeState::Drained, _) => false,
                (NodeState::Down, NodeState::Suspect) => false,
                (NodeState::Out, NodeState::Suspect | NodeState::Down) => false,
                _ => true,
            };
            if change {
                info!(node = node.id, from = %node.state, to = %wanted, silent_ms = silent.as_millis() as u64, "node state change");
                match self
                    .meta
                    .write(Command::SetNodeState {
                        id: node.id,
                        state: wanted,
                    })
                    .await
                {
                    Ok(_) if wanted == NodeState::Out => self.repair_wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => warn!(node = node.id, error = %e, "could not record node state"),
                }
            }
        }
    }
}

/// Records one `tern ls` page decodes at most, in bytes: a page of large records (each up to
/// a MiB) stops early, so a page costs the leader little whatever the datasets hold.
const LIST_PAGE_BYTES: usize = 8 << 20;

/// A page of dataset summaries after `after`: at most `limit` (and `MAX_LIST_PAGE`), and
/// whether more follow.
fn dataset_page(
    state: &tern_meta::MetaState,
    after: Option<&str>,
    limit: u32,
) -> (Vec<tern_proto::DatasetSummary>, bool) {
    let limit = limit.clamp(1, tern_proto::MAX_LIST_PAGE) as usize;
    let mut page = Vec::new();
    let mut read = 0;
    let mut entries = state.catalog_after(tern_proto::DATASETS_TABLE, after);
    for (name, raw) in entries.by_ref() {
        page.push(tern_proto::DatasetSummary::of(name, raw));
        read += raw.len();
        if page.len() == limit || read >= LIST_PAGE_BYTES {
            break;
        }
    }
    let more = entries.next().is_some();
    (page, more)
}
