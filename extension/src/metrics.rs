//! Counters, daemon-compatible, shared by the reader, the listener and the lifecycle loop.
//!
//! Plain atomics: cheap to bump from any task, read for the shutdown log line and for the
//! CloudWatch Embedded Metric Format lines ([`emf`]).

pub mod emf;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every counter, declared once, in the order of the counters line: its doc, its name (the
/// field of [`Metrics`] and of [`Snapshot`], and its key in the counters line) and, when the EMF
/// lines report it, `=> (place, "CloudWatch name", unit)`: its place among the EMF metrics and
/// what CloudWatch calls it (counters sharing a place are one metric, their sum). Adding a
/// counter is one entry here. `$mode` picks what [`__counters_apply`](crate::__counters_apply)
/// makes of the list.
#[doc(hidden)]
#[macro_export]
macro_rules! __counters {
    ($mode:ident $args:tt) => {
        $crate::__counters_apply! { $mode $args
            /// Valid documents received over UDP (`SegmentsReceivedCount`).
            received => (1, "DocumentsReceived", Count);
            /// Documents accepted by X-Ray (`SegmentsSentCount`).
            sent => (2, "DocumentsSent", Count);
            /// Documents dropped for lack of buffer or channel space (`SegmentsSpilloverCount`).
            spilled => (3, "DocumentsSpilled", Count);
            /// Datagrams rejected by the protocol checks (`SegmentsRejectedCount`).
            rejected => (4, "DocumentsRejected", Count);
            /// Documents X-Ray returned in `UnprocessedTraceSegments`.
            unprocessed => (5, "DocumentsUnprocessed", Count);
            /// Documents we generated ourselves (enrichment).
            generated;
            /// Documents still unsent when the shutdown deadline came.
            dropped_at_shutdown => (6, "DocumentsDroppedAtShutdown", Count);
            /// PutTraceSegments calls made.
            api_calls => (8, "ApiCalls", Count);
            /// Calls that failed: timed out.
            backend_timeout => (7, "BackendErrors", Count);
            /// Calls that failed: connection refused or reset.
            backend_refused => (7, "BackendErrors", Count);
            /// Calls answered with a 4xx status.
            backend_4xx => (7, "BackendErrors", Count);
            /// Calls answered with a 5xx status.
            backend_5xx => (7, "BackendErrors", Count);
            /// Calls whose endpoint name did not resolve.
            backend_unknown_host => (7, "BackendErrors", Count);
            /// Any other failure.
            backend_other => (7, "BackendErrors", Count);
            /// Datagrams the kernel dropped because the UDP receive buffer was full
            /// (`SO_RXQ_OVFL`; learnt with the next datagram read).
            kernel_dropped => (10, "DatagramsDroppedByKernel", Count);
            /// The UDP receive buffer the kernel granted, as it reports it (a setting, not a count).
            udp_receive_buffer_bytes;
            /// Telemetry records that could not be decoded.
            telemetry_invalid;
            /// OTLP/HTTP spans too large for one X-Ray document, dropped (`partial_success`).
            otlp_spans_rejected => (12, "OtlpSpansRejected", Count);
            /// OTLP/HTTP requests answered 503 because the ingest queue was full (the SDK retries).
            otlp_busy => (13, "OtlpRequestsThrottled", Count);
            /// Requests X-Ray's OTLP endpoint accepted (`XRAY_EXTENSION_SPAN_DESTINATION=otlp`).
            otlp_out_requests => (14, "OtlpRequestsSent", Count);
            /// Spans in those requests.
            otlp_out_spans => (15, "OtlpSpansSent", Count);
            /// Their bytes before gzip.
            otlp_out_raw_bytes => (19, "OtlpBytesUncompressed", Bytes);
            /// Their bytes as sent, gzip'd.
            otlp_out_wire_bytes => (20, "OtlpBytesSent", Bytes);
            /// Invocations whose post-runtime phase we held (see [`Metrics::observe_post_runtime`]).
            post_runtime_count => (9, "PostRuntimeInvocations", Count);
            /// Post-runtime time we added, summed, in microseconds.
            post_runtime_us_sum;
            /// Longest post-runtime time we added to one invocation, in microseconds.
            post_runtime_us_max;
            /// Fields of telemetry records that were present but unreadable (left out; the
            /// record was kept).
            telemetry_fields_ignored;
            /// Telemetry records read but dropped because the lifecycle loop did not take them
            /// in time.
            telemetry_dropped => (11, "TelemetryRecordsDropped", Count);
            /// Documents lost because their send task failed (not settled by X-Ray before it did).
            send_failed => (16, "DocumentsSendFailed", Count);
            /// Documents of ours not built because they stayed too large for X-Ray without their
            /// metadata (a total kept by the enricher, published by the lifecycle loop).
            generated_refused => (17, "OwnDocumentsRefused", Count);
            /// Our tasks that panicked or ended unexpectedly (each logged once, see `supervisor`).
            task_failures => (18, "TasksFailed", Count);
            /// Telemetry deliveries answered 503 because the budget's telemetry slice had no
            /// room (Lambda sends them again).
            telemetry_busy;
        }
    };
}

/// What [`__counters`](crate::__counters) makes of the list: the types and the EMF list
/// (`declare`), or the counters line (`event`).
#[doc(hidden)]
#[macro_export]
macro_rules! __counters_apply {
    (declare () $( $(#[doc = $doc:literal])+ $field:ident $(=> ($place:literal, $name:literal, $unit:ident))? ; )+) => {
        /// Everything we count. Field names follow the daemon's self-telemetry where one exists.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )+
            /// The longest post-runtime time since the last
            /// [`Metrics::take_post_runtime_window_max`].
            post_runtime_us_window_max: AtomicU64,
        }

        /// The counters, read at one moment (or what changed between two such moments).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( #[doc = concat!("[`Metrics::", stringify!($field), "`].")] pub $field: u64, )+
        }

        impl Metrics {
            /// Every counter, read now.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $field: get(&self.$field), )+ }
            }
        }

        impl Snapshot {
            /// What grew from `before` to `self`, counter by counter.
            #[must_use]
            pub fn since(&self, before: &Self) -> Self {
                Self { $( $field: self.$field.saturating_sub(before.$field), )+ }
            }
        }

        /// The counters the EMF lines report, in the order declared (a line orders them by
        /// place).
        pub const EMF_METRICS: &[EmfMetric] = &[
            $( $( EmfMetric {
                place: $place,
                name: $name,
                unit: emf::Unit::$unit,
                read: |s| s.$field,
            }, )? )+
        ];
    };
    (event ($level:ident, $metrics:expr, $($rest:tt)+) $( $(#[doc = $doc:literal])+ $field:ident $(=> $emf:tt)? ; )+) => {{
        let m: &$crate::metrics::Metrics = &$metrics;
        let get = $crate::metrics::get;
        ::tracing::event!(
            ::tracing::Level::$level,
            $( $field = get(&m.$field), )+
            peak_rss_kb = $crate::metrics::peak_rss_kb().unwrap_or(0),
            $($rest)+
        )
    }};
}

__counters!(declare());

/// One counter of the EMF lines.
#[derive(Debug, Clone, Copy)]
pub struct EmfMetric {
    /// Its place among the metrics of a line (counters sharing a place share the metric).
    pub place: u32,
    /// What CloudWatch calls it.
    pub name: &'static str,
    /// Its unit.
    pub unit: emf::Unit,
    /// Its value in a snapshot.
    pub read: fn(&Snapshot) -> u64,
}

impl Metrics {
    /// Records the post-runtime time we added to one invocation: from its `platform.runtimeDone`
    /// reaching us to our release of the event (our `/event/next`).
    pub fn observe_post_runtime(&self, added: Duration) {
        let us = u64::try_from(added.as_micros()).unwrap_or(u64::MAX);
        add(&self.post_runtime_count, 1);
        add(&self.post_runtime_us_sum, us);
        self.post_runtime_us_max.fetch_max(us, Ordering::Relaxed);
        self.post_runtime_us_window_max
            .fetch_max(us, Ordering::Relaxed);
    }

    /// The longest post-runtime time since the previous call (0 when none), and starts a new
    /// window: the per-interval maximum of the EMF lines.
    pub fn take_post_runtime_window_max(&self) -> u64 {
        self.post_runtime_us_window_max.swap(0, Ordering::Relaxed)
    }
}

/// One event at `$level` carrying every counter as a field (the one list of them in the log
/// lines, from [`__counters`](crate::__counters)), then the caller's own fields and message:
/// the counters line at SHUTDOWN, and the line for a task that stopped.
#[macro_export]
macro_rules! log_counters {
    ($level:ident, $metrics:expr, $($rest:tt)+) => {
        $crate::__counters! { event ($level, $metrics, $($rest)+) }
    };
}

/// This process's peak resident set size (`VmHWM`), for the counters.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a counter to a total kept elsewhere.
pub fn set(counter: &AtomicU64, n: u64) {
    counter.store(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Allows one log line per interval for anything an outsider can trigger, and says how many
/// were suppressed in between.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// [`LogLimiter::allow`] on a limiter shared by a receiver's requests, now (`None` when its
    /// lock is poisoned: no line rather than a panic).
    pub fn allow_shared(limiter: &std::sync::Mutex<Self>) -> Option<u64> {
        limiter.lock().ok()?.allow(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_runtime_sum_max_and_window() {
        let m = Metrics::default();
        m.observe_post_runtime(Duration::from_micros(1_500));
        m.observe_post_runtime(Duration::from_micros(300));
        assert_eq!(get(&m.post_runtime_count), 2);
        assert_eq!(get(&m.post_runtime_us_sum), 1_800);
        assert_eq!(get(&m.post_runtime_us_max), 1_500);
        assert_eq!(m.take_post_runtime_window_max(), 1_500);
        assert_eq!(
            m.take_post_runtime_window_max(),
            0,
            "a new window starts empty"
        );
        m.observe_post_runtime(Duration::from_micros(700));
        assert_eq!(m.take_post_runtime_window_max(), 700);
        assert_eq!(
            get(&m.post_runtime_us_max),
            1_500,
            "the lifetime maximum stays"
        );
    }

    /// Every counter set to its own value (its place in the counters line, from 1), and one
    /// post-runtime observation.
    fn every_counter_distinct() -> Metrics {
        let m = Metrics::default();
        let all = [
            &m.received,
            &m.sent,
            &m.spilled,
            &m.rejected,
            &m.unprocessed,
            &m.generated,
            &m.dropped_at_shutdown,
            &m.api_calls,
            &m.backend_timeout,
            &m.backend_refused,
            &m.backend_4xx,
            &m.backend_5xx,
            &m.backend_unknown_host,
            &m.backend_other,
            &m.kernel_dropped,
            &m.udp_receive_buffer_bytes,
            &m.telemetry_invalid,
            &m.otlp_spans_rejected,
            &m.otlp_busy,
            &m.otlp_out_requests,
            &m.otlp_out_spans,
            &m.otlp_out_raw_bytes,
            &m.otlp_out_wire_bytes,
            &m.post_runtime_count,
            &m.post_runtime_us_sum,
            &m.post_runtime_us_max,
            &m.telemetry_fields_ignored,
            &m.telemetry_dropped,
            &m.send_failed,
            &m.generated_refused,
            &m.task_failures,
            &m.telemetry_busy,
        ];
        for (n, counter) in (1..).zip(all) {
            set(counter, n);
        }
        m.observe_post_runtime(Duration::from_micros(40_500));
        m
    }

    /// A `Write` into a shared buffer, for capturing log lines.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The counters line, field by field and in order, as it was first written: dashboards and
    /// log queries read it.
    #[test]
    fn the_counters_line_is_pinned() {
        let m = every_counter_distinct();
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            crate::log_counters!(INFO, m, reason = "pin", "counters");
        });
        let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let (head, tail) = line.split_once(" peak_rss_kb=").unwrap();
        assert_eq!(
            head,
            " INFO counters received=1 sent=2 spilled=3 rejected=4 unprocessed=5 generated=6 \
             dropped_at_shutdown=7 api_calls=8 backend_timeout=9 backend_refused=10 backend_4xx=11 \
             backend_5xx=12 backend_unknown_host=13 backend_other=14 kernel_dropped=15 \
             udp_receive_buffer_bytes=16 telemetry_invalid=17 otlp_spans_rejected=18 otlp_busy=19 \
             otlp_out_requests=20 otlp_out_spans=21 otlp_out_raw_bytes=22 otlp_out_wire_bytes=23 \
             post_runtime_count=25 post_runtime_us_sum=40525 post_runtime_us_max=40500 \
             telemetry_fields_ignored=27 telemetry_dropped=28 send_failed=29 generated_refused=30 \
             task_failures=31 telemetry_busy=32"
        );
        let (rss, rest) = tail.split_once(' ').unwrap();
        assert!(rss.parse::<u64>().is_ok(), "{tail}");
        assert_eq!(rest, "reason=\"pin\"\n");
    }

    /// The EMF line of every metric, byte for byte, as it was first written.
    #[test]
    fn the_emf_line_is_pinned() {
        let m = std::sync::Arc::new(every_counter_distinct());
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_795_605_001_123);
        let reporter = emf::Reporter::new(m, emf::Settings::default(), "orders", at);
        let line = reporter.next_line(at, true).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"ApiCalls":8,"BackendErrors":69,"DatagramsDroppedByKernel":15,"#,
                r#""DocumentsDroppedAtShutdown":7,"DocumentsReceived":1,"DocumentsRejected":4,"DocumentsSendFailed":29,"DocumentsSent":2,"DocumentsSpilled":3,"DocumentsUnprocessed":5,"FunctionName":"orders","OtlpBytesSent":23,"OtlpBytesUncompressed":22,"OtlpRequestsSent":20,"OtlpRequestsThrottled":19,"OtlpSpansRejected":18,"OtlpSpansSent":21,"OwnDocumentsRefused":30,"PostRuntimeInvocations":25,"PostRuntimeTimeMax":40.5,"PostRuntimeTimeSum":40.525,"TasksFailed":31,"TelemetryRecordsDropped":28,"#,
                r#""_aws":{"CloudWatchMetrics":[{"Dimensions":[["FunctionName"]],"Metrics":["#,
                r#"{"Name":"DocumentsReceived","Unit":"Count"},"#,
                r#"{"Name":"DocumentsSent","Unit":"Count"},{"Name":"DocumentsSpilled","Unit":"Count"},"#,
                r#"{"Name":"DocumentsRejected","Unit":"Count"},{"Name":"DocumentsUnprocessed","Unit":"Count"},"#,
                r#"{"Name":"DocumentsDroppedAtShutdown","Unit":"Count"},{"Name":"BackendErrors","Unit":"Count"},"#,
                r#"{"Name":"ApiCalls","Unit":"Count"},{"Name":"PostRuntimeInvocations","Unit":"Count"},"#,
                r#"{"Name":"DatagramsDroppedByKernel","Unit":"Count"},{"Name":"TelemetryRecordsDropped","Unit":"Count"},"#,
                r#"{"Name":"OtlpSpansRejected","Unit":"Count"},{"Name":"OtlpRequestsThrottled","Unit":"Count"},"#,
                r#"{"Name":"OtlpRequestsSent","Unit":"Count"},{"Name":"OtlpSpansSent","Unit":"Count"},"#,
                r#"{"Name":"DocumentsSendFailed","Unit":"Count"},{"Name":"OwnDocumentsRefused","Unit":"Count"},"#,
                r#"{"Name":"TasksFailed","Unit":"Count"},{"Name":"OtlpBytesUncompressed","Unit":"Bytes"},"#,
                r#"{"Name":"OtlpBytesSent","Unit":"Bytes"},{"Name":"PostRuntimeTimeSum","Unit":"Milliseconds"},"#,
                r#"{"Name":"PostRuntimeTimeMax","Unit":"Milliseconds"}],"Namespace":"XRayExtension"}],"Timestamp":1795605001123}}"#,
            )
        );
    }

    #[test]
    fn limiter_allows_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), None);
    }
}
