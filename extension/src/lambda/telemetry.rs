//! Telemetry API records (`platform.*`) and their record-by-record decoding.
//!
//! Lambda POSTs JSON arrays of `{"time","type","record"}`. One record we cannot read (an unknown
//! `type` such as a future `platform.*`, or a malformed one) must not cost us the others, so each
//! element is decoded on its own. Pure: no I/O.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Seconds since the Unix epoch, as X-Ray documents carry them.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct EpochSeconds(pub f64);

impl EpochSeconds {
    /// Parses the Telemetry API's RFC 3339 timestamps (`2022-10-12T00:00:15.064Z`). Times
    /// before 1970 are refused: X-Ray would reject the documents built from them.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        let micros = t.timestamp_micros();
        if micros <= 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "epoch microseconds fit f64's 53 bits"
        )]
        Some(Self(micros as f64 / 1e6))
    }

    /// This time plus `ms` milliseconds.
    #[must_use]
    pub fn plus_ms(self, ms: f64) -> Self {
        Self(self.0 + ms / 1e3)
    }
}

impl<'de> Deserialize<'de> for EpochSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        Self::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 time"))
    }
}

/// The `tracing` object of start/runtimeDone/report records.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingContext {
    /// Lambda's span id for the invocation.
    #[serde(default)]
    pub span_id: Option<String>,
    /// `X-Amzn-Trace-Id`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The header value (`Root=...;Parent=...;Sampled=1`).
    pub value: String,
}

/// A named span inside a record (`responseLatency`, `extensionOverhead`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// The span's name.
    pub name: String,
    /// When it started.
    pub start: EpochSeconds,
    /// How long it lasted.
    pub duration_ms: f64,
}

/// `metrics` of init/restore reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseMetrics {
    /// Duration of the phase.
    #[serde(default)]
    pub duration_ms: f64,
}

/// `metrics` of `platform.runtimeDone`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDoneMetrics {
    /// Runtime time for the invocation.
    #[serde(default)]
    pub duration_ms: f64,
    /// Bytes of the response.
    #[serde(default)]
    pub produced_bytes: Option<u64>,
}

/// `metrics` of `platform.report`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportMetrics {
    /// Invocation duration.
    #[serde(default)]
    pub duration_ms: f64,
    /// Billed duration.
    #[serde(default)]
    pub billed_duration_ms: Option<u64>,
    /// Configured memory.
    #[serde(rename = "memorySizeMB", default)]
    pub memory_size_mb: Option<u64>,
    /// Peak memory used.
    #[serde(rename = "maxMemoryUsedMB", default)]
    pub max_memory_used_mb: Option<u64>,
    /// Init duration (cold invocations only).
    #[serde(default)]
    pub init_duration_ms: Option<f64>,
    /// SnapStart restore duration.
    #[serde(default)]
    pub restore_duration_ms: Option<f64>,
}

/// `platform.initStart`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InitStart {
    /// `on-demand`, `provisioned-concurrency`, `snap-start`, ...
    pub initialization_type: Option<String>,
    /// `init`, or `invoke` for a suppressed init retried at the first invoke.
    pub phase: Option<String>,
    /// e.g. `python:3.12.v10`.
    pub runtime_version: Option<String>,
    /// The runtime version ARN.
    pub runtime_version_arn: Option<String>,
    /// Function name.
    pub function_name: Option<String>,
    /// Function version.
    pub function_version: Option<String>,
    /// Execution environment id.
    pub instance_id: Option<String>,
    /// Memory limit (bytes in practice).
    pub instance_max_memory: Option<u64>,
}

/// `platform.initRuntimeDone`, `platform.restoreRuntimeDone`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhaseDone {
    /// Initialization type, when given.
    pub initialization_type: Option<String>,
    /// Phase, when given.
    pub phase: Option<String>,
    /// `success`, `error`, `failure`, `timeout`.
    pub status: Option<String>,
    /// The error type when not `success`.
    pub error_type: Option<String>,
}

