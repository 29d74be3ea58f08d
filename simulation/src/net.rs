//! [`SimTransport`]: tern's `Transport` seam over turmoil's simulated UDP.
//!
//! Every call is one datagram and its answer another (a bulk call carries its chunks in the
//! same datagram), so turmoil's latency, loss and partitions act on whole messages, the level
//! at which tern's own retries and deadlines work. On top, the transport duplicates a message
//! when the seed says so. Incoming calls go to the real `NodeService` through the same
//! `tern_net::Handler` the QUIC server uses; bulk bodies travel through `tern_net::pipe`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_proto::{
    BulkRead, BulkWrite, Caller, NodeId, Request, Response, Transport, TransportError,
    decode_request, decode_response, encode_request, encode_response,
};
use tokio::sync::oneshot;
use turmoil::net::UdpSocket;

use crate::invariants;
use crate::world::World;

/// The port every simulated node serves on.
pub const PORT: u16 = 7000;
/// Deadline of `call` (QUIC's default deadline is of the same order).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of a bulk call's answer (blocks are small under simulation; QUIC gives up on a
/// silent peer after its 6 s idle timeout).
const BULK_DEADLINE: Duration = Duration::from_secs(10);
/// Largest datagram the simulator carries (blocks are small under simulation).
const MAX_DATAGRAM: usize = 4 << 20;

#[derive(Serialize, Deserialize)]
enum Wire {
    Call {
        id: u64,
        /// Who the caller's certificate would prove it is (no TLS under simulation).
        from: Caller,
        request: Vec<u8>,
        body: Vec<Vec<u8>>,
    },
    Answer {
        id: u64,
        frames: Vec<Vec<u8>>,
    },
}

struct Inner {
    socket: UdpSocket,
    /// Calls waiting for their answer, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Vec<Vec<u8>>>>>,
    /// Ids are unique across restarts (the incarnation is in the high bits), so a late answer
    /// to a call made before a crash never completes a call made after it.
    next_id: AtomicU64,
    identity: Caller,
    world: Arc<World>,
}

/// One host's end of the simulated network. Cheap to clone.
#[derive(Clone)]
pub struct SimTransport {
    inner: Arc<Inner>,
}

fn split_addr(addr: &str) -> Result<(String, u16), TransportError> {
    let unreachable = |reason: &str| TransportError::Unreachable {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| unreachable("no port"))?;
    let port = port.parse().map_err(|_| unreachable("bad port"))?;
    Ok((host.to_string(), port))
}

