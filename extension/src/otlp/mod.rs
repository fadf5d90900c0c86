//! OpenTelemetry spans as X-Ray documents: `T1S` (sampled) or `T1U` (unsampled) followed by the
//! standard, padded base64 of one serialized `ExportTraceServiceRequest`.
//!
//! AWS's OpenTelemetry SDKs send such bodies in the daemon protocol; X-Ray takes them as strings
//! of `TraceSegmentDocuments` and decodes them itself. The daemon forwards them unread; we check
//! first that they are what X-Ray expects (the prefix, the base64, and a well-formed request:
//! resource spans → scope spans → spans with a 16-byte trace id and an 8-byte span id) so that
//! nothing X-Ray would refuse takes a place in a batch. The OTLP/HTTP receiver builds the same
//! documents from the requests it accepts ([`to_documents`]), or, when spans go to X-Ray's OTLP
//! endpoint, pieces of the request that keep spans whole ([`Packing`]). Pure: no I/O.

pub mod json;
pub mod pack;
pub mod schema;
pub mod wire;

pub use pack::{Form, Packed, Packing, Split, each_document, packed, to_documents};

use schema::{Kind, Schema};
use wire::{Fields, WireType};

use crate::document::{Body, Document, DocumentKind, MAX_DOCUMENT_BYTES};
use crate::trace::{SegmentId, TraceId};

/// Deepest message nesting accepted (`AnyValue` can nest arrays and maps without end).
pub const MAX_NESTING_DEPTH: usize = 32;
/// Prefix of a document of sampled spans.
pub const SAMPLED_PREFIX: &str = "T1S";
/// Prefix of a document of unsampled spans (sent by Application Signals).
pub const UNSAMPLED_PREFIX: &str = "T1U";
/// Largest serialized request that fits one document once prefixed and base64-encoded.
pub const MAX_REQUEST_BYTES_PER_DOCUMENT: usize =
    (MAX_DOCUMENT_BYTES - SAMPLED_PREFIX.len()) / 4 * 3;

/// Why an OTLP body or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The text after the prefix is not standard, padded base64.
    #[error("not standard padded base64")]
    Base64,
    /// The bytes are not protobuf (a truncated field, an overlong varint, a group, field 0).
    #[error("malformed protobuf")]
    Malformed,
    /// A known field has the wrong wire type, or text that is not UTF-8.
    #[error("invalid {message}.{field}")]
    InvalidField {
        /// The message's name.
        message: &'static str,
        /// The field's JSON name.
        field: &'static str,
    },
    /// Messages nested deeper than [`MAX_NESTING_DEPTH`].
    #[error("nested deeper than {MAX_NESTING_DEPTH}")]
    TooDeep,
    /// A span's trace id is not 16 bytes, or is all zero.
    #[error("span trace id is not 16 non-zero bytes")]
    TraceId,
    /// A span's id is not 8 bytes, or is all zero.
    #[error("span id is not 8 non-zero bytes")]
    SpanId,
    /// A span's parent id is neither empty nor 8 bytes.
    #[error("parent span id is neither empty nor 8 bytes")]
    ParentSpanId,
    /// The request holds no span.
    #[error("no spans")]
    NoSpans,
    /// An OTLP/HTTP JSON body that is not a JSON object.
    #[error("not a JSON object")]
    Json,
    /// The decoded request was refused the memory it needed.
    #[error("no room for the decoded request")]
    NoRoom,
}

impl OtlpError {
    /// A short, stable label for log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Base64 => "otlp_base64",
            Self::Malformed => "otlp_malformed",
            Self::InvalidField { .. } => "otlp_invalid_field",
            Self::TooDeep => "otlp_too_deep",
            Self::TraceId => "otlp_trace_id",
            Self::SpanId => "otlp_span_id",
            Self::ParentSpanId => "otlp_parent_span_id",
            Self::NoSpans => "otlp_no_spans",
            Self::Json => "otlp_json",
            Self::NoRoom => "otlp_no_room",
        }
    }
}

/// Whether the spans of a document were sampled (its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// `T1S`.
    Sampled,
    /// `T1U`.
    Unsampled,
}

impl Sampling {
    /// The document prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Sampled => SAMPLED_PREFIX,
            Self::Unsampled => UNSAMPLED_PREFIX,
        }
    }

    /// The sampling a body's prefix announces, if it has one.
    pub fn of_body(body: &[u8]) -> Option<Self> {
        match body.get(..3)? {
            b"T1S" => Some(Self::Sampled),
            b"T1U" => Some(Self::Unsampled),
            _ => None,
        }
    }
}

/// One span, found in a request: its bytes (copied verbatim) and ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'a> {
    /// The serialized `Span`.
    pub bytes: &'a [u8],
    /// Its trace id.
    pub trace_id: [u8; 16],
    /// Its span id.
    pub span_id: [u8; 8],
}

