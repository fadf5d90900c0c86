//! Delivery guarantees under faults, for each flush strategy: nothing valid is lost, the function
//! is never held past the flush timeout, shutdown flushes everything before its deadline.
//!
//! Each scenario prints one line (documents sent/expected, calls, dropped, longest post-runtime
//! duration, peak RSS) — run with `--nocapture` to see them.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed set-up is a failed test"
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{EXTENSION, Harness, Options, counters, invoke_traced, sent_ids};
use serde_json::json;
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::sink::{Fault, FaultPlan};
use xray_extension_tests::trace::TraceHeader;

const STRATEGIES: [&str; 3] = ["end", "background", "adaptive"];
const FLUSH_TIMEOUT_MS: u64 = 300;

fn options(strategy: &str) -> Options {
    let mut o = Options::strategy(strategy);
    o.extension_env.push((
        "XRAY_EXTENSION_FLUSH_TIMEOUT_MS".to_owned(),
        FLUSH_TIMEOUT_MS.to_string(),
    ));
    o
}

/// Runs `invocations` sampled invokes of `per` subsegments; returns the ids sent and the
/// longest post-runtime duration.
async fn run_invocations(
    h: &mut Harness,
    invocations: usize,
    per: usize,
    pause: Duration,
) -> (Vec<String>, Duration) {
    let mut ids = Vec::new();
    let mut longest = Duration::ZERO;
    for _ in 0..invocations {
        let (_, inv) = invoke_traced(&mut h.lambda, json!({"subsegments": per})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        ids.extend(sent_ids(&inv));
        longest = longest.max(inv.post_runtime.unwrap_or_default());
        tokio::time::sleep(pause).await;
    }
    (ids, longest)
}

fn report_line(
    scenario: &str,
    strategy: &str,
    h: &Harness,
    expected: &[String],
    longest: Duration,
) {
    let docs = h.sink.documents();
    let got: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let arrived = expected
        .iter()
        .filter(|id| got.contains(id.as_str()))
        .count();
    let c = counters(&h.lambda).unwrap_or_default();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    eprintln!(
        "| {scenario} | {strategy} | {arrived}/{} | {} calls ({} answered OK) | dropped {} | post-runtime max {:.1} ms | peak RSS {} kB |",
        expected.len(),
        get("api_calls"),
        h.sink
            .put_calls()
            .iter()
            .filter(|c| c.status == 200)
            .count(),
        get("dropped_at_shutdown") + get("spilled") + get("unprocessed"),
        longest.as_secs_f64() * 1e3,
        get("peak_rss_kb"),
    );
}

#[tokio::test]
async fn thirty_percent_faults_lose_nothing() {
    for strategy in STRATEGIES {
        let mut h = Harness::start(options(strategy)).await;
        // The first four calls meet each fault once: throttled, 500, slow past the flush
        // timeout, half the documents unprocessed (throttled). Then calls 0, 3, 6 and 9 of
        // every ten fail the same way in turn.
        h.sink.set_fault_plan(FaultPlan::from_fn(|i| {
            let kind = match (i, i % 10) {
                (0..4, _) => i,
                (_, 0) => 0,
                (_, 3) => 1,
                (_, 6) => 2,
                (_, 9) => 3,
                _ => return None,
            };
            Some(match kind {
                0 => Fault::Throttle,
                1 => Fault::ServerError,
                2 => Fault::Delay(Duration::from_millis(2 * FLUSH_TIMEOUT_MS)),
                _ => Fault::PartialUnprocessed(0.5),
            })
        }));
        let (ids, longest) = run_invocations(&mut h, 25, 6, Duration::from_millis(20)).await;
        let report = h.lambda.shutdown().await.expect("shutdown");
        let ext = report.extension(EXTENSION).expect("exit");
        assert_eq!(ext.exit_code(), Some(0), "{strategy}");
        assert!(ext.exited_before_deadline, "{strategy}");

        let docs = h.sink.documents();
        let got: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !got.contains(id.as_str())).collect();
        assert!(
            missing.is_empty(),
            "{strategy}: {} of {} missing",
            missing.len(),
            ids.len()
        );
        let calls = h.sink.put_calls();
        // The slow call is abandoned by the client at its timeout (the sink may never record
        // it); the extension counts it.
        let c = counters(&h.lambda).expect("counters");
        assert!(c["backend_timeout"] >= 1, "{strategy}: {c:?}");
        for kind in ["Throttle", "ServerError", "PartialUnprocessed"] {
            assert!(
                calls.iter().any(|c| c
                    .fault
                    .as_ref()
                    .is_some_and(|f| format!("{f:?}").starts_with(kind))),
                "{strategy}: no {kind} fault was injected"
            );
        }
        // The function is never held longer than the flush timeout (plus scheduling slack).
        assert!(
            longest < Duration::from_millis(FLUSH_TIMEOUT_MS + 150),
            "{strategy}: post-runtime {longest:?}"
        );
        report_line("30 % faults", strategy, &h, &ids, longest);
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_never_holds_or_breaks_the_function() {
    // Refused: nothing listens. Black-holed: a listener that accepts and never answers.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let black_hole = format!("http://{}", hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });

    for (name, endpoint) in [("refused", refused), ("black-holed", black_hole)] {
        for strategy in STRATEGIES {
            let mut o = options(strategy);
            o.xray_endpoint = Some(endpoint.clone());
            let mut h = Harness::start(o).await;
            let (ids, longest) = run_invocations(&mut h, 8, 3, Duration::from_millis(10)).await;
            assert!(
                longest < Duration::from_millis(FLUSH_TIMEOUT_MS + 150),
                "{name}/{strategy}: post-runtime {longest:?}"
            );
            let report = h.lambda.shutdown().await.expect("shutdown");
            let ext = report.extension(EXTENSION).expect("exit");
            assert_eq!(ext.exit_code(), Some(0), "{name}/{strategy}");
            assert!(ext.exited_before_deadline, "{name}/{strategy}");
            let c = counters(&h.lambda).expect("counters");
            // Everything still buffered at the deadline is counted as dropped.
            assert!(c["dropped_at_shutdown"] > 0, "{name}/{strategy}: {c:?}");
            assert_eq!(c["sent"], 0);
            let errors = c["backend_refused"] + c["backend_timeout"] + c["backend_other"];
            assert!(errors > 0, "{name}/{strategy}: {c:?}");
            report_line(&format!("endpoint {name}"), strategy, &h, &ids, longest);
        }
    }
    holder.abort();
}

#[tokio::test]
async fn shutdown_under_load_flushes_thousands_before_the_deadline() {
    for strategy in STRATEGIES {
        let mut h = Harness::start(options(strategy)).await;
        let trace = TraceHeader::sampled();
        let (mut ids, longest) = run_invocations(&mut h, 2, 2, Duration::ZERO).await;
        // 3,000 documents arrive after the last invocation: all of them wait for SHUTDOWN.
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let parent = trace.parent.clone().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for chunk in 0..30 {
            for i in 0..100 {
                let id = format!("{:016x}", 0xab00_0000_u64 + chunk * 100 + i);
                let body = json!({
                    "id": id, "name": "late", "trace_id": trace.root, "parent_id": parent,
                    "type": "subsegment", "start_time": now, "end_time": now + 0.001,
                });
                let datagram = format!("{{\"format\":\"json\",\"version\":1}}\n{body}");
                socket
                    .send_to(datagram.as_bytes(), ("127.0.0.1", h.udp_port))
                    .await
                    .unwrap();
                ids.push(id);
            }
            // Let the reader keep up: loopback UDP drops when the socket buffer is full.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let report = h.lambda.shutdown().await.expect("shutdown");
        let ext = report.extension(EXTENSION).expect("exit");
        assert_eq!(ext.exit_code(), Some(0), "{strategy}");
        assert!(
            ext.exited_before_deadline,
            "{strategy}: took {:?}",
            ext.took
        );
        let docs = h.sink.documents();
        let got: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let missing = ids.iter().filter(|id| !got.contains(id.as_str())).count();
        assert_eq!(missing, 0, "{strategy}: {missing} of {} missing", ids.len());
        assert!(h.sink.put_calls().iter().all(|c| c.documents.len() <= 50));
        report_line("shutdown with 3,000 buffered", strategy, &h, &ids, longest);
    }
}

/// Peak RSS (kB) the extension logged at shutdown after `flood` documents of about 1 KB arrived
/// while the X-Ray endpoint never answered (nothing leaves the buffer).
async fn peak_rss_after_flood(flood: usize, buffer_bytes: usize) -> (u64, u64, u64) {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    let mut o = options("background");
    o.xray_endpoint = Some(endpoint);
    o.extension_env.push((
        "XRAY_EXTENSION_BUFFER_BYTES".to_owned(),
        buffer_bytes.to_string(),
    ));
    let mut h = Harness::start(o).await;
    let trace = TraceHeader::sampled();
    run_invocations(&mut h, 1, 1, Duration::ZERO).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pad = "x".repeat(900);
    let parent = trace.parent.clone().unwrap();
    for i in 0..flood {
        let body = json!({
            "id": format!("{:016x}", 0xf100_0000_u64 + i as u64), "name": "flood",
            "trace_id": trace.root, "parent_id": parent, "type": "subsegment",
            "start_time": 1.7e9, "end_time": 1.7e9 + 0.001, "metadata": {"pad": {"p": pad}},
        });
        let datagram = format!("{{\"format\":\"json\",\"version\":1}}\n{body}");
        socket
            .send_to(datagram.as_bytes(), ("127.0.0.1", h.udp_port))
            .await
            .unwrap();
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    h.lambda.shutdown().await.expect("shutdown");
    holder.abort();
    let c = counters(&h.lambda).expect("counters");
    (c["peak_rss_kb"], c["spilled"], c["received"])
}

#[tokio::test]
async fn memory_stays_at_the_buffer_bound_under_a_flood() {
    // The same extension, idle versus 20 MB of documents into a 256 KiB buffer.
    let (idle_rss, _, _) = peak_rss_after_flood(0, 256 * 1024).await;
    let (flood_rss, spilled, received) = peak_rss_after_flood(20_000, 256 * 1024).await;
    eprintln!(
        "| flood of 20,000 × 1 KB, 256 KiB buffer | received {received} | spilled {spilled} | peak RSS idle {idle_rss} kB, flooded {flood_rss} kB |"
    );
    assert!(received > 15_000, "received only {received}");
    // Far more arrived than fits: most were dropped and counted.
    assert!(spilled > 10_000, "spilled {spilled}");
    // Growth stays near the buffer (256 KiB) plus the bounded channel and fixed overhead, far
    // below the 20 MB that went through.
    let growth = flood_rss.saturating_sub(idle_rss);
    assert!(growth < 8 * 1024, "peak RSS grew by {growth} kB");
}

#[tokio::test]
async fn a_long_invocation_that_outgrows_the_buffer_is_sent_while_it_runs() {
    // 150 subsegments of about 1 KB, one every 4 ms (about 0.6 s), into a 64 KiB buffer that
    // holds some 55 of them: held for its runtimeDone under `end`, the invocation must not lose
    // the rest. The function runs (it is not frozen), so a full batch goes out at once.
    let mut o = options("end");
    o.extension_env
        .push(("XRAY_EXTENSION_BUFFER_BYTES".to_owned(), "65536".to_owned()));
    let mut h = Harness::start(o).await;
    let trace = TraceHeader::sampled();
    let inv = h
        .lambda
        .invoke(
            Invoke::new(json!({
                "subsegments": 150,
                "payload_bytes": 1024,
                "subsegment_interval_ms": 4,
            }))
            .traced(trace),
        )
        .await
        .expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    let ids = sent_ids(&inv);
    assert_eq!(ids.len(), 150);
    h.lambda.shutdown().await.expect("shutdown");
    let c = counters(&h.lambda).expect("counters");
    assert_eq!(c.get("spilled"), Some(&0), "{c:?}");
    let stored: HashSet<String> = h.sink.documents().into_iter().map(|d| d.id).collect();
    let lost = ids.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(lost, 0, "{lost} of 150 lost; {c:?}");
}
