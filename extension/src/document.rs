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

/// A document's bytes, in the form of the call that takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Text PutTraceSegments takes as a string: a segment document's JSON, or `T1S`/`T1U` and
    /// the base64 of a serialized `ExportTraceServiceRequest`. At most [`MAX_DOCUMENT_BYTES`].
    Text(Box<str>),
    /// A serialized `ExportTraceServiceRequest` of sampled spans, for X-Ray's OTLP endpoint
    /// only: what the OTLP/HTTP receiver builds when spans go there (no base64, which would
    /// cost a third more, and no 64 KB limit: whole spans of up to 200 KB).
    Spans(Box<[u8]>),
}

impl Body {
    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Spans(bytes) => bytes,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text PutTraceSegments takes; `None` for spans only the OTLP endpoint takes.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Spans(_) => None,
        }
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Self::Text(text.into_boxed_str())
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

/// A validated document, ready to export: a segment document (JSON) or an OTLP document
/// (`T1S`/`T1U`, or the spans of a [`Body::Spans`], whose `id` and `trace_id` are its first
/// span's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document exactly as received, or the spans as the OTLP endpoint takes them.
    pub body: Body,
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
