//! The Telemetry API: subscriptions, delivery and its retries, the records' fields, and
//! `Telemetry.NotSupported`.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    Emulator, ExtensionSpec, Invocation, InvocationStatus, Invoke, TelemetryDelivery,
};
use xray_extension_tests::trace::TraceHeader;

use crate::{
    Collector, EMPTY_EXTENSION, WAIT, function, quiet_event, spawn_probe, subscribed_probe,
    subscription, udp_sink, with_empty_extension,
};

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
    let (report, probe) = subscribed_probe(lambda.observer(), &collector);

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
    let (report, probe) = subscribed_probe(lambda.observer(), &collector);
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
async fn a_refused_telemetry_delivery_is_retried() {
    let mut collector = Collector::failing_first(2).await;
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .start()
        .await
        .unwrap();
    let (report, probe) = subscribed_probe(lambda.observer(), &collector);
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
