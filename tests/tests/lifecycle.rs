//! The lifecycle against the Lambda that really exists: registration where INVOKE is refused
//! (Lambda Managed Instances), the Telemetry API schema, and flush points that must never hold
//! the function longer than promised.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step fails the test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{EXTENSION, Harness, Options, WAIT, counters, extension_log, invoke_traced, sent_ids};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use xray_extension::lambda::api::{LambdaApi, Telemetry};
use xray_extension_tests::emulator::{Invocation, InvocationStatus, Invoke};
use xray_extension_tests::http::{self as h, Server};
use xray_extension_tests::sink::{Fault, FaultPlan};
use xray_extension_tests::trace::TraceHeader;

/// Invokes `n` traced invocations of 2 subsegments each, with the extension registered for
/// SHUTDOWN only; returns the ids the function sent.
async fn invoke_shutdown_only(
    lambda: &mut xray_extension_tests::emulator::Emulator,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (_, inv) = invoke_traced(lambda, json!({"subsegments": 2})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        // Registered for SHUTDOWN only: the extension never takes part in an invocation.
        assert_eq!(inv.extension_next(EXTENSION), None);
        ids.extend(sent_ids(&inv));
    }
    ids
}

/// Asserts that every subsegment the invocation sent is already in the sink: with `end`, it was
/// flushed before our /event/next.
fn assert_flushed_at_its_end(sink: &xray_extension_tests::sink::XraySink, inv: &Invocation) {
    let docs = sink.documents();
    for id in sent_ids(inv) {
        assert!(
            docs.iter().any(|d| d.id == id),
            "{id} not sent at the invocation's flush point"
        );
    }
}

/// The extension's error lines that mention `needle`.
fn error_lines(lambda: &xray_extension_tests::emulator::Emulator, needle: &str) -> Vec<String> {
    extension_log(lambda)
        .into_iter()
        .filter(|l| l.contains("ERROR") && l.contains(needle))
        .collect()
}

/// Checks that every id reached the sink while the environment ran, and that the shutdown was
/// clean.
async fn assert_background_delivery(harness: Harness, ids: &[String]) {
    let Harness {
        mut lambda, sink, ..
    } = harness;
    // Sent on the timer, before any SHUTDOWN.
    let wanted = ids.to_vec();
    sink.wait_for("the function's subsegments", WAIT, move |r| {
        wanted
            .iter()
            .all(|id| r.documents().iter().any(|d| &d.id == id))
    })
    .await
    .expect("sent in the background");
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline);
    eprintln!("exit after SHUTDOWN: {:?}", ext.took);
    let events = lambda.observer().extension_events(EXTENSION);
    assert_eq!(events.len(), 1, "SHUTDOWN only");
    assert_eq!(events[0].event_type(), "SHUTDOWN");
    let c = counters(&lambda).expect("counters logged at shutdown");
    assert_eq!(c["received"], ids.len() as u64);
    assert_eq!(c["dropped_at_shutdown"], 0);
}

#[tokio::test]
async fn on_managed_instances_it_registers_for_shutdown_only_and_sends_in_the_background() {
    let harness = Harness::start(Options {
        managed_instances: true,
        ..Options::strategy("end")
    })
    .await;
    let mut harness = harness;
    let ids = invoke_shutdown_only(&mut harness.lambda, 3).await;
    assert_eq!(ids.len(), 6);
    let subscriptions = harness.lambda.observer().telemetry_subscriptions();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].subscription.schema_version, "2025-01-29");
    let log = extension_log(&harness.lambda);
    assert!(
        !log.iter().any(|l| l.contains("refused")),
        "no refusal expected on Managed Instances: SHUTDOWN only from the start\n{log:#?}"
    );
    assert_background_delivery(harness, &ids).await;
}

