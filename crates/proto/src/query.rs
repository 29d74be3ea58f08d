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
