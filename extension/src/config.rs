//! Configuration: environment variables into one typed [`Config`].
//!
//! Every setting has a named default. An invalid value never stops the extension: it yields one
//! [`ConfigWarning`] naming the variable and the accepted range, and the default is used.

use std::net::SocketAddr;
use std::time::Duration;

use crate::enrich::{self, annotations};
use crate::export::policy::{self, PolicyConfig, Strategy};
use crate::export::xray::TlsRoots;
use crate::logging::LogFormat;
pub use crate::logging::LogLevel;
use crate::metrics::emf;

/// Where the X-Ray SDKs send segment documents (the daemon's well-known address).
pub const DEFAULT_UDP_ADDRESS: &str = "127.0.0.1:2000";
/// Where the address the SDKs must send to is written for the layer's wrapper script (`/tmp` is
/// the one writable place in Lambda).
pub const DEFAULT_ADDRESS_FILE: &str = "/tmp/xray-extension-udp-address";
/// Where the OTLP/HTTP receiver listens (OpenTelemetry's default port); `off` turns it off.
pub const DEFAULT_OTLP_ADDRESS: &str = "127.0.0.1:4318";
/// Telemetry API listener port. Avoids 2000 (daemon), 3000 (Lambda Insights), 4243, 8126,
/// 9001 (Runtime API), 9002 and 9003 (other layers).
pub const DEFAULT_TELEMETRY_PORT: u16 = 4271;
/// Bytes of documents held for export before new ones are dropped.
pub const DEFAULT_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// The largest default buffer, whatever the function's memory size.
pub const MAX_DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Accepted range for the buffer limit.
pub const BUFFER_BYTES_RANGE: (usize, usize) = (64 * 1024, 256 * 1024 * 1024);
/// Longest time one flush may hold the function after its runtime is done.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);
/// Accepted range for the flush timeout, in milliseconds.
pub const FLUSH_TIMEOUT_MS_RANGE: (u64, u64) = (10, 30_000);
/// Time kept free before the SHUTDOWN deadline so we exit before Lambda kills us.
pub const DEFAULT_SHUTDOWN_MARGIN: Duration = Duration::from_millis(200);
/// Accepted range for the shutdown margin, in milliseconds.
pub const SHUTDOWN_MARGIN_MS_RANGE: (u64, u64) = (10, 1_500);
/// Accepted range for the flush interval, in milliseconds.
pub const FLUSH_INTERVAL_MS_RANGE: (u64, u64) = (100, 60_000);
/// Accepted range for the maximum buffered age, in milliseconds.
pub const MAX_AGE_MS_RANGE: (u64, u64) = (100, 300_000);
/// Default log level.
pub const DEFAULT_LOG_LEVEL: LogLevel = LogLevel::Info;

