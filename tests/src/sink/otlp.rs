//! OTLP documents (`T1S`/`T1U` + base64 of an `ExportTraceServiceRequest`), decoded as the X-Ray
//! service decodes them: with prost over the OTLP messages (a subset of `opentelemetry-proto`'s
//! `trace/v1`, declared here), independently of the extension's own wire-format reader.

use std::time::SystemTime;

use base64::Engine as _;
use prost::Message as _;

use super::validate::{MAX_DOCUMENT_BYTES, Rejection, check_trace_id};

/// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    /// Spans grouped by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    /// The resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Spans grouped by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    /// Schema URL.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Its attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    /// The instrumentation scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// The spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    /// Schema URL.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `Span` (the fields the tests read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// Empty or 8 bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    /// Its name.
    #[prost(string, tag = "5")]
    pub name: String,
    /// `SpanKind` as an integer.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    /// Start, nanoseconds since the epoch.
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    /// End, nanoseconds since the epoch.
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    /// Its attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`, the scalar cases (nested arrays and maps are skipped as unknown fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// `string_value`.
    #[prost(string, optional, tag = "1")]
    pub string_value: Option<String>,
    /// `bool_value`.
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    /// `int_value`.
    #[prost(int64, optional, tag = "3")]
    pub int_value: Option<i64>,
    /// `double_value`.
    #[prost(double, optional, tag = "4")]
    pub double_value: Option<f64>,
}

impl AnyValue {
    /// The value as text (strings unquoted).
    pub fn text(&self) -> String {
        if let Some(s) = &self.string_value {
            s.clone()
        } else if let Some(b) = self.bool_value {
            b.to_string()
        } else if let Some(i) = self.int_value {
            i.to_string()
        } else if let Some(d) = self.double_value {
            d.to_string()
        } else {
            String::new()
        }
    }
}

/// One span decoded from an OTLP document.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span's trace id in X-Ray form (`1-xxxxxxxx-yyyy…`).
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, when the span has a parent.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// `SpanKind` as an integer.
    pub kind: i32,
    /// Whether the document was `T1S` (sampled) rather than `T1U`.
    pub sampled: bool,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span's attributes, values as text.
    pub attributes: Vec<(String, String)>,
    /// Start, nanoseconds since the epoch.
    pub start_time_unix_nano: u64,
    /// End, nanoseconds since the epoch.
    pub end_time_unix_nano: u64,
    /// The document it came in, as submitted.
    pub document: String,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One span to encode with [`build_request`].
#[derive(Debug, Clone, Default)]
pub struct SpanSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its id, 16 hex digits.
    pub span_id: &'a str,
    /// Its parent's id, 16 hex digits.
    pub parent_span_id: &'a str,
    /// Start and end, nanoseconds since the epoch; `None`: the 5 ms before now.
    pub times: Option<(u64, u64)>,
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// A serialized `ExportTraceServiceRequest` of `spans` in the X-Ray trace `root`, under one
/// resource (`service.name` = `service`) and scope, each span at its times (by default, the
/// 5 ms before now).
pub fn build_request(root: &str, service: &str, spans: &[SpanSpec<'_>]) -> Vec<u8> {
    let trace_id = from_hex(&root.replacen("1-", "", 1).replace('-', ""));
    let now = u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX);
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: trace_id.clone(),
            span_id: from_hex(s.span_id),
            parent_span_id: from_hex(s.parent_span_id),
            name: s.name.to_owned(),
            kind: 1,
            start_time_unix_nano: s.times.map_or(now.saturating_sub(5_000_000), |t| t.0),
            end_time_unix_nano: s.times.map_or(now, |t| t.1),
            attributes: Vec::new(),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        string_value: Some(service.to_owned()),
                        ..AnyValue::default()
                    }),
                }],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: service.to_owned(),
                    version: "1".into(),
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Whether a submitted document is an OTLP document (by its prefix).
pub fn is_otlp(raw: &str) -> bool {
    raw.starts_with("T1S") || raw.starts_with("T1U")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Decodes an OTLP document into its spans, or says why the service would refuse it.
pub fn decode_document(raw: &str, now: SystemTime) -> Result<Vec<ReceivedSpan>, Rejection> {
    let reject = |error_code, message: String| Rejection {
        id: None,
        error_code,
        message,
    };
    if raw.len() > MAX_DOCUMENT_BYTES {
        return Err(reject(
            "SegmentTooLarge",
            format!("document is {} bytes", raw.len()),
        ));
    }
    let sampled = raw.starts_with("T1S");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.get(3..).unwrap_or(""))
        .map_err(|e| reject("InvalidOtlpDocument", format!("base64: {e}")))?;
    decode_request(&bytes, raw, sampled, now)
}

