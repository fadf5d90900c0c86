//! Lambda Managed Instances: refused INVOKE and schemas, invocations at once.

use http::{Method, StatusCode};
use serde_json::json;
use xray_extension_tests::emulator::{Emulator, ExtensionSpec, InvocationStatus, Invoke};
use xray_extension_tests::http as h;
use xray_extension_tests::trace::TraceHeader;

use crate::{Collector, WAIT, function, quiet_event, subscription};

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
