//! The invariants, checked during and after every run. Each names itself in violations.
//!
//! - [`RAFT`]: what openraft promises with its default leader ids `(term, node)` (see
//!   [`raft`]): a leader leads under its own id, one node per id; the leader ids of committed
//!   entries never decrease along the log (a superseded leader commits nothing more); nodes
//!   that applied the same log index hold the same state; a running node's applied index never
//!   goes back; a node's vote never goes back, even across a crash.
//! - [`DURABILITY`]: an acknowledged dataset is still there after the faults (every fault
//!   leaves at least one intact copy of each block: crashes keep synced data, and bit flips
//!   spare the last intact copy).
//! - [`INTEGRITY`]: every block a node serves matches its blake3 name.
//! - [`VISIBILITY`]: readers only ever see dataset records whose commit was sent, whole.
//! - [`ANSWERS`]: a query that answers gives the answer of some version of its table whose
//!   commit was sent (computed by the workload when it wrote the rows).
//! - [`LIVENESS`]: the cluster forms; after the faults stop, every operation completes, and
//!   every block has exactly three holders, distinct and up, each serving it intact.

mod answers;
mod durability;
mod integrity;
mod liveness;
mod raft;
mod visibility;

pub use answers::check_answer;
pub use durability::{check_crash_kept_acknowledged, check_durable};
pub use integrity::check_served;
pub use liveness::check_replicas;
pub use raft::{RaftObserver, check_vote, trace_vote_answer};
pub use visibility::check_visible;

pub const RAFT: &str = "raft-safety";
pub const DURABILITY: &str = "durability";
pub const INTEGRITY: &str = "integrity";
pub const VISIBILITY: &str = "visibility";
pub const LIVENESS: &str = "liveness";
pub const ANSWERS: &str = "job-answers";
