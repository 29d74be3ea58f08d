//! Task graphs against Dask, side by side on this machine: Dask distributed's `LocalCluster`
//! (2 single-threaded worker processes, in a venv this bench makes with `dask[distributed]`
//! from PyPI) and a 3-node tern cluster run the same graphs; tasks per second each, and the
//! ratio.
//!
//! - 100,000 tiny independent tasks (`inc` of 0..100,000), every result gathered.
//! - A tree reduction of 10,000 leaves (`inc` leaves, pairwise `add`s): the root gathered.
//!
//! Then tern alone (Dask's scheduler struggles past about a million tasks, dask/distributed#3691):
//! - One graph of a million tasks (a tree reduction of 500,000 leaves) on a fresh 3-node
//!   cluster: tasks per second, and the coordinating node's memory per task (its resident
//!   memory sampled every 20 ms, the peak less what it held before, over the tasks; an upper
//!   bound: the node also runs a third of the tasks and keeps their outputs).
//! - Locality: a map over 64 stored partitions on 4 nodes, one of them slow (every task it
//!   runs waits 300 ms): the share of tasks run on a holder of their partition, and the share
//!   the slow node ran.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use tern_e2e::LocalCluster;
use tern_proto::{Arg, Graph, Kernel, Task, TaskKey, TaskOutcome, Value};

const INDEPENDENT: i64 = 100_000;
const LEAVES: i64 = 10_000;
/// Leaves of the million-task tree.
const MILLION_LEAVES: i64 = 500_000;
/// Partitions the locality map reads.
const MAPPED: u32 = 64;

/// The sum of a graph's outcomes, each an integer (anything else fails the bench).
fn sum_of_ints(answer: &tern_client::GraphAnswer) -> i64 {
    answer
        .outcomes
        .values()
        .map(|o| match o {
            TaskOutcome::Done(tern_proto::Datum::Value(Value::Int(v))) => *v,
            other => panic!("{other:?}"),
        })
        .sum()
}

fn task(kernel: &str, args: Vec<Arg>) -> Task {
    Task::new(kernel, Kernel::builtin(kernel), args)
}

fn independent() -> Graph {
    let tasks: Vec<Task> = (0..INDEPENDENT)
        .map(|i| task("inc", vec![Arg::Value(Value::Int(i))]))
        .collect();
    let wanted = tasks.iter().map(|t| t.key.clone()).collect();
    Graph { tasks, wanted }
}

fn tree(leaves: i64) -> (Graph, TaskKey) {
    let mut tasks: Vec<Task> = (0..leaves)
        .map(|i| task("inc", vec![Arg::Value(Value::Int(i))]))
        .collect();
    let mut level: Vec<TaskKey> = tasks.iter().map(|t| t.key.clone()).collect();
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            if pair.len() == 1 {
                next.push(pair[0].clone());
                continue;
            }
            let add = task("add", pair.iter().map(|k| Arg::Output(k.clone())).collect());
            next.push(add.key.clone());
            tasks.push(add);
        }
        level = next;
    }
    let root = level.remove(0);
    (
        Graph {
            tasks,
            wanted: vec![root.clone()],
        },
        root,
    )
}

const DASK_SCRIPT: &str = r#"
import json, sys, time
from dask.distributed import Client, LocalCluster

def inc(x):
    return x + 1

def add(a, b):
    return a + b

if __name__ == "__main__":
    n, leaves = int(sys.argv[1]), int(sys.argv[2])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.gather(client.map(inc, range(100), pure=False))  # warm up
    t = time.time()
    results = client.gather(client.map(inc, range(n)))
    independent = time.time() - t
    assert sum(results) == n * (n + 1) // 2
    t = time.time()
    level = client.map(inc, range(leaves), key=[f"leaf-{i}" for i in range(leaves)])
    tasks = leaves
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(client.submit(add, level[i], level[i + 1]))
                tasks += 1
            else:
                nxt.append(level[i])
        level = nxt
    root = level[0].result()
    tree = time.time() - t
    assert root == leaves * (leaves + 1) // 2
    print(json.dumps({"independent_s": independent, "tree_s": tree, "tree_tasks": tasks}))
    client.close()
    cluster.close()