#[tokio::test]
async fn a_refused_invoke_registration_falls_back_to_shutdown_only() {
    // The environment refuses INVOKE although its initialization type does not say so.
    let mut options = Options::strategy("end");
    options.managed_instances = true;
    options.extension_env.push((
        "AWS_LAMBDA_INITIALIZATION_TYPE".to_owned(),
        "on-demand".to_owned(),
    ));
    let mut harness = Harness::start(options).await;
    let ids = invoke_shutdown_only(&mut harness.lambda, 2).await;
    let log = extension_log(&harness.lambda);
    assert!(
        log.iter()
            .any(|l| l.contains("registration for INVOKE refused")),
        "{log:#?}"
    );
    assert_background_delivery(harness, &ids).await;
}

/// A Telemetry API that knows only the older schema: answers 400 `ValidationError` to any
/// other, records each version asked for.
async fn old_telemetry_api() -> (Server, Arc<std::sync::Mutex<Vec<String>>>) {
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(
        listener,
        64 * 1024,
        Arc::new(move |req: h::Request| {
            let seen = seen.clone();
            Box::pin(async move {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let schema = body["schemaVersion"].as_str().unwrap_or("").to_owned();
                seen.lock().unwrap().push(schema.clone());
                if req.method == Method::PUT && schema == "2022-12-13" {
                    h::bytes_response(StatusCode::OK, "text/plain", "OK")
                } else {
                    h::json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"errorType": "ValidationError", "errorMessage": "schemaVersion"}),
                    )
                }
            })
        }),
    )
    .unwrap();
    (server, asked)
}

#[tokio::test]
async fn a_refused_telemetry_schema_falls_back_to_2022_12_13() {
    let (server, asked) = old_telemetry_api().await;
    let api = LambdaApi::new(&server.local_addr().to_string()).unwrap();
    let subscribed = api.subscribe_telemetry("ext-1", 4271).await.unwrap();
    assert_eq!(subscribed, Telemetry::Subscribed);
    assert_eq!(*asked.lock().unwrap(), ["2025-01-29", "2022-12-13"]);
}

/// An Extensions API that departs from the documented event shapes (no `invokedFunctionArn`,
/// `deadlineMs` as a float, an unknown field, an upper-case shutdown reason) must not stop the
/// flush points, the shutdown flush or the counters line.
#[tokio::test]
async fn odd_extension_events_keep_the_flush_points_and_the_shutdown_flush() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    lambda.deviate_events(Some(Arc::new(|event: &mut Value| {
        if let Some(object) = event.as_object_mut() {
            object.remove("invokedFunctionArn");
            if let Some(deadline) = object.get("deadlineMs").and_then(Value::as_u64) {
                #[allow(clippy::cast_precision_loss, reason = "test data")]
                let float = deadline as f64 + 0.5;
                object.insert("deadlineMs".to_owned(), json!(float));
            }
            object.insert("futureField".to_owned(), json!({"x": [1, 2]}));
            if let Some(reason) = object.get("shutdownReason").and_then(Value::as_str) {
                let upper = reason.to_ascii_uppercase();
                object.insert("shutdownReason".to_owned(), json!(upper));
            }
        }
    })));
    let mut all = Vec::new();
    for _ in 0..3 {
        let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        assert_flushed_at_its_end(&sink, &inv);
        all.extend(sent_ids(&inv));
    }
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    let c = counters(&lambda).expect("counters logged at shutdown");
    assert_eq!(c["received"], all.len() as u64);
    assert_eq!(c["dropped_at_shutdown"], 0);
}

fn taken_udp() -> (std::net::UdpSocket, String) {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    (taken, address)
}

