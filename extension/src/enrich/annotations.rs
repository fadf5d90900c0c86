//! Which annotations we add: the built-in ones users can switch off, and static ones from
//! configuration (`team=payments,tier=gold`). Pure.

use serde_json::Value;

/// At most this many static annotations, so ours stay well under X-Ray's 50 indexed
/// annotations per trace (the function's own code needs room too).
pub const MAX_STATIC_ANNOTATIONS: usize = 10;
/// Longest annotation key we accept.
pub const MAX_KEY_LEN: usize = 100;
// The value rule is X-Ray's, below both this module and the Telemetry model that checks tenants.
pub use crate::trace::{MAX_VALUE_LEN, is_indexable_string};

/// A built-in annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `ColdStart`: the caller waited for an init or restore.
    ColdStart,
    /// `FunctionName`.
    FunctionName,
    /// `FunctionVersion`.
    FunctionVersion,
    /// `InitType`: on-demand, provisioned-concurrency, snap-start, ...
    InitType,
    /// `ProactiveInit`: the environment was initialised long before its first invoke.
    ProactiveInit,
    /// `OutOfMemory`: peak memory reached the configured size.
    OutOfMemory,
    /// `SuppressedInit`: init failed or timed out and was retried inside the first invoke.
    SuppressedInit,
    /// `TenantId`: the tenant of a function with tenant isolation.
    TenantId,
}

impl Builtin {
    /// Every built-in annotation.
    pub const ALL: [Self; 8] = [
        Self::ColdStart,
        Self::FunctionName,
        Self::FunctionVersion,
        Self::InitType,
        Self::ProactiveInit,
        Self::OutOfMemory,
        Self::SuppressedInit,
        Self::TenantId,
    ];

    /// The annotation key.
    pub fn key(self) -> &'static str {
        match self {
            Self::ColdStart => "ColdStart",
            Self::FunctionName => "FunctionName",
            Self::FunctionVersion => "FunctionVersion",
            Self::InitType => "InitType",
            Self::ProactiveInit => "ProactiveInit",
            Self::OutOfMemory => "OutOfMemory",
            Self::SuppressedInit => "SuppressedInit",
            Self::TenantId => "TenantId",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.key().eq_ignore_ascii_case(s.trim()))
    }
}

/// A set of enabled built-in annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSet(u8);

impl BuiltinSet {
    /// All built-ins.
    pub fn all() -> Self {
        Self(Builtin::ALL.iter().fold(0, |set, b| set | Self::bit(*b)))
    }

    /// None.
    pub fn none() -> Self {
        Self(0)
    }

    /// Whether `b` is enabled.
    pub fn contains(self, b: Builtin) -> bool {
        self.0 & Self::bit(b) != 0
    }

    fn bit(b: Builtin) -> u8 {
        1 << (Builtin::ALL.iter().position(|x| *x == b).unwrap_or(0))
    }

    /// Parses `ColdStart,InitType` (case-insensitive), `all` or `none`. Unknown names are
    /// returned for a warning.
    pub fn parse(s: &str) -> (Self, Vec<String>) {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return (Self::all(), Vec::new());
        }
        if t.eq_ignore_ascii_case("none") || t.is_empty() {
            return (Self::none(), Vec::new());
        }
        let mut set = Self::none();
        let mut unknown = Vec::new();
        for name in t.split(',').filter(|n| !n.trim().is_empty()) {
            match Builtin::parse(name) {
                Some(b) => set.0 |= Self::bit(b),
                None => unknown.push(name.trim().to_owned()),
            }
        }
        (set, unknown)
    }
}

/// A static annotation pair that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {pair:?} ignored: {reason}")]
pub struct Rejected {
    /// The pair as written.
    pub pair: String,
    /// Why.
    pub reason: &'static str,
}

