//! The accepting side: every bidirectional stream carries one request frame and gets one
//! response frame. A bad frame gets an error answer and a log line; the node keeps serving.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tern_proto::Caller;
use tern_proto::frame::frame_len;
use tern_proto::{MAX_FRAME_BYTES, Request, Response, decode_request, encode_response};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::certs::{identity_of, serial_of};
use crate::endpoint::{QuicTransport, ReadFrameError, write_frame};
use crate::{BodyReader, BodyWriter, Revocations};

/// Who sent a request, as the certificate of its connection says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// A node bound to its id, or a client with its name and role; `Err` says why the
    /// certificate names no usable identity (every request from it is refused).
    pub identity: Result<Caller, String>,
    /// Its certificate's serial number (hex), for the revocation list.
    pub serial: String,
}

impl Peer {
    /// A peer known by what it is rather than by a certificate (the simulator's, whose
    /// messages carry no TLS).
    pub fn trusted(addr: SocketAddr, caller: Caller) -> Self {
        Self {
            addr,
            identity: Ok(caller),
            serial: String::new(),
        }
    }
}

/// What a node does with a decoded request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, peer: Peer) -> impl Future<Output = Response> + Send;

    /// Whether `request` carries or returns bulk data; such requests go to `handle_bulk`.
    fn is_bulk(&self, _request: &Request) -> bool {
        false
    }

    /// Serve a bulk request: read the caller's chunks from `body`, then answer with
    /// `reply.respond(..)`, any chunks, and `reply.finish()`.
    fn handle_bulk(
        &self,
        request: Request,
        peer: Peer,
        body: BodyReader,
        reply: BodyWriter,
    ) -> impl Future<Output = ()> + Send {
        let _ = (request, peer, body);
        async move {
            let mut reply = reply;
            let refusal = Response::error(
                tern_proto::ErrorKind::Invalid,
                "this node takes no bulk requests",
            );
            if reply.respond(&refusal).await.is_ok() {
                let _ = reply.finish().await;
            }
        }
    }
}

/// The handshake already checked the chain against the cluster CA and the revocation list;
/// here we only read who the certificate names.
fn peer_of(conn: &Connection) -> Peer {
    let leaf = conn
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());
    let Some(leaf) = leaf else {
        return Peer {
            addr: conn.remote_address(),
            identity: Err("the connection presented no certificate".into()),
            serial: String::new(),
        };
    };
    Peer {
        addr: conn.remote_address(),
        identity: identity_of(&leaf),
        serial: serial_of(&leaf).unwrap_or_default(),
    }
}

/// Connections one address may hold open at once (a node keeps one per peer; a client one).
const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Connections a node serves at once, from everyone.
const MAX_CONNECTIONS: usize = 4096;
/// How long a peer may take to send a request frame once it opened its stream.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Bytes of request frames one connection may have buffered at once: without it, a peer
/// opening many streams and sending frames slowly could pin gigabytes.
const BUFFERED_PER_CONNECTION: usize = 64 << 20;
/// Bytes of request frames a node reads and decodes at once, from all connections: a frame
/// decodes to a few times its size at most (every list field that could grow more is bounded
/// while decoding), so this bounds what requests hold before they are checked.
const DECODING_PER_NODE: usize = 64 << 20;

/// Open connections per remote address.
#[derive(Default)]
struct ConnectionCount {
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct Counted {
    count: Arc<ConnectionCount>,
    ip: IpAddr,
}

impl ConnectionCount {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Counted, String> {
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        let mine = map.entry(ip).or_default();
        if *mine >= MAX_CONNECTIONS_PER_ADDRESS {
            return Err(format!(
                "{ip} already has {MAX_CONNECTIONS_PER_ADDRESS} connections open"
            ));
        }
        if total >= MAX_CONNECTIONS {
            return Err(format!("{MAX_CONNECTIONS} connections are open"));
        }
        *mine += 1;
        Ok(Counted {
            count: self.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut map = self
            .count
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accept connections on `transport`'s endpoint until it is closed.
pub async fn serve<H: Handler>(transport: Arc<QuicTransport>, handler: Arc<H>) {
    let count = Arc::new(ConnectionCount::default());
    let decoding = Arc::new(Semaphore::new(DECODING_PER_NODE));
    while let Some(incoming) = transport.endpoint().accept().await {
        let peer = incoming.remote_address();
        let counted = match count.admit(peer.ip()) {
            Ok(counted) => counted,
            Err(reason) => {
                warn!(%peer, %reason, "connection refused");
                incoming.refuse();
                continue;
            }
        };
        let handler = handler.clone();
        let revoked = transport.revocations().clone();
        let decoding = decoding.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_connection(conn, handler, revoked, decoding).await,
                // Most often a certificate not signed by the cluster CA.
                Err(e) => warn!(%peer, error = %e, "refused connection"),
            }
            drop(counted);
        });
    }
}

async fn serve_connection<H: Handler>(
    conn: Connection,
    handler: Arc<H>,
    revoked: Revocations,
    decoding: Arc<Semaphore>,
) {
    let peer = peer_of(&conn);
    debug!(peer = %peer.addr, identity = ?peer.identity, "connection accepted");
    let buffered = Arc::new(Semaphore::new(BUFFERED_PER_CONNECTION));
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                // A certificate revoked after this connection was made: no more requests.
                if revoked.is_revoked(&peer.serial) {
                    warn!(peer = %peer.addr, serial = %peer.serial, "closing a connection whose certificate was revoked");
                    conn.close(quinn::VarInt::from_u32(2), b"certificate revoked");
                    return;
                }
                let handler = handler.clone();
                let budgets = Budgets {
                    connection: buffered.clone(),
                    node: decoding.clone(),
                };
                tokio::spawn(serve_stream(send, recv, peer.clone(), handler, budgets));
            }
            Err(e) => {
                debug!(peer = %peer.addr, reason = %e, "connection closed");
                return;
            }
        }
    }
}

