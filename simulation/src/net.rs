//! [`SimTransport`]: tern's `Transport` seam over turmoil's simulated UDP.
//!
//! Every call is one datagram and its answer another (a bulk call carries its body in the
//! same datagram), so turmoil's latency, loss and partitions act on whole messages, the level
//! at which tern's own retries and deadlines work. On top, the transport duplicates a message
//! when the seed says so. Incoming calls go to the real `NodeService` through the same
//! `tern_net::Handler` the QUIC server uses; bulk bodies travel through `tern_net::pipe`.
//!
//! A bulk answer streams, as a QUIC stream does: what the handler has written goes out in
//! numbered parts (one datagram when the handler ends quickly; every [`FLUSH`] while it runs,
//! an empty part every [`KEEPALIVE`] when it writes nothing), and the caller acknowledges each
//! part but the last. Unacknowledged parts are sent again, and a stream whose caller stops
//! acknowledging for [`IDLE`], or that the caller dropped, is closed under the handler, which
//! sees its writes fail: so a coordinator notices a client that went away, as over QUIC.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_proto::{
    BulkRead, BulkWrite, Caller, Request, Response, Transport, TransportError, decode_request,
    decode_response, encode_request, encode_response,
};
use tokio::sync::{mpsc, oneshot};
use turmoil::net::UdpSocket;

use crate::invariants;
use crate::world::World;

/// The port every simulated node serves on.
pub const PORT: u16 = 7000;
/// Deadline of `call` (QUIC's default deadline is of the same order).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// A bulk stream with no part (or no acknowledgement) for this long is broken (QUIC gives up
/// on a silent peer after its 6 s idle timeout).
const IDLE: Duration = Duration::from_secs(10);
/// A running bulk answer sends what it has this often...
const FLUSH: Duration = Duration::from_millis(100);
/// ...and an empty part this often when it has nothing, so the caller knows it runs.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// An unacknowledged part goes out again after this long.
const RESEND: Duration = Duration::from_millis(500);
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
    /// Part `seq` of bulk call `id`'s answer; `last` ends it.
    Part {
        id: u64,
        seq: u32,
        frames: Vec<Vec<u8>>,
        last: bool,
    },
    /// The caller has part `seq` of bulk call `id`.
    Ack {
        id: u64,
        seq: u32,
    },
    /// The caller no longer reads bulk call `id`.
    Close {
        id: u64,
    },
}

/// What reaches a running bulk answer from its caller.
enum FromCaller {
    Ack(u32),
    Close,
}

struct Inner {
    socket: UdpSocket,
    /// Calls waiting for their answer, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Vec<Vec<u8>>>>>,
    /// Bulk calls reading their answer's parts, by id.
    reading: Mutex<HashMap<u64, mpsc::UnboundedSender<(u32, Vec<Vec<u8>>, bool)>>>,
    /// Bulk answers this host is sending, by caller and call id.
    answering: Mutex<HashMap<(SocketAddr, u64), mpsc::UnboundedSender<FromCaller>>>,
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
                reading: Mutex::default(),
                answering: Mutex::default(),
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

    fn new_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Send call `id` to `addr`.
    async fn send_call(
        &self,
        addr: &str,
        id: u64,
        request: &Request,
        body: Vec<Vec<u8>>,
    ) -> Result<SocketAddr, TransportError> {
        let (host, port) = split_addr(addr)?;
        let to = SocketAddr::new(turmoil::lookup(host.as_str()), port);
        let wire = Wire::Call {
            id,
            from: self.inner.identity.clone(),
            request: encode_request(request),
            body,
        };
        self.send(to, &wire).await;
        Ok(to)
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
        self.receive(Some(handler)).await
    }

    /// Receive answers only (a client host serves nothing).
    pub async fn receive_answers(self) {
        self.receive::<NoHandler>(None).await
    }

