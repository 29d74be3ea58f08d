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
use tern_graph::{Delayed, Inputs, Local, delayed, partition};
use tern_proto::{Datum, TaskOutcome};

/// Partitions fetched once from the cluster, for the in-process run.
struct Fetched(Vec<Vec<u8>>);

impl Inputs for Fetched {
    fn partition(&self, _dataset: &str, _version: u64, index: u32) -> Result<Datum, String> {
        self.0
            .get(index as usize)
            .map(|b| Datum::Table(b.clone()))
            .ok_or_else(|| format!("no partition {index}"))
    }
}

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
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dir = flag("--cluster").map(std::path::PathBuf::from);
    let client = Client::open(&cluster_dir(dir.as_deref()))?;

    let (total, inputs) = match flag("--dataset") {
        Some(name) => {
            let record = client
                .dataset(&name)
                .await?
                .ok_or_else(|| format!("no dataset {name}"))?;
            let addresses = client.node_addresses().await?;
            let mut parts = Vec::new();
            for i in 0..record.partitions.len() {
                parts.push(client.read_partition(&record, i, &addresses).await?);
            }
            let counts = (0..record.partitions.len() as u32)
                .map(|i| delayed("row_count", [partition(&name, record.version, i)]))
                .collect();
            (tree_sum(counts), Fetched(parts))
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
