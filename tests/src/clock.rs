//! Wall-clock helpers: one anchor that maps monotonic [`Instant`]s to wall-clock times, so every
//! timestamp the emulator hands out (telemetry `time`, `deadlineMs`) agrees with the instants it
//! records, and ISO-8601 formatting of the kind the Telemetry API uses.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps [`Instant`]s to wall-clock time through a single anchor taken at creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    /// Anchors the clock now.
    pub fn new() -> Self {
        Self {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn system_time(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system - (self.instant - at)
        }
    }

    /// Milliseconds since the Unix epoch at `at` (the unit of `deadlineMs`).
    pub fn epoch_millis(&self, at: Instant) -> u64 {
        epoch_millis(self.system_time(at))
    }

    /// ISO-8601 UTC with milliseconds at `at`, e.g. `2022-10-12T00:00:15.064Z`.
    pub fn iso8601(&self, at: Instant) -> String {
        iso8601_millis(self.system_time(at))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn epoch_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch as a float, the unit of X-Ray `start_time`/`end_time`.
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Formats `time` as ISO-8601 UTC with millisecond precision: `YYYY-MM-DDTHH:MM:SS.mmmZ`
/// (times before the epoch as the epoch).
pub fn iso8601_millis(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time.max(UNIX_EPOCH))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds of `d` as a float, the unit of telemetry `durationMs`, rounded to 3 decimals.
pub fn millis_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // 2022-10-12T00:00:15.064Z, the Telemetry API documentation's example.
        assert_eq!(
            iso8601_millis(at(1_665_532_815, 64)),
            "2022-10-12T00:00:15.064Z"
        );
        // A leap day and the end of a century year that is a leap year.
        assert_eq!(
            iso8601_millis(at(951_782_400, 999)),
            "2000-02-29T00:00:00.999Z"
        );
        assert_eq!(
            iso8601_millis(at(1_767_225_599, 0)),
            "2025-12-31T23:59:59.000Z"
        );
        assert_eq!(
            iso8601_millis(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn clock_maps_instants_consistently() {
        let clock = Clock::new();
        let later = clock.instant + Duration::from_millis(1500);
        assert_eq!(
            clock.epoch_millis(later) - clock.epoch_millis(clock.instant),
            1500
        );
    }

    #[test]
    fn millis_are_rounded_to_microseconds() {
        assert!((millis_f64(Duration::from_micros(1_234_567)) - 1234.567).abs() < 1e-9);
    }
}
