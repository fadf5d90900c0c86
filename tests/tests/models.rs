//! End to end under the execution models beyond on-demand (contracts §8): SnapStart restores
//! (stale init records around the restore records, credentials from the container endpoint)
//! and response streaming.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::{
    ContainerCredentials, EXTENSION, Harness, Options, f, invoke_traced, named, python_sdk_function,
};
use serde_json::{Value, json};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::emulator::{InvocationStatus, Invoke, StaleInit};
use xray_extension_tests::sink::ReceivedDocument;
use xray_extension_tests::trace::TraceHeader;

/// Every id in one of our documents: its own, its children's, its exception's.
fn ids_in(doc: &Value) -> Vec<String> {
    let mut ids = vec![doc["id"].as_str().unwrap_or_default().to_owned()];
    for child in doc["subsegments"].as_array().into_iter().flatten() {
        ids.extend(child["id"].as_str().map(str::to_owned));
    }
    for ex in doc["cause"]["exceptions"].as_array().into_iter().flatten() {
        ids.extend(ex["id"].as_str().map(str::to_owned));
    }
    ids
}

/// Our documents (named as we name them) among `docs`, latest version of each id.
fn ours(docs: &[ReceivedDocument]) -> Vec<Value> {
    let mut latest: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for d in docs {
        if matches!(d.name(), "Runtime" | "Restore" | "Cold Start") {
            latest.insert(d.id.clone(), d.value.clone());
        }
    }
    latest.into_values().collect()
}

/// Four environments restored from SnapStart snapshots, the stale init records of each
/// snapshot's creation (dated a day back) delivered before, between, after and around the
/// restore records: never a `Cold Start`; one `Restore` and `ColdStart=true` on each first
/// invocation only; every id unique across the restored environments; times from the current
/// clock; credentials from the container endpoint; never held past the flush timeout.
#[tokio::test]
async fn snap_start_restores_never_show_a_cold_start_and_keep_ids_unique() {
    let credentials = ContainerCredentials::start().await;
    let mut options = Options::strategy("end");
    options.extension_env.extend(credentials.env());
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(options).await;
    let began = epoch_seconds(SystemTime::now());
    let orders = [
        StaleInit::BeforeRestore,
        StaleInit::BetweenRestore,
        StaleInit::AfterRestore,
        StaleInit::Split,
    ];
    let mut rounds: Vec<Vec<TraceHeader>> = Vec::new();
    let mut longest_hold = Duration::ZERO;
    for stale in orders {
        lambda
            .snap_start(stale)
            .await
            .expect("snapshot and restore");
        let mut traces = Vec::new();
        for i in 0..3 {
            let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
            assert_eq!(inv.status, InvocationStatus::Success, "{stale:?} {i}");
            assert!(!inv.cold, "a restored environment needs no init");
            let post = inv.post_runtime.expect("post-runtime");
            assert!(
                post < common::flush_timeout(),
                "{stale:?} {i}: held {post:?}"
            );
            longest_hold = longest_hold.max(post);
            traces.push(trace);
        }
        let report = lambda.shutdown().await.expect("shutdown");
        assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
        rounds.push(traces);
    }
    let ended = epoch_seconds(SystemTime::now());

    let docs = sink.documents();
    assert!(
        !docs.iter().any(|d| d.name() == "Cold Start"),
        "a stale init made a Cold Start"
    );
    for (stale, traces) in orders.iter().zip(&rounds) {
        for (i, t) in traces.iter().enumerate() {
            let runtime = named(&docs, &t.root, "Runtime");
            let runtime = &runtime.last().expect("a Runtime per invocation").value;
            assert_eq!(runtime["annotations"]["ColdStart"], i == 0, "{stale:?} {i}");
            assert_eq!(
                runtime["annotations"]["InitType"], "snap-start",
                "{stale:?}"
            );
            let restore = named(&docs, &t.root, "Restore");
            let restore_ids: HashSet<&str> = restore.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(restore_ids.len(), usize::from(i == 0), "{stale:?} {i}");
        }
    }
    // Our documents come from this run's clock, not the snapshot's day-old one.
    let ours = ours(&docs);
    assert_eq!(ours.len(), 4 * 3 + 4, "12 Runtime and 4 Restore");
    for d in &ours {
        assert!(f(d, "start_time") >= began - 1.0, "{d}");
        assert!(f(d, "end_time") <= ended + 1.0, "{d}");
    }
    // Unique across the four restored environments.
    let all: Vec<String> = ours.iter().flat_map(ids_in).collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a segment id repeated: {all:?}");
    eprintln!(
        "4 restored environments: {} ids in our {} documents, {} distinct; longest post-runtime {longest_hold:?}",
        all.len(),
        ours.len(),
        unique.len()
    );
    // Signed with what the container endpoint served (no key variables under SnapStart).
    let calls = sink.put_calls();
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.access_key_id.as_deref() == Some(ContainerCredentials::KEY_ID))
    );
    assert!(credentials.served.load(Ordering::SeqCst) >= 4);
    assert_eq!(credentials.refused.load(Ordering::SeqCst), 0);
}

