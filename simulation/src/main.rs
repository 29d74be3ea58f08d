//! `tern-sim`: run seeds of the simulator and report seeds per second, faults injected by
//! kind, and any violation with the command that replays it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use tern_simulation::{Outcome, Phases, PlantedBug, SimOptions, replay_command, run_seed};

#[derive(Parser)]
#[command(about = "tern's deterministic fault-injection simulator")]
struct Args {
    /// Run only this seed (and print its trace's last events).
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Keep going for this many minutes, seed after seed (overrides --seeds).
    #[arg(long)]
    minutes: Option<u64>,
    /// Seconds of faults per run.
    #[arg(long, default_value_t = 20)]
    chaos: u64,
    /// Plant a known bug: ack-before-sync, skip-read-hash-check, count-down-node-as-holder,
    /// vote-before-sync.
    #[arg(long)]
    plant: Option<String>,
    /// Print the last events of every run, not only of failing ones.
    #[arg(long)]
    trace: bool,
    /// How many of its last events a run prints (Raft votes and leaders are among them).
    #[arg(long, default_value_t = tern_simulation::world::RECENT_EVENTS)]
    events: usize,
    /// Worker threads (each runs whole seeds, one at a time).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Instead of seeds: measure the metadata tier's work at 1,000 and 10,000 nodes and
    /// 1,000,000 partitions (placement rate, catalog size, what reading it costs).
    #[arg(long)]
    scale: bool,
}

fn main() {
    let args = Args::parse();
    if args.scale {
        tern_simulation::scale::run();
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let bug = match args
        .plant
        .as_deref()
        .map(|name| (name, PlantedBug::parse(name)))
    {
        None => None,
        Some((_, Some(bug))) => Some(bug),
        Some((name, None)) => {
            let known: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
            eprintln!("error: unknown planted bug {name:?} ({})", known.join(", "));
            std::process::exit(2);
        }
    };
    let options = SimOptions {
        phases: Phases {
            chaos: Duration::from_secs(args.chaos),
            ..SimOptions::default().phases
        },
        bug,
        recent_events: args.events,
        ..SimOptions::default()
    };
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.from, args.seeds),
    };
    let deadline = args
        .minutes
        .map(|m| Instant::now() + Duration::from_secs(m * 60));
    let next = Mutex::new(first);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = {
                        let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                        let done = match deadline {
                            Some(d) => Instant::now() >= d,
                            None => *next >= first + count,
                        };
                        if done {
                            return;
                        }
                        *next += 1;
                        *next - 1
                    };
                    let outcome = run_seed(seed, &options);
                    report(&outcome, &options, args.trace || args.seed.is_some());
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    let elapsed = started.elapsed().as_secs_f64();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ops: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for o in &outcomes {
        for (kind, n) in &o.faults {
            *faults.entry(kind).or_default() += n;
        }
        for (kind, (ok, failed)) in &o.ops {
            let total = ops.entry(kind).or_default();
            total.0 += ok;
            total.1 += failed;
        }
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.violation.is_some()).collect();
    let simulated: f64 = outcomes.iter().map(|o| o.simulated.as_secs_f64()).sum();
    println!(
        "{} seeds in {elapsed:.1} s: {:.2} seeds/s, {simulated:.0} s simulated ({:.0}x real time), {} failed",
        outcomes.len(),
        outcomes.len() as f64 / elapsed,
        simulated / elapsed,
        failed.len()
    );
    println!(
        "faults injected: {}",
        faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "raft snapshots sent to lagging followers: {} chunks in {} runs",
        outcomes.iter().map(|o| o.snapshot_chunks).sum::<u64>(),
        outcomes.iter().filter(|o| o.snapshot_chunks > 0).count()
    );
    println!(
        "operations (completed/failed under faults): {}",
        ops.iter()
            .map(|(k, (ok, failed))| format!("{k} {ok}/{failed}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn report(outcome: &Outcome, options: &SimOptions, trace: bool) {
    match &outcome.violation {
        Some(violation) => {
            println!("seed {} FAILED: {violation}", outcome.seed);
            for line in &outcome.recent {
                println!("    {line}");
            }
            println!("  replay: {}", replay_command(outcome.seed, options));
        }
        None => {
            println!(
                "seed {} ok: {:.0} s simulated, {} events, {} messages, trace {}",
                outcome.seed,
                outcome.simulated.as_secs_f64(),
                outcome.events,
                outcome.messages,
                &outcome.trace_hash[..16]
            );
            if trace {
                for line in &outcome.recent {
                    println!("    {line}");
                }
            }
        }
    }
}
