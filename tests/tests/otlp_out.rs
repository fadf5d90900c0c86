//! OpenTelemetry out, end to end, with `XRAY_EXTENSION_SPAN_DESTINATION=otlp`: AWS's
//! OpenTelemetry SDK for Python (`aws-opentelemetry-distro`, its `OTLPUdpSpanExporter`) sends
//! `T1S`/`T1U` documents in the daemon protocol; the sampled spans must reach the sink's
//! `/v1/traces` (`SigV4` recomputed there with the AWS SDK's signer, gzip inflated, decoded with
//! prost) before the invocation is released with `end`, in requests within the endpoint's limits,
//! while `T1U` documents and our own subsegments stay on `PutTraceSegments`.

#![expect(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use common::{
    EXTENSION, Harness, Options, counters, extension_log, invoke_traced, named, python_function,
    strings,
};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::sink::otlp::ReceivedSpan;
use xray_extension_tests::sink::traces::{MAX_REQUEST_BYTES, MAX_SPANS_PER_REQUEST, TracesCall};
use xray_extension_tests::sink::{Fault, FaultPlan, Operation, SinkCall, XraySink};
use xray_extension_tests::trace::TraceHeader;

/// The service name the ADOT function's spans carry.
const ADOT_SERVICE: &str = "orders-otel";
/// The service name the OTLP/HTTP function's spans carry.
const HTTP_SERVICE: &str = "orders-otlp-http";

/// The spans of `trace` the sink's `/v1/traces` took.
fn trace_spans(sink: &XraySink, trace: &TraceHeader) -> Vec<ReceivedSpan> {
    sink.spans()
        .into_iter()
        .filter(|s| s.trace_id == trace.root)
        .collect()
}

fn traces_calls(sink: &XraySink) -> Vec<SinkCall> {
    sink.calls()
        .into_iter()
        .filter(|c| c.operation == Operation::OtlpTraces)
        .collect()
}

async fn otlp_harness() -> Harness {
    Harness::start(Options {
        function: Some(python_function("python_otel", "adot_app")),
        wrapper: true,
        ..Options::strategy("end").env("XRAY_EXTENSION_SPAN_DESTINATION", "otlp")
    })
    .await
}

/// Invokes with `event` under a new sampled trace; checks every span the SDK made reached
/// `/v1/traces` from `service` before the extension released the invocation, and none went as a
/// `T1S` document. Returns the span ids.
async fn invoke_sampled(h: &mut Harness, label: &str, service: &str, event: Value) -> Vec<String> {
    let (trace, inv) = invoke_traced(&mut h.lambda, event).await;
    assert_eq!(
        inv.status,
        InvocationStatus::Success,
        "{label}: {:?}",
        inv.error
    );
    let released = inv.extension_next(EXTENSION).expect("released");
    let response = inv.response_json().expect("a JSON response");
    let ids = strings(&response, "span_ids");
    // Already there when the invocation is released: no wait.
    let spans = trace_spans(&h.sink, &trace);
    for id in &ids {
        let span = spans.iter().find(|s| &s.span_id == id);
        let span = span.unwrap_or_else(|| panic!("{label}: span {id} missing"));
        assert_eq!(span.service_name.as_deref(), Some(service), "{label}");
    }
    assert_eq!(spans.len(), ids.len(), "{label}: each span once");
    let handler = spans
        .iter()
        .find(|s| s.span_id == response["handler_span_id"].as_str().unwrap_or_default())
        .expect("handler span");
    assert_eq!(handler.parent_span_id.as_deref(), trace.parent.as_deref());
    for call in traces_calls(&h.sink) {
        assert!(call.at <= released, "{label}: a request after the release");
    }
    // Our own subsegments stay on PutTraceSegments, under Lambda's Parent.
    let docs = h.sink.documents();
    let runtime = named(&docs, &trace.root, "Runtime");
    assert_eq!(runtime.len(), 1, "{label}");
    ids
}

fn t1s_documents(sink: &XraySink) -> usize {
    sink.put_calls()
        .iter()
        .flat_map(|c| c.documents.iter())
        .filter(|d| d.raw.starts_with("T1S"))
        .count()
}

