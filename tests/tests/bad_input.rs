//! Bad input end to end: ten thousand malformed datagrams sent to the real extension while
//! invocations run, interleaved with valid subsegments. The extension must stay up, forward
//! every valid document, forward nothing else, count every rejection, and log rejections at a
//! bounded rate (anyone who can reach the port can send them).

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed set-up or send is a failed test"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use common::{
    EXTENSION, Harness, Options, WAIT, counters, extension_log, invocation_started, sent_ids,
};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::emulator::{Emulator, InvocationStatus, Invoke, Observer};
use xray_extension_tests::trace::{TraceHeader, new_segment_id, new_uuid};

/// Daemon-protocol header as the SDKs write it.
const HEADER: &str = r#"{"format":"json","version":1}"#;
/// Invocations during which datagrams are sent (after a first, cold one).
const INVOCATIONS: usize = 5;
/// Bad datagrams sent during each of them.
const BAD_PER_INVOCATION: usize = 2_000;
/// One valid subsegment of ours after every this many bad datagrams.
const VALID_EVERY: usize = 50;
/// Subsegments the sample function sends itself, per invocation.
const FUNCTION_SUBSEGMENTS: usize = 3;
/// The function keeps each invocation open this long, so the datagrams arrive during it.
const INVOCATION_MS: u64 = 1_500;
/// Pacing: after this many datagrams, or this many bytes, wait until the extension's socket
/// has read everything (a full kernel receive queue drops datagrams silently).
const BURST_DATAGRAMS: usize = 250;
const BURST_BYTES: usize = 128 * 1024;
/// Size of the oversized datagrams (near UDP's 65,507-byte limit).
const LARGE_DATAGRAM_BYTES: usize = 65_000;
/// Nesting depth of the deeply nested documents.
const DEEP_NESTING: usize = 10_000;
/// Rejections are logged at most once per 10 s with a count of the suppressed ones.
const MAX_REJECTION_LOG_LINES: usize = 5;

/// A valid independent subsegment in `trace`, under its `Parent`.
fn subsegment(trace: &TraceHeader) -> Value {
    let now = epoch_seconds(SystemTime::now());
    json!({
        "id": new_segment_id(),
        "name": "bad-input-valid",
        "start_time": now - 0.005,
        "end_time": now,
        "type": "subsegment",
        "trace_id": trace.root,
        "parent_id": trace.parent,
        "annotations": {"test": "bad_input"},
    })
}

/// `doc` padded with metadata so that `HEADER\n<doc>` is exactly `size` bytes.
fn padded(mut doc: Value, size: usize) -> Vec<u8> {
    doc["metadata"] = json!({"test": {"padding": ""}});
    let base = HEADER.len() + 1 + doc.to_string().len();
    doc["metadata"]["test"]["padding"] = json!("x".repeat(size.saturating_sub(base)));
    let datagram = format!("{HEADER}\n{doc}").into_bytes();
    assert_eq!(datagram.len(), size);
    datagram
}

fn with_header(header: &str, body: &str) -> Vec<u8> {
    format!("{header}\n{body}").into_bytes()
}

fn without(mut doc: Value, field: &str) -> Value {
    doc.as_object_mut().map(|o| o.remove(field));
    doc
}

fn with(mut doc: Value, field: &str, value: Value) -> Value {
    doc[field] = value;
    doc
}

/// The kinds of bad datagram, by name; each one is rejected by the protocol checks.
const BAD_KINDS: &[&str] = &[
    "empty datagram",
    "no newline",
    "header with another format",
    "header with \"version\":\"1\"",
    "header without version",
    "header that is not JSON",
    "empty body",
    "truncated JSON",
    "trailing garbage after the object",
    "JSON array",
    "JSON number",
    "JSON string",
    "JSON null",
    "JSON boolean",
    "missing id",
    "missing trace_id",
    "missing name",
    "missing start_time",
    "missing end_time and in_progress",
    "subsegment missing parent_id",
    "id not 16 hex digits",
    "malformed trace_id",
    "start_time as a string",
    "empty name",
    "65,000-byte datagram missing its id",
    "10,000-deep nesting",
    "random bytes",
    "invalid UTF-8",
];

