//! The OTLP JSON mapping, turned into protobuf: lowerCamelCase (or proto) field names, trace
//! and span ids as hex, other bytes as base64, enums as integers, 64-bit integers as numbers or
//! decimal strings. Unknown fields are ignored, as the specification asks of receivers. The
//! result is then checked like any protobuf request. Pure: no I/O.

use serde_json::{Map, Value};

use super::schema::{FieldDef, Kind, REQUEST, Schema};
use super::{MAX_NESTING_DEPTH, OtlpError, wire};

/// Converts an OTLP JSON `ExportTraceServiceRequest` into its protobuf encoding.
pub fn to_protobuf(json: &[u8]) -> Result<Vec<u8>, OtlpError> {
    let value: Value = serde_json::from_slice(json).map_err(|_| OtlpError::Json)?;
    let Value::Object(object) = value else {
        return Err(OtlpError::Json);
    };
    let mut out = Vec::with_capacity(json.len() / 2);
    encode_message(&object, &REQUEST, &mut out, 0)?;
    Ok(out)
}

fn encode_message(
    object: &Map<String, Value>,
    schema: &'static Schema,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), OtlpError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(OtlpError::TooDeep);
    }
    for (name, value) in object {
        let Some(def) = schema.by_json_name(name) else {
            continue;
        };
        match value {
            Value::Null => {}
            Value::Array(items) if def.repeated => {
                for item in items {
                    encode_field(def, schema, item, out, depth)?;
                }
            }
            _ if def.repeated => return Err(invalid(schema, def)),
            _ => encode_field(def, schema, value, out, depth)?,
        }
    }
    Ok(())
}

fn invalid(schema: &'static Schema, def: &'static FieldDef) -> OtlpError {
    OtlpError::InvalidField {
        message: schema.name,
        field: def.json,
    }
}

fn encode_field(
    def: &'static FieldDef,
    schema: &'static Schema,
    value: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), OtlpError> {
    let bad = || invalid(schema, def);
    match def.kind {
        Kind::Message(inner) => {
            let object = value.as_object().ok_or_else(bad)?;
            let mut nested = Vec::new();
            encode_message(object, inner, &mut nested, depth + 1)?;
            wire::put_len(out, def.number, &nested);
        }
        Kind::Str => wire::put_len(out, def.number, value.as_str().ok_or_else(bad)?.as_bytes()),
        Kind::HexBytes => {
            let bytes = from_hex(value.as_str().ok_or_else(bad)?).ok_or_else(bad)?;
            if !bytes.is_empty() {
                wire::put_len(out, def.number, &bytes);
            }
        }
        Kind::Base64Bytes => {
            let text = value.as_str().ok_or_else(bad)?;
            let bytes = base64_simd::STANDARD
                .decode_to_vec(text)
                .map_err(|_| bad())?;
            wire::put_len(out, def.number, &bytes);
        }
        Kind::Int64 => {
            let n = integer::<i64>(value).ok_or_else(bad)?;
            // Two's complement, as protobuf writes a negative int64.
            wire::put_varint_field(out, def.number, u64::from_ne_bytes(n.to_ne_bytes()));
        }
        Kind::Uint32 => {
            let n = integer::<u32>(value).ok_or_else(bad)?;
            wire::put_varint_field(out, def.number, u64::from(n));
        }
        Kind::Bool => {
            let b = value.as_bool().ok_or_else(bad)?;
            wire::put_varint_field(out, def.number, u64::from(b));
        }
        Kind::Fixed64 => {
            let n = integer::<u64>(value).ok_or_else(bad)?;
            wire::put_fixed64(out, def.number, n);
        }
        Kind::Double => {
            let d = double(value).ok_or_else(bad)?;
            wire::put_fixed64(out, def.number, d.to_bits());
        }
        Kind::Fixed32 => {
            let n = integer::<u32>(value).ok_or_else(bad)?;
            wire::put_fixed32(out, def.number, n);
        }
    }
    Ok(())
}

