//! The X-Ray daemon protocol: `{"format":"json","version":1}` + `\n` + one segment document,
//! or one OTLP document (`T1S`/`T1U` + base64, checked by [`crate::otlp`]).
//!
//! The header is checked exactly as the daemon checks it (`format` equal to `json` ignoring case,
//! `version` the integer 1, other keys ignored). Unlike the daemon, which forwards the body
//! unparsed, we validate the document enough that X-Ray will not reject it for its shape: a JSON
//! object with `name`, a 16-hex `id`, a well-formed `trace_id`, a numeric `start_time`, and
//! `end_time` or `in_progress: true`; a subsegment also needs `parent_id`. Pure: no I/O.

use std::borrow::Cow;

use serde::Deserialize;

// The document type lives below both parsers; its old path stays valid.
use crate::document::{Document, DocumentKind, MAX_DOCUMENT_BYTES};
use crate::otlp::{self, Form, OtlpError, Sampling};
use crate::trace::{SegmentId, TraceId};

/// Deepest nesting of arrays and objects we accept. serde_json skips unknown fields without a
/// depth limit, so we bound it ourselves; X-Ray documents are shallow.
pub const MAX_NESTING_DEPTH: usize = 64;
/// Receive buffer per datagram: the largest UDP payload (65,507 bytes) fits.
pub const MAX_DATAGRAM_BYTES: usize = 64 * 1024;

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No `\n` separates header and body.
    #[error("no newline after the header")]
    MissingNewline,
    /// The header is not `{"format":"json","version":1}`.
    #[error("bad header")]
    BadHeader,
    /// Nothing after the header.
    #[error("empty body")]
    EmptyBody,
    /// The body exceeds X-Ray's 64 KB document limit.
    #[error("document of {size} bytes exceeds {MAX_DOCUMENT_BYTES}")]
    TooLarge {
        /// Body size in bytes.
        size: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The body is not a JSON object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// The body is not valid JSON (syntax, truncation, nesting too deep).
    #[error("invalid JSON: {reason}")]
    InvalidJson {
        /// serde_json's description.
        reason: String,
    },
    /// Arrays and objects nested deeper than [`MAX_NESTING_DEPTH`].
    #[error("nested deeper than {MAX_NESTING_DEPTH}")]
    TooDeep,
    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong type or shape.
    #[error("invalid field {field}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
    },
    /// A `T1S`/`T1U` body that is not a well-formed OTLP document.
    #[error("invalid OTLP document: {reason}")]
    Otlp {
        /// What is wrong with it.
        reason: OtlpError,
    },
}

impl ProtocolError {
    /// A short, stable label for counters and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingNewline => "missing_newline",
            Self::BadHeader => "bad_header",
            Self::EmptyBody => "empty_body",
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::NotAnObject => "not_an_object",
            Self::InvalidJson { .. } => "invalid_json",
            Self::TooDeep => "too_deep",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::Otlp { reason } => reason.kind(),
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    format: Option<Cow<'a, str>>,
    version: Option<serde_json::Number>,
}

