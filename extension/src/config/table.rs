//! Every variable declared once, in `variables!` (below): its name, and for one that takes one value
//! its default, what it accepts and how it is read; for each setting of [`Config`] its field,
//! and either the variable it is (read, defaulted and warned about from that declaration) or the
//! reader in `config.rs` that builds it (variables whose reading depends on another, or that
//! take lists). [`Config`], its `Default`, the order of reading, the names in [`vars`] and the
//! list the README's table is checked against are all made from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    ConfigWarning, DEFAULT_ADDRESS_FILE, DEFAULT_BUFFER_BYTES, DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_LOG_LEVEL, DEFAULT_OTLP_ADDRESS, DEFAULT_SHUTDOWN_MARGIN, DEFAULT_TELEMETRY_PORT,
    DEFAULT_UDP_ADDRESS, FLUSH_INTERVAL_MS_RANGE, FLUSH_TIMEOUT_MS_RANGE, MAX_AGE_MS_RANGE,
    Reading, SHUTDOWN_MARGIN_MS_RANGE, SpanDestination, warning,
};
use crate::enrich;
use crate::export::policy::{self, PolicyConfig, Strategy};
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

/// A variable as declared: what the README's table must say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its name.
    pub name: &'static str,
    /// Its default as the warnings name it (`None` for a variable read by hand).
    pub default: Option<String>,
    /// What it accepts (`None` for a variable read by hand).
    pub accepted: Option<Accepted>,
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
    /// A variable whose name `variables!` gives it.
    pub const fn new(
        default: T,
        accepted: Accepted,
        parse: fn(&str, Accepted) -> Option<T>,
        show: fn(&T) -> String,
    ) -> Self {
        Self {
            name: "",
            default,
            accepted,
            parse,
            show,
        }
    }

    /// Its name, and its default and what it accepts as the warnings (and the README) say them.
    pub fn declared(&self) -> Declared {
        Declared {
            name: self.name,
            default: Some((self.show)(&self.default)),
            accepted: Some(self.accepted),
        }
    }

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

