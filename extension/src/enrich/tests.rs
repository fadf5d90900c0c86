//! The enrichment state machine over captured event sequences (fixtures/enrich).

use serde_json::{Value, json};

use super::*;
use crate::attempt::Attempts;
use crate::ingest::protocol::parse_document;
use crate::lambda::telemetry;
use crate::trace::IdSource;

const ROOT: &str = "1-62e900b2-710d76f009d6e7785905449a";
const PARENT: &str = "0efbd19962d95b05";
/// When telemetry bodies "arrive" (stands in for an unreadable record time; none here).
pub(super) const RECEIVED: EpochSeconds = EpochSeconds(1_665_532_816.0);

/// An INVOKE placed on its attempt, as the lifecycle loop does, then handed to the enricher.
pub(super) fn invoke(e: &mut Enricher, attempts: &mut Attempts, invoke: &Invoke) -> Vec<Document> {
    let attempt = attempts.place_invoke(&invoke.request_id, invoke.trace, invoke.received_at);
    e.on_invoke(invoke, attempt.id)
}

/// A record placed on its attempt, as the lifecycle loop does, then handed to the enricher.
pub(super) fn record(e: &mut Enricher, attempts: &mut Attempts, event: &Event) -> Vec<Document> {
    e.on_telemetry(event, attempts.place_event(event).map(|placed| placed.id))
}

/// Runs a fixture; returns the documents produced by each step, parsed.
fn run_with(name: &str, settings: Settings) -> Vec<Vec<Value>> {
    run_fixture(&fixture(name), settings)
}

/// A fixture of fixtures/enrich, parsed.
pub(super) fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/enrich/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Runs a parsed fixture; returns the documents produced by each step, parsed.
pub(super) fn run_fixture(fixture: &Value, settings: Settings) -> Vec<Vec<Value>> {
    let env = fixtures::environment(fixture);
    let mut enricher = Enricher::with_ids(settings, env, IdSource::sequence(0x1000));
    let mut attempts = Attempts::new();
    let mut out = Vec::new();
    for step in fixture["steps"].as_array().unwrap() {
        let docs = if let Some(inv) = step.get("invoke") {
            invoke(&mut enricher, &mut attempts, &fixtures::invoke(inv))
        } else if let Some(records) = step.get("telemetry") {
            let decoded = telemetry::decode(records.to_string().as_bytes(), RECEIVED);
            decoded
                .events
                .iter()
                .flat_map(|ev| record(&mut enricher, &mut attempts, ev))
                .collect()
        } else {
            let (reason, at) = fixtures::shutdown(&step["shutdown"]);
            enricher.on_shutdown(&reason, at)
        };
        out.push(
            docs.iter()
                .map(|d| {
                    // Everything we produce passes our own ingest checks.
                    let checked = parse_document(d.body.as_bytes()).unwrap();
                    assert_eq!(checked.id, d.id);
                    serde_json::from_str::<Value>(d.body.text().unwrap()).unwrap()
                })
                .collect(),
        );
    }
    out
}

fn run(name: &str) -> Vec<Vec<Value>> {
    run_with(name, Settings::default())
}

pub(super) fn names(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["name"].as_str().unwrap()).collect()
}

pub(super) fn children(doc: &Value) -> Vec<&str> {
    doc["subsegments"]
        .as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

pub(super) fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-6
}