/// `platform.initReport`, `platform.restoreReport`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhaseReport {
    /// Initialization type, when given.
    pub initialization_type: Option<String>,
    /// Phase, when given.
    pub phase: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Duration.
    pub metrics: PhaseMetrics,
    /// Spans, when given.
    pub spans: Vec<Span>,
}

/// `platform.start`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// The invocation.
    pub request_id: String,
    /// Function version.
    #[serde(default)]
    pub version: Option<String>,
    /// Trace context, when traced.
    #[serde(default)]
    pub tracing: Option<TracingContext>,
}

/// `platform.runtimeDone`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDone {
    /// The invocation.
    pub request_id: String,
    /// `success`, `error`, `failure`, `timeout`.
    #[serde(default)]
    pub status: Option<String>,
    /// The error type when not `success`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Duration and produced bytes.
    #[serde(default)]
    pub metrics: Option<RuntimeDoneMetrics>,
    /// `responseLatency`, `responseDuration`, `runtimeOverhead`.
    #[serde(default)]
    pub spans: Vec<Span>,
    /// Trace context, when traced.
    #[serde(default)]
    pub tracing: Option<TracingContext>,
}

/// `platform.report`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The invocation.
    pub request_id: String,
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// The error type when not `success`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Billing and memory figures.
    #[serde(default)]
    pub metrics: ReportMetrics,
    /// `extensionOverhead`.
    #[serde(default)]
    pub spans: Vec<Span>,
    /// Trace context, when traced.
    #[serde(default)]
    pub tracing: Option<TracingContext>,
}

/// One platform record we understand, or the name of one we skip.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `platform.initStart`.
    InitStart(InitStart),
    /// `platform.initRuntimeDone`.
    InitRuntimeDone(PhaseDone),
    /// `platform.initReport`.
    InitReport(PhaseReport),
    /// `platform.restoreStart`.
    RestoreStart(InitStart),
    /// `platform.restoreRuntimeDone`.
    RestoreRuntimeDone(PhaseDone),
    /// `platform.restoreReport`.
    RestoreReport(PhaseReport),
    /// `platform.start`.
    Start(Start),
    /// `platform.runtimeDone`.
    RuntimeDone(RuntimeDone),
    /// `platform.report`.
    Report(Report),
    /// Any other type (`platform.extension`, `platform.telemetrySubscription`, future ones).
    Other(String),
}

/// A record with its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When Lambda says it happened.
    pub time: EpochSeconds,
    /// What happened.
    pub record: Record,
}

/// The result of decoding one POST body.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// Records read, in the order received.
    pub events: Vec<Event>,
    /// Elements that could not be read (skipped; the rest are kept).
    pub invalid: usize,
    /// Elements of a type we do not use.
    pub skipped: usize,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    time: EpochSeconds,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
}

/// Decodes a Telemetry API POST body record by record.
pub fn decode(body: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
        out.invalid = 1;
        return out;
    };
    for element in elements {
        match decode_one(element.get()) {
            Some(event) => {
                if matches!(event.record, Record::Other(_)) {
                    out.skipped += 1;
                }
                out.events.push(event);
            }
            None => out.invalid += 1,
        }
    }
    out
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

