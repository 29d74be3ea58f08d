//! The Rust client of a tern cluster: finds the cluster directory, loads `client.toml` and the
//! client certificate, and makes calls to whichever node answers: datasets (written in
//! partitions, [`DatasetWriter`]; read back), SQL ([`Client::sql`]) and lazy DataFrames over
//! stored datasets ([`Client::table`], [`DataFrame`]).
//!
//! It owns connection choice and retries while a leader is being elected; it does not own the
//! wire format (`tern-proto`) or the sockets (`tern-net`), and it plans nothing: a query or a
//! DataFrame goes to a node, which coordinates it. The `tern` command line is built on it.
//!
//! ```no_run
//! # async fn example() -> Result<(), tern_client::ClientError> {
//! let client = tern_client::Client::open(&tern_client::cluster_dir(None))?;
//! let big_spenders = client
//!     .table("sales")
//!     .filter("amount > 100")
//!     .aggregate(&["name"], &["sum(amount) AS total"])
//!     .sort(&["total DESC"]);
//! let top = big_spenders.head(10).await?;
//! big_spenders.persist("big_spenders").await?;
//! # Ok(()) }
//! ```

mod dataframe;
pub mod export;
mod graphs;
pub mod ingest;
mod query;
mod submit;

pub use dataframe::{DataFrame, JoinKind};
pub use graphs::{GraphAnswer, GraphStream, GraphUpdate};
pub use query::{QueryAnswer, QueryStream, QueryUpdate};
pub use submit::{FutureError, TaskFuture, as_completed, gather, wait};
pub use tern_proto::{StagePlanned, StageReport};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tern_net::TlsFiles;
use tern_net::{QuicTransport, TlsIdentity, TransportOptions};
use tern_proto::{
    BlockHash, CatalogOp, ClusterStatus, DATASETS_TABLE, DatasetRecord, Entropy, ErrorKind,
    ErrorReply, NodeId, OsEntropy, PUT_LEASE_RENEW_MS, PartitionRecord, PutId, Request, Response,
    TransportError, validate_dataset_name,
};

/// The environment variable naming the cluster directory when `--cluster` is not given.
pub const CLUSTER_ENV: &str = "TERN_CLUSTER";
/// The cluster directory when neither `--cluster` nor `$TERN_CLUSTER` is set.
pub const DEFAULT_CLUSTER_DIR: &str = ".tern";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no cluster at {dir}: {path} is missing (start one with `tern up`, or pass --cluster DIR)"
    )]
    NoCluster { dir: String, path: String },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error(transparent)]
    Net(#[from] tern_net::NetError),
    #[error("no node of the cluster at {dir} answered (tried {tried}): {last}")]
    NoAnswer {
        dir: String,
        tried: String,
        last: TransportError,
    },
    #[error("{0}")]
    Remote(ErrorReply),
    #[error(
        "the node at {addr}, which coordinated the query, went away while running it ({reason}); it was not run again (if the query itself brought the node down, it would again): run it again if it should be"
    )]
    CoordinatorLost { addr: String, reason: String },
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("dataset {name:?} already exists (use replace to write a new version)")]
    DatasetExists { name: String },
    #[error("no dataset named {name:?}")]
    NoSuchDataset { name: String },
    /// What the request expected changed meanwhile (another writer); nothing was done.
    #[error("{0}; try again")]
    Conflict(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "the write of {name:?} was abandoned by the cluster (its lease expired: this client did not renew it in time); nothing was committed, try again"
    )]
    PutLeaseLost { name: String },
    #[error("block {hash} could not be stored: {reason}")]
    BlockNotStored { hash: BlockHash, reason: String },
    #[error("no holder served block {hash} intact ({reasons})")]
    BlockUnavailable { hash: BlockHash, reasons: String },
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

