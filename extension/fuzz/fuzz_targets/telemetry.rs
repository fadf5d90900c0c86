//! One Telemetry API POST body, decoded, each record placed on its attempt and fed through the
//! enrichment state machine, then a SHUTDOWN. Nothing may panic, the decoder must account for each array element at most once,
//! and every document enrichment produces must be one the protocol checks accept (it goes to
//! X-Ray without further checks).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use xray_extension::attempt::Attempts;
use xray_extension::document::Document;
use xray_extension::enrich::{Enricher, Environment, Settings};
use xray_extension::ingest::protocol::parse_document;
use xray_extension::lambda::events::ShutdownReason;
use xray_extension::lambda::telemetry::{EpochSeconds, decode};
use xray_extension::trace::IdSource;

/// When the SHUTDOWN arrives: 2023-11-14T22:13:20Z.
const SHUTDOWN_AT: EpochSeconds = EpochSeconds(1_700_000_000.0);
/// When the body arrives (stands in for unreadable record times): a second before.
const RECEIVED: EpochSeconds = EpochSeconds(1_699_999_999.0);

fn check(doc: &Document) {
    match parse_document(doc.body.as_bytes()) {
        Ok(again) => {
            assert_eq!(again.id, doc.id, "{:?}", doc.body);
            assert_eq!(again.trace_id, doc.trace_id, "{:?}", doc.body);
        }
        Err(e) => panic!(
            "enrichment produced a document X-Ray would reject ({e}): {:?}",
            doc.body
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data, RECEIVED);
    match serde_json::from_slice::<Vec<&RawValue>>(data) {
        Ok(elements) => assert!(
            decoded.events.len() + decoded.invalid <= elements.len(),
            "{} events + {} invalid from {} elements",
            decoded.events.len(),
            decoded.invalid,
            elements.len()
        ),
        Err(_) => assert!(
            decoded.events.is_empty(),
            "events from a body that is no array"
        ),
    }
    assert!(decoded.skipped <= decoded.events.len());

    let mut enricher = Enricher::with_ids(
        Settings::default(),
        Environment::default(),
        IdSource::sequence(0),
    );
    let mut attempts = Attempts::new();
    for event in &decoded.events {
        let attempt = attempts.place_event(event).map(|placed| placed.id);
        for doc in enricher.on_telemetry(event, attempt) {
            check(&doc);
        }
    }
    for doc in enricher.on_shutdown(&ShutdownReason::Timeout, SHUTDOWN_AT) {
        check(&doc);
    }
});