#[tokio::test]
async fn sampled_adot_spans_go_whole_to_the_otlp_endpoint_signed_and_gzipped_before_release() {
    let mut h = otlp_harness().await;
    invoke_sampled(&mut h, "cold", ADOT_SERVICE, json!({"children": 2})).await;
    // 2,000 spans: 200 datagrams of 10, all in the invocation's requests.
    let ids = invoke_sampled(
        &mut h,
        "2,000 spans",
        ADOT_SERVICE,
        json!({"children": 1999}),
    )
    .await;
    assert_eq!(ids.len(), 2000);
    let calls = traces_calls(&h.sink);
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.status, 200, "{:?}", call.response);
        let t = call.traces.as_ref().expect("checked");
        assert!(t.gzip && t.wire_bytes < t.raw_bytes, "{t:?}");
        assert!(t.raw_bytes <= MAX_REQUEST_BYTES && t.spans <= MAX_SPANS_PER_REQUEST);
        assert_eq!(t.scope, Some(("us-east-1".into(), "xray".into())));
    }
    assert_eq!(
        t1s_documents(&h.sink),
        0,
        "no sampled span as a T1S document"
    );
    // Unsampled spans stay T1U documents on PutTraceSegments.
    let trace = TraceHeader::sampled();
    let before = traces_calls(&h.sink).len();
    let inv = h
        .lambda
        .invoke(Invoke::new(json!({"children": 3, "unsampled": true})).traced(trace.clone()))
        .await
        .expect("invoke");
    let bodies = strings(&inv.response_json().expect("json"), "bodies");
    assert!(!bodies.is_empty());
    let submitted: Vec<String> = h
        .sink
        .put_calls()
        .iter()
        .flat_map(|c| c.documents.iter().map(|d| d.raw.clone()))
        .collect();
    for body in &bodies {
        assert!(body.starts_with("T1U"));
        assert!(
            submitted.contains(body),
            "a T1U body not on PutTraceSegments"
        );
    }
    assert_eq!(traces_calls(&h.sink).len(), before);
    h.lambda.shutdown().await.expect("shutdown");
    let counters = counters(&h.lambda).expect("counters");
    assert_eq!(counters.get("rejected"), Some(&0), "{counters:?}");
    assert_eq!(
        counters.get("otlp_spans_rejected"),
        Some(&0),
        "{counters:?}"
    );
    // The endpoint's counters say what the sink took: 3 + 2,000 spans, every request, its bytes.
    let calls = traces_calls(&h.sink);
    let sum = |f: fn(&TracesCall) -> usize| -> u64 {
        calls
            .iter()
            .filter_map(|c| c.traces.as_ref())
            .map(f)
            .sum::<usize>() as u64
    };
    assert_eq!(counters.get("otlp_out_spans"), Some(&2003), "{counters:?}");
    assert_eq!(counters.get("otlp_out_spans"), Some(&sum(|t| t.spans)));
    assert_eq!(
        counters.get("otlp_out_requests"),
        Some(&(calls.len() as u64))
    );
    assert_eq!(
        counters.get("otlp_out_raw_bytes"),
        Some(&sum(|t| t.raw_bytes))
    );
    assert_eq!(
        counters.get("otlp_out_wire_bytes"),
        Some(&sum(|t| t.wire_bytes))
    );
}

#[tokio::test]
async fn injected_503s_at_the_otlp_endpoint_lose_nothing() {
    let mut h = otlp_harness().await;
    invoke_sampled(&mut h, "warm-up", ADOT_SERVICE, json!({"children": 1})).await;
    h.sink.set_fault_plan(FaultPlan::from_fn(|i| {
        (i % 3 != 2).then(|| Fault::Status {
            status: 503,
            error_type: "ServiceUnavailableException".into(),
        })
    }));
    let before = traces_calls(&h.sink).len();
    invoke_sampled(
        &mut h,
        "after two 503s",
        ADOT_SERVICE,
        json!({"children": 30}),
    )
    .await;
    let refused = traces_calls(&h.sink)[before..]
        .iter()
        .filter(|c| c.status == 503)
        .count();
    assert!(refused >= 2, "the endpoint refused {refused} calls");
}

/// A harness whose function is traced with Python's plain OpenTelemetry SDK, exporting with
/// `opentelemetry-exporter-otlp-proto-http` to the extension's OTLP/HTTP receiver.
async fn otlp_http_harness() -> Harness {
    let port = xray_extension_tests::net::free_tcp_port().expect("tcp port");
    let function = python_function("python_otel", "http_app").env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    Harness::start(Options {
        function: Some(function),
        ..Options::strategy("end")
            .env("XRAY_EXTENSION_SPAN_DESTINATION", "otlp")
            .otlp_port(port)
    })
    .await
}

#[tokio::test]
async fn python_otlp_http_spans_go_to_the_otlp_endpoint_through_the_receiver() {
    let mut h = otlp_http_harness().await;
    for (i, event) in [
        json!({"children": 5}),
        json!({"children": 5, "compression": "gzip"}),
    ]
    .into_iter()
    .enumerate()
    {
        let label = format!("request {i}");
        let ids = invoke_sampled(&mut h, &label, HTTP_SERVICE, event).await;
        assert!(!ids.is_empty(), "{label}");
        for call in traces_calls(&h.sink) {
            assert_eq!(call.status, 200, "{label}");
        }
    }
    assert!(!traces_calls(&h.sink).is_empty());
    assert_eq!(
        t1s_documents(&h.sink),
        0,
        "no sampled span as a T1S document"
    );
}

/// `n` characters of the ASCII letters, repeated: what `handler_spans.padding_text` makes.
fn padding_text(n: usize) -> String {
    ('a'..='z').chain('A'..='Z').cycle().take(n).collect()
}

