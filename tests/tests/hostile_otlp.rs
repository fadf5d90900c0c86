//! Hostile OTLP/HTTP requests within the documented limits, end to end: the real extension at
//! `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128` (a 4 MiB buffer) takes bodies that are small on the wire
//! and huge once inflated or decoded, 16 at a time. It must stay alive and small (peak RSS from
//! `/proc/<pid>/status`), answer as the OTLP specification says (400, 413, 503), still deliver
//! the legitimate exports sent next to them, and never hold the function for them.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, Options, WAIT, extension_pid, flush_timeout};
use serde_json::json;
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::http;
use xray_extension_tests::procfs;
use xray_extension_tests::sink::otlp as pb;
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

/// The peak resident set the extension may reach, whatever is sent to it.
const PEAK_RSS_LIMIT_KB: u64 = 24 * 1024;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A request body and how it is sent.
#[derive(Clone)]
struct Body {
    what: &'static str,
    content_type: &'static str,
    gzip: bool,
    bytes: Arc<Vec<u8>>,
}

/// `n` new span ids.
fn new_ids(n: usize) -> Vec<String> {
    (0..n).map(|_| new_segment_id()).collect()
}

/// Spans named `name` under `parent`, one for each of `ids`.
fn spans<'a>(name: &'a str, ids: &'a [String], parent: &'a str) -> Vec<pb::SpanSpec<'a>> {
    ids.iter()
        .map(|id| pb::SpanSpec {
            name,
            span_id: id,
            parent_span_id: parent,
            times: None,
        })
        .collect()
}