"#;

/// A venv with dask[distributed], made once under the bench's cache directory.
fn dask_python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let venv = home.join(".cache/tern/bench-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import dask.distributed"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Some(python);
    }
    eprintln!("making {} with dask[distributed] from PyPI", venv.display());
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "dask[distributed]"])
            .status()
            .is_ok_and(|s| s.success());
    made.then_some(python)
}

fn dask(python: &PathBuf) -> Option<(f64, f64, u64)> {
    let script = std::env::temp_dir().join("tern-bench-dask.py");
    std::fs::write(&script, DASK_SCRIPT).ok()?;
    let out = Command::new(python)
        .arg(&script)
        .arg(INDEPENDENT.to_string())
        .arg(LEAVES.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("dask failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((
        v["independent_s"].as_f64()?,
        v["tree_s"].as_f64()?,
        v["tree_tasks"].as_u64()?,
    ))
}

pub fn run(rt: &tokio::runtime::Runtime) {
    println!("\n## task graphs against Dask\n");
    let cluster = LocalCluster::up(3);
    let client = cluster.client();

    let graph = independent();
    let started = Instant::now();
    let answer = rt
        .block_on(client.compute_graph(&graph))
        .expect("independent tasks");
    let tern_independent = started.elapsed().as_secs_f64();
    let sum = sum_of_ints(&answer);
    assert_eq!(sum, INDEPENDENT * (INDEPENDENT + 1) / 2);

    let (graph, root) = tree(LEAVES);
    let tree_tasks = graph.tasks.len() as f64;
    let started = Instant::now();
    let answer = rt.block_on(client.compute_graph(&graph)).expect("tree");
    let tern_tree = started.elapsed().as_secs_f64();
    assert_eq!(
        answer.outcomes[&root],
        TaskOutcome::Done(tern_proto::Datum::Value(Value::Int(
            LEAVES * (LEAVES + 1) / 2
        )))
    );

    let rate = |tasks: f64, secs: f64| tasks / secs.max(1e-9);
    println!("| graph | tern (3 nodes) | Dask LocalCluster (2 workers) | ratio |");
    println!("|---|---|---|---|");
    let dask = dask_python().and_then(|python| dask(&python));
    let row = |what: &str, tasks: f64, tern: f64, dask: Option<(f64, f64)>| {
        let ours = rate(tasks, tern);
        match dask {
            Some((dtasks, dsecs)) => {
                let theirs = rate(dtasks, dsecs);
                println!(
                    "| {what} | {ours:.0} tasks/s ({tern:.2} s) | {theirs:.0} tasks/s ({dsecs:.2} s) | {:.1}× |",
                    ours / theirs
                );
            }
            None => {
                println!("| {what} | {ours:.0} tasks/s ({tern:.2} s) | (Dask not available) | |")
            }
        }
    };
    row(
        "100,000 independent tasks",
        INDEPENDENT as f64,
        tern_independent,
        dask.map(|(i, _, _)| (INDEPENDENT as f64, i)),
    );
    row(
        "tree reduction, 10,000 leaves",
        tree_tasks,
        tern_tree,
        dask.map(|(_, t, n)| (n as f64, t)),
    );
    drop(cluster);
    million(rt);
    locality(rt);
}

/// The peak resident memory of process `pid` while `work` runs, less what it held before.
fn peak_growth<T>(pid: i32, work: impl FnOnce() -> T) -> (T, u64) {
    let rss = move || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let before = rss();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak.max(rss())
        })
    };
    let out = work();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    (out, peak.saturating_sub(before))
}

