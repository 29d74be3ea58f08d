//! The simulator's own tests: many seeds pass, a seed replays identically, and every planted
//! bug is caught within a bounded number of seeds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_simulation::{Outcome, Phases, PlantedBug, SimOptions, replay_command, run_seed};

/// Seeds `make test` runs (the issue asks for at least 200).
const SEEDS: u64 = 200;

fn options(chaos_secs: u64, bug: Option<PlantedBug>) -> SimOptions {
    SimOptions {
        phases: Phases {
            chaos: Duration::from_secs(chaos_secs),
            heal: Duration::from_secs(120),
        },
        bug,
        ..SimOptions::default()
    }
}

/// Run `seeds` on two threads; stop early once `stop` says so.
fn run_many(
    seeds: impl Iterator<Item = u64> + Send,
    options: &SimOptions,
    stop: impl Fn(&Outcome) -> bool + Sync,
) -> Vec<Outcome> {
    let seeds = Mutex::new(seeds);
    let out = Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(seed) = seeds.lock().unwrap().next() else {
                        return;
                    };
                    let outcome = run_seed(seed, options);
                    if stop(&outcome) {
                        done.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    out.lock().unwrap().push(outcome);
                }
            });
        }
    });
    out.into_inner().unwrap()
}

fn failure_report(o: &Outcome, options: &SimOptions) -> String {
    format!(
        "seed {} failed: {}\n{}\nreplay: {}",
        o.seed,
        o.violation.as_deref().unwrap_or(""),
        o.recent.join("\n"),
        replay_command(o.seed, options)
    )
}

#[test]
fn many_seeds_keep_every_invariant() {
    let options = options(8, None);
    let started = Instant::now();
    let outcomes = run_many(1..=SEEDS, &options, |_| false);
    let elapsed = started.elapsed().as_secs_f64();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for o in &outcomes {
        for (k, n) in &o.faults {
            *faults.entry(k).or_default() += n;
        }
    }
    println!(
        "{} seeds in {elapsed:.1} s ({:.2} seeds/s); faults: {faults:?}",
        outcomes.len(),
        outcomes.len() as f64 / elapsed
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.violation.is_some())
        .map(|o| failure_report(o, &options))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    for kind in [
        "crash",
        "partition",
        "bit-flip",
        "duplicate",
        "message-loss",
        "delay-reorder",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected in {SEEDS} seeds"
        );
    }
}

/// Seeds found failing beyond the ones above, with the seconds of faults they ran under and
/// what they found: each must keep every invariant.
const REGRESSION_SEEDS: &[(u64, u64, &str)] = &[
    (
        777297,
        30,
        "issue #24: nodes 1 and 4 both led term 4, as T4-N1 and T4-N4 (openraft's leader ids allow it)",
    ),
    (
        952068,
        30,
        "issue #24: a put's acknowledgment came back after the other loop had removed its record",
    ),
    (
        6001337,
        30,
        "sim-long: the workload's queries picked the one lost node three times running (clients try nodes in turn now)",
    ),
];

