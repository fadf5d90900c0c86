//! An X-Ray API endpoint for tests: `PutTraceSegments` as aws-sdk-xray (restJson1) calls it, plus
//! the daemon-side operations an extension may use (`PutTelemetryRecords`, `GetSamplingRules`,
//! `SamplingTargets`), answered with empty successes.
//!
//! Unlike moto it enforces the service limits: more than 50 documents → 400
//! `InvalidRequestException`; a document over 64 KB, not a JSON object, missing
//! `id`/`name`/`trace_id`/`start_time`/(`end_time` | `in_progress`), or with a malformed or too old
//! trace id → listed in `UnprocessedTraceSegments`. `SigV4` is not checked.
//!
//! OTLP documents (`T1S`/`T1U` + base64 of an `ExportTraceServiceRequest`, as AWS's OpenTelemetry
//! SDKs send them) are decoded into spans ([`XraySink::spans`]) the way the service does; one that
//! does not decode is listed unprocessed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xray_extension_tests::sink::SinkError> {
//! use std::time::Duration;
//! use xray_extension_tests::sink::{Fault, FaultPlan, XraySink};
//! let sink = XraySink::start().await?;
//! sink.set_fault_plan(FaultPlan::first(1, Fault::Throttle)); // the first call gets 429
//! // … point AWS_ENDPOINT_URL_XRAY at sink.endpoint() …
//! let docs = sink.wait_for_documents(3, Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

mod fault;
pub mod otlp;
pub mod traces;
mod validate;

pub use fault::{Fault, FaultPlan};
pub use otlp::{ReceivedSpan, decode_document, is_otlp};
pub use validate::{
    MAX_DOCUMENT_BYTES, MAX_DOCUMENTS_PER_CALL, MAX_NAME_CHARS, Rejection, check_document,
    check_trace_id,
};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{Request, Response, Server, disconnect_response, json_response};
use crate::trace::new_uuid;

/// Largest request body the sink reads (well above 50 × 64 KB).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Errors of the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The listener could not be bound.
    #[error("bind the X-Ray sink on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A wait ran out.
    #[error(
        "timed out after {waited:?} waiting for {what}; the sink holds {documents} documents from {calls} calls"
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// Distinct documents stored at the time.
        documents: usize,
        /// Calls received at the time.
        calls: usize,
    },
}

/// The X-Ray operation a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /TraceSegments`.
    PutTraceSegments,
    /// `POST /TelemetryRecords`.
    PutTelemetryRecords,
    /// `POST /GetSamplingRules`.
    GetSamplingRules,
    /// `POST /SamplingTargets`.
    GetSamplingTargets,
    /// `POST /v1/traces`: the OTLP endpoint.
    OtlpTraces,
    /// Anything else (answered 404).
    Unknown,
}

impl Operation {
    fn of(method: &Method, path: &str) -> Self {
        if method != Method::POST {
            return Self::Unknown;
        }
        match path {
            "/TraceSegments" => Self::PutTraceSegments,
            "/TelemetryRecords" => Self::PutTelemetryRecords,
            "/GetSamplingRules" => Self::GetSamplingRules,
            "/SamplingTargets" => Self::GetSamplingTargets,
            "/v1/traces" => Self::OtlpTraces,
            _ => Self::Unknown,
        }
    }
}

/// One document of a `PutTraceSegments` call as submitted.
#[derive(Debug, Clone)]
pub struct SubmittedDocument {
    /// The raw string.
    pub raw: String,
    /// The document parsed, when it is JSON.
    pub value: Option<Value>,
    /// Why it was listed unprocessed, if it was.
    pub rejection: Option<Rejection>,
}

