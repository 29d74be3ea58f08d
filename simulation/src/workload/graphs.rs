//! Task graphs under faults, through the real client: one sample graph over a stored table,
//! run to the end (`Client::compute_graph`) or as futures (`Client::submit`) that a second
//! graph then reads where they are kept. What completes must equal what the table's
//! partitions hold (the model) or what the single-machine scheduler makes; nothing may stay
//! pending past its window; and once the faults have stopped, what dropped futures kept must
//! be released on every node.

use std::collections::BTreeMap;
use std::time::Duration;

use tern_client::{FutureError, TaskFuture};
use tern_proto::{
    Arg, DatasetRecord, Datum, Graph, Kernel, Task, TaskFailure, TaskKey, TaskOutcome, Value,
};

use super::{OpResult, SimClient};
use crate::invariants;

/// How long a graph or a future may stay pending, faults or not.
const WINDOW: Duration = Duration::from_secs(120);
/// How long the nodes have to drop what released futures kept, once the faults have stopped.
const RELEASE_WINDOW: Duration = Duration::from_secs(30);

/// The sample graph over one version of a table: per partition its rows and the sum of `v`,
/// both added up (`rows`, `total`), and beside them a small graph of literals ending in
/// `literals` (through an array chunk cut into parts, one of them read alone).
struct Sample {
    graph: Graph,
    record: DatasetRecord,
    rows: TaskKey,
    total: TaskKey,
    literals: TaskKey,
    /// What the single-machine scheduler makes of the literals.
    literals_expected: Result<i64, String>,
}

fn task(kernel: &str, args: Vec<Arg>) -> Task {
    Task::new(kernel, Kernel::builtin(kernel), args)
}

fn sample(record: DatasetRecord, op: u64) -> Sample {
    let part = |i: usize| Arg::Partition {
        dataset: record.name.clone(),
        version: record.version,
        index: i as u32,
    };
    let mut tasks = Vec::new();
    let (mut counts, mut sums) = (Vec::new(), Vec::new());
    for i in 0..record.partitions.len() {
        let count = task("row_count", vec![part(i)]);
        let sum = task(
            "column_sum",
            vec![part(i), Arg::Value(Value::Str("v".into()))],
        );
        counts.push(Arg::Output(count.key.clone()));
        sums.push(Arg::Output(sum.key.clone()));
        tasks.extend([count, sum]);
    }
    let rows = task("add", counts);
    let total = task("add", sums);
    let a = task("inc", vec![Arg::Value(Value::Int(op as i64))]);
    let b = task(
        "add",
        vec![Arg::Output(a.key.clone()), Arg::Value(Value::Int(2))],
    );
    // A chunk cut into parts (kept one per bucket), one part read alone by `Arg::Part`.
    let length = 3 + op % 5;
    let chunk = task(
        "array_create",
        vec![Arg::Value(Value::Str(
            serde_json::json!({
                "op": "arange", "compute": "<i8", "out_shape": [length], "start": [0],
                "begin": op, "step": 1
            })
            .to_string(),
        ))],
    );
    let cut = task(
        "array_split",
        vec![
            Arg::Value(Value::Str(
                serde_json::json!({
                    "compute": "<i8", "shapes": [[length]], "parts": [[[0, 1]], [[1, length]]]
                })
                .to_string(),
            )),
            Arg::Output(chunk.key.clone()),
        ],
    );
    let part_rows = task(
        "row_count",
        vec![Arg::Part {
            of: cut.key.clone(),
            part: 1,
        }],
    );
    let c = task(
        "add",
        vec![
            Arg::Output(a.key.clone()),
            Arg::Output(b.key.clone()),
            Arg::Output(part_rows.key.clone()),
        ],
    );
    let literal_graph = Graph {
        tasks: vec![
            a.clone(),
            b.clone(),
            chunk.clone(),
            cut.clone(),
            part_rows.clone(),
            c.clone(),
        ],
        wanted: vec![c.key.clone()],
    };
    let literals_expected = match tern_graph::compute(
        &literal_graph,
        tern_graph::local::Local::Sync,
        &tern_graph::NoInputs,
    ) {
        Ok(outcomes) => match outcomes.get(&c.key) {
            Some(Ok(Datum::Value(Value::Int(v)))) => Ok(*v),
            other => Err(format!("the single-machine scheduler made {other:?}")),
        },
        Err(e) => Err(e.to_string()),
    };
    let wanted = vec![rows.key.clone(), total.key.clone(), c.key.clone()];
    tasks.extend([rows.clone(), total.clone()]);
    tasks.extend(literal_graph.tasks);
    Sample {
        graph: Graph { tasks, wanted },
        record,
        rows: rows.key,
        total: total.key,
        literals: c.key,
        literals_expected,
    }
}

/// How a wanted output ended, as the checks see it.
enum Seen {
    Value(i64),
    /// Failed for want of a node or a holder, or the run as a whole was lost: allowed under
    /// faults (never once the cluster has healed).
    Excused(String),
    /// Anything else: a kernel refused good data, or a value of the wrong kind.
    Wrong(String),
}