/// The answer line of a streamed sample-function response: after `lambda_runtime`'s metadata
/// prelude and its eight NUL separator bytes.
fn streamed_answer(body: &[u8]) -> Value {
    let start = body
        .windows(8)
        .position(|w| w == [0; 8])
        .map_or(0, |p| p + 8);
    let line = body[start..]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    serde_json::from_slice(line).unwrap_or(Value::Null)
}

/// A streamed response of 7 MB (more than a buffered response may be) over about 600 ms:
/// `platform.runtimeDone` comes only after the stream; `Runtime` and its `Response Duration`
/// cover the stream; the function is held no longer than the flush timeout after runtimeDone,
/// and the SDK's subsegments are in X-Ray when the invocation ends.
#[tokio::test]
async fn a_streamed_response_is_covered_by_runtime_and_response_duration() {
    const CHUNKS: u64 = 14;
    const INTERVAL_MS: u64 = 45;
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    let trace = TraceHeader::sampled();
    let inv = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 2, "stream_chunks": CHUNKS,
                "stream_chunk_bytes": 512 * 1024, "stream_interval_ms": INTERVAL_MS}))
            .traced(trace.clone()),
        )
        .await
        .expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success);
    assert!(inv.streamed);
    let body = inv.response.as_ref().expect("response");
    assert!(body.len() > 7 * 1024 * 1024, "{}", body.len());
    let stream_time = Duration::from_millis(CHUNKS * INTERVAL_MS);
    let (head, end) = (
        inv.response_started_at.expect("head"),
        inv.response_at.expect("end"),
    );
    assert!(end.duration_since(head) >= stream_time);
    assert!(inv.runtime_done_at.expect("runtimeDone") >= end);
    let post = inv.post_runtime.expect("post-runtime");
    assert!(post < common::flush_timeout(), "held {post:?}");

    let answer = streamed_answer(body);
    let sent: Vec<String> = serde_json::from_value(answer["sent_ids"].clone()).unwrap();
    assert_eq!(sent.len(), 2);
    let docs = sink.documents();
    assert!(sent.iter().all(|id| docs.iter().any(|d| &d.id == id)));
    let runtime = named(&docs, &trace.root, "Runtime");
    let runtime = &runtime.last().expect("Runtime").value;
    let child = |name: &str| {
        runtime["subsegments"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {runtime}"))
    };
    let duration = child("Response Duration");
    let streamed = f(&duration, "end_time") - f(&duration, "start_time");
    assert!(
        streamed >= stream_time.as_secs_f64() - 0.001,
        "Response Duration {streamed} s"
    );
    eprintln!(
        "streamed {} bytes over {:?}; Response Duration {streamed:.3} s; post-runtime {post:?}",
        body.len(),
        end.duration_since(head)
    );
    assert!(f(runtime, "end_time") >= f(&duration, "end_time") - 1e-6);
    assert!(f(runtime, "end_time") - f(runtime, "start_time") >= stream_time.as_secs_f64());
    lambda.shutdown().await.expect("shutdown");
}

/// Lambda retries an asynchronous event under the same request id, in the same trace with a new
/// parent: each attempt gets its own `Runtime` (its own id, under its own parent); attempt 1's
/// fault and report figures stay on attempt 1, attempt 2 carries neither.
#[tokio::test]
async fn an_async_retry_under_the_same_request_id_gets_its_own_runtime() {
    const REQUEST: &str = "retried-async-1";
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    let first_trace = TraceHeader::sampled();
    let retry_trace = TraceHeader {
        parent: TraceHeader::sampled().parent,
        ..first_trace.clone()
    };
    let first = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1, "error": true}))
                .traced(first_trace.clone())
                .request_id(REQUEST),
        )
        .await
        .expect("invoke");
    assert_eq!(first.status, InvocationStatus::Error);
    let retry = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1, "sleep_ms": 30}))
                .traced(retry_trace.clone())
                .request_id(REQUEST),
        )
        .await
        .expect("invoke");
    assert_eq!(retry.status, InvocationStatus::Success);
    lambda.shutdown().await.expect("shutdown");

    let docs = sink.documents();
    let runtimes = ours(&docs);
    let runtimes: Vec<&Value> = runtimes.iter().filter(|d| d["name"] == "Runtime").collect();
    assert_eq!(runtimes.len(), 2, "one Runtime per attempt: {runtimes:?}");
    let by_parent = |parent: &Option<String>| {
        runtimes
            .iter()
            .find(|d| d["parent_id"].as_str() == parent.as_deref())
            .copied()
            .unwrap_or_else(|| panic!("no Runtime under {parent:?}: {runtimes:?}"))
    };
    let (a, b) = (
        by_parent(&first_trace.parent),
        by_parent(&retry_trace.parent),
    );
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["fault"], true, "{a}");
    assert_eq!(
        a["cause"]["exceptions"][0]["type"],
        a["metadata"]["lambda"]["errorType"]
    );
    assert!(b.get("fault").is_none(), "{b}");
    for d in [a, b] {
        assert_eq!(d["metadata"]["lambda"]["requestId"], REQUEST);
        assert!(d["metadata"]["lambda"]["billedDurationMs"].is_u64(), "{d}");
    }
    // Each attempt's own report: the retry slept 30 ms more than attempt 1 ran.
    let duration = |d: &Value| {
        d["metadata"]["lambda"]["durationMs"]
            .as_f64()
            .unwrap_or(0.0)
    };
    assert!(duration(b) >= 30.0, "{b}");
    assert_eq!(a["metadata"]["lambda"]["status"], "error");
    assert_eq!(b["metadata"]["lambda"]["status"], "success");
}

