//! The counters as CloudWatch Embedded Metric Format (EMF) log lines: one JSON object per line
//! on stdout, which CloudWatch Logs turns into metrics with no API call and no permission.
//!
//! Each line carries what changed since the previous line (deltas; the post-runtime maximum is
//! the maximum within that interval), and only the metrics that changed. Lines are written every
//! [`Settings::interval`] of wall time while the environment runs and once at SHUTDOWN.
//! Rendering is pure ([`render`]); [`Reporter`] keeps the state between lines and writes them.

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{EMF_METRICS, EmfMetric, Metrics, Snapshot};

/// The CloudWatch namespace when `XRAY_EXTENSION_METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "XRayExtension";
/// The value of `XRAY_EXTENSION_METRICS_NAMESPACE` that turns the EMF lines off.
pub const DISABLED: &str = "none";
/// Longest namespace CloudWatch accepts.
pub const MAX_NAMESPACE_LEN: usize = 255;
/// Wall time between two periodic lines when `XRAY_EXTENSION_METRICS_INTERVAL_MINUTES` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_mins(5);
/// Accepted range for the interval, in minutes.
pub const INTERVAL_MINUTES_RANGE: (u64, u64) = (1, 1_440);
/// How often the periodic task looks at the wall clock.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// The one dimension of every metric.
pub const DIMENSION: &str = "FunctionName";
/// The dimension's value when Lambda gave no function name.
pub const UNKNOWN_FUNCTION: &str = "unknown";

/// The post-runtime time, in the lines whenever an invocation was held (the counters' metrics
/// are declared with them: [`crate::__counters`]).
pub mod names {
    /// Post-runtime time we added, summed over the interval.
    pub const POST_RUNTIME_TIME_SUM: &str = "PostRuntimeTimeSum";
    /// Longest post-runtime time we added to one invocation in the interval.
    pub const POST_RUNTIME_TIME_MAX: &str = "PostRuntimeTimeMax";
}

/// Where and how often the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// CloudWatch namespace.
    pub namespace: String,
    /// Wall time between periodic lines.
    pub interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// Whether `namespace` is one CloudWatch and the EMF client libraries accept: 1–255 characters
/// among letters, digits and `. - _ / # :`, not starting with the reserved `AWS/`.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.trim().is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && !namespace.starts_with("AWS/")
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/#:".contains(c))
}

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of things.
    Count,
    /// A duration.
    Milliseconds,
    /// A size.
    Bytes,
}

impl Unit {
    /// The name EMF uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Bytes => "Bytes",
        }
    }
}

/// What changed between two lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interval {
    /// Counter increments since the previous line.
    pub changes: Snapshot,
    /// Longest post-runtime time within the interval, in microseconds.
    pub post_runtime_us_max: u64,
}

impl Interval {
    /// The increments from `before` to `now`, with the interval's post-runtime maximum.
    pub fn between(before: &Snapshot, now: &Snapshot, post_runtime_us_max: u64) -> Self {
        Self {
            changes: now.since(before),
            post_runtime_us_max,
        }
    }