/// An integer written as a JSON number or a decimal string.
fn integer<T>(value: &Value) -> Option<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|u| T::try_from(u).ok())
            .or_else(|| n.as_i64().and_then(|i| T::try_from(i).ok())),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn double(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Decodes hex of either case; `None` for an odd length or a non-hex digit.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |d: u8| {
        char::from(d)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok())
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Sampling, parse_request, to_documents};
    use super::*;
    use serde_json::json;

    const TRACE: &str = "5759e988bd862e3fe1be46a994272793";

    fn request(spans: &Value) -> Value {
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
            "scopeSpans": [{"scope": {"name": "manual", "version": "1"}, "spans": spans}],
        }]})
    }

    #[test]
    fn a_node_style_request_converts_and_checks() {
        let body = request(&json!([{
            "traceId": TRACE,
            "spanId": "1bbaa244e76f8d42",
            "parentSpanId": "53995c3f42cd8ad8",
            "name": "work",
            "kind": 1,
            "startTimeUnixNano": "1795605003944656800",
            "endTimeUnixNano": 1_795_605_003_945_134_000_u64,
            "attributes": [
                {"key": "n", "value": {"intValue": "-42"}},
                {"key": "d", "value": {"doubleValue": "NaN"}},
                {"key": "b", "value": {"boolValue": true}},
                {"key": "raw", "value": {"bytesValue": "AAEC"}},
                {"key": "list", "value": {"arrayValue": {"values": [{"intValue": 1}]}}},
                {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}},
            ],
            "events": [{"timeUnixNano": "1", "name": "e"}],
            "status": {"code": 2, "message": "boom"},
            "flags": 257,
            "someFutureField": {"x": 1},
        }]));
        let bytes = to_protobuf(body.to_string().as_bytes()).unwrap();
        let req = parse_request(&bytes).unwrap();
        let spans: Vec<_> = req.spans().collect();
        assert_eq!(spans.len(), 1);
        assert_eq!(super::super::hex(&spans[0].trace_id), TRACE);
        assert_eq!(super::super::hex(&spans[0].span_id), "1bbaa244e76f8d42");
        assert_eq!(to_documents(&req, Sampling::Sampled).documents.len(), 1);
    }

    #[test]
    fn snake_case_names_and_upper_case_hex_are_accepted() {
        let body = request(&json!([{
            "trace_id": TRACE.to_uppercase(),
            "span_id": "1BBAA244E76F8D42",
            "parent_span_id": "",
            "name": "work",
        }]));
        let bytes = to_protobuf(body.to_string().as_bytes()).unwrap();
        let req = parse_request(&bytes).unwrap();
        assert_eq!(
            super::super::hex(&req.spans().next().unwrap().span_id),
            "1bbaa244e76f8d42"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        for (span, field) in [
            (
                json!({"traceId": "xyz", "spanId": "1bbaa244e76f8d42"}),
                "traceId",
            ),
            (json!({"traceId": TRACE, "spanId": 7}), "spanId"),
            (
                json!({"traceId": TRACE, "spanId": "1bbaa244e76f8d42", "kind": "SERVER"}),
                "kind",
            ),
            (
                json!({"traceId": TRACE, "spanId": "1bbaa244e76f8d42", "startTimeUnixNano": -1}),
                "startTimeUnixNano",
            ),
            (
                json!({"traceId": TRACE, "spanId": "1bbaa244e76f8d42", "attributes": {}}),
                "attributes",
            ),
        ] {
            let body = request(&json!([span]));
            match to_protobuf(body.to_string().as_bytes()) {
                Err(OtlpError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert_eq!(to_protobuf(b"[1]"), Err(OtlpError::Json));
        assert_eq!(to_protobuf(b"{\"resourceSpans\":"), Err(OtlpError::Json));
    }

    #[test]
    fn ids_of_the_wrong_length_fail_the_check_after_conversion() {
        let body = request(&json!([{"traceId": "abcd", "spanId": "1bbaa244e76f8d42"}]));
        let bytes = to_protobuf(body.to_string().as_bytes()).unwrap();
        assert_eq!(parse_request(&bytes), Err(OtlpError::TraceId));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut value = json!({"stringValue": "leaf"});
        for _ in 0..16 {
            value = json!({"arrayValue": {"values": [value]}});
        }
        let body = request(&json!([{
            "traceId": TRACE, "spanId": "1bbaa244e76f8d42",
            "attributes": [{"key": "deep", "value": value}],
        }]));
        assert_eq!(
            to_protobuf(body.to_string().as_bytes()),
            Err(OtlpError::TooDeep)
        );
    }
}
