//! What a query reports about how it ran.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::NodeId;

/// One stage of a query as it ran: `tern sql --analyze` prints these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    /// 1, 2, …; the final stage (on the coordinator) is the last.
    pub stage: u32,
    /// What it ran, in one line (the dataset a task stage read, or "final").
    pub what: String,
    pub tasks: u64,
    pub rows: u64,
    pub millis: u64,
    /// Tasks per node that read their partition from the node's own store.
    pub local: BTreeMap<NodeId, u64>,
    /// Tasks per node that fetched their partition from another holder.
    pub remote: BTreeMap<NodeId, u64>,
    /// Task attempts that failed and were sent elsewhere.
    pub retries: u64,
    /// Tasks run again because the node keeping their output was lost.
    pub recomputed: u64,
    /// Bytes spilled to disk by the stage's tasks.
    pub spilled: u64,
}

/// One job a node coordinates (a SQL query or a task graph), as `tern jobs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: u64,
    /// `sql` or `graph`.
    pub kind: String,
    /// The query's text, or the graph's size (cut to 200 characters).
    pub what: String,
    /// The certificate name of the client that started it.
    pub client: String,
    pub coordinator: NodeId,
    /// Wall-clock milliseconds since the Unix epoch when it started.
    pub started_ms: u64,
    pub millis: u64,
    /// Tasks ended and planned so far.
    pub done: u64,
    pub total: u64,
    /// Tasks of it running now, per node.
    pub running_on: BTreeMap<NodeId, u64>,
    pub state: JobState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    /// A graph that finished and keeps its wanted outputs on the nodes for its client's
    /// futures, until the client lets them go.
    Kept,
    Finished,
    Failed(String),
    Cancelled,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobState::Running => f.write_str("running"),
            JobState::Kept => f.write_str("kept"),
            JobState::Finished => f.write_str("finished"),
            JobState::Failed(_) => f.write_str("failed"),
            JobState::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// A stage as planned, before it runs: what the client's progress display counts against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlanned {
    pub stage: u32,
    pub what: String,
    pub tasks: u64,
}

/// What a coordinator sends a client while its query runs, after `Response::QueryRunning`:
/// the plan, progress as tasks finish, the answer's rows as the final stage makes them (the
/// client can print or write them before the last arrives), then the end, finished or failed.
///
/// Events travel as the body of the bulk answer, each as a `u32` big-endian length and the
/// postcard encoding ([`encode_event`], [`EventDecoder`]), so an event may span frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryEvent {
    Planned {
        stages: Vec<StagePlanned>,
    },
    /// `done` of stage `stage`'s tasks have finished; `retries` attempts failed so far.
    Progress {
        stage: u32,
        done: u64,
        retries: u64,
    },
    /// Rows of the answer: one Arrow IPC stream (schema and batches).
    Rows(#[serde(with = "crate::frame::bytes")] Vec<u8>),
    Finished {
        rows: u64,
        stages: Vec<StageReport>,
    },
    Failed(crate::message::ErrorReply),
}

/// An event is refused past this size (rows are sent in pieces far below it).
pub const MAX_EVENT_BYTES: usize = 256 << 20;

/// `event` with its length in front, as it travels.
pub fn encode_event<E: Serialize>(event: &E) -> Vec<u8> {
    let body = postcard::to_allocvec(event).expect("events always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Why a stream of events could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("an event of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("unreadable event: {0}")]
    Malformed(String),
    #[error("the answer ended in the middle of an event")]
    Truncated,
    #[error("the answer ended before the job finished (its coordinator stopped)")]
    Ended,
    #[error(transparent)]
    Transport(#[from] crate::TransportError),
}

/// Cuts the bytes of a query's answer, as they arrive in chunks, back into events.
#[derive(Debug, Default)]
pub struct EventDecoder {
    pending: Vec<u8>,
    start: usize,
}

impl EventDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
        self.pending.extend_from_slice(chunk);
    }

    /// The next complete event, if one has arrived whole.
    pub fn next_event<E: serde::de::DeserializeOwned>(&mut self) -> Result<Option<E>, EventError> {
        let rest = &self.pending[self.start..];
        let Some(header) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if len > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(len));
        }
        let Some(body) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let event = postcard::from_bytes(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        self.start += 4 + len;
        if self.start > (1 << 20) && self.start * 2 > self.pending.len() {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(event))
    }

    /// Call at the end of the answer: bytes left over mean it was cut short.
    pub fn finish(&self) -> Result<(), EventError> {
        if self.start == self.pending.len() {
            Ok(())
        } else {
            Err(EventError::Truncated)
        }
    }
}

/// A query's events as they arrive on the body of its answer (after `Response::QueryRunning`).
pub struct QueryEvents<R> {
    reader: R,
    decoder: EventDecoder,
    over: bool,
}

impl<R: crate::BulkRead> QueryEvents<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            decoder: EventDecoder::default(),
            over: false,
        }
    }

    /// The next event; `None` after `Finished` or `Failed`. An answer that stops before either
    /// (its coordinator died) is an error.
    pub async fn next(&mut self) -> Result<Option<QueryEvent>, EventError> {
        loop {
            if self.over {
                return Ok(None);
            }
            if let Some(event) = self.decoder.next_event::<QueryEvent>()? {
                self.over = matches!(event, QueryEvent::Finished { .. } | QueryEvent::Failed(_));
                return Ok(Some(event));
            }
            match self.reader.next_chunk().await? {
                Some(chunk) => self.decoder.push(&chunk),
                None => {
                    self.decoder.finish()?;
                    return Err(EventError::Ended);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<QueryEvent> {
        vec![
            QueryEvent::Planned {
                stages: vec![StagePlanned {
                    stage: 1,
                    what: "scan t".into(),
                    tasks: 3,
                }],
            },
            QueryEvent::Progress {
                stage: 1,
                done: 2,
                retries: 0,
            },
            QueryEvent::Rows(vec![7; 1000]),
            QueryEvent::Finished {
                rows: 4,
                stages: vec![StageReport::default()],
            },
        ]
    }

    proptest! {
        /// However the bytes are cut into chunks, the same events come out, in order.
        #[test]
        fn events_survive_any_chunking(cuts in proptest::collection::vec(1usize..300, 0..40)) {
            let bytes: Vec<u8> = sample().iter().flat_map(encode_event).collect();
            let mut decoder = EventDecoder::default();
            let mut out = Vec::new();
            let mut at = 0usize;
            for cut in cuts.into_iter().chain(std::iter::once(usize::MAX)) {
                let end = at.saturating_add(cut).min(bytes.len());
                decoder.push(&bytes[at..end]);
                at = end;
                while let Some(event) = decoder.next_event::<QueryEvent>().unwrap() {
                    out.push(event);
                }
                if at == bytes.len() {
                    break;
                }
            }
            prop_assert_eq!(out, sample());
            prop_assert!(decoder.finish().is_ok());
        }

        /// Arbitrary bytes give an error or nothing, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = EventDecoder::default();
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_event::<QueryEvent>() {}
        }
    }

    #[test]
    fn cut_short_is_reported() {
        let bytes = encode_event(&sample()[2]);
        let mut decoder = EventDecoder::default();
        decoder.push(&bytes[..bytes.len() - 1]);
        assert_eq!(decoder.next_event::<QueryEvent>(), Ok(None));
        assert_eq!(decoder.finish(), Err(EventError::Truncated));
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut decoder = EventDecoder::default();
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_event::<QueryEvent>(),
            Err(EventError::TooLarge(_))
        ));
    }
}
