//! Reading the captured sequences of `fixtures/enrich`: their environment, INVOKE and SHUTDOWN
//! steps. Shared by this module's tests and the enrichment micro benchmark, which includes this
//! file by path; so it names only what the module including it imports.

use super::{
    Environment, EpochSeconds, InitializationType, Invoke, ShutdownReason, TraceHeader, Value,
};

/// A time of a fixture (RFC 3339).
pub fn time(v: &Value) -> EpochSeconds {
    v.as_str()
        .and_then(EpochSeconds::parse_rfc3339)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The fixture's `environment`.
pub fn environment(fixture: &Value) -> Environment {
    let e = &fixture["environment"];
    Environment {
        function_name: e["functionName"].as_str().map(String::from),
        function_version: e["functionVersion"].as_str().map(String::from),
        memory_size_mb: e["memorySizeMB"].as_u64(),
        initialization_type: e["initializationType"]
            .as_str()
            .map(InitializationType::parse),
        extension_started: Some(time(&e["extensionStarted"])),
        extension_ready: Some(time(&e["extensionReady"])),
    }
}

/// An `invoke` step.
pub fn invoke(inv: &Value) -> Invoke {
    Invoke {
        request_id: text(&inv["requestId"]),
        trace: inv.get("trace").map(|t| {
            TraceHeader::parse(&text(t)).unwrap_or_else(|e| panic!("bad trace header {t}: {e}"))
        }),
        deadline: time(&inv["deadline"]),
        received_at: time(&inv["receivedAt"]),
    }
}

/// A `shutdown` step: its reason and time.
pub fn shutdown(s: &Value) -> (ShutdownReason, EpochSeconds) {
    (ShutdownReason::parse(&text(&s["reason"])), time(&s["at"]))
}