/// The largest number of invocations a runtime process was working on at one moment.
fn most_at_once(invs: &[xray_extension_tests::emulator::Invocation]) -> usize {
    let spans: Vec<(std::time::Instant, std::time::Instant)> = invs
        .iter()
        .filter_map(|i| Some((i.runtime_received_at?, i.response_at?)))
        .collect();
    spans
        .iter()
        .map(|(at, _)| spans.iter().filter(|(s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0)
}

/// How many of `invs` had their `platform.report` emitted before their `platform.start`;
/// asserts no `platform.runtimeDone` was emitted at all.
fn reports_before_start(
    lambda: &xray_extension_tests::emulator::Emulator,
    invs: &[xray_extension_tests::emulator::Invocation],
) -> usize {
    let log = lambda.telemetry_log();
    assert!(!log.iter().any(|e| e.event_type == "platform.runtimeDone"));
    let position = |kind: &str, id: &str| {
        log.iter()
            .position(|e| e.event_type == kind && e.request_id() == Some(id))
    };
    invs.iter()
        .filter(|inv| {
            position("platform.report", &inv.request_id)
                < position("platform.start", &inv.request_id)
        })
        .count()
}

/// Lambda Managed Instances with four `awslambdaric` processes taking 16 traced invocations at
/// once (one fails): the extension registers for SHUTDOWN only, gets no INVOKE, no runtimeDone,
/// every third report before its start; every invocation gets one `Runtime` from its start and
/// report (never `Cold Start`, `InitType="lambda-managed-instances"`, the failure a fault), and
/// every subsegment the Python SDK sent from each process reaches X-Ray.
#[tokio::test]
async fn managed_instances_deliver_every_concurrent_invocation() {
    const N: usize = 16;
    const FAILING: usize = 5;
    let function = python_sdk_function();
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        managed_instances: true,
        max_concurrency: 4,
        function: Some(function),
        wrapper: true,
        ..Options::default()
    })
    .await;
    let traces: Vec<TraceHeader> = (0..N).map(|_| TraceHeader::sampled()).collect();
    let invokes = traces
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Invoke::new(json!({"n": i, "sleep_ms": 150, "error": i == FAILING})).traced(t.clone())
        })
        .collect();
    let invs = lambda.invoke_concurrently(invokes).await.expect("invoke");
    assert_eq!(invs.len(), N);
    for (i, inv) in invs.iter().enumerate() {
        let expected = if i == FAILING {
            InvocationStatus::Error
        } else {
            InvocationStatus::Success
        };
        assert_eq!(inv.status, expected, "{i}: {:?}", inv.error);
    }
    let at_once = most_at_once(&invs);
    eprintln!("invocations running at once: {at_once}");
    assert!(at_once >= 2, "the runtime processes ran one at a time");
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    assert!(
        lambda
            .extension_events(EXTENSION)
            .iter()
            .all(|e| e.event_type() == "SHUTDOWN")
    );
    let report_first = reports_before_start(&lambda, &invs);
    assert!(
        report_first >= N / 3 - 1,
        "{report_first} reports before their start"
    );

    let docs = sink.documents();
    assert!(!docs.iter().any(|d| d.name() == "Cold Start"));
    let mut delivered = 0;
    for (i, (t, inv)) in traces.iter().zip(&invs).enumerate() {
        let runtime = named(&docs, &t.root, "Runtime");
        let ids: HashSet<&str> = runtime.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 1, "{i}: one Runtime");
        let r = &runtime.last().unwrap().value;
        assert_eq!(r["annotations"]["ColdStart"], false, "{i}");
        assert_eq!(
            r["annotations"]["InitType"], "lambda-managed-instances",
            "{i}"
        );
        assert_eq!(
            r["fault"].as_bool().unwrap_or(false),
            i == FAILING,
            "{i}: {r}"
        );
        let children: Vec<&str> = r["subsegments"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(children, ["Response Latency", "Response Duration"], "{i}");
        assert!(f(r, "end_time") - f(r, "start_time") >= 0.15, "{i}: {r}");
        for id in common::sent_ids(inv) {
            assert!(
                docs.iter().any(|d| d.id == id),
                "{i}: subsegment {id} missing"
            );
            delivered += 1;
        }
    }
    eprintln!("SDK subsegments delivered: {delivered}; Runtime subsegments: {N}");
    assert_eq!(delivered, 2 * (N - 1));
    let c = common::counters(&lambda).expect("counters");
    assert_eq!(c["dropped_at_shutdown"], 0);
}
