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
use common::{
    EXTENSION, Harness, Options, WAIT, counters, invocation_started, invoke_traced, named,
    python_function, sent_ids, strings,
};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    Emulator, FunctionSpec, Invocation, InvocationStatus, Invoke, Observer,
};
use xray_extension_tests::sink::otlp as pb;
use xray_extension_tests::sink::{Fault, FaultPlan, ReceivedSpan, XraySink};
use xray_extension_tests::trace::{TraceHeader, new_segment_id, new_uuid};

/// The header the ADOT Java SDK writes (with spaces).
const JAVA_HEADER: &str = r#"{"format": "json", "version": 1}"#;
/// The header the other SDKs write.
const HEADER: &str = r#"{"format":"json","version":1}"#;

fn python_otel_function(module: &str) -> FunctionSpec {
    python_function("python_otel", module)
}

/// How many documents X-Ray refused (answered as unprocessed).
fn refused_documents(sink: &XraySink) -> usize {
    sink.put_calls()
        .iter()
        .flat_map(|c| c.documents.iter())
        .filter(|d| d.rejection.is_some())
        .count()
}

/// The spans of one trace, as X-Ray decoded them.
fn spans_in(sink: &XraySink, root: &str) -> Vec<ReceivedSpan> {
    sink.spans()
        .into_iter()
        .filter(|s| s.trace_id == root)
        .collect()
}

/// Checks one invocation of an OpenTelemetry function: it succeeded, and every span id it
/// reports reached X-Ray under the trace, from `service`, sampled or not as `sampled`, its
/// handler span under Lambda's `Parent`. Returns the function's response, the span ids and the
/// trace's spans.
fn check_spans(
    label: &str,
    inv: &Invocation,
    trace: &TraceHeader,
    sink: &XraySink,
    service: &str,
    sampled: bool,
) -> (Value, Vec<String>, Vec<ReceivedSpan>) {
    assert_eq!(
        inv.status,
        InvocationStatus::Success,
        "{label}: {:?}",
        inv.error
    );
    let response = inv.response_json().expect("a JSON response");
    let ids = strings(&response, "span_ids");
    assert!(!ids.is_empty(), "{label}: {response}");
    let spans = spans_in(sink, &trace.root);
    for id in &ids {
        let span = spans.iter().find(|s| &s.span_id == id);
        let span = span.unwrap_or_else(|| panic!("{label}: span {id} missing; got {spans:?}"));
        assert_eq!(span.sampled, sampled, "{label}: {id}");
        assert_eq!(span.service_name.as_deref(), Some(service), "{label}");
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
    (response, ids, spans)
}

/// Checks one ADOT invocation ([`check_spans`]); the SDK continued Lambda's trace and every body
/// it sent was forwarded unchanged.
fn check_adot_invocation(
    label: &str,
    inv: &Invocation,
    trace: &TraceHeader,
    sink: &XraySink,
    sampled: bool,
) -> Vec<String> {
    let (response, ids, _) = check_spans(label, inv, trace, sink, "orders-otel", sampled);
    let bodies = strings(&response, "bodies");
    assert!(!bodies.is_empty(), "{label}: {response}");
    assert_eq!(
        response["trace_id"]
            .as_str()
            .map(|t| format!("1-{}-{}", &t[..8], &t[8..])),
        Some(trace.root.clone()),
        "{label}: the SDK continued Lambda's trace"
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
        ..Options::strategy("end")
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
        let sampled = event.get("unsampled").is_none();
        let (trace, inv) = invoke_traced(&mut lambda, event.clone()).await;
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
    assert_eq!(refused_documents(&sink), 0);
}

/// A serialized request of spans named `names` in `trace`, each under Lambda's Parent, and
/// their ids.
fn crafted_request(trace: &TraceHeader, names: &[impl AsRef<str>]) -> (Vec<u8>, Vec<String>) {
    let parent = trace.parent.clone().expect("a parent");
    let ids: Vec<String> = names.iter().map(|_| new_segment_id()).collect();
    let specs: Vec<pb::SpanSpec<'_>> = names
        .iter()
        .zip(&ids)
        .map(|(name, id)| pb::SpanSpec {
            name: name.as_ref(),
            span_id: id,
            parent_span_id: &parent,
            times: None,
        })
        .collect();
    (pb::build_request(&trace.root, "crafted", &specs), ids)
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
    invocation_started(observer, request_id).await;
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
        ..Options::strategy("end")
    })
    .await;
    let (trace, inv) = invoke_traced(&mut lambda, json!({"children": 1})).await;
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

/// Runs `function` (a plain OpenTelemetry SDK with its OTLP/HTTP exporter pointed at the
/// receiver) for each event; every span id it made must reach X-Ray under the invocation's
/// trace, in `T1S` documents, the handler span under Lambda's `Parent`.
async fn otlp_http_scenario(
    label: &str,
    function: FunctionSpec,
    service: &str,
    events: &[Value],
    expected_requests: &[(&str, bool)],
) {
    let port = xray_extension_tests::net::free_tcp_port().expect("tcp port");
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function: Some(function.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )),
        ..Options::strategy("end").otlp_port(port)
    })
    .await;
    for (i, event) in events.iter().enumerate() {
        let label = format!("{label} {i}");
        let (trace, inv) = invoke_traced(&mut lambda, event.clone()).await;
        // Spans arrive during the invocation: the flush at its end carries them.
        let (_, _, spans) = check_spans(&label, &inv, &trace, &sink, service, true);
        if event.get("padding").is_some() {
            let documents: std::collections::HashSet<&str> =
                spans.iter().map(|s| s.document.as_str()).collect();
            assert!(documents.len() >= 2, "{label}: split into 64 KB documents");
        }
        let docs = sink.documents();
        assert_eq!(named(&docs, &trace.root, "Runtime").len(), 1, "{label}");
    }
    let log = common::extension_log(&lambda);
    for (encoding, gzip) in expected_requests {
        let seen = format!("encoding={encoding} gzip={gzip}");
        assert!(
            log.iter()
                .any(|l| l.contains("OTLP request") && l.contains(&seen)),
            "{label}: no request with {seen}: {log:?}"
        );
    }
    lambda.shutdown().await.expect("shutdown");
    assert_eq!(
        refused_documents(&sink),
        0,
        "{label}: X-Ray refused nothing"
    );
    let counters = counters(&lambda).expect("counters");
    assert_eq!(counters.get("rejected"), Some(&0), "{counters:?}");
}

