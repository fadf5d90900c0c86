//! Packing a checked request's spans into documents ([`Packing`]): `T1S`/`T1U` text of at most
//! 64 KB for PutTraceSegments, or pieces of the request kept as protobuf, of whole spans, for
//! X-Ray's OTLP endpoint. Spans keep their order, each under a copy of its resource and scope;
//! resource, scope and span bytes are copied verbatim (no re-encoding). Pure: no I/O.

use super::{MAX_REQUEST_BYTES_PER_DOCUMENT, Request, Sampling, Span, document, wire};
use crate::document::{Body, Document};

/// How the spans of a request become documents, and which spans are refused. Spans keep their
/// order; each document holds whole spans under a copy of their resource and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Whether documents are `T1S`/`T1U` text (PutTraceSegments) or, for sampled spans, the
    /// serialized request itself ([`Body::Spans`], the OTLP endpoint).
    pub form: Form,
    /// A document is closed before its request would grow past this many bytes (a span that
    /// does not fit one alone still gets one, up to `max_alone_bytes`).
    pub piece_bytes: usize,
    /// Most spans in one document.
    pub piece_spans: usize,
    /// Largest serialized span taken.
    pub max_span_bytes: usize,
    /// Largest request of one span with its resource and scope.
    pub max_alone_bytes: usize,
    /// Bytes of scratch the packer is said to need per byte of the document it builds
    /// ([`Packed::Scratch`]): the request is copied as each scope and resource closes, into
    /// vectors that grow by doubling.
    pub scratch_factor: usize,
    /// What the sender is told about refused spans.
    pub refusal: &'static str,
}

/// The form of the documents a [`Packing`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `T1S`/`T1U` and base64, at most [`MAX_DOCUMENT_BYTES`](crate::document::MAX_DOCUMENT_BYTES).
    Text,
    /// The serialized request ([`Body::Spans`]); unsampled spans stay [`Form::Text`].
    Protobuf,
}

impl Packing {
    /// PutTraceSegments' documents: at most 64 KB each once base64'd; a span that cannot fit
    /// one alone (with its resource and scope) is refused.
    pub const DOCUMENTS: Self = Self {
        form: Form::Text,
        piece_bytes: MAX_REQUEST_BYTES_PER_DOCUMENT,
        piece_spans: usize::MAX,
        max_span_bytes: usize::MAX,
        max_alone_bytes: MAX_REQUEST_BYTES_PER_DOCUMENT,
        // As before whole spans: the scratch of a 48 KB piece is not reserved.
        scratch_factor: 0,
        refusal: "spans larger than one X-Ray document (64 KB) were dropped",
    };
}

/// What [`each_document`] hands its caller, in order.
#[derive(Debug)]
pub enum Packed {
    /// The document being built needs this many bytes of scratch more than said so far
    /// (reserve them before they are used).
    Scratch(usize),
    /// A document, done: the scratch said before it is free again.
    Document(Document),
}

/// Documents built from one request, and the spans that could not be placed.
#[derive(Debug, Default)]
pub struct Split {
    /// The documents, each at most [`MAX_DOCUMENT_BYTES`](crate::document::MAX_DOCUMENT_BYTES).
    pub documents: Vec<Document>,
    /// Spans too large for a document of their own.
    pub rejected_spans: usize,
}

/// Turns a request into documents of at most [`MAX_DOCUMENT_BYTES`](crate::document::MAX_DOCUMENT_BYTES): spans in order, as many per
/// document as fit, each under a copy of its own resource and scope. A span that cannot fit
/// alone is left out and counted.
pub fn to_documents(request: &Request<'_>, sampling: Sampling) -> Split {
    packed(request, sampling, Packing::DOCUMENTS)
}

/// Turns a request into documents as `packing` says; the spans it refuses are left out and
/// counted.
pub fn packed(request: &Request<'_>, sampling: Sampling, packing: Packing) -> Split {
    let mut documents = Vec::new();
    let rejected = each_document(request, sampling, packing, |packed| {
        if let Packed::Document(doc) = packed {
            documents.push(doc);
        }
        Ok::<(), std::convert::Infallible>(())
    });
    Split {
        documents,
        rejected_spans: rejected.unwrap_or_else(|never| match never {}),
    }
}

/// [`packed`], handing each document to `take` as soon as it is built, and before each span is
/// placed the scratch the document then needs (so the caller can account for the bytes, and
/// stop, before they are allocated). The spans left out, or the first error of `take`.
pub fn each_document<E>(
    request: &Request<'_>,
    sampling: Sampling,
    packing: Packing,
    mut take: impl FnMut(Packed) -> Result<(), E>,
) -> Result<usize, E> {
    let mut rejected = 0;
    let mut packer = Packer::default();
    let mut scratch = 0;
    for (ri, rs) in request.resource_spans.iter().enumerate() {
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for span in &ss.spans {
                let alone = Packer::default().size_with(request, (ri, si), span.bytes.len());
                if span.bytes.len() > packing.max_span_bytes || alone > packing.max_alone_bytes {
                    rejected += 1;
                    continue;
                }
                let full = packer.spans >= packing.piece_spans
                    || packer.size_with(request, (ri, si), span.bytes.len()) > packing.piece_bytes;
                if full
                    && let Some(doc) =
                        std::mem::take(&mut packer).finish(request, sampling, packing.form)
                {
                    scratch = 0;
                    take(Packed::Document(doc))?;
                }
                let needed =
                    packer.size_with(request, (ri, si), span.bytes.len()) * packing.scratch_factor;
                if needed > scratch {
                    take(Packed::Scratch(needed - scratch))?;
                    scratch = needed;
                }
                packer.push(request, (ri, si), span);
            }
        }
    }
    if let Some(doc) = packer.finish(request, sampling, packing.form) {
        take(Packed::Document(doc))?;
    }
    Ok(rejected)
}

