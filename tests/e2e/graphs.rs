//! Task graphs on a cluster: every shape gives the single-machine schedulers' answers, a
//! task that fails fails only what reads it, a node lost mid-graph costs a recomputation, and
//! a partition with no live holder fails the tasks reading it, naming it.

use std::collections::{BTreeMap, HashMap};

use tern_e2e::LocalCluster;
use tern_graph::{Delayed, Inputs, Local, delayed, graph_of, partition};
use tern_proto::{Datum, Graph, TaskFailure, TaskKey, TaskOutcome, Value};

use crate::setup;

/// The stored partitions, read once from the cluster, for the single-machine schedulers.
struct Fetched {
    dataset: String,
    parts: HashMap<u32, Vec<u8>>,
}

impl Inputs for Fetched {
    fn partition(&self, dataset: &str, _version: u64, index: u32) -> Result<Datum, String> {
        if dataset != self.dataset {
            return Err(format!("no dataset {dataset}"));
        }
        self.parts
            .get(&index)
            .map(|b| Datum::Table(b.clone().into()))
            .ok_or_else(|| format!("no partition {index}"))
    }
}

fn fetch_partitions(
    rt: &tokio::runtime::Runtime,
    client: &tern_client::Client,
    name: &str,
) -> (u64, Fetched) {
    rt.block_on(async {
        let record = client.dataset(name).await.unwrap().expect("stored");
        let addresses = client.node_addresses().await.unwrap();
        let mut parts = HashMap::new();
        for i in 0..record.partitions.len() {
            let bytes = client.read_partition(&record, i, &addresses).await.unwrap();
            parts.insert(i as u32, bytes);
        }
        (
            record.version,
            Fetched {
                dataset: name.into(),
                parts,
            },
        )
    })
}

/// Per partition, its rows and the sum of `amount`; a tree of pairwise sums of those; the
/// mean of `amount` from partials.
fn map_and_reduce(name: &str, version: u64, partitions: u32) -> Vec<Delayed> {
    let rows: Vec<Delayed> = (0..partitions)
        .map(|i| delayed("row_count", [partition(name, version, i)]))
        .collect();
    let sums: Vec<Delayed> = (0..partitions)
        .map(|i| delayed("column_sum", [partition(name, version, i), "amount".into()]))
        .collect();
    let mut level = sums.clone();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| delayed("add", pair.iter().map(Into::into)))
            .collect();
    }
    let partials: Vec<_> = (0..partitions)
        .map(|i| {
            delayed(
                "column_mean_partial",
                [partition(name, version, i), "amount".into()],
            )
            .into()
        })
        .collect();
    let mean = delayed("mean_final", partials);
    let total_rows = delayed("add", rows.iter().map(Into::into));
    let mut wanted = vec![level.remove(0), mean, total_rows];
    wanted.extend(rows);
    wanted
}

/// A random DAG of `n` distinct tasks (seeded): each takes the largest of up to three
/// earlier outputs, or one plus an earlier output.
fn random_dag(n: usize, seed: u64) -> Vec<Delayed> {
    let mut state = seed;
    let mut next = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let mut all: Vec<Delayed> = (0..10)
        .map(|i| delayed("inc", [(i as i64).into()]))
        .collect();
    while all.len() < n {
        let pick = |next: &mut dyn FnMut(usize) -> usize, all: &Vec<Delayed>| {
            let window = all.len().min(200);
            all[all.len() - 1 - next(window)].clone()
        };
        // Literals that cancel out make every task distinct (the same work would share a
        // key and run once).
        let i = all.len() as i64;
        let task = if next(3) == 0 {
            delayed(
                "add",
                [pick(&mut next, &all).into(), i.into(), (1 - i).into()],
            )
        } else {
            let mut inputs = vec!["max".into(), (-i).into()];
            for _ in 0..1 + next(3) {
                inputs.push(pick(&mut next, &all).into());
            }
            delayed("reduce", inputs)
        };
        all.push(task);
    }
    // Every tenth task is wanted, and every task nothing reads (so all are in the graph).
    let read: std::collections::BTreeSet<TaskKey> = all
        .iter()
        .flat_map(|d| d.task().upstream().cloned().collect::<Vec<_>>())
        .collect();
    all.iter()
        .enumerate()
        .filter(|(i, d)| i % 10 == 0 || !read.contains(d.key()))
        .map(|(_, d)| d.clone())
        .collect()
}

