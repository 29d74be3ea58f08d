//! Examples of the tern client, each run against a cluster started with `tern up`:
//!
//! - `sql`: one SQL query, its answer and its stages
//!   (`cargo run -p tern-examples --example sql -- "SELECT ..."`);
//! - `dataframe`: lazy DataFrames: head, describe, value_counts, filter, aggregate, join,
//!   persist (`cargo run -p tern-examples --example dataframe`);
//! - `delayed` and `futures`: task graphs on the cluster, checked against the in-process
//!   scheduler (`cargo run -p tern-examples --example futures -- --dataset NAME`).
//!
//! The library holds what the graph examples share.

use tern_client::Client;
use tern_graph::{Delayed, Inputs, delayed, partition};
use tern_proto::Datum;

/// The value of `--name VALUE` among the program's arguments.
pub fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A stored dataset's partitions, fetched once from the cluster, for the in-process run.
pub struct Fetched(pub Vec<Vec<u8>>);

impl Inputs for Fetched {
    fn partition(&self, _dataset: &str, _version: u64, index: u32) -> Result<Datum, String> {
        self.0
            .get(index as usize)
            .map(|b| Datum::Table(b.clone().into()))
            .ok_or_else(|| format!("no partition {index}"))
    }
}

/// One task per partition of dataset `name` counting its rows (where the partition is
/// stored), and the partitions for the in-process run.
pub async fn row_counts(
    client: &Client,
    name: &str,
) -> Result<(Vec<Delayed>, Fetched), Box<dyn std::error::Error>> {
    let record = client
        .dataset(name)
        .await?
        .ok_or_else(|| format!("no dataset {name}"))?;
    let addresses = client.node_addresses().await?;
    let mut parts = Vec::new();
    for i in 0..record.partitions.len() {
        parts.push(client.read_partition(&record, i, &addresses).await?);
    }
    let counts = (0..record.partitions.len() as u32)
        .map(|i| delayed("row_count", [partition(name, record.version, i)]))
        .collect();
    Ok((counts, Fetched(parts)))
}