/// Environment variable names, in one place so the README table and the code agree.
pub mod vars {
    /// UDP listen address for daemon-protocol datagrams.
    pub const UDP_ADDRESS: &str = "XRAY_EXTENSION_UDP_ADDRESS";
    /// The file the bound UDP address is written to, for the wrapper script.
    pub const ADDRESS_FILE: &str = "XRAY_EXTENSION_ADDRESS_FILE";
    /// OTLP/HTTP receiver address, or `off`.
    pub const OTLP_ADDRESS: &str = "XRAY_EXTENSION_OTLP_ADDRESS";
    /// Allow a UDP address that is not loopback.
    pub const ALLOW_NON_LOOPBACK: &str = "XRAY_EXTENSION_ALLOW_NON_LOOPBACK";
    /// Telemetry API listener port.
    pub const TELEMETRY_PORT: &str = "XRAY_EXTENSION_TELEMETRY_PORT";
    /// Log level.
    pub const LOG_LEVEL: &str = "XRAY_EXTENSION_LOG_LEVEL";
    /// Buffer limit in bytes.
    pub const BUFFER_BYTES: &str = "XRAY_EXTENSION_BUFFER_BYTES";
    /// Flush timeout in milliseconds.
    pub const FLUSH_TIMEOUT_MS: &str = "XRAY_EXTENSION_FLUSH_TIMEOUT_MS";
    /// Shutdown safety margin in milliseconds.
    pub const SHUTDOWN_MARGIN_MS: &str = "XRAY_EXTENSION_SHUTDOWN_MARGIN_MS";
    /// `end`, `background` or `adaptive`.
    pub const FLUSH_STRATEGY: &str = "XRAY_EXTENSION_FLUSH_STRATEGY";
    /// Adaptive threshold and least time between background sends, in milliseconds.
    pub const FLUSH_INTERVAL_MS: &str = "XRAY_EXTENSION_FLUSH_INTERVAL_MS";
    /// Maximum age of buffered documents in adaptive's busy mode, in milliseconds.
    pub const MAX_AGE_MS: &str = "XRAY_EXTENSION_MAX_AGE_MS";
    /// `amazon` (compiled-in Amazon Trust Services roots) or `system`.
    pub const TLS_ROOTS: &str = "XRAY_EXTENSION_TLS_ROOTS";
    /// Where sampled OpenTelemetry spans go: `segments` or `otlp`.
    pub const SPAN_DESTINATION: &str = "XRAY_EXTENSION_SPAN_DESTINATION";
    /// Turn our own subsegments on or off.
    pub const ENRICH: &str = "XRAY_EXTENSION_ENRICH";
    /// Which built-in annotations to add.
    pub const ENRICH_ANNOTATIONS: &str = "XRAY_EXTENSION_ENRICH_ANNOTATIONS";
    /// Static annotations `key=value,...`.
    pub const ANNOTATIONS: &str = "XRAY_EXTENSION_ANNOTATIONS";
    /// Lambda's advanced logging controls: `Text` or `JSON`.
    pub const LAMBDA_LOG_FORMAT: &str = "AWS_LAMBDA_LOG_FORMAT";
    /// Lambda's advanced logging controls: the application log level, used when
    /// [`LOG_LEVEL`] is not set.
    pub const LAMBDA_LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";
    /// CloudWatch namespace of the EMF metrics lines, or `none`.
    pub const METRICS_NAMESPACE: &str = "XRAY_EXTENSION_METRICS_NAMESPACE";
    /// Minutes of wall time between periodic EMF metrics lines.
    pub const METRICS_INTERVAL_MINUTES: &str = "XRAY_EXTENSION_METRICS_INTERVAL_MINUTES";
}

/// Where sampled OpenTelemetry spans go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpanDestination {
    /// As `T1S` documents in PutTraceSegments, with everything else: works on every account.
    #[default]
    Segments,
    /// Whole, to X-Ray's OTLP endpoint (`/v1/traces`): needs Transaction Search.
    Otlp,
}

/// The extension's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where to listen for daemon-protocol datagrams.
    pub udp_address: SocketAddr,
    /// Where the bound UDP address is written for the wrapper script.
    pub address_file: std::path::PathBuf,
    /// Where the OTLP/HTTP receiver listens: `None` when turned off.
    pub otlp_address: Option<SocketAddr>,
    /// Port of the Telemetry API listener (bound on all interfaces, see `lambda::listener`).
    pub telemetry_port: u16,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log line format.
    pub log_format: LogFormat,
    /// Bytes of documents held for export.
    pub buffer_bytes: usize,
    /// Longest a flush may hold the function.
    pub flush_timeout: Duration,
    /// Time kept free before the SHUTDOWN deadline.
    pub shutdown_margin: Duration,
    /// When to flush and whether the function waits.
    pub policy: PolicyConfig,
    /// Which certificates the X-Ray client trusts.
    pub tls_roots: TlsRoots,
    /// Where sampled OpenTelemetry spans go.
    pub span_destination: SpanDestination,
    /// Our own subsegments: `None` when turned off.
    pub enrich: Option<enrich::Settings>,
    /// The EMF metrics lines: `None` when turned off.
    pub metrics: Option<emf::Settings>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            udp_address: SocketAddr::from(([127, 0, 0, 1], 2000)),
            address_file: std::path::PathBuf::from(DEFAULT_ADDRESS_FILE),
            otlp_address: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            telemetry_port: DEFAULT_TELEMETRY_PORT,
            log_level: DEFAULT_LOG_LEVEL,
            log_format: LogFormat::Text,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            shutdown_margin: DEFAULT_SHUTDOWN_MARGIN,
            policy: PolicyConfig::default(),
            tls_roots: TlsRoots::Amazon,
            span_destination: SpanDestination::Segments,
            enrich: Some(enrich::Settings::default()),
            metrics: Some(emf::Settings::default()),
        }
    }
}

