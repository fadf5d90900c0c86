//! Telemetry API records (`platform.*`) and their record-by-record, field-by-field decoding.
//!
//! Lambda POSTs JSON arrays of `{"time","type","record"}`. One record we cannot read (an unknown
//! `type` such as a future `platform.*`, or a malformed one) must not cost us the others, so each
//! element is decoded on its own. Inside a record only what identifies it is required (the
//! `requestId` of invocation records): every other field is read on its own and left out when
//! it is missing, `null` or of an unexpected type, so a deviation in a field we only use for
//! enrichment never costs us the `platform.runtimeDone` that releases an invocation. Pure: no I/O.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// Declares a string-valued enum with the known values and an `Unknown` variant keeping the
/// text of any other value, with `parse` and `as_str`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, as received.
            Unknown(String),
        }

        impl $name {
            /// Reads the wire value; anything unexpected becomes `Unknown`.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                }
            }

            /// The wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(s) => s,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// How an invocation or a phase ended (`status`).
    Status {
        /// `success`.
        Success = "success",
        /// `error`: the function returned an error.
        Error = "error",
        /// `failure`: the runtime failed.
        Failure = "failure",
        /// `timeout`.
        Timeout = "timeout",
    }
}

impl Status {
    /// `error` or `failure`: the invocation faulted.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::Error | Self::Failure)
    }
}

string_enum! {
    /// `initializationType`.
    InitializationType {
        /// `on-demand`.
        OnDemand = "on-demand",
        /// `provisioned-concurrency`.
        ProvisionedConcurrency = "provisioned-concurrency",
        /// `snap-start`.
        SnapStart = "snap-start",
        /// `lambda-managed-instances`.
        LambdaManagedInstances = "lambda-managed-instances",
    }
}

string_enum! {
    /// `phase` of init records.
    Phase {
        /// `init`: during the init phase.
        Init = "init",
        /// `invoke`: an init retried inside the first invoke (suppressed init).
        Invoke = "invoke",
    }
}

/// The `tracing` object of start/runtimeDone/report records.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingContext {
    /// Lambda's span id for the invocation.
    pub span_id: Option<String>,
    /// `X-Amzn-Trace-Id`.
    pub kind: Option<String>,
    /// The header value (`Root=...;Parent=...;Sampled=1`).
    pub value: String,
}

/// A named span inside a record (`responseLatency`, `extensionOverhead`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The span's name.
    pub name: String,
    /// When it started.
    pub start: EpochSeconds,
    /// How long it lasted.
    pub duration_ms: f64,
}

/// `metrics` of init/restore reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseMetrics {
    /// Duration of the phase (0 when not given).
    pub duration_ms: f64,
}

/// `metrics` of `platform.runtimeDone`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeDoneMetrics {
    /// Runtime time for the invocation (0 when not given).
    pub duration_ms: f64,
    /// Bytes of the response.
    pub produced_bytes: Option<u64>,
}

/// `metrics` of `platform.report`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportMetrics {
    /// Invocation duration (0 when not given).
    pub duration_ms: f64,
    /// Billed duration.
    pub billed_duration_ms: Option<u64>,
    /// Configured memory.
    pub memory_size_mb: Option<u64>,
    /// Peak memory used.
    pub max_memory_used_mb: Option<u64>,
    /// Init duration (cold invocations only).
    pub init_duration_ms: Option<f64>,
    /// SnapStart restore duration.
    pub restore_duration_ms: Option<f64>,
}

/// `platform.initStart`, `platform.restoreStart`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitStart {
    /// `on-demand`, `provisioned-concurrency`, `snap-start`, ...
    pub initialization_type: Option<InitializationType>,
    /// `init`, or `invoke` for a suppressed init retried at the first invoke.
    pub phase: Option<Phase>,
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseDone {
    /// Initialization type, when given.
    pub initialization_type: Option<InitializationType>,
    /// Phase, when given.
    pub phase: Option<Phase>,
    /// How the phase ended.
    pub status: Option<Status>,
    /// The error type when not `success`.
    pub error_type: Option<String>,
}

