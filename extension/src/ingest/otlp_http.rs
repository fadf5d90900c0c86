//! The OTLP/HTTP receiver: `POST /v1/traces` from plain OpenTelemetry SDKs, on loopback.
//!
//! A request (`application/x-protobuf` or `application/json`, optionally gzip) becomes `T1S`
//! documents of at most 64 KB ([`otlp::to_documents`]), handed to the lifecycle loop like
//! datagrams. Answers follow the OTLP specification: 200 with an `ExportTraceServiceResponse` in
//! the request's encoding (`partial_success` counts spans too large for any document), 400 for a
//! body that does not decode (not retried), 503 with `Retry-After` while the ingest queue is full
//! (retried). Bodies, decompressed sizes, connections and every stage's time are bounded. The
//! socket is bound by the caller and passed in.

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::otlp::{self, OtlpError, Sampling, Split, json, wire};
use super::protocol::Document;
use super::udp::Ingested;
use crate::export::budget::HandOffBudget;
use crate::metrics::{self, LogLimiter, Metrics};
use crate::serve;

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";
/// Largest request body read, as sent (compressed or not).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest body once decompressed.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;
/// Connections served at once; past it the oldest idle one is closed ([`crate::serve`]).
pub const MAX_CONNECTIONS: usize = 16;
/// Time allowed for a request's headers, and between requests on a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// What `Retry-After` asks of a client when the ingest queue is full, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// How long a request waits for room in the buffer (a send in flight frees it as it settles)
/// before it is answered 503: far less than the second an SDK waits before its retry.
pub const ROOM_WAIT: Duration = Duration::from_millis(250);
/// How often a waiting request looks for room. It looks rather than queues: a queue of
/// waiting requests would take every freed byte before the UDP reader, which never waits.
pub const ROOM_POLL: Duration = Duration::from_millis(5);
/// One log line per this interval for refused requests and spans.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a request body is encoded, and so how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP JSON mapping).
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; `None` for any other media type.
    pub fn of_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why a request was refused before its spans were considered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverError {
    /// Neither `application/x-protobuf` nor `application/json`.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// A `Content-Encoding` other than `gzip` or `identity`.
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// The body is larger than we read, before or after decompression.
    #[error("body larger than {MAX_BODY_BYTES} bytes, or {MAX_DECODED_BYTES} decompressed")]
    TooLarge,
    /// The gzip stream is corrupt or truncated.
    #[error("body is not valid gzip")]
    Gzip,
    /// The request does not decode.
    #[error("{0}")]
    Decode(#[from] OtlpError),
}

impl ReceiverError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType | Self::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Gzip | Self::Decode(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes one export request into documents. Pure.
pub fn decode_export(
    encoding: Encoding,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Split, ReceiverError> {
    let inflated;
    let body = match content_encoding.map(str::trim) {
        None | Some("") => body,
        Some(e) if e.eq_ignore_ascii_case("identity") => body,
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            inflated = gunzip(body)?;
            &inflated
        }
        Some(_) => return Err(ReceiverError::UnsupportedEncoding),
    };
    let converted;
    let protobuf = match encoding {
        Encoding::Protobuf => body,
        Encoding::Json => {
            converted = json::to_protobuf(body)?;
            &converted
        }
    };
    let request = otlp::parse_request(protobuf)?;
    Ok(otlp::to_documents(&request, Sampling::Sampled))
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, ReceiverError> {
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_DECODED_BYTES + 1).unwrap_or(u64::MAX);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| ReceiverError::Gzip)?;
    if out.len() > MAX_DECODED_BYTES {
        return Err(ReceiverError::TooLarge);
    }
    Ok(out)
}

/// An `ExportTraceServiceResponse`: empty, or with `partial_success` when spans were rejected.
pub fn success_body(encoding: Encoding, rejected_spans: usize) -> Vec<u8> {
    let message = "spans larger than one X-Ray document (64 KB) were dropped";
    match (encoding, rejected_spans) {
        (Encoding::Json, 0) => b"{}".to_vec(),
        (Encoding::Json, n) => serde_json::json!({
            "partialSuccess": {"rejectedSpans": n.to_string(), "errorMessage": message}
        })
        .to_string()
        .into_bytes(),
        (Encoding::Protobuf, 0) => Vec::new(),
        (Encoding::Protobuf, n) => {
            let mut partial = Vec::new();
            wire::put_varint_field(&mut partial, 1, n as u64);
            wire::put_len(&mut partial, 2, message.as_bytes());
            let mut out = Vec::new();
            wire::put_len(&mut out, 1, &partial);
            out
        }
    }
}

/// A `google.rpc.Status` carrying `message`, in the request's encoding.
pub fn status_body(encoding: Encoding, code: u32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
        Encoding::Protobuf => {
            let mut out = Vec::new();
            wire::put_varint_field(&mut out, 1, u64::from(code));
            wire::put_len(&mut out, 2, message.as_bytes());
            out
        }
    }
}