/// What a request frame counts against while it is read and decoded.
struct Budgets {
    /// Its connection's buffered bytes (released once it is read).
    connection: Arc<Semaphore>,
    /// The node's bytes being decoded (held until it is decoded).
    node: Arc<Semaphore>,
}

/// The request frame of a stream, within [`REQUEST_DEADLINE`], its bytes counted against its
/// connection's budget while read and the node's until the caller drops the permit returned.
async fn read_request(
    recv: &mut RecvStream,
    budgets: &Budgets,
) -> Result<(Vec<u8>, tokio::sync::OwnedSemaphorePermit), ReadFrameError> {
    let read = async {
        let mut header = [0u8; 4];
        recv.read_exact(&mut header)
            .await
            .map_err(ReadFrameError::Stream)?;
        let len = frame_len(header, MAX_FRAME_BYTES).map_err(ReadFrameError::Frame)?;
        let _room = budgets
            .connection
            .acquire_many(len as u32)
            .await
            .map_err(|_| ReadFrameError::TimedOut)?;
        let decoding = budgets
            .node
            .clone()
            .acquire_many_owned(len as u32)
            .await
            .map_err(|_| ReadFrameError::TimedOut)?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body)
            .await
            .map_err(ReadFrameError::Stream)?;
        Ok((body, decoding))
    };
    tokio::time::timeout(REQUEST_DEADLINE, read)
        .await
        .unwrap_or(Err(ReadFrameError::TimedOut))
}

