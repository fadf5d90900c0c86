//! Decoding tests: the documented records, deviations field by field, and the shapes AWS's own
//! runtime core writes.

use super::*;

/// When the test bodies "arrived": 2022-10-12T00:00:16Z.
const RECEIVED: EpochSeconds = EpochSeconds(1_665_532_816.0);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/telemetry/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn decodes_the_documented_records() {
    let d = decode(&fixture("cold_invoke.json"), RECEIVED);
    assert_eq!(d.invalid, 0);
    let kinds: Vec<&str> = d
        .events
        .iter()
        .map(|e| match &e.record {
            Record::InitStart(_) => "initStart",
            Record::InitRuntimeDone(_) => "initRuntimeDone",
            Record::InitReport(_) => "initReport",
            Record::Start(_) => "start",
            Record::RuntimeDone(_) => "runtimeDone",
            Record::Report(_) => "report",
            Record::Other(o) => o.as_str(),
            _ => "restore",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "initStart",
            "platform.extension",
            "platform.telemetrySubscription",
            "initRuntimeDone",
            "initReport",
            "start",
            "runtimeDone",
            "report"
        ]
    );
    assert_eq!(d.skipped, 2);
    let Record::RuntimeDone(done) = &d.events[6].record else {
        panic!("not runtimeDone")
    };
    assert_eq!(done.request_id, "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa");
    assert_eq!(done.status, Some(Status::Success));
    assert_eq!(done.spans.len(), 3);
    assert_eq!(done.metrics.as_ref().unwrap().produced_bytes, Some(8));
    let Record::Report(report) = &d.events[7].record else {
        panic!("not report")
    };
    assert_eq!(report.metrics.billed_duration_ms, Some(694));
    assert_eq!(report.metrics.max_memory_used_mb, Some(84));
    assert_eq!(report.metrics.init_duration_ms, Some(397.68));
    let Record::InitStart(init) = &d.events[0].record else {
        panic!("not initStart")
    };
    assert_eq!(init.initialization_type, Some(InitializationType::OnDemand));
    assert_eq!(init.phase, Some(Phase::Init));
    assert_eq!(init.instance_max_memory, Some(268_435_456));
}