    /// The metrics that changed: name, unit, value.
    pub fn metrics(&self) -> Vec<(&'static str, Unit, Value)> {
        let c = &self.changes;
        let mut places: Vec<&EmfMetric> = EMF_METRICS.iter().collect();
        places.sort_by_key(|m| m.place);
        // Counters sharing a place are one metric: their sum.
        let mut sums: Vec<(u32, &'static str, Unit, u64)> = Vec::with_capacity(places.len());
        for m in places {
            let n = (m.read)(c);
            match sums.last_mut() {
                Some((place, _, _, sum)) if *place == m.place => *sum = sum.saturating_add(n),
                _ => sums.push((m.place, m.name, m.unit, n)),
            }
        }
        let mut out: Vec<_> = sums
            .into_iter()
            .filter(|&(_, _, _, n)| n > 0)
            .map(|(_, name, unit, n)| (name, unit, Value::from(n)))
            .collect();
        // Time is reported whenever an invocation was held, even if it added nothing.
        if c.post_runtime_count > 0 {
            out.push((
                names::POST_RUNTIME_TIME_SUM,
                Unit::Milliseconds,
                millis(c.post_runtime_us_sum),
            ));
            out.push((
                names::POST_RUNTIME_TIME_MAX,
                Unit::Milliseconds,
                millis(self.post_runtime_us_max),
            ));
        }
        out
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "microsecond totals stay far below 2^53"
)]
fn millis(us: u64) -> Value {
    Value::from(us as f64 / 1_000.0)
}

/// One EMF line (without the newline) for `interval`, timestamped `at`; `None` when nothing
/// changed. Pure.
pub fn render(
    namespace: &str,
    function_name: &str,
    interval: &Interval,
    at: SystemTime,
) -> Option<String> {
    let metrics = interval.metrics();
    if metrics.is_empty() {
        return None;
    }
    let timestamp_ms = u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .ok()?;
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() }))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    root.insert(DIMENSION.to_owned(), Value::from(function_name));
    for (name, _, value) in metrics {
        root.insert(name.to_owned(), value);
    }
    serde_json::to_string(&Value::Object(root)).ok()
}

#[derive(Debug)]
struct State {
    reported: Snapshot,
    at: SystemTime,
    finished: bool,
}

/// Keeps what the last line reported and writes the next one when it is due.
#[derive(Debug)]
pub struct Reporter {
    metrics: Arc<Metrics>,
    settings: Settings,
    function_name: String,
    state: Mutex<State>,
}

impl Reporter {
    /// A reporter whose first interval starts at `now`.
    pub fn new(
        metrics: Arc<Metrics>,
        settings: Settings,
        function_name: &str,
        now: SystemTime,
    ) -> Self {
        let function_name = if function_name.trim().is_empty() {
            UNKNOWN_FUNCTION
        } else {
            function_name
        };
        Self {
            metrics,
            settings,
            function_name: function_name.to_owned(),
            state: Mutex::new(State {
                reported: Snapshot::default(),
                at: now,
                finished: false,
            }),
        }
    }

    /// The next line when the interval has passed since the previous one (or when `force`d,
    /// at SHUTDOWN), and `None` when not due, nothing changed, or after [`Reporter::finish`].
    /// Advances the interval whenever it is due.
    pub fn next_line(&self, now: SystemTime, force: bool) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.finished {
            return None;
        }
        let due = if let Ok(elapsed) = now.duration_since(state.at) {
            elapsed >= self.settings.interval
        } else {
            // The wall clock went back: count the interval from here.
            state.at = now;
            false
        };
        if !due && !force {
            return None;
        }
        let current = self.metrics.snapshot();
        let interval = Interval::between(
            &state.reported,
            &current,
            self.metrics.take_post_runtime_window_max(),
        );
        state.reported = current;
        state.at = now;
        render(
            &self.settings.namespace,
            &self.function_name,
            &interval,
            now,
        )
    }

    /// Writes a line if one is due.
    pub fn tick(&self, now: SystemTime) {
        if let Some(line) = self.next_line(now, false) {
            write_line(&line);
        }
    }

    /// Writes the last line (at SHUTDOWN); no line follows it.
    pub fn finish(&self, now: SystemTime) {
        if let Some(line) = self.next_line(now, true) {
            write_line(&line);
        }
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finished = true;
    }
}

/// Looks at the wall clock every [`CHECK_EVERY`] and writes a line when one is due. Runs until
/// the process exits.
pub async fn run_periodic(reporter: Arc<Reporter>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        reporter.tick(SystemTime::now());
    }
}