/// Runs three traced invocations and a shutdown; checks the function never noticed anything.
async fn run_unharmed(lambda: &mut xray_extension_tests::emulator::Emulator) -> Vec<TraceHeader> {
    let mut traces = Vec::new();
    for _ in 0..3 {
        let (trace, inv) = invoke_traced(lambda, json!({"subsegments": 1})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        assert!(inv.reset.is_none(), "the environment must not be reset");
        assert!(
            inv.extension_next(EXTENSION).is_some(),
            "the extension keeps taking part"
        );
        traces.push(trace);
    }
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    assert!(
        lambda.observer().api_errors().is_empty(),
        "{:?}",
        lambda.observer().api_errors()
    );
    traces
}

/// Starts with `variable` set to a taken `value`, runs three invocations unharmed, and checks
/// the one error line naming the variable and the value. Returns what the tests look at next.
async fn with_a_taken_port(
    variable: &str,
    value: &str,
) -> (
    xray_extension_tests::emulator::Emulator,
    xray_extension_tests::sink::XraySink,
    Vec<TraceHeader>,
) {
    let mut options = Options::strategy("end");
    options
        .extension_env
        .push((variable.to_owned(), value.to_owned()));
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(options).await;
    let traces = run_unharmed(&mut lambda).await;
    let errors = error_lines(&lambda, variable);
    assert_eq!(errors.len(), 1, "{:#?}", extension_log(&lambda));
    assert!(errors[0].contains(value), "{}", errors[0]);
    assert!(counters(&lambda).is_some(), "counters logged at shutdown");
    (lambda, sink, traces)
}

/// A taken UDP port degrades the extension, not the function: one error naming the address and
/// the variable, registration and /event/next as usual, and our own documents still exported.
#[tokio::test]
async fn a_taken_udp_port_degrades_the_extension_not_the_function() {
    let (taken, address) = taken_udp();
    let (_lambda, sink, traces) = with_a_taken_port("XRAY_EXTENSION_UDP_ADDRESS", &address).await;
    // Export is alive: each invocation's Runtime subsegment (ours) reached X-Ray.
    let docs = sink.documents();
    for t in &traces {
        let runtime = common::named(&docs, &t.root, "Runtime");
        assert_eq!(runtime.len(), 1, "{}", t.root);
    }
    drop(taken);
}

/// A taken telemetry port: one error naming the port and the variable, no subscription (Lambda
/// would deliver to whoever holds the port), the function's documents still sent.
#[tokio::test]
async fn a_taken_telemetry_port_degrades_the_extension_not_the_function() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (lambda, sink, traces) = with_a_taken_port("XRAY_EXTENSION_TELEMETRY_PORT", &port).await;
    assert!(lambda.observer().telemetry_subscriptions().is_empty());
    let docs = sink.documents();
    for t in &traces {
        assert_eq!(common::in_trace(&docs, &t.root).len(), 1, "{}", t.root);
    }
    let c = counters(&lambda).expect("counters logged at shutdown");
    assert_eq!(c["received"], 3);
    assert_eq!(c["dropped_at_shutdown"], 0);
    drop(taken);
}

/// SIGTERM is a SHUTDOWN: what is buffered is flushed, the counters are logged, exit 0.
#[tokio::test]
async fn sigterm_flushes_logs_the_counters_and_exits_0() {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options::strategy("background")).await;
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 3})).await;
    let ids = sent_ids(&inv);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(
            i32::try_from(common::extension_pid(
                "XRAY_EXTENSION_UDP_ADDRESS",
                &format!("127.0.0.1:{udp_port}"),
            ))
            .expect("a pid"),
        ),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let wanted = ids.clone();
    sink.wait_for("the invocation's subsegments", WAIT, move |r| {
        wanted
            .iter()
            .all(|id| r.documents().iter().any(|d| &d.id == id))
    })
    .await
    .expect("flushed at SIGTERM");
    lambda
        .observer()
        .wait_for_output(EXTENSION, "counters", WAIT)
        .await
        .expect("counters logged at SIGTERM");
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0), "{ext:?}");
    let c = counters(&lambda).expect("counters logged at SIGTERM");
    assert_eq!(c["received"], 3);
    assert_eq!(c["dropped_at_shutdown"], 0);
}