/// One graph of a million tasks: accepted, run, its root right; tasks per second and the
/// coordinator's memory per task.
pub fn million(rt: &tokio::runtime::Runtime) {
    println!("\n## a graph of a million tasks\n");
    let cluster = LocalCluster::up(3);
    let client = cluster.client_of(1);
    let (graph, root) = tree(MILLION_LEAVES);
    let tasks = graph.tasks.len();
    let encoded = postcard::to_allocvec(&graph).map(|b| b.len()).unwrap_or(0);
    // The client sends to the first node that answers: node 1, whose memory is watched.
    let started = Instant::now();
    let (answer, growth) = peak_growth(cluster.pid(1), || {
        rt.block_on(async {
            let mut stream = match client.graph_stream(&graph).await {
                Ok(stream) => stream,
                Err(e) => panic!("graph refused: {e}\n{}", cluster.logs()),
            };
            assert_eq!(stream.coordinator(), cluster.addr(1), "node 1 coordinates");
            let mut outcome = None;
            while let Some(update) = stream.next_update().await.expect("graph runs") {
                if let tern_client::GraphUpdate::Output { key, outcome: o } = update {
                    assert_eq!(key, root);
                    outcome = Some(o);
                }
            }
            outcome.expect("the root's outcome")
        })
    });
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        answer,
        TaskOutcome::Done(tern_proto::Datum::Value(Value::Int(
            MILLION_LEAVES * (MILLION_LEAVES + 1) / 2
        )))
    );
    println!(
        "| tasks | sent as | run in | tasks/s | coordinator memory (peak growth) | per task |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {tasks} | {:.0} MiB | {secs:.1} s | {:.0} | {:.0} MiB | {:.0} bytes |",
        encoded as f64 / (1 << 20) as f64,
        tasks as f64 / secs,
        growth as f64 / (1 << 20) as f64,
        growth as f64 / tasks as f64
    );
}

/// A map over stored partitions with one slow holder: where the tasks ran.
pub fn locality(rt: &tokio::runtime::Runtime) {
    println!("\n## locality: a map over {MAPPED} stored partitions, one slow holder\n");
    const SLOW: u64 = 4;
    let cluster = LocalCluster::up_args(4, &["--slow-node", &format!("{SLOW}:300")]);
    let client = cluster.client_of(1);
    let csv = cluster.path().join("sales.csv");
    tern_e2e::write_sales_csv(&csv, 600_000);
    cluster.put(&csv, "sales", &["--partitions", "64"]);
    let record = rt
        .block_on(client.dataset("sales"))
        .expect("catalog")
        .expect("stored");
    assert!(
        record.partitions.len() >= MAPPED as usize,
        "{} partitions",
        record.partitions.len()
    );
    let held_by_slow = record.partitions[..MAPPED as usize]
        .iter()
        .filter(|p| p.holders.contains(&SLOW))
        .count();
    let tasks: Vec<Task> = (0..MAPPED)
        .map(|index| {
            task(
                "row_count",
                vec![Arg::Partition {
                    dataset: "sales".into(),
                    version: record.version,
                    index,
                }],
            )
        })
        .collect();
    let graph = Graph {
        wanted: tasks.iter().map(|t| t.key.clone()).collect(),
        tasks,
    };
    let started = Instant::now();
    let answer = rt.block_on(client.compute_graph(&graph)).expect("map");
    let secs = started.elapsed().as_secs_f64();
    let rows = sum_of_ints(&answer);
    let expected: u64 = record.partitions[..MAPPED as usize]
        .iter()
        .map(|p| p.rows)
        .sum();
    assert_eq!(rows as u64, expected);
    let report = &answer.report;
    let ran = (report.local + report.remote) as f64;
    let slow = report.per_node.get(&SLOW).copied().unwrap_or(0);
    println!(
        "| tasks | on a holder of their data | on the slow node (holds {held_by_slow}) | time |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {MAPPED} | {:.1} % (goal ≥ 95 %) | {slow} = {:.1} % (goal ≤ 10 %) | {secs:.2} s |",
        100.0 * report.local as f64 / ran,
        100.0 * slow as f64 / ran
    );
}