#[test]
fn on_demand_cold_start_then_warm() {
    let steps = run("on_demand_cold_then_warm");
    // Nothing before runtimeDone.
    assert!(steps[0].is_empty() && steps[1].is_empty());
    let first = &steps[2];
    assert_eq!(names(first), ["Cold Start", "Runtime"]);
    let (cold, runtime) = (&first[0], &first[1]);
    for d in first {
        assert_eq!(d["trace_id"], ROOT);
        assert_eq!(d["parent_id"], PARENT);
        assert_eq!(d["type"], "subsegment");
    }
    // Cold Start spans initStart → initStart + initReport duration.
    let init_start = EpochSeconds::parse_rfc3339("2022-10-12T00:00:14.600Z")
        .unwrap()
        .0;
    assert!(close(&cold["start_time"], init_start));
    assert!(close(&cold["end_time"], init_start + 0.397));
    assert_eq!(children(cold), ["Extension Init", "Runtime Init"]);
    assert!(close(
        &cold["subsegments"][0]["end_time"],
        init_start + 0.040
    ));
    assert_eq!(cold["metadata"]["lambda"]["extensionInitMs"], json!(35.0));
    // Runtime: platform.start → runtimeDone, three children, annotations.
    assert_eq!(
        children(runtime),
        ["Response Latency", "Response Duration", "Runtime Overhead"]
    );
    assert!(runtime.get("fault").is_none());
    assert_eq!(
        runtime["annotations"],
        json!({"ColdStart": true, "FunctionName": "orders", "FunctionVersion": "$LATEST", "InitType": "on-demand"})
    );
    let meta = &runtime["metadata"]["lambda"];
    assert_eq!(meta["requestId"], "r-1");
    assert_eq!(meta["runtimeVersion"], "python:3.12.v10");
    assert_eq!(meta["producedBytes"], 8);
    assert!(meta.get("billedDurationMs").is_none());

    // Second invocation: the report of the first arrives and re-sends its Runtime under the
    // same id, then the warm Runtime is sent.
    let second = &steps[4];
    assert_eq!(names(second), ["Runtime", "Runtime"]);
    let resent = &second[0];
    assert_eq!(resent["id"], runtime["id"]);
    assert_eq!(resent["metadata"]["lambda"]["billedDurationMs"], 102);
    assert_eq!(resent["metadata"]["lambda"]["maxMemoryUsedMB"], 84);
    assert_eq!(resent["metadata"]["lambda"]["initDurationMs"], 397.0);
    assert!(children(resent).contains(&"Extension Overhead"));
    assert!(resent["annotations"].get("OutOfMemory").is_none());
    let warm = &second[1];
    assert_eq!(warm["annotations"]["ColdStart"], false);
    assert_eq!(warm["trace_id"], "1-62e900b3-810d76f009d6e7785905449b");
    assert_ne!(warm["id"], runtime["id"]);
    // Spindown SHUTDOWN adds nothing; the last report, arriving at shutdown, re-sends warm.
    assert!(steps[5].is_empty());
    assert_eq!(names(&steps[6]), ["Runtime"]);
    assert_eq!(steps[6][0]["id"], warm["id"]);
    assert_eq!(steps[6][0]["metadata"]["lambda"]["billedDurationMs"], 102);
}

#[test]
fn provisioned_concurrency_is_not_a_cold_start() {
    let steps = run("provisioned_concurrency");
    let docs = &steps[2];
    assert_eq!(names(docs), ["Runtime"]);
    let a = &docs[0]["annotations"];
    assert_eq!(a["ColdStart"], false);
    assert_eq!(a["InitType"], "provisioned-concurrency");
    let init = &docs[0]["metadata"]["lambda"]["init"];
    assert_eq!(init["initDurationMs"], 397.0);
    assert_eq!(init["initializationType"], "provisioned-concurrency");
}

#[test]
fn proactive_init_is_not_a_cold_start() {
    let steps = run("proactive_init");
    let docs = &steps[2];
    assert_eq!(names(docs), ["Runtime"]);
    let a = &docs[0]["annotations"];
    assert_eq!(a["ColdStart"], false);
    assert_eq!(a["ProactiveInit"], true);
    assert_eq!(a["InitType"], "on-demand");
    let idle = docs[0]["metadata"]["lambda"]["init"]["idleBeforeInvokeSeconds"]
        .as_f64()
        .unwrap();
    assert!((idle - 44.003).abs() < 1e-3, "{idle}");
}

