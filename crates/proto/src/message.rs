//! Requests, responses and the records they carry.
//!
//! Raft's own messages travel as opaque bytes (`Request::Raft`): `tern-meta` encodes and decodes
//! them, so this crate does not depend on openraft.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::block::BlockHash;
use crate::dataset::PutId;

pub type NodeId = u64;

/// A node's health as the metadata records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeats arrive on time.
    Up,
    /// Heartbeats are late; the node may be gone.
    Suspect,
    /// Silent past the down timeout: its data is served from other holders, but not yet
    /// copied elsewhere, because most nodes that go down (a reboot, a switch) come back.
    Down,
    /// Being emptied by an operator before removal.
    Draining,
    /// Emptied: holds no replica the catalog counts, and can be removed.
    Drained,
    /// Down for longer than the out timeout: its replicas are copied to other nodes (Ceph's
    /// "out"). Last, so the encoding of the other states is unchanged.
    Out,
}

impl NodeState {
    /// Whether the node is gone for now (down or out): it gets no tasks and no new replicas.
    pub fn is_gone(self) -> bool {
        matches!(self, NodeState::Down | NodeState::Out)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
            NodeState::Out => "out",
        })
    }
}

/// One node as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// `host:port` of its QUIC endpoint.
    pub addr: String,
    /// Failure domain; replicas prefer distinct zones. Empty when unset.
    pub zone: String,
    /// Bytes this node offers for blocks.
    pub capacity_bytes: u64,
    pub state: NodeState,
}

/// A node's part in the Raft group, as it sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
    /// It did not answer the status call.
    Unreachable,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
            Role::Unreachable => "unreachable",
        })
    }
}

