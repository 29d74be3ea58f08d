//! Examples of the tern client, each run against a cluster started with `tern up`:
//!
//! - `sql`: one SQL query, its answer and its stages
//!   (`cargo run -p tern-examples --example sql -- "SELECT ..."`);
//! - `dataframe`: lazy DataFrames: head, describe, value_counts, filter, aggregate, join,
//!   persist (`cargo run -p tern-examples --example dataframe`).
