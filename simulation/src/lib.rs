//! The deterministic fault-injection simulator: a whole tern cluster in one process, on one
//! thread, under a seed.
//!
//! It runs the real node code (`tern_node::NodeService` with its Raft metadata, placement,
//! replication, repair, scrub, garbage collection and failure detection) on turmoil's
//! simulated hosts, time and network. What cannot run inside is replaced at the seams the
//! foundation defined: messages travel as whole RPCs over simulated UDP ([`net`]), disks are
//! [`disk::SimDisk`] (unsynced writes are lost in a crash; bits can flip), clocks drift.
//! A workload ([`workload`]) writes and reads datasets while the driver ([`run`]) injects
//! faults, and [`invariants`] checks that nothing acknowledged is lost or wrong. [`scale`]
//! measures the metadata tier's own work at cluster sizes no test machine has.
//!
//! It does not simulate QUIC, TLS or RocksDB themselves (their own tests cover them), nor yet
//! query execution. See `docs/simulation.md`.

pub mod cluster;
pub mod disk;
pub mod invariants;
pub mod net;
pub mod run;
pub mod scale;
pub mod workload;
pub mod world;

pub use run::{Outcome, SimOptions, run_seed};
pub use workload::Phases;
pub use world::PlantedBug;

/// The one-line command that replays `seed`.
pub fn replay_command(seed: u64, options: &SimOptions) -> String {
    let bug = options
        .bug
        .map(|b| format!(" PLANT={}", b.name()))
        .unwrap_or_default();
    format!(
        "make sim SEED={seed} CHAOS={}{bug}",
        options.phases.chaos.as_secs()
    )
}
