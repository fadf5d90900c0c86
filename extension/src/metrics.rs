//! Counters, daemon-compatible, shared by the reader, the listener and the lifecycle loop.
//!
//! Plain atomics: cheap to bump from any task, read once for the shutdown log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Everything we count. Field names follow the daemon's self-telemetry where one exists.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Valid documents received over UDP (`SegmentsReceivedCount`).
    pub received: AtomicU64,
    /// Documents accepted by X-Ray (`SegmentsSentCount`).
    pub sent: AtomicU64,
    /// Documents dropped for lack of buffer or channel space (`SegmentsSpilloverCount`).
    pub spilled: AtomicU64,
    /// Datagrams rejected by the protocol checks (`SegmentsRejectedCount`).
    pub rejected: AtomicU64,
    /// Documents X-Ray returned in `UnprocessedTraceSegments`.
    pub unprocessed: AtomicU64,
    /// Documents still unsent when the shutdown deadline came.
    pub dropped_at_shutdown: AtomicU64,
    /// Documents we generated ourselves (enrichment).
    pub generated: AtomicU64,
    /// PutTraceSegments calls made.
    pub api_calls: AtomicU64,
    /// Calls that failed: timed out.
    pub backend_timeout: AtomicU64,
    /// Calls that failed: connection refused or reset.
    pub backend_refused: AtomicU64,
    /// Calls answered with a 4xx status.
    pub backend_4xx: AtomicU64,
    /// Calls answered with a 5xx status.
    pub backend_5xx: AtomicU64,
    /// Calls whose endpoint name did not resolve.
    pub backend_unknown_host: AtomicU64,
    /// Any other failure.
    pub backend_other: AtomicU64,
    /// Telemetry records that could not be decoded.
    pub telemetry_invalid: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