#[test]
fn snapstart_restore_replaces_cold_start() {
    let steps = run("snapstart_restore");
    let docs = &steps[2];
    assert_eq!(names(docs), ["Restore", "Runtime"]);
    let restore = &docs[0];
    let start = EpochSeconds::parse_rfc3339("2022-10-12T00:00:14.800Z")
        .unwrap()
        .0;
    assert!(close(&restore["start_time"], start));
    assert!(close(&restore["end_time"], start + 0.160));
    assert_eq!(restore["metadata"]["lambda"]["restoreDurationMs"], 160.0);
    let a = &docs[1]["annotations"];
    assert_eq!(a["ColdStart"], true);
    assert_eq!(a["InitType"], "snap-start");
    // The snapshot's own init (a day earlier) is not shown as this start's cost.
    assert!(!names(docs).contains(&"Cold Start"));
}

#[test]
fn suppressed_init_is_a_cold_start_inside_the_invocation() {
    let steps = run("suppressed_init");
    let docs = &steps[1];
    assert_eq!(names(docs), ["Cold Start", "Runtime"]);
    assert_eq!(docs[0]["metadata"]["lambda"]["suppressed"], true);
    assert_eq!(docs[0]["metadata"]["lambda"]["initPhase"], "invoke");
    assert_eq!(docs[1]["annotations"]["ColdStart"], true);
    assert_eq!(docs[1]["annotations"]["SuppressedInit"], true);
}

#[test]
fn an_error_is_a_fault_with_its_type() {
    let steps = run("error");
    let runtime = &steps[2][1];
    assert_eq!(runtime["name"], "Runtime");
    assert_eq!(runtime["fault"], true);
    let ex = &runtime["cause"]["exceptions"][0];
    assert_eq!(ex["type"], "Handled.ValueError");
    assert!(
        ex["message"]
            .as_str()
            .unwrap()
            .contains("Handled.ValueError")
    );
    assert_eq!(
        runtime["metadata"]["lambda"]["errorType"],
        "Handled.ValueError"
    );
}

#[test]
fn a_timeout_reported_by_runtime_done_ends_at_the_deadline() {
    let steps = run("timeout_runtime_done");
    let runtime = &steps[2][1];
    assert_eq!(runtime["fault"], true);
    let deadline = EpochSeconds::parse_rfc3339("2022-10-12T00:00:18.000Z")
        .unwrap()
        .0;
    assert!(close(&runtime["end_time"], deadline));
    let ex = &runtime["cause"]["exceptions"][0];
    assert_eq!(ex["message"], "Task timed out after 3.00 seconds");
    // Already reported: the SHUTDOWN that follows adds nothing.
    assert!(steps[3].is_empty());
}

#[test]
fn a_timeout_seen_only_at_shutdown_still_reaches_x_ray() {
    let steps = run("timeout_at_shutdown");
    assert!(steps[2].is_empty());
    let docs = &steps[3];
    assert_eq!(names(docs), ["Cold Start", "Runtime"]);
    let runtime = &docs[1];
    assert_eq!(runtime["fault"], true);
    assert_eq!(
        runtime["cause"]["exceptions"][0]["message"],
        "Task timed out after 3.00 seconds"
    );
    let deadline = EpochSeconds::parse_rfc3339("2022-10-12T00:00:18.000Z")
        .unwrap()
        .0;
    assert!(close(&runtime["end_time"], deadline));
}

#[test]
fn unsampled_and_untraced_invocations_send_nothing() {
    let steps = run("unsampled_and_untraced");
    assert!(steps.iter().all(Vec::is_empty), "{steps:?}");
}

#[test]
fn out_of_order_records_unknown_types_and_late_reports() {
    let steps = run("out_of_order_and_unknown");
    // runtimeDone before INVOKE and before platform.start: sent at once, with the trace from
    // the record and the start from the earliest span.
    let first = &steps[1];
    assert_eq!(names(first), ["Cold Start", "Runtime"]);
    let span_start = EpochSeconds::parse_rfc3339("2022-10-12T00:00:15.001Z")
        .unwrap()
        .0;
    assert!(close(&first[1]["start_time"], span_start));
    // INVOKE afterwards adds nothing.
    assert!(steps[2].is_empty());
    // The late platform.start corrects the start time (same id); the bad record is skipped.
    assert_eq!(names(&steps[3]), ["Runtime"]);
    let start = EpochSeconds::parse_rfc3339("2022-10-12T00:00:15.000Z")
        .unwrap()
        .0;
    assert!(close(&steps[3][0]["start_time"], start));
    assert_eq!(steps[3][0]["id"], first[1]["id"]);
    // Memory at the limit: flagged.
    let last = &steps[4][0];
    assert_eq!(last["annotations"]["OutOfMemory"], true);
    assert_eq!(last["id"], first[1]["id"]);
}

