//! One QUIC endpoint per process: it listens (on a node) and dials (nodes and clients), and
//! keeps one connection per peer, reopened when it breaks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tern_proto::frame::{frame, frame_len};
use tern_proto::{
    FrameError, MAX_FRAME_BYTES, Request, Response, Transport, TransportError, decode_response,
    encode_request,
};

use crate::tls::{Revocations, TlsIdentity};
use crate::{NODE_SERVER_NAME, NetError};

/// Timeouts of the transport. Keep-alive must stay below the idle timeout, or idle but healthy
/// connections are dropped between calls.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// How long one call may take, connecting included.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(6),
            keep_alive: Duration::from_secs(2),
        }
    }
}

fn transport_config(options: &TransportOptions) -> Result<quinn::TransportConfig, NetError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout)
        .map_err(|e| NetError::Invalid(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(options.keep_alive));
    // Windows sized for multi-megabyte frames (snapshots now, blocks later) on one stream.
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(64 << 20));
    t.send_window(64 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    Ok(t)
}

/// Outgoing calls over QUIC + mutual TLS; the production [`Transport`].
pub struct QuicTransport {
    endpoint: Endpoint,
    /// One connection per peer, with the serial number of the certificate it presented.
    connections: Mutex<HashMap<SocketAddr, (Connection, String)>>,
    options: TransportOptions,
    transport_config: Arc<quinn::TransportConfig>,
    /// What it presents when it dials (replaced when its certificate is rotated).
    client_config: Mutex<quinn::ClientConfig>,
    /// Whether it listens (a node) or only dials (a client).
    listening: bool,
    revoked: Revocations,
}

impl QuicTransport {
    /// A listening endpoint on `listen` that also dials out (for nodes).
    pub fn server(
        listen: SocketAddr,
        identity: &TlsIdentity,
        options: TransportOptions,
    ) -> Result<Arc<Self>, NetError> {
        let transport = Arc::new(transport_config(&options)?);
        let revoked = Revocations::default();
        let mut server = identity.server_config(&revoked)?;
        server.transport_config(transport.clone());
        let endpoint = Endpoint::server(server, listen).map_err(|e| NetError::Bind {
            addr: listen.to_string(),
            reason: e.to_string(),
        })?;
        let mut client = identity.client_config(&revoked)?;
        client.transport_config(transport.clone());
        Ok(Arc::new(Self {
            endpoint,
            connections: Mutex::default(),
            options,
            transport_config: transport,
            client_config: Mutex::new(client),
            listening: true,
            revoked,
        }))
    }

    /// Present `identity` from now on (a rotated certificate): new connections, both ways,
    /// use it; connections already open keep theirs until they close.
    pub fn reload(&self, identity: &TlsIdentity) -> Result<(), NetError> {
        if self.listening {
            let mut server = identity.server_config(&self.revoked)?;
            server.transport_config(self.transport_config.clone());
            self.endpoint.set_server_config(Some(server));
        }
        let mut client = identity.client_config(&self.revoked)?;
        client.transport_config(self.transport_config.clone());
        *self.client_config.lock().unwrap_or_else(|p| p.into_inner()) = client;
        Ok(())
    }

    /// The revocation list this endpoint's handshakes check (the node keeps it current).
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// A dial-only endpoint on an ephemeral port (for clients).
    pub fn client(
        identity: &TlsIdentity,
        options: TransportOptions,
    ) -> Result<Arc<Self>, NetError> {
        let any: SocketAddr = ([0, 0, 0, 0], 0).into();
        let endpoint = Endpoint::client(any).map_err(|e| NetError::Bind {
            addr: any.to_string(),
            reason: e.to_string(),
        })?;
        let revoked = Revocations::default();
        let transport = Arc::new(transport_config(&options)?);
        let mut client = identity.client_config(&revoked)?;
        client.transport_config(transport.clone());
        Ok(Arc::new(Self {
            endpoint,
            connections: Mutex::default(),
            options,
            transport_config: transport,
            client_config: Mutex::new(client),
            listening: false,
            revoked,
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Stop accepting and close every connection.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"shutting down");
    }

    async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
        if let Ok(sa) = addr.parse() {
            return Ok(sa);
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.into(),
            reason,
        };
        tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("address does not resolve".into()))
    }

    async fn connection(&self, addr: &str) -> Result<Connection, TransportError> {
        let sa = Self::resolve(addr).await?;
        if let Some((conn, serial)) = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sa)
        {
            // A peer whose certificate was revoked after this connection was made is dialled
            // again (and refused at the handshake) instead of being talked to on.
            if self.revoked.is_revoked(serial) {
                conn.close(quinn::VarInt::from_u32(2), b"certificate revoked");
            } else if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.into(),
            reason,
        };
        let config = self
            .client_config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let connecting = self
            .endpoint
            .connect_with(config, sa, NODE_SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(self.options.connect_timeout, connecting)
            .await
            .map_err(|_| TransportError::Timeout {
                addr: addr.into(),
                millis: self.options.connect_timeout.as_millis() as u64,
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        let serial = conn
            .peer_identity()
            .and_then(|identity| {
                identity
                    .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| crate::certs::serial_of(chain.first()?).ok())
            .unwrap_or_default();
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sa, (conn.clone(), serial));
        Ok(conn)
    }

    /// Drop the cached connection to `addr`; the next call dials afresh.
    pub fn forget(&self, addr: &str) {
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            self.connections
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&sa);
        }
    }

