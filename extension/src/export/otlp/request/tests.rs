use super::*;
use crate::otlp::parse_document;
use crate::otlp::wire::{put_fixed64, put_len, put_varint_field};
use crate::trace::{SegmentId, TraceId};

const TRACE: [u8; 16] = [
    0x57, 0x59, 0xe9, 0x88, 0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27, 0x27, 0x93,
];

fn span(id: u64, name: &str) -> Vec<u8> {
    let mut s = Vec::new();
    put_len(&mut s, 1, &TRACE);
    put_len(&mut s, 2, &id.to_be_bytes());
    put_len(&mut s, 5, name.as_bytes());
    put_varint_field(&mut s, 6, 1);
    put_fixed64(&mut s, 7, 1);
    put_fixed64(&mut s, 8, 2);
    s
}

/// One resource, one scope, these spans.
fn request(service: &str, spans: &[Vec<u8>]) -> Vec<u8> {
    let mut kv = Vec::new();
    put_len(&mut kv, 1, b"service.name");
    let mut any = Vec::new();
    put_len(&mut any, 1, service.as_bytes());
    put_len(&mut kv, 2, &any);
    let mut resource = Vec::new();
    put_len(&mut resource, 1, &kv);
    let mut ss = Vec::new();
    for s in spans {
        put_len(&mut ss, 2, s);
    }
    let mut rs = Vec::new();
    put_len(&mut rs, 1, &resource);
    put_len(&mut rs, 2, &ss);
    let mut out = Vec::new();
    put_len(&mut out, 1, &rs);
    out
}

fn doc(prefix: &str, request: &[u8]) -> Document {
    let body = format!(
        "{prefix}{}",
        base64_simd::STANDARD.encode_to_string(request)
    );
    parse_document(body.as_bytes(), crate::otlp::Form::Text).unwrap()
}

#[test]
fn only_sampled_spans_go_to_the_otlp_endpoint() {
    let r = request("a", &[span(1, "x")]);
    assert!(is_sampled_spans(&doc("T1S", &r)));
    assert!(!is_sampled_spans(&doc("T1U", &r)));
    let segment = Document {
        body: r#"{"id":"1bbaa244e76f8d42","name":"s","start_time":1,"end_time":2,"trace_id":"1-5759e988-bd862e3fe1be46a994272793"}"#.into(),
        id: SegmentId::from_u64(0x1bba_a244_e76f_8d42),
        trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
        kind: DocumentKind::Segment,
    };
    assert!(!is_sampled_spans(&segment));
    assert_eq!(
        request_bytes(&doc("T1U", &r)),
        Err(RequestError::NotSampledSpans)
    );
    assert_eq!(
        gzipped_body(&[&segment]),
        Err(RequestError::NotSampledSpans)
    );
}

fn inflate(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
    out
}

/// A document of sampled spans as the OTLP/HTTP receiver builds it for the endpoint.
fn spans_doc(request: &[u8]) -> Document {
    Document {
        body: Body::Spans(request.into()),
        ..doc("T1S", request)
    }
}

#[test]
fn documents_concatenate_into_one_request_holding_every_span() {
    let a = request("a", &[span(1, "one"), span(2, "two")]);
    let b = request("b", &[span(3, "three")]);
    let c = request("c", &[span(4, "four")]);
    let (da, db, dc) = (doc("T1S", &a), doc("T1S", &b), spans_doc(&c));
    assert_eq!(request_bytes(&dc).unwrap(), c.as_slice());
    let sent = gzipped_body(&[&da, &db, &dc]).unwrap();
    let out = inflate(&sent.wire);
    assert_eq!(out, [a.as_slice(), b.as_slice(), c.as_slice()].concat());
    assert_eq!((sent.raw_bytes, sent.spans), (out.len(), 4));
    assert_eq!(span_count(&out), 4);
    assert_eq!(span_count(b"\xff"), 0);
    let parsed = parse_request(&out).unwrap();
    assert_eq!(parsed.resource_spans.len(), 3);
    let ids: Vec<[u8; 8]> = parsed.spans().map(|s| s.span_id).collect();
    assert_eq!(ids, [1_u64, 2, 3, 4].map(u64::to_be_bytes));
    assert_eq!(
        weigh(&da).unwrap(),
        Weight {
            bytes: a.len(),
            spans: 2
        }
    );
}

#[test]
fn gzip_round_trips() {
    let bytes = request("a", &[span(1, &"n".repeat(10_000))]);
    let sent = gzipped_body(&[&spans_doc(&bytes)]).unwrap();
    assert!(sent.wire.len() < bytes.len() / 10, "{}", sent.wire.len());
    assert_eq!(inflate(&sent.wire), bytes);
}

