//! Single-machine schedulers, as Dask has them: a whole graph run in this process, either
//! synchronously in order (for debugging: one task at a time, on the calling thread) or on a
//! pool of threads, with the same kernels a cluster runs, so the answers are identical.
//!
//! Stored partitions come from the caller ([`Inputs`]); a task that fails fails every task
//! that reads it, naming the first failure, and the others complete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};

use tern_proto::{Arg, Datum, Graph, GraphError, TaskKey};

use crate::kernels;

/// Which single-machine scheduler runs a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// One task at a time, on the calling thread, in the graph's order.
    Sync,
    /// Ready tasks on this many threads at once.
    Threads(usize),
}

/// Where a graph's stored partitions come from when it runs in one process.
pub trait Inputs: Sync {
    fn partition(&self, dataset: &str, version: u64, index: u32) -> Result<Datum, String>;
}

/// No stored partitions (graphs of values and literals).
pub struct NoInputs;

impl Inputs for NoInputs {
    fn partition(&self, dataset: &str, _version: u64, index: u32) -> Result<Datum, String> {
        Err(format!(
            "partition {index} of {dataset}: this graph runs without stored data"
        ))
    }
}

/// What a task ended with: its output, or why it has none.
pub type Outcome = Result<Datum, String>;

/// Run `graph` and return the outcome of every wanted key (or, when none is named, of every
/// task).
pub fn compute(
    graph: &Graph,
    scheduler: Local,
    inputs: &dyn Inputs,
) -> Result<BTreeMap<TaskKey, Outcome>, GraphError> {
    let order = graph.validate(&BTreeSet::new())?;
    let outcomes = match scheduler {
        Local::Sync => run_in_order(graph, &order, inputs),
        Local::Threads(n) => run_on_threads(graph, &order, inputs, n.max(1)),
    };
    let wanted: Vec<&TaskKey> = if graph.wanted.is_empty() {
        outcomes.keys().collect()
    } else {
        graph.wanted.iter().collect()
    };
    Ok(wanted
        .into_iter()
        .filter_map(|k| outcomes.get(k).map(|o| (k.clone(), o.clone())))
        .collect())
}

/// The inputs of task `i`, resolved from what is done (every upstream task is).
fn resolve(
    graph: &Graph,
    i: usize,
    done: &BTreeMap<TaskKey, Outcome>,
    inputs: &dyn Inputs,
) -> Result<Vec<Datum>, String> {
    graph.tasks[i]
        .args
        .iter()
        .map(|arg| match arg {
            Arg::Value(v) => Ok(Datum::Value(v.clone())),
            Arg::Partition {
                dataset,
                version,
                index,
            } => inputs.partition(dataset, *version, *index),
            Arg::Output(key) => match done.get(key) {
                Some(Ok(datum)) => Ok(datum.clone()),
                Some(Err(e)) => Err(format!("upstream task {key} failed: {e}")),
                None => Err(format!("upstream task {key} has not run")),
            },
        })
        .collect()
}

fn run_one(graph: &Graph, i: usize, args: Result<Vec<Datum>, String>) -> Outcome {
    let args = args?;
    kernels::run(&graph.tasks[i].kernel, args).map_err(|e| e.to_string())
}

fn run_in_order(graph: &Graph, order: &[usize], inputs: &dyn Inputs) -> BTreeMap<TaskKey, Outcome> {
    let mut done = BTreeMap::new();
    for &i in order {
        let outcome = run_one(graph, i, resolve(graph, i, &done, inputs));
        done.insert(graph.tasks[i].key.clone(), outcome);
    }
    done
}

/// Ready tasks and results, shared by the pool's threads.
struct Board {
    ready: Vec<usize>,
    waiting: Vec<usize>,
    done: BTreeMap<TaskKey, Outcome>,
    left: usize,
}

