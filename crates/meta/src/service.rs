//! [`Meta`]: the node's handle on the metadata group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tern_proto::{LocalMetrics, NodeId, Role, Transport};

use crate::store::{Applied, LogStore, StateMachineStore, open_stores, stores_on};
use crate::{Command, CommandResult, MetaError, MetaNetwork, MetaState, Raft};

/// No metadata write waits longer than this (without a quorum it would wait forever).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long a joining node may take to catch up before it is promoted.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, MetaError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| MetaError::Timeout {
            what: what.to_string(),
            millis: limit.as_millis() as u64,
        })
}

/// Raft timing and group size.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    pub heartbeat_interval: Duration,
    /// An election starts after a random silence between these two.
    pub election_timeout: (Duration, Duration),
    /// Nodes beyond this many voters join as learners (3 or 5).
    pub max_voters: usize,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_after: u64,
    /// Entries kept in the log behind a snapshot: a follower further behind catches up from
    /// the snapshot instead.
    pub log_kept_after_snapshot: u64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(150),
            election_timeout: (Duration::from_millis(600), Duration::from_millis(1200)),
            max_voters: 3,
            snapshot_after: 5000,
            log_kept_after_snapshot: 1000,
        }
    }
}

/// The metadata group as seen from one node.
pub struct Meta {
    id: NodeId,
    raft: Raft,
    applied: Arc<RwLock<Applied>>,
    membership_changes: tokio::sync::Mutex<()>,
}

fn raft_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Raft(e.to_string())
}

fn forwarded(leader_id: Option<u64>, leader_node: Option<&BasicNode>) -> MetaError {
    match (leader_id, leader_node) {
        (Some(id), Some(node)) => MetaError::NotLeader {
            leader: Some((id, node.addr.clone())),
        },
        _ => MetaError::NoLeader,
    }
}

