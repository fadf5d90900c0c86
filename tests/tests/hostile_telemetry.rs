//! Large Telemetry API deliveries, end to end: the real extension at
//! `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128` takes bodies up to its 2 MiB limit, eight at a time,
//! on its telemetry listener (any local process can post there). What they hold comes out of
//! the one budget (peak RSS from `/proc/<pid>/status`), and a buffer full of the function's
//! spans never keeps Lambda's `platform.runtimeDone` out.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Options, WAIT, extension_pid, flush_timeout};
use serde_json::json;
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::http;
use xray_extension_tests::procfs;
use xray_extension_tests::sink::otlp as pb;
use xray_extension_tests::sink::{Fault, FaultPlan};
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

/// How far the peak RSS may rise under the large deliveries: the extension's telemetry slice
/// of the budget (4 MiB), the read buffers of the listener's 8 connections (64 KiB each) and
/// 1 MiB for the allocator's rounding.
const PEAK_RISE_LIMIT_KB: u64 = 4 * 1024 + 8 * 64 + 1024;

/// The ports an environment's extension listens on.
struct Ports {
    telemetry: u16,
    otlp: u16,
}

async fn environment(strategy: &str) -> (Ports, Harness) {
    let ports = Ports {
        telemetry: xray_extension_tests::net::free_tcp_port().expect("tcp port"),
        otlp: xray_extension_tests::net::free_tcp_port().expect("tcp port"),
    };
    let mut harness = Harness::start(Options {
        extension_env: vec![
            common::pinned_mmap_threshold(),
            ("XRAY_EXTENSION_FLUSH_STRATEGY".into(), strategy.into()),
            (
                "XRAY_EXTENSION_TELEMETRY_PORT".into(),
                ports.telemetry.to_string(),
            ),
            (
                "XRAY_EXTENSION_OTLP_ADDRESS".into(),
                format!("127.0.0.1:{}", ports.otlp),
            ),
        ],
        ..Options::default()
    })
    .await;
    harness.lambda.prewarm().await.expect("init");
    (ports, harness)
}

/// A delivery of about `bytes`: records of 1 KB as Lambda writes them (half of a type the
/// extension reads, half of one it skips), each with a field it does not use.
fn delivery(bytes: usize) -> Arc<Vec<u8>> {
    let pad = "x".repeat(900);
    let mut records = Vec::new();
    let mut size = 2;
    let mut n = 0_u64;
    while size < bytes - 1_100 {
        let record = if n.is_multiple_of(2) {
            json!({"time": "2026-01-01T00:00:00.000Z", "type": "platform.start",
                   "record": {"requestId": format!("r-{n}"), "version": "$LATEST", "pad": pad}})
        } else {
            json!({"time": "2026-01-01T00:00:00.000Z", "type": "platform.extension",
                   "record": {"name": "other", "state": "Ready", "events": ["INVOKE"], "pad": pad}})
        };
        let text = record.to_string();
        size += text.len() + 1;
        records.push(text);
        n += 1;
    }
    Arc::new(format!("[{}]", records.join(",")).into_bytes())
}

/// POSTs `body` to the telemetry listener; the status, or `None` when the connection failed.
async fn post(port: u16, body: Arc<Vec<u8>>) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let req = http::request(hyper::Method::POST, addr, "/telemetry")
        .header("content-type", "application/json")
        .body(http::body(body.as_ref().clone()))
        .expect("request");
    let res = http::send(addr, req, Some(WAIT)).await.ok()?;
    Some(res.status.as_u16())
}