/// A preloaded `getaddrinfo` that never answers in time (30 s), as a resolver that does not
/// answer makes it: built with the system C compiler into a temporary directory.
fn hanging_resolver() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xray-hang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = dir.join("hang.c");
    std::fs::write(
        &source,
        "#include <netdb.h>\n#include <unistd.h>\n\
         int getaddrinfo(const char *n, const char *s, const struct addrinfo *h, struct addrinfo **r)\n\
         { (void)n; (void)s; (void)h; (void)r; sleep(30); return EAI_AGAIN; }\n",
    )
    .expect("write hang.c");
    let library = dir.join("libhang.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("cc");
    assert!(status.success(), "cc failed");
    library
}

/// Exit comes at once after the counters line, even while a DNS lookup blocks a thread.
#[tokio::test]
async fn exit_follows_the_counters_at_once_with_a_dns_lookup_hanging() {
    let mut options = Options::strategy("end");
    // A name only the resolver can answer: every send waits in getaddrinfo.
    options.xray_endpoint = Some("http://xray.hang.invalid:4000".to_owned());
    // The preload works for the dynamically linked native build; a static build (the layer's
    // musl binary under qemu) resolves without it and this checks the exit time only.
    if std::env::var_os("XRAY_EXTENSION_BIN").is_none() {
        options.extension_env.push((
            "LD_PRELOAD".to_owned(),
            hanging_resolver().to_string_lossy().into_owned(),
        ));
    }
    let Harness { mut lambda, .. } = Harness::start(options).await;
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    assert_eq!(inv.status, InvocationStatus::Success);
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    eprintln!("exit after SHUTDOWN: {:?}", ext.took);
    assert!(ext.exited_before_deadline, "{ext:?}");
    assert_eq!(ext.exit_code(), Some(0), "{ext:?}");
    assert!(counters(&lambda).is_some(), "counters logged");
}

/// A runtimeDone that never arrives (lost in delivery): the invocation is released before its
/// deadline (no timeout, no reset), one error is logged, the next invocation is not held at
/// all, and holding resumes once a runtimeDone arrives again.
#[tokio::test]
async fn a_lost_runtime_done_costs_one_invocation_then_nothing_is_held_until_telemetry_returns() {
    let function_timeout = Duration::from_secs(2).mul_f64(common::time_scale());
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function_timeout,
        ..Options::strategy("end")
    })
    .await;
    // The first invocation's runtimeDone is lost: delivered as a type nobody knows.
    lambda.deviate_telemetry(Some(Arc::new(|event: &mut Value| {
        if event["type"] == "platform.runtimeDone" && event["record"]["requestId"] == "lost-1" {
            event["type"] = json!("platform.lost");
        }
    })));
    let lost = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1}))
                .traced(TraceHeader::sampled())
                .request_id("lost-1"),
        )
        .await
        .expect("invoke");
    assert_eq!(lost.status, InvocationStatus::Success);
    assert!(
        lost.reset.is_none(),
        "released before the deadline: no reset"
    );
    let held = lost.post_runtime.expect("finished");
    eprintln!(
        "post-runtime time with a lost runtimeDone: {held:?} (function timeout {function_timeout:?})"
    );
    assert!(held < function_timeout, "{held:?}");

    // Degraded: the next invocations are not held at all. Their runtimeDone is delivered
    // after the freeze, during the next invocation when it runs long enough (the Telemetry
    // API buffers 25 ms): the second one sees the first one's and holding resumes.
    // The handler runs long enough for "our next came first" to say "not held".
    let sleep_ms = u64::try_from(
        Duration::from_millis(200)
            .mul_f64(common::time_scale())
            .as_millis(),
    )
    .unwrap();
    for _ in 0..2 {
        let free = lambda
            .invoke(
                Invoke::new(json!({"subsegments": 1, "sleep_ms": sleep_ms}))
                    .traced(TraceHeader::sampled()),
            )
            .await
            .expect("invoke");
        assert_eq!(free.status, InvocationStatus::Success);
        let ext_next = free.extension_next(EXTENSION).expect("extension next");
        let runtime_done = free.runtime_done_at.expect("runtime done");
        assert!(
            ext_next < runtime_done,
            "not held: our /event/next came before the runtime's"
        );
    }
    lambda
        .observer()
        .wait_for_output(EXTENSION, "holding invocations as configured", WAIT)
        .await
        .expect("holding resumes");

    // Held again: `end` delivers before the invocation ends.
    let (_, held_again) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    assert_flushed_at_its_end(&sink, &held_again);
    let post = held_again.post_runtime.expect("finished");
    assert!(post < common::flush_timeout(), "{post:?}");

    lambda.deviate_telemetry(None);
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let errors = error_lines(&lambda, "runtimeDone");
    assert_eq!(errors.len(), 1, "{:#?}", extension_log(&lambda));
    let c = counters(&lambda).expect("counters");
    assert_eq!(c["received"], 5);
    assert_eq!(c["dropped_at_shutdown"], 0);
}

