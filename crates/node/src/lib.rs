//! A tern node: the process that wires the components together.
//!
//! It owns the node's configuration and identity, starts the QUIC endpoint (`tern-net`), the
//! metadata group (`tern-meta`) and the block store (`tern-store`), stores and serves blocks
//! (passing each one along its replica chain), answers requests ([`NodeService`]), joins or bootstraps
//! the cluster, sends heartbeats to the leader and, while it leads, marks silent nodes
//! suspect and then down and repairs the replicas they held. It runs query tasks (`tern-exec`)
//! in its task slots, keeps their shuffle outputs for later stages, and coordinates the queries
//! clients send it (`tern-sched`); those components do not know about the node.
//!
//! Every request is checked against what its sender's certificate allows (`tern-proto`'s
//! access table: node, admin, write, read); a node may speak only for its own id, and the
//! system tables of the catalog are written only through typed requests the leader validates.
//!
//! [`NodeService`] is generic over the `Transport` and `Clock` seams so the simulator can
//! run it without sockets or real time.

mod access;
mod blocks;
mod catalog;
mod compute;
mod config;
mod gc;
mod graphs;
mod jobs;
mod reader;
mod repair;
mod run;
mod scrub;
mod service;
mod shuffle;
mod slots;
mod tables;

pub use config::{ComputeSettings, NodeConfig, NodeTimings, machine_memory};
pub use repair::{
    PlannedCopy, RepairPlan, STREAMS_PER_NODE, bytes_per_node, holders_after, plan_repair,
};
pub use run::{RunningNode, join_or_bootstrap, spawn_loops, start};
pub use service::NodeService;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("{0}")]
    Identity(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] tern_net::NetError),
    #[error(transparent)]
    Meta(#[from] tern_meta::MetaError),
    #[error("could not join the cluster through {tried}: {reason}")]
    Join { tried: String, reason: String },
}
