//! What ingest hands on and everything after it carries: one validated document, from either
//! parser (the daemon protocol's segment documents, [`crate::ingest::protocol`], and OTLP
//! documents, [`crate::otlp`]). Pure.

use crate::trace::{SegmentId, TraceId};

/// Largest document X-Ray accepts (64 KB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// What a document is, decided once by the parser that accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// A segment or subsegment document (JSON).
    Segment,
    /// OTLP spans, sampled (`T1S`).
    SampledSpans,
    /// OTLP spans, unsampled (`T1U`, sent by Application Signals).
    UnsampledSpans,
}

/// A validated document, ready to export: a segment document (JSON) or an OTLP document
/// (`T1S`/`T1U`, whose `id` and `trace_id` are its first span's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document exactly as received (X-Ray takes it as a string).
    pub body: Box<str>,
    /// Its `id`: re-sending a document with the same id overwrites it in X-Ray.
    pub id: SegmentId,
    /// Its trace.
    pub trace_id: TraceId,
    /// What it is (set by the parser: never read back from the body).
    pub kind: DocumentKind,
}

impl Document {
    /// Bytes this document accounts for in the export buffer.
    pub fn weight(&self) -> usize {
        self.body.len() + std::mem::size_of::<Self>()
    }
}
