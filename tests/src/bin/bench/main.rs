//! `make bench`: measurements on a real local cluster (release build). `tern-bench
//! [foundation|storage|compute|tpch|scheduling|hot|fair|graphs|million|locality]` runs one part
//! (compute is tpch, scheduling, hot and fair; graphs is million and locality too);
//! without an argument, all of them.
//!
//! Foundation:
//! - Leader failover as a user sees it: SIGKILL the leader, time until a new `tern catalog get`
//!   process (no leader known, no connection) answers a linearizable read, and how long
//!   `tern status` takes with that node down; 10 rounds (the killed node is restarted and
//!   caught up between rounds).
//! - Metadata commit rate: catalog writes per second through Raft on 3 voters, with many
//!   writers in flight (openraft batches concurrent proposals into one append and one fsync),
//!   and with 100 ops per entry.
//!
//! Storage: see `storage.rs`. Compute: see `compute.rs`. Task graphs against Dask: see
//! `graphs.rs`.

mod compute;
mod graphs;
mod storage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tern_e2e::{LocalCluster, wait_for};
use tern_proto::{CatalogOp, Request, Response};

const ROUNDS: usize = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _in_runtime = rt.enter();
    let part = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    println!(
        "# tern bench ({part})\n\nmachine: {} cores, {}, {:.0} GiB RAM",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        mem_total_gib()
    );
    match part.as_str() {
        "foundation" => foundation(&rt),
        "storage" => storage::run(&rt),
        "compute" => compute::run(&rt),
        "tpch" => compute::tpch(&rt),
        "scheduling" => compute::scheduling(&rt),
        "hot" => compute::hot_partition(&rt),
        "fair" => compute::fair_share(&rt),
        "graphs" => graphs::run(&rt),
        "million" => graphs::million(&rt),
        "locality" => graphs::locality(&rt),
        // For experiments by hand: the TPC-H SF1 tables as Parquet in the directory given.
        "gen-tpch" => {
            let dir = std::path::PathBuf::from(std::env::args().nth(2).expect("gen-tpch DIR"));
            std::fs::create_dir_all(&dir).expect("create the directory");
            for (name, path) in compute::write_tpch_parquet(&dir) {
                println!("{name}: {}", path.display());
            }
        }
        // For experiments by hand: write lineitem SF1 as CSV to the path given.
        "gen-lineitem" => {
            let path = std::env::args().nth(2).expect("gen-lineitem PATH");
            let rows = storage::write_lineitem_csv(std::path::Path::new(&path));
            println!("{rows} rows written to {path}");
        }
        "all" => {
            foundation(&rt);
            storage::run(&rt);
            compute::run(&rt);
            graphs::run(&rt);
        }
        other => {
            eprintln!(
                "unknown part {other:?}: foundation, storage, compute (tpch, scheduling, hot, fair), graphs, gen-lineitem PATH, or nothing for all"
            );
            std::process::exit(2);
        }
    }
}

fn foundation(rt: &tokio::runtime::Runtime) {
    println!("\n## foundation\n");
    let cluster = LocalCluster::up(3);

    // Failover, as a user sees it: each read is a new `tern` process, which knows no leader
    // and has no connection yet.
    let put = cluster.tern(&["catalog", "put", "bench", "failover", "answered"]);
    assert!(put.status.success(), "catalog put failed");
    let mut times = Vec::new();
    let mut status_times = Vec::new();
    for round in 1..=ROUNDS {
        let leader = wait_for(
            "a leader with every node up",
            Duration::from_secs(60),
            || {
                let status = cluster.status_json()?;
                let all_up = status["nodes"]
                    .as_array()?
                    .iter()
                    .all(|n| n["state"] == "up" && n["role"] != "unreachable");
                all_up.then(|| status["leader"].as_u64()).flatten()
            },
        );
        cluster.kill(leader);
        let killed = Instant::now();
        let mut runs = 0;
        loop {
            runs += 1;
            let out = cluster.tern(&["catalog", "get", "bench", "failover"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "answered" {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no answer a minute after the kill"
            );
        }
        let took = killed.elapsed();
        let asked = Instant::now();
        let status = cluster.tern(&["status"]);
        let status_took = asked.elapsed();
        assert!(
            status.status.success(),
            "tern status failed with node {leader} down"
        );
        println!(
            "failover round {round:>2}: leader {leader} killed, a new `tern catalog get` answered after {:>5} ms ({runs} process(es)); `tern status` with it down: {} ms",
            took.as_millis(),
            status_took.as_millis()
        );
        times.push(took);
        status_times.push(status_took);
        cluster.start(leader);
        let out = cluster.tern(&[
            "wait",
            "caught-up",
            &leader.to_string(),
            "--timeout-secs",
            "60",
        ]);
        assert!(out.status.success(), "node {leader} did not catch up");
    }
    times.sort();
    status_times.sort();
    let median = |t: &[Duration]| (t[ROUNDS / 2 - 1] + t[ROUNDS / 2]) / 2;
    println!(
        "\nleader failover (SIGKILL → a new CLI process's linearizable read answered): median {} ms, min {} ms, max {} ms over {ROUNDS} rounds (goal: median ≤ 1500, max ≤ 3000)",
        median(&times).as_millis(),
        times[0].as_millis(),
        times[ROUNDS - 1].as_millis()
    );
    println!(
        "`tern status` with the old leader down: median {} ms, max {} ms (goal ≤ 1000)",
        median(&status_times).as_millis(),
        status_times[ROUNDS - 1].as_millis()
    );
    let client = cluster.client();

    // Commit rate.
    let leader_addr = rt
        .block_on(client.serving_leader(Duration::from_secs(1)))
        .map(|(_, _, addr)| addr)
        .expect("leader");
    let client = Arc::new(client);
    for (writers, ops_per_entry) in [(1usize, 1usize), (64, 1), (64, 100)] {
        let committed = Arc::new(AtomicU64::new(0));
        let duration = Duration::from_secs(5);
        let started = Instant::now();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..writers {
                let (client, committed, addr) =
                    (client.clone(), committed.clone(), leader_addr.clone());
                tasks.spawn(async move {
                    let mut i = 0u64;
                    while started.elapsed() < duration {
                        let ops = (0..ops_per_entry)
                            .map(|k| CatalogOp::Put {
                                table: "bench".into(),
                                key: format!("w{w}-{i}-{k}"),
                                value: vec![0u8; 64],
                            })
                            .collect();
                        match client.call_node(&addr, Request::CatalogWrite(ops)).await {
                            Ok(Response::Written { .. }) => {
                                committed.fetch_add(ops_per_entry as u64, Ordering::Relaxed);
                            }
                            other => panic!("write failed: {other:?}"),
                        }
                        i += 1;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        let secs = started.elapsed().as_secs_f64();
        let ops = committed.load(Ordering::Relaxed) as f64;
        println!(
            "metadata commit rate: {:>8.0} ops/s ({writers} writer(s) in flight, {ops_per_entry} op(s) per Raft entry, {:.0} entries/s)",
            ops / secs,
            ops / secs / ops_per_entry as f64
        );
    }
    let _ = wait_for("cluster still serving", Duration::from_secs(10), || {
        cluster.status_json()
    });
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