/// One request the sink answered.
#[derive(Debug, Clone)]
pub struct SinkCall {
    /// The operation.
    pub operation: Operation,
    /// For `PutTraceSegments` and `/v1/traces`, the call's index in the fault plan (one count
    /// for both).
    pub put_index: Option<usize>,
    /// When the request had been read.
    pub at: Instant,
    /// The request body.
    pub body: Value,
    /// For `PutTraceSegments`, the documents in order.
    pub documents: Vec<SubmittedDocument>,
    /// The status answered (0 when the connection was closed unanswered).
    pub status: u16,
    /// The body answered.
    pub response: Value,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
    /// Whether the request carried a `SigV4` `Authorization` header.
    pub signed: bool,
    /// The access key id the request was signed with (`Credential=<id>/...`).
    pub access_key_id: Option<String>,
    /// For `/v1/traces` requests the sink took, what they held.
    pub traces: Option<traces::TracesCall>,
}

/// A stored (processed) document.
#[derive(Debug, Clone)]
pub struct ReceivedDocument {
    /// The document's `id`.
    pub id: String,
    /// Its `trace_id`.
    pub trace_id: String,
    /// The raw string as submitted.
    pub raw: String,
    /// The parsed document.
    pub value: Value,
    /// When the call that stored it arrived.
    pub at: Instant,
    /// The `PutTraceSegments` call index that stored it.
    pub put_index: usize,
}

impl ReceivedDocument {
    /// The document's `name`.
    pub fn name(&self) -> &str {
        self.value.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// The document's `parent_id`, when present.
    pub fn parent_id(&self) -> Option<&str> {
        self.value.get("parent_id").and_then(Value::as_str)
    }
}

/// Everything the sink has received, as seen by [`XraySink::wait_for`] predicates.
#[derive(Debug, Default)]
pub struct SinkRecords {
    calls: Vec<SinkCall>,
    stored: Vec<ReceivedDocument>,
    spans: Vec<ReceivedSpan>,
    put_calls: usize,
}

impl SinkRecords {
    /// Every call, in arrival order.
    pub fn calls(&self) -> &[SinkCall] {
        &self.calls
    }

    /// Every stored document in arrival order, re-sent ones included.
    pub fn all_documents(&self) -> &[ReceivedDocument] {
        &self.stored
    }

    /// Every span decoded from OTLP documents, in arrival order, re-sent ones included.
    pub fn spans(&self) -> &[ReceivedSpan] {
        &self.spans
    }

    /// Stored documents deduplicated by `id`, keeping the latest, in order of first arrival.
    pub fn documents(&self) -> Vec<ReceivedDocument> {
        let mut order: Vec<&str> = Vec::new();
        let mut latest: HashMap<&str, &ReceivedDocument> = HashMap::new();
        for doc in &self.stored {
            if latest.insert(&doc.id, doc).is_none() {
                order.push(&doc.id);
            }
        }
        order
            .into_iter()
            .filter_map(|id| latest.get(id).map(|d| (*d).clone()))
            .collect()
    }

