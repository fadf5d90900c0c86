//! Self-tests of the emulator, with the real `sample-function` and `empty-extension` binaries.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use xray_extension_tests::emulator::{
    Emulator, EmulatorBuilder, EmulatorError, ExtensionSpec, FunctionSpec, InitializationType,
    Invocation, InvocationStatus, Invoke, Observer, ShutdownReason, TelemetryDelivery,
};
use xray_extension_tests::http::{self as h, Server};
use xray_extension_tests::trace::TraceHeader;

const SAMPLE_FUNCTION: &str = env!("CARGO_BIN_EXE_sample-function");
const EMPTY_EXTENSION: &str = env!("CARGO_BIN_EXE_empty-extension");
const EMPTY_NAME: &str = "empty-extension";
const WAIT: Duration = Duration::from_secs(10);

fn function() -> FunctionSpec {
    FunctionSpec::command([SAMPLE_FUNCTION])
}

fn with_empty_extension() -> EmulatorBuilder {
    Emulator::builder()
        .extension(ExtensionSpec::new(EMPTY_EXTENSION))
        .function(function())
}

fn quiet_event() -> Value {
    json!({"subsegments": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_then_warm_invoke_with_the_empty_extension() {
    let mut lambda = with_empty_extension().start().await.unwrap();
    assert!(!lambda.is_initialized());

    let cold = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(cold.cold, "the first invoke initializes");
    assert_eq!(cold.status, InvocationStatus::Success, "{cold:?}");
    let body = cold.response_json().unwrap();
    assert_eq!(body["sampled"], false);
    assert_eq!(body["sent_ids"], json!([]));
    let init = cold.init.as_ref().unwrap();
    assert_eq!(init.status, "success");
    assert_eq!(init.initialization_type, InitializationType::OnDemand);
    let timing = init.extension(EMPTY_NAME).unwrap();
    assert!(timing.external);
    let (spawned, registered, first_next) = (
        timing.spawned_at.unwrap(),
        timing.registered_at.unwrap(),
        timing.first_next_at.unwrap(),
    );
    assert!(spawned <= registered && registered <= first_next);
    // The runtime starts only once every extension has registered.
    assert!(init.runtime_spawned_at.unwrap() >= registered);
    assert!(timing.init_duration().unwrap() < init.duration());
    // The extension may call next before or after the runtime; the invocation waits for both.
    assert!(cold.extension_next(EMPTY_NAME).unwrap() >= cold.started_at);
    assert!(cold.finished_at >= cold.runtime_done_at.unwrap());
    assert!(cold.post_runtime.is_some());

    let warm = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(!warm.cold);
    assert_eq!(warm.status, InvocationStatus::Success);
    assert_ne!(warm.request_id, cold.request_id);
    assert_eq!(lambda.inits().len(), 1);
    assert_eq!(lambda.extension_init_times(), init.extensions);

    let events = lambda.extension_events(EMPTY_NAME);
    let invokes: Vec<&str> = events.iter().filter_map(|e| e.request_id()).collect();
    assert_eq!(
        invokes,
        [cold.request_id.as_str(), warm.request_id.as_str()]
    );
    assert!(
        events
            .iter()
            .all(|e| e.event["invokedFunctionArn"] == lambda.function_arn())
    );
    // No trace header: no `tracing` in INVOKE.
    assert!(events.iter().all(|e| e.event.get("tracing").is_none()));

    let report = lambda.shutdown().await.unwrap();
    let ext = report.extension(EMPTY_NAME).unwrap();
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline && !ext.killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_reported_with_its_type_and_keeps_the_environment() {
    let mut lambda = with_empty_extension().start().await.unwrap();
    let failed = lambda
        .invoke(Invoke::new(json!({"error": true, "subsegments": 0})))
        .await
        .unwrap();
    assert_eq!(failed.status, InvocationStatus::Error);
    assert!(failed.response.is_none());
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.error_type(), Some("SampleError"));
    assert_eq!(
        error.message.as_deref(),
        Some("the event asked for an error")
    );
    assert!(failed.reset.is_none());

    let log = lambda.telemetry_log();
    let done = log
        .iter()
        .find(|e| {
            e.event_type == "platform.runtimeDone" && e.request_id() == Some(&failed.request_id)
        })
        .unwrap();
    assert_eq!(done.record["status"], "error");
    assert!(done.record["errorType"].is_string());

    let next = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(!next.cold, "an error does not reset the environment");
    assert_eq!(next.status, InvocationStatus::Success);
    lambda.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_shuts_down_with_reason_timeout_and_the_next_invoke_is_cold() {
    let mut lambda = with_empty_extension()
        .function_timeout(Duration::from_millis(800))
        .start()
        .await
        .unwrap();
    let hung = lambda
        .invoke(Invoke::new(json!({"hang": true, "subsegments": 0})))
        .await
        .unwrap();
    assert!(hung.timed_out);
    assert_eq!(hung.status, InvocationStatus::Timeout);
    assert!(hung.response.is_none());
    assert!(hung.finished_at.duration_since(hung.started_at) >= Duration::from_millis(800));
    let reset = hung.reset.as_ref().unwrap();
    assert_eq!(reset.reason, ShutdownReason::Timeout);
    assert!(reset.runtime.as_ref().unwrap().killed);
    let ext = reset.extension(EMPTY_NAME).unwrap();
    assert!(ext.shutdown_delivered);
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline);

    let shutdown = lambda.extension_events(EMPTY_NAME).pop().unwrap();
    assert_eq!(shutdown.event_type(), "SHUTDOWN");
    assert_eq!(shutdown.shutdown_reason(), Some("timeout"));
    assert_eq!(shutdown.event["deadlineMs"], reset.deadline_ms);

    let log = lambda.telemetry_log();
    for kind in ["platform.runtimeDone", "platform.report"] {
        let record = log
            .iter()
            .find(|e| e.event_type == kind && e.request_id() == Some(&hung.request_id))
            .unwrap();
        assert_eq!(record.record["status"], "timeout", "{kind}");
    }

    let fresh = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(fresh.cold, "a reset environment initializes again");
    assert_eq!(fresh.status, InvocationStatus::Success);
    assert_eq!(lambda.inits().len(), 2);
    lambda.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_spindown_and_the_extension_exits_before_the_deadline() {
    let mut lambda = with_empty_extension().start().await.unwrap();
    let init = lambda.prewarm().await.unwrap();
    assert_eq!(
        init.initialization_type,
        InitializationType::ProvisionedConcurrency
    );
    let first = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(!first.cold, "a provisioned environment is not a cold start");

    let report = lambda.shutdown().await.unwrap();
    assert_eq!(report.reason, ShutdownReason::Spindown);
    let runtime = report.runtime.as_ref().unwrap();
    assert!(runtime.exit.is_some());
    let ext = report.extension(EMPTY_NAME).unwrap();
    assert!(ext.shutdown_sent && ext.shutdown_delivered);
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline && !ext.killed);
    assert!(ext.took.unwrap() < Duration::from_secs(2));
    let shutdown = lambda.extension_events(EMPTY_NAME).pop().unwrap();
    assert_eq!(shutdown.shutdown_reason(), Some("spindown"));
    assert_eq!(shutdown.event["deadlineMs"], report.deadline_ms);
    assert!(!lambda.is_initialized());
}

/// An HTTP listener standing in for an extension's telemetry endpoint.
struct Collector {
    _server: Server,
    port: u16,
    batches: mpsc::Receiver<(Instant, Vec<Value>)>,
    seen: Vec<(Instant, Value)>,
}

impl Collector {
    async fn start() -> Self {
        Self::failing_first(0).await
    }

    /// A collector that answers 500 to its first `failures` deliveries.
    async fn failing_first(failures: usize) -> Self {
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(failures));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, batches) = mpsc::channel(1024);
        let server = Server::start(
            listener,
            1 << 20,
            Arc::new(move |req: h::Request| {
                let tx = tx.clone();
                let remaining = Arc::clone(&remaining);
                Box::pin(async move {
                    let fail = remaining
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                    if fail {
                        return h::empty_response(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let batch: Vec<Value> = serde_json::from_slice(&req.body).unwrap_or_default();
                    let _ = tx.send((req.body_done_at, batch)).await;
                    h::empty_response(StatusCode::OK)
                })
            }),
        )
        .unwrap();
        Self {
            _server: server,
            port,
            batches,
            seen: Vec::new(),
        }
    }

    /// Receives batches until an event of `kind` (for `request_id`, when given) has arrived.
    async fn until(&mut self, kind: &str, request_id: Option<&str>) -> (Instant, Value) {
        let matches = |e: &Value| {
            e["type"] == kind && request_id.is_none_or(|id| e["record"]["requestId"] == id)
        };
        loop {
            if let Some(found) = self.seen.iter().find(|(_, e)| matches(e)) {
                return found.clone();
            }
            let (at, batch) = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}; seen {:?}", self.seen))
                .unwrap();
            self.seen.extend(batch.into_iter().map(|e| (at, e)));
        }
    }
}

fn subscription(port: u16, host: &str) -> Value {
    json!({
        "schemaVersion": "2022-12-13",
        "types": ["platform"],
        "buffering": {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25},
        "destination": {"protocol": "HTTP", "URI": format!("http://{host}:{port}/telemetry")},
    })
}

/// What a test-driven extension saw.
struct ProbeReport {
    /// Each subscription attempt: status and body.
    subscriptions: Vec<(StatusCode, Value)>,
}

/// Runs an attached extension: registers during the next init, tries each subscription, then
/// takes events until SHUTDOWN.
fn spawn_probe(
    observer: Observer,
    name: &'static str,
    subscriptions: Vec<Value>,
) -> (
    oneshot::Receiver<ProbeReport>,
    tokio::task::JoinHandle<Vec<Value>>,
) {
    let (report_tx, report_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let api = observer.runtime_api();
        let register = h::request(Method::POST, api, "/2020-01-01/extension/register")
            .header("Lambda-Extension-Name", name)
            .body(h::body(r#"{"events":["INVOKE","SHUTDOWN"]}"#))
            .unwrap();
        let registered = h::send(api, register, Some(WAIT)).await.unwrap();
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
        let id = registered
            .header("Lambda-Extension-Identifier")
            .unwrap()
            .to_owned();
        let mut results = Vec::new();
        for body in subscriptions {
            let put = h::request(Method::PUT, api, "/2022-07-01/telemetry")
                .header("Lambda-Extension-Identifier", &id)
                .header("Content-Type", "application/json")
                .body(h::body(body.to_string()))
                .unwrap();
            let answer = h::send(api, put, Some(WAIT)).await.unwrap();
            let parsed = answer
                .json()
                .unwrap_or_else(|_| Value::String(answer.text()));
            results.push((answer.status, parsed));
        }
        let _ = report_tx.send(ProbeReport {
            subscriptions: results,
        });
        let mut events = Vec::new();
        loop {
            let next = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
                .header("Lambda-Extension-Identifier", &id)
                .body(h::body(""))
                .unwrap();
            let event = h::send(api, next, None).await.unwrap().json().unwrap();
            let shutdown = event["eventType"] == "SHUTDOWN";
            events.push(event);
            if shutdown {
                return events;
            }
        }
    });
    (report_rx, task)
}

async fn udp_sink() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reaches_a_subscriber_and_report_follows_every_next() {
    let mut collector = Collector::start().await;
    let (_daemon, daemon_addr) = udp_sink().await;
    let mut lambda = Emulator::builder()
        .extension(ExtensionSpec::new(EMPTY_EXTENSION))
        .extension(ExtensionSpec::attached("probe"))
        .function(function().env("AWS_XRAY_DAEMON_ADDRESS", daemon_addr.to_string()))
        .start()
        .await
        .unwrap();
    let (report, probe) = spawn_probe(
        lambda.observer(),
        "probe",
        vec![subscription(collector.port, "sandbox.localdomain")],
    );

    let header = TraceHeader::sampled();
    let cold = lambda
        .invoke(Invoke::new(json!({"subsegments": 1})).traced(header.clone()))
        .await
        .unwrap();
    assert!(cold.cold);
    assert_eq!(cold.status, InvocationStatus::Success);
    let subscribed = report.await.unwrap();
    assert_eq!(subscribed.subscriptions[0].0, StatusCode::OK);
    assert_eq!(
        subscribed.subscriptions[0].1,
        Value::String("OK".to_owned())
    );
    assert!(lambda.observer().telemetry_subscriptions()[0].during_init);

    check_cold_records(&mut collector, &cold, &header).await;

    // Not sampled: no `tracing` in the platform records (the runtime still gets the header).
    let warm = lambda
        .invoke(Invoke::new(quiet_event()).traced(TraceHeader::not_sampled()))
        .await
        .unwrap();
    assert!(!warm.cold);
    assert!(warm.span_id.is_none());
    let (_, warm_report) = collector
        .until("platform.report", Some(&warm.request_id))
        .await;
    assert!(
        warm_report["record"]["metrics"]
            .get("initDurationMs")
            .is_none()
    );
    assert!(warm_report["record"].get("tracing").is_none());

    let shutdown = lambda.shutdown().await.unwrap();
    let probe_exit = shutdown.extension("probe").unwrap();
    assert!(probe_exit.attached && probe_exit.shutdown_delivered);
    let events = tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
    // The probe saw each INVOKE with the header the runtime got.
    assert_eq!(events[0]["requestId"], cold.request_id.as_str());
    assert_eq!(events[0]["tracing"]["value"], header.to_string());
    assert_eq!(events[1]["requestId"], warm.request_id.as_str());
    assert!(
        events[1]["tracing"]["value"]
            .as_str()
            .unwrap()
            .ends_with("Sampled=0")
    );
    assert_eq!(events.last().unwrap()["shutdownReason"], "spindown");
}

/// The records of a traced cold invocation, as the subscriber received them.
async fn check_cold_records(collector: &mut Collector, cold: &Invocation, header: &TraceHeader) {
    // Records from before the subscription arrive after it.
    let (_, init_start) = collector.until("platform.initStart", None).await;
    assert_eq!(init_start["record"]["initializationType"], "on-demand");
    assert_eq!(init_start["record"]["phase"], "init");
    assert_eq!(init_start["record"]["instanceMaxMemory"], 128 * 1024 * 1024);
    collector.until("platform.extension", None).await;
    collector.until("platform.initReport", None).await;

    let id = cold.request_id.as_str();
    let (_, start) = collector.until("platform.start", Some(id)).await;
    // As AWS's emulator: spanId is the caller's Parent, the value's Parent is Lambda's segment.
    let platform_trace = TraceHeader {
        parent: cold.lambda_segment_id.clone(),
        ..header.clone()
    }
    .to_string();
    assert_eq!(start["record"]["tracing"]["value"], platform_trace);
    assert_eq!(
        start["record"]["tracing"]["spanId"],
        header.parent.clone().unwrap()
    );
    assert_eq!(start["record"]["tracing"]["type"], "X-Amzn-Trace-Id");
    let (_, done) = collector.until("platform.runtimeDone", Some(id)).await;
    assert_eq!(done["record"]["status"], "success");
    assert!(done["record"]["metrics"]["producedBytes"].as_u64().unwrap() > 0);
    let spans: Vec<&str> = done["record"]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        spans,
        ["responseLatency", "responseDuration", "runtimeOverhead"]
    );
    let (report_at, report) = collector.until("platform.report", Some(id)).await;
    assert_eq!(report["record"]["status"], "success");
    assert!(
        report["record"]["metrics"]["initDurationMs"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(report["record"]["tracing"]["value"], platform_trace);
    assert_eq!(done["record"]["tracing"]["value"], platform_trace);
    assert_eq!(
        cold.extension_next_at.len(),
        2,
        "both extensions called next"
    );
    for (name, at) in &cold.extension_next_at {
        assert!(*at <= report_at, "report arrived before {name} called next");
    }
    let time = report["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_can_answer_not_supported_like_aws_emulator() {
    let collector = Collector::start().await;
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .telemetry_supported(false)
        .start()
        .await
        .unwrap();
    let (report, probe) = spawn_probe(
        lambda.observer(),
        "probe",
        vec![subscription(collector.port, "sandbox.localdomain")],
    );
    lambda.init_ahead().await.unwrap();
    let report = report.await.unwrap();
    assert_eq!(report.subscriptions[0].0, StatusCode::ACCEPTED);
    assert_eq!(
        report.subscriptions[0].1["errorType"],
        "Telemetry.NotSupported"
    );
    assert!(lambda.observer().telemetry_subscriptions().is_empty());
    let invoked = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(
        !invoked.cold,
        "an init ahead of time is not a cold start for the caller"
    );
    lambda.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
}

/// The records carry what AWS's runtime core writes beside the documented fields (contracts §8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_what_aws_runtime_core_writes() {
    let mut lambda = with_empty_extension()
        .function_timeout(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let ok = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    let hung = lambda
        .invoke(Invoke::new(json!({"hang": true, "subsegments": 0})))
        .await
        .unwrap();
    assert!(hung.timed_out);
    let log = lambda.telemetry_log();
    let init = log
        .iter()
        .find(|e| e.event_type == "platform.initStart")
        .unwrap();
    assert_eq!(init.record["functionArn"], lambda.function_arn());
    assert!(
        init.record["runtimeArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:lambda:")
    );
    for inv in [&ok, &hung] {
        let id = inv.request_id.as_str();
        let at = |kind: &str| {
            log.iter()
                .position(|e| {
                    e.event_type == kind
                        && (e.record["requestId"] == id || e.record["InvokeID"] == id)
                })
                .unwrap_or_else(|| panic!("no {kind} for {id}"))
        };
        let done = &log[at("platform.runtimeDone")].record;
        assert!(done["internalMetrics"].is_object(), "{done}");
        assert_eq!(done["tenantId"], "", "no tenant isolation: {done}");
        assert!(at("platform.end") > at("platform.runtimeDone"));
    }
    let fault = log
        .iter()
        .find(|e| e.event_type == "platform.fault")
        .unwrap();
    assert_eq!(
        fault.record,
        json!({"InvokeID": hung.request_id, "Status": "timeout", "ErrorType": "Sandbox.Timedout"})
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.event_type == "platform.fault")
            .count(),
        1,
        "only the timed-out invocation faults"
    );
}

/// `sam local invoke`: AWS's runtime interface emulator, answer by answer (contracts §8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_answers_as_aws_runtime_interface_emulator() {
    let collector = Collector::start().await;
    let mut lambda = Emulator::builder()
        .extension(ExtensionSpec::attached("probe"))
        .function(function())
        .function_timeout(Duration::from_millis(1_200))
        .local_run(true)
        .start()
        .await
        .unwrap();
    let (report, probe) = spawn_probe(
        lambda.observer(),
        "probe",
        vec![subscription(collector.port, "sandbox.localdomain")],
    );
    let trace = TraceHeader::sampled();
    let invoked = lambda
        .invoke(Invoke::new(quiet_event()).traced(trace.clone()))
        .await
        .unwrap();
    let report = report.await.unwrap();
    assert_eq!(
        report.subscriptions[0],
        (
            StatusCode::ACCEPTED,
            json!({"errorMessage": "Telemetry API is not supported", "errorType": "Telemetry.NotSupported"})
        )
    );
    let logs = h::request(Method::PUT, lambda.runtime_api(), "/2020-08-15/logs")
        .body(h::body("{}"))
        .unwrap();
    let logs = h::send(lambda.runtime_api(), logs, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(logs.status, StatusCode::ACCEPTED);
    assert_eq!(logs.json().unwrap()["errorType"], "Logs.NotSupported");
    // The runtime got the caller's header; the extension's INVOKE carries none.
    assert_eq!(invoked.response_json().unwrap()["trace_id"], trace.root);
    let reset = lambda.shutdown().await.unwrap();
    assert_eq!(reset.reason, ShutdownReason::Spindown);
    let events = tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
    assert_eq!(events[0]["eventType"], "INVOKE");
    assert!(events[0].get("tracing").is_none(), "{}", events[0]);
    assert_eq!(events[1]["shutdownReason"], "SandboxTerminated");
    // A crash ends the environment with ReleaseFail.
    let (_, probe) = spawn_probe(lambda.observer(), "probe", Vec::new());
    let crashed = lambda
        .invoke(Invoke::new(json!({"crash": true, "subsegments": 0})))
        .await
        .unwrap();
    assert_eq!(crashed.reset.unwrap().reason, ShutdownReason::Failure);
    let events = tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
    assert_eq!(events.last().unwrap()["shutdownReason"], "ReleaseFail");
    // The function timeout is whole seconds there (1.2 s runs as 2 s), and ends with Timeout.
    let (_, probe) = spawn_probe(lambda.observer(), "probe", Vec::new());
    let hung = lambda
        .invoke(Invoke::new(json!({"hang": true, "subsegments": 0})))
        .await
        .unwrap();
    assert!(hung.timed_out);
    let ran = hung.finished_at.duration_since(hung.started_at);
    assert!(ran >= Duration::from_secs(2), "{ran:?}");
    let events = tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
    assert_eq!(events.last().unwrap()["shutdownReason"], "Timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outside_sandbox_localdomain_is_rejected() {
    let collector = Collector::start().await;
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .start()
        .await
        .unwrap();
    let bad = subscription(collector.port, "localhost");
    let mut out_of_range = subscription(collector.port, "sandbox.localdomain");
    out_of_range["buffering"]["timeoutMs"] = json!(10);
    let (report, probe) = spawn_probe(lambda.observer(), "probe", vec![bad, out_of_range]);
    lambda.init_ahead().await.unwrap();
    let report = report.await.unwrap();
    for (status, body) in &report.subscriptions {
        assert_eq!(*status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorType"], "ValidationError");
    }
    assert!(lambda.observer().telemetry_subscriptions().is_empty());
    lambda.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_validated() {
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .start()
        .await
        .unwrap();
    let observer = lambda.observer();
    let api = lambda.runtime_api();
    let checks = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let register = |name: &str, body: &str, feature: bool| {
            let mut req = h::request(Method::POST, api, "/2020-01-01/extension/register")
                .header("Lambda-Extension-Name", name);
            if feature {
                req = req.header("Lambda-Extension-Accept-Feature", "accountId");
            }
            h::send(api, req.body(h::body(body.to_owned())).unwrap(), Some(WAIT))
        };
        // An internal extension (no such executable) cannot subscribe to SHUTDOWN.
        let internal = register("in-process", r#"{"events":["INVOKE","SHUTDOWN"]}"#, false)
            .await
            .unwrap();
        assert_eq!(internal.status, StatusCode::FORBIDDEN);
        assert_eq!(
            internal.json().unwrap()["errorType"],
            "Extension.InvalidEventType"
        );
        let empty = register("", r#"{"events":["INVOKE"]}"#, false)
            .await
            .unwrap();
        assert_eq!(
            empty.json().unwrap()["errorType"],
            "Extension.InvalidExtensionName"
        );
        let ok = register("probe", r#"{"events":["INVOKE","SHUTDOWN"]}"#, true)
            .await
            .unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        let body = ok.json().unwrap();
        assert_eq!(body["functionName"], "xray-test-function");
        assert_eq!(body["functionVersion"], "$LATEST");
        assert_eq!(body["accountId"], "123456789012");
        assert!(body["handler"].is_string());
        let twice = register("probe", r#"{"events":["INVOKE"]}"#, false)
            .await
            .unwrap();
        assert_eq!(
            twice.json().unwrap()["errorType"],
            "Extension.InvalidExtensionState"
        );
        let id = ok.header("Lambda-Extension-Identifier").unwrap().to_owned();
        let unknown = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
            .header(
                "Lambda-Extension-Identifier",
                "00000000-0000-4000-8000-000000000000",
            )
            .body(h::body(""))
            .unwrap();
        assert_eq!(
            h::send(api, unknown, Some(WAIT)).await.unwrap().status,
            StatusCode::FORBIDDEN
        );
        loop {
            let next = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
                .header("Lambda-Extension-Identifier", &id)
                .body(h::body(""))
                .unwrap();
            if h::send(api, next, None).await.unwrap().json().unwrap()["eventType"] == "SHUTDOWN" {
                return;
            }
        }
    });
    lambda.init_ahead().await.unwrap();
    // Registration closes with the init.
    let late = h::request(Method::POST, api, "/2020-01-01/extension/register")
        .header("Lambda-Extension-Name", "late")
        .body(h::body(r#"{"events":["INVOKE"]}"#))
        .unwrap();
    let late = h::send(api, late, Some(WAIT)).await.unwrap();
    assert_eq!(
        late.json().unwrap()["errorType"],
        "Extension.RegistrationClosed"
    );
    // A response for an unknown request id is refused.
    let stray = h::request(
        Method::POST,
        api,
        "/2018-06-01/runtime/invocation/nope/response",
    )
    .body(h::body("{}"))
    .unwrap();
    let stray = h::send(api, stray, Some(WAIT)).await.unwrap();
    assert_eq!(stray.status, StatusCode::BAD_REQUEST);
    assert_eq!(stray.json().unwrap()["errorType"], "InvalidRequestID");
    lambda.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, checks).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_function_sends_one_datagram_per_subsegment() {
    let (daemon, daemon_addr) = udp_sink().await;
    let mut lambda = Emulator::builder()
        .function(function().env("AWS_XRAY_DAEMON_ADDRESS", daemon_addr.to_string()))
        .start()
        .await
        .unwrap();
    let header = TraceHeader::sampled();
    let traced = lambda
        .invoke(Invoke::new(json!({"subsegments": 3})).traced(header.clone()))
        .await
        .unwrap();
    assert_eq!(traced.status, InvocationStatus::Success);
    assert_eq!(
        traced.post_runtime,
        Some(Duration::ZERO),
        "no extension, nothing after the runtime"
    );
    let body = traced.response_json().unwrap();
    assert_eq!(body["trace_id"], header.root);
    assert_eq!(body["sampled"], true);
    let sent: Vec<String> = serde_json::from_value(body["sent_ids"].clone()).unwrap();
    assert_eq!(sent.len(), 3);

    let mut received = Vec::new();
    for _ in 0..3 {
        let doc = receive(&daemon).await;
        assert_eq!(doc["type"], "subsegment");
        assert_eq!(doc["trace_id"], header.root);
        assert_eq!(doc["parent_id"], header.parent.clone().unwrap());
        assert!(doc["end_time"].as_f64().unwrap() >= doc["start_time"].as_f64().unwrap());
        received.push(doc["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(received, sent);

    let unsampled = lambda
        .invoke(Invoke::new(json!({"subsegments": 3})).traced(TraceHeader::not_sampled()))
        .await
        .unwrap();
    let body = unsampled.response_json().unwrap();
    assert_eq!(body["sampled"], false);
    assert_eq!(body["sent_ids"], json!([]));

    // The next datagram is the padded one of the next invoke: nothing came from the unsampled one.
    let padded = lambda
        .invoke(
            Invoke::new(json!({"subsegments": 1, "payload_bytes": 2000}))
                .traced(TraceHeader::sampled()),
        )
        .await
        .unwrap();
    let id = padded.response_json().unwrap()["sent_ids"][0].clone();
    let mut buf = vec![0u8; 65_536];
    let len = tokio::time::timeout(WAIT, daemon.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&buf[..len]).unwrap();
    let (_, doc) = text.split_once('\n').unwrap();
    assert!(
        (1900..=2100).contains(&doc.len()),
        "document of {} bytes",
        doc.len()
    );
    assert_eq!(serde_json::from_str::<Value>(doc).unwrap()["id"], id);
    lambda.shutdown().await.unwrap();
}

async fn receive(socket: &UdpSocket) -> Value {
    let mut buf = vec![0u8; 65_536];
    let len = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&buf[..len]).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    assert_eq!(header, r#"{"format":"json","version":1}"#);
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_telemetry_delivery_is_retried() {
    let mut collector = Collector::failing_first(2).await;
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .start()
        .await
        .unwrap();
    let (report, probe) = spawn_probe(
        lambda.observer(),
        "probe",
        vec![subscription(collector.port, "sandbox.localdomain")],
    );
    lambda.init_ahead().await.unwrap();
    assert_eq!(report.await.unwrap().subscriptions[0].0, StatusCode::OK);
    collector.until("platform.initStart", None).await;
    let deliveries = lambda
        .observer()
        .wait_for_deliveries("a successful delivery", WAIT, |d| {
            d.iter().any(TelemetryDelivery::succeeded)
        })
        .await
        .unwrap();
    let first = deliveries
        .iter()
        .position(TelemetryDelivery::succeeded)
        .unwrap();
    assert!(first >= 2, "{deliveries:?}");
    assert_eq!(deliveries[0].outcome, Ok(500));
    assert_eq!(deliveries[0].attempt, 1);
    assert_eq!(
        deliveries[first].events, deliveries[0].events,
        "the same batch is resent"
    );
    lambda.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_crash_resets_with_reason_failure() {
    let mut lambda = with_empty_extension().start().await.unwrap();
    let crashed = lambda
        .invoke(Invoke::new(json!({"crash": true, "subsegments": 0})))
        .await
        .unwrap();
    assert_eq!(crashed.status, InvocationStatus::Failure);
    assert!(!crashed.timed_out);
    let failure = crashed.failure.as_deref().unwrap();
    assert!(failure.contains("exit code 3"), "{failure}");
    let reset = crashed.reset.as_ref().unwrap();
    assert_eq!(reset.reason, ShutdownReason::Failure);
    assert_eq!(reset.extension(EMPTY_NAME).unwrap().exit_code(), Some(0));
    let shutdown = lambda.extension_events(EMPTY_NAME).pop().unwrap();
    assert_eq!(shutdown.shutdown_reason(), Some("failure"));
    let log = lambda.telemetry_log();
    let report = log
        .iter()
        .find(|e| e.event_type == "platform.report" && e.request_id() == Some(&crashed.request_id))
        .unwrap();
    assert_eq!(report.record["status"], "failure");
    assert_eq!(report.record["errorType"], "Runtime.ExitError");

    let next = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(next.cold);
    assert_eq!(next.status, InvocationStatus::Success);
    lambda.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_init_is_reported_then_retried_in_the_invoke_phase() {
    let mut lambda = Emulator::builder()
        .extension(ExtensionSpec::new(EMPTY_EXTENSION))
        .function(FunctionSpec::command(["false"]))
        .start()
        .await
        .unwrap();
    for phase in ["init", "invoke"] {
        let error = lambda.invoke(Invoke::new(quiet_event())).await.unwrap_err();
        let EmulatorError::InitFailed { record, reset } = error else {
            panic!("expected an init failure, got {error}");
        };
        assert_eq!(record.status, "failure");
        assert_eq!(record.error_type.as_deref(), Some("Runtime.ExitError"));
        assert_eq!(record.phase, phase);
        assert_eq!(reset.reason, ShutdownReason::Failure);
        assert_eq!(reset.extension(EMPTY_NAME).unwrap().exit_code(), Some(0));
    }
    let reports: Vec<(String, String)> = lambda
        .telemetry_log()
        .iter()
        .filter(|e| e.event_type == "platform.initReport")
        .map(|e| {
            (
                e.record["phase"].as_str().unwrap().to_owned(),
                e.record["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reports,
        [
            ("init".to_owned(), "failure".to_owned()),
            ("invoke".to_owned(), "failure".to_owned())
        ]
    );
    assert!(!lambda.is_initialized());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_wrapper_starts_the_runtime_with_its_own_environment() {
    use std::os::unix::fs::PermissionsExt as _;
    let (daemon, daemon_addr) = udp_sink().await;
    let dir = std::env::temp_dir().join(format!("xray-emulator-wrapper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("wrapper");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexport AWS_XRAY_DAEMON_ADDRESS={daemon_addr}\nexec \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut lambda = Emulator::builder()
        .function(function().env("AWS_LAMBDA_EXEC_WRAPPER", wrapper.to_string_lossy()))
        .start()
        .await
        .unwrap();
    let header = TraceHeader::sampled();
    let invoked = lambda
        .invoke(Invoke::new(json!({"subsegments": 1})).traced(header.clone()))
        .await
        .unwrap();
    assert_eq!(invoked.status, InvocationStatus::Success);
    let doc = receive(&daemon).await;
    assert_eq!(doc["trace_id"], header.root);
    assert_eq!(doc["id"], invoked.response_json().unwrap()["sent_ids"][0]);
    lambda.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_instances_refuse_invoke_and_old_telemetry_schemas() {
    let collector = Collector::start().await;
    let mut lambda = Emulator::builder()
        .extension(ExtensionSpec::attached("probe"))
        .function(function())
        .managed_instances(true)
        .start()
        .await
        .unwrap();
    let observer = lambda.observer();
    let api = lambda.runtime_api();
    let port = collector.port;
    let checks = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let register = |body: &'static str| {
            let req = h::request(Method::POST, api, "/2020-01-01/extension/register")
                .header("Lambda-Extension-Name", "probe")
                .body(h::body(body))
                .unwrap();
            h::send(api, req, Some(WAIT))
        };
        let refused = register(r#"{"events":["INVOKE","SHUTDOWN"]}"#)
            .await
            .unwrap();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.json().unwrap(),
            json!({"errorMessage": "INVOKE: ErrorInvalidEventType", "errorType": "Extension.InvalidEventType"})
        );
        let ok = register(r#"{"events":["SHUTDOWN"]}"#).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        let id = ok.header("Lambda-Extension-Identifier").unwrap().to_owned();
        let subscribe = |schema: &str| {
            let mut body = subscription(port, "sandbox.localdomain");
            body["schemaVersion"] = json!(schema);
            let put = h::request(Method::PUT, api, "/2022-07-01/telemetry")
                .header("Lambda-Extension-Identifier", &id)
                .header("Content-Type", "application/json")
                .body(h::body(body.to_string()))
                .unwrap();
            h::send(api, put, Some(WAIT))
        };
        for old in ["2022-07-01", "2022-12-13"] {
            let answer = subscribe(old).await.unwrap();
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{old}");
            assert_eq!(answer.json().unwrap()["errorType"], "ValidationError");
        }
        assert_eq!(
            subscribe("2025-01-29").await.unwrap().status,
            StatusCode::OK
        );
        let next = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
            .header("Lambda-Extension-Identifier", &id)
            .body(h::body(""))
            .unwrap();
        // Registered for SHUTDOWN only: the first event is the SHUTDOWN.
        h::send(api, next, None).await.unwrap().json().unwrap()
    });
    lambda.init_ahead().await.unwrap();
    let inv = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert_eq!(inv.status, InvocationStatus::Success);
    assert_eq!(lambda.observer().telemetry_subscriptions().len(), 1);
    lambda.shutdown().await.unwrap();
    let first = tokio::time::timeout(WAIT, checks).await.unwrap().unwrap();
    assert_eq!(first["eventType"], "SHUTDOWN");
}

/// SnapStart: the runtime's `/runtime/restore/next` ends the snapshot's init; the restore
/// records come at restore, and the snapshot's init records, held back, come dated the snapshot's
/// age back, in the order asked; the next invoke needs no init.
#[tokio::test]
async fn snap_start_delivers_the_stale_init_records_around_the_restore() {
    use xray_extension_tests::emulator::StaleInit;
    let expected: [(StaleInit, [&str; 6]); 4] = [
        (
            StaleInit::BeforeRestore,
            [
                "initStart",
                "initRuntimeDone",
                "initReport",
                "restoreStart",
                "restoreRuntimeDone",
                "restoreReport",
            ],
        ),
        (
            StaleInit::BetweenRestore,
            [
                "restoreStart",
                "initStart",
                "initRuntimeDone",
                "initReport",
                "restoreRuntimeDone",
                "restoreReport",
            ],
        ),
        (
            StaleInit::AfterRestore,
            [
                "restoreStart",
                "restoreRuntimeDone",
                "restoreReport",
                "initStart",
                "initRuntimeDone",
                "initReport",
            ],
        ),
        (
            StaleInit::Split,
            [
                "initStart",
                "restoreStart",
                "initRuntimeDone",
                "restoreRuntimeDone",
                "restoreReport",
                "initReport",
            ],
        ),
    ];
    for (stale, order) in expected {
        let mut lambda = Emulator::builder()
            .function(function())
            .snapshot_age(Duration::from_hours(2))
            .start()
            .await
            .unwrap();
        let init = lambda.snap_start(stale).await.unwrap();
        assert_eq!(init.initialization_type, InitializationType::SnapStart);
        let log = lambda.telemetry_log();
        let platform: Vec<&str> = log
            .iter()
            .filter_map(|e| e.event_type.strip_prefix("platform."))
            .filter(|t| t.starts_with("init") || t.starts_with("restore"))
            .collect();
        assert_eq!(platform, order, "{stale:?}");
        let time = |kind: &str| {
            log.iter()
                .find(|e| e.event_type == kind)
                .map(|e| e.time.clone())
                .unwrap()
        };
        // Dated two hours back: same format, so the strings compare as times do.
        assert!(time("platform.initReport") < time("platform.restoreStart"));
        // Seconds of the day of `2022-10-12T00:00:15.064Z`.
        let seconds = |t: String| {
            let parts: Vec<f64> = t[11..23].split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
        };
        let back = (seconds(time("platform.restoreStart")) - seconds(time("platform.initStart"))
            + 86_400.0)
            % 86_400.0;
        assert!((back - 7_200.0).abs() < 60.0, "{stale:?}: {back} s back");
        let inv = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
        assert_eq!(inv.status, InvocationStatus::Success);
        assert!(!inv.cold);
        lambda.shutdown().await.unwrap();
    }
}

/// Lambda Managed Instances: runtime processes work on invocations at once; no runtimeDone;
/// every third request's start after its report; the report has only `durationMs` and the
/// two spans.
#[tokio::test]
async fn managed_instances_run_invocations_at_once() {
    let mut lambda = Emulator::builder()
        .function(function())
        .managed_instances(true)
        .max_concurrency(3)
        .start()
        .await
        .unwrap();
    let invokes = (0..6)
        .map(|_| {
            Invoke::new(json!({"subsegments": 0, "sleep_ms": 100})).traced(TraceHeader::sampled())
        })
        .collect();
    let invs = lambda.invoke_concurrently(invokes).await.unwrap();
    assert!(invs.iter().all(|i| i.status == InvocationStatus::Success));
    let first_three_overlap = invs[..3].iter().all(|a| {
        invs[..3]
            .iter()
            .all(|b| a.runtime_received_at.unwrap() < b.response_at.unwrap())
    });
    assert!(
        first_three_overlap,
        "three processes took the first three at once"
    );
    let log = lambda.telemetry_log();
    assert!(!log.iter().any(|e| e.event_type == "platform.runtimeDone"));
    assert_eq!(
        log.iter()
            .find(|e| e.event_type == "platform.initStart")
            .unwrap()
            .record["initializationType"],
        "lambda-managed-instances"
    );
    for (i, inv) in invs.iter().enumerate() {
        let at = |kind: &str| {
            log.iter()
                .position(|e| e.event_type == kind && e.request_id() == Some(&inv.request_id))
                .unwrap()
        };
        assert_eq!(
            at("platform.report") < at("platform.start"),
            i % 3 == 1,
            "{i}"
        );
        let report = &log[at("platform.report")].record;
        let metrics: Vec<&String> = report["metrics"].as_object().unwrap().keys().collect();
        assert_eq!(metrics, ["durationMs"]);
        let spans: Vec<&str> = report["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(spans, ["responseLatency", "responseDuration"]);
    }
    lambda.shutdown().await.unwrap();
}
