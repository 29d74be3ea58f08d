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
}

/// The bytes `request` asks for (a bulk request answered with `Response::Block` and its
/// bytes as chunks), checked against the announced size.
pub async fn fetch_bytes<T: Transport>(
    transport: &T,
    addr: &str,
    request: &Request,
) -> Result<Vec<u8>, String> {
    let (writer, mut reader) = transport
        .open_bulk(addr, request)
        .await
        .map_err(|e| e.to_string())?;
    writer.finish().await.map_err(|e| e.to_string())?;
    let size = match reader.response().await.map_err(|e| e.to_string())? {
        Response::Block { size } if size <= crate::MAX_BLOCK_BYTES => size,
        Response::Block { size } => {
            return Err(format!("announced {size} bytes, over the block limit"));
        }
        Response::Error(e) => return Err(e.message),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = reader.next_chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > size as usize {
            return Err("sent more bytes than announced".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != size {
        return Err(format!("announced {size} bytes, sent {}", bytes.len()));
    }
    Ok(bytes)
}

/// Block `hash` from the node at `addr`, verified against its name.
pub async fn fetch_block<T: Transport>(
    transport: &T,
    addr: &str,
    hash: &crate::BlockHash,
) -> Result<Vec<u8>, String> {
    let bytes = fetch_bytes(transport, addr, &Request::GetBlock { hash: *hash }).await?;
    if crate::BlockHash::of(&bytes) != *hash {
        return Err("bytes do not match the block's hash".into());
    }
    Ok(bytes)
}