#[tokio::test]
async fn python_otlp_http_protobuf_exporter_reaches_xray_through_the_receiver() {
    otlp_http_scenario(
        "python",
        python_otel_function("http_app"),
        "orders-otlp-http",
        &[
            json!({"children": 2}),
            json!({"children": 5, "compression": "gzip"}),
            // About 120 KB of spans: more than one X-Ray document.
            json!({"children": 40, "padding": 3000}),
        ],
        &[("Protobuf", false), ("Protobuf", true)],
    )
    .await;
}

#[tokio::test]
async fn node_otlp_http_json_exporter_reaches_xray_through_the_receiver() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/node");
    assert!(
        dir.join("node_modules/@opentelemetry/exporter-trace-otlp-http")
            .exists(),
        "run `make node-deps` (make test does)"
    );
    let function =
        FunctionSpec::command(["node".into(), dir.join("bootstrap.js").into_os_string()])
            .handler("otel.handler");
    otlp_http_scenario(
        "node",
        function,
        "orders-node-otlp",
        &[json!({"children": 2}), json!({"children": 12})],
        &[("Json", false)],
    )
    .await;
}

#[tokio::test]
async fn a_taken_otlp_port_degrades_the_receiver_never_the_extension() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(
        Options::strategy("end").env("XRAY_EXTENSION_OTLP_ADDRESS", address.clone()),
    )
    .await;
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    let docs = sink.documents();
    for id in sent_ids(&inv) {
        assert!(docs.iter().any(|d| d.id == id), "subsegment {id} lost");
    }
    lambda.shutdown().await.expect("shutdown");
    let errors: Vec<String> = common::extension_log(&lambda)
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("XRAY_EXTENSION_OTLP_ADDRESS") && errors[0].contains(&address),
        "{errors:?}"
    );
}