    async fn receive<H: tern_net::Handler>(self, handler: Option<Arc<H>>) {
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
                Wire::Part {
                    id,
                    seq,
                    frames,
                    last,
                } => {
                    let reader = lock(&self.inner.reading).get(&id).cloned();
                    let reply = match reader {
                        Some(reader) if reader.send((seq, frames, last)).is_ok() => {
                            (!last).then_some(Wire::Ack { id, seq })
                        }
                        // Nobody reads this answer any more: its sender should stop.
                        _ => (!last).then_some(Wire::Close { id }),
                    };
                    if let Some(reply) = reply {
                        self.send(from, &reply).await;
                    }
                }
                Wire::Ack { id, seq } => self.to_answer(from, id, FromCaller::Ack(seq)),
                Wire::Close { id } => self.to_answer(from, id, FromCaller::Close),
                Wire::Call {
                    id,
                    from: caller,
                    request,
                    body,
                } => {
                    let Some(handler) = handler.clone() else {
                        continue;
                    };
                    let request = decode_request(&request);
                    let stream = match &request {
                        Ok(r) if handler.is_bulk(r) => {
                            let mut answering = lock(&self.inner.answering);
                            // A copy of a bulk call already being answered: one stream only.
                            if answering.contains_key(&(from, id)) {
                                continue;
                            }
                            let (tx, rx) = mpsc::unbounded_channel();
                            answering.insert((from, id), tx);
                            Some(rx)
                        }
                        _ => None,
                    };
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.answer(&*handler, from, id, caller, request, body, stream)
                            .await;
                    });
                }
            }
        }
    }

    fn to_answer(&self, caller: SocketAddr, id: u64, what: FromCaller) {
        if let Some(answer) = lock(&self.inner.answering).get(&(caller, id)) {
            let _ = answer.send(what);
        }
    }

    /// Run call `id` from `from` through `handler` and send its answer: in parts, read from
    /// `stream`'s caller, for a bulk call. The answers of this node to Raft vote requests go
    /// into the trace (who voted for whom, and when).
    #[allow(clippy::too_many_arguments)]
    async fn answer<H: tern_net::Handler>(
        &self,
        handler: &H,
        from: SocketAddr,
        id: u64,
        caller: Caller,
        request: Result<Request, tern_proto::FrameError>,
        body: Vec<Vec<u8>>,
        stream: Option<mpsc::UnboundedReceiver<FromCaller>>,
    ) {
        let world = &self.inner.world;
        let node = self.inner.identity.node_id();
        let to = self.inner.socket.local_addr().ok();
        let request = match request {
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
                let frames = vec![encode_response(&refusal)];
                self.send(from, &Wire::Answer { id, frames }).await;
                return;
            }
        };
        let peer = tern_net::Peer::trusted(from, caller);
        let Some(from_caller) = stream else {
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
            let frames = vec![encode_response(&response)];
            self.send(from, &Wire::Answer { id, frames }).await;
            return;
        };
        let (mut body_in, body_out) = tern_net::pipe(&from.to_string());
        for chunk in &body {
            let _ = body_in.write_chunk(chunk).await;
        }
        drop(body_in);
        let (reply_in, reply_out) = tern_net::pipe(&from.to_string());
        let stream = self.stream_answer(from, id, reply_out, from_caller);
        let handled = handler.handle_bulk(request, peer, body_out, reply_in);
        // The handler and the stream run together: the stream sends what the handler writes
        // as it writes it, and closes under it when the caller goes away.
        tokio::join!(handled, stream);
        lock(&self.inner.answering).remove(&(from, id));
    }

    /// Send what the handler writes to `reply` as the parts of call `id`'s answer, until the
    /// handler ends (and earlier parts are acknowledged) or the caller goes away. Dropping
    /// `reply` makes the handler's next write fail.
    async fn stream_answer(
        &self,
        to: SocketAddr,
        id: u64,
        mut reply: tern_net::BodyReader,
        mut from_caller: mpsc::UnboundedReceiver<FromCaller>,
    ) {
        let start = tokio::time::Instant::now();
        let mut frames = Vec::new();
        let mut seq = 0u32;
        // Parts sent and not acknowledged: their datagram and when it last went out.
        let mut unacked: BTreeMap<u32, (Wire, tokio::time::Instant)> = BTreeMap::new();
        let (mut last_sent, mut last_heard) = (start, start);
        let mut ended = false;
        loop {
            let now = tokio::time::Instant::now();
            if now.duration_since(last_heard) > IDLE && !unacked.is_empty() {
                return;
            }
            if ended {
                if unacked.is_empty() {
                    return;
                }
            } else {
                let flush = (!frames.is_empty() && now.duration_since(start) >= FLUSH)
                    || now.duration_since(last_sent) >= KEEPALIVE;
                if flush {
                    let part = Wire::Part {
                        id,
                        seq,
                        frames: std::mem::take(&mut frames),
                        last: false,
                    };
                    self.send(to, &part).await;
                    if unacked.is_empty() {
                        last_heard = now;
                    }
                    unacked.insert(seq, (part, now));
                    (seq, last_sent) = (seq + 1, now);
                }
            }
            for (part, sent) in unacked.values_mut() {
                if now.duration_since(*sent) >= RESEND {
                    self.send(to, part).await;
                    *sent = now;
                }
            }
            let tick = tokio::time::sleep(FLUSH);
            tokio::select! {
                // Biased: polled in order, so a seed replays exactly under the simulator.
                biased;
                chunk = reply.next_chunk(), if !ended => match chunk {
                    Ok(Some(frame)) => frames.push(frame),
                    _ => {
                        ended = true;
                        let part = Wire::Part { id, seq, frames: std::mem::take(&mut frames), last: true };
                        self.send(to, &part).await;
                    }
                },
                heard = from_caller.recv() => match heard {
                    Some(FromCaller::Ack(acked)) => {
                        unacked.remove(&acked);
                        last_heard = tokio::time::Instant::now();
                    }
                    Some(FromCaller::Close) | None => return,
                },
                _ = tick => {}
            }
        }
    }
}

