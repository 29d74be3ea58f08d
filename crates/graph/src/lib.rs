//! Running task graphs (`tern_proto::Graph`): the kernels compiled into every node
//! ([`kernels`]: what a built-in task computes from its inputs; [`arrays`]: NumPy's
//! arithmetic and reductions over array chunks) and the single-machine
//! schedulers ([`local`]: a whole graph in one process, synchronously or on a thread pool),
//! which give the answers a cluster gives, with no cluster.
//!
//! It does not place tasks on nodes, keep their outputs or move bytes between nodes (that is
//! `tern-sched` and the node), nor read stored partitions (the caller hands them over).

pub mod arrays;
pub mod delayed;
pub mod kernels;
pub mod local;
mod sql;

pub use delayed::{Delayed, Input, delayed, graph_of, output, partition};
pub use kernels::{BUILTINS, KernelError};
pub use local::{Inputs, Local, NoInputs, Outcome, compute};