/// Which Raft RPC an opaque `Request::Raft` payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// One change to the generic catalog table (`table`, `key`) → `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogOp {
    /// A precondition: the entry is currently `value` (`None`: absent). If any precondition of
    /// a write fails, none of its ops apply; this is how "create unless it exists" and
    /// "replace the version I read" stay atomic.
    Expect {
        table: String,
        key: String,
        value: Option<Vec<u8>>,
    },
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: String,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// A Raft RPC between metadata members (payload encoded by `tern-meta`).
    Raft {
        kind: RaftKind,
        #[serde(with = "crate::frame::bytes")]
        payload: Vec<u8>,
    },
    /// A new node asks to be added to the cluster (answered by the leader).
    Join(NodeRecord),
    /// A node tells the leader it is alive.
    Heartbeat {
        id: NodeId,
    },
    /// The whole cluster's status (answered by the leader).
    Status,
    /// This node's own Raft metrics.
    LocalMetrics,
    /// Linearizable read of one catalog entry.
    CatalogGet {
        table: String,
        key: String,
    },
    /// Linearizable scan of a catalog table: keys starting with `prefix`, at most `limit`.
    CatalogList {
        table: String,
        prefix: String,
        limit: u32,
    },
    /// Commit these changes as one Raft entry.
    CatalogWrite(Vec<CatalogOp>),
    /// A request a follower passed on to the leader, encoded (see [`Request::forward`]), with
    /// the caller the follower verified (the leader trusts its fellow node for that); it is
    /// answered there, never passed on again. Carried as bytes, not as a nested `Request`, so a
    /// crafted frame cannot nest it deep enough to exhaust the decoder's stack.
    Forwarded {
        caller: crate::Caller,
        #[serde(with = "crate::frame::bytes")]
        request: Vec<u8>,
    },
    /// Store a block (bulk: its bytes follow as chunks), then pass it on to `chain[0]` with
    /// the rest of the chain; answered with every holder that stored it, or an error.
    PutBlock {
        hash: BlockHash,
        size: u64,
        /// At most [`crate::frame::MAX_CHAIN`] addresses, refused while decoding otherwise.
        #[serde(deserialize_with = "crate::frame::short_chain")]
        chain: Vec<String>,
        /// The write this block belongs to: while its lease lives, holders keep the block
        /// although no dataset references it yet (see [`crate::PutLease`]).
        put: Option<PutId>,
    },
    /// Read a block (bulk: answered with `Response::Block` and its bytes as chunks).
    GetBlock {
        hash: BlockHash,
    },
    /// Choose replica holders for blocks of these sizes (answered with `Response::Placement`).
    /// `pending` is what the caller already placed and has not committed yet, per node, so the
    /// partitions of one dataset spread although they are placed one at a time.
    Place {
        sizes: Vec<u64>,
        pending: Vec<(NodeId, u64)>,
    },
    /// Repair (node to node): fetch block `hash` from one of `sources` and keep a copy.
    CopyBlock {
        hash: BlockHash,
        sources: Vec<String>,
    },
    /// Re-hash every block this node holds now; fetch healthy copies of bad or missing ones.
    ScrubNow,
    /// Move every replica off `node` (to other nodes, copy first), then mark it drained.
    Drain {
        node: NodeId,
    },
    /// Run tasks (bulk: answered with `Response::TaskOutput`): each is one partition of
    /// `plan`, a physical plan in DataFusion's encoding, run on its own, in order (a
    /// coordinator batches many small tasks for one node into one request). A task with
    /// `output` `None` sends its rows after the answer as an Arrow IPC stream (the streams of
    /// the batch one after the other); otherwise the node keeps them, split into buckets, for
    /// a later stage to fetch (`FetchShuffle`).
    RunTask {
        /// The job the tasks belong to: a node shares its slots fairly between jobs.
        job: u64,
        #[serde(with = "crate::frame::bytes")]
        plan: Vec<u8>,
        tasks: Vec<TaskSpec>,
    },
    /// Read bucket `bucket` of several tasks' kept outputs (bulk: answered with
    /// `Response::Block` and, as chunks, the buckets in task order, each an Arrow IPC stream,
    /// joined by [`crate::join_parts`]), only `columns` of them when given.
    FetchShuffle {
        job: u64,
        stage: u32,
        tasks: Vec<u32>,
        bucket: u32,
        columns: Option<Vec<u32>>,
    },
    /// The job is over: drop every output kept for it.
    ReleaseJob {
        job: u64,
    },
    /// Begin writing dataset `dataset` (answered by the leader): a lease for `put` keeps the
    /// blocks stored for it until the commit or until the writer stops renewing it.
    BeginPut {
        put: PutId,
        dataset: String,
    },
    /// Keep a write's lease alive; `renewals` counts this renewal.
    RenewPut {
        put: PutId,
        dataset: String,
        renewals: u64,
    },
    /// Abandon a write: its lease ends (holding `renewals`), its blocks are collected later.
    EndPut {
        put: PutId,
        dataset: String,
        renewals: u64,
    },
    /// Make a dataset visible in one Raft entry, ending the lease of `put` (holding
    /// `renewals`). `replaces` is the version it replaces (`None`: the name must be free).
    /// The leader checks the record (name, version, format, schema, holders distinct and
    /// real, sizes within limits). `write` names this commit, so a retry whose first delivery
    /// applied is answered as a success.
    CommitDataset {
        record: crate::DatasetRecord,
        replaces: Option<u64>,
        put: PutId,
        renewals: u64,
        write: PutId,
    },
    /// Remove dataset `name` if it is still at `version` (its blocks are collected later).
    RemoveDataset {
        name: String,
        version: u64,
        write: PutId,
    },
    /// Refuse the certificate with this serial number (hex) from now on, on every node.
    Revoke {
        serial: String,
        reason: String,
    },
    /// Limit the bytes of the datasets client `client` owns (`None`: no limit).
    SetQuota {
        client: String,
        bytes: Option<u64>,
    },
    /// Which of these blocks this node stores, and their sizes (answered with
    /// `Response::BlockSizes`): how the leader checks a commit's holders really hold what it
    /// names.
    BlockSizes {
        hashes: Vec<BlockHash>,
    },
    /// Run a SQL query with this node as coordinator (bulk: answered with
    /// `Response::QueryRunning` and then the query's events, see [`crate::QueryEvent`]), or with
    /// `explain`, answered with `Response::Explained`, the stages and tasks it would run.
    Query {
        sql: String,
        explain: bool,
    },
    /// Run a task graph with this node as coordinator (bulk: answered with
    /// `Response::GraphRunning` and then the graph's [`crate::GraphEvent`]s: progress, each
    /// wanted task's outcome, and last how it ended).
    /// The graph follows in the body: `bytes` of a postcard-encoded [`crate::Submission`], at
    /// most [`crate::MAX_GRAPH_BYTES`] (a graph of a million tasks is past any frame).
    SubmitGraph {
        bytes: u64,
    },
    /// Run a batch of tasks of graph job `job` (a coordinator sends it, at most
    /// [`crate::MAX_TASK_BATCH`] of them, in one task slot one after another) and keep each
    /// output as task `index` of the job (see [`crate::GRAPH_STAGE`]). Answered with
    /// `Response::GraphTasksRan`: how each task ended, in the order sent. First, the outputs
    /// of the job's tasks in `release` are dropped: nothing left to run reads them.
    RunGraphTasks {
        job: u64,
        tasks: Vec<crate::TaskRun>,
        release: Vec<u32>,
    },
    /// The jobs (queries and graphs) this node coordinates or coordinated lately (answered
    /// with `Response::Jobs`).
    Jobs,
    /// Stop job `job`, coordinated by this node: only the client that started it, or an
    /// admin, may.
    CancelJob {
        job: u64,
    },
    /// A page of dataset summaries (answered with `Response::DatasetPage`): the datasets
    /// named after `after` (from the first when `None`), in name order, at most `limit` and
    /// never more than [`crate::MAX_LIST_PAGE`].
    ListDatasets {
        after: Option<String>,
        limit: u32,
    },
}