/// One `ScopeSpans`: the scope's bytes and the spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSpans<'a> {
    /// The serialized `InstrumentationScope`, when present.
    pub scope: Option<&'a [u8]>,
    /// The schema URL, when present.
    pub schema_url: Option<&'a [u8]>,
    /// The spans, in order.
    pub spans: Vec<Span<'a>>,
}

/// One `ResourceSpans`: the resource's bytes and its scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSpans<'a> {
    /// The serialized `Resource`, when present.
    pub resource: Option<&'a [u8]>,
    /// The schema URL, when present.
    pub schema_url: Option<&'a [u8]>,
    /// The scopes, in order.
    pub scope_spans: Vec<ScopeSpans<'a>>,
}

/// A checked `ExportTraceServiceRequest`, borrowing from its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// Its resource spans, in order.
    pub resource_spans: Vec<ResourceSpans<'a>>,
}

impl<'a> Request<'a> {
    /// Every span, in order.
    pub fn spans(&self) -> impl Iterator<Item = &Span<'a>> {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
    }
}

/// Checks one message against its schema: every field well-formed, known fields of the right
/// wire type, text UTF-8, nested messages likewise.
fn check(message: &[u8], schema: &'static Schema, depth: usize) -> Result<(), OtlpError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(OtlpError::TooDeep);
    }
    for field in Fields::new(message) {
        let field = field?;
        let Some(def) = schema.by_number(field.number) else {
            continue;
        };
        let invalid = OtlpError::InvalidField {
            message: schema.name,
            field: def.json,
        };
        if field.wire_type != def.kind.wire_type() {
            return Err(invalid);
        }
        match def.kind {
            Kind::Message(inner) => check(field.value, inner, depth + 1)?,
            Kind::Str => {
                std::str::from_utf8(field.value).map_err(|_| invalid)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The single (last) occurrence of a length-delimited field, checked against `schema`.
fn message_field<'a>(
    field: &wire::Field<'a>,
    outer: &'static Schema,
    depth: usize,
) -> Result<&'a [u8], OtlpError> {
    let def = outer.by_number(field.number).ok_or(OtlpError::Malformed)?;
    if field.wire_type != WireType::Len {
        return Err(OtlpError::InvalidField {
            message: outer.name,
            field: def.json,
        });
    }
    match def.kind {
        Kind::Message(inner) => check(field.value, inner, depth + 1)?,
        Kind::Str => {
            std::str::from_utf8(field.value).map_err(|_| OtlpError::InvalidField {
                message: outer.name,
                field: def.json,
            })?;
        }
        _ => {}
    }
    Ok(field.value)
}

/// Parses and checks a serialized `ExportTraceServiceRequest`.
pub fn parse_request(bytes: &[u8]) -> Result<Request<'_>, OtlpError> {
    let mut request = Request::default();
    for field in Fields::new(bytes) {
        let field = field?;
        if field.number != 1 {
            continue;
        }
        let rs = message_field(&field, &schema::REQUEST, 0)?;
        request.resource_spans.push(parse_resource_spans(rs)?);
    }
    if request.spans().next().is_none() {
        return Err(OtlpError::NoSpans);
    }
    Ok(request)
}

fn parse_resource_spans(bytes: &[u8]) -> Result<ResourceSpans<'_>, OtlpError> {
    let mut out = ResourceSpans::default();
    for field in Fields::new(bytes) {
        let field = field?;
        match field.number {
            1 => out.resource = Some(message_field(&field, &schema::RESOURCE_SPANS, 1)?),
            2 => {
                let ss = message_field_shallow(&field, &schema::RESOURCE_SPANS)?;
                out.scope_spans.push(parse_scope_spans(ss)?);
            }
            3 => out.schema_url = Some(message_field(&field, &schema::RESOURCE_SPANS, 1)?),
            _ => {}
        }
    }
    Ok(out)
}

fn parse_scope_spans(bytes: &[u8]) -> Result<ScopeSpans<'_>, OtlpError> {
    let mut out = ScopeSpans::default();
    for field in Fields::new(bytes) {
        let field = field?;
        match field.number {
            1 => out.scope = Some(message_field(&field, &schema::SCOPE_SPANS, 2)?),
            2 => {
                let span = message_field(&field, &schema::SCOPE_SPANS, 2)?;
                out.spans.push(span_ids(span)?);
            }
            3 => out.schema_url = Some(message_field(&field, &schema::SCOPE_SPANS, 2)?),
            _ => {}
        }
    }
    Ok(out)
}

/// A length-delimited field whose contents the caller walks itself.
fn message_field_shallow<'a>(
    field: &wire::Field<'a>,
    outer: &'static Schema,
) -> Result<&'a [u8], OtlpError> {
    if field.wire_type == WireType::Len {
        Ok(field.value)
    } else {
        let json = outer.by_number(field.number).map_or("?", |d| d.json);
        Err(OtlpError::InvalidField {
            message: outer.name,
            field: json,
        })
    }
}