impl ClientError {
    /// The error an error answer means, by its kind (never by its text).
    pub(crate) fn from_reply(e: ErrorReply) -> Self {
        match e.kind {
            ErrorKind::Conflict => ClientError::Conflict(e.message),
            ErrorKind::Exists => ClientError::Exists(e.message),
            ErrorKind::NotFound => ClientError::NotFound(e.message),
            _ => ClientError::Remote(e),
        }
    }
}

/// `client.toml`: where the nodes are and which certificate to present. Relative paths are
/// relative to the directory holding the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub nodes: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientConfig {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("client.toml")
    }

    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = Self::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|_| ClientError::NoCluster {
            dir: dir.display().to_string(),
            path: path.display().to_string(),
        })?;
        let mut config: ClientConfig = toml::from_str(&text).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })?;
        if config.nodes.is_empty() {
            return Err(ClientError::Config {
                path: path.display().to_string(),
                reason: "lists no nodes".into(),
            });
        }
        for p in [&mut config.ca, &mut config.cert, &mut config.key] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("client config serializes")
    }
}

/// `--cluster DIR`, else `$TERN_CLUSTER`, else `./.tern`.
pub fn cluster_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    match std::env::var_os(CLUSTER_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CLUSTER_DIR),
    }
}

/// Counts one read in flight to a node for as long as it lives.
struct InFlight<'a> {
    map: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
    addr: String,
}

impl<'a> InFlight<'a> {
    fn start(
        map: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
        addr: &str,
    ) -> Self {
        *map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_default() += 1;
        Self {
            map,
            addr: addr.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A dataset being written: see [`Client::dataset_writer`].
pub struct DatasetWriter<'a> {
    client: &'a Client,
    name: String,
    /// The version this write replaces (`None`: the name was free), checked at commit.
    replaces: Option<u64>,
    partitions: Vec<PartitionRecord>,
    /// Bytes placed on each node by this writer so far (not yet in the catalog).
    pending: std::collections::HashMap<NodeId, u64>,
    lease: PutLeaseKeeper,
}

/// Keeps a write's lease (see [`tern_proto::PutLease`]) alive: renewed in the background
/// until the commit ends it; dropped without a commit, the lease is ended (or, if this
/// process dies, expires) and the cluster collects the write's blocks.
struct PutLeaseKeeper {
    id: PutId,
    dataset: String,
    /// Renewals the lease has had; `None` once committed, or lost to expiry.
    renewals: Arc<tokio::sync::Mutex<Option<u64>>>,
    renewer: tokio::task::JoinHandle<()>,
    client: Arc<Client>,
}

impl Drop for PutLeaseKeeper {
    fn drop(&mut self) {
        self.renewer.abort();
        let (renewals, client) = (self.renewals.clone(), self.client.clone());
        let (put, dataset) = (self.id, self.dataset.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let Some(renewals) = renewals.lock().await.take() else {
                    return;
                };
                let end = Request::EndPut {
                    put,
                    dataset,
                    renewals,
                };
                if let Err(e) = client.call(end).await {
                    tracing::debug!(%put, error = %e, "abandoned put's lease left to expire");
                }
            });
        }
    }
}

