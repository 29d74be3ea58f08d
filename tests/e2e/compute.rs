//! SQL over stored datasets: the answers equal single-process DataFusion's over the same data,
//! tasks run on the holders of their partitions, a dead holder costs a retry, and bad queries
//! get one clear line.

use std::path::Path;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tern_e2e::{LocalCluster, write_sales_csv};

use crate::setup;

/// The queries both engines answer; each has an ORDER BY so the answers compare as text.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS n, sum(amount) AS total, min(id) AS lo, max(id) AS hi FROM sales",
    "SELECT name, count(*) AS n, avg(amount) AS mean FROM sales WHERE flag GROUP BY name ORDER BY name",
    "SELECT id, name, amount FROM sales WHERE amount > 990 ORDER BY id LIMIT 25",
    "SELECT a.name, count(*) AS n FROM sales a JOIN (SELECT DISTINCT name FROM sales WHERE id < 300) b ON a.name = b.name GROUP BY a.name ORDER BY n DESC, a.name LIMIT 10",
    "SELECT flag, count(DISTINCT name) AS names, round(stddev(amount), 6) AS sd FROM sales GROUP BY flag ORDER BY flag",
];

fn pretty(batches: &[arrow::record_batch::RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .expect("format")
        .to_string()
}

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