#[test]
fn decodes_what_aws_runtime_core_writes_without_a_loss_or_a_count() {
    let body = fixture("runtime_core.json");
    let elements = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .len();
    let d = decode(&body, RECEIVED);
    assert_eq!(d.invalid, 0, "{d:?}");
    assert_eq!(d.fields_ignored, 0, "{d:?}");
    assert_eq!(d.events.len(), elements, "every record kept");
    // platform.end twice, platform.fault twice (one of them not even an object).
    assert_eq!(d.skipped, 4, "{d:?}");
    let Record::InitStart(init) = &d.events[0].record else {
        panic!("{d:?}")
    };
    assert_eq!(init.function_name.as_deref(), Some("orders"));
    let tenants: Vec<Option<&str>> = d
        .events
        .iter()
        .filter(|e| matches!(e.record, Record::Start(_) | Record::RuntimeDone(_)))
        .map(|e| e.record.tenant_id().map(TenantId::as_str))
        .collect();
    // A tenant's invocation, then one of a function without tenant isolation (null, "").
    assert_eq!(tenants, [Some("blue"), Some("blue"), None, None]);
    let Record::RuntimeDone(done) = &d.events[4].record else {
        panic!("{d:?}")
    };
    assert_eq!(done.spans.len(), 3);
    assert_eq!(done.metrics.as_ref().unwrap().produced_bytes, Some(42));
    let reports: Vec<(Option<Status>, Option<&str>, f64)> = d
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::Report(r) => Some((
                r.status.clone(),
                r.error_type.as_deref(),
                r.metrics.duration_ms,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports,
        [
            (Some(Status::Success), None, 102.875),
            (Some(Status::Timeout), Some("Sandbox.Timedout"), 3000.125),
            (Some(Status::Error), Some("Runtime.ExitError"), 12.5),
        ]
    );
}

#[test]
fn one_bad_or_unknown_record_does_not_reject_the_batch() {
    let d = decode(&fixture("mixed_unknown_and_bad.json"), RECEIVED);
    // Only the runtimeDone without a requestId is lost; the start whose time is unreadable
    // is kept, timed when it arrived.
    assert_eq!(d.invalid, 1, "{d:?}");
    assert_eq!(d.fields_ignored, 1, "{d:?}");
    assert!(d.events.iter().any(
        |e| matches!(&e.record, Record::Start(s) if s.request_id == "r-1") && e.time == RECEIVED
    ));
    assert!(
        d.events
            .iter()
            .any(|e| matches!(&e.record, Record::RestoreStart(_)))
    );
    assert!(
        d.events
            .iter()
            .any(|e| matches!(&e.record, Record::Other(o) if o == "platform.someFutureEvent"))
    );
    assert!(
        d.events
            .iter()
            .any(|e| matches!(&e.record, Record::RuntimeDone(r) if r.request_id == "r-2"))
    );
}

#[test]
fn a_delivery_costs_what_lambda_could_send_whatever_it_holds() {
    // More records than Lambda's largest maxItems: the excess counts as invalid.
    let one =
        r#"{"time":"2022-10-12T00:00:15.064Z","type":"platform.someFutureEvent","record":{}}"#;
    let many = format!("[{}]", vec![one; 10_001].join(","));
    let d = decode(many.as_bytes(), RECEIVED);
    assert_eq!((d.events.len(), d.invalid), (10_000, 1));
    // A record of far more values than Lambda's is not read (its fields would be a tree of
    // them); a long string is one value.
    let mut huge = String::from(
        r#"[{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{"requestId":"r-1","x":["#,
    );
    huge.push_str(&"0,".repeat(40_000));
    huge.push_str(r#"0]}},{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{"requestId":"r-2","s":"[,{"#);
    huge.push_str(&"[,{\\\"".repeat(40_000));
    huge.push_str(r#""}}]"#);
    let d = decode(huge.as_bytes(), RECEIVED);
    assert_eq!(d.invalid, 1, "{d:?}");
    assert!(
        matches!(&d.events[..], [e] if matches!(&e.record, Record::Start(s) if s.request_id == "r-2")),
        "{d:?}"
    );
    // Millions of values: counted, never collected first.
    let mut zeros = String::from("[");
    zeros.push_str(&"0,".repeat(1_000_000));
    zeros.push_str("0]");
    let d = decode(zeros.as_bytes(), RECEIVED);
    assert_eq!((d.events.len(), d.invalid), (0, 1_000_001));
    // Still one invalid element for a body that is not an array, or is cut short.
    assert_eq!(
        decode(&many.as_bytes()[..many.len() - 1], RECEIVED).invalid,
        1
    );
}

#[test]
fn a_body_that_is_not_an_array_is_one_invalid_element() {
    assert_eq!(decode(b"{}", RECEIVED).invalid, 1);
    assert_eq!(decode(b"garbage", RECEIVED).invalid, 1);
    assert_eq!(decode(b"[]", RECEIVED), Decoded::default());
}

#[test]
fn times_are_epoch_seconds() {
    let t = EpochSeconds::parse_rfc3339("2022-10-12T00:00:15.064Z").unwrap();
    assert!((t.0 - 1_665_532_815.064).abs() < 1e-6);
    assert!((t.plus_ms(936.0).0 - 1_665_532_816.0).abs() < 1e-6);
    assert!(EpochSeconds::parse_rfc3339("yesterday").is_none());
    // Found by fuzzing: pre-1970 times gave negative start times.
    assert!(EpochSeconds::parse_rfc3339("1969-12-31T23:59:59Z").is_none());
    assert!(EpochSeconds::parse_rfc3339("1970-01-01T00:00:00Z").is_none());
}

#[test]
fn documented_deviations_keep_the_record_and_lose_only_the_field() {
    let body = r#"[{"time":"2022-10-12T00:00:15.690Z","type":"platform.runtimeDone","record":{
        "requestId":"r","status":"timeout","errorType":null,"spans":null,
        "tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id"},
        "metrics":{"durationMs":"soon","producedBytes":2.0}}},
      {"time":"2022-10-12T00:00:15.695Z","type":"platform.report","record":{
        "requestId":"r","status":"weird","metrics":{"durationMs":3.5,"billedDurationMs":4.0,"maxMemoryUsedMB":2.5},
        "spans":[{"name":"extensionOverhead","start":"2022-10-12T00:00:15.690Z"},
                 {"name":"other","start":"2022-10-12T00:00:15.690Z","durationMs":1.0}]}},
      {"time":"2022-10-12T00:00:14.600Z","type":"platform.initStart","record":{
        "initializationType":"some-future-kind","phase":7,"instanceMaxMemory":-1}}]"#;
    let d = decode(body.as_bytes(), RECEIVED);
    assert_eq!(d.invalid, 0, "{d:?}");
    let Record::RuntimeDone(done) = &d.events[0].record else {
        panic!("{d:?}")
    };
    assert_eq!(done.status, Some(Status::Timeout));
    assert_eq!(done.error_type, None);
    assert!(done.spans.is_empty());
    assert_eq!(
        done.tracing, None,
        "tracing without value is no trace context"
    );
    let metrics = done.metrics.as_ref().unwrap();
    assert_eq!(metrics.produced_bytes, Some(2));
    assert!(metrics.duration_ms.abs() < f64::EPSILON);
    let Record::Report(report) = &d.events[1].record else {
        panic!("{d:?}")
    };
    assert_eq!(report.status, Some(Status::Unknown("weird".into())));
    assert_eq!(report.metrics.billed_duration_ms, Some(4));
    assert_eq!(report.metrics.max_memory_used_mb, None);
    assert_eq!(report.spans.len(), 1);
    assert_eq!(report.spans[0].name, "other");
    let Record::InitStart(init) = &d.events[2].record else {
        panic!("{d:?}")
    };
    assert_eq!(
        init.initialization_type,
        Some(InitializationType::Unknown("some-future-kind".into()))
    );
    assert_eq!(init.phase, None);
    assert_eq!(init.instance_max_memory, None);
    // tracing.value, durationMs, a span, maxMemoryUsedMB, phase, instanceMaxMemory.
    assert_eq!(d.fields_ignored, 6, "{d:?}");
}

