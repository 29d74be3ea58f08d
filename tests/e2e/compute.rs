//! SQL over stored datasets: the answers equal single-process DataFusion's over the same data,
//! tasks run on the holders of their partitions, a dead holder costs a retry, and bad queries
//! get one clear line.

use std::path::Path;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tern_e2e::{LocalCluster, pretty, write_sales_csv};

use crate::setup;

/// The queries both engines answer; each has an ORDER BY so the answers compare as text.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS n, sum(amount) AS total, min(id) AS lo, max(id) AS hi FROM sales",
    "SELECT name, count(*) AS n, avg(amount) AS mean FROM sales WHERE flag GROUP BY name ORDER BY name",
    "SELECT id, name, amount FROM sales WHERE amount > 990 ORDER BY id LIMIT 25",
    "SELECT a.name, count(*) AS n FROM sales a JOIN (SELECT DISTINCT name FROM sales WHERE id < 300) b ON a.name = b.name GROUP BY a.name ORDER BY n DESC, a.name LIMIT 10",
    "SELECT flag, count(DISTINCT name) AS names, round(stddev(amount), 6) AS sd FROM sales GROUP BY flag ORDER BY flag",
];

/// Single-process DataFusion over a Parquet copy of the dataset.
fn reference(rt: &tokio::runtime::Runtime, parquet: &Path, sql: &str) -> String {
    rt.block_on(async {
        let ctx = SessionContext::new();
        ctx.register_parquet(
            "sales",
            parquet.to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        pretty(&batches)
    })
}

/// `sql` run `n` times at once through `client`: every answer.
fn concurrently(
    rt: &tokio::runtime::Runtime,
    client: &std::sync::Arc<tern_client::Client>,
    n: usize,
    sql: &'static str,
) -> Vec<tern_client::QueryAnswer> {
    rt.block_on(async {
        let mut queries = tokio::task::JoinSet::new();
        for _ in 0..n {
            let client = client.clone();
            queries.spawn(async move { client.sql(sql).await });
        }
        let mut all = Vec::new();
        while let Some(done) = queries.join_next().await {
            all.push(done.unwrap().expect("query"));
        }
        all
    })
}

/// Store `rows` sales rows as dataset `name` in partitions of `partition_size` (of Arrow
/// data), and return the path of a Parquet copy read back from the cluster, for the
/// single-process reference.
pub(crate) fn store_sales(
    cluster: &LocalCluster,
    name: &str,
    rows: usize,
    partition_size: &str,
) -> std::path::PathBuf {
    let csv = cluster.path().join(format!("{name}.csv"));
    write_sales_csv(&csv, rows);
    cluster.put(&csv, name, &["--partition-size", partition_size]);
    let parquet = cluster.path().join(format!("{name}.parquet"));
    let get = cluster.tern(&["get", name, "--out", parquet.to_str().unwrap(), "--quiet"]);
    assert!(get.status.success());
    parquet
}

#[test]
fn sql_answers_equal_single_process_datafusion_and_a_dead_holder_costs_a_retry() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let parquet = store_sales(&cluster, "sales", 60_000, "256KiB");
    let dataset = rt.block_on(client.dataset("sales")).unwrap().unwrap();
    assert!(
        dataset.partitions.len() >= 6,
        "{} partitions",
        dataset.partitions.len()
    );

    let expected: Vec<String> = QUERIES
        .iter()
        .map(|q| reference(&rt, &parquet, q))
        .collect();
    for (query, want) in QUERIES.iter().zip(&expected) {
        let answer = rt
            .block_on(client.sql(query))
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(&pretty(&answer.batches), want, "{query}");
    }

    // The writer recorded each partition's bounds (ids ascend through the file): a filter
    // on `id` gets tasks only for the partitions it may match, and answers the same.
    let partitions = dataset.partitions.len();
    let scanned = |sql: &str| -> usize {
        let plan = rt.block_on(client.explain(sql)).expect("explain");
        // With no partition left, DataFusion answers from the scan's statistics: no scan.
        let Some(at) = plan.find("dataset=sales, partitions=") else {
            return 0;
        };
        plan[at + 26..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{plan}"))
    };
    let filtered = [
        (
            "SELECT count(*) AS n, sum(id) AS s FROM sales WHERE id < 300",
            1..=1,
        ),
        (
            "SELECT count(*) AS n, sum(id) AS s FROM sales WHERE id BETWEEN 30000 AND 30010 OR id = 59999",
            1..=3,
        ),
        (
            "SELECT count(*) AS n, min(id) AS lo FROM sales WHERE id > 1000000",
            0..=0,
        ),
        (
            "SELECT count(*) AS n FROM sales WHERE name = 'customer-5' AND id >= 59000",
            1..=2,
        ),
        // No bounds on floats, nor anything a filter on a computed value can skip.
        (
            "SELECT count(*) AS n FROM sales WHERE amount > 998",
            partitions..=partitions,
        ),
        (
            "SELECT count(*) AS n FROM sales WHERE id % 1000 = 7",
            partitions..=partitions,
        ),
    ];
    for (query, tasks) in filtered {
        let n = scanned(query);
        assert!(
            tasks.contains(&n),
            "{query}: {n} of {partitions} partitions scanned"
        );
        let answer = rt
            .block_on(client.sql(query))
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(
            pretty(&answer.batches),
            reference(&rt, &parquet, query),
            "{query}"
        );
    }

    // Holders keep the columns their scans decoded: asked again, the queries answer the same,
    // and some scans are answered from memory without reading their block.
    let cache = |rt: &tokio::runtime::Runtime| -> (u64, u64) {
        (1..=3)
            .map(|id| rt.block_on(tern_e2e::local_metrics(&client, &cluster.addr(id))))
            .map(|m| m.expect("metrics"))
            .fold((0, 0), |(b, h), m| (b + m.cached_bytes, h + m.cache_hits))
    };
    let (cached, hits_before) = cache(&rt);
    assert!(cached > 0, "no columns kept after the queries");
    for (query, want) in QUERIES.iter().zip(&expected) {
        let answer = rt
            .block_on(client.sql(query))
            .unwrap_or_else(|e| panic!("{query} again: {e}"));
        assert_eq!(&pretty(&answer.batches), want, "{query} again");
    }
    assert!(
        cache(&rt).1 > hits_before,
        "no scan was answered from memory"
    );
    let out = cluster.tern(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let shown: u64 = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["cached_bytes"].as_u64())
        .sum();
    assert!(shown > 0, "tern status shows no cached bytes: {status}");

    // Every scan task ran on a holder of its partition, read locally, spread over the nodes.
    let answer = rt.block_on(client.sql(QUERIES[1])).unwrap();
    let scan = &answer.stages[0];
    assert_eq!(scan.tasks, dataset.partitions.len() as u64, "{scan:?}");
    assert!(scan.remote.is_empty(), "all reads local: {scan:?}");
    assert!(
        scan.local.len() >= 2,
        "tasks spread over the holders: {scan:?}"
    );

    // The command line prints the table and, with --analyze, the stages.
    let out = cluster.tern(&["sql", QUERIES[0], "--analyze"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("60000") && text.contains("STAGE"), "{text}");
    let explain = cluster.tern(&["sql", QUERIES[1], "--explain"]);
    let text = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(
        text.contains("stage 1") && text.contains("PartitionScanExec"),
        "{text}"
    );

    // A streamed answer: the plan first, each stage's progress up to all its tasks, then the
    // rows in order in several pieces, then the end, with reports for every planned stage.
    let sorted = "SELECT id, name, amount FROM sales ORDER BY id";
    rt.block_on(async {
        use tern_client::QueryUpdate;
        let mut stream = client.sql_stream(sorted).await.expect("stream");
        let (mut planned, mut progress, mut batches, mut finished) = (0, Vec::new(), 0, None);
        let mut next_id = 0i64;
        while let Some(update) = stream.next_update().await.expect("update") {
            match update {
                QueryUpdate::Planned(stages) => planned = stages.len(),
                QueryUpdate::Progress {
                    stage, done, total, ..
                } => {
                    assert_eq!(batches, 0, "progress comes before the rows");
                    progress.push((stage, done, total));
                }
                QueryUpdate::Batch(batch) => {
                    assert!(planned >= 2, "the plan comes first");
                    let ids = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .expect("id is an Int64");
                    for id in ids.values() {
                        assert!(*id >= next_id, "rows in order: {id} after {next_id}");
                        next_id = *id;
                    }
                    batches += 1;
                }
                QueryUpdate::Finished(stages) => finished = Some(stages),
            }
        }
        let stages = finished.expect("the query finished");
        assert_eq!(stages.len(), planned, "{stages:?}");
        assert_eq!(stream.rows(), 60_000);
        assert!(batches > 1, "the answer came in {batches} batch(es)");
        let scan_done = progress.iter().filter(|p| p.0 == 1).map(|p| p.1).max();
        assert_eq!(scan_done, Some(stages[0].tasks), "{progress:?}");
        assert!(progress.iter().all(|&(_, done, total)| done <= total));
    });

    // `--out` writes the answer as it arrives: the file reads back as the reference answer;
    // an empty answer still writes the columns.
    let file = cluster.path().join("sorted.parquet");
    let out = cluster.tern(&["sql", sorted, "--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = rt.block_on(async {
        let ctx = SessionContext::new();
        let df = ctx
            .read_parquet(file.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .expect("read the written file");
        pretty(&df.collect().await.expect("collect"))
    });
    assert_eq!(back, reference(&rt, &parquet, sorted));
    let empty = cluster.path().join("empty.csv");
    let out = cluster.tern(&[
        "sql",
        "SELECT id, name FROM sales WHERE id < 0",
        "--out",
        empty.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&empty).expect("empty answer file");
    assert_eq!(text.trim(), "id,name", "{text}");

    // SIGKILL a node holding partitions: every query still answers the same.
    cluster.kill(dataset.partitions[0].holders[0]);
    for (query, want) in QUERIES.iter().zip(&expected) {
        let answer = rt
            .block_on(client.sql(query))
            .unwrap_or_else(|e| panic!("{query} with a node dead: {e}"));
        assert_eq!(&pretty(&answer.batches), want, "{query} with a node dead");
    }
}

#[test]
fn bad_queries_get_one_clear_line_and_the_cluster_keeps_serving() {
    setup();
    // A small answer limit: a query that would send its coordinator more fails, saying so.
    let cluster = LocalCluster::up_args(3, &["--answer-memory", "16KiB"]);
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 1000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "sales", "--quiet"]);
    assert!(put.status.success());
    for (query, says) in [
        ("SELEC * FROM sales", "SELEC"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT nope FROM sales", "nope"),
        ("SELECT name + 1 FROM sales", "Utf8"),
        ("SELECT * FROM sales ORDER BY id", "--answer-memory"),
    ] {
        let out = cluster.tern(&["sql", query]);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(!out.status.success(), "{query} must fail");
        assert!(err.contains(says), "{query}: {err}");
        assert_eq!(err.lines().count(), 1, "{query}: one line: {err}");
    }
    let out = cluster.tern(&["sql", "SELECT count(*) AS n FROM sales"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1000"));
}

#[test]
fn concurrent_queries_of_one_partition_spread_over_its_three_holders() {
    setup();
    let cluster = LocalCluster::up(4);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 5000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "hot", "--quiet"]);
    assert!(put.status.success());
    let dataset = rt.block_on(client.dataset("hot")).unwrap().unwrap();
    assert_eq!(dataset.partitions.len(), 1);
    let holders = dataset.partitions[0].holders.clone();
    // The node that does not hold it coordinates, so its own work does not tilt the spread.
    let coordinator = (1..=4).find(|id| !holders.contains(id)).unwrap();
    let client = std::sync::Arc::new(cluster.client_of(coordinator));

    // Three rounds of 16 concurrent queries: one round's share of a holder moves by a task or
    // two with the timing of a loaded 2-core machine; over three it is a measure.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.extend(concurrently(
            &rt,
            &client,
            16,
            "SELECT name, sum(amount) AS total FROM hot GROUP BY name ORDER BY name",
        ));
    }
    let total = answers.len() as u64;
    let mut per_node: std::collections::HashMap<u64, u64> = Default::default();
    let mut remote = 0;
    for answer in &answers {
        assert_eq!(answer.rows(), 97);
        for (node, n) in &answer.stages[0].local {
            *per_node.entry(*node).or_default() += n;
        }
        remote += answer.stages[0].remote.values().sum::<u64>();
    }
    // A task runs off its holders only when none frees a slot within the locality wait
    // (100 ms): by design, and it happens on a loaded 2-core machine running the other tests
    // beside this one. It must stay the exception.
    assert!(
        remote * 10 <= total,
        "{remote} of {total} tasks ran away from the holders"
    );
    for holder in &holders {
        let share = per_node.get(holder).copied().unwrap_or(0);
        assert!(
            share * 5 >= total,
            "holder {holder} ran {share} of {total} tasks: {per_node:?}"
        );
    }
    assert!(per_node.keys().all(|n| holders.contains(n)), "{per_node:?}");
}