#[tokio::test]
async fn large_deliveries_hold_no_more_than_the_telemetry_slice() {
    let (ports, Harness { mut lambda, .. }) = environment("adaptive").await;
    let pid = extension_pid(
        "XRAY_EXTENSION_TELEMETRY_PORT",
        &ports.telemetry.to_string(),
    );
    let before = procfs::memory(pid).expect("VmHWM").hwm_kib;
    // Bodies near the listener's 2 MiB limit and of Lambda's largest delivery (1 MiB), eight
    // at once (the listener's connection limit), three times.
    let (large, mib) = (delivery(1_950_000), delivery(1024 * 1024));
    let mut answers = Vec::new();
    for _ in 0..3 {
        let wave = (0..8).map(|i| {
            let body = if i % 2 == 0 { &large } else { &mib };
            post(ports.telemetry, body.clone())
        });
        answers.extend(futures_util::future::join_all(wave).await);
    }
    let peak = procfs::memory(pid).expect("VmHWM").hwm_kib;
    eprintln!(
        "peak RSS {before} KiB before, {peak} KiB after (+{} KiB); answers {answers:?}",
        peak - before
    );
    // 200 (taken, or refused for good and counted), 503 (no room now: Lambda re-sends), or
    // closed unanswered (a connection not yet sending, closed for a newer one at the limit).
    for answer in &answers {
        assert!(matches!(answer, Some(200 | 503) | None), "{answers:?}");
    }
    assert!(answers.contains(&Some(200)), "{answers:?}");
    assert!(
        peak - before <= PEAK_RISE_LIMIT_KB,
        "peak RSS rose {} KiB (limit {PEAK_RISE_LIMIT_KB} KiB)",
        peak - before
    );
    common::assert_serves_and_exits_cleanly(&mut lambda, TraceHeader::sampled()).await;
}

/// POSTs exports of 2,000 spans to the OTLP/HTTP receiver until it answers 503 (the budget is
/// full); how many it took.
async fn fill_the_budget(port: u16) -> usize {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let trace = TraceHeader::sampled();
    let parent = new_segment_id();
    let ids: Vec<String> = (0..2_000).map(|_| new_segment_id()).collect();
    let specs: Vec<pb::SpanSpec<'_>> = ids
        .iter()
        .map(|id| pb::SpanSpec {
            name: "filler",
            span_id: id,
            parent_span_id: &parent,
            times: None,
        })
        .collect();
    let body = pb::build_request(&trace.root, "svc", &specs);
    for taken in 0..500 {
        let req = http::request(hyper::Method::POST, addr, "/v1/traces")
            .header("content-type", "application/x-protobuf")
            .body(http::body(body.clone()))
            .expect("request");
        let status = http::send(addr, req, Some(WAIT))
            .await
            .expect("an answer")
            .status
            .as_u16();
        match status {
            200 => {}
            503 => return taken,
            other => panic!("export answered {other}"),
        }
    }
    panic!("the budget never filled");
}

#[tokio::test]
async fn runtime_done_gets_in_while_the_documents_budget_is_full() {
    let (
        ports,
        Harness {
            mut lambda, sink, ..
        },
    ) = environment("end").await;
    // X-Ray never answers: what was accepted keeps its room in the budget.
    sink.set_fault_plan(FaultPlan::always(Fault::Delay(Duration::from_mins(1))));
    let taken = fill_the_budget(ports.otlp).await;
    eprintln!("{taken} exports of 2,000 spans taken before the first 503");
    let inv = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1}))
                .traced(TraceHeader::sampled())
                .request_id("while-full"),
        )
        .await
        .expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    let held = inv.post_runtime.expect("post-runtime duration");
    // Its runtimeDone was taken at the first attempt, and released it within the flush timeout.
    let deliveries = lambda.observer().telemetry_deliveries();
    let runtime_done = deliveries
        .iter()
        .find(|d| {
            d.events.iter().any(|e| {
                e["type"] == "platform.runtimeDone" && e["record"]["requestId"] == "while-full"
            })
        })
        .expect("the runtimeDone was delivered");
    eprintln!(
        "held {held:?} after runtimeDone; its delivery: attempt {} answered {:?}",
        runtime_done.attempt, runtime_done.outcome
    );
    assert_eq!(
        (runtime_done.attempt, &runtime_done.outcome),
        (1, &Ok(200)),
        "the runtimeDone was kept out"
    );
    // The flush waits its whole timeout for X-Ray here; a runtimeDone kept out would hold the
    // invocation until the guard for a lost runtimeDone releases it, near its deadline (3 s).
    // Scheduling slack as in delivery.rs.
    assert!(
        held < flush_timeout() + Duration::from_millis(150),
        "held {held:?} after runtimeDone (flush timeout {:?})",
        flush_timeout()
    );
}