/// The handler of a host that serves nothing (a client).
struct NoHandler;

impl tern_net::Handler for NoHandler {
    async fn handle(&self, _: Request, _: tern_net::Peer) -> Response {
        Response::error(tern_proto::ErrorKind::Forbidden, "a client serves nothing")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writing half of a simulated bulk call: chunks wait until `finish` sends the call.
pub struct SimWriter {
    transport: SimTransport,
    addr: String,
    id: u64,
    request: Request,
    body: Vec<Vec<u8>>,
}

/// The reading half: the answer's parts, in order, as they arrive.
pub struct SimReader {
    transport: SimTransport,
    addr: String,
    id: u64,
    parts: mpsc::UnboundedReceiver<(u32, Vec<Vec<u8>>, bool)>,
    /// Parts that came before one they follow.
    early: BTreeMap<u32, (Vec<Vec<u8>>, bool)>,
    next_seq: u32,
    frames: std::collections::VecDeque<Vec<u8>>,
    ended: bool,
}

impl BulkWrite for SimWriter {
    async fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.body.push(bytes.to_vec());
        Ok(())
    }

    async fn finish(self) -> Result<(), TransportError> {
        self.transport
            .send_call(&self.addr, self.id, &self.request, self.body)
            .await
            .map(|_| ())
    }
}

impl SimReader {
    /// The next frame, waiting for parts as they come; `None` once the last part is read.
    async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            while let Some((frames, last)) = self.early.remove(&self.next_seq) {
                self.next_seq += 1;
                self.frames.extend(frames);
                self.ended |= last;
                if last {
                    break;
                }
            }
            if !self.frames.is_empty() || self.ended {
                continue;
            }
            let part = tokio::time::timeout(IDLE, self.parts.recv()).await;
            match part {
                Ok(Some((seq, frames, last))) if seq >= self.next_seq => {
                    self.early.insert(seq, (frames, last));
                }
                // A part sent again after it arrived.
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(TransportError::Broken {
                        addr: self.addr.clone(),
                        reason: "the transport closed".into(),
                    });
                }
                Err(_) => {
                    return Err(TransportError::Timeout {
                        addr: self.addr.clone(),
                        millis: IDLE.as_millis() as u64,
                    });
                }
            }
        }
    }
}

impl Drop for SimReader {
    /// The answer's next part finds nobody reading, and its sender is told to stop.
    fn drop(&mut self) {
        lock(&self.transport.inner.reading).remove(&self.id);
    }
}

impl BulkRead for SimReader {
    async fn response(&mut self) -> Result<Response, TransportError> {
        let addr = self.addr.clone();
        let bad = |reason: String| TransportError::BadAnswer {
            addr: addr.clone(),
            reason,
        };
        let frame = self
            .next_frame()
            .await?
            .ok_or_else(|| bad("no answer".into()))?;
        decode_response(&frame).map_err(|e| bad(e.to_string()))
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.next_frame().await
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
        let id = self.new_id();
        let (tx, parts) = mpsc::unbounded_channel();
        lock(&self.inner.reading).insert(id, tx);
        Ok((
            SimWriter {
                transport: self.clone(),
                addr: addr.to_string(),
                id,
                request: request.clone(),
                body: Vec::new(),
            },
            SimReader {
                transport: self.clone(),
                addr: addr.to_string(),
                id,
                parts,
                early: BTreeMap::new(),
                next_seq: 0,
                frames: Default::default(),
                ended: false,
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
        let id = self.new_id();
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiting).insert(id, tx);
        if let Err(e) = self.send_call(addr, id, &request, Vec::new()).await {
            lock(&self.inner.waiting).remove(&id);
            return Err(e);
        }
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
