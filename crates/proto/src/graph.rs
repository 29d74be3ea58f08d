//! Task graphs, the one model every piece of work becomes (as in Dask): a task has a key, a
//! kernel (what it computes), arguments (literals, stored partitions, other tasks' outputs)
//! and what it needs to run; a graph is a set of tasks and the keys its submitter wants.
//!
//! A key is `name-token`: a readable name and a token, the blake3 hash of what the task
//! computes (its kernel and arguments, upstream keys included), so the same work submitted
//! twice has the same key and is computed once. What a task makes is a [`Datum`]: an Arrow
//! table (IPC bytes) or a single value.
//!
//! This module is plain data with its checks ([`Graph::validate`]); running graphs is the
//! business of `tern-graph` (kernels, the single-machine schedulers) and `tern-sched`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Tasks one graph may hold.
pub const MAX_GRAPH_TASKS: usize = 2_000_000;
/// Bytes one graph may take as it is sent (`Request::SubmitGraph`): a few hundred per task.
pub const MAX_GRAPH_BYTES: u64 = 256 << 20;
/// Keys, values and dataset names one submission may hold as it is decoded: what it decodes
/// to stays within a few dozen bytes each, however few bytes each took to send (a million-task
/// tree reduction holds about four million).
pub const MAX_GRAPH_ITEMS: u64 = 16_000_000;
/// Arguments one task may take.
pub const MAX_TASK_ARGS: usize = 100_000;
/// Bytes of one task's literal arguments, all together.
pub const MAX_LITERAL_BYTES: usize = 1 << 20;
/// Longest key.
pub const MAX_KEY_BYTES: usize = 256;

/// A task's key: `name-token` (see the module docs).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey(#[serde(deserialize_with = "counted")] String);

impl TaskKey {
    /// The key of a task named `name` computing `kernel` over `args`: the token hashes the
    /// kernel and every argument (an upstream task by its key, which hashes what it computes).
    pub fn of(name: &str, kernel: &Kernel, args: &[Arg]) -> TaskKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&postcard::to_allocvec(&(kernel, args)).expect("plain data encodes"));
        let token = hasher.finalize().to_hex();
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
            .take(64)
            .collect();
        let name = if name.is_empty() { "task".into() } else { name };
        TaskKey(format!("{name}-{}", &token[..32]))
    }

    /// A key given as text (from a client), checked.
    pub fn parse(text: &str) -> Result<TaskKey, GraphError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_KEY_BYTES
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
        if ok {
            Ok(TaskKey(text.to_string()))
        } else {
            Err(GraphError::BadKey {
                key: text.chars().take(80).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The readable part before the token.
    pub fn name(&self) -> &str {
        self.0.rsplit_once('-').map_or(&self.0, |(name, _)| name)
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskKey({})", self.0)
    }
}

/// What a task computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kernel {
    /// A kernel compiled into every node, by name and version (`tern_graph::kernels` lists
    /// them); a node that lacks it fails the task saying so.
    Builtin { name: String, version: u32 },
    /// A function another runtime runs out of the node's process (the Python package's
    /// worker processes): `function` is opaque to tern, inputs and output cross as bytes.
    External { runtime: String, function: Vec<u8> },
}

impl Kernel {
    pub fn builtin(name: &str) -> Kernel {
        Kernel::Builtin {
            name: name.into(),
            version: 1,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernel::Builtin { name, version } => write!(f, "{name}/v{version}"),
            Kernel::External { runtime, .. } => write!(f, "{runtime} function"),
        }
    }
}

/// A single value, as a literal argument or a task's output. Floats compare by their bits
/// (so a value equals itself, NaN included, as keys of the same work must). Lists nest at most
/// [`MAX_VALUE_DEPTH`] deep: decoding refuses deeper ones (a few bytes per level would
/// otherwise take a decoder, and the node with it, past the end of its stack).
#[derive(Debug, Clone, Serialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(#[serde(with = "crate::frame::bytes")] Vec<u8>),
    List(Vec<Value>),
}

/// Lists a [`Value`] may nest.
pub const MAX_VALUE_DEPTH: usize = 64;