#[tokio::test]
async fn a_150_kb_span_reaches_the_otlp_endpoint_whole_and_a_250_kb_one_is_refused_alone() {
    let mut h = otlp_http_harness().await;
    // One request: the handler span, a 150 KB span, a 250 KB span (over the endpoint's 200 KB),
    // and a small one.
    let event = json!({"children": 3, "paddings": [150_000, 250_000, 10]});
    let (trace, inv) = invoke_traced(&mut h.lambda, event).await;
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    let released = inv.extension_next(EXTENSION).expect("released");
    let ids = strings(&inv.response_json().expect("json"), "span_ids");
    assert_eq!(ids.len(), 4);
    // Already there when the invocation is released: no wait.
    let spans = trace_spans(&h.sink, &trace);
    let found = |id: &String| spans.iter().filter(|s| &s.span_id == id).count();
    assert_eq!(found(&ids[0]), 1, "the handler span");
    assert_eq!(found(&ids[1]), 1, "the 150 KB span");
    assert_eq!(found(&ids[2]), 0, "the 250 KB span is refused");
    assert_eq!(found(&ids[3]), 1, "its small sibling");
    assert_eq!(spans.len(), 3);
    let big = spans
        .iter()
        .find(|s| s.span_id == ids[1])
        .expect("150 KB span");
    let padding = big.attribute("padding").expect("padding attribute");
    assert_eq!(padding.len(), 150_000);
    assert!(
        padding == padding_text(150_000),
        "the attribute's bytes changed"
    );
    let small = spans
        .iter()
        .find(|s| s.span_id == ids[3])
        .expect("small span");
    assert_eq!(small.attribute("padding"), Some(padding_text(10).as_str()));
    let calls = traces_calls(&h.sink);
    assert!(!calls.is_empty());
    for call in &calls {
        assert!(call.at <= released, "a request after the release");
        assert_eq!(call.status, 200, "{:?}", call.response);
    }
    assert_eq!(
        t1s_documents(&h.sink),
        0,
        "no sampled span as a T1S document"
    );
    h.lambda.shutdown().await.expect("shutdown");
    let counters = counters(&h.lambda).expect("counters");
    assert_eq!(
        counters.get("otlp_spans_rejected"),
        Some(&1),
        "{counters:?}"
    );
    assert_eq!(counters.get("otlp_out_spans"), Some(&3), "{counters:?}");
}

/// The endpoint refuses the credentials (403 `AccessDeniedException`, then 401): nothing is
/// wrong with the spans, so they wait for the next flush point, as documents do for
/// `PutTraceSegments`, and each refusal is logged once however many flushes it refuses.
#[tokio::test]
async fn spans_refused_for_credentials_are_kept_logged_once_and_delivered_once_accepted() {
    let mut h = otlp_http_harness().await;
    invoke_sampled(&mut h, "warm-up", HTTP_SERVICE, json!({"children": 1})).await;
    let refusals = [
        (403, "AccessDeniedException"),
        (403, "AccessDeniedException"),
        (401, "UnrecognizedClientException"),
        (401, "UnrecognizedClientException"),
    ];
    let mut kept = Vec::new();
    for (status, code) in refusals {
        // Every /v1/traces call of this invocation's flush is refused; PutTraceSegments is not.
        h.sink
            .set_traces_fault_plan(Some(FaultPlan::always(Fault::Status {
                status,
                error_type: code.to_owned(),
            })));
        let (trace, inv) = invoke_traced(&mut h.lambda, json!({"children": 2})).await;
        assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
        let ids = strings(&inv.response_json().expect("json"), "span_ids");
        assert_eq!(ids.len(), 3);
        assert!(trace_spans(&h.sink, &trace).is_empty(), "{code}: taken");
        let refused = traces_calls(&h.sink)
            .iter()
            .filter(|c| c.status == status)
            .count();
        assert!(refused > 0, "{code}: no call refused");
        // Our own subsegments still reach PutTraceSegments.
        assert_eq!(named(&h.sink.documents(), &trace.root, "Runtime").len(), 1);
        kept.push((code, trace, ids));
    }
    h.sink.set_traces_fault_plan(None);
    invoke_sampled(
        &mut h,
        "accepted again",
        HTTP_SERVICE,
        json!({"children": 1}),
    )
    .await;
    // Delivered at the next flush point (or, on a loaded machine where that send is cut by the
    // flush timeout, at the shutdown's): never dropped.
    h.lambda.shutdown().await.expect("shutdown");
    for (code, trace, ids) in &kept {
        let arrived: Vec<String> = trace_spans(&h.sink, trace)
            .into_iter()
            .map(|s| s.span_id)
            .collect();
        for id in ids {
            assert!(arrived.contains(id), "{code}: span {id} lost");
        }
        assert_eq!(arrived.len(), ids.len(), "{code}: each span once");
    }
    let c = counters(&h.lambda).expect("counters");
    assert_eq!(c.get("unprocessed"), Some(&0), "{c:?}");
    assert_eq!(c.get("otlp_spans_rejected"), Some(&0), "{c:?}");
    let log = extension_log(&h.lambda);
    let lines =
        |needle: &str| -> Vec<&String> { log.iter().filter(|l| l.contains(needle)).collect() };
    let denied = lines("xray:PutTraceSegments");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0].contains("ERROR") && denied[0].contains("OTLP"),
        "{denied:?}"
    );
    let credentials = lines("UnrecognizedClientException");
    assert_eq!(credentials.len(), 1, "{credentials:?}");
}
