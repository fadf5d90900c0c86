//! One OTLP trace request, as the UDP path and the OTLP/HTTP receiver see it. Whatever is
//! accepted must survive the trip to X-Ray documents: `parse_request` and the JSON conversion
//! never panic; a `T1S` body of the same bytes is accepted exactly when the request is; the
//! documents `to_documents` builds are each ≤ 64 KiB, valid again as OTLP documents, and carry
//! every span (in order, byte for byte) except those counted as rejected.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xray_extension::document::MAX_DOCUMENT_BYTES;
use xray_extension::otlp::{Form, Sampling, json, parse_document, parse_request, to_documents};

fn spans_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    match parse_request(bytes) {
        Ok(r) => r.spans().map(|s| s.bytes.to_vec()).collect(),
        Err(e) => panic!("a document we built does not parse: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(converted) = json::to_protobuf(data) {
        let _ = parse_request(&converted);
    }
    let request = parse_request(data);
    if data.len() <= 48 * 1024 {
        let body = format!("T1S{}", base64_simd::STANDARD.encode_to_string(data));
        assert_eq!(
            parse_document(body.as_bytes(), Form::Text).is_ok(),
            request.is_ok(),
            "the datagram path and the request check disagree"
        );
    }
    let Ok(request) = request else {
        return;
    };
    let split = to_documents(&request, Sampling::Unsampled);
    let mut placed = Vec::new();
    for doc in &split.documents {
        assert!(
            doc.body.len() <= MAX_DOCUMENT_BYTES,
            "document of {} bytes",
            doc.body.len()
        );
        assert!(doc.body.as_bytes().starts_with(b"T1U"));
        let again = match parse_document(doc.body.as_bytes(), Form::Text) {
            Ok(again) => again,
            Err(e) => panic!("a document we built is refused: {e}"),
        };
        assert_eq!(again.id, doc.id);
        let bytes = base64_simd::STANDARD
            .decode_to_vec(&doc.body.as_bytes()[3..])
            .unwrap_or_default();
        placed.extend(spans_of(&bytes));
    }
    let all: Vec<Vec<u8>> = request.spans().map(|s| s.bytes.to_vec()).collect();
    assert_eq!(placed.len() + split.rejected_spans, all.len());
    if split.rejected_spans == 0 {
        assert_eq!(placed, all, "spans lost, reordered or changed");
    }
});