std::thread_local! {
    /// Lists being decoded on this thread, outermost first: decoders are synchronous, so
    /// the count is the depth of the value being decoded.
    static DECODING_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

std::thread_local! {
    /// Items the submission being decoded on this thread may still hold (`None`: not
    /// decoding a submission, no limit).
    static ITEMS_LEFT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Decode `f` with at most `items` items (keys, values, dataset names).
pub(crate) fn with_item_budget<T>(items: u64, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ITEMS_LEFT.with(|left| left.set(None));
        }
    }
    ITEMS_LEFT.with(|left| left.set(Some(items)));
    let _reset = Reset;
    f()
}

std::thread_local! {
    /// Why the last decode on this thread was refused by a check of ours (the decoder keeps
    /// no message of its own).
    static REFUSED: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

fn refuse<E: serde::de::Error>(why: &'static str) -> E {
    REFUSED.with(|r| r.set(Some(why)));
    E::custom(why)
}

/// Why the decode that just failed on this thread was refused, if one of our checks did.
pub(crate) fn take_refusal() -> Option<&'static str> {
    REFUSED.with(|r| r.take())
}

/// One more item decoded: refused past the budget.
fn count_item<E: serde::de::Error>() -> Result<(), E> {
    ITEMS_LEFT.with(|left| match left.get() {
        None => Ok(()),
        Some(0) => Err(refuse(
            "a graph of too many keys, values and names (at most MAX_GRAPH_ITEMS: 16,000,000)",
        )),
        Some(n) => {
            left.set(Some(n - 1));
            Ok(())
        }
    })
}

fn counted<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<String, D::Error> {
    count_item::<D::Error>()?;
    String::deserialize(decoder)
}

/// One level of a value being decoded, counted while it lasts.
struct DepthGuard;

