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

#[test]
fn sql_answers_equal_single_process_datafusion_and_a_dead_holder_costs_a_retry() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 60_000);
    let put = cluster.tern(&[
        "put",
        csv.to_str().unwrap(),
        "--name",
        "sales",
        "--partition-size",
        "64KiB",
        "--quiet",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let dataset = rt.block_on(client.dataset("sales")).unwrap().unwrap();
    assert!(
        dataset.partitions.len() >= 6,
        "{} partitions",
        dataset.partitions.len()
    );
    let parquet = cluster.path().join("sales.parquet");
    let get = cluster.tern(&[
        "get",
        "sales",
        "--out",
        parquet.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(get.status.success());

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
    let cluster = LocalCluster::up(3);
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 1000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "sales", "--quiet"]);
    assert!(put.status.success());
    for (query, says) in [
        ("SELEC * FROM sales", "SELEC"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT nope FROM sales", "nope"),
        ("SELECT name + 1 FROM sales", "Utf8"),
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

    let answers = rt.block_on(async {
        let mut queries = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let client = client.clone();
            queries.spawn(async move {
                client
                    .sql("SELECT name, sum(amount) AS total FROM hot GROUP BY name ORDER BY name")
                    .await
            });
        }
        let mut all = Vec::new();
        while let Some(done) = queries.join_next().await {
            all.push(done.unwrap().expect("query"));
        }
        all
    });
    let mut per_node: std::collections::HashMap<u64, u64> = Default::default();
    for answer in &answers {
        assert_eq!(answer.rows(), 97);
        for (node, n) in &answer.stages[0].local {
            *per_node.entry(*node).or_default() += n;
        }
        assert!(answer.stages[0].remote.is_empty(), "{:?}", answer.stages[0]);
    }
    for holder in &holders {
        let share = per_node.get(holder).copied().unwrap_or(0);
        assert!(
            share * 5 >= 16,
            "holder {holder} ran {share} of 16 tasks: {per_node:?}"
        );
    }
    assert!(per_node.keys().all(|n| holders.contains(n)), "{per_node:?}");
}

#[test]
fn a_query_whose_partition_lost_every_holder_fails_naming_it() {
    setup();
    // Six nodes; nodes 1-3 are the metadata voters. Draining them puts every replica on
    // nodes 4-6, whose loss then takes all of a partition's holders and leaves a quorum.
    let cluster = LocalCluster::up_args(6, &["--gc-grace-ms", "1000"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 20_000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "doomed", "--quiet"]);
    assert!(put.status.success());
    for id in ["1", "2", "3"] {
        let out = cluster.tern(&["node", "drain", id, "--quiet", "--timeout-secs", "120"]);
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
            .all(|p| p.holders.iter().all(|h| *h > 3)),
        "{:?}",
        dataset.partitions
    );
    // The drained nodes' copies are collected first: then no node has the bytes.
    tern_e2e::wait_for(
        "drained copies collected",
        std::time::Duration::from_secs(60),
        || {
            let stored = crate::lifecycle::blocks_stored(&rt, &client, &cluster, &[1, 2, 3])?;
            stored.values().all(|n| *n == 0).then_some(())
        },
    );
    for id in 4..=6 {
        cluster.kill(id);
    }
    let started = std::time::Instant::now();
    let out = cluster.tern(&["sql", "SELECT count(*) FROM doomed"]);
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