/// Decodes a serialized `ExportTraceServiceRequest` into its spans (recorded as coming in
/// `document`), or says why the service would refuse it.
pub fn decode_request(
    bytes: &[u8],
    document: &str,
    sampled: bool,
    now: SystemTime,
) -> Result<Vec<ReceivedSpan>, Rejection> {
    let reject = |error_code, message: String| Rejection {
        id: None,
        error_code,
        message,
    };
    let request = ExportTraceServiceRequest::decode(bytes)
        .map_err(|e| reject("InvalidOtlpDocument", format!("protobuf: {e}")))?;
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let service_name = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref().map(AnyValue::text))
        });
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    return Err(reject(
                        "InvalidOtlpDocument",
                        "span with a malformed trace or span id".to_owned(),
                    ));
                }
                let t = hex(&span.trace_id);
                let trace_id = format!("1-{}-{}", &t[..8], &t[8..]);
                check_trace_id(&trace_id, now)
                    .map_err(|message| reject("InvalidTraceId", message))?;
                spans.push(ReceivedSpan {
                    trace_id,
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    name: span.name.clone(),
                    kind: span.kind,
                    sampled,
                    service_name: service_name.clone(),
                    scope: ss
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value.as_ref().map(AnyValue::text).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    document: document.to_owned(),
                });
            }
        }
    }
    if spans.is_empty() {
        return Err(reject("InvalidOtlpDocument", "no spans".to_owned()));
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_body(name: &str) -> String {
        let path = format!(
            "{}/../extension/fixtures/datagrams/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let raw = std::fs::read_to_string(&path).unwrap();
        raw.split_once('\n').unwrap().1.to_owned()
    }

    #[test]
    fn captured_adot_documents_decode_into_their_spans() {
        // The fixtures' trace is from 2016: decode as of then.
        let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(0x5759_e988);
        let spans = decode_document(&fixture_body("adot_python_t1s.bin"), then).unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["load-order", "charge", "handler"]);
        assert!(spans.iter().all(|s| s.sampled));
        assert!(
            spans
                .iter()
                .all(|s| s.trace_id == "1-5759e988-bd862e3fe1be46a994272793")
        );
        let handler = &spans[2];
        assert_eq!(handler.parent_span_id.as_deref(), Some("53995c3f42cd8ad8"));
        assert_eq!(handler.service_name.as_deref(), Some("orders"));
        assert_eq!(handler.attribute("faas.invocation_id"), Some("c0ffee"));
        assert_eq!(
            spans[0].parent_span_id.as_deref(),
            Some(handler.span_id.as_str())
        );

        let unsampled = decode_document(&fixture_body("adot_python_t1u.bin"), then).unwrap();
        assert!(!unsampled[0].sampled);
    }

    #[test]
    fn undecodable_documents_are_refused() {
        let now = SystemTime::now();
        for raw in ["T1S!!", "T1SAAAA", "T1S"] {
            assert_eq!(
                decode_document(raw, now).unwrap_err().error_code,
                "InvalidOtlpDocument",
                "{raw}"
            );
        }
        // Valid, but its trace is older than 30 days.
        assert_eq!(
            decode_document(&fixture_body("adot_python_t1s.bin"), now)
                .unwrap_err()
                .error_code,
            "InvalidTraceId"
        );
    }
}
