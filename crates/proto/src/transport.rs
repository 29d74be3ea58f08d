//! The network seam: how node logic sends one request to another node and awaits its answer.
//!
//! Production uses QUIC with mutual TLS (`tern_net::QuicTransport`); the simulator substitutes
//! its own implementation that delivers, delays, drops or duplicates messages under a seed.

use std::future::Future;
use std::time::Duration;

use crate::message::{Request, Response};

/// Why a request got no answer. A [`Response::Error`] is an answer, not a transport error.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr} did not answer within {millis} ms")]
    Timeout { addr: String, millis: u64 },
    #[error("connection to {addr} broke: {reason}")]
    Broken { addr: String, reason: String },
    #[error("bad answer from {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
}

/// The sending half of a bulk call: chunks, then the end.
pub trait BulkWrite: Send {
    fn write_chunk(
        &mut self,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    fn finish(self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The receiving half of a bulk call: the answer, then chunks until `None`.
pub trait BulkRead: Send {
    fn response(&mut self) -> impl Future<Output = Result<Response, TransportError>> + Send;
    fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, TransportError>> + Send;
}

/// Request/response calls to a node named by its address.
pub trait Transport: Send + Sync + 'static {
    type Writer: BulkWrite;
    type Reader: BulkRead;

    /// Start a bulk call: `request` is sent; write chunks, finish, then read the answer.
    fn open_bulk(
        &self,
        addr: &str,
        request: &Request,
    ) -> impl Future<Output = Result<(Self::Writer, Self::Reader), TransportError>> + Send;

    /// One call with the transport's default deadline.
    fn call(
        &self,
        addr: &str,
        request: Request,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;

    /// One call that gives up after `timeout`. Implementations should treat a timeout as a
    /// sign the peer may be gone (for QUIC: drop the cached connection, so a restarted peer is
    /// redialled instead of waiting out the old connection's idle timeout).
    fn call_within(
        &self,
        addr: &str,
        request: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;

    /// Forget what is cached about `addr` (for QUIC: its connection), so the next call dials
    /// afresh; a peer that restarted leaves a dead connection behind.
    fn forget(&self, _addr: &str) {}
}

/// Send `bytes` as the body of bulk `request` to `addr`, in chunks of at most `chunk` bytes,
/// and return the answer. A node may refuse a body before reading it (its size, no room) and
/// stop reading: then its answer, which says why, is returned rather than the broken write.
pub async fn send_body<T: Transport>(
    transport: &T,
    addr: &str,
    request: &Request,
    bytes: &[u8],
    chunk: usize,
) -> Result<Response, TransportError> {
    let (mut writer, mut reader) = transport.open_bulk(addr, request).await?;
    let mut sent = Ok(());
    for piece in bytes.chunks(chunk.max(1)) {
        sent = writer.write_chunk(piece).await;
        if sent.is_err() {
            break;
        }
    }
    if sent.is_ok() {
        sent = writer.finish().await;
    }
    match (reader.response().await, sent) {
        (Ok(refusal @ Response::Error(_)), _) => Ok(refusal),
        (_, Err(e)) | (Err(e), Ok(())) => Err(e),
        (Ok(answer), Ok(())) => Ok(answer),
    }
}

/// Why a bulk fetch ([`fetch_bytes`], [`fetch_block`]) brought no bytes. Callers act on the
/// kind: a [`FetchError::Transport`] may heal by redialling, a refusal or a bad body will not.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node answered with an error (for example: it does not hold what was asked).
    #[error("{addr} refused: {}", reply.message)]
    Refused {
        addr: String,
        reply: crate::ErrorReply,
    },
    /// The node answered, but not with the announced bytes (or not with bytes at all).
    #[error("bad body from {addr}: {reason}")]
    BadBody { addr: String, reason: String },
}

/// The bytes `request` asks for (a bulk request answered with `Response::Block` and its
/// bytes as chunks), checked against the announced size.
pub async fn fetch_bytes<T: Transport>(
    transport: &T,
    addr: &str,
    request: &Request,
) -> Result<Vec<u8>, FetchError> {
    let bad = |reason: String| FetchError::BadBody {
        addr: addr.to_string(),
        reason,
    };
    let (writer, mut reader) = transport.open_bulk(addr, request).await?;
    writer.finish().await?;
    let size = match reader.response().await? {
        Response::Block { size } if size <= crate::MAX_BLOCK_BYTES => size,
        Response::Block { size } => {
            return Err(bad(format!("announced {size} bytes, over the block limit")));
        }
        Response::Error(reply) => {
            return Err(FetchError::Refused {
                addr: addr.to_string(),
                reply,
            });
        }
        other => {
            let shown: String = format!("{other:?}").chars().take(200).collect();
            return Err(bad(format!("unexpected answer {shown}")));
        }
    };
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = reader.next_chunk().await? {
        if bytes.len() + chunk.len() > size as usize {
            return Err(bad("sent more bytes than announced".into()));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != size {
        return Err(bad(format!("announced {size} bytes, sent {}", bytes.len())));
    }
    Ok(bytes)
}

/// Block `hash` from the node at `addr`, verified against its name.
pub async fn fetch_block<T: Transport>(
    transport: &T,
    addr: &str,
    hash: &crate::BlockHash,
) -> Result<Vec<u8>, FetchError> {
    let bytes = fetch_bytes(transport, addr, &Request::GetBlock { hash: *hash }).await?;
    if crate::BlockHash::of(&bytes) != *hash {
        return Err(FetchError::BadBody {
            addr: addr.to_string(),
            reason: "bytes do not match the block's hash".into(),
        });
    }
    Ok(bytes)
}
