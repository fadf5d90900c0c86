use super::wire::{put_fixed64, put_len, put_varint_field};
use super::*;

const TRACE: [u8; 16] = [
    0x57, 0x59, 0xe9, 0x88, 0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27, 0x27, 0x93,
];

fn span(id: u64, name_len: usize) -> Vec<u8> {
    let mut s = Vec::new();
    put_len(&mut s, 1, &TRACE);
    put_len(&mut s, 2, &id.to_be_bytes());
    put_len(&mut s, 5, "n".repeat(name_len).as_bytes());
    put_varint_field(&mut s, 6, 1);
    put_fixed64(&mut s, 7, 1);
    put_fixed64(&mut s, 8, 2);
    s
}

fn attribute(key: &str, value: &str) -> Vec<u8> {
    let mut any = Vec::new();
    put_len(&mut any, 1, value.as_bytes());
    let mut kv = Vec::new();
    put_len(&mut kv, 1, key.as_bytes());
    put_len(&mut kv, 2, &any);
    kv
}

/// A scope's name and its spans.
type Scope<'a> = (&'a str, &'a [Vec<u8>]);

/// A request: resources, each with scopes, each with spans.
fn request(resources: &[(&str, &[Scope<'_>])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (service, scopes) in resources {
        let mut resource = Vec::new();
        put_len(&mut resource, 1, &attribute("service.name", service));
        let mut rs = Vec::new();
        put_len(&mut rs, 1, &resource);
        for (scope_name, spans) in *scopes {
            let mut scope = Vec::new();
            put_len(&mut scope, 1, scope_name.as_bytes());
            let mut ss = Vec::new();
            put_len(&mut ss, 1, &scope);
            for s in *spans {
                put_len(&mut ss, 2, s);
            }
            put_len(&mut ss, 3, b"https://opentelemetry.io/schemas/1.11.0");
            put_len(&mut rs, 2, &ss);
        }
        put_len(&mut out, 1, &rs);
    }
    out
}

fn body(prefix: &str, request: &[u8]) -> String {
    format!(
        "{prefix}{}",
        base64_simd::STANDARD.encode_to_string(request)
    )
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/datagrams/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The body of a datagram (after the first newline).
fn datagram_body(raw: &[u8]) -> &[u8] {
    let newline = raw.iter().position(|&b| b == b'\n').unwrap();
    &raw[newline + 1..]
}

#[test]
fn a_document_takes_its_first_spans_ids_and_keeps_the_body() {
    let req = request(&[(
        "orders",
        &[("s", &[span(0x1bba_a244_e76f_8d42, 4), span(7, 4)])],
    )]);
    for prefix in ["T1S", "T1U"] {
        let text = body(prefix, &req);
        let doc = parse_document(text.as_bytes(), Form::Text).unwrap();
        assert_eq!(doc.body.text().unwrap(), text);
        assert_eq!(doc.id.as_str(), "1bbaa244e76f8d42");
        assert_eq!(doc.trace_id.as_str(), "1-5759e988-bd862e3fe1be46a994272793");
    }
}

#[test]
fn captured_adot_datagrams_are_accepted() {
    for (name, spans) in [
        ("adot_python_t1s.bin", 3),
        ("adot_python_t1u.bin", 1),
        ("adot_python_fast_start_t1s.bin", 10),
    ] {
        let raw = fixture(name);
        let body = datagram_body(&raw);
        let doc = parse_document(body, Form::Text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc.body.as_bytes(), body, "{name}");
        let bytes = base64_simd::STANDARD.decode_to_vec(&body[3..]).unwrap();
        assert_eq!(
            parse_request(&bytes).unwrap().spans().count(),
            spans,
            "{name}"
        );
    }
}

#[test]
fn bad_bodies_are_refused_with_a_reason() {
    let good = request(&[("orders", &[("s", &[span(1, 4)])])]);
    let zero_trace = {
        let mut s = Vec::new();
        put_len(&mut s, 1, &[0; 16]);
        put_len(&mut s, 2, &1_u64.to_be_bytes());
        request(&[("o", &[("s", &[s])])])
    };
    let short_span_id = {
        let mut s = Vec::new();
        put_len(&mut s, 1, &TRACE);
        put_len(&mut s, 2, &[1, 2, 3]);
        request(&[("o", &[("s", &[s])])])
    };
    let bad_parent = {
        let mut s = span(1, 1);
        put_len(&mut s, 4, &[1, 2]);
        request(&[("o", &[("s", &[s])])])
    };
    let name_as_varint = {
        let mut s = span(1, 1);
        put_varint_field(&mut s, 5, 3);
        request(&[("o", &[("s", &[s])])])
    };
    let name_not_utf8 = {
        let mut s = span(1, 1);
        put_len(&mut s, 5, &[0xff, 0xfe]);
        request(&[("o", &[("s", &[s])])])
    };
    let no_spans = request(&[("o", &[("s", &[])])]);
    let truncated = good[..good.len() - 1].to_vec();
    let cases: Vec<(String, OtlpError)> = vec![
        (format!("T1S{}", "!!!!"), OtlpError::Base64),
        (format!("T1S{}", &body("", &good)[1..]), OtlpError::Base64),
        (
            body("T1S", &good).trim_end_matches('=').to_owned() + "=",
            OtlpError::Base64,
        ),
        (body("T1S", &truncated), OtlpError::Malformed),
        (body("T1S", &zero_trace), OtlpError::TraceId),
        (body("T1S", &short_span_id), OtlpError::SpanId),
        (body("T1S", &bad_parent), OtlpError::ParentSpanId),
        (
            body("T1S", &name_as_varint),
            OtlpError::InvalidField {
                message: "Span",
                field: "name",
            },
        ),
        (
            body("T1S", &name_not_utf8),
            OtlpError::InvalidField {
                message: "Span",
                field: "name",
            },
        ),
        (body("T1S", &no_spans), OtlpError::NoSpans),
        (body("T1S", &[]), OtlpError::NoSpans),
        (body("T1S", b"\x0b"), OtlpError::Malformed),
    ];
    for (text, want) in cases {
        assert_eq!(
            parse_document(text.as_bytes(), Form::Text),
            Err(want),
            "{text}"
        );
    }
    // Garbage after a valid prefix, and the prefix alone.
    assert_eq!(parse_document(b"T1S", Form::Text), Err(OtlpError::NoSpans));
    assert_eq!(parse_document(b"T1X", Form::Text), Err(OtlpError::Base64));
}

#[test]
fn unknown_fields_are_skipped_but_must_be_well_formed() {
    let mut s = span(1, 1);
    put_varint_field(&mut s, 99, 5);
    put_len(&mut s, 100, b"future");
    let req = request(&[("o", &[("s", &[s.clone()])])]);
    assert!(parse_request(&req).is_ok());
    let mut broken = s;
    broken.extend_from_slice(&[0xa2, 0x06, 0x09]); // field 100, length 9, nothing after
    let req = request(&[("o", &[("s", &[broken])])]);
    assert_eq!(parse_request(&req), Err(OtlpError::Malformed));
}

#[test]
fn deep_attribute_values_are_bounded() {
    let mut any = Vec::new();
    put_len(&mut any, 1, b"leaf");
    for _ in 0..MAX_NESTING_DEPTH {
        let mut array = Vec::new();
        put_len(&mut array, 1, &any);
        any = Vec::new();
        put_len(&mut any, 5, &array);
    }
    let mut kv = Vec::new();
    put_len(&mut kv, 1, b"deep");
    put_len(&mut kv, 2, &any);
    let mut s = span(1, 1);
    put_len(&mut s, 9, &kv);
    let req = request(&[("o", &[("s", &[s])])]);
    assert_eq!(parse_request(&req), Err(OtlpError::TooDeep));
}

/// Every span of `split`, re-read from its documents, with the resource and scope it is under.
fn spans_of(split: &Split) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for doc in &split.documents {
        assert!(doc.body.len() <= MAX_DOCUMENT_BYTES, "{}", doc.body.len());
        let again = parse_document(doc.body.as_bytes(), Form::Text).unwrap();
        assert_eq!(again.id, doc.id);
        let bytes = base64_simd::STANDARD
            .decode_to_vec(&doc.body.as_bytes()[3..])
            .unwrap();
        let req = parse_request(&bytes).unwrap();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push((
                        hex(rs.resource.unwrap()),
                        hex(ss.scope.unwrap()),
                        s.bytes.to_vec(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn splitting_keeps_every_span_under_its_resource_and_scope_within_the_limit() {
    // Spans of about 1, 5 and 20 KB under two resources and three scopes.
    let mut id = 0;
    let mut spans = |n: usize, size: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                id += 1;
                span(id, size)
            })
            .collect()
    };
    let (a1, a2, b1) = (spans(30, 1_000), spans(12, 5_000), spans(5, 20_000));
    let req_bytes = request(&[("a", &[("a1", &a1), ("a2", &a2)]), ("b", &[("b1", &b1)])]);
    let req = parse_request(&req_bytes).unwrap();
    let split = to_documents(&req, Sampling::Sampled);
    assert_eq!(split.rejected_spans, 0);
    assert!(split.documents.len() >= 4, "{}", split.documents.len());
    assert!(
        split
            .documents
            .iter()
            .all(|d| d.body.as_bytes().starts_with(b"T1S"))
    );
    assert!(
        split
            .documents
            .iter()
            .all(|d| d.kind == DocumentKind::SampledSpans)
    );
    let got = spans_of(&split);
    let want: Vec<(String, String, Vec<u8>)> = req
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |s| {
                    (
                        hex(rs.resource.unwrap()),
                        hex(ss.scope.unwrap()),
                        s.bytes.to_vec(),
                    )
                })
            })
        })
        .collect();
    assert_eq!(got, want);
    // Packed: every document but the last is too full to take the next span.
    for doc in &split.documents[..split.documents.len() - 1] {
        assert!(
            doc.body.len() > MAX_DOCUMENT_BYTES - 4 * 20_100 / 3,
            "{}",
            doc.body.len()
        );
    }
}