#[test]
fn annotations_can_be_chosen_and_extended() {
    let (builtins, _) = annotations::BuiltinSet::parse("ColdStart");
    let (static_annotations, _) = annotations::parse_static("team=payments,tier=3");
    let steps = run_with(
        "on_demand_cold_then_warm",
        Settings {
            builtins,
            static_annotations,
        },
    );
    assert_eq!(
        steps[2][1]["annotations"],
        json!({"ColdStart": true, "team": "payments", "tier": 3})
    );
    let steps = run_with(
        "on_demand_cold_then_warm",
        Settings {
            builtins: annotations::BuiltinSet::none(),
            static_annotations: Vec::new(),
        },
    );
    assert!(steps[2][1].get("annotations").is_none());
}

#[test]
fn the_number_of_tracked_invocations_is_bounded() {
    let mut e = Enricher::new(Settings::default(), Environment::default());
    let mut attempts = Attempts::new();
    for i in 0..100 {
        let ev = Event {
            time: EpochSeconds(1_700_000_000.0 + f64::from(i)),
            record: Record::Start(telemetry::Start {
                request_id: format!("r-{i}"),
                version: None,
                tracing: None,
                tenant_id: None,
            }),
        };
        record(&mut e, &mut attempts, &ev);
    }
    assert_eq!(e.invocations.len(), MAX_TRACKED_INVOCATIONS);
}

#[test]
fn the_invoke_header_wins_over_the_records_parent_even_when_it_comes_last() {
    let steps = run("telemetry_before_invoke");
    // Records first: sent under the records' parent.
    assert_eq!(names(&steps[0]), ["Cold Start", "Runtime"]);
    assert!(
        steps[0]
            .iter()
            .all(|d| d["parent_id"] == "77777777aaaaaaaa")
    );
    // The INVOKE names another parent: both documents again, same ids, under the INVOKE's.
    assert_eq!(names(&steps[1]), ["Cold Start", "Runtime"]);
    assert!(steps[1].iter().all(|d| d["parent_id"] == PARENT));
    assert_eq!(steps[1][0]["id"], steps[0][0]["id"]);
    assert_eq!(steps[1][1]["id"], steps[0][1]["id"]);
}