/// What every connection shares.
struct Shared {
    docs: mpsc::Sender<Ingested>,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
    refused: Mutex<LogLimiter>,
}

/// Serves the receiver until the process ends (`listener` may be shared: a receiver started
/// again serves the same socket).
pub async fn run(
    listener: impl serve::Accept,
    docs: mpsc::Sender<Ingested>,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
) {
    let shared = Arc::new(Shared {
        docs,
        budget,
        metrics,
        refused: Mutex::new(LogLimiter::new(LOG_INTERVAL)),
    });
    let bounds = serve::Bounds {
        max_connections: MAX_CONNECTIONS,
        head_timeout: HEADER_TIMEOUT,
    };
    serve::serve(listener, bounds, "otlp", move |req| {
        handle(req, shared.clone())
    })
    .await;
}

fn respond(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    res
}

impl Shared {
    fn log_refused(&self, status: StatusCode, reason: &str) {
        let allowed = self
            .refused
            .lock()
            .ok()
            .and_then(|mut l| l.allow(Instant::now()));
        if let Some(suppressed) = allowed {
            warn!(
                status = status.as_u16(),
                reason, suppressed, "OTLP request refused"
            );
        }
    }

    /// Hands every document over, or none: looks for room in the buffer and the queue every
    /// [`ROOM_POLL`] for up to [`ROOM_WAIT`], then `false` when they have none for them all.
    async fn hand_over(&self, documents: Vec<Document>) -> bool {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        let bytes = documents.iter().map(Document::weight).sum();
        if !self.budget.could_admit(bytes) {
            return false;
        }
        let mut documents = documents;
        loop {
            if let Ok(slots) = self.docs.try_reserve_many(documents.len()) {
                match self.budget.admit_all(documents) {
                    Ok(admitted) => {
                        metrics::add(&self.metrics.received, admitted.len() as u64);
                        for (slot, a) in slots.zip(admitted) {
                            slot.send(Ingested::Document(a));
                        }
                        return true;
                    }
                    // The reserved slots go back as `slots` drops.
                    Err(back) => documents = back,
                }
            }
            if tokio::time::Instant::now() + ROOM_POLL > deadline {
                return false;
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let encoding = header(CONTENT_TYPE).and_then(Encoding::of_content_type);
    let content_encoding = header(CONTENT_ENCODING).map(str::to_owned);
    if req.uri().path() != TRACES_PATH {
        return Ok(respond(StatusCode::NOT_FOUND, Encoding::Json, Vec::new()));
    }
    if req.method() != Method::POST {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            Encoding::Json,
            Vec::new(),
        ));
    }
    let refuse = |status: StatusCode, encoding: Encoding, reason: &str| {
        shared.log_refused(status, reason);
        let code = if status == StatusCode::BAD_REQUEST {
            3
        } else {
            9
        };
        respond(status, encoding, status_body(encoding, code, reason))
    };
    let Some(encoding) = encoding else {
        let e = ReceiverError::UnsupportedMediaType;
        return Ok(refuse(e.status(), Encoding::Json, &e.to_string()));
    };
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => {
            let status = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Ok(refuse(status, encoding, "body not read"));
        }
        Err(_) => {
            return Ok(refuse(
                StatusCode::REQUEST_TIMEOUT,
                encoding,
                "body not read in time",
            ));
        }
    };
    crate::fault::check(crate::fault::Site::OtlpReceiver, &body);
    let split = match decode_export(encoding, content_encoding.as_deref(), &body) {
        Ok(split) => split,
        Err(e) => {
            metrics::add(&shared.metrics.rejected, 1);
            return Ok(refuse(e.status(), encoding, &e.to_string()));
        }
    };
    debug!(
        encoding = ?encoding,
        gzip = content_encoding.is_some_and(|e| e.eq_ignore_ascii_case("gzip")),
        documents = split.documents.len(),
        rejected_spans = split.rejected_spans,
        "OTLP request"
    );
    if split.rejected_spans > 0 {
        metrics::add(
            &shared.metrics.otlp_spans_rejected,
            split.rejected_spans as u64,
        );
        shared.log_refused(
            StatusCode::OK,
            "span larger than one X-Ray document dropped",
        );
    }
    if !shared.hand_over(split.documents).await {
        metrics::add(&shared.metrics.otlp_busy, 1);
        let mut res = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            encoding,
            "buffer full; retry",
        );
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return Ok(res);
    }
    Ok(respond(
        StatusCode::OK,
        encoding,
        success_body(encoding, split.rejected_spans),
    ))
}

#[cfg(test)]
mod tests;