impl SimTransport {
    /// Bind this host's socket; its calls present `identity` (a node's, or a client's).
    pub async fn bind(
        world: Arc<World>,
        incarnation: u64,
        identity: Caller,
    ) -> std::io::Result<Self> {
        let port = if identity.node_id().is_some() {
            PORT
        } else {
            0
        };
        let socket = UdpSocket::bind(("0.0.0.0", port)).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                socket,
                waiting: Mutex::default(),
                next_id: AtomicU64::new(incarnation << 40),
                identity,
                world,
            }),
        })
    }

    async fn send(&self, to: SocketAddr, wire: &Wire) {
        let Ok(bytes) = postcard::to_allocvec(wire) else {
            return;
        };
        if bytes.len() > MAX_DATAGRAM {
            tracing::warn!(
                bytes = bytes.len(),
                "message over the simulator's datagram limit"
            );
            return;
        }
        let copies = if self.inner.world.duplicate_message() {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // A send to a host that is down is lost, as on a real network.
            let _ = self.inner.socket.send_to(&bytes, to).await;
        }
    }

    async fn send_call(
        &self,
        addr: &str,
        request: &Request,
        body: Vec<Vec<u8>>,
    ) -> Result<(u64, oneshot::Receiver<Vec<Vec<u8>>>), TransportError> {
        let (host, port) = split_addr(addr)?;
        let ip = turmoil::lookup(host.as_str());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiting).insert(id, tx);
        let wire = Wire::Call {
            id,
            from: self.inner.identity.clone(),
            request: encode_request(request),
            body,
        };
        self.send(SocketAddr::new(ip, port), &wire).await;
        Ok((id, rx))
    }

    async fn await_answer(
        &self,
        addr: &str,
        id: u64,
        rx: oneshot::Receiver<Vec<Vec<u8>>>,
        deadline: Duration,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        let answer = tokio::time::timeout(deadline, rx).await;
        lock(&self.inner.waiting).remove(&id);
        match answer {
            Ok(Ok(frames)) => Ok(frames),
            Ok(Err(_)) => Err(TransportError::Broken {
                addr: addr.to_string(),
                reason: "the transport closed".into(),
            }),
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_string(),
                millis: deadline.as_millis() as u64,
            }),
        }
    }

    /// Receive forever: answers complete waiting calls; calls go to `handler`, each in a task
    /// of its own.
    pub async fn serve<H: tern_net::Handler>(self, handler: Arc<H>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, from)) = self.inner.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(wire) = postcard::from_bytes::<Wire>(&buf[..n]) else {
                tracing::warn!(%from, "undecodable datagram dropped");
                continue;
            };
            match wire {
                Wire::Answer { id, frames } => {
                    if let Some(tx) = lock(&self.inner.waiting).remove(&id) {
                        let _ = tx.send(frames);
                    }
                }
                Wire::Call {
                    id,
                    from: caller,
                    request,
                    body,
                } => {
                    let this = self.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let world = &this.inner.world;
                        let to = this.inner.socket.local_addr().ok();
                        let node = this.inner.identity.node_id();
                        let frames =
                            answer(&*handler, world, node, to, from, caller, &request, body).await;
                        this.send(from, &Wire::Answer { id, frames }).await;
                    });
                }
            }
        }
    }

    /// Receive answers only (a client host serves nothing).
    pub async fn receive_answers(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, _)) = self.inner.socket.recv_from(&mut buf).await else {
                continue;
            };
            if let Ok(Wire::Answer { id, frames }) = postcard::from_bytes::<Wire>(&buf[..n])
                && let Some(tx) = lock(&self.inner.waiting).remove(&id)
            {
                let _ = tx.send(frames);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run one call through `handler` and return the frames of its answer. The answers of node
/// `node` to Raft vote requests go into the trace (who voted for whom, and when).
#[allow(clippy::too_many_arguments)]
async fn answer<H: tern_net::Handler>(
    handler: &H,
    world: &World,
    node: Option<NodeId>,
    to: Option<SocketAddr>,
    from: SocketAddr,
    caller: Caller,
    request: &[u8],
    body: Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let request = match decode_request(request) {
        Ok(r) => {
            world.delivered(format_args!("{from} -> {to:?} {}", r.name()));
            if let Request::Raft {
                kind: tern_proto::RaftKind::InstallSnapshot,
                ..
            } = &r
            {
                world.count_raft_snapshot_chunk();
            }
            r
        }
        Err(e) => {
            let refusal = Response::error(tern_proto::ErrorKind::BadFrame, e.to_string());
            return vec![encode_response(&refusal)];
        }
    };
    let peer = tern_net::Peer::trusted(from, caller);
    if !handler.is_bulk(&request) {
        let vote = match (&request, node) {
            (
                Request::Raft {
                    kind: tern_proto::RaftKind::Vote,
                    payload,
                },
                Some(node),
            ) => Some((node, payload.clone())),
            _ => None,
        };
        let response = handler.handle(request, peer).await;
        if let Some((node, payload)) = vote {
            invariants::trace_vote_answer(world, node, &payload, &response);
        }
        return vec![encode_response(&response)];
    }
    let (mut body_in, body_out) = tern_net::pipe(&from.to_string());
    for chunk in &body {
        let _ = body_in.write_chunk(chunk).await;
    }
    drop(body_in);
    let (reply_in, mut reply_out) = tern_net::pipe(&from.to_string());
    handler.handle_bulk(request, peer, body_out, reply_in).await;
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = reply_out.next_chunk().await {
        frames.push(frame);
    }
    frames
}

/// A bulk call's answer once `finish` has sent the call: its id and where the answer arrives.
type PendingAnswer = Arc<Mutex<Option<(u64, oneshot::Receiver<Vec<Vec<u8>>>)>>>;

/// The writing half of a simulated bulk call: chunks wait until `finish` sends the call.
pub struct SimWriter {
    transport: SimTransport,
    addr: String,
    request: Request,
    body: Vec<Vec<u8>>,
    answer: PendingAnswer,
}

/// The reading half: the answer, then its chunks.
pub struct SimReader {
    transport: SimTransport,
    addr: String,
    answer: PendingAnswer,
    frames: Option<std::vec::IntoIter<Vec<u8>>>,
}

impl BulkWrite for SimWriter {
    async fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.body.push(bytes.to_vec());
        Ok(())
    }

    async fn finish(self) -> Result<(), TransportError> {
        let sent = self
            .transport
            .send_call(&self.addr, &self.request, self.body)
            .await?;
        *lock(&self.answer) = Some(sent);
        Ok(())
    }
}

impl SimReader {
    async fn frames(&mut self) -> Result<&mut std::vec::IntoIter<Vec<u8>>, TransportError> {
        if self.frames.is_none() {
            let Some((id, rx)) = lock(&self.answer).take() else {
                return Err(TransportError::Broken {
                    addr: self.addr.clone(),
                    reason: "read before the call was finished".into(),
                });
            };
            let frames = self
                .transport
                .await_answer(&self.addr, id, rx, BULK_DEADLINE)
                .await?;
            self.frames = Some(frames.into_iter());
        }
        Ok(self.frames.as_mut().expect("just filled"))
    }
}

impl BulkRead for SimReader {
    async fn response(&mut self) -> Result<Response, TransportError> {
        let addr = self.addr.clone();
        let first = self.frames().await?.next();
        let bad = |reason: String| TransportError::BadAnswer {
            addr: addr.clone(),
            reason,
        };
        let frame = first.ok_or_else(|| bad("no answer".into()))?;
        decode_response(&frame).map_err(|e| bad(e.to_string()))
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        Ok(self.frames().await?.next())
    }
}

impl Transport for SimTransport {
    type Writer = SimWriter;
    type Reader = SimReader;

    async fn open_bulk(
        &self,
        addr: &str,
        request: &Request,
    ) -> Result<(SimWriter, SimReader), TransportError> {
        split_addr(addr)?;
        let answer = Arc::new(Mutex::new(None));
        Ok((
            SimWriter {
                transport: self.clone(),
                addr: addr.to_string(),
                request: request.clone(),
                body: Vec::new(),
                answer: answer.clone(),
            },
            SimReader {
                transport: self.clone(),
                addr: addr.to_string(),
                answer,
                frames: None,
            },
        ))
    }

    async fn call(&self, addr: &str, request: Request) -> Result<Response, TransportError> {
        self.call_within(addr, request, CALL_DEADLINE).await
    }

    async fn call_within(
        &self,
        addr: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let (id, rx) = self.send_call(addr, &request, Vec::new()).await?;
        let frames = self.await_answer(addr, id, rx, timeout).await?;
        let frame = frames
            .into_iter()
            .next()
            .ok_or_else(|| TransportError::BadAnswer {
                addr: addr.to_string(),
                reason: "empty answer".into(),
            })?;
        decode_response(&frame).map_err(|e| TransportError::BadAnswer {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }
}
