//! Supervision, end to end: a panic injected into the lifecycle loop, the UDP reader and the
//! OTLP/HTTP receiver in turn (the extension's test-only `fault-injection` feature, which the
//! tests crate enables, so the debug binaries built with it carry it). Each time the function's
//! invocations keep completing within the flush timeout, the documents received before and
//! after the panic reach X-Ray, the extension exits cleanly at SHUTDOWN, and the panic gives
//! exactly one error line.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use common::{
    EXTENSION, Harness, Options, WAIT, counters, extension_log, invocation_started, invoke_traced,
    sent_ids,
};
use serde_json::json;
use xray_extension::fault;
use xray_extension_tests::emulator::{Emulator, InvocationStatus, Invoke};
use xray_extension_tests::sink::otlp as pb;
use xray_extension_tests::trace::{TraceHeader, new_segment_id, new_uuid};

/// Where the fault is injected: the value of `XRAY_EXTENSION_FAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Lifecycle,
    UdpReader,
    OtlpReceiver,
    WarmUp,
}

impl Site {
    fn as_str(self) -> &'static str {
        match self {
            Site::Lifecycle => "lifecycle",
            Site::UdpReader => "udp_reader",
            Site::OtlpReceiver => "otlp_receiver",
            Site::WarmUp => "warm_up",
        }
    }
}

/// How the extension writes its lines (`AWS_LAMBDA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// An extension armed to panic at `site`, flushing at the end of each invocation, its
/// OTLP/HTTP receiver on a free port (returned), initialised.
async fn armed(site: Site, format: Format) -> (Harness, u16) {
    let otlp_port = xray_extension_tests::net::free_tcp_port().expect("tcp port");
    let mut extension_env: Vec<(String, String)> = vec![
        ("XRAY_EXTENSION_FLUSH_STRATEGY".into(), "end".into()),
        (fault::VARIABLE.into(), site.as_str().into()),
        (
            "XRAY_EXTENSION_OTLP_ADDRESS".into(),
            format!("127.0.0.1:{otlp_port}"),
        ),
    ];
    if format == Format::Json {
        extension_env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
    }
    let mut harness = Harness::start(Options {
        extension_env,
        ..Options::default()
    })
    .await;
    harness.lambda.prewarm().await.expect("init");
    assert!(
        extension_log(&harness.lambda)
            .iter()
            .any(|l| l.contains("fault injection armed")),
        "the extension binary was built without the fault-injection feature: build it with the \
         tests crate (`cargo build -p xray-extension -p xray-extension-tests --bins`)"
    );
    (harness, otlp_port)
}

/// One traced invocation that sends two subsegments: it completes, held no longer than the
/// flush timeout; the ids it sent.
async fn invoke(lambda: &mut Emulator) -> Vec<String> {
    let (_, inv) = invoke_traced(lambda, json!({"subsegments": 2})).await;
    assert_eq!(inv.status, InvocationStatus::Success);
    assert!(!inv.timed_out && inv.failure.is_none(), "{inv:?}");
    let post = inv.post_runtime.expect("post-runtime duration");
    let bound = common::flush_timeout();
    assert!(
        post < bound,
        "post-runtime {post:?}, flush timeout {bound:?}"
    );
    let ids = sent_ids(&inv);
    assert_eq!(ids.len(), 2);
    ids
}

/// Sends one subsegment datagram per name, to the extension's UDP port; their ids.
async fn send_datagrams(port: u16, names: &[&str]) -> Vec<String> {
    let trace = TraceHeader::sampled();
    let parent = trace.parent.clone().expect("a parent");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut ids = Vec::new();
    for name in names {
        let id = new_segment_id();
        let body = json!({
            "id": id, "name": name, "trace_id": trace.root, "parent_id": parent,
            "type": "subsegment", "start_time": now, "end_time": now + 0.001,
        });
        let datagram = format!("{{\"format\":\"json\",\"version\":1}}\n{body}");
        socket
            .send_to(datagram.as_bytes(), ("127.0.0.1", port))
            .await
            .expect("send");
        ids.push(id);
    }
    ids
}

