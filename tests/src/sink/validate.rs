//! The checks the X-Ray service applies to each trace document (pure; the clock is passed in).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::clock::epoch_millis;

/// Largest accepted document, in bytes (64 KB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Most documents accepted in one `PutTraceSegments` call.
pub const MAX_DOCUMENTS_PER_CALL: usize = 50;

/// Longest accepted segment name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// How old a trace id's epoch may be before the service rejects it.
pub const MAX_TRACE_AGE: Duration = Duration::from_hours(30 * 24);

/// A document the service would list in `UnprocessedTraceSegments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The document's `id`, when it could be read.
    pub id: Option<String>,
    /// The `ErrorCode` reported.
    pub error_code: &'static str,
    /// The `Message` reported.
    pub message: String,
}

/// Checks one raw document and returns it parsed, or why it is rejected.
pub fn check_document(raw: &str, now: SystemTime) -> Result<Map<String, Value>, Rejection> {
    let reject = |id: Option<String>, error_code, message: String| Rejection {
        id,
        error_code,
        message,
    };
    let parsed: Value = serde_json::from_str(raw).map_err(|e| {
        reject(
            None,
            "JSONFormatError",
            format!("document is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(doc) = parsed else {
        return Err(reject(
            None,
            "JSONFormatError",
            "document is not a JSON object".to_owned(),
        ));
    };
    let id = doc.get("id").and_then(Value::as_str).map(str::to_owned);
    if raw.len() > MAX_DOCUMENT_BYTES {
        return Err(reject(
            id,
            "SegmentTooLarge",
            format!(
                "document is {} bytes, more than {MAX_DOCUMENT_BYTES}",
                raw.len()
            ),
        ));
    }
    for field in ["id", "name", "trace_id", "start_time"] {
        if doc.get(field).is_none_or(Value::is_null) {
            return Err(reject(id, "MissingParam", format!("Missing {field}")));
        }
    }
    let in_progress = doc.get("in_progress").and_then(Value::as_bool) == Some(true);
    if doc.get("end_time").is_none_or(Value::is_null) && !in_progress {
        return Err(reject(
            id,
            "MissingParam",
            "Missing end_time or in_progress".to_owned(),
        ));
    }
    let Some(id_text) = id.as_deref().filter(|s| is_lower_hex(s, 16)) else {
        return Err(reject(
            id,
            "InvalidId",
            "id must be 16 hexadecimal digits".to_owned(),
        ));
    };
    let id = Some(id_text.to_owned());
    match doc.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS => {}
        _ => {
            return Err(reject(
                id,
                "InvalidName",
                format!("name must be a string of 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
    }
    for field in ["start_time", "end_time"] {
        if let Some(value) = doc.get(field)
            && !value.is_number()
        {
            return Err(reject(
                id,
                "InvalidTime",
                format!("{field} must be epoch seconds as a number"),
            ));
        }
    }
    let trace_id = doc.get("trace_id").and_then(Value::as_str).unwrap_or("");
    check_trace_id(trace_id, now).map_err(|message| reject(id, "InvalidTraceId", message))?;
    Ok(doc)
}

/// Checks `1-<8 hex epoch seconds>-<24 hex>` and that the epoch is at most 30 days old.
pub fn check_trace_id(trace_id: &str, now: SystemTime) -> Result<(), String> {
    let mut parts = trace_id.split('-');
    let (Some("1"), Some(epoch), Some(unique), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed trace id {trace_id:?}"));
    };
    if !is_lower_hex(epoch, 8) || !is_lower_hex(unique, 24) {
        return Err(format!("malformed trace id {trace_id:?}"));
    }
    let epoch = u64::from_str_radix(epoch, 16).map_err(|e| e.to_string())?;
    let now_secs = epoch_millis(now) / 1000;
    if now_secs.saturating_sub(epoch) > MAX_TRACE_AGE.as_secs() {
        return Err(format!("trace id {trace_id} is older than 30 days"));
    }
    Ok(())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::new_trace_id;

    fn doc(extra: &str) -> String {
        format!(
            r#"{{"id":"1bbaa244e76f8d42","name":"work","trace_id":"{}","start_time":1.5{extra}}}"#,
            new_trace_id()
        )
    }

    fn code(raw: &str) -> &'static str {
        check_document(raw, SystemTime::now())
            .unwrap_err()
            .error_code
    }

    #[test]
    fn accepts_finished_and_in_progress_documents() {
        assert!(check_document(&doc(r#","end_time":2.5"#), SystemTime::now()).is_ok());
        assert!(check_document(&doc(r#","in_progress":true"#), SystemTime::now()).is_ok());
    }

    #[test]
    fn rejects_missing_fields() {
        assert_eq!(code(&doc("")), "MissingParam");
        assert_eq!(code(&doc(r#","in_progress":false"#)), "MissingParam");
        assert_eq!(
            code(
                r#"{"name":"a","trace_id":"1-5759e988-bd862e3fe1be46a994272793","start_time":1,"end_time":2}"#
            ),
            "MissingParam"
        );
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        assert_eq!(code("42"), "JSONFormatError");
        assert_eq!(code("[1]"), "JSONFormatError");
        assert_eq!(code("{"), "JSONFormatError");
    }

    #[test]
    fn rejects_oversized_documents_with_their_id() {
        let padding = "x".repeat(MAX_DOCUMENT_BYTES);
        let raw = doc(&format!(r#","end_time":2,"metadata":{{"p":"{padding}"}}"#));
        let rejection = check_document(&raw, SystemTime::now()).unwrap_err();
        assert_eq!(rejection.error_code, "SegmentTooLarge");
        assert_eq!(rejection.id.as_deref(), Some("1bbaa244e76f8d42"));
    }

    #[test]
    fn rejects_bad_ids_and_old_traces() {
        assert_eq!(
            code(&doc(r#","end_time":2"#).replace("1bbaa244e76f8d42", "XYZ")),
            "InvalidId"
        );
        let old = r#"{"id":"1bbaa244e76f8d42","name":"a","trace_id":"1-5759e988-bd862e3fe1be46a994272793","start_time":1,"end_time":2}"#;
        assert_eq!(code(old), "InvalidTraceId");
        assert!(check_trace_id("1-5759e988-bd862e3fe1be46a99427279", SystemTime::now()).is_err());
    }
}
