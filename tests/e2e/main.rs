//! End-to-end tests: real `tern` processes on loopback, no mocks. One binary, modules by area.

mod blocks;
mod compute;
mod dataframe;
mod datasets;
mod file_types;
mod foundation;
mod graphs;
mod ingest;
mod lifecycle;
mod security;
mod tpch;

/// Every test drives the `tern` binary that Cargo built for this test run.
fn setup() {
    tern_e2e::use_tern_binary(env!("CARGO_BIN_EXE_tern"));
}