impl DatasetWriter<'_> {
    /// Store one partition now: placed by the cluster, written along its chain of holders.
    pub async fn add_partition(
        &mut self,
        bytes: &[u8],
        rows: u64,
    ) -> Result<&PartitionRecord, ClientError> {
        let chain = self
            .client
            .place(&[bytes.len() as u64], &self.pending)
            .await?
            .pop()
            .unwrap_or_default();
        let addrs: Vec<String> = chain.iter().map(|(_, addr)| addr.clone()).collect();
        let (block, holders) = self
            .client
            .put_block(bytes, &addrs, Some(self.lease.id))
            .await?;
        if holders.len() < addrs.len() {
            return Err(ClientError::BlockNotStored {
                hash: block,
                reason: format!("only {holders:?} acknowledged"),
            });
        }
        for holder in &holders {
            *self.pending.entry(*holder).or_default() += bytes.len() as u64;
        }
        self.partitions.push(PartitionRecord {
            block,
            bytes: bytes.len() as u64,
            rows,
            holders,
        });
        Ok(self.partitions.last().expect("just pushed"))
    }

    pub fn partitions(&self) -> &[PartitionRecord] {
        &self.partitions
    }

    /// Make the dataset visible: one catalog entry, or nothing if the name changed meanwhile.
    /// The leader checks the record before it commits it.
    pub async fn commit(self, format: &str, schema: &str) -> Result<DatasetRecord, ClientError> {
        let record = DatasetRecord {
            name: self.name.clone(),
            version: self.replaces.map_or(1, |v| v + 1),
            format: format.into(),
            schema: schema.into(),
            partitions: self.partitions,
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        // Holding the lease's lock keeps a renewal from changing it under the commit.
        let mut renewals = self.lease.renewals.lock().await;
        self.lease.renewer.abort();
        let Some(current) = *renewals else {
            return Err(ClientError::PutLeaseLost { name: self.name });
        };
        let commit = Request::CommitDataset {
            record: record.clone(),
            replaces: self.replaces,
            put: self.lease.id,
            renewals: current,
            write: new_id(),
        };
        match self.client.call(commit).await {
            Ok(Response::Written { .. }) => {
                *renewals = None;
                Ok(record)
            }
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(ClientError::Remote(e)) if e.kind == ErrorKind::LeaseExpired => {
                *renewals = None;
                Err(ClientError::PutLeaseLost { name: self.name })
            }
            Err(e) => Err(e),
        }
    }
}

/// A fresh random id for a write or a put.
fn new_id() -> PutId {
    let entropy = OsEntropy;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&entropy.next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&entropy.next_u64().to_le_bytes());
    PutId(raw)
}

fn decode_dataset(bytes: &[u8]) -> Result<DatasetRecord, ClientError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ClientError::Unexpected(format!("unreadable dataset record: {e}")))
}

/// Blocks go to the first holder in chunks of this size.
const BLOCK_CHUNK_BYTES: usize = 4 << 20;

/// How long a call keeps retrying while the cluster has no leader.
const ELECTION_PATIENCE: Duration = Duration::from_secs(15);

pub struct Client {
    dir: PathBuf,
    nodes: Vec<String>,
    transport: Arc<QuicTransport>,
    /// The node that answered last; tried first next time.
    preferred: AtomicUsize,
    /// Reads this client has in flight per node: the load it knows of, used to read each
    /// block from its least-busy holder.
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Breaks ties between equally busy holders, so they take turns.
    turn: AtomicUsize,
    call_timeout: Duration,
    /// Outputs this client's futures keep on the cluster (shared with its siblings).
    kept: Arc<submit::KeptRegistry>,
}