/// Any JSON value, read in full so that what serde would reject is rejected here too: escapes
/// are decoded (a lone surrogate fails) and numbers parsed (one out of `f64` range fails).
/// Skipping a value (`IgnoredAny`) checks neither.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Checked, A::Error> {
                while a.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Checked, A::Error> {
                while a.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

/// A field's value, read without failing on an unexpected type so the error can name the field.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            #[expect(
                clippy::cast_precision_loss,
                reason = "timestamps fit f64 exactly enough"
            )]
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v as f64))
            }
            #[expect(
                clippy::cast_precision_loss,
                reason = "timestamps fit f64 exactly enough"
            )]
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<Checked>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The fields we check; every other value is read in full ([`Checked`]).
#[derive(Default)]
struct Fields<'a> {
    id: Option<Scalar<'a>>,
    trace_id: Option<Scalar<'a>>,
    name: Option<Scalar<'a>>,
    start_time: Option<Scalar<'a>>,
    end_time: Option<Scalar<'a>>,
    in_progress: Option<Scalar<'a>>,
    kind: Option<Scalar<'a>>,
    parent_id: Option<Scalar<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a segment document")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Fields<'a>, A::Error> {
                let mut f = Fields::default();
                while let Some(key) = a.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "id" => &mut f.id,
                        "trace_id" => &mut f.trace_id,
                        "name" => &mut f.name,
                        "start_time" => &mut f.start_time,
                        "end_time" => &mut f.end_time,
                        "in_progress" => &mut f.in_progress,
                        "type" => &mut f.kind,
                        "parent_id" => &mut f.parent_id,
                        _ => {
                            a.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{key}`"
                        )));
                    }
                    *slot = Some(a.next_value::<Scalar<'a>>()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn required<'a, 'b>(
    v: Option<&'b Scalar<'a>>,
    field: &'static str,
) -> Result<&'b Scalar<'a>, ProtocolError> {
    v.ok_or(ProtocolError::MissingField { field })
}

fn as_str<'b>(v: &'b Scalar<'_>, field: &'static str) -> Result<&'b str, ProtocolError> {
    match v {
        Scalar::Str(s) => Ok(s),
        _ => Err(ProtocolError::InvalidField { field }),
    }
}

fn as_time(v: &Scalar<'_>, field: &'static str) -> Result<f64, ProtocolError> {
    match v {
        Scalar::Num(n) if n.is_finite() && *n > 0.0 => Ok(*n),
        _ => Err(ProtocolError::InvalidField { field }),
    }
}

/// Parses one datagram into a validated [`Document`], its body as received.
pub fn parse_datagram(datagram: &[u8]) -> Result<Document, ProtocolError> {
    parse_datagram_as(datagram, Form::Text)
}

/// Parses one datagram into a validated [`Document`], sampled spans held in `form`
/// ([`otlp::parse_document`]).
pub fn parse_datagram_as(datagram: &[u8], form: Form) -> Result<Document, ProtocolError> {
    let newline = datagram
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(ProtocolError::MissingNewline)?;
    check_header(&datagram[..newline])?;
    let body = &datagram[newline + 1..];
    if Sampling::of_body(body).is_some() {
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(ProtocolError::TooLarge { size: body.len() });
        }
        return otlp::parse_document(body, form).map_err(|reason| ProtocolError::Otlp { reason });
    }
    parse_document(body)
}

fn check_header(header: &[u8]) -> Result<(), ProtocolError> {
    let header: Header<'_> =
        serde_json::from_slice(header).map_err(|_| ProtocolError::BadHeader)?;
    let format_ok = header
        .format
        .is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let version_ok = header.version.is_some_and(|v| v.as_u64() == Some(1));
    if format_ok && version_ok {
        Ok(())
    } else {
        Err(ProtocolError::BadHeader)
    }
}

/// Validates one segment document (the body of a datagram, or one we built ourselves).
pub fn parse_document(body: &[u8]) -> Result<Document, ProtocolError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ProtocolError::EmptyBody);
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(ProtocolError::TooLarge { size: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|_| ProtocolError::NotUtf8)?;
    // serde would also accept a JSON array positionally; the document must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(ProtocolError::NotAnObject);
    }
    if exceeds_depth(text.as_bytes(), MAX_NESTING_DEPTH) {
        return Err(ProtocolError::TooDeep);
    }
    let fields: Fields<'_> =
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson {
            reason: e.to_string(),
        })?;

    let id = as_str(required(fields.id.as_ref(), "id")?, "id")?;
    let id = SegmentId::parse(id).map_err(|_| ProtocolError::InvalidField { field: "id" })?;
    let trace_id = as_str(required(fields.trace_id.as_ref(), "trace_id")?, "trace_id")?;
    let trace_id =
        TraceId::parse(trace_id).map_err(|_| ProtocolError::InvalidField { field: "trace_id" })?;
    let name = as_str(required(fields.name.as_ref(), "name")?, "name")?;
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ProtocolError::InvalidField { field: "name" });
    }
    as_time(
        required(fields.start_time.as_ref(), "start_time")?,
        "start_time",
    )?;
    let in_progress = match &fields.in_progress {
        None => false,
        Some(Scalar::Bool(b)) => *b,
        Some(_) => {
            return Err(ProtocolError::InvalidField {
                field: "in_progress",
            });
        }
    };
    match &fields.end_time {
        Some(end) => {
            as_time(end, "end_time")?;
        }
        None if in_progress => {}
        None => return Err(ProtocolError::MissingField { field: "end_time" }),
    }
    let kind = fields
        .kind
        .as_ref()
        .map(|k| as_str(k, "type"))
        .transpose()?;
    if kind == Some("subsegment") {
        let parent = as_str(
            required(fields.parent_id.as_ref(), "parent_id")?,
            "parent_id",
        )?;
        SegmentId::parse(parent).map_err(|_| ProtocolError::InvalidField { field: "parent_id" })?;
    }
    Ok(Document {
        body: text.into(),
        id,
        trace_id,
        kind: DocumentKind::Segment,
    })
}

/// Whether arrays/objects nest deeper than `max` (brackets inside strings do not count).
fn exceeds_depth(json: &[u8], max: usize) -> bool {
    let mut depth = 0_usize;
    for b in crate::json_scan::outside_strings(json) {
        match b {
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/datagrams/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn datagram(header: &str, body: &str) -> Vec<u8> {
        format!("{header}\n{body}").into_bytes()
    }

    const HEADER: &str = r#"{"format":"json","version":1}"#;
    const VALID: &str = r#"{"id":"1bbaa244e76f8d42","name":"s","start_time":1.5,"end_time":2.5,"trace_id":"1-5759e988-bd862e3fe1be46a994272793","type":"subsegment","parent_id":"53995c3f42cd8ad8"}"#;

    #[test]
    fn captured_sdk_documents_batch_as_received() {
        use crate::export::batcher::batches;
        use crate::export::xray::MAX_DOCUMENTS_PER_CALL;
        let docs: Vec<Document> = ["python_child.bin", "python_parent.bin", "node_child.bin"]
            .iter()
            .map(|f| parse_datagram(&fixture(f)).unwrap())
            .collect();
        let out = batches(docs.clone(), MAX_DOCUMENTS_PER_CALL);
        assert_eq!(out, vec![docs]);
    }

    #[test]
    fn captured_sdk_datagrams_are_accepted() {
        for (name, id) in [
            ("python_child.bin", "a5f85f975666ef8c"),
            ("python_parent.bin", "1ad491840294b9ea"),
            ("node_child.bin", "0ffff053499cfde9"),
            ("node_parent.bin", "dd62bc0f50c3941b"),
            ("contracts_python_example.bin", "1bbaa244e76f8d42"),
            ("docs_header_in_progress.bin", "70de5b6f19ff9a0a"),
        ] {
            let raw = fixture(name);
            let doc = parse_datagram(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(doc.id.as_str(), id, "{name}");
            assert_eq!(
                doc.trace_id.as_str(),
                "1-5759e988-bd862e3fe1be46a994272793",
                "{name}"
            );
            // The body is forwarded byte for byte.
            let newline = raw.iter().position(|&b| b == b'\n').unwrap();
            assert_eq!(doc.body.as_bytes(), &raw[newline + 1..], "{name}");
        }
    }

    #[test]
    fn each_document_carries_the_kind_its_parser_found() {
        let cases: &[(Vec<u8>, DocumentKind)] = &[
            (datagram(HEADER, VALID), DocumentKind::Segment),
            (fixture("python_parent.bin"), DocumentKind::Segment),
            (fixture("adot_python_t1s.bin"), DocumentKind::SampledSpans),
            (
                fixture("adot_java_header_t1s.bin"),
                DocumentKind::SampledSpans,
            ),
            (fixture("adot_python_t1u.bin"), DocumentKind::UnsampledSpans),
        ];
        for (raw, kind) in cases {
            let doc = parse_datagram(raw).unwrap();
            assert_eq!(doc.kind, *kind, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn captured_otlp_datagrams_are_forwarded_byte_for_byte_under_any_daemon_header() {
        for (name, span_id) in [
            ("adot_python_t1s.bin", None),
            ("adot_python_t1u.bin", None),
            ("adot_python_fast_start_t1s.bin", None),
            ("adot_java_header_t1s.bin", None::<&str>),
        ] {
            let raw = fixture(name);
            let doc = parse_datagram(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            let newline = raw.iter().position(|&b| b == b'\n').unwrap();
            assert_eq!(doc.body.as_bytes(), &raw[newline + 1..], "{name}");
            assert_eq!(
                doc.trace_id.as_str(),
                "1-5759e988-bd862e3fe1be46a994272793",
                "{name}"
            );
            if let Some(id) = span_id {
                assert_eq!(doc.id.as_str(), id);
            }
        }
        // The Java header and the Python one carry the same body.
        let python = parse_datagram(&fixture("adot_python_t1s.bin")).unwrap();
        let java = parse_datagram(&fixture("adot_java_header_t1s.bin")).unwrap();
        assert_eq!(python, java);
    }

    #[test]
    fn bad_otlp_bodies_are_rejected_with_their_reason() {
        for (body, kind) in [
            ("T1S!!!!", "otlp_base64"),
            ("T1SAAAA", "otlp_malformed"),
            ("T1U", "otlp_no_spans"),
        ] {
            assert_eq!(
                parse_datagram(&datagram(HEADER, body)).unwrap_err().kind(),
                kind,
                "{body}"
            );
        }
        let huge = format!("T1S{}", "A".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(
            parse_datagram(&datagram(HEADER, &huge)),
            Err(ProtocolError::TooLarge { .. })
        ));
        // Metrics (`M1`) are not trace documents.
        assert_eq!(
            parse_datagram(&datagram(HEADER, "M1AAAA")),
            Err(ProtocolError::NotAnObject)
        );
    }

    #[test]
    fn header_checks_match_the_daemon() {
        for header in [
            r#"{"format":"json","version":1}"#,
            r#"{"format": "json", "version": 1}"#,
            r#"{"format":"JSON","version":1}"#,
            r#"{"version":1,"format":"Json","extra":[1,{"a":2}]}"#,
        ] {
            assert!(parse_datagram(&datagram(header, VALID)).is_ok(), "{header}");
        }
        for header in [
            r#"{"format":"json","version":"1"}"#,
            r#"{"format":"json","version":1.0}"#,
            r#"{"format":"json","version":2}"#,
            r#"{"format":"json"}"#,
            r#"{"version":1}"#,
            r#"{"format":"xml","version":1}"#,
            r#"{"format":1,"version":1}"#,
            r"[]",
            r"",
            r"not json",
        ] {
            assert_eq!(
                parse_datagram(&datagram(header, VALID)),
                Err(ProtocolError::BadHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn framing_errors() {
        assert_eq!(
            parse_datagram(HEADER.as_bytes()),
            Err(ProtocolError::MissingNewline)
        );
        assert_eq!(
            parse_datagram(&datagram(HEADER, "")),
            Err(ProtocolError::EmptyBody)
        );
        assert_eq!(
            parse_datagram(&datagram(HEADER, " \n")),
            Err(ProtocolError::EmptyBody)
        );
        let mut raw = datagram(HEADER, "");
        raw.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
        assert_eq!(parse_datagram(&raw), Err(ProtocolError::NotUtf8));
    }

    #[test]
    fn bodies_that_are_not_objects() {
        for body in ["[1,2]", "42", "\"s\"", "null", "true"] {
            assert_eq!(
                parse_datagram(&datagram(HEADER, body)),
                Err(ProtocolError::NotAnObject),
                "{body}"
            );
        }
        // An array holding the fields positionally must not slip through serde.
        let positional =
            r#"["1bbaa244e76f8d42","1-5759e988-bd862e3fe1be46a994272793","s",1.5,2.5]"#;
        assert_eq!(
            parse_datagram(&datagram(HEADER, positional)),
            Err(ProtocolError::NotAnObject)
        );
    }

    #[test]
    fn invalid_json_and_deep_nesting_are_rejected_without_panicking() {
        let err = parse_datagram(&datagram(HEADER, r#"{"id":"#)).unwrap_err();
        assert_eq!(err.kind(), "invalid_json");
        for depth in [65, 10_000] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let deep = VALID.replacen("\"s\"", &format!("\"s\",\"m\":{nested}"), 1);
            assert_eq!(
                parse_datagram(&datagram(HEADER, &deep)),
                Err(ProtocolError::TooDeep)
            );
        }
        // Brackets inside strings are text, and 63 levels (plus the document) are fine.
        let nested = format!("{}{}", "[".repeat(63), "]".repeat(63));
        let ok = VALID.replacen(
            "\"s\"",
            &format!("\"s\",\"m\":{nested},\"t\":\"[[[[\\\"[[\""),
            1,
        );
        assert!(parse_datagram(&datagram(HEADER, &ok)).is_ok(), "{ok}");
    }

    #[test]
    fn values_serde_cannot_read_are_rejected_wherever_they_are() {
        // Found by fuzzing: unknown fields used to be skipped unchecked.
        for bad in [r#""\ud800""#, "1e400", r#"{"k":["\udc80"]}"#, "-1e999"] {
            let body = VALID.replacen("\"s\"", &format!("\"s\",\"x\":{bad}"), 1);
            assert_eq!(
                parse_datagram(&datagram(HEADER, &body)).unwrap_err().kind(),
                "invalid_json",
                "{bad}"
            );
        }
        // A valid surrogate pair and large-but-finite numbers are fine.
        let body = VALID.replacen("\"s\"", "\"s\",\"x\":\"\\ud83d\\ude00\",\"y\":1e300", 1);
        assert!(parse_datagram(&datagram(HEADER, &body)).is_ok(), "{body}");
        // Duplicate known fields are refused, as serde's derive did.
        let body = VALID.replacen("\"s\"", "\"s\",\"name\":\"t\"", 1);
        assert_eq!(
            parse_datagram(&datagram(HEADER, &body)).unwrap_err().kind(),
            "invalid_json"
        );
        // Escaped keys name the same field.
        let body = VALID.replacen("\"id\"", "\"\\u0069d\"", 1);
        assert_eq!(
            parse_document(body.as_bytes()).unwrap().id.as_str(),
            "1bbaa244e76f8d42"
        );
    }

    #[test]
    fn size_limit() {
        let pad = "x".repeat(MAX_DOCUMENT_BYTES);
        let body = VALID.replacen("\"s\"", &format!("\"s\",\"m\":\"{pad}\""), 1);
        assert!(matches!(
            parse_datagram(&datagram(HEADER, &body)),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn required_fields() {
        let v: serde_json::Value = serde_json::from_str(VALID).unwrap();
        for field in ["id", "trace_id", "name", "start_time", "parent_id"] {
            let mut doc = v.clone();
            doc.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse_document(doc.to_string().as_bytes()),
                Err(ProtocolError::MissingField { field }),
                "{field}"
            );
        }
        let mut doc = v.clone();
        doc.as_object_mut().unwrap().remove("end_time");
        assert_eq!(
            parse_document(doc.to_string().as_bytes()),
            Err(ProtocolError::MissingField { field: "end_time" })
        );
        doc["in_progress"] = serde_json::Value::Bool(true);
        assert!(parse_document(doc.to_string().as_bytes()).is_ok());

        // A segment (no `type`) needs no parent.
        let mut seg = v.clone();
        let obj = seg.as_object_mut().unwrap();
        obj.remove("type");
        obj.remove("parent_id");
        assert!(parse_document(seg.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn field_shapes() {
        let v: serde_json::Value = serde_json::from_str(VALID).unwrap();
        for (field, value) in [
            ("id", serde_json::json!("xyz")),
            ("id", serde_json::json!(42)),
            ("trace_id", serde_json::json!("1-abc")),
            ("parent_id", serde_json::json!("53995c3f42cd8ad")),
            ("start_time", serde_json::json!("1.5")),
            ("start_time", serde_json::json!(-1.0)),
            ("name", serde_json::json!("")),
            ("name", serde_json::json!("n".repeat(201))),
        ] {
            let mut doc = v.clone();
            doc[field] = value.clone();
            assert_eq!(
                parse_document(doc.to_string().as_bytes()),
                Err(ProtocolError::InvalidField { field }),
                "{field}={value}"
            );
        }
    }
}
