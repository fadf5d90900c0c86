//! `sam local invoke`: AWS's runtime interface emulator, answer by answer (contracts §8).

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use xray_extension_tests::emulator::{Emulator, ExtensionSpec, Invoke, ShutdownReason};
use xray_extension_tests::http as h;
use xray_extension_tests::trace::TraceHeader;

use crate::{Collector, WAIT, function, quiet_event, spawn_probe, subscribed_probe};

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
    let (report, probe) = subscribed_probe(lambda.observer(), &collector);
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
