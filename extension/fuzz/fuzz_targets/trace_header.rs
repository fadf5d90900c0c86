//! An `X-Amzn-Trace-Id` value, as Lambda passes it in INVOKE events and telemetry records.
//! `TraceHeader::parse` must never panic, and what it accepts must survive a round trip through
//! its canonical form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xray_extension::trace::{
    SEGMENT_ID_LEN, Sampling, SegmentId, TRACE_ID_LEN, TraceHeader, TraceId,
};

fuzz_target!(|value: &str| {
    let Ok(header) = TraceHeader::parse(value) else {
        return;
    };
    assert_eq!(header.root.as_str().len(), TRACE_ID_LEN);
    assert_eq!(TraceId::parse(header.root.as_str()), Ok(header.root));
    if let Some(parent) = header.parent {
        assert_eq!(parent.as_str().len(), SEGMENT_ID_LEN);
        assert_eq!(SegmentId::parse(parent.as_str()), Ok(parent));
    }
    let sampled = match header.sampling {
        Sampling::Sampled => "1",
        Sampling::NotSampled => "0",
        Sampling::Undecided => "?",
    };
    let canonical = match header.parent {
        Some(parent) => format!("Root={};Parent={parent};Sampled={sampled}", header.root),
        None => format!("Root={};Sampled={sampled}", header.root),
    };
    match TraceHeader::parse(&canonical) {
        Ok(again) => assert_eq!(again, header, "{canonical}"),
        Err(e) => panic!("{canonical}: {e}"),
    }
});