#[test]
fn a_small_request_is_one_document_equal_to_its_input() {
    let req_bytes = request(&[("a", &[("s", &[span(1, 10), span(2, 10)])])]);
    let req = parse_request(&req_bytes).unwrap();
    let split = to_documents(&req, Sampling::Unsampled);
    assert_eq!(split.documents.len(), 1);
    assert_eq!(
        split.documents[0].body.text().unwrap(),
        body("T1U", &req_bytes)
    );
    assert_eq!(split.documents[0].kind, DocumentKind::UnsampledSpans);
}

#[test]
fn a_span_too_large_alone_is_rejected_and_the_rest_kept() {
    let limit = MAX_REQUEST_BYTES_PER_DOCUMENT;
    // Find the name length at which one span under this resource and scope just fits.
    let fits = |n: usize| {
        let req_bytes = request(&[("a", &[("s", &[span(1, n)])])]);
        req_bytes.len() <= limit
    };
    let mut n = limit - 200;
    while fits(n + 1) {
        n += 1;
    }
    let req_bytes = request(&[(
        "a",
        &[("s", &[span(1, 10), span(2, n), span(3, n + 1), span(4, 10)])],
    )]);
    let req = parse_request(&req_bytes).unwrap();
    let split = to_documents(&req, Sampling::Sampled);
    assert_eq!(split.rejected_spans, 1);
    let got = spans_of(&split);
    assert_eq!(got.len(), 3);
    let ids: Vec<SegmentId> = split.documents.iter().map(|d| d.id).collect();
    assert_eq!(ids[0], SegmentId::from_u64(1));
    assert!(
        split
            .documents
            .iter()
            .any(|d| d.body.len() == MAX_DOCUMENT_BYTES || d.body.len() > MAX_DOCUMENT_BYTES - 4)
    );
}