impl Client {
    /// Load the cluster directory's client configuration. No call is made yet.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let config = ClientConfig::load(dir)?;
        let files = TlsFiles {
            ca: config.ca,
            cert: config.cert,
            key: config.key,
        };
        Self::with_identity(dir, config.nodes, &files)
    }

    /// A client for `nodes` presenting the certificate in `files`.
    pub fn with_identity(
        dir: &Path,
        nodes: Vec<String>,
        files: &TlsFiles,
    ) -> Result<Self, ClientError> {
        if nodes.is_empty() {
            return Err(ClientError::Config {
                path: dir.display().to_string(),
                reason: "no node addresses to connect to".into(),
            });
        }
        let identity = TlsIdentity::load(files)?;
        let options = TransportOptions {
            connect_timeout: Duration::from_millis(1500),
            ..TransportOptions::default()
        };
        let call_timeout = options.call_timeout;
        let transport = QuicTransport::client(&identity, options)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            nodes,
            transport,
            preferred: AtomicUsize::new(0),
            in_flight: Default::default(),
            turn: AtomicUsize::new(0),
            call_timeout,
            kept: Default::default(),
        })
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The transport, for tests that need to send raw bytes.
    pub fn transport(&self) -> &QuicTransport {
        &self.transport
    }

    /// Send `request` to the first node that answers; while the cluster has no leader, retry
    /// for up to [`ELECTION_PATIENCE`]. Error answers become errors by their kind
    /// ([`ClientError::Conflict`], [`ClientError::Exists`], [`ClientError::NotFound`], else
    /// [`ClientError::Remote`]).
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + ELECTION_PATIENCE;
        loop {
            match self.call_any(&request).await? {
                Response::Error(e)
                    if e.kind == ErrorKind::NoLeader && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Response::Error(e) => return Err(ClientError::from_reply(e)),
                answer => return Ok(answer),
            }
        }
    }

    /// Send `request` to one specific node.
    pub async fn call_node(
        &self,
        addr: &str,
        request: Request,
    ) -> Result<Response, TransportError> {
        self.transport
            .call_with_timeout(addr, &request, self.call_timeout)
            .await
    }

    async fn call_any(&self, request: &Request) -> Result<Response, ClientError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.nodes.len() {
            let index = (start + i) % self.nodes.len();
            match self.call_node(&self.nodes[index], request.clone()).await {
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::NoAnswer {
            dir: self.dir.display().to_string(),
            tried: self.nodes.join(", "),
            last: last.expect("a client is never built without node addresses"),
        })
    }

    /// Every configured node's own Raft view, asked concurrently; `None` for nodes that did
    /// not answer within `timeout`.
    pub async fn node_metrics(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Option<tern_proto::LocalMetrics>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, addr) in self.nodes.iter().enumerate() {
            let transport = self.transport.clone();
            let addr = addr.clone();
            asks.spawn(async move {
                let answer = transport
                    .call_with_timeout(&addr, &Request::LocalMetrics, timeout)
                    .await;
                let metrics = match answer {
                    Ok(Response::Metrics(m)) => Some(m),
                    _ => None,
                };
                (i, addr, metrics)
            });
        }
        let mut all = Vec::new();
        while let Some(Ok(row)) = asks.join_next().await {
            all.push(row);
        }
        all.sort_by_key(|(i, _, _)| *i);
        all.into_iter().map(|(_, addr, m)| (addr, m)).collect()
    }

    /// The leader, if one node reports itself leading and answers a linearizable read now.
    pub async fn serving_leader(
        &self,
        timeout: Duration,
    ) -> Option<(tern_proto::NodeId, u64, String)> {
        let views = self.node_metrics(timeout).await;
        let (addr, m) = views
            .into_iter()
            .filter_map(|(addr, m)| Some((addr, m?)))
            .filter(|(_, m)| m.role == tern_proto::Role::Leader)
            .max_by_key(|(_, m)| m.term)?;
        let read = Request::CatalogGet {
            table: "tern".into(),
            key: "probe".into(),
        };
        match self
            .transport
            .call_with_timeout(&addr, &read, timeout)
            .await
        {
            Ok(Response::CatalogValue(_)) => Some((m.id, m.term, addr)),
            _ => None,
        }
    }

    /// Store `bytes` as one block on `chain`: the first holder passes it to the next, each
    /// checks its hash and syncs it, and the answer lists every holder that has it durably.
    pub async fn put_block(
        &self,
        bytes: &[u8],
        chain: &[String],
        put: Option<PutId>,
    ) -> Result<(BlockHash, Vec<NodeId>), ClientError> {
        let hash = BlockHash::of(bytes);
        let not_stored = |reason: String| ClientError::BlockNotStored { hash, reason };
        let (first, rest) = chain
            .split_first()
            .ok_or_else(|| not_stored("no holders given".into()))?;
        let request = tern_proto::Request::PutBlock {
            hash,
            size: bytes.len() as u64,
            chain: rest.to_vec(),
            put,
        };
        let (mut writer, mut reader) = self
            .transport
            .open_bulk(first, &request)
            .await
            .map_err(|e| not_stored(e.to_string()))?;
        // A node that refuses the block (its chain, its size, no room) answers before it has
        // read the bytes and stops reading: its answer says why, not the broken write.
        let mut sent = Ok(());
        for chunk in bytes.chunks(BLOCK_CHUNK_BYTES) {
            sent = writer.write_chunk(chunk).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = writer.finish().await;
        }
        match (reader.response().await, sent) {
            (Ok(Response::BlockStored { holders }), Ok(())) => Ok((hash, holders)),
            (Ok(Response::Error(e)), _) => Err(not_stored(e.message)),
            (_, Err(e)) | (Err(e), Ok(())) => Err(not_stored(e.to_string())),
            (Ok(other), Ok(())) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Read block `hash` from the first of `holders` that serves it intact: a holder that is
    /// down, lacks it, or returns bytes that do not hash to its name is skipped.
    pub async fn get_block(
        &self,
        hash: &BlockHash,
        holders: &[String],
    ) -> Result<Vec<u8>, ClientError> {
        let mut reasons = Vec::new();
        for addr in &self.least_busy_first(holders) {
            let _counted = InFlight::start(&self.in_flight, addr);
            match self.read_block_from(hash, addr).await {
                Ok(bytes) => return Ok(bytes),
                Err(reason) => reasons.push(format!("{addr}: {reason}")),
            }
        }
        Err(ClientError::BlockUnavailable {
            hash: *hash,
            reasons: reasons.join("; "),
        })
    }

    /// `holders` ordered by this client's reads in flight to each, fewest first; equally busy
    /// holders take turns at the front.
    fn least_busy_first(&self, holders: &[String]) -> Vec<String> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let loads = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = holders.len().max(1);
        let mut order: Vec<(usize, usize, &String)> = holders
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    loads.get(h).copied().unwrap_or(0),
                    (i + n - turn % n) % n,
                    h,
                )
            })
            .collect();
        order.sort();
        order.into_iter().map(|(_, _, h)| h.clone()).collect()
    }

    async fn read_block_from(&self, hash: &BlockHash, addr: &str) -> Result<Vec<u8>, String> {
        match tern_proto::fetch_block(self.transport.as_ref(), addr, hash).await {
            Ok(bytes) => Ok(bytes),
            // A node that restarted since our last call leaves a dead cached connection:
            // dial once more before giving up on this holder.
            Err(first)
                if first.contains("connection")
                    || first.contains("closed")
                    || first.contains("lost") =>
            {
                self.transport.forget(addr);
                tern_proto::fetch_block(self.transport.as_ref(), addr, hash).await
            }
            Err(other) => Err(other),
        }
    }

    /// Replica chains for blocks of these sizes, chosen by the cluster; `pending` is what this
    /// client placed and has not committed yet (bytes per node).
    pub async fn place(
        &self,
        sizes: &[u64],
        pending: &std::collections::HashMap<NodeId, u64>,
    ) -> Result<Vec<Vec<(NodeId, String)>>, ClientError> {
        let pending = pending.iter().map(|(id, bytes)| (*id, *bytes)).collect();
        match self
            .call(Request::Place {
                sizes: sizes.to_vec(),
                pending,
            })
            .await?
        {
            Response::Placement { chains } => Ok(chains),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Store a dataset held in memory (see [`Client::dataset_writer`] to stream one).
    pub async fn put_dataset(
        &self,
        name: &str,
        format: &str,
        schema: &str,
        partitions: &[(Vec<u8>, u64)],
        replace: bool,
    ) -> Result<DatasetRecord, ClientError> {
        let mut writer = self.dataset_writer(name, replace).await?;
        for (bytes, rows) in partitions {
            writer.add_partition(bytes, *rows).await?;
        }
        writer.commit(format, schema).await
    }

    /// Start writing dataset `name`: partitions are stored as they are added, each as a block
    /// on three holders; [`DatasetWriter::commit`] then makes the whole dataset visible with one
    /// catalog entry. Dropping the writer before that leaves nothing visible. With `replace`,
    /// an existing dataset of that name gets a new version atomically; without it, an existing
    /// name is an error (checked now, and again at commit).
    pub async fn dataset_writer(
        &self,
        name: &str,
        replace: bool,
    ) -> Result<DatasetWriter<'_>, ClientError> {
        validate_dataset_name(name).map_err(ClientError::InvalidName)?;
        let replaces = match self.dataset(name).await? {
            Some(_) if !replace => return Err(ClientError::DatasetExists { name: name.into() }),
            Some(old) => Some(old.version),
            None => None,
        };
        let lease = self.take_put_lease(name).await?;
        Ok(DatasetWriter {
            client: self,
            name: name.into(),
            replaces,
            partitions: Vec::new(),
            pending: Default::default(),
            lease,
        })
    }

    /// Register a new write of `dataset` in the catalog and keep renewing it.
    async fn take_put_lease(&self, dataset: &str) -> Result<PutLeaseKeeper, ClientError> {
        let id = new_id();
        self.call(Request::BeginPut {
            put: id,
            dataset: dataset.into(),
        })
        .await?;
        let renewals = Arc::new(tokio::sync::Mutex::new(Some(0u64)));
        let client = Arc::new(self.sibling());
        let renewer = {
            let (renewals, client) = (renewals.clone(), client.clone());
            let dataset = dataset.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(PUT_LEASE_RENEW_MS)).await;
                    let mut current = renewals.lock().await;
                    let Some(done) = *current else { return };
                    let renew = Request::RenewPut {
                        put: id,
                        dataset: dataset.clone(),
                        renewals: done + 1,
                    };
                    match client.call(renew).await {
                        Ok(_) => *current = Some(done + 1),
                        Err(ClientError::Remote(e)) if e.kind == ErrorKind::LeaseExpired => {
                            tracing::warn!(put = %id, "put lease lost: the cluster expired it");
                            *current = None;
                            return;
                        }
                        // Retried at the next tick; the lease outlives many missed renewals.
                        Err(e) => tracing::debug!(put = %id, error = %e, "lease renewal failed"),
                    }
                }
            })
        };
        Ok(PutLeaseKeeper {
            id,
            dataset: dataset.into(),
            renewals,
            renewer,
            client,
        })
    }

    /// Another client for the same cluster sharing this one's connections, for background
    /// work that outlives a borrow of this one.
    fn sibling(&self) -> Client {
        Client {
            dir: self.dir.clone(),
            nodes: self.nodes.clone(),
            transport: self.transport.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            in_flight: Default::default(),
            turn: AtomicUsize::new(0),
            call_timeout: self.call_timeout,
            kept: self.kept.clone(),
        }
    }

    /// The dataset's record (a linearizable read), if it exists.
    pub async fn dataset(&self, name: &str) -> Result<Option<DatasetRecord>, ClientError> {
        match self.catalog_get(DATASETS_TABLE, name).await? {
            Some(bytes) => Ok(Some(decode_dataset(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every dataset, by name.
    pub async fn datasets(&self) -> Result<Vec<DatasetRecord>, ClientError> {
        let entries = self.catalog_list(DATASETS_TABLE, "", u32::MAX).await?;
        entries
            .iter()
            .map(|(_, bytes)| decode_dataset(bytes))
            .collect()
    }

    /// Remove a dataset from the catalog (its blocks become unreferenced).
    pub async fn remove_dataset(&self, name: &str) -> Result<(), ClientError> {
        let old = self
            .dataset(name)
            .await?
            .ok_or_else(|| ClientError::NoSuchDataset { name: name.into() })?;
        let remove = Request::RemoveDataset {
            name: name.into(),
            version: old.version,
            write: new_id(),
        };
        self.call(remove).await?;
        Ok(())
    }

    /// Start draining node `id`: its replicas move to other nodes, then it is marked drained.
    pub async fn drain(&self, id: NodeId) -> Result<(), ClientError> {
        match self.call(Request::Drain { node: id }).await? {
            Response::Ack => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A bulk call without a body to whichever node answers (retrying while there is no
    /// leader): the answer and the bytes that follow it.
    async fn bulk_call(&self, request: &Request) -> Result<(Response, Vec<u8>), ClientError> {
        let (answer, mut reader, addr) = self.bulk_open(request, &[]).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.map_err(|e| lost(&addr, e))? {
            bytes.extend_from_slice(&chunk);
        }
        Ok((answer, bytes))
    }

    /// Send a bulk request and its `body` (empty for most) to whichever node answers
    /// (retrying while there is no leader): its answer (never an error), the reader of what
    /// follows, and the node.
    pub(crate) async fn bulk_open(
        &self,
        request: &Request,
        body: &[u8],
    ) -> Result<(Response, tern_net::BodyReader, String), ClientError> {
        let deadline = tokio::time::Instant::now() + ELECTION_PATIENCE;
        loop {
            let mut no_leader = None;
            let mut failures = Vec::new();
            let start = self.preferred.load(Ordering::Relaxed);
            for i in 0..self.nodes.len() {
                let index = (start + i) % self.nodes.len();
                let addr = &self.nodes[index];
                match self.bulk_open_node(addr, request, body).await {
                    // A node that took the query and then vanished ran part of it: say so
                    // rather than silently starting it again elsewhere.
                    Err(BulkFailure::AfterSending(reason)) => {
                        return Err(ClientError::CoordinatorLost {
                            addr: addr.clone(),
                            reason,
                        });
                    }
                    Err(BulkFailure::Connecting(e)) => failures.push(e.to_string()),
                    Ok((Response::Error(e), _)) if e.kind == ErrorKind::NoLeader => {
                        no_leader = Some(e);
                    }
                    Ok((Response::Error(e), _)) => return Err(ClientError::Remote(e)),
                    Ok((answer, reader)) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok((answer, reader, addr.clone()));
                    }
                }
            }
            match no_leader {
                Some(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(e) => return Err(ClientError::Remote(e)),
                None => {
                    return Err(ClientError::Unexpected(format!(
                        "no node answered ({}); the query can be retried",
                        failures.join("; ")
                    )));
                }
            }
        }
    }

    async fn bulk_open_node(
        &self,
        addr: &str,
        request: &Request,
        body: &[u8],
    ) -> Result<(Response, tern_net::BodyReader), BulkFailure> {
        if matches!(request, Request::Query { .. } | Request::SubmitGraph { .. }) {
            // A connection kept from earlier may lead to a node that has since died: check
            // the node answers before handing it a query, so a failure after that means the
            // coordinator itself went away.
            self.transport
                .call_with_timeout(addr, &Request::Ping, Duration::from_secs(5))
                .await
                .map_err(BulkFailure::Connecting)?;
        }
        let (mut writer, mut reader) = self
            .transport
            .open_bulk(addr, request)
            .await
            .map_err(BulkFailure::Connecting)?;
        let sent = match writer.write_chunk(body).await {
            Ok(()) => writer.finish().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            // A node may refuse a body before reading it (too large, too busy): its answer
            // says why, and is the error, not the broken write.
            let refusal = tokio::time::timeout(Duration::from_secs(5), reader.response()).await;
            return match refusal {
                Ok(Ok(answer @ Response::Error(_))) => Ok((answer, reader)),
                _ => Err(BulkFailure::Connecting(e)),
            };
        }
        let answer = reader
            .response()
            .await
            .map_err(|e| BulkFailure::AfterSending(e.to_string()))?;
        Ok((answer, reader))
    }

    /// A full scrub pass on every node that answers (nodes that do not are skipped).
    pub async fn scrub_now(&self) -> Result<Vec<tern_proto::ScrubReport>, ClientError> {
        let mut reports = Vec::new();
        for node in self.status().await?.nodes {
            let long = std::time::Duration::from_secs(600);
            match self
                .transport
                .call_with_timeout(&node.address, &Request::ScrubNow, long)
                .await
            {
                Ok(Response::Scrubbed(report)) => reports.push(report),
                // Refused (a role the request needs): the same on every node.
                Ok(Response::Error(e)) if e.kind == ErrorKind::Forbidden => {
                    return Err(ClientError::from_reply(e));
                }
                // A node that does not answer is scrubbed by its own background pass.
                _ => {}
            }
        }
        Ok(reports)
    }

    /// Node id → address, from the cluster's node table.
    pub async fn node_addresses(
        &self,
    ) -> Result<std::collections::HashMap<NodeId, String>, ClientError> {
        Ok(self
            .status()
            .await?
            .nodes
            .into_iter()
            .map(|n| (n.id, n.address))
            .collect())
    }

    /// The bytes of partition `index`, from whichever holder serves them intact.
    pub async fn read_partition(
        &self,
        dataset: &DatasetRecord,
        index: usize,
        addresses: &std::collections::HashMap<NodeId, String>,
    ) -> Result<Vec<u8>, ClientError> {
        let partition = dataset.partitions.get(index).ok_or_else(|| {
            ClientError::Unexpected(format!("{} has no partition {index}", dataset.name))
        })?;
        let holders: Vec<String> = partition
            .holders
            .iter()
            .filter_map(|id| addresses.get(id).cloned())
            .collect();
        self.get_block(&partition.block, &holders).await
    }

    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.call(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_write(&self, ops: Vec<CatalogOp>) -> Result<u64, ClientError> {
        match self.call(Request::CatalogWrite(ops)).await? {
            Response::Written { log_index } => Ok(log_index),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<u64, ClientError> {
        self.catalog_write(vec![CatalogOp::Put {
            table: table.into(),
            key: key.into(),
            value,
        }])
        .await
    }

    pub async fn catalog_get(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        match self
            .call(Request::CatalogGet {
                table: table.into(),
                key: key.into(),
            })
            .await?
        {
            Response::CatalogValue(value) => Ok(value),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_list(
        &self,
        table: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        match self
            .call(Request::CatalogList {
                table: table.into(),
                prefix: prefix.into(),
                limit,
            })
            .await?
        {
            Response::CatalogEntries(entries) => Ok(entries),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// How a bulk call to one node failed: before the node had the request (try another), or
/// after (it may have run part of it).
enum BulkFailure {
    Connecting(TransportError),
    AfterSending(String),
}

/// The node at `addr` stopped answering after it took the request.
pub(crate) fn lost(addr: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::CoordinatorLost {
        addr: addr.into(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dir_prefers_the_flag_then_the_environment() {
        // One test touches the environment, so there is no race with another test.
        let flag = PathBuf::from("/x");
        assert_eq!(cluster_dir(Some(&flag)), flag);
        unsafe { std::env::set_var(CLUSTER_ENV, "/from-env") };
        assert_eq!(cluster_dir(None), PathBuf::from("/from-env"));
        unsafe { std::env::remove_var(CLUSTER_ENV) };
        assert_eq!(cluster_dir(None), PathBuf::from(DEFAULT_CLUSTER_DIR));
    }

    #[test]
    fn missing_client_config_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let err = ClientConfig::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("client.toml") && err.contains("tern up"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_cluster_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let config = ClientConfig {
            nodes: vec!["127.0.0.1:7401".into()],
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
        };
        std::fs::write(ClientConfig::path_in(&dir), config.to_toml()).unwrap();
        let loaded = ClientConfig::load(&dir).unwrap();
        assert_eq!(loaded.ca, dir.join("ca.pem"));
    }
}
