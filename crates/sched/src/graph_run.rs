//! One graph's tasks as its coordinator runs them ([`Run`]): which are waiting, ready,
//! running, done (and where their output is kept), released or failed; which become ready as
//! others end; what a lost node's outputs cost (lineage); and when an output is no longer
//! needed (no reader left to run and not wanted: reference counts, as Dask's scheduler keeps
//! them), so its node can drop it while the graph still runs.
//!
//! Everything is kept by task index in flat vectors (a few dozen bytes a task besides the
//! graph itself), so a graph of a million tasks costs its coordinator well under a KiB each.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use tern_proto::{Graph, GraphReport, KeptOutput, NodeId, TaskFailure, TaskKey};

/// Task `key`'s index among the distinct tasks `by_key` lists (sorted by key).
fn find(graph: &Graph, by_key: &[u32], key: &TaskKey) -> Option<usize> {
    by_key
        .binary_search_by(|&i| graph.tasks[i as usize].key.cmp(key))
        .ok()
        .map(|at| by_key[at] as usize)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// A second task of a key already in the graph: never run (the first one is).
    Duplicate,
    Waiting,
    Ready,
    Running,
    Done {
        node: NodeId,
    },
    /// Done, and its output dropped from its node: nothing left to run reads it. (Tasks no
    /// wanted task needs start so, and are made only if that changes.)
    Released,
    /// Why is in `Run::failures`.
    Failed,
}

/// Lists by task index, packed: the items of task `i` are `items[start[i]..start[i + 1]]`.
struct Lists {
    start: Vec<u32>,
    items: Vec<u32>,
}

impl Lists {
    fn of(&self, i: usize) -> &[u32] {
        &self.items[self.start[i] as usize..self.start[i + 1] as usize]
    }
}

pub(crate) struct Run {
    pub(crate) graph: Graph,
    state: Vec<State>,
    failures: HashMap<u32, TaskFailure>,
    /// Upstream tasks not done yet, per waiting task.
    waiting: Vec<u32>,
    /// The distinct tasks each task reads, and the tasks that read it.
    ups: Lists,
    readers: Lists,
    /// Readers not done yet: at zero, an output nobody wants is released.
    pending_readers: Vec<u32>,
    wanted: Vec<bool>,
    /// Rank in the graph's order (earlier first).
    rank: Vec<u32>,
    /// The distinct tasks, sorted by key (looked up by binary search: 4 bytes a task).
    by_key: Vec<u32>,
    ready: BinaryHeap<Reverse<(u32, u32)>>,
    /// Bytes of each kept output.
    sizes: Vec<u64>,
    /// Outputs earlier submissions keep (job, task): read from there, never released here.
    foreign: HashMap<u32, (u64, u32)>,
    /// Released outputs not yet dropped, by the node keeping them.
    releasing: BTreeMap<NodeId, BTreeSet<u32>>,
    pub(crate) attempts: HashMap<u32, u32>,
    /// Times each task found an input lost (bounded by `MAX_INPUT_LOSSES`).
    pub(crate) input_losses: HashMap<u32, u32>,
    /// Microseconds a task has taken on its node, as batches came back (a moving average).
    pub(crate) task_micros: Option<f64>,
    /// Tasks done, released or failed.
    pub(crate) ended: u64,
    pub(crate) report: GraphReport,
}

