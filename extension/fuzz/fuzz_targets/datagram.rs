//! One UDP datagram in the daemon protocol. `parse_datagram` must never panic, and whatever it
//! accepts is what X-Ray will be sent: the body as received, within the size limit, and valid
//! again on its own (as the export path re-reads our own documents): a JSON object, or an OTLP
//! document (`T1S`/`T1U`) with the same first span.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use xray_extension::document::MAX_DOCUMENT_BYTES;
use xray_extension::ingest::protocol::{parse_datagram, parse_document};
use xray_extension::otlp::{self, Sampling};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = parse_datagram(data) else {
        return;
    };
    assert!(
        doc.body.len() <= MAX_DOCUMENT_BYTES,
        "accepted a body of {} bytes",
        doc.body.len()
    );
    // Forwarded byte for byte: the body is everything after the first newline.
    let newline = data.iter().position(|&b| b == b'\n');
    assert_eq!(
        newline.map(|n| &data[n + 1..]),
        Some(doc.body.as_bytes()),
        "the body is not the datagram's tail"
    );
    if Sampling::of_body(doc.body.as_bytes()).is_some() {
        let again = match otlp::parse_document(doc.body.as_bytes(), otlp::Form::Text) {
            Ok(again) => again,
            Err(e) => panic!("accepted OTLP body fails otlp::parse_document: {e}"),
        };
        assert_eq!(again, doc);
        return;
    }
    let again = match parse_document(doc.body.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("accepted datagram's body fails parse_document: {e}"),
    };
    assert_eq!(again.id, doc.id);
    assert_eq!(again.trace_id, doc.trace_id);
    if let Err(e) = serde_json::from_slice::<Map<String, Value>>(doc.body.as_bytes()) {
        panic!("accepted a body that is not a JSON object: {e}");
    }
});