/// Bodies within the documented limits (4 MiB as sent, 16 MiB inflated) that cost the most.
fn hostile_bodies() -> Vec<Body> {
    let json = "application/json";
    let proto = "application/x-protobuf";
    let trace = "5759e988bd862e3fe1be46a994272793";
    // 8 million zeros: a JSON array of 16,000,000 bytes.
    let mut zeros = String::from("[");
    zeros.push_str(&"0,".repeat(7_999_999));
    zeros.push_str("0]");
    // Five million empty values inside one attribute of one span.
    let mut values = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"1bbaa244e76f8d42","attributes":[{{"key":"k","value":{{"arrayValue":{{"values":["#
    );
    values.push_str(&"{},".repeat(5_000_000));
    values.push_str("{}]}}}]}]}]}]}");
    // Millions of values in a field the mapping ignores.
    let mut ignored = String::from(r#"{"resourceSpans":[],"future":["#);
    ignored.push_str(&"0,".repeat(7_900_000));
    ignored.push_str("0]}");
    // A 4 MiB protobuf body of valid spans.
    let root = TraceHeader::sampled().root;
    let parent = new_segment_id();
    let ids = new_ids(64_000);
    let specs = spans("x", &ids, &parent);
    let mut big = pb::build_request(&root, "svc", &specs);
    while big.len() > 4 * 1024 * 1024 {
        let n = specs.len() * 4 * 1024 * 1024 / big.len() - 10;
        big = pb::build_request(&root, "svc", &specs[..n]);
    }
    // Identical valid spans, as many as 16 MiB inflated holds.
    let same = vec![
        pb::SpanSpec {
            name: "same",
            span_id: &ids[0],
            parent_span_id: &parent,
            times: None,
        };
        1_000
    ];
    let one_thousand = pb::build_request(&root, "svc", &same);
    let many = 16_000_000 / (one_thousand.len() / 1_000);
    let identical = pb::build_request(&root, "svc", &vec![same[0].clone(); many]);
    let bomb = vec![0_u8; 16 * 1024 * 1024];
    vec![
        Body {
            what: "8 million zeros (gzip JSON)",
            content_type: json,
            gzip: true,
            bytes: Arc::new(gzip(zeros.as_bytes())),
        },
        Body {
            what: "5 million empty values (gzip JSON)",
            content_type: json,
            gzip: true,
            bytes: Arc::new(gzip(values.as_bytes())),
        },
        Body {
            what: "8 million ignored values (gzip JSON)",
            content_type: json,
            gzip: true,
            bytes: Arc::new(gzip(ignored.as_bytes())),
        },
        Body {
            what: "4 MiB of valid spans (protobuf)",
            content_type: proto,
            gzip: false,
            bytes: Arc::new(big),
        },
        Body {
            what: "16 MiB of identical spans (gzip protobuf)",
            content_type: proto,
            gzip: true,
            bytes: Arc::new(gzip(&identical)),
        },
        Body {
            what: "gzip bomb (16 MiB of zeros)",
            content_type: proto,
            gzip: true,
            bytes: Arc::new(gzip(&bomb)),
        },
    ]
}

/// POSTs `body` to the receiver; the status and `Retry-After`, or `None` when the connection
/// failed.
async fn post(port: u16, body: &Body) -> Option<(u16, Option<String>)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut req = http::request(hyper::Method::POST, addr, "/v1/traces")
        .header("content-type", body.content_type);
    if body.gzip {
        req = req.header("content-encoding", "gzip");
    }
    let req = req
        .body(http::body(body.bytes.as_ref().clone()))
        .expect("request");
    let res = http::send(addr, req, Some(WAIT * 3)).await.ok()?;
    Some((
        res.status.as_u16(),
        res.header("retry-after").map(str::to_owned),
    ))
}

/// Sends a legitimate export of 20 spans as an SDK does: retried after a 503 (sooner than its
/// `Retry-After`, to keep the test short) until answered 200. Its span ids.
async fn export(port: u16, trace: &TraceHeader) -> Vec<String> {
    let parent = trace.parent.clone().expect("a parent");
    let ids = new_ids(20);
    let specs = spans("legitimate", &ids, &parent);
    let body = Body {
        what: "legitimate",
        content_type: "application/x-protobuf",
        gzip: false,
        bytes: Arc::new(pb::build_request(&trace.root, "svc", &specs)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match post(port, &body).await {
            Some((200, _)) => return ids,
            Some((503, retry)) => assert!(retry.is_some(), "503 without Retry-After"),
            other => panic!("a legitimate export answered {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "a legitimate export never got in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `VmHWM` of `pid`, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    procfs::memory(pid).expect("VmHWM").hwm_kib
}

async fn receiver(strategy: &str) -> (u16, Harness) {
    let port = xray_extension_tests::net::free_tcp_port().expect("tcp port");
    let mut harness = Harness::start(Options {
        extension_env: vec![
            common::pinned_mmap_threshold(),
            ("XRAY_EXTENSION_FLUSH_STRATEGY".into(), strategy.into()),
            (
                "XRAY_EXTENSION_OTLP_ADDRESS".into(),
                format!("127.0.0.1:{port}"),
            ),
        ],
        ..Options::default()
    })
    .await;
    harness.lambda.prewarm().await.expect("init");
    (port, harness)
}

/// Sends 16 hostile bodies at once (each kind in turn); their answers.
async fn wave(
    port: u16,
    bodies: &[Body],
    count: usize,
) -> Vec<(&'static str, Option<(u16, Option<String>)>)> {
    let sends = (0..count).map(|i| {
        let body = bodies[i % bodies.len()].clone();
        async move { (body.what, post(port, &body).await) }
    });
    futures_util::future::join_all(sends).await
}

#[tokio::test]
async fn hostile_requests_leave_the_extension_small_and_alive_and_legitimate_exports_arrive() {
    let bodies = hostile_bodies();
    for b in &bodies {
        eprintln!("{}: {} bytes on the wire", b.what, b.bytes.len());
    }
    let (
        port,
        Harness {
            mut lambda, sink, ..
        },
    ) = receiver("adaptive").await;
    let pid = extension_pid("XRAY_EXTENSION_OTLP_ADDRESS", &format!("127.0.0.1:{port}"));
    let before = peak_rss_kb(pid);
    let trace = TraceHeader::sampled();
    // 16 hostile requests at once, then 12 more with 4 legitimate exports among them.
    let mut answers = wave(port, &bodies, 16).await;
    let (more, legit) = tokio::join!(
        wave(port, &bodies, 12),
        futures_util::future::join_all((0..4).map(|_| export(port, &trace)))
    );
    answers.extend(more);
    let peak = peak_rss_kb(pid);
    eprintln!("peak RSS {before} KiB before, {peak} KiB after; answers: {answers:?}");
    for (what, answer) in &answers {
        match answer {
            Some((400 | 413, _)) => {}
            Some((503, retry)) => assert!(retry.is_some(), "{what}: 503 without Retry-After"),
            other => panic!("{what}: answered {other:?}"),
        }
    }
    assert!(
        peak <= PEAK_RSS_LIMIT_KB,
        "peak RSS {peak} KiB (limit {PEAK_RSS_LIMIT_KB} KiB)"
    );
    // Alive: it still serves an invocation, sends what it accepted, and exits cleanly.
    common::assert_serves_and_exits_cleanly(&mut lambda, trace.clone()).await;
    let arrived: std::collections::HashSet<String> =
        sink.spans().into_iter().map(|s| s.span_id).collect();
    let legit: Vec<String> = legit.into_iter().flatten().collect();
    let lost = legit.iter().filter(|id| !arrived.contains(*id)).count();
    assert_eq!(lost, 0, "{lost} of {} legitimate spans lost", legit.len());
}

#[tokio::test]
async fn hostile_requests_during_an_invocation_never_hold_its_release() {
    // `end` holds each invocation until its flush is done (at most the flush timeout): the
    // hostile requests posted while the function runs must not make that flush late.
    let bodies: Vec<Body> = hostile_bodies()
        .into_iter()
        .filter(|b| b.content_type == "application/json")
        .collect();
    let (port, Harness { mut lambda, .. }) = receiver("end").await;
    let bound = flush_timeout();
    let mut held = Vec::new();
    for round in 0..2 {
        let trace = TraceHeader::sampled();
        let hostile = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wave(port, &bodies, 8).await
        };
        let invoke = lambda
            .invoke(Invoke::new(json!({"subsegments": 1, "sleep_ms": 300})).traced(trace.clone()));
        let (inv, answers) = tokio::join!(invoke, hostile);
        let inv = inv.expect("invoke");
        assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
        let released = inv.post_runtime.expect("post-runtime duration");
        eprintln!("round {round}: held {released:?} after runtimeDone; {answers:?}");
        held.push(released);
    }
    lambda.shutdown().await.expect("shutdown");
    for post in held {
        assert!(
            post <= bound,
            "held {post:?} after runtimeDone (flush timeout {bound:?})"
        );
    }
}
