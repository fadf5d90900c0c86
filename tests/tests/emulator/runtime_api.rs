//! The Runtime API and the lifecycle it drives: cold and warm invokes, errors, timeouts, crashes,
//! failed inits, exec wrappers, and the sample function's datagrams.

use std::time::Duration;

use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    Emulator, EmulatorError, ExtensionSpec, FunctionSpec, InitializationType, InvocationStatus,
    Invoke, ShutdownReason,
};
use xray_extension_tests::trace::TraceHeader;

use crate::{
    EMPTY_EXTENSION, EMPTY_NAME, WAIT, function, quiet_event, receive, udp_sink,
    with_empty_extension,
};

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
