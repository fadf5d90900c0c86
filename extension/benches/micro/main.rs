//! Micro-benchmarks of the extension's pure hot paths (criterion, `cargo bench -p xray-extension
//! --bench micro`):
//!
//! - `ingest`: `parse_datagram` (header check, UTF-8, depth scan, field validation) on a 1 KB
//!   document and on the captured SDK datagrams in `fixtures/datagrams`;
//! - `batch`: `export::batcher::batches` over a flush's worth of documents;
//! - `enrich`: the `Enricher` fed the `on_demand_cold_then_warm` telemetry sequence;
//! - `otlp`: an ADOT `T1S` datagram through `parse_datagram`, and a 100-span OTLP/HTTP request
//!   through the receiver's decoding into 64 KB documents.
//!
//! Results land in `target/criterion/<group>/<name>/new/estimates.json`; the `bench` binary of
//! the tests crate reads the medians from there for its table.

mod batch;
mod docs;
mod enrich;
mod ingest;
mod otlp;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

/// Short runs: the machine is shared and the figures feed one table among many rows.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = ingest::bench, batch::bench, enrich::bench, otlp::bench
}
criterion_main!(benches);
