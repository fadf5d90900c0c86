//! Configuration: environment variables into one typed [`Config`].
//!
//! Every setting has a named default. An invalid value never stops the extension: it yields one
//! [`ConfigWarning`] naming the variable and the accepted range, and the default is used.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

pub mod table;

use crate::enrich::{self, annotations};
use crate::export::policy::PolicyConfig;
use crate::export::xray::TlsRoots;
use crate::logging::LogFormat;
pub use crate::logging::LogLevel;
use crate::metrics::emf;

/// Where the X-Ray SDKs send segment documents (the daemon's well-known address).
pub const DEFAULT_UDP_ADDRESS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2000));
/// Where the address the SDKs must send to is written for the layer's wrapper script (`/tmp` is
/// the one writable place in Lambda).
pub const DEFAULT_ADDRESS_FILE: &str = "/tmp/xray-extension-udp-address";
/// Where the OTLP/HTTP receiver listens (OpenTelemetry's default port); `off` turns it off.
pub const DEFAULT_OTLP_ADDRESS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4318));
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
            udp_address: DEFAULT_UDP_ADDRESS,
            address_file: std::path::PathBuf::from(DEFAULT_ADDRESS_FILE),
            otlp_address: Some(DEFAULT_OTLP_ADDRESS),
            telemetry_port: table::TELEMETRY_PORT.default,
            log_level: table::LOG_LEVEL.default,
            log_format: table::LAMBDA_LOG_FORMAT.default,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            flush_timeout: table::FLUSH_TIMEOUT.default,
            shutdown_margin: table::SHUTDOWN_MARGIN.default,
            policy: PolicyConfig {
                strategy: table::FLUSH_STRATEGY.default,
                interval: table::FLUSH_INTERVAL.default,
                max_age: table::MAX_AGE.default,
            },
            tls_roots: table::TLS_ROOTS.default,
            span_destination: table::SPAN_DESTINATION.default,
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

        let allow_non_loopback = table::ALLOW_NON_LOOPBACK.read_or_default(&get, &mut warnings);
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
                    &DEFAULT_UDP_ADDRESS.to_string(),
                )),
                Err(_) => warnings.push(warning(
                    vars::UDP_ADDRESS,
                    &v,
                    "ip:port, e.g. 127.0.0.1:2000",
                    &DEFAULT_UDP_ADDRESS.to_string(),
                )),
            }
        }
        config.telemetry_port = table::TELEMETRY_PORT.read_or_default(&get, &mut warnings);
        (config.log_level, config.log_format) = logging(&get, &mut warnings);
        config.buffer_bytes = buffer_bytes(&get, &mut warnings);
        config.flush_timeout = table::FLUSH_TIMEOUT.read_or_default(&get, &mut warnings);
        config.shutdown_margin = table::SHUTDOWN_MARGIN.read_or_default(&get, &mut warnings);
        config.policy = PolicyConfig {
            strategy: table::FLUSH_STRATEGY.read_or_default(&get, &mut warnings),
            interval: table::FLUSH_INTERVAL.read_or_default(&get, &mut warnings),
            max_age: table::MAX_AGE.read_or_default(&get, &mut warnings),
        };
        config.address_file = address_file(&get);
        config.tls_roots = if get(vars::TLS_ROOTS).is_some() {
            table::TLS_ROOTS.read_or_default(&get, &mut warnings)
        } else if get("AWS_REGION").is_some_and(|r| r.starts_with("cn-")) {
            // China regions' endpoints are not certain to chain to Amazon's roots.
            TlsRoots::System
        } else {
            table::TLS_ROOTS.default
        };
        config.span_destination = table::SPAN_DESTINATION.read_or_default(&get, &mut warnings);
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

fn enrichment(
    get: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<enrich::Settings> {
    if !table::ENRICH.read_or_default(get, warnings) {
        return None;
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
    let level = table::LOG_LEVEL
        .read(get, warnings)
        .or_else(|| table::LAMBDA_LOG_LEVEL.read(get, warnings))
        .unwrap_or(DEFAULT_LOG_LEVEL);
    let format = table::LAMBDA_LOG_FORMAT.read_or_default(get, warnings);
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
    settings.interval = table::METRICS_INTERVAL.read_or_default(get, warnings);
    Some(settings)
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
            &DEFAULT_OTLP_ADDRESS.to_string(),
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

#[cfg(test)]
mod tests;
