//! Dask-style DataFrames on a running cluster: writes a small `example_trips` dataset, then
//! filters, aggregates, joins, describes and persists it. Every step runs on the nodes that
//! hold the data; nothing is computed until a result is asked for.
//!
//! ```sh
//! tern up --detach
//! cargo run -p tern-examples --example dataframe
//! ```

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use tern_client::ingest::{PartitionBuilder, schema_json};
use tern_client::{Client, JoinKind, cluster_dir};

const CITIES: [&str; 5] = ["Lisbon", "Oslo", "Quito", "Hanoi", "Perth"];

/// Four partitions of 25,000 trips each.
async fn write_trips(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("trip_id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("km", DataType::Float64, false),
    ]));
    let mut writer = client.dataset_writer("example_trips", true).await?;
    for part in 0..4i64 {
        let ids: Vec<i64> = (part * 25_000..(part + 1) * 25_000).collect();
        let cities: Vec<&str> = ids.iter().map(|i| CITIES[(i * 7 % 5) as usize]).collect();
        let km: Vec<f64> = ids.iter().map(|i| (i * 37 % 1000) as f64 / 10.0).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(cities)),
                Arc::new(Float64Array::from(km)),
            ],
        )?;
        let mut partition = PartitionBuilder::new(&schema)?;
        partition.push(&batch)?;
        writer.add_table_partition(&partition.finish()?).await?;
    }
    writer.commit("arrow-ipc", &schema_json(&schema)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::open(&cluster_dir(None))?;
    write_trips(&client).await?;
    let trips = client.table("example_trips");
    println!("example_trips: {} partitions", trips.npartitions().await?);

    println!("\nhead(3) reads only the first partition:");
    println!("{}", pretty_format_batches(&trips.head(3).await?)?);

    println!("\ndescribe():");
    println!("{}", pretty_format_batches(&[trips.describe().await?])?);

    println!("\nvalue_counts(\"city\"):");
    println!(
        "{}",
        pretty_format_batches(&trips.value_counts("city").await?)?
    );

    let long_trips = trips
        .filter("km > 50")
        .with_column("miles", "km / 1.609")
        .aggregate(
            &["city"],
            &["count(*) AS trips", "round(sum(miles), 1) AS miles"],
        )
        .sort(&["miles DESC"]);
    println!("\nlong trips per city, and how they run:");
    println!("{}", pretty_format_batches(&long_trips.collect().await?)?);
    println!("{}", long_trips.explain().await?);

    let totals = trips.aggregate(&["city"], &["sum(km) AS city_km"]);
    let shares = trips
        .join(&totals, &["city"], JoinKind::Inner)
        .aggregate(
            &["city"],
            &["round(100 * sum(km) / max(city_km), 1) AS pct_check"],
        )
        .sort(&["city"]);
    println!("\na join with its own per-city totals:");
    println!("{}", pretty_format_batches(&shares.collect().await?)?);

    let saved = long_trips
        .repartition(2)
        .persist("example_long_trips")
        .await;
    match saved {
        Ok(record) => println!(
            "\npersisted as example_long_trips: {} partitions, each on 3 nodes",
            record.partitions.len()
        ),
        Err(e) => println!("\nnot persisted: {e} (remove it with `tern rm example_long_trips`)"),
    }
    Ok(())
}