async fn serve_stream<H: Handler>(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: Peer,
    handler: Arc<H>,
    budgets: Budgets,
) {
    let read = read_request(&mut recv, &budgets)
        .await
        .map(|(body, decoding)| {
            let decoded = decode_request(&body);
            // The frame's bytes leave the node's budget once decoded.
            drop((body, decoding));
            decoded
        });
    let response = match read {
        Ok(decoded) => match decoded {
            Ok(request) if handler.is_bulk(&request) => {
                let addr = peer.addr.to_string();
                let body = BodyReader {
                    recv: crate::bulk::Receiving::Quic(recv),
                    peer: addr.clone(),
                };
                let reply = BodyWriter {
                    send: crate::bulk::Sending::Quic(send),
                    peer: addr,
                };
                handler.handle_bulk(request, peer, body, reply).await;
                return;
            }
            Ok(request) => handler.handle(request, peer).await,
            Err(e) => {
                warn!(peer = %peer.addr, error = %e, "bad request frame");
                Response::error(e.kind(), e.to_string())
            }
        },
        Err(ReadFrameError::Frame(e)) => {
            warn!(peer = %peer.addr, error = %e, "refused request frame");
            // Do not read the rest of an oversized frame; tell the sender to stop.
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            Response::error(e.kind(), e.to_string())
        }
        Err(ReadFrameError::TimedOut) => {
            warn!(peer = %peer.addr, "request frame not sent in time");
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            Response::error(
                tern_proto::ErrorKind::BadFrame,
                format!("the request frame did not arrive within {REQUEST_DEADLINE:?}"),
            )
        }
        Err(ReadFrameError::Stream(e)) => {
            warn!(peer = %peer.addr, error = %e, "truncated request frame");
            Response::error(
                tern_proto::ErrorKind::BadFrame,
                format!("truncated frame: {e}"),
            )
        }
    };
    if write_frame(&mut send, &encode_response(&response))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Wait until the peer has the answer before the stream is dropped.
        let _ = send.stopped().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tern_proto::{Request, Response, Transport};

    use super::*;
    use crate::{ClusterFiles, TlsIdentity, TransportOptions};

    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, request: Request, peer: Peer) -> Response {
            match (request, peer.identity) {
                (Request::Ping, Ok(Caller::Client { .. })) => Response::Pong { id: 7 },
                (Request::Ping, Ok(Caller::Node(id))) => Response::Pong { id: 100 + id },
                _ => Response::Ack,
            }
        }

        fn is_bulk(&self, request: &Request) -> bool {
            matches!(request, Request::Status)
        }

        /// Echo: take every chunk, answer with the byte count, send the chunks back.
        async fn handle_bulk(
            &self,
            _request: Request,
            _peer: Peer,
            mut body: BodyReader,
            mut reply: BodyWriter,
        ) {
            let mut chunks = Vec::new();
            while let Some(chunk) = body.next_chunk().await.unwrap() {
                chunks.push(chunk);
            }
            let total: usize = chunks.iter().map(Vec::len).sum();
            reply
                .respond(&Response::Written {
                    log_index: total as u64,
                })
                .await
                .unwrap();
            for chunk in &chunks {
                reply.write_chunk(chunk).await.unwrap();
            }
            reply.finish().await.unwrap();
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn mutual_tls_admits_the_cluster_and_refuses_strangers() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let cluster = ClusterFiles::new(ours.path());
        cluster.init(1).unwrap();
        ClusterFiles::new(theirs.path()).init(1).unwrap();
        // A node certificate issued later (as `tern cluster add-node` does) verifies too.
        let late = cluster.issue_node(2, 30).unwrap();
        assert_eq!(cluster.highest_node_id(), 2);

        rt().block_on(async {
            let server_id = TlsIdentity::load(&late).unwrap();
            let server = QuicTransport::server(
                ([127, 0, 0, 1], 0).into(),
                &server_id,
                TransportOptions::default(),
            )
            .unwrap();
            let addr = server.local_addr().unwrap().to_string();
            tokio::spawn(serve(server.clone(), Arc::new(Echo)));

            let member = TlsIdentity::load(&cluster.client()).unwrap();
            let member = QuicTransport::client(&member, TransportOptions::default()).unwrap();
            assert_eq!(
                member.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 7 }
            );

            let options = TransportOptions {
                call_timeout: Duration::from_secs(3),
                ..TransportOptions::default()
            };
            let stranger = TlsIdentity::load(&ClusterFiles::new(theirs.path()).client()).unwrap();
            let stranger = QuicTransport::client(&stranger, options.clone()).unwrap();
            assert!(
                stranger.call(&addr, Request::Ping).await.is_err(),
                "foreign CA must be refused"
            );

            // The server still serves its own after refusing a stranger.
            assert_eq!(
                member.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 7 }
            );

            // A node certificate is recognised as the node it names.
            let node = TlsIdentity::load(&cluster.node(1)).unwrap();
            let node = QuicTransport::client(&node, TransportOptions::default()).unwrap();
            assert_eq!(
                node.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 101 }
            );

            // A revoked certificate is refused at the handshake, and an open connection
            // presenting it is closed at its next request.
            let serial =
                crate::serial_of(&crate::read_cert(&cluster.client().cert).unwrap()).unwrap();
            server
                .revocations()
                .set(std::collections::BTreeSet::from([serial]));
            assert!(member.call(&addr, Request::Ping).await.is_err());
            let again = TlsIdentity::load(&cluster.client()).unwrap();
            let again = QuicTransport::client(&again, options.clone()).unwrap();
            assert!(again.call(&addr, Request::Ping).await.is_err());
            assert_eq!(
                node.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 101 },
                "others still served"
            );
            server.close();
        });
    }

    #[test]
    fn bulk_streams_carry_more_than_a_frame_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterFiles::new(dir.path());
        cluster.init(1).unwrap();
        rt().block_on(async {
            let id = TlsIdentity::load(&cluster.node(1)).unwrap();
            let server =
                QuicTransport::server(([127, 0, 0, 1], 0).into(), &id, TransportOptions::default())
                    .unwrap();
            let addr = server.local_addr().unwrap().to_string();
            tokio::spawn(serve(server.clone(), Arc::new(Echo)));
            let client = TlsIdentity::load(&cluster.client()).unwrap();
            let client = QuicTransport::client(&client, TransportOptions::default()).unwrap();

            // 40 MiB, more than twice the frame limit, in uneven chunks.
            let data: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
            let (mut writer, mut reader) = client.open_bulk(&addr, &Request::Status).await.unwrap();
            for piece in data.chunks(3 << 20) {
                writer.write_chunk(piece).await.unwrap();
            }
            writer.finish().await.unwrap();
            assert_eq!(
                reader.response().await.unwrap(),
                Response::Written {
                    log_index: data.len() as u64
                }
            );
            let mut back = Vec::new();
            while let Some(chunk) = reader.next_chunk().await.unwrap() {
                assert!(chunk.len() <= tern_proto::MAX_FRAME_BYTES);
                back.extend_from_slice(&chunk);
            }
            assert!(back == data, "echoed bytes differ");

            // A plain request still works on the same connection.
            assert_eq!(
                client.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 7 }
            );
        });
    }

    #[test]
    fn missing_or_garbled_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("c.pem"),
            key: dir.path().join("c.key"),
        };
        let err = TlsIdentity::load(&files).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
        std::fs::write(&files.ca, "not a certificate").unwrap();
        let err = TlsIdentity::load(&files).unwrap_err().to_string();
        assert!(err.contains("no certificate"), "{err}");
    }
}
