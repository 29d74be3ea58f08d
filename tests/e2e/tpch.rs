//! The 22 TPC-H queries (with the specification's validation parameters) on a 3-node cluster
//! give the same answers as single-process DataFusion over the same generated tables.

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tern_client::ingest::PartitionBuilder;
use tern_e2e::{LocalCluster, pretty};

use crate::setup;

#[test]
fn the_22_tpch_queries_answer_as_single_process_datafusion_does() {
    answers_as_datafusion(&[]);
}

/// At this scale every table is small enough for DataFusion to be told its size, so its
/// joins are planned as broadcasts and the ones tern decides as a query runs (a stage's
/// output broadcast into a scan, a scan filtered by the other side's keys, the build side
/// swapped) never come up. Planned without any table's size, as at SF1, they do.
#[test]
fn the_22_tpch_queries_planned_without_table_sizes_answer_as_datafusion_does() {
    let stages = answers_as_datafusion(&["--sized-table-rows", "0"]);
    for what in ["joined with all of stage", "filtered by the keys of stage"] {
        assert!(
            stages.iter().any(|s| s.contains(what)),
            "no stage {what}: {stages:#?}"
        );
    }
}

/// Runs the 22 queries on a cluster started with `extra`, checks each answer against
/// DataFusion's, and returns what every stage of them did.
fn answers_as_datafusion(extra: &[&str]) -> Vec<String> {
    setup();
    let cluster = LocalCluster::up_args(3, extra);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let reference = SessionContext::new();
    // Scale factor 0.01: lineitem has 60 k rows; 8 k-row batches become its partitions.
    for (name, batches) in tern_e2e::tpch_tables(0.01, 8192) {
        let schema = batches[0].schema();
        let table = MemTable::try_new(schema.clone(), vec![batches.clone()]).unwrap();
        reference.register_table(name, Arc::new(table)).unwrap();
        rt.block_on(async {
            let mut writer = client.dataset_writer(name, false).await.unwrap();
            for batch in &batches {
                let mut part = PartitionBuilder::new(&schema).unwrap();
                part.push(batch).unwrap();
                writer
                    .add_table_partition(&part.finish().unwrap())
                    .await
                    .unwrap();
            }
            let schema_json = tern_client::ingest::schema_json(&schema);
            writer.commit("arrow-ipc", &schema_json).await.unwrap();
        });
    }
    let mut failures = Vec::new();
    let mut stages = Vec::new();
    for (i, query) in tern_e2e::TPCH_QUERIES.iter().enumerate() {
        let want = rt.block_on(async {
            let frame = reference.sql(query).await.expect(query);
            pretty(&frame.collect().await.expect(query))
        });
        match rt.block_on(client.sql(query)) {
            Ok(answer) if pretty(&answer.batches) == want => {
                stages.extend(
                    answer
                        .stages
                        .iter()
                        .map(|s| format!("Q{}: {}", i + 1, s.what)),
                );
            }
            Ok(answer) => failures.push(format!(
                "Q{}: answers differ\ntern:\n{}\nDataFusion:\n{want}",
                i + 1,
                pretty(&answer.batches)
            )),
            Err(e) => failures.push(format!("Q{}: {e}", i + 1)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    stages
}