    /// The number of distinct stored document ids.
    pub fn distinct_documents(&self) -> usize {
        let mut ids: Vec<&str> = self.stored.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

struct SinkShared {
    records: Mutex<SinkRecords>,
    plan: Mutex<FaultPlan>,
    changed: watch::Sender<u64>,
}

impl SinkShared {
    fn records(&self) -> MutexGuard<'_, SinkRecords> {
        // A panic while holding the lock cannot leave the records half-updated in a way that
        // matters to a test; keep serving.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self) -> MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The X-Ray API sink. Dropping it stops the server.
pub struct XraySink {
    server: Server,
    shared: Arc<SinkShared>,
}

impl XraySink {
    /// Starts a sink on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, SinkError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a sink on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Result<Self, SinkError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SinkError::Bind { addr, source })?;
        let shared = Arc::new(SinkShared {
            records: Mutex::new(SinkRecords::default()),
            plan: Mutex::new(FaultPlan::none()),
            changed: watch::Sender::new(0),
        });
        let handler_shared = Arc::clone(&shared);
        let server = Server::start(
            listener,
            BODY_LIMIT,
            Arc::new(move |req| {
                let shared = Arc::clone(&handler_shared);
                Box::pin(handle(shared, req))
            }),
        )
        .map_err(|source| SinkError::Bind { addr, source })?;
        Ok(Self { server, shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `http://<addr>`, the value for `AWS_ENDPOINT_URL_XRAY`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Replaces the fault plan; call indexes keep counting from where they are.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        *self.shared.plan() = plan;
    }

    /// Forgets every call and document and restarts the call index at 0.
    pub fn clear(&self) {
        *self.shared.records() = SinkRecords::default();
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Every call, in arrival order.
    pub fn calls(&self) -> Vec<SinkCall> {
        self.shared.records().calls.clone()
    }

    /// The `PutTraceSegments` calls, in arrival order.
    pub fn put_calls(&self) -> Vec<SinkCall> {
        self.shared
            .records()
            .calls
            .iter()
            .filter(|c| c.operation == Operation::PutTraceSegments)
            .cloned()
            .collect()
    }

    /// Stored documents deduplicated by `id` (the latest kept), in order of first arrival.
    pub fn documents(&self) -> Vec<ReceivedDocument> {
        self.shared.records().documents()
    }

    /// Every stored document in arrival order, re-sent ones included.
    pub fn all_documents(&self) -> Vec<ReceivedDocument> {
        self.shared.records().stored.clone()
    }

    /// Every span decoded from OTLP documents, in arrival order, re-sent ones included.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.records().spans.clone()
    }

    /// The bodies of `PutTelemetryRecords` calls.
    pub fn telemetry_records(&self) -> Vec<Value> {
        self.shared
            .records()
            .calls
            .iter()
            .filter(|c| c.operation == Operation::PutTelemetryRecords)
            .map(|c| c.body.clone())
            .collect()
    }

    /// Waits until `predicate` holds over the records, woken by each new call (no polling).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&SinkRecords) -> bool,
    ) -> Result<(), SinkError> {
        let mut changes = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.mark_unchanged();
            {
                let records = self.shared.records();
                if predicate(&records) {
                    return Ok(());
                }
            }
            let timed_out = tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err();
            if timed_out {
                let records = self.shared.records();
                return Err(SinkError::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                    documents: records.distinct_documents(),
                    calls: records.calls.len(),
                });
            }
        }
    }

    /// Waits until at least `n` distinct documents are stored and returns them all.
    pub async fn wait_for_documents(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedDocument>, SinkError> {
        self.wait_for(&format!("{n} distinct documents"), timeout, |r| {
            r.distinct_documents() >= n
        })
        .await?;
        Ok(self.documents())
    }
}

impl std::fmt::Debug for XraySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XraySink")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

/// The access key id of a `SigV4` `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/xray/aws4_request, ...`.
fn signing_key_id(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    let id = credential.split('/').next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

async fn handle(shared: Arc<SinkShared>, req: Request) -> Response {
    let operation = Operation::of(&req.method, &req.path);
    let signed = req.headers.contains_key(http::header::AUTHORIZATION);
    let access_key_id = req
        .header(http::header::AUTHORIZATION.as_str())
        .and_then(signing_key_id);
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut call = SinkCall {
        operation,
        put_index: None,
        at: req.body_done_at,
        body,
        documents: Vec::new(),
        status: 200,
        response: json!({}),
        fault: None,
        signed,
        access_key_id,
        traces: None,
    };
    let (status, error_type) = match operation {
        Operation::PutTraceSegments => {
            return put_trace_segments(&shared, call).await;
        }
        Operation::OtlpTraces => return otlp_traces(&shared, call, &req).await,
        Operation::PutTelemetryRecords => (StatusCode::OK, None),
        Operation::GetSamplingRules => {
            call.response = json!({"SamplingRuleRecords": []});
            (StatusCode::OK, None)
        }
        Operation::GetSamplingTargets => {
            call.response = json!({
                "SamplingTargetDocuments": [],
                "LastRuleModification": 0,
                "UnprocessedStatistics": [],
            });
            (StatusCode::OK, None)
        }
        Operation::Unknown => {
            call.response =
                json!({"message": format!("no operation at {} {}", req.method, req.path)});
            (StatusCode::NOT_FOUND, Some("UnknownOperationException"))
        }
    };
    call.status = status.as_u16();
    let response = aws_response(status, error_type, &call.response);
    record(&shared, call, Vec::new(), Vec::new());
    response
}

/// `/v1/traces`: faults as for `PutTraceSegments`, then the checks of [`traces::check`]; the
/// answer is an empty `ExportTraceServiceResponse`.
async fn otlp_traces(shared: &SinkShared, mut call: SinkCall, req: &Request) -> Response {
    let index = {
        let mut records = shared.records();
        let index = records.put_calls;
        records.put_calls += 1;
        index
    };
    call.put_index = Some(index);
    call.fault = shared.plan().fault_for(index);
    if let Some(response) = apply_fault(shared, &mut call).await {
        return response;
    }
    match traces::check(req, req.header("host").unwrap_or_default()) {
        Ok((checked, spans)) => {
            call.traces = Some(checked);
            call.response = Value::Null;
            let response =
                crate::http::bytes_response(StatusCode::OK, "application/x-protobuf", Vec::new());
            record(shared, call, Vec::new(), spans);
            response
        }
        Err(refusal) => {
            call.status = refusal.status;
            call.response = json!({"message": refusal.message});
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            let response = aws_response(status, Some(refusal.error_type), &call.response);
            record(shared, call, Vec::new(), Vec::new());
            response
        }
    }
}

async fn put_trace_segments(shared: &SinkShared, mut call: SinkCall) -> Response {
    let index = {
        let mut records = shared.records();
        let index = records.put_calls;
        records.put_calls += 1;
        index
    };
    call.put_index = Some(index);
    let fault = shared.plan().fault_for(index);
    call.fault.clone_from(&fault);
    if let Some(response) = apply_fault(shared, &mut call).await {
        return response;
    }
    let Some(raw_documents) = call
        .body
        .get("TraceSegmentDocuments")
        .and_then(Value::as_array)
        .and_then(|docs| {
            docs.iter()
                .map(|d| d.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
    else {
        return refuse(
            shared,
            call,
            "TraceSegmentDocuments must be a list of strings",
        );
    };
    if raw_documents.len() > MAX_DOCUMENTS_PER_CALL {
        call.documents = raw_documents
            .into_iter()
            .map(|raw| SubmittedDocument {
                value: serde_json::from_str(&raw).ok(),
                raw,
                rejection: None,
            })
            .collect();
        let message = format!("Exceeding maximum segment count: {MAX_DOCUMENTS_PER_CALL}");
        return refuse(shared, call, &message);
    }
    let unprocessed_fraction = match fault {
        Some(Fault::PartialUnprocessed(fraction)) => Some(fraction),
        _ => None,
    };
    let Checked {
        submitted,
        stored,
        spans,
        unprocessed,
    } = check_documents(raw_documents, unprocessed_fraction, call.at, index);
    call.documents = submitted;
    call.response = json!({"UnprocessedTraceSegments": unprocessed});
    let response = aws_response(StatusCode::OK, None, &call.response);
    record(shared, call, stored, spans);
    response
}

/// Applies the call's fault; `Some` is the answer when the fault replaces processing.
async fn apply_fault(shared: &SinkShared, call: &mut SinkCall) -> Option<Response> {
    let (status, error_type) = match call.fault.clone()? {
        Fault::Delay(pause) => {
            tokio::time::sleep(pause).await;
            return None;
        }
        Fault::PartialUnprocessed(_) => return None,
        Fault::Throttle => (
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottledException".to_owned(),
        ),
        Fault::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure".to_owned(),
        ),
        Fault::Status { status, error_type } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_type,
        ),
        Fault::Disconnect => {
            call.status = 0;
            call.response = Value::Null;
            record(shared, call.clone(), Vec::new(), Vec::new());
            return Some(disconnect_response());
        }
    };
    call.status = status.as_u16();
    call.response = json!({"message": format!("injected {error_type}")});
    let response = aws_response(status, Some(&error_type), &call.response);
    record(shared, call.clone(), Vec::new(), Vec::new());
    Some(response)
}

/// Answers 400 `InvalidRequestException` and records the call.
fn refuse(shared: &SinkShared, mut call: SinkCall, message: &str) -> Response {
    call.status = 400;
    call.response = json!({"message": message});
    let response = aws_response(
        StatusCode::BAD_REQUEST,
        Some("InvalidRequestException"),
        &call.response,
    );
    record(shared, call, Vec::new(), Vec::new());
    response
}

/// What one `PutTraceSegments` call's documents came to.
#[derive(Default)]
struct Checked {
    /// Every document as submitted.
    submitted: Vec<SubmittedDocument>,
    /// The JSON documents stored.
    stored: Vec<ReceivedDocument>,
    /// The spans of the OTLP documents stored.
    spans: Vec<ReceivedSpan>,
    /// The `UnprocessedTraceSegments` entries.
    unprocessed: Vec<Value>,
}

/// Checks each document (the injected unprocessed fraction applies to JSON documents only).
fn check_documents(
    raw_documents: Vec<String>,
    unprocessed_fraction: Option<f64>,
    at: Instant,
    put_index: usize,
) -> Checked {
    let now = SystemTime::now();
    let mut out = Checked::default();
    let Checked {
        submitted,
        stored,
        spans,
        unprocessed,
    } = &mut out;
    let mut valid_seen = 0;
    for raw in raw_documents {
        if is_otlp(&raw) {
            let rejection = match decode_document(&raw, now) {
                Ok(decoded) => {
                    spans.extend(decoded);
                    None
                }
                Err(r) => {
                    unprocessed.push(json!({
                        "Id": "",
                        "ErrorCode": r.error_code,
                        "Message": r.message,
                    }));
                    Some(r)
                }
            };
            submitted.push(SubmittedDocument {
                raw,
                value: None,
                rejection,
            });
            continue;
        }
        let value: Option<Value> = serde_json::from_str(&raw).ok();
        let mut rejection = check_document(&raw, now).err();
        if rejection.is_none() {
            if let Some(fraction) = unprocessed_fraction
                && fault::is_marked_unprocessed(valid_seen, fraction)
            {
                rejection = Some(Rejection {
                    id: value
                        .as_ref()
                        .and_then(|v| v.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    error_code: "ThrottledException",
                    message: "injected: rate exceeded".to_owned(),
                });
            }
            valid_seen += 1;
        }
        match (&rejection, &value) {
            (Some(r), _) => unprocessed.push(json!({
                "Id": r.id.clone().unwrap_or_default(),
                "ErrorCode": r.error_code,
                "Message": r.message,
            })),
            (None, Some(v)) => stored.push(ReceivedDocument {
                id: v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                trace_id: v
                    .get("trace_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                raw: raw.clone(),
                value: v.clone(),
                at,
                put_index,
            }),
            (None, None) => {}
        }
        submitted.push(SubmittedDocument {
            raw,
            value,
            rejection,
        });
    }
    out
}

fn record(
    shared: &SinkShared,
    call: SinkCall,
    stored: Vec<ReceivedDocument>,
    spans: Vec<ReceivedSpan>,
) {
    {
        let mut records = shared.records();
        records.calls.push(call);
        records.stored.extend(stored);
        records.spans.extend(spans);
    }
    shared.changed.send_modify(|v| *v += 1);
}

/// A restJson1 response: errors carry their type in `x-amzn-ErrorType`.
fn aws_response(status: StatusCode, error_type: Option<&str>, body: &Value) -> Response {
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    if let Ok(request_id) = HeaderValue::from_str(&new_uuid()) {
        headers.insert("x-amzn-RequestId", request_id);
    }
    if let Some(error_type) = error_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-amzn-ErrorType", error_type);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::signing_key_id;

    #[test]
    fn the_signing_key_id_is_read_from_the_credential_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261130/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=ab";
        assert_eq!(signing_key_id(header).as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(signing_key_id("Bearer x"), None);
        assert_eq!(signing_key_id("AWS4-HMAC-SHA256 Credential=/x"), None);
    }
}
