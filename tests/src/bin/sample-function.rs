//! A Lambda function on the real `lambda_runtime` that emits X-Ray subsegments over the daemon
//! protocol, driven by its event:
//!
//! | field | default | effect |
//! |---|---|---|
//! | `subsegments` | 3 | independent subsegments sent, one UDP datagram each |
//! | `sleep_ms` | 0 | time spent in the handler before answering |
//! | `error` | false | return an error (the runtime posts `/error`, type `SampleError`) |
//! | `hang` | false | sleep far past any deadline |
//! | `crash` | false | exit the process with code 3 mid-invoke (after sending) |
//! | `payload_bytes` | — | pad each subsegment's metadata to about this many bytes |
//! | `subsegment_interval_ms` | 0 | wait this long after sending each subsegment (a long invocation that traces as it goes) |
//! | `stream_chunks` | 0 | stream the response (`Lambda-Runtime-Function-Response-Mode: streaming`): the JSON answer, then this many chunks of `stream_chunk_bytes` |
//! | `stream_chunk_bytes` | 1024 | size of each streamed chunk |
//! | `stream_interval_ms` | 0 | pause before each streamed chunk |
//! | `otel_spans` | 0 | also an OpenTelemetry handler span (from the handler's start) with this many children, one after another, each 1 ms of waiting, sent as one `T1S` datagram, as AWS's OpenTelemetry SDKs do |
//!
//! Datagrams go to `AWS_XRAY_DAEMON_ADDRESS` (default `127.0.0.1:2000`), only when the invoke's
//! trace header says `Sampled=1`. The response is
//! `{"trace_id": <Root or null>, "tenant_id": <Lambda-Runtime-Aws-Tenant-Id or null>, "sent_ids": [...],
//! "otel_span_ids": [...], "sampled": bool}`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

use lambda_runtime::streaming::{Body, Response as StreamResponse};
use lambda_runtime::{Diagnostic, FunctionResponse, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::sink::otlp::{SpanSpec, build_request};
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

const DAEMON_ADDRESS_DEFAULT: &str = "127.0.0.1:2000";
const DAEMON_HEADER: &str = "{\"format\":\"json\",\"version\":1}";
const CRASH_EXIT_CODE: i32 = 3;
const HANG: Duration = Duration::from_hours(1);
/// How long each OpenTelemetry step span waits.
const OTEL_STEP: Duration = Duration::from_millis(1);

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Event {
    subsegments: usize,
    sleep_ms: u64,
    error: bool,
    hang: bool,
    crash: bool,
    payload_bytes: Option<usize>,
    subsegment_interval_ms: u64,
    stream_chunks: usize,
    stream_chunk_bytes: usize,
    stream_interval_ms: u64,
    otel_spans: usize,
}

impl Default for Event {
    fn default() -> Self {
        Self {
            subsegments: 3,
            sleep_ms: 0,
            error: false,
            hang: false,
            crash: false,
            payload_bytes: None,
            subsegment_interval_ms: 0,
            stream_chunks: 0,
            stream_chunk_bytes: 1024,
            stream_interval_ms: 0,
            otel_spans: 0,
        }
    }
}

/// The error the function returns when asked to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SampleError(String);

impl From<SampleError> for Diagnostic {
    fn from(error: SampleError) -> Self {
        Diagnostic {
            error_type: "SampleError".to_owned(),
            error_message: error.0,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let daemon = std::env::var("AWS_XRAY_DAEMON_ADDRESS")
        .unwrap_or_else(|_| DAEMON_ADDRESS_DEFAULT.to_owned());
    let daemon: SocketAddr = daemon
        .parse()
        .map_err(|e| format!("AWS_XRAY_DAEMON_ADDRESS {daemon:?} is not host:port: {e}"))?;
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    let socket = &socket;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(event, socket, daemon).await
    }))
    .await
}