/// Every span of documents holding requests (`Body::Spans`), in order, with how many each held.
fn whole_spans_of(split: &Split) -> (Vec<Vec<u8>>, Vec<usize>) {
    let (mut spans, mut per_document) = (Vec::new(), Vec::new());
    for doc in &split.documents {
        let Body::Spans(bytes) = &doc.body else {
            panic!("a text document: {:?}", doc.body);
        };
        assert_eq!(doc.kind, DocumentKind::SampledSpans);
        let req = parse_request(bytes).unwrap();
        let first = req.spans().next().unwrap();
        assert_eq!(
            doc.id,
            SegmentId::from_u64(u64::from_be_bytes(first.span_id))
        );
        per_document.push(req.spans().count());
        spans.extend(req.spans().map(|s| s.bytes.to_vec()));
    }
    (spans, per_document)
}

/// Name lengths of a request's spans, its packing, the spans refused (by index), the spans
/// in each document.
type Case<'a> = (&'a [usize], Packing, &'a [usize], &'a [usize]);

/// Whole spans in small pieces (the OTLP endpoint's packing is tested with the endpoint).
const SMALL: Packing = Packing {
    form: Form::Protobuf,
    piece_bytes: 1_000,
    piece_spans: 3,
    max_span_bytes: 500,
    max_alone_bytes: 2_000,
    scratch_factor: 3,
    refusal: "",
};