fn on_cluster(
    rt: &tokio::runtime::Runtime,
    client: &tern_client::Client,
    graph: &Graph,
) -> tern_client::GraphAnswer {
    rt.block_on(client.compute_graph(graph))
        .expect("graph runs")
}

/// The cluster's outcomes equal the single-machine schedulers' (failures compared by their
/// message).
fn assert_same_as_local(
    cluster: &BTreeMap<TaskKey, TaskOutcome>,
    graph: &Graph,
    inputs: &dyn Inputs,
) {
    for scheduler in [Local::Sync, Local::Threads(4)] {
        let local = tern_graph::compute(graph, scheduler, inputs).unwrap();
        assert_eq!(local.len(), cluster.len(), "{scheduler:?}");
        for (key, outcome) in &local {
            match (outcome, &cluster[key]) {
                (Ok(a), TaskOutcome::Done(b)) => assert_eq!(a, b, "{key} on {scheduler:?}"),
                (Err(a), TaskOutcome::Failed(b)) => {
                    assert!(b.to_string().contains(a.as_str()), "{key}: {a} vs {b}")
                }
                (a, b) => panic!("{key} on {scheduler:?}: {a:?} here, {b:?} on the cluster"),
            }
        }
    }
}

#[test]
fn graphs_give_the_single_machine_answers_and_a_failing_task_fails_only_its_readers() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    crate::compute::store_sales(&cluster, "sales", 120_000, "256KiB");
    let client = cluster.client();
    let (version, fetched) = fetch_partitions(&rt, &client, "sales");
    let partitions = fetched.parts.len() as u32;
    assert!(partitions >= 6, "{partitions} partitions");

    // Map and tree reduction over the stored partitions.
    let graph = graph_of(&map_and_reduce("sales", version, partitions));
    let answer = on_cluster(&rt, &client, &graph);
    assert_same_as_local(&answer.outcomes, &graph, &fetched);
    let rows = &answer.outcomes[&graph.wanted[2]];
    assert_eq!(rows, &TaskOutcome::Done(Datum::Value(Value::Int(120_000))));
    let report = &answer.report;
    assert!(
        report.local * 4 >= (report.local + report.remote) * 3,
        "tasks run where their data is: {report:?}"
    );
    assert!(report.per_node.len() >= 2, "{report:?}");

    // A diamond, and a random DAG of 10,000 tasks.
    let a = delayed("inc", [1.into()]);
    let diamond = delayed(
        "add",
        [
            delayed("inc", [(&a).into()]).into(),
            delayed("add", [(&a).into(), 10.into()]).into(),
        ],
    );
    let graph = diamond.graph();
    assert_same_as_local(&on_cluster(&rt, &client, &graph).outcomes, &graph, &fetched);
    let graph = graph_of(&random_dag(10_000, 7));
    assert_eq!(graph.tasks.len(), 10_000);
    let answer = on_cluster(&rt, &client, &graph);
    assert_eq!(answer.report.tasks, 10_000);
    assert_same_as_local(&answer.outcomes, &graph, &fetched);

    // A task that raises: it and what reads it fail with its message; the rest complete.
    let bad = delayed(
        "column_sum",
        [partition("sales", version, 0), "no_such".into()],
    );
    let good = delayed("row_count", [partition("sales", version, 1)]);
    let reads_bad = delayed("add", [(&bad).into(), (&good).into()]);
    let graph = graph_of(&[bad.clone(), good.clone(), reads_bad.clone()]);
    let answer = on_cluster(&rt, &client, &graph);
    assert_same_as_local(&answer.outcomes, &graph, &fetched);
    match &answer.outcomes[reads_bad.key()] {
        TaskOutcome::Failed(TaskFailure::Upstream { key, cause }) => {
            assert_eq!(key, bad.key());
            assert!(
                matches!(&**cause, TaskFailure::Raised { message } if message.contains("no_such")),
                "{cause:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        answer.outcomes[good.key()],
        TaskOutcome::Done(Datum::Value(Value::Int(_)))
    ));

    // A stale version names the dataset and fails only its tasks.
    let stale = delayed("row_count", [partition("sales", version + 5, 0)]);
    let answer = on_cluster(&rt, &client, &stale.graph());
    match &answer.outcomes[stale.key()] {
        TaskOutcome::Failed(TaskFailure::InputUnavailable { message }) => {
            assert!(
                message.contains("sales") && message.contains("version"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// What a client may not do with graphs: run a task on a node directly (only coordinating
/// nodes may), or submit a graph that cannot run; each gets one clear error.
#[test]
fn hostile_graphs_and_direct_task_calls_get_clear_errors() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let task = tern_proto::Task::new("inc", tern_proto::Kernel::builtin("inc"), vec![]);
    let direct = tern_proto::Request::RunGraphTasks {
        job: 1,
        tasks: vec![tern_proto::TaskRun {
            index: 0,
            task: task.clone(),
            sources: vec![],
        }],
        release: vec![],
    };
    match rt.block_on(client.call(direct)) {
        Err(tern_client::ClientError::Remote(e)) => {
            assert_eq!(e.kind, tern_proto::ErrorKind::Forbidden, "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    // A cycle, a literal past the limit, a wanted key nothing makes.
    let mut x = tern_proto::Task::new("inc", tern_proto::Kernel::builtin("inc"), vec![]);
    let y = tern_proto::Task::new(
        "inc",
        tern_proto::Kernel::builtin("inc"),
        vec![tern_proto::Arg::Output(x.key.clone())],
    );
    x.args = vec![tern_proto::Arg::Output(y.key.clone())];
    let huge = delayed("inc", [Value::Bytes(vec![7; 2 << 20]).into()]);
    let bad_graphs = [
        (
            Graph {
                tasks: vec![x, y],
                wanted: vec![],
            },
            "cycle",
        ),
        (huge.graph(), "literals"),
        (
            Graph {
                tasks: vec![task],
                wanted: vec![TaskKey::parse("nothing-makes-this").unwrap()],
            },
            "no task of the graph makes it",
        ),
    ];
    for (graph, says) in bad_graphs {
        match rt.block_on(client.compute_graph(&graph)) {
            Err(e) => assert!(e.to_string().contains(says), "{e}"),
            Ok(answer) => panic!("{:?}", answer.outcomes),
        }
    }
    // Uploads that are not graphs: past the size limit, not a graph's encoding, a list
    // nested a million deep (two bytes a level), shorter than announced.
    let mut nested = [6u8, 1].repeat(1_000_000);
    nested.extend([2, 14]);
    let listed = delayed("inc", [Value::List(vec![Value::Int(7)]).into()]);
    let encoded = tern_proto::encode_submission(&tern_proto::Submission {
        graph: listed.graph(),
        kept: vec![],
        keep: false,
        stay: false,
    });
    let at = encoded
        .windows(4)
        .position(|w| w == [6, 1, 2, 14])
        .expect("the list's encoding");
    let deep_graph = [&encoded[..at], &nested, &encoded[at + 4..]].concat();
    let uploads: [(u64, Vec<u8>, &str); 4] = [
        (tern_proto::MAX_GRAPH_BYTES + 1, vec![], "past the limit"),
        (5, vec![0xff; 5], "not readable"),
        (deep_graph.len() as u64, deep_graph, "not readable"),
        (100, vec![0; 10], "has 10 bytes, 100 were announced"),
    ];
    for (bytes, body, says) in uploads {
        let refusal = rt.block_on(async {
            let request = tern_proto::Request::SubmitGraph { bytes };
            let (mut writer, mut reader) = client
                .transport()
                .open_bulk(&cluster.addr(1), &request)
                .await
                .unwrap();
            // A refusal may come before the body is read: then the write fails, and the
            // answer says why.
            let _ = writer.write_chunk(&body).await;
            let _ = writer.finish().await;
            reader.response().await.unwrap()
        });
        match refusal {
            tern_proto::Response::Error(e) => assert!(e.message.contains(says), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    // A part of a task that made no parts, or fewer: the reader fails, naming it (the lost
    // input it looks like would be made again forever).
    let whole = delayed("inc", [1.into()]);
    for part in [0, 5] {
        let reader = tern_proto::Task::new(
            "identity",
            tern_proto::Kernel::builtin("identity"),
            vec![tern_proto::Arg::Part {
                of: whole.key().clone(),
                part,
            }],
        );
        let mut graph = whole.graph();
        graph.wanted = vec![reader.key.clone()];
        graph.tasks.push(reader.clone());
        let answer = on_cluster(&rt, &client, &graph);
        match &answer.outcomes[&reader.key] {
            TaskOutcome::Failed(TaskFailure::Raised { message }) => {
                assert!(
                    message.contains(&format!("has no part {part}")),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // A kernel whose inputs the node's memory for queries cannot hold fails, saying so, at
    // once (it would anywhere); the nodes stay up.
    let small = LocalCluster::up_args(1, &["--query-memory", "1MiB", "--task-memory", "1MiB"]);
    let big = delayed("table_from_values", (0..50_000).map(|i: i64| i.into()));
    let answer = on_cluster(&rt, &small.client(), &big.graph());
    match &answer.outcomes[big.key()] {
        TaskOutcome::Failed(TaskFailure::Raised { message }) => {
            assert!(message.contains("memory for queries"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    drop(small);
    // The nodes are all still up and answer graphs.
    let fine = delayed("inc", [41.into()]);
    let answer = on_cluster(&rt, &client, &fine.graph());
    assert_eq!(
        answer.outcomes[fine.key()],
        TaskOutcome::Done(Datum::Value(Value::Int(42)))
    );
}

#[test]
fn a_node_lost_mid_graph_costs_a_recomputation_and_lost_inputs_are_named() {
    setup();
    // Node 3's tasks are slow, so it is still running some and keeping others when it dies.
    // Node 1 is the catalog's only voter, so the cluster keeps a leader whatever else dies.
    let cluster = LocalCluster::up_args(
        4,
        &[
            "--slow-node",
            "3:700",
            "--task-slots",
            "2",
            "--max-voters",
            "1",
        ],
    );
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    crate::compute::store_sales(&cluster, "sales", 120_000, "256KiB");
    let client = cluster.client_of(1);
    let (version, fetched) = fetch_partitions(&rt, &client, "sales");
    let partitions = fetched.parts.len() as u32;
    // Two rounds over every partition, so outputs kept on node 3 are read after it dies.
    let wanted: Vec<Delayed> = (0..partitions)
        .map(|i| {
            let rows = delayed("row_count", [partition("sales", version, i)]);
            delayed("inc", [rows.into()])
        })
        .collect();
    let graph = graph_of(&[delayed("add", wanted.iter().map(Into::into))]);
    let answer = rt.block_on(async {
        let mut stream = client.graph_stream(&graph).await.unwrap();
        assert_eq!(stream.coordinator(), cluster.addr(1));
        let mut killed = false;
        let mut outcomes = BTreeMap::new();
        loop {
            match stream.next_update().await.expect("the graph survives") {
                Some(tern_client::GraphUpdate::Progress { done, tasks }) => {
                    if !killed && done * 4 >= tasks {
                        cluster.kill(3);
                        killed = true;
                    }
                }
                Some(tern_client::GraphUpdate::Output { key, outcome }) => {
                    outcomes.insert(key, outcome);
                }
                Some(tern_client::GraphUpdate::Finished(report)) => break (outcomes, report),
                Some(tern_client::GraphUpdate::Kept(at)) => panic!("kept {at:?} unasked"),
                None => panic!("ended without finishing"),
            }
        }
    });
    let (outcomes, report) = answer;
    assert_same_as_local(&outcomes, &graph, &fetched);
    assert!(
        report.retries + report.recomputed > 0,
        "node 3 ran or kept something: {report:?}"
    );

    // Every node but the coordinator dies: partitions it does not hold have no live holder
    // left, and only the tasks reading them fail, naming them.
    let record = rt.block_on(client.dataset("sales")).unwrap().unwrap();
    for id in [2, 4] {
        cluster.kill(id);
    }
    let counts: Vec<Delayed> = (0..partitions)
        .map(|i| delayed("row_count", [partition("sales", version, i)]))
        .collect();
    let started = std::time::Instant::now();
    let answer = on_cluster(&rt, &client, &graph_of(&counts));
    let mut failed = 0;
    for (i, count) in counts.iter().enumerate() {
        let on_node_1 = record.partitions[i].holders.contains(&1);
        match &answer.outcomes[count.key()] {
            TaskOutcome::Done(Datum::Value(Value::Int(rows))) if on_node_1 => {
                assert_eq!(*rows as u64, record.partitions[i].rows)
            }
            TaskOutcome::Failed(TaskFailure::InputUnavailable { message }) if !on_node_1 => {
                failed += 1;
                assert!(
                    message.contains(&format!("partition {i} of sales")),
                    "{message}"
                )
            }
            other => panic!("partition {i} (on node 1: {on_node_1}): {other:?}"),
        }
    }
    assert!(failed > 0, "some partition is not on node 1");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// `tern jobs --json` from a fresh CLI process, as its list of jobs.
fn jobs_now(cluster: &LocalCluster) -> Option<Vec<serde_json::Value>> {
    let out = cluster.tern(&["jobs", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    jobs.as_array().cloned()
}

/// Wait until no node keeps any output (shuffle or graph) any more.
fn wait_until_nothing_is_kept(
    rt: &tokio::runtime::Runtime,
    cluster: &LocalCluster,
    client: &tern_client::Client,
    nodes: u64,
) {
    tern_e2e::wait_for(
        "every node to drop its kept outputs",
        std::time::Duration::from_secs(30),
        || {
            rt.block_on(async {
                for id in 1..=nodes {
                    let metrics = tern_e2e::local_metrics(client, &cluster.addr(id)).await?;
                    if metrics.shuffle_outputs > 0 {
                        return None;
                    }
                }
                Some(())
            })
        },
    );
}

/// `tern jobs` shows a running graph with its progress and where its tasks run; `tern cancel`
/// by another client is refused, by the graph's own client stops it, and the cluster then
/// runs the next graph at once.
#[test]
fn tern_jobs_lists_a_running_graph_and_tern_cancel_stops_it() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--task-slots", "1"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    // Each task joins a 3,000-row table with itself: long enough to be seen running.
    let table = delayed("table_from_values", (0..3000).map(|i: i64| i.into()));
    let heavy: Vec<Delayed> = (0..40)
        .map(|i| {
            let sql = format!(
                "SELECT count(*) + {i} AS n FROM input a, input b WHERE a.value < b.value + {i}"
            );
            delayed("sql", [(&table).into(), sql.as_str().into()])
        })
        .collect();
    let graph = graph_of(&heavy);
    let running = {
        let client = client.clone();
        rt.spawn(async move { client.compute_graph(&graph).await })
    };
    let json = tern_e2e::wait_for(
        "the graph to show running",
        std::time::Duration::from_secs(60),
        || {
            jobs_now(&cluster)?
                .iter()
                .find(|j| {
                    j["kind"] == "graph" && j["state"] == "running" && j["done"].as_u64() >= Some(1)
                })
                .cloned()
        },
    );
    assert_eq!(json["total"], 41, "{json}");
    assert_eq!(json["client"], "admin", "{json}");
    let id = json["job"].as_str().unwrap().to_string();
    let listed = String::from_utf8_lossy(&cluster.tern(&["jobs"]).stdout).to_string();
    assert!(
        listed.contains(&id) && listed.contains("running"),
        "{listed}"
    );

    let refused = cluster.tern_as("reader", &["cancel", &id]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only it or an admin"),
        "{refused:?}"
    );
    let cancelled = cluster.tern(&["cancel", &id]);
    assert!(cancelled.status.success(), "{cancelled:?}");
    let outcome = rt.block_on(running).unwrap();
    match outcome {
        Err(tern_client::ClientError::Remote(e)) => {
            assert_eq!(e.kind, tern_proto::ErrorKind::Cancelled, "{e:?}")
        }
        other => panic!("{:?}", other.map(|a| a.report)),
    }
    tern_e2e::wait_for(
        "the job to show cancelled",
        std::time::Duration::from_secs(30),
        || {
            jobs_now(&cluster)?
                .iter()
                .any(|j| j["job"] == id.as_str() && j["state"] == "cancelled")
                .then_some(())
        },
    );
    wait_until_nothing_is_kept(&rt, &cluster, &client, 3);
    let next = delayed("inc", [1.into()]);
    let answer = on_cluster(&rt, &client, &next.graph());
    assert_eq!(
        answer.outcomes[next.key()],
        TaskOutcome::Done(Datum::Value(Value::Int(2)))
    );

    // Futures: values as they end, equal to the in-process answers; a failing task's future
    // says why; dropping every future of a running submission stops it.
    let small: Vec<Delayed> = (0..50).map(|i| delayed("inc", [i.into()])).collect();
    let bad = delayed("add", [Value::Str("x".into()).into()]);
    let mut wanted = small.clone();
    wanted.push(bad.clone());
    let futures = client.submit(graph_of(&wanted));
    let ended: Vec<_> = rt.block_on(async {
        use futures::StreamExt;
        tern_client::as_completed(futures.clone()).collect().await
    });
    assert_eq!(ended.len(), 51);
    assert!(futures.iter().all(|f| f.done()));
    let values = rt.block_on(tern_client::gather(&futures));
    for (i, value) in values[..50].iter().enumerate() {
        assert_eq!(
            value.as_ref().unwrap(),
            &Datum::Value(Value::Int(i as i64 + 1))
        );
    }
    match &values[50] {
        Err(tern_client::FutureError::Task { key, .. }) => assert_eq!(key, bad.key()),
        other => panic!("{other:?}"),
    }
    // Their outputs stay kept while the futures live (Dask's futures): a later graph that
    // reads them reads them where they are and runs only its own tasks (were one lost with
    // its node, the client sends the tasks that made it: see graph_run's tests).
    let kept_now = || -> u64 {
        rt.block_on(async {
            let mut kept = 0;
            for id in 1..=3 {
                if let Some(m) = tern_e2e::local_metrics(&client, &cluster.addr(id)).await {
                    kept += m.shuffle_outputs;
                }
            }
            kept
        })
    };
    assert_eq!(kept_now(), 50, "the 50 outputs of the futures are kept");
    let kept_jobs = || {
        jobs_now(&cluster)
            .unwrap_or_default()
            .iter()
            .filter(|j| j["state"] == "kept")
            .count()
    };
    assert_eq!(kept_jobs(), 1, "`tern jobs` shows the submission as kept");
    let total = delayed(
        "add",
        futures[..50].iter().map(|f| tern_graph::output(f.key())),
    );
    let answer = on_cluster(&rt, &client, &total.graph());
    assert_eq!(
        answer.outcomes[total.key()],
        TaskOutcome::Done(Datum::Value(Value::Int((1..=50).sum())))
    );
    assert_eq!(
        answer.report.local + answer.report.remote,
        1,
        "only the sum ran: {:?}",
        answer.report
    );
    assert_eq!(answer.report.recomputed, 0, "{:?}", answer.report);
    // A kept output whose task reads one that was not kept: the graph reading it is sent with
    // both tasks (its lineage), and still runs only its own.
    let j = delayed("inc", [100.into()]);
    let k = delayed("inc", [(&j).into()]);
    let held = client.submit(k.graph());
    assert_eq!(
        rt.block_on(held[0].result()).unwrap(),
        Datum::Value(Value::Int(102))
    );
    let next = delayed("inc", [tern_graph::output(held[0].key())]);
    let answer = on_cluster(&rt, &client, &next.graph());
    assert_eq!(
        answer.outcomes[next.key()],
        TaskOutcome::Done(Datum::Value(Value::Int(103)))
    );
    assert_eq!(answer.report.local + answer.report.remote, 1);
    // Submitted while the futures it reads are still pending (as Dask allows): it waits for
    // them and reads them where they are kept, rather than making them a second time.
    let slow: Vec<Delayed> = (0..4i64)
        .map(|i| delayed("inc", [(i * 1000).into()]))
        .collect();
    let pending = client.submit(graph_of(&slow));
    let after = delayed("add", pending.iter().map(|f| tern_graph::output(f.key())));
    let answer = on_cluster(&rt, &client, &after.graph());
    assert_eq!(
        answer.outcomes[after.key()],
        TaskOutcome::Done(Datum::Value(Value::Int(6004)))
    );
    assert_eq!(
        answer.report.local + answer.report.remote,
        1,
        "the pending futures were waited for, not made again: {:?}",
        answer.report
    );
    drop(pending);
    // Tables the futures hold, stored as a dataset (one partition each), then queried.
    let pieces: Vec<Delayed> = (0..3)
        .map(|p: i64| delayed("table_from_values", (p * 10..p * 10 + 10).map(Into::into)))
        .collect();
    let tables = client.submit(graph_of(&pieces));
    let record = rt.block_on(client.store("pieces", &tables)).unwrap();
    assert_eq!(record.partitions.len(), 3);
    assert_eq!(record.partitions.iter().map(|p| p.rows).sum::<u64>(), 30);
    let summed = cluster.tern(&["sql", "SELECT sum(value) AS total FROM pieces"]);
    let text = String::from_utf8_lossy(&summed.stdout);
    assert!(
        summed.status.success() && text.contains("435"),
        "{summed:?}"
    );
    match rt.block_on(client.store("not_tables", &held)) {
        Err(e) => assert!(e.to_string().contains("a value, not a table"), "{e}"),
        Ok(record) => panic!("{record:?}"),
    }
    drop((futures, ended, values, held, tables));
    wait_until_nothing_is_kept(&rt, &cluster, &client, 3);
    assert_eq!(kept_jobs(), 0, "let go, the submissions show finished");
    let futures = client.submit(graph_of(&heavy));
    let running_id = tern_e2e::wait_for(
        "the submission to run",
        std::time::Duration::from_secs(60),
        || {
            jobs_now(&cluster)?
                .iter()
                .find(|j| j["state"] == "running")
                .map(|j| j["job"].as_str().unwrap_or_default().to_string())
        },
    );
    drop(futures);
    tern_e2e::wait_for(
        "the dropped submission to stop",
        std::time::Duration::from_secs(30),
        || {
            jobs_now(&cluster)?
                .iter()
                .any(|j| j["job"] == running_id.as_str() && j["state"] != "running")
                .then_some(())
        },
    );
    wait_until_nothing_is_kept(&rt, &cluster, &client, 3);

    // Futures keep their outputs on the nodes that made them; one of those nodes dies; a
    // graph reading them all still adds them up right, the lost ones made again from the
    // tasks the client sends with them.
    let futures_client = std::sync::Arc::new(cluster.client_of(1));
    let small: Vec<Delayed> = (0..24).map(|i| delayed("inc", [i.into()])).collect();
    let futures = futures_client.submit(graph_of(&small));
    rt.block_on(tern_client::wait(&futures));
    let victim = futures
        .iter()
        .find_map(|f| futures_client.who_has(f).filter(|node| *node != 1))
        .expect("some output is kept off node 1");
    cluster.kill(victim);
    let total = delayed("add", futures.iter().map(|f| tern_graph::output(f.key())));
    let answer = on_cluster(&rt, &futures_client, &total.graph());
    assert_eq!(
        answer.outcomes[total.key()],
        TaskOutcome::Done(Datum::Value(Value::Int((1..=24).sum())))
    );
    assert!(answer.report.recomputed > 0, "{:?}", answer.report);
    drop(futures);
}