async fn handle(
    event: LambdaEvent<Value>,
    socket: &UdpSocket,
    daemon: SocketAddr,
) -> Result<FunctionResponse<Value, Body>, SampleError> {
    let handler_start = unix_nanos();
    let (payload, context) = event.into_parts();
    let request: Event = serde_json::from_value(payload)
        .map_err(|e| SampleError(format!("unexpected event: {e}")))?;
    let trace = context
        .xray_trace_id
        .as_deref()
        .and_then(TraceHeader::parse);
    let sampled = trace.as_ref().is_some_and(TraceHeader::is_sampled);
    let mut sent_ids = Vec::new();
    if let Some(trace) = trace.as_ref().filter(|_| sampled) {
        for i in 0..request.subsegments {
            let start = epoch_seconds(SystemTime::now());
            let id = new_segment_id();
            let mut doc = json!({
                "id": id,
                "name": format!("work-{i}"),
                "start_time": start,
                "end_time": epoch_seconds(SystemTime::now()),
                "type": "subsegment",
                "trace_id": trace.root,
                "parent_id": trace.parent,
                "annotations": {"i": i},
            });
            if let Some(target) = request.payload_bytes {
                let size = doc.to_string().len() + r#","metadata":{"sample":{"padding":""}}"#.len();
                doc["metadata"] =
                    json!({"sample": {"padding": "x".repeat(target.saturating_sub(size))}});
            }
            let datagram = format!("{DAEMON_HEADER}\n{doc}");
            socket
                .send_to(datagram.as_bytes(), daemon)
                .map_err(|e| SampleError(format!("send to {daemon}: {e}")))?;
            sent_ids.push(id);
            if request.subsegment_interval_ms > 0 {
                tokio::time::sleep(Duration::from_millis(request.subsegment_interval_ms)).await;
            }
        }
    }
    let mut otel_span_ids = Vec::new();
    if let Some(trace) = trace.as_ref().filter(|_| sampled && request.otel_spans > 0) {
        let mut steps = Vec::with_capacity(request.otel_spans);
        for _ in 0..request.otel_spans {
            let start = unix_nanos();
            tokio::time::sleep(OTEL_STEP).await;
            steps.push((start, unix_nanos()));
        }
        let handler = (handler_start, unix_nanos());
        let datagram = otel_datagram(trace, handler, &steps, &mut otel_span_ids);
        socket
            .send_to(datagram.as_bytes(), daemon)
            .map_err(|e| SampleError(format!("send to {daemon}: {e}")))?;
    }
    if request.crash {
        // A runtime crash as Lambda sees one: the process is gone before it answers.
        std::process::exit(CRASH_EXIT_CODE);
    }
    if request.hang {
        tokio::time::sleep(HANG).await;
    }
    if request.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(request.sleep_ms)).await;
    }
    if request.error {
        return Err(SampleError("the event asked for an error".to_owned()));
    }
    let answer = json!({
        "trace_id": trace.as_ref().map(|t| t.root.clone()),
        // Lambda-Runtime-Aws-Tenant-Id, as lambda_runtime read it.
        "tenant_id": context.tenant_id,
        "sent_ids": sent_ids,
        "otel_span_ids": otel_span_ids,
        "sampled": sampled,
    });
    if request.stream_chunks == 0 {
        return Ok(FunctionResponse::BufferedResponse(answer));
    }
    let (mut sender, body) = lambda_runtime::streaming::channel();
    tokio::spawn(async move {
        if sender
            .send_data(format!("{answer}\n").into())
            .await
            .is_err()
        {
            return;
        }
        let chunk = "x".repeat(request.stream_chunk_bytes);
        for _ in 0..request.stream_chunks {
            tokio::time::sleep(Duration::from_millis(request.stream_interval_ms)).await;
            if sender.send_data(chunk.clone().into()).await.is_err() {
                return;
            }
        }
    });
    Ok(FunctionResponse::StreamingResponse(StreamResponse::from(
        body,
    )))
}

/// Nanoseconds since the epoch, now.
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One `T1S` datagram: a handler span (`handler`: start and end) under Lambda's `Parent` and
/// one span per step under it, at the steps' times.
fn otel_datagram(
    trace: &TraceHeader,
    handler: (u64, u64),
    steps: &[(u64, u64)],
    ids: &mut Vec<String>,
) -> String {
    use base64::Engine as _;
    let parent = trace.parent.clone().unwrap_or_default();
    ids.push(new_segment_id());
    ids.extend(steps.iter().map(|_| new_segment_id()));
    let names: Vec<String> = std::iter::once("handler".to_owned())
        .chain((0..steps.len()).map(|i| format!("otel-step-{i}")))
        .collect();
    let times = std::iter::once(handler).chain(steps.iter().copied());
    let specs: Vec<SpanSpec<'_>> = names
        .iter()
        .zip(ids.iter())
        .zip(times)
        .enumerate()
        .map(|(i, ((name, id), times))| SpanSpec {
            name,
            span_id: id,
            parent_span_id: if i == 0 { &parent } else { &ids[0] },
            times: Some(times),
        })
        .collect();
    let request = build_request(&trace.root, "sample-function", &specs);
    let body = base64::engine::general_purpose::STANDARD.encode(request);
    format!("{DAEMON_HEADER}\nT1S{body}")
}
