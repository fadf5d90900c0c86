//! What ingest hands on: one validated document, from either parser (the daemon protocol's
//! segment documents, [`super::protocol`], and OTLP documents, [`super::otlp`]). Pure.

use crate::trace::{SegmentId, TraceId};

/// Largest document X-Ray accepts (64 KB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

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
}

impl Document {
    /// Bytes this document accounts for in the export buffer.
    pub fn weight(&self) -> usize {
        self.body.len() + std::mem::size_of::<Self>()
    }
}
