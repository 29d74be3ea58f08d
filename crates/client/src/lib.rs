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

mod admin;
mod blocks;
pub mod bounds;
mod config;
mod dataframe;
mod datasets;
mod error;
pub mod export;
mod graphs;
pub mod ingest;
mod query;
mod submit;

pub use config::{CLUSTER_ENV, ClientConfig, DEFAULT_CLUSTER_DIR, cluster_dir};
pub use dataframe::{DataFrame, JoinKind};
pub use datasets::DatasetWriter;
pub use error::ClientError;
pub use graphs::{GraphAnswer, GraphStream, GraphUpdate};
pub use query::{QueryAnswer, QueryStream, QueryUpdate};
pub use submit::{FutureError, TaskFuture, as_completed, gather, wait};
pub use tern_proto::{StagePlanned, StageReport};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::time::Duration;

pub use tern_net::TlsFiles;
use tern_net::{QuicTransport, TlsIdentity, TransportOptions};
use tern_proto::{
    BulkRead, BulkWrite, Clock, Entropy, ErrorKind, OsEntropy, PutId, Request, Response,
    SystemClock, Transport, TransportError,
};

/// Blocks go to the first holder in chunks of this size.
const BLOCK_CHUNK_BYTES: usize = 4 << 20;

/// How long a call keeps retrying while the cluster has no leader.
const ELECTION_PATIENCE: Duration = Duration::from_secs(15);

/// Between tries while the cluster elects a leader.
const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

/// When a client does not know a live node yet, it pings one node and, for each this long
/// without an answer, one more: a dead node then costs a fresh process this long instead of
/// a whole connect timeout.
const HEDGE_AFTER: Duration = Duration::from_millis(150);

/// How long a ping to find a live node may take (connecting included).
const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// A client of one cluster, over any [`Transport`]: QUIC with the client's certificate
/// ([`Client::open`]), or the simulator's network ([`Client::with_transport`]), so the
/// simulator runs this very code.
pub struct Client<T: Transport = QuicTransport> {
    /// What the cluster is called in errors (its directory).
    cluster: String,
    nodes: Vec<String>,
    transport: Arc<T>,
    /// Ids of writes and puts; the simulator passes its seeded entropy.
    entropy: Arc<dyn Entropy>,
    /// Creation times of datasets (display only).
    clock: Arc<dyn Clock>,
    /// The node that answered last; tried first next time.
    preferred: AtomicUsize,
    /// Whether `preferred` has answered this client (else it is only a guess).
    confirmed: AtomicBool,
    /// Reads this client has in flight per node: the load it knows of, used to read each
    /// block from its least-busy holder.
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Breaks ties between equally busy holders, so they take turns.
    turn: AtomicUsize,
    /// Holders that did not answer a read, and when: tried last for a while (see
    /// `blocks::UNANSWERED_FOR`), so a dead node costs this client one timeout, not one per
    /// partition.
    unanswered: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
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
        let mut client = Self::with_transport(
            dir.display().to_string(),
            nodes,
            transport,
            Arc::new(OsEntropy),
            Arc::new(SystemClock),
        );
        client.call_timeout = call_timeout;
        Ok(client)
    }
}

impl<T: Transport> Client<T> {
    /// A client of the cluster called `cluster` (in errors) at `nodes`, over `transport`,
    /// drawing ids from `entropy` and dataset creation times from `clock`.
    pub fn with_transport(
        cluster: String,
        nodes: Vec<String>,
        transport: Arc<T>,
        entropy: Arc<dyn Entropy>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            cluster,
            nodes,
            transport,
            entropy,
            clock,
            preferred: AtomicUsize::new(0),
            confirmed: AtomicBool::new(false),
            in_flight: Default::default(),
            turn: AtomicUsize::new(0),
            unanswered: Default::default(),
            call_timeout: Duration::from_secs(10),
            kept: Default::default(),
        }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The transport, for tests that need to send raw bytes.
    pub fn transport(&self) -> &T {
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
                    tokio::time::sleep(NO_LEADER_RETRY).await;
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
            .call_within(addr, request, self.call_timeout)
            .await
    }

