//! Local runs: `sam local invoke` runs the function, with its layers, inside AWS's runtime
//! interface emulator, which has no Telemetry API (`202 Telemetry.NotSupported`), sends INVOKE
//! without `tracing` and names SHUTDOWN reasons `SandboxTerminated`, `Timeout`, `ReleaseFail`
//! (`EmulatorBuilder::local_run`). There the extension holds nothing, sends what the function's
//! SDK sent on its timer and at SHUTDOWN, starts again after a timeout, and writes no line a
//! user would take for a fault.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    EXTENSION, Harness, Options, WAIT, extension_log, flush_timeout, invoke_traced, sent_ids,
};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{Emulator, ShutdownReason};

fn local(strategy: &str, function_timeout: Duration) -> Options {
    Options {
        local_run: true,
        function_timeout,
        extension_env: vec![
            (
                "XRAY_EXTENSION_FLUSH_STRATEGY".to_owned(),
                strategy.to_owned(),
            ),
            ("AWS_LAMBDA_LOG_FORMAT".to_owned(), "JSON".to_owned()),
        ],
        ..Options::default()
    }
}

/// Our log lines, parsed (every one is a JSON object with `AWS_LAMBDA_LOG_FORMAT=JSON`).
fn log_lines(lambda: &Emulator) -> Vec<Value> {
    extension_log(lambda)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Nothing logged above `INFO`: a local run is no fault.
fn assert_no_fault_lines(lambda: &Emulator) {
    let loud: Vec<Value> = log_lines(lambda)
        .into_iter()
        .filter(|l| matches!(l["level"].as_str(), Some("ERROR" | "WARN")))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
}

/// `key` of the last counters line.
fn counter(lambda: &Emulator, key: &str) -> Option<u64> {
    log_lines(lambda)
        .into_iter()
        .rev()
        .find(|l| l["message"] == "counters")
        .and_then(|l| l[key].as_u64())
}

async fn everything_by_shutdown(strategy: &str) {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(local(strategy, Duration::from_secs(3))).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
        // The caller's header reaches the runtime (Lambda-Runtime-Trace-Id)...
        assert_eq!(
            inv.response_json().expect("answer")["trace_id"],
            trace.root,
            "{strategy} {i}"
        );
        // ...and never holds the function past the flush timeout.
        let held = inv.post_runtime.expect("finished");
        eprintln!("{strategy} {i}: post-runtime {held:?}");
        assert!(held < flush_timeout(), "{strategy} {i}: held {held:?}");
        ids.extend(sent_ids(&inv));
    }
    // ...but INVOKE carries no tracing there.
    let invokes: Vec<_> = lambda
        .extension_events(EXTENSION)
        .into_iter()
        .filter(|e| e.event_type() == "INVOKE")
        .collect();
    assert_eq!(invokes.len(), 3);
    assert!(invokes.iter().all(|e| e.event.get("tracing").is_none()));
    // The timer sends while the environment waits for the next invoke.
    sink.wait_for_documents(ids.len(), WAIT)
        .await
        .expect("documents sent on the timer");
    // What the last invocation sent goes out at SHUTDOWN at the latest.
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 3})).await;
    ids.extend(sent_ids(&inv));
    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension");
    assert_eq!(ext.exit_code(), Some(0), "{strategy}");
    assert!(ext.exited_before_deadline, "{strategy}");
    let shutdown = lambda.extension_events(EXTENSION).pop().expect("SHUTDOWN");
    assert_eq!(shutdown.shutdown_reason(), Some("SandboxTerminated"));
    let got: HashSet<String> = sink.documents().into_iter().map(|d| d.id).collect();
    for id in &ids {
        assert!(got.contains(id), "{strategy}: {id} never sent");
    }
    // No enrichment without the Telemetry API; nothing dropped.
    assert!(sink.documents().iter().all(|d| d.name() != "Runtime"));
    assert_eq!(counter(&lambda, "dropped_at_shutdown"), Some(0));
    assert_eq!(counter(&lambda, "sent"), Some(ids.len() as u64));
    assert_no_fault_lines(&lambda);
}

#[tokio::test]
async fn a_local_run_with_end_sends_everything_by_shutdown_and_holds_nothing() {
    everything_by_shutdown("end").await;
}

#[tokio::test]
async fn a_local_run_with_background_sends_everything_by_shutdown_and_holds_nothing() {
    everything_by_shutdown("background").await;
}

#[tokio::test]
async fn a_local_run_with_adaptive_sends_everything_by_shutdown_and_holds_nothing() {
    everything_by_shutdown("adaptive").await;
}

#[tokio::test]
async fn a_timeout_in_a_local_run_is_followed_by_a_fresh_init_on_the_same_ports() {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(local("adaptive", Duration::from_secs(1))).await;
    let (_, first) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    let mut ids = sent_ids(&first);
    // The SDK sends before the function hangs; the timeout ends the environment.
    let (_, hung) = invoke_traced(&mut lambda, json!({"subsegments": 2, "hang": true})).await;
    assert!(hung.timed_out);
    let reset = hung.reset.as_ref().expect("reset after the timeout");
    assert_eq!(reset.reason, ShutdownReason::Timeout);
    let ext = reset.extension(EXTENSION).expect("extension");
    assert!(ext.shutdown_delivered);
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline);
    let shutdown = lambda.extension_events(EXTENSION).pop().expect("SHUTDOWN");
    assert_eq!(shutdown.shutdown_reason(), Some("Timeout"));
    // Everything sent so far, the hung invocation's subsegments too, went out at that SHUTDOWN.
    let got: HashSet<String> = sink.documents().into_iter().map(|d| d.id).collect();
    let before = sent_ids(&first).len();
    assert!(ids.iter().all(|id| got.contains(id)));
    assert!(
        got.len() >= before + 2,
        "the hung invocation's documents: {got:?}"
    );
    // The next invoke starts a fresh environment on the same ports.
    let (_, again) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    assert!(again.cold, "a fresh init after the timeout");
    ids.extend(sent_ids(&again));
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let got: HashSet<String> = sink.documents().into_iter().map(|d| d.id).collect();
    assert!(ids.iter().all(|id| got.contains(id)), "port {udp_port}");
    assert_no_fault_lines(&lambda);
}
