//! Every variable that takes one value, declared once: its name, its default, what it accepts and
//! how it is read. [`super::Config::default`] and the warnings both take the default from here.
//! (Variables whose reading depends on another, or that take lists, are read in `config.rs`.)

use std::time::Duration;

use super::{
    ConfigWarning, DEFAULT_FLUSH_TIMEOUT, DEFAULT_LOG_LEVEL, DEFAULT_SHUTDOWN_MARGIN,
    DEFAULT_TELEMETRY_PORT, FLUSH_INTERVAL_MS_RANGE, FLUSH_TIMEOUT_MS_RANGE, MAX_AGE_MS_RANGE,
    SHUTDOWN_MARGIN_MS_RANGE, SpanDestination, vars, warning,
};
use crate::export::policy::{self, Strategy};
use crate::export::xray::TlsRoots;
use crate::logging::{LogFormat, LogLevel};
use crate::metrics::emf;

/// What a variable accepts, as its warning says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Said as it is.
    Text(&'static str),
    /// Whole milliseconds in this range (inclusive).
    Millis(u64, u64),
    /// Whole minutes in this range (inclusive).
    Minutes(u64, u64),
}

impl Accepted {
    fn describe(self) -> String {
        match self {
            Self::Text(t) => t.to_owned(),
            Self::Millis(lo, hi) => format!("{lo}-{hi} milliseconds"),
            Self::Minutes(lo, hi) => format!("{lo}-{hi} minutes"),
        }
    }
}

/// One environment variable of one value.
#[derive(Debug, Clone, Copy)]
pub struct Var<T: 'static> {
    /// Its name.
    pub name: &'static str,
    /// The value when it is unset, empty or invalid.
    pub default: T,
    /// What it accepts.
    pub accepted: Accepted,
    /// Reads a value (not empty); `None` when it is not accepted.
    parse: fn(&str, Accepted) -> Option<T>,
    /// The default as the warning names it.
    show: fn(&T) -> String,
}

