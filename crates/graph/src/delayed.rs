//! Building graphs as Dask's `delayed` does: each call of a kernel is a [`Delayed`] value
//! that remembers what it computes and what it reads, nothing runs until asked. A `Delayed`
//! turns into a [`Graph`] (it and everything it depends on, each task once), which runs on a
//! single-machine scheduler ([`Delayed::compute_local`]) or on a cluster (`tern-client`'s
//! `Client::compute_graph`), with the same answer. (The example is the unit test
//! `a_diamond_is_one_graph_with_each_task_once`'s shape; doctests are not run, each would be
//! another link of DataFusion.)
//!
//! ```text
//! use tern_graph::{Local, delayed};
//! use tern_proto::{Datum, Value};
//!
//! let a = delayed("inc", [1.into()]);
//! let b = delayed("inc", [2.into()]);
//! let total = delayed("add", [a.into(), b.into()]);
//! assert_eq!(total.compute_local(Local::Sync).unwrap(), Datum::Value(Value::Int(5)));
//! ```

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;

use tern_proto::{Arg, Datum, Graph, Kernel, Task, TaskKey, Value};

use crate::local::{Inputs, Local, NoInputs, compute};

/// A task not yet run, with the tasks it reads.
#[derive(Debug, Clone)]
pub struct Delayed {
    task: Arc<Task>,
    upstream: Arc<Vec<Delayed>>,
}

impl Drop for Delayed {
    /// Iteratively: a chain of a million calls would otherwise overflow the stack.
    fn drop(&mut self) {
        let mut stack: Vec<Delayed> = Arc::get_mut(&mut self.upstream)
            .map(std::mem::take)
            .unwrap_or_default();
        while let Some(mut d) = stack.pop() {
            if let Some(ups) = Arc::get_mut(&mut d.upstream) {
                stack.append(ups);
            }
        }
    }
}

/// One argument of a delayed call: a literal, a stored partition, or another delayed value.
#[derive(Debug, Clone)]
pub enum Input {
    Arg(Arg),
    Delayed(Delayed),
}

impl From<Delayed> for Input {
    fn from(d: Delayed) -> Self {
        Input::Delayed(d)
    }
}

impl From<&Delayed> for Input {
    fn from(d: &Delayed) -> Self {
        Input::Delayed(d.clone())
    }
}

impl From<Value> for Input {
    fn from(v: Value) -> Self {
        Input::Arg(Arg::Value(v))
    }
}

impl From<i64> for Input {
    fn from(v: i64) -> Self {
        Value::Int(v).into()
    }
}

impl From<f64> for Input {
    fn from(v: f64) -> Self {
        Value::Float(v).into()
    }
}

impl From<&str> for Input {
    fn from(v: &str) -> Self {
        Value::Str(v.into()).into()
    }
}

/// Partition `index` of version `version` of stored dataset `dataset`, as an input.
pub fn partition(dataset: &str, version: u64, index: u32) -> Input {
    Input::Arg(Arg::Partition {
        dataset: dataset.into(),
        version,
        index,
    })
}

/// The output of task `key` from an earlier submission, as an input: a future's
/// (`tern_client::TaskFuture::key`). On the cluster it is read where that submission keeps it;
/// the single-machine schedulers do not have it.
pub fn output(key: &TaskKey) -> Input {
    Input::Arg(Arg::Output(key.clone()))
}

/// A call of built-in kernel `kernel` (see [`crate::kernels`]) over `inputs`, named after it.
pub fn delayed(kernel: &str, inputs: impl IntoIterator<Item = Input>) -> Delayed {
    Delayed::call(kernel, Kernel::builtin(kernel), inputs)
}

impl Delayed {
    /// A call of `kernel` over `inputs`, its key named `name`.
    pub fn call(name: &str, kernel: Kernel, inputs: impl IntoIterator<Item = Input>) -> Delayed {
        let mut args = Vec::new();
        let mut upstream = Vec::new();
        for input in inputs {
            match input {
                Input::Arg(arg) => args.push(arg),
                Input::Delayed(d) => {
                    args.push(Arg::Output(d.key().clone()));
                    upstream.push(d);
                }
            }
        }
        Delayed {
            task: Arc::new(Task::new(name, kernel, args)),
            upstream: Arc::new(upstream),
        }
    }