/// One rejected setting: the variable, what it held, and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is invalid ({accepted}); using the default {default}")]
pub struct ConfigWarning {
    /// The environment variable.
    pub variable: &'static str,
    /// Its rejected value.
    pub value: String,
    /// What would have been accepted.
    pub accepted: String,
    /// The default used instead.
    pub default: String,
}

impl Config {
    /// Builds the configuration from a variable lookup (`std::env::var` in production, a map in
    /// tests). Returns the configuration and one warning per rejected value.
    pub fn from_lookup<F>(lookup: F) -> (Self, Vec<ConfigWarning>)
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut warnings = Vec::new();
        let mut config = Self::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let allow_non_loopback = match get(vars::ALLOW_NON_LOOPBACK) {
            None => false,
            Some(v) => parse_bool(&v).unwrap_or_else(|| {
                warnings.push(warning(
                    vars::ALLOW_NON_LOOPBACK,
                    &v,
                    "true or false",
                    "false",
                ));
                false
            }),
        };
        if let Some(v) = get(vars::OTLP_ADDRESS) {
            match otlp_address(&v, allow_non_loopback) {
                Ok(addr) => config.otlp_address = addr,
                Err(w) => warnings.push(w),
            }
        }
        if let Some(v) = get(vars::UDP_ADDRESS) {
            match v.trim().parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() || allow_non_loopback => {
                    config.udp_address = addr;
                }
                Ok(_) => warnings.push(warning(
                    vars::UDP_ADDRESS,
                    &v,
                    "a loopback address unless XRAY_EXTENSION_ALLOW_NON_LOOPBACK=true",
                    DEFAULT_UDP_ADDRESS,
                )),
                Err(_) => warnings.push(warning(
                    vars::UDP_ADDRESS,
                    &v,
                    "ip:port, e.g. 127.0.0.1:2000",
                    DEFAULT_UDP_ADDRESS,
                )),
            }
        }
        if let Some(v) = get(vars::TELEMETRY_PORT) {
            match v.trim().parse::<u16>() {
                Ok(port) if port != 0 && port != 9001 => config.telemetry_port = port,
                _ => warnings.push(warning(
                    vars::TELEMETRY_PORT,
                    &v,
                    "1-65535, not 9001",
                    &DEFAULT_TELEMETRY_PORT.to_string(),
                )),
            }
        }
        (config.log_level, config.log_format) = logging(&get, &mut warnings);
        config.buffer_bytes = buffer_bytes(&get, &mut warnings);
        if let Some(d) = duration_ms(
            &get,
            vars::FLUSH_TIMEOUT_MS,
            FLUSH_TIMEOUT_MS_RANGE,
            DEFAULT_FLUSH_TIMEOUT,
            &mut warnings,
        ) {
            config.flush_timeout = d;
        }
        if let Some(d) = duration_ms(
            &get,
            vars::SHUTDOWN_MARGIN_MS,
            SHUTDOWN_MARGIN_MS_RANGE,
            DEFAULT_SHUTDOWN_MARGIN,
            &mut warnings,
        ) {
            config.shutdown_margin = d;
        }
        config.policy = flush_policy(&get, &mut warnings);
        config.address_file = address_file(&get);
        if let Some(v) = get(vars::TLS_ROOTS) {
            match v.trim().to_ascii_lowercase().as_str() {
                "amazon" => config.tls_roots = TlsRoots::Amazon,
                "system" => config.tls_roots = TlsRoots::System,
                _ => warnings.push(warning(vars::TLS_ROOTS, &v, "amazon or system", "amazon")),
            }
        } else if get("AWS_REGION").is_some_and(|r| r.starts_with("cn-")) {
            // China regions' endpoints are not certain to chain to Amazon's roots.
            config.tls_roots = TlsRoots::System;
        }
        if let Some(v) = get(vars::SPAN_DESTINATION) {
            match v.trim().to_ascii_lowercase().as_str() {
                "segments" => config.span_destination = SpanDestination::Segments,
                "otlp" => config.span_destination = SpanDestination::Otlp,
                _ => warnings.push(warning(
                    vars::SPAN_DESTINATION,
                    &v,
                    "segments or otlp",
                    "segments",
                )),
            }
        }
        config.enrich = enrichment(&get, &mut warnings);
        config.metrics = metrics_lines(&get, &mut warnings);
        (config, warnings)
    }
}

