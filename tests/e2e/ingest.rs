//! `tern put` and `tern get`: files become partitioned, replicated datasets and come back.

use std::path::Path;

use crate::setup;
use tern_e2e::{LocalCluster, write_sales_csv};

/// (id, name, amount, flag) rows of a CSV that tern wrote or we wrote.
fn read_rows(path: &Path) -> Vec<(i64, String, f64, bool)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,name,amount,flag"),
        "{}",
        path.display()
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line error expected: {err}");
    err
}

#[test]
fn csv_and_parquet_round_trip_through_the_cluster_and_bad_input_leaves_nothing() {
    setup();
    let cluster = LocalCluster::up(3);
    let work = tempfile::tempdir().unwrap();
    let csv = work.path().join("sales.csv");
    write_sales_csv(&csv, 20_000);
    let p = |name: &str| work.path().join(name).to_str().unwrap().to_string();

    let stored = ok(&cluster.tern(&[
        "put",
        &p("sales.csv"),
        "--name",
        "sales",
        "--partition-size",
        "200KB",
        "--quiet",
    ]));
    assert!(stored.contains("stored sales"), "{stored}");
    let described: serde_json::Value =
        serde_json::from_slice(&cluster.tern(&["describe", "sales", "--json"]).stdout).unwrap();
    assert_eq!(described["rows"], 20_000);
    assert!(
        described["npartitions"].as_u64().unwrap() > 1,
        "{described}"
    );
    let schema = described["schema"].as_str().unwrap();
    assert!(
        schema.contains("\"id\"") && schema.contains("Int64") && schema.contains("Boolean"),
        "{schema}"
    );

    // CSV back out: the same rows in the same order.
    ok(&cluster.tern(&["get", "sales", "--out", &p("back.csv"), "--quiet"]));
    let expected = read_rows(&csv);
    assert_eq!(read_rows(&work.path().join("back.csv")), expected);

    // Parquet out, Parquet in as another dataset, CSV out again: still the same rows.
    ok(&cluster.tern(&["get", "sales", "--out", &p("back.parquet"), "--quiet"]));
    ok(&cluster.tern(&[
        "put",
        &p("back.parquet"),
        "--name",
        "sales2",
        "--partitions",
        "3",
        "--quiet",
    ]));
    ok(&cluster.tern(&["get", "sales2", "--out", &p("again.csv"), "--quiet"]));
    assert_eq!(read_rows(&work.path().join("again.csv")), expected);
    let partitions = |name: &str| {
        let described: serde_json::Value =
            serde_json::from_slice(&cluster.tern(&["describe", name, "--json"]).stdout).unwrap();
        described["npartitions"].as_u64().unwrap()
    };
    assert_eq!(partitions("sales2"), 3);

    // Partitions as asked, to the row, whatever the reader's batches (8,192 rows): 37 of
    // 20,000 rows; one row each when there are fewer rows than asked for (and it says so);
    // a size smaller than a batch.
    ok(&cluster.tern(&[
        "put",
        &p("sales.csv"),
        "--name",
        "by_count",
        "--partitions",
        "37",
        "--quiet",
    ]));
    assert_eq!(partitions("by_count"), 37);
    let small = work.path().join("small.csv");
    write_sales_csv(&small, 50);
    let out = cluster.tern(&[
        "put",
        &p("small.csv"),
        "--name",
        "tiny",
        "--partitions",
        "80",
        "--quiet",
    ]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fewer than --partitions 80"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(partitions("tiny"), 50);
    ok(&cluster.tern(&[
        "put",
        &p("small.csv"),
        "--name",
        "sized",
        "--partition-size",
        "400B",
        "--quiet",
    ]));
    let sized = partitions("sized");
    assert!(
        (4..50).contains(&sized),
        "{sized} partitions of at most about 400 bytes"
    );
    ok(&cluster.tern(&["get", "sized", "--out", &p("sized.csv"), "--quiet"]));
    assert_eq!(read_rows(&work.path().join("sized.csv")), read_rows(&small));

    // Bad input: a clear one-line error, and no dataset becomes visible.
    let mut bad = std::fs::read_to_string(&csv).unwrap();
    bad.push_str("oops,customer-x,1.0,true\n");
    std::fs::write(work.path().join("bad.csv"), bad).unwrap();
    let err = one_line_error(&cluster.tern(&["put", &p("bad.csv"), "--name", "bad", "--quiet"]));
    assert!(err.contains("bad.csv") && err.contains("line"), "{err}");

    let err =
        one_line_error(&cluster.tern(&["put", &p("missing.csv"), "--name", "bad", "--quiet"]));
    assert!(err.contains("missing.csv"), "{err}");

    std::fs::write(work.path().join("other.csv"), "x,y\n1,2\n").unwrap();
    let err = one_line_error(&cluster.tern(&[
        "put",
        &p("sales.csv"),
        &p("other.csv"),
        "--name",
        "bad",
        "--quiet",
    ]));
    assert!(err.contains("other.csv") && err.contains("differ"), "{err}");

    std::fs::write(work.path().join("broken.parquet"), b"PAR1 not really").unwrap();
    let err =
        one_line_error(&cluster.tern(&["put", &p("broken.parquet"), "--name", "bad", "--quiet"]));
    assert!(err.contains("broken.parquet"), "{err}");

    let err =
        one_line_error(&cluster.tern(&["put", &p("sales.csv"), "--name", "sales", "--quiet"]));
    assert!(err.contains("already exists"), "{err}");

    let listed = ok(&cluster.tern(&["ls"]));
    assert!(
        !listed.contains("bad"),
        "a failed put left something visible: {listed}"
    );
}