/// One write of the whole line to stdout, where Lambda collects it for CloudWatch Logs. A failure
/// is ignored: metrics must never get in the way of anything else.
fn write_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(buf.as_bytes()).and_then(|()| out.flush()) {
        tracing::debug!(error = %e, "could not write the metrics line");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::add;

    const AT: Duration = Duration::from_millis(1_795_605_001_123);

    fn at(offset: Duration) -> SystemTime {
        UNIX_EPOCH + AT + offset
    }

    /// The EMF specification's rules for one line, checked on the parsed JSON: the `_aws`
    /// envelope with an integer millisecond `Timestamp` and a `CloudWatchMetrics` array of
    /// directives; each directive a valid `Namespace`, `Dimensions` as arrays of at most 30
    /// strings naming top-level string members, and 1–100 `Metrics` whose `Name` is a top-level
    /// number (or array of at most 100 numbers) and whose `Unit` is one CloudWatch accepts.
    fn assert_valid_emf(line: &str) -> Value {
        const UNITS: &[&str] = &[
            "Seconds",
            "Microseconds",
            "Milliseconds",
            "Bytes",
            "Kilobytes",
            "Megabytes",
            "Gigabytes",
            "Terabytes",
            "Bits",
            "Kilobits",
            "Megabits",
            "Gigabits",
            "Terabits",
            "Percent",
            "Count",
            "Bytes/Second",
            "Kilobytes/Second",
            "Megabytes/Second",
            "Gigabytes/Second",
            "Terabytes/Second",
            "Bits/Second",
            "Kilobits/Second",
            "Megabits/Second",
            "Gigabits/Second",
            "Terabits/Second",
            "Count/Second",
            "None",
        ];
        assert!(!line.contains('\n'), "one line");
        let v: Value = serde_json::from_str(line).expect("a JSON object");
        let root = v.as_object().expect("root is an object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        assert!(aws["Timestamp"].is_u64(), "Timestamp: integer epoch ms");
        let directives = aws["CloudWatchMetrics"].as_array().expect("array");
        assert!(!directives.is_empty());
        for d in directives {
            let ns = d["Namespace"].as_str().expect("Namespace string");
            assert!(valid_namespace(ns), "{ns}");
            for set in d["Dimensions"].as_array().expect("Dimensions array") {
                let set = set.as_array().expect("a dimension set is an array");
                assert!(set.len() <= 30);
                for key in set {
                    let key = key.as_str().expect("dimension key string");
                    let value = root[key]
                        .as_str()
                        .expect("dimension value: top-level string");
                    assert!(!value.trim().is_empty());
                }
            }
            let metrics = d["Metrics"].as_array().expect("Metrics array");
            assert!((1..=100).contains(&metrics.len()));
            for m in metrics {
                let name = m["Name"].as_str().expect("Name");
                assert!(!name.trim().is_empty() && name.len() <= 1024);
                match &root[name] {
                    Value::Number(n) => assert!(n.as_f64().is_some_and(f64::is_finite)),
                    Value::Array(a) => {
                        assert!(a.len() <= 100 && a.iter().all(Value::is_number));
                    }
                    other => panic!("{name}: {other:?} is not a number"),
                }
                if let Some(unit) = m.get("Unit") {
                    assert!(UNITS.contains(&unit.as_str().expect("Unit string")));
                }
            }
        }
        v
    }

    fn all_changed() -> Interval {
        Interval {
            changes: Snapshot {
                received: 10,
                sent: 9,
                spilled: 1,
                rejected: 2,
                unprocessed: 3,
                dropped_at_shutdown: 4,
                backend_timeout: 2,
                backend_other: 3,
                api_calls: 6,
                post_runtime_count: 2,
                post_runtime_us_sum: 1_250,
                kernel_dropped: 7,
                telemetry_dropped: 8,
                otlp_spans_rejected: 11,
                otlp_busy: 12,
                otlp_out_requests: 16,
                otlp_out_spans: 17,
                otlp_out_raw_bytes: 18,
                otlp_out_wire_bytes: 19,
                send_failed: 13,
                generated_refused: 14,
                task_failures: 15,
                ..Snapshot::default()
            },
            post_runtime_us_max: 1_000,
        }
    }

    #[test]
    fn a_line_is_valid_emf_with_every_metric_and_its_unit() {
        let line = render(
            "XRayExtension",
            "orders",
            &all_changed(),
            at(Duration::ZERO),
        )
        .unwrap();
        let v = assert_valid_emf(&line);
        assert_eq!(v["_aws"]["Timestamp"], 1_795_605_001_123_u64);
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "XRayExtension");
        assert_eq!(d["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(v["FunctionName"], "orders");
        let units: Vec<(String, String)> = d["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap().to_owned(),
                    m["Unit"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expect = [
            ("DocumentsReceived", "Count", json!(10)),
            ("DocumentsSent", "Count", json!(9)),
            ("DocumentsSpilled", "Count", json!(1)),
            ("DocumentsRejected", "Count", json!(2)),
            ("DocumentsUnprocessed", "Count", json!(3)),
            ("DocumentsDroppedAtShutdown", "Count", json!(4)),
            ("BackendErrors", "Count", json!(5)),
            ("ApiCalls", "Count", json!(6)),
            ("PostRuntimeInvocations", "Count", json!(2)),
            ("DatagramsDroppedByKernel", "Count", json!(7)),
            ("TelemetryRecordsDropped", "Count", json!(8)),
            ("OtlpSpansRejected", "Count", json!(11)),
            ("OtlpRequestsThrottled", "Count", json!(12)),
            ("OtlpRequestsSent", "Count", json!(16)),
            ("OtlpSpansSent", "Count", json!(17)),
            ("OtlpBytesUncompressed", "Bytes", json!(18)),
            ("OtlpBytesSent", "Bytes", json!(19)),
            ("DocumentsSendFailed", "Count", json!(13)),
            ("OwnDocumentsRefused", "Count", json!(14)),
            ("TasksFailed", "Count", json!(15)),
            (names::POST_RUNTIME_TIME_SUM, "Milliseconds", json!(1.25)),
            (names::POST_RUNTIME_TIME_MAX, "Milliseconds", json!(1.0)),
        ];
        assert_eq!(units.len(), expect.len());
        for (name, unit, value) in expect {
            assert!(
                units.contains(&(name.to_owned(), unit.to_owned())),
                "{name}"
            );
            assert_eq!(v[name], value, "{name}");
        }
    }

    #[test]
    fn each_place_is_one_metric_with_one_name_and_unit() {
        let mut places: Vec<&EmfMetric> = EMF_METRICS.iter().collect();
        places.sort_by_key(|m| m.place);
        let mut seen: Vec<(u32, &str, Unit)> = Vec::new();
        for m in places {
            match seen.last() {
                Some(&(place, name, unit)) if place == m.place => {
                    assert_eq!((name, unit), (m.name, m.unit), "place {place}");
                }
                last => {
                    assert_eq!(m.place, last.map_or(1, |l| l.0 + 1), "places follow on");
                    assert!(seen.iter().all(|s| s.1 != m.name), "{} twice", m.name);
                    seen.push((m.place, m.name, m.unit));
                }
            }
        }
        assert!(seen.len() >= 20, "{seen:?}");
    }

    #[test]
    fn counters_sharing_a_metric_are_reported_as_their_sum() {
        let mut i = Interval::default();
        i.changes.backend_timeout = 1;
        i.changes.backend_5xx = 2;
        i.changes.backend_other = 4;
        i.changes.sent = 9;
        assert_eq!(
            i.metrics(),
            [
                ("DocumentsSent", Unit::Count, json!(9)),
                ("BackendErrors", Unit::Count, json!(7)),
            ]
        );
    }

    #[test]
    fn only_what_changed_is_reported() {
        let mut i = Interval::default();
        assert_eq!(
            render("N", "f", &i, at(Duration::ZERO)),
            None,
            "no change, no line"
        );
        i.changes.sent = 3;
        let v = assert_valid_emf(&render("N", "f", &i, at(Duration::ZERO)).unwrap());
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["DocumentsSent"]);
        assert!(v.get("DocumentsReceived").is_none());
        // A held invocation reports its time even when it added none.
        i.changes.post_runtime_count = 1;
        let v = assert_valid_emf(&render("N", "f", &i, at(Duration::ZERO)).unwrap());
        assert_eq!(v[names::POST_RUNTIME_TIME_SUM], json!(0.0));
        assert_eq!(v[names::POST_RUNTIME_TIME_MAX], json!(0.0));
    }

    #[test]
    fn intervals_are_deltas() {
        let before = Snapshot {
            kernel_dropped: 2,
            received: 5,
            sent: 5,
            post_runtime_us_sum: 100,
            post_runtime_count: 1,
            ..Snapshot::default()
        };
        let now = Snapshot {
            kernel_dropped: 6,
            received: 12,
            sent: 5,
            post_runtime_us_sum: 400,
            post_runtime_count: 3,
            ..Snapshot::default()
        };
        let i = Interval::between(&before, &now, 250);
        assert_eq!(i.changes.received, 7);
        assert_eq!(i.changes.kernel_dropped, 4);
        assert_eq!(i.changes.sent, 0);
        assert_eq!(i.changes.post_runtime_us_sum, 300);
        assert_eq!(i.changes.post_runtime_count, 2);
        assert_eq!(i.post_runtime_us_max, 250);
    }

    #[test]
    fn namespaces() {
        for ok in ["XRayExtension", "my-team/lambda", "a.b_c#d:e"] {
            assert!(valid_namespace(ok), "{ok}");
        }
        let long = "n".repeat(MAX_NAMESPACE_LEN + 1);
        for bad in [
            "",
            " ",
            "a b",
            "AWS/Lambda",
            "caf\u{e9}",
            "a{b}",
            long.as_str(),
        ] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn reporter_writes_when_due_then_only_changes_and_nothing_after_finish() {
        let metrics = Arc::new(Metrics::default());
        let settings = Settings {
            namespace: "N".to_owned(),
            interval: Duration::from_mins(5),
        };
        let r = Reporter::new(metrics.clone(), settings, "", at(Duration::ZERO));
        add(&metrics.received, 4);
        assert_eq!(r.next_line(at(Duration::from_secs(299)), false), None);
        let line = r.next_line(at(Duration::from_mins(5)), false).unwrap();
        let v = assert_valid_emf(&line);
        assert_eq!(v["DocumentsReceived"], 4);
        assert_eq!(v[DIMENSION], UNKNOWN_FUNCTION);
        // The next interval counts from the line just written.
        add(&metrics.received, 1);
        metrics.observe_post_runtime(Duration::from_millis(3));
        assert_eq!(r.next_line(at(Duration::from_secs(599)), false), None);
        let v = assert_valid_emf(&r.next_line(at(Duration::from_mins(10)), false).unwrap());
        assert_eq!(v["DocumentsReceived"], 1);
        assert_eq!(v[names::POST_RUNTIME_TIME_MAX], json!(3.0));
        // Nothing changed: no line, even when due.
        assert_eq!(r.next_line(at(Duration::from_mins(15)), false), None);
        // SHUTDOWN writes whatever changed, due or not, and is the last line.
        add(&metrics.dropped_at_shutdown, 2);
        let v = assert_valid_emf(&r.next_line(at(Duration::from_secs(901)), true).unwrap());
        assert_eq!(v["DocumentsDroppedAtShutdown"], 2);
        assert!(v.get(names::POST_RUNTIME_TIME_MAX).is_none());
        r.finish(at(Duration::from_secs(902)));
        add(&metrics.sent, 1);
        assert_eq!(r.next_line(at(Duration::from_secs(5_000)), true), None);
    }

    #[test]
    fn a_clock_that_goes_back_restarts_the_interval() {
        let metrics = Arc::new(Metrics::default());
        let r = Reporter::new(
            metrics.clone(),
            Settings::default(),
            "f",
            at(Duration::from_secs(1_000)),
        );
        add(&metrics.sent, 1);
        assert_eq!(r.next_line(at(Duration::from_secs(10)), false), None);
        assert!(
            r.next_line(at(Duration::from_secs(10) + DEFAULT_INTERVAL), false)
                .is_some()
        );
    }
}
