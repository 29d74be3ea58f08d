//! Build a task graph with `delayed` (as in Dask), run it on a cluster and in this process on
//! the thread-pool scheduler, and check the answers agree (exit status 1 when they do not).
//! Without a dataset it sums a tree of 1,000 small tasks; with `--dataset NAME` it counts the
//! rows of every partition where the partition is stored and adds the counts up in a tree.
//!
//! ```sh
//! tern up --detach && tern put sales.csv --name sales
//! cargo run -p tern-examples --example delayed -- --cluster .tern --dataset sales
//! ```

use tern_client::{Client, cluster_dir};
use tern_examples::{Fetched, flag, row_counts};
use tern_graph::{Delayed, Local, delayed};
use tern_proto::TaskOutcome;

/// Pairwise sums, level by level, down to one.
fn tree_sum(mut level: Vec<Delayed>) -> Delayed {
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| delayed("add", pair.iter().map(Into::into)))
            .collect();
    }
    level.remove(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = flag("--cluster").map(std::path::PathBuf::from);
    let client = Client::open(&cluster_dir(dir.as_deref()))?;

    let (total, inputs) = match flag("--dataset") {
        Some(name) => {
            let (counts, fetched) = row_counts(&client, &name).await?;
            (tree_sum(counts), fetched)
        }
        None => {
            let leaves = (0..1000).map(|i| delayed("inc", [i.into()])).collect();
            (tree_sum(leaves), Fetched(Vec::new()))
        }
    };
    let graph = total.graph();
    println!("{} tasks", graph.tasks.len());

    let answer = client.compute_graph(&graph).await?;
    let on_cluster = match &answer.outcomes[total.key()] {
        TaskOutcome::Done(datum) => datum.clone(),
        TaskOutcome::Failed(why) => return Err(format!("the graph failed: {why}").into()),
    };
    let report = &answer.report;
    println!(
        "cluster: {on_cluster:?} in {} ms ({} tasks where their inputs are, {} elsewhere, per node {:?})",
        report.millis, report.local, report.remote, report.per_node
    );
    let here = total.compute_local_with(Local::Threads(4), &inputs)?;
    println!("in this process: {here:?}");
    if here != on_cluster {
        eprintln!("the answers differ");
        std::process::exit(1);
    }
    Ok(())
}
