//! OpenTelemetry in, end to end: AWS's OpenTelemetry SDK for Python (`aws-opentelemetry-distro`,
//! its `OTLPUdpSpanExporter`, run by AWS's runtime interface client through the layer's wrapper)
//! sends `T1S`/`T1U` documents in the daemon protocol; every span it made must reach X-Ray under
//! the invocation's trace, in the very bodies the SDK sent, next to our own subsegments. Crafted
//! datagrams cover the ADOT Java SDK's header and bodies that are not OTLP.
//!
//! The embedded sink stands in for X-Ray here: it decodes OTLP documents as the service does.
//! (moto cannot: it lists them as unprocessed `JSONFormatError`, so no moto test sends any.)

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use std::path::PathBuf;
use std::time::Instant;

use base64::Engine as _;
use common::{EXTENSION, Harness, Options, WAIT, counters, named, sent_ids, venv};
use prost::Message as _;
use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    FunctionSpec, Invocation, InvocationStatus, Invoke, Observer,
};
use xray_extension_tests::sink::otlp as pb;
use xray_extension_tests::sink::{ReceivedSpan, XraySink};
use xray_extension_tests::trace::{TraceHeader, new_segment_id, new_uuid};

/// The header the ADOT Java SDK writes (with spaces).
const JAVA_HEADER: &str = r#"{"format": "json", "version": 1}"#;
/// The header the other SDKs write.
const HEADER: &str = r#"{"format":"json","version":1}"#;

fn python_otel_function(module: &str) -> FunctionSpec {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/python_otel");
    FunctionSpec::command([
        venv().join("bin/python").into_os_string(),
        "-m".into(),
        "awslambdaric".into(),
        format!("{module}.handler").into(),
    ])
    .handler(format!("{module}.handler"))
    .env("PYTHONPATH", dir.to_string_lossy())
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    serde_json::from_value(v.get(key).cloned().unwrap_or(Value::Null)).unwrap_or_default()
}

/// The spans of one trace, as X-Ray decoded them.
fn spans_in(sink: &XraySink, root: &str) -> Vec<ReceivedSpan> {
    sink.spans()
        .into_iter()
        .filter(|s| s.trace_id == root)
        .collect()
}

/// Checks one ADOT invocation: every span id reached X-Ray under the trace, every body the SDK
/// sent was forwarded unchanged, and the handler span hangs under Lambda's `Parent`.
fn check_adot_invocation(
    label: &str,
    inv: &Invocation,
    trace: &TraceHeader,
    sink: &XraySink,
    sampled: bool,
) -> Vec<String> {
    assert_eq!(
        inv.status,
        InvocationStatus::Success,
        "{label}: {:?}",
        inv.error
    );
    let response = inv.response_json().expect("a JSON response");
    let ids = strings(&response, "span_ids");
    let bodies = strings(&response, "bodies");
    assert!(!ids.is_empty() && !bodies.is_empty(), "{label}: {response}");
    assert_eq!(
        response["trace_id"]
            .as_str()
            .map(|t| format!("1-{}-{}", &t[..8], &t[8..])),
        Some(trace.root.clone()),
        "{label}: the SDK continued Lambda's trace"
    );
    let spans = spans_in(sink, &trace.root);
    for id in &ids {
        let span = spans.iter().find(|s| &s.span_id == id);
        let span = span.unwrap_or_else(|| panic!("{label}: span {id} missing; got {spans:?}"));
        assert_eq!(span.sampled, sampled, "{label}: {id}");
        assert_eq!(span.service_name.as_deref(), Some("orders-otel"), "{label}");
    }
    let handler = spans
        .iter()
        .find(|s| s.span_id == response["handler_span_id"].as_str().unwrap_or_default())
        .expect("handler span");
    assert_eq!(handler.name, "handler");
    assert_eq!(
        handler.parent_span_id.as_deref(),
        trace.parent.as_deref(),
        "{label}: the handler span's parent is Lambda's Parent"
    );
    // Byte for byte: each body the SDK sent is one document X-Ray was given.
    let submitted: Vec<String> = sink
        .put_calls()
        .iter()
        .flat_map(|c| c.documents.iter().map(|d| d.raw.clone()))
        .collect();
    let prefix = if sampled { "T1S" } else { "T1U" };
    for body in &bodies {
        assert!(
            body.starts_with(prefix),
            "{label}: {}",
            &body[..8.min(body.len())]
        );
        assert!(
            submitted.contains(body),
            "{label}: a body the SDK sent was not forwarded unchanged"
        );
    }
    ids
}