#[test]
fn enums_round_trip_their_wire_values() {
    for s in ["success", "error", "failure", "timeout", "other"] {
        assert_eq!(Status::parse(s).as_str(), s);
    }
    for s in [
        "on-demand",
        "provisioned-concurrency",
        "snap-start",
        "lambda-managed-instances",
        "x",
    ] {
        assert_eq!(InitializationType::parse(s).as_str(), s);
    }
    assert!(Status::Error.is_fault() && Status::Failure.is_fault());
    assert!(!Status::Timeout.is_fault() && !Status::parse("x").is_fault());
    assert_eq!(Phase::parse("invoke"), Phase::Invoke);
    assert_eq!(serde_json::json!(Status::Timeout), "timeout");
}

#[test]
fn decode_cost_covers_what_decoding_keeps() {
    let record = |n: usize| {
        format!(
            r#"{{"time":"2023-01-01T00:00:00.030Z","type":"platform.runtimeDone","record":{{"requestId":"r-{n}","status":"success","spans":[{{"name":"responseLatency","start":"2023-01-01T00:00:00.000Z","durationMs":1.0}}]}}}}"#
        )
    };
    let array = |n: usize| format!("[{}]", (0..n).map(record).collect::<Vec<_>>().join(","));
    let tiny = format!("[{}]", vec![r#"{"type":"x"}"#; 20_000].join(","));
    let event = std::mem::size_of::<Event>();
    // (body, records it may hold at most: list slots, as the list grows by doubling)
    let cases: [(String, usize); 6] = [
        ("[]".to_owned(), 4),
        (array(1), 4),
        (array(5), 8),
        (array(100), 128),
        // At most MAX_RECORDS_PER_DELIVERY are decoded, however many there are.
        (tiny, MAX_RECORDS_PER_DELIVERY.next_power_of_two()),
        ("not json".to_owned(), 4),
    ];
    for (body, slots) in cases {
        let cost = decode_cost(body.as_bytes());
        assert_eq!(cost.records, slots * event + body.len(), "{body:.40}");
        let decoded = decode(body.as_bytes(), EpochSeconds(0.0));
        // What the decoded records hold is inside it: their list, and strings from the body.
        assert!(
            decoded.events.capacity() <= slots,
            "{} > {slots}: {body:.40}",
            decoded.events.capacity()
        );
    }
    // The record being read: its text, and a map of its values.
    let one = array(1);
    let largest = one.len() - 1;
    assert_eq!(
        decode_cost(one.as_bytes()).scratch,
        largest + (largest / 2 + 1) * VALUE_BYTES
    );
}
