//! Futures in Dask's manner: submit a graph, print each task's value as it ends
//! (`as_completed`), gather them all, and check them against the thread-pool scheduler in this
//! process (exit status 1 when they differ). Without a dataset it submits 100 independent
//! tasks; with `--dataset NAME` one task per partition counting its rows, where it is stored.
//! Then a second graph adds the futures' values up where the cluster keeps them.
//!
//! ```sh
//! tern up --detach && tern put sales.csv --name sales
//! cargo run -p tern-examples --example futures -- --cluster .tern --dataset sales
//! ```

use std::sync::Arc;

use futures::StreamExt;
use tern_client::{Client, as_completed, cluster_dir, gather};
use tern_examples::{Fetched, flag, row_counts};
use tern_graph::{Delayed, Local, delayed, graph_of};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = flag("--cluster").map(std::path::PathBuf::from);
    let client = Arc::new(Client::open(&cluster_dir(dir.as_deref()))?);

    let (tasks, inputs): (Vec<Delayed>, Fetched) = match flag("--dataset") {
        Some(name) => row_counts(&client, &name).await?,
        None => (
            (0..100).map(|i| delayed("inc", [i.into()])).collect(),
            Fetched(Vec::new()),
        ),
    };
    let graph = graph_of(&tasks);
    let futures = client.submit(graph.clone());
    let mut ended = as_completed(futures.clone());
    let mut n = 0;
    while let Some((future, value)) = ended.next().await {
        n += 1;
        if n <= 5 || n == futures.len() {
            println!("{n:>4}. {} = {:?}", future.key(), value?);
        }
    }
    let values = gather(&futures).await;
    let here = tern_graph::compute(&graph, Local::Threads(4), &inputs)?;
    for (future, value) in futures.iter().zip(values) {
        let expected = here[future.key()].clone();
        if value.as_ref().ok() != expected.as_ref().ok() {
            eprintln!(
                "{}: {value:?} on the cluster, {expected:?} here",
                future.key()
            );
            std::process::exit(1);
        }
    }
    println!("{} futures, every value as in this process", futures.len());

    // The futures' outputs stay on the nodes while the futures live: a second graph adds
    // them up where they are, without running their tasks again.
    let total = delayed("add", futures.iter().map(|f| tern_graph::output(f.key())));
    let answer = client.compute_graph(&total.graph()).await?;
    let summed = tern_graph::compute(
        &graph_of(&[delayed("add", tasks.iter().map(Into::into))]),
        Local::Sync,
        &inputs,
    )?;
    let expected = summed.into_values().next();
    let got = answer.outcomes.get(total.key());
    let ran = answer.report.local + answer.report.remote;
    match (got, expected) {
        (Some(tern_proto::TaskOutcome::Done(got)), Some(Ok(expected))) if *got == expected => {
            println!("their sum, from where they are kept: {got:?} (tasks run: {ran})");
        }
        (got, expected) => {
            eprintln!("the sum of the futures: {got:?} on the cluster, {expected:?} here");
            std::process::exit(1);
        }
    }
    Ok(())
}