impl Request {
    /// Wrap this request, sent by `caller`, for forwarding to the leader.
    pub fn forward(&self, caller: &crate::Caller) -> Request {
        Request::Forwarded {
            caller: caller.clone(),
            request: crate::frame::encode_request(self),
        }
    }

    /// Unwrap a forwarded request; a request forwarded twice is refused.
    pub fn unforward(bytes: &[u8]) -> Result<Request, crate::FrameError> {
        match crate::frame::decode_request(bytes)? {
            Request::Forwarded { .. } => Err(crate::FrameError::Malformed {
                reason: "a forwarded request may not be forwarded again".into(),
            }),
            inner => Ok(inner),
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Raft { .. } => "raft",
            Request::Join(_) => "join",
            Request::Heartbeat { .. } => "heartbeat",
            Request::Status => "status",
            Request::LocalMetrics => "local-metrics",
            Request::CatalogGet { .. } => "catalog-get",
            Request::CatalogList { .. } => "catalog-list",
            Request::ListDatasets { .. } => "list-datasets",
            Request::CatalogWrite(_) => "catalog-write",
            Request::Forwarded { .. } => "forwarded",
            Request::PutBlock { .. } => "put-block",
            Request::GetBlock { .. } => "get-block",
            Request::Place { .. } => "place",
            Request::CopyBlock { .. } => "copy-block",
            Request::ScrubNow => "scrub",
            Request::Drain { .. } => "drain",
            Request::RunTask { .. } => "run-task",
            Request::FetchShuffle { .. } => "fetch-shuffle",
            Request::ReleaseJob { .. } => "release-job",
            Request::Query { .. } => "query",
            Request::SubmitGraph { .. } => "submit graph",
            Request::RunGraphTasks { .. } => "run graph tasks",
            Request::Jobs => "jobs",
            Request::CancelJob { .. } => "cancel job",
            Request::BeginPut { .. } => "begin-put",
            Request::RenewPut { .. } => "renew-put",
            Request::EndPut { .. } => "end-put",
            Request::CommitDataset { .. } => "commit-dataset",
            Request::RemoveDataset { .. } => "remove-dataset",
            Request::Revoke { .. } => "revoke",
            Request::SetQuota { .. } => "set-quota",
            Request::BlockSizes { .. } => "block-sizes",
        }
    }
}

/// One task of a `RunTask` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The partition of the plan the task runs.
    pub partition: u32,
    pub output: Option<ShuffleOutput>,
}