    async fn call_any(&self, request: &Request) -> Result<Response, ClientError> {
        let mut failed = Vec::new();
        let mut last = None;
        loop {
            let index = match self.pick_node(&failed).await {
                Ok(index) => index,
                Err(e) => {
                    last = e.or(last);
                    break;
                }
            };
            match self.call_node(&self.nodes[index], request.clone()).await {
                Ok(answer) => {
                    self.answered(index);
                    return Ok(answer);
                }
                Err(e) => {
                    self.confirmed.store(false, Ordering::Relaxed);
                    failed.push(index);
                    last = Some(e);
                }
            }
        }
        Err(ClientError::NoAnswer {
            dir: self.cluster.clone(),
            tried: self.nodes.join(", "),
            last: last.expect("a client is never built without node addresses"),
        })
    }

    /// The node to send to: the one that answered last, else the first of those not in
    /// `failed` to answer a ping, asking one more every [`HEDGE_AFTER`] (in order from the
    /// last known good). The error is the last failure, if any node was tried.
    async fn pick_node(&self, failed: &[usize]) -> Result<usize, Option<TransportError>> {
        let preferred = self.preferred.load(Ordering::Relaxed);
        if self.confirmed.load(Ordering::Relaxed) && !failed.contains(&preferred) {
            return Ok(preferred);
        }
        let n = self.nodes.len();
        let mut race: FuturesUnordered<_> = (0..n)
            .map(|i| (preferred + i) % n)
            .filter(|index| !failed.contains(index))
            .enumerate()
            .map(|(rank, index)| async move {
                tokio::time::sleep(HEDGE_AFTER * rank as u32).await;
                let answer = self
                    .transport
                    .call_within(&self.nodes[index], Request::Ping, PING_TIMEOUT)
                    .await;
                (index, answer)
            })
            .collect();
        let mut last = None;
        while let Some((index, answer)) = race.next().await {
            match answer {
                Ok(_) => {
                    self.answered(index);
                    return Ok(index);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last)
    }

    fn answered(&self, index: usize) {
        self.preferred.store(index, Ordering::Relaxed);
        self.confirmed.store(true, Ordering::Relaxed);
    }

    /// Another client for the same cluster sharing this one's connections, for background
    /// work that outlives a borrow of this one.
    fn sibling(&self) -> Client<T> {
        Client {
            cluster: self.cluster.clone(),
            nodes: self.nodes.clone(),
            transport: self.transport.clone(),
            entropy: self.entropy.clone(),
            clock: self.clock.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            confirmed: AtomicBool::new(self.confirmed.load(Ordering::Relaxed)),
            in_flight: Default::default(),
            turn: AtomicUsize::new(0),
            unanswered: Default::default(),
            call_timeout: self.call_timeout,
            kept: self.kept.clone(),
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
    ) -> Result<(Response, T::Reader, String), ClientError> {
        let deadline = tokio::time::Instant::now() + ELECTION_PATIENCE;
        loop {
            let mut no_leader = None;
            let mut failures = Vec::new();
            let start = self
                .pick_node(&[])
                .await
                .unwrap_or_else(|_| self.preferred.load(Ordering::Relaxed));
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
                    Err(BulkFailure::Connecting(e)) => {
                        self.confirmed.store(false, Ordering::Relaxed);
                        failures.push(e.to_string());
                    }
                    Ok((Response::Error(e), _)) if e.kind == ErrorKind::NoLeader => {
                        no_leader = Some(e);
                    }
                    Ok((Response::Error(e), _)) => return Err(ClientError::Remote(e)),
                    Ok((answer, reader)) => {
                        self.answered(index);
                        return Ok((answer, reader, addr.clone()));
                    }
                }
            }
            match no_leader {
                Some(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
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
    ) -> Result<(Response, T::Reader), BulkFailure> {
        if matches!(request, Request::Query { .. } | Request::SubmitGraph { .. }) {
            // A connection kept from earlier may lead to a node that has since died: check
            // the node answers before handing it a query, so a failure after that means the
            // coordinator itself went away.
            self.transport
                .call_within(addr, Request::Ping, Duration::from_secs(5))
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

    /// A fresh random id for a write or a put.
    fn new_id(&self) -> PutId {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.entropy.next_u64().to_le_bytes());
        raw[8..].copy_from_slice(&self.entropy.next_u64().to_le_bytes());
        PutId(raw)
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
