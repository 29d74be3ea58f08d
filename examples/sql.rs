//! Run one SQL query on a running cluster: follow its progress, print each batch of the
//! answer as it arrives, then how each stage ran.
//!
//! ```sh
//! tern up --detach
//! cargo run -p tern-examples --example sql -- "SELECT count(*) FROM sales"
//! ```

use arrow::util::pretty::pretty_format_batches;
use tern_client::{Client, QueryUpdate, cluster_dir};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let query = std::env::args()
        .nth(1)
        .ok_or("usage: sql \"SELECT ...\" (against the cluster in $TERN_CLUSTER or ./.tern)")?;
    let client = Client::open(&cluster_dir(None))?;
    let mut stream = client.sql_stream(&query).await?;
    while let Some(update) = stream.next_update().await? {
        match update {
            QueryUpdate::Planned(stages) => {
                for s in stages {
                    eprintln!("planned stage {}: {} ({} tasks)", s.stage, s.what, s.tasks);
                }
            }
            QueryUpdate::Progress {
                stage, done, total, ..
            } => eprintln!("stage {stage}: {done}/{total} tasks done"),
            QueryUpdate::Batch(batch) => println!("{}", pretty_format_batches(&[batch])?),
            QueryUpdate::Finished(stages) => {
                for stage in &stages {
                    println!(
                        "stage {}: {} ({} tasks, {} rows, {} ms; tasks per node {:?})",
                        stage.stage, stage.what, stage.tasks, stage.rows, stage.millis, stage.local
                    );
                }
            }
        }
    }
    Ok(())
}
