//! Telemetry API subscriptions (contracts §2): the request's validation, with the ranges and
//! defaults of its buffering.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::Uri;
use serde_json::Value;

/// Accepted `schemaVersion` values.
pub const SCHEMA_VERSIONS: [&str; 3] = ["2022-07-01", "2022-12-13", "2025-01-29"];
/// Accepted `types`.
pub const TELEMETRY_TYPES: [&str; 3] = ["platform", "function", "extension"];
/// The only destination host Lambda accepts.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";
/// The destination hosts AWS's runtime core accepts on Lambda Managed Instances.
pub const MANAGED_INSTANCES_HOSTS: [&str; 2] = [SANDBOX_HOST, "sandbox"];
/// `buffering.timeoutMs` range and default.
pub const TIMEOUT_MS_RANGE: (u64, u64) = (25, 30_000);
/// See [`TIMEOUT_MS_RANGE`].
pub const TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// `buffering.maxBytes` range and default.
pub const MAX_BYTES_RANGE: (u64, u64) = (262_144, 1_048_576);
/// See [`MAX_BYTES_RANGE`].
pub const MAX_BYTES_DEFAULT: u64 = 262_144;
/// `buffering.maxItems` range and default.
pub const MAX_ITEMS_RANGE: (u64, u64) = (1_000, 10_000);
/// See [`MAX_ITEMS_RANGE`].
pub const MAX_ITEMS_DEFAULT: u64 = 10_000;

/// A validated subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `schemaVersion`.
    pub schema_version: String,
    /// `types`.
    pub types: Vec<String>,
    /// `buffering.timeoutMs`.
    pub timeout: Duration,
    /// `buffering.maxBytes`.
    pub max_bytes: u64,
    /// `buffering.maxItems`.
    pub max_items: u64,
    /// `destination.URI` as given.
    pub uri: String,
    /// The destination port (the name maps to loopback here).
    pub port: u16,
    /// The destination path and query.
    pub path: String,
}

impl Subscription {
    /// Whether records of `event_type` (`platform.start`, `function`, …) go to this subscriber.
    pub fn wants(&self, event_type: &str) -> bool {
        let category = event_type.split('.').next().unwrap_or(event_type);
        self.types.iter().any(|t| t == category)
    }

    /// Where deliveries go: `127.0.0.1:<port>`.
    pub fn destination(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// Validates a `PUT /2022-07-01/telemetry` body; the error is the `ValidationError` message.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, String> {
    parse_subscription_for(body, &[SANDBOX_HOST])
}

/// [`parse_subscription`] with the destination hosts accepted (Lambda Managed Instances also
/// take `sandbox`).
pub fn parse_subscription_for(body: &[u8], hosts: &[&str]) -> Result<Subscription, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let schema_version = value
        .get("schemaVersion")
        .and_then(Value::as_str)
        .ok_or("schemaVersion is required")?;
    if !SCHEMA_VERSIONS.contains(&schema_version) {
        return Err(format!(
            "schemaVersion {schema_version:?} is not one of {SCHEMA_VERSIONS:?}"
        ));
    }
    let types = value
        .get("types")
        .and_then(Value::as_array)
        .ok_or("types must be a list")?
        .iter()
        .map(|t| match t.as_str() {
            Some(t) if TELEMETRY_TYPES.contains(&t) => Ok(t.to_owned()),
            _ => Err(format!("type {t} is not one of {TELEMETRY_TYPES:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let buffering = value.get("buffering").cloned().unwrap_or(Value::Null);
    let field = |name: &str, (min, max): (u64, u64), default: u64| -> Result<u64, String> {
        match buffering.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!("buffering.{name} {v} is outside {min}..={max}")),
            },
        }
    };
    let timeout_ms = field("timeoutMs", TIMEOUT_MS_RANGE, TIMEOUT_MS_DEFAULT)?;
    let max_bytes = field("maxBytes", MAX_BYTES_RANGE, MAX_BYTES_DEFAULT)?;
    let max_items = field("maxItems", MAX_ITEMS_RANGE, MAX_ITEMS_DEFAULT)?;
    let destination = value.get("destination").ok_or("destination is required")?;
    let protocol = destination.get("protocol").and_then(Value::as_str);
    if protocol != Some("HTTP") {
        return Err(format!("destination.protocol {protocol:?} is not \"HTTP\""));
    }
    let uri_text = destination
        .get("URI")
        .and_then(Value::as_str)
        .ok_or("destination.URI is required")?;
    let uri: Uri = uri_text
        .parse()
        .map_err(|e| format!("destination.URI {uri_text:?} is invalid: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("destination.URI {uri_text:?} must use http"));
    }
    if !uri.host().is_some_and(|h| hosts.contains(&h)) {
        return Err(format!(
            "destination.URI host must be one of {hosts:?}, not {:?}",
            uri.host().unwrap_or("")
        ));
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Subscription {
        schema_version: schema_version.to_owned(),
        types,
        timeout: Duration::from_millis(timeout_ms),
        max_bytes,
        max_items,
        uri: uri_text.to_owned(),
        port: uri.port_u16().unwrap_or(80),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: &Value) -> Result<Subscription, String> {
        parse_subscription(value.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({
            "schemaVersion": "2022-12-13",
            "types": ["platform"],
            "buffering": {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25},
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/telemetry"},
        })
    }

    #[test]
    fn accepts_the_documented_subscription() {
        let sub = parse(&valid()).unwrap();
        assert_eq!(sub.port, 4243);
        assert_eq!(sub.path, "/telemetry");
        assert_eq!(sub.timeout, Duration::from_millis(25));
        assert!(sub.wants("platform.runtimeDone"));
        assert!(!sub.wants("function"));
    }

    #[test]
    fn buffering_defaults_apply_when_absent() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("buffering");
        let sub = parse(&body).unwrap();
        assert_eq!(sub.timeout, Duration::from_millis(TIMEOUT_MS_DEFAULT));
        assert_eq!(sub.max_items, MAX_ITEMS_DEFAULT);
    }

    #[test]
    fn rejects_out_of_range_and_unknown_values() {
        let cases = [
            ("/buffering/timeoutMs", json!(24)),
            ("/buffering/timeoutMs", json!(30_001)),
            ("/buffering/maxBytes", json!(262_143)),
            ("/buffering/maxItems", json!(10_001)),
            ("/schemaVersion", json!("2021-03-18")),
            ("/types", json!(["platform", "logs"])),
            ("/destination/protocol", json!("TCP")),
            ("/destination/URI", json!("http://localhost:4243/telemetry")),
            ("/destination/URI", json!("http://sandbox:4243")),
            (
                "/destination/URI",
                json!("https://sandbox.localdomain:4243"),
            ),
        ];
        for (pointer, bad) in cases {
            let mut body = valid();
            *body.pointer_mut(pointer).unwrap() = bad.clone();
            assert!(parse(&body).is_err(), "{pointer} = {bad} was accepted");
        }
    }

    #[test]
    fn managed_instances_also_take_the_host_sandbox() {
        let mut body = valid();
        body["destination"]["URI"] = json!("http://sandbox:4243/telemetry");
        let text = body.to_string();
        assert!(parse_subscription(text.as_bytes()).is_err());
        let sub = parse_subscription_for(text.as_bytes(), &MANAGED_INSTANCES_HOSTS).unwrap();
        assert_eq!(sub.port, 4243);
        body["destination"]["URI"] = json!("http://localhost:4243/telemetry");
        let text = body.to_string();
        assert!(parse_subscription_for(text.as_bytes(), &MANAGED_INSTANCES_HOSTS).is_err());
    }
}
