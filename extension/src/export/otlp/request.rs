//! The `/v1/traces` request, pure: the protobuf of `T1S` documents concatenated into one
//! `ExportTraceServiceRequest` (repeated fields of a message concatenate, so no re-encoding),
//! gzip'd; batches within the endpoint's limits; the answer read into an [`Answer`] or an
//! [`ExportError`]. No I/O.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::document::{Document, DocumentKind};
use crate::export::backend::{Answer, ExportError};
use crate::export::xray::errors::by_status;
use crate::otlp::wire::{Fields, WireType};
use crate::otlp::{SAMPLED_PREFIX, parse_request};

/// Most bytes of one request before compression (AWS: 5 MB; the stricter, decimal reading).
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
/// Most spans in one request.
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;
/// Largest span the endpoint takes (AWS: 200 KB; decimal).
pub const MAX_SPAN_BYTES: usize = 200_000;
/// Most bytes of an answer read (an `ExportTraceServiceResponse` is a few dozen bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

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

/// The serialized `ExportTraceServiceRequest` a `T1S` document carries.
pub fn request_bytes(doc: &Document) -> Result<Vec<u8>, RequestError> {
    if !is_sampled_spans(doc) {
        return Err(RequestError::NotSampledSpans);
    }
    base64_simd::STANDARD
        .decode_to_vec(&doc.body.as_bytes()[SAMPLED_PREFIX.len()..])
        .map_err(|_| RequestError::Undecodable)
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

/// One request's body, before compression: the documents' requests, concatenated.
pub fn body(batch: &[&Document]) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    for doc in batch {
        out.extend_from_slice(&request_bytes(doc)?);
    }
    Ok(out)
}

/// Spans in a serialized request (0 for one that does not parse).
pub fn span_count(bytes: &[u8]) -> usize {
    parse_request(bytes).map_or(0, |r| r.spans().count())
}

/// `bytes`, gzip'd.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::fast(),
    );
    // Writing into a `Vec` cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
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
