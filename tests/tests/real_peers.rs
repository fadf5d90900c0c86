//! End to end against real peers: moto's X-Ray server as the X-Ray API, a Python function run by
//! AWS's runtime interface client (`awslambdaric`) and traced with the real `aws-xray-sdk`. The
//! results are read back with `BatchGetTraces`. Only JSON segment documents are sent here: moto
//! cannot decode OTLP documents (`T1S`/`T1U`) and lists them unprocessed; `otel.rs` covers those
//! against the embedded sink.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed call is a failed test"
)]

mod common;

use std::collections::HashSet;

use aws_sdk_xray::config::{BehaviorVersion, Credentials, Region};
use common::{EXTENSION, Harness, Moto, Options, invoke_traced, python_sdk_function, sent_ids};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::trace::TraceHeader;

fn xray_client(endpoint: &str) -> aws_sdk_xray::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_xray::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_xray::Client::from_conf(config)
}

/// Every document moto stored for `trace_id`, parsed. moto keeps every version of a re-sent
/// document (X-Ray keeps the latest under its id), in no particular order.
async fn batch_get(client: &aws_sdk_xray::Client, trace_id: &str) -> Vec<Value> {
    let out = client
        .batch_get_traces()
        .trace_ids(trace_id)
        .send()
        .await
        .expect("BatchGetTraces");
    out.traces()
        .iter()
        .flat_map(aws_sdk_xray::types::Trace::segments)
        .filter_map(|s| s.document())
        .map(|d| serde_json::from_str::<Value>(d).expect("stored document is JSON"))
        .collect()
}

/// Distinct ids of the documents named `name`.
fn ids_named<'a>(docs: &'a [Value], name: &str) -> HashSet<&'a str> {
    docs.iter()
        .filter(|d| d["name"] == name)
        .filter_map(|d| d["id"].as_str())
        .collect()
}

#[tokio::test]
async fn python_sdk_through_awslambdaric_into_moto() {
    let moto = Moto::start().await;
    let Harness { mut lambda, .. } = Harness::start(Options {
        xray_endpoint: Some(moto.endpoint.clone()),
        function: Some(python_sdk_function()),
        ..Options::default()
    })
    .await;

    let mut expected = Vec::new();
    for i in 0..3 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"n": i})).await;
        assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
        let ids = sent_ids(&inv);
        assert_eq!(ids.len(), 2, "{:?}", inv.response_json());
        assert_eq!(inv.response_json().unwrap()["trace_id"], json!(trace.root));
        expected.push((trace.root.clone(), ids, i == 0));
    }
    let error_trace = TraceHeader::sampled();
    let inv = lambda
        .invoke(Invoke::new(json!({"error": true})).traced(error_trace.clone()))
        .await
        .expect("invoke");
    assert_eq!(inv.status, InvocationStatus::Error);
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));

    let client = xray_client(&moto.endpoint);
    for (root, ids, cold) in &expected {
        let docs = batch_get(&client, root).await;
        let got: HashSet<&str> = docs.iter().filter_map(|d| d["id"].as_str()).collect();
        for id in ids {
            assert!(
                got.contains(id.as_str()),
                "trace {root}: SDK subsegment {id} missing from moto"
            );
        }
        let by_name = |n: &str| ids_named(&docs, n).len();
        assert_eq!(by_name("python-work"), 1);
        assert_eq!(by_name("python-inner"), 1);
        assert_eq!(by_name("Runtime"), 1, "trace {root}");
        assert_eq!(by_name("Cold Start"), usize::from(*cold), "trace {root}");
        let runtime = docs.iter().find(|d| d["name"] == "Runtime").unwrap();
        assert_eq!(runtime["annotations"]["ColdStart"], json!(*cold));
        // The version re-sent when platform.report arrived carries its figures.
        assert!(
            docs.iter()
                .filter(|d| d["name"] == "Runtime")
                .any(|d| d["metadata"]["lambda"]["billedDurationMs"].is_u64()),
            "trace {root}: no Runtime with the report's figures"
        );
        // The SDK's subsegment keeps its annotation as sent.
        let work = docs.iter().find(|d| d["name"] == "python-work").unwrap();
        assert_eq!(work["annotations"]["customer"], "c-123");
        assert_eq!(work["trace_id"], json!(root));
    }
    // The failing invocation: the SDK's subsegments and our faulted Runtime.
    let docs = batch_get(&client, &error_trace.root).await;
    let runtime = docs
        .iter()
        .find(|d| d["name"] == "Runtime")
        .expect("Runtime of the failed invocation");
    assert_eq!(runtime["fault"], true);
    assert!(docs.iter().any(|d| d["name"] == "python-work"));
    drop(moto);
}