    /// Start a bulk call: the request frame is sent; write chunks with the returned writer
    /// (then finish it) and read the answer and any chunks back with the reader.
    pub async fn open_bulk(
        &self,
        addr: &str,
        request: &Request,
    ) -> Result<(crate::BodyWriter, crate::BodyReader), TransportError> {
        let conn = self.connection(addr).await?;
        let broken = |reason: String| TransportError::Broken {
            addr: addr.into(),
            reason,
        };
        let (mut send, recv) = conn.open_bi().await.map_err(|e| {
            self.forget(addr);
            broken(e.to_string())
        })?;
        write_frame(&mut send, &encode_request(request))
            .await
            .map_err(|e| broken(e.to_string()))?;
        Ok((
            crate::BodyWriter {
                send: crate::bulk::Sending::Quic(send),
                peer: addr.to_string(),
            },
            crate::BodyReader {
                recv: crate::bulk::Receiving::Quic(recv),
                peer: addr.to_string(),
            },
        ))
    }

    /// Send `bytes` exactly as given (no framing added) and read one framed response. For tests
    /// of what a node does with malformed or oversized input.
    pub async fn call_raw(&self, addr: &str, bytes: &[u8]) -> Result<Response, TransportError> {
        let conn = self.connection(addr).await?;
        let broken = |reason: String| TransportError::Broken {
            addr: addr.into(),
            reason,
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(e.to_string()))?;
        // The node may refuse before reading everything we send; its answer is what matters.
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        read_response(addr, &mut recv).await
    }

    async fn call_once(&self, addr: &str, payload: &[u8]) -> Result<Response, TransportError> {
        let conn = self.connection(addr).await?;
        let broken = |reason: String| TransportError::Broken {
            addr: addr.into(),
            reason,
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(e.to_string()))?;
        write_frame(&mut send, payload)
            .await
            .map_err(|e| broken(e.to_string()))?;
        send.finish().map_err(|e| broken(e.to_string()))?;
        read_response(addr, &mut recv).await
    }

    /// One request, one response, within `timeout`.
    pub async fn call_with_timeout(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let payload = encode_request(request);
        if payload.len() > MAX_FRAME_BYTES {
            return Err(TransportError::BadAnswer {
                addr: addr.into(),
                reason: FrameError::TooLarge {
                    size: payload.len(),
                    limit: MAX_FRAME_BYTES,
                }
                .to_string(),
            });
        }
        let attempt = async {
            match self.call_once(addr, &payload).await {
                // A cached connection may have died since its last use: redial once.
                Err(TransportError::Broken { .. }) => {
                    self.forget(addr);
                    self.call_once(addr, &payload).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => {
                if matches!(
                    result,
                    Err(TransportError::Broken { .. } | TransportError::Unreachable { .. })
                ) {
                    self.forget(addr);
                }
                result
            }
            Err(_) => {
                // A peer that died without closing leaves a connection that looks open until
                // its idle timeout; redial next time rather than keep writing into it.
                self.forget(addr);
                Err(TransportError::Timeout {
                    addr: addr.into(),
                    millis: timeout.as_millis() as u64,
                })
            }
        }
    }
}

impl Transport for QuicTransport {
    type Writer = crate::BodyWriter;
    type Reader = crate::BodyReader;

    async fn open_bulk(
        &self,
        addr: &str,
        request: &Request,
    ) -> Result<(Self::Writer, Self::Reader), TransportError> {
        QuicTransport::open_bulk(self, addr, request).await
    }

    async fn call(&self, addr: &str, request: Request) -> Result<Response, TransportError> {
        self.call_with_timeout(addr, &request, self.options.call_timeout)
            .await
    }

    async fn call_within(
        &self,
        addr: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.call_with_timeout(addr, &request, timeout).await
    }

    fn forget(&self, addr: &str) {
        QuicTransport::forget(self, addr)
    }
}

pub(crate) async fn write_frame(
    send: &mut SendStream,
    payload: &[u8],
) -> Result<(), quinn::WriteError> {
    send.write_all(&frame(payload)).await
}

/// Read one frame of at most `limit` bytes.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Vec<u8>, ReadFrameError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(ReadFrameError::Stream)?;
    let len = frame_len(header, limit).map_err(ReadFrameError::Frame)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(ReadFrameError::Stream)?;
    Ok(body)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadFrameError {
    #[error("{0}")]
    Frame(FrameError),
    #[error("stream ended early: {0}")]
    Stream(quinn::ReadExactError),
    #[error("the frame did not arrive in time")]
    TimedOut,
}

async fn read_response(addr: &str, recv: &mut RecvStream) -> Result<Response, TransportError> {
    let bad = |reason: String| TransportError::BadAnswer {
        addr: addr.into(),
        reason,
    };
    match read_frame(recv, MAX_FRAME_BYTES).await {
        Ok(body) => decode_response(&body).map_err(|e| bad(e.to_string())),
        Err(ReadFrameError::Frame(e)) => Err(bad(e.to_string())),
        Err(ReadFrameError::Stream(e)) => Err(TransportError::Broken {
            addr: addr.into(),
            reason: e.to_string(),
        }),
        Err(e @ ReadFrameError::TimedOut) => Err(bad(e.to_string())),
    }
}