/// Bad datagram number `n` (of kind `n % BAD_KINDS.len()`).
fn bad_datagram(n: usize, trace: &TraceHeader) -> Vec<u8> {
    let valid = subsegment(trace);
    let body = valid.to_string();
    match n % BAD_KINDS.len() {
        0 => Vec::new(),
        1 => format!("{HEADER}{body}").into_bytes(),
        2 => with_header(r#"{"format":"xml","version":1}"#, &body),
        3 => with_header(r#"{"format":"json","version":"1"}"#, &body),
        4 => with_header(r#"{"format":"json"}"#, &body),
        5 => with_header("format=json version=1", &body),
        6 => with_header(HEADER, ""),
        7 => with_header(HEADER, &body[..body.len() / 2]),
        8 => with_header(HEADER, &format!("{body}}}")),
        9 => with_header(HEADER, &json!([valid]).to_string()),
        10 => with_header(HEADER, "1795605003.94"),
        11 => with_header(HEADER, r#""subsegment""#),
        12 => with_header(HEADER, "null"),
        13 => with_header(HEADER, "true"),
        14 => with_header(HEADER, &without(valid, "id").to_string()),
        15 => with_header(HEADER, &without(valid, "trace_id").to_string()),
        16 => with_header(HEADER, &without(valid, "name").to_string()),
        17 => with_header(HEADER, &without(valid, "start_time").to_string()),
        18 => with_header(HEADER, &without(valid, "end_time").to_string()),
        19 => with_header(HEADER, &without(valid, "parent_id").to_string()),
        20 => with_header(HEADER, &with(valid, "id", json!("xyz")).to_string()),
        21 => with_header(HEADER, &with(valid, "trace_id", json!("1-abc")).to_string()),
        22 => with_header(HEADER, &with(valid, "start_time", json!("1.5")).to_string()),
        23 => with_header(HEADER, &with(valid, "name", json!("")).to_string()),
        24 => padded(without(valid, "id"), LARGE_DATAGRAM_BYTES),
        25 => {
            let nested = format!("{}{}", "[".repeat(DEEP_NESTING), "]".repeat(DEEP_NESTING));
            let mut text = body;
            text.insert_str(text.len() - 1, &format!(r#","deep":{nested}"#));
            with_header(HEADER, &text)
        }
        26 => {
            let len = fastrand::usize(1..2_048);
            let mut bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            // Random, but never starting with a valid header.
            bytes[0] = b'#';
            bytes
        }
        _ => {
            let mut datagram = with_header(HEADER, "");
            datagram.extend_from_slice(b"{\"id\":\"");
            datagram.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            datagram.extend_from_slice(&body.as_bytes()[7..]);
            datagram
        }
    }
}

/// The extension's UDP socket as the kernel reports it in `/proc/net/udp`.
#[derive(Debug, Clone, Copy, Default)]
struct SocketStats {
    /// Bytes waiting to be read.
    queued: u64,
    /// Datagrams dropped because the receive queue was full.
    drops: u64,
}

fn socket_stats(port: u16) -> SocketStats {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .unwrap_or_else(|| panic!("no UDP socket on 127.0.0.1:{port} in /proc/net/udp"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let queued = fields[4]
        .split_once(':')
        .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        .expect("rx_queue");
    let drops = fields.last().and_then(|d| d.parse().ok()).expect("drops");
    SocketStats { queued, drops }
}

/// Waits until the extension has read everything queued on its socket.
async fn drained(port: u16) {
    let deadline = Instant::now() + WAIT;
    // The kernel offers no notification for another process's queue; poll it.
    while socket_stats(port).queued > 0 {
        assert!(Instant::now() < deadline, "the extension stopped reading");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One invocation's share: bad datagrams with valid subsegments interleaved, built before the
/// invocation so that sending is all that happens while it runs.
#[derive(Default)]
struct Share {
    datagrams: Vec<Vec<u8>>,
    bad: usize,
    bad_by_kind: HashMap<&'static str, usize>,
    valid_ids: Vec<String>,
    bytes: usize,
}

fn share(trace: &TraceHeader, first: usize) -> Share {
    let mut share = Share::default();
    for i in 0..BAD_PER_INVOCATION {
        let n = first + i;
        share.datagrams.push(bad_datagram(n, trace));
        share.bad += 1;
        *share
            .bad_by_kind
            .entry(BAD_KINDS[n % BAD_KINDS.len()])
            .or_default() += 1;
        if (i + 1) % VALID_EVERY == 0 {
            let doc = subsegment(trace);
            share
                .valid_ids
                .push(doc["id"].as_str().expect("id").to_owned());
            // One large valid document per invocation: big is not bad.
            share.datagrams.push(if i + 1 == VALID_EVERY {
                padded(doc, LARGE_DATAGRAM_BYTES)
            } else {
                with_header(HEADER, &doc.to_string())
            });
        }
    }
    share.bytes = share.datagrams.iter().map(Vec::len).sum();
    share
}

/// Sends `datagrams` once the platform reports the invocation started, in bursts, and returns
/// when the extension has read them all.
async fn send_during(observer: &Observer, request_id: &str, datagrams: &[Vec<u8>], port: u16) {
    invocation_started(observer, request_id).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (mut burst, mut burst_bytes) = (0, 0);
    for datagram in datagrams {
        socket
            .send_to(datagram, ("127.0.0.1", port))
            .await
            .expect("send");
        burst += 1;
        burst_bytes += datagram.len();
        if burst >= BURST_DATAGRAMS || burst_bytes >= BURST_BYTES {
            drained(port).await;
            (burst, burst_bytes) = (0, 0);
        }
    }
    drained(port).await;
}

/// What the test sent across all invocations.
#[derive(Default)]
struct Totals {
    bad: usize,
    bad_by_kind: HashMap<&'static str, usize>,
    valid_ids: Vec<String>,
    function_ids: Vec<String>,
    bytes: usize,
    slowest_send: Duration,
}

/// Runs the invocations, sending one share of datagrams during each.
async fn invoke_under_fire(lambda: &mut Emulator, udp_port: u16) -> Totals {
    let observer = lambda.observer();
    let mut totals = Totals::default();
    for i in 0..INVOCATIONS {
        let trace = TraceHeader::sampled();
        let request_id = new_uuid();
        let invoke = Invoke::new(json!({
            "subsegments": FUNCTION_SUBSEGMENTS,
            "sleep_ms": INVOCATION_MS,
        }))
        .traced(trace.clone())
        .request_id(request_id.clone());
        let share = share(&trace, i * BAD_PER_INVOCATION);
        let sender = async {
            send_during(&observer, &request_id, &share.datagrams, udp_port).await;
            Instant::now()
        };
        let (inv, sent_at) = tokio::join!(lambda.invoke(invoke), sender);
        let inv = inv.expect("invoke");
        assert_eq!(inv.status, InvocationStatus::Success, "invocation {i}");
        assert!(!inv.cold, "invocation {i}: the environment was reset");
        // Everything was sent, and read by the extension, while the invocation ran.
        let sending = sent_at.saturating_duration_since(inv.started_at);
        assert!(
            sent_at < inv.response_at.expect("response"),
            "invocation {i}: sending took {sending:?} of {INVOCATION_MS} ms"
        );
        totals.slowest_send = totals.slowest_send.max(sending);
        assert_eq!(sent_ids(&inv).len(), FUNCTION_SUBSEGMENTS);
        totals.function_ids.extend(sent_ids(&inv));
        totals.valid_ids.extend(share.valid_ids);
        totals.bad += share.bad;
        totals.bytes += share.bytes;
        for (kind, n) in share.bad_by_kind {
            *totals.bad_by_kind.entry(kind).or_default() += n;
        }
    }
    totals
}

#[tokio::test]
async fn ten_thousand_bad_datagrams_are_rejected_counted_and_never_sent() {
    let began = Instant::now();
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options::default()).await;

    // A cold start first: the extension's socket exists from then on.
    let cold = lambda
        .invoke(
            Invoke::new(json!({"subsegments": FUNCTION_SUBSEGMENTS}))
                .traced(TraceHeader::sampled()),
        )
        .await
        .expect("invoke");
    assert_eq!(cold.status, InvocationStatus::Success);
    let Totals {
        bad,
        bad_by_kind,
        valid_ids,
        mut function_ids,
        bytes,
        slowest_send,
    } = invoke_under_fire(&mut lambda, udp_port).await;
    function_ids.extend(sent_ids(&cold));
    let stats = socket_stats(udp_port);

    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0), "{ext:?}");
    assert!(ext.exited_before_deadline, "{ext:?}");

    // Every datagram reached the extension: the pacing kept the receive queue from overflowing.
    assert_eq!(
        stats.drops, 0,
        "the kernel dropped datagrams on the extension's socket (receive queue full)"
    );
    assert_eq!(bad, INVOCATIONS * BAD_PER_INVOCATION);
    assert_eq!(bad_by_kind.len(), BAD_KINDS.len());

    // Every valid document arrived, and nothing else.
    let docs = sink.documents();
    let stored: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let missing: Vec<&String> = valid_ids
        .iter()
        .chain(&function_ids)
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "{} missing: {missing:?}", missing.len());
    let ours: HashSet<&str> = valid_ids
        .iter()
        .chain(&function_ids)
        .map(String::as_str)
        .collect();
    for doc in &docs {
        assert!(
            ours.contains(doc.id.as_str()) || matches!(doc.name(), "Runtime" | "Cold Start"),
            "sent a document nobody sent: {}",
            doc.raw
        );
    }
    let rejected_by_sink: Vec<String> = sink
        .put_calls()
        .iter()
        .flat_map(|c| c.documents.iter())
        .filter_map(|d| d.rejection.as_ref().map(|r| format!("{r:?}: {}", d.raw)))
        .collect();
    assert!(rejected_by_sink.is_empty(), "{rejected_by_sink:?}");

    // Counted exactly, logged rarely.
    let c = counters(&lambda).expect("counters logged at shutdown");
    assert_eq!(c["rejected"], bad as u64, "{c:?}");
    assert_eq!(
        c["received"],
        (valid_ids.len() + function_ids.len()) as u64,
        "{c:?}"
    );
    assert_eq!(c["spilled"], 0, "{c:?}");
    let log = extension_log(&lambda);
    let rejection_lines = log
        .iter()
        .filter(|l| l.contains("datagram rejected"))
        .count();
    assert!(
        (1..=MAX_REJECTION_LOG_LINES).contains(&rejection_lines),
        "{rejection_lines} rejection log lines for {bad} rejected datagrams"
    );

    let elapsed = began.elapsed();
    eprintln!(
        "bad input: {bad} bad datagrams ({} kinds), {} valid from the test, {} from the function, \
         {} KiB sent; rejected={} received={} drops={} rejection log lines={rejection_lines}; \
         slowest send {slowest_send:.2?} of {INVOCATION_MS} ms, test {elapsed:.2?}",
        BAD_KINDS.len(),
        valid_ids.len(),
        function_ids.len(),
        bytes / 1024,
        c["rejected"],
        c["received"],
        stats.drops,
    );
}
