//! The OTLP/HTTP receiver: `POST /v1/traces` from plain OpenTelemetry SDKs, on loopback.
//!
//! A request (`application/x-protobuf` or `application/json`, optionally gzip) becomes documents
//! as its [`Packing`] says, handed to the lifecycle loop like datagrams: `T1S` documents of at
//! most 64 KB for PutTraceSegments, or, when spans go to X-Ray's OTLP endpoint, pieces of the
//! request that keep spans of up to 200 KB whole. Answers follow the OTLP specification: 200
//! with an `ExportTraceServiceResponse` in the request's encoding (`partial_success` counts the
//! spans refused for their size), 400 for a
//! body that does not decode (not retried), 503 with `Retry-After` while the buffer is full
//! (retried). Bodies, decompressed sizes, connections and every stage's time are bounded.
//!
//! Every byte a request holds comes out of the buffer's budget, reserved before it is read or
//! allocated: the body (its `Content-Length` up front), and in [`decode`] the inflated body, the
//! decoded form and the documents. Decoding runs on a blocking thread, at most [`MAX_DECODES`] at
//! once and each under [`DECODE_TIMEOUT`], never on the lifecycle loop's thread. The socket is
//! bound by the caller and passed in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::udp::Ingested;
use crate::export::budget::{
    Admitted, BudgetError, HandOffBudget, ROOM_POLL, ROOM_WAIT, Reservation,
};
use crate::metrics::{self, LogLimiter, Metrics};
use crate::otlp::{OtlpError, Packing, Split, wire};
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
/// Requests decoded at once, each on a decode thread of ours with its memory reserved.
pub const MAX_DECODES: usize = 2;
/// Longest a request's decoding may take; past it the request gets 503 (the client retries).
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(2);
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
    /// The body is larger than we read, before or after decompression, or it needs more
    /// memory than the whole buffer.
    #[error(
        "body larger than {MAX_BODY_BYTES} bytes, {MAX_DECODED_BYTES} decompressed, or the buffer"
    )]
    TooLarge,
    /// The buffer has no room for it now.
    #[error("buffer full; retry")]
    Busy,
    /// Its decoding took longer than [`DECODE_TIMEOUT`].
    #[error("not decoded in time; retry")]
    Timeout,
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
            Self::Busy | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Gzip | Self::Decode(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Whether a `Content-Encoding` is gzip (else none); other codings are refused.
pub fn is_gzip(content_encoding: Option<&str>) -> Result<bool, ReceiverError> {
    match content_encoding.map(str::trim) {
        None | Some("") => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("identity") => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("gzip") => Ok(true),
        Some(_) => Err(ReceiverError::UnsupportedEncoding),
    }
}

/// Decodes one export request into documents packed as `packing` says, with a budget of its own
/// as large as the largest body inflated, and no deadline: what [`decode::decode`] does for the
/// receiver.
pub fn decode_export(
    encoding: Encoding,
    content_encoding: Option<&str>,
    body: &[u8],
    packing: &'static Packing,
) -> Result<Split, ReceiverError> {
    let gzip = is_gzip(content_encoding)?;
    let budget = HandOffBudget::new(8 * MAX_DECODED_BYTES);
    let mut reservation = budget.reservation();
    reservation
        .try_grow(body.len())
        .map_err(|_| ReceiverError::TooLarge)?;
    let far = Instant::now() + Duration::from_hours(1);
    let decoded = decode::decode(decode::Job {
        encoding,
        gzip,
        body: body.to_vec(),
        packing,
        reservation,
        room_deadline: far,
        deadline: far,
        wake: mpsc::channel(1).0,
    })?;
    Ok(Split {
        documents: decoded
            .documents
            .into_iter()
            .map(|a| a.into_parts().0)
            .collect(),
        rejected_spans: decoded.rejected_spans,
    })
}

/// An `ExportTraceServiceResponse`: empty, or with `partial_success` when spans were rejected
/// (saying why in `message`).
pub fn success_body(encoding: Encoding, rejected_spans: usize, message: &str) -> Vec<u8> {
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
    packing: &'static Packing,
    budget: HandOffBudget,
    /// The decode threads ([`MAX_DECODES`]), started by the first request.
    workers: std::sync::OnceLock<Option<decode::Workers>>,
    metrics: Arc<Metrics>,
    refused: Mutex<LogLimiter>,
}

/// Serves the receiver until the process ends (`listener` may be shared: a receiver started
/// again serves the same socket), packing each request's spans as `packing` says.
pub async fn run(
    listener: impl serve::Accept,
    docs: mpsc::Sender<Ingested>,
    packing: &'static Packing,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
) {
    let shared = Arc::new(Shared {
        docs,
        packing,
        budget,
        workers: std::sync::OnceLock::new(),
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
        if let Some(suppressed) = LogLimiter::allow_shared(&self.refused) {
            warn!(
                status = status.as_u16(),
                reason, suppressed, "OTLP request refused"
            );
        }
    }

    /// Hands every document over, or none: looks for room in the queue every [`ROOM_POLL`]
    /// until `deadline` (at least once), then `false` when it has none for them all. The
    /// documents already hold their bytes in the budget.
    async fn hand_over(&self, documents: Vec<Admitted>, deadline: tokio::time::Instant) -> bool {
        loop {
            if let Ok(slots) = self.docs.try_reserve_many(documents.len()) {
                metrics::add(&self.metrics.received, documents.len() as u64);
                for (slot, a) in slots.zip(documents) {
                    slot.send(Ingested::Document(a));
                }
                return true;
            }
            if tokio::time::Instant::now() + ROOM_POLL > deadline {
                return false;
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }
}

impl Shared {
    /// Runs `job` on a decode thread, waiting for an idle one until `room_deadline`.
    async fn decode(
        &self,
        job: decode::Job,
        room_deadline: tokio::time::Instant,
    ) -> decode::Outcome {
        let Some(workers) = self
            .workers
            .get_or_init(|| decode::Workers::start(MAX_DECODES))
        else {
            return Err(ReceiverError::Busy);
        };
        let mut job = job;
        loop {
            match workers.try_run(job) {
                Ok(outcome) => return outcome.await.unwrap_or(Err(ReceiverError::Timeout)),
                Err(back) => job = back,
            }
            if tokio::time::Instant::now() + ROOM_POLL > room_deadline {
                return Err(ReceiverError::Busy);
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }
}

/// Takes `bytes` more into `reservation`, looking for room every [`ROOM_POLL`] until `deadline`.
async fn grow(
    reservation: &mut Reservation,
    bytes: usize,
    deadline: tokio::time::Instant,
    wake: &mpsc::Sender<Ingested>,
) -> Result<(), ReceiverError> {
    // Best effort: a full queue is busy enough.
    let nudge = || drop(wake.try_send(Ingested::RoomWanted));
    match reservation.grow_until(bytes, deadline, nudge).await {
        Ok(()) => Ok(()),
        Err(BudgetError::TooLarge) => Err(ReceiverError::TooLarge),
        Err(BudgetError::NoRoom) => Err(ReceiverError::Busy),
    }
}

/// Why a body was not read.
enum Unread {
    Refused(ReceiverError),
    Broken,
}

/// Reads the body into a buffer whose bytes `reservation` holds before they are read: the whole
/// `Content-Length` up front, else as the body grows; never past [`MAX_BODY_BYTES`].
async fn read_body(
    mut body: Incoming,
    length: Option<usize>,
    reservation: &mut Reservation,
    room_deadline: tokio::time::Instant,
    wake: &mpsc::Sender<Ingested>,
) -> Result<Vec<u8>, Unread> {
    let mut out = Vec::new();
    if let Some(length) = length {
        if length > MAX_BODY_BYTES {
            return Err(Unread::Refused(ReceiverError::TooLarge));
        }
        grow(reservation, length, room_deadline, wake)
            .await
            .map_err(Unread::Refused)?;
        out.reserve_exact(length);
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Unread::Broken)?.into_data() else {
            continue;
        };
        let needed = out.len() + data.len();
        if needed > MAX_BODY_BYTES {
            return Err(Unread::Refused(ReceiverError::TooLarge));
        }
        if needed > out.capacity() {
            // The old buffer is held until its contents move into the new one.
            let old = out.capacity();
            let target = (old * 2).clamp(needed.max(16 * 1024), MAX_BODY_BYTES);
            grow(reservation, target, room_deadline, wake)
                .await
                .map_err(Unread::Refused)?;
            out.reserve_exact(target - out.len());
            reservation.release(old);
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
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
    let gzip = match is_gzip(content_encoding.as_deref()) {
        Ok(gzip) => gzip,
        Err(e) => return Ok(refuse(e.status(), encoding, &e.to_string())),
    };
    let refused = |e: ReceiverError| {
        let mut res = refuse(e.status(), encoding, &e.to_string());
        if e.status() == StatusCode::SERVICE_UNAVAILABLE {
            metrics::add(&shared.metrics.otlp_busy, 1);
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        } else {
            metrics::add(&shared.metrics.rejected, 1);
        }
        res
    };
    let room_deadline = tokio::time::Instant::now() + ROOM_WAIT;
    let length = header(CONTENT_LENGTH).and_then(|v| v.trim().parse::<usize>().ok());
    let mut reservation = shared.budget.reservation();
    let read = read_body(
        req.into_body(),
        length,
        &mut reservation,
        room_deadline,
        &shared.docs,
    );
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(Unread::Refused(e))) => return Ok(refused(e)),
        Ok(Err(Unread::Broken)) => {
            return Ok(refuse(StatusCode::BAD_REQUEST, encoding, "body not read"));
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
    let job = decode::Job {
        encoding,
        gzip,
        body,
        packing: shared.packing,
        reservation,
        room_deadline: room_deadline.into_std(),
        deadline: Instant::now() + DECODE_TIMEOUT,
        wake: shared.docs.clone(),
    };
    match shared.export(job, room_deadline).await {
        Ok(rejected_spans) => Ok(respond(
            StatusCode::OK,
            encoding,
            success_body(encoding, rejected_spans, shared.packing.refusal),
        )),
        Err(e) => Ok(refused(e)),
    }
}

impl Shared {
    /// Decodes `job` and hands its documents over; the spans left out.
    async fn export(
        &self,
        job: decode::Job,
        room_deadline: tokio::time::Instant,
    ) -> Result<usize, ReceiverError> {
        let (encoding, gzip) = (job.encoding, job.gzip);
        let decoded = self.decode(job, room_deadline).await?;
        debug!(
            encoding = ?encoding,
            gzip,
            documents = decoded.documents.len(),
            rejected_spans = decoded.rejected_spans,
            "OTLP request"
        );
        if decoded.rejected_spans > 0 {
            metrics::add(
                &self.metrics.otlp_spans_rejected,
                decoded.rejected_spans as u64,
            );
            self.log_refused(StatusCode::OK, self.packing.refusal);
        }
        let rejected_spans = decoded.rejected_spans;
        if self.hand_over(decoded.documents, room_deadline).await {
            Ok(rejected_spans)
        } else {
            Err(ReceiverError::Busy)
        }
    }
}

pub mod decode;

#[cfg(test)]
mod tests;
