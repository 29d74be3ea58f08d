//! The cluster's metadata: one openraft group whose log and state machine live in RocksDB.
//!
//! It owns the replicated state ([`MetaState`]: the node table and a generic catalog table
//! that the block store fills with datasets), its durable storage ([`LogStore`],
//! [`StateMachineStore`]), the Raft RPCs over any `tern_proto::Transport` ([`MetaNetwork`]),
//! and [`Meta`], the handle the node uses to write commands and make linearizable reads.
//!
//! [`placement`] decides which nodes hold a block's replicas, from the node table alone;
//! [`Holdings`] keeps what each node holds up to date as dataset records are applied, so
//! placement and status never decode the whole catalog.
//!
//! It does not own sockets or failure detection: the node decides when to mark a node down;
//! this crate only makes such decisions durable and agreed.

mod index;
mod network;
pub mod placement;
mod runtime;
mod service;
mod state;
mod store;

use std::io::Cursor;

pub use index::{Held, Holdings};
pub use network::{MetaNetwork, answer_raft_rpc};
pub use runtime::{TernRuntime, seed_election_randomness};
pub use service::{Meta, MetaOptions};
pub use state::{Command, CommandResult, MetaState};
pub use store::{LogStore, StateMachineStore, open_stores, stored_vote, stores_on};

openraft::declare_raft_types!(
    /// openraft's type parameters for tern's metadata group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TernRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata storage at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("metadata storage: {0}")]
    Storage(String),
    #[error("not the leader (leader is {})", match .leader { Some((id, addr)) => format!("node {id} at {addr}"), None => "unknown".into() })]
    NotLeader { leader: Option<(u64, String)> },
    #[error("no leader elected yet")]
    NoLeader,
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot decode {what}: {reason}")]
    Codec { what: &'static str, reason: String },
    #[error("{0}")]
    Rejected(String),
    /// A conditional write found `table`/`key` other than it expected: nothing applied.
    #[error("precondition failed: {table}/{key} changed")]
    PreconditionFailed { table: String, key: String },
    /// A Raft message speaking for another node than the one whose certificate sent it.
    #[error("a Raft message for node {} sent with {}", .claimed.map_or("(none)".to_string(), |c| c.to_string()), .sender.map_or("a client certificate".to_string(), |s| format!("node {s}'s certificate")))]
    Impostor {
        claimed: Option<u64>,
        sender: Option<u64>,
    },
    #[error("{what} did not finish within {millis} ms (is a quorum of voters up?)")]
    Timeout { what: String, millis: u64 },
}