fn write_err(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MetaError {
    match e.forward_to_leader() {
        Some(f) => forwarded(f.leader_id, f.leader_node.as_ref()),
        None => raft_err(e),
    }
}

impl Meta {
    /// Open the metadata store under `dir` and start this node's Raft.
    pub async fn open<T: Transport>(
        id: NodeId,
        dir: &Path,
        transport: Arc<T>,
        options: &MetaOptions,
    ) -> Result<Self, MetaError> {
        let (log, sm) = open_stores(dir)?;
        Self::start(id, log, sm, transport, options).await
    }

    /// Start this node's Raft with its storage on `disk` (the simulator's, for one).
    pub async fn open_on<T: Transport>(
        id: NodeId,
        disk: Arc<dyn tern_store::Disk>,
        transport: Arc<T>,
        options: &MetaOptions,
    ) -> Result<Self, MetaError> {
        let (log, sm) = stores_on(disk)?;
        Self::start(id, log, sm, transport, options).await
    }

    /// Start this node's Raft on stores already open (the simulator's, with a planted bug).
    pub async fn start<T: Transport>(
        id: NodeId,
        log: LogStore,
        sm: StateMachineStore,
        transport: Arc<T>,
        options: &MetaOptions,
    ) -> Result<Self, MetaError> {
        let applied = sm.shared();
        let config = openraft::Config {
            cluster_name: "tern".into(),
            heartbeat_interval: options.heartbeat_interval.as_millis() as u64,
            election_timeout_min: options.election_timeout.0.as_millis() as u64,
            election_timeout_max: options.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_after),
            max_in_snapshot_log_to_keep: options.log_kept_after_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 5_000,
            max_payload_entries: crate::network::MAX_ENTRIES_PER_APPEND,
            ..Default::default()
        }
        .validate()
        .map_err(raft_err)?;
        let raft = Raft::new(id, Arc::new(config), MetaNetwork::new(transport), log, sm)
            .await
            .map_err(raft_err)?;
        Ok(Self {
            id,
            raft,
            applied,
            membership_changes: tokio::sync::Mutex::new(()),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether this node already belongs to a group (it has a membership in its log).
    pub async fn is_initialized(&self) -> Result<bool, MetaError> {
        self.raft.is_initialized().await.map_err(raft_err)
    }

    /// Start a new group with this node as its only voter.
    pub async fn bootstrap(&self, addr: &str) -> Result<(), MetaError> {
        let members = BTreeMap::from([(self.id, BasicNode { addr: addr.into() })]);
        self.raft.initialize(members).await.map_err(raft_err)
    }

    /// The current leader's id and address, as this node last heard.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .addr
            .clone();
        Some((id, addr))
    }

    /// Resolves once this node no longer sees `leader` as the leader: it stepped down, another
    /// won an election, or this node stopped hearing from it and campaigns. A request forwarded
    /// to a leader that died would otherwise wait out the dead connection.
    pub async fn leader_is_not(&self, leader: NodeId) {
        let mut metrics = self.raft.metrics();
        // An error means Raft shut down: no leader is seen any more either.
        let _ = metrics.wait_for(|m| m.current_leader != Some(leader)).await;
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Commit `command`; returns the index of its log entry. Fails with `NotLeader` on a
    /// follower (the caller forwards) and `Rejected` if the state machine refused it.
    pub async fn write(&self, command: Command) -> Result<u64, MetaError> {
        let size = postcard::to_allocvec(&command)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > crate::state::MAX_COMMAND_BYTES {
            return Err(MetaError::Rejected(format!(
                "a metadata change of {size} bytes exceeds the {}-byte limit",
                crate::state::MAX_COMMAND_BYTES
            )));
        }
        let reply = within(WRITE_DEADLINE, "commit", self.raft.client_write(command))
            .await?
            .map_err(write_err)?;
        match reply.data {
            CommandResult::Done => Ok(reply.log_id.index),
            CommandResult::Rejected(reason) => Err(MetaError::Rejected(reason)),
            CommandResult::PreconditionFailed { table, key } => {
                Err(MetaError::PreconditionFailed { table, key })
            }
        }
    }

    /// A linearizable read: confirms leadership with a quorum and waits until everything
    /// committed before the read is applied, then reads the local state.
    pub async fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Result<R, MetaError> {
        within(
            READ_DEADLINE,
            "linearizable read",
            self.raft.ensure_linearizable(),
        )
        .await?
        .map_err(|e| match e.forward_to_leader() {
            Some(fwd) => forwarded(fwd.leader_id, fwd.leader_node.as_ref()),
            None => raft_err(e),
        })?;
        Ok(self.read_local(f))
    }

    /// Read this node's applied state without asking the group (may be stale).
    pub fn read_local<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.applied.read().unwrap_or_else(|p| p.into_inner()).data)
    }

    /// This node's applied state with the index of the last entry applied to it, read together
    /// (the simulator checks that nodes at the same index agree).
    pub fn read_applied<R>(&self, f: impl FnOnce(Option<u64>, &MetaState) -> R) -> R {
        let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
        f(applied.last_applied.map(|id| id.index), &applied.data)
    }

    /// Voters and learners of the current membership.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        (voters, learners)
    }

    pub fn local_metrics(&self) -> LocalMetrics {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        LocalMetrics {
            id: self.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            // Filled in by the node, which owns the block store.
            blocks_served: 0,
            blocks_stored: 0,
            blocks_collected: 0,
            tasks_running: 0,
            tasks_run: 0,
            task_slots: 0,
            query_memory_bytes: 0,
            shuffle_outputs: 0,
            cached_bytes: 0,
            cache_hits: 0,
            block_bytes_read: 0,
            health: Default::default(),
        }
    }

    /// Add node `id` (on the leader): first as a learner that catches up, then as a voter if
    /// the group has fewer than `max_voters`. Returns whether it votes. Safe to repeat.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
        max_voters: usize,
    ) -> Result<bool, MetaError> {
        let _one_at_a_time = self.membership_changes.lock().await;
        let (voters, _) = self.members();
        if voters.contains(&id) {
            return Ok(true);
        }
        let node = BasicNode { addr: addr.into() };
        let catch_up = self.raft.add_learner(id, node, true);
        within(JOIN_DEADLINE, "new node catching up", catch_up)
            .await?
            .map_err(write_err)?;
        if voters.len() >= max_voters {
            return Ok(false);
        }
        // Add just this voter: a full voter set read from metrics could be stale.
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        within(
            WRITE_DEADLINE,
            "membership change",
            self.raft.change_membership(change, true),
        )
        .await?
        .map_err(write_err)?;
        Ok(true)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}
