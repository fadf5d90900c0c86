//! Self-tests of the X-Ray API sink, over HTTP as aws-sdk-xray calls it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step fails the test"
)]

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::http::{self as h, ClientResponse};
use xray_extension_tests::sink::{Fault, FaultPlan, XraySink};
use xray_extension_tests::trace::{new_segment_id, new_trace_id};

const WAIT: Duration = Duration::from_secs(5);

fn segment(name: &str) -> Value {
    let now = epoch_seconds(SystemTime::now());
    json!({
        "id": new_segment_id(),
        "name": name,
        "trace_id": new_trace_id(),
        "start_time": now,
        "end_time": now + 0.01,
    })
}

async fn put(sink: &XraySink, documents: &[String]) -> Result<ClientResponse, h::HttpError> {
    let body = json!({"TraceSegmentDocuments": documents}).to_string();
    let req = h::request(Method::POST, sink.addr(), "/TraceSegments")
        .header("Content-Type", "application/json")
        .body(h::body(body))
        .unwrap();
    h::send(sink.addr(), req, Some(WAIT)).await
}

fn docs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| segment(&format!("doc-{i}")).to_string())
        .collect()
}

#[tokio::test]
async fn fifty_one_documents_are_refused_and_fifty_accepted() {
    let sink = XraySink::start().await.unwrap();
    let refused = put(&sink, &docs(51)).await.unwrap();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.header("x-amzn-ErrorType"),
        Some("InvalidRequestException")
    );
    assert!(sink.documents().is_empty());

    let accepted = put(&sink, &docs(50)).await.unwrap();
    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(accepted.header("content-type"), Some("application/json"));
    assert_eq!(
        accepted.json().unwrap(),
        json!({"UnprocessedTraceSegments": []})
    );
    assert_eq!(sink.documents().len(), 50);
    assert_eq!(sink.put_calls().len(), 2);
}

#[tokio::test]
async fn valid_documents_are_recorded_and_awaited() {
    let sink = XraySink::start().await.unwrap();
    let sent = docs(3);
    let pending = sink.wait_for_documents(3, WAIT);
    let (waited, response) = tokio::join!(pending, put(&sink, &sent));
    assert_eq!(response.unwrap().status, StatusCode::OK);
    let stored = waited.unwrap();
    let raw: Vec<&str> = stored.iter().map(|d| d.raw.as_str()).collect();
    assert_eq!(raw, sent.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(stored[0].name(), "doc-0");

    // Re-sending an id overwrites it.
    let mut again: Value = serde_json::from_str(&sent[0]).unwrap();
    again["name"] = json!("renamed");
    put(&sink, &[again.to_string()]).await.unwrap();
    let documents = sink.documents();
    assert_eq!(documents.len(), 3);
    assert_eq!(documents[0].name(), "renamed");
    assert_eq!(sink.all_documents().len(), 4);

    let timeout = sink.wait_for_documents(4, Duration::from_millis(50)).await;
    assert!(timeout.is_err());
}

#[tokio::test]
async fn invalid_documents_are_listed_unprocessed() {
    let sink = XraySink::start().await.unwrap();
    let valid = segment("ok");
    let mut unfinished = segment("unfinished");
    unfinished.as_object_mut().unwrap().remove("end_time");
    let mut oversized = segment("big");
    oversized["metadata"] = json!({"pad": "x".repeat(70_000)});
    let batch = [
        valid.to_string(),
        unfinished.to_string(),
        "[1,2]".to_owned(),
        oversized.to_string(),
    ];
    let response = put(&sink, &batch).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let unprocessed = response.json().unwrap()["UnprocessedTraceSegments"].clone();
    let unprocessed = unprocessed.as_array().unwrap();
    assert_eq!(unprocessed.len(), 3);
    assert_eq!(unprocessed[0]["Id"], unfinished["id"]);
    assert_eq!(unprocessed[0]["ErrorCode"], "MissingParam");
    assert_eq!(unprocessed[1]["ErrorCode"], "JSONFormatError");
    assert_eq!(unprocessed[2]["Id"], oversized["id"]);
    assert_eq!(unprocessed[2]["ErrorCode"], "SegmentTooLarge");
    let stored = sink.documents();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, valid["id"].as_str().unwrap());
}

#[tokio::test]
async fn faults_follow_the_plan() {
    let sink = XraySink::start().await.unwrap();
    sink.set_fault_plan(FaultPlan::sequence([
        Some(Fault::Throttle),
        Some(Fault::ServerError),
        Some(Fault::PartialUnprocessed(0.5)),
        Some(Fault::Disconnect),
        Some(Fault::Delay(Duration::from_millis(100))),
    ]));
    let throttled = put(&sink, &docs(2)).await.unwrap();
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        throttled.header("x-amzn-ErrorType"),
        Some("ThrottledException")
    );
    let failed = put(&sink, &docs(2)).await.unwrap();
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(sink.documents().is_empty());

    let partial = put(&sink, &docs(4)).await.unwrap();
    let unprocessed = partial.json().unwrap()["UnprocessedTraceSegments"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(unprocessed, 2);
    assert_eq!(sink.documents().len(), 2);

    assert!(
        put(&sink, &docs(1)).await.is_err(),
        "the connection closes unanswered"
    );

    let started = std::time::Instant::now();
    let delayed = put(&sink, &docs(1)).await.unwrap();
    assert_eq!(delayed.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(sink.documents().len(), 3);

    let calls = sink.put_calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[3].status, 0);
    assert_eq!(
        calls[4].fault,
        Some(Fault::Delay(Duration::from_millis(100)))
    );
}

#[tokio::test]
async fn daemon_side_operations_answer_empty_successes() {
    let sink = XraySink::start().await.unwrap();
    for (path, key) in [
        ("/GetSamplingRules", "SamplingRuleRecords"),
        ("/SamplingTargets", "SamplingTargetDocuments"),
    ] {
        let req = h::request(Method::POST, sink.addr(), path)
            .body(h::body("{}"))
            .unwrap();
        let response = h::send(sink.addr(), req, Some(WAIT)).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.json().unwrap()[key], json!([]));
    }
    let telemetry = json!({"TelemetryRecords": [{"SegmentsReceivedCount": 3}]});
    let req = h::request(Method::POST, sink.addr(), "/TelemetryRecords")
        .body(h::body(telemetry.to_string()))
        .unwrap();
    assert_eq!(
        h::send(sink.addr(), req, Some(WAIT)).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(sink.telemetry_records(), vec![telemetry]);
    let req = h::request(Method::GET, sink.addr(), "/nothing")
        .body(h::body(""))
        .unwrap();
    assert_eq!(
        h::send(sink.addr(), req, Some(WAIT)).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
}
