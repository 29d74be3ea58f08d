//! The wire format: `[u32 big-endian length][payload]`, where the payload is a postcard-encoded
//! envelope `(version: u16, body)`. One request and one response travel per QUIC stream; a
//! stream may carry further frames after them for bulk data.
//!
//! The length is checked against [`MAX_FRAME_BYTES`] before a byte of the body is read, and
//! the decoders return [`FrameError`] (never panic) on arbitrary input.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::message::{ErrorKind, Request, Response};

/// Bumped on any incompatible change to [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u16 = 7;

/// No single frame may be larger; bulk data is split into frames below this.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {reason}")]
    Malformed { reason: String },
    #[error("protocol version {got} is not supported (this node speaks {want})")]
    UnsupportedVersion { got: u16, want: u16 },
}

impl FrameError {
    /// The kind an error answer to this frame carries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FrameError::TooLarge { .. } => ErrorKind::TooLarge,
            FrameError::Malformed { .. } => ErrorKind::BadFrame,
            FrameError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
        }
    }
}

/// The length announced by a frame header, checked against `limit`.
pub fn frame_len(header: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let size = u32::from_be_bytes(header) as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    Ok(size)
}

/// Prefix `payload` with its length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serializing our own plain-data enums into a Vec cannot fail.
    postcard::to_allocvec(&(PROTOCOL_VERSION, body)).expect("postcard encodes plain data")
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    crate::graph::take_refusal();
    let malformed = |e: postcard::Error| FrameError::Malformed {
        reason: crate::graph::take_refusal()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
    };
    let (version, rest) = postcard::take_from_bytes::<u16>(payload).map_err(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion {
            got: version,
            want: PROTOCOL_VERSION,
        });
    }
    let (body, rest) = postcard::take_from_bytes::<T>(rest).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed {
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(body)
}

pub fn encode_request(request: &Request) -> Vec<u8> {
    encode(request)
}

pub fn encode_response(response: &Response) -> Vec<u8> {
    encode(response)
}

pub fn decode_request(payload: &[u8]) -> Result<Request, FrameError> {
    decode(payload)
}

pub fn decode_response(payload: &[u8]) -> Result<Response, FrameError> {
    decode(payload)
}

/// A graph submission as it travels in `Request::SubmitGraph`'s body (versioned as frames).
pub fn encode_submission(submission: &crate::Submission) -> Vec<u8> {
    encode(submission)
}

/// Refused past [`crate::MAX_GRAPH_ITEMS`] keys, values and names, as it decodes.
pub fn decode_submission(payload: &[u8]) -> Result<crate::Submission, FrameError> {
    crate::graph::with_item_budget(crate::MAX_GRAPH_ITEMS, || decode_submission_any(payload))
}

/// A submission decoded within whatever item budget the caller set.
pub(crate) fn decode_submission_any(payload: &[u8]) -> Result<crate::Submission, FrameError> {
    decode(payload)
}

/// Parts (a `FetchShuffle` answer's buckets) one after the other in one body: each as its
/// length (u64 little-endian, then 8 zero bytes) and its bytes, padded with zeros to a multiple
/// of 16, so every part starts 16-byte aligned and Arrow reads its columns in place.
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let size = parts
        .iter()
        .map(|p| PART_HEADER + p.len().next_multiple_of(16))
        .sum();
    let mut body = Vec::with_capacity(size);
    for part in parts {
        body.extend_from_slice(&(part.len() as u64).to_le_bytes());
        body.extend_from_slice(&[0; PART_HEADER - 8]);
        body.extend_from_slice(part);
        body.resize(body.len().next_multiple_of(16), 0);
    }
    body
}

const PART_HEADER: usize = 16;