impl DepthGuard {
    fn enter<E: serde::de::Error>() -> Result<Self, E> {
        DECODING_DEPTH.with(|depth| {
            if depth.get() >= MAX_VALUE_DEPTH {
                return Err(refuse("a value nests more than 64 lists (MAX_VALUE_DEPTH)"));
            }
            depth.set(depth.get() + 1);
            Ok(DepthGuard)
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DECODING_DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// [`Value`] as it is decoded: the same variants in the same order (so the same encoding),
/// its lists' items decoded through [`Value`]'s depth check.
#[derive(Deserialize)]
#[serde(rename = "Value")]
enum ValueWire {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(#[serde(with = "crate::frame::bytes")] Vec<u8>),
    List(Vec<Value>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
        let _level = DepthGuard::enter::<D::Error>()?;
        count_item::<D::Error>()?;
        Ok(match ValueWire::deserialize(decoder)? {
            ValueWire::Null => Value::Null,
            ValueWire::Bool(b) => Value::Bool(b),
            ValueWire::Int(i) => Value::Int(i),
            ValueWire::Float(f) => Value::Float(f),
            ValueWire::Str(s) => Value::Str(s),
            ValueWire::Bytes(b) => Value::Bytes(b),
            ValueWire::List(items) => Value::List(items),
        })
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// What a task makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datum {
    /// One value.
    Value(Value),
    /// A table, as one Arrow IPC stream. Shared, not copied, as it passes from the store or
    /// the outputs a node keeps to the kernels that read it in place.
    Table(#[serde(with = "crate::frame::shared_bytes")] bytes::Bytes),
    /// Several outputs of one task (an array chunk cut into the pieces other chunks need),
    /// kept apart so that a task reading one of them ([`Arg::Part`]) fetches that one alone.
    /// Read whole ([`Arg::Output`]), such a task gives how many parts it made.
    Parts(Vec<Datum>),
}

/// The last byte of a kept output that is a table's own bytes.
const KEPT_TABLE: u8 = 1;
/// The last byte of a kept output that is postcard's encoding of a [`Datum`].
const KEPT_ENCODED: u8 = 0;

impl Datum {
    /// The bytes a node keeps this output as. A table (most outputs, and the large ones) is
    /// its own bytes with a tag after them, so keeping it copies nothing (encoding it with
    /// postcard copied every chunk: measured, a twentieth of a node's CPU in an array's
    /// elementwise work); anything else is postcard's encoding, tagged.
    pub fn into_kept(self) -> Result<Vec<u8>, String> {
        match self {
            Datum::Table(table) => {
                // A fresh output is its maker's alone: its buffer is taken, not copied.
                let mut bytes = Vec::from(table);
                bytes.push(KEPT_TABLE);
                Ok(bytes)
            }
            other => {
                let mut bytes = postcard::to_allocvec(&other).map_err(|e| e.to_string())?;
                bytes.push(KEPT_ENCODED);
                Ok(bytes)
            }
        }
    }

    /// The output [`Datum::into_kept`] made `bytes` of (a table shares them).
    pub fn from_kept(bytes: bytes::Bytes) -> Result<Datum, String> {
        match bytes.split_last() {
            Some((&KEPT_TABLE, _)) => Ok(Datum::Table(bytes.slice(..bytes.len() - 1))),
            Some((&KEPT_ENCODED, encoded)) => {
                postcard::from_bytes(encoded).map_err(|e| e.to_string())
            }
            Some((tag, _)) => Err(format!("an output kept in an unknown form ({tag})")),
            None => Err("an empty output".into()),
        }
    }
}

/// One argument of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    Value(Value),
    /// Partition `index` of version `version` of a stored dataset (a table).
    Partition {
        #[serde(deserialize_with = "counted")]
        dataset: String,
        version: u64,
        index: u32,
    },
    /// What another task of the graph (or one kept from an earlier graph) made.
    Output(TaskKey),
    /// Part `part` of what another task made as [`Datum::Parts`].
    Part {
        of: TaskKey,
        part: u32,
    },
}

/// What a task needs of the node that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory it may hold (0: the node's task limit).
    pub memory_bytes: u64,
}

/// One task of a graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub key: TaskKey,
    pub kernel: Kernel,
    pub args: Vec<Arg>,
    #[serde(default)]
    pub resources: Resources,
}

impl Task {
    /// A task whose key is derived from what it computes (see [`TaskKey::of`]).
    pub fn new(name: &str, kernel: Kernel, args: Vec<Arg>) -> Task {
        Task {
            key: TaskKey::of(name, &kernel, &args),
            kernel,
            args,
            resources: Resources::default(),
        }
    }

    /// The keys of the tasks whose outputs this one reads.
    pub fn upstream(&self) -> impl Iterator<Item = &TaskKey> {
        self.args.iter().filter_map(|a| match a {
            Arg::Output(key) | Arg::Part { of: key, .. } => Some(key),
            _ => None,
        })
    }
}

/// A set of tasks and the keys its submitter wants.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Graph {
    pub tasks: Vec<Task>,
    pub wanted: Vec<TaskKey>,
}

/// Why a graph cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum GraphError {
    #[error("{key:?} is not a task key (letters, digits, '_', '.', '-', '/', at most 256)")]
    BadKey { key: String },
    #[error("the graph has {tasks} tasks; a graph may have at most {limit}")]
    TooManyTasks { tasks: usize, limit: usize },
    #[error("task {key} has {args} arguments; at most {limit}")]
    TooManyArgs {
        key: String,
        args: usize,
        limit: usize,
    },
    #[error("task {key} carries {bytes} bytes of literals; at most {limit}")]
    LiteralsTooLarge {
        key: String,
        bytes: usize,
        limit: usize,
    },
    #[error("two tasks have the key {key} but compute different things")]
    DuplicateKey { key: String },
    #[error("task {key} reads {missing}, which no task of the graph makes")]
    MissingInput { key: String, missing: String },
    #[error("the graph has a cycle through {key}")]
    Cycle { key: String },
    #[error("{key} is wanted, but no task of the graph makes it")]
    UnknownWanted { key: String },
}

impl Graph {
    /// Check the graph and return its tasks in an order where every task comes after the
    /// tasks it reads (indexes into `tasks`). `known` are keys outside the graph whose
    /// outputs exist already (kept from an earlier graph).
    pub fn validate(&self, known: &BTreeSet<TaskKey>) -> Result<Vec<usize>, GraphError> {
        if self.tasks.len() > MAX_GRAPH_TASKS {
            return Err(GraphError::TooManyTasks {
                tasks: self.tasks.len(),
                limit: MAX_GRAPH_TASKS,
            });
        }
        let mut index: BTreeMap<&TaskKey, usize> = BTreeMap::new();
        for (i, task) in self.tasks.iter().enumerate() {
            TaskKey::parse(task.key.as_str())?;
            if task.args.len() > MAX_TASK_ARGS {
                return Err(GraphError::TooManyArgs {
                    key: task.key.to_string(),
                    args: task.args.len(),
                    limit: MAX_TASK_ARGS,
                });
            }
            let literals: usize = task.args.iter().map(literal_bytes).sum::<usize>()
                + match &task.kernel {
                    Kernel::External { function, .. } => function.len(),
                    Kernel::Builtin { .. } => 0,
                };
            if literals > MAX_LITERAL_BYTES {
                return Err(GraphError::LiteralsTooLarge {
                    key: task.key.to_string(),
                    bytes: literals,
                    limit: MAX_LITERAL_BYTES,
                });
            }
            if let Some(&first) = index.get(&task.key) {
                let other = &self.tasks[first];
                if other.kernel != task.kernel || other.args != task.args {
                    return Err(GraphError::DuplicateKey {
                        key: task.key.to_string(),
                    });
                }
                continue;
            }
            index.insert(&task.key, i);
        }
        for task in &self.tasks {
            for up in task.upstream() {
                if !index.contains_key(up) && !known.contains(up) {
                    return Err(GraphError::MissingInput {
                        key: task.key.to_string(),
                        missing: up.to_string(),
                    });
                }
            }
        }
        for key in &self.wanted {
            if !index.contains_key(key) && !known.contains(key) {
                return Err(GraphError::UnknownWanted {
                    key: key.to_string(),
                });
            }
        }
        // Kahn's order over the distinct tasks.
        let mut waiting: Vec<usize> = vec![0; self.tasks.len()];
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); self.tasks.len()];
        for (&key, &i) in &index {
            let _ = key;
            let mut ups: BTreeSet<usize> = BTreeSet::new();
            for up in self.tasks[i].upstream() {
                if let Some(&j) = index.get(up) {
                    ups.insert(j);
                }
            }
            waiting[i] = ups.len();
            for j in ups {
                readers[j].push(i);
            }
        }
        let mut ready: Vec<usize> = index
            .values()
            .copied()
            .filter(|&i| waiting[i] == 0)
            .collect();
        ready.sort_unstable();
        let mut order = Vec::with_capacity(index.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &r in &readers[i] {
                waiting[r] -= 1;
                if waiting[r] == 0 {
                    ready.push(r);
                }
            }
        }
        if order.len() != index.len() {
            let stuck = index
                .values()
                .find(|&&i| waiting[i] > 0)
                .map(|&i| self.tasks[i].key.to_string())
                .unwrap_or_default();
            return Err(GraphError::Cycle { key: stuck });
        }
        Ok(order)
    }
}