/// `platform.initReport`, `platform.restoreReport`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseReport {
    /// Initialization type, when given.
    pub initialization_type: Option<InitializationType>,
    /// Phase, when given.
    pub phase: Option<Phase>,
    /// How the phase ended.
    pub status: Option<Status>,
    /// Duration.
    pub metrics: PhaseMetrics,
    /// Spans, when given.
    pub spans: Vec<Span>,
}

/// `platform.start`.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The invocation.
    pub request_id: String,
    /// Function version.
    pub version: Option<String>,
    /// Trace context, when traced.
    pub tracing: Option<TracingContext>,
}

/// `platform.runtimeDone`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeDone {
    /// The invocation.
    pub request_id: String,
    /// How the invocation ended.
    pub status: Option<Status>,
    /// The error type when not `success`.
    pub error_type: Option<String>,
    /// Duration and produced bytes.
    pub metrics: Option<RuntimeDoneMetrics>,
    /// `responseLatency`, `responseDuration`, `runtimeOverhead`.
    pub spans: Vec<Span>,
    /// Trace context, when traced.
    pub tracing: Option<TracingContext>,
}

/// `platform.report`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The invocation.
    pub request_id: String,
    /// How the invocation ended.
    pub status: Option<Status>,
    /// The error type when not `success`.
    pub error_type: Option<String>,
    /// Billing and memory figures.
    pub metrics: ReportMetrics,
    /// `extensionOverhead`.
    pub spans: Vec<Span>,
    /// Trace context, when traced.
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
    /// When Lambda says it happened (when it reached us, if its `time` was unreadable).
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
    /// Fields of records we kept that were present but unreadable (left out, or for `time`,
    /// replaced by the time of receipt).
    pub fields_ignored: usize,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    time: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
}

/// Decodes a Telemetry API POST body record by record. `received` (when the body reached us)
/// stands in for a record's `time` that is missing or unreadable.
pub fn decode(body: &[u8], received: EpochSeconds) -> Decoded {
    let mut out = Decoded::default();
    let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
        out.invalid = 1;
        return out;
    };
    for element in elements {
        let mut fields = Fields::default();
        match decode_one(element.get(), received, &mut fields) {
            Some(event) => {
                if matches!(event.record, Record::Other(_)) {
                    out.skipped += 1;
                }
                out.fields_ignored += fields.ignored;
                out.events.push(event);
            }
            None => out.invalid += 1,
        }
    }
    out
}

fn decode_one(element: &str, received: EpochSeconds, f: &mut Fields) -> Option<Event> {
    let env: Envelope<'_> = serde_json::from_str(element).ok()?;
    let time = env
        .time
        .and_then(|raw| serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()).ok())
        .and_then(|t| EpochSeconds::parse_rfc3339(&t));
    let time = time.unwrap_or_else(|| {
        f.ignored += 1;
        received
    });
    // A record that is not an object reads as an empty one: only the invocation records,
    // which need their `requestId`, are lost with it.
    let map: Map<String, Value> = match env.record.map(RawValue::get) {
        None | Some("null") => Map::new(),
        Some(raw) => {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw) {
                map
            } else {
                f.ignored += 1;
                Map::new()
            }
        }
    };
    let m = &map;
    let record = match &*env.kind {
        "platform.initStart" => Record::InitStart(f.init_start(m)),
        "platform.initRuntimeDone" => Record::InitRuntimeDone(f.phase_done(m)),
        "platform.initReport" => Record::InitReport(f.phase_report(m)),
        "platform.restoreStart" => Record::RestoreStart(f.init_start(m)),
        "platform.restoreRuntimeDone" => Record::RestoreRuntimeDone(f.phase_done(m)),
        "platform.restoreReport" => Record::RestoreReport(f.phase_report(m)),
        "platform.start" => Record::Start(Start {
            request_id: request_id(m)?,
            version: f.string(m, "version"),
            tracing: f.tracing(m),
        }),
        "platform.runtimeDone" => Record::RuntimeDone(RuntimeDone {
            request_id: request_id(m)?,
            status: f.status(m),
            error_type: f.string(m, "errorType"),
            metrics: f.object(m, "metrics").map(|x| RuntimeDoneMetrics {
                duration_ms: f.float(x, "durationMs").unwrap_or_default(),
                produced_bytes: f.count(x, "producedBytes"),
            }),
            spans: f.spans(m),
            tracing: f.tracing(m),
        }),
        "platform.report" => Record::Report(Report {
            request_id: request_id(m)?,
            status: f.status(m),
            error_type: f.string(m, "errorType"),
            metrics: f
                .object(m, "metrics")
                .map(|x| f.report_metrics(x))
                .unwrap_or_default(),
            spans: f.spans(m),
            tracing: f.tracing(m),
        }),
        other => Record::Other(other.to_owned()),
    };
    Some(Event { time, record })
}

