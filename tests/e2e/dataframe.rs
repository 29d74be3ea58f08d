//! The client's lazy DataFrames: the same answers as the SQL they stand for, `head` reading
//! only the partitions it needs, Dask's conveniences, and `persist` storing the answer as a
//! dataset in triplicate.

use tern_client::JoinKind;
use tern_e2e::{LocalCluster, pretty};

use crate::setup;

#[test]
fn dataframes_answer_as_their_sql_and_persist_in_triplicate() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    crate::compute::store_sales(&cluster, "sales", 20_000, "256KiB");
    let stored = rt.block_on(client.dataset("sales")).unwrap().unwrap();
    let sales = client.table("sales");
    assert_eq!(
        rt.block_on(sales.npartitions()).unwrap(),
        stored.partitions.len()
    );
    assert!(stored.partitions.len() > 2);

    // head(5) reads one partition: the first, whose first rows are the file's first rows.
    let served = |rt: &tokio::runtime::Runtime| -> u64 {
        (1..=3)
            .map(|id| {
                rt.block_on(tern_e2e::local_metrics(&client, &cluster.addr(id)))
                    .expect("metrics")
                    .blocks_served
            })
            .sum()
    };
    let before = served(&rt);
    let head = rt.block_on(sales.head(5)).unwrap();
    assert_eq!(served(&rt) - before, 1, "head(5) reads one block");
    let text = pretty(&head);
    assert!(
        text.contains("customer-4") && !text.contains("customer-5 "),
        "{text}"
    );
    assert_eq!(head.iter().map(|b| b.num_rows()).sum::<usize>(), 5);

    // Lazy operations answer as the SQL they stand for.
    let by_name = sales
        .filter("flag")
        .with_column("cents", "amount * 100")
        .aggregate(&["name"], &["count(*) AS n", "sum(cents) AS total"])
        .sort(&["name"]);
    let want = rt
        .block_on(client.sql(
            "SELECT name, count(*) AS n, sum(amount * 100) AS total FROM sales WHERE flag GROUP BY name ORDER BY name",
        ))
        .unwrap();
    let got = rt.block_on(by_name.collect()).unwrap();
    assert_eq!(pretty(&got), pretty(&want.batches));
    assert!(
        rt.block_on(by_name.explain())
            .unwrap()
            .contains("PartitionScanExec")
    );
    let names = rt
        .block_on(sales.select(&["name"]).distinct().collect())
        .unwrap();
    assert_eq!(names.iter().map(|b| b.num_rows()).sum::<usize>(), 97);

    // A join of the dataset with its own per-name counts.
    let counts = sales.aggregate(&["name"], &["count(*) AS per_name"]);
    let joined = sales
        .join(&counts, &["name"], JoinKind::Inner)
        .aggregate(&[], &["count(*) AS n", "sum(per_name) AS s"]);
    let text = pretty(&rt.block_on(joined.collect()).unwrap());
    // 97 names of 206 or 207 rows: every row joins its own name's count.
    let want_sum: u64 = (0..97u64)
        .map(|k| {
            let n = (20_000 - k).div_ceil(97);
            n * n
        })
        .sum();
    assert!(
        text.contains("20000") && text.contains(&want_sum.to_string()),
        "{text}"
    );

    // Dask's conveniences.
    let counts = pretty(&rt.block_on(sales.value_counts("name")).unwrap());
    let first = counts.lines().nth(3).unwrap_or_default().to_string();
    assert!(first.contains("207"), "most frequent first: {counts}");
    let described = pretty(&[rt.block_on(sales.describe()).unwrap()]);
    assert!(
        described.contains("statistic")
            && described.contains("19999.0")
            && described.contains("20000.0"),
        "{described}"
    );

    // persist: the answer becomes a dataset of the partitions asked for, each on 3 nodes.
    let record = rt
        .block_on(by_name.repartition(3).persist("by_name"))
        .unwrap();
    assert_eq!(record.partitions.len(), 3);
    assert!(record.partitions.iter().all(|p| p.holders.len() == 3));
    let back = rt
        .block_on(client.table("by_name").sort(&["name"]).collect())
        .unwrap();
    assert_eq!(pretty(&back), pretty(&got));
    let again = rt.block_on(by_name.persist("by_name")).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
}