impl<T: Copy> Var<T> {
    /// The value set, `None` when unset or empty, or when invalid (then with one warning).
    pub fn read(
        &self,
        get: &impl Fn(&str) -> Option<String>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<T> {
        let v = get(self.name)?;
        let value = (self.parse)(&v, self.accepted);
        if value.is_none() {
            warnings.push(warning(
                self.name,
                &v,
                &self.accepted.describe(),
                &(self.show)(&self.default),
            ));
        }
        value
    }

    /// The value set, else the default.
    pub fn read_or_default(
        &self,
        get: &impl Fn(&str) -> Option<String>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> T {
        self.read(get, warnings).unwrap_or(self.default)
    }
}

/// `XRAY_EXTENSION_ALLOW_NON_LOOPBACK`.
pub const ALLOW_NON_LOOPBACK: Var<bool> = flag(vars::ALLOW_NON_LOOPBACK, false);
/// `XRAY_EXTENSION_TELEMETRY_PORT`: 9001 is the Runtime API's.
pub const TELEMETRY_PORT: Var<u16> = Var {
    name: vars::TELEMETRY_PORT,
    default: DEFAULT_TELEMETRY_PORT,
    accepted: Accepted::Text("1-65535, not 9001"),
    parse: |s, _| s.trim().parse().ok().filter(|p| *p != 0 && *p != 9001),
    show: ToString::to_string,
};
/// `XRAY_EXTENSION_FLUSH_TIMEOUT_MS`.
pub const FLUSH_TIMEOUT: Var<Duration> = millis(
    vars::FLUSH_TIMEOUT_MS,
    DEFAULT_FLUSH_TIMEOUT,
    FLUSH_TIMEOUT_MS_RANGE,
);
/// `XRAY_EXTENSION_SHUTDOWN_MARGIN_MS`.
pub const SHUTDOWN_MARGIN: Var<Duration> = millis(
    vars::SHUTDOWN_MARGIN_MS,
    DEFAULT_SHUTDOWN_MARGIN,
    SHUTDOWN_MARGIN_MS_RANGE,
);
/// `XRAY_EXTENSION_FLUSH_STRATEGY`.
pub const FLUSH_STRATEGY: Var<Strategy> = Var {
    name: vars::FLUSH_STRATEGY,
    default: Strategy::Adaptive,
    accepted: Accepted::Text("end, background or adaptive"),
    parse: |s, _| Strategy::parse(s),
    show: |s| s.as_str().to_owned(),
};
/// `XRAY_EXTENSION_FLUSH_INTERVAL_MS`.
pub const FLUSH_INTERVAL: Var<Duration> = millis(
    vars::FLUSH_INTERVAL_MS,
    policy::DEFAULT_FLUSH_INTERVAL,
    FLUSH_INTERVAL_MS_RANGE,
);
/// `XRAY_EXTENSION_MAX_AGE_MS`.
pub const MAX_AGE: Var<Duration> =
    millis(vars::MAX_AGE_MS, policy::DEFAULT_MAX_AGE, MAX_AGE_MS_RANGE);
/// `XRAY_EXTENSION_TLS_ROOTS` (China regions default to `system` in `config.rs`).
pub const TLS_ROOTS: Var<TlsRoots> = Var {
    name: vars::TLS_ROOTS,
    default: TlsRoots::Amazon,
    accepted: Accepted::Text("amazon or system"),
    parse: |s, _| match s.trim().to_ascii_lowercase().as_str() {
        "amazon" => Some(TlsRoots::Amazon),
        "system" => Some(TlsRoots::System),
        _ => None,
    },
    show: |r| match r {
        TlsRoots::Amazon => "amazon".into(),
        TlsRoots::System => "system".into(),
    },
};
/// `XRAY_EXTENSION_SPAN_DESTINATION`.
pub const SPAN_DESTINATION: Var<SpanDestination> = Var {
    name: vars::SPAN_DESTINATION,
    default: SpanDestination::Segments,
    accepted: Accepted::Text("segments or otlp"),
    parse: |s, _| match s.trim().to_ascii_lowercase().as_str() {
        "segments" => Some(SpanDestination::Segments),
        "otlp" => Some(SpanDestination::Otlp),
        _ => None,
    },
    show: |d| match d {
        SpanDestination::Segments => "segments".into(),
        SpanDestination::Otlp => "otlp".into(),
    },
};
/// `XRAY_EXTENSION_ENRICH`.
pub const ENRICH: Var<bool> = flag(vars::ENRICH, true);
/// `XRAY_EXTENSION_LOG_LEVEL`.
pub const LOG_LEVEL: Var<LogLevel> = Var {
    name: vars::LOG_LEVEL,
    default: DEFAULT_LOG_LEVEL,
    accepted: Accepted::Text("error, warn, info, debug or trace"),
    parse: |s, _| LogLevel::parse(s),
    show: |l| l.as_str().to_owned(),
};
/// `AWS_LAMBDA_LOG_LEVEL`, used when [`LOG_LEVEL`] is not set.
pub const LAMBDA_LOG_LEVEL: Var<LogLevel> = Var {
    name: vars::LAMBDA_LOG_LEVEL,
    default: DEFAULT_LOG_LEVEL,
    accepted: Accepted::Text("TRACE, DEBUG, INFO, WARN, ERROR or FATAL"),
    parse: |s, _| LogLevel::parse_lambda(s),
    show: |l| l.as_str().to_owned(),
};
/// `AWS_LAMBDA_LOG_FORMAT`.
pub const LAMBDA_LOG_FORMAT: Var<LogFormat> = Var {
    name: vars::LAMBDA_LOG_FORMAT,
    default: LogFormat::Text,
    accepted: Accepted::Text("Text or JSON"),
    parse: |s, _| LogFormat::parse(s),
    show: |f| match f {
        LogFormat::Text => "Text".into(),
        LogFormat::Json => "JSON".into(),
    },
};
/// `XRAY_EXTENSION_METRICS_INTERVAL_MINUTES`.
pub const METRICS_INTERVAL: Var<Duration> = Var {
    name: vars::METRICS_INTERVAL_MINUTES,
    default: emf::DEFAULT_INTERVAL,
    accepted: Accepted::Minutes(emf::INTERVAL_MINUTES_RANGE.0, emf::INTERVAL_MINUTES_RANGE.1),
    parse: |s, accepted| {
        let Accepted::Minutes(lo, hi) = accepted else {
            return None;
        };
        let m: u64 = s.trim().parse().ok()?;
        (lo..=hi).contains(&m).then(|| Duration::from_secs(m * 60))
    },
    show: |d| (d.as_secs() / 60).to_string(),
};

/// A `true`/`false` variable.
const fn flag(name: &'static str, default: bool) -> Var<bool> {
    Var {
        name,
        default,
        accepted: Accepted::Text("true or false"),
        parse: |s, _| parse_bool(s),
        show: ToString::to_string,
    }
}

/// A variable of whole milliseconds in `range`.
const fn millis(name: &'static str, default: Duration, (lo, hi): (u64, u64)) -> Var<Duration> {
    Var {
        name,
        default,
        accepted: Accepted::Millis(lo, hi),
        parse: |s, accepted| {
            let Accepted::Millis(lo, hi) = accepted else {
                return None;
            };
            let ms: u64 = s.trim().parse().ok()?;
            (lo..=hi).contains(&ms).then(|| Duration::from_millis(ms))
        },
        show: |d| d.as_millis().to_string(),
    }
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}