#[tokio::test]
async fn adot_python_udp_spans_reach_xray_byte_for_byte_next_to_our_subsegments() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function: Some(python_otel_function("adot_app")),
        wrapper: true,
        extension_env: vec![("XRAY_EXTENSION_FLUSH_STRATEGY".into(), "end".into())],
        ..Options::default()
    })
    .await;
    // Cold, warm with sixteen spans (two datagrams of at most 10), then unsampled.
    for (i, event) in [
        json!({"children": 2}),
        json!({"children": 15}),
        json!({"children": 3, "unsampled": true}),
    ]
    .into_iter()
    .enumerate()
    {
        let label = format!("invocation {i}");
        let trace = TraceHeader::sampled();
        let sampled = event.get("unsampled").is_none();
        let inv = lambda
            .invoke(Invoke::new(event.clone()).traced(trace.clone()))
            .await
            .expect("invoke");
        let ids = check_adot_invocation(&label, &inv, &trace, &sink, sampled);
        assert_eq!(
            ids.len(),
            1 + usize::try_from(event["children"].as_u64().unwrap_or(0)).unwrap_or(0),
            "{label}"
        );
        if i == 1 {
            let bodies = strings(&inv.response_json().unwrap_or_default(), "bodies");
            assert_eq!(bodies.len(), 2, "{label}: batches of 10 spans");
        }
        // Our own subsegments attach under the same Parent as the ADOT handler span.
        let docs = sink.documents();
        let runtime = named(&docs, &trace.root, "Runtime");
        assert_eq!(runtime.len(), 1, "{label}");
        assert_eq!(runtime[0].parent_id(), trace.parent.as_deref(), "{label}");
        assert_eq!(
            named(&docs, &trace.root, "Cold Start").len(),
            usize::from(i == 0),
            "{label}"
        );
    }
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(
        report
            .extension(EXTENSION)
            .and_then(xray_extension_tests::emulator::ExtensionExit::exit_code),
        Some(0)
    );
    let counters = counters(&lambda).expect("counters");
    assert_eq!(counters.get("rejected"), Some(&0), "{counters:?}");
    // Nothing X-Ray refused.
    let unprocessed: usize = sink
        .put_calls()
        .iter()
        .flat_map(|c| c.documents.iter())
        .filter(|d| d.rejection.is_some())
        .count();
    assert_eq!(unprocessed, 0);
}