/// How one task ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    pub rows: u64,
    /// Partitions the task fetched from another node (0: it read its own store).
    pub remote_reads: u32,
    /// Bytes its sorts, aggregations and joins spilled to disk.
    pub spilled: u64,
    /// Bytes of its Arrow IPC stream in the answer (0 when its output is kept).
    pub bytes: u64,
    /// Bytes of its output kept on the node, all buckets together (0 when sent back).
    pub kept_bytes: u64,
}

/// Where a task's output goes when a later stage reads it: kept on the node that ran it, as
/// (job, stage, task), split into buckets if the plan's root is a hash exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffleOutput {
    pub job: u64,
    pub stage: u32,
    pub task: u32,
}

/// A node's Raft view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMetrics {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Blocks this node has served to readers since it started.
    pub blocks_served: u64,
    /// Blocks stored on this node now (referenced or not).
    pub blocks_stored: u64,
    /// Unreferenced blocks this node has deleted since it started.
    pub blocks_collected: u64,
    /// Query tasks running on this node now, and run since it started.
    pub tasks_running: u64,
    pub tasks_run: u64,
    /// Tasks it runs at once, and the memory they may hold together.
    pub task_slots: u64,
    pub query_memory_bytes: u64,
    /// Task outputs this node keeps for later stages now.
    pub shuffle_outputs: u64,
    /// Bytes of decoded columns this node keeps for later scans, and the scans they answered
    /// without reading a block since it started.
    pub cached_bytes: u64,
    pub cache_hits: u64,
    /// Bytes of stored blocks this node read from its disk and checked since it started
    /// (a scan of some columns reads those columns' bytes).
    pub block_bytes_read: u64,
    pub health: NodeHealth,
}

/// Background work of a node that is not running as it should, for `tern status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// Why garbage collection refuses to run (it fails closed), while it does.
    pub gc_stopped: Option<String>,
    /// Times a background loop (repair, GC, scrub, failure detection…) panicked and was
    /// restarted since the node started, and the last such panic.
    pub loop_panics: u64,
    pub last_loop_panic: Option<String>,
}

impl NodeHealth {
    /// One line per problem, empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.gc_stopped.iter().cloned().collect();
        if self.loop_panics > 0 {
            out.push(format!(
                "{} background loop panic(s), restarted; last: {}",
                self.loop_panics,
                self.last_loop_panic.as_deref().unwrap_or("-")
            ));
        }
        out
    }
}

/// One node's scrub pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    pub node: NodeId,
    /// Blocks re-hashed.
    pub checked: u64,
    /// Blocks whose bytes no longer matched their name (dropped).
    pub corrupt: u64,
    /// Blocks the catalog says this node holds but it did not have.
    pub missing: u64,
    /// Bad or missing blocks replaced with a healthy copy from another holder.
    pub repaired: u64,
    /// Blocks that could not be read now (an I/O error that may pass): kept, not condemned.
    pub unreadable: u64,
}

/// One row of `tern status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    pub zone: String,
    pub role: Role,
    pub state: NodeState,
    /// Whether it votes in the Raft group (voters) or only follows (learners).
    pub voter: bool,
    /// Milliseconds since the leader last heard from it; `None` if never since it took office.
    pub heartbeat_age_ms: Option<u64>,
    pub term: Option<u64>,
    pub applied_index: Option<u64>,
    pub capacity_bytes: u64,
    /// Partition replicas the catalog places on this node, and their bytes.
    pub stored_partitions: u64,
    pub stored_bytes: u64,
    /// Decoded columns it keeps in memory for later scans; `None` if it did not answer.
    pub cached_bytes: Option<u64>,
    /// Tasks it runs at once, runs now, and the memory they may hold together; `None` if it
    /// did not answer.
    pub task_slots: Option<u64>,
    pub tasks_running: Option<u64>,
    pub query_memory_bytes: Option<u64>,
    /// What is wrong with its background work; `None` if it did not answer.
    pub health: Option<NodeHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The leader's last applied log index: a caught-up node shows the same.
    pub applied_index: Option<u64>,
    pub nodes: Vec<NodeStatus>,
    /// Partitions with fewer than three replicas on nodes that are not down.
    pub under_replicated: u64,
    /// Partitions with no replica on a node that is not down.
    pub missing: u64,
}