/// The stage number under which a node keeps graph task outputs with the shuffle outputs of
/// SQL stages (same store, same release with the job, same fetch).
pub const GRAPH_STAGE: u32 = u32::MAX;

/// Where a node finds one argument of a graph task (`Request::RunGraphTasks`), in the order
/// of the task's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgSource {
    /// A literal: the argument itself.
    Inline,
    /// A stored partition: its block, checked against the dataset's schema and row count
    /// before a kernel sees it, read from this node or one of `holders`.
    Block {
        block: crate::BlockHash,
        rows: u64,
        /// The dataset's schema as its record keeps it (JSON).
        schema: String,
        holders: Vec<(crate::NodeId, String)>,
        /// Named in errors: `partition 3 of trips`.
        partition: String,
    },
    /// Another task's output, kept on `node` as task `task` of job `job` (this graph's, or
    /// an earlier submission's that its client still holds).
    Kept {
        job: u64,
        task: u32,
        node: crate::NodeId,
        addr: String,
        /// Which of the output's buckets: 0 for the whole output, `i + 1` for part `i`.
        bucket: u32,
        /// The whole output's size as kept, so that fetches stay under [`FETCH_BATCH_BYTES`].
        bytes: u64,
    },
}

/// Kept graph outputs asked for in one `Request::FetchShuffle` (by coordinators fetching
/// wanted outputs, and by nodes fetching a batch's inputs).
pub const FETCH_BATCH: usize = 1024;

/// About the most bytes of kept outputs asked for in one `Request::FetchShuffle`: the answer
/// is one body, which may not exceed [`crate::MAX_BLOCK_BYTES`] (a thousand 8 MB array
/// chunks would).
pub const FETCH_BATCH_BYTES: u64 = 256 << 20;

