use serde_json::{Value, json};

use super::super::wire::{Fields, WireType};
use super::super::{Sampling, parse_request, to_documents};
use super::*;

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

/// The decoder this one replaced: the whole body as a `serde_json::Value` tree, then protobuf.
/// Kept as the reference the streaming decoder must agree with.
mod legacy {
    use serde_json::{Map, Value};

    use super::super::super::schema::{FieldDef, Kind, REQUEST, Schema};
    use super::super::super::{MAX_NESTING_DEPTH, OtlpError, wire};

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
}

/// A protobuf message re-encoded with its fields in field-number order (repeated fields keep
/// their own order), nested messages likewise: two encodings of the same message compare equal.
fn canonical(message: &[u8], schema: &'static Schema) -> Vec<u8> {
    let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
    for field in Fields::new(message) {
        let field = field.unwrap();
        let mut bytes = Vec::new();
        match (
            schema.by_number(field.number).map(|d| d.kind),
            field.wire_type,
        ) {
            (Some(Kind::Message(inner)), WireType::Len) => {
                wire::put_len(&mut bytes, field.number, &canonical(field.value, inner));
            }
            (_, WireType::Len) => wire::put_len(&mut bytes, field.number, field.value),
            (_, WireType::Varint) => wire::put_varint_field(&mut bytes, field.number, field.varint),
            (_, WireType::Fixed64) => wire::put_fixed64(
                &mut bytes,
                field.number,
                u64::from_le_bytes(field.value.try_into().unwrap()),
            ),
            (_, WireType::Fixed32) => wire::put_fixed32(
                &mut bytes,
                field.number,
                u32::from_le_bytes(field.value.try_into().unwrap()),
            ),
        }
        fields.push((field.number, bytes));
    }
    fields.sort_by_key(|(number, _)| *number);
    fields.into_iter().flat_map(|(_, b)| b).collect()
}

/// `lowerCamelCase` → `snake_case`.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A random JSON value for a field of `kind`, in one of the spellings the mapping allows, and
/// sometimes one it refuses.
fn random_scalar(rng: &mut fastrand::Rng, kind: Kind) -> Value {
    let n = rng.u64(..);
    match kind {
        Kind::Message(_) => unreachable!(),
        Kind::Str => json!(
            [
                "",
                "orders",
                "a\"quoted\" \\ line\nbreak",
                "\u{e9}t\u{e9} \u{1f600}",
                "GET /v1"
            ][rng.usize(..5)]
        ),
        Kind::HexBytes => {
            let len = [0, 8, 16, 3][rng.usize(..4)];
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let hex = super::super::hex(&bytes);
            if rng.bool() {
                json!(hex.to_uppercase())
            } else {
                json!(hex)
            }
        }
        Kind::Base64Bytes => {
            let bytes: Vec<u8> = (0..rng.usize(..20)).map(|_| rng.u8(..)).collect();
            json!(base64_simd::STANDARD.encode_to_string(bytes))
        }
        Kind::Int64 | Kind::Fixed64 => match rng.usize(..5) {
            0 => json!(n),
            1 => json!(n.to_string()),
            2 => json!(-i64::from(rng.u32(..))),
            3 => json!((-i64::from(rng.u32(..))).to_string()),
            _ => json!(rng.u8(..)),
        },
        Kind::Uint32 | Kind::Fixed32 => match rng.usize(..4) {
            0 => json!(rng.u32(..)),
            1 => json!(rng.u32(..).to_string()),
            2 => json!(u64::from(u32::MAX) + 1),
            _ => json!(rng.u8(..4)),
        },
        Kind::Bool => json!(rng.bool()),
        Kind::Double => match rng.usize(..5) {
            0 => json!(rng.f64() * 1e6),
            1 => json!(rng.i32(..)),
            2 => json!(["NaN", "Infinity", "-Infinity", "2.5e3"][rng.usize(..4)]),
            3 => json!(n),
            _ => json!(0.5),
        },
    }
}

/// A random message of `schema`: each field or not, camel or snake, arrays for repeated
/// fields, `null`s, unknown fields.
fn random_message(rng: &mut fastrand::Rng, schema: &'static Schema, depth: usize) -> Value {
    let mut object = serde_json::Map::new();
    for def in schema.fields {
        if rng.u8(..4) == 0 {
            continue;
        }
        let name = if rng.bool() {
            def.json.to_owned()
        } else {
            snake(def.json)
        };
        let one = |rng: &mut fastrand::Rng| match def.kind {
            Kind::Message(inner) if depth < 5 => random_message(rng, inner, depth + 1),
            Kind::Message(_) => json!({}),
            kind => random_scalar(rng, kind),
        };
        let value = match (def.repeated, rng.u8(..12)) {
            (_, 0) => Value::Null,
            (true, _) => Value::Array((0..rng.usize(..3)).map(|_| one(rng)).collect()),
            (false, _) => one(rng),
        };
        object.insert(name, value);
    }
    if rng.u8(..3) == 0 {
        object.insert(
            "someFutureField".into(),
            json!({"nested": [1, "two", {"three": null}], "n": 1.5}),
        );
    }
    Value::Object(object)
}