/// POSTs `request` (protobuf) to the receiver on `port`; the answer's status.
async fn post_spans(port: u16, request: Vec<u8>) -> u16 {
    use xray_extension_tests::http;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let req = http::request(hyper::Method::POST, addr, "/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(http::body(request))
        .expect("request");
    http::send(addr, req, Some(WAIT))
        .await
        .expect("the receiver answers")
        .status
        .as_u16()
}

/// An extension with the smallest export buffer (64 KiB), flushing at the end of each
/// invocation, its receiver on a free port, initialised, against an X-Ray that answers each
/// call after `delay_ms`: the port, the emulator and the sink.
async fn small_buffer_receiver(delay_ms: u64) -> (u16, Emulator, XraySink) {
    let port = xray_extension_tests::net::free_tcp_port().expect("tcp port");
    let mut harness = Harness::start(
        Options::strategy("end")
            .env("XRAY_EXTENSION_BUFFER_BYTES", "65536")
            .otlp_port(port),
    )
    .await;
    harness.lambda.prewarm().await.expect("init");
    harness.sink.set_fault_plan(FaultPlan::always(Fault::Delay(
        std::time::Duration::from_millis(delay_ms),
    )));
    (port, harness.lambda, harness.sink)
}

/// 200 span names, `"{prefix} 000"` on: requests of about 16 KB.
fn span_names(prefix: &str) -> Vec<String> {
    (0..200).map(|i| format!("{prefix} {i:03}")).collect()
}

/// How many of the `accepted` span ids X-Ray never got.
fn lost_spans(sink: &XraySink, accepted: &[String]) -> usize {
    let arrived: std::collections::HashSet<String> =
        sink.spans().into_iter().map(|s| s.span_id).collect();
    accepted.iter().filter(|id| !arrived.contains(*id)).count()
}

#[tokio::test]
async fn a_full_buffer_gets_503_from_the_receiver_and_every_span_it_accepted_reaches_xray() {
    // A 64 KiB export buffer (the smallest) and an X-Ray that answers each call after 200 ms:
    // requests of about 16 KB fill it within a few requests, and a send keeps its documents'
    // room until it settles. What the receiver answered 200 must all arrive; the rest is
    // refused with 503 (the SDK retries it), never accepted and then dropped.
    let (port, mut lambda, sink) = small_buffer_receiver(200).await;
    let names = span_names("GetItem");
    let mut accepted = Vec::new();
    let mut busy = 0;
    for round in 0..3 {
        let trace = TraceHeader::sampled();
        for _ in 0..6 {
            let (request, ids) = crafted_request(&trace, &names);
            match post_spans(port, request).await {
                200 => accepted.extend(ids),
                503 => busy += 1,
                other => panic!("round {round}: unexpected status {other}"),
            }
        }
        // An invocation's flush sends what was accepted.
        let inv = lambda
            .invoke(Invoke::new(json!({"subsegments": 1})).traced(trace))
            .await
            .expect("invoke");
        assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    }
    for _ in 0..3 {
        invoke_traced(&mut lambda, json!({})).await;
    }
    lambda.shutdown().await.expect("shutdown");
    assert!(busy > 0, "the buffer never filled: the test proves nothing");
    assert!(accepted.len() >= 600, "accepted {}", accepted.len());
    let lost = lost_spans(&sink, &accepted);
    assert_eq!(lost, 0, "{lost} of {} accepted spans lost", accepted.len());
    let counters = counters(&lambda).expect("counters");
    assert_eq!(counters.get("spilled"), Some(&0), "{counters:?}");
    assert!(
        counters.get("otlp_busy").is_some_and(|n| *n > 0),
        "{counters:?}"
    );
}

#[tokio::test]
async fn while_the_function_runs_a_full_buffer_makes_requests_wait_for_room_not_fail() {
    // An SDK flushing a burst at the end of its handler: 16 requests of about 16 KB back to back
    // into a 64 KiB buffer, X-Ray answering each call after 50 ms. The invocation is held for
    // its runtimeDone, so a full buffer is sent at once; each request waits for the room that
    // send frees instead of getting a 503 (and its SDK a second's wait before the retry).
    let (port, mut lambda, sink) = small_buffer_receiver(50).await;
    let trace = TraceHeader::sampled();
    let names = span_names("PutItem");
    let burst = async {
        // Once the function is running.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let mut statuses = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..16 {
            let (request, ids) = crafted_request(&trace, &names);
            let status = post_spans(port, request).await;
            if status == 200 {
                accepted.extend(ids);
            }
            statuses.push(status);
        }
        (statuses, accepted)
    };
    let invoke = lambda
        .invoke(Invoke::new(json!({"subsegments": 1, "sleep_ms": 2500})).traced(trace.clone()));
    let (inv, (statuses, accepted)) = tokio::join!(invoke, burst);
    let inv = inv.expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    lambda.shutdown().await.expect("shutdown");
    assert_eq!(statuses, vec![200; 16], "every request found room");
    let lost = lost_spans(&sink, &accepted);
    assert_eq!(lost, 0, "{lost} of {} accepted spans lost", accepted.len());
    let counters = counters(&lambda).expect("counters");
    assert_eq!(counters.get("otlp_busy"), Some(&0), "{counters:?}");
    assert_eq!(counters.get("spilled"), Some(&0), "{counters:?}");
}
