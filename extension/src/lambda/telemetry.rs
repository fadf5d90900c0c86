//! Telemetry API records (`platform.*`) and their record-by-record, field-by-field decoding.
//!
//! Lambda POSTs JSON arrays of `{"time","type","record"}`. One record we cannot read (an unknown
//! `type` such as a future `platform.*`, or a malformed one) must not cost us the others, so each
//! element is decoded on its own. Inside a record only what identifies it is required (the
//! `requestId` of invocation records): every other field is read on its own and left out when
//! it is missing, `null` or of an unexpected type, so a deviation in a field we only use for
//! enrichment never costs us the `platform.runtimeDone` that releases an invocation. Pure: no I/O.

mod fields;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use fields::Fields;

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
        #[expect(
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
    /// The tenant of a function with tenant isolation (see [`TenantId`]).
    pub tenant_id: Option<TenantId>,
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
    /// The tenant, as AWS's runtime core writes it here too (see [`TenantId`]).
    pub tenant_id: Option<TenantId>,
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
    /// The tenant of a function with tenant isolation (see [`TenantId`]).
    pub tenant_id: Option<TenantId>,
}

/// The `tenantId` of a function with tenant isolation (`TenantIsolationMode=PER_TENANT`): never
/// empty, and a value X-Ray takes as an annotation
/// ([`crate::trace::is_indexable_string`]). Records of other functions carry
/// `""`, `null` or nothing: no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(String);

impl TenantId {
    /// A tenant id that can be indexed, or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        crate::trace::is_indexable_string(s).then(|| Self(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
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

impl Record {
    /// The tenant the record names, when it names one.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        match self {
            Self::Start(s) => s.tenant_id.as_ref(),
            Self::RuntimeDone(d) => d.tenant_id.as_ref(),
            Self::Report(r) => r.tenant_id.as_ref(),
            _ => None,
        }
    }
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

/// The record types we read; any other is kept as [`Record::Other`] without reading it.
const READ_TYPES: [&str; 9] = [
    "platform.initStart",
    "platform.initRuntimeDone",
    "platform.initReport",
    "platform.restoreStart",
    "platform.restoreRuntimeDone",
    "platform.restoreReport",
    "platform.start",
    "platform.runtimeDone",
    "platform.report",
];

/// Decodes a Telemetry API POST body record by record. `received` (when the body reached us)
/// stands in for a record's `time` that is missing or unreadable.
///
/// The array is read element by element (no list of every element first), at most
/// [`MAX_RECORDS_PER_DELIVERY`] are decoded and none holding more than [`MAX_RECORD_VALUES`]
/// JSON values (the rest count as invalid): what a delivery costs is bounded by those, not by how
/// many values a local process packs into a body.
pub fn decode(body: &[u8], received: EpochSeconds) -> Decoded {
    use serde::Deserializer as _;
    let mut out = Decoded::default();
    let mut json = serde_json::Deserializer::from_slice(body);
    let read = json
        .deserialize_seq(Elements {
            out: &mut out,
            received,
        })
        .and_then(|()| json.end());
    if read.is_err() {
        return Decoded {
            invalid: 1,
            ..Decoded::default()
        };
    }
    out
}

/// Most records decoded from one delivery: Lambda sends at most `maxItems` (10,000 at most).
pub const MAX_RECORDS_PER_DELIVERY: usize = 10_000;
/// Most JSON values in one record decoded (its fields become a tree of values): Lambda's hold
/// fewer than a hundred (a `runtimeDone` with its spans). Long strings are one value each.
pub const MAX_RECORD_VALUES: usize = 4_096;

/// Bytes one JSON value of a record may take while the record is read (the value and its key
/// in the record's map, whatever its kind; its text is counted with the record's).
pub const VALUE_BYTES: usize = 128;

/// The fewest slots a growing list has once it holds anything (Rust's `Vec`, for items of up
/// to 1 KiB).
const MIN_LIST_SLOTS: usize = 4;

/// What decoding a body may hold at most, besides the body itself (see [`decode_cost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCost {
    /// The records: at most one per element of the array (kept in a list that grows by
    /// doubling, from 4 slots), and the strings they keep, copied from the body (so at most
    /// its size).
    pub records: usize,
    /// The one record being read, given back once decoded: its text and a map of at most
    /// [`MAX_RECORD_VALUES`] values (a value takes at least two bytes of text).
    pub scratch: usize,
}

impl DecodeCost {
    /// Both.
    pub fn total(self) -> usize {
        self.records.saturating_add(self.scratch)
    }
}

/// What decoding `body` may hold at most, found from its separators without reading it, so
/// that the bytes can be reserved before [`decode`] allocates them (pure).
pub fn decode_cost(body: &[u8]) -> DecodeCost {
    let elements = crate::json_scan::array_elements(body);
    let records = elements
        .count
        .min(MAX_RECORDS_PER_DELIVERY)
        .next_power_of_two()
        .max(MIN_LIST_SLOTS);
    let values = (elements.largest / 2 + 1).min(MAX_RECORD_VALUES);
    DecodeCost {
        records: records
            .saturating_mul(std::mem::size_of::<Event>())
            .saturating_add(body.len()),
        scratch: values
            .saturating_mul(VALUE_BYTES)
            .saturating_add(elements.largest),
    }
}

/// Whether the JSON `raw` holds at most `max` values (counted by their separators outside
/// strings, without reading it).
fn values_at_most(raw: &str, max: usize) -> bool {
    crate::json_scan::outside_strings(raw.as_bytes())
        .filter(|b| matches!(b, b',' | b'[' | b'{'))
        .nth(max)
        .is_none()
}

/// The delivery's array, decoded element by element as it is read.
struct Elements<'o> {
    out: &'o mut Decoded,
    received: EpochSeconds,
}

impl<'de> serde::de::Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of telemetry records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut read = 0_usize;
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            read += 1;
            if read > MAX_RECORDS_PER_DELIVERY || !values_at_most(element.get(), MAX_RECORD_VALUES)
            {
                self.out.invalid += 1;
                continue;
            }
            let mut fields = Fields::default();
            match decode_one(element.get(), self.received, &mut fields) {
                Some(event) => {
                    if matches!(event.record, Record::Other(_)) {
                        self.out.skipped += 1;
                    }
                    self.out.fields_ignored += fields.ignored;
                    self.out.events.push(event);
                }
                None => self.out.invalid += 1,
            }
        }
        Ok(())
    }
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
    // Records of the types we skip are not read at all: their shapes are not ours to check
    // (AWS's runtime core writes `platform.fault` with other field names than the rest).
    if !READ_TYPES.contains(&&*env.kind) {
        return Some(Event {
            time,
            record: Record::Other(env.kind.into_owned()),
        });
    }
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
            tenant_id: f.tenant_id(m),
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
            tenant_id: f.tenant_id(m),
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
            tenant_id: f.tenant_id(m),
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

#[cfg(test)]
mod tests;