#[test]
fn the_streaming_decoder_agrees_with_the_tree_decoder() {
    let mut rng = fastrand::Rng::with_seed(0x000a_11ce);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..3_000 {
        let body = random_message(&mut rng, &REQUEST, 0).to_string();
        let old = legacy::to_protobuf(body.as_bytes());
        let new = to_protobuf(body.as_bytes());
        match (&old, &new) {
            (Ok(old), Ok(new)) => {
                assert_eq!(
                    canonical(old, &REQUEST),
                    canonical(new, &REQUEST),
                    "{case}: {body}"
                );
                accepted += 1;
            }
            (Err(_), Err(_)) => {
                // Both refuse; the reason may differ in which bad field is met first.
                refused += 1;
            }
            _ => panic!("{case}: {old:?} / {new:?}: {body}"),
        }
    }
    // Both kinds of outcome were exercised.
    assert!(
        accepted > 300 && refused > 300,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn the_existing_variants_decode_as_before() {
    let span = json!({
        "traceId": TRACE, "spanId": "1bbaa244e76f8d42", "parentSpanId": "53995c3f42cd8ad8",
        "name": "work", "kind": 1, "startTimeUnixNano": "1795605003944656800",
        "endTimeUnixNano": 1_795_605_003_945_134_000_u64, "flags": 257,
        "attributes": [
            {"key": "n", "value": {"intValue": "-42"}},
            {"key": "d", "value": {"doubleValue": "NaN"}},
            {"key": "e", "value": {"doubleValue": 2}},
            {"key": "b", "value": {"boolValue": true}},
            {"key": "raw", "value": {"bytesValue": "AAEC"}},
            {"key": "list", "value": {"arrayValue": {"values": [{"intValue": 1}, {}]}}},
            {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v\u{e9}\"\\"}}]}}},
        ],
        "events": [{"timeUnixNano": "1", "name": "e", "attributes": null}],
        "links": [{"traceId": TRACE.to_uppercase(), "spanId": "1BBAA244E76F8D42", "flags": "1"}],
        "status": {"code": 2, "message": "boom"},
        "someFutureField": {"x": [1, {"y": null}]},
    });
    let snake = json!({
        "trace_id": TRACE, "span_id": "1bbaa244e76f8d42", "parent_span_id": "",
        "start_time_unix_nano": 5, "dropped_attributes_count": "3", "trace_state": "k=v",
    });
    let mut long = "x".repeat(300);
    long.push('\u{1f600}');
    let big = json!({"traceId": TRACE, "spanId": "1bbaa244e76f8d42", "name": long});
    for body in [
        request(&json!([span])),
        request(&json!([snake])),
        request(&json!([big])),
        request(&json!([span, snake, big])),
        json!({"resource_spans": [{"schema_url": "u", "scope_spans": [{"spans": [], "scope": null}]}]}),
        json!({}),
        json!({"resourceSpans": null}),
    ] {
        let text = body.to_string();
        let old = legacy::to_protobuf(text.as_bytes()).unwrap();
        let new = to_protobuf(text.as_bytes()).unwrap();
        assert_eq!(
            canonical(&old, &REQUEST),
            canonical(&new, &REQUEST),
            "{text}"
        );
        // The same bytes read through a reader.
        assert_eq!(decode_reader(text.as_bytes(), &mut Unbounded).unwrap(), new);
    }
    // Lengths that need more than one byte, widened in place, still parse.
    let bytes = to_protobuf(request(&json!([big])).to_string().as_bytes()).unwrap();
    let req = parse_request(&bytes).unwrap();
    let span = req.spans().next().unwrap();
    assert!(span.bytes.len() > 300);
    assert!(String::from_utf8_lossy(span.bytes).contains(&long));
}

/// Room that grants up to a limit and remembers what it granted.
#[derive(Default)]
struct Granted {
    total: usize,
    peak: usize,
    limit: usize,
}

impl Room for Granted {
    fn grow(&mut self, additional: usize) -> bool {
        if self.total + additional > self.limit {
            return false;
        }
        self.total += additional;
        self.peak = self.peak.max(self.total);
        true
    }

    fn release(&mut self, bytes: usize) {
        self.total -= bytes;
    }
}

#[test]
fn memory_follows_the_output_not_the_number_of_values() {
    // Millions of values in a field we ignore: nothing to write, nothing held.
    let mut ignored = String::from(r#"{"resourceSpans":[],"x":["#);
    ignored.push_str(&"0,".repeat(2_000_000));
    ignored.push_str("0]}");
    let mut room = Granted {
        limit: usize::MAX,
        ..Granted::default()
    };
    assert_eq!(decode_slice(ignored.as_bytes(), &mut room), Ok(Vec::new()));
    assert_eq!(room.peak, 0);
    // Millions of empty values that are written: the output, at most twice over.
    let mut values = String::from(
        r#"{"resourceSpans":[{"resource":{"attributes":[{"value":{"arrayValue":{"values":["#,
    );
    values.push_str(&"{},".repeat(1_000_000));
    values.push_str("{}]}}}]}}]}");
    let mut room = Granted {
        limit: usize::MAX,
        ..Granted::default()
    };
    let out = decode_reader(std::io::BufReader::new(values.as_bytes()), &mut room).unwrap();
    assert!(out.len() > 2_000_000);
    assert!(
        room.total >= out.capacity() && room.total <= 2 * out.len() + 64,
        "{} for {}",
        room.total,
        out.len()
    );
    // Refused more room, it stops there.
    let mut room = Granted {
        limit: 64 * 1024,
        ..Granted::default()
    };
    assert_eq!(
        decode_slice(values.as_bytes(), &mut room),
        Err(OtlpError::NoRoom)
    );
    assert!(room.total <= 64 * 1024);
}