/// Lambda retries an asynchronous event with the same request id: the first attempt's
/// runtimeDone must not release the retry (in `end`, the retry's documents are in X-Ray when
/// it ends).
#[tokio::test]
async fn a_retry_with_the_same_request_id_waits_for_its_own_runtime_done() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    let first = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1}))
                .traced(TraceHeader::sampled())
                .request_id("retried-1"),
        )
        .await
        .expect("invoke");
    assert_eq!(first.status, InvocationStatus::Success);
    let retry = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 2, "sleep_ms": 200}))
                .traced(TraceHeader::sampled())
                .request_id("retried-1"),
        )
        .await
        .expect("invoke");
    assert_eq!(retry.status, InvocationStatus::Success);
    let ext_next = retry.extension_next(EXTENSION).expect("extension next");
    let runtime_done = retry.runtime_done_at.expect("runtime done");
    assert!(
        ext_next >= runtime_done,
        "held until the retry's own runtimeDone"
    );
    assert_flushed_at_its_end(&sink, &retry);
    eprintln!("retry post-runtime time: {:?}", retry.post_runtime);
    lambda.shutdown().await.expect("shutdown");
}

/// A shutdown that aborts a send: only what X-Ray had not accepted is counted as dropped, so
/// sent + dropped + unprocessed adds up to exactly what there was.
#[tokio::test]
async fn documents_accepted_before_the_shutdown_abort_are_not_counted_as_dropped() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    // During the invocation X-Ray fails: everything stays buffered for the shutdown.
    sink.set_fault_plan(FaultPlan::always(Fault::ServerError));
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 120})).await;
    assert_eq!(inv.status, InvocationStatus::Success);
    // At shutdown, two calls go through and the third never answers.
    let base = sink.put_calls().len();
    sink.set_fault_plan(FaultPlan::from_fn(move |i| {
        (i >= base + 2).then_some(Fault::Delay(Duration::from_secs(30)))
    }));
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let c = counters(&lambda).expect("counters");
    let total = c["received"] + c["generated"];
    eprintln!(
        "shutdown abort: sent {} dropped {} of {total}",
        c["sent"], c["dropped_at_shutdown"]
    );
    // One call of at most 50 documents hung; the others were accepted.
    assert!((1..=50).contains(&c["dropped_at_shutdown"]), "{c:?}");
    assert!(c["sent"] >= c["received"] - 50, "{c:?}");
    // Nothing counted twice: at most every document once (a re-sent enrichment document with
    // its report figures replaces the first version of the same id in a batch).
    let accounted = c["sent"] + c["dropped_at_shutdown"] + c["unprocessed"];
    assert!(accounted <= total && accounted >= c["received"], "{c:?}");
}
