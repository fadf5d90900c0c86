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
mod handlers;
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
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::Server;

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
    /// The plan for `/v1/traces` alone, when set (else `plan` serves it too).
    traces_plan: Mutex<Option<FaultPlan>>,
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

    fn traces_plan(&self) -> MutexGuard<'_, Option<FaultPlan>> {
        self.traces_plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
            traces_plan: Mutex::new(None),
            changed: watch::Sender::new(0),
        });
        let handler_shared = Arc::clone(&shared);
        let server = Server::start(
            listener,
            BODY_LIMIT,
            Arc::new(move |req| {
                let shared = Arc::clone(&handler_shared);
                Box::pin(handlers::handle(shared, req))
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

    /// A fault plan for `/v1/traces` alone (`PutTraceSegments` keeps the other one); `None`
    /// gives it the other one again. Call indexes are shared.
    pub fn set_traces_fault_plan(&self, plan: Option<FaultPlan>) {
        *self.shared.traces_plan() = plan;
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