/// What identifies an invocation record; without it the record is unusable.
fn request_id(m: &Map<String, Value>) -> Option<String> {
    m.get("requestId")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Reads optional fields one by one, counting those present (not `null`) but unreadable.
#[derive(Debug, Default)]
struct Fields {
    ignored: usize,
}

impl Fields {
    fn field<'m, T>(
        &mut self,
        m: &'m Map<String, Value>,
        key: &str,
        read: impl FnOnce(&'m Value) -> Option<T>,
    ) -> Option<T> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let got = read(v);
                if got.is_none() {
                    self.ignored += 1;
                }
                got
            }
        }
    }

    fn string(&mut self, m: &Map<String, Value>, key: &str) -> Option<String> {
        self.field(m, key, |v| v.as_str().map(str::to_owned))
    }

    fn float(&mut self, m: &Map<String, Value>, key: &str) -> Option<f64> {
        self.field(m, key, |v| v.as_f64().filter(|x| x.is_finite()))
    }

    /// A non-negative integer; an integral float (`2.0`) counts as one.
    fn count(&mut self, m: &Map<String, Value>, key: &str) -> Option<u64> {
        self.field(m, key, |v| {
            v.as_u64().or_else(|| {
                let x = v.as_f64()?;
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "checked: integral, non-negative and below 2^53"
                )]
                (x.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&x))
                    .then_some(x as u64)
            })
        })
    }

    fn object<'m>(
        &mut self,
        m: &'m Map<String, Value>,
        key: &str,
    ) -> Option<&'m Map<String, Value>> {
        self.field(m, key, Value::as_object)
    }

    fn status(&mut self, m: &Map<String, Value>) -> Option<Status> {
        self.field(m, "status", |v| v.as_str().map(Status::parse))
    }

    fn init_type(&mut self, m: &Map<String, Value>) -> Option<InitializationType> {
        self.field(m, "initializationType", |v| {
            v.as_str().map(InitializationType::parse)
        })
    }

    fn phase(&mut self, m: &Map<String, Value>) -> Option<Phase> {
        self.field(m, "phase", |v| v.as_str().map(Phase::parse))
    }

    fn tracing(&mut self, m: &Map<String, Value>) -> Option<TracingContext> {
        let t = self.object(m, "tracing")?;
        // Without its value the context says nothing: left out as a whole.
        let Some(value) = t.get("value").and_then(Value::as_str) else {
            self.ignored += 1;
            return None;
        };
        Some(TracingContext {
            span_id: self.string(t, "spanId"),
            kind: self.string(t, "type"),
            value: value.to_owned(),
        })
    }

    /// The spans that can be read; one unreadable span is left out, not the others.
    fn spans(&mut self, m: &Map<String, Value>) -> Vec<Span> {
        let Some(items) = self.field(m, "spans", Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                let span = item.as_object().and_then(|s| {
                    Some(Span {
                        name: s.get("name")?.as_str()?.to_owned(),
                        start: EpochSeconds::parse_rfc3339(s.get("start")?.as_str()?)?,
                        duration_ms: s.get("durationMs")?.as_f64().filter(|x| x.is_finite())?,
                    })
                });
                if span.is_none() {
                    self.ignored += 1;
                }
                span
            })
            .collect()
    }

    fn init_start(&mut self, m: &Map<String, Value>) -> InitStart {
        InitStart {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            runtime_version: self.string(m, "runtimeVersion"),
            runtime_version_arn: self.string(m, "runtimeVersionArn"),
            function_name: self.string(m, "functionName"),
            function_version: self.string(m, "functionVersion"),
            instance_id: self.string(m, "instanceId"),
            instance_max_memory: self.count(m, "instanceMaxMemory"),
        }
    }

    fn phase_done(&mut self, m: &Map<String, Value>) -> PhaseDone {
        PhaseDone {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            status: self.status(m),
            error_type: self.string(m, "errorType"),
        }
    }

    fn phase_report(&mut self, m: &Map<String, Value>) -> PhaseReport {
        PhaseReport {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            status: self.status(m),
            metrics: PhaseMetrics {
                duration_ms: self
                    .object(m, "metrics")
                    .and_then(|x| self.float(x, "durationMs"))
                    .unwrap_or_default(),
            },
            spans: self.spans(m),
        }
    }

    fn report_metrics(&mut self, x: &Map<String, Value>) -> ReportMetrics {
        ReportMetrics {
            duration_ms: self.float(x, "durationMs").unwrap_or_default(),
            billed_duration_ms: self.count(x, "billedDurationMs"),
            memory_size_mb: self.count(x, "memorySizeMB"),
            max_memory_used_mb: self.count(x, "maxMemoryUsedMB"),
            init_duration_ms: self.float(x, "initDurationMs"),
            restore_duration_ms: self.float(x, "restoreDurationMs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the test bodies "arrived": 2022-10-12T00:00:16Z.
    const RECEIVED: EpochSeconds = EpochSeconds(1_665_532_816.0);

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/telemetry/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn decodes_the_documented_records() {
        let d = decode(&fixture("cold_invoke.json"), RECEIVED);
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
        assert_eq!(done.status, Some(Status::Success));
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
        assert_eq!(init.initialization_type, Some(InitializationType::OnDemand));
        assert_eq!(init.phase, Some(Phase::Init));
        assert_eq!(init.instance_max_memory, Some(268_435_456));
    }

    #[test]
    fn one_bad_or_unknown_record_does_not_reject_the_batch() {
        let d = decode(&fixture("mixed_unknown_and_bad.json"), RECEIVED);
        // Only the runtimeDone without a requestId is lost; the start whose time is unreadable
        // is kept, timed when it arrived.
        assert_eq!(d.invalid, 1, "{d:?}");
        assert_eq!(d.fields_ignored, 1, "{d:?}");
        assert!(d.events.iter().any(
            |e| matches!(&e.record, Record::Start(s) if s.request_id == "r-1")
                && e.time == RECEIVED
        ));
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
        assert_eq!(decode(b"{}", RECEIVED).invalid, 1);
        assert_eq!(decode(b"garbage", RECEIVED).invalid, 1);
        assert_eq!(decode(b"[]", RECEIVED), Decoded::default());
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

    #[test]
    fn documented_deviations_keep_the_record_and_lose_only_the_field() {
        let body = r#"[{"time":"2022-10-12T00:00:15.690Z","type":"platform.runtimeDone","record":{
            "requestId":"r","status":"timeout","errorType":null,"spans":null,
            "tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id"},
            "metrics":{"durationMs":"soon","producedBytes":2.0}}},
          {"time":"2022-10-12T00:00:15.695Z","type":"platform.report","record":{
            "requestId":"r","status":"weird","metrics":{"durationMs":3.5,"billedDurationMs":4.0,"maxMemoryUsedMB":2.5},
            "spans":[{"name":"extensionOverhead","start":"2022-10-12T00:00:15.690Z"},
                     {"name":"other","start":"2022-10-12T00:00:15.690Z","durationMs":1.0}]}},
          {"time":"2022-10-12T00:00:14.600Z","type":"platform.initStart","record":{
            "initializationType":"some-future-kind","phase":7,"instanceMaxMemory":-1}}]"#;
        let d = decode(body.as_bytes(), RECEIVED);
        assert_eq!(d.invalid, 0, "{d:?}");
        let Record::RuntimeDone(done) = &d.events[0].record else {
            panic!("{d:?}")
        };
        assert_eq!(done.status, Some(Status::Timeout));
        assert_eq!(done.error_type, None);
        assert!(done.spans.is_empty());
        assert_eq!(
            done.tracing, None,
            "tracing without value is no trace context"
        );
        let metrics = done.metrics.as_ref().unwrap();
        assert_eq!(metrics.produced_bytes, Some(2));
        assert!(metrics.duration_ms.abs() < f64::EPSILON);
        let Record::Report(report) = &d.events[1].record else {
            panic!("{d:?}")
        };
        assert_eq!(report.status, Some(Status::Unknown("weird".into())));
        assert_eq!(report.metrics.billed_duration_ms, Some(4));
        assert_eq!(report.metrics.max_memory_used_mb, None);
        assert_eq!(report.spans.len(), 1);
        assert_eq!(report.spans[0].name, "other");
        let Record::InitStart(init) = &d.events[2].record else {
            panic!("{d:?}")
        };
        assert_eq!(
            init.initialization_type,
            Some(InitializationType::Unknown("some-future-kind".into()))
        );
        assert_eq!(init.phase, None);
        assert_eq!(init.instance_max_memory, None);
        // tracing.value, durationMs, a span, maxMemoryUsedMB, phase, instanceMaxMemory.
        assert_eq!(d.fields_ignored, 6, "{d:?}");
    }

    #[test]
    fn enums_round_trip_their_wire_values() {
        for s in ["success", "error", "failure", "timeout", "other"] {
            assert_eq!(Status::parse(s).as_str(), s);
        }
        for s in [
            "on-demand",
            "provisioned-concurrency",
            "snap-start",
            "lambda-managed-instances",
            "x",
        ] {
            assert_eq!(InitializationType::parse(s).as_str(), s);
        }
        assert!(Status::Error.is_fault() && Status::Failure.is_fault());
        assert!(!Status::Timeout.is_fault() && !Status::parse("x").is_fault());
        assert_eq!(Phase::parse("invoke"), Phase::Invoke);
        assert_eq!(serde_json::json!(Status::Timeout), "timeout");
    }

    /// Every record type, as documented: the cold invoke plus the SnapStart restore records.
    fn every_record_type() -> Vec<serde_json::Value> {
        let mut all: Vec<serde_json::Value> =
            serde_json::from_slice(&fixture("cold_invoke.json")).unwrap();
        all.extend(
            serde_json::from_str::<Vec<serde_json::Value>>(
                r#"[{"time":"2022-10-12T00:00:14.100Z","type":"platform.restoreStart","record":{"runtimeVersion":"java:21.v20","runtimeVersionArn":"arn:x","functionName":"f","functionVersion":"3","instanceId":"i-1","instanceMaxMemory":536870912}},
                    {"time":"2022-10-12T00:00:14.200Z","type":"platform.restoreRuntimeDone","record":{"status":"success"}},
                    {"time":"2022-10-12T00:00:14.210Z","type":"platform.restoreReport","record":{"status":"success","metrics":{"durationMs":15.19},"spans":[{"name":"restore","start":"2022-10-12T00:00:14.100Z","durationMs":100.0}]}}]"#,
            )
            .unwrap(),
        );
        all
    }

    /// JSON pointers to every value inside `v` (objects' fields and arrays' elements).
    fn pointers(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        let children: Vec<(String, &serde_json::Value)> = match v {
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let p = format!("{at}/{key}");
            out.push(p.clone());
            pointers(child, &p, out);
        }
    }

    /// Removes the value at `pointer`, or replaces it.
    fn mutate(v: &mut serde_json::Value, pointer: &str, with: Option<&serde_json::Value>) {
        if let Some(new) = with {
            *v.pointer_mut(pointer).unwrap() = new.clone();
            return;
        }
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match v.pointer_mut(parent).unwrap() {
            serde_json::Value::Object(m) => {
                m.remove(key);
            }
            serde_json::Value::Array(a) => {
                a.remove(key.parse().unwrap());
            }
            _ => unreachable!(),
        }
    }

    /// What identifies the invocation that a runtimeDone releases: without it nothing can.
    fn is_identity(element: &serde_json::Value, pointer: &str) -> bool {
        element["type"] == "platform.runtimeDone"
            && ["/type", "/record", "/record/requestId"].contains(&pointer)
    }

    /// Decodes `body` and runs it through the enrichment: the runtimeDone of `REQUEST` must be
    /// there (it releases the invocation), and every document produced must be one X-Ray takes.
    fn assert_releases(body: &[serde_json::Value], what: &str) {
        const REQUEST: &str = "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa";
        let text = serde_json::Value::Array(body.to_vec()).to_string();
        let d = decode(text.as_bytes(), RECEIVED);
        let released = d
            .events
            .iter()
            .filter(|e| matches!(&e.record, Record::RuntimeDone(r) if r.request_id == REQUEST))
            .count();
        assert_eq!(released, 1, "{what}: no release in {d:?}");
        let mut enricher = crate::enrich::Enricher::with_ids(
            crate::enrich::Settings::default(),
            crate::enrich::Environment::default(),
            crate::trace::IdSource::sequence(0),
        );
        let mut docs: Vec<_> = d
            .events
            .iter()
            .flat_map(|e| enricher.on_telemetry(e))
            .collect();
        docs.extend(enricher.on_shutdown("spindown", RECEIVED.plus_ms(1000.0)));
        for doc in docs {
            crate::ingest::protocol::parse_document(doc.body.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: enrichment produced {e}: {}", doc.body));
        }
    }

    #[test]
    fn no_deviation_of_any_field_of_any_record_costs_the_release() {
        let base = every_record_type();
        let replacements = [
            serde_json::Value::Null,
            serde_json::json!(2.0),
            serde_json::json!(-1),
            serde_json::json!(true),
            serde_json::json!("unexpected"),
            serde_json::json!([]),
            serde_json::json!({"x": 1}),
        ];
        let mut cases = 0;
        for (i, element) in base.iter().enumerate() {
            let mut paths = Vec::new();
            pointers(element, "", &mut paths);
            for pointer in paths.iter().filter(|p| !is_identity(element, p)) {
                for with in std::iter::once(None).chain(replacements.iter().map(Some)) {
                    let mut body = base.clone();
                    mutate(&mut body[i], pointer, with);
                    assert_releases(&body, &format!("element {i} {pointer} -> {with:?}"));
                    cases += 1;
                }
            }
            // Extra fields everywhere in the element.
            let mut body = base.clone();
            for pointer in std::iter::once(String::new()).chain(paths) {
                if let Some(serde_json::Value::Object(m)) = body[i].pointer_mut(&pointer) {
                    m.insert(
                        "someNewField".into(),
                        serde_json::json!({"nested": [1, null]}),
                    );
                }
            }
            assert_releases(&body, &format!("element {i} with extra fields"));
            // Another type in its place, and an unknown element next to it.
            if element["type"] != "platform.runtimeDone" {
                let mut body = base.clone();
                body[i]["type"] = serde_json::json!("platform.someFutureEvent");
                assert_releases(&body, &format!("element {i} of an unknown type"));
            }
            let mut body = base.clone();
            body.insert(i, serde_json::json!({"time": "2022-10-12T00:00:15.000Z", "type": "platform.future", "record": 1}));
            assert_releases(&body, &format!("an unknown element before {i}"));
            cases += 3;
        }
        // Unknown and unusual statuses on every record that has one.
        for status in ["throttled", "", "SUCCESS", "timeout"] {
            let mut body = base.clone();
            for element in &mut body {
                if element["record"].get("status").is_some() {
                    element["record"]["status"] = serde_json::json!(status);
                }
            }
            assert_releases(&body, &format!("status {status:?}"));
            cases += 1;
        }
        assert!(cases > 500, "only {cases} cases");
    }
}
