//! The accepting side: every bidirectional stream carries one request frame and gets one
//! response frame. A bad frame gets an error answer and a log line; the node keeps serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream};
use rustls::pki_types::{CertificateDer, ServerName};
use tern_proto::{MAX_FRAME_BYTES, Request, Response, decode_request, encode_response};
use tracing::{debug, warn};

use crate::endpoint::{QuicTransport, ReadFrameError, read_frame, write_frame};
use crate::{BodyReader, BodyWriter, NODE_SERVER_NAME};

/// What the other end of a connection proved with its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Its certificate names it a cluster node (`tern-node`).
    Node,
    /// Signed by the cluster CA, but not a node certificate: a client.
    Client,
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub role: PeerRole,
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

/// The handshake already checked the chain against the cluster CA; here we only read which
/// kind of certificate it is.
fn peer_role(conn: &Connection) -> PeerRole {
    let Some(identity) = conn.peer_identity() else {
        return PeerRole::Client;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return PeerRole::Client;
    };
    let Some(leaf) = chain.first() else {
        return PeerRole::Client;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return PeerRole::Client;
    };
    let node_name = ServerName::try_from(NODE_SERVER_NAME).expect("a valid DNS name");
    match cert.verify_is_valid_for_subject_name(&node_name) {
        Ok(()) => PeerRole::Node,
        Err(_) => PeerRole::Client,
    }
}

/// Accept connections on `transport`'s endpoint until it is closed.
pub async fn serve<H: Handler>(transport: Arc<QuicTransport>, handler: Arc<H>) {
    while let Some(incoming) = transport.endpoint().accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, handler).await,
                // Most often a certificate not signed by the cluster CA.
                Err(e) => warn!(%peer, error = %e, "refused connection"),
            }
        });
    }
}

async fn serve_connection<H: Handler>(conn: Connection, handler: Arc<H>) {
    let peer = Peer {
        addr: conn.remote_address(),
        role: peer_role(&conn),
    };
    debug!(peer = %peer.addr, role = ?peer.role, "connection accepted");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let handler = handler.clone();
                tokio::spawn(serve_stream(send, recv, peer, handler));
            }
            Err(e) => {
                debug!(peer = %peer.addr, reason = %e, "connection closed");
                return;
            }
        }
    }
}

async fn serve_stream<H: Handler>(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: Peer,
    handler: Arc<H>,
) {
    let response = match read_frame(&mut recv, MAX_FRAME_BYTES).await {
        Ok(body) => match decode_request(&body) {
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
            match (request, peer.role) {
                (Request::Ping, PeerRole::Client) => Response::Pong { id: 7 },
                (Request::Ping, PeerRole::Node) => Response::Pong { id: 8 },
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
        let late = cluster.issue_node(2).unwrap();
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
            let stranger = QuicTransport::client(&stranger, options).unwrap();
            assert!(
                stranger.call(&addr, Request::Ping).await.is_err(),
                "foreign CA must be refused"
            );

            // The server still serves its own after refusing a stranger.
            assert_eq!(
                member.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 7 }
            );

            // A node certificate is recognised as a node.
            let node = TlsIdentity::load(&cluster.node(1)).unwrap();
            let node = QuicTransport::client(&node, TransportOptions::default()).unwrap();
            assert_eq!(
                node.call(&addr, Request::Ping).await.unwrap(),
                Response::Pong { id: 8 }
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