/// A serialized request of `n` spans under `trace`, the first one under Lambda's Parent.
fn crafted_request(trace: &TraceHeader, names: &[&str]) -> (Vec<u8>, Vec<String>) {
    let trace_id = hex_bytes(&trace.root.replace("1-", "").replace('-', ""));
    let parent = hex_bytes(trace.parent.as_deref().expect("a parent"));
    let mut ids = Vec::new();
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    )
    .expect("nanoseconds fit");
    let spans = names
        .iter()
        .map(|name| {
            let id = new_segment_id();
            ids.push(id.clone());
            pb::Span {
                trace_id: trace_id.clone(),
                span_id: hex_bytes(&id),
                parent_span_id: parent.clone(),
                name: (*name).to_owned(),
                kind: 1,
                start_time_unix_nano: now - 5_000_000,
                end_time_unix_nano: now,
                attributes: Vec::new(),
            }
        })
        .collect();
    let request = pb::ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            resource: Some(pb::Resource {
                attributes: vec![pb::KeyValue {
                    key: "service.name".into(),
                    value: Some(pb::AnyValue {
                        string_value: Some("crafted".into()),
                        ..pb::AnyValue::default()
                    }),
                }],
            }),
            scope_spans: vec![pb::ScopeSpans {
                scope: Some(pb::InstrumentationScope {
                    name: "crafted".into(),
                    version: "1".into(),
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (request.encode_to_vec(), ids)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `datagrams` once the platform reports the invocation started; returns when sent.
async fn send_during(
    observer: &Observer,
    request_id: &str,
    datagrams: &[&String],
    port: u16,
) -> Instant {
    observer
        .wait_for_telemetry("platform.start", WAIT, |log| {
            log.iter().any(|e| {
                e.event_type == "platform.start" && e.record["requestId"] == json!(request_id)
            })
        })
        .await
        .expect("the invocation started");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for datagram in datagrams {
        socket
            .send_to(datagram.as_bytes(), ("127.0.0.1", port))
            .await
            .expect("send");
    }
    Instant::now()
}

#[tokio::test]
async fn java_style_headers_work_and_garbage_otlp_bodies_are_rejected_with_nothing_else_lost() {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options::strategy("end")).await;
    let observer = lambda.observer();
    let trace = TraceHeader::sampled();
    let request_id = new_uuid();

    let (java, java_ids) = crafted_request(&trace, &["java-handler", "java-child"]);
    let (python, python_ids) = crafted_request(&trace, &["python-style"]);
    let (unsampled, unsampled_ids) = crafted_request(&trace, &["unsampled"]);
    let (mut short_id, _) = crafted_request(&trace, &["short-id"]);
    // Cut the 8-byte span id field (`12 08 …`) to 4 bytes: still protobuf, not a valid span.
    let at = short_id
        .windows(2)
        .position(|w| w == [0x12, 0x08])
        .expect("span id field");
    short_id[at + 1] = 4;
    short_id.drain(at + 6..at + 10);
    let good = [
        format!("{JAVA_HEADER}\nT1S{}", b64(&java)),
        format!("{HEADER}\nT1S{}", b64(&python)),
        format!("{HEADER}\nT1U{}", b64(&unsampled)),
    ];
    let garbage = [
        format!("{HEADER}\nT1S!!!! not base64"),
        format!("{HEADER}\nT1S{}", b64(b"\x0a\xff\xff\xff\xff\x0f garbage")),
        format!("{JAVA_HEADER}\nT1U{}", b64(&short_id)),
        format!("{HEADER}\nT1S{}", &b64(&python)[1..]),
    ];

    let invoke = Invoke::new(json!({"subsegments": 2, "sleep_ms": 400}))
        .traced(trace.clone())
        .request_id(request_id.clone());
    let datagrams: Vec<&String> = garbage.iter().chain(&good).collect();
    let sender = send_during(&observer, &request_id, &datagrams, udp_port);
    let (inv, sent_at) = tokio::join!(lambda.invoke(invoke), sender);
    let inv = inv.expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    assert!(
        sent_at < inv.response_at.expect("response"),
        "the datagrams were sent during the invocation"
    );
    let function_ids = sent_ids(&inv);
    assert_eq!(function_ids.len(), 2);

    let expected: Vec<&String> = java_ids
        .iter()
        .chain(&python_ids)
        .chain(&unsampled_ids)
        .collect();
    sink.wait_for("every crafted span", WAIT, |r| {
        expected
            .iter()
            .all(|id| r.spans().iter().any(|s| &&s.span_id == id))
    })
    .await
    .expect("crafted spans in X-Ray");
    let spans = spans_in(&sink, &trace.root);
    for id in &unsampled_ids {
        assert!(spans.iter().any(|s| &s.span_id == id && !s.sampled));
    }
    // The function's own subsegments, and ours, are all there.
    let docs = sink.documents();
    for id in &function_ids {
        assert!(docs.iter().any(|d| &d.id == id), "subsegment {id} lost");
    }
    assert_eq!(named(&docs, &trace.root, "Runtime").len(), 1);
    // Nothing but the good bodies went out as OTLP documents.
    let otlp_sent: Vec<String> = sink
        .put_calls()
        .iter()
        .flat_map(|c| c.documents.iter().map(|d| d.raw.clone()))
        .filter(|raw| raw.starts_with("T1"))
        .collect();
    let good_bodies: Vec<&str> = good
        .iter()
        .map(|d| d.split_once('\n').expect("newline").1)
        .collect();
    assert_eq!(otlp_sent.len(), good_bodies.len(), "{otlp_sent:?}");
    for body in good_bodies {
        assert!(otlp_sent.iter().any(|s| s == body));
    }

    lambda.shutdown().await.expect("shutdown");
    let counters = counters(&lambda).expect("counters");
    assert_eq!(
        counters.get("rejected"),
        Some(&(garbage.len() as u64)),
        "{counters:?}"
    );
    let log = common::extension_log(&lambda);
    assert!(
        log.iter()
            .any(|l| l.contains("datagram rejected") && l.contains("otlp_")),
        "a rejection line names the OTLP reason: {log:?}"
    );
    // Rate-limited: one line for the burst, the rest counted as suppressed.
    assert!(
        log.iter()
            .filter(|l| l.contains("datagram rejected"))
            .count()
            <= 2,
        "{log:?}"
    );
}

/// One traced ADOT invocation through our wrapper with `XRAY_EXTENSION_NEXT_WRAPPER` set to
/// `next_wrapper`; returns the function's response.
async fn through_next_wrapper(next_wrapper: &str) -> Value {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options {
        function: Some(
            python_otel_function("adot_app").env("XRAY_EXTENSION_NEXT_WRAPPER", next_wrapper),
        ),
        wrapper: true,
        extension_env: vec![("XRAY_EXTENSION_FLUSH_STRATEGY".into(), "end".into())],
        ..Options::default()
    })
    .await;
    let trace = TraceHeader::sampled();
    let inv = lambda
        .invoke(Invoke::new(json!({"children": 1})).traced(trace.clone()))
        .await
        .expect("invoke");
    check_adot_invocation(next_wrapper, &inv, &trace, &sink, true);
    let response = inv.response_json().expect("response");
    assert_eq!(
        response["daemon_address"],
        json!(format!("127.0.0.1:{udp_port}"))
    );
    assert_eq!(
        response["otel_variables"],
        json!([]),
        "the wrapper sets no OTEL_* variable"
    );
    lambda.shutdown().await.expect("shutdown");
    response
}

#[tokio::test]
async fn the_wrapper_hands_over_to_the_next_wrapper_after_setting_the_daemon_address() {
    let next = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/python_otel/next-wrapper");
    let response = through_next_wrapper(&next.to_string_lossy()).await;
    assert_eq!(
        response["next_wrapper_saw"], response["daemon_address"],
        "the next wrapper ran, with the daemon address already set"
    );
}

#[tokio::test]
async fn a_next_wrapper_that_cannot_run_is_skipped_and_the_function_still_starts() {
    let response = through_next_wrapper("/nonexistent/otel-instrument").await;
    assert_eq!(response["next_wrapper_saw"], Value::Null);
}
