//! Query benchmark: TPC-H at scale factor 1, the 22 queries on a 3-node cluster (`tern sql`'s
//! client call) against single-process DataFusion over the same Parquet files, in the same
//! run. Each engine runs each query twice; the faster run counts (the first warms the page
//! cache for both).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tern_e2e::{LocalCluster, TPCH_QUERIES, tpch_tables};

pub fn run(rt: &tokio::runtime::Runtime) {
    println!("\n## compute\n");
    let work = tempfile::Builder::new()
        .prefix("tern-bench-tpch-")
        .tempdir()
        .expect("tempdir");
    let started = Instant::now();
    let mut files = Vec::new();
    for (name, batches) in tpch_tables(1.0, 64 * 1024) {
        let path = work.path().join(format!("{name}.parquet"));
        let file = std::fs::File::create(&path).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).expect("writer");
        for batch in &batches {
            writer.write(batch).expect("write");
        }
        writer.close().expect("close");
        files.push((name, path));
    }
    println!(
        "TPC-H SF1 generated and written as Parquet in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let cluster = LocalCluster::up(3);
    let started = Instant::now();
    for (name, path) in &files {
        let out = cluster.tern(&[
            "put",
            path.to_str().expect("utf-8"),
            "--name",
            name,
            "--quiet",
        ]);
        assert!(
            out.status.success(),
            "put {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "stored in the cluster (3 replicas, 64 MiB partitions) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let client = Arc::new(cluster.client());

    let reference = SessionContext::new();
    rt.block_on(async {
        for (name, path) in &files {
            reference
                .register_parquet(
                    *name,
                    path.to_str().expect("utf-8"),
                    ParquetReadOptions::default(),
                )
                .await
                .expect("register");
        }
    });

    println!(
        "\n| query | DataFusion (1 process) | tern (3 nodes) | tern / DataFusion |\n|---|---|---|---|"
    );
    let mut ratios = Vec::new();
    for (i, query) in TPCH_QUERIES.iter().enumerate() {
        let best = |f: &dyn Fn() -> Duration| (0..2).map(|_| f()).min().expect("two runs");
        let baseline = best(&|| {
            let started = Instant::now();
            rt.block_on(async {
                let frame = reference.sql(query).await.expect("DataFusion plans it");
                frame.collect().await.expect("DataFusion runs it");
            });
            started.elapsed()
        });
        let tern = best(&|| {
            let started = Instant::now();
            rt.block_on(client.sql(query))
                .unwrap_or_else(|e| panic!("Q{}: {e}", i + 1));
            started.elapsed()
        });
        let ratio = tern.as_secs_f64() / baseline.as_secs_f64();
        ratios.push(ratio);
        println!(
            "| Q{} | {} ms | {} ms | {ratio:.2} |",
            i + 1,
            baseline.as_millis(),
            tern.as_millis()
        );
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    let worst = ratios.iter().cloned().fold(0.0, f64::max);
    println!(
        "\ngeometric mean of tern / DataFusion: {geomean:.2} (goal: at most 1.5); worst: {worst:.2} (goal: at most 3)"
    );
}
