//! The PutTraceSegments request body. Pure.

use crate::document::Document;

/// `{"TraceSegmentDocuments":["<document>", ...]}`: each document as a JSON string, written
/// straight from the buffered bodies (one copy, the serialization). Spans held for the OTLP
/// endpoint are never routed here (the sender sees to it) and would be left out.
pub fn request_body(batch: &[&Document]) -> hyper::body::Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(rename = "TraceSegmentDocuments")]
        documents: Vec<&'a str>,
    }
    let body = Body {
        documents: batch.iter().filter_map(|d| d.body.text()).collect(),
    };
    // Serializing strings into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocumentKind;
    use crate::trace::{SegmentId, TraceId};

    #[test]
    fn the_request_body_carries_each_document_as_a_json_string() {
        let dir = format!("{}/fixtures/datagrams", env!("CARGO_MANIFEST_DIR"));
        // The SDKs' documents as captured: the body after the daemon header line.
        let docs: Vec<Document> = ["python_child.bin", "node_child.bin"]
            .iter()
            .zip(1..)
            .map(|(f, n)| {
                let datagram = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
                Document {
                    body: datagram.split_once('\n').unwrap().1.into(),
                    id: SegmentId::from_u64(n),
                    trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
                    kind: DocumentKind::Segment,
                }
            })
            .collect();
        let refs: Vec<&Document> = docs.iter().collect();
        let body: serde_json::Value = serde_json::from_slice(&request_body(&refs)).unwrap();
        let sent = body["TraceSegmentDocuments"].as_array().unwrap();
        assert_eq!(sent.len(), 2);
        for (doc, sent) in docs.iter().zip(sent) {
            assert_eq!(sent.as_str(), doc.body.text());
        }
        assert_eq!(&request_body(&[])[..], br#"{"TraceSegmentDocuments":[]}"#);
    }
}
