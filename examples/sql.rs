//! Run one SQL query on a running cluster and print the answer and how it ran.
//!
//! ```sh
//! tern up --detach
//! cargo run -p tern-examples --example sql -- "SELECT count(*) FROM sales"
//! ```

use arrow::util::pretty::pretty_format_batches;
use tern_client::{Client, cluster_dir};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let query = std::env::args()
        .nth(1)
        .ok_or("usage: sql \"SELECT ...\" (against the cluster in $TERN_CLUSTER or ./.tern)")?;
    let client = Client::open(&cluster_dir(None))?;
    let answer = client.sql(&query).await?;
    println!("{}", pretty_format_batches(&answer.batches)?);
    for stage in &answer.stages {
        println!(
            "stage {}: {} ({} tasks, {} rows, {} ms; tasks per node {:?})",
            stage.stage, stage.what, stage.tasks, stage.rows, stage.millis, stage.local
        );
    }
    Ok(())
}