/// Parses `key=value` pairs separated by commas. Values `true`/`false` become booleans, numbers
/// become numbers, anything else a string. Keys: letters, digits and `_` (what X-Ray filter
/// expressions can name). Returns the accepted pairs and one [`Rejected`] per refused pair.
pub fn parse_static(s: &str) -> (Vec<(String, Value)>, Vec<Rejected>) {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut rejected = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let reject = |reason| Rejected {
            pair: pair.to_owned(),
            reason,
        };
        let Some((key, value)) = pair.split_once('=') else {
            rejected.push(reject("expected key=value"));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            rejected.push(reject("keys are 1-100 letters, digits or _"));
        } else if Builtin::parse(key).is_some() {
            rejected.push(reject("key is a built-in annotation"));
        } else if out.iter().any(|(k, _)| k == key) {
            rejected.push(reject("duplicate key"));
        } else if !is_indexable_string(value) {
            rejected.push(reject(
                "values are 1-1000 characters, no control characters",
            ));
        } else if out.len() == MAX_STATIC_ANNOTATIONS {
            rejected.push(reject("at most 10 static annotations"));
        } else {
            out.push((key.to_owned(), typed(value)));
        }
    }
    (out, rejected)
}

fn typed(value: &str) -> Value {
    if value.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if value.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    Value::String(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_pairs_are_typed() {
        let (pairs, rejected) =
            parse_static(" team=payments, tier = gold ,canary=true,weight=0.5,shard=7");
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(
            pairs,
            vec![
                ("team".to_owned(), json!("payments")),
                ("tier".to_owned(), json!("gold")),
                ("canary".to_owned(), json!(true)),
                ("weight".to_owned(), json!(0.5)),
                ("shard".to_owned(), json!(7)),
            ]
        );
    }

    #[test]
    fn bad_pairs_are_rejected_one_by_one() {
        let (pairs, rejected) =
            parse_static("ok=1,no-dash=x,novalue,=x,empty=,ColdStart=false,ok=2,inf=inf");
        assert_eq!(
            pairs,
            vec![
                ("ok".to_owned(), json!(1)),
                ("inf".to_owned(), json!("inf"))
            ]
        );
        let reasons: Vec<&str> = rejected.iter().map(|r| r.pair.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "no-dash=x",
                "novalue",
                "=x",
                "empty=",
                "ColdStart=false",
                "ok=2"
            ]
        );
    }

    #[test]
    fn static_annotations_are_capped() {
        let many: Vec<String> = (0..15).map(|i| format!("k{i}=v")).collect();
        let (pairs, rejected) = parse_static(&many.join(","));
        assert_eq!(pairs.len(), MAX_STATIC_ANNOTATIONS);
        assert_eq!(rejected.len(), 5);
    }

    #[test]
    fn indexable_strings_follow_x_rays_annotation_rules() {
        for ok in [
            "blue",
            "tenant-42",
            "a b",
            "ünïcödé",
            &"x".repeat(MAX_VALUE_LEN),
        ] {
            assert!(is_indexable_string(ok), "{ok:?}");
        }
        for bad in [
            "",
            "line\nbreak",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            &"x".repeat(MAX_VALUE_LEN + 1),
        ] {
            assert!(!is_indexable_string(bad), "{bad:?}");
        }
        // Counted in characters, not bytes.
        assert!(is_indexable_string(&"é".repeat(MAX_VALUE_LEN)));
    }

    #[test]
    fn builtin_selection() {
        let (set, unknown) = BuiltinSet::parse("coldstart, InitType,Bogus");
        assert!(set.contains(Builtin::ColdStart));
        assert!(set.contains(Builtin::InitType));
        assert!(!set.contains(Builtin::FunctionName));
        assert_eq!(unknown, ["Bogus"]);
        assert!(Builtin::ALL.iter().all(|b| BuiltinSet::all().contains(*b)));
        let (tenant, unknown) = BuiltinSet::parse("TenantId");
        assert!(unknown.is_empty());
        assert!(tenant.contains(Builtin::TenantId) && !tenant.contains(Builtin::ColdStart));
        assert!(
            Builtin::ALL
                .iter()
                .all(|b| !BuiltinSet::parse("none").0.contains(*b))
        );
    }
}
