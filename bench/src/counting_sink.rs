//! A minimal X-Ray endpoint for the load runs: it answers `PutTraceSegments` with no
//! unprocessed documents, and X-Ray's OTLP endpoint (`/v1/traces`, no signature check) with an
//! empty `ExportTraceServiceResponse`, and only counts (calls, documents per call, which
//! generator documents and spans arrived, the bytes the spans took on the wire). The full [`xray_extension_tests::sink::XraySink`] parses, validates and keeps every document,
//! which at 20k documents/s costs more CPU than the extension itself on a 2-core machine and
//! would make the harness, not the extension, the bottleneck.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use base64::Engine as _;
use hyper::StatusCode;
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use xray_extension_tests::http::{Request, Server, bytes_response, json_response};
use xray_extension_tests::sink::otlp;

/// Request bodies up to this size are read (X-Ray's own limit is far below).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct PutTraceSegments<'a> {
    #[serde(rename = "TraceSegmentDocuments", borrow)]
    documents: Vec<Cow<'a, str>>,
}

/// What the endpoint saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// `(when, documents)` of each `PutTraceSegments` call.
    pub calls: Vec<(Instant, usize)>,
    /// Distinct generator documents, and spans of `T1S` documents (ids whose top 32 bits are
    /// the run's tag).
    pub tagged: HashSet<u64>,
    /// Bytes the `T1S` documents took in `PutTraceSegments` bodies (each with its quotes and
    /// comma).
    pub span_document_bytes: u64,
    /// `/v1/traces` requests.
    pub traces_calls: u64,
    /// Their bodies' bytes as sent (gzip'd).
    pub traces_wire_bytes: u64,
    /// Their bytes once inflated.
    pub traces_raw_bytes: u64,
    /// Distinct ids of every segment document (not `T1S`), when the sink records them
    /// ([`CountingSink::start_recording_ids`]): what a soak checks its function's documents
    /// against.
    pub ids: HashSet<u64>,
}

/// The running endpoint.
pub struct CountingSink {
    server: Server,
    counts: Arc<Mutex<Counts>>,
}

/// A segment document's `id`, wherever it is among the keys.
#[derive(Deserialize)]
struct DocumentId<'a> {
    id: &'a str,
}

fn handle(
    counts: &Mutex<Counts>,
    tag: u64,
    record_ids: bool,
    request: &Request,
) -> xray_extension_tests::http::Response {
    if request.path == "/v1/traces" {
        return traces(counts, tag, request);
    }
    if request.path != "/TraceSegments" {
        return json_response(StatusCode::OK, &json!({}));
    }
    let Ok(body) = serde_json::from_slice::<PutTraceSegments<'_>>(&request.body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"__type": "InvalidRequestException", "message": "bad body"}),
        );
    };
    let ids = body.documents.iter().filter_map(|d| {
        let hex = d.strip_prefix(r#"{"id":""#)?.get(..16)?;
        let id = u64::from_str_radix(hex, 16).ok()?;
        (id >> 32 == tag).then_some(id)
    });
    let spans: Vec<u64> = body
        .documents
        .iter()
        .filter_map(|d| d.strip_prefix("T1S"))
        .flat_map(|b64| otlp_span_ids(b64, tag))
        .collect();
    let all: Vec<u64> = if record_ids {
        body.documents
            .iter()
            .filter(|d| !d.starts_with("T1"))
            .filter_map(|d| serde_json::from_str::<DocumentId<'_>>(d).ok())
            .filter_map(|d| u64::from_str_radix(d.id, 16).ok())
            .collect()
    } else {
        Vec::new()
    };
    let span_document_bytes: usize = body
        .documents
        .iter()
        .filter(|d| d.starts_with("T1S"))
        .map(|d| d.len() + 3)
        .sum();
    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    c.tagged.extend(ids);
    c.tagged.extend(spans);
    c.span_document_bytes += span_document_bytes as u64;
    c.ids.extend(all);
    c.calls.push((request.received_at, body.documents.len()));
    drop(c);
    json_response(StatusCode::OK, &json!({"UnprocessedTraceSegments": []}))
}

/// `POST /v1/traces`: counts the tagged spans of the (gzip'd) request and its bytes.
fn traces(
    counts: &Mutex<Counts>,
    tag: u64,
    request: &Request,
) -> xray_extension_tests::http::Response {
    let gzip = request.header("content-encoding") == Some("gzip");
    let mut raw = Vec::new();
    let inflated = if gzip {
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&request.body[..]),
            &mut raw,
        )
        .is_ok()
    } else {
        raw.extend_from_slice(&request.body);
        true
    };
    if !inflated {
        return bytes_response(StatusCode::BAD_REQUEST, "text/plain", "bad gzip");
    }
    let spans = request_span_ids(&raw, tag);
    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    c.tagged.extend(spans);
    c.traces_calls += 1;
    c.traces_wire_bytes += request.body.len() as u64;
    c.traces_raw_bytes += raw.len() as u64;
    drop(c);
    bytes_response(StatusCode::OK, "application/x-protobuf", Vec::new())
}

/// The span ids tagged `tag` in an OTLP document's base64 body (none when it does not decode).
fn otlp_span_ids(b64: &str, tag: u64) -> Vec<u64> {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return Vec::new();
    };
    request_span_ids(&bytes, tag)
}

/// The span ids tagged `tag` in a serialized request (none when it does not decode).
fn request_span_ids(bytes: &[u8], tag: u64) -> Vec<u64> {
    let Ok(request) = otlp::ExportTraceServiceRequest::decode(bytes) else {
        return Vec::new();
    };
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter_map(|s| Some(u64::from_be_bytes(s.span_id.as_slice().try_into().ok()?)))
        .filter(|id| id >> 32 == tag)
        .collect()
}

impl CountingSink {
    /// Starts on `127.0.0.1:0`, counting generator documents tagged `tag`.
    pub async fn start(tag: u64) -> std::io::Result<Self> {
        Self::start_with(tag, false).await
    }

    /// The same, also recording the id of every segment document in [`Counts::ids`] (a JSON
    /// parse per document: kept out of the load runs, where the sink's CPU matters).
    pub async fn start_recording_ids(tag: u64) -> std::io::Result<Self> {
        Self::start_with(tag, true).await
    }

    async fn start_with(tag: u64, record_ids: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = Arc::clone(&counts);
        let server = Server::start(
            listener,
            BODY_LIMIT,
            Arc::new(move |request| {
                let response = handle(&shared, tag, record_ids, &request);
                Box::pin(async move { response })
            }),
        )?;
        Ok(Self { server, counts })
    }

    /// `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// Runs `f` over the counts.
    pub fn with_counts<T>(&self, f: impl FnOnce(&Counts) -> T) -> T {
        f(&self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
