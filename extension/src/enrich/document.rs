//! Building our own X-Ray documents: independent subsegments with embedded children. Pure.

use serde_json::{Map, Value, json};

use crate::ingest::protocol::Document;
use crate::lambda::telemetry::EpochSeconds;
use crate::trace::{SegmentId, TraceId};

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

/// One of our subsegments, before serialisation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subsegment {
    /// Display name.
    pub name: &'static str,
    /// Its id (stable across re-sends: X-Ray keeps the latest document with an id).
    pub id: Option<SegmentId>,
    /// Start.
    pub start: Option<EpochSeconds>,
    /// End.
    pub end: Option<EpochSeconds>,
    /// A server-side failure (X-Ray `fault`).
    pub fault: bool,
    /// X-Ray `cause`.
    pub cause: Option<Value>,
    /// Indexed annotations.
    pub annotations: Map<String, Value>,
    /// Metadata namespaces.
    pub metadata: Map<String, Value>,
    /// Embedded children.
    pub children: Vec<Child>,
}

/// Serialises `sub` as an independent subsegment of `parent` in `trace`. Child ids come from
/// `next_id`.
pub fn independent(
    trace: TraceId,
    parent: SegmentId,
    sub: &Subsegment,
    id: SegmentId,
    next_id: &mut dyn FnMut() -> u64,
) -> Document {
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
        doc.insert("cause".into(), cause.clone());
    }
    if !sub.annotations.is_empty() {
        doc.insert("annotations".into(), Value::Object(sub.annotations.clone()));
    }
    if !sub.metadata.is_empty() {
        doc.insert("metadata".into(), Value::Object(sub.metadata.clone()));
    }
    if !sub.children.is_empty() {
        let children: Vec<Value> = sub
            .children
            .iter()
            .map(|c| {
                let s = c.start.0;
                json!({
                    "id": SegmentId::from_u64(next_id()).as_str(),
                    "name": c.name,
                    "start_time": s,
                    "end_time": c.end.0.max(s),
                })
            })
            .collect();
        doc.insert("subsegments".into(), Value::Array(children));
    }
    Document {
        body: Value::Object(doc).to_string().into(),
        id,
        trace_id: trace,
    }
}

/// An X-Ray `cause` with one exception.
pub fn cause(kind: &str, message: &str, exception_id: SegmentId) -> Value {
    json!({
        "exceptions": [{
            "id": exception_id.as_str(),
            "type": kind,
            "message": message,
            "remote": false,
        }]
    })
}