#[test]
fn batches_stay_within_bytes_and_spans_and_keep_order() {
    let w = |bytes, spans| Weight { bytes, spans };
    // (weights, expected batch sizes)
    let table: Vec<(Vec<Weight>, Vec<usize>)> = vec![
        (vec![], vec![]),
        (vec![w(10, 1); 3], vec![3]),
        // 10,000 spans fit one request, 10,001 do not.
        (vec![w(10, 5_000); 2], vec![2]),
        (vec![w(10, 5_000), w(10, 5_000), w(10, 1)], vec![2, 1]),
        // 5,000,000 bytes fit, one more does not.
        (vec![w(2_500_000, 1); 2], vec![2]),
        (vec![w(2_500_000, 1), w(2_500_001, 1)], vec![1, 1]),
        // One over a limit alone still goes, alone.
        (vec![w(1, 1), w(6_000_000, 1), w(1, 1)], vec![1, 1, 1]),
        (vec![w(40_000, 10); 250], vec![125, 125]),
    ];
    for (weights, sizes) in table {
        let items: Vec<(usize, Weight)> = weights.iter().copied().enumerate().collect();
        let out = batches(items);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
        let flat: Vec<usize> = out.into_iter().flatten().collect();
        assert_eq!(flat, (0..weights.len()).collect::<Vec<_>>());
    }
}

#[test]
fn answers_by_status_and_partial_success() {
    // ExportTraceServiceResponse { partial_success { rejected_spans: 3, error_message: "big" } }
    let mut partial = Vec::new();
    put_varint_field(&mut partial, 1, 3);
    put_len(&mut partial, 2, b"big");
    let mut response = Vec::new();
    put_len(&mut response, 1, &partial);
    assert_eq!(answer(200, None, &response).unwrap().rejected_spans, 3);
    assert_eq!(answer(200, None, b"").unwrap(), Answer::default());
    assert_eq!(answer(200, None, b"\xff\xff").unwrap(), Answer::default());
    // (status, retried, kept for the next flush)
    for (status, retried, kept) in [
        (429, true, true),
        (500, true, true),
        (502, true, true),
        (503, true, true),
        (504, true, true),
        (401, false, true),
        (403, false, true),
        (400, false, false),
        (413, false, false),
    ] {
        let e = answer(status, None, b"{}").unwrap_err();
        assert_eq!(e.is_retryable(), retried, "{status}");
        assert_eq!(e.keeps_documents(), kept, "{status}");
    }
    let denied = answer(403, None, br#"{"__type":"AccessDeniedException"}"#).unwrap_err();
    assert!(denied.is_access_denied());
    let denied = answer(403, Some("AccessDeniedException:http://internal"), b"").unwrap_err();
    assert!(denied.is_access_denied());
    let expired = answer(400, Some("ExpiredTokenException"), b"").unwrap_err();
    assert!(matches!(expired, ExportError::Auth { status: 400, .. }));
    assert!(!expired.is_access_denied());
    let other = answer(403, None, b"signature expired").unwrap_err();
    assert!(!other.is_access_denied());
}

#[test]
fn the_receivers_packing_for_the_endpoint_keeps_spans_of_up_to_200_kb_whole() {
    // (name lengths, spans refused (by index), spans per piece)
    let many = vec![10; 12_000];
    let table: [(&[usize], &[usize], &[usize]); 3] = [
        (&[10, 150_000, 250_000, 10], &[2], &[3]),
        (&[199_900, 200_100], &[1], &[1]),
        // 12,000 spans of 62 bytes: pieces of at most 256 KiB.
        (&many, &[], &[4_227, 4_227, 3_546]),
    ];
    for (i, (lens, refused, per_piece)) in table.into_iter().enumerate() {
        let spans: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(n, len)| span(n as u64 + 1, &"n".repeat(*len)))
            .collect();
        let bytes = request("a", &spans);
        let req = parse_request(&bytes).unwrap();
        let split = crate::otlp::packed(&req, crate::otlp::Sampling::Sampled, PACKING);
        assert_eq!(split.rejected_spans, refused.len(), "{i}");
        let mut got = Vec::new();
        let mut counts = Vec::new();
        for doc in &split.documents {
            assert!(doc.body.len() <= PIECE_BYTES || doc.body.len() <= MAX_SPAN_BYTES + 100);
            let bytes = request_bytes(doc).unwrap();
            let piece = parse_request(&bytes).unwrap();
            counts.push(piece.spans().count());
            got.extend(piece.spans().map(|s| s.bytes.to_vec()));
        }
        let want: Vec<Vec<u8>> = spans
            .into_iter()
            .enumerate()
            .filter(|(n, _)| !refused.contains(n))
            .map(|(_, s)| s)
            .collect();
        assert!(got == want, "{i}: spans lost, reordered or changed");
        assert_eq!(counts, per_piece, "{i}");
    }
}
