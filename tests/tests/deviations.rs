//! A Lambda that departs from the documented shapes: telemetry records with fields missing,
//! `null` or of another type. The invocation must still be released within the flush timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Options, flush_timeout, named};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{Invoke, RecordDeviation};
use xray_extension_tests::trace::TraceHeader;

/// The function timeout: a release at the deadline instead of at runtimeDone is unmistakable.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A deviation applied to the `record` of every record of type `kind`.
fn on(kind: &'static str, change: impl Fn(&mut Value) + Send + Sync + 'static) -> RecordDeviation {
    Arc::new(move |wire: &mut Value| {
        if wire["type"] == kind {
            change(&mut wire["record"]);
        }
    })
}

/// Every field of every record, except what identifies an invocation (`requestId`), replaced by
/// a value of another type.
fn every_field_of_every_record() -> RecordDeviation {
    Arc::new(|wire: &mut Value| {
        if let Some(record) = wire["record"].as_object_mut() {
            for (key, value) in record.iter_mut() {
                if key != "requestId" {
                    *value = match value {
                        Value::String(_) => json!(7.5),
                        Value::Number(_) => json!("7"),
                        Value::Array(_) | Value::Object(_) => json!("not an object"),
                        _ => json!([]),
                    };
                }
            }
            record.insert("someFutureField".into(), json!({"a": [1, null]}));
        }
    })
}

#[tokio::test]
async fn a_deviating_runtime_done_still_releases_the_invocation_within_the_flush_timeout() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function_timeout: FUNCTION_TIMEOUT,
        ..Options::strategy("end")
    })
    .await;
    // (what, the deviation, whether our Runtime subsegment can still be built)
    let cases: Vec<(&str, RecordDeviation, bool)> = vec![
        (
            "every field of every record (cold)",
            every_field_of_every_record(),
            false,
        ),
        (
            "spans: null",
            on("platform.runtimeDone", |r| r["spans"] = Value::Null),
            true,
        ),
        (
            "a span without durationMs",
            on("platform.runtimeDone", |r| {
                if let Some(span) = r["spans"].get_mut(0).and_then(Value::as_object_mut) {
                    span.remove("durationMs");
                }
            }),
            true,
        ),
        (
            "tracing without value",
            on("platform.runtimeDone", |r| {
                if let Some(t) = r["tracing"].as_object_mut() {
                    t.remove("value");
                }
            }),
            true,
        ),
        (
            "producedBytes: 2.0",
            on("platform.runtimeDone", |r| {
                r["metrics"]["producedBytes"] = json!(2.0);
            }),
            true,
        ),
        (
            "an unknown status",
            on("platform.runtimeDone", |r| r["status"] = json!("throttled")),
            true,
        ),
        (
            "metrics: a string",
            on("platform.runtimeDone", |r| r["metrics"] = json!("n/a")),
            true,
        ),
        (
            "an unreadable time",
            Arc::new(|wire: &mut Value| {
                if wire["type"] == "platform.runtimeDone" {
                    wire["time"] = json!("yesterday");
                }
            }),
            true,
        ),
        (
            "every field of every record (warm)",
            every_field_of_every_record(),
            false,
        ),
    ];
    let bound = flush_timeout();
    let mut figures = Vec::new();
    for (what, deviation, enriched) in cases {
        lambda.deviate_telemetry(Some(deviation));
        let trace = TraceHeader::sampled();
        let inv = lambda
            .invoke(Invoke::new(json!({"subsegments": 1})).traced(trace.clone()))
            .await
            .expect("invoke");
        assert!(!inv.timed_out, "{what}: timed out");
        let held = inv.post_runtime.expect("the invocation finished");
        figures.push(format!("{what}: {held:?}"));
        assert!(
            held <= bound,
            "{what}: held {held:?} after runtimeDone (flush timeout {bound:?})"
        );
        if enriched {
            // Only the deviating field is lost: our Runtime subsegment is still sent.
            assert_eq!(
                named(&sink.documents(), &trace.root, "Runtime").len(),
                1,
                "{what}: no Runtime subsegment"
            );
        }
    }
    eprintln!("post-runtime time per deviation: {}", figures.join("; "));
    lambda.deviate_telemetry(None);
    lambda.shutdown().await.expect("shutdown");
}
