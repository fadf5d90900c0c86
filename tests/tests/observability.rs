//! What operators see of the extension itself: the CloudWatch Embedded Metric Format line,
//! checked against the specification's rules and through the `aws-embedded-metrics` package;
//! log lines in Lambda's JSON format; no credentials at `trace`.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

mod common;

use common::{Harness, Options, counters, extension_log, invoke_traced, sent_ids, venv};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN,
};

/// The extension's EMF lines, parsed.
fn emf_lines(log: &[String]) -> Vec<(String, Value)> {
    log.iter()
        .filter_map(|l| Some((l.clone(), serde_json::from_str::<Value>(l).ok()?)))
        .filter(|(_, v)| v.get("_aws").is_some())
        .collect()
}

/// Runs `tests/scripts/emf_check.py` (the `aws-embedded-metrics` package's model and
/// serializer) on `line`.
fn check_with_the_library(line: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/emf_check.py");
    let out = std::process::Command::new(venv().join("bin/python"))
        .arg(script)
        .arg(line)
        .output()
        .expect("python");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "valid",
        "aws-embedded-metrics rejects {line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn shutdown_writes_one_valid_emf_line_with_the_run_counters() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;
    let mut received = 0;
    for _ in 0..2 {
        let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 3})).await;
        received += sent_ids(&inv).len();
    }
    lambda.shutdown().await.expect("shutdown");
    let lines = emf_lines(&extension_log(&lambda));
    assert_eq!(
        lines.len(),
        1,
        "one line, at SHUTDOWN: {:#?}",
        extension_log(&lambda)
    );
    let (line, v) = &lines[0];
    let directive = &v["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "XRayExtension");
    assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
    assert_eq!(v["FunctionName"], "orders");
    assert_eq!(v["DocumentsReceived"], json!(received));
    // The same run as the text counters line, which counts every accepted document (re-sent
    // versions too).
    let text = counters(&lambda).expect("counters line");
    assert_eq!(v["DocumentsSent"], json!(text["sent"]));
    assert!(text["sent"] >= sink.documents().len() as u64);
    assert_eq!(v["ApiCalls"], json!(text["api_calls"]));
    let sum_us = text["post_runtime_us_sum"];
    assert_eq!(
        v["PostRuntimeTimeSum"],
        json!(f64::from(u32::try_from(sum_us).unwrap()) / 1e3)
    );
    assert_eq!(
        v["PostRuntimeInvocations"], 2,
        "both invocations were held (end)"
    );
    let max = v["PostRuntimeTimeMax"].as_f64().expect("a time");
    let sum = v["PostRuntimeTimeSum"].as_f64().expect("a time");
    assert!(max > 0.0 && max <= sum, "max {max} sum {sum}");
    assert!(
        v.get("DocumentsDroppedAtShutdown").is_none(),
        "unchanged: left out"
    );
    let units: Vec<(&str, &str)> = directive["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
        .collect();
    assert!(
        units.contains(&("PostRuntimeTimeMax", "Milliseconds")),
        "{units:?}"
    );
    assert!(units.contains(&("DocumentsSent", "Count")), "{units:?}");
    check_with_the_library(line);
}

#[tokio::test]
async fn namespace_none_turns_the_emf_line_off_and_a_chosen_namespace_is_used() {
    for (namespace, expect) in [("none", None), ("team/orders", Some("team/orders"))] {
        let mut options = Options::strategy("end");
        options.extension_env.push((
            "XRAY_EXTENSION_METRICS_NAMESPACE".to_owned(),
            namespace.to_owned(),
        ));
        let Harness { mut lambda, .. } = Harness::start(options).await;
        invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
        lambda.shutdown().await.expect("shutdown");
        let lines = emf_lines(&extension_log(&lambda));
        let namespaces: Vec<&str> = lines
            .iter()
            .map(|(_, v)| {
                v["_aws"]["CloudWatchMetrics"][0]["Namespace"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            namespaces,
            expect.into_iter().collect::<Vec<_>>(),
            "{namespace}"
        );
    }
}

/// A full run: a cold and a warm invocation, an error, a shutdown.
async fn full_run(extension_env: &[(&str, &str)]) -> (Harness, Vec<String>) {
    let mut options = Options::strategy("end");
    for (k, v) in extension_env {
        options
            .extension_env
            .push(((*k).to_owned(), (*v).to_owned()));
    }
    let mut harness = Harness::start(options).await;
    let mut request_ids = Vec::new();
    for event in [
        json!({"subsegments": 2}),
        json!({"subsegments": 1}),
        json!({"error": "OrderRejected"}),
    ] {
        let (_, inv) = invoke_traced(&mut harness.lambda, event).await;
        request_ids.push(inv.request_id);
    }
    harness.lambda.shutdown().await.expect("shutdown");
    (harness, request_ids)
}

#[tokio::test]
async fn with_lambda_json_log_format_every_line_is_one_json_object() {
    let (harness, request_ids) = full_run(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).await;
    let log = extension_log(&harness.lambda);
    assert!(log.len() > 10, "a debug run logs more than this: {log:#?}");
    let mut logged_request_ids = Vec::new();
    let mut counters_line = None;
    for line in &log {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        if obj.contains_key("_aws") {
            continue; // the EMF line
        }
        let timestamp = obj["timestamp"].as_str().expect("timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "timestamp {timestamp}"
        );
        let level = obj["level"].as_str().expect("level");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{line}"
        );
        let message = obj["message"].as_str().expect("message");
        if let Some(id) = obj.get("requestId").and_then(Value::as_str) {
            logged_request_ids.push(id.to_owned());
        }
        if message == "counters" {
            counters_line = Some(v.clone());
        }
    }
    for id in &request_ids {
        assert!(
            logged_request_ids.contains(id),
            "request id {id} in no line"
        );
    }
    // Structured fields stay typed at the top level.
    let counters_line = counters_line.expect("the counters line");
    assert!(counters_line["received"].is_u64(), "{counters_line}");
    assert_eq!(counters_line["level"], "INFO");
}

#[tokio::test]
async fn lambda_log_level_applies_when_ours_is_not_set() {
    // The harness sets XRAY_EXTENSION_LOG_LEVEL=debug; an empty value counts as unset.
    let (harness, _) = full_run(&[
        ("XRAY_EXTENSION_LOG_LEVEL", ""),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ])
    .await;
    let levels: Vec<String> = extension_log(&harness.lambda)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("level").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert!(
        levels.iter().all(|l| l == "WARN" || l == "ERROR"),
        "{levels:?}"
    );
}

#[tokio::test]
async fn trace_logging_never_prints_credentials() {
    let (harness, _) = full_run(&[("XRAY_EXTENSION_LOG_LEVEL", "trace")]).await;
    let log = extension_log(&harness.lambda);
    assert!(
        log.iter().any(|l| l.contains("TRACE")) && log.len() > 100,
        "the AWS SDK's trace lines are there: {} lines",
        log.len()
    );
    for secret in [
        DUMMY_ACCESS_KEY_ID,
        DUMMY_SECRET_ACCESS_KEY,
        DUMMY_SESSION_TOKEN,
    ] {
        let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} printed: {leaks:#?}");
    }
}
