//! Our log lines on stderr (Lambda sends them to CloudWatch Logs), in the format the function
//! asked for with Lambda's advanced logging controls.
//!
//! - `Text` (`AWS_LAMBDA_LOG_FORMAT` unset or `Text`): `LEVEL message key=value ...`, no time
//!   (CloudWatch adds it), as the extension always wrote.
//! - `JSON`: one JSON object per line from `tracing-subscriber`'s JSON formatter: `timestamp`,
//!   `level`, `message` and our structured fields (`requestId` where one applies, and `tenantId`
//!   under tenant isolation: the keys Lambda's own JSON lines use) at the top
//!   level, as Powertools and the managed runtimes write theirs.
//!
//! Our events at the configured level; the libraries' (AWS SDK, hyper) at `warn` or quieter,
//! unless `trace`. At `trace` the request signing (`aws_sigv4`: canonical requests, which carry
//! the session token) stays at `warn`, and every line has AWS access key ids masked.

use std::borrow::Cow;
use std::io::{self, Write};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Our own events' target.
pub const OUR_TARGET: &str = "xray_extension";
/// Targets kept at `warn` even at `trace`: they print what signs a request.
pub const SIGNING_TARGETS: &[&str] = &["aws_sigv4"];
/// How AWS access key ids begin (long-term, temporary, and the other key kinds).
const ACCESS_KEY_PREFIXES: &[&str] = &["AKIA", "ASIA", "ABIA", "ACCA"];
/// Characters after the prefix in an access key id.
const ACCESS_KEY_REST: usize = 16;
/// What replaces those characters.
const MASK: &str = "****************";

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Lifecycle milestones, counters at shutdown.
    Info,
    /// Per-flush detail.
    Debug,
    /// Everything, including document contents.
    Trace,
}

impl LogLevel {
    /// `error` … `trace` (`warning` too), any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Self::Error),
            "warn" | "warning" => Some(Self::Warn),
            "info" => Some(Self::Info),
            "debug" => Some(Self::Debug),
            "trace" => Some(Self::Trace),
            _ => None,
        }
    }

    /// Lambda's `AWS_LAMBDA_LOG_LEVEL` values (`TRACE` … `ERROR`, `FATAL`), any case.
    pub fn parse_lambda(s: &str) -> Option<Self> {
        if s.trim().eq_ignore_ascii_case("fatal") {
            return Some(Self::Error);
        }
        Self::parse(s)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
            Self::Debug => tracing::Level::DEBUG,
            Self::Trace => tracing::Level::TRACE,
        }
    }
}

/// `AWS_LAMBDA_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain text lines (Lambda's default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `Text` or `JSON`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Installs the global subscriber: stderr, `format`, `level` for our events.
pub fn init(level: LogLevel, format: LogFormat) {
    let ours = level.as_tracing();
    let trace = level == LogLevel::Trace;
    let others = if trace {
        tracing::Level::TRACE
    } else {
        ours.min(tracing::Level::WARN)
    };
    let mut filter = tracing_subscriber::filter::Targets::new()
        .with_target(OUR_TARGET, ours)
        .with_default(others);
    for target in SIGNING_TARGETS {
        filter = filter.with_target(*target, ours.min(tracing::Level::WARN));
    }
    let writer = if trace {
        BoxMakeWriter::new(|| MaskingWriter(io::stderr()))
    } else {
        BoxMakeWriter::new(io::stderr)
    };
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false)
                    .without_time(),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false)
                    .with_writer(writer),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(filter)
        .init();
}

/// `line` with every AWS access key id's secret-looking part masked (`AKIA****************`).
/// Pure.
pub fn mask_access_key_ids(line: &str) -> Cow<'_, str> {
    let bytes = line.as_bytes();
    let is_key_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + 4 + ACCESS_KEY_REST <= bytes.len() {
        let starts_word = i == 0 || !is_key_char(bytes[i - 1]);
        let prefixed = ACCESS_KEY_PREFIXES
            .iter()
            .any(|p| bytes[i..].starts_with(p.as_bytes()));
        let rest = i + 4..i + 4 + ACCESS_KEY_REST;
        let ends_word = bytes.get(rest.end).is_none_or(|b| !is_key_char(*b));
        if starts_word
            && prefixed
            && bytes[rest.clone()].iter().all(|b| is_key_char(*b))
            && ends_word
        {
            let s = out.get_or_insert_with(|| String::with_capacity(line.len()));
            s.push_str(&line[copied..rest.start]);
            s.push_str(MASK);
            copied = rest.end;
            i = rest.end;
        } else {
            i += 1;
        }
    }
    match out {
        Some(mut s) => {
            s.push_str(&line[copied..]);
            Cow::Owned(s)
        }
        None => Cow::Borrowed(line),
    }
}

/// Masks access key ids in each formatted event (the formatter writes one event per call).
struct MaskingWriter<W>(W);

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(mask_access_key_ids(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_in_any_case() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse(" json "), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("Text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("xml"), None);
    }

    #[test]
    fn access_key_ids_are_masked_wherever_they_appear() {
        let cases = [
            (
                "Credential=AKIAIOSFODNN7EXAMPLE/20261130/us-east-1/xray/aws4_request",
                "Credential=AKIA****************/20261130/us-east-1/xray/aws4_request",
            ),
            (
                "access_key_id: \"ASIAQEXAMPLEKEYID123\", x ASIAQEXAMPLEKEYID124",
                "access_key_id: \"ASIA****************\", x ASIA****************",
            ),
            // Not an access key id: too short, too long, lower case, inside a longer word.
            ("AKIA123", "AKIA123"),
            ("AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"),
            ("akiaiosfodnn7example", "akiaiosfodnn7example"),
            ("XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"),
            ("no key here", "no key here"),
            ("", ""),
        ];
        for (line, want) in cases {
            assert_eq!(mask_access_key_ids(line), want, "{line}");
        }
        assert!(matches!(mask_access_key_ids("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_writer_masks_and_reports_the_whole_buffer_written() {
        let mut w = MaskingWriter(Vec::new());
        let line = b"TRACE signing key=AKIAIOSFODNN7EXAMPLE done\n";
        assert_eq!(w.write(line).unwrap(), line.len());
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "TRACE signing key=AKIA**************** done\n"
        );
    }
}
