//! A Lambda and its neighbours departing from the friendly model: telemetry records with fields
//! missing, `null` or of another type; local processes holding connections to our telemetry
//! listener; bursts of large documents; X-Ray refusing the credentials. The invocation must still be
//! released within the flush timeout, and nothing valid lost while the buffer has room.

mod common;

use std::sync::Arc;
use std::time::Duration;

use std::time::SystemTime;

use common::{
    Harness, Options, counters, extension_log, flush_timeout, in_trace, invoke_traced, named,
    sent_ids,
};
use serde_json::{Value, json};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::emulator::{Invoke, RecordDeviation};
use xray_extension_tests::net;
use xray_extension_tests::sink::{Fault, FaultPlan};
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

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
    let mut enriched_traces = Vec::new();
    for (what, deviation, enriched) in cases {
        lambda.deviate_telemetry(Some(deviation));
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
        assert!(!inv.timed_out, "{what}: timed out");
        let held = inv.post_runtime.expect("the invocation finished");
        figures.push(format!("{what}: {held:?}"));
        assert!(
            held <= bound,
            "{what}: held {held:?} after runtimeDone (flush timeout {bound:?})"
        );
        if enriched {
            enriched_traces.push((what, trace));
        }
    }
    eprintln!("post-runtime time per deviation: {}", figures.join("; "));
    lambda.deviate_telemetry(None);
    lambda.shutdown().await.expect("shutdown");
    // Only the deviating field is lost: our Runtime subsegment is still sent (checked after the
    // shutdown's flush, so a send cut by a flush timeout on a loaded machine cannot matter).
    let docs = sink.documents();
    for (what, trace) in enriched_traces {
        assert_eq!(
            named(&docs, &trace.root, "Runtime").len(),
            1,
            "{what}: no Runtime subsegment"
        );
    }
}

/// The daemon protocol header the SDKs send.
const HEADER: &str = r#"{"format":"json","version":1}"#;
/// Documents in the burst.
const BURST_DOCUMENTS: usize = 40;
/// Size of each datagram in the burst.
const BURST_DATAGRAM_BYTES: usize = 60_000;

/// A valid subsegment of `trace`, padded so that its datagram is `size` bytes.
fn large_datagram(trace: &TraceHeader, size: usize) -> Vec<u8> {
    let now = epoch_seconds(SystemTime::now());
    let mut doc = json!({
        "id": new_segment_id(), "name": "burst", "start_time": now - 0.001, "end_time": now,
        "type": "subsegment", "trace_id": trace.root, "parent_id": trace.parent,
        "metadata": {"test": {"padding": ""}},
    });
    let base = HEADER.len() + 1 + doc.to_string().len();
    doc["metadata"]["test"]["padding"] = json!("x".repeat(size - base));
    format!("{HEADER}\n{doc}").into_bytes()
}

#[tokio::test]
async fn a_burst_of_large_documents_is_sent_whole_while_the_buffer_has_room() {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options::strategy("end").env(
        "XRAY_EXTENSION_BUFFER_BYTES",
        (16 * 1024 * 1024).to_string(),
    ))
    .await;
    // The extension is up once the first invocation is done.
    lambda
        .invoke(Invoke::new(json!({"subsegments": 0})))
        .await
        .expect("invoke");
    let trace = TraceHeader::sampled();
    let datagrams: Vec<Vec<u8>> = (0..BURST_DOCUMENTS)
        .map(|_| large_datagram(&trace, BURST_DATAGRAM_BYTES))
        .collect();
    // 2.4 MB back to back: within the receive buffer, more than the old 1 MiB hand-off.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for datagram in &datagrams {
        sender
            .send_to(datagram, ("127.0.0.1", udp_port))
            .expect("send");
    }
    lambda
        .invoke(Invoke::new(json!({"subsegments": 0})))
        .await
        .expect("invoke");
    // A send longer than the flush timeout (a debug build, a loaded machine) leaves the rest
    // for the next flush point: the shutdown's, at the latest.
    let report = lambda.shutdown().await.expect("shutdown");
    let delivered = in_trace(&sink.documents(), &trace.root).len();
    let c = counters(&lambda).expect("counters line");
    let count = |k: &str| c.get(k).copied();
    eprintln!(
        "burst of {BURST_DOCUMENTS} x {BURST_DATAGRAM_BYTES} bytes: {delivered} delivered, received={:?} spilled={:?} kernel_dropped={:?} udp_receive_buffer_bytes={:?}",
        count("received"),
        count("spilled"),
        count("kernel_dropped"),
        count("udp_receive_buffer_bytes")
    );
    // The hand-off never spills while the buffer has room. What a small kernel receive buffer
    // (the default rmem_max is 208 KiB) cannot hold is dropped before us, but counted: every
    // document is either delivered or counted as dropped by the kernel, none lost silently.
    assert_eq!(count("spilled"), Some(0), "{c:?}");
    let kernel_dropped = count("kernel_dropped").expect("kernel_dropped");
    assert_eq!(count("received"), Some(delivered as u64), "{c:?}");
    assert_eq!(
        delivered as u64 + kernel_dropped,
        BURST_DOCUMENTS as u64,
        "{c:?}"
    );
    if count("udp_receive_buffer_bytes").is_some_and(|b| b >= 4 * 1024 * 1024) {
        // A receive buffer that holds the whole burst: all of it arrives.
        assert_eq!(delivered, BURST_DOCUMENTS, "{c:?}");
    }
    drop(report);
}