#[test]
fn regression_seeds_keep_every_invariant() {
    let failed: Vec<String> = REGRESSION_SEEDS
        .iter()
        .filter_map(|&(seed, chaos, found)| {
            let options = options(chaos, None);
            let o = run_seed(seed, &options);
            o.violation
                .is_some()
                .then(|| format!("({found})\n{}", failure_report(&o, &options)))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn a_seed_replays_exactly() {
    let options = options(8, None);
    // Seed 11 diverged between runs until the scheduler stopped iterating hash maps.
    for seed in [42, 11, 3] {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        assert!(a.events > 20, "a run records its events ({})", a.events);
        assert!(
            a.messages > 100,
            "a run hashes its messages ({})",
            a.messages
        );
        assert_eq!(
            (a.trace_hash.as_str(), a.events, a.messages),
            (b.trace_hash.as_str(), b.events, b.messages),
            "two runs of seed {seed} differ; last events:\n{}\n---\n{}",
            a.recent.join("\n"),
            b.recent.join("\n")
        );
    }
    assert_ne!(
        run_seed(42, &options).trace_hash,
        run_seed(43, &options).trace_hash
    );
}

/// Each planted bug must break an invariant within this many seeds.
const SEEDS_TO_CATCH: u64 = 60;

fn caught(bug: PlantedBug, chaos_secs: u64) -> Outcome {
    caught_within(bug, chaos_secs, 1..=SEEDS_TO_CATCH)
}

fn caught_within(
    bug: PlantedBug,
    chaos_secs: u64,
    seeds: std::ops::RangeInclusive<u64>,
) -> Outcome {
    let options = options(chaos_secs, Some(bug));
    let (first, last) = (*seeds.start(), *seeds.end());
    let outcomes = run_many(seeds, &options, |o| o.violation.is_some());
    outcomes
        .into_iter()
        .filter(|o| o.violation.is_some())
        .min_by_key(|o| o.seed)
        .unwrap_or_else(|| panic!("planted bug {} survived seeds {first}-{last}", bug.name()))
}

#[test]
fn a_block_acknowledged_before_its_sync_is_caught() {
    let o = caught(PlantedBug::AckBeforeSync, 20);
    println!(
        "{} caught by seed {}: {:?}",
        PlantedBug::AckBeforeSync.name(),
        o.seed,
        o.violation
    );
}

#[test]
fn serving_blocks_without_their_hash_check_is_caught() {
    let o = caught(PlantedBug::SkipReadHashCheck, 20);
    let v = o.violation.unwrap();
    assert!(v.starts_with("integrity"), "{v}");
}

#[test]
fn repair_that_counts_down_nodes_as_holders_is_caught() {
    let o = caught(PlantedBug::CountDownNodeAsHolder, 20);
    println!(
        "{} caught by seed {}: {:?}",
        PlantedBug::CountDownNodeAsHolder.name(),
        o.seed,
        o.violation
    );
}

/// Every run that heals drops futures with no fault about and checks the nodes let go of
/// what they kept.
#[test]
fn keeping_the_outputs_of_released_futures_is_caught() {
    let o = caught(PlantedBug::KeepReleasedOutputs, 8);
    let v = o.violation.unwrap();
    assert!(v.starts_with("liveness") && v.contains("still keep"), "{v}");
}

/// A vote is caught only if its node crashes before anything else it writes is synced (most
/// often a candidate cut off by a partition, campaigning again and again), about one seed in
/// 75 at 30 s of faults: the search starts at seed 80, which crashes node 1 while its vote for
/// itself as T8-N1 is not yet synced (its disk keeps T7-N1).
#[test]
fn a_vote_granted_before_its_sync_is_caught() {
    let o = caught_within(PlantedBug::VoteBeforeSync, 30, 80..=80 + 4 * SEEDS_TO_CATCH);
    let v = o.violation.unwrap();
    assert!(
        v.starts_with("raft-safety") && v.contains("vote went back"),
        "{v}"
    );
    println!(
        "{} caught by seed {}: {v}",
        PlantedBug::VoteBeforeSync.name(),
        o.seed
    );
}

/// The Raft storage the simulator runs is the production code on the simulated disk; it must
/// pass openraft's own conformance suite there too.
#[test]
fn raft_storage_passes_openraft_suite_on_the_simulated_disk() {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{AnyError, StorageError, StorageIOError};
    use std::sync::Arc;
    use tern_meta::{LogStore, StateMachineStore, TypeConfig};

    struct OnSimDisk;
    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for OnSimDisk {
        async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<u64>> {
            let disk = Arc::new(tern_simulation::disk::SimDisk::default());
            let (log, sm) = tern_meta::stores_on(disk)
                .map_err(|e| StorageIOError::<u64>::write(AnyError::error(e.to_string())))?;
            Ok(((), log, sm))
        }
    }
    Suite::test_all(OnSimDisk).expect("openraft storage suite on SimDisk");
}
