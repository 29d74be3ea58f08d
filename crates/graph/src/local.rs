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
            Arg::Output(key) | Arg::Part { of: key, .. } => match done.get(key) {
                Some(Ok(datum)) => match (arg, datum) {
                    (Arg::Part { part, .. }, Datum::Parts(parts)) => {
                        parts.get(*part as usize).cloned().ok_or_else(|| {
                            format!(
                                "upstream task {key} made {} parts, not {}",
                                parts.len(),
                                part + 1
                            )
                        })
                    }
                    (Arg::Part { .. }, _) => Err(format!("upstream task {key} made no parts")),
                    // As a node keeps it: a task read whole gives how many parts it made.
                    (_, Datum::Parts(parts)) => {
                        Ok(Datum::Value(tern_proto::Value::Int(parts.len() as i64)))
                    }
                    _ => Ok(datum.clone()),
                },
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
    fn a_task_reads_one_part_of_what_another_made() {
        // An array chunk [0, 1, 2, 3] cut into [0, 1] and [2, 3]; a gather reads the second.
        let batch = tern_array::chunk::to_batch(
            &tern_array::DType::Int(8),
            (0i64..4).flat_map(|v| v.to_le_bytes()).collect(),
        )
        .unwrap();
        let chunk = crate::kernels::to_table(&batch.schema(), &[batch]).unwrap();
        let spec = |v: serde_json::Value| Arg::Value(Value::Str(v.to_string()));
        let make = Task::new(
            "chunk",
            Kernel::builtin("identity"),
            vec![Arg::Partition {
                dataset: "c".into(),
                version: 1,
                index: 0,
            }],
        );
        let split = Task::new(
            "split",
            Kernel::builtin("array_split"),
            vec![
                spec(
                    serde_json::json!({"compute": "<i8", "shapes": [[4]], "parts": [[[0, 2]], [[2, 4]]]}),
                ),
                Arg::Output(make.key.clone()),
            ],
        );
        let second = Task::new(
            "gather",
            Kernel::builtin("array_gather"),
            vec![
                spec(
                    serde_json::json!({"compute": "<i8", "out_shape": [2], "shapes": [[2]],
                    "pieces": [{"take": null, "at": [0]}]}),
                ),
                Arg::Part {
                    of: split.key.clone(),
                    part: 1,
                },
            ],
        );
        let whole = Task::new(
            "identity",
            Kernel::builtin("identity"),
            vec![Arg::Output(split.key.clone())],
        );
        let graph = Graph {
            tasks: vec![make.clone(), split, second.clone(), whole.clone()],
            wanted: vec![second.key.clone(), whole.key.clone()],
        };
        struct Chunk(Datum);
        impl Inputs for Chunk {
            fn partition(&self, _: &str, _: u64, _: u32) -> Result<Datum, String> {
                Ok(self.0.clone())
            }
        }
        let got = compute(&graph, Local::Sync, &Chunk(chunk)).unwrap();
        let (_, batches) = crate::kernels::table(got[&second.key].clone().unwrap()).unwrap();
        let meta = tern_array::ArrayMeta::new(tern_array::DType::Int(8), vec![2], vec![2]).unwrap();
        let bytes = tern_array::chunk::from_batches(&meta, 0, &batches).unwrap();
        assert_eq!(
            bytes,
            [2i64, 3]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
        // Read whole, a task that made parts gives how many, as a node keeps it.
        assert_eq!(got[&whole.key], Ok(Datum::Value(Value::Int(2))));
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