/// Failing for want of a node or a holder is allowed under faults; a kernel refusing the
/// data a table holds is not.
fn excused(failure: &TaskFailure) -> bool {
    match failure {
        TaskFailure::InputUnavailable { .. }
        | TaskFailure::Abandoned { .. }
        | TaskFailure::Stopped { .. } => true,
        TaskFailure::Upstream { cause, .. } => excused(cause),
        _ => false,
    }
}

fn seen_outcome(outcome: Option<&TaskOutcome>) -> Seen {
    match outcome {
        Some(TaskOutcome::Done(Datum::Value(Value::Int(v)))) => Seen::Value(*v),
        Some(TaskOutcome::Failed(f)) if excused(f) => Seen::Excused(f.to_string()),
        other => Seen::Wrong(format!("{other:?}")),
    }
}

fn seen_future(result: &Result<Datum, FutureError>) -> Seen {
    match result {
        Ok(Datum::Value(Value::Int(v))) => Seen::Value(*v),
        Err(FutureError::Task { failure, .. }) if excused(failure) => {
            Seen::Excused(failure.to_string())
        }
        // The submission as a whole was lost (its coordinator went away, no node took it).
        Err(FutureError::Job(why)) => Seen::Excused(why.clone()),
        other => Seen::Wrong(format!("{other:?}")),
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Value(v) => write!(f, "{v}"),
            Seen::Excused(why) => write!(f, "excused ({why})"),
            Seen::Wrong(what) => write!(f, "wrong ({what})"),
        }
    }
}

impl SimClient {
    /// The sample graph over the current version of table `name`, if there is one.
    async fn sample(&self, name: &str, op: u64) -> OpResult<Option<Sample>> {
        let Some(bytes) = self.catalog_get(name).await? else {
            self.world
                .event(format!("graph over {name}: no such table"));
            return Ok(None);
        };
        let record = DatasetRecord::decode(&bytes).map_err(|e| e.to_string())?;
        Ok(Some(sample(record, op)))
    }

    /// Check what a run of `sample` made (`rows`, `total`, `literals`, in that order) against
    /// the model and the single-machine scheduler; `Err` when the cluster has healed and not
    /// everything completed.
    fn check_sample(
        &self,
        how: &str,
        sample: &Sample,
        seen: [Seen; 3],
        healed: bool,
    ) -> OpResult<()> {
        let (name, version) = (&sample.record.name, sample.record.version);
        self.world.event(format!(
            "{how} over {name} v{version}: rows {:?}, sum {:?}, literals {:?}",
            seen[0], seen[1], seen[2]
        ));
        let expected = self.world.expected_total(&sample.record);
        let wants = [
            ("rows", expected.map(|e| e.0 as i64)),
            ("sum of v", expected.map(|e| e.1)),
            ("literals", sample.literals_expected.clone().ok()),
        ];
        for ((what, want), got) in wants.iter().zip(&seen) {
            match (got, want) {
                (Seen::Value(v), Some(want)) if v == want => {}
                // No model of that version's contents (its commit was never acknowledged).
                (Seen::Value(_), None) | (Seen::Excused(_), _) => {}
                (got, want) => self.world.violated(
                    invariants::ANSWERS,
                    format!("{how} over {name} v{version} made {what} {got:?}, not {want:?}"),
                ),
            }
        }
        if healed && seen.iter().any(|s| !matches!(s, Seen::Value(_))) {
            return Err(format!("{how} over {name} did not complete: {seen:?}"));
        }
        Ok(())
    }