/// A checked span's ids (the last occurrence of each field wins, as in protobuf).
fn span_ids(bytes: &[u8]) -> Result<Span<'_>, OtlpError> {
    let mut trace_id = None;
    let mut span_id = None;
    for field in Fields::new(bytes) {
        let field = field?;
        match field.number {
            schema::span::TRACE_ID => trace_id = Some(field.value),
            schema::span::SPAN_ID => span_id = Some(field.value),
            schema::span::PARENT_SPAN_ID if !matches!(field.value.len(), 0 | 8) => {
                return Err(OtlpError::ParentSpanId);
            }
            _ => {}
        }
    }
    let trace_id: [u8; 16] = trace_id
        .and_then(|t| t.try_into().ok())
        .filter(|t: &[u8; 16]| t.iter().any(|&b| b != 0))
        .ok_or(OtlpError::TraceId)?;
    let span_id: [u8; 8] = span_id
        .and_then(|s| s.try_into().ok())
        .filter(|s: &[u8; 8]| s.iter().any(|&b| b != 0))
        .ok_or(OtlpError::SpanId)?;
    Ok(Span {
        bytes,
        trace_id,
        span_id,
    })
}

/// The X-Ray trace id of an OTLP trace id (`5759e988bd862e3f…` ↔ `1-5759e988-bd862e3f…`).
pub fn xray_trace_id(trace_id: &[u8; 16]) -> Result<TraceId, OtlpError> {
    let hex = hex(trace_id);
    TraceId::parse(&format!("1-{}-{}", &hex[..8], &hex[8..])).map_err(|_| OtlpError::TraceId)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

impl From<Sampling> for DocumentKind {
    fn from(sampling: Sampling) -> Self {
        match sampling {
            Sampling::Sampled => Self::SampledSpans,
            Sampling::Unsampled => Self::UnsampledSpans,
        }
    }
}

pub(crate) fn document(
    body: Body,
    first: &Span<'_>,
    sampling: Sampling,
) -> Result<Document, OtlpError> {
    Ok(Document {
        body,
        id: SegmentId::from_u64(u64::from_be_bytes(first.span_id)),
        trace_id: xray_trace_id(&first.trace_id)?,
        kind: sampling.into(),
    })
}

/// Validates a `T1S`/`T1U` body from a datagram. The document's `id` and `trace_id` are its
/// first span's; its body is `body`, unchanged ([`Form::Text`]), or, for sampled spans held as
/// [`Form::Protobuf`] (when spans go to the OTLP endpoint), the request the check decoded
/// ([`Body::Spans`]: a quarter fewer bytes than base64, and nothing to decode at each send).
/// Unsampled spans stay text: PutTraceSegments takes them.
pub fn parse_document(body: &[u8], form: Form) -> Result<Document, OtlpError> {
    let text = std::str::from_utf8(body).map_err(|_| OtlpError::Base64)?;
    let sampling = Sampling::of_body(body).ok_or(OtlpError::Base64)?;
    let encoded = text.get(SAMPLED_PREFIX.len()..).ok_or(OtlpError::Base64)?;
    let bytes = base64_simd::STANDARD
        .decode_to_vec(encoded)
        .map_err(|_| OtlpError::Base64)?;
    let request = parse_request(&bytes)?;
    let first = request.spans().next().ok_or(OtlpError::NoSpans)?;
    let mut doc = document(text.into(), first, sampling)?;
    if form == Form::Protobuf && sampling == Sampling::Sampled {
        doc.body = Body::Spans(bytes.into_boxed_slice());
    }
    Ok(doc)
}

/// Bytes [`parse_request`] allocates for `bytes` at most: its lists of resource spans, scope
/// spans and spans (twice over, for the lists' growth), counted without allocating. Malformed
/// bytes are counted up to the fault (the parse then refuses them).
pub fn parse_cost(bytes: &[u8]) -> usize {
    fn len_fields(message: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
        Fields::new(message)
            .map_while(Result::ok)
            .filter(move |f| f.number == number && f.wire_type == WireType::Len)
            .map(|f| f.value)
    }
    let (mut resources, mut scopes, mut spans) = (0_usize, 0_usize, 0_usize);
    for rs in len_fields(bytes, 1) {
        resources += 1;
        for ss in len_fields(rs, 2) {
            scopes += 1;
            spans += len_fields(ss, 2).count();
        }
    }
    2 * (resources * std::mem::size_of::<ResourceSpans<'_>>()
        + scopes * std::mem::size_of::<ScopeSpans<'_>>()
        + spans * std::mem::size_of::<Span<'_>>())
}

#[cfg(test)]
mod tests;
