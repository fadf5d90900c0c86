//! 1 KB subsegments for the UDP load, shaped like an SDK's (HTTP and AWS blocks, annotations,
//! metadata entries), with the id at a fixed offset so the generator can stamp a fresh one into
//! the same buffer for every datagram; and the captured datagrams the micro-benchmarks parse.
//!
//! The one copy: the extension's criterion benchmarks (`extension/benches/micro/docs.rs`)
//! include this file.

use std::fmt::Write as _;

/// The daemon-protocol header the SDKs send.
pub const HEADER: &str = "{\"format\":\"json\",\"version\":1}";
/// The captured SDK datagrams the micro-benchmarks parse (`extension/fixtures/datagrams/<name>.bin`).
pub const DATAGRAM_FIXTURES: [&str; 6] = [
    "python_child",
    "python_parent",
    "node_child",
    "node_parent",
    "contracts_python_example",
    "docs_header_in_progress",
];
/// Where the 16 hex digits of the id start in a datagram built by [`datagram`].
pub const ID_OFFSET: usize = HEADER.len() + 1 + r#"{"id":""#.len();

/// A subsegment body of exactly `size` bytes (at least ~700).
pub fn subsegment(id: u64, trace_id: &str, parent_id: &str, start: f64, size: usize) -> String {
    let mut doc = format!(
        concat!(
            r#"{{"id":"{:016x}","name":"DynamoDB","start_time":{:.6},"end_time":{:.6},"#,
            r#""type":"subsegment","trace_id":"{}","parent_id":"{}","namespace":"aws","#,
            r#""in_progress":false,"http":{{"response":{{"status":200,"content_length":1452}}}},"#,
            r#""aws":{{"operation":"GetItem","region":"us-east-1","request_id":"V0PQ8K2UMN1G9JLQ4E2B7U5GJVVV4KQNSO5AEMVJF66Q9ASUAAJG","retries":0,"table_name":"orders"}},"#,
            r#""annotations":{{"customer_id":"c-123","n":{},"hit":true}},"metadata":{{"app":{{"items":["#
        ),
        id,
        start,
        start + 0.0105,
        trace_id,
        parent_id,
        id % 1000,
    );
    let tail = r#""}]}}}"#;
    let mut i = 0;
    loop {
        let entry = format!(
            r#"{{"sku":"sku-{i:04}","qty":{},"price":{}.99}},"#,
            i % 7,
            i * 3
        );
        if doc.len() + entry.len() + r#"{"note":""#.len() + tail.len() + 8 > size {
            break;
        }
        doc.push_str(&entry);
        i += 1;
    }
    doc.push_str(r#"{"note":""#);
    let pad = size.saturating_sub(doc.len() + tail.len());
    for k in 0..pad {
        let _ = write!(
            doc,
            "{}",
            char::from(b'a' + u8::try_from(k % 26).unwrap_or(0))
        );
    }
    doc.push_str(tail);
    doc
}

/// A datagram (header, newline, body).
pub fn datagram(body: &str) -> Vec<u8> {
    format!("{HEADER}\n{body}").into_bytes()
}

/// Writes `id` as 16 lowercase hex digits at [`ID_OFFSET`].
pub fn stamp_id(datagram: &mut [u8], id: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Some(slot) = datagram.get_mut(ID_OFFSET..ID_OFFSET + 16) else {
        return;
    };
    for (i, b) in slot.iter_mut().enumerate() {
        let shift = (15 - i) * 4;
        *b = HEX[usize::try_from((id >> shift) & 0xf).unwrap_or(0)];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_are_exactly_the_size_asked_and_ids_can_be_restamped() {
        let body = super::subsegment(
            0x1234,
            "1-5759e988-bd862e3fe1be46a994272793",
            "53995c3f42cd8ad8",
            1_795_605_003.5,
            1024,
        );
        assert_eq!(body.len(), 1024);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["id"], "0000000000001234");
        let mut d = super::datagram(&body);
        super::stamp_id(&mut d, 0xabcd_ef01_2345_6789);
        let text = std::str::from_utf8(&d).unwrap();
        let (_, body) = text.split_once('\n').unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["id"], "abcdef0123456789");
    }
}