    /// Run the sample graph over table `name` with `Client::compute_graph`. It must end
    /// within its window; once the cluster has healed (`healed`), every task must complete.
    pub(super) async fn check_graph(&self, name: &str, op: u64, healed: bool) -> OpResult<()> {
        let Some(sample) = self.sample(name, op).await? else {
            return Ok(());
        };
        let run = self.client.compute_graph(&sample.graph);
        let outcomes = match tokio::time::timeout(WINDOW, run).await {
            Ok(Ok(answer)) => answer.outcomes,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                self.world.violated(
                    invariants::LIVENESS,
                    format!(
                        "a graph over {name} was still pending after {} s",
                        WINDOW.as_secs()
                    ),
                );
                return Err("pending past its window".into());
            }
        };
        let seen = [&sample.rows, &sample.total, &sample.literals]
            .map(|key| seen_outcome(outcomes.get(key)));
        self.check_sample("a graph", &sample, seen, healed)
    }

    /// Submit (or, every other run, persist) the sample graph over table `name` as futures,
    /// then a graph reading them by key (read where the first submission keeps them, made
    /// again if lost). Every
    /// future must end within the window with the model's answer (or for want of a node).
    /// The futures are dropped at the end; once the cluster has healed (`healed`), every
    /// future must complete, and what they kept must then be released on every node.
    pub(super) async fn check_futures(&self, name: &str, op: u64, healed: bool) -> OpResult<()> {
        let Some(sample) = self.sample(name, op).await? else {
            return Ok(());
        };
        let kept_before = if healed {
            Some(self.kept_outputs().await?)
        } else {
            None
        };
        // Every other run persists (Dask's `persist`): the outputs stay where they were made
        // and the futures resolve to Null; the reader then reads all three where they stay.
        let persisted = op % 2 == 1;
        let futures = if persisted {
            self.client.persist(sample.graph.clone())
        } else {
            self.client.submit(sample.graph.clone())
        };
        let both = task(
            "add",
            vec![
                Arg::Output(sample.rows.clone()),
                Arg::Output(sample.total.clone()),
            ],
        );
        let mut read = vec![both.clone()];
        if persisted {
            read.extend(
                [&sample.rows, &sample.total, &sample.literals]
                    .map(|key| task("identity", vec![Arg::Output(key.clone())])),
            );
        }
        let reader = self.client.submit(Graph {
            wanted: read.iter().map(|t| t.key.clone()).collect(),
            tasks: read,
        });
        let all: Vec<TaskFuture> = futures.iter().chain(&reader).cloned().collect();
        let values = match tokio::time::timeout(WINDOW, tern_client::gather(&all)).await {
            Ok(values) => values,
            Err(_) => {
                let pending: Vec<String> = all
                    .iter()
                    .filter(|f| !f.done())
                    .map(|f| f.key().to_string())
                    .collect();
                self.world.violated(
                    invariants::LIVENESS,
                    format!(
                        "futures over {name} still pending after {} s: {pending:?}",
                        WINDOW.as_secs()
                    ),
                );
                return Err("pending past its window".into());
            }
        };
        let mut seen: Vec<Seen> = values.iter().map(seen_future).collect();
        if persisted {
            // The persisted futures hold no value: Null once made (or their failure).
            for (future, value) in futures.iter().zip(&values) {
                match value {
                    Ok(Datum::Value(Value::Null)) => {}
                    Ok(other) => self.world.violated(
                        invariants::ANSWERS,
                        format!(
                            "persisted future {} resolved to {other:?}, not Null",
                            future.key()
                        ),
                    ),
                    Err(_) => {}
                }
            }
            // Their values as the reader found them where they stay.
            let read: Vec<Seen> = seen.split_off(futures.len() + 1);
            let both = seen_future(&values[futures.len()]);
            seen = read;
            seen.push(both);
        }
        let [rows, total, literals, both]: [Seen; 4] = seen
            .try_into()
            .map_err(|_| "one value per future".to_string())?;
        if let (Seen::Value(r), Seen::Value(t), Seen::Value(b)) = (&rows, &total, &both)
            && r + t != *b
        {
            self.world.violated(
                invariants::ANSWERS,
                format!("a graph reading futures over {name} made {b}, not {r} + {t}"),
            );
        }
        if healed && !matches!(both, Seen::Value(_)) {
            return Err(format!("a graph reading futures over {name}: {both:?}"));
        }
        self.check_sample("futures", &sample, [rows, total, literals], healed)?;
        drop((futures, reader, all));
        if let Some(before) = kept_before {
            self.world.event(format!(
                "futures over {name} dropped; task outputs kept before them (node: count): {before:?}"
            ));
            self.check_released(name, before).await;
        }
        Ok(())
    }

    /// Task outputs every node that is up keeps now, by node (those that do not answer are
    /// left out).
    async fn kept_outputs(&self) -> OpResult<BTreeMap<u64, u64>> {
        use tern_proto::{NodeState, Request, Response, Transport};
        let status = self.client.status().await.map_err(|e| e.to_string())?;
        let mut kept = BTreeMap::new();
        for node in status.nodes.iter().filter(|n| n.state == NodeState::Up) {
            let asked = self
                .client
                .transport()
                .call_within(&node.address, Request::LocalMetrics, Duration::from_secs(2))
                .await;
            if let Ok(Response::Metrics(m)) = asked {
                kept.insert(node.id, m.shuffle_outputs);
            }
        }
        Ok(kept)
    }

    /// After futures are dropped with no fault about, every node keeps no more outputs than
    /// before they were submitted (nothing else runs meanwhile), within the window.
    async fn check_released(&self, name: &str, before: BTreeMap<u64, u64>) {
        let deadline = tokio::time::Instant::now() + RELEASE_WINDOW;
        loop {
            let now = self.kept_outputs().await.unwrap_or_default();
            let leaked: Vec<(u64, u64, u64)> = now
                .iter()
                .filter_map(|(id, n)| {
                    let was = before.get(id).copied().unwrap_or(0);
                    (*n > was).then_some((*id, was, *n))
                })
                .collect();
            if leaked.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                self.world.violated(
                    invariants::LIVENESS,
                    format!(
                        "futures over {name} were dropped, yet {} s later nodes still keep their \
                         outputs (node, before, now): {leaked:?}",
                        RELEASE_WINDOW.as_secs()
                    ),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