/// `items` (each with its size) cut into fetches of at most [`FETCH_BATCH`] items and about
/// [`FETCH_BATCH_BYTES`] (an item larger than that alone), in order.
pub fn fetch_batches<T>(items: impl IntoIterator<Item = (T, u64)>) -> Vec<Vec<T>> {
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0u64;
    for (item, size) in items {
        match batches.last_mut() {
            Some(batch)
                if batch.len() < FETCH_BATCH && bytes.saturating_add(size) <= FETCH_BATCH_BYTES =>
            {
                bytes += size;
                batch.push(item);
            }
            _ => {
                bytes = size;
                batches.push(vec![item]);
            }
        }
    }
    batches
}

/// Most tasks a coordinator sends a node in one `Request::RunGraphTasks`: many tiny tasks
/// cost one request per batch instead of one each, and a batch still fits a frame.
pub const MAX_TASK_BATCH: usize = 256;

/// One task of a `Request::RunGraphTasks` batch: kept as task `index` of its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRun {
    pub index: u32,
    pub task: Task,
    pub sources: Vec<ArgSource>,
}

/// How one task of a batch ended on the node that ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRan {
    /// Its output, `bytes` long, is kept on the node.
    Kept { bytes: u64 },
    /// Its kernel failed: the same inputs fail the same way anywhere.
    Raised { message: String },
    /// An input kept on `node` could not be fetched: that node is gone or dropped it.
    InputLost { node: crate::NodeId, reason: String },
    /// The node could not run it (a stored input unreadable or not its dataset's data:
    /// `NotFound`, `BadData`; the node stopping: `Unavailable`; its job released:
    /// `Cancelled`).
    Failed(crate::ErrorReply),
}

/// Why a task has no output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskFailure {
    /// Its kernel refused its inputs or failed (the message is the kernel's).
    Raised { message: String },
    /// A task it reads failed (named, with why: the first failure, never another
    /// `Upstream`), so it never ran.
    Upstream {
        key: TaskKey,
        cause: Box<TaskFailure>,
    },
    /// A stored partition it reads has no holder that can serve it.
    InputUnavailable { message: String },
    /// Its attempts failed on this many nodes (each died or stopped answering while running
    /// it): it is not tried again, as Dask marks a task that kills its workers.
    Abandoned { attempts: u32, message: String },
    /// The graph was cancelled or ran past its deadline before this task finished.
    Stopped { message: String },
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFailure::Raised { message } => f.write_str(message),
            TaskFailure::Upstream { key, cause } => {
                write!(f, "upstream task {key} failed: {cause}")
            }
            TaskFailure::InputUnavailable { message } => f.write_str(message),
            TaskFailure::Abandoned { attempts, message } => {
                write!(
                    f,
                    "gave up after {attempts} attempts on failing nodes: {message}"
                )
            }
            TaskFailure::Stopped { message } => f.write_str(message),
        }
    }
}

/// How a wanted task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    Done(Datum),
    Failed(TaskFailure),
}

/// How a graph ran on the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphReport {
    /// Distinct tasks (a key submitted twice counts once).
    pub tasks: u64,
    /// Task runs on a node holding the most bytes of their inputs, and elsewhere.
    pub local: u64,
    pub remote: u64,
    /// Runs per node.
    pub per_node: BTreeMap<crate::NodeId, u64>,
    /// Attempts that failed on a node and were tried again elsewhere.
    pub retries: u64,
    /// Tasks run again because the node keeping their output was lost.
    pub recomputed: u64,
    pub millis: u64,
}

/// What a coordinator sends a client while its graph runs, after `Response::GraphRunning`,
/// encoded as query events are ([`crate::encode_event`], [`crate::EventDecoder`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphEvent {
    /// `done` of `tasks` distinct tasks are done (or failed).
    Progress {
        done: u64,
        tasks: u64,
    },
    /// A wanted task ended.
    Output {
        key: TaskKey,
        outcome: TaskOutcome,
    },
    Finished(GraphReport),
    /// The graph as a whole could not run (the client may resubmit it).
    Failed(crate::message::ErrorReply),
    /// A wanted task's output stays kept, here, for later submissions of the same client
    /// (sent before its `Output`, when the submission asked to keep its outputs).
    Kept(KeptOutput),
    /// The submission's outputs are still kept (sent now and then after `Finished`, so a
    /// client gone away is noticed and what it kept released).
    Holding,
}