fn optional_len_size(number: u32, value: Option<&[u8]>) -> usize {
    value.map_or(0, |v| wire::len_field_size(number, v.len()))
}

/// Builds one `ExportTraceServiceRequest` span by span, tracking its encoded size.
#[derive(Debug, Default)]
struct Packer<'a> {
    /// Encoded, closed `ResourceSpans` fields.
    out: Vec<u8>,
    /// The open resource: its index and its closed `ScopeSpans` fields.
    resource: Option<(usize, Vec<u8>)>,
    /// The open scope: its index and its encoded span fields.
    scope: Option<(usize, Vec<u8>)>,
    /// The first span placed.
    first: Option<Span<'a>>,
    /// Spans placed.
    spans: usize,
}

impl<'a> Packer<'a> {
    fn scope_payload(request: &Request<'_>, (ri, si): (usize, usize), spans: usize) -> usize {
        let ss = &request.resource_spans[ri].scope_spans[si];
        optional_len_size(1, ss.scope) + optional_len_size(3, ss.schema_url) + spans
    }

    fn resource_payload(request: &Request<'_>, ri: usize, scopes: usize) -> usize {
        let rs = &request.resource_spans[ri];
        optional_len_size(1, rs.resource) + optional_len_size(3, rs.schema_url) + scopes
    }

    /// The encoded size if a span of `span_len` bytes under `at` were added.
    fn size_with(&self, request: &Request<'_>, at: (usize, usize), span_len: usize) -> usize {
        let span_field = wire::len_field_size(2, span_len);
        let (mut out, mut scopes) = (self.out.len(), 0);
        let same_resource = self.resource.as_ref().map(|(ri, _)| *ri) == Some(at.0);
        if let Some((ri, closed)) = &self.resource {
            scopes = closed.len();
            if let Some((si, spans)) = &self.scope {
                let open =
                    wire::len_field_size(2, Self::scope_payload(request, (*ri, *si), spans.len()));
                if same_resource && *si == at.1 {
                    let payload = Self::scope_payload(request, at, spans.len() + span_field);
                    let scopes = scopes + wire::len_field_size(2, payload);
                    return out
                        + wire::len_field_size(1, Self::resource_payload(request, at.0, scopes));
                }
                scopes += open;
            }
            if !same_resource {
                out += wire::len_field_size(1, Self::resource_payload(request, *ri, scopes));
                scopes = 0;
            }
        }
        let scopes = scopes + wire::len_field_size(2, Self::scope_payload(request, at, span_field));
        out + wire::len_field_size(1, Self::resource_payload(request, at.0, scopes))
    }

    fn close_scope(&mut self, request: &Request<'_>) {
        if let (Some((ri, closed)), Some((si, spans))) = (&mut self.resource, self.scope.take()) {
            let ss = &request.resource_spans[*ri].scope_spans[si];
            let payload = Self::scope_payload(request, (*ri, si), spans.len());
            wire::put_len_header(closed, 2, payload);
            if let Some(scope) = ss.scope {
                wire::put_len(closed, 1, scope);
            }
            closed.extend_from_slice(&spans);
            if let Some(url) = ss.schema_url {
                wire::put_len(closed, 3, url);
            }
        }
    }

    fn close_resource(&mut self, request: &Request<'_>) {
        self.close_scope(request);
        if let Some((ri, scopes)) = self.resource.take() {
            let rs = &request.resource_spans[ri];
            let payload = Self::resource_payload(request, ri, scopes.len());
            wire::put_len_header(&mut self.out, 1, payload);
            if let Some(resource) = rs.resource {
                wire::put_len(&mut self.out, 1, resource);
            }
            self.out.extend_from_slice(&scopes);
            if let Some(url) = rs.schema_url {
                wire::put_len(&mut self.out, 3, url);
            }
        }
    }

    fn push(&mut self, request: &Request<'_>, (ri, si): (usize, usize), span: &Span<'a>) {
        if self.resource.as_ref().map(|(r, _)| *r) != Some(ri) {
            self.close_resource(request);
            self.resource = Some((ri, Vec::new()));
        }
        if self.scope.as_ref().map(|(s, _)| *s) != Some(si) {
            self.close_scope(request);
            self.scope = Some((si, Vec::new()));
        }
        if let Some((_, spans)) = &mut self.scope {
            wire::put_len(spans, 2, span.bytes);
        }
        self.first.get_or_insert(*span);
        self.spans += 1;
    }

    fn finish(mut self, request: &Request<'_>, sampling: Sampling, form: Form) -> Option<Document> {
        self.close_resource(request);
        let first = self.first?;
        let body = if (form, sampling) == (Form::Protobuf, Sampling::Sampled) {
            Body::Spans(self.out.into_boxed_slice())
        } else {
            let mut body = String::from(sampling.prefix());
            base64_simd::STANDARD.encode_append(&self.out, &mut body);
            body.into()
        };
        document(body, &first, sampling).ok()
    }
}