    pub fn key(&self) -> &TaskKey {
        &self.task.key
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The graph computing this value: it and every task it reads, each once.
    pub fn graph(&self) -> Graph {
        graph_of(std::slice::from_ref(self))
    }

    /// Run the graph in this process and return this value.
    pub fn compute_local(&self, scheduler: Local) -> Result<Datum, String> {
        self.compute_local_with(scheduler, &NoInputs)
    }

    /// The same, with stored partitions from `inputs`.
    pub fn compute_local_with(
        &self,
        scheduler: Local,
        inputs: &dyn Inputs,
    ) -> Result<Datum, String> {
        let mut outcomes = compute(&self.graph(), scheduler, inputs).map_err(|e| e.to_string())?;
        outcomes
            .remove(self.key())
            .unwrap_or_else(|| Err(format!("{} was not computed", self.key())))
    }

    /// The graph in Graphviz DOT (Dask's `visualize`): a box per task, an edge per input.
    pub fn visualize(&self) -> String {
        let graph = self.graph();
        let mut dot = String::from("digraph tern {\n  rankdir=BT;\n  node [shape=box];\n");
        for task in &graph.tasks {
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n{}\"];",
                task.key,
                task.key.name(),
                task.kernel
            );
            for up in task.upstream() {
                let _ = writeln!(dot, "  \"{up}\" -> \"{}\";", task.key);
            }
        }
        dot.push_str("}\n");
        dot
    }
}

/// One graph computing all of `values` (wanted in that order), each task once.
pub fn graph_of(values: &[Delayed]) -> Graph {
    let mut seen: BTreeSet<TaskKey> = BTreeSet::new();
    let mut tasks = Vec::new();
    // Depth-first, iteratively (graphs may be deep chains): a task after what it reads.
    let mut stack: Vec<(Delayed, bool)> = values.iter().rev().map(|d| (d.clone(), false)).collect();
    while let Some((d, expanded)) = stack.pop() {
        if seen.contains(d.key()) {
            continue;
        }
        if expanded {
            seen.insert(d.key().clone());
            tasks.push((*d.task).clone());
            continue;
        }
        stack.push((d.clone(), true));
        for up in d.upstream.iter().rev() {
            if !seen.contains(up.key()) {
                stack.push((up.clone(), false));
            }
        }
    }
    Graph {
        tasks,
        wanted: values.iter().map(|d| d.key().clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diamond_is_one_graph_with_each_task_once() {
        let a = delayed("inc", [1.into()]);
        let b = delayed("inc", [(&a).into()]);
        let c = delayed("add", [(&a).into(), 10.into()]);
        let d = delayed("add", [b.into(), c.into()]);
        let graph = d.graph();
        assert_eq!(graph.tasks.len(), 4);
        assert_eq!(graph.tasks[0].key, *a.key(), "what is read comes first");
        assert_eq!(graph.wanted, vec![d.key().clone()]);
        // inc(1) = 2; inc(2) = 3; 2 + 10 = 12; 3 + 12 = 15, on both schedulers.
        for scheduler in [Local::Sync, Local::Threads(3)] {
            assert_eq!(
                d.compute_local(scheduler).unwrap(),
                Datum::Value(Value::Int(15))
            );
        }
        let dot = d.visualize();
        assert_eq!(dot.matches("->").count(), 4, "{dot}");
    }

    #[test]
    fn a_deep_chain_builds_without_recursion() {
        let mut x = delayed("inc", [0.into()]);
        for _ in 0..100_000 {
            x = delayed("inc", [x.into()]);
        }
        let graph = x.graph();
        assert_eq!(graph.tasks.len(), 100_001);
        assert_eq!(
            x.compute_local(Local::Sync).unwrap(),
            Datum::Value(Value::Int(100_001))
        );
        // Dropping a deep chain must not recurse either.
        drop(x);
    }
}