/// What kind of failure an error answer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The frame could not be decoded.
    BadFrame,
    /// The frame is larger than `MAX_FRAME_BYTES`.
    TooLarge,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// There is no leader right now (an election is running); retry shortly.
    NoLeader,
    /// The request is well formed but not acceptable (bad name, unknown node…).
    Invalid,
    /// The node could not do it now (shutting down, storage failure…).
    Unavailable,
    /// The caller's certificate does not allow this request: a client's for a node-only
    /// request, a role below the one needed, a revoked certificate, or a node claiming
    /// another node's id.
    Forbidden,
    /// What the request names does not exist (a dataset, a block).
    NotFound,
    /// The name is taken (a dataset created without replacing).
    Exists,
    /// What the request expected changed meanwhile (a dataset replaced or removed by another
    /// writer); nothing was done, the caller may read again and retry.
    Conflict,
    /// A write's lease expired before its commit (the writer stopped renewing it in time);
    /// nothing was committed.
    LeaseExpired,
    /// The write would take its client past its storage quota; nothing was committed.
    QuotaExceeded,
    /// Stored bytes cannot be used (a partition that is not the Arrow data its dataset
    /// declares): every copy is the same, so retrying elsewhere would fail the same way.
    BadData,
    /// The job was cancelled (`tern cancel`) before it ended.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong {
        id: NodeId,
    },
    Raft(#[serde(with = "crate::frame::bytes")] Vec<u8>),
    Joined {
        id: NodeId,
        voter: bool,
    },
    Ack,
    Status(ClusterStatus),
    Metrics(LocalMetrics),
    CatalogValue(Option<Vec<u8>>),
    CatalogEntries(Vec<(String, Vec<u8>)>),
    Written {
        log_index: u64,
    },
    Error(ErrorReply),
    /// The block is durable on these nodes, in chain order.
    BlockStored {
        holders: Vec<NodeId>,
    },
    /// A block of `size` bytes follows as chunks.
    Block {
        size: u64,
    },
    /// One chain of (node, address) per requested block, first holder first.
    Placement {
        chains: Vec<Vec<(NodeId, String)>>,
    },
    /// What one scrub pass found on one node.
    Scrubbed(ScrubReport),
    /// A task ran: its output rows follow as an Arrow IPC stream.
    /// Tasks ran: one entry per task of the request, in order; the rows of those sent back
    /// follow as Arrow IPC streams of the lengths given.
    TaskOutput {
        tasks: Vec<TaskStats>,
    },
    /// A task could not read the output an earlier stage's task left on `node` (the node died
    /// or dropped it): the coordinator recomputes that stage's tasks from `node`, then retries.
    ShuffleLost {
        stage: u32,
        node: NodeId,
        reason: String,
    },
    /// The coordinator took query `job`: its [`crate::QueryEvent`]s follow (plan, progress,
    /// rows, and last the end: finished or failed).
    QueryRunning {
        job: u64,
    },
    Explained(String),
    /// Per block asked for, its size if this node stores it.
    BlockSizes {
        sizes: Vec<Option<u64>>,
    },
    /// The coordinator took graph `job` of `tasks` distinct tasks: its events follow.
    GraphRunning {
        job: u64,
        tasks: u64,
    },
    /// How each task of a `Request::RunGraphTasks` batch ended, in the order sent.
    GraphTasksRan(Vec<crate::TaskRan>),
    Jobs(Vec<crate::JobInfo>),
    /// This node does not lead: a request that must reach the leader directly (a join, a
    /// heartbeat: they are bound to the sender's certificate, so they are not forwarded)
    /// should go to `leader`, when one is known.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// One page of `Request::ListDatasets`; `more` when datasets follow the last one.
    DatasetPage {
        datasets: Vec<crate::DatasetSummary>,
        more: bool,
    },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error(ErrorReply {
            kind,
            message: message.into(),
        })
    }
}