#[test]
fn whole_packing_keeps_spans_whole_within_its_limits() {
    let small = SMALL;
    // A resource of about 1,000 bytes: a span with it is over `max_alone_bytes`.
    let tight = Packing {
        max_alone_bytes: 400,
        ..SMALL
    };
    let table: [Case<'_>; 5] = [
        (&[10; 5], small, &[], &[3, 2]),
        // Over 500 bytes: refused; its siblings kept, in order.
        (&[10, 600, 10], small, &[1], &[2]),
        // 440 + ~50 bytes each: two fit under 1,000 bytes, not three.
        (&[440, 440, 440], small, &[], &[1, 1, 1]),
        (&[10, 10, 440, 440], small, &[], &[3, 1]),
        // Under 500 bytes, but with its resource and scope over 400: refused.
        (&[10, 300, 10], tight, &[1], &[2]),
    ];
    for (i, (lens, packing, refused, per_document)) in table.into_iter().enumerate() {
        let spans: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(n, len)| span(n as u64 + 1, *len))
            .collect();
        let req_bytes = request(&[("a", &[("s", &spans)])]);
        let req = parse_request(&req_bytes).unwrap();
        let split = packed(&req, Sampling::Sampled, packing);
        assert_eq!(split.rejected_spans, refused.len(), "{i}");
        let want: Vec<Vec<u8>> = spans
            .iter()
            .enumerate()
            .filter(|(n, _)| !refused.contains(n))
            .map(|(_, s)| s.clone())
            .collect();
        let (got, counts) = whole_spans_of(&split);
        assert!(got == want, "{i}: spans lost, reordered or changed");
        assert_eq!(counts, per_document, "{i}");
        for doc in &split.documents {
            let len = doc.body.len();
            assert!(
                len <= packing.piece_bytes || counts.contains(&1),
                "{i}: {len}"
            );
        }
    }
}

#[test]
fn unsampled_spans_stay_text_documents_whatever_the_packing() {
    let req_bytes = request(&[("a", &[("s", &[span(1, 10)])])]);
    let req = parse_request(&req_bytes).unwrap();
    let split = packed(&req, Sampling::Unsampled, SMALL);
    assert_eq!(split.documents.len(), 1);
    assert_eq!(
        split.documents[0].body.text().unwrap(),
        body("T1U", &req_bytes)
    );
}

#[test]
fn the_packer_says_its_scratch_before_each_span_and_frees_it_with_each_document() {
    let spans: Vec<Vec<u8>> = (1..=4).map(|n| span(n, 400)).collect();
    let req_bytes = request(&[("a", &[("s", &spans)])]);
    let req = parse_request(&req_bytes).unwrap();
    let packing = Packing {
        form: Form::Protobuf,
        piece_bytes: 1_000,
        piece_spans: 10,
        max_span_bytes: 1_000,
        max_alone_bytes: 1_000,
        scratch_factor: 3,
        refusal: "",
    };
    let (mut held, mut most) = (0, 0);
    let mut documents = 0;
    each_document(&req, Sampling::Sampled, packing, |packed| {
        match packed {
            Packed::Scratch(bytes) => held += bytes,
            Packed::Document(doc) => {
                // What was said covers the document thrice over, and no more.
                assert!(held >= 3 * doc.body.len() && held <= 3 * (doc.body.len() + 16));
                most = most.max(held);
                held = 0;
                documents += 1;
            }
        }
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(documents, 2);
    assert!(most <= 3 * 1_000, "{most}");
    // Text documents reserve nothing, as before.
    each_document(&req, Sampling::Sampled, Packing::DOCUMENTS, |packed| {
        assert!(matches!(packed, Packed::Document(_)));
        Ok::<(), ()>(())
    })
    .unwrap();
}

#[test]
fn sampled_spans_held_as_protobuf_are_the_request_the_check_decoded_and_nothing_else_changes() {
    let req_bytes = request(&[("a", &[("s", &[span(1, 10), span(2, 10)])])]);
    let t1s = body("T1S", &req_bytes);
    let sampled = parse_document(t1s.as_bytes(), Form::Text).unwrap();
    let held = parse_document(t1s.as_bytes(), Form::Protobuf).unwrap();
    assert_eq!(held.body, Body::Spans(req_bytes.clone().into()));
    assert_eq!(
        (held.id, held.trace_id, held.kind),
        (sampled.id, sampled.trace_id, sampled.kind)
    );
    assert!(held.weight() < sampled.weight());
    // Unsampled spans stay text (PutTraceSegments takes them).
    let t1u = body("T1U", &req_bytes);
    assert_eq!(
        parse_document(t1u.as_bytes(), Form::Protobuf),
        parse_document(t1u.as_bytes(), Form::Text)
    );
    assert!(
        parse_document(t1u.as_bytes(), Form::Protobuf)
            .unwrap()
            .body
            .text()
            .is_some()
    );
}
