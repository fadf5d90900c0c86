//! The criterion micro-benchmarks' results (`cargo bench -p xray-extension --bench micro`),
//! read from `target/criterion/<group>/<name>/new/sample.json`: one time per iteration per
//! sample, so each row's median and range are over criterion's samples.

use std::path::Path;

use serde::Deserialize;

use super::docs::DATAGRAM_FIXTURES as FIXTURES;
use super::report::{Row, Target, Unit, summarize};

/// The micro-benchmark's name in `cargo bench`.
pub const BENCH: &str = "cargo bench -p xray-extension --bench micro";

#[derive(Deserialize)]
struct Samples {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// Nanoseconds per iteration of each sample of `group/name`.
fn per_iteration(criterion: &Path, id: &str) -> Option<Vec<f64>> {
    let path = criterion.join(id).join("new/sample.json");
    let samples: Samples = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(
        samples
            .iters
            .iter()
            .zip(&samples.times)
            .filter(|(i, _)| **i > 0.0)
            .map(|(i, t)| t / i)
            .collect(),
    )
}

fn missing(figure: &str, unit: Unit, target: Target) -> Row {
    Row::missing(
        figure,
        unit,
        target,
        &format!("no criterion results: run `make bench-micro` ({BENCH})"),
    )
}

/// The rows, from the results under `target_dir/criterion`.
pub fn rows(target_dir: &Path) -> Vec<Row> {
    let criterion = target_dir.join("criterion");
    let mut rows = Vec::new();

    let figure = "UDP ingest: 1 KB documents parsed + validated, one core";
    rows.push(match per_iteration(&criterion, "ingest/parse_1kb") {
        Some(ns) => {
            let per_second: Vec<f64> = ns.iter().map(|n| 1e9 / n).collect();
            Row::new(figure, &per_second, Unit::PerSecond, Target::AtLeast(100_000.0)).note(
                "parse_datagram on a 1,024-byte SDK-shaped subsegment; median and range over criterion's samples",
            )
        }
        None => missing(figure, Unit::PerSecond, Target::AtLeast(100_000.0)),
    });

    let figure = "parse + validate a captured SDK datagram";
    let medians: Vec<f64> = FIXTURES
        .iter()
        .filter_map(|f| per_iteration(&criterion, &format!("ingest/parse_{f}")))
        .filter_map(|ns| summarize(&ns).map(|s| s.median))
        .collect();
    rows.push(if medians.is_empty() {
        missing(figure, Unit::Ns, Target::None)
    } else {
        Row::new(figure, &medians, Unit::Ns, Target::None).note(format!(
            "median and range over the {} fixtures' medians (222–391 bytes)",
            medians.len()
        ))
    });

    for (id, figure, unit) in [
        ("batch/batches_5", "batch assembly, 5 documents", Unit::Ns),
        (
            "batch/batches_1000",
            "batch assembly, 1,000 documents → 20 calls",
            Unit::Us,
        ),
        (
            "batch/batches_1000_dup10",
            "batch assembly, 1,000 documents, 1 in 10 a re-send",
            Unit::Us,
        ),
        (
            "enrich/cold_then_warm_sequence",
            "enrichment: cold start + warm invoke + shutdown sequence",
            Unit::Us,
        ),
        (
            "enrich/decode_telemetry_bodies",
            "telemetry decode: the same sequence's bodies",
            Unit::Us,
        ),
        (
            "otlp/udp_10_spans",
            "OTLP over UDP: an ADOT T1S datagram of 10 spans checked, one core",
            Unit::Us,
        ),
        (
            "otlp/http_protobuf_100_spans",
            "OTLP/HTTP: 100 spans (protobuf) decoded into 64 KB documents, one core",
            Unit::Us,
        ),
    ] {
        rows.push(match per_iteration(&criterion, id) {
            Some(ns) => {
                let scale = if unit == Unit::Us { 1e-3 } else { 1.0 };
                let v: Vec<f64> = ns.iter().map(|n| n * scale).collect();
                Row::new(figure, &v, unit, Target::None)
            }
            None => missing(figure, unit, Target::None),
        });
    }
    rows
}