/// Found by fuzzing: records alone, with odd trace context.
fn feed(records: &str) -> Vec<Value> {
    let mut e = Enricher::new(Settings::default(), Environment::default());
    let mut attempts = Attempts::new();
    telemetry::decode(records.as_bytes(), RECEIVED)
        .events
        .iter()
        .flat_map(|ev| record(&mut e, &mut attempts, ev))
        .map(|d| {
            parse_document(d.body.as_bytes()).unwrap();
            serde_json::from_str::<Value>(d.body.text().unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn a_header_without_parent_sends_nothing() {
    let docs = feed(
        r#"[{"time":"2022-10-12T00:00:15.000Z","type":"platform.start","record":{"requestId":"r","tracing":{"value":"Root=1-62e900b2-710d76f009d6e7785905449a;Sampled=1"}}},
            {"time":"2022-10-12T00:00:15.101Z","type":"platform.runtimeDone","record":{"requestId":"r","status":"success"}}]"#,
    );
    assert!(docs.is_empty(), "{docs:?}");
}

#[test]
fn runtime_done_alone_starts_at_its_time_minus_its_duration() {
    let docs = feed(
        r#"[{"time":"2022-10-12T00:00:15.101Z","type":"platform.runtimeDone","record":{"requestId":"r","status":"success","metrics":{"durationMs":101.0},"tracing":{"value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}}]"#,
    );
    let runtime = docs.iter().find(|d| d["name"] == "Runtime").unwrap();
    let end = EpochSeconds::parse_rfc3339("2022-10-12T00:00:15.101Z")
        .unwrap()
        .0;
    assert!(close(&runtime["start_time"], end - 0.101));
    // Without a duration either, nothing can be placed in time: nothing is sent.
    let docs = feed(
        r#"[{"time":"2022-10-12T00:00:15.101Z","type":"platform.runtimeDone","record":{"requestId":"r","status":"success","tracing":{"value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}}]"#,
    );
    assert!(docs.iter().all(|d| d["name"] != "Runtime"), "{docs:?}");
}

/// SHUTDOWN before a finished invocation's runtimeDone was delivered: the provisional "did not
/// finish" fault is withdrawn when runtimeDone arrives, and the re-sent `Runtime` (same id)
/// tells what the runtime reported.
#[test]
fn a_runtime_done_after_shutdown_replaces_the_provisional_fault() {
    for (status, error_type) in [("success", None), ("error", Some("Handler.Boom"))] {
        let mut e = Enricher::new(Settings::default(), Environment::default());
        let mut attempts = Attempts::new();
        let at = |s: &str| EpochSeconds::parse_rfc3339(s).unwrap();
        let header = format!("Root={ROOT};Parent={PARENT};Sampled=1");
        let event = Invoke {
            request_id: "r1".into(),
            trace: Some(TraceHeader::parse(&header).unwrap()),
            deadline: at("2022-10-12T00:00:18.000Z"),
            received_at: at("2022-10-12T00:00:15.000Z"),
        };
        invoke(&mut e, &mut attempts, &event);
        let start = format!(
            r#"[{{"time":"2022-10-12T00:00:15.001Z","type":"platform.start","record":{{"requestId":"r1","tracing":{{"value":"{header}"}}}}}}]"#
        );
        for ev in &telemetry::decode(start.as_bytes(), RECEIVED).events {
            record(&mut e, &mut attempts, ev);
        }
        let provisional = e.on_shutdown(&ShutdownReason::Spindown, at("2022-10-12T00:00:15.050Z"));
        let provisional: Vec<Value> = provisional
            .iter()
            .map(|d| serde_json::from_str(d.body.text().unwrap()).unwrap())
            .collect();
        let first = provisional.iter().find(|d| d["name"] == "Runtime").unwrap();
        assert_eq!(first["fault"], true);

        let error = error_type.map_or(String::from("null"), |t| format!("\"{t}\""));
        let done = format!(
            r#"[{{"time":"2022-10-12T00:00:15.040Z","type":"platform.runtimeDone","record":{{"requestId":"r1","status":"{status}","errorType":{error},"metrics":{{"durationMs":39.0}},"spans":[{{"name":"responseLatency","start":"2022-10-12T00:00:15.001Z","durationMs":38.0}}]}}}}]"#
        );
        let docs: Vec<Value> = telemetry::decode(done.as_bytes(), RECEIVED)
            .events
            .iter()
            .flat_map(|ev| record(&mut e, &mut attempts, ev))
            .map(|d| serde_json::from_str(d.body.text().unwrap()).unwrap())
            .collect();
        let runtime = docs.iter().find(|d| d["name"] == "Runtime").unwrap();
        assert_eq!(runtime["id"], first["id"], "re-sent under the same id");
        let message = runtime["cause"]["exceptions"][0]["message"].as_str();
        match error_type {
            None => {
                assert!(runtime.get("fault").is_none(), "{runtime}");
                assert!(runtime.get("cause").is_none(), "{runtime}");
            }
            Some(t) => {
                assert_eq!(runtime["fault"], true);
                assert!(message.unwrap().contains(t), "{runtime}");
            }
        }
        assert!(close(
            &runtime["end_time"],
            at("2022-10-12T00:00:15.040Z").0
        ));
    }
}
