//! End-to-end tests: real `tern` processes on loopback, no mocks. One binary, modules by area.

mod blocks;
mod datasets;
mod foundation;
mod ingest;