#[test]
fn a_query_whose_partition_lost_every_holder_fails_naming_it() {
    setup();
    // Six nodes, three of them metadata voters. Draining the voters puts every replica on
    // the other three, whose loss then takes all of a partition's holders and leaves a quorum.
    let cluster = LocalCluster::up_args(6, &["--gc-grace-ms", "1000"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 20_000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "doomed", "--quiet"]);
    assert!(put.status.success());
    // Which three nodes vote depends on the order they joined in.
    let status = cluster.status_json().expect("status");
    let (voters, others): (Vec<u64>, Vec<u64>) = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["voter"].as_bool().unwrap()))
        .fold((vec![], vec![]), |(mut v, mut o), (id, voter)| {
            if voter {
                v.push(id)
            } else {
                o.push(id)
            }
            (v, o)
        });
    assert_eq!((voters.len(), others.len()), (3, 3), "{status}");
    for id in &voters {
        let id = id.to_string();
        let out = cluster.tern(&["node", "drain", &id, "--quiet", "--timeout-secs", "120"]);
        assert!(
            out.status.success(),
            "drain {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dataset = rt.block_on(client.dataset("doomed")).unwrap().unwrap();
    assert!(
        dataset
            .partitions
            .iter()
            .all(|p| p.holders.iter().all(|h| others.contains(h))),
        "{:?}",
        dataset.partitions
    );
    // The drained nodes' copies are collected first: then no node has the bytes.
    tern_e2e::wait_for(
        "drained copies collected",
        std::time::Duration::from_secs(60),
        || {
            let stored = crate::lifecycle::blocks_stored(&rt, &client, &cluster, &voters)?;
            stored.values().all(|n| *n == 0).then_some(())
        },
    );
    for id in &others {
        cluster.kill(*id);
    }
    let started = std::time::Instant::now();
    // (A bare count(*) is answered from the catalog's row counts without reading anything.)
    let out = cluster.tern(&["sql", "SELECT sum(amount) FROM doomed"]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("partition 0 of doomed") && err.contains("unavailable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "failed within its deadline"
    );
}

/// A query whose joins and aggregations are hash-shuffled between the nodes.
const SHUFFLE_HEAVY: &str = "SELECT a.name, count(*) AS n, sum(b.amount) AS total FROM sales a JOIN sales b ON a.id = b.id GROUP BY a.name ORDER BY a.name";
const SCAN_HEAVY: &str = "SELECT count(*) AS n, sum(amount) AS total, min(id) AS lo, max(id) AS hi FROM sales WHERE amount > 10";

#[test]
fn joins_and_aggregations_shuffle_between_nodes_and_survive_a_holder_killed_mid_query() {
    setup();
    // Node 2 is slow, so the queries are still running when it is killed with a task in
    // flight (retried elsewhere), and with outputs kept there for later stages (recomputed).
    let cluster = LocalCluster::up_args(4, &["--slow-node", "2:1500", "--task-slots", "2"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    let parquet = store_sales(&cluster, "sales", 40_000, "256KiB");
    let want_shuffle = reference(&rt, &parquet, SHUFFLE_HEAVY);
    let want_scan = reference(&rt, &parquet, SCAN_HEAVY);

    // The plan: the join's inputs shuffled (or the small side broadcast) between the nodes,
    // joined and partially aggregated there, the aggregate finished after another shuffle.
    let explain = rt.block_on(client.explain(SHUFFLE_HEAVY)).unwrap();
    assert!(
        explain.contains("hashed into") && explain.contains("ShuffleReaderExec: stage"),
        "{explain}"
    );

    let queries: Vec<_> = [SHUFFLE_HEAVY, SCAN_HEAVY]
        .into_iter()
        .map(|q| {
            let client = client.clone();
            rt.spawn(async move { client.sql(q).await })
        })
        .collect();
    let victim = cluster.addr(2);
    tern_e2e::wait_for(
        "node 2 running a task",
        std::time::Duration::from_secs(60),
        || {
            let m = rt.block_on(tern_e2e::local_metrics(&client, &victim))?;
            (m.tasks_running > 0).then_some(())
        },
    );
    cluster.kill(2);
    let answers: Vec<_> = queries
        .into_iter()
        .map(|q| {
            rt.block_on(tokio::time::timeout(std::time::Duration::from_secs(120), q))
                .expect("the query answers within its deadline")
                .unwrap()
                .expect("the query answers")
        })
        .collect();
    assert_eq!(pretty(&answers[0].batches), want_shuffle);
    assert_eq!(pretty(&answers[1].batches), want_scan);
    let redone: u64 = answers
        .iter()
        .flat_map(|a| &a.stages)
        .map(|s| s.retries + s.recomputed)
        .sum();
    assert!(redone > 0, "{:?}", answers[0].stages);
    // The same query again with node 2 gone, and the kept outputs released afterwards.
    let again = rt.block_on(client.sql(SHUFFLE_HEAVY)).unwrap();
    assert_eq!(pretty(&again.batches), want_shuffle);
    tern_e2e::wait_for(
        "kept outputs released",
        std::time::Duration::from_secs(30),
        || {
            let kept: u64 = [1, 3, 4]
                .iter()
                .map(|id| {
                    rt.block_on(tern_e2e::local_metrics(&client, &cluster.addr(*id)))
                        .map_or(1, |m| m.shuffle_outputs)
                })
                .sum();
            (kept == 0).then_some(())
        },
    );
}

#[test]
fn a_sort_larger_than_its_memory_limit_spills_and_answers_correctly() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--task-memory", "2MiB"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    // One partition of about 6 MB: its task sorts it all under a 2 MiB limit.
    let parquet = store_sales(&cluster, "sales", 200_000, "64MiB");
    let query = "SELECT name, amount, id FROM sales ORDER BY amount DESC, name, id";
    let answer = rt.block_on(client.sql(query)).expect("the sort answers");
    assert_eq!(answer.rows(), 200_000);
    assert_eq!(pretty(&answer.batches), reference(&rt, &parquet, query));
    let spilled: u64 = answer.stages.iter().map(|s| s.spilled).sum();
    assert!(spilled > 0, "{:?}", answer.stages);
}

#[test]
fn with_one_holder_slow_most_tasks_go_to_the_other_two() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--slow-node", "3:400", "--task-slots", "2"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 5000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "hot", "--quiet"]);
    assert!(put.status.success());
    let answers = concurrently(&rt, &client, 16, "SELECT sum(amount) AS total FROM hot");
    let mut per_node: std::collections::BTreeMap<u64, u64> = Default::default();
    for answer in &answers {
        assert_eq!(answer.rows(), 1);
        for (node, n) in answer.stages[0]
            .local
            .iter()
            .chain(&answer.stages[0].remote)
        {
            *per_node.entry(*node).or_default() += n;
        }
    }
    let slow = per_node.get(&3).copied().unwrap_or(0);
    assert_eq!(per_node.values().sum::<u64>(), 16, "{per_node:?}");
    assert!(
        slow * 4 <= 16,
        "the slow holder ran {slow} of 16: {per_node:?}"
    );
}
