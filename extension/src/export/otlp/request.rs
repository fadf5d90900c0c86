//! The `/v1/traces` request, pure: the protobuf of sampled-span documents (`T1S` text, or the
//! OTLP/HTTP receiver's [`Body::Spans`]) concatenated into one `ExportTraceServiceRequest`
//! (repeated fields of a message concatenate, so no re-encoding) as it is gzip'd; batches
//! within the endpoint's limits; the answer read into an [`Answer`] or an [`ExportError`]. No
//! I/O.

use std::borrow::Cow;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::document::{Body, Document, DocumentKind};
use crate::export::backend::{Answer, ExportError};
use crate::export::xray::errors::by_status;
use crate::otlp::wire::{Fields, WireType};
use crate::otlp::{Form, Packing, SAMPLED_PREFIX, parse_request};

/// Most bytes of one request before compression (AWS: 5 MB; the stricter, decimal reading).
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
/// Most spans in one request.
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;
/// Largest span the endpoint takes (AWS: 200 KB; decimal).
pub const MAX_SPAN_BYTES: usize = 200_000;
/// Most bytes of an answer read (an `ExportTraceServiceResponse` is a few dozen bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Bytes of spans the OTLP/HTTP receiver puts in one document when spans come here: requests
/// are assembled from documents at send time, so this only bounds what one document holds
/// (and the packer's scratch), while each document repeats its resource and scope.
pub const PIECE_BYTES: usize = 256 * 1024;

/// How the OTLP/HTTP receiver packs spans that come here: whole spans of up to
/// [`MAX_SPAN_BYTES`] in serialized requests (no base64), at most [`PIECE_BYTES`] (or one span)
/// and [`MAX_SPANS_PER_REQUEST`] each; a span over [`MAX_SPAN_BYTES`], or that with its resource
/// and scope exceeds [`MAX_REQUEST_BYTES`], is refused.
pub const PACKING: Packing = Packing {
    form: Form::Protobuf,
    piece_bytes: PIECE_BYTES,
    piece_spans: MAX_SPANS_PER_REQUEST,
    max_span_bytes: MAX_SPAN_BYTES,
    max_alone_bytes: MAX_REQUEST_BYTES,
    scratch_factor: 3,
    refusal: "spans larger than 200,000 bytes were dropped",
};

/// Why a document cannot go to the OTLP endpoint (it was checked on receipt, so this is a
/// document of another kind routed here by mistake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a `T1S` document.
    #[error("not a sampled OTLP document")]
    NotSampledSpans,
    /// Its base64 or protobuf does not decode.
    #[error("undecodable OTLP document")]
    Undecodable,
}

/// What a document weighs against the request limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weight {
    /// Its serialized `ExportTraceServiceRequest`'s bytes.
    pub bytes: usize,
    /// Its spans.
    pub spans: usize,
}

/// Whether a document belongs on the OTLP endpoint: sampled OTLP spans (`T1S`).
pub fn is_sampled_spans(doc: &Document) -> bool {
    doc.kind == DocumentKind::SampledSpans
}

/// The serialized `ExportTraceServiceRequest` a sampled-spans document carries: decoded from
/// `T1S` text, or as held.
pub fn request_bytes(doc: &Document) -> Result<Cow<'_, [u8]>, RequestError> {
    if !is_sampled_spans(doc) {
        return Err(RequestError::NotSampledSpans);
    }
    match &doc.body {
        Body::Spans(bytes) => Ok(Cow::Borrowed(bytes)),
        Body::Text(text) => base64_simd::STANDARD
            .decode_to_vec(&text.as_bytes()[SAMPLED_PREFIX.len()..])
            .map(Cow::Owned)
            .map_err(|_| RequestError::Undecodable),
    }
}

/// What a `T1S` document weighs.
pub fn weigh(doc: &Document) -> Result<Weight, RequestError> {
    let bytes = request_bytes(doc)?;
    let request = parse_request(&bytes).map_err(|_| RequestError::Undecodable)?;
    Ok(Weight {
        bytes: bytes.len(),
        spans: request.spans().count(),
    })
}

/// Splits weighed items (oldest first) into batches of at most [`MAX_REQUEST_BYTES`] and
/// [`MAX_SPANS_PER_REQUEST`], keeping order. An item over a limit alone goes in a batch of its
/// own (the receivers never build one). Pure.
pub fn batches<T>(items: Vec<(T, Weight)>) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut total = Weight::default();
    for (item, w) in items {
        let over = total.bytes + w.bytes > MAX_REQUEST_BYTES
            || total.spans + w.spans > MAX_SPANS_PER_REQUEST;
        if over && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            total = Weight::default();
        }
        total.bytes += w.bytes;
        total.spans += w.spans;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One request, gzip'd as it is assembled (the uncompressed request is never held whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gzipped {
    /// The body as sent.
    pub wire: Vec<u8>,
    /// Its bytes before compression.
    pub raw_bytes: usize,
    /// Its spans.
    pub spans: usize,
}

/// One request's body: the documents' requests, concatenated and gzip'd.
pub fn gzipped_body(batch: &[&Document]) -> Result<Gzipped, RequestError> {
    let weight = batch.iter().map(|d| d.body.len()).sum::<usize>();
    let mut encoder = GzEncoder::new(Vec::with_capacity(weight / 4 + 64), Compression::fast());
    let (mut raw_bytes, mut spans) = (0, 0);
    for doc in batch {
        let bytes = request_bytes(doc)?;
        raw_bytes += bytes.len();
        spans += span_count(&bytes);
        // Writing into a `Vec` cannot fail.
        let _ = encoder.write_all(&bytes);
    }
    Ok(Gzipped {
        wire: encoder.finish().unwrap_or_default(),
        raw_bytes,
        spans,
    })
}

/// Spans in a serialized request (0 for one that does not parse).
pub fn span_count(bytes: &[u8]) -> usize {
    parse_request(bytes).map_or(0, |r| r.spans().count())
}

/// Reads the endpoint's answer: a 2xx with its `partial_success`, or the error for the status
/// and AWS's error code (`x-amzn-errortype`, before any `:`), as for PutTraceSegments.
pub fn answer(status: u16, error_type: Option<&str>, body: &[u8]) -> Result<Answer, ExportError> {
    if (200..300).contains(&status) {
        return Ok(Answer {
            rejected_spans: rejected_spans(body),
            ..Answer::default()
        });
    }
    let text = message(body);
    let code = error_type
        .and_then(|t| t.split(':').next())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .or_else(|| {
            text.contains("AccessDenied")
                .then_some("AccessDeniedException")
        })
        .unwrap_or_default();
    Err(by_status(status, code, text))
}

/// The spans an `ExportTraceServiceResponse` says were rejected (`partial_success`, field 1;
/// `rejected_spans`, its field 1). Zero for an empty or unreadable answer.
pub fn rejected_spans(body: &[u8]) -> u64 {
    Fields::new(body)
        .map_while(Result::ok)
        .filter(|f| f.number == 1 && f.wire_type == WireType::Len)
        .flat_map(|partial| Fields::new(partial.value).map_while(Result::ok))
        .filter(|f| f.number == 1 && f.wire_type == WireType::Varint)
        .map(|f| f.varint)
        .last()
        .unwrap_or(0)
}

/// The start of an error body, as text, for log lines.
fn message(body: &[u8]) -> String {
    let end = body.len().min(256);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

#[cfg(test)]
mod tests;