/// The default buffer for a function of `memory_mb` (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`): a
/// 32nd of its memory, at most [`MAX_DEFAULT_BUFFER_BYTES`] (4 MiB at 128 MB, 16 MiB from
/// 512 MB); [`DEFAULT_BUFFER_BYTES`] when the memory size is not known. Pure.
pub fn default_buffer_bytes(memory_mb: Option<u64>) -> usize {
    memory_mb.map_or(DEFAULT_BUFFER_BYTES, |mb| {
        let bytes = usize::try_from(mb.saturating_mul(1024 * 1024) / 32).unwrap_or(usize::MAX);
        bytes.clamp(BUFFER_BYTES_RANGE.0, MAX_DEFAULT_BUFFER_BYTES)
    })
}

/// `XRAY_EXTENSION_BUFFER_BYTES`, else the default for the function's memory size.
fn buffer_bytes(get: &impl Fn(&str) -> Option<String>, warnings: &mut Vec<ConfigWarning>) -> usize {
    let memory_mb = get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.trim().parse().ok());
    let default = default_buffer_bytes(memory_mb);
    let Some(v) = get(vars::BUFFER_BYTES) else {
        return default;
    };
    let (lo, hi) = BUFFER_BYTES_RANGE;
    match v.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => n,
        _ => {
            warnings.push(warning(
                vars::BUFFER_BYTES,
                &v,
                &format!("{lo}-{hi}"),
                &default.to_string(),
            ));
            default
        }
    }
}

/// `XRAY_EXTENSION_ADDRESS_FILE`, any path (trimmed), else the default.
fn address_file(get: &impl Fn(&str) -> Option<String>) -> std::path::PathBuf {
    get(vars::ADDRESS_FILE).map_or_else(
        || std::path::PathBuf::from(DEFAULT_ADDRESS_FILE),
        |v| std::path::PathBuf::from(v.trim()),
    )
}