/// POSTs one span named `name` to the receiver; the answer's status (`None`: no answer, the
/// connection was closed).
async fn post_span(port: u16, name: &str) -> (Option<u16>, String) {
    use xray_extension_tests::http;
    let trace = TraceHeader::sampled();
    let parent = trace.parent.clone().expect("a parent");
    let id = new_segment_id();
    let request = pb::build_request(
        &trace.root,
        "supervision",
        &[pb::SpanSpec {
            name,
            span_id: &id,
            parent_span_id: &parent,
            times: None,
        }],
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let req = http::request(hyper::Method::POST, addr, "/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(http::body(request))
        .expect("request");
    let status = http::send(addr, req, Some(WAIT))
        .await
        .ok()
        .map(|r| r.status.as_u16());
    (status, id)
}

/// The marker that makes the armed site panic, as a name.
fn marker() -> &'static str {
    std::str::from_utf8(fault::MARKER).expect("an ASCII marker")
}

/// The scenario for `site`: documents before, the panic, documents right after it (while a
/// receiver is down) and later ones; then the checks.
async fn a_panic_degrades_the_extension_never_the_function(site: Site, format: Format) {
    let (harness, otlp_port) = armed(site, format).await;
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = harness;
    let mut expected = invoke(&mut lambda).await;
    let mut spans = Vec::new();
    let (status, span) = post_span(otlp_port, "before").await;
    assert_eq!(status, Some(200));
    spans.push(span);

    match site {
        Site::Lifecycle | Site::UdpReader => {
            send_datagrams(udp_port, &[marker()]).await;
        }
        Site::OtlpReceiver => {
            let (status, _) = post_span(otlp_port, marker()).await;
            assert_eq!(status, None, "the request that panicked got an answer");
        }
        // It panicked as the first invocation began; the first send reaped it.
        Site::WarmUp => {}
    }
    // At once: a restarted receiver finds them waiting in its socket.
    expected.extend(send_datagrams(udp_port, &["right after 1", "right after 2"]).await);
    let (status, span) = post_span(otlp_port, "right after").await;
    assert_eq!(status, Some(200));
    spans.push(span);
    lambda
        .observer()
        .wait_for_output(EXTENSION, "task stopped", WAIT)
        .await
        .expect("the panic's error line");

    for _ in 0..2 {
        expected.extend(invoke(&mut lambda).await);
    }
    let (status, span) = post_span(otlp_port, "later").await;
    assert_eq!(status, Some(200));
    spans.push(span);

    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline, "took {:?}", ext.took);

    let docs = sink.documents();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !docs.iter().any(|d| &&d.id == id))
        .collect();
    assert!(missing.is_empty(), "{site:?}: not delivered: {missing:?}");
    let arrived = sink.spans();
    let missing: Vec<&String> = spans
        .iter()
        .filter(|id| !arrived.iter().any(|s| &&s.span_id == id))
        .collect();
    assert!(
        missing.is_empty(),
        "{site:?}: spans not delivered: {missing:?}"
    );

    the_panic_gave_one_error_line(&lambda, site, format);
}

