//! Inputs shared by the benchmarks.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The daemon-protocol header the SDKs send.
pub const HEADER: &str = "{\"format\":\"json\",\"version\":1}";
/// A valid trace id (format only: parsing does not look at the clock).
pub const TRACE_ID: &str = "1-5759e988-bd862e3fe1be46a994272793";
/// The parent every generated subsegment hangs under.
pub const PARENT_ID: &str = "53995c3f42cd8ad8";

/// A subsegment body of exactly `size` bytes (at least ~600) shaped like an SDK's: HTTP and AWS
/// blocks, annotations, and metadata entries up to the size, the last one padded.
pub fn subsegment(n: u64, size: usize) -> String {
    let mut doc = format!(
        concat!(
            r#"{{"id":"{:016x}","name":"DynamoDB","start_time":1795605003.9446568,"#,
            r#""end_time":1795605003.9551342,"type":"subsegment","trace_id":"{}","#,
            r#""parent_id":"{}","namespace":"aws","in_progress":false,"#,
            r#""http":{{"response":{{"status":200,"content_length":1452}}}},"#,
            r#""aws":{{"operation":"GetItem","region":"us-east-1","request_id":"V0PQ8K2UMN1G9JLQ4E2B7U5GJVVV4KQNSO5AEMVJF66Q9ASUAAJG","retries":0,"table_name":"orders"}},"#,
            r#""annotations":{{"customer_id":"c-123","n":{},"hit":true}},"metadata":{{"app":{{"items":["#
        ),
        n | 1,
        TRACE_ID,
        PARENT_ID,
        n % 1000,
    );
    let tail = r#""}]}}}"#;
    let mut i = 0;
    loop {
        let entry = format!(
            r#"{{"sku":"sku-{i:04}","qty":{},"price":{}.99}},"#,
            i % 7,
            i * 3
        );
        // Room for the entry, the final padded entry and the tail.
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

/// A file of this crate's fixtures.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}