impl Run {
    /// `order`: the graph's distinct tasks in the order they should run. The wanted ones
    /// (`graph.wanted`, or every task when it names none) are kept to the end; `kept`: outputs
    /// of its tasks that earlier submissions keep. Only what the wanted tasks need runs.
    pub(crate) fn new(graph: Graph, order: &[usize], kept: &[KeptOutput]) -> Self {
        let n = graph.tasks.len();
        let mut by_key: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        by_key.sort_unstable_by(|&a, &b| {
            graph.tasks[a as usize]
                .key
                .cmp(&graph.tasks[b as usize].key)
        });
        let find = |key: &TaskKey| find(&graph, &by_key, key);
        let mut rank = vec![u32::MAX; n];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r as u32;
        }
        let mut ups = Lists {
            start: Vec::with_capacity(n + 1),
            items: Vec::new(),
        };
        let mut reader_count = vec![0u32; n];
        ups.start.push(0);
        for (i, task) in graph.tasks.iter().enumerate() {
            if rank[i] != u32::MAX {
                let distinct: BTreeSet<u32> = task
                    .upstream()
                    .filter_map(|k| find(k).map(|i| i as u32))
                    .collect();
                for &u in &distinct {
                    reader_count[u as usize] += 1;
                }
                ups.items.extend(distinct);
            }
            ups.start.push(ups.items.len() as u32);
        }
        let mut readers = Lists {
            start: Vec::with_capacity(n + 1),
            items: vec![0; ups.items.len()],
        };
        readers.start.push(0);
        for count in &reader_count {
            let last = *readers.start.last().unwrap_or(&0);
            readers.start.push(last + count);
        }
        let mut filled = readers.start[..n].to_vec();
        for i in 0..n {
            for &u in ups.of(i) {
                readers.items[filled[u as usize] as usize] = i as u32;
                filled[u as usize] += 1;
            }
        }
        let mut wanted_flags = vec![graph.wanted.is_empty(); n];
        for key in &graph.wanted {
            if let Some(w) = find(key) {
                wanted_flags[w] = true;
            }
        }
        let mut run = Run {
            graph,
            state: rank
                .iter()
                .map(|&r| {
                    if r == u32::MAX {
                        State::Duplicate
                    } else {
                        State::Waiting
                    }
                })
                .collect(),
            failures: HashMap::new(),
            waiting: vec![0; n],
            ups,
            readers,
            pending_readers: reader_count,
            wanted: wanted_flags,
            rank,
            by_key,
            ready: BinaryHeap::new(),
            sizes: vec![0; n],
            foreign: HashMap::new(),
            releasing: BTreeMap::new(),
            attempts: HashMap::new(),
            input_losses: HashMap::new(),
            task_micros: None,
            ended: 0,
            report: GraphReport {
                tasks: order.len() as u64,
                ..Default::default()
            },
        };
        for k in kept {
            if let Some(i) = self::find(&run.graph, &run.by_key, &k.key) {
                run.state[i] = State::Done { node: k.node };
                run.foreign.insert(i as u32, (k.job, k.task));
            }
        }
        // What the wanted tasks need, up to outputs already kept; the rest waits released.
        let mut needed = vec![false; n];
        let mut stack: Vec<usize> = (0..n).filter(|&i| run.wanted[i]).collect();
        while let Some(i) = stack.pop() {
            if needed[i] || run.state[i] == State::Duplicate {
                continue;
            }
            needed[i] = true;
            if run.state[i] == State::Waiting {
                stack.extend(run.ups.of(i).iter().map(|&u| u as usize));
            }
        }
        for &i in order {
            if !needed[i] && run.state[i] == State::Waiting {
                run.state[i] = State::Released;
            }
            if matches!(run.state[i], State::Done { .. } | State::Released) {
                run.ended += 1;
                // It reads nothing more (now).
                for k in 0..run.ups.of(i).len() {
                    let u = run.ups.of(i)[k] as usize;
                    run.pending_readers[u] -= 1;
                }
            }
        }
        for &i in order {
            run.requeue_if_ready(i);
        }
        run
    }

    /// Where task `i`'s output is kept: `Some((job, task))` when an earlier submission keeps
    /// it, `None` when this graph does (as task `i`).
    pub(crate) fn foreign(&self, i: usize) -> Option<(u64, u32)> {
        self.foreign.get(&(i as u32)).copied()
    }

    /// The wanted tasks, each once, in the graph's order.
    pub(crate) fn wanted(&self) -> Vec<usize> {
        let mut wanted: Vec<usize> = (0..self.state.len())
            .filter(|&i| self.wanted[i] && self.state[i] != State::Duplicate)
            .collect();
        wanted.sort_by_key(|&i| self.rank[i]);
        wanted
    }

    pub(crate) fn state(&self, i: usize) -> State {
        self.state[i]
    }

    pub(crate) fn failure(&self, i: usize) -> Option<&TaskFailure> {
        self.failures.get(&(i as u32))
    }

    /// Ready tasks queued (some may have been failed or reset since).
    pub(crate) fn queued(&self) -> usize {
        self.ready.len()
    }

    /// The first ready task in the graph's order, left queued.
    pub(crate) fn peek_ready(&mut self) -> Option<usize> {
        while let Some(&Reverse((_, i))) = self.ready.peek() {
            if self.state[i as usize] == State::Ready {
                return Some(i as usize);
            }
            self.ready.pop();
        }
        None
    }

    /// Task `i`, the first ready one, is taken off the queue: sent, failed, or waiting again.
    pub(crate) fn take_ready(&mut self, i: usize) {
        if let Some(&Reverse((_, first))) = self.ready.peek()
            && first as usize == i
        {
            self.ready.pop();
        }
    }

    pub(crate) fn running(&mut self, i: usize) {
        self.state[i] = State::Running;
    }

    /// Task `i` waits again (an input must be made again first).
    pub(crate) fn wait_again(&mut self, i: usize) {
        self.state[i] = State::Waiting;
        self.requeue_if_ready(i);
    }

    /// A waiting task whose inputs are all done becomes ready; inputs it reads that were
    /// released are made again first; one whose input failed fails.
    fn requeue_if_ready(&mut self, i: usize) {
        if self.state[i] != State::Waiting {
            return;
        }
        if let Some(&failed) = self
            .ups
            .of(i)
            .iter()
            .find(|&&u| self.state[u as usize] == State::Failed)
        {
            let key = self.graph.tasks[failed as usize].key.clone();
            let failure = match self.failures.get(&failed) {
                Some(upstream @ TaskFailure::Upstream { .. }) => upstream.clone(),
                Some(failure) => TaskFailure::Upstream {
                    key,
                    cause: Box::new(failure.clone()),
                },
                None => TaskFailure::Upstream {
                    key,
                    cause: Box::new(TaskFailure::Stopped {
                        message: "it failed".into(),
                    }),
                },
            };
            self.fail(i, failure);
            return;
        }
        let released: Vec<u32> = self
            .ups
            .of(i)
            .iter()
            .copied()
            .filter(|&u| self.state[u as usize] == State::Released)
            .collect();
        for u in released {
            self.revive(u as usize);
        }
        let left = self
            .ups
            .of(i)
            .iter()
            .filter(|&&u| !matches!(self.state[u as usize], State::Done { .. }))
            .count();
        self.waiting[i] = left as u32;
        if left == 0 {
            self.make_ready(i);
        }
    }

    fn make_ready(&mut self, i: usize) {
        self.state[i] = State::Ready;
        self.ready.push(Reverse((self.rank[i], i as u32)));
    }

    /// Released task `root` is needed again: it, and what it reads that was released too, is
    /// made again.
    fn revive(&mut self, root: usize) {
        let mut stack = vec![root];
        let mut revived = Vec::new();
        while let Some(u) = stack.pop() {
            if self.state[u] != State::Released {
                continue;
            }
            self.state[u] = State::Waiting;
            self.ended -= 1;
            self.report.recomputed += 1;
            for &w in self.ups.of(u) {
                self.pending_readers[w as usize] += 1;
                stack.push(w as usize);
            }
            revived.push(u);
        }
        // Deepest first: what they read is waiting or done by now, never released.
        for u in revived.into_iter().rev() {
            self.requeue_if_ready(u);
        }
    }

    /// Task `i` ran on `node`, which keeps its `bytes` of output.
    pub(crate) fn done(&mut self, i: usize, node: NodeId, bytes: u64) {
        self.state[i] = State::Done { node };
        self.sizes[i] = bytes;
        self.ended += 1;
        for k in 0..self.readers.of(i).len() {
            let r = self.readers.of(i)[k] as usize;
            if self.state[r] == State::Waiting {
                self.waiting[r] = self.waiting[r].saturating_sub(1);
                if self.waiting[r] == 0 {
                    self.make_ready(r);
                }
            }
        }
        self.read_by(i);
        self.release_if_unneeded(i);
    }

    /// Task `i` has ended: one reader fewer for each task it read.
    fn read_by(&mut self, i: usize) {
        for k in 0..self.ups.of(i).len() {
            let u = self.ups.of(i)[k] as usize;
            self.pending_readers[u] = self.pending_readers[u].saturating_sub(1);
            self.release_if_unneeded(u);
        }
    }

    fn release_if_unneeded(&mut self, u: usize) {
        if let State::Done { node } = self.state[u]
            && self.pending_readers[u] == 0
            && !self.wanted[u]
            && !self.foreign.contains_key(&(u as u32))
        {
            self.state[u] = State::Released;
            self.releasing.entry(node).or_default().insert(u as u32);
        }
    }

    /// Outputs released since the last call, by the node keeping them (to be told to drop
    /// them): those still released (one needed again since is being made again).
    pub(crate) fn take_releases(&mut self) -> BTreeMap<NodeId, BTreeSet<u32>> {
        let mut releasing = std::mem::take(&mut self.releasing);
        for tasks in releasing.values_mut() {
            tasks.retain(|&u| self.state[u as usize] == State::Released);
        }
        releasing.retain(|_, tasks| !tasks.is_empty());
        releasing
    }

    /// Task `i` failed: so does every task that reads it, directly or not.
    pub(crate) fn fail(&mut self, i: usize, failure: TaskFailure) {
        // Readers name the first failure, never another `Upstream`.
        let (key, cause) = match &failure {
            TaskFailure::Upstream { key, cause } => (key.clone(), cause.clone()),
            other => (self.graph.tasks[i].key.clone(), Box::new(other.clone())),
        };
        self.state[i] = State::Failed;
        self.failures.insert(i as u32, failure);
        self.ended += 1;
        self.read_by(i);
        let mut stack: Vec<u32> = self.readers.of(i).to_vec();
        while let Some(r) = stack.pop() {
            let r = r as usize;
            if matches!(
                self.state[r],
                State::Failed | State::Done { .. } | State::Released
            ) {
                continue;
            }
            self.state[r] = State::Failed;
            self.failures.insert(
                r as u32,
                TaskFailure::Upstream {
                    key: key.clone(),
                    cause: cause.clone(),
                },
            );
            self.ended += 1;
            self.read_by(r);
            stack.extend_from_slice(self.readers.of(r));
        }
    }

    /// Node `node` is gone: what it kept is made again where still needed.
    pub(crate) fn lose(&mut self, node: NodeId) {
        self.releasing.remove(&node);
        let lost: Vec<usize> = (0..self.state.len())
            .filter(|&i| self.state[i] == State::Done { node })
            .collect();
        if lost.is_empty() {
            return;
        }
        for &i in &lost {
            self.unmake(i);
        }
        // Readers that were ready now wait for what they read to be made again.
        for i in 0..self.state.len() {
            if matches!(self.state[i], State::Waiting | State::Ready) {
                self.state[i] = State::Waiting;
                self.requeue_if_ready(i);
            }
        }
    }

    /// Done task `i`'s output is gone: it waits to be made again (kept, so still needed), and
    /// reads what it read again.
    fn unmake(&mut self, i: usize) {
        self.state[i] = State::Waiting;
        self.foreign.remove(&(i as u32));
        self.ended -= 1;
        self.report.recomputed += 1;
        for k in 0..self.ups.of(i).len() {
            let u = self.ups.of(i)[k] as usize;
            self.pending_readers[u] += 1;
        }
    }

    /// Task `i` could not read its inputs kept on `node` (which still answers: it dropped
    /// them): those are made again.
    pub(crate) fn lose_inputs_of(&mut self, i: usize, node: NodeId) {
        for k in 0..self.ups.of(i).len() {
            let u = self.ups.of(i)[k] as usize;
            if self.state[u] == (State::Done { node }) {
                self.unmake(u);
                self.requeue_if_ready(u);
            }
        }
    }

    /// The bytes task `i`'s output was kept as (0 until it is done).
    pub(crate) fn size(&self, i: usize) -> u64 {
        self.sizes[i]
    }

    /// Task `key`'s index, the node keeping its output and its bytes: `None` unless it is
    /// done.
    pub(crate) fn kept(&self, key: &TaskKey) -> Option<(usize, NodeId, u64)> {
        let i = find(&self.graph, &self.by_key, key)?;
        match self.state[i] {
            State::Done { node } => Some((i, node, self.sizes[i])),
            _ => None,
        }
    }

    /// Nothing runs and nothing is ready: anything still waiting reads a task that can no
    /// longer be made, and fails.
    pub(crate) fn fail_stuck(&mut self) {
        for i in 0..self.state.len() {
            if matches!(self.state[i], State::Waiting | State::Ready) {
                self.fail(
                    i,
                    TaskFailure::Stopped {
                        message: "its inputs could not be made: no live node is left".into(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_proto::{Arg, Kernel, Task, Value};

    use super::*;

    fn task(kernel: &str, args: Vec<Arg>) -> Task {
        Task::new(kernel, Kernel::builtin(kernel), args)
    }

    /// a, b → c → d (wanted); a is read twice (by c, and by the duplicate entry of c).
    fn chain() -> Graph {
        let a = task("inc", vec![Arg::Value(Value::Int(1))]);
        let b = task("inc", vec![Arg::Value(Value::Int(2))]);
        let c = task(
            "add",
            vec![Arg::Output(a.key.clone()), Arg::Output(b.key.clone())],
        );
        let d = task("inc", vec![Arg::Output(c.key.clone())]);
        Graph {
            wanted: vec![d.key.clone()],
            tasks: vec![a, b, c.clone(), d, c],
        }
    }

    fn start(graph: Graph) -> Run {
        let order = graph.validate(&BTreeSet::new()).unwrap();
        let run = Run::new(graph, &order, &[]);
        assert_eq!(run.wanted(), vec![3]);
        run
    }

    fn released(run: &mut Run, node: NodeId) -> Vec<u32> {
        let mut all = run.take_releases();
        let on_node = all.remove(&node).unwrap_or_default();
        // What other nodes dropped is not asked about here: put back.
        run.releasing = all;
        on_node.into_iter().collect()
    }

    /// Task `i`, which must be ready, runs on `node`.
    fn finish(run: &mut Run, i: usize, node: NodeId) {
        assert_eq!(run.state(i), State::Ready, "task {i}");
        run.take_ready(i);
        run.running(i);
        run.done(i, node, 10);
    }

    #[test]
    fn outputs_are_released_once_no_reader_is_left_and_made_again_when_needed() {
        let mut run = start(chain());
        assert_eq!(run.state(4), State::Duplicate);
        assert_eq!(run.state(2), State::Waiting);
        finish(&mut run, 0, 1);
        finish(&mut run, 1, 2);
        assert!(released(&mut run, 1).is_empty(), "c has not read a yet");
        finish(&mut run, 2, 3);
        assert_eq!(released(&mut run, 1), vec![0]);
        assert_eq!(released(&mut run, 2), vec![1]);
        assert_eq!(run.state(0), State::Released);
        // Node 3, keeping c, is lost before d ran: c is made again, and so are a and b.
        run.lose(3);
        assert_eq!(run.state(2), State::Waiting);
        assert_eq!(run.report.recomputed, 3);
        assert_eq!(run.ended, 0);
        finish(&mut run, 0, 1);
        finish(&mut run, 1, 1);
        finish(&mut run, 2, 1);
        finish(&mut run, 3, 2);
        assert_eq!(run.ended, 4);
        // d is wanted: kept to the end; a, b and c are released on node 1.
        assert_eq!(run.state(3), State::Done { node: 2 });
        assert_eq!(released(&mut run, 1), vec![0, 1, 2]);
        assert!(run.peek_ready().is_none());
    }

    #[test]
    fn a_failure_fails_its_readers_and_releases_what_they_read() {
        let mut run = start(chain());
        finish(&mut run, 0, 1);
        run.take_ready(1);
        run.fail(
            1,
            TaskFailure::Raised {
                message: "no".into(),
            },
        );
        assert_eq!(run.ended, 4);
        assert!(matches!(run.failure(3), Some(TaskFailure::Upstream { .. })));
        assert!(run.peek_ready().is_none());
        // c, a's only reader, will never run: a is released.
        assert_eq!(run.state(0), State::Released);
        assert_eq!(released(&mut run, 1), vec![0]);
    }

    #[test]
    fn outputs_kept_earlier_are_read_not_made_and_made_from_lineage_when_lost() {
        let graph = chain();
        let c = graph.tasks[2].key.clone();
        let order = graph.validate(&BTreeSet::new()).unwrap();
        let kept = KeptOutput {
            key: c,
            job: 77,
            task: 5,
            node: 9,
        };
        let mut run = Run::new(graph, &order, &[kept]);
        // c is kept by job 77 on node 9: a and b are not needed, d is ready at once.
        assert_eq!(run.state(2), State::Done { node: 9 });
        assert_eq!(run.foreign(2), Some((77, 5)));
        assert_eq!(
            (run.state(0), run.state(1)),
            (State::Released, State::Released)
        );
        assert_eq!(run.ended, 3);
        assert_eq!(run.peek_ready(), Some(3));
        // Node 9 is lost before d ran: c is made here, from a and b.
        run.lose(9);
        assert_eq!(run.foreign(2), None);
        assert_eq!(run.state(3), State::Waiting);
        finish(&mut run, 0, 1);
        finish(&mut run, 1, 1);
        finish(&mut run, 2, 2);
        finish(&mut run, 3, 2);
        assert_eq!(run.ended, 4);
        assert_eq!(released(&mut run, 1), vec![0, 1]);
        assert_eq!(released(&mut run, 2), vec![2]);
    }

    /// An output released and then needed again (its reader's output was lost) is made again;
    /// the release still queued for its old copy is not sent, so it cannot drop the new one.
    #[test]
    fn a_release_queued_before_an_output_is_made_again_is_dropped() {
        let mut run = start(chain());
        finish(&mut run, 0, 1);
        finish(&mut run, 1, 2);
        finish(&mut run, 2, 3);
        // a and b are released, not yet told to their nodes; c's node is lost.
        run.lose(3);
        assert_eq!(run.state(0), State::Ready);
        assert!(
            run.take_releases().is_empty(),
            "a and b are being made again"
        );
        // A task whose input failed while it waited fails with the first failure.
        run.take_ready(0);
        run.fail(
            0,
            TaskFailure::Raised {
                message: "no".into(),
            },
        );
        assert_eq!(run.state(2), State::Failed);
        match run.failure(3) {
            Some(TaskFailure::Upstream { key, cause }) => {
                assert_eq!(key, &run.graph.tasks[0].key);
                assert!(matches!(**cause, TaskFailure::Raised { .. }));
            }
            other => panic!("{other:?}"),
        }
    }
}
