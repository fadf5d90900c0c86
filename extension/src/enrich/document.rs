//! Building our own X-Ray documents: independent subsegments with embedded children. Pure.
//!
//! Much of what we write comes from the function (its `errorType`) or from Lambda's records:
//! every such string is clipped to [`MAX_FIELD_CHARS`], and a finished document larger than
//! X-Ray's limit loses its metadata, then is refused, rather than being sent to be rejected.

use serde_json::{Map, Value, json};

use crate::document::{Document, DocumentKind, MAX_DOCUMENT_BYTES};
use crate::lambda::telemetry::EpochSeconds;
use crate::trace::{SegmentId, TraceId};

/// Longest string we copy from a record or the function into a document (X-Ray truncates
/// annotation values at 1,000 characters; error types and versions are far shorter).
pub const MAX_FIELD_CHARS: usize = 1_000;
/// Salt of the exception id derived from a document's id (children use their index).
const EXCEPTION_SALT: u64 = u64::MAX;

/// A child embedded in one of our subsegments.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// Display name.
    pub name: &'static str,
    /// Start.
    pub start: EpochSeconds,
    /// End.
    pub end: EpochSeconds,
}

/// An X-Ray `cause` with one exception.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// The exception's type (clipped when rendered).
    pub kind: String,
    /// Its message (clipped when rendered).
    pub message: String,
}

/// One of our subsegments, before serialisation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subsegment {
    /// Display name.
    pub name: &'static str,
    /// Start.
    pub start: Option<EpochSeconds>,
    /// End.
    pub end: Option<EpochSeconds>,
    /// A server-side failure (X-Ray `fault`).
    pub fault: bool,
    /// X-Ray `cause`.
    pub cause: Option<Cause>,
    /// Indexed annotations.
    pub annotations: Map<String, Value>,
    /// Metadata namespaces.
    pub metadata: Map<String, Value>,
    /// Embedded children.
    pub children: Vec<Child>,
}

/// Why one of our documents was not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Still larger than X-Ray accepts without its metadata.
    #[error("our {name} document of {size} bytes exceeds {MAX_DOCUMENT_BYTES}")]
    TooLarge {
        /// The subsegment's name.
        name: &'static str,
        /// Its size without metadata.
        size: usize,
    },
}

/// `s` cut to at most [`MAX_FIELD_CHARS`] characters.
pub fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Serialises `sub` as an independent subsegment of `parent` in `trace`, with id `id`. The ids
/// of its children and exception derive from `id`, so a re-send is identical in its ids.
pub fn independent(
    trace: TraceId,
    parent: SegmentId,
    sub: &Subsegment,
    id: SegmentId,
) -> Result<Document, DocumentError> {
    let mut body = render(trace, parent, sub, id, true);
    if body.len() > MAX_DOCUMENT_BYTES {
        body = render(trace, parent, sub, id, false);
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge {
            name: sub.name,
            size: body.len(),
        });
    }
    Ok(Document {
        body: body.into(),
        id,
        trace_id: trace,
        kind: DocumentKind::Segment,
    })
}

fn render(
    trace: TraceId,
    parent: SegmentId,
    sub: &Subsegment,
    id: SegmentId,
    with_metadata: bool,
) -> String {
    let start = sub.start.map_or(0.0, |t| t.0);
    let end = sub.end.map_or(start, |t| t.0.max(start));
    let mut doc = Map::new();
    doc.insert("type".into(), json!("subsegment"));
    doc.insert("id".into(), json!(id.as_str()));
    doc.insert("trace_id".into(), json!(trace.as_str()));
    doc.insert("parent_id".into(), json!(parent.as_str()));
    doc.insert("name".into(), json!(sub.name));
    doc.insert("start_time".into(), json!(start));
    doc.insert("end_time".into(), json!(end));
    doc.insert("origin".into(), json!("AWS::Lambda::Function"));
    if sub.fault {
        doc.insert("fault".into(), json!(true));
    }
    if let Some(cause) = &sub.cause {
        doc.insert(
            "cause".into(),
            json!({
                "exceptions": [{
                    "id": id.derived(EXCEPTION_SALT).as_str(),
                    "type": clip(&cause.kind),
                    "message": clip(&cause.message),
                    "remote": false,
                }]
            }),
        );
    }
    if !sub.annotations.is_empty() {
        doc.insert("annotations".into(), Value::Object(sub.annotations.clone()));
    }
    if with_metadata && !sub.metadata.is_empty() {
        doc.insert("metadata".into(), Value::Object(sub.metadata.clone()));
    }
    if !sub.children.is_empty() {
        let children: Vec<Value> = sub
            .children
            .iter()
            .zip(0_u64..)
            .map(|(c, i)| {
                let s = c.start.0;
                json!({
                    "id": id.derived(i).as_str(),
                    "name": c.name,
                    "start_time": s,
                    "end_time": c.end.0.max(s),
                })
            })
            .collect();
        doc.insert("subsegments".into(), Value::Array(children));
    }
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TraceId, SegmentId, SegmentId) {
        (
            TraceId::parse("1-62e900b2-710d76f009d6e7785905449a").unwrap(),
            SegmentId::parse("0efbd19962d95b05").unwrap(),
            SegmentId::from_u64(0x1234),
        )
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_FIELD_CHARS + 5);
        assert_eq!(clip(&long).chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn a_long_error_type_is_clipped() {
        let (trace, parent, id) = ids();
        let sub = Subsegment {
            name: "Runtime",
            cause: Some(Cause {
                kind: "E".repeat(200_000),
                message: "m".repeat(200_000),
            }),
            fault: true,
            ..Subsegment::default()
        };
        let doc = independent(trace, parent, &sub, id).unwrap();
        assert!(doc.body.len() < 4 * MAX_FIELD_CHARS, "{}", doc.body.len());
        let v: Value = serde_json::from_str(doc.body.text().unwrap()).unwrap();
        let ex = &v["cause"]["exceptions"][0];
        assert_eq!(ex["type"].as_str().unwrap().len(), MAX_FIELD_CHARS);
        assert_eq!(ex["id"], id.derived(EXCEPTION_SALT).as_str());
    }

    #[test]
    fn oversized_metadata_is_left_out_and_an_oversized_rest_refused() {
        let (trace, parent, id) = ids();
        let mut big = Map::new();
        big.insert("x".into(), json!("y".repeat(MAX_DOCUMENT_BYTES)));
        let sub = Subsegment {
            name: "Runtime",
            metadata: big.clone(),
            ..Subsegment::default()
        };
        let doc = independent(trace, parent, &sub, id).unwrap();
        assert!(!doc.body.text().unwrap().contains("metadata"));
        let sub = Subsegment {
            name: "Runtime",
            annotations: big,
            ..Subsegment::default()
        };
        assert!(matches!(
            independent(trace, parent, &sub, id),
            Err(DocumentError::TooLarge {
                name: "Runtime",
                ..
            })
        ));
    }
}
