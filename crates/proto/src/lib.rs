//! The shared vocabulary of tern: the messages nodes and clients exchange, the versioned
//! envelope and length-prefixed frames they travel in, the records every component agrees on
//! (a node's identity and state), and the seams through which time, randomness and the network
//! reach the node logic (see `docs/architecture.md`).
//!
//! It owns no I/O: sockets live in `tern-net`, storage in `tern-meta` (and later `tern-store`).
//! Everything here is plain data plus pure encode/decode functions, so it is cheap to depend on
//! and safe to fuzz: the decoders never panic on arbitrary bytes.

pub mod access;
pub mod block;
pub mod dataset;
pub mod env;
pub mod frame;
pub mod graph;
pub mod message;
pub mod outboard;
pub mod query;
pub mod transport;

pub use access::{Access, Caller, ClientRole};
pub use block::{BadBlockHash, BlockHash, MAX_BLOCK_BYTES, human_bytes};
pub use dataset::{
    DATASETS_TABLE, DatasetRecord, DatasetSummary, MAX_LIST_PAGE, OWNERS_TABLE, PUT_LEASE_RENEW_MS,
    PUTS_TABLE, PartitionRecord, PutId, PutLease, QUOTAS_TABLE, REVOKED_TABLE, SYSTEM_TABLES,
    WRITES_TABLE, validate_dataset_name, write_once,
};
pub use env::{Clock, Entropy, OsEntropy, SeededEntropy, SystemClock};
pub use frame::{
    FrameError, MAX_FRAME_BYTES, PROTOCOL_VERSION, decode_request, decode_response,
    decode_submission, encode_request, encode_response, encode_submission, join_parts, split_parts,
};
pub use graph::{
    Arg, ArgSource, Datum, FETCH_BATCH, FETCH_BATCH_BYTES, GRAPH_STAGE, Graph, GraphError,
    GraphEvent, GraphReport, KeptOutput, Kernel, MAX_GRAPH_BYTES, MAX_GRAPH_ITEMS, MAX_GRAPH_TASKS,
    MAX_TASK_BATCH, MAX_VALUE_DEPTH, Resources, Submission, Task, TaskFailure, TaskKey,
    TaskOutcome, TaskRan, TaskRun, Value, fetch_batches,
};
pub use message::*;
pub use outboard::{GROUP_BYTES, Outboard, OutboardError};
pub use query::{
    EventDecoder, EventError, JobInfo, JobState, QueryEvent, QueryEvents, StagePlanned,
    StageReport, encode_event,
};
pub use transport::{
    BulkRead, BulkWrite, FetchError, Transport, TransportError, fetch_block, fetch_bytes, send_body,
};