/// X-Ray refuses the call for the caller, not the documents: they wait for the next flush point.
#[tokio::test]
async fn documents_refused_for_credentials_are_kept_for_the_next_flush() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    let refusals = [
        (403, "ExpiredTokenException"),
        (403, "InvalidSignatureException"),
        (400, "RequestExpired"),
        (403, "AccessDeniedException"),
        (403, "AccessDeniedException"),
    ];
    let mut kept = Vec::new();
    for (status, code) in refusals {
        // Every call of this invocation's flush is refused.
        sink.set_fault_plan(FaultPlan::always(Fault::Status {
            status,
            error_type: code.to_owned(),
        }));
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
        let ids = sent_ids(&inv);
        assert_eq!(ids.len(), 2);
        assert!(in_trace(&sink.documents(), &trace.root).is_empty());
        kept.push((code, trace, ids));
    }
    sink.set_fault_plan(FaultPlan::none());
    lambda
        .invoke(Invoke::new(json!({"subsegments": 0})))
        .await
        .expect("invoke");
    // Delivered at the next flush point (or, on a loaded machine where that send is cut by
    // the flush timeout, at the shutdown's): never dropped.
    lambda.shutdown().await.expect("shutdown");
    let docs = sink.documents();
    for (code, trace, ids) in &kept {
        let arrived: Vec<&str> = in_trace(&docs, &trace.root)
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        for id in ids {
            assert!(arrived.contains(&id.as_str()), "{code}: {id} lost");
        }
    }
    let c = counters(&lambda).expect("counters");
    assert_eq!(c.get("unprocessed"), Some(&0), "{c:?}");
    let log = extension_log(&lambda);
    let denied: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("xray:PutTraceSegments"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].contains("ERROR"), "{denied:?}");
    eprintln!(
        "{} documents refused for credentials in {} flushes, all delivered later",
        kept.len() * 2,
        kept.len()
    );
}

/// Local connections opened to the telemetry listener and left idle.
const IDLE_CONNECTIONS: usize = 12;

#[tokio::test]
async fn idle_local_connections_to_the_listener_do_not_hold_the_function() {
    let telemetry_port = net::free_tcp_port().expect("tcp port");
    let Harness { mut lambda, .. } = Harness::start(Options {
        function_timeout: FUNCTION_TIMEOUT,
        ..Options::strategy("end").env("XRAY_EXTENSION_TELEMETRY_PORT", telemetry_port.to_string())
    })
    .await;
    lambda
        .invoke(Invoke::new(json!({"subsegments": 0})))
        .await
        .expect("invoke");
    let mut idle = Vec::new();
    for n in 0..IDLE_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", telemetry_port))
            .await
            .expect("connect");
        if n % 2 == 0 {
            // Half a request head, never finished.
            tokio::io::AsyncWriteExt::write_all(&mut s, b"POST /telemetry HTTP/1.1\r\n")
                .await
                .expect("write");
        }
        idle.push(s);
    }
    let bound = flush_timeout();
    let mut figures = Vec::new();
    for _ in 0..3 {
        let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
        assert!(!inv.timed_out, "timed out");
        let held = inv.post_runtime.expect("the invocation finished");
        figures.push(held);
        assert!(held <= bound, "held {held:?} (flush timeout {bound:?})");
    }
    eprintln!("post-runtime time with {IDLE_CONNECTIONS} idle local connections: {figures:?}");
    drop(idle);
    lambda.shutdown().await.expect("shutdown");
}
