//! Task graphs against Dask, side by side on this machine: Dask distributed's `LocalCluster`
//! (2 single-threaded worker processes, in a venv this bench makes with `dask[distributed]`
//! from PyPI) and a 3-node tern cluster run the same graphs; tasks per second each, and the
//! ratio.
//!
//! - 100,000 tiny independent tasks (`inc` of 0..100,000), every result gathered.
//! - A tree reduction of 10,000 leaves (`inc` leaves, pairwise `add`s): the root gathered.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use tern_e2e::LocalCluster;
use tern_proto::{Arg, Graph, Kernel, Task, TaskKey, TaskOutcome, Value};

const INDEPENDENT: i64 = 100_000;
const LEAVES: i64 = 10_000;

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

fn tree() -> (Graph, TaskKey) {
    let mut tasks: Vec<Task> = (0..LEAVES)
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
    let sum: i64 = answer
        .outcomes
        .values()
        .map(|o| match o {
            TaskOutcome::Done(tern_proto::Datum::Value(Value::Int(v))) => *v,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(sum, INDEPENDENT * (INDEPENDENT + 1) / 2);

    let (graph, root) = tree();
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
}
