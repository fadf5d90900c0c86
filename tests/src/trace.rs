//! X-Ray trace headers: `Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.

use std::fmt;
use std::time::SystemTime;

use crate::clock::epoch_millis;

/// An `X-Amzn-Trace-Id` header value, as Lambda passes it to the runtime
/// (`Lambda-Runtime-Trace-Id`), to extensions (`tracing.value`) and in telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    /// `1-<8 hex epoch seconds>-<24 hex>`.
    pub root: String,
    /// The parent segment id (16 hex), when present.
    pub parent: Option<String>,
    /// The sampling decision, when present.
    pub sampled: Option<bool>,
    /// Any further `key=value` fields (e.g. `Lineage`), kept in order.
    pub extra: Vec<(String, String)>,
}

impl TraceHeader {
    /// A fresh trace with a random root and parent, sampled.
    pub fn sampled() -> Self {
        Self::with_decision(true)
    }

    /// A fresh trace with a random root and parent, not sampled (`Sampled=0`).
    pub fn not_sampled() -> Self {
        Self::with_decision(false)
    }

    fn with_decision(sampled: bool) -> Self {
        Self {
            root: new_trace_id(),
            parent: Some(new_segment_id()),
            sampled: Some(sampled),
            extra: Vec::new(),
        }
    }

    /// Parses a header value; fields are `;`-separated `key=value` pairs, keys case-sensitive as
    /// X-Ray writes them. Returns `None` without a `Root`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = None;
        let mut extra = Vec::new();
        for field in value.split(';') {
            let Some((key, val)) = field.trim().split_once('=') else {
                continue;
            };
            match key {
                "Root" => root = Some(val.to_owned()),
                "Parent" => parent = Some(val.to_owned()),
                "Sampled" => {
                    sampled = match val {
                        "1" => Some(true),
                        "0" => Some(false),
                        _ => None,
                    };
                }
                _ => extra.push((key.to_owned(), val.to_owned())),
            }
        }
        Some(Self {
            root: root?,
            parent,
            sampled,
            extra,
        })
    }

    /// Whether the header says `Sampled=1`.
    pub fn is_sampled(&self) -> bool {
        self.sampled == Some(true)
    }
}

impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root={}", self.root)?;
        if let Some(parent) = &self.parent {
            write!(f, ";Parent={parent}")?;
        }
        if let Some(sampled) = self.sampled {
            write!(f, ";Sampled={}", u8::from(sampled))?;
        }
        for (key, val) in &self.extra {
            write!(f, ";{key}={val}")?;
        }
        Ok(())
    }
}

/// A new X-Ray trace id: `1-<8 hex epoch seconds>-<24 random hex>`.
pub fn new_trace_id() -> String {
    let secs = epoch_millis(SystemTime::now()) / 1000;
    format!("1-{secs:08x}-{}", random_hex(24))
}

/// A new 16-hex segment (or span) id.
pub fn new_segment_id() -> String {
    random_hex(16)
}

/// `len` random lowercase hex digits.
pub fn random_hex(len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| char::from(DIGITS[fastrand::usize(..16)]))
        .collect()
}

/// A random version-4 UUID in its canonical lowercase form.
pub fn new_uuid() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_be_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hex(s: &str) -> bool {
        s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn generated_ids_have_xray_shapes() {
        let root = new_trace_id();
        let parts: Vec<&str> = root.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert!(is_hex(parts[1]) && is_hex(parts[2]));
        let id = new_segment_id();
        assert_eq!(id.len(), 16);
        assert!(is_hex(&id));
    }

    #[test]
    fn round_trips_through_text() {
        let header = TraceHeader::sampled();
        let text = header.to_string();
        assert!(text.ends_with(";Sampled=1"));
        assert_eq!(TraceHeader::parse(&text), Some(header));
    }

    #[test]
    fn parses_lambda_headers_with_extra_fields() {
        let h = TraceHeader::parse(
            "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=0;Lineage=a:1",
        )
        .unwrap();
        assert_eq!(h.root, "1-5f35ae12-0c0fec141ab77a00bc047aa2");
        assert_eq!(h.parent.as_deref(), Some("2be948a625588e32"));
        assert!(!h.is_sampled());
        assert_eq!(h.extra, vec![("Lineage".to_owned(), "a:1".to_owned())]);
        assert!(TraceHeader::parse("Parent=2be948a625588e32").is_none());
    }

    #[test]
    fn uuids_are_version_4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}