/// Where each part of a body made by [`join_parts`] lies in it.
pub fn split_parts(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>, FrameError> {
    let malformed = |reason: String| FrameError::Malformed { reason };
    let mut parts = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let header = body
            .get(at..at + PART_HEADER)
            .ok_or_else(|| malformed(format!("a part header cut short at byte {at}")))?;
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let start = at + PART_HEADER;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= body.len())
            .ok_or_else(|| {
                malformed(format!(
                    "a part of {len} bytes at byte {at} runs past the end"
                ))
            })?;
        parts.push(start..end);
        at = end.next_multiple_of(16);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use proptest::prelude::*;

    #[test]
    fn parts_come_back_as_they_went_and_aligned() {
        let parts: Vec<Vec<u8>> = vec![vec![1; 5], vec![], vec![2; 16], vec![3; 17]];
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let body = join_parts(&refs);
        let ranges = split_parts(&body).unwrap();
        assert_eq!(ranges.len(), parts.len());
        for (range, part) in ranges.iter().zip(&parts) {
            assert_eq!(range.start % 16, 0);
            assert_eq!(&body[range.clone()], part.as_slice());
        }
        assert!(split_parts(&body[..body.len() - 20]).is_err());
        assert!(split_parts(&[0; 7]).is_err());
    }

    proptest! {
        #[test]
        fn split_parts_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = split_parts(&body);
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = vec![
            Request::Ping,
            Request::Join(NodeRecord {
                id: 4,
                addr: "127.0.0.1:7404".into(),
                zone: "a".into(),
                capacity_bytes: 1 << 30,
                state: NodeState::Up,
            }),
            Request::CatalogWrite(vec![CatalogOp::Put {
                table: "t".into(),
                key: "k".into(),
                value: vec![1, 2, 3],
            }]),
            Request::Raft {
                kind: RaftKind::Vote,
                payload: vec![0; 10],
            },
        ];
        for r in requests {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
    }

    #[test]
    fn version_mismatch_is_reported() {
        let bytes = postcard::to_allocvec(&(PROTOCOL_VERSION + 1, Request::Ping)).unwrap();
        assert_eq!(
            decode_request(&bytes),
            Err(FrameError::UnsupportedVersion {
                got: PROTOCOL_VERSION + 1,
                want: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode_request(&Request::Ping);
        bytes.push(0);
        assert!(matches!(
            decode_request(&bytes),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn oversized_header_is_refused_before_reading() {
        let header = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert_eq!(
            frame_len(header, MAX_FRAME_BYTES),
            Err(FrameError::TooLarge {
                size: MAX_FRAME_BYTES + 1,
                limit: MAX_FRAME_BYTES
            })
        );
        assert_eq!(frame_len(10u32.to_be_bytes(), MAX_FRAME_BYTES), Ok(10));
    }

    #[test]
    fn deeply_nested_forwarding_cannot_exhaust_the_stack() {
        // What a hostile peer would send if Forwarded held a nested Request: many Forwarded
        // tags in a row. As bytes they decode flatly; unwrapping refuses the second level.
        let mut request = Request::Ping;
        for _ in 0..3 {
            request = request.forward(&crate::Caller::Node(1));
        }
        let bytes = encode_request(&request);
        let Request::Forwarded { request: inner, .. } = decode_request(&bytes).unwrap() else {
            panic!()
        };
        assert!(
            Request::unforward(&inner).is_err(),
            "nested forwarding is refused"
        );
        assert_eq!(
            Request::unforward(&encode_request(&Request::Ping)).unwrap(),
            Request::Ping
        );
        let tags = vec![0x09_u8; 100_000]; // 9 is the Forwarded tag
        let _ = decode_request(&tags);
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_mutated_frames(pos in 0usize..64, byte in any::<u8>(), cut in 0usize..64) {
            let mut bytes = encode_request(&Request::CatalogWrite(vec![CatalogOp::Delete {
                table: "datasets".into(),
                key: "lineitem".into(),
            }]));
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            bytes.truncate(bytes.len().saturating_sub(cut % 4));
            let _ = decode_request(&bytes);
        }
    }
}

/// Addresses a block's replica chain may name, as decoded (the node allows far fewer, and
/// says so; see `tern_node`). Bounded while decoding: an address is one byte on the wire at its
/// shortest and two dozen in memory, so an unbounded list could turn a 16 MiB frame into
/// 400 MiB.
pub const MAX_CHAIN: usize = 1024;
/// Longest address in a chain.
const MAX_ADDRESS: usize = 256;

/// `#[serde(deserialize_with = "crate::frame::short_chain")]`: a list of at most
/// [`MAX_CHAIN`] addresses of at most 256 bytes each.
pub fn short_chain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::{Error, SeqAccess, Visitor};
    struct Chain;
    impl<'de> Visitor<'de> for Chain {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_CHAIN} addresses")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            if seq.size_hint().is_some_and(|n| n > MAX_CHAIN) {
                return Err(A::Error::custom(format!(
                    "a replica chain of more than {MAX_CHAIN} addresses"
                )));
            }
            let mut out = Vec::new();
            while let Some(addr) = seq.next_element::<String>()? {
                if out.len() == MAX_CHAIN || addr.len() > MAX_ADDRESS {
                    return Err(A::Error::custom("a replica chain too long"));
                }
                out.push(addr);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Chain)
}

/// `#[serde(with = "crate::frame::shared_bytes")]` for a [`bytes::Bytes`] field: written as
/// [`bytes`] writes a `Vec<u8>` (the same encoding), read into a buffer of its own.
pub mod shared_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &bytes::Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<bytes::Bytes, D::Error> {
        super::bytes::deserialize(deserializer).map(bytes::Bytes::from)
    }
}

/// `#[serde(with = "crate::frame::bytes")]` for a `Vec<u8>` field: serde's default writes a
/// byte vector element by element (postcard then pushes one byte at a time); this writes it as
/// one length-prefixed run of bytes, which matters for plans, Raft payloads and answer rows.
pub mod bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
