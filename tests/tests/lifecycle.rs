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

use common::{EXTENSION, Harness, Options, WAIT, counters, extension_log, sent_ids};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use xray_extension::lambda::api::{LambdaApi, Telemetry};
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::http::{self as h, Server};
use xray_extension_tests::trace::TraceHeader;

/// Invokes `n` traced invocations of `subsegments` each; returns the ids the function sent.
async fn invoke_traced(
    lambda: &mut xray_extension_tests::emulator::Emulator,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let inv = lambda
            .invoke(Invoke::new(json!({"subsegments": 2})).traced(TraceHeader::sampled()))
            .await
            .expect("invoke");
        assert_eq!(inv.status, InvocationStatus::Success);
        // Registered for SHUTDOWN only: the extension never takes part in an invocation.
        assert_eq!(inv.extension_next(EXTENSION), None);
        ids.extend(sent_ids(&inv));
    }
    ids
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
    let ids = invoke_traced(&mut harness.lambda, 3).await;
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
    let ids = invoke_traced(&mut harness.lambda, 2).await;
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