fn flush_policy(
    get: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> PolicyConfig {
    let mut config = PolicyConfig::default();
    if let Some(v) = get(vars::FLUSH_STRATEGY) {
        match Strategy::parse(&v) {
            Some(s) => config.strategy = s,
            None => warnings.push(warning(
                vars::FLUSH_STRATEGY,
                &v,
                "end, background or adaptive",
                "adaptive",
            )),
        }
    }
    if let Some(d) = duration_ms(
        &get,
        vars::FLUSH_INTERVAL_MS,
        FLUSH_INTERVAL_MS_RANGE,
        policy::DEFAULT_FLUSH_INTERVAL,
        warnings,
    ) {
        config.interval = d;
    }
    if let Some(d) = duration_ms(
        &get,
        vars::MAX_AGE_MS,
        MAX_AGE_MS_RANGE,
        policy::DEFAULT_MAX_AGE,
        warnings,
    ) {
        config.max_age = d;
    }
    config
}

fn enrichment(
    get: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<enrich::Settings> {
    if let Some(v) = get(vars::ENRICH) {
        match parse_bool(&v) {
            Some(false) => return None,
            Some(true) => {}
            None => warnings.push(warning(vars::ENRICH, &v, "true or false", "true")),
        }
    }
    let mut settings = enrich::Settings::default();
    if let Some(v) = get(vars::ENRICH_ANNOTATIONS) {
        let (set, unknown) = annotations::BuiltinSet::parse(&v);
        settings.builtins = set;
        if !unknown.is_empty() {
            let keys: Vec<&str> = annotations::Builtin::ALL
                .map(annotations::Builtin::key)
                .into();
            let accepted = format!("all, none, or a list of {}", keys.join(", "));
            for name in unknown {
                warnings.push(warning(
                    vars::ENRICH_ANNOTATIONS,
                    &name,
                    &accepted,
                    "ignored",
                ));
            }
        }
    }
    if let Some(v) = get(vars::ANNOTATIONS) {
        let (pairs, rejected) = annotations::parse_static(&v);
        settings.static_annotations = pairs;
        for r in rejected {
            warnings.push(warning(vars::ANNOTATIONS, &r.pair, r.reason, "ignored"));
        }
    }
    Some(settings)
}

/// Our level: `XRAY_EXTENSION_LOG_LEVEL`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info; the
/// format: Lambda's `AWS_LAMBDA_LOG_FORMAT`.
fn logging(
    get: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> (LogLevel, LogFormat) {
    let ours = get(vars::LOG_LEVEL).and_then(|v| {
        let level = LogLevel::parse(&v);
        if level.is_none() {
            warnings.push(warning(
                vars::LOG_LEVEL,
                &v,
                "error, warn, info, debug or trace",
                "info",
            ));
        }
        level
    });
    let level = ours
        .or_else(|| {
            let v = get(vars::LAMBDA_LOG_LEVEL)?;
            let level = LogLevel::parse_lambda(&v);
            if level.is_none() {
                warnings.push(warning(
                    vars::LAMBDA_LOG_LEVEL,
                    &v,
                    "TRACE, DEBUG, INFO, WARN, ERROR or FATAL",
                    "info",
                ));
            }
            level
        })
        .unwrap_or(DEFAULT_LOG_LEVEL);
    let format = get(vars::LAMBDA_LOG_FORMAT).map_or(LogFormat::Text, |v| {
        LogFormat::parse(&v).unwrap_or_else(|| {
            warnings.push(warning(vars::LAMBDA_LOG_FORMAT, &v, "Text or JSON", "Text"));
            LogFormat::Text
        })
    });
    (level, format)
}

fn metrics_lines(
    get: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<emf::Settings> {
    let mut settings = emf::Settings::default();
    if let Some(v) = get(vars::METRICS_NAMESPACE) {
        let v = v.trim();
        if v.eq_ignore_ascii_case(emf::DISABLED) {
            return None;
        }
        if emf::valid_namespace(v) {
            v.clone_into(&mut settings.namespace);
        } else {
            warnings.push(warning(
                vars::METRICS_NAMESPACE,
                v,
                "none, or 1-255 letters, digits and . - _ / # :, not starting with AWS/",
                emf::DEFAULT_NAMESPACE,
            ));
        }
    }
    if let Some(v) = get(vars::METRICS_INTERVAL_MINUTES) {
        let (lo, hi) = emf::INTERVAL_MINUTES_RANGE;
        match v.trim().parse::<u64>() {
            Ok(m) if (lo..=hi).contains(&m) => settings.interval = Duration::from_secs(m * 60),
            _ => warnings.push(warning(
                vars::METRICS_INTERVAL_MINUTES,
                &v,
                &format!("{lo}-{hi} minutes"),
                &(emf::DEFAULT_INTERVAL.as_secs() / 60).to_string(),
            )),
        }
    }
    Some(settings)
}

fn duration_ms(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    (lo, hi): (u64, u64),
    default: Duration,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<Duration> {
    let v = get(variable)?;
    if let Ok(ms) = v.trim().parse::<u64>()
        && (lo..=hi).contains(&ms)
    {
        return Some(Duration::from_millis(ms));
    }
    warnings.push(warning(
        variable,
        &v,
        &format!("{lo}-{hi} milliseconds"),
        &default.as_millis().to_string(),
    ));
    None
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `off`, or an address (loopback unless allowed otherwise).
fn otlp_address(v: &str, allow_non_loopback: bool) -> Result<Option<SocketAddr>, ConfigWarning> {
    if v.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match v.trim().parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() || allow_non_loopback => Ok(Some(addr)),
        _ => Err(warning(
            vars::OTLP_ADDRESS,
            v,
            "off, or a loopback ip:port unless XRAY_EXTENSION_ALLOW_NON_LOOPBACK=true",
            DEFAULT_OTLP_ADDRESS,
        )),
    }
}

fn warning(variable: &'static str, value: &str, accepted: &str, default: &str) -> ConfigWarning {
    ConfigWarning {
        variable,
        value: value.to_owned(),
        accepted: accepted.to_owned(),
        default: default.to_owned(),
    }
}

/// A lookup over fixed `(variable, value)` pairs, standing in for the environment in tests.
#[cfg(test)]
pub(crate) fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
        Config::from_lookup(lookup_from(pairs))
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (config, warnings) = load(&[]);
        assert_eq!(config, Config::default());
        assert!(warnings.is_empty());
        assert_eq!(config.udp_address.to_string(), DEFAULT_UDP_ADDRESS);
    }

    #[test]
    fn valid_values_are_used() {
        let (config, warnings) = load(&[
            (vars::UDP_ADDRESS, "127.0.0.1:2999"),
            (vars::TELEMETRY_PORT, "4300"),
            (vars::LOG_LEVEL, "DEBUG"),
            (vars::BUFFER_BYTES, "1048576"),
            (vars::FLUSH_TIMEOUT_MS, "250"),
            (vars::SHUTDOWN_MARGIN_MS, "300"),
            (vars::FLUSH_STRATEGY, "Background"),
            (vars::FLUSH_INTERVAL_MS, "2500"),
            (vars::MAX_AGE_MS, "10000"),
            (vars::SPAN_DESTINATION, " OTLP "),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.span_destination, SpanDestination::Otlp);
        assert_eq!(config.udp_address.port(), 2999);
        assert_eq!(config.telemetry_port, 4300);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.buffer_bytes, 1_048_576);
        assert_eq!(config.flush_timeout, Duration::from_millis(250));
        assert_eq!(config.shutdown_margin, Duration::from_millis(300));
        assert_eq!(config.policy.strategy, Strategy::Background);
        assert_eq!(config.policy.interval, Duration::from_millis(2500));
        assert_eq!(config.policy.max_age, Duration::from_secs(10));
    }

    #[test]
    fn each_invalid_value_warns_once_and_keeps_the_default() {
        let (config, warnings) = load(&[
            (vars::UDP_ADDRESS, "localhost"),
            (vars::TELEMETRY_PORT, "9001"),
            (vars::LOG_LEVEL, "loud"),
            (vars::BUFFER_BYTES, "12"),
            (vars::FLUSH_TIMEOUT_MS, "5s"),
            (vars::SHUTDOWN_MARGIN_MS, "999999"),
            (vars::FLUSH_STRATEGY, "sometimes"),
            (vars::FLUSH_INTERVAL_MS, "5"),
            (vars::SPAN_DESTINATION, "xray"),
        ]);
        assert_eq!(config, Config::default());
        let named: Vec<&str> = warnings.iter().map(|w| w.variable).collect();
        assert_eq!(
            named,
            [
                vars::UDP_ADDRESS,
                vars::TELEMETRY_PORT,
                vars::LOG_LEVEL,
                vars::BUFFER_BYTES,
                vars::FLUSH_TIMEOUT_MS,
                vars::SHUTDOWN_MARGIN_MS,
                vars::FLUSH_STRATEGY,
                vars::FLUSH_INTERVAL_MS,
                vars::SPAN_DESTINATION,
            ]
        );
        assert!(warnings[4].to_string().contains("10-30000 milliseconds"));
    }

    #[test]
    fn non_loopback_needs_explicit_permission() {
        let (config, warnings) = load(&[(vars::UDP_ADDRESS, "0.0.0.0:2000")]);
        assert_eq!(config.udp_address.to_string(), DEFAULT_UDP_ADDRESS);
        assert_eq!(warnings.len(), 1);

        let (config, warnings) = load(&[
            (vars::UDP_ADDRESS, "0.0.0.0:2000"),
            (vars::ALLOW_NON_LOOPBACK, "true"),
        ]);
        assert_eq!(config.udp_address.to_string(), "0.0.0.0:2000");
        assert!(warnings.is_empty());
    }

    #[test]
    fn the_otlp_receiver_address_or_off() {
        let (config, _) = load(&[]);
        assert_eq!(
            config.otlp_address.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_OTLP_ADDRESS)
        );
        for (value, want, warned) in [
            ("127.0.0.1:4399", Some("127.0.0.1:4399"), false),
            ("OFF", None, false),
            (" off ", None, false),
            ("0.0.0.0:4318", Some(DEFAULT_OTLP_ADDRESS), true),
            ("localhost:4318", Some(DEFAULT_OTLP_ADDRESS), true),
        ] {
            let (config, warnings) = load(&[(vars::OTLP_ADDRESS, value)]);
            let got = config.otlp_address.map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{value}");
            assert_eq!(warnings.len(), usize::from(warned), "{value}");
        }
    }

    #[test]
    fn enrichment_settings() {
        let (config, warnings) = load(&[(vars::ENRICH, "false")]);
        assert!(config.enrich.is_none());
        assert!(warnings.is_empty());

        let (config, warnings) = load(&[
            (vars::ENRICH_ANNOTATIONS, "ColdStart,Nope"),
            (vars::ANNOTATIONS, "team=payments,bad key=1"),
        ]);
        let settings = config.enrich.unwrap();
        assert!(settings.builtins.contains(annotations::Builtin::ColdStart));
        assert!(!settings.builtins.contains(annotations::Builtin::InitType));
        assert_eq!(settings.static_annotations.len(), 1);
        let named: Vec<(&str, &str)> = warnings
            .iter()
            .map(|w| (w.variable, w.value.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (vars::ENRICH_ANNOTATIONS, "Nope"),
                (vars::ANNOTATIONS, "bad key=1")
            ]
        );
        // The warning names every built-in one could have meant.
        for b in annotations::Builtin::ALL {
            assert!(warnings[0].accepted.contains(b.key()), "{}", b.key());
        }
    }

    #[test]
    fn log_level_and_format_follow_lambda_unless_ours_is_set() {
        type Case<'a> = (&'a [(&'a str, &'a str)], LogLevel, LogFormat, usize);
        let cases: &[Case<'_>] = &[
            (&[], LogLevel::Info, LogFormat::Text, 0),
            (
                &[
                    (vars::LAMBDA_LOG_FORMAT, "JSON"),
                    (vars::LAMBDA_LOG_LEVEL, "DEBUG"),
                ],
                LogLevel::Debug,
                LogFormat::Json,
                0,
            ),
            (
                &[(vars::LAMBDA_LOG_LEVEL, "FATAL")],
                LogLevel::Error,
                LogFormat::Text,
                0,
            ),
            (
                &[(vars::LAMBDA_LOG_LEVEL, "DEBUG"), (vars::LOG_LEVEL, "warn")],
                LogLevel::Warn,
                LogFormat::Text,
                0,
            ),
            // Ours is invalid: one warning, then Lambda's level.
            (
                &[(vars::LAMBDA_LOG_LEVEL, "trace"), (vars::LOG_LEVEL, "loud")],
                LogLevel::Trace,
                LogFormat::Text,
                1,
            ),
            (
                &[
                    (vars::LAMBDA_LOG_LEVEL, "verbose"),
                    (vars::LAMBDA_LOG_FORMAT, "xml"),
                ],
                LogLevel::Info,
                LogFormat::Text,
                2,
            ),
        ];
        for (pairs, level, format, warned) in cases {
            let (config, warnings) = load(pairs);
            assert_eq!(
                (config.log_level, config.log_format, warnings.len()),
                (*level, *format, *warned),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn metrics_lines_settings() {
        let (config, warnings) = load(&[
            (vars::METRICS_NAMESPACE, "team/orders"),
            (vars::METRICS_INTERVAL_MINUTES, "15"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let m = config.metrics.unwrap();
        assert_eq!(m.namespace, "team/orders");
        assert_eq!(m.interval, Duration::from_mins(15));

        let (config, warnings) = load(&[(vars::METRICS_NAMESPACE, "None")]);
        assert!(config.metrics.is_none(), "none turns the lines off");
        assert!(warnings.is_empty());

        let (config, warnings) = load(&[
            (vars::METRICS_NAMESPACE, "AWS/Lambda"),
            (vars::METRICS_INTERVAL_MINUTES, "0"),
        ]);
        assert_eq!(config.metrics, Some(emf::Settings::default()));
        let named: Vec<&str> = warnings.iter().map(|w| w.variable).collect();
        assert_eq!(
            named,
            [vars::METRICS_NAMESPACE, vars::METRICS_INTERVAL_MINUTES]
        );
    }

    #[test]
    fn blank_values_count_as_unset() {
        let (config, warnings) = load(&[(vars::LOG_LEVEL, "  ")]);
        assert_eq!(config.log_level, DEFAULT_LOG_LEVEL);
        assert!(warnings.is_empty());
    }

    #[test]
    fn the_default_buffer_follows_the_memory_size() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(default_buffer_bytes(None), DEFAULT_BUFFER_BYTES);
        assert_eq!(default_buffer_bytes(Some(128)), 4 * MIB);
        assert_eq!(default_buffer_bytes(Some(256)), 8 * MIB);
        assert_eq!(default_buffer_bytes(Some(512)), 16 * MIB);
        assert_eq!(default_buffer_bytes(Some(10_240)), 16 * MIB);
        assert_eq!(default_buffer_bytes(Some(1)), BUFFER_BYTES_RANGE.0);
        let (config, _) = load(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")]);
        assert_eq!(config.buffer_bytes, 16 * MIB);
        let (config, warnings) = load(&[
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            (vars::BUFFER_BYTES, "12"),
        ]);
        assert_eq!(config.buffer_bytes, 8 * MIB);
        assert_eq!(warnings[0].default, (8 * MIB).to_string());
        let (config, _) = load(&[
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            (vars::BUFFER_BYTES, "1048576"),
        ]);
        assert_eq!(config.buffer_bytes, MIB);
    }
}