fn run_on_threads(
    graph: &Graph,
    order: &[usize],
    inputs: &dyn Inputs,
    threads: usize,
) -> BTreeMap<TaskKey, Outcome> {
    // Who reads whom, by index into `tasks`, over the distinct tasks `order` holds.
    let index: BTreeMap<&TaskKey, usize> =
        order.iter().map(|&i| (&graph.tasks[i].key, i)).collect();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); graph.tasks.len()];
    let mut waiting = vec![0usize; graph.tasks.len()];
    for &i in order {
        let ups: BTreeSet<usize> = graph.tasks[i]
            .upstream()
            .filter_map(|k| index.get(k).copied())
            .collect();
        waiting[i] = ups.len();
        for u in ups {
            readers[u].push(i);
        }
    }
    // Deeper tasks first among the ready, so what was made is read (and freed) early.
    let mut ready: Vec<usize> = order.iter().copied().filter(|&i| waiting[i] == 0).collect();
    ready.reverse();
    let board = Mutex::new(Board {
        ready,
        waiting,
        done: BTreeMap::new(),
        left: order.len(),
    });
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let (i, args) = {
                        let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
                        loop {
                            if b.left == 0 {
                                return;
                            }
                            if let Some(i) = b.ready.pop() {
                                let args = resolve(graph, i, &b.done, inputs);
                                break (i, args);
                            }
                            b = wake.wait(b).unwrap_or_else(|p| p.into_inner());
                        }
                    };
                    let outcome = run_one(graph, i, args);
                    let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
                    b.done.insert(graph.tasks[i].key.clone(), outcome);
                    b.left -= 1;
                    for &r in &readers[i] {
                        b.waiting[r] -= 1;
                        if b.waiting[r] == 0 {
                            b.ready.push(r);
                        }
                    }
                    wake.notify_all();
                }
            });
        }
    });
    board.into_inner().unwrap_or_else(|p| p.into_inner()).done
}

#[cfg(test)]
mod tests {
    use tern_proto::{Kernel, Task, Value};

    use super::*;

    fn value(v: i64) -> Arg {
        Arg::Value(Value::Int(v))
    }

    /// A map of `inc` over 0..n and a tree reduction of the results, `fan` at a time.
    fn map_and_tree(n: i64, fan: usize) -> (Graph, TaskKey) {
        let mut tasks: Vec<Task> = (0..n)
            .map(|i| Task::new("inc", Kernel::builtin("inc"), vec![value(i)]))
            .collect();
        let mut level: Vec<TaskKey> = tasks.iter().map(|t| t.key.clone()).collect();
        while level.len() > 1 {
            let mut next = Vec::new();
            for group in level.chunks(fan) {
                let t = Task::new(
                    "add",
                    Kernel::builtin("add"),
                    group.iter().cloned().map(Arg::Output).collect(),
                );
                next.push(t.key.clone());
                tasks.push(t);
            }
            level = next;
        }
        let top = level.pop().expect("one");
        (
            Graph {
                tasks,
                wanted: vec![top.clone()],
            },
            top,
        )
    }

    #[test]
    fn a_tree_reduction_gives_the_same_answer_on_both_schedulers() {
        let (graph, top) = map_and_tree(1000, 7);
        let want = Ok(Datum::Value(Value::Int((1..=1000).sum())));
        for scheduler in [Local::Sync, Local::Threads(4)] {
            let got = compute(&graph, scheduler, &NoInputs).unwrap();
            assert_eq!(got.get(&top), Some(&want), "{scheduler:?}");
        }
    }

    #[test]
    fn a_failing_task_fails_its_readers_and_no_other() {
        let bad = Task::new(
            "inc",
            Kernel::builtin("inc"),
            vec![Arg::Value(Value::Str("x".into()))],
        );
        let good = Task::new("inc", Kernel::builtin("inc"), vec![value(1)]);
        let after = Task::new(
            "inc",
            Kernel::builtin("inc"),
            vec![Arg::Output(bad.key.clone())],
        );
        let graph = Graph {
            tasks: vec![bad.clone(), good.clone(), after.clone()],
            wanted: vec![],
        };
        for scheduler in [Local::Sync, Local::Threads(2)] {
            let got = compute(&graph, scheduler, &NoInputs).unwrap();
            assert_eq!(got[&good.key], Ok(Datum::Value(Value::Int(2))));
            assert!(
                got[&bad.key]
                    .as_ref()
                    .unwrap_err()
                    .contains("expects a number")
            );
            let err = got[&after.key].as_ref().unwrap_err();
            assert!(
                err.contains("upstream task") && err.contains("expects a number"),
                "{err}"
            );
        }
    }
}
