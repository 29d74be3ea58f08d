//! [`ClientError`]: what can go wrong between this client and the cluster, by kind.

use tern_proto::{BlockHash, ErrorKind, ErrorReply, TransportError};

use crate::export;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no cluster at {dir}: {path} is missing (start one with `tern up`, or pass --cluster DIR)"
    )]
    NoCluster { dir: String, path: String },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error(transparent)]
    Net(#[from] tern_net::NetError),
    #[error("no node of the cluster at {dir} answered (tried {tried}): {last}")]
    NoAnswer {
        dir: String,
        tried: String,
        last: TransportError,
    },
    #[error("{0}")]
    Remote(ErrorReply),
    #[error(
        "the node at {addr}, which coordinated the query, went away while running it ({reason}); it was not run again (if the query itself brought the node down, it would again): run it again if it should be"
    )]
    CoordinatorLost { addr: String, reason: String },
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("dataset {name:?} already exists (use replace to write a new version)")]
    DatasetExists { name: String },
    #[error("no dataset named {name:?}")]
    NoSuchDataset { name: String },
    /// What the request expected changed meanwhile (another writer); nothing was done.
    #[error("{0}; try again")]
    Conflict(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "the write of {name:?} was abandoned by the cluster (its lease expired: this client did not renew it in time); nothing was committed, try again"
    )]
    PutLeaseLost { name: String },
    #[error("block {hash} could not be stored: {reason}")]
    BlockNotStored { hash: BlockHash, reason: String },
    #[error("no holder served block {hash} intact ({reasons})")]
    BlockUnavailable { hash: BlockHash, reasons: String },
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

impl ClientError {
    /// The error an error answer means, by its kind (never by its text).
    pub(crate) fn from_reply(e: ErrorReply) -> Self {
        match e.kind {
            ErrorKind::Conflict => ClientError::Conflict(e.message),
            ErrorKind::Exists => ClientError::Exists(e.message),
            ErrorKind::NotFound => ClientError::NotFound(e.message),
            _ => ClientError::Remote(e),
        }
    }
}
