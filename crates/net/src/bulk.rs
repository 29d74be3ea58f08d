//! Bulk data on one stream: after the request frame, either side may send any number of
//! further frames (chunks of at most `MAX_FRAME_BYTES`), ending with the end of its half of
//! the stream. Blocks travel this way, so no single message has to hold a whole partition.
//!
//! The caller opens a bulk call with `QuicTransport::open_bulk`, writes its chunks with a
//! [`BodyWriter`] and reads the answer and the returned chunks with a [`BodyReader`]. The
//! node's [`Handler`](crate::Handler) takes such requests in `handle_bulk`, with the same pair.
//!
//! [`pipe`] makes a pair joined in memory instead of by a QUIC stream: the simulator hands
//! bulk requests to the real handler that way.

use quinn::{RecvStream, SendStream};
use tern_proto::frame::frame_len;
use tern_proto::{MAX_FRAME_BYTES, Response, TransportError, decode_response, encode_response};

/// The sending half of a bulk call.
pub struct BodyWriter {
    pub(crate) send: Sending,
    pub(crate) peer: String,
}

/// The receiving half of a bulk call.
pub struct BodyReader {
    pub(crate) recv: Receiving,
    pub(crate) peer: String,
}

pub(crate) enum Sending {
    Quic(SendStream),
    /// One frame per message; dropping the sender ends the body.
    Memory(tokio::sync::mpsc::UnboundedSender<Vec<u8>>),
}

pub(crate) enum Receiving {
    Quic(RecvStream),
    Memory(tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>),
}

/// A writer and the reader that receives what it writes, joined in memory. `peer` names the
/// other side in errors.
pub fn pipe(peer: &str) -> (BodyWriter, BodyReader) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        BodyWriter {
            send: Sending::Memory(tx),
            peer: peer.to_string(),
        },
        BodyReader {
            recv: Receiving::Memory(rx),
            peer: peer.to_string(),
        },
    )
}

impl BodyWriter {
    fn broken(&self, reason: impl ToString) -> TransportError {
        TransportError::Broken {
            addr: self.peer.clone(),
            reason: reason.to_string(),
        }
    }

    async fn send_frame(&mut self, piece: &[u8]) -> Result<(), TransportError> {
        let sent = match &mut self.send {
            Sending::Quic(send) => {
                let header = send.write_all(&(piece.len() as u32).to_be_bytes()).await;
                match header {
                    Ok(()) => send.write_all(piece).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Sending::Memory(tx) => tx
                .send(piece.to_vec())
                .map_err(|_| "the reader went away".to_string()),
        };
        sent.map_err(|e| self.broken(e))
    }

    /// Send one chunk (split into frames if it is larger than a frame may be).
    pub async fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        for piece in bytes.chunks(MAX_FRAME_BYTES).filter(|p| !p.is_empty()) {
            self.send_frame(piece).await?;
        }
        Ok(())
    }

    /// Send the answer that precedes any returned chunks (the serving side).
    pub async fn respond(&mut self, response: &Response) -> Result<(), TransportError> {
        let payload = encode_response(response);
        self.send_frame(&payload).await
    }

    /// No more chunks from this side.
    pub async fn finish(self) -> Result<(), TransportError> {
        match self.send {
            Sending::Quic(mut send) => {
                send.finish().map_err(|e| TransportError::Broken {
                    addr: self.peer.clone(),
                    reason: e.to_string(),
                })?;
                // Returns once the peer has everything, or has stopped reading.
                let _ = send.stopped().await;
            }
            Sending::Memory(tx) => drop(tx),
        }
        Ok(())
    }
}

impl BodyReader {
    /// The next chunk, or `None` when the other side has finished.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let bad = |reason: String| TransportError::BadAnswer {
            addr: self.peer.clone(),
            reason,
        };
        let recv = match &mut self.recv {
            Receiving::Quic(recv) => recv,
            Receiving::Memory(rx) => return Ok(rx.recv().await),
        };
        let mut header = [0u8; 4];
        match recv.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => {
                return Err(TransportError::Broken {
                    addr: self.peer.clone(),
                    reason: e.to_string(),
                });
            }
        }
        let len = frame_len(header, MAX_FRAME_BYTES).map_err(|e| bad(e.to_string()))?;
        let mut chunk = vec![0u8; len];
        recv.read_exact(&mut chunk)
            .await
            .map_err(|e| TransportError::Broken {
                addr: self.peer.clone(),
                reason: e.to_string(),
            })?;
        Ok(Some(chunk))
    }

    /// The answer that precedes the returned chunks (the calling side).
    pub async fn response(&mut self) -> Result<Response, TransportError> {
        let frame = self
            .next_chunk()
            .await?
            .ok_or_else(|| TransportError::BadAnswer {
                addr: self.peer.clone(),
                reason: "stream ended before the answer".into(),
            })?;
        decode_response(&frame).map_err(|e| TransportError::BadAnswer {
            addr: self.peer.clone(),
            reason: e.to_string(),
        })
    }
}

impl tern_proto::BulkWrite for BodyWriter {
    async fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        BodyWriter::write_chunk(self, bytes).await
    }
    async fn finish(self) -> Result<(), TransportError> {
        BodyWriter::finish(self).await
    }
}

impl tern_proto::BulkRead for BodyReader {
    async fn response(&mut self) -> Result<Response, TransportError> {
        BodyReader::response(self).await
    }
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        BodyReader::next_chunk(self).await
    }
}