fn decode_one(element: &str) -> Option<Event> {
    let env: Envelope<'_> = serde_json::from_str(element).ok()?;
    let raw = env.record.map_or("{}", RawValue::get);
    let record = match &*env.kind {
        "platform.initStart" => Record::InitStart(parse(raw)?),
        "platform.initRuntimeDone" => Record::InitRuntimeDone(parse(raw)?),
        "platform.initReport" => Record::InitReport(parse(raw)?),
        "platform.restoreStart" => Record::RestoreStart(parse(raw)?),
        "platform.restoreRuntimeDone" => Record::RestoreRuntimeDone(parse(raw)?),
        "platform.restoreReport" => Record::RestoreReport(parse(raw)?),
        "platform.start" => Record::Start(parse(raw)?),
        "platform.runtimeDone" => Record::RuntimeDone(parse(raw)?),
        "platform.report" => Record::Report(parse(raw)?),
        other => Record::Other(other.to_owned()),
    };
    Some(Event {
        time: env.time,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/telemetry/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn decodes_the_documented_records() {
        let d = decode(&fixture("cold_invoke.json"));
        assert_eq!(d.invalid, 0);
        let kinds: Vec<&str> = d
            .events
            .iter()
            .map(|e| match &e.record {
                Record::InitStart(_) => "initStart",
                Record::InitRuntimeDone(_) => "initRuntimeDone",
                Record::InitReport(_) => "initReport",
                Record::Start(_) => "start",
                Record::RuntimeDone(_) => "runtimeDone",
                Record::Report(_) => "report",
                Record::Other(o) => o.as_str(),
                _ => "restore",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "initStart",
                "platform.extension",
                "platform.telemetrySubscription",
                "initRuntimeDone",
                "initReport",
                "start",
                "runtimeDone",
                "report"
            ]
        );
        assert_eq!(d.skipped, 2);
        let Record::RuntimeDone(done) = &d.events[6].record else {
            panic!("not runtimeDone")
        };
        assert_eq!(done.request_id, "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa");
        assert_eq!(done.status.as_deref(), Some("success"));
        assert_eq!(done.spans.len(), 3);
        assert_eq!(done.metrics.as_ref().unwrap().produced_bytes, Some(8));
        let Record::Report(report) = &d.events[7].record else {
            panic!("not report")
        };
        assert_eq!(report.metrics.billed_duration_ms, Some(694));
        assert_eq!(report.metrics.max_memory_used_mb, Some(84));
        assert_eq!(report.metrics.init_duration_ms, Some(397.68));
        let Record::InitStart(init) = &d.events[0].record else {
            panic!("not initStart")
        };
        assert_eq!(init.initialization_type.as_deref(), Some("on-demand"));
        assert_eq!(init.instance_max_memory, Some(268_435_456));
    }

    #[test]
    fn one_bad_or_unknown_record_does_not_reject_the_batch() {
        let d = decode(&fixture("mixed_unknown_and_bad.json"));
        assert_eq!(d.invalid, 2, "{d:?}");
        assert!(
            d.events
                .iter()
                .any(|e| matches!(&e.record, Record::RestoreStart(_)))
        );
        assert!(
            d.events
                .iter()
                .any(|e| matches!(&e.record, Record::Other(o) if o == "platform.someFutureEvent"))
        );
        assert!(
            d.events
                .iter()
                .any(|e| matches!(&e.record, Record::RuntimeDone(r) if r.request_id == "r-2"))
        );
    }

    #[test]
    fn a_body_that_is_not_an_array_is_one_invalid_element() {
        assert_eq!(decode(b"{}").invalid, 1);
        assert_eq!(decode(b"garbage").invalid, 1);
        assert_eq!(decode(b"[]"), Decoded::default());
    }

    #[test]
    fn times_are_epoch_seconds() {
        let t = EpochSeconds::parse_rfc3339("2022-10-12T00:00:15.064Z").unwrap();
        assert!((t.0 - 1_665_532_815.064).abs() < 1e-6);
        assert!((t.plus_ms(936.0).0 - 1_665_532_816.0).abs() < 1e-6);
        assert!(EpochSeconds::parse_rfc3339("yesterday").is_none());
        // Found by fuzzing: pre-1970 times gave negative start times.
        assert!(EpochSeconds::parse_rfc3339("1969-12-31T23:59:59Z").is_none());
        assert!(EpochSeconds::parse_rfc3339("1970-01-01T00:00:00Z").is_none());
    }
}
