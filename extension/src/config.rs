//! Configuration: environment variables into one typed [`Config`].
//!
//! Every setting has a named default. An invalid value never stops the extension: it yields one
//! [`ConfigWarning`] naming the variable and the accepted range, and the default is used.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

pub mod table;

pub use table::{Config, vars};

use crate::enrich::{self, annotations};
use crate::export::policy::PolicyConfig;
use crate::export::xray::TlsRoots;
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

/// Where sampled OpenTelemetry spans go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpanDestination {
    /// As `T1S` documents in PutTraceSegments, with everything else: works on every account.
    #[default]
    Segments,
    /// Whole, to X-Ray's OTLP endpoint (`/v1/traces`): needs Transaction Search.
    Otlp,
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

/// What the readers of the settings read: the environment (a value that is only blanks counts
/// as unset), and whether a non-loopback address is allowed.
pub struct Reading<'a> {
    /// The variables.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// `XRAY_EXTENSION_ALLOW_NON_LOOPBACK`.
    pub allow_non_loopback: bool,
}

impl Reading<'_> {
    /// A variable's value, `None` when unset or blank.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }
}

impl Config {
    /// Builds the configuration from a variable lookup (`std::env::var` in production, a map in
    /// tests). Returns the configuration and one warning per rejected value.
    pub fn from_lookup<F>(lookup: F) -> (Self, Vec<ConfigWarning>)
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut warnings = Vec::new();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let allow_non_loopback = table::ALLOW_NON_LOOPBACK.read_or_default(&get, &mut warnings);
        let reading = Reading {
            lookup: &get,
            allow_non_loopback,
        };
        let config = Self::read(&reading, &mut warnings);
        (config, warnings)
    }
}

/// `XRAY_EXTENSION_OTLP_ADDRESS`: `off`, or an address (loopback unless allowed otherwise).
fn otlp_address(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> Option<SocketAddr> {
    let Some(v) = r.get(vars::OTLP_ADDRESS) else {
        return Some(DEFAULT_OTLP_ADDRESS);
    };
    if v.trim().eq_ignore_ascii_case("off") {
        return None;
    }
    match v.trim().parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() || r.allow_non_loopback => Some(addr),
        _ => {
            warnings.push(warning(
                vars::OTLP_ADDRESS,
                &v,
                "off, or a loopback ip:port unless XRAY_EXTENSION_ALLOW_NON_LOOPBACK=true",
                &DEFAULT_OTLP_ADDRESS.to_string(),
            ));
            Some(DEFAULT_OTLP_ADDRESS)
        }
    }
}

/// `XRAY_EXTENSION_UDP_ADDRESS`: an address, loopback unless allowed otherwise.
fn udp_address(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> SocketAddr {
    let Some(v) = r.get(vars::UDP_ADDRESS) else {
        return DEFAULT_UDP_ADDRESS;
    };
    match v.trim().parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() || r.allow_non_loopback => return addr,
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
    DEFAULT_UDP_ADDRESS
}

/// The flush policy's three variables.
fn policy(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> PolicyConfig {
    PolicyConfig {
        strategy: table::FLUSH_STRATEGY.read_or_default(&r.lookup, warnings),
        interval: table::FLUSH_INTERVAL_MS.read_or_default(&r.lookup, warnings),
        max_age: table::MAX_AGE_MS.read_or_default(&r.lookup, warnings),
    }
}

/// `XRAY_EXTENSION_TLS_ROOTS`, else `system` in China regions, else the default.
fn tls_roots(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> TlsRoots {
    if r.get(vars::TLS_ROOTS).is_some() {
        table::TLS_ROOTS.read_or_default(&r.lookup, warnings)
    } else if r
        .get("AWS_REGION")
        .is_some_and(|region| region.starts_with("cn-"))
    {
        // China regions' endpoints are not certain to chain to Amazon's roots.
        TlsRoots::System
    } else {
        table::TLS_ROOTS.default
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
fn buffer_bytes(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> usize {
    let memory_mb = r
        .get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .and_then(|v| v.trim().parse().ok());
    let default = default_buffer_bytes(memory_mb);
    let Some(v) = r.get(vars::BUFFER_BYTES) else {
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
fn address_file(r: &Reading<'_>, _: &mut Vec<ConfigWarning>) -> std::path::PathBuf {
    r.get(vars::ADDRESS_FILE).map_or_else(
        || std::path::PathBuf::from(DEFAULT_ADDRESS_FILE),
        |v| std::path::PathBuf::from(v.trim()),
    )
}

fn enrichment(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> Option<enrich::Settings> {
    if !table::ENRICH.read_or_default(&r.lookup, warnings) {
        return None;
    }
    let mut settings = enrich::Settings::default();
    if let Some(v) = r.get(vars::ENRICH_ANNOTATIONS) {
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
    if let Some(v) = r.get(vars::ANNOTATIONS) {
        let (pairs, rejected) = annotations::parse_static(&v);
        settings.static_annotations = pairs;
        for r in rejected {
            warnings.push(warning(vars::ANNOTATIONS, &r.pair, r.reason, "ignored"));
        }
    }
    Some(settings)
}

/// Our level: `XRAY_EXTENSION_LOG_LEVEL`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info.
fn log_level(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> LogLevel {
    table::LOG_LEVEL
        .read(&r.lookup, warnings)
        .or_else(|| table::LAMBDA_LOG_LEVEL.read(&r.lookup, warnings))
        .unwrap_or(DEFAULT_LOG_LEVEL)
}

fn metrics_lines(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> Option<emf::Settings> {
    let mut settings = emf::Settings::default();
    if let Some(v) = r.get(vars::METRICS_NAMESPACE) {
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
    settings.interval = table::METRICS_INTERVAL_MINUTES.read_or_default(&r.lookup, warnings);
    Some(settings)
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