/// Exactly one error line (the panic's, in `format`, with the counters), no Rust panic message,
/// and `task_failures` 1 in the counters at SHUTDOWN.
fn the_panic_gave_one_error_line(lambda: &Emulator, site: Site, format: Format) {
    let log = extension_log(lambda);
    let errors: Vec<&String> = log.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{site:?}: {errors:#?}");
    let line = errors[0];
    match format {
        Format::Text => {
            for needle in [
                "task stopped",
                "panicked",
                "fault injected into",
                "fault.rs",
                "received=",
            ] {
                assert!(line.contains(needle), "{needle:?} not in {line}");
            }
        }
        Format::Json => {
            let json = line.find('{').expect("a JSON line");
            let v: serde_json::Value =
                serde_json::from_str(&line[json..]).expect("one JSON object");
            assert_eq!(v["level"], "ERROR", "{v}");
            assert_eq!(v["message"], "task stopped", "{v}");
            assert_eq!(v["task"], site.as_str(), "{v}");
            assert_eq!(v["ended"], "panicked", "{v}");
            assert!(
                v["location"]
                    .as_str()
                    .is_some_and(|l| l.contains("fault.rs")),
                "{v}"
            );
            assert!(v["received"].is_u64(), "{v}");
        }
    }
    assert!(
        !log.iter()
            .any(|l| l.contains("thread '") && l.contains("panicked at")),
        "Rust's default panic message was printed too:\n{log:#?}"
    );
    let (task_failures, dropped) = match format {
        Format::Text => {
            let c = counters(lambda).expect("counters logged at shutdown");
            (c["task_failures"], c["dropped_at_shutdown"])
        }
        Format::Json => {
            let line = log
                .iter()
                .rfind(|l| l.contains(r#""message":"counters""#))
                .expect("counters logged at shutdown");
            let v: serde_json::Value =
                serde_json::from_str(&line[line.find('{').expect("JSON")..]).expect("JSON");
            let n = |k: &str| v[k].as_u64().expect("a count");
            (n("task_failures"), n("dropped_at_shutdown"))
        }
    };
    assert_eq!(task_failures, 1);
    assert_eq!(dropped, 0);
}

#[tokio::test]
async fn a_panic_in_the_lifecycle_loop_keeps_the_buffer_and_releases_every_invocation() {
    a_panic_degrades_the_extension_never_the_function(Site::Lifecycle, Format::Text).await;
}

#[tokio::test]
async fn a_panic_in_the_udp_reader_restarts_it_on_the_same_socket() {
    a_panic_degrades_the_extension_never_the_function(Site::UdpReader, Format::Text).await;
}

#[tokio::test]
async fn a_panic_in_the_otlp_receiver_restarts_it_on_the_same_socket() {
    a_panic_degrades_the_extension_never_the_function(Site::OtlpReceiver, Format::Text).await;
}

#[tokio::test]
async fn a_panic_in_the_client_warm_up_leaves_the_first_send_to_prepare_the_client() {
    a_panic_degrades_the_extension_never_the_function(Site::WarmUp, Format::Text).await;
}

#[tokio::test]
async fn a_panic_in_the_lifecycle_loop_during_a_held_invocation_releases_it() {
    let (harness, _) = armed(Site::Lifecycle, Format::Text).await;
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = harness;
    let observer = lambda.observer();
    let request_id = new_uuid();
    let held = Invoke::new(json!({"subsegments": 2, "sleep_ms": 300}))
        .traced(TraceHeader::sampled())
        .request_id(request_id.clone());
    // The marker arrives while the function runs: the INVOKE is held for its runtimeDone.
    let during = async {
        invocation_started(&observer, &request_id).await;
        send_datagrams(udp_port, &[marker()]).await;
        observer
            .wait_for_output(EXTENSION, "task stopped", WAIT)
            .await
            .expect("the panic's error line");
        std::time::Instant::now()
    };
    let (inv, panicked_at) = tokio::join!(lambda.invoke(held), during);
    let inv = inv.expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
    assert!(
        panicked_at < inv.response_at.expect("response"),
        "the panic came while the function ran"
    );
    assert!(!inv.timed_out && inv.failure.is_none(), "{inv:?}");
    let post = inv.post_runtime.expect("post-runtime duration");
    assert!(
        post < common::flush_timeout(),
        "post-runtime {post:?}, flush timeout {:?}",
        common::flush_timeout()
    );
    let mut expected = sent_ids(&inv);
    expected.extend(invoke(&mut lambda).await);
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    let docs = sink.documents();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !docs.iter().any(|d| &&d.id == id))
        .collect();
    assert!(missing.is_empty(), "not delivered: {missing:?}");
    the_panic_gave_one_error_line(&lambda, Site::Lifecycle, Format::Text);
}

#[tokio::test]
async fn in_json_logs_the_panic_is_one_json_line_with_structured_fields() {
    a_panic_degrades_the_extension_never_the_function(Site::UdpReader, Format::Json).await;
}
