//! The enrichment step: INVOKE, telemetry records and SHUTDOWN into our subsegments, each
//! INVOKE and record placed on its attempt first, as the lifecycle loop does.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use serde_json::Value;
use xray_extension::attempt::Attempts;
use xray_extension::enrich::{Enricher, Environment, Invoke, Settings};
use xray_extension::lambda::events::ShutdownReason;
use xray_extension::lambda::telemetry::{self, EpochSeconds, Event, InitializationType};
use xray_extension::trace::{IdSource, TraceHeader};

use crate::docs;

/// When telemetry bodies "arrive" (stands in for unreadable record times; none in the fixtures).
const RECEIVED: EpochSeconds = EpochSeconds(1_665_532_816.0);

/// One step of a fixture, decoded ahead of the measurement.
enum Step {
    Invoke(Invoke),
    Telemetry(Vec<Event>),
    Shutdown(ShutdownReason, EpochSeconds),
}

#[path = "../../src/enrich/fixtures.rs"]
mod fixtures;

/// The fixture's environment, and its steps with telemetry bodies kept raw (for the
/// decode + enrich bench) and decoded.
fn load(name: &str) -> (Environment, Vec<Step>, Vec<Vec<u8>>) {
    let path = docs::fixture(&format!("enrich/{name}.json"));
    let raw =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let fixture: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let env = fixtures::environment(&fixture);
    let mut steps = Vec::new();
    let mut bodies = Vec::new();
    for step in fixture["steps"].as_array().into_iter().flatten() {
        if let Some(inv) = step.get("invoke") {
            steps.push(Step::Invoke(fixtures::invoke(inv)));
        } else if let Some(records) = step.get("telemetry") {
            let body = records.to_string().into_bytes();
            steps.push(Step::Telemetry(telemetry::decode(&body, RECEIVED).events));
            bodies.push(body);
        } else {
            let (reason, at) = fixtures::shutdown(&step["shutdown"]);
            steps.push(Step::Shutdown(reason, at));
        }
    }
    (env, steps, bodies)
}

/// Runs every step; returns the number of documents produced.
fn run((enricher, attempts): &mut (Enricher, Attempts), steps: &[Step]) -> usize {
    let mut produced = 0;
    for step in steps {
        produced += match step {
            Step::Invoke(invoke) => {
                let placed =
                    attempts.place_invoke(&invoke.request_id, invoke.trace, invoke.received_at);
                enricher.on_invoke(invoke, placed.id).len()
            }
            Step::Telemetry(events) => events
                .iter()
                .map(|ev| {
                    let attempt = attempts.place_event(ev).map(|placed| placed.id);
                    enricher.on_telemetry(ev, attempt).len()
                })
                .sum(),
            Step::Shutdown(reason, at) => enricher.on_shutdown(reason, *at).len(),
        };
    }
    produced
}

pub fn bench(c: &mut Criterion) {
    let (env, steps, bodies) = load("on_demand_cold_then_warm");
    let fresh = || {
        (
            Enricher::with_ids(Settings::default(), env.clone(), IdSource::sequence(0x1000)),
            Attempts::new(),
        )
    };
    assert!(
        run(&mut fresh(), &steps) > 0,
        "the sequence must produce documents"
    );
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cold_then_warm_sequence", |b| {
        b.iter_batched(
            fresh,
            |mut state| run(&mut state, black_box(&steps)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("decode_telemetry_bodies", |b| {
        b.iter(|| {
            bodies
                .iter()
                .map(|body| telemetry::decode(black_box(body), RECEIVED).events.len())
                .sum::<usize>()
        });
    });
    group.finish();
}