/// Declares the settings and the variables (see the module's documentation). Three lists:
/// `config` (each setting of [`Config`], in the order they are read: `var(CONST: "NAME",
/// template)` for a setting that is one variable, `read(reader, default)` for one built by a
/// reader of `config.rs`), `single` (variables of one value those readers use: `CONST: type =
/// "NAME", template`) and `other` (names the readers read by hand: `CONST = "NAME"`).
macro_rules! variables {
    (
        config { $( $(#[doc = $doc:literal])+ $field:ident: $ty:ty = $how:ident $args:tt; )+ }
        single { $( $(#[doc = $sdoc:literal])+ $single:ident: $sty:ty = $sname:literal, $template:expr; )+ }
        other { $( $(#[doc = $odoc:literal])+ $other:ident = $oname:literal; )+ }
    ) => {
        $( variables!(@const $ty; $how $args); )+
        $(
            $(#[doc = $sdoc])+
            pub const $single: Var<$sty> = Var { name: $sname, ..$template };
        )+

        /// Environment variable names, each from its declaration.
        pub mod vars {
            $( variables!(@name $how $args); )+
            $( $(#[doc = $sdoc])+ pub const $single: &str = $sname; )+
            $( $(#[doc = $odoc])+ pub const $other: &str = $oname; )+
        }

        /// Every variable declared, in order: settings, then the variables of one value the
        /// readers use, then the names they read by hand.
        pub fn declared() -> Vec<Declared> {
            [ $( variables!(@declared $how $args), )+ ]
                .into_iter()
                .flatten()
                .chain([ $( $single.declared(), )+ ])
                .chain([ $( Declared { name: $oname, default: None, accepted: None }, )+ ])
                .collect()
        }

        /// The extension's settings.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $field: variables!(@default $how $args), )+ }
            }
        }

        impl Config {
            /// Every setting, read in the order declared, with one warning per rejected value.
            pub(super) fn read(r: &Reading<'_>, warnings: &mut Vec<ConfigWarning>) -> Self {
                Self { $( $field: variables!(@read r, warnings; $how $args), )+ }
            }
        }
    };
    (@const $ty:ty; var ($c:ident: $name:literal, $template:expr)) => {
        #[doc = concat!("`", $name, "`.")]
        pub const $c: Var<$ty> = Var { name: $name, ..$template };
    };
    (@const $ty:ty; read $args:tt) => {};
    (@name var ($c:ident: $name:literal, $template:expr)) => {
        #[doc = concat!("`", $name, "`.")]
        pub const $c: &str = $name;
    };
    (@name read $args:tt) => {};
    (@declared var ($c:ident: $name:literal, $template:expr)) => { Some($c.declared()) };
    (@declared read $args:tt) => { None };
    (@default var ($c:ident: $name:literal, $template:expr)) => { $c.default };
    (@default read ($reader:path, $default:expr)) => { $default };
    (@read $r:ident, $w:ident; var ($c:ident: $name:literal, $template:expr)) => {
        $c.read_or_default(&$r.lookup, $w)
    };
    (@read $r:ident, $w:ident; read ($reader:path, $default:expr)) => { $reader($r, $w) };
}

variables! {
    config {
        /// Where the OTLP/HTTP receiver listens: `None` when turned off.
        otlp_address: Option<SocketAddr> = read(super::otlp_address, Some(DEFAULT_OTLP_ADDRESS));
        /// Where to listen for daemon-protocol datagrams.
        udp_address: SocketAddr = read(super::udp_address, DEFAULT_UDP_ADDRESS);
        /// Port of the Telemetry API listener (bound on all interfaces, see `lambda::listener`);
        /// 9001 is the Runtime API's.
        telemetry_port: u16 = var(TELEMETRY_PORT: "XRAY_EXTENSION_TELEMETRY_PORT", Var::new(
            DEFAULT_TELEMETRY_PORT,
            Accepted::Text("1-65535, not 9001"),
            |s, _| s.trim().parse().ok().filter(|p| *p != 0 && *p != 9001),
            ToString::to_string,
        ));
        /// Log verbosity.
        log_level: LogLevel = read(super::log_level, DEFAULT_LOG_LEVEL);
        /// Log line format (Lambda's advanced logging controls: `Text` or `JSON`).
        log_format: LogFormat = var(LAMBDA_LOG_FORMAT: "AWS_LAMBDA_LOG_FORMAT", Var::new(
            LogFormat::Text,
            Accepted::Text("Text or JSON"),
            |s, _| LogFormat::parse(s),
            |f| match f {
                LogFormat::Text => "Text".into(),
                LogFormat::Json => "JSON".into(),
            },
        ));
        /// Bytes of documents held for export.
        buffer_bytes: usize = read(super::buffer_bytes, DEFAULT_BUFFER_BYTES);
        /// Longest a flush may hold the function.
        flush_timeout: Duration = var(FLUSH_TIMEOUT_MS: "XRAY_EXTENSION_FLUSH_TIMEOUT_MS", millis(
            DEFAULT_FLUSH_TIMEOUT,
            FLUSH_TIMEOUT_MS_RANGE,
        ));
        /// Time kept free before the SHUTDOWN deadline.
        shutdown_margin: Duration = var(SHUTDOWN_MARGIN_MS: "XRAY_EXTENSION_SHUTDOWN_MARGIN_MS", millis(
            DEFAULT_SHUTDOWN_MARGIN,
            SHUTDOWN_MARGIN_MS_RANGE,
        ));
        /// When to flush and whether the function waits.
        policy: PolicyConfig = read(super::policy, PolicyConfig {
            strategy: FLUSH_STRATEGY.default,
            interval: FLUSH_INTERVAL_MS.default,
            max_age: MAX_AGE_MS.default,
        });
        /// Where the bound UDP address is written for the wrapper script.
        address_file: PathBuf = read(super::address_file, PathBuf::from(DEFAULT_ADDRESS_FILE));
        /// Which certificates the X-Ray client trusts.
        tls_roots: TlsRoots = read(super::tls_roots, TLS_ROOTS.default);
        /// Where sampled OpenTelemetry spans go: `segments` or `otlp`.
        span_destination: SpanDestination = var(SPAN_DESTINATION: "XRAY_EXTENSION_SPAN_DESTINATION", Var::new(
            SpanDestination::Segments,
            Accepted::Text("segments or otlp"),
            |s, _| match s.trim().to_ascii_lowercase().as_str() {
                "segments" => Some(SpanDestination::Segments),
                "otlp" => Some(SpanDestination::Otlp),
                _ => None,
            },
            |d| match d {
                SpanDestination::Segments => "segments".into(),
                SpanDestination::Otlp => "otlp".into(),
            },
        ));
        /// Our own subsegments: `None` when turned off.
        enrich: Option<enrich::Settings> = read(super::enrichment, Some(enrich::Settings::default()));
        /// The EMF metrics lines: `None` when turned off.
        metrics: Option<emf::Settings> = read(super::metrics_lines, Some(emf::Settings::default()));
    }
    single {
        /// Allow a UDP (or OTLP/HTTP) address that is not loopback.
        ALLOW_NON_LOOPBACK: bool = "XRAY_EXTENSION_ALLOW_NON_LOOPBACK", flag(false);
        /// Our log level.
        LOG_LEVEL: LogLevel = "XRAY_EXTENSION_LOG_LEVEL", Var::new(
            DEFAULT_LOG_LEVEL,
            Accepted::Text("error, warn, info, debug or trace"),
            |s, _| LogLevel::parse(s),
            |l| l.as_str().to_owned(),
        );
        /// Lambda's advanced logging controls: the application log level, used when
        /// [`LOG_LEVEL`] is not set.
        LAMBDA_LOG_LEVEL: LogLevel = "AWS_LAMBDA_LOG_LEVEL", Var::new(
            DEFAULT_LOG_LEVEL,
            Accepted::Text("TRACE, DEBUG, INFO, WARN, ERROR or FATAL"),
            |s, _| LogLevel::parse_lambda(s),
            |l| l.as_str().to_owned(),
        );
        /// `end`, `background` or `adaptive`.
        FLUSH_STRATEGY: Strategy = "XRAY_EXTENSION_FLUSH_STRATEGY", Var::new(
            Strategy::Adaptive,
            Accepted::Text("end, background or adaptive"),
            |s, _| Strategy::parse(s),
            |s| s.as_str().to_owned(),
        );
        /// Adaptive threshold and least time between background sends, in milliseconds.
        FLUSH_INTERVAL_MS: Duration = "XRAY_EXTENSION_FLUSH_INTERVAL_MS", millis(
            policy::DEFAULT_FLUSH_INTERVAL,
            FLUSH_INTERVAL_MS_RANGE,
        );
        /// Maximum age of buffered documents in adaptive's busy mode, in milliseconds.
        MAX_AGE_MS: Duration = "XRAY_EXTENSION_MAX_AGE_MS", millis(policy::DEFAULT_MAX_AGE, MAX_AGE_MS_RANGE);
        /// `amazon` (compiled-in Amazon Trust Services roots) or `system` (China regions default
        /// to `system` in `config.rs`).
        TLS_ROOTS: TlsRoots = "XRAY_EXTENSION_TLS_ROOTS", Var::new(
            TlsRoots::Amazon,
            Accepted::Text("amazon or system"),
            |s, _| match s.trim().to_ascii_lowercase().as_str() {
                "amazon" => Some(TlsRoots::Amazon),
                "system" => Some(TlsRoots::System),
                _ => None,
            },
            |r| match r {
                TlsRoots::Amazon => "amazon".into(),
                TlsRoots::System => "system".into(),
            },
        );
        /// Turn our own subsegments on or off.
        ENRICH: bool = "XRAY_EXTENSION_ENRICH", flag(true);
        /// Minutes of wall time between periodic EMF metrics lines.
        METRICS_INTERVAL_MINUTES: Duration = "XRAY_EXTENSION_METRICS_INTERVAL_MINUTES", Var::new(
            emf::DEFAULT_INTERVAL,
            Accepted::Minutes(emf::INTERVAL_MINUTES_RANGE.0, emf::INTERVAL_MINUTES_RANGE.1),
            |s, accepted| {
                let Accepted::Minutes(lo, hi) = accepted else {
                    return None;
                };
                let m: u64 = s.trim().parse().ok()?;
                (lo..=hi).contains(&m).then(|| Duration::from_secs(m * 60))
            },
            |d| (d.as_secs() / 60).to_string(),
        );
    }
    other {
        /// UDP listen address for daemon-protocol datagrams.
        UDP_ADDRESS = "XRAY_EXTENSION_UDP_ADDRESS";
        /// The file the bound UDP address is written to, for the wrapper script.
        ADDRESS_FILE = "XRAY_EXTENSION_ADDRESS_FILE";
        /// OTLP/HTTP receiver address, or `off`.
        OTLP_ADDRESS = "XRAY_EXTENSION_OTLP_ADDRESS";
        /// Buffer limit in bytes.
        BUFFER_BYTES = "XRAY_EXTENSION_BUFFER_BYTES";
        /// Which built-in annotations to add.
        ENRICH_ANNOTATIONS = "XRAY_EXTENSION_ENRICH_ANNOTATIONS";
        /// Static annotations `key=value,...`.
        ANNOTATIONS = "XRAY_EXTENSION_ANNOTATIONS";
        /// CloudWatch namespace of the EMF metrics lines, or `none`.
        METRICS_NAMESPACE = "XRAY_EXTENSION_METRICS_NAMESPACE";
    }
}

/// A `true`/`false` variable.
const fn flag(default: bool) -> Var<bool> {
    Var::new(
        default,
        Accepted::Text("true or false"),
        |s, _| parse_bool(s),
        ToString::to_string,
    )
}

/// A variable of whole milliseconds in `range`.
const fn millis(default: Duration, (lo, hi): (u64, u64)) -> Var<Duration> {
    Var::new(
        default,
        Accepted::Millis(lo, hi),
        |s, accepted| {
            let Accepted::Millis(lo, hi) = accepted else {
                return None;
            };
            let ms: u64 = s.trim().parse().ok()?;
            (lo..=hi).contains(&ms).then(|| Duration::from_millis(ms))
        },
        |d| d.as_millis().to_string(),
    )
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}