/// Where an earlier submission keeps a task's output: task `task` of job `job`, on `node`.
/// A later submission that reads the key names it, with the tasks that make it (so a lost
/// output is made again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptOutput {
    pub key: TaskKey,
    pub job: u64,
    pub task: u32,
    pub node: crate::NodeId,
}

/// What a client sends with `Request::SubmitGraph`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub graph: Graph,
    /// Outputs of the graph's tasks that earlier submissions keep: not run again unless
    /// lost.
    pub kept: Vec<KeptOutput>,
    /// Keep the wanted outputs on their nodes after the graph finishes, for as long as the
    /// client holds the submission's stream open (Dask's futures and `persist`).
    pub keep: bool,
    /// With `keep`: the wanted outputs stay on their nodes; the client is told where each
    /// is kept and that it was made (`Datum::Value(Value::Null)`), not sent its bytes
    /// (Dask's `persist`, which leaves the data on the workers). Later graphs read them.
    pub stay: bool,
}

fn literal_bytes(arg: &Arg) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::List(items) => items.iter().map(value).sum::<usize>() + 8,
            _ => 8,
        }
    }
    match arg {
        Arg::Value(v) => value(v),
        Arg::Partition { dataset, .. } => dataset.len() + 12,
        Arg::Output(key) => key.as_str().len(),
        Arg::Part { of, .. } => of.as_str().len() + 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_outputs_read_back_as_they_were_made() {
        let outputs = [
            Datum::Table(bytes::Bytes::from_static(b"arrow ipc bytes")),
            Datum::Table(bytes::Bytes::new()),
            Datum::Value(Value::Int(-3)),
            Datum::Value(Value::Bytes(vec![1])),
            Datum::Parts(vec![
                Datum::Table(vec![0, 1].into()),
                Datum::Value(Value::Null),
            ]),
        ];
        for datum in outputs {
            let kept = datum.clone().into_kept().unwrap();
            assert_eq!(Datum::from_kept(kept.into()).unwrap(), datum);
        }
        assert!(Datum::from_kept(bytes::Bytes::new()).is_err());
        let unknown = Datum::from_kept(vec![9, 9, 7].into()).unwrap_err();
        assert!(unknown.contains("unknown form"), "{unknown}");
    }

    #[test]
    fn fetches_are_bounded_by_count_and_bytes() {
        let mb = 1 << 20;
        // 100 chunks of 8 MB: 32 per fetch (256 MiB), never one body of 800 MB.
        let batches = fetch_batches((0..100).map(|i| (i, 8 * mb)));
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [32, 32, 32, 4]
        );
        assert_eq!(
            batches.concat(),
            (0..100).collect::<Vec<_>>(),
            "in order, none lost"
        );
        // Tiny outputs: by count. One larger than the bound: alone.
        assert_eq!(fetch_batches((0..2049).map(|i| (i, 1))).len(), 3);
        let big = fetch_batches([(0, 1), (1, FETCH_BATCH_BYTES * 2), (2, 1)]);
        assert_eq!(big, vec![vec![0], vec![1], vec![2]]);
    }

    fn inc(x: Arg) -> Task {
        Task::new("inc", Kernel::builtin("inc"), vec![x])
    }

    /// A value nested past the limit is refused when decoded, not followed down the stack:
    /// two bytes a level, a frame's worth would take any decoder's thread past its end.
    #[test]
    fn deeply_nested_values_are_refused_when_decoded() {
        let mut nested = Value::Int(7);
        for _ in 0..MAX_VALUE_DEPTH - 1 {
            nested = Value::List(vec![nested]);
        }
        let bytes = postcard::to_allocvec(&nested).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), nested);
        let deeper = postcard::to_allocvec(&Value::List(vec![nested.clone()])).unwrap();
        assert!(postcard::from_bytes::<Value>(&deeper).is_err());
        // A hostile encoding: a million levels of one-item lists (List is variant 6).
        let mut hostile = [6u8, 1].repeat(1_000_000);
        hostile.extend([2, 14]);
        assert!(postcard::from_bytes::<Value>(&hostile).is_err());
        // A refused decode leaves the count at zero for the next one.
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), nested);
    }

    /// A submission that would decode to more items than its budget is refused as it
    /// decodes, whatever few bytes each took (a null is one byte, 32 in memory).
    #[test]
    fn submissions_past_their_item_budget_are_refused_while_decoding() {
        let many = Task::new(
            "inc",
            Kernel::builtin("inc"),
            vec![Arg::Value(Value::List(vec![Value::Null; 1000]))],
        );
        let submission = crate::Submission {
            graph: Graph {
                wanted: vec![many.key.clone()],
                tasks: vec![many],
            },
            kept: vec![],
            keep: false,
            stay: false,
        };
        let bytes = crate::encode_submission(&submission);
        let within =
            |items| with_item_budget(items, || crate::frame::decode_submission_any(&bytes));
        assert!(within(2_000).is_ok());
        let refused = within(900).unwrap_err().to_string();
        assert!(
            refused.contains("too many keys, values and names"),
            "{refused}"
        );
        let deep = (0..100).fold(Value::Null, |v, _| Value::List(vec![v]));
        let deep = crate::encode_request(&crate::Request::RunGraphTasks {
            job: 1,
            tasks: vec![crate::TaskRun {
                index: 0,
                task: Task::new("inc", Kernel::builtin("inc"), vec![Arg::Value(deep)]),
                sources: vec![],
            }],
            release: vec![],
        });
        let refused = crate::decode_request(&deep).unwrap_err().to_string();
        assert!(refused.contains("nests more than 64 lists"), "{refused}");
        // The budget is for submissions only: a frame decoded next is not limited.
        assert!(crate::decode_submission(&bytes).is_ok());
    }

    #[test]
    fn keys_name_what_is_computed() {
        let a = inc(Arg::Value(Value::Int(1)));
        let b = inc(Arg::Value(Value::Int(1)));
        let c = inc(Arg::Value(Value::Int(2)));
        assert_eq!(a.key, b.key, "the same work has the same key");
        assert_ne!(a.key, c.key);
        assert_eq!(a.key.name(), "inc");
        let d = inc(Arg::Output(a.key.clone()));
        let e = inc(Arg::Output(c.key.clone()));
        assert_ne!(d.key, e.key, "upstream keys are part of the token");
        assert!(TaskKey::parse(a.key.as_str()).is_ok());
        assert!(TaskKey::parse("no spaces").is_err());
    }

    #[test]
    fn graphs_are_ordered_and_bad_ones_named() {
        let a = inc(Arg::Value(Value::Int(1)));
        let b = inc(Arg::Output(a.key.clone()));
        let c = Task::new(
            "add",
            Kernel::builtin("add"),
            vec![Arg::Output(a.key.clone()), Arg::Output(b.key.clone())],
        );
        let graph = Graph {
            tasks: vec![c.clone(), b.clone(), a.clone(), a.clone()],
            wanted: vec![c.key.clone()],
        };
        let order = graph.validate(&BTreeSet::new()).unwrap();
        let keys: Vec<&TaskKey> = order.iter().map(|&i| &graph.tasks[i].key).collect();
        assert_eq!(keys, vec![&a.key, &b.key, &c.key]);

        let missing = Graph {
            tasks: vec![b.clone()],
            wanted: vec![],
        };
        assert!(matches!(
            missing.validate(&BTreeSet::new()),
            Err(GraphError::MissingInput { .. })
        ));
        assert!(missing.validate(&BTreeSet::from([a.key.clone()])).is_ok());

        let mut x = inc(Arg::Value(Value::Int(7)));
        let y = inc(Arg::Output(x.key.clone()));
        x.args = vec![Arg::Output(y.key.clone())];
        let cycle = Graph {
            tasks: vec![x, y],
            wanted: vec![],
        };
        assert!(matches!(
            cycle.validate(&BTreeSet::new()),
            Err(GraphError::Cycle { .. })
        ));
        let big = inc(Arg::Value(Value::Bytes(vec![0; MAX_LITERAL_BYTES + 1])));
        let too_big = Graph {
            tasks: vec![big],
            wanted: vec![],
        };
        assert!(matches!(
            too_big.validate(&BTreeSet::new()),
            Err(GraphError::LiteralsTooLarge { .. })
        ));
    }
}
